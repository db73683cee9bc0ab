"""Run make targets on two workers, each taking the next target as soon as it is free.

    python tools/run_jobs.py lint numpyro-test_identity test-pyro ...

``make test`` runs its jobs so: the targets in the order given (the longest first), a
target's output printed whole when it ends, and after a failure no new one started.
Each worker keeps its own JAX compilation cache (``.jax-cache/worker-N``): the programs
one job compiled are read back by the next job on that worker, and no two processes
ever write one cache at once (JAX's cache locks only with a size limit, and then scans
the whole folder at every write).
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from collections import deque
from pathlib import Path

WORKERS = 2


def run(targets: list[str]) -> int:
    """Run ``targets``; 0 if each passed, else 1."""
    pending = deque(targets)
    failed: list[str] = []
    lock = threading.Lock()
    make = os.environ.get("MAKE", "make")

    def work(number: int) -> None:
        cache = Path(".jax-cache", f"worker-{number}").resolve()
        env = {**os.environ, "JAX_COMPILATION_CACHE_DIR": str(cache)}
        while True:
            with lock:
                if failed or not pending:
                    return
                target = pending.popleft()
            start = time.perf_counter()
            done = subprocess.run(
                [make, "--no-print-directory", target],
                env=env,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
            )
            with lock:
                print(done.stdout, end="")
                print(f"[{target}: {time.perf_counter() - start:.0f} s, worker {number}]", flush=True)
                if done.returncode != 0:
                    failed.append(target)

    threads = [threading.Thread(target=work, args=(number,), daemon=True) for number in range(WORKERS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        while thread.is_alive():
            thread.join(0.5)
    if failed:
        print(f"failed: {' '.join(failed)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    try:
        sys.exit(run(sys.argv[1:]))
    except KeyboardInterrupt:  # the jobs got the same Ctrl-C and stop on their own
        print("interrupted", file=sys.stderr)
        sys.exit(130)
