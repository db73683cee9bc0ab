"""Property tests: both backends' TruncatedNormal over random, extreme arguments (float64)."""

import warnings

import jax
import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from robusthmc.numpyro import TruncatedNormal as JaxTruncatedNormal
from robusthmc.pyro import TruncatedNormal as TorchTruncatedNormal

bound = st.one_of(st.none(), st.floats(-1e3, 1e3))


@st.composite
def arguments(draw):
    loc = draw(st.floats(-100.0, 100.0))
    scale = draw(st.floats(1e-3, 1e2))
    low, high = draw(bound), draw(bound)
    if low is not None and high is not None:
        low, high = min(low, high), max(low, high)
        if high - low < 1e-6 * max(1.0, abs(low)):
            high = low + 1e-6 * max(1.0, abs(low))
    fractions = draw(st.lists(st.floats(0.0, 1.0), min_size=3, max_size=3))
    return loc, scale, low, high, np.array(fractions)


@pytest.fixture(autouse=True)
def float64():
    previous_jax, previous_torch = jax.config.jax_enable_x64, torch.get_default_dtype()
    jax.config.update("jax_enable_x64", True)
    torch.set_default_dtype(torch.float64)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield
    jax.config.update("jax_enable_x64", previous_jax)
    torch.set_default_dtype(previous_torch)


@pytest.mark.timeout(300)
@settings(max_examples=25, deadline=None, derandomize=True)
@given(arguments())
def test_both_backends_agree_and_are_consistent(case):
    loc, scale, low, high, fractions = case
    jax_d = JaxTruncatedNormal(loc, scale, low=low, high=high)
    torch_d = TorchTruncatedNormal(loc, scale, low=low, high=high)
    q = np.sort(np.clip(fractions, 1e-6, 1 - 1e-6))
    x = np.asarray(jax_d.icdf(q))
    lo = -np.inf if low is None else low
    hi = np.inf if high is None else high
    assert np.all((x >= lo) & (x <= hi)) and np.all(np.isfinite(x))
    assert np.all(np.diff(x) >= 0)  # icdf monotone, hence cdf monotone
    jax_log_prob = np.asarray(jax_d.log_prob(x))
    torch_log_prob = torch_d.log_prob(torch.as_tensor(x)).numpy()
    assert np.all(np.isfinite(jax_log_prob))
    np.testing.assert_allclose(torch_log_prob, jax_log_prob, rtol=1e-12, atol=1e-12)
    cdf = np.asarray(jax_d.cdf(x))
    density = np.exp(jax_log_prob)
    tolerance = 64 * np.finfo(np.float64).eps * (1 + density * np.maximum(np.abs(x), scale))
    assert np.all(np.abs(cdf - q) <= tolerance)
    np.testing.assert_allclose(torch_d.cdf(torch.as_tensor(x)).numpy(), cdf, rtol=1e-12, atol=1e-15)
