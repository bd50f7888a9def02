import eventlet

eventlet.monkey_patch()  # first of all, as nameko runs: its pytest plugin no longer does it

# Session fixtures that start the real local servers, and per-test unique names.
#
# `make test` runs the suite as several pytest processes (tests/parallel.py), so each gets its
# own broker and database on free ports (a fresh database server stays fast, see
# LOCAL-STACK.md). pytest-xdist is not used: its workers talk to the controller from a
# thread, which eventlet's patching turns green, and they hang. Servers start lazily, on the
# first test that asks for them: a unit-test-only run starts none.

import os  # noqa: E402
import uuid  # noqa: E402
from collections.abc import Iterator  # noqa: E402
from pathlib import Path  # noqa: E402

import pytest  # noqa: E402

from deploy.local.servers import Broker, Database, start_on_free_port  # noqa: E402


def _keep_xdist_messaging_on_os_threads() -> None:
    """In a pytest-xdist worker, execnet reads the controller's messages on an OS thread it
    started before this patch, and hands them to the main thread through locks, events and
    queues that it creates later, from the (now green) threading module. A green primitive
    cannot be woken from another OS thread: the worker hangs at "bringing up nodes...". Give
    execnet the original primitives; everything else stays patched."""
    from eventlet.patcher import original
    from execnet import gateway_base

    threading, queue = original("threading"), original("queue")
    model = gateway_base.ThreadExecModel  # the base of xdist's main_thread_only model
    model.queue = property(lambda self: queue)  # type: ignore[assignment,method-assign]
    model.Lock = lambda self: threading.RLock()  # type: ignore[method-assign]
    model.RLock = lambda self: threading.RLock()  # type: ignore[method-assign]
    model.Event = lambda self: threading.Event()  # type: ignore[method-assign]


if os.environ.get("PYTEST_XDIST_WORKER"):
    _keep_xdist_messaging_on_os_threads()


def _tell_the_hub_of_new_pipes() -> None:
    """A socket closed while another greenthread waits in `select` on it (kafka-python does
    that) leaves that wait registered in eventlet's hub under the socket's descriptor. The
    next descriptor the OS hands out reuses the number; a pipe then clashes with the stale
    wait ("Second simultaneous read"): `subprocess.Popen` reads its error pipe through the
    hub, and starting a server failed so. Eventlet retires stale waits when told a
    descriptor was opened (`notify_opened`, done for files and sockets, not for pipes):
    tell it of pipes too. The stale wait then ends with IOClosed, as it would have."""
    from eventlet import hubs

    make_pipe = os.pipe

    def pipe_told_to_the_hub() -> tuple[int, int]:
        read_end, write_end = make_pipe()
        hubs.notify_opened(read_end)
        hubs.notify_opened(write_end)
        return read_end, write_end

    os.pipe = pipe_told_to_the_hub


_tell_the_hub_of_new_pipes()


@pytest.fixture(scope="session")
def servers_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Where this session's servers keep their logs and data (kept after the run: the last
    few sessions' logs are there to read when a test failed)."""
    return tmp_path_factory.mktemp("servers")


@pytest.fixture(scope="session")
def broker(servers_dir: Path) -> Iterator[Broker]:
    """A Kafka-protocol broker for this session (memory storage); `.bootstrap` to connect."""
    server = start_on_free_port(lambda port: Broker(port, servers_dir / "logs"))
    yield server
    server.stop()


@pytest.fixture(scope="session")
def database(servers_dir: Path) -> Iterator[Database]:
    """A MongoDB-protocol server (a one-node replica set) for this session; `.uri`."""
    data_dir = servers_dir / "mongo"
    server = start_on_free_port(lambda port: Database(port, data_dir, servers_dir / "logs"))
    yield server
    server.stop()


@pytest.fixture
def kafka_topic_prefix() -> str:
    """A prefix no other test uses, for topic and consumer group names (NAME_PREFIX)."""
    return f"t{uuid.uuid4().hex[:10]}."


@pytest.fixture
def mongo_db_name() -> str:
    """A database name no other test uses."""
    return f"test_{uuid.uuid4().hex[:12]}"
