import signal

import pytest


@pytest.fixture(scope="session", autouse=True)
def ctrl_c_raises_keyboard_interrupt():
    """Ctrl-C tests send SIGINT: make it raise even where the suite was started with it ignored.

    A shell ignores SIGINT in the commands it starts in the background (``make test &``,
    ``nohup``), and Python then installs no KeyboardInterrupt handler.
    """
    previous = signal.getsignal(signal.SIGINT)
    if previous is signal.SIG_IGN:
        signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, previous)
