"""Shared pieces of the benchmark harness: sizes, scenarios, cases, timing.

A *scenario* (``read_list``, ``refs_batch``...) is measured for several
*libraries* (raw driver, ours, sync MongoEngine, Beanie). Each library module
(``scenarios_raw``, ``scenarios_ours``, ...) maps scenario names to async
factories ``factory(ctx) -> Case``: the factory drops and seeds the collections
it needs (untimed) and returns a :class:`Case` whose ``run`` is what is timed.

Every case also yields a *summary* (what it read, joined or left behind), and
every library's summary must equal the raw driver's for the same scenario: a
library that does less work than the baseline is reported as a mismatch
instead of looking fast.
"""

from __future__ import annotations

import gc
import hashlib
import inspect
import math
import random
import statistics
import time
import tracemalloc
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import Any, NamedTuple

from bson import DBRef, ObjectId
from pymongo import monitoring

from mongoengine_async.testing import CommandLog

# -- MongoEngine-style models ------------------------------------------------------


class Models(NamedTuple):
    """The models of the scenarios, for an ODM with MongoEngine's API."""

    Item: type
    Author: type
    Book: type
    CascadeAuthor: type
    CascadeBook: type
    FileOwner: type


def mongoengine_models(odm: Any, prefix: str, alias: str) -> Models:
    """The same models defined with ``odm`` (``mongoengine`` or
    ``mongoengine_async``), named ``<Prefix>Item``... in ``<prefix>_*``
    collections on ``alias``."""
    collections = prefix.lower()

    def model(class_name: str, collection: str, /, **fields: Any) -> type:
        meta = {"db_alias": alias, "collection": f"{collections}_{collection}"}
        return type(f"{prefix}{class_name}", (odm.Document,), {**fields, "meta": meta})

    author = model("Author", "authors", name=odm.StringField())
    cascade_author = model("CascadeAuthor", "c_authors", name=odm.StringField())
    return Models(
        Item=model(
            "Item",
            "items",
            name=odm.StringField(),
            n=odm.IntField(),
            value=odm.FloatField(),
            active=odm.BooleanField(),
            tags=odm.ListField(odm.StringField()),
        ),
        Author=author,
        Book=model(
            "Book", "books", title=odm.StringField(), author=odm.ReferenceField(author)
        ),
        CascadeAuthor=cascade_author,
        CascadeBook=model(
            "CascadeBook",
            "c_books",
            title=odm.StringField(),
            author=odm.ReferenceField(cascade_author, reverse_delete_rule=odm.CASCADE),
        ),
        FileOwner=model(
            "FileOwner",
            "file_owners",
            name=odm.StringField(),
            data=odm.FileField(db_alias=alias, collection_name=f"{collections}_fs"),
        ),
    )


# -- sizes -----------------------------------------------------------------------


@dataclass(frozen=True)
class Sizes:
    """How big each scenario is."""

    items: int = 10_000  # insert_bulk, read_*
    # The one-by-one scenarios (insert_one, save_delta, refs_one_by_one) are
    # round-trip bound and their ratio is per operation: runs of 100 let raw
    # and ours alternate every 0.2-0.4 s, in as many rounds as fit --min-time.
    inserts: int = 100
    books: int = 1_000  # refs_* but refs_one_by_one
    authors: int = 100  # refs_*, concurrent
    file_bytes: int = 64 * 2**20  # gridfs_*
    cascade_books: int = 10_000  # cascade_delete
    tasks: int = 500  # concurrent
    scale: tuple[int, ...] = (1_000, 10_000, 100_000)  # scale
    saves: int = 100  # save_delta
    fetches: int = 100  # refs_one_by_one: books, each author fetched on its own


FULL = Sizes()
QUICK = Sizes(
    items=1_000,
    inserts=50,
    books=200,
    authors=20,
    file_bytes=4 * 2**20,
    cascade_books=1_000,
    tasks=100,
    scale=(1_000, 10_000),
    saves=50,
    fetches=50,
)
TINY = Sizes(
    items=60,
    inserts=30,
    books=30,
    authors=7,
    file_bytes=600_000,
    cascade_books=40,
    tasks=12,
    scale=(20, 40),
    saves=20,
    fetches=15,
)

# -- scenarios -------------------------------------------------------------------

SCENARIOS: dict[str, str] = {
    "insert_one": "insert N small documents one by one (N = inserts)",
    "insert_bulk": "insert N small documents in one bulk call",
    "save_delta": "change one field of N loaded documents, save each (N = saves)",
    "read_iter": "read and materialise N documents with `async for` (sync: for)",
    "read_list": "read and materialise N documents as a list",
    "read_fields": "read N documents as a list, then every field of each (a list too)",
    "refs_one_by_one": "N books, each author fetched on its own (N = fetches)",
    "refs_batch": "books with their authors, references loaded in one batch",
    "refs_by_hand": "books with their authors, joined by a hand-written $in batch",
    "refs_documents": "books and authors loaded as documents, not joined (vs raw join)",
    "gridfs_put": "store one file in GridFS (plus its owner document)",
    "gridfs_get": "load the owner document and read the whole file",
    "gridfs_stream": "stream the file chunk by chunk (peak memory measured)",
    "cascade_delete": "delete an author whose books cascade",
    "concurrent": "concurrent tasks: get a book by id, then fetch its author",
    "scale": "write then read 1k, 10k, 100k small documents (per-document cost)",
}


@dataclass
class Case:
    """One library's way of doing one scenario.

    Attributes:
        run: the timed work (sync or async); returns a value for ``check``.
        label: what the library calls, shown in the table.
        before: untimed, before every repetition (reseeding, loading an owner).
        check: untimed, turns ``run``'s result into the comparable summary
            (default: the result itself).
        memory: also measure the tracemalloc peak of one extra run.
        scale: untimed, after the runs: the per-document figures of each
            count of ``Sizes.scale`` (see :func:`scale_case`).
    """

    run: Callable[[], Any]
    label: str
    before: Callable[[], Any] | None = None
    check: Callable[[Any], Any] | None = None
    memory: bool = False
    scale: Callable[[], Awaitable[dict[int, dict[str, float]]]] | None = None


Factory = Callable[["Context"], Awaitable[Case]]


@dataclass
class Context:
    """What the scenario factories need.

    ``db`` is an ``AsyncDatabase`` used by the raw driver scenarios and for
    seeding and checking every library's collections (all libraries use the
    same database name, each with its own collections).
    """

    db: Any
    sizes: Sizes = FULL


def unavailable(module: Any, name: str) -> str | None:
    """Why a library module has no case for scenario ``name`` (None: it has one);
    a module may say why in its ``NOT_APPLICABLE`` table."""
    if name in module.SCENARIOS:
        return None
    return getattr(module, "NOT_APPLICABLE", {}).get(name, "not applicable")


def registry() -> tuple[dict[str, Factory], Callable[[str], Callable]]:
    """A scenario table for a library module and its decorator."""
    table: dict[str, Factory] = {}

    def scenario(name: str) -> Callable[[Factory], Factory]:
        if name not in SCENARIOS:
            raise ValueError(f"unknown scenario {name!r}")

        def register(factory: Factory) -> Factory:
            table[name] = factory
            return factory

        return register

    return table, scenario


# -- deterministic data -----------------------------------------------------------


def item(i: int) -> dict[str, Any]:
    """The fields of the i-th small document (same for every library)."""
    return {
        "name": f"item {i}",
        "n": i,
        "value": i * 0.5,
        "active": i % 2 == 0,
        "tags": [f"t{i % 7}", f"t{i % 11}"],
    }


def author_name(a: int) -> str:
    return f"author {a}"


def book_title(b: int) -> str:
    return f"book {b}"


def file_data(size: int) -> bytes:
    """Deterministic, incompressible bytes."""
    return random.Random(size).randbytes(size)


async def drop(db: Any, *names: str) -> None:
    for name in names:
        await db.drop_collection(name)


async def empty(db: Any, name: str) -> None:
    """A new empty collection ``name``: an insert scenario's first insert then
    creates no collection (some 20 ms, a tenth of a run of 100 inserts)."""
    await drop(db, name)
    await db.create_collection(name, check_exists=False)


async def seed_items(db: Any, name: str, count: int) -> None:
    """Fresh collection ``name`` holding ``count`` small documents."""
    await drop(db, name)
    if count:
        await db[name].insert_many([item(i) for i in range(count)])


async def seed_library(
    ctx: Context,
    authors: str,
    books: str,
    n_books: int | None = None,
    dbref: bool = False,
) -> list[ObjectId]:
    """Fresh ``authors`` and ``books`` collections (``ctx.sizes`` of each unless
    ``n_books`` is given); book b is by author b % n. Returns the books' ids.

    References are stored as ObjectIds (MongoEngine's ``ReferenceField``
    default), or as DBRefs with ``dbref=True`` (Beanie's ``Link``).
    """
    db, n_authors = ctx.db, ctx.sizes.authors
    n_books = ctx.sizes.books if n_books is None else n_books
    await drop(db, authors, books)
    author_ids = [ObjectId() for _ in range(n_authors)]
    await db[authors].insert_many(
        [{"_id": a, "name": author_name(i)} for i, a in enumerate(author_ids)]
    )
    book_ids = [ObjectId() for _ in range(n_books)]
    await db[books].insert_many(
        [
            {
                "_id": b,
                "title": book_title(i),
                "author": (
                    DBRef(authors, author_ids[i % n_authors])
                    if dbref
                    else author_ids[i % n_authors]
                ),
            }
            for i, b in enumerate(book_ids)
        ]
    )
    return book_ids


async def drop_files(ctx: Context, bucket: str, owners: str) -> None:
    """Drop a GridFS bucket and the collection of its owner documents."""
    await drop(ctx.db, f"{bucket}.files", f"{bucket}.chunks", owners)


async def seed_cascade(
    db: Any, authors: str, books: str, n_books: int, dbref: bool = False
) -> ObjectId:
    """One author with ``n_books`` books, plus a bystander author with one book.

    Returns the id of the author to delete. After a correct cascade delete
    one author and one book are left.
    """
    await drop(db, authors, books)
    doomed, bystander = ObjectId(), ObjectId()
    await db[authors].insert_many(
        [{"_id": doomed, "name": "doomed"}, {"_id": bystander, "name": "bystander"}]
    )

    def ref(a: ObjectId) -> Any:
        return DBRef(authors, a) if dbref else a

    docs = [{"title": book_title(i), "author": ref(doomed)} for i in range(n_books)]
    docs.append({"title": "survivor", "author": ref(bystander)})
    await db[books].insert_many(docs)
    return doomed


# -- summaries (compared across libraries) ------------------------------------------


def digest(values: Iterable[Any]) -> dict[str, Any]:
    """Order-independent digest of a collection of values."""
    rows = sorted(repr(v) for v in values)
    sha = hashlib.sha256("\n".join(rows).encode()).hexdigest()[:16]
    return {"count": len(rows), "sha256": sha}


def fields_digest(rows: Iterable[tuple[Any, ...]]) -> dict[str, Any]:
    """``digest`` of ``(name, n, value, active, tags)`` rows, ``tags`` compared
    as a tuple whatever list type the library read it as."""
    return digest((*row[:-1], tuple(row[-1])) for row in rows)


def library_summary(titles: Iterable[str], author_names: Iterable[str]) -> dict:
    """The books and the distinct authors a books-with-authors result covers."""
    return {"books": digest(titles), "authors": digest(set(author_names))}


def bytes_digest(data: bytes) -> dict[str, Any]:
    digest = Digest()
    digest.update(data)
    return digest.summary()


class Digest:
    """``bytes_digest`` of data fed chunk by chunk (memory stays one chunk)."""

    def __init__(self) -> None:
        self._sha, self._length = hashlib.sha256(), 0

    def update(self, chunk: bytes) -> None:
        self._sha.update(chunk)
        self._length += len(chunk)

    def summary(self) -> dict[str, Any]:
        return {"length": self._length, "sha256": self._sha.hexdigest()[:16]}


async def collection_summary(db: Any, name: str) -> dict[str, Any]:
    """How many documents ``name`` holds, the sum of their ``n``, and a digest of
    the documents themselves without their ids (``digest``: their values, in
    order, with their types), so that a library storing other fields or other
    values than raw's is a mismatch too."""
    documents = await db[name].find({}, {"_id": 0}).to_list(None)
    return {
        "count": len(documents),
        "sum_n": sum(document["n"] for document in documents),
        "sha256": digest(documents)["sha256"],
    }


async def cascade_summary(db: Any, authors: str, books: str) -> dict[str, int]:
    return {
        "authors": await db[authors].count_documents({}),
        "books": await db[books].count_documents({}),
    }


async def gridfs_summary(db: Any, bucket: str, owners: str) -> dict[str, Any]:
    """The files of ``bucket`` (their count, bytes and chunks), and how many
    documents of ``owners`` refer to one of them."""
    files = await db[f"{bucket}.files"].find({}, {"length": 1}).to_list(None)
    chunks = await db[f"{bucket}.chunks"].count_documents({})
    ids = [f["_id"] for f in files]
    return {
        "files": len(files),
        "length": sum(f["length"] for f in files),
        "chunks": chunks,
        "owners": await db[owners].count_documents({"data": {"$in": ids}}),
    }


# -- scale --------------------------------------------------------------------------


@dataclass
class ScaleIO:
    """How one library writes and reads the small documents of ``scale``.

    Attributes:
        reset: makes the collection new and empty (``harness.empty``): a
            write timed in ``_scale_figures`` then creates no collection (some
            10-20 ms, as much as writing 1,000 documents).
        write: inserts ``item(i)`` for i < count, in bulk (sync or async).
        read: returns every document, loaded (a list).
        n_of: a loaded document's ``n``.
    """

    reset: Callable[[], Any]
    write: Callable[[int], Any]
    read: Callable[[], Any]
    n_of: Callable[[Any], int]


# Timed passes per count up to this many documents (the median is kept);
# bigger counts are timed once.
SCALE_PASSES = 3
SCALE_PASSES_UP_TO = 10_000


def scale_case(ctx: Context, io: ScaleIO, label: str) -> Case:
    """The ``scale`` case: for each count of ``ctx.sizes.scale``, write that many
    documents and read them all back. Its summary is each count's
    ``{count, sum_n}``; ``Case.scale`` gives each count's microseconds per
    document written and read, and the bytes a loaded document holds."""
    counts = ctx.sizes.scale

    async def run() -> list[dict[str, int]]:
        summaries = []
        for count in counts:
            await call(io.reset)
            await call(io.write, count)
            documents = await call(io.read)
            summaries.append(
                {"count": len(documents), "sum_n": sum(map(io.n_of, documents))}
            )
        return summaries

    async def scale() -> dict[int, dict[str, float]]:
        return {count: await _scale_figures(io, count) for count in counts}

    return Case(run, label, scale=scale)


async def _scale_figures(io: ScaleIO, count: int) -> dict[str, float]:
    """µs per document written and read (median of the passes) and bytes held
    per loaded document (tracemalloc: what the loaded list keeps allocated)."""
    passes = SCALE_PASSES if count <= SCALE_PASSES_UP_TO else 1
    writes, reads = [], []
    for _ in range(passes):
        await call(io.reset)
        gc.collect()
        start = time.perf_counter()
        await call(io.write, count)
        writes.append(time.perf_counter() - start)
        gc.collect()
        start = time.perf_counter()
        documents = await call(io.read)
        reads.append(time.perf_counter() - start)
        del documents
    gc.collect()
    tracemalloc.start()
    try:
        baseline = tracemalloc.get_traced_memory()[0]
        documents = await call(io.read)
        gc.collect()
        held = tracemalloc.get_traced_memory()[0] - baseline
    finally:
        tracemalloc.stop()
    assert len(documents) == count
    return {
        "write_us": round(statistics.median(writes) / count * 1e6, 2),
        "read_us": round(statistics.median(reads) / count * 1e6, 2),
        "bytes": round(held / count, 1),
    }


# -- measuring -------------------------------------------------------------------------


async def call(function: Callable[..., Any] | None, *args: Any) -> Any:
    """Call a sync or async function and return its result."""
    if function is None:
        return None
    result = function(*args)
    if inspect.isawaitable(result):
        result = await result
    return result


async def run_once(case: Case, counter: RoundTrips | None = None) -> tuple[float, Any]:
    """One repetition: ``before`` (untimed), ``run`` (timed), ``check`` (untimed).

    Returns the elapsed seconds and the summary. With ``counter``, the
    commands sent by ``run`` (only) are counted.
    """
    await call(case.before)
    gc.collect()
    if counter is not None:
        counter.start()
    try:
        start = time.perf_counter()
        result = case.run()
        if inspect.isawaitable(result):
            result = await result
        elapsed = time.perf_counter() - start
    finally:
        if counter is not None:
            counter.stop()
    summary = await call(case.check, result) if case.check else result
    return elapsed, summary


# The most rounds of timed runs a short scenario is given (see ``rounds``).
MAX_ROUNDS = 60


def rounds(repeat: int, seconds_per_round: float, min_time: float) -> int:
    """How many rounds of timed runs a scenario gets: ``repeat``, or for a
    short scenario as many as fill ``min_time`` seconds (at most MAX_ROUNDS).

    A case of a few milliseconds spreads by 30% or more from run to run on a
    busy machine; a median of more samples moves less.
    """
    if seconds_per_round <= 0:
        return repeat
    return max(repeat, min(MAX_ROUNDS, math.floor(min_time / seconds_per_round)))


def spread(runs: int, total: int) -> set[int]:
    """The ``runs`` rounds, out of ``total``, evenly spaced, that a library
    measured only for context (not raw or ours) runs in."""
    runs = min(runs, total)
    return {k * total // runs for k in range(runs)}


def per_round(
    raw_ms: list[float], ours_ms: list[float]
) -> tuple[float, float, float] | None:
    """The median, first and third quartile of ours/raw taken round by round
    (raw and ours run in every round); None below two rounds.

    A slow swing of the machine hits both runs of a round alike, so this moves
    less from run to run than the ratio of the two medians, which the targets
    judge: where the two differ by more than a few percent, the run was noisy.
    """
    if len(raw_ms) != len(ours_ms) or len(raw_ms) < 2:
        return None
    ratios = [ours / raw for raw, ours in zip(raw_ms, ours_ms, strict=True)]
    first, _, third = statistics.quantiles(ratios, n=4)
    return statistics.median(ratios), first, third


async def peak_memory(case: Case) -> float:
    """Peak of Python allocations (MB) during one ``run``, above its start."""
    await call(case.before)
    gc.collect()
    tracemalloc.start()
    try:
        baseline = tracemalloc.get_traced_memory()[0]
        tracemalloc.reset_peak()
        await call(case.run)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    return (peak - baseline) / 2**20


class RoundTrips(monitoring.CommandListener):
    """Counts the commands sent between ``start()`` and ``stop()``, by name.

    Unlike ``CommandLog`` it keeps no events: a 64 MB upload's would hold its
    chunks. Handshakes and monitoring are left out, as there.
    """

    def __init__(self) -> None:
        self.active = False
        self.count = 0
        self.names: dict[str, int] = {}

    def started(self, event: monitoring.CommandStartedEvent) -> None:
        if self.active and event.command_name not in CommandLog.IGNORED:
            self.count += 1
            self.names[event.command_name] = self.names.get(event.command_name, 0) + 1

    def succeeded(self, event: monitoring.CommandSucceededEvent) -> None:
        pass

    def failed(self, event: monitoring.CommandFailedEvent) -> None:
        pass

    def start(self) -> None:
        self.count, self.names, self.active = 0, {}, True

    def stop(self) -> None:
        self.active = False
