"""What a user's type checker sees (issue 16's table), checked by mypy and
pyright in ``make lint`` and by tests/test_typing.py; never run."""

from __future__ import annotations

import datetime
from typing import Any, assert_type

from models import Author, Book, Colour, Review

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


async def documents(book: Book) -> None:
    assert_type(await Book(title="x").async_save(), Book)
    assert_type(await book.async_reload(), Book)
    assert_type(await book.async_modify(set__title="y"), bool)
    assert_type(await Book.async_compare_indexes(), dict[str, list[Any]])
    assert_type(book.title, str | None)
    assert_type(book.isbn, str)
    assert_type(book.pages, int)
    assert_type(book.price, float | None)
    assert_type(book.published, datetime.datetime | None)
    assert_type(book.colour, Colour | None)
    assert_type(book.tags, list[str])
    assert_type(book.review, Review | None)
    assert_type(book.reviews, list[Review])
    assert_type(book.extra, dict[str, Any])
    assert_type(await book.author, Author)
    assert_type(book.author.name, str)
    assert_type(book.editor, LazyReference[Author] | None)
    if book.editor is not None:
        assert_type(await book.editor.async_fetch(), Author)
    assert_type(await Book.author.async_fetch(book), Author)
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
