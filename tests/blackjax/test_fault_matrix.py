"""The fault-injection matrix's BlackJAX cells (tests/fault_matrix.py): each gives its expected outcome."""

from tests.fault_matrix import backend_tests

test_the_matrix_has_its_cells, test_cell = backend_tests("blackjax")
