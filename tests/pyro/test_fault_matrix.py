"""The fault-injection matrix's pyro cells (tests/fault_matrix.py): each gives its expected outcome."""

import pytest

from tests.fault_matrix import cells, matches, run

CELLS = [cell for cell in cells() if cell.backend == "pyro"]


def test_the_matrix_has_its_cells():
    assert len(cells()) >= 60 and len(CELLS) >= 30


@pytest.mark.timeout(120)
@pytest.mark.parametrize("cell", CELLS, ids=lambda cell: f"{cell.method}-{cell.phase}-{cell.fault}")
def test_cell(cell):
    assert matches(cell, run(cell)) == ""
