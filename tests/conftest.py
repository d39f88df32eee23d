"""Fixtures shared by the test modules (the plugin in mongoengine_async.testing
gives the replica set and the async ones)."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Iterator
from typing import Any
from uuid import uuid4

import pytest
import pytest_asyncio

import mongoengine_async
from mongoengine_async.testing import CommandLog, fresh_database


@pytest.fixture
def sync_command_log() -> CommandLog:
    """The commands sent on the ``sync_default`` connection of this test."""
    return CommandLog()


@contextlib.contextmanager
def fresh_sync_default(mongodb_uri: str, *event_listeners: Any) -> Iterator[Any]:
    """Alias "default" registered with connect() on a fresh database; yields
    the (sync) database and drops it afterwards."""
    name = f"test_sync_{uuid4().hex[:12]}"
    mongoengine_async.connect(
        db=name,
        host=mongodb_uri,
        uuidRepresentation="standard",
        event_listeners=list(event_listeners),
    )
    database = mongoengine_async.get_db()
    try:
        yield database
    finally:
        database.client.drop_database(name)
        mongoengine_async.disconnect()


@pytest.fixture
def sync_default(mongodb_uri, sync_command_log):
    """:func:`fresh_sync_default` for one test, its commands logged."""
    with fresh_sync_default(mongodb_uri, sync_command_log) as database:
        yield database


@pytest.fixture(scope="module")
def module_sync_default(mongodb_uri):
    """:func:`fresh_sync_default` shared by a module's tests (that only read)."""
    with fresh_sync_default(mongodb_uri) as database:
        yield database


@pytest_asyncio.fixture
async def other_alias(async_alias: str, mongodb_uri: str) -> AsyncIterator[str]:
    """A second async alias, "other", on its own fresh database."""
    async with fresh_database("other", mongodb_uri) as alias:
        yield alias
