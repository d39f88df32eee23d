"""A sync ``save()`` of a loaded document (a ``connect()`` alias) sends
MongoEngine's update; a plain change's is built from the write plan's dump,
without MongoEngine's ``_delta`` (its second ``to_mongo`` and its walks)."""

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


@contextlib.contextmanager
def delta_calls() -> Iterator[list[int]]:
    """Counts the calls of MongoEngine's ``BaseDocument._delta`` in the block
    (a profile hook: a patch on ``_delta`` would itself send the save to it)."""
    code = BaseDocument._delta.__code__
    seen = [0]

    def hook(frame: FrameType, event: str, _: Any) -> None:
        if event == "call" and frame.f_code is code:
            seen[0] += 1

    sys.setprofile(hook)
    try:
        yield seen
    finally:
        sys.setprofile(None)


def loaded_item() -> SsItem:
    stored = SsItem(name="a", n=1, tags=["x"], inner=SsInner(count=1)).save()
    return SsItem.objects.get(id=stored.id)


def test_plain_change_sends_mongoenginess_update_without_its_delta(
    sync_default: Any, sync_command_log: Any
) -> None:
    item = loaded_item()
    item.n += 1
    item.name = None
    item.tags.append("y")
    expected = mongoengine.Document._get_update_doc(item)
    assert expected == {"$set": {"n": 2, "tags": ["x", "y"]}, "$unset": {"name": 1}}
    sync_command_log.clear()
    with delta_calls() as seen:
        item.save()
    assert seen == [0]
    assert sync_command_log.names == ["update"]
    assert sync_command_log.events[0].command["updates"][0]["u"] == expected
    assert item._changed_fields == []
    assert sync_default.ss_item.find_one({"_id": item.id}, {"_id": 0}) == {
        "n": 2,
        "tags": ["x", "y"],
        "inner": {"count": 1},
    }


def test_nested_change_takes_mongoenginess_delta(
    sync_default: Any, sync_command_log: Any
) -> None:
    item = loaded_item()
    item.n = 5
    item.inner.count = 2
    expected = mongoengine.Document._get_update_doc(item)
    assert expected == {"$set": {"n": 5, "inner.count": 2}}
    sync_command_log.clear()
    with delta_calls() as seen:
        item.save()
    assert seen == [1]
    assert sync_command_log.events[0].command["updates"][0]["u"] == expected
    assert sync_default.ss_item.find_one({"_id": item.id}, {"_id": 0}) == {
        "name": "a",
        "n": 5,
        "tags": ["x"],
        "inner": {"count": 2},
    }
