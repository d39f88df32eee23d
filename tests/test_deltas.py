"""A save of a loaded document sends exactly MongoEngine's update, and leaves
the document as MongoEngine leaves it.

Hypothesis draws a stored document of a model holding every field kind (the
models of ``test_to_bson``), loads it twice, and applies the same drawn changes
to both copies: top-level values (None and deletions too, which may unset),
fields of embedded documents, list items and appends, dict keys. Then
``deltas.update_doc`` must equal MongoEngine's ``_get_update_doc`` (the
``$set``/``$unset`` documents, key order included) and ``deltas.clear_changes``
must leave what ``_clear_changed_fields`` leaves (so must our Document's
``_get_update_doc`` and ``_clear_changed_fields``, which a sync save asks);
and a save stores what MongoEngine's update stores, in one round trip.
"""

from __future__ import annotations

import copy
import functools
from collections.abc import Callable
from typing import Any

import mongoengine
import pymongo
import pytest
from bson import ObjectId
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from mongoengine.base import BaseDocument

from mongoengine_async import (
    Document,
    EmbeddedDocument,
    EmbeddedDocumentField,
    IntField,
    ListField,
    StringField,
    deltas,
    to_bson,
)
from mongoengine_async.testing import CommandLog
from test_to_bson import (
    FIELD_VALUES,
    TEXT,
    TbBytesAndLazy,
    TbChild,
    TbContainers,
    TbEnums,
    TbKeyed,
    TbMore,
    TbPart,
    TbScalars,
    TbShapes,
    mongoengine_new,
    outcome,
    son_form,
    state,
)

# -- models and changes ------------------------------------------------------------


class DtInner(EmbeddedDocument):
    word = StringField(default="w")
    count = IntField()


class DtOuter(EmbeddedDocument):
    inner = EmbeddedDocumentField(DtInner)
    inners = ListField(EmbeddedDocumentField(DtInner))
    label = StringField()


class DtNested(Document):
    """Embedded documents two levels deep, alone and in lists."""

    outer = EmbeddedDocumentField(DtOuter)
    outers = ListField(EmbeddedDocumentField(DtOuter))
    n = IntField(default=3)
    name = StringField(db_field="nm")


INNERS = st.builds(DtInner, word=st.one_of(TEXT, st.none()), count=st.integers(0, 3))
OUTERS = st.builds(
    DtOuter,
    inner=st.one_of(INNERS, st.none()),
    inners=st.lists(INNERS, max_size=2),
    label=st.one_of(TEXT, st.none()),
)
VALUES: dict[type, dict[str, st.SearchStrategy]] = {
    **{
        model: FIELD_VALUES[model]
        for model in (
            TbScalars,
            TbContainers,
            TbMore,
            TbShapes,
            TbEnums,
            TbBytesAndLazy,
            TbKeyed,
            TbChild,
        )
    },
    DtNested: {
        "outer": st.one_of(OUTERS, st.none()),
        "outers": st.lists(OUTERS, max_size=2),
        "n": st.one_of(st.integers(-1, 4), st.none()),
        "name": st.one_of(TEXT, st.none()),
    },
}
MODELS = sorted(VALUES, key=lambda model: model.__name__)
# What a nested change sets: a word, a number, nothing, an embedded document.
LEAVES = st.one_of(TEXT, st.integers(-1, 3), st.none(), INNERS, st.builds(TbPart))

Change = tuple[str, str, Any]


@st.composite
def changes(draw: st.DrawFn, model: type) -> list[Change]:
    """Some changes to apply to a loaded ``model`` document."""
    names = sorted(VALUES[model])
    drawn: list[Change] = []
    for _ in range(draw(st.integers(0, 3))):
        name = draw(st.sampled_from(names))
        kind = draw(st.sampled_from(["set", "set", "delete", "nested", "append"]))
        if kind == "set":
            value: Any = draw(VALUES[model][name])
        elif kind == "nested":
            value = (draw(st.integers(0, 1)), draw(LEAVES))
        else:
            value = draw(LEAVES)
        drawn.append((kind, name, value))
    return drawn


@st.composite
def saves(draw: st.DrawFn) -> tuple[type, dict[str, Any], list[Change]]:
    """A model, the values of its stored document, the changes made to it."""
    model = draw(st.sampled_from(MODELS))
    strategies = VALUES[model]
    names = draw(st.lists(st.sampled_from(sorted(strategies)), unique=True))
    values = {name: draw(strategies[name]) for name in names}
    if model is TbKeyed:
        values["key"] = "k"
    return model, values, draw(changes(model))


def apply(document: Any, change: Change) -> None:
    """Make one change; a change that does not fit the value does nothing."""
    kind, name, value = change
    if kind == "set":
        setattr(document, name, value)
    elif kind == "delete":
        delattr(document, name)
    elif kind == "append":
        current = getattr(document, name)
        if isinstance(current, list):
            current.append(value)
        elif isinstance(current, dict):
            current["k"] = value
    else:
        nested(getattr(document, name), *value)


def nested(current: Any, index: int, value: Any) -> None:
    """Change a field of an embedded document (one in a list, by index)."""
    if isinstance(current, list) and current:
        current = current[min(index, len(current) - 1)]
    if isinstance(current, mongoengine.EmbeddedDocument):
        names = sorted(current._fields)
        setattr(current, names[index % len(names)], value)


def loaded(model: type, values: dict[str, Any], object_id: Any = None) -> Any:
    """A document of ``model`` as loaded from what ``values`` store, or None
    when MongoEngine cannot store or load them."""
    try:
        document = mongoengine_new(model, copy.deepcopy(values))
        son = mongoengine.Document.to_mongo(document)
        son.setdefault("_id", object_id or ObjectId())
        return model._from_son(son)
    except Exception:  # e.g. a cached reference whose target is not stored
        return None


def created(model: type, values: dict[str, Any]) -> Any:
    """A new document of ``model`` made of ``values``, or None if it cannot be
    (or holds an unsaved document: copies of one never compare equal)."""
    if any(
        isinstance(value, mongoengine.Document) and value.pk is None
        for value in values.values()
    ):
        return None
    try:
        return model(**copy.deepcopy(values))
    except Exception:
        return None


def changed_twice(
    model: type, values: dict[str, Any], drawn: list[Change], new: bool = False
) -> tuple[Any, Any] | None:
    """Two copies of the loaded (or ``new``) document, each given the drawn
    changes."""
    object_id = ObjectId()
    ours, theirs = (
        (created(model, values), created(model, values))
        if new
        else (loaded(model, values, object_id), loaded(model, values, object_id))
    )
    if ours is None or theirs is None:
        return None
    for change in drawn:
        done = [
            outcome(functools.partial(apply, document, copy.deepcopy(change)))[0]
            for document in (ours, theirs)
        ]
        assert done[0] == done[1]
    return ours, theirs


def changes_of(document: Any) -> Any:
    """The changed fields of a document and of every embedded one in it."""
    found: list[Any] = []

    def walk(value: Any) -> None:
        if isinstance(value, mongoengine.EmbeddedDocument):
            found.append(getattr(value, "_changed_fields", None))
            for item in value._data.values():
                walk(item)
        elif isinstance(value, list | tuple):
            for item in value:
                walk(item)
        elif isinstance(value, dict):
            for item in value.values():
                walk(item)

    found.append(getattr(document, "_changed_fields", None))
    for item in document._data.values():
        walk(item)
    return found


EXAMPLES = settings(
    max_examples=250,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)


def mongoengines_update(document: Any) -> dict[str, Any]:
    """MongoEngine's own ``_get_update_doc`` (``_delta``), not our Document's."""
    return mongoengine.Document._get_update_doc(document)


def our_update(document: Any) -> Callable[[], Any]:
    return lambda: son_form(deltas.update_doc(document, to_bson.raw(document)))


# -- equality, without a database ----------------------------------------------------


@EXAMPLES
@given(saves())
def test_update_is_mongoenginess(drawn: tuple[type, dict, list[Change]]) -> None:
    twins = changed_twice(*drawn)
    if twins is None:
        return
    ours, theirs = twins
    fast = outcome(our_update(ours))
    slow = outcome(lambda: son_form(mongoengines_update(theirs)))
    assert fast == slow
    # What a sync save() asks: our Document's _get_update_doc.
    assert outcome(lambda: son_form(ours._get_update_doc())) == slow


@pytest.mark.parametrize(
    ("name", "stored", "value"),
    [
        ("flag", True, False),  # falsy, equal to its default: still set
        ("plain_int", 5, 0),
        ("real", 1.5, 0.0),
        ("text", "a", ""),  # falsy, not a number, default None: set
        ("needed", "y", "x"),  # truthy, equal to its default: set
        ("ratio", 0.5, None),  # None: unset
    ],
)
def test_falsy_and_default_values_update_as_mongoengine(
    name: str, stored: Any, value: Any
) -> None:
    """The values ``_delta`` sets or unsets by their truth and their field's
    default: numbers and booleans equal to a falsy default are set."""
    twins = changed_twice(TbScalars, {name: stored}, [("set", name, value)])
    assert twins is not None
    ours, theirs = twins
    assert outcome(our_update(ours)) == outcome(
        lambda: son_form(mongoengines_update(theirs))
    )


@EXAMPLES
@given(saves(), st.booleans())
def test_clearing_is_mongoengines(
    drawn: tuple[type, dict, list[Change]], new: bool
) -> None:
    """As a save ends: a loaded document, or a new one (just inserted)."""
    twins = changed_twice(*drawn, new=new)
    if twins is None:
        return
    ours, theirs = twins
    fast = outcome(lambda: deltas.clear_changes(ours))
    slow = outcome(functools.partial(BaseDocument._clear_changed_fields, theirs))
    assert fast == slow
    assert state(ours) == state(theirs)
    assert changes_of(ours) == changes_of(theirs)


@EXAMPLES
@given(saves(), st.booleans())
def test_documents_clear_changed_fields_is_mongoengines(
    drawn: tuple[type, dict, list[Change]], new: bool
) -> None:
    """Our Document's ``_clear_changed_fields`` (a sync ``save()`` ends with
    it) leaves what MongoEngine's leaves."""
    twins = changed_twice(*drawn, new=new)
    if twins is None:
        return
    ours, theirs = twins
    fast = outcome(ours._clear_changed_fields)
    slow = outcome(functools.partial(BaseDocument._clear_changed_fields, theirs))
    assert fast == slow
    assert state(ours) == state(theirs)
    assert changes_of(ours) == changes_of(theirs)


def test_plain_saves_take_the_plan() -> None:
    """Top-level changes next to unchanged embedded documents and lists take
    the plan (else the tests above compare MongoEngine with itself); a
    nested change takes MongoEngine's path."""
    document = loaded(
        DtNested,
        {
            "outer": DtOuter(inner=DtInner(), inners=[DtInner()]),
            "outers": [DtOuter()],
            "name": "x",
        },
    )
    document.n, document.name = 0, None
    assert deltas._plain(document, document._changed_fields) is not None
    assert deltas.update_doc(document, to_bson.raw(document)) == {
        "$set": {"n": 0},
        "$unset": {"nm": 1},
    }
    document.outer.inners[0].count = 2
    assert deltas._plain(document, document._changed_fields) is None
    assert deltas.update_doc(document, to_bson.raw(document)) == {
        "$set": {"n": 0, "outer.inners.0.count": 2},
        "$unset": {"nm": 1},
    }


# -- what is stored ------------------------------------------------------------------


def stored_examples(count: int) -> list[tuple[type, dict, list[Change]]]:
    """``count`` drawn saves whose document MongoEngine can store."""
    found: list[tuple[type, dict, list[Change]]] = []

    @settings(EXAMPLES, max_examples=count * 3)
    @given(saves())
    def collect(drawn: tuple[type, dict, list[Change]]) -> None:
        if loaded(drawn[0], drawn[1]) is not None:
            found.append(drawn)

    collect()
    assert len(found) >= count // 2, "too few examples to store"
    return found[:count]


async def test_saves_store_what_mongoengine_stores(
    async_alias: str, command_log: CommandLog
) -> None:
    """A save of a changed loaded document (validation off: the drawn changes
    may be invalid) stores what MongoEngine's own update stores, sending just
    that update; when MongoEngine cannot make the update, neither can we."""
    twins_of: dict[type, Any] = {}
    for model in MODELS:  # the collections and indexes, made before counting
        twins_of[model] = await indexed_twin(await model._async_get_collection())
    checked = 0
    for model, values, drawn in stored_examples(40):
        twins = changed_twice(model, values, drawn)
        assert twins is not None
        ours, theirs = twins
        collection, twin = model._get_collection(), twins_of[model]
        son = mongoengine.Document.to_mongo(loaded(model, values))
        son["_id"] = ours.pk
        try:
            await collection.replace_one({"_id": ours.pk}, son, upsert=True)
        except pymongo.errors.WriteError:  # e.g. a point the geo index refuses
            continue
        await twin.replace_one({"_id": ours.pk}, son, upsert=True)
        checked += 1
        update = outcome(functools.partial(mongoengines_update, theirs))
        command_log.clear()
        saved = await saved_outcome(ours)
        sent = command_log.names
        if theirs.pk is None:  # the id deleted: MongoEngine's save inserts
            dumped = outcome(functools.partial(mongoengine.Document.to_mongo, theirs))
            if dumped[0] == "raised":
                assert saved[0] == "raised", (model, values, drawn)
                continue
            theirs_stored = await saved_outcome(twin.insert_one(dumped[1]))
            assert saved[0] == theirs_stored[0], (model, values, drawn)
            assert sent == ["insert"], (model, values, drawn)
            if saved[0] == "ok":
                found = await collection.find_one({"_id": ours.pk})
                expected = await twin.find_one({"_id": dumped[1]["_id"]})
                del found["_id"], expected["_id"]
                assert son_form(found) == son_form(expected), (model, values, drawn)
            continue
        if update[0] == "raised":
            assert saved[0] == "raised", (model, values, drawn)
            continue
        if update[1]:
            theirs_stored = await saved_outcome(
                twin.update_one({"_id": ours.pk}, update[1])
            )
            assert saved[0] == theirs_stored[0], (model, values, drawn)
        if saved[0] == "ok":  # else PyMongo refused to encode the update
            assert sent == (["update"] if update[1] else []), (model, values, drawn)
        assert son_form(await collection.find_one({"_id": ours.pk})) == son_form(
            await twin.find_one({"_id": ours.pk})
        ), (model, values, drawn)
    assert checked >= 30, "too few examples stored"


class DtUpper(StringField):
    """Stores its value upper-cased: the id a write stores is not the one the
    document held."""

    def to_mongo(self, value: Any) -> Any:
        return value.upper()


class DtUpperKeyed(Document):
    key = DtUpper(primary_key=True)
    n = IntField()


async def test_an_id_stored_unlike_the_one_held_is_no_change(async_alias: str) -> None:
    """A new document saved: the id its write stored (its field's
    ``to_mongo`` changed it) is set on the document, which then lists no
    change, as after MongoEngine's save (the id stayed listed, and the next
    save sent it again)."""
    document = await DtUpperKeyed(key="abc", n=1).async_save()
    assert (document.key, document._created) == ("ABC", False)
    assert document._get_changed_fields() == []


async def indexed_twin(collection: Any) -> Any:
    """A collection beside ``collection`` with its indexes (a geo index refuses
    a malformed point), where MongoEngine's own updates go."""
    twin = collection.database[f"{collection.name}_mongoengine"]
    async for index in await collection.list_indexes():
        if index["name"] != "_id_":
            options = {k: v for k, v in index.items() if k not in ("v", "key", "ns")}
            await twin.create_index(list(index["key"].items()), **options)
    return twin


async def saved_outcome(saving: Any) -> tuple[str, Any]:
    """("ok", None) or ("raised", error type) of awaiting a save or an update
    (document or awaitable)."""
    try:
        await (
            saving.async_save(validate=False)
            if isinstance(saving, Document)
            else saving
        )
    except Exception as error:
        return "raised", type(error)
    return "ok", None
