"""GPyTorch's fully Bayesian GP recipe, as docs/lessons.md runs it (lesson 2).

Examples
--------
>>> from robusthmc.lessons.gpytorch import periodic_gp
>>> recipe = periodic_gp()
>>> recipe.train_x.shape, type(recipe.likelihood.noise_covar.raw_noise_constraint).__name__
(torch.Size([6]), 'GreaterThan')
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import NamedTuple

import gpytorch
import pyro
import torch
from gpytorch.priors import GammaPrior, Prior, UniformPrior

__all__ = ["PeriodicGP", "Recipe", "periodic_gp"]


class PeriodicGP(gpytorch.models.ExactGP):
    """Constant mean, scaled periodic kernel."""

    def __init__(
        self, train_x: torch.Tensor, train_y: torch.Tensor, likelihood: gpytorch.likelihoods.Likelihood
    ):
        super().__init__(train_x, train_y, likelihood)
        self.mean_module = gpytorch.means.ConstantMean()
        self.covar_module = gpytorch.kernels.ScaleKernel(gpytorch.kernels.PeriodicKernel())

    def forward(self, x: torch.Tensor) -> gpytorch.distributions.MultivariateNormal:
        return gpytorch.distributions.MultivariateNormal(self.mean_module(x), self.covar_module(x))


class Recipe(NamedTuple):
    """The GP, its likelihood, the data, and the Pyro model NUTS samples."""

    gp: PeriodicGP
    likelihood: gpytorch.likelihoods.GaussianLikelihood
    train_x: torch.Tensor
    train_y: torch.Tensor
    pyro_model: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def periodic_gp(
    scale_prior: Callable[[], Prior] = lambda: GammaPrior(0.5, 1.0),
    noise_constraint: gpytorch.constraints.Interval | None = None,
    seed: int = 0,
) -> Recipe:
    """Six points of ``sin(2 pi x)`` plus noise; ``UniformPrior`` on mean, lengthscale and period.

    ``scale_prior`` makes the prior on the outputscale and on the noise
    (``GammaPrior(0.5, 1.0)``: docs/lessons.md's failure); ``noise_constraint`` is
    the likelihood's (``None``: GPyTorch's default ``GreaterThan(1e-4)``).
    """
    generator = torch.Generator().manual_seed(seed)
    train_x = torch.linspace(0.0, 1.0, 6)
    train_y = torch.sin(2 * math.pi * train_x) + 0.2 * torch.randn(6, generator=generator)
    likelihood = (
        gpytorch.likelihoods.GaussianLikelihood()
        if noise_constraint is None
        else gpytorch.likelihoods.GaussianLikelihood(noise_constraint=noise_constraint)
    )
    gp = PeriodicGP(train_x, train_y, likelihood)
    gp.mean_module.register_prior("mean_prior", UniformPrior(-1.0, 1.0), "constant")
    gp.covar_module.base_kernel.register_prior("lengthscale_prior", UniformPrior(0.01, 0.5), "lengthscale")
    gp.covar_module.base_kernel.register_prior(
        "period_length_prior", UniformPrior(0.05, 2.5), "period_length"
    )
    gp.covar_module.register_prior("outputscale_prior", scale_prior(), "outputscale")
    likelihood.register_prior("noise_prior", scale_prior(), "noise")

    def pyro_model(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        with gpytorch.settings.fast_computations(False, False, False):
            sampled = gp.pyro_sample_from_prior()
            output = sampled.likelihood(sampled(x))
            pyro.sample("obs", output, obs=y)
        return y

    return Recipe(gp, likelihood, train_x, train_y, pyro_model)
