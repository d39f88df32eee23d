"""A change stream whose ``getMore`` fails with an error PyMongo resumes after
(a closed connection, a resumable server error) goes on by itself: no event
lost or repeated, and no server cursor left once it is closed. The failure
is the server's failCommand fail point (one for the whole server): run these
tests on a server of their own."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any
from uuid import uuid4

import pytest

from mongoengine_async import (
    ChangeEvent,
    ChangeStream,
    Document,
    IntField,
    get_async_connection,
    get_async_db,
)
from mongoengine_async.connection import disconnect_all_async
from mongoengine_async.testing import fresh_database

WAIT_SECONDS = 30  # a bound on waiting, never a timing assertion


class CrItem(Document):
    n = IntField(db_field="v")


@pytest.fixture
async def app(mongodb_uri: str) -> AsyncIterator[str]:
    """Alias "default" on a client of its own application name (the fail
    point fails its commands only); gives that name."""
    name = f"cr-{uuid4().hex[:8]}"
    try:
        async with fresh_database("default", mongodb_uri, appname=name):
            await CrItem._async_get_collection()
            yield name
    finally:
        await disconnect_all_async()


async def take(stream: ChangeStream[Any], count: int) -> list[ChangeEvent[Any]]:
    """The next ``count`` events of ``stream`` (fewer if it ends first)."""
    events: list[ChangeEvent[Any]] = []

    async def collect() -> None:
        while len(events) < count and stream.alive:
            event = await stream.try_next()
            if event is not None:
                events.append(event)

    await asyncio.wait_for(collect(), WAIT_SECONDS)
    return events


async def fail_point(app_name: str, **data: Any) -> int:
    """Have the next ``getMore`` of ``app_name`` fail as ``data`` says (None:
    turn the fail point off); the number of times it was entered before."""
    command: dict[str, Any] = {"configureFailPoint": "failCommand"}
    if data:
        filters = {"failCommands": ["getMore"], "appName": app_name}
        command.update(mode={"times": 1}, data={**filters, **data})
    else:
        command.update(mode="off")
    reply = await get_async_connection().admin.command(command)
    return reply["count"]


async def idle_cursors() -> set[int]:
    """The ids of the server's idle cursors on CrItem's collection."""
    namespace = f"{get_async_db().name}.{CrItem._get_collection_name()}"
    cursor = await get_async_connection().admin.aggregate(
        [
            {"$currentOp": {"idleCursors": True, "allUsers": True}},
            {"$match": {"type": "idleCursor", "ns": namespace}},
        ]
    )
    return {op["cursor"]["cursorId"] for op in await cursor.to_list(None)}


async def cursors_left() -> set[int]:
    """The idle cursors still open once none is, or after WAIT_SECONDS (a
    kill may be sent by the client's cleanup, once a second)."""
    deadline = time.monotonic() + WAIT_SECONDS
    while (left := await idle_cursors()) and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    return left


@pytest.mark.parametrize(
    "failure",
    [{"closeConnection": True}, {"errorCode": 91}, {"errorCode": 10107}],
    ids=["network error", "ShutdownInProgress", "NotWritablePrimary"],
)
async def test_a_stream_resumes_after_a_failed_get_more(
    app: str, failure: dict[str, Any]
) -> None:
    async with CrItem.objects(n__gte=1).async_watch(max_await_time_ms=100) as stream:
        await CrItem(n=1).async_save()
        events = await take(stream, 1)
        entered = await fail_point(app, **failure)
        try:
            await CrItem(n=2).async_save()
            await CrItem(n=3).async_save()
            events += await take(stream, 2)
        finally:
            assert await fail_point(app) == entered + 1  # the getMore failed
        assert stream.alive
    assert [(e.operation_type, e.document.n) for e in events] == [
        ("insert", 1),
        ("insert", 2),
        ("insert", 3),
    ]
    assert await cursors_left() == set()
