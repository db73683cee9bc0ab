"""The one hook robusthmc installs in numpyro: a check after ``MCMC.run``.

numpyro runs the whole chain inside one compiled loop, from which no Python
exception can escape with the draws.  A guarded kernel therefore stops
("halts") a failing chain inside the loop and leaves the verdict in its
state; this wrapper around :meth:`numpyro.infer.MCMC.run` (which
``MCMC.warmup`` calls too) hands the finished run to the kernel, which raises
or warns.  For any other kernel the wrapper only calls the original.

Inside :func:`jax.jit` nothing can be decided in Python: the run is left as
numpyro leaves it, and the verdict stays in ``mcmc.last_state.guard`` (its
``halt`` is a :class:`robusthmc.Halt` code, 0 while the chain runs; see
:class:`~robusthmc.numpyro.GuardRecord`) and in the ``nonfinite`` field.
"""

from __future__ import annotations

import functools
from typing import Any, NamedTuple

import jax
import numpy as np
from numpyro.infer import mcmc as numpyro_mcmc
from numpyro.util import not_jax_tracer

__all__ = ["RunInfo", "guarded_kernel", "install"]


class RunInfo(NamedTuple):
    """How the run about to start collects draws (read before it starts)."""

    lower: int
    upper: int
    collection_size: int | None
    first_iteration: int

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


def install() -> None:
    """Wrap ``numpyro.infer.MCMC.run`` once (idempotent)."""
    mcmc_class = numpyro_mcmc.MCMC
    original = mcmc_class.run
    if getattr(original, "_robusthmc_original", None) is not None:
        return

    @functools.wraps(original)
    def run(self: Any, *args: Any, **kwargs: Any) -> None:
        kernel = guarded_kernel(self.sampler)
        if kernel is None:
            return original(self, *args, **kwargs)
        warmup_state = self._warmup_state
        if warmup_state is None:
            params = self._collection_params
            info = RunInfo(params["lower"], params["upper"], params["collection_size"], 0)
        else:
            state = getattr(warmup_state, "hmc_state", warmup_state)
            if state is warmup_state:
                # MCMC.run goes on from the state after warmup: counters start afresh.  (A
                # Gibbs-style wrapper's state is left as it is: its counts go on from warmup.)
                self._warmup_state = kernel._robusthmc_fresh_record(warmup_state)
            first_iteration = int(np.min(np.asarray(state.i))) if not_jax_tracer(state.i) else 0
            info = RunInfo(0, self.num_samples, self.num_samples, first_iteration)
        original(self, *args, **kwargs)
        if not_jax_tracer(jax.tree.leaves(self.last_state)[0]):  # under jit the verdict stays
            kernel._robusthmc_settle(self, info)

    run._robusthmc_original = original  # type: ignore[attr-defined]
    mcmc_class.run = run  # type: ignore[method-assign]
