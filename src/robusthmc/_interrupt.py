"""Ctrl-C during a run whose draws live in compiled code: noted at once, acted on where nothing is lost.

numpyro collects draws into buffers that its compiled step replaces each
iteration; a ``KeyboardInterrupt`` raised between the step and the
assignment of its result would lose them.  During a guarded run the first
Ctrl-C is therefore only noted, and :func:`raise_if_interrupted` raises it at
the next safe point (after a transition, or when a compiled run returns).
A second Ctrl-C interrupts at once, as Python would.
"""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterator
from typing import Any

__all__ = ["deferred_interrupt", "interrupt_requested", "raise_if_interrupted"]

_requested = False


@contextlib.contextmanager
def deferred_interrupt() -> Iterator[None]:
    """Within this block the first SIGINT is noted, not raised (main thread, default handler only)."""
    global _requested
    if (
        threading.current_thread() is not threading.main_thread()
        or signal.getsignal(signal.SIGINT) is not signal.default_int_handler
    ):
        yield  # someone else handles Ctrl-C here: leave it to them
        return

    def note(signum: int, frame: Any) -> None:
        global _requested
        if _requested:  # the second Ctrl-C: stop at once
            signal.signal(signal.SIGINT, signal.default_int_handler)
            raise KeyboardInterrupt
        _requested = True

    signal.signal(signal.SIGINT, note)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, signal.default_int_handler)
        _requested = False


def interrupt_requested() -> bool:
    """Whether a Ctrl-C was noted and not yet raised."""
    return _requested


def raise_if_interrupted() -> None:
    """Raise the noted Ctrl-C as a ``KeyboardInterrupt`` (a safe point)."""
    global _requested
    if _requested:
        _requested = False
        raise KeyboardInterrupt
