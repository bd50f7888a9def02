"""The test process's eventlet patching (tests/conftest.py): a server can be started while
another greenthread's `select` still waits on a socket that was closed under it."""

from __future__ import annotations

import select
import socket
import subprocess
import sys

import eventlet


def test_a_process_starts_after_a_socket_closed_under_a_waiting_select() -> None:
    ours, theirs = socket.socketpair()
    descriptor = ours.fileno()
    outcome: list[BaseException | None] = []

    def wait_for_data() -> None:
        try:
            select.select([descriptor], [], [], 5)
            outcome.append(None)
        except OSError as error:  # eventlet's IOClosed
            outcome.append(error)

    waiter = eventlet.spawn(wait_for_data)
    eventlet.sleep(0.05)  # the wait is registered in the hub
    ours.close()  # silently, for the hub: the wait stays registered
    process = subprocess.Popen([sys.executable, "-c", "pass"])  # pipes reuse the number
    assert process.wait(timeout=30) == 0
    waiter.wait()
    assert isinstance(outcome[0], OSError)  # the stale wait ended instead of lingering
    theirs.close()
