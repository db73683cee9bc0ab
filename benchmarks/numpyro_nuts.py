"""Guarded vs numpyro NUTS, side by side in one process: median wall-time ratio.

Eight schools (non-centred) and a logistic regression (N=5000, D=50), 1000 warmup
+ 1000 draws, one chain (sequential) and four chains (vectorized).  Each MCMC
object is run once to compile, then timed ``--repeats`` times, the kernels
interleaved (in an order rotated every repeat) so that machine noise hits them
alike.  Printed: the ratio of the medians, that of the fastest runs (noise only
ever adds time), and the median of the per-repeat ratios (runs taken back to
back, so slow drifts cancel) with a bootstrap 90 % interval.  A second numpyro
NUTS runs alongside as a control: its ratio to the first (an A/A comparison, 1
but for noise) shows how far this machine's noise reaches.  ``mcmc.run`` compiles its
sampling loop again on every call (numpyro builds a new collection function
each time), which on eight schools is most of the wall time; a second table
times the same transitions as one compiled loop (collecting the kernel's
default fields, as ``mcmc.run`` does), compilation left out, and a third the
compilation of that loop alone, with the size of each kernel's compiled program.

JAX's caches keep every program that numpyro compiles afresh, and each holds
memory maps (about 400 per one-chain eight-schools run, 760 per four-chain run):
past Linux's default ``vm.max_map_count`` of 65530, LLVM fails with "Cannot
allocate memory" and the process dies (numpyro issue #1699).  So each table row
starts from cleared caches (``jax.clear_caches()``, outside the timed calls).

    python benchmarks/numpyro_nuts.py [--repeats 5] [--warmup 1000] [--samples 1000]
"""

from __future__ import annotations

import argparse
import random
import re
import statistics
import time

import jax
import numpyro.infer
from numpyro.infer import MCMC

import robusthmc.numpyro as rnp
from robusthmc.lessons.data import logistic_data
from robusthmc.lessons.numpyro import eight_schools_noncentered, logistic_regression

HEADER = (
    "| model | chains | numpyro NUTS (s) | guarded NUTS (s) | ratio of medians | ratio of fastest runs "
    "| paired ratio, median [90% interval] | control: numpyro / numpyro, paired |\n"
    "|---|---|---|---|---|---|---|---|"
)

KERNELS = (("numpyro", numpyro.infer.NUTS), ("guarded", rnp.NUTS), ("control", numpyro.infer.NUTS))


def rotated(labels, repeat):
    """The kernels' order in this repeat: rotated each time, so that none always follows another."""
    order = list(labels)
    shift = repeat % len(order)
    return order[shift:] + order[:shift]


def interleaved_times(calls, repeats):
    """``{label: call}`` -> ``{label: seconds}``, each ``call(repeat)`` timed ``repeats`` times, in rotating order."""
    times = {label: [] for label in calls}
    for repeat in range(repeats):
        for label in rotated(calls, repeat):
            start = time.perf_counter()
            calls[label](repeat)
            times[label].append(time.perf_counter() - start)
    return times


def compare(name, model, args, num_chains, chain_method, repeats, warmup, samples):
    """Time ``mcmc.run`` for each kernel (a new seed each repeat); print the row."""
    jax.clear_caches()  # see the module docstring

    def run(mcmc, seed):
        mcmc.run(jax.random.key(seed), *args)
        jax.block_until_ready(mcmc.get_samples())

    calls = {}
    for label, kernel_class in KERNELS:
        mcmc = MCMC(
            kernel_class(model),
            num_warmup=warmup,
            num_samples=samples,
            num_chains=num_chains,
            chain_method=chain_method,
            progress_bar=False,
        )
        run(mcmc, 0)  # compile
        calls[label] = lambda repeat, mcmc=mcmc: run(mcmc, repeat + 1)
    setting = f"{num_chains} chain{'s' if num_chains > 1 else ''} {chain_method}"
    return report(name, setting, interleaved_times(calls, repeats), digits=2)


def paired_ratio(numerator, denominator):
    """Median of the per-repeat ratios (runs taken back to back) and a bootstrap 90 % interval of it."""
    ratios = [a / b for a, b in zip(numerator, denominator)]
    draws = random.Random(0)
    medians = sorted(statistics.median(draws.choices(ratios, k=len(ratios))) for _ in range(2000))
    return statistics.median(ratios), medians[100], medians[1899]


def report(name, setting, times, digits, stock_label="numpyro"):
    """Print a table row (median seconds, ratios to the stock kernel); return the paired median ratio guarded/stock."""
    stock, guarded = statistics.median(times[stock_label]), statistics.median(times["guarded"])
    fastest = min(times["guarded"]) / min(times[stock_label])
    paired, low, high = paired_ratio(times["guarded"], times[stock_label])
    control = paired_ratio(times["control"], times[stock_label])[0]
    print(
        f"| {name} | {setting} | {stock:.{digits}f} | {guarded:.{digits}f} | {guarded / stock:.3f} "
        f"| {fastest:.3f} | {paired:.3f} [{low:.3f}, {high:.3f}] | {control:.3f} |",
        flush=True,
    )
    return paired


def transition_loop(kernel_class, model, args, num_chains, warmup, samples):
    """The kernel's ``warmup + samples`` transitions as one loop collecting its default fields.

    Returns the loop (a plain function of the initial state) and that state.
    """
    kernel = kernel_class(model)
    key = jax.random.key(0)
    state = kernel.init(jax.random.split(key, num_chains) if num_chains > 1 else key, warmup, None, args, {})

    def step(state, _):  # vmapped over chains by the kernel itself when initialised with several keys
        return kernel.sample(state, args, {}), tuple(getattr(state, field) for field in kernel.default_fields)

    return (lambda state: jax.lax.scan(step, state, length=warmup + samples)), state


def compiled_loop(kernel_class, model, args, num_chains, warmup, samples):
    """A timed call runs the compiled loop: compilation left out."""
    loop, state = transition_loop(kernel_class, model, args, num_chains, warmup, samples)
    compiled = jax.jit(loop)
    jax.block_until_ready(compiled(state))  # compile
    return lambda: jax.block_until_ready(compiled(state))


def loop_compilation(kernel_class, model, args, num_chains, warmup, samples):
    """A timed call traces, lowers and compiles the loop afresh, as every ``mcmc.run`` does."""
    loop, state = transition_loop(kernel_class, model, args, num_chains, warmup, samples)
    return lambda: jax.jit(lambda state: loop(state)).lower(state).compile()


def instruction_count(kernel_class, model, args, num_chains, warmup, samples) -> int:
    """Instructions in the loop's optimised XLA program."""
    loop, state = transition_loop(kernel_class, model, args, num_chains, warmup, samples)
    return len(re.findall(r"^\s*(?:ROOT )?%?\S+ = ", jax.jit(loop).lower(state).compile().as_text(), re.M))


def compare_loops(build, name, model, args, num_chains, repeats, warmup, samples):
    """Time ``build(...)()`` for each kernel, interleaved; print the row."""
    jax.clear_caches()  # see the module docstring
    calls = {}
    for label, kernel_class in KERNELS:
        call = build(kernel_class, model, args, num_chains, warmup, samples)
        calls[label] = lambda repeat, call=call: call()
    setting = f"{num_chains} chain{'s' if num_chains > 1 else ''}"
    return report(name, setting, interleaved_times(calls, repeats), digits=3)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=1000)
    parser.add_argument("--samples", type=int, default=1000)
    options = parser.parse_args()
    data = logistic_data(5000, 50)
    models = [
        ("eight schools (non-centred)", eight_schools_noncentered, ()),
        ("logistic regression N=5000 D=50", logistic_regression, (data.X, data.y)),
    ]
    print(
        f"jax {jax.__version__}, numpyro {numpyro.__version__}, {jax.device_count()} device(s); "
        f"{options.warmup} warmup + {options.samples} draws, median of {options.repeats} runs"
    )
    print(HEADER)
    ratios = [
        compare(name, model, args, chains, method, options.repeats, options.warmup, options.samples)
        for name, model, args in models
        for chains, method in ((1, "sequential"), (4, "vectorized"))
    ]
    print(f"worst paired ratio: {max(ratios):.3f} (target <= 1.05)")
    print()
    print("Transitions alone: the same transitions as one compiled loop, compilation left out.")
    print(HEADER)
    ratios = [
        compare_loops(
            compiled_loop, name, model, args, chains, 3 * options.repeats, options.warmup, options.samples
        )
        for name, model, args in models
        for chains in (1, 4)
    ]
    print(f"worst paired ratio: {max(ratios):.3f}")
    print()
    print("Compilation alone: tracing, lowering and compiling that loop, as every mcmc.run does.")
    print(HEADER)
    for name, model, args in models:
        for chains in (1, 4):
            compare_loops(
                loop_compilation, name, model, args, chains, options.repeats, options.warmup, options.samples
            )
    print()
    print("Instructions in the optimised XLA program of that loop (numpyro, guarded):")
    for name, model, args in models:
        counts = [
            instruction_count(kernel_class, model, args, 1, options.warmup, options.samples)
            for _, kernel_class in KERNELS[:2]
        ]
        print(f"  {name}: {counts[0]}, {counts[1]} ({counts[1] / counts[0]:.3f})")


if __name__ == "__main__":
    main()
