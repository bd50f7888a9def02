"""The test process's eventlet patching (tests/conftest.py): a server can be started while
another greenthread's `select` still waits on a socket that was closed under it."""

from __future__ import annotations

import os
import select
import socket
import subprocess
import sys

import eventlet
from eventlet.patcher import original

#: The OS's own calls: eventlet's `os.close` would tell the hub, and retire the stale wait
#: this test needs to stay registered until Popen's pipe takes its number.
unpatched_os = original("os")


def make_lowest_free(descriptor: int) -> list[int]:
    """Occupies every free descriptor below `descriptor`, so that the next one the OS hands
    out is `descriptor` whatever else the process closed meanwhile; returns the fillers.
    Nothing here yields to the hub, so no greenthread can take `descriptor` first."""
    fillers = []
    while (filler := unpatched_os.open(os.devnull, os.O_RDONLY)) != descriptor:
        assert filler < descriptor, "another thread took the descriptor under test"
        fillers.append(filler)
    unpatched_os.close(filler)  # `descriptor` itself: free again, and now the lowest free one
    return fillers


def test_a_process_starts_after_a_socket_closed_under_a_waiting_select() -> None:
    elsewhere = unpatched_os.open(os.devnull, os.O_RDONLY)  # some other part's descriptor
    ours, theirs = socket.socketpair()
    descriptor = ours.fileno()
    outcome: list[BaseException | None] = []

    def wait_for_data() -> None:
        try:
            select.select([descriptor], [], [], 30)
            outcome.append(None)
        except OSError as error:  # eventlet's IOClosed
            outcome.append(error)

    waiter = eventlet.spawn(wait_for_data)
    eventlet.sleep(0.05)  # the wait is registered in the hub
    unpatched_os.close(elsewhere)  # as other greenthreads do meanwhile: a lower number frees
    ours.close()  # silently, for the hub: the wait stays registered
    fillers = make_lowest_free(descriptor)
    try:
        # Popen's error pipe now reuses the number the stale wait is registered under.
        process = subprocess.Popen([sys.executable, "-c", "pass"])
        assert process.wait(timeout=30) == 0
    finally:
        for filler in fillers:
            unpatched_os.close(filler)
    waiter.wait()
    assert isinstance(outcome[0], OSError)  # the stale wait ended instead of lingering
    theirs.close()
