"""robusthmc's TruncatedNormal used eagerly (no jit), against numpyro's: first-call time ratios.

    python benchmarks/truncated_eager.py [--repeats 3]

Outside MCMC a user calls ``sample`` and ``Predictive`` eagerly, and the first
call of each shape pays for compilation. Each measurement runs in a fresh
process (so that nothing is compiled yet), numpyro's and robusthmc's alternately,
and the script prints the median seconds, their ratio, and how many XLA error
lines (``E... algebraic_simplifier``) each process wrote to stderr:

* ``sample (3,)``: ``TruncatedNormal(0., 1., low=0.).sample(key, (3,))``, first call;
* ``+ sample (4,)``: then a second, new sample shape (what it costs to compile again);
* ``Predictive 100``: ``Predictive(model, num_samples=100)`` of a model with one
  truncated normal site, first call.
"""

import argparse
import statistics
import subprocess
import sys

CASES = {
    "sample (3,)": "d.sample(key, (3,)).block_until_ready()",
    "+ sample (4,)": "d.sample(key, (3,)).block_until_ready(); start = time.perf_counter(); "
    "d.sample(key, (4,)).block_until_ready()",
    "Predictive 100": "Predictive(model, num_samples=100)(key)['x'].block_until_ready()",
}

SCRIPT = """
import time, jax, numpyro, numpyro.distributions as dist
from numpyro.infer import Predictive
from {module} import TruncatedNormal
key = jax.random.key(0)
def model():
    numpyro.sample("x", TruncatedNormal(0.0, 1.0, low=0.0))
start = time.perf_counter()
d = TruncatedNormal(0.0, 1.0, low=0.0)
{statement}
print(time.perf_counter() - start)
"""

MODULES = {"numpyro": "numpyro.distributions", "robusthmc": "robusthmc.numpyro"}


def measure(module: str, statement: str) -> tuple[float, int]:
    """Seconds of the statement in a fresh process, and the XLA error lines it printed."""
    code = SCRIPT.format(module=module, statement=statement)
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=600
    )
    errors = sum("algebraic_simplifier" in line for line in done.stderr.splitlines())
    return float(done.stdout.split()[-1]), errors


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    repeats = parser.parse_args().repeats
    print(f"{'case':16} {'numpyro s':>10} {'robusthmc s':>12} {'ratio':>6} {'XLA error lines':>16}")
    for case, statement in CASES.items():
        times: dict[str, list[float]] = {name: [] for name in MODULES}
        errors = 0
        for _ in range(repeats):
            for name, module in MODULES.items():
                seconds, lines = measure(module, statement)
                times[name].append(seconds)
                errors += lines if name == "robusthmc" else 0
        upstream, ours = (statistics.median(times[name]) for name in MODULES)
        print(f"{case:16} {upstream:10.2f} {ours:12.2f} {ours / upstream:6.2f} {errors // repeats:16d}")


if __name__ == "__main__":
    main()
