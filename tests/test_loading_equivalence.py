"""Any stored son loads through our loaders as MongoEngine's ``_from_son`` loads it.

test_loading.py checks chosen sons; here Hypothesis draws them. Each field of a
model is absent, null, stored as the field stores it, or holds a value of another
type; the keys come in any order, with sometimes an unknown key, a field stored
under its attribute name, or a ``_cls`` naming this class, a subclass, another
class or none; everything goes through BSON as the server returns it. The plain
loader, the owning loader and the joining loader (finding nothing, or a document
for each plain reference) must give MongoEngine's document, or raise its error.
The models are on an async alias, where loading does no I/O (a cached reference
is kept as stored, where MongoEngine's sync field would fetch the document).
"""

from __future__ import annotations

import copy
import datetime
import uuid
from collections.abc import Callable
from typing import Any

import bson
from bson import Binary, DBRef, Decimal128, ObjectId
from bson.int64 import Int64
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from mongoengine.base import BaseField
from mongoengine.base.fields import GeoJsonBaseField

from mongoengine_async import (
    BinaryField,
    BooleanField,
    CachedReferenceField,
    DateTimeField,
    Decimal128Field,
    DecimalField,
    DictField,
    Document,
    DynamicField,
    EmbeddedDocumentField,
    EnumField,
    FloatField,
    GenericEmbeddedDocumentField,
    GenericReferenceField,
    GeoPointField,
    IntField,
    LazyReferenceField,
    ListField,
    LongField,
    ObjectIdField,
    ReferenceField,
    StringField,
    UUIDField,
)
from mongoengine_async.batches import materialise_all
from mongoengine_async.from_bson import _plan, joining_loader, loader, plain_references
from test_loading import (
    CODEC,
    LdEverything,
    LdFlat,
    LdHolders,
    LdKind,
    LdLoose,
    LdNamed,
    LdPart,
    LdRenamedKind,
    LdShapes,
    LdSimple,
    LdSpecial,
    LdSubKind,
    LdSwapped,
    LdTarget,
    LdWithBinary,
    assert_same,
    joined,
)
from test_to_bson import TbEnums, TbScalars, outcome

MODELS = (
    LdSimple,
    LdFlat,
    LdEverything,
    LdSpecial,
    LdKind,
    LdSubKind,
    LdRenamedKind,
    LdTarget,
    LdLoose,
    LdSwapped,
    LdShapes,
    LdHolders,
    LdNamed,
    LdWithBinary,
    TbEnums,  # enums alone, in lists and maps, with choices
    TbScalars,  # choices (display methods), bounds, a regex
)
# What a _cls may name: a class of the hierarchy, another class, none.
CLASS_NAMES = (
    "LdKind",
    "LdKind.LdSubKind",
    "LdKind.LdRenamedKind",
    "LdEverything",
    "LdEverything.LdSpecial",
    "LdFlat",
    "LdNowhere",
)

OIDS = st.builds(ObjectId)
SOME_ID = ObjectId("5f" * 12)
JUNK = st.sampled_from(
    [
        0,
        7,
        -1,
        Int64(5),
        2**40,
        2.5,
        3.0,
        True,
        False,
        "",
        "abc",
        "5f" * 12,
        b"by",
        [],
        ["a"],
        [1, "x"],
        {},
        {"k": 1},
        SOME_ID,
        datetime.datetime(2024, 1, 2, 3, 4, 5),
        Decimal128("1.5"),
        DBRef("ld_target", SOME_ID),
        uuid.UUID(int=1),
    ]
)
TEXT = st.text(alphabet="abxyz ", max_size=5)
KEYS = st.text(alphabet="abk", min_size=1, max_size=3)
DATES = st.datetimes(
    min_value=datetime.datetime(1990, 1, 1), max_value=datetime.datetime(2040, 1, 1)
).map(lambda d: d.replace(microsecond=d.microsecond // 1000 * 1000))
FLOATS = st.floats(allow_nan=False, allow_infinity=False)
ANY = st.one_of(TEXT, st.integers(-9, 9), FLOATS, st.booleans(), st.none(), JUNK)


def stored_values(field: BaseField, null: bool = True) -> st.SearchStrategy:
    """A value stored for ``field``: as the field stores it, null, or junk."""
    stored = st.one_of(stored_as_the_field_stores(field), JUNK)
    return st.one_of(stored, st.none()) if null else stored


def stored_as_the_field_stores(field: BaseField) -> st.SearchStrategy:
    if isinstance(field, ReferenceField):
        ids = stored_as_the_field_stores(field.document_type.id)
        if not field.dbref:
            return ids
        collection = field.document_type._get_collection_name()
        return ids.map(lambda id_: DBRef(collection, id_))
    if isinstance(field, LazyReferenceField):
        return OIDS
    if isinstance(field, GenericReferenceField):  # lazy ones too
        return OIDS.map(
            lambda oid: {"_cls": "LdTarget", "_ref": DBRef("ld_target", oid)}
        )
    if isinstance(field, CachedReferenceField):
        return cached_references()
    if isinstance(field, EmbeddedDocumentField):
        return parts()
    if isinstance(field, GenericEmbeddedDocumentField):
        return parts().map(lambda part: {**part, "_cls": "LdPart"})
    if isinstance(field, ListField):
        inner = field.field
        items = ANY if inner is None else stored_values(inner, null=takes_null(inner))
        return st.lists(items, max_size=3)
    if isinstance(field, DictField):  # MapField too
        inner = field.field
        items = ANY if inner is None else stored_values(inner, null=takes_null(inner))
        return st.dictionaries(KEYS, items, max_size=2)
    if isinstance(field, GeoJsonBaseField):
        return geo_json(field._type)
    if isinstance(field, GeoPointField):
        return st.lists(FLOATS, max_size=3)  # (x, y), or not two coordinates
    if isinstance(field, Decimal128Field):
        return DECIMALS
    if isinstance(field, DynamicField):
        return dynamic_values()
    if isinstance(field, EnumField):  # a member's value, or not one
        values = [member.value for member in field._enum_cls]
        return st.sampled_from([*values, "blue", 3, "1"])
    if field.choices and isinstance(field.choices[0], tuple):
        return st.sampled_from([key for key, _ in field.choices] + ["XL"])
    if field.choices:
        return st.sampled_from([*field.choices, 9])
    if isinstance(field, StringField):
        return TEXT
    if isinstance(field, IntField | LongField):
        return st.integers(-(2**40), 2**40)
    if isinstance(field, FloatField | DecimalField):
        return FLOATS
    if isinstance(field, BooleanField):
        return st.booleans()
    if isinstance(field, DateTimeField):  # DateField too
        return DATES
    if isinstance(field, UUIDField):
        return st.uuids()
    if isinstance(field, BinaryField):  # subtype 0 decodes as bytes
        return st.binary(max_size=4).flatmap(
            lambda data: st.sampled_from([data, Binary(data, 5)])
        )
    if isinstance(field, ObjectIdField):
        return OIDS
    return ANY


def takes_null(field: BaseField) -> bool:
    """Whether a null item of a container of ``field`` is drawn: not for a
    reference to an ObjectId, for which MongoEngine makes up a new ObjectId
    (``ObjectId(None)``), on both paths, each its own."""
    if not isinstance(field, ReferenceField) or field.dbref:
        return True
    return not isinstance(field.document_type.id, ObjectIdField)


# Decimal128 values: ordinary, signed zero, the extremes, NaN and infinities.
SPECIAL_DECIMALS = ("-0", "1E+6144", "-1E-6176", "9.9999999999999999E+6144")
NOT_NUMBERS = ("NaN", "-NaN", "sNaN", "Infinity", "-Infinity")
DECIMALS = st.one_of(
    st.decimals(allow_nan=False, places=3, min_value=-(10**9), max_value=10**9),
    st.sampled_from((*SPECIAL_DECIMALS, *NOT_NUMBERS)),
).map(Decimal128)

# The coordinates of each GeoJSON type: how many lists deep its points are.
GEO_DEPTHS = {
    "Point": 0,
    "LineString": 1,
    "MultiPoint": 1,
    "Polygon": 2,
    "MultiLineString": 2,
    "MultiPolygon": 3,
}


def geo_json(kind: str) -> st.SearchStrategy:
    """A stored GeoJSON value of ``kind``: a GeoJSON object (of this type or
    another, perhaps missing a key or with one more), the bare coordinates
    (the legacy form), points of one or three coordinates among them."""
    coordinates: st.SearchStrategy = st.lists(FLOATS, min_size=1, max_size=3)
    for _ in range(GEO_DEPTHS[kind]):
        coordinates = st.lists(coordinates, max_size=2)
    kinds = st.sampled_from([kind, kind, "Point", "Polygon", "Nowhere"])
    whole = st.fixed_dictionaries(
        {"type": kinds}, optional={"coordinates": coordinates, "crs": TEXT}
    )
    return st.one_of(whole, coordinates)


def cached_references() -> st.SearchStrategy:
    """A stored cached reference: the id and cached fields, or a malformed one
    (no id, an id of another type, an unknown key)."""
    fields = {"name": TEXT, "surprise": ANY}
    cached = st.fixed_dictionaries({"_id": OIDS}, optional=fields)
    malformed = st.fixed_dictionaries({}, optional={**fields, "_id": ANY})
    return st.one_of(cached, cached, malformed)


def dynamic_values() -> st.SearchStrategy:
    """What a DynamicField may hold: anything, containers of anything, an
    embedded document or a generic reference as stored (its ``_cls`` loads
    it), a ``_cls`` naming no class, a document stored whole."""
    plain = st.one_of(
        ANY, st.lists(ANY, max_size=3), st.dictionaries(KEYS, ANY, max_size=2)
    )
    classed = st.one_of(
        parts().map(lambda part: {**part, "_cls": "LdPart"}),
        stored_as_the_field_stores(GenericReferenceField()),
        st.fixed_dictionaries({"_cls": st.just("LdNowhere")}, optional={"k": ANY}),
        st.fixed_dictionaries(
            {"_cls": st.just("LdTarget"), "_id": OIDS}, optional={"name": TEXT}
        ),
    )
    return st.one_of(plain, plain, classed)


def parts() -> st.SearchStrategy:
    """A stored LdPart: some of its fields, perhaps an unknown key."""
    optional = {name: stored_values(LdPart._fields[name]) for name in LdPart._fields}
    return st.fixed_dictionaries({}, optional={**optional, "surprise": ANY})


HOW = ("absent", "null", "stored", "stored", "junk")


@st.composite
def sons(draw: st.DrawFn) -> tuple[type, dict[str, Any]]:
    """A model and a son of it, as the server returns one: sometimes a whole
    one, every field stored (the owning loader's shortest path)."""
    cls = draw(st.sampled_from(MODELS))
    whole = draw(st.integers(0, 4)) == 0
    son: dict[str, Any] = {}
    for name, field in cls._fields.items():
        how = "stored" if whole else draw(st.sampled_from(HOW))
        if how == "absent":
            continue
        if how == "null":
            value = None
        elif how == "junk":
            value = draw(JUNK)
        elif name == "_cls":
            value = draw(st.sampled_from(CLASS_NAMES))
        else:
            value = draw(stored_as_the_field_stores(field))
        son[field.db_field] = value
        if field.db_field != name:  # stored under its name instead, or as well
            where = draw(st.sampled_from(("stored", "name", "both")))
            if where == "name":
                son[name] = son.pop(field.db_field)
            elif where == "both":
                son[name] = draw(stored_values(field))
    if draw(st.integers(0, 9)) == 0:
        son["surprise"] = draw(ANY)
    if "_cls" not in cls._fields and draw(st.integers(0, 9)) == 0:
        son["_cls"] = draw(st.sampled_from((cls._class_name, *CLASS_NAMES)))
    order = draw(st.permutations(list(son)))
    encoded = bson.encode({key: son[key] for key in order}, codec_options=CODEC)
    return cls, bson.decode(encoded, codec_options=CODEC)


EXAMPLES = settings(
    max_examples=400,
    deadline=None,
    derandomize=True,
    database=None,
    # The alias is connected once per test: loading does no I/O.
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)


def loaded(load: Callable[[dict], Any], son: dict) -> tuple[str, Any]:
    """What ``load`` gives for a copy of ``son``: ("ok", document), or the
    error as test_to_bson's ``outcome`` describes it."""
    return outcome(lambda: load(copy.deepcopy(son)))


def assert_loads_alike(fast: tuple[str, Any], slow: tuple[str, Any]) -> None:
    """The same document, or the same error (type, message)."""
    if slow[0] == "raised":
        assert fast == slow
    else:
        assert fast[0] == "ok", fast
        assert_same(fast[1], slow[1])


def test_the_models_have_loaders() -> None:
    """Else the tests below compare _from_son with itself (LdSwapped: a field
    named as another is stored, which only _from_son loads as it does)."""
    assert [cls for cls in MODELS if _plan(cls) is None] == [LdSwapped]


@given(sons())
@EXAMPLES
def test_a_son_loads_as_from_son_loads_it(
    async_alias: str, drawn: tuple[type, dict]
) -> None:
    cls, son = drawn
    slow = loaded(cls._from_son, son)
    kept = copy.deepcopy(son)
    plain = loader(cls)
    assert_loads_alike(outcome(lambda: plain(son)), slow)  # the caller's son:
    assert son == kept  # left as it was
    assert_loads_alike(loaded(loader(cls, owned=True), son), slow)


@given(st.lists(sons(), min_size=1, max_size=8))
@EXAMPLES
def test_a_batch_loads_as_from_son_loads_each(
    async_alias: str, drawn: list[tuple[type, dict]]
) -> None:
    """A query's results, loaded in one go (the owning loader's batch): the
    sons of one class each as _from_son loads it, or its error."""
    for cls in {cls for cls, _ in drawn}:
        batch = [son for of, son in drawn if of is cls]
        slow = [loaded(cls._from_son, son) for son in batch]
        fast = outcome(
            lambda cls=cls, batch=batch: materialise_all(
                loader(cls, owned=True), copy.deepcopy(batch)
            )
        )
        failed = [result for result in slow if result[0] == "raised"]
        if failed:  # the first son that fails raises for the whole batch
            assert fast == failed[0]
            continue
        assert fast[0] == "ok", fast
        for document, expected in zip(fast[1], slow, strict=True):
            assert_loads_alike(("ok", document), expected)


@given(sons())
@EXAMPLES
def test_a_son_loads_joined_as_from_son_loads_it(
    async_alias: str, drawn: tuple[type, dict]
) -> None:
    """Joined: MongoEngine's document with the found documents in place; a son
    the joining loader leaves goes to its fallback (select_related loads it
    with the owning loader, checked above)."""
    cls, son = drawn
    if not plain_references(cls):
        return
    left = []
    nothing_found = [{}] * len(plain_references(cls))
    for joins, documents in (joined(cls, son), (nothing_found, {})):
        fast = loaded(joining_loader(cls, joins, left.append), son)
        if fast == ("ok", None):  # left to the fallback
            assert left.pop() == son
            continue
        slow = loaded(cls._from_son, son)
        if slow[0] == "ok":
            slow[1]._data.update(documents)
        assert_loads_alike(fast, slow)


class LeCachedTarget(Document):
    name = StringField()


class LeCachedThenPart(Document):
    """A cached reference, then a field whose value may fail to load."""

    cached = CachedReferenceField(LeCachedTarget, fields=["name"])
    part = EmbeddedDocumentField(LdPart)


def test_a_failing_load_fetches_each_cached_reference_once(
    sync_default: Any, sync_command_log: Any
) -> None:
    """On a sync alias a cached reference stored as a dict is fetched when
    loaded; a son whose later field fails to load fetches it once, as
    MongoEngine's ``_from_son`` does, and raises its error."""
    target = LeCachedTarget(name="x").save()
    son = {"_id": ObjectId(), "cached": {"_id": target.id, "name": "x"}, "part": "?"}
    sync_command_log.clear()
    slow = loaded(LeCachedThenPart._from_son, son)
    assert slow[0] == "raised" and sync_command_log.count("find") == 1
    for load in (loader(LeCachedThenPart), loader(LeCachedThenPart, owned=True)):
        sync_command_log.clear()
        assert loaded(load, son) == slow
        assert sync_command_log.count("find") == 1


class LeCachedListThenPart(Document):
    """Cached references in a list, a map and nested lists, then a field
    that may fail."""

    listed = ListField(CachedReferenceField(LeCachedTarget, fields=["name"]))
    mapped = DictField(CachedReferenceField(LeCachedTarget, fields=["name"]))
    nested = ListField(ListField(CachedReferenceField(LeCachedTarget)))
    part = EmbeddedDocumentField(LdPart)


def test_a_failing_load_fetches_each_listed_cached_reference_once(
    sync_default: Any, sync_command_log: Any
) -> None:
    """Cached references in a list, a map or a list of lists, each stored as
    a dict, are fetched once by a load that then fails, as by MongoEngine."""
    target = LeCachedTarget(name="x").save()
    cached = {"_id": target.id, "name": "x"}
    son = {
        "_id": ObjectId(),
        "listed": [cached, cached],
        "mapped": {"a": cached},
        "nested": [[cached], []],
        "part": "?",
    }
    sync_command_log.clear()
    slow = loaded(LeCachedListThenPart._from_son, son)
    assert slow[0] == "raised" and sync_command_log.count("find") == 4
    for load in (
        loader(LeCachedListThenPart),
        loader(LeCachedListThenPart, owned=True),
    ):
        sync_command_log.clear()
        assert loaded(load, son) == slow
        assert sync_command_log.count("find") == 4


def test_a_load_failing_on_a_cached_reference_fetches_it_once(
    sync_default: Any, sync_command_log: Any
) -> None:
    """A cached reference whose document is gone fails to load (MongoEngine's
    error), alone or after another in a list: each fetched once, as by
    MongoEngine, not once more by ``_from_son`` after the loader's try."""
    target = LeCachedTarget(name="x").save()
    gone = {"_id": ObjectId(), "name": "y"}
    cases = (
        (LeCachedThenPart, {"_id": ObjectId(), "cached": gone}, 1),
        (
            LeCachedListThenPart,
            {"_id": ObjectId(), "listed": [{"_id": target.id, "name": "x"}, gone]},
            2,
        ),
    )
    for model, son, finds in cases:
        sync_command_log.clear()
        slow = loaded(model._from_son, son)
        assert slow[0] == "raised" and sync_command_log.count("find") == finds
        for load in (loader(model), loader(model, owned=True)):
            sync_command_log.clear()
            assert loaded(load, son) == slow
            assert sync_command_log.count("find") == finds
