# %% [markdown]
# # 5. The model doctor
#
# `robusthmc.check(model, ...)` evaluates every sample site at prior draws and at the
# uniform(−2, 2) points where Stan and both backends initialise, before any sampling, and reports
# per site what is not finite, with respect to which latents, and why. Here: a hierarchical
# model of truncated measurements with two planted traps, found and fixed one at a time.

# %%
import warnings

import matplotlib.pyplot as plt

# %config InlineBackend.figure_format = "png"
plt.rcParams["figure.dpi"] = 80
warnings.filterwarnings("ignore", category=DeprecationWarning)

import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist

import robusthmc
from robusthmc.numpyro import TruncatedNormal

rng = np.random.default_rng(0)
group = np.repeat(np.arange(4), 10)
y = np.abs(rng.normal(0.5, 1.0, size=40)) + 0.01  # measurements, only positive values recorded


# %% [markdown]
# Two traps: the group spread has a flat prior written as `Uniform(0, inf)`, and the truncated
# likelihood uses numpyro's `TruncatedNormal`, which breaks in float32 once a group mean is
# far below zero relative to the noise.


# %% tags=["check-output"]
def model(group, y, spread_prior=lambda: dist.Uniform(0.0, jnp.inf), likelihood=dist.TruncatedNormal):
    mu = numpyro.sample("mu", dist.Normal(0.0, 10.0))
    spread = numpyro.sample("spread", spread_prior())
    sigma = numpyro.sample("sigma", dist.HalfNormal(2.0))
    with numpyro.plate("groups", 4):
        effect = numpyro.sample("effect", dist.Normal(mu, spread))
    with numpyro.plate("data", len(y)):
        numpyro.sample("y", likelihood(effect[group], sigma, low=0.0), obs=y)


as_written = robusthmc.check(model, group, y, points=10)
print(str(as_written)[:1500])
assert [site.site for site in as_written.problems][:1] == ["spread"]

# %% [markdown]
# Trap 1: `Uniform(0, inf)` has no density. Give the spread a proper prior.

# %% tags=["check-output"]
proper_prior = robusthmc.check(model, group, y, spread_prior=lambda: dist.HalfNormal(5.0), points=10)
print("\n".join(line for line in str(proper_prior).splitlines() if "PROBLEM" in line or "fix" in line)[:600])
assert [site.site for site in proper_prior.problems] == ["y"]
assert any(cause.kind == "tail_overflow" for cause in proper_prior.problems[0].causes)

# %% [markdown]
# Trap 2: the float32 tail of numpyro's truncated normal. Use robusthmc's.

# %% tags=["check-output"]
both_fixed = robusthmc.check(
    model, group, y, spread_prior=lambda: dist.HalfNormal(5.0), likelihood=TruncatedNormal, points=10
)
print(str(both_fixed).splitlines()[-1])
assert both_fixed.clean

# %% [markdown]
# Where each version of the model breaks: the share of the doctor's points at which a site's term or gradient is not finite.

# %%
versions = {
    "as written": as_written,
    "proper spread prior": proper_prior,
    "robusthmc TruncatedNormal": both_fixed,
}
sites = [site.site for site in as_written.sites]
fig, ax = plt.subplots(figsize=(7, 3))
for offset, (name, report) in enumerate(versions.items()):
    shares = {site.site: site.nonfinite_share for site in report.sites}
    ax.barh(
        [i + 0.25 * offset for i in range(len(sites))], [shares[s] for s in sites], height=0.25, label=name
    )
ax.set_yticks([i + 0.25 for i in range(len(sites))], sites)
ax.set(xlabel="share of points with a non-finite term or gradient", xlim=(0, 1))
ax.legend(fontsize=8)
plt.tight_layout()
plt.show()

# %% [markdown]
# ## Take away
# - Run the doctor on a new model before the first `mcmc.run`: it costs seconds.
# - It reports per site, with the latents involved and the fix, the way the guarded kernels'
#   errors do (`robusthmc check my_model.py:model` from a shell).
