"""Guarded ``window_adaptation``: BlackJAX's, with the guarded kernel, and errors where it is silent."""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from blackjax.adaptation.base import return_all_adapt_info
from blackjax.adaptation.window_adaptation import window_adaptation as blackjax_window_adaptation
from blackjax.base import AdaptationAlgorithm

from robusthmc._arguments import _positive, _real
from robusthmc._diagnosis import Diagnosis, Halt
from robusthmc._guard import Guard, checked_guard
from robusthmc._outcome import ChainRecord, Which, settle_run
from robusthmc.blackjax._infos import failure_position
from robusthmc.blackjax._kernels import guarded_twin
from robusthmc.jax._logdensity import check_callable, check_position_values, diagnose_position, stop_point

__all__ = ["window_adaptation"]


def _probability(value: Any) -> bool:
    real = _real(value)
    return real is not None and (not isinstance(real, float) or 0 < real < 1)


class _Trace(NamedTuple):
    """What the guard keeps of each adaptation step."""

    nonfinite: jax.Array
    step_size: jax.Array  # after the step's update
    failure: Any  # the failing trajectory edge's position


def window_adaptation(
    algorithm: Any,
    logdensity_fn: Callable,
    *args: Any,
    guard: Guard | None = None,
    adaptation_info_fn: Callable = return_all_adapt_info,
    **kwargs: Any,
) -> AdaptationAlgorithm:
    """Guarded ``blackjax.window_adaptation``: the same arguments and defaults, plus ``guard``.

    ``algorithm`` is ``blackjax.nuts`` or ``blackjax.hmc`` (or robusthmc's
    twins); the adaptation runs the guarded kernel.  ``run`` returns what
    BlackJAX's returns, and raises where BlackJAX is silent:

    * :class:`~robusthmc.InitializationError` for a start whose log density
      or gradient is not finite, naming the coordinates;
    * :class:`~robusthmc.StepSizeCollapseError` when the adapted step size
      falls below ``Guard.min_step_size``;
    * :class:`~robusthmc.NonFiniteError` with ``on_nonfinite="raise"`` when a
      trajectory at a step size no larger than the adapted one failed (larger
      ones are adaptation's probes).

    Examples
    --------
    >>> import jax, jax.numpy as jnp
    >>> from robusthmc import blackjax as rb
    >>> logdensity = lambda x: -0.5 * jnp.sum(x**2)
    >>> warmup = rb.window_adaptation(rb.nuts, logdensity)
    >>> (state, parameters), _ = warmup.run(jax.random.key(0), jnp.ones(2), num_steps=200)
    >>> algo = rb.nuts(logdensity, **parameters)
    """
    guard = checked_guard(guard, "blackjax")
    check_callable(logdensity_fn, "logdensity_fn", "window_adaptation")
    for name, rule in (("initial_step_size", _positive), ("target_acceptance_rate", _probability)):
        if name in kwargs and not rule(kwargs[name]):
            allowed = "a finite number > 0" if rule is _positive else "a number strictly between 0 and 1"
            raise ValueError(f"window_adaptation({name}={kwargs[name]!r:.60}): must be {allowed}")
    twin = guarded_twin(algorithm)
    if twin is None:
        raise TypeError(
            f"window_adaptation(algorithm={algorithm!r}): robusthmc guards blackjax.nuts, "
            "blackjax.hmc and the HMC family (an init and a build_kernel(integrator)); for another "
            "algorithm, pass robusthmc.jax.guarded_logdensity(logdensity_fn) to blackjax.window_adaptation."
        )

    def info_fn(state, info, adaptation_state):
        kept = _Trace(info.nonfinite, adaptation_state.step_size, failure_position(info))
        return adaptation_info_fn(state, info, adaptation_state), kept

    upstream = blackjax_window_adaptation(twin, logdensity_fn, *args, adaptation_info_fn=info_fn, **kwargs)
    initial_step_size = kwargs.get("initial_step_size", 1.0)

    def run(rng_key, position, num_steps=1000):
        if isinstance(num_steps, bool) or not isinstance(num_steps, numbers.Integral) or num_steps < 1:
            raise ValueError(
                f"window_adaptation(...).run(num_steps={num_steps!r:.60}): must be an integer >= 1"
            )
        check_position_values(position)
        results, (info, trace) = upstream.run(rng_key, position, num_steps)
        _settle_adaptation(
            trace,
            results.parameters["step_size"],
            initial_step_size,
            guard,
            logdensity_fn,
            results.state.position,
        )
        return results, info

    return AdaptationAlgorithm(run)


def _settle_adaptation(
    trace: _Trace,
    adapted_step: Any,
    initial_step_size: float,
    guard: Guard,
    logdensity_fn: Callable,
    last_position: Any,
) -> None:
    if isinstance(adapted_step, jax.core.Tracer):  # run inside jit: nothing to read yet
        return
    failed = np.asarray(trace.nonfinite, dtype=bool)
    after = np.asarray(trace.step_size, dtype=np.float64)
    used = np.concatenate([[initial_step_size], after[:-1]])  # each step ran at the previous one's
    adapted = float(adapted_step)
    num_steps = len(failed)
    halt, at, step_size = Halt.RUNNING, None, adapted
    collapsed = np.flatnonzero(after < guard.min_step_size)
    evidence = np.flatnonzero(failed & (used <= adapted))
    if collapsed.size:
        halt, at, step_size = Halt.STEP_SIZE_COLLAPSE, int(collapsed[0]), float(after[collapsed[0]])
    elif adapted < guard.min_step_size:
        halt, at = Halt.STEP_SIZE_COLLAPSE, num_steps - 1
    elif guard.on_nonfinite == "raise" and evidence.size:
        halt, at = Halt.NONFINITE, num_steps - 1

    def diagnose(which: Which) -> tuple[Diagnosis, ...]:
        rows = np.flatnonzero(failed)
        if which == "first":
            rows = (evidence if evidence.size else rows)[:1]
        elif which == "latest":
            rows = rows[-1:]
        else:
            rows = np.concatenate(
                [rows[: guard.max_recorded_failures], rows[guard.max_recorded_failures :][-1:]]
            )
        return tuple(
            diagnose_position(
                logdensity_fn,
                jax.tree.map(lambda leaf, r=row: jnp.asarray(leaf)[r], trace.failure),
                phase="warmup",
                chain=0,
                iteration=int(row),
            )
            for row in rows
        )

    record = ChainRecord(
        chain=0,
        halt=halt,
        halted_at=at,
        num_warmup=num_steps,
        nonfinite=(int(failed.sum()), 0),
        transitions=(num_steps, 0),
        steps_capped=0,
        step_size=step_size if math.isfinite(step_size) else adapted,
        diagnose=diagnose,
        inspect_stop=lambda: stop_point(logdensity_fn, last_position),
    )
    settle_run([record], guard, samples={})
