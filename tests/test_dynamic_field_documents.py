"""A document held by a DynamicField (stored as ``{"_cls", "_ref"}``) on an async
alias: loading does no I/O and it reads as a proxy to await (MongoEngine's
DynamicField loads it with blocking I/O); ``async_select_related()`` loads it,
and the ones in the lists and dicts the field holds, as MongoEngine's
``select_related()`` does on a sync alias; saving keeps the stored form."""

from __future__ import annotations

from typing import Any

from bson import DBRef

from conftest import fresh_sync_default
from mongoengine_async import (
    AsyncReferenceProxy,
    DictField,
    Document,
    DynamicField,
    ListField,
    ReferenceField,
    StringField,
    get_async_db,
)
from mongoengine_async.testing import CommandLog, fresh_database


class DfUser(Document):
    name = StringField()


class DfHolder(Document):
    anything = DynamicField()
    label = StringField()


class DfNote(Document):
    author = ReferenceField(DfUser)


def held(ann: DfUser, bob: DfUser) -> list[Any]:
    """What the holders hold, in order."""
    return [ann, [ann, bob, 3], {"a": ann, "b": "x"}, [[bob]], "plain", None]


def described(value: Any) -> Any:
    """A value with each document as ``("document", name)``, each proxy as
    ``("proxy", class name)`` and each stored document as ``("stored", cls)``."""
    if isinstance(value, Document):
        return ("document", value.name)
    if isinstance(value, AsyncReferenceProxy):
        return ("proxy", value.document_type.__name__)
    if isinstance(value, dict) and "_ref" in value:
        return ("stored", value["_cls"])
    if isinstance(value, list):
        return [described(item) for item in value]
    if isinstance(value, dict):
        return {key: described(item) for key, item in value.items()}
    return value


async def test_async_reads_and_joins_as_mongoengine_does_on_a_sync_alias(
    mongodb_uri: str,
) -> None:
    with fresh_sync_default(mongodb_uri):
        ann, bob = DfUser(name="ann").save(), DfUser(name="bob").save()
        for value in held(ann, bob):
            DfHolder(anything=value).save()
        sync_reads = [described(h.anything) for h in DfHolder.objects.order_by("id")]
        sync_joined = [
            described(h.anything)
            for h in DfHolder.objects.order_by("id").select_related()
        ]
    async with fresh_database("default", mongodb_uri):
        ann = await DfUser(name="ann").async_save()
        bob = await DfUser(name="bob").async_save()
        for value in held(ann, bob):
            await DfHolder(anything=value).async_save()
        queryset = DfHolder.objects.order_by("id")
        reads = [described(h.anything) for h in await queryset.async_to_list()]
        joined = [described(h.anything) for h in await queryset.async_select_related()]
    # MongoEngine loads a held document as it loads the holder; ours is a proxy.
    assert sync_reads[0] == ("document", "ann") and reads[0] == ("proxy", "DfUser")
    assert reads[1:] == sync_reads[1:]
    assert reads[1] == [("stored", "DfUser"), ("stored", "DfUser"), 3]
    assert joined == sync_joined
    assert joined[:4] == [
        ("document", "ann"),
        [("document", "ann"), ("document", "bob"), 3],
        {"a": ("document", "ann"), "b": "x"},
        [[("document", "bob")]],
    ]


async def test_loading_does_no_io_and_awaiting_fetches_once(
    async_alias: str, command_log: Any
) -> None:
    ann = await DfUser(name="ann").async_save()
    await DfHolder(anything=ann, label="a").async_save()
    command_log.clear()
    holder = await DfHolder.objects.async_get()
    assert command_log.names == ["find"]
    proxy = holder.anything
    assert isinstance(proxy, AsyncReferenceProxy)
    assert repr(proxy) == "<AsyncReferenceProxy: anything (unfetched)>"
    assert proxy == ann and proxy.pk == ann.pk
    assert (await proxy).name == "ann"
    assert command_log.names == ["find", "find"]
    assert holder.anything is await proxy  # the document took its place
    other = await DfHolder.objects.async_get()
    assert (await DfHolder.anything.async_fetch(other)) == ann
    assert isinstance(other.anything, DfUser)


async def test_saving_keeps_the_stored_form(async_alias: str) -> None:
    ann = await DfUser(name="ann").async_save()
    await DfHolder(anything=ann, label="a").async_save()
    stored = await get_async_db().df_holder.find_one()
    assert stored["anything"] == {"_ref": DBRef("df_user", ann.pk), "_cls": "DfUser"}
    holder = await DfHolder.objects.async_get()
    proxy = holder.anything  # the proxy now takes its place in _data
    assert holder.to_mongo()["anything"] == stored["anything"]
    holder.label = "b"
    await holder.async_save()
    assert await get_async_db().df_holder.find_one() == {**stored, "label": "b"}
    copy = await DfHolder(anything=proxy, label="copy").async_save()
    stored_copy = await get_async_db().df_holder.find_one({"_id": copy.pk})
    assert stored_copy["anything"] == stored["anything"]
    await DfNote(author=ann).async_save()
    author = (await DfNote.objects.async_get()).author  # a ReferenceField's proxy
    copy = await DfHolder(anything=author, label="author").async_save()
    stored_copy = await get_async_db().df_holder.find_one({"_id": copy.pk})
    assert list(stored_copy["anything"].items()) == list(stored["anything"].items())


class DfItems(Document):
    things = ListField(DynamicField())
    by_key = DictField(DynamicField())


async def test_documents_in_containers_of_dynamic_fields(mongodb_uri: str) -> None:
    """In a ListField or DictField of DynamicField items, a held document reads
    as a proxy to await (MongoEngine's read of the container loads it), the ones
    in the lists and dicts an item holds too; ``async_select_related()`` loads
    them as MongoEngine's read does; saving keeps the stored form."""

    def values(ann: DfUser, bob: DfUser) -> dict[str, Any]:
        return {
            "things": [ann, [bob, 3], {"k": ann}, "plain"],
            "by_key": {"a": bob, "b": 1},
        }

    def read(items: DfItems) -> Any:
        return described(list(items.things)), described(dict(items.by_key))

    with fresh_sync_default(mongodb_uri) as database:
        ann, bob = DfUser(name="ann").save(), DfUser(name="bob").save()
        DfItems(**values(ann, bob)).save()
        sync_read = read(DfItems.objects.get())
        sync_stored = database.df_items.find_one()
    command_log = CommandLog()
    async with fresh_database("default", mongodb_uri, event_listeners=[command_log]):
        ann = await DfUser(name="ann").async_save()
        bob = await DfUser(name="bob").async_save()
        await DfItems(**values(ann, bob)).async_save()
        stored = await get_async_db().df_items.find_one()
        command_log.clear()
        items = await DfItems.objects.async_get()
        async_read = read(items)
        assert command_log.names == ["find"]  # no I/O on reading
        assert (await items.things[0]).name == "ann"
        assert items.things[0] is await items.things[0]  # put in its place
        await items.async_save()
        assert await get_async_db().df_items.find_one() == stored
        [joined] = await DfItems.objects.async_select_related()
        joined_read = read(joined)
    assert async_read == (
        [
            ("proxy", "DfUser"),
            [("proxy", "DfUser"), 3],
            {"k": ("proxy", "DfUser")},
            "plain",
        ],
        {"a": ("proxy", "DfUser"), "b": 1},
    )
    assert joined_read == sync_read
    assert sync_read[0][0] == ("document", "ann")
    ids = {"ann": ann.pk, "bob": bob.pk}
    assert stored["things"][0] == {
        "_ref": DBRef("df_user", ids["ann"]),
        "_cls": "DfUser",
    }
    assert sync_stored["things"][0]["_cls"] == "DfUser"
