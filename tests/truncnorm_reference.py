"""High-precision truncated-normal reference (mpmath) and the accuracy grid both backends test on."""

from __future__ import annotations

import math
from typing import NamedTuple

import mpmath as mp
import numpy as np

mp.mp.dps = 60

LOG_SQRT_2PI = mp.log(mp.sqrt(2 * mp.pi))


class Case(NamedTuple):
    low: float | None
    high: float | None
    x: float


def _standard_mass(lo: mp.mpf, hi: mp.mpf) -> mp.mpf:
    """Phi(hi) - Phi(lo) without cancellation at 60 digits (mirror into the upper tail)."""
    if hi <= 0:
        lo, hi = -hi, -lo
    return (mp.erfc(lo / mp.sqrt(2)) - mp.erfc(hi / mp.sqrt(2))) / 2


def reference(case: Case, dtype: type) -> dict[str, float]:
    """log_prob, its gradients (loc, scale, low, high) and cdf at loc 0, scale 1.

    The inputs are first rounded to ``dtype``: the reference is the exact value
    at the numbers the distribution actually receives.
    """
    cast = lambda v: None if v is None else mp.mpf(float(dtype(v)))  # noqa: E731
    low, high, x = cast(case.low), cast(case.high), cast(case.x)
    lo = -mp.inf if low is None else low
    hi = mp.inf if high is None else high
    mass = _standard_mass(lo, hi)
    density = lambda t: mp.mpf(0) if mp.isinf(t) else mp.npdf(t)  # noqa: E731
    t_density = lambda t: mp.mpf(0) if mp.isinf(t) else t * mp.npdf(t)  # noqa: E731
    values = {
        "log_prob": -x * x / 2 - LOG_SQRT_2PI - mp.log(mass),
        "grad_loc": x + (density(hi) - density(lo)) / mass,
        "grad_scale": x * x - 1 + (t_density(hi) - t_density(lo)) / mass,
        "cdf": _standard_mass(lo, x) / mass if x > lo else mp.mpf(0),
    }
    if low is not None:
        values["grad_low"] = density(lo) / mass
    if high is not None:
        values["grad_high"] = -density(hi) / mass
    return {k: float(v) for k, v in values.items()}


def grid() -> list[Case]:
    """Bounds from -1e3 to 1e3: one-sided either way, two-sided narrow to wide, across the mode."""
    cases = []
    for bound in (-1000.0, -38.0, -13.0, -3.0, -0.5, 0.0, 0.7, 3.0, 8.0, 13.0, 30.0, 38.0, 100.0, 1000.0):
        step = 1.0 / max(1.0, abs(bound))
        for offset in (0.0, 0.01 * step, step, 5.0 * step):
            cases.append(Case(bound, None, bound + offset))
            cases.append(Case(None, -bound, -bound - offset))
    for left in (-1000.0, -40.0, -9.0, -3.0, -0.5, 0.0, 2.0, 8.0, 30.0, 1000.0):
        for width in (1e-6, 1e-3, 0.1, 1.0, 10.0, 1000.0):
            for fraction in (0.0, 0.3, 1.0):
                cases.append(Case(left, left + width, left + fraction * width))
    for half in (1e-6, 0.5, 20.0):  # across the mode
        for fraction in (0.0, 0.25, 0.5, 1.0):
            cases.append(Case(-half, half, -half + 2 * half * fraction))
    cases += [Case(None, None, x) for x in (-30.0, 0.0, 2.5)]
    return cases


def relative_error(value: float, expected: float, absolute: float) -> float:
    """Relative error, or absolute error scaled to the tolerance where the truth is near 0."""
    if math.isinf(expected) or math.isinf(value):
        return 0.0 if value == expected else math.inf
    if abs(expected) < absolute:
        return abs(value - expected) / absolute
    return abs(value - expected) / abs(expected)


def representable(expected: float, dtype: type) -> bool:
    """Whether a value lies within the dtype's normal range (or is exactly 0)."""
    finfo = np.finfo(dtype)
    return expected == 0.0 or finfo.tiny <= abs(expected) <= finfo.max


def representable_case(case: Case, dtype: type) -> bool:
    """Whether the bounds stay distinct once rounded to ``dtype`` (a width of 1e-6 at 1000 does not in float32)."""
    return case.low is None or case.high is None or dtype(case.low) < dtype(case.high)


def cancelling_terms(case: Case, dtype: type) -> dict[str, float]:
    """Size of the terms a gradient is the difference of, in standard units.

    ``d/dloc = t - E[T]`` and ``d/dscale = t (t + 2a) - E[T (T + 2a)]`` with ``T``
    the distance from the anchoring bound ``a`` (the one nearer the mode, or the
    mode itself): where the gradient is much smaller than these terms, a dtype
    can only hold it to ``eps * terms`` (``E[T]`` itself is rounded to the dtype).
    """
    x = float(dtype(case.x))
    bounds = [float(dtype(b)) for b in (case.low, case.high) if b is not None]
    anchor = min(bounds, key=abs) if bounds and min(abs(b) for b in bounds) >= 0 else 0.0
    if len(bounds) == 2 and bounds[0] < 0 < bounds[1]:
        anchor = 0.0
    t = abs(x - anchor)
    return {"grad_loc": t + 1.0 / max(1.0, abs(anchor)), "grad_scale": t * (t + 2 * abs(anchor)) + 1.0}


def check_against_reference(cases, got, dtype, rtol, atol):
    """Compare ``got[name][i]`` with the reference; returns failures, worst relative errors, ill-conditioned count.

    Every value must be within ``rtol`` relative (``atol`` absolute where the
    truth is smaller than ``atol``). A gradient that is the near-cancelling
    difference of a data term and its expectation can only be held to
    ``eps x`` those terms: where ``rtol`` is below that floor the floor applies,
    and such points are counted.
    """
    eps = float(np.finfo(dtype).eps)
    failures, worst, conditioned = [], {}, 0
    for i, case in enumerate(cases):
        terms = cancelling_terms(case, dtype)
        for name, expected in reference(case, dtype).items():
            value = float(got[name][i])
            if math.isnan(value) or (name == "log_prob" and value == math.inf):
                failures.append((name, case, value, expected))
                continue
            if not representable(expected, dtype):
                continue
            error = abs(value - expected)
            allowed = atol if abs(expected) < atol else rtol * abs(expected)
            floor = 4 * eps * terms.get(name, 0.0)
            if floor > allowed:
                conditioned += 1
                allowed = floor
            if error > allowed:
                failures.append((name, case, value, expected))
            if abs(expected) >= atol:
                worst[name] = max(worst.get(name, 0.0), error / abs(expected))
    return failures, worst, conditioned


def reference_moments(
    loc: float, scale: float, low: float | None, high: float | None
) -> tuple[float, float, float]:
    """Mean, variance and entropy by 60-digit quadrature."""
    lo = -mp.inf if low is None else (mp.mpf(low) - loc) / scale
    hi = mp.inf if high is None else (mp.mpf(high) - loc) / scale
    mass = _standard_mass(lo, hi)
    # Break points every tenth of a standard deviation near the finite bounds: far in a tail
    # the density falls by e^-20 within one standard deviation.
    start, stop = (lo, hi) if mp.isfinite(lo) else (hi - 40, hi)
    if mp.isinf(hi):
        stop = start + 40
    points = [lo, *mp.linspace(start, stop, 80)[1:-1], hi]
    moment = lambda f: mp.quad(lambda t: f(t) * mp.npdf(t), points) / mass  # noqa: E731
    first = moment(lambda t: t)
    variance = moment(lambda t: (t - first) ** 2)
    entropy = mp.log(mass) + LOG_SQRT_2PI + moment(lambda t: t * t / 2) + mp.log(scale)
    return float(loc + scale * first), float(scale * scale * variance), float(entropy)
