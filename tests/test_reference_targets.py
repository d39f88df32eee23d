"""Awaiting a reference reads the referenced class where it lives at that
moment: after its alias was connected again to another database, after its
collection was dropped, in another event loop and inside a transaction.

What a class resolves to is kept between awaits (it costs a third of what an
await adds to the driver's own find); these are the changes that must show.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from uuid import uuid4

import pytest
from pymongo import MongoClient

from mongoengine_async import (
    Document,
    ReferenceField,
    StringField,
    async_run_in_transaction,
    connect_async,
    disconnect_async,
    get_async_connection,
    get_async_db,
)

_STANDARD = {"uuidRepresentation": "standard"}


class TargetAuthor(Document):
    name = StringField()
    meta = {"db_alias": "targets", "indexes": ["name"]}


class TargetBook(Document):
    title = StringField()
    author = ReferenceField(TargetAuthor)
    meta = {"db_alias": "targets"}


@pytest.fixture
def databases(mongodb_uri: str) -> Iterator[list[str]]:
    """Fresh database names (append to the list), dropped afterwards."""
    names = [f"test_targets_{uuid4().hex[:12]}" for _ in range(2)]
    yield names
    with MongoClient(mongodb_uri) as client:
        for name in names:
            client.drop_database(name)


async def _book_of(name: str) -> TargetBook:
    """A stored author named ``name`` and a book referring to it, loaded again."""
    author = await TargetAuthor(name=name).async_save()
    book = await TargetBook(title=f"by {name}", author=author).async_save()
    return await TargetBook.objects.async_get(id=book.id)


async def _author_of_new_book(name: str) -> str:
    """The name read back through the reference of a new book by ``name``."""
    book = await _book_of(name)
    return (await book.author).name


async def _close_client(alias: str) -> None:
    """Close the running loop's client of ``alias`` (disconnect_async closes
    only the one of the loop it runs in)."""
    await get_async_connection(alias).close()


async def test_a_reference_reads_the_database_its_alias_was_connected_to_again(
    mongodb_uri: str, databases: list[str]
) -> None:
    first, second = databases
    # Another alias on the same host shares the client: disconnecting
    # "targets" then leaves it open, so only the registry tells the change.
    await connect_async(first, alias="targets-keep", host=mongodb_uri, **_STANDARD)
    await connect_async(first, alias="targets", host=mongodb_uri, **_STANDARD)
    try:
        book = await _book_of("in the first")
        assert (await book.author).name == "in the first"
        await disconnect_async("targets")
        await connect_async(second, alias="targets", host=mongodb_uri, **_STANDARD)

        book = await _book_of("in the second")
        assert (await book.author).name == "in the second"
        assert get_async_db("targets").name == second
        stored = await get_async_db("targets").target_author.count_documents({})
        assert stored == 1
    finally:
        await disconnect_async("targets")
        await disconnect_async("targets-keep")


async def test_a_reference_awaited_after_the_collection_was_dropped_makes_its_indexes(
    mongodb_uri: str, databases: list[str]
) -> None:
    await connect_async(databases[0], alias="targets", host=mongodb_uri, **_STANDARD)
    try:
        book = await _book_of("before")
        await book.author
        await TargetAuthor.async_drop_collection()
        authors = get_async_db("targets").target_author
        # Stored around the library: the collection comes back without indexes.
        await authors.insert_one({"_id": book.author.id, "name": "after"})
        assert "name_1" not in await authors.index_information()

        again = await TargetBook.objects.async_get(id=book.id)
        assert (await again.author).name == "after"
        assert "name_1" in await authors.index_information()
    finally:
        await disconnect_async("targets")


def test_a_reference_is_awaited_in_each_asyncio_run(
    mongodb_uri: str, databases: list[str]
) -> None:
    """Each asyncio.run() has a client of its own: the second run's await
    must not use the first run's (closed) loop's client."""
    asyncio.run(
        connect_async(databases[0], alias="targets", host=mongodb_uri, **_STANDARD)
    )
    try:
        assert asyncio.run(_author_of_new_book("first run")) == "first run"
        assert asyncio.run(_author_of_new_book("second run")) == "second run"
    finally:
        asyncio.run(disconnect_async("targets"))


def test_references_awaited_in_two_open_loops_in_turn(
    mongodb_uri: str, databases: list[str]
) -> None:
    """Two loops kept open, each with its client made already: back in the
    first loop, an await must take the first loop's client again."""
    loops = [asyncio.new_event_loop() for _ in range(2)]
    first, second = loops
    first.run_until_complete(
        connect_async(databases[0], alias="targets", host=mongodb_uri, **_STANDARD)
    )
    try:
        names = ["first", "second", "first again", "second again"]
        read_back = [
            loop.run_until_complete(_author_of_new_book(name))
            for loop, name in zip([first, second, first, second], names, strict=True)
        ]
        assert read_back == names
    finally:
        second.run_until_complete(_close_client("targets"))
        first.run_until_complete(disconnect_async("targets"))
        for loop in loops:
            loop.close()


async def test_a_reference_awaited_in_a_transaction_reads_its_uncommitted_writes(
    mongodb_uri: str, databases: list[str]
) -> None:
    await connect_async(databases[0], alias="targets", host=mongodb_uri, **_STANDARD)
    try:
        book = await _book_of("committed")
        await book.author  # resolved once outside the transaction
        again = await TargetBook.objects.async_get(id=book.id)

        async with async_run_in_transaction("targets"):
            await TargetAuthor.objects(id=book.author.id).async_update(
                set__name="uncommitted"
            )
            assert (await again.author).name == "uncommitted"
        assert (await TargetAuthor.objects.async_get()).name == "uncommitted"
    finally:
        await disconnect_async("targets")
