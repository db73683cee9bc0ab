"""Write the teaching notebooks from their cells and execute them in place.

    python notebooks/build.py            # all
    python notebooks/build.py 03         # the ones whose name starts with 03

Cells tagged ``check-output`` print deterministic text; ``tests/test_notebooks.py``
re-executes every notebook and compares those outputs with the committed ones.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

import nbformat
from nbclient import NotebookClient

HERE = Path(__file__).parent
CHECK = {"tags": ["check-output"]}


def md(text: str) -> nbformat.NotebookNode:
    return nbformat.v4.new_markdown_cell(text.strip())


def code(text: str, checked: bool = False) -> nbformat.NotebookNode:
    return nbformat.v4.new_code_cell(text.strip(), metadata=CHECK if checked else {})


SETUP = """
import warnings
import matplotlib.pyplot as plt
%config InlineBackend.figure_format = "png"
plt.rcParams["figure.dpi"] = 80
warnings.filterwarnings("ignore", category=DeprecationWarning)
"""

NOTEBOOKS = {}

NOTEBOOKS["01_truncated_normal_hang"] = [
    md("""
# 1. The truncated normal that hung NUTS

Turing.jl users wrote `V ~ truncated(Normal(0, σ), 0, Inf)` and NUTS never returned.
Two things went wrong: the gradient of the log density with respect to σ was NaN, and the
search for an initial point retried forever. This notebook ports the model to NumPyro and
Pyro, reproduces both failures, shows the mechanism, and fixes it.

The model: `s ~ InverseGamma(2, 3)`, `V ~ TruncatedNormal(0, s, low=0, high=inf)`.
"""),
    code(
        SETUP
        + """
import json, re, subprocess
import jax, jax.numpy as jnp, numpy as np
import numpyro, numpyro.distributions as dist
from numpyro.infer import MCMC
import robusthmc
from robusthmc.numpyro import NUTS, TruncatedNormal
from robusthmc.lessons.numpyro import turing
from robusthmc.lessons.data import turing_exact_quantiles
"""
    ),
    md(
        "## The stock kernels: a generic error\nNumPyro's own NUTS gives up after 100 tries and says nothing about why."
    ),
    code(
        """
try:
    MCMC(numpyro.infer.NUTS(turing), num_warmup=100, num_samples=100, progress_bar=False).run(jax.random.key(0))
except RuntimeError as error:
    stock_error = str(error)
print(stock_error)
assert "Cannot find valid initial parameters" in stock_error
""",
        checked=True,
    ),
    md("""
## The loop that never ends
Turing's search (before its fix) redrew initial values until the log density *and* its gradient
were finite, with no cap. The command line runs that loop on NumPyro's log density in a child
process and stops it with a watchdog after 10 seconds.
"""),
    code(
        """
result = subprocess.run(
    ["robusthmc", "repro", "truncated-normal", "--backend", "numpyro", "--case", "uncapped_search", "--timeout", "10", "--json"],
    capture_output=True, text=True,
)
(row,) = json.loads(result.stdout)
attempts, nan_gradients = (int(part.split()[0]) for part in row["message"].split(",")[:2])
print(row["outcome"], "- every attempt had a NaN gradient:", attempts == nan_gradients)
assert row["outcome"].startswith("hung") and "NaN gradient" in row["message"]
""",
        checked=True,
    ),
    md("""
## Why: d/dσ Φ(∞/σ) = 0 · ∞
The normalising constant is Φ((high − 0)/σ) − Φ(0). With `high=inf` its derivative is
φ(∞) · ∂(∞/σ)/∂σ = 0 · (−∞) = NaN, although the value is finite. Written without the bound
(`high=None`), the term is simply absent and the gradient is right.
"""),
    code(
        """
sigma = jnp.linspace(0.3, 5.0, 60)
def log_density(s, high):
    return dist.TruncatedNormal(0.0, s, low=0.0, high=high).log_prob(1.0)
fig, axes = plt.subplots(1, 2, figsize=(9, 3))
for high, style in ((jnp.inf, "-"), (None, "--")):
    values = jax.vmap(lambda s: log_density(s, high))(sigma)
    grads = jax.vmap(jax.grad(lambda s: log_density(s, high)))(sigma)
    axes[0].plot(sigma, values, style, label=f"high={high}")
    axes[1].plot(sigma, jnp.nan_to_num(grads, nan=0.0), style, label=f"high={high}" + (" (NaN everywhere)" if high is not None else ""))
axes[0].set(xlabel="σ", ylabel="log p(V=1 | σ)", title="log density: the same")
axes[1].set(xlabel="σ", ylabel="d/dσ log p", title="gradient: NaN with high=inf")
axes[1].legend(); plt.tight_layout(); plt.show()
nan_with_inf = bool(jnp.all(jnp.isnan(jax.vmap(jax.grad(lambda s: log_density(s, jnp.inf)))(sigma))))
finite_with_none = bool(jnp.all(jnp.isfinite(jax.vmap(jax.grad(lambda s: log_density(s, None)))(sigma))))
print("gradient NaN for every σ with high=inf:", nan_with_inf, "- finite with high=None:", finite_with_none)
assert nan_with_inf and finite_with_none
""",
        checked=True,
    ),
    md("## The guarded kernel: an error that says what to change"),
    code(
        """
try:
    MCMC(NUTS(turing), num_warmup=100, num_samples=100, progress_bar=False).run(jax.random.key(0))
except robusthmc.InitializationError as error:
    guarded_error = error
print("\\n".join(line for line in str(guarded_error).splitlines() if line.strip().startswith(("site", "cause", "gradient"))))
text = str(guarded_error)
assert "site 'V'" in text and re.search(r"latent [^\\n]*\\bs\\b", text) and "high=None" in text
""",
        checked=True,
    ),
    md("""
## The fix, against the exact posterior
With no data, the posterior is the prior: `s` is InverseGamma(2, 3) and `V` given `s` is
half-normal. robusthmc's `TruncatedNormal` treats `high=inf` as `None` (with a warning), so
the original line of the model works too.
"""),
    code(
        """
probabilities = np.array([0.05, 0.25, 0.5, 0.75, 0.95])
exact = turing_exact_quantiles(probabilities)
mcmc = MCMC(NUTS(turing), num_warmup=500, num_samples=2000, num_chains=2, chain_method="vectorized", progress_bar=False)
with warnings.catch_warnings():
    warnings.simplefilter("ignore", robusthmc.InfiniteBoundWarning)
    mcmc.run(jax.random.key(1), high=jnp.inf, truncated_normal=TruncatedNormal)
draws = mcmc.get_samples()
fig, axes = plt.subplots(1, 2, figsize=(9, 3))
for ax, site in zip(axes, ("s", "V")):
    ax.plot(probabilities, np.quantile(draws[site], probabilities), "o", label="NUTS draws")
    ax.plot(probabilities, exact[site], "-", label="exact")
    ax.set(xlabel="probability", ylabel=f"quantile of {site}", title=site); ax.legend()
plt.tight_layout(); plt.show()
ess = {site: float(numpyro.diagnostics.effective_sample_size(np.asarray(mcmc.get_samples(group_by_chain=True)[site]))) for site in ("s", "V")}
for site in ("s", "V"):
    empirical = np.array([(np.asarray(draws[site]) <= q).mean() for q in exact[site]])
    assert np.all(np.abs(empirical - probabilities) <= 4 * np.sqrt(probabilities * (1 - probabilities) / ess[site]))
assert int(mcmc.get_extra_fields()["nonfinite"].sum()) == 0
print("posterior matches the exact quantiles within Monte Carlo error; non-finite transitions: 0")
""",
        checked=True,
    ),
    md("""
## In Pyro
Pyro has no truncated normal; the one users write by hand fails the same way, and Pyro's
NUTS says only "cannot find valid initial params". The guarded kernel names the site.
"""),
    code(
        """
import pyro, pyro.infer
import robusthmc.pyro as rp
from robusthmc.lessons.pyro import turing as pyro_turing
for kernel in (pyro.infer.NUTS, rp.NUTS):
    pyro.set_rng_seed(0)
    try:
        pyro.infer.MCMC(kernel(pyro_turing), 50, warmup_steps=50, disable_progbar=True).run()
    except Exception as error:
        print(f"{kernel.__module__}.NUTS -> {type(error).__name__}: {str(error).splitlines()[0]}")
        last = error
assert "site 'V'" in str(last)
""",
        checked=True,
    ),
    md("""
## Take away
- Write an absent bound as `None`, never `inf`: an infinite bound breaks the transform to
  unconstrained space and the gradient of the normalising constant.
- A retry loop needs a cap, and hitting the cap must be an error that names the site.
- `robusthmc.check(model)` finds this before you sample (notebook 5).
"""),
]

NOTEBOOKS["02_gradient_guard"] = [
    md("""
# 2. The gradient guard: numerical failures are not divergences

NUTS calls a transition "divergent" when the energy error explodes: a geometric problem
(a funnel, a too-large step). NumPyro also maps a NaN energy to +inf, so a log density that is
*wrong* in part of the space shows up as "divergences" too. The guard counts these numerical
failures apart (`nonfinite`), names their site and cause, and stops by policy.
"""),
    code(
        SETUP
        + """
import jax, jax.numpy as jnp, numpy as np
import numpyro, numpyro.distributions as dist
from numpyro.infer import MCMC, init_to_value
import robusthmc
from robusthmc import Guard
from robusthmc.numpyro import NUTS
from robusthmc.lessons.numpyro import eight_schools_centered, truncated_regression
from robusthmc.lessons.data import truncated_regression_data
"""
    ),
    md("## Geometric divergences, no numerical failure: eight schools, centred"),
    code(
        """
# (With some seeds a trajectory flings tau to ~1e20, where HalfCauchy's float32 log density
# overflows: that one is counted as numerical, rightly. Seed 3 shows the geometry alone.)
schools = MCMC(NUTS(eight_schools_centered), num_warmup=500, num_samples=500, progress_bar=False)
schools.run(jax.random.key(3), extra_fields=("diverging",))
fields = schools.get_extra_fields()
print("divergences:", int(fields["diverging"].sum()) > 0, "- non-finite transitions:", int(fields["nonfinite"].sum()))
assert fields["diverging"].sum() > 0 and fields["nonfinite"].sum() == 0
""",
        checked=True,
    ),
    md("""
## Numerical failures, not geometry: the float32 truncated regression
numpyro's `TruncatedNormal` loses its normalising constant 13 standard deviations into the
tail in float32; the posterior goes to 19. The guard warns, names the site and the fix.
"""),
    code(
        """
with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    regression = MCMC(NUTS(truncated_regression), num_warmup=500, num_samples=500, progress_bar=False)
    regression.run(jax.random.key(0), truncated_regression_data(), extra_fields=("diverging",))
(warning,) = [w.message for w in caught if isinstance(w.message, robusthmc.NonFiniteWarning)]
fixes = [line.strip() for line in str(warning).splitlines() if "tail" in line and line.strip().startswith("fix")]
print(fixes[0][:120])
fields = regression.get_extra_fields()
print("non-finite transitions while sampling:", int(fields["nonfinite"].sum()) > 0)
assert fields["nonfinite"].sum() > 0 and fixes
""",
        checked=True,
    ),
    md(
        "Where each kind happened: divergences (geometry) and non-finite transitions (numerics) in the (mu, sigma) plane."
    ),
    code(
        """
draws = regression.get_samples()
ratio = draws["mu"] / draws["sigma"]
fig, ax = plt.subplots(figsize=(5, 3.5))
ax.scatter(draws["mu"], draws["sigma"], s=4, c="lightgray", label="draws")
ax.scatter(draws["mu"][fields["diverging"]], draws["sigma"][fields["diverging"]], s=10, c="tab:orange", label="divergent")
ax.scatter(draws["mu"][fields["nonfinite"]], draws["sigma"][fields["nonfinite"]], s=10, c="tab:red", marker="x", label="non-finite")
ax.set(xlabel="mu", ylabel="sigma", title="float32 truncated regression"); ax.legend(); plt.show()
print(f"lowest mu/sigma reached: {float(ratio.min()):.0f} (the float64 posterior reaches about -19)")
""",
        checked=False,
    ),
    md("""
## The policies
`Guard(on_nonfinite="warn")` (default) rejects and counts; `"raise"` stops at the first failure
in sampling with a `NonFiniteError` carrying the diagnosis and the draws so far (in warmup, only
failures at the adapted step size count, not adaptation's probes); `"ignore"` is silent.
"""),
    code(
        """
def walled(limit=1.0):
    x = numpyro.sample("x", dist.Normal(0.0, 1.0))
    numpyro.factor("wall", jnp.where(x > limit, jnp.nan, 0.0))

raising = MCMC(NUTS(walled, guard=Guard(on_nonfinite="raise")), num_warmup=0, num_samples=2000, progress_bar=False)
try:
    raising.run(jax.random.key(3), init_params={"x": jnp.array(0.0)})
except robusthmc.NonFiniteError as error:
    print(str(error).splitlines()[0])
    print("draws kept:", error.samples["x"].shape[1] == error.diagnosis.iteration, "- site:", error.diagnosis.sites[0].site)
    assert error.diagnosis.sites[0].site == "wall"
""",
        checked=True,
    ),
    md("""
## Stuck chains and step-size collapse
A chain whose every proposal fails cannot move: after `max_consecutive_failures` it stops.
HMC with a collapsing step size would take `trajectory_length / step_size` leapfrog steps —
lessons.md saw 2,147,483,647 — the guard stops it at `min_step_size` and caps the steps.
"""),
    code(
        """
stuck = MCMC(NUTS(walled, step_size=5.0, adapt_step_size=False, guard=Guard(max_consecutive_failures=20)),
             num_warmup=0, num_samples=1000, progress_bar=False)
try:
    stuck.run(jax.random.key(0), init_params={"x": jnp.array(0.99)}, limit=1.0)
except robusthmc.StuckChainError as error:
    print(str(error).splitlines()[0][:110])
collapse = MCMC(NUTS(eight_schools_centered, guard=Guard(min_step_size=1.0)), num_warmup=100, num_samples=10, progress_bar=False)
try:
    collapse.run(jax.random.key(0))
except robusthmc.StepSizeCollapseError as error:
    print(str(error).splitlines()[0][:110])
    assert "below Guard.min_step_size=1" in str(error)
""",
        checked=True,
    ),
    md("""
## Take away
- "Divergences" can be numerics: look at `nonfinite` before reparameterising.
- Decide the policy: warn while exploring, raise in production pipelines.
- Every stop keeps the draws collected so far (`err.samples`) and the diagnosis (`err.diagnosis`).
"""),
]

NOTEBOOKS["03_safe_truncation_tails"] = [
    md("""
# 3. Truncated normals far in the tail

A truncated normal's normalising constant Φ(b) − Φ(a) underflows, or loses all its digits,
when the bounds are far in a tail: numpyro's `TruncatedNormal` returns `+inf` log densities 13
standard deviations out in float32. robusthmc's computes the mass anchored at the bound,
`φ(a) ∫₀ʷ exp(−a t − t²/2) dt`, so nothing large is ever subtracted.
"""),
    code(
        SETUP
        + """
import jax, jax.numpy as jnp, numpy as np, mpmath as mp
import numpyro, numpyro.distributions as dist
from numpyro.infer import MCMC
import robusthmc
from robusthmc.numpyro import NUTS, TruncatedNormal
from robusthmc.lessons.numpyro import truncated_regression
from robusthmc.lessons.data import truncated_regression_data, truncated_regression_reference
mp.mp.dps = 60
"""
    ),
    md("## log density one tenth of a standard deviation above a lower bound, against mpmath"),
    code(
        """
bounds = np.array([0.0, 2.0, 5.0, 8.0, 10.0, 12.0, 13.0, 15.0, 20.0, 30.0, 38.0, 50.0])
def reference(low, x):
    low, x = mp.mpf(float(low)), mp.mpf(float(x))
    return float(-x * x / 2 - mp.log(mp.sqrt(2 * mp.pi)) - mp.log(mp.erfc(low / mp.sqrt(2)) / 2))
errors = {}
for precision in ("float32", "float64"):
    jax.config.update("jax_enable_x64", precision == "float64")
    dtype = np.float32 if precision == "float32" else np.float64
    low, x = bounds.astype(dtype), (bounds + 0.1).astype(dtype)
    truth = np.array([reference(l, v) for l, v in zip(low, x)])
    for name, cls in (("numpyro", dist.TruncatedNormal), ("robusthmc", TruncatedNormal)):
        got = np.asarray(cls(0.0, 1.0, low=jnp.asarray(low)).log_prob(jnp.asarray(x)), dtype=np.float64)
        errors[name, precision] = np.where(np.isfinite(got), np.abs(got - truth) / np.abs(truth), np.inf)
jax.config.update("jax_enable_x64", False)
fig, ax = plt.subplots(figsize=(6, 3.5))
for (name, precision), error in errors.items():
    shown = np.where(np.isfinite(error), np.maximum(error, 1e-17), 1e2)
    ax.semilogy(bounds, shown, "o-" if name == "robusthmc" else "s--", label=f"{name}, {precision}")
ax.axhline(1e2, color="gray", lw=0.5); ax.text(0, 2e2, "inf (off the chart)", fontsize=8)
ax.set(xlabel="lower bound (standard deviations)", ylabel="relative error of log_prob", title="TruncatedNormal(0, 1, low=a).log_prob(a + 0.1)")
ax.legend(fontsize=7); plt.show()
print("numpyro float32 is inf from 13 sd:", bool(np.isinf(errors["numpyro", "float32"][bounds >= 13]).all()))
print("robusthmc worst relative error: float32 %.0e, float64 %.0e" % (errors["robusthmc", "float32"].max(), errors["robusthmc", "float64"].max()))
assert errors["robusthmc", "float32"].max() < 1e-5 and errors["robusthmc", "float64"].max() < 1e-10
""",
        checked=True,
    ),
    md("## Sampling: every draw inside the bounds, even 50 standard deviations out in float32"),
    code(
        """
d = TruncatedNormal(0.0, 1.0, low=50.0)
draws = d.sample(jax.random.key(0), (10000,))
narrow = TruncatedNormal(0.0, 1.0, low=30.0, high=30.00001).sample(jax.random.key(1), (10000,))
print("low=50:", bool(jnp.all(draws >= 50)), "- [30, 30.00001]:", bool(jnp.all((narrow >= 30) & (narrow <= 30.00001))))
print("numpyro's own at low=50:", float(dist.TruncatedNormal(0.0, 1.0, low=50.0).sample(jax.random.key(0))))
assert bool(jnp.all(jnp.isfinite(draws))) and bool(jnp.all(draws >= 50))
""",
        checked=True,
    ),
    md("""
## The truncated regression, in float32
`y ~ TruncatedNormal(mu, sigma, low=0)` with data from Normal(−4, 1) truncated to y > 0:
the posterior runs along mu ≈ −4.7 sigma², far into the lower tail. With robusthmc's
truncated normal, float32 NUTS matches a float64 grid quadrature (the high target acceptance
handles the narrow small-sigma corner).
"""),
    code(
        """
y = truncated_regression_data()
reference = truncated_regression_reference()
probabilities = np.array([0.05, 0.25, 0.5, 0.75, 0.95])
runs = {}
for name, cls in (("numpyro", None), ("robusthmc", TruncatedNormal)):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", robusthmc.NonFiniteWarning)
        mcmc = MCMC(NUTS(truncated_regression, target_accept_prob=0.99), num_warmup=800, num_samples=1000,
                    num_chains=2, chain_method="vectorized", progress_bar=False)
        mcmc.run(jax.random.key(0), y, truncated_normal=cls)
    runs[name] = mcmc
fig, ax = plt.subplots(figsize=(5, 3.5))
ax.plot(reference.mu, reference.mu_cdf, "k-", label="float64 grid")
for name, mcmc in runs.items():
    mu = np.sort(np.asarray(mcmc.get_samples()["mu"]))
    ax.plot(mu, np.arange(1, mu.size + 1) / mu.size, label=f"{name} TruncatedNormal, float32")
ax.set(xlim=(-80, 0), xlabel="mu", ylabel="posterior CDF", title="truncated regression: mu"); ax.legend(fontsize=8); plt.show()
ours = runs["robusthmc"]
ess = float(numpyro.diagnostics.effective_sample_size(np.asarray(ours.get_samples(group_by_chain=True)["mu"])))
mu = np.asarray(ours.get_samples()["mu"])
truth = reference.quantiles(probabilities)["mu"]
empirical = np.array([(mu <= q).mean() for q in truth])
assert np.all(np.abs(empirical - probabilities) <= 4 * np.sqrt(probabilities * (1 - probabilities) / ess))
print("robusthmc: matches the float64 reference; non-finite transitions:", int(ours.get_extra_fields()["nonfinite"].sum()))
print("numpyro:   non-finite transitions > 0:", int(runs["numpyro"].get_extra_fields()["nonfinite"].sum()) > 0)
assert int(ours.get_extra_fields()["nonfinite"].sum()) == 0
""",
        checked=True,
    ),
    md("""
## Take away
- Far in a tail, compute masses relative to the bound, in log space; never subtract two CDFs.
- float32 holds 7 digits: a formula that subtracts two numbers near 1 leaves none.
- If a posterior reaches a truncated tail, use `robusthmc.numpyro.TruncatedNormal` (or
  `robusthmc.pyro.TruncatedNormal`), or run in float64.
"""),
]

NOTEBOOKS["04_gpytorch_prior_constraints"] = [
    md("""
# 4. GPyTorch: when the prior disagrees with the constraint

GPyTorch's fully Bayesian GP samples hyperparameters with Pyro's NUTS. With a
`GammaPrior(0.5, 1.0)` on the noise and the default `GreaterThan(1e-4)` noise constraint,
1.1 % of the prior has no raw value; tiny noises and huge outputscales make the kernel matrix
singular, GPyTorch raises, and Pyro's run dies with every draw.
"""),
    code(
        SETUP
        + """
import numpy as np, pyro, pyro.infer, torch, gpytorch
from gpytorch.priors import GammaPrior, UniformPrior
from pyro.infer import MCMC
import robusthmc
from robusthmc.pyro import NUTS
from robusthmc.gpytorch import audit
from robusthmc.lessons.gpytorch import periodic_gp
def run(kernel_class, recipe, steps=30):
    pyro.set_rng_seed(0)
    mcmc = MCMC(kernel_class(recipe.pyro_model), steps, warmup_steps=steps, disable_progbar=True)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        mcmc.run(recipe.train_x, recipe.train_y)
    return mcmc, [w.message for w in caught if isinstance(w.message, robusthmc.RobustHMCWarning)]
"""
    ),
    md("## Stock Pyro NUTS: the run is lost"),
    code(
        """
try:
    run(pyro.infer.NUTS, periodic_gp())
except (gpytorch.utils.errors.NotPSDError, gpytorch.utils.errors.NanError) as error:
    print(type(error).__name__, "- the run and its draws are gone")
""",
        checked=True,
    ),
    md("## The audit: which prior, which constraint, how much mass, which remedies"),
    code(
        """
report = audit(periodic_gp().gp)
for row in report.rows:
    print(f"{'FLAG' if row.flagged else 'ok':4s} {row.module}.{row.parameter}: {row.prior} under {row.constraint}: {row.unrepresentable_mass:.2%}")
for remedy in report.flagged[0].remedies:
    print("  remedy:", remedy[:100])
assert [row.parameter for row in report.flagged] == ["noise"]
""",
        checked=True,
    ),
    md("## The guarded kernel: GPyTorch's exceptions are rejected proposals, and the run completes"),
    code(
        """
guarded, warned = run(NUTS, periodic_gp())
print(len(guarded.get_samples()["likelihood.noise_prior"]), "draws; the failures met warmup: counted, not warned")
assert len(guarded.get_samples()["likelihood.noise_prior"]) == 30
""",
        checked=True,
    ),
    md("""
## Three remedies compared
1. `Positive()` as the noise constraint: every positive value representable.
2. Prior parameters that keep the mass away from the bound: `GammaPrior(3.0, 1.0)`.
3. A prior inside the constraint: `UniformPrior(0.01, 2.0)`.
"""),
    code(
        """
remedies = {
    "Positive() constraint": periodic_gp(noise_constraint=gpytorch.constraints.Positive()),
    "GammaPrior(3, 1)": periodic_gp(scale_prior=lambda: GammaPrior(3.0, 1.0)),
    "UniformPrior(0.01, 2)": periodic_gp(scale_prior=lambda: UniformPrior(0.01, 2.0)),
}
noise = {}
for name, recipe in remedies.items():
    mcmc, warned = run(NUTS, recipe)
    noise[name] = mcmc.get_samples()["likelihood.noise_prior"].reshape(-1).numpy()
    print(f"{name:24s} audit clean: {audit(recipe.gp).clean}; rejected proposals while sampling: {len(mcmc.diagnostics()['nonfinite']['chain 0'])}")
    assert audit(recipe.gp).clean
fig, ax = plt.subplots(figsize=(6, 3))
ax.boxplot(list(noise.values()), tick_labels=list(noise), vert=False); ax.set_xscale("log")
ax.set(xlabel="posterior noise (log scale)", title="noise under each remedy"); plt.tight_layout(); plt.show()
""",
        checked=True,
    ),
    md("""
## Take away
- A prior's support must fit the parameter's constraint: audit before sampling.
- The cheapest fix is usually a prior that keeps its mass away from the bound.
- Under `robusthmc.pyro.NUTS`, a linear-algebra exception costs one proposal, not the run.
"""),
]

NOTEBOOKS["05_model_doctor"] = [
    md("""
# 5. The model doctor

`robusthmc.check(model, ...)` evaluates every sample site at prior draws and at the
uniform(−2, 2) points where Stan and both backends initialise, before any sampling, and reports
per site what is not finite, with respect to which latents, and why. Here: a hierarchical
model of truncated measurements with two planted traps, found and fixed one at a time.
"""),
    code(
        SETUP
        + """
import jax, jax.numpy as jnp, numpy as np
import numpyro, numpyro.distributions as dist
import robusthmc
from robusthmc._render import render_check
from robusthmc.numpyro import TruncatedNormal

rng = np.random.default_rng(0)
group = np.repeat(np.arange(4), 10)
y = np.abs(rng.normal(0.5, 1.0, size=40)) + 0.01   # measurements, only positive values recorded
"""
    ),
    md("""
Two traps: the group spread has a flat prior written as `Uniform(0, inf)`, and the truncated
likelihood uses numpyro's `TruncatedNormal`, which breaks in float32 once a group mean is
far below zero relative to the noise.
"""),
    code(
        """
def model(group, y, spread_prior=lambda: dist.Uniform(0.0, jnp.inf), likelihood=dist.TruncatedNormal):
    mu = numpyro.sample("mu", dist.Normal(0.0, 10.0))
    spread = numpyro.sample("spread", spread_prior())
    sigma = numpyro.sample("sigma", dist.HalfNormal(2.0))
    with numpyro.plate("groups", 4):
        effect = numpyro.sample("effect", dist.Normal(mu, spread))
    with numpyro.plate("data", len(y)):
        numpyro.sample("y", likelihood(effect[group], sigma, low=0.0), obs=y)

as_written = robusthmc.check(model, group, y, points=10)
print(render_check(as_written)[:1500])
assert [site.site for site in as_written.problems][:1] == ["spread"]
""",
        checked=True,
    ),
    md("Trap 1: `Uniform(0, inf)` has no density. Give the spread a proper prior."),
    code(
        """
proper_prior = robusthmc.check(model, group, y, spread_prior=lambda: dist.HalfNormal(5.0), points=10)
print("\\n".join(line for line in render_check(proper_prior).splitlines() if "PROBLEM" in line or "fix" in line)[:600])
assert [site.site for site in proper_prior.problems] == ["y"]
assert any(cause.kind == "tail_overflow" for cause in proper_prior.problems[0].causes)
""",
        checked=True,
    ),
    md("Trap 2: the float32 tail of numpyro's truncated normal. Use robusthmc's."),
    code(
        """
both_fixed = robusthmc.check(model, group, y, spread_prior=lambda: dist.HalfNormal(5.0), likelihood=TruncatedNormal, points=10)
print(render_check(both_fixed).splitlines()[-1])
assert both_fixed.clean
""",
        checked=True,
    ),
    md(
        "Where each version of the model breaks: the share of the doctor's points at which a site's term or gradient is not finite."
    ),
    code(
        """
versions = {"as written": as_written, "proper spread prior": proper_prior, "robusthmc TruncatedNormal": both_fixed}
sites = [site.site for site in as_written.sites]
fig, ax = plt.subplots(figsize=(7, 3))
for offset, (name, report) in enumerate(versions.items()):
    shares = {site.site: site.nonfinite_share for site in report.sites}
    ax.barh([i + 0.25 * offset for i in range(len(sites))], [shares[s] for s in sites], height=0.25, label=name)
ax.set_yticks([i + 0.25 for i in range(len(sites))], sites)
ax.set(xlabel="share of points with a non-finite term or gradient", xlim=(0, 1)); ax.legend(fontsize=8)
plt.tight_layout(); plt.show()
"""
    ),
    md("""
## Take away
- Run the doctor on a new model before the first `mcmc.run`: it costs seconds.
- It reports per site, with the latents involved and the fix, the way the guarded kernels'
  errors do (`robusthmc check my_model.py:model` from a shell).
"""),
]


def build(name: str) -> None:
    notebook = nbformat.v4.new_notebook()
    notebook.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    notebook.cells = NOTEBOOKS[name]
    NotebookClient(
        notebook, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(HERE)}}
    ).execute()
    for cell in notebook.cells:
        if cell.cell_type == "code":
            cell.outputs = [output for output in cell.outputs if not _is_library_noise(output)]
    nbformat.write(notebook, HERE / f"{name}.ipynb")


def _is_library_noise(output) -> bool:
    """tqdm's missing-ipywidgets notice and XLA's C++ log lines: machine-specific, not teaching material."""
    text = output.get("text", "") if output.get("name") == "stderr" else ""
    return bool(text) and all(
        "TqdmWarning" in line or "from .autonotebook import" in line or re.match(r"[EWI]\d{4} ", line)
        for line in text.splitlines()
    )


if __name__ == "__main__":
    prefix = sys.argv[1] if len(sys.argv) > 1 else ""
    for name in NOTEBOOKS:
        if name.startswith(prefix):
            print("building", name, flush=True)
            build(name)
