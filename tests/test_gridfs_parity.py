"""GridFS details shared with MongoEngine: a gone file, the seed's spelling of
``async_get``, a file field whose alias has no connection, and the async
methods of a file on a sync alias, the class a sync file reads as."""

from __future__ import annotations

import io
import re
from uuid import uuid4

import mongoengine
import pytest
from bson import ObjectId
from mongoengine.fields import GridFSProxy
from PIL import Image

import mongoengine_async
from mongoengine_async import (
    AsyncUsageError,
    ConnectionFailure,
    Document,
    EmbeddedDocument,
    EmbeddedDocumentField,
    FileField,
    ImageField,
    StringField,
    connect,
    disconnect,
    get_async_db,
)
from mongoengine_async.gridfs import AsyncGridFSProxy
from mongoengine_async.testing import CommandLog, fresh_database

ELSEWHERE = "gfs-parity-elsewhere"
SYNC = "gfs-parity-sync"
OWN = "gfs-parity-own"


class GpPhoto(Document):
    name = StringField()
    image = ImageField(thumbnail_size=(10, 10, True))


class GpPaper(Document):
    title = StringField()
    pdf = FileField()


# The document is on ELSEWHERE, its fields on "default" (their own alias).
class GpElsewhere(Document):
    meta = {"db_alias": ELSEWHERE}
    pdf = FileField()
    image = ImageField()


class GpOwnNote(EmbeddedDocument):
    scan = FileField(db_alias=OWN)


# The document and its file fields on the same alias, OWN.
class GpOwnAlias(Document):
    meta = {"db_alias": OWN}
    pdf = FileField(db_alias=OWN)
    note = EmbeddedDocumentField(GpOwnNote)


class GpSyncPaper(Document):
    meta = {"db_alias": SYNC}
    pdf = FileField(db_alias=SYNC)
    image = ImageField(db_alias=SYNC)
    unconnected = FileField()  # "default": no connection in these tests


# MongoEngine's own model of GpSyncPaper's collection, to compare with.
class GpSyncPaperMongoEngine(mongoengine.Document):
    meta = {"db_alias": SYNC, "collection": "gp_sync_paper"}
    pdf = mongoengine.FileField(db_alias=SYNC)
    image = mongoengine.ImageField(db_alias=SYNC)


def png(width: int, height: int) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (width, height), "orange").save(buffer, "PNG")
    return buffer.getvalue()


async def files_count(alias: str = "default", bucket: str = "fs") -> int:
    return await get_async_db(alias)[f"{bucket}.files"].count_documents({})


# -- a gone file ---------------------------------------------------------------


async def test_async_get_of_a_gone_file_is_none(async_alias, command_log) -> None:
    paper = GpPaper(title="gone")
    await paper.pdf.async_put(b"soon gone", filename="gone.pdf")
    await paper.async_save()
    await AsyncGridFSProxy(paper.pdf.grid_id).async_delete()
    loaded = await GpPaper.objects.async_get(id=paper.id)
    command_log.clear()
    assert await loaded.pdf.async_get() is None  # as MongoEngine's get()
    assert await GpPaper.pdf.async_get(loaded) is None
    assert await loaded.pdf.async_get(loaded) is None
    assert command_log.names == ["find", "find", "find"]  # one files lookup each
    assert loaded.pdf.grid_id == paper.pdf.grid_id  # the stored id is kept


async def test_async_get_sees_a_file_deleted_since_it_was_loaded(async_alias):
    paper = GpPaper()
    await paper.pdf.async_put(b"here")
    assert await paper.pdf.async_get() is not None
    await get_async_db()["fs.files"].delete_many({})
    assert await paper.pdf.async_get() is None


# -- the seed's spelling -----------------------------------------------------------


async def test_seed_spelling_returns_what_the_field_returns(async_alias) -> None:
    photo = GpPhoto(name="sunset.jpg")
    await photo.image.async_put(png(40, 20), filename="sunset.png")
    await photo.async_save()

    photo = await GpPhoto.objects.async_get(name="sunset.jpg")
    image_data = await photo.image.async_get(photo)
    assert image_data is photo.image
    assert image_data is await GpPhoto.image.async_get(photo)
    assert (image_data.filename, image_data.size) == ("sunset.png", (40, 20))
    content = await image_data.async_read()
    assert Image.open(io.BytesIO(content)).size == (40, 20)
    assert len(content) == image_data.length


async def test_seed_spelling_without_a_file_is_none(async_alias) -> None:
    photo = await GpPhoto(name="empty").async_save()
    assert await photo.image.async_get(photo) is None


async def test_seed_spelling_reads_the_given_documents_file(async_alias) -> None:
    first, second = GpPaper(title="first"), GpPaper(title="second")
    await first.pdf.async_put(b"1", filename="first.pdf")
    await second.pdf.async_put(b"2", filename="second.pdf")
    proxy = await first.pdf.async_get(second)  # as GpPaper.pdf.async_get(second)
    assert proxy is second.pdf and proxy.filename == "second.pdf"


async def test_seed_spelling_takes_a_document_with_the_field(async_alias) -> None:
    paper = GpPaper()
    message = (
        "AsyncGridFSProxy.async_get() takes the document holding the file "
        "(field 'pdf'), not "
    )
    grid_id = ObjectId()
    with pytest.raises(TypeError, match=re.escape(f"{message}{grid_id!r}")):
        await paper.pdf.async_get(grid_id)
    photo = GpPhoto()
    with pytest.raises(TypeError, match=re.escape(f"{message}{photo!r}")):
        await paper.pdf.async_get(photo)  # no field "pdf"


# -- a file field whose alias has no connection ------------------------------------


@pytest.fixture
async def elsewhere(mongodb_uri):
    """Only ELSEWHERE is connected (async); "default" is not."""
    async with fresh_database(ELSEWHERE, mongodb_uri) as alias:
        yield alias


async def test_unconnected_file_field_alias_says_which(elsewhere) -> None:
    paper = GpElsewhere()
    message = (
        "GpElsewhere.pdf: the FileField's alias 'default' has no connection (a "
        "FileField does not follow its document's db_alias; pass "
        "FileField(db_alias=...))"
    )
    with pytest.raises(ConnectionFailure, match=re.escape(message)):
        await paper.pdf.async_put(b"x")
    with pytest.raises(ConnectionFailure, match=re.escape(message)):
        await GpElsewhere.pdf.async_put(b"x", instance=paper)
    paper.pdf.grid_id = ObjectId()
    for call in (paper.pdf.async_get, paper.pdf.async_read, paper.pdf.async_delete):
        with pytest.raises(ConnectionFailure, match=re.escape(message)):
            await call()
    image_message = message.replace("pdf", "image").replace("FileField", "ImageField")
    with pytest.raises(ConnectionFailure, match=re.escape(image_message)):
        await paper.image.async_put(png(4, 4))
    assert await files_count(ELSEWHERE) == 0
    assert await files_count(ELSEWHERE, "images") == 0


async def test_unbound_proxy_names_its_bucket(elsewhere) -> None:
    proxy = AsyncGridFSProxy(ObjectId(), collection_name="reports")
    with pytest.raises(ConnectionFailure) as info:
        await proxy.async_read()
    assert str(info.value) == (
        "GridFS bucket 'reports': the FileField's alias 'default' has no connection"
    )


async def test_unconnected_alias_of_its_document_too_gives_no_hint(mongodb_uri) -> None:
    """A file field given its document's alias, that alias disconnected: the
    error does not tell to pass FileField(db_alias=...), which was passed."""
    async with fresh_database(OWN, mongodb_uri):
        paper = GpOwnAlias(note=GpOwnNote())
        await paper.pdf.async_put(b"x")
        await paper.note.scan.async_put(b"y")
        await paper.async_save()
    message = "GpOwnAlias.pdf: the FileField's alias 'gfs-parity-own' has no connection"
    for call in (paper.pdf.async_read, paper.pdf.async_delete):
        with pytest.raises(ConnectionFailure) as info:
            await call()
        assert str(info.value) == message
    with pytest.raises(ConnectionFailure) as info:
        await paper.note.scan.async_read()
    assert str(info.value) == message.replace("GpOwnAlias.pdf", "GpOwnNote.scan")


async def test_unconnected_alias_of_an_embedded_document_held_by_none() -> None:
    """An embedded document of no document has no document's alias to
    follow: the error does not tell it does not follow one."""
    with pytest.raises(ConnectionFailure) as info:
        await GpOwnNote().scan.async_put(b"x")
    assert str(info.value) == (
        "GpOwnNote.scan: the FileField's alias 'gfs-parity-own' has no connection"
    )


# -- async methods of a file on a sync alias ---------------------------------------


@pytest.fixture
def sync_log(mongodb_uri):
    """SYNC connected with connect(); the log records its commands."""
    log = CommandLog()
    name = f"test_{uuid4().hex[:12]}"
    connect(
        db=name,
        alias=SYNC,
        host=mongodb_uri,
        uuidRepresentation="standard",
        event_listeners=[log],
    )
    try:
        yield log
    finally:
        GpSyncPaper._get_db().client.drop_database(name)
        disconnect(SYNC)


def sync_message(field: str, method: str, use: str) -> str:
    return (
        f"GpSyncPaper.{field}.{method}() needs an async alias but '{SYNC}' was "
        f"registered with connect(); use document.{field}.{use} instead, or "
        f"connect_async(alias='{SYNC}')"
    )


FILE_CALLS = [
    ("async_get", lambda proxy: proxy.async_get(), "get()"),
    ("async_put", lambda proxy: proxy.async_put(b"new"), "put(data)"),
    ("async_read", lambda proxy: proxy.async_read(), "read()"),
    ("async_iter_chunks", lambda proxy: proxy.async_iter_chunks(), "read()"),
    # `async for chunk in proxy` (a TypeError: no __aiter__)
    ("async_iter_chunks", aiter, "read()"),
    ("async_delete", lambda proxy: proxy.async_delete(), "delete()"),
    ("async_replace", lambda proxy: proxy.async_replace(b"new"), "replace(data)"),
]


@pytest.mark.parametrize(
    ("method", "call", "use"),
    FILE_CALLS,
    ids=[c[0] if c[1] is not aiter else "async for" for c in FILE_CALLS],
)
def test_async_method_on_sync_alias_names_the_sync_one(
    sync_log, method, call, use
) -> None:
    paper = GpSyncPaper()
    paper.pdf.put(b"kept", filename="kept.pdf")
    paper.save()
    paper = GpSyncPaper.objects.get(id=paper.id)
    sync_log.clear()
    with pytest.raises(
        AsyncUsageError, match=re.escape(sync_message("pdf", method, use))
    ):
        call(paper.pdf)  # raises at the call: nothing to await
    assert sync_log.count() == 0  # MongoEngine's proxy would have read the file
    assert isinstance(paper.pdf, GridFSProxy)
    assert paper.pdf.read() == b"kept"


async def test_field_async_method_on_sync_alias_names_the_field(sync_log) -> None:
    """``Model.<field>.async_put/async_get(...)`` name the field in their hint
    (``document.pdf.get()``), as the proxy's own methods do."""
    paper = GpSyncPaper()
    for method, call, use in (
        ("async_get", lambda: GpSyncPaper.pdf.async_get(paper), "get()"),
        (
            "async_put",
            lambda: GpSyncPaper.pdf.async_put(b"x", instance=paper),
            "put()",
        ),
    ):
        with pytest.raises(
            AsyncUsageError, match=re.escape(sync_message("pdf", method, use))
        ):
            await call()
    assert sync_log.count() == 0


def test_async_thumbnail_on_sync_alias(sync_log) -> None:
    paper = GpSyncPaper()
    paper.image.put(io.BytesIO(png(4, 4)))
    message = sync_message("image", "async_thumbnail", "thumbnail")
    with pytest.raises(AsyncUsageError, match=re.escape(message)):
        paper.image.async_thumbnail()
    with pytest.raises(
        AsyncUsageError,
        match=re.escape(sync_message("image", "async_put", "put(data)")),
    ):
        paper.image.async_put(png(4, 4))


def test_async_method_of_unconnected_field_on_sync_alias(sync_log) -> None:
    paper = GpSyncPaper()
    with pytest.raises(ConnectionFailure) as info:
        paper.unconnected.async_put(b"x")
    assert str(info.value) == (
        "GpSyncPaper.unconnected: the FileField's alias 'default' has no "
        "connection (a FileField does not follow its document's db_alias; pass "
        "FileField(db_alias=...))"
    )


def test_sync_file_reads_as_exactly_the_exported_proxy_class(sync_log) -> None:
    """A file on a sync alias reads as an instance of exactly the exported
    GridFSProxy (ImageGridFsProxy), as MongoEngine's reads as exactly its own:
    ``type(doc.file) is GridFSProxy`` holds after the import change."""
    paper = GpSyncPaper()
    paper.pdf.put(b"exact", filename="exact.pdf")
    paper.image.put(io.BytesIO(png(4, 4)))
    paper.save()
    ours = GpSyncPaper.objects.get(id=paper.id)
    theirs = GpSyncPaperMongoEngine.objects.get(id=paper.id)
    assert type(theirs.pdf) is mongoengine.GridFSProxy
    assert type(theirs.image) is mongoengine.ImageGridFsProxy
    assert type(ours.pdf) is mongoengine_async.GridFSProxy
    assert type(ours.image) is mongoengine_async.ImageGridFsProxy
    assert ours.pdf.read() == theirs.pdf.read() == b"exact"


# -- a file field's own proxy_class ---------------------------------------------


class TaggedImageProxy(mongoengine.fields.ImageGridFsProxy):
    """A proxy of a user's own, as MongoEngine's FileField.proxy_class allows."""

    def put(self, file_obj, **kwargs):
        kwargs.setdefault("tag", "custom")
        return super().put(file_obj, **kwargs)


class TaggedFileProxy(mongoengine.fields.GridFSProxy):
    def describe(self) -> str:
        return f"tagged {self.grid_id}"


class TaggedImageField(ImageField):
    proxy_class = TaggedImageProxy


class TaggedFileField(FileField):
    proxy_class = TaggedFileProxy


class GpTagged(Document):
    meta = {"db_alias": SYNC}
    image = TaggedImageField(db_alias=SYNC, thumbnail_size=(4, 4, True))
    pdf = TaggedFileField(db_alias=SYNC)
    scans = mongoengine_async.ListField(TaggedFileField(db_alias=SYNC))


class GpAsyncTagged(Document):
    image = TaggedImageField(thumbnail_size=(4, 4, True))
    pdfs = mongoengine_async.ListField(TaggedFileField())


def test_own_proxy_class_on_sync_alias_as_mongoengine(sync_log) -> None:
    # Its proxy was made ours (its put never ran) and every save failed:
    # "FileField only accepts GridFSProxy values".
    tagged = GpTagged()
    assert type(tagged.image) is TaggedImageProxy
    tagged.image.put(io.BytesIO(png(8, 8)))
    tagged.pdf.put(b"pdf")
    tagged.save()
    loaded = GpTagged.objects.get(id=tagged.id)
    assert type(loaded.image) is TaggedImageProxy
    assert loaded.image.tag == "custom" and loaded.image.thumbnail is not None
    assert loaded.pdf.describe() == f"tagged {tagged.pdf.grid_id}"
    loaded.scans.append(loaded.pdf)
    loaded.save()


async def test_own_proxy_class_on_async_alias_saves(async_alias) -> None:
    tagged = GpAsyncTagged()
    await tagged.image.async_put(png(8, 8))
    tagged.pdfs.append(await GpAsyncTagged.pdfs.field.async_put(b"pdf"))
    await tagged.async_save()  # raised ValidationError
    # and MongoEngine's to_mongo stores None for what is not a proxy_class
    loaded = await GpAsyncTagged.objects.async_get(id=tagged.id)
    assert loaded.image.grid_id == tagged.image.grid_id
    assert (await loaded.image.async_thumbnail()).width == 4
    assert await loaded.pdfs[0].async_read() == b"pdf"
    loaded.pdfs.append(AsyncGridFSProxy("not an ObjectId"))
    with pytest.raises(mongoengine.ValidationError, match="Invalid GridFSProxy"):
        await loaded.async_save()
