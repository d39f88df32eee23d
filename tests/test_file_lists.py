"""Lists (and dicts) of files on async aliases: each item is an AsyncGridFSProxy
that streams, new items are put with async_put, and deleting the documents
(one, or a queryset) removes every file."""

from __future__ import annotations

import mongoengine
import pytest

from mongoengine_async import (
    AsyncGridFSProxy,
    DictField,
    Document,
    FileField,
    ListField,
    StringField,
    get_async_db,
)


class FlAlbum(Document):
    title = StringField()
    cover = FileField()
    scans = ListField(FileField())
    extras = DictField(FileField(collection_name="extras"))


class FlOther(Document):
    title = StringField()


async def _album(title: str, *contents: bytes) -> FlAlbum:
    album = FlAlbum(title=title)
    for number, content in enumerate(contents):
        proxy = await FlAlbum.scans.field.async_put(content, filename=f"{number}.txt")
        album.scans.append(proxy)
    await album.cover.async_put(b"cover", filename="cover.png")
    album.extras["notes"] = await FlAlbum.extras.field.async_put(b"notes")
    return await album.async_save()


async def _files(bucket: str = "fs") -> tuple[int, int]:
    database = get_async_db()
    files = await database[f"{bucket}.files"].count_documents({})
    return files, await database[f"{bucket}.chunks"].count_documents({})


async def test_put_into_new_items_stores_their_ids(async_alias):
    album = await _album("First", b"one", b"two")
    raw = await get_async_db().fl_album.find_one({"_id": album.id})
    assert raw["scans"] == [proxy.grid_id for proxy in album.scans]
    assert raw["extras"] == {"notes": album.extras["notes"].grid_id}
    assert await _files() == (3, 3) and await _files("extras") == (1, 1)


async def test_items_are_async_proxies_that_stream(async_alias, command_log):
    await _album("First", b"one", b"two" * 100_000)
    command_log.clear()
    album = await FlAlbum.objects.async_get()
    scans = album.scans
    assert command_log.names == ["find"]  # reading the items does no I/O
    assert all(type(proxy) is AsyncGridFSProxy for proxy in scans)
    assert album.scans[0] is scans[0]
    assert (scans[0].key, scans[0].instance) == ("scans", album)
    assert await scans[0].async_read() == b"one"
    received = b"".join([chunk async for chunk in scans[1]])
    assert received == b"two" * 100_000
    await scans[1].async_get()
    assert (scans[1].filename, scans[1].length) == ("1.txt", 300_000)
    assert await album.extras["notes"].async_read() == b"notes"


async def test_a_new_document_takes_a_list_of_proxies(async_alias):
    scans = [await FlAlbum.scans.field.async_put(b"%d" % n) for n in range(2)]
    album = await FlAlbum(title="Given", scans=scans).async_save()
    loaded = await FlAlbum.objects.async_get(id=album.id)
    assert [await proxy.async_read() for proxy in loaded.scans] == [b"0", b"1"]


async def test_put_into_a_loaded_list(async_alias):
    await _album("First", b"one")
    album = await FlAlbum.objects.async_get()
    album.scans.append(await FlAlbum.scans.field.async_put(b"added"))
    await album.async_save()
    again = await FlAlbum.objects.async_get()
    assert [await proxy.async_read() for proxy in again.scans] == [b"one", b"added"]


@pytest.mark.parametrize("container", ["scans", "extras"])
async def test_the_item_field_takes_no_document(async_alias, container):
    # FlAlbum.scans.field.async_put(data, instance=album) stored a file that
    # nothing held (the list left as it was: an orphan) or raised a bare
    # TypeError, and async_get(album) gave None; both left a proxy under the
    # key None in album._data.
    album = FlAlbum(title="Item field")
    item_field = getattr(FlAlbum, container).field
    with pytest.raises(TypeError, match="item field of a list or dict of files"):
        await item_field.async_put(b"orphan", instance=album)
    with pytest.raises(TypeError, match="item field of a list or dict of files"):
        await item_field.async_get(album)
    with pytest.raises(TypeError, match=r"'cover' of FlAlbum\), not"):
        await FlAlbum.cover.async_put(b"elsewhere", instance=FlOther())
    assert None not in album._data
    assert await _files() == (0, 0) and await _files("extras") == (0, 0)


async def test_deleting_the_document_removes_every_file(async_alias):
    album = await _album("First", b"one", b"two")
    kept = await _album("Kept", b"three")
    loaded = await FlAlbum.objects.async_get(id=album.id)
    await loaded.async_delete()
    assert await _files() == (2, 2)  # the kept album's scan and cover
    assert await _files("extras") == (1, 1)
    assert await kept.scans[0].async_read() == b"three"


async def test_deleting_a_queryset_removes_every_file(async_alias, command_log):
    await _album("First", b"one", b"two")
    await _album("Second", b"three")
    kept = await _album("Kept", b"four")
    command_log.clear()
    assert await FlAlbum.objects(title__ne="Kept").async_delete() == 2
    # the files' ids (one find), the documents, then each file and its chunks
    assert command_log.names == ["find", "delete", *["delete"] * 2 * 7]
    assert await _files() == (2, 2) and await _files("extras") == (1, 1)
    assert await kept.cover.async_read() == b"cover"


def test_sync_alias_keeps_mongoengine_behaviour(sync_default):
    proxy = mongoengine.fields.GridFSProxy()
    proxy.put(b"sync bytes", filename="s.txt")
    FlAlbum(title="Sync", scans=[proxy.grid_id]).save()  # MongoEngine's way
    album = FlAlbum.objects.get()
    assert isinstance(album.scans[0], mongoengine.fields.GridFSProxy)
    assert repr(album.scans[0]) == f"<GridFSProxy: {proxy.grid_id}>"
    assert album.scans[0].read() == b"sync bytes"
