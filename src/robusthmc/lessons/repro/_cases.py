"""The cases of each lesson, by backend: what runs, and how to read its hang."""

from __future__ import annotations

from typing import Any

from robusthmc.lessons.repro._runner import Case

__all__ = ["gpytorch_prior_cases", "truncated_normal_cases"]


def _hang_of_search(progress: dict[str, Any]) -> str:
    attempts, nan = progress.get("attempts", 0), progress.get("nan_gradients", 0)
    return f"{attempts} attempts, {nan} with a NaN gradient, when the watchdog stopped it"


def _hang_of_hmc(progress: dict[str, Any]) -> str:
    if not progress:
        return "stopped before the first transition finished"
    return (
        f"transition {progress['iteration']}: step size {progress['step_size']:.3g}, "
        f"{progress['num_steps']:,} leapfrog steps per transition"
    )


def truncated_normal_cases(backend: str) -> list[Case]:
    """Lesson 1's cases for ``backend`` ("numpyro", "pyro" or "all")."""
    cases = []
    if backend in ("numpyro", "all"):
        n = "robusthmc.lessons.repro.numpyro:"
        turing, regression = "Turing (high=inf)", "truncated regression f32"
        cases += [
            Case("stock", "numpyro", turing, "numpyro NUTS", n + "stock_nuts_turing"),
            Case(
                "uncapped_search",
                "numpyro",
                turing,
                "uncapped init search",
                n + "uncapped_search_turing",
                True,
                _hang_of_search,
            ),
            Case("guarded", "numpyro", turing, "robusthmc NUTS", n + "guarded_nuts_turing"),
            Case("fix_high_none", "numpyro", "Turing (high=None)", "robusthmc NUTS", n + "fix_high_none"),
            Case(
                "fix_robusthmc",
                "numpyro",
                "Turing, robusthmc TN inf",
                "robusthmc NUTS",
                n + "fix_robusthmc_truncated_normal",
            ),
            Case(
                "regression_stock_hmc",
                "numpyro",
                regression,
                "numpyro HMC",
                n + "stock_hmc_regression",
                True,
                _hang_of_hmc,
            ),
            Case("regression_stock_nuts", "numpyro", regression, "numpyro NUTS", n + "stock_nuts_regression"),
            Case(
                "regression_guarded_hmc", "numpyro", regression, "robusthmc HMC", n + "guarded_hmc_regression"
            ),
            Case(
                "regression_guarded_nuts",
                "numpyro",
                regression,
                "robusthmc NUTS",
                n + "guarded_nuts_regression",
            ),
            Case(
                "regression_fix",
                "numpyro",
                "regression, robusthmc TN",
                "robusthmc NUTS (0.99)",
                n + "robust_regression",
            ),
        ]
    if backend in ("pyro", "all"):
        p = "robusthmc.lessons.repro.pyro:"
        turing = "Turing (hand-written TN)"
        cases += [
            Case("stock", "pyro", turing, "pyro NUTS", p + "stock_nuts_turing"),
            Case(
                "uncapped_search",
                "pyro",
                turing,
                "uncapped init search",
                p + "uncapped_search_turing",
                True,
                _hang_of_search,
            ),
            Case("guarded", "pyro", turing, "robusthmc NUTS", p + "guarded_nuts_turing"),
            Case("fix_high_none", "pyro", "Turing, robusthmc TN None", "robusthmc NUTS", p + "fix_high_none"),
            Case("fix_high_inf", "pyro", "Turing, robusthmc TN inf", "robusthmc NUTS", p + "fix_high_inf"),
        ]
    return cases


def gpytorch_prior_cases() -> list[Case]:
    """Lesson 2's cases (Pyro and GPyTorch)."""
    g = "robusthmc.lessons.repro.gpytorch:"
    model = "GP recipe, GammaPrior(.5,1)"
    return [
        Case("stock", "pyro", model, "pyro NUTS", g + "stock_nuts"),
        Case("audit", "gpytorch", model, "robusthmc.gpytorch.audit", g + "audit_recipe"),
        Case("guarded", "pyro", model, "robusthmc NUTS", g + "guarded_nuts"),
        Case("fixed", "pyro", "GP recipe, GammaPrior(3,1)", "robusthmc NUTS", g + "fixed_model"),
    ]
