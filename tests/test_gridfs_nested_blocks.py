"""A file whose document is deleted in a block within another client's block
(the file's), the outer block holding the file's lock (it wrote its record):
the file is deleted once the outer block ended, whichever way, and a caller
cancelled meanwhile gets its cancellation back at once (not after the
server's transaction time limit)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Coroutine
from typing import Any
from uuid import uuid4

import pytest
from pymongo import AsyncMongoClient

import mongoengine_async.connection as connection
import mongoengine_async.detached as detached
from conftest import Held, held_on_server
from mongoengine_async import (
    Document,
    FileField,
    async_run_in_transaction,
    connect_async,
    disconnect_all_async,
    disconnect_async,
    get_async_connection,
    get_async_db,
)
from mongoengine_async.testing import fresh_database

SIDE = "nested_side"


class NestLeaf(Document):
    """On the inner block's client, its file on the outer block's (default)."""

    scan = FileField(collection_name="nest_leaf_files")
    meta = {"db_alias": SIDE}


@pytest.fixture
async def side_app(mongodb_uri: str) -> AsyncIterator[str]:
    """Alias "default" and SIDE, each a client of its own; SIDE's application
    name (the fail points' target)."""
    side = f"nest-{uuid4().hex[:8]}"
    try:
        async with (
            fresh_database("default", mongodb_uri, appname=f"{side}-outer"),
            fresh_database(SIDE, mongodb_uri, appname=side),
        ):
            yield side
    finally:
        await disconnect_all_async()


async def cancelled_blocks(
    leaf: NestLeaf, entered: asyncio.Event, after: asyncio.Event | None = None
) -> None:
    """The outer block writes the leaf's file record, then an inner block on
    SIDE deletes the leaf (its file left to the inner commit); with ``after``,
    the outer block then waits for it (until cancelled)."""
    files = get_async_db()["nest_leaf_files.files"]
    async with async_run_in_transaction() as session:
        await files.update_one(
            {"_id": leaf.scan.grid_id}, {"$set": {"seen": 1}}, session=session
        )
        async with async_run_in_transaction(SIDE):
            await leaf.async_delete()
            entered.set()
        if after is not None:
            after.set()
            await asyncio.Event().wait()


async def files_left(grid_id: object) -> tuple[int, int]:
    """The file's files and chunks documents left on the default alias (None:
    those of any file)."""
    db = get_async_db()
    files, chunks = (
        ({}, {}) if grid_id is None else ({"_id": grid_id}, {"files_id": grid_id})
    )
    return (
        await db["nest_leaf_files.files"].count_documents(files),
        await db["nest_leaf_files.chunks"].count_documents(chunks),
    )


async def cancel_in_held_commit(
    held: Held,
    blocks: Coroutine[Any, Any, None],
    entered: asyncio.Event,
    again: bool = False,
) -> None:
    """Run ``blocks`` until ``entered`` is set and the commit ``held`` on the
    server arrived, cancel it (``again``: twice, the second as its block
    aborts), and check that the cancellation comes back promptly (no hang
    until the server's time limit)."""
    task = asyncio.ensure_future(blocks)
    await entered.wait()
    await held.reached_server()
    started = time.monotonic()
    task.cancel()
    if again:
        await asyncio.sleep(0)
        task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert time.monotonic() - started < 15


@pytest.mark.parametrize("again", [False, True], ids=["once", "twice"])
async def test_a_cancel_during_the_inner_commit_returns_and_deletes_the_file(
    side_app: str, again: bool
) -> None:
    """The task cancelled while the inner block's commit is held on the
    server (3 s), and (``twice``) once more while the outer block aborts:
    the await returns once the commit did, the leaf is gone and its file
    (files and chunks) deleted after the outer abort (it was deleted at once,
    outside any transaction, waiting for the outer block's lock, while the
    outer abort waited for the inner commit's steps: ~87 s, until the
    server's time limit)."""
    leaf = NestLeaf()
    await leaf.scan.async_put(b"leaf" * 100_000, filename="leaf.bin")  # 2 chunks
    await leaf.async_save()
    grid_id = leaf.scan.grid_id
    entered = asyncio.Event()
    async with held_on_server(side_app, "commitTransaction", 3000) as held:
        await cancel_in_held_commit(
            held, cancelled_blocks(leaf, entered), entered, again
        )
    await detached.all_finished(30)
    assert await NestLeaf.objects.async_count() == 0
    assert await files_left(grid_id) == (0, 0)


async def test_a_cancel_after_the_inner_commit_deletes_the_file_after_the_abort(
    side_app: str,
) -> None:
    """The task cancelled once the inner block committed, before the outer
    block's commit: the outer block aborts, then the file is deleted."""
    leaf = NestLeaf()
    await leaf.scan.async_put(b"leaf" * 100_000, filename="leaf.bin")
    await leaf.async_save()
    grid_id = leaf.scan.grid_id
    entered, after = asyncio.Event(), asyncio.Event()
    task = asyncio.ensure_future(cancelled_blocks(leaf, entered, after))
    await after.wait()
    assert await files_left(grid_id) == (1, 2)  # (the outer block holds it)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await detached.all_finished(30)
    assert await NestLeaf.objects.async_count() == 0
    assert await files_left(grid_id) == (0, 0)


def test_the_loops_end_waits_for_the_delete_after_the_outer_abort(
    mongodb_uri: str,
) -> None:
    """``asyncio.run()``'s main returns once the task, cancelled during the
    inner commit (held 3 s), is in the outer block's abort (held 3 s too):
    the loop's end, cancelling the tasks left, still deletes the file once
    that abort ended (the task waiting for it was cancelled with them: the
    leaf was gone, its file stayed, found by nothing)."""
    name, app = f"nest_{uuid4().hex[:12]}", f"nest-{uuid4().hex[:8]}"
    fail_point = {"configureFailPoint": "failCommand"}
    ends = ["commitTransaction", "abortTransaction"]

    async def connect() -> Any:
        """Both aliases, one application name (one fail point holds both
        the inner commit and the outer abort) but each a client of its own
        (their options differ); the admin database."""
        for alias, db, pool in (("default", name, 90), (SIDE, f"{name}_side", 91)):
            await connect_async(
                db,
                alias=alias,
                host=mongodb_uri,
                appname=app,
                maxPoolSize=pool,
                uuidRepresentation="standard",
            )
        return get_async_connection().admin

    async def main() -> None:
        admin = await connect()
        leaf = NestLeaf()
        await leaf.scan.async_put(b"leaf" * 100_000, filename="leaf.bin")
        await leaf.async_save()
        await NestLeaf.async_ensure_indexes()
        data = {"failCommands": ends, "blockConnection": True, "blockTimeMS": 3000}
        configured = await admin.command(
            {**fail_point, "mode": {"times": 2}, "data": {**data, "appName": app}}
        )
        entered = asyncio.Event()
        task = asyncio.ensure_future(cancelled_blocks(leaf, entered))
        await entered.wait()
        held = Held(admin, app, ends, configured["count"])
        await held.reached_server()  # (the inner commit)
        task.cancel()
        await Held(admin, app, ends, configured["count"] + 1).reached_server()
        assert not task.done()  # (in the outer abort: left to the loop's end)

    async def left() -> tuple[int, int, int]:
        admin = await connect()
        await admin.command({**fail_point, "mode": "off"})
        await Held(admin, app, ends, 0).ended_on_server()
        counts = (await NestLeaf.objects.async_count(), *await files_left(None))
        await get_async_connection().drop_database(name)
        await get_async_connection(SIDE).drop_database(f"{name}_side")
        await disconnect_all_async()
        return counts

    try:
        asyncio.run(main())
    finally:
        counts = asyncio.run(left())
    assert counts == (0, 0, 0)


async def test_a_disconnect_of_the_files_alias_waits_for_the_delete(
    side_app: str, mongodb_uri: str
) -> None:
    """``disconnect_async()`` of the file's alias, called as the task is
    cancelled during the inner commit (held 3 s), waits until the file's
    delete after the outer abort ended: the file is gone, read from a new
    client of that alias."""
    leaf = NestLeaf()
    await leaf.scan.async_put(b"leaf" * 100_000, filename="leaf.bin")
    await leaf.async_save()
    grid_id, name = leaf.scan.grid_id, get_async_db().name
    entered = asyncio.Event()
    admin = get_async_connection(SIDE).admin  # (the default alias goes)
    async with held_on_server(side_app, "commitTransaction", 3000, admin=admin) as held:
        task = asyncio.ensure_future(cancelled_blocks(leaf, entered))
        await entered.wait()
        await held.reached_server()
        task.cancel()
        await disconnect_async("default")  # (before the task ran its cancel)
        with pytest.raises(asyncio.CancelledError):
            await task
    await connect_async(name, host=mongodb_uri, uuidRepresentation="standard")
    assert await NestLeaf.objects.async_count() == 0
    assert await files_left(grid_id) == (0, 0)


class RevLeaf(Document):
    """On the default alias, its file on SIDE's (the nesting reversed)."""

    scan = FileField(db_alias=SIDE, collection_name="rev_leaf_files")


async def test_the_reverse_nesting_deletes_the_file_after_the_outer_abort(
    side_app: str,
) -> None:
    """The outer block on SIDE (the file's client) writes the file's record,
    the inner one on the default alias deletes the leaf; the task cancelled
    during that commit (held 3 s) gets its cancellation once it ended, and
    the file is deleted after the outer abort."""
    leaf = RevLeaf()
    await leaf.scan.async_put(b"leaf" * 100_000, filename="leaf.bin")
    await leaf.async_save()
    grid_id, entered = leaf.scan.grid_id, asyncio.Event()
    files = get_async_db(SIDE)["rev_leaf_files"]

    async def blocks() -> None:
        async with async_run_in_transaction(SIDE) as session:
            await files["files"].update_one(
                {"_id": grid_id}, {"$set": {"seen": 1}}, session=session
            )
            async with async_run_in_transaction():
                await leaf.async_delete()
                entered.set()

    async with held_on_server(f"{side_app}-outer", "commitTransaction", 3000) as held:
        await cancel_in_held_commit(held, blocks(), entered)
    await detached.all_finished(30)
    assert await RevLeaf.objects.async_count() == 0
    assert await files["files"].count_documents({"_id": grid_id}) == 0
    assert await files["chunks"].count_documents({"files_id": grid_id}) == 0


@pytest.mark.parametrize(
    ("leaf_class", "disconnect"),
    [(NestLeaf, "default"), (NestLeaf, None), (RevLeaf, SIDE)],
    ids=["alias", "all", "reversed"],
)
async def test_a_disconnect_in_the_outer_block_closes_after_the_delete(
    side_app: str, mongodb_uri: str, leaf_class: type[Document], disconnect: str | None
) -> None:
    """The task, cancelled during the inner commit (held 3 s), disconnects
    the alias of the file's client, the outer block's (or all aliases: None)
    in the outer block as it leaves: that client closes once the file's
    delete after the outer abort ended, not between its files document's
    delete and its chunks' (2 chunks stayed, found by nothing, and a report
    said the delete did not run); also with the nesting reversed."""
    leaf = leaf_class()
    await leaf.scan.async_put(b"leaf" * 100_000, filename="leaf.bin")
    await leaf.async_save()
    grid_id, entered = leaf.scan.grid_id, asyncio.Event()
    outer, inner = ("default", SIDE) if leaf_class is NestLeaf else (SIDE, "default")
    bucket = get_async_db(outer)[leaf.scan.collection_name]
    reports: list[dict[str, Any]] = []
    asyncio.get_running_loop().set_exception_handler(lambda _, c: reports.append(c))

    async def blocks() -> None:
        async with async_run_in_transaction(outer) as session:
            await bucket["files"].update_one(
                {"_id": grid_id}, {"$set": {"seen": 1}}, session=session
            )
            try:
                async with async_run_in_transaction(inner):
                    await leaf.async_delete()
                    entered.set()
            except asyncio.CancelledError:
                if disconnect is None:
                    await disconnect_all_async()
                else:
                    await disconnect_async(disconnect)
                raise

    app = side_app if inner == SIDE else f"{side_app}-outer"
    leaves = get_async_db(inner)[leaf_class._get_collection_name()]
    async with AsyncMongoClient(mongodb_uri) as client:  # (outlives the aliases)
        admin = client.admin
        async with held_on_server(app, "commitTransaction", 3000, admin=admin) as held:
            await cancel_in_held_commit(held, blocks(), entered)
        await asyncio.wait(set(connection._closing))  # (the file's client closed)
        await detached.all_finished(30)
        files = client[bucket.database.name][bucket.name]
        assert await client[leaves.database.name][leaves.name].count_documents({}) == 0
        assert await files["files"].count_documents({"_id": grid_id}) == 0
        assert await files["chunks"].count_documents({"files_id": grid_id}) == 0
    assert reports == []


THIRD = "nested_third"


class DeepLeaf(Document):
    """On a third client, its file on the outer block's (default)."""

    scan = FileField(collection_name="nest_leaf_files")
    meta = {"db_alias": THIRD}


async def test_three_levels_delete_the_file_after_the_outer_abort(
    side_app: str, mongodb_uri: str
) -> None:
    """Outer block on the default alias (the file's record written), middle
    on SIDE, inner on a third client deleting the leaf, the task cancelled
    during the inner commit (held 3 s): no hang, the file goes after the
    outer abort."""
    app = f"{side_app}-third"
    async with fresh_database(THIRD, mongodb_uri, appname=app):
        leaf = DeepLeaf()
        await leaf.scan.async_put(b"leaf" * 100_000, filename="leaf.bin")
        await leaf.async_save()
        grid_id, entered = leaf.scan.grid_id, asyncio.Event()
        files = get_async_db()["nest_leaf_files.files"]

        async def blocks() -> None:
            async with async_run_in_transaction() as session:
                await files.update_one(
                    {"_id": grid_id}, {"$set": {"seen": 1}}, session=session
                )
                async with async_run_in_transaction(SIDE):
                    await NestLeaf.objects.async_count()
                    async with async_run_in_transaction(THIRD):
                        await leaf.async_delete()
                        entered.set()

        async with held_on_server(app, "commitTransaction", 3000) as held:
            await cancel_in_held_commit(held, blocks(), entered)
        await detached.all_finished(30)
        assert await DeepLeaf.objects.async_count() == 0
        assert await files_left(grid_id) == (0, 0)
