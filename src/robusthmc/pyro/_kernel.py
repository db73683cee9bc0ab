"""The guard Pyro's ``NUTS`` and ``HMC`` gain, transition by transition.

Pyro's kernels run in Python, transition by transition, so the guard sits in
three places: around the potential (``_potential``: a numerical exception
becomes a NaN energy, a rejected proposal; a non-finite value or gradient is
noted), around ``sample`` (one transition: count, keep, and stop as the
:class:`~robusthmc.Guard` says, through the same core decisions as the NumPyro
kernels), and around the initial-point search (``_initialize``: capped at
``Guard.max_init_attempts``, its failure diagnosed site by site). On a healthy
model nothing is drawn, reordered or recomputed: the draws are Pyro's.
"""

from __future__ import annotations

import contextvars
import dataclasses
import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any, NamedTuple

import numpy as np
import pyro
import torch
from pyro import poutine
from pyro.infer.autoguide.initialization import InitMessenger, init_to_value
from pyro.ops.integrator import potential_grad
from torch.distributions import biject_to

from robusthmc._arguments import check_kernel_options
from robusthmc._diagnosis import (
    Diagnosis,
    Halt,
    Phase,
    PointEvaluation,
    SiteProblem,
    StopPoint,
    frozen_latents,
    inspect_stop,
    start_outside_support,
)
from robusthmc._errors import RobustHMCError
from robusthmc._guard import Guard, checked_guard
from robusthmc._outcome import (
    ChainRecord,
    Which,
    initialization_error,
    invalid_start_error,
    settle_run,
    transition_halt,
)
from robusthmc.pyro._compat import current_chain, in_worker_process
from robusthmc.pyro._initialize import InitialSearch
from robusthmc.pyro._potential import GuardedPotential, Monitor, SupportWall, observes_latents
from robusthmc.pyro._sites import (
    diagnose_point,
    diagnose_potential_point,
    evaluate_point,
    exception_text,
    latent_sites,
    latents_outside_support,
    support_bounds,
)

__all__ = ["SETTLED_BY_RUN", "WORKER_RECORD", "GuardedKernel"]

#: The diagnostics key under which a worker process sends its chain's guard record.
WORKER_RECORD = "guard_record"
#: Inside ``MCMC.run`` (robusthmc's hook): the chains' records, settled together when it returns.
SETTLED_BY_RUN: contextvars.ContextVar[list[ChainRecord] | None] = contextvars.ContextVar(
    "robusthmc_settled_by_run", default=None
)


class _Failure(NamedTuple):
    """The first numerical failure of a transition: where the potential was, and why."""

    iteration: int
    phase: Phase
    z: dict[str, torch.Tensor]
    exception: BaseException | None
    step_size: float


class GuardedKernel:
    """What ``NUTS`` and ``HMC`` add to Pyro's: the guard. Mixed in before Pyro's class."""

    guard: Guard

    def __init__(self, *args: Any, guard: Guard | None = None, **kwargs: Any) -> None:
        upstream = next(c for c in type(self).__mro__ if c.__module__.startswith("pyro."))
        check_kernel_options(upstream, args, kwargs)
        self.guard = checked_guard(guard, "pyro")
        self._monitor = Monitor(self.guard)
        #: Non-finite transitions (warmup, sampling) of each chain drawn in this process.
        self.nonfinite_by_chain: dict[int, list[int]] = {}
        super().__init__(*args, **kwargs)

    # Pyro assigns ``self.potential_fn`` (in __init__ for potential_fn=, at setup
    # for a model); every assignment is wrapped.
    @property
    def potential_fn(self) -> Callable | None:
        return self._guarded_potential

    @potential_fn.setter
    def potential_fn(self, fn: Callable | None) -> None:
        self._guarded_potential = None if fn is None else GuardedPotential(fn, self._monitor)

    @property
    def num_steps(self) -> int:
        steps = super().num_steps  # type: ignore[misc]
        if steps > self.guard.max_steps_per_transition:
            self._capped_this_transition = True
            return self.guard.max_steps_per_transition
        return steps

    def setup(self, warmup_steps: int, *args: Any, **kwargs: Any) -> None:
        self._model_args, self._model_kwargs = args, kwargs
        self._nonfinite = [0, 0]
        chain = current_chain()
        if chain == 0:  # a new run
            self.nonfinite_by_chain.clear()
        self.nonfinite_by_chain[chain] = self._nonfinite  # (warmup, sampling), updated in place
        self._consecutive = 0
        self._steps_capped = 0
        self._kept: list[_Failure] = []
        self._latest: _Failure | None = None
        self._smallest_step_failure: _Failure | None = None
        self._evidence: _Failure | None = None  # the failure "raise" stops for
        self._stopped_at: dict[str, torch.Tensor] | None = None  # where the step size collapsed
        self._sampling_failures: list[int] = []
        self._draws: list[dict[str, torch.Tensor]] = []
        search = InitialSearch(self.guard)
        with search.installed():
            while True:
                try:
                    super().setup(warmup_steps, *args, **kwargs)  # type: ignore[misc]
                    break
                except Exception as error:
                    if not search.exhausted:  # a set-up trace raised: the search did not count it
                        search.rejected(error)
                    if search.exhausted:
                        raise self._initialization_error(search) from error
        if self._guarded_potential is not None and self.model is not None:  # type: ignore[attr-defined]
            self._guarded_potential.walls = observes_latents(
                self.model,  # type: ignore[attr-defined]
                args,
                kwargs,
                self.transforms,  # type: ignore[attr-defined]
                self.initial_params,  # type: ignore[attr-defined]
            )
        # Pyro does not check initial_params given by the user (nor, then, the data: its search
        # for a start does, see SupportWall): a chain would start on NaN, or sample wrong data.
        self._monitor.begin()
        try:
            if self.initial_params:  # type: ignore[attr-defined]
                with SupportWall(data=True):
                    potential_grad(self.potential_fn, dict(self.initial_params))  # type: ignore[attr-defined]
        finally:
            self._monitor.end()
        if self._monitor.failure is not None:
            z, exception = self._monitor.failure
            raise self._invalid_start_error(z, exception) from exception

    def _initialization_error(self, search: InitialSearch) -> RobustHMCError:
        model = self.model  # type: ignore[attr-defined]
        if search.last:
            at_last = InitMessenger(init_to_value(values=search.last))(model)
            trace = poutine.trace(at_last).get_trace(*self._model_args, **self._model_kwargs)
            transforms = {
                name: biject_to(site["fn"].support).inv  # type: ignore[attr-defined]
                for name, site in latent_sites(trace).items()
            }
            z = {name: transforms[name](value) for name, value in search.last.items() if name in transforms}
            diagnosis = diagnose_point(
                model,
                self._model_args,
                self._model_kwargs,
                transforms,
                z,
                phase="initialization",
                chain=current_chain(),
                exception=search.exception,
            )
            if outside := latents_outside_support(trace, given=search.given):  # a start the user gave
                diagnosis = start_outside_support(diagnosis, outside)
            first = {name: value.detach().cpu().numpy() for name, value in search.first.items()}
        else:  # every point raised before the search began: where the model got to at one
            diagnosis = self._diagnose_partial_run(search.exception)
            first = dict(diagnosis.position)
        return initialization_error(
            diagnosis,
            attempts=search.attempts,
            search=f"Guard.max_init_attempts={self.guard.max_init_attempts}",
            values_tried=(first, diagnosis.position),
        )

    def _diagnose_partial_run(self, exception: BaseException | None) -> Diagnosis:
        """Run the model at a prior draw; the sites it drew before raising, and the exception."""
        tracer = poutine.trace()
        with pyro.validation_enabled(False), tracer:
            try:
                self.model(*self._model_args, **self._model_kwargs)  # type: ignore[attr-defined]
            except Exception as error:
                exception = exception or error
        drawn = {
            name: np.asarray(site["value"].detach().cpu())  # type: ignore[union-attr]
            for name, site in latent_sites(tracer.trace).items()
        }
        return Diagnosis(
            phase="initialization",
            chain=current_chain(),
            iteration=None,
            potential_energy=float("nan"),
            nonfinite_coordinates=(),
            sites=(),
            position=drawn,
            exception=None if exception is None else exception_text(exception),
        )

    def _invalid_start_error(
        self, z: dict[str, torch.Tensor], exception: BaseException | None
    ) -> RobustHMCError:
        failure = _Failure(0, "initialization", z, exception, float(self.step_size))  # type: ignore[attr-defined]
        diagnosis = self._diagnose_failure(failure)
        return invalid_start_error(
            diagnosis, given="initial_params (given to MCMC)", instead="leave initial_params out"
        )

    def sample(self, params: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        self._monitor.begin()
        self._capped_this_transition = False
        step_size = float(self.step_size)  # type: ignore[attr-defined]  # adaptation changes it
        try:
            z = super().sample(params)  # type: ignore[misc]
        finally:
            self._monitor.end()
        iteration = self._t - 1  # type: ignore[attr-defined]
        warmup = iteration < self._warmup_steps  # type: ignore[attr-defined]
        self._steps_capped += self._capped_this_transition
        failure = None
        if self._monitor.failure is not None:
            failure = self._record_failure(iteration, warmup, *self._monitor.failure, step_size)
        else:
            self._consecutive = 0
        smallest = self._smallest_step_failure
        halt = transition_halt(
            np,
            self.guard,
            Halt.RUNNING,
            in_warmup=warmup,
            warmup_ends=iteration == self._warmup_steps - 1,  # type: ignore[attr-defined]
            failed=failure is not None,
            consecutive=self._consecutive,
            step_size=float(self.step_size),  # type: ignore[attr-defined]
            smallest_failure_step=math.inf if smallest is None else smallest.step_size,
        )
        if halt != Halt.RUNNING:
            self._stop(Halt(int(halt)), iteration, z, failure if not warmup else smallest)
        if not warmup:
            self._draws.append({name: value.detach().clone() for name, value in z.items()})
        return z

    def _stop(self, halt: Halt, iteration: int, z: dict[str, torch.Tensor], failure: _Failure | None) -> None:
        """Stop the run (raise) for ``halt``; ``failure`` is the one it names, if any."""
        if halt is Halt.STEP_SIZE_COLLAPSE:  # no failure is its cause: the step size is
            self._stopped_at, failure = z, None
        if halt is Halt.NONFINITE:
            self._evidence = failure
        self._halt(halt, iteration, cause=None if failure is None else failure.exception)

    def _record_failure(
        self,
        iteration: int,
        warmup: bool,
        z: dict[str, torch.Tensor],
        exception: BaseException | None,
        step_size: float,
    ) -> _Failure:
        failure = _Failure(iteration, "warmup" if warmup else "sampling", z, exception, step_size)
        smallest = self._smallest_step_failure
        if warmup and (smallest is None or step_size < smallest.step_size):
            self._smallest_step_failure = failure
        self._nonfinite[0 if warmup else 1] += 1
        self._consecutive += 1
        if len(self._kept) < self.guard.max_recorded_failures:
            self._kept.append(failure)
        self._latest = failure
        if not warmup:
            # A numerical failure is counted as such, not as a divergence.
            draw = iteration - self._warmup_steps  # type: ignore[attr-defined]
            self._sampling_failures.append(draw)
            divergences = self._divergences  # type: ignore[attr-defined]
            if divergences and divergences[-1] == draw:
                divergences.pop()
        return failure

    def _chain_record(self, halt: Halt, halted_at: int | None) -> ChainRecord:
        warmup_steps = self._warmup_steps  # type: ignore[attr-defined]
        done = self._t  # type: ignore[attr-defined]
        return ChainRecord(
            chain=current_chain(),
            halt=halt,
            halted_at=halted_at,
            num_warmup=warmup_steps,
            nonfinite=(self._nonfinite[0], self._nonfinite[1]),
            transitions=(min(done, warmup_steps), max(0, done - warmup_steps)),
            steps_capped=self._steps_capped,
            step_size=float(self.step_size),  # type: ignore[attr-defined]
            diagnose=self._diagnose,
            inspect_stop=self._inspect_stop if halt is Halt.STEP_SIZE_COLLAPSE else None,
            frozen=self._frozen() if halt is Halt.RUNNING else (),
        )

    def _frozen(self) -> tuple[SiteProblem, ...]:
        if not self._draws or not self._draws[0]:  # no draws, or a model with no latent site
            return ()
        # In the latents' own space, as MCMC.get_samples gives them: there a value pinned
        # against a bound of its support keeps one value while the chain moves.
        draws = {
            name: self._constrained(name, torch.stack([draw[name] for draw in self._draws])).cpu().numpy()
            for name in self._draws[0]
        }
        dtype = str(next(iter(self._draws[0].values())).dtype).removeprefix("torch.")
        return frozen_latents(draws, dtype, self._support_bounds)

    def _constrained(self, name: str, z: torch.Tensor) -> torch.Tensor:
        transforms = getattr(self, "transforms", None) or {}  # none with a bare potential_fn
        return (transforms[name].inv(z) if name in transforms else z).detach()

    def _support_bounds(self) -> dict[str, tuple[Any, Any]]:
        """The latents' support bounds, from a trace of the model at the last draw."""
        if self.model is None:  # type: ignore[attr-defined]
            return {}
        last = {name: self._constrained(name, z) for name, z in self._draws[-1].items()}
        at_last = InitMessenger(init_to_value(values=last))(self.model)  # type: ignore[attr-defined]
        with torch.random.fork_rng(devices=[]), pyro.validation_enabled(False):
            trace = poutine.trace(at_last).get_trace(*self._model_args, **self._model_kwargs)
        return support_bounds(trace)

    def _inspect_stop(self) -> StopPoint | None:
        z = self._stopped_at
        if not z or self.model is None:  # type: ignore[attr-defined]
            return None
        dtype = next(iter(z.values())).dtype

        def evaluate(points: Sequence[Mapping[str, Any]]) -> list[PointEvaluation]:
            evaluations = []
            for point in points:
                tensors = {name: torch.as_tensor(value, dtype=dtype) for name, value in point.items()}
                evaluation = evaluate_point(
                    self.model,  # type: ignore[attr-defined]
                    self._model_args,
                    self._model_kwargs,
                    self.transforms,  # type: ignore[attr-defined]
                    tensors,
                )
                raised = PointEvaluation({"(the model raised)": float("nan")}, {}, {}, {}, {})
                evaluations.append(raised if evaluation is None else evaluation)
            return evaluations

        numpy_z = {name: value.detach().cpu().numpy() for name, value in z.items()}
        return inspect_stop(evaluate, numpy_z, str(dtype).removeprefix("torch."))

    def _diagnose(self, which: Which) -> tuple[Diagnosis, ...]:
        if which == "first":
            failures = [self._evidence] if self._evidence is not None else self._kept[:1]
        elif which == "latest":
            failures = [self._latest] if self._latest is not None else []
        else:
            failures = list(self._kept)
            if self._latest is not None and self._latest not in failures:
                failures.append(self._latest)
        return tuple(self._diagnose_failure(f) for f in failures if f is not None)

    def _diagnose_failure(self, failure: _Failure) -> Diagnosis:
        phase, chain = failure.phase, current_chain()
        if self.model is None:  # type: ignore[attr-defined]
            assert self._guarded_potential is not None  # a kernel has a model or a potential
            return diagnose_potential_point(
                self._guarded_potential.potential_fn,
                failure.z,
                phase=phase,
                chain=chain,
                iteration=failure.iteration,
                exception=failure.exception,
            )
        return diagnose_point(
            self.model,  # type: ignore[attr-defined]
            self._model_args,
            self._model_kwargs,
            self.transforms,  # type: ignore[attr-defined]
            failure.z,
            phase=phase,
            chain=chain,
            iteration=failure.iteration,
            exception=failure.exception,
        )

    def _samples_so_far(self) -> dict[str, np.ndarray]:
        transforms = self.transforms or {}  # type: ignore[attr-defined]
        if not self._draws:  # in warmup: one empty array a site, (chain, 0, ...), as NumPyro gives
            start = self.initial_params or {}  # type: ignore[attr-defined]
            return {
                name: np.empty((1, 0, *(transforms[name].inv(value) if name in transforms else value).shape))
                for name, value in start.items()
            }
        samples = {}
        for name in self._draws[0]:
            stacked = torch.stack([draw[name] for draw in self._draws])
            value = transforms[name].inv(stacked) if name in transforms else stacked
            samples[name] = value.detach().cpu().numpy()[None]  # (chain, draw, ...)
        return samples

    def _halt(self, halt: Halt, iteration: int, cause: BaseException | None = None) -> None:
        try:
            settle_run([self._chain_record(halt, iteration)], self.guard, samples=self._samples_so_far())
        except RobustHMCError as error:
            raise error from cause

    def diagnostics(self) -> dict[str, Any]:
        diagnostics = super().diagnostics()  # type: ignore[misc]
        diagnostics["nonfinite"] = list(self._sampling_failures)
        if in_worker_process():
            # A worker's warnings would stay in the worker: its record goes to the parent
            # with the diagnostics, already diagnosed, and the parent's MCMC.run settles.
            record = self._chain_record(Halt.RUNNING, None)
            diagnoses = record.diagnose("all") if sum(record.nonfinite) else ()
            diagnostics[WORKER_RECORD] = dataclasses.replace(record, diagnose=_Diagnosed(diagnoses))
        return diagnostics

    def cleanup(self) -> None:
        # Pyro calls this at the end of a chain's run (sometimes twice); the first call reports.
        if self._warmup_steps is None or in_worker_process():  # type: ignore[attr-defined]
            return super().cleanup()  # type: ignore[misc]
        record = self._chain_record(Halt.RUNNING, None)
        super().cleanup()  # type: ignore[misc]
        pending = SETTLED_BY_RUN.get()
        if pending is not None:  # inside MCMC.run: one report for all chains, after its bars close
            pending.append(record)
        else:
            settle_run([record], self.guard, samples={})


@dataclasses.dataclass(frozen=True)
class _Diagnosed:
    """``ChainRecord.diagnose`` for a chain diagnosed in its worker process (picklable)."""

    diagnoses: tuple[Diagnosis, ...]

    def __call__(self, which: Which) -> tuple[Diagnosis, ...]:
        return {"first": self.diagnoses[:1], "latest": self.diagnoses[-1:], "all": self.diagnoses}[which]
