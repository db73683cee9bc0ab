"""Guarded swap-ins for Pyro's ``NUTS`` and ``HMC``.

Pyro's kernels run in Python, transition by transition, so the guard sits in
three places: around the potential (a numerical exception becomes a NaN
energy, a rejected proposal; a non-finite value or gradient is noted), around
``sample`` (one transition: count, keep, and stop as the :class:`~robusthmc.Guard`
says, through the same core decisions as the NumPyro kernels), and around the
initial-point search (capped at ``Guard.max_init_attempts``, its failure
diagnosed site by site). On a healthy model nothing is drawn, reordered or
recomputed: the draws are Pyro's.
"""

from __future__ import annotations

import contextlib
import contextvars
import dataclasses
import functools
import inspect
import math
import re
import sys
import traceback
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any, NamedTuple

import numpy as np
import pyro.infer
import pyro.infer.mcmc.api
import pyro.infer.mcmc.util as mcmc_util
import pyro.util
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
)
from robusthmc._errors import RobustHMCError
from robusthmc._guard import Guard, checked_guard
from robusthmc._outcome import ChainRecord, Which, initialization_error, invalid_start_error, settle_run
from robusthmc.pyro._sites import diagnose_point, diagnose_potential_point, evaluate_point, exception_text

__all__ = ["HMC", "NUTS", "SETTLED_BY_RUN", "WORKER_RECORD", "is_numerical_exception"]

#: torch.distributions' argument validation: a parameter or value outside its constraint.
_VALIDATION_MESSAGE = re.compile(r"^Expected (parameter|value argument)")
#: The object that runs a chain in a Pyro worker process.
_PYRO_WORKER = pyro.infer.mcmc.api._Worker
#: The diagnostics key under which a worker process sends its chain's guard record.
WORKER_RECORD = "guard_record"
#: Inside ``MCMC.run`` (robusthmc's hook): the chains' records, settled together when it returns.
SETTLED_BY_RUN: contextvars.ContextVar[list[ChainRecord] | None] = contextvars.ContextVar(
    "robusthmc_settled_by_run", default=None
)
#: What Pyro's ``_find_valid_initial_params`` says when its attempts are spent.
_NO_VALID_POINT = "cannot find valid initial params"


class OutsideSupportError(ValueError):
    """An observed value computed from the latents left its distribution's support."""


class _SupportWall(poutine.messenger.Messenger):
    """Reject a point where an observed value computed from the latents leaves its support.

    Pyro's ``MCMC`` runs with validation off, and torch's log densities are then
    finite formulas outside the support (``Exponential.log_prob(-1.0) = -1``): a
    wall in the posterior the sampler walks through, giving wrong draws without
    a word.  With validation on, Pyro would raise; here the point is rejected.
    """

    def _postprocess_message(self, msg: Any) -> None:
        value = msg["value"]
        if msg["type"] != "sample" or not msg["is_observed"] or not isinstance(value, torch.Tensor):
            return
        if torch.jit.is_tracing():  # jit_compile=True: a Python check cannot enter the trace
            return
        if value.requires_grad and not bool(msg["fn"].support.check(value.detach()).all()):
            raise OutsideSupportError(
                f"site {msg['name']!r}: the value computed from the latents lies outside the support "
                f"of {type(msg['fn']).__name__}"
            )


def is_numerical_exception(error: BaseException, guard: Guard) -> bool:
    """Whether an exception raised by the model is a numerical failure (a rejected point).

    ``Guard.numerical_exceptions`` decides when set.  By default only failures of
    the computation itself at a bad point count: torch's ``LinAlgError``,
    GPyTorch's ``NotPSDError`` and ``NanError``, and torch.distributions'
    argument validation ("Expected parameter ... to satisfy the constraint",
    raised when a parameter is NaN or out of its support).  Everything else is
    a bug and propagates unchanged: ``TypeError``, shape mismatches, and also
    Python's own ``ZeroDivisionError`` or ``OverflowError``, which tensors never
    raise, so they come from the user's code (the mean of an empty batch).

    Examples
    --------
    >>> import torch
    >>> from robusthmc import Guard
    >>> is_numerical_exception(torch.linalg.LinAlgError("singular"), Guard())
    True
    >>> is_numerical_exception(ZeroDivisionError("division by zero"), Guard())
    False
    """
    if not isinstance(error, BaseException):
        raise TypeError(f"is_numerical_exception(error={error!r}): expected an exception")
    if not isinstance(guard, Guard):
        raise TypeError(f"is_numerical_exception(guard={guard!r}): expected a robusthmc.Guard")
    if isinstance(error, OutsideSupportError):  # robusthmc's own: a wall in the posterior
        return True
    if guard.numerical_exceptions is not None:
        return isinstance(error, guard.numerical_exceptions)
    if isinstance(error, torch.linalg.LinAlgError):
        return True
    gpytorch_errors = sys.modules.get("gpytorch.utils.errors")
    if gpytorch_errors is not None and isinstance(
        error, (gpytorch_errors.NotPSDError, gpytorch_errors.NanError)
    ):
        return True
    return type(error) is ValueError and bool(_VALIDATION_MESSAGE.match(str(error)))


class _Failure(NamedTuple):
    """The first numerical failure of a transition: where the potential was, and why."""

    iteration: int
    phase: Phase
    z: dict[str, torch.Tensor]
    exception: BaseException | None
    step_size: float


class _Monitor:
    """Notes the first non-finite energy, non-finite gradient or numerical exception of a transition."""

    def __init__(self, guard: Guard) -> None:
        self.guard = guard
        self.failure: tuple[dict[str, torch.Tensor], BaseException | None] | None = None
        self._hooks: list[Any] = []

    def begin(self) -> None:
        self.failure = None

    def end(self) -> None:
        for handle in self._hooks:
            handle.remove()
        self._hooks.clear()

    def failed(self, z: Mapping[str, torch.Tensor], exception: BaseException | None) -> None:
        if self.failure is None:
            self.failure = ({k: v.detach().clone() for k, v in z.items()}, exception)

    def watch_gradients(self, z: Mapping[str, torch.Tensor]) -> None:
        check = functools.partial(self._check_gradient, z)
        for value in z.values():
            if value.requires_grad and value.is_leaf:
                self._hooks.append(value.register_hook(check))

    def _check_gradient(self, z: Mapping[str, torch.Tensor], gradient: torch.Tensor) -> None:
        # NaN or inf anywhere makes the sum non-finite: one reduction and one sync per latent.
        if not math.isfinite(float(gradient.sum())):
            self.failed(z, None)

    def __getstate__(self) -> dict[str, Any]:
        return {"guard": self.guard, "failure": None, "_hooks": []}


def _observes_latents(
    model: Callable, args: tuple, kwargs: Mapping[str, Any], transforms: Any, initial: Any
) -> bool:
    """Whether the model observes a value computed from its latents (then walls are checked).

    Decided from one run at the initial point; if that run raises, the answer is yes.
    """
    transforms = transforms or {}
    rng = pyro.util.get_rng_state()  # the run draws the same random numbers as without this check
    try:
        with torch.enable_grad(), pyro.validation_enabled(False):
            z = {name: value.detach().requires_grad_(True) for name, value in (initial or {}).items()}
            values = {name: transforms[name].inv(v) if name in transforms else v for name, v in z.items()}
            trace = poutine.trace(poutine.condition(model, data=values)).get_trace(*args, **kwargs)
    except Exception:
        return True
    finally:
        pyro.util.set_rng_state(rng)
    return any(
        site["type"] == "sample"
        and site["is_observed"]
        and name not in values
        and isinstance(site["value"], torch.Tensor)
        and site["value"].requires_grad
        for name, site in trace.nodes.items()
    )


class _GuardedPotential:
    """The model's potential, with numerical exceptions turned into a NaN energy and failures noted."""

    def __init__(self, potential_fn: Callable, monitor: _Monitor) -> None:
        self.potential_fn = potential_fn
        self.monitor = monitor
        #: Whether to check observed values computed from latents (see _SupportWall); set-up
        #: turns it off for a model that observes none, so that the check costs nothing there.
        self.walls = True

    def __call__(self, z: Mapping[str, torch.Tensor]) -> torch.Tensor:
        try:
            with _SupportWall() if self.walls else contextlib.nullcontext():
                energy = self.potential_fn(z)
        except Exception as error:
            if not is_numerical_exception(error, self.monitor.guard):
                raise
            self.monitor.failed(z, error)
            # NaN, still connected to z so that Pyro's gradient call works: the proposal is rejected.
            connected = sum((value * 0.0).sum() for value in z.values())
            return torch.as_tensor(connected) + float("nan")
        # A model with no latent site has a constant potential, which Pyro returns as a float.
        value = energy.detach() if isinstance(energy, torch.Tensor) else energy
        if not math.isfinite(float(value)):
            self.monitor.failed(z, None)
            if float(value) == -math.inf:
                # An infinite log density: Pyro would accept the point as infinitely likely (or
                # fail on a NaN probability); NaN makes it a rejected proposal like the others.
                return energy + float("nan")
        else:
            self.monitor.watch_gradients(z)
        return energy


def _current_chain() -> int:
    """The chain Pyro is drawing: ``_gen_samples``'s ``chain_id``, or its worker process's.

    In a worker process Pyro passes ``chain_id=None`` to ``_gen_samples``; the
    worker object that calls it knows the chain.
    """
    frame = sys._getframe(1)
    while frame is not None:
        if frame.f_code.co_name == "_gen_samples" and frame.f_locals.get("chain_id") is not None:
            return int(frame.f_locals["chain_id"])
        worker = frame.f_locals.get("self")
        if frame.f_code.co_name == "run" and isinstance(worker, _PYRO_WORKER):
            return int(worker.chain_id)
        frame = frame.f_back  # type: ignore[assignment]
    return 0


class _InitialSearch:
    """Set-up's search for an initial point: capped, guarded, its points recorded.

    Pyro's set-up runs the model at random points several times (a trace to
    count plates, a prototype trace, then one trace and one potential per
    attempt of ``_find_valid_initial_params``).  Each run that raises a
    numerical exception is a rejected point, as is each attempt with a
    non-finite potential or gradient; together they are capped at
    ``Guard.max_init_attempts``.  On a healthy model the attempts draw the same
    random numbers as Pyro's own search.
    """

    def __init__(self, guard: Guard) -> None:
        self.guard = guard
        self.attempts = 0
        self.exception: BaseException | None = None
        self.first: dict[str, torch.Tensor] = {}
        self.last: dict[str, torch.Tensor] = {}

    @property
    def exhausted(self) -> bool:
        return self.attempts >= self.guard.max_init_attempts

    def rejected(self, error: BaseException) -> None:
        """Count a point at which the model raised ``error``; propagate it unless numerical."""
        if not is_numerical_exception(error, self.guard):
            raise error
        self.attempts += 1
        self.exception = error

    def _recording(self, strategy: Callable) -> Callable:
        def record(site: dict) -> torch.Tensor:
            value = strategy(site)
            self.first.setdefault(site["name"], value.detach().clone())
            self.last[site["name"]] = value.detach().clone()
            return value

        return record

    def _guarded(self, potential_fn: Callable) -> Callable:
        def potential(z: Mapping[str, torch.Tensor]) -> torch.Tensor:
            try:
                with _SupportWall():
                    return potential_fn(z)
            except Exception as error:
                if not is_numerical_exception(error, self.guard):
                    raise
                self.exception = error
                return sum((value * 0.0).sum() for value in z.values()) + float("nan")  # type: ignore[return-value]

        return potential

    @contextlib.contextmanager
    def installed(self) -> Iterator[None]:
        """Pyro's ``_find_valid_initial_params`` replaced by this search for the duration.

        ``initialize_model`` has no argument for the number of tries or for the
        potential's exceptions, so its search function is swapped.
        """
        original = mcmc_util._find_valid_initial_params

        def search(
            model: Any,
            model_args: Any,
            model_kwargs: Any,
            transforms: Any,
            potential_fn: Callable,
            prototype_params: Any,
            *,
            init_strategy: Callable = mcmc_util.init_to_uniform,
            trace: Any = None,
            **kwargs: Any,
        ) -> Any:
            kwargs.update(max_tries_initial_params=1, init_strategy=self._recording(init_strategy))
            potential_fn = self._guarded(potential_fn)
            while True:  # one attempt per call: Pyro's loop, with each attempt's exception caught
                try:
                    return original(
                        model,
                        model_args,
                        model_kwargs,
                        transforms,
                        potential_fn,
                        prototype_params,
                        trace=trace,
                        **kwargs,
                    )
                except Exception as error:
                    if isinstance(error, ValueError) and _NO_VALID_POINT in str(error):
                        self.attempts += 1
                    else:
                        self.rejected(error)
                    if self.exhausted:
                        raise
                trace = None

        mcmc_util._find_valid_initial_params = search  # type: ignore[assignment]
        try:
            yield
        finally:
            mcmc_util._find_valid_initial_params = original


class _GuardedKernel:
    """What ``NUTS`` and ``HMC`` add to Pyro's: the guard. Mixed in before Pyro's class."""

    guard: Guard

    def __init__(self, *args: Any, guard: Guard | None = None, **kwargs: Any) -> None:
        upstream = next(c for c in type(self).__mro__ if c.__module__.startswith("pyro."))
        check_kernel_options(upstream, args, kwargs)
        self.guard = checked_guard(guard, "pyro")
        self._monitor = _Monitor(self.guard)
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
        self._guarded_potential = None if fn is None else _GuardedPotential(fn, self._monitor)

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
        chain = _current_chain()
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
        search = _InitialSearch(self.guard)
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
            self._guarded_potential.walls = _observes_latents(
                self.model,  # type: ignore[attr-defined]
                args,
                kwargs,
                self.transforms,  # type: ignore[attr-defined]
                self.initial_params,  # type: ignore[attr-defined]
            )
        # Pyro does not check initial_params given by the user: a chain would start on NaN.
        self._monitor.begin()
        try:
            if self.initial_params:  # type: ignore[attr-defined]
                potential_grad(self.potential_fn, dict(self.initial_params))  # type: ignore[attr-defined]
        finally:
            self._monitor.end()
        if self._monitor.failure is not None:
            z, exception = self._monitor.failure
            raise self._invalid_start_error(z, exception) from exception

    def _initialization_error(self, search: _InitialSearch) -> RobustHMCError:
        model = self.model  # type: ignore[attr-defined]
        if search.last:
            at_last = InitMessenger(init_to_value(values=search.last))(model)
            trace = poutine.trace(at_last).get_trace(*self._model_args, **self._model_kwargs)
            transforms = {
                name: biject_to(site["fn"].support).inv  # type: ignore[attr-defined]
                for name, site in trace.nodes.items()
                if site["type"] == "sample" and not site["is_observed"]
            }
            z = {name: transforms[name](value) for name, value in search.last.items() if name in transforms}
            diagnosis = diagnose_point(
                model,
                self._model_args,
                self._model_kwargs,
                transforms,
                z,
                phase="initialization",
                chain=_current_chain(),
                exception=search.exception,
            )
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
            for name, site in tracer.trace.nodes.items()
            if site["type"] == "sample" and not site["is_observed"]
        }
        return Diagnosis(
            phase="initialization",
            chain=_current_chain(),
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
        if self._monitor.failure is not None:
            self._record_failure(iteration, warmup, *self._monitor.failure, step_size)
        else:
            self._consecutive = 0
        if warmup and self.step_size < self.guard.min_step_size:  # type: ignore[attr-defined]
            self._stopped_at = z
            self._halt(Halt.STEP_SIZE_COLLAPSE, iteration)
        # "raise" in warmup: only failures at a step size adaptation kept are evidence about the
        # model, and which it kept is known at warmup's end; probes larger than that are not.
        evidence = self._smallest_step_failure
        if (
            self.guard.on_nonfinite == "raise"
            and iteration == self._warmup_steps - 1  # type: ignore[attr-defined]
            and evidence is not None
            and evidence.step_size <= self.step_size  # type: ignore[attr-defined]
        ):
            self._evidence = evidence
            self._halt(Halt.NONFINITE, iteration, cause=evidence.exception)
        if not warmup:
            self._draws.append({name: value.detach().clone() for name, value in z.items()})
        return z

    def _record_failure(
        self,
        iteration: int,
        warmup: bool,
        z: dict[str, torch.Tensor],
        exception: BaseException | None,
        step_size: float,
    ) -> None:
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
        if self.guard.on_nonfinite == "raise" and not warmup:
            self._evidence = failure
            self._halt(Halt.NONFINITE, iteration, cause=exception)
        if not warmup and self._consecutive >= self.guard.max_consecutive_failures:  # see Guard
            self._halt(Halt.STUCK, iteration, cause=exception)

    def _chain_record(self, halt: Halt, halted_at: int | None) -> ChainRecord:
        warmup_steps = self._warmup_steps  # type: ignore[attr-defined]
        done = self._t  # type: ignore[attr-defined]
        return ChainRecord(
            chain=_current_chain(),
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
        draws = {
            name: torch.stack([draw[name] for draw in self._draws]).detach().cpu().numpy()
            for name in self._draws[0]
        }
        return frozen_latents(draws, str(next(iter(self._draws[0].values())).dtype).removeprefix("torch."))

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
        phase, chain = failure.phase, _current_chain()
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
        if _in_worker_process():
            # A worker's warnings would stay in the worker: its record goes to the parent
            # with the diagnostics, already diagnosed, and the parent's MCMC.run settles.
            record = self._chain_record(Halt.RUNNING, None)
            diagnoses = record.diagnose("all") if sum(record.nonfinite) else ()
            diagnostics[WORKER_RECORD] = dataclasses.replace(record, diagnose=_Diagnosed(diagnoses))
        return diagnostics

    def cleanup(self) -> None:
        # Pyro calls this at the end of a chain's run (sometimes twice); the first call reports.
        if self._warmup_steps is None or _in_worker_process():  # type: ignore[attr-defined]
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


def _in_worker_process() -> bool:
    return any(
        frame.f_code.co_name == "run" and isinstance(frame.f_locals.get("self"), _PYRO_WORKER)
        for frame, _ in traceback.walk_stack(None)
    )


def _with_guard_signature(cls: type, upstream: type) -> type:
    """Give ``cls`` its own ``__init__`` whose signature is upstream's plus ``guard``."""

    def __init__(self: Any, *args: Any, guard: Guard | None = None, **kwargs: Any) -> None:
        _GuardedKernel.__init__(self, *args, guard=guard, **kwargs)

    signature = inspect.signature(upstream.__init__)  # type: ignore[misc]
    guard = inspect.Parameter(
        "guard", inspect.Parameter.KEYWORD_ONLY, default=None, annotation="Guard | None"
    )
    __init__.__signature__ = signature.replace(  # type: ignore[attr-defined]
        parameters=[*signature.parameters.values(), guard]
    )
    __init__.__doc__ = upstream.__init__.__doc__  # type: ignore[misc]
    cls.__init__ = __init__  # type: ignore[misc]
    return cls


class HMC(_GuardedKernel, pyro.infer.HMC):
    """Pyro's ``HMC`` with a :class:`~robusthmc.Guard`; every argument of Pyro's, plus ``guard``.

    Also caps the leapfrog steps of one transition at
    ``Guard.max_steps_per_transition`` (``trajectory_length / step_size`` grows
    without bound when the step size collapses).

    Examples
    --------
    >>> import pyro
    >>> from pyro.infer import MCMC
    >>> from robusthmc.pyro import HMC
    >>> from robusthmc.lessons.pyro import eight_schools_noncentered
    >>> pyro.set_rng_seed(0)
    >>> mcmc = MCMC(HMC(eight_schools_noncentered, num_steps=10), 20, warmup_steps=20, disable_progbar=True)
    >>> mcmc.run()
    >>> sorted(mcmc.get_samples())
    ['mu', 'tau', 'theta_trans']
    """


class NUTS(_GuardedKernel, pyro.infer.NUTS):
    """Pyro's ``NUTS`` with a :class:`~robusthmc.Guard`; every argument of Pyro's, plus ``guard``.

    Examples
    --------
    >>> import pyro
    >>> from pyro.infer import MCMC
    >>> from robusthmc.pyro import NUTS
    >>> from robusthmc.lessons.pyro import logistic_regression
    >>> from robusthmc.lessons.data import logistic_data
    >>> data = logistic_data(num_rows=100, num_features=2)
    >>> pyro.set_rng_seed(0)
    >>> mcmc = MCMC(NUTS(logistic_regression), 30, warmup_steps=30, disable_progbar=True)
    >>> mcmc.run(data.X, data.y)
    >>> sorted(mcmc.get_samples())
    ['coefficients', 'intercept']
    """


_with_guard_signature(HMC, pyro.infer.HMC)
_with_guard_signature(NUTS, pyro.infer.NUTS)
