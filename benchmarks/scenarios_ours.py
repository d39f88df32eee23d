"""mongoengine-async: the same scenarios through our Documents and QuerySets.

The models live on the async alias ``"default"`` (``connect_async`` in run.py,
or the ``async_alias`` fixture in tests/test_benchmarks.py).
"""

from __future__ import annotations

import asyncio

import harness
from harness import Case, Context

import mongoengine_async as ma

LIBRARY = "ours"
ALIAS = "default"
SCENARIOS, scenario = harness.registry()

ITEMS = "ours_items"
AUTHORS, BOOKS = "ours_authors", "ours_books"
C_AUTHORS, C_BOOKS = "ours_c_authors", "ours_c_books"
BUCKET, OWNERS = "ours_fs", "ours_file_owners"


(
    OursItem,
    OursAuthor,
    OursBook,
    OursCascadeAuthor,
    OursCascadeBook,
    OursFileOwner,
) = harness.mongoengine_models(ma, "Ours", ALIAS)


@scenario("insert_one")
async def insert_one(ctx: Context) -> Case:
    count = ctx.sizes.inserts

    async def run() -> None:
        for i in range(count):
            await OursItem(**harness.item(i)).async_save()

    return Case(
        run,
        "Item(...).async_save()",
        before=lambda: harness.empty(ctx.db, ITEMS),
        check=lambda _: harness.collection_summary(ctx.db, ITEMS),
    )


@scenario("insert_bulk")
async def insert_bulk(ctx: Context) -> Case:
    count = ctx.sizes.items

    async def run() -> None:
        await OursItem.objects.async_insert(
            [OursItem(**harness.item(i)) for i in range(count)], load_bulk=False
        )

    return Case(
        run,
        "objects.async_insert(load_bulk=False)",
        before=lambda: harness.empty(ctx.db, ITEMS),
        check=lambda _: harness.collection_summary(ctx.db, ITEMS),
    )


@scenario("save_delta")
async def save_delta(ctx: Context) -> Case:
    docs: list = []

    async def before() -> None:
        await harness.seed_items(ctx.db, ITEMS, ctx.sizes.saves)
        docs[:] = await OursItem.objects.async_to_list()

    async def run() -> None:
        for doc in docs:
            doc.n += 1
            await doc.async_save()

    return Case(
        run,
        "doc.n += 1; await doc.async_save()",
        before=before,
        check=lambda _: harness.collection_summary(ctx.db, ITEMS),
    )


@scenario("read_iter")
async def read_iter(ctx: Context) -> Case:
    await harness.seed_items(ctx.db, ITEMS, ctx.sizes.items)

    async def run() -> dict:
        count = total = 0
        async for doc in OursItem.objects:
            count += 1
            total += doc.n
        return {"count": count, "sum_n": total}

    return Case(run, "async for doc in objects")


@scenario("read_list")
async def read_list(ctx: Context) -> Case:
    await harness.seed_items(ctx.db, ITEMS, ctx.sizes.items)

    async def run() -> dict:
        docs = await OursItem.objects.async_to_list()
        return {"count": len(docs), "sum_n": sum(doc.n for doc in docs)}

    return Case(run, "await objects.async_to_list()")


@scenario("read_fields")
async def read_fields(ctx: Context) -> Case:
    """read_list, then every field read: the first read of ``tags`` wraps the
    stored list (our container read)."""
    await harness.seed_items(ctx.db, ITEMS, ctx.sizes.items)

    async def run() -> list:
        docs = await OursItem.objects.async_to_list()
        return [(doc.name, doc.n, doc.value, doc.active, doc.tags) for doc in docs]

    return Case(run, "async_to_list(), read every field", check=harness.fields_digest)


@scenario("refs_one_by_one")
async def refs_one_by_one(ctx: Context) -> Case:
    await harness.seed_library(ctx, AUTHORS, BOOKS, ctx.sizes.fetches)

    async def run() -> list:
        pairs = []
        for book in await OursBook.objects.async_to_list():
            author = await book.author
            pairs.append((book.title, author.name))
        return pairs

    return Case(run, "await book.author (proxy)", check=harness.digest)


@scenario("refs_batch")
async def refs_batch(ctx: Context) -> Case:
    await harness.seed_library(ctx, AUTHORS, BOOKS)

    async def run() -> list:
        books = await OursBook.objects.async_select_related()
        return [(book.title, book.author.name) for book in books]

    return Case(run, "objects.async_select_related()", check=harness.digest)


@scenario("refs_by_hand")
async def refs_by_hand(ctx: Context) -> Case:
    await harness.seed_library(ctx, AUTHORS, BOOKS)

    async def run() -> list:
        books = await OursBook.objects.async_to_list()
        ids = list({book.author.id for book in books})
        authors = await OursAuthor.objects.async_in_bulk(ids)
        return [(book.title, authors[book.author.id].name) for book in books]

    return Case(run, "async_to_list + async_in_bulk($in) + join", check=harness.digest)


@scenario("refs_documents")
async def refs_documents(ctx: Context) -> Case:
    """The floor of any join returning documents: build them, join nothing."""
    await harness.seed_library(ctx, AUTHORS, BOOKS)

    async def run() -> tuple[list, list]:
        books = await OursBook.objects.async_to_list()
        return books, await OursAuthor.objects.async_to_list()

    def check(loaded: tuple[list, list]) -> dict:
        books, authors = loaded
        return harness.library_summary(
            [book.title for book in books], [author.name for author in authors]
        )

    return Case(run, "async_to_list() of books, then of authors", check=check)


@scenario("gridfs_put")
async def gridfs_put(ctx: Context) -> Case:
    data = harness.file_data(ctx.sizes.file_bytes)

    async def before() -> None:
        await harness.drop_files(ctx, BUCKET, OWNERS)

    async def run() -> None:
        owner = OursFileOwner(name="owner")
        await OursFileOwner.data.async_put(data, instance=owner, filename="data.bin")
        await owner.async_save()

    return Case(
        run,
        "FileField.async_put + async_save",
        before=before,
        check=lambda _: harness.gridfs_summary(ctx.db, BUCKET, OWNERS),
    )


async def _seed_file(ctx: Context) -> None:
    await harness.drop_files(ctx, BUCKET, OWNERS)
    owner = OursFileOwner(name="owner")
    await OursFileOwner.data.async_put(
        harness.file_data(ctx.sizes.file_bytes), instance=owner, filename="data.bin"
    )
    await owner.async_save()


@scenario("gridfs_get")
async def gridfs_get(ctx: Context) -> Case:
    await _seed_file(ctx)

    async def run() -> bytes:
        owner = await OursFileOwner.objects.async_get(name="owner")
        proxy = await OursFileOwner.data.async_get(owner)
        return await proxy.async_read()

    return Case(run, "FileField.async_get + async_read()", check=harness.bytes_digest)


@scenario("gridfs_stream")
async def gridfs_stream(ctx: Context) -> Case:
    await _seed_file(ctx)

    async def run() -> dict:
        owner = await OursFileOwner.objects.async_get(name="owner")
        proxy = await OursFileOwner.data.async_get(owner)
        digest = harness.Digest()
        async for chunk in proxy:
            digest.update(chunk)
        return digest.summary()

    return Case(run, "async for chunk in proxy", memory=True)


@scenario("cascade_delete")
async def cascade_delete(ctx: Context) -> Case:
    state: dict = {}

    async def before() -> None:
        author_id = await harness.seed_cascade(
            ctx.db, C_AUTHORS, C_BOOKS, ctx.sizes.cascade_books
        )
        state["author"] = await OursCascadeAuthor.objects.async_get(id=author_id)

    async def run() -> None:
        await state["author"].async_delete()

    return Case(
        run,
        "author.async_delete() (CASCADE)",
        before=before,
        check=lambda _: harness.cascade_summary(ctx.db, C_AUTHORS, C_BOOKS),
    )


@scenario("concurrent")
async def concurrent(ctx: Context) -> Case:
    book_ids = await harness.seed_library(ctx, AUTHORS, BOOKS, n_books=ctx.sizes.tasks)

    async def task(book_id) -> tuple:
        book = await OursBook.objects.async_get(id=book_id)
        author = await book.author
        return book.title, author.name

    async def run() -> list:
        return await asyncio.gather(*(task(b) for b in book_ids))

    return Case(run, "gather(async_get + await ref)", check=harness.digest)


@scenario("scale")
async def scale(ctx: Context) -> Case:
    async def write(count: int) -> None:
        await OursItem.objects.async_insert(
            [OursItem(**harness.item(i)) for i in range(count)], load_bulk=False
        )

    io = harness.ScaleIO(
        lambda: harness.empty(ctx.db, ITEMS),
        write,
        OursItem.objects.async_to_list,
        lambda doc: doc.n,
    )
    return harness.scale_case(ctx, io, "async_insert + async_to_list()")
