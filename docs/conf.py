"""Sphinx configuration: ``make docs`` builds the site into docs/_build/html, warnings as errors.

The notebooks are rendered from their committed outputs (not executed here:
``tests/test_notebooks.py`` executes them), and the fault matrix's table is
written from the cells ``tests/fault_matrix.py`` defines.
"""

import shutil
import sys
from pathlib import Path

DOCS = Path(__file__).resolve().parent
ROOT = DOCS.parent
sys.path.insert(0, str(ROOT))

from robusthmc import __version__  # noqa: E402
from tests.fault_matrix import cells  # noqa: E402

project = "robusthmc"
release = version = __version__
extensions = ["sphinx.ext.autodoc", "sphinx.ext.napoleon", "myst_nb"]
exclude_patterns = ["_build", "_generated/README.md"]
html_theme = "furo"
html_title = f"robusthmc {version}"

napoleon_google_docstring = False
napoleon_numpy_docstring = True
napoleon_use_ivar = True  # an "Attributes" section and autodoc would describe a field twice
autodoc_member_order = "bysource"
autodoc_typehints = "signature"
autodoc_default_options = {"members": True, "show-inheritance": True}

myst_heading_anchors = 3
nb_execution_mode = "off"  # the committed outputs are shown; tests/test_notebooks.py runs them


def _copy_notebooks() -> None:
    """The committed notebooks, with their outputs, into docs/_generated/notebooks."""
    target = DOCS / "_generated" / "notebooks"
    shutil.rmtree(target, ignore_errors=True)
    target.mkdir(parents=True)
    for notebook in sorted((ROOT / "notebooks").glob("*.ipynb")):
        shutil.copy(notebook, target / notebook.name)


def _write_fault_matrix() -> None:
    """The fault matrix as a table: every cell and the outcome its test asserts."""
    lines = [
        "| backend | chain method | phase | fault | expected outcome |",
        "|---|---|---|---|---|",
        *(
            f"| {c.backend} | {c.method} | {c.phase} | {c.fault} | {c.expected} |"
            for c in cells()
        ),
    ]
    (DOCS / "_generated" / "fault_matrix.md").write_text("\n".join(lines) + "\n")


_copy_notebooks()
_write_fault_matrix()
