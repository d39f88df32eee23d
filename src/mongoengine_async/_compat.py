"""Every private name of MongoEngine, PyMongo and asyncio this package relies on.

Module-level private functions and classes are imported here, with plain imports,
and re-exported under a public name: the package imports them from here only.
Private attributes of their classes that we read, set, call or override are
listed in :data:`PRIVATE_ATTRIBUTES`, the parameters we pass to or accept from
their private callables in :data:`PRIVATE_SIGNATURES`. ``tests/test_compat.py``
checks all of them, so that an upgrade renaming one fails there, loudly.
"""

from __future__ import annotations

import contextlib
from asyncio import _get_running_loop as running_loop_or_none
from collections.abc import Callable, Iterator
from typing import Any

import mongoengine
import mongoengine.base.common as me_common
import mongoengine.connection as me_connection
from bson import DBRef, ObjectId
from gridfs.asynchronous import AsyncGridIn, AsyncGridOut
from gridfs.asynchronous.grid_file import (
    _AsyncGridOutChunkIterator as AsyncGridOutChunkIterator,
)
from mongoengine.base import (
    BaseDict,
    BaseDocument,
    BaseField,
    BaseList,
    ComplexBaseField,
)
from mongoengine.base.datastructures import LazyReference
from mongoengine.dereference import DeReference
from mongoengine.fields import GridFSProxy
from mongoengine.queryset.base import BaseQuerySet
from mongoengine.queryset.queryset import QuerySet as MongoEngineQuerySet
from pymongo import AsyncMongoClient
from pymongo._csot import DEADLINE as client_timeout_deadline
from pymongo._csot import TIMEOUT as client_timeout
from pymongo._csot import apply as apply_client_timeout
from pymongo._csot import remaining as caller_time_left
from pymongo.asynchronous.change_stream import AsyncChangeStream
from pymongo.asynchronous.client_session import AsyncClientSession
from pymongo.asynchronous.command_cursor import AsyncCommandCursor
from pymongo.asynchronous.cursor import AsyncCursor
from pymongo.asynchronous.topology import Topology
from pymongo.cursor_shared import _CURSOR_CLOSED_ERRORS as CURSOR_CLOSED_ERRORS
from pymongo.helpers_shared import _RETRYABLE_ERROR_CODES as RETRYABLE_ERROR_CODES
from pymongo.synchronous.cursor import Cursor

# Untyped private names, bound here (a checker cannot resolve re-exported aliases
# of names from a package without types).
document_registry: dict[str, Any] = me_common._document_registry
get_connection_settings: Callable[..., dict[str, Any]] = (
    me_connection._get_connection_settings
)

__all__ = (
    "CURSOR_CLOSED_ERRORS",
    "MONGOENGINE_CONNECTION_GLOBALS",
    "PRIVATE_ATTRIBUTES",
    "PRIVATE_SIGNATURES",
    "RETRYABLE_ERROR_CODES",
    "AsyncGridOutChunkIterator",
    "apply_client_timeout",
    "caller_time_left",
    "container_location",
    "document_registry",
    "get_connection_settings",
    "has_field_display",
    "is_registered_sync",
    "outside_caller_timeout",
    "running_loop_or_none",
    "set_field_display",
    "sync_alias_of",
    "sync_settings_of",
    "without_pymongo_timeouts",
)

MONGOENGINE_CONNECTION_GLOBALS = ("_connection_settings", "_connections", "_dbs")
"""MongoEngine's sync registry: module globals of ``mongoengine.connection``
that code (and MongoEngine's own tests) reset by assigning them."""


def is_registered_sync(alias: str) -> bool:
    """Whether ``alias`` is registered with MongoEngine's ``connect()``; read on
    each call, as the registry dict may be replaced (see above)."""
    return alias in me_connection._connection_settings


def sync_settings_of(alias: str) -> dict[str, Any] | None:
    """The settings MongoEngine registered sync ``alias`` with (the very dict,
    another once registered again), if any; read on each call."""
    return me_connection._connection_settings.get(alias)


def sync_alias_of(client: Any) -> str | None:
    """The alias MongoEngine's ``connect()`` made ``client`` for, if any."""
    for alias, registered in me_connection._connections.items():
        if registered is client:
            return alias
    return None


def container_location(container: Any) -> tuple[str | None, Any]:
    """The field path and owning document of a MongoEngine BaseList/BaseDict;
    (None, None) for a plain list or dict, which has neither."""
    if isinstance(container, BaseList | BaseDict):
        return container._name, container._instance
    return None, None


PRIVATE_ATTRIBUTES: tuple[tuple[type[Any], str], ...] = (
    # Document internals every MongoEngine extension reads or sets.
    (BaseDocument, "_data"),
    (BaseDocument, "_fields"),
    (BaseDocument, "_fields_ordered"),
    (BaseDocument, "_dynamic"),
    (BaseDocument, "_changed_fields"),
    (BaseDocument, "_created"),
    (BaseDocument, "_initialised"),
    (BaseDocument, "_from_son"),
    (BaseDocument, "_mark_as_changed"),
    (BaseDocument, "_clear_changed_fields"),
    (BaseDocument, "_delta"),
    (BaseDocument, "_lookup_field"),
    (BaseDocument, "_build_index_spec"),
    (BaseDocument, "_BaseDocument__set_field_display"),
    (mongoengine.Document, "_meta"),
    (mongoengine.Document, "_class_name"),
    (mongoengine.Document, "_subclasses"),
    (mongoengine.Document, "_get_db"),
    (mongoengine.Document, "_get_collection"),
    (mongoengine.Document, "_get_collection_name"),
    (mongoengine.Document, "_get_update_doc"),
    (mongoengine.Document, "_integrate_shard_key"),
    (mongoengine.Document, "_object_key"),
    (mongoengine.Document, "_qs"),
    (mongoengine.Document, "_reload"),
    (mongoengine.Document, "_reverse_db_field_map"),
    (mongoengine.EmbeddedDocument, "_instance"),
    # Fields and the containers and references they read as.
    (BaseField, "_auto_dereference"),
    (BaseField, "_validate_choices"),
    (ComplexBaseField, "_incr_no_dereference_context"),
    (ComplexBaseField, "_decr_no_dereference_context"),
    (BaseList, "_dereferenced"),
    (BaseList, "_instance"),
    (BaseList, "_name"),
    (BaseDict, "_dereferenced"),
    (BaseDict, "_instance"),
    (BaseDict, "_name"),
    (LazyReference, "_cached_doc"),
    (GridFSProxy, "_mark_as_changed"),
    # The queryset state the async terminals read and set.
    (BaseQuerySet, "_document"),
    (BaseQuerySet, "_collection_obj"),
    (BaseQuerySet, "_query"),
    (BaseQuerySet, "_query_obj"),
    (BaseQuerySet, "_cls_query"),
    (BaseQuerySet, "_cursor"),
    (BaseQuerySet, "_cursor_obj"),
    (BaseQuerySet, "_cursor_args"),
    (BaseQuerySet, "_auto_dereference"),
    (BaseQuerySet, "_as_pymongo"),
    (BaseQuerySet, "_scalar"),
    (BaseQuerySet, "_get_scalar"),
    (BaseQuerySet, "_fields_to_dbfields"),
    (BaseQuerySet, "_loaded_fields"),
    (BaseQuerySet, "_ordering"),
    (BaseQuerySet, "_limit"),
    (BaseQuerySet, "_skip"),
    (BaseQuerySet, "_empty"),
    (BaseQuerySet, "_none"),
    (BaseQuerySet, "_hint"),
    (BaseQuerySet, "_collation"),
    (BaseQuerySet, "_batch_size"),
    (BaseQuerySet, "_max_time_ms"),
    (BaseQuerySet, "_comment"),
    (BaseQuerySet, "_where_clause"),  # refused by change streams
    (BaseQuerySet, "_read_preference"),
    (BaseQuerySet, "_read_concern"),
    (BaseQuerySet, "_has_data"),  # guarded on async aliases
    (BaseQuerySet, "_collection"),
    (BaseQuerySet, "_clone_into"),  # no_cache()/cache() giving ours
    # What sync reads override to build their documents with the loaders.
    (MongoEngineQuerySet, "_populate_cache"),
    (MongoEngineQuerySet, "_result_cache"),
    (MongoEngineQuerySet, "_has_more"),
    (BaseQuerySet, "_dereference"),  # select_related's walk, handed a list
    # A container's first read on an async alias: DeReference's walk, with
    # no reference found to load (proxies.walk_without_loading).
    (DeReference, "_find_references"),
    (DeReference, "_attach_objects"),
    (mongoengine.ReferenceField, "_lazy_load_ref"),
    (mongoengine.CachedReferenceField, "_lazy_load_ref"),
    (mongoengine.GenericReferenceField, "_lazy_load_ref"),
    # PyMongo's GridFS streams, whose batching we change.
    (AsyncGridIn, "_file"),
    (AsyncGridIn, "_flush_data"),
    (AsyncGridIn, "_buffered_docs_size"),
    # A failed upload removes only what it wrote (gridfs._remove_partial).
    (AsyncGridIn, "_buffered_docs"),
    (AsyncGridIn, "_ensure_indexes"),
    (AsyncGridIn, "_coll"),
    (AsyncGridIn, "_session"),
    (AsyncGridOut, "_chunks"),
    (AsyncGridOut, "_files"),  # (both mapped to the running loop's client)
    (AsyncGridOut, "_chunk_iter"),
    (AsyncGridOutChunkIterator, "_create_cursor"),
    (AsyncGridOutChunkIterator, "_cursor"),
    (AsyncGridOutChunkIterator, "_next_chunk"),
    (AsyncGridOutChunkIterator, "_next_with_retry"),
    # PyMongo's cursors, whose buffered batch `async for` (and a chunk of a
    # sync queryset's result cache) takes at once.
    (AsyncCursor, "_next_batch"),
    # A find sent on its own (its first batch, batches.open_find) in a task
    # that a cancellation of the read does not cancel.
    (AsyncCursor, "_refresh"),
    (AsyncCursor, "_empty"),
    # A cursor of a read cancelled midway, killed by the client's background
    # cleanup (batches.kill_soon); a change stream's is its ``_cursor``,
    # checked by tests/test_cancel_scopes.py (it exists once the stream opens).
    (AsyncCursor, "_id"),
    (AsyncCursor, "_killed"),
    (AsyncCursor, "_die_no_lock"),
    (AsyncCommandCursor, "_id"),
    (AsyncCommandCursor, "_killed"),
    (AsyncCommandCursor, "_die_no_lock"),
    (Cursor, "_data"),
    # PyMongo's resume of a change stream (a new aggregate) sent as its first
    # opening is, in a task a cancellation leaves alone (change_streams.py).
    (AsyncChangeStream, "_create_cursor"),
    # Whether a session's transaction has sent nothing yet: a block that
    # raised before sending anything needs no fence (context._Block.failed).
    (AsyncClientSession, "_starting_transaction"),
    # The loop an AsyncMongoClient bound itself to on its first operation
    # (connection.py; read with a default: None, as before any operation).
    (AsyncMongoClient, "_loop"),
    # Where it binds itself (its first operation's): a client given outside
    # any loop becomes that loop's there (connection._adopted_when_bound).
    (AsyncMongoClient, "_get_topology"),
    # The server a change stream's replaced cursor was read from, asked for
    # before it is killed (change_streams._kill_replaced).
    (AsyncMongoClient, "_topology"),
    (Topology, "select_server_by_address"),
    (AsyncCommandCursor, "_collection"),
    # A DBRef's slots, copied into a reference proxy.
    (DBRef, "_DBRef__collection"),
    (DBRef, "_DBRef__id"),
    (DBRef, "_DBRef__database"),
    (DBRef, "_DBRef__kwargs"),
    # An ObjectId's 12 bytes, the key of select_related's joins (from_bson
    # falls back to the public ``binary`` without it).
    (ObjectId, "_ObjectId__id"),
)
"""(class, attribute) pairs of MongoEngine and PyMongo used by this package."""

PRIVATE_SIGNATURES: tuple[tuple[Any, tuple[str, ...]], ...] = (
    (get_connection_settings, ("db",)),
    (
        AsyncGridOutChunkIterator.__init__,
        ("grid_out", "chunks", "session", "next_chunk"),
    ),
    (AsyncGridOutChunkIterator._create_cursor, ()),
    (AsyncGridOutChunkIterator._next_with_retry, ()),
    (AsyncGridIn._flush_data, ("data", "force")),
    (AsyncCursor._next_batch, ("result", "total")),
    (AsyncCursor._refresh, ()),
    (AsyncChangeStream._create_cursor, ()),
    (BaseDocument._from_son, ("son", "_auto_dereference")),
    (BaseDocument._mark_as_changed, ("key",)),
    (BaseDocument._clear_changed_fields, ()),
    (BaseDocument._delta, ()),
    (BaseDocument._lookup_field, ("parts",)),
    (BaseDocument._build_index_spec, ("spec",)),
    (BaseDocument._BaseDocument__set_field_display, ()),
    (mongoengine.Document._get_db, ()),
    (mongoengine.Document._get_collection, ()),
    (mongoengine.Document._get_collection_name, ()),
    (mongoengine.Document._get_update_doc, ()),
    (mongoengine.Document._integrate_shard_key, ("doc", "select_dict")),
    (mongoengine.Document._reload, ("key", "value")),
    (BaseField._validate_choices, ("value",)),
    (mongoengine.GenericReferenceField._validate_choices, ("value",)),
    (ComplexBaseField._incr_no_dereference_context, ()),
    (ComplexBaseField._decr_no_dereference_context, ()),
    (GridFSProxy._mark_as_changed, ()),
    (BaseQuerySet._get_scalar, ("doc",)),
    (BaseQuerySet._fields_to_dbfields, ("fields",)),
    (MongoEngineQuerySet._populate_cache, ()),
    (DeReference.__call__, ("items", "max_depth", "instance", "name")),
    (DeReference._find_references, ("items", "depth")),
    (mongoengine.ReferenceField._lazy_load_ref, ("ref_cls", "dbref")),
    (mongoengine.CachedReferenceField._lazy_load_ref, ("ref_cls", "dbref")),
    (mongoengine.GenericReferenceField._lazy_load_ref, ("ref_cls", "dbref")),
)
"""Private callables with the parameter names we pass or accept (overrides),
``self``/``cls`` left out; a release may add optional ones."""


@contextlib.contextmanager
def _pymongo_timeout(timeout: float | None) -> Iterator[None]:
    """Inside the block, PyMongo's ``pymongo.timeout()`` is ``timeout``, with
    no deadline of an enclosing one."""
    previous = client_timeout.set(timeout)
    deadline = client_timeout_deadline.set(float("inf"))
    try:
        yield
    finally:
        client_timeout_deadline.reset(deadline)
        client_timeout.reset(previous)


def outside_caller_timeout() -> contextlib.AbstractContextManager[None]:
    """Inside the block, no ``pymongo.timeout()`` of the caller's applies, the
    client's ``timeoutMS`` does (as under none): for work that must go on
    once the caller's budget is spent (the steps after a commit)."""
    return _pymongo_timeout(None)


def without_pymongo_timeouts() -> contextlib.AbstractContextManager[None]:
    """Inside the block, no PyMongo timeout applies: neither a
    ``pymongo.timeout()`` of the caller's (one enclosing it, expired, would
    make PyMongo raise before sending anything, and a nested one can only
    shorten it) nor the client's ``timeoutMS`` (sent as ``maxTimeMS``, it
    would make the server drop a command that waits there). A timeout of 0
    is PyMongo's "none" (CSOT's ``timeoutMS=0``); the client's applies only
    under no timeout at all (None)."""
    return _pymongo_timeout(0.0)


def has_field_display(cls: type[Any]) -> bool:
    """Whether ``cls``'s documents get ``get_<field>_display`` methods (a field
    with ``choices``), which :func:`set_field_display` gives."""
    return any(field.choices for field in cls._fields.values())


def set_field_display(document: Any) -> None:
    """Give ``document`` its ``get_<field>_display`` methods, as
    ``BaseDocument.__init__`` does (a private, name-mangled method)."""
    document._BaseDocument__set_field_display()
