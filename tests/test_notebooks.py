"""Every teaching notebook runs top to bottom from its source, and its committed outputs are today's."""

import sys
from pathlib import Path

import nbformat
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tools"))
from build_notebooks import execute, read_source, sources

SOURCES = sources()


def _checked_text(notebook):
    """What cells tagged check-output print to stdout: deterministic by construction (fixed seeds).

    stderr is left out: it carries library log lines (XLA's C++ logging) that vary between runs.
    """
    return [
        "".join(output.get("text", "") for output in cell.outputs if output.get("name") == "stdout")
        for cell in notebook.cells
        if cell.cell_type == "code" and "check-output" in cell.metadata.get("tags", [])
    ]


def _cells(notebook):
    return [(cell.cell_type, cell.source, cell.metadata.get("tags", [])) for cell in notebook.cells]


def test_there_are_five_notebooks_each_with_its_source():
    assert [path.name[:2] for path in SOURCES] == ["01", "02", "03", "04", "05"]
    generated = sorted(path.with_suffix(".py") for path in SOURCES[0].parent.glob("*.ipynb"))
    assert generated == SOURCES


@pytest.mark.parametrize("path", SOURCES, ids=[path.stem for path in SOURCES])
def test_committed_notebook_is_generated_from_its_source(path):
    committed = nbformat.read(path.with_suffix(".ipynb"), as_version=4)
    assert _cells(committed) == _cells(read_source(path)), (
        f"{path.name} changed: rebuild with python tools/build_notebooks.py {path.name[:2]}"
    )


@pytest.mark.notebook
@pytest.mark.timeout(400)
@pytest.mark.parametrize("path", SOURCES, ids=[path.stem for path in SOURCES])
def test_notebook_runs_and_its_committed_outputs_are_current(path):
    committed = nbformat.read(path.with_suffix(".ipynb"), as_version=4)
    # Each cell asserts its own claims: a failing claim fails the execution.
    fresh = execute(read_source(path), timeout=300)
    assert _checked_text(fresh) == _checked_text(committed), (
        f"{path.name}: rebuild with python tools/build_notebooks.py {path.name[:2]}"
    )
    images = sum(
        1
        for cell in committed.cells
        if cell.cell_type == "code"
        for o in cell.outputs
        if "image/png" in o.get("data", {})
    )
    assert images >= 1 and path.with_suffix(".ipynb").stat().st_size < 600_000
