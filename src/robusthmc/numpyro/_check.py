"""Points for the model doctor (:func:`robusthmc.check`), NumPyro side."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import numpyro
from numpyro import handlers
from numpyro.distributions.transforms import biject_to
from numpyro.infer import init_to_uniform
from numpyro.infer.util import log_density

from robusthmc._diagnosis import PointEvaluation
from robusthmc.numpyro._sites import (
    SiteEvaluator,
    as_potential_sees_it,
    param_values,
    quietly,
    unconstrained_latents,
)


def as_data(value: Any) -> Any:
    """A JSON list of numbers as an array, the way a model receives data; anything else unchanged."""
    if isinstance(value, list):
        array = np.asarray(value)
        if array.dtype.kind in "iuf":
            return jnp.asarray(array, dtype=jnp.result_type(float))
    return value


def _prior_draw(site: dict) -> Any:
    """A latent's prior draw, or a uniform(-2, 2) unconstrained point where it has none.

    A distribution that cannot draw (``ImproperUniform``) is started where numpyro's
    ``init_to_uniform`` starts it.
    """
    if site["type"] != "sample" or site["is_observed"] or site["value"] is not None:
        return None
    try:
        return site["fn"](rng_key=site["kwargs"]["rng_key"], sample_shape=site["kwargs"]["sample_shape"])
    except NotImplementedError:
        return init_to_uniform(site)


def _at_prior_draws(model: Callable, key: Any) -> Callable:
    return handlers.substitute(handlers.seed(model, key), substitute_fn=_prior_draw)


def rehearse(model: Callable, args: tuple, kwargs: Mapping[str, Any]) -> None:
    """Run the model once at a prior draw and sum its log density: the user's own errors surface here."""
    with numpyro.validation_enabled(False):
        log_density(_at_prior_draws(model, 0), args, dict(kwargs), {})


def evaluate_model(
    model: Callable, args: tuple, kwargs: Mapping[str, Any], *, points: int, seed: int
) -> tuple[list[PointEvaluation], list[tuple[str, str, str, bool]]]:
    """Evaluate every term at ``points`` prior draws and ``points`` uniform(-2, 2) unconstrained points."""
    keys = jax.random.split(jax.random.key(seed), points + 1)
    traces = quietly(
        lambda: [
            handlers.trace(_at_prior_draws(model, key)).get_trace(*args, **kwargs) for key in keys[:points]
        ]
    )
    prototype = traces[0]
    latents = {
        name: site
        for name, site in prototype.items()
        if site["type"] == "sample" and not site["is_observed"] and not site["fn"].support.is_discrete
    }
    unconstrained = [unconstrained_latents(model_trace) for model_trace in traces]
    uniform_keys = jax.random.split(keys[points], len(latents) or 1)
    for index in range(points):
        point = {}
        for (name, _), key in zip(latents.items(), uniform_keys):
            shape = jax.numpy.shape(unconstrained[0][name])
            point[name] = jax.random.uniform(jax.random.fold_in(key, index), shape, minval=-2.0, maxval=2.0)
        unconstrained.append(point)
    prepared = as_potential_sees_it(model, param_values(prototype))
    evaluations = SiteEvaluator(prepared, args, kwargs).evaluate(unconstrained)
    sites = []
    for name, site in prototype.items():
        if site["type"] != "sample" or name.startswith("_"):
            continue
        support = site["fn"].support
        observed = bool(site["is_observed"])
        transform = "" if observed else type(biject_to(support)).__name__
        sites.append((name, repr(support), transform, observed))
    return evaluations, sites
