"""On a connect() alias our querysets build documents with the generated loader,
and every way of reading gives exactly what plain MongoEngine's QuerySet gives.

Each test reads the same stored documents through our queryset and through
MongoEngine's own ``QuerySet`` class on the same collection, and compares the
documents field by field (``assert_same`` of tests/test_loading.py).
"""

from __future__ import annotations

import operator
import pickle
from collections.abc import Callable
from typing import Any

import mongoengine
import pytest
from bson import DBRef, ObjectId
from mongoengine.context_managers import no_dereference, switch_collection
from mongoengine.queryset import QuerySet as MongoEngineQuerySet

from mongoengine_async import (
    Document,
    EmbeddedDocument,
    EmbeddedDocumentField,
    FieldDoesNotExist,
    IntField,
    ListField,
    QuerySet,
    ReferenceField,
    StringField,
)
from mongoengine_async.testing import CommandLog
from test_loading import (
    LdColour,
    LdDynamic,
    LdEverything,
    LdLoose,
    LdSpecial,
    LdTarget,
    LdWithChoices,
    LdWithEnum,
    assert_same,
    full_document,
    loader_calls,
)


def plain(cls: type) -> MongoEngineQuerySet:
    """MongoEngine's own QuerySet of ``cls`` (its ``_from_son`` per result)."""
    return MongoEngineQuerySet(cls, cls._get_collection())


def assert_all_same(fast: list, slow: list) -> None:
    assert len(fast) == len(slow)
    for fast_document, slow_document in zip(fast, slow, strict=True):
        assert_same(fast_document, slow_document)


def special() -> LdSpecial:
    document = full_document()
    names = [name for name in document._fields_ordered if name != "_cls"]
    subclass_document = LdSpecial(**{name: document[name] for name in names})
    subclass_document.extra = "x"
    return subclass_document


def store_documents(database: Any) -> list:
    """Every field kind, a subclass, defaults and nulls, saved with save() on
    the sync alias "default" (``database``)."""
    documents = [full_document(), special(), LdEverything(number=1)]
    for document in documents:
        for target in {document.target, document.part and document.part.target}:
            if target is not None and target.pk is not None:
                target.save()
        document.save()
    database.ld_everything.update_one(
        {"_id": documents[2].pk}, {"$set": {"tags": None, "text": None}}
    )
    return documents


@pytest.fixture
def stored_documents(sync_default: Any) -> list:
    """:func:`store_documents` on this test's database."""
    return store_documents(sync_default)


def test_iteration_list_first_get_build_mongoengines_documents(
    stored_documents: list,
) -> None:
    ordered = LdEverything.objects.order_by("number", "id")
    fast = list(ordered)
    assert vars(fast[1]) == vars(fast[2]) == {}  # the loader's (all fields set)
    assert [type(document) for document in fast] == [
        LdEverything,
        LdEverything,
        LdSpecial,
    ]
    slow = list(plain(LdEverything).order_by("number", "id"))
    assert vars(slow[1])  # MongoEngine's stores its state in each document
    assert_all_same(fast, slow)
    assert_all_same([document for document in ordered.clone()], slow)
    assert_same(LdEverything.objects.order_by("number", "id").first(), slow[0])
    assert_same(LdEverything.objects.order_by("number", "id")[2], slow[2])
    pk = stored_documents[1].pk
    assert_same(LdEverything.objects.get(pk=pk), plain(LdEverything).get(pk=pk))
    assert type(LdEverything.objects.get(pk=pk)) is LdSpecial
    assert_same(LdEverything.objects.with_id(pk), plain(LdEverything).with_id(pk))


def test_defaults_and_nulls_read_the_same(stored_documents: list) -> None:
    pk = stored_documents[2].pk
    fast = LdEverything.objects.get(pk=pk)
    assert_same(fast, plain(LdEverything).get(pk=pk))
    assert (fast.text, fast.scores, fast.tags) == ("untitled", [0], [])


def test_partial_scalar_and_raw_reads_are_mongoengines(stored_documents: list) -> None:
    fast = list(LdEverything.objects.only("number", "tags").order_by("number"))
    slow = list(plain(LdEverything).only("number", "tags").order_by("number"))
    assert_all_same(fast, slow)
    assert_all_same(
        list(LdEverything.objects.exclude("part").order_by("number")),
        list(plain(LdEverything).exclude("part").order_by("number")),
    )
    assert list(LdEverything.objects.scalar("number", "tags")) == list(
        plain(LdEverything).scalar("number", "tags")
    )
    assert LdEverything.objects.order_by("-number").scalar("text")[0] == "hello"
    assert list(LdEverything.objects.as_pymongo()) == list(
        plain(LdEverything).as_pymongo()
    )
    assert (
        LdEverything.objects.as_pymongo().order_by("number")[0]
        == (plain(LdEverything).as_pymongo().order_by("number")[0])
    )


def test_references_read_and_dereference_as_mongoengines(
    stored_documents: list,
) -> None:
    pk = stored_documents[0].pk
    fast = LdEverything.objects.get(pk=pk)
    assert fast._data["target"] == DBRef("ld_target", stored_documents[0].target.pk)
    assert_same(fast, plain(LdEverything).get(pk=pk))
    assert fast.target.name == "t"  # MongoEngine's dereference on access
    with switch_collection(LdTarget, "ld_target_archive"):
        fast = LdEverything.objects.get(pk=pk)
        slow = plain(LdEverything).get(pk=pk)
    assert fast._data["target"].collection == "ld_target_archive"
    assert_same(fast, slow)
    with no_dereference(LdEverything):
        fast, slow = LdEverything.objects.get(pk=pk), plain(LdEverything).get(pk=pk)
    assert vars(fast).keys() == vars(slow).keys()
    assert fast.to_mongo() == slow.to_mongo()
    fast = LdEverything.objects.no_dereference().get(pk=pk)
    assert fast.to_mongo() == plain(LdEverything).no_dereference().get(pk=pk).to_mongo()


def test_collection_switched_mid_iteration_is_seen(sync_default: Any) -> None:
    """The loader is made again when a reference's collection changes."""
    target = LdTarget(name="t").save()
    for _ in range(2):
        LdEverything(target=target).save()
    documents = LdEverything.objects.order_by("id")
    first = next(documents)
    with switch_collection(LdTarget, "ld_target_archive"):
        second = next(documents)
    assert first._data["target"] == DBRef("ld_target", target.pk)
    assert second._data["target"] == DBRef("ld_target_archive", target.pk)


def test_fallbacks_and_errors_are_mongoengines(sync_default: Any) -> None:
    for document in (
        LdWithEnum(colour=LdColour.RED),
        LdWithChoices(size="M"),
        LdDynamic(name="d", anything_else=[1, 2]),
    ):
        document.save()
        cls = type(document)
        assert_same(cls.objects.get(pk=document.pk), plain(cls).get(pk=document.pk))
    LdLoose(name="x").save()
    sync_default.ld_loose.update_many({}, {"$set": {"surprise": 1}})
    assert_same(LdLoose.objects.first(), plain(LdLoose).first())

    LdTarget(name="x").save()
    sync_default.ld_target.update_many({}, {"$set": {"surprise": 1}})
    with pytest.raises(FieldDoesNotExist) as fast_error:
        LdTarget.objects.first()
    with pytest.raises(FieldDoesNotExist) as slow_error:
        plain(LdTarget).first()
    assert str(fast_error.value) == str(slow_error.value)


def test_values_of_unexpected_types_read_the_same(sync_default: Any) -> None:
    document = LdEverything().save()
    sync_default.ld_everything.update_one(
        {"_id": document.pk},
        {
            "$set": {
                "number": "12",
                "ratio": "0.25",
                "flag": 1,
                "tags": ["x", 5],
                "other_id": str(ObjectId()),
                "target": DBRef("ld_target", ObjectId()),
            }
        },
    )
    assert_same(LdEverything.objects.first(), plain(LdEverything).first())


def test_init_signal_receivers_see_each_loaded_document(stored_documents: list) -> None:
    seen = []

    def receiver(sender: type, document: Any, **kwargs: Any) -> None:
        seen.append(document)

    documents = LdEverything.objects.order_by("number", "id")
    first = next(documents)  # before the receiver: the generated loader
    mongoengine.signals.post_init.connect(receiver, sender=LdEverything)
    try:
        second = next(documents)
    finally:
        mongoengine.signals.post_init.disconnect(receiver, sender=LdEverything)
    assert seen == [second]
    assert first.number == 1


def test_a_queryset_read_from_pickles_as_mongoengines(sync_default: Any) -> None:
    # LdTarget: unpickled embedded documents hold a dead weak proxy to their owner.
    LdTarget(name="t").save()
    queryset = LdTarget.objects()
    assert len(list(queryset)) == 1  # its loader made and kept
    copy = pickle.loads(pickle.dumps(queryset))
    slow = pickle.loads(pickle.dumps(plain(LdTarget)))
    assert len(list(slow)) == 1
    assert_all_same(list(copy), list(slow))
    assert_all_same(list(copy.clone()), list(plain(LdTarget)))


def from_mongoengine(cls: type, raw: dict) -> Any:
    """What MongoEngine's own code builds from ``raw``: ``cls._from_son``."""
    return cls._from_son(raw)


def built_by_loader(document: Any) -> bool:
    """Whether the loader built ``document``: ``_from_son`` gives each document
    its own ``_dynamic_fields``, the loader leaves the class's."""
    return "_dynamic_fields" not in vars(document)


def test_in_bulk_builds_mongoengines_documents(stored_documents: list) -> None:
    ids = [document.pk for document in stored_documents] + [ObjectId()]
    fast = LdEverything.objects.in_bulk(ids)
    slow = plain(LdEverything).in_bulk(ids)
    assert list(fast) == list(slow) and len(fast) == 3
    for pk, document in slow.items():
        assert_same(fast[pk], document)
        assert built_by_loader(fast[pk]) and not built_by_loader(document)
    assert type(fast[stored_documents[1].pk]) is LdSpecial
    assert LdEverything.objects.scalar("number").in_bulk(ids) == (
        plain(LdEverything).scalar("number").in_bulk(ids)
    )
    assert LdEverything.objects.as_pymongo().in_bulk(ids) == (
        plain(LdEverything).as_pymongo().in_bulk(ids)
    )
    fast = LdEverything.objects.no_dereference().in_bulk(ids)
    slow = plain(LdEverything).no_dereference().in_bulk(ids)
    assert {pk: d.to_mongo() for pk, d in fast.items()} == {
        pk: d.to_mongo() for pk, d in slow.items()
    }
    assert LdEverything.objects.in_bulk([]) == {}


def test_in_bulk_follows_a_switched_collection(stored_documents: list) -> None:
    pk = stored_documents[0].pk
    assert LdEverything.objects.in_bulk([pk])[pk]._data["target"].collection == (
        "ld_target"
    )
    with switch_collection(LdTarget, "ld_target_archive"):
        fast, slow = (
            LdEverything.objects.in_bulk([pk]),
            plain(LdEverything).in_bulk([pk]),
        )
    assert fast[pk]._data["target"].collection == "ld_target_archive"
    assert_same(fast[pk], slow[pk])


def test_a_reference_read_on_access_is_mongoengines(
    stored_documents: list, sync_default: Any
) -> None:
    pk = stored_documents[0].pk
    target = sync_default.ld_target.find_one({"_id": stored_documents[0].target.pk})
    document = LdEverything.objects.get(pk=pk)
    assert isinstance(document._data["target"], DBRef)
    assert_same(document.target, from_mongoengine(LdTarget, target))
    assert built_by_loader(document.target)
    assert_same(document.target_ref, from_mongoengine(LdTarget, target))  # dbref=True
    assert_same(document.anything, from_mongoengine(LdTarget, target))  # generic
    # (A list of references is read by MongoEngine's DeReference, _from_son.)
    for fast in document.targets:
        assert_same(fast, from_mongoengine(LdTarget, target))
    assert document.lazy.fetch().name == "t"

    LdTarget.objects(pk=target["_id"]).delete()
    gone = LdEverything.objects.get(pk=pk)
    stored = gone._data["target"]
    with pytest.raises(mongoengine.DoesNotExist) as fast_error:
        assert gone.target is None  # raises first
    with pytest.raises(mongoengine.DoesNotExist) as slow_error:
        mongoengine.ReferenceField._lazy_load_ref(LdTarget, stored)
    assert str(fast_error.value) == str(slow_error.value)


def test_select_related_and_reload_build_mongoengines_documents(
    stored_documents: list, sync_default: Any
) -> None:
    fast = LdEverything.objects.order_by("number", "id").select_related()
    slow = plain(LdEverything).order_by("number", "id").select_related()
    assert_all_same(fast, slow)
    joined = [document._data["target"] for document in fast]
    assert joined[0] is None and joined[1] is not None  # numbers 1, 7, 7
    raw = sync_default.ld_target.find_one({"_id": joined[1].pk})
    assert_same(joined[1], from_mongoengine(LdTarget, raw))
    assert built_by_loader(joined[1])  # by in_bulk
    assert all(map(built_by_loader, fast[1]._data["targets"]))

    pk = stored_documents[0].pk
    sync_default.ld_everything.update_one({"_id": pk}, {"$set": {"number": 8}})
    fast_document = LdEverything.objects.get(pk=pk)
    slow_document = plain(LdEverything).get(pk=pk)
    for document in (fast_document, slow_document):
        document.text = "changed"
        document.reload("number")
    assert (fast_document.number, fast_document.text) == (8, "changed")
    assert_same(fast_document, slow_document)
    assert_same(fast_document.reload(), slow_document.reload())


def test_a_chunk_of_the_result_cache_is_built_as_mongoengine_builds_it(
    sync_default: Any,
) -> None:
    """A collection switched while iterating is seen from the next chunk of
    results on, as when MongoEngine builds them with _from_son."""
    target = LdTarget(name="t").save()
    sync_default.ld_everything.insert_many(
        [{"_cls": "LdEverything", "target": target.pk} for _ in range(150)]
    )

    def collections_seen(queryset: MongoEngineQuerySet) -> list[str]:
        seen = []
        switched = switch_collection(LdTarget, "ld_target_archive")
        for document in queryset:
            if not seen:
                switched.__enter__()
            seen.append(document._data["target"].collection)
        switched.__exit__(None, None, None)
        return seen

    fast = collections_seen(LdEverything.objects.order_by("id"))
    assert fast == collections_seen(plain(LdEverything).order_by("id"))
    assert fast == ["ld_target"] * 100 + ["ld_target_archive"] * 50


def test_buffered_results_are_built_in_mongoengines_round_trips(
    sync_default: Any, sync_command_log: CommandLog
) -> None:
    """The results a cursor holds are built straight from its buffer: the
    same documents, and the same find and getMore, as MongoEngine's."""
    sync_default.ld_target.insert_many([{"name": f"t{i:03}"} for i in range(250)])
    sync_command_log.clear()
    fast = list(LdTarget.objects.order_by("name"))
    fast_commands = sync_command_log.names
    sync_command_log.clear()
    slow = list(plain(LdTarget).order_by("name"))
    assert fast_commands == sync_command_log.names == ["find", "getMore"]
    assert [document.name for document in fast] == [f"t{i:03}" for i in range(250)]
    assert all(built_by_loader(document) for document in fast)
    assert_all_same(fast, slow)
    fast_iterated = [document for document in LdTarget.objects.order_by("name")]
    assert_all_same(fast_iterated, slow)


def test_a_result_failing_to_load_mid_chunk_is_lost_as_in_mongoengine(
    sync_default: Any,
) -> None:
    """A buffered result that raises is popped and lost, and the cache keeps
    the documents before it: iterating again goes on after it."""
    sync_default.ld_target.insert_many([{"name": f"t{i:03}"} for i in range(150)])
    sync_default.ld_target.update_one({"name": "t050"}, {"$set": {"surprise": 1}})

    def read_twice(queryset: MongoEngineQuerySet) -> tuple[list, list, int]:
        names, errors = [], []
        for _ in range(2):
            try:
                names.extend(document.name for document in queryset)
            except FieldDoesNotExist as error:
                errors.append(str(error))
        return names, errors, len(queryset._result_cache)

    fast = read_twice(LdTarget.objects.order_by("name"))
    assert fast == read_twice(plain(LdTarget).order_by("name"))
    names, errors, cached = fast
    # The chunk raised before its first document was yielded; the next loop
    # yields the cached 50, then goes on after the lost result.
    assert names == [f"t{i:03}" for i in range(150) if i != 50]
    assert len(errors) == 1 and "surprise" in errors[0]
    assert cached == 149


def test_buffered_results_are_loaded_in_batches(sync_default: Any) -> None:
    """Each chunk of the result cache loads the results the cursor holds in
    one call of the loader's batch, not one call per result, by list() and by
    a loop: the same documents."""
    sync_default.ld_target.insert_many([{"name": f"t{i:03}"} for i in range(250)])
    for read in (list, lambda queryset: [document for document in queryset]):
        documents: list = []
        calls = loader_calls(
            lambda read=read, documents=documents: documents.extend(
                read(LdTarget.objects.order_by("name"))
            ),
            LdTarget,
        )
        assert [document.name for document in documents] == NAMES
        assert all(built_by_loader(document) for document in documents)
        # The find's 101 results, then the getMore's 149, in chunks of 100:
        # next() loads the first of each reply, a batch takes each run of the
        # buffer (99; 1 and 98; 50). One by one, 250 calls.
        assert calls == 6


NAMES = [f"t{i:03}" for i in range(250)]
FAILING = ("t050", "t170")  # each in the middle of a chunk of the cache


def read_until_done(queryset: Any, name_of: Callable[[Any], Any]) -> tuple:
    """Loop over ``queryset`` until a loop ends without a loading error (at
    most four): the names each loop read, the errors, and the result cache's
    length and the cursor's buffer (its results' names) after the first."""
    loops: list[list] = []
    errors: list[tuple[type, str]] = []
    after_error: tuple = ()
    for _ in range(4):
        loops.append([])
        try:
            loops[-1].extend(map(name_of, queryset))
            break
        except FieldDoesNotExist as error:
            errors.append((type(error), str(error)))
        if not after_error:
            cache = getattr(queryset, "_result_cache", None)
            buffer = [raw["name"] for raw in queryset._cursor._data]
            after_error = (None if cache is None else len(cache), buffer)
    return loops, errors, after_error


def by_name(document: Any) -> Any:
    return document.name


def as_is(value: Any) -> Any:
    return value


def test_a_batch_failing_mid_chunk_leaves_mongoengines_state(
    sync_default: Any,
) -> None:
    """A result failing to load in the middle of a chunk loaded in a batch:
    the documents before it in the cache, it popped from the cursor's buffer
    and the rest still there, MongoEngine's error; each loop after it goes on
    past it, as with MongoEngine's QuerySet."""
    sync_default.ld_target.insert_many([{"name": name} for name in NAMES])
    sync_default.ld_target.update_many(
        {"name": {"$in": FAILING}}, {"$set": {"surprise": 1}}
    )
    read: list = []
    calls = loader_calls(
        lambda: read.extend(
            read_until_done(LdTarget.objects.order_by("name"), by_name)
        ),
        LdTarget,
    )
    loops, errors, after_error = read
    assert tuple(read) == read_until_done(plain(LdTarget).order_by("name"), by_name)
    assert after_error == (50, NAMES[51:101])  # the find's first 101, t050 lost
    kept = [name for name in NAMES if name not in FAILING]
    # A chunk is loaded before any of it is yielded: each failing chunk ends
    # its loop, and the next yields what the cache holds, then goes on.
    assert loops == [[], kept[:150], kept]
    assert [kind for kind, _ in errors] == [FieldDoesNotExist] * 2
    assert all("surprise" in message for _, message in errors)
    assert calls < 20  # batches (one by one, a call per result: 250)


class CountingQuerySet(QuerySet):
    """A user's queryset class whose ``__next__`` (an override) notes the name
    of every result."""

    seen: list = []

    def __next__(self) -> Any:
        document = super().__next__()
        self.seen.append(document.name)
        return document


def failing_read_receiver(sender: type, document: Any, **kwargs: Any) -> None:
    """A post_init receiver (which sends loading through ``_from_son``)."""


@pytest.mark.parametrize(
    "mode",
    ["as_pymongo", "scalar", "no_cache", "post_init", "next_overridden"],
)
def test_each_way_of_reading_past_a_failure_is_mongoengines(
    sync_default: Any, mode: str
) -> None:
    """Raw and scalar results, no cache, an init receiver, a user's
    ``__next__``: results, errors, cache and buffer after a result failing
    to load, as MongoEngine's QuerySet gives them."""
    sync_default.ld_target.insert_many([{"name": name} for name in NAMES])
    sync_default.ld_target.update_many(
        {"name": {"$in": FAILING}}, {"$set": {"surprise": 1}}
    )
    collection = LdTarget._get_collection()
    ours: Any = LdTarget.objects
    theirs: Any = plain(LdTarget)
    name_of: Callable[[Any], Any] = by_name
    if mode == "as_pymongo":
        ours, theirs = ours.as_pymongo(), theirs.as_pymongo()
        name_of = operator.itemgetter("name")
    elif mode == "scalar":
        ours, theirs, name_of = ours.scalar("name"), theirs.scalar("name"), as_is
    elif mode == "no_cache":
        ours, theirs = ours.no_cache(), theirs.no_cache()
    elif mode == "next_overridden":
        ours = CountingQuerySet(LdTarget, collection)
        CountingQuerySet.seen = []
    if mode == "post_init":
        mongoengine.signals.post_init.connect(failing_read_receiver, sender=LdTarget)
    try:
        fast = read_until_done(ours.order_by("name"), name_of)
    finally:
        mongoengine.signals.post_init.disconnect(failing_read_receiver)
    assert fast == read_until_done(theirs.order_by("name"), name_of)
    loops, errors, _ = fast
    kept = [name for name in NAMES if name not in FAILING]
    if mode in ("as_pymongo", "scalar"):  # raw, or only the name read
        assert (loops, errors) == ([NAMES], [])
    elif mode == "no_cache":  # each loop reads from the start again
        assert loops == [NAMES[:50]] * 4 and len(errors) == 4
    else:
        assert loops == [[], kept[:150], kept] and len(errors) == 2
    if mode == "next_overridden":
        assert CountingQuerySet.seen == NAMES[:50] + [
            name for name in NAMES[51:] if name != "t170"
        ]


class LdCounted(Document):
    name = StringField()
    meta = {"queryset_class": CountingQuerySet}


def test_a_queryset_class_overriding_next_still_sees_every_result(
    sync_default: Any,
) -> None:
    sync_default.ld_counted.insert_many([{"name": f"c{i:03}"} for i in range(150)])
    CountingQuerySet.seen = []
    documents = list(LdCounted.objects.order_by("name"))
    assert CountingQuerySet.seen == [document.name for document in documents]
    assert len(documents) == 150


@pytest.mark.parametrize(
    "shape",
    [
        lambda queryset: queryset.limit(150),
        lambda queryset: queryset.skip(20).limit(130),
        lambda queryset: queryset.batch_size(7),
        lambda queryset: queryset.batch_size(30).limit(95),
        lambda queryset: queryset.only("name").batch_size(64),
        lambda queryset: queryset.filter(name__gte="t100"),
    ],
    ids=["limit", "skip-limit", "batch-7", "batch-limit", "only-batch", "filter"],
)
def test_every_cursor_shape_reads_as_mongoengines(
    sync_default: Any, sync_command_log: CommandLog, shape: Any
) -> None:
    """Buffers of any size, cut by limits and skips: the same documents in the
    same round trips as MongoEngine's QuerySet, by a loop and by list()."""
    sync_default.ld_target.insert_many([{"name": f"t{i:03}"} for i in range(250)])

    def read(queryset: MongoEngineQuerySet) -> tuple[list, list, list[str]]:
        sync_command_log.clear()
        listed = list(shape(queryset.order_by("name")))
        looped = [document for document in shape(queryset.order_by("name"))]
        return listed, looped, sync_command_log.names

    fast_listed, fast_looped, fast_commands = read(LdTarget.objects)
    slow_listed, slow_looped, slow_commands = read(plain(LdTarget))
    assert fast_commands == slow_commands
    assert_all_same(fast_listed, slow_listed)
    assert_all_same(fast_looped, slow_looped)
    assert [document.name for document in fast_listed] == [
        document.name for document in fast_looped
    ]


def test_a_models_own_builders_run_for_each_loaded_document(sync_default: Any) -> None:
    """A model's own ``__init__``, ``_from_son`` or ``__setattr__`` runs for a
    loaded document, as MongoEngine builds it through them."""

    class OwnInit(Document):
        meta = {"collection": "own_init"}
        name = StringField()

        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            self.cache: dict = {}

    class OwnFromSon(Document):
        meta = {"collection": "own_from_son"}
        name = StringField()

        @classmethod
        def _from_son(cls, son: Any, *args: Any, **kwargs: Any) -> Any:
            document = super()._from_son(son, *args, **kwargs)
            document.loaded = True
            return document

    class OwnSetattr(Document):
        meta = {"collection": "own_setattr"}
        name = StringField()

        def __setattr__(self, key: str, value: Any) -> None:
            if key == "name" and isinstance(value, str):
                value = value.upper()
            super().__setattr__(key, value)

    for name in ("own_init", "own_from_son", "own_setattr"):
        sync_default[name].insert_one({"name": "x"})
    for read in (lambda c: c.objects.first(), lambda c: next(iter(c.objects))):
        assert read(OwnInit).cache == {}
        assert read(OwnFromSon).loaded is True
        assert read(OwnSetattr).name == "X"


class LdOwnNew(Document):
    """A model whose own ``__new__`` notes the keywords it is called with."""

    meta = {"collection": "ld_own_new"}
    name = StringField()
    calls: list = []

    def __new__(cls, *args: Any, **kwargs: Any) -> Any:
        cls.calls.append(sorted(kwargs))
        return super().__new__(cls)


def test_a_models_own_new_gets_mongoengines_arguments(sync_default: Any) -> None:
    """A model's own ``__new__`` is called for each loaded document with the
    keywords MongoEngine's ``_from_son`` builds it with (its stored values),
    by every way of reading."""
    sync_default.ld_own_new.insert_many([{"name": "a"}, {"name": "b"}])
    ids = [raw["_id"] for raw in sync_default.ld_own_new.find()]
    for read in (list, lambda objects: list(objects.in_bulk(ids).values())):
        seen = []
        for objects in (LdOwnNew.objects.order_by("name"), plain(LdOwnNew)):
            LdOwnNew.calls = []
            seen.append((read(objects), LdOwnNew.calls))
        (fast, fast_calls), (slow, slow_calls) = seen
        assert fast_calls == slow_calls
        assert slow_calls == [["__auto_convert", "_created", "id", "name"]] * 2
        assert_all_same(fast, slow)


class LdParent(Document):
    meta = {"allow_inheritance": True, "collection": "ld_parent"}
    name = StringField()


class LdOwnFromSonChild(LdParent):
    """A subclass with its own ``_from_son``, which MongoEngine calls only
    when asked for the subclass's documents (the parent's builds them through
    ``__init__``)."""

    calls: list = []
    extra = IntField()

    @classmethod
    def _from_son(cls, son: Any, *args: Any, **kwargs: Any) -> Any:
        cls.calls.append(son.get("name"))
        return super()._from_son(son, *args, **kwargs)


def test_a_subclass_own_from_son_runs_only_as_mongoengine_calls_it(
    sync_default: Any,
) -> None:
    """Reading the parent class (a loop, a chunk's batch, ``in_bulk``,
    ``first()``), a child's result is built as MongoEngine's parent
    ``_from_son`` builds it, without the child's own ``_from_son``; reading the
    child class calls it for each result, as MongoEngine does."""
    names = [f"p{i:03}" for i in range(150)]
    raws: list[dict] = [{"_cls": "LdParent", "name": name} for name in names]
    for index in (0, 60, 99, 149):  # first, mid-chunk, last of a run, of a reply
        raws[index] = {"_cls": "LdParent.LdOwnFromSonChild", "name": names[index]}
    sync_default.ld_parent.insert_many(raws)
    ids = [raw["_id"] for raw in raws]
    reads: dict[str, Callable[[Any], Any]] = {
        "list": lambda objects: list(objects.order_by("name")),
        "loop": lambda objects: [document for document in objects.order_by("name")],
        "in_bulk": lambda objects: list(objects.in_bulk(ids).values()),
        "first": lambda objects: [objects.order_by("name").first()],
    }
    calls = {}
    for cls in (LdParent, LdOwnFromSonChild):
        for how, read in reads.items():
            seen = []
            for objects in (cls.objects, plain(cls)):
                LdOwnFromSonChild.calls = []
                documents = read(objects)
                seen.append((documents, LdOwnFromSonChild.calls))
            (fast, fast_calls), (slow, slow_calls) = seen
            calls[cls.__name__, how] = fast_calls
            assert fast_calls == slow_calls, (cls, how)
            assert [type(document) for document in fast] == [
                type(document) for document in slow
            ]
            assert_all_same(fast, slow)
    children = [names[index] for index in (0, 60, 99, 149)]
    # Only the child's own reads call its _from_son (in_bulk filters no class).
    expected = {("LdParent", how): [] for how in reads}
    expected.update(
        {
            ("LdOwnFromSonChild", "list"): children,
            ("LdOwnFromSonChild", "loop"): children,
            ("LdOwnFromSonChild", "in_bulk"): names,
            ("LdOwnFromSonChild", "first"): children[:1],
        }
    )
    assert calls == expected


def test_a_field_with_its_own_get_stored_as_null_loads_none(sync_default: Any) -> None:
    """A null stored for a field with its own ``__get__`` is None in ``_data``
    (only an absent value is read through ``__get__``), as in MongoEngine."""

    class Placeheld(mongoengine.base.BaseField):
        def __get__(self, instance: Any, owner: Any) -> Any:
            if instance is None:
                return self
            value = instance._data.get(self.name)
            return {"placeholder": True} if value is None else value

    class WithPlaceheld(Document):
        meta = {"collection": "with_placeheld"}
        version = Placeheld()

    sync_default.with_placeheld.insert_many([{"version": None}, {}])
    fast = list(WithPlaceheld.objects.order_by("id"))
    slow = list(plain(WithPlaceheld).order_by("id"))
    assert [d._data["version"] for d in fast] == [None, {"placeholder": True}]
    assert_all_same(fast, slow)


def test_a_to_python_set_on_a_field_is_applied_on_load(sync_default: Any) -> None:
    """A ``to_python`` set on a field itself, after the class was first read,
    converts the next reads, as MongoEngine's ``_from_son`` calls it."""

    class Ticked(Document):
        meta = {"collection": "ticked"}
        n = mongoengine.IntField()
        tags = mongoengine.ListField(mongoengine.IntField())

    sync_default.ticked.insert_one({"n": 3, "tags": [1]})
    assert Ticked.objects.get().n == 3
    Ticked.n.to_python = lambda value: value * 2
    Ticked.tags.field.to_python = lambda value: value + 10
    fast, slow = Ticked.objects.get(), plain(Ticked).get()
    assert (fast.n, fast.tags) == (slow.n, slow.tags) == (6, [11])


def test_a_referenced_class_moved_to_another_collection_is_seen(
    sync_default: Any,
) -> None:
    """References read after the referenced class's ``meta["collection"]``
    changed name the new collection, as MongoEngine's read it from meta."""

    class Moved(Document):
        meta = {"collection": "moved_before"}
        name = StringField()

    class Pointing(Document):
        meta = {"collection": "pointing"}
        moved = mongoengine.ReferenceField(Moved)

    target = sync_default.moved_before.insert_one({"name": "old"}).inserted_id
    sync_default.moved_after.insert_one({"_id": target, "name": "new"})
    sync_default.pointing.insert_one({"moved": target})
    assert Pointing.objects.first().moved.name == "old"
    Moved._meta["collection"] = "moved_after"
    Moved._collection = None
    loaded = Pointing.objects.first()
    assert loaded._data["moved"] == DBRef("moved_after", target)
    assert loaded.moved.name == "new"


def test_a_conversion_error_is_mongoengines_and_not_chained(sync_default: Any) -> None:
    """A stored value no field converts raises MongoEngine's error, without
    the error the loader met as its context."""

    class Part(mongoengine.EmbeddedDocument):
        x = mongoengine.IntField()

    class Holder(Document):
        meta = {"collection": "holder"}
        part = mongoengine.EmbeddedDocumentField(Part)

    sync_default.holder.insert_one({"part": "not a dict"})
    with pytest.raises(mongoengine.errors.InvalidDocumentError) as fast:
        list(Holder.objects)
    with pytest.raises(mongoengine.errors.InvalidDocumentError) as slow:
        list(plain(Holder))
    assert str(fast.value) == str(slow.value)
    assert fast.value.__context__ is None


class SlSpot(EmbeddedDocument):
    x = IntField()


class SlPlace(Document):
    """Stored whole, with a value the loader converts (an embedded document)."""

    name = StringField()
    spot = EmbeddedDocumentField(SlSpot)
    meta = {"allow_inheritance": True}


class SlCapital(SlPlace):
    since = IntField()


class SlVisit(Document):
    place = ReferenceField(SlPlace)


WHOLE_CAPITAL = ["_cls", "name", "spot", "since", "id"]  # as _from_son has it


def test_a_whole_subclass_document_loads_in_mongoengines_data_order(
    sync_default: Any,
) -> None:
    """A stored document holding every field of a class with ``_cls``
    (allow_inheritance) gets ``_from_son``'s ``_data`` key order, by every way
    of reading it, not the fields' declaration order."""
    capital = SlCapital(name="P", spot=SlSpot(x=1), since=1).save()
    slow = plain(SlPlace).get(pk=capital.pk)
    assert list(slow._data) == WHOLE_CAPITAL
    reads = [
        SlPlace.objects.get(pk=capital.pk),
        *list(SlPlace.objects),  # the only one
        next(iter(SlPlace.objects)),
        SlPlace.objects.first(),
        SlPlace.objects.in_bulk([capital.pk])[capital.pk],
    ]
    for fast in reads:
        assert list(fast._data) == WHOLE_CAPITAL
        assert_same(fast, slow)


def test_a_reference_read_loads_in_mongoengines_data_order(sync_default: Any) -> None:
    """A document read through a reference on access gets ``_from_son``'s
    ``_data`` key order (the stored order, renamed fields last)."""
    capital = SlCapital(name="P", spot=SlSpot(x=1), since=1).save()
    SlVisit(place=capital).save()
    fast = SlVisit.objects.get().place
    assert built_by_loader(fast)
    assert list(fast._data) == WHOLE_CAPITAL
    assert_same(fast, plain(SlPlace).get(pk=capital.pk))


class SlShelf(Document):
    """Stored with every field, in another order, some null."""

    label = StringField()
    count = IntField()
    words = ListField(StringField())
    spot = EmbeddedDocumentField(SlSpot)
    code = StringField(db_field="c")


SHELF_WITH_NULLS = ["words", "count", "label", "spot", "code", "id"]


def test_a_document_stored_with_nulls_loads_in_mongoengines_data_order(
    sync_default: Any,
) -> None:
    """A stored document holding every field, some of them null, gets
    ``_from_son``'s ``_data`` key order (the stored order, renamed fields
    last), by every way of reading it, a null read as the field's default."""
    pk = ObjectId()
    stored = {"words": None, "count": 2, "c": None, "label": "L", "spot": None}
    SlShelf._get_collection().insert_one({**stored, "_id": pk})
    slow = plain(SlShelf).get(pk=pk)
    assert list(slow._data) == SHELF_WITH_NULLS
    reads = [
        SlShelf.objects.get(pk=pk),
        *list(SlShelf.objects),  # the only one
        next(iter(SlShelf.objects)),
        SlShelf.objects.first(),
        SlShelf.objects.in_bulk([pk])[pk],
        SlShelf.objects(pk=pk).modify(new=True, count=3),
    ]
    assert built_by_loader(reads[0])
    for fast in reads:
        assert list(fast._data) == SHELF_WITH_NULLS
    for fast in reads[:-1]:
        assert_same(fast, slow)
    assert reads[-1].words == [] and reads[-1].count == 3
