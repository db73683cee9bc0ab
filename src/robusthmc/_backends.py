"""Loud failures for missing optional backends."""

from __future__ import annotations

import importlib
from types import ModuleType

from robusthmc._errors import BackendNotInstalledError

__all__ = ["require"]

_EXTRA = {
    "numpyro": "numpyro",
    "jax": "numpyro",
    "blackjax": "blackjax",
    "pyro": "pyro",
    "torch": "pyro",
    "gpytorch": "gpytorch",
}


def require(module: str) -> ModuleType:
    """Import ``module`` or raise an error that says which extra to install.

    Examples
    --------
    >>> require("numpy").__name__
    'numpy'
    """
    extra = _EXTRA.get(module.split(".")[0], module)
    try:
        return importlib.import_module(module)
    except ModuleNotFoundError as error:
        if (error.name or "").split(".")[0] not in _EXTRA:
            raise _does_not_import(module, error) from error
        raise BackendNotInstalledError(
            f"{error.name} is not installed; robusthmc's {extra} backend needs it: "
            f'pip install "robusthmc[{extra}]"'
        ) from error
    except ImportError as error:
        raise _does_not_import(module, error) from error


def _does_not_import(module: str, error: ImportError) -> BackendNotInstalledError:
    """An installed backend that fails to import: usually a jax (or torch) release it does not support."""
    hint = ""
    if module.split(".")[0] in {"numpyro", "jax"}:
        hint = ' numpyro 0.20 needs jax < 0.10 (pip install "jax<0.10"); robusthmc is checked on numpyro 0.20 to 0.22.'
    return BackendNotInstalledError(
        f"{module} is installed but does not import ({type(error).__name__}: {error}): its "
        f"dependencies' releases may not match it.{hint}"
    )
