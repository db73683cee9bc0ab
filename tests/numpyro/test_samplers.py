"""The guarded kernels honour numpyro's whole MCMCKernel contract (issue 2, point 2)."""

import inspect
import pickle

import arviz
import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist
import numpyro.infer
import pytest
from numpyro.infer import MCMC, init_to_median

import robusthmc
import robusthmc.numpyro as rnp
from robusthmc.lessons.numpyro import eight_schools_centered, eight_schools_noncentered

pytestmark = pytest.mark.timeout(300)


def both(run, **kernel_kwargs):
    """Run the same recipe with numpyro's NUTS and the guarded one."""
    return run(numpyro.infer.NUTS(eight_schools_noncentered, **kernel_kwargs)), run(
        rnp.NUTS(eight_schools_noncentered, **kernel_kwargs)
    )


def assert_same(stock, guarded):
    for site, draws in stock.items():
        np.testing.assert_array_equal(draws, guarded[site], err_msg=site)


def test_signature_is_numpyros_plus_guard():
    for ours, theirs in ((rnp.NUTS, numpyro.infer.NUTS), (rnp.HMC, numpyro.infer.HMC)):
        ours_params = inspect.signature(ours).parameters
        theirs_params = inspect.signature(theirs).parameters
        assert list(ours_params) == [*theirs_params, "guard"]
        for name, parameter in theirs_params.items():
            assert ours_params[name].default is parameter.default
        assert issubclass(ours, theirs)


def test_hmc_keeps_numpyros_argument_checks():
    with pytest.raises(ValueError, match="num_steps"):
        rnp.HMC(eight_schools_centered, trajectory_length=None)
    with pytest.raises(ValueError, match="Only one of `model` or `potential_fn`"):
        rnp.NUTS()


@pytest.mark.parametrize("bad", ["raise", {"on_nonfinite": "raise"}, 3])
def test_guard_must_be_a_guard(bad):
    with pytest.raises(robusthmc.GuardOptionError, match="expected a robusthmc.Guard"):
        rnp.NUTS(eight_schools_centered, guard=bad)


@pytest.mark.parametrize("progress_bar", [True, False])
@pytest.mark.parametrize("chain_method", ["sequential", "parallel"])
def test_progress_bar_on_and_off(progress_bar, chain_method, monkeypatch):
    monkeypatch.delenv("CI", raising=False)  # numpyro turns the bar off under CI

    def run(kernel):
        mcmc = MCMC(
            kernel,
            num_warmup=50,
            num_samples=50,
            num_chains=2,
            chain_method=chain_method,
            progress_bar=progress_bar,
        )
        assert mcmc.progress_bar is progress_bar
        mcmc.run(jax.random.key(1))
        return mcmc.get_samples()

    assert_same(*both(run))


def test_extra_fields_and_removed_sites():
    def run(kernel):
        mcmc = MCMC(kernel, num_warmup=50, num_samples=50, progress_bar=False)
        mcmc.run(jax.random.key(2), extra_fields=("adapt_state.step_size", "potential_energy", "~z.theta"))
        return mcmc

    stock, guarded = both(run)
    assert "theta" not in guarded.get_samples()
    assert set(guarded.get_extra_fields()) == {
        "diverging",
        "nonfinite",
        "adapt_state.step_size",
        "potential_energy",
    }
    assert_same(stock.get_extra_fields(), {k: v for k, v in guarded.get_extra_fields().items()})


def test_init_strategy_and_init_params():
    init_params = {"mu": jnp.array(1.0), "tau": jnp.array(0.5), "theta_trans": jnp.zeros(8)}

    def run(kernel):
        mcmc = MCMC(kernel, num_warmup=50, num_samples=50, progress_bar=False)
        mcmc.run(jax.random.key(3), init_params=init_params)
        return mcmc.get_samples()

    assert_same(*both(run, init_strategy=init_to_median))


def test_jit_model_args_with_new_data():
    def run(kernel):
        mcmc = MCMC(kernel, num_warmup=50, num_samples=50, progress_bar=False, jit_model_args=True)
        first = mcmc.run(jax.random.key(4), y=np.arange(8.0)) or mcmc.get_samples()
        mcmc.run(jax.random.key(4), y=np.arange(8.0) * 2)
        return first | {f"second_{k}": v for k, v in mcmc.get_samples().items()}

    stock, guarded = both(run)
    assert_same(stock, guarded)


def test_potential_fn_kernels():
    def potential(z):
        return 0.5 * jnp.sum((z["a"] - 1.0) ** 2) + 0.5 * z["b"] ** 2

    init = {"a": jnp.zeros(3), "b": jnp.array(0.0)}
    results = []
    for kernel in (numpyro.infer.NUTS(potential_fn=potential), rnp.NUTS(potential_fn=potential)):
        mcmc = MCMC(kernel, num_warmup=50, num_samples=100, progress_bar=False)
        mcmc.run(jax.random.key(5), init_params=init)
        results.append(mcmc.get_samples())
    assert_same(*results)
    assert results[1]["a"].shape == (100, 3)


def test_run_twice_and_warmup_then_run():
    def run(kernel):
        mcmc = MCMC(kernel, num_warmup=50, num_samples=50, progress_bar=False)
        mcmc.run(jax.random.key(6))
        first = mcmc.get_samples()
        mcmc.run(jax.random.key(7))
        second = mcmc.get_samples()
        mcmc.warmup(jax.random.key(8))
        mcmc.run(jax.random.key(9))
        third = mcmc.get_samples()
        mcmc.post_warmup_state = mcmc.last_state
        mcmc.run(mcmc.post_warmup_state.rng_key)
        fourth = mcmc.get_samples()
        return {f"{n}_{k}": v for n, d in enumerate((first, second, third, fourth)) for k, v in d.items()}

    assert_same(*both(run))


def test_pickled_mcmc_runs_again_identically():
    mcmc = MCMC(rnp.NUTS(eight_schools_noncentered), num_warmup=50, num_samples=50, progress_bar=False)
    mcmc.run(jax.random.key(10))
    restored = pickle.loads(pickle.dumps(mcmc))
    assert restored.sampler.guard == mcmc.sampler.guard
    np.testing.assert_array_equal(restored.get_samples()["mu"], mcmc.get_samples()["mu"])
    restored.run(jax.random.key(10))
    np.testing.assert_array_equal(restored.get_samples()["mu"], mcmc.get_samples()["mu"])


def test_nonfinite_reaches_arviz_sample_stats():
    mcmc = MCMC(
        rnp.NUTS(eight_schools_centered),
        num_warmup=100,
        num_samples=100,
        num_chains=2,
        chain_method="vectorized",
        progress_bar=False,
    )
    mcmc.run(jax.random.key(11))
    idata = arviz.from_numpyro(mcmc)
    assert idata.sample_stats["nonfinite"].shape == (2, 100)
    assert idata.sample_stats["nonfinite"].dtype == bool
    assert int(idata.sample_stats["diverging"].sum()) > 0  # eight schools centred diverges...
    assert int(idata.sample_stats["nonfinite"].sum()) == 0  # ...geometrically, not numerically


def test_diagnostics_string_counts_failures():
    def cliff():
        x = numpyro.sample("x", dist.Normal(0.0, 1.0))
        numpyro.sample("y", dist.Normal(0.0, jnp.sqrt(1.5 - x)), obs=0.3)

    kernel = rnp.NUTS(cliff, guard=robusthmc.Guard(on_nonfinite="ignore"))
    mcmc = MCMC(kernel, num_warmup=100, num_samples=100, progress_bar=False)
    mcmc.run(jax.random.key(0))
    failures = int(np.sum(mcmc.last_state.guard.nonfinite_count))
    assert failures > 0
    assert kernel.get_diagnostics_str(mcmc.last_state).endswith(f"{failures} non-finite")
