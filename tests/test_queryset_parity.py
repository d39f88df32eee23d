"""Queryset terminals on an async alias against MongoEngine's own on a sync
alias, for what once differed: ``modify(full_response=True)`` on a queryset
that matches nothing.

As in tests/test_document_parity.py, the same class runs both ways: MongoEngine's
code on the sync alias SYNC (``switch_db``), ours on the async alias "default",
each on a fresh database.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from conftest import fresh_sync_default
from mongoengine_async import Document, IntField, StringField
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
