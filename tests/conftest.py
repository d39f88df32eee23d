"""Fixtures shared by the test modules (the plugin in mongoengine_async.testing
gives the replica set and the async ones)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any
from uuid import uuid4

import pymongo
import pytest
import pytest_asyncio
from bson import ObjectId
from pymongo import monitoring

import mongoengine_async
from mongoengine_async import signals
from mongoengine_async.connection import connect_async, disconnect_async
from mongoengine_async.testing import CommandLog, fresh_database

# The event loop the tests run on: asyncio's own, or uvloop's with --loop=uvloop
# (make test-uvloop), for pytest-asyncio's loops, asyncio.run() and the scripts
# of run_script() alike.
_LOOP_ENV = "MONGOENGINE_ASYNC_TEST_LOOP"
_UVLOOP_POLICY = (
    "import asyncio, uvloop; asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())\n"
)


def pytest_addoption(parser: pytest.Parser) -> None:
    """``--loop=asyncio|uvloop``: the event loop every test runs on."""
    parser.addoption(
        "--loop",
        choices=("asyncio", "uvloop"),
        default="asyncio",
        help="the event loop the tests run on (uvloop: make test-uvloop)",
    )


def pytest_configure(config: pytest.Config) -> None:
    """Under ``--loop=uvloop``, uvloop's policy makes every new loop (also in
    threads and in run_script()'s processes, told by the environment)."""
    if config.getoption("loop") == "uvloop":
        import uvloop

        asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
        os.environ[_LOOP_ENV] = "uvloop"


def pytest_report_header(config: pytest.Config) -> str:
    """The event loop of the run, in pytest's header."""
    return f"event loop: {config.getoption('loop')}"


def run_script(script: str, mongodb_uri: str) -> subprocess.CompletedProcess[str]:
    """Run ``script`` in a Python process of its own (warnings ignored), its
    ``MONGODB_URI`` set to ``mongodb_uri``; the finished process, which must
    have exited with 0 (for code whose loops end in ways that would disturb
    other tests: collected later, what a closed loop left fails in odd ways)."""
    result = subprocess.run(
        [sys.executable, "-W", "ignore", "-c", loop_prelude() + script],
        env={**os.environ, "MONGODB_URI": mongodb_uri},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return result


def loop_prelude() -> str:
    """What a script run by run_script() (or a test suite run in a process of
    its own, as its conftest.py) runs first: uvloop's policy under
    ``--loop=uvloop``, nothing otherwise."""
    return _UVLOOP_POLICY if os.environ.get(_LOOP_ENV) == "uvloop" else ""


@pytest.fixture
def sync_command_log() -> CommandLog:
    """The commands sent on the ``sync_default`` connection of this test."""
    return CommandLog()


@contextlib.contextmanager
def fresh_sync_default(
    mongodb_uri: str, *event_listeners: Any, alias: str = "default"
) -> Iterator[Any]:
    """``alias`` ("default") registered with connect() on a fresh database;
    yields the (sync) database and drops it afterwards."""
    name = f"test_sync_{uuid4().hex[:12]}"
    mongoengine_async.connect(
        db=name,
        alias=alias,
        host=mongodb_uri,
        uuidRepresentation="standard",
        event_listeners=list(event_listeners),
    )
    database = mongoengine_async.get_db(alias)
    try:
        yield database
    finally:
        drop_database_sync(database.client, name)
        mongoengine_async.disconnect(alias)


def drop_database_sync(client: pymongo.MongoClient[Any], name: str) -> None:
    """:func:`mongoengine_async.testing.drop_database` for a sync client: a
    collection at a time, as ``dropDatabase`` waits for a journal commit."""
    database = client[name]
    for system in (False, True):
        for collection in database.list_collection_names():
            if collection.startswith("system.") == system:
                database.drop_collection(collection)


@contextlib.contextmanager
def sync_alias_beside(alias: str, async_alias: str, mongodb_uri: str) -> Iterator[str]:
    """``alias`` registered with connect() on the database of ``async_alias``
    (the same documents and files, read both ways); yields ``alias``."""
    mongoengine_async.connect(
        db=mongoengine_async.get_async_db(async_alias).name,
        alias=alias,
        host=mongodb_uri,
        uuidRepresentation="standard",
    )
    try:
        yield alias
    finally:
        mongoengine_async.disconnect(alias)


@contextlib.asynccontextmanager
async def database_of_either_kind(
    mongodb_uri: str, alias: str, prefix: str
) -> AsyncIterator[str]:
    """A fresh database name for ``alias``, which the test connects with
    connect() or connect_async() (or both, one after the other); the alias
    is disconnected, of whichever kind it is, and the database dropped
    afterwards."""
    name = f"{prefix}_{uuid4().hex[:12]}"
    try:
        yield name
    finally:
        if mongoengine_async.is_sync_connection(alias):
            mongoengine_async.disconnect(alias)
        await disconnect_async(alias)
        client: pymongo.AsyncMongoClient[Any] = pymongo.AsyncMongoClient(mongodb_uri)
        try:
            await client.drop_database(name)
        finally:
            await client.close()


class Held:
    """The command held by :func:`held_on_server`."""

    def __init__(
        self, admin: Any, app_name: str, commands: list[str], entered_before: int
    ) -> None:
        self._admin = admin
        self._app_name = app_name
        self._commands = commands
        self._entered_before = entered_before

    async def reached_server(self, max_time_ms: int = 30_000) -> None:
        """Return once the server holds the command (its fail point entered):
        on a slow machine the client may send it well after the test started
        it, so a fixed wait does not tell. Raises ExecutionTimeout if it does
        not within ``max_time_ms``."""
        await self._admin.command(
            {
                "waitForFailPoint": "failCommand",
                "timesEntered": self._entered_before + 1,
                "maxTimeMS": max_time_ms,
            }
        )

    async def ended_on_server(self) -> None:
        """Return once the server runs no such command of the client (the
        held ones, once they reached the server, were applied or failed)."""
        deadline = time.monotonic() + 30
        while await self.still_on_server():
            assert time.monotonic() < deadline, f"{self._commands} still run"
            await asyncio.sleep(0.02)

    async def still_on_server(self) -> bool:
        """Whether the server still runs such a command of the client: true
        after a cancellation that did not wait for the held write."""
        pipeline = [
            {"$currentOp": {"allUsers": True}},
            {
                "$match": {
                    "appName": self._app_name,
                    "$or": [
                        {f"command.{command}": {"$exists": True}}
                        for command in self._commands
                    ],
                    "command.comment": {"$ne": "held_on_server"},  # (this one)
                }
            },
        ]
        cursor = await self._admin.aggregate(pipeline, comment="held_on_server")
        return bool(await cursor.to_list(None))


@contextlib.asynccontextmanager
async def held_on_server(
    app_name: str,
    command: str,
    block_ms: int,
    error_code: int | None = None,
    skip: int = 0,
    then: str | None = None,
    admin: Any = None,
) -> AsyncIterator[Held]:
    """The next ``command`` of the client named ``app_name`` waits ``block_ms``
    on the server first (the ``failCommand`` fail point: one for the whole
    server, so tests using it need a server of their own), then fails with
    ``error_code`` if given; with ``skip``, every one after the first
    ``skip`` ones, until the block ends; with ``then``, one ``then`` command
    too (the next two commands of either name). Gives a :class:`Held`, to
    wait until the server holds the (first such) command. The fail point is
    set (and waited for) through ``admin``, by default the database of alias
    "default"'s client (whose commands take a pooled session, perhaps the
    one the held command would have taken)."""
    if admin is None:
        admin = mongoengine_async.get_async_connection().admin
    commands = [command] if then is None else [command, then]
    fail_point = {"configureFailPoint": "failCommand"}
    data: dict[str, Any] = {
        "failCommands": commands,
        "blockConnection": True,
        "blockTimeMS": block_ms,
    }
    if error_code is not None:
        data["errorCode"] = error_code
    configured = await admin.command(
        {
            **fail_point,
            "mode": {"skip": skip} if skip else {"times": len(commands)},
            "data": {**data, "appName": app_name},
        }
    )
    try:
        yield Held(admin, app_name, commands, configured["count"])
    finally:
        await admin.command({**fail_point, "mode": "off"})


async def commit_unknown_once(admin: Any, app_name: str) -> None:
    """The next ``commitTransaction`` of the client named ``app_name`` fails
    with MaxTimeMSExpired (50): a result unknown, which PyMongo does not
    retry. Set through ``admin``; turned off by the caller."""
    await admin.command(
        {
            "configureFailPoint": "failCommand",
            "mode": {"times": 1},
            "data": {
                "failCommands": ["commitTransaction"],
                "errorCode": 50,  # MaxTimeMSExpired: unknown, not retried
                "appName": app_name,
            },
        }
    )


@pytest.fixture
def sync_default(mongodb_uri, sync_command_log):
    """:func:`fresh_sync_default` for one test, its commands logged."""
    with fresh_sync_default(mongodb_uri, sync_command_log) as database:
        yield database


@pytest.fixture(scope="module")
def module_sync_default(mongodb_uri):
    """:func:`fresh_sync_default` shared by a module's tests (that only read)."""
    with fresh_sync_default(mongodb_uri) as database:
        yield database


@pytest_asyncio.fixture
async def other_alias(async_alias: str, mongodb_uri: str) -> AsyncIterator[str]:
    """A second async alias, "other", on its own fresh database."""
    async with fresh_database("other", mongodb_uri) as alias:
        yield alias


@pytest.fixture(scope="module")
def matrix_database(mongodb_uri: str) -> Iterator[tuple[Any, dict[type, list]]]:
    """A fresh database holding the documents of the equivalence matrices
    (tests/test_*_matrix.py: every field kind, and renamed fields with a string
    primary key), which their sync alias points to: a sync client's database,
    and each class's keys (with one unknown)."""
    from test_loading import LdEverything
    from test_queryset_matrix import SYNC
    from test_sync_loader import store_documents
    from test_sync_queryset_matrix import MxRenamed, store_renamed

    name = f"test_matrix_{uuid4().hex[:12]}"
    client: pymongo.MongoClient = pymongo.MongoClient(
        mongodb_uri, uuidRepresentation="standard"
    )
    mongoengine_async.connect(db=name, host=mongodb_uri, uuidRepresentation="standard")
    try:
        keys = {
            LdEverything: [d.pk for d in store_documents(client[name])] + [ObjectId()],
            MxRenamed: [*store_renamed(), "unknown"],
        }
    finally:
        mongoengine_async.disconnect()
    mongoengine_async.connect(
        db=name, alias=SYNC, host=mongodb_uri, uuidRepresentation="standard"
    )
    try:
        yield client[name], keys
    finally:
        mongoengine_async.disconnect(SYNC)
        client.drop_database(name)
        client.close()


@pytest_asyncio.fixture
async def matrix_keys(
    matrix_database: tuple[Any, dict[type, list]], mongodb_uri: str
) -> AsyncIterator[dict[type, list]]:
    """``matrix_database``'s keys, the alias "default" connected async to it."""
    database, keys = matrix_database
    await connect_async(
        db=database.name, host=mongodb_uri, uuidRepresentation="standard"
    )
    try:
        yield keys
    finally:
        await disconnect_async()


class TaskCanceller(monitoring.CommandListener):
    """A listener cancelling the task that sends a command, as it starts (as
    the loop's end cancels the task a delete goes on in): ``cancelled``."""

    cancelled = 0

    def cancel_task(self) -> None:
        """Cancel the task sending the command started (count it)."""
        self.cancelled += 1
        task = asyncio.current_task()
        assert task is not None
        task.cancel()

    def started(self, event: monitoring.CommandStartedEvent) -> None:
        pass

    def succeeded(self, event: monitoring.CommandSucceededEvent) -> None:
        pass

    def failed(self, event: monitoring.CommandFailedEvent) -> None:
        pass


class CancelAtCleanupRead(TaskCanceller):
    """Once a delete of ``collection`` failed, cancels the task sending the
    next find of it (a delete's cleanup read: its loop's end cancelling the
    task the delete goes on in) as it starts. (A reply's event names no
    collection: its delete is known by the request id it started with.)"""

    def __init__(self, collection: str) -> None:
        self.collection = collection
        self.armed = False
        self.deletes = 0
        self.delete_ids: set[int] = set()  # (request ids of its deletes)

    def started(self, event: monitoring.CommandStartedEvent) -> None:
        name = event.command_name
        if name == "delete" and event.command["delete"] == self.collection:
            self.deletes += 1
            self.delete_ids.add(event.request_id)
        if self.armed and name == "find" and event.command["find"] == self.collection:
            self.armed = False
            self.cancel_task()

    def failed(self, event: monitoring.CommandFailedEvent) -> None:
        if event.request_id in self.delete_ids and not self.cancelled:
            self.armed = True


class CancelAtAppliedCleanupRead(CancelAtCleanupRead):
    """:class:`CancelAtCleanupRead` once a delete of ``collection`` answered
    with a write concern error (applied: its reply is no failure)."""

    def succeeded(self, event: monitoring.CommandSucceededEvent) -> None:
        if event.request_id in self.delete_ids and "writeConcernError" in event.reply:
            self.armed = not self.cancelled


@contextlib.contextmanager
def receiving(signal: Any, receiver: Any, *senders: type) -> Iterator[None]:
    """``receiver`` connected to ``signal`` for each of ``senders`` inside
    the block (disconnected after, whatever the block raised)."""
    for sender in senders:
        signal.connect(receiver, sender=sender)
    try:
        yield
    finally:
        for sender in senders:
            signal.disconnect(receiver, sender=sender)


@contextlib.contextmanager
def post_deletes(*senders: type) -> Iterator[list[Any]]:
    """The ids of the documents of ``senders`` that ``post_delete`` is sent
    for inside the block, in order."""
    sent: list[Any] = []

    def post(sender: Any, document: Any, **kwargs: Any) -> None:
        sent.append(document.pk)

    with receiving(signals.post_delete, post, *senders):
        yield sent
