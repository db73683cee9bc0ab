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


@pytest.fixture(autouse=True)
def clear_jax_caches():
    """Drop every compiled program after each test.

    JAX's caches keep each program with its memory maps; a process that compiles
    hundreds passes Linux's vm.max_map_count (65530), and XLA's compiler then
    fails ("Cannot allocate memory") and the process dies (numpyro issue #1699).
    """
    yield
    jax.clear_caches()
    gc.collect()
