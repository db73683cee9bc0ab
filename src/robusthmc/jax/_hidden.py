"""Where a JAX computation's NaN comes from: the first operation that made it, a hiding ``jnp.where``.

``jnp.where(x > 0, jnp.sqrt(x), 0.0)`` is 0 at ``x = -1``, but its gradient is
NaN: the branch it does not take, ``sqrt(-1)``, is NaN, and reverse mode
multiplies that branch's derivative by a zero cotangent (``0 * NaN = NaN``).
:func:`nonfinite_origins` finds such a select, and the first operation that made
a NaN or inf from finite inputs (``log`` of a negative number), by running the
computation's jaxpr at a point, equation by equation.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence
from typing import Any, NamedTuple

import jax
import numpy as np
from jax.extend.core import ClosedJaxpr, Jaxpr, Literal, Var

__all__ = ["Origins", "nonfinite_origins"]

#: Primitives that call a jaxpr whose gradient is that jaxpr's own (``jnp.where`` is a
#: ``jit``); custom_jvp and custom_vjp calls are not entered: their rules define the gradient.
_CALLS = frozenset({"jit", "pjit", "closed_call", "core_call", "remat", "checkpoint"})


class Origins(NamedTuple):
    """Where a computation's NaN or inf comes from, in the user's code (``""``: not found there).

    ``hiding_select``: a ``jnp.where`` that skips a NaN or inf computed from the
    arguments (a finite value, a NaN gradient), as ``"jnp.where at model.py:12"``.
    ``first_nonfinite``: the first operation that made a NaN or inf from finite
    inputs, as ``"log at model.py:7 makes nan"``.
    """

    hiding_select: str = ""
    first_nonfinite: str = ""


def nonfinite_origins(closed: ClosedJaxpr, *args: Any) -> Origins:
    """Run ``closed`` at ``args`` equation by equation; where its NaNs and infs come from.

    Only operations the user's code calls are named (with the file and line of the
    call); those inside numpyro's or robusthmc's own code are not the user's to change.

    Examples
    --------
    >>> import jax, jax.numpy as jnp
    >>> closed = jax.make_jaxpr(lambda x: jnp.where(x > 0, jnp.sqrt(x), 0.0) + jnp.log(x + 2))(1.0)
    >>> nonfinite_origins(closed, -1.0).hiding_select.startswith("jnp.where at")
    True
    >>> nonfinite_origins(closed, -3.0).first_nonfinite.startswith("log at")
    True
    >>> nonfinite_origins(closed, 4.0)
    Origins(hiding_select='', first_nonfinite='')
    """
    leaves = jax.tree.leaves(args)
    walk = _Walk()
    _, _, origins = walk.run(
        closed.jaxpr, closed.consts, leaves, [True] * len(leaves), [""] * len(leaves), ""
    )
    return Origins(walk.hiding_select, next((origin for origin in origins if origin), ""))


class _Walk:
    """One evaluation of a jaxpr: its values, which depend on the arguments, where non-finite ones began."""

    def __init__(self) -> None:
        self.hiding_select = ""

    def run(
        self,
        jaxpr: Jaxpr,
        consts: Sequence[Any],
        args: Sequence[Any],
        from_args: Sequence[bool],
        origins: Sequence[str],
        around: str,
    ) -> tuple[list[Any], list[bool], list[str]]:
        """``jaxpr``'s outputs at ``args``, which depend on the flagged arguments, and where each's NaN began."""
        env: dict[Var, Any] = dict(zip(jaxpr.constvars, consts))
        depends: set[Var] = set()
        began: dict[Var, str] = {}
        for var, value, flag, origin in zip(jaxpr.invars, args, from_args, origins):
            env[var], began[var] = value, origin
            if flag:
                depends.add(var)

        def read(var: Any) -> Any:
            return var.val if isinstance(var, Literal) else env[var]

        for equation in jaxpr.eqns:
            values = [read(var) for var in equation.invars]
            flags = [isinstance(var, Var) and var in depends for var in equation.invars]
            in_origins = [began.get(var, "") if isinstance(var, Var) else "" for var in equation.invars]
            caller = _user_frame(equation)
            where = around if caller is None else caller
            called = equation.params.get("jaxpr") if equation.primitive.name in _CALLS else None
            if isinstance(called, (ClosedJaxpr, Jaxpr)):
                inner, inner_consts = (
                    (called.jaxpr, called.consts) if isinstance(called, ClosedJaxpr) else (called, ())
                )
                outputs, out_flags, out_origins = self.run(
                    inner, inner_consts, values, flags, in_origins, where
                )
            else:
                outputs = self._evaluate(equation, values)
                out_flags = [any(flags)] * len(outputs)
                name = equation.primitive.name
                if (
                    where
                    and not self.hiding_select
                    and name == "select_n"
                    and _hides_nonfinite(values, flags)
                ):
                    self.hiding_select = f"jnp.where at {where}"
                if all(map(_finite, values)):  # a NaN or inf made here, by the user's call or not
                    made = f"{name} at {where} makes" if where and any(flags) else ""
                    out_origins = [
                        f"{made} {_nonfinite_kind(out)}" if made and not _finite(out) else ""
                        for out in outputs
                    ]
                else:  # carried from an input
                    carried = next((origin for origin in in_origins if origin), "")
                    out_origins = [carried if not _finite(out) else "" for out in outputs]
            for var, value, flag, origin in zip(equation.outvars, outputs, out_flags, out_origins):
                if isinstance(var, Var):
                    env[var], began[var] = value, origin
                    if flag:
                        depends.add(var)
        outs = jaxpr.outvars
        return (
            [read(var) for var in outs],
            [isinstance(var, Var) and var in depends for var in outs],
            [began.get(var, "") if isinstance(var, Var) else "" for var in outs],
        )

    @staticmethod
    def _evaluate(equation: Any, values: Sequence[Any]) -> list[Any]:
        bound = equation.primitive.get_bind_params(equation.params)  # older jax: (subfuns, params)
        subfuns, params = bound if isinstance(bound, tuple) else ((), bound)
        result = equation.primitive.bind(*subfuns, *values, **params)
        return list(result) if equation.primitive.multiple_results else [result]


def _inexact(value: Any) -> bool:
    """Whether ``value`` holds floats (not integers, booleans or PRNG keys)."""
    dtype = getattr(value, "dtype", None)
    return jax.dtypes.issubdtype(np.asarray(value).dtype if dtype is None else dtype, np.inexact)


def _finite(value: Any) -> bool:
    return not _inexact(value) or bool(np.all(np.isfinite(np.asarray(value))))


def _nonfinite_kind(value: Any) -> str:
    array = np.asarray(value)
    return "nan" if np.any(np.isnan(array)) else "inf" if np.any(array == np.inf) else "-inf"


def _hides_nonfinite(values: Sequence[Any], flags: Sequence[bool]) -> bool:
    """Whether a ``select_n`` leaves out a non-finite value of a case computed from the arguments."""
    which, *cases = values
    return any(
        flag and _inexact(case) and bool(np.any(~np.isfinite(np.asarray(case)) & (np.asarray(which) != k)))
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
