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

from mongoengine_async import collection_setup, connection
from mongoengine_async._compat import running_loop_or_none
from mongoengine_async.classes import keyed_by_class, taken_in
from mongoengine_async.connection import (
    get_async_collection,
    is_async_connection,
    on_disconnect,
    on_running_loop,
    running_loop,
)
from mongoengine_async.context import (
    anything_bound,
    current_session,
    switched_alias,
    switched_collection,
)
from mongoengine_async.errors import ForeignSessionError
from mongoengine_async.guards import require_async

__all__ = (
    "Home",
    "Operation",
    "as_session",
    "field_or_session",
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
    bound = anything_bound()
    home = _homes.get(cls)
    if home is None or not _holds(home, cls, bound):
        home = _find_home(cls, bound, name, use)
        if home is None:
            return None
    operation = home.operation
    if session is not None or bound:
        session = session_for(home.client, session)
    if session is None and not write_concern:
        return operation
    return Operation(
        operation.alias, operation.collection, session, write_concern or {}
    )


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
    running_loop()
    alias = cls._db_alias()
    collection = on_running_loop(collection, alias)
    if not collection_setup.prepared(cls, collection):
        await collection_setup.prepare(cls, collection)
    client = collection.database.client
    session = session_for(client, own_session(cls, client, session))
    return Operation(alias, collection, session, write_concern or {})


def own_session(
    owner: type[Any] | str, client: Any, session: AsyncClientSession | None
) -> AsyncClientSession | None:
    """``session`` as given, refused when it belongs to another client than
    ``client`` (that of ``owner``: a class, or what else the operation is on,
    described): PyMongo would refuse it only once a command is sent."""
    session = as_session(session)
    if session is not None and session.client is not client:
        if not isinstance(owner, str):
            owner = f"the one of {owner.__name__} (alias {owner._db_alias()!r})"
        raise ForeignSessionError(
            f"session= belongs to another client than {owner}: a session "
            "works only with the client that started it"
        )
    return session


def as_session(session: Any) -> AsyncClientSession | None:
    """``session``, refused (TypeError) when it is neither None nor a driver
    session: a later ``session.client`` would fail with an AttributeError."""
    if session is None or isinstance(session, AsyncClientSession):
        return session
    raise TypeError(
        f"session= takes a pymongo AsyncClientSession, not {type(session).__name__!r}"
    )


def field_or_session(
    cls: type[Any], session: Any, values: dict[str, Any], key: str = "session"
) -> AsyncClientSession | None:
    """The driver session of a method taking field keywords (a filter, new
    values, an update): a ``session=`` that is no session is the value of
    ``cls``'s field so named, as in MongoEngine, and goes into ``values``
    (under ``key``: ``set__session`` in an update)."""
    if session is None or isinstance(session, AsyncClientSession):
        return session
    if "session" not in cls._fields and not cls._dynamic:
        return session  # (own_session refuses it)
    values[key] = session
    return None


# -- where a class operates, kept ------------------------------------------------


class Home(NamedTuple):
    """Where a class operates with no switch of ours in effect, for one loop
    while the registry is at ``version``. ``meta_alias`` (which MongoEngine's
    ``switch_db`` changes), ``meta_collection`` (``meta["collection"]``, which
    a class moved to another collection changes) and ``naming`` (the class's
    bound ``_get_collection_name``, which its ``switch_collection`` replaces)
    are as when it was kept: while they still hold and nothing is bound in the
    task, it is where the class operates, found in a few calls."""

    version: int
    loop: asyncio.AbstractEventLoop | None
    meta_alias: str | None
    meta_collection: str | None
    naming: Any
    name: str  # the collection's
    client: Any
    operation: Operation  # with no session and no write concern: shared


# By class; kept by the first operation that needs one. Resolving a class's
# prepared collection costs 3-4 µs: a third of what awaiting a reference adds
# to the driver's find.
_homes: dict[type[Any], Home] = keyed_by_class({})


def plain_home(cls: type[Any], keep: bool = True) -> Home | None:
    """``cls``'s kept home when nothing is bound in this task and it still
    holds. None: the caller takes the general path (also for a class not on an
    async alias, whose error that path raises). Without ``keep``, a home not
    kept yet is not resolved.

    A loop awaiting references or getting documents one by one pays this
    check each time: five calls where resolving takes about twenty.
    """
    if anything_bound():
        return None
    home = _homes.get(cls)
    if (  # ``_holds(home, cls, False)``, inline: a call fewer for each check
        home is not None
        and home.version == connection.version
        and home.loop is running_loop_or_none()
        and home.meta_alias == cls._meta.get("db_alias")
        and home.meta_collection == cls._meta.get("collection")
        and home.naming == cls._get_collection_name
    ):
        return home
    if not keep or not is_async_connection(cls._db_alias()):
        return None
    return _find_home(cls, False)


def _holds(home: Home, cls: type[Any], bound: bool) -> bool:
    """Whether ``home`` is where ``cls`` operates now. With something bound
    in the task (an ``async_switch_db`` perhaps), by the alias and collection
    name ``cls`` resolves to; otherwise by the meta alias and collection, and
    the naming."""
    if home.version != connection.version or home.loop is not running_loop_or_none():
        return False
    if bound:
        return (
            home.operation.alias == cls._db_alias()
            and home.name == cls._get_collection_name()
        )
    return (
        home.meta_alias == cls._meta.get("db_alias")
        and home.meta_collection == cls._meta.get("collection")
        and home.naming == cls._get_collection_name
    )


def _find_home(
    cls: type[Any],
    bound: bool,
    name: str = "_async_get_collection",
    use: str = "_get_collection()",
) -> Home | None:
    """Resolve where ``cls`` operates on the running loop, and keep it unless
    a switch of ours is in effect; None while its collection is still to be
    prepared."""
    version = connection.version  # read first: a change meanwhile makes it stale
    meta_alias, meta_collection = cls._meta.get("db_alias"), cls._meta.get("collection")
    alias, collection_name = cls._db_alias(), cls._get_collection_name()
    require_async(alias, cls.__name__, name, use)
    # What cls._get_collection() gives on an async alias (on the running
    # loop's client), without asking again whether the alias is async.
    collection = get_async_collection(alias, collection_name)
    if not collection_setup.prepared(cls, collection):
        return None
    home = Home(
        version,
        running_loop_or_none(),
        meta_alias,
        meta_collection,
        cls._get_collection_name,
        collection_name,
        collection.database.client,
        Operation(alias, collection, None, {}),
    )
    if not bound or not (switched_alias(cls) or switched_collection(cls)):
        for stale in [k for k, kept in list(_homes.items()) if kept.version != version]:
            _homes.pop(stale, None)  # (what a closed loop's client left)
        if connection.version == version:  # (else its client may be let go already)
            if cls not in _homes:
                taken_in(cls)
            _homes[cls] = home
    return home


def _forget_homes(client: Any) -> None:
    """Drop the homes on ``client``, which the registry let go (closed by
    ``disconnect_async()``, or its loop's): they could never hold again, and
    would keep it alive."""
    for cls, home in list(_homes.items()):
        if home.client is client and _homes.get(cls) is home:
            _homes.pop(cls, None)


on_disconnect(_forget_homes)
