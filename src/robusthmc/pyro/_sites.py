"""Site-level diagnosis for Pyro models: each log-prob term and its gradient at a point."""

from __future__ import annotations

import math
from collections.abc import Callable, Collection, Mapping
from typing import Any

import numpy as np
import pyro
import pyro.distributions as dist
import torch
from pyro import poutine
from pyro.poutine.util import site_is_subsample

from robusthmc._causes import DistributionInfo, Family, data_at_edge, nonfinite_data
from robusthmc._diagnosis import Diagnosis, Phase, PointEvaluation, failing_terms, nonfinite_coordinates
from robusthmc.pyro._origins import NonfiniteOrigins

__all__ = [
    "describe_distribution",
    "diagnose_point",
    "diagnose_potential_point",
    "evaluate_point",
    "exception_text",
    "latent_sites",
]

_WRAPPERS = (dist.Independent, dist.MaskedDistribution, dist.ExpandedDistribution)


def _as_array(value: Any) -> np.ndarray:
    if isinstance(value, torch.Tensor):
        return value.detach().cpu().double().numpy()
    return np.asarray(value, dtype=np.float64)


def describe_distribution(fn: Any) -> DistributionInfo | None:
    """What the diagnosis knows about a Pyro distribution: name, family, arguments.

    robusthmc's ``TruncatedNormal`` is exact in the tails; a user's own class
    with ``loc``, ``scale``, ``low`` and ``high`` attributes and "Truncated" in
    its name is read as a truncated normal (the common hand-written one);
    ``Uniform`` is recognised; any other distribution reports the arguments
    named by its ``arg_constraints``.

    Examples
    --------
    >>> import pyro.distributions as dist
    >>> from robusthmc._causes import known_causes
    >>> from robusthmc.pyro import describe_distribution
    >>> info = describe_distribution(dist.Uniform(0.0, float("inf")))
    >>> str(info), [c.kind for c in known_causes(info)]
    ('Uniform(low=0, high=inf)', ['infinite_bound'])
    """
    if not isinstance(fn, torch.distributions.Distribution):
        raise TypeError(f"describe_distribution(fn={fn!r}): expected a Pyro or torch distribution")
    while isinstance(fn, _WRAPPERS):
        fn = fn.base_dist
    if not isinstance(fn, torch.distributions.Distribution):
        return None
    if isinstance(fn, dist.Unit):  # what pyro.factor samples: named as the user wrote it
        return DistributionInfo(
            "factor", "other", {"log_factor": _as_array(fn.log_factor)}, "float32", "pyro"
        )
    family: Family = "other"
    exact = bool(getattr(fn, "robusthmc_exact_tails", False))
    names = list(getattr(fn, "arg_constraints", {}))
    if exact or (
        "Truncated" in type(fn).__name__ and all(hasattr(fn, k) for k in ("loc", "scale", "low", "high"))
    ):
        family, names = "truncated_normal", ["loc", "scale", "low", "high"]
    elif isinstance(fn, torch.distributions.Uniform):
        family = "uniform"
    arguments = {}
    for name in names:
        value = getattr(fn, name, None)
        if value is not None:
            arguments[name] = _as_array(value)
    dtype = str(fn.mean.dtype).removeprefix("torch.") if _has_mean(fn) else "float32"
    return DistributionInfo(type(fn).__name__, family, arguments, dtype, "pyro", exact, _is_discrete(fn))


def _has_mean(fn: Any) -> bool:
    try:
        return isinstance(fn.mean, torch.Tensor)
    except (NotImplementedError, RuntimeError, ValueError):
        return False


def latent_sites(trace: Any) -> dict[str, Any]:
    """The latent sample sites of a Pyro trace, by name (not observed, not a plate's subsample)."""
    return {
        name: site
        for name, site in trace.nodes.items()
        if site["type"] == "sample" and not site["is_observed"] and not site_is_subsample(site)
    }


def latents_outside_support(model_trace: Any, given: Collection[str] = ()) -> dict[str, tuple[Any, str]]:
    """The continuous latents of a trace whose value lies outside their support: ``(value, support)``.

    Those named in ``given`` (values the user chose) count also where not finite: an
    infinite value passes ``GreaterThan``'s check, yet no transform maps it.
    """

    def outside(name: str, site: Mapping[str, Any]) -> bool:
        value = site["value"]
        return not bool(torch.all(site["fn"].support.check(value))) or (
            name in given and not bool(torch.all(torch.isfinite(value)))
        )

    return {
        name: (_as_array(site["value"]), repr(site["fn"].support))
        for name, site in latent_sites(model_trace).items()
        if not site["fn"].support.is_discrete and outside(name, site)
    }


def support_bounds(model_trace: Any) -> dict[str, tuple[Any, Any]]:
    """``(lower, upper)`` of each continuous latent's support (``None`` where it has none)."""

    def as_array(bound: Any) -> Any:
        return None if bound is None else np.asarray(torch.as_tensor(bound).detach().cpu(), np.float64)

    return {
        name: (as_array(lower), as_array(upper))
        for name, site in latent_sites(model_trace).items()
        if not site["fn"].support.is_discrete
        for lower, upper in [_limits(site["fn"].support)]
    }


def _limits(support: Any) -> tuple[Any, Any]:
    """A support's ``(lower_bound, upper_bound)``, ``None`` where it has none."""
    return getattr(support, "lower_bound", None), getattr(support, "upper_bound", None)


def _terms(
    model: Callable,
    model_args: tuple,
    model_kwargs: Mapping[str, Any],
    transforms: Mapping[str, Any],
    z: dict,
) -> tuple[
    dict[str, torch.Tensor],
    dict[str, DistributionInfo | None],
    dict[str, bool],
    dict[str, np.ndarray],
    dict[str, str],
    dict[str, str],
]:
    constrained = {
        name: transforms[name].inv(value) if name in transforms else value for name, value in z.items()
    }
    with pyro.validation_enabled(False), torch.enable_grad():
        trace = poutine.trace(poutine.condition(model, data=constrained)).get_trace(
            *model_args, **model_kwargs
        )
        terms: dict[str, torch.Tensor] = {}
        infos: dict[str, DistributionInfo | None] = {}
        in_support: dict[str, bool] = {}
        nonfinite: dict[str, str] = {}
        at_edge: dict[str, str] = {}
        for name, site in trace.nodes.items():
            if site["type"] != "sample" or site_is_subsample(site):
                continue
            fn: Any = site["fn"]
            value = site["value"]
            data = site["is_observed"] and name not in constrained  # conditioned latents are "observed" too
            if data and isinstance(value, torch.Tensor) and not value.requires_grad:
                text = nonfinite_data(int(value.isnan().sum()), int(value.isinf().sum()), value.numel())
                if text:
                    nonfinite[name] = text
                elif text := _data_at_edge(fn.support, value):
                    at_edge[name] = text
            try:
                log_prob = fn.log_prob(value)
            except Exception:
                if name not in at_edge:
                    raise
                log_prob = torch.tensor(-math.inf)  # data torch cannot evaluate (a label K of K)
            scale = site.get("scale", 1.0)
            terms[name] = (log_prob * scale).sum()
            infos[name] = describe_distribution(fn)
            try:
                in_support[name] = bool(torch.all(fn.support.check(value)))
            except (NotImplementedError, RuntimeError, ValueError):
                in_support[name] = True
        for name, transform in transforms.items():
            if name in z:
                label = f"{name} (transform)"
                terms[label] = transform.inv.log_abs_det_jacobian(z[name], constrained[name]).sum()
                infos[label] = None
    position = {name: _as_array(value) for name, value in constrained.items()}
    return terms, infos, in_support, position, nonfinite, at_edge


def _is_discrete(fn: Any) -> bool:
    try:
        return bool(fn.support.is_discrete)
    except NotImplementedError:  # a distribution that declares no support
        return False


def _data_at_edge(support: Any, value: torch.Tensor) -> str:
    """What finite data holds outside ``support`` or on its edge (0 and 1 for ``Beta``), as text.

    Counted for supports of single values with constant bounds (an interval, a half line,
    whole numbers); a discrete support has no edge.
    """
    while isinstance(support, torch.distributions.constraints.independent):  # .to_event(n)
        support = support.base_constraint
    bounds = _limits(support)
    # A bound computed from the latents (Uniform(0, theta)) is a wall among them, not the data's.
    latent_bound = any(isinstance(bound, torch.Tensor) and bound.requires_grad for bound in bounds)
    if latent_bound or support.event_dim != 0:
        return ""
    try:
        beyond = value.isfinite() & ~support.check(value)
    except (NotImplementedError, RuntimeError, ValueError):
        return ""
    at_bound = torch.zeros_like(value, dtype=torch.bool)
    for bound in [] if support.is_discrete else bounds:
        if bound is not None:
            at_bound = at_bound | (value == bound)
    if not beyond.shape == at_bound.shape == value.shape:  # bounds broadcast wider: counted nowhere
        return ""
    edge = value.isfinite() & ~beyond & at_bound
    return data_at_edge(int(beyond.sum()), int(edge.sum()), value.numel())


def evaluate_point(
    model: Callable,
    model_args: tuple,
    model_kwargs: Mapping[str, Any],
    transforms: Mapping[str, Any],
    z: Mapping[str, torch.Tensor],
) -> PointEvaluation | None:
    """Each term of the log density and its gradient w.r.t. each latent at unconstrained ``z``.

    ``transforms`` map constrained to unconstrained values, as Pyro's
    ``initialize_model`` returns them. ``None`` if the model raises there.
    """
    leaves = {name: value.detach().clone().requires_grad_(True) for name, value in z.items()}
    try:
        terms, infos, in_support, position, nonfinite, at_edge = _terms(
            model, model_args, model_kwargs, transforms, leaves
        )
    except Exception:
        return None
    gradients = {}
    for label, term in terms.items():
        if not term.requires_grad:
            gradients[label] = {name: np.zeros(tuple(leaf.shape)) for name, leaf in leaves.items()}
            continue
        grads = torch.autograd.grad(term, list(leaves.values()), retain_graph=True, allow_unused=True)
        gradients[label] = {
            name: np.zeros(tuple(leaf.shape)) if g is None else _as_array(g)
            for (name, leaf), g in zip(leaves.items(), grads)
        }
    values = {label: float(term.detach()) for label, term in terms.items()}
    hiding, made = _origins(
        model, model_args, model_kwargs, transforms, leaves, failing_terms(values, gradients)
    )
    return PointEvaluation(
        values=values,
        gradients=gradients,
        distributions=infos,
        values_in_support=in_support,
        position=position,
        nonfinite_observed=nonfinite,
        observed_at_edge=at_edge,
        hidden_nonfinite=hiding,
        nonfinite_origin=made,
    )


def _origins(
    model: Callable,
    model_args: tuple,
    model_kwargs: Mapping[str, Any],
    transforms: Mapping[str, Any],
    leaves: dict[str, torch.Tensor],
    failing: Collection[str],
) -> tuple[dict[str, str], dict[str, str]]:
    """For the ``failing`` terms, the user's ``torch.where`` that hides a NaN, and the operation that made one.

    The model runs once more at ``leaves`` with its operations watched (only where
    some term fails); which of the two explains a term is the core's to say.
    """
    if not failing:
        return {}, {}
    with NonfiniteOrigins() as origins:
        terms = _terms(model, model_args, model_kwargs, transforms, leaves)[0]
    watched = {label: terms[label] for label in failing if label in terms}
    hiding = {label: where for label, term in watched.items() if (where := origins.hiding_select(term))}
    made = {label: origin for label, term in watched.items() if (origin := origins.first_nonfinite(term))}
    return hiding, made


def diagnose_point(
    model: Callable,
    model_args: tuple,
    model_kwargs: Mapping[str, Any],
    transforms: Mapping[str, Any],
    z: Mapping[str, torch.Tensor],
    *,
    phase: Phase,
    chain: int | None = None,
    iteration: int | None = None,
    exception: BaseException | None = None,
) -> Diagnosis:
    """The :class:`~robusthmc.Diagnosis` of a failure at unconstrained ``z`` (see :func:`evaluate_point`)."""
    try:
        evaluation = evaluate_point(model, model_args, model_kwargs, transforms, z)
        rerun_error = None
    except Exception as error:
        evaluation, rerun_error = None, error
    if evaluation is None:  # the model itself raises at this point: report that
        try:
            _terms(model, model_args, model_kwargs, transforms, dict(z))
        except Exception as error:
            rerun_error = error
        with torch.no_grad():
            constrained = {k: transforms[k].inv(v) if k in transforms else v for k, v in z.items()}
        cause = exception if exception is not None else rerun_error
        return Diagnosis(
            phase=phase,
            chain=chain,
            iteration=iteration,
            potential_energy=float("nan"),
            nonfinite_coordinates=(),
            sites=(),
            position={name: _as_array(value) for name, value in constrained.items()},
            exception=None if cause is None else exception_text(cause),
        )
    return evaluation.diagnosis(
        phase=phase,
        chain=chain,
        iteration=iteration,
        exception=None if exception is None else exception_text(exception),
    )


def diagnose_potential_point(
    potential_fn: Callable,
    z: Mapping[str, torch.Tensor],
    *,
    phase: Phase,
    chain: int | None = None,
    iteration: int | None = None,
    exception: BaseException | None = None,
) -> Diagnosis:
    """The diagnosis for a bare ``potential_fn`` (no sites: coordinates of its input only)."""
    leaves = {name: value.detach().clone().requires_grad_(True) for name, value in z.items()}
    value = float("nan")
    gradient = {name: np.full(tuple(leaf.shape), np.nan) for name, leaf in leaves.items()}
    if exception is None:
        try:
            with torch.enable_grad():
                energy = potential_fn(leaves)
                grads = torch.autograd.grad(energy, list(leaves.values()), allow_unused=True)
            value = float(energy.detach())
            gradient = {name: _as_array(g) for name, g in zip(leaves, grads) if g is not None}
        except Exception as error:
            exception = error
    return Diagnosis(
        phase=phase,
        chain=chain,
        iteration=iteration,
        potential_energy=value,
        nonfinite_coordinates=nonfinite_coordinates(gradient),
        sites=(),
        position={name: _as_array(v) for name, v in z.items()},
        exception=None if exception is None else exception_text(exception),
        source="potential_fn",
    )


def exception_text(error: BaseException) -> str:
    """``LinAlgError: ...``: an exception as a diagnosis names it."""
    # torch.linalg.LinAlgError is torch._C._LinAlgError: show the public name.
    # Pyro's trace appends its "Trace Shapes:" table to the message: the first line says it.
    return f"{type(error).__name__.lstrip('_')}: {str(error).splitlines()[0] if str(error) else ''}"
