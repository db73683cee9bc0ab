"""Loud failures for missing optional backends."""

from __future__ import annotations

import importlib
from types import ModuleType

from robusthmc._errors import BackendNotInstalledError

__all__ = ["require"]

_EXTRA = {"numpyro": "numpyro", "jax": "numpyro", "pyro": "pyro", "torch": "pyro", "gpytorch": "gpytorch"}


def require(module: str) -> ModuleType:
    """Import ``module`` or raise an error that says which extra to install.

    Examples
    --------
    >>> require("numpy").__name__
    'numpy'
    """
    try:
        return importlib.import_module(module)
    except ImportError as error:
        extra = _EXTRA.get(module.split(".")[0], module)
        raise BackendNotInstalledError(
            f"{module} is not installed; robusthmc's {extra} backend needs it: "
            f'pip install "robusthmc[{extra}]"'
        ) from error
