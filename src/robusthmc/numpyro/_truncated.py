"""``TruncatedNormal`` and ``truncated`` for NumPyro: None bounds, exact tails."""

from __future__ import annotations

from typing import Any, ClassVar

import jax
import jax.numpy as jnp
import numpy as np
import numpyro.distributions as dist
from jax import lax
from jax.custom_derivatives import SymbolicZero
from jax.scipy import special
from numpyro.distributions import constraints
from numpyro.distributions.transforms import Transform, biject_to
from numpyro.distributions.util import promote_shapes, validate_sample

from robusthmc import _truncnorm
from robusthmc._arguments import check_numeric, check_scale, normalize_bound

__all__ = ["TruncatedNormal", "truncated"]


class _JaxOps:
    """:class:`robusthmc._truncnorm.ArrayOps` for ``jax.numpy``."""

    where = staticmethod(jnp.where)
    exp = staticmethod(jnp.exp)
    expm1 = staticmethod(jnp.expm1)
    log = staticmethod(jnp.log)
    log1p = staticmethod(jnp.log1p)
    sqrt = staticmethod(jnp.sqrt)
    abs = staticmethod(jnp.abs)
    erf = staticmethod(special.erf)
    log_ndtr = staticmethod(special.log_ndtr)
    ndtri = staticmethod(special.ndtri)
    isfinite = staticmethod(jnp.isfinite)
    minimum = staticmethod(jnp.minimum)
    maximum = staticmethod(jnp.maximum)
    full_like = staticmethod(jnp.full_like)
    stop_gradient = staticmethod(lax.stop_gradient)

    @staticmethod
    def nodes(like: Any) -> tuple[Any, Any]:
        dtype = jnp.result_type(like)
        return jnp.asarray(_truncnorm.QUADRATURE_NODES, dtype), jnp.asarray(
            _truncnorm.QUADRATURE_WEIGHTS, dtype
        )

    @staticmethod
    def tiny(like: Any) -> float:
        return float(jnp.finfo(jnp.result_type(like)).tiny)

    @staticmethod
    def eps(like: Any) -> float:
        return float(jnp.finfo(jnp.result_type(like)).eps)

    @staticmethod
    def cond_all(pred: Any, if_all: Any, otherwise: Any) -> Any:
        return lax.cond(jnp.all(pred), if_all, otherwise)

    fori_loop = staticmethod(lax.fori_loop)


_OPS = _JaxOps()


@jax.custom_jvp
def _log_anchored(a: Any, width: Any) -> Any:
    return jnp.log(_truncnorm.anchored_integrals(_OPS, a, width)[0])


@_log_anchored.defjvp
def _log_anchored_jvp(primals: Any, tangents: Any) -> Any:
    (a, width), (a_dot, width_dot) = primals, tangents
    g, h, _, decay = _truncnorm.anchored_integrals(_OPS, a, width)
    return jnp.log(g), (decay * width_dot - h * a_dot) / g


@jax.custom_jvp
def _log_central(a: Any, b: Any) -> Any:
    return jnp.log(_truncnorm.central_mass(_OPS, a, b))


@_log_central.defjvp
def _log_central_jvp(primals: Any, tangents: Any) -> Any:
    (a, b), (a_dot, b_dot) = primals, tangents
    mass = _truncnorm.central_mass(_OPS, a, b)
    density_a = jnp.exp(_truncnorm.log_normal_density(a))
    density_b = jnp.exp(_truncnorm.log_normal_density(b))
    return jnp.log(mass), (density_b * b_dot - density_a * a_dot) / mass


@jax.custom_jvp
def _log_normalizer(loc: Any, scale: Any, low: Any, high: Any) -> Any:
    return _truncnorm.log_normalizer(_OPS, loc, scale, low, high)[0]


def _log_normalizer_jvp(primals: Any, tangents: Any) -> Any:
    # Symbolic zeros: the derivatives with respect to constants (fixed bounds) are never formed.
    value, gradients = _truncnorm.log_normalizer(_OPS, *primals)
    terms = [g * t for g, t in zip(gradients, tangents) if not isinstance(t, SymbolicZero)]
    return value, sum(terms, start=jnp.zeros_like(value))


_log_normalizer.defjvp(_log_normalizer_jvp, symbolic_zeros=True)


@jax.custom_jvp
def _log_kernel(x: Any, anchor: Any, a: Any, signed_scale: Any) -> Any:
    return _truncnorm.log_kernel(_OPS, x, anchor, a, signed_scale)


def _log_kernel_jvp(primals: Any, tangents: Any) -> Any:
    # c0 + c1 d + c2 d^2 with parameter-shaped coefficients: the gradient with
    # respect to the parameters is one pass over the values (the sums of 1, d, d^2).
    x, anchor, a, signed_scale = primals
    x_dot, anchor_dot, a_dot, scale_dot = (None if isinstance(t, SymbolicZero) else t for t in tangents)
    d = _truncnorm.kernel_distance(_OPS, x, anchor, signed_scale)
    c0, c1, c2 = 0.0, 0.0, None
    if anchor_dot is not None:
        c0, c1 = a * anchor_dot / signed_scale, anchor_dot / signed_scale
    if a_dot is not None:
        c1 = c1 - a_dot
    if scale_dot is not None:
        c1, c2 = c1 + a * scale_dot / signed_scale, scale_dot / signed_scale
    tangent = c0 + d * (c1 if c2 is None else c1 + c2 * d)
    if x_dot is not None:
        tangent = tangent - (d + a) / signed_scale * x_dot
    value = _truncnorm.kernel_value(d, a)
    return value, jnp.broadcast_to(tangent, value.shape).astype(value.dtype)


_log_kernel.defjvp(_log_kernel_jvp, symbolic_zeros=True)


_MASSES = _truncnorm.LogMasses(_log_anchored, _log_central, _log_normalizer, _log_kernel)
# Jitted, so that an eager call compiles each function (and the quantile's lax.cond) once per shape.
_icdf = jax.jit(lambda *arguments: _truncnorm.icdf(_OPS, _MASSES, *arguments))
_closed_form_draw = jax.jit(
    lambda loc, scale, low, high, u, *pieces: _truncnorm.closed_form_draw(
        _OPS, _truncnorm.TailPieces(*pieces), loc, scale, low, high, u
    )
)


def _numpy_icdf(loc: Any, scale: Any, low: Any, high: Any, q: Any) -> Any:
    """:func:`robusthmc._truncnorm.icdf` in float64 NumPy, returned in ``q``'s dtype."""
    arguments = (np.asarray(v, np.float64) for v in (loc, scale, low, high, q))
    with np.errstate(all="ignore"):  # the branches a where discards may overflow
        x = _truncnorm.icdf(_truncnorm.NUMPY_OPS, _truncnorm.NUMPY_MASSES, *arguments)
    return np.asarray(x, np.asarray(q).dtype)


@jax.custom_jvp
def _icdf_by_callback(loc: Any, scale: Any, low: Any, high: Any, q: Any) -> Any:
    """The quantile computed on the host: its Newton iteration is not compiled into the caller's program."""
    # One shape for all, so that under vmap each gains the same leading axis.
    arguments = jnp.broadcast_arrays(loc, scale, low, high, q)
    result = jax.ShapeDtypeStruct(arguments[0].shape, jnp.result_type(q))
    return jax.pure_callback(_numpy_icdf, result, *arguments, vmap_method="broadcast_all")


@_icdf_by_callback.defjvp
def _icdf_by_callback_jvp(primals: Any, tangents: Any) -> Any:
    x = _icdf_by_callback(*primals)

    def with_derivatives(loc: Any, scale: Any, low: Any, high: Any, q: Any) -> Any:
        return _truncnorm.quantile_with_derivatives(_OPS, _MASSES, loc, scale, low, high, q, x)

    return jax.jvp(with_derivatives, primals, tangents)


# The closed form, and the quantile computed off the program where that is not exact.
_draw = jax.jit(
    lambda loc, scale, low, high, u: _truncnorm.draw(
        _OPS, _MASSES, loc, scale, low, high, u, _icdf_by_callback
    )
)
_inverse_survival = jax.jit(lambda *arguments: _truncnorm.inverse_survival(_OPS, _MASSES, *arguments))
_log_cdf = jax.jit(lambda *arguments: _truncnorm.log_cdf(_OPS, _MASSES, *arguments))
_log_survival = jax.jit(lambda *arguments: _truncnorm.log_survival(_OPS, _MASSES, *arguments))


class _PartlyBounded(constraints.Constraint):
    """``low <= x <= high`` elementwise, where entries of either bound may be infinite (no bound)."""

    event_dim = 0

    def __init__(self, lower_bound: Any, upper_bound: Any) -> None:
        self.lower_bound, self.upper_bound = lower_bound, upper_bound

    def __call__(self, x: Any) -> Any:
        return (x >= self.lower_bound) & (x <= self.upper_bound)

    def feasible_like(self, prototype: Any) -> Any:
        low, high = self.lower_bound, self.upper_bound
        point = jnp.where(
            jnp.isfinite(low) & jnp.isfinite(high),
            (low + high) / 2,
            jnp.where(jnp.isfinite(low), low + 1, jnp.where(jnp.isfinite(high), high - 1, 0.0)),
        )
        return jnp.broadcast_to(point, jnp.shape(prototype))

    def tree_flatten(self) -> Any:
        return (self.lower_bound, self.upper_bound), (("lower_bound", "upper_bound"), {})

    def __repr__(self) -> str:
        return f"PartlyBounded(lower_bound={self.lower_bound}, upper_bound={self.upper_bound})"


class _PartlyBoundedTransform(Transform):
    """Per entry: sigmoid onto ``(low, high)``, ``low + exp``, ``high - exp`` or identity."""

    domain = constraints.real

    def __init__(self, lower_bound: Any, upper_bound: Any) -> None:
        self.lower_bound, self.upper_bound = lower_bound, upper_bound

    @property
    def codomain(self) -> constraints.Constraint:
        return _PartlyBounded(self.lower_bound, self.upper_bound)

    def _parts(self) -> tuple[Any, Any, Any, Any]:
        has_low, has_high = jnp.isfinite(self.lower_bound), jnp.isfinite(self.upper_bound)
        # Finite stand-ins for absent bounds, with high - low > 0 everywhere.
        high = jnp.where(has_high, self.upper_bound, jnp.where(has_low, self.lower_bound + 1.0, 1.0))
        low = jnp.where(has_low, self.lower_bound, high - 1.0)
        return has_low, has_high, low, high

    def __call__(self, x: Any) -> Any:
        has_low, has_high, low, high = self._parts()
        return jnp.where(
            has_low & has_high,
            low + (high - low) * jax.nn.sigmoid(x),
            jnp.where(has_low, low + jnp.exp(x), jnp.where(has_high, high - jnp.exp(x), x)),
        )

    def _inverse(self, y: Any) -> Any:
        has_low, has_high, low, high = self._parts()
        both, only_low, only_high = has_low & has_high, has_low & ~has_high, has_high & ~has_low
        unit = jnp.where(both, (y - low) / (high - low), 0.5)
        above = jnp.where(only_low, y - low, 1.0)
        below = jnp.where(only_high, high - y, 1.0)
        return jnp.where(
            both,
            jnp.log(unit) - jnp.log1p(-unit),
            jnp.where(only_low, jnp.log(above), jnp.where(only_high, jnp.log(below), y)),
        )

    def log_abs_det_jacobian(self, x: Any, y: Any, intermediates: Any = None) -> Any:
        has_low, has_high, low, high = self._parts()
        sigmoid = jnp.log(high - low) - jax.nn.softplus(x) - jax.nn.softplus(-x)
        return jnp.where(has_low & has_high, sigmoid, jnp.where(has_low | has_high, x, 0.0))

    def tree_flatten(self) -> Any:
        return (self.lower_bound, self.upper_bound), (("lower_bound", "upper_bound"), {})


@biject_to.register(_PartlyBounded)
def _transform_to_partly_bounded(constraint: _PartlyBounded) -> Transform:
    return _PartlyBoundedTransform(constraint.lower_bound, constraint.upper_bound)


def _is_concrete(value: Any) -> bool:
    return not isinstance(value, jax.core.Tracer)


_ARGUMENTS = ("loc", "scale", "low", "high")


def _argument(value: Any, name: str) -> Any:
    """A concrete argument as a float array (lists and integers too), checked; tracers as they are."""
    if value is None and name in ("low", "high"):
        return None
    if not _is_concrete(value):
        return value
    check_numeric(value, name)
    array = np.asarray(value)
    if array.dtype.kind != "f" or isinstance(value, (list, tuple)):
        value = array.astype(jnp.result_type(float))  # NumPy, not jnp: this may run under a trace
    if name in ("low", "high"):
        return normalize_bound(value, np.asarray(value), name)
    return value


class TruncatedNormal(dist.Distribution):
    """Normal(loc, scale) restricted to ``[low, high]``; ``None`` means no bound.

    Exact in the tails in float32 and float64 (see :mod:`robusthmc._truncnorm`),
    with gradients that are never NaN. An infinite bound means exactly what
    ``None`` means and warns once, at construction, that ``None`` is the way to
    write it.

    Parameters
    ----------
    loc, scale : array_like
        Location and scale of the normal before truncation.
    low, high : array_like or None
        Bounds; ``None`` for none. Array bounds broadcast with ``loc`` and ``scale``.
    validate_args : bool, optional
        As for every numpyro distribution.

    Examples
    --------
    >>> import jax.numpy as jnp
    >>> from robusthmc.numpyro import TruncatedNormal
    >>> d = TruncatedNormal(0.0, 1.0, low=13.0)
    >>> round(float(d.log_prob(13.1)), 5)  # numpyro's own gives inf in float32
    1.26578
    >>> d.support
    GreaterThanEq(lower_bound=13.0)
    """

    arg_constraints: ClassVar[dict[str, Any]] = {"loc": constraints.real, "scale": constraints.positive}
    reparametrized_params: ClassVar[list[str]] = ["loc", "scale", "low", "high"]
    pytree_data_fields = ("loc", "scale", "low", "high", "_support")
    #: Read by the kernels' diagnosis: this distribution's tails are exact.
    robusthmc_exact_tails = True

    def __init__(
        self,
        loc: Any = 0.0,
        scale: Any = 1.0,
        low: Any = None,
        high: Any = None,
        validate_args: bool | None = None,
    ) -> None:
        loc, scale, low, high = (_argument(v, n) for v, n in zip((loc, scale, low, high), _ARGUMENTS))
        shapes = [jnp.shape(v) for v in (loc, scale, low, high) if v is not None]
        batch_shape = lax.broadcast_shapes(*shapes)
        self.loc, self.scale = promote_shapes(loc, scale, shape=batch_shape)
        self.low = None if low is None else promote_shapes(low, shape=batch_shape)[0]
        self.high = None if high is None else promote_shapes(high, shape=batch_shape)[0]
        if validate_args is not False and self.low is not None and self.high is not None:
            if (
                _is_concrete(self.low)
                and _is_concrete(self.high)
                and np.any(np.asarray(self.low >= self.high))
            ):
                raise ValueError(
                    f"TruncatedNormal got low={low!r} >= high={high!r}: the support is empty; "
                    f"pass low < high (or None for no bound)"
                )
        self._support = self._make_support(batch_shape)
        try:
            super().__init__(batch_shape, validate_args=validate_args)
        except ValueError:
            # numpyro's validation says "got invalid scale parameter": say which value.
            if _is_concrete(scale) and scale is not None:
                check_scale(scale, np.asarray(scale))
            raise

    def _make_support(self, batch_shape: tuple[int, ...]) -> constraints.Constraint:
        low, high = self.low, self.high
        mixed = any(v is not None and _is_concrete(v) and not np.all(np.isfinite(v)) for v in (low, high))
        if mixed:
            return _PartlyBounded(*self._bounds(batch_shape))
        if low is None and high is None:
            return constraints.real
        # Closed, like [low, high]: a draw can round onto a bound far in a tail.
        if high is None:
            return constraints.greater_than_eq(low)
        if low is None:
            return constraints.less_than_eq(high)
        return constraints.interval(low, high)

    @constraints.dependent_property(is_discrete=False, event_dim=0)
    def support(self) -> constraints.Constraint:
        return self._support

    def _bounds(self, batch_shape: tuple[int, ...] | None = None) -> tuple[Any, Any]:
        """Bounds as arrays of the batch shape, ``-inf``/``inf`` for none."""
        shape = self.batch_shape if batch_shape is None else batch_shape
        like = jnp.broadcast_to(jnp.asarray(self.loc) * 1.0, shape)
        low = jnp.full_like(like, -jnp.inf) if self.low is None else jnp.broadcast_to(self.low, like.shape)
        high = jnp.full_like(like, jnp.inf) if self.high is None else jnp.broadcast_to(self.high, like.shape)
        return low.astype(like.dtype), high.astype(like.dtype)

    def _arguments(self, *values: Any) -> list[Any]:
        """The parameters broadcast to the batch shape, then ``values`` as given (not broadcast)."""
        low, high = self._bounds()
        return [*jnp.broadcast_arrays(self.loc, self.scale, low, high), *map(jnp.asarray, values)]

    def sample(self, key: Any, sample_shape: tuple[int, ...] = ()) -> Any:
        shape = sample_shape + self.batch_shape
        dtype = jnp.result_type(float)
        u = jax.random.uniform(key, shape, dtype=dtype, minval=jnp.finfo(dtype).tiny)
        loc, scale, low, high = (self.loc, self.scale, *self._bounds_if_concrete())
        if all(map(_is_concrete, (loc, scale, low, high))):
            finfo = np.finfo(dtype)
            if _truncnorm.closed_form_suffices(loc, scale, low, high, float(finfo.tiny), float(finfo.eps)):
                # The parameters' part in NumPy: what is compiled is as small as numpyro's.
                pieces = _truncnorm.numpy_tail_pieces(loc, scale, low, high)
                return _closed_form_draw(*self._arguments(u), *(jnp.asarray(p, dtype) for p in pieces))
        return _draw(*self._arguments(u))

    def _bounds_if_concrete(self) -> tuple[Any, Any]:
        """The bounds, ``-inf``/``inf`` for none, as they are (NumPy where concrete)."""
        low = -np.inf if self.low is None else self.low
        high = np.inf if self.high is None else self.high
        return low, high

    @validate_sample
    def log_prob(self, value: Any) -> Any:
        return _truncnorm.log_prob(_OPS, _MASSES, *self._arguments(value))

    def cdf(self, value: Any) -> Any:
        return jnp.exp(self.log_cdf(value))

    def log_cdf(self, value: Any) -> Any:
        """``log P(X <= value)``, exact in log space (near 0 too, where ``log(cdf)`` is not)."""
        return _log_cdf(*self._arguments(value))

    def survival_function(self, value: Any) -> Any:
        """``P(X > value)``, exact where it is small (where ``1 - cdf`` is not)."""
        return jnp.exp(self.log_survival_function(value))

    def log_survival_function(self, value: Any) -> Any:
        """``log P(X > value)``, exact in log space: the likelihood of a right-censored value."""
        return _log_survival(*self._arguments(value))

    def icdf(self, q: Any) -> Any:
        """The quantile; NaN for ``q`` outside ``[0, 1]``."""
        return _icdf(*self._arguments(q))

    def isf(self, q: Any) -> Any:
        """The inverse survival function, ``x`` with ``P(X > x) = q``: exact for ``q`` near 0."""
        return _inverse_survival(*self._arguments(q))

    @property
    def mean(self) -> Any:
        return _truncnorm.mean(_OPS, *self._arguments())

    @property
    def variance(self) -> Any:
        return _truncnorm.variance(_OPS, *self._arguments())

    def entropy(self) -> Any:
        return _truncnorm.entropy(_OPS, *self._arguments())


def truncated(base: dist.Distribution, low: Any = None, high: Any = None, **kwargs: Any) -> dist.Distribution:
    """Truncate ``base`` to ``[low, high]``, as Distributions.jl's ``truncated(d; lower, upper)``.

    A ``Normal`` base gives :class:`TruncatedNormal`; other bases go to numpyro's
    ``TruncatedDistribution`` with infinite bounds turned into ``None`` (with an
    :class:`~robusthmc.InfiniteBoundWarning`).

    Examples
    --------
    >>> import numpyro.distributions as dist
    >>> from robusthmc.numpyro import truncated
    >>> type(truncated(dist.Normal(0.0, 2.0), low=0.0)).__name__
    'TruncatedNormal'
    >>> type(truncated(dist.Cauchy(0.0, 1.0), low=0.0)).__name__
    'LeftTruncatedDistribution'
    """
    if not isinstance(base, dist.Distribution):
        raise TypeError(f"truncated(base={base!r}): expected a numpyro distribution, e.g. dist.Normal(0, 1)")
    if type(base) is dist.Normal:
        return TruncatedNormal(base.loc, base.scale, low=low, high=high, **kwargs)
    low = _argument(low, "low")
    high = _argument(high, "high")
    return dist.TruncatedDistribution(base, low=low, high=high, **kwargs)
