"""The async API under pyright's strict mode (and mypy --strict): no
parameter or return of the public API is partially unknown (a bare ``dict``
or ``AsyncMongoClient`` is), so calling it reports nothing (never run)."""
# pyright: strict

from __future__ import annotations

from typing import Any

from models import Author, Book

from mongoengine_async import (
    connect_async,
    disconnect_async,
    get_async_connection,
    get_async_db,
)


async def strict_user() -> None:
    client = await connect_async("library", alias="strict")
    await client.admin.command("ping")
    await get_async_connection("strict").admin.command("ping")
    await get_async_db("strict").list_collection_names()
    author = await Author(name="Ada").async_save(write_concern={"w": 1})
    book = await Book(isbn="1", author=author).async_save(
        save_condition={"isbn": "1"}, signal_kwargs={"by": "test"}
    )
    await book.async_modify(query={"isbn": "1"}, set__pages=3)
    await book.async_reload()
    await Book.objects(isbn="1").async_update(
        set__pages=4, write_concern={"w": 1}, array_filters=[{"x": 1}]
    )
    await Book.objects(isbn="1").async_update_one(set__pages=5)
    await Book.objects(isbn="1").async_upsert_one(set__pages=6)
    await Book.objects(isbn="1").async_modify(new=True, set__pages=7)
    await Book.objects.async_insert([Book(isbn="2")], write_concern={"w": 1})
    rows: list[dict[str, Any]] = [
        row async for row in Book.objects.async_aggregate([{"$match": {}}])
    ]
    print(rows, Book.objects(isbn="1").async_watch().pipeline())
    if book.cover is not None:
        await Book.cover.async_put(b"x", book, metadata={"a": 1})
    await Book.objects(isbn="2").async_delete(write_concern={"w": 1})
    await book.async_delete(signal_kwargs={"by": "test"})
    print(book.to_mongo())
    await disconnect_async("strict")
