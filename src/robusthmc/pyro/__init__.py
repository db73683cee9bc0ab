"""robusthmc for Pyro: guarded ``NUTS``/``HMC`` swap-ins, an exact ``TruncatedNormal``, ``repair``.

Change one import, ``from robusthmc.pyro import NUTS`` instead of
``from pyro.infer import NUTS``; everything else stays Pyro's.
"""

from robusthmc._backends import require

require("torch")
require("pyro")

from robusthmc.pyro import _arviz, _hook  # noqa: E402
from robusthmc.pyro._potential import is_numerical_exception  # noqa: E402
from robusthmc.pyro._repair import repair  # noqa: E402
from robusthmc.pyro._samplers import HMC, NUTS  # noqa: E402
from robusthmc.pyro._sites import describe_distribution  # noqa: E402
from robusthmc.pyro._truncated import TruncatedNormal, truncated  # noqa: E402

_arviz.install()
_hook.install()

__all__ = [
    "HMC",
    "NUTS",
    "TruncatedNormal",
    "describe_distribution",
    "is_numerical_exception",
    "repair",
    "truncated",
]
