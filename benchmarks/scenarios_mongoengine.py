"""Sync MongoEngine (what users have today), on its own ``connect()`` alias.

Its calls block; in this harness that is fine (nothing else runs meanwhile).
The concurrent scenario runs its tasks one after the other.
"""

from __future__ import annotations

import harness
import mongoengine as me
from harness import Case, Context

LIBRARY = "mongoengine"
ALIAS = "bench-sync"
SCENARIOS, scenario = harness.registry()

ITEMS = "me_items"
AUTHORS, BOOKS = "me_authors", "me_books"
C_AUTHORS, C_BOOKS = "me_c_authors", "me_c_books"
BUCKET, OWNERS = "me_fs", "me_file_owners"


(
    MeItem,
    MeAuthor,
    MeBook,
    MeCascadeAuthor,
    MeCascadeBook,
    MeFileOwner,
) = harness.mongoengine_models(me, "Me", ALIAS)


@scenario("insert_one")
async def insert_one(ctx: Context) -> Case:
    count = ctx.sizes.items

    def run() -> None:
        for i in range(count):
            MeItem(**harness.item(i)).save()

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
        MeItem.objects.insert(
            [MeItem(**harness.item(i)) for i in range(count)], load_bulk=False
        )

    return Case(
        run,
        "objects.insert(load_bulk=False)",
        before=lambda: harness.drop(ctx.db, ITEMS),
        check=lambda _: harness.collection_summary(ctx.db, ITEMS),
    )


@scenario("save_delta")
async def save_delta(ctx: Context) -> Case:
    docs: list = []

    async def before() -> None:
        await harness.seed_items(ctx.db, ITEMS, ctx.sizes.saves)
        docs[:] = list(MeItem.objects)

    def run() -> None:
        for doc in docs:
            doc.n += 1
            doc.save()

    return Case(
        run,
        "doc.n += 1; doc.save()",
        before=before,
        check=lambda _: harness.collection_summary(ctx.db, ITEMS),
    )


@scenario("read_iter")
async def read_iter(ctx: Context) -> Case:
    await harness.seed_items(ctx.db, ITEMS, ctx.sizes.items)

    def run() -> dict:
        count = total = 0
        for doc in MeItem.objects:
            count += 1
            total += doc.n
        return {"count": count, "sum_n": total}

    return Case(run, "for doc in objects")


@scenario("read_list")
async def read_list(ctx: Context) -> Case:
    await harness.seed_items(ctx.db, ITEMS, ctx.sizes.items)

    def run() -> dict:
        docs = list(MeItem.objects)
        return {"count": len(docs), "sum_n": sum(doc.n for doc in docs)}

    return Case(run, "list(objects)")


@scenario("refs_one_by_one")
async def refs_one_by_one(ctx: Context) -> Case:
    await harness.seed_library(ctx, AUTHORS, BOOKS)

    def run() -> list:
        return [(book.title, book.author.name) for book in MeBook.objects]

    return Case(run, "book.author (auto-dereference)", check=harness.digest)


@scenario("refs_batch")
async def refs_batch(ctx: Context) -> Case:
    await harness.seed_library(ctx, AUTHORS, BOOKS)

    def run() -> list:
        books = MeBook.objects.select_related()
        return [(book.title, book.author.name) for book in books]

    return Case(run, "objects.select_related()", check=harness.digest)


@scenario("gridfs_put")
async def gridfs_put(ctx: Context) -> Case:
    data = harness.file_data(ctx.sizes.file_bytes)

    def run() -> None:
        owner = MeFileOwner(name="owner")
        owner.data.put(data, filename="data.bin")
        owner.save()

    return Case(
        run,
        "FileField put + save",
        before=lambda: harness.drop_files(ctx, BUCKET, OWNERS),
        check=lambda _: harness.gridfs_summary(ctx.db, BUCKET),
    )


async def _seed_file(ctx: Context) -> None:
    await harness.drop_files(ctx, BUCKET, OWNERS)
    owner = MeFileOwner(name="owner")
    owner.data.put(harness.file_data(ctx.sizes.file_bytes), filename="data.bin")
    owner.save()


@scenario("gridfs_get")
async def gridfs_get(ctx: Context) -> Case:
    await _seed_file(ctx)

    def run() -> bytes:
        return MeFileOwner.objects.get(name="owner").data.read()

    return Case(run, "FileField read()", check=harness.bytes_digest)


@scenario("gridfs_stream")
async def gridfs_stream(ctx: Context) -> Case:
    await _seed_file(ctx)

    def run() -> dict:
        grid_out = MeFileOwner.objects.get(name="owner").data.get()
        digest = harness.Digest()
        # (Iterating a GridOut yields lines, not chunks.)
        while chunk := grid_out.readchunk():
            digest.update(chunk)
        return digest.summary()

    return Case(run, "while FileField.get().readchunk()", memory=True)


@scenario("cascade_delete")
async def cascade_delete(ctx: Context) -> Case:
    state: dict = {}

    async def before() -> None:
        author_id = await harness.seed_cascade(
            ctx.db, C_AUTHORS, C_BOOKS, ctx.sizes.cascade_books
        )
        state["author"] = MeCascadeAuthor.objects.get(id=author_id)

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
            book = MeBook.objects.get(id=book_id)
            pairs.append((book.title, book.author.name))
        return pairs

    return Case(run, "sequential get + dereference", check=harness.digest)


@scenario("scale")
async def scale(ctx: Context) -> Case:
    def write(count: int) -> None:
        MeItem.objects.insert(
            [MeItem(**harness.item(i)) for i in range(count)], load_bulk=False
        )

    io = harness.ScaleIO(
        lambda: harness.drop(ctx.db, ITEMS),
        write,
        lambda: list(MeItem.objects),
        lambda doc: doc.n,
    )
    return harness.scale_case(ctx, io, "insert + list(objects)")
