"""The one exception hierarchy and the one warning hierarchy of robusthmc.

Every error derives from :class:`RobustHMCError` and also from the built-in it
resembles, so ``except FloatingPointError`` (or numpyro's ``RuntimeError``, or
Pyro's ``ValueError`` for a failed initialisation) keeps working after the
swap-in.  Errors raised once sampling has started carry what was collected:
``err.samples`` and ``err.diagnosis``.
"""

from __future__ import annotations

import sys
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from robusthmc._diagnosis import Diagnosis

__all__ = [
    "BackendNotInstalledError",
    "FrozenChainWarning",
    "GuardOptionError",
    "InfiniteBoundWarning",
    "InitializationError",
    "NonFiniteError",
    "NonFiniteWarning",
    "RetryLimitError",
    "RobustHMCError",
    "RobustHMCWarning",
    "SamplingInterrupted",
    "StepCapWarning",
    "StepSizeCollapseError",
    "StuckChainError",
    "UncheckedNumpyroWarning",
]


class RobustHMCError(Exception):
    """Base class of every robusthmc error.

    Attributes
    ----------
    diagnosis : Diagnosis or None
        Where and why it failed: phase, chain, iteration, sites, position.
    samples : dict
        Draws collected before the failure, grouped by chain
        (``(num_chains, num_draws, ...)``); empty when none were collected.
    """

    def __init__(
        self,
        message: str,
        *,
        diagnosis: Diagnosis | None = None,
        samples: Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__(message)
        self.diagnosis = diagnosis
        self.samples: Mapping[str, Any] = {} if samples is None else samples

    def __reduce__(self) -> tuple[Any, ...]:
        # Keeps the attributes when the error crosses a process boundary
        # (Pyro runs several chains in worker processes).
        return (
            _rebuild_error,
            (type(self), str(self), self.diagnosis, self.samples, self.__dict__),
        )


def _rebuild_error(
    cls: type[RobustHMCError],
    message: str,
    diagnosis: Diagnosis | None,
    samples: Mapping[str, Any],
    state: dict[str, Any],
) -> RobustHMCError:
    error = cls.__new__(cls)
    RobustHMCError.__init__(error, message, diagnosis=diagnosis, samples=samples)
    error.__dict__.update(state)
    return error


class GuardOptionError(RobustHMCError, ValueError):
    """A :class:`~robusthmc.Guard` option has the wrong type or is out of range."""


class BackendNotInstalledError(RobustHMCError, ImportError):
    """An optional backend (numpyro, pyro, gpytorch) is not installed."""


class InitializationError(RobustHMCError, FloatingPointError, RuntimeError, ValueError):
    """No initial point with a finite log density and gradient was found.

    It is also a ``RuntimeError`` (what numpyro raises here) and a
    ``ValueError`` (what Pyro raises here), so existing handlers still catch it.

    Attributes
    ----------
    attempts : int
        How many initial points were tried.
    values_tried : tuple of dict
        The constrained values of the first and the last point tried.
    """

    def __init__(
        self,
        message: str,
        *,
        diagnosis: Diagnosis | None = None,
        attempts: int = 0,
        values_tried: tuple[dict[str, Any], ...] = (),
    ) -> None:
        super().__init__(message, diagnosis=diagnosis)
        self.attempts = attempts
        self.values_tried = values_tried


class NonFiniteError(RobustHMCError, FloatingPointError):
    """A trajectory met a non-finite log density or gradient under ``on_nonfinite="raise"``."""


class StuckChainError(RobustHMCError, FloatingPointError):
    """A chain failed ``Guard.max_consecutive_failures`` transitions in a row."""


class StepSizeCollapseError(RobustHMCError, FloatingPointError):
    """The adapted step size fell below ``Guard.min_step_size``."""


class RetryLimitError(RobustHMCError, RuntimeError):
    """A retry loop (the step-size search) reached its cap in the :class:`~robusthmc.Guard`."""


class SamplingInterrupted(KeyboardInterrupt):
    """Ctrl-C stopped a guarded run; the draws made so far come with it.

    A ``KeyboardInterrupt``, so scripts and notebooks stop as before.

    Attributes
    ----------
    samples : dict
        The draws made before the interrupt, grouped by chain
        (``(num_chains, num_draws, ...)``, NaN after a chain's last draw).
    nonfinite : dict of int to tuple of int
        Non-finite transitions so far per chain, (warmup, sampling), for the
        chains whose guard ran in this process.
    """

    def __init__(
        self,
        message: str,
        *,
        samples: Mapping[str, Any] | None = None,
        nonfinite: Mapping[int, tuple[int, int]] | None = None,
    ) -> None:
        super().__init__(message)
        self.samples: Mapping[str, Any] = {} if samples is None else samples
        self.nonfinite: Mapping[int, tuple[int, int]] = {} if nonfinite is None else nonfinite


class RobustHMCWarning(UserWarning):
    """Base class of every robusthmc warning."""


class NonFiniteWarning(RobustHMCWarning, RuntimeWarning):
    """Some proposals met a non-finite log density or gradient and were rejected."""


class FrozenChainWarning(RobustHMCWarning, RuntimeWarning):
    """A latent kept one value through sampling: its draws are not a posterior sample."""


class StepCapWarning(RobustHMCWarning, RuntimeWarning):
    """HMC transitions were cut at ``Guard.max_steps_per_transition`` leapfrog steps."""


class UncheckedNumpyroWarning(RobustHMCWarning):
    """The installed numpyro's transition is not one robusthmc was checked against (fallback in use)."""


class InfiniteBoundWarning(RobustHMCWarning):
    """A truncation bound was written as infinity; ``None`` is the way to say "no bound"."""


_INTERNAL_PACKAGES = ("robusthmc", "numpyro", "pyro", "jax", "torch", "gpytorch", "blackjax", "contextlib")


def user_stacklevel() -> int:
    """The ``stacklevel`` that makes a warning raised by the caller point at user code."""
    frame = sys._getframe(1)
    level = 1
    while frame.f_back is not None:
        module = str(frame.f_globals.get("__name__", ""))
        if module.split(".")[0] not in _INTERNAL_PACKAGES:
            break
        frame = frame.f_back
        level += 1
    return level


# Tracebacks, reprs and doctests show the public name (robusthmc.NonFiniteError), not this module's.
for _public in __all__:
    globals()[_public].__module__ = "robusthmc"
