"""``arviz.from_pyro`` reads only the divergences; with a guarded kernel it also gets ``nonfinite``.

Installed once, when ``robusthmc.pyro`` is imported, and only where ArviZ is.
"""

from __future__ import annotations

import functools
from typing import Any

import numpy as np


def install() -> None:
    """Wrap ``PyroConverter.sample_stats_to_xarray`` to add the ``nonfinite`` field."""
    try:
        from arviz.data import io_pyro
    except ImportError:
        return
    converter = io_pyro.PyroConverter
    if getattr(converter.sample_stats_to_xarray, "_robusthmc", False):
        return
    original = converter.sample_stats_to_xarray

    @functools.wraps(original)
    def sample_stats_to_xarray(self: Any) -> Any:
        dataset = original(self)
        diagnostics = self.posterior.diagnostics()
        if dataset is None or "nonfinite" not in diagnostics:
            return dataset
        nonfinite = np.zeros((self.nchains, self.ndraws), dtype=bool)
        for i, chain in enumerate(sorted(diagnostics["nonfinite"])):
            nonfinite[i, diagnostics["nonfinite"][chain]] = True
        return dataset.assign(nonfinite=(("chain", "draw"), nonfinite))

    sample_stats_to_xarray._robusthmc = True  # type: ignore[attr-defined]
    setattr(converter, "sample_stats_to_xarray", sample_stats_to_xarray)  # noqa: B010
