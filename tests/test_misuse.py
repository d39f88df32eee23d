"""Misuse: sync I/O on async aliases, async I/O on sync aliases, unknown aliases,
connection functions on the other kind of alias, nested transactions."""

from __future__ import annotations

import inspect
import re
from uuid import uuid4

import pytest
from bson import DBRef, ObjectId

import mongoengine_async
from mongoengine_async import (
    AsyncUsageError,
    ConnectionFailure,
    ConnectionUsageError,
    Document,
    GenericReferenceField,
    IntField,
    LazyReferenceField,
    ListField,
    MisuseError,
    NestedTransactionError,
    OperationError,
    ReferenceField,
    StringField,
    async_run_in_transaction,
    get_async_db,
)


class MisItem(Document):
    name = StringField()
    n = IntField(default=0)
    tags = ListField(StringField())
    meta = {"indexes": ["name"]}


class MisSyncItem(Document):
    name = StringField()
    n = IntField(default=0)
    tags = ListField(StringField())
    meta = {"db_alias": "misuse-sync", "indexes": ["name"]}


class MisSyncAuthor(Document):
    name = StringField()
    meta = {"db_alias": "misuse-sync"}


class MisSyncShelf(Document):
    author = ReferenceField(MisSyncAuthor)
    anything = GenericReferenceField()
    lazy = LazyReferenceField(MisSyncAuthor)
    meta = {"db_alias": "misuse-sync"}


class MisAsyncHolder(Document):  # on the async alias, referring to a sync class
    item = ReferenceField(MisSyncItem)


class MisNobodyItem(Document):
    name = StringField()
    meta = {"db_alias": "misuse-nobody-registered"}


# -- sync I/O on an async alias -------------------------------------------------

DOCUMENT_CALLS = [
    ("save", lambda d: d.save(), "async_save"),
    ("delete", lambda d: d.delete(), "async_delete"),
    ("reload", lambda d: d.reload(), "async_reload"),
    ("modify", lambda d: d.modify(set__n=5), "async_modify"),
    ("update", lambda d: d.update(set__n=5), "async_update"),
    ("cascade_save", lambda d: d.cascade_save(), "async_cascade_save"),
    ("select_related", lambda d: d.select_related(), "async_select_related"),
    ("ensure_indexes", lambda d: type(d).ensure_indexes(), "async_ensure_indexes"),
    ("drop_collection", lambda d: type(d).drop_collection(), "async_drop_collection"),
    ("create_index", lambda d: type(d).create_index("n"), "async_create_index"),
    ("compare_indexes", lambda d: type(d).compare_indexes(), "async_compare_indexes"),
]


@pytest.mark.parametrize(
    ("name", "call", "use"), DOCUMENT_CALLS, ids=[c[0] for c in DOCUMENT_CALLS]
)
async def test_sync_document_method_on_async_alias(
    async_alias, command_log, name, call, use
):
    saved = await MisItem(name="saved", n=1).async_save()
    saved.name = "changed locally"
    command_log.clear()
    with pytest.raises(AsyncUsageError) as excinfo:
        call(saved)
    assert isinstance(excinfo.value, OperationError)
    assert isinstance(excinfo.value, RuntimeError)
    message = str(excinfo.value)
    assert use in message
    assert f"{name}()" in message
    assert "MisItem" in message
    # Raised before any I/O; nothing written.
    assert command_log.count() == 0
    raw = await get_async_db().mis_item.find({}).to_list(None)
    assert raw == [{"_id": saved.id, "name": "saved", "n": 1, "tags": []}]


async def test_sync_save_of_new_document_on_async_alias(async_alias, command_log):
    with pytest.raises(AsyncUsageError, match="async_save"):
        MisItem(name="new").save()
    assert command_log.count() == 0
    assert "mis_item" not in await get_async_db().list_collection_names()


QUERYSET_CALLS = [
    ("iteration", lambda qs: list(qs), "async for"),
    ("for loop", lambda qs: [d for d in qs], "async for"),
    ("iter", lambda qs: iter(qs), "async for"),
    ("len", lambda qs: len(qs), "async_count"),
    ("bool", lambda qs: bool(qs), "async_exists"),
    ("if", lambda qs: 1 if qs else 0, "async_exists"),
    ("count", lambda qs: qs.count(), "async_count"),
    ("get", lambda qs: qs.get(name="saved"), "async_get"),
    ("first", lambda qs: qs.first(), "async_first"),
    ("create", lambda qs: qs.create(name="created"), "async_create"),
    ("insert", lambda qs: qs.insert([MisItem(name="inserted")]), "async_insert"),
    ("delete", lambda qs: qs.delete(), "async_delete"),
    ("update", lambda qs: qs.update(set__n=9), "async_update"),
    ("update_one", lambda qs: qs.update_one(set__n=9), "async_update_one"),
    ("upsert_one", lambda qs: qs.upsert_one(set__n=9), "async_upsert_one"),
    ("modify", lambda qs: qs.modify(set__n=9), "async_modify"),
    ("with_id", lambda qs: qs.with_id(ObjectId()), "async_with_id"),
    ("in_bulk", lambda qs: qs.in_bulk([ObjectId()]), "async_in_bulk"),
    ("distinct", lambda qs: qs.distinct("name"), "async_distinct"),
    ("aggregate", lambda qs: qs.aggregate([{"$match": {}}]), "async_aggregate"),
    ("sum", lambda qs: qs.sum("n"), "async_sum"),
    ("average", lambda qs: qs.average("n"), "async_average"),
    ("explain", lambda qs: qs.explain(), "async_explain"),
    ("to_json", lambda qs: qs.to_json(), "async_to_list"),
    ("select_related", lambda qs: qs.select_related(), "async_select_related"),
    ("item_frequencies", lambda qs: qs.item_frequencies("tags"), "async_aggregate"),
    ("getitem", lambda qs: qs[0], "async_first"),
    ("getitem filtered", lambda qs: qs.filter(n=1).order_by("name")[3], "skip(3)"),
]


@pytest.mark.parametrize(
    ("name", "call", "use"), QUERYSET_CALLS, ids=[c[0] for c in QUERYSET_CALLS]
)
async def test_sync_queryset_method_on_async_alias(
    async_alias, command_log, name, call, use
):
    saved = await MisItem(name="saved", n=1).async_save()
    command_log.clear()
    with pytest.raises(AsyncUsageError) as excinfo:
        call(MisItem.objects)
    assert isinstance(excinfo.value, OperationError)
    assert isinstance(excinfo.value, RuntimeError)
    message = str(excinfo.value)
    assert use in message
    assert "MisItem.objects" in message
    assert "async" in message
    assert command_log.count() == 0
    raw = await get_async_db().mis_item.find({}).to_list(None)
    assert raw == [{"_id": saved.id, "name": "saved", "n": 1, "tags": []}]


async def test_sync_error_message_names_alias(async_alias):
    with pytest.raises(AsyncUsageError) as excinfo:
        MisItem.objects.count()
    assert str(excinfo.value) == (
        "MisItem.objects.count() would block the event loop: alias 'default' is "
        "async (connect_async); use await queryset.async_count() instead"
    )


async def test_chaining_and_repr_do_no_io_on_async_alias(async_alias, command_log):
    qs = MisItem.objects(n__gt=1).order_by("-n").only("name").limit(3)
    assert "MisItem" in repr(qs)
    assert qs[1:2] is not qs
    assert command_log.count() == 0


# -- async I/O on a sync alias ---------------------------------------------------------


@pytest.fixture
def sync_alias(mongodb_uri, command_log):
    name = f"test_misuse_{uuid4().hex[:12]}"
    mongoengine_async.connect(
        db=name,
        alias="misuse-sync",
        host=mongodb_uri,
        uuidRepresentation="standard",
        event_listeners=[command_log],
    )
    database = mongoengine_async.get_db("misuse-sync")
    try:
        yield database
    finally:
        database.client.drop_database(name)
        mongoengine_async.disconnect("misuse-sync")


DOCUMENT_ASYNC_CALLS = [
    ("async_save", lambda d: d.async_save(), "save()"),
    ("async_delete", lambda d: d.async_delete(), "delete()"),
    ("async_reload", lambda d: d.async_reload(), "reload()"),
    ("async_modify", lambda d: d.async_modify(set__n=5), "modify()"),
    ("async_update", lambda d: d.async_update(set__n=5), "update()"),
    ("async_select_related", lambda d: d.async_select_related(), "select_related()"),
    ("async_cascade_save", lambda d: d.async_cascade_save(), "cascade_save()"),
    ("async_drop_collection", lambda d: type(d).async_drop_collection(), "drop_col"),
    (
        "_async_get_collection",
        lambda d: type(d)._async_get_collection(),
        "_get_collection()",
    ),
]

DOCUMENT_ASYNC_INDEX_CALLS = [
    ("async_ensure_indexes", lambda d: type(d).async_ensure_indexes(), "ensure_ind"),
    ("async_list_indexes", lambda d: type(d).async_list_indexes(), "list_indexes()"),
    (
        "async_compare_indexes",
        lambda d: type(d).async_compare_indexes(),
        "compare_indexes()",
    ),
    (
        "async_create_index",
        lambda d: type(d).async_create_index("n"),
        "create_index()",
    ),
]


async def _check_async_document_call_on_sync_alias(sync_database, name, call, use):
    saved = MisSyncItem(name="saved", n=1).save()
    saved.name = "changed locally"
    before = list(sync_database.mis_sync_item.find({}))
    with pytest.raises(AsyncUsageError) as excinfo:
        await call(saved)
    assert isinstance(excinfo.value, OperationError)
    assert isinstance(excinfo.value, RuntimeError)
    message = str(excinfo.value)
    assert f"{name}()" in message
    assert use in message
    assert "misuse-sync" in message
    assert list(sync_database.mis_sync_item.find({})) == before
    assert before == [{"_id": saved.id, "name": "saved", "n": 1, "tags": []}]


@pytest.mark.parametrize(
    ("name", "call", "use"),
    DOCUMENT_ASYNC_CALLS,
    ids=[c[0] for c in DOCUMENT_ASYNC_CALLS],
)
async def test_async_document_method_on_sync_alias(sync_alias, name, call, use):
    await _check_async_document_call_on_sync_alias(sync_alias, name, call, use)


@pytest.mark.parametrize(
    ("name", "call", "use"),
    DOCUMENT_ASYNC_INDEX_CALLS,
    ids=[c[0] for c in DOCUMENT_ASYNC_INDEX_CALLS],
)
async def test_async_index_method_on_sync_alias(sync_alias, name, call, use):
    await _check_async_document_call_on_sync_alias(sync_alias, name, call, use)


async def _drain(aiterable):
    return [x async for x in aiterable]


QUERYSET_ASYNC_CALLS = [
    ("async_get", lambda qs: qs.async_get(name="saved"), "get()"),
    ("async_first", lambda qs: qs.async_first(), "first()"),
    ("async_count", lambda qs: qs.async_count(), "count()"),
    ("async_exists", lambda qs: qs.async_exists(), "bool(queryset)"),
    ("async_to_list", lambda qs: qs.async_to_list(), "list(queryset)"),
    ("__aiter__", lambda qs: _drain(qs), "for loop"),
    ("async_create", lambda qs: qs.async_create(name="x"), "create()"),
    (
        "async_insert",
        lambda qs: qs.async_insert([MisSyncItem(name="x")]),
        "insert()",
    ),
    ("async_update", lambda qs: qs.async_update(set__n=9), "update()"),
    ("async_update_one", lambda qs: qs.async_update_one(set__n=9), "update_one()"),
    ("async_upsert_one", lambda qs: qs.async_upsert_one(set__n=9), "upsert_one()"),
    ("async_modify", lambda qs: qs.async_modify(set__n=9), "modify()"),
    ("async_delete", lambda qs: qs.async_delete(), "delete()"),
    ("async_distinct", lambda qs: qs.async_distinct("name"), "distinct()"),
    ("async_values_list", lambda qs: qs.async_values_list("n"), "values_list()"),
    ("async_scalar", lambda qs: qs.async_scalar("n"), "scalar()"),
    ("async_in_bulk", lambda qs: qs.async_in_bulk([ObjectId()]), "in_bulk()"),
    ("async_with_id", lambda qs: qs.async_with_id(ObjectId()), "with_id()"),
    ("async_sum", lambda qs: qs.async_sum("n"), "sum()"),
    ("async_average", lambda qs: qs.async_average("n"), "average()"),
    ("async_explain", lambda qs: qs.async_explain(), "explain()"),
    (
        "async_select_related",
        lambda qs: qs.async_select_related(),
        "select_related()",
    ),
]


@pytest.mark.parametrize(
    ("name", "call", "use"),
    QUERYSET_ASYNC_CALLS,
    ids=[c[0] for c in QUERYSET_ASYNC_CALLS],
)
async def test_async_queryset_method_on_sync_alias(sync_alias, name, call, use):
    saved = MisSyncItem(name="saved", n=1).save()
    with pytest.raises(AsyncUsageError) as excinfo:
        await call(MisSyncItem.objects)
    assert isinstance(excinfo.value, OperationError)
    message = str(excinfo.value)
    assert f"MisSyncItem.objects.{name}()" in message
    assert use in message
    assert "connect()" in message
    assert list(sync_alias.mis_sync_item.find({})) == [
        {"_id": saved.id, "name": "saved", "n": 1, "tags": []}
    ]


@pytest.mark.parametrize(
    ("name", "call", "use"),
    QUERYSET_ASYNC_CALLS,
    ids=[c[0] for c in QUERYSET_ASYNC_CALLS],
)
async def test_async_queryset_method_using_a_sync_alias(
    async_alias, sync_alias, command_log, name, call, use
):
    """A class on an async alias, its queryset moved by using() to a sync
    alias: refused before any I/O (not a blocking call on the loop)."""
    sync_alias.mis_item.insert_one({"name": "saved", "n": 1})
    moved = MisItem.objects.using("misuse-sync")  # (MongoEngine creates indexes)
    command_log.clear()
    with pytest.raises(AsyncUsageError) as excinfo:
        await call(moved)
    message = str(excinfo.value)
    assert message.startswith(f"MisItem.objects.{name}() needs an async alias")
    assert "'misuse-sync' was registered with connect()" in message
    assert use in message
    assert command_log.count() == 0
    assert list(sync_alias.mis_item.find({}, {"_id": 0})) == [{"name": "saved", "n": 1}]


async def test_sync_queryset_method_using_an_async_alias(async_alias, sync_alias):
    """The reverse: a class on a sync alias, its queryset moved to an async
    alias; the error names the alias the queryset is on."""
    with pytest.raises(AsyncUsageError) as excinfo:
        MisSyncItem.objects.using("default").count()
    assert str(excinfo.value) == (
        "MisSyncItem.objects.count() would block the event loop: alias 'default' "
        "is async (connect_async); use await queryset.async_count() instead"
    )


async def test_a_document_moved_to_a_sync_alias_saves_only_the_sync_way(
    async_alias, sync_alias, command_log
):
    """switch_db() to a sync alias: async_save() is refused before any I/O,
    and save() writes there, as MongoEngine's does."""
    moved = MisItem(name="moved").switch_db("misuse-sync")
    command_log.clear()
    with pytest.raises(AsyncUsageError) as excinfo:
        await moved.async_save()
    assert str(excinfo.value) == on_sync("MisItem", "async_save", "save()")
    assert command_log.count() == 0
    moved.save()
    stored = list(sync_alias.mis_item.find({}, {"_id": 0}))
    assert stored == [{"name": "moved", "n": 0, "tags": []}]
    assert await get_async_db().mis_item.count_documents({}) == 0


async def test_a_document_moved_to_an_async_alias_saves_only_the_async_way(
    async_alias, sync_alias, recwarn
):
    """The reverse: save() is refused (it sent an unawaited insert and failed
    with an AttributeError), async_save() writes there."""
    moved = MisSyncItem(name="moved").switch_db("default")
    with pytest.raises(AsyncUsageError) as excinfo:
        moved.save()
    assert str(excinfo.value) == (
        "MisSyncItem.save() would block the event loop: alias 'default' is async "
        "(connect_async); use await document.async_save() instead"
    )
    await moved.async_save()
    stored = await get_async_db().mis_sync_item.find({}, {"_id": 0}).to_list(None)
    assert stored == [{"name": "moved", "n": 0, "tags": []}]
    assert list(sync_alias.mis_sync_item.find({})) == []
    assert not [w for w in recwarn if issubclass(w.category, RuntimeWarning)]


SLICES = [slice(5, 2), slice(None, -1), slice(-3, None), slice(1, 5, 2), -1, "a"]


@pytest.mark.parametrize("key", SLICES, ids=repr)
async def test_bad_slices_and_indexes_fail_as_in_mongoengine(
    async_alias, sync_alias, command_log, key
):
    """MongoEngine's errors (its sync cursor's) for what an async queryset
    cannot take either, before any I/O."""
    with pytest.raises(Exception) as theirs:
        MisSyncItem.objects[key]
    command_log.clear()
    with pytest.raises(Exception) as ours:
        MisItem.objects[key]
    assert (type(ours.value), str(ours.value)) == (
        type(theirs.value),
        str(theirs.value),
    )
    assert type(ours.value) in (IndexError, TypeError)
    assert command_log.count() == 0


# A filter MongoEngine cannot build (its slice builds the cursor, so the query).
UNBUILDABLE = {
    "unknown field": lambda objects: objects(nope=1),
    "unknown operator": lambda objects: objects(n__nope=1),
    "unconvertible value": lambda objects: objects(n="x"),
}


@pytest.mark.parametrize("key", [slice(0, 5), slice(5, 2)], ids=repr)
@pytest.mark.parametrize("made", list(UNBUILDABLE))
async def test_a_slice_builds_the_query_as_in_mongoengine(
    async_alias, sync_alias, command_log, made, key
):
    """A slice of a queryset whose filter cannot be built raises MongoEngine's
    error at once (before the slice's own checks), as its sync slice does; it
    raised nothing, then async_in_bulk() gave {} and async_with_id() another
    error."""
    with pytest.raises(Exception) as theirs:
        UNBUILDABLE[made](MisSyncItem.objects)[key]
    command_log.clear()
    with pytest.raises(Exception) as ours:
        UNBUILDABLE[made](MisItem.objects)[key]
    assert (type(ours.value), str(ours.value)) == (
        type(theirs.value),
        str(theirs.value),
    )
    assert type(ours.value) not in (IndexError, TypeError)
    assert command_log.count() == 0


async def test_async_aggregate_on_sync_alias_raises_at_call(sync_alias):
    with pytest.raises(AsyncUsageError, match=r"aggregate\(\)"):
        MisSyncItem.objects.async_aggregate([{"$match": {}}])


def on_sync(target: str, method: str, use: str) -> str:
    """The message of an async ``target.method()`` on the sync alias."""
    return (
        f"{target}.{method}() needs an async alias but 'misuse-sync' was "
        f"registered with connect(); use {use} instead, or "
        "connect_async(alias='misuse-sync')"
    )


async def test_async_on_sync_alias_hint_spells_alias(sync_alias):
    # connect_async('misuse-sync') would connect *database* 'misuse-sync'.
    with pytest.raises(AsyncUsageError) as excinfo:
        await MisSyncItem(name="x").async_save()
    assert str(excinfo.value) == on_sync("MisSyncItem", "async_save", "save()")


async def test_reference_async_fetch_on_sync_alias(sync_alias, command_log):
    author = MisSyncAuthor(name="Ann").save()
    MisSyncShelf(author=author, anything=author).save()
    shelf = MisSyncShelf.objects.get()
    command_log.clear()
    for name in ("author", "anything"):
        message = on_sync(f"MisSyncShelf.{name}", "async_fetch", f"document.{name}")
        with pytest.raises(AsyncUsageError, match=re.escape(message)):
            await getattr(MisSyncShelf, name).async_fetch(shelf)
    assert command_log.count() == 0  # MongoEngine's read would have queried
    assert type(shelf._data["author"]) is DBRef
    assert shelf._data["anything"]["_ref"] == DBRef("mis_sync_author", author.id)
    shelf.author = author  # loaded: still refused, as every async_* method
    message = on_sync("MisSyncShelf.author", "async_fetch", "document.author")
    with pytest.raises(AsyncUsageError, match=re.escape(message)):
        await MisSyncShelf.author.async_fetch(shelf)


async def test_reference_to_sync_class_names_its_alias(
    async_alias, sync_alias, command_log
):
    item = MisSyncItem(name="synced").save()
    holder = await MisAsyncHolder(item=item).async_save()
    holder = await MisAsyncHolder.objects.async_get(id=holder.id)
    command_log.clear()
    message = on_sync("MisAsyncHolder.item", "async_fetch", "document.item")
    with pytest.raises(AsyncUsageError, match=re.escape(message)):
        await MisAsyncHolder.item.async_fetch(holder)
    assert command_log.count() == 0


async def test_lazy_reference_async_fetch_on_sync_alias(sync_alias, command_log):
    author = MisSyncAuthor(name="Ann").save()
    MisSyncShelf(lazy=author).save()
    reference = MisSyncShelf.objects.get().lazy
    command_log.clear()
    message = on_sync(repr(reference), "async_fetch", "reference.fetch()")
    with pytest.raises(AsyncUsageError, match=re.escape(message)):
        await reference.async_fetch()
    assert command_log.count() == 0
    assert reference.fetch() == author  # the sync way works


def test_is_sync_connection_is_exported(sync_alias):
    assert "is_sync_connection" in mongoengine_async.__all__
    assert mongoengine_async.is_sync_connection("misuse-sync")
    assert not mongoengine_async.is_async_connection("misuse-sync")
    assert not mongoengine_async.is_sync_connection("misuse-nobody-registered")


# -- an alias nobody registered ------------------------------------------------------


async def test_unregistered_alias(async_alias):
    document = MisNobodyItem(name="x")
    with pytest.raises(ConnectionFailure, match="misuse-nobody-registered"):
        await document.async_save()
    with pytest.raises(ConnectionFailure, match="misuse-nobody-registered"):
        await MisNobodyItem.async_ensure_indexes()
    with pytest.raises(ConnectionFailure, match="misuse-nobody-registered"):
        await MisNobodyItem.async_drop_collection()
    with pytest.raises(ConnectionFailure, match="misuse-nobody-registered"):
        MisNobodyItem.objects  # noqa: B018
    with pytest.raises(ConnectionFailure, match="misuse-nobody-registered"):
        document.save()
    assert not isinstance(
        ConnectionFailure("x"), AsyncUsageError
    )  # a different error kind
    assert "mis_nobody_item" not in await get_async_db().list_collection_names()


# -- one error hierarchy: every misuse error is a MisuseError -------------------------


def test_error_classes_are_exported():
    names = ("MisuseError", "AsyncUsageError", "ConnectionUsageError")
    for name in (*names, "NestedTransactionError"):
        assert name in mongoengine_async.__all__
        assert getattr(mongoengine_async, name) is getattr(
            mongoengine_async.errors, name
        )


async def test_blocking_call_is_a_misuse_and_an_operation_error(async_alias):
    with pytest.raises(OperationError) as excinfo:
        MisItem.objects.count()
    assert type(excinfo.value) is AsyncUsageError
    assert isinstance(excinfo.value, MisuseError)
    assert isinstance(excinfo.value, RuntimeError)


async def test_async_call_on_sync_alias_is_a_misuse(sync_alias):
    with pytest.raises(MisuseError) as excinfo:
        await MisSyncItem(name="x").async_save()
    assert type(excinfo.value) is AsyncUsageError
    assert str(excinfo.value) == on_sync("MisSyncItem", "async_save", "save()")
    assert list(sync_alias.mis_sync_item.find({})) == []


CONNECTION_MISUSE = [
    (
        "connect_async",
        "misuse-sync",
        lambda uri: mongoengine_async.connect_async(alias="misuse-sync", host=uri),
        "Alias `misuse-sync` is a sync connection registered with connect(); "
        "call disconnect('misuse-sync') before connect_async()",
    ),
    (
        "get_async_db",
        "misuse-sync",
        lambda uri: mongoengine_async.get_async_db("misuse-sync"),
        "Alias `misuse-sync` is not async: it was registered with connect(); "
        "use get_db()",
    ),
    (
        "get_async_connection",
        "misuse-sync",
        lambda uri: mongoengine_async.get_async_connection("misuse-sync"),
        "Alias `misuse-sync` is not async: it was registered with connect(); "
        "use get_connection()",
    ),
    (
        "disconnect_async",
        "misuse-sync",
        lambda uri: mongoengine_async.disconnect_async("misuse-sync"),
        "Alias `misuse-sync` is a sync connection: use disconnect('misuse-sync')",
    ),
    (
        "connect",
        "default",
        lambda uri: mongoengine_async.connect(host=uri),
        "Alias `default` is an async connection registered with connect_async(): "
        "use connect_async() instead of connect()",
    ),
    (
        "register_connection",
        "default",
        lambda uri: mongoengine_async.register_connection("default", host=uri),
        "Alias `default` is an async connection registered with connect_async(): "
        "use connect_async() instead of register_connection()",
    ),
    (
        "disconnect",
        "default",
        lambda uri: mongoengine_async.disconnect(),
        "Alias `default` is an async connection registered with connect_async(): "
        "use await disconnect_async() instead of disconnect()",
    ),
    (
        "get_connection",
        "default",
        lambda uri: mongoengine_async.get_connection(),
        "Alias `default` is an async connection registered with connect_async(): "
        "use get_async_connection() instead of get_connection()",
    ),
    (
        "get_db",
        "default",
        lambda uri: mongoengine_async.get_db(),
        "Alias `default` is an async connection registered with connect_async(): "
        "use get_async_db() instead of get_db()",
    ),
]


@pytest.mark.parametrize(
    ("name", "alias", "call", "message"),
    CONNECTION_MISUSE,
    ids=[c[0] for c in CONNECTION_MISUSE],
)
async def test_connection_function_on_the_other_kind_of_alias(
    async_alias, sync_alias, mongodb_uri, name, alias, call, message
):
    is_async = mongoengine_async.is_async_connection(alias)
    with pytest.raises(ConnectionFailure) as excinfo:
        result = call(mongodb_uri)
        if inspect.isawaitable(result):
            await result
    assert type(excinfo.value) is ConnectionUsageError
    assert isinstance(excinfo.value, MisuseError)
    assert str(excinfo.value) == message
    # The alias is left as it was, and still works.
    assert mongoengine_async.is_async_connection(alias) is is_async
    assert mongoengine_async.is_sync_connection(alias) is not is_async
    if is_async:
        assert (await get_async_db(alias).command("ping"))["ok"] == 1
    else:
        assert mongoengine_async.get_db(alias).command("ping")["ok"] == 1


@pytest.mark.parametrize(
    ("name", "call"),
    [
        ("async_run_in_transaction", lambda: _empty_transaction("misuse-sync")),
        (
            "async_run_transaction",
            lambda: mongoengine_async.async_run_transaction(
                _nothing, alias="misuse-sync"
            ),
        ),
    ],
)
async def test_transaction_on_sync_alias_is_an_async_usage_error(
    sync_alias, command_log, name, call
):
    """A transaction on a sync alias is refused as every async call on one is
    (AsyncUsageError), naming the sync way, before anything is sent."""
    command_log.clear()
    with pytest.raises(AsyncUsageError) as excinfo:
        await call()
    assert str(excinfo.value) == (
        f"mongoengine_async.{name}() needs an async alias but 'misuse-sync' was "
        "registered with connect(); use a session of get_connection() "
        "(start_session(), with_transaction()) instead, or "
        "connect_async(alias='misuse-sync')"
    )
    assert command_log.events == []


async def _empty_transaction(alias: str) -> None:
    async with async_run_in_transaction(alias=alias):
        pass  # pragma: no cover


async def _nothing() -> None:
    pass  # pragma: no cover


class MisRegisteredItem(Document):
    name = StringField()
    meta = {"db_alias": "misuse-registered"}


async def test_an_alias_of_register_connection_is_named_so(mongodb_uri):
    """An alias registered with register_connection(), used or not, is said to
    be so (not "registered with connect()"); a connect() of it since, not."""
    mongoengine_async.register_connection(
        "misuse-registered", host=mongodb_uri, uuidRepresentation="standard"
    )
    try:
        calls = {
            "connect_async": lambda: mongoengine_async.connect_async(
                alias="misuse-registered", host=mongodb_uri
            ),
            "get_async_db": lambda: get_async_db("misuse-registered"),
            "async_first": lambda: MisRegisteredItem.objects.async_first(),
            "async_save": lambda: MisRegisteredItem(name="x").async_save(),
        }
        for call in calls.values():
            with pytest.raises(MisuseError) as excinfo:
                await call()
            assert "registered with register_connection()" in str(excinfo.value)
            assert "connect()" not in str(excinfo.value)
        mongoengine_async.connect(
            alias="misuse-registered", host=mongodb_uri, uuidRepresentation="standard"
        )
        with pytest.raises(MisuseError, match=r"registered with connect\(\);"):
            await calls["async_first"]()
    finally:
        mongoengine_async.disconnect("misuse-registered")


async def test_nested_transaction_is_a_misuse_and_an_operation_error(async_alias):
    async with async_run_in_transaction():
        await MisItem(name="outer").async_save()
        with pytest.raises(OperationError) as excinfo:
            async with async_run_in_transaction():
                pass  # pragma: no cover
    assert type(excinfo.value) is NestedTransactionError
    assert isinstance(excinfo.value, MisuseError)
    assert str(excinfo.value) == (
        "async_run_in_transaction() cannot be nested: a transaction is "
        "already active in this task"
    )
    assert [d.name async for d in MisItem.objects] == ["outer"]


async def test_errors_mongoengine_raises_stay_mongoengine_s(
    async_alias, sync_alias, mongodb_uri
):
    errors = []
    with pytest.raises(ConnectionFailure) as excinfo:
        get_async_db("misuse-nobody-registered")
    assert str(excinfo.value) == (
        'Connection with alias "misuse-nobody-registered" has not been defined'
    )
    errors.append(excinfo.value)
    with pytest.raises(ConnectionFailure) as excinfo:
        await mongoengine_async.connect_async(
            db="elsewhere", host=mongodb_uri, uuidRepresentation="standard"
        )
    assert str(excinfo.value) == (
        "A different connection with alias `default` was already registered. "
        "Use disconnect_async() first"
    )
    errors.append(excinfo.value)
    with pytest.raises(ConnectionFailure) as excinfo:
        mongoengine_async.connect(
            db="elsewhere",
            alias="misuse-sync",
            host=mongodb_uri,
            uuidRepresentation="standard",
        )
    assert str(excinfo.value) == (
        "A different connection with alias `misuse-sync` was already registered. "
        "Use disconnect() first"
    )
    errors.append(excinfo.value)
    with pytest.raises(MisItem.DoesNotExist) as excinfo:
        await MisItem.objects.async_get(name="nobody")
    errors.append(excinfo.value)
    for error in errors:
        assert not isinstance(error, MisuseError), error
    assert [type(error) for error in errors[:3]] == [ConnectionFailure] * 3
