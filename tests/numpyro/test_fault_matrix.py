"""The fault-injection matrix's numpyro cells (tests/fault_matrix.py): each gives its expected outcome."""

import os

import pytest

from tests.fault_matrix import backend_tests, persistent_compilation_cache

test_the_matrix_has_its_cells, test_cell = backend_tests("numpyro")


@pytest.fixture(scope="module", autouse=True)
def compiled_once(tmp_path_factory):
    if os.environ.get("JAX_COMPILATION_CACHE_DIR"):  # make test's cache, shared with the stream
        yield
        return
    with persistent_compilation_cache(str(tmp_path_factory.mktemp("xla-cache"))):
        yield
