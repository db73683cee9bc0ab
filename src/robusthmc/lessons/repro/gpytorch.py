"""Lesson 2 (docs/lessons.md): the cases ``robusthmc repro gpytorch-prior`` runs.

``ROBUSTHMC_REPRO_STEPS`` (warmup = draws, default 200) sets the length of the runs.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Callable
from typing import Any

import pyro
import pyro.infer
from gpytorch.priors import GammaPrior
from pyro.infer import MCMC

import robusthmc
from robusthmc.gpytorch import audit
from robusthmc.lessons.gpytorch import periodic_gp
from robusthmc.lessons.repro import Finding, Progress
from robusthmc.pyro import NUTS


def _steps() -> int:
    return int(os.environ.get("ROBUSTHMC_REPRO_STEPS", "200"))


def _collected(draws: list[int]) -> Callable[..., None]:
    def hook(kernel: Any, params: Any, stage: str, i: int) -> None:
        if stage.startswith("Sample"):
            draws.append(i)

    return hook


def stock_nuts(progress: Progress) -> Finding:
    """Pyro's NUTS on the recipe: a GPyTorch exception ends the run, every draw lost."""
    recipe, steps = periodic_gp(), _steps()
    draws: list[int] = []
    pyro.set_rng_seed(0)
    try:
        mcmc = MCMC(
            pyro.infer.NUTS(recipe.pyro_model),
            steps,
            warmup_steps=steps,
            disable_progbar=True,
            hook_fn=_collected(draws),
        )
        mcmc.run(recipe.train_x, recipe.train_y)
    except Exception as error:
        message = f"{type(error).__name__}: {str(error).splitlines()[0]}\n{len(draws)} draws made before it, none returned"
        crashed = type(error).__name__ in ("NotPSDError", "NanError")
        return Finding("crashed", message, crashed)
    return Finding("finished", "no error", False)


def audit_recipe(progress: Progress) -> Finding:
    """The audit of the recipe's priors against its constraints."""
    report = audit(periodic_gp().gp)
    lines = [
        f"{row.module}.{row.parameter}: {row.prior} under {row.constraint}: "
        f"{row.unrepresentable_mass:.2%} of the prior unrepresentable"
        for row in report.flagged
    ]
    lines += [f"remedy: {remedy}" for row in report.flagged for remedy in row.remedies]
    found = [row.parameter for row in report.flagged] == ["noise"]
    return Finding(f"{len(report.flagged)} of {len(report.rows)} priors flagged", "\n".join(lines), found)


def guarded_nuts(progress: Progress) -> Finding:
    """Robusthmc's NUTS on the recipe: completes, the failures rejected and named."""
    recipe, steps = periodic_gp(), _steps()
    pyro.set_rng_seed(0)
    mcmc = MCMC(NUTS(recipe.pyro_model), steps, warmup_steps=steps, disable_progbar=True)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        mcmc.run(recipe.train_x, recipe.train_y)
    ours = [str(w.message) for w in caught if isinstance(w.message, robusthmc.NonFiniteWarning)]
    kept = len(mcmc.get_samples()["likelihood.noise_prior"])
    lines = [ours[0].splitlines()[0]] if ours else ["no rejected proposal"]
    if ours:
        lines += [
            line.strip()
            for line in ours[0].splitlines()
            if line.strip().startswith(("exception", "at (constrained"))
        ][:2]
    lines.append(f"{kept} draws returned")
    named = bool(ours) and "likelihood.noise_prior" in ours[0] and kept == steps
    return Finding("completed" if kept == steps else "incomplete", "\n".join(lines), named)


def fixed_model(progress: Progress) -> Finding:
    """The audit's remedy (GammaPrior(3.0, 1.0)): a clean audit and no rejected proposal."""
    recipe, steps = periodic_gp(scale_prior=lambda: GammaPrior(3.0, 1.0)), _steps()
    clean = audit(recipe.gp).clean
    pyro.set_rng_seed(0)
    mcmc = MCMC(NUTS(recipe.pyro_model), steps, warmup_steps=steps, disable_progbar=True)
    with warnings.catch_warnings(record=True):
        warnings.simplefilter("always")
        mcmc.run(recipe.train_x, recipe.train_y)
    rejected = len(mcmc.diagnostics()["nonfinite"]["chain 0"])
    message = f"audit clean: {clean}; non-finite (rejected) proposals while sampling: {rejected}"
    return Finding("clean" if clean and rejected == 0 else "not clean", message, clean and rejected == 0)
