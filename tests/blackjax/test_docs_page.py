"""docs/blackjax.md's examples run, and say what the page says they do."""

import contextlib
import io
import pathlib
import re
import runpy

import pytest

import robusthmc

PAGE = (pathlib.Path(__file__).parents[2] / "docs" / "blackjax.md").read_text()


def section(title):
    return re.search(rf"## {title}\n.*?```python\n(.*?)```", PAGE, re.S).group(1)


@pytest.mark.timeout(300)
def test_the_swap_example_warns_as_the_page_shows(tmp_path):
    script = tmp_path / "model.py"  # a file, as a user's script: the warning quotes its line
    script.write_text(section("The swap"))
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed), pytest.warns(robusthmc.NonFiniteWarning) as warned:
        runpy.run_path(str(script))
    nonfinite, _ = map(int, printed.getvalue().split())
    assert nonfinite >= 2  # counted apart from the divergences
    first_line = str(warned[0].message).splitlines()[0]
    shown = re.search(r"```text\n(.*?)\n```", PAGE, re.S).group(1)
    assert first_line.startswith(shown.split(": `")[0])
    assert "position['sigma']" in first_line and "-jnp.log(sigma)" in first_line and "fix:" in first_line


@pytest.mark.timeout(300)
def test_the_numpyro_recipe_runs_with_sites_as_keys():
    namespace = {}
    exec(section("A NumPyro model under BlackJAX"), namespace)
    assert set(namespace["state"].position) == {"tau"}
    assert float(namespace["parameters"]["step_size"]) > 1e-3
