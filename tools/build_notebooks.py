"""Execute the teaching notebooks' sources and write the committed ``.ipynb`` files.

    python tools/build_notebooks.py            # all
    python tools/build_notebooks.py 03         # the ones whose name starts with 03

Each notebook's source is ``notebooks/NN_name.py`` in jupytext's percent format
(linted and type-checked like the rest); the ``.ipynb`` beside it is generated
here, with its outputs. Cells tagged ``check-output`` print deterministic text;
``tests/test_notebooks.py`` re-executes every source and compares those outputs
with the committed ones.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

import jupytext
import nbformat
from nbclient import NotebookClient

NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"
KERNELSPEC = {"name": "python3", "display_name": "Python 3", "language": "python"}


def sources() -> list[Path]:
    """The notebooks' percent-format sources, in order."""
    return sorted(NOTEBOOKS.glob("[0-9][0-9]_*.py"))


def read_source(path: Path) -> nbformat.NotebookNode:
    """The notebook a source describes, without outputs."""
    notebook = jupytext.read(path, fmt="py:percent")
    notebook.metadata = {"kernelspec": KERNELSPEC}
    return notebook


def execute(notebook: nbformat.NotebookNode, timeout: int = 600) -> nbformat.NotebookNode:
    """Run every cell in place (a failing ``assert`` in a cell fails here); drop library noise."""
    NotebookClient(
        notebook, timeout=timeout, kernel_name="python3", resources={"metadata": {"path": str(NOTEBOOKS)}}
    ).execute()
    for cell in notebook.cells:
        if cell.cell_type == "code":
            cell.outputs = [output for output in cell.outputs if not _is_library_noise(output)]
    return notebook


def _is_library_noise(output: nbformat.NotebookNode) -> bool:
    """Whether an output is only tqdm's missing-ipywidgets notice or XLA's C++ log lines: machine-specific, not teaching material."""
    text = output.get("text", "") if output.get("name") == "stderr" else ""
    return bool(text) and all(
        "TqdmWarning" in line or "from .autonotebook import" in line or re.match(r"[EWI]\d{4} ", line)
        for line in text.splitlines()
    )


def build(path: Path) -> None:
    """Execute ``path``'s notebook and write it beside the source as ``.ipynb``."""
    nbformat.write(execute(read_source(path)), path.with_suffix(".ipynb"))


if __name__ == "__main__":
    prefix = sys.argv[1] if len(sys.argv) > 1 else ""
    chosen = [source for source in sources() if source.name.startswith(prefix)]
    if not chosen:
        names = ", ".join(source.stem for source in sources())
        print(f"no notebook's name starts with {prefix!r}; the notebooks: {names}", file=sys.stderr)
        sys.exit(2)
    for source in chosen:
        print("building", source.stem, flush=True)
        build(source)
