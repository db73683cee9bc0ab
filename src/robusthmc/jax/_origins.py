"""Where a JAX computation's NaN comes from: the operation that made it, a ``jnp.where`` that hides it.

The computation's jaxpr is run at a point equation by equation, each value carrying
the arguments it depends on and, where it is not finite, the operation that made
it so.  ``jnp.log(x)`` at ``x = -1`` makes a NaN; ``jnp.where(x > 0, jnp.sqrt(x),
0.0)`` is 0 at ``x = -1`` but its gradient is NaN: the branch it does not take,
``sqrt(-1)``, is NaN, and reverse mode multiplies that branch's derivative by a
zero cotangent (``0 * NaN = NaN``).  Operations are named by the line of the
user's code that called them.
"""

from __future__ import annotations

import linecache
import os
import sys
from collections.abc import Sequence
from typing import Any, NamedTuple

import jax
import numpy as np
from jax.extend.core import ClosedJaxpr, Jaxpr, Literal, Var

from robusthmc._causes import describe_operation

__all__ = ["Origins", "nonfinite_origins"]

#: Primitives that call a jaxpr whose gradient is that jaxpr's own (``jnp.where`` is a
#: ``jit``); custom_jvp and custom_vjp calls are not entered: their rules define the gradient.
_CALLS = frozenset({"jit", "pjit", "closed_call", "core_call", "remat", "checkpoint"})


class Origins(NamedTuple):
    """Where a computation's NaN or inf comes from (``""``: not in the user's code, or none).

    ``first_nonfinite``: the user's operation that made the result's NaN or inf from
    inputs that were finite, as ``"`jnp.log(tau)` gives nan (model.py:12)"``.
    ``sources``: the arguments (indices of their leaves) that feed that operation,
    whoever called it.  ``hiding_select``: a ``jnp.where`` that skips a NaN or inf
    computed from the arguments (a finite result with a NaN gradient), as
    ``"jnp.where at model.py:12"``.
    """

    first_nonfinite: str = ""
    sources: tuple[int, ...] = ()
    hiding_select: str = ""


def nonfinite_origins(closed: ClosedJaxpr, *args: Any) -> Origins:
    """Run ``closed`` at ``args`` equation by equation: where its NaNs and infs come from.

    An operation is named only where the user's code calls it (not numpyro's,
    BlackJAX's or robusthmc's: theirs are not the user's to change).

    Examples
    --------
    >>> import jax, jax.numpy as jnp
    >>> closed = jax.make_jaxpr(lambda x: jnp.where(x > 0, jnp.sqrt(x), 0.0) + jnp.log(x + 2))(1.0)
    >>> nonfinite_origins(closed, -1.0).hiding_select.startswith("jnp.where at")
    True
    >>> nonfinite_origins(closed, -3.0)  # doctest: +ELLIPSIS
    Origins(first_nonfinite='`closed = ...` gives nan (<doctest ...>:1)', sources=(0,), hiding_select='jnp.where at <doctest ...>:1')
    >>> nonfinite_origins(closed, 4.0)
    Origins(first_nonfinite='', sources=(), hiding_select='')
    """
    leaves = jax.tree.leaves(args)
    walk = _Walk()
    each = [frozenset({k}) for k in range(len(leaves))]
    _, _, origins = walk.run(closed.jaxpr, closed.consts, leaves, each, [None] * len(leaves), "")
    text, sources = next((origin for origin in origins if origin is not None), ("", frozenset()))
    return Origins(text, tuple(sorted(sources)), walk.hiding_select)


#: Where a value's NaN or inf was made: the operation's text (``""`` if not the user's) and
#: the arguments that feed it; ``None`` for a finite value.
_Origin = tuple[str, frozenset[int]] | None


class _Walk:
    """One evaluation of a jaxpr, noting the first ``jnp.where`` that hides a NaN."""

    def __init__(self) -> None:
        self.hiding_select = ""

    def run(
        self,
        jaxpr: Jaxpr,
        consts: Sequence[Any],
        args: Sequence[Any],
        sources: Sequence[frozenset[int]],
        origins: Sequence[_Origin],
        around: str,
    ) -> tuple[list[Any], list[frozenset[int]], list[_Origin]]:
        """``jaxpr``'s outputs at ``args``, with their sources and origins; ``around``: the caller's place."""
        env: dict[Var, Any] = dict(zip(jaxpr.constvars, consts))
        fed: dict[Var, frozenset[int]] = {}
        began: dict[Var, _Origin] = {}
        for var, value, source, origin in zip(jaxpr.invars, args, sources, origins):
            env[var], fed[var], began[var] = value, source, origin

        def read(var: Any) -> tuple[Any, frozenset[int], _Origin]:
            if isinstance(var, Literal):
                return var.val, frozenset(), None
            return env[var], fed.get(var, frozenset()), began.get(var)

        for equation in jaxpr.eqns:
            values, in_sources, in_origins = (
                zip(*map(read, equation.invars)) if equation.invars else ((), (), ())
            )
            caller = _user_frame(equation)
            where = around if caller is None else caller
            called = equation.params.get("jaxpr") if equation.primitive.name in _CALLS else None
            if isinstance(called, (ClosedJaxpr, Jaxpr)):
                inner, inner_consts = (
                    (called.jaxpr, called.consts) if isinstance(called, ClosedJaxpr) else (called, ())
                )
                outputs, out_sources, out_origins = self.run(
                    inner, inner_consts, values, in_sources, in_origins, where
                )
            else:
                outputs = self._evaluate(equation, values)
                union = frozenset().union(*in_sources)
                out_sources = [union] * len(outputs)
                if where and not self.hiding_select and equation.primitive.name == "select_n":
                    if _hides_nonfinite(values, in_sources):
                        self.hiding_select = f"jnp.where at {_place(where)}"
                out_origins = self._origins(where, values, in_sources, in_origins, outputs)
            for var, value, source, origin in zip(equation.outvars, outputs, out_sources, out_origins):
                if isinstance(var, Var):
                    env[var], fed[var], began[var] = value, source, origin
        outs = [read(var) for var in jaxpr.outvars]
        return [out[0] for out in outs], [out[1] for out in outs], [out[2] for out in outs]

    @staticmethod
    def _evaluate(equation: Any, values: Sequence[Any]) -> list[Any]:
        bound = equation.primitive.get_bind_params(equation.params)  # older jax: (subfuns, params)
        subfuns, params = bound if isinstance(bound, tuple) else ((), bound)
        result = equation.primitive.bind(*subfuns, *values, **params)
        return list(result) if equation.primitive.multiple_results else [result]

    @staticmethod
    def _origins(
        where: str,
        values: Sequence[Any],
        sources: Sequence[frozenset[int]],
        origins: Sequence[_Origin],
        outputs: Sequence[Any],
    ) -> list[_Origin]:
        """Each output's origin: made here if what the arguments feed in is finite, else carried."""
        if all(map(_finite, outputs)):
            return [None] * len(outputs)
        # A non-finite constant (the NaN a select picks) counts as finite: what the
        # arguments feed into the operation decides whether it gives one.
        if all(_finite(value) for value, source in zip(values, sources) if source):
            fed = frozenset().union(*sources)
            return [None if _finite(out) else (_describe(where, out), fed) for out in outputs]
        # Carried from an input: the user's operation, if one made any input's (a NaN can
        # reach a select beside a constant -inf, numpyro's mask of values outside the support).
        known = sorted(
            (origin for origin in origins if origin is not None), key=lambda o: (not o[0], not o[1])
        )
        carried = known[0] if known else ("", frozenset())
        return [None if _finite(out) else carried for out in outputs]


def _describe(where: str, value: Any) -> str:
    """``"`jnp.log(tau)` gives nan (model.py:12)"`` for the user's call at ``where``; ``""`` if none."""
    if not where:
        return ""
    kind = "nan" if bool(np.any(np.isnan(np.asarray(value)))) else "an infinity"
    path, _, line = where.rpartition(":")
    return describe_operation(linecache.getline(path, int(line)), _place(where), kind)


def _place(where: str) -> str:
    path, _, line = where.rpartition(":")
    return f"{os.path.basename(path)}:{line}"


def _inexact(value: Any) -> bool:
    """Whether ``value`` holds floats (not integers, booleans or PRNG keys)."""
    dtype = getattr(value, "dtype", None)
    return jax.dtypes.issubdtype(np.asarray(value).dtype if dtype is None else dtype, np.inexact)


def _finite(value: Any) -> bool:
    return not _inexact(value) or bool(np.all(np.isfinite(np.asarray(value))))


def _hides_nonfinite(values: Sequence[Any], sources: Sequence[frozenset[int]]) -> bool:
    """Whether a ``select_n`` leaves out a non-finite value of a case computed from the arguments."""
    which, *cases = values
    return any(
        source and _inexact(case) and bool(np.any(~np.isfinite(np.asarray(case)) & (np.asarray(which) != k)))
        for k, (case, source) in enumerate(zip(cases, sources[1:]))
    )


def _folders(*names: str) -> tuple[str, ...]:
    modules = [sys.modules[name] for name in names if name in sys.modules]
    return tuple(os.path.dirname(module.__file__) + os.sep for module in modules if module.__file__)


def _user_frame(equation: Any) -> str | None:
    """``path:line`` of the code that called JAX for this equation.

    ``""`` where that code is numpyro's, BlackJAX's or robusthmc's (not the user's to
    change), ``None`` where the traceback holds JAX's and Python's frames only (an
    equation inside ``jnp.where``'s own jaxpr): then the enclosing equation's caller is.
    """
    traceback = getattr(getattr(equation, "source_info", None), "traceback", None)
    skipped = (*_folders("jax", "jaxlib"), os.path.dirname(os.__file__) + os.sep)
    libraries = _folders("numpyro", "blackjax", "robusthmc")
    for frame in getattr(traceback, "frames", ()):
        if frame.file_name.startswith(skipped):
            continue
        return "" if frame.file_name.startswith(libraries) else f"{frame.file_name}:{frame.line_num}"
    return None
