"""The NumPyro backend across numpyro releases: the checked ones, and a newer one."""

import warnings

import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist
import pytest
from numpyro.infer import MCMC

import robusthmc
import robusthmc.numpyro as rnp
from robusthmc.numpyro import _compat, _kernel


def test_the_installed_numpyro_is_one_the_transition_was_checked_against():
    assert numpyro.__version__ in _compat.CHECKED_VERSIONS
    assert _compat.transition_is_mirrored()


@pytest.fixture
def unchecked_numpyro(monkeypatch):
    """A numpyro whose transition differs from every checked one."""
    monkeypatch.setattr(_kernel, "transition_is_mirrored", lambda: False)
    monkeypatch.setattr(_kernel, "_warned_unchecked", False)


def hole():
    """Standard normal, but the log density is +inf above 1: numpyro's NUTS falls in."""
    x = numpyro.sample("x", dist.Normal(0.0, 1.0))
    numpyro.factor("hole", jnp.where(x > 1.0, jnp.inf, 0.0))


def run(kernel, init_params=None, **options):
    mcmc = MCMC(kernel, num_warmup=200, num_samples=300, progress_bar=False, **options)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=robusthmc.NonFiniteWarning)
        mcmc.run(jax.random.key(1), init_params=init_params)
    return mcmc


@pytest.mark.timeout(300)
def test_on_an_unchecked_numpyro_the_kernels_fall_back_warn_once_and_still_reject(monkeypatch):
    assert np.any(run(numpyro.infer.NUTS(hole)).get_samples()["x"] > 1.0)  # numpyro accepts +inf
    checked = run(rnp.NUTS(hole))
    monkeypatch.setattr(_kernel, "transition_is_mirrored", lambda: False)
    monkeypatch.setattr(_kernel, "_warned_unchecked", False)
    with pytest.warns(robusthmc.UncheckedNumpyroWarning, match="counted with the divergences") as warned:
        fallbacks = [run(rnp.NUTS(hole)), run(rnp.NUTS(hole, target_accept_prob=0.9))]
    assert len([w for w in warned if w.category is robusthmc.UncheckedNumpyroWarning]) == 1
    for mcmc in fallbacks:
        assert np.all(np.asarray(mcmc.get_samples()["x"]) <= 1.0)
    # The same rejections: where the checked kernel counts failures, the fallback counts divergences.
    fallback = fallbacks[0]
    np.testing.assert_array_equal(fallback.get_samples()["x"], checked.get_samples()["x"])
    failures = checked.get_extra_fields()["nonfinite"]
    assert int(failures.sum()) > 0
    np.testing.assert_array_equal(fallback.get_extra_fields()["diverging"], failures)
    assert not fallback.get_extra_fields()["nonfinite"].any()


@pytest.mark.timeout(300)
def test_on_an_unchecked_numpyro_failures_are_still_explained(unchecked_numpyro):
    def turing():
        s = numpyro.sample("s", dist.HalfNormal(10.0))
        numpyro.sample("V", dist.TruncatedNormal(0.0, s, low=0.0, high=jnp.inf))

    with pytest.warns(robusthmc.UncheckedNumpyroWarning):
        with pytest.raises(robusthmc.InitializationError, match=r"(?s)site 'V'.*high=None"):
            run(rnp.NUTS(turing))

    def nowhere_finite():
        x = numpyro.sample("x", dist.Normal(0.0, 1.0))
        numpyro.factor("trap", jnp.where(jnp.abs(x - 0.5) < 1e-6, 0.0, jnp.nan))

    # Every proposal fails: adaptation shrinks the step size until the guard stops the chain.
    with pytest.raises(robusthmc.StepSizeCollapseError, match="chain 0, warmup"):
        run(rnp.NUTS(nowhere_finite), init_params={"x": jnp.array(0.5)})


def test_every_private_numpyro_name_the_backend_reads_exists_here():
    assert _compat.missing_private_names() == []


def test_the_public_rebuild_of_unconstrain_reparam_gives_numpyros_terms():
    """Where a numpyro lacks _unconstrain_reparam, the site diagnosis evaluates the same terms."""
    import jax.numpy as jnp
    import numpyro.distributions as dist
    from numpyro.handlers import substitute, trace
    from numpyro.infer.util import _unconstrain_reparam

    def model():
        s = numpyro.sample("s", dist.InverseGamma(2.0, 3.0))
        numpyro.sample("w", dist.Dirichlet(jnp.ones(3)))
        numpyro.sample("y", dist.Normal(0.0, s), obs=1.0)

    point = {"s": jnp.array(0.3), "w": jnp.array([0.2, -0.1])}
    terms = []
    for reparam in (_unconstrain_reparam, _compat._public_unconstrain_reparam):
        tr = trace(
            substitute(model, substitute_fn=lambda site, reparam=reparam: reparam(point, site))
        ).get_trace()
        terms.append({name: site["fn"].log_prob(site["value"]).sum() for name, site in tr.items()})
    assert terms[0].keys() == terms[1].keys() and "_s_log_det" in terms[0]
    for name in terms[0]:
        assert float(terms[0][name]) == float(terms[1][name]), name
