"""Server cursors do not outlive the reads that opened them: a read cancelled
while its opening command (find, aggregate, a change stream's) is in flight
raises at once and the cursor that command opens is killed once its reply
came; a read of fewer results than the query has (``async_to_list(n)``)
closes the rest at once. Checked on the server (its idle cursors), with the
failCommand fail point holding the opening command."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AbstractAsyncContextManager
from typing import Any
from uuid import uuid4

import pytest
from pymongo import AsyncMongoClient

from conftest import Held, held_on_server
from mongoengine_async import (
    Document,
    FileField,
    IntField,
    StringField,
    async_run_in_transaction,
    get_async_connection,
    get_async_db,
)
from mongoengine_async.connection import disconnect_all_async
from mongoengine_async.testing import fresh_database

BLOCK_MS = 600


class ClItem(Document):
    n = IntField()


class ClFile(Document):
    data = FileField()


@pytest.fixture
async def app(mongodb_uri) -> AsyncIterator[str]:
    """Alias "default" on a client of its own application name (the fail
    point holds its commands only), with 300 documents (three default
    batches)."""
    name = f"cl-{uuid4().hex[:8]}"
    try:
        async with fresh_database("default", mongodb_uri, appname=name):
            await ClItem.objects.async_insert([ClItem(n=n) for n in range(300)])
            yield name
    finally:
        await disconnect_all_async()


async def idle_cursors(collection: str | None = None) -> set[int]:
    """The ids of the server's idle cursors on ClItem's collection (or
    ``collection``)."""
    collection = collection or ClItem._get_collection_name()
    namespace = f"{get_async_db().name}.{collection}"
    cursor = await get_async_connection().admin.aggregate(
        [
            {"$currentOp": {"idleCursors": True, "allUsers": True}},
            {"$match": {"type": "idleCursor", "ns": namespace}},
        ]
    )
    return {op["cursor"]["cursorId"] for op in await cursor.to_list(None)}


async def left_open(
    before: set[int], seconds: float, collection: str | None = None
) -> set[int]:
    """The cursors opened since ``before`` still open after ``seconds`` at
    most (a kill is sent by a task or the client's cleanup, once a second)."""
    deadline = time.monotonic() + seconds
    while (left := await idle_cursors(collection) - before) and (
        time.monotonic() < deadline
    ):
        await asyncio.sleep(0.05)
    return left


def blocked(app_name: str, command: str) -> AbstractAsyncContextManager[Held]:
    """The next ``command`` of the client waits BLOCK_MS on the server first."""
    return held_on_server(app_name, command, BLOCK_MS)


async def cancel_while_sent(
    held: Held,
    work: Callable[[], Awaitable[Any]],
    anyio: bool,
    at_once: bool = True,
) -> None:
    """Run ``work`` in a task, cancel it once its command is ``held`` on the
    server (at every await until it ends, as an anyio cancel scope does, if
    ``anyio``), and check the cancellation came at once (if ``at_once``):
    while the server still holds the command."""
    task = asyncio.ensure_future(work())
    await held.reached_server()
    assert not task.done()
    task.cancel()
    while anyio and not task.done():
        task.cancel()
        await asyncio.sleep(0)
    with pytest.raises(asyncio.CancelledError):
        await task
    assert not at_once or await held.still_on_server()


async def loop_over(iterable: Any) -> None:
    async for _ in iterable:
        pass


async def watched_with() -> None:
    async with ClItem.objects.async_watch() as stream:
        await stream.try_next()


READS: dict[str, tuple[str, Callable[[], Awaitable[Any]]]] = {
    "async for": ("find", lambda: loop_over(ClItem.objects)),
    "async_to_list(n)": ("find", lambda: ClItem.objects.async_to_list(150)),
    "batch_size().async_to_list()": (
        "find",
        lambda: ClItem.objects.batch_size(10).async_to_list(),
    ),
    "async_aggregate awaited": (
        "aggregate",
        lambda: ClItem.objects.async_aggregate([{"$match": {}}]),
    ),
    "async_aggregate iterated": (
        "aggregate",
        lambda: loop_over(ClItem.objects.async_aggregate([{"$match": {}}])),
    ),
    "async_watch iterated": (
        "aggregate",
        lambda: loop_over(ClItem.objects.async_watch()),
    ),
    "async_watch async with": ("aggregate", watched_with),
}


@pytest.mark.parametrize("read", list(READS))
@pytest.mark.parametrize("anyio", [False, True], ids=["asyncio", "anyio"])
async def test_a_read_cancelled_while_opening_leaves_no_cursor(app, read, anyio):
    command, work = READS[read]
    before = await idle_cursors()
    async with blocked(app, command) as held:
        await cancel_while_sent(held, work, anyio)
        await held.ended_on_server()  # (its cursor opened)
    assert await left_open(before, 3) == set()


class ClView(Document):
    """A view whose documents share their ids: the unique index of its
    collection does not hold for what the view gives."""

    id = IntField(primary_key=True)
    blob = StringField()
    meta = {"collection": "cl_view"}


async def test_a_get_by_id_cancelled_during_its_get_more_leaves_no_cursor(
    app, mongodb_uri
):
    """A read by id awaits PyMongo's to_list directly (not read_list): two
    documents of one id past 16 MB still take a getMore, and cancelled there
    at every await (a cancel scope), so PyMongo's own killCursors too, the
    cursor must still be killed, while the error is kept (its traceback keeps
    the cursor from PyMongo's cleanup of a cursor garbage-collected)."""
    db = get_async_db()
    blobs = [{"k": 1, "blob": letter * 9_000_000} for letter in "xy"]
    await db.cl_view_source.insert_many(blobs)
    pipeline = [{"$project": {"_id": "$k", "blob": 1}}]
    await db.create_collection("cl_view", viewOn="cl_view_source", pipeline=pipeline)
    with pytest.raises(ClView.MultipleObjectsReturned):
        await ClView.objects.async_get(id=1)
    before = await idle_cursors("cl_view")
    # The fail point set through another client: an idle connection in the
    # alias's pool would let PyMongo's own killCursors out before the next
    # cancellation (a busy application's pool may have none).
    other = AsyncMongoClient(mongodb_uri)
    try:
        blocking = held_on_server(app, "getMore", BLOCK_MS, admin=other.admin)
        async with blocking as held:
            task = asyncio.ensure_future(ClView.objects.async_get(id=1))
            await held.reached_server()
            while not task.done():
                task.cancel()
                await asyncio.sleep(0)
            with pytest.raises(asyncio.CancelledError) as kept:
                await task
            await held.ended_on_server()
    finally:
        await other.close()
    assert await left_open(before, 3, "cl_view") == set()
    del kept  # (kept until here, as a logged or re-raised error would be)


async def test_a_read_cancelled_while_opening_in_a_transaction(app):
    """The transaction aborts, once the find's reply came (as after a
    cancelled write: docs/transactions.md), and leaves no cursor; the data is
    untouched."""
    before = await idle_cursors()

    async def in_transaction() -> None:
        async with async_run_in_transaction():
            await ClItem(n=1000).async_save()
            await loop_over(ClItem.objects)

    async with blocked(app, "find") as held:
        await cancel_while_sent(held, in_transaction, anyio=False, at_once=False)
        await held.ended_on_server()
    assert await left_open(before, 3) == set()
    assert await ClItem.objects.async_count() == 300


async def test_a_cancelled_read_raises_what_the_opening_command_raised(app):
    """Not cancelled, the read gets its command's error as before."""
    with pytest.raises(Exception, match="unknown operator"):
        await ClItem.objects(__raw__={"n": {"$nope": 1}}).async_to_list(5)
    with pytest.raises(Exception, match="unknown operator"):
        await loop_over(ClItem.objects(__raw__={"n": {"$nope": 1}}))


@pytest.mark.parametrize(
    "read",
    [
        lambda: ClItem.objects.async_to_list(5),
        lambda: ClItem.objects.order_by("n").batch_size(10).async_to_list(25),
        lambda: ClItem.objects.skip(3).async_to_list(150),
    ],
    ids=["default batch", "batch_size()", "skip()"],
)
async def test_a_list_of_n_results_closes_the_rest_at_once(app, read, monkeypatch):
    """Not left to PyMongo's cleanup of the cursor (once a second, turned off
    here: a bound on the time it takes told them apart only on a fast
    machine): closed in a task of its own as the list is returned, three
    times in a row."""

    async def no_cleanup(self: AsyncMongoClient[Any]) -> None:
        """PyMongo's kill of the cursors garbage-collected unclosed: none."""

    monkeypatch.setattr(AsyncMongoClient, "_process_kill_cursors", no_cleanup)
    for _ in range(3):
        before = await idle_cursors()
        results = await read()
        assert len(results) in (5, 25, 150)
        assert await left_open(before, 5) == set()


async def test_a_list_of_n_results_is_the_first_n_of_the_whole(app):
    """The cursor is closed, not limited: the same documents, ties and all."""
    await ClItem.objects(n__lt=100).async_update(set__n=0)
    whole = [item.pk for item in await ClItem.objects.order_by("n").async_to_list()]
    some = await ClItem.objects.order_by("n").async_to_list(120)
    assert [item.pk for item in some] == whole[:120]


async def test_a_list_of_n_results_in_a_transaction(app):
    """In a transaction, the rest goes to the client's cleanup (its
    killCursors does not use the session, which the transaction's next
    operations use meanwhile)."""
    before = await idle_cursors()
    async with async_run_in_transaction():
        assert len(await ClItem.objects.async_to_list(5)) == 5
        await ClItem(n=1000).async_save()
        assert await ClItem.objects(n=1000).async_count() == 1
    assert await left_open(before, 3) == set()
    assert await ClItem.objects.async_count() == 301


async def iterate_chunks(document: ClFile) -> None:
    async for _ in document.data:
        pass


@pytest.mark.parametrize(
    "read",
    [iterate_chunks, lambda document: document.data.async_read(8 * 2**20)],
    ids=["async for", "async_read(size)"],
)
@pytest.mark.parametrize("anyio", [False, True], ids=["asyncio", "anyio"])
async def test_a_file_read_cancelled_while_opening_leaves_no_cursor(app, read, anyio):
    """A file of more than one batch of chunks (4 MB, or ``size``)."""
    document = ClFile()
    await document.data.async_put(bytes(range(256)) * (9 * 2**12))
    await document.async_save()
    before = await idle_cursors("fs.chunks")
    async with blocked(app, "find") as held:
        await cancel_while_sent(held, lambda: read(document), anyio)
        await held.ended_on_server()
    assert await left_open(before, 3, "fs.chunks") == set()


@pytest.mark.parametrize("anyio", [False, True], ids=["asyncio", "anyio"])
async def test_a_change_stream_cancelled_while_resuming_leaves_no_cursor(app, anyio):
    """PyMongo resumes a stream whose cursor the server lost (a new
    ``aggregate``); cancelled while that is in flight, the new cursor is
    killed once the reply came, as a first opening's."""
    before = await idle_cursors()
    stream = ClItem.objects.async_watch(max_await_time_ms=100)
    assert await stream.try_next() is None  # opened
    cursor_id = stream._stream._cursor._id  # type: ignore[union-attr]
    await get_async_db().command("killCursors", "cl_item", cursors=[cursor_id])
    async with blocked(app, "aggregate") as held:
        await cancel_while_sent(held, stream.try_next, anyio)  # getMore, then resume
        await held.ended_on_server()
    assert await left_open(before, 3) == set()


@pytest.mark.parametrize("anyio", [False, True], ids=["asyncio", "anyio"])
async def test_a_file_read_after_seek_cancelled_while_opening_leaves_no_cursor(
    app, anyio
):
    """The AsyncGridOut of async_get() after seek(): PyMongo's readchunk opens
    a chunk iterator of its own there, its find sent inline (its cursor was
    left open, 10 minutes). A file of more than a reply of PyMongo's (16 MB)."""
    document = ClFile()
    await document.data.async_put(bytes(range(256)) * (20 * 2**12))
    await document.async_save()
    grid_out = await document.data.async_get()
    await grid_out.seek(5)
    before = await idle_cursors("fs.chunks")
    async with blocked(app, "find") as held:
        await cancel_while_sent(held, lambda: grid_out.read(2**20), anyio)
        await held.ended_on_server()
    assert await left_open(before, 3, "fs.chunks") == set()


@pytest.mark.parametrize("anyio", [False, True], ids=["asyncio", "anyio"])
async def test_a_file_read_cancelled_while_finding_a_lost_cursor_again(app, anyio):
    """PyMongo's chunk iterator sends its find again (inline) when the server
    lost its cursor (CursorNotFound); cancelled while that find is in flight,
    the new cursor is killed once the reply came, as a first find's."""
    document = ClFile()
    await document.data.async_put(bytes(range(256)) * (9 * 2**12))  # 2+ batches
    await document.async_save()
    grid_out = await document.data.async_get()
    await grid_out.readchunk()  # the first batch (4 MB) read
    before = await idle_cursors("fs.chunks")
    cursor_id = grid_out._chunk_iter._cursor._id
    await get_async_db().command("killCursors", "fs.chunks", cursors=[cursor_id])
    async with blocked(app, "find") as held:  # the getMore fails, the find is held
        await cancel_while_sent(held, lambda: grid_out.read(), anyio)
        await held.ended_on_server()
    assert await left_open(before - {cursor_id}, 3, "fs.chunks") == set()
