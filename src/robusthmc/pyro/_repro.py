"""docs/lessons.md lesson 1 with Pyro: the cases ``robusthmc repro truncated-normal`` runs.

Pyro has no truncated normal of its own: the failing model uses the
hand-written :class:`~robusthmc.pyro.examples.NaiveTruncatedNormal`.
"""

from __future__ import annotations

import re
import time
import warnings
from collections.abc import Callable
from typing import Any

import numpy as np
import pyro
import pyro.infer
import torch
from pyro.infer import MCMC
from pyro.ops.stats import effective_sample_size, split_gelman_rubin
from torch.distributions import biject_to

import robusthmc
from robusthmc.examples import turing_exact_quantiles
from robusthmc.pyro import NUTS, TruncatedNormal
from robusthmc.pyro._sites import _terms
from robusthmc.pyro.examples import turing

Progress = Callable[..., None]
PROBABILITIES = np.array([0.05, 0.5, 0.95])


def _first_line(error: BaseException) -> str:
    return f"{type(error).__name__}: {str(error).splitlines()[0]}"


def stock_nuts_turing(progress: Progress) -> dict[str, Any]:
    """Pyro's NUTS on a hand-written truncated normal with ``high=inf``: the generic error."""
    start = time.perf_counter()
    pyro.set_rng_seed(0)
    try:
        MCMC(pyro.infer.NUTS(turing), num_samples=100, warmup_steps=100, disable_progbar=True).run()
    except ValueError as error:
        generic = "cannot find valid initial params" in str(error)
        return {
            "outcome": "generic error",
            "seconds": time.perf_counter() - start,
            "message": _first_line(error),
            "as_documented": generic,
        }
    return {
        "outcome": "sampled",
        "seconds": time.perf_counter() - start,
        "message": "no error",
        "as_documented": False,
    }


def uncapped_search_turing(progress: Progress) -> dict[str, Any]:
    """Turing's initial-point search before its fix, on Pyro's log density: no cap."""
    pyro.set_rng_seed(0)
    prototype = pyro.poutine.trace(turing).get_trace()
    supports: dict[str, Any] = {name: prototype.nodes[name]["fn"].support for name in ("s", "V")}  # type: ignore[attr-defined]
    transforms = {name: biject_to(support).inv for name, support in supports.items()}
    attempts = nan_gradients = 0
    while True:  # the loop under test: it has no cap, the watchdog stops it
        z = {name: (torch.rand(()) * 4 - 2).requires_grad_(True) for name in ("s", "V")}
        with pyro.validation_enabled(False):
            terms, *_ = _terms(turing, (), {}, transforms, z)
        log_density = torch.stack(list(terms.values())).sum()
        gradients = torch.autograd.grad(log_density, list(z.values()), allow_unused=True)
        attempts += 1
        finite_gradient = all(g is not None and bool(torch.isfinite(g)) for g in gradients)
        nan_gradients += not finite_gradient
        if attempts % 200 == 0:
            progress(attempts=attempts, nan_gradients=nan_gradients)
        if bool(torch.isfinite(log_density)) and finite_gradient:
            return {
                "outcome": "found a point",
                "message": f"after {attempts} attempts",
                "as_documented": False,
            }


def guarded_nuts_turing(progress: Progress) -> dict[str, Any]:
    """Robusthmc's NUTS: the error names site, latent, bound and fix."""
    start = time.perf_counter()
    pyro.set_rng_seed(0)
    try:
        MCMC(NUTS(turing), num_samples=100, warmup_steps=100, disable_progbar=True).run()
    except robusthmc.InitializationError as error:
        text = str(error)
        named = all(part in text for part in ("site 'V'", "high=inf", "high=None"))
        named = named and re.search(r"latents? [^\n]*\bs\b", text) is not None
        kept = [
            line.strip()
            for line in text.splitlines()[1:]
            if line.strip().startswith(("site", "gradient", "cause", "fix"))
        ]
        told = "\n".join([_first_line(error), *kept])
        return {
            "outcome": "InitializationError",
            "seconds": time.perf_counter() - start,
            "message": told,
            "as_documented": named,
        }
    return {
        "outcome": "sampled",
        "seconds": time.perf_counter() - start,
        "message": "no error",
        "as_documented": False,
    }


def _fixed_turing(high: Any) -> dict[str, Any]:
    start = time.perf_counter()
    exact = turing_exact_quantiles(PROBABILITIES)
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
    lines, matches = [], True
    for site in ("s", "V"):
        grouped = torch.stack(chains[site])
        ess = float(effective_sample_size(grouped))
        flat = grouped.reshape(-1).numpy()
        empirical = np.array([(flat <= q).mean() for q in exact[site]])
        matches &= bool(
            np.all(
                np.abs(empirical - PROBABILITIES) <= 4 * np.sqrt(PROBABILITIES * (1 - PROBABILITIES) / ess)
            )
        )
        quantiles = " / ".join(f"{q:.3g}" for q in np.quantile(flat, PROBABILITIES))
        truth = " / ".join(f"{q:.3g}" for q in exact[site])
        rhat = float(split_gelman_rubin(grouped))
        lines.append(f"{site}: 5/50/95% {quantiles} (exact {truth}); R-hat {rhat:.3f}, ESS {ess:.0f}")
    lines.append(f"divergences {divergences}, non-finite transitions {nonfinite} (2 chains x 300 draws)")
    ok = matches and nonfinite == 0
    return {
        "outcome": "matches exact posterior" if ok else "MISMATCH",
        "seconds": time.perf_counter() - start,
        "message": "\n".join(lines),
        "as_documented": ok,
    }


def fix_high_none(progress: Progress) -> dict[str, Any]:
    """The fix: robusthmc's TruncatedNormal with ``high=None``."""
    return _fixed_turing(None)


def fix_high_inf(progress: Progress) -> dict[str, Any]:
    """Robusthmc's TruncatedNormal with ``high=inf``: the same as None."""
    return _fixed_turing(float("inf"))
