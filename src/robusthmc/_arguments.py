"""Argument rules both backends share: the kernels' numeric options, the truncated normal's arguments.

The backends convert their own arrays (a jax tracer or a tensor that needs a
gradient cannot be inspected here) and hand concrete values to these checks.
"""

from __future__ import annotations

import difflib
import inspect
import math
import numbers
import warnings
from collections.abc import Mapping
from typing import Any

import numpy as np

from robusthmc._errors import InfiniteBoundWarning, user_stacklevel

__all__ = ["check_kernel_options", "check_numeric", "check_start", "normalize_bound"]

#: Deeper NUTS trees than this (2**30 leapfrog steps in one transition) never finish.
MAX_TREE_DEPTH = 30


#: What :func:`_real` gives for a value that cannot be inspected (a jax tracer, under ``jit``).
_TRACED = object()


def _real(value: Any) -> Any:
    """``value`` as a float if it is one real number (a NumPy or 0-d array too), else None.

    A value that cannot be inspected gives ``_TRACED``: it passes every check.
    """
    if isinstance(value, bool):
        return None
    if isinstance(value, numbers.Real):
        return float(value)
    try:
        array = np.asarray(value)
    except Exception:  # a tracer: checked where it is concrete
        return _TRACED
    return float(array) if array.ndim == 0 and array.dtype.kind in "iuf" else None


def _positive(value: Any) -> bool:
    real = _real(value)
    return real is _TRACED or (real is not None and math.isfinite(real) and real > 0)


def _count(value: Any, limit: int) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool) and 1 <= int(value) <= limit


def check_kernel_options(upstream: type, args: tuple, kwargs: Mapping[str, Any]) -> None:
    """Raise a ``ValueError`` naming the first numeric option of an HMC/NUTS kernel that cannot work.

    ``args`` and ``kwargs`` are those given to the guarded kernel for the
    ``upstream`` class (numpyro's or Pyro's ``NUTS``/``HMC``); options absent
    are not checked.

    Examples
    --------
    >>> class NUTS:
    ...     def __init__(self, model=None, step_size=1.0, target_accept_prob=0.8): ...
    >>> check_kernel_options(NUTS, (), {"step_size": 0.1})
    >>> check_kernel_options(NUTS, (None,), {"target_accept_prob": 1.5})
    Traceback (most recent call last):
    ...
    ValueError: NUTS(target_accept_prob=1.5): must be a number strictly between 0 and 1, e.g. 0.8
    """
    from robusthmc._guard import Guard

    owner, signature = upstream.__name__, inspect.signature(upstream)
    try:
        options = signature.bind(*args, **kwargs).arguments
    except TypeError as error:
        unknown = [name for name in kwargs if name not in signature.parameters]
        if not unknown:
            raise TypeError(f"{owner}(): {error}") from None
        known = [*signature.parameters, "guard"]
        close = difflib.get_close_matches(unknown[0], known, n=1)
        hint = f"did you mean {close[0]}=...?" if close else f"its arguments are {', '.join(known)}"
        raise TypeError(f"{owner}() got an unexpected keyword argument {unknown[0]!r}; {hint}") from None

    def refuse(name: str, rule: str) -> None:
        raise ValueError(f"{owner}({name}={options[name]!r}): {rule}")

    step_size = options.get("step_size", 1.0)
    if not _positive(step_size) and not (step_size is None and upstream.__module__.startswith("pyro.")):
        # Pyro searches for a step size where it is None; numpyro needs a number.
        refuse("step_size", "must be a finite number > 0, e.g. 1.0 (adapted during warmup)")
    length = options.get("trajectory_length")
    if length is not None and not _positive(length):
        refuse("trajectory_length", "must be a finite number > 0, or None")
    steps = options.get("num_steps")
    limit = Guard.LIMITS["max_steps_per_transition"]
    if steps is not None and not _count(steps, limit):
        refuse("num_steps", f"must be an integer from 1 to {limit}, or None")
    accept = _real(options.get("target_accept_prob", 0.8))
    if accept is not _TRACED and (accept is None or not 0 < accept < 1):
        refuse("target_accept_prob", "must be a number strictly between 0 and 1, e.g. 0.8")
    depth = options.get("max_tree_depth", 10)
    depths = depth if isinstance(depth, tuple) and len(depth) == 2 else (depth,)
    if not all(_count(d, MAX_TREE_DEPTH) for d in depths):
        refuse("max_tree_depth", f"must be an integer from 1 to {MAX_TREE_DEPTH} (2**depth leapfrog steps)")


def check_numeric(value: Any, name: str, owner: str = "TruncatedNormal") -> None:
    """Raise a ``TypeError`` naming ``name`` unless ``value`` is a number or an array of numbers.

    Examples
    --------
    >>> check_numeric([0.0, 1], "low")
    >>> check_numeric("0", "low")
    Traceback (most recent call last):
    ...
    TypeError: TruncatedNormal got low='0': expected a number or an array of numbers (e.g. low=0.0)
    """
    try:
        kind = "U" if isinstance(value, (str, bytes)) else np.asarray(value).dtype.kind
    except (TypeError, ValueError):
        kind = "O"
    if kind not in "iuf":
        raise TypeError(
            f"{owner} got {name}={value!r}: expected a number or an array of numbers "
            f"(e.g. {name}={1.0 if name == 'scale' else 0.0})"
        )


def check_scale(value: Any, array: np.ndarray, owner: str = "TruncatedNormal") -> None:
    """Raise a ``ValueError`` naming the value unless every entry of the scale is > 0 (NaN is not).

    Examples
    --------
    >>> check_scale(-1.0, np.array(-1.0))
    Traceback (most recent call last):
    ...
    ValueError: TruncatedNormal got scale=-1.0: the scale must be > 0 in every entry (a standard deviation)
    """
    if not np.all(array > 0):
        raise ValueError(
            f"{owner} got scale={value!r}: the scale must be > 0 in every entry (a standard deviation)"
        )


def normalize_bound(value: Any, array: np.ndarray, name: str, owner: str = "TruncatedNormal") -> Any:
    """The bound to use: ``value``, or None where every entry is infinite (with a warning).

    ``array`` is ``value`` as a NumPy array.  A NaN bound, or ``low=+inf`` /
    ``high=-inf`` (no support at all), raises a ``ValueError`` naming it.

    Examples
    --------
    >>> normalize_bound(0.0, np.array(0.0), "low")
    0.0
    >>> normalize_bound(float("nan"), np.array(np.nan), "high")
    Traceback (most recent call last):
    ...
    ValueError: TruncatedNormal got high=nan: a NaN bound; pass a number, or high=None for no bound
    """
    infinity = -np.inf if name == "low" else np.inf
    if np.any(np.isnan(array)):
        raise ValueError(
            f"{owner} got {name}={value!r}: a NaN bound; pass a number, or {name}=None for no bound"
        )
    if np.any(array == -infinity):
        raise ValueError(
            f"{owner} got {name}={value!r}: a {name} bound of {-infinity} leaves no support; "
            f"pass a finite {name} or {name}=None for no bound"
        )
    infinite = array == infinity
    if not np.any(infinite):
        return value
    warnings.warn(
        f"{owner} got {name}={infinity} ({int(infinite.sum())} of {infinite.size} entries): "
        f"write {name}=None for no bound. robusthmc treats them the same (an infinite bound "
        f"in a stock truncated normal gives NaN gradients).",
        InfiniteBoundWarning,
        stacklevel=user_stacklevel(),
    )
    return None if np.all(infinite) else value


def check_start(
    given: Any, latent_shapes: Mapping[str, tuple[int, ...]], *, argument: str, chains: int | None = None
) -> None:
    """Refuse, by name, a starting point that is not one array per latent site, of the site's shape.

    ``latent_shapes`` maps each continuous latent site to its unconstrained
    shape; with ``chains``, each array carries one start per chain in front.

    Examples
    --------
    >>> check_start({"x": 0.5}, {"x": ()}, argument="init_params")
    >>> check_start({}, {"x": ()}, argument="init_params")
    Traceback (most recent call last):
    ...
    ValueError: init_params={}: missing 'x'; expected one value per latent site, in unconstrained space: {'x': array of shape ()}.
    """
    lead = () if chains is None else (chains,)
    expected = ", ".join(
        f"{name!r}: array of shape {lead + tuple(shape)}" for name, shape in latent_shapes.items()
    )
    expected = f"expected one value per latent site, in unconstrained space: {{{expected}}}."
    if not isinstance(given, Mapping):
        raise TypeError(f"{argument}={given!r:.80}: {expected}")
    missing, unknown = sorted(set(latent_shapes) - set(given)), sorted(set(given) - set(latent_shapes))
    if missing or unknown:
        problems = [f"missing {', '.join(map(repr, missing))}"] if missing else []
        problems += [f"no latent site named {', '.join(map(repr, unknown))}"] if unknown else []
        raise ValueError(f"{argument}={dict(given)!r:.80}: {'; '.join(problems)}; {expected}")
    for name, shape in latent_shapes.items():
        value = given[name]
        dtype = getattr(value, "dtype", None)
        kind = np.dtype(dtype).kind if dtype is not None else np.asarray(value).dtype.kind
        if kind not in "fiu":
            raise TypeError(f"{argument}[{name!r}]={value!r:.60}: not a number; {expected}")
        if tuple(np.shape(value)) != lead + tuple(shape):
            raise ValueError(
                f"{argument}[{name!r}] has shape {tuple(np.shape(value))}, not {lead + tuple(shape)}; {expected}"
            )
