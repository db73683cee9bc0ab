"""NumPyro: after a guarded stop the MCMC object gives the draws made before it, and summaries count failures."""

import os
import signal
import threading
import time
import warnings

import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist
import pytest
from numpyro.infer import MCMC, init_to_value

import robusthmc
import robusthmc.numpyro as rnp
from robusthmc import Guard
from tests.interrupts import interrupt_after

pytestmark = pytest.mark.timeout(240)


def walled(x0=-3.0):
    """Healthy for x < -1; beyond, NaN except at the single point x = 0.5."""
    x = numpyro.sample("x", dist.Normal(x0, 1.0))
    numpyro.factor("wall", jnp.where((x < -1.0) | (jnp.abs(x - 0.5) < 1e-6), 0.0, jnp.nan))


def cliff(limit=1.5):
    """Healthy near 0; the likelihood's scale sqrt(limit - x) is NaN beyond x = limit."""
    x = numpyro.sample("x", dist.Normal(0.0, 1.0))
    numpyro.sample("y", dist.Normal(0.0, jnp.sqrt(limit - x)), obs=0.3)


def stuck_vectorized_run():
    kernel = rnp.NUTS(walled, step_size=0.3, adapt_step_size=False, guard=Guard(max_consecutive_failures=10))
    mcmc = MCMC(
        kernel, num_warmup=20, num_samples=30, num_chains=2, chain_method="vectorized", progress_bar=False
    )
    with pytest.raises(robusthmc.StuckChainError) as info:
        mcmc.run(jax.random.key(0), init_params={"x": jnp.array([-3.0, 0.5])})
    return mcmc, info.value


def test_get_samples_after_a_stop_gives_the_errors_draws_never_the_frozen_position():
    mcmc, error = stuck_vectorized_run()
    grouped = mcmc.get_samples(group_by_chain=True)["x"]
    np.testing.assert_array_equal(grouped, error.samples["x"])  # NaN where the chain had stopped
    assert np.isnan(grouped[1, 1:]).all() and np.isfinite(grouped[0]).all()
    np.testing.assert_array_equal(mcmc.get_samples()["x"], np.reshape(error.samples["x"], -1))


def test_get_samples_after_a_raise_policy_stop():
    kernel = rnp.NUTS(
        cliff,
        step_size=0.5,
        adapt_step_size=False,
        guard=Guard(on_nonfinite="raise"),
        init_strategy=init_to_value(values={"x": 0.0}),
    )
    mcmc = MCMC(kernel, num_warmup=0, num_samples=5000, progress_bar=False)
    with pytest.raises(robusthmc.NonFiniteError) as info:
        mcmc.run(jax.random.key(3), 2.5)
    kept = info.value.samples["x"]
    assert kept.shape[1] < 5000
    np.testing.assert_array_equal(mcmc.get_samples(group_by_chain=True)["x"], kept)


def test_other_views_of_a_stopped_run_say_where_the_draws_are():
    mcmc, _ = stuck_vectorized_run()
    for view in (mcmc.print_summary, mcmc.get_extra_fields):
        with pytest.raises(robusthmc.RobustHMCError, match=r"stopped.*StuckChainError.*get_samples\(\)"):
            view()


def test_a_new_run_clears_the_stop():
    mcmc, _ = stuck_vectorized_run()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", robusthmc.NonFiniteWarning)  # near the wall: not this test's point
        mcmc.run(jax.random.key(1), init_params={"x": jnp.array([-3.0, -2.5])})
    assert np.isfinite(mcmc.get_samples()["x"]).all()
    assert "diverging" in mcmc.get_extra_fields()


def test_print_summary_counts_nonfinite_transitions_beside_divergences(capsys):
    mcmc = MCMC(
        rnp.NUTS(cliff, guard=Guard(on_nonfinite="ignore")),
        num_warmup=200,
        num_samples=300,
        progress_bar=False,
    )
    mcmc.run(jax.random.key(0))
    failures = int(mcmc.get_extra_fields()["nonfinite"].sum())
    assert failures > 0
    mcmc.print_summary()
    printed = capsys.readouterr().out
    assert "Number of divergences:" in printed
    assert f"Number of non-finite transitions (rejected, not divergences): {failures}\n" in printed


def test_print_summary_of_an_upstream_kernel_is_unchanged(capsys):
    mcmc = MCMC(numpyro.infer.NUTS(cliff), num_warmup=50, num_samples=50, progress_bar=False)
    mcmc.run(jax.random.key(0))
    mcmc.print_summary()
    assert "non-finite" not in capsys.readouterr().out


def long_run(progress_bar, num_chains=1, chain_method="sequential", num_samples=200_000):
    kernel = rnp.NUTS(cliff, guard=Guard(on_nonfinite="ignore"))
    mcmc = MCMC(
        kernel,
        num_warmup=100,
        num_samples=num_samples,
        num_chains=num_chains,
        chain_method=chain_method,
        progress_bar=progress_bar,
    )
    assert mcmc.progress_bar is progress_bar, "numpyro turns the bar off when CI is set: delenv it"
    return mcmc


def test_ctrl_c_with_a_progress_bar_stops_promptly_with_the_draws(monkeypatch):
    monkeypatch.delenv("CI", raising=False)  # numpyro turns the bar off under CI
    sent = []
    original = rnp.NUTS.get_diagnostics_str

    def press_ctrl_c_a_second_into_sampling(self, state):
        if int(state.i) == 1100 and not sent:  # 100 warmup + 1000 sampling transitions
            timer = threading.Timer(
                1.0, lambda: sent.append(time.perf_counter()) or os.kill(os.getpid(), signal.SIGINT)
            )
            timer.start()
        return original(self, state)

    monkeypatch.setattr(rnp.NUTS, "get_diagnostics_str", press_ctrl_c_a_second_into_sampling)
    mcmc = long_run(True)
    with pytest.raises(robusthmc.SamplingInterrupted, match="so far") as info:
        mcmc.run(jax.random.key(0), 3.0)
    assert time.perf_counter() - sent[0] < 2.0
    monkeypatch.undo()
    error = info.value
    assert isinstance(error, KeyboardInterrupt)
    kept = error.samples["x"]
    assert kept.shape[0] == 1 and 1000 < kept.shape[1] < 200_000 and np.isfinite(kept).all()
    assert set(error.nonfinite) == {0}
    full = long_run(False, num_samples=kept.shape[1])
    full.run(jax.random.key(0), 3.0)
    np.testing.assert_array_equal(kept[0], full.get_samples()["x"])  # an uninterrupted run's first draws


def test_ctrl_c_in_the_second_of_sequential_chains_keeps_both_chains_draws(monkeypatch):
    monkeypatch.delenv("CI", raising=False)  # numpyro turns the bar off under CI
    calls = []
    original = rnp.NUTS.get_diagnostics_str

    def press_ctrl_c_in_chain_1_iteration_149(self, state):
        calls.append(1)
        if len(calls) == 400 + 150:  # chain 0: 100 warmup + 300 sampling transitions
            os.kill(os.getpid(), signal.SIGINT)
        return original(self, state)

    monkeypatch.setattr(rnp.NUTS, "get_diagnostics_str", press_ctrl_c_in_chain_1_iteration_149)
    mcmc = long_run(True, num_chains=2, num_samples=300)
    with pytest.raises(robusthmc.SamplingInterrupted) as info:
        mcmc.run(jax.random.key(0), 3.0)
    monkeypatch.undo()
    kept = info.value.samples["x"]
    assert kept.shape == (2, 300)
    assert np.isfinite(kept[0]).all() and np.isfinite(kept[1, :50]).all() and np.isnan(kept[1, 50:]).all()
    assert set(info.value.nonfinite) == {0, 1}
    # A notebook user who pressed Ctrl-C goes on from the MCMC: the same draws, grouped or flat.
    np.testing.assert_array_equal(mcmc.get_samples(group_by_chain=True)["x"], kept)
    np.testing.assert_array_equal(mcmc.get_samples()["x"], kept.reshape(-1))
    full = long_run(False, num_chains=2, num_samples=300)
    full.run(jax.random.key(0), 3.0)
    reference = full.get_samples(group_by_chain=True)["x"]
    np.testing.assert_array_equal(kept[0], reference[0])
    np.testing.assert_array_equal(kept[1, :50], reference[1, :50])


def test_ctrl_c_during_a_compiled_run_keeps_every_draw_when_it_returns():
    mcmc = long_run(False, num_samples=20_000)
    with interrupt_after(1.0):
        with pytest.raises(robusthmc.SamplingInterrupted) as info:
            mcmc.run(jax.random.key(0), 3.0)
    assert info.value.samples["x"].shape == (1, 20_000)
    assert np.isfinite(info.value.samples["x"]).all()
    np.testing.assert_array_equal(mcmc.get_samples()["x"], info.value.samples["x"][0])


def nan_far_out(x_max=50.0):
    """A standard normal whose log density is NaN only where |x| > x_max: far from any draw."""
    x = numpyro.sample("x", dist.Normal(0.0, 1.0))
    numpyro.factor("far", jnp.where(jnp.abs(x) > x_max, jnp.nan, 0.0))


def test_raise_ignores_the_failures_adaptations_probes_provoke():
    provoked = 0
    for seed in range(4):
        mcmc = MCMC(
            rnp.NUTS(nan_far_out, guard=Guard(on_nonfinite="raise")),
            num_warmup=500,
            num_samples=500,
            progress_bar=False,
        )
        mcmc.run(jax.random.key(seed))  # numpyro's dual averaging probes 10x the step size at each restart
        warmup, sampling = np.asarray(mcmc.last_state.guard.nonfinite_count)
        provoked += warmup
        assert sampling == 0
    assert provoked > 0  # they happened, and were counted


def test_raise_still_stops_for_a_nan_region_near_the_mode():
    kernel = rnp.NUTS(cliff, guard=Guard(on_nonfinite="raise"))
    with pytest.raises(robusthmc.NonFiniteError, match=r"site 'y'") as info:
        MCMC(kernel, num_warmup=500, num_samples=500, progress_bar=False).run(jax.random.key(0))
    diagnosis = info.value.diagnosis
    assert float(diagnosis.position["x"]) > 1.5
    if diagnosis.phase == "warmup":
        assert "at the end of warmup" in str(info.value)
