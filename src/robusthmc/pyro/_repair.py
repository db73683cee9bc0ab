"""``repair``: a Pyro effect handler that swaps each distribution the catalogue fixes exactly."""

from __future__ import annotations

import functools
import warnings
from collections.abc import Callable
from typing import Any

import pyro.distributions as dist
import torch
from pyro import poutine
from pyro.poutine.messenger import Messenger

from robusthmc._causes import Cause, exact_repair
from robusthmc._errors import InfiniteBoundWarning
from robusthmc._repair import Repair, Repairs, repair_site
from robusthmc.pyro._compat import distribution_mask
from robusthmc.pyro._sites import describe_distribution
from robusthmc.pyro._truncated import TruncatedNormal

__all__ = ["repair"]


def _infinite_everywhere(bound: Any) -> bool:
    return bound is not None and bool(torch.all(torch.isinf(torch.as_tensor(bound))))


def _swapped(fn: Any) -> tuple[Any, Cause] | None:
    """``fn`` with its exactly repairable core swapped, and the cause removed; ``None`` if none."""
    if isinstance(fn, dist.ExpandedDistribution):
        inner = _swapped(fn.base_dist)
        return None if inner is None else (inner[0].expand(fn.batch_shape), inner[1])
    if isinstance(fn, torch.distributions.Independent):
        inner = _swapped(fn.base_dist)
        return None if inner is None else (inner[0].to_event(fn.reinterpreted_batch_ndims), inner[1])
    if isinstance(fn, dist.MaskedDistribution):
        inner = _swapped(fn.base_dist)
        return None if inner is None else (inner[0].mask(distribution_mask(fn)), inner[1])
    if not isinstance(fn, torch.distributions.Distribution):
        return None  # a plate's subsample site
    info = describe_distribution(fn)
    if info is None or info.family != "truncated_normal" or info.exact_tails:
        return None
    hand_written: Any = fn  # read as the diagnosis reads it: loc, scale, low, high
    low, high = hand_written.low, hand_written.high
    infinite = [name for name, bound in (("low", low), ("high", high)) if _infinite_everywhere(bound)]
    cause = exact_repair("truncated_normal", exact_tails=False, infinite_bounds=infinite, backend="pyro")
    if cause is None:
        return None
    low, high = (None if name in infinite else bound for name, bound in (("low", low), ("high", high)))
    with warnings.catch_warnings():
        # An infinite entry of an array bound means no bound there: the repair says so itself.
        warnings.simplefilter("ignore", InfiniteBoundWarning)
        return TruncatedNormal(hand_written.loc, hand_written.scale, low, high), cause


def _described(fn: Any) -> str:
    core = fn
    while isinstance(
        core, (dist.ExpandedDistribution, torch.distributions.Independent, dist.MaskedDistribution)
    ):
        core = core.base_dist
    maker = "robusthmc.pyro" if getattr(core, "robusthmc_exact_tails", False) else type(core).__module__
    return f"{maker}.{describe_distribution(fn)}"


class _RepairMessenger(Messenger):
    """Swaps the distribution of each sample site it can repair; records the repairs if asked."""

    def __init__(self, made: list[Repair] | None = None) -> None:
        super().__init__()
        self.made = made

    def _process_message(self, msg: Any) -> None:
        repair_site(msg, _swapped, _described, self.made)


class repair:
    """``model`` with each distribution that an exact repair exists for swapped, at every sample site.

    A Pyro effect handler around the model. Torch and Pyro have no truncated
    distributions of their own, so what a Pyro model holds is a truncated normal
    written by hand (a class named ``...TruncatedNormal`` with ``loc``, ``scale``,
    ``low`` and ``high``, read as the diagnosis reads it): under ``repair`` it
    becomes :class:`~robusthmc.pyro.TruncatedNormal`, exact in its tails, an
    infinite bound read as none. The posterior is the one the model means; what
    changes is only that it can be computed. Fixes that change the model's
    meaning (a wall, an improper prior, float32) are never applied.
    :meth:`explain` lists what it swaps.

    Parameters
    ----------
    fn : callable
        The model.

    Examples
    --------
    >>> import torch
    >>> from robusthmc.lessons.pyro import turing
    >>> from robusthmc.pyro import repair
    >>> print(repair(turing).explain())  # doctest: +ELLIPSIS
    site 'V': robusthmc.lessons.pyro.NaiveTruncatedNormal(...high=inf) -> robusthmc.pyro.TruncatedNormal(...low=0) (infinite_bound: ...)
    """

    def __init__(self, fn: Callable) -> None:
        if not callable(fn):
            raise TypeError(
                f"repair(fn={fn!r}): expected a model, a function with Pyro sample sites "
                f"(got {type(fn).__name__})"
            )
        self.fn = fn
        functools.update_wrapper(self, fn, updated=[])

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        with _RepairMessenger():
            return self.fn(*args, **kwargs)

    def explain(self, *args: Any, **kwargs: Any) -> Repairs:
        """Run the model once (seeded; the global RNG state is kept) and list each repair made.

        A model that needs none gives an empty :class:`~robusthmc.Repairs`
        (printed ``no repair needed``). The model's own exceptions come out unchanged.
        """
        made: list[Repair] = []
        with poutine.seed(rng_seed=0), poutine.block(), _RepairMessenger(made):
            self.fn(*args, **kwargs)
        return Repairs.made(made)
