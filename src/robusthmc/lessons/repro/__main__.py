"""Run one case in this process: ``python -m robusthmc.lessons.repro MODULE:FUNCTION``.

Progress and the finding are printed as JSON lines for :func:`robusthmc.lessons.repro.run_case`.
"""

import importlib
import json
import sys
import time
from dataclasses import asdict
from typing import Any


def _run(target: str) -> None:
    module_name, function_name = target.split(":")
    case = getattr(importlib.import_module(module_name), function_name)

    def progress(**values: Any) -> None:
        print(json.dumps({"progress": values}), flush=True)

    start = time.perf_counter()
    finding = case(progress)
    print(json.dumps({"finding": {**asdict(finding), "seconds": time.perf_counter() - start}}), flush=True)


if __name__ == "__main__":
    if len(sys.argv) != 2 or sys.argv[1].count(":") != 1:
        print(
            "usage: python -m robusthmc.lessons.repro MODULE:FUNCTION (one case; "
            "robusthmc repro runs them all: robusthmc repro --help)",
            file=sys.stderr,
        )
        sys.exit(2)
    _run(sys.argv[1])
