"""A small async library catalogue on mongoengine-async.

Authors write books, readers review them and keep reading lists. The program
connects, saves, queries, updates, aggregates, follows references without
N+1 queries, and deletes an author with cascading rules, printing what it
does. It uses ``$MONGODB_URI`` when set, otherwise a throwaway local replica
set that is removed afterwards.

Run it with ``make demo``.
"""

from __future__ import annotations

import asyncio
import io
import os
from collections.abc import AsyncIterator
from typing import Any

from mongoengine_async import (
    CASCADE,
    NULLIFY,
    PULL,
    DateTimeField,
    Document,
    EmbeddedDocument,
    EmbeddedDocumentField,
    FileField,
    ImageField,
    IntField,
    LazyReferenceField,
    ListField,
    ReferenceField,
    StringField,
    async_run_in_transaction,
    connect_async,
    disconnect_async,
    get_async_connection,
)
from mongoengine_async.testing import CommandLog, mongodb_uri


class Author(Document):
    name = StringField(required=True, unique=True)
    born = IntField()


class Publisher(EmbeddedDocument):
    name = StringField()
    city = StringField()


class Book(Document):
    title = StringField(required=True)
    year = IntField()
    tags = ListField(StringField())
    author = ReferenceField(Author, reverse_delete_rule=CASCADE)
    publisher = EmbeddedDocumentField(Publisher)
    cover = ImageField(size=(600, 900, False), thumbnail_size=(60, 90, True))
    sample = FileField(collection_name="samples")
    meta = {"indexes": ["title", "-year"]}


class Review(Document):
    book = ReferenceField(Book, reverse_delete_rule=NULLIFY)
    stars = IntField(min_value=1, max_value=5)
    text = StringField()


class Reader(Document):
    name = StringField()
    reading_list = ListField(ReferenceField(Book, reverse_delete_rule=PULL))
    favourite = LazyReferenceField(Book)
    joined = DateTimeField()


def section(title: str) -> None:
    print(f"\n== {title} ==")


async def save_and_query() -> None:
    section("save and query")
    le_guin = await Author(name="Ursula K. Le Guin", born=1929).async_save()
    lem = await Author(name="Stanisław Lem", born=1921).async_save()
    books = await Book.objects.async_insert(
        [
            Book(title="A Wizard of Earthsea", year=1968, author=le_guin),
            Book(title="The Left Hand of Darkness", year=1969, author=le_guin),
            Book(title="The Dispossessed", year=1974, author=le_guin),
            Book(title="Solaris", year=1961, author=lem),
            Book(title="The Cyberiad", year=1965, author=lem),
        ]
    )
    print(f"inserted {len(books)} books in one round trip")
    print("books after 1965:", await Book.objects(year__gt=1965).async_count())
    async for book in Book.objects.order_by("year").only("title", "year"):
        print(f"  {book.year}  {book.title}")
    first = await Book.objects.order_by("-year").async_first()  # None if empty
    print("most recent:", first.title if first else None)


async def update(log: CommandLog) -> None:
    section("update")
    solaris = await Book.objects.async_get(title="Solaris")
    solaris.tags.append("classic")
    solaris.publisher = Publisher(name="MON", city="Warsaw")
    log.clear()
    await solaris.async_save()
    sent = log.events[-1].command["updates"][0]["u"]
    print("save sent only the changes:", sent)
    count = await Book.objects(year__lt=1970).async_update(push__tags="sixties-ish")
    print(f"tagged {count} books with one update")
    await solaris.async_reload()
    print("Solaris tags now:", solaris.tags)


async def aggregate() -> None:
    section("aggregate")
    pipeline: list[dict[str, Any]] = [
        {
            "$group": {
                "_id": "$author",
                "books": {"$sum": 1},
                "since": {"$min": "$year"},
            }
        },
        {"$sort": {"books": -1}},
    ]
    async for row in Book.objects.async_aggregate(pipeline):
        author = await Author.objects.async_get(id=row["_id"])
        print(f"  {author.name}: {row['books']} books, first in {row['since']}")


async def references(log: CommandLog) -> None:
    section("references without N+1")
    reader = await Reader(name="Ada").async_save()
    reader.reading_list = await Book.objects.order_by("year").async_to_list()
    reader.favourite = reader.reading_list[0]
    await reader.async_save()

    books = await Book.objects.async_to_list()
    print("reading a reference does no I/O:", repr(books[0].author))
    log.clear()
    for book in books:
        await book.author
    print(f"awaiting each book's author: {log.count('find')} finds")

    log.clear()
    books = await Book.objects.async_select_related()
    names = sorted({book.author.name for book in books})
    print(f"select_related: {log.count('find')} finds for {len(books)} books: {names}")

    reader = await Reader.objects.async_get(name="Ada")
    await reader.async_select_related()
    print("Ada's list:", [book.title for book in reader.reading_list])
    assert reader.favourite is not None
    favourite = await reader.favourite.async_fetch()
    print("lazy favourite:", favourite.title)


def cover_image(colour: str) -> bytes:
    """A 1200x1800 PNG, as a scanner might produce."""
    from PIL import Image

    buffer = io.BytesIO()
    Image.new("RGB", (1200, 1800), colour).save(buffer, "PNG")
    return buffer.getvalue()


async def pdf_pages(pages: int) -> AsyncIterator[bytes]:
    """A (pretend) PDF produced page by page, as an upload arrives."""
    yield b"%PDF-1.7\n"
    for page in range(pages):
        yield f"%% page {page}\n".encode() + bytes(256 * 1024)
        await asyncio.sleep(0)


async def files() -> None:
    section("files in GridFS")
    book = await Book.objects.async_get(title="The Dispossessed")
    await book.cover.async_put(cover_image("darkred"), filename="dispossessed.png")
    await book.sample.async_put(
        pdf_pages(40), filename="sample.pdf", content_type="application/pdf"
    )
    await book.async_save()
    print(f"cover stored resized to {book.cover.size}, format {book.cover.format}")
    print(f"sample PDF uploaded chunk by chunk: {book.sample.length:,} bytes")

    book = await Book.objects.async_get(title="The Dispossessed")
    sample = await Book.sample.async_get(book)
    assert sample is not None  # None only if the file was deleted meanwhile
    streamed = 0
    async for chunk in sample:
        streamed += len(chunk)
    print(f"streamed {sample.filename} ({sample.content_type}): {streamed:,} bytes")
    cover = await Book.cover.async_get(book)
    assert cover is not None
    thumbnail = await cover.async_thumbnail()
    print(f"cover thumbnail: {thumbnail.width}x{thumbnail.height}")


async def delete_with_rules(log: CommandLog) -> None:
    section("delete rules")
    lem = await Author.objects.async_get(name="Stanisław Lem")
    solaris = await Book.objects.async_get(title="Solaris")
    await Review(book=solaris, stars=5, text="An ocean that thinks.").async_save()
    ada = await Reader.objects.async_get(name="Ada")
    ada.reading_list.append(solaris)
    await ada.async_save()

    log.clear()
    await lem.async_delete()
    print(f"deleted {lem.name}: {log.count()} commands, {log.names}")
    print("books left:", await Book.objects.async_scalar("title"))
    review = await Review.objects.as_pymongo().async_first()
    assert review is not None
    print("the review stays, its book nullified:", "book" not in review)
    ada = await Reader.objects.async_get(name="Ada")
    print("Ada's list has", len(ada.reading_list), "books (Lem's pulled)")


async def transaction() -> None:
    section("transaction")
    try:
        async with async_run_in_transaction():
            await Author(name="Temporary").async_save()
            raise RuntimeError("changed my mind")
    except RuntimeError:
        pass
    print("rolled back:", await Author.objects(name="Temporary").async_count() == 0)


async def main(uri: str) -> None:
    log = CommandLog()
    await connect_async(
        db="library_demo",
        host=uri,
        uuidRepresentation="standard",
        event_listeners=[log],
    )
    await get_async_connection().drop_database("library_demo")
    try:
        await save_and_query()
        await update(log)
        await aggregate()
        await references(log)
        await files()
        await delete_with_rules(log)
        await transaction()
    finally:
        await get_async_connection().drop_database("library_demo")
        await disconnect_async()


if __name__ == "__main__":
    if "MONGODB_URI" not in os.environ:
        print("starting a throwaway MongoDB replica set...")
    with mongodb_uri() as server_uri:
        asyncio.run(main(server_uri))
    print("\ndone")
