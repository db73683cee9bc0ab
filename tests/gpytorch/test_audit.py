"""docs/lessons.md lesson 2: the GPyTorch recipe under stock and guarded Pyro NUTS, and the audit."""

import math
import warnings

import gpytorch
import pyro
import pytest
import torch
from gpytorch.priors import GammaPrior
from pyro.infer import MCMC

import robusthmc
import robusthmc.pyro as rp
from robusthmc.gpytorch import audit
from robusthmc.lessons.gpytorch import periodic_gp


def test_audit_flags_the_noise_prior_with_its_unrepresentable_mass():
    report = audit(periodic_gp().gp)
    assert len(report.rows) == 5 and not report.clean
    (row,) = report.flagged
    assert (row.module, row.parameter) == ("likelihood", "noise")
    assert row.prior == "GammaPrior(concentration=0.5, rate=1)"
    assert row.constraint.startswith("GreaterThan(1.000E-04")
    # GammaPrior(0.5, 1) below 1e-4: P = erf(sqrt(1e-4)) = 1.128 %.
    assert row.unrepresentable_mass == pytest.approx(math.erf(0.01), rel=1e-5)
    remedies = " | ".join(row.remedies)
    assert "Positive()" in remedies and "GammaPrior(3.0, 1)" in remedies and "UniformPrior" in remedies
    outputscale = next(r for r in report.rows if r.parameter == "outputscale")
    assert outputscale.constraint == "Positive()" and not outputscale.flagged


@pytest.mark.parametrize(
    "fix",
    [{"noise_constraint": gpytorch.constraints.Positive()}, {"scale_prior": lambda: GammaPrior(3.0, 1.0)}],
    ids=["positive_constraint", "better_prior"],
)
def test_models_fixed_as_the_audit_says_are_clean(fix):
    assert audit(periodic_gp(**fix).gp).clean


def test_audit_rejects_what_is_not_a_gpytorch_module():
    with pytest.raises(TypeError, match=r"expects a gpytorch.Module.*got torch.nn.modules.linear.Linear"):
        audit(torch.nn.Linear(2, 2))


def _run(kernel_class, recipe, steps):
    pyro.set_rng_seed(0)
    mcmc = MCMC(kernel_class(recipe.pyro_model), num_samples=steps, warmup_steps=steps, disable_progbar=True)
    mcmc.run(recipe.train_x, recipe.train_y)
    return mcmc


def test_stock_pyro_nuts_loses_the_run():
    with pytest.raises((gpytorch.utils.errors.NotPSDError, gpytorch.utils.errors.NanError)):
        _run(pyro.infer.NUTS, periodic_gp(), 50)


@pytest.mark.timeout(300)
def test_guarded_nuts_completes_rejecting_the_failures_and_naming_the_hyperparameters():
    mcmc = _run(rp.NUTS, periodic_gp(), 40)  # the failures meet warmup here: counted, not warned
    assert mcmc.get_samples()["likelihood.noise_prior"].shape == (40, 1)
    # Longer, the chain meets them in sampling too, at the adapted step size: "raise" stops there.
    pyro.set_rng_seed(0)
    kernel = rp.NUTS(periodic_gp().pyro_model, guard=robusthmc.Guard(on_nonfinite="raise"))
    with pytest.raises(
        robusthmc.NonFiniteError, match=r"(?s)sampling.*(NotPSDError|NanError).*likelihood.noise_prior"
    ) as info:
        MCMC(kernel, num_samples=100, warmup_steps=100, disable_progbar=True).run(
            periodic_gp().train_x, periodic_gp().train_y
        )
    assert "covar_module.outputscale_prior" in str(info.value)


@pytest.mark.timeout(300)
def test_fixed_model_samples_without_a_single_rejected_proposal():
    with warnings.catch_warnings():
        warnings.simplefilter("error", robusthmc.RobustHMCWarning)
        mcmc = _run(rp.NUTS, periodic_gp(scale_prior=lambda: GammaPrior(3.0, 1.0)), 50)
    assert mcmc.diagnostics()["nonfinite"] == {"chain 0": []}
