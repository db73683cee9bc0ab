"""Diagnosis records and the decisions both backends share.

The backends evaluate, at one point in unconstrained space, each sample
site's log-density term and its gradient with respect to every latent
coordinate (with their own autodiff), describe each site's distribution as a
:class:`DistributionInfo`, and hand the numbers here.  What counts as a
failure, which sites and coordinates it is attributed to, and which fix is
suggested is decided in this module only.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import IntEnum
from typing import Any, Literal

import numpy as np

from robusthmc._causes import (
    Cause,
    DistributionInfo,
    format_argument,
    hidden_nonfinite_cause,
    known_causes,
    nonfinite_origin_cause,
)

__all__ = [
    "Diagnosis",
    "Halt",
    "Phase",
    "SiteProblem",
    "StopPoint",
    "coordinate_labels",
    "failing_terms",
    "find_site_problems",
    "float_step_points",
    "frozen_latents",
    "inspect_stop",
    "is_nonfinite",
    "start_outside_support",
]

Phase = Literal["initialization", "warmup", "sampling"]


class Halt(IntEnum):
    """Why a guarded chain stopped; stored as an integer inside jitted states."""

    RUNNING = 0
    NONFINITE = 1
    STUCK = 2
    STEP_SIZE_COLLAPSE = 3
    STEP_SIZE_SEARCH = 4
    INITIALIZATION = 5


def is_nonfinite(value: object) -> bool:
    """Whether any entry of a number or array is NaN or infinite.

    Examples
    --------
    >>> is_nonfinite(float("nan")), is_nonfinite([1.0, 2.0])
    (True, False)
    """
    return not bool(np.all(np.isfinite(np.asarray(value, dtype=np.float64))))


def coordinate_labels(name: str, shape: tuple[int, ...], mask: np.ndarray | None = None) -> tuple[str, ...]:
    """Names of the coordinates of latent ``name`` (all, or where ``mask`` is true).

    Examples
    --------
    >>> coordinate_labels("s", ())
    ('s',)
    >>> coordinate_labels("theta", (3,), np.array([False, True, True]))
    ('theta[1]', 'theta[2]')
    """
    if mask is None:
        mask = np.ones(shape, dtype=bool)
    mask = np.broadcast_to(np.asarray(mask, dtype=bool), shape)
    if shape == ():
        return (name,) if bool(mask) else ()
    return tuple(f"{name}[{', '.join(str(i) for i in index)}]" for index in zip(*np.nonzero(mask)))


@dataclass(frozen=True)
class SiteProblem:
    """One log-density term that is non-finite, or has a non-finite gradient, at a point.

    Attributes
    ----------
    site : str
        The sample site (a term named ``"<site> (transform)"`` is the
        log-Jacobian of the site's map to unconstrained space).
    distribution : str
        The distribution with its arguments, as written in the model.
    log_prob : float
        The term's value at the point.
    nonfinite_gradient : tuple of str
        Latent coordinates with respect to which the term's gradient is
        NaN or infinite.
    causes : tuple of Cause
        Known causes found in the distribution's arguments, each with its fix.
    """

    site: str
    distribution: str
    log_prob: float
    nonfinite_gradient: tuple[str, ...]
    causes: tuple[Cause, ...] = ()

    @property
    def value_is_finite(self) -> bool:
        """Whether the term's value is finite."""
        return bool(np.isfinite(self.log_prob))

    def to_dict(self) -> dict[str, Any]:
        """The problem as plain JSON types."""
        return {
            "site": self.site,
            "distribution": self.distribution,
            "log_prob": _json_float(self.log_prob),
            "nonfinite_gradient": list(self.nonfinite_gradient),
            "causes": [dataclasses.asdict(cause) for cause in self.causes],
        }


def _json_float(value: float) -> float | str:
    """A float JSON can hold: NaN and infinities as the strings ``"nan"``, ``"inf"``, ``"-inf"``."""
    return float(value) if np.isfinite(value) else str(float(value))


@dataclass(frozen=True)
class Diagnosis:
    """Where and why a log density failed: the record every error and warning carries.

    Attributes
    ----------
    phase : {"initialization", "warmup", "sampling"}
    chain : int or None
    iteration : int or None
        The transition (counted from the start of warmup) that failed.
    potential_energy : float
        Minus the log density at the point.
    nonfinite_coordinates : tuple of str
        Coordinates of the total gradient that are NaN or infinite.
    sites : tuple of SiteProblem
        The terms the failure is attributed to.
    position : mapping of str to ndarray
        The point, as constrained values of the latent sites.
    exception : str or None
        The exception the log density raised, if that was the failure.
    source : {"model", "potential_fn", "logdensity_fn"}
        What the log density came from: with a bare ``potential_fn`` or
        ``logdensity_fn`` there are no sites to attribute the failure to.
    expression : str or None
        For a bare function, the line of its source whose operation first
        gave NaN or an infinity (``jax.debug_nans``), with its file and line.
    """

    phase: Phase
    chain: int | None
    iteration: int | None
    potential_energy: float
    nonfinite_coordinates: tuple[str, ...]
    sites: tuple[SiteProblem, ...]
    position: Mapping[str, np.ndarray] = field(default_factory=dict)
    exception: str | None = None
    source: Literal["model", "potential_fn", "logdensity_fn"] = "model"
    expression: str | None = None

    def __str__(self) -> str:
        from robusthmc._render import render_diagnosis

        return render_diagnosis(self, indent="")

    def to_dict(self) -> dict[str, Any]:
        """The diagnosis as plain JSON types (``json.dumps(diagnosis.to_dict())``)."""
        return {
            "phase": self.phase,
            "chain": self.chain,
            "iteration": self.iteration,
            "potential_energy": _json_float(self.potential_energy),
            "nonfinite_coordinates": list(self.nonfinite_coordinates),
            "sites": [problem.to_dict() for problem in self.sites],
            "position": {
                name: np.asarray(value, dtype=np.float64).tolist() for name, value in self.position.items()
            },
            "exception": self.exception,
            "source": self.source,
            "expression": self.expression,
        }

    @property
    def site_names(self) -> tuple[str, ...]:
        """Names of the sites the failure is attributed to."""
        return tuple(problem.site for problem in self.sites)

    @property
    def causes(self) -> tuple[Cause, ...]:
        """Every known cause found, without repeats, in site order."""
        seen: dict[tuple[str, str, str], Cause] = {}
        for problem in self.sites:
            for cause in problem.causes:
                seen.setdefault((cause.kind, cause.argument, cause.fix), cause)
        return tuple(seen.values())

    @property
    def fixes(self) -> tuple[str, ...]:
        """The suggested changes, one per known cause."""
        return tuple(cause.fix for cause in self.causes)


def find_site_problems(
    log_probs: Mapping[str, float],
    gradients: Mapping[str, Mapping[str, np.ndarray]],
    distributions: Mapping[str, DistributionInfo | None],
    *,
    values_in_support: Mapping[str, bool] | None = None,
    position: Mapping[str, np.ndarray] | None = None,
    nonfinite_observed: Mapping[str, str] | None = None,
    observed_at_edge: Mapping[str, str] | None = None,
    hidden_nonfinite: Mapping[str, str] | None = None,
    nonfinite_origin: Mapping[str, str] | None = None,
) -> tuple[SiteProblem, ...]:
    """Attribute a failure to the terms of the log density that are not finite.

    A latent whose constrained value itself overflowed or underflowed (``exp``
    of a huge unconstrained value is ``inf``, of a very negative one ``0``) is
    the cause of everything downstream of it: then only those latents are
    reported.

    Parameters
    ----------
    log_probs : mapping
        Each term's value (summed over its batch) at the point.
    gradients : mapping
        For each term, its gradient with respect to each latent, as arrays
        shaped like the latents (unconstrained).
    distributions : mapping
        Each term's distribution (``None`` for terms that are not a
        distribution, such as a transform's Jacobian or a factor).
    values_in_support : mapping, optional
        Whether each site's value lies in its distribution's support.
    position : mapping, optional
        The constrained values of the latents.
    nonfinite_observed : mapping, optional
        For each observed site whose data is not all finite, what it holds
        (:func:`~robusthmc._causes.nonfinite_data`).
    observed_at_edge : mapping, optional
        For each observed site with data outside its support or on its edge,
        what it holds (:func:`~robusthmc._causes.data_at_edge`).
    hidden_nonfinite : mapping, optional
        For each term finite here with a non-finite gradient, the select that
        skips a NaN or inf branch (``"jnp.where at model.py:7"``), where one does.
    nonfinite_origin : mapping, optional
        For each term that is not finite here, the user's operation that first made
        its NaN or inf from finite inputs (``"`y = jnp.log(x)` gives nan (model.py:7)"``).

    Returns
    -------
    tuple of SiteProblem
        One per term with a non-finite value or gradient, in model order.

    Examples
    --------
    >>> import numpy as np
    >>> problems = find_site_problems(
    ...     {"s": -1.2, "V": -0.7},
    ...     {"s": {"s": np.array(0.3)}, "V": {"s": np.array(np.nan)}},
    ...     {"s": None, "V": None},
    ... )
    >>> [(p.site, p.nonfinite_gradient) for p in problems]
    [('V', ('s',))]
    """
    in_support = {} if values_in_support is None else values_in_support
    overflowed = {
        name: value
        for name, value in (position or {}).items()
        if is_nonfinite(value) or not in_support.get(name, True)
    }
    problems = []
    for term, log_prob in log_probs.items():
        if overflowed and term not in overflowed:
            continue
        bad_coordinates: list[str] = []
        for latent, gradient in gradients.get(term, {}).items():
            gradient = np.asarray(gradient, dtype=np.float64)
            bad_coordinates.extend(coordinate_labels(latent, gradient.shape, ~np.isfinite(gradient)))
        value = float(log_prob)
        if (
            np.isfinite(value)
            and not bad_coordinates
            and term not in overflowed
            and in_support.get(term, True)
        ):
            continue
        info = distributions.get(term)
        origin = "" if np.isfinite(value) else (nonfinite_origin or {}).get(term, "")
        causes = (
            known_causes(
                info,
                value_in_support=in_support.get(term, True),
                nonfinite_observed=(nonfinite_observed or {}).get(term, ""),
                observed_at_edge=(observed_at_edge or {}).get(term, ""),
                failing=True,
                origin=origin,
            )
            if info
            else ()
        )
        if term in overflowed:
            causes = tuple(c for c in causes if c.kind != "support_mismatch")
            if not causes:
                causes = (_overflow_cause(term, overflowed[term], info),)
        elif np.isfinite(value) and (where := (hidden_nonfinite or {}).get(term)):
            causes = (*causes, hidden_nonfinite_cause(where))  # a known cause in its arguments first
        elif origin and not any(origin in cause.brief for cause in causes):
            causes = (*causes, nonfinite_origin_cause(origin))
        problems.append(
            SiteProblem(
                site=term,
                distribution=str(info) if info else "(no distribution: a factor or a Jacobian)",
                log_prob=value,
                nonfinite_gradient=tuple(bad_coordinates),
                causes=causes,
            )
        )
    return tuple(problems)


def start_outside_support(diagnosis: Diagnosis, outside: Mapping[str, tuple[Any, str]]) -> Diagnosis:
    """``diagnosis`` of a start, its failure put on the latents the start put outside their support.

    ``outside`` maps each such latent to its starting value and its support, as text: a
    value the user gave (``init_to_value``) that no transform can map, not an overflow.
    An infinite value passes some supports' checks (``Positive``'s ``x > 0``) but is no
    point of them: it is named as not finite.

    Examples
    --------
    >>> at_start = Diagnosis("initialization", None, None, float("nan"), ("s",), ())
    >>> start_outside_support(at_start, {"s": (-1.0, "Positive()")}).sites[0].causes[0].brief
    'the starting value s=-1 lies outside its support Positive()'
    >>> start_outside_support(at_start, {"s": (float("inf"), "Positive()")}).sites[0].causes[0].brief
    'the starting value s=inf is not a finite point of its support Positive()'
    """
    problems = []
    for name, (value, support) in outside.items():
        text = format_argument(value)
        where = "is not a finite point of" if not np.all(np.isfinite(value)) else "lies outside"
        brief = f"the starting value {name}={text} {where} its support {support}"
        remedy = f"start inside the support (the values given to init_to_value), or leave {name} out of them"
        cause = Cause("start_outside_support", "value", text, f"{brief}; {remedy}", brief, remedy)
        problems.append(SiteProblem(name, "(the start)", float("nan"), (), (cause,)))
    position = {**diagnosis.position, **{name: np.asarray(value) for name, (value, _) in outside.items()}}
    return dataclasses.replace(diagnosis, sites=tuple(problems), position=position)


def _overflow_cause(name: str, value: np.ndarray, info: DistributionInfo | None = None) -> Cause:
    text = format_argument(np.asarray(value, dtype=np.float64))
    if info is not None and not info.arguments:  # an improper prior: nothing holds the latent back
        return _drift_cause(name, text, info)
    return Cause(
        "overflow",
        "value",
        text,
        f"the trajectory took latent {name} so far out that its constrained value overflowed "
        f"or underflowed to the edge of its support ({text}): usual and harmless if rare and early "
        f"in warmup (the step size is not adapted yet); if it persists, give {name} a tighter "
        f"prior or put it on a smaller scale",
        f"latent {name} overflowed to {text} far out in its tail",
        f"a tighter prior on {name}, or put it on a smaller scale (harmless if rare, early in warmup)",
    )


def _drift_cause(name: str, text: str, info: DistributionInfo | None) -> Cause:
    improper = info is None or not info.arguments
    if improper:
        brief = f"{name} drifts to {text}: the posterior looks improper (nothing bounds {name})"
        remedy = f"a proper prior on {name}"
    else:
        brief = f"{name} drifts to {text}, far beyond its prior {info}: nothing in the data bounds it"
        remedy = f"a tighter prior on {name}, or check the data (separation, a sum that is not identified)"
    return Cause(
        "drift",
        "value",
        text,
        f"{brief}. The adapted step size and mass matrix follow it until the chain stops; fix: {remedy}",
        brief,
        remedy,
    )


#: A latent whose unconstrained value is this many times its prior's largest argument (or 1) drifts.
DRIFT_FACTOR = 1e6
#: Changes of the log density (nats) beyond this over one float step of a coordinate: unresolved.
RESOLUTION_JUMP = 0.1
#: The most coordinates (largest in magnitude first) probed one float step away.
MAX_PROBED_COORDINATES = 64


def float_step_points(z: Mapping[str, np.ndarray], dtype: str) -> list[tuple[str, dict[str, np.ndarray]]]:
    """Copies of the unconstrained point ``z``, each with one coordinate moved by one float step.

    The coordinates largest in magnitude come first (their float steps are the
    coarsest), at most :data:`MAX_PROBED_COORDINATES` of them.

    Examples
    --------
    >>> [(name, float(p["x"]) - 1e8) for name, p in float_step_points({"x": np.array(1e8)}, "float32")]
    [('x', 8.0)]
    """
    arrays = {name: np.asarray(value, dtype=dtype) for name, value in z.items()}
    coordinates = [
        (abs(float(v)), name, index) for name, a in arrays.items() for index, v in np.ndenumerate(a)
    ]
    coordinates.sort(key=lambda c: -c[0] if np.isfinite(c[0]) else 0.0)
    points = []
    for _, name, index in coordinates[:MAX_PROBED_COORDINATES]:
        moved = arrays[name].copy()
        moved[index] = np.nextafter(moved[index], np.array(np.inf, dtype=dtype))
        points.append((name, {**arrays, name: moved}))
    return points


@dataclass(frozen=True)
class StopPoint:
    """The chain's last point when it stopped moving: what explains a collapsed step size.

    Attributes
    ----------
    evaluation : PointEvaluation
        Every term at the point (its constrained position and the distributions).
    unconstrained : mapping of str to ndarray
        The point in unconstrained space.
    dtype : str
        The dtype the backend computes in.
    float_step_change : mapping of str to float
        For each latent, the largest change of the log density (nats) when one of
        its unconstrained coordinates moves by one float step (see :func:`float_step_points`).
    """

    evaluation: PointEvaluation
    unconstrained: Mapping[str, np.ndarray]
    dtype: str
    float_step_change: Mapping[str, float]

    @property
    def problems(self) -> tuple[SiteProblem, ...]:
        """A latent that drifts without bound, or that the dtype cannot resolve: one problem a site."""
        problems = []
        for name, value in self.unconstrained.items():
            info = self.evaluation.distributions.get(name)
            constrained = self.evaluation.position.get(name, value)
            scales = [
                np.max(np.abs(a[np.isfinite(a)]), initial=1.0)
                for a in (info.arguments.values() if info else ())
            ]
            limit = DRIFT_FACTOR * max([1.0, *scales])
            magnitude = np.abs(np.asarray(value, dtype=np.float64))
            cause = None
            if is_nonfinite(constrained) or is_nonfinite(value) or np.any(magnitude > limit):
                cause = _drift_cause(name, format_argument(constrained), info)
            elif self.float_step_change.get(name, 0.0) > RESOLUTION_JUMP and self.dtype == "float32":
                cause = _resolution_cause(name, constrained, self.float_step_change[name], info)
            if cause is not None:
                problems.append(
                    SiteProblem(
                        name,
                        str(info) if info else "(no distribution)",
                        float(self.evaluation.values.get(name, np.nan)),
                        (),
                        (cause,),
                    )
                )
        if not problems and self.dtype == "float32":
            problems.extend(self._unresolved_total())
        return tuple(problems)

    def _unresolved_total(self) -> list[SiteProblem]:
        """The log density itself so large that float32 cannot tell its values apart."""
        values = {name: v for name, v in self.evaluation.values.items() if np.isfinite(v)}
        total = abs(potential_energy_of(values)) if values else 0.0
        spacing = float(np.spacing(np.float32(total))) if np.isfinite(total) else 0.0
        if spacing <= RESOLUTION_JUMP:
            return []
        site = max(values, key=lambda name: abs(values[name]))
        info = self.evaluation.distributions.get(site)
        brief = (
            f"float32 cannot resolve the log density here: it is {-total:.3g} (mostly this site), "
            f"where float32 steps by {spacing:.3g} nats, so energy differences are rounding noise"
        )
        remedy = f"{_float64_switch(info)} before building the model, or rescale the data and latents so it is smaller"
        cause = Cause(
            "float32_resolution", "value", f"{values[site]:.3g}", f"{brief}; fix: {remedy}", brief, remedy
        )
        return [SiteProblem(site, str(info) if info else "(no distribution)", values[site], (), (cause,))]


def _float64_switch(info: DistributionInfo | None) -> str:
    """How a user of the site's backend computes in float64."""
    pyro = info is not None and info.backend == "pyro"
    return "torch.set_default_dtype(torch.float64)" if pyro else "numpyro.enable_x64()"


def _resolution_cause(name: str, value: object, change: float, info: DistributionInfo | None) -> Cause:
    text = format_argument(value)
    brief = (
        f"float32 cannot resolve the posterior of {name} near {text} (one float step changes the log "
        f"density by {change:.3g})"
    )
    remedy = f"{_float64_switch(info)} before building the model, or rescale {name} (e.g. centre and scale the data)"
    return Cause(
        "float32_resolution",
        "value",
        text,
        f"{brief}: the posterior is narrower than float32's spacing at that value, so the "
        f"energy jumps between neighbouring values and every step size is too large; fix: {remedy}",
        brief,
        remedy,
    )


def failing_terms(values: Mapping[str, float], gradients: Mapping[str, Mapping[str, Any]]) -> list[str]:
    """The terms that are not finite, or whose gradient is not: those a backend looks into.

    Examples
    --------
    >>> failing_terms({"a": 0.0, "b": 0.0, "c": np.nan}, {"a": {"x": 1.0}, "b": {"x": np.nan}, "c": {}})
    ['b', 'c']
    """
    return [
        term
        for term, value in values.items()
        if not np.isfinite(value) or bool(nonfinite_coordinates(gradients.get(term, {})))
    ]


def nonfinite_coordinates(gradient: Mapping[str, Any]) -> tuple[str, ...]:
    """Labels of the gradient coordinates that are NaN or infinite, latent by latent.

    Examples
    --------
    >>> nonfinite_coordinates({"s": np.array(np.nan), "theta": np.array([0.0, np.inf])})
    ('s', 'theta[1]')
    """
    labels: list[str] = []
    for latent, value in gradient.items():
        value = np.asarray(value, dtype=np.float64)
        labels.extend(coordinate_labels(latent, value.shape, ~np.isfinite(value)))
    return tuple(labels)


def potential_energy_of(log_prob_terms: Mapping[str, float]) -> float:
    """Minus the sum of the terms; +inf and -inf terms give NaN, as they did in the kernel."""
    with np.errstate(invalid="ignore"):
        return -float(np.sum([np.float64(v) for v in log_prob_terms.values()]))


@dataclass(frozen=True)
class PointEvaluation:
    """Every term of a log density, and its gradients, at one point: what a backend measures.

    Attributes
    ----------
    values : mapping of str to float
        Each term's value (summed over its batch).
    gradients : mapping of str to mapping of str to ndarray
        Each term's gradient with respect to each (unconstrained) latent.
    distributions : mapping of str to DistributionInfo or None
        Each term's distribution (``None`` for a transform's Jacobian or a factor).
    values_in_support : mapping of str to bool
        Whether each site's value lies in its distribution's support.
    position : mapping of str to ndarray
        The constrained values of the latents.
    raised : SiteProblem or None
        Where the model raised a numerical exception at this point (then the
        other mappings are empty): the site it was computing.
    nonfinite_observed : mapping of str to str
        Each observed site whose data is not all finite, and what it holds
        (:func:`~robusthmc._causes.nonfinite_data`).
    observed_at_edge : mapping of str to str
        Each observed site with data outside its support or on its edge, and
        what it holds (:func:`~robusthmc._causes.data_at_edge`).
    hidden_nonfinite : mapping of str to str
        Each term finite here whose gradient is not, and the select that skips a
        NaN or inf branch behind it (``"jnp.where at model.py:7"``), where one does.
    nonfinite_origin : mapping of str to str
        Each term not finite here, and the user's operation that first made its
        NaN or inf from finite inputs (``"`y = jnp.log(x)` gives nan (model.py:7)"``).
    """

    values: Mapping[str, float]
    gradients: Mapping[str, Mapping[str, np.ndarray]]
    distributions: Mapping[str, DistributionInfo | None]
    values_in_support: Mapping[str, bool]
    position: Mapping[str, np.ndarray]
    raised: SiteProblem | None = None
    nonfinite_observed: Mapping[str, str] = field(default_factory=dict)
    observed_at_edge: Mapping[str, str] = field(default_factory=dict)
    hidden_nonfinite: Mapping[str, str] = field(default_factory=dict)
    nonfinite_origin: Mapping[str, str] = field(default_factory=dict)

    def problems(self) -> tuple[SiteProblem, ...]:
        """The terms that are not finite here, attributed to sites, with causes and fixes."""
        if self.raised is not None:
            return (self.raised,)
        return find_site_problems(
            self.values,
            self.gradients,
            self.distributions,
            values_in_support=self.values_in_support,
            position=self.position,
            nonfinite_observed=self.nonfinite_observed,
            observed_at_edge=self.observed_at_edge,
            hidden_nonfinite=self.hidden_nonfinite,
            nonfinite_origin=self.nonfinite_origin,
        )

    def diagnosis(
        self,
        *,
        phase: Phase,
        chain: int | None = None,
        iteration: int | None = None,
        exception: str | None = None,
    ) -> Diagnosis:
        """The :class:`Diagnosis` of a failure at this point."""
        latents = dict.fromkeys(name for gradient in self.gradients.values() for name in gradient)
        total = {
            latent: sum(
                np.asarray(g[latent], dtype=np.float64) for g in self.gradients.values() if latent in g
            )
            for latent in latents
        }
        return Diagnosis(
            phase=phase,
            chain=chain,
            iteration=iteration,
            potential_energy=potential_energy_of(self.values),
            nonfinite_coordinates=nonfinite_coordinates(total),
            sites=self.problems(),
            position=self.position,
            exception=exception,
        )


def inspect_stop(
    evaluate: Callable[[Sequence[Mapping[str, Any]]], Sequence[PointEvaluation]],
    z: Mapping[str, Any],
    dtype: str,
) -> StopPoint:
    """What holds a chain at unconstrained point ``z``: the point and its float-step neighbours evaluated.

    ``evaluate`` is the backend's: every term at each of several unconstrained points.
    """
    z = {name: np.asarray(value) for name, value in z.items()}
    probes = float_step_points(z, dtype)
    evaluations = list(evaluate([z, *(point for _, point in probes)]))
    here = potential_energy_of(evaluations[0].values)
    change: dict[str, float] = {}
    for (name, _), evaluation in zip(probes, evaluations[1:]):
        moved = abs(potential_energy_of(evaluation.values) - here)
        if np.isfinite(moved):
            change[name] = max(change.get(name, 0.0), moved)
    return StopPoint(evaluations[0], z, dtype, change)


#: Sampling draws below this many are too few to call a latent that kept one value frozen.
MIN_DRAWS_FOR_FROZEN = 50
#: In float32, a latent this large (in magnitude) has a float spacing of 1/128 or more.
LARGE_IN_FLOAT32 = 2.0**16


#: Each latent's ``(lower, upper)`` support bounds, ``None`` where it has none.
Bounds = Mapping[str, tuple[Any, Any]]


def frozen_latents(
    draws: Mapping[str, np.ndarray], dtype: str, bounds: Callable[[], Bounds] | None = None
) -> tuple[SiteProblem, ...]:
    """The latents that kept one value through a chain's sampling: a chain that did not move there.

    ``draws`` maps each continuous latent to one chain's sampling draws, ``(draws, ...)``;
    ``bounds()``, called only if a latent froze, maps a latent to the ``(lower, upper)``
    bounds of its support (``None`` where it has none; arrays broadcast to one draw).
    A coordinate whose every draw is the same value did not move at all: within a
    few floats of a bound, the data push it against that bound; in float32, at a
    large value, the posterior is narrower than float32's spacing there; otherwise
    every proposal was rejected.

    Examples
    --------
    >>> [p.site for p in frozen_latents({"mu": np.full(100, 1e9, "float32"), "s": np.arange(100.0)}, "float32")]
    ['mu']
    >>> (p,) = frozen_latents({"s": np.full(100, 0.5, "float32")}, "float32", lambda: {"s": (0.0, 0.5)})
    >>> p.causes[0].kind
    'pinned_at_bound'
    """
    problems: list[SiteProblem] = []
    supports: Bounds | None = None
    for name, value in draws.items():
        value = np.asarray(value)
        if value.shape[0] < MIN_DRAWS_FOR_FROZEN or not np.issubdtype(value.dtype, np.floating):
            continue
        frozen = np.all(value == value[:1], axis=0)
        if not np.any(frozen):
            continue
        first = value[0]
        if supports is None:
            supports = bounds() if bounds is not None else {}
        pinned = [
            (side, np.broadcast_to(np.asarray(bound, np.float64), first.shape), at_bound)
            for side, bound in zip(("lower", "upper"), supports.get(name, (None, None)))
            if bound is not None and np.any(at_bound := frozen & _at(first, bound, value.dtype))
        ]
        if pinned:
            side, limits, where = pinned[0]
            labels = coordinate_labels(name, value.shape[1:], where)
            at, limit = float(first[where].flat[0]), float(limits[where].flat[0])
            cause = _pinned_cause(name, labels, at, (side, limit), len(value), dtype)
        else:
            labels = coordinate_labels(name, value.shape[1:], frozen)
            at = float(np.max(np.abs(first[frozen])))
            cause = _frozen_cause(name, labels, at, len(value), dtype)
        problems.append(SiteProblem(name, "(draws)", float("nan"), (), (cause,)))
    return tuple(problems)


def _at(value: np.ndarray, bound: Any, dtype: np.dtype) -> np.ndarray:
    """Where ``value`` lies within a few floats of ``bound`` (the transforms stop short of it)."""
    bound = np.broadcast_to(np.asarray(bound, dtype=np.float64), value.shape)
    return np.abs(value - bound) <= 8 * np.finfo(dtype).eps * np.maximum(1.0, np.abs(bound))


def _pinned_cause(
    name: str, labels: tuple[str, ...], at: float, bound: tuple[str, float], count: int, dtype: str
) -> Cause:
    side, limit = bound
    which = labels[0] if len(labels) == 1 else f"{labels[0]} and {len(labels) - 1} more coordinates"
    brief = (
        f"{which} kept the value {at:.6g}, the {side} bound of its support, for all {count} sampling "
        f"draws: the data push {name} against it, where {dtype} cannot resolve the posterior"
    )
    if side == "lower" and limit == 0:
        remedy = (
            f"a prior that keeps {name} off 0 (for a scale, e.g. Gamma(2, rate)) or, where {name} "
            "scales other latents, a non-centred parameterisation; or run in float64"
        )
    else:
        beyond = "below" if side == "lower" else "beyond"
        remedy = (
            f"a prior that allows {name} {beyond} {limit:.6g} (widen that bound, or a prior without it: "
            "e.g. HalfNormal for a scale); if the bound is right, run in float64"
        )
    return Cause(
        "pinned_at_bound",
        "value",
        f"{at:.6g}",
        f"{brief}. The draws are not a posterior sample; fix: {remedy}",
        brief,
        remedy,
    )


def _frozen_cause(name: str, labels: tuple[str, ...], at: float, count: int, dtype: str) -> Cause:
    which = labels[0] if len(labels) == 1 else f"{labels[0]} and {len(labels) - 1} more coordinates"
    where = f"{which} kept the value {at:.6g} for all {count} sampling draws: the chain did not move there"
    if dtype == "float32" and at >= LARGE_IN_FLOAT32:
        spacing = float(np.spacing(np.float32(at)))
        brief = f"{where}; float32 steps by {spacing:.3g} at that value, coarser than its posterior"
        remedy = (
            "numpyro.enable_x64() (Pyro: torch.set_default_dtype(torch.float64)) before building the "
            f"model, or rescale {name} (centre and scale the data it is fit to)"
        )
    else:
        brief = f"{where}: every proposal was rejected"
        remedy = f"reparameterize so that {name} is on a unit scale, or run in float64"
    return Cause(
        "frozen",
        "value",
        f"{at:.6g}",
        f"{brief}. The draws are not a posterior sample; fix: {remedy}",
        brief,
        remedy,
    )
