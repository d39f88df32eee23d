"""Beanie 2.x, the async ODM users would pick instead (imported only when installed).

Beanie's ``Link`` stores a DBRef, so its books are seeded with DBRefs. Beanie has
no GridFS and no reverse delete rules: those scenarios are not applicable.
"""

from __future__ import annotations

import asyncio

import harness
from beanie import Document, Link, init_beanie
from harness import Case, Context
from pymongo import AsyncMongoClient

LIBRARY = "beanie"
SCENARIOS, scenario = harness.registry()

ITEMS = "beanie_items"
AUTHORS, BOOKS = "beanie_authors", "beanie_books"

NOT_APPLICABLE = {
    "gridfs_put": "Beanie has no GridFS support",
    "gridfs_get": "Beanie has no GridFS support",
    "gridfs_stream": "Beanie has no GridFS support",
    "cascade_delete": "Beanie has no reverse delete rules",
}


class BeanieItem(Document):
    name: str
    n: int
    value: float
    active: bool
    tags: list[str]

    class Settings:
        name = ITEMS


class BeanieAuthor(Document):
    name: str

    class Settings:
        name = AUTHORS


class BeanieBook(Document):
    title: str
    author: Link[BeanieAuthor]

    class Settings:
        name = BOOKS


async def setup(ctx: Context, uri: str, **client_kwargs) -> AsyncMongoClient:
    """Beanie gets its own AsyncMongoClient on the benchmark database."""
    client: AsyncMongoClient = AsyncMongoClient(uri, **client_kwargs)
    await init_beanie(
        database=client[ctx.db.name],
        document_models=[BeanieItem, BeanieAuthor, BeanieBook],
    )
    return client


@scenario("insert_one")
async def insert_one(ctx: Context) -> Case:
    count = ctx.sizes.inserts

    async def run() -> None:
        for i in range(count):
            await BeanieItem(**harness.item(i)).insert()

    return Case(
        run,
        "Item(...).insert()",
        before=lambda: harness.empty(ctx.db, ITEMS),
        check=lambda _: harness.collection_summary(ctx.db, ITEMS),
    )


@scenario("insert_bulk")
async def insert_bulk(ctx: Context) -> Case:
    count = ctx.sizes.items

    async def run() -> None:
        await BeanieItem.insert_many(
            [BeanieItem(**harness.item(i)) for i in range(count)]
        )

    return Case(
        run,
        "Item.insert_many()",
        before=lambda: harness.empty(ctx.db, ITEMS),
        check=lambda _: harness.collection_summary(ctx.db, ITEMS),
    )


@scenario("read_iter")
async def read_iter(ctx: Context) -> Case:
    await harness.seed_items(ctx.db, ITEMS, ctx.sizes.items)

    async def run() -> dict:
        count = total = 0
        async for doc in BeanieItem.find_all():
            count += 1
            total += doc.n
        return {"count": count, "sum_n": total}

    return Case(run, "async for doc in find_all()")


@scenario("read_list")
async def read_list(ctx: Context) -> Case:
    await harness.seed_items(ctx.db, ITEMS, ctx.sizes.items)

    async def run() -> dict:
        docs = await BeanieItem.find_all().to_list()
        return {"count": len(docs), "sum_n": sum(doc.n for doc in docs)}

    return Case(run, "await find_all().to_list()")


@scenario("read_fields")
async def read_fields(ctx: Context) -> Case:
    await harness.seed_items(ctx.db, ITEMS, ctx.sizes.items)

    async def run() -> list:
        docs = await BeanieItem.find_all().to_list()
        return [(doc.name, doc.n, doc.value, doc.active, doc.tags) for doc in docs]

    return Case(
        run, "find_all().to_list(), read every field", check=harness.fields_digest
    )


@scenario("refs_one_by_one")
async def refs_one_by_one(ctx: Context) -> Case:
    await harness.seed_library(ctx, AUTHORS, BOOKS, ctx.sizes.fetches, dbref=True)

    async def run() -> list:
        pairs = []
        for book in await BeanieBook.find_all().to_list():
            author = await book.author.fetch()
            pairs.append((book.title, author.name))
        return pairs

    return Case(run, "await book.author.fetch()", check=harness.digest)


@scenario("refs_batch")
async def refs_batch(ctx: Context) -> Case:
    await harness.seed_library(ctx, AUTHORS, BOOKS, dbref=True)

    async def run() -> list:
        books = await BeanieBook.find_all(fetch_links=True).to_list()
        return [(book.title, book.author.name) for book in books]

    return Case(run, "find_all(fetch_links=True)", check=harness.digest)


@scenario("concurrent")
async def concurrent(ctx: Context) -> Case:
    book_ids = await harness.seed_library(
        ctx, AUTHORS, BOOKS, n_books=ctx.sizes.tasks, dbref=True
    )

    async def task(book_id) -> tuple:
        book = await BeanieBook.get(book_id)
        author = await book.author.fetch()
        return book.title, author.name

    async def run() -> list:
        return await asyncio.gather(*(task(b) for b in book_ids))

    return Case(run, "gather(get + link.fetch())", check=harness.digest)
