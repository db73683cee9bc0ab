"""The README's examples run, and their comments say what the code does."""

import collections
import contextlib
import io
import pathlib
import re
import runpy
import warnings

import pytest

import robusthmc

README = (pathlib.Path(__file__).parents[1] / "README.md").read_text()


def block(title):
    return re.search(rf"## {title}\n\n```python\n(.*?)```", README, re.S).group(1)


@pytest.mark.timeout(300)
def test_the_numpyro_example_prints_the_error_it_promises():
    code = block("NumPyro in ten lines")
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        exec(code, {})
    error, count = printed.getvalue().rsplit("\n", 2)[:2]
    assert "site 'V'" in error and "s" in error and "high=inf" in error and "high=None" in error
    assert int(count) >= 0


@pytest.mark.timeout(600)
def test_the_pyro_example_rejects_only_the_exceptions_it_names(monkeypatch):
    import robusthmc.pyro._initialize as initialize
    import robusthmc.pyro._potential as potential

    code = block("Pyro in ten lines")
    rejected = collections.Counter()
    judge = potential.is_numerical_exception

    def recorded(error, guard):
        numerical = judge(error, guard)
        if numerical:
            rejected[type(error).__name__] += 1
        return numerical

    # Both places that judge an exception: the search for a start and every proposal.
    monkeypatch.setattr(initialize, "is_numerical_exception", recorded)
    monkeypatch.setattr(potential, "is_numerical_exception", recorded)
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed), warnings.catch_warnings(record=True):
        warnings.simplefilter("always", robusthmc.NonFiniteWarning)  # the example may warn: rejections
        exec(code, {})
    assert "likelihood noise 0.0112" in printed.getvalue()
    assert rejected, "the example promises rejected proposals"
    comments = " ".join(re.findall(r"#(.*)", code))
    assert all(name in comments for name in rejected), (dict(rejected), comments)


def test_the_repair_example_prints_the_repair_it_promises():
    code = block("Repair in three lines")
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        exec(code, {})
    (line,) = printed.getvalue().splitlines()
    comment = re.search(r"# (site 'V'.*)$", code, re.M).group(1)
    position = 0
    for fragment in filter(None, (part.strip() for part in comment.split("..."))):
        position = line.index(fragment, position)  # each part of the comment, in order


@pytest.mark.timeout(300)
def test_the_blackjax_example_warns_with_the_coordinate(tmp_path):
    script = tmp_path / "example.py"  # a file, as a user's script: the warning quotes its line
    script.write_text(block("BlackJAX in ten lines"))
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed), pytest.warns(robusthmc.NonFiniteWarning) as warned:
        runpy.run_path(str(script))
    nonfinite, _ = map(int, printed.getvalue().split())
    assert nonfinite >= 2
    first_line = str(warned[0].message).splitlines()[0]
    assert "position['sigma']" in first_line and '-jnp.log(p["sigma"])' in first_line and "fix:" in first_line
