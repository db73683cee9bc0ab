"""What a NumPyro user reads: initialisation errors that name the real cause, reports that print."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist
import pytest
from numpyro.infer import MCMC

import robusthmc
import robusthmc.numpyro as rnp
from robusthmc import Guard
from tests.progress import record_bars_and_warnings

pytestmark = pytest.mark.timeout(300)


def cliff(limit=1.5):
    """Healthy near 0; the likelihood's scale sqrt(limit - x) is NaN beyond x = limit."""
    x = numpyro.sample("x", dist.Normal(0.0, 1.0))
    numpyro.sample("y", dist.Normal(0.0, jnp.sqrt(limit - x)), obs=0.3)


def test_invalid_init_params_are_named_as_the_users():
    mcmc = MCMC(rnp.NUTS(cliff), num_warmup=10, num_samples=10, progress_bar=False)
    with pytest.raises(robusthmc.InitializationError) as info:
        mcmc.run(jax.random.key(0), init_params={"x": jnp.array(2.0)})
    message = str(info.value)
    first = message.splitlines()[0]
    assert first.startswith("site 'y': Normal's scale is NaN") and "fix: " in first
    assert first.endswith("(at the start: init_params (given to MCMC.run))")
    assert "{x: 2}" in message and "leave init_params out" in message


def test_a_random_initial_point_the_distributions_reject_is_a_rejected_point():
    # numpyro validates distribution arguments on concrete values: the second chain's
    # first initial point (x = 1.53 > 1.5) made the model raise before any search.
    kernel = rnp.NUTS(cliff, guard=Guard(on_nonfinite="ignore"))
    mcmc = MCMC(kernel, num_warmup=50, num_samples=50, num_chains=2, progress_bar=False)
    mcmc.run(jax.random.key(0))
    assert np.isfinite(mcmc.get_samples()["x"]).all()


def nan_beyond_one(z):
    return jnp.where(z["x"] > 1.0, jnp.nan, 0.5 * z["x"] ** 2)


def test_a_potential_fn_failure_is_not_blamed_on_terms_adding_up():
    kernel = rnp.NUTS(potential_fn=nan_beyond_one, guard=Guard(on_nonfinite="raise"))
    mcmc = MCMC(kernel, num_warmup=100, num_samples=200, progress_bar=False)
    with pytest.raises(robusthmc.NonFiniteError) as info:
        mcmc.run(jax.random.key(0), init_params={"x": jnp.array(0.0)})
    message = str(info.value)
    assert "potential_fn" in message and "added up" not in message


def test_a_diagnosis_prints_as_text_and_converts_to_json():
    kernel = rnp.NUTS(cliff, guard=Guard(on_nonfinite="raise"))
    mcmc = MCMC(kernel, num_warmup=100, num_samples=300, progress_bar=False)
    with pytest.raises(robusthmc.NonFiniteError) as info:
        mcmc.run(jax.random.key(1))
    diagnosis = info.value.diagnosis
    text = str(diagnosis)
    assert text.startswith("where: chain 0, sampling") and "site 'y'" in text and "Diagnosis(" not in text
    data = json.loads(json.dumps(diagnosis.to_dict()))
    assert data["phase"] == "sampling" and data["sites"][0]["site"] == "y"


def test_the_report_is_written_after_the_progress_bars_close(monkeypatch):
    monkeypatch.delenv("CI", raising=False)  # numpyro turns the bar off under CI
    events = record_bars_and_warnings(monkeypatch)
    mcmc = MCMC(rnp.NUTS(cliff), num_warmup=100, num_samples=300, num_chains=2, chain_method="sequential")
    with pytest.warns(robusthmc.NonFiniteWarning):
        mcmc.run(jax.random.key(1))
    assert "bar closed" in events
    assert "warning" not in events[: max(i for i, e in enumerate(events) if e == "bar closed")]
