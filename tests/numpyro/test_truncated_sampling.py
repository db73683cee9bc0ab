"""Sampling from robusthmc.numpyro.TruncatedNormal: draws, KS, and end to end under NUTS."""

import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.stats
from numpyro.diagnostics import effective_sample_size
from numpyro.infer import MCMC

import robusthmc
from robusthmc.lessons.data import (
    truncated_regression_data,
    truncated_regression_reference,
    turing_exact_quantiles,
)
from robusthmc.lessons.numpyro import truncated_regression, turing
from robusthmc.numpyro import NUTS, TruncatedNormal
from tests.truncnorm_reference import Case, grid, representable_case

PROBABILITIES = np.array([0.05, 0.25, 0.5, 0.75, 0.95])


def test_every_draw_lies_inside_its_bounds(dtype):
    numpy_dtype = np.float32 if dtype == "float32" else np.float64
    bounds = {(c.low, c.high) for c in grid() if c.low is not None and c.high is not None}
    bounds |= {(50.0, None), (None, -50.0), (30.0, 30.000001), (1000.0, None)}
    cases = sorted((b for b in bounds if representable_case(Case(*b, 0.0), numpy_dtype)), key=str)
    low = jnp.asarray([-np.inf if lo is None else lo for lo, _ in cases], numpy_dtype)
    high = jnp.asarray([np.inf if hi is None else hi for _, hi in cases], numpy_dtype)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", robusthmc.InfiniteBoundWarning)
        d = TruncatedNormal(0.0, 1.0, low=low, high=high)
    draws = jax.jit(d.sample, static_argnums=1)(jax.random.key(0), (2000,))
    assert draws.dtype == numpy_dtype
    outside = ~((draws >= low) & (draws <= high))
    assert not np.any(outside), [cases[j] for j in np.unique(np.nonzero(outside)[1])]
    assert np.all(np.isfinite(draws))


@pytest.mark.parametrize("low, high", [(0.0, None), (None, -1.0), (-1.0, 2.0), (3.0, 3.5), (-0.2, 0.1)])
def test_draws_pass_a_ks_test_against_scipy(low, high):
    d = TruncatedNormal(0.5, 2.0, low=low, high=high)
    draws = np.asarray(d.sample(jax.random.key(1), (4000,)), dtype=np.float64)
    a = -np.inf if low is None else (low - 0.5) / 2.0
    b = np.inf if high is None else (high - 0.5) / 2.0
    result = scipy.stats.kstest(draws, scipy.stats.truncnorm(a, b, loc=0.5, scale=2.0).cdf)
    assert result.pvalue > 1e-3, result


def test_draws_far_in_the_tail_pass_a_ks_test_float64(float64):
    # Beyond SciPy's reach: X - 40 has CDF G(40, t)/G(40, inf), our own float64 CDF, itself checked against mpmath.
    d = TruncatedNormal(0.0, 1.0, low=40.0)
    draws = d.sample(jax.random.key(2), (4000,))
    result = scipy.stats.kstest(np.asarray(draws), lambda x: np.asarray(d.cdf(jnp.asarray(x))))
    assert result.pvalue > 1e-3, result


def _latent_draws(loc, scale, low, high, u):
    """``TruncatedNormal(loc, scale, low, high)`` draws at uniforms ``u``, the parameters traced (latent)."""
    from robusthmc.numpyro import _truncated

    return _truncated._draw(*TruncatedNormal(loc, scale, low, high)._arguments(u))


def test_draws_with_latent_parameters_are_exact_quantiles_however_far_out(dtype):
    # A latent scale traces the parameters: where the closed form is not exact
    # (no bound below and u near 0, far tails, narrow intervals) the quantile is
    # computed off the compiled program. Every draw is icdf(u) (itself checked
    # against mpmath) to within a few ulps, at the extremes of u too.
    numpy_dtype = np.float32 if dtype == "float32" else np.float64
    finfo = np.finfo(numpy_dtype)
    bounds = sorted({(c.low, c.high) for c in grid() if representable_case(c, numpy_dtype)}, key=str)
    low = jnp.asarray([-np.inf if lo is None else lo for lo, _ in bounds], numpy_dtype)
    high = jnp.asarray([np.inf if hi is None else hi for _, hi in bounds], numpy_dtype)
    u = jnp.asarray([finfo.tiny, 1e-30, 1e-6, 0.3, 0.5, 0.9, 1 - finfo.eps / 2], numpy_dtype)[:, None]
    zeros = jnp.zeros_like(low)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", robusthmc.InfiniteBoundWarning)
        x = _latent_draws(zeros, zeros + 1, low, high, u)
        quantiles = np.asarray(jax.jit(TruncatedNormal(zeros, zeros + 1, low, high).icdf)(u))
    assert x.dtype == numpy_dtype and x.shape == (len(u), len(bounds))
    assert np.all((x >= low) & (x <= high))
    # A few ulps of x, or of the interval's width where x is near 0 inside a narrow one.
    width = np.minimum(np.asarray(high - low), 1.0)
    ulps = np.abs(np.asarray(x) - quantiles) / (np.spacing(np.abs(quantiles)) + finfo.eps * width)
    worst = np.unravel_index(np.argmax(ulps), ulps.shape)
    assert ulps[worst] <= 4, (bounds[worst[1]], float(u[worst[0], 0]), float(x[worst]), quantiles[worst])


@pytest.mark.parametrize(
    "low, high, u",
    [(None, 1.0, 1e-30), (40.0, None, 0.3), (30.0, 30.00001, 0.7), (1.0, 4.0, 0.6), (0.0, None, 0.999)],
)
def test_latent_draws_have_the_quantiles_derivatives_where_computed_off_the_program(float64, low, high, u):
    parameters = (jnp.float64(0.3), jnp.float64(1.5))
    u = jnp.float64(u)

    def by_draw(loc, scale):
        return _latent_draws(loc, scale, low, high, u)

    def by_icdf(loc, scale):
        return TruncatedNormal(loc, scale, low, high).icdf(u)

    np.testing.assert_allclose(by_draw(*parameters), by_icdf(*parameters), rtol=1e-13)
    for draw, quantile in zip(jax.grad(by_draw, (0, 1))(*parameters), jax.grad(by_icdf, (0, 1))(*parameters)):
        np.testing.assert_allclose(draw, quantile, rtol=1e-9)


def test_latent_draws_under_vmap_and_predictive_in_parallel():
    import numpyro
    from numpyro.infer import Predictive

    key = jax.random.key(5)
    scales = jnp.asarray([0.5, 1.0, 3.0])
    batched = jax.vmap(lambda s: TruncatedNormal(0.0, s, high=-30.0).sample(key, (4,)))(scales)
    one_by_one = [TruncatedNormal(0.0, s, high=-30.0).sample(key, (4,)) for s in scales]
    np.testing.assert_array_equal(batched, jnp.stack(one_by_one))
    assert bool((batched <= -30.0).all())

    def model():
        s = numpyro.sample("s", numpyro.distributions.InverseGamma(2.0, 3.0))
        numpyro.sample("V", TruncatedNormal(0.0, s, low=0.0))

    draws = Predictive(model, num_samples=200, parallel=True)(jax.random.key(6))["V"]
    assert draws.shape == (200,) and bool((draws >= 0).all())


def test_reparametrized_samples_have_implicit_gradients(float64):
    # d/dloc of a draw from the same uniform = -(dF/dloc)/p, checked by finite differences.
    key = jax.random.key(3)

    def draw(loc):
        return TruncatedNormal(loc, 1.5, low=1.0, high=4.0).sample(key, (8,))

    gradient = jax.jacfwd(draw)(0.3)
    numeric = (draw(0.3 + 1e-6) - draw(0.3 - 1e-6)) / 2e-6
    np.testing.assert_allclose(np.diag(gradient) if gradient.ndim == 2 else gradient, numeric, rtol=1e-5)


def _within_monte_carlo_error(draws, expected_quantiles, label):
    """The empirical CDF at the exact quantiles is within 4 standard errors (from the ESS) of p."""
    ess = float(effective_sample_size(np.asarray(draws)))
    flat = np.asarray(draws).reshape(-1)
    empirical = np.array([(flat <= q).mean() for q in expected_quantiles])
    allowed = 4 * np.sqrt(PROBABILITIES * (1 - PROBABILITIES) / ess)
    assert np.all(np.abs(empirical - PROBABILITIES) <= allowed), (label, ess, empirical, allowed)


@pytest.mark.timeout(300)
@pytest.mark.parametrize("high", [None, jnp.inf])
def test_turing_model_matches_the_exact_posterior(high):
    mcmc = MCMC(
        NUTS(turing),
        num_warmup=500,
        num_samples=1500,
        num_chains=2,
        chain_method="vectorized",
        progress_bar=False,
    )
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", robusthmc.InfiniteBoundWarning)
        mcmc.run(jax.random.key(4), high=high, truncated_normal=TruncatedNormal, extra_fields=("num_steps",))
    assert any(issubclass(w.category, robusthmc.InfiniteBoundWarning) for w in caught) == (high is not None)
    assert not mcmc.get_extra_fields()["nonfinite"].any()
    exact = turing_exact_quantiles(PROBABILITIES)
    draws = mcmc.get_samples(group_by_chain=True)
    for site in ("s", "V"):
        _within_monte_carlo_error(draws[site], exact[site], site)


@pytest.mark.timeout(300)
def test_truncated_regression_in_float32_matches_the_grid_reference():
    # target_accept_prob=0.99: at 0.8 even float64 NUTS under-explores the small-sigma corner
    # (geometric divergences), which is a different lesson.
    assert jnp.result_type(float) == jnp.float32
    mcmc = MCMC(
        NUTS(truncated_regression, target_accept_prob=0.99),
        num_warmup=1000,
        num_samples=2000,
        num_chains=2,
        chain_method="vectorized",
        progress_bar=False,
    )
    mcmc.run(jax.random.key(0), truncated_regression_data(), truncated_normal=TruncatedNormal)
    assert int(mcmc.get_extra_fields()["nonfinite"].sum()) == 0
    reference = truncated_regression_reference().quantiles(PROBABILITIES)
    draws = mcmc.get_samples(group_by_chain=True)
    for site in ("mu", "sigma"):
        _within_monte_carlo_error(draws[site], reference[site], site)
