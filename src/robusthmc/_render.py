"""Text for people: diagnoses as the lines of an error message, a warning or a report."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

import numpy as np

from robusthmc._causes import format_argument
from robusthmc._diagnosis import Diagnosis, SiteProblem

if TYPE_CHECKING:
    from robusthmc._check import CheckReport

__all__ = ["plural", "render_check", "render_diagnosis", "render_site_problem", "render_values", "where_text"]


def plural(count: int, noun: str) -> str:
    """``"1 transition"``, ``"3 transitions"``.

    Examples
    --------
    >>> plural(1, "attempt"), plural(0, "attempt")
    ('1 attempt', '0 attempts')
    """
    return f"{count} {noun}" if count == 1 else f"{count} {noun}s"


def render_values(values: Mapping[str, object]) -> str:
    """``{s: 1.2, V: array of 3 (...)}`` for a point.

    Examples
    --------
    >>> render_values({"s": 1.25, "V": float("nan")})
    '{s: 1.25, V: nan}'
    """
    return "{" + ", ".join(f"{k}: {format_argument(v)}" for k, v in values.items()) + "}"


def render_site_problem(problem: SiteProblem) -> list[str]:
    """The lines that describe one failing term and its fixes."""
    value = "finite" if problem.value_is_finite else "NOT finite"
    lines = [f"site {problem.site!r} ~ {problem.distribution}"]
    lines.append(f"  log density term: {problem.log_prob:.6g} ({value})")
    if problem.nonfinite_gradient:
        lines.append("  gradient: NaN/inf with respect to latent " + ", ".join(problem.nonfinite_gradient))
    for cause in problem.causes:
        lines.append(f"  cause: {cause.argument}={cause.value}")
        lines.append(f"  fix: {cause.fix}")
    return lines


def where_text(diagnosis: Diagnosis) -> str:
    """``"chain 0, warmup, iteration 12"``: where a failure happened."""
    parts = []
    if diagnosis.chain is not None:
        parts.append(f"chain {diagnosis.chain}")
    parts.append(diagnosis.phase)
    if diagnosis.iteration is not None:
        parts.append(f"iteration {diagnosis.iteration}")
    return ", ".join(parts)


def render_diagnosis(diagnosis: Diagnosis, *, indent: str = "  ") -> str:
    """Several lines: where, the point, the failing terms with causes and fixes."""
    lines = [f"where: {where_text(diagnosis)}"]
    if diagnosis.exception:
        lines.append(f"exception raised by the log density: {diagnosis.exception}")
    lines.append(f"potential energy (minus log density): {diagnosis.potential_energy:.6g}")
    if diagnosis.nonfinite_coordinates:
        lines.append("non-finite gradient coordinates: " + ", ".join(diagnosis.nonfinite_coordinates))
    if diagnosis.position:
        lines.append(f"at (constrained values): {render_values(diagnosis.position)}")
    if diagnosis.sites:
        for problem in diagnosis.sites:
            lines.extend(render_site_problem(problem))
    elif diagnosis.exception is None and diagnosis.source == "potential_fn":
        lines.append(
            "the potential_fn returned a non-finite value or gradient here; robusthmc cannot see "
            "the terms inside a potential_fn: evaluate it and its gradient at this point to find "
            "the one that fails"
        )
    elif diagnosis.exception is None:
        lines.append(
            "no single term is non-finite here: the terms overflowed when added up, or a "
            "gradient so large that the momentum overflowed (a very badly scaled latent)"
        )
    return "\n".join(indent + line for line in lines)


def count_text(counts: Sequence[int], totals: Sequence[int]) -> str:
    """``"3 of 100 warmup, 0 of 100 sampling"``."""
    phases = ("warmup", "sampling")
    return ", ".join(f"{c} of {t} {p}" for c, t, p in zip(counts, totals, phases) if t)


def as_float(value: object) -> float:
    """A Python float from a 0-d array or number."""
    return float(np.asarray(value, dtype=np.float64).reshape(()))


def render_check(report: CheckReport) -> str:
    """The model doctor's report as text: one block per site, problems first line ``PROBLEM``."""
    lines = [f"robusthmc check: {report.model} ({report.backend}), {report.points} points"]
    for site in report.sites:
        status = "PROBLEM" if site.problem else "ok"
        role = f"transform {site.transform}" if site.transform else "observed"
        lines.append(f"{status:8s}{site.site} ~ {site.distribution}; support {site.support}, {role}")
        if site.nonfinite_share:
            respect = f" (gradient w.r.t. {', '.join(site.latents)})" if site.latents else ""
            raised = any(cause.kind == "exception" for cause in site.causes)
            what = (
                "an exception or a non-finite term or gradient" if raised else "non-finite term or gradient"
            )
            lines.append(f"{'':8s}{what} at {site.nonfinite_share:.0%} of the points{respect}")
        for cause in site.causes:
            lines.append(f"{'':8s}cause: {cause.argument} = {cause.value}")
            lines.append(f"{'':8s}fix: {cause.fix}")
    problems = len(report.problems)
    needs = f"{problems} site needs fixing" if problems == 1 else f"{problems} sites need fixing"
    lines.append("clean: no numerical trap found" if not problems else needs)
    return "\n".join(lines)
