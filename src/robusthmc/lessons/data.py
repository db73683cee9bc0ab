"""Data for the example models (backend-neutral: NumPy and SciPy only).

The models themselves are in :mod:`robusthmc.lessons.numpyro` and
:mod:`robusthmc.lessons.pyro`; the tests, benchmarks, command line and
notebooks all use these.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
from scipy import integrate, optimize, special, stats

__all__ = [
    "EIGHT_SCHOOLS",
    "EightSchools",
    "LogisticData",
    "logistic_data",
    "truncated_regression_data",
    "truncated_regression_reference",
    "turing_exact_quantiles",
]


class EightSchools(NamedTuple):
    """Rubin's eight schools (BDA3 §5.5): estimated effects and their standard errors."""

    y: np.ndarray
    sigma: np.ndarray


EIGHT_SCHOOLS = EightSchools(
    y=np.array([28.0, 8.0, -3.0, 7.0, -1.0, 1.0, 18.0, 12.0]),
    sigma=np.array([15.0, 10.0, 16.0, 11.0, 9.0, 11.0, 10.0, 18.0]),
)


class LogisticData(NamedTuple):
    """Design matrix, labels and the coefficients that generated them."""

    X: np.ndarray
    y: np.ndarray
    coefficients: np.ndarray


def logistic_data(num_rows: int = 5000, num_features: int = 50, seed: int = 0) -> LogisticData:
    """Synthetic logistic-regression data (standard-normal features, N(0, 1/4) coefficients).

    Examples
    --------
    >>> data = logistic_data(100, 3)
    >>> data.X.shape, data.y.shape, sorted(set(data.y.tolist()))
    ((100, 3), (100,), [0.0, 1.0])
    """
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((num_rows, num_features))
    coefficients = 0.5 * rng.standard_normal(num_features)
    probability = 1.0 / (1.0 + np.exp(-X @ coefficients))
    y = (rng.uniform(size=num_rows) < probability).astype(np.float64)
    return LogisticData(X, y, coefficients)


def truncated_regression_data(num_points: int = 50, seed: int = 1) -> np.ndarray:
    """The data of docs/lessons.md: Normal(-4, 1) truncated to y > 0, drawn with SciPy.

    Examples
    --------
    >>> y = truncated_regression_data()
    >>> y.shape, round(float(y.mean()), 2)
    ((50,), 0.21)
    """
    return stats.truncnorm(a=4.0, b=np.inf, loc=-4.0, scale=1.0).rvs(num_points, random_state=seed)


def turing_exact_quantiles(probabilities: np.ndarray) -> dict[str, np.ndarray]:
    """Exact posterior quantiles of the Turing model (no data).

    ``s ~ InverseGamma(2, 3)`` and ``V | s ~ HalfNormal(s)``, so the marginal
    of ``s`` is its prior and ``V = s |Z|``; ``V``'s quantiles come from its
    marginal CDF, computed by quadrature.

    Examples
    --------
    >>> q = turing_exact_quantiles(np.array([0.5]))
    >>> round(float(q["s"][0]), 4)
    1.7875
    """
    probabilities = np.asarray(probabilities, dtype=np.float64)
    scale_prior = stats.invgamma(2.0, scale=3.0)
    s_quantiles = scale_prior.ppf(probabilities)

    def v_cdf(v: float) -> float:
        # P(V <= v) = E_s[2 Phi(v / s) - 1]
        value, _ = integrate.quad(
            lambda s: (2.0 * stats.norm.cdf(v / s) - 1.0) * scale_prior.pdf(s), 0.0, np.inf, limit=200
        )
        return value

    v_quantiles = np.array([optimize.brentq(lambda v, p=p: v_cdf(v) - p, 1e-12, 1e4) for p in probabilities])
    return {"s": s_quantiles, "V": v_quantiles}


class GridPosterior(NamedTuple):
    """A two-parameter posterior on a grid: marginal CDFs of ``mu`` and ``sigma``."""

    mu: np.ndarray
    sigma: np.ndarray
    mu_cdf: np.ndarray
    sigma_cdf: np.ndarray

    def quantiles(self, probabilities: np.ndarray) -> dict[str, np.ndarray]:
        """Marginal quantiles by interpolating the grid CDFs."""
        return {
            "mu": np.interp(probabilities, self.mu_cdf, self.mu),
            "sigma": np.interp(probabilities, self.sigma_cdf, self.sigma),
        }


def truncated_regression_reference(y: np.ndarray | None = None, num_points: int = 1500) -> GridPosterior:
    """The truncated regression's posterior in float64 by grid quadrature.

    ``mu ~ Normal(0, 20)``, ``sigma ~ HalfNormal(5)``, ``y ~ Normal(mu, sigma)``
    truncated to ``y > 0``: the normalising constant ``P(Y > 0) = Phi(mu/sigma)``
    comes from ``log_ndtr``, exact far into the tail.

    Examples
    --------
    >>> reference = truncated_regression_reference(num_points=600)
    >>> round(float(reference.quantiles(np.array([0.05]))["mu"][0]))
    -43
    """
    y = truncated_regression_data() if y is None else np.asarray(y, dtype=np.float64)
    mu = np.linspace(-250.0, 5.0, num_points)
    sigma = np.linspace(1e-3, 10.0, num_points)
    m, s = mu[:, None], sigma[None, :]
    log_density = stats.norm.logpdf(m, 0.0, 20.0) + stats.halfnorm.logpdf(s, scale=5.0)
    log_density = log_density - len(y) * (np.log(s) + special.log_ndtr(m / s))
    for value in y:
        log_density = log_density - 0.5 * ((value - m) / s) ** 2
    density = np.exp(log_density - log_density.max())
    mu_marginal, sigma_marginal = density.sum(axis=1), density.sum(axis=0)
    return GridPosterior(
        mu,
        sigma,
        (np.cumsum(mu_marginal) - mu_marginal / 2) / mu_marginal.sum(),
        (np.cumsum(sigma_marginal) - sigma_marginal / 2) / sigma_marginal.sum(),
    )
