"""Example numpyro models: the failures of docs/lessons.md and healthy references.

Examples
--------
>>> import jax
>>> from numpyro.infer import MCMC
>>> from robusthmc.numpyro import NUTS
>>> from robusthmc.lessons.numpyro import turing
>>> mcmc = MCMC(NUTS(turing), num_warmup=100, num_samples=100, progress_bar=False)
>>> mcmc.run(jax.random.key(0), high=None)
>>> sorted(mcmc.get_samples())
['V', 's']
"""

from __future__ import annotations

from typing import Any

import jax.numpy as jnp
import numpyro
import numpyro.distributions as dist

from robusthmc.lessons.data import EIGHT_SCHOOLS

__all__ = [
    "eight_schools_centered",
    "eight_schools_noncentered",
    "logistic_regression",
    "truncated_regression",
    "turing",
]


def eight_schools_centered(y: Any = EIGHT_SCHOOLS.y, sigma: Any = EIGHT_SCHOOLS.sigma) -> None:
    """Eight schools, centred: geometric divergences, no numerical failure."""
    mu = numpyro.sample("mu", dist.Normal(0.0, 5.0))
    tau = numpyro.sample("tau", dist.HalfCauchy(5.0))
    with numpyro.plate("J", len(sigma)):
        theta = numpyro.sample("theta", dist.Normal(mu, tau))
        numpyro.sample("y", dist.Normal(theta, jnp.asarray(sigma)), obs=jnp.asarray(y))


def eight_schools_noncentered(y: Any = EIGHT_SCHOOLS.y, sigma: Any = EIGHT_SCHOOLS.sigma) -> None:
    """Eight schools, non-centred (posteriordb's ``eight_schools_noncentered``)."""
    mu = numpyro.sample("mu", dist.Normal(0.0, 5.0))
    tau = numpyro.sample("tau", dist.HalfCauchy(5.0))
    with numpyro.plate("J", len(sigma)):
        theta_trans = numpyro.sample("theta_trans", dist.Normal(0.0, 1.0))
        numpyro.deterministic("theta", mu + tau * theta_trans)
        numpyro.sample("y", dist.Normal(mu + tau * theta_trans, jnp.asarray(sigma)), obs=jnp.asarray(y))


def logistic_regression(X: Any, y: Any) -> None:
    """Logistic regression with standard-normal priors on the coefficients and intercept."""
    X = jnp.asarray(X)
    coefficients = numpyro.sample("coefficients", dist.Normal(jnp.zeros(X.shape[1]), 1.0).to_event(1))
    intercept = numpyro.sample("intercept", dist.Normal(0.0, 1.0))
    numpyro.sample("y", dist.Bernoulli(logits=X @ coefficients + intercept), obs=jnp.asarray(y))


def turing(high: Any = jnp.inf, truncated_normal: Any = None) -> None:
    """Turing.jl's model: ``s ~ InverseGamma(2, 3)``, ``V ~ TruncatedNormal(0, s, low=0, high)``.

    ``high=jnp.inf`` is the failure of docs/lessons.md, ``high=None`` the fix.
    ``truncated_normal`` picks the class (numpyro's by default).
    """
    truncated_normal = dist.TruncatedNormal if truncated_normal is None else truncated_normal
    s = numpyro.sample("s", dist.InverseGamma(2.0, 3.0))
    numpyro.sample("V", truncated_normal(0.0, s, low=0.0, high=high))


def truncated_regression(y: Any, truncated_normal: Any = None) -> None:
    """docs/lessons.md's truncated regression: ``y ~ TruncatedNormal(mu, sigma, low=0)``."""
    truncated_normal = dist.TruncatedNormal if truncated_normal is None else truncated_normal
    mu = numpyro.sample("mu", dist.Normal(0.0, 20.0))
    sigma = numpyro.sample("sigma", dist.HalfNormal(5.0))
    numpyro.sample("y", truncated_normal(mu, sigma, low=0.0), obs=jnp.asarray(y))
