"""The guarded potential of Pyro's kernels: which exceptions are numerical, walls, failures noted.

Pyro's kernels run in Python, so the guard can catch what the model raises: a
numerical exception becomes a NaN energy (a rejected proposal), as does an
infinite log density or an observed value computed from the latents that left
its support (a wall); the first non-finite value or gradient of a transition
is noted for the kernel (``robusthmc.pyro._kernel``).
"""

from __future__ import annotations

import contextlib
import functools
import math
import re
import sys
from collections.abc import Callable, Mapping
from typing import Any

import pyro.util
import torch
from pyro import poutine
from pyro.distributions.torch_distribution import MaskedDistribution

from robusthmc._guard import Guard
from robusthmc.pyro._compat import distribution_mask

__all__ = [
    "GuardedPotential",
    "Monitor",
    "OutsideSupportError",
    "SupportWall",
    "is_numerical_exception",
    "observes_latents",
    "outside_support",
]

#: torch.distributions' argument validation: a parameter or value outside its constraint.
_VALIDATION_MESSAGE = re.compile(r"^Expected (parameter|value argument)")


class OutsideSupportError(ValueError):
    """An observed value computed from the latents left its distribution's support."""


class SupportWall(poutine.messenger.Messenger):
    """Reject a point where an observed value computed from the latents leaves its support.

    Pyro's ``MCMC`` runs with validation off, and torch's log densities are then
    finite formulas outside the support (``Exponential.log_prob(-1.0) = -1``): a
    wall in the posterior the sampler walks through, giving wrong draws without
    a word.  With validation on, Pyro would raise; here the point is rejected.

    With ``data=True`` (the initial search) observed data count too: data outside
    the support (a Bernoulli "2", a label K of K categories) make every point
    invalid, so no start is found and the search's failure names the data.  Values
    masked out (``.mask(m)``, ``poutine.mask``) are no data: placeholders may lie anywhere.
    """

    def __init__(self, data: bool = False) -> None:
        super().__init__()
        self.data = data

    def _postprocess_message(self, msg: Any) -> None:
        value = msg["value"]
        if msg["type"] != "sample" or not msg["is_observed"] or not isinstance(value, torch.Tensor):
            return
        if torch.jit.is_tracing():  # jit_compile=True: a Python check cannot enter the trace
            return
        if (value.requires_grad or self.data) and outside_support(msg):
            what = "the value computed from the latents" if value.requires_grad else "the observed data"
            raise OutsideSupportError(
                f"site {msg['name']!r}: {what} lies outside the support of {type(msg['fn']).__name__}"
            )


def outside_support(msg: Mapping[str, Any]) -> bool:
    """Whether a sample site's value lies outside its distribution's support where not masked out."""
    fn = msg["fn"]
    try:
        inside = fn.support.check(msg["value"].detach())
    except (NotImplementedError, RuntimeError, ValueError):  # a support that cannot be checked
        return False
    masks = [msg["mask"], distribution_mask(fn) if isinstance(fn, MaskedDistribution) else None]
    for mask in masks:
        if mask is False:
            return False
        if isinstance(mask, torch.Tensor):
            inside = inside | ~mask
    return not bool(inside.all())


def is_numerical_exception(error: BaseException, guard: Guard) -> bool:
    """Whether an exception raised by the model is a numerical failure (a rejected point).

    ``Guard.numerical_exceptions`` decides when set.  By default only failures of
    the computation itself at a bad point count: torch's ``LinAlgError``,
    GPyTorch's ``NotPSDError`` and ``NanError``, and torch.distributions'
    argument validation ("Expected parameter ... to satisfy the constraint",
    raised when a parameter is NaN or out of its support).  Everything else is
    a bug and propagates unchanged: ``TypeError``, shape mismatches, and also
    Python's own ``ZeroDivisionError`` or ``OverflowError``, which tensors never
    raise, so they come from the user's code (the mean of an empty batch).

    Examples
    --------
    >>> import torch
    >>> from robusthmc import Guard
    >>> is_numerical_exception(torch.linalg.LinAlgError("singular"), Guard())
    True
    >>> is_numerical_exception(ZeroDivisionError("division by zero"), Guard())
    False
    """
    if not isinstance(error, BaseException):
        raise TypeError(f"is_numerical_exception(error={error!r}): expected an exception")
    if not isinstance(guard, Guard):
        raise TypeError(f"is_numerical_exception(guard={guard!r}): expected a robusthmc.Guard")
    if isinstance(error, OutsideSupportError):  # robusthmc's own: a wall in the posterior
        return True
    if guard.numerical_exceptions is not None:
        return isinstance(error, guard.numerical_exceptions)
    if isinstance(error, torch.linalg.LinAlgError):
        return True
    gpytorch_errors = sys.modules.get("gpytorch.utils.errors")
    if gpytorch_errors is not None and isinstance(
        error, (gpytorch_errors.NotPSDError, gpytorch_errors.NanError)
    ):
        return True
    return type(error) is ValueError and bool(_VALIDATION_MESSAGE.match(str(error)))


class Monitor:
    """Notes the first non-finite energy, non-finite gradient or numerical exception of a transition."""

    def __init__(self, guard: Guard) -> None:
        self.guard = guard
        self.failure: tuple[dict[str, torch.Tensor], BaseException | None] | None = None
        self._hooks: list[Any] = []

    def begin(self) -> None:
        self.failure = None

    def end(self) -> None:
        for handle in self._hooks:
            handle.remove()
        self._hooks.clear()

    def failed(self, z: Mapping[str, torch.Tensor], exception: BaseException | None) -> None:
        if self.failure is None:
            self.failure = ({k: v.detach().clone() for k, v in z.items()}, exception)

    def watch_gradients(self, z: Mapping[str, torch.Tensor]) -> None:
        check = functools.partial(self._check_gradient, z)
        for value in z.values():
            if value.requires_grad and value.is_leaf:
                self._hooks.append(value.register_hook(check))

    def _check_gradient(self, z: Mapping[str, torch.Tensor], gradient: torch.Tensor) -> None:
        # NaN or inf anywhere makes the sum non-finite: one reduction and one sync per latent.
        if not math.isfinite(float(gradient.sum())):
            self.failed(z, None)

    def __getstate__(self) -> dict[str, Any]:
        return {"guard": self.guard, "failure": None, "_hooks": []}


def observes_latents(
    model: Callable, args: tuple, kwargs: Mapping[str, Any], transforms: Any, initial: Any
) -> bool:
    """Whether the model observes a value computed from its latents (then walls are checked).

    Decided from one run at the initial point; if that run raises, the answer is yes.
    """
    transforms = transforms or {}
    rng = pyro.util.get_rng_state()  # the run draws the same random numbers as without this check
    try:
        with torch.enable_grad(), pyro.validation_enabled(False):
            z = {name: value.detach().requires_grad_(True) for name, value in (initial or {}).items()}
            values = {name: transforms[name].inv(v) if name in transforms else v for name, v in z.items()}
            trace = poutine.trace(poutine.condition(model, data=values)).get_trace(*args, **kwargs)
    except Exception:
        return True
    finally:
        pyro.util.set_rng_state(rng)
    return any(
        site["type"] == "sample"
        and site["is_observed"]
        and name not in values
        and isinstance(site["value"], torch.Tensor)
        and site["value"].requires_grad
        for name, site in trace.nodes.items()
    )


class GuardedPotential:
    """The model's potential, with numerical exceptions turned into a NaN energy and failures noted."""

    def __init__(self, potential_fn: Callable, monitor: Monitor) -> None:
        self.potential_fn = potential_fn
        self.monitor = monitor
        #: Whether to check observed values computed from latents (see SupportWall); set-up
        #: turns it off for a model that observes none, so that the check costs nothing there.
        self.walls = True

    def __call__(self, z: Mapping[str, torch.Tensor]) -> torch.Tensor:
        try:
            with SupportWall() if self.walls else contextlib.nullcontext():
                energy = self.potential_fn(z)
        except Exception as error:
            if not is_numerical_exception(error, self.monitor.guard):
                raise
            self.monitor.failed(z, error)
            # NaN, still connected to z so that Pyro's gradient call works: the proposal is rejected.
            connected = sum((value * 0.0).sum() for value in z.values())
            return torch.as_tensor(connected) + float("nan")
        # A model with no latent site has a constant potential, which Pyro returns as a float.
        value = energy.detach() if isinstance(energy, torch.Tensor) else energy
        if not math.isfinite(float(value)):
            self.monitor.failed(z, None)
            if float(value) == -math.inf:
                # An infinite log density: Pyro would accept the point as infinitely likely (or
                # fail on a NaN probability); NaN makes it a rejected proposal like the others.
                return energy + float("nan")
        else:
            self.monitor.watch_gradients(z)
        return energy
