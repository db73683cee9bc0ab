"""robusthmc's TruncatedNormal against upstream, side by side in one process: median time ratios.

    python benchmarks/truncated_normal.py [--repeats 7] [--size 1000000]

NumPyro (float32, jitted, 1e6 elements, scale 1.2): log_prob plus its gradient,
and sampling, against numpyro's TruncatedNormal, for an interval across the mode
(low=0, loc 0.3) and one in the tail (low=0, loc -4: 3.3 standard deviations out).
Pyro (torch float32): the same against a plain ``Normal`` (Pyro has no truncated normal).
"""

import argparse
import itertools
import statistics
import time

import jax
import jax.numpy as jnp
import numpyro.distributions as dist
import torch

import robusthmc.numpyro as rnp
import robusthmc.pyro as rp


def paired_medians(upstream, ours, repeats):
    """Median seconds of two functions, called alternately so that machine noise hits both alike."""
    upstream(), ours()  # compile / warm up
    times = {upstream: [], ours: []}
    for _ in range(repeats):
        for function in (upstream, ours):
            start = time.perf_counter()
            function()
            times[function].append(time.perf_counter() - start)
    return statistics.median(times[upstream]), statistics.median(times[ours])


def numpyro_rows(size, repeats, loc):
    """(log_prob + gradient, sampling) seconds for numpyro's TruncatedNormal and robusthmc's."""
    x = jnp.abs(jax.random.normal(jax.random.key(0), (size,))) + 0.01
    value_and_grad, sample = {}, {}
    for label, cls in (("numpyro", dist.TruncatedNormal), ("robusthmc", rnp.TruncatedNormal)):
        function = jax.jit(jax.value_and_grad(lambda loc, cls=cls: cls(loc, 1.2, low=0.0).log_prob(x).sum()))
        value_and_grad[label] = lambda f=function: jax.block_until_ready(f(loc))
        function = jax.jit(lambda key, cls=cls: cls(loc, 1.2, low=0.0).sample(key, (size,)))
        sample[label] = lambda f=function: jax.block_until_ready(f(jax.random.key(1)))
    return "numpyro", [
        paired_medians(value_and_grad["numpyro"], value_and_grad["robusthmc"], repeats),
        paired_medians(sample["numpyro"], sample["robusthmc"], repeats),
    ]


def pyro_rows(size, repeats, loc):
    """The same for Pyro, against a plain torch ``Normal``."""
    x = torch.randn(size).abs() + 0.01
    makers = {
        "torch Normal": lambda loc: torch.distributions.Normal(loc, 1.2),
        "robusthmc": lambda loc: rp.TruncatedNormal(loc, 1.2, low=0.0),
    }

    def value_and_grad(make):
        loc_ = torch.tensor(loc, requires_grad=True)
        make(loc_).log_prob(x).sum().backward()

    def sample(make):
        make(torch.tensor(loc)).sample((size,))

    normal, ours = makers["torch Normal"], makers["robusthmc"]
    return "torch Normal", [
        paired_medians(lambda: value_and_grad(normal), lambda: value_and_grad(ours), repeats),
        paired_medians(lambda: sample(normal), lambda: sample(ours), repeats),
    ]


def main():
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--size", type=int, default=1_000_000)
    options = parser.parse_args()
    for (backend, rows), (where, loc) in itertools.product(
        (("numpyro", numpyro_rows), ("pyro", pyro_rows)), (("across the mode", 0.3), ("tail", -4.0))
    ):
        base, ((base_lp, ours_lp), (base_sample, ours_sample)) = rows(options.size, options.repeats, loc)
        print(
            f"{backend}, {where}: log_prob+grad {ours_lp * 1e3:.1f} ms vs {base} {base_lp * 1e3:.1f} ms, ratio {ours_lp / base_lp:.2f}; "
            f"sample {ours_sample * 1e3:.1f} ms vs {base_sample * 1e3:.1f} ms, ratio {ours_sample / base_sample:.2f}"
        )


if __name__ == "__main__":
    main()
