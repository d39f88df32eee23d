"""Uploads under way when their alias is disconnected, or their loop ends.

``disconnect_async()`` (and a loop's end) closes the alias's client only once
the uploads under way on it ended: closed under one (an insert of its chunks
held on the server), the upload failed with PyMongo's ``InvalidOperation``
("Cannot use AsyncMongoClient after close"), or, cancelled, could not remove
what it wrote: its chunks stayed with no files document. MongoEngine's sync
``disconnect()`` closes the client under a ``put`` of another thread so (it
raises that error, its chunks stay). Each test reads the bucket back with a
client of its own.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import io
import os
import re
import sys
import time
import warnings
from collections.abc import AsyncIterator
from typing import Any
from uuid import uuid4

import bson
import pymongo
import pytest
import pytest_asyncio
from PIL import Image

import mongoengine_async.connection
import mongoengine_async.detached
from conftest import Held, drop_database_sync, held_on_server
from mongoengine_async import (
    Document,
    FileField,
    ImageField,
    connect_async,
    disconnect_async,
    get_async_connection,
    get_async_db,
)
from mongoengine_async.testing import fresh_database

CHUNK = 255 * 1024
DATA = os.urandom(3 * CHUNK + 7)


class UdFile(Document):
    f = FileField(collection_name="ud")


class UdImage(Document):
    image = ImageField(collection_name="ud", thumbnail_size=(8, 8, True))


@pytest_asyncio.fixture
async def app(mongodb_uri: str) -> AsyncIterator[str]:
    """Alias "default" on a client with an application name of its own (the
    fixture's value): a fail point holds this test's commands only."""
    name = f"ud-{uuid4().hex[:8]}"
    async with fresh_database("default", mongodb_uri, appname=name):
        await UdFile(f=None).f.async_put(b"warm")  # (the bucket's indexes)
        yield name


@pytest_asyncio.fixture
async def admin(mongodb_uri: str) -> AsyncIterator[Any]:
    """A client of its own: the fail point's, and the reader of the bucket."""
    client: pymongo.AsyncMongoClient[Any] = pymongo.AsyncMongoClient(mongodb_uri)
    try:
        yield client
    finally:
        await client.close()


async def bucket(client: Any, database: str) -> tuple[list, list]:
    """Bucket "ud" but the warm-up file: ``(_id, filename, length)`` of each
    files document, ``(files_id, n, data)`` of each chunk."""
    db = client[database]
    files = await db["ud.files"].find({"length": {"$ne": 4}}).to_list()
    chunks = db["ud.chunks"].find({"data": {"$ne": b"warm"}}).sort("n")
    return (
        [(f["_id"], f.get("filename"), f["length"]) for f in files],
        [(c["files_id"], c["n"], c["data"]) for c in await chunks.to_list()],
    )


def counted(chunks: list) -> list[tuple[Any, int, int]]:
    """``chunks`` of :func:`bucket`, their data as its length (a short repr)."""
    return [(files_id, n, len(data)) for files_id, n, data in chunks]


async def put(proxy: Any, **kwargs: Any) -> Any:
    await proxy.async_put(DATA, filename="held.bin", **kwargs)
    return proxy.grid_id


@pytest.mark.parametrize("write", ["async_put", "async_replace"])
async def test_a_cancelled_upload_is_removed_before_the_client_closes(
    app: str, admin: Any, write: str
) -> None:
    """The uploading task cancelled while its chunks' insert is held on the
    server (1.5 s), ``disconnect_async()`` called right after (before the
    task ran its cancellation): the disconnect waits until the upload
    removed what it wrote, after that insert; nothing of it is left (the
    old file of a replace stays whole)."""
    name = get_async_db().name
    proxy = UdFile().f
    if write == "async_replace":
        await proxy.async_put(b"old", filename="old.bin")
    old = proxy.grid_id
    async with held_on_server(app, "insert", 1500, admin=admin.admin) as held:
        task = asyncio.ensure_future(getattr(proxy, write)(DATA))
        await held.reached_server()
        task.cancel()
        await disconnect_async("default")
        with pytest.raises(asyncio.CancelledError):
            await task
        await held.ended_on_server()
    files, chunks = await bucket(admin, name)
    if old is not None:
        assert (files, chunks) == ([(old, "old.bin", 3)], [(old, 0, b"old")])
    else:
        assert (files, counted(chunks)) == ([], [])


async def test_a_disconnect_waits_for_an_upload_under_way(app: str, admin: Any) -> None:
    """Another task's upload under way (its chunks' insert held 1.5 s) ends
    before ``disconnect_async()`` closes the client: it returns, and its
    file is whole in the bucket."""
    name = get_async_db().name
    proxy = UdFile().f
    async with held_on_server(app, "insert", 1500, admin=admin.admin) as held:
        task = asyncio.ensure_future(put(proxy))
        await held.reached_server()
        await disconnect_async("default")
        assert task.done()
        grid_id = await task
    files, chunks = await bucket(admin, name)
    assert files == [(grid_id, "held.bin", len(DATA))]
    assert [(f, n) for f, n, _ in chunks] == [(grid_id, n) for n in range(4)]
    assert b"".join(data for _, _, data in chunks) == DATA


async def test_an_upload_past_the_disconnects_wait_is_reported(
    app: str, admin: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An upload still under way once the disconnect's wait is spent (0.3 s
    here, 30 s by default; its insert held 1.5 s) is reported to the loop's
    exception handler, naming the file, and the client closed under it: the
    upload raises PyMongo's error for a closed client."""
    monkeypatch.setattr(mongoengine_async.connection, "_END_SECONDS", 0.3)
    loop = asyncio.get_running_loop()
    reports: list[dict] = []
    monkeypatch.setattr(loop, "call_exception_handler", reports.append)
    grid_id = bson.ObjectId()
    async with held_on_server(app, "insert", 1500, admin=admin.admin) as held:
        task = asyncio.ensure_future(put(UdFile().f, _id=grid_id))
        await held.reached_server()
        await disconnect_async("default")
        assert not task.done()
        with pytest.raises(
            pymongo.errors.InvalidOperation,
            match=r"^Cannot use AsyncMongoClient after close$",
        ):
            await task
        await held.ended_on_server()
    assert [r["message"] for r in reports] == [
        "disconnect_async('default') stopped waiting for the upload of file "
        f"{grid_id!r} to ud after 0.3 s (the most it waits): the "
        "rest of it may not be done"
    ]


def test_the_end_of_a_loop_run_by_hand_waits_for_an_upload_under_way(
    mongodb_uri: str,
) -> None:
    """A loop run by hand, ended with ``loop.shutdown_asyncgens()`` while a
    task's upload is under way (its chunks' insert held 1.5 s): the loop's
    end closes the client once the upload ended, its file whole."""
    name, app = f"test_{uuid4().hex[:12]}", f"ud-{uuid4().hex[:8]}"
    tasks: list[asyncio.Future[Any]] = []
    admins: list[pymongo.AsyncMongoClient[Any]] = []
    client: pymongo.MongoClient[Any] = pymongo.MongoClient(mongodb_uri)
    fail_point = {"configureFailPoint": "failCommand"}

    async def main() -> None:
        await connect_async(
            name, host=mongodb_uri, appname=app, uuidRepresentation="standard"
        )
        await UdFile().f.async_put(b"warm")  # (the bucket's indexes)
        # (Held till after the loop's end: not turned off by an async context
        # manager, which shutdown_asyncgens() would close.)
        held = {"failCommands": ["insert"], "blockConnection": True}
        configured = client.admin.command(
            {
                **fail_point,
                "mode": {"times": 1},
                "data": {**held, "blockTimeMS": 1500, "appName": app},
            }
        )
        admins.append(pymongo.AsyncMongoClient(mongodb_uri))
        tasks.append(asyncio.ensure_future(put(UdFile().f)))
        entered = configured["count"]
        await Held(admins[0].admin, app, ["insert"], entered).reached_server()
        assert not tasks[0].done()  # (the loop ends under it)

    loop = asyncio.new_event_loop()
    try:
        loop.run_until_complete(main())
        loop.run_until_complete(loop.shutdown_asyncgens())
        assert tasks[0].done() and not tasks[0].cancelled()
        grid_id = tasks[0].result()
        loop.run_until_complete(admins[0].close())
        loop.close()
        files = list(client[name]["ud.files"].find({"length": len(DATA)}))
        chunks = list(client[name]["ud.chunks"].find({"files_id": grid_id}))
        assert [f["_id"] for f in files] == [grid_id]
        assert len(chunks) == 4
    finally:
        client.admin.command({**fail_point, "mode": "off"})
        drop_database_sync(client, name)
        client.close()
        if not loop.is_closed():
            loop.close()
        asyncio.run(disconnect_async("default"))


@pytest.mark.parametrize("where", ["in the source", "in a task it awaits"])
async def test_an_uploads_source_disconnecting_does_not_wait_for_it(
    app: str, admin: Any, monkeypatch: pytest.MonkeyPatch, where: str
) -> None:
    """The upload's own data source disconnects its alias (itself, or in a
    task it starts and awaits): the disconnect does not wait for that
    upload, which cannot end before it returns (it waited its whole time,
    5 s here, 30 s by default, then reported the upload). The client closed,
    the upload raises PyMongo's error for it, as a sync ``put()`` whose
    source calls ``disconnect()`` does."""
    monkeypatch.setattr(mongoengine_async.connection, "_END_SECONDS", 5.0)
    loop = asyncio.get_running_loop()
    reports: list[dict] = []
    monkeypatch.setattr(loop, "call_exception_handler", reports.append)
    name = get_async_db().name
    took: list[float] = []

    async def source() -> AsyncIterator[bytes]:
        yield DATA[:CHUNK]
        started = time.monotonic()
        if where == "in the source":
            await disconnect_async("default")
        else:
            await asyncio.ensure_future(disconnect_async("default"))
        took.append(time.monotonic() - started)
        yield DATA[CHUNK:]

    with pytest.raises(
        pymongo.errors.InvalidOperation,
        match=r"^Cannot use AsyncMongoClient after close$",
    ):
        await UdFile().f.async_put(source())
    assert took[0] < 2 and reports == []
    files, chunks = await bucket(admin, name)
    assert (files, chunks) == ([], [])  # (its first piece not sent yet)


def image() -> bytes:
    """A 200x200 image (a thumbnail is made of it)."""
    out = io.BytesIO()
    Image.frombytes("RGB", (200, 200), os.urandom(200 * 200 * 3)).save(out, "BMP")
    return out.getvalue()


@pytest.mark.parametrize("in_session", [False, True])
async def test_a_cancelled_image_put_is_removed_before_the_client_closes(
    app: str, admin: Any, in_session: bool
) -> None:
    """An ``ImageField``'s put cancelled while its image's chunks' insert is
    held on the server (its thumbnail stored before), ``disconnect_async()``
    called right after: the disconnect waits until the put removed the
    image's chunks and the thumbnail too; nothing of it is left, and the
    task raises its cancellation. (In a session of the caller's, the
    thumbnail's delete came once the client was closed: it stayed, whole,
    and the put raised ``InvalidOperation`` instead.)"""
    name = get_async_db().name
    data = image()
    async with contextlib.AsyncExitStack() as stack:
        session = None
        if in_session:
            session = get_async_connection().start_session()
            await stack.enter_async_context(session)
        # (The thumbnail's two inserts pass; the image's chunks' is held.)
        held = await stack.enter_async_context(
            held_on_server(app, "insert", 1500, skip=2, admin=admin.admin)
        )
        task = asyncio.ensure_future(UdImage().image.async_put(data, session=session))
        await held.reached_server()
        assert len((await bucket(admin, name))[0]) == 1  # the thumbnail
        task.cancel()
        await disconnect_async("default")
        assert task.done()
        with pytest.raises(asyncio.CancelledError):
            await task
        await held.ended_on_server()
    assert await bucket(admin, name) == ([], [])


def test_an_upload_whose_loop_was_closed_by_hand_is_collected_quietly(
    mongodb_uri: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A loop closed with ``loop.close()`` alone while a task's upload waits
    for its source: collected, the upload tries no removal (nothing can run
    it: it made a task on a new loop, never run, and Python reported
    "coroutine ignored GeneratorExit" and "coroutine '_remove_partial' was
    never awaited"); the loop is told the upload was left undone."""
    name = f"test_{uuid4().hex[:12]}"
    unraisable: list[Any] = []
    monkeypatch.setattr(sys, "unraisablehook", unraisable.append)
    reports: list[str] = []
    tasks: list[asyncio.Future[Any]] = []

    async def source() -> AsyncIterator[bytes]:
        yield b"x" * 1000
        await asyncio.Event().wait()  # (never set)

    async def main() -> None:
        await connect_async(name, host=mongodb_uri, uuidRepresentation="standard")
        tasks.append(asyncio.ensure_future(UdFile().f.async_put(source())))
        await asyncio.sleep(0.1)

    loop = asyncio.new_event_loop()
    loop.set_exception_handler(lambda _, context: reports.append(context["message"]))
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            loop.run_until_complete(main())
            loop.close()
            tasks.clear()
            gc.collect()
            mongoengine_async.detached.left_undone()
        assert [str(u.exc_value) for u in unraisable] == []
        assert [
            str(w.message) for w in caught if "never awaited" in str(w.message)
        ] == []
        left = [r for r in reports if "upload" in r]
        assert len(left) == 1 and re.fullmatch(
            r"The event loop closed before the upload of file ObjectId\('\w{24}'\)"
            r" to ud ended: the rest of it is not done \(close a loop you run"
            r" yourself after loop\.run_until_complete\(loop\.shutdown_asyncgens"
            r"\(\)\), as asyncio\.run\(\) does\)",
            left[0],
        ), left
    finally:
        if not loop.is_closed():
            loop.close()
        asyncio.run(disconnect_async("default"))
        with pymongo.MongoClient(mongodb_uri) as client:
            drop_database_sync(client, name)
