"""Every public function and class, fed wrong inputs: a clear error naming the argument, or a right answer.

The table crosses each argument a user passes with six kinds of wrong input.
Wrong types and NaN must be refused; the others may be valid (a negative
``loc``), but if refused, the message names the argument, and the exception
is a ``TypeError``, ``ValueError`` or ``RobustHMCError`` raised by robusthmc,
never an error from deeper down.
"""

import dataclasses
import math
import warnings

import jax
import jax.numpy as jnp
import numpyro
import numpyro.distributions as ndist
import pyro
import pyro.distributions as pdist
import pytest
import torch
from gpytorch.priors import GammaPrior

import robusthmc
import robusthmc.blackjax as rb
import robusthmc.gpytorch
import robusthmc.jax
import robusthmc.numpyro as rnp
import robusthmc.pyro as rp
from robusthmc import Guard

WRONG = {
    "wrong type": "x",
    "NaN": math.nan,
    "inf": math.inf,
    "negative": -1,
    "empty": [],
    "huge": 1e300,
}
MUST_REFUSE = {"wrong type", "NaN"}


def numpyro_model():
    numpyro.sample("x", ndist.Normal(0.0, 1.0))


def pyro_model():
    pyro.sample("x", pdist.Normal(0.0, 1.0))


def standard_normal(x):
    return -0.5 * jnp.sum(jnp.asarray(x) ** 2)


BLACKJAX_ARGUMENTS = ["logdensity_fn", "step_size", "inverse_mass_matrix", "divergence_threshold", "guard"]
BLACKJAX_ADAPTATION = [
    "logdensity_fn",
    "initial_step_size",
    "target_acceptance_rate",
    "guard",
    "position",
    "num_steps",
]


def _blackjax_sampler(algorithm, kw):
    arguments = {"logdensity_fn": standard_normal, "step_size": 0.5, "inverse_mass_matrix": jnp.ones(1), **kw}
    if algorithm is rb.hmc:
        arguments.setdefault("num_integration_steps", 5)
    sampler = algorithm(**arguments)
    sampler.step(jax.random.key(0), sampler.init(jnp.zeros(1)))


def _blackjax_adaptation(kw):
    run = {name: kw.pop(name) for name in ("position", "num_steps") if name in kw}
    arguments = {"logdensity_fn": standard_normal, **kw}
    adaptation = rb.window_adaptation(rb.nuts, **arguments)
    adaptation.run(jax.random.key(0), run.get("position", jnp.zeros(1)), num_steps=run.get("num_steps", 5))


def _blackjax_settle(kw):
    sampler = rb.nuts(standard_normal, 0.5, jnp.ones(1))

    def one_step(state, key):
        state, info = sampler.step(key, state)
        return state, (state, info)

    states, infos = jax.lax.scan(
        one_step, sampler.init(jnp.zeros(1)), jax.random.split(jax.random.key(0), 5)
    )[1]
    rb.settle(**{"states": states, "infos": infos, **kw})


KERNEL_OPTIONS = ["step_size", "target_accept_prob", "guard"]
#: (name, call taking one keyword argument, the arguments to walk)
TARGETS = [
    ("Guard", lambda **kw: Guard(**kw), [f.name for f in dataclasses.fields(Guard)]),
    ("check", lambda **kw: robusthmc.check(numpyro_model, **kw), ["backend", "points", "seed"]),
    ("numpyro NUTS", lambda **kw: rnp.NUTS(numpyro_model, **kw), [*KERNEL_OPTIONS, "max_tree_depth"]),
    (
        "numpyro HMC",
        lambda **kw: rnp.HMC(numpyro_model, **kw),
        [*KERNEL_OPTIONS, "num_steps", "trajectory_length"],
    ),
    ("pyro NUTS", lambda **kw: rp.NUTS(pyro_model, **kw), [*KERNEL_OPTIONS, "max_tree_depth"]),
    ("pyro HMC", lambda **kw: rp.HMC(pyro_model, **kw), [*KERNEL_OPTIONS, "num_steps", "trajectory_length"]),
    ("numpyro TruncatedNormal", lambda **kw: rnp.TruncatedNormal(**kw), ["loc", "scale", "low", "high"]),
    ("pyro TruncatedNormal", lambda **kw: rp.TruncatedNormal(**kw), ["loc", "scale", "low", "high"]),
    (
        "numpyro truncated",
        lambda **kw: rnp.truncated(**{"base": ndist.Normal(0.0, 1.0), **kw}),
        ["base", "low", "high"],
    ),
    (
        "pyro truncated",
        lambda **kw: rp.truncated(**{"base": pdist.Normal(0.0, 1.0), **kw}),
        ["base", "low", "high"],
    ),
    ("numpyro describe_distribution", lambda **kw: rnp.describe_distribution(**kw), ["fn"]),
    ("pyro describe_distribution", lambda **kw: rp.describe_distribution(**kw), ["fn"]),
    (
        "pyro is_numerical_exception",
        lambda **kw: rp.is_numerical_exception(**{"error": ValueError("x"), "guard": Guard(), **kw}),
        ["error", "guard"],
    ),
    ("gpytorch audit", lambda **kw: robusthmc.gpytorch.audit(**kw), ["model"]),
    ("gpytorch repair", lambda **kw: robusthmc.gpytorch.repair(**kw), ["model"]),
    (
        "gpytorch TruncatedPrior",
        lambda **kw: robusthmc.gpytorch.TruncatedPrior(**{"base": GammaPrior(0.5, 1.0), "low": 1e-4, **kw}),
        ["base", "low", "high", "log_mass"],
    ),
    ("numpyro repair", lambda **kw: rnp.repair(**kw), ["fn"]),
    ("pyro repair", lambda **kw: rp.repair(**kw), ["fn"]),
    (
        "blackjax nuts",
        lambda **kw: _blackjax_sampler(rb.nuts, kw),
        [*BLACKJAX_ARGUMENTS, "max_num_doublings"],
    ),
    (
        "blackjax hmc",
        lambda **kw: _blackjax_sampler(rb.hmc, kw),
        [*BLACKJAX_ARGUMENTS, "num_integration_steps"],
    ),
    ("blackjax window_adaptation", lambda **kw: _blackjax_adaptation(kw), BLACKJAX_ADAPTATION),
    (
        "blackjax settle",
        lambda **kw: _blackjax_settle(kw),
        ["states", "infos", "guard", "logdensity_fn", "chain_axis"],
    ),
    (
        "jax check_position",
        lambda **kw: robusthmc.jax.check_position(
            **{"logdensity_fn": standard_normal, "position": 0.5, **kw}
        ),
        ["logdensity_fn", "position"],
    ),
    ("jax guarded_logdensity", lambda **kw: robusthmc.jax.guarded_logdensity(**kw), ["logdensity_fn"]),
]
CELLS = [
    pytest.param(call, argument, kind, id=f"{name}-{argument}-{kind}")
    for name, call, arguments in TARGETS
    for argument in arguments
    for kind in WRONG
]


@pytest.mark.timeout(120)
@pytest.mark.parametrize("call, argument, kind", CELLS)
def test_a_wrong_input_is_refused_by_name_or_works(call, argument, kind):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", robusthmc.InfiniteBoundWarning)  # inf bounds are allowed, with it
        try:
            call(**{argument: WRONG[kind]})
        except (TypeError, ValueError, robusthmc.RobustHMCError) as error:
            message = str(error)
            assert argument in message, f"{type(error).__name__} does not name {argument!r}: {message}"
            assert len(message.splitlines()) <= 3, message
            assert _raised_by_robusthmc_or_validation(error), message
            return
    assert kind not in MUST_REFUSE, f"{argument}={WRONG[kind]!r} was accepted"


def _frames(error):
    tb = error.__traceback__
    while tb is not None:
        yield tb.tb_frame
        tb = tb.tb_next


def _raised_by_robusthmc_or_validation(error):
    """The innermost frame is robusthmc's, or a distribution's own argument validation."""
    *_, innermost = _frames(error)
    module = innermost.f_globals.get("__name__", "")
    return module.startswith("robusthmc") or module in (
        "numpyro.distributions.distribution",
        "torch.distributions.distribution",
    )


def test_the_table_covers_every_public_callable():
    import robusthmc.gpytorch as rg

    covered = {name.split()[-1] for name, _, _ in TARGETS}
    records = {  # built by robusthmc and handed to the user, not built by the user
        "Cause",
        "CheckReport",
        "Diagnosis",
        "DistributionInfo",
        "Halt",
        "SiteProblem",
        "SiteReport",
        "GuardRecord",
        "GuardedHMCState",
        "Audit",
        "PriorRow",
        "Repair",
        "Repairs",
        "GuardedNUTSInfo",
        "GuardedHMCInfo",
    }
    public = set()
    for module in (robusthmc, rnp, rp, rg, rb, robusthmc.jax):
        for name in module.__all__:
            value = getattr(module, name)
            if callable(value) and not (isinstance(value, type) and issubclass(value, BaseException)):
                public.add(name)
    covered |= {name.split()[-1] for name, _, _ in TARGETS if name.startswith(("blackjax", "jax"))}
    assert public - records <= covered | {"NUTS", "HMC"}, public - records - covered


@pytest.mark.timeout(300)
def test_integer_and_list_arguments_are_numbers_in_both_backends():
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # numpyro warned 87 times "invalid value encountered in cast"
        numpyro_tn = rnp.TruncatedNormal(0, 1, low=[0, 1])
        pyro_tn = rp.TruncatedNormal(0, 1, low=[0, 1])
        quantiles = numpyro_tn.icdf(0.3), pyro_tn.icdf(torch.tensor(0.3))
    for low, numpyro_q, pyro_q in zip([0, 1], *quantiles):
        assert float(numpyro_q) > low and abs(float(numpyro_q) - float(pyro_q)) < 1e-5
    assert quantiles[0].dtype == jax.numpy.float32


def test_an_infinite_loc_is_refused_by_both_backends():
    for backend in (rnp, rp):
        with pytest.raises(ValueError, match="loc"):
            backend.TruncatedNormal(math.inf, 1.0, low=0.0)


@pytest.mark.parametrize(
    "kernel, typo, meant",
    [
        (rnp.HMC, "num_step", "num_steps"),
        (rnp.NUTS, "gaurd", "guard"),
        (rp.HMC, "num_step", "num_steps"),
        (rp.NUTS, "max_tree_dept", "max_tree_depth"),
    ],
)
def test_a_misspelt_option_names_the_class_and_the_closest_argument(kernel, typo, meant):
    model = numpyro_model if kernel.__module__.startswith("robusthmc.numpyro") else pyro_model
    told = (
        rf"^{kernel.__name__}\(\) got an unexpected keyword argument '{typo}'; did you mean {meant}=\.\.\.\?$"
    )
    with pytest.raises(TypeError, match=told):
        kernel(model, **{typo: 1})
