"""Lesson 1 with NumPyro: the cases ``robusthmc repro truncated-normal`` runs.

Each function runs in a child process (see :mod:`robusthmc.lessons.repro`) and
returns its :class:`~robusthmc.lessons.repro.Finding`.
"""

from __future__ import annotations

import re
import warnings
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import numpyro.infer
from numpyro.diagnostics import effective_sample_size
from numpyro.infer import MCMC
from numpyro.infer.util import potential_energy

import robusthmc
from robusthmc.lessons.data import (
    truncated_regression_data,
    truncated_regression_reference,
    turing_exact_quantiles,
)
from robusthmc.lessons.numpyro import truncated_regression, turing
from robusthmc.lessons.repro import NO_ERROR, Finding, Progress, compare_with_reference
from robusthmc.numpyro import HMC, NUTS, TruncatedNormal

PROBABILITIES = np.array([0.05, 0.5, 0.95])


def stock_nuts_turing(progress: Progress) -> Finding:
    """Numpyro's NUTS on ``V ~ TruncatedNormal(0, s, low=0, high=inf)``: the generic error."""
    try:
        MCMC(numpyro.infer.NUTS(turing), num_warmup=100, num_samples=100, progress_bar=False).run(
            jax.random.key(0)
        )
    except RuntimeError as error:
        generic = "Cannot find valid initial parameters" in str(error)
        return Finding.from_error(error, generic, outcome="generic error")
    return NO_ERROR


def uncapped_search_turing(progress: Progress) -> Finding:
    """Turing's initial-point search before its fix: redraw until value and gradient are finite, no cap."""
    value_and_grad = jax.jit(jax.value_and_grad(lambda z: potential_energy(turing, (), {}, z)))
    key = jax.random.key(0)
    attempts = nan_gradients = 0
    while True:  # the loop under test: it has no cap, the watchdog stops it
        key, s_key, v_key = jax.random.split(key, 3)
        z = {
            "s": jax.random.uniform(s_key, minval=-2, maxval=2),
            "V": jax.random.uniform(v_key, minval=-2, maxval=2),
        }
        value, gradient = value_and_grad(z)
        attempts += 1
        finite_gradient = all(bool(jnp.isfinite(g)) for g in gradient.values())
        nan_gradients += not finite_gradient
        if attempts % 200 == 0:
            progress(attempts=attempts, nan_gradients=nan_gradients)
        if bool(jnp.isfinite(value)) and finite_gradient:
            return Finding("found a point", f"after {attempts} attempts", False)


def guarded_nuts_turing(progress: Progress) -> Finding:
    """Robusthmc's NUTS on the same model: the error names site, latent, bound and fix."""
    try:
        MCMC(NUTS(turing), num_warmup=100, num_samples=100, progress_bar=False).run(jax.random.key(0))
    except robusthmc.InitializationError as error:
        text = str(error)
        named = all(part in text for part in ("site 'V'", "high=inf", "high=None"))
        named = named and re.search(r"latents? [^\n]*\bs\b", text) is not None
        return Finding.from_error(error, named, keep=("site", "gradient", "cause", "fix"))
    return NO_ERROR


def _fixed_turing(high: Any, truncated_normal: Any) -> Finding:
    mcmc = MCMC(
        NUTS(turing),
        num_warmup=1000,
        num_samples=1000,
        num_chains=2,
        chain_method="vectorized",
        progress_bar=False,
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", robusthmc.InfiniteBoundWarning)
        mcmc.run(jax.random.key(1), high=high, truncated_normal=truncated_normal)
    lines, matches = compare_with_reference(
        mcmc.get_samples(group_by_chain=True),
        turing_exact_quantiles(PROBABILITIES),
        PROBABILITIES,
        effective_sample_size,
    )
    fields = mcmc.get_extra_fields()
    divergences, nonfinite = int(fields["diverging"].sum()), int(fields["nonfinite"].sum())
    lines.append(f"divergences {divergences}, non-finite transitions {nonfinite}")
    ok = matches and nonfinite == 0
    return Finding("matches exact posterior" if ok else "MISMATCH", "\n".join(lines), ok)


def fix_high_none(progress: Progress) -> Finding:
    """The fix: numpyro's TruncatedNormal with ``high=None``."""
    return _fixed_turing(None, None)


def fix_robusthmc_truncated_normal(progress: Progress) -> Finding:
    """The fix: robusthmc's TruncatedNormal, where ``high=inf`` means ``high=None``."""
    return _fixed_turing(jnp.inf, TruncatedNormal)


def stock_hmc_regression(progress: Progress) -> Finding:
    """Numpyro's HMC on the float32 truncated regression: the step size collapses, the steps explode."""
    y = truncated_regression_data()
    kernel = numpyro.infer.HMC(truncated_regression)
    state = kernel.init(jax.random.key(0), num_warmup=150, init_params=None, model_args=(y,), model_kwargs={})
    step = jax.jit(lambda state: kernel.sample(state, (y,), {}))
    for iteration in range(300):
        state = step(state)
        progress(
            iteration=iteration + 1,
            step_size=float(state.adapt_state.step_size),
            num_steps=int(state.num_steps),
        )
    return Finding("finished", "300 transitions", False)


def _regression_draws(kernel: Any, seed: int = 0, **run: Any) -> tuple[MCMC, list[warnings.WarningMessage]]:
    mcmc = MCMC(
        kernel, num_warmup=1000, num_samples=1000, num_chains=2, chain_method="vectorized", progress_bar=False
    )
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        mcmc.run(jax.random.key(seed), truncated_regression_data(), extra_fields=("diverging",), **run)
    return mcmc, caught


def stock_nuts_regression(progress: Progress) -> Finding:
    """Numpyro's NUTS on the float32 truncated regression: finishes, biased."""
    mcmc, _ = _regression_draws(numpyro.infer.NUTS(truncated_regression))
    draws = mcmc.get_samples()
    ratio = np.asarray(draws["mu"] / draws["sigma"])
    share = float(np.asarray(mcmc.get_extra_fields()["diverging"]).mean())
    q05 = float(np.quantile(np.asarray(draws["mu"]), 0.05))
    reference = float(truncated_regression_reference().quantiles(np.array([0.05]))["mu"][0])
    message = (
        f"lowest mu/sigma reached {ratio.min():.1f} (the posterior goes to about -19); "
        f"{share:.0%} of transitions 'divergent'; 5% quantile of mu {q05:.1f} (float64 reference {reference:.1f})"
    )
    biased = ratio.min() > -14 and q05 > reference + 3
    return Finding("finished, biased" if biased else "finished", message, biased)


def _guarded_regression(kernel: Any) -> Finding:
    """Run a guarded kernel on the float32 regression: an error or warnings that name the cause."""
    try:
        _, caught = _regression_draws(kernel)
    except robusthmc.RobustHMCError as error:
        named = "TruncatedNormal" in str(error) and "tail" in str(error)
        return Finding.from_error(error, named, keep=("site", "cause", "fix"))
    ours = [w.message for w in caught if isinstance(w.message, robusthmc.RobustHMCWarning)]
    if not ours:
        return Finding("finished, silent", "", False)
    lines = []
    for warning in ours:
        text = str(warning).splitlines()
        lines.append(f"{type(warning).__name__}: {text[0]}")
        fixes = dict.fromkeys(line.strip() for line in text if line.strip().startswith("fix"))
        lines.extend(fix for fix in fixes if "tail" in fix)
    named = any("tail" in str(w) and "TruncatedNormal" in str(w) for w in ours)
    outcome = " + ".join(dict.fromkeys(type(w).__name__ for w in ours))
    return Finding(outcome, "\n".join(lines), named)


def guarded_hmc_regression(progress: Progress) -> Finding:
    """Robusthmc's HMC on the float32 truncated regression: finishes in seconds, and says why it struggled."""
    return _guarded_regression(HMC(truncated_regression))


def guarded_nuts_regression(progress: Progress) -> Finding:
    """Robusthmc's NUTS on the float32 truncated regression: finishes, and warns with the cause."""
    return _guarded_regression(NUTS(truncated_regression))


def robust_regression(progress: Progress) -> Finding:
    """Robusthmc's TruncatedNormal in float32: matches the float64 grid reference, no failure."""
    kernel = NUTS(truncated_regression, target_accept_prob=0.99)
    mcmc, _ = _regression_draws(kernel, truncated_normal=TruncatedNormal)
    lines, matches = compare_with_reference(
        mcmc.get_samples(group_by_chain=True),
        truncated_regression_reference().quantiles(PROBABILITIES),
        PROBABILITIES,
        effective_sample_size,
        label="float64 grid",
    )
    nonfinite = int(np.asarray(mcmc.get_extra_fields()["nonfinite"]).sum())
    lines.append(f"non-finite transitions {nonfinite} (target_accept_prob=0.99)")
    ok = matches and nonfinite == 0
    return Finding("matches reference" if ok else "MISMATCH", "\n".join(lines), ok)
