"""GridFS on async aliases: FileField / ImageField against the real server."""

from __future__ import annotations

import asyncio
import datetime
import hashlib
import io
import os
import tracemalloc
import warnings

import mongoengine
import pytest
from bson import ObjectId
from gridfs.errors import NoFile
from mongoengine.errors import ValidationError
from mongoengine.fields import GridFSError, GridFSProxy
from PIL import Image
from pymongo.errors import InvalidOperation

from conftest import sync_alias_beside
from mongoengine_async import (
    DENY,
    Document,
    FileField,
    ImageField,
    OperationError,
    ReferenceField,
    StringField,
    async_run_in_transaction,
    get_async_db,
)
from mongoengine_async.errors import AsyncUsageError
from mongoengine_async.gridfs import AsyncGridFSProxy
from mongoengine_async.images import AsyncImageGridFSProxy
from mongoengine_async.testing import fresh_database

CHUNK = 255 * 1024
MB = 1024 * 1024
SYNC_ALIAS = "sync-files"


class GfsBook(Document):
    title = StringField()
    file = FileField()


class GfsCustom(Document):
    file = FileField(collection_name="gfs_custom")


class GfsPhoto(Document):
    image = ImageField(size=(50, 50, False), thumbnail_size=(10, 10, True))


class GfsPlainImage(Document):
    image = ImageField()


# The same collection and buckets, seen from an async alias and from a sync one.
class GfsSharedAsync(Document):
    meta = {"collection": "gfs_shared"}
    title = StringField()
    file = FileField(collection_name="shared")
    image = ImageField(collection_name="shared_images", thumbnail_size=(8, 8, True))


class GfsSharedSync(Document):
    meta = {"collection": "gfs_shared", "db_alias": SYNC_ALIAS}
    title = StringField()
    file = FileField(collection_name="shared", db_alias=SYNC_ALIAS)
    image = ImageField(
        collection_name="shared_images",
        thumbnail_size=(8, 8, True),
        db_alias=SYNC_ALIAS,
    )


@pytest.fixture
def sync_alias(async_alias: str, mongodb_uri: str):
    with sync_alias_beside(SYNC_ALIAS, async_alias, mongodb_uri) as alias:
        yield alias


async def counts(bucket: str = "fs") -> tuple[int, int]:
    """(files, chunks) in ``bucket``, counted with the driver."""
    db = get_async_db()
    return (
        await db[f"{bucket}.files"].count_documents({}),
        await db[f"{bucket}.chunks"].count_documents({}),
    )


def png(width: int, height: int, color: str = "red", fmt: str = "PNG") -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (width, height), color).save(buffer, fmt)
    return buffer.getvalue()


async def agen(*pieces: bytes):
    for piece in pieces:
        await asyncio.sleep(0)
        yield piece


class AsyncReader:
    """An async file-like object (as aiofiles gives)."""

    def __init__(self, data: bytes):
        self._buffer = io.BytesIO(data)

    async def read(self, size: int = -1) -> bytes:
        await asyncio.sleep(0)
        return self._buffer.read(size)


# -- round trips --------------------------------------------------------------


SIZES = {
    "empty": 0,
    "one-byte": 1,
    "chunk": CHUNK,
    "chunk+1": CHUNK + 1,
    "three-chunks-minus-1": 3 * CHUNK - 1,
    "5MB": 5 * MB + 7,
}


@pytest.mark.parametrize("size", SIZES.values(), ids=SIZES.keys())
async def test_round_trip_is_byte_exact(async_alias: str, size: int) -> None:
    data = os.urandom(size)
    book = GfsBook(title="t")
    proxy = await GfsBook.file.async_put(data, instance=book, filename="f.bin")
    assert proxy is book.file
    assert isinstance(proxy, AsyncGridFSProxy)
    assert proxy.length == size
    await book.async_save()

    loaded = await GfsBook.objects.async_get(id=book.id)
    proxy = await GfsBook.file.async_get(loaded)
    assert proxy.length == size
    assert await proxy.async_read() == data
    assert await proxy.async_read() == data  # every read starts at the start
    assert await proxy.async_read(10) == data[:10]
    chunks = [chunk async for chunk in proxy]
    assert b"".join(chunks) == data
    assert all(len(chunk) == CHUNK for chunk in chunks[:-1])
    assert len(chunks) == -(-size // CHUNK)
    pieces = [piece async for piece in proxy.async_iter_chunks(chunk_size=100_000)]
    assert b"".join(pieces) == data
    assert all(len(piece) == 100_000 for piece in pieces[:-1])
    assert await counts() == (1, -(-size // CHUNK))


@pytest.mark.parametrize(
    "make",
    [
        lambda data: data,
        lambda data: bytearray(data),
        lambda data: io.BytesIO(data),
        lambda data: AsyncReader(data),
        lambda data: agen(data[:1000], data[1000:300_000], data[300_000:]),
        lambda data: [data[:7], data[7:]],
    ],
    ids=["bytes", "bytearray", "BytesIO", "async-file", "async-iterator", "list"],
)
async def test_every_kind_of_source(async_alias: str, make) -> None:
    data = os.urandom(600_000)
    book = GfsBook()
    await book.file.async_put(make(data))
    assert await book.file.async_read() == data
    assert book.file.length == len(data)


async def test_put_of_another_proxy_stores_a_copy_of_its_file(
    async_alias: str, sync_alias: str
) -> None:
    # MongoEngine's put(proxy) stores a copy of the other file's bytes (a new
    # file, none of its fields); async_put refused it (its blocking read).
    data = os.urandom(3 * CHUNK + 11)
    source = GfsBook(title="source")
    await source.file.async_put(data, filename="source.bin", metadata={"m": 1})
    await source.async_save()
    loaded = await GfsBook.objects.async_get(id=source.id)  # not loaded: streamed
    copy = GfsBook(title="copy")
    await copy.file.async_put(loaded.file, filename="copy.bin")
    await copy.async_save()
    assert copy.file.grid_id != source.file.grid_id
    assert (copy.file.filename, copy.file.metadata) == ("copy.bin", None)
    assert await copy.file.async_read() == data
    assert await loaded.file.async_read() == data  # the source is untouched
    assert await counts() == (2, 2 * 4)
    # As MongoEngine's put of the same proxy, on a sync alias.
    sync_source = GfsSharedSync(title="s")
    sync_source.file.put(data)
    sync_source.save()
    sync_copy = GfsSharedSync(title="c")
    sync_copy.file.put(GfsSharedSync.objects.get(id=sync_source.id).file)
    assert sync_copy.file.read() == data
    # Into an image field: the other image's bytes, processed as any image.
    photo = GfsPhoto()
    await photo.image.async_put(png(80, 40))
    again = GfsPhoto()
    await again.image.async_put(
        (await GfsPhoto.objects.async_get(id=(await photo.async_save()).id)).image
    )
    assert (again.image.size, again.image.format) == ((50, 25), "PNG")
    # Replacing a file by itself: a new file (the old one deleted after);
    # under its own id the old one is deleted first, so it is refused (its
    # content was lost, a TypeError after the delete, as in MongoEngine).
    old_id = copy.file.grid_id
    await copy.file.async_replace(copy.file)
    assert copy.file.grid_id != old_id and await copy.file.async_read() == data
    await copy.async_save()
    for same in (copy.file, (await GfsBook.objects.async_get(id=copy.id)).file):
        kept = copy.file.grid_id
        with pytest.raises(TypeError, match="its own content"):
            await copy.file.async_replace(same, _id=kept)
        assert copy.file.grid_id == kept and await copy.file.async_read() == data
    # A proxy that holds no file has no content (MongoEngine: TypeError too).
    empty = GfsBook()
    with pytest.raises(TypeError, match="no file"):
        await empty.file.async_put(GfsBook().file)
    assert empty.file.grid_id is None and await counts() == (2, 8)


async def test_real_file_source(async_alias: str, tmp_path) -> None:
    data = os.urandom(3 * CHUNK + 5)
    path = tmp_path / "data.bin"
    path.write_bytes(data)
    book = GfsBook()
    with path.open("rb") as source:
        await book.file.async_put(source, filename="data.bin")
    assert await book.file.async_read() == data


async def test_async_iterator_of_tiny_pieces(async_alias: str) -> None:
    data = os.urandom(CHUNK * 2 + 99)
    pieces = [data[i : i + 1000] for i in range(0, len(data), 1000)]
    book = GfsBook()
    await book.file.async_put(agen(*pieces))
    assert await book.file.async_read() == data
    assert await counts() == (1, 3)


async def test_str_needs_an_encoding(async_alias: str) -> None:
    book = GfsBook()
    with pytest.raises(TypeError, match="encoding"):
        await book.file.async_put("héllo")
    await book.file.async_put("héllo", encoding="utf-8")
    assert await book.file.async_read() == "héllo".encode()


async def test_metadata_read_back(async_alias: str) -> None:
    before = datetime.datetime.now(datetime.timezone.utc).replace(tzinfo=None)
    book = GfsBook()
    proxy = await book.file.async_put(
        b"%PDF-1.4",
        filename="paper.pdf",
        content_type="application/pdf",
        metadata={"pages": 12, "tags": ["a", "b"]},
        author="Ada",
    )
    assert proxy is book.file
    put_view = (
        proxy.filename,
        proxy.content_type,
        proxy.metadata,
        proxy.length,
        proxy.upload_date,
        proxy.author,
    )
    await book.async_save()

    loaded = await GfsBook.objects.async_get(id=book.id)
    assert loaded.file.grid_id == book.file.grid_id
    assert loaded.file.length is None  # nothing read yet: no I/O on attribute access
    proxy = await GfsBook.file.async_get(loaded)
    get_view = (
        proxy.filename,
        proxy.content_type,
        proxy.metadata,
        proxy.length,
        proxy.upload_date,
        proxy.author,
    )
    assert get_view == put_view
    assert proxy.filename == "paper.pdf"
    assert proxy.content_type == "application/pdf"
    assert proxy.metadata == {"pages": 12, "tags": ["a", "b"]}
    assert proxy.length == 8
    assert before - datetime.timedelta(seconds=1) <= proxy.upload_date
    assert proxy.upload_date <= datetime.datetime.now(datetime.timezone.utc).replace(
        tzinfo=None
    )
    grid_out = await proxy.async_get()
    assert grid_out.filename == "paper.pdf"
    assert grid_out.metadata == {"pages": 12, "tags": ["a", "b"]}
    assert await grid_out.read() == b"%PDF-1.4"
    with pytest.raises(AttributeError, match="nope"):
        _ = proxy.nope


async def test_metadata_is_of_the_current_file_only(async_alias: str) -> None:
    other = await GfsBook().file.async_put(b"other", filename="other.txt")
    proxy = await GfsBook().file.async_put(b"first", filename="first.txt")
    assert proxy.loaded and proxy.length == 5
    proxy.grid_id = other.grid_id  # what it holds is another file's document
    assert not proxy.loaded
    assert (proxy.filename, proxy.length) == (None, None)
    await proxy.async_get()
    assert (proxy.filename, proxy.length) == ("other.txt", 5)


async def test_reading_the_field_does_no_io(async_alias: str, command_log) -> None:
    book = GfsBook()
    await book.file.async_put(b"abc")
    await book.async_save()
    loaded = await GfsBook.objects.async_get(id=book.id)
    command_log.clear()
    proxy = loaded.file
    assert isinstance(proxy, AsyncGridFSProxy)
    assert bool(proxy) and proxy.grid_id == book.file.grid_id
    assert repr(proxy) == f"<AsyncGridFSProxy: {proxy.grid_id}>"
    assert str(proxy) == f"<AsyncGridFSProxy: <not loaded> ({proxy.grid_id})>"
    with pytest.raises(AttributeError, match="async_get"):
        _ = proxy.author
    assert command_log.count() == 0
    await proxy.async_get()
    assert str(proxy) == f"<AsyncGridFSProxy: None ({proxy.grid_id})>"


async def test_equality_and_bool(async_alias: str) -> None:
    book = GfsBook()
    assert not book.file and book.file.grid_id is None
    await book.file.async_put(b"x")
    same = AsyncGridFSProxy(book.file.grid_id, collection_name="fs")
    assert book.file == same
    assert book.file == GridFSProxy(book.file.grid_id)  # as MongoEngine compares
    assert book.file != AsyncGridFSProxy(book.file.grid_id, collection_name="other")
    assert book.file != AsyncGridFSProxy(ObjectId())
    assert await GfsBook.file.async_get(GfsBook()) is None


async def test_stored_value_is_the_file_id(async_alias: str) -> None:
    book = GfsBook()
    await book.file.async_put(b"abc")
    await book.async_save()
    raw = await get_async_db().gfs_book.find_one({"_id": book.id})
    assert raw["file"] == book.file.grid_id
    assert isinstance(raw["file"], ObjectId)
    assert GfsBook().to_mongo().get("file") is None


async def test_custom_collection_name(async_alias: str) -> None:
    doc = GfsCustom()
    await GfsCustom.file.async_put(b"custom" * 100_000, instance=doc)
    await doc.async_save()
    assert await counts("gfs_custom") == (1, 3)
    assert await counts("fs") == (0, 0)
    loaded = await GfsCustom.objects.async_get(id=doc.id)
    assert loaded.file.collection_name == "gfs_custom"
    assert await loaded.file.async_read() == b"custom" * 100_000
    await loaded.async_delete()
    assert await counts("gfs_custom") == (0, 0)


async def test_field_db_alias_is_honoured(async_alias: str, mongodb_uri: str) -> None:
    class GfsOtherAlias(Document):
        file = FileField(db_alias="gfs-other", collection_name="other")

    async with fresh_database("gfs-other", mongodb_uri):
        doc = GfsOtherAlias()
        await doc.file.async_put(b"elsewhere")
        other = get_async_db("gfs-other")
        assert await other["other.files"].count_documents({}) == 1
        assert await get_async_db()["other.files"].count_documents({}) == 0
        assert await doc.file.async_read() == b"elsewhere"


# -- sync / async interoperability ----------------------------------------------


async def test_sync_written_file_reads_async(async_alias: str, sync_alias: str) -> None:
    sync_doc = GfsSharedSync(title="sync")
    sync_doc.file.put(
        b"written by sync" * 50_000,
        filename="sync.txt",
        content_type="text/plain",
        metadata={"by": "sync"},
    )
    sync_doc.save()

    doc = await GfsSharedAsync.objects.async_get(id=sync_doc.id)
    proxy = await GfsSharedAsync.file.async_get(doc)
    assert proxy.grid_id == sync_doc.file.grid_id
    assert await proxy.async_read() == b"written by sync" * 50_000
    assert (proxy.filename, proxy.content_type, proxy.metadata) == (
        "sync.txt",
        "text/plain",
        {"by": "sync"},
    )
    await doc.async_delete()
    assert await counts("shared") == (0, 0)


async def test_async_written_file_reads_sync(async_alias: str, sync_alias: str) -> None:
    doc = GfsSharedAsync(title="async")
    await doc.file.async_put(
        agen(b"written ", b"by async" * 100_000),
        filename="async.txt",
        content_type="text/plain",
        metadata={"by": "async"},
    )
    await doc.async_save()

    sync_doc = GfsSharedSync.objects.get(id=doc.id)
    assert isinstance(sync_doc.file, GridFSProxy)
    assert not isinstance(sync_doc.file, AsyncGridFSProxy)
    assert sync_doc.file.read() == b"written " + b"by async" * 100_000
    assert sync_doc.file.filename == "async.txt"
    assert sync_doc.file.content_type == "text/plain"
    assert sync_doc.file.metadata == {"by": "async"}
    assert sync_doc.file.length == doc.file.length
    sync_doc.delete()  # MongoEngine deletes the file too
    assert await counts("shared") == (0, 0)


async def test_stored_documents_are_identical(async_alias: str, sync_alias: str):
    sync_doc = GfsSharedSync(title="s")
    sync_doc.file.put(b"same", filename="x", content_type="a/b", metadata={"k": 1})
    sync_doc.save()
    doc = GfsSharedAsync(title="s")
    await doc.file.async_put(
        b"same", filename="x", content_type="a/b", metadata={"k": 1}
    )
    await doc.async_save()

    db = get_async_db()
    raw_sync = await db.gfs_shared.find_one({"_id": sync_doc.id}, {"_id": 0})
    raw_async = await db.gfs_shared.find_one({"_id": doc.id}, {"_id": 0})
    assert type(raw_sync["file"]) is type(raw_async["file"]) is ObjectId
    assert raw_sync.keys() == raw_async.keys()

    def shape(files_doc: dict) -> dict:
        return {k: v for k, v in files_doc.items() if k not in ("_id", "uploadDate")}

    sync_files = await db["shared.files"].find_one({"_id": sync_doc.file.grid_id})
    async_files = await db["shared.files"].find_one({"_id": doc.file.grid_id})
    assert shape(sync_files) == shape(async_files)


async def test_images_interoperate(async_alias: str, sync_alias: str) -> None:
    doc = GfsSharedAsync(title="img")
    await doc.image.async_put(png(40, 20))
    await doc.async_save()
    sync_doc = GfsSharedSync.objects.get(id=doc.id)
    assert sync_doc.image.size == (40, 20)
    assert sync_doc.image.format == "PNG"
    assert Image.open(sync_doc.image.thumbnail).size == (8, 8)

    sync_doc = GfsSharedSync(title="img2")
    sync_doc.image.put(io.BytesIO(png(30, 60)))
    sync_doc.save()
    doc = await GfsSharedAsync.objects.async_get(id=sync_doc.id)
    proxy = await GfsSharedAsync.image.async_get(doc)
    assert isinstance(proxy, AsyncImageGridFSProxy)
    assert (proxy.size, proxy.format) == ((30, 60), "PNG")
    thumbnail = await proxy.async_thumbnail()
    assert Image.open(io.BytesIO(await thumbnail.read())).size == (8, 8)


GRID_OUT_NAMES = (
    "name",
    "md5",
    "aliases",
    "filename",
    "content_type",
    "length",
    "upload_date",
    "metadata",
    "chunk_size",
    "_id",  # these two raised AttributeError
    "closed",
)


def _read_all(proxy: object, names: tuple[str, ...]) -> dict[str, object]:
    """Each name's value, or the type of the exception reading it raised."""
    values: dict[str, object] = {}
    for name in names:
        try:
            values[name] = getattr(proxy, name)
        except Exception as error:  # the type is what is compared
            values[name] = type(error).__name__
    return values


@pytest.mark.filterwarnings("ignore:GridOut property:DeprecationWarning")
async def test_loaded_proxy_has_the_grid_out_fields_of_mongoengine(
    async_alias: str, sync_alias: str
) -> None:
    # name, md5 and aliases raised AttributeError on a loaded async proxy,
    # where MongoEngine's proxy reads them from its GridOut (None when the
    # files document has none): compared here field by field on the same
    # files, one with them all and one with none.
    full = GfsSharedSync(title="full")
    full.file.put(
        b"abc",
        filename="full.txt",
        content_type="text/plain",
        metadata={"k": 1},
        aliases=["other"],
        md5="0" * 32,
    )
    full.save()
    bare = GfsSharedSync(title="bare")
    bare.file.put(b"abc")
    bare.save()
    # GridOut's content_type is the files document's contentType only (the
    # async proxy read one in metadata as its own).
    in_metadata = GfsSharedSync(title="in metadata")
    in_metadata.file.put(b"abc", metadata={"contentType": "text/plain"})
    in_metadata.save()
    for sync_doc in (full, bare, in_metadata):
        expected = _read_all(
            GfsSharedSync.objects.get(id=sync_doc.id).file, GRID_OUT_NAMES
        )
        assert expected["name"] == expected["filename"]
        doc = await GfsSharedAsync.objects.async_get(id=sync_doc.id)
        proxy = await GfsSharedAsync.file.async_get(doc)
        assert _read_all(proxy, GRID_OUT_NAMES) == expected
        doc = await GfsSharedAsync.objects.async_get(id=sync_doc.id)
        await doc.file.async_read()  # loads the files document too
        assert _read_all(doc.file, GRID_OUT_NAMES) == expected
    assert _read_all(proxy, ("name", "md5", "aliases")) == dict.fromkeys(
        ("name", "md5", "aliases")
    )


def _warned(proxy: object, name: str) -> list[tuple[type[Warning], str]]:
    """The warnings reading ``proxy.name`` gives."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        getattr(proxy, name)
    return sorted({(w.category, str(w.message)) for w in caught}, key=str)


async def test_loaded_proxy_warns_of_deprecated_fields_as_mongoengine(
    async_alias: str, sync_alias: str
) -> None:
    # PyMongo's GridOut deprecates content_type, md5 and aliases, and
    # MongoEngine's proxy, which reads them from its GridOut, passes its
    # DeprecationWarning on; the async proxy gave none.
    sync_doc = GfsSharedSync(title="warned")
    sync_doc.file.put(b"abc", content_type="text/plain", md5="0" * 32)
    sync_doc.save()
    expected = {
        name: _warned(GfsSharedSync.objects.get(id=sync_doc.id).file, name)
        for name in GRID_OUT_NAMES
    }
    assert expected["md5"] and expected["content_type"] and expected["aliases"]
    doc = await GfsSharedAsync.objects.async_get(id=sync_doc.id)
    proxy = await GfsSharedAsync.file.async_get(doc)
    assert {name: _warned(proxy, name) for name in GRID_OUT_NAMES} == expected


async def test_grid_out_methods_name_the_async_grid_out(async_alias: str) -> None:
    # MongoEngine's proxy calls its GridOut's methods (readline, seek, ...),
    # blocking; the async proxy said it had no such attribute once loaded,
    # and before, that its metadata was needed first.
    doc = GfsSharedAsync(title="lines")
    await doc.file.async_put(b"one\ntwo\n")
    await doc.async_save()
    doc = await GfsSharedAsync.objects.async_get(id=doc.id)
    for loaded in (False, True):
        if loaded:
            await GfsSharedAsync.file.async_get(doc)
        with pytest.raises(AsyncUsageError, match=r"readline\(\) would block") as info:
            doc.file.readline()
        assert "`await (await proxy.async_get()).readline()`" in str(info.value)
        with pytest.raises(AttributeError, match=r"use `\(await proxy.async_get"):
            doc.file.tell()
        assert not hasattr(doc.file, "seek")
    grid_out = await doc.file.async_get()
    assert await grid_out.readline() == b"one\n"


class GfsNotImage(Document):
    meta = {"collection": "gfs_shared", "strict": False}
    image = ImageField(db_field="file", collection_name="shared")


class GfsNotImageSync(Document):
    meta = {"collection": "gfs_shared", "db_alias": SYNC_ALIAS, "strict": False}
    image = ImageField(db_field="file", collection_name="shared", db_alias=SYNC_ALIAS)


async def test_loaded_image_that_is_not_an_image_reads_as_in_mongoengine(
    async_alias: str, sync_alias: str
) -> None:
    # A file that no ImageField stored (no width, format, thumbnail_id),
    # read through an ImageField: MongoEngine's size, format and thumbnail
    # raise AttributeError; the async proxy gave None.
    names = ("size", "format", "thumbnail", "thumbnail_id", "filename", "name")
    sync_doc = GfsSharedSync(title="not an image")
    sync_doc.file.put(b"plain bytes", filename="plain.txt")
    sync_doc.save()
    expected = _read_all(GfsNotImageSync.objects.get(id=sync_doc.id).image, names)
    assert expected["size"] == expected["format"] == "AttributeError"
    doc = await GfsNotImage.objects.async_get(id=sync_doc.id)
    proxy = await GfsNotImage.image.async_get(doc)
    assert _read_all(proxy, names) == expected
    assert getattr(proxy, "size", "default") == "default"
    with pytest.raises(AttributeError, match="is not an image"):
        _ = proxy.size
    # A real image without a thumbnail still answers None, as MongoEngine's.
    plain = GfsPlainImage()
    await plain.image.async_put(png(20, 10))
    assert (plain.image.size, plain.image.thumbnail) == ((20, 10), None)


async def test_sync_alias_field_keeps_mongoengine_behaviour(
    async_alias: str, sync_alias: str
) -> None:
    doc = GfsSharedSync(title="plain sync")
    doc.file = b"assigned"  # MongoEngine's FileField.__set__ stores it at once
    doc.save()
    # MongoEngine's proxy (only its async methods are added: they refuse).
    assert isinstance(doc.file, GridFSProxy)
    assert repr(doc.file) == f"<GridFSProxy: {doc.file.grid_id}>"
    assert GfsSharedSync.objects.get(id=doc.id).file.read() == b"assigned"
    with pytest.raises(AsyncUsageError, match=r"put\(\)"):
        await GfsSharedSync.file.async_put(b"x", instance=doc)


# -- images -------------------------------------------------------------------


async def test_image_resize_and_thumbnail(async_alias: str) -> None:
    photo = GfsPhoto()
    proxy = await GfsPhoto.image.async_put(
        png(200, 100), instance=photo, filename="cover.png"
    )
    assert isinstance(proxy, AsyncImageGridFSProxy)
    assert proxy.size == (50, 25)  # fitted inside 50x50, aspect kept
    assert proxy.format == "PNG"
    assert proxy.filename == "cover.png"
    await photo.async_save()
    assert await counts("images") == (2, 2)

    loaded = await GfsPhoto.objects.async_get(id=photo.id)
    with pytest.raises(AsyncUsageError, match="async_get"):
        _ = loaded.image.size
    proxy = await GfsPhoto.image.async_get(loaded)
    assert (proxy.size, proxy.format) == ((50, 25), "PNG")
    assert Image.open(io.BytesIO(await proxy.async_read())).size == (50, 25)
    thumbnail = await proxy.async_thumbnail()
    assert (thumbnail.width, thumbnail.height) == (10, 10)  # forced
    assert Image.open(io.BytesIO(await thumbnail.read())).size == (10, 10)
    with pytest.raises(AsyncUsageError, match="async_thumbnail"):
        _ = proxy.thumbnail

    await loaded.async_delete()
    assert await counts("images") == (0, 0)


async def test_image_proxy_attributes_answer_hasattr_without_io(
    async_alias: str, command_log
) -> None:
    # hasattr() and getattr() with a default never raise AsyncUsageError:
    # ``thumbnail`` is None where MongoEngine's is and no I/O tells it (no
    # image; a loaded one without a thumbnail), else its error (naming
    # async_thumbnail) is also an AttributeError; so is that of ``fs``.
    assert GfsPhoto().image.thumbnail is None
    plain = GfsPlainImage()
    await plain.image.async_put(png(20, 20))
    assert plain.image.thumbnail is None
    photo = GfsPhoto()
    await photo.image.async_put(png(20, 20))
    await photo.async_save()
    loaded = await GfsPhoto.objects.async_get(id=photo.id)
    command_log.clear()
    for proxy in (photo.image, loaded.image):
        assert not hasattr(proxy, "thumbnail") and not hasattr(proxy, "fs")
        assert getattr(proxy, "thumbnail", "default") == "default"
        with pytest.raises(AsyncUsageError, match="async_thumbnail"):
            _ = proxy.thumbnail
        with pytest.raises(AttributeError, match="blocking GridFS"):
            _ = proxy.fs
    assert hasattr(photo.image, "width") and not hasattr(loaded.image, "width")
    assert getattr(loaded.image, "format", "default") == "default"
    with pytest.raises(AttributeError, match=r"\.size needs the file's metadata"):
        _ = loaded.image.size
    assert command_log.count() == 0


async def test_image_delete_removes_the_thumbnail_without_a_lookup(
    async_alias: str, command_log
) -> None:
    photo = GfsPhoto()
    await GfsPhoto.image.async_put(png(200, 100), instance=photo)
    await photo.async_save()
    proxy = await GfsPhoto.image.async_get(
        await GfsPhoto.objects.async_get(id=photo.id)
    )
    command_log.clear()
    await proxy.async_delete()
    # the thumbnail's files document and chunks, then the image's
    assert command_log.names == ["delete"] * 4
    assert await counts("images") == (0, 0)


async def test_image_matches_sync_mongoengine(async_alias: str, sync_alias: str):
    class GfsSyncPhoto(Document):
        meta = {"db_alias": SYNC_ALIAS}
        image = ImageField(
            size=(50, 50, False), thumbnail_size=(10, 10, True), db_alias=SYNC_ALIAS
        )

    jpeg = png(120, 90, "blue", "JPEG")
    sync_photo = GfsSyncPhoto()
    sync_photo.image.put(io.BytesIO(jpeg))
    photo = GfsPhoto()
    await photo.image.async_put(io.BytesIO(jpeg))
    assert (photo.image.size, photo.image.format) == (
        sync_photo.image.size,
        sync_photo.image.format,
    )
    assert photo.image.format == "JPEG"
    thumbnail = await photo.image.async_thumbnail()
    assert (thumbnail.width, thumbnail.height) == (
        sync_photo.image.thumbnail.width,
        sync_photo.image.thumbnail.height,
    )


async def test_image_without_options_and_from_async_source(async_alias: str):
    photo = GfsPlainImage()
    await photo.image.async_put(agen(png(300, 200)[:100], png(300, 200)[100:]))
    assert photo.image.size == (300, 200)
    assert await photo.image.async_thumbnail() is None
    assert await counts("images") == (1, 1)
    await photo.image.async_delete()
    assert photo.image.grid_id is None
    assert await counts("images") == (0, 0)


async def test_invalid_image_stores_nothing(async_alias: str) -> None:
    photo = GfsPhoto()
    with pytest.raises(ValidationError, match="Invalid image"):
        await photo.image.async_put(b"not an image")
    assert photo.image.grid_id is None
    assert await counts("images") == (0, 0)


async def test_image_replace_removes_old_thumbnail(async_alias: str) -> None:
    photo = GfsPhoto()
    await photo.image.async_put(png(80, 80))
    old_id = photo.image.grid_id
    new_id = await photo.image.async_replace(png(20, 20, "green"))
    assert new_id != old_id and photo.image.grid_id == new_id
    assert photo.image.size == (20, 20)
    assert await counts("images") == (2, 2)


async def test_concurrent_image_puts_leave_no_orphan(async_alias: str) -> None:
    # As for a FileField: the put whose upload ends second deletes its image
    # and thumbnail and raises; it left both behind, held by no document.
    photo = GfsPhoto()
    results = await asyncio.gather(
        photo.image.async_put(png(80, 80)),
        photo.image.async_put(png(90, 90)),
        return_exceptions=True,
    )
    assert sorted(type(result).__name__ for result in results) == [
        "AsyncImageGridFSProxy",
        "GridFSError",
    ]
    assert await counts("images") == (2, 2)  # the winner's image and thumbnail
    assert (await photo.image.async_thumbnail()) is not None


class GfsSized(Document):
    image = ImageField(size=(30, 30, True), thumbnail_size=(10, 10, True))


async def test_image_put_of_a_path_and_of_what_pillow_cannot_open(
    async_alias: str, tmp_path
) -> None:
    # MongoEngine's put hands its argument to Pillow: a path is opened, and
    # whatever Pillow cannot open raises ValidationError "Invalid image".
    path = tmp_path / "cover.png"
    path.write_bytes(png(60, 40))
    for source in (path, str(path)):
        photo = GfsSized()
        await photo.image.async_put(source)
        assert (photo.image.size, photo.image.format) == ((30, 30), "PNG")
    for source in (None, 42, str(tmp_path / "missing.png")):
        with pytest.raises(ValidationError, match="Invalid image"):
            await GfsSized().image.async_put(source)
    assert await counts("images") == (4, 4)


# -- errors -------------------------------------------------------------------


async def test_missing_file_errors_name_the_id(async_alias: str) -> None:
    missing = ObjectId()
    book = GfsBook(file=AsyncGridFSProxy(missing))
    await book.async_save()
    loaded = await GfsBook.objects.async_get(id=book.id)
    with pytest.raises(NoFile, match=str(missing)):
        await loaded.file.async_read()
    with pytest.raises(NoFile, match=str(missing)):
        [chunk async for chunk in loaded.file]
    with pytest.raises(NoFile, match=f"{missing}.*field 'file'"):
        await loaded.file.async_delete()
    assert loaded.file.grid_id is None


async def test_document_delete_tolerates_a_missing_file(async_alias: str) -> None:
    book = GfsBook()
    await book.file.async_put(b"gone soon")
    await book.async_save()
    await AsyncGridFSProxy(book.file.grid_id).async_delete()
    await book.async_delete()
    assert await GfsBook.objects.async_count() == 0


async def test_empty_proxy_has_nothing_to_do(async_alias: str) -> None:
    book = GfsBook()
    assert await book.file.async_get() is None
    assert await book.file.async_read() is None
    assert [chunk async for chunk in book.file] == []
    await book.file.async_delete()  # nothing to delete
    await book.async_save()
    await book.async_delete()  # a document without a file deletes fine


async def test_concurrent_puts_and_replaces_leave_no_orphaned_file(
    async_alias: str,
) -> None:
    """Two puts into one empty field at once: one wins, the other deletes what
    it uploaded and raises. Replaces at once: each deletes the file the proxy
    held when its upload ended, so only the last one's file stays."""
    book = GfsBook()
    results = await asyncio.gather(
        book.file.async_put(b"a"), book.file.async_put(b"b"), return_exceptions=True
    )
    won, lost = sorted(results, key=lambda result: isinstance(result, Exception))
    assert won is book.file  # whichever upload ended first
    assert type(lost) is GridFSError
    assert str(lost) == (
        f"This document already has a file ({book.file.grid_id}) in field 'file'. "
        "Either delete it (`await proxy.async_delete()`) or call "
        "`await proxy.async_replace(...)` to overwrite it"
    )
    assert await counts() == (1, 1)
    ids = await asyncio.gather(*(book.file.async_replace(bytes([i])) for i in range(4)))
    assert book.file.grid_id in ids
    stored = await get_async_db()["fs.files"].find({}).to_list(None)
    assert [raw["_id"] for raw in stored] == [book.file.grid_id]
    assert await counts() == (1, 1)


async def test_put_into_a_field_holding_a_file(async_alias: str) -> None:
    book = GfsBook()
    await book.file.async_put(b"first")
    with pytest.raises(GridFSError, match="async_replace"):
        await book.file.async_put(b"second")
    with pytest.raises(GridFSError, match="async_replace"):
        await GfsBook.file.async_put(b"second", instance=book)
    assert await book.file.async_read() == b"first"
    assert await counts() == (1, 1)


async def test_replace(async_alias: str) -> None:
    book = GfsBook()
    await book.file.async_put(b"first", filename="one")
    await book.async_save()
    old_id = book.file.grid_id
    new_id = await book.file.async_replace(b"second", filename="two")
    assert new_id == book.file.grid_id != old_id
    assert book.file.filename == "two"
    assert "file" in book._get_changed_fields()
    await book.async_save()
    loaded = await GfsBook.objects.async_get(id=book.id)
    assert loaded.file.grid_id == new_id
    assert await loaded.file.async_read() == b"second"
    assert await counts() == (1, 1)
    fresh = GfsBook()
    assert await fresh.file.async_replace(b"no old file") == fresh.file.grid_id


async def test_failed_replace_keeps_the_old_file(async_alias: str) -> None:
    async def broken():
        yield b"x" * CHUNK
        raise OSError("disk on fire")

    book = GfsBook()
    await book.file.async_put(b"keep me")
    old_id = book.file.grid_id
    with pytest.raises(OSError, match="disk on fire"):
        await book.file.async_replace(broken())
    assert book.file.grid_id == old_id
    assert await book.file.async_read() == b"keep me"
    assert await counts() == (1, 1)


async def test_proxy_delete_then_save_unsets(async_alias: str) -> None:
    book = GfsBook()
    await book.file.async_put(b"x" * (CHUNK + 1))
    await book.async_save()
    await book.file.async_delete()
    assert book.file.grid_id is None
    assert "file" in book._get_changed_fields()
    await book.async_save()
    raw = await get_async_db().gfs_book.find_one({"_id": book.id})
    assert "file" not in raw
    assert await counts() == (0, 0)


async def test_document_delete_removes_files_and_chunks(async_alias: str) -> None:
    books = [GfsBook(title=str(i)) for i in range(3)]
    for book in books:
        await book.file.async_put(os.urandom(2 * CHUNK + 1))
        await book.async_save()
    assert await counts() == (3, 9)
    await books[0].async_delete()
    assert await counts() == (2, 6)
    for book in books[1:]:
        await (await GfsBook.objects.async_get(id=book.id)).async_delete()
    assert await counts() == (0, 0)


class _Blocker:
    """An async iterator that hands out ``before`` chunks, then waits forever
    (or raises ``error``)."""

    def __init__(self, before: int, error: Exception | None = None):
        self.before = before
        self.error = error
        self.sent = 0
        self.blocked = asyncio.Event()

    def __aiter__(self):
        return self

    async def __anext__(self) -> bytes:
        if self.sent == self.before:
            self.blocked.set()
            if self.error is not None:
                raise self.error
            await asyncio.Event().wait()
        self.sent += 1
        return os.urandom(CHUNK)


async def test_cancelled_upload_leaves_nothing(async_alias: str) -> None:
    source = _Blocker(before=40)  # about 10 MB: some batches were inserted
    book = GfsBook()
    task = asyncio.create_task(book.file.async_put(source))
    await asyncio.wait_for(source.blocked.wait(), 30)
    files, chunks = await counts()
    assert files == 0 and chunks > 0  # really mid-upload
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert await counts() == (0, 0)
    assert book.file.grid_id is None


async def test_cancelled_while_inserting_leaves_nothing(async_alias: str) -> None:
    for delay in (0.001, 0.003, 0.005, 0.01, 0.02, 0.03, 0.05, 0.08):
        book = GfsBook()
        task = asyncio.create_task(book.file.async_put(agen(*[b"z" * CHUNK] * 200)))
        await asyncio.sleep(delay)
        task.cancel()
        try:
            await task
        except asyncio.CancelledError:
            assert book.file.grid_id is None
            assert await counts() == (0, 0)
        else:  # finished first: a whole file then
            assert await counts() == (1, 200)
            await book.file.async_delete()


async def test_failing_source_leaves_nothing(async_alias: str) -> None:
    source = _Blocker(before=40, error=OSError("source broke"))
    book = GfsBook()
    with pytest.raises(OSError, match="source broke"):
        await book.file.async_put(source)
    assert await counts() == (0, 0)
    assert book.file.grid_id is None


async def test_failing_sync_file_leaves_nothing(async_alias: str) -> None:
    class Broken(io.RawIOBase):
        def __init__(self):
            self.calls = 0

        def read(self, size=-1):
            self.calls += 1
            if self.calls > 30:
                raise OSError("read error")
            return b"y" * size

    with pytest.raises(OSError, match="read error"):
        await GfsBook().file.async_put(Broken())
    assert await counts() == (0, 0)


# -- misuse ---------------------------------------------------------------------


async def test_blocking_calls_are_refused(async_alias: str) -> None:
    book = GfsBook()
    await book.file.async_put(b"x")
    for call, use in [
        (lambda: book.file.read(), "async_read"),
        (lambda: book.file.get(), "async_get"),
        (lambda: book.file.put(b"y"), "async_put"),
        (lambda: book.file.delete(), "async_delete"),
        (lambda: book.file.replace(b"y"), "async_replace"),
        (lambda: book.file.write(b"y"), "async_put"),
    ]:
        with pytest.raises(AsyncUsageError, match=use):
            call()
    with pytest.raises(AsyncUsageError, match="async_put"):
        book.file = b"assigning bytes would block"
    with pytest.raises(AsyncUsageError):
        _ = book.file.fs


async def test_assigning_proxies_and_none(async_alias: str) -> None:
    book = GfsBook()
    await book.file.async_put(b"x")
    await book.async_save()
    other = GfsBook()
    other.file = book.file
    await other.async_save()
    loaded = await GfsBook.objects.async_get(id=other.id)
    assert loaded.file.grid_id == book.file.grid_id
    loaded.file = None
    await loaded.async_save()
    raw = await get_async_db().gfs_book.find_one({"_id": other.id})
    assert "file" not in raw


# -- sessions -----------------------------------------------------------------


async def test_delete_joins_the_transaction(async_alias: str) -> None:
    book = GfsBook()
    await book.file.async_put(b"transactional")
    await book.async_save()

    class Rollback(Exception):
        pass

    with pytest.raises(Rollback):
        async with async_run_in_transaction():
            await book.file.async_delete()
            raise Rollback
    assert await counts() == (1, 1)  # rolled back with the transaction
    assert book.file.grid_id is not None  # the proxy holds its file again

    async with async_run_in_transaction():
        await book.async_delete()
    assert await counts() == (0, 0)


class Rollback(Exception):
    pass


async def test_an_aborted_file_delete_drops_only_its_own_changed_mark(
    async_alias: str,
) -> None:
    """The file is back: the field is no longer marked changed by the delete,
    while other changes made in the block, and a mark set before it, stay."""
    book = GfsBook(title="kept")
    await book.file.async_put(b"payload")
    await book.async_save()
    book = await GfsBook.objects.async_get(id=book.id)
    assert book._get_changed_fields() == []
    with pytest.raises(Rollback):
        async with async_run_in_transaction():
            book.title = "changed in the block"
            await book.file.async_delete()
            assert "file" in book._get_changed_fields()
            raise Rollback
    assert book.file.grid_id is not None
    assert book._get_changed_fields() == ["title"]
    book._mark_as_changed("file")  # marked before the delete: stays marked
    with pytest.raises(Rollback):
        async with async_run_in_transaction():
            await book.file.async_delete()
            raise Rollback
    assert sorted(book._get_changed_fields()) == ["file", "title"]
    book._clear_changed_fields()
    with pytest.raises(Rollback):  # set again in the block: a change to save
        async with async_run_in_transaction():
            await book.file.async_delete()
            book.file = None
            raise Rollback
    assert book._get_changed_fields() == ["file"]


async def test_an_aborted_document_delete_leaves_its_file_known(async_alias):
    """The document's delete aborted: the instance holds its file again, so
    deleting it again deletes the file too (none orphaned)."""
    book = GfsBook(title="kept")
    await book.file.async_put(b"payload")
    await book.async_save()
    grid_id = book.file.grid_id
    with pytest.raises(Rollback):
        async with async_run_in_transaction():
            await book.async_delete()
            raise Rollback
    assert await GfsBook.objects.async_count() == 1 and await counts() == (1, 1)
    assert book.file.grid_id == grid_id
    assert await book.file.async_read() == b"payload"
    async with async_run_in_transaction():
        await book.async_delete()
    assert await GfsBook.objects.async_count() == 0 and await counts() == (0, 0)


async def test_a_replace_by_the_same_id_refused_in_a_block_keeps_the_file(
    async_alias,
):
    """Replacing by the file's own id deletes it first, then uploads, which
    PyMongo refuses in a transaction: the block aborts, the file is back, and
    the proxy holds it again."""
    book = GfsBook()
    await book.file.async_put(b"old")
    grid_id = book.file.grid_id
    with pytest.raises(InvalidOperation, match="transactions"):
        async with async_run_in_transaction():
            await book.file.async_replace(b"new", _id=grid_id)
    assert book.file.grid_id == grid_id
    assert await book.file.async_read() == b"old"


async def test_upload_inside_a_transaction_is_refused_by_pymongo(async_alias: str):
    with pytest.raises(InvalidOperation, match="transactions"):
        async with async_run_in_transaction():
            await GfsBook().file.async_put(b"x")
    assert await counts() == (0, 0)


# -- concurrency and memory -----------------------------------------------------


async def test_concurrent_uploads_and_reads(async_alias: str) -> None:
    payloads = [os.urandom(CHUNK + i * 1000) for i in range(30)]
    books = [GfsBook(title=str(i)) for i in range(30)]
    await asyncio.gather(
        *(
            book.file.async_put(agen(payload[:CHUNK], payload[CHUNK:]))
            for book, payload in zip(books, payloads, strict=True)
        )
    )
    await asyncio.gather(*(book.async_save() for book in books))
    read = await asyncio.gather(*(book.file.async_read() for book in books))
    assert read == payloads


async def test_streaming_64mb_keeps_memory_bounded(async_alias: str) -> None:
    total_chunks = 64 * MB // CHUNK + 1
    block = os.urandom(CHUNK)

    async def produce():
        for _ in range(total_chunks):
            yield block

    book = GfsBook()
    await book.file.async_put(b"warm up")  # indexes, connection pool
    await book.file.async_delete()

    tracemalloc.start()
    try:
        baseline = tracemalloc.get_traced_memory()[0]
        await book.file.async_put(produce(), filename="big.bin")
        upload_peak = tracemalloc.get_traced_memory()[1] - baseline

        tracemalloc.reset_peak()
        baseline = tracemalloc.get_traced_memory()[0]
        digest, received = hashlib.sha256(), 0
        async for chunk in book.file:
            digest.update(chunk)
            received += len(chunk)
        download_peak = tracemalloc.get_traced_memory()[1] - baseline
    finally:
        tracemalloc.stop()

    assert received == book.file.length == total_chunks * CHUNK
    assert digest.digest() == hashlib.sha256(block * total_chunks).digest()
    # An upload holds one insert batch (UPLOAD_BATCH_BYTES, 8 MB) and its BSON
    # message; a download one cursor batch (4 MB) and the chunk being read.
    assert upload_peak < 24 * MB, f"upload peak {upload_peak / MB:.1f} MB"
    assert download_peak < 16 * MB, f"download peak {download_peak / MB:.1f} MB"


def test_sync_only_use_is_untouched() -> None:
    field = GfsBook._fields["file"]
    assert isinstance(field, mongoengine.FileField)
    assert isinstance(GfsPhoto._fields["image"], mongoengine.ImageField)
    assert isinstance(GfsPhoto._fields["image"], FileField)
    assert field.proxy_class is GridFSProxy


class GfsGuarded(Document):
    title = StringField()
    file = FileField()


class GfsGuardian(Document):
    guarded = ReferenceField(GfsGuarded, reverse_delete_rule=DENY)


async def test_refused_delete_keeps_the_file(async_alias):
    guarded = GfsGuarded(title="kept")
    await guarded.file.async_put(b"precious", filename="precious.txt")
    await guarded.async_save()
    await GfsGuardian(guarded=guarded).async_save()
    with pytest.raises(OperationError, match=r"GfsGuardian\.guarded refers to it"):
        await guarded.async_delete()
    loaded = await GfsGuarded.objects.async_get(title="kept")
    assert await (await GfsGuarded.file.async_get(loaded)).async_read() == b"precious"


async def test_a_delete_reads_the_files_of_many_documents_in_one_reply(
    async_alias: str, command_log
) -> None:
    """A queryset delete reads the files its documents hold first: more than
    the 101 documents of a first reply, in one round trip (no getMore)."""
    await GfsBook._get_collection().insert_many([{"title": str(i)} for i in range(150)])
    command_log.clear()
    await GfsBook.objects.async_delete()
    assert "getMore" not in command_log.names
    assert await GfsBook.objects.async_count() == 0
