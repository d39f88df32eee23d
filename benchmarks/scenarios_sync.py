"""The sync scenarios that need only MongoEngine's API, defined once for any ODM
with that API: sync MongoEngine (``scenarios_mongoengine``) and our models on a
``connect()`` alias (``scenarios_ours_sync``) run exactly the same calls.

Sync calls block; in this harness that is fine (nothing else runs meanwhile).
The concurrent scenario runs its tasks one after the other.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import harness
from harness import Case, Context


def define(
    scenario: Callable[[str], Callable], odm: Any, prefix: str, alias: str
) -> harness.Models:
    """Register the scenarios with ``scenario`` (a library's ``harness.registry()``
    decorator) on ``odm``'s models, named ``<Prefix>Item``... in ``<prefix>_*``
    collections on ``alias``; returns those models."""
    models = harness.mongoengine_models(odm, prefix, alias)
    Item, Book, CascadeAuthor = models.Item, models.Book, models.CascadeAuthor
    p = prefix.lower()
    items, authors, books = f"{p}_items", f"{p}_authors", f"{p}_books"
    c_authors, c_books = f"{p}_c_authors", f"{p}_c_books"

    @scenario("insert_one")
    async def insert_one(ctx: Context) -> Case:
        count = ctx.sizes.inserts

        def run() -> None:
            for i in range(count):
                Item(**harness.item(i)).save()

        return Case(
            run,
            "Item(...).save()",
            before=lambda: harness.empty(ctx.db, items),
            check=lambda _: harness.collection_summary(ctx.db, items),
        )

    @scenario("insert_bulk")
    async def insert_bulk(ctx: Context) -> Case:
        count = ctx.sizes.items

        def run() -> None:
            Item.objects.insert(
                [Item(**harness.item(i)) for i in range(count)], load_bulk=False
            )

        return Case(
            run,
            "objects.insert(load_bulk=False)",
            before=lambda: harness.empty(ctx.db, items),
            check=lambda _: harness.collection_summary(ctx.db, items),
        )

    @scenario("save_delta")
    async def save_delta(ctx: Context) -> Case:
        docs: list = []

        async def before() -> None:
            await harness.seed_items(ctx.db, items, ctx.sizes.saves)
            docs[:] = list(Item.objects)

        def run() -> None:
            for doc in docs:
                doc.n += 1
                doc.save()

        return Case(
            run,
            "doc.n += 1; doc.save()",
            before=before,
            check=lambda _: harness.collection_summary(ctx.db, items),
        )

    @scenario("read_iter")
    async def read_iter(ctx: Context) -> Case:
        await harness.seed_items(ctx.db, items, ctx.sizes.items)

        def run() -> dict:
            count = total = 0
            for doc in Item.objects:
                count += 1
                total += doc.n
            return {"count": count, "sum_n": total}

        return Case(run, "for doc in objects")

    @scenario("read_list")
    async def read_list(ctx: Context) -> Case:
        await harness.seed_items(ctx.db, items, ctx.sizes.items)

        def run() -> dict:
            docs = list(Item.objects)
            return {"count": len(docs), "sum_n": sum(doc.n for doc in docs)}

        return Case(run, "list(objects)")

    @scenario("read_fields")
    async def read_fields(ctx: Context) -> Case:
        await harness.seed_items(ctx.db, items, ctx.sizes.items)

        def run() -> list:
            docs = list(Item.objects)
            return [(doc.name, doc.n, doc.value, doc.active, doc.tags) for doc in docs]

        return Case(run, "list(objects), read every field", check=harness.fields_digest)

    @scenario("refs_one_by_one")
    async def refs_one_by_one(ctx: Context) -> Case:
        await harness.seed_library(ctx, authors, books, ctx.sizes.fetches)

        def run() -> list:
            return [(book.title, book.author.name) for book in Book.objects]

        return Case(run, "book.author (auto-dereference)", check=harness.digest)

    @scenario("refs_batch")
    async def refs_batch(ctx: Context) -> Case:
        await harness.seed_library(ctx, authors, books)

        def run() -> list:
            return [
                (book.title, book.author.name) for book in Book.objects.select_related()
            ]

        return Case(run, "objects.select_related()", check=harness.digest)

    @scenario("cascade_delete")
    async def cascade_delete(ctx: Context) -> Case:
        state: dict = {}

        async def before() -> None:
            author_id = await harness.seed_cascade(
                ctx.db, c_authors, c_books, ctx.sizes.cascade_books
            )
            state["author"] = CascadeAuthor.objects.get(id=author_id)

        def run() -> None:
            state["author"].delete()

        return Case(
            run,
            "author.delete() (CASCADE)",
            before=before,
            check=lambda _: harness.cascade_summary(ctx.db, c_authors, c_books),
        )

    @scenario("concurrent")
    async def concurrent(ctx: Context) -> Case:
        book_ids = await harness.seed_library(
            ctx, authors, books, n_books=ctx.sizes.tasks
        )

        def run() -> list:
            pairs = []
            for book_id in book_ids:
                book = Book.objects.get(id=book_id)
                pairs.append((book.title, book.author.name))
            return pairs

        return Case(run, "sequential get + dereference", check=harness.digest)

    @scenario("scale")
    async def scale(ctx: Context) -> Case:
        def write(count: int) -> None:
            Item.objects.insert(
                [Item(**harness.item(i)) for i in range(count)], load_bulk=False
            )

        io = harness.ScaleIO(
            lambda: harness.empty(ctx.db, items),
            write,
            lambda: list(Item.objects),
            lambda doc: doc.n,
        )
        return harness.scale_case(ctx, io, "insert + list(objects)")

    return models
