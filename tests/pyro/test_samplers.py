"""Guarded Pyro kernels: identical draws on healthy models, the Pyro MCMC contract, and every failure."""

import multiprocessing
import pickle
import time
import warnings

import arviz
import pyro
import pyro.distributions as dist
import pytest
import torch
from pyro.infer import MCMC
from pyro.infer.autoguide.initialization import init_to_mean

import robusthmc
import robusthmc.pyro as rp
from robusthmc import Guard
from robusthmc.lessons.data import logistic_data
from robusthmc.lessons.pyro import (
    eight_schools_centered,
    eight_schools_noncentered,
    logistic_regression,
    turing,
)

LOGISTIC = logistic_data(num_rows=200, num_features=3, seed=3)
HEALTHY = {
    "eight_schools_centered": (eight_schools_centered, (), {}),
    "eight_schools_noncentered": (eight_schools_noncentered, (), {}),
    "logistic_regression": (logistic_regression, (LOGISTIC.X, LOGISTIC.y), {}),
    "turing_high_none": (turing, (), {"high": None, "truncated_normal": rp.TruncatedNormal}),
}


def run(kernel, *args, warmup=30, samples=30, seed=0, initial_params=None, **kwargs):
    pyro.set_rng_seed(seed)
    mcmc = MCMC(
        kernel, num_samples=samples, warmup_steps=warmup, initial_params=initial_params, disable_progbar=True
    )
    mcmc.run(*args, **kwargs)
    return mcmc


@pytest.mark.timeout(120)
@pytest.mark.parametrize("name", sorted(HEALTHY))
def test_nuts_draws_are_identical_to_pyros(name):
    model, args, kwargs = HEALTHY[name]
    stock = run(pyro.infer.NUTS(model), *args, **kwargs)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # warmup's overflows (Turing: 2 of 30) are counted, not warned
        guarded = run(rp.NUTS(model), *args, **kwargs)
    for site, draws in stock.get_samples().items():
        torch.testing.assert_close(guarded.get_samples()[site], draws, rtol=0, atol=0, msg=site)
    assert stock.diagnostics()["divergences"] == guarded.diagnostics()["divergences"]
    assert guarded.diagnostics()["nonfinite"] == {"chain 0": []}


def test_hmc_draws_are_identical_and_options_pass_through():
    model, args, kwargs = HEALTHY["eight_schools_noncentered"]
    seen = []
    options = {"num_steps": 7, "jit_compile": True, "ignore_jit_warnings": True}
    stock = run(pyro.infer.HMC(model, **options), *args, **kwargs)
    kernel = rp.HMC(model, **options)
    pyro.set_rng_seed(0)
    guarded = MCMC(kernel, 30, warmup_steps=30, disable_progbar=True, hook_fn=lambda *a: seen.append(a[3]))
    guarded.run()
    torch.testing.assert_close(guarded.get_samples()["mu"], stock.get_samples()["mu"], rtol=0, atol=0)
    assert len(seen) == 60


def test_potential_fn_and_initial_params():
    def potential(z):
        return 0.5 * (z["x"] ** 2).sum()

    initial = {"x": torch.tensor([0.5, -0.5])}
    stock = run(pyro.infer.NUTS(potential_fn=potential), initial_params=initial)
    guarded = run(rp.NUTS(potential_fn=potential), initial_params=initial)
    torch.testing.assert_close(guarded.get_samples()["x"], stock.get_samples()["x"], rtol=0, atol=0)


def test_signature_is_pyros_plus_guard():
    import inspect

    for ours, theirs in ((rp.NUTS, pyro.infer.NUTS), (rp.HMC, pyro.infer.HMC)):
        names = list(inspect.signature(ours.__init__).parameters)
        assert names == [*inspect.signature(theirs.__init__).parameters, "guard"]
    with pytest.raises(robusthmc.GuardOptionError, match="expected a robusthmc.Guard"):
        rp.NUTS(turing, guard="raise")


def test_kernel_pickles():
    kernel = rp.NUTS(eight_schools_noncentered, guard=Guard(max_consecutive_failures=7))
    copy = pickle.loads(pickle.dumps(kernel))
    assert copy.guard == kernel.guard


# --- initialisation -----------------------------------------------------------------------------


@pytest.mark.parametrize("kernel_class", [rp.NUTS, rp.HMC])
def test_turing_with_infinite_bound_names_site_latent_bound_and_fix(kernel_class):
    with pytest.raises(
        robusthmc.InitializationError, match=r"(?s)site 'V'.*latent s.*high=inf.*high=None"
    ) as info:
        run(kernel_class(turing), warmup=5, samples=5)
    error = info.value
    assert error.attempts == 100
    assert {"V", "s"} <= {p.site for p in error.diagnosis.sites} | {"s"}
    assert error.values_tried[0].keys() == {"s", "V"}
    assert isinstance(error.__cause__, ValueError)  # Pyro's own, chained


def test_stock_pyro_gives_the_generic_error():
    with pytest.raises(ValueError, match="cannot find valid initial params"):
        run(pyro.infer.NUTS(turing), warmup=5, samples=5)


def test_number_of_init_attempts_is_a_guard_setting():
    with pytest.raises(robusthmc.InitializationError, match=r"7 attempts \(Guard.max_init_attempts=7\)"):
        run(rp.NUTS(turing, guard=Guard(max_init_attempts=7)), warmup=5, samples=5)


# --- numerical exceptions during a trajectory ----------------------------------------------------


def walled(kind=torch.linalg.LinAlgError, at=2.0):
    """A standard normal whose log density raises beyond x = at (a Cholesky failure, say)."""
    x = pyro.sample("x", dist.Normal(0.0, 1.0))
    if x.detach() > at:
        raise kind("linalg.cholesky: The factorization could not be completed")
    pyro.factor("wall", torch.zeros(()))


def test_stock_pyro_loses_the_run_to_a_numerical_exception():
    with pytest.raises(torch.linalg.LinAlgError):
        run(pyro.infer.NUTS(walled), warmup=50, samples=50)


def test_numerical_exception_is_a_rejected_proposal_counted_apart_from_divergences():
    with pytest.warns(robusthmc.NonFiniteWarning, match=r"(?s)rejected.*LinAlgError"):
        mcmc = run(rp.NUTS(walled), warmup=100, samples=200)
    draws = mcmc.get_samples()["x"]
    assert draws.max() <= 2.0 and len(draws) == 200
    nonfinite = mcmc.diagnostics()["nonfinite"]["chain 0"]
    assert len(nonfinite) > 0
    assert not set(nonfinite) & set(mcmc.diagnostics()["divergences"]["chain 0"])
    sample_stats = arviz.from_pyro(mcmc, log_likelihood=False).sample_stats
    assert int(sample_stats["nonfinite"].sum()) == len(nonfinite)


def test_raise_policy_chains_the_original_exception_and_keeps_draws():
    kernel = rp.NUTS(walled, guard=Guard(on_nonfinite="raise"))
    with pytest.raises(
        robusthmc.NonFiniteError, match=r"(?s)chain 0, (warmup|sampling), iteration \d+.*LinAlgError"
    ) as info:
        run(kernel, warmup=0, samples=500, initial_params={"x": torch.tensor(0.0)})
    error = info.value
    assert isinstance(error.__cause__, torch.linalg.LinAlgError)
    assert error.diagnosis.exception.startswith("LinAlgError")
    assert error.samples["x"].shape[1] == error.diagnosis.iteration  # every draw before it


def test_programming_errors_propagate_at_once():
    with pytest.raises(TypeError, match="cholesky"):
        run(rp.NUTS(walled), warmup=50, samples=50, kind=TypeError)


def test_numerical_exceptions_are_a_guard_setting():
    guard = Guard(numerical_exceptions=(KeyError,))
    with pytest.raises(torch.linalg.LinAlgError):
        run(rp.NUTS(walled, guard=guard), warmup=50, samples=50)


def island():
    """A posterior of width 0.001 inside an island of radius 0.01 where the log density exists."""
    x = pyro.sample("x", dist.Normal(50.0, 0.001))
    if abs(float(x.detach()) - 50.0) > 0.01:
        raise torch.linalg.LinAlgError("linalg.cholesky: The factorization could not be completed")


def test_invalid_initial_params_are_an_initialization_error():
    with pytest.raises(
        robusthmc.InitializationError,
        match=r"^[^\n]*LinAlgError[^\n]*; fix: [^\n]*\(at the start: initial_params \(given to MCMC\)\)\n",
    ):
        run(rp.NUTS(walled), warmup=5, samples=5, initial_params={"x": torch.tensor(5.0)})


def test_stuck_chain_stops_with_the_draws_so_far():
    # Steps of 1 leave the island at once: every proposal raises, the chain cannot move.
    kernel = rp.NUTS(
        island,
        step_size=1.0,
        adapt_step_size=False,
        init_strategy=init_to_mean,
        guard=Guard(max_consecutive_failures=10),
    )
    with pytest.raises(robusthmc.StuckChainError, match="10 transitions in a row") as info:
        run(kernel, warmup=0, samples=100, initial_params={"x": torch.tensor(50.0)})
    assert info.value.diagnosis.iteration == 9


def test_step_size_collapse_is_an_error():
    with pytest.raises(robusthmc.StepSizeCollapseError, match="below Guard.min_step_size=50"):
        run(rp.NUTS(eight_schools_noncentered, guard=Guard(min_step_size=50.0)), warmup=20, samples=5)


def test_hmc_steps_per_transition_are_capped():
    kernel = rp.HMC(
        eight_schools_noncentered,
        step_size=1e-3,
        trajectory_length=1.0,
        adapt_step_size=False,
        guard=Guard(max_steps_per_transition=20),
    )
    with pytest.warns(robusthmc.StepCapWarning, match="10 HMC transitions were cut"):
        run(kernel, warmup=5, samples=5)


@pytest.fixture
def worker_processes(monkeypatch):
    """Pyro draws chains in worker processes only with more than num_chains + 1 CPUs: pretend so."""
    monkeypatch.setattr(pyro.infer.mcmc.api.mp, "cpu_count", lambda: 8)


@pytest.mark.timeout(180)
def test_failure_in_a_chain_among_several_ends_the_run_promptly_and_names_the_chain(worker_processes):
    kernel = rp.NUTS(
        island,
        step_size=1.0,
        adapt_step_size=False,
        init_strategy=init_to_mean,
        guard=Guard(max_consecutive_failures=5),
    )
    mcmc = MCMC(
        kernel,
        num_samples=20000,
        warmup_steps=0,
        num_chains=2,
        initial_params={"x": torch.tensor([50.0, 50.0])},
        disable_progbar=True,
    )
    start = time.perf_counter()
    with pytest.raises(robusthmc.StuckChainError, match="chain [01], sampling, iteration 4"):
        mcmc.run()
    assert time.perf_counter() - start < 60
    deadline = time.perf_counter() + 10
    while multiprocessing.active_children() and time.perf_counter() < deadline:
        time.sleep(0.1)
    assert not multiprocessing.active_children()


def test_multiple_chains_run_and_report(worker_processes):
    pyro.set_rng_seed(0)
    mcmc = MCMC(
        rp.NUTS(eight_schools_noncentered),
        num_samples=20,
        warmup_steps=20,
        num_chains=2,
        disable_progbar=True,
    )
    with warnings.catch_warnings():
        warnings.simplefilter("error", robusthmc.RobustHMCWarning)
        mcmc.run()
    assert mcmc.get_samples(group_by_chain=True)["mu"].shape == (2, 20)
    assert set(mcmc.diagnostics()["nonfinite"]) == {"chain 0", "chain 1"}
    assert "nonfinite" in arviz.from_pyro(mcmc).sample_stats
