"""The generated write path gives exactly what MongoEngine's own code gives.

Hypothesis draws keyword values (valid and invalid) for models holding every
field kind; each set goes through our classes' construction, ``validate`` and
``to_mongo`` (the plan of ``to_bson``) and through MongoEngine's own
``BaseDocument.__init__``, ``BaseDocument.validate`` and ``Document.to_mongo``
called on the same class. The documents, the ``to_mongo`` SON (key order
included, nested too), the ValidationError (type, message, ``.errors``) and
what is stored in MongoDB and read back must be identical.
"""

from __future__ import annotations

import copy
import datetime
import decimal
import enum
import functools
import inspect
import uuid
from collections.abc import Callable
from typing import Any
from unittest import mock

import mongoengine
import pytest
from bson import Binary, DBRef, ObjectId
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from mongoengine.base import BaseDocument, LazyReference

import mongoengine_async
from mongoengine_async import (
    BinaryField,
    BooleanField,
    CachedReferenceField,
    DateField,
    DateTimeField,
    Decimal128Field,
    DecimalField,
    DictField,
    Document,
    DynamicField,
    EmailField,
    EmbeddedDocument,
    EmbeddedDocumentField,
    EmbeddedDocumentListField,
    EnumField,
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
    ValidationError,
    plan_watch,
    to_bson,
)
from mongoengine_async.fields import keep_given

# -- models ---------------------------------------------------------------------------


class TbTarget(Document):
    name = StringField()


class TbPart(EmbeddedDocument):
    label = StringField(max_length=5)
    count = IntField(default=1, min_value=0)


class TbCleanPart(EmbeddedDocument):
    """Its clean runs (and may fail) on validation with clean=True, and counts
    its runs: validation must run it as often as MongoEngine's does."""

    label = StringField()
    cleaned = IntField(default=0)

    def clean(self) -> None:
        self.cleaned += 1
        if self.label == "bad":
            raise ValidationError("bad label")


class TbScalars(Document):
    text = StringField()
    short = StringField(max_length=4, min_length=1)
    code = StringField(regex=r"^[a-c]+$", db_field="c")
    number = IntField(min_value=-5, max_value=50)
    plain_int = IntField()
    big = LongField()
    ratio = FloatField(min_value=0.0, max_value=1.0, null=True)
    real = FloatField()
    flag = BooleanField(default=False)
    when = DateTimeField()
    other_id = ObjectIdField()
    amount = DecimalField(precision=2)
    email = EmailField()
    token = UUIDField(binary=True)
    needed = StringField(required=True, default="x")
    size = StringField(choices=["S", "M", "L"])
    level = IntField(choices=[(1, "low"), (2, "high")])


class TbContainers(Document):
    tags = ListField(StringField(), db_field="t")
    scores = ListField(IntField(min_value=0), max_length=3)
    picks = ListField(StringField(choices=["a", "b"]))
    required_list = ListField(StringField(), required=True)
    untyped = ListField()
    attributes = DictField()
    counters = MapField(IntField())
    part = EmbeddedDocumentField(TbPart)
    clean_part = EmbeddedDocumentField(TbCleanPart)
    parts = EmbeddedDocumentListField(TbPart)
    part_list = ListField(EmbeddedDocumentField(TbPart))
    target = ReferenceField(TbTarget)
    targets = ListField(ReferenceField(TbTarget))


class TbMore(Document):
    """The other field kinds the plan takes (their own checks are MongoEngine's)."""

    cached = CachedReferenceField(TbTarget, fields=["name"])
    anything = GenericReferenceField()
    loose = DynamicField()
    where = PointField()
    day = DateField()
    any_part = GenericEmbeddedDocumentField()
    ordered = SortedListField(StringField())
    ordered_parts = SortedListField(EmbeddedDocumentField(TbPart), ordering="count")


class TbShapes(Document):
    """Kinds with their own ``to_mongo`` and checks, and nested containers."""

    amount = Decimal128Field(min_value=0, max_value=100)
    site = URLField()
    spot = GeoPointField()
    line = LineStringField()
    area = PolygonField()
    spots = MultiPointField()
    lines = MultiLineStringField()
    areas = MultiPolygonField()
    emails = ListField(EmailField())
    grid = ListField(ListField(IntField()))
    part_map = MapField(EmbeddedDocumentField(TbPart))
    linked = ReferenceField(TbTarget, dbref=True)
    anythings = ListField(GenericReferenceField())
    records = ListField(DictField())
    note = StringField(null=True, default="n")

    # No geo indexes: the server would refuse the malformed shapes MongoEngine's
    # checks let through (here both sides must store them alike).
    meta = {"auto_create_index": False}


class TbColour(enum.Enum):
    RED = "red"
    BLUE = "blue"


class TbLevel(enum.IntEnum):
    LOW = 1
    HIGH = 2


class TbEnums(Document):
    """Enum fields: ``__set__`` converts again what ``to_python`` gave."""

    colour = EnumField(TbColour, default=TbColour.RED)
    level = EnumField(TbLevel, null=True)
    colours = ListField(EnumField(TbColour))
    levels = MapField(EnumField(TbLevel))
    pick = EnumField(TbColour, choices=[TbColour.BLUE])


class TbBytesAndLazy(Document):
    """``BinaryField.__set__`` stores a bytearray as bytes; lazy references
    read as a ``LazyReference`` (their ``__get__`` converts)."""

    blob = BinaryField()
    short_blob = BinaryField(max_bytes=3, required=True)
    blobs = ListField(BinaryField())
    lazy = LazyReferenceField(TbTarget)
    lazy_dbref = LazyReferenceField(TbTarget, dbref=True, passthrough=True)
    any_lazy = GenericLazyReferenceField()


class TbKeyed(Document):
    """Its own string primary key, stored under a renamed field."""

    key = StringField(primary_key=True)
    label = StringField(null=True)
    n = IntField(db_field="number", default=lambda: 7)


class TbInherited(Document):
    name = StringField()
    meta = {"allow_inheritance": True}


class TbChild(TbInherited):
    extra = IntField()


class TbCleaned(Document):
    """A custom clean: validation with clean=True goes to MongoEngine."""

    name = StringField()

    def clean(self) -> None:
        if self.name == "bad":
            raise ValidationError("bad name")
        self.name = (self.name or "").strip()


MODELS = (
    TbScalars,
    TbContainers,
    TbMore,
    TbShapes,
    TbEnums,
    TbBytesAndLazy,
    TbKeyed,
    TbInherited,
    TbChild,
    TbCleaned,
)

# -- values -----------------------------------------------------------------------

JUNK = st.sampled_from(
    [None, 0, 7, -1, 2.5, True, "", "abc", "x" * 9, b"by", [], ["a"], {}, {"k": 1}]
)
TEXT = st.text(alphabet="abcxyz ", max_size=6)
DATES = st.datetimes(
    min_value=datetime.datetime(1990, 1, 1), max_value=datetime.datetime(2040, 1, 1)
).map(lambda d: d.replace(microsecond=d.microsecond // 1000 * 1000))
PARTS = st.builds(
    TbPart, label=st.one_of(TEXT, JUNK), count=st.one_of(st.integers(-2, 3), JUNK)
)
CLEAN_PARTS = st.builds(TbCleanPart, label=st.sampled_from(["ok", "bad", None]))


def saved_target() -> TbTarget:
    """A target that looks saved (it has an id) and one that does not."""
    return TbTarget(id=ObjectId(), name="t")


TARGETS = st.one_of(
    st.builds(saved_target),
    st.builds(TbTarget),
    JUNK,
    # What a reference also takes: an id, a DBRef, a LazyReference; and a
    # document of another class.
    st.builds(ObjectId),
    st.builds(lambda: DBRef("tb_target", ObjectId())),
    st.builds(lambda: LazyReference(TbTarget, ObjectId())),
    st.builds(lambda: TbKeyed(key="k")),
)
# And what a lazy reference's checks look into: its collection, its id.
LAZY = st.one_of(
    TARGETS,
    st.builds(lambda: LazyReference(TbScalars, ObjectId())),  # another collection
    st.builds(lambda: LazyReference(TbTarget, None)),
    st.builds(lambda: DBRef("elsewhere", ObjectId())),
    st.just("5f" * 12),
)
BYTES = st.one_of(
    st.binary(max_size=5),
    st.binary(max_size=5).map(bytearray),
    st.binary(max_size=5).map(lambda data: Binary(data, 5)),
)
# Members, their values, and values of no member.
COLOURS = st.sampled_from([*TbColour, "red", "blue", "green"])
LEVELS = st.sampled_from([*TbLevel, 1, 2, 3, "1"])
POINTS = st.one_of(
    st.lists(st.floats(-200, 200, allow_nan=False), min_size=2, max_size=2),
    st.lists(st.one_of(st.integers(-9, 9), JUNK), max_size=3),
)
# Closed rings, and sometimes not (the field's check refuses those).
RINGS = st.one_of(
    st.just([[0, 0], [0, 1], [1, 1], [0, 0]]), st.lists(POINTS, min_size=1, max_size=4)
)


def geo_json(kind: str) -> st.SearchStrategy:
    """A GeoJSON object of ``kind``, or of another kind, with some coordinates."""
    coordinates = st.one_of(
        POINTS, st.lists(POINTS, max_size=2), st.lists(RINGS, max_size=1)
    )
    kinds = st.sampled_from([kind, "Point", "Polygon"])
    return st.fixed_dictionaries({"type": kinds, "coordinates": coordinates})


FIELD_VALUES: dict[type, dict[str, st.SearchStrategy]] = {
    TbScalars: {
        "text": st.one_of(TEXT, JUNK),
        "short": st.one_of(TEXT, JUNK),
        "code": st.one_of(st.text(alphabet="abcd", max_size=4), JUNK),
        "number": st.one_of(st.integers(-8, 60), JUNK),
        "plain_int": st.one_of(
            st.integers(-(2**62), 2**62), st.sampled_from(["12", "x"]), JUNK
        ),
        "big": st.one_of(st.integers(-(2**40), 2**40), JUNK),
        "ratio": st.one_of(st.floats(-0.5, 1.5), st.integers(0, 2), JUNK),
        "real": st.one_of(st.floats(allow_nan=False), st.integers(-9, 9), JUNK),
        "flag": st.one_of(st.booleans(), JUNK),
        "when": st.one_of(DATES, st.just("2020-01-02"), JUNK),
        "other_id": st.one_of(st.builds(ObjectId), st.just("5f" * 12), JUNK),
        "amount": st.one_of(
            st.decimals(-100, 100, places=3), st.sampled_from(["1.5", "x"])
        ),
        "email": st.one_of(st.just("a@example.com"), TEXT, JUNK),
        "token": st.one_of(st.builds(uuid.uuid4), JUNK),
        "needed": st.one_of(TEXT, st.none()),
        "size": st.one_of(st.sampled_from(["S", "M", "XL"]), JUNK),
        "level": st.one_of(st.sampled_from([1, 2, 3]), JUNK),
    },
    TbContainers: {
        "tags": st.one_of(st.lists(TEXT, max_size=3), st.lists(JUNK, max_size=2), JUNK),
        "scores": st.one_of(st.lists(st.integers(-1, 9), max_size=4), JUNK),
        "picks": st.one_of(st.lists(st.sampled_from(["a", "b", "c"]), max_size=3)),
        "required_list": st.one_of(st.lists(TEXT, max_size=2), st.none()),
        "untyped": st.one_of(st.lists(st.one_of(TEXT, st.integers(-9, 9)), max_size=3)),
        "attributes": st.one_of(
            st.dictionaries(TEXT, st.integers(-9, 9), max_size=2), JUNK
        ),
        "counters": st.one_of(
            st.dictionaries(TEXT, st.one_of(st.integers(-9, 9), TEXT), max_size=2), JUNK
        ),
        "part": st.one_of(PARTS, JUNK),
        "clean_part": st.one_of(CLEAN_PARTS, st.none()),
        "parts": st.one_of(st.lists(PARTS, max_size=2), st.none()),
        "part_list": st.one_of(st.lists(PARTS, max_size=2), st.none()),
        "target": TARGETS,
        "targets": st.one_of(st.lists(st.builds(saved_target), max_size=2), JUNK),
    },
    TbMore: {
        "cached": TARGETS,
        "anything": TARGETS,
        "loose": st.one_of(TEXT, st.integers(-9, 9), st.lists(TEXT, max_size=2), JUNK),
        "where": st.one_of(st.just([1.5, 2.0]), st.just({"type": "Point"}), JUNK),
        "day": st.one_of(DATES.map(lambda d: d.date()), DATES, JUNK),
        "any_part": st.one_of(PARTS, JUNK),
        "ordered": st.one_of(st.lists(TEXT, max_size=3), JUNK),
        "ordered_parts": st.one_of(st.lists(PARTS, max_size=3), st.none()),
    },
    TbShapes: {
        "amount": st.one_of(
            st.decimals(-10, 200, places=2), st.integers(-5, 150), st.just("7.5"), JUNK
        ),
        "site": st.one_of(
            st.sampled_from(["http://example.com/a", "https://b.org", "ftp://c.net/x"]),
            TEXT,
            JUNK,
        ),
        "spot": st.one_of(
            POINTS, st.just({"type": "Point", "coordinates": [1, 2]}), JUNK
        ),
        "line": st.one_of(st.lists(POINTS, max_size=3), geo_json("LineString"), JUNK),
        "area": st.one_of(st.lists(RINGS, max_size=2), geo_json("Polygon"), JUNK),
        "spots": st.one_of(st.lists(POINTS, max_size=3), geo_json("MultiPoint"), JUNK),
        "lines": st.one_of(st.lists(st.lists(POINTS, max_size=3), max_size=2), JUNK),
        "areas": st.one_of(st.lists(st.lists(RINGS, max_size=2), max_size=2), JUNK),
        "emails": st.one_of(
            st.lists(st.one_of(st.just("a@example.com"), TEXT), max_size=2), JUNK
        ),
        "grid": st.one_of(
            st.lists(
                st.lists(st.one_of(st.integers(-9, 9), JUNK), max_size=2), max_size=2
            ),
            JUNK,
        ),
        "part_map": st.one_of(st.dictionaries(TEXT, PARTS, max_size=2), JUNK),
        "linked": TARGETS,
        "anythings": st.one_of(st.lists(TARGETS, max_size=2), JUNK),
        "records": st.one_of(
            st.lists(st.dictionaries(TEXT, st.integers(-9, 9), max_size=2), max_size=2),
            JUNK,
        ),
        "note": st.one_of(TEXT, JUNK),
    },
    TbEnums: {
        "colour": st.one_of(COLOURS, JUNK),
        "level": st.one_of(LEVELS, JUNK),
        "colours": st.one_of(st.lists(st.one_of(COLOURS, JUNK), max_size=2), JUNK),
        "levels": st.one_of(st.dictionaries(TEXT, LEVELS, max_size=2), JUNK),
        "pick": st.one_of(COLOURS, JUNK),
    },
    TbBytesAndLazy: {
        "blob": st.one_of(BYTES, JUNK),
        "short_blob": st.one_of(st.binary(min_size=3, max_size=4), BYTES, JUNK),
        "blobs": st.one_of(st.lists(st.one_of(BYTES, JUNK), max_size=2), JUNK),
        "lazy": LAZY,
        "lazy_dbref": LAZY,
        "any_lazy": TARGETS,
    },
    TbKeyed: {
        "key": st.one_of(TEXT, st.none()),
        "label": st.one_of(TEXT, st.none()),
        "n": st.one_of(st.integers(-3, 3), st.none(), st.just("4")),
    },
    TbInherited: {"name": st.one_of(TEXT, JUNK)},
    TbChild: {
        "name": st.one_of(TEXT, JUNK),
        "extra": st.one_of(st.integers(-9, 9), JUNK),
    },
    TbCleaned: {"name": st.one_of(st.sampled_from(["bad", " ok "]), TEXT, JUNK)},
}


@st.composite
def documents(draw: st.DrawFn) -> tuple[type, dict[str, Any]]:
    """A model and keyword values for some of its fields (in a drawn order)."""
    model = draw(st.sampled_from(MODELS))
    strategies = FIELD_VALUES[model]
    # Few fields at a time: an invalid value is then often the only one, so
    # the plan's own checks (not only its fallback) decide.
    names = draw(st.lists(st.sampled_from(sorted(strategies)), unique=True, max_size=3))
    return model, {name: draw(strategies[name]) for name in names}


EXAMPLES = settings(
    max_examples=300,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow],
)

# -- MongoEngine's own path, on the same classes ------------------------------------


def mongoengine_new(model: type, values: dict[str, Any]) -> Any:
    """``model(**values)`` by MongoEngine's ``BaseDocument.__init__``, a plain
    reference given for a ``CachedReferenceField`` held as given, as
    MongoEngine's field holds it (ours marks what its ``to_python``, the
    load's, converts: validation would take it for one a load read)."""
    document = model.__new__(model)
    BaseDocument.__init__(document, **values)
    keep_given(document, values)
    return document


def mongoengine_validate(document: Any, clean: bool = True) -> None:
    BaseDocument.validate(document, clean=clean)


def mongoengine_to_mongo(document: Any) -> Any:
    return mongoengine.Document.to_mongo(document)


# -- comparing ---------------------------------------------------------------------


def outcome(function: Callable[[], Any]) -> tuple[str, Any]:
    """("ok", result) or ("raised", (type, message, errors)) of ``function()``."""
    try:
        return "ok", function()
    except Exception as error:
        return "raised", describe(error)


def describe(error: Exception) -> tuple[type, str, Any]:
    """An exception as comparable data: ValidationError's nested errors included."""
    if isinstance(error, ValidationError):
        return type(error), str(error), errors_of(error)
    return type(error), str(error), None


def errors_of(error: ValidationError) -> Any:
    """``.errors``, each nested error as (type, message, field name, errors)."""

    def one(value: Any) -> Any:
        if isinstance(value, dict):
            return {key: one(item) for key, item in value.items()}
        if isinstance(value, ValidationError):
            return (type(value), str(value), value.field_name, one(value.errors))
        return (type(value), str(value))

    return one(error.errors), error.to_dict()


def state(document: Any) -> Any:
    """Everything a document holds: values (in order), instance dict, flags."""
    # In _data's order: the absent fields first, then the given ones.
    values = [(key, stored_form(value)) for key, value in document._data.items()]
    instance = {
        key: (value.keywords if callable(value) else value)
        for key, value in vars(document).items()
        if key != "_dynamic_fields"
    }
    links = {
        key: value._instance is not None
        for key, value in document._data.items()
        if isinstance(value, mongoengine.EmbeddedDocument)
    }
    return type(document), values, instance, links, document._created


def stored_form(value: Any) -> Any:
    """A value with embedded documents, and documents not saved yet, as their
    class and data (copies of an unsaved document compare equal only to
    themselves), a Decimal NaN as its text (NaN equals nothing), bytes and
    references with their type."""
    if isinstance(value, decimal.Decimal) and value.is_nan():
        return decimal.Decimal, str(value)
    if isinstance(value, bytes | bytearray | DBRef):  # bytes equal a bytearray,
        return type(value), value  # a DBRef a LazyReference: told by their type
    unsaved = isinstance(value, mongoengine.Document) and value.pk is None
    if unsaved or isinstance(value, mongoengine.EmbeddedDocument):
        return type(value), value._data
    if isinstance(value, list):
        return [stored_form(item) for item in value]
    return value


def son_form(value: Any) -> Any:
    """A to_mongo result with its type and key order made explicit."""
    if isinstance(value, dict):
        return type(value), [(key, son_form(item)) for key, item in value.items()]
    if isinstance(value, list):
        return [son_form(item) for item in value]
    return type(value), value


# -- the plans are there -----------------------------------------------------------


@pytest.mark.parametrize("model", MODELS)
def test_models_are_planned(model: type) -> None:
    """The models take the generated path (else the tests below compare
    MongoEngine with itself)."""
    assert to_bson._plans[model] is not None
    assert to_bson._embedded_plan(TbPart) is not None


def test_unusual_classes_take_mongoengine_path() -> None:
    class TbDynamic(mongoengine_async.DynamicDocument):
        name = StringField()

    class TbOwnToMongo(Document):
        name = StringField()

        def to_mongo(self, *args: Any, **kwargs: Any) -> Any:
            son = super().to_mongo(*args, **kwargs)
            son["extra"] = 1
            return son

    assert to_bson._plans[TbDynamic] is None
    document = TbOwnToMongo(name="a")
    assert to_bson.raw(document) == {"name": "a", "extra": 1}


def test_a_check_that_raises_gives_mongoengines_error() -> None:
    """A reference to a document of an abstract class (which has no ``id``):
    MongoEngine's check raises AttributeError, which its ``validate`` reports
    as a ValidationError; so does the plan (from MongoEngine's suite)."""

    class TbSibling(Document):
        name = StringField()
        meta = {"abstract": True}

    class TbBrother(TbSibling):
        sibling = ReferenceField(TbSibling)

    assert to_bson._plans[TbBrother] is not None
    values = {"name": "Bob", "sibling": TbSibling(name="Alice")}
    fast = outcome(lambda: TbBrother(**values).validate())
    slow = outcome(lambda: mongoengine_validate(mongoengine_new(TbBrother, values)))
    assert fast[0] == "raised"
    assert fast == slow


def test_an_abstract_class_without_fields_is_built() -> None:
    """An abstract document class declaring no field has none at all (no
    ``id``): MongoEngine builds its instances, validates and dumps them; so
    does the plan (its constructor once raised IndentationError)."""

    class TbNothingYet(Document):
        meta = {"abstract": True}

    assert TbNothingYet._fields == {}
    built = TbNothingYet()
    assert state(built) == state(mongoengine_new(TbNothingYet, {}))
    built.validate()
    assert built.to_mongo().to_dict() == {}


# -- equality, without a database ----------------------------------------------------


@EXAMPLES
@given(documents())
@example((TbBytesAndLazy, {"blob": bytearray(b"ab"), "blobs": [bytearray(b"c")]}))
def test_construction_is_mongoengines(drawn: tuple[type, dict[str, Any]]) -> None:
    model, values = drawn
    fast = outcome(lambda: model(**values))
    slow = outcome(lambda: mongoengine_new(model, values))
    assert fast[0] == slow[0]
    if fast[0] == "raised":
        assert fast == slow
    else:
        assert state(fast[1]) == state(slow[1])


@EXAMPLES
@given(documents(), st.booleans())
@example((TbBytesAndLazy, {"short_blob": b"abcd"}), False)  # over max_bytes
@example(
    (TbContainers, {"required_list": ["a"], "clean_part": TbCleanPart(label="bad")}),
    True,
)
@example((TbShapes, {"linked": TbTarget(name="unsaved")}), False)
@example((TbShapes, {"linked": TbKeyed(key="k")}), False)  # another class
@example(
    (TbBytesAndLazy, {"short_blob": b"", "lazy": LazyReference(TbScalars, 1)}), True
)
@example(
    (TbBytesAndLazy, {"short_blob": b"", "lazy": LazyReference(TbTarget, None)}), True
)
def test_validation_is_mongoengines(
    drawn: tuple[type, dict[str, Any]], clean: bool
) -> None:
    model, values = drawn
    # A clean() changes its embedded document: each side gets its own.
    theirs = {
        name: copy.deepcopy(value) if isinstance(value, EmbeddedDocument) else value
        for name, value in values.items()
    }
    document = outcome(lambda: model(**values))
    if document[0] == "raised":
        return
    fast = outcome(lambda: document[1].validate(clean=clean))
    again = model(**theirs)
    slow = outcome(lambda: mongoengine_validate(again, clean=clean))
    assert fast == slow
    assert state(document[1]) == state(again)


@EXAMPLES
@given(documents())
def test_to_mongo_is_mongoengines(drawn: tuple[type, dict[str, Any]]) -> None:
    model, values = drawn
    document = outcome(lambda: model(**values))
    if document[0] == "raised":
        return
    fast = outcome(lambda: son_form(document[1].to_mongo()))
    slow = outcome(lambda: son_form(mongoengine_to_mongo(document[1])))
    assert fast == slow
    if fast[0] == "ok":
        # What inserts and saves send: the same keys, values and order.
        assert son_form(dict(document[1].to_mongo())) == son_form(
            to_bson.raw(document[1])
        )


@settings(EXAMPLES, max_examples=60)
@given(documents(), st.booleans())
def test_setting_the_new_id_is_mongoengines(
    drawn: tuple[type, dict[str, Any]], tracked: bool
) -> None:
    """What an insert does last (``document.pk = inserted_id``), on a new
    document, with or without tracked changes (a save clears them)."""
    model, values = drawn
    made = outcome(lambda: (model(**values), model(**values)))
    if made[0] == "raised":
        return
    ours, theirs = made[1]
    if tracked:
        ours._changed_fields, theirs._changed_fields = [], []
    new_id = "key" if model is TbKeyed else ObjectId()
    to_bson.set_id(ours, new_id)
    setattr(theirs, model._meta["id_field"], new_id)
    assert state(ours) == state(theirs)
    changed = getattr(ours, "_changed_fields", None)
    assert changed == getattr(theirs, "_changed_fields", None)


class TbDecimalKeyed(Document):
    """A primary key whose ``to_python`` changes what the database gives back."""

    amount = DecimalField(primary_key=True, precision=2)
    label = StringField()


STORED_IDS = st.one_of(
    st.builds(ObjectId),
    st.text(max_size=3),
    st.integers(-3, 3),
    st.floats(-10, 10, allow_nan=False),
)


@settings(EXAMPLES, max_examples=80)
@given(st.sampled_from([TbScalars, TbKeyed, TbDecimalKeyed]), STORED_IDS, st.booleans())
def test_setting_the_id_the_database_gave_is_mongoengines(
    model: type, stored_id: Any, loaded: bool
) -> None:
    """What a save does with the id an insert returns: the id field's
    ``to_python``, then ``document.pk = ...``, on a new or a loaded document."""
    id_field = model._meta["id_field"]
    if loaded:
        son = {"_id": stored_id}
        made = outcome(lambda: (model._from_son(son), model._from_son(son)))
        if made[0] == "raised":  # an id its field cannot convert does not load
            return
        ours, theirs = made[1]
    else:
        ours, theirs = model(), model()
    set_ours = outcome(lambda: to_bson.set_id(ours, stored_id, stored=True))
    converted = outcome(lambda: theirs._fields[id_field].to_python(stored_id))
    if converted[0] == "raised":  # e.g. "INF" for a DecimalField: save raises it
        assert set_ours == converted
    else:
        setattr(theirs, id_field, converted[1])
    assert state(ours) == state(theirs)
    changed = getattr(ours, "_changed_fields", None)
    assert changed == getattr(theirs, "_changed_fields", None)


@settings(EXAMPLES, max_examples=60)
@given(documents(), st.booleans())
def test_ending_a_save_is_mongoengines(
    drawn: tuple[type, dict[str, Any]], loaded: bool
) -> None:
    """What a save does last to a new or loaded document: set its id again
    (the very id it holds, once stored) and ``_created = False``."""
    model, values = drawn
    made = outcome(lambda: (model(**values), model(**values)))
    if made[0] == "raised":
        return
    if loaded:
        # (Neither an unsaved reference dumps, nor a cached one loads offline.)
        dumped = outcome(lambda: mongoengine_to_mongo(made[1][0]))
        if dumped[0] == "raised":
            return
        son = dumped[1]
        son.setdefault("_id", ObjectId())
        made = outcome(lambda: (model._from_son(son), model._from_son(son)))
        if made[0] == "raised":
            return
    ours, theirs = made[1]
    new_id = ours.pk if ours.pk is not None else ObjectId()
    to_bson.set_id(ours, new_id)
    setattr(theirs, model._meta["id_field"], new_id)
    to_bson.mark_saved(ours)
    theirs._created = False
    assert state(ours) == state(theirs)
    changed = getattr(ours, "_changed_fields", None)
    assert changed == getattr(theirs, "_changed_fields", None)


def test_to_mongo_after_loading_and_changes() -> None:
    """A loaded document changed in place dumps as MongoEngine dumps it."""
    document = TbContainers(tags=["a"], part=TbPart(label="p"))
    document.tags.append("b")
    document.part.count = 5
    assert son_form(document.to_mongo()) == son_form(mongoengine_to_mongo(document))


def test_containers_of_plain_values_dump_as_mongoengine_dumps_them() -> None:
    """A dict, a map or an untyped list of values ``to_mongo`` keeps is copied
    as it is; any other item converts (bytes become a list of ints, a string
    in an int map stays a string, a document a reference)."""
    when, oid = datetime.datetime(2024, 1, 2), ObjectId()
    kept = {"a": 1, "b": "x", "c": None, "d": 2.5, "e": True, "f": when, "g": oid}
    values = [
        (kept, list(kept.values()), {"n": 1}),
        ({"a": b"by"}, [b"by", 1], {"n": "2"}),
        ({"a": {"b": [1]}}, [[1], {"c": 2}], {"n": None}),
        ({"t": saved_target()}, [TbPart(label="p")], {}),
    ]
    for attributes, untyped, counters in values:
        document = TbContainers()
        document.attributes, document.untyped = attributes, untyped
        document.counters = counters
        fast = son_form(document.to_mongo())
        assert fast == son_form(mongoengine_to_mongo(document))


# -- equality of what is stored ------------------------------------------------------


def drawn_examples(count: int) -> list[tuple[type, dict[str, Any]]]:
    """``count`` drawn documents that MongoEngine validates and dumps (to store
    them): a lazy reference to an id its id field cannot store validates (only
    its collection is checked), and ``to_mongo`` raises on either side."""
    found: list[tuple[type, dict[str, Any]]] = []

    @settings(max_examples=count * 4, deadline=None, derandomize=True, database=None)
    @given(documents())
    def collect(drawn: tuple[type, dict[str, Any]]) -> None:
        model, values = drawn
        try:
            document = mongoengine_new(model, values)
            mongoengine_validate(document)
            mongoengine_to_mongo(document)
        except Exception:
            return
        found.append(drawn)

    collect()
    assert len(found) >= count // 2, "too few valid examples to store"
    return found[:count]


def stored(document: dict) -> Any:
    """A stored document, id aside (each side gets its own), as son_form."""
    return son_form({key: value for key, value in document.items() if key != "_id"})


async def test_stored_documents_are_mongoengines(async_alias: str) -> None:
    """async_save (the plan's dict) stores what MongoEngine's to_mongo SON,
    inserted as such, stores: read back from MongoDB."""
    for model, values in drawn_examples(30):
        document = model(**values)
        await document.async_save()
        collection = model._get_collection()
        theirs = collection.database[f"{collection.name}_mongoengine"]
        theirs_document = mongoengine_new(model, values)
        mongoengine_validate(theirs_document)  # as save does (clean may change it)
        son = mongoengine_to_mongo(theirs_document)
        son.pop("_id", None)
        result = await theirs.insert_one(son)
        ours_read = await collection.find_one({"_id": document.pk})
        theirs_read = await theirs.find_one({"_id": result.inserted_id})
        assert stored(ours_read) == stored(theirs_read), (model, values)


async def test_bulk_insert_is_mongoengines(async_alias: str) -> None:
    """async_insert of many documents stores what their to_mongo SONs store."""
    documents = [TbScalars(text=f"t{i}", number=i, real=i / 2) for i in range(20)]
    await TbScalars.objects.async_insert(documents, load_bulk=False)
    collection = TbScalars._get_collection()
    for document in documents:
        read = await collection.find_one({"_id": document.pk})
        expected = mongoengine_to_mongo(document)
        assert son_form(read) == son_form(dict(expected))


def test_sync_alias_saves_what_mongoengine_saves(sync_default: Any) -> None:
    """On a sync alias MongoEngine's save() runs, through the same plan."""
    for model, values in drawn_examples(12):
        document = model(**values).save()
        read = model._get_collection().find_one({"_id": document.pk})
        theirs = mongoengine_new(model, values)
        mongoengine_validate(theirs)  # as save does (clean may change it)
        son = mongoengine_to_mongo(theirs)
        son.pop("_id", None)
        collection = model._get_collection()
        side = collection.database[f"{collection.name}_mongoengine"]
        expected = side.find_one({"_id": side.insert_one(son).inserted_id})
        assert stored(read) == stored(expected), (model, values)


def test_init_signals_are_sent_as_by_mongoengine() -> None:
    """With pre_init/post_init receivers, a new document is built by
    MongoEngine's ``__init__``, which sends them (the plan sends none)."""
    log: list[tuple[str, str, Any]] = []

    def pre_init(sender: type, document: Any, values: dict, **kwargs: Any) -> None:
        log.append(("pre_init", sender.__name__, dict(values)))

    def post_init(sender: type, document: Any, **kwargs: Any) -> None:
        log.append(("post_init", sender.__name__, document.text))

    mongoengine.signals.pre_init.connect(pre_init)
    mongoengine.signals.post_init.connect(post_init)
    try:
        ours = TbScalars(text="a", number=3)
        sent, log[:] = list(log), []
        theirs = mongoengine_new(TbScalars, {"text": "a", "number": 3})
    finally:
        mongoengine.signals.pre_init.disconnect(pre_init)
        mongoengine.signals.post_init.disconnect(post_init)
    assert (
        sent
        == log
        == [
            ("pre_init", "TbScalars", {"text": "a", "number": 3}),
            ("post_init", "TbScalars", "a"),
        ]
    )
    assert state(ours) == state(theirs)


class PwAddress(EmbeddedDocument):
    city = StringField()


class PwTicket(Document):
    """Settings and hooks the tests below change after the plans were built."""

    meta = {"collection": "pw_ticket"}
    status = StringField(choices=["open"])
    priority = IntField(max_value=10)
    owner = StringField()
    size = IntField()
    address = EmbeddedDocumentField(PwAddress)


@pytest.fixture
def restored_ticket() -> Any:
    """PwTicket's field settings as declared again after the test."""
    fields = [*PwTicket._fields.values(), *PwAddress._fields.values()]
    saved = [(field, dict(vars(field))) for field in fields]
    yield
    for field, declared in saved:
        vars(field).clear()
        vars(field).update(declared)


def _errors(document: Any) -> list[str]:
    """The fields ``save()`` refuses, as its ValidationError names them."""
    with pytest.raises(mongoengine.ValidationError) as refused:
        document.save()
    return sorted(refused.value.errors)


@pytest.mark.usefixtures("restored_ticket")
def test_field_settings_changed_after_first_use_are_seen(sync_default: Any) -> None:
    """``choices``, bounds, ``required`` and ``default`` set after a class's
    plans were built are applied, as MongoEngine reads them on every call."""
    PwTicket(status="open", address=PwAddress(city="Lyon")).save()
    list(PwTicket.objects)
    PwTicket.status.choices = ["new", "closed"]
    PwTicket.priority.max_value = 3
    PwTicket.owner.required = True
    PwTicket.size.default = 1
    PwAddress.city.max_length = 3
    assert _errors(PwTicket(status="open")) == ["owner", "status"]
    assert _errors(PwTicket(status="new", owner="me", priority=9)) == ["priority"]
    assert _errors(
        PwTicket(status="new", owner="me", address=PwAddress(city="Lyon"))
    ) == ["address"]
    assert PwTicket().size == 1
    sync_default.pw_ticket.insert_one({"status": "new"})
    assert PwTicket.objects.order_by("-id").first().size == 1
    assert sync_default.pw_ticket.count_documents({"status": "open"}) == 1


def test_hooks_patched_after_first_use_are_called(sync_default: Any) -> None:
    """A ``clean``, ``to_mongo`` or ``_from_son`` replaced after the plans were
    built (``mock.patch.object``) is called, as MongoEngine calls it."""
    PwTicket(status="open").save()
    PwTicket.objects.insert([PwTicket(status="open")])
    list(PwTicket.objects)

    def refuse(self: Any) -> None:
        raise mongoengine.ValidationError("clean refused")

    with mock.patch.object(PwTicket, "clean", refuse):
        with pytest.raises(mongoengine.ValidationError, match="clean refused"):
            PwTicket(status="open", owner="refused").save()
    original = PwTicket.to_mongo

    def upper(self: Any, *args: Any, **kwargs: Any) -> Any:
        son = original(self, *args, **kwargs)
        son["owner"] = son["owner"].upper()
        return son

    with mock.patch.object(PwTicket, "to_mongo", upper):
        PwTicket.objects.insert([PwTicket(owner="inserted")])
    with mock.patch.object(PwTicket, "_from_son", wraps=PwTicket._from_son) as spy:
        assert len(list(PwTicket.objects)) == 3
    assert spy.call_count == 3
    stored = sync_default.pw_ticket.distinct("owner")
    assert stored == ["INSERTED"]


class PwOwnNew(Document):
    """A class given its own ``__new__`` after its first load (below)."""

    meta = {"collection": "pw_own_new"}
    name = StringField()


def test_a_new_assigned_after_first_load_is_called_as_mongoengine_does(
    sync_default: Any,
) -> None:
    """A ``__new__`` assigned to a model after its loader was built is called
    by the next load with the keywords MongoEngine's ``_from_son`` passes (the
    stored values), as it would have been had it been there from the start."""
    sync_default.pw_own_new.insert_many([{"name": "a"}, {"name": "b"}])
    assert [doc.name for doc in PwOwnNew.objects.order_by("name")] == ["a", "b"]
    calls: list[list[str]] = []

    def own_new(cls: Any, *args: Any, **kwargs: Any) -> Any:
        calls.append(sorted(kwargs))
        return object.__new__(cls)

    with mock.patch.object(PwOwnNew, "__new__", staticmethod(own_new)):
        loaded = list(PwOwnNew.objects.order_by("name"))
    assert [doc.name for doc in loaded] == ["a", "b"]
    assert calls == [["__auto_convert", "_created", "id", "name"]] * 2


class PwChanging(Document):
    """A class whose fields the test below replaces and removes."""

    meta = {"collection": "pw_changing"}
    name = StringField()
    size = IntField()


def test_fields_replaced_or_removed_after_first_use_are_seen(sync_default: Any) -> None:
    """A field replaced in ``_fields``, or removed, after the plans were built
    is seen by the very next constructor, validate and save, as MongoEngine
    reads ``_fields`` on every call: its conversion, its checks, its absence."""
    fields, ordered = dict(PwChanging._fields), PwChanging._fields_ordered
    try:
        PwChanging(name="first", size=1).save()
        number = IntField(min_value=0)
        number.name = number.db_field = "name"
        number.owner_document = PwChanging
        PwChanging._fields["name"] = number
        assert PwChanging(name="5").name == 5  # IntField.to_python
        with pytest.raises(mongoengine.ValidationError):
            PwChanging(name=-1).validate()
        PwChanging(name="6").save()
        del PwChanging._fields["size"]
        PwChanging._fields_ordered = ("id", "name")
        with pytest.raises(mongoengine.FieldDoesNotExist):
            PwChanging(name=1, size=2)
        assert "size" not in PwChanging(name=7).to_mongo()
    finally:
        PwChanging._fields.clear()
        PwChanging._fields.update(fields)
        PwChanging._fields_ordered = ordered
    stored = sync_default.pw_changing.find({}, {"_id": 0}).sort("_id", 1)
    assert list(stored) == [{"name": "first", "size": 1}, {"name": 6}]


class PwSwapped(Document):
    """A class whose field the test below replaces in its own ``_fields``."""

    meta = {"collection": "pw_swapped"}
    name = StringField()


async def test_a_field_replaced_in_place_is_seen_by_a_save_of_an_older_document(
    async_alias: str,
) -> None:
    """A field replaced in the class's very ``_fields`` dict (no new dict) once
    a save built the plans is seen by the save of a document built before it
    (which no constructor check meets): validated by the new field, as
    MongoEngine's save reads ``_fields``, and nothing written."""
    fields = dict(PwSwapped._fields)
    try:
        await PwSwapped(name="first").async_save()
        older = PwSwapped(name="second")
        number = IntField()
        number.name = number.db_field = "name"
        number.owner_document = PwSwapped
        PwSwapped._fields["name"] = number
        with pytest.raises(ValidationError) as raised:
            await older.async_save()
        assert str(raised.value) == (
            "ValidationError (PwSwapped:None) (second could not be converted "
            "to int: ['name'])"
        )
    finally:
        PwSwapped._fields.clear()
        PwSwapped._fields.update(fields)
    stored = PwSwapped._get_collection().find({}, {"_id": 0})
    assert await stored.to_list(None) == [{"name": "first"}]


class PwReordered(Document):
    """A class whose fields' order the test below changes."""

    meta = {"collection": "pw_reordered"}
    first = StringField()
    second = StringField()


async def test_fields_reordered_after_first_use_are_stored_in_the_new_order(
    async_alias: str,
) -> None:
    """``_fields_ordered`` set to another order of the same fields once a save
    built the plans is followed by the next save (of a document built before):
    MongoEngine's ``to_mongo`` walks it, so the stored keys come in that order."""
    ordered = PwReordered._fields_ordered
    try:
        await PwReordered(first="a", second="b").async_save()
        older = PwReordered(first="c", second="d")
        PwReordered._fields_ordered = ("second", "first", "id")
        await older.async_save()
    finally:
        PwReordered._fields_ordered = ordered
    stored = PwReordered._get_collection().find({}, {"_id": 0}).sort("first", 1)
    assert [list(son) for son in await stored.to_list(None)] == [
        ["first", "second"],
        ["second", "first"],
    ]


class PwPlace(EmbeddedDocument):
    """The embedded class whose hook and field the tests below change."""

    city = StringField()


class PwVisit(Document):
    """Holds a :class:`PwPlace`: its plans include the embedded class's."""

    meta = {"collection": "pw_visit"}
    place = EmbeddedDocumentField(PwPlace)


async def test_an_embedded_class_hook_patched_after_first_use_is_called(
    async_alias: str,
) -> None:
    """A ``to_mongo`` patched on an embedded class once its holder's save built
    the plans is called by the holder's next save, as MongoEngine calls it
    through the field: what it gives is stored."""
    await PwVisit(place=PwPlace(city="Lyon")).async_save()
    original = PwPlace.to_mongo

    def upper(self: Any, *args: Any, **kwargs: Any) -> Any:
        son = original(self, *args, **kwargs)
        son["city"] = son["city"].upper()
        return son

    with mock.patch.object(PwPlace, "to_mongo", upper):
        await PwVisit(place=PwPlace(city="Nice")).async_save()
    stored = PwVisit._get_collection().find({}, {"_id": 0}).sort("_id", 1)
    assert await stored.to_list(None) == [
        {"place": {"city": "Lyon"}},
        {"place": {"city": "NICE"}},
    ]


async def test_an_embedded_field_replaced_in_place_is_seen_by_its_holders_save(
    async_alias: str,
) -> None:
    """A field replaced in an embedded class's very ``_fields`` dict once its
    holder's save built the plans is seen by the holder's next save: the
    embedded value is validated by the new field, and nothing written."""
    fields = dict(PwPlace._fields)
    try:
        await PwVisit(place=PwPlace(city="Lyon")).async_save()
        older = PwVisit(place=PwPlace(city="Nice"))
        number = IntField()
        number.name = number.db_field = "city"
        number.owner_document = PwPlace
        PwPlace._fields["city"] = number
        with pytest.raises(ValidationError) as raised:
            await older.async_save()
        assert str(raised.value) == (
            "ValidationError (PwVisit:None) (city.Nice could not be converted "
            "to int: ['place'])"
        )
    finally:
        PwPlace._fields.clear()
        PwPlace._fields.update(fields)
    stored = PwVisit._get_collection().find({}, {"_id": 0})
    assert await stored.to_list(None) == [{"place": {"city": "Lyon"}}]


async def test_an_embedded_class_validate_patched_after_first_use_is_called(
    async_alias: str,
) -> None:
    """A ``validate`` patched on an embedded class once its holder's save built
    the plans is called by the holder's next save (MongoEngine's field calls
    it): its refusal is the save's, and nothing is written."""
    await PwVisit(place=PwPlace(city="Lyon")).async_save()

    def refuse(self: Any, clean: bool = True) -> None:
        raise ValidationError("place refused")

    with mock.patch.object(PwPlace, "validate", refuse):
        with pytest.raises(ValidationError) as raised:
            await PwVisit(place=PwPlace(city="Nice")).async_save()
    assert str(raised.value) == (
        "ValidationError (PwVisit:None) (place refused: ['place'])"
    )
    stored = PwVisit._get_collection().find({}, {"_id": 0})
    assert await stored.to_list(None) == [{"place": {"city": "Lyon"}}]


class PwDelta(Document):
    """A class given its own ``_delta`` by the test below."""

    meta = {"collection": "pw_delta"}
    name = StringField()
    size = IntField()


async def test_a_delta_patched_on_the_class_after_first_update_is_sent(
    async_alias: str,
) -> None:
    """A ``_delta`` patched on a class once the save of a loaded document built
    the plans is called by the next such save: MongoEngine's
    ``_get_update_doc`` sends what it gives, read back from the database."""
    document = await PwDelta(name="a", size=1).async_save()
    document.size = 2
    await document.async_save()
    original = PwDelta._delta

    def noted(self: Any) -> Any:
        sets, unsets = original(self)
        return {**sets, "note": "patched"}, unsets

    with mock.patch.object(PwDelta, "_delta", noted):
        document.size = 3
        await document.async_save()
    stored = PwDelta._get_collection().find({}, {"_id": 0})
    assert await stored.to_list(None) == [{"name": "a", "size": 3, "note": "patched"}]


async def test_changed_fields_patched_on_the_class_after_first_update_are_sent(
    async_alias: str,
) -> None:
    """A ``_get_changed_fields`` patched on a class once the save of a loaded
    document built the plans is called by the next such save: the field it
    adds is set, as MongoEngine's ``_delta`` reads it."""
    document = await PwDelta(name="a", size=1).async_save()
    document.size = 2
    await document.async_save()
    original = PwDelta._get_changed_fields

    def with_name(self: Any) -> list[str]:
        return [*original(self), "name"]

    document._data["name"] = "unmarked"  # (a change no setter noted)
    with mock.patch.object(PwDelta, "_get_changed_fields", with_name):
        document.size = 3
        await document.async_save()
    stored = PwDelta._get_collection().find({}, {"_id": 0})
    assert await stored.to_list(None) == [{"name": "unmarked", "size": 3}]


async def test_a_clear_patched_on_the_class_after_first_update_is_called(
    async_alias: str,
) -> None:
    """A ``_clear_changed_fields`` patched on a class once the save of a loaded
    document built the plans is what the next such save calls: the changes it
    leaves are still noted, as after MongoEngine's save."""
    document = await PwDelta(name="a", size=1).async_save()
    document.size = 2
    await document.async_save()
    with mock.patch.object(PwDelta, "_clear_changed_fields", lambda self: None):
        document.size = 3
        await document.async_save()
    assert document._get_changed_fields() == ["size"]
    stored = PwDelta._get_collection().find({}, {"_id": 0})
    assert await stored.to_list(None) == [{"name": "a", "size": 3}]


async def test_an_update_doc_patched_on_the_class_after_first_update_is_sent(
    async_alias: str,
) -> None:
    """A ``_get_update_doc`` patched on a class once the save of a loaded
    document built the plans is called by the next such save: what it gives
    is the update sent, read back from the database."""
    document = await PwDelta(name="a", size=1).async_save()
    document.size = 2
    await document.async_save()
    original = PwDelta._get_update_doc

    def noted(self: Any) -> dict[str, Any]:
        update = original(self)
        update["$set"]["note"] = "patched"
        return update

    with mock.patch.object(PwDelta, "_get_update_doc", noted):
        document.size = 3
        await document.async_save()
    stored = PwDelta._get_collection().find({}, {"_id": 0})
    assert await stored.to_list(None) == [{"name": "a", "size": 3, "note": "patched"}]


class PwLoaded(Document):
    """A class loaded again after the test below patches its field class."""

    meta = {"collection": "pw_loaded"}
    name = StringField()


async def test_a_field_class_setter_patched_after_first_load_is_called_by_loads(
    async_alias: str,
) -> None:
    """A ``__set__`` patched on a field class once a load built the plans is
    called by the next load, as MongoEngine's ``_from_son`` (through
    ``__init__``) calls it for each stored value."""
    await PwLoaded._get_collection().insert_one({"name": "b"})
    assert [doc.name async for doc in PwLoaded.objects] == ["b"]
    original = StringField.__set__

    def upper(field: Any, instance: Any, value: Any) -> None:
        original(field, instance, value.upper() if isinstance(value, str) else value)

    with mock.patch.object(StringField, "__set__", upper):
        assert [doc.name async for doc in PwLoaded.objects] == ["B"]


async def test_a_field_class_getter_patched_after_first_load_is_called_by_loads(
    async_alias: str,
) -> None:
    """A ``__get__`` patched on a field class once a load built the plans is
    called by the next load for a value not stored, as MongoEngine's
    ``__init__`` (behind ``_from_son``) sets each absent field to what
    ``getattr`` gives: that value is the document's."""
    await PwLoaded._get_collection().insert_one({})
    loaded = [doc async for doc in PwLoaded.objects.exclude("id")]
    assert [doc.to_mongo().to_dict() for doc in loaded] == [{}]
    original = StringField.__get__

    def named(field: Any, instance: Any, owner: Any) -> Any:
        value = original(field, instance, owner)
        return "from get" if instance is not None and value is None else value

    with mock.patch.object(StringField, "__get__", named):
        loaded = [doc async for doc in PwLoaded.objects.exclude("id")]
    assert [doc.to_mongo().to_dict() for doc in loaded] == [{"name": "from get"}]


class PwTagged(Document):
    """A class holding a list, whose MongoEngine class the test below patches."""

    meta = {"collection": "pw_tagged"}
    tags = ListField(StringField())


async def test_a_container_base_method_patched_after_first_use_is_called(
    async_alias: str,
) -> None:
    """A ``to_mongo`` patched on MongoEngine's ``ListField`` (which ours
    extends and calls) once a save built the plans is called by the next
    save: what it gives is stored."""
    await PwTagged(tags=["a"]).async_save()
    original = mongoengine.ListField.to_mongo

    def marked(field: Any, value: Any, *args: Any, **kwargs: Any) -> Any:
        return [*original(field, value, *args, **kwargs), "patched"]

    with mock.patch.object(mongoengine.ListField, "to_mongo", marked):
        await PwTagged(tags=["b"]).async_save()
    stored = PwTagged._get_collection().find({}, {"_id": 0}).sort("_id", 1)
    assert await stored.to_list(None) == [
        {"tags": ["a"]},
        {"tags": ["b", "patched"]},
    ]


class PwChoosing(Document):
    """A class with choices, whose field class the test below patches."""

    meta = {"collection": "pw_choosing"}
    status = StringField(choices=["open"])


async def test_a_choice_check_patched_after_first_use_is_called(
    async_alias: str,
) -> None:
    """A ``_validate_choices`` patched on a field class once a save built the
    plans is called by the next save (MongoEngine's ``_validate`` calls it for
    a field with choices): its refusal is the save's, and nothing written."""
    await PwChoosing(status="open").async_save()

    def refuse(field: Any, value: Any) -> None:
        field.error("choice refused")

    with mock.patch.object(StringField, "_validate_choices", refuse):
        with pytest.raises(ValidationError) as raised:
            await PwChoosing(status="open").async_save()
    assert str(raised.value) == (
        "ValidationError (PwChoosing:None) (choice refused: ['status'])"
    )
    stored = PwChoosing._get_collection().find({}, {"_id": 0})
    assert await stored.to_list(None) == [{"status": "open"}]


def test_field_class_methods_patched_after_first_use_are_called(
    sync_default: Any,
) -> None:
    """A field class's ``validate`` or ``to_mongo`` replaced after the plans
    were built (``mock.patch.object``) is called by the next validate and
    save, as MongoEngine calls it."""
    PwTicket(status="open", owner="first").save()

    def refuse(self: Any, value: Any) -> None:
        self.error("patched refusal")

    with mock.patch.object(StringField, "validate", refuse):
        with pytest.raises(mongoengine.ValidationError, match="patched refusal"):
            PwTicket(status="open", owner="refused").save()
    with mock.patch.object(StringField, "to_mongo", lambda self, value: value.upper()):
        PwTicket(status="open", owner="patched").save()
    PwTicket(status="open", owner="after").save()
    stored = sync_default.pw_ticket.distinct("owner")
    assert sorted(stored) == ["PATCHED", "after", "first"]


@pytest.mark.usefixtures("restored_ticket")
def test_methods_set_on_a_field_are_called(sync_default: Any) -> None:
    """A ``validate`` or ``to_mongo`` set on a field itself (not its class),
    before or after the plans were built, is called by validate and save, as
    MongoEngine calls it."""
    PwTicket(status="open", owner="first").save()

    def refuse(value: Any) -> None:
        PwTicket.size.error("refused by the field")

    PwTicket.size.validate = refuse  # type: ignore[method-assign]
    with pytest.raises(mongoengine.ValidationError, match="refused by the field"):
        PwTicket(status="open", size=1).save()
    del PwTicket.size.validate
    PwTicket.owner.to_mongo = lambda value: value.upper()  # type: ignore[method-assign]
    PwTicket(status="open", owner="upper").save()
    del PwTicket.owner.to_mongo
    PwTicket(status="open", owner="after").save()
    stored = sync_default.pw_ticket.distinct("owner")
    assert sorted(stored) == ["UPPER", "after", "first"]


@pytest.mark.usefixtures("restored_ticket")
def test_settings_changed_after_first_use_are_seen_by_the_constructor(
    sync_default: Any,
) -> None:
    """A ``default``, ``null``, ``choices`` or ``to_python`` set after the
    plans were built applies to the very next constructor (no save, validate
    or load in between), as MongoEngine's ``__init__`` reads them each time."""
    PwTicket(status="open", size=2).save()
    PwTicket.size.default = 1
    assert PwTicket().size == 1
    PwTicket.size.null = True
    assert PwTicket().size is None
    PwTicket.owner.choices = [("me", "Myself")]
    assert PwTicket(owner="me").get_owner_display() == "Myself"
    PwTicket.priority.to_python = lambda value: value * 2  # type: ignore[method-assign]
    ticket = PwTicket(status="open", priority=3)
    assert ticket.priority == 6
    ticket.save()
    PwTicket.size.null = False
    PwTicket(status="open").save()
    stored = sync_default.pw_ticket.find({}, {"_id": 0}).sort("_id", 1)
    assert list(stored) == [
        {"status": "open", "size": 2},
        # null: stored; to_mongo converts by the field's to_python again, as
        # MongoEngine's BaseField.to_mongo does (6 * 2)
        {"status": "open", "priority": 12, "size": None},
        {"status": "open", "size": 1},
    ]


def test_constructor_and_saves_refresh_the_plans_once_at_most(
    sync_default: Any,
) -> None:
    """Constructing compares no settings (its plan checks what it uses); a
    sync save compares them for its validate() and its to_mongo() only (not
    for to_mongo(fields=...), which is MongoEngine's own, nor for the update
    and the clearing of the changes, which follow its to_mongo())."""
    PwTicket(status="open").save()
    with mock.patch.object(plan_watch, "refresh", wraps=plan_watch.refresh) as spy:
        tickets = [PwTicket(status="open", owner=f"o{i}") for i in range(3)]
        assert spy.call_count == 0
        tickets[0].save()
        assert spy.call_count == 2
        tickets[0].owner = "changed"
        tickets[0].save()
        assert spy.call_count == 4
    assert sync_default.pw_ticket.count_documents({"owner": "changed"}) == 1


async def test_async_save_refreshes_the_plans_once(async_alias: str) -> None:
    """async_save compares the settings once, in its validate() (or itself
    when asked not to validate)."""
    await PwTicket(status="open").async_save()
    with mock.patch.object(plan_watch, "refresh", wraps=plan_watch.refresh) as spy:
        await PwTicket(status="open", owner="checked").async_save()
        assert spy.call_count == 1
        await PwTicket(status="open", owner="unchecked").async_save(validate=False)
        assert spy.call_count == 2
    collection = await PwTicket._async_get_collection()
    assert await collection.count_documents({"owner": {"$exists": True}}) == 2


# -- the generated functions' names ------------------------------------------------


class NmPart(EmbeddedDocument):
    """Its first field is a list: the item checks of the list must not take
    the settings of the next field, which valid() checks alongside."""

    codes = ListField(StringField(max_length=2))
    note = StringField(max_length=10)


class NmHolder(Document):
    meta = {"collection": "nm_holder"}
    part = EmbeddedDocumentField(NmPart)
    parts = ListField(EmbeddedDocumentField(NmPart))


def test_list_items_are_checked_by_their_own_field(sync_default: Any) -> None:
    """An embedded document's list field checked first, a field with the same
    kind of setting after it: the items are checked against the list's item
    field, and the save is refused as by MongoEngine."""
    NmHolder(part=NmPart(codes=["ab"], note="fine")).save()
    for values in (
        {"part": NmPart(codes=["toolong"], note="x")},
        {"parts": [NmPart(codes=["toolong"])]},
    ):
        document = NmHolder(**values)
        slow = outcome(functools.partial(mongoengine_validate, document))
        assert slow[0] == "raised"
        assert outcome(document.validate) == slow
        with pytest.raises(ValidationError, match="String value is too long"):
            document.save()
    assert sync_default.nm_holder.count_documents({}) == 1


class NmLists(Document):
    """Typed lists after fields whose dump keeps other item types."""

    meta = {"collection": "nm_lists"}
    info = DictField()
    ids = ListField(ObjectIdField())
    labels = ListField(StringField())
    counts = ListField(IntField())
    ratios = ListField(FloatField())


def test_list_items_convert_as_mongoengine_converts_them() -> None:
    """A list of items its item field converts ("7" for an IntField, an id's
    text for an ObjectIdField, an int for a FloatField) is converted by the
    constructor, whatever the field before it, as by ``__init__``."""
    values = {
        "ids": ["5f" * 12],
        "labels": ["a", b"b"],
        "counts": ["7", 2.0],
        "ratios": [1, "2.5"],
    }
    ours = NmLists(**values)
    theirs = mongoengine_new(NmLists, values)
    assert state(ours) == state(theirs)
    assert ours.ids == [ObjectId("5f" * 12)]
    assert ours.counts == [7, 2] and [type(item) for item in ours.counts] == [int, int]
    assert [type(item) for item in ours.ratios] == [float, float]


CALLS: list[str] = []


def numbered(name: str) -> Callable[[], int]:
    """A default recording its field's name at each call, numbering them."""

    def default() -> int:
        CALLS.append(name)
        return len(CALLS)

    return default


class OdPart(EmbeddedDocument):
    rank = IntField(default=numbered("part.rank"))


class OdHolder(Document):
    first = IntField(default=numbered("first"))
    part = EmbeddedDocumentField(OdPart)
    last = IntField(default=numbered("last"))


@pytest.mark.parametrize(
    "values",
    [
        {"last": None, "first": None},
        {"first": None},
        {"part": {"rank": None}, "first": None},
        {"first": None, "part": {"zz": 1}},  # (the part's conversion raises)
        {"part": OdPart(), "last": 3},
    ],
)
def test_defaults_are_called_in_mongoengines_order(values: dict[str, Any]) -> None:
    """A constructor calls the defaults of absent fields, then converts the
    given values in the order given (a value of None: the default called), as
    MongoEngine's ``__init__``, each once: a counter as default numbers the
    fields as there, even when a conversion raises."""
    assert_constructs_as_mongoengine(OdHolder, values)


def test_defaults_and_conversions_patched_after_first_use_run_once() -> None:
    """A default or a conversion set on a field once its class's constructor
    ran (``mock.patch.object``) is used, and the other defaults are called
    once each, as by ``__init__``, not again after the change is seen."""
    OdHolder()
    with mock.patch.object(OdHolder._fields["last"], "default", numbered("patched")):
        assert_constructs_as_mongoengine(OdHolder, {})
        assert CALLS == ["first", "patched"]
    part = OdHolder._fields["part"]
    with mock.patch.object(part, "to_python", lambda value: OdPart(rank=9)):
        assert_constructs_as_mongoengine(OdHolder, {"part": {}})
        assert CALLS == ["first", "last"]


def assert_constructs_as_mongoengine(model: type, values: dict[str, Any]) -> None:
    """``model(**values)`` makes the calls CALLS records in the order and
    number ``__init__`` makes them, and builds (state, ``to_mongo()``) or
    raises (type, message) what it builds or raises."""
    CALLS.clear()
    ours = outcome(lambda: model(**values))
    our_calls = list(CALLS)
    CALLS.clear()
    theirs = outcome(lambda: mongoengine_new(model, values))
    assert our_calls == CALLS
    assert ours[0] == theirs[0]
    if ours[0] == "raised":
        assert ours == theirs
    else:
        assert state(ours[1]) == state(theirs[1])
        assert ours[1].to_mongo() == theirs[1].to_mongo()


class OdKey(StringField):
    """A user's id field: its conversion, a reference's too, is user code."""

    def to_python(self, value: Any) -> Any:
        CALLS.append("key")
        return super().to_python(value)


class OdKeyed(Document):
    key = OdKey(primary_key=True)


class OdMixed(Document):
    """Each kind of field a constructor's order matters for."""

    first = IntField(default=numbered("first"))
    count = IntField()
    owner = ReferenceField(OdKeyed)
    part = EmbeddedDocumentField(OdPart)
    parts = ListField(EmbeddedDocumentField(OdPart))
    named = DictField(EmbeddedDocumentField(OdPart))
    loose = ListField()
    maybe = IntField(default=numbered("maybe"), null=True)
    shared = ListField(default=lambda: SHARED)
    ratio = FloatField()
    last = IntField(default=numbered("last"))


class Recording:
    """A value whose conversions (``int()``, ``float()``, a list's
    ``to_python``) are user code, recorded in CALLS."""

    def __init__(self, name: str) -> None:
        self.name = name

    def __int__(self) -> int:
        CALLS.append(f"{self.name}.__int__")
        return 4

    def __float__(self) -> float:
        CALLS.append(f"{self.name}.__float__")
        return 0.5

    def to_python(self) -> str:
        CALLS.append(f"{self.name}.to_python")
        return self.name


class OdOwn(EmbeddedDocument):
    """An embedded document with a ``to_python`` of its own (user code), which
    an untyped list's conversion calls."""

    def to_python(self) -> OdOwn:
        CALLS.append("own.to_python")
        return self


SHARED: list[int] = []
MIXED_VALUES = {
    "first": st.sampled_from([None, 5, float("inf")]),
    "count": st.sampled_from([None, 3, "4", float("inf"), Recording("count")]),
    "owner": st.sampled_from([None, "k", DBRef("od_keyed", "k")]),
    "part": st.sampled_from([None, {}, {"rank": None}, {"zz": 1}]),
    "parts": st.sampled_from([None, [], [{"rank": None}], [{"rank": 2}, {"zz": 1}]]),
    "named": st.sampled_from([None, {"a": {"rank": None}}, {"a": {"zz": 1}}]),
    "loose": st.sampled_from(
        [None, [{"_cls": "OdPart", "rank": None}], [1, Recording("loose")], [OdOwn()]]
    ),
    "maybe": st.sampled_from([None, 1]),
    "shared": st.sampled_from([None, [1]]),
    "ratio": st.sampled_from([None, 1, 10**400, Recording("ratio")]),
    "last": st.sampled_from([None, 7]),
}


@st.composite
def mixed_values(draw: st.DrawFn) -> dict[str, Any]:
    """Some of OdMixed's fields, in any order, each with a value of interest."""
    names = draw(st.permutations(list(MIXED_VALUES)))
    names = names[: draw(st.integers(0, len(names)))]
    return {name: draw(MIXED_VALUES[name]) for name in names}


@given(mixed_values())
@settings(max_examples=300, deadline=None)
@example({"count": float("inf"), "first": None})  # (no default called)
@example({"ratio": 10**400, "count": float("inf")})  # (the ratio's error)
@example({"part": {"rank": None}, "owner": "k"})  # (the key's, then the rank's)
@example({"part": {"rank": None}, "first": float("inf")})  # (the rank's, then raises)
@example({"count": Recording("count")})  # (the defaults, then the value's __int__)
@example({"ratio": Recording("ratio"), "loose": [1, Recording("loose")]})
@example({"loose": [OdOwn()]})  # (the defaults, then the document's to_python)
def test_constructors_run_defaults_and_conversions_as_mongoengine(
    values: dict[str, Any],
) -> None:
    """A constructor given any of these values, in any order, calls the
    defaults and the user's conversions (a reference's target's id field)
    in MongoEngine's order, each once (a value's own ``__int__`` too), and
    builds or raises what ``__init__`` builds or raises, even when a
    conversion that runs no user's code raises after a default was called."""
    assert_constructs_as_mongoengine(OdMixed, values)


@pytest.mark.parametrize(
    ("order", "linked"), [(["ratio", "loose"], False), (["loose", "ratio"], True)]
)
def test_an_embedded_document_given_is_linked_as_by_mongoengine(
    order: list[str], linked: bool
) -> None:
    """An embedded document given in a list to a constructor that raises is
    linked to the document (its ``_instance``) only when ``__init__`` set the
    list before the value that raises, as MongoEngine links it."""
    seen = []
    for build in (OdMixed, lambda **values: mongoengine_new(OdMixed, values)):
        part = OdPart(rank=1)
        values = {"ratio": 10**400, "loose": [part]}
        with pytest.raises(OverflowError, match="int too large to convert to float"):
            build(**{name: values[name] for name in order})
        seen.append(part._instance is not None)
    assert seen == [linked, linked]  # (ours, MongoEngine's)


class OdStream(Document):
    first = IntField(default=numbered("first"))
    counts = ListField(IntField())
    grid = ListField(ListField(IntField()))
    ratio = FloatField()


def test_a_generator_given_is_read_once_as_by_mongoengine() -> None:
    """A generator given for a list field (or in a list) is read once, by the
    conversion ``__init__`` makes: its error raised, as MongoEngine raises
    it, even when another value's error sends the values to ``__init__``;
    not an empty list stored in silence."""
    with pytest.raises(ValueError, match="invalid literal for int"):
        OdStream(counts=(int(text) for text in ["1", "x"]))
    with pytest.raises(OverflowError, match="int too large to convert to float"):
        OdStream(counts=(number for number in [1, 2]), ratio=10**400)
    with pytest.raises(ValueError, match="invalid literal for int"):
        OdStream(grid=[[1], (int(text) for text in ["1", "x"])])
    CALLS.clear()
    stream = OdStream(counts=(int(text) for text in ["1", "2"]), first=None)
    assert (stream.counts, stream.first, CALLS) == ([1, 2], 1, ["first"])


class ReadOnce:
    """An iterable, not an iterator, whose items can be read once only."""

    def __init__(self, texts: list[str]) -> None:
        self.read = (int(text) for text in texts)

    def __iter__(self) -> Any:
        return self.read


class Converted:
    """A value with its own ``to_python`` (a user's code), counting its calls."""

    def to_python(self) -> list[int]:
        CALLS.append("converted")
        return [1]


@pytest.mark.parametrize(
    "given",
    [
        lambda: {"counts": ReadOnce(["1", "x"])},
        lambda: {"grid": [ReadOnce(["1", "x"])]},
        lambda: {"grid": {(int(text) for text in ["1", "x"])}},
        lambda: {"grid": frozenset([(int(text) for text in ["1", "x"])])},
        lambda: {"grid": {"a": (int(text) for text in ["1", "x"])}.values()},
        lambda: {"grid": map(ReadOnce, [["1", "x"]])},
    ],
    ids=["iterable", "in a list", "in a set", "frozenset", "dict view", "map"],
)
def test_what_reads_once_given_is_read_once_as_by_mongoengine(
    given: Callable[[], dict[str, Any]],
) -> None:
    """Any value read once only given for a list field (not only a
    generator: an iterable of one pass, a generator in a set or a dict view)
    is read once, by ``__init__``'s conversion: its error raised, as
    MongoEngine raises it, not an empty list stored in silence."""
    with pytest.raises(ValueError, match="invalid literal for int"):
        OdStream(**given())


def test_a_values_own_conversion_runs_once_as_by_mongoengine() -> None:
    """A value with its own ``to_python`` given for a list field is converted
    once, after the absent fields' defaults, as by ``__init__``, even when
    another value's conversion raises."""
    CALLS.clear()
    with pytest.raises(OverflowError, match="int too large to convert to float"):
        OdStream(counts=Converted(), ratio=10**400)
    assert CALLS == ["first", "converted"]
    CALLS.clear()
    stream = OdStream(counts=Converted())
    assert (stream.counts, CALLS) == ([1], ["first", "converted"])


def test_mongoengine_field_class_methods_patched_after_first_use_are_called(
    sync_default: Any,
) -> None:
    """A method of one of MongoEngine's field classes whose own code the plans
    recognise (a list's or an embedded document's ``validate``,
    ``BaseField.to_mongo``, a container's ``to_mongo`` and ``to_python``),
    patched after the plans were built, is called by the next validate, save
    and load, as MongoEngine calls it; once restored the plans take over again."""
    PwTicket(status="open", owner="first", address=PwAddress(city="Lyon")).save()
    list(PwTicket.objects)

    def refuse(self: Any, value: Any, *args: Any, **kwargs: Any) -> None:
        self.error("patched refusal")

    with mock.patch.object(mongoengine.EmbeddedDocumentField, "validate", refuse):
        with pytest.raises(mongoengine.ValidationError, match="patched refusal"):
            PwTicket(status="open", address=PwAddress(city="Nice")).save()
    with mock.patch.object(
        mongoengine.base.BaseField, "to_mongo", lambda self, value: "patched"
    ):
        assert PwTicket(owner="me").to_mongo()["owner"] == "patched"
    holder = NmLists(counts=[1])
    holder.validate()
    with mock.patch.object(mongoengine.ListField, "validate", refuse):
        with pytest.raises(mongoengine.ValidationError, match="patched refusal"):
            holder.validate()
    with mock.patch.object(
        mongoengine.base.ComplexBaseField, "to_mongo", lambda self, value, *a, **k: [0]
    ):
        assert holder.to_mongo()["counts"] == [0]
    holder.save()
    list(NmLists.objects)
    with mock.patch.object(
        mongoengine.ListField, "to_python", lambda self, value: ["patched"]
    ):
        assert NmLists.objects.get(id=holder.id).counts == ["patched"]
    assert NmLists.objects.get(id=holder.id).counts == [1]
    holder.validate()
    assert holder.to_mongo()["counts"] == [1]


class PwPlain(Document):
    """No embedded document: nothing but its own plan stands for MongoEngine's
    document methods."""

    meta = {"collection": "pw_plain"}
    name = StringField()
    size = IntField()


class MePlain(mongoengine.Document):
    """PwPlain as plain MongoEngine: what MongoEngine's code calls."""

    meta = {"collection": "me_plain"}
    name = mongoengine.StringField()
    size = mongoengine.IntField()


def _spied(owner: type, name: str, calls: list[str]) -> Any:
    """A stand-in for MongoEngine's ``owner.name`` that notes each call in
    ``calls`` and does what it did."""
    original = inspect.getattr_static(owner, name)
    if isinstance(original, classmethod):
        method = original.__func__

        def spy_class(cls: Any, *args: Any, **kwargs: Any) -> Any:
            calls.append(name)
            return method(cls, *args, **kwargs)

        return classmethod(spy_class)

    def spy(self: Any, *args: Any, **kwargs: Any) -> Any:
        calls.append(name)
        return original(self, *args, **kwargs)

    return spy


def _sync_uses(model: Any, calls: list[str]) -> dict[str, int]:
    """How many calls each step on ``model`` makes (sync alias)."""
    steps: dict[str, int] = {}

    def step(label: str, action: Callable[[], Any]) -> None:
        calls.clear()
        action()
        steps[label] = len(calls)

    model.objects.delete()
    document = model(name="a", size=1)
    step("construct", lambda: model(name="b", size=2))
    step("validate", document.validate)
    step("to_mongo", document.to_mongo)
    step("save", document.save)
    document.size = 3
    step("save changes", document.save)
    step("insert", lambda: model.objects.insert([model(name="c")], load_bulk=False))
    step("load", lambda: list(model.objects))
    return steps


_MONGOENGINE_METHODS = [
    (mongoengine.Document, "validate"),
    (BaseDocument, "validate"),
    (mongoengine.Document, "to_mongo"),
    (BaseDocument, "to_mongo"),
    (BaseDocument, "__init__"),
    (BaseDocument, "_from_son"),
]


@pytest.mark.parametrize(("owner", "name"), _MONGOENGINE_METHODS)
def test_mongoengine_document_methods_patched_are_called(
    sync_default: Any, owner: type, name: str
) -> None:
    """A document method of MongoEngine's own classes that our classes
    override (``validate``, ``to_mongo``) or whose work the plans do
    (``__init__``, ``_from_son``), patched after the plans were built, is
    called by every step that calls it in MongoEngine, as often (the very
    next constructor too); once restored, the plans take over again."""
    calls: list[str] = []
    _sync_uses(PwPlain, calls)  # the plans built
    with mock.patch.object(owner, name, _spied(owner, name, calls)):
        ours = _sync_uses(PwPlain, calls)
        theirs = _sync_uses(MePlain, calls)
        assert ours == theirs
        assert to_bson._plans[PwPlain] is None
    _sync_uses(PwPlain, calls)
    assert to_bson._plans[PwPlain] is not None


async def test_mongoengine_document_methods_patched_are_called_by_async_saves(
    async_alias: str,
) -> None:
    """The same on an async alias: a patched ``validate`` or ``to_mongo``
    of MongoEngine's runs in ``async_save`` and ``async_insert``, its
    ``_get_update_doc`` (or the class's own, set after its first save) in the
    save of a loaded document."""
    document = await PwPlain(name="a", size=1).async_save()
    await PwPlain.objects.async_insert([PwPlain(name="b")], load_bulk=False)
    calls: list[str] = []
    for owner, name in [
        *_MONGOENGINE_METHODS[:4],
        (mongoengine.Document, "_get_update_doc"),
        (BaseDocument, "_delta"),
        (PwPlain, "_get_update_doc"),
    ]:
        with mock.patch.object(owner, name, _spied(owner, name, calls)):
            calls.clear()
            document.size += 1
            await document.async_save()
            assert calls, f"{owner.__name__}.{name} not called by async_save"
            if name == "to_mongo":
                calls.clear()
                await PwPlain.objects.async_insert([PwPlain(name="c")])
                assert calls, f"{owner.__name__}.{name} not called by async_insert"
    collection = await PwPlain._async_get_collection()
    assert (await collection.find_one({"_id": document.id}))["size"] == 8


class PwParent(Document):
    meta = {"collection": "pw_parent", "allow_inheritance": True}
    name = StringField()


class PwChild(PwParent):
    extra = StringField()


@pytest.fixture
def restored_child() -> Any:
    declared = dict(vars(PwChild.extra))
    yield
    vars(PwChild.extra).clear()
    vars(PwChild.extra).update(declared)


@pytest.mark.usefixtures("restored_child")
def test_insert_refreshes_the_plans_of_each_class_inserted(sync_default: Any) -> None:
    """``Parent.objects.insert([child])`` takes a setting changed on a field of
    the subclass since its plan was built, as MongoEngine's ``insert``."""
    PwParent.objects.insert([PwChild(name="first")])
    child = PwChild(name="second")
    PwChild.extra.null = True  # MongoEngine now stores extra: None
    PwParent.objects.insert([child])
    stored = sync_default.pw_parent.find_one({"_id": child.id}, {"_id": 0})
    assert stored == {"_cls": "PwParent.PwChild", "name": "second", "extra": None}


@pytest.mark.usefixtures("restored_child")
async def test_async_insert_refreshes_the_plans_of_each_class_inserted(
    async_alias: str,
) -> None:
    """The same through ``async_insert``."""
    await PwParent.objects.async_insert([PwChild(name="first")])
    child = PwChild(name="second")
    PwChild.extra.null = True
    await PwParent.objects.async_insert([child])
    stored = await mongoengine_async.get_async_db().pw_parent.find_one(
        {"_id": child.id}, {"_id": 0}
    )
    assert stored == {"_cls": "PwParent.PwChild", "name": "second", "extra": None}


def _refuse(*args: Any, **kwargs: Any) -> None:
    raise mongoengine.ValidationError("refused by the document's own method")


def test_methods_set_on_a_document_are_called(sync_default: Any) -> None:
    """A ``clean`` set on a document itself, a ``validate`` or ``clean`` on an
    embedded document, a ``to_mongo`` on a document inserted
    (``mock.patch.object(document, ...)``): called by validate, save and
    insert, as MongoEngine calls them (the plans skipped them)."""
    PwTicket(status="open", address=PwAddress(city="Lyon")).save()  # (plans)
    ticket = PwTicket(status="open", address=PwAddress(city="Nice"))
    with mock.patch.object(ticket, "clean", _refuse):
        with pytest.raises(mongoengine.ValidationError, match="own method"):
            ticket.save()
        ticket.validate(clean=False)
    for name in ("validate", "clean"):
        with mock.patch.object(ticket.address, name, _refuse):
            with pytest.raises(mongoengine.ValidationError, match="own method"):
                ticket.validate()
    ticket.save()
    inserted = PwTicket(owner="me")
    dump = inserted.to_mongo
    with mock.patch.object(
        inserted, "to_mongo", lambda *a, **k: {**dump(*a, **k), "owner": "ME"}
    ):
        PwTicket.objects.insert([inserted], load_bulk=False)
    assert sync_default.pw_ticket.find_one({"_id": inserted.id})["owner"] == "ME"


async def test_methods_set_on_a_document_are_called_by_async_writes(
    async_alias: str,
) -> None:
    """The same on an async alias (``async_save``, ``async_insert``), and a
    loaded document's own ``_get_update_doc``, ``_delta``,
    ``_get_changed_fields`` or ``_clear_changed_fields``, called by its save."""
    ticket = await PwTicket(status="open", size=1).async_save()
    with mock.patch.object(ticket, "clean", _refuse):
        with pytest.raises(mongoengine.ValidationError, match="own method"):
            await ticket.async_save()
    for name in (
        "_get_update_doc",
        "_delta",
        "_get_changed_fields",
        "_clear_changed_fields",
    ):
        with mock.patch.object(ticket, name, wraps=getattr(ticket, name)) as spy:
            ticket.size += 1
            await ticket.async_save()
        assert spy.called, name
    fresh = PwTicket(owner="me")
    dump = fresh.to_mongo
    with mock.patch.object(
        fresh, "to_mongo", lambda *a, **k: {**dump(*a, **k), "owner": "ME"}
    ):
        await fresh.async_save()
    inserted = PwTicket(owner="me")
    dump_inserted = inserted.to_mongo
    with mock.patch.object(
        inserted, "to_mongo", lambda *a, **k: {**dump_inserted(*a, **k), "owner": "ME"}
    ):
        await PwTicket.objects.async_insert([inserted], load_bulk=False)
    collection = await PwTicket._async_get_collection()
    assert await collection.count_documents({"owner": "ME"}) == 2
    assert (await collection.find_one({"_id": ticket.id}))["size"] == 5


def test_mongoengine_field_base_methods_patched_are_called(sync_default: Any) -> None:
    """``ComplexBaseField.validate`` (which a list's and a dict's ``validate``
    call) and ``BaseField._validate_choices`` (which ``_validate`` calls for
    a field with choices), patched, or a ``_validate_choices`` set on a
    field itself: called by validate and save, as MongoEngine calls them."""
    PwTicket(status="open", owner="first").save()
    holder = NmLists(labels=["a"])
    holder.validate()

    def refuse(self: Any, value: Any) -> None:
        self.error("patched refusal")

    with mock.patch.object(mongoengine.base.ComplexBaseField, "validate", refuse):
        with pytest.raises(mongoengine.ValidationError, match="patched refusal"):
            holder.validate()
    with mock.patch.object(mongoengine.base.BaseField, "_validate_choices", refuse):
        with pytest.raises(mongoengine.ValidationError, match="patched refusal"):
            PwTicket(status="open").save()
    with mock.patch.object(
        PwTicket.status,
        "_validate_choices",
        lambda value: refuse(PwTicket.status, value),
    ):
        with pytest.raises(mongoengine.ValidationError, match="patched refusal"):
            PwTicket(status="open").save()
    holder.validate()
    PwTicket(status="open").save()


@pytest.mark.parametrize("name", ["_from_son", "__init__", "__setattr__"])
def test_builders_patched_on_our_document_class_are_called_by_loads(
    sync_default: Any, name: str
) -> None:
    """``_from_son``, ``__init__`` or ``__setattr__`` patched on this package's
    ``Document`` (as a MongoEngine user patches ``mongoengine.Document``) is
    called for each document a query loads, as MongoEngine's queryset calls
    them; the loader took any method of this package's classes for its own."""
    PwPlain(name="a").save()
    PwPlain(name="b").save()
    list(PwPlain.objects)  # (the loader built)
    calls: list[str] = []
    with mock.patch.object(Document, name, _spied(Document, name, calls)):
        calls.clear()
        assert len(list(PwPlain.objects)) == 2
        assert calls
    calls.clear()
    list(PwPlain.objects)
    assert not calls


class PbHolder(Document):
    meta = {"collection": "pb_holder"}
    names = ListField(StringField())
    sorted_names = SortedListField(StringField())
    info = DictField()
    colour = EnumField(TbColour)


def test_base_methods_reached_through_super_patched_after_first_use_are_called() -> (
    None
):
    """``ComplexBaseField.validate`` (which ``ListField.validate`` and
    ``DictField.validate`` call through ``super()``) and ``BaseField.validate``
    (``EnumField.validate``'s), patched after the plans were built, are called
    by the next validate, as MongoEngine calls them (the plans recognised the
    subclasses' methods and skipped them)."""
    values = {
        "names": ["a"],
        "sorted_names": ["a"],
        "info": {"k": 1},
        "colour": TbColour.RED,
    }
    PbHolder(**values).validate()

    def refuse(self: Any, value: Any, *args: Any, **kwargs: Any) -> None:
        self.error("patched refusal")

    for name in values:
        document = PbHolder(**{name: values[name]})
        document.validate()
        base = mongoengine.base
        owner = base.BaseField if name == "colour" else base.ComplexBaseField
        with mock.patch.object(owner, "validate", refuse):
            with pytest.raises(mongoengine.ValidationError, match="patched refusal"):
                document.validate()
            with pytest.raises(mongoengine.ValidationError, match="patched refusal"):
                PbHolder(**{name: values[name]}).validate()
        document.validate()
