"""Where a JAX function's finite value hides a NaN: a ``jnp.where`` whose other branch is not.

``jnp.where(x > 0, jnp.sqrt(x), 0.0)`` is 0 at ``x = -1``, but its gradient is
NaN: the branch it does not take, ``sqrt(-1)``, is NaN, and reverse mode
multiplies that branch's derivative by a zero cotangent (``0 * NaN = NaN``).
:func:`where_hiding_nonfinite` finds such a select by running the function's
jaxpr at a point, equation by equation.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence
from typing import Any

import jax
import numpy as np
from jax.extend.core import ClosedJaxpr, Jaxpr, Literal, Var

__all__ = ["where_hiding_nonfinite"]

#: Primitives that call a jaxpr whose gradient is that jaxpr's own (``jnp.where`` is a
#: ``jit``); custom_jvp and custom_vjp calls are not entered: their rules define the gradient.
_CALLS = frozenset({"jit", "pjit", "closed_call", "core_call", "remat", "checkpoint"})


def where_hiding_nonfinite(closed: ClosedJaxpr, *args: Any) -> str:
    """Where ``closed``, run at ``args``, selects past a NaN or inf computed from them; ``""`` if nowhere.

    The text names the call in the user's code (``"jnp.where at model.py:12"``); a select
    numpyro's or robusthmc's own code makes is not reported (not the user's to change).

    Examples
    --------
    >>> import jax, jax.numpy as jnp
    >>> closed = jax.make_jaxpr(lambda x: jnp.where(x > 0, jnp.sqrt(x), 0.0))(1.0)
    >>> where_hiding_nonfinite(closed, -1.0).startswith("jnp.where at")
    True
    >>> where_hiding_nonfinite(closed, 4.0)
    ''
    """
    leaves = jax.tree.leaves(args)
    return _walk(closed.jaxpr, closed.consts, leaves, [True] * len(leaves), "")[2]


def _walk(
    jaxpr: Jaxpr, consts: Sequence[Any], args: Sequence[Any], from_args: Sequence[bool], around: str
) -> tuple[list[Any], list[bool], str]:
    """Evaluate ``jaxpr``: its outputs, which depend on ``args``, and the first hiding select found."""
    env: dict[Var, Any] = dict(zip(jaxpr.constvars, consts))
    depends: set[Var] = set()
    for var, value, flag in zip(jaxpr.invars, args, from_args):
        env[var] = value
        if flag:
            depends.add(var)

    def read(var: Any) -> Any:
        return var.val if isinstance(var, Literal) else env[var]

    found = ""
    for equation in jaxpr.eqns:
        values = [read(var) for var in equation.invars]
        flags = [isinstance(var, Var) and var in depends for var in equation.invars]
        caller = _user_frame(equation)
        where = around if caller is None else caller
        called = equation.params.get("jaxpr") if equation.primitive.name in _CALLS else None
        if isinstance(called, (ClosedJaxpr, Jaxpr)):
            inner, inner_consts = (
                (called.jaxpr, called.consts) if isinstance(called, ClosedJaxpr) else (called, ())
            )
            outputs, out_flags, inner_found = _walk(inner, inner_consts, values, flags, where)
            found = found or inner_found
        else:
            if (
                not found
                and where
                and equation.primitive.name == "select_n"
                and _hides_nonfinite(values, flags)
            ):
                found = f"jnp.where at {where}"
            bound = equation.primitive.get_bind_params(equation.params)  # older jax: (subfuns, params)
            subfuns, params = bound if isinstance(bound, tuple) else ((), bound)
            result = equation.primitive.bind(*subfuns, *values, **params)
            outputs = list(result) if equation.primitive.multiple_results else [result]
            out_flags = [any(flags)] * len(outputs)
        for var, value, flag in zip(equation.outvars, outputs, out_flags):
            if isinstance(var, Var):
                env[var] = value
                if flag:
                    depends.add(var)
    return (
        [read(var) for var in jaxpr.outvars],
        [isinstance(v, Var) and v in depends for v in jaxpr.outvars],
        found,
    )


def _hides_nonfinite(values: Sequence[Any], flags: Sequence[bool]) -> bool:
    """Whether a ``select_n`` leaves out a non-finite value of a case computed from the arguments."""
    which, *cases = (np.asarray(value) for value in values)
    return any(
        flag and np.issubdtype(case.dtype, np.inexact) and bool(np.any(~np.isfinite(case) & (which != k)))
        for k, (case, flag) in enumerate(zip(cases, flags[1:]))
    )


def _folders(*names: str) -> tuple[str, ...]:
    modules = [sys.modules[name] for name in names if name in sys.modules]
    return tuple(os.path.dirname(module.__file__) + os.sep for module in modules if module.__file__)


def _user_frame(equation: Any) -> str | None:
    """``file:line`` of the code that called JAX for this equation.

    ``""`` where that code is numpyro's or robusthmc's (their selects are not the user's
    to change), ``None`` where the traceback holds JAX's frames only (a select inside
    ``jnp.where``'s own jaxpr): then the enclosing equation's caller is the one.
    """
    traceback = getattr(getattr(equation, "source_info", None), "traceback", None)
    jax_folders, libraries = _folders("jax", "jaxlib"), _folders("numpyro", "robusthmc")
    for frame in getattr(traceback, "frames", ()):
        if frame.file_name.startswith(jax_folders):
            continue
        return (
            ""
            if frame.file_name.startswith(libraries)
            else f"{os.path.basename(frame.file_name)}:{frame.line_num}"
        )
    return None
