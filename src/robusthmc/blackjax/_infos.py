"""BlackJAX's infos with ``nonfinite``: which transitions met a non-finite log density or gradient.

A trajectory that met a non-finite log density or gradient ends with a NaN
momentum (the guarded integrator's mark): at one of its edges for NUTS, in its
proposal for HMC.  Such a transition is ``nonfinite`` and not ``is_divergent``.
"""

from __future__ import annotations

import operator
from typing import Any

import jax
import jax.numpy as jnp
from blackjax.mcmc import hmc as blackjax_hmc
from blackjax.mcmc import integrators
from blackjax.mcmc import nuts as blackjax_nuts

from robusthmc.jax._logdensity import is_finite_tree

__all__ = ["GuardedHMCInfo", "GuardedNUTSInfo", "failure_position", "guarded_info", "nonfinite_of"]


def _with_nonfinite(stock: type) -> type:
    """BlackJAX's info named tuple ``stock`` with a ``nonfinite`` field last, still an instance of ``stock``.

    Code that checks ``isinstance(info, NUTSInfo)`` or reads its fields keeps
    working; JAX flattens and rebuilds it as any named tuple.
    """
    fields = (*stock._fields, "nonfinite")  # type: ignore[attr-defined]

    def __new__(cls, *args, **kwargs):
        values = list(args) + [kwargs.pop(name) for name in fields[len(args) :] if name in kwargs]
        if kwargs or len(values) != len(fields):
            raise TypeError(f"{cls.__name__} takes the fields {fields}")
        return tuple.__new__(cls, values)

    def _replace(self, **changes):
        return tuple.__new__(type(self), [changes.pop(name, value) for name, value in zip(fields, self)])

    def __repr__(self):
        return f"{type(self).__name__}({', '.join(f'{n}={v!r}' for n, v in zip(fields, self))})"

    namespace = {
        "__slots__": (),
        "__doc__": f"BlackJAX's ``{stock.__name__}`` plus ``nonfinite``: the trajectory met a "
        "non-finite log density or gradient (and ``is_divergent`` is then false).",
        "_fields": fields,
        "__new__": __new__,
        "_make": classmethod(lambda cls, iterable: tuple.__new__(cls, list(iterable))),
        "_replace": _replace,
        "_asdict": lambda self: dict(zip(fields, self)),
        "__getnewargs__": lambda self: tuple(self),
        "__repr__": __repr__,
        "nonfinite": property(operator.itemgetter(len(fields) - 1), doc="Whether the trajectory failed."),
    }
    return type(f"Guarded{stock.__name__}", (stock,), namespace)


GuardedNUTSInfo: Any = _with_nonfinite(blackjax_nuts.NUTSInfo)
GuardedHMCInfo: Any = _with_nonfinite(blackjax_hmc.HMCInfo)


def _state_failed(state: integrators.IntegratorState) -> jax.Array:
    return ~(jnp.isfinite(state.logdensity) & is_finite_tree(state.momentum))


def _builds_a_tree(info: Any) -> bool:
    return hasattr(info, "trajectory_leftmost_state")


def nonfinite_of(info: Any) -> jax.Array:
    """Whether a transition's trajectory met a non-finite log density or gradient.

    A failing leapfrog step ends a NUTS trajectory, so it sits at one of the
    trajectory's edges; an HMC trajectory's end point (its proposal) carries it on.
    """
    if _builds_a_tree(info):
        return _state_failed(info.trajectory_leftmost_state) | _state_failed(info.trajectory_rightmost_state)
    return _state_failed(info.proposal)


def failure_position(info: Any) -> Any:
    """The position where a failed transition's trajectory ended (its failing edge)."""
    if _builds_a_tree(info):
        right = _state_failed(info.trajectory_rightmost_state)
        return jax.tree.map(
            lambda at_right, at_left: jnp.where(right, at_right, at_left),
            info.trajectory_rightmost_state.position,
            info.trajectory_leftmost_state.position,
        )
    return info.proposal.position


_GUARDED_INFO: dict[type, Any] = {
    blackjax_nuts.NUTSInfo: GuardedNUTSInfo,
    blackjax_hmc.HMCInfo: GuardedHMCInfo,
}


def guarded_info(info: Any) -> Any:
    """``info`` with ``nonfinite`` added and taken out of ``is_divergent``."""
    kind = type(info)
    if kind not in _GUARDED_INFO:  # another HMC-family info (e.g. a multinomial proposal's)
        _GUARDED_INFO[kind] = _with_nonfinite(kind)
    failed = nonfinite_of(info)
    return _GUARDED_INFO[kind](*info._replace(is_divergent=info.is_divergent & ~failed), failed)
