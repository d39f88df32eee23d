"""Every way of reading a queryset on a connect() alias gives what MongoEngine's
own QuerySet gives: each chain of modifiers with each terminal, on the stored
documents of tests/test_sync_loader.py (every field kind, a subclass, defaults
and nulls) and on a class whose fields are stored under other names, with a
primary key of its own; results compared value by value, errors by type and
message."""

from __future__ import annotations

from typing import Any

import pytest
from bson import DBRef, ObjectId, UuidRepresentation, json_util
from mongoengine.base import BaseDocument

from mongoengine_async import (
    Document,
    EmbeddedDocumentField,
    IntField,
    ListField,
    ReferenceField,
    StringField,
)
from mongoengine_async.proxies import AsyncReferenceProxy
from test_loading import LdEverything, LdPart, LdTarget, assert_same
from test_sync_loader import plain, store_documents

JSON_OPTIONS = json_util.JSONOptions(uuid_representation=UuidRepresentation.STANDARD)


class MxRenamed(Document):
    """The fields the chains use, stored under other names; a string primary key."""

    code = StringField(primary_key=True)
    text = StringField(db_field="t", default="untitled")
    number = IntField(db_field="n")
    tags = ListField(StringField(), db_field="tg")
    part = EmbeddedDocumentField(LdPart, db_field="p")
    target = ReferenceField(LdTarget, db_field="tr")
    meta = {"allow_inheritance": True}


class MxRenamedSub(MxRenamed):
    extra = StringField(db_field="x")


def store_renamed() -> list:
    """Three MxRenamed documents (one of the subclass), saved: their keys."""
    target = LdTarget(name="t").save()
    part = LdPart(label="p", target=target)
    documents = [
        MxRenamed(code="a", text="hi", number=7, tags=["a"], part=part, target=target),
        MxRenamedSub(code="b", number=7, tags=["c"], extra="e", target=target),
        MxRenamed(code="c", number=1),
    ]
    return [document.save().pk for document in documents]


CHAINS = {
    "all": lambda qs: qs,
    "scalar": lambda qs: qs.scalar("number"),
    "scalar2": lambda qs: qs.scalar("number", "text"),
    "scalar_ref": lambda qs: qs.scalar("target"),
    "values_list": lambda qs: qs.values_list("number"),
    "as_pymongo": lambda qs: qs.as_pymongo(),
    "scalar_as_pymongo": lambda qs: qs.scalar("number").as_pymongo(),
    "as_pymongo_scalar": lambda qs: qs.as_pymongo().scalar("number"),
    "only": lambda qs: qs.only("number"),
    "exclude": lambda qs: qs.exclude("part", "text"),
    "no_deref": lambda qs: qs.no_dereference(),
    "no_deref_scalar_ref": lambda qs: qs.no_dereference().scalar("target"),
    "none": lambda qs: qs.none(),
    "limit": lambda qs: qs.limit(2),
    "limit0": lambda qs: qs.limit(0),
    "skip": lambda qs: qs.skip(1),
    "slice": lambda qs: qs[1:3],
    "empty": lambda qs: qs.filter(number=-1),
    "no_cache": lambda qs: qs.no_cache(),
    "batch1": lambda qs: qs.batch_size(1),
    "fields": lambda qs: qs.fields(number=1, tags=1),
    "all_fields": lambda qs: qs.only("number").all_fields(),
    "no_sub": lambda qs: qs.no_sub_classes(),
    "clone": lambda qs: qs.clone(),
    "only_scalar": lambda qs: qs.only("text").scalar("number"),
    "exclude_as_pymongo": lambda qs: qs.exclude("tags").as_pymongo(),
    "subclass_filter": lambda qs: qs.filter(_cls="LdEverything.LdSpecial"),
    "comment_hint": lambda qs: qs.comment("c").hint([("_id", 1)]),
    "max_time": lambda qs: qs.max_time_ms(5000),
    "order_desc": lambda qs: qs.order_by("-number"),
    "limit_skip": lambda qs: qs.limit(3).skip(0),
}

TERMINALS = {
    "list": lambda qs, ids: list(qs),
    "loop": lambda qs, ids: [d for d in qs],
    "twice": lambda qs, ids: (list(qs), list(qs)),
    "first": lambda qs, ids: qs.first(),
    "index0": lambda qs, ids: qs[0],
    "index2": lambda qs, ids: qs[2],
    "index9": lambda qs, ids: qs[9],
    "slice": lambda qs, ids: list(qs[0:2]),
    "get": lambda qs, ids: qs.get(pk=ids[0]),
    "get_many": lambda qs, ids: qs.get(),
    "with_id": lambda qs, ids: qs.with_id(ids[1]),
    "in_bulk": lambda qs, ids: qs.in_bulk(ids),
    "count": lambda qs, ids: qs.count(),
    "len": lambda qs, ids: len(qs),
    "bool": lambda qs, ids: bool(qs),
    "next": lambda qs, ids: (next(qs), next(qs)),
    "rewind": lambda qs, ids: (next(qs), qs.rewind(), next(qs))[::2],
    "select_related": lambda qs, ids: qs.select_related(),
    "select_related0": lambda qs, ids: qs.select_related(0),
    "len_then_list": lambda qs, ids: (len(qs), list(qs), qs[1]),
    "list_then_index": lambda qs, ids: (list(qs), qs[1]),
    "sum": lambda qs, ids: qs.sum("number"),
    "repr": lambda qs, ids: repr(qs),
    "to_json": lambda qs, ids: qs.to_json(json_options=JSON_OPTIONS),
    "next_then_index": lambda qs, ids: (next(qs), qs[0], next(qs)),
    "first_then_list": lambda qs, ids: (qs.first(), list(qs)),
    "negative": lambda qs, ids: qs[-1],
    "count_limited": lambda qs, ids: qs.count(True),
    "values": lambda qs, ids: list(qs.values_list("number", "text")),
    "item_frequencies": lambda qs, ids: sorted(qs.item_frequencies("number").items()),
    "distinct": lambda qs, ids: sorted(map(str, qs.distinct("number"))),
}


def outcome(call: Any) -> Any:
    """What ``call()`` returns, or the type and message of what it raises."""
    try:
        return call()
    except Exception as error:  # compared by type and message
        return raised(error)


def raised(error: Exception) -> tuple[str, type, str]:
    """An error's type and message, without a server error's reply (whose
    cluster time differs from one call to the next)."""
    return ("raised", type(error), str(error).split(", full error: ")[0])


def assert_alike(fast: Any, slow: Any, where: str) -> None:
    """The same values, documents compared by ``assert_same``; a reference read
    on an async alias (a proxy) stands for the document read on a sync one (or
    its DBRef, where the document is missing)."""
    if isinstance(fast, AsyncReferenceProxy) and isinstance(slow, Document | DBRef):
        assert fast == slow, where
        return
    assert type(fast) is type(slow), where
    if isinstance(slow, BaseDocument) and "_fields" in vars(slow):
        # No-dereference loading: each document gets its own copy of the fields.
        assert vars(fast).keys() == vars(slow).keys(), where
        assert fast.to_mongo() == slow.to_mongo(), where
    elif isinstance(slow, BaseDocument):
        assert_same(fast, slow)
    elif isinstance(slow, (list, tuple)):
        assert len(fast) == len(slow), where
        for a, b in zip(fast, slow, strict=True):
            assert_alike(a, b, where)
    elif isinstance(slow, dict):
        assert list(fast) == list(slow), where
        for key in slow:
            assert_alike(fast[key], slow[key], f"{where}.{key}")
    else:
        assert fast == slow, where


@pytest.fixture(scope="module")
def stored(module_sync_default: Any) -> dict[type, list]:
    """Each class's stored documents' keys (read only by this module), and one
    unknown."""
    return {
        LdEverything: [d.pk for d in store_documents(module_sync_default)]
        + [ObjectId()],
        MxRenamed: [*store_renamed(), "unknown"],
    }


@pytest.mark.parametrize("terminal", TERMINALS)
@pytest.mark.parametrize("chain", CHAINS)
@pytest.mark.parametrize("cls", [LdEverything, MxRenamed], ids=lambda c: c.__name__)
def test_reads_as_mongoengine(
    stored: dict[type, list], cls: type, chain: str, terminal: str
) -> None:
    make, end = CHAINS[chain], TERMINALS[terminal]

    def read(queryset: Any) -> Any:
        return outcome(
            lambda: end(make(queryset.order_by("number", "pk")), stored[cls])
        )

    fast, slow = read(cls.objects), read(plain(cls))
    assert_alike(fast, slow, f"{chain}/{terminal}")
