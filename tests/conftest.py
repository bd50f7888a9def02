import eventlet

eventlet.monkey_patch()  # first of all, as nameko runs: its pytest plugin no longer does it

# Session fixtures that start the real local servers, and per-test unique names.
#
# pytest-xdist runs one session per worker, so each worker gets its own broker and database
# on free ports (intended: no test shares a server process with another worker's tests, and
# a fresh database server stays fast, see LOCAL-STACK.md). Servers start lazily, on the
# first test that asks for them: a unit-test-only run starts none.

import uuid  # noqa: E402
from collections.abc import Iterator  # noqa: E402
from pathlib import Path  # noqa: E402

import pytest  # noqa: E402

from deploy.local.servers import Broker, Database, start_on_free_port  # noqa: E402


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
