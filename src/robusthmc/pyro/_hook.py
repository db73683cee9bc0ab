"""The hooks robusthmc installs in Pyro's ``MCMC``: chains in worker processes report, summaries count.

A chain drawn in a worker process cannot warn the user: the warning would be
raised in the worker.  Its kernel sends its guard record with the
diagnostics instead, and after ``MCMC.run`` the records of all chains are
settled here, in the parent: one warning naming each chain.  ``summary``
prints the non-finite transitions beside the divergences.  Installed once,
when ``robusthmc.pyro`` is imported.
"""

from __future__ import annotations

import functools
from typing import Any

import pyro.infer

from robusthmc._outcome import settle_run
from robusthmc.pyro._samplers import WORKER_RECORD


def install() -> None:
    """Wrap ``pyro.infer.MCMC.run`` and ``summary`` (idempotent)."""
    mcmc_class = pyro.infer.MCMC
    original = mcmc_class.summary
    if getattr(original, "_robusthmc", False):
        return
    original_run = mcmc_class.run

    @functools.wraps(original_run)
    def run(self: Any, *args: Any, **kwargs: Any) -> None:
        original_run(self, *args, **kwargs)
        in_workers = hasattr(self.sampler, "workers")  # Pyro's _MultiSampler
        diagnostics = self.diagnostics() if in_workers and hasattr(self.kernel, "guard") else {}
        if WORKER_RECORD in diagnostics:
            records = [diagnostics[WORKER_RECORD][f"chain {chain}"] for chain in range(self.num_chains)]
            settle_run(records, self.kernel.guard, samples={})

    @functools.wraps(original)
    def summary(self: Any, prob: float = 0.9) -> None:
        original(self, prob=prob)
        diagnostics = self.diagnostics()
        if "nonfinite" in diagnostics:
            failures = sum(len(chain) for chain in diagnostics["nonfinite"].values())
            print(f"Number of non-finite transitions (rejected, not divergences): {failures}")

    summary._robusthmc = True  # type: ignore[attr-defined]
    mcmc_class.summary = summary  # type: ignore[method-assign]
    mcmc_class.run = run  # type: ignore[method-assign]
