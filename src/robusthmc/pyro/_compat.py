"""Pyro internals that robusthmc relies on, named in one place (checked on Pyro 1.9.x).

:data:`PRIVATE_NAMES` lists every private Pyro name the backend reads, and
:func:`missing_private_names` says which a Pyro lacks (``tests/pyro/test_compat.py``).

* :func:`distribution_mask`: the mask a ``MaskedDistribution`` keeps (``_mask``),
  to rebuild a masked distribution around a repaired one.
* :func:`keep_samples`: where ``MCMC.get_samples`` reads the draws (``MCMC._samples``,
  grouped by chain), to hand it the draws of a stopped run.
* :func:`current_chain` and :func:`in_worker_process`: which chain a kernel is drawing,
  and whether in a worker process, read from the frames of Pyro's ``_gen_samples``
  (its ``chain_id``) and of its ``_Worker.run``; a kernel is not told either.
* :func:`initial_search_replaced`: Pyro's initial-point search
  (``mcmc.util._find_valid_initial_params``) swapped for the guarded one while a
  kernel sets up (``initialize_model`` takes no argument for its tries or exceptions).
* :func:`collected_at_interrupt`: the draws ``MCMC.run`` had collected when a Ctrl-C
  unwound it (its locals ``z_flat_acc`` and ``z_structure``: Pyro keeps them nowhere
  else until the run ends, and in worker processes the parent's are the only copy),
  and :func:`set_transforms` (``MCMC._set_transforms``) to constrain them.
"""

from __future__ import annotations

import contextlib
import functools
import sys
import traceback
from collections.abc import Callable, Iterator
from typing import Any

from robusthmc._backends import missing_names

__all__ = [
    "PRIVATE_NAMES",
    "collected_at_interrupt",
    "current_chain",
    "distribution_mask",
    "in_worker_process",
    "initial_search_replaced",
    "keep_samples",
    "missing_private_names",
    "set_transforms",
]

#: Every private Pyro name the backend reads: (where, name).  ``where`` is a module, a
#: class (its attribute), an instance (``NUTS()``, ``MCMC()``, ``MaskedDistribution()``),
#: or a function (one of its local variables, read from a frame).
PRIVATE_NAMES = (
    ("pyro.infer.mcmc.api", "_Worker"),
    ("pyro.infer.mcmc.api._Worker", "run"),
    ("pyro.infer.mcmc.api._Worker.__init__", "chain_id"),
    ("pyro.infer.mcmc.api._gen_samples", "chain_id"),
    ("pyro.infer.mcmc.api.MCMC.run", "z_flat_acc"),
    ("pyro.infer.mcmc.api.MCMC.run", "z_structure"),
    ("pyro.infer.mcmc.util", "_find_valid_initial_params"),
    ("MCMC()", "_set_transforms"),
    ("MCMC()", "_samples"),
    ("NUTS()", "_t"),
    ("NUTS()", "_warmup_steps"),
    ("NUTS()", "_divergences"),
    ("MaskedDistribution()", "_mask"),
)


def missing_private_names() -> list[str]:
    """The names of :data:`PRIVATE_NAMES` this Pyro does not have (empty on a checked release)."""
    import pyro
    import pyro.distributions as dist
    from pyro.infer import MCMC, NUTS

    kernel = NUTS(lambda: pyro.sample("x", dist.Normal(0.0, 1.0)))
    instances = {
        "NUTS()": kernel,
        "MCMC()": MCMC(kernel, num_samples=1),
        "MaskedDistribution()": dist.Normal(0.0, 1.0).mask(False),
    }
    return missing_names(PRIVATE_NAMES, instances)


def distribution_mask(fn: Any) -> Any:
    """The mask of a Pyro ``MaskedDistribution`` (a bool or a boolean tensor)."""
    return fn._mask


def keep_samples(mcmc: Any, samples: dict[str, Any]) -> None:
    """Make ``mcmc.get_samples()`` return ``samples`` (tensors grouped by chain)."""
    mcmc._samples = samples


@functools.cache
def _worker_class() -> Any:
    """The object that runs a chain in a Pyro worker process."""
    import pyro.infer.mcmc.api

    return pyro.infer.mcmc.api._Worker


def current_chain() -> int:
    """The chain Pyro is drawing: ``_gen_samples``'s ``chain_id``, or its worker process's.

    In a worker process Pyro passes ``chain_id=None`` to ``_gen_samples``; the
    worker object that calls it knows the chain.
    """
    frame = sys._getframe(1)
    while frame is not None:
        if frame.f_code.co_name == "_gen_samples" and frame.f_locals.get("chain_id") is not None:
            return int(frame.f_locals["chain_id"])
        worker = frame.f_locals.get("self")
        if frame.f_code.co_name == "run" and isinstance(worker, _worker_class()):
            return int(worker.chain_id)
        frame = frame.f_back  # type: ignore[assignment]
    return 0


def in_worker_process() -> bool:
    """Whether this runs in a Pyro worker process (under its ``_Worker.run``)."""
    return any(
        frame.f_code.co_name == "run" and isinstance(frame.f_locals.get("self"), _worker_class())
        for frame, _ in traceback.walk_stack(None)
    )


def collected_at_interrupt(interrupt: KeyboardInterrupt) -> tuple[dict[str, Any] | None, list[list[Any]]]:
    """``MCMC.run``'s packed draws when ``interrupt`` unwound it: (``z_structure``, ``z_flat_acc``).

    ``z_flat_acc`` holds one list per chain of flat unconstrained draws; ``z_structure``
    the shape of each site, packed in sorted order.  ``(None, [])`` before any draw.
    """
    collected = next(
        (
            frame.f_locals
            for frame, _ in traceback.walk_tb(interrupt.__traceback__)
            if "z_flat_acc" in frame.f_locals
        ),
        {},
    )
    return collected.get("z_structure"), collected.get("z_flat_acc", [])


def set_transforms(mcmc: Any, *args: Any, **kwargs: Any) -> None:
    """Compute ``mcmc.transforms`` for the model's arguments (Pyro does so at the end of a run)."""
    mcmc._set_transforms(*args, **kwargs)


@contextlib.contextmanager
def initial_search_replaced(replacement: Callable[[Callable], Callable]) -> Iterator[None]:
    """Pyro's ``_find_valid_initial_params`` replaced by ``replacement(original)`` for the block."""
    import pyro.infer.mcmc.util as mcmc_util

    original = mcmc_util._find_valid_initial_params
    mcmc_util._find_valid_initial_params = replacement(original)
    try:
        yield
    finally:
        mcmc_util._find_valid_initial_params = original
