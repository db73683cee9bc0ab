"""On healthy models the guarded kernels draw exactly what numpyro's draw, for the same key."""

import inspect
import warnings

import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist
import numpyro.infer
import pytest
from numpyro.infer import MCMC
from numpyro.infer.hmc_util import euclidean_kinetic_energy

import robusthmc
import robusthmc.numpyro as rnp
from robusthmc.lessons.data import logistic_data
from robusthmc.lessons.numpyro import (
    eight_schools_centered,
    eight_schools_noncentered,
    logistic_regression,
    turing,
)

LOGISTIC = logistic_data(num_rows=500, num_features=5, seed=3)
MODELS = {
    "eight_schools_centered": (eight_schools_centered, (), {}),
    "eight_schools_noncentered": (eight_schools_noncentered, (), {}),
    "logistic_regression": (logistic_regression, (LOGISTIC.X, LOGISTIC.y), {}),
    "turing_high_none": (turing, (), {"high": None}),
}


def run(kernel_class, model, args, kwargs, chain_method, **kernel_kwargs):
    # Fresh copies of the data: jax 0.9 reuses a NumPy array's float32 buffer after
    # jax_enable_x64 is switched on (numpyro 0.20's environment; a jax bug, not ours).
    args = tuple(np.array(arg) if isinstance(arg, np.ndarray) else arg for arg in args)
    mcmc = MCMC(
        kernel_class(model, **kernel_kwargs),
        num_warmup=150,
        num_samples=150,
        num_chains=2,
        chain_method=chain_method,
        progress_bar=False,
    )
    mcmc.run(jax.random.key(7), *args, extra_fields=("num_steps", "accept_prob"), **kwargs)
    return mcmc


def assert_same_draws(stock, guarded, *, healthy=True):
    for site, draws in stock.get_samples(group_by_chain=True).items():
        np.testing.assert_array_equal(draws, guarded.get_samples(group_by_chain=True)[site], err_msg=site)
    stock_fields, guarded_fields = stock.get_extra_fields(), guarded.get_extra_fields()
    for field in ("num_steps", "accept_prob"):
        np.testing.assert_array_equal(stock_fields[field], guarded_fields[field], err_msg=field)
    if healthy:  # no numerical failure after warmup
        assert not guarded_fields["nonfinite"].any()
    # numpyro counts a non-finite transition as a divergence; the guard counts it apart.
    assert not (guarded_fields["diverging"] & guarded_fields["nonfinite"]).any()
    np.testing.assert_array_equal(
        stock_fields["diverging"], guarded_fields["diverging"] | guarded_fields["nonfinite"]
    )


@pytest.mark.timeout(300)
@pytest.mark.parametrize("chain_method", ["sequential", "vectorized", "parallel"])
@pytest.mark.parametrize("name", sorted(MODELS))
def test_nuts_draws_are_bit_identical(name, chain_method, dtype):
    model, args, kwargs = MODELS[name]
    stock = run(numpyro.infer.NUTS, model, args, kwargs, chain_method)
    guarded = run(rnp.NUTS, model, args, kwargs, chain_method)
    # The centred eight schools is a funnel: a trajectory may fly out until it overflows
    # (in float32 with jax 0.9, once in this run), which numpyro counts as a divergence.
    assert_same_draws(stock, guarded, healthy=name != "eight_schools_centered")


@pytest.mark.timeout(300)
@pytest.mark.parametrize("chain_method", ["sequential", "vectorized", "parallel"])
def test_hmc_draws_are_bit_identical(chain_method, dtype):
    model, args, kwargs = MODELS["eight_schools_noncentered"]
    stock = run(numpyro.infer.HMC, model, args, kwargs, chain_method, trajectory_length=1.5)
    guarded = run(rnp.HMC, model, args, kwargs, chain_method, trajectory_length=1.5)
    assert_same_draws(stock, guarded)


def small(data):
    loc = numpyro.sample("loc", dist.Normal(0.0, 1.0).expand([2]))
    scale = numpyro.sample("scale", dist.LogNormal(0.0, 0.5))
    numpyro.sample("obs", dist.Normal(loc.sum(), scale), obs=data)


def kinetic_energy(inverse_mass_matrix, r):
    return euclidean_kinetic_energy(inverse_mass_matrix, r)


#: One value other than the default for every argument of numpyro's kernels.
ARGUMENTS = {
    "kinetic_fn": [kinetic_energy],
    "step_size": [0.1],
    "inverse_mass_matrix": [jnp.array([1.0, 0.5, 2.0])],
    "adapt_step_size": [False],
    "adapt_mass_matrix": [False],
    "dense_mass": [True, [("loc",)]],
    "target_accept_prob": [0.95],
    "num_steps": [7],
    "trajectory_length": [1.5],
    "max_tree_depth": [(4, 6)],
    "init_strategy": [numpyro.infer.init_to_median],
    "find_heuristic_step_size": [True],
    "forward_mode_differentiation": [True],
    "regularize_mass_matrix": [False],
}
#: Tested elsewhere: every test passes a model, and test_samplers runs potential_fn kernels.
COVERED_ELSEWHERE = {"model", "potential_fn"}
CASES = [
    (kernel, name, value)
    for kernel in ("NUTS", "HMC")
    for name in inspect.signature(getattr(numpyro.infer, kernel)).parameters
    if name not in COVERED_ELSEWHERE
    for value in ARGUMENTS.get(name, [None])
]


def test_every_argument_of_numpyros_kernels_is_exercised():
    missing = [(kernel, name) for kernel, name, _ in CASES if name not in ARGUMENTS]
    assert not missing, f"arguments of numpyro's kernels with no test value: {missing}"


@pytest.mark.timeout(300)
@pytest.mark.parametrize(
    "kernel, name, value", CASES, ids=[f"{kernel}-{name}-{n}" for n, (kernel, name, _) in enumerate(CASES)]
)
def test_every_constructor_argument_keeps_draws_identical(kernel, name, value):
    data = jnp.array([0.3, -1.2, 2.1, 0.8, 1.5])

    def run_with(kernel_class):
        mcmc = MCMC(
            kernel_class(small, **{name: value}),
            num_warmup=40,
            num_samples=40,
            progress_bar=False,
        )
        mcmc.run(jax.random.key(7), data, extra_fields=("num_steps", "accept_prob"))
        return mcmc

    with warnings.catch_warnings():
        # numpyro warns that num_steps and a trajectory length together fix the step size.
        warnings.filterwarnings("ignore", "If both `num_steps` and `trajectory_length`")
        # After 40 warmup transitions some of HMC's trajectories still overflow in sampling, which
        # the guard rightly warns about; what is tested here is that the draws are numpyro's.
        warnings.simplefilter("ignore", robusthmc.NonFiniteWarning)
        guarded = run_with(getattr(rnp, kernel))
    assert_same_draws(run_with(getattr(numpyro.infer, kernel)), guarded, healthy=False)
