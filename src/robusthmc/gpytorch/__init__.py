"""robusthmc for GPyTorch: audit a model's priors against its parameters' constraints.

The fully Bayesian GP recipe samples hyperparameters with Pyro's NUTS; run it
with ``robusthmc.pyro.NUTS`` and GPyTorch's ``NotPSDError``/``NanError`` become
rejected proposals; :func:`audit` finds the prior/constraint mismatch that
causes them, and :func:`repair` truncates each flagged prior to its constraint.
"""

from robusthmc._backends import require

require("gpytorch")

from robusthmc.gpytorch._audit import Audit, PriorRow, audit  # noqa: E402
from robusthmc.gpytorch._repair import TruncatedPrior, repair  # noqa: E402

__all__ = ["Audit", "PriorRow", "TruncatedPrior", "audit", "repair"]
