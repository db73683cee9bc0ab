"""The hooks robusthmc installs in numpyro's ``MCMC``: a check after ``run``, and its views.

numpyro runs the whole chain inside one compiled loop, from which no Python
exception can escape with the draws.  A guarded kernel therefore stops
("halts") a failing chain inside the loop and leaves the verdict in its
state; this wrapper around :meth:`numpyro.infer.MCMC.run` (which
``MCMC.warmup`` calls too) hands the finished run to the kernel, which raises
or warns.  For any other kernel the wrapper only calls the original.

After a guarded stop, and after Ctrl-C, ``get_samples`` gives the draws made
before it (the error's ``samples``: NaN after each stopped chain's stop),
never the frozen position numpyro collected; ``get_extra_fields`` and ``print_summary`` say
so.  ``print_summary`` also counts the non-finite transitions beside the
divergences.

Ctrl-C during a guarded run raises :class:`~robusthmc.SamplingInterrupted`
with the draws made so far.  With a progress bar and one chain at a time
numpyro steps in Python, and the interrupt takes effect after the current
transition; where numpyro runs the whole chain as one compiled call
(``progress_bar=False``, or vectorized and parallel chains) it takes effect
when that call returns, with every draw.  A second Ctrl-C stops at once.

Inside :func:`jax.jit` nothing can be decided in Python: the run is left as
numpyro leaves it, and the verdict stays in ``mcmc.last_state.guard`` (its
``halt`` is a :class:`robusthmc.Halt` code, 0 while the chain runs; see
:class:`~robusthmc.numpyro.GuardRecord`) and in the ``nonfinite`` field.
"""

from __future__ import annotations

import functools
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from numpyro.infer import mcmc as numpyro_mcmc
from numpyro.util import not_jax_tracer

from robusthmc._errors import RobustHMCError, SamplingInterrupted
from robusthmc._interrupt import deferred_interrupt, interrupt_requested
from robusthmc._render import plural
from robusthmc.numpyro._compat import stepped_run_at_interrupt

__all__ = ["RunInfo", "guarded_kernel", "install"]


class RunInfo(NamedTuple):
    """How the run about to start collects draws (read before it starts), and the model's arguments."""

    lower: int
    upper: int
    collection_size: int | None
    first_iteration: int
    model_args: tuple
    model_kwargs: dict
    in_warmup: bool = False  # MCMC.warmup's run: what it collects (if anything) is warmup's

    def draws_kept(self, halted_at: int, thinning: int) -> int:
        """How many collected draws were made before (or by) the transition ``halted_at``."""
        size = self.collection_size
        if size is None:
            size = (self.upper - self.lower) // thinning
        start = self.lower + (self.upper - self.lower) % thinning
        last_writer = start + np.arange(size) * thinning + thinning - 1
        return int(np.sum(last_writer <= halted_at - self.first_iteration))


def guarded_kernel(sampler: Any) -> Any:
    """The guarded kernel that ``sampler`` is or wraps (``HMCGibbs``, ``MixedHMC``, ...), else None."""
    for kernel in (sampler, getattr(sampler, "inner_kernel", None)):
        if hasattr(kernel, "_robusthmc_settle"):
            return kernel
    return None


#: The attribute of an ``MCMC`` whose last run a guard stopped: the error it raised.
_STOPPED = "_robusthmc_stopped"
#: The attribute of an ``MCMC`` inside its ``warmup``: whether that collects the warmup draws.
_WARMUP_COLLECTS = "_robusthmc_warmup_collects"


def _stopped_error(mcmc: Any, view: str) -> RobustHMCError:
    # The stop is a RobustHMCError, or the SamplingInterrupted of a Ctrl-C.
    stop = mcmc.__dict__[_STOPPED]
    return RobustHMCError(
        f"{view}: this run stopped early with {type(stop).__name__} ({str(stop).splitlines()[0]}); "
        "numpyro's record past the stop is the frozen position. get_samples() gives the draws "
        "made before the stop (NaN after it), as err.samples does."
    )


def install() -> None:
    """Wrap ``numpyro.infer.MCMC``'s ``run``, ``get_samples``, ``get_extra_fields`` and ``print_summary`` once."""
    mcmc_class = numpyro_mcmc.MCMC
    original = mcmc_class.run
    if getattr(original, "_robusthmc_original", None) is not None:
        return

    original_warmup = mcmc_class.warmup

    @functools.wraps(original_warmup)
    def warmup(self: Any, *args: Any, collect_warmup: bool = False, **kwargs: Any) -> None:
        # MCMC.warmup collects only warmup draws, if any: the run it makes must know.
        self.__dict__[_WARMUP_COLLECTS] = collect_warmup
        try:
            original_warmup(self, *args, collect_warmup=collect_warmup, **kwargs)
        finally:
            self.__dict__.pop(_WARMUP_COLLECTS, None)

    @functools.wraps(original)
    def run(
        self: Any, rng_key: Any, *args: Any, extra_fields: Any = (), init_params: Any = None, **kwargs: Any
    ) -> None:
        self.__dict__.pop(_STOPPED, None)
        kernel = guarded_kernel(self.sampler)
        call = functools.partial(
            original, self, rng_key, *args, extra_fields=extra_fields, init_params=init_params, **kwargs
        )
        if kernel is None:
            return call()
        if kernel is self.sampler:  # a Gibbs-style wrapper's init_params hold its own sites too
            chains = self.num_chains if self.num_chains > 1 else None
            kernel._robusthmc_check_start(rng_key, init_params, args, kwargs, chains)
        warmup_state = self.post_warmup_state
        if _WARMUP_COLLECTS in self.__dict__:  # inside MCMC.warmup, which starts afresh
            collected = self.num_warmup if self.__dict__[_WARMUP_COLLECTS] else 0
            info = RunInfo(
                self.num_warmup - collected,
                self.num_warmup,
                collected or self.num_samples,
                0,
                args,
                kwargs,
                True,
            )
        elif warmup_state is None:
            info = RunInfo(self.num_warmup, self.num_warmup + self.num_samples, None, 0, args, kwargs)
        else:
            state = getattr(warmup_state, "hmc_state", warmup_state)
            if state is warmup_state:
                # MCMC.run goes on from the state after warmup: counters start afresh.  (A
                # Gibbs-style wrapper's state is left as it is: its counts go on from warmup.)
                self.post_warmup_state = kernel._robusthmc_fresh_record(warmup_state)
            first_iteration = int(np.min(np.asarray(state.i))) if not_jax_tracer(state.i) else 0
            info = RunInfo(0, self.num_samples, self.num_samples, first_iteration, args, kwargs)
        with deferred_interrupt():
            try:
                call()
            except KeyboardInterrupt as interrupt:
                if isinstance(interrupt, SamplingInterrupted):
                    raise
                stopped = _interrupted_in_python(self, interrupt)
                self.__dict__[_STOPPED] = stopped  # get_samples() gives its draws, as after a stop
                raise stopped from None
            if interrupt_requested():  # noted while a compiled run went on: it has every draw
                stopped = _interrupted(
                    self.get_samples(group_by_chain=True), [self.last_state], self.num_chains
                )
                self.__dict__[_STOPPED] = stopped
                raise stopped
        if not_jax_tracer(jax.tree.leaves(self.last_state)[0]):  # under jit the verdict stays
            try:
                kernel._robusthmc_settle(self, info)
            except RobustHMCError as error:
                self.__dict__[_STOPPED] = error
                raise

    original_get_samples = mcmc_class.get_samples

    @functools.wraps(original_get_samples)
    def get_samples(self: Any, group_by_chain: bool = False) -> Any:
        stop = self.__dict__.get(_STOPPED)
        if stop is None:
            return original_get_samples(self, group_by_chain)
        grouped = jax.tree.map(jnp.asarray, dict(stop.samples))
        if group_by_chain:
            return grouped
        return jax.tree.map(lambda leaf: leaf.reshape((-1, *leaf.shape[2:])), grouped)

    original_get_extra_fields = mcmc_class.get_extra_fields

    @functools.wraps(original_get_extra_fields)
    def get_extra_fields(self: Any, group_by_chain: bool = False) -> Any:
        if _STOPPED in self.__dict__:
            raise _stopped_error(self, "get_extra_fields")
        return original_get_extra_fields(self, group_by_chain)

    original_print_summary = mcmc_class.print_summary

    @functools.wraps(original_print_summary)
    def print_summary(self: Any, *args: Any, **kwargs: Any) -> None:
        if _STOPPED in self.__dict__:
            raise _stopped_error(self, "print_summary")
        original_print_summary(self, *args, **kwargs)
        extra_fields = original_get_extra_fields(self)
        if guarded_kernel(self.sampler) is not None and "nonfinite" in extra_fields:
            failures = int(np.sum(np.asarray(extra_fields["nonfinite"])))
            print(f"Number of non-finite transitions (rejected, not divergences): {failures}")

    run._robusthmc_original = original  # type: ignore[attr-defined]
    mcmc_class.run = run  # type: ignore[method-assign]
    mcmc_class.warmup = warmup  # type: ignore[method-assign]
    mcmc_class.get_samples = get_samples  # type: ignore[method-assign]
    mcmc_class.get_extra_fields = get_extra_fields  # type: ignore[method-assign]
    mcmc_class.print_summary = print_summary  # type: ignore[method-assign]


def _interrupted(samples: Any, last_states: list[Any], num_chains: int) -> SamplingInterrupted:
    counts: dict[int, tuple[int, int]] = {}
    chain = 0
    for state in last_states:
        state = getattr(state, "hmc_state", state)
        record = np.asarray(state.guard.nonfinite_count).reshape(-1, 2)
        for warmup, sampling in record:
            counts[chain] = (int(warmup), int(sampling))
            chain += 1
    made = jax.tree.leaves(samples)[0].shape[1] if jax.tree.leaves(samples) else 0
    return SamplingInterrupted(
        f"sampling interrupted after up to {made} draws per chain ({plural(num_chains, 'chain')}); the draws "
        "made so far are in err.samples (NaN after a chain's last), the non-finite transitions in err.nonfinite",
        samples=jax.tree.map(np.asarray, samples),
        nonfinite=counts,
    )


def _interrupted_in_python(mcmc: Any, interrupt: KeyboardInterrupt) -> SamplingInterrupted:
    """The draws of a run that numpyro stepped in Python, as the interrupt left them."""
    run = stepped_run_at_interrupt(interrupt)
    if run is None:
        return SamplingInterrupted(
            "sampling interrupted outside numpyro's Python-stepped loop (before it, or with Ctrl-C "
            "handled by someone else during a compiled run): no draws to return"
        )
    field = mcmc.sampler.sample_field
    done = [states for states, _ in run.done]
    current = dict(zip(run.fields, run.collection))[field]
    made = max(0, min(run.collected, jax.tree.leaves(current)[0].shape[0]))
    length = max([made] + [jax.tree.leaves(states[field])[0].shape[0] for states in done])

    def grouped(*chains: Any) -> np.ndarray:
        out = []
        for k, leaf in enumerate(chains):
            leaf = np.array(leaf)
            if k == len(chains) - 1:
                leaf = leaf[:made]
            if leaf.shape[0] < length:
                fill = np.nan if np.issubdtype(leaf.dtype, np.floating) else 0
                pad = np.full((length - leaf.shape[0], *leaf.shape[1:]), fill, dtype=leaf.dtype)
                leaf = np.concatenate([leaf, pad])
            out.append(leaf)
        return np.stack(out)

    samples = jax.tree.map(grouped, *[states[field] for states in done], current)
    last_states = [state for _, state in run.done] + [run.last_state]
    return _interrupted(samples, last_states, mcmc.num_chains)
