"""The :class:`Guard`: every policy and cap of the guarded kernels, validated once."""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass, fields
from typing import Any, ClassVar, Literal

from robusthmc._errors import GuardOptionError

__all__ = ["Guard", "OnNonFinite", "checked_guard"]

OnNonFinite = Literal["warn", "raise", "ignore"]
_POLICIES: tuple[OnNonFinite, ...] = ("warn", "raise", "ignore")


@dataclass(frozen=True)
class Guard:
    """What the guarded NUTS/HMC kernels do when the numerics fail.

    Parameters
    ----------
    on_nonfinite : {"warn", "raise", "ignore"}
        A transition whose trajectory met a non-finite log density or gradient
        (or, in Pyro, a numerical exception) is a rejected proposal, counted in
        the ``nonfinite`` field apart from divergences.  What each policy then
        does, phase by phase:

        * initialisation: every policy rejects the point and tries another
          (Pyro: up to ``max_init_attempts``; NumPyro: numpyro's own search,
          100 points), then raises :class:`~robusthmc.InitializationError`;
          the heuristic step-size search (``find_heuristic_step_size=True``)
          that runs the step size to the end of the float range raises
          :class:`~robusthmc.RetryLimitError`;
        * warmup: adaptation tries absurd step sizes (the step-size search,
          and dual averaging's restart near ten times the step size found, at
          each new window), and healthy models then overflow.  ``"warn"`` and
          ``"ignore"`` count these failures silently; ``"raise"`` raises
          :class:`~robusthmc.NonFiniteError` at the end of warmup only if a
          warmup failure happened at a step size no larger than the adapted
          one (evidence about the model, not a probe);
        * sampling: ``"raise"`` stops at the first failure;
          ``"warn"`` finishes the run, then one
          :class:`~robusthmc.NonFiniteWarning` naming sites and counts if a
          chain met more than isolated failures (more than one, and more than
          one in a thousand transitions: an isolated one is a trajectory that
          flew out until it overflowed, as a divergence does);
          ``"ignore"`` counts silently.

        Whatever the policy, ``max_consecutive_failures`` (in sampling) and
        ``min_step_size`` (in warmup) stop a chain that cannot move.
    max_init_attempts : int
        Pyro: initial points tried before :class:`~robusthmc.InitializationError`
        (at most 1,000,000).  NumPyro's kernels search as numpyro's do (100
        points, numpyro's keys), so that the starting points and the draws
        are numpyro's, and BlackJAX starts where it is told: setting this
        option there is refused (:class:`~robusthmc.GuardOptionError`), as is
        every option a backend does not use.
    max_consecutive_failures : int
        Non-finite transitions in a row after which a chain is stuck
        (:class:`~robusthmc.StuckChainError`), whatever ``on_nonfinite`` says.
        Checked in sampling (a streak that began in warmup counts): in warmup
        adaptation may still free the chain (HMC with a fixed ``num_steps``
        fails until its mass matrix adapts), and a chain that no step size
        can move stops there through ``min_step_size``.  At most 2**31 - 1
        (the counter is a 32-bit integer inside compiled code).
    min_step_size : float
        An adapted step size below this raises
        :class:`~robusthmc.StepSizeCollapseError`.
    max_steps_per_transition : int
        Most leapfrog steps one HMC transition may take (HMC with a fixed
        trajectory length takes ``trajectory_length / step_size``); at most
        2**31 - 1.  Not BlackJAX's: its kernels bound their own steps.
    max_recorded_failures : int
        Failures per chain whose position is kept for the diagnosis (at most
        10,000: each chain holds that many positions in memory throughout the run).
    numerical_exceptions : tuple of exception classes, optional
        Pyro only: exceptions raised by the model that count as a numerical
        failure (a rejected point) rather than a bug.  ``None`` uses
        :func:`robusthmc.pyro.is_numerical_exception`: torch's and GPyTorch's
        linear-algebra errors and distribution validation errors.  Any other
        exception, Python's ``ZeroDivisionError`` included, is the user's and
        propagates at once, in every phase and policy.

    Raises
    ------
    GuardOptionError
        A ``ValueError`` naming the option, the value and what is allowed.

    Examples
    --------
    >>> from robusthmc import Guard
    >>> Guard(on_nonfinite="raise").max_init_attempts
    100
    >>> Guard(on_nonfinite="stop")
    Traceback (most recent call last):
    ...
    robusthmc.GuardOptionError: Guard(on_nonfinite='stop'): allowed values are 'warn', 'raise', 'ignore'.
    """

    on_nonfinite: OnNonFinite = "warn"
    max_init_attempts: int = 100
    max_consecutive_failures: int = 50
    min_step_size: float = 1e-8
    max_steps_per_transition: int = 8192
    max_recorded_failures: int = 5
    numerical_exceptions: tuple[type[BaseException], ...] | None = None

    #: The largest value each integer option can work with.
    LIMITS: ClassVar[dict[str, int]] = {
        "max_init_attempts": 1_000_000,
        "max_consecutive_failures": 2**31 - 1,
        "max_steps_per_transition": 2**31 - 1,
        "max_recorded_failures": 10_000,
    }

    def __post_init__(self) -> None:
        if self.on_nonfinite not in _POLICIES:
            allowed = ", ".join(repr(p) for p in _POLICIES)
            raise GuardOptionError(
                f"Guard(on_nonfinite={self.on_nonfinite!r}): allowed values are {allowed}."
            )
        for option in fields(self):
            value = getattr(self, option.name)
            if option.type == "int":
                if isinstance(value, bool) or not isinstance(value, numbers.Integral) or int(value) < 1:
                    raise GuardOptionError(f"Guard({option.name}={value!r}): must be an integer >= 1.")
                limit = self.LIMITS[option.name]
                if int(value) > limit:
                    raise GuardOptionError(f"Guard({option.name}={value!r}): at most {limit}.")
                object.__setattr__(self, option.name, int(value))  # NumPy integers too
            elif option.type == "float":
                if (
                    isinstance(value, bool)
                    or not isinstance(value, numbers.Real)
                    or not math.isfinite(value)
                    or value <= 0
                ):
                    raise GuardOptionError(f"Guard({option.name}={value!r}): must be a finite number > 0.")
                object.__setattr__(self, option.name, float(value))
        exceptions = self.numerical_exceptions
        if exceptions is not None and not (
            isinstance(exceptions, tuple)
            and all(isinstance(e, type) and issubclass(e, BaseException) for e in exceptions)
        ):
            raise GuardOptionError(
                f"Guard(numerical_exceptions={exceptions!r}): must be None or a tuple "
                "of exception classes, e.g. (torch.linalg.LinAlgError,)."
            )


#: The options a backend does not use, and why: setting one there is refused, never ignored.
UNUSED_OPTIONS: dict[str, dict[str, str]] = {
    "numpyro": {
        "max_init_attempts": "the NumPyro kernels search for a start as numpyro's do (100 points, "
        "numpyro's keys), so that the starts and draws are numpyro's",
        "numerical_exceptions": "a JAX model raises nothing while it samples (it is compiled); "
        "non-finite values are what the guard catches there",
    },
    "blackjax": {
        "max_init_attempts": "BlackJAX starts where it is told: init checks that start and raises",
        "numerical_exceptions": "a JAX log density raises nothing while it samples (it is compiled)",
        "max_steps_per_transition": "BlackJAX's kernels bound their own steps "
        "(nuts: max_num_doublings; hmc: num_integration_steps)",
    },
    "pyro": {},
}


def checked_guard(guard: Any, backend: str | None = None) -> Guard:
    """``guard``, ``Guard()`` for None, or a :class:`~robusthmc.GuardOptionError` for anything else.

    With ``backend``, an option set away from its default that the backend does
    not use is refused by name (:data:`UNUSED_OPTIONS`).

    Examples
    --------
    >>> checked_guard(Guard(max_init_attempts=10), "numpyro")
    Traceback (most recent call last):
    ...
    robusthmc.GuardOptionError: Guard(max_init_attempts=10) does nothing with the numpyro backend: the NumPyro kernels search for a start as numpyro's do (100 points, numpyro's keys), so that the starts and draws are numpyro's. Leave it out.
    """
    if guard is None:
        return Guard()
    if not isinstance(guard, Guard):
        raise GuardOptionError(
            f"guard={guard!r}: expected a robusthmc.Guard, e.g. guard=Guard(on_nonfinite='raise')."
        )
    defaults = Guard()
    for name, why in UNUSED_OPTIONS.get(backend or "", {}).items():
        value = getattr(guard, name)
        if value != getattr(defaults, name):
            raise GuardOptionError(
                f"Guard({name}={value!r}) does nothing with the {backend} backend: {why}. Leave it out."
            )
    return guard
