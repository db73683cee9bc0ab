"""Known causes of numerical failure in a distribution, and the fix for each.

A backend describes a site's distribution as a :class:`DistributionInfo`
(family, arguments as float64 arrays, dtype); :func:`known_causes` decides,
for both backends alike, what in it is known to break HMC and what to write
instead.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass
from typing import Literal

import numpy as np

__all__ = [
    "Cause",
    "CauseKind",
    "DistributionInfo",
    "Family",
    "exact_repair",
    "format_argument",
    "known_causes",
]

CauseKind = Literal[
    "infinite_bound",
    "infinite_argument",
    "nan_argument",
    "not_positive_definite",
    "exception",
    "nonpositive_scale",
    "support_mismatch",
    "tail_overflow",
    "overflow",
]
Family = Literal["truncated_normal", "truncated", "uniform", "other"]

#: Arguments that must stay strictly positive.
SCALE_LIKE = frozenset({"scale", "concentration", "concentration0", "concentration1", "rate", "df", "sigma"})
#: Arguments that are truncation or interval bounds.
BOUNDS = frozenset({"low", "high"})
#: The three forms of a covariance: a distribution computes the others from the one it was given.
COVARIANCE_FORMS = ("covariance_matrix", "scale_tril", "precision_matrix")
#: How many standard deviations into a tail the stock truncated normals stay
#: finite (docs/lessons.md: +inf from about 13 in float32 and 38 in float64).
STOCK_TAIL_LIMIT = {"float32": 12.0, "float64": 37.0}


@dataclass(frozen=True)
class Cause:
    """A known cause of a numerical failure and the change that removes it.

    Attributes
    ----------
    kind : str
        ``"infinite_bound"``, ``"infinite_argument"``, ``"nan_argument"``, ``"nonpositive_scale"``,
        ``"support_mismatch"``, ``"tail_overflow"`` or ``"overflow"``.
    argument : str
        The distribution argument at fault (``"value"`` for the site's value).
    value : str
        Its value, as text.
    fix : str
        What to change in the model.
    """

    kind: CauseKind
    argument: str
    value: str
    fix: str


@dataclass(frozen=True)
class DistributionInfo:
    """A backend-neutral description of a site's distribution.

    Attributes
    ----------
    name : str
        The class name as the user wrote it, e.g. ``"TruncatedNormal"``.
    family : {"truncated_normal", "truncated", "uniform", "other"}
    arguments : mapping of str to ndarray
        Its arguments as float64 arrays (truncation bounds as ``low``/``high``).
    dtype : str
        The dtype the backend computes in (``"float32"`` or ``"float64"``).
    backend : {"numpyro", "pyro"}
    exact_tails : bool
        Whether its log density is exact far in the tails (robusthmc's own).
    """

    name: str
    family: Family
    arguments: Mapping[str, np.ndarray]
    dtype: str
    backend: Literal["numpyro", "pyro"]
    exact_tails: bool = False

    def __str__(self) -> str:
        args = ", ".join(f"{k}={format_argument(v)}" for k, v in self.arguments.items())
        return f"{self.name}({args})"


def format_argument(value: object) -> str:
    """Short text for an argument: a number, or a summary of an array.

    Examples
    --------
    >>> format_argument(np.inf), format_argument(np.array([1.0, np.inf, 3.0]))
    ('inf', 'array of 3 (min 1, max inf)')
    """
    array = np.asarray(value, dtype=np.float64)
    if array.size == 1:
        return f"{float(array.reshape(())):.6g}"
    nan = np.isnan(array)
    if nan.all():
        return f"array of {array.size} (all NaN)"
    finite_part = array[~nan]
    text = f"array of {array.size} (min {finite_part.min():.6g}, max {finite_part.max():.6g}"
    return text + (f", {nan.sum()} NaN)" if nan.any() else ")")


def _fix_for_infinite_bound(info: DistributionInfo, bound: str) -> str:
    module = f"robusthmc.{info.backend}"
    other = "high" if bound == "low" else "low"
    why = (
        "an infinite bound breaks the map to unconstrained space "
        "(low + (high - low) * sigmoid(x) = inf) and the gradient of the normalising "
        "constant (d/dscale Phi((inf - loc)/scale) = 0 * inf = NaN)"
    )
    if info.family == "truncated_normal":
        return (
            f"write {bound}=None (no bound) instead of {bound}=inf: "
            f"{module}.TruncatedNormal(loc, scale, {other}=..., {bound}=None); {why}"
        )
    if info.family == "truncated":
        return (
            f"write {bound}=None (no bound) instead of {bound}=inf: "
            f"{module}.truncated(base, {other}=..., {bound}=None); {why}"
        )
    # Uniform
    side = "(low, inf)" if bound == "high" else "(-inf, high)"
    return (
        f"Uniform with {bound}=inf has no density (its log density is -log(inf) = -inf): "
        f"for a flat prior on {side} use ImproperUniform with a greater_than/less_than "
        f"support; for a proper prior truncate one, e.g. {module}.truncated(base, "
        f"{other}=..., {bound}=None)"
    )


_INFINITE_BOUND_HARM = (
    "an infinite bound makes the map to unconstrained space inf and the gradient of the "
    "normalising constant NaN (d/dscale Phi((inf - loc)/scale) = 0 * inf)"
)


def exact_repair(
    family: Family, *, exact_tails: bool, infinite_bounds: Collection[str], backend: str
) -> Cause | None:
    """The cause an exact swap of a distribution removes, or ``None`` where no swap is exact.

    A swap is exact when the new distribution has the density the user wrote,
    evaluated without the failure: a truncated normal that is not robusthmc's
    becomes ``robusthmc.<backend>.TruncatedNormal`` (exact in its tails, an
    infinite bound read as none), and any other truncation with a bound that is
    infinite everywhere gets that bound left out (``None``).  Nothing else is
    swapped: a wall in the support, an improper prior or float32 change what the
    model means, and stay diagnoses.

    Parameters
    ----------
    family : {"truncated_normal", "truncated", "uniform", "other"}
    exact_tails : bool
        Whether the distribution is robusthmc's own already.
    infinite_bounds : collection of str
        The bounds (``"low"``, ``"high"``) known to be infinite everywhere.
    backend : {"numpyro", "pyro"}

    Examples
    --------
    >>> exact_repair("truncated_normal", exact_tails=False, infinite_bounds=["high"], backend="numpyro").kind
    'infinite_bound'
    >>> exact_repair("uniform", exact_tails=False, infinite_bounds=["high"], backend="numpyro") is None
    True
    """
    bounds = [bound for bound in ("low", "high") if bound in infinite_bounds]
    if family in ("truncated_normal", "truncated") and bounds:
        written = " and ".join(f"{bound}=inf" for bound in bounds)
        return Cause(
            "infinite_bound", bounds[0], "inf", f"{written} read as no bound (None): {_INFINITE_BOUND_HARM}"
        )
    if family == "truncated_normal" and not exact_tails:
        return Cause(
            "tail_overflow",
            "loc",
            "any",
            f"the stock truncated normal loses its normalising constant far in a tail (+inf "
            f"beyond {STOCK_TAIL_LIMIT['float32']:g} standard deviations in float32); "
            f"robusthmc.{backend}.TruncatedNormal is exact there",
        )
    return None


def known_causes(info: DistributionInfo, *, value_in_support: bool = True) -> tuple[Cause, ...]:
    """What in a distribution is known to break HMC, each with its fix.

    Parameters
    ----------
    info : DistributionInfo
        The site's distribution.
    value_in_support : bool
        Whether the site's value lies in the distribution's support.

    Returns
    -------
    tuple of Cause

    Examples
    --------
    >>> import numpy as np
    >>> info = DistributionInfo(
    ...     "TruncatedNormal", "truncated_normal",
    ...     {"loc": np.array(0.0), "scale": np.array(1.5), "low": np.array(0.0), "high": np.array(np.inf)},
    ...     "float32", "numpyro",
    ... )
    >>> [(c.kind, c.argument) for c in known_causes(info)]
    [('infinite_bound', 'high')]
    """
    causes = []
    arguments = {k: np.asarray(v, dtype=np.float64) for k, v in info.arguments.items()}
    nan_forms = [name for name in COVARIANCE_FORMS if name in arguments and np.any(np.isnan(arguments[name]))]
    cholesky_failed = bool(nan_forms) and len(nan_forms) < sum(name in arguments for name in COVARIANCE_FORMS)
    if cholesky_failed:
        given = next(name for name in COVARIANCE_FORMS if name in arguments and name not in nan_forms)
        causes.append(
            Cause(
                "not_positive_definite",
                given,
                format_argument(arguments[given]),
                f"{info.name}'s {given} is not positive definite here, so its Cholesky factor is NaN: "
                f"build the matrix so that it cannot fail (correlations from LKJCholesky, or in "
                f"(-1, 1) rather than beyond; variances positive), or add jitter to its diagonal",
            )
        )
    for name, value in arguments.items():
        if name in nan_forms and (cholesky_failed or name != nan_forms[0]):
            continue  # one cause per covariance, not one per form computed from it
        if np.any(np.isnan(value)):
            causes.append(
                Cause(
                    "nan_argument",
                    name,
                    format_argument(value),
                    f"{info.name}'s argument {name} is NaN: the expression that computes it from "
                    f"the latents is undefined there (sqrt or log of a negative number, 0/0, "
                    f"inf - inf); guard it, or constrain the latents it is computed from",
                )
            )
        if not np.any(np.isinf(value)):
            continue
        if name in BOUNDS and info.exact_tails:
            continue  # robusthmc's own: an infinite bound means no bound
        if name in BOUNDS and info.family != "other":
            causes.append(
                Cause("infinite_bound", name, format_argument(value), _fix_for_infinite_bound(info, name))
            )
        else:
            causes.append(
                Cause(
                    "infinite_argument",
                    name,
                    format_argument(value),
                    f"{info.name}'s argument {name} is infinite: every argument must be finite; "
                    f"if it stands for 'no bound', leave the argument out (None)",
                )
            )
    tiny = np.finfo(np.dtype(info.dtype)).tiny if info.dtype in STOCK_TAIL_LIMIT else 0.0
    for name in SCALE_LIKE & arguments.keys():
        value = arguments[name]
        if np.any(value <= tiny):
            causes.append(
                Cause(
                    "nonpositive_scale",
                    name,
                    format_argument(value),
                    f"{info.name}'s {name} reaches 0 or goes negative ({format_argument(value)}): "
                    f"give the latent behind it a positive support (HalfNormal, LogNormal, "
                    f"InverseGamma), or keep it off zero, e.g. {name} = 1e-6 + softplus(raw)",
                )
            )
    if info.family == "truncated_normal" and not info.exact_tails:
        causes.extend(_tail_causes(info, arguments))
    if not value_in_support:
        causes.append(
            Cause(
                "support_mismatch",
                "value",
                "outside the support",
                f"the value lies outside the support of {info}: the support must agree with "
                f"the constraint the value is sampled under (match the prior's support to "
                f"the parameter's constraint, or make the bounds consistent with the data)",
            )
        )
    return tuple(causes)


def _tail_causes(info: DistributionInfo, arguments: Mapping[str, np.ndarray]) -> list[Cause]:
    limit = STOCK_TAIL_LIMIT.get(info.dtype)
    loc, scale = arguments.get("loc"), arguments.get("scale")
    if limit is None or loc is None or scale is None:
        return []
    causes = []
    with np.errstate(divide="ignore", invalid="ignore"):
        for bound, sign in (("low", 1.0), ("high", -1.0)):
            value = arguments.get(bound)
            if value is None:
                continue
            standardized = sign * (value - loc) / scale
            finite = np.isfinite(standardized)
            if np.any(finite & (standardized > limit)):
                causes.append(
                    Cause(
                        "tail_overflow",
                        bound,
                        f"{np.nanmax(np.where(finite, standardized, np.nan)):.3g} standard "
                        f"deviations into the tail in {info.dtype}",
                        f"{info.name} loses its normalising constant more than {limit:g} standard "
                        f"deviations into the tail in {info.dtype} (the log density becomes +inf): "
                        f"use robusthmc.{info.backend}.TruncatedNormal, exact in the tails"
                        + (", or run in float64" if info.dtype == "float32" else ""),
                    )
                )
    return causes
