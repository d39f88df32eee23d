"""A user who moves sync MongoEngine code to the async API gets MongoEngine's
results: the scenarios of ``async_differential.py`` (reads with ``get()``'s
errors, counts, distinct, aggregations, ``in_bulk``, scalars; updates with
each operator, upserts, modifies, deletes; a document's saves, reloads,
modifies, updates and deletes; inserts; delete rules with their signals;
embedded document lists; references awaited; empty, sliced and
``none()`` querysets; saves of changes of every shape, failing ones and
their retries, with the changes their receivers see; distinct of embedded
documents; queryset terminals on slices, limits and skips; a document's
reloads, updates, cascades, clean and write concerns; sequence numbers;
validation errors with their ``to_dict()``; select_related and no_dereference
blocks; seeded random classes, documents, in-place changes and updates)
run through plain MongoEngine's sync API and through
this package's async API, each in a process of its own, must record the same
transcript, less the differences the docs give (normalised there)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from mongoengine.base.datastructures import BaseDict, BaseList

from mongoengine_async import (
    DictField,
    Document,
    EmbeddedDocument,
    EmbeddedDocumentField,
    EmbeddedDocumentListField,
    IntField,
    ListField,
    StringField,
    signals,
)
from test_sync_differential import assert_same_transcripts

SCRIPT = Path(__file__).with_name("async_differential.py")


@pytest.mark.parametrize("mode", ["quiet", "writes", "signals"])
def test_async_scenarios_run_as_through_mongoengine(
    mode: str, mongodb_uri: str
) -> None:
    """``quiet``: no signal receiver; ``writes``: receivers of the write
    signals record them; ``signals``: a receiver of each signal records it."""
    assert_same_transcripts(SCRIPT, mode, mongodb_uri)


class AdVote(EmbeddedDocument):
    author = StringField()
    votes = IntField(default=0)


class AdPost(Document):
    title = StringField()
    votes = EmbeddedDocumentListField(AdVote)
    best = EmbeddedDocumentField(AdVote)


async def test_distinct_embedded_documents_are_built_as_new(async_alias: str) -> None:
    """MongoEngine's ``distinct`` builds the embedded documents with their
    class's constructor: ``_created`` is True, as ``async_distinct`` gives."""
    await AdPost(title="a", best=AdVote(author="x", votes=1)).async_save()
    (best,) = await AdPost.objects.async_distinct("best")
    assert (best.author, best.votes, best._created) == ("x", 1, True)
    assert best._changed_fields == []


async def test_post_save_sees_changes_inside_a_list_changed_whole(
    async_alias: str,
) -> None:
    """An embedded document changed inside a list that is itself changed
    whole (an item removed): ``post_save`` receivers see its own changes, as
    MongoEngine's see them (its save clears them after the signal)."""
    await AdPost(title="a", votes=[AdVote(author="x"), AdVote(author="y")]).async_save()
    post = await AdPost.objects.async_get()
    post.votes.filter(author="x").update(votes=5)
    post.votes.filter(author="y").delete()
    seen = []

    def receiver(sender: Any, document: Any, **kwargs: Any) -> None:
        seen.append((document._changed_fields, document.votes[0]._changed_fields))

    signals.post_save.connect(receiver, sender=AdPost)
    try:
        await post.async_save()
    finally:
        signals.post_save.disconnect(receiver, sender=AdPost)
    assert seen == [(["votes"], ["votes"])]
    assert (post._get_changed_fields(), post.votes[0]._changed_fields) == ([], [])
    stored = await AdPost.objects.as_pymongo().async_get()
    assert stored["votes"] == [{"author": "x", "votes": 5}]


class AdTagged(Document):
    tags = ListField(StringField())
    best = EmbeddedDocumentField(AdVote)


async def test_post_save_sees_a_list_set_whole_as_set(async_alias: str) -> None:
    """A save of a document with changes in an embedded document too: its
    ``post_save`` receivers see a list set whole as it was set (``_data``
    holds the list given), as MongoEngine's, whose save wraps it in a
    ``BaseList`` only as it clears the changes, after the signal."""
    await AdTagged(best=AdVote(author="x")).async_save()
    tagged = await AdTagged.objects.async_get()
    tagged.best.votes = 2
    tagged.tags = ["t"]
    seen = []

    def receiver(sender: Any, document: Any, **kwargs: Any) -> None:
        seen.append((type(document._data["tags"]), document.best._changed_fields))

    signals.post_save.connect(receiver, sender=AdTagged)
    try:
        await tagged.async_save()
    finally:
        signals.post_save.disconnect(receiver, sender=AdTagged)
    assert seen == [(list, ["votes"])]
    stored = await AdTagged.objects.as_pymongo().async_get()
    assert (stored["tags"], stored["best"]["votes"]) == (["t"], 2)


class AdShelf(Document):
    tags = ListField(StringField())
    scores = DictField()
    count = IntField()


async def test_save_ends_with_lists_and_dicts_set_whole_tracked(
    async_alias: str,
) -> None:
    """A list or dict set whole and saved is held as MongoEngine's save leaves
    it: a ``BaseList``/``BaseDict`` of its own (MongoEngine's clearing reads
    it), so the list the caller still holds is not the document's: changed
    afterwards, it changes neither the document nor what the next save
    stores (before, the document showed a value that was never stored)."""
    shelf = await AdShelf(tags=["a"], scores={"a": 1}).async_save()
    shelf = await AdShelf.objects.async_get(id=shelf.id)
    tags, scores = ["t"], {"k": 1}
    shelf.tags, shelf.scores, shelf.count = tags, scores, 1
    await shelf.async_save()
    tags.append("u")
    scores["j"] = 2
    await shelf.async_save()
    stored = await AdShelf.objects.as_pymongo().async_get(id=shelf.id)
    assert (stored["tags"], stored["scores"]) == (["t"], {"k": 1})
    assert (shelf.tags, shelf.scores) == (["t"], {"k": 1})
    assert type(shelf._data["tags"]) is BaseList
    assert type(shelf._data["scores"]) is BaseDict


async def test_distinct_of_an_embedded_field_storing_a_list_raises_as_mongoengine(
    async_alias: str,
) -> None:
    """An ``EmbeddedDocumentField`` whose stored value is a list of lists (written
    behind the model's back): ``async_distinct`` raises MongoEngine's
    ``TypeError``, its class called with the walked list (before: an
    ``AttributeError`` from the loader, ``'list' object has no attribute
    'get'``)."""
    collection = await AdPost._async_get_collection()
    await collection.insert_one({"title": "a", "best": [[{"author": "x"}]]})
    with pytest.raises(TypeError) as raised:
        await AdPost.objects.async_distinct("best")
    assert str(raised.value).endswith(
        "AdVote() argument after ** must be a mapping, not BaseList"
    )
