"""A save, delete, modify or update of an instance cancelled while its write
is on its way: the write goes on (the server may be applying it), and the
instance's turn ends once it settled, so the next write of the instance is
applied after it, never overwritten by it; the caller sees the cancellation
at once. With the server's failCommand fail point blocking the first write
(retryable writes off: with them, a next write on the same pooled session
would make the server drop the late one, hiding the race), also in
transactions and under a cancellation delivered at every await (anyio)."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import gc
import subprocess
import sys
import textwrap
import threading
import time
import warnings
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any
from unittest import mock
from uuid import uuid4

import anyio
import pymongo
import pytest
from bson import ObjectId
from mongoengine.context_managers import switch_db
from mongoengine.queryset.base import BaseQuerySet as MongoEngineQuerySet
from pymongo import AsyncMongoClient, ReadPreference, monitoring
from pymongo.asynchronous.topology import Topology
from pymongo.errors import PyMongoError

import mongoengine_async
from conftest import Held, held_on_server, run_script
from mongoengine_async import (
    CASCADE,
    NULLIFY,
    CachedReferenceField,
    Document,
    DynamicDocument,
    EmbeddedDocument,
    EmbeddedDocumentField,
    FileField,
    IntField,
    ListField,
    OperationError,
    ReferenceField,
    StringField,
    async_run_in_transaction,
    async_run_transaction,
    connect_async,
    context,
    detached,
    get_async_connection,
    get_async_db,
    gridfs,
    queryset,
    signals,
    to_bson,
)
from mongoengine_async.connection import disconnect_all_async
from mongoengine_async.context import current_session
from mongoengine_async.testing import CommandLog, fresh_database

BLOCK_MS = 700


class CwInner(EmbeddedDocument):
    x = IntField()


class CwDoc(Document):
    a = IntField()
    b = IntField()
    inner = EmbeddedDocumentField(CwInner)


class CwDynamic(DynamicDocument):
    name = StringField()


class CwAuthor(Document):
    name = StringField()
    age = IntField()


class CwBook(Document):
    author = CachedReferenceField(CwAuthor, fields=["name"])


class CwListed(Document):
    """A document with a list of embedded documents, copied by CwListedBook."""

    name = StringField()
    items = ListField(EmbeddedDocumentField(CwInner))


class CwListedBook(Document):
    listed = CachedReferenceField(CwListed, fields=["name"])


class CwFiled(Document):
    data = FileField(collection_name="cw_files")


class CwLongId(Document):
    """Ids of any length (a URL, say)."""

    id = StringField(primary_key=True)


class CwRuled(Document):
    """A CwDoc with a delete rule (CwReferrer's): its deletes cascade."""

    a = IntField()
    b = IntField()


class CwReferrer(Document):
    doc = ReferenceField(CwRuled, reverse_delete_rule=NULLIFY)


class CwFiledRoot(Document):
    """Its deletes cascade to CwFiledChild; both hold files."""

    data = FileField(collection_name="cw_files")


class CwFiledChild(Document):
    parent = ReferenceField(CwFiledRoot, reverse_delete_rule=CASCADE)
    data = FileField(collection_name="cw_files")


class CwShelf(Document):
    """A document with a file, whose delete cascades to CwCopy's."""

    scan = FileField(collection_name="cw_files")


class CwCopy(Document):
    shelf = ReferenceField(CwShelf, reverse_delete_rule=CASCADE)
    scan = FileField(collection_name="cw_files")


class CwRack(Document):
    """A document with a file, whose delete cascades to CwRackCopy's."""

    scan = FileField(collection_name="cw_files")


class CwRackCopy(Document):
    """Its files in a bucket of their own (a fail point holds their deletes
    alone)."""

    rack = ReferenceField(CwRack, reverse_delete_rule=CASCADE)
    scan = FileField(collection_name="cw_copy_files")


@asynccontextmanager
async def own_app(mongodb_uri: str, **options: Any) -> AsyncIterator[str]:
    """Alias "default" on a client of its own application name (the fail
    point fails its commands only), without retryable writes, and with
    ``options``."""
    name = f"cw-{uuid4().hex[:8]}"
    try:
        async with fresh_database(
            "default", mongodb_uri, appname=name, retryWrites=False, **options
        ):
            yield name
    finally:
        await disconnect_all_async()


@pytest.fixture
async def app(mongodb_uri) -> AsyncIterator[str]:
    """:func:`own_app`, for one test."""
    async with own_app(mongodb_uri) as name:
        yield name


def blocked(app_name: str, command: str) -> AbstractAsyncContextManager[Held]:
    """The next ``command`` of the client waits BLOCK_MS on the server first."""
    return held_on_server(app_name, command, BLOCK_MS)


async def cancel_once_sent(
    held: Held, work: Callable[[], Awaitable[Any]], anyio: bool = False
) -> None:
    """Run ``work`` in a task, cancel it once its write is ``held`` on the
    server (at every await until it ends, as an anyio cancel scope does, if
    ``anyio``), and check the cancellation came at once: while the server
    still holds the write."""
    task = asyncio.ensure_future(work())
    await held.reached_server()
    assert not task.done()
    task.cancel()
    while anyio and not task.done():
        task.cancel()
        await asyncio.sleep(0)
    with pytest.raises(asyncio.CancelledError):
        await task
    assert await held.still_on_server()


async def stored(document: Document) -> Any:
    return await CwDoc._get_collection().find_one({"_id": document.pk})


def save_a(document: CwDoc, value: int) -> Callable[[], Awaitable[Any]]:
    def save() -> Awaitable[Any]:
        document.a = value
        return document.async_save()

    return save


CANCELLED = {
    "save": ("update", lambda d: save_a(d, 1)),
    "modify": ("findAndModify", lambda d: lambda: d.async_modify(set__a=1)),
    "update": ("update", lambda d: lambda: d.async_update(set__a=1)),
    "delete": ("delete", lambda d: d.async_delete),
}


@pytest.mark.parametrize("kind", list(CANCELLED))
@pytest.mark.parametrize("anyio", [False, True], ids=["asyncio", "anyio"])
async def test_the_next_save_comes_after_a_cancelled_write(app, kind, anyio):
    document = await CwDoc(a=0, b=0).async_save()
    command, work = CANCELLED[kind]
    async with blocked(app, command) as held:
        await cancel_once_sent(held, work(document), anyio)
        document.a = 2
        await document.async_save()  # waits until the cancelled write settled
    expected = {"_id": document.pk, "a": 2}
    if kind != "delete":  # (else the save upserts its changes alone)
        expected["b"] = 0
    assert await stored(document) == expected
    assert "_async_save_turns" not in document.__dict__


async def test_the_same_task_saving_again_waits_too(app):
    """A save timed out in the saving task (``wait_for``'s own task on Python
    3.12+, a cancel scope) is not taken for that task's save in flight."""
    document = await CwDoc(a=0, b=0).async_save()
    async with blocked(app, "update") as held:
        document.a = 1
        save = asyncio.ensure_future(document.async_save())
        await held.reached_server()
        save.cancel()
        with pytest.raises(asyncio.CancelledError):
            await save
        # A task that caught it saves again: as any other, it waits for it.
        document.a = 2
        await document.async_save()
    assert await stored(document) == {"_id": document.pk, "a": 2, "b": 0}


async def test_a_cancelled_save_that_landed_is_saved(app):
    """The settled write's outcome decides: applied, its changes are saved
    (an embedded document's too); those made meanwhile stay for the next save."""
    document = await CwDoc(a=0, b=0, inner=CwInner(x=0)).async_save()
    async with blocked(app, "update") as held:
        document.a = 1
        document.inner.x = 1
        save = asyncio.ensure_future(document.async_save())
        await held.reached_server()
        save.cancel()
        with pytest.raises(asyncio.CancelledError):
            await save
        document.b = 5  # while the write is on its way: not sent by it
        while "_async_save_turns" in document.__dict__:
            await asyncio.sleep(0.01)
    assert document._get_changed_fields() == ["b"]
    assert await stored(document) == {
        "_id": document.pk,
        "a": 1,
        "b": 0,
        "inner": {"x": 1},
    }
    await document.async_save()
    assert await stored(document) == document.to_mongo().to_dict()


async def test_a_cancelled_save_that_failed_gives_its_changes_back(app):
    document = await CwDoc(a=0, b=0, inner=CwInner(x=0)).async_save()
    async with held_on_server(app, "update", BLOCK_MS, error_code=2) as held:
        document.a = 1
        document.inner.x = 1
        await cancel_once_sent(held, document.async_save)
        document.b = 5
        while "_async_save_turns" in document.__dict__:
            await asyncio.sleep(0.01)
    assert sorted(document._get_changed_fields()) == ["a", "b", "inner.x"]
    await document.async_save()
    assert await stored(document) == document.to_mongo().to_dict()


async def test_a_new_document_cancelled_once_sent_is_saved_once(app):
    document = CwDoc(a=1)
    async with blocked(app, "insert") as held:
        await cancel_once_sent(held, document.async_save)
        document.a = 2
        await document.async_save()
    assert not document._created
    assert await CwDoc._get_collection().find({}).to_list(None) == [
        {"_id": document.pk, "a": 2}
    ]


async def open_transaction(lsid: Any) -> bool:
    """Whether the server has a transaction open on session ``lsid``."""
    current_op = [
        {"$currentOp": {"allUsers": True, "idleSessions": True}},
        {"$match": {"lsid.id": lsid["id"], "transaction": {"$exists": True}}},
    ]
    found = await get_async_connection().admin.aggregate(current_op)
    return bool(await found.to_list(None))


async def assert_nothing_locked(
    held: Held, collection: Any, pk: Any, lsid: Any
) -> None:
    """Once the held command ended on the server: an outside write to the
    document is not held up (no orphan transaction locks it), and the server
    has no transaction open on session ``lsid`` (once the fence that follows
    the command's reply ended: an orphan would stay open for 60 s)."""
    await held.ended_on_server()
    # (A write an orphan transaction locks waits for its end, 60 s.)
    await asyncio.wait_for(collection.update_one({"_id": pk}, {"$set": {"b": 3}}), 5)
    deadline = time.monotonic() + 10
    while await open_transaction(lsid):
        assert time.monotonic() < deadline, "a transaction stays open"
        await asyncio.sleep(0.05)


async def timed_out(held: Held, work: Awaitable[Any]) -> None:
    """Await ``work`` under ``asyncio.wait_for``, its time-out expiring once
    its write is ``held`` on the server (a fixed one expired before the write
    was sent, on a slow machine)."""
    with pytest.raises(asyncio.TimeoutError):  # (not TimeoutError on 3.10)
        await expiring_once_held(held, work)


async def expiring_once_held(held: Held, work: Awaitable[Any]) -> Any:
    """``asyncio.wait_for(work, ...)`` whose time-out expires once the write
    of ``work`` is ``held`` on the server: raises the TimeoutError then."""
    if sys.version_info >= (3, 12):  # what wait_for() is there: in the task
        loop = asyncio.get_running_loop()
        async with asyncio.timeout(None) as timeout:

            async def expire() -> None:
                await held.reached_server()
                timeout.reschedule(loop.time())

            expiry = asyncio.ensure_future(expire())
            try:
                return await work
            finally:
                expiry.cancel()
    # A task of its own, cancelled once timed out (as with timeout 0).
    task = asyncio.ensure_future(work)
    await held.reached_server()
    return await asyncio.wait_for(task, 0)


async def cancel_midway(
    held: Held,
    transaction: Callable[[], Awaitable[Any]],
    cancellation: str,
    prompt: bool = True,
) -> None:
    """Run ``transaction`` (or any work) and cancel it once its write is
    ``held`` on the server: by ``task.cancel()`` once or at every await until
    it ends (as an anyio cancel scope does), by ``asyncio.wait_for`` or by an
    anyio cancel scope's deadline; check that it ended (no wait for the
    write, but by a single cancellation), if ``prompt``: while the server
    still holds the write."""
    if cancellation == "timeout":
        await timed_out(held, transaction())
        return
    if cancellation == "anyio":

        async def expire(scope: Any) -> None:
            await held.reached_server()
            scope.deadline = anyio.current_time()  # as move_on_after's passing

        with anyio.CancelScope() as scope:
            expiry = asyncio.ensure_future(expire(scope))
            try:
                await transaction()
            finally:
                expiry.cancel()
        assert scope.cancelled_caught
        assert not prompt or await held.still_on_server()
        return
    task = asyncio.ensure_future(transaction())
    await held.reached_server()
    task.cancel()
    while cancellation == "every await" and not task.done():
        task.cancel()
        await asyncio.sleep(0)
    with pytest.raises(asyncio.CancelledError):
        await task
    if cancellation == "every await" and prompt:
        assert await held.still_on_server()


CANCELLATIONS = ["cancel", "every await", "timeout", "anyio"]


async def ping_a_server_that_is_not_there() -> None:
    """Ping, through a client of its own, a server nobody listens on: raises
    a ServerSelectionTimeoutError (another client's)."""
    client: AsyncMongoClient = AsyncMongoClient(
        "mongodb://127.0.0.1:9", serverSelectionTimeoutMS=1
    )
    try:
        await client.admin.command("ping")
    finally:
        await client.close()


def note_session(sessions: list[Any]) -> None:
    """Append the id of the session bound to the running task (its
    transaction's) to ``sessions``."""
    session = current_session()
    assert session is not None
    sessions.append(session.session_id)


async def in_transaction(form: str, block: Callable[[], Awaitable[Any]]) -> None:
    """Run ``block`` in a transaction of ``form``: the context manager's
    block, or the callback of ``async_run_transaction``."""
    if form == "callback":
        await async_run_transaction(block)
    else:
        async with async_run_in_transaction():
            await block()


@pytest.mark.parametrize("cancellation", CANCELLATIONS)
@pytest.mark.parametrize("form", ["context manager", "callback"])
async def test_cancelled_in_a_transaction(app, form, cancellation):
    """The transaction aborts once the write settled (an abort sent before its
    first write reached the server would leave that write a transaction of
    its own, locking the document until the server's time limit), also when
    the cancellation comes again at every await (an anyio cancel scope): the
    abort goes on in a task of its own. The changes are given back, and the
    next save stores them."""
    document = await CwDoc(a=0, b=0).async_save()
    sessions = []

    async def block() -> None:
        note_session(sessions)
        document.a = 1
        await document.async_save()

    async with blocked(app, "update") as held:
        await cancel_midway(held, lambda: in_transaction(form, block), cancellation)
        [lsid] = sessions
        await assert_nothing_locked(held, CwDoc._get_collection(), document.pk, lsid)
    assert await stored(document) == {"_id": document.pk, "a": 0, "b": 3}
    assert document._get_changed_fields() == ["a"]
    await document.async_save()
    assert await stored(document) == {"_id": document.pk, "a": 1, "b": 3}


FIRST_OPERATIONS = {
    "queryset update": ("update", lambda d: CwDoc.objects(pk=d.pk).async_update(a=1)),
    "raw update": (
        "update",
        lambda d: CwDoc._get_collection().update_one(
            {"_id": d.pk}, {"$set": {"a": 1}}, session=current_session()
        ),
    ),
    "read": ("find", lambda d: CwDoc.objects(pk=d.pk).async_first()),
}


@pytest.mark.parametrize("cancellation", CANCELLATIONS)
@pytest.mark.parametrize("form", ["context manager", "callback"])
@pytest.mark.parametrize("first", list(FIRST_OPERATIONS))
async def test_a_cancelled_first_operation_leaves_no_transaction_open(
    app, first, form, cancellation
):
    """The transaction's first operation (one no abort waits for: not an
    instance's save) cancelled on its way reaches the server after the abort
    and starts a transaction of its own: the abort is followed by one more
    transaction on the session, aborted, which ends it (or makes the server
    refuse it), so nothing stays open locking the document for 60 s."""
    await first_operation_cancelled(app, first, form, cancellation)


async def first_operation_cancelled(
    app: str, first: str, form: str, cancellation: str
) -> None:
    """Cancel a transaction (of ``form``) while its ``first`` operation is held
    on the server, and check nothing is left locked once it landed."""
    command, operation = FIRST_OPERATIONS[first]
    document = await CwDoc(a=0, b=0).async_save()
    sessions = []

    async def block() -> None:
        note_session(sessions)
        await operation(document)

    async with blocked(app, command) as held:
        await cancel_midway(held, lambda: in_transaction(form, block), cancellation)
        [lsid] = sessions
        await assert_nothing_locked(held, CwDoc._get_collection(), document.pk, lsid)
    assert await stored(document) == {"_id": document.pk, "a": 0, "b": 3}


@pytest.mark.parametrize("form", ["context manager", "callback"])
@pytest.mark.parametrize("first", ["queryset update", "raw update"])
async def test_the_fence_of_a_client_reading_from_secondaries(mongodb_uri, first, form):
    """The fence's read asks for the primary (a transaction's reads must):
    inheriting the client's secondaryPreferred, PyMongo refused it before
    it was sent, and the orphan of a cancelled first write stayed open."""
    secondaries = ReadPreference.SECONDARY_PREFERRED
    async with own_app(mongodb_uri, read_preference=secondaries) as app:
        await first_operation_cancelled(app, first, form, "cancel")


@pytest.mark.parametrize(
    ("form", "then"),
    [
        ("context manager", "raise another error"),
        ("context manager", "raise another error later"),
        ("context manager", "raise another error handling a selection time-out"),
        ("context manager", "go on to commit"),
        ("callback", "raise another error"),
        ("callback", "raise another error later"),
        ("callback", "raise another error handling a selection time-out"),
        ("callback", "go on to commit"),
    ],
)
async def test_a_first_operation_timed_out_by_the_block_leaves_no_transaction_open(
    app, form, then
):
    """The block's own time-out of its first operation (``asyncio.wait_for``
    around it, the TimeoutError caught: turned into another error, another
    error raised after it, not while handling it, or the block goes on to
    its commit, which fails, the server knowing no transaction yet) leaves
    that operation on its way: the transaction that did not commit is fenced
    all the same, so the late operation leaves no transaction open locking
    the document. Also when the error is raised while handling another
    client's server selection time-out: this client's server is there."""
    document = await CwDoc(a=0, b=0).async_save()
    sessions = []

    async def block() -> None:
        note_session(sessions)
        update = CwDoc.objects(pk=document.pk).async_update(a=1)
        try:  # (a run again is not held: its update applies)
            await (expiring_once_held(held, update) if len(sessions) == 1 else update)
        except asyncio.TimeoutError:
            if then == "raise another error":
                raise RuntimeError("service unavailable") from None
        if then == "raise another error later":
            raise RuntimeError("service unavailable")
        if then == "raise another error handling a selection time-out":
            try:
                await ping_a_server_that_is_not_there()
            except pymongo.errors.ServerSelectionTimeoutError:
                raise RuntimeError("service unavailable")  # noqa: B904

    async with blocked(app, "update") as held:
        if then.startswith("raise another error"):
            with pytest.raises(RuntimeError, match="service unavailable"):
                await in_transaction(form, block)
        elif form == "context manager":  # (the block cannot run again)
            with pytest.raises(PyMongoError, match="run the block again"):
                await in_transaction(form, block)
        else:  # run again, the update then applied
            await in_transaction(form, block)
        await assert_nothing_locked(
            held, CwDoc._get_collection(), document.pk, sessions[0]
        )
    a = 1 if (form, then) == ("callback", "go on to commit") else 0
    assert await stored(document) == {"_id": document.pk, "a": a, "b": 3}


@pytest.mark.parametrize("then", ["another operation", "in a task group"])
async def test_a_first_operation_timed_out_and_gone_on_from_is_fenced(app, then):
    """The block's own time-out of its first operation, not in the error it
    raises: the block went on to another operation, which reached the server
    first (NoSuchTransaction), or the time-out is in the ExceptionGroup of a
    task group (asyncio's; on Python 3.10, which has none, anyio's, whose
    group is the ``exceptiongroup`` backport's). The late first operation is
    fenced all the same."""
    document = await CwDoc(a=0, b=0).async_save()
    sessions = []

    def update() -> Awaitable[Any]:
        update = CwDoc.objects(pk=document.pk).async_update(a=1)
        return expiring_once_held(held, update)

    async def block() -> None:
        note_session(sessions)
        if then == "in a task group":
            if sys.version_info < (3, 11):
                async with anyio.create_task_group() as anyio_group:
                    anyio_group.start_soon(update)
                return
            async with asyncio.TaskGroup() as group:  # type: ignore[attr-defined]
                group.create_task(update())
            return
        with contextlib.suppress(asyncio.TimeoutError):
            await update()
        await CwDoc.objects(pk=document.pk).async_first()

    async with blocked(app, "update") as held:
        with pytest.raises(Exception) as raised:
            await in_transaction("context manager", block)
        if then == "another operation":
            assert getattr(raised.value, "code", None) == 251  # NoSuchTransaction
        await assert_nothing_locked(
            held, CwDoc._get_collection(), document.pk, sessions[0]
        )
    assert await stored(document) == {"_id": document.pk, "a": 0, "b": 3}


async def test_the_fence_waits_a_bounded_time(app, monkeypatch):
    """A fence the server does not answer is given up after
    ``_FENCE_SECONDS``: the block's error is raised then, its abort done."""
    monkeypatch.setattr(context, "_FENCE_SECONDS", 0.5)
    document = await CwDoc(a=0, b=0).async_save()

    held: list[Held] = []

    async def block() -> None:
        await CwDoc.objects(pk=document.pk).async_update(a=1)
        find = held_on_server(app, "find", 4 * BLOCK_MS)
        held.append(await stack.enter_async_context(find))
        raise RuntimeError("gave up") from asyncio.TimeoutError()

    async with contextlib.AsyncExitStack() as stack:
        with pytest.raises(RuntimeError, match="gave up"):
            await in_transaction("context manager", block)
        # (Raised while the server still holds the fence's read: not after.)
        await held[0].reached_server()
        assert await held[0].still_on_server()
        assert await stored(document) == {"_id": document.pk, "a": 0, "b": 0}


async def test_a_fence_whose_read_was_never_sent_fences_once(app, monkeypatch):
    """No server to select (a primary lost) after a block's time-out: the
    abort and the fence's read are given up before anything was sent, and
    the fence ends there. Its abort, with nothing to send, counted as one the
    server answered, and a second fence followed: the caller waited one more
    ``_FENCE_SECONDS`` for a read that could not be on its way."""
    monkeypatch.setattr(context, "_FENCE_SECONDS", 0.2)
    document = await CwDoc(a=0, b=0).async_save()
    lost: list[float] = []
    select_server = Topology.select_server

    async def selecting(self: Topology, *args: Any, **kwargs: Any) -> Any:
        if lost:
            lost.append(time.monotonic())
            await asyncio.Event().wait()  # (until given up)
        return await select_server(self, *args, **kwargs)

    monkeypatch.setattr(Topology, "select_server", selecting)

    sessions: list[Any] = []

    async def block() -> None:
        note_session(sessions)
        await CwDoc.objects(pk=document.pk).async_update(a=1)
        lost.append(time.monotonic())  # the primary is lost from now on
        raise RuntimeError("gave up") from asyncio.TimeoutError()

    try:
        with pytest.raises(RuntimeError, match="gave up"):
            await in_transaction("context manager", block)
        selections = len(lost) - 1
    finally:
        lost.clear()  # (found again: end the transaction its abort could not)
        await get_async_connection().admin.command("killSessions", sessions)
    assert selections == 2  # the abort's, then the fence's read's
    assert not await open_transaction(sessions[0])
    assert await stored(document) == {"_id": document.pk, "a": 0, "b": 0}


@asynccontextmanager
async def other_admin(mongodb_uri: str) -> AsyncIterator[Any]:
    """The admin database of a client of its own: commands that set and wait
    for the fail point there take no session of the tested client's pool."""
    client: AsyncMongoClient[Any] = AsyncMongoClient(mongodb_uri)
    try:
        yield client.admin
    finally:
        await client.close()


async def test_a_fence_whose_read_is_given_up_still_fences(
    app, mongodb_uri, monkeypatch
):
    """The fence's read held on the server past its time limit (the late
    first operation before it): the fence's abort is sent all the same, with
    a time limit of its own, and the read, landing late, is refused (see
    test_a_stalled_fence_leaves_no_transaction_of_its_own). Sent under the
    read's expired limit, the abort was not sent at all, the server dropped
    the read (its maxTimeMS passed), and the late update left its
    transaction open: the document locked until the server's time limit
    (60 s)."""
    monkeypatch.setattr(context, "_FENCE_SECONDS", BLOCK_MS / 2000)
    document = await CwDoc(a=0, b=0).async_save()
    # The pooled session the block takes next, known to the server: its first
    # use there reads it in with a find, which the fail point would hold.
    async with async_run_in_transaction():
        await CwDoc.objects(pk=document.pk).async_first()
    sessions = []

    async def block() -> None:
        note_session(sessions)
        await CwDoc.objects(pk=document.pk).async_update(a=1)

    async with (
        other_admin(mongodb_uri) as admin,
        held_on_server(app, "update", 4 * BLOCK_MS, then="find", admin=admin) as held,
    ):
        await cancel_midway(
            held, lambda: in_transaction("context manager", block), "cancel"
        )
        await assert_nothing_locked(
            held, CwDoc._get_collection(), document.pk, sessions[0]
        )
    assert await stored(document) == {"_id": document.pk, "a": 0, "b": 3}


async def test_a_stalled_fence_leaves_no_transaction_of_its_own(app, monkeypatch):
    """The client's reads stalled on the server past the fence's time limit:
    the fence's read, landing after its abort, starts the fence's own
    transaction there, and fails (an unknown operator), which aborts it. It
    was a real read, given up and followed by a second fence whose read
    landed after its abort as well: that transaction stayed open, holding
    the database's lock until the server's time limit (60 s), so that a
    dropDatabase (and every DDL there) waited as long."""
    monkeypatch.setattr(context, "_FENCE_SECONDS", BLOCK_MS / 4000)
    document = await CwDoc(a=0, b=0).async_save()
    sessions = []
    held: list[Held] = []

    async def block() -> None:
        note_session(sessions)
        await CwDoc.objects(pk=document.pk).async_update(a=1)
        stalled = held_on_server(app, "find", BLOCK_MS, then="find")
        held.append(await stack.enter_async_context(stalled))
        raise RuntimeError("gave up") from asyncio.TimeoutError()

    async with contextlib.AsyncExitStack() as stack:
        with pytest.raises(RuntimeError, match="gave up"):
            await in_transaction("context manager", block)
        await held[0].ended_on_server()
    assert not await open_transaction(sessions[0])
    assert await stored(document) == {"_id": document.pk, "a": 0, "b": 0}
    database = CwDoc._get_db()
    await asyncio.wait_for(database.client.drop_database(database.name), 5)


@pytest.mark.parametrize("form", ["context manager", "callback"])
async def test_an_abort_waits_a_bounded_time(app, form, monkeypatch):
    """An abort the server does not answer is given up after
    ``_FENCE_SECONDS``: the block's error is raised then (PyMongo's abort
    has no time limit: the caller waited as long as the server held it)."""
    monkeypatch.setattr(context, "_FENCE_SECONDS", BLOCK_MS / 2000)
    document = await CwDoc(a=0, b=0).async_save()

    async def block() -> None:
        await CwDoc.objects(pk=document.pk).async_update(a=1)
        raise RuntimeError("gave up")

    async with held_on_server(app, "abortTransaction", 4 * BLOCK_MS) as held:
        with pytest.raises(RuntimeError, match="gave up"):
            await in_transaction(form, block)
        # (Raised while the server still holds the abort: not after.)
        await held.reached_server()
        assert await held.still_on_server()
        await held.ended_on_server()  # (then applied: nothing stays locked)
    assert await stored(document) == {"_id": document.pk, "a": 0, "b": 0}


@pytest.mark.parametrize("form", ["context manager", "callback"])
async def test_an_abort_and_its_fence_under_an_expired_pymongo_timeout(app, form):
    """A block under ``pymongo.timeout()`` whose operation timed out on its
    way: the abort and the fence have time limits of their own. Under the
    caller's, expired, PyMongo sent neither, and the transaction stayed open,
    the document locked until the server's time limit (60 s)."""
    seconds = BLOCK_MS / 3000
    while not (timed_out := await timed_out_while_held(app, form, seconds)):
        seconds *= 2  # (a loaded machine: it expired before the held update)
    held, document, session_id = timed_out
    await held.ended_on_server()
    await asyncio.wait_for(
        CwDoc._get_collection().update_one({"_id": document.pk}, {"$set": {"b": 3}}), 5
    )
    assert not await open_transaction(session_id)
    assert await stored(document) == {"_id": document.pk, "a": 0, "b": 3}


async def timed_out_while_held(
    app: str, form: str, seconds: float
) -> tuple[Held, CwDoc, Any] | None:
    """Update a document then another in a transaction of ``form`` under
    ``pymongo.timeout(seconds)``, the server holding the second update
    longer: the held command, the first document and the session's id, if
    the time-out expired while the server held it (not before: None)."""
    document = await CwDoc(a=0, b=0).async_save()
    other = await CwDoc(a=0, b=0).async_save()
    sessions = []

    async def block() -> None:
        note_session(sessions)
        await CwDoc.objects(pk=document.pk).async_update(a=1)
        await CwDoc.objects(pk=other.pk).async_update(a=1)  # held: timed out

    held_ms = max(BLOCK_MS, int(3000 * seconds))  # (longer than the time-out)
    async with held_on_server(app, "update", held_ms, skip=1) as held:
        # (Expired before sending an update: its OperationError.)
        with pytest.raises((PyMongoError, OperationError)), pymongo.timeout(seconds):
            await in_transaction(form, block)
        if not await reached_server_yet(held):
            return None
    return held, document, sessions[0]


async def reached_server_yet(held: Held) -> bool:
    """Whether the server held the command already (no wait for it)."""
    try:
        await held.reached_server(max_time_ms=1)
    except pymongo.errors.ExecutionTimeout:
        return False
    return True


async def on_server(app_name: str, op: str, running: bool = True) -> None:
    """Return once the server runs (not ``running``: no longer runs) an
    ``op`` (``$currentOp``'s kind: "update", "query"...) of client
    ``app_name``."""
    pipeline = [
        {"$currentOp": {"allUsers": True}},
        {"$match": {"appName": app_name, "op": op}},
    ]
    admin = get_async_connection().admin
    deadline = time.monotonic() + 30
    while bool(await (await admin.aggregate(pipeline)).to_list(None)) != running:
        assert time.monotonic() < deadline, f"{op} running: {not running}"
        await asyncio.sleep(0.01)


@asynccontextmanager
async def updates_hanging() -> AsyncIterator[None]:
    """Inside the block, every update waits on the server (its session
    checked out) until the block ends: the ``hangDuringBatchUpdate`` fail
    point."""
    admin = get_async_connection().admin
    fail_point = {"configureFailPoint": "hangDuringBatchUpdate"}
    await admin.command({**fail_point, "mode": "alwaysOn"})
    try:
        yield
    finally:
        await admin.command({**fail_point, "mode": "off"})


async def waited_on_server(app_name: str, command: str, ms: int) -> None:
    """Return once a ``command`` of client ``app_name`` has run ``ms`` on the
    server (the server's own clock: no wait of this side's decides)."""
    pipeline = [
        {"$currentOp": {"allUsers": True}},
        {
            "$match": {
                "appName": app_name,
                f"command.{command}": {"$exists": True},
                "microsecs_running": {"$gte": ms * 1000},
            }
        },
    ]
    admin = get_async_connection().admin
    deadline = time.monotonic() + 30
    while not await (await admin.aggregate(pipeline)).to_list(None):
        assert time.monotonic() < deadline, f"no {command} waited {ms} ms"
        await asyncio.sleep(0.01)


@pytest.mark.parametrize("form", ["context manager", "callback"])
async def test_an_abort_and_its_fence_on_a_client_with_a_timeout(mongodb_uri, form):
    """A client's ``timeoutMS``, under a longer ``pymongo.timeout()``, and a
    block cancelled while the server runs its update: the abort and the
    fence wait for it there, with time limits of their own, on this side
    only. Sent with the client's ``timeoutMS`` as ``maxTimeMS``, both were
    dropped by the server while the update ran, and its transaction stayed
    open: the document locked until the server's time limit (60 s)."""
    async with own_app(mongodb_uri, timeoutMS=BLOCK_MS // 2) as app:
        document = await CwDoc(a=0, b=0).async_save()
        sessions = []

        async def block() -> None:
            note_session(sessions)
            await CwDoc.objects(pk=document.pk).async_update(a=1)

        with pymongo.timeout(30):
            async with updates_hanging():  # (on before the update is sent)
                task = asyncio.ensure_future(in_transaction(form, block))
                await on_server(app, "update")
                task.cancel()
                # (Longer than the client's timeoutMS: not dropped by the server.)
                await waited_on_server(app, "abortTransaction", 2 * BLOCK_MS)
            with pytest.raises(asyncio.CancelledError):
                await task
        await on_server(app, "update", running=False)
        assert not await open_transaction(sessions[0])
        outside = CwDoc._get_collection().update_one(
            {"_id": document.pk}, {"$set": {"b": 3}}
        )
        await asyncio.wait_for(outside, 5)  # (not locked)
        assert await stored(document) == {"_id": document.pk, "a": 0, "b": 3}


async def until(condition: Callable[[], bool], seconds: float = 30) -> None:
    """Return once ``condition()`` holds; fail if it does not within
    ``seconds`` (a loaded machine is slow, a wait that never ends hangs)."""
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, "the condition never held"
        await asyncio.sleep(0.01)


async def _until_settled(document: Document) -> None:
    """Until the write of ``document`` a cancellation left on its way settled
    (its turn ended; the steps after it, if any, run on in a task)."""
    await until(lambda: "_async_save_turns" not in document.__dict__)


async def test_a_cancelled_save_that_landed_updates_the_cached_copies(app):
    """auto_sync follows a cancelled save whose write was applied, as it
    follows a save that returned: the cached copies stayed stale for good (the
    changes the save sent are cleared, so no later save sends them again)."""
    author = await CwAuthor(name="old", age=0).async_save()
    book = await CwBook(author=author).async_save()
    async with blocked(app, "update") as held:
        author.name = "new"
        await cancel_once_sent(held, author.async_save)
        await _until_settled(author)
    # The copies are updated in a task of their own, whose end clears the
    # changes (as MongoEngine's save, after post_save): until it ended.
    await until(lambda: not context.following)
    raw = await CwBook._get_collection().find_one({"_id": book.pk})
    assert raw["author"] == {"_id": author.pk, "name": "new"}
    assert author._get_changed_fields() == []


async def test_a_cancelled_delete_that_landed_deletes_the_files(app):
    """The files of a document whose cancelled delete was applied go too, as
    after a delete that returned: they stayed in GridFS, orphaned."""
    document = CwFiled()
    await document.data.async_put(b"contents", filename="a.txt")
    await document.async_save()
    files = CwFiled._get_collection().database["cw_files.files"]
    grid_id = document.data.grid_id
    async with blocked(app, "delete") as held:
        await cancel_once_sent(held, document.async_delete)
        await _until_settled(document)
    assert await CwFiled._get_collection().find_one({"_id": document.pk}) is None
    await until(lambda: not context.following)  # (deleted in a task of their own)
    assert await files.count_documents({"_id": grid_id}) == 0


async def _bucket_ids(
    database: Any, name: str, expected: list[Any], seconds: float = 5
) -> tuple[list[Any], list[Any]]:
    """The ids of the files documents of bucket ``name``, and the files_id of
    its chunks, once both are ``expected`` (a delete cut short goes on in a
    task of its own), or after ``seconds``."""
    deadline = time.monotonic() + seconds
    while True:
        files = await database[f"{name}.files"].distinct("_id")
        chunks = await database[f"{name}.chunks"].distinct("files_id")
        if (files, chunks) == (expected, expected) or time.monotonic() > deadline:
            return files, chunks
        await asyncio.sleep(0.01)


@pytest.mark.parametrize("call", ["async_delete", "async_replace"])
async def test_a_file_delete_cancelled_on_its_way_deletes_the_chunks_too(app, call):
    """Cancelled while the delete of the files document is on its way (the
    proxy's delete, the old file's of a replace), the chunks' delete follows
    in a task: they stayed, found by nothing (a replaced file's id is gone)."""
    document = CwFiled()
    await document.data.async_put(b"contents", filename="a.txt")
    await document.async_save()
    old = document.data.grid_id
    database = CwFiled._get_collection().database
    if call == "async_delete":
        work = document.data.async_delete
    else:
        work = functools.partial(document.data.async_replace, b"new contents")
    async with blocked(app, "delete") as held:
        await cancel_once_sent(held, work)
        await held.ended_on_server()
    kept = [] if call == "async_delete" else [document.data.grid_id]
    assert old not in kept
    assert await _bucket_ids(database, "cw_files", kept) == (kept, kept)


async def test_a_file_delete_going_on_when_its_loop_ends_deletes_the_chunks(app):
    """The task a cancelled file delete leaves going on is cancelled in turn,
    its files-document delete on its way, as ``asyncio.run()`` cancels every
    task left when its loop ends: it sends both deletes again. It stopped
    there: the chunks stayed, found by nothing."""
    document = CwFiled()
    await document.data.async_put(b"contents", filename="a.txt")
    await document.async_save()
    database = CwFiled._get_collection().database
    async with blocked(app, "delete") as held:
        await cancel_once_sent(held, document.data.async_delete)
        (going_on,) = gridfs._cut_short
        going_on.cancel()  # (as the loop's end does)
        with pytest.raises(asyncio.CancelledError):
            await going_on
    assert await _bucket_ids(database, "cw_files", [], 0) == ([], [])


@pytest.mark.parametrize(
    ("deleted", "what"),
    [
        ("document.data", "delete of file {1} of cw_files whose caller was cancelled"),
        (
            "document",
            "write of CwFiled {0} whose caller was cancelled (and the steps after it)",
        ),
    ],
)
def test_a_delete_going_on_when_its_loop_is_closed_by_hand(mongodb_uri, deleted, what):
    """``loop.close()`` alone (no ``shutdown_asyncgens()``, which waits for
    them) while a cancelled delete goes on, its command held on the server (a
    file's, or a document's with a file): what it had left to do is never
    done, the file's chunks stay; the loop's exception handler is told so
    as the program exits (asyncio's logs it). Nothing said so."""
    result, left = closed_while_deleting(mongodb_uri, deleted, shut_down=False)
    assert left[1] == 1  # (the chunks)
    reported = [line for line in result.stderr.splitlines() if "closed before" in line]
    what = what.format(*_named(result.stderr))  # (the document, or its file)
    assert reported == [
        f"The event loop closed before the {what} ended: the rest of it is not"
        " done (close a loop you run yourself after"
        " loop.run_until_complete(loop.shutdown_asyncgens()), as asyncio.run()"
        " does)"
    ]


@pytest.mark.parametrize("deleted", ["document.data", "document"])
def test_a_delete_going_on_when_its_loop_run_by_hand_shuts_down(mongodb_uri, deleted):
    """A loop run by hand that shuts down as asyncio asks
    (``loop.shutdown_asyncgens()`` before ``loop.close()``), its tasks never
    cancelled, while a cancelled delete goes on, its command held on the
    server: the loop closes its clients once that delete and the files'
    deletes after it are done. A document's delete still on its way was not
    waited for: its client closed under it, the files stayed."""
    result, left = closed_while_deleting(mongodb_uri, deleted, shut_down=True)
    assert "closed before" not in result.stderr
    assert left == [0, 0]


def test_a_loops_end_waits_a_bounded_time_for_a_server_that_does_not_answer(
    mongodb_uri,
):
    """A loop run by hand shutting down as asyncio asks while a cancelled
    delete goes on, every delete and endSessions of its client held on the
    server (as a stopped server holds every command): the loop's end gives up
    once its time (``_END_SECONDS``) is spent, for that delete and the closing
    of its client together, and reports the delete (once), whose files stay;
    the client's close sends nothing then. It waited for the delete, then for
    its files' deletes, then for the client's endSessions, each as long as
    the server held it (a stopped server: each its own server selection, 30
    s, and more)."""
    result, left = closed_while_deleting(
        mongodb_uri, "document", shut_down=True, frozen=True
    )
    assert left == [1, 1]
    assert result.stdout.splitlines() == ["closed", ""]  # (no command sent then)
    reported = [line for line in result.stderr.splitlines() if "waiting" in line]
    (pk, _) = _named(result.stderr)
    assert reported == [
        f"The event loop's end stopped waiting for the write of CwFiled {pk} whose"
        " caller was cancelled (and the steps after it) after 1 s (the most it"
        " waits for such work and to close its clients): the rest of it may not be"
        " done"
    ]
    assert "closed before" not in result.stderr


def _named(stderr: str) -> list[str]:
    """What a script's "named" line of ``stderr`` names (the reprs of ids)."""
    (line,) = [line for line in stderr.splitlines() if line.startswith("named ")]
    return line.split()[1:]


def closed_while_deleting(
    mongodb_uri: str, deleted: str, shut_down: bool, frozen: bool = False
) -> tuple[subprocess.CompletedProcess[str], list[int]]:
    """Run :data:`_CLOSED_WHILE_DELETING` (its loop shut down as asyncio asks
    before its close, if ``shut_down``; if ``frozen``, every delete and
    endSessions of its client held 10 s, and its loop's end given 1 s) in a
    process of its own (what the collector finds of a closed loop's client
    fails in odd ways); return the finished process and the counts of files
    and chunks left."""
    name = f"cw_{uuid4().hex[:12]}"
    held = {"mode": {"times": 1}, "failCommands": ["delete"], "blockTimeMS": 5000}
    if frozen:
        held = {"mode": "alwaysOn", "failCommands": ["delete", "endSessions"]}
        held["blockTimeMS"] = 10_000
    script = _CLOSED_WHILE_DELETING.format(
        database=name,
        app=name,
        deleted=deleted,
        end_seconds=1 if frozen else 30,
        shut_down="loop.run_until_complete(loop.shutdown_asyncgens())"
        if shut_down
        else "",
        **{key: repr(value) for key, value in held.items()},
    )
    try:
        result = run_script(script, mongodb_uri)
    finally:
        with pymongo.MongoClient(mongodb_uri) as client:
            client.admin.command({"configureFailPoint": "failCommand", "mode": "off"})
            left = [
                client[name][f"cw_files.{kind}"].count_documents({})
                for kind in ("files", "chunks")
            ]
            client.drop_database(name)
    assert result.stdout.splitlines()[0] == "closed"
    return result, left


_CLOSED_WHILE_DELETING = textwrap.dedent(
    """
    import asyncio, os, sys
    from pymongo import monitoring
    from mongoengine_async import Document, FileField, connect_async
    from mongoengine_async import connection, get_async_connection

    connection._END_SECONDS = {end_seconds}

    class Sent(monitoring.CommandListener):
        names = None  # (the commands started once the loop's end began)

        def started(self, event):
            if self.names is not None:
                self.names.append(event.command_name)

        def succeeded(self, event):
            pass

        def failed(self, event):
            pass

    sent = Sent()

    class CwFiled(Document):
        data = FileField(collection_name="cw_files")

    async def main():
        await connect_async("{database}", host=os.environ["MONGODB_URI"],
                            appname="{app}", retryWrites=False,
                            event_listeners=[sent])
        document = CwFiled()
        await document.data.async_put(b"contents")
        await document.async_save()
        print("named", repr(document.pk), repr(document.data.grid_id), file=sys.stderr)
        admin = get_async_connection().admin
        point = {{"configureFailPoint": "failCommand"}}
        entered = (await admin.command({{**point, "mode": {mode}, "data": {{
            "failCommands": {failCommands}, "blockConnection": True,
            "blockTimeMS": {blockTimeMS}, "appName": "{app}"}}}}))["count"]
        deleting = asyncio.ensure_future({deleted}.async_delete())
        await admin.command({{"waitForFailPoint": "failCommand",
                             "timesEntered": entered + 1, "maxTimeMS": 30000}})
        deleting.cancel()
        await asyncio.wait([deleting])  # (its delete held: turned off, it ends)

    loop = asyncio.new_event_loop()
    loop.run_until_complete(main())
    sent.names = []
    {shut_down}
    loop.close()
    print("closed")
    print(*sent.names)
    """
)


async def test_a_queryset_delete_cancelled_while_deleting_the_files(app):
    """Cancelled once the documents are gone, while the first of their files
    is deleted: that delete and the others follow in a task of their own
    (they stayed, found by nothing)."""
    for number in range(3):
        document = CwFiled()
        await document.data.async_put(b"contents %d" % number)
        await document.async_save()
    database = CwFiled._get_collection().database
    # The documents' delete passes; the first file's is held.
    async with held_on_server(app, "delete", BLOCK_MS, skip=1) as held:
        await cancel_once_sent(held, CwFiled.objects.async_delete)
        await held.ended_on_server()
    assert await CwFiled._get_collection().count_documents({}) == 0
    assert await _bucket_ids(database, "cw_files", []) == ([], [])


async def test_a_queryset_delete_cancelled_on_its_way_deletes_the_files(app):
    """Cancelled while the documents' delete is on its way: once it was
    applied, their files are deleted in a task of their own (they stayed,
    found by nothing), as after a document's cancelled delete."""
    for number in range(3):
        document = CwFiled()
        await document.data.async_put(b"contents %d" % number)
        await document.async_save()
    database = CwFiled._get_collection().database
    async with blocked(app, "delete") as held:
        await cancel_once_sent(held, CwFiled.objects.async_delete)
        await held.ended_on_server()
    assert await CwFiled._get_collection().count_documents({}) == 0
    assert await _bucket_ids(database, "cw_files", []) == ([], [])


async def test_disconnect_waits_for_what_a_cancelled_delete_left_going_on(
    app, mongodb_uri
):
    """``disconnect_async()`` (an application's shutdown, its requests
    cancelled) while a document's delete whose caller was cancelled is held on
    the server: it returns once that delete and its file's are done, the file
    gone. It closed the client under them at once: the file's delete, then
    without a connection for its alias ("the FileField's alias 'default' has no
    connection", reported to the loop's exception handler), left the file in
    GridFS, found by nothing."""
    document = CwFiled()
    await document.data.async_put(b"contents")
    await document.async_save()
    name = CwFiled._get_collection().database.name
    reported: list[dict[str, Any]] = []
    asyncio.get_running_loop().set_exception_handler(
        lambda _, report: reported.append(report)
    )
    async with AsyncMongoClient(mongodb_uri) as client:  # (outliving the alias)
        try:
            async with held_on_server(
                app, "delete", BLOCK_MS, admin=client.admin
            ) as held:
                await cancel_once_sent(held, document.async_delete)
                await mongoengine_async.disconnect_async()
        finally:
            asyncio.get_running_loop().set_exception_handler(None)
        assert reported == []
        assert await client[name]["cw_filed"].count_documents({}) == 0
        assert await _bucket_ids(client[name], "cw_files", [], 0) == ([], [])


async def test_disconnect_in_a_receiver_of_a_cancelled_delete_does_not_wait_for_it(
    app, mongodb_uri, monkeypatch
):
    """A ``post_delete`` receiver awaiting ``disconnect_async()`` (its app's
    shutdown), of a delete whose caller was cancelled: it returns, nothing
    reported. It waited for the delete it is part of, which the receiver
    held, until its time was spent (``_END_SECONDS``, shortened here), then
    reported that delete as possibly not done."""
    monkeypatch.setattr(mongoengine_async.connection, "_END_SECONDS", 3)
    document = CwFiled()
    await document.data.async_put(b"contents")
    await document.async_save()
    name = CwFiled._get_collection().database.name
    disconnected = asyncio.Event()

    async def post_delete(sender: Any, document: Any, **_: Any) -> None:
        await mongoengine_async.disconnect_async()
        disconnected.set()

    reported: list[dict[str, Any]] = []
    asyncio.get_running_loop().set_exception_handler(
        lambda _, report: reported.append(report)
    )
    signals.post_delete.connect(post_delete, sender=CwFiled)
    async with AsyncMongoClient(mongodb_uri) as client:  # (outliving the alias)
        try:
            async with held_on_server(
                app, "delete", BLOCK_MS, admin=client.admin
            ) as held:
                await cancel_once_sent(held, document.async_delete)
                await disconnected.wait()
        finally:
            signals.post_delete.disconnect(post_delete, sender=CwFiled)
            asyncio.get_running_loop().set_exception_handler(None)
        assert reported == []
        assert await client[name]["cw_filed"].count_documents({}) == 0
        assert await _bucket_ids(client[name], "cw_files", [], 0) == ([], [])


async def test_a_report_names_a_long_id_shortened(app):
    """The report of what a cancelled delete left going on, no longer waited
    for (as by ``disconnect_async()`` once its time is spent), names the
    document by its id, shortened: a 100 000-character id was printed whole."""
    document = CwLongId(id="x" * 100_000)
    await document.async_save()
    loop = asyncio.get_running_loop()
    reported: list[dict[str, Any]] = []
    loop.set_exception_handler(lambda _, report: reported.append(report))
    try:
        async with blocked(app, "delete") as held:
            await cancel_once_sent(held, document.async_delete)
            (write,) = [t for t in detached._finishing if t.get_loop() is loop]
            await detached.all_finished(0, "disconnect_async('default')", "none")
            await write
    finally:
        loop.set_exception_handler(None)
    assert [report["message"] for report in reported] == [
        "disconnect_async('default') stopped waiting for the write of CwLongId"
        f" '{'x' * 37}...{'x' * 38}' whose caller was cancelled (and the steps"
        " after it) after 0 s (none): the rest of it may not be done"
    ]
    assert await CwLongId.objects.async_count() == 0


async def test_a_file_delete_in_a_session_cancelled_on_its_way_ends_first(app):
    """With a session of the caller's (no transaction), a cancelled delete of
    a file returns once its chunks' delete is done too: the session runs one
    command at a time, and the caller's next one comes after."""
    document = CwFiled()
    await document.data.async_put(b"contents", filename="a.txt")
    await document.async_save()
    database = CwFiled._get_collection().database
    async with (
        get_async_connection().start_session() as session,
        blocked(app, "delete") as held,
    ):
        task = asyncio.ensure_future(document.data.async_delete(session=session))
        await held.reached_server()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert await _bucket_ids(database, "cw_files", [], 0) == ([], [])


@pytest.mark.parametrize("kind", list(CANCELLED))
def test_a_write_begun_as_the_loop_ends_leaves_no_coroutine_unawaited(
    mongodb_uri, kind
):
    """A save, modify, update or delete whose task the loop's end cancels
    right after it began its write's task (before that one ran, on Python
    3.10/3.11): the write's coroutine is closed, not left never awaited
    (a RuntimeWarning, an error under ``filterwarnings = error``)."""
    name = f"cw_{uuid4().hex[:12]}"

    async def main() -> asyncio.Future[Any]:
        await connect_async(name, host=mongodb_uri, uuidRepresentation="standard")
        document = await CwDoc(a=0, b=0).async_save()
        # Returned at once: the loop ends with that task just begun.
        return asyncio.ensure_future(CANCELLED[kind][1](document)())

    async def drop() -> None:
        await get_async_connection().drop_database(name)
        await disconnect_all_async()

    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            asyncio.run(main())
            gc.collect()
    finally:
        asyncio.run(drop())
    assert [str(w.message) for w in caught if "never awaited" in str(w.message)] == []


@pytest.mark.parametrize("cancellation", CANCELLATIONS)
async def test_a_cancelled_delete_with_rules_outside_a_transaction(app, cancellation):
    """A delete with delete rules not in a transaction (``transaction=False``):
    its writes go on once cancelled, as a save's, and the instance's next
    write comes after them (the root's delete, its last write, would else
    delete what that save stored)."""
    document = await CwRuled(a=0, b=0).async_save()
    referrer = await CwReferrer(doc=document).async_save()
    await CwReferrer.async_ensure_indexes()
    async with blocked(app, "delete") as held:
        await cancel_midway(
            held, lambda: document.async_delete(transaction=False), cancellation
        )
        assert await held.still_on_server()  # (the cancellation came at once)
        document.a = 2
        await document.async_save()  # waits until the cancelled delete settled
    assert await CwRuled._get_collection().find_one({"_id": document.pk}) == {
        "_id": document.pk,
        "a": 2,
    }
    raw = await CwReferrer._get_collection().find_one({"_id": referrer.pk})
    assert raw == {"_id": referrer.pk}
    assert "_async_save_turns" not in document.__dict__


async def assert_not_deleted(document: CwRuled, referrer: CwReferrer) -> None:
    """The delete aborted: ``document`` stays (with the outside write of
    :func:`assert_nothing_locked`) and ``referrer`` still refers to it."""
    assert await CwRuled._get_collection().find_one({"_id": document.pk}) == {
        "_id": document.pk,
        "a": 0,
        "b": 3,
    }
    raw = await CwReferrer._get_collection().find_one({"_id": referrer.pk})
    assert raw == {"_id": referrer.pk, "doc": document.pk}


@pytest.mark.parametrize("cancellation", CANCELLATIONS)
async def test_a_cancelled_delete_with_rules_in_a_transaction(app, cancellation):
    """A delete with delete rules that joins the block's transaction, cancelled
    once its root's delete is on its way: it goes on, the transaction aborts
    once it settled (nothing left open locking the document), and the
    document stays."""
    document = await CwRuled(a=0, b=0).async_save()
    referrer = await CwReferrer(doc=document).async_save()
    await CwReferrer.async_ensure_indexes()
    sessions = []

    async def in_transaction() -> None:
        async with async_run_in_transaction() as session:
            sessions.append(session.session_id)
            await document.async_delete()

    async with blocked(app, "delete") as held:
        await cancel_midway(held, in_transaction, cancellation)
        [lsid] = sessions
        await assert_nothing_locked(held, CwRuled._get_collection(), document.pk, lsid)
    await assert_not_deleted(document, referrer)


async def _followed(log: list, count: int) -> None:
    """Until ``log`` holds ``count`` entries (the steps after a cancelled
    write run in a task of their own, once it landed), 10 s at most."""
    deadline = time.monotonic() + 10
    while len(log) < count and time.monotonic() < deadline:
        await asyncio.sleep(0.01)


@pytest.fixture
async def receivers() -> AsyncIterator[list]:
    """A log of the post_save and post_delete signals of CwDoc, CwAuthor and
    CwFiled, by a plain receiver and a coroutine one: (receiver, signal,
    created, what ``_delta()`` gave, signal kwargs)."""
    log: list = []

    def entry(kind: str, signal: str, document: Any, kwargs: dict) -> tuple:
        created = kwargs.pop("created", None)
        delta = document._delta() if signal == "post_save" else None
        return (kind, signal, created, delta, kwargs)

    def plain(sender: type, document: Any, **kwargs: Any) -> None:
        log.append(entry("plain", kwargs.pop("signal"), document, kwargs))

    async def awaited(sender: type, document: Any, **kwargs: Any) -> None:
        signal = kwargs.pop("signal")
        await asyncio.sleep(0)
        log.append(entry("coroutine", signal, document, kwargs))

    connected = []
    for signal in (signals.post_save, signals.post_delete):
        for receiver in (plain, awaited):
            bound = functools.partial(receiver, signal=signal.name)
            for sender in (CwDoc, CwAuthor, CwFiled):
                signal.connect(bound, sender=sender, weak=False)
                connected.append((signal, bound, sender))
    yield log
    for signal, bound, sender in connected:
        signal.disconnect(bound, sender=sender)


async def test_a_cancelled_save_that_landed_sends_post_save(app, receivers):
    """Receivers that keep caches or indexes in step see every write that
    landed: a cancelled save's post_save follows once its write was applied,
    with the document as a post_save of a save that returned sees it (its
    changes listed; a new one whole), the save's signal_kwargs and created;
    what changed meanwhile stays for the next save. It was never sent."""
    document = await CwDoc(a=0, b=0).async_save()
    receivers.clear()
    async with blocked(app, "update") as held:
        document.a = 1
        await cancel_once_sent(
            held, lambda: document.async_save(signal_kwargs={"source": "x"})
        )
        document.b = 5  # while the write is on its way: not sent by it
        await _followed(receivers, 2)
    changes = ({"a": 1, "b": 5}, {})  # (b, as a post_save of it would see it)
    assert sorted(receivers) == [
        ("coroutine", "post_save", False, changes, {"source": "x"}),
        ("plain", "post_save", False, changes, {"source": "x"}),
    ]
    await _until_settled(document)
    assert document._get_changed_fields() == ["b"]
    assert await stored(document) == {"_id": document.pk, "a": 1, "b": 0}

    receivers.clear()
    new = CwDoc(a=1)
    async with blocked(app, "insert") as held:
        await cancel_once_sent(held, new.async_save)
        await _followed(receivers, 2)
    whole = ({"a": 1}, {})
    assert sorted(receivers) == [
        ("coroutine", "post_save", True, whole, {}),
        ("plain", "post_save", True, whole, {}),
    ]
    await until(lambda: not new._created)  # (the follow-up's last step)
    assert new._get_changed_fields() == []


@pytest.mark.parametrize("transaction", [False, True])
async def test_a_cancelled_insert_of_a_document_with_a_list_shows_its_changes(
    app, receivers, transaction
):
    """A cancelled save that inserted a document that has a list of changes
    (a loaded one saved with ``force_insert``) sends post_save, once it
    landed (in a transaction: once it committed), with that list, as
    MongoEngine's receivers see it: ``_delta()`` gives the changes, not the
    whole document. (Ours removed the list meanwhile: ``({}, {})``.)"""
    document = await CwDoc(a=0, b=0).async_save()
    document = await CwDoc.objects.async_get(id=document.pk)
    await CwDoc.objects(id=document.pk).async_delete()
    receivers.clear()
    document.a = 1

    async def block() -> None:
        await timed_out(held, document.async_save(force_insert=True))
        await _until_settled(document)

    async with blocked(app, "insert") as held:
        if transaction:
            await in_transaction("context manager", block)
        else:
            await cancel_once_sent(held, lambda: document.async_save(force_insert=True))
        await until(lambda: len(receivers) == 2 and not context.following)
    changes = ({"a": 1}, {})
    assert sorted(receivers) == [
        ("coroutine", "post_save", True, changes, {}),
        ("plain", "post_save", True, changes, {}),
    ]
    assert document._get_changed_fields() == [] and not document._created
    assert await stored(document) == {"_id": document.pk, "a": 1, "b": 0}


@pytest.mark.parametrize("load_bulk", [False, True])
async def test_a_cancelled_insert_of_a_dynamic_document_lists_pk_then_id(
    app, load_bulk
):
    """A dynamic document with a list of changes (built by
    ``_from_son(created=True)``) whose insert was cancelled once sent, and
    landed: the steps that follow leave its changes as MongoEngine's
    ``insert()`` does, ``pk`` then ``_id``, and ``post_bulk_insert`` sees
    them so. The early id's mark stayed first: ``['_id', 'pk']``."""
    seen: list = []

    def note(sender: type, documents: list, **kwargs: Any) -> None:
        seen.append(list(document._changed_fields))

    document = CwDynamic._from_son({"name": "a", "extra": 1}, created=True)
    signals.post_bulk_insert.connect(note, sender=CwDynamic, weak=False)
    try:
        async with blocked(app, "insert") as held:
            await cancel_once_sent(
                held,
                lambda: CwDynamic.objects.async_insert(document, load_bulk=load_bulk),
            )
            await until(lambda: seen and not context.following)
    finally:
        signals.post_bulk_insert.disconnect(note, sender=CwDynamic)
    assert seen == [["pk", "_id"]]
    assert document._changed_fields == ["pk", "_id"]
    assert list(document._delta()[0]) == ["pk", "_id"]


async def test_a_cancelled_insert_shows_its_embedded_documents_changes(app):
    """A cancelled save that inserted a new document sends post_save, once
    it landed, with the changes of its embedded documents still on them,
    as MongoEngine's receivers see them; they clear after. (Ours cleared
    them as the write was sent: ``[]``.)"""
    seen = []

    def look(sender: type, document: Any, **kwargs: Any) -> None:
        seen.append(list(document.inner._changed_fields))

    new = CwDoc(a=1, inner=CwInner(x=1))
    new.inner.x = 2
    signals.post_save.connect(look, sender=CwDoc)
    try:
        async with blocked(app, "insert") as held:
            await cancel_once_sent(held, new.async_save)
            # (its steps after the write, in a task: until they ended)
            await until(lambda: bool(seen) and not context.following)
    finally:
        signals.post_save.disconnect(look, sender=CwDoc)
    assert seen == [["x"]]
    assert new.inner._changed_fields == [] and not new._created
    assert await stored(new) == {"_id": new.pk, "a": 1, "inner": {"x": 2}}


async def test_post_save_follows_the_cached_copies(app, receivers):
    """As after a save that returned: the cached copies are updated first."""
    author = await CwAuthor(name="old", age=0).async_save()
    book = await CwBook(author=author).async_save()
    copies = []

    async def look(sender: type, document: Any, **kwargs: Any) -> None:
        raw = await CwBook._get_collection().find_one({"_id": book.pk})
        copies.append(raw["author"]["name"])

    signals.post_save.connect(look, sender=CwAuthor)
    try:
        receivers.clear()
        async with blocked(app, "update") as held:
            author.name = "new"
            await cancel_once_sent(held, author.async_save)
            await _followed(copies, 1)
    finally:
        signals.post_save.disconnect(look, sender=CwAuthor)
    assert copies == ["new"]


async def test_a_cancelled_delete_that_landed_sends_post_delete(app, receivers):
    """Its post_delete follows once its write was applied (after the files
    are deleted); it was never sent."""
    document = CwFiled()
    await document.data.async_put(b"contents", filename="a.txt")
    await document.async_save()
    files = CwFiled._get_collection().database["cw_files.files"]
    receivers.clear()
    async with blocked(app, "delete") as held:
        await cancel_once_sent(
            held, lambda: document.async_delete(signal_kwargs={"source": "x"})
        )
        await _followed(receivers, 2)
    assert sorted(receivers) == [
        ("coroutine", "post_delete", None, None, {"source": "x"}),
        ("plain", "post_delete", None, None, {"source": "x"}),
    ]
    assert await files.count_documents({}) == 0


@pytest.mark.parametrize("kind", ["save", "delete"])
async def test_a_cancelled_write_that_failed_sends_nothing(app, receivers, kind):
    document = await CwDoc(a=0, b=0).async_save()
    receivers.clear()
    command = "update" if kind == "save" else "delete"
    async with held_on_server(app, command, BLOCK_MS, error_code=2) as held:
        await cancel_once_sent(
            held, save_a(document, 1) if kind == "save" else document.async_delete
        )
        await _until_settled(document)
    await until(lambda: not context.following)  # (what follows a write ended)
    assert receivers == []


async def test_a_cancelled_save_in_a_transaction_sends_nothing(app, receivers):
    """The transaction's end decides: the cancellation aborts it."""
    document = await CwDoc(a=0, b=0).async_save()
    receivers.clear()

    async def in_transaction() -> None:
        async with async_run_in_transaction():
            document.a = 1
            await document.async_save()

    async with blocked(app, "update") as held:
        await cancel_midway(held, in_transaction, "cancel")
    # The abort gave the changes back: the transaction ended.
    await until(lambda: document._get_changed_fields() == ["a"])
    await until(lambda: not context.following)  # (what follows a write ended)
    assert receivers == []
    assert document._get_changed_fields() == ["a"]


async def test_a_receiver_error_after_a_cancelled_write_goes_to_the_loop(app):
    """No caller awaits it: the loop's exception handler gets it."""
    document = await CwDoc(a=0, b=0).async_save()
    handled = []
    loop = asyncio.get_running_loop()
    loop.set_exception_handler(lambda loop, context: handled.append(context))

    def refuse(sender: type, document: Any, **kwargs: Any) -> None:
        raise ValueError("refused")

    signals.post_save.connect(refuse, sender=CwDoc)
    try:
        async with blocked(app, "update") as held:
            await cancel_once_sent(held, save_a(document, 1))
            await _followed(handled, 1)
    finally:
        signals.post_save.disconnect(refuse, sender=CwDoc)
        loop.set_exception_handler(None)
    [context] = handled
    assert isinstance(context["exception"], ValueError)
    assert "cancelled save" in context["message"]
    await _until_settled(document)
    # As after a save whose receiver raised: its changes stay listed.
    assert await stored(document) == {"_id": document.pk, "a": 1, "b": 0}


async def test_a_delete_cancelled_while_deleting_its_files(app, receivers):
    """Cancelled once the document's delete returned, while its files are
    deleted: the files (one cut short too) and post_delete follow, in a task
    of their own; a file's chunks stayed orphaned, and nothing was sent."""
    document = CwFiled()
    await document.data.async_put(b"contents", filename="a.txt")
    await document.async_save()
    database = CwFiled._get_collection().database
    receivers.clear()
    # The document's delete passes; the file's is held.
    async with held_on_server(app, "delete", BLOCK_MS, skip=1) as held:
        await cancel_once_sent(held, document.async_delete)
    await _followed(receivers, 2)
    assert sorted(kind for kind, *_ in receivers) == ["coroutine", "plain"]
    assert await CwFiled._get_collection().count_documents({}) == 0
    assert await database["cw_files.files"].count_documents({}) == 0
    assert await database["cw_files.chunks"].count_documents({}) == 0


async def test_a_save_cancelled_while_updating_the_cached_copies(app, receivers):
    """Cancelled once its write returned, while its cached copies are updated:
    the copies (again) and post_save follow, in a task of their own, and the
    changes it saved clear; post_save was never sent."""
    author = await CwAuthor(name="old", age=0).async_save()
    book = await CwBook(author=author).async_save()
    receivers.clear()
    # The save's update passes; the cached copies' one is held.
    async with held_on_server(app, "update", BLOCK_MS, skip=1) as held:
        author.name = "new"
        await cancel_once_sent(held, author.async_save)
    await _followed(receivers, 2)
    changes = ({"name": "new"}, {})
    assert sorted(receivers) == [
        ("coroutine", "post_save", False, changes, {}),
        ("plain", "post_save", False, changes, {}),
    ]
    raw = await CwBook._get_collection().find_one({"_id": book.pk})
    assert raw["author"] == {"_id": author.pk, "name": "new"}
    await until(lambda: author._get_changed_fields() == [])  # (cleared, 30 s at most)


@pytest.mark.parametrize("cancellation", CANCELLATIONS)
@pytest.mark.parametrize("command", ["delete", "update"])
async def test_a_cancelled_delete_with_rules_on_the_callers_session(
    app, command, cancellation
):
    """A delete with delete rules given the caller's own session (no
    transaction on it: the delete starts its own there), cancelled while its
    root's delete or its NULLIFY update is on its way: the caller gets the
    session back once the abort (and its fence) ended, also under a cancel
    scope. Its next operation on the session overlapped them: it failed
    (NoSuchTransaction) or ran in that transaction and was aborted with it."""
    document = await CwRuled(a=0, b=0).async_save()
    referrer = await CwReferrer(doc=document).async_save()
    other = await CwDoc(a=0, b=0).async_save()
    await CwReferrer.async_ensure_indexes()
    async with get_async_connection().start_session() as session:
        async with blocked(app, command) as held:
            await cancel_midway(
                held,
                lambda: document.async_delete(session=session),
                cancellation,
                False,
            )
            assert not session.in_transaction
            await CwDoc.objects(pk=other.pk).async_update(set__a=5, session=session)
            lsid = session.session_id
            await assert_nothing_locked(
                held, CwRuled._get_collection(), document.pk, lsid
            )
    assert await stored(other) == {"_id": other.pk, "a": 5, "b": 0}
    await assert_not_deleted(document, referrer)


# How the commit of a transaction whose caller was cancelled ends: as sent,
# failed (WriteConflict), or with an unknown result (ShutdownInProgress), which
# with_transaction's retry of the commit then commits.
COMMITS = {"committed": None, "failed": 112, "unknown, then committed": 91}


async def stored_values() -> list[dict[str, Any]]:
    """The stored CwDoc documents without their ids, in the order of those."""
    found = CwDoc._get_collection().find({}, {"_id": 0}).sort("_id")
    return await found.to_list(None)


@pytest.mark.parametrize("cancellation", CANCELLATIONS)
@pytest.mark.parametrize("form", ["context manager", "callback"])
@pytest.mark.parametrize("commit", list(COMMITS))
async def test_a_commit_that_goes_on_after_a_cancellation(
    mongodb_uri, commit, form, cancellation
):
    """The caller cancelled while the commit is in flight: the commit goes
    on, and the documents are given back (new again, their changes marked)
    only if it does not commit. They were given back at once, also when the
    commit then succeeded: saved again, they were sent again."""
    # A commit failing with ShutdownInProgress marks the server unknown: its
    # retry waits for the monitor's next check (10 s by default).
    async with own_app(mongodb_uri, heartbeatFrequencyMS=500) as app:
        await a_commit_that_goes_on(app, commit, form, cancellation)


async def a_commit_that_goes_on(
    app: str, commit: str, form: str, cancellation: str
) -> None:
    old = await CwDoc(a=0, b=0).async_save()
    new = CwDoc(a=1)
    sessions = []

    async def block() -> None:
        sessions.append(current_session())
        await new.async_save()
        old.a = 5
        await old.async_save()

    async with held_on_server(
        app, "commitTransaction", BLOCK_MS, COMMITS[commit]
    ) as held:
        await cancel_midway(held, lambda: in_transaction(form, block), cancellation)
        # The commit ended, and the documents were settled before its session
        # was ended (a retried commit may need a new server selection first).
        [session] = sessions
        await asyncio.wait_for(until(lambda: session.has_ended), 5)
    raw = await stored_values()
    if commit == "failed":
        assert raw == [{"a": 0, "b": 0}]
        assert new._created
        assert old._get_changed_fields() == ["a"]
        await new.async_save()
        await old.async_save()
        raw = await stored_values()
    else:
        assert not new._created
        assert new._get_changed_fields() == old._get_changed_fields() == []
    assert raw == [{"a": 5, "b": 0}, {"a": 1}]


@pytest.mark.parametrize("cancellation", CANCELLATIONS)
@pytest.mark.parametrize("form", ["context manager", "callback"])
async def test_the_next_save_after_a_cancelled_transaction_sends_the_changes(
    app, form, cancellation
):
    """Cancelled while a save of the block is on its way (no commit asked
    for: the transaction aborts), the document is given back at once, not once
    the abort ended: saved again right away, it sends its changes again."""
    document = await CwDoc(a=0, b=0).async_save()

    async def block() -> None:
        document.a = 1
        await document.async_save()

    async with blocked(app, "update") as held:
        await cancel_midway(held, lambda: in_transaction(form, block), cancellation)
        await document.async_save()
    assert await stored(document) == {"_id": document.pk, "a": 1, "b": 0}


@pytest.mark.parametrize("form", ["context manager", "callback"])
@pytest.mark.parametrize("new", [False, True], ids=["update", "insert"])
async def test_a_save_cancelled_in_a_transaction_that_commits(
    app, receivers, form, new
):
    """A save cancelled in a transaction whose block goes on and commits (its
    time-out caught): its write landed with the commit, so its post_save is
    sent once the transaction committed (not before, once), with the
    document as it is then, the changes the save sent listed (as for a save
    that returned; a new one whole), and the save's signal_kwargs; a change
    made in the block since stays for the next save, the saved ones are
    cleared after. Nothing was sent, and the instance stayed unsaved (new);
    its receivers saw no change listed."""
    document = CwDoc(a=1) if new else await CwDoc(a=0, b=0).async_save()
    receivers.clear()
    committed = []

    def look(sender: type, document: Any, **kwargs: Any) -> None:
        committed.append(current_session())  # (in no transaction)

    async def block() -> None:
        document.a = 1
        await timed_out(held, document.async_save(signal_kwargs={"source": "x"}))
        await until(lambda: "_async_save_turns" not in document.__dict__)
        assert receivers == []  # (the write landed, not committed yet)
        document.b = 5

    signals.post_save.connect(look, sender=CwDoc)
    try:
        async with blocked(app, "insert" if new else "update") as held:
            await in_transaction(form, block)
            await _followed(receivers, 2)
    finally:
        signals.post_save.disconnect(look, sender=CwDoc)
    delta = ({"a": 1, "b": 5}, {})
    assert sorted(receivers) == [
        ("coroutine", "post_save", new, delta, {"source": "x"}),
        ("plain", "post_save", new, delta, {"source": "x"}),
    ]
    assert committed == [None]
    assert not document._created
    assert document._get_changed_fields() == ["b"]
    saved = {"a": 1} if new else {"a": 1, "b": 0}
    assert await stored(document) == {"_id": document.pk, **saved}
    await document.async_save()
    assert (await stored(document))["b"] == 5


@pytest.mark.parametrize("form", ["context manager", "callback"])
async def test_a_save_cancelled_in_a_transaction_that_aborts(app, receivers, form):
    """The block goes on and raises: the abort undoes the save's write, and
    nothing follows; the changes stay for the next save."""
    document = await CwDoc(a=0, b=0).async_save()
    receivers.clear()

    async def block() -> None:
        document.a = 1
        await timed_out(held, document.async_save())
        await until(lambda: "_async_save_turns" not in document.__dict__)
        raise ValueError("no")

    async with blocked(app, "update") as held:
        with pytest.raises(ValueError, match="no"):
            await in_transaction(form, block)
    await until(lambda: not context.following)  # (what follows a write ended)
    assert receivers == []
    assert document._get_changed_fields() == ["a"]
    assert await stored(document) == {"_id": document.pk, "a": 0, "b": 0}


async def test_a_save_cancelled_in_a_transaction_run_again(app, receivers):
    """The attempt whose save was cancelled fails with a transient error and
    runs again: its post_save is dropped with it; the next attempt's save,
    which returns, sends its own, once."""
    document = await CwDoc(a=0, b=0).async_save()
    receivers.clear()
    attempts = []

    async def block() -> None:
        attempts.append(len(attempts))
        document.a = len(attempts)
        if len(attempts) == 1:
            await timed_out(held, document.async_save())
            await until(lambda: "_async_save_turns" not in document.__dict__)
            raise PyMongoError("again", error_labels=["TransientTransactionError"])
        await document.async_save()

    async with blocked(app, "update") as held:
        await async_run_transaction(block)
    await until(lambda: not context.following)  # (what follows a write ended)
    assert attempts == [0, 1]
    assert sorted(kind for kind, *_ in receivers) == ["coroutine", "plain"]
    assert await stored(document) == {"_id": document.pk, "a": 2, "b": 0}


@pytest.mark.parametrize("form", ["context manager", "callback"])
async def test_a_delete_cancelled_in_a_transaction_that_commits(app, receivers, form):
    """Its post_delete is sent, and the document's GridFS files deleted,
    once the transaction committed; the files stayed orphaned, and nothing
    was sent."""
    document = CwFiled()
    await document.data.async_put(b"contents", filename="a.txt")
    await document.async_save()
    database = CwFiled._get_collection().database
    receivers.clear()

    async def block() -> None:
        await timed_out(held, document.async_delete(signal_kwargs={"source": "x"}))
        await until(lambda: "_async_save_turns" not in document.__dict__)
        assert receivers == []

    async with blocked(app, "delete") as held:
        await in_transaction(form, block)
        await _followed(receivers, 2)
    assert sorted(receivers) == [
        ("coroutine", "post_delete", None, None, {"source": "x"}),
        ("plain", "post_delete", None, None, {"source": "x"}),
    ]
    assert await CwFiled._get_collection().count_documents({}) == 0
    assert await _bucket_ids(database, "cw_files", []) == ([], [])


@pytest.mark.parametrize("kind", ["delete", "save"])
async def test_a_follow_up_cut_short_in_the_block_follows_the_commit(
    app, receivers, kind
):
    """A delete (save) cancelled in a transaction, then a save of the block
    cancelled while it ran the first write's steps first (the file's delete,
    the cached copies' update, held): those steps follow the commit all the
    same, as a cancelled write's do (cut short, done again). They were
    dropped: the file's chunks stayed orphaned, and post_delete (post_save)
    was never sent."""
    if kind == "delete":
        document: Any = CwFiled()
        await document.data.async_put(b"contents", filename="a.txt")
        await document.async_save()
        first = functools.partial(document.async_delete, signal_kwargs={"n": 1})
    else:
        document = await CwAuthor(name="old", age=0).async_save()
        book = await CwBook(author=document).async_save()
        document.name = "new"
        first = functools.partial(document.async_save, signal_kwargs={"n": 1})
    command = {"delete": "delete", "save": "update"}[kind]
    receivers.clear()

    async def block() -> None:
        async with blocked(app, command) as held:
            await timed_out(held, first())
            await held.ended_on_server()
        await until(context.follow_ups_pending)  # (once its write settled)
        async with blocked(app, command) as held:
            await timed_out(held, CwDoc(a=1).async_save())
            await held.ended_on_server()
        assert receivers == []

    await in_transaction("context manager", block)
    await _followed(receivers, 2)
    signal, changes = {
        "delete": ("post_delete", None),
        "save": ("post_save", ({"name": "new"}, {})),
    }[kind]
    created = None if kind == "delete" else False
    assert sorted(receivers) == [
        ("coroutine", signal, created, changes, {"n": 1}),
        ("plain", signal, created, changes, {"n": 1}),
    ]
    assert await stored_values() == []
    if kind == "save":
        raw = await CwBook._get_collection().find_one({"_id": book.pk})
        assert raw["author"] == {"_id": document.pk, "name": "new"}
        return
    database = CwFiled._get_collection().database
    assert await CwFiled._get_collection().count_documents({}) == 0
    assert await database["cw_files.files"].count_documents({}) == 0
    assert await database["cw_files.chunks"].count_documents({}) == 0


THEN = {
    "save": lambda document: save_again(document),
    "delete": lambda document: document.async_delete(signal_kwargs={"n": 2}),
    "delete a copy": lambda document: delete_copy(document),
    "insert": lambda document: CwDoc.objects.async_insert(
        [CwDoc(a=3)], signal_kwargs={"n": 2}
    ),
}


async def save_again(document: CwDoc) -> None:
    document.a = 2
    await document.async_save(signal_kwargs={"n": 2})


async def delete_copy(document: CwDoc) -> None:
    copy = await CwDoc.objects.async_get(pk=document.pk)
    await copy.async_delete(signal_kwargs={"n": 2})


@pytest.mark.parametrize("form", ["context manager", "callback"])
@pytest.mark.parametrize("then", list(THEN))
@pytest.mark.parametrize("cancelled", [True, False], ids=["cancelled", "returned"])
async def test_a_cancelled_saves_post_save_comes_before_the_next_writes_signals(
    app, form, then, cancelled
):
    """A save of the block cancelled (its time-out caught), then a save or a
    delete of the document (or of a copy of it), or an insert, in the same
    block: the first save's post_save comes before the next operation's
    signals, as after a save that returned (MongoEngine's order), sent in the
    block, once; its receivers see the changes it sent. Its post_save came
    after them, at the commit: a receiver keeping an index put back a
    document the block deleted."""
    document = await CwDoc(a=0, b=0).async_save()
    log: list = []

    def note(sender: type, signal: str, document: Any = None, **kwargs: Any) -> None:
        changed = document._get_changed_fields() if signal == "post_save" else None
        log.append((signal, kwargs.get("n"), changed))

    names = ("post_save", "pre_delete", "post_delete", "pre_bulk_insert")
    connected = [
        (getattr(signals, name), functools.partial(note, signal=name)) for name in names
    ]
    for signal, receiver in connected:
        signal.connect(receiver, sender=CwDoc, weak=False)

    async def block() -> None:
        document.a = 1
        first = document.async_save(signal_kwargs={"n": 1})
        if cancelled:
            await timed_out(held, first)
            await until(lambda: "_async_save_turns" not in document.__dict__)
        else:
            await first
        await THEN[then](document)

    try:
        held_update = blocked(app, "update") if cancelled else contextlib.nullcontext()
        async with held_update as held:
            await in_transaction(form, block)
    finally:
        for signal, receiver in connected:
            signal.disconnect(receiver, sender=CwDoc)
    first = ("post_save", 1, ["a"])
    assert (
        log
        == {
            "save": [first, ("post_save", 2, ["a"])],
            "delete": [first, ("pre_delete", 2, None), ("post_delete", 2, None)],
            "delete a copy": [first, ("pre_delete", 2, None), ("post_delete", 2, None)],
            "insert": [first, ("pre_bulk_insert", 2, None)],
        }[then]
    )
    assert document._get_changed_fields() == []


@pytest.mark.parametrize("where", ["outside", "in a transaction"])
@pytest.mark.parametrize("kind", ["save", "delete", "insert"])
async def test_a_write_cancelled_in_a_muted_block_sends_nothing(app, where, kind):
    """A save, delete or insert cancelled inside its signal's ``muted()``
    block, the block left before the write landed (or the transaction
    committed): what follows it sends nothing, as the write's own send in the
    block would have. Its signal was sent once the block had ended."""
    document = await CwDoc(a=0, b=0).async_save()
    log: list = []

    def note(sender: type, **kwargs: Any) -> None:
        log.append(sender)

    command, signal, write = {
        "save": ("update", signals.post_save, save_a(document, 1)),
        "delete": ("delete", signals.post_delete, document.async_delete),
        "insert": (
            "insert",
            signals.post_bulk_insert,
            lambda: CwDoc.objects.async_insert([CwDoc(a=2)]),
        ),
    }[kind]

    async def block() -> None:
        with signal.muted():
            await timed_out(held, write())

    signal.connect(note, sender=CwDoc)
    try:
        async with blocked(app, command) as held:
            if where == "outside":
                await block()
            else:
                await in_transaction("context manager", block)
            await held.ended_on_server()
            await until(lambda: not writes_on_their_way())
        for _ in range(3):  # (the done callbacks of the last one)
            await asyncio.sleep(0)
        await until(lambda: not context.following)
    finally:
        signal.disconnect(note, sender=CwDoc)
    assert log == []
    assert len(await stored_values()) == {"delete": 0, "save": 1, "insert": 2}[kind]


@pytest.mark.parametrize("where", ["outside", "in a transaction"])
async def test_an_insert_cancelled_reading_back_in_a_muted_block_sends_nothing(
    app, where
):
    """An insert cancelled inside ``post_bulk_insert.muted()`` while it read
    its documents back (``load_bulk``), its write landed: what follows it
    sends nothing, as its own send in the block would have. The steps that
    follow it sent post_bulk_insert once the block had ended."""
    log: list = []

    def note(sender: type, **kwargs: Any) -> None:
        log.append(sender)

    async def block() -> None:
        if where != "outside":  # (the server's own read of its transactions
            await CwDoc.objects.async_count()  # table first: a find too)
        async with blocked(app, "find") as held:
            with signals.post_bulk_insert.muted():
                await cancel_once_sent(
                    held, lambda: CwDoc.objects.async_insert([CwDoc(a=2)])
                )
            await held.ended_on_server()

    signals.post_bulk_insert.connect(note, sender=CwDoc)
    try:
        if where == "outside":
            await block()
        else:
            await in_transaction("context manager", block)
        for _ in range(3):  # (the done callbacks of the last one)
            await asyncio.sleep(0)
        await until(lambda: not context.following)
    finally:
        signals.post_bulk_insert.disconnect(note, sender=CwDoc)
    assert log == []
    assert await stored_values() == [{"a": 2}]


def writes_on_their_way() -> list[asyncio.Task]:
    """The tasks of writes that go on once cancelled (``detached``)."""
    return [
        task
        for task in asyncio.all_tasks()
        if task.get_coro().__qualname__ == "detached.<locals>.run"  # type: ignore[union-attr]
    ]


async def test_a_cancelled_insert_that_landed_sends_post_bulk_insert(app):
    """An insert cancelled once its write was sent: the write goes on, and
    once it landed post_bulk_insert follows, once, in a task of its own, with
    the documents read back and the insert's signal_kwargs. It was never
    sent."""
    log: list = []

    def note(sender: type, documents: list, loaded: bool, **kwargs: Any) -> None:
        log.append(([document.a for document in documents], loaded, kwargs))

    signals.post_bulk_insert.connect(note, sender=CwDoc)
    try:
        async with blocked(app, "insert") as held:
            inserted = [CwDoc(a=1), CwDoc(a=2)]
            await cancel_once_sent(
                held,
                lambda: CwDoc.objects.async_insert(
                    inserted, signal_kwargs={"source": "x"}
                ),
            )
            await _followed(log, 1)
    finally:
        signals.post_bulk_insert.disconnect(note, sender=CwDoc)
    assert log == [([1, 2], True, {"source": "x"})]
    assert await stored_values() == [{"a": 1}, {"a": 2}]


@pytest.mark.parametrize("form", ["context manager", "callback"])
@pytest.mark.parametrize("end", ["commit", "abort"])
async def test_an_insert_cancelled_in_a_transaction(app, form, end):
    """An insert cancelled in a transaction whose block goes on (its time-out
    caught): the transaction ends once the insert's write settled. Committed,
    the documents are stored and post_bulk_insert follows the commit, once;
    aborted, nothing is stored or sent, and no transaction is left holding
    the documents. The commit, sent ahead of the write, lost it; the abort
    left it a transaction of its own, which locked the documents until the
    server's time limit."""
    log: list = []

    def note(sender: type, documents: list, loaded: bool, **kwargs: Any) -> None:
        log.append([document.a for document in documents])

    inserted = CwDoc(a=1)
    sessions: list = []

    async def block() -> None:
        note_session(sessions)
        await timed_out(held, CwDoc.objects.async_insert([inserted]))
        assert log == []
        if end == "abort":
            raise ValueError("no")

    signals.post_bulk_insert.connect(note, sender=CwDoc)
    try:
        async with blocked(app, "insert") as held:
            with (
                pytest.raises(ValueError)
                if end == "abort"
                else contextlib.nullcontext()
            ):
                await in_transaction(form, block)
            await _followed(log, 1 if end == "commit" else 0)
    finally:
        signals.post_bulk_insert.disconnect(note, sender=CwDoc)
    if end == "commit":
        assert log == [[1]]
        assert await stored_values() == [{"a": 1}]
        return
    assert log == []
    await held.ended_on_server()
    assert await stored_values() == []
    collection = CwDoc._get_collection()
    upsert = collection.update_one({"_id": inserted.pk}, {"$set": {"a": 2}}, True)
    await asyncio.wait_for(upsert, 5)  # (an orphan transaction's lock: 60 s)
    deadline = time.monotonic() + 10
    while await open_transaction({"id": sessions[0]["id"]}):
        assert time.monotonic() < deadline, "a transaction stays open"
        await asyncio.sleep(0.05)


@pytest.mark.parametrize("form", ["context manager", "callback"])
async def test_an_insert_cancelled_in_a_transaction_that_aborts_leaves_them_new(
    app, form
):
    """Documents whose insert was cancelled in a transaction that then
    aborted (no ``post_bulk_insert`` receiver), saved once the write landed,
    before the abort: they are new again once it aborted, so saved again
    each is stored whole, as after an insert that returned there."""
    inserted = CwDoc(a=1)

    async def block() -> None:
        await timed_out(held, CwDoc.objects.async_insert([inserted]))
        raise ValueError("no")

    async with blocked(app, "insert") as held:
        with pytest.raises(ValueError):
            await in_transaction(form, block)
    assert inserted._created
    await held.ended_on_server()
    inserted.b = 2
    await inserted.async_save()
    assert await stored_values() == [{"a": 1, "b": 2}]


@pytest.mark.parametrize("kind", ["save", "delete"])
async def test_what_follows_a_cancelled_write_is_no_part_of_the_callers_transaction(
    app, kind
):
    """A save or delete given a session of its own (no transaction) inside a
    block: what follows its cancelled write that landed (here a receiver
    that writes) ran in the caller's transaction, bound where it was
    cancelled: it was aborted with it (or, the block over, failed with
    'Cannot use ended session')."""
    document = await CwDoc(a=0, b=0).async_save()
    written = []

    async def write(sender: type, document: Any, **kwargs: Any) -> None:
        written.append(await CwAuthor(name=kind).async_save())

    signal = signals.post_save if kind == "save" else signals.post_delete
    signal.connect(write, sender=CwDoc)
    try:
        async with get_async_connection().start_session() as own:

            def work() -> Awaitable[Any]:
                if kind == "delete":
                    return document.async_delete(session=own)
                document.a = 1
                return document.async_save(session=own)

            async with blocked(app, "update" if kind == "save" else "delete") as held:
                with pytest.raises(ValueError, match="no"):
                    async with async_run_in_transaction():
                        await timed_out(held, work())
                        await _followed(written, 1)
                        raise ValueError("no")
    finally:
        signal.disconnect(write, sender=CwDoc)
    assert await CwAuthor.objects.async_scalar("name") == [kind]


async def deleted_as_seen_by(session: Any, cls: type[Document], pk: Any) -> None:
    """Return once document ``pk`` is deleted as ``session`` sees it: in its
    transaction (what it wrote, what was committed before its snapshot)."""
    deadline = time.monotonic() + 30
    while await cls._get_collection().find_one({"_id": pk}, session=session):
        assert time.monotonic() < deadline, "the document is never deleted"
        await asyncio.sleep(0.01)


@pytest.mark.parametrize("cancellation", CANCELLATIONS)
async def test_a_cancelled_delete_with_rules_on_the_callers_session_outside_one(
    app, cancellation
):
    """A delete with delete rules on the caller's own session, not in a
    transaction (``transaction=False``), cancelled while its NULLIFY update is
    on its way: its writes go on, and the caller gets the session back once
    they ended, also under a cancel scope. Returned at once, its root's delete
    ran in the caller's next transaction on the session, and was aborted with
    it: the referrer nullified, the document kept."""
    document = await CwRuled(a=0, b=0).async_save()
    referrer = await CwReferrer(doc=document).async_save()
    other = await CwDoc(a=0, b=0).async_save()
    await CwReferrer.async_ensure_indexes()
    async with get_async_connection().start_session() as session:
        async with blocked(app, "update") as held:
            await cancel_midway(
                held,
                lambda: document.async_delete(transaction=False, session=session),
                cancellation,
                False,
            )
            await session.start_transaction()
            await CwDoc.objects(pk=other.pk).async_update(set__a=5, session=session)
            await deleted_as_seen_by(session, CwRuled, document.pk)
            await session.abort_transaction()
    assert await CwRuled._get_collection().find_one({"_id": document.pk}) is None
    raw = await CwReferrer._get_collection().find_one({"_id": referrer.pk})
    assert raw == {"_id": referrer.pk}
    assert await stored(other) == {"_id": other.pk, "a": 0, "b": 0}


BLOCKED = {"blockConnection": True, "blockTimeMS": BLOCK_MS}


async def fail_point_on(
    admin: Any, app: str, command: str, times: int = 1, **data: Any
) -> int:
    """Set the fail point on the next ``times`` ``command`` of application
    ``app``, with ``data`` (a block, an error, a namespace); the number of
    times it was entered so far (a :class:`Held`'s start)."""
    data = {"failCommands": [command], **data, "appName": app}
    configured = await admin.command(
        {"configureFailPoint": "failCommand", "mode": {"times": times}, "data": data}
    )
    return configured["count"]


async def connect_own_app(name: str, mongodb_uri: str, app: str, **options: Any) -> Any:
    """Connect alias "default" to database ``name`` as application ``app``
    (the fail point's), without retryable writes, in a test's own loop, with
    the client ``options`` given; the client's admin database."""
    await connect_async(
        name,
        host=mongodb_uri,
        appname=app,
        retryWrites=False,
        uuidRepresentation="standard",
        **options,
    )
    return get_async_connection().admin


async def fail_point_off_once_ended(admin: Any, app: str, command: str) -> None:
    """Turn the fail point off once ``app``'s held ``command`` ended on the
    server (turning it off first would wait for the block)."""
    await Held(admin, app, [command], 0).ended_on_server()
    await admin.command({"configureFailPoint": "failCommand", "mode": "off"})


async def files_left(database: Any) -> tuple[list[Any], list[Any]]:
    """The ids of the files left in ``cw_files`` and the files_id of its
    chunks; then drop ``database`` and disconnect (a test's last loop)."""
    files = await database["cw_files.files"].distinct("_id")
    chunks = await database["cw_files.chunks"].distinct("files_id")
    await database.client.drop_database(database.name)
    await disconnect_all_async()
    return files, chunks


async def roots_left(database: Any) -> tuple[int, int, list[Any], list[Any]]:
    """The numbers of CwFiledRoot and CwFiledChild left, then
    :func:`files_left`."""
    roots = await database["cw_filed_root"].count_documents({})
    children = await database["cw_filed_child"].count_documents({})
    files, chunks = await files_left(database)
    return roots, children, files, chunks


async def roots_with_children() -> tuple[list[CwFiledRoot], list[Any]]:
    """Two saved CwFiledRoot, each with a CwFiledChild cascading from it, all
    with a file; the roots, and the pks of the children."""
    roots, children = [], []
    for number in range(2):
        root = CwFiledRoot()
        await root.data.async_put(b"root %d" % number)
        roots.append(await root.async_save())
        child = CwFiledChild(parent=root)
        await child.data.async_put(b"child %d" % number)
        children.append((await child.async_save()).pk)
    await CwFiledChild.async_ensure_indexes()
    return roots, children


async def filed_left(
    name: str, mongodb_uri: str, app: str
) -> tuple[list, list, list, list]:
    """Once the held delete of ``app`` ended (its fail point off): the
    ``cw_filed`` documents of database ``name`` left, their files' ids, and
    the ids of the files and chunks left."""
    admin = await connect_own_app(name, mongodb_uri, app)
    database = get_async_connection()[name]
    await fail_point_off_once_ended(admin, app, "delete")
    kept = await database["cw_filed"].find().to_list()
    files, chunks = await files_left(database)
    return kept, [raw["data"] for raw in kept], files, chunks


@pytest.mark.parametrize("receiver", [False, True], ids=["", "post_delete"])
@pytest.mark.parametrize("held_delete", [0, 1], ids=["documents", "first-file"])
@pytest.mark.parametrize("kind", ["document", "queryset"])
def test_a_delete_going_on_as_its_loop_ends_deletes_the_files(
    mongodb_uri, kind, held_delete, receiver
):
    """A delete whose caller ``asyncio.run()``'s end cancels, the delete of
    the documents (or of their first file) held on the server: the loop
    ends once the documents and all their files are gone, ``post_delete``
    sent. The files stayed, orphaned: the write's task, cancelled in turn,
    dropped what followed it, and a task begun then was never awaited."""
    name = f"cw_{uuid4().hex[:12]}"
    app = f"cw-{uuid4().hex[:8]}"
    sent: list[Any] = []

    def post_delete(sender: Any, document: Any, **kwargs: Any) -> None:
        sent.append(document.pk)

    async def main() -> list[Any]:
        await connect_own_app(name, mongodb_uri, app)
        documents = []
        for number in range(3):
            document = CwFiled()
            await document.data.async_put(b"contents %d" % number)
            documents.append(await document.async_save())
        work = (
            documents[0].async_delete
            if kind == "document"
            else CwFiled.objects.async_delete
        )
        # Held once (turning the fail point off would wait for the block).
        admin = get_async_connection().admin
        collection = "cw_files.files" if held_delete else "cw_filed"
        count = await fail_point_on(
            admin, app, "delete", **BLOCKED, namespace=f"{name}.{collection}"
        )
        task = asyncio.ensure_future(work())
        await Held(admin, app, ["delete"], count).reached_server()
        assert not task.done()  # (left to the loop's end)
        return [document.pk for document in documents]

    async def left() -> tuple[list, list, list, list]:
        admin = await connect_own_app(name, mongodb_uri, app)
        database = get_async_connection()[name]
        await fail_point_off_once_ended(admin, app, "delete")
        kept = await database["cw_filed"].find().sort("_id").to_list()
        files, chunks = await files_left(database)
        pks = [raw["_id"] for raw in kept]
        return pks, sorted(raw["data"] for raw in kept), sorted(files), sorted(chunks)

    if receiver:
        signals.post_delete.connect(post_delete, sender=CwFiled)
    try:
        pks = asyncio.run(main())
    finally:
        signals.post_delete.disconnect(post_delete, sender=CwFiled)
        kept, kept_files, files, chunks = asyncio.run(left())
    # No file orphaned; each document deleted has had its post_delete.
    assert files == chunks == kept_files
    assert sorted(sent) == ([pk for pk in pks if pk not in kept] if receiver else [])
    if kind == "document":
        assert kept == pks[1:]
    elif not receiver:  # (one command: with receivers, one per document)
        assert kept == []


@pytest.mark.parametrize("how", ["transaction=False", "session="])
async def test_a_queryset_delete_with_rules_cancelled_midway_deletes_the_files(
    app, how
):
    """A queryset delete with delete rules outside a transaction, cancelled
    while its cascade's delete is on its way: its writes go on, as a
    document's, and once they were applied every deleted document's files
    go (with a session of the caller's, the call returns once its writes on
    the session were done; the files, outside it, follow).
    It stopped there: the children gone, the roots kept, the children's
    files orphaned."""
    await roots_with_children()
    database = CwFiledRoot._get_collection().database
    async with contextlib.AsyncExitStack() as stack:
        session = None
        if how == "session=":
            client = get_async_connection()
            session = await stack.enter_async_context(client.start_session())
        held = await stack.enter_async_context(blocked(app, "delete"))
        task = asyncio.ensure_future(
            CwFiledRoot.objects.async_delete(transaction=False, session=session)
        )
        await held.reached_server()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        if session is None:
            await held.ended_on_server()
            # (the roots' delete follows the children's in the write's task,
            # the files' in a task of their own: until both ended)
            await until(lambda: not queryset._deleting and not context.following)
        else:  # (its writes on the session done: its next command comes after)
            assert await CwFiledRoot.objects.async_count() == 0
    assert await CwFiledRoot.objects.async_count() == 0
    assert await CwFiledChild.objects.async_count() == 0
    assert await _bucket_ids(database, "cw_files", []) == ([], [])


async def no_file_left() -> None:
    """Return once no file (and none of its chunks) is left in ``cw_files``."""
    db = get_async_db()
    while await db["cw_files.files"].count_documents({}) or await db[
        "cw_files.chunks"
    ].count_documents({}):
        await asyncio.sleep(0.02)


async def shelf_with_a_copy() -> CwShelf:
    """A saved CwShelf and a CwCopy cascading from it, each with a scan file."""
    shelf = CwShelf()
    await shelf.scan.async_put(b"shelf")
    await shelf.async_save()
    copy = CwCopy(shelf=shelf)
    await copy.scan.async_put(b"copy")
    await copy.async_save()
    await CwCopy.async_ensure_indexes()
    return shelf


def deleting_shelf(shelf: CwShelf, kind: str) -> Callable[[], Awaitable[Any]]:
    """The delete of ``shelf``: the document's, or (``kind`` "queryset") that
    of a queryset matching it alone."""
    if kind == "document":
        return shelf.async_delete
    return CwShelf.objects(pk=shelf.pk).async_delete


async def rack_with_a_copy() -> tuple[CwRack, CwRackCopy]:
    """A saved CwRack and a CwRackCopy cascading from it, each with a scan
    file (the copy's in a bucket of its own)."""
    rack = CwRack()
    await rack.scan.async_put(b"rack")
    await rack.async_save()
    copy = CwRackCopy(rack=rack)
    await copy.scan.async_put(b"copy")
    await copy.async_save()
    await CwRackCopy.async_ensure_indexes()
    return rack, copy


@contextlib.contextmanager
def post_delete_pks(sender: type, connected: bool = True) -> Iterator[list]:
    """The pks of the ``sender`` documents post_delete is sent for while the
    block runs (none noted unless ``connected``: a test's other case)."""
    sent: list = []

    async def post_delete(sender: type, document: Any, **kwargs: Any) -> None:
        sent.append(document.pk)

    if connected:
        signals.post_delete.connect(post_delete, sender=sender)
    try:
        yield sent
    finally:
        signals.post_delete.disconnect(post_delete, sender=sender)


async def cancel_when_held(held: Held, work: Callable[[], Awaitable[Any]]) -> None:
    """Run ``work`` in a task, cancel it once its command is ``held`` on the
    server, and check it ends cancelled."""
    task = asyncio.ensure_future(work())
    await held.reached_server()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


@pytest.mark.parametrize("delete", ["document", "queryset"])
async def test_a_cascade_cancelled_while_its_commit_is_on_its_way(app, delete):
    """A cascade's caller cancelled while the commit of its own transaction
    is on its way (as when an election delays its reply): the commit goes
    on and applies, and so do the steps after it, as after any cancelled
    delete that landed: the files of the deleted documents, cascaded ones
    too, are deleted, then post_delete is sent. They were left (orphaned)
    and the signal never sent."""
    shelf = await shelf_with_a_copy()
    with post_delete_pks(CwShelf, delete == "document") as sent:
        async with blocked(app, "commitTransaction") as held:
            await cancel_when_held(held, deleting_shelf(shelf, delete))
            await held.ended_on_server()
        # The last steps: the files' deletes (their chunks last), post_delete.
        await asyncio.wait_for(no_file_left(), 10)
        if delete == "document":
            await asyncio.wait_for(until(lambda: bool(sent)), 10)
    assert sent == ([shelf.pk] if delete == "document" else [])
    assert await CwShelf.objects.async_count() == 0
    assert await CwCopy.objects.async_count() == 0


@pytest.mark.parametrize("delete", ["document", "queryset"])
async def test_a_cascade_cancelled_while_it_deletes_the_cascaded_files(app, delete):
    """A cascade's caller cancelled once its transaction committed, while it
    deletes the files of the cascaded documents: those deletes go on, and so
    do the steps after: the document's own file (the matched documents' for a
    queryset), then post_delete. Only the cascaded ones' went on."""
    shelf = await shelf_with_a_copy()
    with post_delete_pks(CwShelf, delete == "document") as sent:
        # The two deletes of the transaction pass, the files' are held.
        async with held_on_server(app, "delete", BLOCK_MS, skip=2) as held:
            await cancel_when_held(held, deleting_shelf(shelf, delete))
            await asyncio.wait_for(no_file_left(), 10)
            if delete == "document":
                await asyncio.wait_for(until(lambda: bool(sent)), 10)
    assert sent == ([shelf.pk] if delete == "document" else [])
    assert await CwCopy.objects.async_count() == 0


@pytest.mark.parametrize("kind", ["document", "queryset"])
def test_a_cascade_whose_commit_is_on_its_way_as_its_loop_ends(mongodb_uri, kind):
    """A cascade whose caller ``asyncio.run()``'s end cancels while the
    commit of its own transaction is held on the server, before it applied:
    the commit's task, cancelled in turn, sends it again (its outcome was
    unknown: the steps after it never ran), and the cascade is applied whole
    before the loop ends: the documents deleted, their files too, then
    ``post_delete`` sent, once (as for a caller cancelled in a loop that
    goes on)."""
    name = f"cw_{uuid4().hex[:12]}"
    app = f"cw-{uuid4().hex[:8]}"
    sent: list[Any] = []

    def post_delete(sender: Any, document: Any, **kwargs: Any) -> None:
        sent.append(document.pk)

    async def main() -> None:
        admin = await connect_own_app(name, mongodb_uri, app)
        work = deleting_shelf(await shelf_with_a_copy(), kind)
        count = await fail_point_on(admin, app, "commitTransaction", **BLOCKED)
        task = asyncio.ensure_future(work())
        held = Held(admin, app, ["commitTransaction"], count)
        await held.reached_server()
        assert not task.done()  # (left to the loop's end)

    async def left() -> tuple[int, int, list, list]:
        admin = await connect_own_app(name, mongodb_uri, app)
        await fail_point_off_once_ended(admin, app, "commitTransaction")
        database = get_async_connection()[name]
        counts = (
            await database["cw_shelf"].count_documents({}),
            await database["cw_copy"].count_documents({}),
        )
        files, chunks = await files_left(database)
        return *counts, files, chunks

    if kind == "document":  # (a queryset's: one command, no delete_each)
        signals.post_delete.connect(post_delete, sender=CwShelf)
    try:
        asyncio.run(main())
    finally:
        signals.post_delete.disconnect(post_delete, sender=CwShelf)
        shelves, copies, files, chunks = asyncio.run(left())
    assert (shelves, copies, files, chunks) == (0, 0, [], [])
    assert len(sent) == (1 if kind == "document" else 0)


async def test_a_one_by_one_cascade_cancelled_while_its_commit_is_on_its_way(app):
    """A queryset delete sent document by document (a post_delete receiver)
    whose own transaction's commit is on its way when its caller is
    cancelled: the documents' files were deleted in that transaction (and
    post_delete sent in it, as in a transaction of the caller's), so they go
    with the commit."""
    shelf = await shelf_with_a_copy()
    with post_delete_pks(CwShelf) as sent:
        async with blocked(app, "commitTransaction") as held:
            await cancel_when_held(held, deleting_shelf(shelf, "queryset"))
            await held.ended_on_server()
        await asyncio.wait_for(no_file_left(), 10)
    assert sent == [shelf.pk]
    assert await CwShelf.objects.async_count() == 0
    assert await CwCopy.objects.async_count() == 0


async def test_a_cancelled_cascade_sends_post_delete_once_the_cascaded_files_are_gone(
    app,
):
    """A cascade cancelled once its transaction committed, while it deletes
    the cascaded documents' files: the document's own file and post_delete
    follow those deletes, as they do after a delete that returned. They ran
    at once, beside them: post_delete came while the cascaded file (its
    delete held on the server) was still there."""
    rack, _ = await rack_with_a_copy()
    database = get_async_db()
    copy_files = database["cw_copy_files.files"]
    seen: list = []

    async def post_delete(sender: type, document: Any, **kwargs: Any) -> None:
        seen.append(await copy_files.count_documents({}))

    admin = get_async_connection().admin
    # The cascaded file's delete (cut short by the cancellation), then its
    # delete sent again by what follows.
    namespace = f"{database.name}.cw_copy_files.files"
    count = await fail_point_on(
        admin, app, "delete", times=2, **BLOCKED, namespace=namespace
    )
    signals.post_delete.connect(post_delete, sender=CwRack)
    try:
        task = asyncio.ensure_future(rack.async_delete())
        await Held(admin, app, ["delete"], count).reached_server()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        await asyncio.wait_for(until(lambda: bool(seen)), 10)  # (the last step)
    finally:
        signals.post_delete.disconnect(post_delete, sender=CwRack)
        await admin.command({"configureFailPoint": "failCommand", "mode": "off"})
    assert seen == [0]
    assert await copy_files.count_documents({}) == 0
    assert await database["cw_files.files"].count_documents({}) == 0


@pytest.mark.parametrize("transaction", [True, False], ids=["own", "none"])
@pytest.mark.parametrize("kind", ["document", "queryset"])
async def test_a_cascade_whose_cascaded_file_delete_fails_deletes_its_own(
    app, kind, transaction
):
    """A cascade whose documents are gone (its transaction committed, or
    none) and the delete of a cascaded document's file fails: the delete
    goes on as after its own file's failure, the document's own file
    deleted (the matched documents' for a queryset) and post_delete sent,
    then the error is raised. It raised at once: the document's file stayed,
    orphaned, and post_delete was never sent."""
    rack, copy = await rack_with_a_copy()
    database = get_async_db()
    admin = get_async_connection().admin
    namespace = f"{database.name}.cw_copy_files.files"
    await fail_point_on(admin, app, "delete", errorCode=2, namespace=namespace)
    if kind == "document":
        deleting = functools.partial(rack.async_delete, transaction=transaction)
    else:
        deleting = functools.partial(
            CwRack.objects(pk=rack.pk).async_delete, transaction=transaction
        )
    try:
        with post_delete_pks(CwRack, kind == "document") as sent:
            with pytest.raises(pymongo.errors.OperationFailure) as error:
                await deleting()
    finally:
        await admin.command({"configureFailPoint": "failCommand", "mode": "off"})
    assert error.value.code == 2
    assert sent == ([rack.pk] if kind == "document" else [])
    assert await CwRack.objects.async_count() == 0
    assert await CwRackCopy.objects.async_count() == 0
    assert await _bucket_ids(database, "cw_files", [], 0) == ([], [])
    kept = [copy.scan.grid_id]  # (the file whose delete failed: orphaned)
    assert await _bucket_ids(database, "cw_copy_files", kept, 0) == (kept, kept)


def test_a_queryset_delete_resent_as_its_loop_ends_spares_a_later_match(mongodb_uri):
    """A queryset delete whose write ``asyncio.run()``'s end cuts short is
    sent again: by the ids read when its files were listed, so a document
    inserted meanwhile that matches its query stays, with its file. The
    resend took the original query: that document was deleted, its file
    (listed by nothing) orphaned."""
    name = f"cw_{uuid4().hex[:12]}"
    app = f"cw-{uuid4().hex[:8]}"

    async def main() -> Any:
        await connect_own_app(name, mongodb_uri, app)
        for number in range(2):
            document = CwFiled()
            await document.data.async_put(b"contents %d" % number)
            await document.async_save()
        # The first delete held, then failing: only the resend deletes.
        admin = get_async_connection().admin
        count = await fail_point_on(
            admin, app, "delete", **BLOCKED, errorCode=2, namespace=f"{name}.cw_filed"
        )
        task = asyncio.ensure_future(CwFiled.objects.async_delete())
        await Held(admin, app, ["delete"], count).reached_server()
        later = CwFiled()
        await later.data.async_put(b"later")
        await later.async_save()
        assert not task.done()  # (left to the loop's end)
        return later.pk

    try:
        later = asyncio.run(main())
    finally:
        kept, kept_files, files, chunks = asyncio.run(
            filed_left(name, mongodb_uri, app)
        )
    assert [raw["_id"] for raw in kept] == [later]
    assert files == chunks == kept_files


def test_a_queryset_delete_resent_as_its_loop_ends_spares_a_document_it_left(
    mongodb_uri,
):
    """A queryset delete whose write ``asyncio.run()``'s end cuts short is
    sent again, and a document it listed, changed meanwhile to match its
    query no more, stays: its file is read as still held, and kept. Every
    listed file was deleted, the document left referring to a file gone."""
    name = f"cw_{uuid4().hex[:12]}"
    app = f"cw-{uuid4().hex[:8]}"

    async def main() -> Any:
        await connect_own_app(name, mongodb_uri, app)
        documents = []
        for number in range(2):
            document = CwFiled()
            await document.data.async_put(b"contents %d" % number)
            await document.async_save()
            documents.append(document)
        # The first delete held, then failing: only the resend deletes.
        admin = get_async_connection().admin
        count = await fail_point_on(
            admin, app, "delete", **BLOCKED, errorCode=2, namespace=f"{name}.cw_filed"
        )
        queryset = CwFiled.objects(__raw__={"tag": {"$ne": "kept"}})
        task = asyncio.ensure_future(queryset.async_delete())
        await Held(admin, app, ["delete"], count).reached_server()
        changed = documents[1].pk
        collection = CwFiled._get_collection()
        await collection.update_one({"_id": changed}, {"$set": {"tag": "kept"}})
        assert not task.done()  # (left to the loop's end)
        return changed

    try:
        changed = asyncio.run(main())
    finally:
        kept, kept_files, files, chunks = asyncio.run(
            filed_left(name, mongodb_uri, app)
        )
    assert [raw["_id"] for raw in kept] == [changed]
    assert len(kept_files) == 1
    assert files == chunks == kept_files


def test_a_queryset_delete_resent_as_its_loop_ends_names_its_ids_in_runs(
    mongodb_uri, monkeypatch
):
    """The resend of a queryset delete that ``asyncio.run()``'s end cuts
    short names the listed ids in runs of LISTED_IDS_BYTES, as the delete
    itself: it named them all in one command, which over 16 MB (some 700,000
    ids) the server refuses, the documents and their files left."""
    name = f"cw_{uuid4().hex[:12]}"
    app = f"cw-{uuid4().hex[:8]}"
    log = CommandLog()
    monkeypatch.setattr(gridfs, "LISTED_IDS_BYTES", 21)  # an id a run

    async def main() -> list[Any]:
        await connect_own_app(name, mongodb_uri, app, event_listeners=[log])
        ids = []
        for number in range(2):
            document = CwFiled()
            await document.data.async_put(b"contents %d" % number)
            await document.async_save()
            ids.append(document.pk)
        # The first delete held, then failing: only the resend deletes.
        admin = get_async_connection().admin
        count = await fail_point_on(
            admin, app, "delete", **BLOCKED, errorCode=2, namespace=f"{name}.cw_filed"
        )
        task = asyncio.ensure_future(CwFiled.objects.async_delete())
        await Held(admin, app, ["delete"], count).reached_server()
        assert not task.done()  # (left to the loop's end)
        return ids

    async def left() -> tuple[int, list, list]:
        admin = await connect_own_app(name, mongodb_uri, app, event_listeners=[log])
        database = get_async_connection()[name]
        await fail_point_off_once_ended(admin, app, "delete")
        kept = await database["cw_filed"].count_documents({})
        return (kept, *await files_left(database))

    try:
        ids = asyncio.run(main())
    finally:
        kept, files, chunks = asyncio.run(left())
    named = [
        event.command["deletes"][0]["q"]["_id"]["$in"]
        for event in log.events
        if event.command_name == "delete" and event.command["delete"] == "cw_filed"
    ]
    assert named == [[ids[0]], [ids[0]], [ids[1]]]
    assert (kept, files, chunks) == (0, [], [])


@pytest.mark.parametrize("receiver", [False, True], ids=["", "receivers"])
@pytest.mark.parametrize("kind", ["document", "queryset"])
def test_a_cascade_cut_short_as_its_loop_ends_finishes_what_it_planned(
    mongodb_uri, kind, receiver
):
    """A delete with rules outside a transaction whose roots' delete is held
    as ``asyncio.run()`` ends, its cascade's delete applied: the delete goes
    on from there, and the loop ends once the cascaded documents' files are
    gone too (their signals sent, each once). The resend planned the delete
    again: the cascaded documents, gone, were found by nothing, their files
    orphaned and their post_delete never sent."""
    name = f"cw_{uuid4().hex[:12]}"
    app = f"cw-{uuid4().hex[:8]}"
    sent: list[tuple[str, Any]] = []

    def pre_delete(sender: Any, document: Any, **kwargs: Any) -> None:
        sent.append(("pre", document.pk))

    def post_delete(sender: Any, document: Any, **kwargs: Any) -> None:
        sent.append(("post", document.pk))

    async def main() -> list[Any]:
        await connect_own_app(name, mongodb_uri, app)
        roots, children = await roots_with_children()
        admin = get_async_connection().admin
        count = await fail_point_on(
            admin, app, "delete", **BLOCKED, namespace=f"{name}.cw_filed_root"
        )
        work = (
            functools.partial(roots[0].async_delete, transaction=False)
            if kind == "document"
            else functools.partial(CwFiledRoot.objects.async_delete, transaction=False)
        )
        task = asyncio.ensure_future(work())
        await Held(admin, app, ["delete"], count).reached_server()
        assert not task.done()  # (left to the loop's end)
        return children[:1] if kind == "document" else children

    async def left() -> tuple[int, int, list, list]:
        admin = await connect_own_app(name, mongodb_uri, app)
        database = get_async_connection()[name]
        await fail_point_off_once_ended(admin, app, "delete")
        return await roots_left(database)

    if receiver:
        signals.pre_delete.connect(pre_delete, sender=CwFiledChild)
        signals.post_delete.connect(post_delete, sender=CwFiledChild)
    try:
        deleted = asyncio.run(main())
    finally:
        signals.pre_delete.disconnect(pre_delete, sender=CwFiledChild)
        signals.post_delete.disconnect(post_delete, sender=CwFiledChild)
        roots, children, files, chunks = asyncio.run(left())
    kept = 1 if kind == "document" else 0
    assert (roots, children) == (kept, kept)
    assert len(files) == len(chunks) == 2 * kept
    expected = [("pre", pk) for pk in deleted] + [("post", pk) for pk in deleted]
    assert sent == (expected if receiver else [])


def test_the_files_follow_up_cut_short_as_its_loop_ends_sends_post_delete(
    mongodb_uri,
):
    """A document's delete whose caller was cancelled while its write was on
    its way: the write applied, its files' delete follows in a task of its
    own, which ``asyncio.run()``'s end cancels while the file's delete is
    held: the file is deleted, then ``post_delete`` sent, before the loop
    closes. The cancellation skipped ``post_delete``: the document gone,
    its receivers never told."""
    name = f"cw_{uuid4().hex[:12]}"
    app = f"cw-{uuid4().hex[:8]}"
    sent: list[Any] = []

    def post_delete(sender: Any, document: Any, **kwargs: Any) -> None:
        sent.append((document.pk, kwargs))

    async def main() -> Any:
        await connect_own_app(name, mongodb_uri, app)
        document = CwFiled()
        await document.data.async_put(b"contents")
        await document.async_save()
        admin = get_async_connection().admin
        count = await fail_point_on(admin, app, "delete", times=2, **BLOCKED)
        task = asyncio.ensure_future(
            document.async_delete(signal_kwargs={"why": "test"})
        )
        await Held(admin, app, ["delete"], count).reached_server()
        task.cancel()  # (the document's delete goes on)
        with pytest.raises(asyncio.CancelledError):
            await task
        # Its file's delete, in the follow-up task, held as the loop ends.
        await Held(admin, app, ["delete"], count + 1).reached_server()
        return document.pk

    async def left() -> tuple[int, list, list]:
        admin = await connect_own_app(name, mongodb_uri, app)
        database = get_async_connection()[name]
        await fail_point_off_once_ended(admin, app, "delete")
        kept = await database["cw_filed"].count_documents({})
        files, chunks = await files_left(database)
        return kept, files, chunks

    signals.post_delete.connect(post_delete, sender=CwFiled)
    try:
        pk = asyncio.run(main())
    finally:
        signals.post_delete.disconnect(post_delete, sender=CwFiled)
        kept, files, chunks = asyncio.run(left())
    assert (kept, files, chunks) == (0, [], [])
    assert sent == [(pk, {"why": "test"})]


def test_a_cascade_cut_short_in_a_pre_delete_receiver_sends_each_signal_once(
    mongodb_uri,
):
    """A delete with rules outside a transaction whose cascaded document's
    ``pre_delete`` receiver (a coroutine) is awaited as ``asyncio.run()``
    ends: the delete goes on from the next step, as planned, each signal
    sent once, and every document and file is gone. The delete was planned
    and sent again: the receiver had that ``pre_delete`` twice."""
    name = f"cw_{uuid4().hex[:12]}"
    sent: list[tuple[str, Any]] = []
    entered: list[asyncio.Event] = []  # (the loop's, made in it)

    async def pre_delete(sender: Any, document: Any, **kwargs: Any) -> None:
        sent.append(("pre", document.pk))
        if len(sent) == 1:
            entered[0].set()
            await asyncio.sleep(3600)  # (until the loop's end cancels it)

    def post_delete(sender: Any, document: Any, **kwargs: Any) -> None:
        sent.append(("post", document.pk))

    async def main() -> list[Any]:
        entered.append(asyncio.Event())
        await connect_async(name, host=mongodb_uri, uuidRepresentation="standard")
        _, children = await roots_with_children()
        deleting = CwFiledRoot.objects.async_delete(transaction=False)
        task = asyncio.ensure_future(deleting)
        await entered[0].wait()
        assert not task.done()  # (left to the loop's end)
        return children

    async def left() -> tuple[int, int, list, list]:
        await connect_async(name, host=mongodb_uri, uuidRepresentation="standard")
        database = get_async_connection()[name]
        return await roots_left(database)

    signals.pre_delete.connect(pre_delete, sender=CwFiledChild)
    signals.post_delete.connect(post_delete, sender=CwFiledChild)
    try:
        children = asyncio.run(main())
    finally:
        signals.pre_delete.disconnect(pre_delete, sender=CwFiledChild)
        signals.post_delete.disconnect(post_delete, sender=CwFiledChild)
        assert asyncio.run(left()) == (0, 0, [], [])
    assert sorted(sent) == sorted(
        [("pre", pk) for pk in children] + [("post", pk) for pk in children]
    )


def test_a_cascade_cut_short_whose_post_delete_receiver_raises_deletes_its_files(
    mongodb_uri,
):
    """A delete with rules outside a transaction cut short by the loop's end
    (in a cascaded document's ``pre_delete`` receiver), which goes on as
    planned, and a cascaded document's ``post_delete`` receiver raising
    then: the documents are gone, and so are the files of all of them (the
    cascaded ones' and the roots'). They stayed, orphaned: the receiver's
    error ended the delete's going on before its files were deleted."""
    name = f"cw_{uuid4().hex[:12]}"
    entered: list[asyncio.Event] = []  # (the loop's, made in it)

    async def pre_delete(sender: Any, document: Any, **kwargs: Any) -> None:
        if not entered[0].is_set():
            entered[0].set()
            await asyncio.sleep(3600)  # (until the loop's end cancels it)

    def post_delete(sender: Any, document: Any, **kwargs: Any) -> None:
        raise RuntimeError("post_delete receiver")

    async def main() -> None:
        entered.append(asyncio.Event())
        await connect_async(name, host=mongodb_uri, uuidRepresentation="standard")
        await roots_with_children()
        deleting = CwFiledRoot.objects.async_delete(transaction=False)
        task = asyncio.ensure_future(deleting)
        await entered[0].wait()
        assert not task.done()  # (left to the loop's end)

    async def left() -> tuple[int, int, list, list]:
        await connect_async(name, host=mongodb_uri, uuidRepresentation="standard")
        database = get_async_connection()[name]
        return await roots_left(database)

    signals.pre_delete.connect(pre_delete, sender=CwFiledChild)
    signals.post_delete.connect(post_delete, sender=CwFiledChild)
    try:
        asyncio.run(main())
    finally:
        signals.pre_delete.disconnect(pre_delete, sender=CwFiledChild)
        signals.post_delete.disconnect(post_delete, sender=CwFiledChild)
    assert asyncio.run(left()) == (0, 0, [], [])


@pytest.mark.parametrize(
    ("held", "what"),
    [
        (
            "commitTransaction",
            [
                "commit of a transaction whose caller was cancelled (and the steps"
                " after it)"
            ],
        ),
        (
            "insert",
            [
                "write of CwDoc {0} whose caller was cancelled (and the steps after"
                " it)",
                "abort of a transaction whose caller was cancelled",
            ],
        ),
    ],
)
def test_a_transaction_going_on_when_its_loop_is_closed_by_hand(
    mongodb_uri, held, what
):
    """``loop.close()`` alone (no ``shutdown_asyncgens()``, which waits for
    it) while the commit of a block whose caller was cancelled (or a write of
    it, which the abort waits for) is held on the server: its outcome never
    reaches this side (nor do the steps after it run); the closed loop's
    exception handler is told so, once (and of the abort that waits for that
    write), as the next loop needs a client.
    Nothing said so. Then nothing of that loop is kept: the write's task, the
    transaction's and the caller's stayed in memory until the process exited
    (the write noted as working for its caller). (In a process of its own:
    the closed loop's coroutines, collected, would warn in other tests.)"""
    name = f"cw_{uuid4().hex[:12]}"
    script = _CLOSED_WHILE_COMMITTING.format(database=name, app=name, held=held)
    try:
        result = run_script(script, mongodb_uri)
    finally:
        with pymongo.MongoClient(mongodb_uri) as client:
            client.admin.command({"configureFailPoint": "failCommand", "mode": "off"})
            client.drop_database(name)
    assert result.stdout.splitlines() == ["closed", "next loop", "0 left"]
    reported = [line for line in result.stderr.splitlines() if "closed before" in line]
    named = _named(result.stderr)  # (the document written)
    assert reported == [
        f"The event loop closed before the {each.format(*named)} ended: the rest of"
        " it is not done (close a loop you run yourself after"
        " loop.run_until_complete(loop.shutdown_asyncgens()), as asyncio.run()"
        " does)"
        for each in what
    ]
    # Its coroutines, collected (closed as they go), ran none of our cleanup
    # that needs the loop (the fence, the abort: "There is no current event
    # loop", a coroutine never awaited) or the task's context (a ContextVar
    # token reset elsewhere: ValueError), printed as "Exception ignored".
    assert _our_frames_ignored(result.stderr) == []
    assert "never awaited" not in result.stderr
    # (Nor sent its fence's read on the loop running then: "Cannot use
    # AsyncMongoClient in different event loop", a task's error never retrieved.)
    assert "never retrieved" not in result.stderr


def _our_frames_ignored(stderr: str) -> list[str]:
    """The tracebacks of ``stderr`` printed as "Exception ignored" (an error
    raised as an object was collected) that pass through this package."""
    blocks: list[list[str]] = []
    for line in stderr.splitlines():
        if line.startswith("Exception ignored"):
            blocks.append([line])
        elif line.startswith(("Task was destroyed", "task:")) or "Warning:" in line:
            blocks.append([line])  # (the loop's report, or a warning)
        elif blocks:  # (chained ones too: "During handling of the above ...")
            blocks[-1].append(line)
    return [
        "\n".join(block)
        for block in blocks
        if block[0].startswith("Exception ignored")
        and any("mongoengine_async" in line for line in block[1:])
    ]


_CLOSED_WHILE_COMMITTING = textwrap.dedent(
    """
    import asyncio, gc, os, sys, warnings, weakref
    from mongoengine_async import Document, IntField, async_run_in_transaction
    from mongoengine_async import connect_async, detached, get_async_connection
    from mongoengine_async.context import current_session

    class CwDoc(Document):
        a = IntField()

    async def main():
        await connect_async("{database}", host=os.environ["MONGODB_URI"],
                            appname="{app}", retryWrites=False)
        await CwDoc(a=0).async_save()  # (the collection made outside the block)

        async def block():
            async with async_run_in_transaction():
                sessions.append(current_session().session_id)
                written.append(CwDoc(a=1))
                await written[0].async_save()

        admin = get_async_connection().admin
        point = {{"configureFailPoint": "failCommand"}}
        entered = (await admin.command({{**point, "mode": {{"times": 1}}, "data": {{
            "failCommands": ["{held}"], "blockConnection": True,
            "blockTimeMS": 2000, "appName": "{app}"}}}}))["count"]
        task = asyncio.ensure_future(block())
        await admin.command({{"waitForFailPoint": "failCommand",
                             "timesEntered": entered + 1, "maxTimeMS": 30000}})
        task.cancel()
        while not detached._finishing:  # (what the caller left going on)
            await asyncio.sleep(0)

    async def next_loop():
        admin = get_async_connection().admin  # (the next loop needing a client)
        print("next loop")
        await admin.command({{"killSessions": sessions}})  # (its transaction's locks)
        gc.collect()  # (the closed loop's tasks, let go of: collected in this one)

    sessions = []
    written = []
    warnings.simplefilter("default", RuntimeWarning)  # (coroutines never awaited)

    loop = asyncio.new_event_loop()
    loop.run_until_complete(main())
    left = [weakref.ref(task) for task in asyncio.all_tasks(loop)]
    loop.close()
    print("closed")
    print("named", repr(written.pop().pk), file=sys.stderr)
    asyncio.run(next_loop())
    gc.collect()
    print(sum(task() is not None for task in left), "left")
    """
)


async def test_a_save_cancelled_in_a_transaction_shows_changes_inside_a_list(app):
    """Cancelled in a transaction while its cached copies are updated, a save
    sends post_save once the transaction committed: its receivers see the
    changes of an embedded document inside a list set whole
    (``items[0]._changed_fields``), as those of a save that returned, and
    MongoEngine's, see them; they are cleared after."""
    listed = await CwListed(name="old", items=[CwInner(x=1), CwInner(x=2)]).async_save()
    await CwListedBook(listed=listed).async_save()
    listed = await CwListed.objects.async_get()
    listed.items[0].x = 5
    listed.items = listed.items[:1]
    listed.name = "new"
    seen = []

    def look(sender: type, document: Any, **kwargs: Any) -> None:
        seen.append(
            (list(document._changed_fields), list(document.items[0]._changed_fields))
        )

    async def block() -> None:
        await timed_out(held, listed.async_save())
        await until(lambda: "_async_save_turns" not in listed.__dict__)

    signals.post_save.connect(look, sender=CwListed)
    try:
        # The save's update passes; the cached copies' one is held.
        async with held_on_server(app, "update", BLOCK_MS, skip=1) as held:
            await in_transaction("context manager", block)
            await until(lambda: bool(seen))
            await until(lambda: listed._get_changed_fields() == [])
    finally:
        signals.post_save.disconnect(look, sender=CwListed)
    assert seen == [(["items", "name"], ["x"])]
    assert listed._get_changed_fields() == []
    raw = await CwListed._get_collection().find_one({"_id": listed.pk})
    assert raw["items"] == [{"x": 5}] and raw["name"] == "new"
    book = await CwListedBook._get_collection().find_one({})
    assert book["listed"]["name"] == "new"


async def test_a_save_of_unknown_outcome_keeps_its_id_and_an_insert_moves_its_mark(
    app,
):
    """A new document's save failing with an error that is not the server
    refusing the document (a command error: the insert may have been
    applied, as with a write concern error) keeps the id given before the
    write, so writing it again never stores it twice. Inserted again, its
    changes list the id's mark last, as MongoEngine's insert() leaves them
    (``['name', 'pk', '_id']``, tests/test_document_parity.py); ours left
    the mark the save's early id made first."""
    await CwDynamic.objects.async_first()  # the collection prepared
    document = CwDynamic._from_son({"name": "a"}, created=True)
    admin = get_async_connection().admin
    await fail_point_on(admin, app, "insert", errorCode=2)
    try:
        with pytest.raises(OperationError, match="Could not save document"):
            await document.async_save()
    finally:
        await admin.command({"configureFailPoint": "failCommand", "mode": "off"})
    kept = document.id
    assert kept is not None and document._created
    document.name = "b"
    await CwDynamic.objects.async_insert(document, load_bulk=False)
    assert document._changed_fields == ["name", "pk", "_id"]
    stored = await CwDynamic.objects.as_pymongo().async_to_list()
    assert stored == [{"_id": kept, "name": "b"}]


class CwHolder(Document):
    """A new one saved with cascade=True: its steps after its insert save
    ``doc`` (an update, which a fail point can hold)."""

    inner = EmbeddedDocumentField(CwInner)
    doc = ReferenceField(CwDoc)


@pytest.mark.parametrize("held_at", ["none", "insert", "update"])
async def test_a_new_document_cancelled_in_a_transaction_shows_embedded_changes(
    app, held_at
):
    """A new document whose save was cancelled in a transaction that then
    commits, once its insert was sent (``insert``) or in its steps after it
    (``update``: the cascade's), sends post_save after the commit: its
    receivers see the changes of its embedded document still on it and the
    document with no list (all changed), as MongoEngine's receivers of an
    insert, and those of a save that returned in it (``none``), see them;
    they are cleared after. (Ours cleared them: ``[]``.)"""
    seen = []

    def look(sender: type, document: Any, **kwargs: Any) -> None:
        seen.append(
            (
                kwargs["created"],
                hasattr(document, "_changed_fields"),
                list(document.inner._changed_fields),
            )
        )

    target = await CwDoc(a=0).async_save()
    target.a = 1
    new = CwHolder(inner=CwInner(x=1), doc=target)
    new.inner.x = 2

    async def block() -> None:
        if held_at == "none":
            await new.async_save(cascade=True)
            return
        await timed_out(held, new.async_save(cascade=True))
        await until(lambda: "_async_save_turns" not in new.__dict__)
        await until(lambda: "_async_save_turns" not in target.__dict__)

    signals.post_save.connect(look, sender=CwHolder)
    try:
        async with blocked(app, held_at) as held:
            await in_transaction("context manager", block)
            await until(lambda: bool(seen) and not context.following)
    finally:
        signals.post_save.disconnect(look, sender=CwHolder)
    assert seen == [(True, False, ["x"])]
    assert new._get_changed_fields() == [] and not new._created
    raw = await CwHolder._get_collection().find_one({"_id": new.pk})
    assert raw == {"_id": new.pk, "inner": {"x": 2}, "doc": target.pk}


class CwUnique(Document):
    name = StringField(unique=True)


async def test_a_new_document_cancelled_once_sent_and_refused_holds_no_id(
    mongodb_uri,
):
    """A new document whose save was cancelled once its insert was sent,
    which the server then refused (a unique key: not stored), holds no id
    once the write settled, as after a refused save that returned (the
    server's reply says so): it kept the id given before the write, so saved
    again it was a findAndModify and an insert. Now it is one insert."""
    log = CommandLog()
    async with own_app(mongodb_uri, event_listeners=[log]) as app:
        await CwUnique.async_ensure_indexes()
        await CwUnique(name="x").async_save()
        document = CwUnique(name="x")
        async with blocked(app, "insert") as held:
            await cancel_once_sent(held, document.async_save)
            assert document.pk is not None  # (its early id, while on its way)
        await _until_settled(document)
        assert (document.pk, document._created) == (None, True)
        gc.collect()  # (the refusal kept for its settling: not for ever)
        assert len(detached._failures) == 0
        await saved_again_in_one_insert(document, log)


async def saved_again_in_one_insert(document: CwUnique, log: CommandLog) -> None:
    """``document``, refused as a second "x", holds no id: named "y" and saved
    again, it is one insert, stored beside the first "x"."""
    document.name = "y"
    log.clear()
    await document.async_save()
    assert log.names == ["insert"]
    found = CwUnique._get_collection().find({}, {"_id": 0}, sort=[("name", 1)])
    assert await found.to_list() == [{"name": "x"}, {"name": "y"}]


class CancelOnReply(monitoring.CommandListener):
    """Once a reply to ``command`` arrives, the ``task`` it is given is
    cancelled in the same loop iteration, after the write's task goes on to
    fail but before the task awaiting it resumes (a deadline of
    ``asyncio.timeout`` falling as the reply comes)."""

    def __init__(self, command: str) -> None:
        self.command = command
        self.task: asyncio.Task[Any] | None = None

    def started(self, event: monitoring.CommandStartedEvent) -> None:
        pass

    def succeeded(self, event: monitoring.CommandSucceededEvent) -> None:
        if event.command_name == self.command and self.task is not None:
            asyncio.get_running_loop().call_soon(self.task.cancel)
            self.task = None

    def failed(self, event: monitoring.CommandFailedEvent) -> None:
        pass


async def test_a_new_document_cancelled_as_its_refusal_came_holds_no_id(mongodb_uri):
    """A new document whose save was cancelled as the server's refusal of
    its insert arrived (the write failed, then the caller was cancelled
    before it resumed) holds no id either: the refusal was in the outcome
    the caller never read, and the document kept its early id (saved again,
    a findAndModify and an insert)."""
    log, canceller = CommandLog(), CancelOnReply("insert")
    async with own_app(mongodb_uri, event_listeners=[log, canceller]):
        await CwUnique.async_ensure_indexes()
        await CwUnique(name="x").async_save()
        document = CwUnique(name="x")
        canceller.task = saving = asyncio.ensure_future(document.async_save())
        with pytest.raises(asyncio.CancelledError):
            await saving
        await _until_settled(document)
        assert (document.pk, document._created) == (None, True)
        await saved_again_in_one_insert(document, log)


class CwChecked(Document):
    """Its collection refuses a name "bad" (a validator: code 121)."""

    name = StringField()


async def checked_collection() -> Any:
    """CwChecked's collection, made with its validator."""
    return await get_async_db().create_collection(
        CwChecked._get_collection_name(), validator={"name": {"$ne": "bad"}}
    )


@pytest.fixture
async def sync_twin(app: str, mongodb_uri: str) -> AsyncIterator[Any]:
    """CwChecked's collection (:func:`checked_collection`), its database
    connected sync as well, under the alias "cw-sync"."""
    collection = await checked_collection()
    mongoengine_async.connect(
        db=collection.database.name,
        host=mongodb_uri,
        alias="cw-sync",
        uuidRepresentation="standard",
    )
    try:
        yield collection
    finally:
        mongoengine_async.disconnect("cw-sync")


async def test_an_early_id_stays_once_an_insert_stored_the_document_under_it(app):
    """A new document whose save was cancelled once its insert was sent,
    inserted meanwhile (``async_insert``, which waits for no save) under the
    early id that save gave it, keeps that id when the server then refuses
    the save's insert: it lost it (pk None, while stored), and saved again
    it was stored twice."""
    collection = await checked_collection()
    document = CwChecked(name="bad")
    async with blocked(app, "insert") as held:
        await cancel_once_sent(held, document.async_save)
        early = document.pk
        document.name = "good"
        await CwChecked.objects.async_insert(document, load_bulk=False)
        await _until_settled(document)
    assert document.pk == early
    document.name = "better"
    await document.async_save()
    assert await collection.find().to_list() == [{"_id": early, "name": "better"}]


async def test_an_early_id_stays_once_an_insert_stored_it_before_a_refusal(app):
    """The same with a save not cancelled: refused once the insert of
    another task stored the document under its early id, it raises and the
    document keeps that id."""
    collection = await checked_collection()
    document = CwChecked(name="bad")
    async with blocked(app, "insert") as held:
        saving = asyncio.ensure_future(document.async_save())
        await held.reached_server()
        early = document.pk
        document.name = "good"
        await CwChecked.objects.async_insert(document, load_bulk=False)
        with pytest.raises(OperationError, match="Document failed validation"):
            await saving
    assert document.pk == early
    assert await collection.find().to_list() == [{"_id": early, "name": "good"}]


async def test_an_early_id_stays_once_a_save_stored_it_before_a_refusal(app):
    """An insert refused once a save of another task (which does not wait for
    an insert) stored the document under the early id the insert gave it:
    the document keeps that id."""
    collection = await checked_collection()
    document = CwChecked(name="bad")
    async with blocked(app, "insert") as held:
        inserting = asyncio.ensure_future(CwChecked.objects.async_insert(document))
        await held.reached_server()
        early = document.pk
        document.name = "good"
        await document.async_save()
        with pytest.raises(OperationError, match="Document failed validation"):
            await inserting
    assert document.pk == early
    assert await collection.find().to_list() == [{"_id": early, "name": "good"}]


async def test_an_id_set_meanwhile_stays_once_a_cancelled_insert_is_refused(app):
    """A new document whose save was cancelled once its insert was sent,
    given an id by its user meanwhile, keeps that id when the server then
    refuses the insert."""
    await checked_collection()
    document = CwChecked(name="bad")
    chosen = ObjectId()
    async with blocked(app, "insert") as held:
        await cancel_once_sent(held, document.async_save)
        document.pk = chosen
        await _until_settled(document)
    assert document.pk is chosen


async def test_a_cancelled_insert_refused_takes_its_early_id_back(mongodb_uri):
    """A new document whose ``async_insert()`` was cancelled once its insert
    was sent, which the server then refused (a validator), holds no id once
    the write settled, as after a refused insert that raised: it kept the id
    the insert gave it, so saved again it was a findAndModify and an insert.
    Now it is one insert."""
    log = CommandLog()
    async with own_app(mongodb_uri, event_listeners=[log]) as app:
        collection = await checked_collection()
        document = CwChecked(name="bad")
        async with blocked(app, "insert") as held:
            await cancel_once_sent(
                held, lambda: CwChecked.objects.async_insert(document)
            )
            assert document.pk is not None  # (its early id, while on its way)
            await until(lambda: document.pk is None)  # (the settle's last step)
        assert document._created
        document.name = "good"
        log.clear()
        await document.async_save()
        assert log.names == ["insert"]
        found = await collection.find({}, {"_id": 0}).to_list()
        assert found == [{"name": "good"}]


async def test_an_early_id_stays_once_a_sync_save_stored_the_document_under_it(
    app, sync_twin
):
    """A new document whose async save was cancelled once its insert was
    sent, moved meanwhile to a sync alias on the same database
    (``switch_db``) and saved there under the early id that save gave it,
    keeps that id when the server then refuses the async insert: it lost it
    (pk None, while stored), and saved again it was stored twice."""
    collection = sync_twin
    document = CwChecked(name="bad")
    async with blocked(app, "insert") as held:
        await cancel_once_sent(held, document.async_save)
        early = document.pk
        document.name = "good"
        document.switch_db("cw-sync").save()
        await _until_settled(document)
    assert (document.pk, document._created) == (early, False)
    document.name = "better"
    document.save()
    assert await collection.find().to_list() == [{"_id": early, "name": "better"}]


@pytest.mark.parametrize("patched", [False, True])
async def test_an_early_id_stays_once_a_sync_insert_stored_the_document_under_it(
    app, sync_twin, patched
):
    """The same, the document inserted meanwhile by the sync ``insert()`` of
    its class switched to a sync alias, ours or MongoEngine's patched (a
    mock wrapping it): the patched one left the early id to be taken back
    (pk None, while stored), and saved again the document was stored twice."""
    collection = sync_twin
    insert = MongoEngineQuerySet.insert
    patch = mock.patch.object(
        MongoEngineQuerySet, "insert", autospec=True, side_effect=insert
    )
    document = CwChecked(name="bad")
    async with blocked(app, "insert") as held:
        await cancel_once_sent(held, document.async_save)
        early = document.pk
        document.name = "good"
        with (
            patch if patched else contextlib.nullcontext(),
            switch_db(CwChecked, "cw-sync") as synced,
        ):
            synced.objects.insert(document, load_bulk=False)
        await _until_settled(document)
    assert (document.pk, document._created) == (early, False)
    document.name = "better"
    await document.async_save()
    assert await collection.find().to_list() == [{"_id": early, "name": "better"}]


class _SavedInThreadAtCheck(dict):
    """An instance dict whose first read of the early id's mark, once
    ``armed``, runs a sync save of the document in a thread, to its end,
    just after it: a thread switch between the mark's check and its removal."""

    armed: Callable[[], None] | None = None

    def get(self, key: Any, default: Any = None) -> Any:
        value = super().get(key, default)
        save, self.armed = self.armed, None
        if key == to_bson.GIVEN_MARK and save is not None:
            thread = threading.Thread(target=save)
            thread.start()
            thread.join()
        return value


async def test_an_early_id_stays_once_a_sync_save_in_a_thread_raced_its_refusal(
    app, sync_twin
):
    """A new document whose async save was cancelled once its insert was
    sent, saved on a sync alias in another thread just as the server's
    refusal of the insert is taking the early id back (between the check
    of the id's mark and its removal): the document keeps the id it is
    stored under, and nothing fails. The loop reported a KeyError."""
    collection = sync_twin
    loop = asyncio.get_running_loop()
    reported: list = []
    loop.set_exception_handler(lambda _, report: reported.append(report))
    try:
        document = CwChecked(name="bad")
        async with blocked(app, "insert") as held:
            await cancel_once_sent(held, document.async_save)
            early = document.pk
            document.name = "good"
            state = document.__dict__ = _SavedInThreadAtCheck(document.__dict__)
            state.armed = lambda: document.switch_db("cw-sync").save()
            await _until_settled(document)
    finally:
        loop.set_exception_handler(None)
    assert reported == []
    assert (document.pk, document._created) == (early, False)
    assert await collection.find().to_list() == [{"_id": early, "name": "good"}]


async def test_a_cancelled_insert_that_landed_leaves_its_documents_saved(mongodb_uri):
    """Documents whose ``async_insert()`` was cancelled once its insert was
    sent, which the server then applied (no ``post_bulk_insert`` receiver),
    are saved once the write settled, as after an insert that returned: they
    stayed new, so a change saved next replaced each whole (a findAndModify,
    ``post_save`` saying ``created``) instead of sending the change."""
    log = CommandLog()
    async with own_app(mongodb_uri, event_listeners=[log]) as app:
        document = CwDoc(a=0, b=0)
        async with blocked(app, "insert") as held:
            await cancel_once_sent(
                held, lambda: CwDoc.objects.async_insert(document, load_bulk=False)
            )
        await until(lambda: not document._created)
        assert document._get_changed_fields() == []
        document.a = 1
        log.clear()
        await document.async_save()
        assert log.names == ["update"]
        assert await stored(document) == {"_id": document.pk, "a": 1, "b": 0}


async def test_a_selection_cut_short_while_the_primary_is_unknown_is_fenced(
    mongodb_uri,
):
    """The block gives its first operation up (held on the server), then its
    client loses the primary a moment (its monitor's check times out: the
    pool cleared, the primary Unknown), and an operation under a short
    ``pymongo.timeout()`` finds no server: its selection cut short, not
    waited whole, tells nothing of the server, and the block's transaction is
    fenced all the same. Unfenced, the late first operation started a
    transaction of its own once the abort was done, locking the document
    until the server's time limit (60 s)."""
    options = {"serverMonitoringMode": "poll", "heartbeatFrequencyMS": 500}
    async with (
        own_app(mongodb_uri, connectTimeoutMS=300, **options) as app,
        other_admin(mongodb_uri) as admin,
    ):
        document = await CwDoc(a=0, b=0).async_save()
        client = CwDoc._get_collection().database.client
        sessions = []

        async def block() -> None:
            note_session(sessions)
            update = CwDoc.objects(pk=document.pk).async_update(a=1)
            with contextlib.suppress(asyncio.TimeoutError):
                await expiring_once_held(held, update)
            await until(lambda: not client.topology_description.has_writable_server())
            with pymongo.timeout(0.1):
                await CwDoc.objects(pk=document.pk).async_first()

        # The update held, and the monitor's next two checks (its check, then
        # the one it retries at once on a new connection) held past their
        # time limit: the primary Unknown until the check after them.
        configured = await admin.command(
            "configureFailPoint",
            "failCommand",
            mode={"times": 3},
            data={
                "failCommands": ["update", "hello", "isMaster"],
                "blockConnection": True,
                "blockTimeMS": 6 * BLOCK_MS,
                "appName": app,
            },
        )
        held = Held(admin, app, ["update"], configured["count"])
        try:
            with pytest.raises(pymongo.errors.ServerSelectionTimeoutError):
                await in_transaction("context manager", block)
            await assert_nothing_locked(
                held, CwDoc._get_collection(), document.pk, sessions[0]
            )
        finally:
            await admin.command("configureFailPoint", "failCommand", mode="off")
        assert await stored(document) == {"_id": document.pk, "a": 0, "b": 3}
