"""What a finished (or stopped) guarded run amounts to: an error, a warning, or nothing.

Both backends reduce each chain to a :class:`ChainRecord` and call
:func:`settle_run`; the policy of the :class:`~robusthmc.Guard` is applied
here and nowhere else.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from robusthmc._diagnosis import Diagnosis, Halt, Phase, SiteProblem, StopPoint
from robusthmc._errors import (
    FrozenChainWarning,
    InitializationError,
    NonFiniteError,
    NonFiniteWarning,
    RetryLimitError,
    RobustHMCError,
    StepCapWarning,
    StepSizeCollapseError,
    StuckChainError,
    user_stacklevel,
)
from robusthmc._guard import Guard
from robusthmc._render import (
    count_text,
    headline,
    plural,
    render_diagnosis,
    render_site_problem,
    render_values,
)

__all__ = ["ChainRecord", "Which", "sampling_stop", "settle_run", "transition_halt", "user_stacklevel"]

Which = Literal["first", "latest", "all"]


@dataclass(frozen=True)
class ChainRecord:
    """One chain's guard record at the end of a run.

    Attributes
    ----------
    chain : int
    halt : Halt
        Why the chain stopped early (``Halt.RUNNING`` if it did not).
    halted_at : int or None
        The transition, counted from the start of warmup, that stopped it.
    num_warmup : int
        Warmup transitions in the run.
    nonfinite : tuple of int
        Non-finite transitions in (warmup, sampling).
    transitions : tuple of int
        Transitions run in (warmup, sampling).
    steps_capped : int
        HMC transitions cut at ``Guard.max_steps_per_transition``.
    step_size : float
        The step size when the run ended or stopped.
    diagnose : callable
        ``diagnose("first" | "latest" | "all")``: diagnoses of the first
        failure, of the latest one, or of all kept (the first few, then the
        latest).  Evaluating a model at failure points costs time, so it is
        called only when an error or a warning needs it, for what it needs.
    inspect_stop : callable or None
        ``inspect_stop()``: the :class:`StopPoint` at the chain's last point, to
        explain a collapsed step size (``None`` where the backend cannot evaluate it).
    frozen : tuple of SiteProblem
        The latents that kept one value through the chain's sampling
        (:func:`~robusthmc._diagnosis.frozen_latents` of its draws).
    """

    chain: int
    halt: Halt
    halted_at: int | None
    num_warmup: int
    nonfinite: tuple[int, int]
    transitions: tuple[int, int]
    steps_capped: int
    step_size: float
    diagnose: Callable[[Which], tuple[Diagnosis, ...]]
    inspect_stop: Callable[[], StopPoint | None] | None = None
    frozen: tuple[SiteProblem, ...] = ()

    @property
    def phase(self) -> Phase:
        """The phase the chain stopped in."""
        if self.halt is Halt.INITIALIZATION:
            return "initialization"
        if self.halted_at is not None and self.halted_at < self.num_warmup:
            return "warmup"
        return "sampling"


#: Sampling failures up to this share of sampling transitions (and always one) are
#: isolated: a trajectory that flew out until it overflowed, as a divergence does.
ISOLATED_SAMPLING_SHARE = 0.001


def _worth_a_warning(record: ChainRecord) -> bool:
    """Whether the chain's failures say something about the posterior.

    Warmup's never do (Stan only logs them): adaptation tries absurd step sizes
    at its start and again at every window's restart, and healthy models then
    overflow.  In sampling, an isolated failure is what a divergence that flew
    out to overflow looks like; more mean a region the chain keeps meeting,
    whose mass the rejections cut from the posterior.  All are counted either
    way, and a chain that cannot move raises whatever the phase.
    """
    return record.nonfinite[1] > max(1, ISOLATED_SAMPLING_SHARE * record.transitions[1])


def transition_halt(
    xp: Any,
    guard: Guard,
    previous: Any,
    *,
    in_warmup: Any,
    warmup_ends: Any,
    failed: Any,
    consecutive: Any,
    step_size: Any,
    smallest_failure_step: Any,
    step_size_adapted: bool = True,
    step_size_search_failed: Any = False,
) -> Any:
    """Why the guard stops a chain after a transition: a :class:`Halt` code, ``RUNNING`` to go on.

    Every kernel asks this after each transition, with its own array module
    ``xp`` (``jax.numpy`` inside NumPyro's compiled transition, where the core
    cannot run otherwise; ``numpy`` in Pyro's kernel). ``previous`` is the
    chain's code so far, ``consecutive`` its failures in a row (this one
    included), ``step_size`` the step size after this transition's
    adaptation, and ``smallest_failure_step`` the smallest step size a warmup
    transition failed at (``inf`` for none). The reasons, a later one winning
    and a chain already stopped keeping its own:

    * ``STEP_SIZE_COLLAPSE``: in warmup, an adapted step size below ``Guard.min_step_size``;
    * ``STEP_SIZE_SEARCH``: in warmup, the kernel's step-size search failed;
    * ``STUCK``: in sampling, ``Guard.max_consecutive_failures`` failures in a row;
    * ``NONFINITE``, with ``on_nonfinite="raise"``: a failure in sampling, or at
      warmup's end a warmup failure at a step size no larger than the one adapted (only
      those are evidence about the model: larger ones were probes adaptation did not keep).

    Examples
    --------
    >>> import numpy as np
    >>> rules = dict(warmup_ends=False, step_size=0.1, smallest_failure_step=np.inf)
    >>> Halt(transition_halt(np, Guard(max_consecutive_failures=3), 0, in_warmup=False,
    ...                      failed=True, consecutive=3, **rules))
    <Halt.STUCK: 2>
    >>> Halt(transition_halt(np, Guard(on_nonfinite="raise"), 0, in_warmup=False,
    ...                      failed=True, consecutive=1, **rules))
    <Halt.NONFINITE: 1>
    """
    in_warmup, warmup_ends, failed = (xp.asarray(v) for v in (in_warmup, warmup_ends, failed))
    halt = xp.where(
        in_warmup & (step_size < guard.min_step_size) & step_size_adapted,
        int(Halt.STEP_SIZE_COLLAPSE),
        int(Halt.RUNNING),
    )
    halt = xp.where(in_warmup & xp.asarray(step_size_search_failed), int(Halt.STEP_SIZE_SEARCH), halt)
    halt = xp.where(~in_warmup & (consecutive >= guard.max_consecutive_failures), int(Halt.STUCK), halt)
    if guard.on_nonfinite == "raise":
        evidence = (failed & ~in_warmup) | (warmup_ends & (smallest_failure_step <= step_size))
        halt = xp.where(evidence, int(Halt.NONFINITE), halt)
    return xp.where(previous != Halt.RUNNING, previous, halt)


def sampling_stop(failed: Any, guard: Guard) -> tuple[Halt, int | None]:
    """Where the guard stops a chain, given which of its sampling transitions failed.

    :func:`transition_halt`'s rules for sampling, asked after the run by a loop
    that cannot stop as it goes (a user's compiled BlackJAX loop): ``on_nonfinite="raise"``
    stops at the first failure; every policy stops a chain at its
    ``Guard.max_consecutive_failures``-th failure in a row.

    Examples
    --------
    >>> sampling_stop([False, True, True], Guard(on_nonfinite="raise"))
    (<Halt.NONFINITE: 1>, 1)
    >>> sampling_stop([True, True, False], Guard(max_consecutive_failures=2))
    (<Halt.STUCK: 2>, 1)
    >>> sampling_stop([False, True], Guard())
    (<Halt.RUNNING: 0>, None)
    """
    failed = np.asarray(failed, dtype=bool).reshape(-1)
    if not failed.any():
        return Halt.RUNNING, None
    consecutive = 0
    for index, fails in enumerate(failed):  # the kernels' rules, transition by transition
        consecutive = consecutive + 1 if fails else 0
        halt = transition_halt(
            np,
            guard,
            Halt.RUNNING,
            in_warmup=False,
            warmup_ends=False,
            failed=fails,
            consecutive=consecutive,
            step_size=math.inf,
            smallest_failure_step=math.inf,
        )
        if halt != Halt.RUNNING:
            return Halt(int(halt)), index
    return Halt.RUNNING, None


def _first_fixes(failures: Sequence[Diagnosis]) -> list[str]:
    fixes: dict[str, None] = {}
    for diagnosis in failures:
        for fix in diagnosis.fixes:
            fixes.setdefault(fix)
    return list(fixes)


def _error_for(record: ChainRecord, guard: Guard, samples: Mapping[str, Any]) -> RobustHMCError:
    # on_nonfinite="raise" stops at the first failure; the other stops are about the latest.
    failures = record.diagnose("first" if record.halt is Halt.NONFINITE else "latest")
    diagnosis = failures[0] if failures else None
    detail = ("\n" + render_diagnosis(diagnosis)) if diagnosis else ""
    fix_text = "".join(f"\n  fix: {fix}" for fix in _first_fixes(failures))
    where = f"chain {record.chain}, {record.phase}, iteration {record.halted_at}"
    kept = "Draws collected before it are in err.samples; the diagnosis is err.diagnosis."
    if record.halt is Halt.NONFINITE:
        if record.phase == "warmup":
            what = (
                f"at the end of warmup: a warmup trajectory at a step size no larger than the adapted "
                f"one ({record.step_size:.3g}) met a non-finite log density or gradient, and "
                f"Guard(on_nonfinite='raise') stops for it (failures at larger step sizes are "
                f"adaptation's probes: counted, not raised)."
            )
        else:
            what = (
                "the trajectory met a non-finite log density or gradient and "
                "Guard(on_nonfinite='raise') stops at the first one."
            )
        return NonFiniteError(
            f"{headline(failures)} ({where}; Guard(on_nonfinite='raise'))\n{where}: {what}{detail}\n{kept}"
            f"\nGuard(on_nonfinite='warn') rejects such proposals and goes on.",
            diagnosis=diagnosis,
            samples=samples,
        )
    if record.halt is Halt.STUCK:
        return StuckChainError(
            f"{headline(failures)} (chain {record.chain} stuck: {guard.max_consecutive_failures} failed "
            f"transitions in a row; {record.phase}, iteration {record.halted_at})\n"
            f"{where}: {plural(guard.max_consecutive_failures, 'transition')} in a row met a "
            f"non-finite log density or gradient (Guard.max_consecutive_failures="
            f"{guard.max_consecutive_failures}); the chain cannot move.{detail}{fix_text}\n{kept}",
            diagnosis=diagnosis,
            samples=samples,
        )
    if record.halt is Halt.STEP_SIZE_COLLAPSE:
        failed = count_text(record.nonfinite, record.transitions)
        stop = record.inspect_stop() if record.inspect_stop is not None else None
        found = stop.problems if stop is not None else ()
        if found:  # what holds the chain at its stop (a drift, float32) explains more than a failure
            first = headline([_as_diagnosis(found, record)])
            detail = "\n" + "\n".join("  " + line for p in found for line in render_site_problem(p)) + detail
            fix_text = "".join(f"\n  fix: {c.fix}" for p in found for c in p.causes) + fix_text
        elif failures:
            first = headline(failures)
        else:
            first = (
                "no site's log density failed; fix: put the latents on a unit scale (reparameterize: "
                "non-centred, standardised predictors), or run in float64"
            )
        return StepSizeCollapseError(
            f"{first} (step size collapsed to {record.step_size:.3g} < Guard.min_step_size="
            f"{guard.min_step_size:g}; {where})\n"
            f"{where}: the adapted step size fell to {record.step_size:.3g}, below "
            f"Guard.min_step_size={guard.min_step_size:g}. Proposals kept being rejected "
            f"(non-finite transitions: {failed}); HMC would now take ever more leapfrog "
            f"steps per transition and never finish.{detail}{fix_text}\n"
            f"Usual causes: a log density that is wrong in part of the space (float32 "
            f"tails: try float64 or an exact distribution), or a badly scaled posterior "
            f"(reparameterize).\n{kept}",
            diagnosis=diagnosis,
            samples=samples,
        )
    if record.halt is Halt.STEP_SIZE_SEARCH:
        settled = "accepted" if record.step_size > 1 else "rejected"
        first = (
            headline(failures)
            if failures
            else (
                f"the heuristic step-size search ran to {record.step_size:.3g} (every probe {settled}); "
                f"fix: find_heuristic_step_size=False, or a step_size that suits the model"
            )
        )
        return RetryLimitError(
            f"{first} ({where})\n"
            f"{where}: the heuristic step-size search ran the step size to {record.step_size:.3g}, "
            f"the end of the float range, without settling: every probe was "
            f"{settled}.{detail}{fix_text}\n"
            f"Pass find_heuristic_step_size=False, or a step_size that suits the model.\n{kept}",
            diagnosis=diagnosis,
            samples=samples,
        )
    assert record.halt is Halt.INITIALIZATION
    return InitializationError(
        f"{headline(failures)} (chain {record.chain}: no valid initial point)\n"
        f"chain {record.chain}: the initial-point search found no valid point.{detail}{fix_text}",
        diagnosis=diagnosis,
    )


def _as_diagnosis(problems: Sequence[SiteProblem], record: ChainRecord) -> Diagnosis:
    return Diagnosis(record.phase, record.chain, record.halted_at, float("nan"), (), tuple(problems))


def settle_run(
    records: Sequence[ChainRecord],
    guard: Guard,
    *,
    samples: Mapping[str, Any],
) -> None:
    """Raise for a chain that stopped, or warn about rejected proposals, as the guard says.

    Parameters
    ----------
    records : sequence of ChainRecord
        One per chain.
    guard : Guard
    samples : mapping
        Draws collected before the first stop, grouped by chain.

    Raises
    ------
    InitializationError, NonFiniteError, StuckChainError, StepSizeCollapseError, RetryLimitError
        For the first chain (in chain order) that stopped early.
    """
    for record in records:
        if record.halt is not Halt.RUNNING:
            raise _error_for(record, guard, samples)
    total = sum(sum(record.nonfinite) for record in records)
    if guard.on_nonfinite == "warn" and any(_worth_a_warning(record) for record in records):
        per_chain = "; ".join(
            f"chain {r.chain}: {count_text(r.nonfinite, r.transitions)}" for r in records if sum(r.nonfinite)
        )
        # The first failures can be early-warmup accidents; the latest shows what persists.
        kept = next(r for r in records if sum(r.nonfinite)).diagnose("all")
        fixes = "".join(f"\n  fix: {fix}" for fix in _first_fixes(kept))
        example = f"\nFirst failure:\n{render_diagnosis(kept[0])}" if kept else ""
        if len(kept) > 1:
            example += f"\nLatest failure:\n{render_diagnosis(kept[-1])}"
        warnings.warn(
            NonFiniteWarning(
                f"{headline(kept)} ({per_chain} rejected: do not trust the draws as they are)\n"
                f"{plural(total, 'transition')} met a non-finite log density or gradient and were "
                f"rejected (counted in the 'nonfinite' field, apart from divergences) - "
                f"{per_chain}. Each rejection cuts a region the chain keeps meeting out of the "
                f"posterior, so the draws are biased until the cause is fixed.{fixes}{example}"
                "\nGuard(on_nonfinite='raise') stops at the first one; 'ignore' silences this."
            ),
            stacklevel=user_stacklevel(),
        )
    frozen = [(record.chain, problem) for record in records for problem in record.frozen]
    if frozen:
        chain, problem = frozen[0]
        chains = sorted({c for c, _ in frozen})
        warnings.warn(
            FrozenChainWarning(
                f"{problem.causes[0].headline(problem.site)} (chain {chain}"
                + (f"; {plural(len(chains) - 1, 'more chain')}" if len(chains) > 1 else "")
                + ")\nThese draws are not a sample of the posterior. "
                + "; ".join(f"chain {c}: {p.causes[0].brief}" for c, p in frozen)
            ),
            stacklevel=user_stacklevel(),
        )
    capped = sum(record.steps_capped for record in records)
    if capped:
        warnings.warn(
            StepCapWarning(
                f"{plural(capped, 'HMC transition')} {'was' if capped == 1 else 'were'} cut at "
                f"Guard.max_steps_per_transition="
                f"{guard.max_steps_per_transition} leapfrog steps (trajectory_length / "
                f"step_size asked for more), so they had shorter trajectories than asked. "
                f"Raise the cap, or use NUTS."
            ),
            stacklevel=user_stacklevel(),
        )


def initialization_error(
    diagnosis: Diagnosis,
    *,
    attempts: int,
    search: str,
    values_tried: tuple[Mapping[str, Any], Mapping[str, Any]],
) -> InitializationError:
    """The error for a capped initial-point search that found no valid point.

    ``search`` names the cap (``"Guard.max_init_attempts=100"``) or the search
    (``"numpyro's initialize_model"``); ``values_tried`` holds two of the
    points tried, the first and the last where they are known (constrained values).
    """
    more = (
        "Guard(max_init_attempts=...)"
        if search.startswith("Guard.")
        else "another rng_key, or init_strategy=init_to_median() or init_to_sample()"
    )
    return InitializationError(
        f"{headline([diagnosis])} ({plural(attempts, 'start')} tried)\n"
        f"cannot find valid initial parameters: {plural(attempts, 'attempt')} "
        f"({search}) gave a non-finite log density or gradient.\n"
        + render_diagnosis(diagnosis)
        + f"\n  values tried: {render_values(values_tried[0])}, "
        f"{render_values(values_tried[1])}"
        + f"\n  If only a few points are bad, another start may be good: {more}; "
        "better, apply the fix above.",
        diagnosis=diagnosis,
        attempts=attempts,
        values_tried=tuple(dict(values) for values in values_tried),
    )


def invalid_start_error(diagnosis: Diagnosis, *, given: str, instead: str) -> InitializationError:
    """The error for a starting point the user gave (``given`` names how) that is not valid.

    ``instead`` says how to let robusthmc search instead, e.g. ``"leave init_params out"``.
    """
    return InitializationError(
        f"{headline([diagnosis])} (at the start: {given})\n"
        f"{given} is not a valid starting point: the log density or its gradient is not "
        f"finite there.\n{render_diagnosis(diagnosis)}\n  fix: start where the model is defined "
        f"(inside every support, away from the failing terms above), or {instead}: robusthmc "
        f"then searches for one (Guard.max_init_attempts).",
        diagnosis=diagnosis,
        attempts=1,
        values_tried=(dict(diagnosis.position),),
    )
