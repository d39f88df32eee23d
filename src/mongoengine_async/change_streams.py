"""Change streams that yield documents: PyMongo's ``watch()`` in the model's terms.

``Book.objects(author=ann).async_watch()`` opens a change stream whose ``$match``
is the queryset's filter (MongoEngine's query building) applied to each event's
``fullDocument`` (and ``fullDocumentBeforeChange`` when the stream asks for
pre-images), or to its ``documentKey`` when the filter is only on the id (so
deletes match too); the collection's drop, rename and invalidate pass any filter,
so every stream ends as an unfiltered one. Each event is a :class:`ChangeEvent`
carrying the document (and the one before the change, when asked for) loaded by
our loader (``from_bson.py``) and the update description with
``db_field`` names mapped back to attribute names. Leaving the stream (``aclose()``,
``async with``, ``break``, a cancelled task) closes the server-side cursor; a
stream closed by ``aclose()`` (from any task, even one not opened yet or with a
``getMore`` on its way) gives no more events, and its readers end as after a
normal close.
"""

from __future__ import annotations

import asyncio
import copy
import weakref
from collections.abc import AsyncGenerator, Mapping
from dataclasses import asdict, dataclass
from functools import partial
from types import TracebackType
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from bson.timestamp import Timestamp
from mongoengine import EmbeddedDocument
from mongoengine.base import BaseDocument, ComplexBaseField
from mongoengine.errors import InvalidQueryError
from mongoengine.fields import EmbeddedDocumentField
from pymongo.asynchronous.change_stream import AsyncChangeStream
from pymongo.asynchronous.client_session import AsyncClientSession
from pymongo.asynchronous.command_cursor import AsyncCommandCursor
from pymongo.errors import InvalidOperation, OperationFailure, PyMongoError

from mongoengine_async._compat import CURSOR_CLOSED_ERRORS
from mongoengine_async.batches import Iteration, kill_soon, opened, stopped
from mongoengine_async.connection import running_loop
from mongoengine_async.detached import held
from mongoengine_async.from_bson import Load, loader, loader_key

if TYPE_CHECKING:
    from mongoengine_async.queryset import BaseQuerySet

__all__ = (
    "ChangeEvent",
    "ChangeStream",
    "UpdateDescription",
    "WatchOptions",
    "attribute_path",
    "match_stage",
)

D = TypeVar("D")

# Top-level operators whose operands are filters themselves (prefixed in turn).
_LOGICAL = frozenset({"$and", "$or", "$nor"})
_PASSED = frozenset({"$comment"})
# Field operators a $match refuses: they order documents by distance.
_BY_DISTANCE = ("$near", "$nearSphere")


@dataclass(frozen=True, slots=True)
class UpdateDescription:
    """What an update changed, by attribute path (``author.name``, ``tags.2``)."""

    updated_fields: dict[str, Any]
    removed_fields: list[str]
    truncated_arrays: dict[str, int]  # path: new size


@dataclass(frozen=True, slots=True)
class ChangeEvent(Generic[D]):
    """One change: ``document`` is the model instance (None for a delete, or
    when the event carries no full document); ``document_before_change`` the
    one before the change, when the stream asked for pre-images and the event
    carries one; ``raw`` is PyMongo's event."""

    operation_type: str
    document_key: dict[str, Any] | None
    document: D | None
    update_description: UpdateDescription | None
    resume_token: Mapping[str, Any]
    raw: Mapping[str, Any]
    document_before_change: D | None = None

    @property
    def pk(self) -> Any:
        """The changed document's primary key (None for collection events)."""
        return None if self.document_key is None else self.document_key.get("_id")


# -- the $match ----------------------------------------------------------------


def _ending() -> dict[str, Any]:
    """The filter of the collection's own events, which end every stream (a
    drop or a rename, then invalidate): any filter lets them through, as no
    filter does, so a filtered stream does not end without a word (the server
    closes it). A new one each time: a pipeline handed out is its stream's."""
    return {"operationType": {"$in": ["drop", "rename", "invalidate"]}}


def match_stage(
    filter_: Mapping[str, Any],
    cls_query: Mapping[str, Any],
    *,
    before_change: bool = False,
) -> dict[str, Any]:
    """The ``$match`` of a stream for a queryset's filter and its ``_cls`` part.

    A filter only on ``_id`` (also through ``$or``, ``$and``, ``$nor``)
    matches ``documentKey`` (every event of those documents, deletes too);
    any other filter matches ``fullDocument``, or with ``before_change``
    (the stream asks for pre-images) ``fullDocumentBeforeChange`` too, and
    only events that carry the document it matches: a filter that a missing
    field satisfies (``$ne``, ``$nin``, ``None``, ``$exists: False``) would
    pass every delete, every update whose document is gone and every
    collection event. A filter on no field (``{"$comment": ...}``) matches
    every document, and so every event, as no filter does. The class
    restriction of an inheritance hierarchy applies to events that carry a
    full document, or else the document before the change (a pre-image);
    the others (deletes without one) cannot name a class and pass. The
    collection's own events that end the stream (drop, rename, invalidate)
    pass any filter.
    """
    parts: list[dict] = []
    if filter_:
        part = _of_filter(filter_, before_change)
        if not _on_no_field(filter_):
            parts.append(part)
    if cls_query:
        parts.append(_of_class(cls_query))
    if not parts:
        return {}
    return {"$or": [_ending(), parts[0] if len(parts) == 1 else {"$and": parts}]}


def _of_filter(filter_: Mapping[str, Any], before_change: bool) -> dict[str, Any]:
    """The events whose document matches ``filter_``: their key for a filter
    only on the id; else the document after the change, or the one before
    it when ``before_change`` (an update moving a document out of the
    filter, a delete of a document in it)."""
    if _only_on_id(filter_):
        return _carried(filter_, "documentKey")
    after = _carried(filter_, "fullDocument")
    if not before_change:
        return after
    return {"$or": [after, _carried(filter_, "fullDocumentBeforeChange")]}


def _carried(filter_: Mapping[str, Any], root: str) -> dict[str, Any]:
    """``filter_`` on the event's ``root`` document, for events carrying one."""
    return {root: {"$ne": None}, **_prefixed(filter_, root + ".")}


def _on_no_field(filter_: Mapping[str, Any]) -> bool:
    """Whether ``filter_`` matches every document: it holds only ``$comment``
    (also in each clause of an ``$and``, or in one clause of an ``$or``; an
    empty ``$and`` is none, the server refuses it)."""
    for key, value in filter_.items():
        if key == "$and" and value and all(_on_no_field(c) for c in value):
            continue
        if key == "$or" and any(_on_no_field(clause) for clause in value):
            continue
        if key not in _PASSED:
            return False
    return True


def _of_class(cls_query: Mapping[str, Any]) -> dict[str, Any]:
    """The events of documents of the class (``cls_query``), told by the
    document after the change, else by the one before it, else (neither
    carried) not told: passed."""
    before = {"fullDocumentBeforeChange": None}
    return {
        "$or": [
            _prefixed(cls_query, "fullDocument."),
            {
                "fullDocument": None,
                "$or": [before, _prefixed(cls_query, "fullDocumentBeforeChange.")],
            },
        ]
    }


def _only_on_id(filter_: Mapping[str, Any]) -> bool:
    """Whether ``filter_`` names ``_id`` and no other field, also through
    ``$and``/``$or``/``$nor`` (``Q(id=a) | Q(id=b)``), whose clauses on no
    field (``{"$comment": ...}``) name none."""
    named = False
    for key, value in filter_.items():
        if key in _LOGICAL:
            clauses = [clause for clause in value if not _on_no_field(clause)]
            if not all(_only_on_id(clause) for clause in clauses):
                return False
            named = named or bool(clauses)
        elif key == "_id":
            named = True
        elif key not in _PASSED:
            return False
    return named


def _prefixed(filter_: Mapping[str, Any], prefix: str) -> dict:
    """``filter_`` with every field path under ``prefix``, its values copied
    (a ``$match`` shares none with the queryset's ``__raw__`` dicts, nor
    between its roots); operators that cannot be moved under a path
    (``$expr``, ``$where``, ``$text``) or that a ``$match`` refuses
    (``$near``) refused."""
    moved: dict[str, Any] = {}
    for key, value in filter_.items():
        if key in _LOGICAL:
            moved[key] = [_prefixed(clause, prefix) for clause in value]
        elif key in _PASSED:
            moved[key] = copy.deepcopy(value)
        elif key.startswith("$"):
            raise InvalidQueryError(
                f"a change stream cannot filter with {key}: its $match sees "
                "change events, not documents (filter on fields instead)"
            )
        else:
            _refuse_by_distance(value)
            moved[prefix + key] = copy.deepcopy(value)
    return moved


def _refuse_by_distance(condition: Any) -> None:
    """Raise ``InvalidQueryError`` for ``$near``/``$nearSphere`` (``near``,
    ``near_sphere``), which the server refuses in a stream's ``$match``."""
    if not isinstance(condition, Mapping):
        return
    for operator in _BY_DISTANCE:
        if operator in condition:
            raise InvalidQueryError(
                f"a change stream cannot filter with {operator}: it orders "
                "documents by distance, which a $match cannot (filter with "
                "geo_within_sphere or geo_within_center instead)"
            )


# -- db_field names back to attribute names -------------------------------------


def attribute_path(cls: type, db_path: str, document: Any = None) -> str:
    """The attribute path of the dotted ``db_path`` in documents of ``cls``,
    through embedded documents, lists and dicts; unknown names kept as they are.
    An embedded document found in ``document`` (the changed one, loaded) at a
    step of the path names its own fields: a subclass of the declared class, or
    the class a ``GenericEmbeddedDocumentField`` holds there."""
    names: list[str] = []
    container: Any = cls
    value: Any = document
    for segment in db_path.split("."):
        if isinstance(value, EmbeddedDocument):
            container = type(value)
        name, container = _step(container, segment)
        value = _held(value, segment, name)
        names.append(name)
    return ".".join(names)


def _held(value: Any, segment: str, name: str) -> Any:
    """What ``value`` (a document, list or dict) holds at ``segment`` (the
    field ``name`` of a document), or None."""
    if isinstance(value, BaseDocument):
        return value._data.get(name)
    if isinstance(value, dict):
        return value.get(segment)
    if isinstance(value, list) and segment.isdigit() and int(segment) < len(value):
        return value[int(segment)]
    return None


def _step(container: Any, segment: str) -> tuple[str, Any]:
    """The name of ``segment`` inside ``container`` (a document class or a
    list/dict field) and what the next segment is inside of."""
    if isinstance(container, type) and issubclass(container, BaseDocument):
        document: Any = container  # its maps are set by MongoEngine's metaclass
        name = document._reverse_db_field_map.get(segment)
        if name is None:
            return segment, None
        return name, _inner(document._fields[name])
    if isinstance(container, ComplexBaseField):  # a list index or a dict key
        return segment, _inner(container.field)
    return segment, None


def _inner(field: Any) -> Any:
    """What a path continues into below ``field``, if anything known."""
    if isinstance(field, EmbeddedDocumentField):
        return field.document_type
    if isinstance(field, ComplexBaseField):
        return field
    return None


def update_description(
    cls: type, raw: Mapping[str, Any], document: Any = None
) -> UpdateDescription:
    """PyMongo's ``updateDescription`` with attribute paths (of ``document``'s
    embedded documents where it holds them, see :func:`attribute_path`)."""

    def named(path: str) -> str:
        return attribute_path(cls, path, document)

    return UpdateDescription(
        updated_fields={
            named(path): value for path, value in raw.get("updatedFields", {}).items()
        },
        removed_fields=[named(path) for path in raw.get("removedFields", [])],
        truncated_arrays={
            named(item["field"]): item["newSize"]
            for item in raw.get("truncatedArrays", [])
        },
    )


# -- the stream -------------------------------------------------------------------


def _itself(cursor: AsyncCommandCursor) -> AsyncCommandCursor:
    return cursor


async def _close(stream: AsyncChangeStream) -> None:
    """PyMongo's ``close()`` of ``stream``; cancelled (an anyio scope cancels
    its awaited ``killCursors`` too), the cursor goes to the client's cleanup."""
    try:
        await stream.close()
    except asyncio.CancelledError:
        _kill_soon(stream._cursor)
        raise


async def _resumed(
    stream_ref: weakref.ref[AsyncChangeStream],
) -> AsyncCommandCursor:
    """The new cursor of PyMongo's resume of the stream (after a resumable
    error), by its own ``_create_cursor``: the one it replaces is killed once
    its server answers (:func:`_kill_replaced`); a cancellation while the new
    one opens leaves it to ``opened()``, which kills it."""
    stream = stream_ref()
    assert stream is not None  # PyMongo's resume runs on the stream
    replaced = stream._cursor
    _replaced.add(replaced)
    held(_kill_replaced(replaced), _replacing)
    return await opened(type(stream)._create_cursor(stream), _itself)


# The cursors resumes replaced, which only _kill_replaced kills, and its tasks.
_replaced: weakref.WeakSet[AsyncCommandCursor] = weakref.WeakSet()
_replacing: set[asyncio.Future[Any]] = set()


async def _kill_replaced(cursor: AsyncCommandCursor) -> None:
    """Kill ``cursor``, replaced by a resume, once its server answers again:
    PyMongo takes a cursor whose getMore failed on a network or state-change
    error for gone, while a server still up keeps it 10 minutes. A server
    that answers within the client's server selection timeout gets the kill;
    one that does not is down, its cursors with it: nothing is sent, nothing
    logged (PyMongo's background cleanup would wait that long for it, holding
    up its other kills or the client's close, then log an error)."""
    topology = cursor._collection.database.client._topology
    address = cursor.address
    assert address is not None  # its getMore was sent there
    try:
        await topology.select_server_by_address(address, "killCursors")
    except PyMongoError:  # no server there, or the client closed meanwhile
        return
    kill_soon(cursor)


def _kill_soon(cursor: AsyncCommandCursor) -> None:
    """:func:`kill_soon` of a stream's cursor, unless a resume replaced it
    (see :func:`_kill_replaced`): a resume cancelled while its new cursor
    opens leaves the stream on the one it replaced."""
    if cursor not in _replaced:
        kill_soon(cursor)


def _refuse_unwatchable(queryset: BaseQuerySet) -> None:
    """Raise ``InvalidQueryError`` for a queryset setting a stream cannot apply,
    rather than open a stream that silently differs from what was asked."""
    if queryset._skip or queryset._limit is not None:
        raise InvalidQueryError(
            "a change stream cannot apply skip() or limit(): it has no end"
        )
    if queryset._collation:
        raise InvalidQueryError(
            "a change stream cannot apply collation(): the server matches "
            "change events by simple binary comparison, whatever collation "
            "is given"
        )
    if queryset._max_time_ms is not None:
        raise InvalidQueryError(
            "a change stream cannot apply max_time_ms(): it has no end "
            "(max_await_time_ms= bounds each wait for events)"
        )
    if queryset._hint not in (-1, None):
        raise InvalidQueryError(
            "a change stream cannot apply hint(): it reads the oplog, "
            "where the collection's indexes do not apply"
        )
    if queryset._as_pymongo or queryset._scalar or queryset._loaded_fields:
        raise InvalidQueryError(
            "a change stream cannot apply as_pymongo(), scalar(), values_list(), "
            "only() or exclude(): each event carries the whole document "
            "(event.raw['fullDocument'] is the raw one)"
        )


def _refuse_in_transaction(session: Any, command: str) -> None:
    """Raise ``InvalidOperation`` for a stream's ``session=`` in a transaction
    before ``command`` is sent: the server refuses the stream's commands there
    and aborts the transaction, losing its writes."""
    if isinstance(session, AsyncClientSession) and session.in_transaction:
        raise InvalidOperation(
            f"a change stream cannot send its {command} with a session in a "
            "transaction: the server refuses it there and aborts the "
            "transaction (give the stream a session outside any transaction, "
            "or none)"
        )


@dataclass(frozen=True, slots=True)
class WatchOptions:
    """What ``async_watch`` passes through to PyMongo's ``watch()``."""

    full_document: str | None = "updateLookup"
    resume_after: Mapping[str, Any] | None = None
    start_after: Mapping[str, Any] | None = None
    start_at_operation_time: Timestamp | None = None
    batch_size: int | None = None
    max_await_time_ms: int | None = None
    comment: Any = None
    full_document_before_change: str | None = None


class ChangeStream(Generic[D]):
    """The change events of a queryset, as :class:`ChangeEvent` objects.

    The server-side stream opens on ``async with`` (or the first event) and is
    closed by ``aclose()``, on leaving ``async with``, on ``break`` out of
    ``async for`` and when the task iterating it is cancelled. Once closed by
    ``aclose()`` it gives no more events and never opens again.
    """

    def __init__(
        self,
        queryset: BaseQuerySet,
        options: WatchOptions,
        session: AsyncClientSession | None = None,
    ) -> None:
        _refuse_unwatchable(queryset)
        self._queryset = queryset.clone()
        self._options = options
        self._session = session
        self._stream: AsyncChangeStream | None = None
        # Set by aclose(): no (more) events, whatever the PyMongo stream holds.
        self._closed = False
        # (loop, lock) made on first use, in the running loop: see _turn().
        self._opening: tuple[asyncio.AbstractEventLoop, asyncio.Lock] | None = None
        # (loader_key, loader) of the last document loaded, as querysets keep it.
        self._loaded_with: tuple[tuple, Load] | None = None

    def _turn(self) -> asyncio.Lock:
        """The lock tasks take to open the stream and to ask it for events:
        they share one server-side stream and never send two ``getMore`` on its
        cursor at once (the server refuses the second). Made in the running loop."""
        loop = running_loop()
        if self._opening is None or self._opening[0] is not loop:
            self._opening = (loop, asyncio.Lock())
        return self._opening[1]

    async def _opened(self) -> None:
        """Open the PyMongo stream once, on first use on the running loop's
        client: tasks asking for it together wait for that one opening."""
        if self._stream is None and not self._closed:
            async with self._turn():
                await self._open()

    async def _open(self) -> AsyncChangeStream | None:
        """Open the PyMongo stream unless it is open or was closed by
        ``aclose()`` (the caller holds ``_turn()``).

        A change stream never joins a bound transaction (the server refuses
        ``$changeStream`` in one); an explicit ``session=`` is used as given,
        unless it is in a transaction (refused).
        """
        if self._stream is None and not self._closed:
            _refuse_in_transaction(self._session, "aggregate")
            collection, session = await self._queryset._watched(self._session)
            stream = self._stream = await opened(
                collection.watch(
                    self.pipeline(), session=session, **asdict(self._options)
                ),
                lambda stream: stream._cursor,
            )
            # Through a weak reference: the stream must not hold itself, or
            # one let go unclosed keeps its cursor until the cyclic GC runs.
            stream._create_cursor = partial(_resumed, weakref.ref(stream))  # type: ignore[method-assign]
            if self._closed:  # aclose() came while the stream was opening
                await _close(stream)
        return self._stream

    async def _try_next(self) -> Mapping[str, Any] | None:
        """PyMongo's ``try_next()``, one task at a time; None once closed,
        even with events left in the closed cursor's last batch, and without
        a command when closed by a task leaving ``async for`` (see _events:
        PyMongo's stream, its cursor killed, would be resumed)."""
        async with self._turn():
            stream = await self._open()
            if stream is None or not self.alive:
                return None
            _refuse_in_transaction(self._session, "getMore")
            try:
                raw = await stream.try_next()
            except asyncio.CancelledError:
                # PyMongo closed the stream, awaiting the killCursors, which a
                # cancellation at every await (an anyio scope) cancels too.
                _kill_soon(stream._cursor)
                raise
            except OperationFailure as error:
                if self._closed and error.code in CURSOR_CLOSED_ERRORS:
                    return None  # aclose() killed the cursor under this getMore
                raise
            if self._closed:
                # aclose() came while this getMore was on its way; when its
                # killCursors got there first, PyMongo resumed on a new cursor.
                await _close(stream)
                return None
            return raw

    def pipeline(self) -> list[dict[str, Any]]:
        """The stream's pipeline: the ``$match`` of the queryset's filter, if any;
        for ``none()`` one letting only the collection's ending events through,
        as its queries find nothing."""
        queryset = self._queryset
        if queryset._none:
            return [{"$match": _ending()}]
        filter_ = queryset._query_obj.to_query(queryset._document)
        if queryset._where_clause:  # refused by match_stage, as __raw__'s $where
            filter_ = {**filter_, "$where": queryset._where_clause}
        before = self._options.full_document_before_change not in (None, "off")
        match = match_stage(filter_, queryset._cls_query, before_change=before)
        return [{"$match": match}] if match else []

    @property
    def resume_token(self) -> Mapping[str, Any] | None:
        """Where the stream stands now (PyMongo's ``resume_token``): pass it as
        ``resume_after=`` to a new stream to continue from here. Before the
        stream opens (or if it never does), the token it was given to start from."""
        if self._stream is None:
            return self._options.start_after or self._options.resume_after
        return self._stream.resume_token

    @property
    def alive(self) -> bool:
        """Whether the stream may still give events (PyMongo's ``alive``): False
        once closed or invalidated (a dropped collection), where ``try_next()``
        returns None at once; a stream not opened (nor closed) yet is alive."""
        if self._closed:
            return False
        return self._stream is None or self._stream.alive

    async def try_next(self) -> ChangeEvent[D] | None:
        """The next event, or None when one ``getMore`` brought none (or at once
        when the stream is no longer ``alive``)."""
        raw = await self._try_next()
        return None if raw is None else self._event(raw)

    def __aiter__(self) -> AsyncGenerator[ChangeEvent[D], None]:
        what = f"the change stream of {self._queryset._document.__name__}.objects"
        again = "Open a new stream (async_watch(resume_after=stream.resume_token))"
        return Iteration(self._events, f"An async for over {what}", again)

    async def _events(
        self, iteration: weakref.ref[Iteration[ChangeEvent[D]]]
    ) -> AsyncGenerator[ChangeEvent[D], None]:
        """Every event until the stream is closed; leaving the loop (``break``,
        an error, cancellation) closes it. Kept past the end of its loop, which
        closed it too, the iteration raises when stepped again."""
        at_yield = False  # (see batches.leave)
        try:
            while self.alive:  # PyMongo's next(), one task at a time
                raw = await self._try_next()
                if raw is not None:
                    event = self._event(raw)
                    at_yield = True
                    yield event
                    at_yield = False
        finally:
            if at_yield:  # closed for every task, its cursor killed soon
                stopped(iteration, "loop")
                self._closed = True
                if self._stream is not None:
                    _kill_soon(self._stream._cursor)
            else:
                await self.aclose()

    async def aclose(self) -> None:
        """Close the stream (``killCursors``), for every task using it: it
        gives no more events, and a task waiting in a ``getMore`` meanwhile
        gets none (``try_next()`` returns None, ``async for`` ends). Closed
        before it opened, it never opens. Idempotent."""
        self._closed = True
        if self._stream is not None:
            await _close(self._stream)

    async def __aenter__(self) -> ChangeStream[D]:
        await self._opened()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.aclose()

    def _event(self, raw: Mapping[str, Any]) -> ChangeEvent[D]:
        """PyMongo's change event as a :class:`ChangeEvent` of the model."""
        document = self._loaded(raw, "fullDocument")
        before = self._loaded(raw, "fullDocumentBeforeChange")
        description = raw.get("updateDescription")
        # A subclass's fields are named by its own maps, not its base class's.
        named_by = before if document is None else document
        cls = self._queryset._document if named_by is None else type(named_by)
        return ChangeEvent(
            operation_type=raw["operationType"],
            document_key=raw.get("documentKey"),
            document=document,
            update_description=(
                None
                if description is None
                else update_description(cls, description, named_by)
            ),
            resume_token=raw["_id"],
            raw=raw,
            document_before_change=before,
        )

    def _loaded(self, raw: Mapping[str, Any], key: str) -> Any:
        """The document the event holds at ``key``, loaded, or None."""
        son = raw.get(key)
        return None if son is None else self._load(son)

    def _load(self, son: dict) -> Any:
        """The document of ``son``, by a loader settled as a queryset's is: made
        again when init signal receivers or reference collections change."""
        document = self._queryset._document
        dereference = self._queryset._auto_dereference
        key = loader_key(document, dereference)
        held = self._loaded_with
        if held is None or held[0] != key:
            held = self._loaded_with = (key, loader(document, dereference))
        return held[1](son)
