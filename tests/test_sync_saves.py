"""A sync ``save()`` of a loaded document (a ``connect()`` alias) sends
MongoEngine's update and leaves MongoEngine's state; for a plain change the
update is built from the write plan's dump and the changes list emptied,
without MongoEngine's ``_delta`` (its second ``to_mongo`` and its walk) and
``_clear_changed_fields`` (another walk)."""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterator
from types import FrameType
from typing import Any

import mongoengine
from mongoengine.base import BaseDocument

from mongoengine_async import (
    Document,
    EmbeddedDocument,
    EmbeddedDocumentField,
    IntField,
    ListField,
    StringField,
)


class SsInner(EmbeddedDocument):
    count = IntField()


class SsItem(Document):
    name = StringField()
    n = IntField()
    tags = ListField(StringField())
    inner = EmbeddedDocumentField(SsInner)


WALKS = (BaseDocument._delta, BaseDocument._clear_changed_fields)


@contextlib.contextmanager
def walks() -> Iterator[list[int]]:
    """Counts the calls of MongoEngine's ``_delta`` and ``_clear_changed_fields``
    in the block (a profile hook: a patch on them would itself send the save
    to them)."""
    codes = [function.__code__ for function in WALKS]
    seen = [0, 0]

    def hook(frame: FrameType, event: str, _: Any) -> None:
        if event == "call" and frame.f_code in codes:
            seen[codes.index(frame.f_code)] += 1

    sys.setprofile(hook)
    try:
        yield seen
    finally:
        sys.setprofile(None)


def loaded_item() -> SsItem:
    stored = SsItem(name="a", n=1, tags=["x"], inner=SsInner(count=1)).save()
    return SsItem.objects.get(id=stored.id)


def test_plain_change_sends_mongoenginess_update_without_its_walks(
    sync_default: Any, sync_command_log: Any
) -> None:
    item = loaded_item()
    item.n += 1
    item.name = None
    expected = mongoengine.Document._get_update_doc(item)
    assert expected == {"$set": {"n": 2}, "$unset": {"name": 1}}
    sync_command_log.clear()
    with walks() as seen:
        item.save()
    assert seen == [0, 0]
    assert sync_command_log.names == ["update"]
    assert sync_command_log.events[0].command["updates"][0]["u"] == expected
    assert item._changed_fields == []
    assert sync_default.ss_item.find_one({"_id": item.id}, {"_id": 0}) == {
        "n": 2,
        "tags": ["x"],
        "inner": {"count": 1},
    }


def test_changed_list_is_cleared_by_mongoenginess_walk(
    sync_default: Any, sync_command_log: Any
) -> None:
    """A list's update is plain; its clearing walks into the list, as
    MongoEngine's does."""
    item = loaded_item()
    item.tags.append("y")
    expected = mongoengine.Document._get_update_doc(item)
    assert expected == {"$set": {"tags": ["x", "y"]}}
    sync_command_log.clear()
    with walks() as seen:
        item.save()
    assert seen == [0, 1]
    assert sync_command_log.events[0].command["updates"][0]["u"] == expected
    assert item._changed_fields == []


def test_new_document_clears_without_the_walk(
    sync_default: Any, sync_command_log: Any
) -> None:
    with walks() as seen:
        item = SsItem(name="b", n=3).save()
    assert seen == [0, 0]
    assert sync_command_log.names == ["insert"]
    assert item._changed_fields == []
    assert not item._created


def test_nested_change_takes_mongoenginess_walks(
    sync_default: Any, sync_command_log: Any
) -> None:
    item = loaded_item()
    item.n = 5
    item.inner.count = 2
    expected = mongoengine.Document._get_update_doc(item)
    assert expected == {"$set": {"n": 5, "inner.count": 2}}
    sync_command_log.clear()
    with walks() as seen:
        item.save()
    assert seen == [1, 1]
    assert sync_command_log.events[0].command["updates"][0]["u"] == expected
    assert item._changed_fields == []
    assert item.inner._changed_fields == []
    assert sync_default.ss_item.find_one({"_id": item.id}, {"_id": 0}) == {
        "name": "a",
        "n": 5,
        "tags": ["x"],
        "inner": {"count": 2},
    }
