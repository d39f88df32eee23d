"""Any stored son loads through our loaders as MongoEngine's ``_from_son`` loads it.

test_loading.py checks chosen sons; here Hypothesis draws them. Each field of a
model is absent, null, stored as the field stores it, or holds a value of another
type; the keys come in any order, with sometimes an unknown key, a field stored
under its attribute name, or a ``_cls`` naming this class, a subclass, another
class or none; everything goes through BSON as the server returns it. The plain
loader, the owning loader and the joining loader (finding nothing, or a document
for each plain reference) must give MongoEngine's document, or raise its error.
"""

from __future__ import annotations

import copy
import datetime
import uuid
from collections.abc import Callable
from typing import Any

import bson
from bson import DBRef, Decimal128, ObjectId
from bson.int64 import Int64
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from mongoengine.base import BaseField

from mongoengine_async import (
    BooleanField,
    DateTimeField,
    DecimalField,
    DictField,
    EmbeddedDocumentField,
    EnumField,
    FloatField,
    GenericEmbeddedDocumentField,
    GenericReferenceField,
    IntField,
    LazyReferenceField,
    ListField,
    LongField,
    MapField,
    ObjectIdField,
    PointField,
    ReferenceField,
    StringField,
    UUIDField,
)
from mongoengine_async.from_bson import joining_loader, loader, plain_references
from test_loading import (
    CODEC,
    LdChoosy,
    LdEverything,
    LdFlat,
    LdKind,
    LdLoose,
    LdPart,
    LdRenamedKind,
    LdSimple,
    LdSpecial,
    LdSubKind,
    LdSwapped,
    LdTarget,
    assert_same,
    joined,
)
from test_to_bson import outcome

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
    LdChoosy,
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
        return OIDS.map(lambda oid: DBRef("ld_target", oid)) if field.dbref else OIDS
    if isinstance(field, LazyReferenceField):
        return OIDS
    if isinstance(field, GenericReferenceField):  # lazy ones too
        return OIDS.map(
            lambda oid: {"_cls": "LdTarget", "_ref": DBRef("ld_target", oid)}
        )
    if isinstance(field, EmbeddedDocumentField):
        return parts()
    if isinstance(field, GenericEmbeddedDocumentField):
        return parts().map(lambda part: {**part, "_cls": "LdPart"})
    if isinstance(field, ListField):
        # (Not null in a list of references: MongoEngine makes up an ObjectId.)
        inner = field.field
        reference = isinstance(inner, ReferenceField)
        items = ANY if inner is None else stored_values(inner, null=not reference)
        return st.lists(items, max_size=3)
    if isinstance(field, MapField):
        return st.dictionaries(KEYS, stored_values(field.field), max_size=2)
    if isinstance(field, DictField):
        return st.dictionaries(KEYS, ANY, max_size=2)
    if isinstance(field, PointField):
        coordinates = st.lists(FLOATS, min_size=2, max_size=2)
        return coordinates.map(lambda xy: {"type": "Point", "coordinates": xy})
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
    if isinstance(field, ObjectIdField):
        return OIDS
    return ANY


def parts() -> st.SearchStrategy:
    """A stored LdPart: some of its fields, perhaps an unknown key."""
    optional = {name: stored_values(LdPart._fields[name]) for name in LdPart._fields}
    return st.fixed_dictionaries({}, optional={**optional, "surprise": ANY})


@st.composite
def sons(draw: st.DrawFn) -> tuple[type, dict[str, Any]]:
    """A model and a son of it, as the server returns one."""
    cls = draw(st.sampled_from(MODELS))
    son: dict[str, Any] = {}
    for name, field in cls._fields.items():
        how = draw(st.sampled_from(("absent", "null", "stored", "stored", "junk")))
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
        renamed = field.db_field != name and draw(st.booleans())
        son[name if renamed else field.db_field] = value
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
    suppress_health_check=[HealthCheck.too_slow],
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


@given(sons())
@EXAMPLES
def test_a_son_loads_as_from_son_loads_it(drawn: tuple[type, dict]) -> None:
    cls, son = drawn
    slow = loaded(cls._from_son, son)
    kept = copy.deepcopy(son)
    plain = loader(cls)
    assert_loads_alike(outcome(lambda: plain(son)), slow)  # the caller's son:
    assert son == kept  # left as it was
    assert_loads_alike(loaded(loader(cls, owned=True), son), slow)


@given(sons())
@EXAMPLES
def test_a_son_loads_joined_as_from_son_loads_it(drawn: tuple[type, dict]) -> None:
    """Joined: MongoEngine's document with the found documents in place; a son
    the joining loader leaves goes to its fallback (select_related loads it
    with the owning loader, checked above)."""
    cls, son = drawn
    if not plain_references(cls):
        return
    left = []
    nothing_found = [{}.get] * len(plain_references(cls))
    for finders, documents in (joined(cls, son), (nothing_found, {})):
        fast = loaded(joining_loader(cls, finders, left.append), son)
        if fast == ("ok", None):  # left to the fallback
            assert left.pop() == son
            continue
        slow = loaded(cls._from_son, son)
        if slow[0] == "ok":
            slow[1]._data.update(documents)
        assert_loads_alike(fast, slow)
