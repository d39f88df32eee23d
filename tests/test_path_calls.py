"""The calls the common paths make, counted: a sync load of cached references
and an insert of new documents ask nothing they do not need (issue 17).

Counted by a profile hook, not patches (a patch would change the path)."""

from __future__ import annotations

import contextlib
import sys
from collections import Counter
from collections.abc import Iterator
from types import FrameType
from typing import Any

from mongoengine_async import CachedReferenceField, Document, StringField


@contextlib.contextmanager
def calls_made() -> Iterator[Counter[str]]:
    """The calls made within: Python functions by name, and the C methods
    called straight from a Python function as ``caller>method``."""
    seen: Counter[str] = Counter()

    def hook(frame: FrameType, event: str, arg: Any) -> None:
        if event == "call":
            seen[frame.f_code.co_name] += 1
        elif event == "c_call":
            seen[f"{frame.f_code.co_name}>{getattr(arg, '__name__', '?')}"] += 1

    sys.setprofile(hook)
    try:
        yield seen
    finally:
        sys.setprofile(None)


class PcAuthor(Document):
    name = StringField()


class PcBook(Document):
    title = StringField()
    author = CachedReferenceField(PcAuthor, fields=["name"])


class PcItem(Document):
    name = StringField()


def test_a_sync_load_of_cached_references_asks_no_switch_nor_plan(
    sync_default: Any,
) -> None:
    """Each book (its cache stored as a dict: loaded by ``_from_son``, one find)
    is read back as MongoEngine reads it, with no constructor plan tried for
    it or its author, no switch looked up (none bound) and no field unwrapped
    per son."""
    author = PcAuthor(name="a").save()
    PcBook.objects.insert([PcBook(title=f"t{i}", author=author) for i in range(3)])
    with calls_made() as seen:
        books = list(PcBook.objects.order_by("title"))
    assert [(b.title, b.author.name, b.author.id) for b in books] == [
        (f"t{i}", "a", author.id) for i in range(3)
    ]
    assert not any(b._created or b.author._created for b in books)
    asked = ("construct", "switched_alias", "switched_collection", "innermost")
    assert {name: seen[name] for name in asked} == dict.fromkeys(asked, 0)


async def test_an_insert_of_new_documents_reads_no_mark(async_alias: str) -> None:
    """An insert of documents ``__init__`` built (no early id before, no list
    of changes) gives and keeps their ids without a lookup per document for
    a mark or a list they do not hold."""
    items = [PcItem(name=f"n{i}") for i in range(3)]
    await PcItem.objects.async_insert(items[:1], load_bulk=False)  # (warm)
    with calls_made() as seen:
        await PcItem.objects.async_insert(items[1:], load_bulk=False)
    stored = [d["name"] async for d in PcItem._get_collection().find({}, {"_id": 0})]
    assert sorted(stored) == ["n0", "n1", "n2"]
    assert all(item.id is not None and not item._created for item in items)
    # (give_id's one get each: its plan's check of _initialised; set_ids pops
    # the mark of the id each was given)
    assert (seen["give_id>get"], seen["keep_id"], seen["set_ids>pop"]) == (2, 0, 2)


async def test_an_insert_meets_its_list_of_changes_removed_after_asked(
    async_alias: str,
) -> None:
    """Another thread removing a document's list of changes (a transaction's
    undo: ``put_changes(None)``) between give_id's ask and its read: the
    insert goes on as for a document holding none, no KeyError."""
    from mongoengine_async import deltas, to_bson

    await PcItem(name="a").async_save()
    item = await PcItem.objects.async_get(name="a")
    item.id, item.name = None, "b"
    assert "_changed_fields" in item.__dict__
    code = to_bson.give_id.__code__
    asked = next(  # the line right after the ask: the read
        line
        for _, _, line in code.co_lines()
        if line is not None and "_changed_fields" in _source_line(code, line)
    )

    removed = []

    def trace(frame: FrameType, event: str, arg: Any) -> Any:
        if frame.f_code is code:
            if event == "line" and frame.f_lineno == asked + 1:
                deltas.put_changes(item, None)  # (as another thread would)
                removed.append(item)
            return trace
        return None

    sys.settrace(trace)
    try:
        await PcItem.objects.async_insert([item], load_bulk=False)
    finally:
        sys.settrace(None)
    assert removed == [item]
    stored = [d["name"] async for d in PcItem._get_collection().find({}, {"_id": 0})]
    assert sorted(stored) == ["a", "b"]
    assert item.id is not None and not item._created


def _source_line(code: Any, line: int) -> str:
    """Line ``line`` of the file of ``code``."""
    import linecache

    return linecache.getline(code.co_filename, line)
