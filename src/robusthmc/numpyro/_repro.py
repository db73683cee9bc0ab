"""docs/lessons.md lesson 1 with NumPyro: the cases ``robusthmc repro truncated-normal`` runs.

Each function runs in a child process (see :mod:`robusthmc._repro`) and
returns its row: ``outcome``, ``seconds``, ``message``, ``as_documented``.
"""

from __future__ import annotations

import re
import time
import warnings
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import numpyro.infer
from numpyro.diagnostics import effective_sample_size, split_gelman_rubin
from numpyro.infer import MCMC
from numpyro.infer.util import potential_energy

import robusthmc
from robusthmc.examples import (
    truncated_regression_data,
    truncated_regression_reference,
    turing_exact_quantiles,
)
from robusthmc.numpyro import HMC, NUTS, TruncatedNormal
from robusthmc.numpyro.examples import truncated_regression, turing

Progress = Callable[..., None]
PROBABILITIES = np.array([0.05, 0.5, 0.95])


def _first_line(error: BaseException) -> str:
    return f"{type(error).__name__}: {str(error).splitlines()[0]}"


def _told(error: BaseException, keep: tuple[str, ...]) -> str:
    """The lines of an error message a user acts on."""
    lines = str(error).splitlines()
    kept = [line.strip() for line in lines[1:] if line.strip().startswith(keep)]
    return "\n".join([_first_line(error), *kept])


def stock_nuts_turing(progress: Progress) -> dict[str, Any]:
    """Numpyro's NUTS on ``V ~ TruncatedNormal(0, s, low=0, high=inf)``: the generic error."""
    start = time.perf_counter()
    try:
        MCMC(numpyro.infer.NUTS(turing), num_warmup=100, num_samples=100, progress_bar=False).run(
            jax.random.key(0)
        )
    except RuntimeError as error:
        generic = "Cannot find valid initial parameters" in str(error)
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
            return {
                "outcome": "found a point",
                "message": f"after {attempts} attempts",
                "as_documented": False,
            }


def guarded_nuts_turing(progress: Progress) -> dict[str, Any]:
    """Robusthmc's NUTS on the same model: the error names site, latent, bound and fix."""
    start = time.perf_counter()
    try:
        MCMC(NUTS(turing), num_warmup=100, num_samples=100, progress_bar=False).run(jax.random.key(0))
    except robusthmc.InitializationError as error:
        text = str(error)
        named = all(part in text for part in ("site 'V'", "high=inf", "high=None"))
        named = named and re.search(r"latents? [^\n]*\bs\b", text) is not None
        told = _told(error, ("site", "gradient", "cause", "fix"))
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


def _posterior_summary(
    draws: dict[str, Any], exact: dict[str, np.ndarray], fields: dict[str, Any]
) -> tuple[str, bool]:
    lines, matches = [], True
    for site in ("s", "V"):
        grouped = np.asarray(draws[site])
        ess = float(effective_sample_size(grouped))
        flat = grouped.reshape(-1)
        empirical = np.array([(flat <= q).mean() for q in exact[site]])
        within = np.abs(empirical - PROBABILITIES) <= 4 * np.sqrt(PROBABILITIES * (1 - PROBABILITIES) / ess)
        matches &= bool(np.all(within))
        quantiles = " / ".join(f"{q:.3g}" for q in np.quantile(flat, PROBABILITIES))
        truth = " / ".join(f"{q:.3g}" for q in exact[site])
        lines.append(
            f"{site}: 5/50/95% {quantiles} (exact {truth}); R-hat {float(split_gelman_rubin(grouped)):.3f}, ESS {ess:.0f}"
        )
    divergences, nonfinite = int(fields["diverging"].sum()), int(fields["nonfinite"].sum())
    lines.append(f"divergences {divergences}, non-finite transitions {nonfinite}")
    return "\n".join(lines), matches and nonfinite == 0


def _fixed_turing(high: Any, truncated_normal: Any) -> dict[str, Any]:
    start = time.perf_counter()
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
    summary, matches = _posterior_summary(
        mcmc.get_samples(group_by_chain=True), turing_exact_quantiles(PROBABILITIES), mcmc.get_extra_fields()
    )
    return {
        "outcome": "matches exact posterior" if matches else "MISMATCH",
        "seconds": time.perf_counter() - start,
        "message": summary,
        "as_documented": matches,
    }


def fix_high_none(progress: Progress) -> dict[str, Any]:
    """The fix: numpyro's TruncatedNormal with ``high=None``."""
    return _fixed_turing(None, None)


def fix_robusthmc_truncated_normal(progress: Progress) -> dict[str, Any]:
    """The fix: robusthmc's TruncatedNormal, where ``high=inf`` means ``high=None``."""
    return _fixed_turing(jnp.inf, TruncatedNormal)


def stock_hmc_regression(progress: Progress) -> dict[str, Any]:
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
    return {"outcome": "finished", "message": "300 transitions", "as_documented": False}


def _regression_draws(kernel: Any, seed: int = 0, **run: Any) -> tuple[MCMC, list[warnings.WarningMessage]]:
    mcmc = MCMC(
        kernel, num_warmup=1000, num_samples=1000, num_chains=2, chain_method="vectorized", progress_bar=False
    )
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        mcmc.run(jax.random.key(seed), truncated_regression_data(), extra_fields=("diverging",), **run)
    return mcmc, caught


def stock_nuts_regression(progress: Progress) -> dict[str, Any]:
    """Numpyro's NUTS on the float32 truncated regression: finishes, biased."""
    start = time.perf_counter()
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
    return {
        "outcome": "finished, biased" if biased else "finished",
        "seconds": time.perf_counter() - start,
        "message": message,
        "as_documented": biased,
    }


def _guarded_regression(kernel: Any) -> dict[str, Any]:
    """Run a guarded kernel on the float32 regression: an error or warnings that name the cause."""
    start = time.perf_counter()
    try:
        _, caught = _regression_draws(kernel)
    except robusthmc.RobustHMCError as error:
        named = "TruncatedNormal" in str(error) and "tail" in str(error)
        told = _told(error, ("site", "cause", "fix"))
        return {
            "outcome": type(error).__name__,
            "seconds": time.perf_counter() - start,
            "message": told,
            "as_documented": named,
        }
    ours = [w.message for w in caught if isinstance(w.message, robusthmc.RobustHMCWarning)]
    if not ours:
        return {
            "outcome": "finished, silent",
            "seconds": time.perf_counter() - start,
            "message": "",
            "as_documented": False,
        }
    lines = []
    for warning in ours:
        text = str(warning).splitlines()
        lines.append(f"{type(warning).__name__}: {text[0]}")
        fixes = dict.fromkeys(line.strip() for line in text if line.strip().startswith("fix"))
        lines.extend(fix for fix in fixes if "tail" in fix)
    named = any("tail" in str(w) and "TruncatedNormal" in str(w) for w in ours)
    outcome = " + ".join(dict.fromkeys(type(w).__name__ for w in ours))
    return {
        "outcome": outcome,
        "seconds": time.perf_counter() - start,
        "message": "\n".join(lines),
        "as_documented": named,
    }


def guarded_hmc_regression(progress: Progress) -> dict[str, Any]:
    """Robusthmc's HMC on the float32 truncated regression: finishes in seconds, and says why it struggled."""
    return _guarded_regression(HMC(truncated_regression))


def guarded_nuts_regression(progress: Progress) -> dict[str, Any]:
    """Robusthmc's NUTS on the float32 truncated regression: finishes, and warns with the cause."""
    return _guarded_regression(NUTS(truncated_regression))


def robust_regression(progress: Progress) -> dict[str, Any]:
    """Robusthmc's TruncatedNormal in float32: matches the float64 grid reference, no failure."""
    start = time.perf_counter()
    kernel = NUTS(truncated_regression, target_accept_prob=0.99)
    mcmc, _ = _regression_draws(kernel, truncated_normal=TruncatedNormal)
    draws = mcmc.get_samples(group_by_chain=True)
    reference = truncated_regression_reference().quantiles(PROBABILITIES)
    lines, matches = [], True
    for site in ("mu", "sigma"):
        grouped = np.asarray(draws[site])
        ess = float(effective_sample_size(grouped))
        flat = grouped.reshape(-1)
        empirical = np.array([(flat <= q).mean() for q in reference[site]])
        matches &= bool(
            np.all(
                np.abs(empirical - PROBABILITIES) <= 4 * np.sqrt(PROBABILITIES * (1 - PROBABILITIES) / ess)
            )
        )
        quantiles = " / ".join(f"{q:.3g}" for q in np.quantile(flat, PROBABILITIES))
        truth = " / ".join(f"{q:.3g}" for q in reference[site])
        lines.append(f"{site}: 5/50/95% {quantiles} (float64 grid {truth}), ESS {ess:.0f}")
    nonfinite = int(np.asarray(mcmc.get_extra_fields()["nonfinite"]).sum())
    lines.append(f"non-finite transitions {nonfinite} (target_accept_prob=0.99)")
    ok = matches and nonfinite == 0
    return {
        "outcome": "matches reference" if ok else "MISMATCH",
        "seconds": time.perf_counter() - start,
        "message": "\n".join(lines),
        "as_documented": ok,
    }
