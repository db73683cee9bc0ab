"""Pyro's initial-point search, capped at ``Guard.max_init_attempts`` and guarded."""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import pyro.infer.mcmc.util as mcmc_util
import torch
from pyro.infer.autoguide.initialization import init_to_value

from robusthmc._guard import Guard
from robusthmc.pyro._compat import initial_search_replaced
from robusthmc.pyro._potential import SupportWall, is_numerical_exception

__all__ = ["InitialSearch"]

#: What Pyro's ``_find_valid_initial_params`` says when its attempts are spent.
_NO_VALID_POINT = "cannot find valid initial params"


class InitialSearch:
    """Set-up's search for an initial point: capped, guarded, its points recorded.

    Pyro's set-up runs the model at random points several times (a trace to
    count plates, a prototype trace, then one trace and one potential per
    attempt of ``_find_valid_initial_params``).  Each run that raises a
    numerical exception is a rejected point, as is each attempt with a
    non-finite potential or gradient; together they are capped at
    ``Guard.max_init_attempts``.  On a healthy model the attempts draw the same
    random numbers as Pyro's own search.
    """

    def __init__(self, guard: Guard) -> None:
        self.guard = guard
        self.attempts = 0
        self.exception: BaseException | None = None
        self.first: dict[str, torch.Tensor] = {}
        self.last: dict[str, torch.Tensor] = {}
        self.given: frozenset[str] = frozenset()  # the latents the user chose a start for

    @property
    def exhausted(self) -> bool:
        return self.attempts >= self.guard.max_init_attempts

    def rejected(self, error: BaseException) -> None:
        """Count a point at which the model raised ``error``; propagate it unless numerical."""
        if not is_numerical_exception(error, self.guard):
            raise error
        self.attempts += 1
        self.exception = error

    def _recording(self, strategy: Callable) -> Callable:
        if isinstance(strategy, functools.partial) and strategy.func is init_to_value:
            self.given = frozenset(strategy.keywords.get("values", {}))

        def record(site: dict) -> torch.Tensor:
            value = strategy(site)
            self.first.setdefault(site["name"], value.detach().clone())
            self.last[site["name"]] = value.detach().clone()
            return value

        return record

    def _guarded(self, potential_fn: Callable) -> Callable:
        def potential(z: Mapping[str, torch.Tensor]) -> torch.Tensor:
            try:
                with SupportWall(data=True):
                    return potential_fn(z)
            except Exception as error:
                if not is_numerical_exception(error, self.guard):
                    raise
                self.exception = error
                return sum((value * 0.0).sum() for value in z.values()) + float("nan")  # type: ignore[return-value]

        return potential

    @contextlib.contextmanager
    def installed(self) -> Iterator[None]:
        """Pyro's ``_find_valid_initial_params`` replaced by this search for the duration.

        ``initialize_model`` has no argument for the number of tries or for the
        potential's exceptions, so its search function is swapped.
        """

        def capped(original: Callable) -> Callable:
            def search(
                model: Any,
                model_args: Any,
                model_kwargs: Any,
                transforms: Any,
                potential_fn: Callable,
                prototype_params: Any,
                *,
                init_strategy: Callable = mcmc_util.init_to_uniform,
                trace: Any = None,
                **kwargs: Any,
            ) -> Any:
                kwargs.update(max_tries_initial_params=1, init_strategy=self._recording(init_strategy))
                potential_fn = self._guarded(potential_fn)
                while True:  # one attempt per call: Pyro's loop, with each attempt's exception caught
                    try:
                        return original(
                            model,
                            model_args,
                            model_kwargs,
                            transforms,
                            potential_fn,
                            prototype_params,
                            trace=trace,
                            **kwargs,
                        )
                    except Exception as error:
                        if isinstance(error, ValueError) and _NO_VALID_POINT in str(error):
                            self.attempts += 1
                        else:
                            self.rejected(error)
                        if self.exhausted:
                            raise
                    trace = None

            return search

        with initial_search_replaced(capped):
            yield
