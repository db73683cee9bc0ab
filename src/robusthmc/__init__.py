"""robusthmc: HMC/NUTS for NumPyro and Pyro that survive numerical failure.

The top level is backend-neutral and imports neither jax nor torch: the
:class:`Guard` (policies and caps), the errors and warnings, and the
diagnosis records, and the model doctor :func:`check`.  The backends are :mod:`robusthmc.numpyro`,
:mod:`robusthmc.pyro` and :mod:`robusthmc.gpytorch`.
"""

from robusthmc._causes import Cause, DistributionInfo
from robusthmc._check import CheckReport, SiteReport, check
from robusthmc._diagnosis import Diagnosis, Halt, SiteProblem
from robusthmc._errors import (
    BackendNotInstalledError,
    FrozenChainWarning,
    GuardOptionError,
    InfiniteBoundWarning,
    InitializationError,
    NonFiniteError,
    NonFiniteWarning,
    RetryLimitError,
    RobustHMCError,
    RobustHMCWarning,
    SamplingInterrupted,
    StepCapWarning,
    StepSizeCollapseError,
    StuckChainError,
    UncheckedNumpyroWarning,
)
from robusthmc._guard import Guard
from robusthmc._repair import Repair, Repairs

__version__ = "0.1.0"

__all__ = [
    "BackendNotInstalledError",
    "Cause",
    "CheckReport",
    "Diagnosis",
    "DistributionInfo",
    "FrozenChainWarning",
    "Guard",
    "GuardOptionError",
    "Halt",
    "InfiniteBoundWarning",
    "InitializationError",
    "NonFiniteError",
    "NonFiniteWarning",
    "Repair",
    "Repairs",
    "RetryLimitError",
    "RobustHMCError",
    "RobustHMCWarning",
    "SamplingInterrupted",
    "SiteProblem",
    "SiteReport",
    "StepCapWarning",
    "StepSizeCollapseError",
    "StuckChainError",
    "UncheckedNumpyroWarning",
    "check",
]
