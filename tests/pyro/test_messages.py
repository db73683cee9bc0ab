"""What a Pyro user reads: initialisation errors that name the real cause, warnings after the bars."""

import json

import pyro
import pyro.distributions as dist
import pytest
import torch
from pyro.infer import MCMC

import robusthmc
import robusthmc.pyro as rp
from robusthmc import Guard
from tests.progress import record_bars_and_warnings

pytestmark = pytest.mark.timeout(300)


def cliff():
    """Healthy near 0; the likelihood's scale sqrt(1.5 - x) is NaN beyond x = 1.5."""
    x = pyro.sample("x", dist.Normal(0.0, 1.0))
    pyro.sample("y", dist.Normal(0.0, torch.sqrt(1.5 - x)), obs=torch.tensor(0.3))


def test_invalid_initial_params_are_named_as_the_users():
    mcmc = MCMC(rp.NUTS(cliff), num_samples=10, warmup_steps=10, initial_params={"x": torch.tensor(2.0)})
    with pytest.raises(robusthmc.InitializationError) as info:
        mcmc.run()
    message = str(info.value)
    first = message.splitlines()[0]
    assert first.startswith("site 'y': Normal's scale is NaN") and "fix: " in first
    assert first.endswith("(at the start: initial_params (given to MCMC))")
    assert "{x: 2}" in message and "leave initial_params out" in message
    assert "1 attempts" not in message and "more attempts" not in message and "site 'y'" in message


def nan_beyond_one(z):
    x = z["x"]
    return torch.where(x > 1.0, torch.full_like(x, float("nan")), 0.5 * x**2)


def test_a_potential_fn_failure_is_not_blamed_on_terms_adding_up():
    pyro.set_rng_seed(0)
    kernel = rp.NUTS(potential_fn=nan_beyond_one, guard=Guard(on_nonfinite="raise"))
    mcmc = MCMC(kernel, num_samples=300, warmup_steps=100, initial_params={"x": torch.tensor(0.0)})
    with pytest.raises(robusthmc.NonFiniteError) as info:
        mcmc.run()
    message = str(info.value)
    assert "potential_fn" in message and "added up" not in message
    assert json.loads(json.dumps(info.value.diagnosis.to_dict()))["source"] == "potential_fn"


def test_warnings_are_written_after_the_progress_bars_close(monkeypatch):
    events = record_bars_and_warnings(monkeypatch)
    pyro.set_rng_seed(0)
    mcmc = MCMC(rp.NUTS(cliff), num_samples=200, warmup_steps=100, num_chains=2)
    with pytest.warns(robusthmc.NonFiniteWarning) as caught:
        mcmc.run()
    assert events.count("warning") == 1 and events[-1] == "warning" and "bar closed" in events
    (warning,) = [w for w in caught if issubclass(w.category, robusthmc.NonFiniteWarning)]
    assert "chain 0:" in str(warning.message) and "chain 1:" in str(warning.message)


def test_a_check_report_prints_as_the_command_line_does_and_converts_to_json():
    from robusthmc.lessons.pyro import turing

    report = robusthmc.check(turing, points=3)
    text = str(report)
    assert text.startswith("robusthmc check: turing (pyro), 6 points") and "PROBLEM V" in text
    assert (
        text.splitlines()[-1].startswith("1 site needs fixing: site 'V': high=inf")
        and "CheckReport(" not in text
    )
    data = json.loads(json.dumps(report.to_dict()))
    assert data["clean"] is False and [s["site"] for s in data["sites"] if s["problem"]] == ["V"]


def test_an_audit_prints_as_a_table_and_converts_to_json():
    from robusthmc.gpytorch import audit
    from robusthmc.lessons.gpytorch import periodic_gp

    report = audit(periodic_gp().gp)
    lines = str(report).splitlines()
    assert lines[0].split() == ["parameter", "prior", "constraint", "mass", "it", "cannot", "represent"]
    assert lines[1].startswith("FLAG  likelihood.noise") and lines[-1] == "a prior is flagged"
    data = json.loads(json.dumps(report.to_dict()))
    assert data["clean"] is False and data["rows"][0]["parameter"] == "noise"


def test_a_factor_site_is_called_a_factor_site():
    def model():
        x = pyro.sample("x", dist.Normal(0.0, 1.0))
        pyro.factor("wall", x * float("nan"))

    kernel = rp.NUTS(model, guard=robusthmc.Guard(max_init_attempts=5))
    with pytest.raises(robusthmc.InitializationError) as info:
        MCMC(kernel, num_samples=5, warmup_steps=5, disable_progbar=True).run()
    message = str(info.value)
    assert "site 'wall' ~ factor(log_factor=nan)" in message and "factor's argument log_factor" in message
    assert "Unit" not in message
