# %% [markdown]
# # 3. Truncated normals far in the tail
#
# A truncated normal's normalising constant Φ(b) − Φ(a) underflows, or loses all its digits,
# when the bounds are far in a tail: numpyro's `TruncatedNormal` returns `+inf` log densities 13
# standard deviations out in float32. robusthmc's computes the mass anchored at the bound,
# `φ(a) ∫₀ʷ exp(−a t − t²/2) dt`, so nothing large is ever subtracted.

# %%
import warnings

import matplotlib.pyplot as plt

# %config InlineBackend.figure_format = "png"
plt.rcParams["figure.dpi"] = 80
warnings.filterwarnings("ignore", category=DeprecationWarning)

import jax
import jax.numpy as jnp
import mpmath as mp
import numpy as np
import numpyro
import numpyro.distributions as dist
from numpyro.infer import MCMC

import robusthmc
from robusthmc.lessons.data import truncated_regression_data, truncated_regression_reference
from robusthmc.lessons.numpyro import truncated_regression
from robusthmc.numpyro import NUTS, TruncatedNormal

mp.mp.dps = 60

# %% [markdown]
# ## log density one tenth of a standard deviation above a lower bound, against mpmath

# %% tags=["check-output"]
bounds = np.array([0.0, 2.0, 5.0, 8.0, 10.0, 12.0, 13.0, 15.0, 20.0, 30.0, 38.0, 50.0])


def tail_log_density(low, x):
    low, x = mp.mpf(float(low)), mp.mpf(float(x))
    return float(-x * x / 2 - mp.log(mp.sqrt(2 * mp.pi)) - mp.log(mp.erfc(low / mp.sqrt(2)) / 2))


errors = {}
for precision in ("float32", "float64"):
    jax.config.update("jax_enable_x64", precision == "float64")
    dtype = np.float32 if precision == "float32" else np.float64
    low, x = bounds.astype(dtype), (bounds + 0.1).astype(dtype)
    truth = np.array([tail_log_density(a, v) for a, v in zip(low, x)])
    for name, cls in (("numpyro", dist.TruncatedNormal), ("robusthmc", TruncatedNormal)):
        got = np.asarray(cls(0.0, 1.0, low=jnp.asarray(low)).log_prob(jnp.asarray(x)), dtype=np.float64)
        errors[name, precision] = np.where(np.isfinite(got), np.abs(got - truth) / np.abs(truth), np.inf)
jax.config.update("jax_enable_x64", False)
fig, ax = plt.subplots(figsize=(6, 3.5))
for (name, precision), error in errors.items():
    shown = np.where(np.isfinite(error), np.maximum(error, 1e-17), 1e2)
    ax.semilogy(bounds, shown, "o-" if name == "robusthmc" else "s--", label=f"{name}, {precision}")
ax.axhline(1e2, color="gray", lw=0.5)
ax.text(0, 2e2, "inf (off the chart)", fontsize=8)
ax.set(
    xlabel="lower bound (standard deviations)",
    ylabel="relative error of log_prob",
    title="TruncatedNormal(0, 1, low=a).log_prob(a + 0.1)",
)
ax.legend(fontsize=7)
plt.show()
print("numpyro float32 is inf from 13 sd:", bool(np.isinf(errors["numpyro", "float32"][bounds >= 13]).all()))
worst32, worst64 = errors["robusthmc", "float32"].max(), errors["robusthmc", "float64"].max()
print(f"robusthmc worst relative error: float32 {worst32:.0e}, float64 {worst64:.0e}")
assert errors["robusthmc", "float32"].max() < 1e-5 and errors["robusthmc", "float64"].max() < 1e-10

# %% [markdown]
# ## Sampling: every draw inside the bounds, even 50 standard deviations out in float32

# %% tags=["check-output"]
d = TruncatedNormal(0.0, 1.0, low=50.0)
draws = d.sample(jax.random.key(0), (10000,))
narrow = TruncatedNormal(0.0, 1.0, low=30.0, high=30.00001).sample(jax.random.key(1), (10000,))
print(
    "low=50:",
    bool(jnp.all(draws >= 50)),
    "- [30, 30.00001]:",
    bool(jnp.all((narrow >= 30) & (narrow <= 30.00001))),
)
print("numpyro's own at low=50:", float(dist.TruncatedNormal(0.0, 1.0, low=50.0).sample(jax.random.key(0))))
assert bool(jnp.all(jnp.isfinite(draws))) and bool(jnp.all(draws >= 50))

# %% [markdown]
# ## The truncated regression, in float32
# `y ~ TruncatedNormal(mu, sigma, low=0)` with data from Normal(−4, 1) truncated to y > 0:
# the posterior runs along mu ≈ −4.7 sigma², far into the lower tail. With robusthmc's
# truncated normal, float32 NUTS matches a float64 grid quadrature (the high target acceptance
# handles the narrow small-sigma corner).

# %% tags=["check-output"]
y = truncated_regression_data()
reference = truncated_regression_reference()
probabilities = np.array([0.05, 0.25, 0.5, 0.75, 0.95])
runs = {}
for name, cls in (("numpyro", None), ("robusthmc", TruncatedNormal)):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", robusthmc.NonFiniteWarning)
        mcmc = MCMC(
            NUTS(truncated_regression, target_accept_prob=0.99),
            num_warmup=800,
            num_samples=1000,
            num_chains=2,
            chain_method="vectorized",
            progress_bar=False,
        )
        mcmc.run(jax.random.key(0), y, truncated_normal=cls)
    runs[name] = mcmc
fig, ax = plt.subplots(figsize=(5, 3.5))
ax.plot(reference.mu, reference.mu_cdf, "k-", label="float64 grid")
for name, mcmc in runs.items():
    mu = np.sort(np.asarray(mcmc.get_samples()["mu"]))
    ax.plot(mu, np.arange(1, mu.size + 1) / mu.size, label=f"{name} TruncatedNormal, float32")
ax.set(xlim=(-80, 0), xlabel="mu", ylabel="posterior CDF", title="truncated regression: mu")
ax.legend(fontsize=8)
plt.show()
ours = runs["robusthmc"]
ess = float(
    numpyro.diagnostics.effective_sample_size(np.asarray(ours.get_samples(group_by_chain=True)["mu"]))
)
mu = np.asarray(ours.get_samples()["mu"])
truth = reference.quantiles(probabilities)["mu"]
empirical = np.array([(mu <= q).mean() for q in truth])
assert np.all(np.abs(empirical - probabilities) <= 4 * np.sqrt(probabilities * (1 - probabilities) / ess))
print(
    "robusthmc: matches the float64 reference; non-finite transitions:",
    int(ours.get_extra_fields()["nonfinite"].sum()),
)
print(
    "numpyro:   non-finite transitions > 0:", int(runs["numpyro"].get_extra_fields()["nonfinite"].sum()) > 0
)
assert int(ours.get_extra_fields()["nonfinite"].sum()) == 0

# %% [markdown]
# ## Take away
# - Far in a tail, compute masses relative to the bound, in log space; never subtract two CDFs.
# - float32 holds 7 digits: a formula that subtracts two numbers near 1 leaves none.
# - If a posterior reaches a truncated tail, use `robusthmc.numpyro.TruncatedNormal` (or
#   `robusthmc.pyro.TruncatedNormal`), or run in float64.
