"""robusthmc.numpyro.TruncatedNormal against a 60-digit mpmath reference, and as a genuine numpyro distribution."""

import warnings

import jax
import jax.numpy as jnp
import mpmath as mp
import numpy as np
import pytest
import scipy.stats
from numpyro.distributions.transforms import biject_to

import robusthmc
from robusthmc.numpyro import TruncatedNormal
from tests.truncnorm_reference import (
    Case,
    check_against_reference,
    grid,
    reference_moments,
    representable_case,
)

TOLERANCE = {"float32": (1e-5, 1e-6), "float64": (1e-10, 1e-12)}  # (relative, absolute)
GRID = grid()


def _arrays(cases, dtype):
    low = np.array([-np.inf if c.low is None else c.low for c in cases], dtype)
    high = np.array([np.inf if c.high is None else c.high for c in cases], dtype)
    x = np.array([c.x for c in cases], dtype)
    return jnp.asarray(low), jnp.asarray(high), jnp.asarray(x)


def _evaluate(cases, dtype):
    """Values and gradients for every case at once (array bounds with inf entries = None)."""
    low, high, x = _arrays(cases, dtype)

    def log_prob(loc, scale, low, high):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", robusthmc.InfiniteBoundWarning)
            return TruncatedNormal(loc, scale, low, high).log_prob(x)

    zeros, ones = jnp.zeros_like(x), jnp.ones_like(x)
    value = log_prob(zeros, ones, low, high)
    grads = jax.jacrev(lambda *a: log_prob(*a).sum(), argnums=(0, 1, 2, 3))(zeros, ones, low, high)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", robusthmc.InfiniteBoundWarning)
        cdf = TruncatedNormal(zeros, ones, low, high).cdf(x)
    names = ("log_prob", "grad_loc", "grad_scale", "grad_low", "grad_high", "cdf")
    return {name: np.asarray(v, np.float64) for name, v in zip(names, (value, *grads, cdf))}


def test_log_prob_gradients_and_cdf_match_mpmath_on_the_grid(dtype):
    numpy_dtype = np.float32 if dtype == "float32" else np.float64
    rtol, atol = TOLERANCE[dtype]
    cases = [c for c in GRID if representable_case(c, numpy_dtype)]
    got = _evaluate(cases, numpy_dtype)
    failures, worst, conditioned = check_against_reference(cases, got, numpy_dtype, rtol, atol)
    print(f"\nworst relative error, robusthmc.numpyro.TruncatedNormal, {dtype} ({len(cases)} cases):")
    for name, error in sorted(worst.items()):
        print(f"  {name:10s} {error:.2e}")
    print(f"  ill-conditioned gradients held to eps x cancelling terms: {conditioned}")
    assert not failures, failures[:10]


@pytest.mark.parametrize(
    "low, high, x",
    [(None, None, -2.0), (0.0, None, 0.4), (None, -4.0, -4.3), (10.0, 10.5, 10.2), (-1.0, 2.0, 1.5)],
)
def test_value_derivatives_and_second_derivatives(float64, low, high, x):
    """d/dx and d2/dx2 are the normal's; second derivatives in the parameters match finite differences.

    The latter differentiate the custom derivative rules themselves (``jax.hessian``,
    as a Laplace approximation does).
    """
    loc, scale = 0.3, 1.7

    def log_prob(x, loc, scale):
        return TruncatedNormal(loc, scale, low=low, high=high).log_prob(x)

    assert jax.grad(log_prob)(x, loc, scale) == pytest.approx(-(x - loc) / scale**2, rel=1e-12)
    assert jax.hessian(log_prob)(x, loc, scale) == pytest.approx(-1 / scale**2, rel=1e-12)
    hessian = np.asarray(jax.hessian(log_prob, argnums=(1, 2))(x, loc, scale))
    step = 1e-5
    grad = jax.grad(log_prob, argnums=(1, 2))
    by_loc = (np.array(grad(x, loc + step, scale)) - np.array(grad(x, loc - step, scale))) / (2 * step)
    by_scale = (np.array(grad(x, loc, scale + step)) - np.array(grad(x, loc, scale - step))) / (2 * step)
    np.testing.assert_allclose(hessian, np.stack([by_loc, by_scale]), rtol=1e-6, atol=1e-9)


def test_log_prob_is_minus_inf_exactly_outside_the_support():
    d = TruncatedNormal(0.0, 1.0, low=jnp.array([0.0, -1.0]), high=jnp.array([1.0, 2.0]), validate_args=False)
    values = d.log_prob(jnp.array([[-1e-3, 2.5], [1.5, -30.0]]))
    np.testing.assert_array_equal(values, -np.inf)
    assert np.isneginf(TruncatedNormal(0.0, 1.0, low=0.0, validate_args=False).log_prob(jnp.inf))


def test_infinite_bound_is_none_same_values_and_gradients_with_one_warning(float64):
    def log_prob(high, scale, value):
        return TruncatedNormal(0.3, scale, low=0.0, high=high).log_prob(value)

    with pytest.warns(robusthmc.InfiniteBoundWarning, match="high=None") as record:
        with_inf = jax.value_and_grad(log_prob, argnums=1)(jnp.inf, 1.7, 2.0)
    assert len(record) == 1
    with_none = jax.value_and_grad(log_prob, argnums=1)(None, 1.7, 2.0)
    np.testing.assert_array_equal(with_inf, with_none)
    # Mixed, elementwise, in an array bound.
    high = jnp.array([jnp.inf, 3.0])
    with pytest.warns(robusthmc.InfiniteBoundWarning, match="1 of 2 entries"):
        mixed = jax.grad(lambda s: TruncatedNormal(0.0, s, low=0.0, high=high).log_prob(1.0).sum())(
            jnp.array([1.7, 1.7])
        )
    alone = jax.grad(lambda s: TruncatedNormal(0.0, s, low=0.0).log_prob(1.0))(1.7)
    assert mixed[0] == alone and np.isfinite(mixed[1])


def test_bad_bounds_are_clear_errors():
    with pytest.raises(ValueError, match="low bound of inf leaves no support"):
        TruncatedNormal(0.0, 1.0, low=np.inf)
    with pytest.raises(ValueError, match="low < high"):
        TruncatedNormal(0.0, 1.0, low=2.0, high=1.0)
    with pytest.raises(ValueError, match="high=nan: a NaN bound"):
        TruncatedNormal(0.0, 1.0, low=0.0, high=float("nan"))
    with pytest.raises(ValueError, match="scale"):
        TruncatedNormal(0.0, -1.0, low=0.0, validate_args=True)


@pytest.mark.parametrize(
    "low, high",
    [(None, None), (0.0, None), (None, 1.0), (-1.0, 2.0), (jnp.array([0.0, -1.0]), jnp.array([1.0, 5.0]))],
)
def test_support_and_biject_to(low, high):
    d = TruncatedNormal(jnp.zeros(2), 1.0, low=low, high=high)
    transform = biject_to(d.support)
    x = jnp.array([-5.0, 5.0])
    y = transform(x)
    assert np.all(d.support(y))
    np.testing.assert_allclose(transform.inv(transform(jnp.array([0.3, -0.7]))), [0.3, -0.7], rtol=1e-5)


def test_partly_bounded_support_maps_each_entry_like_its_own_bounds():
    with pytest.warns(robusthmc.InfiniteBoundWarning):
        d = TruncatedNormal(
            0.0,
            1.0,
            low=jnp.array([0.0, -jnp.inf, -jnp.inf, 1.0]),
            high=jnp.array([jnp.inf, 2.0, jnp.inf, 3.0]),
        )
    transform = biject_to(d.support)
    x = jnp.array([-1.0, -1.0, -1.0, -1.0])
    y = transform(x)
    np.testing.assert_allclose(
        y, [np.exp(-1.0), 2.0 - np.exp(-1.0), -1.0, 1.0 + 2.0 / (1.0 + np.e)], rtol=1e-6
    )
    np.testing.assert_allclose(transform.inv(y), x, rtol=1e-5)
    expected = [-1.0, -1.0, 0.0, np.log(2.0) - 1.0 - 2 * np.log1p(np.exp(-1.0))]
    np.testing.assert_allclose(transform.log_abs_det_jacobian(x, y), expected, rtol=1e-5)


def test_shapes_broadcasting_expand_and_to_event():
    d = TruncatedNormal(jnp.zeros((3, 1)), jnp.ones(4), low=0.0)
    assert d.batch_shape == (3, 4)
    assert d.sample(jax.random.key(0), (5,)).shape == (5, 3, 4)
    assert d.expand((2, 3, 4)).batch_shape == (2, 3, 4)
    assert d.to_event(1).event_shape == (4,)
    assert d.to_event(1).log_prob(jnp.ones((3, 4))).shape == (3,)


def test_moments_match_mpmath(float64):
    for low, high in [(0.0, None), (None, -2.0), (-1.0, 2.5), (5.0, 5.5), (-1e-3, 1e-3), (30.0, 31.0)]:
        d = TruncatedNormal(0.4, 1.3, low=low, high=high)
        mean, variance, entropy = reference_moments(0.4, 1.3, low, high)
        np.testing.assert_allclose(d.mean, mean, rtol=1e-10, err_msg=f"{low}, {high}")
        np.testing.assert_allclose(d.variance, variance, rtol=1e-8, err_msg=f"{low}, {high}")
        np.testing.assert_allclose(d.entropy(), entropy, rtol=1e-8, atol=1e-12, err_msg=f"{low}, {high}")


def test_moments_stay_exact_far_in_the_tail(float64):
    d = TruncatedNormal(0.0, 1.0, low=1000.0)
    # T = X - 1000 has density exp(-1000 t - t^2/2) / G: mean ~ 1/a - 2/a^3, variance ~ 1/a^2 - 5/a^4 (a = 1000).
    np.testing.assert_allclose(d.mean - 1000.0, 1e-3 - 2e-9, rtol=1e-5)
    np.testing.assert_allclose(d.variance, 1e-6 - 5e-12, rtol=1e-5)


@pytest.mark.parametrize(
    "low, high",
    [(3.0, None), (10.0, None), (None, None), (-1.0, 2.0), (None, -5.0), (2.0, 4.0), (-8.0, -6.5)],
)
def test_icdf_is_within_a_few_ulps_of_scipy_in_float32(low, high):
    # In closed form, each tail computed where it keeps its precision: q near 1 in
    # the right tail included (a Newton iteration on the log CDF loses ~180 ulps there).
    q = np.concatenate([np.linspace(1e-6, 1 - 1e-6, 999), [1 - 2.0**-20, 0.9997, 2.0**-20]]).astype(
        np.float32
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", robusthmc.InfiniteBoundWarning)
        x = np.asarray(
            jax.jit(TruncatedNormal(0.0, 1.0, low=low, high=high).icdf)(jnp.asarray(q)), np.float64
        )
    a, b = -np.inf if low is None else low, np.inf if high is None else high
    truth = scipy.stats.truncnorm(a, b).ppf(q.astype(np.float64))
    ulp = np.spacing(np.abs(truth).astype(np.float32)).astype(np.float64)
    eps = float(np.finfo(np.float32).eps)
    error = np.abs(x - truth) / (ulp + eps)
    assert np.max(error) < 4, (q[np.argmax(error)], x[np.argmax(error)], truth[np.argmax(error)])
    print(f"\nicdf vs scipy, float32, [{low}, {high}]: worst |error| / (ulp + eps) {np.max(error):.2f}")


def test_cdf_of_icdf_is_q_to_working_precision(dtype):
    numpy_dtype = np.float32 if dtype == "float32" else np.float64
    eps = float(np.finfo(numpy_dtype).eps)
    bounds = sorted({(c.low, c.high) for c in GRID if representable_case(c, numpy_dtype)}, key=str)
    low, high, _ = _arrays([Case(lo, hi, 0.0) for lo, hi in bounds], numpy_dtype)
    q = jnp.asarray([1e-6, 0.01, 0.3, 0.5, 0.9, 0.999], numpy_dtype)[:, None]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", robusthmc.InfiniteBoundWarning)
        d = TruncatedNormal(0.0, 1.0, low=low, high=high)
    x = jax.jit(d.icdf)(q)
    assert np.all((x >= low) & (x <= high))
    # Working precision: q moves by p(x) * ulp(x) when x moves by one ulp.
    density = jnp.exp(d.log_prob(x))
    allowed = 8 * eps * (q + density * jnp.abs(x) + density)
    error = jnp.abs(d.cdf(x) - q)
    bad = np.argwhere(np.asarray(error > allowed))
    assert not len(bad), [(bounds[j], float(q[i, 0]), float(x[i, j]), float(error[i, j])) for i, j in bad[:5]]
    print(f"\nworst |cdf(icdf(q)) - q| / q, {dtype}: {float(jnp.max(error / q)):.2e}")


@pytest.mark.parametrize(
    "loc, low, high, suffices",
    [
        (0.0, 0.0, None, True),
        (0.3, -1.0, 2.0, True),
        (0.0, 4.9, None, True),
        (0.0, None, 1.0, False),  # no bound below: a draw at u near 0 needs Newton
        (-8.0, 0.0, None, False),  # 8 sd out
        (0.0, 30.0, 30.00001, False),  # narrow
    ],
)
def test_sampling_skips_the_newton_branch_only_where_every_draw_is_in_closed_form(
    dtype, loc, low, high, suffices
):
    from robusthmc import _truncnorm
    from robusthmc.numpyro import _truncated

    d = TruncatedNormal(loc, 1.0, low=low, high=high)
    finfo = np.finfo(jnp.result_type(float))
    parameters = (d.loc, d.scale, *d._bounds_if_concrete())
    assert _truncnorm.closed_form_suffices(*parameters, float(finfo.tiny), float(finfo.eps)) == suffices
    if not suffices:
        return
    # The extremes of a uniform draw, and a spread between.
    u = jnp.concatenate(
        [
            jnp.asarray([finfo.tiny, 1e-30, 0.5, 1 - finfo.eps / 2], finfo.dtype),
            jax.random.uniform(jax.random.key(0), (200,), finfo.dtype),
        ]
    )
    arguments = d._arguments(u)
    numpy_pieces = [jnp.asarray(p, finfo.dtype) for p in _truncnorm.numpy_tail_pieces(*parameters)]
    draws = np.asarray(_truncated._closed_form_draw(*arguments, *numpy_pieces), np.float64)
    quantiles = np.asarray(_truncated._icdf(*arguments), np.float64)
    if dtype == "float64":  # the same algorithm as icdf's, on the parameters' pieces computed in JAX
        jax_pieces = _truncnorm.tail_pieces(_truncated._OPS, _truncated._MASSES, *arguments[:4])
        np.testing.assert_array_equal(_truncated._closed_form_draw(*arguments, *jax_pieces), quantiles)
    # With the pieces from NumPy (float64), the draws are as exact as icdf's: 60-digit quantiles.
    mp.mp.dps = 60
    lo = mp.mpf(-np.inf if low is None else low) - mp.mpf(loc)
    hi = mp.mpf(np.inf if high is None else high) - mp.mpf(loc)
    below, mass = mp.ncdf(lo), mp.ncdf(hi) - mp.ncdf(lo)
    exact = np.array(
        [float(loc + mp.sqrt(2) * mp.erfinv(2 * (below + mp.mpf(float(q)) * mass) - 1)) for q in u]
    )
    error = lambda x: np.max(np.abs(x - exact) / (1 + np.abs(exact))) / finfo.eps  # noqa: E731
    print(f"\n{dtype} {loc} {low} {high}: draws {error(draws):.1f} eps, icdf {error(quantiles):.1f} eps")
    assert error(draws) <= max(error(quantiles), 4.0)


@pytest.mark.parametrize("scale", [-1.0, 0.0, float("nan"), [1.0, -2.0]])
def test_a_scale_that_is_not_positive_is_named_with_its_value(scale):
    with pytest.raises(
        ValueError, match=r"^TruncatedNormal got scale=.*: the scale must be > 0 in every entry"
    ):
        TruncatedNormal(0.0, scale, low=0.0)


INF = float("inf")


@pytest.mark.parametrize(
    "low, high",
    [(None, None), (0.5, None), (None, 0.5), (-0.5, 1.0), (0.5, INF), (-INF, 0.5), ([0.0, -INF], [INF, 1.0])],
)
def test_every_bound_combination_runs_under_nuts_hmc_svi_and_predictive(low, high):
    import numpyro
    from numpyro.infer import HMC, MCMC, NUTS, SVI, Predictive, Trace_ELBO
    from numpyro.infer.autoguide import AutoNormal
    from numpyro.optim import Adam

    def distribution():
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", robusthmc.InfiniteBoundWarning)
            bounds = {k: None if v is None else jnp.asarray(v) for k, v in (("low", low), ("high", high))}
            return TruncatedNormal(jnp.array([0.5, 0.5]), 1.0, **bounds)

    def model():
        numpyro.sample("x", distribution().to_event(1))

    support = distribution().support
    for kernel in (NUTS(model), HMC(model, num_steps=5, trajectory_length=None)):
        mcmc = MCMC(kernel, num_warmup=20, num_samples=20, progress_bar=False)
        mcmc.run(jax.random.key(0))
        draws = mcmc.get_samples()["x"]
        assert draws.shape == (20, 2) and bool(jnp.isfinite(draws).all())
        assert bool(support(draws).all())
    svi = SVI(model, AutoNormal(model), Adam(0.05), Trace_ELBO())
    result = svi.run(jax.random.key(1), 20, progress_bar=False)
    assert np.isfinite(np.asarray(result.losses)).all()
    assert Predictive(model, num_samples=10)(jax.random.key(2))["x"].shape == (10, 2)
