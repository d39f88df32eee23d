"""async_no_dereference: the stored value instead of a proxy, for one class,
in one task, at every nesting level, with no I/O."""

from __future__ import annotations

import asyncio

from bson import DBRef

from models_references import (
    RefBook,
    RefDbRefBook,
    RefShelf,
    make_author,
    make_book,
    make_shelf,
)
from mongoengine_async import (
    AsyncReferenceProxy,
    async_no_dereference,
)


async def test_no_dereference_reads_stored_value(async_alias, command_log):
    author = await make_author()
    book = await make_book(author)
    dbook = await make_book(author, cls=RefDbRefBook)
    shelf = await RefShelf(name="s", authors=[author]).async_save()
    shelf = await RefShelf.objects.async_get(pk=shelf.pk)
    command_log.clear()

    async with async_no_dereference(RefBook) as cls:
        assert cls is RefBook
        value = book.author
        assert isinstance(value, DBRef)
        assert not isinstance(value, AsyncReferenceProxy)
        assert value.id == author.id
        # Other classes are not affected.
        assert isinstance(dbook.author, AsyncReferenceProxy)
    assert isinstance(book.author, AsyncReferenceProxy)

    # After the proxy exists, no_dereference still gives the stored value.
    async with async_no_dereference(RefBook):
        assert not isinstance(book.author, AsyncReferenceProxy)
        assert book.author == DBRef("ref_author", author.id)

    async with async_no_dereference(RefDbRefBook):
        value = dbook.author
        assert type(value) is DBRef
        assert value == DBRef("ref_author", author.id)

    async with async_no_dereference(RefShelf):
        assert not isinstance(shelf.authors[0], AsyncReferenceProxy)
        assert shelf.authors[0].id == author.id
    assert command_log.count() == 0


async def test_no_dereference_is_per_task(async_alias, command_log):
    author = await make_author()
    book = await make_book(author)
    command_log.clear()
    inside_entered = asyncio.Event()
    outside_done = asyncio.Event()
    seen = {}

    async def inside():
        async with async_no_dereference(RefBook):
            inside_entered.set()
            await outside_done.wait()
            seen["inside"] = book.author

    async def outside():
        await inside_entered.wait()
        seen["outside"] = book.author
        outside_done.set()

    await asyncio.gather(inside(), outside())
    assert isinstance(seen["outside"], AsyncReferenceProxy)
    assert isinstance(seen["inside"], DBRef)
    assert not isinstance(seen["inside"], AsyncReferenceProxy)
    assert isinstance(book.author, AsyncReferenceProxy)
    assert command_log.count("find") == 0


async def test_no_dereference_in_embedded_and_nested(async_alias, command_log):
    shelf, ann, bob, cid = await make_shelf()
    command_log.clear()
    async with async_no_dereference(RefShelf):
        for value, author in (
            (shelf.citation.author, cid),
            (shelf.citations[0].author, ann),
            (shelf.grid[1][0], cid),
            (shelf.by_role["second"], bob),
        ):
            assert isinstance(value, DBRef)
            assert not isinstance(value, AsyncReferenceProxy)
            assert value.id == author.id
    assert isinstance(shelf.citation.author, AsyncReferenceProxy)
    assert isinstance(shelf.citations[0].author, AsyncReferenceProxy)
    assert isinstance(shelf.grid[1][0], AsyncReferenceProxy)
    assert command_log.count() == 0
