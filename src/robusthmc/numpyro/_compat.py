"""Every numpyro internal that robusthmc relies on, named in one place.

Checked against numpyro 0.20.0, 0.21.0 and 0.22.0 (:data:`CHECKED_VERSIONS`;
``make test-numpyro-versions`` runs the NumPyro tests on each).  The rest of
the backend uses numpyro's public surface only.

* :func:`unconstrain_reparam`: how numpyro's potential energy substitutes an
  unconstrained point into a model (the site diagnosis evaluates each term the
  same way); a numpyro without it gets a warning and the same built from its
  public transforms, never an import error.

:data:`PRIVATE_NAMES` lists every private name read, and
:func:`missing_private_names` says which a numpyro lacks
(``tests/numpyro/test_versions.py`` asks it on every checked release).
* ``HMC._init_state`` and the attributes of numpyro's ``HMC`` it sets
  (``_init_fn``, ``_sample_fn``, ``_potential_fn_gen``): the guarded kernels
  hand numpyro their transition functions before it initialises the model.
* The local variables that hold the draws while numpyro steps a chain in
  Python (``fori_collect``'s, ``_single_chain_mcmc``'s, ``_laxmap``'s): an
  interrupted run's draws are read from the frames the ``KeyboardInterrupt``
  unwound (:func:`stepped_run_at_interrupt`).
* :func:`distribution_mask`: the mask a ``MaskedDistribution`` keeps (``_mask``),
  to rebuild a masked distribution around a repaired one.
* :func:`validation_enabled`: whether numpyro validates distributions now
  (``_VALIDATION_ENABLED``): with it, a value outside its support has log
  density -inf, and the site diagnosis must see what the sampler sees.
* :func:`transition_is_mirrored`: whether numpyro's own transition is one of
  those the guarded transition was checked against.  On another one the
  guarded kernels fall back to numpyro's transition around a guarded
  potential energy (see :mod:`robusthmc.numpyro._kernel`).
"""

from __future__ import annotations

import functools
import hashlib
import inspect
import re
import traceback
import warnings
from typing import Any, NamedTuple

import numpyro
from numpyro.infer import hmc as numpyro_hmc
from numpyro.infer import util as numpyro_infer_util

from robusthmc._backends import missing_names
from robusthmc._errors import UncheckedNumpyroWarning

__all__ = [
    "CHECKED_VERSIONS",
    "PRIVATE_NAMES",
    "SteppedRun",
    "distribution_mask",
    "missing_private_names",
    "numpyro_version",
    "stepped_run_at_interrupt",
    "transition_is_mirrored",
    "unconstrain_reparam",
    "validation_enabled",
]

CHECKED_VERSIONS = ("0.20.0", "0.21.0", "0.22.0")

#: Every private numpyro name the backend reads: (where, name).  ``where`` is a
#: module, a class (its attribute), ``HMC()`` (an attribute of an instance), or a
#: function (one of its local variables, read from a Ctrl-C traceback).
PRIVATE_NAMES = (
    ("numpyro.infer.util", "_unconstrain_reparam"),
    ("numpyro.distributions.distribution", "_VALIDATION_ENABLED"),
    ("numpyro.infer.hmc.HMC", "_init_state"),
    *(
        ("HMC()", name)
        for name in (
            "_model", "_potential_fn", "_potential_fn_gen", "_kinetic_fn", "_algo", "_init_fn",
            "_sample_fn", "_init_strategy", "_num_steps", "_trajectory_length", "_adapt_step_size",
        )
    ),
    ("MaskedDistribution()", "_mask"),
    *(("numpyro.util.fori_collect", name) for name in ("vals", "i", "start_idx", "thinning")),
    ("numpyro.infer.mcmc._laxmap", "ys"),
    ("numpyro.infer.mcmc.MCMC._single_chain_mcmc", "collect_fields"),
)  # fmt: skip


def missing_private_names() -> list[str]:
    """The names of :data:`PRIVATE_NAMES` this numpyro does not have (empty on a checked release)."""
    from numpyro.distributions import Normal
    from numpyro.infer import HMC

    instances = {"HMC()": HMC(lambda: None), "MaskedDistribution()": Normal(0.0, 1.0).mask(False)}
    return missing_names(PRIVATE_NAMES, instances)


def _public_unconstrain_reparam(params: Any, site: Any) -> Any:
    """``_unconstrain_reparam`` from numpyro's public pieces: where a numpyro lacks it.

    The value of a latent site at the unconstrained point, with the log-Jacobian
    of its map as a factor (``_<site>_log_det``), as numpyro's potential energy does.
    """
    import jax.numpy as jnp
    from numpyro.distributions.transforms import biject_to
    from numpyro.distributions.util import sum_rightmost

    name = site["name"]
    if name not in params or site["type"] != "sample":
        return params.get(name)
    unconstrained = params[name]
    transform = biject_to(site["fn"].support)
    value = transform(unconstrained)
    log_det = transform.log_abs_det_jacobian(unconstrained, value)
    log_det = sum_rightmost(log_det, jnp.ndim(log_det) - jnp.ndim(value) + len(site["fn"].event_shape))
    numpyro.factor(f"_{name}_log_det", log_det)
    return value


#: How numpyro's potential energy substitutes an unconstrained point into a model (the site
#: diagnosis evaluates each term the same way): numpyro's own, or the same from its public pieces.
unconstrain_reparam: Any = getattr(numpyro_infer_util, "_unconstrain_reparam", None)
if unconstrain_reparam is None:
    unconstrain_reparam = _public_unconstrain_reparam
    warnings.warn(
        f"numpyro {numpyro.__version__} has no numpyro.infer.util._unconstrain_reparam; robusthmc's "
        f"site diagnosis rebuilds it from numpyro's public transforms (checked on numpyro "
        f"{', '.join(CHECKED_VERSIONS)}).",
        UncheckedNumpyroWarning,
        stacklevel=2,
    )


# The source of numpyro's ``hmc`` (the transition), comments, docstrings, type
# annotations and blank lines removed, in each checked version: the guarded
# transition mirrors it operation for operation.
_MIRRORED_TRANSITIONS = {
    "b22567013e0fbb3af38c938adaeeec6bfb58f9871692eac4202c71fc09c3d1a4": "0.20.0",
    "f13d0cc5f384c33e64b8f0da6911acbf393107c38693fdfe14cf06c0c91a5ddc": "0.21.0",
    "0059c597196c3cb5ca7969fe19435dccaba49a3e6e841394aa55a7c19df67b11": "0.22.0",
}


def numpyro_version() -> str:
    """The installed numpyro's version."""
    return numpyro.__version__


@functools.cache
def _transition_fingerprint() -> str:
    source = inspect.getsource(numpyro_hmc.hmc)
    source = re.sub(r'(?s)""".*?"""', "", source)
    lines = []
    for line in source.splitlines():
        line = line.split("#", 1)[0].rstrip()
        if line.strip() and not line.strip().startswith("assert "):
            lines.append(line)
    return hashlib.sha256("\n".join(lines).encode()).hexdigest()


def transition_is_mirrored() -> bool:
    """Whether numpyro's ``hmc`` transition is one the guarded transition mirrors."""
    return _transition_fingerprint() in _MIRRORED_TRANSITIONS


def distribution_mask(fn: Any) -> Any:
    """The mask of a numpyro ``MaskedDistribution`` (a bool or a boolean array)."""
    return fn._mask


def validation_enabled() -> bool:
    """Whether numpyro validates distributions' arguments and values (``numpyro.enable_validation``)."""
    from numpyro.distributions import distribution

    return bool(getattr(distribution, "_VALIDATION_ENABLED", False))


class SteppedRun(NamedTuple):
    """What numpyro's Python-stepped loop held when a ``KeyboardInterrupt`` unwound it."""

    fields: tuple[str, ...]  # the fields collected, in the collection's order
    collection: tuple  # the current chain's collection, one entry per field
    collected: int  # how many draws the current chain had collected (at most the collection's length)
    last_state: Any  # the current chain's state
    done: list[tuple[Any, Any]]  # the chains drawn before it: (their collection by field, last state)


def stepped_run_at_interrupt(interrupt: KeyboardInterrupt) -> SteppedRun | None:
    """The draws of a run that numpyro stepped in Python, from the frames ``interrupt`` unwound.

    numpyro keeps them in local variables: ``fori_collect``'s collection for
    the current chain, ``_laxmap``'s results for the chains already drawn.
    None where the interrupt came outside that loop.
    """
    frames = {frame.f_code.co_name: frame.f_locals for frame, _ in traceback.walk_tb(interrupt.__traceback__)}
    loop, chain_run = frames.get("fori_collect"), frames.get("_single_chain_mcmc")
    if loop is None or chain_run is None or "vals" not in loop:
        return None
    fields = tuple(chain_run["collect_fields"])
    collection = loop["vals"][1] if len(fields) > 1 else (loop["vals"][1],)
    collected = (loop["i"] - loop["start_idx"]) // loop["thinning"] + 1
    return SteppedRun(
        fields, collection, collected, loop["vals"][0][0], frames.get("_laxmap", {}).get("ys", [])
    )
