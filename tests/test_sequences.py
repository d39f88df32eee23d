"""SequenceField on an async alias: ``async_save``/``async_insert``/``async_update``
number what MongoEngine's ``save``/``insert``/``update`` number on a sync alias
(same values, counters and stored documents), with one ``$inc`` per counter;
reading an unset value gives None; anything else that would block says what to
await instead."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterator
from typing import Any
from uuid import uuid4

import pymongo
import pytest
from mongoengine import signals

from conftest import sync_alias_beside
from mongoengine_async import (
    AsyncUsageError,
    Document,
    EmbeddedDocument,
    EmbeddedDocumentField,
    GenericEmbeddedDocumentField,
    ListField,
    NotUniqueError,
    SequenceField,
    StringField,
    async_run_in_transaction,
    connect,
    connect_async,
    disconnect,
    disconnect_async,
    get_async_db,
    get_db,
)

SEQ = "seq"  # the alias of the differential test, sync then async


class SqLine(EmbeddedDocument):
    n = SequenceField(db_alias=SEQ)
    text = StringField()


class SqTicket(Document):
    number = SequenceField(db_alias=SEQ)
    title = StringField()
    lines = ListField(EmbeddedDocumentField(SqLine))
    meta = {"db_alias": SEQ}


class SqKeyed(Document):
    """A sequence primary key, with its own sequence name and decorator, and
    another sequence."""

    id = SequenceField(
        primary_key=True, db_alias=SEQ, sequence_name="keys", value_decorator=str
    )
    serial = SequenceField(db_alias=SEQ)
    title = StringField()
    meta = {"db_alias": SEQ}


class SqOrder(Document):
    """On the async tests' "default" alias."""

    number = SequenceField()
    title = StringField()


class SqCoded(Document):
    number = SequenceField()
    code = StringField(unique=True)


class SqPart(EmbeddedDocument):
    n = SequenceField()


class SqCrate(Document):
    parts = ListField(EmbeddedDocumentField(SqPart))


class SqBox(Document):
    part = GenericEmbeddedDocumentField()


class SqNote(EmbeddedDocument):
    text = StringField()
    meta = {"allow_inheritance": True}


class SqNumberedNote(SqNote):
    n = SequenceField(db_alias=SEQ)


class SqBoard(Document):
    """Sequences in an embedded subclass, and in a list of numbers."""

    serial = SequenceField(db_alias=SEQ)
    note = EmbeddedDocumentField(SqNote)
    notes = ListField(EmbeddedDocumentField(SqNote))
    nums = ListField(SequenceField(db_alias=SEQ))
    meta = {"db_alias": SEQ}


class SqItem(EmbeddedDocument):
    meta = {"allow_inheritance": True}


class SqShelf(Document):
    item = EmbeddedDocumentField(SqItem)


SYNC = "seq_sync"  # a sync alias beside the async "default"


class SqSyncCounted(Document):
    """On the async "default" alias, its counter on a sync alias."""

    n = SequenceField(db_alias=SYNC)


class SqAsyncCounted(Document):
    """On a sync alias, its counter on the async "default" alias."""

    n = SequenceField()
    meta = {"db_alias": SYNC}


class SqBase(Document):
    meta = {"allow_inheritance": True}


class SqNumbered(SqBase):
    number = SequenceField()


Call = Callable[..., Awaitable[Any]]


async def sync_call(target: Any, name: str, *args: Any, **kwargs: Any) -> Any:
    return getattr(target, name)(*args, **kwargs)


async def async_call(target: Any, name: str, *args: Any, **kwargs: Any) -> Any:
    return await getattr(target, f"async_{name}")(*args, **kwargs)


@pytest.fixture
def recorded() -> Iterator[list]:
    """What SqKeyed's save signals saw in ``_data`` (reading an attribute would
    number it on a sync alias)."""
    seen: list = []

    def record(sender: Any, document: Any, **kwargs: Any) -> None:
        seen.append(dict(document._data))

    hooks = (signals.pre_save, signals.pre_save_post_validation, signals.post_save)
    for hook in hooks:
        hook.connect(record, sender=SqKeyed)
    yield seen
    for hook in hooks:
        hook.disconnect(record, sender=SqKeyed)


async def numbered(call: Call, database: Any, seen: list) -> dict[str, Any]:
    """A run of saves, inserts and updates through ``call``: what they returned,
    what the signals saw, and the stored documents and counters."""
    ticket = await call(
        SqTicket(title="a", lines=[SqLine(text="x"), SqLine(text="y")]), "save"
    )
    keyed = await call(SqKeyed(title="k"), "save")
    ids = await call(
        SqKeyed.objects, "insert", [SqKeyed(title=t) for t in "pqr"], load_bulk=False
    )
    given = await call(SqTicket(title="given", number=50), "save")
    first_next = await call(SqTicket.number, "set_next_value", 100)
    after_set = await call(SqTicket(title="b"), "save")
    preview = await call(SqTicket.number, "get_next_value")
    database.sq_ticket.insert_one({"title": "raw"})
    loaded = await call(SqTicket.objects, "get", title="raw")
    loaded.title = "raw, saved"
    await call(loaded, "save")
    upserted = await call(SqKeyed(title="u"), "update", upsert=True, set__title="v")
    kept = {
        "ticket": (ticket.to_mongo().to_dict(), ticket._changed_fields),
        "keyed": (keyed.pk, keyed._created, keyed._changed_fields),
        "ids": ids,
        "given": given.number,
        "set": (first_next, after_set.number, preview),
        "loaded": (loaded.number, loaded._changed_fields),
        "upserted": upserted,
        "signals": list(seen),
    }
    seen.clear()
    stored = {  # a ticket's _id is a new ObjectId in each run
        name: list(database[name].find({}, {"_id": 0} if name == "sq_ticket" else None))
        for name in ("sq_ticket", "sq_keyed", "mongoengine.counters")
    }
    kept["ticket"][0].pop("_id")
    return {**kept, **stored}


async def by_both(mongodb_uri: str, run: Callable[[Call, Any], Awaitable[Any]]) -> Any:
    """What ``run(call, database)`` gives through MongoEngine on the sync alias
    SEQ, then through ours on SEQ made async, each on a fresh database."""
    names = [f"test_seq_{uuid4().hex[:12]}" for _ in range(2)]
    client: pymongo.MongoClient = pymongo.MongoClient(mongodb_uri)
    try:
        connect(db=names[0], alias=SEQ, host=mongodb_uri, uuidRepresentation="standard")
        try:
            by_mongoengine = await run(sync_call, client[names[0]])
        finally:
            disconnect(SEQ)
        await connect_async(
            db=names[1], alias=SEQ, host=mongodb_uri, uuidRepresentation="standard"
        )
        try:
            ours = await run(async_call, client[names[1]])
        finally:
            await disconnect_async(SEQ)
    finally:
        for name in names:
            client.drop_database(name)
        client.close()
    return by_mongoengine, ours


async def test_async_writes_number_as_mongoengine_does_on_a_sync_alias(
    mongodb_uri: str, recorded: list
) -> None:
    by_mongoengine, ours = await by_both(
        mongodb_uri, lambda call, database: numbered(call, database, recorded)
    )
    assert ours == by_mongoengine
    # What it numbered (MongoEngine's own choices, which ours repeats):
    assert ours["ticket"][0]["number"] == 1
    assert [line["n"] for line in ours["ticket"][0]["lines"]] == [1, 2]
    assert ours["ids"] == ["2", "3", "4"]
    assert ours["set"] == (100, 101, 102)
    # numbered by to_mongo() as the save went, not marked as changed: not stored
    assert ours["loaded"] == (102, [])
    assert [doc["serial"] for doc in ours["sq_keyed"][:-1]] == [1, 2, 3, 4]
    assert ours["upserted"] == 1 and ours["sq_keyed"][-1] == {"_id": "5", "title": "v"}
    # the primary key is numbered before pre_save_post_validation, the rest after
    assert [(seen["id"], seen["serial"]) for seen in ours["signals"]] == [
        (None, None),
        ("1", None),
        ("1", 1),
    ]
    assert sorted(ours["mongoengine.counters"], key=str) == [
        {"_id": "keys.id", "next": 5},
        {"_id": "sq_keyed.serial", "next": 4},
        {"_id": "sq_line.n", "next": 2},
        {"_id": "sq_ticket.number", "next": 102},
    ]


async def test_one_increment_per_counter(async_alias: str, command_log: Any) -> None:
    command_log.clear()
    await SqOrder(title="a").async_save()
    assert command_log.names == ["findAndModify", "insert"]
    command_log.clear()
    orders = [SqOrder(title=str(i)) for i in range(10)]
    await SqOrder.objects.async_insert(orders, load_bulk=False)
    assert command_log.names == ["findAndModify", "insert"]
    assert [order.number for order in orders] == list(range(2, 12))
    stored = await get_async_db().sq_order.find({}, {"_id": 0}).to_list()
    assert [doc["number"] for doc in stored] == list(range(1, 12))


async def test_an_insert_through_a_base_class_numbers_its_subclasses(
    async_alias: str,
) -> None:
    documents = [SqNumbered(), SqBase(), SqNumbered()]
    await SqBase.objects.async_insert(documents, load_bulk=False)
    assert [getattr(d, "number", None) for d in documents] == [1, None, 2]


async def test_an_unset_value_reads_as_none_without_io(
    async_alias: str, command_log: Any
) -> None:
    order = SqOrder(title="a")
    command_log.clear()
    assert order.number is None
    order.number = None
    assert (order.number, order.pk, command_log.count()) == (None, None, 0)
    order.number = 7
    await order.async_save()
    assert (await SqOrder.objects.async_get()).number == 7
    assert await get_async_db()["mongoengine.counters"].count_documents({}) == 0


BLOCKING = (
    "SqOrder.number.{name}() would block the event loop: alias 'default' is async "
    "(connect_async); use {use} instead"
)


@pytest.mark.parametrize(
    ("call", "name", "use"),
    [
        (
            lambda: SqOrder(title="a").to_mongo(),
            "generate",
            "await document.async_save(), which sets it, or "
            "await SqOrder.number.async_generate()",
        ),
        (
            lambda: SqOrder.number.generate(),
            "generate",
            "await document.async_save(), which sets it, or "
            "await SqOrder.number.async_generate()",
        ),
        (
            lambda: SqOrder.number.set_next_value(3),
            "set_next_value",
            "await SqOrder.number.async_set_next_value(value)",
        ),
        (
            lambda: SqOrder.number.get_next_value(),
            "get_next_value",
            "await SqOrder.number.async_get_next_value()",
        ),
    ],
)
async def test_blocking_calls_name_what_to_await(
    async_alias: str, command_log: Any, call: Callable[[], Any], name: str, use: str
) -> None:
    command_log.clear()
    with pytest.raises(AsyncUsageError) as excinfo:
        call()
    assert str(excinfo.value) == BLOCKING.format(name=name, use=use)
    assert command_log.count() == 0


async def test_documents_embedded_through_typed_fields_are_numbered(
    async_alias: str,
) -> None:
    crate = await SqCrate(parts=[SqPart(), SqPart()]).async_save()
    assert [part.n for part in crate.parts] == [1, 2]
    with pytest.raises(AsyncUsageError) as excinfo:  # generic: not walked
        await SqBox(part=SqPart()).async_save()
    assert str(excinfo.value).startswith(
        "SqPart.n.generate() would block the event loop: alias 'default' is async"
    )
    assert await get_async_db().sq_box.count_documents({}) == 0


async def test_the_async_counter_methods(async_alias: str) -> None:
    assert await SqOrder.number.async_get_next_value() == 1
    assert await SqOrder.number.async_generate() == 1
    assert await SqOrder.number.async_set_next_value(41) == 41
    assert await SqOrder.number.async_get_next_value() == 42
    assert (await SqOrder(title="a").async_save()).number == 42


async def test_concurrent_saves_get_distinct_numbers(async_alias: str) -> None:
    orders = await asyncio.gather(
        *(SqOrder(title=str(i)).async_save() for i in range(50))
    )
    assert sorted(order.number for order in orders) == list(range(1, 51))


async def test_counters_stay_outside_transactions(async_alias: str) -> None:
    # (concurrent transactions cannot each create the collection)
    await get_async_db().create_collection("sq_order")
    with pytest.raises(ZeroDivisionError):
        async with async_run_in_transaction():
            await SqOrder(title="rolled back").async_save()
            1 / 0  # noqa: B018
    assert await get_async_db().sq_order.count_documents({}) == 0

    async def save_one(i: int) -> SqOrder:
        async with async_run_in_transaction():
            return await SqOrder(title=str(i)).async_save()

    # Ten transactions on one counter commit without a write conflict; the
    # rolled-back save kept its number (a gap, as SQL sequences leave).
    orders = await asyncio.gather(*(save_one(i) for i in range(10)))
    assert sorted(order.number for order in orders) == list(range(2, 12))


async def test_a_failed_save_keeps_its_number_for_the_next_save(
    async_alias: str,
) -> None:
    """The number taken before a failed (or cancelled) write stays with the
    document: saving it again writes it, without taking another."""
    await SqCoded(code="a").async_save()
    clash = SqCoded(code="a")
    with pytest.raises(NotUniqueError):
        await clash.async_save()
    assert clash.number == 2
    clash.code = "b"
    await clash.async_save()
    stored = await get_async_db().sq_coded.find_one({"code": "b"})
    assert stored["number"] == 2
    counter = await get_async_db()["mongoengine.counters"].find_one(
        {"_id": "sq_coded.number"}
    )
    assert counter["next"] == 2


async def stored_with_counters(database: Any, name: str) -> dict[str, list]:
    """The documents of collection ``name`` (without ids) and the counters."""
    return {
        name: list(database[name].find({}, {"_id": 0})),
        "counters": list(database["mongoengine.counters"].find().sort("_id")),
    }


async def boards(call: Call, database: Any) -> dict[str, list]:
    """Saves and inserts of documents embedding a numbered subclass, holding
    a list of numbers, and one instance given twice."""
    note = SqNumberedNote(text="a")
    await call(SqBoard(note=note, notes=[SqNote(), SqNumberedNote()]), "save")
    await call(SqBoard.objects, "insert", [SqBoard(notes=[SqNumberedNote()])])
    twice = SqBoard(nums=[None, 5, None])
    await call(SqBoard.objects, "insert", [twice, twice], load_bulk=False)
    return await stored_with_counters(database, "sq_board")


async def test_embedded_subclasses_and_lists_are_numbered_as_mongoengine_does(
    mongodb_uri: str,
) -> None:
    by_mongoengine, ours = await by_both(mongodb_uri, boards)
    assert ours == by_mongoengine
    assert ours["sq_board"] == [
        {
            "serial": 1,
            "note": {"_cls": "SqNumberedNote", "text": "a", "n": 1},
            "notes": [{"_cls": "SqNote"}, {"_cls": "SqNumberedNote", "n": 2}],
            "nums": [],
        },
        {"serial": 2, "notes": [{"_cls": "SqNumberedNote", "n": 3}], "nums": []},
        # one instance given twice takes one number
        {"serial": 3, "notes": [], "nums": [1, 5, 2]},
        {"serial": 3, "notes": [], "nums": [1, 5, 2]},
    ]
    assert ours[
        "counters"
    ] == [  # MongoEngine's names: "<name>.None" for a list's items
        {"_id": "sq_board.None", "next": 2},
        {"_id": "sq_board.serial", "next": 3},
        {"_id": "sq_numbered_note.n", "next": 3},
    ]


async def test_an_embedded_subclass_defined_after_a_save_is_numbered(
    async_alias: str,
) -> None:
    await SqShelf(item=SqItem()).async_save()

    class SqLateItem(SqItem):
        n = SequenceField()

    await SqShelf(item=SqLateItem()).async_save()
    stored = await get_async_db().sq_shelf.find({}, {"_id": 0}).to_list()
    assert stored == [
        {"item": {"_cls": "SqItem"}},
        {"item": {"_cls": "SqLateItem", "n": 1}},
    ]


async def updates(call: Call, database: Any) -> dict[str, list]:
    """Updates, upserts and modifies carrying new embedded documents."""
    ticket = await call(SqTicket(title="a"), "save")
    tickets = SqTicket.objects
    await call(tickets(title="a"), "update", set__lines=[SqLine(text="s")])
    await call(tickets(title="a"), "update", push__lines=SqLine(text="p"))
    await call(tickets(title="b"), "update", upsert=True, push__lines=SqLine())
    await call(tickets(title="c"), "upsert_one", push__lines=SqLine(text="u"))
    await call(tickets(title="a"), "modify", push__lines=SqLine(text="m"))
    await call(ticket, "update", push__lines=SqLine(text="du"))
    await call(ticket, "modify", push_all__lines=[SqLine(), SqLine(text="dm")])
    return await stored_with_counters(database, "sq_ticket")


async def test_updates_number_new_embedded_documents_as_mongoengine_does(
    mongodb_uri: str,
) -> None:
    by_mongoengine, ours = await by_both(mongodb_uri, updates)
    assert ours == by_mongoengine
    assert [line.get("n") for line in ours["sq_ticket"][0]["lines"]] == [
        1,
        2,
        5,
        6,
        7,
        8,
    ]
    assert [doc["lines"] for doc in ours["sq_ticket"][1:]] == [
        [{"n": 3}],
        [{"n": 4, "text": "u"}],
    ]


async def test_an_async_write_refuses_a_counter_on_a_sync_alias(
    async_alias: str, mongodb_uri: str, command_log: Any
) -> None:
    with sync_alias_beside(SYNC, async_alias, mongodb_uri):
        command_log.clear()
        for write in (
            SqSyncCounted().async_save,
            lambda: SqSyncCounted.objects.async_insert([SqSyncCounted()]),
        ):
            with pytest.raises(AsyncUsageError) as excinfo:
                await write()
            assert str(excinfo.value) == (
                "SqSyncCounted.n: the SequenceField's alias 'seq_sync' was registered "
                "with connect() (sync), but an async write numbers it, which needs "
                "an async alias (a SequenceField does not follow its document's "
                "db_alias; pass SequenceField(db_alias=...) naming an async alias, "
                "or connect_async(alias='seq_sync'))"
            )
        assert command_log.count() == 0
        assert get_db(SYNC).list_collection_names() == []


async def test_a_sync_save_refuses_a_counter_on_an_async_alias(
    async_alias: str, mongodb_uri: str
) -> None:
    with sync_alias_beside(SYNC, async_alias, mongodb_uri):
        with pytest.raises(AsyncUsageError) as excinfo:
            SqAsyncCounted().save()
        assert str(excinfo.value) == (
            "SqAsyncCounted.n: the SequenceField's alias 'default' is async "
            "(connect_async), but SqAsyncCounted is on sync alias 'seq_sync', whose "
            "save() numbers it with blocking I/O (a SequenceField does not follow "
            "its document's db_alias; pass SequenceField(db_alias=...) naming a "
            "sync alias)"
        )
        assert get_db(SYNC).list_collection_names() == []
