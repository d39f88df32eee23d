"""Async connection registry beside MongoEngine's sync one.

Settings are parsed by MongoEngine's own ``_get_connection_settings``; the
clients are ``pymongo.AsyncMongoClient``. An alias is either sync (registered
with ``connect``) or async (registered with ``connect_async``), never both.
A client only works on the event loop it first ran on, so each alias has a
client per loop, chosen when an operation is awaited (:func:`on_running_loop`).
Every name of ``mongoengine.connection.__all__`` is here (the functions wrapped),
so ``from mongoengine.connection import ...`` migrates by its module name alone.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import sys
import threading
import types
import weakref
from collections.abc import AsyncGenerator, Callable, Iterator
from typing import Any

import mongoengine
import mongoengine.connection as me_connection
import pymongo
from mongoengine.connection import (
    DEFAULT_CONNECTION_NAME,
    DEFAULT_DATABASE_NAME,
    ConnectionFailure,
)
from pymongo import AsyncMongoClient, MongoClient
from pymongo.asynchronous.collection import AsyncCollection
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.database import Database
from pymongo.driver_info import DriverInfo

from mongoengine_async._compat import (
    MONGOENGINE_CONNECTION_GLOBALS,
    get_connection_settings,
    is_registered_sync,
    running_loop_or_none,
    sync_alias_of,
    sync_settings_of,
)
from mongoengine_async.detached import all_finished, held, left_undone
from mongoengine_async.errors import AsyncUsageError, ConnectionUsageError
from mongoengine_async.same_named import mongoengine_attribute

__all__ = (
    "DEFAULT_CONNECTION_NAME",
    "DEFAULT_DATABASE_NAME",
    "ConnectionFailure",
    "connect",
    "connect_async",
    "disconnect",
    "disconnect_all",
    "disconnect_all_async",
    "disconnect_async",
    "get_async_connection",
    "get_async_db",
    "get_connection",
    "get_db",
    "is_async_connection",
    "register_connection",
    "sanitize_filter_enabled",
)

_settings: dict[str, dict[str, Any]] = {}
# The clients of each alias by the event loop they belong to (an AsyncMongoClient
# works only on the loop it first ran on): connect_async's loop has the client it
# returned, any other running loop gets one on first use. Key None: a client for
# callers outside any loop (a queryset built at import time); the next loop that
# needs a client claims it. Clients of closed loops are dropped.
_clients: dict[str, dict[asyncio.AbstractEventLoop | None, AsyncMongoClient]] = {}
# The aliases each client served, by id(client), while the client lives
# (querysets may hold it after the registry dropped it): the first one, and for
# each database the aliases that named it when they got the client (the latest
# last; aliases differing only by database share one). Operations map a
# collection of a client of any loop to its alias's client of the running loop,
# and that database to the one the alias names now (reconnected elsewhere).
_aliases: dict[int, tuple[weakref.ref, str, dict[str, tuple[str, ...]]]] = {}
# Guards changes to the registry: worker threads run loops of their own.
_lock = threading.RLock()
_disconnect_hooks: list = []
# The AsyncDatabase (by name) and AsyncCollection (by database and collection
# name) objects made for each registered client, by id(client): PyMongo's
# constructors cost 3 µs each, on every operation. Dropped when the client is
# let go, so an id is never reused while its entry exists.
_made: dict[int, dict[Any, Any]] = {}
# Counts the changes to what the registry resolves an alias to (aliases,
# clients, prepared collections): a cache of a resolution holds while it is
# equal. Read as ``connection.version`` (no call: every operation compares it).
version = 0

_RENAMED = {
    "authentication_source": "authSource",
    "authentication_mechanism": "authMechanism",
}


def registry_changed() -> None:
    """Invalidate the caches of what the registry resolves aliases to."""
    global version
    version += 1


def async_aliases() -> frozenset[str]:
    """The aliases registered with :func:`connect_async` now."""
    return frozenset(_settings)


def has_async_connections() -> bool:
    """Whether any alias is async: while none is, no async check is needed."""
    return bool(_settings)


def is_sync_connection(alias: str = DEFAULT_CONNECTION_NAME) -> bool:
    """Whether ``alias`` was registered with MongoEngine's ``connect``, and not
    with :func:`connect_async` (an alias is one or the other: an async one
    MongoEngine's own ``connect()`` registered too is async, see
    :func:`registered_twice`)."""
    return is_registered_sync(alias) and alias not in _settings


def sync_registration(alias: str) -> str:
    """What registered sync ``alias``, as the errors about it say:
    ``register_connection()`` when this module's registered the settings it
    has (and no ``connect()`` of it followed), else ``connect()``."""
    settings = sync_settings_of(alias)
    if settings is not None and _registered_only.get(alias) is settings:
        return "register_connection()"
    return "connect()"


# The sync aliases that register_connection() registered and no connect()
# connected since: the settings dict MongoEngine keeps for each (an alias
# registered again has another).
_registered_only: dict[str, Any] = {}


def is_async_connection(alias: str = DEFAULT_CONNECTION_NAME) -> bool:
    """Whether ``alias`` was registered with :func:`connect_async`."""
    return alias in _settings


def registered_twice(alias: str) -> str:
    """What to say of async ``alias`` if MongoEngine's own ``connect()`` or
    ``register_connection()`` (which know no async alias, and which this
    package does not patch) registered it too: how to undo that ("" if not)."""
    if not (is_async_connection(alias) and is_registered_sync(alias)):
        return ""
    return (
        f"; MongoEngine's own mongoengine.connect() or register_connection() "
        f"(which know no async alias) registered alias '{alias}' too: call "
        f"mongoengine.disconnect('{alias}') to drop that registration"
    )


def _client_kwargs(settings: dict[str, Any]) -> dict[str, Any]:
    """Turn MongoEngine connection settings into AsyncMongoClient kwargs."""
    kwargs = {
        _RENAMED.get(key, key): value
        for key, value in settings.items()
        if key not in ("name", "sanitize_filter", "mongo_client_class")
        and value is not None
    }
    kwargs.setdefault(
        "driver", DriverInfo("MongoEngine-async", mongoengine.__version__)
    )
    return kwargs


# The running loop of this thread, or None (in asyncio.__all__; no exception).
_running_loop = running_loop_or_none


def running_loop() -> asyncio.AbstractEventLoop:
    """The running asyncio event loop, for an operation being awaited: refused
    clearly when none runs (code awaited under trio, or anyio's trio backend),
    rather than by asyncio's "no running event loop" from deep inside, with a
    coroutine left never awaited or an alias half disconnected."""
    loop = _running_loop()
    if loop is None:
        raise AsyncUsageError(
            "mongoengine-async runs on asyncio (PyMongo's async API) and no "
            "asyncio event loop is running here: await it in asyncio code "
            "(with anyio, its asyncio backend; trio is not supported)"
        )
    return loop


def _shared_client(
    settings: dict[str, Any], loop: asyncio.AbstractEventLoop
) -> AsyncMongoClient | None:
    """A client of ``loop`` for settings that differ from ``settings`` only by db."""
    wanted = {k: v for k, v in settings.items() if k != "name"}
    for alias, other in _settings.items():
        if {k: v for k, v in other.items() if k != "name"} == wanted:
            client = _clients[alias].get(loop)
            if client is not None:
                return client
    return None


def _new_client(alias: str, settings: dict[str, Any]) -> AsyncMongoClient:
    client_class = settings.get("mongo_client_class", AsyncMongoClient)
    try:
        client = client_class(**_client_kwargs(settings))
    except Exception as err:
        raise ConnectionFailure(f"Cannot connect to database {alias} :\n{err}") from err
    _own(client, alias, settings["name"])
    return client


def _own(client: AsyncMongoClient, alias: str, database: str) -> None:
    """Record that ``client`` serves ``alias`` (naming ``database``), until the
    client is gone."""
    key = id(client)
    owner = _aliases.get(key)
    if owner is None or owner[0]() is not client:

        def forget(ref: weakref.ref) -> None:
            if _aliases.get(key, (None,))[0] is ref:
                _aliases.pop(key, None)

        owner = _aliases[key] = (weakref.ref(client, forget), alias, {})
    named = owner[2].get(database, ())
    owner[2][database] = (*(other for other in named if other != alias), alias)
    _made.setdefault(key, {})


def _alias_of(
    owner: tuple[weakref.ref, str, dict[str, tuple[str, ...]]],
    database: str,
    preferred: str | None = None,
    collection: Any = None,
) -> tuple[str, bool]:
    """The alias a collection of ``database`` on the client of ``owner`` is
    on, and whether that alias named ``database`` when it got the client:
    the alias ``collection`` was made for (``using()``, ``switch_db()``: see
    :func:`_collection_on`) if it named it, else ``preferred`` (the alias of
    the class operating) if it named it, else one naming it still, else the
    latest that named it (connected again elsewhere since); for a database no
    alias named, the client's first."""
    named = owner[2].get(database)
    if not named:
        return owner[1], False
    if collection is not None:  # (twins: the one it was made for)
        made = _made.get(id(owner[0]()))
        made_for = None if made is None else made.get(id(collection))
        if made_for is not None and made_for in named:
            return made_for, True
    if preferred is not None and preferred in named:  # (twins: the class's own)
        return preferred, True
    for alias in named:
        settings = _settings.get(alias)
        if settings is not None and settings["name"] == database:
            return alias, True
    return named[-1], True


async def connect_async(
    db: str | None = None, alias: str = DEFAULT_CONNECTION_NAME, **kwargs: Any
) -> AsyncMongoClient[dict[str, Any]]:
    """Register ``alias`` as an async connection and return its client.

    Takes the same arguments as :func:`mongoengine.connect` (its
    ``mongo_client_class`` must be an AsyncMongoClient subclass), plus
    ``sanitize_filter`` (default True: refuse operator dicts as plain query
    values, see :mod:`mongoengine_async.query_values`). Connecting the same
    alias again with the same settings returns the existing client. The alias
    works from any event loop, whichever loop this runs on.
    """
    if is_sync_connection(alias):
        raise ConnectionUsageError(
            f"Alias `{alias}` is a sync connection registered with "
            f"{sync_registration(alias)}; call disconnect('{alias}') before "
            "connect_async()"
        )
    sanitize_filter = bool(kwargs.pop("sanitize_filter", True))
    _check_client_class(kwargs.get("mongo_client_class", AsyncMongoClient))
    settings = get_connection_settings(db, **kwargs)
    settings["sanitize_filter"] = sanitize_filter
    loop = running_loop()
    with _lock:
        if alias in _settings:
            if _settings[alias] != settings:
                raise ConnectionFailure(
                    f"A different connection with alias `{alias}` was already "
                    "registered. Use disconnect_async() first"
                )
            return get_async_connection(alias)
        client = _shared_client(settings, loop) or _new_client(alias, settings)
        _own(client, alias, settings["name"])
        _settings[alias] = settings
        _clients[alias] = {loop: client}
        registry_changed()
    _close_with_loop(loop)
    return client


def _check_client_class(client_class: Any) -> None:
    """Refuse a ``mongo_client_class`` that is not an AsyncMongoClient subclass:
    the package runs every operation on PyMongo's async API."""
    if not (
        isinstance(client_class, type) and issubclass(client_class, AsyncMongoClient)
    ):
        raise ConnectionUsageError(
            "connect_async() needs a mongo_client_class that is a subclass of "
            f"pymongo.AsyncMongoClient, not {client_class!r}; "
            "a sync client class goes to connect()"
        )


def sanitize_filter_enabled(alias: str = DEFAULT_CONNECTION_NAME) -> bool:
    """Whether queries on async ``alias`` refuse operator dicts as plain values."""
    settings = _settings.get(alias)  # (read once: another thread may disconnect it)
    return settings is not None and settings["sanitize_filter"]


def undefined_alias_error(alias: str) -> ConnectionFailure:
    """MongoEngine's error for an alias nobody registered."""
    if alias == DEFAULT_CONNECTION_NAME:
        return ConnectionFailure("You have not defined a default connection")
    return ConnectionFailure(f'Connection with alias "{alias}" has not been defined')


def connection_of(alias: str) -> object | None:
    """What stands for the connection ``alias`` has now (None: not connected):
    another object once the alias is disconnected and connected again."""
    return _settings.get(alias)


def serves(alias: str, client: AsyncMongoClient) -> bool:
    """Whether ``client`` is a client of async ``alias`` now (of some loop)."""
    clients = _clients.get(alias)
    return clients is not None and any(c is client for c in list(clients.values()))


def aliases_served_by(client: AsyncMongoClient) -> frozenset[str]:
    """The async aliases ``client`` is a client of now (of some loop): those
    whose disconnect may close it under what it still has to send."""
    return frozenset(alias for alias in list(_clients) if serves(alias, client))


def get_async_connection(
    alias: str = DEFAULT_CONNECTION_NAME,
) -> AsyncMongoClient[dict[str, Any]]:
    """The AsyncMongoClient of an async alias for the running event loop.

    Outside any loop: a client that belongs to no loop yet (the next loop to
    need one takes it), never one of a loop that has closed.
    """
    clients = _clients.get(alias)
    if clients is None:
        raise _not_async_error(alias, "get_connection()")
    loop = _running_loop()
    client = clients.get(loop)
    if client is not None and (loop is not None or _bound_loop(client) is None):
        return client
    return _client_for(alias, loop)


def _bound_loop(client: AsyncMongoClient) -> asyncio.AbstractEventLoop | None:
    """The loop PyMongo bound ``client`` to (on its first operation), if any."""
    return getattr(client, "_loop", None)


def _not_async_error(alias: str, sync_way: str) -> ConnectionFailure:
    """``alias`` is no async alias: a sync one (``sync_way`` is the call to
    use instead), or none at all (MongoEngine's error)."""
    if is_sync_connection(alias):
        return ConnectionUsageError(
            f"Alias `{alias}` is not async: it was registered with "
            f"{sync_registration(alias)}; use {sync_way}"
        )
    return undefined_alias_error(alias)


def _client_for(alias: str, loop: asyncio.AbstractEventLoop | None) -> AsyncMongoClient:
    """Find or make the client of ``alias`` for ``loop`` (None: outside any loop):
    another alias's client for the loop when only the db differs, else the
    client made outside any loop, else a new one."""
    with _lock:
        _forget_closed_loops()
        clients = _clients.get(alias)
        if clients is None:
            raise undefined_alias_error(alias)
        client = clients.get(loop) if loop is not None else _unbound(clients, None)
        if client is None and loop is not None:
            client = _shared_client(_settings[alias], loop) or _unbound(clients, loop)
        if client is None:
            client = _new_client(alias, _settings[alias])
        _own(client, alias, _settings[alias]["name"])
        clients[loop] = client
        registry_changed()
    left_undone()  # (by a loop closed so, whose clients were just dropped)
    if loop is not None:
        _close_with_loop(loop)
    elif "_get_topology" not in client.__dict__:
        _adopted_when_bound(client)
    return client


def _adopted_when_bound(client: AsyncMongoClient) -> None:
    """Have ``client``, given to a caller outside any loop, become the client
    of the loop it binds itself to (on its first operation), closed as that
    loop shuts down: code may await on it directly, with nothing of ours run
    on that loop (``asyncio.run(get_async_connection().drop_database(name))``),
    which left it to the garbage collector, unclosed. Its first
    ``_get_topology()`` (every operation's, where PyMongo binds it) does so,
    once."""
    reference = weakref.ref(client)
    get_topology = type(client)._get_topology

    def bind_first() -> Any:
        bound = reference()
        assert bound is not None  # (this is its method)
        bound.__dict__.pop("_get_topology", None)
        loop = _running_loop()
        if loop is not None:
            _adopt(bound, loop)
        return get_topology(bound)

    client.__dict__["_get_topology"] = bind_first


def _adopt(client: AsyncMongoClient, loop: asyncio.AbstractEventLoop) -> None:
    """Make ``client``, about to bind itself to ``loop`` (the running one),
    that loop's client in the registry; when the loop has one already, close
    ``client`` too as the loop shuts down."""
    with _lock:
        held = [
            (clients, key)
            for clients in _clients.values()
            for key, other in list(clients.items())
            if other is client and key is not loop
        ]
        if not held:
            return
        for clients, key in held:
            del clients[key]
            if loop not in clients:
                clients[loop] = client
        if _release(client):  # (another of the loop's was there)
            _cut_short.setdefault(loop, []).append(client)
        registry_changed()
    _close_with_loop(loop)


def _unbound(
    clients: dict[asyncio.AbstractEventLoop | None, AsyncMongoClient],
    loop: asyncio.AbstractEventLoop | None,
) -> AsyncMongoClient | None:
    """Take the client made outside any loop for ``loop`` (None: for callers
    outside any loop still), unless code awaited on it directly since, which
    bound it to a loop: it is then that loop's client (let go when that loop
    has closed or has one already), and None is returned."""
    client = clients.pop(None, None)
    bound = None if client is None else _bound_loop(client)
    if bound is None or bound is loop:
        return client
    if bound.is_closed() or bound in clients:
        _release(client)  # type: ignore[arg-type]
    else:
        clients[bound] = client  # type: ignore[assignment]
        with contextlib.suppress(RuntimeError):  # (closed meanwhile)
            bound.call_soon_threadsafe(_close_with_loop, bound)
    return None


def _forget_closed_loops() -> None:
    """Drop the clients of loops that have closed without shutting down (a
    loop that shuts down closes them, see ``_close_with_loop``): nothing can
    use them again, and each holds its loop and sockets. They cannot be
    awaited closed any more; their sockets close as they go."""
    for clients in _clients.values():
        closed = [loop for loop in clients if loop is not None and loop.is_closed()]
        for loop in closed:
            _release(clients.pop(loop))
            registry_changed()
    for loop in [loop for loop in list(_closers) if loop.is_closed()]:
        _discard_closer(loop)
    for loop in [loop for loop in list(_cut_short) if loop.is_closed()]:
        del _cut_short[loop]


def _release(client: AsyncMongoClient) -> bool:
    """Let go of a client no alias holds any more (True); one still held by
    another alias (sharing it) now serves that alias."""
    for alias, clients in _clients.items():
        if any(client is other for other in clients.values()):
            _own(client, alias, _settings[alias]["name"])
            return False
    _let_go(client)
    return True


def on_running_loop(
    collection: AsyncCollection, alias: str | None = None
) -> AsyncCollection:
    """``collection`` on its alias's client for the running event loop.

    Querysets and documents keep the collection they were built with, perhaps
    outside any loop or in another one: every operation maps it when it starts.
    The same object when it is on that client already (the common case). When
    the alias was connected again since, to another database or with other
    client options, the collection follows: the alias's database and options
    now, only options set on the collection itself kept. ``alias``: that of
    the class operating, the one followed when several aliases named the
    collection's database on its client.
    """
    client = collection.database.client
    owner = _aliases.get(id(client))
    if owner is None:  # not a client of the registry
        return collection
    database = collection.database.name
    alias, named = _alias_of(owner, database, alias, collection)
    settings, clients = _settings.get(alias), _clients.get(alias)
    if (
        settings is not None
        and clients is not None
        and clients.get(_running_loop()) is client
        and (not named or settings["name"] == database)
    ):
        return collection
    current, settings = _connected(alias)
    if named:  # the alias's own database: the one it names now
        database = settings["name"]
    same = _collection_on(current, database, collection.name, alias)
    options = {
        key: value
        for key, value in _options(collection).items()
        if value != getattr(client, key)  # set on the collection (or its database)
    }
    return same.with_options(**options) if options else same


def collection_alias(collection: Any, preferred: str | None = None) -> str | None:
    """The alias whose client holds ``collection`` (async or sync), if any:
    for errors about a queryset that ``using()`` moved to another alias
    (``preferred``: the class's alias, see :func:`on_running_loop`). A sync
    collection made for an alias (:func:`made_for_sync`) is that alias's,
    though another alias shares its client, or it is of another kind now."""
    client = collection.database.client
    owner = _aliases.get(id(client))
    if owner is None:
        made = _made_sync.get(id(collection))
        if made is not None and made[0]() is collection:
            return made[1]
        return sync_alias_of(client)
    return _alias_of(owner, collection.database.name, preferred, collection)[0]


# By id: the sync collections MongoEngine made for a class on an alias (its
# own, a switch_db() document's, a using() queryset's), weakly, with that alias.
_made_sync: dict[int, tuple[weakref.ref, str]] = {}


def made_for_sync(collection: Any, alias: str) -> None:
    """Note that MongoEngine made the sync ``collection`` for ``alias`` (see
    :func:`collection_alias`), while the collection lives."""
    key = id(collection)

    def forget(ref: weakref.ref, key: int = key) -> None:
        held = _made_sync.get(key)
        if held is not None and held[0] is ref:
            del _made_sync[key]

    _made_sync[key] = (weakref.ref(collection, forget), alias)


def _options(collection: AsyncCollection) -> dict[str, Any]:
    return {
        "codec_options": collection.codec_options,
        "read_preference": collection.read_preference,
        "write_concern": collection.write_concern,
        "read_concern": collection.read_concern,
    }


def get_async_db(
    alias: str = DEFAULT_CONNECTION_NAME,
) -> AsyncDatabase[dict[str, Any]]:
    """The AsyncDatabase of an async alias."""
    if alias not in _clients:
        raise _not_async_error(alias, "get_db()")
    client, settings = _connected(alias)
    return _database_on(client, settings["name"])


def get_async_collection(alias: str, name: str) -> AsyncCollection[dict[str, Any]]:
    """The AsyncCollection ``name`` in the database of an async alias."""
    client, settings = _connected(alias)
    return _collection_on(client, settings["name"], name, alias)


def _connected(alias: str) -> tuple[AsyncMongoClient, dict[str, Any]]:
    """The client of async ``alias`` for the running loop and the settings of
    the same connection: another thread may disconnect the alias (and connect
    it again elsewhere) meanwhile, which the registry's lock keeps out."""
    settings = _settings.get(alias)
    client = get_async_connection(alias)
    if settings is None or _settings.get(alias) is not settings:
        with _lock:  # it changed meanwhile: both again, as one
            client = get_async_connection(alias)
            settings = _settings[alias]
    return client, settings


def _database_on(client: AsyncMongoClient, name: str) -> AsyncDatabase:
    made = _made_for(client)
    database = made.get(name)
    if database is None:
        database = made[name] = client[name]
    return database


def _collection_on(
    client: AsyncMongoClient, database_name: str, name: str, alias: str
) -> AsyncCollection:
    """The collection ``name`` of ``database_name`` on ``client``, one object
    per ``alias`` (twin aliases naming one database on one client get their
    own), recorded as that alias's: a queryset moved by ``using()`` or a
    ``switch_db()`` document keeps following its alias, not its twin."""
    made = _made_for(client)
    key = (alias, database_name, name)
    collection = made.get(key)
    if collection is None:  # PyMongo refuses a bad name
        collection = made[key] = _database_on(client, database_name)[name]
        made[id(collection)] = alias  # (held by ``made``: its id stays its own)
    return collection


def database_of(client: AsyncMongoClient) -> str | None:
    """A database an alias served by ``client`` names (None: no alias)."""
    owner = _aliases.get(id(client))
    if owner is None or owner[0]() is not client:
        return None
    return next(iter(owner[2]), None)


def selection_cut_short(client: AsyncMongoClient) -> bool:
    """Whether ``client``'s operations time out (``timeoutMS``) sooner than
    its ``serverSelectionTimeoutMS``: a selection they cut short (an election
    under way) does not tell that its server is gone."""
    options = client.options
    timeout = options.timeout
    return timeout is not None and 0 < timeout < options.server_selection_timeout


def _made_for(client: AsyncMongoClient) -> dict:
    """What was made for ``client`` while the registry holds it; for one let go
    (another thread's disconnect, meanwhile) nothing is kept: an entry would
    hold the closed client, and serve a new one given its id."""
    made = _made.get(id(client))
    return {} if made is None else made


def released(client: AsyncMongoClient) -> bool:
    """Whether ``client`` is one the registry made and no longer holds (for
    any alias or loop): disconnected, or its loop's client dropped."""
    owner = _aliases.get(id(client))
    if owner is None or owner[0]() is not client:
        return False  # (not the registry's: a class's own _get_collection's)
    return not any(
        c is client
        for clients in list(_clients.values())
        for c in list(clients.values())
    )


def _let_go(client: AsyncMongoClient) -> None:
    """Forget what was made for a client the registry no longer holds."""
    _made.pop(id(client), None)
    for hook in _disconnect_hooks:
        hook(client)


def on_disconnect(hook: Callable[[AsyncMongoClient[Any]], None]) -> None:
    """Register ``hook(client)``, called when an async client is closed."""
    _disconnect_hooks.append(hook)


async def disconnect_async(alias: str = DEFAULT_CONNECTION_NAME) -> None:
    """Forget an async alias; close its client for the running loop unless
    another alias shares it; those of other loops still open are closed on
    their own loops (a closed loop's client can only be dropped). An alias
    MongoEngine's own ``connect()`` registered too stays registered so.
    First, what cancelled writes left going on that may use the alias ends,
    on any loop (``_END_SECONDS`` at most, as at the loop's end): it needs
    the alias (the files of a deleted document), which goes for all loops."""
    if is_sync_connection(alias):
        raise ConnectionUsageError(
            f"Alias `{alias}` is a sync connection: use disconnect('{alias}')"
        )
    loop = running_loop()
    if alias in _settings:
        await all_finished(
            _END_SECONDS,
            f"disconnect_async('{alias}')",
            "the most it waits",
            frozenset((alias,)),
        )
    with _lock:
        if alias not in _settings:
            return
        del _settings[alias]
        clients = _clients.pop(alias)
        current = clients.get(loop)
        released = [(key, c) for key, c in clients.items() if _release(c)]
        registry_changed()
    for key, client in released:
        if client is not current:  # it cannot be awaited here
            _close_on(key if key is not None else _bound_loop(client), client, alias)
    if current is not None and any(client is current for _, client in released):
        if current.__dict__.get(_TRANSACTIONS):  # (closed once they ended)
            _close_on(loop, current, alias)
        else:
            await _close(current)


# For each running loop that got a client: an async generator begun on that
# loop, which the loop's ``shutdown_asyncgens()`` finalises as it ends
# (``asyncio.run()``, ``asyncio.Runner`` and its backport, pytest-asyncio's and
# anyio's loops), closing the loop's clients there: once the loop has closed,
# nothing can (PyMongo warns "Unclosed AsyncMongoClient" as such a client is
# collected, asyncio of each of its sockets, and its server sessions never end).
_closers: dict[asyncio.AbstractEventLoop, AsyncGenerator[None, None]] = {}

# How long a loop's end waits, in all, for the tasks of finish_before_close and
# then to close its clients (the endSessions they send): a server that does not
# answer (stopped, or a fail point holding every command) would hold each wait
# as long as it does not.
_END_SECONDS = 30.0

# The time a client's close is given once the loop's end spent the rest (0 is
# PyMongo's "no timeout"): PyMongo gives up its endSessions before sending it.
_SPENT_SECONDS = 1e-9


def _close_with_loop(loop: asyncio.AbstractEventLoop) -> None:
    """Have ``loop`` (the running one; run by it otherwise) close its clients
    as it shuts down, and the registry drop them then. Not once its shutdown
    has begun: a generator begun then would never be finalised (and the loop
    warns of it)."""
    if loop in _closers or _shutting_down(loop):
        return

    async def close_at_shutdown() -> AsyncGenerator[None, None]:
        try:
            yield
        finally:
            if _closers.get(loop) is closer:  # not discarded (see _discard_closer)
                del _closers[loop]
                _shut_down.add(loop)
                deadline = loop.time() + _END_SECONDS
                # (Writes' follow-ups, and the cleanups of the other async
                # generators finalised alongside, on these clients.)
                with _untracked_generators():
                    await all_finished(_END_SECONDS)
                    await _others_finalised()
                await _close_clients_of(loop, deadline)

    closer = close_at_shutdown()
    _closers[loop] = closer
    # Its first step runs at once (to its yield); the call runs the loop's
    # first-iteration hook, which makes the loop finalise it at shutdown.
    with contextlib.suppress(StopIteration):
        closer.__anext__().send(None)


@contextlib.contextmanager
def _untracked_generators() -> Iterator[None]:
    """No first-iteration hook for the async generators begun inside (the
    thread's hooks: the tasks running meanwhile too), once the loop's
    ``shutdown_asyncgens()`` has begun: it warns of each ("scheduled after
    loop.shutdown_asyncgens() call", a ResourceWarning), which ``-W error``
    raises inside the operation that began it. PyMongo begins them in every
    operation (``AsyncMongoClient._tmp_session``; 4.17 its checkouts too):
    in a client's close (:func:`_close`), in the work the loop's end waits
    for (raised there, the chunks of a deleted document's file stayed). Each
    runs to its end all the same."""
    firstiter, finalizer = sys.get_asyncgen_hooks()
    sys.set_asyncgen_hooks(firstiter=None, finalizer=finalizer)
    try:
        yield
    finally:
        sys.set_asyncgen_hooks(firstiter=firstiter, finalizer=finalizer)


# The loops whose shutdown_asyncgens() finalised their closer: ended, though
# a loop run by hand may run more code after (see _shutting_down).
_shut_down: weakref.WeakSet[asyncio.AbstractEventLoop] = weakref.WeakSet()


def _shutting_down(loop: asyncio.AbstractEventLoop) -> bool:
    """Whether ``loop`` (the running one) runs its ``shutdown_asyncgens()``, or
    ran it (a loop run by hand: ``run_until_complete()`` of more code after;
    an async generator begun then is never finalised, and the loop warns).
    Running: found among its tasks (run as one by ``asyncio.run()``,
    ``Runner``, pytest-asyncio and anyio, or ``run_until_complete()``), as on
    every loop. Ran: asyncio's loop keeps a flag of it; on one keeping it to
    itself (uvloop's, in C), its closer was finalised."""
    return (
        getattr(loop, "_asyncgens_shutdown_called", False) is True
        or loop in _shut_down
        or any(
            getattr(task.get_coro(), "__name__", None) == "shutdown_asyncgens"
            for task in asyncio.all_tasks(loop)
        )
    )


def _discard_closer(loop: asyncio.AbstractEventLoop) -> None:
    """Let go of the closer of ``loop``, closed without ``shutdown_asyncgens()``
    (``loop.close()`` alone): its clients can no longer be closed. (Collected
    unfinished, the closer is handed to the loop's finaliser, which does
    nothing once the loop is closed.)"""
    _closers.pop(loop, None)


async def _others_finalised() -> None:
    """Wait until the other async generators that ``shutdown_asyncgens()``
    finalises alongside the closer (at once, each in a task) are done: their
    cleanup may use the loop's clients (or get one), which closing them first
    would close under it (or leave the new one open)."""
    current = asyncio.current_task()
    if current is None:
        return
    kind = type(current.get_coro())
    if kind.__name__ != "async_generator_athrow":  # (not finalised by the loop)
        return
    others = {
        task
        for task in asyncio.all_tasks()
        if task is not current and type(task.get_coro()) is kind
    }
    if others:
        await asyncio.wait(others)


async def _close_clients_of(loop: asyncio.AbstractEventLoop, deadline: float) -> None:
    """Take the clients of ``loop`` (the running one, shutting down) out of the
    registry and close them, by ``deadline`` (the loop's time) for what they
    send the server."""
    with _lock:
        held: list[AsyncMongoClient] = []
        for clients in _clients.values():
            client = clients.pop(loop, None)
            if client is not None and all(client is not other for other in held):
                held.append(client)
        released = [client for client in held if _release(client)]
        released += _cut_short.pop(loop, [])  # (disconnected, close cancelled)
        registry_changed()
    for client in released:
        with pymongo.timeout(_close_seconds(client, deadline - loop.time())):
            await _close(client)


def _close_seconds(client: AsyncMongoClient, left: float) -> float:
    """The time limit of ``client``'s close at its loop's end: what is
    ``left`` of the end's, but no more than a close of its own would wait to
    select a server for its endSessions (``serverSelectionTimeoutMS``):
    PyMongo's ``timeout()`` replaces that wait, a server gone held the loop's
    end for all of ``left``."""
    return max(min(left, client.options.server_selection_timeout), _SPENT_SECONDS)


async def _close(client: AsyncMongoClient) -> None:
    """``await client.close()`` on its loop, the running one; once the loop's
    ``shutdown_asyncgens()`` has begun, with :func:`_untracked_generators`
    (PyMongo's close() begins async generators of its own, whose warning,
    raised inside close() under ``-W error``, left the client unclosed)."""
    if not _shutting_down(asyncio.get_running_loop()):
        await client.close()
        return
    with _untracked_generators():
        await client.close()


# The tasks closing clients on their own loops (the loop keeps only weak ones).
_closing: set[asyncio.Future[Any]] = set()

# By loop: the clients whose closing task above that loop's end cancelled
# (``asyncio.run()`` cancels every task left), or that bound themselves to it
# beside its own (_adopt): closed as it shuts down.
_cut_short: dict[asyncio.AbstractEventLoop, list[AsyncMongoClient]] = {}


def _closing_ended(client: AsyncMongoClient, task: asyncio.Future[Any]) -> None:
    if task.cancelled():
        _cut_short.setdefault(task.get_loop(), []).append(client)


# The attribute of a client holding the tasks ending its transactions (see
# ends_transaction): on the client itself, as clients of one deployment compare
# equal (PyMongo's __eq__), so a dict keyed by client mixed those of two loops.
_TRANSACTIONS = "_mongoengine_async_transactions"


def ends_transaction(client: AsyncMongoClient, task: asyncio.Future[Any]) -> None:
    """Note ``task``, which ends a transaction on ``client`` (its abort or
    commit, or what follows: see ``_Block.settled``): ``client``
    disconnected meanwhile is closed once it is done.
    Closed under it, the transaction could not end, and would stay open on
    the server, locking what it wrote, until the server's time limit."""
    held(task, client.__dict__.setdefault(_TRANSACTIONS, set()))


async def _close_after_transactions(client: AsyncMongoClient, alias: str) -> None:
    """Close ``client``, ``alias``'s until its disconnect, once the
    transactions on it ended (see :func:`ends_transaction`), then the work
    they left that may use ``alias`` (see ``finish_before_close``: the delete
    of a file once a block aborted): closed under it, the file's chunks
    stayed, its document deleted."""
    while ending := client.__dict__.get(_TRANSACTIONS):
        await asyncio.wait(set(ending))
        await all_finished(
            _END_SECONDS,
            f"The close of the client of disconnect_async('{alias}')",
            "the most it waits",
            frozenset((alias,)),
        )
    await _close(client)


def _close_on(
    loop: asyncio.AbstractEventLoop | None, client: AsyncMongoClient, alias: str
) -> None:
    """Close ``client`` on ``loop``, its own (another thread's, or one not
    running now: when it runs again), once the transactions on it ended
    (see :func:`_close_after_transactions`; ``alias``: the one disconnected).
    Nothing to do for a client no loop has used, or one of a loop that has
    closed (its sockets close as it goes)."""
    if loop is None or loop.is_closed():
        return

    def close() -> None:
        closing = _close_after_transactions(client, alias)
        task = held(loop.create_task(closing), _closing)
        task.add_done_callback(functools.partial(_closing_ended, client))

    try:
        loop.call_soon_threadsafe(close)
    except RuntimeError:  # the loop has closed meanwhile
        pass


async def disconnect_all_async() -> None:
    """Disconnect every async alias (sync aliases are left alone), once what
    cancelled writes left going on that may use them ended: one wait for all
    (``_END_SECONDS`` at most), not one per alias."""
    aliases = async_aliases()
    if aliases:
        running_loop()  # (refused clearly outside asyncio, as disconnect_async)
        await all_finished(
            _END_SECONDS, "disconnect_all_async()", "the most it waits", aliases
        )
    for alias in aliases:
        await disconnect_async(alias)


def _refuse_async_alias(alias: str, sync_name: str, async_name: str) -> None:
    if is_async_connection(alias):
        raise ConnectionUsageError(
            f"Alias `{alias}` is an async connection registered with "
            f"connect_async(): use {async_name}() instead of {sync_name}()"
            + registered_twice(alias)
        )


def connect(
    db: str | None = None, alias: str = DEFAULT_CONNECTION_NAME, **kwargs: Any
) -> MongoClient[Any]:
    """:func:`mongoengine.connect`, refusing aliases that are async."""
    _refuse_async_alias(alias, "connect", "connect_async")
    client = me_connection.connect(db, alias, **kwargs)
    _registered_only.pop(alias, None)
    return client


def register_connection(alias: str, *args: Any, **kwargs: Any) -> None:
    """:func:`mongoengine.register_connection`, refusing async aliases."""
    _refuse_async_alias(alias, "register_connection", "connect_async")
    me_connection.register_connection(alias, *args, **kwargs)
    _registered_only[alias] = sync_settings_of(alias)


def disconnect(alias: str = DEFAULT_CONNECTION_NAME) -> None:
    """:func:`mongoengine.disconnect`, refusing aliases that are async."""
    _refuse_async_alias(alias, "disconnect", "await disconnect_async")
    return me_connection.disconnect(alias)


def disconnect_all() -> None:
    """:func:`mongoengine.disconnect_all`: closes the sync aliases only."""
    return me_connection.disconnect_all()


def get_connection(
    alias: str = DEFAULT_CONNECTION_NAME, reconnect: bool = False
) -> MongoClient[Any]:
    """:func:`mongoengine.get_connection`, refusing aliases that are async."""
    _refuse_async_alias(alias, "get_connection", "get_async_connection")
    return me_connection.get_connection(alias, reconnect)


def get_db(
    alias: str = DEFAULT_CONNECTION_NAME, reconnect: bool = False
) -> Database[Any]:
    """:func:`mongoengine.get_db`, refusing aliases that are async."""
    _refuse_async_alias(alias, "get_db", "get_async_db")
    return me_connection.get_db(alias, reconnect)


# MongoEngine's sync registry: code that resets it through this module
# (``connection._connections = {}``, as MongoEngine's own tests do after
# ``from mongoengine import connection``) must reach MongoEngine's.
_SYNC_REGISTRY = frozenset(MONGOENGINE_CONNECTION_GLOBALS)


class _ConnectionModule(types.ModuleType):
    """This module, reading and writing MongoEngine's sync registry globals."""

    def __getattr__(self, name: str) -> Any:
        """MongoEngine's ``mongoengine.connection.<name>`` where this module
        has no ``name``: its sync registry globals (``_connections``...) and
        its other names (see :mod:`mongoengine_async.same_named`)."""
        return mongoengine_attribute(self.__name__, name)

    def __setattr__(self, name: str, value: Any) -> None:
        if name in _SYNC_REGISTRY:
            setattr(me_connection, name, value)
        else:
            super().__setattr__(name, value)


sys.modules[__name__].__class__ = _ConnectionModule
