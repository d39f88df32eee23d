"""Task-safe context managers: async_switch_db, async_switch_collection and
async_no_dereference, against the real server, alone and in 200 concurrent tasks.
"""

from __future__ import annotations

import asyncio
import random

import pytest
from bson import DBRef

from mongoengine_async import (
    AsyncReferenceProxy,
    Document,
    IntField,
    ListField,
    ReferenceField,
    StringField,
    async_no_dereference,
    async_run_in_transaction,
    async_switch_collection,
    async_switch_db,
    get_async_db,
)


class CtxItem(Document):
    marker = StringField()
    n = IntField()
    meta = {"indexes": ["marker"]}


class CtxRef(Document):
    item = ReferenceField(CtxItem)
    items = ListField(ReferenceField(CtxItem))


class Boom(Exception):
    pass


async def markers(alias: str, collection: str) -> list[str]:
    """The markers stored in ``collection`` of ``alias``, read with the driver."""
    cursor = get_async_db(alias)[collection].find({}, {"marker": 1}).sort("marker")
    return [raw["marker"] async for raw in cursor]


# -- one task --------------------------------------------------------------------------


async def test_switch_db_routes_saves_and_queries(other_alias):
    await CtxItem(marker="home").async_save()
    async with async_switch_db(CtxItem, other_alias) as cls:
        assert cls is CtxItem
        assert CtxItem._db_alias() == other_alias
        away = await CtxItem(marker="away", n=1).async_save()
        assert await CtxItem.objects.async_scalar("marker") == ["away"]
        fetched = await CtxItem.objects.async_get(marker="away")
        await CtxItem.objects(marker="away").async_update(inc__n=1)
        await fetched.async_reload()
        assert fetched.n == 2
        await away.async_update(inc__n=1)
    assert CtxItem._db_alias() == "default"
    assert await markers("default", "ctx_item") == ["home"]
    assert await markers(other_alias, "ctx_item") == ["away"]
    assert (await get_async_db(other_alias).ctx_item.find_one())["n"] == 3
    assert await CtxItem.objects.async_scalar("marker") == ["home"]
    # Indexes from meta were created in the other database too.
    indexes = await get_async_db(other_alias).ctx_item.index_information()
    assert "marker_1" in indexes


async def test_switch_collection_routes_saves_and_queries(async_alias):
    await CtxItem(marker="main").async_save()
    async with async_switch_collection(CtxItem, "ctx_archive") as cls:
        assert cls is CtxItem
        assert CtxItem._get_collection_name() == "ctx_archive"
        doc = await CtxItem(marker="archived").async_save()
        assert await CtxItem.objects.async_count() == 1
        await CtxItem.objects.async_insert([CtxItem(marker="bulk")])
        await doc.async_delete()
        assert await CtxItem.objects.async_scalar("marker") == ["bulk"]
    assert CtxItem._get_collection_name() == "ctx_item"
    assert await markers("default", "ctx_item") == ["main"]
    assert await markers("default", "ctx_archive") == ["bulk"]
    assert "marker_1" in await get_async_db().ctx_archive.index_information()


async def test_switches_combine_and_nest(other_alias):
    async with async_switch_db(CtxItem, other_alias):
        async with async_switch_collection(CtxItem, "ctx_a"):
            await CtxItem(marker="a").async_save()
            async with async_switch_collection(CtxItem, "ctx_b"):
                await CtxItem(marker="b").async_save()
            assert CtxItem._get_collection_name() == "ctx_a"
            await CtxItem(marker="a2").async_save()
        async with async_switch_db(CtxItem, "default"):
            await CtxItem(marker="back home").async_save()
        await CtxItem(marker="other").async_save()
    assert await markers(other_alias, "ctx_a") == ["a", "a2"]
    assert await markers(other_alias, "ctx_b") == ["b"]
    assert await markers(other_alias, "ctx_item") == ["other"]
    assert await markers("default", "ctx_item") == ["back home"]


async def test_switches_only_affect_their_class(other_alias):
    item = await CtxItem(marker="x").async_save()
    async with async_switch_db(CtxRef, other_alias):
        await CtxRef(item=item).async_save()
        assert CtxItem._db_alias() == "default"
    assert await get_async_db(other_alias).ctx_ref.count_documents({}) == 1
    assert await get_async_db().ctx_ref.count_documents({}) == 0


async def test_state_is_restored_after_an_exception(other_alias):
    with pytest.raises(Boom):
        async with async_switch_db(CtxItem, other_alias):
            async with async_switch_collection(CtxItem, "ctx_err"):
                async with async_no_dereference(CtxRef):
                    await CtxItem(marker="before the error").async_save()
                    raise Boom
    assert CtxItem._db_alias() == "default"
    assert CtxItem._get_collection_name() == "ctx_item"
    await CtxItem(marker="after").async_save()
    assert await markers("default", "ctx_item") == ["after"]
    assert await markers(other_alias, "ctx_err") == ["before the error"]
    ref = await CtxRef(item=await CtxItem.objects.async_first()).async_save()
    ref = await CtxRef.objects.async_get(pk=ref.pk)
    assert isinstance(ref.item, AsyncReferenceProxy)


async def test_no_dereference_reads_stored_references(async_alias):
    one = await CtxItem(marker="one").async_save()
    two = await CtxItem(marker="two").async_save()
    await CtxRef(item=one, items=[one, two]).async_save()

    async with async_no_dereference(CtxRef) as cls:
        assert cls is CtxRef
        ref = await CtxRef.objects.async_first()
        assert type(ref.item) is DBRef
        assert ref.item == DBRef("ctx_item", one.pk)
        assert [type(item) for item in ref.items] == [DBRef, DBRef]
        assert [item.id for item in ref.items] == [one.pk, two.pk]

    ref = await CtxRef.objects.async_first()
    assert isinstance(ref.item, AsyncReferenceProxy)
    assert (await ref.item).marker == "one"
    assert isinstance(ref.items[1], AsyncReferenceProxy)
    # Inside the block a reference already read as a proxy reads as its stored
    # value; items of a container read before keep their proxies (DBRefs too).
    unread = await CtxRef.objects.async_first()
    assert isinstance(unread.item, AsyncReferenceProxy)
    async with async_no_dereference(CtxRef):
        assert type(unread.item) is DBRef
        assert ref.item.marker == "one"  # loaded already: stays the document
        assert isinstance(ref.items[1], DBRef) and ref.items[1].id == two.pk


# -- many tasks ------------------------------------------------------------------------


async def test_200_concurrent_tasks_with_different_switches(other_alias):
    aliases = ["default", other_alias]
    collections = ["ctx_item", "ctx_c1", "ctx_c2", "ctx_c3"]
    target = await CtxItem(marker="target").async_save()
    await CtxRef(item=target).async_save()
    placed: dict[tuple[str, str], list[str]] = {}
    rng = random.Random(5)
    plans = [(i, rng.choice(aliases), rng.choice(collections)) for i in range(200)]

    async def work(i: int, alias: str, collection: str) -> None:
        marker = f"m{i:03d}"
        async with (
            async_switch_db(CtxItem, alias),
            async_switch_collection(CtxItem, collection),
        ):
            await asyncio.sleep(rng.random() / 100)
            await CtxItem(marker=marker, n=i).async_save()
            await asyncio.sleep(0)
            assert CtxItem._db_alias() == alias
            assert CtxItem._get_collection_name() == collection
            found = await CtxItem.objects(marker=marker).async_get()
            assert found.n == i
            assert await CtxItem.objects(marker__startswith="m").async_count() >= 1
        # Every other task keeps its own view of CtxRef's references.
        if i % 2:
            async with async_no_dereference(CtxRef):
                await asyncio.sleep(0)
                ref = await CtxRef.objects.async_first()
                assert type(ref.item) is DBRef
        else:
            ref = await CtxRef.objects.async_first()
            await asyncio.sleep(0)
            assert isinstance(ref.item, AsyncReferenceProxy)
        assert CtxItem._db_alias() == "default"
        assert CtxItem._get_collection_name() == "ctx_item"

    for i, alias, collection in plans:
        placed.setdefault((alias, collection), []).append(f"m{i:03d}")
    await asyncio.wait_for(asyncio.gather(*(work(*plan) for plan in plans)), 120)

    assert len(placed) == len(aliases) * len(collections)
    for (alias, collection), expected in placed.items():
        stored = [m for m in await markers(alias, collection) if m != "target"]
        assert stored == sorted(expected), (alias, collection)


class CtxSyncItem(Document):
    marker = StringField()


class CtxSyncHolder(Document):
    item = ReferenceField(CtxSyncItem)


async def test_a_task_switch_of_a_sync_alias_is_refused_at_entry(
    sync_default, mongodb_uri
):
    """async_switch_db to a sync alias, async_switch_collection and
    async_no_dereference of a class on one: only async operations follow
    them, so the block was entered and then every operation inside refused
    (async_no_dereference: sync reads ignored it, references loaded). Refused
    at entry now, naming the alias and MongoEngine's context manager."""
    import mongoengine

    from mongoengine_async import AsyncUsageError, ConnectionFailure, connect

    refusals = [
        (
            async_switch_collection(CtxSyncItem, "ctx_sync_other"),
            r"async_switch_collection\(\) needs an async alias but 'default' .*"
            r"switch_collection\(CtxSyncItem, 'ctx_sync_other'\)",
        ),
        (
            async_switch_db(CtxItem, "default"),
            r"async_switch_db\(\) needs an async alias but 'default' .*"
            r"switch_db\(CtxItem, 'default'\)",
        ),
        (
            async_no_dereference(CtxSyncHolder),
            r"async_no_dereference\(\) needs an async alias but 'default' .*"
            r"no_dereference\(CtxSyncHolder\)",
        ),
    ]
    for block, message in refusals:
        with pytest.raises(AsyncUsageError, match=message):
            async with block:
                pytest.fail("entered")
    async with async_no_dereference(mongoengine.EmbeddedDocument):
        pass  # (a class without an alias)
    # An alias not registered at entry, as MongoEngine's switch_db allows;
    # connected sync inside, the sync operations still refuse the switch.
    async with async_switch_db(CtxSyncItem, "ctx-nowhere"):
        with pytest.raises(ConnectionFailure, match="ctx-nowhere"):
            CtxSyncItem.objects.count()
        connect(
            db=sync_default.name,
            alias="ctx-nowhere",
            host=mongodb_uri,
            uuidRepresentation="standard",
        )
        try:
            with pytest.raises(AsyncUsageError, match="switch_db"):
                CtxSyncItem(marker="inside").save()
        finally:
            mongoengine.disconnect("ctx-nowhere")
    CtxSyncItem(marker="after").save()
    assert [raw["marker"] for raw in sync_default.ctx_sync_item.find()] == ["after"]


# -- the switches seen wherever the task's context goes -----------------------------


def _where() -> tuple[str, str | None]:
    """CtxItem's alias and collection name as seen here."""
    return CtxItem._db_alias(), CtxItem._get_collection_name()


async def test_switches_are_seen_in_tasks_threads_and_around_transactions(
    other_alias,
):
    """The switches hold in a task started inside (a copy of the context), in
    ``asyncio.to_thread`` (one too), before and after a transaction block
    nested in them, and inside a switch entered in a transaction block; a
    thread not given the context (``run_in_executor``) sees none, as before."""
    switched = (other_alias, "ctx_moved")
    async with async_switch_db(CtxItem, other_alias):
        async with async_switch_collection(CtxItem, "ctx_moved"):
            assert _where() == switched
            assert await asyncio.create_task(asyncio.to_thread(_where)) == switched
            assert await asyncio.to_thread(_where) == switched
            loop = asyncio.get_running_loop()
            assert await loop.run_in_executor(None, _where) == ("default", "ctx_item")
            await CtxItem(marker="before").async_save()  # (made outside)
            async with async_run_in_transaction(other_alias):
                assert _where() == switched
                await CtxItem(marker="in").async_save()
            assert _where() == switched
            await CtxItem(marker="after").async_save()
    assert _where() == ("default", "ctx_item")
    async with async_switch_collection(CtxItem, "ctx_inner"):
        await CtxItem(marker="before").async_save()
    await CtxItem(marker="before").async_save()
    async with async_run_in_transaction():
        async with async_switch_collection(CtxItem, "ctx_inner"):
            assert _where() == ("default", "ctx_inner")
            await CtxItem(marker="inner").async_save()
        assert _where() == ("default", "ctx_item")
        await CtxItem(marker="outer").async_save()
    assert await markers(other_alias, "ctx_moved") == ["after", "before", "in"]
    assert await markers("default", "ctx_inner") == ["before", "inner"]
    assert await markers("default", "ctx_item") == ["before", "outer"]
