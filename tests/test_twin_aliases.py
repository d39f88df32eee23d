"""Two aliases naming the same database with the same settings share one
client; a queryset of ``using()`` or a ``switch_db()`` document kept while one
of them is connected again elsewhere follows the alias it was made for, not
the class's."""

from __future__ import annotations

from uuid import uuid4

import pytest
from pymongo import AsyncMongoClient, monitoring

from mongoengine_async import (
    Document,
    StringField,
    connect_async,
    disconnect_async,
    get_async_connection,
)


class _Seen(monitoring.CommandListener):
    def __init__(self, name: str, seen: list) -> None:
        self.name, self.seen = name, seen

    def started(self, event) -> None:
        if event.command_name in ("insert", "count", "find"):
            self.seen.append((self.name, event.command_name))

    def succeeded(self, event) -> None:
        pass

    def failed(self, event) -> None:
        pass


class TwinNote(Document):
    text = StringField()
    meta = {"db_alias": "twin-class", "collection": "twin_notes"}


@pytest.fixture
async def database(mongodb_uri):
    name = f"test_twins_{uuid4().hex[:12]}"
    yield name
    await disconnect_async("twin-class")
    await disconnect_async("twin-other")
    client = AsyncMongoClient(mongodb_uri)
    try:
        await client.drop_database(name)
    finally:
        await client.close()


async def _connect(alias, database, mongodb_uri, listener):
    await connect_async(
        database,
        alias=alias,
        host=mongodb_uri,
        uuidRepresentation="standard",
        event_listeners=[listener],
    )


@pytest.mark.parametrize("again", ["twin-other", "twin-class"])
async def test_kept_using_and_switch_db_follow_their_alias(
    mongodb_uri, database, again
):
    seen: list = []
    shared = _Seen("shared", seen)
    await _connect("twin-class", database, mongodb_uri, shared)
    await _connect("twin-other", database, mongodb_uri, shared)
    assert get_async_connection("twin-class") is get_async_connection("twin-other")
    kept = TwinNote.objects.using("twin-other")
    chained = kept.filter(text="b")
    uncached = kept.no_cache().cache().no_cache()
    moved = TwinNote(text="a").switch_db("twin-other")
    await disconnect_async(again)
    await _connect(again, database, mongodb_uri, _Seen("again", seen))
    expected = "again" if again == "twin-other" else "shared"

    seen.clear()
    await kept.async_count()
    await chained.async_to_list()
    await uncached.async_count()
    await moved.async_save()
    assert seen == [
        (expected, "count"),
        (expected, "find"),
        (expected, "count"),
        (expected, "insert"),
    ]
    # The class's own queryset follows the class's alias.
    seen.clear()
    await TwinNote.objects.async_count()
    assert seen == [("again" if again == "twin-class" else "shared", "count")]
