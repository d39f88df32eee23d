"""DBRefs in untyped ListField()/DictField() on async aliases: each item reads
as a proxy you can await, and async_select_related() loads them as
MongoEngine's select_related() does (by the stored _cls, otherwise by the
collection name), with one query per collection."""

from __future__ import annotations

from uuid import uuid4

from bson import DBRef

import mongoengine_async
from conftest import fresh_sync_default
from mongoengine_async import (
    AsyncReferenceProxy,
    DictField,
    Document,
    ListField,
    ReferenceField,
    StringField,
    connect_async,
    disconnect_async,
    get_async_db,
)
from mongoengine_async.testing import fresh_database


class UtAuthor(Document):
    name = StringField()
    meta = {"allow_inheritance": True}


class UtPoet(UtAuthor):
    form = StringField()


class UtPress(Document):
    """Its collection is not named after it: MongoEngine's guess fails."""

    name = StringField()
    meta = {"collection": "presses"}


class UtShelf(Document):
    label = StringField()
    items = ListField()
    by_key = DictField()


async def _seed() -> tuple[UtAuthor, UtPoet]:
    ann = await UtAuthor(name="Ann").async_save()
    bob = await UtPoet(name="Bob", form="sonnet").async_save()
    for number in range(3):
        await UtShelf(
            label=f"shelf {number}",
            items=[ann.to_dbref(), bob.to_dbref(), "plain", [bob.to_dbref()]],
            by_key={"first": bob.to_dbref(), "n": number},
        ).async_save()
    return ann, bob


def _described(value):
    if isinstance(value, UtAuthor):
        return (type(value).__name__, value.name)
    if isinstance(value, list):
        return [_described(item) for item in value]
    if isinstance(value, dict):
        return {key: _described(item) for key, item in value.items()}
    return value


async def test_items_are_proxies_you_can_await(async_alias, command_log):
    ann, _ = await _seed()
    shelf = await UtShelf.objects.order_by("label").async_first()
    command_log.clear()
    first, second, plain, nested = shelf.items
    assert isinstance(first, AsyncReferenceProxy) and first == ann
    assert plain == "plain" and isinstance(nested[0], AsyncReferenceProxy)
    assert command_log.count() == 0
    assert _described(await first) == ("UtAuthor", "Ann")
    assert _described(await second) == ("UtPoet", "Bob")  # by its stored _cls
    assert _described(await shelf.by_key["first"]) == ("UtPoet", "Bob")
    assert shelf.items[0] is await first
    assert command_log.names == ["find", "find", "find"]


async def test_select_related_matches_sync_mongoengine(mongodb_uri):
    name = f"test_ut_{uuid4().hex[:12]}"
    await connect_async(db=name, host=mongodb_uri, uuidRepresentation="standard")
    try:
        await _seed()
        shelves = await UtShelf.objects.order_by("label").async_select_related()
        loaded = [(_described(s.items), _described(s.by_key)) for s in shelves]
    finally:
        await disconnect_async()
    mongoengine_async.connect(db=name, host=mongodb_uri, uuidRepresentation="standard")
    try:
        shelves = UtShelf.objects.order_by("label").select_related()
        expected = [(_described(s.items), _described(s.by_key)) for s in shelves]
        mongoengine_async.get_db().client.drop_database(name)
    finally:
        mongoengine_async.disconnect()
    assert loaded == expected
    assert loaded[0] == (
        [("UtAuthor", "Ann"), ("UtPoet", "Bob"), "plain", [("UtPoet", "Bob")]],
        {"first": ("UtPoet", "Bob"), "n": 0},
    )


async def test_select_related_queries_each_collection_once(async_alias, command_log):
    await _seed()
    press = await UtPress(name="Penguin").async_save()
    await UtShelf(label="press", items=[press.to_dbref()]).async_save()
    command_log.clear()
    shelves = await UtShelf.objects.order_by("label").async_select_related()
    finds = [event.command["find"] for event in command_log.events]
    assert sorted(finds) == ["presses", "ut_author", "ut_shelf"]
    press_shelf, first, *_ = shelves  # "press" sorts first
    assert _described(first.items[:2]) == [("UtAuthor", "Ann"), ("UtPoet", "Bob")]
    assert isinstance(press_shelf.items[0], UtPress)  # found by its collection
    assert press_shelf.items[0].name == "Penguin"


async def test_saving_keeps_the_dbrefs(async_alias):
    ann, _ = await _seed()
    shelf = await UtShelf.objects.order_by("label").async_first()
    await shelf.items[0]
    shelf.label = "renamed"
    shelf.items.append("more")
    await shelf.async_save()
    raw = await get_async_db().ut_shelf.find_one({"_id": shelf.id})
    assert raw["items"][0] == DBRef("ut_author", ann.id)
    assert raw["items"][-1] == "more"


class UtLink(Document):
    press = ReferenceField(UtPress)
    author = ReferenceField(UtAuthor)


def _assigned(link: UtLink) -> dict:
    """An untyped list and dict given the references ``link`` reads as."""
    return {
        "items": [link.press, link.author, [link.press]],
        "by_key": {"p": link.press, "a": link.author},
    }


async def test_proxies_given_to_them_store_as_their_documents(mongodb_uri):
    """A proxy (a reference read on an async alias) put in an untyped list or
    dict is stored as MongoEngine stores the document it stands for on a sync
    alias: given to the constructor, a DBRef; assigned, a generic reference, or
    a DBRef when its class allows inheritance."""
    with fresh_sync_default(mongodb_uri) as database:
        press, ann = UtPress(name="P").save(), UtAuthor(name="Ann").save()
        UtLink(press=press, author=ann).save()
        link = UtLink.objects.get()
        built = UtShelf(label="built", **_assigned(link)).save()
        assigned = UtShelf(label="assigned")
        for name, value in _assigned(link).items():
            setattr(assigned, name, value)
        assigned.save()
        expected = [database.ut_shelf.find_one(s.pk) for s in (built, assigned)]
    async with fresh_database("default", mongodb_uri):
        await UtPress(id=press.pk, name="P").async_save()
        await UtAuthor(id=ann.pk, name="Ann").async_save()
        await UtLink(press=press.pk, author=ann.pk).async_save()
        link = await UtLink.objects.async_get()
        assert isinstance(link.press, AsyncReferenceProxy)
        await UtShelf(id=built.pk, label="built", **_assigned(link)).async_save()
        shelf = UtShelf(id=assigned.pk, label="assigned")
        for name, value in _assigned(link).items():
            setattr(shelf, name, value)
        await shelf.async_save()
        stored = [
            await get_async_db().ut_shelf.find_one(pk) for pk in (built.pk, assigned.pk)
        ]
    assert stored == expected
    assert stored[0]["items"][:2] == [
        DBRef("presses", press.pk),
        DBRef("ut_author", ann.pk),
    ]
    assert stored[1]["items"][:2] == [
        {"_cls": "UtPress", "_ref": DBRef("presses", press.pk)},
        DBRef("ut_author", ann.pk),
    ]
