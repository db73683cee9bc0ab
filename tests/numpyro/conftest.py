import gc

import jax
import pytest


@pytest.fixture(params=["float32", "float64"])
def dtype(request):
    """Run a test in float32 (numpyro's default) and again with jax_enable_x64."""
    previous = jax.config.jax_enable_x64
    jax.config.update("jax_enable_x64", request.param == "float64")
    yield request.param
    jax.config.update("jax_enable_x64", previous)


@pytest.fixture
def float64():
    previous = jax.config.jax_enable_x64
    jax.config.update("jax_enable_x64", True)
    yield
    jax.config.update("jax_enable_x64", previous)


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
    Clearing only past half of that keeps the compiled truncated normals that
    later tests reuse.
    """
    yield
    if memory_maps() > 30_000:
        jax.clear_caches()
        gc.collect()
