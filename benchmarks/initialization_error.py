"""Time to the initialisation error on the Turing model: numpyro's NUTS against the guarded NUTS.

``V ~ TruncatedNormal(0, s, low=0, high=inf)``, ``s ~ InverseGamma(2, 3)``: no
initial point has a finite gradient, so numpyro's NUTS ends in its generic
"Cannot find valid initial parameters" and the guarded NUTS in an
``InitializationError`` that names the site, the latent, the bound and the fix
(after diagnosing two starting points in one compiled evaluation).

Two settings, each printed as a ratio of medians:

* cold: every run starts from cleared caches (``jax.clear_caches`` and
  robusthmc's compiled diagnoses), as a new process would;
* warm: the same run again in a process that has run it before, as a notebook
  user who re-runs a cell sees it (the issue's target: at most 1.3).

The kernels alternate, so that machine noise hits both alike; a second numpyro
NUTS runs alongside as an A/A control (1 but for noise).

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
from robusthmc.lessons.numpyro import turing
from robusthmc.numpyro import _initialize

KERNELS = (("numpyro", numpyro.infer.NUTS), ("guarded", rnp.NUTS), ("control", numpyro.infer.NUTS))


def seconds_to_error(kernel_class, *, cold: bool) -> float:
    """Wall time to the error; raises if the run does not end in the expected one."""
    expected = robusthmc.InitializationError if kernel_class is rnp.NUTS else RuntimeError
    if cold:
        jax.clear_caches()
        _initialize._EVALUATORS.clear()
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
    for setting in ("cold", "warm"):
        cold = setting == "cold"
        if not cold:
            for _, kernel_class in KERNELS:  # the run before, that warms the caches
                seconds_to_error(kernel_class, cold=False)
        times: dict[str, list[float]] = {label: [] for label, _ in KERNELS}
        for _ in range(options.repeats):
            for label, kernel_class in KERNELS:
                times[label].append(seconds_to_error(kernel_class, cold=cold))
        median = {label: statistics.median(runs) for label, runs in times.items()}
        print(f"-- {setting}")
        for label, runs in times.items():
            print(f"{label:8s} " + " ".join(f"{t:5.2f}" for t in runs) + f"   median {median[label]:.2f} s")
        print(f"{setting}: guarded / numpyro, ratio of medians: {median['guarded'] / median['numpyro']:.3f}")
        print(f"{setting}: control / numpyro, ratio of medians: {median['control'] / median['numpyro']:.3f}")


if __name__ == "__main__":
    main()
