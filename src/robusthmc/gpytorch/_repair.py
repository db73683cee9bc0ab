"""``repair``: each flagged prior of a GPyTorch model truncated to its parameter's constraint, in place."""

from __future__ import annotations

import math
import numbers
from typing import Any

import torch
from gpytorch.priors import Prior
from torch.distributions import constraints
from torch.nn import Module

from robusthmc._repair import Repair, Repairs
from robusthmc.gpytorch._audit import (
    _bounds,
    _constraint_of,
    _describe_prior,
    _mass_outside,
    audit,
    require_module,
)

__all__ = ["TruncatedPrior", "repair"]

#: Rounds of redrawing the values a sample put outside the bounds (each keeps the draws inside).
_MAX_REDRAWS = 1000


def _check_number(name: str, value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"TruncatedPrior({name}={value!r}): expected a number")
    if math.isnan(value):
        raise ValueError(f"TruncatedPrior({name}=nan): expected a number (-inf or inf for no bound)")


class TruncatedPrior(Prior):
    """A GPyTorch prior restricted to ``[low, high]``, its lost mass renormalised.

    Its support is the interval, so that Pyro's NUTS (``pyro_sample_from_prior``)
    samples the parameter in the space its constraint can represent.

    Parameters
    ----------
    base : gpytorch.priors.Prior
    low, high : float
        The bounds (``-inf``/``inf`` for none).
    log_mass : float, optional
        ``log P(low < X < high)`` under ``base``; computed from its CDF if left out.

    Examples
    --------
    >>> import torch
    >>> from gpytorch.priors import GammaPrior
    >>> from robusthmc.gpytorch import TruncatedPrior
    >>> prior = TruncatedPrior(GammaPrior(0.5, 1.0), low=1e-4)
    >>> prior.support
    GreaterThan(lower_bound=0.0001)
    >>> bool(prior.log_prob(torch.tensor(1e-5)) == -float("inf"))
    True
    """

    arg_constraints: dict[str, Any] = {}  # noqa: RUF012
    has_rsample = False

    def __init__(
        self, base: Prior, low: float = -math.inf, high: float = math.inf, log_mass: float | None = None
    ) -> None:
        if not isinstance(base, Prior):
            raise TypeError(
                f"TruncatedPrior(base={base!r}): expected a gpytorch prior, e.g. GammaPrior(0.5, 1.0)"
            )
        _check_number("low", low)
        _check_number("high", high)
        if log_mass is not None:
            _check_number("log_mass", log_mass)
            if not -math.inf < log_mass <= 0:
                raise ValueError(f"TruncatedPrior(log_mass={log_mass!r}): a log probability, finite and <= 0")
        # torch's Distribution.__init__ runs nn.Module's again (and empties its submodules): first.
        Module.__init__(self)
        torch.distributions.Distribution.__init__(
            self, base.batch_shape, base.event_shape, validate_args=False
        )
        self.add_module("base", base)
        self.low, self.high = float(low), float(high)
        if not self.low < self.high:
            raise ValueError(f"TruncatedPrior got low={low!r} >= high={high!r}: pass low < high")
        if log_mass is None:
            outside = _mass_outside(base, self.low, self.high)
            if not outside < 1.0:
                raise ValueError(
                    f"TruncatedPrior: {_describe_prior(base)} has no mass between low={low!r} and high={high!r}"
                )
            log_mass = math.log1p(-outside)
        self.log_mass = float(log_mass)
        self._transform = None

    @constraints.dependent_property(is_discrete=False, event_dim=0)
    def support(self) -> constraints.Constraint:
        if math.isinf(self.high):
            return constraints.greater_than(self.low)
        if math.isinf(self.low):
            return constraints.less_than(self.high)
        return constraints.interval(self.low, self.high)

    def log_prob(self, value: torch.Tensor) -> torch.Tensor:
        """``base.log_prob(value) - log_mass`` inside the bounds, ``-inf`` outside."""
        inside = (value > self.low) & (value < self.high)
        return torch.where(inside, self.base.log_prob(value) - self.log_mass, -torch.inf)

    def sample(self, sample_shape: torch.Size = torch.Size()) -> torch.Tensor:  # noqa: B008
        """Draws of ``base``, those outside the bounds drawn again."""
        draws = self.base.sample(sample_shape)
        for _ in range(_MAX_REDRAWS):
            outside = (draws <= self.low) | (draws >= self.high)
            if not bool(outside.any()):
                return draws
            draws = torch.where(outside, self.base.sample(sample_shape), draws)
        raise RuntimeError(
            f"TruncatedPrior: {_MAX_REDRAWS} rounds of draws from {_describe_prior(self.base)} left "
            f"some outside ({self.low:g}, {self.high:g}): its mass there is too small to sample by rejection"
        )

    def expand(self, batch_shape: Any, _instance: Any = None) -> TruncatedPrior:
        """The same truncation of ``base`` expanded to ``batch_shape`` (its mass is kept)."""
        return TruncatedPrior(self.base.expand(batch_shape), self.low, self.high, self.log_mass)

    def __repr__(self) -> str:
        bounds = ", ".join(
            f"{name}={value:g}"
            for name, value in (("low", self.low), ("high", self.high))
            if math.isfinite(value)
        )
        return f"TruncatedPrior({_describe_prior(self.base)}, {bounds})"


def repair(model: Any) -> Repairs:
    """Truncate, in place, each prior whose support reaches outside its parameter's constraint.

    What :func:`audit` flags: a prior that puts mass where the constraint cannot
    go (a ``GammaPrior`` on a noise constrained ``GreaterThan(1e-4)``) hands
    ``pyro_sample_from_prior`` values with no raw parameter. Truncated to the
    constraint's support, the lost mass renormalised, it gives the posterior the
    constrained model can represent, and Pyro's NUTS never proposes outside it.
    Priors that agree with their constraint, priors on a transform of their
    parameter and priors with no mass inside the constraint are left as they are.

    Parameters
    ----------
    model : gpytorch.Module
        A model or likelihood with registered priors.

    Returns
    -------
    Repairs
        One per prior truncated (empty when the audit is clean).

    Examples
    --------
    >>> from robusthmc.gpytorch import audit, repair
    >>> from robusthmc.lessons.gpytorch import periodic_gp
    >>> recipe = periodic_gp()
    >>> print(repair(recipe.gp))  # doctest: +ELLIPSIS
    site 'likelihood.noise_prior': GammaPrior(concentration=0.5, rate=1) -> TruncatedPrior(GammaPrior(concentration=0.5, rate=1), low=0.0001) (support_mismatch: ...)
    >>> audit(recipe.gp).clean
    True
    """
    require_module(model, "robusthmc.gpytorch.repair(model=...)")
    report = audit(model)
    priors = {site: entry for site, *entry in model.named_priors()}
    made = []
    for row in report.flagged:
        site = f"{row.module}.{row.prior_name}" if row.module else row.prior_name
        module, prior, closure, setting_closure = priors[site]
        if getattr(prior, "_transform", None) is not None or setting_closure is None:
            continue
        if not row.unrepresentable_mass < 1.0:
            continue  # no mass inside the constraint: nothing to renormalise, the audit says so
        low, high = _bounds(_constraint_of(module, row.parameter))
        truncated = TruncatedPrior(prior, low, high, math.log1p(-row.unrepresentable_mass))
        module.register_prior(row.prior_name, truncated, closure, setting_closure)
        made.append(
            Repair(
                site,
                _describe_prior(prior),
                repr(truncated),
                "support_mismatch",
                f"{row.unrepresentable_mass:.3g} of the prior lies outside {row.constraint}, where "
                f"{row.parameter} has no raw value: truncated to the constraint's support, that "
                f"mass renormalised",
            )
        )
    return Repairs(made)
