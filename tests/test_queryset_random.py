"""Random querysets and updates give what MongoEngine's give.

Hypothesis draws a few documents (strings, numbers, decimals, dates, lists,
embedded documents and lists of them, dicts, maps, references, renamed fields, a
subclass stored with ``_cls``; and a class with a string primary key and a
default ordering), a chain of queryset methods (filters with every operator,
``Q`` trees, ``__raw__``, ordering, slices, projections, scalars, read
preferences, options...), an argument for each terminal (``select_related`` and
``explain`` too), and an update. Every terminal reads the stored documents
through the chain, then the update writes; the whole scenario runs three times
on the same stored documents: through MongoEngine's own QuerySet on a
``connect()`` alias, through ours on a ``connect()`` alias and through ours on
an async alias (its ``async_*`` terminals). Compared: the results (values,
order, the types of the loaded values; a reference by its id, as an async alias
reads it as a proxy, or the document select_related loaded; the shape of an
explain output, not its plan), the documents stored after the write, the filter,
sort, projection, read preference and update documents sent, and the errors
(type and message). The deliberate differences of docs/querysets.md are left out
where they apply.
"""

from __future__ import annotations

import datetime
import inspect
import pprint
import re
import sys
import uuid
from decimal import Decimal
from typing import Any

import mongoengine
import pytest
from bson import DBRef, ObjectId
from hypothesis import HealthCheck, given
from hypothesis import strategies as st
from mongoengine.base import BaseDocument
from pymongo import ReadPreference

import mongoengine_async
from fuzz_budget import budget
from mongoengine_async.proxies import AsyncReferenceProxy
from mongoengine_async.testing import CommandLog

# -- three families of the same models ------------------------------------------

ALIASES = {"me": "random_me", "sync": "random_sync", "async": "default"}
PREFIXES = {"me": "Me", "sync": "Sy", "async": "As"}


def make_models(family: str) -> dict[str, Any]:
    """The models of one family: MongoEngine's classes or ours, named with
    the family's prefix, on the family's alias."""
    m: Any = mongoengine if family == "me" else mongoengine_async
    prefix, alias = PREFIXES[family], ALIASES[family]

    def model(class_name: str, bases: tuple, /, **attributes: Any) -> Any:
        return type(prefix + class_name, bases, {"__module__": __name__, **attributes})

    part = model(
        "RqPart",
        (m.EmbeddedDocument,),
        name=m.StringField(),
        n=m.IntField(db_field="nn"),
        tags=m.ListField(m.StringField()),
    )
    target = model(
        "RqTarget",
        (m.Document,),
        name=m.StringField(),
        meta={"db_alias": alias, "collection": "rq_target"},
    )
    item = model(
        "RqItem",
        (m.Document,),
        s=m.StringField(db_field="str"),
        i=m.IntField(),
        f=m.FloatField(),
        d=m.DecimalField(precision=2),
        dt=m.DateTimeField(),
        tags=m.ListField(m.StringField()),
        nums=m.ListField(m.IntField(), db_field="ns"),
        part=m.EmbeddedDocumentField(part),
        parts=m.ListField(m.EmbeddedDocumentField(part), db_field="ps"),
        info=m.DictField(),
        counts=m.MapField(m.IntField()),
        ref=m.ReferenceField(target),
        refs=m.ListField(m.ReferenceField(target)),
        meta={"db_alias": alias, "collection": "rq_item", "allow_inheritance": True},
    )
    sub = model("RqSub", (item,), extra=m.StringField(db_field="x"))
    flat = model(
        "RqFlat",
        (m.Document,),
        code=m.StringField(primary_key=True),
        s=m.StringField(db_field="str"),
        i=m.IntField(),
        tags=m.ListField(m.StringField()),
        part=m.EmbeddedDocumentField(part),
        ref=m.ReferenceField(target, dbref=True),
        meta={"db_alias": alias, "collection": "rq_flat", "ordering": ["-i", "code"]},
    )
    return {
        "Part": part,
        "Target": target,
        "Item": item,
        "Sub": sub,
        "Flat": flat,
        "Q": m.Q,
    }


MODELS = {family: make_models(family) for family in ALIASES}
TARGETS = [ObjectId(f"{n:024x}") for n in range(1, 4)]
ITEM_IDS = [ObjectId(f"{n + 100:024x}") for n in range(7)]

# -- strategies ------------------------------------------------------------------

texts = st.sampled_from(["a", "b", "ab", "Ab", "a b", "a.b", "", "(", "ba"])
ints = st.integers(-3, 3)
floats = st.sampled_from([-1.5, 0.0, 1.0, 2.5])
decimals = st.sampled_from([Decimal("1.25"), Decimal("0"), Decimal("-2.5")])
dates = st.sampled_from([datetime.datetime(2020, 1, day) for day in (1, 2, 3)])
# A reference as an id, a target document (made per family) or a DBRef.
references = st.one_of(
    st.sampled_from(TARGETS),
    st.integers(0, 2).map(lambda n: ("target", n)),
    st.sampled_from(TARGETS).map(lambda oid: DBRef("rq_target", oid)),
)
parts = st.fixed_dictionaries({}, optional={"name": texts, "n": ints}).map(
    lambda values: ("part", values)
)
stored_part = st.fixed_dictionaries(
    {}, optional={"name": texts, "nn": ints, "tags": st.lists(texts, max_size=2)}
)


@st.composite
def items(draw: Any) -> list[dict]:
    """Stored RqItem/RqSub documents (``_cls`` without the family prefix)."""
    stored = []
    for object_id in ITEM_IDS[: draw(st.integers(0, 6))]:
        sub = draw(st.booleans())
        document = {"_id": object_id, "_cls": "RqItem.RqSub" if sub else "RqItem"}
        values = {
            "str": st.one_of(texts, st.none()),
            "i": st.one_of(ints, st.none()),
            "f": floats,
            "d": floats,
            "dt": dates,
            "tags": st.lists(texts, max_size=3),
            "ns": st.lists(ints, max_size=3),
            "part": stored_part,
            "ps": st.lists(stored_part, max_size=3),
            "info": st.dictionaries(st.sampled_from("kj"), st.one_of(ints, texts)),
            "counts": st.dictionaries(st.sampled_from("kj"), ints, max_size=2),
            "ref": st.sampled_from(TARGETS),
            "refs": st.lists(st.sampled_from(TARGETS), max_size=2),
        }
        if sub:
            values["x"] = texts
        for key, strategy in values.items():
            if draw(st.booleans()):
                document[key] = draw(strategy)
        stored.append(document)
    return stored


@st.composite
def flats(draw: Any) -> list[dict]:
    stored = []
    for n in range(draw(st.integers(0, 5))):
        document: dict[str, Any] = {"_id": f"c{n}"}
        values = {
            "str": st.one_of(texts, st.none()),
            "i": st.one_of(ints, st.none()),
            "tags": st.lists(texts, max_size=3),
            "part": stored_part,
            "ref": st.sampled_from(TARGETS).map(lambda oid: DBRef("rq_target", oid)),
        }
        for key, strategy in values.items():
            if draw(st.booleans()):
                document[key] = draw(strategy)
        stored.append(document)
    return stored


STRING_OPERATORS = [
    "exact",
    "iexact",
    "contains",
    "icontains",
    "startswith",
    "istartswith",
    "endswith",
    "iendswith",
    "wholeword",
    "iwholeword",
    "regex",
    "iregex",
]


def compared(key: str, values: Any) -> Any:
    """``key`` with a comparison operator (or none), ``in``/``nin``,
    ``exists`` or a negation, and a value."""
    operators = ["", "__ne", "__lt", "__lte", "__gt", "__gte"]
    return st.one_of(
        st.tuples(st.sampled_from([key + op for op in operators]), values),
        st.tuples(
            st.sampled_from([key + "__in", key + "__nin", key + "__not__in"]),
            st.lists(values, max_size=3),
        ),
        st.tuples(st.just(key + "__exists"), st.booleans()),
        st.tuples(st.sampled_from([key + "__not__gt", key + "__not__ne"]), values),
    )


def keyed(keys: list[str], values: Any) -> Any:
    return st.tuples(st.sampled_from(keys), values)


object_ids = st.sampled_from(ITEM_IDS[:6])
item_filters = st.one_of(
    compared("s", texts),
    keyed(["s__" + op for op in STRING_OPERATORS], texts),
    keyed(["s__not__icontains", "s__not__exact", "extra__istartswith"], texts),
    compared("i", ints),
    keyed(["i__mod"], st.tuples(st.integers(1, 3), st.integers(0, 2)).map(list)),
    compared("f", floats),
    compared("d", decimals),
    compared("dt", dates),
    keyed(["tags", "tags__ne", "tags__0", "tags__contains", "tags__exact"], texts),
    keyed(["tags", "tags__all", "tags__in"], st.lists(texts, max_size=2)),
    keyed(["tags__size", "nums__size", "parts__size"], st.integers(0, 2)),
    keyed(["parts__exists", "part__exists", "info__exists"], st.booleans()),
    compared("nums", ints),
    keyed(["nums__0", "nums__0__gt"], ints),
    compared("part__name", texts),
    compared("part__n", ints),
    keyed(["part"], parts),
    compared("parts__name", texts),
    compared("parts__n", ints),
    keyed(["parts__0__name", "parts__name__startswith"], texts),
    keyed(
        ["parts__match", "parts__elemMatch"],
        st.fixed_dictionaries({}, optional={"name": texts, "n": ints}).filter(bool),
    ),
    compared("info__k", st.one_of(ints, texts)),
    keyed(["info"], st.dictionaries(st.sampled_from("kj"), ints, max_size=1)),
    compared("counts__k", ints),
    keyed(["ref", "ref__ne", "refs"], references),
    keyed(["ref__in", "refs__in", "refs__all"], st.lists(references, max_size=2)),
    keyed(["pk", "id", "id__ne"], object_ids),
    keyed(["pk__in", "id__nin"], st.lists(object_ids, max_size=2)),
    keyed(["s__type", "tags__type"], st.sampled_from(["string", 2, "array"])),
    keyed(["nope", "part__nope", "ref__name", "i__contains", "s__size"], texts),
    keyed(["s", "s__ne", "i", "i__ne", "part", "ref", "tags__ne"], st.none()),
    keyed(["s__in", "i__nin"], st.lists(st.one_of(st.none(), texts), max_size=2)),
    keyed(["tags__not__size", "parts__not__size"], st.integers(0, 2)),
    keyed(["nums__all", "nums__nin"], st.lists(ints, max_size=2)),
    keyed(["parts__n__in", "part__tags"], st.lists(ints, max_size=2)),
    keyed(["info__k__exists", "ref__exists", "s__not__exists"], st.booleans()),
    keyed(["dt__gte", "dt__lt", "d__gt", "f__lte"], st.sampled_from(["2020-01-02", 1])),
    keyed(["s__not__startswith", "part__tags__0", "parts__tags"], texts),
    keyed(["parts__not__match"], st.fixed_dictionaries({"n": ints})),
    keyed(
        ["__raw__"],
        st.sampled_from([{"i": {"$gt": 0}}, {"ps.nn": 1}, {"$or": [{"str": "a"}]}]),
    ),
)
codes = st.one_of(st.integers(0, 5).map(lambda n: f"c{n}"), st.sampled_from([5, ""]))
flat_filters = st.one_of(
    compared("s", texts),
    keyed(["s__" + op for op in STRING_OPERATORS], texts),
    compared("i", ints),
    keyed(["tags", "tags__0", "tags__icontains"], texts),
    compared("part__n", ints),
    keyed(["ref", "ref__ne"], references),
    keyed(["pk", "code", "id", "code__gte"], codes),
    keyed(["pk__in", "code__nin"], st.lists(codes, max_size=2)),
    keyed(["nope", "code__nope"], texts),
    keyed(["s", "i__ne", "ref", "code__ne"], st.none()),
    keyed(["ref__in", "ref__nin"], st.lists(references, max_size=2)),
    keyed(["part__exists", "ref__exists", "tags__size"], st.integers(0, 1)),
    keyed(["part", "part__name__in"], st.one_of(parts, st.lists(texts, max_size=2))),
)


def q_trees(filters: Any) -> Any:
    leaves = st.one_of(
        st.just({}),
        st.lists(filters, min_size=1, max_size=2, unique_by=lambda kv: kv[0]).map(dict),
    ).map(lambda query: ("leaf", query))
    return st.recursive(
        leaves,
        lambda children: st.tuples(
            st.sampled_from(["and", "or"]), st.lists(children, min_size=1, max_size=3)
        ),
        max_leaves=5,
    )


ITEM_FIELDS = ["s", "i", "d", "dt", "tags", "nums", "part", "part__name", "parts"]
ITEM_FIELDS += ["info", "counts", "ref", "refs", "id", "extra"]
FLAT_FIELDS = ["s", "i", "tags", "part", "part__name", "ref", "code", "pk"]


PREFERENCES = {
    "primary": ReadPreference.PRIMARY,
    "primaryPreferred": ReadPreference.PRIMARY_PREFERRED,
    "secondaryPreferred": ReadPreference.SECONDARY_PREFERRED,
    "nearest": ReadPreference.NEAREST,
}


def steps(filters: Any, fields: list[str], orderings: list[str]) -> Any:
    names = st.lists(st.sampled_from(fields), min_size=1, max_size=3, unique=True)
    return st.one_of(
        keyed(
            ["filter"],
            st.lists(filters, min_size=1, max_size=3, unique_by=lambda kv: kv[0]).map(
                dict
            ),
        ),
        keyed(["filter_q"], q_trees(filters)),
        keyed(["order_by"], st.lists(st.sampled_from(orderings), max_size=3)),
        keyed(["skip", "limit"], st.integers(0, 4)),
        keyed(["slice"], st.tuples(st.integers(0, 3), st.none() | st.integers(0, 5))),
        keyed(["only", "exclude", "scalar"], names),
        keyed(
            ["fields"],
            st.sampled_from([{"slice__tags": 1}, {"slice__tags": [1, 1]}, {"s": 1}]),
        ),
        keyed(["no_dereference", "as_pymongo", "none", "all_fields"], st.none()),
        keyed(["no_sub_classes", "clone"], st.none()),
        keyed(
            ["where"],  # (MongoEngine's [~name] takes names of two letters or more)
            st.sampled_from(
                ["this[~nums] && this[~nums].length > 1", 'this.str == "a"']
            ),
        ),
        keyed(["batch_size"], st.integers(1, 3)),
        keyed(["comment"], st.just("random")),
        keyed(["hint"], st.sampled_from(["_id_", [("_id", 1)]])),
        keyed(["collation"], st.just({"locale": "en", "strength": 1})),
        keyed(["max_time_ms"], st.just(5000)),
        keyed(["timeout", "allow_disk_use"], st.booleans()),
        keyed(["read_preference"], st.sampled_from(sorted(PREFERENCES))),
    )


def terminals(filters: Any, fields: list[str], ids: Any, numbers: list[str]) -> Any:
    """Every terminal, each with a drawn argument (read in turn on the same
    stored documents)."""
    names = st.lists(st.sampled_from(fields), min_size=1, max_size=2, unique=True)
    group = [{"$group": {"_id": "$str", "n": {"$sum": 1}}}, {"$sort": {"_id": 1}}]
    pipelines = [[{"$project": {"i": 1}}], group]
    arguments = {
        "list": st.none(),
        "iter": st.none(),
        "count": st.none(),
        "count_limited": st.none(),
        "first": st.none(),
        "exists": st.none(),
        "get": st.none(),
        "to_list": st.integers(1, 3),
        "get_by": st.lists(filters, min_size=1, max_size=1).map(dict),
        "scalar": names,
        "values_list": names,
        "distinct": st.sampled_from([*fields, "part.name", "nope"]),
        "sum": st.sampled_from(numbers),
        "average": st.sampled_from(numbers),
        "in_bulk": st.lists(ids, max_size=3),
        "with_id": ids,
        "aggregate": st.sampled_from(pipelines),
        "select_related": st.integers(1, 2),
        "explain": st.none(),
    }
    return st.fixed_dictionaries(arguments).map(lambda drawn: list(drawn.items()))


item_updates = st.one_of(
    keyed(["set__s", "s", "set__extra"], st.one_of(texts, st.none())),
    keyed(
        ["unset__s", "unset__part", "unset__part__name", "unset__info__k"], st.just(1)
    ),
    keyed(["inc__i", "dec__i", "max__i", "min__i", "mul__f", "set_on_insert__i"], ints),
    keyed(["inc__counts__k", "inc__part__n", "inc__parts__0__n", "set__i"], ints),
    keyed(["set__d", "inc__d"], decimals),
    keyed(["set__dt"], dates),
    keyed(["push__tags", "pull__tags", "add_to_set__tags", "set__tags__0"], texts),
    keyed(["push__nums", "pull__nums", "add_to_set__nums"], ints),
    keyed(["push_all__tags", "pull_all__tags", "add_to_set__tags"], st.lists(texts)),
    keyed(["pop__tags", "pop__parts"], st.sampled_from([1, -1])),
    keyed(["set__part", "push__parts", "add_to_set__parts", "pull__parts"], parts),
    keyed(["set__part__name", "set__parts__S__name", "set__parts__0__name"], texts),
    keyed(["pull__parts__name"], texts),
    keyed(["set__info__k", "set__counts__k"], ints),
    keyed(["set__info", "set__counts"], st.dictionaries(st.just("k"), ints)),
    keyed(["set__ref", "push__refs", "pull__refs"], references),
    keyed(["rename__s", "rename__i"], st.sampled_from(["s2", "j"])),
    keyed(["set__nope", "inc__s", "bogus__i", "push__s"], ints),
    keyed(["__raw__"], st.sampled_from([{"$set": {"i": 9}}, {"$inc": {"i": 1}}])),
    keyed(["pull_all__nums", "push_all__nums", "set__nums"], st.lists(ints)),
    keyed(["push__tags__0", "push__tags__1", "set__tags__1"], texts),
    keyed(["set__parts__0", "push__parts__0"], parts),
    keyed(["set__parts"], st.lists(parts, max_size=2)),
    keyed(
        ["unset__parts__0__name", "unset__parts__S__n", "unset__tags__0"], st.just(1)
    ),
    keyed(["add_to_set__refs", "pull__ref"], references),
    keyed(["set__refs", "pull_all__refs"], st.lists(references, max_size=2)),
    keyed(["inc__f", "max__f", "inc__nums__0", "set__part__n"], floats),
    keyed(["max__dt", "min__dt", "set__dt"], st.one_of(dates, st.just("2020-01-05"))),
    keyed(["set__s", "set__i", "set__d", "set__tags"], st.sampled_from([5, "x", 2.5])),
    keyed(["set__info__k__j", "inc__info__k", "unset__counts__k"], ints),
    keyed(["push__part__tags", "add_to_set__part__tags", "set__part__tags"], texts),
    keyed(["pull__parts__n", "pull__parts__n__gt"], ints),
    keyed(["rename__part__name", "rename__tags"], st.sampled_from(["s2", "z"])),
)
flat_updates = st.one_of(
    keyed(["set__s", "s", "unset__s", "set__code"], st.one_of(texts, st.none())),
    keyed(["inc__i", "dec__i", "max__i", "mul__i", "set_on_insert__i"], ints),
    keyed(["push__tags", "pull__tags", "add_to_set__tags", "pop__tags"], texts),
    keyed(["set__part"], parts),
    keyed(["set__ref"], references),
    keyed(["set__part__n", "inc__part__n", "unset__part", "unset__ref"], ints),
    keyed(["push_all__tags", "set__tags", "pull_all__tags"], st.lists(texts)),
    keyed(["set__i", "set__s"], st.sampled_from(["x", 1.5, None])),
)
UPDATES = ["update", "update_one", "update_upsert", "update_full", "upsert_one"]
UPDATES += ["modify", "modify_new", "modify_upsert", "modify_remove", "delete"]


def writes(updates: Any) -> Any:
    return st.tuples(
        st.sampled_from(UPDATES),
        st.lists(updates, min_size=1, max_size=3, unique_by=lambda kv: kv[0]).map(dict),
    )


ORDER_ITEM = ["s", "-s", "i", "-i", "d", "-dt", "part__name", "-parts__n", "tags"]
ORDER_ITEM += ["pk", "-id", "info__k", "extra", "nope"]
ORDER_FLAT = ["s", "-s", "i", "-i", "code", "-pk", "part__n"]


@st.composite
def scenarios(draw: Any) -> tuple:
    """(stored items, stored flats, class, chain, terminals, write)."""
    if draw(st.integers(0, 2)) == 0:
        stored, flat = [], draw(flats())
        name = "Flat"
        chain = draw(st.lists(steps(flat_filters, FLAT_FIELDS, ORDER_FLAT), max_size=4))
        terminal = terminals(flat_filters, FLAT_FIELDS, codes, ["i", "part__n"])
        updates = flat_updates
    else:
        stored, flat = draw(items()), []
        name = draw(st.sampled_from(["Item", "Sub"]))
        chain = draw(st.lists(steps(item_filters, ITEM_FIELDS, ORDER_ITEM), max_size=4))
        numbers = ["i", "f", "d", "parts__n", "part__n", "s"]
        terminal = terminals(item_filters, ITEM_FIELDS, object_ids, numbers)
        updates = item_updates
    return stored, flat, name, chain, draw(terminal), draw(writes(updates))


# -- running a scenario in one family ----------------------------------------------


def made(value: Any, family: str) -> Any:
    """A drawn value with the family's documents and Q objects in it."""
    models = MODELS[family]
    if isinstance(value, tuple) and value[:1] == ("target",):
        return models["Target"](id=TARGETS[value[1]], name=f"t{value[1]}")
    if isinstance(value, tuple) and value[:1] == ("part",):
        return models["Part"](**value[1])
    if isinstance(value, list):
        return [made(item, family) for item in value]
    if isinstance(value, dict):
        return {key: made(item, family) for key, item in value.items()}
    return value


def q_object(tree: tuple, family: str) -> Any:
    kind, content = tree
    if kind == "leaf":
        return MODELS[family]["Q"](**made(content, family))
    children = [q_object(child, family) for child in content]
    combined = children[0]
    for child in children[1:]:
        combined = combined & child if kind == "and" else combined | child
    return combined


# MongoEngine's clones copy the cursor a slice, comment() or max_time_ms() made,
# which then ignores the only(), order_by()... chained after (its bug): those go
# last in the chain.
CURSOR_MAKERS = ("slice", "comment", "max_time_ms")


def chained(family: str, name: str, chain: list) -> Any:
    queryset = MODELS[family][name].objects
    for method, argument in sorted(chain, key=lambda step: step[0] in CURSOR_MAKERS):
        if method == "filter":
            queryset = queryset.filter(**made(argument, family))
        elif method == "filter_q":
            queryset = queryset.filter(q_object(argument, family))
        elif method == "slice":
            queryset = queryset[argument[0] : argument[1]]
        elif method in ("order_by", "only", "exclude", "scalar"):
            queryset = getattr(queryset, method)(*argument)
        elif method == "fields":
            queryset = queryset.fields(**argument)
        elif method == "read_preference":
            queryset = queryset.read_preference(PREFERENCES[argument])
        elif argument is None:
            queryset = getattr(queryset, method)()
        else:
            queryset = getattr(queryset, method)(argument)
    return queryset


def read_sync(queryset: Any, terminal: tuple, family: str) -> Any:
    name, argument = terminal
    calls = {
        "list": lambda: list(queryset),
        "iter": lambda: list(queryset),
        "to_list": lambda: list(queryset)[:argument],
        "count": lambda: queryset.count(),
        "count_limited": lambda: queryset.count(True),
        "first": lambda: queryset.first(),
        "exists": lambda: bool(queryset),
        "get": lambda: queryset.get(),
        "get_by": lambda: queryset.get(**made(argument, family)),
        "scalar": lambda: list(queryset.scalar(*argument)),
        "values_list": lambda: list(queryset.values_list(*argument)),
        "distinct": lambda: list(queryset.distinct(argument)),
        "sum": lambda: queryset.sum(argument),
        "average": lambda: queryset.average(argument),
        "in_bulk": lambda: queryset.in_bulk(argument),
        "with_id": lambda: queryset.with_id(argument),
        "aggregate": lambda: list(queryset.aggregate(argument)),
        "select_related": lambda: queryset.select_related(argument),
        "explain": lambda: explained(queryset.explain()),
    }
    return calls[name]()


async def read_async(queryset: Any, terminal: tuple, family: str) -> Any:
    name, argument = terminal
    if name == "list":
        return await queryset.async_to_list()
    if name == "iter":
        return [document async for document in queryset]
    if name == "aggregate":
        return [row async for row in queryset.async_aggregate(argument)]
    calls = {
        "to_list": lambda: queryset.async_to_list(argument),
        "count": lambda: queryset.async_count(),
        "count_limited": lambda: queryset.async_count(True),
        "first": lambda: queryset.async_first(),
        "exists": lambda: queryset.async_exists(),
        "get": lambda: queryset.async_get(),
        "get_by": lambda: queryset.async_get(**made(argument, family)),
        "scalar": lambda: queryset.async_scalar(*argument),
        "values_list": lambda: queryset.async_values_list(*argument),
        "distinct": lambda: queryset.async_distinct(argument),
        "sum": lambda: queryset.async_sum(argument),
        "average": lambda: queryset.async_average(argument),
        "in_bulk": lambda: queryset.async_in_bulk(argument),
        "with_id": lambda: queryset.async_with_id(argument),
        "select_related": lambda: queryset.async_select_related(argument),
    }
    if name == "explain":
        return explained(await queryset.async_explain())
    return await calls[name]()


def explained(plan: dict) -> dict:
    """The shape of an explain() output, not the plan: its sections, the
    collection, the query the server parsed and the command it explains."""
    ignored = ("$db", "lsid", "$clusterTime", "$readPreference", "txnNumber")
    return {
        "sections": sorted(
            k for k in plan if k not in ("$clusterTime", "operationTime")
        ),
        "namespace": plan["queryPlanner"]["namespace"].split(".", 1)[1],
        "parsed": plan["queryPlanner"]["parsedQuery"],
        "command": {k: v for k, v in plan["command"].items() if k not in ignored},
    }


def write_arguments(kind: str) -> tuple[str, dict[str, Any]]:
    """The method and its options for a drawn kind of write."""
    return {
        "update": ("update", {}),
        "update_one": ("update_one", {}),
        "update_upsert": ("update", {"upsert": True}),
        "update_full": ("update", {"full_result": True}),
        "upsert_one": ("upsert_one", {}),
        "modify": ("modify", {}),
        "modify_new": ("modify", {"new": True}),
        "modify_upsert": ("modify", {"upsert": True, "new": True}),
        "modify_remove": ("modify", {"remove": True}),
        "delete": ("delete", {}),
    }[kind]


def full_result(result: Any) -> Any:
    raw = getattr(result, "raw_result", None)
    if raw is None:
        return result
    return {k: v for k, v in raw.items() if k in ("n", "nModified", "updatedExisting")}


def write_sync(queryset: Any, write: tuple, family: str) -> Any:
    method, options = write_arguments(write[0])
    if method == "delete":
        return queryset.delete()
    return full_result(getattr(queryset, method)(**options, **made(write[1], family)))


async def write_async(queryset: Any, write: tuple, family: str) -> Any:
    method, options = write_arguments(write[0])
    if method == "delete":
        return await queryset.async_delete()
    update = made(write[1], family)
    return full_result(await getattr(queryset, "async_" + method)(**options, **update))


# -- comparing ------------------------------------------------------------------------

CLASS_NAMES = re.compile(r"\b(Me|Sy|As)(Rq[A-Z][a-z]+)\b")
NEW_ID = "(an id made by the write)"


def unprefixed(text: str) -> str:
    return CLASS_NAMES.sub(r"\2", text)


def stored_form(value: Any) -> Any:
    """A raw value, the family prefixes and the ids made by upserts taken out."""
    if isinstance(value, ObjectId) and value not in TARGETS and value not in ITEM_IDS:
        return NEW_ID
    if isinstance(value, dict):
        return {key: stored_form(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [stored_form(item) for item in value]
    if isinstance(value, str):
        return unprefixed(value)
    return value


def loaded_form(value: Any, top: bool = False, deep: bool = False) -> Any:
    """A loaded value with its type: documents by class and ``_data`` (a
    reference by its id, or, ``deep`` (select_related), a loaded one by its
    class and ``_data`` too; a DBRef as such), containers as plain ones (a
    container's first read makes it a BaseList/BaseDict either way)."""
    if isinstance(value, AsyncReferenceProxy):
        return ("reference", value.pk)
    if isinstance(value, DBRef):
        return ("dbref", value.collection, stored_form(value.id))
    # (RqTarget is never a queryset's class: a result of one is a scalar() of
    # a reference, which MongoEngine loads and an async alias reads as a proxy.)
    if isinstance(value, mongoengine.Document) and (
        not top or type(value).__name__.endswith("RqTarget")
    ):
        if deep:
            return ("loaded", value.pk, loaded_form(value, top=True, deep=False))
        return ("reference", value.pk)
    if isinstance(value, BaseDocument):
        data = value._data
        fields = [
            (k, loaded_form(data[k], deep=deep))
            for k in value._fields_ordered
            if k in data
        ]
        return (unprefixed(type(value).__name__), fields, value._created)
    if isinstance(value, tuple):
        return tuple(loaded_form(item, deep=deep) for item in value)
    if isinstance(value, list):
        return [loaded_form(item, deep=deep) for item in value]
    if isinstance(value, dict):
        return {key: loaded_form(item, deep=deep) for key, item in value.items()}
    if isinstance(value, str):
        return unprefixed(value)
    return (type(value).__name__, stored_form(value))


def error_form(error: Exception) -> tuple:
    message = unprefixed(str(error)).split(", full error")[0]
    message = re.sub(r"ObjectId\('[0-9a-f]{24}'\)", "ObjectId(...)", message)
    for database in DATABASES.values():
        message = message.replace(database, "DB")
    return ("raised", type(error).__name__, message)


# Documents are results (top level) for these terminals, and for the writes.
DOCUMENT_TERMINALS = {"list", "iter", "to_list", "first", "get", "get_by", "with_id"}
DOCUMENT_TERMINALS |= {"select_related"}


def result_form(result: Any, terminal: tuple | None) -> Any:
    if isinstance(result, tuple) and result[:1] == ("raised",):
        return result
    top = terminal is None or terminal[0] in DOCUMENT_TERMINALS | {"in_bulk"}
    deep = terminal is not None and terminal[0] == "select_related"
    if isinstance(result, dict) and terminal and terminal[0] == "in_bulk":
        return {key: loaded_form(item, top) for key, item in result.items()}
    if isinstance(result, list):
        return [loaded_form(item, top, deep) for item in result]
    return loaded_form(result, top)


SENT = ["find", "filter", "sort", "projection", "skip", "limit", "hint"]
SENT += ["collation", "comment", "updates", "query", "update", "new", "upsert"]
SENT += ["remove", "fields", "key", "pipeline", "deletes", "q", "$readPreference"]
IGNORED = {"getMore", "killCursors", "listIndexes", "createIndexes", "insert", "drop"}


def sent(log: CommandLog, terminal: tuple | None) -> list:
    """The commands sent, by the keys that say what they do (a first() or get()
    by MongoEngine's cursor[0] and ours differ in their limit and batch)."""
    commands = []
    for event in log.events:
        if event.command_name in IGNORED:
            continue
        command = {k: stored_form(event.command[k]) for k in SENT if k in event.command}
        if terminal and terminal[0] in ("first", "get", "get_by", "with_id", "to_list"):
            command.pop("limit", None)
        if command.get("limit") == 0:
            del command["limit"]
        if "pipeline" in command:  # MongoEngine's count sends a {"$skip": 0}
            command["pipeline"] = [s for s in command["pipeline"] if s != {"$skip": 0}]
        commands.append((event.command_name, command))
    return commands


def deliberate(chain: list, terminal: tuple | None, theirs: dict, ours: dict) -> None:
    """Leave out of ``ours`` (an async alias's outcome of ``terminal``, or of
    the write) the differences docs/querysets.md (and the package's design)
    states."""
    kind, argument = terminal if terminal else ("write", None)
    emptied = any(
        step[0] == "none" or (step[0] == "slice" and step[1][0] == step[1][1])
        for step in chain
    )
    deletes = [c for c in theirs["sent"] if c[0] == "delete"]
    if kind == "write" and emptied and deletes:  # MongoEngine's delete() ignores them
        ours.update(theirs)
    if kind == "write":
        _class_kept_on_upsert(theirs, ours)
        # A delete of a scalar() or as_pymongo() queryset calls the method of
        # each result, ours async_delete: the same AttributeError by its name.
        result = ours["result"]
        if isinstance(result, tuple) and result[:2] == ("raised", "AttributeError"):
            ours["result"] = (*result[:2], result[2].replace("async_delete", "delete"))
    # References read as proxies: MongoEngine's dereferencing reads are not
    # sent, and async_distinct loads the referenced documents.
    theirs["sent"] = [c for c in theirs["sent"] if c[1].get("find") != "rq_target"]
    ours["sent"] = [c for c in ours["sent"] if c[1].get("find") != "rq_target"]
    if kind == "exists":  # asks for the id only, in any order
        for command in theirs["sent"] + ours["sent"]:
            command[1].pop("projection", None)
            command[1].pop("sort", None)
        if any(step[0] == "scalar" for step in chain):  # bool() asks first()
            ours["result"] = theirs["result"]
    if kind in ("sum", "average"):  # the same sum, by another pipeline
        ours["sent"] = theirs["sent"]
    if kind == "count_limited" and [c[0] for c in ours["sent"]] == ["count"]:
        ours["sent"] = theirs["sent"]  # (estimated: MongoEngine counts {} skipping 0)
    if kind == "distinct" and argument in ("part", "parts", "counts", "info"):
        ours["result"] = theirs["result"]  # embedded documents built, a plain list
    if kind == "select_related" and any(step[0] == "as_pymongo" for step in chain):
        ours.update(theirs)  # raises InvalidQueryError (docs/references.md)
    if kind == "explain" and any(
        step[0] == "slice" and step[1][0] == step[1][1] for step in chain
    ):  # (MongoEngine's is PyMongo's explain() of an empty cursor: StopIteration)
        ours.update(theirs)
    if any(step[0] in CURSOR_MAKERS for step in chain) and (
        kind in ("scalar", "values_list", "get_by")
    ):  # MongoEngine's scalar() and get() keep the stale cursor (no projection)
        ours.update(theirs)


def _class_kept_on_upsert(theirs: dict, ours: dict) -> None:
    """An upsert through a class with inheritance: ours sets ``_cls`` by
    ``$setOnInsert`` where MongoEngine's ``$set`` also made each matched
    subclass document one of the queryset's class. Ours is put in
    MongoEngine's form (once each check of it has passed): also the result of
    an upsert_one() that read back such a document, which MongoEngine's read
    as one of the queryset's class and failed to load (FieldDoesNotExist for
    the subclass's fields, as docs/querysets.md says)."""
    recast = False
    for _, command in ours["sent"]:
        for update in command.get("updates", ()):
            document = update["u"]
            if not isinstance(document, dict) or "_cls" not in document.get(
                "$setOnInsert", {}
            ):  # (a set_on_insert__ of a class without inheritance)
                continue
            name = document["$setOnInsert"].pop("_cls")
            if not document["$setOnInsert"]:
                del document["$setOnInsert"]
            document.setdefault("$set", {})["_cls"] = name
            for kept, made in zip(ours["stored"], theirs["stored"], strict=True):
                by_id = {row["_id"]: row for row in made}
                for row in kept:
                    other = by_id.get(row["_id"], {})
                    if other.get("_cls") == name and row.get("_cls") != name:
                        row["_cls"] = name
                        recast = True
    result, kept = theirs["result"], ours["result"]
    if not recast or not isinstance(result, tuple):
        return
    if result[:2] == ("raised", "FieldDoesNotExist"):
        ours["result"] = result
    elif result[0] != "raised" and isinstance(kept, tuple) and kept[0] != result[0]:
        # Read back as one of the queryset's class: the same values otherwise
        # (those of the subclass's fields left out).
        values = dict(result[1])
        same = [
            (key, values[key] if key == "_cls" else value)
            for key, value in kept[1]
            if key in values
        ]
        if (result[0], same, kept[2]) == result:
            ours["result"] = result


# -- the test --------------------------------------------------------------------


# About 15 s; more with RANDOM_QUERYSET_EXAMPLES=2000 (see fuzz_budget.py, make fuzz).
EXAMPLES = budget("queryset", 70, suppress_health_check=list(HealthCheck))


def drawn_scenarios() -> list[tuple]:
    found: list[tuple] = []

    @EXAMPLES
    @given(scenarios())
    def collect(scenario: tuple) -> None:
        found.append(scenario)

    collect()
    return found


DATABASES: dict[str, str] = {}


@pytest.fixture
def sync_aliases(mongodb_uri: str, async_alias: str) -> Any:
    """The two connect() aliases, each on a fresh database, their commands logged."""
    logs = {"me": CommandLog(), "sync": CommandLog()}
    for family in logs:
        DATABASES[family] = f"test_random_{uuid.uuid4().hex[:12]}"
        mongoengine_async.connect(
            db=DATABASES[family],
            alias=ALIASES[family],
            host=mongodb_uri,
            event_listeners=[logs[family]],
            uuidRepresentation="standard",
        )
    DATABASES["async"] = mongoengine_async.get_async_db(async_alias).name
    try:
        yield logs
    finally:
        for family in logs:
            mongoengine_async.get_db(ALIASES[family]).client.drop_database(
                DATABASES[family]
            )
            mongoengine_async.disconnect(ALIASES[family])


async def test_random_querysets_and_updates_as_mongoengine(
    sync_aliases: dict[str, CommandLog], command_log: CommandLog
) -> None:
    """Each drawn scenario gives MongoEngine's outcomes, step by step, on both
    of our aliases (the deliberate differences left out on the async one)."""
    logs = {**sync_aliases, "async": command_log}
    databases = {
        "me": mongoengine_async.get_db(ALIASES["me"]),
        "sync": mongoengine_async.get_db(ALIASES["sync"]),
        "async": mongoengine_async.get_async_db(ALIASES["async"]),
    }
    for family in ALIASES:  # the collections, made before the commands count
        for name in ("Item", "Flat", "Target"):
            model = MODELS[family][name]
            if family == "async":
                await model._async_get_collection()
            else:
                model._get_collection()

    async def awaited(value: Any) -> Any:  # (an async database's, or a sync one's)
        return await value if inspect.isawaitable(value) else value

    differences, reported = [], 0
    for scenario in drawn_scenarios():
        stored, flat, name, chain, reads, write = scenario
        outcomes: dict[str, list] = {}
        for family, database in databases.items():
            prefix = PREFIXES[family]
            await awaited(database.rq_item.delete_many({}))
            await awaited(database.rq_flat.delete_many({}))
            await awaited(database.rq_target.delete_many({}))
            targets = [{"_id": oid, "name": f"t{n}"} for n, oid in enumerate(TARGETS)]
            await awaited(database.rq_target.insert_many(targets))
            if stored:
                documents = [
                    {**d, "_cls": re.sub(r"(Rq)", prefix + r"\1", d["_cls"])}
                    for d in stored
                ]
                await awaited(database.rq_item.insert_many(documents))
            if flat:
                await awaited(database.rq_flat.insert_many(flat))
            outcomes[family] = []
            for terminal in [*reads, None]:  # each read, then the write
                logs[family].clear()
                try:
                    queryset = chained(family, name, chain)
                    if family == "async":
                        if terminal:
                            result = await read_async(queryset, terminal, family)
                        else:
                            result = await write_async(queryset, write, family)
                    elif terminal:
                        result = read_sync(queryset, terminal, family)
                    else:
                        result = write_sync(queryset, write, family)
                except Exception as error:
                    result = error_form(error)
                outcome = {
                    "result": result_form(result, terminal),
                    "sent": sent(logs[family], terminal),
                }
                if terminal is None:
                    left = []
                    for collection in (database.rq_item, database.rq_flat):
                        cursor = collection.find().sort("_id", 1)
                        if family == "async":
                            rows = await cursor.to_list()
                        else:
                            rows = list(cursor)
                        left.append(stored_form(rows))
                    outcome["stored"] = left
                outcomes[family].append((terminal, outcome))
        for (terminal, theirs), (_, ours_sync), (_, ours) in zip(
            outcomes["me"], outcomes["sync"], outcomes["async"], strict=True
        ):
            step = terminal or write
            if ours_sync != theirs:
                differences.append(("sync", scenario, step, theirs, ours_sync))
            deliberate(chain, terminal, theirs, ours)
            if ours != theirs:
                differences.append(("async", scenario, step, theirs, ours))
        for difference in differences[reported:]:  # all shown (at once under -s)
            print("difference:", pprint.pformat(difference), file=sys.stderr)
        reported = len(differences)
    if differences:
        where, scenario, step, theirs, ours = differences[0]
        steps = sorted({(d[0], str(d[2])[:60]) for d in differences})
        pytest.fail(
            f"{len(differences)} differences ({steps}); the first, on the "
            f"{where} alias, in "
            f"{step} of\n{pprint.pformat(scenario)}\nMongoEngine:\n"
            f"{pprint.pformat(theirs)}\nours:\n{pprint.pformat(ours)}"
        )
