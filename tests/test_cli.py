"""The command line end to end, through the installed console script."""

import json
import pathlib
import shutil
import subprocess
import sys
import textwrap
import time

import pytest

from tests.test_core import BLOCK_BACKENDS

# The console script installed beside this interpreter (the venv need not be activated).
ROBUSTHMC = shutil.which("robusthmc", path=str(pathlib.Path(sys.executable).parent)) or pytest.fail(
    "the robusthmc console script is not installed beside " + sys.executable
)


def robusthmc(*args, timeout=600):
    return subprocess.run([ROBUSTHMC, *args], capture_output=True, text=True, timeout=timeout)


@pytest.mark.parametrize("command", [[], ["repro"], ["check"]])
def test_help_has_examples(command):
    result = robusthmc(*command, "--help")
    assert result.returncode == 0
    assert command == [] or "examples:" in result.stdout


@pytest.mark.parametrize(
    "args, message",
    [
        (["check", "nope.py:model"], "file not found: nope.py"),
        (["check", "robusthmc.numpyro.examples"], "expected MODULE_OR_FILE:FUNCTION"),
        (["check", "no_such_module:model"], "module not found: no_such_module"),
        (["check", "robusthmc.numpyro.examples:nothing"], "has no function 'nothing'"),
        (["check", "robusthmc.numpyro.examples:turing", "--args", "[1,"], "--args is not valid JSON"),
        (["check", "robusthmc.numpyro.examples:turing", "--kwargs", "[]"], "--kwargs must be a JSON object"),
        (["repro", "truncated-normal", "--case", "nope"], "unknown case nope"),
        (["repro", "truncated-normal", "--backend", "jax"], "invalid choice: 'jax'"),
    ],
)
def test_input_mistakes_are_one_line_and_exit_2(args, message):
    result = robusthmc(*args)
    assert result.returncode == 2
    assert message in result.stderr
    assert "Traceback" not in result.stderr
    assert len([line for line in result.stderr.splitlines() if line.startswith("robusthmc")]) == 1


def test_missing_backend_is_one_line_with_the_install_hint():
    code = BLOCK_BACKENDS + textwrap.dedent(
        """
        from robusthmc.cli import main
        sys.exit(main(["repro", "gpytorch-prior"]))
        """
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 2
    assert (
        result.stderr.strip()
        == 'robusthmc: error: the pyro backend is not installed: pip install "robusthmc[pyro]"'
    )


@pytest.mark.parametrize(
    "target, backend, code",
    [
        ("robusthmc.numpyro.examples:turing", "numpyro", 1),
        ("robusthmc.numpyro.examples:eight_schools_centered", "numpyro", 0),
        ("robusthmc.pyro.examples:turing", "pyro", 1),
        ("robusthmc.pyro.examples:eight_schools_centered", "pyro", 0),
    ],
)
def test_check_flags_broken_models_and_passes_clean_ones(target, backend, code):
    result = robusthmc("check", target, "--backend", backend, "--points", "5", "--json")
    assert result.returncode == code, result.stderr
    report = json.loads(result.stdout)
    assert report["clean"] == (code == 0) and report["points"] == 10
    if code:
        (site,) = [s for s in report["sites"] if s["problem"]]
        assert site["site"] == "V" and site["causes"][0]["kind"] == "infinite_bound"
        assert "high=None" in site["causes"][0]["fix"]


def test_check_reads_a_file_and_its_arguments(tmp_path):
    model = tmp_path / "regression.py"
    model.write_text(
        textwrap.dedent(
            """
            import numpyro, numpyro.distributions as dist, jax.numpy as jnp

            def model(y, low=0.0):
                mu = numpyro.sample("mu", dist.Normal(0.0, 20.0))
                sigma = numpyro.sample("sigma", dist.HalfNormal(5.0))
                numpyro.sample("y", dist.TruncatedNormal(mu, sigma, low=low), obs=jnp.asarray(y))
            """
        )
    )
    result = robusthmc("check", f"{model}:model", "--args", "[[0.1, 0.5, 0.2]]", "--kwargs", '{"low": 0.0}')
    assert result.returncode == 1, result.stderr
    assert "PROBLEM y ~ TruncatedNormal" in result.stdout and "float32" in result.stdout


@pytest.mark.timeout(300)
def test_repro_rows_as_json_and_the_watchdog():
    start = time.perf_counter()
    result = robusthmc(
        "repro", "truncated-normal", "--backend", "pyro", "--timeout", "8", "--json",
        "--case", "stock", "--case", "uncapped_search", "--case", "guarded",
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    rows = json.loads(result.stdout)
    assert [row["case"] for row in rows] == ["stock", "uncapped_search", "guarded"]
    for row in rows:
        assert {"case", "backend", "sampler", "outcome", "seconds", "message", "as_documented"} <= row.keys()
        assert row["as_documented"] is True
    hung = rows[1]
    assert hung["outcome"] == "hung (stopped after 8 s)"
    assert 8 <= hung["seconds"] < 8 + 10
    assert "with a NaN gradient" in hung["message"]
    assert "site 'V'" in rows[2]["message"] and "high=None" in rows[2]["message"]
    assert time.perf_counter() - start < 120
    leftover = subprocess.run(
        ["pgrep", "-f", "robusthmc.pyro._repro:uncapped"], capture_output=True, text=True
    )
    assert leftover.stdout.strip() == "", "a case's child process outlived the run"


def test_repro_table_is_printed_with_exit_code():
    result = robusthmc("repro", "truncated-normal", "--backend", "numpyro", "--case", "stock")
    assert result.returncode == 0, result.stderr
    assert "numpyro NUTS" in result.stdout and "Cannot find valid initial parameters" in result.stdout


def test_repro_gpytorch_prior_rows():
    result = robusthmc("repro", "gpytorch-prior", "--case", "stock", "--case", "audit", "--json")
    assert result.returncode == 0, result.stdout + result.stderr
    stock, report = json.loads(result.stdout)
    assert stock["outcome"] == "crashed" and "none returned" in stock["message"]
    assert "likelihood.noise" in report["message"] and "1.13%" in report["message"]
