"""The baseline: PyMongo's ``AsyncMongoClient`` by hand, producing plain dicts.

Where it reads a whole result into a list it asks for it in one reply
(``batch_size=ONE_REPLY``), as our ``async_to_list()``, ``async_in_bulk()`` and
``async_select_related()`` do: with the driver's default the server's first
reply holds 101 documents and the rest comes in a ``getMore``, a round trip ours
would not make. ``async for`` reads batch by batch in both.
"""

from __future__ import annotations

import asyncio

import harness
from gridfs.asynchronous import AsyncGridFSBucket
from harness import Case, Context

LIBRARY = "raw"
SCENARIOS, scenario = harness.registry()

# mongoengine_async.batches.WHOLE_RESULT: the largest batch size, a whole result
# in one reply (replies are capped at 16 MB anyway).
ONE_REPLY = 2**31 - 1

ITEMS = "raw_items"
AUTHORS, BOOKS = "raw_authors", "raw_books"
C_AUTHORS, C_BOOKS = "raw_c_authors", "raw_c_books"
BUCKET, OWNERS = "raw_fs", "raw_file_owners"


@scenario("insert_one")
async def insert_one(ctx: Context) -> Case:
    collection = ctx.db[ITEMS]
    count = ctx.sizes.inserts

    async def run() -> None:
        for i in range(count):
            await collection.insert_one(harness.item(i))

    return Case(
        run,
        "insert_one(dict)",
        before=lambda: harness.empty(ctx.db, ITEMS),
        check=lambda _: harness.collection_summary(ctx.db, ITEMS),
    )


@scenario("insert_bulk")
async def insert_bulk(ctx: Context) -> Case:
    collection = ctx.db[ITEMS]
    count = ctx.sizes.items

    async def run() -> None:
        await collection.insert_many([harness.item(i) for i in range(count)])

    return Case(
        run,
        "insert_many(dicts)",
        before=lambda: harness.empty(ctx.db, ITEMS),
        check=lambda _: harness.collection_summary(ctx.db, ITEMS),
    )


@scenario("save_delta")
async def save_delta(ctx: Context) -> Case:
    collection = ctx.db[ITEMS]
    docs: list[dict] = []

    async def before() -> None:
        await harness.seed_items(ctx.db, ITEMS, ctx.sizes.saves)
        docs[:] = await collection.find().to_list(None)

    async def run() -> None:
        for doc in docs:
            doc["n"] += 1
            await collection.update_one({"_id": doc["_id"]}, {"$set": {"n": doc["n"]}})

    return Case(
        run,
        "update_one({_id}, {$set: {n}})",
        before=before,
        check=lambda _: harness.collection_summary(ctx.db, ITEMS),
    )


@scenario("read_iter")
async def read_iter(ctx: Context) -> Case:
    await harness.seed_items(ctx.db, ITEMS, ctx.sizes.items)
    collection = ctx.db[ITEMS]

    async def run() -> dict:
        count = total = 0
        async for doc in collection.find():
            count += 1
            total += doc["n"]
        return {"count": count, "sum_n": total}

    return Case(run, "async for doc in find()")


@scenario("read_list")
async def read_list(ctx: Context) -> Case:
    await harness.seed_items(ctx.db, ITEMS, ctx.sizes.items)
    collection = ctx.db[ITEMS]

    async def run() -> dict:
        docs = await collection.find(batch_size=ONE_REPLY).to_list(None)
        return {"count": len(docs), "sum_n": sum(doc["n"] for doc in docs)}

    return Case(run, "await find().to_list()")


@scenario("read_fields")
async def read_fields(ctx: Context) -> Case:
    await harness.seed_items(ctx.db, ITEMS, ctx.sizes.items)
    collection = ctx.db[ITEMS]

    async def run() -> list:
        docs = await collection.find(batch_size=ONE_REPLY).to_list(None)
        return [
            (doc["name"], doc["n"], doc["value"], doc["active"], doc["tags"])
            for doc in docs
        ]

    return Case(run, "find().to_list(), read every key", check=harness.fields_digest)


@scenario("refs_one_by_one")
async def refs_one_by_one(ctx: Context) -> Case:
    await harness.seed_library(ctx, AUTHORS, BOOKS, ctx.sizes.fetches)
    books, authors = ctx.db[BOOKS], ctx.db[AUTHORS]

    async def run() -> list:
        pairs = []
        for book in await books.find(batch_size=ONE_REPLY).to_list(None):
            author = await authors.find_one({"_id": book["author"]})
            pairs.append((book["title"], author["name"]))
        return pairs

    return Case(run, "find_one per book", check=harness.digest)


@scenario("refs_by_hand")
@scenario("refs_batch")
async def refs_batch(ctx: Context) -> Case:
    await harness.seed_library(ctx, AUTHORS, BOOKS)
    books, authors = ctx.db[BOOKS], ctx.db[AUTHORS]

    async def run() -> list:
        found = await books.find(batch_size=ONE_REPLY).to_list(None)
        ids = list({book["author"] for book in found})
        by_id = {
            a["_id"]: a
            async for a in authors.find({"_id": {"$in": ids}}, batch_size=ONE_REPLY)
        }
        for book in found:
            book["author"] = by_id[book["author"]]
        return [(book["title"], book["author"]["name"]) for book in found]

    return Case(run, "hand-written $in + join", check=harness.digest)


@scenario("refs_documents")
async def refs_documents(ctx: Context) -> Case:
    """Raw's side is the hand-written join itself: the ratio is to that join."""
    case = await refs_batch(ctx)
    case.check = lambda pairs: harness.library_summary(
        [title for title, _ in pairs], [name for _, name in pairs]
    )
    return case


@scenario("gridfs_put")
async def gridfs_put(ctx: Context) -> Case:
    data = harness.file_data(ctx.sizes.file_bytes)
    bucket = AsyncGridFSBucket(ctx.db, bucket_name=BUCKET)

    async def before() -> None:
        await harness.drop_files(ctx, BUCKET, OWNERS)

    async def run() -> None:
        file_id = await bucket.upload_from_stream("data.bin", data)
        await ctx.db[OWNERS].insert_one({"name": "owner", "data": file_id})

    return Case(
        run,
        "bucket.upload_from_stream",
        before=before,
        check=lambda _: harness.gridfs_summary(ctx.db, BUCKET, OWNERS),
    )


async def _seed_file(ctx: Context) -> AsyncGridFSBucket:
    bucket = AsyncGridFSBucket(ctx.db, bucket_name=BUCKET)
    await harness.drop_files(ctx, BUCKET, OWNERS)
    file_id = await bucket.upload_from_stream(
        "data.bin", harness.file_data(ctx.sizes.file_bytes)
    )
    await ctx.db[OWNERS].insert_one({"name": "owner", "data": file_id})
    return bucket


@scenario("gridfs_get")
async def gridfs_get(ctx: Context) -> Case:
    bucket = await _seed_file(ctx)

    async def run() -> bytes:
        owner = await ctx.db[OWNERS].find_one({"name": "owner"})
        stream = await bucket.open_download_stream(owner["data"])
        return await stream.read()

    return Case(run, "open_download_stream().read()", check=harness.bytes_digest)


@scenario("gridfs_stream")
async def gridfs_stream(ctx: Context) -> Case:
    bucket = await _seed_file(ctx)

    async def run() -> dict:
        owner = await ctx.db[OWNERS].find_one({"name": "owner"})
        stream = await bucket.open_download_stream(owner["data"])
        digest = harness.Digest()
        # (`async for` over a GridOut yields lines, not chunks.)
        while chunk := await stream.readchunk():
            digest.update(chunk)
        return digest.summary()

    return Case(run, "while readchunk() on download stream", memory=True)


@scenario("cascade_delete")
async def cascade_delete(ctx: Context) -> Case:
    state: dict = {}

    async def before() -> None:
        state["author"] = await harness.seed_cascade(
            ctx.db, C_AUTHORS, C_BOOKS, ctx.sizes.cascade_books
        )

    async def run() -> None:
        author_id = state["author"]
        await ctx.db[C_BOOKS].delete_many({"author": author_id})
        await ctx.db[C_AUTHORS].delete_one({"_id": author_id})

    return Case(
        run,
        "delete_many(books) + delete_one",
        before=before,
        check=lambda _: harness.cascade_summary(ctx.db, C_AUTHORS, C_BOOKS),
    )


@scenario("concurrent")
async def concurrent(ctx: Context) -> Case:
    book_ids = await harness.seed_library(ctx, AUTHORS, BOOKS, n_books=ctx.sizes.tasks)
    books, authors = ctx.db[BOOKS], ctx.db[AUTHORS]

    async def task(book_id) -> tuple:
        book = await books.find_one({"_id": book_id})
        author = await authors.find_one({"_id": book["author"]})
        return book["title"], author["name"]

    async def run() -> list:
        return await asyncio.gather(*(task(b) for b in book_ids))

    return Case(run, "gather(find_one + find_one)", check=harness.digest)


@scenario("scale")
async def scale(ctx: Context) -> Case:
    collection = ctx.db[ITEMS]

    async def write(count: int) -> None:
        await collection.insert_many([harness.item(i) for i in range(count)])

    async def read() -> list:
        return await collection.find(batch_size=ONE_REPLY).to_list(None)

    io = harness.ScaleIO(
        lambda: harness.empty(ctx.db, ITEMS), write, read, lambda doc: doc["n"]
    )
    return harness.scale_case(ctx, io, "insert_many + find().to_list()")
