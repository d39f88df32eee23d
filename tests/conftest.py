"""Fixtures shared by the test modules (the plugin in mongoengine_async.testing
gives the replica set and the async ones)."""

from __future__ import annotations

from uuid import uuid4

import pytest

import mongoengine_async


@pytest.fixture
def sync_default(mongodb_uri):
    """Alias "default" registered with connect() on a fresh database; yields
    the (sync) database and drops it afterwards."""
    name = f"test_sync_{uuid4().hex[:12]}"
    mongoengine_async.connect(db=name, host=mongodb_uri, uuidRepresentation="standard")
    database = mongoengine_async.get_db()
    try:
        yield database
    finally:
        database.client.drop_database(name)
        mongoengine_async.disconnect()
