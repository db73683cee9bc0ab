"""Pyro internals that robusthmc relies on, named in one place (checked on Pyro 1.9.x).

* :func:`distribution_mask`: the mask a ``MaskedDistribution`` keeps (``_mask``),
  to rebuild a masked distribution around a repaired one.
"""

from __future__ import annotations

from typing import Any

__all__ = ["distribution_mask"]


def distribution_mask(fn: Any) -> Any:
    """The mask of a Pyro ``MaskedDistribution`` (a bool or a boolean tensor)."""
    return fn._mask
