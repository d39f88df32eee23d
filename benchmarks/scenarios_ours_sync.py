"""mongoengine-async on a ``connect()`` alias: a user who changed only the import.

The same calls as sync MongoEngine (``scenarios_mongoengine``), through our
Documents and QuerySets on the sync alias ``"bench-ours-sync"``; reads build
their documents with our generated loaders.
"""

from __future__ import annotations

import harness
from harness import Case, Context

import mongoengine_async as ma

LIBRARY = "ours-sync"
ALIAS = "bench-ours-sync"
SCENARIOS, scenario = harness.registry()
NOT_APPLICABLE = {
    "gridfs_put": "sync GridFS is MongoEngine's (see the mongoengine row)",
    "gridfs_get": "sync GridFS is MongoEngine's (see the mongoengine row)",
    "gridfs_stream": "sync GridFS is MongoEngine's (see the mongoengine row)",
}

ITEMS = "os_items"
AUTHORS, BOOKS = "os_authors", "os_books"
C_AUTHORS, C_BOOKS = "os_c_authors", "os_c_books"


(
    OsItem,
    OsAuthor,
    OsBook,
    OsCascadeAuthor,
    OsCascadeBook,
    _,
) = harness.mongoengine_models(ma, "Os", ALIAS)


@scenario("insert_one")
async def insert_one(ctx: Context) -> Case:
    count = ctx.sizes.items

    def run() -> None:
        for i in range(count):
            OsItem(**harness.item(i)).save()

    return Case(
        run,
        "Item(...).save()",
        before=lambda: harness.drop(ctx.db, ITEMS),
        check=lambda _: harness.collection_summary(ctx.db, ITEMS),
    )


@scenario("insert_bulk")
async def insert_bulk(ctx: Context) -> Case:
    count = ctx.sizes.items

    def run() -> None:
        OsItem.objects.insert(
            [OsItem(**harness.item(i)) for i in range(count)], load_bulk=False
        )

    return Case(
        run,
        "objects.insert(load_bulk=False)",
        before=lambda: harness.drop(ctx.db, ITEMS),
        check=lambda _: harness.collection_summary(ctx.db, ITEMS),
    )


@scenario("read_iter")
async def read_iter(ctx: Context) -> Case:
    await harness.seed_items(ctx.db, ITEMS, ctx.sizes.items)

    def run() -> dict:
        count = total = 0
        for doc in OsItem.objects:
            count += 1
            total += doc.n
        return {"count": count, "sum_n": total}

    return Case(run, "for doc in objects")


@scenario("read_list")
async def read_list(ctx: Context) -> Case:
    await harness.seed_items(ctx.db, ITEMS, ctx.sizes.items)

    def run() -> dict:
        docs = list(OsItem.objects)
        return {"count": len(docs), "sum_n": sum(doc.n for doc in docs)}

    return Case(run, "list(objects)")


@scenario("refs_one_by_one")
async def refs_one_by_one(ctx: Context) -> Case:
    await harness.seed_library(ctx, AUTHORS, BOOKS)

    def run() -> list:
        return [(book.title, book.author.name) for book in OsBook.objects]

    return Case(run, "book.author (auto-dereference)", check=harness.digest)


@scenario("refs_batch")
async def refs_batch(ctx: Context) -> Case:
    await harness.seed_library(ctx, AUTHORS, BOOKS)

    def run() -> list:
        books = OsBook.objects.select_related()
        return [(book.title, book.author.name) for book in books]

    return Case(run, "objects.select_related()", check=harness.digest)


@scenario("cascade_delete")
async def cascade_delete(ctx: Context) -> Case:
    state: dict = {}

    async def before() -> None:
        author_id = await harness.seed_cascade(
            ctx.db, C_AUTHORS, C_BOOKS, ctx.sizes.cascade_books
        )
        state["author"] = OsCascadeAuthor.objects.get(id=author_id)

    def run() -> None:
        state["author"].delete()

    return Case(
        run,
        "author.delete() (CASCADE)",
        before=before,
        check=lambda _: harness.cascade_summary(ctx.db, C_AUTHORS, C_BOOKS),
    )


@scenario("concurrent")
async def concurrent(ctx: Context) -> Case:
    book_ids = await harness.seed_library(ctx, AUTHORS, BOOKS, n_books=ctx.sizes.tasks)

    def run() -> list:
        pairs = []
        for book_id in book_ids:
            book = OsBook.objects.get(id=book_id)
            pairs.append((book.title, book.author.name))
        return pairs

    return Case(run, "sequential get + dereference", check=harness.digest)


@scenario("scale")
async def scale(ctx: Context) -> Case:
    def write(count: int) -> None:
        OsItem.objects.insert(
            [OsItem(**harness.item(i)) for i in range(count)], load_bulk=False
        )

    io = harness.ScaleIO(
        lambda: harness.drop(ctx.db, ITEMS),
        write,
        lambda: list(OsItem.objects),
        lambda doc: doc.n,
    )
    return harness.scale_case(ctx, io, "insert + list(objects)")
