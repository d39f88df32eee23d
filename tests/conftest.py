"""Fixtures shared by the test modules (the plugin in mongoengine_async.testing
gives the replica set and the async ones)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from uuid import uuid4

import pytest
import pytest_asyncio

import mongoengine_async
from mongoengine_async.testing import CommandLog, fresh_database


@pytest.fixture
def sync_command_log() -> CommandLog:
    """The commands sent on the ``sync_default`` connection of this test."""
    return CommandLog()


@pytest.fixture
def sync_default(mongodb_uri, sync_command_log):
    """Alias "default" registered with connect() on a fresh database; yields
    the (sync) database and drops it afterwards."""
    name = f"test_sync_{uuid4().hex[:12]}"
    mongoengine_async.connect(
        db=name,
        host=mongodb_uri,
        uuidRepresentation="standard",
        event_listeners=[sync_command_log],
    )
    database = mongoengine_async.get_db()
    try:
        yield database
    finally:
        database.client.drop_database(name)
        mongoengine_async.disconnect()


@pytest_asyncio.fixture
async def other_alias(async_alias: str, mongodb_uri: str) -> AsyncIterator[str]:
    """A second async alias, "other", on its own fresh database."""
    async with fresh_database("other", mongodb_uri) as alias:
        yield alias
