"""Files on another client than the transaction's: a FileField's alias is its
own, and when it names another client the file's writes cannot join the
transaction. An abort gives back what a put took (and deletes its upload); a
delete waits for the commit (none when it aborts)."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import io
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any
from uuid import uuid4

import pymongo
import pymongo.errors
import pytest
from mongoengine.connection import DEFAULT_CONNECTION_NAME
from PIL import Image
from pymongo.errors import InvalidOperation

from conftest import Held, commit_unknown_once, held_on_server
from mongoengine_async import (
    CASCADE,
    Document,
    FileField,
    ImageField,
    ListField,
    ReferenceField,
    StringField,
    async_run_in_transaction,
    async_run_transaction,
    connect_async,
    disconnect_all_async,
    get_async_connection,
    get_async_db,
    signals,
)
from mongoengine_async.testing import fresh_database

ELSEWHERE = "gfs-elsewhere"


async def connect_both(
    name: str,
    mongodb_uri: str,
    main_app: str | None = None,
    files_app: str | None = None,
    main_listener: Any = None,
) -> Any:
    """Connect the default alias to database ``name`` and ELSEWHERE (the
    files' client) to ``{name}_files``, each named for the fail points of a
    test if given (the default alias heard by ``main_listener``); the default
    alias's admin database."""
    for alias, db, app in (
        (DEFAULT_CONNECTION_NAME, name, main_app),
        (ELSEWHERE, f"{name}_files", files_app),
    ):
        named: dict[str, Any] = {} if app is None else {"appname": app}
        if main_listener is not None and alias == DEFAULT_CONNECTION_NAME:
            named["event_listeners"] = [main_listener]
        await connect_async(
            db, alias=alias, host=mongodb_uri, uuidRepresentation="standard", **named
        )
    return get_async_connection().admin


class GoPaper(Document):
    title = StringField()
    pdf = FileField(db_alias=ELSEWHERE)
    cover = ImageField(db_alias=ELSEWHERE, thumbnail_size=(8, 8, True))
    scans = ListField(FileField(db_alias=ELSEWHERE))


class GoLetter(Document):  # the document on the files' client too
    meta = {"db_alias": ELSEWHERE}
    body = FileField(db_alias=ELSEWHERE)


class GoShelf(Document):
    title = StringField()


class GoReview(Document):  # deleted with its shelf (a delete's own transaction)
    shelf = ReferenceField(GoShelf, reverse_delete_rule=CASCADE)


class Rollback(Exception):
    pass


@pytest.fixture
async def elsewhere(async_alias: str, mongodb_uri: str) -> AsyncIterator[str]:
    """The files' alias: a client of its own (another application name)."""
    async with fresh_database(ELSEWHERE, mongodb_uri, appname=ELSEWHERE) as alias:
        yield alias


async def stored(bucket: str = "fs") -> set[Any]:
    """The ids of the files of ``bucket`` on the files' alias."""
    files = get_async_db(ELSEWHERE)[f"{bucket}.files"]
    return {raw["_id"] for raw in await files.find({}, {"_id": 1}).to_list()}


async def eventually(expected: set[Any], bucket: str = "fs") -> set[Any]:
    """The files of ``bucket`` once they are ``expected`` (an aborted upload
    is deleted in a task of its own), or after 5 seconds."""
    deadline = time.monotonic() + 5
    while (found := await stored(bucket)) != expected and time.monotonic() < deadline:
        await asyncio.sleep(0.02)
    return found


def png() -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (40, 30), "navy").save(buffer, "PNG")
    return buffer.getvalue()


def transient() -> pymongo.errors.OperationFailure:
    error = pymongo.errors.OperationFailure("write conflict", code=112)
    error._add_error_label("TransientTransactionError")
    return error


async def test_an_aborted_put_gives_the_proxy_back_and_deletes_the_upload(
    elsewhere: str,
) -> None:
    paper = GoPaper(title="draft")
    with pytest.raises(Rollback):
        async with async_run_in_transaction():
            await paper.pdf.async_put(b"uploaded outside the transaction")
            await paper.cover.async_put(png())
            paper.scans.append(await GoPaper.scans.field.async_put(b"scan"))
            await paper.async_save()
            raise Rollback
    assert paper.pdf.grid_id is None and paper.cover.grid_id is None
    assert paper.scans[0].grid_id is None
    assert paper._created and await GoPaper.objects.async_count() == 0
    assert await eventually(set()) == set()
    assert await eventually(set(), "images") == set()  # the image and thumbnail


async def test_a_retried_callback_puts_again(elsewhere: str) -> None:
    """async_run_transaction runs fn again after a transient error: the put
    of the first attempt was given back (no 'already has a file'), its upload
    deleted, so one file of each is left."""
    paper = GoPaper(title="retried")
    attempts = []

    async def write() -> None:
        attempts.append(paper.pdf.grid_id)
        await paper.pdf.async_put(b"content")
        await paper.cover.async_put(png())
        await paper.async_save()
        if len(attempts) == 1:
            raise transient()

    await async_run_transaction(write)
    assert attempts == [None, None]
    assert await eventually({paper.pdf.grid_id}) == {paper.pdf.grid_id}
    images = {paper.cover.grid_id, paper.cover.thumbnail_id}
    assert await eventually(images, "images") == images
    loaded = await GoPaper.objects.async_get(id=paper.id)
    assert await loaded.pdf.async_read() == b"content"


async def delete_file(paper: GoPaper) -> None:
    await paper.pdf.async_delete()
    await paper.async_save()


async def replace_file(paper: GoPaper) -> None:
    await paper.pdf.async_replace(b"second edition")
    await paper.async_save()


async def delete_document(paper: GoPaper) -> None:
    await paper.async_delete()


async def delete_matches(paper: GoPaper) -> None:
    await GoPaper.objects(id=paper.id).async_delete()


WRITES: dict[str, Callable[[GoPaper], Awaitable[None]]] = {
    "proxy.async_delete": delete_file,
    "proxy.async_replace": replace_file,
    "document.async_delete": delete_document,
    "queryset.async_delete": delete_matches,
}


async def saved_paper() -> GoPaper:
    paper = GoPaper(title="kept")
    await paper.pdf.async_put(b"first edition")
    await paper.cover.async_put(png())
    await paper.async_save()
    return await GoPaper.objects.async_get(id=paper.id)


@pytest.mark.parametrize("write", list(WRITES))
async def test_an_aborted_delete_keeps_the_file_of_the_kept_document(
    elsewhere: str, write: str
) -> None:
    """The document (or its update) is rolled back: the file it holds is
    still there (the delete, which the transaction could not undo, waited
    for its commit), and so is the image's thumbnail."""
    paper = await saved_paper()
    grid_id = paper.pdf.grid_id
    images = await stored("images")
    with pytest.raises(Rollback):
        async with async_run_in_transaction():
            await WRITES[write](paper)
            raise Rollback
    raw = await GoPaper.objects.as_pymongo().async_get(id=paper.id)
    assert raw["pdf"] == grid_id
    assert paper.pdf.grid_id == grid_id
    assert await paper.pdf.async_read() == b"first edition"
    assert await eventually({grid_id}) == {grid_id}  # a replaced one's upload goes
    assert await stored("images") == images


@pytest.mark.parametrize("write", list(WRITES))
async def test_a_committed_delete_deletes_the_file_before_the_block_ends(
    elsewhere: str, write: str
) -> None:
    paper = await saved_paper()
    grid_id = paper.pdf.grid_id
    async with async_run_in_transaction():
        await WRITES[write](paper)
    assert grid_id not in await stored()
    if write == "proxy.async_replace":
        assert await stored() == {paper.pdf.grid_id}
    elif write != "proxy.async_delete":
        assert await stored("images") == set()  # and the thumbnail


async def test_a_committed_callback_deletes_the_file(elsewhere: str) -> None:
    paper = await saved_paper()
    await async_run_transaction(lambda: delete_document(paper))
    assert await stored() == set() and await stored("images") == set()


async def committed_under_timeout(kind: str, paper: GoPaper) -> None:
    """Delete ``paper`` in a transaction (a block, or a callback's) under a
    ``pymongo.timeout()`` of 2 seconds."""
    with pymongo.timeout(2.0):
        if kind == "callback":
            await async_run_transaction(paper.async_delete)
            return
        async with async_run_in_transaction():
            await paper.async_delete()


async def buckets_emptied() -> list[int]:
    """The documents left in the files and chunks of both buckets, once none
    is left (the steps after a commit ended), or after 30 seconds."""
    db = get_async_db(ELSEWHERE)
    names = [f"{bucket}.{kind}" for bucket in ("fs", "images") for kind in KINDS]
    deadline = time.monotonic() + 30
    while any(counts := [await db[name].count_documents({}) for name in names]):
        if time.monotonic() > deadline:
            break
        await asyncio.sleep(0.05)
    return counts


@pytest.mark.parametrize("kind", ["block", "callback"])
async def test_a_callers_timeout_spent_after_the_commit_leaves_no_orphan(
    elsewhere: str, kind: str
) -> None:
    """The delete of the committed paper's file on the other client is held
    on the server beyond the caller's ``pymongo.timeout()``: the call
    returns by then (the commit is its outcome; it raised NetworkTimeout, as
    if it had failed), and the delete goes on outside that time-out, the
    file and its image deleted (they were left, found by no document)."""
    paper = await saved_paper()
    reported: list[dict[str, Any]] = []
    asyncio.get_running_loop().set_exception_handler(
        lambda _, report: reported.append(report)
    )
    try:
        async with held_on_server(ELSEWHERE, "delete", 5_000) as held:
            await committed_under_timeout(kind, paper)
            assert await held.still_on_server()  # (returned within the budget)
            assert await GoPaper.objects.async_count() == 0
            await held.ended_on_server()
        assert await buckets_emptied() == [0, 0, 0, 0]
    finally:
        asyncio.get_running_loop().set_exception_handler(None)
    assert reported == []


async def test_a_step_failing_once_the_callers_timeout_is_spent_is_reported(
    elsewhere: str,
) -> None:
    """The held delete of the file then fails, once the call returned: its
    error goes to the loop's exception handler, as that of steps whose caller
    was cancelled, and only that file is left."""
    paper = GoPaper(title="kept")
    await paper.pdf.async_put(b"first edition")
    await paper.async_save()
    grid_id = paper.pdf.grid_id
    reported: list[dict[str, Any]] = []
    asyncio.get_running_loop().set_exception_handler(
        lambda _, report: reported.append(report)
    )
    try:
        async with held_on_server(ELSEWHERE, "delete", 3_000, error_code=2) as held:
            await committed_under_timeout("callback", paper)
            await held.ended_on_server()
        deadline = time.monotonic() + 30
        while not reported and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
    finally:
        asyncio.get_running_loop().set_exception_handler(None)
    [report] = reported
    assert report["message"] == "The steps after the commit of a transaction failed"
    assert isinstance(report["exception"], pymongo.errors.OperationFailure)
    assert report["exception"].code == 2
    assert await GoPaper.objects.async_count() == 0
    assert await stored() == {grid_id}


@pytest.mark.parametrize("seconds", [None, 30.0])
@pytest.mark.parametrize("kind", ["block", "callback"])
async def test_a_step_failing_within_the_callers_timeout_raises(
    elsewhere: str, kind: str, seconds: float | None
) -> None:
    """The delete of the committed paper's file fails at once: its error is
    raised by the call, under a ``pymongo.timeout()`` not spent yet as under
    none (the steps run in a task of their own, awaited that long), and the
    file is left."""
    paper = await saved_paper()
    grid_id = paper.pdf.grid_id
    with pytest.raises(pymongo.errors.OperationFailure) as error:
        async with held_on_server(ELSEWHERE, "delete", 0, error_code=2):
            with pymongo.timeout(seconds):
                if kind == "callback":
                    await async_run_transaction(paper.async_delete)
                else:
                    async with async_run_in_transaction():
                        await paper.async_delete()
    assert error.value.code == 2
    assert await GoPaper.objects.async_count() == 0
    assert await stored() == {grid_id}


async def test_a_cancelled_blocks_steps_after_its_commit_outlast_its_timeout(
    mongodb_uri: str,
) -> None:
    """A block under a ``pymongo.timeout()``, cancelled while its commit (of a
    paper's delete) is held on the server: the delete of the paper's file on
    the other client, after that commit, is held beyond the time-out, and
    goes on outside it (it raised NetworkTimeout to the loop's exception
    handler, and the file was left, found by no document)."""
    name, app = f"go_{uuid4().hex[:12]}", f"go-{uuid4().hex[:8]}"
    # (Two clients of the same application name, one fail point holding the
    # commit then the file's delete: the files' differs in another setting.)
    for alias, db, more in (
        (DEFAULT_CONNECTION_NAME, name, {}),
        (ELSEWHERE, f"{name}_files", {"connectTimeoutMS": 19_000}),
    ):
        await connect_async(
            db,
            alias=alias,
            host=mongodb_uri,
            appname=app,
            uuidRepresentation="standard",
            **more,
        )
    admin = get_async_connection().admin
    reported: list[dict[str, Any]] = []
    asyncio.get_running_loop().set_exception_handler(
        lambda _, report: reported.append(report)
    )
    try:
        paper = await saved_paper()
        deleted, go = asyncio.Event(), asyncio.Event()

        async def block() -> None:
            with pymongo.timeout(2.5):
                async with async_run_in_transaction():
                    await paper.async_delete()
                    deleted.set()
                    await go.wait()

        task = asyncio.ensure_future(block())
        await deleted.wait()
        # (The commit, then the file's delete, each held 1.5 s: together
        # beyond the 2.5 s.)
        commands = ["commitTransaction", "delete"]
        async with held_on_server(app, commands[0], 1_500, then=commands[1]) as held:
            go.set()
            await held.reached_server()
            task.cancel()
            await asyncio.wait([task])
            assert task.cancelled()
            await Held(admin, app, commands, 0).ended_on_server()
        assert await GoPaper.objects.async_count() == 0
        assert await buckets_emptied() == [0, 0, 0, 0]
    finally:
        asyncio.get_running_loop().set_exception_handler(None)
        await get_async_connection().drop_database(name)
        await get_async_connection(ELSEWHERE).drop_database(f"{name}_files")
        await disconnect_all_async()
    assert reported == []


async def test_a_replace_under_its_own_id_is_refused(elsewhere: str) -> None:
    """Its delete would wait for the commit, where the new file's id is the
    old one's: refused, before anything is written."""
    paper = await saved_paper()
    grid_id = paper.pdf.grid_id
    with pytest.raises(InvalidOperation, match="under its own id"):
        async with async_run_in_transaction():
            await paper.pdf.async_replace(b"other", _id=grid_id)
    assert paper.pdf.grid_id == grid_id
    assert await paper.pdf.async_read() == b"first edition"


async def test_a_cancelled_block_keeps_the_file(elsewhere: str) -> None:
    paper = await saved_paper()
    grid_id = paper.pdf.grid_id
    deleted = asyncio.Event()

    async def block() -> None:
        async with async_run_in_transaction():
            await paper.pdf.async_delete()
            deleted.set()
            await asyncio.Event().wait()

    task = asyncio.ensure_future(block())
    await deleted.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert paper.pdf.grid_id == grid_id and await stored() == {grid_id}


@pytest.mark.parametrize("delete", ["document", "proxy", "replace"])
async def test_a_document_outside_the_transaction_deletes_its_file_at_once(
    elsewhere: str, delete: str
) -> None:
    """A document on the files' client is not in a transaction of another
    client: its file is deleted at once, as the document (or its update)."""
    letter = GoLetter()
    await letter.body.async_put(b"Dear ...")
    await letter.async_save()
    with pytest.raises(Rollback):
        async with async_run_in_transaction():
            if delete == "document":
                await letter.async_delete()
            elif delete == "proxy":
                await letter.body.async_delete()
                await letter.async_save()
            else:
                await letter.body.async_replace(b"P.S.")
                await letter.async_save()
            kept = {letter.body.grid_id} - {None}
            assert await stored() == kept
            raise Rollback
    assert await eventually(kept) == kept and {letter.body.grid_id} - {None} == kept
    if delete == "replace":
        loaded = await GoLetter.objects.async_get(id=letter.id)
        assert await loaded.body.async_read() == b"P.S."


async def test_a_put_in_a_task_a_cascaded_delete_receiver_starts_stays(
    elsewhere: str,
) -> None:
    """A task that a cascaded document's delete receiver starts does not
    inherit the delete's transaction (docs/signals.md): a file it puts in a
    proxy no document holds yet stays when the delete aborts. It was
    journaled in that transaction all the same: the abort emptied the proxy
    and deleted the upload."""
    shelf = await GoShelf(title="reviewed").async_save()
    await GoReview(shelf=shelf).async_save()
    puts = []

    async def put() -> None:
        puts.append(await GoPaper.pdf.async_put(b"a report"))

    async def report(sender: Any, document: Any, **kwargs: Any) -> None:
        await asyncio.gather(put())  # (a task of its own)
        raise Rollback

    signals.post_delete.connect(report, sender=GoReview)
    try:
        with pytest.raises(Rollback):
            await shelf.async_delete()
    finally:
        signals.post_delete.disconnect(report, sender=GoReview)
    [proxy] = puts
    assert proxy.grid_id is not None
    assert await eventually({proxy.grid_id}) == {proxy.grid_id}
    assert await GoReview.objects.async_count() == 1


@pytest.mark.parametrize("outcome", ["committed", "aborted"])
async def test_a_task_that_outlived_its_block_deletes_its_file_at_once(
    elsewhere: str, outcome: str
) -> None:
    """A task started in a block that outlives it is in no transaction once
    the block's is over (docs/transactions.md): a file it deletes on another
    client, in a proxy no document holds, is deleted at once. Its delete was
    noted in the ended transaction's journal, to run once that committed,
    which nothing would run any more: the file stayed, the proxy empty."""
    proxy = await GoPaper.pdf.async_put(b"a draft")
    grid_id = proxy.grid_id
    block_over = asyncio.Event()

    async def outlive() -> None:
        await block_over.wait()
        await proxy.async_delete()

    tasks = []
    with contextlib.suppress(Rollback):
        async with async_run_in_transaction():
            tasks.append(asyncio.create_task(outlive()))
            if outcome == "aborted":
                raise Rollback
    block_over.set()
    await asyncio.gather(*tasks)
    assert proxy.grid_id is None
    assert grid_id not in await stored()


def outliving_delete(
    delete: Callable[[], Awaitable[Any]], grid_id: Any, rollback: bool = False
) -> tuple[Callable[[], Awaitable[None]], list[asyncio.Task], list[bool]]:
    """A callback for async_run_transaction whose first attempt starts a task
    that runs ``delete`` once that attempt is over, then fails transiently;
    the next waits for the task, notes whether ``grid_id`` was still stored
    then (in the list returned), and raises Rollback if ``rollback``."""
    attempt_over = asyncio.Event()
    tasks: list[asyncio.Task] = []
    during: list[bool] = []

    async def outlive() -> None:
        await attempt_over.wait()
        await delete()

    async def write() -> None:
        if not tasks:
            tasks.append(asyncio.create_task(outlive()))
            raise transient()
        attempt_over.set()
        await asyncio.wait(tasks)
        during.append(grid_id in await stored())
        if rollback:
            raise Rollback

    return write, tasks, during


@pytest.mark.parametrize("outcome", ["committed", "aborted"])
async def test_a_task_that_outlived_its_attempt_deletes_its_file_at_once(
    elsewhere: str, outcome: str
) -> None:
    """A task started in an attempt of async_run_transaction that runs once
    fn runs again (a transient error) is in no transaction, as one that
    outlived its block: a file it deletes on another client is deleted at
    once. Its delete was noted in the journal of the next attempt's
    transaction: deferred to its commit, or dropped when it aborted (the
    file stayed, the proxy empty)."""
    proxy = await GoPaper.pdf.async_put(b"a draft")
    grid_id = proxy.grid_id
    write, tasks, during = outliving_delete(
        proxy.async_delete, grid_id, rollback=outcome == "aborted"
    )
    with contextlib.suppress(Rollback):
        await async_run_transaction(write)
    [task] = tasks
    assert task.exception() is None
    assert during == [False]
    assert proxy.grid_id is None
    assert grid_id not in await stored()


@pytest.mark.parametrize("outcome", ["committed", "aborted"])
async def test_a_task_that_outlived_an_inner_attempt_is_in_the_outer_block(
    elsewhere: str, other_alias: str, outcome: str
) -> None:
    """A task started in an attempt of async_run_transaction that runs inside
    a block on another alias, still running once the attempt ended, is in
    that block's transaction (its operations on that alias join it): a file
    it deletes on the files' client waits for the block's commit, and is
    kept if the block aborts. While the next attempt's transaction was on,
    its delete ran at once (kept only once that one ended): the file was
    gone although the block aborted."""
    proxy = await GoPaper.pdf.async_put(b"a draft")
    grid_id = proxy.grid_id
    write, tasks, during = outliving_delete(proxy.async_delete, grid_id)
    with contextlib.suppress(Rollback):
        async with async_run_in_transaction(other_alias):
            await async_run_transaction(write)
            if outcome == "aborted":
                raise Rollback
    [task] = tasks
    assert task.exception() is None
    assert during == [True]
    if outcome == "committed":
        assert proxy.grid_id is None
        assert grid_id not in await stored()
    else:
        assert proxy.grid_id == grid_id
        assert await proxy.async_read() == b"a draft"


@pytest.mark.parametrize("around", ["no block", "a block on another alias"])
async def test_a_task_that_outlived_its_attempt_deletes_a_documents_file_at_once(
    elsewhere: str, other_alias: str, around: str
) -> None:
    """A task started in an attempt of async_run_transaction, still running
    once fn runs again, deleting a file of a document on the transaction's
    client (the files on another one): the document's transaction is over
    for the task, so the delete runs at once, also inside a block on a third
    alias. There it raised InvalidOperation, the document's session refused
    as the task's transaction (its delete, of a file on another client,
    sends nothing on that session)."""
    paper = await saved_paper()
    grid_id = paper.pdf.grid_id
    write, tasks, during = outliving_delete(lambda: paper.pdf.async_delete(), grid_id)
    async with contextlib.AsyncExitStack() as stack:
        if around != "no block":
            await stack.enter_async_context(async_run_in_transaction(other_alias))
        await async_run_transaction(write)
    [task] = tasks
    assert task.exception() is None
    assert during == [False]
    assert paper.pdf.grid_id is None


async def test_a_task_of_a_committed_block_starts_its_own_transaction(
    elsewhere: str,
) -> None:
    """Once the block's transaction committed, while the deletes of its files
    on another client (which wait for that commit) are on their way, a task
    started in the block starts a transaction of its own: the block's is
    over. It raised NestedTransactionError until the block's session ended."""
    paper = await saved_paper()

    async def own(held: Any) -> None:
        await held.reached_server()  # the files' delete: the block committed
        async with async_run_in_transaction():
            await GoShelf(title="own").async_save()

    async with held_on_server(ELSEWHERE, "delete", 700) as held:
        async with async_run_in_transaction():
            await delete_document(paper)
            task = asyncio.create_task(own(held))
        await task
    assert await GoShelf.objects.async_scalar("title") == ["own"]
    assert await GoPaper.objects.async_count() == 0
    assert await stored() == set()


@contextlib.asynccontextmanager
async def failing(mode: Any, **data: Any) -> AsyncIterator[None]:
    """The server's failCommand fail point for the files' client."""
    admin = get_async_db().client.admin
    command = {"configureFailPoint": "failCommand"}
    data = {**data, "appName": ELSEWHERE}
    await admin.command({**command, "mode": mode, "data": data})
    try:
        yield
    finally:
        await admin.command({**command, "mode": "off"})


async def papers_with_files(delete: str) -> list[GoPaper]:
    """Saved papers holding three files in all: three papers of one each (for
    a queryset's delete), or one paper of a pdf and two scans."""
    if delete == "queryset":
        papers = [GoPaper(title=f"paper {number}") for number in range(3)]
        for paper in papers:
            await paper.pdf.async_put(b"content of " + paper.title.encode())
    else:
        papers = [GoPaper(title="one paper")]
        await papers[0].pdf.async_put(b"the pdf")
        for number in range(2):
            papers[0].scans.append(await GoPaper.scans.field.async_put(b"%d" % number))
    for paper in papers:
        await paper.async_save()
    return papers


@pytest.mark.parametrize("delete", ["queryset", "document"])
async def test_a_file_whose_delete_fails_leaves_only_itself(
    elsewhere: str, delete: str
) -> None:
    """The files-document delete of a file fails twice (PyMongo retried it
    once), as in an election that outlasts that retry: its error is raised,
    that file is left whole, and the other files of the deleted documents
    are deleted all the same (they were left, orphaned, the documents gone)."""
    papers = await papers_with_files(delete)
    first = papers[0].pdf.grid_id
    not_primary = {"errorCode": 10107, "errmsg": "not primary"}
    with pytest.raises(pymongo.errors.NotPrimaryError) as error:
        async with failing({"times": 2}, failCommands=["delete"], **not_primary):
            if delete == "queryset":
                await GoPaper.objects.order_by("id").async_delete()
            else:
                await papers[0].async_delete()
    assert error.value.details["code"] == 10107
    assert await GoPaper.objects.async_count() == 0
    assert await stored() == {first}
    chunks = get_async_db(ELSEWHERE)["fs.chunks"]
    assert await chunks.distinct("files_id") == [first]
    if delete == "document":  # its proxy holds it still: deleted again
        await papers[0].async_delete()
        assert await stored() == set() and await chunks.count_documents({}) == 0


@pytest.mark.parametrize("kind", ["block", "callback"])
def test_a_commit_the_loops_end_cuts_short_keeps_the_upload(
    mongodb_uri: str, kind: str
) -> None:
    """A transaction's commit held on the server after it applied (before its
    reply) when ``asyncio.run()`` ends and cancels it, and the commit it sends
    again refused with an unknown result: its outcome is unknown, as a
    timed-out commit's, and the file put on the other client, which the
    committed document refers to, is kept (it was deleted as if aborted)."""
    name, app = f"go_{uuid4().hex[:12]}", f"go-{uuid4().hex[:8]}"
    hold = "waitAfterCommandFinishesExecution"  # (the commit applied, held)
    papers: list[GoPaper] = []
    refused = CommitsRefused()

    connect = functools.partial(
        connect_both, name, mongodb_uri, main_app=app, main_listener=refused
    )

    async def main() -> None:
        admin = await connect()
        await GoPaper.async_ensure_indexes()  # (the collection, before the block)

        async def write() -> None:
            paper = GoPaper(title="committed")
            papers.append(paper)
            await paper.pdf.async_put(b"pdf")
            await paper.async_save()

        async def block() -> None:
            if kind == "callback":
                await async_run_transaction(write)
                return
            async with async_run_in_transaction():
                await write()

        configured = await admin.command(
            {
                "configureFailPoint": hold,
                "mode": "alwaysOn",
                "data": {"commands": ["commitTransaction"]},
            }
        )
        task = asyncio.ensure_future(block())
        await admin.command(
            {
                "waitForFailPoint": hold,
                "timesEntered": configured["count"] + 1,
                "maxTimeMS": 30_000,
            }
        )
        # (The commit sent again as the loop ends.)
        await commit_unknown_once(admin, app)
        assert not task.done()  # (left to the loop's end)

    async def left() -> tuple[list, list, list]:
        admin = await connect()
        await admin.command({"configureFailPoint": "failCommand", "mode": "off"})
        await admin.command({"configureFailPoint": hold, "mode": "off"})
        await Held(admin, app, ["commitTransaction"], 0).ended_on_server()
        stored_papers = await get_async_connection()[name]["go_paper"].find().to_list()
        files = get_async_connection(ELSEWHERE)[f"{name}_files"]
        ids = await files["fs.files"].distinct("_id")
        chunks = await files["fs.chunks"].distinct("files_id")
        await get_async_connection().drop_database(name)
        await get_async_connection(ELSEWHERE).drop_database(f"{name}_files")
        await disconnect_all_async()
        return stored_papers, ids, chunks

    try:
        asyncio.run(main())
    finally:
        stored_papers, ids, chunks = asyncio.run(left())
    [paper], [raw] = papers, stored_papers
    assert raw["title"] == "committed"
    assert ids == chunks == [raw["pdf"]]  # the file the committed paper refers to
    assert paper.pdf.grid_id == raw["pdf"]  # (kept, as after an unknown commit)
    assert refused.codes[-1:] == [50]  # (the one sent again: refused, unknown)


class CommitsRefused(pymongo.monitoring.CommandListener):
    """The error codes of the ``commitTransaction`` commands that failed."""

    def __init__(self) -> None:
        self.codes: list[int | None] = []

    def started(self, event: pymongo.monitoring.CommandStartedEvent) -> None:
        pass

    def succeeded(self, event: pymongo.monitoring.CommandSucceededEvent) -> None:
        pass

    def failed(self, event: pymongo.monitoring.CommandFailedEvent) -> None:
        if event.command_name == "commitTransaction":
            self.codes.append(event.failure.get("code"))


@pytest.mark.parametrize("held", ["delete", "commitTransaction"])
def test_a_loop_run_by_hand_waits_for_the_file_delete_after_a_commit(
    mongodb_uri: str, held: str
) -> None:
    """A block that committed a paper's delete, cancelled while the delete of
    its file on the other client (after the commit) is held on the server,
    in a loop run by hand that shuts down as asyncio asks
    (``shutdown_asyncgens()`` before ``close()``): the loop's end waits for
    that delete. It closed the files' client under it: the file's chunks
    stayed, found by nothing."""
    name, app = f"go_{uuid4().hex[:12]}", f"go-{uuid4().hex[:8]}"
    fail_point = {"configureFailPoint": "failCommand"}

    connect = functools.partial(
        connect_both, name, mongodb_uri, main_app=f"{app}-main", files_app=app
    )

    async def main() -> None:
        admin = await connect()
        paper = GoPaper(title="deleted")
        await paper.pdf.async_put(b"pdf")
        await paper.async_save()

        async def block() -> None:
            async with async_run_in_transaction():
                await paper.async_delete()

        on = app if held == "delete" else f"{app}-main"
        data = {"failCommands": [held], "blockConnection": True, "appName": on}
        configured = await admin.command(
            {**fail_point, "mode": {"times": 1}, "data": {**data, "blockTimeMS": 2_000}}
        )
        task = asyncio.ensure_future(block())
        # (The files' delete, after the commit; the fail point is turned off
        # after the loop's end, as that waits until the held delete ended.)
        await Held(admin, on, [held], configured["count"]).reached_server()
        task.cancel()
        await asyncio.wait([task])
        assert task.cancelled()

    async def left() -> tuple[int, ...]:
        admin = await connect()
        await admin.command({**fail_point, "mode": "off"})
        await Held(admin, app, ["delete"], 0).ended_on_server()
        await Held(admin, f"{app}-main", ["commitTransaction"], 0).ended_on_server()
        papers = await get_async_connection()[name]["go_paper"].count_documents({})
        files = get_async_connection(ELSEWHERE)[f"{name}_files"]
        counts = [await files[f"fs.{kind}"].count_documents({}) for kind in KINDS]
        await get_async_connection().drop_database(name)
        await get_async_connection(ELSEWHERE).drop_database(f"{name}_files")
        await disconnect_all_async()
        return papers, *counts

    loop = asyncio.new_event_loop()
    try:
        loop.run_until_complete(main())
        loop.run_until_complete(loop.shutdown_asyncgens())
    finally:
        loop.close()
    assert asyncio.run(left()) == (0, 0, 0)


KINDS = ("files", "chunks")


@pytest.mark.parametrize("end", ["asyncio.run", "shutdown_asyncgens"])
def test_the_loops_end_waits_for_the_delete_of_an_aborted_upload(
    mongodb_uri: str, end: str
) -> None:
    """A block that put a file on the other client, cancelled (by
    ``asyncio.run()``'s end, or by hand in a loop run by hand that then shuts
    down as asyncio asks) while the delete of its upload, as it aborts, is
    held on the server: the loop's end waits for that delete. It closed the
    files' client under it: the upload stayed, found by nothing."""
    name, app = f"go_{uuid4().hex[:12]}", f"go-{uuid4().hex[:8]}"
    fail_point = {"configureFailPoint": "failCommand"}

    connect = functools.partial(connect_both, name, mongodb_uri, files_app=app)

    async def main() -> None:
        admin = await connect()
        await GoPaper.async_ensure_indexes()  # (the collection, before the block)
        put = asyncio.Event()

        async def block() -> None:
            async with async_run_in_transaction():
                await GoPaper(title="draft").pdf.async_put(b"pdf")
                put.set()
                await asyncio.Event().wait()

        data = {"failCommands": ["delete"], "blockConnection": True, "appName": app}
        configured = await admin.command(
            {**fail_point, "mode": {"times": 1}, "data": {**data, "blockTimeMS": 2_000}}
        )
        task = asyncio.ensure_future(block())
        await put.wait()
        if end == "asyncio.run":
            return  # (its end cancels the block)
        task.cancel()
        await Held(admin, app, ["delete"], configured["count"]).reached_server()

    async def left() -> tuple[int, ...]:
        admin = await connect()
        await admin.command({**fail_point, "mode": "off"})
        await Held(admin, app, ["delete"], 0).ended_on_server()
        files = get_async_connection(ELSEWHERE)[f"{name}_files"]
        counts = [await files[f"fs.{kind}"].count_documents({}) for kind in KINDS]
        await get_async_connection().drop_database(name)
        await get_async_connection(ELSEWHERE).drop_database(f"{name}_files")
        await disconnect_all_async()
        return tuple(counts)

    if end == "asyncio.run":
        asyncio.run(main())
    else:
        loop = asyncio.new_event_loop()
        try:
            loop.run_until_complete(main())
            loop.run_until_complete(loop.shutdown_asyncgens())
        finally:
            loop.close()
    assert asyncio.run(left()) == (0, 0)
