"""Index and collection creations sent once more after an error PyMongo retries
a write on (resend.sent_again_once), on a server of their own (the failCommand
fail point): a creation that landed before its error, both sends failing, a
caller's spent ``pymongo.timeout()``, a session of the caller's."""

from __future__ import annotations

import datetime
from collections.abc import AsyncIterator
from typing import Any
from uuid import uuid4

import pymongo
import pytest
from pymongo import monitoring
from pymongo.errors import NetworkTimeout, NotPrimaryError

from conftest import Held
from mongoengine_async import (
    DateTimeField,
    Document,
    StringField,
    get_async_connection,
)
from mongoengine_async.testing import fresh_database

NOT_WRITABLE_PRIMARY = 10107
# ShutdownInProgress in a write concern error: the command ran, then failed.
LANDED = {"writeConcernError": {"code": 91, "errmsg": "shutting down"}}


class SaIndexed(Document):
    name = StringField()
    meta = {"indexes": ["name"]}


class SaCapped(Document):
    name = StringField()
    meta = {"max_documents": 5, "max_size": 4096}


class SaSeries(Document):
    name = StringField()
    at = DateTimeField()
    meta = {"timeseries": {"timeField": "at", "metaField": "name"}}


class Events(monitoring.CommandListener, monitoring.ConnectionPoolListener):
    """The commands started and failed, and the connection check-outs started,
    in order."""

    def __init__(self) -> None:
        self.seen: list[tuple[str, Any]] = []

    def started(self, event: monitoring.CommandStartedEvent) -> None:
        self.seen.append(("started", event.command_name, event.command))

    def failed(self, event: monitoring.CommandFailedEvent) -> None:
        self.seen.append(("failed", event.command_name, None))

    def succeeded(self, event: monitoring.CommandSucceededEvent) -> None:
        pass

    def connection_check_out_started(self, event: Any) -> None:
        self.seen.append(("check_out", None, None))

    def sent(self, name: str) -> list[dict[str, Any]]:
        return [each[2] for each in self.seen if each[:2] == ("started", name)]

    def _ignored(self, event: Any) -> None:
        pass

    pool_created = pool_ready = pool_cleared = pool_closed = _ignored
    connection_created = connection_ready = connection_closed = _ignored
    connection_check_out_failed = connection_checked_out = _ignored
    connection_checked_in = _ignored


@pytest.fixture
async def app(
    mongodb_uri: str, request: pytest.FixtureRequest
) -> AsyncIterator[tuple[str, Events]]:
    """Alias "default" on a client with an application name of its own, so
    that a fail point fails this test's commands only, and its events (and
    the client options the test's parameter gives, if any). Its monitor
    checks every 500 ms: after a "shutting down" error PyMongo waits for its
    next check to find the primary again (10 s by default)."""
    name = f"sa-{uuid4().hex[:8]}"
    events = Events()
    options = {"heartbeatFrequencyMS": 500, **getattr(request, "param", {})}
    async with fresh_database(
        "default", mongodb_uri, appname=name, event_listeners=[events], **options
    ):
        yield name, events


async def failing(app_name: str, command: str, data: dict[str, Any], times: int = 1):
    """Fail the next ``times`` ``command``s of client ``app_name`` (``data``)."""
    await get_async_connection().admin.command(
        {
            "configureFailPoint": "failCommand",
            "mode": {"times": times},
            "data": {"failCommands": [command], "appName": app_name, **data},
        }
    )


@pytest.fixture(autouse=True)
async def fail_point_off(app) -> AsyncIterator[None]:
    yield
    await get_async_connection().admin.command(
        {"configureFailPoint": "failCommand", "mode": "off"}
    )


async def index_keys(cls: type[Document]) -> list[dict[str, Any]]:
    cursor = await cls._get_collection().list_indexes()
    return [dict(index["key"]) async for index in cursor]


async def test_an_index_creation_that_landed_before_its_error(app) -> None:
    name, events = app
    await failing(name, "createIndexes", LANDED)
    await SaIndexed(name="a").async_save()
    assert len(events.sent("createIndexes")) == 2
    assert await index_keys(SaIndexed) == [{"_id": 1}, {"name": 1}]
    assert await SaIndexed.objects.async_count() == 1


async def test_a_capped_creation_that_landed_before_its_error(app) -> None:
    name, events = app
    await failing(name, "create", LANDED)
    await SaCapped(name="a").async_save()
    assert len(events.sent("create")) == 1  # then found, with its options
    options = await SaCapped._get_collection().options()
    assert (options["capped"], options["size"], options["max"]) == (True, 4096, 5)
    assert await SaCapped.objects.async_count() == 1


async def test_a_timeseries_creation_that_landed_before_its_error(app) -> None:
    name, events = app
    await failing(name, "create", LANDED)
    at = datetime.datetime(2026, 1, 2, 3, 4, 5)
    await SaSeries(name="a", at=at).async_save()
    assert len(events.sent("create")) == 1
    options = await SaSeries._get_collection().options()
    assert options["timeseries"]["timeField"] == "at"
    assert [each.at async for each in SaSeries.objects] == [at]


async def test_an_index_creation_failing_twice_raises_the_second_error(app) -> None:
    name, events = app
    await failing(name, "createIndexes", {"errorCode": NOT_WRITABLE_PRIMARY}, 2)
    with pytest.raises(NotPrimaryError) as raised:
        await SaIndexed(name="a").async_save()
    assert isinstance(raised.value.__context__, NotPrimaryError)
    assert raised.value.__context__ is not raised.value
    assert len(events.sent("createIndexes")) == 2
    assert events.sent("insert") == []
    await SaIndexed(name="b").async_save()  # tried again by the next write
    assert [each.name async for each in SaIndexed.objects] == ["b"]


async def test_an_index_creation_timed_out_by_the_caller_is_not_sent_again(
    app,
) -> None:
    """Its error is raised, as PyMongo raises a retryable write's once the
    caller's time is spent: no second send, no connection checked out for it."""
    name, events = app
    block = {"blockConnection": True, "blockTimeMS": 6000}
    await failing(name, "createIndexes", block)
    with pytest.raises(NetworkTimeout) as raised, pymongo.timeout(2):
        await SaIndexed(name="a").async_save()
    assert raised.value.timeout
    failed = events.seen.index(("failed", "createIndexes", None))
    assert events.seen[failed + 1 :] == []
    assert events.sent("insert") == []


async def test_an_index_creation_in_a_session_of_the_caller(app) -> None:
    name, events = app
    await SaIndexed.async_ensure_indexes()
    await SaIndexed._get_collection().drop_indexes()
    await failing(name, "createIndexes", {"errorCode": NOT_WRITABLE_PRIMARY})
    async with get_async_connection().start_session() as session:
        await SaIndexed.async_ensure_indexes(session=session)
        lsid = session.session_id
    assert [each["lsid"] for each in events.sent("createIndexes")[-2:]] == [lsid] * 2
    assert await index_keys(SaIndexed) == [{"_id": 1}, {"name": 1}]


@pytest.mark.parametrize("app", [{"retryWrites": False}], indirect=True)
async def test_an_index_creation_on_a_client_without_retry_writes(app) -> None:
    """``retryWrites=false``: its error is raised, as PyMongo raises a write's
    then, not sent again."""
    name, events = app
    await failing(name, "createIndexes", {"errorCode": NOT_WRITABLE_PRIMARY})
    with pytest.raises(NotPrimaryError):
        await SaIndexed(name="a").async_save()
    assert len(events.sent("createIndexes")) == 1
    assert events.sent("insert") == []


@pytest.mark.parametrize("app", [{"timeoutMS": 2000}], indirect=True)
async def test_an_index_creation_timed_out_by_the_clients_timeout(app) -> None:
    """The client's ``timeoutMS`` bounds both sends, as a write and its retry:
    once the first spent it, its error is raised, with no second send (it
    had a fresh ``timeoutMS`` of its own)."""
    name, events = app
    block = {"blockConnection": True, "blockTimeMS": 6000}
    await failing(name, "createIndexes", block)
    with pytest.raises(NetworkTimeout) as raised:
        await SaIndexed(name="a").async_save()
    assert raised.value.timeout
    failed = events.seen.index(("failed", "createIndexes", None))
    assert events.seen[failed + 1 :] == []
    assert events.sent("insert") == []
    # (The fail point is turned off once nothing is held in it.)
    await Held(
        get_async_connection().admin, name, ["createIndexes"], 0
    ).ended_on_server()
