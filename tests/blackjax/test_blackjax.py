"""robusthmc.blackjax against BlackJAX: the same draws where healthy, named failures where not."""

import blackjax
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import robusthmc
from robusthmc import Guard
from robusthmc import blackjax as rb
from robusthmc.jax import check_position, guarded_logdensity

pytestmark = pytest.mark.timeout(300)

SCHOOLS_Y = jnp.array([28.0, 8.0, -3.0, 7.0, -1.0, 1.0, 18.0, 12.0])
SCHOOLS_SIGMA = jnp.array([15.0, 10.0, 16.0, 11.0, 9.0, 11.0, 10.0, 18.0])


def eight_schools(p):
    tau = jnp.exp(p["log_tau"])
    theta = p["mu"] + tau * p["theta_tilde"]
    return (
        jax.scipy.stats.norm.logpdf(p["mu"], 0.0, 5.0)
        + jax.scipy.stats.cauchy.logpdf(tau, 0.0, 5.0)
        + p["log_tau"]
        + jnp.sum(jax.scipy.stats.norm.logpdf(p["theta_tilde"]))
        + jnp.sum(jax.scipy.stats.norm.logpdf(SCHOOLS_Y, theta, SCHOOLS_SIGMA))
    )


SCHOOLS_START = {"mu": jnp.array(0.0), "log_tau": jnp.array(0.0), "theta_tilde": jnp.zeros(8)}


def logistic_logdensity():
    key_x, key_w, key_y = jax.random.split(jax.random.key(3), 3)
    x = jax.random.normal(key_x, (500, 5))
    y = jax.random.bernoulli(key_y, jax.nn.sigmoid(x @ jax.random.normal(key_w, (5,))))

    def logdensity(w):
        logits = x @ w
        return jnp.sum(jax.scipy.stats.norm.logpdf(w)) + jnp.sum(
            jnp.where(y, jax.nn.log_sigmoid(logits), jax.nn.log_sigmoid(-logits))
        )

    return logdensity, jnp.zeros(5)


def standard_normal(x):
    return -0.5 * jnp.sum(x**2)


def run(algorithm, state, num_steps, seed=1):
    """The stacked states and infos of ``num_steps`` steps from ``state``."""
    keys = jax.random.split(jax.random.key(seed), num_steps)

    def one_step(state, key):
        state, info = algorithm.step(key, state)
        return state, (state, info)

    return jax.jit(lambda s: jax.lax.scan(one_step, s, keys)[1])(state)


def assert_trees_equal(a, b):
    for left, right in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
        np.testing.assert_array_equal(np.asarray(left), np.asarray(right))


MODELS = {"eight_schools": (eight_schools, SCHOOLS_START), "logistic": logistic_logdensity()}


@pytest.mark.parametrize("model", sorted(MODELS))
@pytest.mark.parametrize("name", ["nuts", "hmc"])
def test_draws_are_blackjax_bit_for_bit(model, name):
    logdensity, start = MODELS[model]
    size = sum(np.size(leaf) for leaf in jax.tree.leaves(start))
    args = (logdensity, 0.1, jnp.ones(size)) + ((12,) if name == "hmc" else ())
    stock, guarded = getattr(blackjax, name)(*args), getattr(rb, name)(*args)
    stock_states, stock_infos = run(stock, stock.init(start), 300)
    states, infos = run(guarded, guarded.init(start), 300)
    assert_trees_equal(states, stock_states)
    assert_trees_equal(infos[:-1], stock_infos)
    assert not infos.nonfinite.any()


def test_window_adaptation_is_blackjax_bit_for_bit():
    logdensity, start = MODELS["eight_schools"]
    key = jax.random.key(4)
    (stock_state, stock_parameters), _ = blackjax.window_adaptation(blackjax.nuts, logdensity).run(
        key, start, 300
    )
    (state, parameters), info = rb.window_adaptation(rb.nuts, logdensity).run(key, start, 300)
    assert_trees_equal(state, stock_state)
    assert_trees_equal(parameters, stock_parameters)
    # The user's adaptation_info_fn sees the guarded info, and gets back what it returned.
    assert info.info.nonfinite.shape == (300,)
    # blackjax.nuts is accepted too, and runs guarded.
    (same_state, _), _ = rb.window_adaptation(blackjax.nuts, logdensity).run(key, start, 300)
    assert_trees_equal(same_state, stock_state)


def nan_beyond(x):
    """A standard normal whose log density is NaN beyond 1.5: a hole BlackJAX calls a divergence."""
    return jnp.where(x[0] > 1.5, jnp.nan, standard_normal(x))


def test_a_numerical_failure_is_nonfinite_not_divergent():
    stock = blackjax.nuts(nan_beyond, 0.5, jnp.ones(1))
    guarded = rb.nuts(nan_beyond, 0.5, jnp.ones(1))
    _, stock_infos = run(stock, stock.init(jnp.zeros(1)), 400)
    states, infos = run(guarded, guarded.init(jnp.zeros(1)), 400)
    assert int(infos.nonfinite.sum()) > 10
    # BlackJAX counts each such transition as divergent; the guard counts it apart.
    np.testing.assert_array_equal(np.asarray(stock_infos.is_divergent), np.asarray(infos.nonfinite))
    assert not infos.is_divergent.any()
    assert float(states.position.max()) <= 1.5


def plus_inf_beyond(x):
    """A log density that is +inf beyond 3: BlackJAX accepts such a proposal and stays there."""
    return jnp.where(x[0] > 3.0, jnp.inf, standard_normal(x))


@pytest.mark.parametrize("name", ["nuts", "hmc"])
def test_a_plus_inf_log_density_is_rejected(name):
    args = (plus_inf_beyond, 1.0, jnp.ones(1)) + ((8,) if name == "hmc" else ())
    stock, guarded = getattr(blackjax, name)(*args), getattr(rb, name)(*args)
    stock_states, _ = run(stock, stock.init(jnp.zeros(1)), 500)
    states, infos = run(guarded, guarded.init(jnp.zeros(1)), 500)
    assert float(stock_states.position.max()) > 3.0  # the bug the guard closes
    assert float(states.position.max()) <= 3.0
    assert infos.nonfinite.any() and not (infos.nonfinite & infos.is_divergent).any()


@pytest.mark.parametrize(
    ("position", "named"),
    [
        ({"mu": jnp.array(0.0), "tau": jnp.array(-1.0)}, "position['tau']"),
        ((jnp.array(0.0), jnp.array(-1.0)), "position[1]"),
        ({"mu": jnp.array(jnp.nan), "tau": jnp.array(1.0)}, "position['mu']"),
    ],
)
def test_init_at_a_nonfinite_start_names_the_coordinate(position, named):
    def logdensity(p):
        mu, tau = (p["mu"], p["tau"]) if isinstance(p, dict) else p
        return -0.5 * mu**2 + jnp.log(tau) - tau

    with pytest.raises(robusthmc.InitializationError) as raised:
        rb.nuts(logdensity, 0.1, jnp.ones(2)).init(position)
    first_line = str(raised.value).splitlines()[0]
    assert named in first_line and "fix:" in first_line
    if np.isfinite(np.asarray(jax.tree.leaves(position), dtype=float)).all():
        assert raised.value.diagnosis.source == "logdensity_fn"
    else:  # a start that is not finite itself is a one-line mistake
        assert (
            first_line.startswith(f"{named} is not finite (nan)") and len(str(raised.value).splitlines()) == 1
        )
    with pytest.raises(robusthmc.InitializationError, match=r"position\["):
        rb.window_adaptation(rb.hmc, logdensity, num_integration_steps=5).run(jax.random.key(0), position, 10)


def test_init_inside_jit_and_vmap_does_not_raise_and_works():
    algo = rb.nuts(standard_normal, 0.5, jnp.ones(2))
    starts = jnp.arange(8.0).reshape(4, 2)
    states = jax.jit(jax.vmap(algo.init))(starts)
    keys = jax.random.split(jax.random.key(0), 4)
    new_states, infos = jax.vmap(algo.step)(keys, states)
    assert infos.nonfinite.shape == (4,) and np.isfinite(np.asarray(new_states.position)).all()


def test_check_position_and_the_guarded_log_density_stand_alone():
    check_position(standard_normal, jnp.zeros(3))
    with pytest.raises(robusthmc.InitializationError, match=r"position\[2\]"):
        check_position(lambda x: jnp.sum(jnp.sqrt(x)), jnp.array([1.0, 2.0, 0.0]))
    guarded = guarded_logdensity(lambda x: jnp.log(x))
    value, gradient = jax.value_and_grad(guarded)(2.0)
    assert (float(value), float(gradient)) == (float(jnp.log(2.0)), 0.5)
    assert np.isnan(float(jax.grad(guarded)(-1.0)))


def test_a_user_exception_propagates():
    def broken(x):
        raise ZeroDivisionError("the user's own bug")

    with pytest.raises(ZeroDivisionError, match="the user's own bug"):
        rb.nuts(broken, 0.1, jnp.ones(1)).init(jnp.zeros(1))


def nan_everywhere_but_the_start(x):
    return jnp.where(jnp.abs(x[0]) < 1e-30, standard_normal(x), jnp.nan)


def test_window_adaptation_raises_when_the_step_size_collapses():
    warmup = rb.window_adaptation(rb.nuts, nan_everywhere_but_the_start)
    with pytest.raises(robusthmc.StepSizeCollapseError) as raised:
        warmup.run(jax.random.key(0), jnp.zeros(1), 300)
    assert "Guard.min_step_size" in str(raised.value).splitlines()[0]
    # BlackJAX runs to a step size of nothing, silently.
    (_, parameters), _ = blackjax.window_adaptation(blackjax.nuts, nan_everywhere_but_the_start).run(
        jax.random.key(0), jnp.zeros(1), 300
    )
    assert float(parameters["step_size"]) < 1e-8


def test_window_adaptation_raises_for_a_failure_at_the_adapted_step_size():
    warmup = rb.window_adaptation(rb.nuts, nan_beyond, guard=Guard(on_nonfinite="raise"))
    with pytest.raises(robusthmc.NonFiniteError) as raised:
        warmup.run(jax.random.key(0), jnp.zeros(1), 300)
    assert "jnp.where(x[0] > 1.5, jnp.nan" in str(raised.value).splitlines()[0]
    # The default policy counts warmup failures silently (as the NumPyro and Pyro kernels do).
    rb.window_adaptation(rb.nuts, nan_beyond).run(jax.random.key(0), jnp.zeros(1), 300)


def sampled(logdensity, start, num_steps=400, num_chains=None):
    algo = rb.nuts(logdensity, 0.5, jnp.ones(jnp.size(start)))
    if num_chains is None:
        return run(algo, algo.init(start), num_steps)
    states = jax.vmap(algo.init)(jnp.stack([start] * num_chains))
    keys = jax.random.split(jax.random.key(1), (num_steps, num_chains))

    def one_step(states, keys):
        states, infos = jax.vmap(algo.step)(keys, states)
        return states, (states, infos)

    return jax.lax.scan(one_step, states, keys)[1]


def test_settle_warns_with_the_failing_point():
    states, infos = sampled(nan_beyond, jnp.zeros(1))
    with pytest.warns(robusthmc.NonFiniteWarning) as warned:
        rb.settle(states, infos, logdensity_fn=nan_beyond)
    first_line = str(warned[0].message).splitlines()[0]
    assert first_line.startswith("the logdensity_fn is not finite here") and "fix:" in first_line
    assert "rejected" in first_line


def test_settle_raises_with_the_draws_before_the_failure():
    states, infos = sampled(nan_beyond, jnp.zeros(1))
    first = int(np.argmax(np.asarray(infos.nonfinite)))
    with pytest.raises(robusthmc.NonFiniteError) as raised:
        rb.settle(states, infos, Guard(on_nonfinite="raise"), logdensity_fn=nan_beyond)
    assert f"iteration {first}" in str(raised.value).splitlines()[0]
    np.testing.assert_array_equal(raised.value.samples["position"], np.asarray(states.position[:first]))
    assert raised.value.diagnosis.position["position"][0] > 1.5


def test_settle_stops_a_stuck_chain_and_reads_chains_on_an_axis():
    states, infos = sampled(nan_everywhere_but_the_start, jnp.zeros(1), num_steps=60, num_chains=2)
    with pytest.raises(robusthmc.StuckChainError, match="chain 0 stuck"):
        rb.settle(states, infos, chain_axis=1)
    with pytest.raises(TypeError, match="chain_axis"):
        rb.settle(states, infos, chain_axis="1")
    states, infos = sampled(standard_normal, jnp.zeros(1), num_chains=3)
    rb.settle(states, infos, Guard(on_nonfinite="raise"), chain_axis=1)


def test_window_adaptation_names_an_algorithm_it_does_not_guard():
    with pytest.raises(TypeError, match=r"guards blackjax.nuts, blackjax.hmc"):
        rb.window_adaptation(blackjax.mala, standard_normal)
    with pytest.raises(robusthmc.GuardOptionError, match="guard="):
        rb.nuts(standard_normal, 0.1, jnp.ones(1), guard="raise")


def test_a_numpyro_model_under_blackjax_names_its_site():
    import numpyro
    import numpyro.distributions as dist
    from numpyro.infer.util import initialize_model

    def model():
        tau = numpyro.sample("tau", dist.HalfNormal(1.0))
        numpyro.sample("y", dist.Normal(0.0, tau), obs=jnp.array([0.3, -0.2]))

    init, potential_fn, *_ = initialize_model(jax.random.key(0), model, dynamic_args=False)

    def logdensity(position):
        return -potential_fn(position)

    warmup = rb.window_adaptation(rb.nuts, logdensity)
    (state, parameters), _ = warmup.run(jax.random.key(1), init.z, 200)
    assert set(state.position) == {"tau"}
    # A start the model cannot evaluate (tau = exp(1e3) overflows): the error names the site.
    with pytest.raises(robusthmc.InitializationError) as raised:
        rb.nuts(logdensity, **parameters).init({"tau": jnp.array(1e3)})
    assert "position['tau']" in str(raised.value).splitlines()[0]


@pytest.mark.parametrize(
    "option",
    [
        {"max_init_attempts": 7},
        {"numerical_exceptions": (ArithmeticError,)},
        {"max_steps_per_transition": 10},
    ],
    ids=str,
)
def test_an_option_blackjax_does_not_use_is_refused(option):
    (name,) = option
    guard = Guard(**option)
    match = rf"Guard\({name}=.*does nothing with the blackjax backend"
    with pytest.raises(robusthmc.GuardOptionError, match=match):
        rb.nuts(standard_normal, 0.1, jnp.ones(1), guard=guard)
    with pytest.raises(robusthmc.GuardOptionError, match=match):
        rb.window_adaptation(rb.nuts, standard_normal, guard=guard)


def test_an_eager_step_applies_the_guard_as_it_goes():
    algo = rb.nuts(nan_beyond, 0.5, jnp.ones(1), guard=Guard(on_nonfinite="raise"))
    state = algo.init(jnp.zeros(1))
    key = jax.random.key(1)
    with pytest.raises(robusthmc.NonFiniteError) as raised:
        for _ in range(400):
            key, step_key = jax.random.split(key)
            state, _ = algo.step(step_key, state)
    assert "jnp.where(x[0] > 1.5, jnp.nan" in str(raised.value).splitlines()[0]
    stuck = rb.nuts(nan_everywhere_but_the_start, 0.5, jnp.ones(1), guard=Guard(max_consecutive_failures=3))
    state = stuck.init(jnp.zeros(1))
    with pytest.raises(robusthmc.StuckChainError, match="iteration 2"):
        for k in range(5):
            state, _ = stuck.step(jax.random.key(k), state)


def test_an_improper_posterior_is_named_at_the_collapse():
    """A flat log density: the chain drifts without bound until the step size collapses."""

    def flat(p):
        return 0.0 * jnp.sum(p["b"])

    with pytest.raises(robusthmc.StepSizeCollapseError) as raised:
        rb.window_adaptation(rb.nuts, flat).run(jax.random.key(0), {"b": jnp.zeros(2)}, 500)
    first_line = str(raised.value).splitlines()[0]
    assert "position['b'] drifts to" in first_line and "improper" in first_line and "fix:" in first_line
