"""``select_related()`` on a connect() alias gives what MongoEngine's gives.

Our QuerySet joins the references of a class whose only references are plain
ReferenceFields while the results are built (sync_select_related.py); every
other queryset goes through MongoEngine's walk. Each test runs the same
query through our QuerySet and through MongoEngine's own ``QuerySet`` class
on the same seeded data and compares the documents (``assert_same`` of
tests/test_loading.py), the documents found in their place, which of them
are one object, and the commands sent.
"""

from __future__ import annotations

import os
import random
from collections.abc import Callable
from typing import Any

import mongoengine
import pytest
from bson import DBRef, ObjectId
from mongoengine.dereference import DeReference

from mongoengine_async import (
    Document,
    EmbeddedDocument,
    EmbeddedDocumentField,
    FieldDoesNotExist,
    IntField,
    ListField,
    ReferenceField,
    StringField,
)
from mongoengine_async.testing import CommandLog
from test_loading import assert_same, calls_counted, loader_calls
from test_sync_loader import CountingQuerySet, built_by_loader, plain


class SrPublisher(Document):
    name = StringField()


class SrAuthor(Document):
    name = StringField()
    publisher = ReferenceField(SrPublisher)  # left a DBRef by both


class SrGhost(Document):
    """Another class on SrAuthor's collection (MongoEngine skips the ids
    already found there)."""

    name = StringField()
    publisher = ReferenceField(SrPublisher)
    meta = {"collection": "sr_author"}


class SrNote(EmbeddedDocument):
    text = StringField()
    who = ReferenceField(SrAuthor)  # not looked into by MongoEngine's walk


class SrBook(Document):
    title = StringField()
    year = IntField()
    tags = ListField(StringField())
    note = EmbeddedDocumentField(SrNote)
    author = ReferenceField(SrAuthor)
    publisher = ReferenceField(SrPublisher)
    editor = ReferenceField(SrAuthor)
    ghost = ReferenceField(SrGhost)
    sequel = ReferenceField("SrBook")


class SrLooseBook(Document):
    title = StringField()
    author = ReferenceField(SrAuthor)
    meta = {"strict": False}


class SrCountedBook(Document):
    """Read through a user's queryset class that sees each result ``list()`` gives."""

    name = StringField()
    author = ReferenceField(SrAuthor)
    meta = {"queryset_class": CountingQuerySet}


class SrShelf(Document):
    """A list of references: only MongoEngine's walk loads it."""

    books = ListField(ReferenceField(SrBook))
    author = ReferenceField(SrAuthor)


REFERENCES = ("author", "publisher", "editor", "ghost", "sequel")


def seed(database: Any, rng: random.Random) -> dict[str, list[ObjectId]]:
    """Publishers, authors and books, every reference absent, null, missing
    or found, books referring to each other; stored as a user's code would."""
    publishers = [ObjectId() for _ in range(4)]
    authors = [ObjectId() for _ in range(12)]
    books = [ObjectId() for _ in range(150)]  # more than a chunk and a batch
    database.sr_publisher.insert_many(
        [{"_id": id_, "name": f"p{i}"} for i, id_ in enumerate(publishers)]
    )
    database.sr_author.insert_many(
        [
            {"_id": id_, "name": f"a{i}", "publisher": rng.choice(publishers)}
            for i, id_ in enumerate(authors)
        ]
    )
    targets = {
        "author": authors,
        "publisher": publishers,
        "editor": authors,
        "ghost": authors,
        "sequel": books,
    }
    raws = []
    for i, id_ in enumerate(books):
        raw: dict[str, Any] = {"_id": id_, "title": f"t{i:03}", "year": i}
        if rng.random() < 0.5:
            raw["tags"] = [f"g{rng.randrange(5)}" for _ in range(rng.randrange(3))]
        if rng.random() < 0.3:
            raw["note"] = {"text": "n", "who": rng.choice(authors)}
        for name in REFERENCES:
            roll = rng.random()
            if roll < 0.6:
                raw[name] = rng.choice(targets[name])
            elif roll < 0.7:
                raw[name] = ObjectId()  # a document that is not there
            elif roll < 0.8:
                raw[name] = None
        raws.append(raw)
    rng.shuffle(raws)
    database.sr_book.insert_many(raws)
    return {"authors": authors, "books": books}


def sent(log: CommandLog, since: int) -> list[tuple]:
    """The commands sent after the first ``since``: name, collection, filter,
    an ``$in`` as a set (MongoEngine lists a set of ids: its order is the set's)."""
    commands = []
    for event in log.events[since:]:
        command = event.command
        filter_ = dict(command.get("filter", {}))
        if isinstance(filter_.get("_id"), dict) and "$in" in filter_["_id"]:
            filter_["_id"] = frozenset(filter_["_id"]["$in"])
        name = event.command_name  # (a getMore's cursor id is the server's)
        target = command["collection"] if name == "getMore" else command.get(name)
        commands.append((name, target, filter_))
    return commands


def shape(documents: list) -> list:
    """Which values in the documents' fields are one object: the first place
    each object was met, for each place."""
    first: dict[int, tuple] = {}
    places = []
    for index, document in enumerate(documents):
        for name, value in document._data.items():
            if isinstance(value, mongoengine.Document):
                places.append(first.setdefault(id(value), (index, name)))
    return places


def assert_selected_same(fast: list, slow: list) -> None:
    """The results and every document found for them are MongoEngine's."""
    assert type(fast) is type(slow) is list
    assert len(fast) == len(slow)
    for fast_document, slow_document in zip(fast, slow, strict=True):
        assert_same(fast_document, slow_document)  # (each value, by type)
        for name, value in slow_document._data.items():
            if isinstance(value, mongoengine.Document):
                assert_same(fast_document._data[name], value)
    assert shape(fast) == shape(slow)


def both(
    sync_command_log: CommandLog, select: Callable[[Any], Any], cls: type = SrBook
) -> tuple[Any, Any]:
    """``select`` run on our queryset of ``cls`` and on MongoEngine's, with
    the commands each sent: (ours, commands), (MongoEngine's, commands)."""
    results = []
    for queryset in (cls.objects, plain(cls)):
        since = len(sync_command_log.events)
        results.append((select(queryset), sent(sync_command_log, since)))
    return results[0], results[1]


def selected_alike(
    sync_command_log: CommandLog, select: Callable[[Any], Any], cls: type = SrBook
) -> list:
    """``both``, asserting that ours and MongoEngine's give the same documents
    and send the same commands; returns ours."""
    (fast, fast_sent), (slow, slow_sent) = both(sync_command_log, select, cls)
    assert_selected_same(fast, slow)
    assert fast_sent == slow_sent
    return fast


@pytest.mark.parametrize("seed_value", [1, 2, 3])
@pytest.mark.parametrize("max_depth", [0, 1, 2])
def test_joined_while_loading_as_mongoengine_walks(
    sync_default: Any,
    sync_command_log: CommandLog,
    monkeypatch: pytest.MonkeyPatch,
    seed_value: int,
    max_depth: int,
) -> None:
    seed(sync_default, random.Random(seed_value))
    (fast, fast_sent), (slow, slow_sent) = both(
        sync_command_log,
        lambda objects: objects.order_by("title").select_related(max_depth),
    )
    assert_selected_same(fast, slow)
    assert fast_sent == slow_sent
    # find (+ getMore), then SrAuthor, SrPublisher, SrGhost, SrBook as met
    assert [name for name, *_ in fast_sent].count("find") == 5
    assert all(built_by_loader(document) for document in fast)
    found = [book._data["author"] for book in fast]
    assert any(isinstance(value, DBRef) for value in found)  # missing: left
    assert any(isinstance(value, SrAuthor) for value in found)

    # Joined, not walked: MongoEngine's DeReference is not called (patched, it
    # would be, as by MongoEngine: tests/test_sync_patched_reads.py).
    walks: list[Any] = []
    monkeypatch.setattr(DeReference, "__init__", lambda walk: walks.append(walk))
    assert_selected_same(SrBook.objects.order_by("title").select_related(), slow)
    assert walks == []


def cursor_steps(block: Callable[[], Any]) -> int:
    """How many times ``block`` steps a PyMongo cursor (``Cursor.next``)."""
    return calls_counted(block, ("next",), os.path.join("synchronous", "cursor.py"))


def test_the_results_and_references_are_read_a_reply_at_a_time(
    sync_default: Any, sync_command_log: CommandLog
) -> None:
    """The joined read takes each reply of the server (the books' find and
    getMore, the authors' ``in_bulk``) from the cursor's buffer at once, not a
    cursor step per result, in MongoEngine's round trips; ``in_bulk`` loads
    each reply in one call of the loader's batch."""
    seed(sync_default, random.Random(5))
    fast = []
    since = len(sync_command_log.events)
    steps = cursor_steps(
        lambda: fast.extend(SrBook.objects.order_by("title").select_related())
    )
    fast_sent = sent(sync_command_log, since)
    assert fast == selected_alike(
        sync_command_log, lambda objects: objects.order_by("title").select_related()
    )
    # A step for each reply (5 finds, a getMore) and at most one for the end
    # of each of the 5 reads; before, a step per result: 150 books and more.
    assert len(fast_sent) == 6
    assert len(fast_sent) <= steps <= len(fast_sent) + 5
    ids = [ObjectId() for _ in range(150)]
    sync_default.sr_publisher.insert_many([{"_id": id_, "name": "p"} for id_ in ids])
    calls = loader_calls(lambda: SrPublisher.objects.in_bulk(ids), SrPublisher)
    assert calls == 2  # the find's 101 and the getMore's 49; one by one: 150
    sync_command_log.clear()
    fast = SrPublisher.objects.in_bulk(ids)
    fast_sent = sync_command_log.names
    sync_command_log.clear()
    slow = plain(SrPublisher).in_bulk(ids)
    assert fast_sent == sync_command_log.names == ["find", "getMore"]
    assert list(fast) == list(slow) and len(fast) == 150
    for pk, document in slow.items():
        assert_same(fast[pk], document)
    # A result failing to load raises before the getMore, as in MongoEngine.
    sync_default.sr_publisher.update_one({"_id": ids[10]}, {"$set": {"odd": 1}})
    failures = []
    for queryset in (SrPublisher.objects, plain(SrPublisher)):
        sync_command_log.clear()
        with pytest.raises(FieldDoesNotExist) as raised:
            queryset.order_by("_id").in_bulk(ids)
        failures.append((str(raised.value), sync_command_log.names))
    assert failures[0] == failures[1] and failures[0][1] == ["find"]


def test_a_reference_stored_otherwise_goes_through_mongoengines_walk(
    sync_default: Any, sync_command_log: CommandLog
) -> None:
    ids = seed(sync_default, random.Random(4))
    stored_as_dbref = DBRef("sr_author", ids["authors"][0])
    sync_default.sr_book.update_one(
        {"_id": ids["books"][7]}, {"$set": {"author": stored_as_dbref}}
    )
    fast = selected_alike(
        sync_command_log, lambda objects: objects.order_by("-year").select_related()
    )
    book = next(book for book in fast if book.id == ids["books"][7])
    assert isinstance(book._data["author"], SrAuthor)


def test_results_left_to_mongoengines_walk_are_loaded_in_a_batch(
    sync_default: Any, sync_command_log: CommandLog
) -> None:
    """When one reference is stored otherwise (a DBRef), the results handed
    to MongoEngine's walk are loaded in one call of the loader's batch (and
    one for that result), the same documents as MongoEngine's."""
    authors = [ObjectId() for _ in range(3)]
    sync_default.sr_author.insert_many([{"_id": id_, "name": "a"} for id_ in authors])
    sync_default.sr_loose_book.insert_many(
        [{"title": f"t{i:02}", "author": authors[i % 3]} for i in range(40)]
    )
    sync_default.sr_loose_book.update_one(
        {"title": "t07"}, {"$set": {"author": DBRef("sr_author", authors[0])}}
    )
    calls = loader_calls(
        lambda: selected_alike(
            sync_command_log,
            lambda objects: objects.order_by("title").select_related(),
            SrLooseBook,
        ),
        SrLooseBook,
    )
    assert calls == 2  # one by one: 40


def compare_documents_made_of_values(fast: Any, slow: Any) -> int:
    """Compare the documents MongoEngine's walk made of a stored dict with a
    ``_cls`` (no id: equal to no other document), then leave None in their
    place; returns how many."""
    made = [
        name
        for name, value in slow._data.items()
        if isinstance(value, mongoengine.Document) and value.pk is None
    ]
    for name in made:
        assert_same(fast._data[name], slow._data[name])
        fast._data[name] = slow._data[name] = None
    return len(made)


AN_AUTHOR = DBRef("sr_author", None)  # stands for the first author's


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("title", {"_cls": "SrPublisher", "name": "taken for a document"}),
        ("year", {"plain": [1, 2]}),
        ("tags", ["a", AN_AUTHOR]),
        ("tags", [{"nested": ["x"]}]),
        ("note", ["not", "an", "embedded", "document"]),
        ("title", AN_AUTHOR),
    ],
    ids=["dict_with_cls", "dict", "dbref_in_list", "dict_in_list", "list", "dbref"],
)
def test_a_value_of_another_kind_goes_through_mongoengines_walk(
    sync_default: Any, sync_command_log: CommandLog, name: str, value: Any
) -> None:
    """Stored data may hold what the class does not declare; MongoEngine's
    walk looks into some of it (or fails on it): the same result, or error."""
    ids = seed(sync_default, random.Random(11))
    author = DBRef("sr_author", ids["authors"][0])
    if value is AN_AUTHOR:
        value = author
    elif isinstance(value, list):
        value = [author if item is AN_AUTHOR else item for item in value]
    sync_default.sr_book.update_one({"_id": ids["books"][3]}, {"$set": {name: value}})

    def select(objects: Any) -> Any:
        try:
            return objects.order_by("title").select_related()
        except Exception as error:  # compared below: the same type and message
            return type(error), str(error)

    (fast, fast_sent), (slow, slow_sent) = both(sync_command_log, select)
    if isinstance(slow, tuple):  # (ours fails after reading the whole result)
        assert fast == slow
        assert fast_sent[: len(slow_sent)] == slow_sent
    else:
        made = sum(map(compare_documents_made_of_values, fast, slow))
        assert made == (name == "title" and isinstance(value, dict))
        assert_selected_same(fast, slow)
        assert fast_sent == slow_sent


def test_a_result_the_joining_loader_leaves_is_joined_after(
    sync_default: Any, sync_command_log: CommandLog
) -> None:
    """An undeclared key (a non-strict class) sends the result to the usual
    loader: its reference is put in place from the same queries."""
    ids = seed(sync_default, random.Random(5))
    sync_default.sr_loose_book.insert_many(
        [
            {"title": "plain", "author": ids["authors"][1]},
            {"title": "extra", "author": ids["authors"][1], "undeclared": 1},
            {"title": "missing", "author": ObjectId(), "undeclared": 2},
        ]
    )
    fast = selected_alike(
        sync_command_log,
        lambda objects: objects.order_by("title").select_related(),
        SrLooseBook,
    )
    extra, missing, plain_book = fast
    assert extra._data["author"] is plain_book._data["author"]
    assert isinstance(missing._data["author"], DBRef)


@pytest.mark.parametrize(
    "select",
    [
        lambda objects: objects.only("title", "author").select_related(),
        lambda objects: objects.exclude("tags").select_related(),
        lambda objects: objects.filter(year__lt=0).select_related(),
        lambda objects: objects.none().select_related(),
        lambda objects: objects.limit(3).select_related(-1),
        lambda objects: objects.as_pymongo().limit(3).select_related(),
        lambda objects: objects.scalar("title", "year").limit(3).select_related(),
    ],
    ids=[
        "only",
        "exclude",
        "no_result",
        "none",
        "negative_depth",
        "as_pymongo",
        "scalar",
    ],
)
def test_other_querysets_select_as_mongoengine(
    sync_default: Any, sync_command_log: CommandLog, select: Callable[[Any], Any]
) -> None:
    seed(sync_default, random.Random(6))
    (fast, fast_sent), (slow, slow_sent) = both(sync_command_log, select)
    assert fast_sent == slow_sent
    if fast and isinstance(slow[0], mongoengine.Document):
        assert_selected_same(fast, slow)
    else:
        assert fast == slow


def test_no_dereference_selects_as_mongoengine(
    sync_default: Any, sync_command_log: CommandLog
) -> None:
    """(Each document MongoEngine loads without dereferencing gets its own
    copy of the fields, so they are compared by what they hold.)"""
    seed(sync_default, random.Random(9))
    (fast, fast_sent), (slow, slow_sent) = both(
        sync_command_log, lambda objects: objects.no_dereference().select_related()
    )
    assert fast_sent == slow_sent

    def held(documents: list) -> list:
        return [
            (type(document), document.to_mongo(), [*map(type, document._data.values())])
            for document in documents
        ]

    assert held(fast) == held(slow)
    assert any(isinstance(book._data["author"], SrAuthor) for book in fast)


def test_a_class_with_other_references_is_mongoengines(
    sync_default: Any, sync_command_log: CommandLog
) -> None:
    ids = seed(sync_default, random.Random(7))
    sync_default.sr_shelf.insert_many(
        [
            {"books": ids["books"][:3], "author": ids["authors"][2]},
            {"books": [ObjectId(), ids["books"][4]], "author": ids["authors"][3]},
        ]
    )
    fast = selected_alike(
        sync_command_log, lambda objects: objects.select_related(), SrShelf
    )
    assert [type(book) for book in fast[0].books] == [SrBook] * 3


def test_a_queryset_class_overriding_how_results_are_listed_sees_them_all(
    sync_default: Any, sync_command_log: CommandLog
) -> None:
    ids = seed(sync_default, random.Random(10))
    sync_default.sr_counted_book.insert_many(
        [{"name": f"c{i}", "author": ids["authors"][i]} for i in range(3)]
    )
    CountingQuerySet.seen = []
    books = SrCountedBook.objects.order_by("name").select_related()
    assert CountingQuerySet.seen == ["c0", "c1", "c2"]
    assert [type(book._data["author"]) for book in books] == [SrAuthor] * 3
    selected_alike(
        sync_command_log,
        lambda objects: objects.order_by("name").select_related(),
        SrCountedBook,
    )


def test_a_result_that_does_not_load_raises_mongoengines_error(
    sync_default: Any,
) -> None:
    """An undeclared key in a strict class: MongoEngine's error (ours after
    the referenced documents are read, as the results are built after)."""
    ids = seed(sync_default, random.Random(8))
    sync_default.sr_book.update_one(
        {"_id": ids["books"][0]}, {"$set": {"undeclared": 1}}
    )
    with pytest.raises(FieldDoesNotExist) as fast_error:
        SrBook.objects.select_related()
    with pytest.raises(FieldDoesNotExist) as slow_error:
        plain(SrBook).select_related()
    assert str(fast_error.value) == str(slow_error.value)


def test_a_result_that_does_not_load_raises_after_every_reply_is_read(
    sync_default: Any, sync_command_log: CommandLog
) -> None:
    """The known difference (docs/references.md): MongoEngine's error comes
    after every reply and the referenced documents are read (the results
    are built with them in place), where MongoEngine raises as it builds the
    failing result, before the replies after it."""
    author = sync_default.sr_author.insert_one({"name": "a"}).inserted_id
    sync_default.sr_book.insert_many(
        [{"title": f"{i:03}", "author": author} for i in range(150)]
    )
    sync_default.sr_book.update_one({"title": "059"}, {"$set": {"undeclared": 1}})
    errors, names = [], []
    for queryset in (SrBook.objects, plain(SrBook)):
        sync_command_log.clear()
        with pytest.raises(FieldDoesNotExist) as raised:
            queryset.order_by("title").batch_size(40).select_related()
        errors.append(str(raised.value))
        names.append(sync_command_log.names)
    assert errors[0] == errors[1]
    assert names == [["find", *["getMore"] * 3, "find"], ["find", "getMore"]]


@pytest.mark.parametrize("max_depth", ["2", None, [1]], ids=repr)
def test_a_max_depth_of_another_type_raises_mongoengines_error(
    sync_default: Any, sync_command_log: CommandLog, max_depth: Any
) -> None:
    """MongoEngine's select_related() first adds 1 to max_depth: its
    TypeError, nothing sent (ours compared it with 0 first: another
    message)."""
    seed(sync_default, random.Random(7))
    since = len(sync_command_log.events)
    with pytest.raises(TypeError) as theirs:
        plain(SrBook).select_related(max_depth)
    with pytest.raises(TypeError) as ours:
        SrBook.objects.select_related(max_depth)
    assert str(ours.value) == str(theirs.value)
    assert sent(sync_command_log, since) == []
