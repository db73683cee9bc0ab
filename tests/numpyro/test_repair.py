"""robusthmc.numpyro.repair: exact swaps, what it says it changed, and every numpyro context."""

from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist
import pytest
from numpyro import handlers
from numpyro.infer import MCMC, NUTS, SVI, Predictive, Trace_ELBO
from numpyro.infer.autoguide import AutoNormal

import robusthmc
import robusthmc.numpyro as rnp
from robusthmc.lessons.numpyro import turing
from robusthmc.numpyro import TruncatedNormal, repair


def _draws(model, kernel=NUTS, num=150, **kwargs):
    mcmc = MCMC(kernel(model), num_warmup=num, num_samples=num, progress_bar=False)
    mcmc.run(jax.random.key(0), **kwargs)
    return mcmc.get_samples()


def _equal(a, b):
    assert a.keys() == b.keys()
    for name in a:
        np.testing.assert_array_equal(a[name], b[name], err_msg=name)


@pytest.mark.parametrize("kernel", [NUTS, rnp.NUTS], ids=["numpyro", "robusthmc"])
def test_repaired_turing_draws_what_the_hand_fixed_model_draws_bit_for_bit(kernel, dtype):
    repaired = _draws(repair(turing), kernel)
    by_hand = _draws(turing, kernel, high=None, truncated_normal=TruncatedNormal)
    _equal(repaired, by_hand)
    assert np.all(np.asarray(repaired["V"]) >= 0) and np.isfinite(repaired["V"]).all()


def test_explain_names_the_site_the_bound_and_the_cause():
    (change,) = repair(turing).explain()
    assert change.site == "V" and change.cause == "infinite_bound"
    assert change.before.startswith("numpyro.TruncatedNormal(") and "high=inf" in change.before
    assert change.after.startswith("robusthmc.numpyro.TruncatedNormal(") and "high" not in change.after
    line = str(repair(turing).explain())
    assert line.count("\n") == 0 and line.startswith("site 'V': numpyro.TruncatedNormal(loc=0")
    assert repair(turing).explain().to_dict()["repairs"][0]["site"] == "V"


def mixed(y=None):
    """Repairable sites (v, w, obs) beside untouched ones (s, u, h)."""
    s = numpyro.sample("s", dist.InverseGamma(2.0, 3.0))
    u = numpyro.sample("u", dist.Uniform(0.0, 1.0))
    numpyro.sample("h", dist.TruncatedDistribution(dist.Cauchy(0.0, s), low=-1.0, high=1.0))
    with numpyro.plate("n", 3):
        numpyro.sample("v", dist.TruncatedNormal(u, s, low=0.0, high=jnp.inf))
    numpyro.sample("w", dist.TruncatedNormal(jnp.zeros(2), s, high=1.0).to_event(1))
    with numpyro.plate("data", 4):
        numpyro.sample("obs", dist.TruncatedNormal(u, s, low=0.0, high=jnp.inf).mask(True), obs=y)


def mixed_by_hand(y=None):
    s = numpyro.sample("s", dist.InverseGamma(2.0, 3.0))
    u = numpyro.sample("u", dist.Uniform(0.0, 1.0))
    numpyro.sample("h", dist.TruncatedDistribution(dist.Cauchy(0.0, s), low=-1.0, high=1.0))
    with numpyro.plate("n", 3):
        numpyro.sample("v", TruncatedNormal(u, s, low=0.0))
    numpyro.sample("w", TruncatedNormal(jnp.zeros(2), s, high=1.0).to_event(1))
    with numpyro.plate("data", 4):
        numpyro.sample("obs", TruncatedNormal(u, s, low=0.0).mask(True), obs=y)


Y = jnp.array([0.3, 1.2, 0.1, 2.0])


def test_a_model_mixing_repaired_and_untouched_sites():
    changes = {change.site: change for change in repair(mixed).explain(Y)}
    assert set(changes) == {"v", "w", "obs"}
    assert changes["w"].cause == "tail_overflow" and changes["obs"].cause == "infinite_bound"
    _equal(_draws(repair(mixed), num=60, y=Y), _draws(mixed_by_hand, num=60, y=Y))
    # Untouched sites keep the very distribution the model built.
    trace = handlers.trace(handlers.seed(repair(mixed), 0)).get_trace(Y)
    assert type(trace["h"]["fn"]).__name__ == "TwoSidedTruncatedDistribution"
    assert isinstance(trace["u"]["fn"], dist.Uniform)
    assert trace["w"]["fn"].event_shape == (2,) and trace["v"]["fn"].batch_shape == (3,)


def test_another_truncation_with_infinite_bounds_loses_them():
    def model(truncate):
        s = numpyro.sample("s", dist.InverseGamma(2.0, 3.0))
        with numpyro.plate("n", 3):
            numpyro.sample("c", truncate(dist.Laplace(0.0, s)))
            numpyro.sample("d", truncate(dist.Cauchy(1.0, s)))

    def infinite(base):  # Cauchy: [0, inf]; Laplace: [-inf, inf]
        low = 0.0 if isinstance(base, dist.Cauchy) else -jnp.inf
        return dist.TruncatedDistribution(base, low=low, high=jnp.inf)

    def by_hand(base):
        return dist.TruncatedDistribution(base, low=0.0) if isinstance(base, dist.Cauchy) else base

    changes = repair(model).explain(infinite)
    assert [(c.site, c.cause) for c in changes] == [("c", "infinite_bound"), ("d", "infinite_bound")]
    assert changes[0].after.startswith("numpyro.Laplace(") and "low=0" in changes[1].after

    def potential(model_, s):
        values = {"s": s, "c": jnp.array([-1.0, 0.5, 3.0]), "d": jnp.array([0.1, 2.0, 40.0])}
        return numpyro.infer.util.log_density(model_, (), {}, values)[0]

    for s in (0.3, 1.0, 7.0):
        repaired = jax.jit(jax.value_and_grad(lambda s: potential(partial(repair(model), infinite), s)))(s)
        hand = jax.jit(jax.value_and_grad(lambda s: potential(partial(model, by_hand), s)))(s)
        assert np.isfinite(repaired).all() and repaired == hand


def test_a_model_that_needs_no_repair_is_left_as_it_is():
    from robusthmc.lessons.numpyro import eight_schools_noncentered

    assert repair(eight_schools_noncentered).explain() == ()
    assert str(repair(eight_schools_noncentered).explain()) == "no repair needed"
    _equal(_draws(repair(eight_schools_noncentered), num=50), _draws(eight_schools_noncentered, num=50))


def test_every_numpyro_context_sees_the_repaired_model():
    model = repair(turing)
    predictive = Predictive(model, num_samples=200)(jax.random.key(1))
    assert predictive["V"].shape == (200,) and bool(jnp.all(predictive["V"] >= 0))
    svi = SVI(model, AutoNormal(model), numpyro.optim.Adam(0.05), Trace_ELBO())
    result = svi.run(jax.random.key(2), 300, progress_bar=False)
    assert np.isfinite(result.losses).all()
    # substitute, trace and seed compose with it, as do the user's own handlers.
    trace = handlers.trace(handlers.substitute(handlers.seed(model, 3), {"s": 2.0})).get_trace()
    assert float(trace["s"]["value"]) == 2.0 and isinstance(trace["V"]["fn"], TruncatedNormal)
    conditioned = handlers.condition(model, {"V": 1.5})
    assert float(handlers.trace(handlers.seed(conditioned, 0)).get_trace()["V"]["value"]) == 1.5

    def log_density(s, v):
        values = {"s": s, "V": v}
        return numpyro.infer.util.log_density(model, (), {}, values)[0]

    gradient = jax.jit(jax.vmap(jax.grad(log_density)))(jnp.array([0.5, 2.0]), jnp.array([1.0, 3.0]))
    assert np.isfinite(gradient).all()  # numpyro's own with high=inf: NaN


def test_traced_bounds_are_repaired_exactly_too():
    def model(high):
        s = numpyro.sample("s", dist.InverseGamma(2.0, 3.0))
        numpyro.sample("V", dist.TruncatedNormal(0.0, s, low=0.0, high=high))

    def log_density(high):
        return numpyro.infer.util.log_density(
            repair(model), (high,), {}, {"s": jnp.array(1.5), "V": jnp.array(0.7)}
        )[0]

    exact = (
        dist.InverseGamma(2.0, 3.0).log_prob(1.5) + jax.scipy.stats.norm.logpdf(0.7, 0.0, 1.5) - jnp.log(0.5)
    )
    assert float(jax.jit(log_density)(jnp.inf)) == pytest.approx(float(exact), rel=1e-6)


def test_wrong_inputs_get_one_line_and_the_users_exception_comes_out_unchanged():
    with pytest.raises(TypeError, match=r"^repair\(fn=3\): expected a model.*got int\)$"):
        repair(3)

    def broken():
        numpyro.sample("x", dist.Normal(0.0, 1.0))
        raise ZeroDivisionError("the user's own bug")

    with pytest.raises(ZeroDivisionError, match="the user's own bug"):
        repair(broken).explain()
    with pytest.raises(ZeroDivisionError, match="the user's own bug"):
        _draws(repair(broken), num=5)
    assert repair(lambda: None).explain() == ()
    cauchy = repair(lambda: numpyro.sample("c", dist.TruncatedCauchy(0.0, 1.0, low=0.0, high=jnp.inf)))
    (change,) = cauchy.explain()
    assert change.after == "numpyro.TruncatedDistribution(Cauchy)(loc=0, scale=1, low=0)"
    with pytest.raises(TypeError, match=r"repair\(model\)\.explain"):
        repair().explain()
    assert isinstance(repair(turing).explain(), robusthmc.Repairs)
