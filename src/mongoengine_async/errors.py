"""The exceptions of mongoengine_async: every misuse error derives from MisuseError.

Misuse is code that cannot work as written: a blocking call on an async alias, an
async call on a sync alias, a connection function on an alias of the other kind,
a nested transaction. Each class is also the MongoEngine (or built-in) type that
was raised before, so existing ``except`` clauses keep catching it. Errors that
MongoEngine itself raises for the same situation (an undefined alias,
``DoesNotExist``, ``InvalidQueryError``, ``NotUniqueError``...) stay MongoEngine's;
this module exports them too, so ``from mongoengine.errors import ...`` migrates by
its module name alone.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from mongoengine.connection import ConnectionFailure
from mongoengine.errors import (
    BulkWriteError,
    DeprecatedError,
    DoesNotExist,
    FieldDoesNotExist,
    InvalidDocumentError,
    InvalidQueryError,
    LookUpError,
    MultipleObjectsReturned,
    NotRegistered,
    NotUniqueError,
    OperationError,
    SaveConditionError,
    ValidationError,
)
from pymongo.errors import InvalidOperation

from mongoengine_async.same_named import mongoengine_attribute

__all__ = (
    "AsyncUsageError",
    "BulkWriteError",
    "ConnectionUsageError",
    "DeprecatedError",
    "DoesNotExist",
    "FieldDoesNotExist",
    "ForeignSessionError",
    "InvalidDocumentError",
    "InvalidQueryError",
    "LookUpError",
    "MisuseError",
    "MultipleObjectsReturned",
    "NestedTransactionError",
    "NotLoadedError",
    "NotRegistered",
    "NotUniqueError",
    "OperationError",
    "SaveConditionError",
    "ValidationError",
)


class MisuseError(Exception):
    """Base of every misuse error of this package: catch it to catch them all."""


class AsyncUsageError(OperationError, RuntimeError, MisuseError):
    """A sync method was called on an async alias, or the other way round."""


class ConnectionUsageError(ConnectionFailure, MisuseError):
    """A connection function was called on an alias of the other kind (sync or
    async); a ``ConnectionFailure`` as MongoEngine reports connection errors."""


class NestedTransactionError(OperationError, MisuseError):
    """``async_run_in_transaction`` was entered while a transaction of the same
    client is active in the task; MongoDB has no nested transactions."""


class ForeignSessionError(InvalidOperation, MisuseError):
    """``session=`` was started by another client than the operation's; an
    ``InvalidOperation``, as PyMongo reports the same misuse."""


class NotLoadedError(AsyncUsageError, AttributeError):
    """An attribute read on an async alias that needs data not loaded yet (a
    file's metadata, the document of a passthrough lazy reference), which
    loading here would block the event loop for: an ``AsyncUsageError``, and
    an ``AttributeError`` so that ``hasattr`` and ``getattr(obj, name,
    default)`` answer instead of raising."""


if not TYPE_CHECKING:  # (checkers see this module's own names alone)

    def __getattr__(name: str) -> Any:
        """MongoEngine's ``mongoengine.errors.<name>`` where this module has no
        ``name`` (see :mod:`mongoengine_async.same_named`)."""
        return mongoengine_attribute(__name__, name)
