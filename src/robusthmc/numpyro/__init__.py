"""robusthmc for NumPyro: guarded ``NUTS``/``HMC`` swap-ins, an exact ``TruncatedNormal``, ``repair``.

Change one import, ``from robusthmc.numpyro import NUTS`` instead of
``from numpyro.infer import NUTS``; everything else stays numpyro's.
Importing this module wraps :meth:`numpyro.infer.MCMC.run` once so that a
guarded kernel can report after the compiled loop (see ``_hook``).
"""

from robusthmc._backends import require

require("jax")
require("numpyro")

from robusthmc.numpyro import _hook  # noqa: E402
from robusthmc.numpyro._kernel import GuardedHMCState, GuardRecord  # noqa: E402
from robusthmc.numpyro._repair import repair  # noqa: E402
from robusthmc.numpyro._samplers import HMC, NUTS  # noqa: E402
from robusthmc.numpyro._sites import describe_distribution  # noqa: E402
from robusthmc.numpyro._truncated import TruncatedNormal, truncated  # noqa: E402

_hook.install()

__all__ = [
    "HMC",
    "NUTS",
    "GuardRecord",
    "GuardedHMCState",
    "TruncatedNormal",
    "describe_distribution",
    "repair",
    "truncated",
]
