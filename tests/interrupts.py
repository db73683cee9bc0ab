"""Ctrl-C in tests: a real SIGINT sent to this process from another thread."""

import contextlib
import os
import signal
import threading
import time


@contextlib.contextmanager
def interrupt_after(seconds):
    """Send this process SIGINT (Ctrl-C) after ``seconds`` from another thread; yields the send time."""
    sent = []

    def send():
        sent.append(time.perf_counter())
        os.kill(os.getpid(), signal.SIGINT)

    timer = threading.Timer(seconds, send)
    timer.start()
    try:
        yield sent
    finally:
        timer.cancel()
