"""robusthmc.pyro.repair: exact swaps, what it says it changed, and every Pyro context."""

import pyro
import pyro.distributions as dist
import pytest
import torch
from pyro import poutine
from pyro.infer import MCMC, NUTS, SVI, Predictive, Trace_ELBO
from pyro.infer.autoguide import AutoNormal

import robusthmc.pyro as rp
from robusthmc.lessons.pyro import NaiveTruncatedNormal, turing
from robusthmc.pyro import TruncatedNormal, repair


def _draws(model, kernel=NUTS, num=100, **kwargs):
    pyro.set_rng_seed(0)
    mcmc = MCMC(kernel(model), num_samples=num, warmup_steps=num, disable_progbar=True)
    mcmc.run(**kwargs)
    return mcmc.get_samples()


def _equal(a, b):
    assert a.keys() == b.keys()
    for name in a:
        assert torch.equal(a[name], b[name]), name


@pytest.mark.timeout(300)
@pytest.mark.parametrize("kernel", [NUTS, rp.NUTS], ids=["pyro", "robusthmc"])
def test_repaired_turing_draws_what_the_hand_fixed_model_draws_bit_for_bit(kernel, dtype):
    repaired = _draws(repair(turing), kernel)
    by_hand = _draws(turing, kernel, high=None, truncated_normal=TruncatedNormal)
    _equal(repaired, by_hand)
    assert bool((repaired["V"] >= 0).all()) and bool(repaired["V"].isfinite().all())


def test_explain_names_the_site_the_bound_and_the_cause():
    state = torch.random.get_rng_state()
    (change,) = repair(turing).explain()
    assert torch.equal(torch.random.get_rng_state(), state)  # explain leaves the user's RNG alone
    assert change.site == "V" and change.cause == "infinite_bound"
    assert (
        change.before.startswith("robusthmc.lessons.pyro.NaiveTruncatedNormal(")
        and "high=inf" in change.before
    )
    assert change.after.startswith("robusthmc.pyro.TruncatedNormal(") and "high" not in change.after
    assert str(repair(turing).explain()).count("\n") == 0


def mixed(y):
    """Repairable sites (v, w, obs) beside untouched ones (s, u)."""
    s = pyro.sample("s", dist.InverseGamma(2.0, 3.0))
    u = pyro.sample("u", dist.Uniform(0.0, 1.0))
    with pyro.plate("n", 3):
        pyro.sample("v", NaiveTruncatedNormal(u, s, 0.0, float("inf")))
    pyro.sample("w", NaiveTruncatedNormal(torch.zeros(2), s, -float("inf"), 1.0).to_event(1))
    with pyro.plate("data", len(y)):
        pyro.sample("obs", NaiveTruncatedNormal(u, s, 0.0, 5.0).mask(True), obs=y)


def mixed_by_hand(y):
    s = pyro.sample("s", dist.InverseGamma(2.0, 3.0))
    u = pyro.sample("u", dist.Uniform(0.0, 1.0))
    with pyro.plate("n", 3):
        pyro.sample("v", TruncatedNormal(u, s, 0.0))
    pyro.sample("w", TruncatedNormal(torch.zeros(2), s, high=1.0).to_event(1))
    with pyro.plate("data", len(y)):
        pyro.sample("obs", TruncatedNormal(u, s, 0.0, 5.0).mask(True), obs=y)


Y = torch.tensor([0.3, 1.2, 0.1, 2.0])


@pytest.mark.timeout(300)
def test_a_model_mixing_repaired_and_untouched_sites():
    changes = {change.site: change.cause for change in repair(mixed).explain(Y)}
    assert changes == {"v": "infinite_bound", "w": "infinite_bound", "obs": "tail_overflow"}
    _equal(_draws(repair(mixed), num=40, y=Y), _draws(mixed_by_hand, num=40, y=Y))
    trace = poutine.trace(repair(mixed)).get_trace(Y)
    assert isinstance(trace.nodes["u"]["fn"], dist.Uniform)
    assert trace.nodes["w"]["fn"].event_shape == (2,) and trace.nodes["v"]["fn"].batch_shape == (3,)


def test_a_model_that_needs_no_repair_is_left_as_it_is():
    from robusthmc.lessons.pyro import eight_schools_noncentered

    assert repair(eight_schools_noncentered).explain() == ()
    _equal(_draws(repair(eight_schools_noncentered), num=30), _draws(eight_schools_noncentered, num=30))


def test_every_pyro_context_sees_the_repaired_model():
    model = repair(turing)
    pyro.set_rng_seed(1)
    predictive = Predictive(model, num_samples=200)()
    assert predictive["V"].shape == (200,) and bool((predictive["V"] >= 0).all())
    pyro.clear_param_store()
    svi = SVI(model, AutoNormal(model), pyro.optim.Adam({"lr": 0.05}), Trace_ELBO())
    losses = [svi.step() for _ in range(100)]
    assert all(torch.isfinite(torch.tensor(losses)))
    conditioned = poutine.condition(model, {"V": torch.tensor(1.5)})
    trace = poutine.trace(conditioned).get_trace()
    assert float(trace.nodes["V"]["value"]) == 1.5 and isinstance(trace.nodes["V"]["fn"], TruncatedNormal)
    s = torch.tensor(2.0, requires_grad=True)
    log_joint = (
        poutine.trace(poutine.condition(model, {"s": s, "V": torch.tensor(1.0)})).get_trace().log_prob_sum()
    )
    (gradient,) = torch.autograd.grad(log_joint, s)
    assert torch.isfinite(gradient)  # the hand-written one with high=inf: NaN


def test_wrong_inputs_get_one_line_and_the_users_exception_comes_out_unchanged():
    with pytest.raises(TypeError, match=r"^repair\(fn=3\): expected a model.*got int\)$"):
        repair(3)

    def broken():
        pyro.sample("x", dist.Normal(0.0, 1.0))
        raise ZeroDivisionError("the user's own bug")

    with pytest.raises(ZeroDivisionError, match="the user's own bug"):
        repair(broken).explain()
    with pytest.raises(ZeroDivisionError, match="the user's own bug"):
        _draws(repair(broken), num=5)
    assert repair(lambda: None).explain() == ()
