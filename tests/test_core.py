"""The backend-neutral core: Guard, errors, causes, attribution, outcome."""

import dataclasses
import json
import pickle
import re
import subprocess
import sys
import textwrap
import warnings

import numpy as np
import pytest

import robusthmc
from robusthmc import Guard
from robusthmc._causes import Cause, DistributionInfo, data_at_edge, known_causes
from robusthmc._diagnosis import (
    Diagnosis,
    Halt,
    PointEvaluation,
    SiteProblem,
    StopPoint,
    find_site_problems,
    float_step_points,
    frozen_latents,
)
from robusthmc._outcome import ChainRecord, initialization_error, invalid_start_error, settle_run

BLOCK_BACKENDS = textwrap.dedent(
    """
    import importlib.abc, sys

    class Block(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in {"jax", "jaxlib", "torch", "numpyro", "pyro", "gpytorch", "arviz"}:
                raise ModuleNotFoundError(f"No module named {name!r}", name=name)

    sys.meta_path.insert(0, Block())
    """
)


def run_python(code: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)


def test_import_pulls_in_neither_jax_nor_torch():
    result = run_python(
        "import sys, robusthmc\n"
        "robusthmc.Guard(on_nonfinite='raise')\n"
        "print(sorted(m for m in ('jax', 'torch', 'numpyro', 'pyro') if m in sys.modules))"
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


def test_import_works_with_no_backend_installed():
    result = run_python(BLOCK_BACKENDS + "import robusthmc, robusthmc.lessons.data\nprint(robusthmc.Guard())")
    assert result.returncode == 0, result.stderr
    assert "Guard(on_nonfinite='warn'" in result.stdout


def test_a_backend_that_is_installed_but_does_not_import_is_not_called_missing():
    # numpyro 0.20 beside jax 0.10, as pip resolves it: jax dropped a name numpyro 0.20 imports.
    broken = textwrap.dedent(
        """
        import importlib.abc, sys

        class Broken(importlib.abc.MetaPathFinder):
            def find_spec(self, name, path=None, target=None):
                if name == "numpyro":
                    raise ImportError("cannot import name 'xla_pmap_p' from 'jax.extend.core.primitives'")

        sys.meta_path.insert(0, Broken())
        """
    )
    result = run_python(
        broken + "import robusthmc\ntry:\n    import robusthmc.numpyro\nexcept ImportError as e:\n"
        "    print(type(e).__name__, e)\n"
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("BackendNotInstalledError numpyro is installed but does not import")
    assert "xla_pmap_p" in result.stdout and 'pip install "jax<0.10"' in result.stdout
    assert "not installed" not in result.stdout


@pytest.mark.parametrize(
    "backend, extra", [("numpyro", "numpyro"), ("pyro", "pyro"), ("gpytorch", "gpytorch")]
)
def test_missing_backend_fails_loudly_with_install_hint(backend, extra):
    result = run_python(
        BLOCK_BACKENDS + f"import robusthmc\ntry:\n    import robusthmc.{backend}\nexcept ImportError as e:\n"
        f"    print(type(e).__name__, isinstance(e, robusthmc.RobustHMCError), e)\n"
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("BackendNotInstalledError True")
    assert f'pip install "robusthmc[{extra}]"' in result.stdout


@pytest.mark.parametrize(
    "options, match",
    [
        (
            {"on_nonfinite": "stop"},
            r"Guard\(on_nonfinite='stop'\): allowed values are 'warn', 'raise', 'ignore'",
        ),
        ({"max_init_attempts": 0}, r"Guard\(max_init_attempts=0\): must be an integer >= 1"),
        ({"max_init_attempts": 2.5}, r"Guard\(max_init_attempts=2.5\): must be an integer"),
        ({"max_consecutive_failures": True}, r"max_consecutive_failures=True"),
        ({"min_step_size": -1.0}, r"Guard\(min_step_size=-1.0\): must be a finite number > 0"),
        ({"min_step_size": float("nan")}, r"min_step_size=nan"),
        ({"min_step_size": "small"}, r"min_step_size='small'"),
        ({"max_steps_per_transition": None}, r"max_steps_per_transition=None"),
        (
            {"numerical_exceptions": [ValueError]},
            r"numerical_exceptions=\[<class 'ValueError'>\]\): must be None or a tuple",
        ),
        ({"numerical_exceptions": (int,)}, r"numerical_exceptions"),
        ({"max_recorded_failures": 2**31}, r"max_recorded_failures=2147483648\): at most 10000"),
        ({"max_recorded_failures": 10**8}, r"max_recorded_failures=100000000\): at most 10000"),
        ({"max_consecutive_failures": 2**33}, r"max_consecutive_failures=8589934592\): at most 2147483647"),
        ({"max_steps_per_transition": 2**40}, r"max_steps_per_transition=1099511627776\): at most"),
        ({"max_init_attempts": 10**12}, r"max_init_attempts=1000000000000\): at most"),
        ({"max_init_attempts": np.float64(2.0)}, r"max_init_attempts=.*2.0.*must be an integer"),
    ],
)
def test_guard_rejects_bad_options_naming_them(options, match):
    with pytest.raises(robusthmc.GuardOptionError, match=match) as info:
        Guard(**options)
    assert isinstance(info.value, ValueError)


def test_guard_takes_numpy_numbers_as_python_numbers():
    guard = Guard(
        max_init_attempts=np.int64(10), min_step_size=np.float32(1e-6), max_recorded_failures=np.int32(3)
    )
    assert guard == Guard(
        max_init_attempts=10, min_step_size=float(np.float32(1e-6)), max_recorded_failures=3
    )
    assert type(guard.max_init_attempts) is int and type(guard.min_step_size) is float


def test_guard_is_frozen_and_hashable():
    guard = Guard(on_nonfinite="raise", numerical_exceptions=(ArithmeticError,))
    with pytest.raises(AttributeError):
        guard.on_nonfinite = "warn"
    assert hash(guard) == hash(Guard(on_nonfinite="raise", numerical_exceptions=(ArithmeticError,)))


def test_error_hierarchy_resembles_builtins():
    assert issubclass(robusthmc.NonFiniteError, FloatingPointError)
    assert issubclass(robusthmc.StuckChainError, FloatingPointError)
    assert issubclass(robusthmc.StepSizeCollapseError, FloatingPointError)
    assert issubclass(robusthmc.RetryLimitError, RuntimeError)
    assert issubclass(robusthmc.BackendNotInstalledError, ImportError)
    for name in (
        "InitializationError",
        "NonFiniteError",
        "StuckChainError",
        "StepSizeCollapseError",
        "RetryLimitError",
        "GuardOptionError",
        "BackendNotInstalledError",
    ):
        assert issubclass(getattr(robusthmc, name), robusthmc.RobustHMCError)
    for name in ("NonFiniteWarning", "StepCapWarning", "InfiniteBoundWarning"):
        assert issubclass(getattr(robusthmc, name), robusthmc.RobustHMCWarning)


def diagnosis(site="V", chain=0, iteration=3, phase="sampling"):
    return Diagnosis(
        phase=phase,
        chain=chain,
        iteration=iteration,
        potential_energy=float("nan"),
        nonfinite_coordinates=("s",),
        sites=(SiteProblem(site, "Normal(loc=0, scale=nan)", float("nan"), ("s",)),),
        position={"s": np.array(1.0)},
    )


def test_errors_keep_samples_and_diagnosis_through_pickle():
    error = robusthmc.StuckChainError("stuck", diagnosis=diagnosis(), samples={"s": np.ones((1, 4))})
    restored = pickle.loads(pickle.dumps(error))
    assert type(restored) is robusthmc.StuckChainError
    assert str(restored) == "stuck"
    assert restored.diagnosis.site_names == ("V",)
    assert restored.diagnosis.sites[0].nonfinite_gradient == ("s",)
    np.testing.assert_array_equal(restored.samples["s"], np.ones((1, 4)))


def info(name="TruncatedNormal", family="truncated_normal", dtype="float32", **arguments):
    return DistributionInfo(name, family, {k: np.asarray(v) for k, v in arguments.items()}, dtype, "numpyro")


@pytest.mark.parametrize(
    "distribution, expected",
    [
        (info(loc=0.0, scale=1.0, low=0.0, high=np.inf), [("infinite_bound", "high")]),
        (info(loc=0.0, scale=1.0, low=-np.inf, high=1.0), [("infinite_bound", "low")]),
        (info(loc=0.0, scale=1.0, low=[0.0, 1.0], high=[2.0, np.inf]), [("infinite_bound", "high")]),
        (info("Uniform", "uniform", low=0.0, high=np.inf), [("infinite_bound", "high")]),
        (info("Normal", "other", loc=0.0, scale=np.inf), [("infinite_argument", "scale")]),
        (info("Normal", "other", loc=0.0, scale=0.0), [("nonpositive_scale", "scale")]),
        (info("Gamma", "other", concentration=-1.0, rate=1.0), [("nonpositive_scale", "concentration")]),
        (info("Normal", "other", loc=np.nan, scale=1.0), [("nan_argument", "loc")]),
        (info(loc=0.0, scale=1.0, low=13.0), [("tail_overflow", "low")]),
        (info(loc=0.0, scale=1.0, low=13.0, dtype="float64"), []),
        (info(loc=0.0, scale=1.0, high=-40.0, dtype="float64"), [("tail_overflow", "high")]),
        (info(loc=0.0, scale=1.0, low=0.0, high=5.0), []),
    ],
)
def test_known_causes(distribution, expected):
    assert [(c.kind, c.argument) for c in known_causes(distribution)] == expected


def test_fix_for_infinite_bound_points_at_none():
    [cause] = known_causes(info(loc=0.0, scale=1.0, low=0.0, high=np.inf))
    assert "high=None" in cause.fix and "robusthmc.numpyro.TruncatedNormal" in cause.fix
    [cause] = known_causes(info("TruncatedDistribution(StudentT)", "truncated", df=3.0, low=0.0, high=np.inf))
    assert "robusthmc.numpyro.truncated(base" in cause.fix


def test_a_probability_at_exactly_0_or_1_is_named_only_where_the_site_fails():
    saturated = info("BernoulliProbs", "other", probs=[0.2, 1.0, 0.0])
    assert known_causes(saturated) == ()  # an observation it allows: finite, nothing to fix
    [cause] = known_causes(saturated, failing=True)
    assert (cause.kind, cause.argument) == ("saturated_probability", "probs")
    assert "Bernoulli(logits=eta), not Bernoulli(probs=sigmoid(eta))" in cause.headline("y")
    # Pyro reads logits off the probs: the saturated entries' are infinite, the same fact.
    both = info("Bernoulli", "other", probs=[1.0], logits=[np.inf])
    assert [c.kind for c in known_causes(both, failing=True)] == ["saturated_probability"]
    assert known_causes(info("BernoulliProbs", "other", probs=[0.3, 0.9]), failing=True) == ()


def test_a_positive_argument_that_overflowed_or_underflowed_is_named_so():
    [overflow] = known_causes(info("Poisson", "other", rate=[3.0, np.inf]))
    assert "overflowed to" in overflow.headline("y") and "moderate scale" in overflow.remedy
    assert "None" not in overflow.fix  # "leave the argument out" is for bounds, not a rate
    [underflow] = known_causes(info("Poisson", "other", rate=[3.0, 0.0]))
    assert "underflowed to 0" in underflow.brief and "standardised covariates" in underflow.remedy
    assert "positive support" not in underflow.fix  # a rate that is exp(...) has one already
    [negative] = known_causes(info("Normal", "other", loc=0.0, scale=[1.0, -0.5]))
    assert "a positive prior for the latent behind scale" in negative.remedy


def test_data_outside_the_support_or_on_its_edge_is_the_cause_where_the_site_fails():
    beta = info("Beta", "other", concentration1=2.0, concentration0=3.0)
    edge = data_at_edge(0, 2, 6)
    assert known_causes(beta, observed_at_edge=edge) == ()  # harmless where the site is finite
    [cause] = known_causes(beta, observed_at_edge=edge, failing=True)
    assert cause.headline("y").startswith("site 'y': the observed data holds 2 of 6 values on the edge")
    outside = known_causes(beta, value_in_support=False, observed_at_edge=data_at_edge(1, 0, 4))
    assert [c.kind for c in outside] == ["data_at_edge"]  # not a wall among the latents


def test_support_mismatch_is_a_cause():
    causes = known_causes(info("Gamma", "other", concentration=2.0, rate=1.0), value_in_support=False)
    assert [c.kind for c in causes] == ["support_mismatch"]


def test_attribution_keeps_only_failing_terms_and_coordinates():
    problems = find_site_problems(
        {"mu": -1.0, "theta": -3.0, "y": float("nan")},
        {
            "mu": {"mu": np.array(0.1), "theta": np.zeros(3)},
            "theta": {"mu": np.array(0.2), "theta": np.ones(3)},
            "y": {"mu": np.array(0.0), "theta": np.array([0.0, np.nan, np.inf])},
        },
        {"mu": None, "theta": None, "y": info("Normal", "other", loc=0.0, scale=np.nan)},
    )
    assert [p.site for p in problems] == ["y"]
    assert problems[0].nonfinite_gradient == ("theta[1]", "theta[2]")
    assert not problems[0].value_is_finite
    assert [c.kind for c in problems[0].causes] == ["nan_argument"]


def test_overflowed_latent_is_the_cause_not_its_dependants():
    problems = find_site_problems(
        {"tau": -np.inf, "theta": -np.inf},
        {"tau": {"tau": np.array(np.nan)}, "theta": {"tau": np.array(np.nan)}},
        {
            "tau": info("HalfCauchy", "other", scale=5.0),
            "theta": info("Normal", "other", loc=0.0, scale=np.inf),
        },
        position={"tau": np.array(np.inf), "theta": np.zeros(2)},
    )
    assert [p.site for p in problems] == ["tau"]
    assert [c.kind for c in problems[0].causes] == ["overflow"]


def record(halt=Halt.RUNNING, nonfinite=(0, 0), failures=(), halted_at=None, capped=0):
    return ChainRecord(0, halt, halted_at, 100, nonfinite, (100, 100), capped, 0.5, lambda which: failures)


def test_settle_run_is_silent_on_a_clean_run():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        settle_run([record()], Guard(), samples={})


def test_warmup_failures_are_counted_not_warned_nor_diagnosed():
    def diagnose(which):
        raise AssertionError("diagnosing costs time: only when a warning or an error needs it")

    for warmup_failures in (3, 30, 100):
        quiet = ChainRecord(0, Halt.RUNNING, None, 100, (warmup_failures, 0), (100, 100), 0, 0.5, diagnose)
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            settle_run([quiet], Guard(), samples={})
    with pytest.warns(robusthmc.NonFiniteWarning, match="30 of 100 warmup, 2 of 100 sampling"):
        settle_run([record(nonfinite=(30, 2), failures=(diagnosis(phase="warmup"),))], Guard(), samples={})


def test_an_isolated_sampling_failure_is_counted_not_warned():
    long_run = ChainRecord(0, Halt.RUNNING, None, 100, (0, 3), (100, 5000), 0, 0.5, lambda which: ())
    for quiet in (record(nonfinite=(0, 1)), long_run):
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            settle_run([quiet], Guard(), samples={})


def test_warning_names_sites_counts_and_points_at_caller():
    with pytest.warns(
        robusthmc.NonFiniteWarning,
        match=r"(?s)2 transitions.*0 of 100 warmup, 2 of 100 sampling.*First failure.*site 'V'.*latent s",
    ) as caught:
        settle_run([record(nonfinite=(0, 2), failures=(diagnosis(),))], Guard(), samples={})
    assert caught[0].filename == __file__


def test_ignore_policy_never_warns():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        settle_run(
            [record(nonfinite=(0, 50), failures=(diagnosis(),))], Guard(on_nonfinite="ignore"), samples={}
        )


@pytest.mark.parametrize(
    "halt, error, text",
    [
        (Halt.NONFINITE, robusthmc.NonFiniteError, "stops at the first one"),
        (Halt.STUCK, robusthmc.StuckChainError, "Guard.max_consecutive_failures=50"),
        (Halt.STEP_SIZE_COLLAPSE, robusthmc.StepSizeCollapseError, "Guard.min_step_size=1e-08"),
        (Halt.STEP_SIZE_SEARCH, robusthmc.RetryLimitError, "find_heuristic_step_size=False"),
        (Halt.INITIALIZATION, robusthmc.InitializationError, "search found no valid point"),
    ],
)
def test_halted_chain_raises_its_error_with_samples(halt, error, text):
    samples = {"s": np.zeros((2, 7))}
    records = [record(), record(halt=halt, halted_at=107, failures=(diagnosis(chain=1),))]
    with pytest.raises(error, match=text) as caught:
        settle_run(records, Guard(), samples=samples)
    assert caught.value.diagnosis.chain == 1
    if halt is not Halt.INITIALIZATION:
        assert caught.value.samples is samples


def test_step_cap_warning():
    with pytest.warns(
        robusthmc.StepCapWarning, match="12 HMC transitions were cut at Guard.max_steps_per_transition=8192"
    ):
        settle_run([record(capped=12)], Guard(), samples={})


@pytest.mark.parametrize(
    "guard, halt, nonfinite, words",
    [
        (Guard(max_consecutive_failures=1), Halt.STUCK, (0, 1), "1 transition in a row"),
        (Guard(max_consecutive_failures=2), Halt.STUCK, (0, 2), "2 transitions in a row"),
    ],
)
def test_counts_in_messages_agree_in_number(guard, halt, nonfinite, words):
    with pytest.raises(robusthmc.RobustHMCError) as info:
        settle_run([record(halt=halt, nonfinite=nonfinite, halted_at=5)], guard, samples={})
    assert words in str(info.value)


def test_a_diagnosis_prints_as_its_text():
    text = str(diagnosis())
    assert text.startswith("where: chain 0, sampling, iteration 3") and "site 'V'" in text
    assert json.loads(json.dumps(diagnosis().to_dict()))["potential_energy"] == "nan"


def failing_site(site="V", kind="infinite_bound"):
    """A diagnosis whose site has a known cause, as a backend would produce it."""
    cause = Cause(kind, "high", "inf", "write high=None ...", "high=inf makes the gradient NaN", "high=None")
    problem = SiteProblem(
        site, "TruncatedNormal(loc=0, scale=1, low=0, high=inf)", float("nan"), ("s",), (cause,)
    )
    return dataclasses.replace(diagnosis(site), sites=(problem,))


FIRST_LINE = re.compile(r"^site 'V': high=inf makes the gradient NaN; fix: high=None")


def first_line_of_every_error_and_warning():
    """Every error and warning the guard raises, from a run whose failures name site 'V'."""
    found = {}
    for halt in (
        Halt.NONFINITE,
        Halt.STUCK,
        Halt.STEP_SIZE_COLLAPSE,
        Halt.STEP_SIZE_SEARCH,
        Halt.INITIALIZATION,
    ):
        with pytest.raises(robusthmc.RobustHMCError) as caught:
            settle_run([record(halt=halt, halted_at=107, failures=(failing_site(),))], Guard(), samples={})
        found[type(caught.value).__name__] = str(caught.value)
    with pytest.warns(robusthmc.NonFiniteWarning) as warned:
        settle_run([record(nonfinite=(0, 9), failures=(failing_site(),))], Guard(), samples={})
    found["NonFiniteWarning"] = str(warned[0].message)
    at = {"s": np.array(1.0)}
    found["InitializationError (search)"] = str(
        initialization_error(
            failing_site(), attempts=100, search="Guard.max_init_attempts=100", values_tried=(at, at)
        )
    )
    found["InitializationError (given)"] = str(
        invalid_start_error(
            failing_site(), given="init_params (given to MCMC.run)", instead="leave init_params out"
        )
    )
    return found


def test_every_error_and_warning_says_site_cause_and_fix_on_its_first_line():
    found = first_line_of_every_error_and_warning()
    assert set(found) >= {
        "NonFiniteError",
        "StuckChainError",
        "StepSizeCollapseError",
        "RetryLimitError",
        "InitializationError",
        "NonFiniteWarning",
    }
    for name, message in found.items():
        first = message.splitlines()[0]
        assert FIRST_LINE.match(first), f"{name}: {first}"
        assert len(message.splitlines()) > 1, f"{name}: the details go below the first line"
    assert found["InitializationError (search)"].splitlines()[0].endswith("(100 starts tried)")
    assert "do not trust the draws" in found["NonFiniteWarning"].splitlines()[0]


def test_the_first_line_names_the_site_that_fails_most_and_counts_the_others():
    other = failing_site("W")
    failures = (failing_site(), other, failing_site())
    with pytest.warns(robusthmc.NonFiniteWarning) as warned:
        settle_run([record(nonfinite=(0, 9), failures=failures)], Guard(), samples={})
    first = str(warned[0].message).splitlines()[0]
    assert first.startswith("site 'V': ") and "(and 1 more site)" in first


def test_a_collapse_at_a_drifting_latent_names_the_drift():
    evaluation = PointEvaluation(
        {"b": 0.0, "y": -1.0},
        {},
        {"b": DistributionInfo("ImproperUniform", "other", {}, "float32", "numpyro")},
        {},
        {"b": np.array(1e25)},
    )
    stop = StopPoint(evaluation, {"b": np.array(1e25)}, "float32", {})
    collapsed = dataclasses.replace(
        record(halt=Halt.STEP_SIZE_COLLAPSE, halted_at=50), inspect_stop=lambda: stop
    )
    with pytest.raises(robusthmc.StepSizeCollapseError) as caught:
        settle_run([collapsed], Guard(), samples={})
    first = str(caught.value).splitlines()[0]
    assert first.startswith("site 'b': b drifts to 1e+25: the posterior looks improper (nothing bounds b)")
    assert "fix: a proper prior on b" in first


def test_a_collapse_where_float32_cannot_resolve_says_float64():
    evaluation = PointEvaluation(
        {"mu": -20.0, "y": -5.0},
        {},
        {
            "mu": DistributionInfo(
                "Normal", "other", {"loc": np.array(0.0), "scale": np.array(1e10)}, "float32", "numpyro"
            )
        },
        {},
        {"mu": np.array(1e9)},
    )
    stop = StopPoint(evaluation, {"mu": np.array(1e9)}, "float32", {"mu": 2e6})
    collapsed = dataclasses.replace(
        record(halt=Halt.STEP_SIZE_COLLAPSE, halted_at=50), inspect_stop=lambda: stop
    )
    with pytest.raises(robusthmc.StepSizeCollapseError) as caught:
        settle_run([collapsed], Guard(), samples={})
    first = str(caught.value).splitlines()[0]
    assert first.startswith("site 'mu': float32 cannot resolve the posterior of mu near 1e+09")
    assert "fix: numpyro.enable_x64()" in first
    healthy = StopPoint(evaluation, {"mu": np.array(1e9)}, "float64", {"mu": 2e6})
    assert healthy.problems == ()  # float64 resolves it: not this cause


def test_float_step_points_move_one_coordinate_by_one_float_step():
    points = float_step_points({"x": np.array([1.0, 1e8]), "y": np.array(2.0)}, "float32")
    assert [name for name, _ in points] == ["x", "y", "x"]  # largest first
    moved = points[0][1]["x"]
    assert moved[1] - np.float32(1e8) == 8.0 and moved[0] == 1.0


def test_a_factor_that_is_minus_inf_is_a_wall_not_a_missing_bound():
    causes = known_causes(
        DistributionInfo("factor", "other", {"log_factor": np.array(-np.inf)}, "float32", "numpyro")
    )
    assert [c.kind for c in causes] == ["wall"]
    assert "None" not in causes[0].remedy and "support" in causes[0].remedy


def test_a_nan_cholesky_factor_is_named_as_the_argument_and_a_cholesky():
    info = DistributionInfo(
        "MultivariateNormal",
        "other",
        {"loc": np.zeros(2), "scale_tril": np.full((2, 2), np.nan)},
        "float32",
        "numpyro",
    )
    (cause,) = known_causes(info)
    assert cause.argument == "scale_tril" and "Cholesky" in cause.brief


def test_a_latent_that_kept_one_value_through_sampling_is_warned_about():
    draws = {"mu": np.full((100,), 1e9, dtype=np.float32), "s": np.linspace(0.0, 1.0, 100)}
    frozen = frozen_latents(draws, "float32")
    assert [p.site for p in frozen] == ["mu"]
    with pytest.warns(robusthmc.FrozenChainWarning) as caught:
        settle_run([dataclasses.replace(record(), frozen=frozen)], Guard(), samples={})
    first = str(caught[0].message).splitlines()[0]
    assert first.startswith("site 'mu': mu kept the value 1e+09 for all 100 sampling draws")
    assert "fix: numpyro.enable_x64()" in first
    assert frozen_latents({"x": np.zeros(10)}, "float32") == ()  # too few draws to say
    assert frozen_latents({"k": np.zeros(100, dtype=np.int32)}, "float32") == ()  # not continuous


def test_a_latent_pinned_against_a_bound_of_its_support_is_named_with_the_bound():
    # sigma ~ Uniform(0, 0.5) under data of scale 2000: float32's transform saturates one
    # float below the bound, and the chain stays there.
    pinned = np.full(100, np.nextafter(np.float32(0.5), np.float32(0)), dtype=np.float32)
    (problem,) = frozen_latents({"sigma": pinned}, "float32", lambda: {"sigma": (0.0, 0.5)})
    (cause,) = problem.causes
    assert cause.kind == "pinned_at_bound"
    assert cause.brief.startswith("sigma kept the value 0.5, the upper bound of its support,")
    assert "data push sigma against" in cause.brief
    assert cause.remedy.startswith("a prior that allows sigma beyond 0.5")
    # Its lower bound 0, a scale the data pull to 0 (tau in a centred hierarchy).
    (problem,) = frozen_latents(
        {"tau": np.full((100, 1), 1e-38, np.float32)}, "float32", lambda: {"tau": (0.0, None)}
    )
    (cause,) = problem.causes
    assert cause.brief.startswith("tau[0] kept the value 1e-38, the lower bound of its support,")
    assert "non-centred" in cause.remedy and "off 0" in cause.remedy
    # Away from the bounds: the value is the chain's, not the bound's.
    (problem,) = frozen_latents(
        {"sigma": np.full(100, 0.25, np.float32)}, "float32", lambda: {"sigma": (0.0, 0.5)}
    )
    assert problem.causes[0].kind == "frozen"
    # Per-coordinate bounds, one coordinate pinned.
    draws = np.stack([np.full(100, 9.999999, np.float32), np.linspace(1, 2, 100, dtype=np.float32)], axis=1)
    (problem,) = frozen_latents({"w": draws}, "float32", lambda: {"w": (np.zeros(2), np.array([10.0, 5.0]))})
    assert problem.causes[0].brief.startswith("w[0] kept the value 10, the upper bound of its support")


#: (guard options, previous code, this transition) -> the code; in_warmup/warmup_ends/failed,
#: consecutive, step size after adaptation, smallest warmup failure step.
TRANSITIONS = [
    ({}, Halt.RUNNING, (True, False, True, 1, 0.1, 0.05), Halt.RUNNING),  # warmup failures go on...
    ({}, Halt.RUNNING, (True, False, False, 0, 1e-12, np.inf), Halt.STEP_SIZE_COLLAPSE),
    ({"max_consecutive_failures": 10}, Halt.RUNNING, (False, False, True, 9, 0.1, np.inf), Halt.RUNNING),
    ({"max_consecutive_failures": 10}, Halt.RUNNING, (False, False, True, 10, 0.1, np.inf), Halt.STUCK),
    (
        {"max_consecutive_failures": 10},
        Halt.RUNNING,
        (True, False, True, 50, 0.1, 0.05),
        Halt.RUNNING,
    ),  # ...50 too
    ({"on_nonfinite": "raise"}, Halt.RUNNING, (False, False, True, 1, 0.1, np.inf), Halt.NONFINITE),
    # at warmup's end, a failure at a step size no larger than the adapted one is evidence ...
    ({"on_nonfinite": "raise"}, Halt.RUNNING, (True, True, False, 0, 0.1, 0.05), Halt.NONFINITE),
    # ... one at a larger step size was a probe adaptation did not keep
    ({"on_nonfinite": "raise"}, Halt.RUNNING, (True, True, False, 0, 0.1, 0.5), Halt.RUNNING),
    # a later reason wins: evidence over a collapse at the same transition
    ({"on_nonfinite": "raise"}, Halt.RUNNING, (True, True, False, 0, 1e-12, 1e-13), Halt.NONFINITE),
    # a chain already stopped keeps its reason
    ({"on_nonfinite": "raise"}, Halt.STUCK, (False, False, True, 1, 0.1, np.inf), Halt.STUCK),
]


@pytest.mark.parametrize("xp_name", ["numpy", "jax.numpy"])
@pytest.mark.parametrize("options, previous, transition, expected", TRANSITIONS)
def test_every_kernel_stops_a_chain_by_the_same_rules(xp_name, options, previous, transition, expected):
    from robusthmc._outcome import transition_halt

    xp = pytest.importorskip(xp_name)
    in_warmup, warmup_ends, failed, consecutive, step_size, smallest = transition
    halt = transition_halt(
        xp,
        Guard(**options),
        xp.asarray(int(previous)),
        in_warmup=in_warmup,
        warmup_ends=warmup_ends,
        failed=failed,
        consecutive=consecutive,
        step_size=step_size,
        smallest_failure_step=smallest,
    )
    assert Halt(int(halt)) is expected
