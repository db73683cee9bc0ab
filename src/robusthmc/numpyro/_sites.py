"""Per-site evaluation of a numpyro model at one point, for the diagnosis.

The numbers (each site's log-density term and its gradient with respect to
every latent) are computed here with JAX; what they mean is decided by
:func:`robusthmc._diagnosis.find_site_problems`.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Collection, Mapping, Sequence
from functools import partial
from typing import Any, TypeVar

import jax
import jax.numpy as jnp
import numpy as np
import numpyro
from jax.extend.core import Var
from numpyro import distributions as dist
from numpyro.distributions import truncated as numpyro_truncated
from numpyro.distributions.transforms import biject_to
from numpyro.handlers import seed, substitute
from numpyro.infer.util import compute_log_probs

from robusthmc._causes import DistributionInfo, Family, data_at_edge, nonfinite_data
from robusthmc._diagnosis import Diagnosis, Phase, PointEvaluation, failing_terms
from robusthmc.jax._origins import Origins, nonfinite_origins
from robusthmc.numpyro._compat import unconstrain_reparam, validation_enabled

__all__ = [
    "SiteEvaluator",
    "describe_distribution",
    "latents_outside_support",
    "quietly",
    "support_bounds",
    "unconstrained_latents",
]

T = TypeVar("T")

_WRAPPERS = (dist.Independent, dist.ExpandedDistribution, dist.MaskedDistribution)
_TRUNCATED = (
    numpyro_truncated.LeftTruncatedDistribution,
    numpyro_truncated.RightTruncatedDistribution,
    numpyro_truncated.TwoSidedTruncatedDistribution,
)


def _arguments(fn: Any) -> tuple[str, Family, bool, dict[str, Any]] | None:
    """``(name, family, exact_tails, arguments)`` of a distribution; works on traced values."""
    while isinstance(fn, _WRAPPERS):
        fn = fn.base_dist
    if not isinstance(fn, dist.Distribution):
        return None

    def present(**arguments: Any) -> dict[str, Any]:
        return {k: v for k, v in arguments.items() if v is not None}

    if getattr(fn, "robusthmc_exact_tails", False):
        return (
            "TruncatedNormal",
            "truncated_normal",
            True,
            present(loc=fn.loc, scale=fn.scale, low=fn.low, high=fn.high),
        )
    if isinstance(fn, _TRUNCATED):
        base = fn.base_dist
        bounds = present(low=getattr(fn, "low", None), high=getattr(fn, "high", None))
        if isinstance(base, dist.Normal):
            return (
                "TruncatedNormal",
                "truncated_normal",
                False,
                {"loc": base.loc, "scale": base.scale, **bounds},
            )
        base_arguments = present(**{k: getattr(base, k, None) for k in base.arg_constraints})
        return (
            f"TruncatedDistribution({type(base).__name__})",
            "truncated",
            False,
            {**base_arguments, **bounds},
        )
    if isinstance(fn, dist.Unit):
        return "factor", "other", False, {"log_factor": fn.log_factor}
    family: Family = "uniform" if isinstance(fn, dist.Uniform) else "other"
    return type(fn).__name__, family, False, present(**{k: getattr(fn, k, None) for k in fn.arg_constraints})


def _info(kind: tuple[str, Family, bool, dict[str, Any]], discrete: bool) -> DistributionInfo:
    name, family, exact_tails, arguments = kind
    arrays = {k: np.asarray(v, dtype=np.float64) for k, v in arguments.items()}
    return DistributionInfo(
        name, family, arrays, str(jnp.result_type(float)), "numpyro", exact_tails, discrete
    )


def describe_distribution(fn: Any) -> DistributionInfo | None:
    """Describe a numpyro distribution for the diagnosis (issue: detection of infinite arguments).

    Recognises numpyro's own ``TruncatedNormal``/``TruncatedDistribution``,
    ``Uniform``, robusthmc's ``TruncatedNormal``, and any distribution's
    ``arg_constraints`` arguments; wrappers (``Independent``, ``expand``,
    ``mask``) are looked through.

    Examples
    --------
    >>> import jax.numpy as jnp
    >>> from numpyro import distributions as dist
    >>> from robusthmc._causes import known_causes
    >>> info = describe_distribution(dist.TruncatedNormal(0.0, 2.0, low=0.0, high=jnp.inf))
    >>> str(info), [c.fix.split(":")[0] for c in known_causes(info)]
    ('TruncatedNormal(loc=0, scale=2, low=0, high=inf)', ['write high=None (no bound) instead of high=inf'])
    """
    if not isinstance(fn, dist.Distribution):
        raise TypeError(f"describe_distribution(fn={fn!r}): expected a numpyro distribution")
    kind = _arguments(fn)
    return None if kind is None else _info(kind, fn.support.is_discrete)


def _term_name(name: str) -> str:
    # numpyro adds the log-Jacobian of site `x` as a factor site `_x_log_det`.
    if name.startswith("_") and name.endswith("_log_det"):
        return f"{name[1 : -len('_log_det')]} (transform)"
    return name


Where = tuple[Phase, int | None, int | None]


def param_values(model_trace: Mapping[str, Any]) -> dict[str, Any]:
    """The values of the ``param`` (and ``mutable``) sites in a model's trace."""
    return {name: site["value"] for name, site in model_trace.items() if site["type"] in ("param", "mutable")}


def as_potential_sees_it(model: Callable, params: Mapping[str, Any]) -> Callable:
    """``model`` with its ``param`` sites fixed at ``params`` and a default PRNG key."""
    return seed(substitute(model, data=dict(params)), 0)


def quietly(run: Callable[[], T]) -> T:
    """``run()`` with numpyro's checks and warnings off: the points diagnosed are bad on purpose."""
    with warnings.catch_warnings(), numpyro.validation_enabled(False):
        warnings.simplefilter("ignore")
        return run()


def unconstrained_latents(model_trace: Mapping[str, Any]) -> dict[str, Any]:
    """The continuous latent sites of a trace, mapped to unconstrained space."""
    return {
        name: biject_to(site["fn"].support).inv(site["value"])
        for name, site in model_trace.items()
        if site["type"] == "sample" and not site["is_observed"] and not site["fn"].support.is_discrete
    }


def latents_outside_support(
    model_trace: Mapping[str, Any], given: Collection[str] = ()
) -> dict[str, tuple[Any, str]]:
    """The continuous latents of a trace whose value lies outside their support: ``(value, support)``.

    Those named in ``given`` (values the user chose) count also where not finite: an
    infinite value passes ``Positive``'s check, yet no transform maps it.
    """

    def outside(name: str, site: Mapping[str, Any]) -> bool:
        value = jnp.asarray(site["value"])
        return not bool(jnp.all(site["fn"].support(value))) or (
            name in given and not bool(jnp.all(jnp.isfinite(value)))
        )

    return {
        name: (np.asarray(site["value"]), repr(site["fn"].support))
        for name, site in model_trace.items()
        if site["type"] == "sample"
        and not site["is_observed"]
        and not site["fn"].support.is_discrete
        and outside(name, site)
    }


def support_bounds(model_trace: Any) -> dict[str, tuple[Any, Any]]:
    """``(lower, upper)`` of each continuous latent's support (``None`` where it has none)."""

    def as_array(bound: Any) -> Any:
        return None if bound is None else np.asarray(bound, np.float64)

    return {
        name: (as_array(lower), as_array(upper))
        for name, site in model_trace.items()
        if site["type"] == "sample" and not site["is_observed"] and not site["fn"].support.is_discrete
        for lower, upper in [_limits(site["fn"].support)]
    }


class SiteEvaluator:
    """Each site's log-density term and its gradients at many points, compiled once.

    Keep one per model and data to diagnose several runs without recompiling
    (with ``batch_size`` the most points a call passes).
    """

    def __init__(
        self, model: Callable, model_args: tuple, model_kwargs: Mapping[str, Any], batch_size: int = 1
    ) -> None:
        self.model, self.model_args, self.model_kwargs = model, model_args, dict(model_kwargs)
        self.batch_size = batch_size
        # Static facts about each site's distribution, gathered while tracing
        # (argument order too: pytrees come back with their keys sorted).
        self.kinds: dict[str, tuple[str, Family, bool, tuple[str, ...]]] = {}
        self.discrete: set[str] = set()
        self.observed_sizes: dict[str, int] = {}
        self.validating = validation_enabled()
        # Which observed sites hold data under constant bounds (read off the model's data
        # flow at the first evaluation): their values outside the support are the data's.
        self.data_sites: frozenset[str] | None = None
        self._batched = jax.jit(jax.vmap(self._evaluate_with_gradients))
        self._term_jaxprs: dict[str, Any] = {}  # each term's, traced once a term needs it

    def _trace(self, point):
        substituted = substitute(self.model, substitute_fn=partial(unconstrain_reparam, point))
        return compute_log_probs(substituted, self.model_args, self.model_kwargs, {})

    def _find_data_sites(self, point) -> frozenset[str]:
        """The observed sites whose value and support bounds do not depend on the latents.

        Told by data flow, not by type: data made a JAX array inside the model
        (``obs=jnp.asarray(y)``) are traced like a value computed from the latents
        (``obs=x``), which is a wall, as is data under a bound computed from them
        (``Uniform(0, n)``).
        """

        def observed(point):
            _, model_trace = self._trace(point)
            return {
                name: [jnp.asarray(site["value"]), *map(jnp.asarray, _bounds(site["fn"].support))]
                for name, site in model_trace.items()
                if site["type"] == "sample" and site["is_observed"]
            }

        from_latents = quietly(lambda: _depends_on_input(observed, point))
        return frozenset(name for name, flags in from_latents.items() if not any(flags))

    def _evaluate(self, point):
        log_probs, model_trace = self._trace(point)
        arguments, in_support, nonfinite = {}, {}, {}
        for name, site in model_trace.items():
            if site["type"] != "sample" or name.startswith("_"):
                continue
            # As an array: numpyro's constraints test a NumPy value with NumPy, which
            # fails on bounds computed from the latents (Uniform(0, theta), obs=data).
            value = jnp.asarray(site["value"])
            if site["is_observed"] and jnp.issubdtype(value.dtype, jnp.number):
                self.observed_sizes[name] = int(value.size)
                data = self.data_sites is not None and name in self.data_sites
                nonfinite[name] = _observed_counts(site["fn"].support, value, data)
            if site["fn"].support.is_discrete:
                self.discrete.add(name)
            kind = _arguments(site["fn"])
            if kind is not None:
                self.kinds[name] = (*kind[:3], tuple(kind[3]))
                arguments[name] = kind[3]
            in_support[name] = jnp.all(site["fn"].support(value))
            if self.validating and name in log_probs:
                # What the sampler sees: with validation on (numpyro's default), a value
                # outside the support has log density -inf. The evaluation runs with
                # validation off, so that bad arguments do not raise: mask here instead.
                log_probs[name] = jnp.where(in_support[name], log_probs[name], -jnp.inf)
        position = {name: model_trace[name]["value"] for name in point if name in model_trace}
        return {_term_name(k): v for k, v in log_probs.items()}, arguments, in_support, position, nonfinite

    def _evaluate_with_gradients(self, point):
        values, arguments, in_support, position, nonfinite = self._evaluate(point)
        # One gradient per term: a joint Jacobian would spread one term's NaN to
        # all the others (0 * NaN in the backward pass).
        gradients = {
            term: jax.grad(lambda p, term=term: self._evaluate(p)[0][term])(point) for term in values
        }
        return values, gradients, arguments, in_support, position, nonfinite

    def evaluate(self, points: Sequence[Mapping[str, Any]]) -> list[PointEvaluation]:
        """Every term and its gradients at each (unconstrained) point: one compiled, vmapped call.

        The batch is padded (with the first point) to a multiple of ``batch_size``,
        so that calls with up to that many points reuse one compilation.
        """
        if self.data_sites is None:
            self.data_sites = self._find_data_sites(points[0])
        padding = -len(points) % self.batch_size
        padded = [*points, *[points[0]] * padding]
        stacked = jax.tree.map(lambda *leaves: jnp.stack([jnp.asarray(x) for x in leaves]), *padded)
        results = quietly(lambda: jax.device_get(self._batched(stacked)))
        values, gradients, arguments, in_support, position, nonfinite = results
        evaluations = []
        for k in range(len(points)):
            at = partial(_row, k)
            values_k = {term: float(v[k]) for term, v in values.items()}
            gradients_k = {term: jax.tree.map(at, g) for term, g in gradients.items()}
            origins = self._origins(points[k], values_k, gradients_k)
            evaluations.append(
                PointEvaluation(
                    values=values_k,
                    gradients=gradients_k,
                    distributions={
                        name: _info(
                            (label, family, exact, {arg: at(arguments[name][arg]) for arg in order}),
                            name in self.discrete,
                        )
                        for name, (label, family, exact, order) in self.kinds.items()
                    },
                    values_in_support={name: bool(v[k]) for name, v in in_support.items()},
                    position={name: np.asarray(v[k]) for name, v in position.items()},
                    nonfinite_observed={
                        name: text
                        for name, (nan, inf, _, _) in nonfinite.items()
                        if (text := nonfinite_data(int(nan[k]), int(inf[k]), self.observed_sizes[name]))
                    },
                    observed_at_edge={
                        name: text
                        for name, (_, _, outside, edge) in nonfinite.items()
                        if (text := data_at_edge(int(outside[k]), int(edge[k]), self.observed_sizes[name]))
                    },
                    hidden_nonfinite={
                        term: origin.hiding_select for term, origin in origins.items() if origin.hiding_select
                    },
                    nonfinite_origin={
                        term: origin.first_nonfinite
                        for term, origin in origins.items()
                        if origin.first_nonfinite
                    },
                )
            )
        return evaluations

    def _term(self, term: str, point: Mapping[str, Any]) -> Any:
        return self._evaluate(point)[0][term]

    def _origins(
        self, point: Mapping[str, Any], values: Mapping[str, float], gradients: Mapping[str, Any]
    ) -> dict[str, Origins]:
        """Where the NaNs of each failing term at ``point`` come from, in the user's code.

        A term that is not finite, or finite with a gradient that is not (a hiding
        ``jnp.where``), is run once more equation by equation (its jaxpr traced once).
        """
        found = {}
        for term in failing_terms(values, gradients):
            if term not in self._term_jaxprs:
                self._term_jaxprs[term] = quietly(partial(jax.make_jaxpr(partial(self._term, term)), point))
            try:
                found[term] = quietly(partial(nonfinite_origins, self._term_jaxprs[term], point))
            except Exception:  # a primitive the walk cannot run eagerly: the diagnosis goes on without
                continue
        return found

    def diagnose(self, points: Sequence[Mapping[str, Any]], where: Sequence[Where]) -> list[Diagnosis]:
        """One :class:`~robusthmc.Diagnosis` per point; ``where`` is ``(phase, chain, iteration)``."""
        return [
            evaluation.diagnosis(phase=phase, chain=chain, iteration=iteration)
            for evaluation, (phase, chain, iteration) in zip(self.evaluate(points), where)
        ]


def _limits(support: Any) -> tuple[Any, Any]:
    """A support's ``(lower_bound, upper_bound)``, ``None`` where it has none."""
    return getattr(support, "lower_bound", None), getattr(support, "upper_bound", None)


def _bounds(support: Any) -> list[Any]:
    """A support's bounds, those it has."""
    return [bound for bound in _limits(support) if bound is not None]


def _depends_on_input(fn: Callable, *args: Any) -> Any:
    """``fn(*args)``'s structure with each leaf ``True`` where it depends on ``args``.

    Read off the jaxpr's data flow (an operation with an input that depends on
    ``args`` depends on them in all its outputs), nothing evaluated.

    Examples
    --------
    >>> import jax.numpy as jnp
    >>> _depends_on_input(lambda x: (jnp.asarray([1.0, 2.0]), 2 * x), jnp.ones(2))
    (False, True)
    """
    closed, shape = jax.make_jaxpr(fn, return_shape=True)(*args)
    depends = set(closed.jaxpr.invars)
    for equation in closed.jaxpr.eqns:
        if any(isinstance(var, Var) and var in depends for var in equation.invars):
            depends.update(equation.outvars)
    flags = [isinstance(var, Var) and var in depends for var in closed.jaxpr.outvars]
    return jax.tree.unflatten(jax.tree.structure(shape), flags)


def _observed_counts(support: Any, value: jax.Array, data: bool) -> tuple[jax.Array, ...]:
    """How many observed values are NaN, inf, finite outside the support, on its edge.

    Outside and on the edge are counted for ``data`` (neither the value nor the
    support's bounds computed from the latents: that is a wall) under supports
    of single values (an interval, a half line, whole numbers): the edge of
    ``Beta``'s [0, 1] is 0 and 1; a discrete support has none.
    """
    while isinstance(support, dist.constraints.independent):  # .to_event(n)
        support = support.base_constraint
    finite = jnp.isfinite(value)
    outside = edge = jnp.zeros((), jnp.int32)
    if data and support.event_dim == 0:
        beyond = finite & ~support(value)
        bounds = () if support.is_discrete else _bounds(support)
        at_bound = sum((value == bound for bound in bounds), jnp.zeros_like(finite))
        if beyond.shape == at_bound.shape == value.shape:  # bounds broadcast wider: counted nowhere
            outside, edge = jnp.sum(beyond), jnp.sum(finite & ~beyond & (at_bound > 0))
    return jnp.sum(jnp.isnan(value)), jnp.sum(jnp.isinf(value)), outside, edge


def _row(k: int, leaf: Any) -> np.ndarray:
    return np.asarray(leaf)[k]
