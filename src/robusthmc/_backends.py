"""The backends, found by name: the one place the core and the command line reach them.

The core never imports a backend module by its path; it asks :func:`backend` for
one by name, and a backend that is not installed is a one-line error naming the
extra to install.
"""

from __future__ import annotations

import importlib
import inspect
from collections.abc import Iterable, Mapping
from types import ModuleType
from typing import Any

from robusthmc._errors import BackendNotInstalledError

__all__ = ["BACKENDS", "backend", "missing_names", "require"]

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


def _resolve(dotted: str) -> Any:
    module, _, rest = dotted.partition(".")
    value: Any = importlib.import_module(module)
    for part in rest.split("."):
        try:
            value = getattr(value, part)
        except AttributeError:
            value = importlib.import_module(f"{value.__name__}.{part}")
    return value


def _code(owner: Any) -> Any:
    """The code of a function, also one wrapped by ``functools.wraps`` or held in a partial."""
    owner = inspect.unwrap(owner)
    if hasattr(owner, "__code__"):
        return owner.__code__
    inner = getattr(owner, "func", None)
    if inner is not None:  # a partial (Pyro wraps methods in one): the function is its last callable
        functions = [a for a in (*getattr(inner, "args", ()), inner) if inspect.isfunction(inspect.unwrap(a))]
        return _code(functions[0]) if functions else None
    return None


def missing_names(names: Iterable[tuple[str, str]], instances: Mapping[str, Any]) -> list[str]:
    """The ``(where, name)`` pairs an upstream release does not have, as ``"where.name"``.

    ``where`` is a dotted module or class path (``name`` an attribute), a key of
    ``instances`` (an attribute of that object), or a function (``name`` one of
    its local variables).  A backend's ``_compat`` lists the private names it reads.

    Examples
    --------
    >>> missing_names([("os.path", "join"), ("os.path.join", "a"), ("os", "_no_such")], {})
    ['os._no_such']
    """
    missing = []
    for where, name in names:
        try:
            owner = instances[where] if where in instances else _resolve(where)
        except (ImportError, AttributeError):
            missing.append(f"{where}.{name}")
            continue
        code = _code(owner) if callable(owner) and not isinstance(owner, type) else None
        present = name in code.co_varnames + code.co_cellvars if code is not None else hasattr(owner, name)
        if not present:
            missing.append(f"{where}.{name}")
    return missing
