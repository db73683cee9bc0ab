"""The command line end to end, through the installed console script."""

import json
import pathlib
import shutil
import signal
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
        (["check", "robusthmc.lessons.numpyro"], "expected MODULE_OR_FILE:FUNCTION"),
        (["check", "no_such_module:model"], "module not found: no_such_module"),
        (["check", "robusthmc.lessons.numpyro:nothing"], "has no function 'nothing'"),
        (["check", "robusthmc.lessons.numpyro:__all__"], ":__all__ is a list (['eight_schools_centered', "),
        (["check", "robusthmc.lessons.numpyro:turing", "--args", "[1,"], "--args is not valid JSON"),
        (["check", "robusthmc.lessons.numpyro:turing", "--kwargs", "[]"], "--kwargs must be a JSON object"),
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
        ("robusthmc.lessons.numpyro:turing", "numpyro", 1),
        ("robusthmc.lessons.numpyro:eight_schools_centered", "numpyro", 0),
        ("robusthmc.lessons.pyro:turing", "pyro", 1),
        ("robusthmc.lessons.pyro:eight_schools_centered", "pyro", 0),
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


@pytest.mark.parametrize("backend", ["numpyro", "pyro"])
def test_check_repair_lists_the_repairs_then_checks_the_repaired_model(backend):
    target = f"robusthmc.lessons.{backend}:turing"
    result = robusthmc("check", target, "--repair", "--points", "5")
    assert result.returncode == 0, result.stderr
    first, repair, *report = result.stdout.splitlines()
    assert first == "repaired (1 site):" and repair.startswith("  site 'V': ") and "high=inf" in repair
    assert report[-1] == "clean: no numerical trap found"
    as_json = json.loads(robusthmc("check", target, "--repair", "--points", "5", "--json").stdout)
    assert as_json["clean"] and [r["site"] for r in as_json["repairs"]] == ["V"]


def test_check_repair_applies_no_fix_that_changes_the_model(tmp_path):
    model = tmp_path / "flat.py"
    model.write_text(
        textwrap.dedent(
            """
            import numpyro, numpyro.distributions as dist

            def model():
                numpyro.sample("spread", dist.Uniform(0.0, float("inf")))
            """
        )
    )
    result = robusthmc("check", f"{model}:model", "--repair", "--points", "5")
    assert result.returncode == 1, result.stderr
    assert result.stdout.startswith("repaired (0 sites):\n  no repair needed\n")
    assert "PROBLEM spread ~ Uniform" in result.stdout


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
        ["pgrep", "-f", "robusthmc.lessons.repro.pyro:uncapped"], capture_output=True, text=True
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


MODEL_FILES = {
    "syntax.py": "def model(:\n    pass\n",
    "missing_import.py": "import not_a_module_xyz\n\ndef model():\n    pass\n",
    "raises_at_import.py": "raise RuntimeError('boom at import')\n",
    "needs_data.py": textwrap.dedent(
        """
        import numpyro, numpyro.distributions as dist

        def model(y):
            mu = numpyro.sample("mu", dist.Normal(0.0, 1.0))
            numpyro.sample("y", dist.Normal(mu, 1.0), obs=y)
        """
    ),
    "pyro_models.py": textwrap.dedent(
        """
        import pyro, pyro.distributions as dist, torch

        def model():
            mu = pyro.sample("mu", dist.Normal(0.0, 1.0))
            pyro.sample("y", dist.Normal(mu, 1.0), obs=torch.tensor(0.5))

        def cholesky():
            rho = pyro.sample("rho", dist.Uniform(-1.5, 1.5))
            one = torch.ones(())
            cov = torch.stack([torch.stack([one, rho]), torch.stack([rho, one])])
            scale_tril = torch.linalg.cholesky(cov)
            pyro.sample("y", dist.MultivariateNormal(torch.zeros(2), scale_tril=scale_tril), obs=torch.ones(2))

        def buggy():
            mu = pyro.sample("mu", dist.Normal(0.0, 1.0))
            batch = []
            pyro.sample("y", dist.Normal(mu, sum(batch) / len(batch)), obs=torch.tensor(0.5))
        """
    ),
    "numpyro_models.py": textwrap.dedent(
        """
        import numpyro, numpyro.distributions as dist, jax.numpy as jnp

        def cholesky():
            rho = numpyro.sample("rho", dist.Uniform(-1.5, 1.5))
            cov = jnp.array([[1.0, rho], [rho, 1.0]])
            numpyro.sample("y", dist.MultivariateNormal(jnp.zeros(2), covariance_matrix=cov), obs=jnp.ones(2))
        """
    ),
}


@pytest.fixture
def models(tmp_path):
    for name, text in MODEL_FILES.items():
        (tmp_path / name).write_text(text)
    return tmp_path


def assert_one_clear_line(result, *words, code=2):
    assert result.returncode == code, result.stderr
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert 1 <= len(lines) <= 2, result.stderr
    for word in words:
        assert word in result.stderr, result.stderr


@pytest.mark.parametrize(
    "target, extra, words",
    [
        ("syntax.py:model", [], ["syntax.py", "line 1", "SyntaxError"]),
        ("missing_import.py:model", [], ["missing_import.py", "not_a_module_xyz", "ModuleNotFoundError"]),
        ("raises_at_import.py:model", [], ["raises_at_import.py", "RuntimeError: boom at import"]),
        ("needs_data.py:model", [], ["model(y)", "'y'", "--args"]),
        ("needs_data.py:model", ["--args", "[1.0]", "--points", "0"], ["--points", "0", "at least 1"]),
        ("needs_data.py:model", ["--args", "[1.0]", "--points", "-3"], ["--points", "-3", "at least 1"]),
        ("needs_data.py:model", ["--args", "[1.0]", "--backend", "pyro"], ["numpyro", "--backend numpyro"]),
        ("pyro_models.py:model", ["--backend", "numpyro"], ["pyro", "--backend pyro"]),
        ("pyro_models.py:buggy", [], ["ZeroDivisionError", "pyro_models.py", "line 18", "--traceback"]),
        ("needs_data.py:model", ["--args", '["a"]'], ["TypeError", "--args and --kwargs"]),
        ("syntax.py:", [], ["expected MODULE_OR_FILE:FUNCTION"]),
    ],
)
def test_check_input_mistakes_are_one_clear_line(models, target, extra, words):
    result = robusthmc("check", str(models / target), *extra)
    assert_one_clear_line(result, *words)


def test_check_traceback_flag_shows_the_whole_trace(models):
    result = robusthmc("check", str(models / "raises_at_import.py:model"), "--traceback")
    assert result.returncode == 2
    assert "Traceback" in result.stderr and "boom at import" in result.stderr


def test_check_finds_the_backend_a_model_is_written_for(models):
    result = robusthmc("check", str(models / "pyro_models.py:model"), "--points", "3")
    assert result.returncode == 0, result.stderr
    assert "(pyro)" in result.stdout


def test_check_reports_an_exception_at_a_point_as_a_finding(models):
    result = robusthmc("check", str(models / "pyro_models.py:cholesky"), "--points", "10")
    assert result.returncode == 1, result.stderr
    assert "Traceback" not in result.stderr
    assert "PROBLEM y" in result.stdout and "LinAlgError" in result.stdout and "line 12" in result.stdout


def test_check_names_a_failed_cholesky_once(models):
    result = robusthmc("check", str(models / "numpyro_models.py:cholesky"), "--points", "10")
    assert result.returncode == 1, result.stderr
    assert result.stderr == ""  # no RuntimeWarning leaks
    assert result.stdout.count("cause:") == 1 and "Cholesky" in result.stdout
    assert "covariance_matrix" in result.stdout and "positive definite" in result.stdout


@pytest.mark.parametrize(
    "args, words",
    [
        (["repro", "truncated-normal", "--timeout", "-5"], ["--timeout", "-5"]),
        (["repro", "truncated-normal", "--timeout", "nan"], ["--timeout", "nan"]),
        (["repro", "gpytorch-prior", "--steps", "0"], ["--steps", "0"]),
    ],
)
def test_impossible_values_are_refused(args, words):
    assert_one_clear_line(robusthmc(*args), *words)


def test_version_and_python_dash_m():
    from importlib.metadata import version

    result = robusthmc("--version")
    assert result.returncode == 0 and result.stdout.strip() == f"robusthmc {version('robusthmc')}"
    module = subprocess.run([sys.executable, "-m", "robusthmc", "--help"], capture_output=True, text=True)
    assert module.returncode == 0 and "usage: robusthmc" in module.stdout


def test_help_refers_only_to_what_ships():
    for command in ([], ["repro"], ["check"]):
        assert "lessons.md" not in robusthmc(*command, "--help").stdout


def test_ctrl_c_is_one_line_exit_130_and_leaves_no_case_running():
    process = subprocess.Popen(
        [ROBUSTHMC, "repro", "truncated-normal", "--backend", "numpyro", "--case", "uncapped_search"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    time.sleep(8)  # well inside the case, which runs until its 60 s watchdog
    cases = subprocess.run(["pgrep", "-P", str(process.pid)], capture_output=True, text=True).stdout.split()
    assert cases, "no case was running"
    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=60)
    assert process.returncode == 130
    assert stderr.strip().splitlines()[-1] == "robusthmc: interrupted" and "Traceback" not in stderr
    assert not [pid for pid in cases if pathlib.Path(f"/proc/{pid}").exists()], "a case is still running"


def test_the_backend_is_found_through_the_models_helper_functions():
    from robusthmc._check import model_backend

    namespace = {"__name__": "user_models"}
    exec(MODEL_FILES["pyro_models.py"] + "\ndef via_helper():\n    cholesky()\n", namespace)
    assert model_backend(namespace["via_helper"]) == "pyro"
    exec("def recursive():\n    return recursive()\n", namespace)
    assert model_backend(namespace["recursive"]) is None


@pytest.mark.parametrize(
    "command, told",
    [
        (["-m", "robusthmc.lessons.repro"], "usage: python -m robusthmc.lessons.repro MODULE:FUNCTION"),
        (["-m", "robusthmc.lessons.repro", "no-colon"], "usage: python -m robusthmc.lessons.repro"),
        (
            [str(pathlib.Path(__file__).parents[1] / "tools" / "build_notebooks.py"), "9"],
            "no notebook's name starts",
        ),
    ],
)
def test_the_helper_entry_points_refuse_a_mistake_in_one_line(command, told):
    result = subprocess.run([sys.executable, *command], capture_output=True, text=True, timeout=60)
    assert result.returncode == 2 and result.stderr.strip().startswith(told)
    assert len(result.stderr.strip().splitlines()) == 1
