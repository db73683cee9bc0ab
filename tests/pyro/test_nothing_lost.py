"""Pyro: a user's own exception is never swallowed, and set-up's numerical exceptions are guarded."""

import functools
import multiprocessing
import re
import time
import warnings

import numpy as np
import pyro
import pyro.distributions as dist
import pytest
import torch
from pyro.infer import MCMC

import robusthmc
import robusthmc.pyro as rp
from robusthmc import Guard
from tests.interrupts import interrupt_after

POLICIES = ["warn", "raise", "ignore"]


def run(kernel, *args, warmup=30, samples=30, seed=0, initial_params=None, **kwargs):
    pyro.set_rng_seed(seed)
    mcmc = MCMC(
        kernel, num_samples=samples, warmup_steps=warmup, initial_params=initial_params, disable_progbar=True
    )
    mcmc.run(*args, **kwargs)
    return mcmc


def in_a_trajectory(x):
    """Whether the model runs inside the potential (set-up's traces draw values without gradients)."""
    return x.requires_grad


def mean_of_kept(data):
    """A user's bug: the mean of the data near x, empty once x is more than 1 from every datum."""
    x = pyro.sample("x", dist.Normal(0.0, 1.0))
    batch = [value for value in data if abs(value - float(x.detach())) < 1.0]
    pyro.factor("fit", -((sum(batch) / len(batch) - x) ** 2))


@pytest.mark.timeout(120)
@pytest.mark.parametrize("policy", POLICIES)
@pytest.mark.parametrize("error", [ZeroDivisionError, OverflowError])
def test_a_python_arithmetic_error_from_user_code_surfaces_unchanged(policy, error):
    def model():
        x = pyro.sample("x", dist.Normal(0.0, 1.0))
        if in_a_trajectory(x) and x.detach() > 1.0:
            raise error("in the user's own code")

    with pytest.raises(error, match="in the user's own code") as info:
        run(
            rp.NUTS(model, guard=Guard(on_nonfinite=policy)),
            warmup=100,
            samples=100,
            initial_params={"x": torch.tensor(0.0)},
        )
    assert not isinstance(info.value, robusthmc.RobustHMCError)


@pytest.mark.timeout(120)
@pytest.mark.parametrize("policy", POLICIES)
def test_mean_of_an_empty_batch_surfaces_in_every_policy(policy):
    with pytest.raises(ZeroDivisionError):
        run(
            rp.NUTS(mean_of_kept, guard=Guard(on_nonfinite=policy)),
            [-0.5, 0.0, 0.5],
            warmup=50,
            samples=50,
            initial_params={"x": torch.tensor(0.0)},
        )


def test_a_user_error_at_the_initial_point_surfaces_unchanged():
    with pytest.raises(ZeroDivisionError):
        run(rp.NUTS(mean_of_kept), [100.0], warmup=5, samples=5)


#: 50 pairs of correlation 0.3: the posterior of rho stays well inside (-1, 1).
PAIRS = torch.randn(50, 2, generator=torch.Generator().manual_seed(0)) @ torch.tensor(
    [[1.0, 0.3], [0.0, 0.95]]
)


def correlated(pairs):
    """Pairs with correlation rho; the Cholesky fails where |rho| >= 1, which set-up draws often."""
    rho = pyro.sample("rho", dist.Uniform(-1.5, 1.5))
    one = torch.ones(())
    matrix = torch.stack([torch.stack([one, rho]), torch.stack([rho, one])])
    scale_tril = torch.linalg.cholesky(matrix)
    with pyro.plate("pairs", len(pairs)):
        pyro.sample("y", dist.MultivariateNormal(torch.zeros(2), scale_tril=scale_tril), obs=pairs)


@functools.cache
def seeds_on_which_stock_pyro_dies_in_set_up():
    dying = []
    for seed in range(8):
        try:
            run(pyro.infer.NUTS(correlated), PAIRS, warmup=0, samples=1, seed=seed)
        except torch.linalg.LinAlgError:
            dying.append(seed)
    assert len(dying) >= 2
    return dying


@pytest.mark.timeout(300)
@pytest.mark.parametrize(
    "options",
    [{}, {"step_size": 0.1, "num_steps": 5, "adapt_step_size": False}],
    ids=["NUTS", "HMC"],
)
def test_numerical_exceptions_in_set_up_are_rejected_points(options):
    kernel_class = rp.HMC if options else rp.NUTS
    for seed in seeds_on_which_stock_pyro_dies_in_set_up():
        # Sampling's own rejections at the edge of the prior are not what this test is about.
        kernel = kernel_class(correlated, guard=Guard(on_nonfinite="ignore"), **options)
        mcmc = run(kernel, PAIRS, warmup=10, samples=10, seed=seed)
        assert mcmc.get_samples()["rho"].abs().max() < 1


@pytest.mark.timeout(60)
def test_set_up_that_always_raises_names_the_site_and_the_exception():
    def always(width=1.5):
        rho = pyro.sample("rho", dist.Uniform(1.0 + 0 * width, 2.0))
        torch.linalg.cholesky(
            torch.stack([torch.stack([torch.ones(()), rho]), torch.stack([rho, torch.ones(())])])
        )

    with pytest.raises(robusthmc.InitializationError, match=r"(?s)7 attempts.*LinAlgError.*rho") as info:
        run(rp.NUTS(always, guard=Guard(max_init_attempts=7)), warmup=5, samples=5)
    assert isinstance(info.value.__cause__, torch.linalg.LinAlgError)
    assert info.value.attempts == 7


def walled(at=2.0):
    """A standard normal whose log density raises beyond x = at (a Cholesky failure, say)."""
    x = pyro.sample("x", dist.Normal(0.0, 1.0))
    if x.detach() > at:
        raise torch.linalg.LinAlgError("linalg.cholesky: The factorization could not be completed")


@pytest.mark.timeout(120)
def test_summary_counts_nonfinite_transitions_beside_divergences(capsys):
    mcmc = run(
        rp.NUTS(walled, guard=Guard(on_nonfinite="ignore")),
        warmup=100,
        samples=200,
        initial_params={"x": torch.tensor(0.0)},
    )
    failures = len(mcmc.diagnostics()["nonfinite"]["chain 0"])
    assert failures > 0
    mcmc.summary()
    printed = capsys.readouterr().out
    assert "Number of divergences:" in printed
    assert f"Number of non-finite transitions (rejected, not divergences): {failures}\n" in printed


def test_summary_of_an_upstream_kernel_is_unchanged(capsys):
    stock = run(pyro.infer.NUTS(walled), 50.0, warmup=20, samples=20, initial_params={"x": torch.tensor(0.0)})
    stock.summary()
    assert "non-finite" not in capsys.readouterr().out


@pytest.fixture
def worker_processes(monkeypatch):
    """Pyro draws chains in worker processes only with more than num_chains + 1 CPUs: pretend so."""
    monkeypatch.setattr(pyro.infer.mcmc.api.mp, "cpu_count", lambda: 8)


def two_chains_in_workers(kernel, **options):
    pyro.set_rng_seed(0)
    mcmc = MCMC(kernel, num_chains=2, disable_progbar=True, mp_context="spawn", **options)
    assert hasattr(mcmc.sampler, "workers"), "Pyro did not spawn worker processes"
    return mcmc


def fails_in_chain_one():
    """Raises in the worker of chain 1 only: Pyro seeds the worker of chain k with seed + k (0 here)."""
    x = pyro.sample("x", dist.Normal(0.0, 1.0))
    if torch.initial_seed() == 1:
        raise torch.linalg.LinAlgError(f"linalg.cholesky: failed at x = {float(x):.3f}")


@pytest.mark.timeout(180)
def test_an_error_in_a_worker_names_its_chain(worker_processes):
    kernel = rp.NUTS(fails_in_chain_one, guard=Guard(max_init_attempts=3))
    mcmc = two_chains_in_workers(kernel, num_samples=10, warmup_steps=10)
    with pytest.raises(
        robusthmc.InitializationError, match=r"(?s)3 attempts.*chain 1, initialization"
    ) as info:
        mcmc.run()
    assert info.value.diagnosis.chain == 1


@pytest.mark.timeout(180)
def test_warnings_from_workers_reach_the_parent_as_one_warning(worker_processes):
    # Beyond x = 1 the log density raises: each chain meets it again and again while sampling.
    mcmc = two_chains_in_workers(rp.NUTS(walled), num_samples=100, warmup_steps=50)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        mcmc.run(1.0)
    ours = [w for w in caught if issubclass(w.category, robusthmc.RobustHMCWarning)]
    assert len(ours) == 1, [str(w.message)[:200] for w in ours]
    message = str(ours[0].message)
    counts = {chain: len(draws) for chain, draws in mcmc.diagnostics()["nonfinite"].items()}
    assert counts["chain 0"] > 1 and counts["chain 1"] > 1
    for chain in (0, 1):
        assert re.search(
            rf"chain {chain}: \d+ of 50 warmup, {counts[f'chain {chain}']} of 100 sampling", message
        )


@pytest.mark.timeout(120)
def test_ctrl_c_keeps_the_draws_made_so_far():
    # Far more draws than 4 s can make, on any machine: the Ctrl-C comes first.
    model, options = rp.NUTS(walled, guard=Guard(on_nonfinite="ignore")), {"warmup": 50, "samples": 1_000_000}
    with interrupt_after(4.0) as sent, pytest.raises(robusthmc.SamplingInterrupted, match="so far") as info:
        run(model, 1.5, initial_params={"x": torch.tensor(0.0)}, **options)
    assert time.perf_counter() - sent[0] < 2.0
    error = info.value
    assert isinstance(error, KeyboardInterrupt)
    kept = error.samples["x"]
    assert kept.shape[0] == 1 and 0 < kept.shape[1] < 1_000_000
    assert set(error.nonfinite) == {0} and error.nonfinite[0][0] > 0
    # Bit-identical to an uninterrupted run's first draws.
    full = run(
        rp.NUTS(walled, guard=Guard(on_nonfinite="ignore")),
        1.5,
        initial_params={"x": torch.tensor(0.0)},
        warmup=50,
        samples=kept.shape[1],
    )
    np.testing.assert_array_equal(kept[0], full.get_samples()["x"].numpy())


@pytest.mark.timeout(180)
def test_ctrl_c_with_chains_in_workers_keeps_their_draws_and_leaves_nothing_running(worker_processes):
    mcmc = two_chains_in_workers(
        rp.NUTS(walled, guard=Guard(on_nonfinite="ignore")), num_samples=1_000_000, warmup_steps=20
    )
    with interrupt_after(20.0) as sent, pytest.raises(robusthmc.SamplingInterrupted) as info:
        mcmc.run(50.0)
    assert time.perf_counter() - sent[0] < 2.0
    kept = info.value.samples["x"]
    assert kept.shape[0] == 2 and kept.shape[1] > 0
    assert np.isfinite(kept[:, 0]).all()
    deadline = time.perf_counter() + 10
    while multiprocessing.active_children() and time.perf_counter() < deadline:
        time.sleep(0.1)
    assert not multiprocessing.active_children()


def nan_far_out(x_max=50.0):
    """A standard normal whose log density is NaN only where |x| > x_max: far from any draw."""
    x = pyro.sample("x", dist.Normal(0.0, 1.0))
    pyro.factor("far", torch.where(x.abs() > x_max, torch.tensor(float("nan")), torch.tensor(0.0)))


@pytest.mark.timeout(300)
def test_raise_ignores_the_failures_adaptations_probes_provoke():
    provoked = 0
    for seed in range(4):
        kernel = rp.NUTS(nan_far_out, guard=Guard(on_nonfinite="raise"))
        run(kernel, warmup=300, samples=100, seed=seed)
        warmup, sampling = kernel.nonfinite_by_chain[0]
        provoked += warmup
        assert sampling == 0
    assert provoked > 0  # they happened, and were counted


@pytest.mark.timeout(300)
def test_raise_still_stops_for_a_nan_region_near_the_mode():
    kernel = rp.NUTS(walled, guard=Guard(on_nonfinite="raise"))
    with pytest.raises(robusthmc.NonFiniteError, match="LinAlgError") as info:
        run(kernel, 1.5, warmup=300, samples=300, initial_params={"x": torch.tensor(0.0)})
    assert float(info.value.diagnosis.position["x"]) > 1.5


def spike(limit=1.5):
    """The log density is +inf beyond x = limit (a potential of -inf)."""
    x = pyro.sample("x", dist.Normal(0.0, 1.0))
    pyro.factor("spike", torch.where(x > limit, torch.tensor(float("inf")), torch.tensor(0.0)))


@pytest.mark.timeout(120)
def test_an_infinite_log_density_is_a_rejected_proposal_not_a_crash():
    # Pyro's NUTS takes a -inf potential as infinitely likely: its draws go past the spike, or
    # the NaN probability it then computes fails ("Expected p_in >= 0 && p_in <= 1").
    options = {"warmup": 100, "samples": 100, "initial_params": {"x": torch.tensor(0.0)}}
    with pytest.raises(RuntimeError, match="p_in"):
        run(pyro.infer.NUTS(spike), seed=2, **options)
    assert run(pyro.infer.NUTS(spike), seed=1, **options).get_samples()["x"].max() > 1.5
    for seed in (1, 2):
        mcmc = run(rp.NUTS(spike, guard=Guard(on_nonfinite="ignore")), seed=seed, **options)
        assert mcmc.get_samples()["x"].max() <= 1.5
        assert sum(mcmc.kernel.nonfinite_by_chain[0]) > 0


def cliff(limit=1.5):
    """NaN beyond x = limit."""
    x = pyro.sample("x", dist.Normal(0.0, 1.0))
    if bool(x.detach() > limit):
        pyro.factor("cliff", torch.tensor(float("nan")))


def _same_draws(mcmc, stop):
    grouped = mcmc.get_samples(group_by_chain=True)
    assert grouped.keys() == stop.samples.keys()
    for name, draws in stop.samples.items():
        np.testing.assert_array_equal(grouped[name].numpy(), np.asarray(draws))
        np.testing.assert_array_equal(
            mcmc.get_samples()[name].numpy(), np.asarray(draws).reshape(-1, *np.shape(draws)[2:])
        )


@pytest.mark.timeout(120)
def test_after_a_stop_get_samples_gives_the_draws_the_error_carries():
    mcmc = MCMC(
        rp.NUTS(cliff, guard=Guard(on_nonfinite="raise")),
        num_samples=2000,
        warmup_steps=0,
        initial_params={"x": torch.tensor(0.0)},
        disable_progbar=True,
    )
    pyro.set_rng_seed(0)
    with pytest.raises(robusthmc.NonFiniteError) as info:
        mcmc.run()
    assert info.value.samples["x"].shape[1] == info.value.diagnosis.iteration
    _same_draws(mcmc, info.value)


@pytest.mark.timeout(120)
def test_after_ctrl_c_get_samples_gives_the_draws_made_so_far():
    mcmc = MCMC(
        rp.NUTS(walled, guard=Guard(on_nonfinite="ignore")),
        num_samples=1_000_000,  # far more than 4 s can draw, on any machine: the Ctrl-C comes first
        warmup_steps=20,
        initial_params={"x": torch.tensor(0.0)},
        disable_progbar=True,
    )
    pyro.set_rng_seed(0)
    with interrupt_after(4.0), pytest.raises(robusthmc.SamplingInterrupted) as info:
        mcmc.run(1.5)
    assert 0 < info.value.samples["x"].shape[1] < 1_000_000
    _same_draws(mcmc, info.value)
