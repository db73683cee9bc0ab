"""The cases ``robusthmc repro`` runs, each in a child process under a watchdog.

A case is a function ``case(progress) -> Finding`` in one of the backend modules
(:mod:`~robusthmc.lessons.repro.numpyro`, :mod:`~robusthmc.lessons.repro.pyro`,
:mod:`~robusthmc.lessons.repro.gpytorch`). It runs in ``python -m
robusthmc.lessons.repro MODULE:FUNCTION``, reports progress as JSON lines
(``{"progress": {...}}``) and its finding last (``{"finding": {...}}``). A case
that does not finish is killed at the timeout and reported as hung, with the
last progress it reported. This module imports no backend: the command line
lists the cases without them.

Examples
--------
>>> [case.name for case in truncated_normal_cases("pyro")]
['stock', 'uncapped_search', 'guarded', 'fix_high_none', 'fix_high_inf']
>>> row = ReproRow("guarded", "pyro", "Turing", "robusthmc NUTS", "InitializationError", 1.5, "site 'V'", True)
>>> for line in render_table([row]).splitlines()[2:]:
...     print(" ".join(line.split()))
pyro Turing robusthmc NUTS InitializationError 1.5s yes
| site 'V'
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

__all__ = [
    "Case",
    "Finding",
    "Progress",
    "ReproRow",
    "gpytorch_prior_cases",
    "render_table",
    "run_case",
    "truncated_normal_cases",
]

#: How a case reports progress: ``progress(attempts=200, nan_gradients=200)``.
Progress = Callable[..., None]


@dataclass(frozen=True)
class Finding:
    """What a case found: its outcome, the lines a user acts on, and whether that is as documented."""

    outcome: str
    message: str
    as_documented: bool

    @classmethod
    def from_error(
        cls, error: BaseException, as_documented: bool, keep: tuple[str, ...] = (), outcome: str = ""
    ) -> Finding:
        """An error's type and first line, with the lines of its message that start with ``keep``.

        The outcome is ``outcome``, or the error's type where that is empty.
        """
        lines = str(error).splitlines() or [""]
        kept = [line.strip() for line in lines[1:] if keep and line.strip().startswith(keep)]
        told = "\n".join([f"{type(error).__name__}: {lines[0]}", *kept])
        return cls(outcome or type(error).__name__, told, as_documented)


#: What a case that expects its sampler to fail returns when it did not.
NO_ERROR = Finding("sampled", "no error", False)


@dataclass(frozen=True)
class ReproRow:
    """One line of the ``repro`` table: the case and its finding."""

    case: str
    backend: str
    model: str
    sampler: str
    outcome: str
    seconds: float
    message: str
    as_documented: bool

    def to_json(self) -> dict[str, Any]:
        """The row as the ``--json`` output has it."""
        return asdict(self)


@dataclass(frozen=True)
class Case:
    """A reproduction case: what runs, and how to read a hang."""

    name: str
    backend: str
    model: str
    sampler: str
    target: str  # "module:function"
    hang_expected: bool = False
    describe_hang: Callable[[dict[str, Any]], str] | None = None


def compare_with_reference(
    draws: Mapping[str, Any],
    reference: Mapping[str, np.ndarray],
    probabilities: np.ndarray,
    effective_sample_size: Callable[[np.ndarray], Any],
    label: str = "exact",
) -> tuple[list[str], bool]:
    """One line per site of grouped ``draws`` (chains x draws) against reference quantiles.

    A site matches where the share of draws below each reference quantile is
    within four Monte Carlo standard errors of its probability (at the site's
    effective sample size, from the backend's own ``effective_sample_size``).
    """
    lines, matches = [], True
    for site, quantiles in reference.items():
        grouped = np.asarray(draws[site], dtype=np.float64)
        ess = float(effective_sample_size(draws[site]))
        flat = grouped.reshape(-1)
        below = np.array([(flat <= q).mean() for q in quantiles])
        error = 4 * np.sqrt(probabilities * (1 - probabilities) / ess)
        matches &= bool(np.all(np.abs(below - probabilities) <= error))
        drawn = " / ".join(f"{q:.3g}" for q in np.quantile(flat, probabilities))
        truth = " / ".join(f"{q:.3g}" for q in quantiles)
        percents = "/".join(f"{100 * p:g}" for p in probabilities)
        lines.append(f"{site}: {percents}% {drawn} ({label} {truth}), ESS {ess:.0f}")
    return lines, matches


#: A case not expected to hang still runs under a watchdog, with this much time at least.
SAFETY_TIMEOUT = 900.0


def run_case(case: Case, timeout: float) -> ReproRow:
    """Run ``case`` in a child process; kill it after ``timeout`` seconds if it can hang.

    A case that is not expected to hang gets ``max(timeout, SAFETY_TIMEOUT)``.
    """
    if not case.hang_expected:
        timeout = max(timeout, SAFETY_TIMEOUT)
    start = time.perf_counter()
    command = [sys.executable, "-m", "robusthmc.lessons.repro", case.target]
    child = subprocess.Popen(
        command,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONWARNINGS": "ignore"},
    )
    try:
        stdout, stderr = child.communicate(timeout=timeout)
        hung = False
    except subprocess.TimeoutExpired:
        child.kill()
        stdout, stderr = child.communicate()
        hung = True
    except BaseException:  # Ctrl-C: leave nothing running
        child.kill()
        child.wait()
        raise
    progress: dict[str, Any] = {}
    finding: dict[str, Any] | None = None
    for line in stdout.splitlines():
        try:
            message = json.loads(line)
        except json.JSONDecodeError:
            continue
        progress = message.get("progress", progress)
        finding = message.get("finding", finding)
    row = ReproRow(
        case.name, case.backend, case.model, case.sampler, "", time.perf_counter() - start, "", False
    )
    if hung:
        told = case.describe_hang(progress) if case.describe_hang else f"last progress: {progress}"
        return _replace(
            row, outcome=f"hung (stopped after {timeout:g} s)", message=told, as_documented=case.hang_expected
        )
    if finding is None:
        last = (stderr.strip().splitlines() or ["no output"])[-1]
        return _replace(row, outcome="crashed", message=last)
    documented = bool(finding["as_documented"]) and not case.hang_expected
    return _replace(
        row,
        outcome=finding["outcome"],
        seconds=finding["seconds"],
        message=finding["message"],
        as_documented=documented,
    )


def _replace(row: ReproRow, **changes: Any) -> ReproRow:
    return ReproRow(**{**asdict(row), **changes})


def render_table(rows: list[ReproRow]) -> str:
    """A plain-text table, one row per case, the message wrapped under it."""
    header = f"{'backend':8s} {'model':24s} {'sampler':28s} {'outcome':26s} {'time':>8s}  ok"
    lines = [header, "-" * len(header)]
    for row in rows:
        ok = "yes" if row.as_documented else "NO"
        lines.append(
            f"{row.backend:8s} {row.model:24s} {row.sampler:28s} {row.outcome:26s} {row.seconds:7.1f}s  {ok}"
        )
        for text in row.message.splitlines():
            lines.append(f"{'':9s}| {text}")
    return "\n".join(lines)


def _hang_of_search(progress: dict[str, Any]) -> str:
    attempts, nan = progress.get("attempts", 0), progress.get("nan_gradients", 0)
    return f"{attempts} attempts, {nan} with a NaN gradient, when the watchdog stopped it"


def _hang_of_hmc(progress: dict[str, Any]) -> str:
    if not progress:
        return "stopped before the first transition finished"
    return (
        f"transition {progress['iteration']}: step size {progress['step_size']:.3g}, "
        f"{progress['num_steps']:,} leapfrog steps per transition"
    )


def truncated_normal_cases(backend: str) -> list[Case]:
    """Lesson 1's cases for ``backend`` ("numpyro", "pyro" or "all")."""
    cases = []
    if backend in ("numpyro", "all"):
        n = "robusthmc.lessons.repro.numpyro:"
        turing, regression = "Turing (high=inf)", "truncated regression f32"
        cases += [
            Case("stock", "numpyro", turing, "numpyro NUTS", n + "stock_nuts_turing"),
            Case(
                "uncapped_search",
                "numpyro",
                turing,
                "uncapped init search",
                n + "uncapped_search_turing",
                True,
                _hang_of_search,
            ),
            Case("guarded", "numpyro", turing, "robusthmc NUTS", n + "guarded_nuts_turing"),
            Case("fix_high_none", "numpyro", "Turing (high=None)", "robusthmc NUTS", n + "fix_high_none"),
            Case(
                "fix_robusthmc",
                "numpyro",
                "Turing, robusthmc TN inf",
                "robusthmc NUTS",
                n + "fix_robusthmc_truncated_normal",
            ),
            Case(
                "regression_stock_hmc",
                "numpyro",
                regression,
                "numpyro HMC",
                n + "stock_hmc_regression",
                True,
                _hang_of_hmc,
            ),
            Case("regression_stock_nuts", "numpyro", regression, "numpyro NUTS", n + "stock_nuts_regression"),
            Case(
                "regression_guarded_hmc", "numpyro", regression, "robusthmc HMC", n + "guarded_hmc_regression"
            ),
            Case(
                "regression_guarded_nuts",
                "numpyro",
                regression,
                "robusthmc NUTS",
                n + "guarded_nuts_regression",
            ),
            Case(
                "regression_fix",
                "numpyro",
                "regression, robusthmc TN",
                "robusthmc NUTS (0.99)",
                n + "robust_regression",
            ),
        ]
    if backend in ("pyro", "all"):
        p = "robusthmc.lessons.repro.pyro:"
        turing = "Turing (hand-written TN)"
        cases += [
            Case("stock", "pyro", turing, "pyro NUTS", p + "stock_nuts_turing"),
            Case(
                "uncapped_search",
                "pyro",
                turing,
                "uncapped init search",
                p + "uncapped_search_turing",
                True,
                _hang_of_search,
            ),
            Case("guarded", "pyro", turing, "robusthmc NUTS", p + "guarded_nuts_turing"),
            Case("fix_high_none", "pyro", "Turing, robusthmc TN None", "robusthmc NUTS", p + "fix_high_none"),
            Case("fix_high_inf", "pyro", "Turing, robusthmc TN inf", "robusthmc NUTS", p + "fix_high_inf"),
        ]
    return cases


def gpytorch_prior_cases() -> list[Case]:
    """Lesson 2's cases (Pyro and GPyTorch)."""
    g = "robusthmc.lessons.repro.gpytorch:"
    model = "GP recipe, GammaPrior(.5,1)"
    return [
        Case("stock", "pyro", model, "pyro NUTS", g + "stock_nuts"),
        Case("audit", "gpytorch", model, "robusthmc.gpytorch.audit", g + "audit_recipe"),
        Case("guarded", "pyro", model, "robusthmc NUTS", g + "guarded_nuts"),
        Case("fixed", "pyro", "GP recipe, GammaPrior(3,1)", "robusthmc NUTS", g + "fixed_model"),
    ]
