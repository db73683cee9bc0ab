"""The failures NumPyro users report, each named on the first line with its cause and fix.

Each model is our own instance of a class of failure: a wall inside a latent's
support, an improper posterior, float32 that cannot resolve the posterior, a
Cholesky that fails.
"""

import warnings
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist
import pytest
from numpyro.infer import MCMC, init_to_value

import robusthmc
import robusthmc.numpyro as rnp
from robusthmc import Guard

pytestmark = pytest.mark.timeout(300)


def factor_wall():
    """x is declared real, but a factor rejects x < 0 with -inf (Stan style)."""
    x = numpyro.sample("x", dist.Normal(0.0, 1.0))
    numpyro.factor("w", jnp.where(x < 0, -jnp.inf, 0.0))


def narrower_likelihood():
    """x is declared real, but it is observed under an exponential: its density is 0 for x < 0."""
    x = numpyro.sample("x", dist.Normal(1.0, 1.0))
    numpyro.sample("y", dist.Exponential(1.0), obs=x)


def improper():
    """Data that a logistic regression separates, and a flat prior: nothing bounds b."""
    b = numpyro.sample("b", dist.ImproperUniform(dist.constraints.real, (), ()))
    numpyro.sample("y", dist.Bernoulli(logits=b * jnp.array([1.0, 2.0, 3.0])), obs=jnp.ones(3))


COUNTS = np.random.default_rng(0).poisson(1e9, size=200).astype(np.float32)


def huge_counts():
    """Counts near 1e9: the log density is about 1e12 at the start, beyond float32's resolution."""
    lam = numpyro.sample("lam", dist.LogNormal(0.0, 30.0))
    numpyro.sample("y", dist.Poisson(lam), obs=COUNTS)


def correlation_beyond_one():
    """A 2x2 correlation built from r in (-2, 2): not positive definite for |r| >= 1."""
    r = numpyro.sample("r", dist.Uniform(-2.0, 2.0))
    matrix = jnp.array([[1.0, r], [r, 1.0]])
    numpyro.sample("z", dist.MultivariateNormal(jnp.zeros(2), scale_tril=jnp.linalg.cholesky(matrix)))


def inf_in_the_data():
    """An overflowed measurement left in the data: the likelihood is -inf at every point."""
    mu = numpyro.sample("mu", dist.Normal(0.0, 1.0))
    with numpyro.plate("data", 4):
        numpyro.sample("y", dist.Normal(mu, 1.0), obs=jnp.array([0.3, jnp.inf, 1.2, jnp.nan]))


X = jnp.linspace(-3.0, 3.0, 50)


def separable_with_probs():
    """A logistic regression written with probs=sigmoid: on separable data the sigmoid saturates."""
    b = numpyro.sample("b", dist.Normal(0.0, 100.0))
    numpyro.sample("y", dist.Bernoulli(probs=1.0 / (1.0 + jnp.exp(-b * X))), obs=X > 0)


def separable_with_logits():
    b = numpyro.sample("b", dist.Normal(0.0, 100.0))
    numpyro.sample("y", dist.Bernoulli(logits=b * X), obs=X > 0)


DOSES = np.linspace(0.0, 1000.0, 40)
EVENTS = np.random.default_rng(0).poisson(np.exp(0.5 + 0.003 * DOSES)).astype(np.float32)


def poisson_regression(dose=DOSES):
    """A Poisson regression on an unscaled covariate: exp(b0 + b1 * dose) leaves float32's range."""
    b0 = numpyro.sample("b0", dist.Normal(0.0, 5.0))
    b1 = numpyro.sample("b1", dist.Normal(0.0, 1.0))
    numpyro.sample("y", dist.Poisson(jnp.exp(b0 + b1 * dose)), obs=EVENTS)


PROPORTIONS = np.array([0.2, 0.5, 0.0, 0.9, 1.0, 0.4], dtype=np.float32)


def beta_regression(y=PROPORTIONS):
    """Proportions with an exact 0 and 1: Beta's density there is 0 or infinite."""
    m = numpyro.sample("m", dist.Beta(2.0, 2.0))
    k = numpyro.sample("k", dist.HalfNormal(10.0))
    numpyro.sample("y", dist.Beta(m * k, (1 - m) * k), obs=y)


def lognormal_with_a_zero():
    mu = numpyro.sample("mu", dist.Normal(0.0, 1.0))
    numpyro.sample("z", dist.LogNormal(mu, 1.0), obs=np.array([1.2, 0.0, 3.4, 0.7]))


SERIALS = np.array([10.0, 256.0, 202.0, 97.0])


def tank_count():
    """The German tank problem: the data bound the latent from below, through Uniform(0, n)."""
    n = numpyro.sample("n", dist.HalfNormal(300.0))
    numpyro.sample("s", dist.Uniform(0.0, n), obs=SERIALS)


def proportions_made_jax_arrays_in_the_model(y=PROPORTIONS):
    """As many models write it: the data made a JAX array inside the model (traced, still data)."""
    m = numpyro.sample("m", dist.Beta(2.0, 2.0))
    k = numpyro.sample("k", dist.HalfNormal(10.0))
    numpyro.sample("y", dist.Beta(m * k, (1 - m) * k), obs=jnp.asarray(y))


def below_a_detection_limit_given_as_a_jax_array():
    """A constant bound made a JAX array in the model: data below it are the data's fault."""
    mu = numpyro.sample("mu", dist.Normal(0.0, 5.0))
    limit = jnp.array(0.5)
    numpyro.sample("x", dist.TruncatedNormal(mu, 1.0, low=limit), obs=jnp.array([1.0, 0.2, 2.0]))


def tank_count_with_jax_data():
    n = numpyro.sample("n", dist.HalfNormal(300.0))
    numpyro.sample("s", dist.Uniform(0.0, n), obs=jnp.asarray(SERIALS))


SPREAD = np.random.default_rng(1).normal(0.0, 2000.0, 20)


def scale_under_a_tight_uniform(prior=None):
    """A scale whose prior's bound lies far below what the data say."""
    sigma = numpyro.sample("sigma", prior or dist.Uniform(0.0, 0.5))
    numpyro.sample("y", dist.Normal(0.0, sigma), obs=SPREAD)


LABELS = np.array([1, 3, 2, 3, 1])  # counted from 1, as a spreadsheet does


def labels_counted_from_one(labels=LABELS):
    p = numpyro.sample("p", dist.Dirichlet(jnp.ones(3)))
    numpyro.sample("c", dist.Categorical(p), obs=labels)


def counts_with_a_fraction():
    rate = numpyro.sample("rate", dist.Gamma(2.0, 1.0))
    numpyro.sample("k", dist.Poisson(rate), obs=np.array([1.0, 2.5, 3.0]))


def successes_above_the_trials():
    p = numpyro.sample("p", dist.Beta(1.0, 1.0))
    numpyro.sample("k", dist.Binomial(5, p).expand([2]).to_event(1), obs=np.array([2, 7]))


def waits_counted_in_whole_minutes():
    rate = numpyro.sample("rate", dist.LogNormal(0.0, 1.0))
    numpyro.sample("wait", dist.Exponential(rate), obs=np.array([0, 1, 2]))


def root_in_a_where(x_floor=None):
    """sqrt behind a jnp.where: 0 for x <= 0, but sqrt(x) is NaN there and so is its gradient."""
    x = numpyro.sample("x", dist.Normal(0.0, 1.0))
    safe = x if x_floor is None else jnp.where(x > 0, x, x_floor)  # the double where
    numpyro.factor("f", jnp.where(x > 0, jnp.sqrt(safe), 0.0))  # WHERE_LINE


def root_in_a_where_in_an_argument():
    x = numpyro.sample("x", dist.Normal(0.0, 1.0))
    loc = jnp.where(x > 0, jnp.sqrt(x), 0.0)  # ARGUMENT_LINE
    numpyro.sample("y", dist.Normal(loc, 1.0), obs=np.array([0.3, 0.1]))


def log_of_a_shifted_latent():
    x = numpyro.sample("x", dist.Normal(0.0, 1.0))
    numpyro.factor("f", jnp.log(x + 1.0))  # LOG_LINE


def log_in_an_argument():
    x = numpyro.sample("x", dist.Normal(0.0, 1.0))
    loc = jnp.log(x + 1.0)  # ARGUMENT_LOG_LINE
    numpyro.sample("y", dist.Normal(loc, 1.0), obs=np.array([5.1, -5.2]))


def line_of(marker):
    lines = Path(__file__).read_text().splitlines()
    return next(number for number, line in enumerate(lines, 1) if line.endswith(f"# {marker}"))


def run(model, kernel=rnp.NUTS, guard=None, warmup=200, samples=200):
    mcmc = MCMC(kernel(model, guard=guard), num_warmup=warmup, num_samples=samples, progress_bar=False)
    mcmc.run(jax.random.key(0))
    return mcmc


def first_warning_line(model, kernel=rnp.NUTS):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        run(model, kernel)
    found = [w for w in caught if issubclass(w.category, robusthmc.NonFiniteWarning)]
    assert found, [str(w.message)[:200] for w in caught]
    return str(found[0].message).splitlines()[0], caught


@pytest.mark.parametrize(
    ("model", "site", "marker"),
    [(root_in_a_where, "f", "WHERE_LINE"), (root_in_a_where_in_an_argument, "y", "ARGUMENT_LINE")],
)
def test_a_jnp_where_that_hides_a_nan_is_named_at_its_line_and_the_double_where_works(model, site, marker):
    first, _ = first_warning_line(model)
    where = f"jnp.where at test_causes.py:{line_of(marker)}"
    assert first.startswith(f"site '{site}': {where} hides a NaN or inf in the branch it does not take"), (
        first
    )
    assert "fix: make that branch finite too, the double where" in first
    report = robusthmc.check(model, points=10)
    assert [cause.kind for cause in report.sites[-1].causes] == ["hidden_nonfinite"], str(report)
    with warnings.catch_warnings():
        warnings.simplefilter("error", robusthmc.RobustHMCWarning)
        run(lambda: root_in_a_where(x_floor=1.0))


def test_a_nan_is_traced_to_the_users_operation_that_made_it():
    first, _ = first_warning_line(log_of_a_shifted_latent)
    made = f'`numpyro.factor("f", jnp.log(x + 1.0))` gives nan (test_causes.py:{line_of("LOG_LINE")})'
    assert first.startswith(f"site 'f': factor's log_factor is NaN: {made}"), first
    report = str(robusthmc.check(log_in_an_argument, points=10))
    made = f"`loc = jnp.log(x + 1.0)` gives nan (test_causes.py:{line_of('ARGUMENT_LOG_LINE')})"
    assert f"site 'y': Normal's loc is NaN: {made}; fix: constrain the latents loc" in report, report


@pytest.mark.parametrize("kernel", [rnp.NUTS, rnp.HMC])
def test_a_factor_wall_is_named_and_the_draws_are_not_to_be_trusted(kernel):
    first, _ = first_warning_line(factor_wall, kernel)
    assert first.startswith("site 'w': the factor is -inf here: a wall")
    assert "fix: declare that support" in first and "(None)" not in first
    assert "do not trust the draws" in first


def test_raise_stops_at_a_factor_wall():
    with pytest.raises(robusthmc.NonFiniteError) as caught:
        run(factor_wall, guard=Guard(on_nonfinite="raise"))
    assert str(caught.value).splitlines()[0].startswith("site 'w': the factor is -inf here: a wall")


def test_a_likelihood_narrower_than_the_latent_is_a_wall_at_its_site():
    first, _ = first_warning_line(narrower_likelihood)
    assert first.startswith("site 'y': its value lies outside the support of Exponential: a wall")
    assert "fix: " in first


def test_an_improper_posterior_is_named_as_a_drift_not_a_step_size():
    with pytest.raises(robusthmc.StepSizeCollapseError) as caught:
        run(improper, warmup=300, samples=100)
    first = str(caught.value).splitlines()[0]
    assert first.startswith("site 'b': b drifts to ") and "the posterior looks improper" in first
    assert "fix: a proper prior on b" in first


def test_check_takes_a_flat_prior_it_cannot_draw_from_where_numpyro_starts_it():
    # ImproperUniform has no sample(): its "prior draws" are uniform(-2, 2) unconstrained
    # points, as numpyro's init_to_uniform takes them (every point here is finite).
    report = robusthmc.check(improper, points=5)
    assert report.clean, str(report)
    assert "b ~ ImproperUniform" in str(report)


def test_float32_that_cannot_resolve_the_posterior_says_so_and_names_x64():
    with pytest.raises(robusthmc.StepSizeCollapseError) as caught:
        run(huge_counts)
    first = str(caught.value).splitlines()[0]
    assert "float32 cannot resolve" in first and "fix: numpyro.enable_x64()" in first


def test_a_failed_cholesky_names_scale_tril_and_the_word_cholesky():
    first, _ = first_warning_line(correlation_beyond_one)
    assert first.startswith(
        "site 'z': MultivariateNormal's scale_tril is NaN: a Cholesky factorisation failed"
    )
    assert "fix: " in first and "jitter" in first


def test_check_prints_cholesky_for_a_model_with_jnp_linalg_cholesky():
    report = robusthmc.check(correlation_beyond_one, points=20)
    text = str(report)
    assert "Cholesky" in text
    summary = text.splitlines()[-1]
    assert summary.startswith("1 site needs fixing: site 'z': ") and "fix: " in summary


def test_a_healthy_model_gives_no_stop_and_no_warning():
    def healthy():
        numpyro.sample("x", dist.Normal(0.0, 1.0))

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        mcmc = run(healthy)
    assert np.isfinite(mcmc.get_samples()["x"]).all()


def truncated_mean(low):
    """The exact mean of a standard normal truncated to (low, inf), with mpmath."""
    import mpmath

    mpmath.mp.dps = 50
    a = mpmath.mpf(low)
    return float(mpmath.npdf(a) / (mpmath.erfc(a / mpmath.sqrt(2)) / 2))


@pytest.mark.parametrize("dtype, low", [("float32", 15.0), ("float64", 40.0)])
def test_a_location_far_outside_the_bounds_is_named_at_the_site_and_ours_runs_exactly(request, dtype, low):
    if dtype == "float64":
        request.getfixturevalue("float64")

    def stock():
        numpyro.sample("x", dist.TruncatedNormal(0.0, 1.0, low=low))

    def exact():
        numpyro.sample("x", rnp.TruncatedNormal(0.0, 1.0, low=low))

    summary = str(robusthmc.check(stock, points=5)).splitlines()[-1]
    assert summary.startswith(f"1 site needs fixing: site 'x': low lies {low:g} standard deviations from loc")
    assert f"overflows in {dtype}; fix: robusthmc.numpyro.TruncatedNormal" in summary
    assert robusthmc.check(exact, points=5).clean
    draws = run(exact, warmup=300, samples=1000).get_samples()["x"]
    assert draws.dtype == dtype and bool((draws > low).all())
    assert abs(float(draws.mean()) - truncated_mean(low)) < 0.02  # sd of x is about 1/low


def large_mean():
    """A mean near 1e9 known to 0.03: float32 steps by 64 there, so the chain cannot move."""
    mu = numpyro.sample("mu", dist.Normal(0.0, 1e10))
    numpyro.sample("y", dist.Normal(mu, 1.0), obs=1e9 + jnp.arange(1000.0))


def test_a_chain_float32_cannot_move_warns_that_its_draws_are_no_sample():
    with pytest.warns(robusthmc.FrozenChainWarning) as caught:
        run(large_mean)
    first = str(caught[0].message).splitlines()[0]
    assert first.startswith("site 'mu': mu kept the value 1e+09 for all 200 sampling draws")
    assert "float32 steps by 64" in first and "fix: numpyro.enable_x64()" in first


def test_in_float64_the_same_model_samples_its_posterior(float64):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        draws = run(large_mean).get_samples()["mu"]
    assert abs(float(np.std(draws)) - 1 / np.sqrt(1000)) < 0.01


def test_non_finite_data_is_named_as_the_data_not_a_wall():
    with pytest.raises(robusthmc.InitializationError) as caught:
        run(inf_in_the_data)
    first = str(caught.value).splitlines()[0]
    assert first.startswith("site 'y': the observed data holds NaN and inf (2 of 4 values)"), first
    assert "fix: " in first and "obs_mask" in first and "wall" not in first
    report = robusthmc.check(inf_in_the_data, points=3)
    assert [cause.kind for cause in report.sites[1].causes] == ["nonfinite_data"], str(report)


def test_a_saturated_probability_is_named_with_logits_as_its_fix_and_the_fix_works():
    first, _ = first_warning_line(separable_with_probs)
    assert first.startswith("site 'y': BernoulliProbs's probs saturated at exactly 0 or 1"), first
    assert "fix: pass the log-odds: Bernoulli(logits=eta)" in first
    report = robusthmc.check(separable_with_probs, points=10)
    assert "saturated_probability" in [cause.kind for cause in report.sites[1].causes], str(report)
    with warnings.catch_warnings():
        warnings.simplefilter("error", robusthmc.RobustHMCWarning)
        run(separable_with_logits)
    assert robusthmc.check(separable_with_logits, points=10).clean


def test_a_rate_that_left_the_float_range_is_named_as_such_and_standardising_fixes_it():
    report = robusthmc.check(poisson_regression, points=10)
    kinds = {cause.kind for cause in report.sites[2].causes}
    assert kinds and kinds <= {"nonpositive_scale", "infinite_argument"}, str(report)
    summary = str(report).splitlines()[-1]
    assert "flowed to" in summary and "moderate scale" in summary and "None" not in summary, summary
    standardised = (DOSES - DOSES.mean()) / DOSES.std()
    assert robusthmc.check(lambda: poisson_regression(standardised), points=10).clean


def test_data_on_the_edge_of_the_support_or_outside_is_named_as_the_data_not_a_wall():
    with pytest.raises(robusthmc.InitializationError) as caught:
        run(beta_regression)
    first = str(caught.value).splitlines()[0]
    assert first.startswith(
        "site 'y': the observed data holds 2 of 6 values on the edge of the support of Beta"
    )
    assert "fix: drop those values, move them just inside the support" in first and "wall" not in first
    report = robusthmc.check(lognormal_with_a_zero, points=3)
    assert [cause.kind for cause in report.sites[1].causes] == ["data_at_edge"], str(report)
    assert "1 of 4 values outside the support of LogNormal" in str(report)
    report = robusthmc.check(waits_counted_in_whole_minutes, points=3)  # integer data too
    assert [cause.kind for cause in report.sites[1].causes] == ["data_at_edge"], str(report)
    # The fix the cause names: the proportions moved just inside (0, 1).
    n = len(PROPORTIONS)
    squeezed = (PROPORTIONS * (n - 1) + 0.5) / n
    assert robusthmc.check(lambda: beta_regression(squeezed), points=10).clean
    with warnings.catch_warnings():
        warnings.simplefilter("error", robusthmc.RobustHMCWarning)
        run(lambda: beta_regression(squeezed))


def test_data_made_jax_arrays_inside_the_model_are_still_named_as_the_data():
    # Traced at evaluation like a value computed from the latents: told apart by what they
    # depend on, not by their type.
    with pytest.raises(robusthmc.InitializationError) as caught:
        run(proportions_made_jax_arrays_in_the_model)
    first = str(caught.value).splitlines()[0]
    assert first.startswith(
        "site 'y': the observed data holds 2 of 6 values on the edge of the support of Beta"
    )
    report = robusthmc.check(below_a_detection_limit_given_as_a_jax_array, points=3)
    assert [cause.kind for cause in report.sites[1].causes] == ["data_at_edge"], str(report)
    assert "1 of 3 values outside the support of TruncatedNormal" in str(report)


@pytest.mark.parametrize("model", [tank_count, tank_count_with_jax_data])
def test_a_bound_computed_from_the_latents_is_a_wall_whatever_the_datas_type(model):
    # numpyro's constraint tests NumPy data with NumPy: the check died on the traced bound.
    report = robusthmc.check(model, points=10)
    assert [cause.kind for cause in report.sites[1].causes] == ["support_mismatch"], str(report)
    assert "a wall inside the latents' support" in str(report).splitlines()[-1]


def test_a_latent_pinned_against_its_priors_bound_is_named_with_the_bound_and_the_fix_works():
    with pytest.warns(robusthmc.FrozenChainWarning) as caught:
        run(scale_under_a_tight_uniform)
    first = str(caught[0].message).splitlines()[0]
    assert first.startswith("site 'sigma': sigma kept the value 0.5, the upper bound of its support"), first
    assert "fix: a prior that allows sigma beyond 0.5 (widen that bound" in first
    with warnings.catch_warnings():
        warnings.simplefilter("error", robusthmc.RobustHMCWarning)
        draws = run(lambda: scale_under_a_tight_uniform(dist.HalfNormal(5000.0))).get_samples()["sigma"]
    assert 1000 < float(np.median(draws)) < 4000


def test_discrete_data_outside_the_support_are_named_as_the_data_with_the_recoding_fix():
    # Not a wall among the latents: no value of them makes these data possible.
    with pytest.raises(robusthmc.InitializationError) as caught:
        run(labels_counted_from_one)
    first = str(caught.value).splitlines()[0]
    assert first.startswith(
        "site 'c': the observed data holds 2 of 5 values outside the support of Categorical"
    )
    assert "fix: recode the labels to run from 0 to K-1 (y - 1 for labels counted from 1)" in first
    assert "wall" not in first
    for model, count in ((counts_with_a_fraction, "1 of 3"), (successes_above_the_trials, "1 of 2")):
        report = robusthmc.check(model, points=3)
        assert [cause.kind for cause in report.sites[1].causes] == ["data_at_edge"], str(report)
        assert f"{count} values outside the support" in str(report) and "wall" not in str(report)
    assert "at most total_count" in str(robusthmc.check(successes_above_the_trials, points=3))
    # The fix it names: the labels recoded from 0.
    with warnings.catch_warnings():
        warnings.simplefilter("error", robusthmc.RobustHMCWarning)
        run(lambda: labels_counted_from_one(LABELS - 1))


def test_continuous_data_outside_the_support_get_a_likelihood_that_holds_them():
    def negative_data_under_a_half_normal():
        s = numpyro.sample("s", dist.HalfNormal(1.0))
        with numpyro.plate("n", 4):
            numpyro.sample("y", dist.HalfNormal(s), obs=np.array([0.5, -1.0, 0.3, 2.0]))

    with pytest.raises(robusthmc.InitializationError) as caught:
        run(negative_data_under_a_half_normal, warmup=10, samples=10)
    first = str(caught.value).splitlines()[0]
    assert first.startswith(
        "site 'y': the observed data holds 1 of 4 values outside the support of HalfNormal"
    )
    assert "fix: a likelihood whose support holds the data" in first and "hurdle" not in first, first


@pytest.mark.parametrize(
    ("value", "said"),
    [
        ([-1.0, 0.5], "sigma=array of 2 (min -1, max 0.5) lies outside its support Positive"),
        (
            [0.5, float("inf")],
            "sigma=array of 2 (min 0.5, max inf) is not a finite point of its support Positive",
        ),
    ],
)
def test_a_start_the_user_gives_outside_the_support_is_named_as_the_start(value, said):
    def model():
        with numpyro.plate("two", 2):
            sigma = numpyro.sample("sigma", dist.HalfNormal(1.0))
        numpyro.sample("y", dist.Normal(0.0, sigma), obs=np.array([0.1, -0.3]))

    start = init_to_value(values={"sigma": np.array(value)})
    with pytest.raises(robusthmc.InitializationError) as caught:
        mcmc = MCMC(rnp.NUTS(model, init_strategy=start), num_warmup=10, num_samples=10, progress_bar=False)
        mcmc.run(jax.random.key(0))
    first = str(caught.value).splitlines()[0]
    assert first.startswith(f"site 'sigma': the starting value {said}"), first
    assert "fix: start inside the support" in first and "tail" not in first
