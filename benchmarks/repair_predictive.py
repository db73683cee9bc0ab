"""``Predictive`` of a repaired model against numpyro's of the model unrepaired: first-call time ratios.

    python benchmarks/repair_predictive.py [--repeats 3]

``repair`` swaps numpyro's truncated normal for robusthmc's; a user then calls
``Predictive`` eagerly, and its first call pays for compilation. Each
measurement runs in a fresh process (nothing compiled yet), the unrepaired and
the repaired model alternately, and the script prints the median seconds and
their ratio, for a truncated normal whose scale is

* ``latent``: the Turing model, ``s ~ InverseGamma(2, 3)``, ``V ~ TruncatedNormal(0, s, low=0, high=inf)``
  (what users meet: the parameters are latent, traced inside ``Predictive``);
* ``constant``: ``V ~ TruncatedNormal(0, 1, low=0, high=inf)``.
"""

import argparse
import statistics
import subprocess
import sys

SCRIPT = """
import time, jax, jax.numpy as jnp, numpyro, numpyro.distributions as dist
from numpyro.infer import Predictive
from robusthmc.numpyro import repair
def latent():
    s = numpyro.sample("s", dist.InverseGamma(2.0, 3.0))
    numpyro.sample("V", dist.TruncatedNormal(0.0, s, low=0.0, high=jnp.inf))
def constant():
    numpyro.sample("V", dist.TruncatedNormal(0.0, 1.0, low=0.0, high=jnp.inf))
model = {wrap}({case})
start = time.perf_counter()
Predictive(model, num_samples=100)(jax.random.key(0))["V"].block_until_ready()
print(time.perf_counter() - start)
"""

VARIANTS = {"numpyro (unrepaired)": "", "repair(model)": "repair"}


def measure(case: str, wrap: str) -> float:
    """Seconds of the first ``Predictive`` call in a fresh process."""
    code = SCRIPT.format(case=case, wrap=wrap)
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=600
    )
    return float(done.stdout.split()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    repeats = parser.parse_args().repeats
    print(f"{'scale':10} {'numpyro s':>10} {'repaired s':>11} {'ratio':>6}")
    for case in ("latent", "constant"):
        times: dict[str, list[float]] = {name: [] for name in VARIANTS}
        for _ in range(repeats):
            for name, wrap in VARIANTS.items():
                times[name].append(measure(case, wrap))
        upstream, ours = (statistics.median(times[name]) for name in VARIANTS)
        print(f"{case:10} {upstream:10.2f} {ours:11.2f} {ours / upstream:6.2f}")


if __name__ == "__main__":
    main()
