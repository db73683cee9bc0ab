"""Model initialisation with a capped, explained search for a valid starting point.

:func:`initialize_model` mirrors :func:`numpyro.infer.util.initialize_model`
(numpyro 0.22, ``dynamic_args=True``) and draws the same initial points for
the same key; the search is capped by ``Guard.max_init_attempts`` instead of
numpyro's fixed 100, remembers the first and last points it tried, and a
failure becomes an :class:`~robusthmc.InitializationError` that names the
sites, latents, distributions and fixes.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import Any, NamedTuple, TypeVar

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax, random, value_and_grad
from numpyro import distributions as dist
from numpyro.handlers import seed, substitute, trace
from numpyro.infer.initialization import init_to_uniform, init_to_value
from numpyro.infer.util import (
    ParamInfo,
    _get_model_transforms,
    _init_to_unconstrained_value,
    _prepare_model_for_potential,
    get_potential_fn,
    helpful_support_errors,
    potential_energy,
    transform_fn,
)
from numpyro.util import is_prng_key, not_jax_tracer, while_loop

from robusthmc._outcome import initialization_error, invalid_start_error
from robusthmc.numpyro._sites import diagnose_points

__all__ = ["ModelSetup", "initialize_model", "raise_initialization_error", "unvalidated_on_rejection"]


T = TypeVar("T")


class ModelSetup(NamedTuple):
    """What the kernels need from the model, plus how the initial-point search went."""

    param_info: ParamInfo
    potential_fn_gen: Callable
    postprocess_fn_gen: Callable
    model_trace: dict
    prepared_model: Callable
    is_valid: Any
    attempts: Any
    first_params: Any
    rejected_start: ValueError | None


def initialize_model(
    rng_key: Any,
    model: Callable,
    *,
    init_strategy: Callable = init_to_uniform,
    model_args: tuple = (),
    model_kwargs: dict | None = None,
    forward_mode_differentiation: bool = False,
    max_attempts: int = 100,
) -> ModelSetup:
    """Numpyro's ``initialize_model(..., dynamic_args=True)`` with a capped search.

    Unlike numpyro it does not raise: the caller checks ``is_valid`` (which may
    be traced, under ``pmap``) and calls :func:`raise_initialization_error`.
    """
    model_kwargs = {} if model_kwargs is None else model_kwargs
    substituted_model = substitute(
        seed(model, rng_key if is_prng_key(rng_key) else rng_key[0]),
        substitute_fn=init_strategy,
    )
    # A first point the distributions reject is a bad point, not a bad model.
    (inv_transforms, replay_model, has_enumerate_support, model_trace), rejected_start = (
        unvalidated_on_rejection(partial(_get_model_transforms, substituted_model, model_args, model_kwargs))
    )
    for name, site in model_trace.items():
        if site["type"] == "sample" and isinstance(site["fn"], dist.Delta) and not site["is_observed"]:
            raise ValueError(
                f"Sample site '{name}' has a delta distribution; use "
                "`numpyro.deterministic` to add this value to the trace instead."
            )
    prepared_model = _prepare_model_for_potential(model, model_trace, enum=has_enumerate_support)
    constrained_values = {
        k: v["value"]
        for k, v in model_trace.items()
        if v["type"] == "sample" and not v["is_observed"] and not v["fn"].support.is_discrete
    }
    potential_fn_gen, postprocess_fn_gen = get_potential_fn(
        prepared_model,
        inv_transforms,
        replay_model=replay_model,
        enum=has_enumerate_support,
        dynamic_args=True,
        model_args=model_args,
        model_kwargs=model_kwargs,
    )
    init_strategy = init_strategy if isinstance(init_strategy, partial) else init_strategy()
    if (init_strategy.func is init_to_value) and not replay_model:
        init_values = init_strategy.keywords.get("values")
        unconstrained_values = transform_fn(inv_transforms, init_values, invert=True)
        init_strategy = _init_to_unconstrained_value(values=unconstrained_values)
    prototype_params = transform_fn(inv_transforms, constrained_values, invert=True)
    search_model = substitute(
        prepared_model,
        data={k: site["value"] for k, site in model_trace.items() if site["type"] in ["plate"]},
    )
    search = partial(
        _find_initial_params,
        rng_key,
        search_model,
        init_strategy=init_strategy,
        enum=has_enumerate_support,
        model_args=model_args,
        model_kwargs=model_kwargs,
        prototype_params=prototype_params,
        forward_mode_differentiation=forward_mode_differentiation,
        max_attempts=max_attempts,
    )
    ((init_params, pe, grad), is_valid, attempts, first_params), rejected = unvalidated_on_rejection(search)
    rejected_start = rejected_start or rejected
    return ModelSetup(
        ParamInfo(init_params, pe, grad),
        potential_fn_gen,
        postprocess_fn_gen,
        model_trace,
        prepared_model,
        is_valid,
        attempts,
        first_params,
        rejected_start,
    )


def _find_initial_params(
    rng_key,
    model,
    *,
    init_strategy,
    enum,
    model_args,
    model_kwargs,
    prototype_params,
    forward_mode_differentiation,
    max_attempts,
):
    """Numpyro's ``find_valid_initial_params`` with ``max_attempts`` and a memory of the first try."""
    if init_strategy.func is init_to_uniform:
        radius = init_strategy.keywords.get("radius")
        init_values: dict = {}
    elif init_strategy.func is _init_to_unconstrained_value:
        radius = 2
        init_values = init_strategy.keywords.get("values")
    else:
        radius = None

    def cond_fn(state):
        i, _, _, is_valid, _ = state
        return (i < max_attempts) & (~is_valid)

    def body_fn(state):
        i, key, _, _, first = state
        key, subkey = random.split(key)
        if radius is None or prototype_params is None:
            model_ = model
            if enum:
                from numpyro.contrib.funsor import enum as enum_handler

                if isinstance(model, substitute) and isinstance(model.fn, enum_handler):
                    model_ = substitute(model.fn.fn, data=model.data)
                elif isinstance(model, enum_handler):
                    model_ = model.fn
            seeded_model = substitute(seed(model_, subkey), substitute_fn=init_strategy)
            model_trace = trace(seeded_model).get_trace(*model_args, **model_kwargs)
            constrained_values, inv_transforms = {}, {}
            for k, v in model_trace.items():
                if v["type"] == "sample" and not v["is_observed"] and not v["fn"].support.is_discrete:
                    constrained_values[k] = v["value"]
                    with helpful_support_errors(v):
                        inv_transforms[k] = dist.biject_to(v["fn"].support)
            params = transform_fn(inv_transforms, dict(constrained_values), invert=True)
        else:
            params = {}
            for k, v in prototype_params.items():
                if k in init_values:
                    params[k] = init_values[k]
                else:
                    params[k] = random.uniform(subkey, jnp.shape(v), minval=-radius, maxval=radius)
                    key, subkey = random.split(key)

        potential_fn = partial(potential_energy, model, model_args, model_kwargs, enum=enum)
        if forward_mode_differentiation:
            pe = potential_fn(params)
            z_grad = jax.jacfwd(potential_fn)(params)
        else:
            pe, z_grad = value_and_grad(potential_fn)(params)
        z_grad_flat = jax.flatten_util.ravel_pytree(z_grad)[0]
        is_valid = jnp.isfinite(pe) & jnp.all(jnp.isfinite(z_grad_flat))
        first = jax.tree.map(lambda f, p: jnp.where(i == 0, p, f), first, params)
        return i + 1, key, (params, pe, z_grad), is_valid, first

    def find(rng_key, exit_early=False):
        init_state = (0, rng_key, (prototype_params, 0.0, prototype_params), False, prototype_params)
        if exit_early and not_jax_tracer(rng_key):
            # Single chain: try once eagerly, compile the loop only if needed.
            init_state = body_fn(init_state)
            if not_jax_tracer(init_state[3]) and bool(init_state[3]):
                i, _, info, is_valid, first = init_state
                return info, is_valid, jnp.asarray(i), first
        i, _, info, is_valid, first = while_loop(cond_fn, body_fn, init_state)
        return info, is_valid, jnp.asarray(i), first

    if is_prng_key(rng_key):
        return find(rng_key, exit_early=True)
    return lax.map(find, rng_key)


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
        if "distribution got invalid" not in str(error):
            raise
        with dist.distribution.validation_enabled(False):
            return run(), error


def raise_initialization_error(
    setup: ModelSetup,
    *,
    model_args: tuple,
    model_kwargs: dict,
    max_attempts: int,
    chain: int | None = None,
    given: str | None = None,
) -> None:
    """Raise the :class:`~robusthmc.InitializationError` for a failed search.

    ``given`` names the values the user chose to start from, if the search only
    had those (``init_to_value``).
    """
    params = setup.param_info.z
    first = setup.first_params
    if chain is not None:
        params = jax.tree.map(lambda leaf: leaf[chain], params)
        first = jax.tree.map(lambda leaf: leaf[chain], first)
        attempts = int(np.asarray(setup.attempts)[chain])
    else:
        attempts = int(np.asarray(setup.attempts))
    # Both points in one compiled evaluation: the search's last point and its first.
    diagnosis, first_try = diagnose_points(
        setup.prepared_model,
        model_args,
        model_kwargs,
        [params, first],
        [("initialization", chain, None)] * 2,
    )
    if given is not None:
        raise invalid_start_error(
            diagnosis, given=given, instead="pass another init_strategy (init_to_uniform searches)"
        ) from setup.rejected_start
    raise initialization_error(
        diagnosis,
        attempts=attempts,
        max_attempts=max_attempts,
        values_tried=(first_try.position, diagnosis.position),
    ) from setup.rejected_start
