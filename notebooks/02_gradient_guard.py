# %% [markdown]
# # 2. The gradient guard: numerical failures are not divergences
#
# NUTS calls a transition "divergent" when the energy error explodes: a geometric problem
# (a funnel, a too-large step). NumPyro also maps a NaN energy to +inf, so a log density that is
# *wrong* in part of the space shows up as "divergences" too. The guard counts these numerical
# failures apart (`nonfinite`), names their site and cause, and stops by policy.

# %%
import warnings

import matplotlib.pyplot as plt

# %config InlineBackend.figure_format = "png"
plt.rcParams["figure.dpi"] = 80
warnings.filterwarnings("ignore", category=DeprecationWarning)

import jax
import jax.numpy as jnp
import numpyro
import numpyro.distributions as dist
from numpyro.infer import MCMC

import robusthmc
from robusthmc import Guard
from robusthmc.lessons.data import truncated_regression_data
from robusthmc.lessons.numpyro import eight_schools_centered, truncated_regression
from robusthmc.numpyro import NUTS

# %% [markdown]
# ## Geometric divergences, no numerical failure: eight schools, centred

# %% tags=["check-output"]
# (With some seeds a trajectory flings tau to ~1e20, where HalfCauchy's float32 log density
# overflows: that one is counted as numerical, rightly. Seed 3 shows the geometry alone.)
schools = MCMC(NUTS(eight_schools_centered), num_warmup=500, num_samples=500, progress_bar=False)
schools.run(jax.random.key(3), extra_fields=("diverging",))
fields = schools.get_extra_fields()
print(
    "divergences:",
    int(fields["diverging"].sum()) > 0,
    "- non-finite transitions:",
    int(fields["nonfinite"].sum()),
)
assert fields["diverging"].sum() > 0 and fields["nonfinite"].sum() == 0

# %% [markdown]
# ## Numerical failures, not geometry: the float32 truncated regression
# numpyro's `TruncatedNormal` loses its normalising constant 13 standard deviations into the
# tail in float32; the posterior goes to 19. The guard warns, names the site and the fix.

# %% tags=["check-output"]
with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    regression = MCMC(NUTS(truncated_regression), num_warmup=500, num_samples=500, progress_bar=False)
    regression.run(jax.random.key(0), truncated_regression_data(), extra_fields=("diverging",))
(warning,) = [w.message for w in caught if isinstance(w.message, robusthmc.NonFiniteWarning)]
fixes = [
    line.strip() for line in str(warning).splitlines() if "tail" in line and line.strip().startswith("fix")
]
print(fixes[0][:120])
fields = regression.get_extra_fields()
print("non-finite transitions while sampling:", int(fields["nonfinite"].sum()) > 0)
assert fields["nonfinite"].sum() > 0 and fixes

# %% [markdown]
# Where each kind happened: divergences (geometry) and non-finite transitions (numerics) in the (mu, sigma) plane.

# %%
draws = regression.get_samples()
ratio = draws["mu"] / draws["sigma"]
fig, ax = plt.subplots(figsize=(5, 3.5))
ax.scatter(draws["mu"], draws["sigma"], s=4, c="lightgray", label="draws")
ax.scatter(
    draws["mu"][fields["diverging"]],
    draws["sigma"][fields["diverging"]],
    s=10,
    c="tab:orange",
    label="divergent",
)
ax.scatter(
    draws["mu"][fields["nonfinite"]],
    draws["sigma"][fields["nonfinite"]],
    s=10,
    c="tab:red",
    marker="x",
    label="non-finite",
)
ax.set(xlabel="mu", ylabel="sigma", title="float32 truncated regression")
ax.legend()
plt.show()
print(f"lowest mu/sigma reached: {float(ratio.min()):.0f} (the float64 posterior reaches about -19)")


# %% [markdown]
# ## The policies
# `Guard(on_nonfinite="warn")` (default) rejects and counts; `"raise"` stops at the first failure
# in sampling with a `NonFiniteError` carrying the diagnosis and the draws so far (in warmup, only
# failures at the adapted step size count, not adaptation's probes); `"ignore"` is silent.


# %% tags=["check-output"]
def walled(limit=1.0):
    x = numpyro.sample("x", dist.Normal(0.0, 1.0))
    numpyro.factor("wall", jnp.where(x > limit, jnp.nan, 0.0))


raising = MCMC(
    NUTS(walled, guard=Guard(on_nonfinite="raise")), num_warmup=0, num_samples=2000, progress_bar=False
)
try:
    raising.run(jax.random.key(3), init_params={"x": jnp.array(0.0)})
except robusthmc.NonFiniteError as error:
    assert error.diagnosis is not None
    print(str(error).splitlines()[0])
    print(
        "draws kept:",
        error.samples["x"].shape[1] == error.diagnosis.iteration,
        "- site:",
        error.diagnosis.sites[0].site,
    )
    assert error.diagnosis.sites[0].site == "wall"

# %% [markdown]
# ## Stuck chains and step-size collapse
# A chain whose every proposal fails cannot move: after `max_consecutive_failures` it stops.
# HMC with a collapsing step size would take `trajectory_length / step_size` leapfrog steps —
# docs/lessons.md saw 2,147,483,647 — the guard stops it at `min_step_size` and caps the steps.

# %% tags=["check-output"]
stuck = MCMC(
    NUTS(walled, step_size=5.0, adapt_step_size=False, guard=Guard(max_consecutive_failures=20)),
    num_warmup=0,
    num_samples=1000,
    progress_bar=False,
)
try:
    stuck.run(jax.random.key(0), init_params={"x": jnp.array(0.99)}, limit=1.0)
except robusthmc.StuckChainError as error:
    print(str(error).splitlines()[0])
collapse = MCMC(
    NUTS(eight_schools_centered, guard=Guard(min_step_size=1.0)),
    num_warmup=100,
    num_samples=10,
    progress_bar=False,
)
try:
    collapse.run(jax.random.key(0))
except robusthmc.StepSizeCollapseError as error:
    print(str(error).splitlines()[0])
    assert "below Guard.min_step_size=1" in str(error)

# %% [markdown]
# ## Take away
# - "Divergences" can be numerics: look at `nonfinite` before reparameterising.
# - Decide the policy: warn while exploring, raise in production pipelines.
# - Every stop keeps the draws collected so far (`err.samples`) and the diagnosis (`err.diagnosis`).
