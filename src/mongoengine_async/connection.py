"""Async connection registry beside MongoEngine's sync one.

Settings are parsed by MongoEngine's own ``_get_connection_settings``; the
clients are ``pymongo.AsyncMongoClient``. An alias is either sync (registered
with ``connect``) or async (registered with ``connect_async``), never both.
A client only works on the event loop it first ran on, so an alias used from
another running loop gets a client of its own for that loop.
"""

from __future__ import annotations

import asyncio
import sys
import types
import weakref
from typing import Any

import mongoengine
import mongoengine.connection as me_connection
from mongoengine.connection import DEFAULT_CONNECTION_NAME, ConnectionFailure
from pymongo import AsyncMongoClient
from pymongo.asynchronous.collection import AsyncCollection
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.driver_info import DriverInfo

__all__ = (
    "DEFAULT_CONNECTION_NAME",
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
_clients: dict[str, AsyncMongoClient] = {}
# An AsyncMongoClient works only on the event loop it first ran on. Each alias
# has the client connect_async made on its "home" loop; any other running loop
# (a test framework's fresh loop per test, say) gets a client of its own, kept
# until that loop has closed (a client holds its loop, so weak keys would not do).
_home_loops: dict[str, weakref.ref] = {}
_loop_clients: dict[str, dict[asyncio.AbstractEventLoop, AsyncMongoClient]] = {}
_disconnect_hooks: list = []
# The AsyncDatabase (by name) and AsyncCollection (by database and collection
# name) objects made for each registered client, by id(client): PyMongo's
# constructors cost 3 µs each, on every operation. Dropped when the client is
# let go, so an id is never reused while its entry exists.
_made: dict[int, dict[Any, Any]] = {}

_RENAMED = {
    "authentication_source": "authSource",
    "authentication_mechanism": "authMechanism",
}


def has_async_connections() -> bool:
    """Whether any alias is async: while none is, no async check is needed."""
    return bool(_settings)


def is_sync_connection(alias: str = DEFAULT_CONNECTION_NAME) -> bool:
    """Whether ``alias`` was registered with MongoEngine's ``connect``."""
    return alias in me_connection._connection_settings


def is_async_connection(alias: str = DEFAULT_CONNECTION_NAME) -> bool:
    """Whether ``alias`` was registered with :func:`connect_async`."""
    return alias in _settings


def _client_kwargs(settings: dict[str, Any]) -> dict[str, Any]:
    """Turn MongoEngine connection settings into AsyncMongoClient kwargs."""
    kwargs = {
        _RENAMED.get(key, key): value
        for key, value in settings.items()
        if key not in ("name", "sanitize_filter") and value is not None
    }
    kwargs.setdefault(
        "driver", DriverInfo("MongoEngine-async", mongoengine.__version__)
    )
    return kwargs


def _running_loop() -> asyncio.AbstractEventLoop | None:
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        return None


def _shared_client(settings: dict[str, Any]) -> AsyncMongoClient | None:
    """A client of this loop whose settings differ from ``settings`` only by db."""
    wanted = {k: v for k, v in settings.items() if k != "name"}
    for alias, other in _settings.items():
        same = {k: v for k, v in other.items() if k != "name"} == wanted
        if same and _home_loops[alias]() is _running_loop():
            return _clients[alias]
    return None


def _new_client(alias: str, settings: dict[str, Any]) -> AsyncMongoClient:
    try:
        return AsyncMongoClient(**_client_kwargs(settings))
    except Exception as err:
        raise ConnectionFailure(f"Cannot connect to database {alias} :\n{err}") from err


async def connect_async(
    db: str | None = None, alias: str = DEFAULT_CONNECTION_NAME, **kwargs: Any
) -> AsyncMongoClient:
    """Register ``alias`` as an async connection and return its client.

    Takes the same arguments as :func:`mongoengine.connect`, plus
    ``sanitize_filter`` (default True: refuse operator dicts as plain query
    values, see :mod:`mongoengine_async.query_values`). Connecting the same
    alias again with the same settings returns the existing client.
    """
    if is_sync_connection(alias):
        raise ConnectionFailure(
            f"Alias `{alias}` is a sync connection registered with connect(); "
            f"call disconnect('{alias}') before connect_async()"
        )
    sanitize_filter = bool(kwargs.pop("sanitize_filter", True))
    settings = me_connection._get_connection_settings(db, **kwargs)
    settings["sanitize_filter"] = sanitize_filter
    if alias in _settings:
        if _settings[alias] != settings:
            raise ConnectionFailure(
                f"A different connection with alias `{alias}` was already "
                "registered. Use disconnect_async() first"
            )
        return get_async_connection(alias)
    client = _shared_client(settings) or _new_client(alias, settings)
    _settings[alias] = settings
    _clients[alias] = client
    _home_loops[alias] = weakref.ref(asyncio.get_running_loop())
    _loop_clients[alias] = {}
    return client


def sanitize_filter_enabled(alias: str = DEFAULT_CONNECTION_NAME) -> bool:
    """Whether queries on async ``alias`` refuse operator dicts as plain values."""
    return alias in _settings and _settings[alias]["sanitize_filter"]


def undefined_alias_error(alias: str) -> ConnectionFailure:
    """MongoEngine's error for an alias nobody registered."""
    if alias == DEFAULT_CONNECTION_NAME:
        return ConnectionFailure("You have not defined a default connection")
    return ConnectionFailure(f'Connection with alias "{alias}" has not been defined')


def get_async_connection(alias: str = DEFAULT_CONNECTION_NAME) -> AsyncMongoClient:
    """The AsyncMongoClient of an async alias, for the running event loop."""
    if alias in _clients:
        loop = _running_loop()
        client = _made_client(alias, loop)
        if client is None:
            clients = _loop_clients[alias]
            _forget_closed_loops(clients)
            client = clients[loop] = _new_client(alias, _settings[alias])
        return client
    if is_sync_connection(alias):
        raise ConnectionFailure(
            f"Alias `{alias}` is not async: it was registered with connect(); "
            "use get_connection()"
        )
    raise undefined_alias_error(alias)


def _made_client(
    alias: str, loop: asyncio.AbstractEventLoop | None
) -> AsyncMongoClient | None:
    """The client of ``alias`` for ``loop`` (or for no loop), if there is one."""
    if loop is None or _home_loops[alias]() is loop:
        return _clients[alias]
    return _loop_clients[alias].get(loop)


def _forget_closed_loops(clients: dict) -> None:
    """Drop the clients of loops that have closed (an ``asyncio.run()`` that
    returned): nothing can use them again, and each holds its loop and sockets.
    They cannot be awaited closed any more; their sockets close as they go."""
    for loop in [loop for loop in clients if loop.is_closed()]:
        _let_go(clients.pop(loop))


def get_async_db(alias: str = DEFAULT_CONNECTION_NAME) -> AsyncDatabase:
    """The AsyncDatabase of an async alias."""
    client = get_async_connection(alias)
    made = _made_for(client)
    name = _settings[alias]["name"]
    database = made.get(name)
    if database is None:
        database = made[name] = client[name]
    return database


def get_async_collection(alias: str, name: str) -> AsyncCollection:
    """The AsyncCollection ``name`` in the database of an async alias."""
    database = get_async_db(alias)
    made = _made_for(database.client)
    key = (database.name, name)
    collection = made.get(key)
    if collection is None:
        collection = made[key] = database[name]  # PyMongo refuses a bad name
    return collection


def _made_for(client: AsyncMongoClient) -> dict:
    return _made.setdefault(id(client), {})


def _let_go(client: AsyncMongoClient) -> None:
    """Forget what was made for a client the registry no longer holds."""
    _made.pop(id(client), None)
    for hook in _disconnect_hooks:
        hook(client)


def on_disconnect(hook) -> None:
    """Register ``hook(client)``, called when an async client is closed."""
    _disconnect_hooks.append(hook)


async def disconnect_async(alias: str = DEFAULT_CONNECTION_NAME) -> None:
    """Forget an async alias; close its client for the running loop unless
    another alias shares it (clients of other loops are only dropped)."""
    if is_sync_connection(alias):
        raise ConnectionFailure(
            f"Alias `{alias}` is a sync connection: use disconnect('{alias}')"
        )
    if alias not in _settings:
        return
    current = _made_client(alias, _running_loop())
    dropped = [_clients.pop(alias), *_loop_clients.pop(alias).values()]
    del _settings[alias], _home_loops[alias]
    for client in dropped:
        if any(client is other for other in _clients.values()):
            continue  # still used by another alias
        _let_go(client)
        if client is current:  # clients of other loops cannot be awaited here
            await client.close()


async def disconnect_all_async() -> None:
    """Disconnect every async alias (sync aliases are left alone)."""
    for alias in list(_settings):
        await disconnect_async(alias)


def _refuse_async_alias(alias: str, sync_name: str, async_name: str) -> None:
    if is_async_connection(alias):
        raise ConnectionFailure(
            f"Alias `{alias}` is an async connection registered with "
            f"connect_async(): use {async_name}() instead of {sync_name}()"
        )


def connect(db=None, alias=DEFAULT_CONNECTION_NAME, **kwargs):
    """:func:`mongoengine.connect`, refusing aliases that are async."""
    _refuse_async_alias(alias, "connect", "connect_async")
    return me_connection.connect(db, alias, **kwargs)


def register_connection(alias, *args, **kwargs):
    """:func:`mongoengine.register_connection`, refusing async aliases."""
    _refuse_async_alias(alias, "register_connection", "connect_async")
    return me_connection.register_connection(alias, *args, **kwargs)


def disconnect(alias=DEFAULT_CONNECTION_NAME):
    """:func:`mongoengine.disconnect`, refusing aliases that are async."""
    _refuse_async_alias(alias, "disconnect", "await disconnect_async")
    return me_connection.disconnect(alias)


def disconnect_all():
    """:func:`mongoengine.disconnect_all`: closes the sync aliases only."""
    return me_connection.disconnect_all()


def get_connection(alias=DEFAULT_CONNECTION_NAME, reconnect=False):
    """:func:`mongoengine.get_connection`, refusing aliases that are async."""
    _refuse_async_alias(alias, "get_connection", "get_async_connection")
    return me_connection.get_connection(alias, reconnect)


def get_db(alias=DEFAULT_CONNECTION_NAME, reconnect=False):
    """:func:`mongoengine.get_db`, refusing aliases that are async."""
    _refuse_async_alias(alias, "get_db", "get_async_db")
    return me_connection.get_db(alias, reconnect)


# MongoEngine's sync registry: code that resets it through this module
# (``connection._connections = {}``, as MongoEngine's own tests do after
# ``from mongoengine import connection``) must reach MongoEngine's.
_SYNC_REGISTRY = frozenset({"_connection_settings", "_connections", "_dbs"})


class _ConnectionModule(types.ModuleType):
    """This module, reading and writing MongoEngine's sync registry globals."""

    def __getattr__(self, name: str) -> Any:
        if name in _SYNC_REGISTRY:
            return getattr(me_connection, name)
        raise AttributeError(f"module {self.__name__!r} has no attribute {name!r}")

    def __setattr__(self, name: str, value: Any) -> None:
        if name in _SYNC_REGISTRY:
            setattr(me_connection, name, value)
        else:
            super().__setattr__(name, value)


sys.modules[__name__].__class__ = _ConnectionModule
