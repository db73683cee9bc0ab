"""robusthmc for Pyro: guarded ``NUTS``/``HMC`` swap-ins and an exact ``TruncatedNormal``.

Change one import, ``from robusthmc.pyro import NUTS`` instead of
``from pyro.infer import NUTS``; everything else stays Pyro's.
"""

from robusthmc._backends import require

require("torch")
require("pyro")

from robusthmc.pyro._truncated import TruncatedNormal, truncated  # noqa: E402

__all__ = ["TruncatedNormal", "truncated"]
