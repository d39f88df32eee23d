"""Failover under load: 20 tasks use the public async API on a 3-member replica set
while its primary is stepped down once and killed (then restarted) once.

Every write the driver acknowledged must be in the database afterwards, money
moved by transactions must add up, no cascade delete may be half-applied, and no
caller may see a transient error from a transaction the package opened itself.
A file deleted while the primary fails over leaves none of its chunks.
A step-down at each step of a transaction (a block, a callback, a cascade, a
file's delete, the cached copies of a save) leaves all or nothing, in the
database and in the instances; a commit waiting for a majority that does not
come is bounded by ``max_commit_time_ms``, and a cascade given up while its
commit waits still deletes its files once it applied.
Queryset deletes of documents holding files, in runs of ids (their cascades'
steps too), stepped down at a later run, the commit or the files after it:
in a transaction of their own all or nothing, each ``post_delete`` of a
document-by-document one sent once after the commit; outside one, a delete
that raises midway never leaves a file of a document gone, nor takes one of a
document left, and sends the ``post_delete`` of the cascaded documents it deleted.
The read of what such a failed delete applied is retried through a second
step-down, goes to the primary when the client reads on lagging secondaries,
waits for the next primary on a client whose ``timeoutMS`` an election
outlasts, and cut short by the loop's end is run again; a cascade rolled back
(no majority had it) keeps its documents' files.
A cascade save and a select_related of cached references go through a
step-down; a cascade whose commit result stays unknown keeps its documents and
files (on its client or another), sending no ``post_delete`` after the commit.
Other writes through a step-down: an upload (at its first or last batch of
chunks; failing through two, none of its chunks left), an insert of two
batches (as MongoEngine's ``insert()``), a save (insert or ``$set``), a
conditional or incrementing write (``save_condition``, ``modify``,
``upsert_one``, ``update_one``) are each applied once, their signals sent
once; an insert in a transaction and a file put on another client in one
stepped down at commit are all or nothing; the first write of a class (or
upload into a bucket) stepped down as it creates the indexes (or the capped
collection) goes through; a save applied whose retry meets a step-down raises,
the instance ready to be saved again (stored once), an upload leaves no chunk.
Run it with ``make failover`` (it is deselected from the default run).
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

import pymongo
import pytest
from bson import ObjectId
from mongoengine.context_managers import switch_db
from pymongo import MongoClient, monitoring
from pymongo.errors import OperationFailure, PyMongoError

import mongoengine_async.gridfs
import mongoengine_async.queryset
from conftest import CancelAtAppliedCleanupRead, post_deletes
from mongoengine_async import (
    CASCADE,
    NULLIFY,
    PULL,
    CachedReferenceField,
    Document,
    FileField,
    IntField,
    ListField,
    ObjectIdField,
    OperationError,
    ReferenceField,
    SequenceField,
    StringField,
    async_run_in_transaction,
    async_run_transaction,
    get_async_db,
    signals,
)
from mongoengine_async.testing import ReplicaSet, fresh_database

pytestmark = pytest.mark.failover

ALIAS = "failover"
TASKS_PER_KIND = 5  # four kinds: 20 tasks
ACCOUNTS, OPENING_BALANCE = 8, 1_000
COUNTERS = 5
BOOKS_PER_AUTHOR = 3
TRANSFER_ATTEMPTS = 30
SETTLE_SECONDS = 3.0  # load between two disruptions


class FoNote(Document):
    task = IntField()
    version = IntField()
    meta = {"db_alias": ALIAS}


class FoCounter(Document):
    hits = IntField(default=0)
    meta = {"db_alias": ALIAS}


class FoAccount(Document):
    balance = IntField()
    meta = {"db_alias": ALIAS}


class FoTransfer(Document):
    """Written in the transfer's transaction: which transfers committed."""

    source = ObjectIdField()
    target = ObjectIdField()
    amount = IntField()
    meta = {"db_alias": ALIAS}


class FoAuthor(Document):
    name = StringField()
    meta = {"db_alias": ALIAS}


class FoBook(Document):
    author = ReferenceField(FoAuthor, reverse_delete_rule=CASCADE)
    meta = {"db_alias": ALIAS}


MODELS = (FoNote, FoCounter, FoAccount, FoTransfer, FoAuthor, FoBook)


def is_transient(error: BaseException | None) -> bool:
    """Whether ``error``, or an error that caused it, is a TransientTransactionError."""
    while error is not None:
        if isinstance(error, PyMongoError) and error.has_error_label(
            "TransientTransactionError"
        ):
            return True
        error = error.__cause__
    return False


@dataclass
class Ledger:
    """What the load was told: acknowledged writes, and the errors it saw."""

    phase: str = "steady"
    notes: dict[ObjectId, int] = field(default_factory=dict)  # acknowledged version
    pending: dict[ObjectId, int] = field(default_factory=dict)  # failed later save
    hits: Counter[ObjectId] = field(default_factory=Counter)
    failed_hits: Counter[ObjectId] = field(default_factory=Counter)
    transfers: set[ObjectId] = field(default_factory=set)
    books: dict[ObjectId, int] = field(default_factory=dict)  # author: books acked
    deleted: set[ObjectId] = field(default_factory=set)
    transient_cascades: list[str] = field(default_factory=list)
    acks: Counter[tuple[str, str]] = field(default_factory=Counter)
    errors: Counter[str] = field(default_factory=Counter)

    def ack(self, kind: str) -> None:
        """Count an acknowledged operation of ``kind`` in the current phase."""
        self.acks[kind, self.phase] += 1

    def error(self, kind: str, error: BaseException) -> None:
        """Count an error an operation of ``kind`` raised, by type."""
        self.errors[f"{kind}: {type(error).__name__}"] += 1

    def report(self) -> str:
        """Acknowledged operations per phase and the errors, for the log."""
        acks = ", ".join(f"{k}/{p}={n}" for (k, p), n in sorted(self.acks.items()))
        errors = ", ".join(f"{k}={n}" for k, n in sorted(self.errors.items()))
        return f"acknowledged: {acks}\nerrors: {errors or 'none'}"


async def save_notes(task: int, ledger: Ledger) -> None:
    """Insert a note, then save it three more times (delta updates)."""
    note = FoNote(task=task, version=0)
    try:
        await note.async_save()
    except Exception as error:
        ledger.error("save", error)
        return
    ledger.notes[note.pk] = 0
    ledger.ack("save")
    for version in range(1, 4):
        note.version = version
        try:
            await note.async_save()
        except Exception as error:
            ledger.error("save", error)
            ledger.pending[note.pk] = version
            return
        ledger.notes[note.pk] = version
        ledger.ack("save")


async def count_hit(counters: list[ObjectId], ledger: Ledger) -> None:
    """``update_one`` a random counter by one."""
    counter = random.choice(counters)
    try:
        updated = await FoCounter.objects(id=counter).async_update_one(inc__hits=1)
    except Exception as error:
        ledger.error("update_one", error)
        ledger.failed_hits[counter] += 1
        return
    assert updated == 1, f"update_one matched {updated} counters"
    ledger.hits[counter] += 1
    ledger.ack("update_one")


async def transfer(accounts: list[ObjectId], ledger: Ledger) -> None:
    """Move money between two accounts in a transaction; retry it (user code)
    on TransientTransactionError, as docs/transactions.md shows."""
    source, target = random.sample(accounts, 2)
    amount = random.randint(1, 50)
    record = FoTransfer(id=ObjectId(), source=source, target=target, amount=amount)
    for attempt in range(TRANSFER_ATTEMPTS):
        try:
            async with async_run_in_transaction(alias=ALIAS):
                await FoAccount.objects(id=source).async_update_one(dec__balance=amount)
                await FoAccount.objects(id=target).async_update_one(inc__balance=amount)
                await record.async_save(force_insert=True)
        except Exception as error:
            if not is_transient(error) or attempt == TRANSFER_ATTEMPTS - 1:
                ledger.error("transfer", error)
                return
            await asyncio.sleep(min(0.01 * 2**attempt, 0.5))
        else:
            ledger.transfers.add(record.pk)
            ledger.ack("transfer")
            return


async def cascade_delete(task: int, ledger: Ledger) -> None:
    """Create an author with books, then delete the author (the package's
    cascade, in a transaction of its own)."""
    author = FoAuthor(name=f"author of task {task}")
    try:
        await author.async_save()
        books = [FoBook(author=author) for _ in range(BOOKS_PER_AUTHOR)]
        await FoBook.objects.async_insert(books, load_bulk=False)
        ledger.books[author.pk] = BOOKS_PER_AUTHOR
    except Exception as error:
        ledger.error("author and books", error)
        if author.pk is None:
            return
    try:
        await author.async_delete()
    except Exception as error:
        ledger.error("cascade", error)
        if is_transient(error):
            ledger.transient_cascades.append(repr(error))
        return
    ledger.deleted.add(author.pk)
    ledger.ack("cascade")


async def run_task(
    stop: asyncio.Event, step: Callable[[], Awaitable[None]], ledger: Ledger
) -> None:
    """Run ``step`` over and over until ``stop`` is set."""
    while not stop.is_set():
        await step()
    ledger.ack("task finished")


async def disrupt(rs: ReplicaSet, ledger: Ledger) -> dict[str, str]:
    """Step the primary down, later kill it and restart it, with load between."""
    await asyncio.sleep(SETTLE_SECONDS)
    ledger.phase = "stepped down"
    stepped = await asyncio.to_thread(rs.step_down)
    second = await asyncio.to_thread(rs.wait_for_primary)
    await asyncio.sleep(SETTLE_SECONDS)
    ledger.phase = "killed"
    killed = await asyncio.to_thread(rs.kill_primary)
    third = await asyncio.to_thread(rs.wait_for_primary)
    await asyncio.sleep(SETTLE_SECONDS / 2)
    await asyncio.to_thread(rs.restart, killed)
    ledger.phase = "restarted"
    await asyncio.sleep(SETTLE_SECONDS)
    return {
        "stepped down": stepped.host,
        "then primary": second.host,
        "killed": killed.host,
        "last primary": third.host,
    }


async def seed() -> tuple[list[ObjectId], list[ObjectId]]:
    """Create the collections (not inside transactions), accounts and counters."""
    db = get_async_db(ALIAS)
    for model in MODELS:
        await db.create_collection(model._get_collection_name())
    accounts = await FoAccount.objects.async_insert(
        [FoAccount(balance=OPENING_BALANCE) for _ in range(ACCOUNTS)], load_bulk=False
    )
    counters = await FoCounter.objects.async_insert(
        [FoCounter() for _ in range(COUNTERS)], load_bulk=False
    )
    return accounts, counters


async def test_failover_under_load(replica_set_3: ReplicaSet) -> None:
    async with fresh_database(
        ALIAS, replica_set_3.uri, w="majority", serverSelectionTimeoutMS=15_000
    ):
        accounts, counters = await seed()
        ledger, stop = Ledger(), asyncio.Event()
        steps = [
            *(lambda t=t: save_notes(t, ledger) for t in range(TASKS_PER_KIND)),
            *(lambda: count_hit(counters, ledger) for _ in range(TASKS_PER_KIND)),
            *(lambda: transfer(accounts, ledger) for _ in range(TASKS_PER_KIND)),
            *(lambda t=t: cascade_delete(t, ledger) for t in range(TASKS_PER_KIND)),
        ]
        assert len(steps) == 20
        started = time.monotonic()
        load = [asyncio.create_task(run_task(stop, s, ledger)) for s in steps]
        try:
            events = await asyncio.wait_for(disrupt(replica_set_3, ledger), 120)
        finally:
            stop.set()
            await asyncio.wait_for(asyncio.gather(*load), 120)
        print(f"\n{events}, {time.monotonic() - started:.1f} s\n{ledger.report()}")

        assert events["then primary"] != events["stepped down"]
        assert events["last primary"] != events["killed"]
        assert ledger.acks["task finished", "restarted"] == 20
        for kind in ("save", "update_one", "transfer", "cascade"):
            assert ledger.acks[kind, "restarted"] > 0, f"no {kind} after the restart"

        await check_notes(ledger)
        await check_counters(ledger)
        await check_transfers(ledger)
        await check_cascades(ledger)


async def check_notes(ledger: Ledger) -> None:
    """Every acknowledged save is there, at its version (or at the version of a
    later save that failed, which may have been applied)."""
    stored = {
        note.pk: note.version
        async for note in FoNote.objects(id__in=list(ledger.notes))
    }
    lost = {
        pk: (version, stored.get(pk))
        for pk, version in ledger.notes.items()
        if stored.get(pk) not in (version, ledger.pending.get(pk))
    }
    assert lost == {}, f"{len(lost)} acknowledged saves lost (acked, stored)"


async def check_counters(ledger: Ledger) -> None:
    """Each counter holds every acknowledged increment, and at most the failed
    ones besides (a retryable write applies once)."""
    stored = {c.pk: c.hits async for c in FoCounter.objects}
    wrong = {
        pk: (ledger.hits[pk], hits, ledger.failed_hits[pk])
        for pk, hits in stored.items()
        if not ledger.hits[pk] <= hits <= ledger.hits[pk] + ledger.failed_hits[pk]
    }
    assert wrong == {}, "counters (acknowledged, stored, failed) out of bounds"


async def check_transfers(ledger: Ledger) -> None:
    """The sum is unchanged, every acknowledged transfer committed, and the
    balances are exactly what the committed transfers made of them."""
    balances = {a.pk: a.balance async for a in FoAccount.objects}
    assert sum(balances.values()) == ACCOUNTS * OPENING_BALANCE
    committed = await FoTransfer.objects.async_to_list()
    missing = ledger.transfers - {t.pk for t in committed}
    assert missing == set(), f"{len(missing)} acknowledged transfers lost"
    expected = dict.fromkeys(balances, OPENING_BALANCE)
    for record in committed:
        expected[record.source] -= record.amount
        expected[record.target] += record.amount
    assert balances == expected


async def check_cascades(ledger: Ledger) -> None:
    """No book refers to a missing author; an author still there has all its
    books; an acknowledged delete removed the author and its books; and no
    cascade raised a TransientTransactionError."""
    authors = set(await FoAuthor.objects.async_distinct("id"))
    books = Counter(
        [book["author"] for book in await FoBook.objects.as_pymongo().async_to_list()]
    )
    orphaned = set(books) - authors
    assert orphaned == set(), f"{len(orphaned)} deleted authors left books"
    partial = {pk: books[pk] for pk in authors if ledger.books.get(pk, 0) > books[pk]}
    assert partial == {}, f"{len(partial)} authors lost some books, not all"
    assert ledger.deleted & authors == set(), "acknowledged deletes undone"
    assert ledger.transient_cascades == []


class FoScan(Document):
    """A document with a file: its delete deletes the file's document, then its
    chunks."""

    name = StringField()
    scan = FileField(db_alias=ALIAS)
    meta = {"db_alias": ALIAS}


class FailOverBefore(monitoring.CommandListener):
    """Fails the primary over when the first ``delete`` of ``collection``
    starts, once armed: inside the listener, so that this command goes to the
    old primary."""

    def __init__(self, collection: str, fail_over: Callable[[], object]) -> None:
        self.collection, self.fail_over = collection, fail_over
        self.armed = self.failed_over = False

    def started(self, event: monitoring.CommandStartedEvent) -> None:
        if (
            self.armed
            and event.command_name == "delete"
            and event.command["delete"] == self.collection
        ):
            self.armed = False
            self.fail_over()
            self.failed_over = True

    def succeeded(self, event: monitoring.CommandSucceededEvent) -> None:
        pass

    def failed(self, event: monitoring.CommandFailedEvent) -> None:
        pass


@pytest.mark.parametrize(
    ("fail_over", "delete"), [("step_down", "queryset"), ("kill_primary", "document")]
)
async def test_a_file_deleted_through_a_failover_leaves_no_chunk(
    replica_set_3: ReplicaSet, fail_over: str, delete: str
) -> None:
    """The chunks' delete is no retryable write (many documents): PyMongo
    raised its error, the file's document (deleted first, by a retried
    delete_one) gone and the chunks left, with nothing to find them by."""
    listener = FailOverBefore("fs.chunks", getattr(replica_set_3, fail_over))
    async with fresh_database(
        ALIAS,
        replica_set_3.uri,
        w="majority",
        serverSelectionTimeoutMS=15_000,
        event_listeners=[listener],
    ):
        scan = FoScan(name="scan")
        await scan.scan.async_put(b"x" * 600_000)  # three chunks
        await scan.async_save()
        listener.armed = True
        if delete == "document":
            await scan.async_delete()
        else:
            assert await FoScan.objects(name="scan").async_delete() == 1
        assert listener.failed_over
        db = get_async_db(ALIAS)
        assert await db.fo_scan.count_documents({}) == 0
        assert await db["fs.files"].count_documents({}) == 0
        assert await db["fs.chunks"].count_documents({}) == 0


class FoTicket(Document):
    number = SequenceField(db_alias=ALIAS)
    task = IntField()
    meta = {"db_alias": ALIAS}


async def save_until_acknowledged(ticket: FoTicket) -> FoTicket:
    """Save ``ticket``, again after each error of the election (it keeps the
    number it took, if any)."""
    while True:
        try:
            return await ticket.async_save()
        except PyMongoError:
            await asyncio.sleep(0.1)


async def test_sequence_numbers_taken_through_a_stepdown_are_given_once(
    replica_set_3: ReplicaSet,
) -> None:
    """Concurrent saves take their numbers while the primary steps down: the
    counter's $inc is a retryable write, so no number is given twice."""
    async with fresh_database(
        ALIAS, replica_set_3.uri, w="majority", serverSelectionTimeoutMS=30_000
    ):
        await FoTicket._async_get_collection()
        tickets: list[FoTicket] = []
        stepping = asyncio.ensure_future(asyncio.to_thread(replica_set_3.step_down))
        while not stepping.done() or len(tickets) < 300:
            batch = [FoTicket(task=len(tickets) + n) for n in range(20)]
            tickets += batch
            saves = asyncio.gather(*map(save_until_acknowledged, batch))
            await asyncio.wait_for(saves, 120)
        await stepping
        db = get_async_db(ALIAS)
        stored = [(doc["task"], doc["number"]) async for doc in db.fo_ticket.find()]
        counter = await db["mongoengine.counters"].find_one()
    numbers = [ticket.number for ticket in tickets]
    assert len(set(numbers)) == len(tickets)
    assert sorted(stored) == [(ticket.task, ticket.number) for ticket in tickets]
    assert counter["next"] >= max(numbers)


class FoEntry(Document):
    name = StringField()
    amount = IntField(default=0)
    meta = {"db_alias": ALIAS}


class FoReview(Document):
    author = ReferenceField(FoAuthor, reverse_delete_rule=NULLIFY)
    meta = {"db_alias": ALIAS}


class FoShelf(Document):
    authors = ListField(ReferenceField(FoAuthor, reverse_delete_rule=PULL))
    meta = {"db_alias": ALIAS}


class StepDownBefore(monitoring.CommandListener):
    """Steps the primary down when ``command`` (on ``collection``, if given)
    starts, once armed: inside the listener, so that it goes to the old
    primary, whose step-down aborted the transaction."""

    def __init__(self, replica_set: ReplicaSet) -> None:
        self.replica_set = replica_set
        self.armed: tuple[str, str | None] | None = None
        self.stepped_down = False
        self.nth = 1  # the matching command that steps it down
        # Kill the primary instead (a crash), its secondaries frozen (no
        # election) for ``crash`` seconds; 0: step it down.
        self.crash = 0

    def arm(self, command: str, collection: str | None = None, nth: int = 1) -> None:
        """Step down as the ``nth`` such command starts (a later run's)."""
        self.armed, self.stepped_down, self.nth = (command, collection), False, nth

    def started(self, event: monitoring.CommandStartedEvent) -> None:
        if self.armed is None or event.command_name != self.armed[0]:
            return
        if self.armed[1] in (None, event.command[event.command_name]):
            self.nth -= 1
            if self.nth:
                return
            self.armed = None
            if self.crash:
                self.crash_frozen()
            else:
                self.replica_set.step_down()
            self.stepped_down = True

    def crash_frozen(self) -> None:
        """Kill the primary, the others frozen for ``crash`` seconds first:
        no primary for that long (``heal`` unfreezes them)."""
        primary = self.replica_set.wait_for_primary()
        for member in self.replica_set.members:
            if member is not primary:
                member.command("replSetFreeze", self.crash)
        self.replica_set.kill(primary)

    def succeeded(self, event: monitoring.CommandSucceededEvent) -> None:
        pass

    def failed(self, event: monitoring.CommandFailedEvent) -> None:
        pass


@contextlib.asynccontextmanager
async def majority_alias(
    replica_set: ReplicaSet,
    listener: Any,
    collections: Iterable[str],
    more: Iterable[Any] = (),
    **options: Any,
) -> AsyncIterator[None]:
    """The failover alias on ``replica_set``, writing to a majority (unless
    ``options`` say otherwise), with ``listener`` (and ``more``), and
    ``collections`` created (as a transaction needs)."""
    async with fresh_database(
        ALIAS,
        replica_set.uri,
        **{"w": "majority", "serverSelectionTimeoutMS": 30_000, **options},
        event_listeners=[listener, *more],
    ):
        db = get_async_db(ALIAS)
        for name in collections:
            await db.create_collection(name)
        yield


@contextlib.asynccontextmanager
async def stepping_down(replica_set: ReplicaSet) -> AsyncIterator[StepDownBefore]:
    """The failover alias on ``replica_set``, its collections created, with a
    :class:`StepDownBefore` listener."""
    listener = StepDownBefore(replica_set)
    models = (FoEntry, FoAuthor, FoBook, FoReview, FoShelf)
    names = [model._get_collection_name() for model in models]
    async with majority_alias(replica_set, listener, names):
        yield listener


async def in_transaction(
    form: str, fn: Callable[[], Awaitable[None]], **options: Any
) -> None:
    """``fn`` in ``async_run_in_transaction`` or ``async_run_transaction``."""
    if form == "callback":
        await async_run_transaction(fn, alias=ALIAS, **options)
        return
    async with async_run_in_transaction(alias=ALIAS, transaction_kwargs=options):
        await fn()


async def stepped_down_in(
    listener: StepDownBefore, form: str, block: Callable[[], Awaitable[None]]
) -> PyMongoError | None:
    """``block`` :func:`in_transaction` of ``form``, ``listener`` armed: the
    error it raised (None: none), once the step-down surely happened."""
    error = None
    try:
        await in_transaction(form, block)
    except PyMongoError as raised:
        error = raised
    assert listener.stepped_down
    return error


@pytest.mark.parametrize("form", ["context manager", "callback"])
@pytest.mark.parametrize("step", ["insert", "update", "commitTransaction"])
async def test_a_transaction_through_a_stepdown_is_all_or_nothing(
    replica_set_3: ReplicaSet, form: str, step: str
) -> None:
    """The primary steps down as the block inserts, updates or commits (the
    transaction aborted by it): the block raises a TransientTransactionError,
    nothing written and the documents given back (new again, their change
    marked); the callback runs again and commits, the documents saved."""
    async with stepping_down(replica_set_3) as listener:
        old = await FoEntry(name="old", amount=1).async_save()
        old.amount = 2
        new = FoEntry(name="new")

        async def block() -> None:
            await new.async_save()
            await old.async_save()

        listener.arm(step, None if step == "commitTransaction" else "fo_entry")
        error = await stepped_down_in(listener, form, block)
        stored = {e.name: e.amount async for e in FoEntry.objects}
    if form == "callback":
        assert error is None
        assert stored == {"old": 2, "new": 0}
        assert not new._created and old._get_changed_fields() == []
    else:
        assert is_transient(error)
        assert stored == {"old": 1}
        assert new._created and old._get_changed_fields() == ["amount"]


@pytest.mark.parametrize(
    "step",
    [
        ("delete", "fo_author"),
        ("delete", "fo_book"),
        ("update", "fo_review"),
        ("update", "fo_shelf"),
        ("commitTransaction", None),
    ],
    ids=lambda step: "-".join(filter(None, step)),
)
async def test_a_cascade_through_a_stepdown_is_applied_whole(
    replica_set_3: ReplicaSet, step: tuple[str, str | None]
) -> None:
    """The primary steps down at any step of a delete with CASCADE, NULLIFY
    and PULL rules: its transaction runs again, and the delete is applied
    whole (never half: books left, a review still naming the author)."""
    async with stepping_down(replica_set_3) as listener:
        author = await FoAuthor(name="gone").async_save()
        kept = await FoAuthor(name="kept").async_save()
        await FoBook.objects.async_insert([FoBook(author=author) for _ in range(3)])
        await FoReview.objects.async_insert([FoReview(author=author) for _ in range(2)])
        shelf = await FoShelf(authors=[author, kept]).async_save()
        listener.arm(*step)
        await author.async_delete()
        assert listener.stepped_down
        assert await FoAuthor.objects.async_scalar("name") == ["kept"]
        assert await FoBook.objects.async_count() == 0
        reviews = await FoReview.objects.as_pymongo().async_to_list()
        assert [review.get("author") for review in reviews] == [None, None]
        await shelf.async_reload()
        assert shelf.authors == [kept]


@contextlib.contextmanager
def majority_held_back(replica_set: ReplicaSet) -> Iterator[None]:
    """The secondaries stop fetching the primary's oplog in the block: a
    write with ``w="majority"`` waits (the primary stays primary)."""
    primary = replica_set.wait_for_primary()
    secondaries = [m for m in replica_set.members if m is not primary]
    for member in secondaries:
        member.command("configureFailPoint", "stopReplProducer", mode="alwaysOn")
    try:
        yield
    finally:
        for member in secondaries:
            member.command("configureFailPoint", "stopReplProducer", mode="off")


@pytest.mark.parametrize("form", ["context manager", "callback"])
async def test_max_commit_time_ms_bounds_a_commit_waiting_for_a_majority(
    replica_set_3: ReplicaSet, form: str
) -> None:
    """A commit whose majority does not come has no time limit of its own
    (PyMongo's 120 s bound its retries only): ``max_commit_time_ms`` ends it
    with an unknown result, not retried. It applies once the majority comes
    back: the document, given back as new, saved again is stored once."""
    async with stepping_down(replica_set_3):
        entry = FoEntry(name="waited for")
        with (
            majority_held_back(replica_set_3),
            pytest.raises(OperationFailure) as error,
        ):
            await in_transaction(form, entry.async_save, max_commit_time_ms=500)
        assert error.value.code == 50  # MaxTimeMSExpired
        assert error.value.has_error_label("UnknownTransactionCommitResult")
        assert entry._created
        await entry.async_save()
        assert await FoEntry.objects.async_scalar("name") == ["waited for"]


class FoScanned(Document):
    scan = FileField(db_alias=ALIAS)
    meta = {"db_alias": ALIAS}


class FoCopy(Document):
    scanned = ReferenceField(FoScanned, reverse_delete_rule=CASCADE)
    scan = FileField(db_alias=ALIAS)
    meta = {"db_alias": ALIAS}


class CommitStarted(monitoring.CommandListener):
    """Sets ``event`` when a ``commitTransaction`` starts."""

    def __init__(self) -> None:
        self.event = asyncio.Event()

    def started(self, event: monitoring.CommandStartedEvent) -> None:
        if event.command_name == "commitTransaction":
            self.event.set()

    def succeeded(self, event: monitoring.CommandSucceededEvent) -> None:
        pass

    def failed(self, event: monitoring.CommandFailedEvent) -> None:
        pass


async def files_gone_and(sent: list[Any]) -> None:
    """Return once no file is left (nor any of its chunks) and ``sent``
    holds the post_delete: the last steps after a delete."""
    db = get_async_db(ALIAS)
    while (
        await db["fs.files"].count_documents({})
        or await db["fs.chunks"].count_documents({})
        or not sent
    ):
        await asyncio.sleep(0.05)


async def test_a_cascade_cancelled_while_its_commit_waits_for_a_majority(
    replica_set_3: ReplicaSet,
) -> None:
    """The caller of a cascade gives up (cancelled) while its commit waits for
    a majority: the commit goes on and applies once the majority is back, and
    so do the steps after the delete: the files of the deleted documents,
    cascaded ones too, are deleted, then post_delete is sent (they were
    left, orphaned, and the signal never sent)."""
    listener = CommitStarted()
    sent: list[Any] = []

    async def post_delete(sender: type, document: Any, **kwargs: Any) -> None:
        sent.append(document.pk)

    names = ("fo_scanned", "fo_copy", "fs.files", "fs.chunks")
    async with majority_alias(replica_set_3, listener, names):
        scanned = FoScanned()
        await scanned.scan.async_put(b"scanned")
        await scanned.async_save()
        copy = FoCopy(scanned=scanned)
        await copy.scan.async_put(b"copy")
        await copy.async_save()
        signals.post_delete.connect(post_delete, sender=FoScanned)
        try:
            with majority_held_back(replica_set_3):
                deleting = asyncio.ensure_future(scanned.async_delete())
                await listener.event.wait()
                deleting.cancel()
                with pytest.raises(asyncio.CancelledError):
                    await deleting
            await asyncio.wait_for(files_gone_and(sent), 60)
        finally:
            signals.post_delete.disconnect(post_delete, sender=FoScanned)
        assert sent == [scanned.pk]
        assert await FoScanned.objects.async_count() == 0
        assert await FoCopy.objects.async_count() == 0


class FoBlogger(Document):
    name = StringField()
    meta = {"db_alias": ALIAS}


class FoPost(Document):
    blogger = CachedReferenceField(FoBlogger, fields=["name"], auto_sync=True)
    meta = {"db_alias": ALIAS}


@pytest.mark.parametrize("form", ["plain", "callback"])
async def test_cached_copies_through_a_stepdown(
    replica_set_3: ReplicaSet, form: str
) -> None:
    """The primary steps down as a save updates the cached copies of its
    document (a multi-document update, which PyMongo does not retry): a
    plain save raises, its change kept, so that saving again updates them;
    in ``async_run_transaction`` the save and the copies run again, and
    commit together."""
    async with stepping_down(replica_set_3) as listener:
        db = get_async_db(ALIAS)
        for model in (FoBlogger, FoPost):
            await db.create_collection(model._get_collection_name())
        blogger = await FoBlogger(name="old").async_save()
        await FoPost.objects.async_insert([FoPost(blogger=blogger) for _ in range(3)])
        blogger.name = "new"
        listener.arm("update", "fo_post")
        if form == "plain":
            with pytest.raises(PyMongoError):
                await blogger.async_save()
            assert blogger._get_changed_fields() == ["name"]
            await blogger.async_save()
        else:
            await async_run_transaction(blogger.async_save, alias=ALIAS)
        assert listener.stepped_down
        posts = await FoPost.objects.as_pymongo().async_to_list()
        assert [post["blogger"]["name"] for post in posts] == ["new"] * 3
        assert await FoBlogger.objects.async_scalar("name") == ["new"]


@pytest.mark.parametrize("form", ["context manager", "callback"])
@pytest.mark.parametrize(
    "step",
    [("delete", "fs.files"), ("delete", "fs.chunks"), ("commitTransaction", None)],
    ids=["files", "chunks", "commit"],
)
async def test_a_file_deleted_in_a_transaction_through_a_stepdown(
    replica_set_3: ReplicaSet, form: str, step: tuple[str, str | None]
) -> None:
    """The primary steps down as a transaction deletes a file (its files
    document, its chunks) or commits: the block raises, the file whole and
    its proxy holding it again; the callback runs again, file and field gone."""
    async with stepping_down(replica_set_3) as listener:
        db = get_async_db(ALIAS)
        for name in ("fo_scan", "fs.files", "fs.chunks"):
            await db.create_collection(name)
        scan = FoScan(name="scan")
        await scan.scan.async_put(b"x" * 600_000)  # three chunks
        await scan.async_save()
        grid_id = scan.scan.grid_id

        async def block() -> None:
            await scan.scan.async_delete()
            await scan.async_save()

        listener.arm(*step)
        error = await stepped_down_in(listener, form, block)
        stored = await db.fo_scan.find_one()
        files = await db["fs.files"].count_documents({})
        chunks = await db["fs.chunks"].count_documents({})
    if form == "callback":
        assert error is None
        assert (stored.get("scan"), files, chunks) == (None, 0, 0)
        assert scan.scan.grid_id is None
    else:
        assert is_transient(error)
        assert (stored["scan"], files, chunks) == (grid_id, 1, 3)
        assert scan.scan.grid_id == grid_id


class FoVault(Document):
    """A root holding a file: its queryset's delete lists the files, then
    deletes by its query and the listed ids (``_id $in``, in runs)."""

    name = StringField()
    scan = FileField(db_alias=ALIAS)
    meta = {"db_alias": ALIAS}


class FoPage(Document):
    """Cascaded with a file, by its ids (its own rule needs them)."""

    vault = ReferenceField(FoVault, reverse_delete_rule=CASCADE)
    scan = FileField(db_alias=ALIAS)
    meta = {"db_alias": ALIAS}


class FoLeaf(Document):
    """Cascaded with a file, by its rule's filter and the ids read with the
    files (the documents left keep theirs: ``not_held``)."""

    page = ReferenceField(FoPage, reverse_delete_rule=CASCADE)
    scan = FileField(db_alias=ALIAS)
    meta = {"db_alias": ALIAS}


class FoNotice(Document):
    vault = ReferenceField(FoVault, reverse_delete_rule=NULLIFY)
    meta = {"db_alias": ALIAS}


class FoIndex(Document):
    vaults = ListField(ReferenceField(FoVault, reverse_delete_rule=PULL))
    meta = {"db_alias": ALIAS}


VAULT_MODELS = (FoVault, FoPage, FoLeaf, FoNotice, FoIndex)
HOLDERS = (FoVault, FoPage, FoLeaf)
VAULTS = 5
SCAN = b"v" * 300_000  # two chunks
TWO_IDS = 2 * 21  # LISTED_IDS_BYTES for runs of two ids: three runs of vaults


@contextlib.asynccontextmanager
async def vaults_stepping_down(
    replica_set: ReplicaSet,
    monkeypatch: pytest.MonkeyPatch,
    *more: Any,
    options: dict[str, Any] | None = None,
) -> AsyncIterator[tuple[StepDownBefore, list[FoVault]]]:
    """The failover alias (with the listeners ``more`` too, and the client
    ``options``) with VAULTS vaults, each with a page with a leaf (each of the
    three holding a file), a notice per vault and an index of them all; ids
    sent in runs of two."""
    listener = StepDownBefore(replica_set)
    names = [m._get_collection_name() for m in VAULT_MODELS] + ["fs.files", "fs.chunks"]
    async with majority_alias(replica_set, listener, names, more, **(options or {})):
        vaults = []
        for number in range(VAULTS):
            vault = FoVault(name=f"vault {number}")
            await vault.scan.async_put(SCAN)
            vaults.append(await vault.async_save())
            page = FoPage(vault=vault)
            await page.scan.async_put(SCAN)
            await page.async_save()
            leaf = FoLeaf(page=page)
            await leaf.scan.async_put(SCAN)
            await leaf.async_save()
            await FoNotice(vault=vault).async_save()
        await FoIndex(vaults=vaults).async_save()
        monkeypatch.setattr(mongoengine_async.gridfs, "LISTED_IDS_BYTES", TWO_IDS)
        yield listener, vaults


async def torn() -> list[str]:
    """What breaks "documents and their files go together": a document
    whose file (or a chunk of it) is gone, a file or chunk no document
    holds, a notice or index naming a vault gone."""
    db = get_async_db(ALIAS)
    held = {
        raw["scan"]: f"{model.__name__} {raw['_id']}"
        for model in HOLDERS
        for raw in await db[model._get_collection_name()].find().to_list()
    }
    files = {raw["_id"] for raw in await db["fs.files"].find().to_list()}
    chunks = Counter(
        [raw["files_id"] for raw in await db["fs.chunks"].find().to_list()]
    )
    found = [
        f"{holder} without its file"
        for grid_id, holder in held.items()
        if grid_id not in files or chunks[grid_id] != 2
    ]
    found += [
        f"file {each} of no document" for each in (files | set(chunks)) - set(held)
    ]
    vaults = set(await FoVault.objects.async_distinct("id"))
    notices = await db.fo_notice.find({"vault": {"$exists": True}}).to_list()
    found += [
        f"notice of gone vault {n['vault']}"
        for n in notices
        if n["vault"] not in vaults
    ]
    [index] = await db.fo_index.find().to_list()
    found += [f"index of gone vault {v}" for v in index["vaults"] if v not in vaults]
    return found


async def vaults_left() -> dict[str, int]:
    """How many documents of each holder class, files and chunks are left."""
    db = get_async_db(ALIAS)
    left = {m.__name__: await m.objects.async_count() for m in HOLDERS}
    for name in ("fs.files", "fs.chunks"):
        left[name] = await db[name].count_documents({})
    return left


ALL_GONE = {"FoVault": 0, "FoPage": 0, "FoLeaf": 0, "fs.files": 0, "fs.chunks": 0}
ALL_THERE = {
    "FoVault": VAULTS,
    "FoPage": VAULTS,
    "FoLeaf": VAULTS,
    "fs.files": 3 * VAULTS,
    "fs.chunks": 6 * VAULTS,
}
# Where a delete of the vaults steps the primary down: the second run of each
# step of its plan, the commit, the files after it.
PLAN_STEPS = [
    ("delete", "fo_leaf", 2),
    ("update", "fo_notice", 2),
    ("update", "fo_index", 2),
    ("delete", "fo_page", 2),
    ("delete", "fo_vault", 2),
    ("delete", "fs.files", 4),
    ("delete", "fs.chunks", 4),
]


def step_id(step: tuple[str, str | None, int]) -> str:
    """``command-collection-nth`` for a test id."""
    return "-".join(str(each) for each in step if each is not None)


@pytest.mark.parametrize(
    ("step", "transaction"),
    [
        *((step, True) for step in [*PLAN_STEPS, ("commitTransaction", None, 1)]),
        *((step, False) for step in PLAN_STEPS),
    ],
    ids=lambda each: (
        step_id(each) if isinstance(each, tuple) else f"transaction={each}"
    ),
)
async def test_a_queryset_delete_with_files_in_runs_through_a_stepdown(
    replica_set_3: ReplicaSet,
    monkeypatch: pytest.MonkeyPatch,
    step: tuple[str, str | None, int],
    transaction: bool,
) -> None:
    """The primary steps down at a later run of a step of a queryset delete
    whose documents (and cascaded ones) hold files, or at its commit, or as
    the files go after it. In its own transaction the delete runs again and
    returns the count, documents and files all gone. With
    ``transaction=False`` a step of many documents (no retryable write) may
    raise, the delete half done: a document gone never leaves its file, a
    file never goes under a document left, and deleting again ends it."""
    async with vaults_stepping_down(replica_set_3, monkeypatch) as (listener, _):
        listener.arm(*step)
        error = None
        try:
            deleted = await FoVault.objects.async_delete(transaction=transaction)
        except PyMongoError as raised:
            error = raised
        assert listener.stepped_down
        assert await torn() == []
        if error is None:
            assert deleted == VAULTS
        else:
            assert not transaction, f"a transaction of its own raised {error!r}"
            await FoVault.objects.async_delete(transaction=False)
            assert await torn() == []
        assert await vaults_left() == ALL_GONE
        notices = await FoNotice.objects.as_pymongo().async_to_list()
        assert [notice.get("vault") for notice in notices] == [None] * VAULTS
        assert await FoIndex.objects.async_scalar("vaults") == [[]]


@pytest.mark.parametrize(
    "step",
    [
        ("delete", "fo_vault", 2),
        ("delete", "fo_leaf", 2),
        ("update", "fo_index", 2),
        ("delete", "fs.chunks", 4),
        ("commitTransaction", None, 1),
    ],
    ids=step_id,
)
@pytest.mark.parametrize("chosen", ["receivers", "skip and limit"])
async def test_a_one_by_one_delete_through_a_stepdown(
    replica_set_3: ReplicaSet,
    monkeypatch: pytest.MonkeyPatch,
    step: tuple[str, str | None, int],
    chosen: str,
) -> None:
    """The primary steps down as a document-by-document queryset delete (its
    class has delete receivers, or it has skip/limit) deletes its second
    document, or commits: its transaction runs again and commits whole, and
    each document's ``post_delete`` is sent once, after the commit (its
    document gone for a read outside the transaction)."""
    sent: list[tuple[ObjectId, int]] = []

    async def post_delete(sender: type, document: Any, **kwargs: Any) -> None:
        there = await get_async_db(ALIAS).fo_vault.count_documents({"_id": document.pk})
        sent.append((document.pk, there))

    async with vaults_stepping_down(replica_set_3, monkeypatch) as (listener, vaults):
        queryset, doomed = FoVault.objects.order_by("name"), vaults
        if chosen == "receivers":
            signals.post_delete.connect(post_delete, sender=FoVault)
        else:
            queryset, doomed = queryset.skip(1).limit(3), vaults[1:4]
        listener.arm(*step)
        try:
            deleted = await queryset.async_delete()
        finally:
            signals.post_delete.disconnect(post_delete, sender=FoVault)
        assert listener.stepped_down
        assert deleted == len(doomed)
        assert await torn() == []
        left = await FoVault.objects.order_by("name").async_scalar("id")
        assert left == [vault.pk for vault in vaults if vault not in doomed]
        assert await FoPage.objects.async_count() == len(left)
        assert await get_async_db(ALIAS)["fs.files"].count_documents({}) == 3 * len(
            left
        )
    if chosen == "receivers":
        assert sent == [(vault.pk, 0) for vault in doomed]


async def test_a_delete_without_rules_in_runs_through_a_stepdown(
    replica_set_3: ReplicaSet, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The primary steps down as a queryset delete of documents holding
    files (no rules: no transaction) sends its second run of listed ids, a
    delete of many (no retryable write): it raises, and the files of the
    documents its first run deleted are deleted (they stayed, held by no
    document), those of the documents left kept."""
    listener = StepDownBefore(replica_set_3)
    async with majority_alias(replica_set_3, listener, ["fo_scan"]):
        for number in range(VAULTS):
            scan = FoScan(name=f"scan {number}")
            await scan.scan.async_put(SCAN)
            await scan.async_save()
        monkeypatch.setattr(mongoengine_async.gridfs, "LISTED_IDS_BYTES", TWO_IDS)
        listener.arm("delete", "fo_scan", 2)
        with pytest.raises(PyMongoError):
            await FoScan.objects.order_by("name").async_delete()
        assert listener.stepped_down
        db = get_async_db(ALIAS)
        held = sorted(await db.fo_scan.distinct("scan"))
        assert await db.fo_scan.count_documents({}) == VAULTS - 2
        assert sorted(await db["fs.files"].distinct("_id")) == held
        assert sorted(await db["fs.chunks"].distinct("files_id")) == held
        assert await db["fs.chunks"].count_documents({}) == 2 * len(held)


async def test_a_document_delete_without_a_transaction_through_a_stepdown(
    replica_set_3: ReplicaSet, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The primary steps down as a document's delete with
    ``transaction=False`` deletes the second run of its cascaded documents
    (by their rule's filter): it raises, the files of those the first run
    deleted deleted, the others' kept; deleting again ends it."""
    async with vaults_stepping_down(replica_set_3, monkeypatch) as (listener, vaults):
        await FoPage.objects.async_update(vault=vaults[0])
        listener.arm("delete", "fo_leaf", 2)
        with pytest.raises(PyMongoError):
            await vaults[0].async_delete(transaction=False)
        assert listener.stepped_down
        assert await torn() == []
        assert await FoLeaf.objects.async_count() == VAULTS - 2
        await vaults[0].async_delete(transaction=False)
        assert await torn() == []
        assert await vaults_left() == {
            "FoVault": VAULTS - 1,
            "FoPage": 0,
            "FoLeaf": 0,
            "fs.files": VAULTS - 1,
            "fs.chunks": 2 * (VAULTS - 1),
        }


class RenameAfterFind(monitoring.CommandListener):
    """Renames a vault (with a client of its own) once the first ``find``
    of the vaults succeeded: the delete's listing of their files, which
    then deletes one fewer than it listed."""

    def __init__(self, uri: str) -> None:
        self.uri, self.done = uri, False
        self.vault: ObjectId | None = None  # armed once set

    def started(self, event: monitoring.CommandStartedEvent) -> None:
        pass

    def succeeded(self, event: monitoring.CommandSucceededEvent) -> None:
        if self.vault is None or self.done or event.command_name != "find":
            return
        if event.reply["cursor"]["ns"].endswith(".fo_vault"):
            self.done = True
            with MongoClient(self.uri, w="majority") as client:
                vaults = client[event.database_name].fo_vault
                vaults.update_one({"_id": self.vault}, {"$set": {"name": "x"}})

    def failed(self, event: monitoring.CommandFailedEvent) -> None:
        pass


@pytest.mark.parametrize("transaction", [True, False], ids=lambda t: f"transaction={t}")
async def test_a_vault_changed_after_the_listing_through_a_stepdown(
    replica_set_3: ReplicaSet, monkeypatch: pytest.MonkeyPatch, transaction: bool
) -> None:
    """A vault the delete listed is changed to match no more before its
    delete, which the primary steps down in (its second run of ids): the
    changed vault keeps its file, page and leaf (its file left out of the
    files deleted, by the read of the documents left), the others go, the
    count leaving it out; without a transaction the delete raises, and
    deleting again ends it."""
    renaming = RenameAfterFind(replica_set_3.uri)
    async with vaults_stepping_down(replica_set_3, monkeypatch, renaming) as (
        listener,
        vaults,
    ):
        renaming.vault = vaults[1].pk
        listener.arm("delete", "fo_vault", 2)
        error = None
        try:
            deleted = await FoVault.objects(name__startswith="vault").async_delete(
                transaction=transaction
            )
        except PyMongoError as raised:
            error = raised
        assert renaming.done and listener.stepped_down
        assert await torn() == []
        if error is None:
            assert deleted == VAULTS - 1
        else:
            assert not transaction, f"a transaction of its own raised {error!r}"
            await FoVault.objects(name__startswith="vault").async_delete()
            assert await torn() == []
        assert await FoVault.objects.async_scalar("id") == [vaults[1].pk]
        assert await vaults_left() == {
            "FoVault": 1,
            "FoPage": 1,
            "FoLeaf": 1,
            "fs.files": 3,
            "fs.chunks": 6,
        }


async def test_a_one_by_one_delete_whose_commit_times_out_sends_no_post_delete(
    replica_set_3: ReplicaSet, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A document-by-document delete whose commit waits for a majority that
    does not come, given up by a PyMongo timeout: it raises, no
    ``post_delete`` is sent (nothing tells the outcome), and what the commit
    applied is whole (documents and their files together)."""
    sent: list[ObjectId] = []

    async def post_delete(sender: type, document: Any, **kwargs: Any) -> None:
        sent.append(document.pk)

    async with vaults_stepping_down(replica_set_3, monkeypatch):
        signals.post_delete.connect(post_delete, sender=FoVault)
        try:
            with majority_held_back(replica_set_3), pytest.raises(PyMongoError):
                with pymongo.timeout(3):
                    await FoVault.objects.async_delete()
        finally:
            signals.post_delete.disconnect(post_delete, sender=FoVault)
        assert sent == []
        assert await torn() == []
        assert await vaults_left() in (ALL_GONE, ALL_THERE)


@pytest.mark.parametrize(
    "step", [("delete", "fo_page", 2), ("delete", "fo_vault", 2)], ids=step_id
)
async def test_a_cascade_without_a_transaction_failing_midway_signals_those_gone(
    replica_set_3: ReplicaSet,
    monkeypatch: pytest.MonkeyPatch,
    step: tuple[str, str | None, int],
) -> None:
    """The primary steps down as a queryset delete with ``transaction=False``
    deletes a later run of its cascaded documents (whose class has delete
    receivers), or of its roots: it raises, and each cascaded document it
    deleted had its ``post_delete`` sent once (as MongoEngine's walk, one
    document at a time, sends them), and its files deleted."""
    sent: list[ObjectId] = []

    async def post_delete(sender: type, document: Any, **kwargs: Any) -> None:
        sent.append(document.pk)

    async with vaults_stepping_down(replica_set_3, monkeypatch) as (listener, _):
        pages = await FoPage.objects.async_scalar("id")
        signals.post_delete.connect(post_delete, sender=FoPage)
        try:
            listener.arm(*step)
            with pytest.raises(PyMongoError):
                await FoVault.objects.async_delete(transaction=False)
        finally:
            signals.post_delete.disconnect(post_delete, sender=FoPage)
        assert listener.stepped_down
        assert await torn() == []
        left = set(await FoPage.objects.async_scalar("id"))
        assert len(left) == (VAULTS - 2 if step[1] == "fo_page" else 0)
        assert sorted(sent) == sorted(set(pages) - left)


async def test_a_cascade_failing_midway_under_a_client_timeout_signals_those_gone(
    replica_set_3: ReplicaSet, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The primary crashes as a queryset delete with ``transaction=False``
    deletes its second run of cascaded pages, on a client whose operations
    time out (``timeoutMS``) sooner than the others elect a new one: the
    reads after the failure, each cut short selecting a server, gave the
    client up, so the pages deleted kept their files and got no
    ``post_delete``. Each step has a whole server selection now: the pages
    deleted have their files deleted and ``post_delete`` sent once."""
    sent: list[ObjectId] = []

    async def post_delete(sender: type, document: Any, **kwargs: Any) -> None:
        sent.append(document.pk)

    options = {"timeoutMS": 5_000}
    async with vaults_stepping_down(replica_set_3, monkeypatch, options=options) as (
        crashing,
        _,
    ):
        crashing.crash = 10  # (no primary for longer than timeoutMS)
        pages = await FoPage.objects.async_scalar("id")
        signals.post_delete.connect(post_delete, sender=FoPage)
        try:
            crashing.arm("delete", "fo_page", 2)
            with pytest.raises(PyMongoError):
                await FoVault.objects.async_delete(transaction=False)
        finally:
            signals.post_delete.disconnect(post_delete, sender=FoPage)
        assert crashing.stepped_down
        replica_set_3.wait_for_primary()
        assert await torn() == []
        left = set(await FoPage.objects.async_scalar("id"))
        assert len(left) == VAULTS - 2
        assert sorted(sent) == sorted(set(pages) - left)


class StepDownTwice(StepDownBefore):
    """A :class:`StepDownBefore` that, once it stepped the primary down,
    steps the next one down too, as the ``then``-th command ``then`` names
    starts (the read of what a failed write applied), the new primary elected
    meanwhile (the listener waits for it)."""

    def __init__(self, replica_set: ReplicaSet, then: tuple[str, str, int]) -> None:
        super().__init__(replica_set)
        self.then: tuple[str, str, int] | None = then
        self.twice = False

    def started(self, event: monitoring.CommandStartedEvent) -> None:
        if self.armed is None and self.stepped_down and self.then is not None:
            self.arm(*self.then)
            self.then, self.twice = None, True
        super().started(event)


# After the failed run: the files of the pages listed read in three runs (two
# ids each), then the pages themselves: at the first run of each read.
@pytest.mark.parametrize("nth", [1, 4], ids=["files-read", "documents-read"])
async def test_a_stepdown_in_the_read_after_a_cascade_failing_midway(
    replica_set_3: ReplicaSet, monkeypatch: pytest.MonkeyPatch, nth: int
) -> None:
    """The primary steps down as a queryset delete with ``transaction=False``
    deletes its second run of cascaded pages, then the next primary steps
    down as the delete reads which pages are gone (the read of the files they
    hold, or of the pages for their ``post_delete``): that read is retried on
    the third member, so the pages deleted have their files deleted and their
    ``post_delete`` sent once, those left keep theirs, and the caller gets
    the delete's error."""
    sent: list[ObjectId] = []

    async def post_delete(sender: type, document: Any, **kwargs: Any) -> None:
        sent.append(document.pk)

    twice = StepDownTwice(replica_set_3, ("find", "fo_page", nth))
    async with vaults_stepping_down(replica_set_3, monkeypatch, twice) as (first, _):
        first.armed = None  # (this test's listener is ``twice``)
        pages = await FoPage.objects.async_scalar("id")
        signals.post_delete.connect(post_delete, sender=FoPage)
        try:
            twice.arm("delete", "fo_page", 2)
            with pytest.raises(PyMongoError):
                await FoVault.objects.async_delete(transaction=False)
        finally:
            signals.post_delete.disconnect(post_delete, sender=FoPage)
        assert twice.twice and twice.stepped_down
        assert await torn() == []
        left = set(await FoPage.objects.async_scalar("id"))
        assert len(left) == VAULTS - 2
        assert sorted(sent) == sorted(set(pages) - left)


@contextlib.contextmanager
def failing(member: Any, mode: Any = None, **data: Any) -> Iterator[None]:
    """The ``failCommand`` fail point on ``member`` in the block (``data``
    its options: ``failCommands``, ``writeConcernError``...), once by default."""
    mode = {"times": 1} if mode is None else mode
    member.command("configureFailPoint", "failCommand", mode=mode, data=data)
    try:
        yield
    finally:
        member.command("configureFailPoint", "failCommand", mode="off")


async def a_scan_deleted_as_the_primary_steps_down(
    replica_set: ReplicaSet,
    listener: StepDownBefore,
    more: Iterable[Any],
    raising: contextlib.AbstractContextManager[Any],
    **delete_options: Any,
) -> None:
    """A FoScan with a file, whose delete (``delete_options``) is applied but
    answered with a write concern error, the primary stepped down (by
    ``listener``, ``more`` listening too) as the delete reads whether it is
    gone; the delete raises in ``raising``. The document read gone on the
    next primary: its file is deleted and ``post_delete`` sent once."""
    sent: list[ObjectId] = []

    async def post_delete(sender: type, document: Any, **kwargs: Any) -> None:
        sent.append(document.pk)

    names = ["fo_scan", "fs.files", "fs.chunks"]
    async with majority_alias(replica_set, listener, names, more):
        scan = FoScan(name="scan")
        await scan.scan.async_put(SCAN)
        await scan.async_save()
        unsatisfied = {"code": 100, "errmsg": "not satisfied (fail point)"}
        signals.post_delete.connect(post_delete, sender=FoScan)
        try:
            primary = replica_set.wait_for_primary()
            listener.arm("find", "fo_scan")
            with (
                failing(
                    primary, failCommands=["delete"], writeConcernError=unsatisfied
                ),
                raising,
            ):
                await scan.async_delete(**delete_options)
        finally:
            signals.post_delete.disconnect(post_delete, sender=FoScan)
        assert listener.stepped_down
        assert sent == [scan.pk]
        db = get_async_db(ALIAS)
        for name in names:
            assert await db[name].count_documents({}) == 0, name


async def test_a_stepdown_in_the_read_after_a_document_delete_failed(
    replica_set_3: ReplicaSet,
) -> None:
    """A document's delete (no rules: no transaction) is applied but answered
    with a write concern error, and the primary steps down as the delete reads
    whether the document is gone: that read is retried on the next primary,
    the document read gone, so its file is deleted and ``post_delete`` sent
    once; the caller gets MongoEngine's error for the delete."""
    await a_scan_deleted_as_the_primary_steps_down(
        replica_set_3,
        StepDownBefore(replica_set_3),
        [],
        pytest.raises(OperationError, match="not satisfied"),
    )


class FailBefore(monitoring.CommandListener):
    """Makes the ``nth`` ``command`` on ``collection`` fail (error 2, not
    applied) once armed: the fail point set on the primary as it starts.
    Then it notes where each ``find`` goes (collection, ``host:port``)."""

    def __init__(self, replica_set: ReplicaSet) -> None:
        self.replica_set = replica_set
        self.armed: list[Any] | None = None
        self.failed_one = False
        self.reads: list[tuple[str, str]] = []

    def arm(self, command: str, collection: str, nth: int = 1) -> None:
        """Fail the ``nth`` such command from now on."""
        self.armed = [command, collection, nth]

    def started(self, event: monitoring.CommandStartedEvent) -> None:
        if self.failed_one and event.command_name == "find":
            host, port = event.connection_id
            self.reads.append((event.command["find"], f"{host}:{port}"))
        armed = self.armed
        if armed is None or event.command_name != armed[0]:
            return
        if event.command[event.command_name] == armed[1]:
            armed[2] -= 1
            if armed[2]:
                return
            self.armed = None
            data = {"failCommands": [armed[0]], "errorCode": 2}
            primary = self.replica_set.wait_for_primary()
            primary.command(
                "configureFailPoint", "failCommand", mode={"times": 1}, data=data
            )
            self.failed_one = True

    def succeeded(self, event: monitoring.CommandSucceededEvent) -> None:
        pass

    def failed(self, event: monitoring.CommandFailedEvent) -> None:
        pass


async def all_members_have_it() -> None:
    """Return once every member has applied the writes before (a write
    acknowledged by all three): reads on a secondary see what the primary has."""
    db = get_async_db(ALIAS)
    everywhere = db.fo_sync.with_options(write_concern=pymongo.WriteConcern(w=3))
    await everywhere.insert_one({})


LAGGING = {"read_preference": pymongo.ReadPreference.SECONDARY_PREFERRED, "w": 1}


async def test_the_read_after_a_cascade_failing_midway_is_on_the_primary(
    replica_set_3: ReplicaSet, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A client reading on secondaries (``secondaryPreferred``), which lag
    behind (their replication paused): a queryset delete with
    ``transaction=False`` fails at its second run of cascaded pages; its read
    of which pages are gone goes to the primary, where the delete went, so the
    pages deleted have their files deleted and their ``post_delete`` sent."""
    sent: list[ObjectId] = []

    async def post_delete(sender: type, document: Any, **kwargs: Any) -> None:
        sent.append(document.pk)

    failing_one = FailBefore(replica_set_3)
    async with vaults_stepping_down(
        replica_set_3, monkeypatch, failing_one, options=LAGGING
    ) as (_, _vaults):
        await all_members_have_it()
        pages = await FoPage.objects.async_scalar("id")
        signals.post_delete.connect(post_delete, sender=FoPage)
        try:
            with majority_held_back(replica_set_3):
                failing_one.arm("delete", "fo_page", 2)
                with pytest.raises(OperationFailure, match="failCommand"):
                    await FoVault.objects.async_delete(transaction=False)
        finally:
            signals.post_delete.disconnect(post_delete, sender=FoPage)
        assert failing_one.failed_one
        primary = replica_set_3.wait_for_primary().host
        assert ("fo_page", primary) in failing_one.reads  # (which are gone)
        assert {host for _, host in failing_one.reads} == {primary}
        await all_members_have_it()
        assert await torn() == []
        left = set(await FoPage.objects.async_scalar("id"))
        assert len(left) == VAULTS - 2
        assert sorted(sent) == sorted(set(pages) - left)


async def test_the_read_after_a_document_delete_failed_is_on_the_primary(
    replica_set_3: ReplicaSet,
) -> None:
    """A client reading on secondaries, which lag behind: a document saved
    since (with its file) has its delete fail on the server, not applied; the
    read of whether it is gone goes to the primary, so it keeps its file (on
    a secondary it was never there: its file would go, the document left)."""
    failing_one = FailBefore(replica_set_3)
    names = ["fo_scan", "fs.files", "fs.chunks"]
    async with majority_alias(replica_set_3, failing_one, names, **LAGGING):
        await all_members_have_it()
        with majority_held_back(replica_set_3):
            scan = FoScan(name="scan")
            await scan.scan.async_put(SCAN)
            await scan.async_save()
            failing_one.arm("delete", "fo_scan")
            with pytest.raises(OperationError, match="failCommand"):
                await scan.async_delete()
        assert failing_one.failed_one
        assert failing_one.reads == [("fo_scan", replica_set_3.wait_for_primary().host)]
        await all_members_have_it()
        db = get_async_db(ALIAS)
        assert await db.fo_scan.distinct("scan") == [scan.scan.grid_id]
        assert await db["fs.files"].distinct("_id") == [scan.scan.grid_id]
        assert await db["fs.chunks"].count_documents({}) == 2


@pytest.mark.parametrize(
    "step", [("insert", "fo_book"), ("update", "fo_author")], ids=["own", "referenced"]
)
async def test_a_cascade_save_through_a_stepdown(
    replica_set_3: ReplicaSet, step: tuple[str, str]
) -> None:
    """The primary steps down as ``async_save(cascade=True)`` writes the
    document or the changed document it references (single-document writes,
    which PyMongo retries on the next primary): the save returns, both are
    stored once with their changes, and neither keeps a change marked."""
    async with stepping_down(replica_set_3) as listener:
        author = await FoAuthor(name="old").async_save()
        author.name = "new"
        book = FoBook(author=author)
        listener.arm(*step)
        await book.async_save(cascade=True)
        assert listener.stepped_down
        assert await FoAuthor.objects.async_scalar("name") == ["new"]
        books = await FoBook.objects.as_pymongo().async_to_list()
        assert books == [{"_id": book.pk, "author": author.pk}]
        assert author._get_changed_fields() == book._get_changed_fields() == []


class FoWriter(Document):
    name = StringField()
    bio = StringField()
    meta = {"db_alias": ALIAS}


class FoArticle(Document):
    writer = CachedReferenceField(FoWriter, fields=["name"])
    meta = {"db_alias": ALIAS}


@pytest.mark.parametrize("of", ["queryset", "document"])
async def test_select_related_of_a_cached_reference_through_a_stepdown(
    replica_set_3: ReplicaSet, of: str
) -> None:
    """The primary steps down as ``async_select_related()`` reads the documents
    a CachedReferenceField refers to (a read PyMongo retries on the next
    primary): each reference is loaded whole, its fields not cached too."""
    listener = StepDownBefore(replica_set_3)
    async with majority_alias(replica_set_3, listener, ["fo_writer", "fo_article"]):
        writers = [
            await FoWriter(name=f"writer {n}", bio=f"bio {n}").async_save()
            for n in range(3)
        ]
        await FoArticle.objects.async_insert([FoArticle(writer=w) for w in writers])
        articles = FoArticle.objects.order_by("id")
        listener.arm("find", "fo_writer")
        if of == "queryset":
            loaded = await articles.async_select_related()
        else:
            loaded = await articles.async_to_list()
            for article in loaded:
                await article.async_select_related()
        assert listener.stepped_down
        assert [a.writer.bio for a in loaded] == ["bio 0", "bio 1", "bio 2"]
        assert [a.writer.pk for a in loaded] == [w.pk for w in writers]


OTHER = "failover-files"  # the same replica set, another client


class FoFarScanned(Document):
    scan = FileField(db_alias=OTHER)
    meta = {"db_alias": ALIAS}


class FoFarCopy(Document):
    scanned = ReferenceField(FoFarScanned, reverse_delete_rule=CASCADE)
    scan = FileField(db_alias=OTHER)
    meta = {"db_alias": ALIAS}


@contextlib.asynccontextmanager
async def files_on(replica_set: ReplicaSet, where: str) -> AsyncIterator[Any]:
    """The database of the files of the classes ``where`` says ("same"
    client as the documents, or "other"), the other alias connected."""
    if where == "same":
        yield get_async_db(ALIAS)
        return
    async with fresh_database(OTHER, replica_set.uri, w="majority"):
        db = get_async_db(OTHER)
        for name in ("fs.files", "fs.chunks"):
            await db.create_collection(name)
        yield db


@pytest.mark.parametrize("where", ["same", "other"], ids=lambda w: f"files-{w}")
@pytest.mark.parametrize("form", ["own", "context manager", "callback"])
async def test_a_cascade_whose_commit_result_stays_unknown_keeps_its_files(
    replica_set_3: ReplicaSet, form: str, where: str
) -> None:
    """Every ``commitTransaction`` of a cascade (in its own transaction, or in
    the caller's) loses its connection, retried until a PyMongo timeout ends
    it: the caller gets an error labelled ``UnknownTransactionCommitResult``;
    in its own transaction the root's ``post_delete`` (sent once it committed)
    is not sent, the receivers run inside a transaction were, once. The commit
    never applied: the documents and their files (deleted in the transaction)
    are all there, none orphaned nor lost."""
    sent: list[ObjectId] = []

    async def post_delete(sender: type, document: Any, **kwargs: Any) -> None:
        sent.append(document.pk)

    scanned_cls, copy_cls = (
        (FoScanned, FoCopy) if where == "same" else (FoFarScanned, FoFarCopy)
    )
    names = [cls._get_collection_name() for cls in (scanned_cls, copy_cls)]
    async with (
        majority_alias(
            replica_set_3, CommitStarted(), [*names, "fs.files", "fs.chunks"]
        ),
        files_on(replica_set_3, where) as files_db,
    ):
        scanned = scanned_cls()
        await scanned.scan.async_put(b"scanned")
        await scanned.async_save()
        copy = copy_cls(scanned=scanned)
        await copy.scan.async_put(b"copy")
        await copy.async_save()
        primary = replica_set_3.wait_for_primary()
        signals.post_delete.connect(post_delete)
        try:
            with (
                failing(
                    primary,
                    "alwaysOn",
                    failCommands=["commitTransaction"],
                    closeConnection=True,
                ),
                pytest.raises((OperationError, PyMongoError)) as error,
                pymongo.timeout(5),
            ):
                if form == "own":
                    await scanned.async_delete()
                else:
                    await in_transaction(form, scanned.async_delete)
        finally:
            signals.post_delete.disconnect(post_delete)
            # (The transaction never committed nor aborted holds its locks.)
            primary.command("killAllSessions", [])
        # (For a document, as the cause of MongoEngine's OperationError.)
        raised = error.value.__cause__ if form == "own" else error.value
        assert isinstance(
            error.value, OperationError if form == "own" else PyMongoError
        )
        assert isinstance(raised, PyMongoError)
        assert raised.has_error_label("UnknownTransactionCommitResult")
        # (The cascaded copy's, inside the transaction; the root's after its
        # commit, in its own: never sent.)
        assert sent == ([copy.pk] if form == "own" else [copy.pk, scanned.pk])
        files = {scanned.scan.grid_id, copy.scan.grid_id}
        for document in (scanned, copy):
            stored = await type(document).objects.async_scalar("scan")
            assert [each.grid_id for each in stored] == [document.scan.grid_id]
        assert set(await files_db["fs.files"].distinct("_id")) == files
        assert set(await files_db["fs.chunks"].distinct("files_id")) == files


class CancelAt(monitoring.CommandListener):
    """Cancels ``task``, and the deletes going on in tasks of their own (as
    the loop's end cancels every task left), as the first ``find`` on
    ``collection`` starts once the primary was stepped down (``stepped``):
    the read after a failed write."""

    def __init__(self, stepped: StepDownBefore, collection: str) -> None:
        self.stepped, self.collection = stepped, collection
        self.task: asyncio.Future[Any] | None = None
        self.cancelled: list[asyncio.Future[Any]] = []

    def started(self, event: monitoring.CommandStartedEvent) -> None:
        if (
            self.task is not None
            and not self.cancelled
            and self.stepped.stepped_down
            and event.command_name == "find"
            and event.command["find"] == self.collection
        ):
            self.cancelled = [self.task, *mongoengine_async.queryset._deleting]
            for task in self.cancelled:
                task.cancel()

    def succeeded(self, event: monitoring.CommandSucceededEvent) -> None:
        pass

    def failed(self, event: monitoring.CommandFailedEvent) -> None:
        pass


async def test_a_cleanup_after_a_stepdown_cancelled_is_run_again(
    replica_set_3: ReplicaSet, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A queryset delete with ``transaction=False`` fails as the primary steps
    down at its second run of cascaded pages, and is cancelled, the task it
    goes on in too (as the loop's end does), while it reads which pages are
    gone: that read and what follows run again before the cancellation is
    raised, so the pages deleted have their files deleted and ``post_delete``
    sent once."""
    sent: list[ObjectId] = []

    async def post_delete(sender: type, document: Any, **kwargs: Any) -> None:
        sent.append(document.pk)

    stepped = StepDownBefore(replica_set_3)
    canceller = CancelAt(stepped, "fo_page")
    async with vaults_stepping_down(replica_set_3, monkeypatch, stepped, canceller) as (
        _,
        _vaults,
    ):
        pages = await FoPage.objects.async_scalar("id")
        signals.post_delete.connect(post_delete, sender=FoPage)
        try:
            stepped.arm("delete", "fo_page", 2)
            deleting = asyncio.ensure_future(
                FoVault.objects.async_delete(transaction=False)
            )
            canceller.task = deleting
            with pytest.raises(asyncio.CancelledError):
                await deleting
            # (The last step: the delete's own task ended.)
            await asyncio.wait_for(going_on_ended(), 60)
        finally:
            signals.post_delete.disconnect(post_delete, sender=FoPage)
        assert stepped.stepped_down and len(canceller.cancelled) == 2
        assert await torn() == []
        left = set(await FoPage.objects.async_scalar("id"))
        assert len(left) == VAULTS - 2
        assert sorted(sent) == sorted(set(pages) - left)


async def test_a_document_delete_cleanup_cut_short_through_a_stepdown(
    replica_set_3: ReplicaSet,
) -> None:
    """A document's delete (no rules: no transaction; ``w=1``, so the
    primary's own data is read: at majority, a new primary's first moments
    may show it there) is applied but answered with a write concern error;
    the primary steps down as the delete reads whether the document is gone,
    and that read is cut short (its loop's end): the read is run again on
    the next primary, the document read gone, so its file is deleted and
    ``post_delete`` sent once before the cancellation is raised."""
    listener = StepDownBefore(replica_set_3)
    canceller = CancelAtAppliedCleanupRead("fo_scan")
    await a_scan_deleted_as_the_primary_steps_down(
        replica_set_3,
        listener,
        [canceller],
        pytest.raises(asyncio.CancelledError),
        w=1,
    )
    assert canceller.cancelled == 1


async def going_on_ended() -> None:
    """Return once no queryset delete goes on in a task of its own."""
    while mongoengine_async.queryset._deleting:
        await asyncio.sleep(0.05)


# The alias of FoDeed's files: on another deployment (a rollback of the set
# does not bring back what was deleted there).
DEED_FILES = "failover-deed-files"


# Setup writes wait for the majority with no wtimeout (the alias's 1 s timed
# out once on a loaded machine): only the delete under test gets 1 s.
PATIENT = {"w": "majority", "wtimeout": 0}


@contextlib.asynccontextmanager
async def majority_and_files(
    replica_set: ReplicaSet, mongodb_uri: str
) -> AsyncIterator[None]:
    """ALIAS on ``replica_set`` (w "majority", a 1 s wtimeout, 30 s to find a
    server), DEED_FILES on the other deployment, both fresh."""
    async with (
        fresh_database(
            ALIAS,
            replica_set.uri,
            w="majority",
            wTimeoutMS=1_000,
            serverSelectionTimeoutMS=30_000,
        ),
        fresh_database(DEED_FILES, mongodb_uri),
    ):
        yield


class FoDeed(Document):
    scan = FileField(db_alias=DEED_FILES)
    meta = {"db_alias": ALIAS}


async def test_a_delete_rolled_back_keeps_the_files_of_its_document(
    replica_set_3: ReplicaSet, mongodb_uri: str
) -> None:
    """A document's delete (w "majority") the primary applied but no
    majority acknowledged (a write concern error), then that primary lost:
    the delete is rolled back, the document there. Its file, on another
    deployment, is still there, and no ``post_delete`` was sent: the steps
    after the failure read whether it is gone at read concern "majority",
    where the delete is not. Read on the primary's own data it was gone: its
    file was deleted (lost) and ``post_delete`` sent for a document that is
    there."""
    async with majority_and_files(replica_set_3, mongodb_uri):
        deed = FoDeed()
        await deed.scan.async_put(b"deed")
        await deed.async_save(write_concern=PATIENT)
        with post_deletes(FoDeed) as sent:
            with majority_held_back(replica_set_3):
                with pytest.raises(OperationError) as raised:
                    await deed.async_delete()
                await asyncio.to_thread(replica_set_3.kill_primary)
        assert raised.value.__cause__.code == 64  # WriteConcernFailed  # type: ignore[union-attr]
        assert await FoDeed.objects.async_scalar("id") == [deed.pk]
        assert await deed.scan.async_read() == b"deed"
        assert sent == []


async def test_a_fresh_database_is_dropped_while_no_majority_acknowledges(
    replica_set_3: ReplicaSet,
) -> None:
    """A fresh database of an alias with ``w="majority"`` and a short
    ``wtimeout`` is dropped at the block's end while the secondaries hold
    back (a member lost or lagging): the drops wait for the primary alone.
    Waited for at the alias's write concern, they failed with a
    WTimeoutError, leaving the database."""
    with majority_held_back(replica_set_3):
        async with fresh_database(
            ALIAS, replica_set_3.uri, w="majority", wTimeoutMS=200
        ):
            await FoDeed.objects.async_insert([FoDeed()], write_concern={"w": 1})
            name = get_async_db(ALIAS).name
        client: pymongo.AsyncMongoClient[Any] = pymongo.AsyncMongoClient(
            replica_set_3.uri
        )
        try:
            assert name not in await client.list_database_names()
        finally:
            await client.close()


class FoCase(Document):
    scan = FileField(db_alias=DEED_FILES)
    meta = {"db_alias": ALIAS}


class FoExhibit(Document):
    case = ReferenceField(FoCase, reverse_delete_rule=CASCADE)
    scan = FileField(db_alias=DEED_FILES)
    meta = {"db_alias": ALIAS}


async def test_a_cascade_rolled_back_keeps_the_files_of_its_documents(
    replica_set_3: ReplicaSet, mongodb_uri: str
) -> None:
    """A queryset delete with ``transaction=False`` (w "majority") whose
    first write, the cascaded exhibits' delete, the primary applied but no
    majority acknowledged (a write concern error), then that primary lost:
    the delete is rolled back, the exhibits there. Their files, on another
    deployment, are still there, and no ``post_delete`` was sent: the read of
    which exhibits are gone is at read concern "majority", where the delete
    is not (on the primary's own data they were gone: their files deleted,
    lost, and ``post_delete`` sent for documents that are there)."""
    async with majority_and_files(replica_set_3, mongodb_uri):
        case = FoCase()
        await case.scan.async_put(b"case")
        await case.async_save(write_concern=PATIENT)
        exhibits = []
        for number in range(2):
            exhibit = FoExhibit(case=case)
            await exhibit.scan.async_put(b"exhibit %d" % number)
            exhibits.append(await exhibit.async_save(write_concern=PATIENT))
        with post_deletes(FoExhibit) as sent:
            with majority_held_back(replica_set_3):
                with pytest.raises(OperationFailure) as raised:
                    await FoCase.objects.async_delete(transaction=False)
                await asyncio.to_thread(replica_set_3.kill_primary)
        assert raised.value.code == 64  # WriteConcernFailed
        replica_set_3.wait_for_primary()
        assert await FoCase.objects.async_scalar("id") == [case.pk]
        stored = await FoExhibit.objects.order_by("id").async_to_list()
        assert [each.pk for each in stored] == [each.pk for each in exhibits]
        assert [await each.scan.async_read() for each in stored] == [
            b"exhibit 0",
            b"exhibit 1",
        ]
        assert await case.scan.async_read() == b"case"
        assert sent == []


@pytest.mark.parametrize("created", [True, False])
async def test_a_delete_failing_unapplied_keeps_the_files_of_a_document_just_saved(
    replica_set_3: ReplicaSet, mongodb_uri: str, created: bool
) -> None:
    """A document saved with ``w=1`` (no majority has it yet), then its
    delete (w "majority") failing on the server, not applied: it is there,
    and keeps its file (on another deployment) once the majority has it; no
    ``post_delete`` is sent. Read at read concern "majority" alone, it was
    not there (its insert not majority-committed): its file was deleted,
    lost, and ``post_delete`` sent for a document that is there. Its
    collection not ``created`` before (by that save), the read at majority
    waited for its creation to reach a majority: the delete never returned."""
    async with (
        fresh_database(
            ALIAS, replica_set_3.uri, w="majority", serverSelectionTimeoutMS=30_000
        ),
        fresh_database(DEED_FILES, mongodb_uri),
    ):
        deed = FoDeed()
        await deed.scan.async_put(b"deed")
        if created:
            await get_async_db(ALIAS).create_collection("fo_deed")
        with post_deletes(FoDeed) as sent:
            with majority_held_back(replica_set_3):
                await deed.async_save(write_concern={"w": 1})
                with (
                    replica_set_3.fail_command("delete", error_code=FAILED),
                    pytest.raises(OperationError) as raised,
                ):
                    await asyncio.wait_for(deed.async_delete(), 60)
        assert raised.value.__cause__.code == FAILED  # type: ignore[union-attr]
        assert await FoDeed.objects.async_scalar("id") == [deed.pk]
        assert await deed.scan.async_read() == b"deed"
        assert sent == []


# A code the server fails a command with (OperationFailed), not retried.
FAILED = 96


# -- Writes other than deletes through a step-down ------------------------------


class FoUpload(Document):
    name = StringField()
    scan = FileField(db_alias=ALIAS)
    meta = {"db_alias": ALIAS}


class FoFarUpload(Document):
    name = StringField()
    scan = FileField(db_alias=OTHER)
    meta = {"db_alias": ALIAS}


CHUNK = 255 * 1024  # GridFS's default chunk size
UPLOADED = bytes(range(256)) * (6 * CHUNK // 256)  # six chunks


async def streamed() -> AsyncIterator[bytes]:
    """UPLOADED, in pieces that are no chunk's size."""
    for start in range(0, len(UPLOADED), 100_000):
        yield UPLOADED[start : start + 100_000]


async def bucket(db: Any) -> tuple[int, int]:
    """How many files documents and chunks the bucket ``fs`` of ``db`` holds."""
    return (
        await db["fs.files"].count_documents({}),
        await db["fs.chunks"].count_documents({}),
    )


@contextlib.asynccontextmanager
async def uploading(
    replica_set: ReplicaSet, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[StepDownBefore]:
    """:func:`stepping_down`, ``fo_upload`` created, uploads sending two
    chunks per insert, and the bucket holding a file of one chunk (its
    indexes made: their creation is no retryable write)."""
    monkeypatch.setattr(mongoengine_async.gridfs, "UPLOAD_BATCH_BYTES", 2 * CHUNK)
    async with stepping_down(replica_set) as listener:
        db = get_async_db(ALIAS)
        for name in ("fo_upload", "fs.files", "fs.chunks"):
            await db.create_collection(name)
        await FoUpload(name="first").scan.async_put(b"first")
        yield listener


@pytest.mark.parametrize("how", ["bytes", "streamed"])
@pytest.mark.parametrize(
    "step",
    [("fs.chunks", 1), ("fs.chunks", 3), ("fs.files", 1)],
    ids=["first-batch", "last-batch", "files-document"],
)
async def test_an_upload_through_a_stepdown_is_stored_once(
    replica_set_3: ReplicaSet,
    monkeypatch: pytest.MonkeyPatch,
    how: str,
    step: tuple[str, int],
) -> None:
    """The primary steps down as an upload sends its first or last batch of
    chunks, or its files document: the insert is sent again (a retryable
    write), the file stored whole, once, no chunk left over."""
    async with uploading(replica_set_3, monkeypatch) as listener:
        upload = FoUpload(name="up")
        listener.arm("insert", *step)
        await upload.scan.async_put(UPLOADED if how == "bytes" else streamed())
        assert listener.stepped_down
        await upload.async_save()
        stored = await FoUpload.objects(name="up").async_get()
        assert await stored.scan.async_read() == UPLOADED
        assert await bucket(get_async_db(ALIAS)) == (2, 7)


class FoBulk(Document):
    n = IntField()
    blob = StringField()
    meta = {"db_alias": ALIAS}


BULK = 13  # documents of 4 MB: two batches of PyMongo's (48 MB a message)


SYNC = "failover-sync"  # a sync alias on the failover alias's database


@contextlib.contextmanager
def sync_alias(replica_set: ReplicaSet, listener: Any) -> Iterator[None]:
    """SYNC connected with MongoEngine's ``connect()`` to the failover alias's
    database, writing to a majority, with ``listener``."""
    mongoengine_async.connect(
        get_async_db(ALIAS).name,
        alias=SYNC,
        host=replica_set.uri,
        w="majority",
        serverSelectionTimeoutMS=30_000,
        uuidRepresentation="standard",
        event_listeners=[listener],
    )
    try:
        yield
    finally:
        mongoengine_async.disconnect(SYNC)


@pytest.mark.parametrize("kind", ["async_insert", "sync insert"])
async def test_an_insert_of_two_batches_through_a_stepdown_stores_each_once(
    replica_set_3: ReplicaSet, kind: str
) -> None:
    """The primary steps down as an insert of many documents sends its second
    batch: the batch is sent again (a retryable write), each document stored
    once, the ids of the instances those stored, ``post_bulk_insert`` sent
    once with the documents read back; ``async_insert`` as MongoEngine's
    ``insert()`` on a sync alias."""
    sent: list[list[Any]] = []

    def post_bulk_insert(sender: type, documents: Any, **kwargs: Any) -> None:
        sent.append([document.pk for document in documents])

    blob = "x" * (4 * 1024 * 1024)
    async with stepping_down(replica_set_3) as listener:
        await get_async_db(ALIAS).create_collection("fo_bulk")
        bulk = [FoBulk(n=n, blob=blob) for n in range(BULK)]
        signals.post_bulk_insert.connect(post_bulk_insert)
        try:
            if kind == "async_insert":
                listener.arm("insert", "fo_bulk", 2)
                loaded = await FoBulk.objects.async_insert(bulk)
            else:
                with sync_alias(replica_set_3, listener):
                    with switch_db(FoBulk, SYNC) as cls:
                        listener.arm("insert", "fo_bulk", 2)
                        loaded = cls.objects.insert(bulk)
        finally:
            signals.post_bulk_insert.disconnect(post_bulk_insert)
        assert listener.stepped_down
        stored = await FoBulk.objects.only("n").order_by("n").async_to_list()
    ids = [document.pk for document in bulk]
    assert [(each.n, each.pk) for each in stored] == list(enumerate(ids))
    assert [document.pk for document in loaded] == ids
    assert not any(document._created for document in bulk)
    assert sent == [ids]


@pytest.mark.parametrize("step", ["insert", "update"])
async def test_a_save_through_a_stepdown_is_applied_once(
    replica_set_3: ReplicaSet, step: str
) -> None:
    """The primary steps down as a save inserts a new document or sets a
    changed field: the write is sent again, applied once, the instance saved
    (not new, no change left), ``post_save`` sent once."""
    sent: list[tuple[Any, bool]] = []

    async def post_save(sender: type, document: Any, **kwargs: Any) -> None:
        sent.append((document.pk, kwargs["created"]))

    async with stepping_down(replica_set_3) as listener:
        entry = FoEntry(name="saved", amount=1)
        if step == "update":
            await entry.async_save()
            entry.amount = 2
        listener.arm(step, "fo_entry")
        signals.post_save.connect(post_save)
        try:
            await entry.async_save()
        finally:
            signals.post_save.disconnect(post_save)
        assert listener.stepped_down
        stored = await FoEntry.objects.as_pymongo().async_to_list()
    assert stored == [{"_id": entry.pk, "name": "saved", "amount": entry.amount}]
    assert (entry._created, entry._get_changed_fields()) == (False, [])
    assert sent == [(entry.pk, step == "insert")]


@pytest.mark.parametrize(
    ("op", "command"),
    [
        ("save_condition", "update"),
        ("document modify", "findAndModify"),
        ("queryset modify", "findAndModify"),
        ("upsert_one", "update"),
        ("update_one", "update"),
        ("update upsert", "update"),
    ],
)
async def test_a_conditional_write_through_a_stepdown_is_applied_once(
    replica_set_3: ReplicaSet, op: str, command: str
) -> None:
    """The primary steps down as a conditional or incrementing write is sent:
    it is sent again (a retryable write) and applied once. A queryset's
    ``async_update`` (of many documents, as MongoEngine's ``update()``) is no
    retryable write: it raises the election's error, not applied."""
    async with stepping_down(replica_set_3) as listener:
        entry = await FoEntry(name="kept", amount=1).async_save()
        listener.arm(command, "fo_entry")
        if op == "save_condition":
            entry.amount = 2
            await entry.async_save(save_condition={"amount": 1})
        elif op == "document modify":
            assert await entry.async_modify(query={"amount": 1}, inc__amount=1)
        elif op == "queryset modify":
            await FoEntry.objects(amount=1).async_modify(inc__amount=1)
        elif op == "upsert_one":
            await FoEntry.objects(name="new").async_upsert_one(inc__amount=2)
            await FoEntry.objects(name="kept").async_update_one(inc__amount=1)
        elif op == "update_one":
            assert await FoEntry.objects(name="kept").async_update_one(inc__amount=1)
        else:
            with pytest.raises(pymongo.errors.NotPrimaryError):
                await FoEntry.objects(name="kept").async_update(
                    inc__amount=1, upsert=True
                )
        assert listener.stepped_down
        stored = {e.name: e.amount async for e in FoEntry.objects}
    expected = {"upsert_one": {"kept": 2, "new": 2}, "update upsert": {"kept": 1}}
    assert stored == expected.get(op, {"kept": 2})


@pytest.mark.parametrize("form", ["context manager", "callback"])
async def test_a_file_put_on_another_client_in_a_transaction_stepped_down_at_commit(
    replica_set_3: ReplicaSet, form: str
) -> None:
    """A block puts a file on another client (outside the transaction) and
    saves two documents; the primary steps down as it commits: the block
    raises, no document written, the file deleted (no chunk left), the proxy
    empty again; the callback runs again: the documents stored once, their
    file the only one."""
    async with (
        stepping_down(replica_set_3) as listener,
        files_on(replica_set_3, "other") as files_db,
    ):
        await get_async_db(ALIAS).create_collection("fo_far_upload")
        entry = await FoEntry(name="entry", amount=1).async_save()
        far = FoFarUpload(name="far")

        async def block() -> None:
            await far.scan.async_put(UPLOADED)
            await far.async_save()
            entry.amount = 2
            await entry.async_save()

        listener.arm("commitTransaction")
        error = await stepped_down_in(listener, form, block)
        deadline = time.monotonic() + 30  # (an abort deletes the upload in a task)
        while mongoengine_async.gridfs._aborted_uploads:
            assert time.monotonic() < deadline
            await asyncio.sleep(0.05)
        stored = await FoFarUpload.objects.async_scalar("scan")
        amounts = await FoEntry.objects.async_scalar("amount")
        files = await files_db["fs.files"].distinct("_id")
        chunks = await files_db["fs.chunks"].distinct("files_id")
        if form == "callback":
            assert error is None
            assert [each.grid_id for each in stored] == [far.scan.grid_id]
            assert (amounts, files, chunks) == ([2], [far.scan.grid_id], files)
            assert await bucket(files_db) == (1, 6)
        else:
            assert is_transient(error)
            assert (stored, amounts, far.scan.grid_id) == ([], [1], None)
            assert await bucket(files_db) == (0, 0)


async def test_an_upload_failing_through_two_stepdowns_leaves_no_chunk(
    replica_set_3: ReplicaSet, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The primary steps down as an upload sends its second batch of chunks,
    and the next one as that insert is sent again: the upload raises the
    election's error, its proxy empty, and none of its chunks is left."""
    monkeypatch.setattr(mongoengine_async.gridfs, "UPLOAD_BATCH_BYTES", 2 * CHUNK)
    listener = StepDownTwice(replica_set_3, ("insert", "fs.chunks", 1))
    async with majority_alias(replica_set_3, listener, ["fs.files", "fs.chunks"]):
        await FoUpload(name="first").scan.async_put(b"first")
        upload = FoUpload(name="up")
        listener.arm("insert", "fs.chunks", 2)
        with pytest.raises(PyMongoError):
            await upload.scan.async_put(UPLOADED)
        assert listener.twice and listener.stepped_down
        assert upload.scan.grid_id is None
        assert await bucket(get_async_db(ALIAS)) == (1, 1)


@pytest.mark.parametrize("form", ["context manager", "callback"])
@pytest.mark.parametrize("step", ["insert", "commitTransaction"])
async def test_an_insert_in_a_transaction_through_a_stepdown(
    replica_set_3: ReplicaSet, form: str, step: str
) -> None:
    """The primary steps down as ``async_insert`` in a transaction inserts or
    commits: the block raises, nothing stored, the documents new again (their
    ids kept): inserted again, each is stored once; the callback runs again,
    each document stored once, under the id it holds."""
    async with stepping_down(replica_set_3) as listener:
        entries = [FoEntry(name=f"entry {n}", amount=n) for n in range(3)]

        async def block() -> None:
            await FoEntry.objects.async_insert(entries, load_bulk=False)

        listener.arm(step, None if step == "commitTransaction" else "fo_entry")
        error = await stepped_down_in(listener, form, block)
        if form == "context manager":
            assert is_transient(error)
            assert await FoEntry.objects.async_count() == 0
            assert all(entry._created for entry in entries)
            await FoEntry.objects.async_insert(entries, load_bulk=False)
        else:
            assert error is None
        stored = await FoEntry.objects.order_by("amount").async_scalar("id")
    assert stored == [entry.pk for entry in entries]
    assert not any(entry._created for entry in entries)


class FoIndexed(Document):
    name = StringField(unique=True)
    meta = {"db_alias": ALIAS, "indexes": ["-name"]}


@pytest.mark.parametrize("first", ["save", "upload"])
async def test_the_first_write_creating_indexes_through_a_stepdown(
    replica_set_3: ReplicaSet, first: str
) -> None:
    """The primary steps down as the first save of a class creates its
    ``meta`` indexes, or the first upload into a bucket its indexes (the
    package's own steps before the write, no retryable write): they are sent
    again, the write goes through, stored once, with its indexes. Before, the
    caller got the election's error from a write it never sent."""
    listener = StepDownBefore(replica_set_3)
    async with majority_alias(replica_set_3, listener, ["fo_indexed"]):
        db = get_async_db(ALIAS)
        if first == "save":
            listener.arm("createIndexes", "fo_indexed")
            indexed = await FoIndexed(name="first").async_save()
            assert listener.stepped_down
            assert await FoIndexed.objects.async_scalar("id") == [indexed.pk]
            index_keys = [
                dict(index["key"]) async for index in await db.fo_indexed.list_indexes()
            ]
            assert {"name": 1} in index_keys and {"name": -1} in index_keys
        else:
            upload = FoUpload(name="first")
            listener.arm("createIndexes", "fs.chunks")
            await upload.scan.async_put(UPLOADED)
            assert listener.stepped_down
            assert await upload.scan.async_read() == UPLOADED
            assert await bucket(db) == (1, 6)
            chunk_indexes = await db["fs.chunks"].index_information()
            assert chunk_indexes["files_id_1_n_1"]["unique"]


class FoCapped(Document):
    name = StringField()
    meta = {"db_alias": ALIAS, "max_size": 1_000_000}


async def test_the_first_write_creating_a_capped_collection_through_a_stepdown(
    replica_set_3: ReplicaSet,
) -> None:
    """The primary steps down as the first save of a capped class creates its
    collection (no retryable write): the creation is tried again, the
    document stored once in a capped collection."""
    listener = StepDownBefore(replica_set_3)
    async with majority_alias(replica_set_3, listener, []):
        listener.arm("create", "fo_capped")
        capped = await FoCapped(name="first").async_save()
        assert listener.stepped_down
        assert await FoCapped.objects.async_scalar("id") == [capped.pk]
        options = await get_async_db(ALIAS).fo_capped.options()
        assert (options["capped"], options["size"]) == (True, 1_000_192)


# A reply saying the write applied but its write concern failed, as PyMongo
# retries (the retry then finds the primary stepped down).
APPLIED_THEN_LOST = {
    "code": 91,
    "errmsg": "Replication is being shut down",
    "errorLabels": ["RetryableWriteError"],
}


@pytest.mark.parametrize("step", ["insert", "update", "upload"])
async def test_a_write_applied_whose_retry_meets_a_stepdown(
    replica_set_3: ReplicaSet, monkeypatch: pytest.MonkeyPatch, step: str
) -> None:
    """A save's write applies but its reply is an error PyMongo retries, and
    the primary steps down as the retry is sent: the save raises, the
    instance keeps what it would send (new, with the id it was stored under;
    its change), no ``post_save``; saved again, it is stored once, one
    ``post_save``. An upload in the same case raises and leaves no chunk."""
    sent: list[bool] = []

    async def post_save(sender: type, document: Any, **kwargs: Any) -> None:
        sent.append(kwargs["created"])

    async with uploading(replica_set_3, monkeypatch) as listener:
        entry = FoEntry(name="saved", amount=1)
        if step == "update":
            await entry.async_save()
            entry.amount = 2
        command, collection = (
            ("insert", "fs.chunks") if step == "upload" else (step, "fo_entry")
        )
        primary = replica_set_3.wait_for_primary()
        listener.arm(command, collection, nth=2)
        signals.post_save.connect(post_save, sender=FoEntry)
        try:
            with (
                failing(
                    primary,
                    failCommands=[command],
                    writeConcernError=APPLIED_THEN_LOST,
                ),
                pytest.raises(PyMongoError),
            ):
                if step == "upload":
                    await FoUpload(name="up").scan.async_put(UPLOADED)
                else:
                    await entry.async_save()
            assert listener.stepped_down
            if step == "upload":
                assert await bucket(get_async_db(ALIAS)) == (1, 1)
                return
            stored = await FoEntry.objects.as_pymongo().async_to_list()
            applied = {"_id": entry.pk, "name": "saved", "amount": entry.amount}
            assert (stored, sent) == ([applied], [])
            changes = [] if step == "insert" else ["amount"]
            assert (entry._created, entry._get_changed_fields()) == (
                step == "insert",
                changes,
            )
            await entry.async_save()
        finally:
            signals.post_save.disconnect(post_save, sender=FoEntry)
        stored = await FoEntry.objects.as_pymongo().async_to_list()
    assert stored == [{"_id": entry.pk, "name": "saved", "amount": entry.amount}]
    assert (entry._created, entry._get_changed_fields()) == (False, [])
    assert sent == [step == "insert"]
