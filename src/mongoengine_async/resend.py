"""Idempotent writes PyMongo does not retry (index creations, a delete of many
documents), sent once more after an error PyMongo retries a retryable write on:
what a primary stepping down or a lost connection would otherwise leave failed.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import pymongo.errors
from pymongo.asynchronous.client_session import AsyncClientSession
from pymongo.asynchronous.collection import AsyncCollection

from mongoengine_async._compat import (
    RETRYABLE_ERROR_CODES,
    apply_client_timeout,
    caller_time_left,
)

__all__ = ("retryable_write_error", "sent_again_once")

_Sent = TypeVar("_Sent")


def retryable_write_error(error: pymongo.errors.PyMongoError) -> bool:
    """Whether PyMongo retries a retryable write that failed with ``error``: a
    connection error (not a server selection or pool time-out: those waited
    already) or a server error of its retryable codes (NotWritablePrimary,
    InterruptedDueToReplStateChange, also in a write concern error...)."""
    if isinstance(error, pymongo.errors.ConnectionFailure):
        return not isinstance(
            error,
            (
                pymongo.errors.ServerSelectionTimeoutError,
                pymongo.errors.WaitQueueTimeoutError,
            ),
        )
    return (
        isinstance(error, pymongo.errors.OperationFailure)
        and error.code in RETRYABLE_ERROR_CODES
    )


@apply_client_timeout  # (both sends in one budget, as PyMongo's retry)
async def sent_again_once(
    collection: AsyncCollection[Any],
    send: Callable[[], Awaitable[_Sent]],
    session: AsyncClientSession | None,
) -> _Sent:
    """``send()``, an idempotent write to ``collection`` PyMongo does not
    retry, sent once more after an error PyMongo retries a retryable write
    on, as PyMongo sends one again: not when the client's ``retryWrites`` is
    off, nor in a transaction (in ``session``), which is retried as a whole,
    nor once the caller's ``pymongo.timeout()`` is spent (its error raised);
    under none, the collection's ``timeoutMS`` bounds both sends, as it
    bounds a write and its retry. An error of the second send is raised
    while handling the first's (its ``__context__``)."""
    try:
        return await send()
    except pymongo.errors.PyMongoError as error:
        in_transaction = session is not None and session.in_transaction
        if (
            in_transaction
            or not collection.database.client.options.retry_writes
            or not retryable_write_error(error)
            or _time_spent()
        ):
            raise
        return await send()


def _time_spent() -> bool:
    """Whether the caller's ``pymongo.timeout()`` has no time left (PyMongo
    then raises a retryable write's error rather than send it again)."""
    left = caller_time_left()
    return left is not None and left <= 0
