"""Uploads that fail on an id another file has, and the pieces an upload takes.

MongoEngine's ``put`` with the ``_id`` of an existing file raises ``FileExists``
and leaves that file intact; ours does too, whatever the source and wherever
the duplicate is found (at the first chunk, or at the files document of an
empty file), while a failed upload of a new file still leaves nothing behind.
"""

from __future__ import annotations

import array
import asyncio
import io
import os
import re
import threading
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any
from uuid import uuid4

import mongoengine
import pymongo.errors
import pytest
import pytest_asyncio
from gridfs.errors import FileExists
from PIL import Image

from conftest import sync_alias_beside
from mongoengine_async import (
    Document,
    FileField,
    ImageField,
    get_async_connection,
    get_async_db,
)
from mongoengine_async.testing import fresh_database

CHUNK = 255 * 1024
SYNC = "gfs-uploads-sync"


class GuFile(Document):
    f = FileField(collection_name="gu")


class GuImage(Document):
    image = ImageField(collection_name="gu_images", thumbnail_size=(8, 8, True))


class GuMeFile(mongoengine.Document):
    """MongoEngine's own, on the sync alias: the reference behaviour."""

    meta = {"db_alias": SYNC, "collection": "gu_me_file"}
    f = mongoengine.FileField(db_alias=SYNC, collection_name="gu_me")


@pytest.fixture
def sync_alias(async_alias: str, mongodb_uri: str):
    with sync_alias_beside(SYNC, async_alias, mongodb_uri) as alias:
        yield alias


@pytest_asyncio.fixture
async def app_alias(mongodb_uri: str) -> AsyncIterator[str]:
    """Alias "default" on a client with an application name of its own (the
    fixture's value), so that a fail point fails this test's commands only."""
    from mongoengine_async.connection import disconnect_all_async

    name = f"gu-{uuid4().hex[:8]}"
    try:
        async with fresh_database("default", mongodb_uri, appname=name):
            yield name
    finally:
        await disconnect_all_async()


@asynccontextmanager
async def fail_point(
    app_name: str, mode: Any = None, **data: Any
) -> AsyncIterator[None]:
    """The server's failCommand fail point (once, unless ``mode`` says
    otherwise) for the client ``app_name``."""
    admin = get_async_connection().admin
    command = {"configureFailPoint": "failCommand"}
    await admin.command(
        {
            **command,
            "mode": mode or {"times": 1},
            "data": {**data, "appName": app_name},
        }
    )
    try:
        yield
    finally:
        await admin.command({**command, "mode": "off"})


async def bucket(name: str = "gu") -> tuple[list, list]:
    """Every files document and chunk of ``name``, read with the driver."""
    db = get_async_db()
    files = await db[f"{name}.files"].find().sort("_id").to_list()
    chunks = db[f"{name}.chunks"].find().sort([("files_id", 1), ("n", 1)])
    return files, await chunks.to_list()


def same_message(error: BaseException, grid_id: Any) -> str:
    return str(error).replace(repr(grid_id), "<id>")


async def pieces(*parts: Any) -> AsyncIterator[Any]:
    for part in parts:
        await asyncio.sleep(0)
        yield part


async def failing_after_one_chunk() -> AsyncIterator[bytes]:
    yield b"x" * CHUNK
    raise OSError("source broke")


# -- FileExists keeps the existing file ----------------------------------------------

SOURCES = {  # (MongoEngine's, ours)
    "bytes": (lambda: b"other",) * 2,
    "two chunks": (lambda: os.urandom(2 * CHUNK + 1),) * 2,
    "10 MB from an async iterator": (
        lambda: b"z" * CHUNK * 40,
        lambda: pieces(*[b"z" * CHUNK] * 40),
    ),
    "sync file": (lambda: io.BytesIO(b"y" * (3 * CHUNK)),) * 2,
}


@pytest.mark.parametrize("source", SOURCES)
async def test_put_with_another_files_id_keeps_that_file(
    async_alias, sync_alias, source
):
    content = os.urandom(2 * CHUNK + 7)
    kept = GuMeFile()
    kept.f.put(content, filename="kept.bin")
    kept.save()
    with pytest.raises(FileExists) as sync_error:
        GuMeFile().f.put(SOURCES[source][0](), _id=kept.f.grid_id)
    assert GuMeFile.objects.get(id=kept.id).f.read() == content  # MongoEngine

    stored = await GuFile().f.async_put(content, filename="kept.bin")
    before = await bucket()
    new = GuFile()
    with pytest.raises(FileExists) as error:
        await new.f.async_put(SOURCES[source][1](), _id=stored.grid_id)
    assert same_message(error.value, stored.grid_id) == same_message(
        sync_error.value, kept.f.grid_id
    )
    assert await bucket() == before  # not a chunk or field touched
    assert await stored.async_read() == content
    assert new.f.grid_id is None


async def test_failing_source_with_another_files_id_keeps_that_file(async_alias):
    stored = await GuFile().f.async_put(b"precious")
    before = await bucket()
    with pytest.raises(OSError, match="source broke"):
        await GuFile().f.async_put(failing_after_one_chunk(), _id=stored.grid_id)
    assert await bucket() == before


async def test_put_with_an_empty_files_id_keeps_it_and_leaves_no_chunk(async_alias):
    # The chunks go in (the empty file has none); the files document clashes.
    empty = await GuFile().f.async_put(b"", filename="empty")
    before = await bucket()
    assert before[1] == []
    with pytest.raises(FileExists):
        await GuFile().f.async_put(os.urandom(3 * CHUNK), _id=empty.grid_id)
    assert await bucket() == before  # MongoEngine leaves the 3 chunks behind
    assert await empty.async_read() == b""


async def test_image_with_another_files_id_keeps_it_and_its_thumbnail_goes(
    async_alias,
):
    buffer = io.BytesIO()
    Image.new("RGB", (20, 20), "teal").save(buffer, "PNG")
    kept = await GuImage().image.async_put(buffer.getvalue())
    before = await bucket("gu_images")
    assert len(before[0]) == 2  # the image and its thumbnail
    with pytest.raises(FileExists):
        await GuImage().image.async_put(buffer.getvalue(), _id=kept.grid_id)
    assert await bucket("gu_images") == before


async def test_an_insert_failing_for_another_reason_keeps_the_other_file(app_alias):
    # The first insert fails without saying what it wrote: chunks are removed
    # only when no other file has the id.
    stored = await GuFile().f.async_put(b"precious")
    before = await bucket()
    async with fail_point(app_alias, failCommands=["insert"], errorCode=2):
        with pytest.raises(pymongo.errors.OperationFailure):
            await GuFile().f.async_put(b"other", _id=stored.grid_id)
    assert await bucket() == before


async def test_a_failing_files_insert_of_a_new_file_leaves_nothing(app_alias):
    # The chunks go in, then the files document fails: the chunks are removed.
    async with fail_point(
        app_alias, failCommands=["insert"], errorCode=2, mode={"skip": 1}
    ):
        with pytest.raises(pymongo.errors.OperationFailure):
            await GuFile().f.async_put(os.urandom(2 * CHUNK))
    assert await bucket() == ([], [])


# -- replace with an id ---------------------------------------------------------------


async def test_replace_with_its_own_id_works_as_in_mongoengine(async_alias, sync_alias):
    document = GuMeFile()
    document.f.put(b"v1")
    document.save()
    old_id = document.f.grid_id
    document.f.replace(b"v2", _id=old_id)
    document.save()
    assert GuMeFile.objects.get(id=document.id).f.read() == b"v2"

    ours = GuFile()
    await ours.f.async_put(b"v1", filename="one")
    await ours.async_save()
    own_id = ours.f.grid_id
    assert await ours.f.async_replace(b"v2", _id=own_id, filename="two") == own_id
    assert ours.f.grid_id == own_id and ours.f.filename == "two"
    await ours.async_save()
    loaded = await GuFile.objects.async_get(id=ours.id)
    assert await loaded.f.async_read() == b"v2"
    files, chunks = await bucket()
    assert [(d["_id"], d["filename"]) for d in files] == [(own_id, "two")]
    assert [chunk["data"] for chunk in chunks] == [b"v2"]


async def test_replace_with_another_files_id_keeps_both(async_alias):
    other = await GuFile().f.async_put(b"other")
    ours = GuFile()
    await ours.f.async_put(b"mine")
    own_id = ours.f.grid_id
    before = await bucket()
    with pytest.raises(FileExists):
        await ours.f.async_replace(b"new", _id=other.grid_id)
    assert ours.f.grid_id == own_id
    assert await bucket() == before
    assert (await ours.f.async_read(), await other.async_read()) == (b"mine", b"other")


# -- the pieces an upload takes ------------------------------------------------------


BIG = os.urandom(CHUNK + 1000)


@pytest.mark.parametrize(
    "source",
    [
        lambda: pieces(bytearray(BIG)),
        lambda: pieces(memoryview(BIG)),
        lambda: pieces(BIG[:2], bytearray(BIG[2:])),
        lambda: [bytearray(BIG)],
        lambda: [memoryview(BIG)[:CHUNK], memoryview(BIG)[CHUNK:]],
        lambda: iter([array.array("B", BIG)]),
    ],
    ids=[
        "async bytearray",
        "async memoryview",
        "async mixed",
        "list bytearray",
        "list memoryviews",
        "array",
    ],
)
async def test_bytes_like_pieces_of_any_size(async_alias, source):
    document = GuFile()
    await document.f.async_put(source())
    assert document.f.length == len(BIG)
    assert await document.f.async_read() == BIG


async def test_a_piece_that_is_not_bytes_is_a_type_error(async_alias):
    with pytest.raises(TypeError, match=re.escape("not int")):
        await GuFile().f.async_put(iter(b"abc"))  # iterating bytes gives ints
    assert await bucket() == ([], [])


async def test_str_pieces_need_an_encoding(async_alias):
    document = GuFile()
    await document.f.async_put(pieces("é" * CHUNK), encoding="utf-8")
    assert await document.f.async_read() == ("é" * CHUNK).encode()
    with pytest.raises(TypeError, match="encoding"):
        await GuFile().f.async_put(pieces("é"))


# -- a cancelled put never reads the caller's file afterwards ----------------------


class GatedFile(io.RawIOBase):
    """A binary file whose reads (in a worker thread) wait for ``gate``;
    ``running`` counts the reads not finished yet."""

    def __init__(self, data: bytes) -> None:
        super().__init__()
        self._data = io.BytesIO(data)
        self.entered = threading.Event()
        self.gate = threading.Event()
        self.running = 0

    def readable(self) -> bool:
        return True

    def read(self, size: int | None = -1) -> bytes:
        self.running += 1
        self.entered.set()
        try:
            self.gate.wait(10)
            return self._data.read(size)
        finally:
            self.running -= 1


def png_bytes(width: int, height: int) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (width, height), "navy").save(buffer, "PNG")
    return buffer.getvalue()


@pytest.mark.parametrize("kind", ["file", "image"])
async def test_a_cancelled_put_returns_once_no_read_of_the_file_runs(async_alias, kind):
    # The caller may close or reuse its file once its cancelled put returned:
    # the read in flight in the worker thread must be over by then. (An
    # image's file was read by Pillow in a thread the cancellation left.)
    source = GatedFile(png_bytes(40, 30))
    proxy = GuFile().f if kind == "file" else GuImage().image
    task = asyncio.create_task(proxy.async_put(source))
    assert await asyncio.to_thread(source.entered.wait, 10)
    task.cancel()
    threading.Timer(0.2, source.gate.set).start()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert source.running == 0
    assert proxy.grid_id is None
    assert await bucket("gu" if kind == "file" else "gu_images") == ([], [])


async def test_an_image_from_a_text_file_is_invalid_as_in_mongoengine(
    async_alias, tmp_path
):
    path = tmp_path / "notes.txt"
    path.write_text("not an image")
    with path.open() as text, pytest.raises(mongoengine.ValidationError) as error:
        await GuImage().image.async_put(text)
    assert str(error.value) == f"Invalid image: cannot identify image file {text!r}"
    with path.open("rb") as binary, pytest.raises(mongoengine.ValidationError) as error:
        await GuImage().image.async_put(binary)
    assert str(error.value) == f"Invalid image: cannot identify image file {binary!r}"
    assert await bucket("gu_images") == ([], [])
