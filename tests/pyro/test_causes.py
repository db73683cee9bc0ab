"""The failures Pyro users report, each named on the first line with its cause and fix.

Our own instances of each class: a wall inside a latent's support (a factor, a
likelihood narrower than the latent), float32 that cannot resolve the posterior,
a Cholesky that fails (by hand and in ``pyro.contrib.gp``).
"""

import warnings
from pathlib import Path

import pyro
import pyro.contrib.gp as gp
import pyro.distributions as dist
import pytest
import torch
from pyro.infer import MCMC, NUTS
from pyro.infer.autoguide.initialization import init_to_value
from pyro.nn import PyroSample

import robusthmc
import robusthmc.pyro as rp
from robusthmc import Guard

pytestmark = pytest.mark.timeout(300)


def factor_wall():
    x = pyro.sample("x", dist.Normal(0.0, 1.0))
    pyro.factor("w", torch.where(x < 0, torch.tensor(-float("inf")), torch.tensor(0.0)))


def narrower_likelihood():
    """x is declared real, but it is observed under an exponential: its density is 0 for x < 0."""
    x = pyro.sample("x", dist.Normal(1.0, 1.0))
    pyro.sample("y", dist.Exponential(1.0), obs=x)


COUNTS = torch.poisson(torch.full((200,), 1e9), generator=torch.Generator().manual_seed(0))


def huge_counts():
    lam = pyro.sample("lam", dist.LogNormal(0.0, 30.0))
    pyro.sample("y", dist.Poisson(lam).expand([200]).to_event(1), obs=COUNTS)


def correlation_beyond_one():
    r = pyro.sample("r", dist.Uniform(-2.0, 2.0))
    one = torch.tensor(1.0)
    matrix = torch.stack([torch.stack([one, r]), torch.stack([r, one])])
    pyro.sample("z", dist.MultivariateNormal(torch.zeros(2), scale_tril=torch.linalg.cholesky(matrix)))


def gp_with_a_variance_that_can_go_negative():
    """A GP regression whose kernel variance has a prior on the whole real line."""
    x = torch.linspace(0.0, 1.0, 8)
    kernel = gp.kernels.RBF(input_dim=1)
    kernel.variance = PyroSample(dist.Normal(0.0, 1.0))
    return gp.models.GPRegression(x, 0.01 * torch.sin(6 * x), kernel, noise=torch.tensor(1e-3)).model


Y_WITH_A_NAN = torch.tensor([0.3, float("nan"), 1.2])


def nan_in_the_data():
    """A missing value left in the data as NaN: the likelihood is NaN at every point."""
    mu = pyro.sample("mu", dist.Normal(0.0, 1.0))
    with pyro.plate("data", 3):
        pyro.sample("y", dist.Normal(mu, 1.0), obs=Y_WITH_A_NAN)


X = torch.linspace(-3.0, 3.0, 50)


def separable_with_probs():
    """A logistic regression written with probs=sigmoid: on separable data the sigmoid saturates."""
    b = pyro.sample("b", dist.Normal(0.0, 100.0))
    with pyro.plate("data", 50):
        pyro.sample("y", dist.Bernoulli(probs=1.0 / (1.0 + torch.exp(-b * X))), obs=(X > 0).float())


def separable_with_logits():
    b = pyro.sample("b", dist.Normal(0.0, 100.0))
    with pyro.plate("data", 50):
        pyro.sample("y", dist.Bernoulli(logits=b * X), obs=(X > 0).float())


PROPORTIONS = torch.tensor([0.2, 0.5, 0.0, 0.9, 1.0, 0.4])


def beta_regression(y=PROPORTIONS):
    """Proportions with an exact 0 and 1: Beta's density there is 0 or infinite."""
    m = pyro.sample("m", dist.Beta(2.0, 2.0))
    k = pyro.sample("k", dist.HalfNormal(10.0))
    with pyro.plate("data", len(y)):
        pyro.sample("y", dist.Beta(m * k, (1 - m) * k), obs=y)


SERIALS = torch.tensor([10.0, 256.0, 202.0, 97.0])


def tank_count():
    """The German tank problem: the data bound the latent from below, through Uniform(0, n)."""
    n = pyro.sample("n", dist.HalfNormal(300.0))
    with pyro.plate("data", 4):
        pyro.sample("s", dist.Uniform(0.0, n), obs=SERIALS)


SPREAD = torch.tensor([1257.0, -2643.0, 721.0, 3310.0, -1874.0, 402.0, -955.0, 2210.0, -3120.0, 88.0])


def scale_under_a_tight_uniform(prior=None):
    """A scale whose prior's bound lies far below what the data say."""
    sigma = pyro.sample("sigma", prior or dist.Uniform(0.0, 0.5))
    pyro.sample("y", dist.Normal(0.0, sigma).expand([len(SPREAD)]).to_event(1), obs=SPREAD)


def counts_with_a_fraction():
    rate = pyro.sample("rate", dist.Gamma(2.0, 1.0))
    pyro.sample("k", dist.Poisson(rate).expand([3]).to_event(1), obs=torch.tensor([1.0, 2.5, 3.0]))


SUCCESSES = torch.tensor([2.0, 7.0])


def successes_above_the_trials(counts=SUCCESSES):
    p = pyro.sample("p", dist.Beta(1.0, 1.0))
    pyro.sample("k", dist.Binomial(5, p).expand([2]).to_event(1), obs=counts)


def labels_counted_from_one():
    p = pyro.sample("p", dist.Dirichlet(torch.ones(3)))
    with pyro.plate("n", 5):
        pyro.sample("c", dist.Categorical(p), obs=torch.tensor([1, 3, 2, 3, 1]))


def binary_with_a_two(mask=True):
    p = pyro.sample("p", dist.Beta(1.0, 1.0))
    with pyro.plate("n", 4):
        pyro.sample("y", dist.Bernoulli(p).mask(mask), obs=torch.tensor([1.0, 0.0, 2.0, 1.0]))


def negative_waiting_times():
    rate = pyro.sample("rate", dist.Gamma(2.0, 1.0))
    with pyro.plate("n", 4):
        pyro.sample("t", dist.Exponential(rate), obs=torch.tensor([1.0, -1.0, 0.5, 2.0]))


def root_in_a_where(x_floor=None):
    """sqrt behind a torch.where: 0 for x <= 0, but sqrt(x) is NaN there and so is its gradient."""
    x = pyro.sample("x", dist.Normal(0.0, 1.0))
    safe = x if x_floor is None else torch.where(x > 0, x, x_floor)  # the double where
    pyro.factor("f", torch.where(x > 0, safe.sqrt(), 0.0))  # WHERE_LINE


def root_in_a_masked_fill_in_an_argument():
    x = pyro.sample("x", dist.Normal(0.0, 1.0))
    loc = x.sqrt().masked_fill(x <= 0, 0.0)  # ARGUMENT_LINE
    pyro.sample("y", dist.Normal(loc, 1.0).expand([2]).to_event(1), obs=torch.tensor([0.3, 0.1]))


def log_of_a_shifted_latent():
    x = pyro.sample("x", dist.Normal(0.0, 1.0))
    pyro.factor("f", (x + 1.0).log())  # LOG_LINE


def log_in_an_argument():
    x = pyro.sample("x", dist.Normal(0.0, 1.0))
    loc = torch.log(x + 1.0)  # ARGUMENT_LOG_LINE
    pyro.sample("y", dist.Normal(loc, 1.0).expand([2]).to_event(1), obs=torch.tensor([5.1, -5.2]))


def line_of(marker):
    lines = Path(__file__).read_text().splitlines()
    return next(number for number, line in enumerate(lines, 1) if line.endswith(f"# {marker}"))


def run(model, kernel=rp.NUTS, guard=None, warmup=150, samples=150):
    pyro.set_rng_seed(0)
    mcmc = MCMC(kernel(model, guard=guard), num_samples=samples, warmup_steps=warmup, disable_progbar=True)
    mcmc.run()
    return mcmc


def first_warning_line(model):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        mcmc = run(model)
    found = [w for w in caught if issubclass(w.category, robusthmc.NonFiniteWarning)]
    assert found, [str(w.message)[:200] for w in caught]
    return str(found[0].message).splitlines()[0], mcmc


def test_a_factor_wall_is_named_and_the_draws_are_not_to_be_trusted():
    first, _ = first_warning_line(factor_wall)
    assert first.startswith("site 'w': the factor is -inf here: a wall")
    assert "fix: declare that support" in first and "do not trust the draws" in first


def test_a_likelihood_narrower_than_the_latent_is_rejected_not_walked_through():
    # Pyro's MCMC turns validation off: Exponential's log density is then -x for x < 0,
    # and stock NUTS samples a wrong posterior without a word.
    first, mcmc = first_warning_line(narrower_likelihood)
    assert first.startswith("site 'y': its value lies outside the support of Exponential: a wall")
    assert (mcmc.get_samples()["x"] >= 0).all()  # no draw where the density is 0


def test_raise_stops_at_the_wall():
    with pytest.raises(robusthmc.NonFiniteError) as caught:
        run(narrower_likelihood, guard=Guard(on_nonfinite="raise"))
    assert str(caught.value).splitlines()[0].startswith("site 'y': its value lies outside the support")


def test_float32_that_cannot_resolve_the_posterior_says_so_and_names_float64():
    with pytest.raises(robusthmc.StepSizeCollapseError) as caught:
        run(huge_counts)
    first = str(caught.value).splitlines()[0]
    assert "float32 cannot resolve" in first and "torch.set_default_dtype(torch.float64)" in first


def test_a_failed_cholesky_is_named_a_cholesky_with_its_fix():
    first, _ = first_warning_line(correlation_beyond_one)
    assert first.startswith("a Cholesky factorisation failed") and "fix: " in first and "jitter" in first


def test_a_contrib_gp_cholesky_failure_is_counted_and_named():
    first, mcmc = first_warning_line(gp_with_a_variance_that_can_go_negative())
    assert "Cholesky" in first and "fix: " in first
    assert mcmc.kernel.nonfinite_by_chain[0][1] > 0


def test_a_contrib_gp_that_fails_at_the_start_is_a_named_error_not_a_lapack_traceback():
    model = gp_with_a_variance_that_can_go_negative()
    start = {"kernel.variance": torch.tensor(-1.0)}
    with pytest.raises(robusthmc.InitializationError) as caught:
        MCMC(rp.NUTS(model), num_samples=5, warmup_steps=5, initial_params=start).run()
    first = str(caught.value).splitlines()[0]
    assert first.startswith("a Cholesky factorisation failed") and "(at the start: initial_params" in first


def test_our_truncated_normal_runs_exactly_with_its_location_far_outside_the_bounds():
    import mpmath

    mpmath.mp.dps = 50
    exact_mean = float(mpmath.npdf(15) / (mpmath.erfc(15 / mpmath.sqrt(2)) / 2))

    def far():
        pyro.sample("x", rp.TruncatedNormal(0.0, 1.0, low=15.0))

    draws = run(far, warmup=200, samples=400).get_samples()["x"]
    assert bool((draws > 15.0).all()) and abs(float(draws.mean()) - exact_mean) < 0.02


def large_mean():
    mu = pyro.sample("mu", dist.Normal(0.0, 1e10))
    pyro.sample("y", dist.Normal(mu, 1.0).expand([1000]).to_event(1), obs=1e9 + torch.arange(1000.0))


def test_a_chain_float32_cannot_move_warns_that_its_draws_are_no_sample():
    # With adaptation the step size collapses (a StepSizeCollapseError naming float32, as for
    # huge_counts); at a fixed step size every proposal is rejected and the chain stays put.
    kernel = rp.NUTS(large_mean, step_size=0.1, adapt_step_size=False, adapt_mass_matrix=False)
    start = {"mu": torch.tensor(1e9 + 500.0)}
    pyro.set_rng_seed(0)
    mcmc = MCMC(kernel, num_samples=60, warmup_steps=10, initial_params=start, disable_progbar=True)
    with pytest.warns(robusthmc.FrozenChainWarning) as caught:
        mcmc.run()
    first = str(caught[0].message).splitlines()[0]
    assert first.startswith("site 'mu': mu kept the value 1e+09 for all 60 sampling draws")
    assert "float32 steps by 64" in first and "torch.set_default_dtype(torch.float64)" in first


def test_nan_in_the_data_is_named_as_the_data_not_a_wall():
    with pytest.raises(robusthmc.InitializationError) as caught:
        run(nan_in_the_data)
    first = str(caught.value).splitlines()[0]
    assert first.startswith("site 'y': the observed data holds NaN (1 of 3 values)"), first
    assert "fix: " in first and "obs_mask" in first and "wall" not in first
    report = robusthmc.check(nan_in_the_data, points=3)
    assert [cause.kind for cause in report.sites[1].causes] == ["nonfinite_data"], str(report)


def test_a_saturated_probability_is_named_with_logits_as_its_fix_and_the_fix_works():
    first, _ = first_warning_line(separable_with_probs)
    assert first.startswith("site 'y': Bernoulli's probs saturated at exactly 0 or 1"), first
    assert "fix: pass the log-odds: Bernoulli(logits=eta)" in first
    report = robusthmc.check(separable_with_probs, points=10)
    kinds = [cause.kind for site in report.sites for cause in site.causes]
    assert kinds == ["saturated_probability"], str(report)
    with warnings.catch_warnings():
        warnings.simplefilter("error", robusthmc.RobustHMCWarning)
        run(separable_with_logits, warmup=100, samples=100)
    assert robusthmc.check(separable_with_logits, points=10).clean


def test_data_on_the_edge_of_the_support_is_named_as_the_data_not_a_wall():
    with pytest.raises(robusthmc.InitializationError) as caught:
        run(beta_regression)
    first = str(caught.value).splitlines()[0]
    assert first.startswith(
        "site 'y': the observed data holds 2 of 6 values on the edge of the support of Beta"
    )
    assert "fix: drop those values, move them just inside the support" in first and "wall" not in first
    n = len(PROPORTIONS)
    squeezed = (PROPORTIONS * (n - 1) + 0.5) / n
    assert robusthmc.check(lambda: beta_regression(squeezed), points=10).clean
    with warnings.catch_warnings():
        warnings.simplefilter("error", robusthmc.RobustHMCWarning)
        run(lambda: beta_regression(squeezed), warmup=100, samples=100)


def test_a_bound_computed_from_the_latents_is_a_wall_not_the_data():
    report = robusthmc.check(tank_count, points=10)
    assert [cause.kind for cause in report.sites[1].causes] == ["support_mismatch"], str(report)


def test_a_latent_pinned_against_its_priors_bound_is_named_with_the_bound_and_the_fix_works():
    with pytest.warns(robusthmc.FrozenChainWarning) as caught:
        run(scale_under_a_tight_uniform)
    first = str(caught[0].message).splitlines()[0]
    assert first.startswith("site 'sigma': sigma kept the value 0.5, the upper bound of its support"), first
    assert "fix: a prior that allows sigma beyond 0.5 (widen that bound" in first
    with warnings.catch_warnings():
        warnings.simplefilter("error", robusthmc.RobustHMCWarning)
        draws = run(lambda: scale_under_a_tight_uniform(dist.HalfNormal(5000.0))).get_samples()["sigma"]
    assert 1000 < float(draws.median()) < 4000


def test_discrete_data_outside_the_support_are_named_as_the_data():
    # Pyro's MCMC validates nothing: 7 successes of 5 trials is a NaN log density, and 2.5
    # events a finite one (torch's Poisson takes any value), so only the doctor can see it.
    with pytest.raises(robusthmc.InitializationError) as caught:
        run(successes_above_the_trials)
    first = str(caught.value).splitlines()[0]
    assert first.startswith("site 'k': the observed data holds 1 of 2 values outside the support of Binomial")
    assert "fix: counts must be whole numbers from 0 to at most total_count" in first
    report = robusthmc.check(counts_with_a_fraction, points=3)
    assert [cause.kind for cause in report.sites[1].causes] == ["data_at_edge"], str(report)
    assert "1 of 3 values outside the support of Poisson" in str(report)
    with warnings.catch_warnings():
        warnings.simplefilter("error", robusthmc.RobustHMCWarning)
        run(lambda: successes_above_the_trials(torch.tensor([2.0, 5.0])))


@pytest.mark.parametrize(
    ("value", "said"),
    [
        ([-1.0, 0.5], "sigma=array of 2 (min -1, max 0.5) lies outside its support GreaterThan"),
        (
            [0.5, float("inf")],
            "sigma=array of 2 (min 0.5, max inf) is not a finite point of its support GreaterThan",
        ),
    ],
)
def test_a_start_the_user_gives_outside_the_support_is_named_as_the_start(value, said):
    def model():
        with pyro.plate("two", 2):
            sigma = pyro.sample("sigma", dist.HalfNormal(1.0))
            pyro.sample("y", dist.Normal(0.0, sigma), obs=torch.tensor([0.1, -0.3]))

    start = init_to_value(values={"sigma": torch.tensor(value)})
    with pytest.raises(robusthmc.InitializationError) as caught:
        MCMC(rp.NUTS(model, init_strategy=start), num_samples=10, warmup_steps=10, disable_progbar=True).run()
    first = str(caught.value).splitlines()[0]
    assert first.startswith(f"site 'sigma': the starting value {said}"), first
    assert "fix: start inside the support" in first and "tail" not in first


@pytest.mark.parametrize(
    ("model", "said"),
    [
        (
            counts_with_a_fraction,
            "site 'k': the observed data holds 1 of 3 values outside the support of Poisson",
        ),
        (
            labels_counted_from_one,
            "site 'c': the observed data holds 2 of 5 values outside the support of Categorical",
        ),
        (
            binary_with_a_two,
            "site 'y': the observed data holds 1 of 4 values outside the support of Bernoulli",
        ),
        (
            negative_waiting_times,
            "site 't': the observed data holds 1 of 4 values outside the support of Exponential; "
            "fix: a likelihood whose support holds the data",
        ),
    ],
)
def test_mcmc_stops_on_data_outside_the_support_where_pyro_samples_a_wrong_posterior(model, said):
    # Pyro's MCMC validates nothing: torch's formulas are finite there (a Bernoulli "2", a
    # negative waiting time), so stock Pyro samples a posterior of data it cannot have, or
    # fails indexing a Categorical with label 3 of 3.
    with pytest.raises(robusthmc.InitializationError) as caught:
        run(model, warmup=10, samples=10)
    first = str(caught.value).splitlines()[0]
    assert first.startswith(said), first


def test_data_outside_the_support_stop_a_run_from_the_users_initial_params():
    # initial_params skip Pyro's search for a start: the data are checked all the same.
    pyro.set_rng_seed(0)
    mcmc = MCMC(
        rp.NUTS(binary_with_a_two),
        num_samples=10,
        warmup_steps=10,
        initial_params={"p": torch.tensor(0.0)},  # unconstrained: p = 0.5
        disable_progbar=True,
    )
    with pytest.raises(robusthmc.InitializationError) as caught:
        mcmc.run()
    first = str(caught.value).splitlines()[0]
    assert first.startswith(
        "site 'y': the observed data holds 1 of 4 values outside the support of Bernoulli"
    ), first


def test_masked_out_data_may_lie_outside_the_support():
    # A placeholder for a missing value, masked out, is no data: the run is Pyro's own.
    mask = torch.tensor([True, True, False, True])
    with warnings.catch_warnings():
        warnings.simplefilter("error", robusthmc.RobustHMCWarning)
        draws = run(lambda: binary_with_a_two(mask), warmup=50, samples=50).get_samples()["p"]
    pyros = run(
        lambda: binary_with_a_two(mask), kernel=lambda model, guard: NUTS(model), warmup=50, samples=50
    )
    stock = pyros.get_samples()["p"]
    assert torch.equal(draws, stock)

    def masked_by_a_handler():
        with pyro.poutine.mask(mask=mask):
            binary_with_a_two()

    assert torch.equal(run(masked_by_a_handler, warmup=50, samples=50).get_samples()["p"], stock)


@pytest.mark.parametrize(
    ("model", "site", "call", "marker"),
    [
        (root_in_a_where, "f", "torch.where", "WHERE_LINE"),
        (root_in_a_masked_fill_in_an_argument, "y", "masked_fill", "ARGUMENT_LINE"),
    ],
)
def test_a_where_that_hides_a_nan_is_named_at_its_line_and_the_double_where_works(model, site, call, marker):
    first, _ = first_warning_line(model)
    where = f"{call} at test_causes.py:{line_of(marker)}"
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
    made = f'`pyro.factor("f", (x + 1.0).log())` gives nan (test_causes.py:{line_of("LOG_LINE")})'
    assert first.startswith(f"site 'f': factor's log_factor is NaN: {made}"), first
    report = str(robusthmc.check(log_in_an_argument, points=10))
    made = f"`loc = torch.log(x + 1.0)` gives nan (test_causes.py:{line_of('ARGUMENT_LOG_LINE')})"
    assert f"site 'y': Normal's loc is NaN: {made}; fix: constrain the latents loc" in report, report


def test_check_names_labels_outside_the_categories_and_lets_the_models_own_error_through():
    # torch's Categorical indexes its probabilities with the label: 3 of 3 categories would
    # raise inside torch; the doctor names the data instead.
    report = robusthmc.check(labels_counted_from_one, points=2)
    assert [cause.kind for cause in report.sites[1].causes] == ["data_at_edge"], str(report)
    assert "recode the labels to run from 0 to K-1" in str(report)

    # A log density that raises the user's own error: it propagates, never "clean".
    class Broken(dist.Normal):
        def log_prob(self, value):
            raise KeyError("the user's own bug")

    def broken():
        mu = pyro.sample("mu", dist.Normal(0.0, 1.0))
        pyro.sample("y", Broken(mu, 1.0), obs=torch.tensor(0.5))

    with pytest.raises(KeyError, match="the user's own bug"):
        robusthmc.check(broken, points=2)
