"""``disconnect_async(alias)`` waits for what cancelled writes left going on
that may need ``alias`` (the write, its delete rules' and its files'), on
any event loop, and for nothing else. Uses fail points: run on a server of
its own (``python -m mongoengine_async.testing``)."""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine
from functools import partial
from typing import Any

import pymongo
import pytest
from pymongo import AsyncMongoClient

import mongoengine_async
from conftest import Held, held_on_server
from mongoengine_async import Document, FileField, detached, signals
from mongoengine_async.connection import disconnect_all_async
from mongoengine_async.testing import fresh_database

BLOCK_MS = 3000


class DwFiled(Document):
    data = FileField(collection_name="dw_files")


class DwFiledElsewhere(Document):
    """Its files in a bucket on another alias's database."""

    data = FileField(collection_name="dw_files", db_alias="dw-files")


@pytest.fixture
async def app(mongodb_uri: str) -> AsyncIterator[str]:
    """Alias "default" on a client of its own application name (the fail
    point holds its commands only), without retryable writes."""
    name = "dw-app"
    try:
        async with fresh_database(
            "default", mongodb_uri, appname=name, retryWrites=False
        ):
            yield name
    finally:
        await disconnect_all_async()


def reported_on(loop: asyncio.AbstractEventLoop) -> list[dict[str, Any]]:
    """What ``loop``'s exception handler is given from now on."""
    reported: list[dict[str, Any]] = []
    loop.set_exception_handler(lambda _, report: reported.append(report))
    return reported


async def filed(cls: type[Document]) -> Document:
    """A saved document of ``cls`` holding a file."""
    document = cls()
    await document.data.async_put(b"contents")
    return await document.async_save()


async def left(client: AsyncMongoClient, database: str, bucket: str) -> list[int]:
    """The documents of DwFiled's collection, and the files and chunks of
    ``bucket`` of ``database``, counted."""
    return [
        await client[database]["dw_filed"].count_documents({}),
        await client[database][f"{bucket}.files"].count_documents({}),
        await client[database][f"{bucket}.chunks"].count_documents({}),
    ]


async def cancelled_once_held(document: Document, app: str, admin: Any) -> Any:
    """Start ``document``'s delete, held on the server (BLOCK_MS), and cancel
    it once held; give the held command's :class:`conftest.Held`, entered
    (the caller leaves it)."""
    holding = held_on_server(app, "delete", BLOCK_MS, admin=admin)
    held = await holding.__aenter__()
    deleting = asyncio.ensure_future(document.async_delete())
    await held.reached_server()
    deleting.cancel()
    await asyncio.wait([deleting])
    return holding, held


async def test_disconnecting_another_alias_does_not_wait_for_a_cancelled_delete(
    app, mongodb_uri
):
    """``disconnect_async("dw-idle")`` while a cancelled delete on alias
    "default" is held on the server: it returns at once, the delete still
    held (and that delete then ends, its file gone, nothing reported). It
    waited for that delete, whose alias it does not close (up to 30 s for a
    server that does not answer)."""
    document = await filed(DwFiled)
    name = mongoengine_async.get_async_db().name
    reported = reported_on(asyncio.get_running_loop())
    async with AsyncMongoClient(mongodb_uri) as client:
        try:
            async with fresh_database("dw-idle", mongodb_uri):
                holding, held = await cancelled_once_held(document, app, client.admin)
                try:
                    await mongoengine_async.disconnect_async("dw-idle")
                    assert await held.still_on_server()
                finally:
                    await holding.__aexit__(None, None, None)
            await detached.all_finished(30)  # (the file's delete, its last step)
        finally:
            asyncio.get_running_loop().set_exception_handler(None)
        assert reported == []
        assert await left(client, name, "dw_files") == [0, 0, 0]


async def test_disconnecting_the_alias_of_a_deleted_documents_files_waits(
    app, mongodb_uri
):
    """``disconnect_async("dw-files")``, the alias of the bucket of a
    document's file field, while the document's cancelled delete (on alias
    "default") is held on the server: it returns once the file's delete is
    done, the file gone. Waiting only for the work of the alias it closes
    must count the aliases of the files too."""
    async with AsyncMongoClient(mongodb_uri) as client:
        async with fresh_database("dw-files", mongodb_uri):
            document = await filed(DwFiledElsewhere)
            files = mongoengine_async.get_async_db("dw-files").name
            reported = reported_on(asyncio.get_running_loop())
            try:
                holding, _ = await cancelled_once_held(document, app, client.admin)
                try:
                    await mongoengine_async.disconnect_async("dw-files")
                finally:
                    await holding.__aexit__(None, None, None)
            finally:
                asyncio.get_running_loop().set_exception_handler(None)
            assert reported == []
            assert (await left(client, files, "dw_files"))[1:] == [0, 0]


async def test_disconnecting_from_another_loop_waits_for_a_cancelled_delete(
    app, mongodb_uri
):
    """``disconnect_async()`` on this loop while a delete cancelled on a loop
    of another thread is held on the server: it returns once that delete and
    its file's are done (the document and file gone, nothing reported on
    either loop). It returned at once, the delete still held: waiting for the
    work of its own loop only, it dropped the alias under the other loop's
    (the file's delete then finds no connection, the file stays)."""
    document = await filed(DwFiled)
    name = mongoengine_async.get_async_db().name
    cancelled, disconnected = threading.Event(), threading.Event()
    reported_there: list[dict[str, Any]] = []

    async def other_loop() -> None:
        asyncio.get_running_loop().set_exception_handler(
            lambda _, report: reported_there.append(report)
        )
        async with AsyncMongoClient(mongodb_uri) as client:
            holding, _ = await cancelled_once_held(document, app, client.admin)
            try:
                cancelled.set()
                await asyncio.to_thread(disconnected.wait, 60)
            finally:
                await holding.__aexit__(None, None, None)

    thread = threading.Thread(target=asyncio.run, args=(other_loop(),))
    thread.start()
    reported = reported_on(asyncio.get_running_loop())
    try:
        assert await asyncio.to_thread(cancelled.wait, 60)
        await mongoengine_async.disconnect_async()
        async with AsyncMongoClient(mongodb_uri) as client:
            counts = await left(client, name, "dw_files")
    finally:
        disconnected.set()
        await asyncio.to_thread(thread.join)
        asyncio.get_running_loop().set_exception_handler(None)
    assert reported == [] and reported_there == []
    assert counts == [0, 0, 0]


class DwOnB(Document):
    meta = {"db_alias": "dw-b"}


async def test_disconnecting_all_waits_once_for_the_work_of_every_alias(
    app, mongodb_uri, monkeypatch
):
    """``disconnect_all_async()`` while a cancelled delete on each of two
    aliases is held on the server longer than it waits (``_END_SECONDS``,
    shortened here): it waits once, for both, and reports both as its own.
    It waited for each alias in turn, each its own time (twice as long in
    all), each delete reported by that alias's ``disconnect_async()``."""
    monkeypatch.setattr(mongoengine_async.connection, "_END_SECONDS", 1)
    async with (
        fresh_database("dw-b", mongodb_uri, appname=app, retryWrites=False),
        AsyncMongoClient(mongodb_uri) as client,
    ):
        on_a, on_b = await DwFiled().async_save(), await DwOnB().async_save()
        reported = reported_on(asyncio.get_running_loop())
        fail_point = {"configureFailPoint": "failCommand"}
        data = {"failCommands": ["delete"], "blockConnection": True}
        data.update(blockTimeMS=5000, appName=app)
        entered = await client.admin.command(
            {**fail_point, "mode": {"times": 2}, "data": data}
        )
        try:
            deletes = [asyncio.ensure_future(on_a.async_delete())]
            deletes.append(asyncio.ensure_future(on_b.async_delete()))
            await client.admin.command(
                {
                    "waitForFailPoint": "failCommand",
                    "timesEntered": entered["count"] + 2,
                    "maxTimeMS": 30_000,
                }
            )
            for delete in deletes:
                delete.cancel()
            await asyncio.wait(deletes)
            await mongoengine_async.disconnect_all_async()
        finally:
            await client.admin.command({**fail_point, "mode": "off"})
            asyncio.get_running_loop().set_exception_handler(None)
    assert sorted(
        report["message"].split(" for the write of ")[0] for report in reported
    ) == [
        "disconnect_all_async() stopped waiting",
        "disconnect_all_async() stopped waiting",
    ]


def in_a_task_of_its_own(work: Coroutine[Any, Any, None]) -> Awaitable[None]:
    return asyncio.ensure_future(work)


def with_a_time_limit(work: Coroutine[Any, Any, None]) -> Awaitable[None]:
    return asyncio.wait_for(work, 60)  # (in a task of its own on Python 3.11)


@pytest.mark.parametrize("through", [in_a_task_of_its_own, with_a_time_limit])
async def test_a_receiver_disconnecting_through_another_task_does_not_wait_for_it(
    app, mongodb_uri, monkeypatch, through
):
    """A ``post_delete`` receiver of a delete whose caller was cancelled,
    awaiting ``disconnect_async()`` in a task of its own (``asyncio.wait_for``
    on Python 3.11, a TaskGroup): it returns, nothing reported, the file
    gone. It waited for the steps it is part of, which await the receiver,
    until its time was spent (``_END_SECONDS``, shortened here), then
    reported them as possibly not done."""
    monkeypatch.setattr(mongoengine_async.connection, "_END_SECONDS", 2)
    document = await filed(DwFiled)
    name = mongoengine_async.get_async_db().name
    disconnected = asyncio.Event()

    async def post_delete(sender: Any, document: Any, **_: Any) -> None:
        await through(mongoengine_async.disconnect_async())
        disconnected.set()

    reported = reported_on(asyncio.get_running_loop())
    signals.post_delete.connect(post_delete, sender=DwFiled)
    async with AsyncMongoClient(mongodb_uri) as client:
        try:
            holding, _ = await cancelled_once_held(document, app, client.admin)
            try:
                await disconnected.wait()
            finally:
                await holding.__aexit__(None, None, None)
        finally:
            signals.post_delete.disconnect(post_delete, sender=DwFiled)
            asyncio.get_running_loop().set_exception_handler(None)
        assert reported == []
        assert await left(client, name, "dw_files") == [0, 0, 0]


def test_disconnecting_does_not_wait_for_a_loop_that_is_not_running(
    mongodb_uri, monkeypatch
):
    """A loop run by hand leaves a cancelled delete going on (its delete held
    on the server) between its runs; ``disconnect_async()`` on another loop of
    the same thread returns without waiting for it, nothing reported: that
    loop cannot run meanwhile. It waited for it until its time was spent
    (``_END_SECONDS``, shortened here), then reported it."""
    monkeypatch.setattr(mongoengine_async.connection, "_END_SECONDS", 1)
    app = "dw-by-hand"
    by_hand = asyncio.new_event_loop()
    reported: list[dict[str, Any]] = []
    try:
        holding = by_hand.run_until_complete(
            cancelled_delete_left_going_on(mongodb_uri, app)
        )

        async def disconnect() -> None:
            asyncio.get_running_loop().set_exception_handler(
                lambda _, report: reported.append(report)
            )
            await mongoengine_async.disconnect_async()

        asyncio.run(disconnect())
        by_hand.run_until_complete(holding.__aexit__(None, None, None))
    finally:
        by_hand.set_exception_handler(lambda _, report: None)  # (its alias gone)
        by_hand.run_until_complete(by_hand.shutdown_asyncgens())
        by_hand.close()
        with pymongo.MongoClient(mongodb_uri) as client:
            client.drop_database("dw_by_hand")
    assert reported == []


async def cancelled_delete_left_going_on(mongodb_uri: str, app: str) -> Any:
    """Connect "default" (application ``app``) and leave a cancelled delete
    going on, held on the server; give its fail point's context manager."""
    await mongoengine_async.connect_async(
        "dw_by_hand",
        host=mongodb_uri,
        appname=app,
        retryWrites=False,
        uuidRepresentation="standard",
    )
    document = await DwFiled().async_save()
    admin = mongoengine_async.get_async_connection().admin
    holding, _ = await cancelled_once_held(document, app, admin)
    return holding


def test_disconnecting_stops_waiting_for_a_loop_that_stops_running_meanwhile(
    mongodb_uri, monkeypatch
):
    """A loop of another thread, run by hand, leaves a cancelled delete going
    on (held on the server) and stops running while ``disconnect_async()``
    waits for it here: it returns before that loop runs again, nothing
    reported, as for a loop not running when it began (that loop cannot end
    the delete meanwhile). It waited until that loop ran again (here, once it
    gave up waiting for the disconnect), else its whole time (30 s)."""
    monkeypatch.setattr(mongoengine_async.connection, "_END_SECONDS", 120)
    app = "dw-by-hand"
    by_hand = asyncio.new_event_loop()
    started, stop, disconnected = (threading.Event() for _ in range(3))
    holdings: list[Any] = []
    before_running_again: list[bool] = []

    async def leave_delete_then_stop() -> None:
        holdings.append(await cancelled_delete_left_going_on(mongodb_uri, app))
        started.set()
        await asyncio.to_thread(stop.wait, 60)

    def run_by_hand() -> None:
        by_hand.run_until_complete(leave_delete_then_stop())
        before_running_again.append(disconnected.wait(20))
        by_hand.set_exception_handler(lambda _, report: None)  # (its alias gone)
        by_hand.run_until_complete(holdings[0].__aexit__(None, None, None))
        by_hand.run_until_complete(detached.all_finished(30))

    async def disconnect() -> list[dict[str, Any]]:
        reported = reported_on(asyncio.get_running_loop())
        assert await asyncio.to_thread(started.wait, 60)
        disconnecting = asyncio.ensure_future(mongoengine_async.disconnect_async())
        await asyncio.sleep(0)  # (it waits for the delete on the other loop)
        stop.set()
        await disconnecting
        return reported

    thread = threading.Thread(target=run_by_hand)
    thread.start()
    try:
        reported = asyncio.run(disconnect())
    finally:
        disconnected.set()
        stop.set()
        thread.join()
        by_hand.run_until_complete(by_hand.shutdown_asyncgens())
        by_hand.close()
        with pymongo.MongoClient(mongodb_uri) as client:
            client.drop_database("dw_by_hand")
    assert before_running_again == [True]
    assert reported == []


async def cancelled_then_disconnected(
    held: Held, write: Callable[[], Awaitable[None]], alias: str = "default"
) -> bool:
    """Cancel ``write`` once its command ``held`` reached the server, then
    ``disconnect_async(alias)``: whether that command is still held after."""
    writing = asyncio.ensure_future(write())
    await held.reached_server()
    writing.cancel()
    await asyncio.wait([writing])
    await mongoengine_async.disconnect_async(alias)
    return await held.still_on_server()


@contextlib.asynccontextmanager
async def held_beside_an_idle_alias(
    app: str, command: str, client: AsyncMongoClient[Any], mongodb_uri: str
) -> AsyncIterator[Held]:
    """The next ``command`` of ``app`` held on the server inside the block,
    alias "dw-idle" connected; after it, what is held waited for (30 s at
    most: a server that does not answer), the loop's exception handler reset."""
    try:
        async with (
            fresh_database("dw-idle", mongodb_uri),
            held_on_server(app, command, BLOCK_MS, admin=client.admin) as held,
        ):
            yield held
        await detached.all_finished(30)
    finally:
        asyncio.get_running_loop().set_exception_handler(None)


async def test_disconnecting_another_alias_does_not_wait_for_a_cancelled_commit(
    app, mongodb_uri
):
    """``disconnect_async("dw-idle")`` while the commit of a transaction on
    alias "default", whose caller was cancelled, is held on the server: it
    returns at once, the commit still held (which then commits, the document
    saved, nothing reported). It waited for that commit, whose alias it does
    not close (up to 30 s for a server that does not answer)."""
    name = mongoengine_async.get_async_db().name
    reported = reported_on(asyncio.get_running_loop())
    async with AsyncMongoClient(mongodb_uri) as client:
        idle = held_beside_an_idle_alias(app, "commitTransaction", client, mongodb_uri)
        async with idle as held:  # (then the commit waited for)
            assert await cancelled_then_disconnected(
                held, saved_in_a_transaction, "dw-idle"
            )
        assert reported == []
        assert await client[name]["dw_filed"].count_documents({}) == 1


async def saved_in_a_transaction() -> None:
    """Save a DwFiled in a transaction on alias "default"."""
    async with mongoengine_async.async_run_in_transaction():
        await DwFiled().async_save()


async def test_disconnecting_the_alias_of_a_cancelled_commit_waits(app, mongodb_uri):
    """``disconnect_async()`` while the commit of a transaction on its alias,
    whose caller was cancelled, is held on the server: it returns once the
    commit is done (the document saved, nothing reported): the commit needs
    the alias's client."""
    name = mongoengine_async.get_async_db().name
    reported = reported_on(asyncio.get_running_loop())
    async with AsyncMongoClient(mongodb_uri) as client:
        holding = held_on_server(app, "commitTransaction", BLOCK_MS, admin=client.admin)
        held = await holding.__aenter__()
        try:
            assert not await cancelled_then_disconnected(held, saved_in_a_transaction)
        finally:
            await holding.__aexit__(None, None, None)
            asyncio.get_running_loop().set_exception_handler(None)
        assert reported == []
        assert await client[name]["dw_filed"].count_documents({}) == 1


async def test_disconnecting_another_alias_does_not_wait_for_an_aborted_uploads_delete(
    app, mongodb_uri
):
    """``disconnect_async("dw-idle")`` while the delete of a file uploaded (on
    alias "dw-files") in a transaction that aborted is held on the server: it
    returns at once, the delete still held (which then ends, the file gone,
    nothing reported). It waited for that delete, whose alias it does not
    close (up to 30 s for a server that does not answer)."""
    reported = reported_on(asyncio.get_running_loop())
    async with (
        AsyncMongoClient(mongodb_uri) as client,
        fresh_database("dw-files", mongodb_uri, appname=app),
    ):
        files = mongoengine_async.get_async_db("dw-files").name
        idle = held_beside_an_idle_alias(app, "delete", client, mongodb_uri)
        async with idle as held:  # (then the file's delete waited for)
            with pytest.raises(LookupError):
                async with mongoengine_async.async_run_in_transaction():
                    document = DwFiledElsewhere()
                    await document.data.async_put(b"contents")
                    await document.async_save()
                    raise LookupError
            await held.reached_server()
            await mongoengine_async.disconnect_async("dw-idle")
            assert await held.still_on_server()
        assert reported == []
        assert (await left(client, files, "dw_files"))[1:] == [0, 0]


@pytest.mark.parametrize("alias, waits", [("dw-idle", False), ("dw-files", True)])
async def test_disconnecting_waits_for_a_file_delete_after_commit_of_its_alias_only(
    app, mongodb_uri, alias, waits
):
    """``disconnect_async(alias)`` while the delete of a file on alias
    "dw-files" that a committed transaction deleted the document of (the
    file's delete waits for the commit, the bucket on another client), its
    caller cancelled, is held on the server: another alias returns at once,
    the delete still held; "dw-files" once it is done (the file gone, nothing
    reported either way). Another alias waited for that step, whose alias it
    does not close (up to 30 s for a server that does not answer)."""
    files_app = "dw-files-app"
    reported = reported_on(asyncio.get_running_loop())
    async with (
        AsyncMongoClient(mongodb_uri) as client,
        fresh_database("dw-files", mongodb_uri, appname=files_app),
    ):
        files = mongoengine_async.get_async_db("dw-files").name
        document = await filed(DwFiledElsewhere)
        idle = held_beside_an_idle_alias(files_app, "delete", client, mongodb_uri)
        async with idle as held:  # (then the file's delete waited for)
            deleting = partial(deleted_in_a_transaction, document)
            still = await cancelled_then_disconnected(held, deleting, alias)
            assert still is not waits
        assert reported == []
        assert (await left(client, files, "dw_files"))[1:] == [0, 0]


async def deleted_in_a_transaction(document: Document) -> None:
    """Delete ``document`` in a transaction on alias "default"."""
    async with mongoengine_async.async_run_in_transaction():
        await document.async_delete()


async def disconnected_after_a_cancelled_commit(
    app: str,
    client: AsyncMongoClient[Any],
    write: Callable[[], Awaitable[None]],
    error_code: int | None = None,
) -> None:
    """Hold on the server the commit of ``write``'s transaction on alias
    "default" (then fail it with ``error_code`` if given), cancel ``write``
    there and ``disconnect_async("dw-files")``: it returns once the commit and
    the step after it are done (the file on "dw-files" gone), nothing reported."""
    files = mongoengine_async.get_async_db("dw-files").name
    reported = reported_on(asyncio.get_running_loop())
    holding = held_on_server(
        app, "commitTransaction", BLOCK_MS, error_code=error_code, admin=client.admin
    )
    held = await holding.__aenter__()
    try:
        assert not await cancelled_then_disconnected(held, write, "dw-files")
        assert (await left(client, files, "dw_files"))[1:] == [0, 0]
    finally:
        await holding.__aexit__(None, None, None)
        asyncio.get_running_loop().set_exception_handler(None)
    assert reported == []


async def test_disconnecting_the_files_alias_waits_for_a_cancelled_commit_before_them(
    app, mongodb_uri
):
    """``disconnect_async("dw-files")`` while the commit of a transaction on
    alias "default" that deleted a document whose file is on "dw-files" (its
    delete waits for the commit), the caller cancelled, is held on the
    server: it returns once the commit and then the file's delete are done
    (the file gone, nothing reported). The commit noted only its own client's
    aliases, so the disconnect closed the bucket's client before the step
    after the commit even began."""
    async with (
        AsyncMongoClient(mongodb_uri) as client,
        fresh_database("dw-files", mongodb_uri),
    ):
        document = await filed(DwFiledElsewhere)
        await disconnected_after_a_cancelled_commit(
            app, client, partial(deleted_in_a_transaction, document)
        )


async def uploaded_in_a_transaction() -> None:
    """Save a DwFiledElsewhere holding a file uploaded in a transaction on
    alias "default" (its bucket on alias "dw-files", another client)."""
    async with mongoengine_async.async_run_in_transaction():
        document = DwFiledElsewhere()
        await document.data.async_put(b"contents")
        await document.async_save()


async def files_alias_disconnected_during(
    mongodb_uri: str,
    held_app: str,
    delete: Callable[[Document], Awaitable[None]],
    cancelled: bool = False,
    **files_options: Any,
) -> tuple[asyncio.Future[None], list[dict[str, Any]], list[int]]:
    """``disconnect_async("dw-files")`` from this task while ``delete`` of a
    DwFiledElsewhere (its file on "dw-files", connected with
    ``files_options``) runs in another, the next delete of ``held_app`` held
    on the server (``cancelled``: ``delete`` cancelled just before); asserts
    that delete no longer held once it returned. Gives ``delete``'s task,
    done, what the loop's exception handler got, and :func:`left`."""
    reported = reported_on(asyncio.get_running_loop())
    async with (
        AsyncMongoClient(mongodb_uri) as client,
        fresh_database("dw-files", mongodb_uri, **files_options),
    ):
        files = mongoengine_async.get_async_db("dw-files").name
        document = await filed(DwFiledElsewhere)
        try:
            holding = held_on_server(held_app, "delete", BLOCK_MS, admin=client.admin)
            async with holding as held:
                deleting = asyncio.ensure_future(delete(document))
                await held.reached_server()
                if cancelled:
                    deleting.cancel()
                await mongoengine_async.disconnect_async("dw-files")
                assert not await held.still_on_server()
                await asyncio.wait([deleting])
        finally:
            asyncio.get_running_loop().set_exception_handler(None)
        return deleting, reported, await left(client, files, "dw_files")


async def test_disconnecting_the_files_alias_waits_for_a_cancelled_commit_that_fails(
    app, mongodb_uri
):
    """``disconnect_async("dw-files")`` while the commit of a transaction on
    alias "default" that uploaded a file on "dw-files", the caller cancelled,
    is held on the server, then fails (BadValue: surely aborted): it returns
    once the commit failed and the upload's delete is done (the file gone,
    nothing reported). The commit noted only its client's aliases, so the
    disconnect closed the bucket's client before the delete after the abort
    began (which failed: "Cannot use AsyncMongoClient after close")."""
    async with (
        AsyncMongoClient(mongodb_uri) as client,
        fresh_database("dw-files", mongodb_uri),
    ):
        await disconnected_after_a_cancelled_commit(
            app, client, uploaded_in_a_transaction, error_code=2
        )
        name = mongoengine_async.get_async_db().name
        assert await client[name]["dw_filed_elsewhere"].count_documents({}) == 0


async def test_disconnecting_the_files_alias_waits_for_a_file_delete_in_a_blocks_exit(
    app, mongodb_uri
):
    """``disconnect_async("dw-files")`` from another task while a block on
    alias "default" that deleted a document whose file is on "dw-files" runs
    the file's delete after its commit, in its exit (the caller not
    cancelled), held on the server: it returns once that delete is done (the
    file gone, the block's exit without error, nothing reported). It closed
    the file's client under the delete: the file's chunks stayed."""
    files_app = "dw-files-app"
    deleting, reported, counts = await files_alias_disconnected_during(
        mongodb_uri, files_app, deleted_in_a_transaction, appname=files_app
    )
    assert deleting.result() is None
    assert reported == []
    assert counts[1:] == [0, 0]


class DwRuled(Document):
    """Deleted with a delete rule: in a transaction of its own, its
    ``post_delete`` sent once that committed."""


class DwRuledChild(Document):
    parent = mongoengine_async.ReferenceField(
        DwRuled, reverse_delete_rule=mongoengine_async.CASCADE
    )


@pytest.mark.parametrize("through", [in_a_task_of_its_own, with_a_time_limit])
async def test_a_receiver_after_a_commit_disconnecting_through_another_task(
    app, mongodb_uri, monkeypatch, through
):
    """A ``post_delete`` receiver of a document-by-document delete with rules
    (sent once its transaction committed, among the steps after it), awaiting
    ``disconnect_async()`` in a task of its own: it returns, nothing
    reported, the documents gone. It waited for the steps it is part of,
    which await the receiver, until its time was spent (``_END_SECONDS``,
    shortened here), then reported them as possibly not done."""
    monkeypatch.setattr(mongoengine_async.connection, "_END_SECONDS", 2)
    parent = await DwRuled().async_save()
    await DwRuledChild(parent=parent).async_save()
    name = mongoengine_async.get_async_db().name

    async def post_delete(sender: Any, document: Any, **_: Any) -> None:
        await through(mongoengine_async.disconnect_async())

    reported = reported_on(asyncio.get_running_loop())
    signals.post_delete.connect(post_delete, sender=DwRuled)
    try:
        await DwRuled.objects.async_delete()
    finally:
        signals.post_delete.disconnect(post_delete, sender=DwRuled)
        asyncio.get_running_loop().set_exception_handler(None)
    assert reported == []
    async with AsyncMongoClient(mongodb_uri) as client:
        assert await client[name]["dw_ruled"].count_documents({}) == 0
        assert await client[name]["dw_ruled_child"].count_documents({}) == 0


async def deleted_by_queryset(document: Document) -> None:
    """``document`` deleted through its class's queryset."""
    await type(document).objects(pk=document.pk).async_delete()


@pytest.mark.parametrize("cancelled", [False, True])
@pytest.mark.parametrize("delete", [Document.async_delete, deleted_by_queryset])
async def test_disconnecting_the_files_alias_waits_for_a_plain_deletes_file(
    app, mongodb_uri, delete, cancelled
):
    """``disconnect_async("dw-files")`` from another task while a delete
    outside any transaction (alias "default") deletes the file of a document
    whose file is on "dw-files", its files document's delete held on the
    server (``cancelled``: its caller cancelled just before): it returns
    once the file is deleted whole (the delete without error, nothing
    reported). It closed the client under the file's delete:
    InvalidOperation ("Cannot use AsyncMongoClient after close"), the files
    document gone and its chunk left (cancelled: the delete's task was noted
    for the disconnect only once the cancelled caller ran, too late)."""
    files_app = "dw-files-app"
    deleting, reported, counts = await files_alias_disconnected_during(
        mongodb_uri, files_app, delete, cancelled, appname=files_app
    )
    assert deleting.cancelled() if cancelled else deleting.result() is None
    assert reported == []
    assert counts[1:] == [0, 0]


@pytest.mark.parametrize("cancelled", [False, True])
@pytest.mark.parametrize("delete", [Document.async_delete, deleted_by_queryset])
async def test_disconnecting_the_files_alias_waits_for_a_delete_before_its_files(
    app, mongodb_uri, delete, cancelled
):
    """``disconnect_async("dw-files")`` from another task while the delete of
    a document whose file is on "dw-files" is held on the server (alias
    "default"), its file's delete not begun (``cancelled``: its caller
    cancelled just before the disconnect): it returns once the document and
    its file are deleted, nothing reported. It returned at once (the write
    was noted for it only once the cancelled caller ran): the file's delete
    then found no alias, ConnectionFailure (raised, or reported), the file
    left, its document gone."""
    deleting, reported, counts = await files_alias_disconnected_during(
        mongodb_uri, app, delete, cancelled
    )
    assert deleting.cancelled() if cancelled else deleting.result() is None
    assert reported == []
    assert counts[1:] == [0, 0]
