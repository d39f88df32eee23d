"""A file's delete that fails on the server (the failCommand fail point:
tests of a server of their own): what is left, what a retry does, what is
raised and which signals are sent."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from typing import Any
from uuid import uuid4

import pytest
from pymongo import ReadPreference, monitoring
from pymongo.errors import (
    NotPrimaryError,
    OperationFailure,
    ServerSelectionTimeoutError,
    WriteConcernError,
)

import mongoengine_async.gridfs
import mongoengine_async.queryset as queryset_module
from conftest import (
    CancelAtAppliedCleanupRead,
    CancelAtCleanupRead,
    TaskCanceller,
    post_deletes,
)
from mongoengine_async import (
    CASCADE,
    NULLIFY,
    BinaryField,
    Document,
    FileField,
    ListField,
    OperationError,
    ReferenceField,
    StringField,
    UUIDField,
    connect_async,
    context,
    get_async_connection,
    signals,
)
from mongoengine_async.connection import disconnect_all_async
from mongoengine_async.testing import CommandLog, fresh_database

# InterruptedDueToReplStateChange: an error PyMongo retries a write on.
INTERRUPTED = 11602


class FdPaper(Document):
    pdf = FileField(collection_name="fd_files")


class FdRuledPaper(Document):
    name = StringField()
    pdf = FileField(collection_name="fd_files")


class FdShelf(Document):
    """Gives FdRuledPaper a delete rule."""

    paper = ReferenceField(FdRuledPaper, reverse_delete_rule=NULLIFY)


class FdBox(Document):
    name = StringField()


class FdLeaf(Document):
    """Deleted with its box, by the rule's filter (in runs of the ids of the
    leaves whose files were read)."""

    box = ReferenceField(FdBox, reverse_delete_rule=CASCADE)
    pdf = FileField(collection_name="fd_files")


class FdTray(Document):
    name = StringField()


class FdCard(Document):
    """Deleted with its tray; its id a UUID stored as a string."""

    id = UUIDField(primary_key=True, binary=False, default=uuid4)
    tray = ReferenceField(FdTray, reverse_delete_rule=CASCADE)


class FdChip(Document):
    """Deleted with its tray; its id bytes (a ``BinaryField``)."""

    id = BinaryField(primary_key=True, default=lambda: uuid4().bytes)
    tray = ReferenceField(FdTray, reverse_delete_rule=CASCADE)


class FdSlot(Document):
    """Deleted with its tray, after the cards (its delete may fail)."""

    tray = ReferenceField(FdTray, reverse_delete_rule=CASCADE)


# The alias of FdAlbum's files, on a server that answers no more.
GONE = "fd-gone"


class FdAlbum(Document):
    scans = ListField(FileField(db_alias=GONE, collection_name="fd_scans"))


@pytest.fixture
async def app(mongodb_uri: str) -> AsyncIterator[str]:
    """Alias "default" on a client with an application name of its own (the
    fixture's value), so that a fail point fails this test's commands only."""
    name = f"fd-{uuid4().hex[:8]}"
    try:
        async with fresh_database("default", mongodb_uri, appname=name):
            yield name
    finally:
        await disconnect_all_async()


@asynccontextmanager
async def failing(
    app_name: str, times: int, code: int = INTERRUPTED
) -> AsyncIterator[None]:
    """The next ``times`` deletes of chunks of client ``app_name`` fail with
    ``code``."""
    database = get_async_connection().get_database("admin")
    chunks = FdPaper._get_collection().database["fd_files.chunks"].full_name
    command = {"configureFailPoint": "failCommand"}
    data = {"failCommands": ["delete"], "errorCode": code, "namespace": chunks}
    await database.command(
        {**command, "mode": {"times": times}, "data": {**data, "appName": app_name}}
    )
    try:
        yield
    finally:
        await database.command({**command, "mode": "off"})


async def bucket() -> tuple[list, list]:
    """The ids of the files documents of the bucket, and the files_id of its chunks."""
    database = FdPaper._get_collection().database
    files = await database["fd_files.files"].distinct("_id")
    chunks = await database["fd_files.chunks"].distinct("files_id")
    return files, chunks


async def stored_paper() -> FdPaper:
    paper = FdPaper()
    await paper.pdf.async_put(b"contents", filename="a.pdf")
    return await paper.async_save()


async def with_files(documents: list[Any]) -> list[Any]:
    """Each of ``documents`` saved with a file of its own."""
    for number, document in enumerate(documents):
        await document.pdf.async_put(b"file %d" % number)
        await document.async_save()
    return documents


def in_runs_of_two(monkeypatch: pytest.MonkeyPatch) -> None:
    """Deletes send two listed ids a run: an ObjectId element is 12 bytes, a
    type and a short key."""
    monkeypatch.setattr(mongoengine_async.gridfs, "LISTED_IDS_BYTES", 2 * 21)


async def assert_files_of(documents: list[Any]) -> None:
    """GridFS holds the files (files documents and chunks) of ``documents``
    and no other."""
    files, chunks = await bucket()
    held = sorted(each.pdf.grid_id for each in documents)
    assert (sorted(files), sorted(chunks)) == (held, held)


async def test_a_retried_file_delete_deletes_the_chunks_left(app):
    """The chunks' delete failing (twice: PyMongo's error and our retry), the
    files document is gone, the chunks stay, and the proxy still holds the
    file: the retry deletes the chunks and returns, as the delete is done
    then. It raised NoFile (its files document was gone), the chunks left."""
    paper = await stored_paper()
    grid_id = paper.pdf.grid_id
    async with failing(app, times=2):
        with pytest.raises(NotPrimaryError) as raised:
            await paper.pdf.async_delete()
    assert raised.value.details["code"] == INTERRUPTED
    assert await bucket() == ([], [grid_id])
    assert paper.pdf.grid_id == grid_id
    await paper.pdf.async_delete()
    assert paper.pdf.grid_id is None
    assert await bucket() == ([], [])


@pytest.fixture
def deletes() -> Iterator[list[tuple[str, Any]]]:
    """The delete signals sent for FdPaper: (signal, document id)."""
    sent: list[tuple[str, Any]] = []

    def pre(sender: Any, document: Any, **kwargs: Any) -> None:
        sent.append(("pre_delete", document.pk))

    def post(sender: Any, document: Any, **kwargs: Any) -> None:
        sent.append(("post_delete", document.pk))

    signals.pre_delete.connect(pre, sender=FdPaper)
    signals.post_delete.connect(post, sender=FdPaper)
    try:
        yield sent
    finally:
        signals.pre_delete.disconnect(pre, sender=FdPaper)
        signals.post_delete.disconnect(post, sender=FdPaper)


async def test_a_document_delete_whose_file_delete_fails(app, deletes):
    """The document is gone when its file's delete fails: ``post_delete`` is
    sent (its receivers learn it is gone), then the error is raised; the
    file, orphaned, is deleted by the document's delete again. No
    ``post_delete`` was sent."""
    paper = await stored_paper()
    grid_id = paper.pdf.grid_id
    async with failing(app, times=2):
        with pytest.raises(NotPrimaryError):
            await paper.async_delete()
    assert await FdPaper.objects.async_count() == 0
    assert await bucket() == ([], [grid_id])
    assert deletes == [("pre_delete", paper.pk), ("post_delete", paper.pk)]
    await paper.async_delete()
    assert await bucket() == ([], [])
    assert deletes[2:] == [("pre_delete", paper.pk), ("post_delete", paper.pk)]


async def test_files_on_an_unreachable_server_wait_for_one_selection(
    app, mongodb_uri, caplog
):
    """A document's delete whose files' client reaches no server: the
    document is gone, and the first file's server selection timing out
    raises, the others of that client not tried (they would time out in
    turn: a delete cut short by its loop's end, whose end waits for its
    files, held it that long per file). Each was tried, one time-out each."""
    async with fresh_database(GONE, mongodb_uri, appname=app):
        album = FdAlbum()
        for number in range(3):
            scan = await FdAlbum.scans.field.async_put(b"scan %d" % number)
            album.scans.append(scan)
    await album.async_save()
    await connect_async(
        "fd",
        alias=GONE,
        host="mongodb://127.0.0.1:9",
        serverSelectionTimeoutMS=100,
        uuidRepresentation="standard",
    )
    with (
        caplog.at_level(logging.DEBUG, logger="pymongo.serverSelection"),
        pytest.raises(ServerSelectionTimeoutError),
    ):
        await album.async_delete()
    failed = [
        record
        for record in caplog.records
        if record.name == "pymongo.serverSelection"
        and "Server selection failed" in record.getMessage()
    ]
    assert len(failed) == 1
    assert await FdAlbum.objects.async_count() == 0


# A code the server fails a command with, which PyMongo does not retry.
FAILED = 96


@asynccontextmanager
async def deletes_failing(
    app_name: str, cls: type[Any], mode: dict, error: dict
) -> AsyncIterator[None]:
    """The deletes of ``cls`` documents by client ``app_name`` fail with
    ``error`` (the fail point's data: APPLIED, or an errorCode, not applied)
    as ``mode`` says (``{"skip": 1}``: all but the first; ``{"times": 1}``:
    the next)."""
    database = get_async_connection().get_database("admin")
    command = {"configureFailPoint": "failCommand"}
    data = {
        **error,
        "failCommands": ["delete"],
        "namespace": cls._get_collection().full_name,
        "appName": app_name,
    }
    await database.command({**command, "mode": mode, "data": data})
    try:
        yield
    finally:
        await database.command({**command, "mode": "off"})


def second_delete_failing(app_name: str, cls: type[Any]) -> Any:
    """The deletes of ``cls`` documents by ``app_name`` fail with FAILED but
    the first."""
    return deletes_failing(app_name, cls, {"skip": 1}, {"errorCode": FAILED})


@pytest.mark.parametrize("rules", [False, True])
async def test_a_delete_failing_in_a_later_run_deletes_the_files_of_the_earlier(
    app: str, monkeypatch: pytest.MonkeyPatch, rules: bool
) -> None:
    """A queryset delete (outside a transaction) whose listed ids go in runs,
    the second run's delete failing on the server: the first run's documents
    are gone, and so are their files, before the error is raised; the other
    documents stay with theirs. Those files were left, orphaned."""
    cls = FdRuledPaper if rules else FdPaper
    papers = await with_files(
        [cls(**({"name": "doomed"} if rules else {})) for _ in range(5)]
    )
    in_runs_of_two(monkeypatch)
    async with second_delete_failing(app, cls):
        with pytest.raises(OperationFailure) as raised:
            await cls.objects.async_delete(transaction=False)
    assert raised.value.code == FAILED
    left = sorted(paper.pk for paper in await cls.objects.async_to_list())
    assert left == sorted(paper.pk for paper in papers[2:])
    await assert_files_of(papers[2:])


async def test_a_cascade_failing_in_a_later_run_deletes_the_files_of_the_earlier(
    app: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A CASCADE outside a transaction deleting documents holding files by its
    filter, in runs of their ids, the second run's delete failing on the
    server: the first run's documents are gone, and so are their files,
    before the error is raised; the others stay with theirs (and their box,
    deleted after them, stays). Those files were left, orphaned."""
    box = await FdBox(name="box").async_save()
    leaves = await with_files([FdLeaf(box=box) for _ in range(5)])
    in_runs_of_two(monkeypatch)
    async with second_delete_failing(app, FdLeaf):
        with pytest.raises(OperationFailure) as raised:
            await FdBox.objects.async_delete(transaction=False)
    assert raised.value.code == FAILED
    assert [each.pk for each in await FdBox.objects.async_to_list()] == [box.pk]
    left = sorted(leaf.pk for leaf in await FdLeaf.objects.async_to_list())
    gone = {leaf.pk for leaf in leaves} - set(left)
    assert len(left) == 3 and len(gone) == 2
    await assert_files_of([leaf for leaf in leaves if leaf.pk in left])


class CancelAfterFirstDelete(monitoring.CommandListener):
    """Cancels ``task`` once the first delete of ``collection`` came back."""

    def __init__(self) -> None:
        self.task: asyncio.Future[Any] | None = None
        self.collection = ""
        self.deletes: set[int] = set()  # their request ids

    def started(self, event: monitoring.CommandStartedEvent) -> None:
        command = event.command
        if event.command_name == "delete" and command["delete"] == self.collection:
            self.deletes.add(event.request_id)

    def succeeded(self, event: monitoring.CommandSucceededEvent) -> None:
        if event.request_id in self.deletes and self.task is not None:
            self.task.cancel()  # its caller gone, the second run still to send
            self.task = None

    def failed(self, event: monitoring.CommandFailedEvent) -> None:
        pass


@pytest.mark.parametrize("rules", [False, True])
async def test_a_delete_whose_caller_was_cancelled_failing_in_a_later_run(
    mongodb_uri: str, monkeypatch: pytest.MonkeyPatch, rules: bool
) -> None:
    """A queryset delete (outside a transaction) whose caller was cancelled
    once its first run of ids was deleted goes on; the second run's delete
    failing on the server, the first run's documents are gone, and so are
    their files, once its task ended; the other documents stay with theirs.
    Those files were left, orphaned: only a caller still there had them
    deleted."""
    name = f"fd-{uuid4().hex[:8]}"
    listener = CancelAfterFirstDelete()
    async with fresh_database(
        "default", mongodb_uri, appname=name, event_listeners=[listener]
    ):
        cls = FdRuledPaper if rules else FdPaper
        papers = await with_files(
            [cls(**({"name": "doomed"} if rules else {})) for _ in range(5)]
        )
        in_runs_of_two(monkeypatch)
        async with second_delete_failing(name, cls):
            listener.collection = cls._get_collection_name()
            task = asyncio.ensure_future(cls.objects.async_delete(transaction=False))
            listener.task = task
            with pytest.raises(asyncio.CancelledError):
                await task
            # The delete's task, to its end (its files' delete in it).
            await asyncio.wait_for(asyncio.gather(*queryset_module._deleting), 30)
        assert not context.following  # (no task of its files follows)
        left = sorted(paper.pk for paper in await cls.objects.async_to_list())
        assert left == sorted(paper.pk for paper in papers[2:])
        await assert_files_of(papers[2:])


class CancelAtSecondDelete(TaskCanceller):
    """Cancels the task sending the second delete of ``collection`` (the one
    a delete goes on in: its loop's end cancelling it) as it starts."""

    def __init__(self, collection: str) -> None:
        self.collection = collection
        self.deletes = 0

    def started(self, event: monitoring.CommandStartedEvent) -> None:
        command = event.command
        if event.command_name == "delete" and command["delete"] == self.collection:
            self.deletes += 1
            if self.deletes == 2:
                self.cancel_task()


@pytest.mark.parametrize("receivers", [False, True])
async def test_a_cascade_cut_short_whose_write_sent_again_fails(
    mongodb_uri: str, monkeypatch: pytest.MonkeyPatch, receivers: bool
) -> None:
    """A CASCADE outside a transaction deleting leaves holding files (by its
    filter, or by their ids for their delete receivers), in runs of their
    ids, its task cut short (its loop's end) as it sends the second run: the
    step is sent again, from its first run, which fails on the server. The
    first run's leaves are gone, and so are their files, and their
    ``post_delete`` is sent, once, before the error is raised; the others
    stay with theirs. Those files were left, orphaned, and no ``post_delete``
    was sent."""
    sent: list[tuple[str, Any]] = []

    def post(sender: Any, document: Any, **kwargs: Any) -> None:
        sent.append(("post_delete", document.pk))

    if receivers:
        signals.post_delete.connect(post, sender=FdLeaf)
    try:
        await cut_short_cascade(mongodb_uri, monkeypatch, sent if receivers else None)
    finally:
        signals.post_delete.disconnect(post, sender=FdLeaf)


async def cut_short_cascade(
    mongodb_uri: str, monkeypatch: pytest.MonkeyPatch, sent: list | None
) -> None:
    """The body of the test above (``sent``: FdLeaf's ``post_delete``s, when
    it has that receiver)."""
    name = f"fd-{uuid4().hex[:8]}"
    listener = CancelAtSecondDelete(FdLeaf._get_collection_name())
    async with fresh_database(
        "default", mongodb_uri, appname=name, event_listeners=[listener]
    ):
        box = await FdBox(name="box").async_save()
        leaves = await with_files([FdLeaf(box=box) for _ in range(5)])
        in_runs_of_two(monkeypatch)
        async with second_delete_failing(name, FdLeaf):
            with pytest.raises(OperationFailure) as raised:
                await FdBox.objects.async_delete(transaction=False)
        assert raised.value.code == FAILED
        assert listener.deletes == 3  # (the second run cut short, the first again)
        assert [each.pk for each in await FdBox.objects.async_to_list()] == [box.pk]
        left = sorted(leaf.pk for leaf in await FdLeaf.objects.async_to_list())
        assert len(left) == 3
        await assert_files_of([leaf for leaf in leaves if leaf.pk in left])
        if sent is not None:
            gone = [leaf.pk for leaf in leaves if leaf.pk not in left]
            assert sorted(sent) == sorted(("post_delete", pk) for pk in gone)


async def test_a_delete_cut_short_whose_run_sent_again_fails(
    mongodb_uri: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A queryset delete without rules (outside a transaction) of documents
    holding files, in runs of their ids, its task cut short (its loop's end)
    as it sends the second run: the delete is sent again, from its first
    run, and fails on the server. The first run's documents are gone, and so
    are their files, before the error is raised; the others stay with
    theirs. Those files were left, orphaned (the failure of the delete sent
    again skipped the files' delete)."""
    name = f"fd-{uuid4().hex[:8]}"
    listener = CancelAtSecondDelete(FdPaper._get_collection_name())
    async with fresh_database(
        "default", mongodb_uri, appname=name, event_listeners=[listener]
    ):
        papers = await with_files([FdPaper() for _ in range(5)])
        in_runs_of_two(monkeypatch)
        async with second_delete_failing(name, FdPaper):
            with pytest.raises(OperationFailure) as raised:
                await FdPaper.objects.async_delete()
        assert raised.value.code == FAILED
        assert listener.deletes == 3  # (the second run cut short, the first again)
        left = sorted(paper.pk for paper in await FdPaper.objects.async_to_list())
        assert left == sorted(paper.pk for paper in papers[2:])
        await assert_files_of(papers[2:])


# The server applied the delete, then answered with this error.
APPLIED = {"writeConcernError": {"code": 64, "errmsg": "replication timed out"}}


def next_delete_failing(app_name: str, cls: type[Any], error: dict) -> Any:
    """The next delete of ``cls`` documents by ``app_name`` fails with ``error``."""
    return deletes_failing(app_name, cls, {"times": 1}, error)


@pytest.mark.parametrize("ruled", [False, True])
async def test_a_document_delete_applied_then_failing_deletes_its_files(
    app: str, deletes: list, ruled: bool
) -> None:
    """A document's delete (outside a transaction) the server applied, then
    answered with an error: the document is gone, so its files are deleted
    and ``post_delete`` sent before the error is raised, as a queryset's
    delete does. They were left, orphaned, and no ``post_delete`` sent.
    (With w=1: the primary's own data is read; with w "majority" the
    majority's, see test_a_failed_delete_reads_what_it_left_at_majority.)"""
    paper = FdRuledPaper() if ruled else FdPaper()
    await paper.pdf.async_put(b"contents")
    await paper.async_save()
    with post_deletes(type(paper)) as sent:
        async with next_delete_failing(app, type(paper), APPLIED):
            with pytest.raises(OperationError) as raised:
                await paper.async_delete(transaction=False, w=1)
    assert isinstance(raised.value.__cause__, WriteConcernError)
    assert raised.value.__cause__.code == 64
    assert await type(paper).objects.async_count() == 0
    assert await bucket() == ([], [])
    assert sent == [paper.pk]


class FindReplies(CommandLog):
    """:class:`CommandLog` keeping, too, the ``operationTime`` of each
    ``find`` reply, by its request's id."""

    def __init__(self) -> None:
        super().__init__()
        self.times: dict[int, Any] = {}

    def succeeded(self, event: monitoring.CommandSucceededEvent) -> None:
        if event.command_name == "find":
            self.times[event.request_id] = event.reply.get("operationTime")


async def test_a_document_delete_applied_then_failing_waits_for_the_majority(
    mongodb_uri: str,
) -> None:
    """A document's delete (w "majority") the server applied, then answered
    with a write concern error (the majority may not have it yet): whether it
    is gone is read on the primary, then at majority with that read's
    ``operationTime`` as ``afterClusterTime``, so the majority's snapshot
    has the delete the primary had: its files deleted, ``post_delete``
    sent. The read at majority came first, with no ``afterClusterTime``: a
    snapshot older than the delete (a next primary's first moments) showed
    the document there, its file kept and no ``post_delete`` sent."""
    name = f"fd-{uuid4().hex[:8]}"
    log = FindReplies()
    with post_deletes(FdPaper) as sent:
        async with fresh_database(
            "default", mongodb_uri, appname=name, event_listeners=[log]
        ):
            paper = await stored_paper()
            log.clear()
            async with next_delete_failing(name, FdPaper, APPLIED):
                with pytest.raises(OperationError):
                    await paper.async_delete(transaction=False, w="majority")
            local, majority = [
                event
                for event in log.events
                if event.command_name == "find"
                and event.command["find"] == FdPaper._get_collection_name()
            ]
            assert await bucket() == ([], [])
    assert "readConcern" not in local.command
    assert majority.command["readConcern"] == {
        "level": "majority",
        "afterClusterTime": log.times[local.request_id],
    }
    assert local.command["lsid"] == majority.command["lsid"]
    assert sent == [paper.pk]


async def test_a_document_delete_failing_unapplied_keeps_its_files(app: str) -> None:
    """A document's delete that failed on the server, not applied: the read
    finds it there, and it keeps its files; no ``post_delete`` is sent."""
    paper = await stored_paper()
    with post_deletes(FdPaper) as sent:
        async with next_delete_failing(app, FdPaper, {"errorCode": FAILED}):
            with pytest.raises(OperationError):
                await paper.async_delete()
    assert await FdPaper.objects.async_count() == 1
    assert await bucket() == ([paper.pdf.grid_id], [paper.pdf.grid_id])
    assert sent == []


async def test_a_document_delete_applied_then_failing_reads_on_the_primary(
    mongodb_uri: str,
) -> None:
    """A document's delete the server applied, then answered with an error,
    on a client reading from secondaries: whether it is gone is read where
    the delete went, the primary, then its files are deleted and
    ``post_delete`` sent. Read on a secondary (on this one-member set none
    is found: the read timed out; on a lagging one, a document not there yet
    read gone lost its files), its files stayed, orphaned, no ``post_delete``."""
    name = f"fd-{uuid4().hex[:8]}"
    secondary = {"read_preference": ReadPreference.SECONDARY}
    with post_deletes(FdPaper) as sent:
        async with fresh_database(
            "default",
            mongodb_uri,
            appname=name,
            serverSelectionTimeoutMS=500,
            **secondary,
        ):
            paper = await stored_paper()
            async with next_delete_failing(name, FdPaper, APPLIED):
                with pytest.raises(OperationError) as raised:
                    await paper.async_delete(w=1)
            primary = FdPaper._get_collection().database.with_options(
                read_preference=ReadPreference.PRIMARY
            )
            assert await primary["fd_paper"].count_documents({}) == 0
            assert await primary["fd_files.files"].count_documents({}) == 0
            assert await primary["fd_files.chunks"].count_documents({}) == 0
    assert isinstance(raised.value.__cause__, WriteConcernError)
    assert sent == [paper.pk]


async def test_a_document_delete_failing_in_a_transaction_reads_nothing(
    mongodb_uri: str,
) -> None:
    """A document's delete in the caller's transaction that failed on the
    server: the transaction's abort keeps the document and its files, so
    nothing reads whether it is gone. A find was sent in that transaction,
    which the server had ended (NoSuchTransaction), a round trip for nothing."""
    name = f"fd-{uuid4().hex[:8]}"
    log = CommandLog()
    async with fresh_database(
        "default", mongodb_uri, appname=name, event_listeners=[log]
    ):
        paper = await stored_paper()
        async with next_delete_failing(name, FdPaper, {"errorCode": FAILED}):
            async with get_async_connection().start_session() as session:
                await session.start_transaction()
                log.clear()
                with pytest.raises(OperationError) as raised:
                    await paper.async_delete(session=session)
                assert log.names == ["delete"]
                await session.abort_transaction()
        assert isinstance(raised.value.__cause__, OperationFailure)
        assert raised.value.__cause__.code == FAILED
        assert await FdPaper.objects.async_count() == 1
        assert await bucket() == ([paper.pdf.grid_id], [paper.pdf.grid_id])


@pytest.mark.parametrize("by_document", [False, True])
async def test_a_cascade_failing_cut_short_in_its_cleanup_is_not_sent_again(
    mongodb_uri: str, monkeypatch: pytest.MonkeyPatch, by_document: bool
) -> None:
    """A CASCADE outside a transaction (a queryset's delete, or a document's)
    whose second run of leaves' deletes
    fails on the server, its task cut short (its loop's end) as it reads
    which leaves are still there: the delete is not planned and sent again
    (each leaf had ``pre_delete`` once), the error is raised. That cleanup
    cut short is run again: the leaves the first run deleted have their
    files deleted and ``post_delete`` sent once (they kept their files,
    orphaned, and got none)."""
    pre: list = []
    post: list = []

    def receiver(sender: Any, document: Any, **kwargs: Any) -> None:
        pre.append(document.pk)

    def post_receiver(sender: Any, document: Any, **kwargs: Any) -> None:
        post.append(document.pk)

    name = f"fd-{uuid4().hex[:8]}"
    listener = CancelAtCleanupRead(FdLeaf._get_collection_name())
    signals.pre_delete.connect(receiver, sender=FdLeaf)
    signals.post_delete.connect(post_receiver, sender=FdLeaf)
    try:
        async with fresh_database(
            "default", mongodb_uri, appname=name, event_listeners=[listener]
        ):
            box = await FdBox(name="box").async_save()
            leaves = await with_files([FdLeaf(box=box) for _ in range(5)])
            in_runs_of_two(monkeypatch)
            async with second_delete_failing(name, FdLeaf):
                # (The task cancelled, its outcome is: not the test's task.)
                with pytest.raises(asyncio.CancelledError):
                    if by_document:
                        await box.async_delete(transaction=False)
                    else:
                        await FdBox.objects.async_delete(transaction=False)
                await asyncio.wait_for(
                    asyncio.gather(*queryset_module._deleting, return_exceptions=True),
                    30,
                )
            assert listener.cancelled == 1
            assert listener.deletes == 2  # (the failing one not sent again)
            assert sorted(pre) == sorted(leaf.pk for leaf in leaves)
            left = {leaf.pk for leaf in await FdLeaf.objects.async_to_list()}
            assert len(left) == 3
            files, chunks = await bucket()
            held = sorted(leaf.pdf.grid_id for leaf in leaves if leaf.pk in left)
            assert (sorted(files), sorted(chunks)) == (held, held)
            assert sorted(post) == sorted(
                leaf.pk for leaf in leaves if leaf.pk not in left
            )
    finally:
        signals.pre_delete.disconnect(receiver, sender=FdLeaf)
        signals.post_delete.disconnect(post_receiver, sender=FdLeaf)


async def test_a_cascade_failing_cut_short_in_a_post_delete_sends_each_once(
    app: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A CASCADE outside a transaction whose second run of leaves' deletes
    fails on the server, its task cut short (its loop's end) in the
    ``post_delete`` of a leaf the first run deleted: the steps after that
    failure are run again, but no ``post_delete`` is sent twice; the leaves
    gone lose their files."""
    post: list = []

    async def receiver(sender: Any, document: Any, **kwargs: Any) -> None:
        post.append(document.pk)
        if len(post) == 1:  # (the loop's end cancelling the task it is in)
            task = asyncio.current_task()
            assert task is not None
            task.cancel()
            await asyncio.sleep(0)

    box = await FdBox(name="box").async_save()
    leaves = []
    for number in range(5):
        leaf = FdLeaf(box=box)
        await leaf.pdf.async_put(b"leaf %d" % number)
        leaves.append(await leaf.async_save())
    monkeypatch.setattr(mongoengine_async.gridfs, "LISTED_IDS_BYTES", 2 * 21)
    signals.post_delete.connect(receiver, sender=FdLeaf)
    try:
        async with second_delete_failing(app, FdLeaf):
            # (The task cancelled, its outcome is: not the test's task.)
            with pytest.raises(asyncio.CancelledError):
                await FdBox.objects.async_delete(transaction=False)
            await asyncio.wait_for(
                asyncio.gather(*queryset_module._deleting, return_exceptions=True), 30
            )
    finally:
        signals.post_delete.disconnect(receiver, sender=FdLeaf)
    left = {leaf.pk for leaf in await FdLeaf.objects.async_to_list()}
    assert len(left) == 3
    assert sorted(post) == sorted(leaf.pk for leaf in leaves if leaf.pk not in left)
    files, chunks = await bucket()
    held = sorted(leaf.pdf.grid_id for leaf in leaves if leaf.pk in left)
    assert (sorted(files), sorted(chunks)) == (held, held)


def mode(event: monitoring.CommandStartedEvent) -> str | None:
    """The read preference a read was sent with (None: not a read)."""
    if event.command_name != "find":
        return None
    return event.command.get("$readPreference", {"mode": "primary"})["mode"]


async def test_a_cascade_failing_reads_what_is_gone_on_the_primary(
    mongodb_uri: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A CASCADE outside a transaction, on a client reading from secondaries
    when it can, whose second run of leaves' deletes fails on the server:
    which leaves are still there is read where the deletes went, the
    primary. Read as the client reads (on a lagging secondary a leaf just
    deleted reads there: its files stayed, orphaned, with no ``post_delete``),
    as a document's delete already read it."""
    name = f"fd-{uuid4().hex[:8]}"
    log = CommandLog()
    with post_deletes(FdLeaf) as post:
        async with fresh_database(
            "default",
            mongodb_uri,
            appname=name,
            event_listeners=[log],
            read_preference=ReadPreference.SECONDARY_PREFERRED,
        ):
            box = await FdBox(name="box").async_save()
            leaves = await with_files([FdLeaf(box=box) for _ in range(5)])
            in_runs_of_two(monkeypatch)
            async with second_delete_failing(name, FdLeaf):
                log.clear()
                with pytest.raises(OperationFailure) as raised:
                    await FdBox.objects.async_delete(transaction=False)
            on_leaves = [
                (event.command_name, mode(event))
                for event in log.events
                if event.command.get(event.command_name)
                == FdLeaf._get_collection_name()
            ]
            # (After the failing delete, the files of the leaves gone are read,
            # then which of the five leaves loaded are there: each in runs of
            # two, locally, then, for what that read did not show, at majority.)
            last = max(i for i, (name, _) in enumerate(on_leaves) if name == "delete")
            assert on_leaves[last - 1 : last + 1] == [("delete", None)] * 2
            cleanup = on_leaves[last + 1 :]
            assert len(cleanup) >= 6
            assert set(cleanup) == {("find", "primary")}
            # (The plan lists them on the primary too: every read of a delete does.)
            assert {m for command, m in on_leaves if command == "find"} == {"primary"}
            left = {leaf.pk for leaf in await FdLeaf.objects.async_to_list()}
    assert raised.value.code == FAILED
    assert len(left) == 3
    assert sorted(post) == sorted(leaf.pk for leaf in leaves if leaf.pk not in left)


async def test_a_post_delete_raising_after_a_failed_delete_keeps_its_error(
    app: str,
) -> None:
    """A document's delete the server applied, then answered with an error,
    a ``post_delete`` receiver raising in the steps after it: the caller gets
    the delete's error (as a cascade's does), the files deleted first. The
    receiver's error came instead, the delete's hidden in its context."""

    def receiver(sender: Any, document: Any, **kwargs: Any) -> None:
        raise ValueError("receiver failed")

    paper = await stored_paper()
    signals.post_delete.connect(receiver, sender=FdPaper)
    try:
        async with next_delete_failing(app, FdPaper, APPLIED):
            with pytest.raises(OperationError) as raised:
                await paper.async_delete(transaction=False, w=1)
    finally:
        signals.post_delete.disconnect(receiver, sender=FdPaper)
    assert str(raised.value).startswith("Could not delete document (")
    assert isinstance(raised.value.__cause__, WriteConcernError)
    assert await FdPaper.objects.async_count() == 0
    assert await bucket() == ([], [])


async def test_a_document_delete_failing_cut_short_in_its_cleanup(
    mongodb_uri: str,
) -> None:
    """A document's delete (outside a transaction) the server applied, then
    answered with an error, its task cut short (its loop's end) as it reads
    whether the document is gone: that read is sent again, then its files
    are deleted and ``post_delete`` sent before the cancellation is raised,
    as a cascade's cleanup cut short is. Its files stayed, orphaned, and no
    ``post_delete`` was sent."""
    name = f"fd-{uuid4().hex[:8]}"
    listener = CancelAtAppliedCleanupRead(FdPaper._get_collection_name())
    with post_deletes(FdPaper) as sent:
        async with fresh_database(
            "default", mongodb_uri, appname=name, event_listeners=[listener]
        ):
            paper = await stored_paper()
            async with next_delete_failing(name, FdPaper, APPLIED):
                # (The task cancelled, its outcome is: not the test's task.)
                with pytest.raises(asyncio.CancelledError):
                    await paper.async_delete(transaction=False, w=1)
            assert listener.cancelled == 1
            assert listener.deletes == 1
            assert await FdPaper.objects.async_count() == 0
            assert await bucket() == ([], [])
    assert sent == [paper.pk]


@pytest.mark.parametrize("error", [APPLIED, {"errorCode": FAILED}])
async def test_a_failed_delete_with_no_steps_after_it_reads_nothing(
    mongodb_uri: str, error: dict
) -> None:
    """A document's delete (outside a transaction) failing on the server, the
    document holding no file (its class has file fields) and no
    ``post_delete`` receiver: nothing follows it, so nothing reads whether it
    is gone; the delete's error is raised. A find was sent, a round trip for
    nothing."""
    name = f"fd-{uuid4().hex[:8]}"
    log = CommandLog()
    async with fresh_database(
        "default", mongodb_uri, appname=name, event_listeners=[log]
    ):
        paper = await FdPaper().async_save()
        async with next_delete_failing(name, FdPaper, error):
            log.clear()
            with pytest.raises(OperationError) as raised:
                await paper.async_delete(transaction=False)
            assert log.names == ["delete"]
        left = 0 if error is APPLIED else 1
        assert await FdPaper.objects.async_count() == left
    cause = raised.value.__cause__
    assert isinstance(
        cause, WriteConcernError if error is APPLIED else OperationFailure
    )


def cleanup_levels(log: CommandLog, cls: type[Any]) -> list[str | None]:
    """The read concern level (None: the server's default, local) of each
    find of ``cls``'s collection in ``log`` after its last delete: the reads
    after that delete failed; then clears ``log``."""
    name = cls._get_collection_name()
    on_cls = [
        event for event in log.events if event.command.get(event.command_name) == name
    ]
    last = max(i for i, event in enumerate(on_cls) if event.command_name == "delete")
    log.clear()
    return [
        event.command.get("readConcern", {}).get("level")
        for event in on_cls[last + 1 :]
        if event.command_name == "find"
    ]


def local_then_majority(levels: list[str | None], local: int) -> bool:
    """Whether ``levels`` are ``local`` reads on the primary's own data (None)
    then, for what those did not show, as many or fewer at majority."""
    head, rest = levels[:local], levels[local:]
    return head == [None] * local and rest in ([], ["majority"] * local)


@pytest.mark.parametrize("timeout_ms", [None, 1_000])
async def test_the_read_at_majority_after_a_failed_delete_waits_a_server_selection(
    mongodb_uri: str, timeout_ms: int | None
) -> None:
    """The read at majority of whether a document whose delete failed is gone
    may take the client's ``serverSelectionTimeoutMS`` (``maxTimeMS``: a
    majority catching up waits as long as a server being found does), not a
    fixed 10 s; on a client whose ``timeoutMS`` is shorter, too (PyMongo
    sends the time left of that whole selection): cut short by it, the
    steps after the failure gave up during an election, the files of a
    document gone left."""
    name = f"fd-{uuid4().hex[:8]}"
    log = CommandLog()
    options = {} if timeout_ms is None else {"timeoutMS": timeout_ms}
    async with fresh_database(
        "default",
        mongodb_uri,
        appname=name,
        event_listeners=[log],
        serverSelectionTimeoutMS=4_321,
        **options,
    ):
        paper = await stored_paper()
        log.clear()
        async with next_delete_failing(name, FdPaper, APPLIED):
            with pytest.raises(OperationError):
                await paper.async_delete(transaction=False)
        [_, read] = [event for event in log.events if event.command_name == "find"]
        assert read.command["readConcern"]["level"] == "majority"
    if timeout_ms is None:
        assert read.command["maxTimeMS"] == 4_321
    else:  # (the time left: less its round trip)
        assert timeout_ms < read.command["maxTimeMS"] <= 4_321


@pytest.mark.parametrize("w", ["majority", 1])
async def test_a_failed_delete_reads_what_it_left_at_majority(
    mongodb_uri: str, monkeypatch: pytest.MonkeyPatch, w: Any
) -> None:
    """After a delete (outside a transaction, w "majority") failed, whether
    its documents are gone, and whether they hold the files listed, is read
    on the primary's own data (a document written with w=1 since), then, for
    what that read did not show, at read concern "majority" after it (its
    session's ``afterClusterTime``): a delete not majority-committed (a
    write concern error) reads as not applied, so the files stay (a rollback
    of the delete would bring back its documents: with their files gone,
    lost).
    With w=1 the user accepts a delete the primary alone applied: as after
    one that returned, the primary's own data is read. The primary's own
    data was read alone: see test_failover.py for the files it lost."""
    name = f"fd-{uuid4().hex[:8]}"
    log = CommandLog()
    async with fresh_database(
        "default", mongodb_uri, appname=name, event_listeners=[log]
    ):
        paper = await stored_paper()
        log.clear()
        async with next_delete_failing(name, FdPaper, APPLIED):
            async with get_async_connection().start_session() as session:
                with pytest.raises(OperationError):
                    await paper.async_delete(transaction=False, session=session, w=w)
                lsid = session.session_id
        # (Whether it is gone: on the primary's own data, then at majority
        # after it, in the caller's causally consistent session.)
        reads = [event for event in log.events if event.command_name == "find"]
        assert reads[0].command["find"] == FdPaper._get_collection_name()
        assert all(read.command["lsid"] == lsid for read in reads)
        if w == "majority":
            assert reads[1].command["readConcern"]["level"] == "majority"
        document = cleanup_levels(log, FdPaper)
        await with_files([FdPaper() for _ in range(3)])
        in_runs_of_two(monkeypatch)
        async with second_delete_failing(name, FdPaper):
            with pytest.raises(OperationFailure):
                await FdPaper.objects.async_delete(
                    transaction=False, write_concern={"w": w}
                )
        # (Which files the listed documents left hold: in runs of two.)
        queryset = cleanup_levels(log, FdPaper)
        box = await FdBox(name="box").async_save()
        await with_files([FdLeaf(box=box) for _ in range(3)])
        receiver = lambda sender, document, **kwargs: None  # noqa: E731
        signals.post_delete.connect(receiver, sender=FdLeaf)  # (loads them)
        try:
            async with second_delete_failing(name, FdLeaf):
                with pytest.raises(OperationFailure):
                    await FdBox.objects.async_delete(
                        transaction=False, write_concern={"w": w}
                    )
        finally:
            signals.post_delete.disconnect(receiver, sender=FdLeaf)
        # (Which files the leaves left hold, then which leaves are there.)
        cascade = cleanup_levels(log, FdLeaf)
    if w == 1:
        assert (document, queryset, cascade) == ([None], [None] * 2, [None] * 4)
    else:
        assert local_then_majority(document, 1)
        assert local_then_majority(queryset, 2)
        assert cascade[:2] == [None] * 2
        assert cascade.count(None) == 4
        assert set(cascade) <= {"majority", None}


async def tray_delete_failing(
    app: str, tray: FdTray, failing: type[Any], *senders: type[Any]
) -> list[Any]:
    """The ids of the documents of ``senders`` sent ``post_delete`` by
    ``tray``'s delete outside a transaction, the next delete of ``failing``
    failing on the server (the delete raises OperationError)."""
    with post_deletes(*senders) as sent:
        async with next_delete_failing(app, failing, {"errorCode": FAILED}):
            with pytest.raises(OperationError):
                await tray.async_delete(transaction=False)
    return sent


@pytest.mark.parametrize("failing", [FdCard, FdSlot])
async def test_a_cascade_failing_reads_its_string_uuid_ids(
    app: str, failing: type[Any]
) -> None:
    """A cascade outside a transaction, its cards (a ``UUIDField(binary=False)``
    id, stored as a string) deleted before its slots, one of these deletes
    failing on the server: the cards are read there (their delete failed)
    or gone (the slots' did), and get ``post_delete`` only when gone. The
    read of which cards are there queried their ids as UUIDs, matching no
    stored string: the cards still there were sent ``post_delete``."""
    tray = await FdTray(name="tray").async_save()
    cards = [await FdCard(tray=tray).async_save() for _ in range(2)]
    await FdSlot(tray=tray).async_save()
    sent = await tray_delete_failing(app, tray, failing, FdCard, FdSlot)
    left = {card.pk for card in await FdCard.objects.async_to_list()}
    assert await FdSlot.objects.async_count() == 1
    if failing is FdCard:
        assert (left, sent) == ({card.pk for card in cards}, [])
    else:
        assert (left, sorted(sent)) == (set(), sorted(card.pk for card in cards))


@pytest.mark.parametrize("failing", [FdChip, FdTray])
async def test_a_cascade_failing_reads_its_binary_ids(
    app: str, failing: type[Any]
) -> None:
    """As test_a_cascade_failing_reads_its_string_uuid_ids, the cascaded
    chips' ids ``BinaryField`` values, stored as ``Binary``, read back as
    ``bytes``; the chips' delete failing, or the tray's after it: the chips
    get ``post_delete`` only when gone. The chips still there were sent
    ``post_delete``: their stored ``Binary`` is not equal to the ``bytes``
    read back."""
    tray = await FdTray(name="tray").async_save()
    chips = [await FdChip(tray=tray).async_save() for _ in range(2)]
    sent = await tray_delete_failing(app, tray, failing, FdChip)
    ids = sorted(bytes(chip.pk) for chip in chips)
    left = sorted(bytes(chip.pk) for chip in await FdChip.objects.async_to_list())
    assert await FdTray.objects.async_count() == 1
    if failing is FdChip:
        assert (left, sent) == (ids, [])
    else:
        assert (left, sorted(bytes(pk) for pk in sent)) == ([], ids)
