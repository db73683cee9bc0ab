"""Guarded vs stock Pyro NUTS: wall time side by side, in one process, same seeds.

    python benchmarks/pyro_nuts.py [--repeats 5] [--warmup 200] [--samples 200]

Each repeat runs Pyro's NUTS and robusthmc's on the same model and seed, in
alternating order; the ratio of the medians is printed per model. The draws are
checked to be identical, so both did exactly the same work.
"""

import argparse
import statistics
import time

import pyro
import pyro.infer
import torch
from pyro.infer import MCMC

import robusthmc.pyro as rp
from robusthmc.lessons.data import logistic_data
from robusthmc.lessons.pyro import eight_schools_noncentered, logistic_regression


def timed_run(kernel_class, model, args, warmup, samples, seed):
    pyro.set_rng_seed(seed)
    mcmc = MCMC(kernel_class(model), num_samples=samples, warmup_steps=warmup, disable_progbar=True)
    start = time.perf_counter()
    mcmc.run(*args)
    return time.perf_counter() - start, mcmc.get_samples()


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=200)
    parser.add_argument("--samples", type=int, default=200)
    options = parser.parse_args()
    data = logistic_data(num_rows=1000, num_features=10, seed=0)
    models = {
        "eight schools (non-centred)": (eight_schools_noncentered, ()),
        "logistic regression (1000 x 10)": (logistic_regression, (data.X, data.y)),
    }
    print(f"Pyro NUTS, {options.warmup} warmup + {options.samples} draws, median of {options.repeats}")
    for label, (model, args) in models.items():
        times = {"pyro": [], "robusthmc": []}
        for repeat in range(options.repeats):
            order = [("pyro", pyro.infer.NUTS), ("robusthmc", rp.NUTS)]
            for name, kernel_class in order if repeat % 2 == 0 else reversed(order):
                seconds, draws = timed_run(kernel_class, model, args, options.warmup, options.samples, repeat)
                times[name].append(seconds)
                if name == "pyro":
                    reference = draws
                else:
                    guarded = draws
            for site in reference:
                assert torch.equal(reference[site], guarded[site]), f"draws differ at {site}"
        stock, ours = statistics.median(times["pyro"]), statistics.median(times["robusthmc"])
        print(f"{label:34s} pyro {stock:7.2f} s   robusthmc {ours:7.2f} s   ratio {ours / stock:.3f}")


if __name__ == "__main__":
    main()
