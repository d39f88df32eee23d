"""Queryset terminals on an async alias against MongoEngine's own on a sync
alias, for what once differed: ``modify(full_response=True)`` on a queryset
that matches nothing; ``in_bulk`` of results without their ``_id``.

As in tests/test_document_parity.py, the same class runs both ways: MongoEngine's
code on the sync alias SYNC (``switch_db``), ours on the async alias "default",
each on a fresh database.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterator
from typing import Any

import mongoengine
import pytest
from mongoengine.errors import InvalidDocumentError
from mongoengine.queryset import QuerySet as MongoEngineQuerySet

from conftest import fresh_sync_default
from mongoengine_async import (
    Document,
    IntField,
    ListField,
    MapField,
    SortedListField,
    StringField,
)
from test_container_reads import shape
from test_document_parity import SYNC, on_sync


@pytest.fixture
def sync_db(mongodb_uri: str) -> Iterator[Any]:
    """Alias SYNC registered with connect() on a fresh database."""
    with fresh_sync_default(mongodb_uri, alias=SYNC) as database:
        yield database


class QpItem(Document):
    name = StringField()
    n = IntField()


EMPTY_VIEWS: dict[str, Callable[[Any], Any]] = {
    "none": lambda queryset: queryset.none(),
    "empty_slice": lambda queryset: queryset[0:0],
}


@pytest.mark.parametrize("view", EMPTY_VIEWS.values(), ids=EMPTY_VIEWS.keys())
async def test_modify_full_response_of_nothing_warns_as_mongoengine(
    async_alias, sync_db, view
):
    """MongoEngine's modify() returns None for none() or an empty slice before
    it warns that the full response is gone; ours warned first."""
    with on_sync(QpItem), warnings.catch_warnings(record=True) as theirs:
        warnings.simplefilter("always")
        expected = view(QpItem.objects).modify(full_response=True, set__n=1)
    with warnings.catch_warnings(record=True) as ours:
        warnings.simplefilter("always")
        result = await view(QpItem.objects).async_modify(full_response=True, set__n=1)
    assert result is expected is None
    assert [str(w.message) for w in ours] == [str(w.message) for w in theirs] == []


MODIFY_FORMS: dict[str, dict[str, Any]] = {
    "before": {"set__n": 2},
    "after": {"set__n": 2, "new": True},
    "upsert_after": {"set__n": 2, "upsert": True, "new": True},
    "remove": {"remove": True},
}


@pytest.mark.parametrize("form", MODIFY_FORMS.values(), ids=MODIFY_FORMS.keys())
async def test_modify_full_response_returns_the_document(async_alias, sync_db, form):
    """A deliberate difference: on PyMongo 4 MongoEngine's modify(full_response=
    True) writes, then fails reading the reply's "value" from the document it
    got (KeyError); ours warns as it does and returns what modify() returns
    without full_response. The writes are the same."""
    with on_sync(QpItem):
        QpItem(name="a", n=1).save()
        with pytest.raises(KeyError, match="value"), pytest.warns(DeprecationWarning):
            QpItem.objects(name="a").modify(full_response=True, **form)
        theirs = [d.to_mongo().to_dict() for d in QpItem.objects.exclude("id")]
    await QpItem(name="a", n=1).async_save()
    await QpItem(name="b", n=1).async_save()
    expected = await QpItem.objects(name="b").async_modify(**form)
    with pytest.warns(DeprecationWarning, match="full response"):
        got = await QpItem.objects(name="a").async_modify(full_response=True, **form)
    assert isinstance(got, QpItem)
    assert (got.name, got.n) == ("a", expected.n)
    ours = await QpItem.objects(name="a").exclude("id").async_to_list()
    assert [d.to_mongo().to_dict() for d in ours] == theirs


class QpPart(mongoengine.EmbeddedDocument):
    x = IntField()


class QpHolder(Document):
    part = mongoengine.EmbeddedDocumentField(QpPart)


IN_BULK_VIEWS: dict[str, tuple[Callable[[Any], Any], type]] = {
    "documents": (lambda queryset: queryset.exclude("id"), InvalidDocumentError),
    "scalars": (
        lambda queryset: queryset.exclude("id").scalar("part"),
        InvalidDocumentError,
    ),
    "loading_fine": (lambda queryset: queryset.exclude("id", "part"), KeyError),
}


def raised(call: Callable[[], Any]) -> tuple[type, str]:
    """The type and message of what ``call`` raises (it must raise)."""
    with pytest.raises(Exception) as error:
        call()
    return type(error.value), str(error.value)


@pytest.mark.parametrize(
    ("view", "error"), IN_BULK_VIEWS.values(), ids=IN_BULK_VIEWS.keys()
)
async def test_in_bulk_without_ids_raises_the_load_error_first(
    async_alias, sync_db, view, error
):
    """MongoEngine's in_bulk() loads a result before it reads its ``_id``:
    with ``exclude("id")`` a stored value that cannot be loaded raises its
    load error, not KeyError (which ours raised, sync and async, reading the
    ids first); a result that loads raises KeyError."""
    broken = {"part": "not a dict"}
    ids = [sync_db.qp_holder.insert_one(dict(broken)).inserted_id]
    with on_sync(QpHolder):
        plain = MongoEngineQuerySet(QpHolder, QpHolder._get_collection())
        expected = raised(lambda: view(plain).in_bulk(ids))
        assert raised(lambda: view(QpHolder.objects).in_bulk(ids)) == expected
    assert expected[0] is error
    collection = await QpHolder._async_get_collection()
    await collection.insert_one({"_id": ids[0], **broken})
    with pytest.raises(error) as ours:
        await view(QpHolder.objects).async_in_bulk(ids)
    assert (type(ours.value), str(ours.value)) == expected
    assert ours.value.__context__ is None


class QpNested(Document):
    ints = ListField(IntField())
    sorted_ints = SortedListField(IntField())
    counts = MapField(IntField())
    words = ListField(StringField(), db_field="w")


# Values an update may store, of another type than the items': lists and dicts
# inside a list or dict of plain items.
NESTED = {
    "ints": [1, [2, [3]], {"k": [4]}],
    "sorted_ints": [[1], 2],
    "counts": {"a": [1, [2]], "b": {"c": [1]}, "d": 1},
    "w": ["a", ["b"]],
}
NESTED_TERMINALS: dict[str, tuple[Callable[..., Any], Callable[..., Any]]] = {
    "scalar": (
        lambda queryset, name: list(queryset.scalar(name)),
        lambda queryset, name: queryset.async_scalar(name),
    ),
    "values_list": (
        lambda queryset, name: list(queryset.values_list(name, "ints")),
        lambda queryset, name: queryset.async_values_list(name, "ints"),
    ),
    "distinct": (
        lambda queryset, name: queryset.distinct(name),
        lambda queryset, name: queryset.async_distinct(name),
    ),
}


def changed_through(value: Any) -> Any:
    """What a change through the first list or dict nested in ``value`` (a
    scalar, a tuple of them, or a list of distinct values) marks: the changed
    fields of the document it is bound to, or the error raised."""
    held = list(value) if isinstance(value, tuple) else [value]
    nested = [
        item
        for container in held
        if isinstance(container, list | dict)
        for item in (container.values() if isinstance(container, dict) else container)
        if isinstance(item, list | dict)
    ]
    if not nested:
        return None
    try:
        if isinstance(nested[0], list):
            nested[0].append(9)
        else:
            nested[0]["z"] = 9
        return sorted(nested[0]._instance._get_changed_fields())
    except Exception as error:  # (the outcome is compared)
        return type(error)


@pytest.mark.parametrize("terminal", NESTED_TERMINALS, ids=NESTED_TERMINALS.keys())
@pytest.mark.parametrize("name", ["ints", "sorted_ints", "counts", "words"])
async def test_lists_and_dicts_nested_in_plain_containers(
    async_alias, sync_db, terminal, name
):
    """A list or dict stored inside a container of plain items (by an
    update): ``async_scalar``, ``async_values_list`` and ``async_distinct``
    give them as MongoEngine's terminals do, wrapped (``BaseList``,
    ``BaseDict``) under their path, and a change through one marks what
    MongoEngine's marks (async_scalar gave the nested ones plain: the first
    read of a container of plain items did not walk them)."""
    theirs_of, ours_of = NESTED_TERMINALS[terminal]
    sync_db.qp_nested.insert_one(dict(NESTED))
    with on_sync(QpNested):
        theirs = theirs_of(QpNested.objects, name)
        expected = [shape(value) for value in theirs]
        expected_changes = [changed_through(value) for value in theirs]
    collection = await QpNested._async_get_collection()
    await collection.insert_one(dict(NESTED))
    ours = await ours_of(QpNested.objects, name)
    assert type(ours) is type(theirs)
    assert [shape(value) for value in ours] == expected
    assert [changed_through(value) for value in ours] == expected_changes
