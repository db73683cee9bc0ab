"""Set before JAX starts: four CPU devices, so chain_method="parallel" really runs in parallel."""

import gc
import os
import sys

import pytest

os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=4")


def memory_maps() -> int:
    """How many memory maps this process holds (0 where /proc is not there)."""
    try:
        with open("/proc/self/maps") as maps:
            return sum(1 for _ in maps)
    except OSError:
        return 0


@pytest.fixture(autouse=True)
def clear_jax_caches():
    """Drop every compiled program after a test once the process holds many memory maps.

    JAX's caches keep each program with its memory maps; a process that compiles
    hundreds passes Linux's vm.max_map_count (65530), and XLA's compiler then
    fails ("Cannot allocate memory") and the process dies (numpyro issue #1699).
    Clearing only past half of that keeps the compiled programs that later tests
    reuse. This is what lets a plain ``pytest`` run the whole suite in one process.
    """
    yield
    if "jax" in sys.modules and memory_maps() > 30_000:
        sys.modules["jax"].clear_caches()
        gc.collect()
