"""Text for people: diagnoses as the lines of an error message, a warning or a report."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

import numpy as np

from robusthmc._causes import format_argument

if TYPE_CHECKING:  # _diagnosis renders through this module: no import back at run time
    from robusthmc._check import CheckReport
    from robusthmc._diagnosis import Diagnosis, SiteProblem

__all__ = [
    "headline",
    "plural",
    "render_check",
    "render_diagnosis",
    "render_site_problem",
    "render_values",
    "where_text",
]


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


def problem_headline(problem: SiteProblem) -> str:
    """The first line for one failing term: its site, what broke and what to change."""
    if problem.causes:
        return problem.causes[0].headline(problem.site)
    if problem.value_is_finite:
        what = f"its gradient is NaN or infinite with respect to {', '.join(problem.nonfinite_gradient)}"
    else:
        what = f"its log density is {problem.log_prob:.6g}"
    return (
        f"site {problem.site!r} ~ {problem.distribution}: {what} here; fix: keep its arguments "
        f"and value inside their domains at every value of the latents (see the point below)"
    )


def _exception_headline(exception: str) -> str:
    lowered = exception.lower()
    if "cholesky" in lowered or "positive-definite" in lowered or "positive definite" in lowered:
        return (
            f"a Cholesky factorisation failed: the matrix is not positive definite for these latents "
            f"({exception}); fix: constrain the latents it is built from, or add jitter to its diagonal"
        )
    return (
        f"the log density raised {exception}; fix: keep the latents where the model's computation "
        f"is defined (constrain them), or catch the case in the model"
    )


def headline(diagnoses: Sequence[Diagnosis]) -> str:
    """One line that names the failing site, what broke and what to change.

    With several failures, the site that fails most often (the first, on a tie)
    is named, and the others counted ("and 2 more sites").

    Examples
    --------
    >>> from robusthmc._causes import Cause
    >>> from robusthmc._diagnosis import Diagnosis, SiteProblem
    >>> cause = Cause("infinite_bound", "high", "inf", "...", "high=inf makes the gradient NaN", "high=None")
    >>> problem = SiteProblem("V", "TruncatedNormal(...)", -1.0, ("s",), (cause,))
    >>> headline([Diagnosis("initialization", 0, None, float("nan"), ("s",), (problem,))])
    "site 'V': high=inf makes the gradient NaN; fix: high=None"
    """
    counts: dict[str, int] = {}
    first: dict[str, SiteProblem] = {}
    for diagnosis in diagnoses:
        for problem in diagnosis.sites:
            counts[problem.site] = counts.get(problem.site, 0) + 1
            first.setdefault(problem.site, problem)
    if counts:
        site = max(counts, key=counts.__getitem__)  # the first of the most frequent
        more = len(counts) - 1
        return problem_headline(first[site]) + (f" (and {plural(more, 'more site')})" if more else "")
    for diagnosis in diagnoses:
        if diagnosis.exception:
            return _exception_headline(diagnosis.exception)
    bare = next((d.source for d in diagnoses if d.source != "model"), None)
    if bare is not None:
        coordinates = dict.fromkeys(c for d in diagnoses for c in d.nonfinite_coordinates)
        at = f" (NaN/inf in {', '.join(coordinates)})" if coordinates else ""
        expression = next((d.expression for d in diagnoses if d.expression), None)
        if expression:
            return (
                f"the {bare} is not finite here{at}: {expression}; fix: keep the position in that "
                "expression's domain (sample the parameter on an unconstrained scale, e.g. log sigma), or guard it"
            )
        return f"the {bare} is not finite here{at}; fix: guard the expression in it that fails at the point below"
    if diagnoses:
        return (
            "no single term is non-finite: the terms overflowed when added up, or the momentum "
            "did; fix: put the latents on a unit scale (reparameterize)"
        )
    return (
        "a non-finite log density or gradient, not attributed to a site here; fix: "
        "robusthmc.check(model) names the failing site and its fix"
    )


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
    if diagnosis.expression:
        lines.append(f"first non-finite operation: {diagnosis.expression}")
    if diagnosis.nonfinite_coordinates:
        lines.append("non-finite gradient coordinates: " + ", ".join(diagnosis.nonfinite_coordinates))
    if diagnosis.position:
        values = "at" if diagnosis.source != "model" else "at (constrained values)"
        lines.append(f"{values}: {render_values(diagnosis.position)}")
    if diagnosis.sites:
        for problem in diagnosis.sites:
            lines.extend(render_site_problem(problem))
    elif diagnosis.exception is None and diagnosis.source != "model":
        if not diagnosis.expression:  # else the line of the first non-finite operation says it
            lines.append(
                f"the {diagnosis.source} returned a non-finite value or gradient here; robusthmc cannot "
                f"see the terms inside a {diagnosis.source}: evaluate it and its gradient at this point "
                "to find the one that fails"
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
    problems = report.problems
    if not problems:
        lines.append("clean: no numerical trap found")
        return "\n".join(lines)
    needs = "1 site needs fixing" if len(problems) == 1 else f"{len(problems)} sites need fixing"
    worst = max(problems, key=lambda site: site.nonfinite_share)  # the first of those failing most
    if worst.causes:
        said = worst.causes[0].headline(worst.site)
    else:
        said = (
            f"site {worst.site!r}: non-finite term or gradient at {worst.nonfinite_share:.0%} of the points; "
            f"fix: keep its arguments and value inside their domains (see its block above)"
        )
    lines.append(f"{needs}: {said}")
    return "\n".join(lines)
