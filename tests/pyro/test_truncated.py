"""robusthmc.pyro.TruncatedNormal: the same mpmath grid as the numpyro one, sampling, rsample."""

import warnings

import numpy as np
import pyro.distributions as dist
import pytest
import scipy.stats
import torch

import robusthmc
from robusthmc.pyro import TruncatedNormal, truncated
from tests.truncnorm_reference import Case, check_against_reference, grid, representable_case

TOLERANCE = {"float32": (1e-5, 1e-6), "float64": (1e-10, 1e-12)}
GRID = grid()


def _tensors(cases, numpy_dtype):
    low = torch.tensor([-np.inf if c.low is None else c.low for c in cases], dtype=torch.float64)
    high = torch.tensor([np.inf if c.high is None else c.high for c in cases], dtype=torch.float64)
    x = torch.tensor([c.x for c in cases], dtype=torch.float64)
    dtype = torch.float32 if numpy_dtype == np.float32 else torch.float64
    return low.to(dtype), high.to(dtype), x.to(dtype)


def test_log_prob_gradients_and_cdf_match_mpmath_on_the_grid(dtype):
    numpy_dtype = np.float32 if dtype == "float32" else np.float64
    cases = [c for c in GRID if representable_case(c, numpy_dtype)]
    low, high, x = _tensors(cases, numpy_dtype)
    loc, scale = torch.zeros_like(x, requires_grad=True), torch.ones_like(x, requires_grad=True)
    low, high = low.clone().requires_grad_(True), high.clone().requires_grad_(True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", robusthmc.InfiniteBoundWarning)
        d = TruncatedNormal(loc, scale, low, high)
    value = d.log_prob(x)
    grads = torch.autograd.grad(value.sum(), (loc, scale, low, high))
    got = {
        name: v.detach().double().numpy()
        for name, v in zip(
            ("log_prob", "grad_loc", "grad_scale", "grad_low", "grad_high", "cdf"), (value, *grads, d.cdf(x))
        )
    }
    rtol, atol = TOLERANCE[dtype]
    failures, worst, conditioned = check_against_reference(cases, got, numpy_dtype, rtol, atol)
    print(f"\nworst relative error, robusthmc.pyro.TruncatedNormal, {dtype} ({len(cases)} cases):")
    for name, error in sorted(worst.items()):
        print(f"  {name:10s} {error:.2e}")
    print(f"  ill-conditioned gradients held to eps x cancelling terms: {conditioned}")
    assert not failures, failures[:10]


def test_infinite_bound_is_none_same_values_and_gradients(float64):
    def value_and_grad(high):
        scale = torch.tensor(1.7, requires_grad=True)
        value = TruncatedNormal(0.3, scale, low=0.0, high=high).log_prob(torch.tensor(2.0))
        return value.item(), torch.autograd.grad(value, scale)[0].item()

    with pytest.warns(robusthmc.InfiniteBoundWarning, match="high=None"):
        with_inf = value_and_grad(float("inf"))
    assert with_inf == value_and_grad(None)


def test_every_draw_lies_inside_its_bounds(dtype):
    numpy_dtype = np.float32 if dtype == "float32" else np.float64
    bounds = {(c.low, c.high) for c in GRID if c.low is not None and c.high is not None}
    bounds |= {(50.0, None), (None, -50.0), (30.0, 30.000001), (1000.0, None)}
    cases = sorted((b for b in bounds if representable_case(Case(*b, 0.0), numpy_dtype)), key=str)
    low, high, _ = _tensors([Case(lo, hi, 0.0) for lo, hi in cases], numpy_dtype)
    torch.manual_seed(0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", robusthmc.InfiniteBoundWarning)
        draws = TruncatedNormal(0.0, 1.0, low=low, high=high).sample((2000,))
    assert torch.all((draws >= low) & (draws <= high)) and torch.all(torch.isfinite(draws))


@pytest.mark.parametrize("low, high", [(0.0, None), (None, -1.0), (-1.0, 2.0), (3.0, 3.5)])
def test_draws_pass_a_ks_test_against_scipy(low, high):
    torch.manual_seed(1)
    draws = TruncatedNormal(0.5, 2.0, low=low, high=high).sample((4000,)).double().numpy()
    a = -np.inf if low is None else (low - 0.5) / 2.0
    b = np.inf if high is None else (high - 0.5) / 2.0
    assert scipy.stats.kstest(draws, scipy.stats.truncnorm(a, b, loc=0.5, scale=2.0).cdf).pvalue > 1e-3


def test_rsample_has_pathwise_gradients(float64):
    loc = torch.tensor(0.3, requires_grad=True)
    torch.manual_seed(3)
    draws = TruncatedNormal(loc, 1.5, low=1.0, high=4.0).rsample((8,))
    (gradient,) = torch.autograd.grad(draws.sum(), loc)
    step = 1e-6
    torch.manual_seed(3)
    up = TruncatedNormal(0.3 + step, 1.5, low=1.0, high=4.0).rsample((8,))
    torch.manual_seed(3)
    down = TruncatedNormal(0.3 - step, 1.5, low=1.0, high=4.0).rsample((8,))
    np.testing.assert_allclose(gradient.item(), ((up - down) / (2 * step)).sum().item(), rtol=1e-5)


def test_shapes_expand_to_event_and_truncated():
    d = TruncatedNormal(torch.zeros(3, 1), torch.ones(4), low=0.0)
    assert d.batch_shape == (3, 4)
    assert d.sample((5,)).shape == (5, 3, 4)
    assert d.expand((2, 3, 4)).batch_shape == (2, 3, 4)
    assert d.to_event(1).log_prob(torch.ones(3, 4)).shape == (3,)
    assert isinstance(truncated(dist.Normal(0.0, 1.0), low=0.0), TruncatedNormal)
    with pytest.raises(TypeError, match="supports a Normal base, got Cauchy"):
        truncated(dist.Cauchy(0.0, 1.0), low=0.0)
    assert torch.all(torch.distributions.biject_to(d.support)(torch.tensor(-50.0)) >= 0.0)


@pytest.mark.parametrize("low, high", [(None, None), (0.0, None), (None, 1.0), (-1.0, 2.0)])
def test_support_is_closed_and_biject_to_maps_into_it(low, high):
    d = TruncatedNormal(torch.zeros(2), 1.0, low=low, high=high)
    transform = torch.distributions.biject_to(d.support)
    y = transform(torch.tensor([-5.0, 5.0]))
    assert torch.all(d.support.check(y))
    torch.testing.assert_close(transform.inv(transform(torch.tensor([0.3, -0.7]))), torch.tensor([0.3, -0.7]))
    if low is not None:
        assert torch.all(d.support.check(torch.tensor(low)))
    if high is not None:
        assert torch.all(d.support.check(torch.tensor(high)))


@pytest.mark.parametrize(
    "loc, low, high",
    [(0.3, 0.0, None), (0.3, -1.0, 2.0), (2.0, 0.0, 1.0), (-4.0, 0.0, None), (0.0, 30.0, 30.00001)],
)
def test_rsample_is_icdf_at_its_uniforms_with_the_same_gradients(dtype, loc, low, high):
    # The first four take the closed form (the parameters' part once, in their shape); the
    # last, narrow, takes icdf itself. Either way: icdf's values, bit for bit, and its
    # derivatives to rounding (the closed form differentiates through the pieces once).
    tiny = torch.finfo(torch.get_default_dtype()).tiny
    loc = (loc + torch.tensor([0.0, 0.5]).expand(500, 2)).requires_grad_(True)  # one per draw
    d = TruncatedNormal(loc, 1.2, low=low, high=high)
    torch.manual_seed(0)
    draws = d.rsample()
    torch.manual_seed(0)
    u = torch.rand(500, 2).clamp(min=tiny)
    quantiles = d.icdf(u)
    assert torch.equal(draws, quantiles)
    (gradient,) = torch.autograd.grad(draws.sum(), loc)  # each draw's d x / d loc
    (expected,) = torch.autograd.grad(quantiles.sum(), loc)
    # d x / d loc lies in [0, 1]: the two differ by rounding, half an eps here.
    eps = torch.finfo(torch.get_default_dtype()).eps
    torch.testing.assert_close(gradient, expected, rtol=0, atol=2 * eps)


INF = float("inf")


@pytest.mark.timeout(300)
@pytest.mark.parametrize(
    "low, high",
    [(None, None), (0.5, None), (None, 0.5), (-0.5, 1.0), (0.5, INF), (-INF, 0.5), ([0.0, -INF], [INF, 1.0])],
)
def test_every_bound_combination_runs_under_nuts_hmc_svi_and_predictive(low, high):
    import pyro
    from pyro.infer import HMC, MCMC, NUTS, SVI, Predictive, Trace_ELBO
    from pyro.infer.autoguide import AutoNormal

    def distribution():
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", robusthmc.InfiniteBoundWarning)
            return TruncatedNormal(torch.tensor([0.5, 0.5]), 1.0, low=low, high=high)

    def model():
        pyro.sample("x", distribution().to_event(1))

    support = distribution().support
    for kernel in (NUTS(model), HMC(model, num_steps=5)):
        pyro.set_rng_seed(0)
        mcmc = MCMC(kernel, num_samples=20, warmup_steps=20, disable_progbar=True)
        mcmc.run()
        draws = mcmc.get_samples()["x"]
        assert draws.shape == (20, 2) and bool(draws.isfinite().all())
        assert bool(support.check(draws).all())
    pyro.clear_param_store()
    svi = SVI(model, AutoNormal(model), pyro.optim.Adam({"lr": 0.05}), Trace_ELBO())
    assert all(np.isfinite(svi.step()) for _ in range(20))
    assert Predictive(model, num_samples=10)()["x"].shape == (10, 2)
