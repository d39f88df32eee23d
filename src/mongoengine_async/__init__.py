"""Native asyncio for MongoEngine models, on PyMongo's async API.

``from mongoengine_async import *`` gives every public name of ``mongoengine``,
with the classes that need async behaviour replaced by subclasses.
"""

import mongoengine
from mongoengine import *

from mongoengine_async.change_streams import (
    ChangeEvent,
    ChangeStream,
    UpdateDescription,
)
from mongoengine_async.connection import (
    connect,
    connect_async,
    disconnect,
    disconnect_all,
    disconnect_all_async,
    disconnect_async,
    get_async_connection,
    get_async_db,
    get_connection,
    get_db,
    is_async_connection,
    is_sync_connection,
    register_connection,
)
from mongoengine_async.context import (
    async_no_dereference,
    async_run_in_transaction,
    async_run_transaction,
    async_switch_collection,
    async_switch_db,
    is_transient,
)
from mongoengine_async.document import Document, DynamicDocument
from mongoengine_async.errors import (
    AsyncUsageError,
    ConnectionUsageError,
    ForeignSessionError,
    MisuseError,
    NestedTransactionError,
)
from mongoengine_async.fields import (
    CachedReferenceField,
    DictField,
    EmbeddedDocumentListField,
    FileField,
    GenericLazyReferenceField,
    GenericReferenceField,
    ImageField,
    LazyReferenceField,
    ListField,
    MapField,
    ReferenceField,
    SortedListField,
)
from mongoengine_async.gridfs import AsyncGridFSProxy
from mongoengine_async.proxies import AsyncReferenceProxy, LazyReference
from mongoengine_async.queryset import AsyncAggregation, QuerySet

__version__ = "0.1.0"

_ASYNC_NAMES = [
    "AsyncAggregation",
    "AsyncGridFSProxy",
    "AsyncReferenceProxy",
    "AsyncUsageError",
    "ChangeEvent",
    "ChangeStream",
    "ConnectionUsageError",
    "ForeignSessionError",
    "MisuseError",
    "NestedTransactionError",
    "LazyReference",
    "UpdateDescription",
    "async_no_dereference",
    "async_run_in_transaction",
    "async_run_transaction",
    "async_switch_collection",
    "async_switch_db",
    "connect_async",
    "disconnect_all_async",
    "disconnect_async",
    "get_async_connection",
    "get_async_db",
    "is_async_connection",
    "is_sync_connection",
    "is_transient",
]

__all__ = [*mongoengine.__all__, *_ASYNC_NAMES]
