"""The truncated normal's numerics, written once for every array backend.

Both ``robusthmc.numpyro.TruncatedNormal`` and ``robusthmc.pyro.TruncatedNormal``
call these functions with their own :class:`ArrayOps` (``jax.numpy`` or
``torch``), so the two follow the same algorithm, operation for operation.

The algorithm
-------------
Standardise the bounds, ``lo = (low - loc)/scale`` and ``hi = (high - loc)/scale``
(``-inf``/``inf`` for no bound, with the "double where", so that an infinite
bound contributes an exact zero gradient, never ``0 * inf``). The mass
``Phi(hi) - Phi(lo)`` is then, with ``width = (high - low)/scale``:

* right tail (``lo >= 0``): ``phi(lo) G(lo, width)``,
* left tail (``hi <= 0``): ``phi(hi) G(-hi, width)``,
* across the mode: ``(erf(hi/sqrt2) - erf(lo/sqrt2))/2``, a sum of two positive numbers,

where ``G(a, w) = integral_0^w exp(-a t - t^2/2) dt`` for ``a >= 0`` is free of
cancellation: 16-point Gauss-Legendre quadrature where ``w (a + w/2) <= 1``,
else ``M_0(a) - exp(-w (a + w/2)) M_0(a + w)`` from the Mills ratio
``M_0(t) = integral_0^inf exp(-t s - s^2/2) ds`` (a Laplace continued fraction
above 2). In a tail ``log_prob = -d (d + 2 lo)/2 - log G - log scale`` with
``d = (x - low)/scale``: two large numbers are never subtracted, however far
the bound is in the tail, in float32 as in float64. The normalising constant
``log G + log scale`` (or ``log Z + log sqrt(2 pi) + log scale`` across the
mode) has closed-form derivatives (:func:`log_normalizer`), which each backend
installs as a custom derivative. ``icdf`` (and so sampling) is the closed-form quantile
``ndtri(Phi(lo) + q (Phi(hi) - Phi(lo)))``, with the exact mass and computed
in whichever tail keeps its precision, wherever that is exact to working
precision; for narrow intervals and far tails it is a safeguarded Newton
iteration for the distance from the bound that anchors the mass, with a fixed
number of steps (no unbounded loop), followed by one differentiable Newton step
that gives the implicit-function derivatives for reparametrised sampling (a
backend may compute that fallback off its compiled program, :func:`draw`). Every
quantile is taken at ``min(q, 1 - q)`` (of ``X`` or of ``-X``), and the log CDF
and log survival function each from whichever of the two is at most one half,
so both stay exact in log space at either end.

The normalising constants depend on the parameters only: they are computed in
the parameters' shape, and broadcast against the values afterwards.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, NamedTuple, Protocol

import numpy as np
from scipy import special

__all__ = [
    "ArrayOps",
    "LogMasses",
    "TailPieces",
    "anchored_integrals",
    "central_mass",
    "closed_form_draw",
    "closed_form_suffices",
    "draw",
    "entropy",
    "icdf",
    "inverse_survival",
    "kernel_distance",
    "kernel_value",
    "log_cdf",
    "log_kernel",
    "log_normalizer",
    "log_prob",
    "log_survival",
    "mean",
    "numpy_tail_pieces",
    "quantile_with_derivatives",
    "tail_pieces",
    "variance",
]

LOG_SQRT_2PI = 0.5 * math.log(2.0 * math.pi)
SQRT_HALF = math.sqrt(0.5)
#: Below this the Mills ratio comes from ``log_ndtr``; above it, from the continued fraction.
#: Either way, relative errors at the switch are about 2e-16 for M_0 and 3e-15 for M_2.
_CONTINUED_FRACTION_FROM = 2.0
#: Terms of the continued fraction: enough for float64 precision from its starting point on.
_CONTINUED_FRACTION_TERMS = 100
#: ``w (|a| + w/2)`` up to which ``G`` is a quadrature (the integrand varies by at most e).
_NARROW = 1.0
_NODES, _WEIGHTS = np.polynomial.legendre.leggauss(16)
QUADRATURE_NODES = (_NODES + 1.0) / 2.0
QUADRATURE_WEIGHTS = _WEIGHTS / 2.0
#: Safeguarded Newton steps in ``icdf``: quadratic convergence from the starting guesses below.
_NEWTON_STEPS = 8
#: Beyond this many standard deviations the starting guess of ``icdf`` is exponential.
_EXPONENTIAL_GUESS_FROM = 5.0


class ArrayOps(Protocol):
    """The array functions the algorithm needs; ``jax.numpy`` and ``torch`` provide them.

    Besides the elementwise functions: ``full_like(x, value)``, ``nodes(like)``
    (the quadrature nodes and weights in ``like``'s dtype), ``stop_gradient(x)``,
    ``tiny(like)`` and ``eps(like)`` (the dtype's smallest normal number and
    its machine epsilon), ``cond_all(pred, if_all, otherwise)``: the
    first function's result where every entry of ``pred`` holds, else the
    second's, evaluating only one of them where it can (``lax.cond``, ``if``),
    and ``fori_loop(lower, upper, body, init)`` (``lax.fori_loop``, a Python
    loop): a compiled program holds the loop's body once, not once per step.
    """

    where: Callable[..., Any]
    exp: Callable[..., Any]
    expm1: Callable[..., Any]
    log: Callable[..., Any]
    log1p: Callable[..., Any]
    sqrt: Callable[..., Any]
    abs: Callable[..., Any]
    erf: Callable[..., Any]
    log_ndtr: Callable[..., Any]
    ndtri: Callable[..., Any]
    isfinite: Callable[..., Any]
    minimum: Callable[..., Any]
    maximum: Callable[..., Any]
    full_like: Callable[..., Any]
    stop_gradient: Callable[..., Any]

    def nodes(self, like: Any) -> tuple[Any, Any]: ...
    def tiny(self, like: Any) -> float: ...
    def eps(self, like: Any) -> float: ...
    def cond_all(self, pred: Any, if_all: Callable[[], Any], otherwise: Callable[[], Any]) -> Any: ...
    def fori_loop(self, lower: int, upper: int, body: Callable[[Any, Any], Any], init: Any) -> Any: ...


class LogMasses(NamedTuple):
    """A backend's functions with analytic derivatives.

    ``anchored(a, w) = log G(a, w)`` for ``a >= 0``, derivatives ``(-H/G, exp(-u)/G)``;
    ``central(a, b) = log(Phi(b) - Phi(a))`` for ``a < 0 < b``, derivatives
    ``(-phi(a)/Z, phi(b)/Z)``; ``log_normalizer(loc, scale, low, high)``,
    the value and derivatives of :func:`log_normalizer`; ``log_kernel``,
    :func:`log_kernel` (its derivatives may be plain). All are built on
    :func:`anchored_integrals` and :func:`central_mass`.
    """

    anchored: Any
    central: Any
    log_normalizer: Any
    log_kernel: Any


def _mills_moments(ops: ArrayOps, t: Any) -> tuple[Any, Any, Any]:
    """``M_k(t) = integral_0^inf s^k exp(-t s - s^2/2) ds`` for k = 0, 1, 2; ``t >= 0``, inf allowed.

    The continued fraction runs only where some ``t`` needs it (``cond_all``): an
    eager backend skips its loop otherwise.
    """
    small = ops.minimum(t, ops.full_like(t, _CONTINUED_FRACTION_FROM))
    m0_small = ops.exp(ops.log_ndtr(-small) + small * small / 2 + LOG_SQRT_2PI)
    m1_small = 1 - small * m0_small
    m2_small = m0_small - small * m1_small
    use_fraction = t >= _CONTINUED_FRACTION_FROM

    def with_fraction() -> tuple[Any, Any, Any]:
        large = ops.maximum(t, ops.full_like(t, _CONTINUED_FRACTION_FROM))
        # t_k = t + (k + 1) / t_{k+1}, evaluated from the back; M_0 = 1/t_0, M_1 = 1/(t_0 t_1), ...
        last = _CONTINUED_FRACTION_TERMS - 1
        t2 = ops.fori_loop(0, last - 1, lambda i, t_k: large + (last + 1 - i) / t_k, large)
        t1 = large + 2 / t2
        t0 = large + 1 / t1
        return (
            ops.where(use_fraction, 1 / t0, m0_small),
            ops.where(use_fraction, 1 / (t0 * t1), m1_small),
            ops.where(use_fraction, 2 / (t0 * t1 * t2), m2_small),
        )

    return ops.cond_all(~use_fraction, lambda: (m0_small, m1_small, m2_small), with_fraction)


def anchored_integrals(ops: ArrayOps, a: Any, width: Any) -> tuple[Any, Any, Any, Any]:
    """``G, H, J = integral_0^width t^k exp(-a t - t^2/2) dt`` (k = 0, 1, 2) and ``exp(-u)``.

    ``u = width (a + width/2)``. Valid for ``a >= 0`` (``width`` may be inf) and
    for any ``a`` where the interval is narrow, ``width (|a| + width/2) <= 1``.
    Forward values only: derivatives come from :class:`LogMasses`.
    """
    finite = ops.isfinite(width)
    zero = ops.full_like(a, 0.0)
    width_finite = ops.where(finite, width, ops.full_like(a, 1.0))
    decay = ops.where(finite, ops.exp(-width_finite * (a + width_finite / 2)), zero)

    m0a, m1a, m2a = _mills_moments(ops, ops.maximum(a, zero))
    m0b, m1b, m2b = _mills_moments(ops, ops.maximum(a + width_finite, zero))
    beyond = (  # integral from width to inf, shifted to start at 0
        m0b,
        m1b + width_finite * m0b,
        m2b + 2 * width_finite * m1b + width_finite * width_finite * m0b,
    )
    tails = [m - ops.where(finite, decay * rest, zero) for m, rest in zip((m0a, m1a, m2a), beyond)]
    narrow = finite & (width_finite * (ops.abs(a) + width_finite / 2) <= _NARROW)

    def with_quadrature() -> tuple[Any, Any, Any]:
        nodes, weights = ops.nodes(a)
        t = width_finite[..., None] * nodes
        f = weights * ops.exp(-a[..., None] * t - t * t / 2)
        quadrature = (
            width_finite * f.sum(-1),
            width_finite * (f * t).sum(-1),
            width_finite * (f * t * t).sum(-1),
        )
        return tuple(ops.where(narrow, q, r) for q, r in zip(quadrature, tails))  # type: ignore[return-value]

    # The quadrature runs only where some interval is narrow (an eager backend skips it otherwise).
    g, h, j = ops.cond_all(~narrow, lambda: tuple(tails), with_quadrature)
    return g, h, j, decay


def central_mass(ops: ArrayOps, a: Any, b: Any) -> Any:
    """``Phi(b) - Phi(a)`` for ``a < 0 < b``: a sum of two positive numbers."""
    return (ops.erf(b * SQRT_HALF) - ops.erf(a * SQRT_HALF)) / 2


def log_normal_density(x: Any) -> Any:
    """``log phi(x)``."""
    return -x * x / 2 - LOG_SQRT_2PI


class _Standardized(NamedTuple):
    lo: Any  # (low - loc)/scale, -inf without a lower bound
    hi: Any  # (high - loc)/scale, inf without an upper bound
    width: Any  # (high - low)/scale, inf unless both bounds
    right: Any  # lo >= 0 or a narrow interval: mass anchored at lo
    left: Any  # hi <= 0: mass anchored at hi
    low_safe: Any
    high_safe: Any


def _standardize(ops: ArrayOps, loc: Any, scale: Any, low: Any, high: Any) -> _Standardized:
    has_low, has_high = ops.isfinite(low), ops.isfinite(high)
    # Double where: an absent bound is replaced by a finite value before any
    # arithmetic, so its gradient is an exact zero rather than 0 * inf.
    low_safe = ops.where(has_low, low, loc - scale)
    high_safe = ops.where(has_high, high, loc + scale)
    lo = ops.where(has_low, (low_safe - loc) / scale, ops.full_like(loc, -math.inf))
    hi = ops.where(has_high, (high_safe - loc) / scale, ops.full_like(loc, math.inf))
    both = has_low & has_high
    width = ops.where(both, (high_safe - low_safe) / scale, ops.full_like(loc, math.inf))
    # Anchored at low: the right tail, and any narrow interval (where the
    # quadrature of G holds for a negative lo too, and the chain rule through
    # Phi(hi) - Phi(lo) would subtract two large derivatives).
    narrow = both & (width * (ops.abs(ops.where(has_low, lo, 0 * lo)) + width / 2) <= _NARROW)
    right = has_low & ((lo >= 0) | narrow)
    left = has_high & (hi <= 0) & ~right
    return _Standardized(lo, hi, width, right, left, low_safe, high_safe)


def _anchor(ops: ArrayOps, use: Any, a: Any, width: Any) -> tuple[Any, Any]:
    """``(a, width)`` where ``use``, else ``(0, inf)``, whose ``G(0, inf) = sqrt(pi/2)`` is cheap.

    The lanes a ``where`` discards then need neither the continued fraction nor
    the quadrature, so that where no lane needs them, :func:`anchored_integrals`
    skips both.
    """
    return ops.where(use, a, ops.full_like(a, 0.0)), ops.where(use, width, ops.full_like(a, math.inf))


def _log_mass(ops: ArrayOps, masses: LogMasses, s: _Standardized, hi: Any, width: Any) -> Any:
    """``log(Phi(hi) - Phi(s.lo))`` for ``hi`` in ``[s.lo, s.hi]`` (``width = hi - s.lo``, exact)."""
    one = ops.full_like(hi, 1.0)
    right = s.right
    left = ~right & (hi <= 0)
    central = ~right & ~left
    # A tail, anchored at lo or (mirrored) at -hi: log phi(a) + log G(a, width), one integral.
    a, width = _anchor(ops, right | left, ops.where(right, s.lo, -hi), width)
    value_tail = log_normal_density(a) + masses.anchored(a, width)
    value_central = masses.central(ops.where(central, s.lo, -one), ops.where(central, hi, one))
    return ops.where(central, value_central, value_tail)


def _is_narrow(ops: ArrayOps, s: _Standardized) -> Any:
    """Bounded intervals with ``width (|nearer bound| + width/2) <= 1``: the density varies by at most e."""
    width = ops.minimum(s.width, ops.full_like(s.lo, 1e30))
    return ops.isfinite(s.width) & (
        width * (ops.minimum(ops.abs(s.lo), ops.abs(s.hi)) + width / 2) <= _NARROW
    )


def _interior_point(ops: ArrayOps, s: _Standardized, loc: Any, scale: Any, low: Any, high: Any) -> Any:
    """A point strictly inside the support, to evaluate masked-out branches at."""
    has_low, has_high = ops.isfinite(low), ops.isfinite(high)
    return ops.where(
        has_low & has_high,
        s.low_safe + (s.high_safe - s.low_safe) / 2,
        ops.where(has_low, s.low_safe + scale, ops.where(has_high, s.high_safe - scale, loc)),
    )


def _inside(ops: ArrayOps, x: Any, low: Any, high: Any) -> Any:
    return ops.isfinite(x) & (x >= low) & (x <= high)


def log_normalizer(ops: ArrayOps, loc: Any, scale: Any, low: Any, high: Any) -> tuple[Any, Any]:
    """``C`` in ``log p(x) = -d (d + 2a)/2 - C``, and its four derivatives in closed form.

    In a tail ``d`` is the distance of ``x`` from the bound nearer the mode and
    ``a >= 0`` that bound's (mirrored) distance from ``loc``, in standard units,
    and ``C = log G(a, width) + log scale``; across the mode ``a = 0``,
    ``d = (x - loc)/scale`` and ``C = log Z + log sqrt(2 pi) + log scale``.
    The derivatives, times scale (in a right tail; a left tail is its mirror
    image) are ``d/dloc = E[T]``, ``d/dscale = E[T (T + 2a)]``,
    ``d/dlow = a - 1/G``, ``d/dhigh = exp(-u)/G`` with ``T`` the distance from
    the anchoring bound: added to the plain derivatives of ``-d (d + 2a)/2``
    they give each gradient of the log density as a data term minus its
    expectation, the chain rule through ``log G(a, width)`` (which cancels
    for narrow intervals) never taken. Parameter-shaped.
    """
    s = _standardize(ops, loc, scale, low, high)
    zero, one = ops.full_like(s.lo, 0.0), ops.full_like(s.lo, 1.0)
    tail = s.right | s.left
    a, width = _anchor(ops, tail, ops.where(s.right, s.lo, -s.hi), s.width)
    g, h, j, decay = anchored_integrals(ops, a, width)
    sign = ops.where(s.left, -one, one)
    near, far = a - 1 / g, decay / g

    central = ~tail
    lo = ops.where(central & ops.isfinite(s.lo), s.lo, -one)
    hi = ops.where(central & ops.isfinite(s.hi), s.hi, one)
    mass = central_mass(ops, ops.where(central, s.lo, -one), ops.where(central, s.hi, one))
    density_lo = ops.where(ops.isfinite(s.lo), ops.exp(log_normal_density(lo)), zero)
    density_hi = ops.where(ops.isfinite(s.hi), ops.exp(log_normal_density(hi)), zero)

    value = ops.where(tail, ops.log(g), ops.log(mass) + LOG_SQRT_2PI) + ops.log(scale)
    gradients = (
        ops.where(tail, sign * h / g, (density_lo - density_hi) / mass) / scale,
        ops.where(tail, (j + 2 * a * h) / g, 1 + (lo * density_lo - hi * density_hi) / mass) / scale,
        ops.where(s.right, near, ops.where(s.left, -far, -density_lo / mass)) / scale,
        ops.where(s.right, far, ops.where(s.left, -near, density_hi / mass)) / scale,
    )
    return value, gradients


def kernel_distance(ops: ArrayOps, x: Any, anchor: Any, signed_scale: Any) -> Any:
    """``d = (x - anchor)/signed_scale``; a non-finite ``x`` counts as the anchor.

    Its log density is masked anyway, and so no derivative is ``0 * inf``.
    """
    return (ops.where(ops.isfinite(x), x, anchor) - anchor) / signed_scale


def log_kernel(ops: ArrayOps, x: Any, anchor: Any, a: Any, signed_scale: Any) -> Any:
    """The unnormalised log density ``-d (d + 2a)/2``, ``d`` the :func:`kernel_distance`.

    Equal to ``log phi(z) - log phi(a)`` with no large terms cancelling. Its
    derivatives are plain; a backend may install them in the form
    ``c0 + c1 d + c2 d^2`` with parameter-shaped coefficients, which needs a
    single pass over the values.
    """
    return kernel_value(kernel_distance(ops, x, anchor, signed_scale), a)


def kernel_value(d: Any, a: Any) -> Any:
    """``-d (d + 2a)/2``: :func:`log_kernel` from the :func:`kernel_distance`."""
    return -d * (d + 2 * a) / 2


def log_prob(ops: ArrayOps, masses: LogMasses, loc: Any, scale: Any, low: Any, high: Any, x: Any) -> Any:
    """Log density; ``-inf`` exactly outside ``[low, high]``, never NaN or ``+inf``.

    :func:`log_kernel` minus :func:`log_normalizer`: per value a subtraction,
    a division and two products; everything else is computed once per parameter.
    """
    s = _standardize(ops, loc, scale, low, high)
    zero, one = ops.full_like(s.lo, 0.0), ops.full_like(s.lo, 1.0)
    anchor = ops.where(s.right, s.low_safe, ops.where(s.left, s.high_safe, loc))
    a = ops.where(s.right, s.lo, ops.where(s.left, -s.hi, zero))
    signed_scale = ops.where(s.left, -one, one) * scale
    value = masses.log_kernel(x, anchor, a, signed_scale) - masses.log_normalizer(loc, scale, low, high)
    return ops.where(_inside(ops, x, low, high), value, ops.full_like(value, -math.inf))


def _log_cdf_ratio(
    ops: ArrayOps, masses: LogMasses, loc: Any, scale: Any, low: Any, high: Any, x: Any
) -> Any:
    """``log P(X <= x)`` as the log of a ratio of masses: exact where ``F(x) <= 1/2``.

    ``-inf`` at and below ``low`` (and for NaN), 0 at and above ``high``. Near
    ``F = 1`` the log is a difference of two nearly equal numbers: :func:`log_cdf`
    takes it from the survival function there.
    """
    s = _standardize(ops, loc, scale, low, high)
    above_low = x > low
    below_high = x < high
    interior = above_low & below_high
    x = ops.where(interior, x, _interior_point(ops, s, loc, scale, low, high))
    z = (x - loc) / scale
    d = ops.where(ops.isfinite(low), (x - s.low_safe) / scale, ops.full_like(z, math.inf))
    one = ops.full_like(z, 1.0)
    central_case = ~s.right & ~s.left
    below_mode = central_case & (z <= 0)
    at_z = s.left | below_mode
    # Two integrals per value, whatever the case: G up to x, and G over the whole interval.
    # Right tail: log G(lo, d) - log G(lo, width); phi(lo) cancels exactly. Left tail:
    # log phi(z) - log phi(hi) = (hi - z)(hi + z)/2, then G anchored at -z and at -hi.
    # Across the mode, below it: log Phi(z) - Phi(lo) = log phi(z) + log G(-z, d).
    up_to_x = masses.anchored(
        ops.where(s.right, s.lo, ops.where(at_z, -z, one)), ops.where(s.right | at_z, d, one)
    )
    whole = masses.anchored(
        ops.where(s.right, s.lo, ops.where(s.left, -s.hi, one)),
        ops.where(s.right | s.left, s.width, one),
    )
    hi = ops.where(s.left, s.hi, -one)
    z_left = ops.where(s.left, z, -one)
    e = ops.where(s.left, (s.high_safe - x) / scale, one)
    left = e * (z_left + hi) / 2 + up_to_x - whole
    total = masses.central(ops.where(central_case, s.lo, -one), ops.where(central_case, s.hi, one))
    above_mode = central_case & ~below_mode
    partial = ops.where(
        below_mode,
        log_normal_density(z) + up_to_x,
        masses.central(ops.where(above_mode, s.lo, -one), ops.where(above_mode, z, one)),
    )
    value = ops.where(s.right, up_to_x - whole, ops.where(s.left, left, partial - total))
    value = ops.where(interior, value, ops.full_like(value, 0.0))
    return ops.where(above_low, value, ops.full_like(value, -math.inf))


def _log_cdf_and_survival(
    ops: ArrayOps, masses: LogMasses, loc: Any, scale: Any, low: Any, high: Any, x: Any
) -> tuple[Any, Any]:
    """``log F(x)`` and ``log S(x) = log P(X > x)``, each exact in log space.

    ``S`` of ``X`` is ``F`` of ``-X ~ TruncatedNormal(-loc, scale, -high, -low)``
    at ``-x`` (negation is exact). Each of ``F`` and ``S`` is taken as a ratio of
    masses where it is at most one half, and as ``log1p(-other)`` above, so a log
    CDF of ``-3.6e-66`` comes out as that, not as 0.
    """
    below = _log_cdf_ratio(ops, masses, loc, scale, low, high, x)
    above = _log_cdf_ratio(ops, masses, -loc, scale, -high, -low, -x)
    half = ops.full_like(below, math.log(0.5))
    from_above, from_below = below > half, above > half
    # Double where: the branch not taken sees log(1/2), so its derivative is finite.
    log_f = ops.where(from_above, ops.log1p(-ops.exp(ops.where(from_above, above, half))), below)
    log_s = ops.where(from_below, ops.log1p(-ops.exp(ops.where(from_below, below, half))), above)
    missing = x != x
    return ops.where(missing, x, log_f), ops.where(missing, x, log_s)


def log_cdf(ops: ArrayOps, masses: LogMasses, loc: Any, scale: Any, low: Any, high: Any, x: Any) -> Any:
    """``log P(X <= x)``, exact in log space: ``-inf`` at and below ``low``, 0 at and above ``high``, NaN for NaN."""
    return _log_cdf_and_survival(ops, masses, loc, scale, low, high, x)[0]


def log_survival(ops: ArrayOps, masses: LogMasses, loc: Any, scale: Any, low: Any, high: Any, x: Any) -> Any:
    """``log P(X > x)``, exact in log space: 0 at and below ``low``, ``-inf`` at and above ``high``, NaN for NaN."""
    return _log_cdf_and_survival(ops, masses, loc, scale, low, high, x)[1]


def _lower_tail(ops: ArrayOps, x: Any) -> Any:
    """``Phi(x)``, to full relative precision however far in the lower tail; ``Phi(-inf) = 0``.

    In the tail it is ``phi(x) M_0(-x)``: ``log_ndtr``'s asymptotic series loses
    digits from 20 standard deviations on in float64.
    """
    start = ops.full_like(x, _CONTINUED_FRACTION_FROM)
    beyond = x < -start
    # Double where: no infinite argument reaches an operation, so derivatives are never 0 * NaN.
    tail = ops.isfinite(x) & beyond
    mills = _mills_moments(ops, ops.where(tail, -x, ops.full_like(x, 0.0)))[0]
    in_tail = ops.exp(log_normal_density(ops.where(tail, x, -start))) * mills
    near = ops.exp(ops.log_ndtr(ops.where(beyond, -start, x)))
    return ops.where(tail, in_tail, ops.where(beyond, ops.full_like(x, 0.0), near))


def _reflected_probability(ops: ArrayOps, below: Any, above: Any, mass: Any, q: Any) -> tuple[Any, Any]:
    """``p`` and ``lower``: the standardised quantile is ``ndtri(p)`` if ``lower``, else ``-ndtri(p)``.

    ``p = Phi(lo) + q Z`` (``below = Phi(lo)``, ``mass = Z`` the exact mass of
    ``[lo, hi]``); where that is above one half the same point is
    ``-ndtri(Phi(-hi) + (1 - q) Z)`` (``above = Phi(-hi)``): a sum of two
    positive numbers that keeps its relative precision however far ``hi`` or
    ``lo`` is in the right tail (numpyro reflects by ``loc`` against ``low``
    instead). The quantile is exact to working precision where ``Z`` is not
    small (the interval is not narrow) and ``p`` is a normal number with room
    to spare.
    """
    p_below = below + q * mass
    p_above = above + (1 - q) * mass
    lower = p_below <= p_above
    return ops.where(lower, p_below, p_above), lower


def _standard_quantile(ops: ArrayOps, p: Any, lower: Any) -> Any:
    """``ndtri(p)``, or ``-ndtri(p)`` where not ``lower`` (:func:`_reflected_probability`)."""
    z = ops.ndtri(ops.maximum(p, ops.full_like(p, ops.tiny(p))))
    return ops.where(lower, z, -z)


class TailPieces(NamedTuple):
    """What a closed-form quantile needs of the parameters: ``Phi(lo)``, ``Phi(-hi)``, the exact mass ``Z``."""

    below: Any
    above: Any
    mass: Any


def tail_pieces(ops: ArrayOps, masses: LogMasses, loc: Any, scale: Any, low: Any, high: Any) -> TailPieces:
    """The parameters' :class:`TailPieces`, in the parameters' shape."""
    return _tail_pieces(ops, masses, _standardize(ops, loc, scale, low, high))[0]


def _tail_pieces(ops: ArrayOps, masses: LogMasses, s: _Standardized) -> tuple[TailPieces, Any]:
    """:func:`tail_pieces` of standardised parameters, and ``log Z``."""
    log_mass = _log_mass(ops, masses, s, s.hi, s.width)
    return TailPieces(_lower_tail(ops, s.lo), _lower_tail(ops, -s.hi), ops.exp(log_mass)), log_mass


def _log_lower_tail(ops: ArrayOps, x: Any) -> Any:
    """``log Phi(x)`` to full relative precision however far in the lower tail (``log_normal_density + log M_0``)."""
    start = ops.full_like(x, _CONTINUED_FRACTION_FROM)
    tail = x < -start
    t = ops.where(tail, -x, ops.full_like(x, 0.0))  # double where: finite arguments only
    in_tail = log_normal_density(-t) + ops.log(_mills_moments(ops, t)[0])
    return ops.where(tail, in_tail, ops.log_ndtr(ops.where(tail, -start, x)))


def _mirror(ops: ArrayOps, reflect: Any, like: Any, low: Any, high: Any) -> tuple[Any, Any, Any]:
    """``-1`` where ``reflect`` (else 1) and the bounds of ``-X`` there: ``sign, low_r, high_r``."""
    sign = ops.where(reflect, -ops.full_like(like, 1.0), ops.full_like(like, 1.0))
    return sign, ops.where(reflect, -high, low), ops.where(reflect, -low, high)


def icdf(ops: ArrayOps, masses: LogMasses, loc: Any, scale: Any, low: Any, high: Any, q: Any) -> Any:
    """The ``x`` with ``P(X <= x) = q``; NaN for ``q`` outside ``[0, 1]``; ``low``, ``high`` at 0, 1."""
    return _quantile(ops, masses, loc, scale, low, high, q, survival=False)


def closed_form_draw(
    ops: ArrayOps, pieces: TailPieces, loc: Any, scale: Any, low: Any, high: Any, u: Any
) -> Any:
    """:func:`icdf` at uniform draws ``u`` in ``(0, 1)``, for parameters where :func:`closed_form_suffices`.

    ``pieces`` are the parameters' :func:`tail_pieces`, computed once (in NumPy,
    :func:`numpy_tail_pieces`, where the parameters are concrete): what is left
    is a small program, as small as numpyro's. Above the median the draw is the
    lower quantile of the reflected distribution, as in :func:`icdf`.
    """
    return _closed_form(ops, pieces, loc, scale, low, high, u)[0]


def _closed_form(
    ops: ArrayOps, pieces: TailPieces, loc: Any, scale: Any, low: Any, high: Any, u: Any
) -> tuple[Any, Any]:
    """:func:`closed_form_draw`, and the probability ``p`` handed to ``ndtri``."""
    upper = u > 0.5
    r = ops.where(upper, 1 - u, u)
    sign, low_r, high_r = _mirror(ops, upper, u, low, high)
    below = ops.where(upper, pieces.above, pieces.below)
    above = ops.where(upper, pieces.below, pieces.above)
    p, lower = _reflected_probability(ops, below, above, pieces.mass, r)
    x = ops.minimum(ops.maximum(sign * loc + scale * _standard_quantile(ops, p, lower), low_r), high_r)
    return sign * ops.where(r <= 0, low_r, x), p


def draw(
    ops: ArrayOps,
    masses: LogMasses,
    loc: Any,
    scale: Any,
    low: Any,
    high: Any,
    u: Any,
    quantile: Callable[..., Any],
) -> Any:
    """:func:`icdf` at uniform draws ``u`` in ``(0, 1)``: the closed form, ``quantile`` where that is not exact.

    The closed form of :func:`closed_form_draw`, with the parameters' pieces
    computed here, is exact where :func:`icdf` takes it (the same test); the
    draws it cannot give (narrow intervals, far tails, ``u`` far below the
    mode) come from ``quantile(loc, scale, low, high, u)``, the quantile by
    another route, called (by ``cond_all``) only where some draw needs it. So
    a backend can keep the Newton iteration out of the program a sample compiles.
    """
    s = _standardize(ops, loc, scale, low, high)
    pieces, log_mass = _tail_pieces(ops, masses, s)
    x, p = _closed_form(ops, pieces, loc, scale, low, high, u)
    exact = _closed_form_is_exact(ops, s, log_mass, p)
    return ops.cond_all(exact, lambda: x, lambda: ops.where(exact, x, quantile(loc, scale, low, high, u)))


def _closed_form_is_exact(ops: ArrayOps, s: _Standardized, log_mass: Any, p: Any) -> Any:
    """Where the closed-form quantile is exact: not narrow, ``Z`` and ``p`` far enough above underflow."""
    smallest = math.log(ops.tiny(s.lo)) - math.log(ops.eps(s.lo))
    log_mass, p = ops.stop_gradient(log_mass), ops.stop_gradient(p)
    return ~_is_narrow(ops, s) & (log_mass >= smallest) & (ops.log(p) >= smallest)


def closed_form_suffices(loc: Any, scale: Any, low: Any, high: Any, tiny: float, eps: float) -> bool:
    """Whether every draw ``icdf(u)``, ``u`` in ``[tiny, 1 - eps/2]``, is in closed form (NumPy values).

    So where no interval is narrow, no bound is more than 5 standard deviations
    beyond the mode (the mass is not small), and the lower bound is finite and
    near enough that ``Phi(lo)`` is a normal number with room to spare: ``p`` of
    :func:`_reflected_probability` is then at least ``min(Phi(lo), Z/2)`` below
    the median and ``eps/2 Z`` above it.
    """
    loc, scale = np.asarray(loc, float), np.asarray(scale, float)
    lo = (np.asarray(low, float) - loc) / scale
    hi = (np.asarray(high, float) - loc) / scale
    with np.errstate(invalid="ignore", over="ignore"):
        width = hi - lo
        narrow = width * (np.minimum(np.abs(lo), np.abs(hi)) + width / 2) <= _NARROW
    near_enough = 2 - math.sqrt(-2 * math.log(tiny / eps))  # Phi(lo) >= tiny/eps, with room
    bounds = (lo <= _EXPONENTIAL_GUESS_FROM) & (hi >= -_EXPONENTIAL_GUESS_FROM) & (lo >= near_enough)
    return bool(np.all(~narrow & bounds))


def inverse_survival(
    ops: ArrayOps, masses: LogMasses, loc: Any, scale: Any, low: Any, high: Any, q: Any
) -> Any:
    """The ``x`` with ``P(X > x) = q``: exact for ``q`` near 0, where ``icdf(1 - q)`` is not."""
    return _quantile(ops, masses, loc, scale, low, high, q, survival=True)


def _quantile(
    ops: ArrayOps,
    masses: LogMasses,
    loc: Any,
    scale: Any,
    low: Any,
    high: Any,
    p: Any,
    survival: bool,
) -> Any:
    """A quantile from the smaller of the two probabilities, ``r = min(p, 1 - p)``.

    ``1 - p`` is exact for ``p >= 1/2``, and the upper quantile of ``X`` is the
    lower one of ``-X ~ TruncatedNormal(-loc, scale, -high, -low)``, negated:
    every quantile becomes a lower quantile at ``r <= 1/2``, where the log CDF
    keeps its relative precision.
    """
    upper_half = p > 0.5
    reflect = upper_half if not survival else ~upper_half
    valid = (p >= 0) & (p <= 1)
    r = ops.where(valid, ops.where(upper_half, 1 - p, p), ops.full_like(p, 0.25))
    sign, low_r, high_r = _mirror(ops, reflect, p, low, high)
    x = sign * _lower_quantile(ops, masses, sign * loc, scale, low_r, high_r, r)
    return ops.where(valid, x, ops.full_like(x, math.nan))


def _lower_quantile(
    ops: ArrayOps, masses: LogMasses, loc: Any, scale: Any, low: Any, high: Any, q: Any
) -> Any:
    """The quantile at ``q <= 1/2``: in closed form where that is exact to working precision, else by Newton.

    Where an interval is not narrow and its mass ``Z`` stays a normal number
    when multiplied by the dtype's epsilon (up to about 11 standard deviations
    into a tail in float32, 36 in float64) and the probability handed to
    ``ndtri`` is not that small either, the quantile of
    :func:`_reflected_probability`, whose derivatives are the pathwise ones; it is
    also how both backends sample. Elsewhere (narrow intervals, far tails,
    quantiles far below the mode), :func:`_newton_quantile`.
    """
    s = _standardize(ops, loc, scale, low, high)
    log_mass = _log_mass(ops, masses, s, s.hi, s.width)
    below, above = _lower_tail(ops, s.lo), _lower_tail(ops, -s.hi)
    p, lower = _reflected_probability(ops, below, above, ops.exp(log_mass), q)
    z = _standard_quantile(ops, p, lower)
    x_closed = ops.minimum(ops.maximum(loc + scale * z, low), high)
    closed = _closed_form_is_exact(ops, s, log_mass, p)

    def mixed() -> Any:
        z_start = ops.stop_gradient(z)
        newton = _newton_quantile(ops, masses, loc, scale, low, high, q, z_start, ops.stop_gradient(log_mass))
        return ops.where(closed, x_closed, newton)

    return ops.where(q <= 0, low, ops.cond_all(closed, lambda: x_closed, mixed))


def _newton_quantile(
    ops: ArrayOps,
    masses: LogMasses,
    loc: Any,
    scale: Any,
    low: Any,
    high: Any,
    q: Any,
    z_start: Any,
    log_mass: Any,
) -> Any:
    """The quantile at ``q <= 1/2`` of a narrow interval or a far tail, by a safeguarded Newton iteration.

    The unknown is the distance ``d`` (in standard units) from the bound that
    anchors the mass: ``low`` in a right tail or narrow interval, where
    ``log F(d) = log G(a, d) - log G(a, w)``; ``high`` in a left tail, mirrored,
    where ``log S(d) = -d (a + d/2) + log G(a + d, w - d) - log G(a, w)``. ``d``
    keeps its relative precision however far the bound is from ``loc`` (in
    float32 at 1e4 standard deviations ``x`` cannot resolve the spread of the
    distribution, ``d`` can), and ``x = bound +- scale d`` is rounded once, so
    a quantile is the exact one rounded. The iteration runs a fixed number of
    steps on constants, from the closed form's standardised quantile ``z_start``
    near the mode (``log_mass`` is ``log Z``); one last differentiable Newton step gives the
    implicit-function derivatives (``dx/dq = 1/p(x)``,
    ``dx/dtheta = -(dF/dtheta)/p(x)``) that reparametrised sampling needs.
    """
    loc_c, scale_c, low_c, high_c, q_c = (ops.stop_gradient(v) for v in (loc, scale, low, high, q))
    s = _standardize(ops, loc_c, scale_c, low_c, high_c)
    one = ops.full_like(s.lo, 1.0)
    from_high = s.left
    anchored = s.right | s.left
    a = ops.where(s.right, s.lo, ops.where(s.left, -s.hi, one))
    width = ops.where(anchored, s.width, one)
    finite_width = ops.minimum(width, ops.full_like(width, 1e30))
    log_total = masses.anchored(a, width)
    log_q = ops.log(q_c)

    # Starting guesses: far in a tail, or in a narrow interval, the density is close
    # to exp(-a t) from the anchoring bound (uniform where a * width is negligible);
    # nearer the mode, the closed-form quantile.
    def exponential(rate: Any) -> Any:
        """The distance at which F (from low) or S (from high) of exp(-rate t) on [0, width] is q."""
        flat = ops.abs(rate * finite_width) < 1e-6
        rate = ops.where(flat, one, rate)
        decay = ops.expm1(-rate * finite_width)
        from_low = -ops.log1p(q_c * decay) / rate
        from_above = -ops.log(ops.exp(-rate * finite_width) - q_c * decay) / rate
        uniform = ops.where(from_high, 1 - q_c, q_c) * finite_width
        return ops.where(flat, uniform, ops.where(from_high, from_above, from_low))

    far = (a >= _EXPONENTIAL_GUESS_FROM) | _is_narrow(ops, s)
    d_mode = ops.where(
        from_high, ops.where(s.left, s.hi, one) - z_start, z_start - ops.where(s.right, s.lo, one)
    )
    d = ops.where(far, exponential(a), d_mode)
    d = ops.minimum(ops.maximum(d, 0 * d), finite_width)

    def anchored_step(_: Any, d: Any) -> Any:
        u = d * (a + d / 2)
        # One integral per step: G(a, d) below the root (from low), G(a + d, w - d) above it (from high).
        log_g = masses.anchored(ops.where(from_high, a + d, a), ops.where(from_high, width - d, d))
        from_low_step = d - (log_g - log_total - log_q) * ops.exp(log_g + u)
        from_high_step = d + (log_g - u - log_total - log_q) * ops.exp(log_g)
        step = ops.where(from_high, from_high_step, from_low_step)
        # Safeguards: halve the way to a bound rather than cross it.
        step = ops.where(step <= 0, d / 2, step)
        step = ops.where(step >= finite_width, (d + finite_width) / 2, step)
        return ops.where(ops.isfinite(step), step, d)

    d = ops.fori_loop(0, _NEWTON_STEPS, anchored_step, d)
    x = ops.where(from_high, s.high_safe - scale_c * d, s.low_safe + scale_c * d)

    # Across the mode, with no bound (or a far one) below: Phi(z) = Phi(lo) + q Z, in logs.
    central = ~anchored
    lo = ops.where(central & ops.isfinite(s.lo), s.lo, -one)
    log_below = ops.where(
        central & ops.isfinite(s.lo), _log_lower_tail(ops, lo), ops.full_like(lo, -math.inf)
    )
    log_p = log_q + log_mass
    larger = ops.maximum(log_below, log_p)
    log_target = larger + ops.log1p(ops.exp(ops.minimum(log_below, log_p) - larger))
    far_below = log_target < -_EXPONENTIAL_GUESS_FROM
    t = -2 * ops.minimum(
        log_target, ops.full_like(lo, -_EXPONENTIAL_GUESS_FROM)
    )  # log Phi(z) ~ -z^2/2 - log(-z sqrt(2 pi))
    z = ops.where(far_below, -ops.sqrt(t - ops.log(t) - 2 * LOG_SQRT_2PI), z_start)

    def central_step(_: Any, z: Any) -> Any:
        log_phi = _log_lower_tail(ops, z)
        step = z - (log_phi - log_target) * ops.exp(log_phi - log_normal_density(z))
        return ops.where(ops.isfinite(step), step, z)

    z = ops.fori_loop(0, _NEWTON_STEPS, central_step, z)
    x = ops.where(central, loc_c + scale_c * z, x)
    x = ops.minimum(ops.maximum(x, low_c), high_c)
    return _implicit_newton_step(ops, masses, loc, scale, low, high, q, ops.stop_gradient(x))


def quantile_with_derivatives(
    ops: ArrayOps, masses: LogMasses, loc: Any, scale: Any, low: Any, high: Any, q: Any, x: Any
) -> Any:
    """``x``, the quantile at ``q`` computed elsewhere (a constant), with the quantile's derivatives.

    One Newton step at the root, which moves nothing, taken as :func:`icdf`
    takes it (for ``q > 1/2`` on ``-X``): its derivatives are the implicit-function
    ones, ``dx/dq = 1/p(x)`` and ``dx/dtheta = -(dF/dtheta)/p(x)``.
    """
    upper = q > 0.5
    sign, low_r, high_r = _mirror(ops, upper, q, low, high)
    r = ops.where(upper, 1 - q, q)
    return sign * _implicit_newton_step(ops, masses, sign * loc, scale, low_r, high_r, r, sign * x)


def _implicit_newton_step(
    ops: ArrayOps, masses: LogMasses, loc: Any, scale: Any, low: Any, high: Any, q: Any, x: Any
) -> Any:
    """``x - (F(x) - q)/p(x)`` with ``x`` a constant root: its value, the root's derivatives."""
    log_p = ops.stop_gradient(log_prob(ops, masses, loc, scale, low, high, x))
    interior = ops.isfinite(log_p) & (x > low) & (x < high)
    residual = ops.exp(_log_cdf_ratio(ops, masses, loc, scale, low, high, x)) - q
    correction = ops.where(interior, residual * ops.exp(-ops.where(interior, log_p, 0 * log_p)), 0 * residual)
    return x - (correction - ops.stop_gradient(correction))


def _moments(ops: ArrayOps, loc: Any, scale: Any, low: Any, high: Any) -> tuple[Any, Any, Any]:
    """Mean, variance and entropy of ``X``, measured from the bound nearer the mode where there is one."""
    s = _standardize(ops, loc, scale, low, high)
    zero, one = ops.full_like(s.lo, 0.0), ops.full_like(s.lo, 1.0)
    narrow = _is_narrow(ops, s)
    # Anchored at the bound nearer the mode: the tails, and narrow intervals across the mode.
    at_low = s.right | (narrow & ~s.left & (ops.abs(s.lo) <= ops.abs(s.hi)))
    at_high = (s.left | narrow) & ~at_low
    anchored = at_low | at_high
    start = ops.where(at_low, s.lo, ops.where(at_high, -s.hi, one))
    g, h, j, _ = anchored_integrals(ops, start, ops.where(anchored, s.width, one))
    mean_t, second_t = h / g, j / g  # T = distance from the anchoring bound, in standard units
    anchored_mean = ops.where(at_low, s.low_safe + scale * mean_t, s.high_safe - scale * mean_t)
    anchored_variance = second_t - mean_t * mean_t
    # -log p(y) = (y - start)(y + start)/2 + log G: no large terms cancel.
    anchored_entropy = ops.log(g) + second_t / 2 + start * mean_t

    lo = ops.where(anchored, -one, s.lo)
    hi = ops.where(anchored, one, s.hi)
    total = central_mass(ops, lo, hi)
    density_lo, density_hi = ops.exp(log_normal_density(lo)), ops.exp(log_normal_density(hi))
    lo_term = ops.where(ops.isfinite(lo), ops.where(ops.isfinite(lo), lo, zero) * density_lo, zero)
    hi_term = ops.where(ops.isfinite(hi), ops.where(ops.isfinite(hi), hi, zero) * density_hi, zero)
    central_mean = (density_lo - density_hi) / total
    central_variance = 1 + (lo_term - hi_term) / total - central_mean * central_mean
    central_entropy = 0.5 + LOG_SQRT_2PI + ops.log(total) + (lo_term - hi_term) / (2 * total)
    return (
        ops.where(anchored, anchored_mean, loc + scale * central_mean),
        scale * scale * ops.where(anchored, anchored_variance, central_variance),
        ops.log(scale) + ops.where(anchored, anchored_entropy, central_entropy),
    )


def mean(ops: ArrayOps, loc: Any, scale: Any, low: Any, high: Any) -> Any:
    """``E[X]``."""
    return _moments(ops, loc, scale, low, high)[0]


def variance(ops: ArrayOps, loc: Any, scale: Any, low: Any, high: Any) -> Any:
    """``Var[X]``."""
    return _moments(ops, loc, scale, low, high)[1]


def entropy(ops: ArrayOps, loc: Any, scale: Any, low: Any, high: Any) -> Any:
    """Differential entropy ``E[-log p(X)]``."""
    return _moments(ops, loc, scale, low, high)[2]


class _NumpyOps:
    """:class:`ArrayOps` for NumPy and SciPy: the algorithm on concrete values, nothing compiled."""

    where = staticmethod(np.where)
    exp = staticmethod(np.exp)
    expm1 = staticmethod(np.expm1)
    log = staticmethod(np.log)
    log1p = staticmethod(np.log1p)
    sqrt = staticmethod(np.sqrt)
    abs = staticmethod(np.abs)
    erf = staticmethod(special.erf)
    log_ndtr = staticmethod(special.log_ndtr)
    ndtri = staticmethod(special.ndtri)
    isfinite = staticmethod(np.isfinite)
    minimum = staticmethod(np.minimum)
    maximum = staticmethod(np.maximum)
    full_like = staticmethod(np.full_like)
    stop_gradient = staticmethod(np.asarray)  # nothing to stop: no derivatives are taken

    @staticmethod
    def nodes(like: Any) -> tuple[Any, Any]:
        return QUADRATURE_NODES, QUADRATURE_WEIGHTS

    @staticmethod
    def tiny(like: Any) -> float:
        return float(np.finfo(np.result_type(like)).tiny)

    @staticmethod
    def eps(like: Any) -> float:
        return float(np.finfo(np.result_type(like)).eps)

    @staticmethod
    def cond_all(pred: Any, if_all: Callable[[], Any], otherwise: Callable[[], Any]) -> Any:
        return if_all() if np.all(pred) else otherwise()

    @staticmethod
    def fori_loop(lower: int, upper: int, body: Callable[[Any, Any], Any], init: Any) -> Any:
        value = init
        for i in range(lower, upper):
            value = body(i, value)
        return value


NUMPY_OPS = _NumpyOps()
NUMPY_MASSES = LogMasses(
    anchored=lambda a, width: np.log(anchored_integrals(NUMPY_OPS, a, width)[0]),
    central=lambda a, b: np.log(central_mass(NUMPY_OPS, a, b)),
    log_normalizer=lambda *parameters: log_normalizer(NUMPY_OPS, *parameters)[0],
    log_kernel=lambda *arguments: log_kernel(NUMPY_OPS, *arguments),
)


def numpy_tail_pieces(loc: Any, scale: Any, low: Any, high: Any) -> TailPieces:
    """:func:`tail_pieces` of concrete parameters, in float64 NumPy, broadcast to one shape.

    Examples
    --------
    >>> pieces = numpy_tail_pieces(0.0, 1.0, 0.0, np.inf)  # TruncatedNormal(0, 1, low=0)
    >>> float(pieces.below), float(pieces.above), round(float(pieces.mass), 12)
    (0.5, 0.0, 0.5)
    """
    parameters = np.broadcast_arrays(*(np.asarray(value, np.float64) for value in (loc, scale, low, high)))
    with np.errstate(all="ignore"):  # the branches a where discards may overflow
        return tail_pieces(NUMPY_OPS, NUMPY_MASSES, *parameters)
