"""Where a torch computation's finite value hides a NaN: a ``torch.where`` whose other branch is not.

``torch.where(x > 0, x.sqrt(), 0.0)`` is 0 at ``x = -1``, but its gradient is
NaN: the branch it does not take, ``sqrt(-1)``, is NaN, and the backward pass
multiplies that branch's derivative by a zero gradient (``0 * NaN = NaN``).
:class:`HiddenNonfinite` records such calls while a model runs, and names those
in a term's autograd graph.
"""

from __future__ import annotations

import os
import sys
import traceback
from collections.abc import Callable
from typing import Any

import torch
from torch.overrides import TorchFunctionMode

__all__ = ["HiddenNonfinite"]


class HiddenNonfinite(TorchFunctionMode):
    """While active, notes each ``torch.where`` (or ``masked_fill``) that skips a NaN or inf with a gradient.

    Only calls made by the user's code count (not torch's, Pyro's, GPyTorch's or
    robusthmc's own): theirs are not the user's to change.

    Examples
    --------
    >>> import torch
    >>> x = torch.tensor(-1.0, requires_grad=True)
    >>> with HiddenNonfinite() as hidden:
    ...     y = torch.where(x > 0, x.sqrt(), 0.0)
    >>> hidden.behind(y).startswith("torch.where at")
    True
    """

    def __init__(self) -> None:
        super().__init__()
        self._found: dict[Any, str] = {}  # the grad_fn of each hiding call's result -> where

    def __torch_function__(self, func: Callable, types: Any, args: tuple = (), kwargs: Any = None) -> Any:
        kwargs = kwargs or {}
        result = func(*args, **kwargs)
        if func in _SELECTS and isinstance(result, torch.Tensor) and result.grad_fn is not None:
            name, hides = _SELECTS[func]
            if hides(*args, **kwargs) and (where := _user_frame()):
                self._found[result.grad_fn] = f"{name} at {where}"
        return result

    def behind(self, term: torch.Tensor) -> str:
        """The first noted call in ``term``'s autograd graph, as text; ``""`` if none."""
        if not self._found or term.grad_fn is None:
            return ""
        seen, pending = set(), [term.grad_fn]
        while pending:
            node = pending.pop()
            if node in seen:
                continue
            seen.add(node)
            if node in self._found:
                return self._found[node]
            pending.extend(next_node for next_node, _ in node.next_functions if next_node is not None)
        return ""


def _skipped(taken: Any, branch: Any) -> bool:
    """Whether ``branch`` is NaN or inf where ``taken`` is False, and carries a gradient."""
    if not (isinstance(branch, torch.Tensor) and branch.requires_grad and branch.is_floating_point()):
        return False
    with torch.no_grad():
        return bool((~torch.as_tensor(taken, dtype=torch.bool) & ~torch.isfinite(branch)).any())


def _where_hides(condition: Any, input: Any = None, other: Any = None, **_: Any) -> bool:
    return _skipped(condition, input) or _skipped(~torch.as_tensor(condition, dtype=torch.bool), other)


def _tensor_where_hides(self: Any, condition: Any, other: Any = None, **_: Any) -> bool:
    return _where_hides(condition, self, other)


def _masked_fill_hides(self: Any, mask: Any, *_: Any, **__: Any) -> bool:
    return _skipped(~torch.as_tensor(mask, dtype=torch.bool), self)


#: The selects that hide a branch, each with its name and its test.
_SELECTS: dict[Callable, tuple[str, Callable[..., bool]]] = {
    torch.where: ("torch.where", _where_hides),
    torch.Tensor.where: ("Tensor.where", _tensor_where_hides),
    torch.Tensor.masked_fill: ("masked_fill", _masked_fill_hides),
}


def _folders(*names: str) -> tuple[str, ...]:
    modules = [sys.modules[name] for name in names if name in sys.modules]
    return tuple(os.path.dirname(module.__file__) + os.sep for module in modules if module.__file__)


def _user_frame() -> str:
    """``file:line`` of the code that made the call now being recorded; ``""`` if a library's."""
    libraries = _folders("pyro", "robusthmc", "gpytorch", "linear_operator")
    for frame in reversed(traceback.extract_stack()):
        if frame.filename == __file__ or frame.filename.startswith(_folders("torch")):
            continue
        if frame.filename.startswith(libraries):
            return ""
        return f"{os.path.basename(frame.filename)}:{frame.lineno}"
    return ""
