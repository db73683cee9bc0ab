"""Guarded ``nuts`` and ``hmc``: BlackJAX's kernels with a guarded integrator.

Each kernel is BlackJAX's own, built with an integrator whose step leaves a
NaN momentum where the log density is not finite
(:func:`robusthmc.jax.nan_momentum_where_not_finite`): such a trajectory ends
there and its proposal is rejected, and on a healthy model the compiled
program, and so the draws, are BlackJAX's bit for bit.  What the guard adds
is read from the info BlackJAX already returns (:mod:`._infos`).
"""

from __future__ import annotations

import dataclasses
import inspect
from collections.abc import Callable
from typing import Any, NoReturn

import blackjax
import jax
import numpy as np
from blackjax.base import SamplingAlgorithm, build_sampling_algorithm
from blackjax.mcmc import hmc as blackjax_hmc
from blackjax.mcmc import integrators, metrics
from blackjax.mcmc import nuts as blackjax_nuts

from robusthmc._arguments import MAX_TREE_DEPTH, _count, _positive
from robusthmc._guard import Guard, checked_guard
from robusthmc.blackjax._infos import GuardedHMCInfo, GuardedNUTSInfo, guarded_info
from robusthmc.blackjax._settle import policed
from robusthmc.jax._logdensity import (
    check_callable,
    check_position,
    check_position_values,
    is_finite_tree,
    nan_momentum_where_not_finite,
)

__all__ = ["GuardedHMCInfo", "GuardedNUTSInfo", "hmc", "nuts"]


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
        return new_state, guarded_info(info)

    return kernel


def _checked_start(init: Callable, position: Any, logdensity_fn: Callable) -> Any:
    """``init(position, logdensity_fn)``; a concrete start that is not valid raises, naming its coordinates.

    The start is evaluated once, by ``init`` (BlackJAX traces the log density
    once there); only a failing one is evaluated again, to be explained.
    Inside ``jit`` or ``vmap`` the start is not known yet and cannot raise: a
    chain started there fails its first transition, which :func:`settle` reports.
    """
    check_position_values(position)
    state = init(position, logdensity_fn)
    concrete = not any(isinstance(leaf, jax.core.Tracer) for leaf in jax.tree.leaves(state))
    if concrete and not (np.isfinite(state.logdensity) and bool(is_finite_tree(state.logdensity_grad))):
        check_position(logdensity_fn, position)
    return state


def _init(position: Any, logdensity_fn: Callable) -> blackjax_hmc.HMCState:
    return _checked_start(blackjax_hmc.init, position, logdensity_fn)


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

    def init(self, position: Any, logdensity_fn: Callable) -> Any:
        return _checked_start(self.stock.init, position, logdensity_fn)

    def build_kernel(
        self, integrator: Callable = integrators.velocity_verlet, *args: Any, **kwargs: Any
    ) -> Callable:
        return _guarded_kernel(self.stock.build_kernel(guarded_integrator(integrator), *args, **kwargs))


def _check_arguments(
    owner: str, logdensity_fn: Any, step_size: Any, inverse_mass_matrix: Any, **counts: Any
) -> None:
    """Refuse, by name, an argument BlackJAX's kernel cannot work with (traced values pass).

    ``counts`` are integer options (``max_num_doublings``, ``num_integration_steps``)
    and ``divergence_threshold``.
    """
    check_callable(logdensity_fn, "logdensity_fn", owner)

    def refuse(name: str, value: Any, rule: str) -> NoReturn:
        raise ValueError(f"{owner}({name}={value!r:.60}): {rule}")

    if not _positive(step_size):
        refuse("step_size", step_size, "must be a finite number > 0, e.g. the one window_adaptation found")
    if not (callable(inverse_mass_matrix) or isinstance(inverse_mass_matrix, jax.core.Tracer)):
        try:
            matrix = np.asarray(inverse_mass_matrix, dtype=np.float64)
        except (TypeError, ValueError):
            matrix = None
        square = matrix is not None and matrix.ndim == 2 and matrix.shape[0] == matrix.shape[1]
        if matrix is None or not (matrix.ndim == 1 or square) or matrix.size == 0:
            refuse(
                "inverse_mass_matrix",
                inverse_mass_matrix,
                "must be a 1-d array (diagonal) or a square 2-d array, one entry per coordinate",
            )
        if not np.all(np.isfinite(matrix)) or (matrix.ndim == 1 and np.any(matrix <= 0)):
            refuse("inverse_mass_matrix", inverse_mass_matrix, "must be finite, with a positive diagonal")
    for name, value in counts.items():
        if name == "divergence_threshold":
            if not _positive(value):
                refuse(name, value, "must be a finite number > 0, e.g. 1000")
        elif not (isinstance(value, jax.core.Tracer) or _count(value, _LIMITS[name])):
            refuse(name, value, f"must be an integer from 1 to {_LIMITS[name]}")


#: The most each integer option may ask: 2**30 leapfrog steps in one transition never finish.
_LIMITS = {"max_num_doublings": MAX_TREE_DEPTH, "num_integration_steps": 2**31 - 1}


def _sampling_algorithm(
    kernel: Callable,
    logdensity_fn: Callable,
    step_size: Any,
    inverse_mass_matrix: Any,
    length: Any,
    guard: Any,
) -> SamplingAlgorithm:
    """BlackJAX's ``SamplingAlgorithm`` around a guarded kernel (``length``: its trajectory option)."""
    guard = checked_guard(guard, "blackjax")
    metric = metrics.default_metric(inverse_mass_matrix)
    algorithm = build_sampling_algorithm(
        kernel, _init, logdensity_fn, kernel_args=(step_size, metric, length)
    )
    return policed(algorithm, logdensity_fn, guard)


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

    ``guard`` (a :class:`~robusthmc.Guard`) applies to steps run eagerly, one by
    one in Python: with ``on_nonfinite="raise"`` the failing step raises
    :class:`~robusthmc.NonFiniteError`, and ``max_consecutive_failures``
    failures in a row raise :class:`~robusthmc.StuckChainError`.  A compiled
    loop cannot raise as it goes: pass its states and infos, and the same
    guard, to :func:`~robusthmc.blackjax.settle`.

    Examples
    --------
    >>> import jax, jax.numpy as jnp
    >>> from robusthmc import blackjax as rb
    >>> algo = rb.nuts(lambda x: -0.5 * jnp.sum(x**2), step_size=0.5, inverse_mass_matrix=jnp.ones(2))
    >>> state, info = jax.jit(algo.step)(jax.random.key(0), algo.init(jnp.zeros(2)))
    >>> bool(info.nonfinite), bool(info.is_divergent)
    (False, False)
    """
    _check_arguments(
        "nuts",
        logdensity_fn,
        step_size,
        inverse_mass_matrix,
        max_num_doublings=max_num_doublings,
        divergence_threshold=divergence_threshold,
    )
    kernel = nuts.build_kernel(integrator, divergence_threshold)
    return _sampling_algorithm(
        kernel, logdensity_fn, step_size, inverse_mass_matrix, max_num_doublings, guard
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

    ``guard`` (a :class:`~robusthmc.Guard`) applies to steps run eagerly, one by
    one in Python: with ``on_nonfinite="raise"`` the failing step raises
    :class:`~robusthmc.NonFiniteError`, and ``max_consecutive_failures``
    failures in a row raise :class:`~robusthmc.StuckChainError`.  A compiled
    loop cannot raise as it goes: pass its states and infos, and the same
    guard, to :func:`~robusthmc.blackjax.settle`.

    Examples
    --------
    >>> import jax, jax.numpy as jnp
    >>> from robusthmc import blackjax as rb
    >>> algo = rb.hmc(lambda x: -jnp.sum(x**2), 0.1, jnp.ones(1), num_integration_steps=10)
    >>> state, info = algo.step(jax.random.key(0), algo.init(jnp.ones(1)))
    >>> bool(info.nonfinite), bool(info.is_divergent)
    (False, False)
    """
    _check_arguments(
        "hmc",
        logdensity_fn,
        step_size,
        inverse_mass_matrix,
        num_integration_steps=num_integration_steps,
        divergence_threshold=divergence_threshold,
    )
    kernel = hmc.build_kernel(integrator, divergence_threshold, build_proposal)
    return _sampling_algorithm(
        kernel, logdensity_fn, step_size, inverse_mass_matrix, num_integration_steps, guard
    )


nuts = GuardedAlgorithm("nuts", blackjax_nuts, _nuts)
hmc = GuardedAlgorithm("hmc", blackjax_hmc, _hmc)


#: BlackJAX's own algorithms, as they were when robusthmc was imported (a swap-in replaces them).
_STOCK = ((blackjax.nuts, nuts), (blackjax.hmc, hmc))


def guarded_twin(algorithm: Any) -> GuardedAlgorithm | None:
    """The guarded twin of a BlackJAX HMC-family algorithm (its ``init`` and ``build_kernel``), else None.

    ``blackjax.nuts`` and ``blackjax.hmc`` have robusthmc's; another algorithm
    whose kernel takes an integrator and returns an HMC or NUTS info (e.g.
    multinomial HMC) is guarded the same way inside an adaptation.
    """
    for stock, twin in (*_STOCK, (nuts, nuts), (hmc, hmc)):
        if algorithm is stock:
            return twin
    if isinstance(algorithm, GuardedAlgorithm):
        return algorithm
    build_kernel = getattr(algorithm, "build_kernel", None)
    if callable(build_kernel) and callable(getattr(algorithm, "init", None)):
        if "integrator" in inspect.signature(build_kernel).parameters:
            return GuardedAlgorithm(getattr(algorithm, "__name__", "algorithm"), algorithm, algorithm)
    return None
