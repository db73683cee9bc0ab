"""Both backends' TruncatedNormal at the edges: infinities, NaN, q outside [0, 1],
quantiles and log CDFs far in the tails (against 60-digit mpmath), float32 draws
that far out."""

from __future__ import annotations

import functools
import math
import warnings

import jax
import jax.numpy as jnp
import mpmath as mp
import numpy as np
import pytest
import torch

import robusthmc
from robusthmc.numpyro import TruncatedNormal as JaxTruncatedNormal
from robusthmc.pyro import TruncatedNormal as TorchTruncatedNormal

mp.mp.dps = 60
METHODS = ("cdf", "icdf", "log_cdf", "survival_function", "log_survival_function", "isf")


class Backend:
    """One backend's TruncatedNormal in one dtype, taking and returning NumPy arrays."""

    def __init__(self, name: str, dtype: str) -> None:
        self.name, self.dtype = name, np.dtype(dtype)

    def __repr__(self) -> str:
        return f"{self.name}-{self.dtype}"

    def make(self, loc, scale, low=None, high=None):
        cast = lambda v: None if v is None else np.asarray(v, self.dtype)  # noqa: E731
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", robusthmc.InfiniteBoundWarning)
            if self.name == "numpyro":
                args = [None if v is None else jnp.asarray(v) for v in map(cast, (loc, scale, low, high))]
                return JaxTruncatedNormal(*args)
            args = [None if v is None else torch.as_tensor(v) for v in map(cast, (loc, scale, low, high))]
            return TorchTruncatedNormal(*args)

    def call(self, distribution, method, values):
        values = np.asarray(values, self.dtype)
        if self.name == "numpyro":
            return np.asarray(getattr(distribution, method)(jnp.asarray(values)), np.float64)
        return getattr(distribution, method)(torch.as_tensor(values)).double().numpy()


@pytest.fixture(
    params=[("numpyro", "float32"), ("numpyro", "float64"), ("pyro", "float32"), ("pyro", "float64")]
)
def backend(request):
    name, dtype = request.param
    previous_jax, previous_torch = jax.config.jax_enable_x64, torch.get_default_dtype()
    jax.config.update("jax_enable_x64", dtype == "float64")
    torch.set_default_dtype(torch.float64 if dtype == "float64" else torch.float32)
    yield Backend(name, dtype)
    jax.config.update("jax_enable_x64", previous_jax)
    torch.set_default_dtype(previous_torch)


@pytest.fixture(params=["numpyro", "pyro"])
def float64(request):
    previous_jax, previous_torch = jax.config.jax_enable_x64, torch.get_default_dtype()
    jax.config.update("jax_enable_x64", True)
    torch.set_default_dtype(torch.float64)
    yield Backend(request.param, "float64")
    jax.config.update("jax_enable_x64", previous_jax)
    torch.set_default_dtype(previous_torch)


BOUNDS = [(None, None), (0.0, None), (None, 0.0), (-1.0, 2.0), (38.0, None), (None, -38.0), (5.0, 5.5)]


@pytest.mark.parametrize("low, high", BOUNDS)
def test_infinities_and_nan(backend, low, high):
    d = backend.make(0.0, 1.0, low, high)
    values = [-math.inf, math.inf, math.nan]
    np.testing.assert_array_equal(backend.call(d, "cdf", values), [0.0, 1.0, math.nan])
    np.testing.assert_array_equal(backend.call(d, "survival_function", values), [1.0, 0.0, math.nan])
    np.testing.assert_array_equal(backend.call(d, "log_cdf", values), [-math.inf, 0.0, math.nan])
    np.testing.assert_array_equal(
        backend.call(d, "log_survival_function", values), [0.0, -math.inf, math.nan]
    )


@pytest.mark.parametrize("low, high", BOUNDS)
def test_quantiles_outside_the_unit_interval_are_nan(backend, low, high):
    d = backend.make(0.0, 1.0, low, high)
    outside = [-0.5, 2.0, -math.inf, math.inf, math.nan, -1e-30, 1.0 + 1e-6]
    for method in ("icdf", "isf"):
        assert np.all(np.isnan(backend.call(d, method, outside))), method
    edges = [-math.inf if low is None else low, math.inf if high is None else high]
    np.testing.assert_array_equal(backend.call(d, "icdf", [0.0, 1.0]), np.asarray(edges, backend.dtype))
    np.testing.assert_array_equal(backend.call(d, "isf", [1.0, 0.0]), np.asarray(edges, backend.dtype))


def _mass(lo, hi):
    """Phi(hi) - Phi(lo) at 60 digits, computed in the upper tail (no cancellation)."""
    if hi <= 0:
        lo, hi = -hi, -lo
    return (mp.erfc(lo / mp.sqrt(2)) - mp.erfc(hi / mp.sqrt(2))) / 2


def _log_cdf_and_sf(low, high, x):
    """log F(x) and log S(x) at 60 digits, each above one half taken as log1p(-other)."""
    lo = -mp.inf if low is None else mp.mpf(low)
    hi = mp.inf if high is None else mp.mpf(high)
    total = _mass(lo, hi)
    cdf, sf = _mass(lo, x) / total, _mass(x, hi) / total
    log_cdf = mp.log(cdf) if cdf <= 0.5 else mp.log1p(-sf)
    log_sf = mp.log(sf) if sf <= 0.5 else mp.log1p(-cdf)
    return log_cdf, log_sf


@functools.cache
def reference_quantile(low, high, q, upper: bool):
    """The x with F(x) = q (or, ``upper``, S(x) = q), to 20 digits, by bisection on 60-digit masses."""
    lo = -mp.inf if low is None else mp.mpf(low)
    hi = mp.inf if high is None else mp.mpf(high)
    total, q = _mass(lo, hi), mp.mpf(q)
    a = lo if mp.isfinite(lo) else hi - 100
    b = hi if mp.isfinite(hi) else lo + 100
    for _ in range(400):
        middle = (a + b) / 2
        below = _mass(middle, hi) / total > q if upper else _mass(lo, middle) / total < q
        a, b = (middle, b) if below else (a, middle)
        if b - a <= abs(middle) * mp.mpf(10) ** -20:
            break
    return (a + b) / 2


TAILS = [
    (37.0, None),
    (40.0, None),
    (1e4, None),
    (None, -37.0),
    (None, -1e4),
    (37.0, 38.0),
    (-3.0, 2.0),
    (1e4, 1e4 + 1),
]
NEAR_ONE = [1 - 1e-8, 1 - 1e-12, 1 - 1e-14, 1 - 2.0**-52, 0.75]
NEAR_ZERO = [1e-8, 1e-100, 1e-300, 0.25]


@pytest.mark.parametrize("low, high", TAILS)
def test_quantiles_match_mpmath_to_1e_12_in_both_tails(float64, low, high):
    d = float64.make(0.0, 1.0, low, high)
    q = np.array(NEAR_ONE + NEAR_ZERO)
    for method, upper in (("icdf", False), ("isf", True)):
        x = float64.call(d, method, q)
        truth = np.array([float(reference_quantile(low, high, v, upper)) for v in q])
        error = np.abs(x - truth) / np.abs(truth)
        worst = int(np.argmax(error))
        assert error[worst] <= 1e-12, (method, q[worst], x[worst], truth[worst], error[worst])


@pytest.mark.parametrize("low, high", [(3.0, None), (10.0, None), (None, -5.0), (30.0, None), (2.0, 4.0)])
def test_float32_quantiles_are_within_4_ulps(low, high):
    backend = Backend("numpyro", "float32")
    d = backend.make(0.0, 1.0, low, high)
    q = np.array([1 - 2.0**-20, 1 - 2.0**-24, 0.5, 2.0**-20, 1e-30], np.float32)
    for method, upper in (("icdf", False), ("isf", True)):
        x = backend.call(d, method, q)
        truth = np.array([float(reference_quantile(low, high, float(v), upper)) for v in q])
        ulp = np.spacing(np.abs(truth).astype(np.float32)).astype(np.float64)
        error = np.abs(x - truth) / ulp
        assert np.max(error) <= 4, (method, q[np.argmax(error)], x[np.argmax(error)], truth[np.argmax(error)])


# scipy's test_logcdf_gh17064: log CDFs just below 0, where log(cdf) is 100 % wrong.
GH17064 = [(None, None, 10.0), (None, None, 7.5), (-8.0, 8.0, 7.5), (None, 10.0, 9.0), (10.0, None, 20.0)]


@pytest.mark.parametrize(
    "low, high, x", [*GH17064, (37.0, None, 38.5), (-1.0, 2.0, -0.99), (None, -40.0, -40.2)]
)
def test_log_cdf_and_log_survival_are_exact_in_log_space(float64, low, high, x):
    log_cdf, log_sf = (float(v) for v in _log_cdf_and_sf(low, high, x))
    d = float64.make(0.0, 1.0, low, high)
    np.testing.assert_allclose(float64.call(d, "log_cdf", [x]), [log_cdf], rtol=1e-13)
    np.testing.assert_allclose(float64.call(d, "log_survival_function", [x]), [log_sf], rtol=1e-13)
    np.testing.assert_allclose(float64.call(d, "cdf", [x]), [math.exp(log_cdf)], rtol=1e-13)
    np.testing.assert_allclose(float64.call(d, "survival_function", [x]), [math.exp(log_sf)], rtol=1e-13)
    # The mirror image: S(x) of the distribution reflected about 0 is F(-x).
    mirror = float64.make(0.0, 1.0, None if high is None else -high, None if low is None else -low)
    np.testing.assert_allclose(float64.call(mirror, "log_survival_function", [-x]), [log_cdf], rtol=1e-13)


def test_log_survival_has_the_gradients_censored_data_need(float64):
    """d/dloc log S(c) for a right-censored point, against mpmath's derivative."""
    c, low = 2.5, 0.0
    exact = float(mp.diff(lambda m: _log_cdf_and_sf(low - m, None, c - m)[1], 0))
    if float64.name == "numpyro":
        grad = jax.grad(lambda m: JaxTruncatedNormal(m, 1.0, low=low).log_survival_function(c))(0.0)
    else:
        loc = torch.tensor(0.0, requires_grad=True)
        TorchTruncatedNormal(loc, 1.0, low=low).log_survival_function(torch.tensor(c)).backward()
        grad = loc.grad
    np.testing.assert_allclose(float(grad), exact, rtol=1e-12)


def test_float32_draws_far_out_round_like_exact_draws(backend):
    """On [1e4, 1e4 + 1] a draw is the bound plus an exponential of mean 1e-4, but float32's
    spacing there is 2**-10 (about 1e-3): an exact draw rounds to the bound with probability
    1 - exp(-1e4 * 2**-11) = 0.9924 and to the next float up with 0.0076. The draws must
    land on the grid of floats with those frequencies."""
    if backend.dtype != np.float32:
        pytest.skip("float64 resolves this distribution; the test is about float32's grid")
    low = np.float32(1e4)
    d = backend.make(0.0, 1.0, low, low + 1)
    n = 20_000
    if backend.name == "numpyro":
        draws = np.asarray(d.sample(jax.random.PRNGKey(0), (n,)), np.float64)
    else:
        torch.manual_seed(0)
        draws = d.sample((n,)).double().numpy()
    spacing = float(np.spacing(low))
    steps = np.round((draws - float(low)) / spacing)
    assert np.all(steps >= 0) and np.all(draws == float(low) + steps * spacing)
    rate = float(low)  # the exponential's rate at the bound, in standard units
    cells = np.exp(-rate * spacing * (np.arange(4) - 0.5).clip(0))  # P(draw rounds to >= k)
    expected = n * (cells[:-1] - cells[1:])
    observed = np.array([np.sum(steps == k) for k in range(3)])
    # Poisson error on each count: within 4.5 standard deviations.
    assert np.all(np.abs(observed - expected) <= 4.5 * np.sqrt(expected) + 1), (observed, expected)
