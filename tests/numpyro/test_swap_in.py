"""Swap-in conformance: what breaks when a user changes the import (issue 23).

Each test is a small model of a class of numpyro's own MCMC tests that failed
with the guarded kernels swapped in.
"""

import os
import pathlib
import pickle
import subprocess
import sys
import textwrap
import warnings

import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist
import numpyro.infer
import pytest
from numpyro.infer import MCMC

import robusthmc
import robusthmc.numpyro as rnp

pytestmark = pytest.mark.timeout(300)


def test_permanent_swap_of_numpyros_names_does_not_recurse():
    # How a user swaps the kernel under code they do not own (and how a test suite does it).
    script = textwrap.dedent(
        """
        import jax, numpyro, numpyro.distributions as dist, numpyro.infer
        import robusthmc.numpyro as rnp
        numpyro.infer.NUTS, numpyro.infer.HMC = rnp.NUTS, rnp.HMC

        def model():
            numpyro.sample("x", dist.Normal(0.0, 1.0))

        for kernel in (numpyro.infer.NUTS(model), numpyro.infer.HMC(model, num_steps=3)):
            assert isinstance(kernel, (rnp.NUTS, rnp.HMC))
            mcmc = numpyro.infer.MCMC(kernel, num_warmup=10, num_samples=10, progress_bar=False)
            mcmc.run(jax.random.key(0))
            assert mcmc.get_samples()["x"].shape == (10,)
        print("ok")
        """
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=240)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip() == "ok"


def run(kernel, *args, num_warmup=20, num_samples=20, seed=0, extra_fields=(), **kwargs):
    mcmc = MCMC(kernel, num_warmup=num_warmup, num_samples=num_samples, progress_bar=False, **kwargs)
    mcmc.run(jax.random.key(seed), *args, extra_fields=extra_fields)
    return mcmc


def empty_model():
    pass


def all_deterministic():
    numpyro.deterministic("x", jnp.ones(2))


@pytest.mark.parametrize("kernel_class", [rnp.NUTS, rnp.HMC])
@pytest.mark.parametrize("model", [empty_model, all_deterministic])
def test_model_with_no_continuous_latent_runs(kernel_class, model):
    mcmc = run(kernel_class(model))
    samples = mcmc.get_samples()
    assert set(samples) <= {"x"}
    assert not mcmc.get_extra_fields()["nonfinite"].any()


def discrete_only():
    numpyro.sample("c", dist.Bernoulli(0.3))


def mixed():
    c = numpyro.sample("c", dist.Bernoulli(0.3))
    numpyro.sample("x", dist.Normal(2.0 * c, 1.0))


def test_discrete_gibbs_around_a_kernel_that_sees_no_continuous_site():
    ours, stock = (
        run(numpyro.infer.DiscreteHMCGibbs(kernel(discrete_only)), num_samples=200).get_samples()["c"]
        for kernel in (rnp.NUTS, numpyro.infer.NUTS)
    )
    np.testing.assert_array_equal(ours, stock)


@pytest.mark.parametrize(
    "wrap",
    [
        lambda kernel: numpyro.infer.DiscreteHMCGibbs(kernel(mixed)),
        lambda kernel: numpyro.infer.MixedHMC(kernel(mixed, trajectory_length=1.2), num_discrete_updates=3),
        lambda kernel: numpyro.infer.HMCGibbs(
            kernel(mixed), gibbs_fn=lambda rng_key, gibbs_sites, hmc_sites: gibbs_sites, gibbs_sites=["c"]
        ),
    ],
    ids=["DiscreteHMCGibbs", "MixedHMC", "HMCGibbs"],
)
def test_gibbs_kernels_with_ours_inside_draw_what_numpyros_draw(wrap):
    ours = run(wrap(rnp.HMC)).get_samples()
    stock = run(wrap(numpyro.infer.HMC)).get_samples()
    for site in stock:
        np.testing.assert_array_equal(ours[site], stock[site], err_msg=site)


def infinite_beyond_one(with_empty_site):
    if with_empty_site:
        numpyro.sample("empty", dist.Normal(0.0, 1.0).expand([0]))
    x = numpyro.sample("x", dist.Normal(0.0, 1.0))
    # +inf potential energy beyond x = 1, with a finite (zero) gradient of the term.
    numpyro.factor("wall", jnp.where(x > 1.0, -jnp.inf, 0.0))


@pytest.mark.parametrize("kernel_class", [rnp.NUTS, rnp.HMC])
@pytest.mark.parametrize("with_empty_site", [False, True])
def test_size_zero_latent_does_not_hide_nonfinite_transitions(kernel_class, with_empty_site):
    # Counting is what is tested: a chain that gets stuck at the wall may stay stuck.
    guard = robusthmc.Guard(on_nonfinite="ignore", max_consecutive_failures=1000)
    # A short trajectory: the wall shrinks HMC's step size, and a long one would need many steps.
    length = {"trajectory_length": 2.0} if kernel_class is rnp.HMC else {}
    mcmc = run(kernel_class(infinite_beyond_one, guard=guard, **length), with_empty_site, num_samples=100)
    # A proposal into the wall is a non-finite transition, never a divergence.
    assert int(np.sum(mcmc.last_state.guard.nonfinite_count)) > 0
    assert int(mcmc.get_extra_fields()["diverging"].sum()) == 0


def dirichlet_categorical(data):
    p = numpyro.sample("p", dist.Dirichlet(jnp.ones(3)))
    numpyro.sample("obs", dist.Categorical(p), obs=data)


@pytest.mark.parametrize("chain_method", ["sequential", "vectorized"])
def test_run_inside_jit_gives_numpyros_draws(chain_method):
    data = dist.Categorical(jnp.array([0.1, 0.6, 0.3])).sample(jax.random.key(1), (100,))

    def get_samples(kernel_class):
        @jax.jit
        def sample(rng_key, data, step_size, trajectory_length, target_accept_prob):
            # The options are traced, as in numpyro's test_chain_inside_jit: checked where concrete only.
            kernel = kernel_class(
                dirichlet_categorical,
                step_size=step_size,
                trajectory_length=trajectory_length,
                target_accept_prob=target_accept_prob,
            )
            mcmc = MCMC(
                kernel,
                num_warmup=5,
                num_samples=10,
                num_chains=2,
                chain_method=chain_method,
                progress_bar=False,
            )
            mcmc.run(rng_key, data)
            return mcmc.get_samples()

        return sample(jax.random.key(2), data, 1.0, 1.0, 0.8)

    np.testing.assert_array_equal(get_samples(rnp.HMC)["p"], get_samples(numpyro.infer.HMC)["p"])


def trap():
    """Finite only within 1e-6 of x = 0.5: every move fails, the chain is stuck."""
    x = numpyro.sample("x", dist.Normal(0.0, 1.0))
    numpyro.factor("trap", jnp.where(jnp.abs(x - 0.5) < 1e-6, 0.0, jnp.nan))


def test_inside_jit_the_verdict_is_left_in_the_state():
    def sample(rng_key):
        kernel = rnp.NUTS(trap, guard=robusthmc.Guard(on_nonfinite="raise"))
        mcmc = MCMC(kernel, num_warmup=0, num_samples=20, progress_bar=False)
        mcmc.run(rng_key, init_params={"x": jnp.array(0.5)})
        return mcmc.last_state.guard

    with pytest.raises(robusthmc.NonFiniteError, match="iteration 0"):
        sample(jax.random.key(0))
    record = jax.jit(sample)(jax.random.key(0))  # no exception can leave a trace
    assert robusthmc.Halt(int(record.halt)) is robusthmc.Halt.NONFINITE
    assert int(record.halted_at) == 0
    assert record.nonfinite_count.tolist() == [0, 1]


def wide_scale(data):
    loc = numpyro.sample("loc", dist.Normal(0.0, 5.0).expand([2]))
    scale = numpyro.sample("scale", dist.HalfNormal(2.0))
    numpyro.sample("obs", dist.Normal(loc.sum(), scale), obs=data)


def test_healthy_model_runs_under_warnings_as_errors_and_keeps_warmup_counts():
    # Adaptation's first step sizes overflow this model's scale in warmup, and only there.
    data = jnp.array([0.3, -1.2, 2.1, 0.8, 1.5])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        mcmc = run(rnp.NUTS(wide_scale), data, num_warmup=40, num_samples=40, num_chains=2)
    warmup_failures, sampling_failures = np.asarray(mcmc.last_state.guard.nonfinite_count).sum(axis=0)
    assert warmup_failures > 0
    assert sampling_failures == 0
    assert not mcmc.get_extra_fields()["nonfinite"].any()


def linear(x, y):
    w = numpyro.sample("w", dist.Normal(10.0, 1.0))
    b = numpyro.sample("b", dist.Normal(1.0, 1.0))
    sigma = numpyro.sample("sigma", dist.Gamma(1.0, 2.0))
    with numpyro.plate("size", len(y)):
        numpyro.sample("obs", dist.Normal(w * x + b, sigma), obs=y)


def test_hmc_with_fixed_num_steps_gives_numpyros_draws():
    # Its step size is trajectory_length / num_steps: until the mass matrix adapts, most warmup
    # proposals overflow (hundreds in a row), and no adapted step size can help or collapse.
    rng = np.random.default_rng(0)
    x = rng.random(10)
    y = x + rng.random(10) * 0.1
    draws = []
    for kernel_class in (numpyro.infer.HMC, rnp.HMC):
        with pytest.warns(UserWarning, match="If both"):
            kernel = kernel_class(linear, num_steps=5)
        mcmc = run(kernel, x, y, num_warmup=1000, num_samples=1000, extra_fields=("num_steps",))
        assert (mcmc.get_extra_fields()["num_steps"] == 5).all()
        draws.append(mcmc.get_samples())
    for site in draws[0]:
        np.testing.assert_array_equal(draws[1][site], draws[0][site], err_msg=site)
    warmup_failures, sampling_failures = np.asarray(mcmc.last_state.guard.nonfinite_count)
    assert warmup_failures > 100 and sampling_failures == 0


def mixed_with_cliff():
    c = numpyro.sample("c", dist.Bernoulli(0.3))
    x = numpyro.sample("x", dist.Normal(c, 1.0))
    numpyro.factor("cliff", jnp.where(x < 0.0, 0.0, jnp.nan))


@pytest.mark.parametrize(
    "wrap",
    [
        lambda kernel: numpyro.infer.DiscreteHMCGibbs(kernel),
        lambda kernel: numpyro.infer.HMCGibbs(
            kernel,
            gibbs_fn=lambda rng_key, gibbs_sites, hmc_sites: {"c": dist.Bernoulli(0.3).sample(rng_key)},
            gibbs_sites=["c"],
        ),
    ],
    ids=["DiscreteHMCGibbs", "HMCGibbs"],
)
def test_guard_inside_gibbs_kernels_still_stops_and_reports(wrap):
    # Not MixedHMC: its own accept/reject of a whole step restores the inner state it started
    # from, the guard's counts included, so a rejected step's failures are not counted there.
    inner = rnp.HMC(mixed_with_cliff, trajectory_length=1.2, guard=robusthmc.Guard(on_nonfinite="raise"))
    mcmc = MCMC(wrap(inner), num_warmup=50, num_samples=50, progress_bar=False)
    # At the end of warmup if a warmup failure was at the adapted step size, else in sampling.
    stop = r"chain 0, (warmup, iteration 49: at the end of warmup|sampling, iteration \d+: the trajectory)"
    with pytest.raises(robusthmc.NonFiniteError, match=stop) as info:
        mcmc.run(jax.random.key(0))
    assert set(info.value.samples) == {"c", "x"}


def subsampled(data):
    x = numpyro.sample("x", dist.Normal(0.0, 1.0))
    with numpyro.plate("N", data.shape[0], subsample_size=10):
        batch = numpyro.subsample(data, event_dim=0)
        numpyro.sample("obs", dist.Normal(x, 1.0), obs=batch)


def test_hmcecs_with_ours_inside_draws_what_numpyros_draws():
    data = jax.random.normal(jax.random.key(3), (100,)) + 1.0
    ours, stock = (
        run(numpyro.infer.HMCECS(kernel(subsampled), num_blocks=5), data).get_samples()["x"]
        for kernel in (rnp.NUTS, numpyro.infer.NUTS)
    )
    np.testing.assert_array_equal(ours, stock)


def test_predictive_on_our_draws():
    data = jnp.array([0.3, -1.2, 2.1, 0.8, 1.5])
    predictions = [
        numpyro.infer.Predictive(wide_scale, run(kernel(wide_scale), data).get_samples())(
            jax.random.key(1), None
        )["obs"]
        for kernel in (rnp.NUTS, numpyro.infer.NUTS)
    ]
    assert predictions[0].shape == (20,)
    np.testing.assert_array_equal(*predictions)


def test_pickled_between_warmup_and_sampling_runs_on_identically():
    data = jnp.array([0.3, -1.2, 2.1, 0.8, 1.5])
    mcmc = MCMC(rnp.NUTS(wide_scale), num_warmup=30, num_samples=30, progress_bar=False)
    mcmc.warmup(jax.random.key(4), data)
    restored = pickle.loads(pickle.dumps(mcmc))
    mcmc.run(jax.random.key(5), data)
    restored.run(jax.random.key(5), data)
    np.testing.assert_array_equal(restored.get_samples()["scale"], mcmc.get_samples()["scale"])
    np.testing.assert_array_equal(
        restored.last_state.guard.nonfinite_count, mcmc.last_state.guard.nonfinite_count
    )


def test_the_upstream_suites_plugin_swaps_both_backends(tmp_path):
    pytest.importorskip("pyro")  # a NumPyro-only install (make test-numpyro-versions) has none
    (tmp_path / "test_upstream.py").write_text(
        textwrap.dedent(
            """
            from numpyro.infer import NUTS
            from pyro.infer.mcmc import HMC
            import robusthmc.numpyro, robusthmc.pyro

            def test_swapped():
                assert NUTS is robusthmc.numpyro.NUTS and HMC is robusthmc.pyro.HMC
            """
        )
    )
    tools = pathlib.Path(__file__).resolve().parents[2] / "tools"
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "swap_kernels", "-p", "no:cacheprovider", "-q", tmp_path],
        capture_output=True,
        text=True,
        timeout=240,
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": str(tools)},
    )
    assert result.returncode == 0, result.stdout[-2000:]
