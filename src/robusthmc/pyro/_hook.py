"""The hooks robusthmc installs in Pyro's ``MCMC``: Ctrl-C keeps the draws, workers report, summaries count.

Ctrl-C during ``MCMC.run`` with a guarded kernel raises
:class:`~robusthmc.SamplingInterrupted` carrying the draws made so far, which
Pyro keeps only in ``MCMC.run``'s local variables until the run ends; worker
processes ignore the signal and are shut down by Pyro as before.  After any
stop that carries draws, ``mcmc.get_samples()`` gives them (``err.samples``).

A chain drawn in a worker process cannot warn the user: the warning would be
raised in the worker.  Its kernel sends its guard record with the
diagnostics instead; in one process each kernel hands its record to the run.
After ``MCMC.run`` the records of all chains are settled here, in the parent
and after the progress bars close: one warning naming each chain.  ``summary``
prints the non-finite transitions beside the divergences.  Installed once,
when ``robusthmc.pyro`` is imported.
"""

from __future__ import annotations

import functools
from typing import Any

import numpy as np
import pyro.infer
import torch

from robusthmc._errors import RobustHMCError, SamplingInterrupted
from robusthmc._outcome import ChainRecord, settle_run
from robusthmc.pyro._compat import collected_at_interrupt, keep_samples, set_transforms
from robusthmc.pyro._kernel import SETTLED_BY_RUN, WORKER_RECORD


def install() -> None:
    """Wrap ``pyro.infer.MCMC.run`` and ``summary`` (idempotent)."""
    mcmc_class = pyro.infer.MCMC
    original_summary = mcmc_class.summary
    if getattr(original_summary, "_robusthmc", False):
        return
    original_run = mcmc_class.run

    @functools.wraps(original_run)
    def run(self: Any, *args: Any, **kwargs: Any) -> None:
        records: list[ChainRecord] = []
        token = SETTLED_BY_RUN.set(records)
        try:
            original_run(self, *args, **kwargs)
        except RobustHMCError as stop:
            _keep_draws(self, stop)
            raise
        except KeyboardInterrupt as interrupt:
            if isinstance(interrupt, SamplingInterrupted) or not hasattr(self.kernel, "guard"):
                raise
            stopped = _interrupted(self, interrupt, args, kwargs)
            _keep_draws(self, stopped)
            raise stopped from None
        finally:
            SETTLED_BY_RUN.reset(token)
        in_workers = hasattr(self.sampler, "workers")  # Pyro's _MultiSampler
        diagnostics = self.diagnostics() if in_workers and hasattr(self.kernel, "guard") else {}
        if WORKER_RECORD in diagnostics:
            records = [diagnostics[WORKER_RECORD][f"chain {chain}"] for chain in range(self.num_chains)]
        if records:
            settle_run(records, self.kernel.guard, samples={})

    @functools.wraps(original_summary)
    def summary(self: Any, prob: float = 0.9) -> None:
        original_summary(self, prob=prob)
        diagnostics = self.diagnostics()
        if "nonfinite" in diagnostics:
            failures = sum(len(chain) for chain in diagnostics["nonfinite"].values())
            print(f"Number of non-finite transitions (rejected, not divergences): {failures}")

    summary._robusthmc = True  # type: ignore[attr-defined]
    mcmc_class.summary = summary  # type: ignore[method-assign]
    mcmc_class.run = run  # type: ignore[method-assign]


def _keep_draws(mcmc: Any, stop: BaseException) -> None:
    """Make ``mcmc.get_samples()`` give the draws the stop carries (``err.samples``), as after a run."""
    samples = getattr(stop, "samples", None)
    if samples is not None:
        keep_samples(mcmc, {name: torch.as_tensor(np.asarray(draws)) for name, draws in samples.items()})


def _interrupted(mcmc: Any, interrupt: KeyboardInterrupt, args: tuple, kwargs: dict) -> SamplingInterrupted:
    """The draws ``MCMC.run`` had collected when ``interrupt`` stopped it, constrained and grouped by chain."""
    structure, flat = collected_at_interrupt(interrupt)
    samples: dict[str, np.ndarray] = {}
    if structure is not None and any(flat):
        if mcmc.transforms is None:  # Pyro computes them at the end of the run
            set_transforms(mcmc, *args, **kwargs)
        length = max(len(chain) for chain in flat)
        start = 0
        for name in sorted(structure):  # MCMC.run's packing order
            size = structure[name].numel()
            per_chain = []
            for chain in flat:
                draws = torch.full((length, *structure[name]), float("nan"))
                if chain:
                    values = torch.stack(chain)[:, start : start + size].reshape(len(chain), *structure[name])
                    transform = mcmc.transforms.get(name)
                    draws[: len(chain)] = transform.inv(values) if transform is not None else values
                per_chain.append(draws)
            samples[name] = torch.stack(per_chain).detach().cpu().numpy()
            start += size
    counts = {
        chain: (int(warmup), int(sampling))
        for chain, (warmup, sampling) in getattr(mcmc.kernel, "nonfinite_by_chain", {}).items()
    }
    made = ", ".join(f"chain {c}: {len(chain)}" for c, chain in enumerate(flat)) or "none"
    return SamplingInterrupted(
        f"sampling interrupted; the draws made so far ({made}) are in err.samples, "
        f"the non-finite transitions per chain so far in err.nonfinite",
        samples=samples,
        nonfinite=counts,
    )
