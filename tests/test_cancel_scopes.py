"""A cancellation delivered again at every await, as an anyio cancel scope
does (Starlette's streaming response when the client disconnects under
uvicorn, ``anyio.move_on_after``), still gets the server cursor of a read
cancelled midway killed. PyMongo closes the connection of a cancelled reply
and awaits the ``killCursors`` on a new one, which such a scope cancels too."""

from __future__ import annotations

import asyncio
import contextvars
import os
import re
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest
from pymongo import AsyncMongoClient
from pymongo.asynchronous import pool

from mongoengine_async import (
    Document,
    FileField,
    IntField,
    ListField,
    ReferenceField,
    get_async_db,
)
from mongoengine_async import queryset as queryset_module
from mongoengine_async import select_related as select_related_module
from mongoengine_async.testing import fresh_database

WAIT_SECONDS = 20
ALIAS = "cancel_scopes"
_IN_GET_MORE: contextvars.ContextVar[bool] = contextvars.ContextVar(
    "in_get_more", default=False
)


class CsrRow(Document):
    n = IntField()
    meta = {"db_alias": ALIAS}


class CsrHolder(Document):
    rows = ListField(ReferenceField(CsrRow))
    meta = {"db_alias": ALIAS}


class CsrFile(Document):
    data = FileField(db_alias=ALIAS)
    meta = {"db_alias": ALIAS}


@pytest.fixture
async def database(mongodb_uri: str) -> AsyncIterator[str]:
    """The models' alias, used by one task at a time: its pool holds one
    connection, so once that of the cancelled reply is closed the kill needs
    a new one."""
    async with fresh_database(ALIAS, mongodb_uri):
        yield get_async_db(ALIAS).name + "."


@pytest.fixture
async def probe(mongodb_uri: str) -> AsyncIterator[AsyncMongoClient[Any]]:
    """A client of its own, to look at the server's cursors."""
    client: AsyncMongoClient[Any] = AsyncMongoClient(mongodb_uri)
    yield client
    await client.close()


@pytest.fixture
def get_more_started(monkeypatch: pytest.MonkeyPatch) -> asyncio.Event:
    """Every getMore waits for its reply (a slow server): the wait is in
    PyMongo's receive, so a cancellation there is one of a getMore in flight."""
    started = asyncio.Event()
    run_operation = AsyncMongoClient._run_operation
    receive = pool.async_receive_message

    async def run(self: Any, operation: Any, *args: Any, **kwargs: Any) -> Any:
        _IN_GET_MORE.set(operation.name == "getMore")
        return await run_operation(self, operation, *args, **kwargs)

    async def slow_receive(*args: Any, **kwargs: Any) -> Any:
        if _IN_GET_MORE.get():
            started.set()
            await asyncio.sleep(WAIT_SECONDS * 2)
        return await receive(*args, **kwargs)

    monkeypatch.setattr(AsyncMongoClient, "_run_operation", run)
    monkeypatch.setattr(pool, "async_receive_message", slow_receive)
    return started


async def open_cursors(probe: AsyncMongoClient[Any], name: str) -> int:
    """The idle cursors the server holds on database ``name`` (matched on the
    server: a reply of another client's cursors too would need a getMore,
    which ``get_more_started`` holds up, as any client's)."""
    cursor = await probe.admin.aggregate(
        [
            {"$currentOp": {"idleCursors": True, "allUsers": True}},
            {"$match": {"type": "idleCursor", "ns": {"$regex": f"^{re.escape(name)}"}}},
        ]
    )
    return len(await cursor.to_list(None))


async def until(condition: Callable[[], Awaitable[bool]]) -> None:
    async def wait() -> None:
        while not await condition():
            await asyncio.sleep(0.05)

    await asyncio.wait_for(wait(), WAIT_SECONDS)


async def cancel_in_get_more(
    read: Callable[[], Awaitable[Any]],
    started: asyncio.Event,
    probe: AsyncMongoClient[Any],
    name: str,
) -> None:
    """Run ``read`` until a getMore is in flight, cancel it as anyio does (at
    every await, until it ends), then wait for the server to drop the cursor."""
    task = asyncio.create_task(read())
    await asyncio.wait_for(started.wait(), WAIT_SECONDS)
    await until(lambda: _is(open_cursors(probe, name), 1))
    while not task.done():
        task.cancel()
        await asyncio.sleep(0)
    with pytest.raises(asyncio.CancelledError):
        await task
    await until(lambda: _is(open_cursors(probe, name), 0))


async def _is(count: Awaitable[int], expected: int) -> bool:
    return await count == expected


async def rows() -> None:
    await CsrRow.objects.async_insert([CsrRow(n=n) for n in range(10)])


async def test_async_for(
    database: str, probe: AsyncMongoClient[Any], get_more_started: asyncio.Event
) -> None:
    await rows()

    async def read() -> None:
        async for _ in CsrRow.objects.batch_size(2):
            pass

    await cancel_in_get_more(read, get_more_started, probe, database)


async def test_async_to_list(
    database: str, probe: AsyncMongoClient[Any], get_more_started: asyncio.Event
) -> None:
    await rows()
    read = CsrRow.objects.batch_size(2).async_to_list
    await cancel_in_get_more(read, get_more_started, probe, database)


def small_whole_results(monkeypatch: pytest.MonkeyPatch) -> None:
    """Reads of a whole result in replies of 2 documents (not 16 MB): the
    getMores of a large result, with 10 documents."""
    monkeypatch.setattr(queryset_module, "WHOLE_RESULT", 2)
    monkeypatch.setattr(select_related_module, "WHOLE_RESULT", 2)


async def test_async_in_bulk(
    database: str,
    probe: AsyncMongoClient[Any],
    get_more_started: asyncio.Event,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    await rows()
    ids = await CsrRow.objects.async_distinct("id")
    small_whole_results(monkeypatch)

    async def read() -> None:
        await CsrRow.objects.async_in_bulk(ids)

    await cancel_in_get_more(read, get_more_started, probe, database)


async def test_async_select_related(
    database: str,
    probe: AsyncMongoClient[Any],
    get_more_started: asyncio.Event,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    await rows()
    await CsrHolder(rows=await CsrRow.objects.async_to_list()).async_save()
    small_whole_results(monkeypatch)

    async def read() -> None:
        await CsrHolder.objects.async_select_related()

    await cancel_in_get_more(read, get_more_started, probe, database)


async def test_aggregation(
    database: str, probe: AsyncMongoClient[Any], get_more_started: asyncio.Event
) -> None:
    await rows()

    async def read() -> None:
        async for _ in CsrRow.objects.async_aggregate([], batchSize=2):
            pass

    await cancel_in_get_more(read, get_more_started, probe, database)


async def read_chunks(proxy: Any) -> None:
    async for _ in proxy:
        pass


async def read_grid_out(proxy: Any, seek: int = 0) -> None:
    grid_out = await proxy.async_get()
    if seek:
        await grid_out.seek(seek)  # (a read after it opens another cursor)
    await grid_out.read()


FILE_READS: dict[str, Callable[[Any], Awaitable[Any]]] = {
    "async for": read_chunks,
    # async_read(size), the AsyncGridOut of async_get() (seek or not) left a
    # chunk cursor open: PyMongo's close of it was cancelled too. (A read of
    # size asks for its chunks at once: its getMore, past the first reply of
    # 16 MB, leaves some for the cursor to hold.)
    "async_read(size)": lambda proxy: proxy.async_read(18 * 1024 * 1024),
    "AsyncGridOut.read()": read_grid_out,
    "AsyncGridOut.read() after seek()": lambda proxy: read_grid_out(proxy, 5),
}


@pytest.mark.parametrize("read", list(FILE_READS))
async def test_file_chunks(
    database: str,
    probe: AsyncMongoClient[Any],
    get_more_started: asyncio.Event,
    read: str,
) -> None:
    document = CsrFile()
    size = 36 if read == "async_read(size)" else 10  # MB, 3 batches of 4 MB
    await document.data.async_put(os.urandom(size * 1024 * 1024))
    await document.async_save()
    proxy = await CsrFile.data.async_get(document)
    assert proxy is not None
    await cancel_in_get_more(
        lambda: FILE_READS[read](proxy), get_more_started, probe, database
    )


async def test_change_stream(
    database: str, probe: AsyncMongoClient[Any], get_more_started: asyncio.Event
) -> None:
    await rows()

    async def read() -> None:
        async for _ in CsrRow.async_watch(max_await_time_ms=100):
            pass

    await cancel_in_get_more(read, get_more_started, probe, database)


async def test_change_stream_try_next(
    database: str, probe: AsyncMongoClient[Any], get_more_started: asyncio.Event
) -> None:
    """``try_next()`` outside ``async for`` (PyMongo's awaited close of the
    cancelled stream is cancelled too), in ``async with`` or not."""
    await rows()
    stream = CsrRow.async_watch(max_await_time_ms=100)

    async def read() -> None:
        await stream.try_next()

    await cancel_in_get_more(read, get_more_started, probe, database)

    async def read_within() -> None:
        async with CsrRow.async_watch(max_await_time_ms=100) as within:
            await within.try_next()

    get_more_started.clear()
    await cancel_in_get_more(read_within, get_more_started, probe, database)
