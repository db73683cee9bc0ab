"""The hook robusthmc installs in Pyro's ``MCMC``: ``summary`` counts non-finite transitions.

Pyro's summary prints the divergences; with a guarded kernel the rejected
non-finite transitions, counted apart from them, are printed beside them.
Installed once, when ``robusthmc.pyro`` is imported.
"""

from __future__ import annotations

import functools
from typing import Any

import pyro.infer


def install() -> None:
    """Wrap ``pyro.infer.MCMC.summary`` (idempotent)."""
    mcmc_class = pyro.infer.MCMC
    original = mcmc_class.summary
    if getattr(original, "_robusthmc", False):
        return

    @functools.wraps(original)
    def summary(self: Any, prob: float = 0.9) -> None:
        original(self, prob=prob)
        diagnostics = self.diagnostics()
        if "nonfinite" in diagnostics:
            failures = sum(len(chain) for chain in diagnostics["nonfinite"].values())
            print(f"Number of non-finite transitions (rejected, not divergences): {failures}")

    summary._robusthmc = True  # type: ignore[attr-defined]
    mcmc_class.summary = summary  # type: ignore[method-assign]
