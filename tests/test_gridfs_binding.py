"""File proxies and the documents that hold them; file fields whose alias is of
the other kind; image metadata before loading; thumbnails."""

from __future__ import annotations

import io
import re

import mongoengine
import pytest
from bson import ObjectId
from gridfs.errors import NoFile
from mongoengine.fields import GridFSProxy
from PIL import Image

from conftest import sync_alias_beside
from mongoengine_async import (
    AsyncUsageError,
    ConnectionFailure,
    Document,
    FileField,
    ImageField,
    ListField,
    MapField,
    get_async_db,
)
from mongoengine_async.gridfs import AsyncGridFSProxy

SYNC = "gfs-binding-sync"


class GbPaper(Document):
    pdf = FileField(collection_name="gb")


class GbAlbum(Document):
    scans = ListField(FileField(collection_name="gb"))
    extras = MapField(FileField(collection_name="gb"))


class GbMePaper(mongoengine.Document):
    """MongoEngine's own, on the sync alias: the reference behaviour."""

    meta = {"db_alias": SYNC, "collection": "gb_me_paper"}
    pdf = mongoengine.FileField(db_alias=SYNC, collection_name="gb_me")


# A document on a sync alias whose file field is on the async "default".
class GbMixed(Document):
    meta = {"db_alias": SYNC, "collection": "gb_mixed"}
    f = FileField(collection_name="gb")


# An async document whose file field is on a sync alias, or on none.
class GbSyncFile(Document):
    f = FileField(db_alias=SYNC)


class GbUnconnected(Document):
    f = FileField(db_alias="gb-nowhere")


class GbPhoto(Document):
    image = ImageField(collection_name="gb_images", thumbnail_size=(8, 8, True))


class GbMePhoto(mongoengine.Document):
    meta = {"db_alias": SYNC, "collection": "gb_me_photo"}
    image = mongoengine.ImageField(
        db_alias=SYNC, collection_name="gb_me_images", thumbnail_size=(8, 8, True)
    )


@pytest.fixture
def sync_alias(async_alias: str, mongodb_uri: str):
    with sync_alias_beside(SYNC, async_alias, mongodb_uri) as alias:
        yield alias


async def counts(bucket: str = "gb") -> tuple[int, int]:
    db = get_async_db()
    return (
        await db[f"{bucket}.files"].count_documents({}),
        await db[f"{bucket}.chunks"].count_documents({}),
    )


def png() -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (30, 20), "plum").save(buffer, "PNG")
    return buffer.getvalue()


# -- a proxy put without instance= is bound to the document holding it ----------------


async def test_assigned_proxy_replace_is_saved_as_in_mongoengine(
    async_alias, sync_alias
):
    reference = GbMePaper()
    proxy = GridFSProxy(db_alias=SYNC, collection_name="gb_me")
    proxy.put(b"old")
    reference.pdf = proxy
    reference.save()
    reference.pdf.replace(b"new")
    reference.save()
    assert GbMePaper.objects.get(id=reference.id).pdf.read() == b"new"

    paper = GbPaper()
    paper.pdf = await GbPaper.pdf.async_put(b"old")
    await paper.async_save()
    assert (paper.pdf.instance, paper.pdf.key) == (paper, "pdf")
    new_id = await paper.pdf.async_replace(b"new")
    assert paper._get_changed_fields() == ["pdf"]
    await paper.async_save()
    raw = await get_async_db().gb_paper.find_one({"_id": paper.id})
    assert raw["pdf"] == new_id
    loaded = await GbPaper.objects.async_get(id=paper.id)
    assert await loaded.pdf.async_read() == b"new"
    assert await counts() == (1, 1)  # the old file deleted, the new one saved


async def test_assigned_proxy_delete_is_saved(async_alias):
    paper = GbPaper()
    paper.pdf = await GbPaper.pdf.async_put(b"old")
    await paper.async_save()
    await paper.pdf.async_delete()
    assert paper._get_changed_fields() == ["pdf"]
    await paper.async_save()
    assert "pdf" not in await get_async_db().gb_paper.find_one({"_id": paper.id})


async def test_unbound_proxy_still_names_its_field(async_alias):
    proxy = await GbPaper.pdf.async_put(b"x")
    assert proxy.key is None  # bound by the document it is assigned to
    await get_async_db()["gb.files"].delete_many({})
    await get_async_db()["gb.chunks"].delete_many({})  # (left, they are the file)
    with pytest.raises(NoFile, match="field 'pdf'"):
        await proxy.async_delete()


async def test_new_list_and_map_items_replace_is_saved(async_alias):
    # MongoEngine loses these files (its items stay unbound); ours are bound.
    album = GbAlbum()
    album.scans.append(await GbAlbum.scans.field.async_put(b"old scan"))
    album.extras["notes"] = await GbAlbum.extras.field.async_put(b"old notes")
    await album.async_save()
    await album.scans[0].async_replace(b"new scan")
    await album.extras["notes"].async_replace(b"new notes")
    assert sorted(album._get_changed_fields()) == ["extras", "scans"]
    await album.async_save()
    loaded = await GbAlbum.objects.async_get(id=album.id)
    assert await loaded.scans[0].async_read() == b"new scan"
    assert await loaded.extras["notes"].async_read() == b"new notes"
    assert await counts() == (2, 2)


# -- a document on a sync alias with its file on an async alias ---------------------


async def test_sync_document_deletes_its_async_file_first(async_alias, sync_alias):
    mixed = GbMixed()
    await mixed.f.async_put(b"data")
    mixed.save()
    loaded = GbMixed.objects.get(id=mixed.id)
    assert isinstance(loaded.f, AsyncGridFSProxy)
    message = (
        "GbMixed.f.delete() cannot run: the file lives on async alias 'default' "
        "(connect_async), deleting it needs `await document.f.async_delete()`; "
        f"GbMixed is on sync alias '{SYNC}', so delete the file that way first, "
        "then document.delete() deletes the document"
    )
    with pytest.raises(AsyncUsageError, match=re.escape(message)):
        loaded.delete()
    assert GbMixed.objects.count() == 1 and await counts() == (1, 1)

    await loaded.f.async_delete()
    loaded.delete()  # the proxy holds no file: nothing async left to do
    assert GbMixed.objects.count() == 0 and await counts() == (0, 0)
    empty = GbMixed().save()
    empty.delete()
    assert GbMixed.objects.count() == 0


# -- an async document whose file field's alias is sync, or unconnected ---------------


SYNC_FILE_MESSAGE = (
    "{where}: the FileField's alias '{alias}' was registered with connect() "
    "(sync), but its file reads as an async proxy, which needs an async alias (a "
    "FileField does not follow its document's db_alias; pass "
    "FileField(db_alias=...) naming an async alias, or "
    "connect_async(alias='{alias}'))"
)


async def test_file_field_on_a_sync_alias_says_which(async_alias, sync_alias):
    message = SYNC_FILE_MESSAGE.format(where="GbSyncFile.f", alias=SYNC)
    document = GbSyncFile()
    assert isinstance(document.f, AsyncGridFSProxy)
    with pytest.raises(AsyncUsageError, match=re.escape(message)):
        await document.f.async_put(b"x")
    with pytest.raises(AsyncUsageError, match=re.escape(message)):
        document.f.put(b"x")
    document.f.grid_id = ObjectId()
    for call in (document.f.async_read, document.f.async_delete):
        with pytest.raises(AsyncUsageError, match=re.escape(message)):
            await call()
    for blocking in (document.f.read, document.f.delete, lambda: document.f.fs):
        with pytest.raises(AsyncUsageError, match=re.escape(message)):
            blocking()

    bare = AsyncGridFSProxy(ObjectId(), db_alias=SYNC)
    bare_message = SYNC_FILE_MESSAGE.format(where="GridFS bucket 'fs'", alias=SYNC)
    with pytest.raises(AsyncUsageError, match=re.escape(bare_message)):
        bare.read()
    with pytest.raises(AsyncUsageError, match=re.escape(bare_message)):
        await bare.async_read()


async def test_queryset_delete_refuses_a_file_it_cannot_delete_first(
    async_alias, sync_alias
):
    document = await GbSyncFile().async_save()
    collection = get_async_db().gb_sync_file
    await collection.update_one({"_id": document.id}, {"$set": {"f": ObjectId()}})
    message = SYNC_FILE_MESSAGE.format(where="GbSyncFile.f", alias=SYNC)
    with pytest.raises(AsyncUsageError, match=re.escape(message)):
        await GbSyncFile.objects.async_delete()
    assert await collection.count_documents({}) == 1  # nothing deleted
    loaded = await GbSyncFile.objects.async_get()
    with pytest.raises(AsyncUsageError, match=re.escape(message)):
        await loaded.async_delete()  # the document's own delete, the same
    assert await collection.count_documents({}) == 1


async def test_blocking_call_on_an_unconnected_alias_says_so(async_alias):
    message = (
        "GbUnconnected.f: the FileField's alias 'gb-nowhere' has no connection (a "
        "FileField does not follow its document's db_alias; pass "
        "FileField(db_alias=...))"
    )
    document = GbUnconnected()
    with pytest.raises(ConnectionFailure, match=re.escape(message)):
        document.f.put(b"x")  # it said the alias was async
    with pytest.raises(ConnectionFailure, match=re.escape(message)):
        await document.f.async_put(b"x")


# -- image metadata before loading; chunk sizes; thumbnails ----------------------


async def test_unloaded_image_metadata_errors_alike(async_alias):
    photo = GbPhoto()
    await photo.image.async_put(png())
    await photo.async_save()
    loaded = await GbPhoto.objects.async_get(id=photo.id)
    for name in ("size", "width", "height", "format", "thumbnail_id"):
        message = (
            f"AsyncImageGridFSProxy.{name} needs the file's metadata: `await "
            "proxy.async_get()` first (reading it here would block)"
        )
        with pytest.raises(AsyncUsageError, match=re.escape(message)) as info:
            getattr(loaded.image, name)
        assert isinstance(info.value, AttributeError)  # hasattr stays usable
        assert getattr(loaded.image, name, "absent") == "absent"
    await GbPhoto.image.async_get(loaded)
    assert (loaded.image.size, loaded.image.width) == ((30, 20), 30)


@pytest.mark.parametrize("size", [0, -1])
async def test_iter_chunks_needs_a_positive_size(async_alias, size):
    paper = GbPaper()
    await paper.pdf.async_put(b"abc")
    with pytest.raises(ValueError, match=f"chunk_size must be at least 1, not {size}"):
        _ = [piece async for piece in paper.pdf.async_iter_chunks(size)]


@pytest.mark.parametrize("size", ["10", 2.5, None])
async def test_read_needs_an_integer_size(async_alias, command_log, size):
    paper = GbPaper()
    await paper.pdf.async_put(b"abc")
    command_log.clear()
    with pytest.raises(
        TypeError, match=re.escape(f"size must be an integer, not {size!r}")
    ):
        await paper.pdf.async_read(size)
    assert command_log.names == []
    assert await paper.pdf.async_read(2) == b"ab"


class _Two:
    """An integer-like size (as numpy's integers): PyMongo's read takes it."""

    def __index__(self) -> int:
        return 2


async def test_read_takes_an_integer_like_size(async_alias):
    paper = GbPaper()
    await paper.pdf.async_put(b"abc")
    assert await paper.pdf.async_read(_Two()) == b"ab"


async def test_missing_thumbnail_raises_no_file_as_mongoengine(async_alias, sync_alias):
    reference = GbMePhoto()
    reference.image.put(io.BytesIO(png()))
    reference.save()
    thumbnail_id = reference.image.thumbnail_id
    await get_async_db()["gb_me_images.files"].delete_one({"_id": thumbnail_id})
    with pytest.raises(NoFile):
        GbMePhoto.objects.get(id=reference.id).image.thumbnail  # noqa: B018

    photo = GbPhoto()
    await photo.image.async_put(png())
    await photo.async_save()
    thumbnail_id = photo.image.thumbnail_id
    await get_async_db()["gb_images.files"].delete_one({"_id": thumbnail_id})
    loaded = await GbPhoto.objects.async_get(id=photo.id)
    with pytest.raises(NoFile, match=re.escape(f"no file with id {thumbnail_id!r}")):
        await loaded.image.async_thumbnail()


async def test_thumbnail_of_a_gone_image_is_none_as_mongoengine(
    async_alias, sync_alias
):
    reference = GbMePhoto()
    reference.image.put(io.BytesIO(png()))
    reference.save()
    await get_async_db()["gb_me_images.files"].delete_many({})
    assert GbMePhoto.objects.get(id=reference.id).image.thumbnail is None

    photo = GbPhoto()
    await photo.image.async_put(png())
    await photo.async_save()
    await get_async_db()["gb_images.files"].delete_many({})
    loaded = await GbPhoto.objects.async_get(id=photo.id)
    assert await loaded.image.async_thumbnail() is None


async def test_thumbnail_and_image_delete_use_the_given_session(
    async_alias, command_log
):
    photo = GbPhoto()
    await photo.image.async_put(png())
    await photo.async_save()
    client = get_async_db().client
    for use in ("thumbnail", "delete"):
        loaded = await GbPhoto.objects.async_get(id=photo.id)
        async with client.start_session() as session:
            # Its server session taken now: a command without it takes another.
            await client.admin.command("ping", session=session)
            command_log.clear()
            if use == "thumbnail":
                thumbnail = await loaded.image.async_thumbnail(session=session)
                assert thumbnail is not None
            else:
                await loaded.image.async_delete(session=session)
            lsids = {event.command["lsid"]["id"] for event in command_log.events}
            assert lsids == {session.session_id["id"]}, use
    assert await counts("gb_images") == (0, 0)
