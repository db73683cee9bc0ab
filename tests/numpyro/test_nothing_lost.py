"""NumPyro: after a guarded stop the MCMC object gives the draws made before it, and summaries count failures."""

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
