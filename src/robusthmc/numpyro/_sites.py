"""Per-site evaluation of a numpyro model at one point, for the diagnosis.

The numbers (each site's log-density term and its gradient with respect to
every latent) are computed here with JAX; what they mean is decided by
:func:`robusthmc._diagnosis.find_site_problems`.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import numpyro
from numpyro import distributions as dist
from numpyro.distributions import truncated as numpyro_truncated
from numpyro.handlers import substitute, trace
from numpyro.infer.util import _unconstrain_reparam, compute_log_probs

from robusthmc._causes import DistributionInfo
from robusthmc._diagnosis import Diagnosis, Phase, coordinate_labels, find_site_problems

__all__ = ["describe_distribution", "diagnose_point", "diagnose_potential_point"]

_WRAPPERS = (dist.Independent, dist.ExpandedDistribution, dist.MaskedDistribution)
_TRUNCATED = (
    numpyro_truncated.LeftTruncatedDistribution,
    numpyro_truncated.RightTruncatedDistribution,
    numpyro_truncated.TwoSidedTruncatedDistribution,
)


def _arrays(**arguments: Any) -> dict[str, np.ndarray]:
    return {k: np.asarray(v, dtype=np.float64) for k, v in arguments.items() if v is not None}


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
    >>> info = describe_distribution(dist.TruncatedNormal(0.0, 2.0, low=0.0, high=jnp.inf))
    >>> str(info), [c.fix.split(":")[0] for c in known_causes(info)]
    ('TruncatedNormal(loc=0, scale=2, low=0, high=inf)', ['write high=None (no bound) instead of high=inf'])
    """
    while isinstance(fn, _WRAPPERS):
        fn = fn.base_dist
    if not isinstance(fn, dist.Distribution):
        return None
    dtype = str(jnp.result_type(float))
    if getattr(fn, "robusthmc_exact_tails", False):
        arguments = _arrays(loc=fn.loc, scale=fn.scale, low=fn.low, high=fn.high)
        return DistributionInfo("TruncatedNormal", "truncated_normal", arguments, dtype, "numpyro", True)
    if isinstance(fn, _TRUNCATED):
        base = fn.base_dist
        bounds = _arrays(low=getattr(fn, "low", None), high=getattr(fn, "high", None))
        if isinstance(base, dist.Normal):
            arguments = {**_arrays(loc=base.loc, scale=base.scale), **bounds}
            return DistributionInfo("TruncatedNormal", "truncated_normal", arguments, dtype, "numpyro")
        base_arguments = _arrays(**{k: getattr(base, k, None) for k in base.arg_constraints})
        name = f"TruncatedDistribution({type(base).__name__})"
        return DistributionInfo(name, "truncated", {**base_arguments, **bounds}, dtype, "numpyro")
    arguments = _arrays(**{k: getattr(fn, k, None) for k in fn.arg_constraints})
    family = "uniform" if isinstance(fn, dist.Uniform) else "other"
    return DistributionInfo(type(fn).__name__, family, arguments, dtype, "numpyro")


def _term_name(name: str) -> str:
    # numpyro adds the log-Jacobian of site `x` as a factor site `_x_log_det`.
    if name.startswith("_") and name.endswith("_log_det"):
        return f"{name[1:-len('_log_det')]} (transform)"
    return name


def diagnose_point(
    model: Callable,
    model_args: tuple,
    model_kwargs: Mapping[str, Any],
    params: Mapping[str, Any],
    *,
    phase: Phase,
    chain: int | None = None,
    iteration: int | None = None,
) -> Diagnosis:
    """Evaluate every site's term and its gradient at unconstrained ``params``.

    ``model`` is the model as the potential energy sees it (``param`` values
    substituted, a default PRNG key).
    """
    with warnings.catch_warnings(), numpyro.validation_enabled(False):
        # The point is bad on purpose: numpyro's argument validation would raise and
        # its out-of-support warnings add nothing.
        warnings.simplefilter("ignore")
        return _diagnose_point(model, model_args, model_kwargs, params, phase, chain, iteration)


def _diagnose_point(model, model_args, model_kwargs, params, phase, chain, iteration) -> Diagnosis:
    params = {k: jnp.asarray(v) for k, v in params.items()}

    def terms(point):
        substituted = substitute(model, substitute_fn=lambda site: _unconstrain_reparam(point, site))
        log_probs, _ = compute_log_probs(substituted, model_args, dict(model_kwargs), {})
        return {_term_name(k): v for k, v in log_probs.items()}

    substituted = substitute(model, substitute_fn=lambda site: _unconstrain_reparam(params, site))
    model_trace = trace(substituted).get_trace(*model_args, **model_kwargs)
    values = terms(params)
    # One gradient per term: a joint Jacobian would spread one term's NaN to all
    # the others (0 * NaN in the backward pass).
    gradients = {name: jax.grad(lambda point, name=name: terms(point)[name])(params) for name in values}
    distributions: dict[str, DistributionInfo | None] = {}
    in_support: dict[str, bool] = {}
    for name, site in model_trace.items():
        if site["type"] != "sample" or name.startswith("_"):
            continue
        distributions[name] = describe_distribution(site["fn"])
        in_support[name] = bool(np.all(np.asarray(site["fn"].support(site["value"]))))
    position = {
        name: np.asarray(model_trace[name]["value"]) for name in params if name in model_trace
    }
    potential = -float(sum(np.asarray(v, dtype=np.float64) for v in values.values()))
    total_gradient = {
        latent: sum(np.asarray(gradients[term][latent], dtype=np.float64) for term in values)
        for latent in params
    }
    return Diagnosis(
        phase=phase,
        chain=chain,
        iteration=iteration,
        potential_energy=potential,
        nonfinite_coordinates=_nonfinite_coordinates(total_gradient),
        sites=find_site_problems(
            {k: float(v) for k, v in values.items()},
            {k: {latent: np.asarray(g) for latent, g in v.items()} for k, v in gradients.items()},
            distributions,
            values_in_support=in_support,
            position=position,
        ),
        position=position,
    )


def _nonfinite_coordinates(gradient: Mapping[str, np.ndarray]) -> tuple[str, ...]:
    labels: list[str] = []
    for latent, value in gradient.items():
        value = np.asarray(value, dtype=np.float64)
        labels.extend(coordinate_labels(latent, value.shape, ~np.isfinite(value)))
    return tuple(labels)


def diagnose_potential_point(
    potential_fn: Callable,
    params: Any,
    *,
    phase: Phase,
    chain: int | None = None,
    iteration: int | None = None,
) -> Diagnosis:
    """The diagnosis for a bare ``potential_fn`` (no sites: coordinates of its input only)."""
    value, gradient = jax.value_and_grad(potential_fn)(params)
    leaves = jax.tree_util.tree_leaves_with_path(gradient)
    named = {
        "z" + jax.tree_util.keystr(path): np.asarray(leaf, dtype=np.float64) for path, leaf in leaves
    }
    position = {
        "z" + jax.tree_util.keystr(path): np.asarray(leaf)
        for path, leaf in jax.tree_util.tree_leaves_with_path(params)
    }
    return Diagnosis(
        phase=phase,
        chain=chain,
        iteration=iteration,
        potential_energy=float(value),
        nonfinite_coordinates=_nonfinite_coordinates(named),
        sites=(),
        position=position,
    )
