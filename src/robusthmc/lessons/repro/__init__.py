"""The cases ``robusthmc repro`` runs, each in a child process under a watchdog.

A case is a function ``case(progress) -> Finding`` in one of the backend modules
(:mod:`~robusthmc.lessons.repro.numpyro`, :mod:`~robusthmc.lessons.repro.pyro`,
:mod:`~robusthmc.lessons.repro.gpytorch`). It runs in ``python -m
robusthmc.lessons.repro MODULE:FUNCTION``, reports progress as JSON lines
(``{"progress": {...}}``) and its finding last (``{"finding": {...}}``). A case
that does not finish is killed at the timeout and reported as hung, with the
last progress it reported. This module imports no backend: the command line
lists the cases without them.

Examples
--------
>>> [case.name for case in truncated_normal_cases("pyro")]
['stock', 'uncapped_search', 'guarded', 'fix_high_none', 'fix_high_inf']
>>> row = ReproRow("guarded", "pyro", "Turing", "robusthmc NUTS", "InitializationError", 1.5, "site 'V'", True)
>>> for line in render_table([row]).splitlines()[2:]:
...     print(" ".join(line.split()))
pyro Turing robusthmc NUTS InitializationError 1.5s yes
| site 'V'
"""

from robusthmc.lessons.repro._cases import gpytorch_prior_cases, truncated_normal_cases
from robusthmc.lessons.repro._finding import NO_ERROR, Finding, Progress, compare_with_reference
from robusthmc.lessons.repro._runner import SAFETY_TIMEOUT, Case, ReproRow, render_table, run_case

__all__ = [
    "NO_ERROR",
    "SAFETY_TIMEOUT",
    "Case",
    "Finding",
    "Progress",
    "ReproRow",
    "compare_with_reference",
    "gpytorch_prior_cases",
    "render_table",
    "run_case",
    "truncated_normal_cases",
]
