import pytest
import torch


@pytest.fixture(params=["float32", "float64"])
def dtype(request):
    """Run a test in float32 (torch's default) and again in float64."""
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.float32 if request.param == "float32" else torch.float64)
    yield request.param
    torch.set_default_dtype(previous)


@pytest.fixture
def float64():
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(previous)
