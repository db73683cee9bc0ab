"""Time to the initialisation error on the Turing model: numpyro's NUTS against the guarded NUTS.

``V ~ TruncatedNormal(0, s, low=0, high=inf)``, ``s ~ InverseGamma(2, 3)``: no
initial point has a finite gradient, so numpyro's NUTS ends in its generic
"Cannot find valid initial parameters" and the guarded NUTS in an
``InitializationError`` that names the site, the latent, the bound and the fix
(after a diagnosis of the last and first points tried).  This is mostly
compilation, so every run starts from cleared JAX caches (``jax.clear_caches``),
as a new process would; the kernels alternate, so that machine noise hits both
alike.  A second numpyro NUTS runs alongside as an A/A control (1 but for noise).
The issue's target is a ratio of at most 1.5.

    python benchmarks/initialization_error.py [--repeats 5]
"""

from __future__ import annotations

import argparse
import statistics
import time

import jax
import numpyro.infer
from numpyro.infer import MCMC

import robusthmc
import robusthmc.numpyro as rnp
from robusthmc.numpyro.examples import turing

KERNELS = (("numpyro", numpyro.infer.NUTS), ("guarded", rnp.NUTS), ("control", numpyro.infer.NUTS))


def seconds_to_error(kernel_class) -> float:
    """Wall time from a cold start to the error; raises if the run does not end in the expected one."""
    expected = robusthmc.InitializationError if kernel_class is rnp.NUTS else RuntimeError
    jax.clear_caches()
    start = time.perf_counter()
    try:
        MCMC(kernel_class(turing), num_warmup=100, num_samples=100, progress_bar=False).run(jax.random.key(0))
    except expected as error:
        if kernel_class is not rnp.NUTS and "Cannot find valid initial parameters" not in str(error):
            raise
        return time.perf_counter() - start
    raise AssertionError(f"{kernel_class.__module__}.NUTS sampled the Turing model with high=inf")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    options = parser.parse_args()
    times: dict[str, list[float]] = {label: [] for label, _ in KERNELS}
    for _ in range(options.repeats):
        for label, kernel_class in KERNELS:
            times[label].append(seconds_to_error(kernel_class))
    median = {label: statistics.median(runs) for label, runs in times.items()}
    for label, runs in times.items():
        print(f"{label:8s} " + " ".join(f"{t:5.2f}" for t in runs) + f"   median {median[label]:.2f} s")
    print(f"guarded / numpyro, ratio of medians: {median['guarded'] / median['numpyro']:.3f}")
    print(f"guarded / numpyro, ratio of fastest runs: {min(times['guarded']) / min(times['numpyro']):.3f}")
    print(f"control: numpyro / numpyro, ratio of medians: {median['control'] / median['numpyro']:.3f}")


if __name__ == "__main__":
    main()
