"""``repair``: a numpyro effect handler that swaps each distribution the catalogue fixes exactly."""

from __future__ import annotations

import warnings
from collections.abc import Callable
from typing import Any

import numpy as np
from numpyro import distributions as dist
from numpyro.handlers import seed
from numpyro.primitives import Messenger

from robusthmc._causes import Cause, exact_repair
from robusthmc._errors import InfiniteBoundWarning
from robusthmc._repair import Repair, Repairs, repair_site
from robusthmc.numpyro._compat import distribution_mask
from robusthmc.numpyro._sites import _TRUNCATED, describe_distribution
from robusthmc.numpyro._truncated import TruncatedNormal, _is_concrete, truncated

__all__ = ["repair"]


def _infinite_everywhere(bound: Any) -> bool:
    """Whether a bound is known (concrete) and infinite in every entry."""
    return bound is not None and _is_concrete(bound) and bool(np.all(np.isinf(np.asarray(bound))))


def _swapped(fn: Any) -> tuple[Any, Cause] | None:
    """``fn`` with its exactly repairable core swapped, and the cause removed; ``None`` if none."""
    if isinstance(fn, dist.ExpandedDistribution):
        inner = _swapped(fn.base_dist)
        return None if inner is None else (inner[0].expand(fn.batch_shape), inner[1])
    if isinstance(fn, dist.Independent):
        inner = _swapped(fn.base_dist)
        return None if inner is None else (inner[0].to_event(fn.reinterpreted_batch_ndims), inner[1])
    if isinstance(fn, dist.MaskedDistribution):
        inner = _swapped(fn.base_dist)
        return None if inner is None else (inner[0].mask(distribution_mask(fn)), inner[1])
    if not isinstance(fn, _TRUNCATED):
        return None
    low, high = getattr(fn, "low", None), getattr(fn, "high", None)
    infinite = [name for name, bound in (("low", low), ("high", high)) if _infinite_everywhere(bound)]
    low, high = (None if name in infinite else bound for name, bound in (("low", low), ("high", high)))
    normal = isinstance(fn.base_dist, dist.Normal)
    cause = exact_repair(
        "truncated_normal" if normal else "truncated",
        exact_tails=False,
        infinite_bounds=infinite,
        backend="numpyro",
    )
    if cause is None:
        return None
    with warnings.catch_warnings():
        # An infinite entry of an array bound means no bound there: the repair says so itself.
        warnings.simplefilter("ignore", InfiniteBoundWarning)
        if normal:
            base = fn.base_dist
            return TruncatedNormal(base.loc, base.scale, low, high), cause
        if low is None and high is None:
            return fn.base_dist, cause
        return truncated(fn.base_dist, low=low, high=high), cause


def _described(fn: Any) -> str:
    """The distribution as text, its maker named: ``numpyro.TruncatedNormal(loc=0, ...)``."""
    core = fn
    while isinstance(core, (dist.ExpandedDistribution, dist.Independent, dist.MaskedDistribution)):
        core = core.base_dist
    maker = "robusthmc.numpyro" if getattr(core, "robusthmc_exact_tails", False) else "numpyro"
    return f"{maker}.{describe_distribution(fn)}"


class repair(Messenger):
    """Swap, at every sample site, each distribution that an exact repair exists for.

    A numpyro effect handler, like :func:`numpyro.handlers.reparam`: wrap a
    model with it (``repair(model)``) or use it as a context. Under it,
    numpyro's ``TruncatedNormal`` and every ``TruncatedDistribution`` over a
    ``Normal`` become :class:`~robusthmc.numpyro.TruncatedNormal` (exact in its
    tails; an infinite bound becomes ``None``), and any other truncation with an
    infinite bound gets that bound left out. The posterior is the one the model
    means; what changes is only that it can be computed. Fixes that change the
    model's meaning (a wall, an improper prior, float32) are never applied: the
    diagnosis names them. :meth:`explain` lists what it swaps.

    Parameters
    ----------
    fn : callable, optional
        The model.

    Examples
    --------
    >>> import jax
    >>> from numpyro.infer import MCMC, NUTS
    >>> from robusthmc.lessons.numpyro import turing
    >>> from robusthmc.numpyro import repair
    >>> print(repair(turing).explain())  # doctest: +ELLIPSIS
    site 'V': numpyro.TruncatedNormal(loc=0, scale=..., low=0, high=inf) -> robusthmc.numpyro.TruncatedNormal(loc=0, scale=..., low=0) (infinite_bound: ...)
    >>> mcmc = MCMC(NUTS(repair(turing)), num_warmup=100, num_samples=100, progress_bar=False)
    >>> mcmc.run(jax.random.key(0))  # numpyro's own NUTS, on the model as it is meant
    >>> bool((mcmc.get_samples()["V"] >= 0).all())
    True
    """

    def __init__(self, fn: Callable | None = None) -> None:
        if fn is not None and not callable(fn):
            raise TypeError(
                f"repair(fn={fn!r}): expected a model, a function with numpyro sample sites "
                f"(got {type(fn).__name__})"
            )
        super().__init__(fn)
        self._made: list[Repair] | None = None

    def process_message(self, msg: dict[str, Any]) -> None:
        repair_site(msg, _swapped, _described, self._made)

    def explain(self, *args: Any, **kwargs: Any) -> Repairs:
        """Run the model once (seeded, with these arguments) and list each repair made.

        A model that needs none gives an empty :class:`~robusthmc.Repairs`
        (printed ``no repair needed``). The model's own exceptions come out unchanged.
        """
        if self.fn is None:
            raise TypeError("repair().explain(...) needs a model: repair(model).explain(*args, **kwargs)")
        self._made = []
        try:
            seed(self, rng_seed=0)(*args, **kwargs)
            return Repairs.made(self._made)
        finally:
            self._made = None
