"""Points for the model doctor (:func:`robusthmc.check`), Pyro side."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import pyro
import torch
from pyro import poutine
from pyro.poutine.util import site_is_subsample
from torch.distributions import biject_to

from robusthmc._diagnosis import PointEvaluation
from robusthmc.pyro._sites import evaluate_point


def evaluate_model(
    model: Callable, args: tuple, kwargs: Mapping[str, Any], *, points: int, seed: int
) -> tuple[list[PointEvaluation], list[tuple[str, str, str, bool]]]:
    """Evaluate every term at ``points`` prior draws and ``points`` uniform(-2, 2) unconstrained points."""
    pyro.set_rng_seed(seed)
    with pyro.validation_enabled(False):
        traces = [poutine.trace(model).get_trace(*args, **kwargs) for _ in range(points)]
    prototype = traces[0]
    latents: dict[str, Any] = {
        name: site["fn"]
        for name, site in prototype.nodes.items()
        if site["type"] == "sample"
        and not site_is_subsample(site)
        and not site["is_observed"]
        and not site["fn"].support.is_discrete  # type: ignore[attr-defined]
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
    evaluations = [evaluate_point(model, args, kwargs, transforms, z) for z in unconstrained]
    sites = []
    for name, site in prototype.nodes.items():
        if site["type"] != "sample" or site_is_subsample(site):
            continue
        fn: Any = site["fn"]
        observed = bool(site["is_observed"])
        transform = "" if observed else type(biject_to(fn.support)).__name__
        sites.append((name, repr(fn.support), transform, observed))
    return [e for e in evaluations if e is not None], sites
