"""``TruncatedNormal`` and ``truncated`` for Pyro: None bounds, exact tails, ``rsample``."""

from __future__ import annotations

import numbers
from typing import Any, ClassVar

import numpy as np
import pyro.distributions as dist
import torch
from torch.autograd.function import once_differentiable
from torch.distributions import constraints
from torch.distributions.transforms import Transform
from torch.distributions.utils import broadcast_all

from robusthmc import _truncnorm
from robusthmc._arguments import check_numeric, normalize_bound

__all__ = ["TruncatedNormal", "truncated"]


class _TorchOps:
    """:class:`robusthmc._truncnorm.ArrayOps` for ``torch``."""

    where = staticmethod(torch.where)
    exp = staticmethod(torch.exp)
    expm1 = staticmethod(torch.expm1)
    log = staticmethod(torch.log)
    log1p = staticmethod(torch.log1p)
    sqrt = staticmethod(torch.sqrt)
    abs = staticmethod(torch.abs)
    erf = staticmethod(torch.special.erf)
    log_ndtr = staticmethod(torch.special.log_ndtr)
    ndtri = staticmethod(torch.special.ndtri)
    isfinite = staticmethod(torch.isfinite)
    minimum = staticmethod(torch.minimum)
    maximum = staticmethod(torch.maximum)
    full_like = staticmethod(torch.full_like)

    stop_gradient = staticmethod(torch.Tensor.detach)

    def nodes(self, like: Any) -> tuple[Any, Any]:
        as_tensor = torch.as_tensor
        return (
            as_tensor(_truncnorm.QUADRATURE_NODES, dtype=like.dtype, device=like.device),
            as_tensor(_truncnorm.QUADRATURE_WEIGHTS, dtype=like.dtype, device=like.device),
        )

    def tiny(self, like: Any) -> float:
        return float(torch.finfo(like.dtype).tiny)

    def eps(self, like: Any) -> float:
        return float(torch.finfo(like.dtype).eps)

    def cond_all(self, pred: Any, if_all: Any, otherwise: Any) -> Any:
        return if_all() if bool(pred.all()) else otherwise()

    def fori_loop(self, lower: int, upper: int, body: Any, init: Any) -> Any:
        value = init
        for i in range(lower, upper):
            value = body(i, value)
        return value


_OPS = _TorchOps()


class _LogAnchored(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, a: torch.Tensor, width: torch.Tensor) -> torch.Tensor:
        g, h, _, decay = _truncnorm.anchored_integrals(_OPS, a, width)
        ctx.save_for_backward(g, h, decay)
        return g.log()

    @staticmethod
    @once_differentiable  # first derivatives only: a second backward raises
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        g, h, decay = ctx.saved_tensors
        return -grad * h / g, grad * decay / g


class _LogCentral(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        mass = _truncnorm.central_mass(_OPS, a, b)
        ctx.save_for_backward(a, b, mass)
        return mass.log()

    @staticmethod
    @once_differentiable  # first derivatives only: a second backward raises
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        a, b, mass = ctx.saved_tensors
        density_a = _truncnorm.log_normal_density(a).exp()
        density_b = _truncnorm.log_normal_density(b).exp()
        return -grad * density_a / mass, grad * density_b / mass


class _LogNormalizer(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, *parameters: torch.Tensor) -> torch.Tensor:
        value, gradients = _truncnorm.log_normalizer(_OPS, *parameters)
        ctx.save_for_backward(*gradients)
        return value

    @staticmethod
    @once_differentiable  # first derivatives only: a second backward raises
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return tuple(grad * g for g in ctx.saved_tensors)


class _LogKernel(torch.autograd.Function):
    """:func:`robusthmc._truncnorm.log_kernel`; the parameters' gradients are sums of ``g d^k`` over the values."""

    @staticmethod
    def forward(
        ctx: Any, x: torch.Tensor, anchor: torch.Tensor, a: torch.Tensor, signed_scale: torch.Tensor
    ) -> torch.Tensor:
        anchor, a, signed_scale = torch.broadcast_tensors(anchor, a, signed_scale)
        d = _truncnorm.kernel_distance(_OPS, x, anchor, signed_scale)
        ctx.save_for_backward(d, a, signed_scale)
        return _truncnorm.kernel_value(d, a)

    @staticmethod
    @once_differentiable  # first derivatives only: a second backward raises
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        d, a, signed_scale = ctx.saved_tensors
        wants_x, wants_anchor, wants_a, wants_scale = ctx.needs_input_grad
        grad_d = grad * d
        sum_1 = grad.sum_to_size(a.shape)
        sum_d = grad_d.sum_to_size(a.shape)
        sum_d2 = (grad_d * d).sum_to_size(a.shape) if wants_scale else None
        return (
            -grad * (d + a) / signed_scale if wants_x else None,
            (sum_d + a * sum_1) / signed_scale if wants_anchor else None,
            -sum_d if wants_a else None,
            (sum_d2 + a * sum_d) / signed_scale if wants_scale else None,
        )


_MASSES = _truncnorm.LogMasses(_LogAnchored.apply, _LogCentral.apply, _LogNormalizer.apply, _LogKernel.apply)


class _PartlyBounded(constraints.Constraint):
    """``low <= x <= high`` elementwise, where entries of either bound may be infinite (no bound)."""

    def __init__(self, lower_bound: torch.Tensor, upper_bound: torch.Tensor) -> None:
        self.lower_bound, self.upper_bound = lower_bound, upper_bound
        super().__init__()

    def check(self, value: torch.Tensor) -> torch.Tensor:
        return (value >= self.lower_bound) & (value <= self.upper_bound)


class _PartlyBoundedTransform(Transform):
    """Per entry: sigmoid onto ``(low, high)``, ``low + exp``, ``high - exp`` or identity."""

    domain = constraints.real
    bijective = True

    def __init__(self, lower_bound: torch.Tensor, upper_bound: torch.Tensor, cache_size: int = 0) -> None:
        super().__init__(cache_size=cache_size)
        self.lower_bound, self.upper_bound = lower_bound, upper_bound
        self.has_low, self.has_high = torch.isfinite(lower_bound), torch.isfinite(upper_bound)
        # Finite stand-ins for absent bounds, with high - low > 0 everywhere.
        one = torch.ones_like(lower_bound)
        self.high = torch.where(self.has_high, upper_bound, torch.where(self.has_low, lower_bound + 1, one))
        self.low = torch.where(self.has_low, lower_bound, self.high - 1)

    @property
    def codomain(self) -> constraints.Constraint:  # type: ignore[override]
        return _PartlyBounded(self.lower_bound, self.upper_bound)

    def _call(self, x: torch.Tensor) -> torch.Tensor:
        low, high = self.low, self.high
        return torch.where(
            self.has_low & self.has_high,
            low + (high - low) * torch.sigmoid(x),
            torch.where(self.has_low, low + x.exp(), torch.where(self.has_high, high - x.exp(), x)),
        )

    def _inverse(self, y: torch.Tensor) -> torch.Tensor:
        low, high = self.low, self.high
        both = self.has_low & self.has_high
        only_low, only_high = self.has_low & ~self.has_high, self.has_high & ~self.has_low
        unit = torch.where(both, (y - low) / (high - low), torch.full_like(y, 0.5))
        above = torch.where(only_low, y - low, torch.ones_like(y))
        below = torch.where(only_high, high - y, torch.ones_like(y))
        return torch.where(
            both,
            unit.log() - (-unit).log1p(),
            torch.where(only_low, above.log(), torch.where(only_high, below.log(), y)),
        )

    def log_abs_det_jacobian(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        softplus = torch.nn.functional.softplus
        sigmoid = (self.high - self.low).log() - softplus(x) - softplus(-x)
        one_sided = torch.where(self.has_low | self.has_high, x, torch.zeros_like(x))
        return torch.where(self.has_low & self.has_high, sigmoid, one_sided)


# Both registries: NUTS looks the transform up with biject_to, init_to_uniform and the
# autoguides with transform_to.
@torch.distributions.transform_to.register(_PartlyBounded)
@torch.distributions.biject_to.register(_PartlyBounded)
def _transform_to_partly_bounded(constraint: _PartlyBounded) -> Transform:
    return _PartlyBoundedTransform(constraint.lower_bound, constraint.upper_bound)


_ARGUMENTS = ("loc", "scale", "low", "high")


def _argument(value: Any, name: str) -> Any:
    """An argument checked; a list or array as a tensor, an integer tensor as a float one."""
    if value is None and name in ("low", "high"):
        return None
    if not isinstance(value, torch.Tensor):
        check_numeric(value, name)
        if not isinstance(value, numbers.Number):  # numbers take the tensors' dtype in broadcast_all
            value = torch.as_tensor(value, dtype=torch.get_default_dtype())
    elif not value.dtype.is_floating_point:
        value = value.to(torch.get_default_dtype())
    if name in ("low", "high"):
        array = value.detach().cpu().numpy() if isinstance(value, torch.Tensor) else np.asarray(value)
        return normalize_bound(value, array, name)
    return value


class _FiniteReal(constraints.Constraint):
    """A finite real number: ``loc`` may not be infinite (as NumPyro's ``real`` constraint says)."""

    def check(self, value: torch.Tensor) -> torch.Tensor:
        return torch.isfinite(value)


class TruncatedNormal(dist.TorchDistribution):
    """Normal(loc, scale) restricted to ``[low, high]``; ``None`` means no bound.

    The same algorithm as ``robusthmc.numpyro.TruncatedNormal`` (see
    :mod:`robusthmc._truncnorm`): exact in the tails in float32 and float64,
    gradients never NaN, reparametrised ``rsample``. An infinite bound means
    exactly what ``None`` means and warns once, at construction.

    Examples
    --------
    >>> import torch
    >>> from robusthmc.pyro import TruncatedNormal
    >>> d = TruncatedNormal(0.0, 1.0, low=13.0)
    >>> round(float(d.log_prob(torch.tensor(13.1))), 4)
    1.2658
    >>> d.support
    GreaterThanEq(lower_bound=13.0)
    """

    arg_constraints: ClassVar[dict[str, Any]] = {"loc": _FiniteReal(), "scale": constraints.positive}
    has_rsample = True
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
        present = [v for v in (loc, scale, low, high) if v is not None]
        tensors = broadcast_all(*present)
        self.loc, self.scale = tensors[0], tensors[1]
        rest = iter(tensors[2:])
        self.low = None if low is None else next(rest)
        self.high = None if high is None else next(rest)
        if validate_args is not False and self.low is not None and self.high is not None:
            if bool(torch.any(self.low >= self.high)):
                raise ValueError(
                    f"TruncatedNormal got low={low!r} >= high={high!r}: the support is empty; "
                    f"pass low < high (or None for no bound)"
                )
        batch_shape = self.loc.shape if not isinstance(loc, numbers.Number) or present else torch.Size()
        super().__init__(batch_shape=batch_shape, validate_args=validate_args)

    @constraints.dependent_property(is_discrete=False, event_dim=0)
    def support(self) -> constraints.Constraint:
        low, high = self.low, self.high
        if any(v is not None and not bool(torch.all(torch.isfinite(v))) for v in (low, high)):
            return _PartlyBounded(*self._bounds())
        if low is None and high is None:
            return constraints.real
        # Closed, like [low, high]: a draw can round onto a bound far in a tail.
        if high is None:
            return constraints.greater_than_eq(low)
        if low is None:  # torch has no less_than_eq
            return _PartlyBounded(*self._bounds())
        return constraints.interval(low, high)

    def _bounds(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Bounds as tensors of the batch shape, ``-inf``/``inf`` for none."""
        like = self.loc
        low = torch.full_like(like, -torch.inf) if self.low is None else self.low
        high = torch.full_like(like, torch.inf) if self.high is None else self.high
        return low, high

    def _arguments(self, *values: Any) -> list[torch.Tensor]:
        """The parameters broadcast to the batch shape, then ``values`` as given (not broadcast)."""
        low, high = self._bounds()
        values = tuple(torch.as_tensor(v, dtype=self.loc.dtype, device=self.loc.device) for v in values)
        return [*torch.broadcast_tensors(self.loc, self.scale, low, high), *values]

    def expand(self, batch_shape: Any, _instance: Any = None) -> TruncatedNormal:
        new = self._get_checked_instance(TruncatedNormal, _instance)
        batch_shape = torch.Size(batch_shape)
        new.loc, new.scale = self.loc.expand(batch_shape), self.scale.expand(batch_shape)
        new.low = None if self.low is None else self.low.expand(batch_shape)
        new.high = None if self.high is None else self.high.expand(batch_shape)
        super(TruncatedNormal, new).__init__(batch_shape, validate_args=False)
        new._validate_args = self._validate_args
        return new

    def rsample(self, sample_shape: Any = ()) -> torch.Tensor:
        shape = self._extended_shape(sample_shape)
        tiny = torch.finfo(self.loc.dtype).tiny
        u = torch.rand(shape, dtype=self.loc.dtype, device=self.loc.device).clamp(min=tiny)
        loc, scale, low, high = self._arguments()
        finfo = torch.finfo(self.loc.dtype)
        as_numpy = [parameter.detach().cpu().numpy() for parameter in (loc, scale, low, high)]
        if _truncnorm.closed_form_suffices(
            as_numpy[0], as_numpy[1], as_numpy[2], as_numpy[3], finfo.tiny, finfo.eps
        ):
            # The parameters' part once, in their shape; then per draw only what depends on it.
            pieces = _truncnorm.tail_pieces(_OPS, _MASSES, loc, scale, low, high)
            return _truncnorm.closed_form_draw(_OPS, pieces, loc, scale, low, high, u)
        return _truncnorm.icdf(_OPS, _MASSES, loc, scale, low, high, u)

    def log_prob(self, value: torch.Tensor) -> torch.Tensor:
        if self._validate_args:
            self._validate_sample(value)
        return _truncnorm.log_prob(_OPS, _MASSES, *self._arguments(value))

    def cdf(self, value: torch.Tensor) -> torch.Tensor:
        return self.log_cdf(value).exp()

    def log_cdf(self, value: torch.Tensor) -> torch.Tensor:
        """``log P(X <= value)``, exact in log space (near 0 too, where ``log(cdf)`` is not)."""
        return _truncnorm.log_cdf(_OPS, _MASSES, *self._arguments(value))

    def survival_function(self, value: torch.Tensor) -> torch.Tensor:
        """``P(X > value)``, exact where it is small (where ``1 - cdf`` is not)."""
        return self.log_survival_function(value).exp()

    def log_survival_function(self, value: torch.Tensor) -> torch.Tensor:
        """``log P(X > value)``, exact in log space: the likelihood of a right-censored value."""
        return _truncnorm.log_survival(_OPS, _MASSES, *self._arguments(value))

    def icdf(self, value: torch.Tensor) -> torch.Tensor:
        """The quantile; NaN for ``value`` outside ``[0, 1]``."""
        return _truncnorm.icdf(_OPS, _MASSES, *self._arguments(value))

    def isf(self, value: torch.Tensor) -> torch.Tensor:
        """The inverse survival function, ``x`` with ``P(X > x) = value``: exact for ``value`` near 0."""
        return _truncnorm.inverse_survival(_OPS, _MASSES, *self._arguments(value))

    @property
    def mean(self) -> torch.Tensor:
        return _truncnorm.mean(_OPS, *self._arguments())

    @property
    def variance(self) -> torch.Tensor:
        return _truncnorm.variance(_OPS, *self._arguments())

    def entropy(self) -> torch.Tensor:
        return _truncnorm.entropy(_OPS, *self._arguments())


def truncated(base: dist.Distribution, low: Any = None, high: Any = None, **kwargs: Any) -> dist.Distribution:
    """Truncate a Normal to ``[low, high]``, as Distributions.jl's ``truncated(d; lower, upper)``.

    Pyro has no generic truncation, so a base other than ``Normal`` is a
    ``TypeError`` that says so.

    Examples
    --------
    >>> import pyro.distributions as dist
    >>> from robusthmc.pyro import truncated
    >>> type(truncated(dist.Normal(0.0, 2.0), low=0.0)).__name__
    'TruncatedNormal'
    """
    if isinstance(base, torch.distributions.Normal):
        return TruncatedNormal(base.loc, base.scale, low=low, high=high, **kwargs)
    raise TypeError(
        f"robusthmc.pyro.truncated supports a Normal base, got {type(base).__name__}: Pyro has no "
        f"generic truncation to fall back on (write the truncated density as a custom distribution)"
    )
