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
    "data_at_edge",
    "describe_operation",
    "exact_repair",
    "format_argument",
    "hidden_nonfinite_cause",
    "known_causes",
    "nonfinite_data",
    "nonfinite_origin_cause",
]

CauseKind = Literal[
    "infinite_bound",
    "infinite_argument",
    "nan_argument",
    "not_positive_definite",
    "exception",
    "nonpositive_scale",
    "wall",
    "drift",
    "float32_resolution",
    "frozen",
    "pinned_at_bound",
    "start_outside_support",
    "support_mismatch",
    "nonfinite_data",
    "data_at_edge",
    "tail_overflow",
    "overflow",
    "saturated_probability",
    "hidden_nonfinite",
    "nonfinite_origin",
]
Family = Literal["truncated_normal", "truncated", "uniform", "other"]

#: Arguments that must stay strictly positive.
SCALE_LIKE = frozenset({"scale", "concentration", "concentration0", "concentration1", "rate", "df", "sigma"})
#: Arguments that are probabilities: each has a log-odds form (``logits``) that cannot saturate.
PROBABILITY_LIKE = frozenset({"probs"})
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
        One of :data:`CauseKind`, e.g. ``"infinite_bound"``, ``"wall"``, ``"drift"``.
    argument : str
        The distribution argument at fault (``"value"`` for the site's value).
    value : str
        Its value, as text.
    fix : str
        What to change in the model, with the reason.
    brief : str
        What broke, in a few words: the cause part of an error's first line.
    remedy : str
        What to change, in a few words: the fix part of an error's first line.
    """

    kind: CauseKind
    argument: str
    value: str
    fix: str
    brief: str = ""
    remedy: str = ""

    def headline(self, site: str) -> str:
        """``site 'V': <what broke>; fix: <what to change>``: the first line of an error.

        Examples
        --------
        >>> Cause("wall", "log_factor", "-inf", "...", "the factor is -inf here", "declare the support").headline("w")
        "site 'w': the factor is -inf here; fix: declare the support"
        """
        brief = self.brief or f"{self.argument}={self.value}"
        remedy = self.remedy or self.fix
        return f"site {site!r}: {brief}; fix: {remedy}"


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
    discrete : bool
        Whether its support is discrete (counts, labels).
    """

    name: str
    family: Family
    arguments: Mapping[str, np.ndarray]
    dtype: str
    backend: Literal["numpyro", "pyro"]
    exact_tails: bool = False
    discrete: bool = False

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


def _infinite_bound_cause(info: DistributionInfo, bound: str, value: str) -> Cause:
    module = f"robusthmc.{info.backend}"
    other = "high" if bound == "low" else "low"
    why = (
        "an infinite bound breaks the map to unconstrained space "
        "(low + (high - low) * sigmoid(x) = inf) and the gradient of the normalising "
        "constant (d/dscale Phi((inf - loc)/scale) = 0 * inf = NaN)"
    )
    brief = f"{bound}=inf makes the gradient NaN (d/dscale Phi(inf/scale) = 0*inf)"
    if info.family in ("truncated_normal", "truncated"):
        written = (
            f"{module}.TruncatedNormal(loc, scale, {other}=..., {bound}=None)"
            if info.family == "truncated_normal"
            else f"{module}.truncated(base, {other}=..., {bound}=None)"
        )
        fix = f"write {bound}=None (no bound) instead of {bound}=inf: {written}; {why}"
        return Cause("infinite_bound", bound, value, fix, brief, f"{bound}=None, i.e. {written}")
    # Uniform
    side = "(low, inf)" if bound == "high" else "(-inf, high)"
    fix = (
        f"Uniform with {bound}=inf has no density (its log density is -log(inf) = -inf): "
        f"for a flat prior on {side} use ImproperUniform with a greater_than/less_than "
        f"support; for a proper prior truncate one, e.g. {module}.truncated(base, "
        f"{other}=..., {bound}=None)"
    )
    brief = f"Uniform with {bound}=inf has no density (-log(inf) = -inf)"
    remedy = f"ImproperUniform for a flat prior on {side}, or {module}.truncated(base, {bound}=None)"
    return Cause("infinite_bound", bound, value, fix, brief, remedy)


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
            "infinite_bound",
            bounds[0],
            "inf",
            f"{written} read as no bound (None): {_INFINITE_BOUND_HARM}",
            f"{written} makes the gradient NaN",
            f"{' and '.join(f'{bound}=None' for bound in bounds)}",
        )
    if family == "truncated_normal" and not exact_tails:
        return Cause(
            "tail_overflow",
            "loc",
            "any",
            f"the stock truncated normal loses its normalising constant far in a tail (+inf "
            f"beyond {STOCK_TAIL_LIMIT['float32']:g} standard deviations in float32); "
            f"robusthmc.{backend}.TruncatedNormal is exact there",
            "the stock truncated normal overflows far in a tail",
            f"robusthmc.{backend}.TruncatedNormal",
        )
    return None


def nonfinite_data(nan: int, inf: int, size: int) -> str:
    """What observed data holds that is not finite, as text (empty where it is all finite).

    Examples
    --------
    >>> nonfinite_data(1, 1, 4), nonfinite_data(0, 0, 4)
    ('NaN and inf (2 of 4 values)', '')
    """
    kinds = [kind for kind, count in (("NaN", nan), ("inf", inf)) if count]
    return f"{' and '.join(kinds)} ({nan + inf} of {size} values)" if kinds else ""


def data_at_edge(outside: int, edge: int, size: int) -> str:
    """What observed data holds outside its distribution's support or on its edge, as text.

    Examples
    --------
    >>> data_at_edge(0, 2, 6), data_at_edge(1, 0, 4), data_at_edge(0, 0, 4)
    ('2 of 6 values on the edge of the support', '1 of 4 values outside the support', '')
    """
    kinds = [kind for kind, count in (("outside", outside), ("on the edge of", edge)) if count]
    return f"{outside + edge} of {size} values {' or '.join(kinds)} the support" if kinds else ""


def _data_at_edge_cause(info: DistributionInfo, text: str) -> Cause:
    brief = f"the observed data holds {text} of {info.name}"
    if info.discrete:
        remedy = _RECODE.get(
            next((family for family in _RECODE if family in info.name), ""),
            "recode them as whole numbers inside its support, or drop those values",
        )
        return Cause(
            "data_at_edge",
            "value",
            text,
            f"{brief}: its log density is -inf there at any value of the latents, so no start is "
            f"valid and every proposal is rejected. The data must lie inside the support: {remedy}",
            brief,
            remedy,
        )
    if "on the edge of" not in text:  # beyond the support (a negative value under HalfNormal)
        remedy = (
            "a likelihood whose support holds the data (for values of any sign: Normal or "
            "StudentT), or drop those values"
        )
        return Cause(
            "data_at_edge",
            "value",
            text,
            f"{brief}, where its density is 0: the likelihood is 0 at any value of the latents, "
            f"so no start is valid and every proposal is rejected. The data do not fit this "
            f"family: {remedy}",
            brief,
            remedy,
        )
    return Cause(
        "data_at_edge",
        "value",
        text,
        f"{brief}, where its density is 0 or infinite: "
        f"the likelihood is not finite at any value of the latents there, however they move. "
        f"The data must lie inside the support: drop those values, move them just inside "
        f"(proportions with 0 or 1: (y * (n - 1) + 0.5) / n for n values), or model them apart "
        f"(a hurdle or a zero-one-inflated likelihood)",
        brief,
        "drop those values, move them just inside the support, or model them apart "
        "(a hurdle or zero-one-inflated likelihood)",
    )


#: How discrete data get inside the support of a family (matched in the distribution's name).
_RECODE = {
    "Categorical": "recode the labels to run from 0 to K-1 (y - 1 for labels counted from 1), or drop those values",
    "Bernoulli": "recode the values as 0 and 1 (booleans or y == level), or drop those values",
    "NegativeBinomial": "counts must be whole numbers >= 0: round or drop the others",
    "Binomial": "counts must be whole numbers from 0 to at most total_count: check total_count against the "
    "data, or drop those values",
    "Poisson": "counts must be whole numbers >= 0: round or drop the others (or use a continuous likelihood)",
}


_MASK_NONFINITE = {
    "numpyro": "obs_mask=jnp.isfinite(y) (numpyro imputes them)",
    "pyro": "obs=torch.nan_to_num(y), obs_mask=torch.isfinite(y) (Pyro's mask needs finite values)",
}


def _nonfinite_data_cause(info: DistributionInfo, text: str) -> Cause:
    mask = _MASK_NONFINITE[info.backend]
    return Cause(
        "nonfinite_data",
        "value",
        text,
        f"the observed data holds {text}: the site's log density is not finite at any value of "
        f"the latents, so no start is valid and every proposal is rejected. Drop those values, "
        f"or leave them out of the likelihood: {mask}",
        f"the observed data holds {text}",
        f"drop those values, or mask them: {mask}",
    )


def known_causes(
    info: DistributionInfo,
    *,
    value_in_support: bool = True,
    nonfinite_observed: str = "",
    observed_at_edge: str = "",
    failing: bool = False,
    origin: str = "",
) -> tuple[Cause, ...]:
    """What in a distribution is known to break HMC, each with its fix.

    Parameters
    ----------
    info : DistributionInfo
        The site's distribution.
    value_in_support : bool
        Whether the site's value lies in the distribution's support.
    nonfinite_observed : str
        For observed data that is not all finite, what it holds (:func:`nonfinite_data`):
        then that is the cause, not the support.
    observed_at_edge : str
        For observed data with values outside the support or on its edge, what
        it holds (:func:`data_at_edge`): the cause where the site fails there,
        or where a value is outside the support.
    failing : bool
        Whether the site's term or its gradient is not finite here.  Then what is
        harmless elsewhere is named too: a probability of exactly 0 or 1 (which
        an observation it rules out turns into a log probability of -inf).
    origin : str
        The user's operation that made the site's NaN or inf from finite inputs
        (:func:`describe_operation`), where known: named in the argument's cause.

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
    if nonfinite_observed:
        return (_nonfinite_data_cause(info, nonfinite_observed),)
    if observed_at_edge and (failing or not value_in_support):
        return (_data_at_edge_cause(info, observed_at_edge),)
    causes = []
    arguments = {k: np.asarray(v, dtype=np.float64) for k, v in info.arguments.items()}
    causes.extend(_covariance_causes(info, arguments))
    saturated = _saturation_causes(info, arguments) if failing else []
    causes.extend(saturated)
    for name, value in arguments.items():
        if name in COVARIANCE_FORMS or (name == "logits" and saturated):
            continue  # Pyro reads logits off probs: a saturated probability's is infinite
        text = format_argument(value)
        if np.any(np.isnan(value)):
            causes.append(
                Cause(
                    "nan_argument",
                    name,
                    text,
                    f"{info.name}'s argument {name} is NaN: the expression that computes it from "
                    f"the latents is undefined there (sqrt or log of a negative number, 0/0, "
                    f"inf - inf); guard it, or constrain the latents it is computed from",
                    f"{info.name}'s {name} is NaN: {origin}"
                    if origin
                    else f"{info.name}'s {name} is NaN (computed from latents where it is undefined)",
                    f"constrain the latents {name} is computed from, or guard that expression",
                )
            )
        if not np.any(np.isinf(value)):
            continue
        if name in BOUNDS and info.exact_tails:
            continue  # robusthmc's own: an infinite bound means no bound
        if name in BOUNDS and info.family != "other":
            causes.append(_infinite_bound_cause(info, name, text))
        elif info.name == "factor" and np.any(value == -np.inf):
            causes.append(_wall_cause())
        elif name in BOUNDS:
            causes.append(
                Cause(
                    "infinite_argument",
                    name,
                    text,
                    f"{info.name}'s argument {name} is infinite: every argument must be finite; "
                    f"if it stands for 'no bound', leave the argument out (None)",
                    f"{info.name}'s {name} is {text}",
                    f"keep {name} finite (for 'no bound' leave the argument out)",
                )
            )
        else:
            causes.append(
                Cause(
                    "infinite_argument",
                    name,
                    text,
                    f"{info.name}'s {name} overflowed to infinity ({text}): the expression that "
                    f"computes it from the latents left the {info.dtype} range (exp overflows "
                    f"above {_EXP_LIMIT.get(info.dtype, 709.8)} in {info.dtype}; so does a division "
                    f"by a number near 0). Keep that expression on a moderate scale (standardise "
                    f"the covariates, tighter priors on its coefficients), or compute in float64",
                    f"{info.name}'s {name} overflowed to {text}" + (f": {origin}" if origin else ""),
                    f"keep the expression behind {name} on a moderate scale (standardised "
                    f"covariates, tighter priors), or compute in float64",
                )
            )
    tiny = np.finfo(np.dtype(info.dtype)).tiny if info.dtype in STOCK_TAIL_LIMIT else 0.0
    for name in SCALE_LIKE & arguments.keys():
        value = arguments[name]
        if not np.any(value <= tiny):
            continue
        text = format_argument(value)
        if np.any(value < 0):
            fix, brief, remedy = (
                f"{info.name}'s {name} reaches 0 or goes negative ({text}): "
                f"give the latent behind it a positive support (HalfNormal, LogNormal, "
                f"InverseGamma), or keep it off zero, e.g. {name} = 1e-6 + softplus(raw)",
                f"{info.name}'s {name}={text} reaches 0 or below",
                f"a positive prior for the latent behind {name}, or {name} = 1e-6 + softplus(raw)",
            )
        else:  # 0 without going negative: a positive expression that underflowed
            fix, brief, remedy = (
                f"{info.name}'s {name} reaches 0 ({text}) without going negative: the "
                f"expression behind it underflowed (exp or softplus of a large negative "
                f"number is 0 in {info.dtype}). Put that expression on a moderate scale "
                f"(standardise the covariates, tighter priors), keep it off 0 with a floor "
                f"({name} = 1e-6 + ...), or compute in float64",
                f"{info.name}'s {name}={text} underflowed to 0",
                f"the expression behind {name} on a moderate scale (standardised covariates, "
                f"tighter priors), a floor ({name} = 1e-6 + ...), or float64",
            )
        causes.append(Cause("nonpositive_scale", name, text, fix, brief, remedy))
    if info.family == "truncated_normal" and not info.exact_tails:
        causes.extend(_tail_causes(info, arguments))
    if not value_in_support:
        causes.append(
            Cause(
                "support_mismatch",
                "value",
                "outside the support",
                f"the value lies outside the support of {info}: a wall the sampler meets inside "
                f"the space it explores. The support must agree with the constraint the value is "
                f"sampled under: match the prior's support to the parameter's constraint, or, for "
                f"a value computed from latents, declare those latents' support so that it cannot "
                f"leave this one",
                f"its value lies outside the support of {info.name}: a wall inside the latents' support",
                "match the support to the latent's constraint (declare it, e.g. constraints.positive)",
            )
        )
    return tuple(causes)


#: Where exp overflows to infinity.
_EXP_LIMIT = {"float32": 88.7, "float64": 709.8}


def _saturation_causes(info: DistributionInfo, arguments: Mapping[str, np.ndarray]) -> list[Cause]:
    """A probability of exactly 0 or 1: a sigmoid or softmax that rounded off."""
    causes = []
    for name in PROBABILITY_LIKE & arguments.keys():
        value = arguments[name]
        if not np.any((value == 0.0) | (value == 1.0)):
            continue
        text = format_argument(value)
        constructor = info.name.removesuffix("Probs")
        causes.append(
            Cause(
                "saturated_probability",
                name,
                text,
                f"{info.name}'s {name} is exactly 0 or 1 at some entries ({text}): the "
                f"probability saturated (in {info.dtype} a sigmoid written as 1 / (1 + exp(-eta)) "
                f"is exactly 1 once eta passes about {17 if info.dtype == 'float32' else 37}), and an "
                f"observation it rules out has log probability -inf, with no gradient to "
                f"bring the chain back. Pass the log-odds instead, which never saturate: "
                f"{constructor}(logits=eta), not {constructor}(probs=sigmoid(eta))",
                f"{info.name}'s {name} saturated at exactly 0 or 1 ({text})",
                f"pass the log-odds: {constructor}(logits=eta), not {constructor}(probs=sigmoid(eta))",
            )
        )
    return causes


def hidden_nonfinite_cause(where: str) -> Cause:
    """A finite term whose gradient is NaN because a select (``where``) skips a NaN or inf branch.

    Examples
    --------
    >>> hidden_nonfinite_cause("jnp.where at model.py:7").headline("f")[:55]
    "site 'f': jnp.where at model.py:7 hides a NaN or inf in"
    """
    brief = (
        f"{where} hides a NaN or inf in the branch it does not take here, and that branch's "
        f"gradient still flows (0 * NaN = NaN)"
    )
    remedy = "make that branch finite too, the double where: where(ok, f(where(ok, x, safe)), other)"
    return Cause(
        "hidden_nonfinite",
        "where",
        where,
        f"{brief}: the value is finite but its gradient is NaN, so every trajectory that reaches "
        f"here is rejected. {remedy[0].upper()}{remedy[1:]}, with safe any value where f is "
        f"defined (1.0 for sqrt or log): then the branch not taken is finite and its gradient 0",
        brief,
        remedy,
    )


def describe_operation(source: str, place: str, kind: str) -> str:
    """How an operation that made a NaN or inf is named: its line of source (without a comment).

    Examples
    --------
    >>> describe_operation("    s = jnp.log(tau)  # the scale", "model.py:12", "nan")
    '`s = jnp.log(tau)` gives nan (model.py:12)'
    >>> describe_operation("", "<string>:3", "an infinity")
    'the operation at <string>:3 gives an infinity'
    """
    text = source.split("  #")[0].strip()
    return f"`{text}` gives {kind} ({place})" if text else f"the operation at {place} gives {kind}"


def nonfinite_origin_cause(origin: str) -> Cause:
    """A term that is not finite, traced to the user's operation that made its NaN or inf.

    ``origin`` names it (:func:`describe_operation`).

    Examples
    --------
    >>> nonfinite_origin_cause("`y = jnp.log(x)` gives nan (model.py:7)").headline("f")[:60]
    "site 'f': `y = jnp.log(x)` gives nan (model.py:7); fix: keep"
    """
    remedy = (
        "keep its inputs in its domain there: constrain the latents they are computed from, "
        "or guard the expression"
    )
    return Cause(
        "nonfinite_origin",
        "operation",
        origin,
        f"{origin} from finite inputs, and the NaN or inf flows into this term: {remedy} (log and "
        f"sqrt need positive inputs, a division a non-zero divisor, exp an input below about 88 "
        f"in float32 or 709 in float64)",
        origin,
        remedy,
    )


def _wall_cause() -> Cause:
    return Cause(
        "wall",
        "log_factor",
        "-inf",
        "the factor is -inf on part of the support of the latents it is computed from: a wall "
        "HMC cannot see. Trajectories that cross it are rejected whole, so the draws near it "
        "are biased and the step size shrinks. Declare the support instead (a prior on it, "
        "e.g. HalfNormal or constraints.positive for x > 0; a transformed or truncated "
        "distribution for an interval), so the sampler never proposes beyond it",
        "the factor is -inf here: a wall inside the support of the latents it is computed from",
        "declare that support in the latent's prior (e.g. constraints.positive) instead of -inf",
    )


def _covariance_causes(info: DistributionInfo, arguments: Mapping[str, np.ndarray]) -> list[Cause]:
    """A covariance that is NaN: a failed Cholesky, named by the form the distribution holds."""
    present = [name for name in COVARIANCE_FORMS if name in arguments]
    nan_forms = [name for name in present if np.any(np.isnan(arguments[name]))]
    if not nan_forms:
        return []
    given = next((name for name in present if name not in nan_forms), None)
    if given is not None:  # a finite matrix whose factorisation is NaN
        what = f"{info.name}'s {given} is not positive definite here: its Cholesky factor is NaN"
        name, text = given, format_argument(arguments[given])
    elif "scale_tril" in nan_forms:  # the factor itself is NaN: a Cholesky that failed upstream
        what = (
            f"{info.name}'s scale_tril is NaN: a Cholesky factorisation failed (the matrix is "
            f"not positive definite for these latents; jnp.linalg.cholesky and numpyro's own "
            f"from covariance_matrix return NaN)"
        )
        name, text = "scale_tril", format_argument(arguments["scale_tril"])
    else:
        name = nan_forms[0]
        what = f"{info.name}'s {name} is NaN (computed from latents where it is undefined)"
        text = format_argument(arguments[name])
    return [
        Cause(
            "not_positive_definite",
            name,
            text,
            f"{what}: build the matrix so that it cannot fail (correlations from LKJCholesky, or "
            f"in (-1, 1) rather than beyond; variances positive), or add jitter to its diagonal",
            what,
            "constrain the latents the matrix is built from (LKJCholesky, correlations in "
            "(-1, 1)), or add jitter to its diagonal",
        )
    ]


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
                depth = f"{np.nanmax(np.where(finite, standardized, np.nan)):.3g}"
                causes.append(
                    Cause(
                        "tail_overflow",
                        bound,
                        f"{depth} standard deviations into the tail in {info.dtype}",
                        f"{info.name} loses its normalising constant more than {limit:g} standard "
                        f"deviations into the tail in {info.dtype} (the log density becomes +inf): "
                        f"use robusthmc.{info.backend}.TruncatedNormal, exact in the tails"
                        + (", or run in float64" if info.dtype == "float32" else ""),
                        f"{bound} lies {depth} standard deviations from loc: the stock "
                        f"{info.name}'s normalising constant overflows in {info.dtype}",
                        f"robusthmc.{info.backend}.TruncatedNormal (exact in the tails)",
                    )
                )
    return causes
