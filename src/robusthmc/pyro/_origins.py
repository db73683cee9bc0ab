"""Where a torch computation's NaN comes from: the first operation that made it, a hiding ``torch.where``.

``torch.where(x > 0, x.sqrt(), 0.0)`` is 0 at ``x = -1``, but its gradient is
NaN: the branch it does not take, ``sqrt(-1)``, is NaN, and the backward pass
multiplies that branch's derivative by a zero gradient (``0 * NaN = NaN``).
:class:`NonfiniteOrigins` records such calls while a model runs, and the first
operation that made a NaN or inf from finite inputs (``log`` of a negative number).
"""

from __future__ import annotations

import os
import sys
import traceback
from collections.abc import Callable
from typing import Any

import torch
from torch.overrides import TorchFunctionMode

from robusthmc._causes import describe_operation

__all__ = ["NonfiniteOrigins"]


class NonfiniteOrigins(TorchFunctionMode):
    """While active, notes where NaNs and infs computed from the latents come from.

    Two things, each only where the user's code made the call (not torch's, Pyro's,
    GPyTorch's or robusthmc's own, which are not the user's to change): each
    ``torch.where`` (or ``masked_fill``) that skips a NaN or inf with a gradient, and
    each operation that makes a NaN or inf from finite inputs, carried along to every
    result computed from it.

    Examples
    --------
    >>> import torch
    >>> x = torch.tensor(-1.0, requires_grad=True)
    >>> with NonfiniteOrigins() as origins:
    ...     y = torch.where(x > 0, x.sqrt(), 0.0)
    ...     z = (x + 0.5).log() * 2
    >>> origins.hiding_select(y), origins.first_nonfinite(z)  # doctest: +ELLIPSIS
    ('torch.where at <doctest ...>:2', '`z = (x + 0.5).log() * 2` gives nan (<doctest ...>:3)')
    """

    def __init__(self) -> None:
        super().__init__()
        self._hiding: dict[Any, str] = {}  # the grad_fn of each hiding call's result -> where
        self._began: dict[int, tuple[torch.Tensor, str]] = {}  # id of a non-finite result -> (it, origin)

    def __torch_function__(self, func: Callable, types: Any, args: tuple = (), kwargs: Any = None) -> Any:
        kwargs = kwargs or {}
        result = func(*args, **kwargs)
        if not (isinstance(result, torch.Tensor) and result.grad_fn is not None):
            return result
        if func in _SELECTS:
            name, hides = _SELECTS[func]
            if hides(*args, **kwargs) and (frame := _user_frame()):
                self._hiding[result.grad_fn] = f"{name} at {frame[0]}"
        if result.is_floating_point() and not _finite(result):
            inputs = _tensors(*args, *kwargs.values())
            carried = next((self._began[id(x)][1] for x in inputs if id(x) in self._began), None)
            if carried is None and all(map(_finite, inputs)) and (frame := _user_frame()):
                kind = "nan" if bool(result.isnan().any()) else "an infinity"
                carried = describe_operation(frame[1], frame[0], kind)
            if carried:
                self._began[id(result)] = (result, carried)
        return result

    def hiding_select(self, term: torch.Tensor) -> str:
        """The first noted hiding select in ``term``'s autograd graph, as text; ``""`` if none."""
        if not self._hiding or term.grad_fn is None:
            return ""
        seen, pending = set(), [term.grad_fn]
        while pending:
            node = pending.pop()
            if node in seen:
                continue
            seen.add(node)
            if node in self._hiding:
                return self._hiding[node]
            pending.extend(next_node for next_node, _ in node.next_functions if next_node is not None)
        return ""

    def first_nonfinite(self, term: torch.Tensor) -> str:
        """The user's operation that first made ``term``'s NaN or inf, as text; ``""`` if unknown."""
        began = self._began.get(id(term))
        return began[1] if began is not None and began[0] is term else ""


def _tensors(*values: Any) -> list[torch.Tensor]:
    """The tensors among ``values`` and in their lists and tuples (a call's inputs)."""
    found = []
    for value in values:
        if isinstance(value, torch.Tensor):
            found.append(value)
        elif isinstance(value, (list, tuple)):
            found.extend(_tensors(*value))
    return found


def _finite(value: torch.Tensor) -> bool:
    with torch.no_grad():
        return not value.is_floating_point() or bool(torch.isfinite(value).all())


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


def _user_frame() -> tuple[str, str] | None:
    """``(file:line, source)`` of the code that made the call being recorded; ``None`` if a library's."""
    libraries = _folders("pyro", "robusthmc", "gpytorch", "linear_operator")
    for frame in reversed(traceback.extract_stack()):
        if frame.filename == __file__ or frame.filename.startswith(_folders("torch")):
            continue
        if frame.filename.startswith(libraries):
            return None
        return f"{os.path.basename(frame.filename)}:{frame.lineno}", frame.line or ""
    return None
