"""Client-side test helpers: counting round trips, a fresh database per alias."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import Any
from uuid import uuid4

from pymongo import AsyncMongoClient, WriteConcern, monitoring, uri_parser

__all__ = ["CommandLog", "drop_database", "fresh_database"]


class CommandLog(monitoring.CommandListener):
    """Records the commands a client sends: pass it in ``event_listeners``.

    Handshakes (``hello``, authentication) and monitoring (``ping``,
    ``endSessions``) are left out, so ``count()`` is the number of round trips
    the code under test made.
    """

    IGNORED = frozenset(
        {
            "hello",
            "isMaster",
            "ismaster",
            "saslStart",
            "saslContinue",
            "authenticate",
            "ping",
            "endSessions",
        }
    )

    def __init__(self) -> None:
        self.events: list[monitoring.CommandStartedEvent] = []

    def started(self, event: monitoring.CommandStartedEvent) -> None:
        if event.command_name not in self.IGNORED:
            self.events.append(event)

    def succeeded(self, event: monitoring.CommandSucceededEvent) -> None:
        """Nothing to record."""

    def failed(self, event: monitoring.CommandFailedEvent) -> None:
        """Nothing to record."""

    @property
    def names(self) -> list[str]:
        """The command names, in the order they were sent."""
        return [event.command_name for event in self.events]

    def count(self, name: str | None = None) -> int:
        """How many commands (named ``name``, or all) were sent."""
        return len(self.events) if name is None else self.names.count(name)

    def clear(self) -> None:
        """Forget what was recorded so far."""
        self.events.clear()


@contextlib.asynccontextmanager
async def fresh_database(alias: str, host: str, **options: Any) -> AsyncIterator[str]:
    """Connect ``alias`` with ``connect_async`` to a new database on ``host``
    (``uuidRepresentation="standard"`` unless ``options`` say otherwise; a
    database named in a URI ``host`` is left out, it stays the authSource);
    on exit drop that database and disconnect the alias. Yields the alias."""
    from mongoengine_async.connection import connect_async, is_async_connection

    name = f"test_{uuid4().hex[:12]}"
    options.setdefault("uuidRepresentation", "standard")
    host = _without_database(host, options)
    await connect_async(db=name, alias=alias, host=host, **options)
    try:
        yield alias
    finally:
        if not is_async_connection(alias):  # the test disconnected it itself
            await connect_async(db=name, alias=alias, host=host, **options)
        await _drop_and_disconnect(alias, name)


async def _drop_and_disconnect(alias: str, name: str) -> None:
    """Drop database ``name`` through ``alias``, then disconnect the alias."""
    from mongoengine_async.connection import disconnect_async, get_async_connection

    try:
        await drop_database(get_async_connection(alias), name)
    finally:
        await disconnect_async(alias)


async def drop_database(client: AsyncMongoClient[Any], name: str) -> None:
    """Drop database ``name`` a collection at a time, views and time series
    first (a database left without collections is gone): MongoDB's
    ``dropDatabase`` waits for the next journal commit, 100 ms by default,
    which a suite dropping a database after every test pays thousands of
    times; a collection's drop does not wait. The drops wait for the
    primary alone (``w=1``): a throwaway database's drop needs no majority,
    and one waited for under the client's ``w="majority"`` and short
    ``wtimeout`` failed where a member was down or lagging."""
    database = client.get_database(name, write_concern=WriteConcern(w=1))
    for system in (False, True):
        for collection in await database.list_collection_names():
            if collection.startswith("system.") == system:
                await database.drop_collection(collection)


def _without_database(host: str, options: dict[str, Any]) -> str:
    """``host`` without the database a URI names (MongoEngine would use it
    instead of the fresh one), other parts kept; with credentials and no
    authSource, that database becomes ``options``' authentication_source, as
    the URI had it authenticate there."""
    if "://" not in host:
        return host
    parsed = uri_parser.parse_uri(host)
    if not parsed["database"]:
        return host
    named = {key.lower() for key in parsed["options"]}
    if parsed["username"] and "authsource" not in named:
        options.setdefault("authentication_source", parsed["database"])
    scheme, _, rest = host.partition("://")
    hosts, _, path = rest.partition("/")
    _, question, query = path.partition("?")
    return f"{scheme}://{hosts}/{question}{query}"
