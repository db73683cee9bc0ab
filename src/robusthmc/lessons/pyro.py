"""Example Pyro models: the failures of docs/lessons.md and healthy references.

The same models as :mod:`robusthmc.lessons.numpyro`, written for Pyro.

Examples
--------
>>> import pyro
>>> from pyro.infer import MCMC
>>> from robusthmc.pyro import NUTS
>>> from robusthmc.lessons.pyro import eight_schools_noncentered
>>> pyro.set_rng_seed(0)
>>> mcmc = MCMC(NUTS(eight_schools_noncentered), 20, warmup_steps=20, disable_progbar=True)
>>> mcmc.run()
>>> sorted(mcmc.get_samples())
['mu', 'tau', 'theta_trans']
"""

from __future__ import annotations

import math
from typing import Any

import pyro
import pyro.distributions as dist
import torch
from torch.distributions import constraints

from robusthmc.lessons.data import EIGHT_SCHOOLS

__all__ = [
    "NaiveTruncatedNormal",
    "eight_schools_centered",
    "eight_schools_noncentered",
    "logistic_regression",
    "truncated_regression",
    "turing",
]


class NaiveTruncatedNormal(dist.TorchDistribution):
    """The truncated normal as users write it by hand: ``Normal.log_prob - log(Phi(b) - Phi(a))``.

    With ``high=inf`` its log density is finite but its gradient with respect
    to the scale is NaN (``d/dscale Phi(inf/scale) = 0 * inf``), and its
    support ``interval(low, inf)`` maps to ``inf`` in unconstrained space:
    docs/lessons.md's failure, for the tests and the command line to reproduce.
    """

    arg_constraints = {"loc": constraints.real, "scale": constraints.positive}  # noqa: RUF012
    has_rsample = False

    def __init__(self, loc: Any, scale: Any, low: Any, high: Any, validate_args: bool | None = None) -> None:
        self.loc, self.scale = torch.as_tensor(loc, dtype=torch.get_default_dtype()), torch.as_tensor(scale)
        self.low, self.high = (
            torch.as_tensor(low, dtype=self.loc.dtype),
            torch.as_tensor(high, dtype=self.loc.dtype),
        )
        self.loc, self.scale, self.low, self.high = torch.broadcast_tensors(
            self.loc, self.scale, self.low, self.high
        )
        super().__init__(self.loc.shape, validate_args=validate_args)

    @constraints.dependent_property(is_discrete=False, event_dim=0)
    def support(self) -> constraints.Constraint:
        return constraints.interval(self.low, self.high)

    def log_prob(self, value: torch.Tensor) -> torch.Tensor:
        normal = torch.distributions.Normal(self.loc, self.scale)
        mass = normal.cdf(self.high) - normal.cdf(self.low)
        return normal.log_prob(value) - mass.log()

    def sample(self, sample_shape: Any = ()) -> torch.Tensor:
        normal = torch.distributions.Normal(self.loc, self.scale)
        with torch.no_grad():
            u = torch.rand(self._extended_shape(sample_shape))
            low, high = normal.cdf(self.low), normal.cdf(self.high)
            return normal.icdf(low + u * (high - low))


def eight_schools_centered(y: Any = EIGHT_SCHOOLS.y, sigma: Any = EIGHT_SCHOOLS.sigma) -> None:
    """Eight schools, centred: geometric divergences, no numerical failure."""
    mu = pyro.sample("mu", dist.Normal(0.0, 5.0))
    tau = pyro.sample("tau", dist.HalfCauchy(5.0))
    with pyro.plate("J", len(sigma)):
        theta = pyro.sample("theta", dist.Normal(mu, tau))
        pyro.sample("y", dist.Normal(theta, torch.as_tensor(sigma)), obs=torch.as_tensor(y))


def eight_schools_noncentered(y: Any = EIGHT_SCHOOLS.y, sigma: Any = EIGHT_SCHOOLS.sigma) -> None:
    """Eight schools, non-centred."""
    mu = pyro.sample("mu", dist.Normal(0.0, 5.0))
    tau = pyro.sample("tau", dist.HalfCauchy(5.0))
    with pyro.plate("J", len(sigma)):
        theta_trans = pyro.sample("theta_trans", dist.Normal(0.0, 1.0))
        theta = pyro.deterministic("theta", mu + tau * theta_trans)
        pyro.sample("y", dist.Normal(theta, torch.as_tensor(sigma)), obs=torch.as_tensor(y))


def logistic_regression(X: Any, y: Any) -> None:
    """Logistic regression with standard-normal priors on the coefficients and intercept."""
    X = torch.as_tensor(X, dtype=torch.get_default_dtype())
    coefficients = pyro.sample("coefficients", dist.Normal(torch.zeros(X.shape[1]), 1.0).to_event(1))
    intercept = pyro.sample("intercept", dist.Normal(0.0, 1.0))
    pyro.sample(
        "y",
        dist.Bernoulli(logits=X @ coefficients + intercept).to_event(1),
        obs=torch.as_tensor(y, dtype=X.dtype),
    )


def turing(high: Any = math.inf, truncated_normal: Any = None) -> None:
    """Turing.jl's model: ``s ~ InverseGamma(2, 3)``, ``V ~ TruncatedNormal(0, s, low=0, high)``.

    ``truncated_normal`` picks the class: the hand-written :class:`NaiveTruncatedNormal`
    by default (Pyro has none of its own), or ``robusthmc.pyro.TruncatedNormal``.
    """
    truncated_normal = NaiveTruncatedNormal if truncated_normal is None else truncated_normal
    s = pyro.sample("s", dist.InverseGamma(2.0, 3.0))
    pyro.sample("V", truncated_normal(0.0, s, low=0.0, high=high))


def truncated_regression(y: Any, truncated_normal: Any) -> None:
    """docs/lessons.md's truncated regression: ``y ~ TruncatedNormal(mu, sigma, low=0)``."""
    mu = pyro.sample("mu", dist.Normal(0.0, 20.0))
    sigma = pyro.sample("sigma", dist.HalfNormal(5.0))
    y = torch.as_tensor(y, dtype=torch.get_default_dtype())
    with pyro.plate("data", len(y)):
        pyro.sample("y", truncated_normal(mu, sigma, low=0.0), obs=y)
