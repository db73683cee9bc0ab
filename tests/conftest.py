import pathlib

import pytest

SHARED = pathlib.Path(__file__).resolve().parents[1].parent / "shared"


@pytest.fixture
def shared_data() -> pathlib.Path:
    path = SHARED / "data"
    if not path.is_dir():
        pytest.fail(f"../shared/data is missing at {path}: the reference data must sit beside the clone")
    return path
