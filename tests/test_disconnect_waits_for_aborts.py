"""``disconnect_async(alias)`` waits for the abort of a transaction whose
caller was cancelled, as for its commit (tests/test_disconnect_waits.py): a
server process stopped right after its lifespan's disconnect (uvicorn
re-raises its SIGTERM) would leave the transaction open on the server,
locking what it wrote until its time limit. Uses fail points: run on a server
of its own (``python -m mongoengine_async.testing``)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from pymongo import AsyncMongoClient

import mongoengine_async
from conftest import held_on_server
from test_disconnect_waits import BLOCK_MS, DwFiled, app, reported_on

__all__ = ("app",)  # (the fixture, used by name)


async def saved_then_cancelled(saved: asyncio.Event) -> None:
    """Save a DwFiled in a transaction on alias "default", then wait there
    (until cancelled)."""
    async with mongoengine_async.async_run_in_transaction():
        await DwFiled().async_save()
        saved.set()
        await asyncio.Event().wait()


async def disconnected_with_the_abort_held(
    app: str,
    client: AsyncMongoClient[Any],
    cancelled: Callable[[Any], Awaitable[asyncio.Future[None]]],
) -> None:
    """With ``abortTransaction`` held on the server, ``cancelled(held)``
    gives a task whose caller was cancelled (its abort held);
    ``disconnect_async()`` returns once that abort is done, the task
    cancelled, nothing reported."""
    reported = reported_on(asyncio.get_running_loop())
    holding = held_on_server(app, "abortTransaction", BLOCK_MS, admin=client.admin)
    held = await holding.__aenter__()
    try:
        writing = await cancelled(held)
        await mongoengine_async.disconnect_async()
        assert not await held.still_on_server()
    finally:
        await holding.__aexit__(None, None, None)
        asyncio.get_running_loop().set_exception_handler(None)
    assert writing.cancelled()
    assert reported == []


async def test_disconnecting_the_alias_of_a_cancelled_transaction_waits_for_its_abort(
    app: str, mongodb_uri: str
) -> None:
    """``disconnect_async()`` while the abort of a transaction, whose caller
    was cancelled, is held on the server: it returns once the abort is done
    (the document not saved, no transaction left open, nothing reported)."""
    name = mongoengine_async.get_async_db().name

    async def cancel_in_the_block(held: Any) -> asyncio.Future[None]:
        saved = asyncio.Event()
        writing = asyncio.ensure_future(saved_then_cancelled(saved))
        await saved.wait()
        writing.cancel()
        await held.reached_server()
        return writing

    async with AsyncMongoClient(mongodb_uri) as client:
        await disconnected_with_the_abort_held(app, client, cancel_in_the_block)
        stage = {"$currentOp": {"allUsers": True, "idleSessions": True}}
        match = {"$match": {"appName": app, "transaction": {"$exists": True}}}
        assert await (await client.admin.aggregate([stage, match])).to_list() == []
        assert await client[name]["dw_filed"].count_documents({}) == 0


async def save_then_fail() -> None:
    """Save a DwFiled (in the caller's transaction), then raise."""
    await DwFiled().async_save()
    raise ValueError("the block failed")


async def in_block() -> None:
    """:func:`save_then_fail` in a transaction block on alias "default"."""
    async with mongoengine_async.async_run_in_transaction():
        await save_then_fail()


async def in_function() -> None:
    """:func:`save_then_fail` run by ``async_run_transaction`` on "default"."""
    await mongoengine_async.async_run_transaction(save_then_fail)


@pytest.mark.parametrize("failing", [in_block, in_function])
async def test_disconnecting_waits_for_the_abort_of_a_failed_block_then_cancelled(
    app: str, mongodb_uri: str, failing: Callable[[], Awaitable[None]]
) -> None:
    """A block (or ``async_run_transaction``'s function) that raised, its
    caller cancelled while waiting for the abort that follows (held on the
    server): ``disconnect_async()`` returns once the abort is done, as for a
    caller cancelled in the block. It returned at once, the abort still held
    (the caller's error was no cancellation when the abort began), and the
    transaction was left open."""

    async def cancel_in_the_abort(held: Any) -> asyncio.Future[None]:
        writing = asyncio.ensure_future(failing())
        await held.reached_server()
        writing.cancel()
        await asyncio.wait({writing})
        return writing

    async with AsyncMongoClient(mongodb_uri) as client:
        await disconnected_with_the_abort_held(app, client, cancel_in_the_abort)
