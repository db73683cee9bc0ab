"""Lesson 1 with Pyro: the cases ``robusthmc repro truncated-normal`` runs.

Pyro has no truncated normal of its own: the failing model uses the
hand-written :class:`~robusthmc.lessons.pyro.NaiveTruncatedNormal`.
"""

from __future__ import annotations

import re
import warnings
from typing import Any

import numpy as np
import pyro
import pyro.infer
import torch
from pyro.infer import MCMC
from pyro.ops.stats import effective_sample_size
from torch.distributions import biject_to

import robusthmc
from robusthmc.lessons.data import turing_exact_quantiles
from robusthmc.lessons.pyro import turing
from robusthmc.lessons.repro import NO_ERROR, Finding, Progress, compare_with_reference
from robusthmc.pyro import NUTS, TruncatedNormal

PROBABILITIES = np.array([0.05, 0.5, 0.95])


def stock_nuts_turing(progress: Progress) -> Finding:
    """Pyro's NUTS on a hand-written truncated normal with ``high=inf``: the generic error."""
    pyro.set_rng_seed(0)
    try:
        MCMC(pyro.infer.NUTS(turing), num_samples=100, warmup_steps=100, disable_progbar=True).run()
    except ValueError as error:
        generic = "cannot find valid initial params" in str(error)
        return Finding.from_error(error, generic, outcome="generic error")
    return NO_ERROR


def uncapped_search_turing(progress: Progress) -> Finding:
    """Turing's initial-point search before its fix, on Pyro's log density: no cap."""
    pyro.set_rng_seed(0)
    prototype = pyro.poutine.trace(turing).get_trace()
    supports: dict[str, Any] = {name: prototype.nodes[name]["fn"].support for name in ("s", "V")}  # type: ignore[attr-defined]
    transforms = {name: biject_to(support) for name, support in supports.items()}

    def log_density_at(z: dict[str, torch.Tensor]) -> torch.Tensor:
        """The model's log density over unconstrained values, through Pyro's public handlers."""
        values = {name: transforms[name](value) for name, value in z.items()}
        with pyro.validation_enabled(False):
            trace = pyro.poutine.trace(pyro.poutine.condition(turing, data=values)).get_trace()
        jacobian = sum(transforms[name].log_abs_det_jacobian(z[name], values[name]) for name in z)
        return trace.log_prob_sum() + jacobian

    attempts = nan_gradients = 0
    while True:  # the loop under test: it has no cap, the watchdog stops it
        z = {name: (torch.rand(()) * 4 - 2).requires_grad_(True) for name in ("s", "V")}
        log_density = log_density_at(z)
        gradients = torch.autograd.grad(log_density, list(z.values()), allow_unused=True)
        attempts += 1
        finite_gradient = all(g is not None and bool(torch.isfinite(g)) for g in gradients)
        nan_gradients += not finite_gradient
        if attempts % 200 == 0:
            progress(attempts=attempts, nan_gradients=nan_gradients)
        if bool(torch.isfinite(log_density)) and finite_gradient:
            return Finding("found a point", f"after {attempts} attempts", False)


def guarded_nuts_turing(progress: Progress) -> Finding:
    """Robusthmc's NUTS: the error names site, latent, bound and fix."""
    pyro.set_rng_seed(0)
    try:
        MCMC(NUTS(turing), num_samples=100, warmup_steps=100, disable_progbar=True).run()
    except robusthmc.InitializationError as error:
        text = str(error)
        named = all(part in text for part in ("site 'V'", "high=inf", "high=None"))
        named = named and re.search(r"latents? [^\n]*\bs\b", text) is not None
        return Finding.from_error(error, named, keep=("site", "gradient", "cause", "fix"))
    return NO_ERROR


def _fixed_turing(high: Any) -> Finding:
    chains: dict[str, list[torch.Tensor]] = {"s": [], "V": []}
    nonfinite = divergences = 0
    for seed in (1, 2):
        pyro.set_rng_seed(seed)
        mcmc = MCMC(NUTS(turing), num_samples=300, warmup_steps=300, disable_progbar=True)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", robusthmc.InfiniteBoundWarning)
            mcmc.run(high=high, truncated_normal=TruncatedNormal)
        for site in chains:
            chains[site].append(mcmc.get_samples()[site].double())
        nonfinite += len(mcmc.diagnostics()["nonfinite"]["chain 0"])
        divergences += len(mcmc.diagnostics()["divergences"]["chain 0"])
    lines, matches = compare_with_reference(
        {site: torch.stack(draws) for site, draws in chains.items()},
        turing_exact_quantiles(PROBABILITIES),
        PROBABILITIES,
        effective_sample_size,
    )
    lines.append(f"divergences {divergences}, non-finite transitions {nonfinite} (2 chains x 300 draws)")
    ok = matches and nonfinite == 0
    return Finding("matches exact posterior" if ok else "MISMATCH", "\n".join(lines), ok)


def fix_high_none(progress: Progress) -> Finding:
    """The fix: robusthmc's TruncatedNormal with ``high=None``."""
    return _fixed_turing(None)


def fix_high_inf(progress: Progress) -> Finding:
    """Robusthmc's TruncatedNormal with ``high=inf``: the same as None."""
    return _fixed_turing(float("inf"))
