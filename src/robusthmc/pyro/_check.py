"""Points for the model doctor (:func:`robusthmc.check`), Pyro side."""

from __future__ import annotations

import traceback
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import pyro
import torch
from pyro import poutine
from pyro.poutine.trace_struct import Trace
from pyro.poutine.util import site_is_subsample
from torch.distributions import biject_to

from robusthmc._causes import Cause
from robusthmc._diagnosis import PointEvaluation, SiteProblem
from robusthmc._guard import Guard
from robusthmc.pyro._potential import is_numerical_exception, outside_support
from robusthmc.pyro._sites import evaluate_point, latent_sites


def _run(
    model: Callable, args: tuple, kwargs: Mapping[str, Any], values: Mapping[str, Any] | None = None
) -> tuple[Trace, BaseException | None]:
    """The model's trace (latents at ``values``, or prior draws), and the numerical exception it raised.

    A numerical exception leaves the trace of the sites reached before it; any
    other exception is the user's bug and propagates.
    """
    tracer = poutine.trace(poutine.condition(model, data=dict(values)) if values else model)
    try:
        return tracer.get_trace(*args, **kwargs), None
    except Exception as error:
        if not is_numerical_exception(error, Guard()):
            raise
        return tracer.msngr.trace, error


def _raised_at(model: Callable, trace: Trace, error: BaseException, order: Sequence[str]) -> PointEvaluation:
    """The finding for a point where the model raised: the first site it had not reached."""
    reached = [name for name, site in trace.nodes.items() if site["type"] == "sample"]
    pending = [name for name in order if name not in reached]
    site = pending[0] if pending else f"(the site after {reached[-1]})" if reached else "(the first site)"
    computing = site if site.startswith("(") else f"the arguments of {site}"
    code = getattr(model, "__code__", None)
    lines = [
        f.lineno for f in traceback.extract_tb(error.__traceback__) if code and f.filename == code.co_filename
    ]
    where = f" at line {lines[-1]} of {code.co_filename}" if lines and code else ""
    kind = type(error).__name__.lstrip("_")  # torch names its LinAlgError _LinAlgError
    text = f"{kind}: {str(error).splitlines()[0] if str(error) else ''}".rstrip(": ")
    fix = (
        f"the model raised {kind}{where} while computing {computing}, "
        f"after drawing {', '.join(reached) or 'nothing'}: constrain those latents so the "
        f"computation is defined everywhere in their support (a matrix that must be positive "
        f"definite: correlations in (-1, 1), or jitter on its diagonal)"
    )
    position = {name: _as_array(trace.nodes[name]["value"]) for name in reached}
    problem = SiteProblem(site, "?", float("nan"), (), (Cause("exception", site, text, fix),))
    return PointEvaluation({}, {}, {}, {}, position, raised=problem)


def _as_array(value: Any) -> np.ndarray:
    return value.detach().numpy() if isinstance(value, torch.Tensor) else np.asarray(value)


def as_data(value: Any) -> Any:
    """A JSON list of numbers as a tensor, the way a model receives data; anything else unchanged."""
    if isinstance(value, list):
        array = np.asarray(value)
        if array.dtype.kind in "iuf":
            return torch.as_tensor(array, dtype=torch.get_default_dtype())
    return value


def rehearse(model: Callable, args: tuple, kwargs: Mapping[str, Any]) -> None:
    """Run the model once at a prior draw and sum its log density: the user's own errors surface here.

    A numerical exception is left to the doctor, which reports it as a finding, as are
    observed data outside the support (torch may fail on them: a label K of K categories).
    """
    with pyro.validation_enabled(False):
        trace, error = _run(model, args, kwargs)
        if error is None:
            trace.log_prob_sum(lambda name, site: not (site["is_observed"] and outside_support(site)))


def evaluate_model(
    model: Callable, args: tuple, kwargs: Mapping[str, Any], *, points: int, seed: int
) -> tuple[list[PointEvaluation], list[tuple[str, str, str, bool]]]:
    """Evaluate every term at ``points`` prior draws and ``points`` uniform(-2, 2) unconstrained points.

    Where the model raises a numerical exception (a failed Cholesky), the point
    is a finding for the site whose arguments were being computed.
    """
    pyro.set_rng_seed(seed)
    with pyro.validation_enabled(False):
        runs = [_run(model, args, kwargs) for _ in range(points)]
    complete = [trace for trace, error in runs if error is None]
    if not complete:  # every prior draw raised: report that, at the sites they reached
        (trace, error), *_ = runs
        order = [name for name, site in trace.nodes.items() if site["type"] == "sample"]
        findings = [_raised_at(model, trace, error, order) for trace, error in runs if error is not None]
        pending = {problem.site for finding in findings for problem in finding.problems()} - set(order)
        return findings, _site_rows(trace) + [(name, "?", "", False) for name in sorted(pending)]
    traces = complete
    prototype = traces[0]
    order = [name for name, site in prototype.nodes.items() if site["type"] == "sample"]
    raised = [_raised_at(model, trace, error, order) for trace, error in runs if error is not None]
    latents: dict[str, Any] = {
        name: site["fn"]
        for name, site in latent_sites(prototype).items()
        if not site["fn"].support.is_discrete  # type: ignore[attr-defined]
    }
    transforms = {name: biject_to(fn.support).inv for name, fn in latents.items()}
    unconstrained = [
        {name: transforms[name](model_trace.nodes[name]["value"]).detach() for name in latents}
        for model_trace in traces
    ]
    generator = torch.Generator().manual_seed(seed)
    for _ in range(points):
        point = {}
        for name in latents:
            shape = unconstrained[0][name].shape
            point[name] = torch.rand(shape, generator=generator, dtype=unconstrained[0][name].dtype) * 4 - 2
        unconstrained.append(point)
    evaluations: list[PointEvaluation | None] = list(raised)
    for z in unconstrained:
        evaluation = evaluate_point(model, args, kwargs, transforms, z)
        if evaluation is None:  # the model raised here: a numerical exception is a finding
            values = {name: transforms[name].inv(value) for name, value in z.items()}
            with pyro.validation_enabled(False):
                trace, error = _run(model, args, kwargs, values)
            evaluation = _raised_at(model, trace, error, order) if error is not None else None
        evaluations.append(evaluation)
    return [e for e in evaluations if e is not None], _site_rows(prototype)


def _site_rows(trace: Trace) -> list[tuple[str, str, str, bool]]:
    """``(name, support, transform, observed)`` of each sample site of a trace."""
    rows = []
    for name, site in trace.nodes.items():
        if site["type"] != "sample" or site_is_subsample(site):
            continue
        fn: Any = site["fn"]
        observed = bool(site["is_observed"])
        transform = "" if observed else type(biject_to(fn.support)).__name__
        rows.append((name, repr(fn.support), transform, observed))
    return rows
