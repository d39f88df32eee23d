"""Async connection registry: connect_async and friends, against a real mongod."""

from __future__ import annotations

import asyncio
import gc
import weakref
from uuid import uuid4

import mongoengine
import mongoengine.connection as me_connection
import pytest
from pymongo import AsyncMongoClient, MongoClient
from pymongo.asynchronous.database import AsyncDatabase

import mongoengine_async
from mongoengine_async import (
    AsyncUsageError,
    ConnectionFailure,
    ConnectionUsageError,
    Document,
    IntField,
    StringField,
    async_switch_collection,
    async_switch_db,
    connect_async,
    disconnect_all_async,
    disconnect_async,
    get_async_connection,
    get_async_db,
    is_async_connection,
)


class ConnAliasItem(Document):
    name = StringField()
    n = IntField()
    meta = {"db_alias": "conn-a", "collection": "conn_alias_items"}


def _db_name() -> str:
    return f"test_conn_{uuid4().hex[:12]}"


@pytest.fixture
async def cleanup(mongodb_uri):
    """Disconnects every async alias and the listed sync aliases, drops dbs."""
    state = {"sync": [], "dbs": []}
    yield state
    for alias in state["sync"]:
        mongoengine_async.disconnect(alias)
    if state["dbs"]:
        client = AsyncMongoClient(mongodb_uri)
        try:
            for name in state["dbs"]:
                await client.drop_database(name)
        finally:
            await client.close()
    await disconnect_all_async()
    ConnAliasItem._meta["db_alias"] = "conn-a"


def _connect_sync(alias, mongodb_uri, cleanup, db=None):
    db = db or _db_name()
    cleanup["sync"].append(alias)
    cleanup["dbs"].append(db)
    return mongoengine_async.connect(
        db=db, alias=alias, host=mongodb_uri, uuidRepresentation="standard"
    )


async def test_connect_async_returns_async_mongo_client(mongodb_uri, cleanup):
    db = _db_name()
    cleanup["dbs"].append(db)
    client = await connect_async(
        db=db, alias="c1", host=mongodb_uri, uuidRepresentation="standard"
    )
    assert isinstance(client, AsyncMongoClient)
    assert get_async_connection("c1") is client
    database = get_async_db("c1")
    assert isinstance(database, AsyncDatabase)
    assert database.name == db
    # The client really talks to the server.
    await database.things.insert_one({"x": 1})
    assert await database.things.find_one({}, {"_id": 0}) == {"x": 1}


class RecordingAsyncClient(AsyncMongoClient):
    """An AsyncMongoClient subclass, as a ``mongo_client_class``."""


async def test_mongo_client_class_makes_the_client(mongodb_uri, cleanup):
    db = _db_name()
    cleanup["dbs"].append(db)
    client = await connect_async(
        db=db,
        alias="conn-a",
        host=mongodb_uri,
        uuidRepresentation="standard",
        mongo_client_class=RecordingAsyncClient,
    )
    assert type(client) is RecordingAsyncClient
    item = await ConnAliasItem(name="made", n=1).async_save()
    raw = await client[db].conn_alias_items.find_one({"_id": item.pk})
    assert raw == {"_id": item.pk, "name": "made", "n": 1}


async def test_a_sync_mongo_client_class_is_refused(mongodb_uri, cleanup):
    with pytest.raises(ConnectionUsageError) as excinfo:
        await connect_async(
            db=_db_name(),
            alias="c-sync-class",
            host=mongodb_uri,
            mongo_client_class=MongoClient,
        )
    assert str(excinfo.value) == (
        "connect_async() needs a mongo_client_class that is a subclass of "
        "pymongo.AsyncMongoClient, not <class 'pymongo.synchronous.mongo_client."
        "MongoClient'>; a sync client class goes to connect()"
    )
    assert not is_async_connection("c-sync-class")


async def test_connect_same_alias_same_settings_returns_same_client(
    mongodb_uri, cleanup
):
    db = _db_name()
    first = await connect_async(
        db=db, alias="c2", host=mongodb_uri, uuidRepresentation="standard"
    )
    second = await connect_async(
        db=db, alias="c2", host=mongodb_uri, uuidRepresentation="standard"
    )
    assert first is second


async def test_connect_same_alias_different_settings_fails(mongodb_uri, cleanup):
    db = _db_name()
    client = await connect_async(
        db=db, alias="c3", host=mongodb_uri, uuidRepresentation="standard"
    )
    with pytest.raises(ConnectionFailure, match="different connection"):
        await connect_async(
            db=_db_name(), alias="c3", host=mongodb_uri, uuidRepresentation="standard"
        )
    with pytest.raises(ConnectionFailure, match="different connection"):
        await connect_async(
            db=db,
            alias="c3",
            host=mongodb_uri,
            uuidRepresentation="standard",
            maxPoolSize=7,
        )
    # The registered connection is unchanged.
    assert get_async_connection("c3") is client
    assert get_async_db("c3").name == db


async def test_sync_connect_on_async_alias_fails(mongodb_uri, cleanup):
    db = _db_name()
    await connect_async(
        db=db, alias="c4", host=mongodb_uri, uuidRepresentation="standard"
    )
    with pytest.raises(ConnectionFailure, match="connect_async") as excinfo:
        mongoengine_async.connect(
            db=db, alias="c4", host=mongodb_uri, uuidRepresentation="standard"
        )
    assert "c4" in str(excinfo.value)
    with pytest.raises(ConnectionFailure, match="connect_async"):
        mongoengine_async.register_connection("c4", db=db, host=mongodb_uri)
    assert "c4" not in me_connection._connection_settings
    assert is_async_connection("c4")


async def test_mongoengines_own_connect_on_an_async_alias_is_named(
    mongodb_uri, cleanup
):
    """MongoEngine's own connect() (not ours: a library calling it, say) on
    an async alias registers a sync client beside it, which this package
    cannot refuse without patching MongoEngine. The alias stays async; the
    errors say so and how to undo it (they said the queryset had been made
    while the alias was async, to make it again; async_switch_db() to it
    said it was sync), and disconnect_async() closes the async side (it said
    the alias was sync, while disconnect() said it was async)."""
    db = _db_name()
    cleanup["dbs"].append(db)
    settings = {"db": db, "host": mongodb_uri, "uuidRepresentation": "standard"}
    await connect_async(alias="conn-a", **settings)
    await ConnAliasItem(name="async").async_save()
    mongoengine.connect(alias="conn-a", **settings)
    try:
        undo = "mongoengine.disconnect('conn-a')"
        with pytest.raises(AsyncUsageError, match="would block") as blocked:
            ConnAliasItem.objects.count()
        assert undo in str(blocked.value)
        with pytest.raises(AsyncUsageError) as blocked:
            ConnAliasItem(name="sync").save()
        assert undo in str(blocked.value)
        assert is_async_connection("conn-a")
        assert not mongoengine_async.is_sync_connection("conn-a")
        assert await connect_async(alias="conn-a", **settings) is (
            get_async_connection("conn-a")
        )
        async with async_switch_db(ConnAliasItem, "conn-a") as switched:
            assert await switched.objects.async_count() == 1
        with pytest.raises(ConnectionUsageError, match="disconnect_async") as refused:
            mongoengine_async.disconnect("conn-a")
        assert undo in str(refused.value)
        assert await ConnAliasItem.objects.async_count() == 1  # still async

        await disconnect_async("conn-a")
        assert not is_async_connection("conn-a")
        assert ConnAliasItem.objects.count() == 1  # MongoEngine's sync client
    finally:
        mongoengine.disconnect("conn-a")


async def test_connect_async_on_sync_alias_fails(mongodb_uri, cleanup):
    _connect_sync("sync-c5", mongodb_uri, cleanup)
    with pytest.raises(ConnectionFailure, match=r"connect\(\)") as excinfo:
        await connect_async(
            db=_db_name(),
            alias="sync-c5",
            host=mongodb_uri,
            uuidRepresentation="standard",
        )
    assert "sync-c5" in str(excinfo.value)
    assert not is_async_connection("sync-c5")
    assert isinstance(mongoengine_async.get_connection("sync-c5"), MongoClient)


async def test_get_async_db_on_sync_alias_fails(mongodb_uri, cleanup):
    _connect_sync("sync-c6", mongodb_uri, cleanup)
    with pytest.raises(ConnectionFailure, match="not async"):
        get_async_db("sync-c6")
    with pytest.raises(ConnectionFailure, match="not async"):
        get_async_connection("sync-c6")


async def test_unknown_alias_fails(cleanup):
    with pytest.raises(ConnectionFailure, match="nobody-registered-this"):
        get_async_connection("nobody-registered-this")
    with pytest.raises(ConnectionFailure, match="nobody-registered-this"):
        get_async_db("nobody-registered-this")
    assert not is_async_connection("nobody-registered-this")


async def test_unknown_default_alias_fails(cleanup):
    with pytest.raises(ConnectionFailure, match="default connection"):
        get_async_db()


async def test_sync_helpers_refuse_async_alias(mongodb_uri, cleanup):
    await connect_async(
        db=_db_name(), alias="c7", host=mongodb_uri, uuidRepresentation="standard"
    )
    with pytest.raises(ConnectionFailure, match="get_async_db"):
        mongoengine_async.get_db("c7")
    with pytest.raises(ConnectionFailure, match="get_async_connection"):
        mongoengine_async.get_connection("c7")
    with pytest.raises(ConnectionFailure, match="disconnect_async"):
        mongoengine_async.disconnect("c7")
    assert is_async_connection("c7")


async def test_is_async_connection(mongodb_uri, cleanup):
    assert not is_async_connection("c8")
    await connect_async(
        db=_db_name(), alias="c8", host=mongodb_uri, uuidRepresentation="standard"
    )
    assert is_async_connection("c8")
    _connect_sync("sync-c8", mongodb_uri, cleanup)
    assert not is_async_connection("sync-c8")
    await disconnect_async("c8")
    assert not is_async_connection("c8")


async def test_disconnect_async_then_reconnect(mongodb_uri, cleanup):
    first_db, second_db = _db_name(), _db_name()
    cleanup["dbs"] += [first_db, second_db]
    first = await connect_async(
        db=first_db, alias="c9", host=mongodb_uri, uuidRepresentation="standard"
    )
    await disconnect_async("c9")
    assert not is_async_connection("c9")
    with pytest.raises(ConnectionFailure):
        get_async_db("c9")
    # Different settings are allowed once the alias is gone.
    second = await connect_async(
        db=second_db, alias="c9", host=mongodb_uri, uuidRepresentation="standard"
    )
    assert second is not first
    assert get_async_db("c9").name == second_db
    await get_async_db("c9").things.insert_one({"_id": 1})
    assert await get_async_db("c9").things.count_documents({}) == 1


async def test_disconnect_all_async_leaves_sync_aliases(mongodb_uri, cleanup):
    sync_db = _db_name()
    _connect_sync("sync-c10", mongodb_uri, cleanup, db=sync_db)
    await connect_async(
        db=_db_name(), alias="c10a", host=mongodb_uri, uuidRepresentation="standard"
    )
    await connect_async(
        db=_db_name(), alias="c10b", host=mongodb_uri, uuidRepresentation="standard"
    )
    await disconnect_all_async()
    assert not is_async_connection("c10a")
    assert not is_async_connection("c10b")
    assert "sync-c10" in me_connection._connection_settings
    sync_database = mongoengine_async.get_db("sync-c10")
    assert sync_database.name == sync_db
    sync_database.things.insert_one({"_id": 1})
    assert sync_database.things.count_documents({}) == 1


async def test_two_aliases_on_same_host_share_a_client(mongodb_uri, cleanup):
    db_x, db_y = _db_name(), _db_name()
    cleanup["dbs"] += [db_x, db_y]
    client_x = await connect_async(
        db=db_x, alias="c11x", host=mongodb_uri, uuidRepresentation="standard"
    )
    client_y = await connect_async(
        db=db_y, alias="c11y", host=mongodb_uri, uuidRepresentation="standard"
    )
    assert client_x is client_y
    assert get_async_db("c11x").name == db_x
    assert get_async_db("c11y").name == db_y
    # Disconnecting one alias must not close the client the other still uses.
    await disconnect_async("c11x")
    await get_async_db("c11y").things.insert_one({"_id": 1})
    assert await get_async_db("c11y").things.count_documents({}) == 1


async def test_a_kept_queryset_follows_its_alias_sharing_a_client(mongodb_uri, cleanup):
    """An alias sharing its client with another (only the database differs)
    is connected again elsewhere, with the same options (the shared client
    again) or others: a queryset kept from before reads and writes the
    database the alias names now. It kept the first database, silently: the
    client held by the queryset told only of the alias that made it."""
    db_a, db_b, db_c, db_other = (_db_name() for _ in range(4))
    cleanup["dbs"] += [db_a, db_b, db_c, db_other]
    await connect_async(
        db=db_other, alias="conn-other", host=mongodb_uri, uuidRepresentation="standard"
    )
    await connect_async(
        db=db_a, alias="conn-a", host=mongodb_uri, uuidRepresentation="standard"
    )
    await ConnAliasItem(name="in-a").async_save()
    kept = ConnAliasItem.objects
    await disconnect_async("conn-a")
    await connect_async(
        db=db_b, alias="conn-a", host=mongodb_uri, uuidRepresentation="standard"
    )
    assert get_async_connection("conn-a") is get_async_connection("conn-other")
    assert await kept.async_count() == 0
    await ConnAliasItem(name="in-b").async_save()
    assert await kept.async_update(set__n=2) == 1
    assert [(item.name, item.n) async for item in kept] == [("in-b", 2)]
    await disconnect_async("conn-a")
    await connect_async(
        db=db_c,
        alias="conn-a",
        host=mongodb_uri,
        uuidRepresentation="standard",
        tz_aware=True,
    )
    assert await kept.async_count() == 0
    await ConnAliasItem(name="in-c").async_save()
    assert await kept.async_scalar("name") == ["in-c"]
    client = get_async_connection("conn-other")
    assert await client[db_a].conn_alias_items.count_documents({}) == 1
    assert await client[db_b].conn_alias_items.count_documents({}) == 1


async def _kept_beside_a_twin(mongodb_uri, cleanup, reconnected):
    """A queryset of ConnAliasItem ("conn-a"), kept while "conn-a" and its twin
    "conn-twin" named one database (holding "in-a"), after ``reconnected``
    was connected again to another database."""
    db_a, db_b = _db_name(), _db_name()
    cleanup["dbs"] += [db_a, db_b]
    for alias in ("conn-a", "conn-twin"):
        await connect_async(
            db=db_a, alias=alias, host=mongodb_uri, uuidRepresentation="standard"
        )
    await ConnAliasItem(name="in-a").async_save()
    kept = ConnAliasItem.objects
    await disconnect_async(reconnected)
    await connect_async(
        db=db_b, alias=reconnected, host=mongodb_uri, uuidRepresentation="standard"
    )
    return kept


async def test_a_kept_queryset_stays_with_an_alias_naming_its_database(
    mongodb_uri, cleanup
):
    """Two aliases naming one database share a client; one connected again
    elsewhere leaves the other's kept querysets on that database."""
    kept = await _kept_beside_a_twin(mongodb_uri, cleanup, reconnected="conn-twin")
    assert await kept.async_scalar("name") == ["in-a"]


async def test_a_kept_queryset_follows_its_alias_away_from_a_twin(mongodb_uri, cleanup):
    """Two aliases naming one database share a client; the class's own alias
    is connected again elsewhere: its kept querysets follow it. They stayed
    on the first database, silently: the client told only that the twin
    still named it."""
    kept = await _kept_beside_a_twin(mongodb_uri, cleanup, reconnected="conn-a")
    assert get_async_connection("conn-a") is get_async_connection("conn-twin")
    assert await kept.async_count() == 0
    await ConnAliasItem(name="in-b").async_save()
    assert await kept.async_scalar("name") == ["in-b"]
    assert [item.name async for item in kept] == ["in-b"]


async def test_a_using_queryset_follows_its_alias_away_from_a_twin(
    mongodb_uri, cleanup
):
    """The same, for the twin a queryset was moved to by ``using()`` (and a
    ``switch_db()`` document): it stayed on the first database, silently, the
    class's own alias (still naming it) taken for the collection's."""
    db_a, db_b = _db_name(), _db_name()
    cleanup["dbs"] += [db_a, db_b]
    for alias in ("conn-a", "conn-twin"):
        await connect_async(
            db=db_a, alias=alias, host=mongodb_uri, uuidRepresentation="standard"
        )
    await ConnAliasItem(name="in-a").async_save()
    kept = ConnAliasItem.objects.using("conn-twin")
    moved = ConnAliasItem(name="moved").switch_db("conn-twin")
    await disconnect_async("conn-twin")
    await connect_async(
        db=db_b, alias="conn-twin", host=mongodb_uri, uuidRepresentation="standard"
    )
    assert get_async_connection("conn-a") is get_async_connection("conn-twin")
    assert await kept.async_count() == 0
    await moved.async_save()
    assert await kept.async_scalar("name") == ["moved"]
    assert await ConnAliasItem.objects.async_scalar("name") == ["in-a"]


async def test_db_alias_changed_after_class_creation(mongodb_uri, cleanup):
    db_a, db_b = _db_name(), _db_name()
    cleanup["dbs"] += [db_a, db_b]
    await connect_async(
        db=db_a, alias="conn-a", host=mongodb_uri, uuidRepresentation="standard"
    )
    await connect_async(
        db=db_b, alias="conn-b", host=mongodb_uri, uuidRepresentation="standard"
    )

    await ConnAliasItem(name="in-a", n=1).async_save()
    ConnAliasItem._meta["db_alias"] = "conn-b"
    await ConnAliasItem(name="in-b", n=2).async_save()
    assert await ConnAliasItem.objects.async_count() == 1
    assert (await ConnAliasItem.objects.async_get()).name == "in-b"

    raw_a = await get_async_db("conn-a").conn_alias_items.find({}).to_list(None)
    raw_b = await get_async_db("conn-b").conn_alias_items.find({}).to_list(None)
    assert [d["name"] for d in raw_a] == ["in-a"]
    assert [d["name"] for d in raw_b] == ["in-b"]

    ConnAliasItem._meta["db_alias"] = "conn-a"
    assert [d.name async for d in ConnAliasItem.objects] == ["in-a"]


class ConnLoopNote(Document):
    text = StringField()
    meta = {"db_alias": "loops"}


def test_an_alias_works_from_several_event_loops(mongodb_uri, monkeypatch):
    """Connected on one loop, used from others (a fresh loop per test, say)."""

    async def connect():
        await connect_async(
            db="conn_loops",
            alias="loops",
            host=mongodb_uri,
            uuidRepresentation="standard",
        )
        await get_async_connection("loops").drop_database("conn_loops")

    async def save_and_count(text: str) -> tuple[int, object]:
        await ConnLoopNote(text=text).async_save()
        client = get_async_connection("loops")
        assert get_async_connection("loops") is client  # one client per loop
        return await ConnLoopNote.objects.async_count(), client

    asyncio.run(connect())
    try:
        first, first_client = asyncio.run(save_and_count("one"))
        second, second_client = asyncio.run(save_and_count("two"))
        assert (first, second) == (1, 2)
        assert first_client is not second_client
        # A client made for a loop that has closed is let go once another loop
        # uses the alias (it holds its loop and its sockets).
        released = [weakref.ref(first_client), weakref.ref(second_client)]
        del first_client, second_client
        third, _ = asyncio.run(save_and_count("three"))
        assert third == 3
        gc.collect()
        assert [ref() for ref in released] == [None, None]
    finally:

        async def drop():
            await get_async_connection("loops").drop_database("conn_loops")

        asyncio.run(drop())
        # From a loop that has no client of the alias: nothing to make and close.
        with monkeypatch.context() as patched:
            patched.setattr(mongoengine_async.connection, "_new_client", made_to_close)
            asyncio.run(disconnect_async("loops"))
    assert not is_async_connection("loops")


def made_to_close(*args):
    pytest.fail("disconnect_async made a client only to close it")


class ConnMadeItem(Document):
    name = StringField()
    meta = {"db_alias": "made"}


async def test_database_and_collection_objects_are_made_once_per_client(mongodb_uri):
    await connect_async(
        db=_db_name(), alias="made", host=mongodb_uri, uuidRepresentation="standard"
    )
    try:
        client, database = get_async_connection("made"), get_async_db("made")
        assert get_async_db("made") is database and database.client is client
        collection = ConnMadeItem._get_collection()
        assert ConnMadeItem._get_collection() is collection
        assert collection.database is database
        assert collection.name == "conn_made_item"
        async with async_switch_collection(ConnMadeItem, "conn_made_other") as cls:
            assert cls._get_collection().name == "conn_made_other"
        await ConnMadeItem(name="saved").async_save()
        assert await collection.count_documents({"name": "saved"}) == 1
        await client.drop_database(database.name)
    finally:
        await disconnect_async("made")

    await connect_async(
        db=_db_name(), alias="made", host=mongodb_uri, uuidRepresentation="standard"
    )
    try:  # a new client: new objects, bound to it
        fresh = ConnMadeItem._get_collection()
        assert fresh is not collection
        assert fresh.database.client is get_async_connection("made") is not client
    finally:
        await disconnect_async("made")


class ConnRaceItem(Document):
    name = StringField()
    meta = {"db_alias": "conn-race"}


async def test_get_collection_resolves_the_alias_once(
    mongodb_uri, cleanup, monkeypatch
):
    """Another thread connects the alias while a class's collection is
    resolved: the first look finds it not connected yet, the later ones
    connected. The call must go by its first look (MongoEngine's
    ConnectionFailure, or else the new client). It asked again and again:
    MongoEngine's _get_collection got an async database, then refused
    ensure_indexes() with "would block the event loop" (and a never awaited
    is_primary coroutine)."""
    db = _db_name()
    cleanup["dbs"].append(db)
    await connect_async(
        db=db, alias="conn-race", host=mongodb_uri, uuidRepresentation="standard"
    )
    looks = []

    def connected_after_first_look(alias):
        looks.append(alias)
        return len(looks) > 1 and is_async_connection(alias)

    monkeypatch.setattr(
        mongoengine_async.document, "is_async_connection", connected_after_first_look
    )
    with pytest.raises(ConnectionFailure) as raised:
        ConnRaceItem._get_collection()
    assert type(raised.value) is ConnectionFailure  # not an AsyncUsageError
    assert str(raised.value) == 'Connection with alias "conn-race" has not been defined'
    assert getattr(ConnRaceItem, "_collection", None) is None
    monkeypatch.undo()
    await ConnRaceItem(name="connected").async_save()
    assert await ConnRaceItem.objects.async_scalar("name") == ["connected"]


async def test_disconnect_async_lets_the_closed_client_go(mongodb_uri, cleanup):
    """The class's kept home (where it operates, see operation.Home) held the
    client disconnect_async() closed until another class's home was resolved."""
    db = _db_name()
    cleanup["dbs"].append(db)
    client = await connect_async(
        db=db, alias="conn-race", host=mongodb_uri, uuidRepresentation="standard"
    )
    await ConnRaceItem(name="kept").async_save()
    assert await ConnRaceItem.objects.async_count() == 1  # its home kept
    gone = weakref.ref(client)
    del client
    await disconnect_async("conn-race")
    gc.collect()
    assert gone() is None


async def test_nothing_is_kept_for_a_client_let_go_meanwhile(mongodb_uri, cleanup):
    """A thread resolved a class's collection; another disconnected the alias
    before the first prepared it (or made an object for it): the mark of the
    prepared collection and the objects kept for the closed client outlived
    it, holding it, and a new client given its id took them as its own (its
    collection "prepared": indexes never created)."""
    from mongoengine_async import collection_setup
    from mongoengine_async import connection as registry

    db = _db_name()
    cleanup["dbs"].append(db)
    client = await connect_async(
        db=db, alias="conn-race", host=mongodb_uri, uuidRepresentation="standard"
    )
    resolved = ConnRaceItem._get_collection()  # not prepared yet
    await disconnect_async("conn-race")
    await collection_setup.prepare(ConnRaceItem, resolved)  # (no index to create)
    registry._collection_on(client, db, "conn_race_item", "conn-race")
    assert not any(key[1] == id(client) for key in collection_setup._prepared)
    assert id(client) not in registry._made


async def test_a_client_closes_though_an_equal_clients_transaction_is_ending(
    mongodb_uri,
):
    """Clients of one deployment compare equal (PyMongo's ``__eq__``): a
    transaction still ending on another loop's client was taken for one of
    the disconnected client's, whose close then waited for that other loop's
    future (ValueError in a task of its own), and the client stayed open."""
    other = asyncio.new_event_loop()
    elsewhere: AsyncMongoClient = AsyncMongoClient(
        mongodb_uri, uuidRepresentation="standard"
    )
    ending = other.create_future()  # (its commit, on its way on that loop)
    mongoengine_async.connection.ends_transaction(elsewhere, ending)
    alias = f"eq_{uuid4().hex[:8]}"
    try:
        await connect_async(
            "eq_db", alias=alias, host=mongodb_uri, uuidRepresentation="standard"
        )
        client = get_async_connection(alias)
        assert client == elsewhere and client is not elsewhere
        await client.admin.command("ping")
        await disconnect_async(alias)
        assert client._closed
    finally:
        ending.cancel()
        other.close()
        await elsewhere.close()
