"""The QuerySet with async terminals.

Chaining (filter, order_by, only, limit...) and every piece of query building
are MongoEngine's; on an async alias the queryset holds an ``AsyncCollection``
and the ``async_*`` terminals await the driver. The blocking terminals refuse
async aliases. The other names of ``mongoengine.queryset`` are exported as
MongoEngine's, so ``from mongoengine.queryset import ...`` migrates by its module
name alone.
"""

from __future__ import annotations

import asyncio
import collections.abc
import contextlib
import dataclasses
import functools
import operator
import warnings
import weakref
from collections.abc import (
    AsyncGenerator,
    Awaitable,
    Callable,
    Coroutine,
    Generator,
    Iterator,
    Mapping,
    Sequence,
)
from typing import TYPE_CHECKING, Any, Generic, TypeVar

import mongoengine.queryset.queryset as me_queryset
import pymongo.errors
from bson.timestamp import Timestamp
from mongoengine.connection import ConnectionFailure
from mongoengine.context_managers import set_read_write_concern, set_write_concern
from mongoengine.document import Document as MongoEngineDocument
from mongoengine.errors import (
    DoesNotExist,
    InvalidQueryError,
    LookUpError,
    MultipleObjectsReturned,
    NotUniqueError,
    OperationError,
)
from mongoengine.fields import (
    CachedReferenceField,
    EmbeddedDocumentField,
    GenericReferenceField,
    ListField,
)
from mongoengine.queryset import (
    CASCADE,
    DENY,
    DO_NOTHING,
    NULLIFY,
    PULL,
    QueryFieldList,
    QuerySetManager,
    queryset_manager,
    transform,
)
from mongoengine.queryset.base import BaseQuerySet as MongoEngineBaseQuerySet
from mongoengine.queryset.visitor import Q
from pymongo import ReturnDocument
from pymongo.asynchronous.client_session import AsyncClientSession
from pymongo.asynchronous.collection import AsyncCollection
from pymongo.asynchronous.command_cursor import AsyncCommandCursor
from pymongo.asynchronous.cursor import AsyncCursor

from mongoengine_async import context, deltas, sequences, signals, to_bson
from mongoengine_async import fields as our_fields
from mongoengine_async.batches import (
    WHOLE_RESULT,
    Iteration,
    by_id,
    kill_soon,
    leave,
    materialise_all,
    open_find,
    opened,
    read_list,
    started,
    stopped,
)
from mongoengine_async.change_streams import ChangeStream, WatchOptions
from mongoengine_async.classes import keyed_by_class, taken_in
from mongoengine_async.connection import (
    collection_alias,
    has_async_connections,
    is_async_connection,
    is_sync_connection,
)
from mongoengine_async.context import dereference_disabled
from mongoengine_async.delete_rules import (
    CancelledAfterFailure,
    RootFiles,
    aliases_of_delete,
    check_rules,
    delete_each,
    delete_matching,
    has_rules,
    runs_own_transaction,
)
from mongoengine_async.detached import (
    CANCELLED_WRITE,
    FAILED,
    detached,
    failure,
    finish_before_close,
    held,
    until_done,
)
from mongoengine_async.from_bson import loader, owned_loader
from mongoengine_async.gridfs import (
    Listed,
    Unreachable,
    delete_files_of_deleted,
    delete_unheld,
    has_file_fields,
    listed,
    stored_files_and_ids,
)
from mongoengine_async.guards import (
    blocking_call_error,
    guard_blocking_methods,
    kind_changed_error,
    require_async,
)
from mongoengine_async.inserts import (
    FastSyncInserts,
    check_insertable,
    give_ids,
    insert_errors,
    refresh_plans,
    set_ids,
    take_ids_back,
)
from mongoengine_async.operation import (
    Operation,
    field_or_session,
    own_session,
    plain_home,
    resolve,
)
from mongoengine_async.query_values import check_query_values
from mongoengine_async.same_named import mongoengine_attribute
from mongoengine_async.select_related import (
    attached_distinct,
    built_embedded,
    distinct_embedded,
    load_distinct,
    load_related,
)
from mongoengine_async.sync_reads import FastSyncReads, library_methods

if TYPE_CHECKING:
    from typing_extensions import Self

__all__ = (
    "CASCADE",
    "DENY",
    "DO_NOTHING",
    "NULLIFY",
    "PULL",
    "AsyncAggregation",
    "BaseQuerySet",
    "DoesNotExist",
    "InvalidQueryError",
    "MultipleObjectsReturned",
    "NotUniqueError",
    "OperationError",
    "Q",
    "QueryFieldList",
    "QuerySet",
    "QuerySetManager",
    "QuerySetNoCache",
    "queryset_manager",
)

_D = TypeVar("_D")  # what the queryset yields: its documents (or dicts, scalars)


@contextlib.contextmanager
def _update_errors() -> Iterator[None]:
    """Turn the driver's errors of an update into MongoEngine's."""
    try:
        yield
    except pymongo.errors.DuplicateKeyError as err:
        raise NotUniqueError(f"Update failed ({err})") from err
    except pymongo.errors.OperationFailure as err:
        raise OperationError(f"Update failed ({err})") from err


class AsyncAggregation(
    collections.abc.Coroutine[Any, Any, "AsyncCommandCursor[dict[str, Any]]"]
):
    """An aggregation: ``await`` it for the cursor, or ``async for`` over it,
    once (again, it raises RuntimeError, as a coroutine awaited twice does).

    Nothing is sent until then: one dropped unused (a forgotten ``await``,
    whose ``$out`` or ``$merge`` never ran) warns as a coroutine never awaited
    does (``RuntimeWarning``). To asyncio it is a coroutine (``create_task``,
    ``gather``, ``wait_for`` and task groups run it by ``send``/``throw``), so
    one whose task is cancelled before it ran is thrown the cancellation, as a
    coroutine is, and does not warn. It is a ``Coroutine`` to type checkers
    too, so that a user's ``asyncio.create_task(...)`` of one type-checks.
    """

    _steps: Generator[Any, None, AsyncCommandCursor[dict[str, Any]]] | None = None

    def __init__(
        self,
        open_cursor: Callable[[], Awaitable[AsyncCommandCursor[dict[str, Any]]]],
        name: str = "async_aggregate()",
    ) -> None:
        self._open_cursor = open_cursor
        self._name = name
        self._used = False

    def __await__(self) -> Generator[Any, None, AsyncCommandCursor[dict[str, Any]]]:
        self._start()
        return self._open_cursor().__await__()

    def _start(self) -> None:
        """Mark it used; once only, as a coroutine is, so that a pipeline with
        side effects (``$merge``, ``$out``) is never run twice by one object."""
        if self._used:
            raise RuntimeError(
                f"{self._name} was already awaited, iterated or closed: "
                "call async_aggregate() again to run the pipeline again"
            )
        self._used = True

    # The coroutine protocol (a task runs it as it runs a coroutine).

    def send(self, value: Any) -> Any:
        return self._stepping().send(value)

    def throw(self, error: Any, *args: Any) -> Any:
        return self._stepping().throw(error, *args)

    def close(self) -> None:
        self._used = True  # (a coroutine closed unawaited does not warn)
        if self._steps is not None:
            self._steps.close()

    def _stepping(self) -> Generator[Any, None, AsyncCommandCursor[dict[str, Any]]]:
        if self._steps is None:
            self._steps = self.__await__()
        return self._steps

    def __aiter__(self) -> AsyncGenerator[dict[str, Any], None]:
        self._start()
        again = "Call async_aggregate() again for a new async for"  # (runs once)
        return Iteration(self._rows, f"An async for over {self._name}", again)

    async def _rows(
        self, iteration: weakref.ref[Iteration[dict[str, Any]]]
    ) -> AsyncGenerator[dict[str, Any], None]:
        cursor = await started(self._open_cursor(), iteration)
        at_yield = False  # (see batches.leave)
        try:
            try:
                async for document in cursor:
                    at_yield = True
                    yield document
                    at_yield = False
            finally:
                if at_yield:
                    stopped(iteration, "loop")
                await leave(cursor, at_yield)
        except asyncio.CancelledError:
            if not at_yield:
                stopped(iteration, "cancelled")
                kill_soon(cursor)
            raise

    def __del__(self) -> None:
        if not self.__dict__.get("_used", True):
            warnings.warn(
                f"{self._name} was never awaited nor iterated: its pipeline "
                "was not run",
                RuntimeWarning,
                stacklevel=1,  # (run by the garbage collector: no caller)
                source=self,
            )


class IdQuery(Q):
    """``Q(pk=value)`` as a queryset's only filter, compiled (when the
    queryset's ``_query`` is first read, as a Q is) to ``{db_field: value}``
    by the id field's own ``prepare_query_value``: what MongoEngine's visitors
    and ``transform.query`` give for it, in a fifth of the time; tests/
    test_queryset_get.py compares the two. A reference as primary key, or a
    name MongoEngine cannot look up, goes to MongoEngine's path."""

    def to_query(self, document: Any) -> dict[str, Any]:
        ((key, value),) = self.query.items()
        field = _id_field(document, key)
        if field is None:
            return super().to_query(document)
        return {field.db_field: field.prepare_query_value(None, value)}


async def _no_results() -> list[dict[str, Any]]:
    """What a terminal reads of a queryset that matches nothing (``none()``)."""
    return []


_NEGATIVE_INDEX = "Cursor instances do not support negative indices"


def _id_field(document: type[Any], key: str) -> Any:
    """The field ``key`` names in ``document`` as MongoEngine's
    ``_lookup_field`` finds it, looked up once per class and key (a class's
    fields never change); None where MongoEngine's path must compile."""
    try:
        return _id_fields[document, key]
    except KeyError:
        pass
    taken_in(document)
    try:
        (field,) = document._lookup_field([key])
    except (LookUpError, ValueError):
        field = None
    if isinstance(field, CachedReferenceField | GenericReferenceField | str):
        field = None
    _id_fields[document, key] = field
    return field


_id_fields: dict[tuple[type[Any], str], Any] = keyed_by_class({})


class BaseQuerySet(FastSyncReads, FastSyncInserts, Generic[_D]):
    """What :class:`QuerySet` and :class:`QuerySetNoCache` add to MongoEngine's:
    ``async_*`` terminals and ``async for`` (and, on sync aliases, results built
    by the generated loaders and inserts dumped by the write plans)."""

    # The cursor of a read by id awaiting PyMongo's to_list directly (an
    # async_get's view only: see _fetch_raw), for async_get to kill if cancelled.
    _by_id_cursor: AsyncCursor | None = None

    # -- mode -----------------------------------------------------------------

    def _is_async(self) -> bool:
        return isinstance(self._collection_obj, AsyncCollection)

    def _target(self) -> str:
        return f"{self._document.__name__}.objects"

    def _require_async(self, name: str, use: str) -> None:
        if not self._is_async():
            alias = self._alias()
            if is_async_connection(alias):  # built before it was connected async
                raise kind_changed_error(self._target(), name, alias, now_async=True)
            require_async(alias, self._target(), name, use)

    def _made_sync_on_async_alias(self) -> str | None:
        """Of a queryset that is not async (``_is_async()`` said so): its alias,
        if it was built on a sync alias that was disconnected and connected
        again with connect_async() since (its collection is one of the closed
        sync client), else None."""
        if not has_async_connections():
            return None
        alias = self._alias()
        return alias if is_async_connection(alias) else None

    async def _resolve(
        self,
        name: str,
        session: AsyncClientSession | None = None,
        write_concern: dict[str, Any] | None = None,
    ) -> Operation:
        """:func:`resolve` for terminal ``name``; a queryset built while its
        alias was async, disconnected and connected again with connect() since,
        is refused as such (not as an alias that is not async)."""
        try:
            return await resolve(
                self._document, self._collection_obj, session, write_concern
            )
        except ConnectionFailure:
            alias = self._alias()
            if is_sync_connection(alias):
                raise kind_changed_error(
                    self._target(), name, alias, now_async=False
                ) from None
            raise

    def _alias(self) -> str:
        """The alias of the queryset's collection: the class's, unless
        ``using()`` moved the queryset to another."""
        alias = self._document._db_alias()
        return collection_alias(self._collection_obj, alias) or alias

    # The running terminal's (not cloned). Tasks may share a queryset: a
    # terminal reads it only before its first await after resolving it.
    _operation: Operation | None = None

    async def _async_collection(
        self,
        name: str,
        use: str,
        session: AsyncClientSession | None = None,
        write_concern: dict[str, Any] | None = None,
    ) -> AsyncCollection:
        """The collection on the running loop's client (the queryset may have been
        built outside it), prepared (indexes) once, after the mode check; the
        resolved operation is kept for the rest of the terminal. In the plain
        case (no session or write concern, the class's own collection) the
        class's kept home is that operation (:func:`plain_home`)."""
        home = None
        if session is None and write_concern is None:
            home = plain_home(self._document)
        if home is not None and self._collection_obj is home.operation.collection:
            operation = home.operation  # (an async alias's: nothing to require)
        else:
            self._require_async(name, use)
            operation = await self._resolve(name, session, write_concern)
        self._operation = operation
        self._collection_obj = operation.collection
        return operation.collection

    def _session(self) -> AsyncClientSession | None:
        """The running terminal's session; none while chaining (MongoEngine's
        ``comment()``... build a cursor that no terminal sends)."""
        operation = self._operation
        return None if operation is None else operation.session

    @property
    def _cursor_args(self) -> dict[str, Any]:
        args = super()._cursor_args
        if self._is_async():  # (the terminal's session, as _session() says)
            operation = self._operation
            args["session"] = None if operation is None else operation.session
        return args

    def _new_cursor(self) -> AsyncCursor:
        """A fresh driver cursor for this queryset (bound to the current session).

        MongoEngine's ``_cursor`` makes one only when it holds none: it is asked
        while ours is set aside (cheaper than a clone; nothing runs meanwhile).
        """
        held, self._cursor_obj = self._cursor_obj, None
        try:
            cursor = self._cursor
        finally:
            self._cursor_obj = held
        if self._max_time_ms is not None:
            cursor.max_time_ms(self._max_time_ms)
        return cursor

    def _materialiser(
        self, scalars_first: bool = False, dereference: bool | None = None
    ) -> Callable[[dict[str, Any]], Any]:
        """The function turning a raw result into a document, scalar or dict
        (the raw result is its: the document may keep its dict and lists).

        MongoEngine's terminals differ when both ``scalar()`` and
        ``as_pymongo()`` are set: listing and ``get()`` give the dicts,
        ``first()``, ``with_id()`` and ``in_bulk()`` the scalars
        (``scalars_first``), which ``in_bulk()`` loads dereferencing whatever
        is set (``dereference``).
        """
        if self._as_pymongo and not (scalars_first and self._scalar):
            return lambda raw: raw
        if not self._scalar:
            return loader(self._document, self._auto_dereference, owned=True)
        if dereference is None:
            dereference = self._auto_dereference
        load = loader(self._document, dereference, owned=True)
        return lambda raw: self._get_scalar(load(raw))

    # -- non-I/O behaviour on async aliases -------------------------------------

    def __call__(self, q_obj: Any = None, **query: Any) -> Self:
        """MongoEngine's filter (``filter``, ``get`` and ``Model.objects(...)``
        come here); on an async alias the values are checked first, see
        :mod:`mongoengine_async.query_values`."""
        if self._is_async():
            check_query_values(self._document, q_obj, query)
        return super().__call__(q_obj, **query)

    def __repr__(self) -> str:
        if not self._is_async():
            return super().__repr__()
        return f"<QuerySet {self._document.__name__} {self._query!r} (async)>"

    def __getitem__(self, key: Any) -> Any:
        if not self._is_async():
            alias = self._made_sync_on_async_alias()
            if alias is not None:
                raise kind_changed_error(
                    self._target(), "__getitem__", alias, now_async=True
                )
            return super().__getitem__(key)
        if isinstance(key, slice):
            return self._sliced(key)
        if not isinstance(key, int):
            raise TypeError("Provide a slice or an integer index")
        if key < 0:
            raise IndexError(_NEGATIVE_INDEX)
        raise blocking_call_error(
            self._target(),
            "__getitem__",
            self._alias(),
            f"await queryset.skip({key}).async_first()",
        )

    def _sliced(self, key: slice) -> Self:
        """MongoEngine's slicing (a skip and a limit), checked as its sync
        cursor checks it, with the same errors (an AsyncCursor does not slice).
        MongoEngine's slice first builds its cursor, so the filter document: a
        filter that cannot be built raises here, as there. Not kept: a
        ``no_sub_classes()`` chained after still applies (MongoEngine's cursor
        ignores it)."""
        queryset = self.clone()
        queryset._query  # noqa: B018 (the query built, its errors raised)
        queryset._mongo_query = None
        start, stop = key.start, key.stop
        if key.step is not None:
            raise IndexError("Cursor instances do not support slice steps")
        if start is not None and start < 0:
            raise IndexError(_NEGATIVE_INDEX)
        # (subtracted first, as PyMongo's slice: its TypeError for a string)
        limit = None if stop is None else stop - (start or 0)
        if limit is not None and limit < 0:
            raise IndexError(
                f"stop index must be greater than start index for slice {key!r}"
            )
        queryset._cursor_obj = None
        queryset._skip = start
        queryset._limit = limit
        queryset._empty = limit == 0
        # A float bound (``[1.0:3.0]``, from a ``/``): MongoEngine's sliced
        # cursor sends it unchecked and the server truncates it (a limit
        # truncated to 0: none); PyMongo's skip() and limit(), which ours go
        # through, would refuse it.
        if isinstance(start, float):
            queryset._skip = int(start)
        if isinstance(queryset._limit, float):
            queryset._limit = int(queryset._limit) or None
        return queryset

    # -- reading ----------------------------------------------------------------

    def __aiter__(self) -> AsyncGenerator[_D, None]:
        """``async for``: :meth:`async_iter` in the bound transaction, if any."""
        return self.async_iter()

    def async_iter(
        self, *, session: AsyncClientSession | None = None
    ) -> AsyncGenerator[_D, None]:
        """Stream the results through a driver cursor, one batch at a time;
        carried past the end of its loop, it raises rather than ending."""
        return Iteration(
            functools.partial(self._results, session),
            f"An async for over {self._document.__name__}.objects",
        )

    async def _results(
        self, session: AsyncClientSession | None, iteration: weakref.ref[Iteration[_D]]
    ) -> AsyncGenerator[_D, None]:
        """The generator :meth:`async_iter` steps through."""
        prepared = self._async_collection("__aiter__", "a plain for loop", session)
        await started(prepared, iteration)
        if self._none or self._empty:
            return
        materialise = self._materialiser()
        receivers = signals.has_init_receivers()
        batch: list[dict] = []
        cursor = self._new_cursor()
        at_yield = False  # (see batches.leave)
        try:
            await open_find(cursor)
            try:
                # The cursor's buffered batch at once (a getMore only once it
                # is used up, as a plain ``async for`` would), each document
                # built as it is asked for.
                while await cursor._next_batch(batch):
                    # pre_init/post_init receivers connected (or all gone) since
                    # the last batch: a loader that sends them (or not), as
                    # MongoEngine's loop sends them from its next chunk.
                    if signals.has_init_receivers() != receivers:
                        receivers = not receivers
                        materialise = self._materialiser()
                    for raw in batch:
                        document = materialise(raw)
                        at_yield = True
                        yield document
                        at_yield = False
                    batch.clear()
            finally:
                if at_yield:
                    stopped(iteration, "loop")
                await leave(cursor, at_yield)
        except asyncio.CancelledError:
            if not at_yield:
                stopped(iteration, "cancelled")
                kill_soon(cursor)
            raise

    async def async_to_list(
        self, length: int | None = None, *, session: AsyncClientSession | None = None
    ) -> list[_D]:
        """All results (or the first ``length``) as a list."""
        if length is not None:
            if isinstance(length, bool) or not isinstance(length, int):
                raise TypeError(
                    "async_to_list() length must be an integer (or None), "
                    f"not {length!r}"
                )
            if length <= 0:  # (PyMongo's to_list refuses it)
                raise ValueError(
                    "async_to_list() length must be greater than 0 (or None), "
                    f"not {length!r}"
                )
        await self._async_collection("async_to_list", "list(queryset)", session)
        raw_documents = await self._fetch_raw(length)
        return materialise_all(self._materialiser(), raw_documents)

    def _fetch_raw(self, length: int | None = None) -> Awaitable[list[dict[str, Any]]]:
        """The raw results, in one reply unless the user set a batch size, once
        the terminal has resolved its operation (``_async_collection``).

        Not a coroutine of its own: the caller awaits the read's, as it awaits
        ``_async_collection`` itself. Each coroutine between a terminal and the
        driver is resumed at each of the read's waits (four for a find)."""
        if self._none or self._empty:
            return _no_results()
        cursor = self._new_cursor()
        by_id = isinstance(self._query_obj, IdQuery)  # as async_get(id=...) filters
        if self._batch_size is None:
            cursor.batch_size(WHOLE_RESULT if length is None else max(length, 0))
            if by_id and (length is None or length > 1):
                # One match at most, in a first reply with room for two: the
                # server keeps no cursor, and read_list has nothing to kill
                # or close (its two coroutines, resumed at each of the read's
                # waits, are a tenth of the calls an async_get adds). Not
                # always: two documents of one id (a view's, a time series')
                # past 16 MB take a getMore; async_get kills that cursor.
                self._by_id_cursor = cursor
                return cursor.to_list(length)
        return read_list(cursor, length, by_id)

    async def async_first(
        self, *, session: AsyncClientSession | None = None
    ) -> _D | None:
        """The first result, or None."""
        await self._async_collection("async_first", "first()", session)
        if self._none or self._empty:
            return None
        cursor = self._new_cursor()
        if isinstance(self._skip, bool):  # MongoEngine's first() is queryset[0]:
            cursor.skip(0 + self._skip)  # PyMongo's skip(0 + skip), an int
        # and limit(-1): one document in a single batch, the batch size sent
        # as set (the server refuses a bool one there, as for first())
        raw_documents = await cursor.limit(-1).to_list(1)
        if not raw_documents:
            return None
        return self._materialiser(scalars_first=True)(raw_documents[0])

    async def async_get(
        self, *q_objs: Any, session: AsyncClientSession | None = None, **query: Any
    ) -> _D:
        """The only match; raises ``DoesNotExist`` or ``MultipleObjectsReturned``."""
        self._require_async("async_get", "get()")
        if session is not None:  # (mostly None: settled without a call)
            session = field_or_session(self._document, session, query)
        queryset = self._filtered_view(*q_objs, **query)
        # What order_by() and limit(2) set, without a clone each: no sort, and
        # a second match tells MultipleObjectsReturned.
        queryset._ordering, queryset._limit, queryset._empty = [], 2, False
        # The queryset called on (``Model.objects`` makes one each time: its
        # dict, query...) is not kept alive through the read, the view its
        # copy is: with many gets in flight, the collector would walk both.
        del self
        await queryset._async_collection("async_get", "get()", session)
        try:
            raw_documents = await queryset._fetch_raw(2)
        except asyncio.CancelledError:  # (read_list's, for a read by id)
            kill_soon(queryset._by_id_cursor)
            raise
        results = materialise_all(queryset._materialiser(), raw_documents)
        document_cls = queryset._document
        if not results:
            raise document_cls.DoesNotExist(
                f"{document_cls._class_name} matching query does not exist."
            )
        if len(results) > 1:
            raise document_cls.MultipleObjectsReturned(
                "2 or more items returned, instead of 1"
            )
        return results[0]

    def _filtered_view(self, *q_objs: Any, **query: Any) -> Self:
        """``self.filter(*q_objs, **query)`` for one terminal of ours, without
        the clone: MongoEngine's clone copies each of some 25 attributes, a
        third of the CPU time of an ``async_get(id=...)``.

        A shallow copy of this queryset instead, sharing its lists and dicts,
        which the terminal only reads; MongoEngine's filter (and our check of
        the values) then runs on it with the copy as its clone. The copy never
        leaves the terminal.
        """
        view = object.__new__(type(self))
        view.__dict__ = state = self.__dict__.copy()
        if not q_objs and self._filters_by_id_only(query):
            check_query_values(self._document, None, query)
            state["_query_obj"] = IdQuery(**query)
            state["_mongo_query"] = state["_cursor_obj"] = None
            return view
        state["clone"] = lambda: view  # what filter() calls for its copy
        try:
            return view.filter(*q_objs, **query)
        finally:
            del state["clone"]  # (and the cycle through it)

    def _filters_by_id_only(self, query: dict[str, Any]) -> bool:
        """Whether ``filter(**query)`` on this queryset is ``filter(pk=value)``
        (or by the id field's name) and nothing else: no other filter, no
        dict value (an operator injection check's case), MongoEngine's own
        ``filter``."""
        if len(query) != 1 or self._query_obj:
            return False
        ((key, value),) = query.items()
        cls = type(self)
        return (
            (key == "pk" or key == self._document._meta["id_field"])
            and "__" not in key  # an id field so named reads as an operator
            and not isinstance(value, dict)
            and cls.__call__ is BaseQuerySet.__call__
            and cls.filter is MongoEngineBaseQuerySet.filter
        )

    async def async_with_id(
        self, object_id: Any, *, session: AsyncClientSession | None = None
    ) -> _D | None:
        """The document with this primary key, or None (no other filter allowed)."""
        self._require_async("async_with_id", "with_id()")
        if self._query_obj:
            raise InvalidQueryError("Cannot use a filter whilst using `with_id`")
        queryset = self._filtered_view(pk=object_id)
        return await queryset.async_first(session=session)

    async def async_in_bulk(
        self, object_ids: list[Any], *, session: AsyncClientSession | None = None
    ) -> dict[Any, _D]:
        """A dict from id to result for the given ids, in one query (and one reply)."""
        collection = await self._async_collection("async_in_bulk", "in_bulk()", session)
        cursor = collection.find(
            {"_id": {"$in": object_ids}}, batch_size=WHOLE_RESULT, **self._cursor_args
        )
        raws = await read_list(cursor)
        materialise = self._materialiser(scalars_first=True, dereference=True)
        return by_id(raws, lambda run: materialise_all(materialise, run))

    async def async_count(
        self,
        with_limit_and_skip: bool = False,
        *,
        session: AsyncClientSession | None = None,
    ) -> int:
        """The number of matches (``limit``/``skip`` applied only when asked)."""
        collection = await self._async_collection("async_count", "count()", session)
        # (``is False``, as MongoEngine: ``limit(0)`` counts all with None or 0)
        zero_limit = self._limit == 0 and with_limit_and_skip is False
        if self._none or self._empty or zero_limit:
            return 0
        self._check_cursor_settings()
        options: dict[str, Any] = {}
        if with_limit_and_skip:
            if self._limit:
                options["limit"] = self._limit
            if self._skip is not None:  # (as MongoEngine: skip(False) refused)
                options["skip"] = self._skip
        if self._hint not in (-1, None):
            options["hint"] = self._hint
        if self._collation:
            options["collation"] = self._collation
        collection = self._with_read_options(collection)
        session = self._session()
        if not self._query and not options and session is None:
            return await collection.estimated_document_count()
        return await collection.count_documents(self._query, session=session, **options)

    def _check_cursor_settings(self) -> None:
        """Raise what MongoEngine's ``count()`` raises building its cursor
        (which PyMongo's ``skip``, ``limit`` and ``batch_size`` check) for a
        skip, limit or batch size the cursor refuses: ours counts without a
        cursor. Plain ints pass at once; anything else builds the cursor, so
        PyMongo's own checks raise."""
        skip, limit, size = self._skip, self._limit, self._batch_size
        if (
            (skip is None or (type(skip) is int and skip >= 0))
            and (limit is None or type(limit) is int)
            and (size is None or (type(size) is int and size >= 0))
        ):
            return
        self._new_cursor()

    async def async_exists(self, *, session: AsyncClientSession | None = None) -> bool:
        """Whether anything matches, fetching at most one id.

        Unlike MongoEngine's ``bool(queryset)``, which asks ``first()``, a
        ``scalar()`` queryset whose first match holds None still exists."""
        self._require_async("async_exists", "bool(queryset)")
        queryset = self.order_by().only(self._document._meta["id_field"])
        queryset._scalar = []  # (the raw result, never a None scalar)
        return await queryset.as_pymongo().async_first(session=session) is not None

    async def async_distinct(
        self, field: str, *, session: AsyncClientSession | None = None
    ) -> list[Any]:
        """Distinct values of ``field``: referenced documents loaded (one query
        per collection) and embedded ones built, unless ``no_dereference()``
        or ``async_no_dereference(cls)``."""
        await self._async_collection("async_distinct", "distinct()", session)
        session = self._session()
        try:
            db_field = self._fields_to_dbfields([field]).pop()
        except LookUpError:
            db_field = field
        values = await self._new_cursor().distinct(db_field)
        if not self._auto_dereference or dereference_disabled(self._document):
            return values  # (as MongoEngine's inside no_dereference(cls))
        values = await load_distinct(self._document, db_field, values, session)
        embedded_cls = self._embedded_type(field)
        if embedded_cls is None:
            built = [built_embedded(value) for value in values]
            return attached_distinct(built, self._document, db_field)
        return distinct_embedded(embedded_cls, values, self._document, db_field)

    def _embedded_type(self, field: str) -> type[Any] | None:
        """The embedded document class at the end of path ``field``, if any."""
        try:
            path = self._document._lookup_field(field.split("."))
        except LookUpError:
            return None
        last = path[-1]
        if isinstance(last, ListField):
            last = last.field
        if isinstance(last, EmbeddedDocumentField):
            return last.document_type
        return None

    async def async_scalar(
        self, *fields: str, session: AsyncClientSession | None = None
    ) -> list[Any]:
        """The values of ``fields`` for every match (tuples for several fields)."""
        self._require_async("async_scalar", "scalar()")
        return await self.scalar(*fields).async_to_list(session=session)

    async def async_values_list(
        self, *fields: str, session: AsyncClientSession | None = None
    ) -> list[Any]:
        """Alias of :meth:`async_scalar`."""
        self._require_async("async_values_list", "values_list()")
        return await self.async_scalar(*fields, session=session)

    def async_aggregate(
        self,
        pipeline: Sequence[Mapping[str, Any]] | dict[str, Any],
        *suppl_pipeline: Mapping[str, Any],
        session: AsyncClientSession | None = None,
        **kwargs: Any,
    ) -> AsyncAggregation:
        """Run ``pipeline`` after the queryset's filter, ordering, skip and
        limit (stages as separate arguments: MongoEngine's deprecated form)."""
        self._require_async("async_aggregate", "aggregate()")

        async def open_cursor() -> AsyncCommandCursor[dict[str, Any]]:
            await self._async_collection("async_aggregate", "aggregate()", session)
            options = {"session": self._session(), **kwargs}
            return await opened(
                MongoEngineBaseQuerySet.aggregate(
                    self, pipeline, *suppl_pipeline, **options
                ),
                lambda cursor: cursor,
                options["session"],
            )

        return AsyncAggregation(
            open_cursor, f"{self._document.__name__}'s async_aggregate()"
        )

    async def async_sum(
        self, field: str, *, session: AsyncClientSession | None = None
    ) -> Any:
        """The sum of ``field`` over the matches (lists are unwound)."""
        return await self._group(field, "$sum", ("async_sum", "sum()"), session)

    async def async_average(
        self, field: str, *, session: AsyncClientSession | None = None
    ) -> Any:
        """The average of ``field`` over the matches (lists are unwound)."""
        return await self._group(field, "$avg", ("async_average", "average()"), session)

    async def _group(
        self,
        field: str,
        operator: str,
        terminal: tuple[str, str],
        session: AsyncClientSession | None,
    ) -> Any:
        collection = await self._async_collection(*terminal, session)
        db_field = self._fields_to_dbfields([field]).pop()
        pipeline: list[dict] = [{"$match": self._query}]
        if isinstance(self._document._lookup_field(field.split("."))[-1], ListField):
            pipeline.append({"$unwind": f"${db_field}"})
        pipeline.append({"$group": {"_id": None, "total": {operator: f"${db_field}"}}})
        cursor = await collection.aggregate(pipeline, session=self._session())
        results = await cursor.to_list(None)
        return results[0]["total"] if results else 0

    async def async_select_related(
        self, max_depth: int = 1, *, session: AsyncClientSession | None = None
    ) -> list[_D]:
        """The results as a list, with their references loaded ``max_depth`` deep.

        One query per referenced collection and level, however many results.
        """
        # MongoEngine's select_related() first adds 1 to it: its TypeError
        operator.iadd(max_depth, 1)  # for a max_depth of another type
        if self._as_pymongo:
            raise InvalidQueryError(
                "async_select_related() loads documents and their references: "
                "it cannot be combined with as_pymongo()"
            )
        await self._async_collection(
            "async_select_related", "select_related()", session
        )
        session = self._session()
        # Partial results (only(), scalar()...) never stand in for references.
        origin = None if self._loaded_fields else self._collection_obj
        raws = await self._fetch_raw()
        documents = await load_related(
            self._document, raws, origin, max_depth, self._auto_dereference, session
        )
        if not self._scalar:
            return documents
        rows: list[Any] = [self._get_scalar(document) for document in documents]
        if len(self._scalar) > 1:  # (lists, as MongoEngine's dereference makes them)
            rows = [list(row) for row in rows]
        return rows

    async def async_explain(
        self, *, session: AsyncClientSession | None = None
    ) -> dict[str, Any]:
        """The server's explain output for this query."""
        await self._async_collection("async_explain", "explain()", session)
        return await self._new_cursor().explain()

    def async_watch(
        self,
        *,
        full_document: str | None = "updateLookup",
        resume_after: Mapping[str, Any] | None = None,
        start_after: Mapping[str, Any] | None = None,
        start_at_operation_time: Timestamp | None = None,
        batch_size: int | None = None,
        max_await_time_ms: int | None = None,
        session: AsyncClientSession | None = None,
        full_document_before_change: str | None = None,
    ) -> ChangeStream[_D]:
        """The change events of the matching documents (``async for``/``async
        with``); the options go to PyMongo's ``watch()``, see change_streams.py,
        with the queryset's ``comment()``, ``batch_size()`` (unless given here),
        ``read_preference()`` and ``read_concern()``."""
        self._require_async("async_watch", "Model._get_collection().watch()")
        options = WatchOptions(
            full_document,
            resume_after,
            start_after,
            start_at_operation_time,
            self._batch_size if batch_size is None else batch_size,
            max_await_time_ms,
            self._comment,
            full_document_before_change,
        )
        return ChangeStream(self, options, session)

    async def _watched(
        self, session: AsyncClientSession | None
    ) -> tuple[AsyncCollection, AsyncClientSession | None]:
        """The collection a change stream watches, with the queryset's read
        settings, and its session: ``session`` only, as the server refuses
        ``$changeStream`` in a transaction."""
        operation = await self._resolve("async_watch")
        client = operation.collection.database.client
        collection = self._with_read_options(operation.collection)
        return collection, own_session(self._document, client, session)

    def _with_read_options(self, collection: AsyncCollection) -> AsyncCollection:
        """``collection`` with the queryset's read preference and read concern,
        if any (MongoEngine reads with them through ``with_options``)."""
        if self._read_preference is None and self._read_concern is None:
            return collection
        return collection.with_options(
            read_preference=self._read_preference, read_concern=self._read_concern
        )

    def from_json(self, json_data: str) -> list[_D]:
        """MongoEngine's ``from_json``, each document's plain references and
        bare ids given to fields holding cached references kept as given, as
        ``Document.from_json`` keeps them (validation refuses them)."""
        documents = super().from_json(json_data)
        for document in documents:
            our_fields.keep_given(document, {})  # (the user's data: none given marked)
        return documents

    # -- writing ----------------------------------------------------------------

    async def async_create(
        self, *, session: AsyncClientSession | None = None, **kwargs: Any
    ) -> _D:
        """Create and insert a document."""
        self._require_async("async_create", "create()")
        session = field_or_session(self._document, session, kwargs)
        document = self._document(**kwargs)
        return await document.async_save(force_insert=True, session=session)

    async def async_insert(
        self,
        doc_or_docs: Any,
        load_bulk: bool = True,
        write_concern: dict[str, Any] | None = None,
        signal_kwargs: dict[str, Any] | None = None,
        session: AsyncClientSession | None = None,
    ) -> Any:
        """Insert one document or a list of them in a single round trip.

        With ``load_bulk`` the inserted documents are read back, as MongoEngine's
        ``insert`` does; otherwise their ids are returned.
        """
        collection = await self._async_collection("async_insert", "insert()", session)
        session = self._session()  # before the signals' awaits
        return_one = isinstance(doc_or_docs, MongoEngineDocument)
        documents = [doc_or_docs] if return_one else list(doc_or_docs)
        check_insertable(self._document, documents)
        if context.follow_ups_pending():  # (of cancelled writes: theirs first)
            await context.run_follow_ups()
        if session is not None:  # perhaps a transaction of ours: journal the ids
            deltas.journal_bookkeeping(documents, session)
        signal_kwargs = signal_kwargs or {}
        await signals.send(
            signals.pre_bulk_insert,
            self._document,
            documents=documents,
            **signal_kwargs,
        )
        if sequences.has_sequences_below(self._document):
            await sequences.async_fill(documents)
        refresh_plans(documents)
        raw = [to_bson.raw(document) for document in documents]
        marked, given = give_ids(documents, raw)  # ids before the write is awaited
        # In a task of its own, which the caller's cancellation does not
        # cancel (as a save's): the write may be applying on the server.
        writing = self._insert_raw(collection, raw, write_concern, return_one, session)
        outcome, write = detached(writing)
        try:
            ids = await outcome
        except asyncio.CancelledError:
            write.add_done_callback(lambda _: writing.close())  # (never started)
            follow = functools.partial(
                self._after_cancelled_insert,
                documents,
                marked,
                given,
                outcome,
                load_bulk,
                signal_kwargs,
                session if session and session.in_transaction else None,
                signals.has_receivers(signals.post_bulk_insert, self._document),
            )
            write.add_done_callback(follow)
            context.write_on_its_way(session, write)  # (the commit waits for it)
            needs = collection_alias(collection, self._document._db_alias())
            finish_before_close(write, CANCELLED_WRITE, needs and (needs,))
            raise
        except Exception as error:  # (failed: the ids of what it did not store)
            take_ids_back(documents, given, error)
            raise
        results = await self._async_after_insert(
            documents, ids, load_bulk, signal_kwargs, session, marked=marked
        )
        return results[0] if return_one else results

    async def _async_after_insert(
        self,
        documents: list[Any],
        ids: list[Any],
        load_bulk: bool,
        signal_kwargs: dict[str, Any],
        session: AsyncClientSession | None,
        again: bool = False,
        marked: Sequence[Any] = (),
    ) -> list[Any]:
        """An insert's steps after its write: the ids, the documents read
        back (``load_bulk``), ``post_bulk_insert``; returns the documents read
        back, or the ids. Cancelled before the signal, they follow as after a
        cancelled write that landed (not ``again``: they do), if the signal
        has receivers then (not in its ``muted()`` block). The ids of the
        ``marked`` documents are marked changed as ``set_ids`` says."""
        set_ids(documents, ids, marked)
        results = documents
        sending = False
        try:
            if load_bulk and ids:  # (an empty list inserted nothing to read)
                loaded = await self.async_in_bulk(ids, session=session)
                results = [loaded.get(object_id) for object_id in ids]
            sending = True
            context.signalling()
            await signals.send(
                signals.post_bulk_insert,
                self._document,
                documents=results,
                loaded=load_bulk,
                **signal_kwargs,
            )
        except asyncio.CancelledError:
            receivers = signals.has_receivers(signals.post_bulk_insert, self._document)
            if not sending and not again and receivers:
                transaction = session if session and session.in_transaction else None
                self._follow_insert(
                    documents, ids, load_bulk, signal_kwargs, transaction
                )
            raise
        return results if load_bulk else ids

    def _after_cancelled_insert(
        self,
        documents: list[Any],
        marked: list[Any],
        given: list[to_bson.GivenId | None],
        outcome: asyncio.Future[Any],
        load_bulk: bool,
        signal_kwargs: dict[str, Any],
        transaction: AsyncClientSession | None,
        receivers: bool,
        write: asyncio.Future[Any],
    ) -> None:
        """An insert whose caller was cancelled while its write was on its
        way, once that write settled: applied, the documents are saved (their
        ids set, no longer new) and its ``post_bulk_insert`` follows (if it
        had ``receivers`` then: not muted), as after an insert that returned,
        in a task of its own; in a ``transaction``, once it committed.
        Failed, the ids it ``given`` the documents its error
        (``detached.failure``) proves were not stored are taken back, as
        after an insert that raised."""
        if write.cancelled():
            return
        if write.result() is FAILED:
            error = failure(write, outcome)
            if error is not None:
                take_ids_back(documents, given, error)
            return
        ids = write.result()
        set_ids(documents, ids, marked)
        if receivers:  # (set already: the steps set them again, unmarked)
            self._follow_insert(documents, ids, load_bulk, signal_kwargs, transaction)

    def _follow_insert(
        self,
        documents: list[Any],
        ids: list[Any],
        load_bulk: bool,
        signal_kwargs: dict[str, Any],
        transaction: AsyncClientSession | None,
    ) -> None:
        """:meth:`_async_after_insert` in a task of its own, in no transaction
        (in a ``transaction`` this package bound, once it committed, or in
        the block, first, when it begins another write: see
        ``context.after_commit``; in the caller's own, nothing follows)."""

        def steps(session: AsyncClientSession | None) -> Any:
            return self._async_after_insert(
                documents, ids, load_bulk, signal_kwargs, session, True
            )

        def follow() -> None:
            context.follow_up(
                steps(None), "steps after the write of a cancelled insert"
            )

        if transaction is None:
            follow()
        else:
            context.after_commit(transaction, follow, lambda: steps(transaction))

    async def _insert_raw(
        self,
        collection: AsyncCollection,
        raw: list[dict],
        write_concern: dict | None,
        one: bool,
        session: AsyncClientSession | None,
    ) -> list:
        """insert_one for a single document, insert_many for a list, with
        MongoEngine's ``insert`` errors; none for an empty list."""
        if not raw:
            return []
        with (
            set_write_concern(collection, write_concern or {}) as target,
            insert_errors(),
        ):
            if one:
                result = await target.insert_one(raw[0], session=session)
                return [result.inserted_id]
            result = await target.insert_many(raw, session=session)
        return result.inserted_ids

    async def async_update(
        self,
        upsert: bool = False,
        multi: bool = True,
        write_concern: dict[str, Any] | None = None,
        read_concern: dict[str, Any] | None = None,
        full_result: bool = False,
        array_filters: list[Any] | None = None,
        session: AsyncClientSession | None = None,
        **update: Any,
    ) -> Any:
        """Apply MongoEngine-style ``update`` to the matches; returns the count."""
        session = field_or_session(self._document, session, update, "set__session")
        collection = await self._async_collection("async_update", "update()", session)
        session = self._session()  # before the sequences' await (a shared queryset)
        if not update and not upsert:
            raise OperationError("No update parameters, would remove data")
        if self._none or self._empty:
            return 0
        await sequences.async_fill_update(update)
        query = self._query
        document = self._update_document(update, upsert and "_cls" in query)
        with set_read_write_concern(
            collection, write_concern or {}, read_concern
        ) as target:
            write = target.update_many if multi else target.update_one
            with _update_errors():
                result = await write(
                    query,
                    document,
                    upsert=upsert,
                    array_filters=array_filters,
                    session=session,
                )
        if full_result:
            return result
        return result.raw_result["n"] if result.raw_result else None

    def _update_document(self, update: dict, add_cls: bool) -> Any:
        """MongoEngine's ``transform.update`` of the keyword arguments; an
        upsert of a class with inheritance gives the document it inserts the
        class's ``_cls``, and leaves a matched document's (a subclass's
        perhaps) as it is: MongoEngine's ``$set`` made every matched subclass
        document one of the queryset's class (and its pipeline form fails).
        A ``_cls`` the update sets itself (``set___cls``,
        ``set_on_insert___cls``, in ``__raw__``) is left as the user wrote it."""
        raw = update.get("__raw__")
        cls_name = self._document._class_name
        if isinstance(raw, list):
            stages = [transform.update(self._document, __raw__=stage) for stage in raw]
            if add_cls:
                kept = {"$ifNull": ["$_cls", {"$literal": cls_name}]}
                stages.append({"$set": {"_cls": kept}})
            return stages
        document = transform.update(self._document, **update)
        on_insert = document.get("$setOnInsert", {})
        if (
            add_cls
            and "_cls" not in document.get("$set", ())
            and "_cls" not in on_insert
        ):
            # (a new dict: that of a __raw__ update is the user's, who may
            # send it again, to another class)
            document["$setOnInsert"] = {**on_insert, "_cls": cls_name}
        return document

    async def async_update_one(
        self,
        upsert: bool = False,
        write_concern: dict[str, Any] | None = None,
        full_result: bool = False,
        array_filters: list[Any] | None = None,
        session: AsyncClientSession | None = None,
        **update: Any,
    ) -> Any:
        """:meth:`async_update` of the first match only."""
        self._require_async("async_update_one", "update_one()")
        session = field_or_session(self._document, session, update, "set__session")
        return await self.async_update(
            upsert=upsert,
            multi=False,
            write_concern=write_concern,
            full_result=full_result,
            array_filters=array_filters,
            session=session,
            **update,
        )

    async def async_upsert_one(
        self,
        write_concern: dict[str, Any] | None = None,
        read_concern: dict[str, Any] | None = None,
        session: AsyncClientSession | None = None,
        **update: Any,
    ) -> _D | None:
        """Update the first match or insert one; returns the document."""
        self._require_async("async_upsert_one", "upsert_one()")
        session = field_or_session(self._document, session, update, "set__session")
        result = await self.async_update(
            multi=False,
            upsert=True,
            write_concern=write_concern,
            read_concern=read_concern,
            full_result=True,
            session=session,
            **update,
        )
        if result.raw_result["updatedExisting"]:
            return await self.async_get(session=session)
        objects = self._document.objects
        return await objects.async_with_id(result.upserted_id, session=session)

    async def async_modify(
        self,
        upsert: bool = False,
        full_response: bool = False,
        remove: bool = False,
        new: bool = False,
        array_filters: list[Any] | None = None,
        session: AsyncClientSession | None = None,
        **update: Any,
    ) -> _D | None:
        """Update (or remove) the first match atomically and return it.

        The document comes back as it was before, or after when ``new=True``.
        """
        session = field_or_session(self._document, session, update, "set__session")
        collection = await self._async_collection("async_modify", "modify()", session)
        # (read before the sequences' await: another task's terminal on this
        # queryset may resolve its own operation, and session, meanwhile)
        cursor_args = self._cursor_args
        if remove and new:
            raise OperationError("Conflicting parameters: remove and new")
        if not update and not upsert and not remove:
            raise OperationError("No update parameters, must either update or remove")
        if self._none or self._empty:  # (as MongoEngine: before its warning)
            return None
        if full_response:  # (the document is returned, see docs/querysets.md)
            warnings.warn(
                "With PyMongo 3+, it is not possible anymore to get the full response.",
                DeprecationWarning,
                stacklevel=2,
            )
        await sequences.async_fill_update(update)
        with _update_errors():
            raw = await self._find_one_and(
                collection, cursor_args, remove, new, upsert, array_filters, **update
            )
        # (the reply is this document's alone: its stored order, as MongoEngine's)
        return None if raw is None else owned_loader(self._document)(raw)

    async def _find_one_and(
        self,
        collection: AsyncCollection,
        cursor_args: dict[str, Any],
        remove: bool,
        new: bool,
        upsert: bool,
        array_filters: list[Any] | None,
        **update: Any,
    ) -> dict[str, Any] | None:
        if remove:
            return await collection.find_one_and_delete(
                self._query, sort=self._ordering, **cursor_args
            )
        return await collection.find_one_and_update(
            self._query,
            transform.update(self._document, **update),
            upsert=upsert,
            sort=self._ordering,
            return_document=ReturnDocument.AFTER if new else ReturnDocument.BEFORE,
            array_filters=array_filters,
            **cursor_args,
        )

    async def async_delete(
        self,
        write_concern: dict[str, Any] | None = None,
        _from_doc_delete: bool = False,
        cascade_refs: set[Any] | None = None,
        transaction: bool = True,
        session: AsyncClientSession | None = None,
        _followed: Callable[[int | None], None] | None = None,
        _failed: list[Exception] | None = None,
        _unreachable: Unreachable | None = None,
        _aborts: bool = False,
    ) -> int | None:
        """Delete the matches, applying the delete rules, then their GridFS
        files; returns the count. (``_aborts``: see ``delete_matching``.)

        With skip/limit or delete signal receivers each document is deleted
        through ``Document.async_delete``, as MongoEngine does. A delete that
        cascades runs in one transaction unless ``transaction=False``. As in
        MongoEngine, documents whose id is in ``cascade_refs`` are spared by
        CASCADE rules (unlike MongoEngine, the set is left as it was given).
        """
        await self._async_collection("async_delete", "delete()", session, write_concern)
        operation = self._operation
        assert operation is not None  # set by _async_collection
        if self._none or self._empty:
            check_rules(self._document)  # (as MongoEngine's, matching nothing)
            return 0
        has_delete_signal = signals.has_delete_receivers(self._document)
        if (self._skip or self._limit or has_delete_signal) and not _from_doc_delete:
            return await delete_each(self, operation, atomic=transaction)
        files: list[Any] = []
        ids: list | None = None
        runs: list[Any] = [self]  # what the deletes sent remove, one each
        root_files: RootFiles | None = None
        if not _from_doc_delete and await _plan_lists(self, operation, transaction):
            root_files = RootFiles()  # (filled as the plan reads the matches)
            files, ids = root_files.files, root_files.ids
        elif not _from_doc_delete:
            files, ids = await stored_files_and_ids(self, operation)
            runs = self._listed(ids, operation)
            if not runs and not self._collation:  # (no plan refuses its rules)
                check_rules(self._document)
        # (The error of the cascaded documents' files: raised after the rest.)
        failed: list[Exception] = [] if _failed is None else _failed
        leaving = functools.partial(_left, self._document, ids)
        # (The steps after a failed write share it: see _files_of_failed.)
        unreachable = Unreachable() if _unreachable is None else _unreachable
        each_run = functools.partial(
            delete_matching,
            runs,
            operation=operation,
            atomic=transaction,
            cascade_refs=cascade_refs,
            followed=_followed
            or functools.partial(_follow_files, files, operation, leaving),
            failed=failed,
            unreachable=unreachable,
            root_files=root_files,
            aborts=_aborts,
            collated=self if self._collation or self._hint not in (-1, None) else None,
        )
        if not _from_doc_delete and await _goes_on(self, operation, files, transaction):
            deleted = await _files_follow(
                self._document, each_run, files, operation, leaving, unreachable
            )
        else:
            deleted = await each_run()
        # (Once the documents are gone.)
        await file_error_wins(
            delete_files_of_deleted(files, operation, leaving(deleted)), failed
        )
        if failed and _failed is None:
            raise failed[0]
        return deleted

    def _listed(self, ids: list | None, operation: Operation) -> list[Any]:
        """What a delete of the matches whose files were listed (``ids``, None
        when the class has no file fields) sends: its own query, restricted to
        ``ids`` (in runs under the 16 MB command limit); none when it listed
        none: a delete restricted to no ids matches nothing."""
        if ids is None:
            return [self]
        if not ids:
            return []
        return listed(self, ids, operation.collection.codec_options)


async def _plan_lists(queryset: Any, operation: Operation, atomic: bool) -> bool:
    """Whether a delete of ``queryset``'s matches lists their files in its
    rules' plan, in the read of the ids it deletes (one read, not two): one
    with rules, of a class with file fields, in a transaction (the caller's
    or its own), whose snapshot has the documents deleted hold those files.
    Outside one, they are listed first, and the delete restricted to them."""
    cls = queryset._document
    if not (has_rules(cls) and has_file_fields(cls)):
        return False
    session = operation.session
    if session is not None and session.in_transaction:
        return True
    return await runs_own_transaction(cls, operation, atomic)


async def file_error_wins(
    files_deleted: Awaitable[Any], failed: list[Exception]
) -> None:
    """Await ``files_deleted``, a delete's deletes of its documents' files;
    their time-out (the caller's ``pymongo.timeout()`` spent, they go on)
    gives way to the first of ``failed`` (a cascaded document's file's error:
    the news); any other error of theirs is raised (first)."""
    try:
        await files_deleted
    except pymongo.errors.PyMongoError as error:
        if failed and error.timeout:
            raise failed[0]  # noqa: B904 (the time-out: its context, not its cause)
        raise


def _left(cls: type[Any], ids: list | None, deleted: int | None) -> Listed | None:
    """The documents whose files a delete listed (``ids``, None when ``cls``
    has no file fields) and how many it deleted: see ``delete_unheld``."""
    return None if ids is None else Listed(cls, ids, deleted)


# The deletes of documents holding files whose caller was cancelled, going on
# (held until done: the loop keeps only weak references to its tasks).
_deleting: set[asyncio.Future[Any]] = set()


async def _goes_on(
    queryset: Any, operation: Operation, files: list[Any], atomic: bool
) -> bool:
    """Whether a delete of ``queryset``'s matches holding ``files`` (or
    applying delete rules, whose cascaded documents may hold some) goes on
    once its caller is cancelled (:func:`_files_follow`): not in a
    transaction, whose abort keeps documents and files (the caller's, or
    its own: see ``runs_own_transaction``)."""
    cls = queryset._document
    session = operation.session
    if not (files or has_rules(cls)) or (
        session is not None and session.in_transaction
    ):
        return False
    return not await runs_own_transaction(cls, operation, atomic)


_DELETE_WITH_FILES = (
    "delete of documents with files or delete rules (and the steps after it)"
)


async def _files_follow(
    cls: type[Any],
    deleting: Callable[[], Coroutine[Any, Any, int | None]],
    files: list[Any],
    operation: Operation,
    leaving: Callable[[int | None], Listed | None],
    unreachable: Unreachable,
) -> int | None:
    """Await ``deleting()``, the delete (outside a transaction) of ``cls``'s
    documents holding ``files``. Its caller cancelled while it is on its way,
    it goes on in a task of its own (its delete rules' writes too, and the
    files of the documents they delete), and once it was applied the files
    are deleted, as after a document's cancelled delete (they would stay,
    found by nothing), but those of the listed documents it left
    (``leaving(count)``). In a session of the caller's, the caller waits for
    it first: its next command on the session must come after. Failing on
    the server partway (a later run of ids, or a rule's write), the files of
    the listed documents gone are deleted before the error is raised, in
    that task: also once its caller was cancelled (:func:`_delete_surely`),
    but not on a client ``unreachable`` gave up (shared with the rules')."""
    surely = _delete_surely(deleting, files, operation, leaving, unreachable)
    outcome, write = detached(surely)
    held(write, _deleting)
    # (From its start: noted once the cancelled caller ran, a disconnect right
    # after its task.cancel() closed the files' client under the steps after.)
    needs = aliases_of_delete(cls, operation.alias)
    needs |= {proxy.db_alias for proxy in files}
    finish_before_close(write, _DELETE_WITH_FILES, needs)
    try:
        return await outcome
    except asyncio.CancelledError:
        context.cascade_on_its_way(write)
        alone = dataclasses.replace(operation, session=None)
        write.add_done_callback(
            functools.partial(_after_cancelled, files, alone, leaving)
        )
        finish_before_close(write, CANCELLED_WRITE, needs)
        if operation.session is not None:
            await until_done(write)
        raise


async def _files_of_failed(
    files: list[Any],
    operation: Operation,
    leaving: Callable[[int | None], Listed | None],
    unreachable: Unreachable,
) -> None:
    """After a delete (outside a transaction) that failed on the server, the
    runs of ids before the failing one applied (and perhaps part of it): the
    files of the listed documents gone, read as those of the ones still
    there are (which keep theirs), are deleted, as a delete that returned
    would have. Its own error is dropped for the delete's: the files it
    could not delete (or check) are left, orphaned, never a held one lost.
    Nothing is tried on a client whose server selection timed out in the
    steps after that error (``unreachable``, shared with the delete rules'):
    each would wait ``serverSelectionTimeoutMS`` before the error is raised."""
    if not files:
        return
    with contextlib.suppress(Exception):
        # (How many it deleted is not known: 0 reads which are still there.)
        await delete_files_of_deleted(files, operation, leaving(0), unreachable, True)


async def _delete_surely(
    deleting: Callable[[], Coroutine[Any, Any, int | None]],
    files: list[Any],
    operation: Operation,
    leaving: Callable[[int | None], Listed | None],
    unreachable: Unreachable,
) -> int | None:
    """``await deleting()``; cancelled itself while it is on its way (its
    loop ending: ``asyncio.run()`` cancels the tasks left, and waits for
    them), the delete may reach the server all the same: it is sent again
    (it names only the documents whose files were listed, not one inserted
    since, whose files would be left), and the files deleted (but those of
    the listed documents still there: ``leaving``), before the cancellation
    is raised. Failing on the server partway (sent again too), the files of
    the listed documents gone are deleted before the error is raised
    (:func:`_files_of_failed`), whether its caller awaits it or was cancelled;
    also when cut short after that failure (not sent again, then)."""
    try:
        try:
            return await deleting()
        except CancelledAfterFailure:
            await _files_of_failed(files, operation, leaving, unreachable)
            raise
        except asyncio.CancelledError:
            deleted = await deleting()
            await delete_unheld(files, operation, leaving(deleted), surely=True)
            raise
    except pymongo.errors.PyMongoError:
        await _files_of_failed(files, operation, leaving, unreachable)
        raise


def _follow_files(
    files: list[Any],
    operation: Operation,
    leaving: Callable[[int | None], Listed | None],
    deleted: int | None,
) -> None:
    """The files of the documents a delete whose caller was cancelled
    deleted (once applied; in a transaction of its own, once it committed),
    but those the listed documents it left hold (it ``deleted`` fewer than
    it listed): deleted in a task of their own, in no session (the caller's
    may be in use again), which the loop's end waits for."""
    if files:
        alone = dataclasses.replace(operation, session=None)
        context.follow_up(
            delete_unheld(files, alone, leaving(deleted), True),
            "delete of the files of documents a cancelled delete deleted",
            finish=True,
            aliases={proxy.db_alias for proxy in files},
        )


def _after_cancelled(
    files: list[Any],
    operation: Operation,
    leaving: Callable[[int | None], Listed | None],
    write: asyncio.Future[Any],
) -> None:
    """The files of a delete whose caller was cancelled, once it was applied
    (its count, ``write``'s result, tells whether it left listed documents)."""
    if not write.cancelled() and write.result() is not FAILED:
        _follow_files(files, operation, leaving, write.result())


_BLOCKING = {
    "__iter__": "`async for document in queryset`",
    "__len__": "await queryset.async_count(with_limit_and_skip=True)",
    "__bool__": "await queryset.async_exists()",
    "__next__": "`async for document in queryset`",
    "_has_data": "await queryset.async_exists()",
    "rewind": "a new `async for` loop",
    "count": "await queryset.async_count()",
    "get": "await queryset.async_get()",
    "first": "await queryset.async_first()",
    "create": "await queryset.async_create()",
    "insert": "await queryset.async_insert()",
    "delete": "await queryset.async_delete()",
    "update": "await queryset.async_update()",
    "update_one": "await queryset.async_update_one()",
    "upsert_one": "await queryset.async_upsert_one()",
    "modify": "await queryset.async_modify()",
    "with_id": "await queryset.async_with_id()",
    "in_bulk": "await queryset.async_in_bulk()",
    "distinct": "await queryset.async_distinct()",
    "aggregate": "queryset.async_aggregate()",
    "sum": "await queryset.async_sum()",
    "average": "await queryset.async_average()",
    "explain": "await queryset.async_explain()",
    "select_related": "await queryset.async_select_related()",
    "item_frequencies": "queryset.async_aggregate() with a $group stage",
    "map_reduce": "queryset.async_aggregate()",
    "exec_js": "queryset.async_aggregate()",
    "to_json": "bson.json_util.dumps(await queryset.as_pymongo().async_to_list())",
}


def _describe(queryset: BaseQuerySet) -> tuple[bool, str, str]:
    # The names only matter for an async alias.
    if not queryset._is_async():
        alias = queryset._made_sync_on_async_alias()
        if alias is None:
            return False, "", ""
        return True, queryset._target(), alias
    return True, queryset._target(), queryset._alias()


def _describe_next(queryset: BaseQuerySet) -> tuple[bool, str, str]:
    # Checked on every sync __next__ (an iteration begun by __iter__, which
    # _describe checked): the names only matter for an async collection.
    if not queryset._is_async():
        return False, "", ""
    return True, queryset._target(), queryset._alias()


def _blocking_error(
    queryset: BaseQuerySet, target: str, name: str, alias: str, use: str
) -> Exception:
    """The error of a sync method refused by :func:`_describe`."""
    if not queryset._is_async():  # (built before its alias was connected async)
        return kind_changed_error(target, name, alias, now_async=True)
    return blocking_call_error(target, name, alias, use)


if TYPE_CHECKING:  # (the typed view of both is BaseQuerySet's stub base)

    class _Caching:
        def no_cache(self) -> Any: ...  # (MongoEngine's QuerySet only)

    class _NotCaching:
        def cache(self) -> Any: ...  # (MongoEngine's QuerySetNoCache only)

else:
    _Caching, _NotCaching = me_queryset.QuerySet, me_queryset.QuerySetNoCache


class QuerySet(BaseQuerySet[_D], _Caching):
    """MongoEngine's QuerySet (results kept as they are read) with our async
    terminals; ``QuerySet[Book]`` to checkers (``Book.objects``)."""

    def no_cache(self) -> QuerySetNoCache[_D]:
        """MongoEngine's ``no_cache()``: this queryset, keeping no results (ours,
        cloned once, as MongoEngine's clones into its own)."""
        if self._result_cache is not None:
            return super().no_cache()  # (raises MongoEngine's OperationError)
        queryset: QuerySetNoCache[_D] = QuerySetNoCache(
            self._document, self._collection_obj
        )
        return self._clone_into(queryset)


class QuerySetNoCache(BaseQuerySet[_D], _NotCaching):
    """MongoEngine's QuerySetNoCache (what ``no_cache()`` gives: results not
    kept) with our async terminals."""

    def cache(self) -> QuerySet[_D]:
        """MongoEngine's ``cache()``: this queryset, keeping its results (ours,
        cloned once, as MongoEngine's clones into its own)."""
        queryset: QuerySet[_D] = QuerySet(self._document, self._collection_obj)
        return self._clone_into(queryset)


_NEXT = {"__next__": _BLOCKING["__next__"]}
_OTHERS = {name: use for name, use in _BLOCKING.items() if name != "__next__"}
guard_blocking_methods(QuerySet, _OTHERS, _describe, _blocking_error)
guard_blocking_methods(QuerySet, _NEXT, _describe_next)
# (MongoEngine's QuerySetNoCache has no __len__.)
_NO_LEN = {name: use for name, use in _OTHERS.items() if name != "__len__"}
guard_blocking_methods(QuerySetNoCache, _NO_LEN, _describe, _blocking_error)
guard_blocking_methods(QuerySetNoCache, _NEXT, _describe_next)
library_methods(QuerySet, QuerySetNoCache)


if not TYPE_CHECKING:  # (checkers see this module's own names alone)

    def __getattr__(name: str) -> Any:
        """MongoEngine's ``mongoengine.queryset.<name>`` where this module has no
        ``name`` (see :mod:`mongoengine_async.same_named`)."""
        return mongoengine_attribute(__name__, name)
