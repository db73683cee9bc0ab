"""Run reproduction cases in child processes under a watchdog, and render their rows.

A case is a function ``case(progress) -> dict`` in a backend module; it runs in
``python -m robusthmc._repro MODULE:FUNCTION``, reports progress as JSON lines
(``{"progress": {...}}``) and its row last (``{"row": {...}}``). A case that
does not finish is killed at the timeout and reported as hung, with the last
progress it reported.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

__all__ = ["Case", "Row", "render_table", "run_case"]


@dataclass(frozen=True)
class Row:
    """One line of the ``repro`` table."""

    case: str
    backend: str
    model: str
    sampler: str
    outcome: str
    seconds: float
    message: str
    as_documented: bool

    def to_json(self) -> dict[str, Any]:
        """The row as the ``--json`` output has it."""
        return asdict(self)


@dataclass(frozen=True)
class Case:
    """A reproduction case: what runs, and how to read a hang."""

    name: str
    backend: str
    model: str
    sampler: str
    target: str  # "module:function"
    hang_expected: bool = False
    describe_hang: Callable[[dict[str, Any]], str] | None = None


#: A case not expected to hang still runs under a watchdog, with this much time at least.
SAFETY_TIMEOUT = 900.0


def run_case(case: Case, timeout: float) -> Row:
    """Run ``case`` in a child process; kill it after ``timeout`` seconds if it can hang.

    A case that is not expected to hang gets ``max(timeout, SAFETY_TIMEOUT)``.
    """
    if not case.hang_expected:
        timeout = max(timeout, SAFETY_TIMEOUT)
    start = time.perf_counter()
    command = [sys.executable, "-m", "robusthmc._repro", case.target]
    child = subprocess.Popen(
        command,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONWARNINGS": "ignore"},
    )
    try:
        stdout, stderr = child.communicate(timeout=timeout)
        hung = False
    except subprocess.TimeoutExpired:
        child.kill()
        stdout, stderr = child.communicate()
        hung = True
    except BaseException:  # Ctrl-C: leave nothing running
        child.kill()
        child.wait()
        raise
    seconds = time.perf_counter() - start
    progress: dict[str, Any] = {}
    row: dict[str, Any] | None = None
    for line in stdout.splitlines():
        try:
            message = json.loads(line)
        except json.JSONDecodeError:
            continue
        progress = message.get("progress", progress)
        row = message.get("row", row)
    base = {"case": case.name, "backend": case.backend, "model": case.model, "sampler": case.sampler}
    if hung:
        told = case.describe_hang(progress) if case.describe_hang else f"last progress: {progress}"
        return Row(
            **base,
            outcome=f"hung (stopped after {timeout:g} s)",
            seconds=seconds,
            message=told,
            as_documented=case.hang_expected,
        )
    if row is None:
        last = (stderr.strip().splitlines() or ["no output"])[-1]
        return Row(**base, outcome="crashed", seconds=seconds, message=last, as_documented=False)
    return Row(
        **base,
        outcome=row["outcome"],
        seconds=row.get("seconds", seconds),
        message=row["message"],
        as_documented=bool(row["as_documented"]) and not case.hang_expected,
    )


def render_table(rows: list[Row]) -> str:
    """A plain-text table, one row per case, the message wrapped under it."""
    header = f"{'backend':8s} {'model':24s} {'sampler':28s} {'outcome':26s} {'time':>8s}  ok"
    lines = [header, "-" * len(header)]
    for row in rows:
        ok = "yes" if row.as_documented else "NO"
        lines.append(
            f"{row.backend:8s} {row.model:24s} {row.sampler:28s} {row.outcome:26s} {row.seconds:7.1f}s  {ok}"
        )
        for text in row.message.splitlines():
            lines.append(f"{'':9s}| {text}")
    return "\n".join(lines)


def _child(target: str) -> None:
    module_name, function_name = target.split(":")
    module = __import__(module_name, fromlist=[function_name])
    function = getattr(module, function_name)

    def progress(**values: Any) -> None:
        print(json.dumps({"progress": values}), flush=True)

    start = time.perf_counter()
    row = function(progress)
    row.setdefault("seconds", time.perf_counter() - start)
    print(json.dumps({"row": row}), flush=True)


if __name__ == "__main__":
    _child(sys.argv[1])
