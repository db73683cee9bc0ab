"""A log density whose failures end a trajectory, and the diagnosis of a point by its pytree paths."""

from __future__ import annotations

import warnings
from collections.abc import Callable
from typing import Any, Literal

import jax
import jax.numpy as jnp
import numpy as np
from jax.flatten_util import ravel_pytree

from robusthmc._diagnosis import (
    Diagnosis,
    Phase,
    PointEvaluation,
    StopPoint,
    inspect_stop,
    nonfinite_coordinates,
)
from robusthmc._errors import InitializationError
from robusthmc._render import headline, render_diagnosis
from robusthmc.jax._origins import nonfinite_origins

__all__ = [
    "check_position",
    "diagnose_position",
    "guarded_logdensity",
    "is_finite_tree",
    "nan_momentum_where_not_finite",
    "stop_point",
]


def check_callable(value: Any, argument: str, owner: str) -> None:
    """Refuse, by name, an argument that should be a function and is not."""
    if not callable(value):
        raise TypeError(
            f"{owner}({argument}={value!r:.60}): expected a function, e.g. a log density of a position"
        )


def check_position_values(position: Any, argument: str = "position") -> None:
    """Refuse, by name, a position that is not a pytree of numbers; one that is not finite is not a start.

    Examples
    --------
    >>> check_position_values({"x": 1.0})
    >>> check_position_values({"x": "a"})
    Traceback (most recent call last):
    ...
    TypeError: position['x']='a': not a number; a position is a pytree (a dict, a tuple, an array) of numbers
    >>> check_position_values({"x": float("nan")})  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    robusthmc.InitializationError: position['x'] is not finite (nan): a start must be finite numbers; ...
    """
    leaves = jax.tree_util.tree_leaves_with_path(position)
    if not leaves:
        raise ValueError(f"{argument}={position!r:.60}: empty; a position holds at least one number")
    for path, leaf in leaves:
        label = argument + jax.tree_util.keystr(path)
        if isinstance(leaf, jax.core.Tracer):
            continue
        dtype = getattr(leaf, "dtype", None)
        kind = np.dtype(dtype).kind if dtype is not None else np.asarray(leaf).dtype.kind
        if kind not in "fiub" or isinstance(leaf, bool):
            raise TypeError(
                f"{label}={leaf!r:.60}: not a number; a position is a pytree (a dict, a tuple, an array) of numbers"
            )
        if kind != "f":  # JAX differentiates floating-point inputs only
            raise TypeError(
                f"{label}={leaf!r:.60}: integers; a position holds floating-point numbers (e.g. 1.0)"
            )
        given = np.asarray(leaf, dtype=np.float64)
        with warnings.catch_warnings():  # an overflow is what this looks for
            warnings.simplefilter("ignore", RuntimeWarning)
            seen = np.asarray(jnp.asarray(leaf))  # in JAX's float type: float32 unless x64 is enabled
        if not np.all(np.isfinite(given)):
            bad = given[~np.isfinite(given)].flat[0]
            what = f"is not finite ({bad})"
        elif not np.all(np.isfinite(seen)):
            what = f"overflows {seen.dtype} (jax.config.update('jax_enable_x64', True) gives float64)"
        else:
            continue
        raise InitializationError(
            f"{label} {what}: a start must be finite numbers; fix: start where the log density is "
            "defined, e.g. at the prior's median",
            attempts=1,
            values_tried=(),
        )


def guarded_logdensity(logdensity_fn: Callable) -> Callable:
    """``logdensity_fn`` whose gradient is NaN wherever its value is not finite.

    A leapfrog step then makes the momentum NaN, so the trajectory ends there
    and its proposal is rejected (a ``+inf`` log density with a finite
    gradient would otherwise be accepted).  Scaling the tangent by one leaves
    finite gradients bit for bit.  The sign does not matter: a potential
    energy (minus the log density) is guarded the same way.

    Examples
    --------
    >>> import jax, jax.numpy as jnp
    >>> guarded = guarded_logdensity(lambda z: -jnp.log(z))
    >>> float(jax.grad(guarded)(2.0)), float(jax.grad(guarded)(0.0))
    (-0.5, nan)
    """
    check_callable(logdensity_fn, "logdensity_fn", "guarded_logdensity")

    @jax.custom_jvp
    def guarded(position):
        return logdensity_fn(position)

    @guarded.defjvp
    def guarded_jvp(primals, tangents):
        value, tangent = jax.jvp(logdensity_fn, primals, tangents)
        scale = jnp.where(jnp.isfinite(value), 1.0, jnp.nan).astype(jnp.result_type(tangent))
        return value, tangent * scale

    return guarded


def nan_momentum_where_not_finite(momentum: Any, energy: Any) -> Any:
    """``momentum`` with one entry NaN where ``energy`` (a log density or potential) is not finite.

    The leapfrog update of a guarded integrator passes its new momentum
    through this: a non-finite gradient already makes the momentum non-finite,
    a non-finite value with a finite gradient would not (and a ``+inf`` log
    density would be accepted).  One NaN entry is enough: the kinetic energy
    turns NaN, which ends the trajectory and rejects the proposal, and the
    edge's momentum tells the failure apart from a divergence.  Only the
    smallest non-empty leaf is touched, with a select that fuses with its
    update; on finite values it returns the momentum bit for bit.

    The test reduces two copies of ``energy`` instead of reading it: XLA copies
    a cheap elementwise chain (the model's last terms) into every fusion that
    reads its result, and many fusions read the momentum; a reduction's result
    is computed once.

    Examples
    --------
    >>> import jax.numpy as jnp
    >>> nan_momentum_where_not_finite({"a": jnp.ones(2), "b": jnp.ones(())}, jnp.inf)["b"]
    Array(nan, dtype=float32)
    """
    leaves, treedef = jax.tree.flatten(momentum)
    sizes = {k: jnp.size(leaf) for k, leaf in enumerate(leaves) if jnp.size(leaf)}
    if not sizes:
        return momentum
    smallest = min(sizes, key=sizes.__getitem__)
    finite = jnp.all(jnp.isfinite(jnp.stack([energy, energy])), axis=0)
    leaves[smallest] = jnp.where(finite, leaves[smallest], jnp.nan)
    return jax.tree.unflatten(treedef, leaves)


def is_finite_tree(tree: Any) -> jax.Array:
    """Whether every entry of every leaf of ``tree`` is finite (a traced boolean).

    Examples
    --------
    >>> import jax.numpy as jnp
    >>> bool(is_finite_tree({"a": jnp.ones(2), "b": jnp.array(jnp.nan)}))
    False
    """
    return jnp.all(jnp.isfinite(ravel_pytree(tree)[0]))


def labelled_leaves(tree: Any, name: str = "position") -> dict[str, np.ndarray]:
    """Each leaf of ``tree`` by its pytree path under ``name``: ``{"position['tau']": array}``."""
    return {
        name + jax.tree_util.keystr(path): np.asarray(leaf)
        for path, leaf in jax.tree_util.tree_leaves_with_path(tree)
    }


def nonfinite_origin(
    fn: Callable, position: Any, *, name: str = "position"
) -> tuple[str | None, tuple[str, ...]]:
    """Where ``fn``'s NaN or inf at ``position`` was made, and the leaves of ``position`` that feed it.

    ``fn`` is traced to a jaxpr and run one equation at a time
    (:func:`~robusthmc.jax._origins.nonfinite_origins`): the operation that made the
    value's NaN from finite inputs is named by the user's line that called it
    (``"`jnp.log(tau)` gives nan (model.py:12)"``, ``None`` if not the user's), and the
    leaves that feed it by pytree path under ``name``: ``jnp.log(tau)`` at ``tau < 0``
    names ``tau``, ``jnp.where(x > 1, jnp.nan, ...)`` names ``x``.  Nothing where none
    is found (a function it cannot trace again).

    Examples
    --------
    >>> import jax.numpy as jnp
    >>> nonfinite_origin(lambda p: -p["mu"] ** 2 + jnp.log(p["tau"]), {"mu": 0.0, "tau": -1.0})[1]
    ("position['tau']",)
    """
    paths = [name + jax.tree_util.keystr(path) for path, _ in jax.tree_util.tree_leaves_with_path(position)]
    leaves, treedef = jax.tree.flatten(position)
    try:
        closed = jax.make_jaxpr(lambda *args: fn(jax.tree.unflatten(treedef, args)))(*leaves)
        origins = nonfinite_origins(closed, *leaves)
    except Exception:  # a function it cannot trace again or look into: nothing named
        return None, ()
    return origins.first_nonfinite or None, tuple(paths[k] for k in origins.sources)


def diagnose_position(
    logdensity_fn: Callable,
    position: Any,
    *,
    name: str = "position",
    source: Literal["potential_fn", "logdensity_fn"] = "logdensity_fn",
    phase: Phase = "initialization",
    chain: int | None = None,
    iteration: int | None = None,
) -> Diagnosis:
    """The :class:`~robusthmc.Diagnosis` of ``logdensity_fn`` at ``position``.

    A bare function has no sites: the diagnosis names coordinates by their
    pytree path under ``name`` (``position['tau']``, ``position[1]``), those
    that are not finite themselves first, then those whose gradient is not.
    ``source="potential_fn"`` reads the value as minus the log density.

    Examples
    --------
    >>> import jax.numpy as jnp
    >>> d = diagnose_position(lambda p: -p["tau"] ** 2 + jnp.log(p["s"]), {"tau": 1.0, "s": -1.0})
    >>> d.nonfinite_coordinates, d.potential_energy
    (("position['s']",), nan)
    >>> diagnose_position(lambda p: jnp.sum(jnp.sqrt(p)), jnp.array([1.0, 0.0])).nonfinite_coordinates
    ('position[1]',)
    """
    value, gradient = jax.value_and_grad(logdensity_fn)(position)
    values = labelled_leaves(position, name)
    coordinates = dict.fromkeys(nonfinite_coordinates(values))
    coordinates.update(dict.fromkeys(nonfinite_coordinates(labelled_leaves(gradient, name))))
    potential_energy = float(value) if source == "potential_fn" else -float(value)
    if not np.isfinite(potential_energy) and not any(c in coordinates for c in nonfinite_coordinates(values)):
        expression, sources = nonfinite_origin(logdensity_fn, position, name=name)
        coordinates.update(dict.fromkeys(sources))
    else:
        expression = None
    return Diagnosis(
        phase=phase,
        chain=chain,
        iteration=iteration,
        potential_energy=potential_energy,
        nonfinite_coordinates=tuple(coordinates),
        sites=(),
        position=values,
        source=source,
        expression=expression,
    )


def stop_point(logdensity_fn: Callable, position: Any, *, name: str = "position") -> StopPoint:
    """What holds a chain at ``position`` (a drift without bound, float32 that cannot resolve it).

    The core's :func:`~robusthmc._diagnosis.inspect_stop` for a bare function: its
    one term is the log density, and its latents are the position's leaves (by
    pytree path under ``name``), with no prior to measure a drift against.

    Examples
    --------
    >>> import jax.numpy as jnp
    >>> stop = stop_point(lambda p: 0.0 * jnp.sum(p["b"]), {"b": jnp.array([3e19, 1.0])})
    >>> stop.problems[0].causes[0].brief
    "position['b'] drifts to array of 2 (min 1, max 3e+19): the posterior looks improper (nothing bounds position['b'])"
    """
    labels = list(labelled_leaves(position, name))
    treedef = jax.tree.structure(position)
    value_and_grad = jax.jit(jax.value_and_grad(logdensity_fn))

    def evaluate(points):
        evaluations = []
        for point in points:
            value, gradient = value_and_grad(
                jax.tree.unflatten(treedef, [jnp.asarray(point[k]) for k in labels])
            )
            evaluations.append(
                PointEvaluation(
                    values={"logdensity_fn": float(value)},
                    gradients={"logdensity_fn": labelled_leaves(gradient, name)},
                    distributions={},
                    values_in_support={},
                    position=dict(point),
                )
            )
        return evaluations

    leaves = labelled_leaves(position, name)
    dtype = str(np.result_type(*[leaf.dtype for leaf in leaves.values()]))
    return inspect_stop(evaluate, leaves, dtype)


def check_position(logdensity_fn: Callable, position: Any, *, name: str = "position") -> None:
    """Raise :class:`~robusthmc.InitializationError` if ``position`` is not a valid start.

    Valid means the log density and its gradient are finite there.  The error
    names each coordinate (by its pytree path under ``name``) that is not
    finite, or whose gradient is not.

    Examples
    --------
    >>> import jax.numpy as jnp
    >>> check_position(lambda p: -jnp.sum(p["x"] ** 2), {"x": jnp.zeros(2)})
    >>> check_position(lambda p: jnp.log(p["tau"]), {"tau": jnp.array(0.0)})  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    robusthmc.InitializationError: the logdensity_fn is not finite here (NaN/inf in position['tau']): ...
    """
    check_callable(logdensity_fn, "logdensity_fn", "check_position")
    check_position_values(position, name)
    diagnosis = diagnose_position(logdensity_fn, position, name=name)
    if np.isfinite(diagnosis.potential_energy) and not diagnosis.nonfinite_coordinates:
        return
    raise InitializationError(
        f"{headline([diagnosis])} (at the start: {name})\n"
        f"{name} is not a valid starting point: the log density or its gradient is not finite "
        f"there.\n{render_diagnosis(diagnosis)}\n  fix: start where the log density is defined "
        "(inside every support, away from the failing expression).",
        diagnosis=diagnosis,
        attempts=1,
        values_tried=(dict(diagnosis.position),),
    )
