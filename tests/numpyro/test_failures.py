"""Numerical failures: caught, attributed, counted or raised, never a hang, nothing lost."""

import collections
import pickle
import re
import time
import warnings

import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist
import numpyro.infer
import pytest
from numpyro.infer import MCMC, init_to_value

import robusthmc
import robusthmc.numpyro as rnp
from robusthmc import Guard
from robusthmc.lessons.data import truncated_regression_data
from robusthmc.lessons.numpyro import turing
from robusthmc.numpyro import _initialize

pytestmark = pytest.mark.timeout(240)


def cliff(limit=1.5):
    """Healthy near 0; the likelihood's scale sqrt(limit - x) is NaN beyond x = limit."""
    x = numpyro.sample("x", dist.Normal(0.0, 1.0))
    numpyro.sample("y", dist.Normal(0.0, jnp.sqrt(limit - x)), obs=0.3)


def trap():
    """Finite only within 1e-6 of x = 0.5: every move fails, the chain is stuck."""
    x = numpyro.sample("x", dist.Normal(0.0, 1.0))
    numpyro.factor("trap", jnp.where(jnp.abs(x - 0.5) < 1e-6, 0.0, jnp.nan))


def run(kernel, *args, num_warmup=100, num_samples=100, seed=0, **kwargs):
    mcmc = MCMC(kernel, num_warmup=num_warmup, num_samples=num_samples, progress_bar=False, **kwargs)
    mcmc.run(jax.random.key(seed), *args)
    return mcmc


@pytest.fixture
def evaluator_traces(monkeypatch):
    """A list that grows by one each time the failure diagnosis traces the model (compiles)."""
    from robusthmc.numpyro._sites import SiteEvaluator

    monkeypatch.setattr(_initialize, "_EVALUATORS", collections.OrderedDict())
    traces = []
    original = SiteEvaluator._evaluate_with_gradients
    monkeypatch.setattr(
        SiteEvaluator,
        "_evaluate_with_gradients",
        lambda self, point: traces.append(1) or original(self, point),
    )
    return traces


# -- initialisation ----------------------------------------------------------------------------


@pytest.mark.parametrize("kernel_class", [rnp.NUTS, rnp.HMC])
def test_turing_model_names_site_latent_bound_and_fix(kernel_class):
    with pytest.raises(
        robusthmc.InitializationError, match=r"(?s)site 'V'.*latent.*\bs\b.*high=inf.*high=None"
    ) as info:
        run(kernel_class(turing))
    error = info.value
    assert error.attempts == 100
    assert error.diagnosis.phase == "initialization"
    assert error.diagnosis.site_names == ("V",)
    [problem] = error.diagnosis.sites
    assert "s" in problem.nonfinite_gradient
    assert problem.distribution.startswith("TruncatedNormal(loc=0, scale=")
    assert problem.distribution.endswith("low=0, high=inf)")
    [cause] = problem.causes
    assert (cause.kind, cause.argument, cause.value) == ("infinite_bound", "high", "inf")
    assert "high=None" in cause.fix
    assert [set(values) for values in error.values_tried] == [{"s", "V"}, {"s", "V"}]
    # Existing handlers for numpyro's RuntimeError and Pyro's ValueError still catch it.
    assert isinstance(error, RuntimeError) and isinstance(error, ValueError)
    assert isinstance(error, FloatingPointError) and isinstance(error, robusthmc.RobustHMCError)


def test_where_numpyro_raises_generic_error_we_raise_ours():
    with pytest.raises(RuntimeError, match="Cannot find valid initial parameters. Please check"):
        run(numpyro.infer.NUTS(turing))


def test_initialization_error_diagnoses_both_points_tried_in_one_compilation(evaluator_traces):
    """The last and the first point tried are diagnosed together: the model is traced once."""
    with pytest.raises(robusthmc.InitializationError) as info:
        run(rnp.NUTS(turing))
    assert len(evaluator_traces) == 1
    first, last = info.value.values_tried
    assert first["s"] != last["s"]
    assert float(info.value.diagnosis.position["s"]) == last["s"]
    # Run again, as a notebook user does: the diagnosis is compiled already.
    with pytest.raises(robusthmc.InitializationError) as again:
        run(rnp.NUTS(turing))
    assert len(evaluator_traces) == 1
    assert str(again.value) == str(info.value)


def test_the_initial_point_search_is_numpyros_own():
    """numpyro's 100 attempts, at numpyro's keys."""
    with pytest.raises(
        robusthmc.InitializationError, match=r"100 attempts \(numpyro's initialize_model\)"
    ) as info:
        run(rnp.NUTS(turing))
    assert info.value.attempts == 100
    assert "another rng_key" in str(info.value)


@pytest.mark.parametrize(
    "option", [{"max_init_attempts": 7}, {"numerical_exceptions": (ArithmeticError,)}], ids=str
)
@pytest.mark.parametrize("kernel", [rnp.NUTS, rnp.HMC])
def test_an_option_the_numpyro_kernels_do_not_use_is_refused(kernel, option):
    (name,) = option
    with pytest.raises(
        robusthmc.GuardOptionError, match=rf"Guard\({name}=.*does nothing with the numpyro backend"
    ):
        kernel(turing, guard=Guard(**option))


def test_vectorized_chains_name_the_failing_chain():
    with pytest.raises(robusthmc.InitializationError) as info:
        run(rnp.NUTS(turing), num_chains=2, chain_method="vectorized")
    assert info.value.diagnosis.chain == 0


def test_invalid_user_init_params_are_explained():
    kernel = rnp.NUTS(cliff, init_strategy=init_to_value(values={"x": 0.0}))
    mcmc = MCMC(kernel, num_warmup=10, num_samples=10, progress_bar=False)
    # numpyro evaluates the initial point on concrete values and validates the arguments.
    with pytest.raises(
        robusthmc.InitializationError,
        match=r"^site 'y': .*; fix: .*\(at the start: init_params \(given to MCMC.run\)\)\n",
    ) as info:
        mcmc.run(jax.random.key(0), init_params={"x": jnp.array(3.0)})
    assert isinstance(info.value.__cause__, ValueError)


def test_first_run_on_invalid_values_names_the_site():
    # numpy 0.22 validates arguments by default: the first (concrete) run of the model
    # at an initial point in the NaN region raises numpyro's ValueError.
    kernel = rnp.NUTS(cliff, init_strategy=init_to_value(values={"x": 2.0}))
    with pytest.raises(robusthmc.InitializationError, match="site 'y'") as info:
        run(kernel)
    assert isinstance(info.value.__cause__, ValueError)


def test_validation_error_names_site_and_chains_original():
    def model():
        s = numpyro.sample("s", dist.Normal(0.0, 1.0))
        numpyro.sample("obs_noise", dist.Normal(s, -1.0), obs=0.0)

    with pytest.raises(robusthmc.InitializationError, match="site 'obs_noise'") as info:
        run(rnp.NUTS(model))
    assert isinstance(info.value.__cause__, ValueError)
    assert "invalid scale parameter" in str(info.value.__cause__)


@pytest.mark.parametrize(
    "body, error",
    [
        ("numpyro.sample('x', dist.Normal(0.0, 'one'))", TypeError),
        ("numpyro.sample('x', dist.Normal(0.0, undefined_name))", NameError),
        ("numpyro.sample('x', dist.Normal(jnp.zeros(3), jnp.ones(2)))", ValueError),
    ],
    ids=["type", "name", "shape"],
)
def test_programming_errors_propagate_unchanged(body, error):
    namespace = {"numpyro": numpyro, "dist": dist, "jnp": jnp}
    exec(f"def model():\n    {body}\n", namespace)
    with pytest.raises(error) as info:
        run(rnp.NUTS(namespace["model"]))
    assert not isinstance(info.value, robusthmc.RobustHMCError)


# -- failures during warmup and sampling -------------------------------------------------------


def test_partly_nan_model_warns_once_with_sites_and_counts():
    with pytest.warns(robusthmc.NonFiniteWarning) as record:
        mcmc = run(rnp.NUTS(cliff), num_warmup=200, num_samples=300)
    assert len(record) == 1
    message = str(record[0].message)
    assert "rejected" in message and "site 'y'" in message
    assert "scale is NaN" in message
    assert record[0].filename == __file__  # points at the user's line
    fields = mcmc.get_extra_fields()
    assert fields["nonfinite"].sum() > 0
    # A non-finite transition is counted apart from the geometric divergences.
    assert not np.any(fields["nonfinite"] & fields["diverging"])
    _, sampling_failures = np.asarray(mcmc.last_state.guard.nonfinite_count)
    assert sampling_failures == fields["nonfinite"].sum()
    # The first failures' positions are kept, and each lies in the NaN region.
    kept = np.asarray(mcmc.last_state.guard.failure_log)[: Guard().max_recorded_failures]
    assert np.all(kept[:, 0] >= 0) and np.all(kept[:, 1] > 0) and np.all(kept[:, 2] > 1.5)
    # The draws themselves never enter the NaN region.
    assert np.all(mcmc.get_samples()["x"] < 1.5)


def spike(limit=1.5):
    """The log density is +inf beyond x = limit, with a finite (zero) gradient there."""
    x = numpyro.sample("x", dist.Normal(0.0, 1.0))
    numpyro.factor("spike", jnp.where(x > limit, jnp.inf, 0.0))


# numpyro's HMC with an adapted step size hangs on this model (the step size collapses), so HMC
# runs with a fixed one.
@pytest.mark.parametrize(
    "kernel_class, options",
    [(rnp.NUTS, {}), (rnp.HMC, {"step_size": 0.2, "adapt_step_size": False, "num_steps": 3})],
)
def test_infinite_log_density_is_rejected_and_counted_not_accepted(kernel_class, options):
    # numpyro's kernels accept such a point (its energy is -inf) and their draws pile up beyond 1.5.
    upstream_class = getattr(numpyro.infer, kernel_class.__name__)
    upstream = run(upstream_class(spike, **options), num_warmup=200, num_samples=300)
    assert np.mean(upstream.get_samples()["x"] > 1.5) > 0.5
    guarded = run(
        kernel_class(spike, guard=Guard(on_nonfinite="ignore"), **options), num_warmup=200, num_samples=300
    )
    assert np.all(guarded.get_samples()["x"] <= 1.5)
    fields = guarded.get_extra_fields()
    assert fields["nonfinite"].sum() > 0
    assert not np.any(fields["nonfinite"] & fields["diverging"])
    kept = np.asarray(guarded.last_state.guard.failure_log)[0]
    assert kept[0] >= 0 and kept[1] > 0 and kept[2] > 1.5  # the first failure's iteration, step, position


def test_diagnosing_another_run_reuses_the_compiled_evaluator(evaluator_traces):
    """The warning's diagnosis traces the model once per kernel, whatever the number of failures."""
    mcmc = MCMC(rnp.NUTS(cliff), num_warmup=200, num_samples=300, progress_bar=False)
    counts = []
    for seed in (0, 1):
        with pytest.warns(robusthmc.NonFiniteWarning):
            mcmc.run(jax.random.key(seed))
        counts.append(int(np.sum(np.asarray(mcmc.last_state.guard.nonfinite_count))))
    assert len(evaluator_traces) == 1, counts


def test_ignore_policy_is_silent_but_counts():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        mcmc = run(rnp.NUTS(cliff, guard=Guard(on_nonfinite="ignore")), num_warmup=200, num_samples=300)
    assert mcmc.get_extra_fields()["nonfinite"].sum() > 0


def test_raise_policy_stops_at_first_failure_and_keeps_draws():
    # No warmup and a fixed step size: the first failure comes during sampling.
    kernel = rnp.NUTS(
        cliff,
        step_size=0.5,
        adapt_step_size=False,
        guard=Guard(on_nonfinite="raise"),
        init_strategy=init_to_value(values={"x": 0.0}),
    )
    with pytest.raises(
        robusthmc.NonFiniteError, match=r"(?s)chain 0, sampling, iteration \d+.*site 'y'"
    ) as info:
        run(kernel, 2.5, num_warmup=0, num_samples=5000, seed=3)
    error = info.value
    diagnosis = error.diagnosis
    assert diagnosis.phase == "sampling" and diagnosis.chain == 0
    assert diagnosis.site_names == ("y",)
    assert float(diagnosis.position["x"]) > 2.5
    assert error.samples["x"].shape == (1, diagnosis.iteration + 1)
    assert not np.isnan(error.samples["x"]).any()
    assert np.all(error.samples["x"] < 2.5)


def walled(x0=-3.0):
    """Healthy for x < -1; beyond, NaN except at the single point x = 0.5."""
    x = numpyro.sample("x", dist.Normal(x0, 1.0))
    numpyro.factor("wall", jnp.where((x < -1.0) | (jnp.abs(x - 0.5) < 1e-6), 0.0, jnp.nan))


def test_stuck_chain_raises_whatever_the_policy():
    kernel = rnp.NUTS(
        walled,
        step_size=0.3,
        adapt_step_size=False,
        guard=Guard(on_nonfinite="ignore", max_consecutive_failures=20),
        init_strategy=init_to_value(values={"x": 0.5}),
    )
    with pytest.raises(
        robusthmc.StuckChainError, match=r"20 transitions in a row.*max_consecutive_failures=20"
    ) as info:
        run(kernel, num_warmup=100, num_samples=100)
    # Checked from sampling on (adaptation may still free a chain in warmup); the streak counts.
    assert info.value.diagnosis.iteration == 100
    assert "chain 0, sampling, iteration 100" in str(info.value)
    assert info.value.diagnosis.site_names == ("wall",)


def test_one_stuck_chain_among_vectorized_chains_keeps_the_others_draws():
    kernel = rnp.NUTS(walled, step_size=0.3, adapt_step_size=False, guard=Guard(max_consecutive_failures=10))
    mcmc = MCMC(
        kernel, num_warmup=20, num_samples=30, num_chains=2, chain_method="vectorized", progress_bar=False
    )
    with pytest.raises(robusthmc.StuckChainError, match="chain 1, sampling, iteration 20") as info:
        mcmc.run(jax.random.key(0), init_params={"x": jnp.array([-3.0, 0.5])})
    draws = info.value.samples["x"]
    assert draws.shape == (2, 30)
    assert np.isfinite(draws[0]).all() and np.all(draws[0] < -1.0)
    # The halting transition (the first of sampling) rejected its proposal: its draw is kept.
    assert draws[1][0] == 0.5 and np.isnan(draws[1][1:]).all()


def test_hmc_step_size_collapse_ends_in_seconds(float64):
    def tiny_scale():
        numpyro.sample("x", dist.Normal(0.0, 1e-10))

    start = time.perf_counter()
    with pytest.raises(robusthmc.StepSizeCollapseError, match=r"below Guard.min_step_size=1e-08") as info:
        run(rnp.HMC(tiny_scale), num_warmup=500, num_samples=500)
    assert time.perf_counter() - start < 60
    # The step size reported is the one that stopped the chain, not where adaptation went after.
    reported = float(re.search(r"fell to (\S+), below", str(info.value)).group(1))
    assert reported < 1e-8
    assert info.value.diagnosis is None or info.value.diagnosis.phase == "warmup"
    assert "warmup" in str(info.value)


def test_hmc_never_exceeds_max_steps_per_transition():
    y = jnp.asarray(truncated_regression_data(), dtype=jnp.float32)

    def model(y):
        mu = numpyro.sample("mu", dist.Normal(0.0, 20.0))
        sigma = numpyro.sample("sigma", dist.HalfNormal(5.0))
        numpyro.sample("y", dist.TruncatedNormal(mu, sigma, low=0.0), obs=y)

    guard = Guard(on_nonfinite="ignore", max_steps_per_transition=256)
    mcmc = MCMC(rnp.HMC(model, guard=guard), num_warmup=100, num_samples=100, progress_bar=False)
    with pytest.warns(robusthmc.StepCapWarning, match="max_steps_per_transition=256"):
        mcmc.run(jax.random.key(0), y, extra_fields=("num_steps",))
    assert int(mcmc.get_extra_fields()["num_steps"].max()) <= 256


def test_a_step_size_search_that_never_settles_stops_the_chain():
    def flat():
        x = numpyro.sample("x", dist.ImproperUniform(dist.constraints.real, (), ()))
        numpyro.factor("flat", 0.0 * x)

    kernel = rnp.NUTS(flat, find_heuristic_step_size=True)
    with pytest.raises(
        robusthmc.RetryLimitError, match=r"ran the step size to inf.*every probe was accepted"
    ):
        run(kernel, num_warmup=20, num_samples=20)


def test_errors_survive_pickling():
    with pytest.raises(robusthmc.InitializationError) as info:
        run(rnp.NUTS(turing))
    restored = pickle.loads(pickle.dumps(info.value))
    assert type(restored) is robusthmc.InitializationError
    assert str(restored) == str(info.value)
    assert restored.attempts == 100
    assert restored.diagnosis.site_names == ("V",)


@pytest.mark.parametrize(
    "init_params, error, words",
    [
        ("x", TypeError, r"init_params='x': expected one value per latent site"),
        ({}, ValueError, r"init_params=\{\}: missing 'V', 's'"),
        ({"s": 1.0, "V": 1.0, "w": 0.0}, ValueError, r"no latent site named 'w'"),
        ({"s": jnp.zeros(3), "V": 1.0}, ValueError, r"init_params\['s'\] has shape \(3,\), not \(\)"),
        ({"s": "a", "V": 1.0}, TypeError, r"init_params\['s'\]='a': not a number"),
    ],
)
def test_a_malformed_start_is_refused_by_name(init_params, error, words):
    mcmc = MCMC(rnp.NUTS(turing), num_warmup=10, num_samples=10, progress_bar=False)
    with pytest.raises(error, match=words):
        mcmc.run(jax.random.key(0), high=None, init_params=init_params)


def test_a_start_per_chain_is_checked_with_its_chain_dimension():
    mcmc = MCMC(rnp.NUTS(turing), num_warmup=10, num_samples=10, num_chains=2, progress_bar=False)
    with pytest.raises(ValueError, match=r"has shape \(\), not \(2,\)"):
        mcmc.run(jax.random.key(0), high=None, init_params={"s": 0.5, "V": 0.5})
    mcmc.run(jax.random.key(0), high=None, init_params={"s": jnp.full(2, 0.5), "V": jnp.full(2, 0.5)})
    assert mcmc.get_samples()["s"].shape == (20,)
