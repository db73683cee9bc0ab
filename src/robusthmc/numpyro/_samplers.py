"""Swap-in ``HMC`` and ``NUTS``: numpyro's kernels with a :class:`~robusthmc.Guard`.

They are subclasses of numpyro's, take every argument numpyro's take (passed
through unchanged) plus ``guard=``, and keep the whole ``MCMCKernel``
contract.  numpyro initialises the model as it always does; the guarded
transition (:mod:`robusthmc.numpyro._kernel`) is handed to it first, and a
failed search becomes an explained :class:`~robusthmc.InitializationError`.
"""

from __future__ import annotations

import functools
import inspect
import warnings
from collections.abc import Callable
from functools import partial
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.flatten_util import ravel_pytree
from numpyro.infer.hmc import HMC as NumpyroHMC
from numpyro.infer.hmc import NUTS as NumpyroNUTS
from numpyro.infer.initialization import init_to_value
from numpyro.infer.util import ParamInfo
from numpyro.util import find_stack_level, is_prng_key, not_jax_tracer

from robusthmc._arguments import check_kernel_options, check_start
from robusthmc._diagnosis import Diagnosis, Halt, Phase, StopPoint, frozen_latents, inspect_stop
from robusthmc._guard import Guard, checked_guard
from robusthmc._interrupt import raise_if_interrupted
from robusthmc._outcome import ChainRecord, invalid_start_error, settle_run
from robusthmc.jax._logdensity import diagnose_position
from robusthmc.numpyro._hook import RunInfo
from robusthmc.numpyro._initialize import (
    NoValidStart,
    constrained,
    raise_initialization_error,
    searched,
    site_evaluator,
    starting_trace,
    unvalidated_on_rejection,
)
from robusthmc.numpyro._kernel import GuardedHMCState, guarded_hmc
from robusthmc.numpyro._sites import (
    SiteEvaluator,
    param_values,
    support_bounds,
    unconstrained_latents,
)

__all__ = ["HMC", "NUTS"]

# A bare potential_fn has no sites: its input's coordinates are named z['...'].
_diagnose_potential = partial(diagnose_position, name="z", source="potential_fn")


class _GuardedKernel:
    """What the guard adds to numpyro's ``HMC``; mixed in before numpyro's class."""

    guard: Guard
    _algo: str
    _model: Any
    _potential_fn: Any
    _kinetic_fn: Any
    _init_fn: Any
    _sample_fn: Any
    _init_strategy: Any
    _forward_mode_differentiation: bool

    def _init_state(self, rng_key, model_args, model_kwargs, init_params):
        # numpyro's own initialisation, with the guarded transition handed to it first.
        if self._init_fn is None:
            potential = (
                {"potential_fn": self._potential_fn}
                if self._model is None
                else {"potential_fn_gen": self._model_potential_fn}
            )
            self._init_fn, self._sample_fn = guarded_hmc(
                **potential, kinetic_fn=self._kinetic_fn, algo=self._algo, guard=self.guard
            )
        # The key whose param values the diagnosis uses (under pmap it is traced: not kept).
        self._evaluation_key = rng_key if not_jax_tracer(rng_key) else None
        upstream = functools.partial(super()._init_state, rng_key, model_args, model_kwargs, init_params)  # type: ignore[misc]
        try:
            return searched(upstream)
        except NoValidStart as failure:
            if init_params is None:
                raise_initialization_error(
                    self._model,
                    rng_key,
                    init_strategy=self._init_strategy,
                    model_args=model_args,
                    model_kwargs=model_kwargs,
                    cause=failure.cause,
                )
            cause = failure.cause
        # numpyro searches even when it is given a start; where its search fails, it
        # searches from the start given.
        given = init_params.z if isinstance(init_params, ParamInfo) else init_params
        first = given if is_prng_key(rng_key) else jax.tree.map(lambda leaf: leaf[0], given)
        strategy = self._init_strategy
        self._init_strategy = init_to_value(
            values=constrained(self._model, rng_key, model_args, model_kwargs, first)
        )
        try:
            return searched(upstream)
        except NoValidStart:
            diagnosis = self._diagnose(first, model_args, model_kwargs, "initialization", None, None)
            raise invalid_start_error(
                diagnosis, given="init_params (given to MCMC.run)", instead="leave init_params out"
            ) from cause
        finally:
            self._init_strategy = strategy

    def _robusthmc_check_start(self, rng_key, init_params, model_args, model_kwargs, chains) -> None:
        """Refuse, by name, an ``init_params`` that is not one array per latent site (before numpyro reads it)."""
        if self._model is None or init_params is None or isinstance(init_params, ParamInfo):
            return
        start = starting_trace(self._model, rng_key, self._init_strategy, model_args, model_kwargs)
        shapes = {name: jnp.shape(value) for name, value in unconstrained_latents(start).items()}
        check_start(init_params, shapes, argument="init_params", chains=chains)

    def _model_potential_fn(self, *model_args, **model_kwargs):
        """The potential energy for these arguments, from the generator numpyro's initialisation sets."""
        return self._potential_fn_gen(*model_args, **model_kwargs)

    def init(self, rng_key, num_warmup, init_params=None, model_args=(), model_kwargs={}):  # noqa: B006 (numpyro's signature)
        upstream_init = super().init  # type: ignore[misc]
        state, rejected = unvalidated_on_rejection(
            functools.partial(upstream_init, rng_key, num_warmup, init_params, model_args, model_kwargs)
        )
        halt = state.guard.halt
        if not_jax_tracer(halt):
            invalid = np.flatnonzero(np.atleast_1d(np.asarray(halt)) == Halt.INITIALIZATION)
            if invalid.size:
                chain = None if np.ndim(halt) == 0 else int(invalid[0])
                z = state.z if chain is None else jax.tree.map(lambda leaf: leaf[chain], state.z)
                diagnosis = self._diagnose(z, model_args, model_kwargs, "initialization", chain, None)
                raise invalid_start_error(
                    diagnosis, given="init_params (given to MCMC.run)", instead="leave init_params out"
                ) from rejected
        return state

    @property
    def default_fields(self):
        return ("z", "diverging", "nonfinite")

    def get_diagnostics_str(self, state):
        # numpyro calls this after each transition it steps in Python, once the draw is stored.
        raise_if_interrupted()
        text = super().get_diagnostics_str(state)  # type: ignore[misc]
        failures = int(np.sum(np.asarray(state.guard.nonfinite_count)))
        return f"{text}, {failures} non-finite" if failures else text

    def _diagnose(self, z, model_args, model_kwargs, phase: Phase, chain, iteration) -> Diagnosis:
        if self._model is None:
            return _diagnose_potential(self._potential_fn, z, phase=phase, chain=chain, iteration=iteration)
        return self._site_evaluator(model_args, model_kwargs).diagnose([z], [(phase, chain, iteration)])[0]

    def _diagnose_failures(
        self, record, unravel, model_args, model_kwargs, num_warmup, chain, adapted_step, which
    ):
        rows = _failure_rows(record, self.guard.max_recorded_failures)
        if which == "first":  # the first that is evidence: in sampling, or at an adapted step size
            rows = [r for r in rows if r[1] >= num_warmup or r[2] <= adapted_step] or rows
        rows = {"first": rows[:1], "latest": rows[-1:], "all": rows}[which]
        points = [unravel(record.failure_log[row, 2:]) for row, _, _ in rows]
        where = [("warmup" if it < num_warmup else "sampling", chain, it) for _, it, _ in rows]
        if not points:
            return ()
        if self._model is None:
            return tuple(
                _diagnose_potential(self._potential_fn, z, phase=phase, chain=c, iteration=it)
                for z, (phase, c, it) in zip(points, where)
            )
        return tuple(self._site_evaluator(model_args, model_kwargs).diagnose(points, where))

    def _inspect_stop(self, z, model_args, model_kwargs) -> StopPoint:
        evaluator = self._site_evaluator(model_args, model_kwargs)
        return inspect_stop(evaluator.evaluate, z, str(jnp.result_type(float)))

    def _starting_trace(self, model_args, model_kwargs) -> dict:
        key = jax.random.key(0) if self._evaluation_key is None else self._evaluation_key
        return starting_trace(self._model, key, self._init_strategy, model_args, model_kwargs)

    def _support_bounds(self, model_args, model_kwargs) -> dict[str, tuple[Any, Any]]:
        return {} if self._model is None else support_bounds(self._starting_trace(model_args, model_kwargs))

    def _diagnose_start(self, z, model_args, model_kwargs, chain, which) -> tuple[Diagnosis, ...]:
        return (self._diagnose(z, model_args, model_kwargs, "initialization", chain, None),)

    def _site_evaluator(self, model_args, model_kwargs) -> SiteEvaluator:
        # A run diagnoses at most the first failures and the latest: one batch.
        batch_size = self.guard.max_recorded_failures + 1
        start = self._starting_trace(model_args, model_kwargs)
        return site_evaluator(self._model, param_values(start), model_args, model_kwargs, batch_size)

    def _robusthmc_fresh_record(self, state: GuardedHMCState) -> GuardedHMCState:
        """The state with the guard's counters cleared (a new run starts from it)."""
        record = state.guard
        return state._replace(
            guard=record._replace(
                nonfinite_count=jnp.zeros_like(record.nonfinite_count),
                consecutive_failures=jnp.zeros_like(record.consecutive_failures),
                steps_capped=jnp.zeros_like(record.steps_capped),
            )
        )

    def _robusthmc_settle(self, mcmc: Any, info: RunInfo) -> None:
        """Called after ``MCMC.run``: raise or warn as the guard says.

        Inside a Gibbs-style wrapper (``HMCGibbs``, ``DiscreteHMCGibbs``,
        ``MixedHMC``, ``HMCECS``) the guarded state is its ``hmc_state``; the
        failure points then hold only the continuous sites, so they are not
        diagnosed site by site.  ``MixedHMC`` accepts or rejects a whole step
        of sub-trajectories and a rejection restores the inner state it started
        from, the guard's record included: there the counts are a lower bound.
        """
        state = getattr(mcmc.last_state, "hmc_state", mcmc.last_state)
        if not isinstance(state, GuardedHMCState):
            return
        wrapped = state is not mcmc.last_state
        state = jax.device_get(state)
        batched = mcmc.num_chains > 1
        num_warmup = mcmc.num_warmup
        unravel = ravel_pytree(jax.tree.map(lambda leaf: leaf[0], state.z) if batched else state.z)[1]
        records, kept = [], []
        latents = {} if wrapped or info.in_warmup else _latent_draws(mcmc, state.z)
        dtype = str(jnp.result_type(float))
        bounds = functools.cache(functools.partial(self._support_bounds, info.model_args, info.model_kwargs))
        for chain in range(mcmc.num_chains):
            at = functools.partial(_chain_entry, chain) if batched else _whole
            record = jax.tree.map(at, state.guard)
            halt = Halt(int(record.halt))
            halted_at = int(record.halted_at) if halt is not Halt.RUNNING else None
            iterations = int(at(state.i))
            step_size = float(at(state.adapt_state.step_size))
            diagnose: Callable[[str], tuple[Diagnosis, ...]]
            if wrapped:
                diagnose = _no_diagnosis
            elif halt is Halt.INITIALIZATION:
                # Found invalid only inside a trace (chain_method="parallel"): its last point.
                z = jax.tree.map(at, state.z)
                diagnose = functools.partial(
                    self._diagnose_start, z, info.model_args, info.model_kwargs, chain
                )
            else:
                diagnose = functools.partial(
                    self._diagnose_failures,
                    record,
                    unravel,
                    info.model_args,
                    info.model_kwargs,
                    num_warmup,
                    chain,
                    step_size,
                )
            at_stop = None
            if halt is Halt.STEP_SIZE_COLLAPSE and not wrapped and self._model is not None:
                at_stop = functools.partial(
                    self._inspect_stop, jax.tree.map(at, state.z), info.model_args, info.model_kwargs
                )
            records.append(
                ChainRecord(
                    chain=chain,
                    halt=halt,
                    halted_at=halted_at,
                    num_warmup=num_warmup,
                    nonfinite=(int(record.nonfinite_count[0]), int(record.nonfinite_count[1])),
                    transitions=(min(iterations, num_warmup), max(0, iterations - num_warmup)),
                    steps_capped=int(record.steps_capped),
                    step_size=step_size,
                    diagnose=diagnose,
                    inspect_stop=at_stop,
                    frozen=frozen_latents({k: v[chain] for k, v in latents.items()}, dtype, bounds)
                    if halt is Halt.RUNNING
                    else (),
                )
            )
            kept.append(None if halted_at is None else info.draws_kept(halted_at, mcmc.thinning))
        samples = _samples_before_halt(mcmc, kept) if any(k is not None for k in kept) else {}
        settle_run(records, self.guard, samples=samples)


def _latent_draws(mcmc: Any, z: Any) -> dict[str, np.ndarray]:
    """The draws of the latent sites (not the deterministic ones), grouped by chain."""
    try:
        samples = mcmc.get_samples(group_by_chain=True)
    except Exception:  # nothing collected (a warmup-only run)
        return {}
    if not isinstance(samples, dict) or not isinstance(z, dict):
        return {}
    return {name: np.asarray(samples[name]) for name in z if name in samples}


def _failure_rows(record: Any, recorded: int) -> list[tuple[int, int, float]]:
    """``(row, iteration, step size)`` of the logged failures: the first ones, then the latest."""
    logged = int(np.sum(record.nonfinite_count))
    rows = list(range(min(logged, recorded))) + ([recorded] if logged > recorded else [])
    return [(row, int(record.failure_log[row, 0]), float(record.failure_log[row, 1])) for row in rows]


def _samples_before_halt(mcmc: Any, kept: list[int | None]) -> Any:
    """Draws grouped by chain, NaN after each halted chain's stop, trimmed to the longest."""
    grouped = jax.device_get(mcmc.get_samples(group_by_chain=True))
    total = jax.tree.leaves(grouped)[0].shape[1] if jax.tree.leaves(grouped) else 0
    lengths = [total if k is None else k for k in kept]

    def mask(leaf):
        leaf = np.array(leaf)
        if np.issubdtype(leaf.dtype, np.floating):
            for chain, length in enumerate(lengths):
                leaf[chain, length:] = np.nan
        return leaf[:, : max(lengths)]

    return jax.tree.map(mask, grouped)


def _with_guard_signature(cls: type, upstream: type) -> type:
    signature = inspect.signature(upstream.__init__)  # type: ignore[misc]
    guard = inspect.Parameter(
        "guard", inspect.Parameter.KEYWORD_ONLY, default=None, annotation="Guard | None"
    )
    cls.__init__.__signature__ = signature.replace(parameters=[*signature.parameters.values(), guard])  # type: ignore[attr-defined,misc]
    return cls


class HMC(_GuardedKernel, NumpyroHMC):
    """numpyro's ``HMC`` with a :class:`~robusthmc.Guard`; every other argument is numpyro's.

    Parameters
    ----------
    *args, **kwargs
        Exactly those of :class:`numpyro.infer.HMC`.
    guard : Guard, optional
        Policies and caps; ``Guard()`` by default.

    Examples
    --------
    >>> import jax, numpyro, numpyro.distributions as dist
    >>> from numpyro.infer import MCMC
    >>> from robusthmc.numpyro import HMC
    >>> def model():
    ...     numpyro.sample("x", dist.Normal(0.0, 1.0))
    >>> mcmc = MCMC(HMC(model), num_warmup=50, num_samples=50, progress_bar=False)
    >>> mcmc.run(jax.random.key(0))
    >>> int(mcmc.get_extra_fields()["nonfinite"].sum())
    0
    """

    def __init__(self, *args: Any, guard: Guard | None = None, **kwargs: Any) -> None:
        check_kernel_options(NumpyroHMC, args, kwargs)
        NumpyroHMC.__init__(self, *args, **kwargs)
        if type(self) is HMC:
            # numpyro validates these only when type(self) is its own HMC.
            if self._num_steps is None and self._trajectory_length is None:
                raise ValueError("At least one of `num_steps` or `trajectory_length` must be specified.")
            if self._adapt_step_size and self._num_steps is not None and self._trajectory_length is not None:
                warnings.warn(
                    "If both `num_steps` and `trajectory_length` are specified step size can't be adapted",
                    stacklevel=find_stack_level(),
                )
        self.guard = checked_guard(guard, "numpyro")


class NUTS(_GuardedKernel, NumpyroNUTS):
    """numpyro's ``NUTS`` with a :class:`~robusthmc.Guard`; every other argument is numpyro's.

    Parameters
    ----------
    *args, **kwargs
        Exactly those of :class:`numpyro.infer.NUTS`.
    guard : Guard, optional
        Policies and caps; ``Guard()`` by default.

    Examples
    --------
    >>> import jax, numpyro, numpyro.distributions as dist
    >>> from numpyro.infer import MCMC
    >>> from robusthmc import Guard
    >>> from robusthmc.numpyro import NUTS
    >>> def model():
    ...     numpyro.sample("x", dist.Normal(0.0, 1.0))
    >>> kernel = NUTS(model, target_accept_prob=0.9, guard=Guard(on_nonfinite="raise"))
    >>> mcmc = MCMC(kernel, num_warmup=50, num_samples=50, progress_bar=False)
    >>> mcmc.run(jax.random.key(0))
    >>> mcmc.get_samples()["x"].shape
    (50,)
    """

    def __init__(self, *args: Any, guard: Guard | None = None, **kwargs: Any) -> None:
        check_kernel_options(NumpyroNUTS, args, kwargs)
        NumpyroNUTS.__init__(self, *args, **kwargs)
        self.guard = checked_guard(guard, "numpyro")


_with_guard_signature(HMC, NumpyroHMC)
_with_guard_signature(NUTS, NumpyroNUTS)


def _no_diagnosis(which: str) -> tuple[Diagnosis, ...]:
    return ()


def _chain_entry(chain: int, leaf: Any) -> Any:
    return leaf[chain]


def _whole(leaf: Any) -> Any:
    return leaf
