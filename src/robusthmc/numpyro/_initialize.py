"""Model initialisation: numpyro's own search, and an explained failure.

The guarded kernels initialise a model exactly as numpyro's do (numpyro's
:func:`~numpyro.infer.util.initialize_model`, whose search tries
:data:`NUMPYRO_INIT_ATTEMPTS` points), so the starting points, and the draws,
are numpyro's.  Where the search finds no valid point numpyro raises a generic
``RuntimeError``; :func:`raise_initialization_error` raises an
:class:`~robusthmc.InitializationError` instead, which names the sites,
latents, distributions and fixes, diagnosed at starting points drawn the way
numpyro's search draws them.
"""

from __future__ import annotations

import functools
import math
from collections import OrderedDict
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

import jax
import numpy as np
import numpyro
from numpyro.handlers import seed, substitute, trace
from numpyro.infer.initialization import init_to_value
from numpyro.infer.util import constrain_fn
from numpyro.util import is_prng_key

from robusthmc._diagnosis import Diagnosis, start_outside_support
from robusthmc._outcome import initialization_error, invalid_start_error
from robusthmc._render import render_values
from robusthmc.numpyro._sites import (
    SiteEvaluator,
    Where,
    as_potential_sees_it,
    latents_outside_support,
    param_values,
    quietly,
    unconstrained_latents,
)

__all__ = [
    "NUMPYRO_INIT_ATTEMPTS",
    "NoValidStart",
    "constrained",
    "raise_initialization_error",
    "searched",
    "site_evaluator",
    "starting_trace",
    "unvalidated_on_rejection",
]

#: The points numpyro's ``find_valid_initial_params`` tries before it gives up.
NUMPYRO_INIT_ATTEMPTS = 100

T = TypeVar("T")


class NoValidStart(Exception):
    """numpyro's initialisation found no valid starting point; ``cause`` is what it raised."""

    def __init__(self, cause: Exception) -> None:
        super().__init__(str(cause))
        self.cause = cause


def _rejected_arguments(error: Exception) -> bool:
    return isinstance(error, ValueError) and "distribution got invalid" in str(error)


def _no_valid_point(error: Exception) -> bool:
    return isinstance(error, RuntimeError) and "Cannot find valid initial parameters" in str(error)


def unvalidated_on_rejection(run: Callable[[], T]) -> tuple[T, ValueError | None]:
    """``run()`` as numpyro runs it, and None; or, if a distribution rejected its arguments, unvalidated.

    numpyro validates distribution arguments on concrete values and raises a
    ``ValueError`` at a point where, say, a scale is NaN.  Such a point is
    invalid, which the guard reports; so ``run()`` is repeated with validation
    off, and the rejection is returned as the cause to chain.  Healthy runs are
    numpyro's own, validated (the compiled graph, and so the draws, unchanged).
    """
    try:
        return run(), None
    except ValueError as error:
        if not _rejected_arguments(error):
            raise
        with numpyro.validation_enabled(False):
            return run(), error


def searched(run: Callable[[], T]) -> T:
    """``run()``, numpyro's initialisation, unvalidated where a point was rejected (see above).

    Raises :class:`NoValidStart` where numpyro's search finds no valid point
    (numpyro validates the model once more before it gives up: that rejection
    means the same).
    """
    try:
        return unvalidated_on_rejection(run)[0]
    except (ValueError, RuntimeError) as error:
        if _no_valid_point(error) or _rejected_arguments(error):
            raise NoValidStart(error) from error
        raise


def starting_trace(
    model: Callable, key: Any, init_strategy: Callable, model_args: tuple, model_kwargs: Mapping[str, Any]
) -> dict:
    """The model's trace where ``init_strategy`` draws the latents at ``key``, as numpyro's initialisation traces it.

    Its ``param`` values are the ones numpyro's potential energy uses (at the run's key).
    """
    seeded = substitute(seed(model, key if is_prng_key(key) else key[0]), substitute_fn=init_strategy)
    return quietly(lambda: trace(seeded).get_trace(*model_args, **model_kwargs))


#: The latest few compiled evaluators, with what they were built from (kept alive, so
#: that the ids in their keys stay unique).
_EVALUATORS: OrderedDict[tuple, tuple[SiteEvaluator, tuple]] = OrderedDict()
_EVALUATORS_KEPT = 4


def site_evaluator(
    model: Callable,
    params: Mapping[str, Any],
    model_args: tuple,
    model_kwargs: Mapping[str, Any],
    batch_size: int,
) -> SiteEvaluator:
    """The compiled :class:`SiteEvaluator` for this model and data, reused across kernels and runs.

    Keyed on the identity of the user's model and data and on the values of its
    ``param`` sites (``params``, see :func:`starting_trace`): a notebook that runs a failing
    model again gets its diagnosis without compiling again.
    """
    key = (
        id(model),
        *map(id, model_args),
        *sorted((name, id(value)) for name, value in model_kwargs.items()),
        *(
            (jax.tree_util.keystr(path), np.asarray(leaf).tobytes())
            for path, leaf in jax.tree_util.tree_leaves_with_path(params)
        ),
        batch_size,
    )
    if key in _EVALUATORS:
        _EVALUATORS.move_to_end(key)
        return _EVALUATORS[key][0]
    evaluator = SiteEvaluator(as_potential_sees_it(model, params), model_args, model_kwargs, batch_size)
    _EVALUATORS[key] = (evaluator, (model, model_args, dict(model_kwargs)))
    while len(_EVALUATORS) > _EVALUATORS_KEPT:
        _EVALUATORS.popitem(last=False)
    return evaluator


def constrained(
    model: Callable, rng_key: Any, model_args: tuple, model_kwargs: Mapping[str, Any], params: Any
) -> dict:
    """The constrained values of the unconstrained latents ``params``."""
    key = rng_key if is_prng_key(rng_key) else rng_key[0]
    return quietly(lambda: constrain_fn(seed(model, key), model_args, dict(model_kwargs), params))


def raise_initialization_error(
    model: Callable,
    rng_key: Any,
    *,
    init_strategy: Callable,
    model_args: tuple,
    model_kwargs: Mapping[str, Any],
    cause: Exception,
) -> None:
    """Raise the :class:`~robusthmc.InitializationError` for a search that found no valid point.

    Two starting points per chain are drawn as numpyro's search draws them (at
    the chain's key and at a key split from it) and diagnosed in one compiled
    evaluation; the error names the first chain with a point that fails.
    """
    batched = not is_prng_key(rng_key)
    keys = list(rng_key) if batched else [rng_key]
    where: list[Where] = []
    traces = []
    for chain, key in enumerate(keys):
        for k in (key, jax.random.split(key)[1]):
            traces.append(starting_trace(model, k, init_strategy, model_args, model_kwargs))
            where.append(("initialization", chain if batched else None, None))
    points = [unconstrained_latents(model_trace) for model_trace in traces]
    evaluator = site_evaluator(model, param_values(traces[0]), model_args, model_kwargs, len(points))
    diagnoses = evaluator.diagnose(points, where)
    pairs = [(diagnoses[k], diagnoses[k + 1]) for k in range(0, len(diagnoses), 2)]
    first_try, diagnosis = next((pair for pair in pairs if any(map(_fails, pair))), pairs[0])
    if _fails(first_try) and not _fails(diagnosis):
        first_try, diagnosis = diagnosis, first_try
    chosen = isinstance(init_strategy, functools.partial) and init_strategy.func is init_to_value
    values = init_strategy.keywords.get("values") if chosen else None  # type: ignore[attr-defined]
    if outside := latents_outside_support(traces[0], given=values or ()):  # a start the user gave
        diagnosis = start_outside_support(diagnosis, outside)
    if values:
        raise invalid_start_error(
            diagnosis,
            given=f"init_to_value(values={render_values(values)})",
            instead="pass another init_strategy (init_to_uniform searches)",
        ) from cause
    raise initialization_error(
        diagnosis,
        attempts=NUMPYRO_INIT_ATTEMPTS,
        search="numpyro's initialize_model",
        values_tried=(first_try.position, diagnosis.position),
    ) from cause


def _fails(diagnosis: Diagnosis) -> bool:
    return not math.isfinite(diagnosis.potential_energy) or bool(diagnosis.nonfinite_coordinates)
