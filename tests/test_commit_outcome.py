"""A commit the server applied whose reply the block never read: its task
cancelled while the commit is on its way (the commit goes on and settles the
block by its outcome), or the event loop ending then (``asyncio.run()``
returning cancels the commit: it is sent again, and the server's reply tells
its outcome; without one in time, it stays unknown). The commit is held on
the server once applied (``waitAfterCommandFinishesExecution``), before its
reply."""

from __future__ import annotations

import asyncio
import inspect
import threading
from collections.abc import Awaitable, Callable
from typing import Any
from uuid import uuid4

import pymongo
import pytest
from mongoengine.connection import DEFAULT_CONNECTION_NAME
from pymongo import AsyncMongoClient, monitoring

from conftest import Held, commit_unknown_once
from mongoengine_async import (
    Document,
    FileField,
    StringField,
    async_run_in_transaction,
    connect_async,
    disconnect_all_async,
    get_async_connection,
)

ELSEWHERE = "outcome-files"
HOLD = "waitAfterCommandFinishesExecution"  # (the commit applied, held)


# PyMongo 4.17 checks a connection out through async generators
# (AsyncMongoClient._checkout, Pool.checkout); 4.18.2 (checked) and 4.20.1 do
# so with a class (_ClientCheckout), no generator.
CHECKOUT_IS_A_GENERATOR = inspect.isasyncgenfunction(
    getattr(AsyncMongoClient._checkout, "__wrapped__", None)
)


def reported_but_checkout(reported: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """What the loop's exception handler got, less the one report PyMongo's
    checkout generators may make where they exist (see CHECKOUT_IS_A_GENERATOR;
    docs/connection.md): ``shutdown_asyncgens()`` finalises every generator at
    once, those of an operation on its way in the work it waits for (a commit
    sent again, a file's delete) too, the outer one after the inner."""
    for context in reported if CHECKOUT_IS_A_GENERATOR else []:
        error = context.get("exception")
        if (
            getattr(context.get("asyncgen"), "__qualname__", "")
            == "AsyncMongoClient._checkout"
            and type(error) is RuntimeError
            and str(error) == "generator didn't stop after athrow()"
        ):
            return [other for other in reported if other is not context]
    return reported


class OcPaper(Document):
    title = StringField()
    pdf = FileField(db_alias=ELSEWHERE)


class Commits(monitoring.CommandListener):
    """Sets ``resent`` once a second ``commitTransaction`` starts, ``third``
    once a third does (from any thread: the loop's end sends them as no test
    code runs)."""

    def __init__(self) -> None:
        self.started_count = 0
        self.resent = threading.Event()
        self.third = threading.Event()
        self.refused: list[int | None] = []  # (the codes of those that failed)

    def started(self, event: monitoring.CommandStartedEvent) -> None:
        if event.command_name == "commitTransaction":
            self.started_count += 1
            if self.started_count == 2:
                self.resent.set()
            elif self.started_count == 3:
                self.third.set()

    def succeeded(self, event: monitoring.CommandSucceededEvent) -> None:
        pass

    def failed(self, event: monitoring.CommandFailedEvent) -> None:
        if event.command_name == "commitTransaction":
            self.refused.append(event.failure.get("code"))


async def connect(
    uri: str, name: str, app: str, listener: Any = None, files_listener: Any = None
) -> Any:
    """The default alias on ``name`` (named ``app`` for the server's
    operations, with ``listener``), the files' alias on ``{name}_files`` (a
    client of its own, named otherwise: outside the transaction; with
    ``files_listener``): the admin database."""
    for alias, db, named, heard in (
        (DEFAULT_CONNECTION_NAME, name, app, listener),
        (ELSEWHERE, f"{name}_files", f"{app}-files", files_listener),
    ):
        await connect_async(
            db,
            alias=alias,
            host=uri,
            appname=named,
            uuidRepresentation="standard",
            event_listeners=[] if heard is None else [heard],
        )
    return get_async_connection().admin


async def hold_commits(admin: Any) -> int:
    """Hold every commit once the server applied it; the times entered before."""
    configured = await admin.command(
        {
            "configureFailPoint": HOLD,
            "mode": "alwaysOn",
            "data": {"commands": ["commitTransaction"]},
        }
    )
    return int(configured["count"])


async def commit_held(admin: Any, before: int) -> None:
    """Return once the server holds a commit it applied."""
    await admin.command(
        {"waitForFailPoint": HOLD, "timesEntered": before + 1, "maxTimeMS": 30_000}
    )


async def release(admin: Any, app: str) -> None:
    """Let the held commits reply, and wait until they did."""
    await admin.command({"configureFailPoint": HOLD, "mode": "off"})
    await Held(admin, app, ["commitTransaction"], 0).ended_on_server()


async def seed() -> OcPaper:
    """A paper saved with its file (on the files' client)."""
    paper = OcPaper(title="kept")
    await paper.pdf.async_put(b"pdf")
    return await paper.async_save()


async def delete_in_block(paper: OcPaper) -> None:
    """Delete ``paper`` in a block: its file's delete waits for the commit."""
    async with async_run_in_transaction():
        await paper.async_delete()


async def left(name: str) -> tuple[int, list[Any], list[Any]]:
    """The papers left, the ids of the files and of their chunks."""
    files = get_async_connection(ELSEWHERE)[f"{name}_files"]
    return (
        await get_async_connection()[name]["oc_paper"].count_documents({}),
        await files["fs.files"].distinct("_id"),
        await files["fs.chunks"].distinct("files_id"),
    )


def release_once_resent(
    uri: str, commits: Commits, sent: threading.Event | None = None
) -> threading.Thread:
    """In a thread (the loop's end runs no test code): once the commit is
    sent again (``sent``: by default the second), let the held one reply
    (the server holds its session till then), and the one sent again."""

    def release() -> None:
        # (If never: the held commit is released after.)
        (commits.resent if sent is None else sent).wait(60)
        with pymongo.MongoClient(uri) as client:
            client.admin.command({"configureFailPoint": HOLD, "mode": "off"})

    thread = threading.Thread(target=release, daemon=True)
    thread.start()
    return thread


async def dropped(name: str) -> None:
    await get_async_connection().drop_database(name)
    await get_async_connection(ELSEWHERE).drop_database(f"{name}_files")
    await disconnect_all_async()


def test_a_block_cancelled_while_an_applied_commit_replies(mongodb_uri: str) -> None:
    """The task is cancelled while the commit, applied, is held before its
    reply: the cancellation is raised at once; the commit goes on, and once
    its reply came the file of the deleted paper is deleted: nothing
    orphaned, nothing reported."""
    name, app = f"oc_{uuid4().hex[:12]}", f"oc-{uuid4().hex[:8]}"
    reported: list[dict[str, Any]] = []

    async def main() -> tuple[int, list[Any], list[Any]]:
        asyncio.get_running_loop().set_exception_handler(
            lambda _, context: reported.append(context)
        )
        admin = await connect(mongodb_uri, name, app)
        paper = await seed()
        before = await hold_commits(admin)
        task = asyncio.ensure_future(delete_in_block(paper))
        await commit_held(admin, before)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        await release(admin, app)
        try:
            for _ in range(500):  # (the steps after the commit: a task)
                if (outcome := await left(name)) == (0, [], []):
                    break
                await asyncio.sleep(0.02)
            return outcome
        finally:
            await dropped(name)

    assert asyncio.run(main()) == (0, [], [])
    assert reported == []


Outcome = tuple[int, list[Any], list[Any]]  # (papers, files and chunks left)


def run_then_left(
    main: Callable[[], Awaitable[None]],
    uri: str,
    name: str,
    app: str,
    listener: Any = None,
    files_listener: Any = None,
    settle: Callable[[Any], Awaitable[None]] | None = None,
) -> tuple[Outcome, list[dict[str, Any]]]:
    """``asyncio.run(main())``, its loop's exception handler noting what it
    gets; then, in a loop of its own (the aliases connected again as
    registered, ``settle(admin)`` first), the papers, files and chunks
    left, the databases dropped after. Gives those and what was noted."""
    reported: list[dict[str, Any]] = []

    async def noted() -> None:
        asyncio.get_running_loop().set_exception_handler(
            lambda _, context: reported.append(context)
        )
        await main()

    async def after() -> Outcome:
        admin = await connect(uri, name, app, listener, files_listener)
        if settle is not None:
            await settle(admin)
        try:
            return await left(name)
        finally:
            await dropped(name)

    try:
        asyncio.run(noted())
    finally:
        outcome = asyncio.run(after())
    return outcome, reported


def loop_ended_during_commit(
    mongodb_uri: str, resent: Any
) -> tuple[OcPaper, Outcome, list[dict[str, Any]], int]:
    """``asyncio.run()`` returns right after the cancel of a task deleting a
    paper in a block, its commit applied and held before its reply;
    ``resent(admin, app, commits)`` runs before the cancel. The paper, the
    papers, files and chunks left, what the loop's exception handler got,
    and the commits sent."""
    name, app = f"oc_{uuid4().hex[:12]}", f"oc-{uuid4().hex[:8]}"
    papers: list[OcPaper] = []
    commits = Commits()

    async def main() -> None:
        admin = await connect(mongodb_uri, name, app, commits)
        papers.append(await seed())
        before = await hold_commits(admin)
        task = asyncio.ensure_future(delete_in_block(papers[0]))
        await commit_held(admin, before)
        await resent(admin, app, commits)
        task.cancel()

    async def settle(admin: Any) -> None:
        await admin.command({"configureFailPoint": "failCommand", "mode": "off"})
        await release(admin, app)

    outcome, reported = run_then_left(
        main, mongodb_uri, name, app, commits, settle=settle
    )
    return papers[0], outcome, reported, commits.started_count


def test_a_commit_the_loops_end_cut_is_sent_again_and_its_steps_run(
    mongodb_uri: str,
) -> None:
    """The loop's end cancels the commit on its way: it is sent again, its
    reply tells it committed, and the steps after a commit run before the
    loop ends: the file of the deleted paper is deleted (it was left with its
    chunks, orphaned: the outcome was taken for unknown)."""

    async def released(admin: Any, app: str, commits: Commits) -> None:
        release_once_resent(mongodb_uri, commits)

    paper, outcome, reported, sent = loop_ended_during_commit(mongodb_uri, released)
    assert outcome == (0, [], [])
    assert (
        paper.pdf.grid_id is None
        and reported_but_checkout(reported) == []
        and sent == 2
    )


def test_a_commit_sent_again_without_a_reply_stays_unknown(mongodb_uri: str) -> None:
    """The commit sent again as the loop ends fails with an unknown result:
    the outcome stays unknown, as documented: the steps after a commit do not
    run, so the paper is gone (the first commit applied) and its file left,
    orphaned; the instance is given back (its proxy holds the file), nothing
    reported."""

    heard: list[Commits] = []

    async def refused(admin: Any, app: str, commits: Commits) -> None:
        heard.append(commits)
        await commit_unknown_once(admin, app)

    paper, outcome, reported, sent = loop_ended_during_commit(mongodb_uri, refused)
    file_id = paper.pdf.grid_id
    assert file_id is not None and sent == 2  # (sent again as the loop ended)
    assert heard[0].refused[-1:] == [50]  # (the one sent again: refused, unknown)
    assert outcome == (0, [file_id], [file_id]) and reported == []


def test_a_commit_sent_again_and_cancelled_again_is_sent_once_more(
    mongodb_uri: str,
) -> None:
    """A shutdown cancels every task, the commit's too, waits (here: until the
    commit is sent again) and returns: the loop's end cancels that commit sent
    again. It is sent once more (in the same 30 s), its reply tells it
    committed, and the steps after a commit run: the file of the deleted paper
    is deleted (it was left, orphaned: the outcome was taken for unknown)."""

    async def shut_down(admin: Any, app: str, commits: Commits) -> None:
        release_once_resent(mongodb_uri, commits, commits.third)
        tasks = asyncio.all_tasks() - {asyncio.current_task()}
        for task in tasks:
            task.cancel()
        await asyncio.to_thread(commits.resent.wait, 60)

    paper, outcome, reported, sent = loop_ended_during_commit(mongodb_uri, shut_down)
    assert outcome == (0, [], [])
    assert (
        paper.pdf.grid_id is None
        and reported_but_checkout(reported) == []
        and sent == 3
    )


class CancelledAsRefused(Commits):
    """Cancels the task whose first ``commitTransaction`` failed: the block's
    helper, as the loop's end would during PyMongo's backoff before it runs
    the transaction again (or sooner, at its next wait)."""

    def __init__(self) -> None:
        super().__init__()
        self.refused: list[Any] = []

    def failed(self, event: monitoring.CommandFailedEvent) -> None:
        if event.command_name == "commitTransaction":
            self.refused.append(event.failure.get("codeName"))
            if len(self.refused) == 1:
                task = asyncio.current_task()
                assert task is not None
                task.cancel()


def test_a_commit_sent_again_and_refused_as_aborted_runs_the_after_abort_steps(
    mongodb_uri: str,
) -> None:
    """The server aborted the block's transaction (its session killed): the
    commit is refused with NoSuchTransaction, a TransientTransactionError, and
    the helper cancelled before PyMongo runs the transaction again. The commit
    sent again is refused so too: that says the transaction did not commit
    (a committed one replies OK to its commit sent again), so the steps after
    an abort run: the file put in the block is deleted, its proxy emptied (it
    was kept, orphaned: the outcome was taken for unknown)."""
    name, app = f"oc_{uuid4().hex[:12]}", f"oc-{uuid4().hex[:8]}"
    commits = CancelledAsRefused()
    papers: list[OcPaper] = []

    async def put_in_block() -> None:
        async with async_run_in_transaction() as session:
            paper = OcPaper(title="put")
            papers.append(paper)
            await paper.pdf.async_put(b"pdf")
            await paper.async_save()
            # (Another client: the session's transaction aborted on the server.)
            files_admin = get_async_connection(ELSEWHERE).admin
            await files_admin.command({"killSessions": [session.session_id]})

    async def main() -> None:
        await connect(mongodb_uri, name, app, commits)
        with pytest.raises(asyncio.CancelledError):
            await put_in_block()
        await disconnect_all_async()  # (after the steps after the abort: a task)

    outcome, reported = run_then_left(main, mongodb_uri, name, app, commits)
    assert outcome == (0, [], [])
    assert commits.refused == ["NoSuchTransaction"] * 2 and commits.started_count == 2
    assert papers[0].pdf.grid_id is None and reported == []


class FileDeletes(monitoring.CommandListener):
    """Sets ``sent`` once the files' client sends a ``delete``."""

    def __init__(self) -> None:
        self.sent = asyncio.Event()

    def started(self, event: monitoring.CommandStartedEvent) -> None:
        if event.command_name == "delete":
            self.sent.set()

    def succeeded(self, event: monitoring.CommandSucceededEvent) -> None:
        pass

    def failed(self, event: monitoring.CommandFailedEvent) -> None:
        pass


@pytest.mark.parametrize("in_flight", [False, True], ids=["at-once", "in-flight"])
def test_a_file_put_in_a_failed_block_is_deleted_before_the_loop_ends(
    mongodb_uri: str, in_flight: bool
) -> None:
    """A block puts a file on another client, saves its paper and raises; the
    caller catches the error and ``asyncio.run()`` ends: at once (the loop's
    end cancels the after-abort delete's task before it began: it runs once
    more; the file and chunks were left, orphaned), or once that delete is
    on its way (held on the server: the delete cut short is sent again)."""
    name, app = f"oc_{uuid4().hex[:12]}", f"oc-{uuid4().hex[:8]}"
    deletes = FileDeletes()

    async def main() -> None:
        admin = await connect(mongodb_uri, name, app, files_listener=deletes)
        if in_flight:  # (the files document's delete applies once let go)
            await admin.command(
                {
                    "configureFailPoint": "failCommand",
                    "mode": {"times": 1},
                    "data": {
                        "failCommands": ["delete"],
                        "appName": f"{app}-files",
                        "blockConnection": True,
                        "blockTimeMS": 1000,
                    },
                }
            )
        with pytest.raises(ValueError, match="refused"):
            async with async_run_in_transaction():
                paper = OcPaper(title="put")
                await paper.pdf.async_put(b"pdf")
                await paper.async_save()
                raise ValueError("refused")
        if in_flight:
            await deletes.sent.wait()

    outcome, reported = run_then_left(
        main, mongodb_uri, name, app, files_listener=deletes
    )
    assert outcome == (0, [], []) and reported_but_checkout(reported) == []
