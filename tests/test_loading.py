"""The fast loading path gives exactly what MongoEngine's ``_from_son`` gives.

Loading is pure: the raw documents are built in memory as the server returns
them (one test checks that against a real round trip), so no database is needed.
"""

from __future__ import annotations

import copy
import datetime
import decimal
import enum
import pickle
import sys
import uuid
from collections.abc import Callable
from types import FrameType
from typing import Any
from unittest import mock

import bson
import mongoengine
import pytest
from bson import Binary, DBRef, ObjectId
from bson.binary import UuidRepresentation
from bson.codec_options import CodecOptions
from mongoengine.base import BaseField
from mongoengine.errors import NotRegistered

from mongoengine_async import (
    BinaryField,
    BooleanField,
    CachedReferenceField,
    ComplexDateTimeField,
    DateField,
    DateTimeField,
    Decimal128Field,
    DecimalField,
    DictField,
    Document,
    DynamicDocument,
    DynamicField,
    EmailField,
    EmbeddedDocument,
    EmbeddedDocumentField,
    EmbeddedDocumentListField,
    EnumField,
    FieldDoesNotExist,
    FloatField,
    GenericEmbeddedDocumentField,
    GenericLazyReferenceField,
    GenericReferenceField,
    GeoPointField,
    IntField,
    LazyReferenceField,
    LineStringField,
    ListField,
    LongField,
    MapField,
    MultiLineStringField,
    MultiPointField,
    MultiPolygonField,
    ObjectIdField,
    PointField,
    PolygonField,
    ReferenceField,
    SortedListField,
    StringField,
    URLField,
    UUIDField,
    async_switch_collection,
    plan_watch,
)
from mongoengine_async.batches import materialise_all
from mongoengine_async.from_bson import (
    _plan,
    from_son,
    joining_loader,
    loader,
    plain_references,
)


class LdTarget(Document):
    name = StringField()


class LdPart(EmbeddedDocument):
    label = StringField()
    count = IntField(default=1)
    target = ReferenceField(LdTarget)


class LdEverything(Document):
    """Every field type the fast path handles itself."""

    text = StringField(default="untitled")
    email = EmailField()
    url = URLField()
    number = IntField()
    big = LongField()
    ratio = FloatField(null=True)
    flag = BooleanField(default=False)
    amount = DecimalField(precision=2)
    when = DateTimeField()
    day = DateField()
    token = UUIDField()
    other_id = ObjectIdField()
    where = PointField()
    tags = ListField(StringField())
    scores = ListField(IntField(), default=lambda: [0])
    sorted_tags = SortedListField(StringField())
    raw_list = ListField()
    attributes = DictField()
    counters = MapField(IntField())
    part = EmbeddedDocumentField(LdPart)
    parts = EmbeddedDocumentListField(LdPart)
    any_part = GenericEmbeddedDocumentField()
    target = ReferenceField(LdTarget)
    target_ref = ReferenceField(LdTarget, dbref=True)
    targets = ListField(ReferenceField(LdTarget))
    lazy = LazyReferenceField(LdTarget)
    anything = GenericReferenceField()
    lazy_anything = GenericLazyReferenceField()
    nested = ListField(ListField(IntField()))
    meta = {"allow_inheritance": True}


class LdSpecial(LdEverything):
    extra = StringField()


class LdColour(enum.Enum):
    RED = "red"


class LdWithEnum(Document):
    colour = EnumField(LdColour)


class LdLenientColour(enum.Enum):
    """Its own lookup: MongoEngine's __set__ may convert again what to_python kept."""

    RED = "red"

    @classmethod
    def _missing_(cls, value: object) -> LdLenientColour | None:
        return cls.RED if value == "rouge" else None


class LdStaticColour(enum.Enum):
    """A lookup of its own, as a static method."""

    RED = "red"

    @staticmethod
    def _missing_(value: object) -> None:
        return None


class LdNoColour(enum.Enum):
    NONE = None
    RED = "red"


class LdWithLenientEnum(Document):
    colour = EnumField(LdLenientColour)


class LdWithStaticEnum(Document):
    colour = EnumField(LdStaticColour)


class LdWithNoneInEnum(Document):
    colour = EnumField(LdNoColour)


class LdWithComplexDate(Document):
    precise = ComplexDateTimeField()


class LdWithBinary(Document):
    """``BinaryField.__set__`` stores a bytearray as bytes."""

    data = BinaryField()
    blobs = ListField(BinaryField())


class LdWithChoices(Document):
    size = StringField(choices=["S", "M"])


class LdLoose(Document):
    name = StringField()
    meta = {"strict": False}


class LdDynamic(DynamicDocument):
    name = StringField()


class LdPlainTarget(mongoengine.Document):
    """MongoEngine's own Document, for what it does without our loader."""

    name = mongoengine.StringField()


class LdSimple(Document):
    """Field kinds whose stored types their to_python keeps, one renamed."""

    text = StringField(default="untitled")
    number = IntField()
    ratio = FloatField()
    flag = BooleanField()
    label = StringField(db_field="l")
    tags = ListField(StringField())
    anything = BaseField(default="nothing")
    target = ReferenceField(LdTarget)
    source = ReferenceField(LdTarget, db_field="s")
    other_id = ObjectIdField()


class LdKind(Document):
    """A base class whose documents store their class name in ``_cls``."""

    name = StringField()
    tags = ListField(StringField())
    meta = {"allow_inheritance": True}


class LdSubKind(LdKind):
    level = IntField()


class LdFlat(Document):
    """Field kinds an owning loader takes the son of, one stored renamed."""

    text = StringField(default="untitled")
    number = IntField()
    label = StringField(db_field="l")
    tags = ListField(StringField())
    raw_list = ListField()
    when = DateTimeField()
    part = EmbeddedDocumentField(LdPart)
    parts = EmbeddedDocumentListField(LdPart)
    target = ReferenceField(LdTarget)
    nested = ListField(ListField(IntField()))


class LdBags(Document):
    """Containers whose items to_python keeps: a dict, a map, an untyped list."""

    attributes = DictField()
    counters = MapField(IntField())
    raw_list = ListField()


class LdShapes(Document):
    """Field kinds whose to_python keeps any value, a null field with a
    default: a whole son of it becomes the document's data."""

    spot = GeoPointField()
    line = LineStringField()
    polygon = PolygonField()
    points = MultiPointField()
    lines = MultiLineStringField()
    polygons = MultiPolygonField()
    note = StringField(null=True, default="none")


class LdHolders(Document):
    """Decimal128, cached and dynamic values, containers of other field kinds."""

    money = Decimal128Field()
    cached = CachedReferenceField(LdTarget, fields=["name"])
    dynamic = DynamicField()
    emails = ListField(EmailField())
    target_refs = ListField(ReferenceField(LdTarget, dbref=True))
    anythings = ListField(GenericReferenceField())
    parts_by_key = DictField(EmbeddedDocumentField(LdPart))
    targets_by_key = MapField(ReferenceField(LdTarget))
    dicts = ListField(DictField())
    target = ReferenceField(LdTarget)


class LdNamed(Document):
    """A string primary key, and references to such ids."""

    name = StringField(primary_key=True)
    parent = ReferenceField("self")
    children = ListField(ReferenceField("self"))
    rank = IntField(null=True, default=lambda: 3)


# A hundred lists of strings: a loader checking their items one list nested in
# the other would pass Python's 100 levels of indentation, and load nothing.
LdWide = type(
    "LdWide",
    (Document,),
    {f"tags_{i}": ListField(StringField()) for i in range(100)},
)


# What a document holds besides its values: MongoEngine keeps it in slots and
# in the instance ``__dict__``; a LoadedState keeps the loaded values in its class.
STATE = ("_cls", "_initialised", "_created", "_changed_fields")


def assert_same(fast, slow) -> None:
    """Same class, state, values (with types), embedded links and stored form."""
    assert type(fast) is type(slow)
    for name in {*vars(fast), *vars(slow), *STATE} - {"_dynamic_fields"}:
        value = getattr(slow, name)
        if callable(value):  # get_<field>_display partials are per instance
            assert getattr(fast, name).keywords == value.keywords
        else:
            assert getattr(fast, name) == value, name
    assert fast._dynamic_fields.keys() == slow._dynamic_fields.keys()  # new fields
    assert list(fast._data) == list(slow._data)  # (in the same order)
    for name, value in slow._data.items():
        assert_same_value(fast._data[name], value, name)
        if isinstance(value, EmbeddedDocument):
            assert fast._data[name]._instance.id == fast.id
    assert dumped(fast) == dumped(slow)


def dumped(document) -> Any:
    """``document.to_mongo()``, or the type and message of its error (a value
    stored with another type may not dump, ours or MongoEngine's)."""
    try:
        return document.to_mongo()
    except Exception as error:
        return type(error), str(error)


def owner(embedded: EmbeddedDocument) -> tuple[type, Any] | None:
    """The class and id of the document ``embedded`` is linked to, if any."""
    linked = embedded._instance
    return None if linked is None else (linked.__class__, linked.pk)


def assert_same_value(fast, slow, where: str) -> None:
    assert type(fast) is type(slow), where
    if isinstance(slow, EmbeddedDocument):
        assert dumped(fast) == dumped(slow), where
        assert vars(fast) == vars(slow), where
        assert owner(fast) == owner(slow), where
    elif isinstance(slow, list | tuple):
        assert len(fast) == len(slow), where
        for fast_item, slow_item in zip(fast, slow, strict=True):
            assert_same_value(fast_item, slow_item, where)
    elif isinstance(slow, dict):
        assert fast.keys() == slow.keys(), where
        for key in slow:
            assert_same_value(fast[key], slow[key], f"{where}.{key}")
    elif isinstance(slow, decimal.Decimal):  # NaN too, and the same exponent
        assert str(fast) == str(slow), where
    else:
        assert fast == slow, where


# How the test aliases decode what the server returns (uuidRepresentation="standard").
CODEC = CodecOptions(uuid_representation=UuidRepresentation.STANDARD)


def stored(document) -> dict:
    """The raw document as the server returns it once ``document`` is saved,
    built in memory: its ``to_mongo()`` (with an ``_id``) through BSON."""
    if document.pk is None:
        document.pk = ObjectId()
    encoded = bson.encode(document.to_mongo(), codec_options=CODEC)
    return bson.decode(encoded, codec_options=CODEC)


async def saved(document) -> dict:
    """The raw document as the server returns it after a real save."""
    await document.async_save(validate=False)
    collection = await type(document)._async_get_collection()
    return await collection.find_one({"_id": document.id})


def full_document() -> LdEverything:
    target = LdTarget(id=ObjectId(), name="t")
    return LdEverything(
        text="hello",
        email="a@example.org",
        url="https://example.org",
        number=7,
        big=2**40,
        ratio=0.5,
        flag=True,
        amount=decimal.Decimal("3.14"),
        when=datetime.datetime(2024, 5, 6, 7, 8, 9),
        day=datetime.date(2024, 5, 6),
        token=uuid.uuid4(),
        other_id=ObjectId(),
        where=[1.5, 2.5],
        tags=["a", "b"],
        scores=[1, 2],
        sorted_tags=["b", "a"],
        raw_list=[1, "two", {"three": 3}, [4]],
        attributes={"a": 1, "nested": {"b": [1, 2]}},
        counters={"x": 1, "y": 2},
        part=LdPart(label="p", target=target),
        parts=[LdPart(label="q"), LdPart(label="r", count=3)],
        any_part=LdPart(label="generic"),
        target=target,
        target_ref=target,
        targets=[target, target],
        lazy=target,
        anything=target,
        lazy_anything=target,
        nested=[[1, 2], [3]],
    )


def test_eligibility() -> None:
    assert _plan(LdEverything) is not None
    assert _plan(LdSpecial) is not None
    for cls in (LdShapes, LdHolders, LdNamed, LdWithEnum, LdWithChoices, LdWithBinary):
        assert _plan(cls) is not None, cls
    # (An enum field converts twice, in _from_son and in __set__: only with a
    # standard lookup and no None value is that the same as once.)
    odd_enums = (LdWithLenientEnum, LdWithStaticEnum, LdWithNoneInEnum)
    for cls in (LdDynamic, LdWithComplexDate, *odd_enums):
        assert _plan(cls) is None, cls


async def test_every_field_type_loads_identically(async_alias: str) -> None:
    document = full_document()
    raw = await saved(document)
    # What the other tests build in memory is what the server returns.
    assert bson.encode(raw, codec_options=CODEC) == bson.encode(
        stored(document), codec_options=CODEC
    )
    assert_same(from_son(LdEverything, raw), LdEverything._from_son(raw))


def test_loaded_documents_share_their_state_until_it_changes() -> None:
    raw = stored(LdTarget(name="t"))
    first, second = from_son(LdTarget, raw), from_son(LdTarget, raw)
    assert vars(first) == {}  # nothing stored per document but _data
    first._created = True
    first.name = "changed"
    assert (first._created, first._changed_fields) == (True, ["name"])
    assert (second._created, second._changed_fields) == (False, [])
    assert_same(from_son(LdTarget, raw), LdTarget._from_son(raw))
    second._cls = "Other"
    assert from_son(LdTarget, raw)._cls == "LdTarget"


def test_a_documents_list_of_changes_lives_in_its_instance_dict() -> None:
    # Read there without a Python call; made on a loaded document's first read.
    loaded = from_son(LdTarget, stored(LdTarget(name="t")))
    changes = loaded._changed_fields
    assert vars(loaded) == {"_changed_fields": []}
    loaded.name = "changed"
    assert loaded._changed_fields is changes == ["name"]
    del loaded._changed_fields  # (made anew, empty, as before)
    assert loaded._changed_fields == []
    new = LdTarget(name="n")  # none until saved, as in MongoEngine
    with pytest.raises(AttributeError, match="'LdTarget' object has no attribute"):
        new._changed_fields  # noqa: B018
    assert not hasattr(new, "_changed_fields")
    new._changed_fields = ["name"]  # (MongoEngine's own assignment, as save's)
    assert vars(new)["_changed_fields"] == new._changed_fields == ["name"]


def test_loaded_documents_pickle_as_mongoengines() -> None:
    # Not LdEverything: MongoEngine's own unpickled documents hold their
    # embedded documents' owner as a dead weak proxy.
    raw = stored(LdTarget(name="t"))
    fast = pickle.loads(pickle.dumps(from_son(LdTarget, raw)))
    assert_same(fast, pickle.loads(pickle.dumps(LdTarget._from_son(raw))))


async def test_references_name_the_collection_switched_to() -> None:
    raw = stored(full_document())
    async with async_switch_collection(LdTarget, "ld_target_archive"):
        fast, slow = from_son(LdEverything, raw), LdEverything._from_son(raw)
    assert fast._data["target"] == DBRef("ld_target_archive", raw["target"])
    assert_same(fast, slow)


def test_joining_loader_puts_found_documents_in_place() -> None:
    raw = stored(full_document())
    target = LdTarget._from_son({"_id": raw["target"], "name": "t"})
    assert [field.name for field in plain_references(LdEverything)] == ["target"]
    taken_elsewhere = []
    found = {target.pk.binary: target}  # joins are keyed by an ObjectId's 12 bytes
    joining = joining_loader(LdEverything, [found], taken_elsewhere.append)

    fast, slow = joining(copy.deepcopy(raw)), LdEverything._from_son(raw)
    assert fast._data["target"] is target
    slow._data["target"] = target
    assert_same(fast, slow)
    nothing_found = joining_loader(LdEverything, [{}], taken_elsewhere.append)
    fast = nothing_found(copy.deepcopy(raw))
    assert_same(fast, LdEverything._from_son(raw))

    raw["target"] = DBRef("ld_target", target.pk)  # not stored as the field stores it
    assert joining(raw) is None
    assert taken_elsewhere == [raw]


def calls_counted(
    block: Callable[[], Any], names: tuple[str, ...], file_end: str
) -> int:
    """How many calls of functions named ``names`` in a file whose name ends
    with ``file_end`` ``block`` makes, counted by a profile hook (a patch
    would itself change the path)."""
    seen = [0]

    def hook(frame: FrameType, event: str, _: Any) -> None:
        code = frame.f_code
        if (
            event == "call"
            and code.co_name in names
            and code.co_filename.endswith(file_end)
        ):
            seen[0] += 1

    sys.setprofile(hook)
    try:
        block()
    finally:
        sys.setprofile(None)
    return seen[0]


def loader_calls(block: Callable[[], Any], cls: type = LdSimple) -> int:
    """The calls of generated loaders of ``cls`` (of a son or a batch, not
    their making) that ``block`` makes."""
    return calls_counted(block, ("load", "load_batch"), f"loader of {cls._class_name}>")


def test_a_batch_is_loaded_with_no_call_per_whole_son() -> None:
    """``materialise_all`` through an owning or joining loader takes each
    whole son in the loader's own loop (a query's results, a select_related
    level): one call of the loader for a batch of 40 sons, as for 10."""
    whole = simple_sons()[0]
    assert len(whole) == len(LdSimple._fields) and None not in whole.values()
    joins, _ = joined(LdSimple, whole)
    for load in (
        loader(LdSimple, owned=True),
        joining_loader(LdSimple, joins, loader(LdSimple, owned=True)),
    ):

        def calls(count: int, load: Callable[[dict], Any] = load) -> int:
            batch = [copy.deepcopy(whole) for _ in range(count)]
            return loader_calls(lambda: materialise_all(load, batch))

        assert calls(40) == calls(10) == 1


def test_a_batch_loads_as_its_sons_load_one_by_one() -> None:
    """Whole sons and the others (taken by the loader called for each), in
    any order: _from_son's documents, with the found ones joined in place."""
    sons = [*simple_sons(), simple_sons()[0], *reversed(simple_sons())]
    owned = materialise_all(loader(LdSimple, owned=True), copy.deepcopy(sons))
    assert len(owned) == len(sons)
    for document, son in zip(owned, sons, strict=True):
        assert_same(document, LdSimple._from_son(copy.deepcopy(son)))
    joins, found = joined(LdSimple, sons[0])
    joining = joining_loader(LdSimple, joins, owned.append)
    joined_batch = materialise_all(joining, copy.deepcopy(sons))
    for document, son in zip(joined_batch, sons, strict=True):
        if document is None:  # left to the fallback: a reference not a plain id
            continue
        expected = LdSimple._from_son(copy.deepcopy(son))
        for name, target in found.items():
            stored_id = son.get(LdSimple._fields[name].db_field)
            if type(stored_id) is ObjectId and stored_id == target.pk:
                assert document._data[name] is target
                expected._data[name] = target
        assert_same(document, expected)
    assert None not in joined_batch[:1]  # the whole son taken in the loop


async def test_a_mock_for_from_son_builds_each_result(async_alias: str) -> None:
    """A test's spy standing for a class's ``_from_son`` (a mock calling the
    real one) builds each result, as with MongoEngine's list(queryset): the
    ``batch`` a mock makes up when asked is not taken for a batch loader."""
    names = [f"t{i}" for i in range(3)]
    ids = [(await LdTarget(name=name).async_save()).pk for name in names]
    ordered = LdTarget.objects.order_by("name")
    real = LdTarget._from_son
    with mock.patch.object(LdTarget, "_from_son", side_effect=real) as spy:
        listed = await ordered.async_to_list()
        selected = await ordered.async_select_related()
        by_id = await LdTarget.objects.async_in_bulk(ids)
        got = await LdTarget.objects.async_get(name="t1")
    for documents in (listed, selected, [by_id[id_] for id_ in ids]):
        assert [type(document) for document in documents] == [LdTarget] * 3
        assert [document.name for document in documents] == names
    assert type(got) is LdTarget and got.name == "t1"
    assert spy.call_count == 10


class LdSwapped(Document):
    """Each field stored under the other's name."""

    target = ReferenceField(LdTarget, db_field="label")
    label = StringField(db_field="target")


def joined(cls: type, raw: dict) -> tuple[list, dict]:
    """Joins for ``cls``'s plain references in ``raw``, each holding a new
    document for the id stored there (if an ObjectId); and those documents
    by field name."""
    joins, documents = [], {}
    for field in plain_references(cls):
        id_, by_bytes = raw.get(field.db_field), {}
        if type(id_) is ObjectId:
            document = LdTarget._from_son({"_id": id_, "name": field.name})
            by_bytes[id_.binary] = documents[field.name] = document
        joins.append(by_bytes)
    return joins, documents


def test_joining_loader_takes_sons_over_and_builds_mongoengines_documents() -> None:
    """Handed a son, the joining loader gives _from_son's document with the
    found documents in place of the references (and _data in the owning
    loader's order), renamed fields included; the son may become its _data."""
    sons = [(LdFlat, raw) for raw in flat_sons()]
    sons += [(LdSimple, raw) for raw in simple_sons()]
    sons += [(LdEverything, stored(full_document()))]
    for cls, raw in sons:
        joins, documents = joined(cls, raw)
        son = copy.deepcopy(raw)
        fast = joining_loader(cls, joins, loader(cls, owned=True))(son)
        slow = cls._from_son(copy.deepcopy(raw))
        slow._data.update(documents)
        assert_same(fast, slow)
        owned = loader(cls, owned=True)(copy.deepcopy(raw))
        assert list(fast._data) == list(owned._data)  # in the owning loader's order
        for name, document in documents.items():
            assert fast._data[name] is document


def test_a_class_whose_renames_clash_loads_as_mongoengine_does() -> None:
    """MongoEngine renames stored names in place, so where a field's name is
    another's stored name one value overwrites the other: only its own path
    gives its result, on every alias."""
    target = LdTarget(id=ObjectId())
    raw = stored(LdSwapped(target=target, label="l"))
    assert raw == {"_id": raw["_id"], "label": target.pk, "target": "l"}
    assert _plan(LdSwapped) is None
    assert plain_references(LdSwapped) == []  # select_related does not join it
    slow = LdSwapped._from_son(copy.deepcopy(raw))
    assert slow.target is None  # MongoEngine's own loss
    for load in (loader(LdSwapped), loader(LdSwapped, owned=True)):
        assert_same(load(copy.deepcopy(raw)), slow)


def test_missing_and_null_fields_get_the_same_defaults() -> None:
    raw = stored(LdEverything(number=1))
    raw["tags"] = None
    raw["ratio"] = None
    raw["text"] = None
    del raw["scores"]
    fast, slow = from_son(LdEverything, raw), LdEverything._from_son(raw)
    assert_same(fast, slow)
    assert (fast.text, fast.scores, fast.tags, fast.ratio) == (
        "untitled",
        [0],
        [],
        None,
    )


def test_subclass_dispatch_through_cls() -> None:
    document = full_document()
    names = [name for name in document._fields_ordered if name != "_cls"]
    special = LdSpecial(**{name: document[name] for name in names})
    special.extra = "x"
    raw = stored(special)
    fast = from_son(LdEverything, raw)
    assert type(fast) is LdSpecial
    assert_same(fast, LdEverything._from_son(raw))


async def test_a_class_with_a_hundred_lists_loads_as_mongoengine(
    async_alias: str,
) -> None:
    """Each list of a wide class checked whole, one after the other: its
    documents load (a query's results, one by one and in a batch), as
    MongoEngine's _from_son loads them, one with an item of another type in
    its 51st list too."""
    values = {f"tags_{i}": [f"t{i}"] for i in range(100)}
    raws = [
        await saved(LdWide(**values)),
        await saved(LdWide(**{**values, "tags_50": ["t50", 5]})),
    ]
    listed = await LdWide.objects.order_by("_id").async_to_list()
    got = await LdWide.objects.async_get(pk=raws[1]["_id"])
    for loaded, raw in zip([*listed, got], [*raws, raws[1]], strict=True):
        assert_same(loaded, LdWide._from_son(copy.deepcopy(raw)))
        assert loaded.tags_99 == ["t99"]
    assert got.tags_50 == ["t50", 5]


def test_containers_kept_whole_give_mongoengines_result() -> None:
    """A dict, or a list without an item field, of values to_python keeps is
    kept whole; any other item (bytes become a list of ints, a dict with a
    ``_cls`` a document, a string an int in an int map) converts."""
    when, oid = datetime.datetime(2024, 1, 2), ObjectId()
    kept = {"a": 1, "b": "x", "c": None, "d": 2.5, "e": True, "f": when, "g": oid}
    sons = [
        {"attributes": kept, "raw_list": list(kept.values()), "counters": {"n": 1}},
        {"attributes": {"a": b"by"}, "raw_list": [b"by", 1]},
        {"attributes": {"a": bson.Int64(5), "b": bson.Decimal128("1.5")}},
        {"attributes": {"part": {"_cls": "LdPart", "label": "x"}}},
        {"raw_list": [{"_cls": "LdPart", "label": "y"}], "counters": {"n": "2"}},
        {"attributes": [1, 2], "raw_list": {"a": 1}, "counters": {"n": None}},
    ]
    for values in sons:
        # LdBags: every field stored, the owning loader's shortest path.
        whole = {"attributes": {}, "raw_list": [], "counters": {}, **values}
        for cls, stored_values in ((LdEverything, values), (LdBags, whole)):
            son = {"_id": ObjectId(), **stored_values}
            expected = cls._from_son(copy.deepcopy(son))
            assert_same(from_son(cls, copy.deepcopy(son)), expected)
            assert_same(loader(cls, owned=True)(copy.deepcopy(son)), expected)


def test_enums_choices_and_fallbacks_give_mongoengines_result() -> None:
    sons = [
        (LdWithEnum, {"colour": "red"}),
        (LdWithEnum, {"colour": "blue"}),  # not a member: kept as stored
        (LdWithEnum, {"colour": None}),
        (LdWithChoices, {"size": "M"}),
        (LdWithChoices, {"size": "XL"}),
        (LdWithBinary, {"data": b"bytes", "blobs": [b"a", Binary(b"b", 5)]}),
        (LdWithBinary, {"data": Binary(b"uuid", 4)}),
        # Not from the decoder, but _from_son takes it: stored as bytes.
        (LdWithBinary, {"data": bytearray(b"made"), "blobs": [bytearray(b"kept")]}),
        (LdWithLenientEnum, {"colour": "rouge"}),
        (LdWithNoneInEnum, {"colour": None}),  # MongoEngine's __set__: NONE
        (LdDynamic, {"name": "d", "anything_else": [1, 2]}),
    ]
    for cls, son in sons:
        son = {"_id": ObjectId(), **son}
        expected = cls._from_son(copy.deepcopy(son))
        assert_same(from_son(cls, copy.deepcopy(son)), expected)
        assert_same(loader(cls, owned=True)(copy.deepcopy(son)), expected)
    raw = {"_id": ObjectId(), "size": "M"}
    assert from_son(LdWithChoices, raw).get_size_display() == "M"
    assert from_son(LdWithNoneInEnum, {"colour": None}).colour is LdNoColour.NONE


def test_unknown_keys() -> None:
    raw = stored(LdLoose(name="x"))
    raw["surprise"] = 1
    assert_same(from_son(LdLoose, raw), LdLoose._from_son(raw))

    raw = stored(LdTarget(name="x"))
    raw["surprise"] = 1
    with pytest.raises(FieldDoesNotExist) as fast_error:
        from_son(LdTarget, raw)
    with pytest.raises(FieldDoesNotExist) as slow_error:
        LdTarget._from_son(raw)
    assert str(fast_error.value) == str(slow_error.value)


def test_an_unknown_key_in_place_of_a_field_is_seen() -> None:
    """As many keys as fields, one of them unknown: not taken for a full son."""
    raw = {"_id": ObjectId(), "surprise": 1}
    assert len(raw) == len(LdTarget._fields)
    with pytest.raises(FieldDoesNotExist) as fast_error:
        from_son(LdTarget, raw)
    with pytest.raises(FieldDoesNotExist) as slow_error:
        LdTarget._from_son(raw)
    assert str(fast_error.value) == str(slow_error.value)
    for raw in ({"_id": ObjectId(), "_cls": "LdTarget"}, {"_id": None, "name": "n"}):
        assert_same(from_son(LdTarget, raw), LdTarget._from_son(raw))


def test_values_of_unexpected_types() -> None:
    raw = stored(LdEverything())
    raw.update(number="12", ratio="0.25", flag=1, text=b"bytes", tags=["x", 5])
    raw["other_id"] = str(ObjectId())
    raw["target"] = DBRef("ld_target", ObjectId())
    assert_same(from_son(LdEverything, raw), LdEverything._from_son(raw))


def test_no_dereference_loading_is_mongoengines() -> None:
    raw = stored(full_document())
    fast = from_son(LdEverything, raw, _auto_dereference=False)
    slow = LdEverything._from_son(raw, _auto_dereference=False)
    assert vars(fast).keys() == vars(slow).keys()
    assert fast.to_mongo() == slow.to_mongo()


def test_init_signal_receivers_take_mongoengines_path() -> None:
    seen = []

    def receiver(sender, document, **kwargs):
        seen.append(document)

    mongoengine.signals.post_init.connect(receiver, sender=LdTarget)
    try:
        document = from_son(LdTarget, {"_id": ObjectId(), "name": "n"})
    finally:
        mongoengine.signals.post_init.disconnect(receiver, sender=LdTarget)
    assert seen == [document]


def variants(raw: dict) -> list[dict]:
    """A whole son, the same in another key order, with values of other types
    (left to ``to_python``), then with a field missing and with fields null."""
    shuffled = dict(reversed(list(raw.items())))
    retyped = {**raw, "number": 7.0, "tags": ["x", 5], "l": b"bytes"}
    lists_retyped = {**raw, "tags": ("x",)}
    missing = {key: value for key, value in raw.items() if key != "tags"}
    null = {**raw, "text": None, "target": None}
    return [raw, shuffled, retyped, lists_retyped, missing, null]


def flat_sons() -> list[dict]:
    """Sons of LdFlat, which has fields its to_python always converts."""
    target = LdTarget(id=ObjectId(), name="t")
    flat = LdFlat(
        text="hello",
        number=7,
        label="l",
        tags=["a", "b"],
        raw_list=[1, "two", {"three": 3}],
        when=datetime.datetime(2024, 5, 6, 7, 8, 9),
        part=LdPart(label="p", target=target),
        parts=[LdPart(label="q")],
        target=target,
        nested=[[1, 2], [3]],
    )
    return variants(stored(flat))


def simple_sons() -> list[dict]:
    """Sons of LdSimple, whose whole sons of kept types take no conversion."""
    simple = LdSimple(
        text="hello",
        number=7,
        ratio=0.5,
        flag=True,
        label="l",
        tags=["a", "b"],
        anything={"a": [1]},
        target=LdTarget(id=ObjectId()),
        source=LdTarget(id=ObjectId()),
        other_id=ObjectId(),
    )
    raw = stored(simple)
    # One value each that only the items' or the field's own check sees.
    return [*variants(raw), {**raw, "tags": ["x", b"y"]}, {**raw, "anything": None}]


def test_owning_loader_builds_mongoengines_documents() -> None:
    sons = [(LdFlat, raw) for raw in flat_sons()]
    sons += [(LdSimple, raw) for raw in simple_sons()]
    for cls, raw in [*sons, (LdEverything, stored(full_document()))]:
        fast = loader(cls, owned=True)(copy.deepcopy(raw))
        slow = cls._from_son(copy.deepcopy(raw))
        assert_same(fast, slow)
    for cls, raw in sons:  # a whole son's _data in _from_son's order too
        if len(raw) == len(cls._fields) and None not in raw.values():
            fast = loader(cls, owned=True)(copy.deepcopy(raw))
            assert list(fast._data) == list(cls._from_son(copy.deepcopy(raw))._data)


def test_owning_loader_builds_subclasses_from_their_cls() -> None:
    base = stored(LdKind(name="k", tags=["a"]))
    sub = stored(LdSubKind(name="s", tags=["b"], level=2))
    other = {**base, "_cls": "LdOther"}  # MongoEngine's error, both ways
    kept = [base, sub, dict(reversed(list(sub.items())))]  # types kept as they are
    for index, raw in enumerate([*kept, {**sub, "level": 2.0}]):
        fast = loader(LdKind, owned=True)(copy.deepcopy(raw))
        slow = LdKind._from_son(copy.deepcopy(raw))
        assert_same(fast, slow)
        if index < len(kept):  # _data in _from_son's order too
            assert list(fast._data) == list(slow._data)
    with pytest.raises(NotRegistered) as fast_error:
        loader(LdKind, owned=True)(copy.deepcopy(other))
    with pytest.raises(NotRegistered) as slow_error:
        LdKind._from_son(copy.deepcopy(other))
    assert str(fast_error.value) == str(slow_error.value)


class LdRenamedKind(LdKind):
    """A subclass with a field of its own stored under another name."""

    rank = IntField(db_field="r")


def test_a_son_naming_another_class_is_renamed_by_the_class_asked_for() -> None:
    """MongoEngine renames a son's keys by the class it was asked to load it
    as, then builds the class its ``_cls`` names: a key only one of them
    renames must stay as MongoEngine leaves it (here ``rank`` is not
    converted, since LdKind does not rename it to ``r``)."""
    raw = {**stored(LdRenamedKind(name="k", rank=3)), "rank": "12"}
    del raw["r"]
    for cls in (LdKind, LdRenamedKind):
        slow = cls._from_son(copy.deepcopy(raw))
        for load in (loader(cls), loader(cls, owned=True)):
            assert_same(load(copy.deepcopy(raw)), slow)
    assert LdKind._from_son(copy.deepcopy(raw)).rank == "12"
    assert LdRenamedKind._from_son(copy.deepcopy(raw)).rank == 12
    parent = {**stored(LdKind(name="k")), "rank": "12"}  # LdKind's own _cls
    with pytest.raises(FieldDoesNotExist) as fast_error:
        loader(LdRenamedKind, owned=True)(copy.deepcopy(parent))
    with pytest.raises(FieldDoesNotExist) as slow_error:
        LdRenamedKind._from_son(copy.deepcopy(parent))
    assert str(fast_error.value) == str(slow_error.value)


def test_a_subclass_defined_after_loading_is_loaded_as_itself() -> None:
    """The owning loader of a class with neither references nor subclasses
    is made once; a subclass defined later, or a son naming its class the
    old way, must still load as MongoEngine loads it."""

    class LdLateBase(Document):
        name = StringField()
        meta = {"allow_inheritance": True}

    base = stored(LdLateBase(name="base"))
    assert loader(LdLateBase, owned=True) is loader(LdLateBase, owned=True)
    assert_same(loader(LdLateBase, owned=True)(dict(base)), LdLateBase._from_son(base))

    class LdLateChild(LdLateBase):
        level = IntField()

    child = stored(LdLateChild(name="child", level=3))
    for cls in (LdLateBase, LdLateChild):  # the class asked for, or its subclass
        fast = loader(cls, owned=True)(copy.deepcopy(child))
        assert type(fast) is LdLateChild
        assert_same(fast, cls._from_son(copy.deepcopy(child)))
    # Named the old way (no parents): MongoEngine still finds the class.
    old_style = {**stored(LdLateChild(name="old", level=1)), "_cls": "LdLateChild"}
    for cls in (LdLateBase, LdLateChild):
        fast = loader(cls, owned=True)(copy.deepcopy(old_style))
        assert type(fast) is LdLateChild
        assert_same(fast, cls._from_son(copy.deepcopy(old_style)))


def test_loading_leaves_the_callers_son_as_it_was() -> None:
    for cls, raw in [(LdFlat, raw) for raw in flat_sons()] + [
        (LdSimple, raw) for raw in simple_sons()
    ]:
        kept = copy.deepcopy(raw)
        from_son(cls, raw)
        assert raw == kept


def test_loaded_documents_track_changes_and_new_ones_do_not() -> None:
    """As in MongoEngine: ``_changed_fields`` is there from loading on, and
    only from saving on for a document built by ``__init__``."""
    whole, partial = stored(LdTarget(name="t")), {"_id": ObjectId()}
    for raw in (whole, partial):
        for document in (from_son(LdTarget, raw), LdTarget._from_son(raw)):
            assert document._changed_fields == []
            document.name = "changed"
            assert document._changed_fields == ["name"]
    for new in (LdTarget(name="new"), LdPlainTarget(name="new")):
        new.name = "changed"
        assert not hasattr(new, "_changed_fields")


class LdOwnInit(Document):
    """A model setting up each instance in its own ``__init__``."""

    meta = {"collection": "ld_own_init"}
    name = StringField()

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.cache: dict = {"built": True}


async def test_a_models_own_init_runs_for_documents_loaded_async(
    async_alias: str,
) -> None:
    """On an async alias too, each loaded document goes through the model's
    ``__init__``, as MongoEngine's ``_from_son`` builds it."""
    collection = await LdOwnInit._async_get_collection()
    await collection.insert_many([{"name": "a"}, {"name": "b"}])
    first = await LdOwnInit.objects.async_first()
    listed = await LdOwnInit.objects.order_by("name").async_to_list()
    streamed = [document async for document in LdOwnInit.objects]
    assert [d.cache for d in [first, *listed, *streamed]] == [{"built": True}] * 5
    assert [d.name for d in listed] == ["a", "b"]
    assert _plan(LdOwnInit) is None


class LdCachedAuthor(Document):
    name = StringField()


class LdCachedBook(Document):
    author = ReferenceField(LdCachedAuthor)


def test_a_references_first_read_keeps_the_plans() -> None:
    """The target class a reference field caches at its first read (in its
    ``__dict__``, which the plans' watch compares) is no changed setting:
    the plans are kept, not built again for every class."""
    loader(LdCachedBook)  # the plans built, and watched
    plan, target_plan = _plan(LdCachedBook), _plan(LdCachedAuthor)
    field = LdCachedBook._fields["author"]
    assert "_concrete_type" not in vars(field)
    assert field._concrete_type is LdCachedAuthor  # what a first read caches
    plan_watch.refresh(LdCachedBook)
    assert _plan(LdCachedBook) is plan
    assert _plan(LdCachedAuthor) is target_plan
    field.required = True  # a setting does change them
    plan_watch.refresh(LdCachedBook)
    assert _plan(LdCachedBook) is not plan
    field.required = False
