# %% [markdown]
# # 1. The truncated normal that hung NUTS
#
# Turing.jl users wrote `V ~ truncated(Normal(0, σ), 0, Inf)` and NUTS never returned.
# Two things went wrong: the gradient of the log density with respect to σ was NaN, and the
# search for an initial point retried forever. This notebook ports the model to NumPyro and
# Pyro, reproduces both failures, shows the mechanism, and fixes it.
#
# The model: `s ~ InverseGamma(2, 3)`, `V ~ TruncatedNormal(0, s, low=0, high=inf)`.

# %%
import warnings

import matplotlib.pyplot as plt

# %config InlineBackend.figure_format = "png"
plt.rcParams["figure.dpi"] = 80
warnings.filterwarnings("ignore", category=DeprecationWarning)

import json
import re
import subprocess

import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist
from numpyro.infer import MCMC

import robusthmc
from robusthmc.lessons.data import turing_exact_quantiles
from robusthmc.lessons.numpyro import turing
from robusthmc.numpyro import NUTS, TruncatedNormal

# %% [markdown]
# ## The stock kernels: a generic error
# NumPyro's own NUTS gives up after 100 tries and says nothing about why.

# %% tags=["check-output"]
try:
    MCMC(numpyro.infer.NUTS(turing), num_warmup=100, num_samples=100, progress_bar=False).run(
        jax.random.key(0)
    )
except RuntimeError as error:
    stock_error = str(error)
print(stock_error)
assert "Cannot find valid initial parameters" in stock_error

# %% [markdown]
# ## The loop that never ends
# Turing's search (before its fix) redrew initial values until the log density *and* its gradient
# were finite, with no cap. The command line runs that loop on NumPyro's log density in a child
# process and stops it with a watchdog after 10 seconds.

# %% tags=["check-output"]
result = subprocess.run(
    [
        "robusthmc",
        "repro",
        "truncated-normal",
        "--backend",
        "numpyro",
        "--case",
        "uncapped_search",
        "--timeout",
        "10",
        "--json",
    ],
    capture_output=True,
    text=True,
)
(row,) = json.loads(result.stdout)
attempts, nan_gradients = (int(part.split()[0]) for part in row["message"].split(",")[:2])
print(row["outcome"], "- every attempt had a NaN gradient:", attempts == nan_gradients)
assert row["outcome"].startswith("hung") and "NaN gradient" in row["message"]

# %% [markdown]
# ## Why: d/dσ Φ(∞/σ) = 0 · ∞
# The normalising constant is Φ((high − 0)/σ) − Φ(0). With `high=inf` its derivative is
# φ(∞) · ∂(∞/σ)/∂σ = 0 · (−∞) = NaN, although the value is finite. Written without the bound
# (`high=None`), the term is simply absent and the gradient is right.

# %% tags=["check-output"]
sigma = jnp.linspace(0.3, 5.0, 60)


def log_density(s, high):
    return dist.TruncatedNormal(0.0, s, low=0.0, high=high).log_prob(1.0)


fig, axes = plt.subplots(1, 2, figsize=(9, 3))
for high, style in ((jnp.inf, "-"), (None, "--")):
    values = jax.vmap(lambda s, high=high: log_density(s, high))(sigma)
    grads = jax.vmap(jax.grad(lambda s, high=high: log_density(s, high)))(sigma)
    axes[0].plot(sigma, values, style, label=f"high={high}")
    axes[1].plot(
        sigma,
        jnp.nan_to_num(grads, nan=0.0),
        style,
        label=f"high={high}" + (" (NaN everywhere)" if high is not None else ""),
    )
axes[0].set(xlabel="σ", ylabel="log p(V=1 | σ)", title="log density: the same")
axes[1].set(xlabel="σ", ylabel="d/dσ log p", title="gradient: NaN with high=inf")
axes[1].legend()
plt.tight_layout()
plt.show()
nan_with_inf = bool(jnp.all(jnp.isnan(jax.vmap(jax.grad(lambda s: log_density(s, jnp.inf)))(sigma))))
finite_with_none = bool(jnp.all(jnp.isfinite(jax.vmap(jax.grad(lambda s: log_density(s, None)))(sigma))))
print("gradient NaN for every σ with high=inf:", nan_with_inf, "- finite with high=None:", finite_with_none)
assert nan_with_inf and finite_with_none

# %% [markdown]
# ## The guarded kernel: an error that says what to change

# %% tags=["check-output"]
try:
    MCMC(NUTS(turing), num_warmup=100, num_samples=100, progress_bar=False).run(jax.random.key(0))
except robusthmc.InitializationError as error:
    guarded_error = error
print(
    "\n".join(
        line
        for line in str(guarded_error).splitlines()
        if line.strip().startswith(("site", "cause", "gradient"))
    )
)
text = str(guarded_error)
assert "site 'V'" in text and re.search(r"latent [^\n]*\bs\b", text) and "high=None" in text

# %% [markdown]
# ## The fix, against the exact posterior
# With no data, the posterior is the prior: `s` is InverseGamma(2, 3) and `V` given `s` is
# half-normal. robusthmc's `TruncatedNormal` treats `high=inf` as `None` (with a warning), so
# the original line of the model works too.

# %% tags=["check-output"]
probabilities = np.array([0.05, 0.25, 0.5, 0.75, 0.95])
exact = turing_exact_quantiles(probabilities)
mcmc = MCMC(
    NUTS(turing),
    num_warmup=500,
    num_samples=2000,
    num_chains=2,
    chain_method="vectorized",
    progress_bar=False,
)
with warnings.catch_warnings():
    warnings.simplefilter("ignore", robusthmc.InfiniteBoundWarning)
    mcmc.run(jax.random.key(1), high=jnp.inf, truncated_normal=TruncatedNormal)
draws = mcmc.get_samples()
fig, axes = plt.subplots(1, 2, figsize=(9, 3))
for ax, site in zip(axes, ("s", "V")):
    ax.plot(probabilities, np.quantile(draws[site], probabilities), "o", label="NUTS draws")
    ax.plot(probabilities, exact[site], "-", label="exact")
    ax.set(xlabel="probability", ylabel=f"quantile of {site}", title=site)
    ax.legend()
plt.tight_layout()
plt.show()
ess = {
    site: float(
        numpyro.diagnostics.effective_sample_size(np.asarray(mcmc.get_samples(group_by_chain=True)[site]))
    )
    for site in ("s", "V")
}
for site in ("s", "V"):
    empirical = np.array([(np.asarray(draws[site]) <= q).mean() for q in exact[site]])
    assert np.all(
        np.abs(empirical - probabilities) <= 4 * np.sqrt(probabilities * (1 - probabilities) / ess[site])
    )
assert int(mcmc.get_extra_fields()["nonfinite"].sum()) == 0
print("posterior matches the exact quantiles within Monte Carlo error; non-finite transitions: 0")

# %% [markdown]
# ## Or repair the model as it is, in one line
# The hand fix edits the model. When the model is not yours to edit, `repair(model)` makes
# the same change for you, where it is exact, and says what it changed: numpyro's own NUTS
# then draws exactly what it draws from the hand-fixed model.

# %% tags=["check-output"]
from robusthmc.numpyro import repair

print(repair(turing).explain())
by_hand, repaired = (
    MCMC(numpyro.infer.NUTS(model), num_warmup=300, num_samples=300, progress_bar=False)
    for model in (turing, repair(turing))
)
by_hand.run(jax.random.key(2), high=None, truncated_normal=TruncatedNormal)
repaired.run(jax.random.key(2))
same = all(np.array_equal(by_hand.get_samples()[k], repaired.get_samples()[k]) for k in ("s", "V"))
print("numpyro's NUTS, repaired model: the hand-fixed model's draws, bit for bit:", same)
assert same

# %% [markdown]
# ## In Pyro
# Pyro has no truncated normal; the one users write by hand fails the same way, and Pyro's
# NUTS says only "cannot find valid initial params". The guarded kernel names the site.

# %% tags=["check-output"]
import pyro
import pyro.infer

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

# %% [markdown]
# ## Take away
# - Write an absent bound as `None`, never `inf`: an infinite bound breaks the transform to
#   unconstrained space and the gradient of the normalising constant.
# - A retry loop needs a cap, and hitting the cap must be an error that names the site.
# - `robusthmc.check(model)` finds this before you sample (notebook 5); `repair(model)` fixes
#   it without an edit where the fix is exact.
