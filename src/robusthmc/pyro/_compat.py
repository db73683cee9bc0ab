"""Pyro internals that robusthmc relies on, named in one place (checked on Pyro 1.9.x).

:data:`PRIVATE_NAMES` lists every private Pyro name the backend reads, and
:func:`missing_private_names` says which a Pyro lacks (``tests/pyro/test_compat.py``).

* :func:`distribution_mask`: the mask a ``MaskedDistribution`` keeps (``_mask``),
  to rebuild a masked distribution around a repaired one.
* :func:`keep_samples`: where ``MCMC.get_samples`` reads the draws (``MCMC._samples``,
  grouped by chain), to hand it the draws of a stopped run.
"""

from __future__ import annotations

from typing import Any

from robusthmc._backends import missing_names

__all__ = ["PRIVATE_NAMES", "distribution_mask", "keep_samples", "missing_private_names"]

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
