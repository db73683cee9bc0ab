"""The wheel is the product: built, installed into fresh venvs, used as a newcomer would.

One venv with the ``numpyro`` extra and no torch, one with the ``pyro`` extra
(torch 2.13.0, the CPU wheel, installed first as the README says). Each runs
the backend's import, ``robusthmc --version`` and one fast repro case.
"""

import os
import subprocess
import sys
import tomllib
import venv
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
VERSION = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]


#: The pinned test environment, or the one ``make`` names (``make test-latest``).
CONSTRAINTS = os.environ.get("PIP_CONSTRAINT") or ROOT / "constraints.txt"

#: The fresh venvs see nothing of this one: no PYTHONPATH (a source tree on it would make
#: pip take robusthmc as installed already), no PYTHONHOME.
CLEAN_ENVIRONMENT = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}


def _run(*command, timeout=900):
    result = subprocess.run(
        [str(part) for part in command],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=CLEAN_ENVIRONMENT,
    )
    assert result.returncode == 0, f"{command}\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    return result.stdout


@pytest.fixture(scope="module")
def wheel(tmp_path_factory):
    out = tmp_path_factory.mktemp("dist")
    _run(sys.executable, "-m", "build", "--wheel", "--outdir", out, ROOT)
    (built,) = out.glob("robusthmc-*.whl")
    return built


def _fresh_venv(path, *requirements):
    venv.create(path, with_pip=True)
    python = path / "bin" / "python"
    # --no-compile: byte-compiling every file of torch or jax is most of an install's time;
    # Python compiles the few modules the test imports when it imports them.
    for requirement in requirements:
        _run(
            python,
            "-m",
            "pip",
            "install",
            "--quiet",
            "--no-compile",
            "--constraint",
            CONSTRAINTS,
            requirement,
        )
    return path / "bin"


@pytest.mark.timeout(1800)
def test_numpyro_wheel_without_torch(wheel, tmp_path):
    bin_ = _fresh_venv(tmp_path / "venv", f"{wheel}[numpyro]")
    checked = _run(
        bin_ / "python",
        "-c",
        "import importlib.util, robusthmc.numpyro\n"
        "print(importlib.util.find_spec('torch') is None, robusthmc.numpyro.NUTS.__module__)",
    )
    assert checked.split() == ["True", "robusthmc.numpyro._samplers"]
    assert _run(bin_ / "robusthmc", "--version").strip() == f"robusthmc {VERSION}"
    table = _run(bin_ / "robusthmc", "repro", "truncated-normal", "--backend", "numpyro", "--case", "guarded")
    assert "InitializationError" in table and table.rstrip().splitlines()[2].endswith("yes")


BLACKJAX_USE = """
import importlib.util, warnings
import jax, jax.numpy as jnp
import robusthmc, robusthmc.blackjax as rb
algo = rb.nuts(lambda x: jnp.where(x[0] > 1.0, jnp.nan, -0.5 * jnp.sum(x**2)), 0.8, jnp.ones(1))
def one_step(state, key):
    state, info = algo.step(key, state)
    return state, (state, info)
_, (states, infos) = jax.lax.scan(one_step, algo.init(jnp.zeros(1)), jax.random.split(jax.random.key(0), 300))
with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    rb.settle(states, infos)
print(importlib.util.find_spec("numpyro") is None, importlib.util.find_spec("torch") is None,
      int(infos.nonfinite.sum()) > 0, any(isinstance(w.message, robusthmc.NonFiniteWarning) for w in caught))
"""


@pytest.mark.timeout(1800)
def test_blackjax_wheel_needs_neither_numpyro_nor_torch(wheel, tmp_path):
    bin_ = _fresh_venv(tmp_path / "venv", f"{wheel}[blackjax]")
    assert _run(bin_ / "python", "-c", BLACKJAX_USE).split() == ["True", "True", "True", "True"]


@pytest.mark.timeout(1800)
def test_pyro_wheel(wheel, tmp_path):
    bin_ = _fresh_venv(tmp_path / "venv", "torch==2.13.0", f"{wheel}[pyro]")
    checked = _run(
        bin_ / "python",
        "-c",
        "import importlib.util, robusthmc.pyro\n"
        "print(importlib.util.find_spec('jax') is None, robusthmc.pyro.NUTS.__module__)",
    )
    assert checked.split() == ["True", "robusthmc.pyro._samplers"]
    assert _run(bin_ / "robusthmc", "--version").strip() == f"robusthmc {VERSION}"
    table = _run(bin_ / "robusthmc", "repro", "truncated-normal", "--backend", "pyro", "--case", "guarded")
    assert "InitializationError" in table and table.rstrip().splitlines()[2].endswith("yes")
