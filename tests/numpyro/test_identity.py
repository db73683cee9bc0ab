"""On healthy models the guarded kernels draw exactly what numpyro's draw, for the same key."""

import jax
import numpy as np
import numpyro.infer
import pytest
from numpyro.infer import MCMC

import robusthmc.numpyro as rnp
from robusthmc.examples import logistic_data
from robusthmc.numpyro.examples import (
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


def assert_same_draws(stock, guarded):
    for site, draws in stock.get_samples(group_by_chain=True).items():
        np.testing.assert_array_equal(draws, guarded.get_samples(group_by_chain=True)[site], err_msg=site)
    stock_fields, guarded_fields = stock.get_extra_fields(), guarded.get_extra_fields()
    for field in ("num_steps", "accept_prob"):
        np.testing.assert_array_equal(stock_fields[field], guarded_fields[field], err_msg=field)
    # No numerical failure on a healthy model after warmup, so the divergences are numpyro's.
    assert not guarded_fields["nonfinite"].any()
    np.testing.assert_array_equal(stock_fields["diverging"], guarded_fields["diverging"])


@pytest.mark.timeout(300)
@pytest.mark.parametrize("chain_method", ["sequential", "vectorized", "parallel"])
@pytest.mark.parametrize("name", sorted(MODELS))
def test_nuts_draws_are_bit_identical(name, chain_method, dtype):
    model, args, kwargs = MODELS[name]
    stock = run(numpyro.infer.NUTS, model, args, kwargs, chain_method)
    guarded = run(rnp.NUTS, model, args, kwargs, chain_method)
    assert_same_draws(stock, guarded)


@pytest.mark.timeout(300)
@pytest.mark.parametrize("chain_method", ["sequential", "vectorized", "parallel"])
def test_hmc_draws_are_bit_identical(chain_method, dtype):
    model, args, kwargs = MODELS["eight_schools_noncentered"]
    stock = run(numpyro.infer.HMC, model, args, kwargs, chain_method, trajectory_length=1.5)
    guarded = run(rnp.HMC, model, args, kwargs, chain_method, trajectory_length=1.5)
    assert_same_draws(stock, guarded)


@pytest.mark.timeout(300)
@pytest.mark.parametrize(
    "options",
    [
        {"dense_mass": True},
        {"find_heuristic_step_size": True},
        {"forward_mode_differentiation": True},
        {"max_tree_depth": (4, 6), "target_accept_prob": 0.9},
        {"init_strategy": numpyro.infer.init_to_median},
    ],
    ids=lambda options: ",".join(options),
)
def test_nuts_options_keep_draws_identical(options):
    # Logistic regression: 150 warmup draws are too few for a dense mass matrix on
    # eight schools (its step size collapses to 1e-14; the guard rightly refuses it).
    model, args, kwargs = MODELS["logistic_regression"]
    stock = run(numpyro.infer.NUTS, model, args, kwargs, "vectorized", **options)
    guarded = run(rnp.NUTS, model, args, kwargs, "vectorized", **options)
    assert_same_draws(stock, guarded)
