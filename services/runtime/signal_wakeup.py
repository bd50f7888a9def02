"""Signals that reach a service with nothing to do.

`nameko run` stops on SIGTERM (or SIGINT) from a Python signal handler, which spawns the
runner's stop in a green thread. CPython runs that handler soon after the signal, but the
green thread runs only when eventlet's hub next looks at its timers, and the hub is waiting
in epoll for its next timer or socket: since PEP 475 that wait goes on after a signal for
the time it had left, up to a minute. A service with nothing to do (the gateway between
requests: it has no consumer polling) therefore ignored SIGTERM until its next request, or
until it was killed when the grace period ran out (measured: an idle gateway still ran 10 s
after SIGTERM and was SIGKILLed; a request then made it stop at once).

`signal.set_wakeup_fd` is the standard remedy: the interpreter writes a byte to a pipe for
every signal, and a green thread waiting on that pipe wakes the hub.
"""

from __future__ import annotations

import logging
import os
import signal
from contextlib import suppress

import eventlet
from eventlet.greenthread import GreenThread
from eventlet.hubs import trampoline
from nameko.extensions import SharedExtension

log = logging.getLogger(__name__)


class _ProcessWakeup:
    """The pipe, the interpreter's wakeup fd and the green thread draining it: one per
    process however many containers share it (tests run several), set while any uses it."""

    def __init__(self) -> None:
        self.users = 0
        self.pipe: tuple[int, int] | None = None
        self.previous_fd = -1
        self.waiter: GreenThread | None = None

    def acquire(self) -> None:
        self.users += 1
        if self.pipe is None:
            self._install()

    def _install(self) -> None:
        reader, writer = os.pipe()
        os.set_blocking(reader, False)
        os.set_blocking(writer, False)
        try:
            self.previous_fd = signal.set_wakeup_fd(writer, warn_on_full_buffer=False)
        except ValueError:
            # Only the main thread may set it; a container started elsewhere (a test's)
            # receives no signals of its own anyway.
            os.close(reader)
            os.close(writer)
            log.debug("not in the main thread: signals do not wake the event loop")
            return
        self.pipe = (reader, writer)
        self.waiter = eventlet.spawn(self._drain, reader)

    def release(self) -> None:
        self.users = max(self.users - 1, 0)
        if self.users == 0 and self.pipe is not None:
            self._uninstall(self.pipe)

    def _uninstall(self, pipe: tuple[int, int]) -> None:
        if self.waiter is not None:
            self.waiter.kill()
            self.waiter = None
        with suppress(ValueError):
            signal.set_wakeup_fd(self.previous_fd)
        for fd in pipe:
            with suppress(OSError):
                os.close(fd)
        self.pipe = None

    @staticmethod
    def _drain(reader: int) -> None:
        """Waking is all it is for: the bytes (signal numbers) are read and dropped."""
        while True:
            trampoline(reader, read=True)
            with suppress(BlockingIOError):
                os.read(reader, 512)


_WAKEUP = _ProcessWakeup()


class SignalWakeup(SharedExtension):
    """One per container: while it runs, a signal wakes the event loop, so the stop that
    `nameko run` spawns on SIGTERM runs at once."""

    def setup(self) -> None:
        self._acquired = False

    def start(self) -> None:
        _WAKEUP.acquire()
        self._acquired = True

    def stop(self) -> None:
        if self._acquired:
            self._acquired = False
            _WAKEUP.release()

    kill = stop
