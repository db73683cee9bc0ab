"""Swap-in conformance: what breaks when a user changes the import (issue 23).

Each test is a small model of a class of Pyro's own MCMC tests that failed
with the guarded kernels swapped in.
"""

import inspect
import subprocess
import sys
import textwrap
import warnings

import pyro
import pyro.distributions as dist
import pyro.infer
import pytest
import torch
from pyro.infer import MCMC
from pyro.infer.autoguide.initialization import init_to_median
from pyro.infer.mcmc.util import initialize_model
from torch.distributions import biject_to, constraints

import robusthmc
import robusthmc.pyro as rp

pytestmark = pytest.mark.timeout(300)


def empty_model():
    return torch.tensor(1)


@pytest.mark.parametrize("kernel_class", [rp.HMC, rp.NUTS])
@pytest.mark.parametrize("jit_compile", [False, True])
def test_model_with_no_latent_site_runs(kernel_class, jit_compile):
    initial_params, potential_fn, transforms, _ = initialize_model(empty_model)
    kernel = kernel_class(potential_fn=potential_fn, transforms=transforms, jit_compile=jit_compile)
    stages = []
    mcmc = MCMC(
        kernel,
        num_samples=5,
        warmup_steps=5,
        initial_params=initial_params,
        hook_fn=lambda kernel, samples, stage, i: stages.append(stage),
        disable_progbar=True,
    )
    mcmc.run()
    assert mcmc.get_samples() == {}
    assert stages == ["Warmup"] * 5 + ["Sample"] * 5
    assert mcmc.diagnostics()["nonfinite"] == {"chain 0": []}


def test_permanent_swap_of_pyros_names():
    script = textwrap.dedent(
        """
        import pyro, pyro.distributions as dist, pyro.infer, pyro.infer.mcmc
        import robusthmc.pyro as rp
        pyro.infer.NUTS, pyro.infer.HMC = rp.NUTS, rp.HMC
        pyro.infer.mcmc.NUTS, pyro.infer.mcmc.HMC = rp.NUTS, rp.HMC

        def model():
            pyro.sample("x", dist.Normal(0.0, 1.0))

        for kernel in (pyro.infer.NUTS(model), pyro.infer.mcmc.HMC(model, num_steps=3)):
            assert isinstance(kernel, (rp.NUTS, rp.HMC))
            mcmc = pyro.infer.MCMC(kernel, num_samples=5, warmup_steps=5, disable_progbar=True)
            mcmc.run()
            assert mcmc.get_samples()["x"].shape == (5,)
        print("ok")
        """
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=240)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip() == "ok"


def small(data):
    loc = pyro.sample("loc", dist.Normal(0.0, 1.0).expand([2]).to_event(1))
    scale = pyro.sample("scale", dist.LogNormal(0.0, 0.5))
    with pyro.plate("data", len(data)):
        pyro.sample("obs", dist.Normal(loc.sum(), scale), obs=data)


#: One value other than the default for every argument of Pyro's kernels.
ARGUMENTS = {
    "step_size": [0.1, None],  # None: Pyro searches for one (its own tests do this)
    "trajectory_length": [1.0],
    "num_steps": [5],
    "adapt_step_size": [False],
    "adapt_mass_matrix": [False],
    "full_mass": [True, [("loc",)]],
    "use_multinomial_sampling": [False],
    "transforms": [{"loc": biject_to(constraints.real), "scale": biject_to(constraints.positive)}],
    "max_plate_nesting": [1],
    "jit_compile": [True],
    "jit_options": [{"check_trace": False}],
    "ignore_jit_warnings": [True],
    # Below the default: above it HMC's adapted step size shrinks, and its trajectory (of a
    # fixed length) takes thousands of leapfrog steps a transition.
    "target_accept_prob": [0.6],
    "init_strategy": [init_to_median],
    "min_stepsize": [1e-4],
    "max_stepsize": [0.5],
    "max_tree_depth": [4],
}
#: Tested elsewhere: every test passes a model, and test_samplers runs potential_fn kernels.
COVERED_ELSEWHERE = {"model", "potential_fn"}
#: jit_options and ignore_jit_warnings only act together with jit_compile.
TOGETHER = {"jit_options": {"jit_compile": True}, "ignore_jit_warnings": {"jit_compile": True}}
CASES = [
    (kernel, name, value)
    for kernel in ("NUTS", "HMC")
    for name in inspect.signature(getattr(pyro.infer, kernel)).parameters
    if name not in COVERED_ELSEWHERE
    for value in ARGUMENTS.get(name, [None])
]


def test_every_argument_of_pyros_kernels_is_exercised():
    missing = [(kernel, name) for kernel, name, _ in CASES if name not in ARGUMENTS]
    assert not missing, f"arguments of Pyro's kernels with no test value: {missing}"


@pytest.mark.parametrize(
    "kernel, name, value", CASES, ids=[f"{kernel}-{name}-{n}" for n, (kernel, name, _) in enumerate(CASES)]
)
def test_every_constructor_argument_keeps_draws_identical(kernel, name, value):
    data = torch.tensor([0.3, -1.2, 2.1, 0.8, 1.5])
    options = {name: value, **TOGETHER.get(name, {})}
    if kernel == "HMC" and options.get("step_size", 1.0) is None:
        options["trajectory_length"] = 1.0  # HMC's num_steps needs a step size
    if kernel == "HMC" and "num_steps" not in options and "trajectory_length" not in options:
        options["num_steps"] = 4

    def run_with(kernel_class):
        pyro.set_rng_seed(3)
        mcmc = MCMC(kernel_class(small, **options), num_samples=10, warmup_steps=20, disable_progbar=True)
        mcmc.run(data)
        return mcmc

    stock = run_with(getattr(pyro.infer, kernel))
    with warnings.catch_warnings():
        # After 20 warmup steps HMC's trajectories still overflow now and then in sampling, which
        # the guard rightly warns about; what is tested here is that the draws are Pyro's.
        warnings.simplefilter("ignore", robusthmc.NonFiniteWarning)
        guarded = run_with(getattr(rp, kernel))
    for site, draws in stock.get_samples().items():
        torch.testing.assert_close(guarded.get_samples()[site], draws, rtol=0, atol=0, msg=site)
    # Pyro counts a non-finite transition as a divergence; the guard counts it apart.
    divergences, nonfinite = (guarded.diagnostics()[key]["chain 0"] for key in ("divergences", "nonfinite"))
    assert not set(divergences) & set(nonfinite)
    assert stock.diagnostics()["divergences"]["chain 0"] == sorted(divergences + nonfinite)
