"""What a reproduction case reports: its :class:`Finding`, and the helpers cases share."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = ["NO_ERROR", "Finding", "Progress", "compare_with_reference"]

#: How a case reports progress: ``progress(attempts=200, nan_gradients=200)``.
Progress = Callable[..., None]


@dataclass(frozen=True)
class Finding:
    """What a case found: its outcome, the lines a user acts on, and whether that is as documented."""

    outcome: str
    message: str
    as_documented: bool

    @classmethod
    def from_error(
        cls, error: BaseException, as_documented: bool, keep: tuple[str, ...] = (), outcome: str = ""
    ) -> Finding:
        """An error's type and first line, with the lines of its message that start with ``keep``.

        The outcome is ``outcome``, or the error's type where that is empty.
        """
        lines = str(error).splitlines() or [""]
        kept = [line.strip() for line in lines[1:] if keep and line.strip().startswith(keep)]
        told = "\n".join([f"{type(error).__name__}: {lines[0]}", *kept])
        return cls(outcome or type(error).__name__, told, as_documented)


#: What a case that expects its sampler to fail returns when it did not.
NO_ERROR = Finding("sampled", "no error", False)


def compare_with_reference(
    draws: Mapping[str, Any],
    reference: Mapping[str, np.ndarray],
    probabilities: np.ndarray,
    effective_sample_size: Callable[[np.ndarray], Any],
    label: str = "exact",
) -> tuple[list[str], bool]:
    """One line per site of grouped ``draws`` (chains x draws) against reference quantiles.

    A site matches where the share of draws below each reference quantile is
    within four Monte Carlo standard errors of its probability (at the site's
    effective sample size, from the backend's own ``effective_sample_size``).
    """
    lines, matches = [], True
    for site, quantiles in reference.items():
        grouped = np.asarray(draws[site], dtype=np.float64)
        ess = float(effective_sample_size(draws[site]))
        flat = grouped.reshape(-1)
        below = np.array([(flat <= q).mean() for q in quantiles])
        error = 4 * np.sqrt(probabilities * (1 - probabilities) / ess)
        matches &= bool(np.all(np.abs(below - probabilities) <= error))
        drawn = " / ".join(f"{q:.3g}" for q in np.quantile(flat, probabilities))
        truth = " / ".join(f"{q:.3g}" for q in quantiles)
        percents = "/".join(f"{100 * p:g}" for p in probabilities)
        lines.append(f"{site}: {percents}% {drawn} ({label} {truth}), ESS {ess:.0f}")
    return lines, matches
