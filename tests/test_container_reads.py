"""The first read of a list/dict field of plain items gives what MongoEngine's
own read gives, without its dereference machinery, on an async alias and on a
sync one.

Hypothesis draws a stored document of a model whose containers hold plain
values (strings, numbers, dates, embedded documents), loads it as our document
and as a plain MongoEngine document, and reads every container of both: same
type, same items, bound to its document under the same name, ``_dereferenced``
as MongoEngine leaves it, kept in ``_data`` and nothing marked changed. Then
the same change to both must be tracked alike, and the save of ours must send
MongoEngine's update in one round trip. On a sync alias the reads are compared
in every state MongoEngine tells apart: a document built by the user, one not
initialised yet, inside ``no_dereference``, and a container held from an
earlier read (MongoEngine's ``DeReference`` replaces it with a copy).
"""

from __future__ import annotations

import copy
import datetime
import weakref
from collections.abc import Callable
from typing import Any

import mongoengine
import pytest
from bson import DBRef, ObjectId
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from mongoengine.base.datastructures import BaseDict, BaseList
from mongoengine.context_managers import no_dereference

import mongoengine_async
from conftest import sync_alias_beside
from mongoengine_async import (
    AsyncReferenceProxy,
    DateTimeField,
    DictField,
    Document,
    EmbeddedDocument,
    EmbeddedDocumentField,
    EmbeddedDocumentListField,
    GenericReferenceField,
    IntField,
    LazyReference,
    LazyReferenceField,
    ListField,
    MapField,
    ReferenceField,
    SortedListField,
    StringField,
    async_no_dereference,
    get_async_db,
)
from mongoengine_async.testing import CommandLog

# -- the same model twice: ours, and MongoEngine's --------------------------------


class CrPart(EmbeddedDocument):
    label = StringField()
    count = IntField()


class CrItem(Document):
    tags = ListField(StringField())
    numbers = ListField(IntField(), db_field="nums")
    sorted_numbers = SortedListField(IntField())
    dates = ListField(DateTimeField())
    words = DictField(StringField())
    counts = MapField(IntField())
    parts = EmbeddedDocumentListField(CrPart)
    part_list = ListField(EmbeddedDocumentField(CrPart))
    part_map = MapField(EmbeddedDocumentField(CrPart))
    meta = {"collection": "cr_items"}


class MeCrPart(mongoengine.EmbeddedDocument):
    label = mongoengine.StringField()
    count = mongoengine.IntField()


class MeCrItem(mongoengine.Document):
    tags = mongoengine.ListField(mongoengine.StringField())
    numbers = mongoengine.ListField(mongoengine.IntField(), db_field="nums")
    sorted_numbers = mongoengine.SortedListField(mongoengine.IntField())
    dates = mongoengine.ListField(mongoengine.DateTimeField())
    words = mongoengine.DictField(mongoengine.StringField())
    counts = mongoengine.MapField(mongoengine.IntField())
    parts = mongoengine.EmbeddedDocumentListField(MeCrPart)
    part_list = mongoengine.ListField(mongoengine.EmbeddedDocumentField(MeCrPart))
    part_map = mongoengine.MapField(mongoengine.EmbeddedDocumentField(MeCrPart))
    meta = {"collection": "cr_items_mongoengine"}


CONTAINERS = ("tags", "numbers", "sorted_numbers", "dates", "words", "counts")
CONTAINERS += ("parts", "part_list", "part_map")
DB_NAMES = {"numbers": "nums"}

# -- drawn stored documents and changes -------------------------------------------

TEXT = st.text(alphabet="abcxyz é", max_size=4)
KEYS = st.text(alphabet="abcxyz", min_size=1, max_size=3)
DATES = st.datetimes(
    min_value=datetime.datetime(1990, 1, 1), max_value=datetime.datetime(2040, 1, 1)
).map(lambda moment: moment.replace(microsecond=moment.microsecond // 1000 * 1000))
PART_SONS = st.fixed_dictionaries(
    {}, optional={"label": TEXT, "count": st.integers(-5, 5)}
)
# Each container's items (the values of a dict's keys).
ITEMS: dict[str, st.SearchStrategy[Any]] = {
    "tags": TEXT,
    "numbers": st.integers(-9, 9),
    "sorted_numbers": st.integers(-9, 9),
    "dates": DATES,
    "words": TEXT,
    "counts": st.integers(-9, 9),
    "parts": PART_SONS,
    "part_list": PART_SONS,
    "part_map": PART_SONS,
}
MAPPINGS = ("words", "counts", "part_map")
EXAMPLES = settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


@st.composite
def sons(draw: st.DrawFn) -> dict[str, Any]:
    """A stored item: some of the containers (absent ones read as defaults)."""
    son: dict[str, Any] = {"_id": ObjectId()}
    for name in draw(st.lists(st.sampled_from(CONTAINERS), unique=True)):
        if name in MAPPINGS:
            value: Any = draw(st.dictionaries(KEYS, ITEMS[name], max_size=3))
        else:
            value = draw(st.lists(ITEMS[name], max_size=3))
        son[DB_NAMES.get(name, name)] = (
            sorted(value) if name == "sorted_numbers" else value
        )
    return son


@st.composite
def changes(draw: st.DrawFn) -> list[tuple[str, Any]]:
    """Changes to make through the containers read: ``(field, (key, item))``."""
    drawn: list[tuple[str, Any]] = []
    for name in draw(st.lists(st.sampled_from(CONTAINERS), max_size=3)):
        drawn.append((name, (draw(KEYS), draw(ITEMS[name]))))
    return drawn


@pytest.fixture(params=["async", "sync"])
def alias(request: pytest.FixtureRequest) -> Any:
    """The alias "default", async (``async_alias``) or sync (``sync_default``):
    the tests taking it run on both."""
    kind = "async_alias" if request.param == "async" else "sync_default"
    return request.getfixturevalue(kind)


def loaded_twice(son: dict[str, Any]) -> tuple[CrItem, MeCrItem]:
    """``son`` loaded as our document and as MongoEngine's."""
    return (
        CrItem._from_son(copy.deepcopy(son)),
        MeCrItem._from_son(copy.deepcopy(son)),
    )


def built_twice(son: dict[str, Any]) -> tuple[CrItem, MeCrItem]:
    """``son``'s values given to our class's constructor and MongoEngine's."""
    values = {"id": son["_id"]}
    for name in CONTAINERS:
        if DB_NAMES.get(name, name) in son:
            values[name] = son[DB_NAMES.get(name, name)]
    return CrItem(**copy.deepcopy(values)), MeCrItem(**copy.deepcopy(values))


def plain(value: Any) -> Any:
    """A container's items as comparable values (embedded documents as SON)."""
    if isinstance(value, list):
        return [plain(item) for item in value]
    if isinstance(value, dict):
        return {key: plain(item) for key, item in value.items()}
    if isinstance(value, mongoengine.EmbeddedDocument):
        return value.to_mongo().to_dict()
    return value


def assert_read_alike(ours: CrItem, theirs: MeCrItem, name: str) -> None:
    """The first read of ``name`` gives on ours what MongoEngine's gives."""
    our_value, their_value = getattr(ours, name), getattr(theirs, name)
    assert type(our_value) is type(their_value), name
    assert isinstance(our_value, BaseList | BaseDict), name
    assert plain(our_value) == plain(their_value), name
    assert type(our_value._instance) is weakref.ProxyType, name
    assert type(their_value._instance) is weakref.ProxyType, name
    assert our_value._instance._data is ours._data, name
    assert our_value._name == their_value._name == name
    assert our_value._dereferenced is their_value._dereferenced, name
    assert ours._data[name] is our_value, name  # kept, not marked changed
    assert getattr(ours, name) is our_value, name


def change(document: Any, name: str, key: str, item: Any) -> None:
    """Put ``item`` into ``document``'s container ``name`` (at ``key`` of a
    dict, appended to a list), through the container read, so only its change
    tracking records it."""
    container = getattr(document, name)
    if name in ("parts", "part_list", "part_map"):
        item = document._fields["parts"].field.document_type(**item)
    if isinstance(container, dict):
        container[key] = item
    else:
        container.append(item)


@EXAMPLES
@given(son=sons(), built=st.booleans())
def test_first_reads_give_what_mongoengine_gives(
    alias: Any, son: dict[str, Any], built: bool
) -> None:
    """Every container reads on our document (loaded or built) as on
    MongoEngine's, once and again, and nothing is marked changed by reading."""
    ours, theirs = built_twice(son) if built else loaded_twice(son)
    for name in CONTAINERS:
        assert_read_alike(ours, theirs, name)
    assert ours._get_changed_fields() == theirs._get_changed_fields() == []


async def test_reads_in_no_dereference_stay_unmarked(async_alias: str) -> None:
    """Inside MongoEngine's ``no_dereference`` or ours the read is not marked
    dereferenced (as before) and the next read outside it is."""
    son = {"_id": ObjectId(), "tags": ["a"], "words": {"k": "v"}}
    ours = CrItem._from_son(copy.deepcopy(son))
    with no_dereference(CrItem):
        assert ours.tags._dereferenced is False
        assert ours.words._dereferenced is False
    assert ours.tags._dereferenced is True
    assert ours.words._dereferenced is True
    ours = CrItem._from_son(copy.deepcopy(son))
    async with async_no_dereference(CrItem):
        assert ours.tags._dereferenced is False
    assert ours.tags._dereferenced is True
    assert ours.tags == ["a"]


@EXAMPLES
@given(son=sons(), drawn=changes())
def test_changes_are_tracked_as_by_mongoengine(
    alias: Any, son: dict[str, Any], drawn: list[tuple[str, Any]]
) -> None:
    """A change through a container read first is tracked alike."""
    ours, theirs = loaded_twice(son)
    for name, (key, item) in drawn:
        change(ours, name, key, item)
        change(theirs, name, key, item)
    assert ours._get_changed_fields() == theirs._get_changed_fields()
    assert ours._get_update_doc() == theirs._get_update_doc()


async def test_save_after_changes_sends_mongoengine_update(
    async_alias: str, command_log: CommandLog
) -> None:
    """A loaded document changed through its containers saves with
    MongoEngine's update, in one round trip, and reads back changed."""
    collection = await CrItem._async_get_collection()
    son = {
        "_id": ObjectId(),
        "tags": ["a", "b"],
        "words": {"k": "v"},
        "parts": [{"label": "p"}],
        "part_map": {"m": {"count": 1}},
    }
    await collection.insert_one(son)
    ours = await CrItem.objects.async_get(id=son["_id"])
    theirs = MeCrItem._from_son(copy.deepcopy(son))
    for document, part in ((ours, CrPart), (theirs, MeCrPart)):
        document.tags.append("c")
        document.words["n"] = "w"
        document.parts[0].label = "q"
        document.part_map["m"].count = 2
        document.counts["new"] = 3
        document.part_list.append(part(label="x"))
    command_log.clear()
    await ours.async_save()
    assert command_log.names == ["update"]
    assert command_log.events[0].command["updates"][0]["u"] == (
        theirs._get_update_doc()
    )
    stored = await collection.find_one({"_id": son["_id"]})
    assert stored["tags"] == ["a", "b", "c"]
    assert stored["words"] == {"k": "v", "n": "w"}
    assert stored["parts"] == [{"label": "q"}]
    assert stored["part_map"] == {"m": {"count": 2}}
    assert stored["counts"] == {"new": 3}
    assert stored["part_list"] == [{"label": "x"}]


# -- sync aliases: every state MongoEngine's read tells apart --------------------

SYNC_STATES = ("loaded", "built", "not initialised", "no_dereference")


def read_in_state(
    ours: CrItem, theirs: MeCrItem, state: str
) -> dict[str, tuple[Any, Any]]:
    """Read every container of both documents in ``state``, checking the
    reads alike; the containers read, by name (ours, theirs)."""
    if state == "not initialised":  # as a read during __init__ sees it
        ours._initialised = theirs._initialised = False
    held = {}
    with no_dereference(CrItem) if state == "no_dereference" else _nothing():
        for name in CONTAINERS:
            assert_read_alike(ours, theirs, name)
            held[name] = (getattr(ours, name), getattr(theirs, name))
    ours._initialised = theirs._initialised = True
    return held


class _nothing:
    """A context manager doing nothing."""

    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: object) -> None:
        return None


@EXAMPLES
@given(son=sons(), state=st.sampled_from(SYNC_STATES), drawn=changes())
def test_sync_reads_in_every_state_give_what_mongoengine_gives(
    sync_default: Any, son: dict[str, Any], state: str, drawn: list[tuple[str, Any]]
) -> None:
    """On a sync alias, a read in each state, then the next read (initialised,
    outside ``no_dereference``), give on ours what they give on MongoEngine's:
    the container held from the first read is kept or replaced alike; then
    changes through the reads are tracked alike."""
    ours, theirs = built_twice(son) if state == "built" else loaded_twice(son)
    held = read_in_state(ours, theirs, state)
    for name in CONTAINERS:
        assert_read_alike(ours, theirs, name)
        our_held, their_held = held[name]
        assert (getattr(ours, name) is our_held) is (
            getattr(theirs, name) is their_held
        ), name
    assert ours._get_changed_fields() == theirs._get_changed_fields() == []
    for name, (key, item) in drawn:
        change(ours, name, key, item)
        change(theirs, name, key, item)
    assert ours._get_changed_fields() == theirs._get_changed_fields()
    assert ours._get_update_doc() == theirs._get_update_doc()


# A field whose assignment reads ``tags``: in ``__init__``, before the
# document is initialised. What each read gave: (type, dereferenced, items).
SEEN: list[Any] = []


class _ReadsTags(mongoengine.StringField):
    def __set__(self, instance: Any, value: Any) -> None:
        if value is not None:
            tags = instance.tags
            SEEN.append((type(tags), tags._dereferenced, list(tags), tags))
        super().__set__(instance, value)


class CrProbed(Document):
    tags = ListField(StringField())
    probe = _ReadsTags()
    meta = {"collection": "cr_probed"}


class MeCrProbed(mongoengine.Document):
    tags = mongoengine.ListField(mongoengine.StringField())
    probe = _ReadsTags()
    meta = {"collection": "cr_probed_mongoengine"}


def test_sync_read_during_init_gives_what_mongoengine_gives(
    sync_default: Any,
) -> None:
    """A read while ``__init__`` runs (not initialised) is not marked and the
    first read afterwards replaces it, on ours as on MongoEngine's; saving
    stores the same."""
    SEEN.clear()
    ours = CrProbed(tags=["a", "b"], probe="x")
    theirs = MeCrProbed(tags=["a", "b"], probe="x")
    (our_type, our_mark, our_items, our_read), seen = SEEN
    assert (our_type, our_mark, our_items) == seen[:3] == (BaseList, False, ["a", "b"])
    assert ours.tags._dereferenced is theirs.tags._dereferenced is True
    assert (ours.tags is our_read) is (theirs.tags is seen[3]) is False
    ours.save()
    theirs.save()
    assert CrProbed.objects.exclude("id").as_pymongo().get() == (
        MeCrProbed.objects.exclude("id").as_pymongo().get()
    )


def kind_and_id(value: Any) -> Any:
    """A reference (a proxy, a document loaded, a lazy reference, a DBRef) as
    its kind and id; None for any other value."""
    if isinstance(value, LazyReference):
        return "lazy", value.pk
    if isinstance(value, AsyncReferenceProxy | mongoengine.Document):
        return "reference", value.id
    if isinstance(value, DBRef):
        return "dbref", value.id
    return None


def shape(value: Any, reference: Callable[[Any], Any] = kind_and_id) -> Any:
    """A read value with the types and names of every container in it (items
    taken as stored, not through BaseList's converting ``__getitem__``), each
    reference as ``reference`` describes it."""
    described = reference(value)
    if described is not None:
        return described
    if isinstance(value, list | tuple):
        items = [shape(item, reference) for item in list.__iter__(list(value))]
        return type(value).__name__, getattr(value, "_name", None), items
    if isinstance(value, dict):
        mapped = {key: shape(item, reference) for key, item in dict.items(value)}
        return type(value).__name__, getattr(value, "_name", None), mapped
    if isinstance(value, mongoengine.EmbeddedDocument):
        return {name: shape(value._data.get(name), reference) for name in value._fields}
    return value


def outcome(document: Any, name: str) -> Any:
    """The shape of a read of ``name``, or the type of the error it raises."""
    try:
        return shape(getattr(document, name))
    except Exception as error:  # the error is the outcome
        return type(error)


@pytest.mark.parametrize(
    ("name", "stored"),
    [
        ("tags", [["a", "b"], "c"]),
        ("tags", [{"k": "v"}]),
        ("tags", [("a",)]),
        ("tags", [DBRef("cr_nowhere", 1)]),
        ("words", {"k": ["a"]}),
        ("words", {"_ref": "x"}),
        ("words", {"_cls": "CrNowhere"}),
        ("parts", [{"label": "a", "count": 1}, {}]),
        ("parts", [{"label": ["a"]}]),
        ("part_list", [{"count": 1}, {"label": {"k": "v"}}]),
        ("part_map", {"m": {"label": DBRef("cr_nowhere", 1)}}),
    ],
)
def test_sync_reads_of_items_mongoengine_walks_give_its_result(
    sync_default: Any, name: str, stored: Any
) -> None:
    """Items MongoEngine's ``DeReference`` looks into (nested containers,
    references, dicts it takes for a reference or a document, and those in the
    fields of an embedded document) read on a sync alias as MongoEngine reads
    them, its errors included; embedded documents holding none of them too."""
    ours, theirs = loaded_twice({"_id": ObjectId(), name: stored})
    assert outcome(ours, name) == outcome(theirs, name)
    assert outcome(ours, name) == outcome(theirs, name)


def changed_through_read(document: Any, name: str) -> Any:
    """The fields of ``document`` a change through the first list or dict
    nested in its container ``name`` marks (None: it holds none), or the
    type of the error raised."""
    try:
        value = getattr(document, name)
        items = value.values() if isinstance(value, dict) else value
        nested = [item for item in items if isinstance(item, list | dict)]
        if not nested:
            return None
        if isinstance(nested[0], list):
            nested[0].append("x")
        else:
            nested[0]["x"] = "y"
    except Exception as error:  # the error is the outcome
        return type(error)
    return sorted(document._get_changed_fields())


@pytest.mark.parametrize(
    ("name", "stored"),
    [
        ("tags", [["a", "b"], "c"]),
        ("tags", [{"k": "v"}]),
        ("tags", [("a",)]),
        ("numbers", [1, [2, [3]], {"k": [4]}]),
        ("sorted_numbers", [[1], 2]),
        ("words", {"k": ["a"]}),
        ("counts", {"a": [1, [2]], "b": {"c": [1]}, "d": 1}),
        ("parts", [{"label": "a", "count": 1}, {}]),
        ("parts", [{"label": ["a"]}]),
        ("part_list", [{"count": 1}, {"label": {"k": "v"}}]),
    ],
)
def test_async_reads_of_items_mongoengine_walks_give_its_result(
    async_alias: str, name: str, stored: Any
) -> None:
    """On an async alias too, lists and dicts nested in a container of plain
    items (stored by an update) read as MongoEngine's walk gives them, wrapped
    under their path, and a change through one marks that path, as on
    MongoEngine's sync read (they read plain, a change through one marking
    nothing: the walk was skipped for containers of plain items)."""
    ours, theirs = loaded_twice({"_id": ObjectId(), name: stored})
    assert outcome(ours, name) == outcome(theirs, name)
    assert outcome(ours, name) == outcome(theirs, name)
    ours, theirs = loaded_twice({"_id": ObjectId(), name: stored})
    assert changed_through_read(ours, name) == changed_through_read(theirs, name)


# -- containers of references holding lists and dicts an update stored ------------


class CrTarget(Document):
    name = StringField()
    meta = {"collection": "cr_targets"}


class CrHolder(Document):
    refs = ListField(ReferenceField(CrTarget))
    ref_map = DictField(ReferenceField(CrTarget))
    lazies = ListField(LazyReferenceField(CrTarget))
    db_refs = ListField(ReferenceField(CrTarget, dbref=True))
    db_ref_map = DictField(ReferenceField(CrTarget, dbref=True))
    generics = ListField(GenericReferenceField())
    generic_map = DictField(GenericReferenceField())
    meta = {"collection": "cr_holders"}


class MeCrTarget(mongoengine.Document):
    name = mongoengine.StringField()
    meta = {"collection": "cr_targets", "db_alias": "cr_sync"}


class MeCrHolder(mongoengine.Document):
    refs = mongoengine.ListField(mongoengine.ReferenceField(MeCrTarget))
    ref_map = mongoengine.DictField(mongoengine.ReferenceField(MeCrTarget))
    lazies = mongoengine.ListField(mongoengine.LazyReferenceField(MeCrTarget))
    db_refs = mongoengine.ListField(mongoengine.ReferenceField(MeCrTarget, dbref=True))
    db_ref_map = mongoengine.DictField(
        mongoengine.ReferenceField(MeCrTarget, dbref=True)
    )
    generics = mongoengine.ListField(mongoengine.GenericReferenceField())
    generic_map = mongoengine.DictField(mongoengine.GenericReferenceField())
    meta = {"collection": "cr_holders", "db_alias": "cr_sync"}


def nested_changed(document: Any, name: str) -> Any:
    """The fields of ``document`` an item added to the first list or dict
    nested in its container ``name`` marks changed (None: it holds none)."""
    value = getattr(document, name)
    items = dict.values(value) if isinstance(value, dict) else list.__iter__(value)
    nested = next((item for item in items if isinstance(item, list | dict)), None)
    if nested is None or isinstance(nested, DBRef):
        return None
    if isinstance(nested, list):
        nested.append(1)
    else:
        nested["x"] = 1
    return sorted(document._get_changed_fields())


def generic(cls: str, target: ObjectId) -> dict[str, Any]:
    """A generic reference to ``target`` of the class named ``cls``, as stored."""
    return {"_cls": cls, "_ref": DBRef("cr_targets", target)}


async def read_both(
    async_alias: str, mongodb_uri: str, name: str, stored: Any
) -> tuple[Any, Any]:
    """``stored(target id, class name)`` stored in ``name`` of a holder (the
    target stored too), read by our document on the async alias and by
    MongoEngine's on a sync alias over the same database: the shape of each
    first read, and what a change through its first nested list or dict marks
    (the error raised instead, as its type and message)."""
    target = (await CrTarget(name="t").async_save()).id
    holders = get_async_db(async_alias).cr_holders
    read = []
    with sync_alias_beside("cr_sync", async_alias, mongodb_uri):
        for cls, get in (
            ("CrTarget", CrHolder.objects.async_get),
            ("MeCrTarget", MeCrHolder.objects.get),
        ):
            holder = ObjectId()
            await holders.insert_one({"_id": holder, name: stored(target, cls)})
            try:
                document = get(id=holder)
                if not isinstance(document, mongoengine.Document):
                    document = await document
                first = shape(getattr(document, name))
                document = get(id=holder)
                if not isinstance(document, mongoengine.Document):
                    document = await document
                read.append((first, nested_changed(document, name)))
            except Exception as error:  # the error is the outcome
                read.append((type(error), str(error)))
    return read[0], read[1]


@pytest.mark.parametrize(
    ("name", "stored"),
    [
        ("db_refs", lambda t, c: [DBRef("cr_targets", t), [DBRef("cr_targets", t)]]),
        ("db_refs", lambda t, c: [[1, [2]], {"k": 1}]),
        ("db_ref_map", lambda t, c: {"a": {"k": DBRef("cr_targets", t)}, "b": [1]}),
        ("generics", lambda t, c: [generic(c, t), [generic(c, t)], {"k": [1]}]),
        ("generics", lambda t, c: [[[generic(c, t)]], {"k": {"j": generic(c, t)}}]),
        ("generic_map", lambda t, c: {"b": [generic(c, t)], "d": {"k": [1]}}),
    ],
)
async def test_async_reads_of_containers_among_references_give_mongoengine_walks(
    async_alias: str, mongodb_uri: str, name: str, stored: Any
) -> None:
    """Lists and dicts an update stored among the references of a container
    (``[ref, [ref]]``) read on an async alias as MongoEngine's walk leaves
    them on a sync one: wrapped under their path, a change through one marked
    there, the references in them (at any depth) proxies where MongoEngine
    loads them (they read plain, a change through them marking nothing, the
    references in them as stored)."""
    ours, theirs = await read_both(async_alias, mongodb_uri, name, stored)
    assert theirs[1]  # (read, and a change marked)
    assert ours == theirs


@pytest.mark.parametrize(
    ("name", "stored", "kind"),
    [
        ("refs", lambda t, c: [t, [t], {"k": 1}], "reference"),
        ("ref_map", lambda t, c: {"a": t, "b": {"k": t}, "c": [1]}, "reference"),
        ("lazies", lambda t, c: [t, [t], {"k": 1}], "lazy"),
    ],
)
async def test_containers_stored_among_object_id_references_read_as_references(
    async_alias: str, mongodb_uri: str, name: str, stored: Any, kind: str
) -> None:
    """A list or dict an update stored among the references of a container of
    (lazy) references stored as ObjectIds is no list or dict once loaded:
    MongoEngine's ``ReferenceField.to_python`` makes it a reference whose id
    is that value. On an async alias it reads as such a reference (a proxy,
    or a lazy reference), as every reference does; MongoEngine's read on a
    sync alias raises TypeError (its walk looks the id up in a dict)."""
    ours, theirs = await read_both(async_alias, mongodb_uri, name, stored)
    target = (await CrTarget.objects.async_get()).id
    expected = stored(target, "")
    read = [
        (kind, item)
        for item in (expected.values() if isinstance(expected, dict) else expected)
    ]
    items = ours[0][2]
    assert list(items.values() if isinstance(items, dict) else items) == read
    assert theirs[0] is TypeError
    assert "unhashable type" in theirs[1]


def loaded_or_not(value: Any) -> Any:
    """A loaded document as its class name, id and name; a reference left
    unloaded (a proxy, a DBRef, a generic reference's dict, as stored) as
    such; None for any other value (see :func:`shape`)."""
    if type(value) is AsyncReferenceProxy:
        return "unloaded", value.id
    if isinstance(value, mongoengine.Document):
        return type(value).__name__.removeprefix("Me"), value.id, value.name
    if isinstance(value, DBRef) or (isinstance(value, dict) and "_ref" in value):
        return "unloaded", value
    return None


@pytest.mark.parametrize(
    ("name", "stored"),
    [
        ("generics", lambda t, c: [generic(c, t[0]), [generic(c, t[1])]]),
        (
            "generics",
            lambda t, c: [[[generic(c, t[0])]], {"k": {"j": generic(c, t[1])}}],
        ),
        ("generic_map", lambda t, c: {"a": generic(c, t[0]), "b": [generic(c, t[1])]}),
        (
            "db_refs",
            lambda t, c: [DBRef("cr_targets", t[0]), [DBRef("cr_targets", t[1])]],
        ),
        ("db_ref_map", lambda t, c: {"a": {"k": DBRef("cr_targets", t[1])}, "b": [1]}),
    ],
)
async def test_select_related_loads_references_in_containers_among_references(
    async_alias: str, mongodb_uri: str, command_log: CommandLog, name: str, stored: Any
) -> None:
    """``async_select_related`` loads the references in lists and dicts an
    update stored among those of a list/dict of generic references or of
    ReferenceField(dbref=True)s, at any depth, as MongoEngine's
    ``select_related`` on a sync alias over the same data loads them, in as
    many queries (the results', then one per referenced collection)."""
    targets = [(await CrTarget(name=n).async_save()).id for n in ("one", "two")]
    holders = get_async_db(async_alias).cr_holders
    ours_id, theirs_id = ObjectId(), ObjectId()
    await holders.insert_one({"_id": ours_id, name: stored(targets, "CrTarget")})
    await holders.insert_one({"_id": theirs_id, name: stored(targets, "MeCrTarget")})
    sync_log = CommandLog()
    mongoengine_async.connect(
        db=get_async_db(async_alias).name,
        alias="cr_sync",
        host=mongodb_uri,
        uuidRepresentation="standard",
        event_listeners=[sync_log],
    )
    try:
        [theirs] = MeCrHolder.objects(id=theirs_id).select_related()
        theirs_read = shape(getattr(theirs, name), loaded_or_not)
    finally:
        mongoengine_async.disconnect("cr_sync")
    command_log.events.clear()
    [ours] = await CrHolder.objects(id=ours_id).async_select_related()
    queries = command_log.count("find")
    assert shape(getattr(ours, name), loaded_or_not) == theirs_read
    assert "unloaded" not in repr(theirs_read)  # (MongoEngine loads them all)
    assert queries == sync_log.count("find") == 2
