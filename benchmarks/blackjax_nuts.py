"""Guarded vs BlackJAX NUTS, side by side in one process: median wall-time ratio.

Two NumPyro models run through BlackJAX as its users do
(``numpyro.infer.util.initialize_model``: the latents are the sampler's
position, the data constants of the log density): eight schools (non-centred)
and a logistic regression (N=5000, D=50).  Two tables:

* steps alone: ``--samples`` NUTS steps as one compiled ``jax.lax.scan``
  (compilation left out), at the step size and mass matrix a window
  adaptation found;
* a whole run: ``window_adaptation(...).run`` for ``--warmup`` steps, then the
  sampling loop, each compiled afresh (as a script does), compilation included.

Each is timed ``--repeats`` times, the kernels interleaved (in an order
rotated every repeat) so that machine noise hits them alike; a second stock
kernel is the control (an A/A comparison: 1 but for noise).  Printed: the
ratio of the medians, that of the fastest runs (noise only ever adds time),
and the median of the per-repeat ratios with a bootstrap 90 % interval.

    python benchmarks/blackjax_nuts.py [--repeats 5] [--warmup 1000] [--samples 1000]
"""

from __future__ import annotations

import argparse

import blackjax
import jax
import jax.numpy as jnp
from numpyro.infer.util import initialize_model

import robusthmc.blackjax as rb
from numpyro_nuts import interleaved_times, report
from robusthmc.lessons.data import logistic_data
from robusthmc.lessons.numpyro import eight_schools_noncentered, logistic_regression

HEADER = (
    "| model | what | BlackJAX NUTS (s) | guarded NUTS (s) | ratio of medians | ratio of fastest runs "
    "| paired ratio, median [90% interval] | control: BlackJAX / BlackJAX, paired |\n"
    "|---|---|---|---|---|---|---|---|"
)

#: The timed kernels: each label's nuts and window_adaptation.
KERNELS = {
    "blackjax": (blackjax.nuts, blackjax.window_adaptation),
    "guarded": (rb.nuts, rb.window_adaptation),
    "control": (blackjax.nuts, blackjax.window_adaptation),
}


def logdensity_of(model, args):
    """A NumPyro model's log density over its unconstrained latents, and a start."""
    init, potential_fn, *_ = initialize_model(jax.random.key(0), model, model_args=args, dynamic_args=False)
    return (lambda position: -potential_fn(position)), init.z


def sampling_loop(nuts, logdensity, parameters, num_steps):
    algorithm = nuts(logdensity, **parameters)

    def one_step(state, key):
        state, info = algorithm.step(key, state)
        return state, (state.position, info.is_divergent)

    def loop(state, key):
        return jax.lax.scan(one_step, state, jax.random.split(key, num_steps))[1]

    return loop


def steps_alone(name, model, args, repeats, warmup, samples):
    logdensity, start = logdensity_of(model, args)
    (state, parameters), _ = blackjax.window_adaptation(blackjax.nuts, logdensity).run(
        jax.random.key(1), start, warmup
    )
    calls = {}
    for label, (nuts, _) in KERNELS.items():
        compiled = jax.jit(sampling_loop(nuts, logdensity, parameters, samples))
        jax.block_until_ready(compiled(state, jax.random.key(2)))  # compile
        calls[label] = lambda repeat, compiled=compiled: jax.block_until_ready(
            compiled(state, jax.random.key(3 + repeat))
        )
    return report(
        name, f"{samples} steps alone", interleaved_times(calls, repeats), digits=3, stock_label="blackjax"
    )


def whole_run(name, model, args, repeats, warmup, samples):
    logdensity, start = logdensity_of(model, args)

    def run(nuts, adaptation, seed):
        key_warmup, key_sampling = jax.random.split(jax.random.key(seed))
        (state, parameters), _ = adaptation(nuts, logdensity).run(key_warmup, start, warmup)
        loop = jax.jit(sampling_loop(nuts, logdensity, parameters, samples))
        jax.block_until_ready(loop(state, key_sampling))

    calls = {
        label: (lambda repeat, nuts=nuts, adaptation=adaptation: run(nuts, adaptation, repeat))
        for label, (nuts, adaptation) in KERNELS.items()
    }
    return report(
        name,
        f"whole run, {warmup}+{samples}",
        interleaved_times(calls, repeats),
        digits=2,
        stock_label="blackjax",
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=1000)
    parser.add_argument("--samples", type=int, default=1000)
    options = parser.parse_args()
    data = logistic_data()
    models = [
        ("eight schools", eight_schools_noncentered, ()),
        ("logistic N=5000 D=50", logistic_regression, (jnp.asarray(data.X), jnp.asarray(data.y))),
    ]
    print(HEADER)
    for name, model, args in models:
        steps_alone(name, model, args, options.repeats, options.warmup, options.samples)
    for name, model, args in models:
        whole_run(name, model, args, options.repeats, options.warmup, options.samples)


if __name__ == "__main__":
    main()
