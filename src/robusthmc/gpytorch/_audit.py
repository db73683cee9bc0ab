"""Audit a GPyTorch model: whether each prior's support fits the constraint of its parameter."""

from __future__ import annotations

import dataclasses
import inspect
import math
from dataclasses import dataclass
from typing import Any

import gpytorch
import torch
from gpytorch.constraints import Interval
from gpytorch.priors import GammaPrior, Prior

__all__ = ["Audit", "PriorRow", "audit"]

#: Prior mass the constraint cannot represent below which a row is not flagged.
NEGLIGIBLE_MASS = 1e-9
_MONTE_CARLO_DRAWS = 200_000


@dataclass(frozen=True)
class PriorRow:
    """One registered prior.

    Attributes
    ----------
    module : str
        Path of the module that registered it (``""`` for the model itself).
    prior_name : str
        The name it was registered under, e.g. ``"noise_prior"``.
    parameter : str
        The parameter it is a prior on, e.g. ``"noise"``.
    prior : str
        The prior, e.g. ``"GammaPrior(concentration=0.5, rate=1.0)"``.
    constraint : str
        The parameter's constraint, e.g. ``"GreaterThan(1.000E-04)"``.
    unrepresentable_mass : float
        Prior probability of values the constraint cannot represent (below its
        lower bound or above its upper bound): a draw there has no raw value.
    flagged : bool
        Whether that mass is more than negligible.
    remedies : tuple of str
        What fixes it, most direct first (empty when not flagged).
    """

    module: str
    prior_name: str
    parameter: str
    prior: str
    constraint: str
    unrepresentable_mass: float
    flagged: bool
    remedies: tuple[str, ...]


@dataclass(frozen=True)
class Audit:
    """The audit of a model: one row per registered prior."""

    rows: tuple[PriorRow, ...]

    @property
    def clean(self) -> bool:
        """Whether no row is flagged."""
        return not any(row.flagged for row in self.rows)

    @property
    def flagged(self) -> tuple[PriorRow, ...]:
        """The rows whose prior puts mass where the constraint cannot go."""
        return tuple(row for row in self.rows if row.flagged)

    def __str__(self) -> str:
        header = ("", "parameter", "prior", "constraint", "mass it cannot represent")
        table = [header] + [
            (
                "FLAG" if row.flagged else "ok",
                f"{row.module}.{row.parameter}" if row.module else row.parameter,
                row.prior,
                row.constraint,
                f"{row.unrepresentable_mass:.3g}",
            )
            for row in self.rows
        ]
        widths = [max(len(line[i]) for line in table) for i in range(len(header))]
        lines = ["  ".join(cell.ljust(width) for cell, width in zip(line, widths)).rstrip() for line in table]
        for row in self.flagged:
            lines += [f"fix {row.parameter}: {remedy}" for remedy in row.remedies]
        flagged = len(self.flagged)
        verdict = "a prior is" if flagged == 1 else f"{flagged} priors are"
        lines.append("clean: every prior agrees with its constraint" if not flagged else f"{verdict} flagged")
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        """The audit as plain JSON types (``json.dumps(audit.to_dict())``)."""
        return {"clean": self.clean, "rows": [dataclasses.asdict(row) for row in self.rows]}


def _parameter_name(closure: Any, prior_name: str) -> str:
    """The parameter a prior was registered on (GPyTorch keeps it only inside a closure)."""
    captured = inspect.getclosurevars(closure).nonlocals.get("param")
    return captured if isinstance(captured, str) else prior_name.removesuffix("_prior")


def _constraint_of(module: Any, parameter: str) -> Interval | None:
    for name, constraint in module.named_constraints():
        if name.endswith(f"raw_{parameter}_constraint"):
            return constraint
    return None


def _bounds(constraint: Interval | None) -> tuple[float, float]:
    if constraint is None:
        return -math.inf, math.inf
    return float(torch.as_tensor(constraint.lower_bound).min()), float(
        torch.as_tensor(constraint.upper_bound).max()
    )


def _mass_outside(prior: Prior, low: float, high: float) -> float:
    """P(X <= low) + P(X >= high) under the prior, from its CDF or, without one, by Monte Carlo."""
    try:
        below = float(prior.cdf(torch.as_tensor(low)).max()) if math.isfinite(low) else 0.0
        above = 1.0 - float(prior.cdf(torch.as_tensor(high)).min()) if math.isfinite(high) else 0.0
        if math.isfinite(below) and math.isfinite(above):
            return below + above
    except (NotImplementedError, ValueError, RuntimeError):
        pass
    generator_state = torch.random.get_rng_state()
    try:
        torch.manual_seed(0)
        draws = prior.sample(torch.Size([_MONTE_CARLO_DRAWS]))
    finally:
        torch.random.set_rng_state(generator_state)
    return float(((draws <= low) | (draws >= high)).double().mean())


def _describe_prior(prior: Prior) -> str:
    arguments = []
    for name in getattr(prior, "arg_constraints", {}):
        value = getattr(prior, name, None)
        if isinstance(value, torch.Tensor) and value.numel() == 1:
            arguments.append(f"{name}={float(value):g}")
    return f"{type(prior).__name__}({', '.join(arguments)})"


def _remedies(module_path: str, parameter: str, prior: Prior, low: float, high: float) -> tuple[str, ...]:
    where = f"{module_path}." if module_path else ""
    remedies = [
        f"constrain {where}{parameter} with gpytorch.constraints.Positive() (every positive value "
        f"representable), e.g. {where}register_constraint('raw_{parameter}', Positive()) "
        f"- for a GaussianLikelihood: GaussianLikelihood(noise_constraint=Positive())"
    ]
    if isinstance(prior, GammaPrior) and math.isfinite(low):
        better = GammaPrior(3.0, float(prior.rate))
        mass = _mass_outside(better, low, high)
        remedies.append(
            f"choose prior parameters that keep the mass away from the bound: "
            f"GammaPrior(3.0, {float(prior.rate):g}) puts {mass:.2g} of its mass below {low:g}"
        )
    else:
        remedies.append("choose prior parameters that keep the mass away from the bound")
    bounds = f"({low:g}, {high:g})"
    remedies.append(
        f"use a prior whose support lies inside {bounds}, e.g. a UniformPrior within those bounds"
    )
    return tuple(remedies)


def require_module(model: Any, caller: str) -> None:
    """Raise a one-line ``TypeError`` unless ``model`` is a GPyTorch module."""
    if not isinstance(model, gpytorch.Module):
        raise TypeError(
            f"{caller} expects a gpytorch.Module (a model or likelihood), "
            f"got {type(model).__module__}.{type(model).__qualname__}"
        )


def audit(model: Any) -> Audit:
    """One row per registered prior: parameter, constraint, and the prior mass the constraint cannot represent.

    A prior whose support reaches beyond its parameter's constraint (a
    ``GammaPrior`` on a noise constrained ``GreaterThan(1e-4)``) hands
    ``pyro_sample_from_prior`` values with no raw parameter: NaN in the
    covariance, a crashed NUTS run (docs/lessons.md, lesson 2).

    Parameters
    ----------
    model : gpytorch.Module
        A model or likelihood with registered priors.

    Returns
    -------
    Audit

    Raises
    ------
    TypeError
        If ``model`` is not a GPyTorch module.

    Examples
    --------
    >>> from robusthmc.gpytorch import audit
    >>> from robusthmc.lessons.gpytorch import periodic_gp
    >>> report = audit(periodic_gp().gp)
    >>> [(row.parameter, round(row.unrepresentable_mass, 4)) for row in report.flagged]
    [('noise', 0.0113)]
    """
    require_module(model, "robusthmc.gpytorch.audit")
    rows = []
    for site, module, prior, closure, _ in model.named_priors():
        path, _, prior_name = site.rpartition(".")
        parameter = _parameter_name(closure, prior_name)
        constraint = _constraint_of(module, parameter)
        low, high = _bounds(constraint)
        mass = _mass_outside(prior, low, high)
        flagged = mass > NEGLIGIBLE_MASS
        rows.append(
            PriorRow(
                module=path,
                prior_name=prior_name,
                parameter=parameter,
                prior=_describe_prior(prior),
                constraint="none" if constraint is None else repr(constraint),
                unrepresentable_mass=mass,
                flagged=flagged,
                remedies=_remedies(path, parameter, prior, low, high) if flagged else (),
            )
        )
    return Audit(tuple(rows))
