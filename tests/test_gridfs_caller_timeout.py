"""The files of documents deleted outside a transaction under the caller's
``pymongo.timeout()``: once the documents are gone, the deletes of their files
are not cut by it (they would be left, found by nothing); the call still
raises its time-out error, and a file's delete failing in time its error
(the failCommand fail point: tests of a server of their own)."""

from __future__ import annotations

import asyncio
import gc
import time
import weakref
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any
from uuid import uuid4

import pymongo
import pymongo.errors
import pytest
from mongoengine.connection import DEFAULT_CONNECTION_NAME
from mongoengine.errors import OperationError

from conftest import Held, held_on_server, post_deletes, receiving
from mongoengine_async import (
    CASCADE,
    Document,
    FileField,
    ListField,
    ReferenceField,
    StringField,
    connect_async,
    context,
    disconnect_all_async,
    disconnect_async,
    get_async_connection,
    get_async_db,
    signals,
)
from mongoengine_async._compat import outside_caller_timeout
from mongoengine_async.testing import fresh_database

FILES = "gfs-timeout-files"
APP = "gfs-timeout-app"


class ToPaper(Document):
    title = StringField()
    pdf = FileField(db_alias=FILES)
    cover = FileField(db_alias=FILES)
    scans = ListField(FileField(db_alias=FILES))


class ToShelf(Document):
    title = StringField()


class ToLeaf(Document):  # deleted with its shelf, by the CASCADE rule
    shelf = ReferenceField(ToShelf, reverse_delete_rule=CASCADE)
    pdf = FileField(db_alias=FILES)
    cover = FileField(db_alias=FILES)


class ToFiled(Document):  # a file of its own, and leaves of CASCADE with theirs
    pdf = FileField(db_alias=FILES)


class ToFiledLeaf(Document):
    root = ReferenceField(ToFiled, reverse_delete_rule=CASCADE)
    pdf = FileField(db_alias=FILES)


@pytest.fixture
async def files_alias(async_alias: str, mongodb_uri: str) -> AsyncIterator[str]:
    """The files' alias: a client of its own (its application name the fail
    points hold the commands of)."""
    async with fresh_database(FILES, mongodb_uri, appname=FILES) as alias:
        yield alias


@pytest.fixture
async def reported() -> AsyncIterator[list[dict[str, Any]]]:
    """The reports of the loop's exception handler during the test."""
    reports: list[dict[str, Any]] = []
    loop = asyncio.get_running_loop()
    loop.set_exception_handler(lambda _, report: reports.append(report))
    yield reports
    loop.set_exception_handler(None)


async def left() -> list[int]:
    """How many files and chunks the files' database holds."""
    db = get_async_db(FILES)
    return [await db[name].count_documents({}) for name in ("fs.files", "fs.chunks")]


async def emptied() -> list[int]:
    """:func:`left` once nothing is (the held deletes went on), or after 30
    seconds."""
    deadline = time.monotonic() + 30
    while any(counts := await left()) and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    return counts


async def with_files(document: Any) -> Any:
    """``document`` saved with its pdf, cover (and scans, if it has them)."""
    await document.pdf.async_put(b"the pdf")
    await document.cover.async_put(b"the cover")
    if hasattr(document, "scans"):
        for page in (b"page 1", b"page 2"):
            document.scans.append(await ToPaper.scans.field.async_put(page))
    return await document.async_save()


async def document_delete() -> Callable[[], Awaitable[Any]]:
    paper = await with_files(ToPaper(title="one"))
    await with_files(ToPaper(title="kept"))
    return paper.async_delete


async def queryset_delete() -> Callable[[], Awaitable[Any]]:
    for title in ("one", "two"):
        await with_files(ToPaper(title=title))
    return ToPaper.objects.async_delete


async def cascade_delete() -> Callable[[], Awaitable[Any]]:
    shelf = await ToShelf(title="shelf").async_save()
    for _ in range(2):
        await with_files(ToLeaf(shelf=shelf))
    return shelf.async_delete


async def queryset_cascade_delete() -> Callable[[], Awaitable[Any]]:
    shelf = await ToShelf(title="shelf").async_save()
    for _ in range(2):
        await with_files(ToLeaf(shelf=shelf))
    return ToShelf.objects.async_delete


# Each case saves its documents and files, and gives the delete to run.
DELETES: dict[str, Callable[[], Awaitable[Callable[[], Awaitable[Any]]]]] = {
    "document": document_delete,
    "queryset": queryset_delete,
    "cascade": cascade_delete,
    "queryset cascade": queryset_cascade_delete,
}


async def documents_left() -> int:
    """How many papers, shelves and leaves are left."""
    return sum([await cls.objects.async_count() for cls in (ToPaper, ToShelf, ToLeaf)])


async def files_of_the_kept(delete: str) -> list[int]:
    """:func:`left` once it is what the documents kept hold (the case
    "document" keeps a paper: four files, one chunk each), or after 30
    seconds."""
    expected = [4, 4] if delete == "document" else [0, 0]
    deadline = time.monotonic() + 30
    while (counts := await left()) != expected and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    return counts


@pytest.mark.parametrize("delete", list(DELETES))
async def test_files_outlive_the_callers_timeout(
    files_alias: str, reported: list[dict[str, Any]], delete: str
) -> None:
    """The first delete of a file held on the server beyond the caller's
    ``pymongo.timeout()``: the call raises NetworkTimeout (as it did), and
    the deletes of the files go on outside it: none of the deleted
    documents' is left (all were, orphaned), and nothing is reported."""
    deleting = await DELETES[delete]()
    async with held_on_server(FILES, "delete", 1_500) as held:
        with pytest.raises(pymongo.errors.NetworkTimeout), pymongo.timeout(1):
            await deleting()
        await held.ended_on_server()
    assert await documents_left() == (1 if delete == "document" else 0)
    assert await files_of_the_kept(delete) == kept_files(delete)
    assert reported == []


def kept_files(delete: str, more: int = 0) -> list[int]:
    """The files and chunks left after case ``delete``: those of the paper it
    keeps (four, one chunk each), and ``more``."""
    kept = 4 if delete == "document" else 0
    return [kept + more, kept + more]


@pytest.mark.parametrize("seconds", [None, 30.0])
@pytest.mark.parametrize("delete", list(DELETES))
async def test_a_files_delete_failing_in_time_raises_its_error(
    files_alias: str, reported: list[dict[str, Any]], delete: str, seconds: Any
) -> None:
    """The first delete of a file fails at once (under a ``pymongo.timeout()``
    not spent, as under none): the call raises its error, that file alone is
    left (the others deleted all the same), and nothing is reported."""
    deleting = await DELETES[delete]()
    with pytest.raises(pymongo.errors.OperationFailure) as error:
        async with held_on_server(FILES, "delete", 0, error_code=2):
            with pymongo.timeout(seconds):
                await deleting()
    assert error.value.code == 2
    assert await documents_left() == (1 if delete == "document" else 0)
    assert await left() == kept_files(delete, 1)
    assert reported == []


@pytest.fixture
async def one_app(mongodb_uri: str) -> AsyncIterator[str]:
    """The default alias and the files' on clients of one application name
    (one fail point holds the documents' delete, then a file's)."""
    async with (
        fresh_database(DEFAULT_CONNECTION_NAME, mongodb_uri, appname=APP),
        fresh_database(FILES, mongodb_uri, appname=APP, connectTimeoutMS=19_000),
    ):
        yield APP


# (A cascade's own transaction, cancelled, aborts: its documents stay.)
@pytest.mark.parametrize("delete", ["document", "queryset"])
async def test_a_cancelled_deletes_files_outlive_its_timeout(
    one_app: str, reported: list[dict[str, Any]], delete: str
) -> None:
    """The caller, under a ``pymongo.timeout()``, cancelled while its delete
    is held on the server: the files' deletes that follow it, one held too,
    beyond that time-out, go on outside it (they started under it, spent,
    and the files were left, found by nothing), and nothing is reported."""
    deleting = await DELETES[delete]()

    async def run() -> None:
        with pymongo.timeout(2):
            await deleting()

    # (The documents' delete, then a file's, each held 1.2 s: beyond the 2.)
    async with held_on_server(one_app, "delete", 1_200, then="delete") as held:
        task = asyncio.ensure_future(run())
        await held.reached_server()
        task.cancel()
        await asyncio.wait([task])
        assert task.cancelled()
        admin = get_async_db().client.admin
        await Held(admin, one_app, ["delete"], 0).ended_on_server()
    assert await documents_left() == (1 if delete == "document" else 0)
    assert await files_of_the_kept(delete) == kept_files(delete)
    assert reported == []


class SpendsTheBudget(pymongo.monitoring.CommandListener):
    """Once a delete of documents got its reply, blocks until the caller's
    ``pymongo.timeout()`` is spent: the delete returned (or failed on the
    server), having taken the whole budget, before the steps after it."""

    def started(self, event: Any) -> None:
        pass

    def succeeded(self, event: Any) -> None:
        if event.command_name == "delete":
            while (left := pymongo._csot.remaining()) is not None and left > 0:
                time.sleep(0.01)

    def failed(self, event: Any) -> None:
        pass


@pytest.fixture
async def spent_by_the_delete(mongodb_uri: str) -> AsyncIterator[str]:
    """The default alias (application name :data:`APP`), whose deletes spend
    the caller's time-out, and the files' alias."""
    async with (
        fresh_database(
            DEFAULT_CONNECTION_NAME,
            mongodb_uri,
            appname=APP,
            event_listeners=[SpendsTheBudget()],
        ),
        fresh_database(FILES, mongodb_uri),
    ):
        yield APP


@pytest.mark.parametrize("delete", ["document", "queryset"])
async def test_a_budget_spent_before_the_files_raises_execution_timeout(
    spent_by_the_delete: str, reported: list[dict[str, Any]], delete: str
) -> None:
    """The documents' delete returns with the caller's ``pymongo.timeout()``
    spent: the call raises ExecutionTimeout (code 50, a time-out: what
    PyMongo raised when the first file's delete found it spent), and the
    files of the deleted documents are deleted all the same, beyond it."""
    deleting = await DELETES[delete]()
    with pytest.raises(pymongo.errors.ExecutionTimeout) as error:
        with pymongo.timeout(0.5):
            await deleting()
    assert error.value.code == 50 and error.value.timeout
    assert "ran out before the delete of the files" in str(error.value)
    assert await documents_left() == (1 if delete == "document" else 0)
    assert await files_of_the_kept(delete) == kept_files(delete)
    assert reported == []


# The delete's error: a document's as MongoEngine wraps it.
FAILED_DELETE = {
    "document": OperationError,
    "queryset": pymongo.errors.WriteConcernError,
}


@pytest.mark.parametrize("delete", list(FAILED_DELETE))
async def test_reads_after_a_failed_delete_outlive_the_callers_timeout(
    spent_by_the_delete: str, reported: list[dict[str, Any]], delete: str
) -> None:
    """A delete applied but failing on the server (a write concern error) as
    it spends the caller's ``pymongo.timeout()``: the call raises that
    error, and the reads after it (which documents are gone) run beyond the
    time-out: the files of the deleted documents are deleted (those reads,
    cut short by it, kept them all, orphaned)."""
    deleting = await DELETES[delete]()
    admin = get_async_db().client.admin
    fail_point = {"configureFailPoint": "failCommand"}
    await admin.command(
        {
            **fail_point,
            "mode": {"times": 1},
            "data": {
                "failCommands": ["delete"],
                "appName": spent_by_the_delete,
                "writeConcernError": {"code": 64, "errmsg": "replication timed out"},
            },
        }
    )
    try:
        with pytest.raises(FAILED_DELETE[delete]), pymongo.timeout(0.5):
            await deleting()
    finally:
        await admin.command({**fail_point, "mode": "off"})
    assert await documents_left() == (1 if delete == "document" else 0)
    assert await files_of_the_kept(delete) == kept_files(delete)
    assert reported == []


@pytest.mark.parametrize("end", ["asyncio.run", "disconnect_async"])
def test_the_end_waits_for_the_files_past_the_timeout(
    mongodb_uri: str, end: str
) -> None:
    """A document delete whose first file's delete is held on the server
    beyond the caller's ``pymongo.timeout()``, in ``asyncio.run()``: the
    call raises NetworkTimeout and returns; the loop's end (or first the
    ``disconnect_async`` of the files' alias) waits for the files' deletes
    that go on: none is left (a client closed under them left them,
    orphaned)."""
    database = OwnDatabase(mongodb_uri)

    async def main() -> None:
        await database.connect()
        await database.timed_out_delete(await document_delete())
        if end == "disconnect_async":
            await disconnect_async(FILES)

    asyncio.run(main())
    assert asyncio.run(database.files_left()) == [1, 4, 4]  # (the paper, its files)


class OwnDatabase:
    """A database of its own for a test running its loops itself, whose files'
    alias has an application name of its own (of the commands held)."""

    def __init__(self, mongodb_uri: str) -> None:
        self.uri = mongodb_uri
        self.name = f"test_{uuid4().hex[:12]}"
        self.apps = {
            alias: f"{alias}-{uuid4().hex[:8]}" for alias in ("default", FILES)
        }

    async def connect(self) -> Any:
        """Connect both aliases in the running loop; the default's admin."""
        for alias, app in self.apps.items():
            await connect_async(
                self.name,
                alias,
                host=self.uri,
                appname=app,
                uuidRepresentation="standard",
            )
        return get_async_connection().admin

    async def timed_out_delete(self, deleting: Callable[[], Awaitable[Any]]) -> None:
        """``await deleting()``, its first file's delete held 1.5 s on the
        server, under a ``pymongo.timeout(0.5)``: NetworkTimeout."""
        await get_async_connection().admin.command(
            {
                "configureFailPoint": "failCommand",
                "mode": {"times": 1},
                "data": {
                    "failCommands": ["delete"],
                    "appName": self.apps[FILES],
                    "blockConnection": True,
                    "blockTimeMS": 1_500,
                },
            }
        )
        with pytest.raises(pymongo.errors.NetworkTimeout), pymongo.timeout(0.5):
            await deleting()

    async def files_left(self) -> list[int]:
        """Once the held delete ended: the documents, files and chunks left;
        then the database dropped, every alias disconnected."""
        admin = await self.connect()
        await Held(admin, self.apps[FILES], ["delete"], 0).ended_on_server()
        await admin.command({"configureFailPoint": "failCommand", "mode": "off"})
        try:
            return [await documents_left(), *await left()]
        finally:
            await get_async_connection().drop_database(self.name)
            await disconnect_all_async()


def test_a_loop_closed_by_hand_lets_go_of_the_files_past_the_timeout(
    mongodb_uri: str,
) -> None:
    """A document delete whose first file's delete is held on the server
    beyond the caller's ``pymongo.timeout()``, in a loop closed by hand
    (``loop.close()`` alone) before the files' deletes ended: they never end
    (reported), and the deleted document, its files' proxies and their task
    are let go of once that loop's clients are (collected): the note of the
    files deleted past the time-out kept them for good."""
    database = OwnDatabase(mongodb_uri)
    papers: list[weakref.ref[Any]] = []

    async def main() -> None:
        await database.connect()
        deleting = await document_delete()
        papers.append(weakref.ref(deleting.__self__))
        await database.timed_out_delete(deleting)

    loop = asyncio.new_event_loop()
    loop.run_until_complete(main())
    loop.close()
    asyncio.run(database.files_left())  # (a client of the next loop lets go)
    gc.collect()
    assert [paper() for paper in papers] == [None]


class FileDeletes(pymongo.monitoring.CommandListener):
    """The ids of the files documents whose delete the files' client sent, and
    how many of its deletes (of files documents, of chunks) succeeded."""

    def __init__(self) -> None:
        self.ids: list[Any] = []
        self.ended = 0

    def started(self, event: Any) -> None:
        if event.command_name == "delete" and event.command["delete"] == "fs.files":
            self.ids += [repr(each["q"]) for each in event.command["deletes"]]

    def succeeded(self, event: Any) -> None:
        if event.command_name == "delete":
            self.ended += 1

    def failed(self, event: Any) -> None:
        pass


@pytest.mark.parametrize("delete", ["document", "queryset"])
async def test_a_caller_cancelled_past_its_timeout_deletes_each_file_once(
    async_alias: str, mongodb_uri: str, reported: list[dict[str, Any]], delete: str
) -> None:
    """The caller, under a ``pymongo.timeout()``, cancelled while the first
    file's delete is held on the server: the files' deletes that went on
    beyond that time-out finish them, and the steps its cancellation leaves
    (a follow-up) wait for them: each file's delete is sent once (the
    follow-up sent that file's again meanwhile), none is left."""
    listener = FileDeletes()
    async with fresh_database(
        FILES, mongodb_uri, appname=FILES, event_listeners=[listener]
    ):
        deleting = await DELETES[delete]()

        async def run() -> None:
            with pymongo.timeout(60):
                await deleting()

        # (A post_delete receiver makes a queryset's delete one by one.)
        senders = [ToPaper] if delete == "document" else []
        with post_deletes(*senders) as sent:
            async with held_on_server(FILES, "delete", 3_000) as held:
                task = asyncio.ensure_future(run())
                await held.reached_server()
                task.cancel()
                await asyncio.wait([task])
                assert task.cancelled()
                await held.ended_on_server()
            assert await files_of_the_kept(delete) == kept_files(delete)
            deadline = time.monotonic() + 30
            while context.following and time.monotonic() < deadline:
                await asyncio.sleep(0.05)
        expected = 4 if delete == "document" else 8
        assert (len(listener.ids), len(set(listener.ids))) == (expected, expected)
        assert len(sent) == (1 if delete == "document" else 0)
    assert reported == []


class SpendsOnFailure(pymongo.monitoring.CommandListener):
    """Once a delete failed, the next delete to start blocks until ``until``
    (the caller's deadline) passed: the caller's ``pymongo.timeout()`` runs
    out as the deletes after that one go on, the failure met by then (not
    in ``failed``: the loop's timer may fire before the error is handled)."""

    until: float | None = None
    failure = False

    def started(self, event: Any) -> None:
        if event.command_name == "delete" and self.failure and self.until:
            while time.monotonic() <= self.until:
                time.sleep(0.01)

    def succeeded(self, event: Any) -> None:
        pass

    def failed(self, event: Any) -> None:
        self.failure = self.failure or event.command_name == "delete"


@pytest.mark.parametrize("delete", list(DELETES))
async def test_a_files_delete_failing_before_the_timeout_ran_out_raises_its_error(
    async_alias: str, mongodb_uri: str, reported: list[dict[str, Any]], delete: str
) -> None:
    """The first delete of a file fails at once, and the caller's
    ``pymongo.timeout()`` runs out as the others go on: the call raises that
    error, as when they all end in time (it raised NetworkTimeout, and that
    error went to the loop's exception handler); the others are deleted, that
    file alone left, and nothing is reported."""
    listener = SpendsOnFailure()
    async with fresh_database(
        FILES, mongodb_uri, appname=FILES, event_listeners=[listener]
    ):
        deleting = await DELETES[delete]()
        with pytest.raises(pymongo.errors.OperationFailure) as error:
            async with held_on_server(FILES, "delete", 0, error_code=2):
                with pymongo.timeout(2):
                    listener.until = pymongo._csot.get_deadline()
                    await deleting()
        assert error.value.code == 2
        deadline = time.monotonic() + 30  # (the deletes going on)
        while context.following and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        assert await documents_left() == (1 if delete == "document" else 0)
        assert await left() == kept_files(delete, 1)
    assert reported == []


async def test_post_delete_follows_the_files_past_the_timeout(
    async_alias: str, mongodb_uri: str, reported: list[dict[str, Any]]
) -> None:
    """A document delete whose first file's delete is held on the server
    beyond the caller's ``pymongo.timeout()``: the call raises NetworkTimeout
    with no ``post_delete`` sent yet (a receiver would see the files still
    there); it is sent once, after every file's delete ended."""
    listener = FileDeletes()
    async with fresh_database(
        FILES, mongodb_uri, appname=FILES, event_listeners=[listener]
    ):
        deleting = await document_delete()
        ended: list[int] = []  # (the files' deletes ended, at each post_delete)

        def post(sender: Any, document: Any, **kwargs: Any) -> None:
            ended.append(listener.ended)

        with receiving(signals.post_delete, post, ToPaper):
            async with held_on_server(FILES, "delete", 1_500) as held:
                with pytest.raises(pymongo.errors.NetworkTimeout):
                    with pymongo.timeout(1):
                        await deleting()
                assert ended == []
                await held.ended_on_server()
            deadline = time.monotonic() + 30
            while not ended and time.monotonic() < deadline:
                await asyncio.sleep(0.05)
        assert await left() == kept_files("document")
        assert ended == [listener.ended] and listener.ended >= 8
    assert reported == []


async def test_a_caller_cancelled_as_the_steps_fail_leaves_their_error_reported(
    files_alias: str, reported: list[dict[str, Any]]
) -> None:
    """A document delete under a ``pymongo.timeout()`` whose steps after it
    (its files' deletes, ``post_delete``) fail as its caller is cancelled (a
    receiver cancels it, then raises): the call is cancelled, and that error
    goes to the loop's exception handler (it was never retrieved: asyncio
    reported it only if the task was collected, as "never retrieved")."""
    paper = await with_files(ToPaper(title="one"))
    caller: asyncio.Future[None] | None = None

    def post(sender: Any, document: Any, **kwargs: Any) -> None:
        assert caller is not None
        caller.cancel()
        raise ValueError("the receiver's error")

    async def run() -> None:
        with pymongo.timeout(30):
            await paper.async_delete()

    with receiving(signals.post_delete, post, ToPaper):
        caller = asyncio.ensure_future(run())
        await asyncio.wait([caller])
    assert caller.cancelled()
    await asyncio.sleep(0)  # (the report, a callback of the done task)
    gc.collect()  # (a task never retrieved is reported once collected)
    assert [(each["message"], repr(each.get("exception"))) for each in reported] == [
        (
            "The delete of the files of deleted documents failed",
            repr(ValueError("the receiver's error")),
        )
    ]
    assert await left() == [0, 0]


@pytest.mark.parametrize("delete", ["document", "queryset"])
async def test_a_cascaded_files_error_wins_over_the_time_out(
    files_alias: str, reported: list[dict[str, Any]], delete: str
) -> None:
    """A cascade whose leaf's file delete fails (held 2.5 s) within the
    caller's ``pymongo.timeout()`` of 4 s, then its root's (held as long)
    beyond it: the call raises the leaf's file's error (the time-out as its
    context), not NetworkTimeout in its place (that error was lost); the
    root's goes to the loop's exception handler. Both files are kept."""
    root = ToFiled()
    await root.pdf.async_put(b"the root's")
    await root.async_save()
    leaf = ToFiledLeaf(root=root)
    await leaf.pdf.async_put(b"the leaf's")
    await leaf.async_save()
    deleting = (
        root.async_delete if delete == "document" else ToFiled.objects.async_delete
    )
    async with held_on_server(FILES, "delete", 2_500, 2, then="delete") as held:
        with pytest.raises(pymongo.errors.OperationFailure) as error:
            with pymongo.timeout(4):
                await deleting()
        await held.ended_on_server()
    assert error.value.code == 2
    assert isinstance(error.value.__context__, pymongo.errors.NetworkTimeout)
    deadline = time.monotonic() + 30
    while not reported and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    assert [(each["message"], each["exception"].code) for each in reported] == [
        ("The delete of the files of deleted documents failed", 2)
    ]
    assert await left() == [2, 2]
    assert await ToFiled.objects.async_count() == 0
    assert await ToFiledLeaf.objects.async_count() == 0


async def test_a_receivers_own_delete_error_is_not_the_callers(
    async_alias: str, mongodb_uri: str, reported: list[dict[str, Any]]
) -> None:
    """A document delete under a ``pymongo.timeout()`` whose ``post_delete``
    receiver (sent from the task its files' deletes went on in) deletes
    another document outside that time-out (as a transaction's steps after
    its commit, or a task it starts, may), whose file's delete fails (the
    receiver handles that), then outlasts the time-out: the call raises
    NetworkTimeout, not that other delete's error (the errors the caller
    raises were collected from any file's delete of that task's context)."""
    listener = SpendsOnFailure()
    async with fresh_database(
        FILES, mongodb_uri, appname=FILES, event_listeners=[listener]
    ):
        paper = await with_files(ToPaper(title="one"))
        other = ToFiled()
        await other.pdf.async_put(b"the other's")
        await other.async_save()
        caught: list[int] = []
        release = asyncio.Event()

        async def post(sender: Any, document: Any, **kwargs: Any) -> None:
            with outside_caller_timeout():
                async with held_on_server(FILES, "delete", 0, error_code=2):
                    try:
                        await other.async_delete()
                    except pymongo.errors.OperationFailure as error:
                        caught.append(error.code)
            await release.wait()

        with receiving(signals.post_delete, post, ToPaper):
            with pytest.raises(pymongo.errors.PyMongoError) as error:
                with pymongo.timeout(4):
                    listener.until = pymongo._csot.get_deadline()
                    await paper.async_delete()
            release.set()
            deadline = time.monotonic() + 30  # (the receiver going on)
            while context.following and time.monotonic() < deadline:
                await asyncio.sleep(0.05)
        assert caught == [2]
        assert type(error.value) is pymongo.errors.NetworkTimeout
        assert await left() == [1, 1]  # (the other's file, its delete failed)
    assert reported == []


async def test_post_delete_past_the_files_runs_under_the_callers_timeout(
    files_alias: str, reported: list[dict[str, Any]]
) -> None:
    """A document delete under a ``pymongo.timeout()`` whose files' deletes
    end in time: its ``post_delete`` receiver (sent from the task they went
    on in) writes under that time-out, as a receiver of a delete with no
    file does and MongoEngine's on a sync alias: its write held on the
    server beyond it raises a time-out error (it ran under none, unbounded),
    and the call raises NetworkTimeout (the receiver ends once it raised: the
    two time-outs run out at once, and either may be seen first)."""
    filed = ToFiled()
    await filed.pdf.async_put(b"the pdf")
    await filed.async_save()
    errors: list[bool] = []
    raised = asyncio.Event()

    async def post(sender: Any, document: Any, **kwargs: Any) -> None:
        try:
            await get_async_db(FILES).audit.insert_one({"deleted": document.pk})
        except pymongo.errors.PyMongoError as error:
            errors.append(error.timeout)
        await raised.wait()

    with receiving(signals.post_delete, post, ToFiled):
        async with held_on_server(FILES, "insert", 6_000) as held:
            with pytest.raises(pymongo.errors.NetworkTimeout):
                with pymongo.timeout(4):
                    try:
                        await filed.async_delete()
                    finally:
                        raised.set()
            deadline = time.monotonic() + 30  # (the receiver going on)
            while context.following and time.monotonic() < deadline:
                await asyncio.sleep(0.05)
            await held.ended_on_server()
    assert errors == [True]
    assert await left() == [0, 0]
    assert reported == []
