"""Running a case in a child process under a watchdog, and the table of what the cases found."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

__all__ = ["SAFETY_TIMEOUT", "Case", "ReproRow", "render_table", "run_case"]


@dataclass(frozen=True)
class ReproRow:
    """One line of the ``repro`` table: the case and its finding."""

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


def run_case(case: Case, timeout: float) -> ReproRow:
    """Run ``case`` in a child process; kill it after ``timeout`` seconds if it can hang.

    A case that is not expected to hang gets ``max(timeout, SAFETY_TIMEOUT)``.
    """
    if not case.hang_expected:
        timeout = max(timeout, SAFETY_TIMEOUT)
    start = time.perf_counter()
    command = [sys.executable, "-m", "robusthmc.lessons.repro", case.target]
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
    progress: dict[str, Any] = {}
    finding: dict[str, Any] | None = None
    for line in stdout.splitlines():
        try:
            message = json.loads(line)
        except json.JSONDecodeError:
            continue
        progress = message.get("progress", progress)
        finding = message.get("finding", finding)
    row = ReproRow(
        case.name, case.backend, case.model, case.sampler, "", time.perf_counter() - start, "", False
    )
    if hung:
        told = case.describe_hang(progress) if case.describe_hang else f"last progress: {progress}"
        return _replace(
            row, outcome=f"hung (stopped after {timeout:g} s)", message=told, as_documented=case.hang_expected
        )
    if finding is None:
        last = (stderr.strip().splitlines() or ["no output"])[-1]
        return _replace(row, outcome="crashed", message=last)
    documented = bool(finding["as_documented"]) and not case.hang_expected
    return _replace(
        row,
        outcome=finding["outcome"],
        seconds=finding["seconds"],
        message=finding["message"],
        as_documented=documented,
    )


def _replace(row: ReproRow, **changes: Any) -> ReproRow:
    return ReproRow(**{**asdict(row), **changes})


def render_table(rows: list[ReproRow]) -> str:
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
