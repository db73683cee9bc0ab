"""Guarded ``nuts`` and ``hmc``: BlackJAX's kernels around a guarded log density.

Each kernel is BlackJAX's own, called with :func:`robusthmc.jax.guarded_logdensity`
of the log density, so a healthy model's draws are BlackJAX's bit for bit.
What the guard adds is read from the info BlackJAX already returns: a
trajectory that met a non-finite log density or gradient ends with a NaN
momentum at its edge (NUTS) or in its proposal (HMC).  Such a transition is
``nonfinite`` and not ``is_divergent``, which keeps the geometric divergences.
"""

from __future__ import annotations

import dataclasses
from collections import namedtuple
from collections.abc import Callable
from typing import Any

import blackjax
import jax
import jax.numpy as jnp
from blackjax.base import SamplingAlgorithm, build_sampling_algorithm
from blackjax.mcmc import hmc as blackjax_hmc
from blackjax.mcmc import integrators, metrics
from blackjax.mcmc import nuts as blackjax_nuts

from robusthmc._guard import Guard, checked_guard
from robusthmc.jax import check_position, is_finite_tree, nan_momentum_where_not_finite

__all__ = ["GuardedHMCInfo", "GuardedNUTSInfo", "hmc", "nuts"]

_make_tuple: Callable[..., Any] = namedtuple

#: BlackJAX's NUTSInfo plus ``nonfinite``: the trajectory met a non-finite log density or gradient.
GuardedNUTSInfo: Any = _make_tuple("GuardedNUTSInfo", [*blackjax_nuts.NUTSInfo._fields, "nonfinite"])
#: BlackJAX's HMCInfo plus ``nonfinite``: the trajectory met a non-finite log density or gradient.
GuardedHMCInfo: Any = _make_tuple("GuardedHMCInfo", [*blackjax_hmc.HMCInfo._fields, "nonfinite"])


def _state_failed(state: integrators.IntegratorState) -> jax.Array:
    return ~(jnp.isfinite(state.logdensity) & is_finite_tree(state.momentum))


def nonfinite_of(info: Any) -> jax.Array:
    """Whether a transition's trajectory met a non-finite log density or gradient.

    A failing leapfrog step ends a NUTS trajectory, so it sits at one of the
    trajectory's edges; an HMC trajectory's end point carries it on.
    """
    if isinstance(info, blackjax_nuts.NUTSInfo | GuardedNUTSInfo):
        return _state_failed(info.trajectory_leftmost_state) | _state_failed(info.trajectory_rightmost_state)
    return _state_failed(info.proposal)


def failure_position(info: Any) -> Any:
    """The position where a failed transition's trajectory ended (its failing edge)."""
    if isinstance(info, blackjax_nuts.NUTSInfo | GuardedNUTSInfo):
        right = _state_failed(info.trajectory_rightmost_state)
        return jax.tree.map(
            lambda at_right, at_left: jnp.where(right, at_right, at_left),
            info.trajectory_rightmost_state.position,
            info.trajectory_leftmost_state.position,
        )
    return info.proposal.position


def _guarded_info(info: Any) -> Any:
    failed = nonfinite_of(info)
    guarded = GuardedNUTSInfo if isinstance(info, blackjax_nuts.NUTSInfo) else GuardedHMCInfo
    return guarded(*info._replace(is_divergent=info.is_divergent & ~failed), failed)


def guarded_integrator(integrator: Callable) -> Callable:
    """A BlackJAX integrator whose step leaves a NaN momentum where the log density is not finite.

    See :func:`robusthmc.jax.nan_momentum_where_not_finite`; on a healthy model
    the steps are the integrator's own, bit for bit.
    """

    def build(logdensity_fn, *args, **kwargs):
        step = integrator(logdensity_fn, *args, **kwargs)

        def guarded_step(state, step_size):
            new_state = step(state, step_size)
            return new_state._replace(
                momentum=nan_momentum_where_not_finite(new_state.momentum, new_state.logdensity)
            )

        return guarded_step

    return build


def _guarded_kernel(stock_kernel: Callable) -> Callable:
    def kernel(rng_key, state, logdensity_fn, *args, **kwargs):
        new_state, info = stock_kernel(rng_key, state, logdensity_fn, *args, **kwargs)
        return new_state, _guarded_info(info)

    return kernel


def _is_concrete(tree: Any) -> bool:
    return not any(isinstance(leaf, jax.core.Tracer) for leaf in jax.tree.leaves(tree))


def _init(position: Any, logdensity_fn: Callable) -> blackjax_hmc.HMCState:
    """BlackJAX's ``init``; a concrete start that is not valid raises, naming its coordinates.

    Inside ``jit`` or ``vmap`` the start is not known yet and cannot raise: a
    chain started there fails its first transitions, which :func:`settle` reports.
    """
    if _is_concrete(position):
        check_position(logdensity_fn, position)
    return blackjax_hmc.init(position, logdensity_fn)


@dataclasses.dataclass(frozen=True)
class GuardedAlgorithm:
    """A guarded twin of ``blackjax.nuts`` / ``blackjax.hmc``: call it, or use ``init`` and ``build_kernel``.

    It is what BlackJAX's ``GenerateSamplingAPI`` is, so it can be passed as the
    ``algorithm`` of BlackJAX's adaptations too.
    """

    name: str
    stock: Any
    differentiable: Callable[..., SamplingAlgorithm]

    def __call__(self, *args: Any, **kwargs: Any) -> SamplingAlgorithm:
        return self.differentiable(*args, **kwargs)

    @staticmethod
    def init(position: Any, logdensity_fn: Callable) -> blackjax_hmc.HMCState:
        return _init(position, logdensity_fn)

    def build_kernel(
        self, integrator: Callable = integrators.velocity_verlet, *args: Any, **kwargs: Any
    ) -> Callable:
        return _guarded_kernel(self.stock.build_kernel(guarded_integrator(integrator), *args, **kwargs))


def _nuts(
    logdensity_fn: Callable,
    step_size: float,
    inverse_mass_matrix: metrics.MetricTypes,
    *,
    max_num_doublings: int = 10,
    divergence_threshold: int = 1000,
    integrator: Callable = integrators.velocity_verlet,
    guard: Guard | None = None,
) -> SamplingAlgorithm:
    """Guarded ``blackjax.nuts``: the same arguments and defaults, plus ``guard``.

    Examples
    --------
    >>> import jax, jax.numpy as jnp
    >>> from robusthmc import blackjax as rb
    >>> algo = rb.nuts(lambda x: -0.5 * jnp.sum(x**2), step_size=0.5, inverse_mass_matrix=jnp.ones(2))
    >>> state, info = jax.jit(algo.step)(jax.random.key(0), algo.init(jnp.zeros(2)))
    >>> bool(info.nonfinite), bool(info.is_divergent)
    (False, False)
    """
    checked_guard(guard)
    kernel = nuts.build_kernel(integrator, divergence_threshold)
    return build_sampling_algorithm(
        kernel,
        _init,
        logdensity_fn,
        kernel_args=(step_size, metrics.default_metric(inverse_mass_matrix), max_num_doublings),
    )


def _hmc(
    logdensity_fn: Callable,
    step_size: float,
    inverse_mass_matrix: metrics.MetricTypes,
    num_integration_steps: int,
    *,
    divergence_threshold: int = 1000,
    integrator: Callable = integrators.velocity_verlet,
    build_proposal: Callable = blackjax_hmc.hmc_proposal,
    guard: Guard | None = None,
) -> SamplingAlgorithm:
    """Guarded ``blackjax.hmc``: the same arguments and defaults, plus ``guard``.

    Examples
    --------
    >>> import jax, jax.numpy as jnp
    >>> from robusthmc import blackjax as rb
    >>> algo = rb.hmc(lambda x: -jnp.sum(x**2), 0.1, jnp.ones(1), num_integration_steps=10)
    >>> state, info = algo.step(jax.random.key(0), algo.init(jnp.ones(1)))
    >>> bool(info.nonfinite), bool(info.is_divergent)
    (False, False)
    """
    checked_guard(guard)
    kernel = hmc.build_kernel(integrator, divergence_threshold, build_proposal)
    return build_sampling_algorithm(
        kernel,
        _init,
        logdensity_fn,
        kernel_args=(step_size, metrics.default_metric(inverse_mass_matrix), num_integration_steps),
    )


nuts = GuardedAlgorithm("nuts", blackjax_nuts, _nuts)
hmc = GuardedAlgorithm("hmc", blackjax_hmc, _hmc)


def guarded_twin(algorithm: Any) -> GuardedAlgorithm | None:
    """Robusthmc's twin of ``blackjax.nuts`` or ``blackjax.hmc`` (itself if already one), else None."""
    for stock, twin in ((blackjax.nuts, nuts), (blackjax.hmc, hmc), (nuts, nuts), (hmc, hmc)):
        if algorithm is stock:
            return twin
    return None
