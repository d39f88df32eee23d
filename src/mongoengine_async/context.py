"""Task-local state: the bound session, database/collection switches, no-dereference.

Everything lives in :mod:`contextvars`, so concurrent tasks never see each
other's switches or transactions, while code inside a block still spells the
document class by its own name.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from contextvars import ContextVar
from typing import Any, TypeVar

from mongoengine.connection import DEFAULT_CONNECTION_NAME
from mongoengine.errors import OperationError
from pymongo import AsyncMongoClient
from pymongo.asynchronous.client_session import AsyncClientSession
from pymongo.errors import PyMongoError

from mongoengine_async.connection import get_async_connection

__all__ = (
    "async_no_dereference",
    "async_run_in_transaction",
    "async_switch_collection",
    "async_switch_db",
    "current_session",
)

T = TypeVar("T", bound=type)

# The sessions bound by async_run_in_transaction in this task, one per client.
_sessions: ContextVar[tuple[AsyncClientSession, ...]] = ContextVar(
    "mongoengine_async_sessions", default=()
)
_db_aliases: ContextVar[dict[type, str]] = ContextVar("mongoengine_async_db_aliases")
_collections: ContextVar[dict[type, str]] = ContextVar("mongoengine_async_collections")
_no_dereference: ContextVar[frozenset[type]] = ContextVar(
    "mongoengine_async_no_dereference", default=frozenset()
)

_COMMIT_RETRY_SECONDS = 120


def current_session(client: Any = None) -> AsyncClientSession | None:
    """The session bound by ``async_run_in_transaction`` for ``client``, if any.

    Without ``client``: the innermost session bound in this task, if any.
    """
    sessions = _sessions.get()
    if client is None:
        return sessions[-1] if sessions else None
    for session in sessions:
        if session.client is client:
            return session
    return None


def switched_alias(cls: type) -> str | None:
    """The alias ``async_switch_db`` set for ``cls`` in this task, if any."""
    return _db_aliases.get({}).get(cls)


def switched_collection(cls: type) -> str | None:
    """The collection ``async_switch_collection`` set for ``cls``, if any."""
    return _collections.get({}).get(cls)


def dereference_disabled(cls: type) -> bool:
    """Whether ``async_no_dereference(cls)`` is active in this task."""
    return cls in _no_dereference.get()


@asynccontextmanager
async def _bind(var: ContextVar, value: Any) -> AsyncIterator[None]:
    token = var.set(value)
    try:
        yield
    finally:
        var.reset(token)


@asynccontextmanager
async def async_switch_db(cls: T, alias: str) -> AsyncIterator[T]:
    """Make ``cls`` use database alias ``alias`` inside the block (this task only)."""
    async with _bind(_db_aliases, {**_db_aliases.get({}), cls: alias}):
        yield cls


@asynccontextmanager
async def async_switch_collection(cls: T, collection_name: str) -> AsyncIterator[T]:
    """Make ``cls`` use collection ``collection_name`` inside the block."""
    async with _bind(_collections, {**_collections.get({}), cls: collection_name}):
        yield cls


@asynccontextmanager
async def async_no_dereference(cls: T) -> AsyncIterator[T]:
    """Inside the block, references of ``cls`` read as their stored value."""
    async with _bind(_no_dereference, _no_dereference.get() | {cls}):
        yield cls


@asynccontextmanager
async def async_run_in_transaction(
    alias: str = DEFAULT_CONNECTION_NAME,
    session_kwargs: dict[str, Any] | None = None,
    transaction_kwargs: dict[str, Any] | None = None,
) -> AsyncIterator[AsyncClientSession]:
    """Run the block in one transaction on ``alias``; commit at the end.

    Every async operation of this package inside the block uses the session
    (operations on another client do not). An exception aborts the
    transaction and propagates. Nesting on the same client raises.
    """
    client = get_async_connection(alias)
    async with run_in_transaction(
        client, session_kwargs, transaction_kwargs
    ) as session:
        yield session


@asynccontextmanager
async def run_in_transaction(
    client: AsyncMongoClient,
    session_kwargs: dict[str, Any] | None = None,
    transaction_kwargs: dict[str, Any] | None = None,
) -> AsyncIterator[AsyncClientSession]:
    """``async_run_in_transaction`` on ``client`` (one the registry made)."""
    if current_session(client) is not None:
        raise OperationError(
            "async_run_in_transaction() cannot be nested: a transaction is "
            "already active in this task"
        )
    async with client.start_session(**(session_kwargs or {})) as session:
        async with _bind(_sessions, (*_sessions.get(), session)):
            await session.start_transaction(**(transaction_kwargs or {}))
            try:
                yield session
            except BaseException:
                if session.in_transaction:
                    await session.abort_transaction()
                raise
            await _commit(session)


async def _commit(session: AsyncClientSession) -> None:
    """Commit, retrying while the outcome is unknown, as the driver advises."""
    deadline = time.monotonic() + _COMMIT_RETRY_SECONDS
    while True:
        try:
            await session.commit_transaction()
            return
        except PyMongoError as err:
            retry = err.has_error_label("UnknownTransactionCommitResult")
            if not retry or time.monotonic() > deadline:
                raise
