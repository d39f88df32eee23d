"""What a user's type checker sees (issue 16's table, and docs/typing.md's),
checked by mypy and pyright in ``make lint`` and by tests/test_typing.py; never
run. The sync API (MongoEngine's, on sync aliases) and container assignments
are here too: unchanged sync code must type-check after the one-line import."""

from __future__ import annotations

import asyncio
import contextlib
import datetime
from collections.abc import AsyncGenerator, Mapping, Sequence
from typing import Any, assert_type

from bson import DBRef, ObjectId
from models import Author, Book, Colour, LongReview, Note, Review
from pymongo.asynchronous.command_cursor import AsyncCommandCursor
from pymongo.collation import Collation
from pymongo.command_cursor import CommandCursor

from mongoengine_async import (
    AsyncGridFSProxy,
    AsyncReferenceProxy,
    ChangeEvent,
    ChangeStream,
    LazyReference,
    QuerySet,
    QuerySetNoCache,
)


async def queries() -> None:
    assert_type(Book.objects, QuerySet[Book])
    assert_type(await Book.objects.async_first(), Book | None)
    assert_type(await Book.objects.async_get(title="x"), Book)
    assert_type(await Book.objects(title="x").async_to_list(), list[Book])
    assert_type(await Book.objects.async_select_related(), list[Book])
    assert_type(await Book.objects.async_count(), int)
    assert_type(await Book.objects.async_exists(), bool)
    assert_type(await Book.objects.async_with_id(1), Book | None)
    assert_type(await Book.objects.async_create(title="x"), Book)
    assert_type(await Book.objects.async_delete(), int | None)
    async for book in Book.objects.filter(title="x"):
        assert_type(book, Book)
    assert_type(Book.objects.only("title"), QuerySet[Book])
    assert_type(Book.objects.order_by("title"), QuerySet[Book])
    assert_type(Book.objects.filter(title="x"), QuerySet[Book])
    assert_type(Book.objects(title="x").limit(2).skip(1), QuerySet[Book])
    assert_type(Book.objects.using("other"), QuerySet[Book])
    raw = await Book.objects.as_pymongo().async_first()
    assert_type(raw, dict[str, Any] | None)
    uncached = Book.objects.filter(title="x").no_cache()
    assert_type(uncached, QuerySetNoCache[Book])
    assert_type(await uncached.async_to_list(), list[Book])
    assert_type(uncached.cache(), QuerySet[Book])
    # An async generator, as docs/querysets.md closes it (aclose, aclosing).
    assert_type(Book.objects.async_iter(), AsyncGenerator[Book, None])
    async with contextlib.aclosing(Book.objects.async_iter()) as books:
        async for book in books:
            assert_type(book, Book)
    await aiter(Book.objects).aclose()
    assert_type(Book.long_ones, QuerySet[Book])  # a @queryset_manager
    assert_type(await Book.long_ones.async_first(), Book | None)
    assert_type(Note.objects, QuerySet[Note])  # a @queryset_manager objects
    assert_type(await Note.objects.async_get(), Note)
    english = Collation(locale="en", strength=2)
    assert_type(Book.objects.collation(english), QuerySet[Book])


async def aggregations(stages: Sequence[Mapping[str, Any]]) -> None:
    """A pipeline is any sequence of stages (PyMongo's type), or one stage."""
    async for row in Book.objects.async_aggregate(stages):
        assert_type(row, dict[str, Any])
    Book.objects.async_aggregate(({"$match": {}}, {"$limit": 1}))
    Book.objects.async_aggregate([{"$match": {}}], {"$limit": 1})
    Book.objects.async_aggregate({"$match": {}})


async def aggregations_as_coroutines() -> None:
    """asyncio takes an aggregation as the coroutine it is (docs/querysets.md):
    create_task and task groups, whose parameter is a Coroutine."""
    task = asyncio.create_task(Book.objects.async_aggregate([{"$match": {}}]))
    assert_type(await task, AsyncCommandCursor[dict[str, Any]])
    async with asyncio.TaskGroup() as group:
        grouped = group.create_task(Book.objects.async_aggregate([]))
    assert_type(grouped.result(), AsyncCommandCursor[dict[str, Any]])
    assert_type(
        await Book.objects.async_aggregate([]), AsyncCommandCursor[dict[str, Any]]
    )


async def documents(book: Book) -> None:
    assert_type(await Book(title="x").async_save(), Book)
    assert_type(await book.async_reload(), Book)
    assert_type(await book.async_modify(set__title="y"), bool)
    assert_type(asyncio.create_task(book.async_cascade_save()), asyncio.Task[None])
    assert_type(await Book.async_compare_indexes(), dict[str, list[Any]])
    assert_type(book.title, str | None)
    assert_type(book.isbn, str)
    assert_type(book.pages, int)
    assert_type(book.price, float | None)
    assert_type(book.published, datetime.datetime | None)
    assert_type(book.colour, Colour | None)
    assert_type(book.tags, list[str])
    assert_type(book.labels, list[str])
    assert_type(book.scores, list[int])
    assert_type(book.ratios, list[float])
    assert_type(book.nested, list[list[int]])
    assert_type(book.reviewers, list[Author])
    assert_type(book.past_reviews, list[Review])
    assert_type(book.counts, dict[str, int])
    assert_type(book.totals, dict[str, float])
    assert_type(book.review, Review | None)
    reviews: list[Review] = book.reviews  # an EmbeddedDocumentList[Review]
    assert_type(reviews[0], Review)
    assert_type(book.reviews.filter(stars=1).first(), Review | None)
    assert_type(book.reviews.exclude(stars=1).get(stars=2), Review)
    assert_type(book.reviews.create(stars=1), Review)
    assert_type(book.reviews.count(), int)
    assert_type(book.reviews.update(stars=2), int)
    assert_type(book.reviews.delete(), int)
    book.reviews.save()
    assert_type(book.extra, dict[str, Any])
    assert_type(await book.author, Author)
    assert_type(book.author.name, str)
    assert_type(book.editor, LazyReference[Author] | None)
    if book.editor is not None:
        assert_type(await book.editor.async_fetch(), Author)
    assert_type(await Book.author.async_fetch(book), Author)
    assert_type(book.reviewer, LazyReference[Author])
    assert_type(book.price_tag, Any)
    assert_type(LazyReference(Author, book.pk), LazyReference[Author])
    assert_type(await Book.cover.async_get(book), AsyncGridFSProxy | None)


async def proxies(proxy: AsyncReferenceProxy[Author]) -> None:
    assert_type(await proxy, Author)
    assert_type(await proxy.fetch(), Author)


async def change_streams() -> None:
    assert_type(Book.async_watch(), ChangeStream[Book])
    assert_type(Book.objects(title="x").async_watch(), ChangeStream[Book])
    async with Book.objects.async_watch() as stream:
        async for event in stream:
            assert_type(event, ChangeEvent[Book])
            assert_type(event.document, Book | None)
            assert_type(event.document_before_change, Book | None)


def container_assignments(
    book: Book,
    words: list[str],
    numbers: list[int],
    long_ones: list[LongReview],
    counts: dict[str, int],
    author_id: ObjectId,
    author_ref: DBRef,
) -> None:
    """A list (or tuple, or literal) of the item type sets a list field, a dict
    a dict field; ``None`` empties it. A reference takes an id or a DBRef too.
    (Reads are checked above: pyright narrows an attribute to what was just
    assigned to it, unless the field reads otherwise, as these do.)"""
    book.author = Author(name="x")
    book.author = author_id
    book.author = author_ref
    assert_type(book.author, Author)
    book.labels = ["a", "b"]
    book.labels = words
    book.labels = ("a",)
    book.labels = []
    book.labels = None
    book.tags = words
    book.scores = [1, 2]
    book.scores = numbers
    book.ratios = numbers
    book.ratios = [0.5, 1]
    book.nested = [[1], numbers]
    book.reviewers = [Author(name="x")]
    book.reviewers = [author_id, author_ref, Author(name="x")]  # as one reference
    assert_type(book.reviewers, list[Author])
    book.reviews = [Review(stars=1)]
    book.reviews = long_ones
    book.past_reviews = long_ones
    book.counts = {"a": 1}
    book.counts = counts
    book.totals = counts
    book.extra = {"a": object()}
    book.labels.append("c")
    book.labels = None
    assert_type(book.labels, list[str])
    book.reviewer = Author(name="x")  # reads as a LazyReference all the same
    assert_type(book.reviewer, LazyReference[Author])
    book.reviewer = author_id
    assert_type(book.reviewer, LazyReference[Author])


def sync_queries(ids: list[Any]) -> None:
    """MongoEngine's sync queryset API, typed as the async one."""
    assert_type(Book.objects.first(), Book | None)
    assert_type(Book.objects.get(title="x"), Book)
    assert_type(Book.objects(title="x").count(), int)
    assert_type(Book.objects.count(with_limit_and_skip=True), int)
    for book in Book.objects:
        assert_type(book, Book)
    for book in Book.objects.filter(title="x").order_by("-pages").limit(3):
        assert_type(book, Book)
    assert_type(list(Book.objects), list[Book])
    assert_type(len(Book.objects), int)
    assert_type(bool(Book.objects(title="x")), bool)
    assert_type(Book.objects.with_id(ids[0]), Book | None)
    assert_type(Book.objects.create(title="x"), Book)
    assert_type(Book.objects.modify(set__title="y", new=True), Book | None)
    assert_type(Book.objects.upsert_one(set__title="y"), Book | None)
    assert_type(Book.objects(title="x").delete(), int | None)
    assert_type(Book.objects.distinct("title"), list[Any])
    assert_type(Book.objects.sum("pages"), Any)
    assert_type(Book.objects.average("pages"), Any)
    assert_type(Book.objects.explain(), dict[str, Any])
    assert_type(Book.objects.item_frequencies("tags"), dict[Any, Any])
    Book.objects(title="x").update(set__title="y")
    Book.objects(title="x").update_one(set__title="y", upsert=True)
    Book.objects.insert([Book(isbn="1")], load_bulk=False)
    Book.objects.in_bulk(ids)
    Book.objects.select_related()
    cursor = Book.objects.aggregate([{"$match": {}}], {"$limit": 1})
    assert_type(cursor, CommandCursor[dict[str, Any]])
    for row in cursor:
        assert_type(row, dict[str, Any])
    assert_type(Book.objects.as_pymongo().first(), dict[str, Any] | None)
    assert_type(Book.objects.scalar("title").first(), Any | None)
    assert_type(Book.objects.values_list("title", "pages").get(), Any)
    assert_type(Book.objects.to_json(), str)
    assert_type(Book.objects.from_json("[]"), list[Book])
    assert_type(Book.objects.search_text("x", text_score=False), QuerySet[Book])
    for book in Book.objects.no_cache():
        assert_type(book, Book)
    assert_type(Book.objects.no_cache().first(), Book | None)


def sync_documents(book: Book) -> None:
    """MongoEngine's sync Document API; on a sync alias a reference reads as
    the document, as the checker sees it."""
    assert_type(Book(isbn="1").save(), Book)
    assert_type(book.save(validate=False, cascade=True), Book)
    assert_type(book.reload(), Book)
    assert_type(book.reload("title"), Book)
    assert_type(book.modify(set__title="y"), bool)
    assert_type(book.select_related(), Book)
    assert_type(book.switch_db("other"), Book)
    assert_type(book.switch_collection("other"), Book)
    assert_type(book.to_json(), str)
    assert_type(Book.from_json("{}"), Book)
    assert_type(book.author, Author)
    assert_type(book.author.name, str)
    assert_type(Book.list_indexes(), list[list[tuple[str, int]]])
    assert_type(Book.compare_indexes(), dict[str, list[Any]])
    book.update(set__title="y")
    book.validate()
    book.to_mongo()
    book.to_dbref()
    book.delete()
    Book.ensure_indexes()
    Book.drop_collection()
