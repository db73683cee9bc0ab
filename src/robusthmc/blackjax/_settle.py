"""What a user's own BlackJAX sampling loop amounts to: the same errors and warnings as a run.

A compiled loop (``jax.lax.scan`` over ``step``) cannot raise as it goes; its
states and infos can.  :func:`settle` reduces each chain to the core's
:class:`~robusthmc._outcome.ChainRecord` and lets the core decide.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import jax
import numpy as np
from blackjax.base import SamplingAlgorithm

from robusthmc._diagnosis import Diagnosis, Halt, frozen_latents
from robusthmc._guard import Guard, checked_guard
from robusthmc._outcome import ChainRecord, Which, sampling_stop, settle_run
from robusthmc.blackjax._infos import failure_position, nonfinite_of
from robusthmc.jax._logdensity import check_callable, diagnose_position, labelled_leaves

__all__ = ["policed", "settle"]


def _chains_first(tree: Any, chain_axis: int | None) -> Any:
    if chain_axis is None:
        return jax.tree.map(lambda leaf: np.asarray(leaf)[None], tree)
    return jax.tree.map(lambda leaf: np.moveaxis(np.asarray(leaf), chain_axis, 0), tree)


def settle(
    states: Any,
    infos: Any,
    guard: Guard | None = None,
    *,
    logdensity_fn: Callable | None = None,
    chain_axis: int | None = None,
) -> None:
    """Raise or warn about a finished sampling loop, as :class:`~robusthmc.Guard` says.

    Parameters
    ----------
    states, infos
        The states and infos of :func:`robusthmc.blackjax.nuts` or ``hmc``
        steps, stacked along a first axis of draws (what ``jax.lax.scan``
        returns).
    guard : Guard, optional
    logdensity_fn : callable, optional
        The log density sampled: with it the diagnosis evaluates each failure
        point again and names the coordinates whose gradient fails; without
        it, it names the point the trajectory failed at.
    chain_axis : int, optional
        The axis of chains, for several chains (``jax.vmap`` inside the scan:
        ``chain_axis=1``); ``None`` for one chain.

    Raises
    ------
    NonFiniteError
        ``on_nonfinite="raise"`` and a transition met a non-finite log density
        or gradient; ``err.samples["position"]`` holds the draws before it.
    StuckChainError
        ``Guard.max_consecutive_failures`` transitions in a row failed.

    Warns
    -----
    NonFiniteWarning
        ``on_nonfinite="warn"`` and a chain met more than isolated failures.
    FrozenChainWarning
        A coordinate kept one value through all the draws.

    Examples
    --------
    >>> import jax, jax.numpy as jnp
    >>> from robusthmc import Guard, blackjax as rb
    >>> algo = rb.nuts(lambda x: -0.5 * jnp.sum(x**2), 0.5, jnp.ones(2))
    >>> def one_step(state, key):
    ...     state, info = algo.step(key, state)
    ...     return state, (state, info)
    >>> keys = jax.random.split(jax.random.key(0), 100)
    >>> _, (states, infos) = jax.lax.scan(one_step, algo.init(jnp.zeros(2)), keys)
    >>> rb.settle(states, infos, Guard(on_nonfinite="raise"))  # nothing failed: nothing said
    """
    guard = checked_guard(guard, "blackjax")
    if chain_axis is not None and (isinstance(chain_axis, bool) or not isinstance(chain_axis, int)):
        raise TypeError(f"settle(chain_axis={chain_axis!r}): expected an axis number (int) or None.")
    if not hasattr(states, "position"):
        raise TypeError(
            f"settle(states={states!r:.60}): expected the stacked states of robusthmc.blackjax.nuts or hmc "
            "steps (what jax.lax.scan returns), with a position"
        )
    if not hasattr(infos, "is_divergent"):
        raise TypeError(
            f"settle(infos={infos!r:.60}): expected the stacked infos of robusthmc.blackjax.nuts or hmc steps"
        )
    if logdensity_fn is not None:
        check_callable(logdensity_fn, "logdensity_fn", "settle")
    batch = np.ndim(infos.is_divergent)
    if batch != (1 if chain_axis is None else 2) or (chain_axis is not None and chain_axis not in (0, 1)):
        raise ValueError(
            f"settle(chain_axis={chain_axis!r}): the infos have {batch} leading axes; give chain_axis=None for "
            "one chain (draws first), 0 or 1 for several (the axis of chains beside that of draws)"
        )
    failed = np.asarray(
        infos.nonfinite if hasattr(infos, "nonfinite") else _per_transition(nonfinite_of, infos)
    )
    if chain_axis is None:
        failed = failed[None]
    else:
        failed = np.moveaxis(failed, chain_axis, 0)
    positions = _chains_first(states.position, chain_axis)
    failures = _chains_first(_per_transition(failure_position, infos), chain_axis)
    dtypes = [np.asarray(leaf).dtype for leaf in jax.tree.leaves(positions)]
    dtype = str(np.result_type(*dtypes)) if dtypes else "float64"
    records = []
    stopped_at = None
    for chain in range(failed.shape[0]):
        halt, at = sampling_stop(failed[chain], guard)
        if halt is not Halt.RUNNING and stopped_at is None:
            stopped_at = (chain, at)
        draws = labelled_leaves(jax.tree.map(lambda leaf, c=chain: leaf[c], positions))
        records.append(
            ChainRecord(
                chain=chain,
                halt=halt,
                halted_at=at,
                num_warmup=0,
                nonfinite=(0, int(failed[chain].sum())),
                transitions=(0, failed.shape[1]),
                steps_capped=0,
                step_size=math.nan,
                diagnose=_diagnoser(failures, failed, chain, logdensity_fn, guard),
                frozen=frozen_latents(draws, dtype) if halt is Halt.RUNNING else (),
            )
        )
    samples: dict[str, Any] = {}
    if stopped_at is not None:
        chain, at = stopped_at
        kept = jax.tree.map(lambda leaf: leaf[chain, :at], positions)
        samples = {"position": kept}
    settle_run(records, guard, samples=samples)


def _per_transition(fn: Callable, infos: Any) -> Any:
    """``fn`` of each transition's info, over every leading axis (draws, and chains)."""
    for _ in range(np.ndim(infos.is_divergent)):
        fn = jax.vmap(fn)
    return fn(infos)


def _diagnoser(
    failures: Any, failed: np.ndarray, chain: int, logdensity_fn: Callable | None, guard: Guard
) -> Callable[[Which], tuple[Diagnosis, ...]]:
    def diagnose(which: Which) -> tuple[Diagnosis, ...]:
        rows = np.flatnonzero(failed[chain])
        if which == "first":
            rows = rows[:1]
        elif which == "latest":
            rows = rows[-1:]
        else:
            keep = guard.max_recorded_failures
            rows = np.concatenate([rows[:keep], rows[keep:][-1:]])
        return tuple(_diagnose_at(failures, chain, int(row), logdensity_fn) for row in rows)

    return diagnose


def _diagnose_at(failures: Any, chain: int, row: int, logdensity_fn: Callable | None) -> Diagnosis:
    point = jax.tree.map(lambda leaf: leaf[chain, row], failures)
    where = {"phase": "sampling", "chain": chain, "iteration": row}
    if logdensity_fn is not None:
        return diagnose_position(logdensity_fn, point, **where)  # type: ignore[arg-type]
    values = labelled_leaves(point)
    return Diagnosis(
        potential_energy=math.nan,
        nonfinite_coordinates=(),
        sites=(),
        position={name: np.asarray(value) for name, value in values.items()},
        source="logdensity_fn",
        **where,  # type: ignore[arg-type]
    )


def policed(algorithm: SamplingAlgorithm, logdensity_fn: Callable, guard: Guard) -> SamplingAlgorithm:
    """``algorithm`` whose ``step``, run eagerly (outside ``jit``), applies ``guard`` as it goes.

    Each eager step's failure is noted; when the guard's stop rules
    (:func:`~robusthmc._outcome.sampling_stop`) stop the chain at this step,
    the step raises, naming the failing point.  Inside ``jit``, ``vmap`` or
    ``scan`` nothing is known yet: :func:`settle` applies the guard after.
    """
    failures: list[bool] = []

    def step(rng_key, state):
        new_state, info = algorithm.step(rng_key, state)
        if isinstance(info.nonfinite, jax.core.Tracer):
            return new_state, info
        failures.append(bool(info.nonfinite))
        halt, at = sampling_stop(failures, guard)
        if halt is not Halt.RUNNING and at == len(failures) - 1:
            point = failure_position(info)
            diagnosis = diagnose_position(logdensity_fn, point, phase="sampling", chain=0, iteration=at)
            record = ChainRecord(
                chain=0,
                halt=halt,
                halted_at=at,
                num_warmup=0,
                nonfinite=(0, sum(failures)),
                transitions=(0, len(failures)),
                steps_capped=0,
                step_size=math.nan,
                diagnose=lambda which: (diagnosis,),
            )
            failures.clear()  # a caller that catches the error and goes on starts afresh
            settle_run([record], guard, samples={})
        return new_state, info

    return SamplingAlgorithm(algorithm.init, step)
