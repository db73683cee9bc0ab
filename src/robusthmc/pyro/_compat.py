"""Pyro internals that robusthmc relies on, named in one place (checked on Pyro 1.9.x).

* :func:`distribution_mask`: the mask a ``MaskedDistribution`` keeps (``_mask``),
  to rebuild a masked distribution around a repaired one.
* :func:`keep_samples`: where ``MCMC.get_samples`` reads the draws (``MCMC._samples``,
  grouped by chain), to hand it the draws of a stopped run.
"""

from __future__ import annotations

from typing import Any

__all__ = ["distribution_mask", "keep_samples"]


def distribution_mask(fn: Any) -> Any:
    """The mask of a Pyro ``MaskedDistribution`` (a bool or a boolean tensor)."""
    return fn._mask


def keep_samples(mcmc: Any, samples: dict[str, Any]) -> None:
    """Make ``mcmc.get_samples()`` return ``samples`` (tensors grouped by chain)."""
    mcmc._samples = samples
