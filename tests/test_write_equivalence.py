"""Writes through an async alias do what MongoEngine's sync writes do.

``async_save`` (insert, delta update, save conditions, cascade), the
queryset's update/update_one/upsert_one/modify/insert and count sequence
their I/O themselves (MongoEngine's methods do blocking I/O and cannot be
called); they reuse MongoEngine's pure parts (validation, ``to_mongo``,
``_get_update_doc``, ``transform``, ``_integrate_shard_key``). Each case
below runs once through plain MongoEngine on a sync alias and once through
the ``async_*`` methods on an async alias, with the same model classes; the
stored raw documents, the value returned, the exception (type and message)
and the signals sent must be the same, generated ids and database names
aside. Each case also runs through our own blocking methods on a second sync
alias (our ``insert`` is not MongoEngine's code), which must do the same.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Awaitable, Callable, Iterator
from types import GeneratorType
from typing import Any
from uuid import uuid4

import pytest
from bson import ObjectId
from mongoengine import CASCADE
from mongoengine.queryset import QuerySet as MongoEngineQuerySet
from mongoengine.signals import (
    post_bulk_insert,
    post_save,
    pre_bulk_insert,
    pre_save,
    pre_save_post_validation,
)

import mongoengine_async
from mongoengine_async import (
    Document,
    IntField,
    ListField,
    ReferenceField,
    StringField,
)
from mongoengine_async.testing import fresh_database

SYNC_ALIAS = "eqw_sync"
OTHER_SYNC_ALIAS = "eqw_sync_other"
ASYNC_ALIAS = "eqw_async"


class WThing(Document):
    name = StringField()
    n = IntField()
    tags = ListField(StringField())
    code = StringField(unique=True, sparse=True)


class WKeyed(Document):
    """Its own string ids, a shard key, a unique field."""

    id = StringField(primary_key=True)
    name = StringField()
    region = StringField(required=True)
    code = StringField(unique=True, sparse=True)
    meta = {"shard_key": ("region",)}


class WTenant(Document):
    """No shard key, its own update selector (a tenant's filter), which
    MongoEngine's save calls for every update."""

    name = StringField()
    tenant = StringField()

    def _integrate_shard_key(self, doc: dict, select_dict: dict) -> dict:
        select_dict = super()._integrate_shard_key(doc, select_dict)
        select_dict["tenant"] = doc.get("tenant")
        return select_dict


class WAuthor(Document):
    name = StringField()


class WBook(Document):
    title = StringField()
    author = ReferenceField(WAuthor)


class WNote(Document):
    """Deleted with its author."""

    text = StringField()
    author = ReferenceField(WAuthor, reverse_delete_rule=CASCADE)


MODELS = (WThing, WKeyed, WTenant, WAuthor, WBook, WNote)
SIGNALS = {
    "pre_save": pre_save,
    "pre_save_post_validation": pre_save_post_validation,
    "post_save": post_save,
    "pre_bulk_insert": pre_bulk_insert,
    "post_bulk_insert": post_bulk_insert,
}


# By name first: an upsert's _id comes from the server, and within one second
# its order against the client's ids depends on their random bytes.
STORED_ORDER = [("name", 1), ("_id", 1)]


class SyncApi:
    """Calls MongoEngine's own (blocking) methods: a queryset's as MongoEngine's
    QuerySet class has them (ours makes ``insert`` faster on sync aliases)."""

    async def __call__(self, target: Any, name: str, *args: Any, **kwargs: Any):
        if isinstance(target, mongoengine_async.QuerySet):
            return getattr(MongoEngineQuerySet, name)(target, *args, **kwargs)
        return getattr(target, name)(*args, **kwargs)

    async def stored(self, cls: type) -> list[dict]:
        return list(cls._get_collection().find().sort(STORED_ORDER))


class OursSyncApi(SyncApi):
    """Calls our (blocking) methods on a sync alias."""

    async def __call__(self, target: Any, name: str, *args: Any, **kwargs: Any):
        return getattr(target, name)(*args, **kwargs)


class AsyncApi:
    """Calls the ``async_*`` counterpart of each method."""

    async def __call__(self, target: Any, name: str, *args: Any, **kwargs: Any):
        return await getattr(target, f"async_{name}")(*args, **kwargs)

    async def stored(self, cls: type) -> list[dict]:
        collection = await cls._async_get_collection()
        return await collection.find().sort(STORED_ORDER).to_list()


Case = Callable[[Any], Awaitable[Any]]


@contextlib.contextmanager
def on_alias(alias: str) -> Iterator[None]:
    """Every model class on ``alias``, as MongoEngine's switch_db does it."""
    for cls in MODELS:
        cls._meta["db_alias"], cls._collection = alias, None
    try:
        yield
    finally:
        for cls in MODELS:
            del cls._meta["db_alias"]
            cls._collection = None


class Normaliser:
    """Generated ObjectIds become tokens in order of appearance; database
    names become ``<db>``; server cluster times are dropped; generators are
    all alike."""

    def __init__(self, database: str) -> None:
        self.database = database
        self.ids: dict[ObjectId, str] = {}

    def __call__(self, value: Any) -> Any:
        if isinstance(value, ObjectId):
            return self.ids.setdefault(value, f"oid{len(self.ids)}")
        if isinstance(value, mongoengine_async.Document):
            return (type(value).__name__, self(value.to_mongo().to_dict()))
        if isinstance(value, dict):
            return {key: self(item) for key, item in value.items()}
        if isinstance(value, list | tuple):
            return [self(item) for item in value]
        if isinstance(value, str):
            return self.text(value)
        if isinstance(value, GeneratorType):  # (as a signal sends it on)
            return "<generator>"
        return value

    def text(self, text: str) -> str:
        text = text.replace(self.database, "<db>")
        # The server's cluster time in a full error response differs per call.
        text = re.sub(
            r", '\$clusterTime': .*?'operationTime': Timestamp\(.*?\)", "", text
        )
        return re.sub(
            r"[0-9a-f]{24}", lambda match: self(ObjectId(match.group())), text
        )


@contextlib.contextmanager
def recording_signals(log: list, normalise: Normaliser) -> Iterator[None]:
    """Append (signal, sender, kwargs) to ``log`` for every write signal."""
    receivers = []
    for name, signal in SIGNALS.items():

        def receiver(sender, _name=name, **kwargs):
            log.append((_name, sender.__name__, normalise(kwargs)))

        signal.connect(receiver)
        receivers.append((signal, receiver))
    try:
        yield
    finally:
        for signal, receiver in receivers:
            signal.disconnect(receiver)


async def outcome(case: Case, api: Any, alias: str, database: str) -> dict:
    """Run ``case`` on ``alias``: what it returned or raised, the signals
    sent, then every model's stored documents, normalised."""
    normalise = Normaliser(database)
    signals: list = []
    result: Any = None
    error = None
    with on_alias(alias):
        with recording_signals(signals, normalise):
            try:
                result = normalise(await case(api))
            except Exception as err:  # compared as type and message
                error = (type(err).__name__, normalise.text(str(err)))
        stored = {cls.__name__: normalise(await api.stored(cls)) for cls in MODELS}
    return {"result": result, "error": error, "signals": signals, "stored": stored}


@contextlib.contextmanager
def sync_database(alias: str, host: str) -> Iterator[str]:
    """``alias`` registered with connect() on a new database, dropped after."""
    name = f"test_eqw_{uuid4().hex[:12]}"
    mongoengine_async.connect(
        db=name, alias=alias, host=host, uuidRepresentation="standard"
    )
    try:
        yield name
    finally:
        mongoengine_async.get_connection(alias).drop_database(name)
        mongoengine_async.disconnect(alias)


@pytest.fixture
def sync_alias(mongodb_uri):
    with sync_database(SYNC_ALIAS, mongodb_uri) as name:
        yield name


@pytest.fixture
def other_sync_alias(mongodb_uri):
    with sync_database(OTHER_SYNC_ALIAS, mongodb_uri) as name:
        yield name


@pytest.fixture
async def async_alias_db(mongodb_uri):
    async with fresh_database(ASYNC_ALIAS, mongodb_uri):
        yield mongoengine_async.get_async_db(ASYNC_ALIAS).name


# -- the cases ------------------------------------------------------------------------


async def new_without_id(run):
    thing = WThing(name="a", tags=["x"])
    return await run(thing, "save")


async def own_id_new(run):
    return await run(WKeyed(id="k1", region="eu", name="a"), "save")


async def own_id_existing(run):
    await run(WKeyed(id="k1", region="eu", name="a", code="c"), "save")
    return await run(WKeyed(id="k1", region="eu", name="b"), "save")


async def own_id_existing_other_shard_key(run):
    await run(WKeyed(id="k1", region="eu", name="a"), "save")
    return await run(WKeyed(id="k1", region="us", name="b"), "save")


async def delta_shard_key_moved_meanwhile(run):
    """A delta update selects by the shard key too: the stored document moved
    to another region matches nothing, so the upsert's insert collides."""
    keyed = await run(WKeyed(id="k1", region="eu", name="a"), "save")
    await run(WKeyed.objects(id="k1"), "update", set__region="us")
    keyed.name = "b"
    return await run(keyed, "save")


async def delta_own_selector_moved_meanwhile(run):
    """A class's own ``_integrate_shard_key`` (no shard key) selects the
    update too: the stored document moved to another tenant matches nothing,
    so the upsert's insert collides."""
    tenant = await run(WTenant(name="a", tenant="t1"), "save")
    await run(WTenant.objects(id=tenant.id), "update", set__tenant="t2")
    tenant.name = "b"
    return await run(tenant, "save")


async def own_id_duplicate_unique_field(run):
    await run(WKeyed(id="k1", region="eu", code="c"), "save")
    return await run(WKeyed(id="k2", region="eu", code="c"), "save")


async def own_id_replaced_duplicate_unique_field(run):
    await run(WKeyed(id="k1", region="eu", code="c"), "save")
    await run(WKeyed(id="k2", region="eu", code="d"), "save")
    return await run(WKeyed(id="k2", region="eu", code="c"), "save")


async def force_insert_duplicate(run):
    await run(WKeyed(id="k1", region="eu"), "save")
    return await run(WKeyed(id="k1", region="eu"), "save", force_insert=True)


async def force_insert_own_id(run):
    return await run(WKeyed(id="k1", region="eu"), "save", force_insert=True)


async def delta_set_unset_list(run):
    thing = await run(WThing(name="a", n=1, tags=["x", "y"]), "save")
    thing.name = "b"
    thing.n = None
    thing.tags.append("z")
    thing.tags.remove("x")
    return await run(thing, "save")


async def delta_nothing_changed(run):
    thing = await run(WThing(name="a"), "save")
    return await run(thing, "save")


async def delta_after_document_deleted(run):
    thing = await run(WThing(name="a", n=1), "save")
    await run(WThing.objects, "delete")
    thing.n = 2
    return await run(thing, "save")


async def delta_duplicate_unique_field(run):
    await run(WThing(name="a", code="c"), "save")
    thing = await run(WThing(name="b", code="d"), "save")
    thing.code = "c"
    return await run(thing, "save")


async def save_condition_match(run):
    thing = await run(WThing(name="a", n=1), "save")
    thing.name = "b"
    return await run(thing, "save", save_condition={"n": 1})


async def save_condition_mismatch(run):
    thing = await run(WThing(name="a", n=1), "save")
    thing.name = "b"
    return await run(thing, "save", save_condition={"n__gt": 1})


async def invalid_document(run):
    return await run(WThing(name="a", n="not a number"), "save")


async def cascade_save(run):
    author = await run(WAuthor(name="ann"), "save")
    book = await run(WBook(title="t", author=author), "save")
    author.name = "bea"
    book.title = "u"
    return await run(book, "save", cascade=True)


async def cascade_save_kwargs(run):
    author = await run(WAuthor(name="ann"), "save")
    book = await run(WBook(title="t", author=author), "save")
    author.name = "bea"
    return await run(book, "save", cascade_kwargs={"validate": False})


async def queryset_modify_new(run):
    await run(WThing(name="a", n=1), "save")
    return await run(WThing.objects(name="a"), "modify", new=True, inc__n=2)


async def queryset_modify_upsert(run):
    return await run(WThing.objects(name="z"), "modify", upsert=True, set__n=3)


async def document_modify(run):
    thing = await run(WThing(name="a", n=1), "save")
    changed = await run(thing, "modify", {"n": 1}, set__name="b", push__tags="t")
    return changed, thing


async def update_upsert(run):
    await run(WThing(name="a", n=1), "save")
    first = await run(WThing.objects(name="z"), "update", upsert=True, set__n=3)
    second = await run(WThing.objects(n__gte=1), "update", inc__n=10)
    return first, second


async def update_duplicate_unique_field(run):
    await run(WThing(name="a", code="c"), "save")
    await run(WThing(name="b", code="d"), "save")
    return await run(WThing.objects(name="b"), "update", set__code="c")


async def update_one(run):
    await run(WThing(name="a", n=1), "save")
    await run(WThing(name="a", n=1), "save")
    return await run(WThing.objects(name="a"), "update_one", inc__n=1, push__tags="t")


async def upsert_one(run):
    await run(WThing(name="a", n=1), "save")
    existing = await run(WThing.objects(name="a"), "upsert_one", set__n=2)
    created = await run(WThing.objects(name="z"), "upsert_one", set__n=3)
    return existing, created


async def insert_list_loaded(run):
    things = [WThing(name="a"), WThing(name="b", tags=["t"])]
    return await run(WThing.objects, "insert", things)


async def insert_list_ids(run):
    things = [WThing(name="a"), WThing(name="b")]
    return await run(WThing.objects, "insert", things, load_bulk=False)


async def insert_one_document(run):
    return await run(WKeyed.objects, "insert", WKeyed(id="k1", region="eu"))


async def insert_one_duplicate(run):
    await run(WKeyed(id="k1", region="eu"), "save")
    return await run(WKeyed.objects, "insert", WKeyed(id="k1", region="eu"))


async def insert_list_duplicate(run):
    await run(WThing(name="a", code="c"), "save")
    things = [WThing(name="b", code="d"), WThing(name="c", code="c")]
    return await run(WThing.objects, "insert", things)


async def insert_saved_document(run):
    thing = await run(WThing(name="a"), "save")
    return await run(WThing.objects, "insert", [thing])


async def insert_other_class(run):
    return await run(WThing.objects, "insert", [WThing(name="a"), WAuthor(name="b")])


async def insert_tuple_write_concern_signal_kwargs(run):
    things = (WThing(name="a"), WThing(name="b", n=2))
    return await run(
        WThing.objects,
        "insert",
        things,
        load_bulk=False,
        write_concern={"w": 1},
        signal_kwargs={"origin": "test"},
    )


async def counts(run):
    for n in range(5):
        await run(WThing(name="a" if n % 2 else "b", n=n), "save")
    everything = WThing.objects
    return [
        await run(everything, "count"),
        await run(everything.limit(2), "count"),
        await run(everything.limit(2), "count", with_limit_and_skip=True),
        await run(everything.skip(4), "count", with_limit_and_skip=True),
        await run(everything.skip(1).limit(0), "count", with_limit_and_skip=True),
        await run(everything.limit(0), "count"),
        await run(WThing.objects(name="a"), "count"),
        await run(WThing.objects(name="a").skip(1), "count", with_limit_and_skip=True),
    ]


async def unique_violation_new_documents(run):
    await run(WThing(name="a", code="c"), "save")
    return await run(WThing(name="b", code="c"), "save")


async def delete_cascade(run):
    author = await run(WAuthor(name="ann"), "save")
    await run(WAuthor(name="bea"), "save")
    for text in ("a", "b"):
        await run(WNote(text=text, author=author), "save")
    return await run(WAuthor.objects(name="ann"), "delete")


async def delete_cascade_sparing_refs(run):
    author = await run(WAuthor(name="ann"), "save")
    kept = await run(WNote(text="kept", author=author), "save")
    await run(WNote(text="gone", author=author), "save")
    return await run(WAuthor.objects(name="ann"), "delete", cascade_refs={kept.id})


CASES = [
    new_without_id,
    own_id_new,
    own_id_existing,
    own_id_existing_other_shard_key,
    delta_shard_key_moved_meanwhile,
    delta_own_selector_moved_meanwhile,
    own_id_duplicate_unique_field,
    own_id_replaced_duplicate_unique_field,
    force_insert_duplicate,
    force_insert_own_id,
    delta_set_unset_list,
    delta_nothing_changed,
    delta_after_document_deleted,
    delta_duplicate_unique_field,
    save_condition_match,
    save_condition_mismatch,
    invalid_document,
    cascade_save,
    cascade_save_kwargs,
    queryset_modify_new,
    queryset_modify_upsert,
    document_modify,
    update_upsert,
    update_duplicate_unique_field,
    update_one,
    upsert_one,
    insert_list_loaded,
    insert_list_ids,
    insert_one_document,
    insert_one_duplicate,
    insert_list_duplicate,
    insert_saved_document,
    insert_other_class,
    insert_tuple_write_concern_signal_kwargs,
    counts,
    unique_violation_new_documents,
    delete_cascade,
    delete_cascade_sparing_refs,
]


@pytest.mark.parametrize("case", CASES, ids=lambda case: case.__name__)
async def test_async_write_does_what_the_sync_write_does(
    case: Case, sync_alias: str, async_alias_db: str
):
    expected = await outcome(case, SyncApi(), SYNC_ALIAS, sync_alias)
    actual = await outcome(case, AsyncApi(), ASYNC_ALIAS, async_alias_db)
    assert actual == expected


# Where MongoEngine's insert and async_insert differ on purpose: a generator is
# iterated once by each step of MongoEngine's insert (async_insert makes a list
# of it), and an empty list is an error from PyMongo (async_insert returns []).
async def insert_generator(run):
    return await run(WThing.objects, "insert", (WThing(name=n) for n in "ab"))


async def insert_empty_list(run):
    return await run(WThing.objects, "insert", [])


@pytest.mark.parametrize(
    "case",
    [*CASES, insert_generator, insert_empty_list],
    ids=lambda case: case.__name__,
)
async def test_our_sync_write_does_what_mongoengines_does(
    case: Case, sync_alias: str, other_sync_alias: str
):
    expected = await outcome(case, SyncApi(), SYNC_ALIAS, sync_alias)
    actual = await outcome(case, OursSyncApi(), OTHER_SYNC_ALIAS, other_sync_alias)
    assert actual == expected
