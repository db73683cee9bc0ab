"""The backends, found by name: the one place the core and the command line reach them.

The core never imports a backend module by its path; it asks :func:`backend` for
one by name, and a backend that is not installed is a one-line error naming the
extra to install.
"""

from __future__ import annotations

import importlib
from types import ModuleType

from robusthmc._errors import BackendNotInstalledError

__all__ = ["BACKENDS", "backend", "require"]

_EXTRA = {
    "numpyro": "numpyro",
    "jax": "numpyro",
    "blackjax": "blackjax",
    "pyro": "pyro",
    "torch": "pyro",
    "gpytorch": "gpytorch",
}


#: Every backend: its name, and the package that holds it.
BACKENDS = {
    "numpyro": "robusthmc.numpyro",
    "pyro": "robusthmc.pyro",
    "gpytorch": "robusthmc.gpytorch",
    "blackjax": "robusthmc.blackjax",
}


def backend(name: str, part: str = "") -> ModuleType:
    """Backend ``name``'s package, or its module ``part`` (``"_check"``), imported.

    Raises
    ------
    ValueError
        ``name`` is not a backend.
    BackendNotInstalledError
        What the backend needs is not installed.

    Examples
    --------
    >>> backend("numpyro", "_check").__name__
    'robusthmc.numpyro._check'
    >>> backend("stan")
    Traceback (most recent call last):
    ...
    ValueError: backend='stan': allowed values are 'numpyro', 'pyro', 'gpytorch', 'blackjax'
    """
    if name not in BACKENDS:
        allowed = ", ".join(repr(known) for known in BACKENDS)
        raise ValueError(f"backend={name!r}: allowed values are {allowed}")
    require(BACKENDS[name])  # the backend's own imports, with their message if missing
    return require(f"{BACKENDS[name]}.{part}" if part else BACKENDS[name])


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
