"""What one async operation runs with, resolved once when it starts.

An :class:`Operation` holds the alias, the collection (prepared, on the running
loop's client), the session and the write concern. The session is the one the
caller passed as ``session=``, else the transaction bound by
``async_run_in_transaction`` for that client, else None. Lower modules (delete
rules, references, files) take the operation rather than looking these up again.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from pymongo.asynchronous.client_session import AsyncClientSession
from pymongo.asynchronous.collection import AsyncCollection

from mongoengine_async import collection_setup
from mongoengine_async._compat import running_loop_or_none
from mongoengine_async.connection import (
    get_async_collection,
    is_async_connection,
    on_running_loop,
    registry_version,
)
from mongoengine_async.context import anything_bound, current_session
from mongoengine_async.errors import ForeignSessionError
from mongoengine_async.guards import require_async

__all__ = (
    "Operation",
    "own_session",
    "plain_home",
    "reach",
    "reached",
    "resolve",
    "session_for",
)


def session_for(
    client: Any, explicit: AsyncClientSession | None = None
) -> AsyncClientSession | None:
    """The session an operation on ``client`` runs in: ``explicit`` when it
    belongs to ``client``, else the transaction bound for ``client``, if any."""
    if explicit is not None and explicit.client is client:
        return explicit
    return current_session(client)


@dataclass(frozen=True, slots=True)
class Operation:
    """The alias, prepared collection, session and write concern of one operation."""

    alias: str
    collection: AsyncCollection
    session: AsyncClientSession | None = None
    write_concern: dict = field(default_factory=dict)

    def session_on(self, collection: AsyncCollection) -> AsyncClientSession | None:
        """The session for a command on ``collection`` (perhaps another client's)."""
        return session_for(collection.database.client, self.session)

    async def on(self, cls: type[Any]) -> Operation:
        """This operation on ``cls``'s collection, prepared: the classes a delete
        rule or a reference reaches (on another client, that client's session)."""
        return await reach(cls, self.session, self.write_concern)


async def reach(
    cls: type[Any],
    session: AsyncClientSession | None = None,
    write_concern: dict | None = None,
) -> Operation:
    """The operation on ``cls``'s own collection, prepared, in ``session`` when
    it belongs to that collection's client (else that client's bound
    transaction): what a reference or a delete rule reaches from an operation."""
    operation = reached(cls, session, write_concern)
    if operation is None:  # its collection is still to be prepared
        collection = on_running_loop(cls._get_collection())
        await collection_setup.prepare(cls, collection)
        session = session_for(collection.database.client, session)
        operation = Operation(cls._db_alias(), collection, session, write_concern or {})
    return operation


def reached(
    cls: type[Any],
    session: AsyncClientSession | None = None,
    write_concern: dict | None = None,
    *,
    name: str = "_async_get_collection",
    use: str = "_get_collection()",
) -> Operation | None:
    """:func:`reach` without awaiting anything, when ``cls``'s collection is
    prepared already (the common case); None when it is still to be prepared.
    On a sync alias the error names the method ``name`` and its sync ``use``."""
    alias = cls._db_alias()
    key = (cls, alias, cls._get_collection_name())
    home = _homes.get(key)
    if (
        home is None
        or home.version != registry_version()
        or home.loop is not running_loop_or_none()
    ):
        home = _find_home(key, name, use)
        if home is None:
            return None
    plain = home.operation
    session = session_for(home.client, session)
    if session is None and not write_concern:
        return plain
    return Operation(alias, plain.collection, session, write_concern or {})


class _Home(NamedTuple):
    """Where ``cls`` on an alias and collection name operates, for one loop,
    while the registry is at ``version``."""

    version: int
    loop: asyncio.AbstractEventLoop | None
    client: Any
    operation: Operation  # with no session and no write concern: shared


# By (class, alias, collection name). Resolving a class's prepared collection
# costs 3-4 µs: a third of what awaiting a reference adds to the driver's find.
_homes: dict[tuple[type[Any], str, Any], _Home] = {}


def _find_home(key: tuple[type[Any], str, Any], name: str, use: str) -> _Home | None:
    """Resolve (and keep) where ``key``'s class operates on the running loop;
    None while its collection is still to be prepared."""
    version = registry_version()  # read first: a change meanwhile makes it stale
    cls, alias, collection_name = key
    require_async(alias, cls.__name__, name, use)
    # What cls._get_collection() gives on an async alias (on the running
    # loop's client), without asking again whether the alias is async.
    collection = get_async_collection(alias, collection_name)
    if not collection_setup.prepared(cls, collection):
        return None
    for stale in [k for k, home in list(_homes.items()) if home.version != version]:
        _homes.pop(stale, None)  # (what a closed loop's client left)
    client = collection.database.client
    operation = Operation(alias, collection, None, {})
    home = _homes[key] = _Home(version, running_loop_or_none(), client, operation)
    return home


async def resolve(
    cls: type[Any],
    collection: AsyncCollection,
    session: AsyncClientSession | None = None,
    write_concern: dict | None = None,
) -> Operation:
    """The operation of ``cls`` on ``collection``: mapped to the running loop's
    client and prepared (created with its indexes on first use).

    An explicit ``session`` must belong to that client: PyMongo would refuse it
    only once the command is sent, perhaps after other writes.
    """
    collection = on_running_loop(collection)
    if not collection_setup.prepared(cls, collection):
        await collection_setup.prepare(cls, collection)
    client = collection.database.client
    session = session_for(client, own_session(cls, client, session))
    return Operation(cls._db_alias(), collection, session, write_concern or {})


def own_session(
    cls: type[Any], client: Any, session: AsyncClientSession | None
) -> AsyncClientSession | None:
    """``session`` as given, refused when it belongs to another client than
    ``client`` (``cls``'s): PyMongo would refuse it only once a command is sent."""
    if session is not None and session.client is not client:
        raise ForeignSessionError(
            f"session= belongs to another client than the one of {cls.__name__} "
            f"(alias {cls._db_alias()!r}): a session works only with the "
            "client that started it"
        )
    return session


# -- the plain case, found in a few calls ------------------------------------------


class PlainHome(NamedTuple):
    """Where a class operates in the plain case (no session, switch or
    no-dereference bound), for one loop while the registry is at
    ``version``: its alias in its meta (which MongoEngine's ``switch_db``
    changes), how its collection is named (MongoEngine's
    ``switch_collection`` replaces that method), the operation there and its
    collection's name."""

    version: int
    loop: asyncio.AbstractEventLoop | None
    alias: str | None
    naming: Any  # the class's bound ``_get_collection_name``
    operation: Operation  # with no session and no write concern
    name: str


# By class; kept by the first operation that needs one.
_plain_homes: dict[type[Any], PlainHome] = {}


def plain_home(cls: type[Any], keep: bool = True) -> PlainHome | None:
    """What :func:`reached` gives ``cls`` with no session, when nothing
    unusual holds: nothing bound in this task, and the class's alias,
    collection naming, registry version and loop as when it was kept. None:
    the caller takes the general path (also for a class not on an async
    alias, whose error that path raises). Without ``keep``, a home not kept
    yet is not resolved.

    It answers in six calls what ``reached`` answers in about twenty: a loop
    awaiting references or getting documents one by one pays it each time.
    """
    if anything_bound():
        return None
    home = _plain_homes.get(cls)
    if (
        home is None
        or home.version != registry_version()
        or home.loop is not running_loop_or_none()
        or home.alias != cls._meta.get("db_alias")
        or home.naming != cls._get_collection_name
    ):
        return _keep_home(cls) if keep else None
    return home


def _keep_home(cls: type[Any]) -> PlainHome | None:
    """Resolve ``cls``'s home with :func:`reached` and keep it (None while
    its collection is still to be prepared, or its alias is not async)."""
    version = registry_version()  # read first: a change meanwhile makes it stale
    if not is_async_connection(cls._db_alias()):
        return None
    operation = reached(cls)
    if operation is None:
        return None
    stale = [k for k, kept in list(_plain_homes.items()) if kept.version != version]
    for key in stale:
        _plain_homes.pop(key, None)  # (what a closed loop's client left)
    home = PlainHome(
        version,
        running_loop_or_none(),
        cls._meta.get("db_alias"),
        cls._get_collection_name,
        operation,
        operation.collection.name,
    )
    _plain_homes[cls] = home
    return home
