"""The generated plans give MongoEngine's results on random schemas.

test_to_bson.py, test_loading_equivalence.py and test_write_equivalence.py
draw values for a fixed set of models; here Hypothesis draws the models too:
a document class (sometimes with a subclass adding fields, an abstract base,
``strict: False`` or its own primary key) of fields of every kind that loads
and dumps without I/O (files and images by their proxies, sequences, cached
references too), with random settings (``db_field``, two fields whose
stored names are each other's name, ``required``, ``null``, defaults, choices,
bounds, ``validation=``) and item fields, up to two embedded document classes
of such fields (the second may hold the first), and custom field classes
overriding ``to_python``/``to_mongo``/``validate``. For each model and drawn
values (valid, invalid, or of another type the field converts) the
construction, ``validate`` (with and without ``clean``), ``to_mongo`` and the
loading of the stored form (and of sons with junk values) must be
MongoEngine's own, on the same class (an ObjectId a load makes, the same
nowhere, compared as such); then a field setting changes, or a
method of a MongoEngine field class is patched, and the same must hold again
(the plans are rebuilt, or step aside).
"""

from __future__ import annotations

import copy
import datetime
import decimal
import enum
import functools
import itertools
import uuid
from collections.abc import Callable
from typing import Any
from unittest import mock

import bson
import mongoengine
from bson import DBRef, ObjectId
from hypothesis import HealthCheck, given, note
from hypothesis import strategies as st
from mongoengine.base import BaseDocument, BaseField
from mongoengine.fields import GridFSProxy, ImageGridFsProxy

import mongoengine_async as me
from fuzz_budget import budget
from mongoengine_async import plan_watch
from mongoengine_async.from_bson import loader
from test_loading import CODEC
from test_to_bson import mongoengine_new, outcome, son_form, state, stored_form

NAMES = itertools.count()


class RsColor(enum.Enum):
    RED = "r"
    GREEN = "g"


class RsTarget(me.Document):
    name = me.StringField()


class RsUpper(me.StringField):
    """Stores upper case, reads lower case."""

    def to_python(self, value: Any) -> Any:
        value = super().to_python(value)
        return value.lower() if isinstance(value, str) else value

    def to_mongo(self, value: Any) -> Any:
        return value.upper() if isinstance(value, str) else value


class RsEven(me.IntField):
    def validate(self, value: Any) -> None:
        super().validate(value)
        if isinstance(value, int) and value % 2:
            self.error("must be even")


def refuse_xyz(value: Any) -> None:
    if value in ("xyz", 10, 2.5):
        raise mongoengine.ValidationError("refused by validation=")


SOME_ID = ObjectId("5f" * 12)
DT = datetime.datetime(2024, 5, 6, 7, 8, 9, 123000)

# Each kind: (make(options) -> field, values the field takes or converts, other values).
KINDS: dict[str, tuple[Callable[..., BaseField], list[Any], list[Any]]] = {
    "string": (me.StringField, ["", "a", "ab", "abc", "xyz", "ba"], [5, b"x", ["a"]]),
    "int": (me.IntField, [0, 1, 2, -3, 10, 2**40, "7", 3.0, True], ["x", 2.5, [1]]),
    "long": (me.LongField, [0, 5, 2**40], ["x", [1]]),
    "float": (me.FloatField, [0.0, 1.5, -1.0, 3, "2.5", 2.5], ["x", [1.0]]),
    "boolean": (me.BooleanField, [True, False, 1, 0], ["true", [True]]),
    "decimal": (
        me.DecimalField,
        [decimal.Decimal("1.25"), 3, 2.5, "4.125"],
        ["x", [1], {"a": 1}],
    ),
    "datetime": (
        me.DateTimeField,
        [DT, datetime.date(2020, 2, 3), "2021-03-04"],
        ["no", 5.5],
    ),
    "date": (me.DateField, [DT, datetime.date(2020, 2, 3)], ["no", [1]]),
    "complex_datetime": (me.ComplexDateTimeField, [DT], ["no", 5]),
    "uuid": (
        me.UUIDField,
        [uuid.UUID(int=5), "12345678-1234-5678-1234-567812345678"],
        ["no", 5],
    ),
    "object_id": (me.ObjectIdField, [SOME_ID, "5f" * 12], ["zz", 5]),
    "email": (me.EmailField, ["a@b.com"], ["nope", 5]),
    "url": (me.URLField, ["http://a.com/x"], ["nope", 5]),
    "binary": (me.BinaryField, [b"", b"ab", b"abcdef", bytearray(b"xy")], ["s", 5]),
    "enum": (lambda **o: me.EnumField(RsColor, **o), [RsColor.RED, "g"], ["x", 5]),
    "point": (
        me.PointField,
        [[1, 2], {"type": "Point", "coordinates": [1.5, 2]}],
        [[1], "x"],
    ),
    "geo_point": (me.GeoPointField, [[1, 2], (3.5, 4)], [[1], "x"]),
    "dynamic": (me.DynamicField, [1, "a", [1, "b"], {"k": [1]}, DT], [{"$x": 1}]),
    "upper": (RsUpper, ["abc", "Xy"], [5]),
    "even": (RsEven, [0, 2, 3, "4"], ["x"]),
    "reference": (
        lambda **o: me.ReferenceField(RsTarget, **o),
        [SOME_ID, DBRef("rs_target", SOME_ID), RsTarget(id=SOME_ID, name="t")],
        ["x", 5, RsTarget(name="unsaved")],
    ),
    "lazy_reference": (
        lambda **o: me.LazyReferenceField(RsTarget, **o),
        [SOME_ID, RsTarget(id=SOME_ID, name="t")],
        ["x", RsTarget(name="unsaved")],
    ),
    "generic_reference": (
        me.GenericReferenceField,
        [RsTarget(id=SOME_ID, name="t")],
        ["x", 5],
    ),
    "generic_lazy_reference": (
        me.GenericLazyReferenceField,
        [RsTarget(id=SOME_ID, name="t")],
        ["x", 5, RsTarget(name="unsaved")],
    ),
    "line_string": (
        me.LineStringField,
        [[[1, 2], [3, 4]], {"type": "LineString", "coordinates": [[1, 2], [3, 4]]}],
        [[1], "x", [[1, 2]]],
    ),
    "polygon": (
        me.PolygonField,
        [[[[0, 0], [0, 1], [1, 1], [0, 0]]]],
        [[[1, 2]], "x", [[[0, 0], [0, 1], [1, 1]]]],
    ),
    "multi_point": (me.MultiPointField, [[[1, 2], [3, 4]]], [[1, 2], "x"]),
    "multi_line_string": (
        me.MultiLineStringField,
        [[[[1, 2], [3, 4]]]],
        [[[1, 2]], "x", [[[1, 2]]]],
    ),
    "multi_polygon": (
        me.MultiPolygonField,
        [[[[[0, 0], [0, 1], [1, 1], [0, 0]]]]],
        [[[[1, 2]]], "x"],
    ),
    "decimal_string": (
        lambda **o: me.DecimalField(force_string=True, **o),
        [decimal.Decimal("1.25"), 3, "4.125"],
        ["x", [1]],
    ),
    "sequence_list": (
        lambda **o: me.ListField(me.ListField(me.IntField()), **o),
        [[], [[1, 2], []], [[3]]],
        [[1], [["x"]], "x"],
    ),
    "map_of_lists": (
        lambda **o: me.MapField(me.ListField(me.StringField()), **o),
        [{}, {"a": ["x", "y"]}, {"b": []}],
        [{"a": "x"}, {"a": [1]}, ["x"]],
    ),
    "list_of_dicts": (
        lambda **o: me.ListField(me.DictField(), **o),
        [[], [{"a": 1}], [{"b": [1, {"c": 2}]}, {}]],
        [[1], "x", [{"$a": 1}]],
    ),
    # A file by its proxy (bytes, a string or a file object would be stored at
    # once: I/O), an id or a number refused by validate.
    "file": (
        me.FileField,
        [GridFSProxy(grid_id=SOME_ID), GridFSProxy()],
        [SOME_ID, 5, ImageGridFsProxy(grid_id="x")],
    ),
    # (Its value is made by the database only when read as None.)
    "sequence": (me.SequenceField, [1, 7, "8"], ["x", [1], 2.5]),
    "cached_reference": (
        lambda **o: me.CachedReferenceField(RsTarget, fields=["name"], **o),
        [RsTarget(id=SOME_ID, name="t"), RsTarget(id=SOME_ID)],
        ["x", 5, RsTarget(name="unsaved"), SOME_ID, DBRef("rs_target", SOME_ID)],
    ),
}
try:
    import PIL  # noqa: F401
except ImportError:  # (ImageField needs Pillow: the other kinds run without it)
    pass
else:
    KINDS["image"] = (
        lambda **o: me.ImageField(size=(4, 4, True), **o),
        [ImageGridFsProxy(grid_id=SOME_ID), ImageGridFsProxy()],
        [SOME_ID, GridFSProxy(grid_id=SOME_ID), 5],
    )
# Scalar kinds a list, dict or map may hold.
ITEM_KINDS = [
    "string",
    "int",
    "float",
    "boolean",
    "object_id",
    "datetime",
    "enum",
    "reference",
    "upper",
    "decimal",
    "uuid",
    "binary",
    "date",
    "long",
    "email",
    "dynamic",
    "lazy_reference",
    "generic_reference",
    "point",
    "file",
    "cached_reference",
]
BOUNDED = {
    "string": ("max_length", "min_length"),
    "int": ("min_value", "max_value"),
    "float": ("min_value", "max_value"),
    "long": ("min_value", "max_value"),
    "binary": ("max_bytes",),
}
JUNK = [
    0,
    7,
    2.5,
    True,
    "",
    "abc",
    b"by",
    [],
    ["a"],
    [1, "x"],
    {},
    {"k": 1},
    SOME_ID,
    DT,
    DBRef("rs_target", SOME_ID),
    uuid.UUID(int=1),
    {"_id": SOME_ID, "name": "t"},  # (a cached reference's stored form)
]


@st.composite
def field_specs(
    draw: st.DrawFn, embedded: list[type], depth: int = 0, in_embedded: bool = False
) -> tuple[Callable[[], BaseField], st.SearchStrategy, st.SearchStrategy]:
    """A field factory, and strategies of the values it takes and refuses
    (``in_embedded``: of an embedded class, which takes no cached reference)."""
    containers = ["list", "dict", "map", "sorted_list"]
    kinds = [*KINDS, *containers] if depth == 0 else ITEM_KINDS
    if in_embedded:
        kinds = [kind for kind in kinds if kind != "cached_reference"]
    if depth == 0 and embedded:
        kinds += ["embedded", "embedded_list", "generic_embedded", "embedded_map"]
    if depth == 0 and draw(st.booleans()):  # containers half the time
        kinds = containers
    kind = draw(st.sampled_from(kinds))
    options: dict[str, Any] = {}
    if kind in ("list", "sorted_list", "dict", "map"):
        inner_kind = draw(
            st.sampled_from(ITEM_KINDS if kind != "sorted_list" else ["int", "string"])
        )
        make_inner, inner_values, inner_junk = KINDS[inner_kind]
        inner_options = draw(settings_for(inner_kind, inner_values))
        typed = kind != "dict" or draw(st.booleans())
        container = {
            "list": me.ListField,
            "sorted_list": me.SortedListField,
            "dict": me.DictField,
            "map": me.MapField,
        }[kind]
        if kind in ("list", "sorted_list") and draw(st.booleans()):
            options["max_length"] = draw(st.integers(0, 3))

        def make_container(**given: Any) -> BaseField:
            inner = make_inner(**inner_options) if typed else None
            if kind in ("dict", "map"):
                return container(field=inner, **given) if inner else container(**given)
            return container(inner, **given)

        item = (
            st.sampled_from(inner_values)
            if typed
            else st.sampled_from([1, "a", [1, 2], {"n": 1}, None, DT])
        )
        if kind in ("list", "sorted_list"):
            good = st.lists(item, max_size=3)
            bad = st.one_of(
                st.lists(st.sampled_from(inner_junk), min_size=1, max_size=2),
                st.sampled_from(["x", 5]),
            )
        else:
            good = st.dictionaries(st.sampled_from("abk"), item, max_size=3)
            bad = st.one_of(
                st.dictionaries(
                    st.sampled_from(["a", "$a", "a.b"]),
                    st.sampled_from(inner_junk),
                    min_size=1,
                    max_size=2,
                ),
                st.sampled_from(["x", [1]]),
            )
        make = make_container
    elif kind in ("embedded", "embedded_list", "generic_embedded", "embedded_map"):
        document_type = draw(st.sampled_from(embedded))
        one = embedded_values(document_type)
        if kind == "embedded":
            make = lambda **given: me.EmbeddedDocumentField(document_type, **given)  # noqa: E731
            good, bad = one, st.sampled_from([5, "x", {"a": 1}])
        elif kind == "embedded_list":
            make = lambda **given: me.EmbeddedDocumentListField(document_type, **given)  # noqa: E731
            good, bad = st.lists(one, max_size=2), st.sampled_from([[5], "x"])
        elif kind == "embedded_map":
            make = lambda **given: me.MapField(  # noqa: E731
                me.EmbeddedDocumentField(document_type), **given
            )
            good = st.dictionaries(st.sampled_from("ab"), one, max_size=2)
            bad = st.sampled_from([{"a": 5}, "x", [1]])
        else:
            make, good, bad = (
                me.GenericEmbeddedDocumentField,
                one,
                st.sampled_from([5, "x"]),
            )
    else:
        make, values, junk = KINDS[kind]
        options = draw(settings_for(kind, values))
        good, bad = st.sampled_from(values), st.sampled_from(junk)
    if draw(st.integers(0, 4)) == 0:
        options["required"] = True
    if draw(st.integers(0, 5)) == 0:
        options["null"] = True
    if (
        kind
        not in (
            "reference",
            "lazy_reference",
            "generic_reference",
            "generic_lazy_reference",
        )
        and draw(st.integers(0, 3)) == 0
    ):
        default = draw(good)
        options["default"] = draw(
            st.sampled_from([default, lambda: copy.deepcopy(default)])
        )
    final = dict(options)
    return (lambda **given: make(**{**final, **given})), good, bad


@st.composite
def settings_for(draw: st.DrawFn, kind: str, values: list[Any]) -> dict[str, Any]:
    options: dict[str, Any] = {}
    for name in BOUNDED.get(kind, ()):
        if draw(st.booleans()):
            options[name] = draw(st.integers(-1, 4))
    if kind == "string" and draw(st.integers(0, 3)) == 0:
        options["regex"] = draw(st.sampled_from(["^a", "b$"]))
    if kind in ("string", "int", "float") and draw(st.integers(0, 3)) == 0:
        options["validation"] = refuse_xyz
    hashable = [value for value in values if isinstance(value, str | int | float)]
    if hashable and kind != "enum" and draw(st.integers(0, 3)) == 0:
        options["choices"] = draw(
            st.lists(st.sampled_from(hashable), min_size=1, max_size=3, unique=True)
        )
    if kind == "decimal" and draw(st.booleans()):
        options["precision"] = draw(st.integers(0, 3))
    if kind == "uuid":
        options["binary"] = draw(st.booleans())
    return options


def embedded_values(document_type: type) -> st.SearchStrategy:
    return st.fixed_dictionaries({}, optional=document_type._rs_values).map(
        lambda values: document_type(**values)
    )


@st.composite
def models(draw: st.DrawFn) -> tuple[list[type], list[type]]:
    """A document class (and its subclass, if it has one) and the embedded
    classes its fields hold; each class has ``_rs_good``/``_rs_bad`` strategies
    by field name."""
    number = next(NAMES)
    embedded = []
    for index in range(draw(st.integers(0, 2))):
        attrs: dict[str, Any] = {}
        good: dict[str, Any] = {}
        for position in range(draw(st.integers(1, 4))):
            # The first field may be a container, or hold an embedded class
            # made before (embedded documents in embedded documents).
            make, values, _ = draw(
                field_specs(list(embedded), 1 if position else 0, in_embedded=True)
            )
            attrs[f"e{position}"] = make()
            good[f"e{position}"] = values
        meta = {"allow_inheritance": draw(st.booleans())}
        cls = type(
            f"RsPart{number}x{index}", (me.EmbeddedDocument,), {**attrs, "meta": meta}
        )
        cls._rs_values = good
        embedded.append(cls)
    attrs, good, bad = {}, {}, {}
    count = draw(st.integers(1, 6))
    swap = draw(st.integers(0, 3)) == 0 and count > 1
    for position in range(count):
        make, values, junk = draw(field_specs(embedded))
        stored = draw(st.sampled_from([None, None, f"s{position}"]))
        if swap and position < 2:
            stored = f"f{1 - position}"  # two fields stored under each other's name
        attrs[f"f{position}"] = make(**({"db_field": stored} if stored else {}))
        good[f"f{position}"], bad[f"f{position}"] = values, junk
    if draw(st.integers(0, 5)) == 0:
        attrs["code"] = me.StringField(primary_key=True)
        good["code"], bad["code"] = st.sampled_from(["k1", "k2"]), st.just(5)
    inherit = draw(st.booleans())
    base = me.DynamicDocument if draw(st.integers(0, 6)) == 0 else me.Document
    meta: dict[str, Any] = {"collection": f"rs_{number}", "allow_inheritance": inherit}
    if base is me.Document and draw(st.integers(0, 6)) == 0:
        meta["strict"] = False
    if draw(st.integers(0, 4)) == 0:
        abstract = type(
            f"RsBase{number}", (base,), {**attrs, "meta": {"abstract": True}}
        )
        cls = type(f"RsModel{number}", (abstract,), {"meta": meta})
    else:
        cls = type(f"RsModel{number}", (base,), {**attrs, "meta": meta})
    cls._rs_good, cls._rs_bad = good, bad
    classes = [cls]
    if inherit and draw(st.booleans()):
        make, values, junk = draw(field_specs(embedded))
        sub = type(f"RsSub{number}", (cls,), {"extra": make()})
        sub._rs_good, sub._rs_bad = {**good, "extra": values}, {**bad, "extra": junk}
        classes.append(sub)
    return classes, embedded


@st.composite
def values_for(draw: st.DrawFn, cls: type) -> dict[str, Any]:
    values = {}
    for name in cls._rs_good:
        choice = draw(st.integers(0, 9))
        if choice < 2:
            continue
        if choice == 2:
            values[name] = None
        elif choice == 3:
            values[name] = draw(cls._rs_bad[name])
        else:
            values[name] = draw(cls._rs_good[name])
    return values


@st.composite
def junk_sons(draw: st.DrawFn, cls: type) -> dict[str, Any]:
    son: dict[str, Any] = {"_id": draw(st.sampled_from([SOME_ID, ObjectId("6" * 24)]))}
    if cls._meta.get("allow_inheritance") and draw(st.booleans()):
        son["_cls"] = draw(st.sampled_from([cls._class_name, "Nowhere"]))
    for name, field in cls._fields.items():
        if name in ("id", "_cls") or field.primary_key or draw(st.integers(0, 4)) == 0:
            continue
        key = field.db_field if draw(st.integers(0, 9)) else name
        son[key] = draw(st.sampled_from(JUNK))
    return son


# -- comparing ------------------------------------------------------------------------


def through_bson(son: Any) -> dict:
    return bson.decode(bson.encode(son), codec_options=CODEC)


def own_copy(values: dict[str, Any]) -> dict[str, Any]:
    """The values for one side: embedded documents (which a clean() may change
    and a construction links) copied, the rest shared (an unsaved document
    equals only itself)."""
    return {
        name: copy.deepcopy(value)
        if isinstance(value, mongoengine.EmbeddedDocument)
        or (
            isinstance(value, list)
            and any(isinstance(item, mongoengine.EmbeddedDocument) for item in value)
        )
        else value
        for name, value in values.items()
    }


def compare_writes(cls: type, values: dict[str, Any]) -> Any:
    """Construction, validate (both clean flags) and to_mongo, ours and
    MongoEngine's; the stored form of the document (or None)."""
    fast = outcome(lambda: cls(**own_copy(values)))
    slow = outcome(lambda: mongoengine_new(cls, own_copy(values)))
    assert fast[0] == slow[0], (fast, slow)
    if fast[0] == "raised":
        assert fast == slow
        return None
    assert state(fast[1]) == state(slow[1])
    for clean in (True, False):
        ours, theirs = cls(**own_copy(values)), cls(**own_copy(values))
        assert outcome(functools.partial(ours.validate, clean=clean)) == outcome(
            functools.partial(BaseDocument.validate, theirs, clean=clean)
        )
        assert state(ours) == state(theirs)
    dumped = outcome(lambda: son_form(fast[1].to_mongo()))
    assert dumped == outcome(lambda: son_form(mongoengine.Document.to_mongo(slow[1])))
    if dumped[0] == "raised":
        return None
    try:
        return through_bson(fast[1].to_mongo())
    except Exception:  # (a value BSON cannot encode: no stored form)
        return None


def compare_loads(cls: type, son: dict) -> None:
    """Our loaders (plain and owning) against MongoEngine's ``_from_son``."""
    for owned in (False, True):
        slow = outcome(lambda: cls._from_son(copy.deepcopy(son)))
        load = loader(cls, owned=owned)
        fast = outcome(lambda: load(copy.deepcopy(son)))  # noqa: B023
        if slow[0] == "raised":
            assert fast[0] == "raised"
            assert fast[1][0] is slow[1][0]  # (docs: MongoEngine's error, its type)
        else:
            assert fast[0] == "ok", fast
            known = ids_in(son)
            assert without_fresh_ids(loaded_state(fast[1]), known) == (
                without_fresh_ids(loaded_state(slow[1]), known)
            )


def loaded_state(document: Any) -> Any:
    """A loaded document: its class, values (with types), flags, changes,
    display methods, dynamic fields and stored form."""
    flags = {
        name: getattr(document, name)
        for name in ("_initialised", "_created", "_changed_fields", "_cls")
    }
    displays = sorted(name for name in vars(document) if name.endswith("_display"))
    return (
        type(document),
        {name: stored_form(value) for name, value in document._data.items()},
        flags,
        displays,
        sorted(document._dynamic_fields),
        outcome(lambda: son_form(document.to_mongo())),
    )


def ids_in(value: Any) -> set[ObjectId]:
    """The ObjectIds in a son (in its DBRefs, lists and dicts too)."""
    if isinstance(value, ObjectId):
        return {value}
    if isinstance(value, DBRef):
        return ids_in(value.id)
    if isinstance(value, dict):
        value = list(value.values())
    if isinstance(value, list):
        return set().union(*map(ids_in, value))
    return set()


FRESH = "an ObjectId made by the load"


def without_fresh_ids(value: Any, known: set[ObjectId]) -> Any:
    """A loaded state with the ObjectIds that are not in the son (``known``)
    replaced by ``FRESH``: a field's ``to_python`` given None in a container
    (MongoEngine's ``_from_son`` hands a field another field's value when a
    stored name is another field's attribute name) makes a new one, with
    ``ObjectId(None)``, at each load. Everything else is kept as it is."""
    if isinstance(value, ObjectId):
        return value if value in known else FRESH
    if isinstance(value, DBRef):  # (and LazyReference)
        return type(value), without_fresh_ids(dict(value.as_doc()), known)
    if isinstance(value, mongoengine.Document) and value.pk is not None:
        return type(value), without_fresh_ids(value.pk, known)
    if isinstance(value, dict):
        return {key: without_fresh_ids(item, known) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return type(value), [without_fresh_ids(item, known) for item in value]
    return value


def describe(classes: list[type]) -> str:
    """The drawn classes, field by field (shown with a failing example)."""
    lines = []
    for cls in classes:
        lines.append(f"{cls.__name__}({cls.__mro__[1].__name__}, {cls._meta}):")
        for name, field in cls._fields.items():
            inner = getattr(field, "field", None)
            settings = {k: v for k, v in vars(field).items() if k != "field"}
            lines.append(f"  {name}: {type(field).__name__} {settings}")
            if inner is not None:
                lines.append(f"    item: {type(inner).__name__} {vars(inner)}")
    return "\n".join(lines)


def change_a_setting(
    data: st.DataObject, classes: list[type], embedded: list[type]
) -> None:
    """A field setting changed after the plans were built."""
    cls = data.draw(st.sampled_from([*classes, *embedded]))
    names = [
        name
        for name, field in cls._fields.items()
        if name not in ("id", "_cls") and not field.primary_key
    ]
    if not names:
        return
    field = cls._fields[data.draw(st.sampled_from(names))]
    if getattr(field, "field", None) is not None and data.draw(st.booleans()):
        field = field.field
    setting = data.draw(
        st.sampled_from(
            [
                "required",
                "null",
                "choices",
                "max_length",
                "min_value",
                "max_value",
                "validation",
                "default",
            ]
        )
    )
    if setting in ("required", "null"):
        setattr(field, setting, not getattr(field, setting))
    elif setting == "choices":
        field.choices = data.draw(
            st.sampled_from([None, ["a", "b"], [1, 2], [RsColor.RED]])
        )
    elif setting == "validation":
        field.validation = None if field.validation else refuse_xyz
    elif setting == "default":
        field.default = None
    else:
        setattr(field, setting, data.draw(st.sampled_from([None, 0, 1, 2])))


def patch_a_field_method(data: st.DataObject, classes: list[type]) -> Any:
    """A method of one of MongoEngine's field classes patched (as a test's
    ``mock.patch.object`` does) after the plans were built: it refuses, or
    changes, the values "abc" and 2."""
    fields = [
        inner
        for cls in classes
        for field in cls._fields.values()
        for inner in (field, getattr(field, "field", None))
        if inner is not None
    ]
    field = data.draw(st.sampled_from(fields))
    name = data.draw(st.sampled_from(["validate", "to_python", "to_mongo"]))
    owners = [
        klass
        for klass in type(field).__mro__
        if klass.__module__.startswith("mongoengine.") and name in vars(klass)
    ]
    if not owners:
        return mock.patch.object(RsTarget, "_rs_unused", None, create=True)
    owner = data.draw(st.sampled_from(owners))
    original = vars(owner)[name]

    def marked(value: Any) -> bool:
        if isinstance(value, list | dict):
            return any(
                map(marked, value.values() if isinstance(value, dict) else value)
            )
        return isinstance(value, str | int) and value in ("abc", 2)

    def patched(self: Any, value: Any, *args: Any, **kwargs: Any) -> Any:
        if name == "validate" and marked(value):
            self.error("refused by the patch")
        result = original(self, value, *args, **kwargs)
        return "patched" if name != "validate" and marked(result) else result

    return mock.patch.object(owner, name, patched)


# More with RANDOM_SCHEMAS_EXAMPLES=2000 (see fuzz_budget.py).
EXAMPLES = budget(
    "schemas",
    200,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


@EXAMPLES
@given(models(), st.data())
def test_random_models_write_and_load_as_mongoengine(
    drawn: tuple[list[type], list[type]], data: st.DataObject
) -> None:
    classes, embedded = drawn
    note(describe([*classes, *embedded]))
    saved = [
        (field, dict(vars(field)))
        for cls in [*classes, *embedded]
        for field in cls._fields.values()
    ]
    saved += [
        (field.field, dict(vars(field.field)))
        for field, _ in list(saved)
        if getattr(field, "field", None) is not None
    ]
    try:
        for step in ("as declared", "a setting changed", "a method patched"):
            patch: Any = mock.patch.object(RsTarget, "_rs_unused", None, create=True)
            if step == "a setting changed":
                change_a_setting(data, classes, embedded)
            elif step == "a method patched":
                patch = patch_a_field_method(data, classes)
            with patch:
                for cls in classes:
                    # A field class's to_python patched reaches the constructor
                    # at the next call that compares the plans' sources
                    # (docs/architecture.md): here, that call.
                    plan_watch.refresh(cls)
                    for _ in range(3):
                        son = compare_writes(cls, data.draw(values_for(cls)))
                        if son is not None:
                            compare_loads(cls, son)
                    try:
                        son = through_bson(data.draw(junk_sons(cls)))
                    except Exception:
                        continue
                    compare_loads(cls, son)
    finally:
        for field, declared in saved:
            vars(field).clear()
            vars(field).update(declared)
