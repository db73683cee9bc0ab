"""Progress bars in tests: the order in which bars close and the guard's warnings are raised."""

import warnings

import tqdm.std

import robusthmc


def record_bars_and_warnings(monkeypatch):
    """A list that gets ``"bar closed"`` as each tqdm bar closes and ``"warning"`` per NonFiniteWarning."""
    events = []
    close = tqdm.std.tqdm.close
    monkeypatch.setattr(tqdm.std.tqdm, "close", lambda self: events.append("bar closed") or close(self))
    warn = warnings.warn

    def noted_warn(message, *args, **kwargs):
        if isinstance(message, robusthmc.NonFiniteWarning):
            events.append("warning")
        return warn(message, *args, **kwargs)

    monkeypatch.setattr(warnings, "warn", noted_warn)
    return events
