"""Guarded swap-ins for Pyro's ``NUTS`` and ``HMC``: Pyro's classes with the guard mixed in (``_kernel``)."""

from __future__ import annotations

import inspect
from typing import Any

import pyro.infer

from robusthmc._guard import Guard
from robusthmc.pyro._kernel import GuardedKernel

__all__ = ["HMC", "NUTS"]


def _with_guard_signature(cls: type, upstream: type) -> type:
    """Give ``cls`` its own ``__init__`` whose signature is upstream's plus ``guard``."""

    def __init__(self: Any, *args: Any, guard: Guard | None = None, **kwargs: Any) -> None:
        GuardedKernel.__init__(self, *args, guard=guard, **kwargs)

    signature = inspect.signature(upstream.__init__)  # type: ignore[misc]
    guard = inspect.Parameter(
        "guard", inspect.Parameter.KEYWORD_ONLY, default=None, annotation="Guard | None"
    )
    __init__.__signature__ = signature.replace(  # type: ignore[attr-defined]
        parameters=[*signature.parameters.values(), guard]
    )
    __init__.__doc__ = upstream.__init__.__doc__  # type: ignore[misc]
    cls.__init__ = __init__  # type: ignore[misc]
    return cls


class HMC(GuardedKernel, pyro.infer.HMC):
    """Pyro's ``HMC`` with a :class:`~robusthmc.Guard`; every argument of Pyro's, plus ``guard``.

    Also caps the leapfrog steps of one transition at
    ``Guard.max_steps_per_transition`` (``trajectory_length / step_size`` grows
    without bound when the step size collapses).

    Examples
    --------
    >>> import pyro
    >>> from pyro.infer import MCMC
    >>> from robusthmc.pyro import HMC
    >>> from robusthmc.lessons.pyro import eight_schools_noncentered
    >>> pyro.set_rng_seed(0)
    >>> mcmc = MCMC(HMC(eight_schools_noncentered, num_steps=10), 20, warmup_steps=20, disable_progbar=True)
    >>> mcmc.run()
    >>> sorted(mcmc.get_samples())
    ['mu', 'tau', 'theta_trans']
    """


class NUTS(GuardedKernel, pyro.infer.NUTS):
    """Pyro's ``NUTS`` with a :class:`~robusthmc.Guard`; every argument of Pyro's, plus ``guard``.

    Examples
    --------
    >>> import pyro
    >>> from pyro.infer import MCMC
    >>> from robusthmc.pyro import NUTS
    >>> from robusthmc.lessons.pyro import logistic_regression
    >>> from robusthmc.lessons.data import logistic_data
    >>> data = logistic_data(num_rows=100, num_features=2)
    >>> pyro.set_rng_seed(0)
    >>> mcmc = MCMC(NUTS(logistic_regression), 30, warmup_steps=30, disable_progbar=True)
    >>> mcmc.run(data.X, data.y)
    >>> sorted(mcmc.get_samples())
    ['coefficients', 'intercept']
    """


_with_guard_signature(HMC, pyro.infer.HMC)
_with_guard_signature(NUTS, pyro.infer.NUTS)
