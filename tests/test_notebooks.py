"""Every teaching notebook runs top to bottom, and its committed outputs are today's."""

import pathlib

import nbformat
import pytest
from nbclient import NotebookClient

NOTEBOOKS = sorted((pathlib.Path(__file__).resolve().parents[1] / "notebooks").glob("*.ipynb"))


def _checked_text(notebook):
    """What cells tagged check-output print to stdout: deterministic by construction (fixed seeds).

    stderr is left out: it carries library log lines (XLA's C++ logging) that vary between runs.
    """
    return [
        "".join(output.get("text", "") for output in cell.outputs if output.get("name") == "stdout")
        for cell in notebook.cells
        if cell.cell_type == "code" and "check-output" in cell.metadata.get("tags", [])
    ]


def test_there_are_five_notebooks():
    assert [path.name[:2] for path in NOTEBOOKS] == ["01", "02", "03", "04", "05"]


@pytest.mark.notebook
@pytest.mark.timeout(400)
@pytest.mark.parametrize("path", NOTEBOOKS, ids=[path.stem for path in NOTEBOOKS])
def test_notebook_runs_and_its_committed_outputs_are_current(path):
    committed = nbformat.read(path, as_version=4)
    fresh = nbformat.read(path, as_version=4)
    for cell in fresh.cells:
        if cell.cell_type == "code":
            cell.outputs = []
    # Each cell asserts its own claims: a failing claim fails the execution.
    NotebookClient(
        fresh, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(path.parent)}}
    ).execute()
    assert _checked_text(fresh) == _checked_text(committed), (
        f"{path.name}: rebuild with python notebooks/build.py"
    )
    images = sum(
        1
        for cell in committed.cells
        if cell.cell_type == "code"
        for o in cell.outputs
        if "image/png" in o.get("data", {})
    )
    assert images >= 1 and path.stat().st_size < 600_000
