"""The signal wakeup (services/runtime/signal_wakeup.py): one pipe per process, set as the
interpreter's wakeup fd while any container uses it, the previous one restored after.
That a signal then wakes an idle service is shown by a real one: the fault test
`test_sigterm_stops_an_idle_gateway_by_itself`."""

from __future__ import annotations

import signal

from services.runtime.signal_wakeup import _ProcessWakeup


def current_wakeup_fd() -> int:
    fd = signal.set_wakeup_fd(-1)
    signal.set_wakeup_fd(fd)
    return fd


def test_containers_share_one_pipe_and_the_last_to_stop_restores_the_previous_fd():
    before = current_wakeup_fd()
    wakeup = _ProcessWakeup()
    wakeup.acquire()
    assert wakeup.pipe is not None
    reader, writer = wakeup.pipe
    assert current_wakeup_fd() == writer
    wakeup.acquire()  # a second container in the same process
    assert wakeup.pipe == (reader, writer)
    wakeup.release()
    assert current_wakeup_fd() == writer  # one container still runs
    wakeup.release()
    assert wakeup.pipe is None
    assert current_wakeup_fd() == before
