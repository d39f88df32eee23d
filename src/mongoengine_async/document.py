"""Document and DynamicDocument with async methods.

Validation, ``to_mongo``, ``_from_son`` and delta computation are MongoEngine's;
the ``async_*`` methods do the I/O with PyMongo's async API. Whether a class is
async is decided at call time by its alias (``meta["db_alias"]`` or an active
``async_switch_db``). The other names of ``mongoengine.document`` are exported
as MongoEngine's, so ``from mongoengine.document import ...`` migrates by its
module name alone.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import dataclasses
import functools
import operator
import re
import threading
from collections.abc import Awaitable, Callable, Coroutine, Generator, Mapping
from contextvars import ContextVar
from typing import TYPE_CHECKING, Any, TypeVar

import mongoengine
import pymongo.errors
from bson import DBRef
from bson.errors import InvalidDocument
from bson.timestamp import Timestamp
from mongoengine.base import BaseDocument
from mongoengine.base.metaclasses import TopLevelDocumentMetaclass
from mongoengine.connection import DEFAULT_CONNECTION_NAME, ConnectionFailure
from mongoengine.context_managers import set_write_concern
from mongoengine.document import (
    DynamicEmbeddedDocument,
    EmbeddedDocument,
    InvalidCollectionError,
    MapReduceDocument,
)
from mongoengine.errors import (
    InvalidDocumentError,
    InvalidQueryError,
    NotUniqueError,
    OperationError,
    SaveConditionError,
)
from mongoengine.queryset import transform
from pymongo import ReadPreference
from pymongo.asynchronous.client_session import AsyncClientSession
from pymongo.asynchronous.collection import AsyncCollection

from mongoengine_async import (
    collection_setup,
    context,
    deltas,
    fields,
    plan_watch,
    sequences,
    signals,
    to_bson,
)
from mongoengine_async._compat import running_loop_or_none
from mongoengine_async.change_streams import ChangeStream
from mongoengine_async.checks import check_queryset_class
from mongoengine_async.connection import (
    collection_alias,
    get_async_collection,
    get_async_db,
    is_async_connection,
    is_sync_connection,
    made_for_sync,
    running_loop,
    undefined_alias_error,
)
from mongoengine_async.context import (
    anything_bound,
    cascade_on_its_way,
    follow_up,
    switched_alias,
    switched_collection,
    write_on_its_way,
)
from mongoengine_async.delete_rules import (
    CancelledAfterFailure,
    aliases_of_delete,
    has_rules,
    runs_own_transaction,
)
from mongoengine_async.detached import (
    FAILED,
    detached,
    failure,
    finish_before_close,
    id_repr,
    until_done,
)
from mongoengine_async.errors import AsyncUsageError, NotLoadedError
from mongoengine_async.fields import sync_cached_references
from mongoengine_async.from_bson import LoadedState
from mongoengine_async.gridfs import (
    AsyncGridFSProxy,
    Unreachable,
    alone_past_timeout,
    check_deletable,
    delete_files,
    past_timeout,
    run_again_if_cut_short,
)
from mongoengine_async.guards import (
    blocking_call_error,
    guard_blocking_methods,
    kind_changed_error,
    require_async,
)
from mongoengine_async.operation import (
    Operation,
    field_or_session,
    own_session,
    plain_home,
    reached,
    resolve,
    session_for,
)
from mongoengine_async.query_values import check_query_values
from mongoengine_async.queryset import QuerySet, file_error_wins
from mongoengine_async.same_named import mongoengine_attribute
from mongoengine_async.select_related import select_related
from mongoengine_async.to_bson import FastWrites

if TYPE_CHECKING:
    from typing_extensions import Self

    from mongoengine_async._typing import (
        MongoEngineDocument,
        MongoEngineDynamicDocument,
    )
else:  # checkers see MongoEngine's classes through the typed stub _typing.pyi
    MongoEngineDocument = mongoengine.Document
    MongoEngineDynamicDocument = mongoengine.DynamicDocument

__all__ = (
    "Document",
    "DynamicDocument",
    "DynamicEmbeddedDocument",
    "EmbeddedDocument",
    "InvalidCollectionError",
    "MapReduceDocument",
    "NotUniqueError",
    "OperationError",
)

D = TypeVar("D", bound="Document")
T = TypeVar("T")


class _Visited:
    """A document a cascade save visited, in its ``_refs`` beside MongoEngine's
    key (its class and data): equal only to the same document, so a document
    whose data cannot be shown (a ``__str__`` reading an unloaded reference)
    or shows otherwise later is still visited once."""

    __slots__ = ("document",)

    def __init__(self, document: Any):
        self.document = document

    def __eq__(self, other: object) -> bool:
        return isinstance(other, _Visited) and other.document is self.document

    __hash__ = None  # type: ignore[assignment]  # (compared in a list only)


def _visit(document: Any, refs: list[Any], starting: bool = False) -> bool:
    """Add ``document`` to a cascade's visited ``refs``; False when it was
    there already, by itself or by MongoEngine's key (another document of
    its class with the same data, which MongoEngine saves once). A document
    whose data cannot be shown (see :func:`_key`) is visited by itself alone,
    rather than failing the save after its write."""
    visited = _Visited(document)
    if visited in refs:
        return False
    key = _key(document, starting)
    if key is not None and key in refs:
        return False
    refs.append(visited)
    if key is not None:
        refs.append(key)
    return True


def _key(document: Any, starting: bool) -> str | None:
    """MongoEngine's key of a document a cascade visits: its class and data.
    Showing the data shows the documents it references: when a ``__str__`` of
    theirs reads an unloaded reference, or raises at all for the ``starting``
    document, whose key MongoEngine never makes (its save does not fail on a
    ``self.press.name`` of a press that is None), see :func:`_fallback_key`."""
    data = _keyed_data(document)
    try:
        return f"{type(document).__name__},{data}"
    except NotLoadedError:
        return _fallback_key(document, data)
    except Exception:
        if starting:
            return _fallback_key(document, data)
        raise


def _fallback_key(document: Any, data: dict) -> str | None:
    """The key of a document whose ``data`` cannot be shown: its class and
    data, a document that cannot be shown shown by its data instead, so copies
    with equal data are visited once, as MongoEngine visits them (None if even
    that fails: the document is visited by itself alone)."""
    try:
        return f"{type(document).__name__},{_shown(data, set())}"
    except Exception:
        return None


def _keyed_data(document: Any) -> dict:
    """``document._data`` with each reference a cascade does not follow (not
    loaded, or loaded and unchanged) as the DBRef it stands for: two copies of
    one document, one with its reference loaded, the other not, key alike."""
    data = dict(document._data)
    for name, field in document._fields.items():
        if name in data and isinstance(field, _CASCADED_FIELDS):
            data[name] = _as_reference(data[name])
    return data


# The fields a cascade save follows, as MongoEngine's ``cascade_save``.
_CASCADED_FIELDS = (mongoengine.ReferenceField, mongoengine.GenericReferenceField)


def _as_reference(value: Any) -> Any:
    """A reference's value as its collection and id (a ``DBRef``, with the
    database one names), unless it is a document a cascade saves (see
    :func:`_cascades_into`)."""
    if isinstance(value, mongoengine.Document):
        if _cascades_into(value) or value.pk is None:
            return value
        return DBRef(value._get_collection_name(), value.pk)
    if isinstance(value, dict) and isinstance(value.get("_ref"), DBRef):
        value = value["_ref"]  # (a generic reference, not loaded)
    if isinstance(value, DBRef):  # (its database kept: stored, it differs)
        return DBRef(value.collection, value.id, value.database)
    return value


def _cascades_into(ref: Any) -> bool:
    """Whether a cascade saves the referenced ``ref``: a document with changes
    (a new one with no ``_changed_fields`` counts as changed, as MongoEngine
    reads it with ``getattr``'s default True)."""
    return isinstance(ref, mongoengine.Document) and bool(
        getattr(ref, "_changed_fields", True)
    )


def _shown(value: Any, showing: set[int]) -> str:
    """``repr(value)``, a document's (in a dict or list too) that raises
    replaced by its class and data; ``showing``: the documents being shown
    (a cycle back to one is shown by its class alone)."""
    if isinstance(value, dict):
        items = (f"{key!r}: {_shown(item, showing)}" for key, item in value.items())
        return "{" + ", ".join(items) + "}"
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_shown(item, showing) for item in value) + "]"
    try:
        return repr(value)
    except Exception:
        if not isinstance(value, BaseDocument):
            raise
    if id(value) in showing:
        return f"<{type(value).__name__}: ...>"
    showing.add(id(value))
    try:
        return f"<{type(value).__name__}: {_shown(value._data, showing)}>"
    finally:
        showing.discard(id(value))


class Document(LoadedState, FastWrites, MongoEngineDocument):
    """A MongoEngine Document that also works on async aliases.

    LoadedState: the documents our loader builds share their loaded state.
    FastWrites: construction, ``validate`` and ``to_mongo`` by a generated plan.
    """

    # Marks a base class, as on MongoEngine's own Document: its metaclass then
    # leaves the class out of the hierarchy (``_superclasses``, the registry).
    my_metaclass = TopLevelDocumentMetaclass
    meta = {"abstract": True, "queryset_class": QuerySet}

    # -- where the class lives ----------------------------------------------------

    @classmethod
    def _db_alias(cls) -> str:
        """The alias in effect now (``async_switch_db`` first, then meta)."""
        # (anything_bound first: one call, not three, when nothing is switched)
        switched = anything_bound() and switched_alias(cls)
        return switched or cls._meta.get("db_alias", DEFAULT_CONNECTION_NAME)

    @classmethod
    def _is_async(cls) -> bool:
        """Whether the class is on an async alias now; False while MongoEngine's
        ``_get_collection`` resolves its sync collection (see there)."""
        return _resolving_sync.get() is not cls and is_async_connection(cls._db_alias())

    @classmethod
    def _require_async(cls, name: str, use: str) -> None:
        """Raise unless the class is on an async alias; ``use`` is the sync way."""
        require_async(cls._db_alias(), cls.__name__, name, use)

    @classmethod
    def _get_collection_name(cls) -> str | None:
        switched = anything_bound() and switched_collection(cls)
        return switched or super()._get_collection_name()

    @classmethod
    def _get_db(cls) -> Any:
        alias = cls._db_alias()
        if _resolving_sync.get() is not cls and is_async_connection(alias):
            return get_async_db(alias)
        _refuse_task_switch(cls, alias)
        return super()._get_db()

    @classmethod
    def _get_collection(cls) -> Any:
        """The driver collection; on async aliases an AsyncCollection, without I/O.

        The alias is resolved once: another thread may connect or disconnect
        it meanwhile, and the call goes by what it found."""
        home = plain_home(cls, keep=False)
        if home is not None:  # (what the lines below give, found in fewer calls)
            return home.operation.collection
        alias = cls._db_alias()
        if _resolving_sync.get() is not cls and is_async_connection(alias):
            check_queryset_class(cls, alias)  # (no home kept: rare)
            name = cls._get_collection_name()  # None: abstract, as in MongoEngine
            return get_async_collection(alias, name)  # type: ignore[arg-type]
        _refuse_task_switch(cls, alias)
        cached = getattr(cls, "_collection", None)
        if isinstance(cached, AsyncCollection):
            # MongoEngine's switch_db (behind using()) caches the collection it
            # saw on entry: one of an async alias is stale on a sync alias.
            cls._collection = cached = None
        if cached is not None:
            return super()._get_collection()
        # MongoEngine's asks _get_db() twice, then guards ensure_indexes():
        # all must see the alias as sync (or undefined) as found above, not
        # async because another thread connected it in between.
        token = _resolving_sync.set(cls)
        try:
            collection = super()._get_collection()
        finally:
            _resolving_sync.reset(token)
        if collection is not None:  # (a switch_db() document names its alias)
            made_for_sync(collection, alias)
        return collection

    @classmethod
    async def _async_get_collection(cls) -> AsyncCollection:
        """The AsyncCollection, created with its meta indexes on first use."""
        cls._require_async("_async_get_collection", "_get_collection()")
        collection = cls._get_collection()
        await cls._prepare_collection(collection)
        return collection

    async def _async_operation(
        self, name: str, use: str, session: AsyncClientSession | None = None
    ) -> Operation:
        """The operation on this document's collection (honours an instance
        ``switch_db``, made perhaps on another loop) on the running loop's client."""
        operation = self._known_operation(name, use, session)
        if operation is not None:
            return operation
        moved = self.__dict__.get("_get_collection")  # by switch_db(), perhaps
        if moved is None:
            self._require_async(name, use)
            collection = self._get_collection()
        else:
            collection = moved()
            alias = self._db_alias()
            alias = collection_alias(collection, alias) or alias
            target = type(self).__name__
            if not isinstance(collection, AsyncCollection):
                if is_async_connection(alias):  # moved before it was async
                    raise kind_changed_error(target, name, alias, now_async=True)
                require_async(alias, target, name, use)
            try:
                return await resolve(type(self), collection, session)
            except ConnectionFailure:
                if is_sync_connection(alias):  # moved while it was async
                    raise kind_changed_error(
                        target, name, alias, now_async=False
                    ) from None
                raise
        return await resolve(type(self), collection, session)

    def _known_operation(
        self, name: str, use: str, session: AsyncClientSession | None
    ) -> Operation | None:
        """Where the class operates, as :func:`reached` keeps it, when that is
        where this document goes: no ``switch_db`` on it, no ``_get_collection``
        of the class's own, no ``session=`` (which must be checked as the
        client's); None otherwise, or while the collection is unprepared."""
        if (
            session is not None
            or "_get_collection" in self.__dict__
            or type(self)._get_collection.__func__ is not _GET_COLLECTION  # type: ignore[attr-defined]
        ):
            return None
        home = plain_home(type(self), keep=False)  # nothing bound: fewer checks
        if home is not None:
            return home.operation
        return reached(type(self), name=name, use=use)

    @classmethod
    async def _prepare_collection(cls, collection: AsyncCollection) -> bool:
        """Create the collection and its meta indexes, once (collection_setup)."""
        return await collection_setup.prepare(cls, collection)

    @classmethod
    async def async_ensure_indexes(
        cls, *, session: AsyncClientSession | None = None
    ) -> None:
        """Create the indexes declared in ``meta`` (one round trip), in
        ``session`` if given (a bound transaction is not joined: the server
        refuses index builds on existing collections inside transactions)."""
        cls._require_async("async_ensure_indexes", "ensure_indexes()")
        collection = cls._get_collection()
        session = own_session(cls, collection.database.client, session)
        just_created = await cls._prepare_collection(collection)
        if not (just_created and cls._meta.get("auto_create_index", True)):
            await collection_setup.create_indexes(cls, collection, session)

    @classmethod
    async def async_create_index(
        cls,
        keys: Any,
        background: bool = False,
        *,
        session: AsyncClientSession | None = None,
        **kwargs: Any,
    ) -> str:
        """Create one index given MongoEngine-style keys, in ``session`` if
        given (as ``async_ensure_indexes``); returns its name."""
        cls._require_async("async_create_index", "create_index()")
        spec = dict(cls._build_index_spec(keys))
        fields = spec.pop("fields")
        collection = (await resolve(cls, cls._get_collection(), session)).collection
        return await collection.create_index(
            fields, background=background, session=session, **{**spec, **kwargs}
        )

    @classmethod
    async def async_list_indexes(cls) -> list[list[tuple[str, int]]]:
        """The index keys MongoEngine expects for this class (as ``list_indexes``)."""
        cls._require_async("async_list_indexes", "list_indexes()")
        return cls.list_indexes()

    @classmethod
    async def async_compare_indexes(
        cls, *, session: AsyncClientSession | None = None
    ) -> dict[str, list[Any]]:
        """The indexes ``meta`` expects that the collection lacks (``missing``)
        and those it has besides (``extra``): MongoEngine's ``compare_indexes``,
        over the index information read here (in ``session`` if given; a bound
        transaction is not joined, as for ``async_ensure_indexes``)."""
        cls._require_async("async_compare_indexes", "compare_indexes()")
        collection = await cls._async_get_collection()  # indexes on first use
        for related in _sharing_collection(cls, collection.full_name):
            await related._async_get_collection()  # (theirs too, as MongoEngine)
        session = own_session(cls, collection.database.client, session)
        information = await collection.index_information(session=session)
        return _COMPARE_INDEXES(_IndexesRead(cls, information))

    @classmethod
    def _collection_name_or_refuse(cls) -> str:
        """The class's collection name; for a class without one (abstract),
        MongoEngine's ``OperationError`` of ``drop_collection()``."""
        name = cls._get_collection_name()
        if not name:
            raise OperationError(
                f"Document {cls} has no collection defined (is it abstract ?)"
            )
        return name

    @classmethod
    async def async_drop_collection(
        cls, *, session: AsyncClientSession | None = None
    ) -> None:
        """Drop the class's collection (in ``session`` if given; a bound
        transaction is not joined: the server refuses a drop in one, as index
        builds); its indexes are recreated on next use."""
        cls._require_async("async_drop_collection", "drop_collection()")
        name = cls._collection_name_or_refuse()
        collection = cls._get_collection()
        session = own_session(cls, collection.database.client, session)
        # Every client's mark (each event loop has its own client), before the
        # drop and after it, as a use meanwhile (another loop's) may prepare it.
        collection_setup.forget_prepared(None, collection.full_name)
        try:
            await collection.database.drop_collection(name, session=session)
        finally:
            collection_setup.forget_prepared(None, collection.full_name)

    @classmethod
    def async_watch(
        cls: type[D],
        *,
        full_document: str | None = "updateLookup",
        resume_after: Mapping[str, Any] | None = None,
        start_after: Mapping[str, Any] | None = None,
        start_at_operation_time: Timestamp | None = None,
        batch_size: int | None = None,
        max_await_time_ms: int | None = None,
        session: AsyncClientSession | None = None,
        full_document_before_change: str | None = None,
    ) -> ChangeStream[D]:
        """The change events of the whole collection (of this class, under
        inheritance), bypassing any custom ``objects`` manager."""
        cls._require_async("async_watch", "Model._get_collection().watch()")
        cls._collection_name_or_refuse()
        queryset = cls._meta["queryset_class"](cls, cls._get_collection())
        return queryset.async_watch(
            full_document=full_document,
            resume_after=resume_after,
            start_after=start_after,
            start_at_operation_time=start_at_operation_time,
            batch_size=batch_size,
            max_await_time_ms=max_await_time_ms,
            session=session,
            full_document_before_change=full_document_before_change,
        )

    # -- awaiting a loaded reference ---------------------------------------------------

    def __await__(self) -> Generator[Any, None, Self]:
        """``await book.author`` gives the document whether the reference was a
        proxy or is loaded already (fetched, or by select_related)."""
        return self._itself().__await__()

    async def _itself(self) -> Self:
        return self

    # -- instance I/O ------------------------------------------------------------------

    async def async_save(
        self,
        force_insert: bool = False,
        validate: bool = True,
        clean: bool = True,
        write_concern: dict[str, Any] | None = None,
        cascade: bool | None = None,
        cascade_kwargs: dict[str, Any] | None = None,
        _refs: list[Any] | None = None,
        save_condition: dict[str, Any] | None = None,
        signal_kwargs: dict[str, Any] | None = None,
        session: AsyncClientSession | None = None,
        **kwargs: Any,
    ) -> Self:
        """Insert the document, or send only its changes (``$set``/``$unset``).

        Same arguments and errors as MongoEngine's ``save``, plus ``session``;
        returns ``self``.
        """
        if self._meta.get("abstract"):  # refused before any collection is resolved
            self._require_async("async_save", "save()")
            raise InvalidDocumentError("Cannot save an abstract document.")
        signal_kwargs = signal_kwargs or {}
        write_concern = write_concern or {}
        if cascade is None:
            cascade = self._meta.get("cascade", False) or cascade_kwargs is not None
        cls = type(self)
        task = await _turn_after_follow_ups(self, _wait_turn)
        try:
            collection, session, raw, created = await self._async_prepare(
                force_insert, validate, clean, signal_kwargs, session
            )
            object_id, created, sent = await self._async_write(
                task,
                collection,
                write_concern,
                raw,
                created,
                force_insert,
                save_condition,
                session,
                signal_kwargs,
            )
            # (No post_save receiver at all, most saves: no call. Those of
            # other classes, or a CachedReferenceField's, are not this one's.)
            awaits = (
                cascade
                or cls._cached_reference_fields
                or (
                    mongoengine.signals.signals_available
                    and signals.post_save.receivers
                    and signals.has_receivers(signals.post_save, cls)
                )
            )
            # Nothing after the write, nothing changed while it was awaited
            # (most saves): what it sent is cleared by keeping the empty list
            # it left, as giving it back and clearing it would.
            dropped = not awaits and deltas.drop_sent(
                self, None if sent is _UNTAKEN else sent
            )
            meanwhile = (
                []
                if dropped or sent is _UNTAKEN
                else deltas.give_back_changes(self, sent)
            )
        finally:
            _end_own_turn(self, task)
        if not awaits:
            self._set_saved_id(created, object_id)
            if dropped and not self._changed_fields:  # (the id unmarked)
                to_bson.mark_saved(self)
            else:
                self._end_save(True, meanwhile)
            deltas.keep_watching(self, sent)
            return self
        # As MongoEngine: cascade_kwargs override the save's own arguments.
        cascading = (
            {
                "force_insert": force_insert,
                "validate": validate,
                "write_concern": write_concern,
                "cascade": cascade,
                **(cascade_kwargs or {}),
                "_refs": _refs,
                "session": session,
            }
            if cascade
            else None
        )
        # Other tasks may change the document meanwhile: their changes stay.
        watched = deltas.watch_changes(self, meanwhile)
        await self._async_after_write(
            created,
            object_id,
            cascading,
            signal_kwargs,
            session,
            watched,
            meanwhile,
            listed=sent is not None and type(sent) is not deltas.Unlisted,
        )
        return self

    def _follow_cancelled_write(
        self,
        created: bool,
        object_id: Any,
        signal_kwargs: dict | None,
        watched: deltas._Watch | None,
        meanwhile: list[str] | None,
        listed: bool,
    ) -> None:
        """The steps after the write (:meth:`_async_after_write`: no cascade,
        no session) of a save whose caller was cancelled, in a task of their
        own (:func:`context.follow_up`)."""
        steps = self._async_after_write(
            created, object_id, None, signal_kwargs, None, watched, meanwhile, listed
        )
        follow_up(steps, "steps after the write of a cancelled save")

    async def _async_after_write(
        self,
        created: bool,
        object_id: Any,
        cascading: dict | None,
        signal_kwargs: dict | None,
        session: AsyncClientSession | None,
        watched: deltas._Watch | None,
        meanwhile: list[str] | None,
        listed: bool,
    ) -> None:
        """A save's steps after its write: the cascade (``cascading``: its
        arguments), the id, the cached references, ``post_save``; then its
        end (:meth:`_end_save`), the changes ``watched``
        (:func:`deltas.watch_changes`) noted kept, with those made while the
        write was awaited (``meanwhile``). ``listed``: the document had a
        list of changes as the save began, which ``post_save`` shows."""
        cls = type(self)
        clears = True
        sending = handed = following = False
        try:
            if cascading:
                await self._async_cascade_save(**cascading)
            self._set_saved_id(created, object_id)
            if cls._cached_reference_fields:
                await sync_cached_references(self, created, session)
            if (
                signal_kwargs is not None  # (None: held back by a muted block)
                and mongoengine.signals.signals_available
                and signals.post_save.receivers
            ):
                sending = True
                # A receiver sees a document the save inserted as MongoEngine's
                # does: without a list of changes (all changed) if it had none
                # (one Model(**values) built), else with its list (one loaded,
                # saved with force_insert or upserted).
                await signals.send_around(
                    signals.post_save,
                    cls,
                    None
                    if listed or not created
                    else functools.partial(deltas.unlisted, self),
                    {"document": self, "created": created, **signal_kwargs},
                )
        except asyncio.CancelledError:
            # The write landed: the cached copies (again) and post_save follow,
            # as after a cancelled write (not once a receiver was cancelled, as
            # one that raised; in a transaction, once it committed).
            signal_kwargs = signals.unless_muted(signals.post_save, signal_kwargs)
            if sending or asyncio.current_task() in context.following:
                pass
            elif session is not None and session.in_transaction:
                copies = fields.cached_updates(self, created)
                # (a new document that had no list, shown whole: its
                # embedded documents' changes alone, Unlisted, or None)
                shown = (
                    deltas.listed_changes(self)
                    if listed or not created
                    else deltas.unlisted_changes(self)
                )
                # (its end now, as a save cancelled in its write: see
                # _landed_in_transaction; post_save gives them back)
                following = self._follow_commit(
                    session, created, copies, shown, signal_kwargs
                )
            else:
                handed = True
                self._follow_cancelled_write(
                    created, object_id, signal_kwargs, watched, meanwhile, listed
                )
            raise
        finally:
            if watched is not None and not handed:  # (None: all changed)
                clears, meanwhile = deltas.end_watch(self, watched)
            if following:
                self._end_save(clears, meanwhile)
        self._end_save(clears, meanwhile)

    def _landed(self, session: AsyncClientSession | None) -> None:
        """The write of a save in ``session`` landed. One outside a
        transaction is counted on a document a transaction journaled: that
        transaction's abort, if its undo comes after, leaves the document
        saved (see ``deltas._restorer``). (A save that sent nothing is not
        counted: the abort leaves such a document new.)"""
        if "_async_landed" in self.__dict__ and not (
            session and session.in_transaction
        ):
            self.__dict__["_async_landed"] += 1

    def _end_save(self, clears: bool, meanwhile: list[str] | None) -> None:
        """As a save ends: its changes cleared, as MongoEngine's save does,
        unless another save's steps after its write clear them (not
        ``clears``); those made by others while it was awaited
        (``meanwhile``) kept for the next save."""
        if not clears:
            to_bson.mark_saved(self)
            return
        deltas.clear_changes(self)
        to_bson.mark_saved(self)
        if meanwhile is None:  # its list removed meanwhile (an aborted
            deltas.put_changes(self, None)  # transaction's undo): all changed
        elif meanwhile:  # changed by others while the save was awaited: for the next
            deltas.put_changes(self, meanwhile)  # (in their embedded documents)

    def _set_saved_id(self, created: bool, object_id: Any) -> None:
        """Set the id the write stored (not a shard key's, once stored)."""
        if created or self._meta["id_field"] not in self._meta.get("shard_key", ()):
            to_bson.set_id(self, object_id, stored=True)  # by the field's to_python

    async def _async_prepare(
        self,
        force_insert: bool,
        validate: bool,
        clean: bool,
        signal_kwargs: dict,
        session: AsyncClientSession | None,
    ) -> tuple[AsyncCollection, AsyncClientSession | None, dict, bool]:
        """A save up to its write (the operation, signals, validation,
        numbers, ``to_mongo``): returns the collection and the session to
        write with, the document as ``to_mongo`` gives it, and whether the
        write creates it (as MongoEngine's ``save`` decides)."""
        operation = self._known_operation(
            "async_save", "save()", session
        ) or await self._async_operation("async_save", "save()", session)
        collection, session = operation.collection, operation.session
        cls = type(self)
        # A signal with no receiver at all (most saves) is skipped by its empty
        # ``receivers``, without a call; ``send`` looks for this class's own.
        # No blinker: no signals.
        hooks = mongoengine.signals.signals_available
        if hooks and signals.pre_save.receivers:
            await signals.send(signals.pre_save, cls, document=self, **signal_kwargs)
        if validate:
            self.validate(clean=clean)
        if (
            not validate
            or cls.validate is not to_bson.FastWrites.validate
            or "validate" in self.__dict__  # (one of its own: mock.patch.object)
        ):
            plan_watch.refresh(cls)  # else validate() just did: once per save
        numbered = sequences.has_sequences(cls)
        if numbered:  # the id first, as to_mongo(fields=[id_field]) below would
            await sequences.async_fill([self], id_only=True)
        created = not to_bson.has_id(self) or self._created or force_insert
        if hooks and signals.pre_save_post_validation.receivers:
            await signals.send(
                signals.pre_save_post_validation,
                cls,
                document=self,
                created=created,
                **signal_kwargs,
            )
        if numbered:
            await sequences.async_fill([self])
        if session is not None:  # perhaps a transaction of ours: journal the save
            # (as the write will find it: clean() and the receivers changed it)
            deltas.journal_bookkeeping([self], session)
        raw = to_bson.raw(self)  # to_mongo() as a dict: PyMongo encodes it faster
        return collection, session, raw, created

    async def _async_write(
        self,
        task: asyncio.Task[Any] | None,
        collection: AsyncCollection,
        write_concern: dict,
        raw: dict,
        created: bool,
        force_insert: bool,
        save_condition: dict | None,
        session: AsyncClientSession | None,
        signal_kwargs: dict,
    ) -> tuple[Any, bool, Any]:
        """Send the save's write to ``collection`` with ``write_concern``
        (nothing when a stored document has no change); returns the id,
        whether the write created the document, and the changes it sent
        (:func:`deltas.take_changes`; :data:`_UNTAKEN` when it sent nothing),
        given back only if it failed. ``signal_kwargs`` are the save's
        (its ``post_save`` follows a write its caller's cancellation left on
        its way)."""
        delta = None if created else self._delta_update(raw, save_condition)
        if delta is not None and not delta[1]:  # nothing changed: nothing to send
            # (nor a write concern made: MongoEngine's save checks none then)
            return raw["_id"], False, _UNTAKEN
        # No write concern given: the collection's own (set_write_concern would
        # make an equal copy of the collection on every save).
        target = _concerned(collection, write_concern) if write_concern else collection
        fresh = delta is None and "_id" not in raw
        # Its id before the write is awaited (a retry is the same one).
        given = to_bson.give_id(self, raw) if fresh else None
        sent = deltas.take_changes(self)
        # In a task of its own, which the caller's cancellation does not
        # cancel: the write may be applying on the server, and the instance's
        # next write must not be sent before it settled (on another pooled
        # connection, it could be applied first and then overwritten).
        sending = self._async_send_write(
            target,
            raw,
            delta,
            created,
            force_insert,
            fresh,
            session,
            upsert=save_condition is None,
        )
        outcome, write = detached(sending, task)  # (no code of ours asks
        # for the task it works for: the save's own, even in a write's task)
        kept = False  # the changes taken: the write's as it settles, or sent
        refused = False  # an insert the server refused: the early id taken back
        try:
            object_id, created = await outcome
            kept = True
            if given is not None:
                to_bson.keep_id(self)
                if given.marked:  # (saved: no insert moves it)
                    self.__dict__.pop(to_bson.EARLY_MARK, None)
        except asyncio.CancelledError:
            kept = True  # (given back or saved by its outcome)
            transaction = session if session and session.in_transaction else None
            _settle_in_turn(
                self,
                write,
                session,
                functools.partial(
                    self._settle_cancelled_write,
                    sent=sent,
                    given=given,
                    outcome=outcome,
                    transaction=transaction,
                    signal_kwargs=signals.unless_muted(
                        signals.post_save, signal_kwargs
                    ),
                ),
                sending,
            )
            raise
        except pymongo.errors.OperationFailure as err:
            refused = given is not None and to_bson.not_stored(err)
            raise _save_error(err) from err
        except InvalidDocument as err:  # PyMongo's, before sending: as is
            refused = given is not None and to_bson.not_stored(err)
            raise
        finally:
            if not kept:  # (failed: not sent)
                deltas.give_back_changes(self, sent)
                if refused and given is not None:  # (as MongoEngine's save)
                    to_bson.take_id_back(self, given)
        self._landed(session)
        return object_id, created, sent

    async def _async_send_write(
        self,
        target: AsyncCollection,
        raw: dict,
        delta: tuple[dict, dict] | None,
        created: bool,
        force_insert: bool,
        fresh: bool,
        session: AsyncClientSession | None,
        upsert: bool,
    ) -> tuple[Any, bool]:
        """The write of :meth:`_async_write`; returns the id and whether it
        created the document. A stored document's changes (``delta``): sent
        unacknowledged (``w: 0``), as MongoEngine's save, it is not created,
        and a ``save_condition`` fails reading the result it has not."""
        if delta is not None:  # (its update awaited here: a coroutine fewer)
            selector, update = delta
            result = await target.update_one(
                selector, update, upsert=upsert, session=session
            )
            # Unacknowledged, raw_result is None: the TypeError of MongoEngine's
            # save, which reads raw_result["n"] alike.
            if not upsert and result.raw_result["n"] == 0:  # type: ignore[index]
                raise SaveConditionError(
                    "Race condition preventing document update detected"
                )
            gone = upsert and result.acknowledged and result.upserted_id is not None
            return raw["_id"], gone
        if force_insert or fresh:
            await target.insert_one(raw, session=session)
            return raw["_id"], created  # (its inserted_id: raw holds an id by now)
        return await self._async_replace_or_insert(target, raw, session), created

    def _settle_cancelled_write(
        self,
        write: asyncio.Future,
        sent: list[str] | None,
        given: to_bson.GivenId | None,
        outcome: asyncio.Future,
        transaction: AsyncClientSession | None,
        signal_kwargs: dict | None,
    ) -> None:
        """The bookkeeping of a save cancelled while its write was on its
        way, once the write settled: the changes it sent are given back if it
        failed, else cleared as a save clears them; those made meanwhile
        stay. An insert the server refused takes back the early id it was
        ``given``, as a refused save that returned does (refused just
        before the caller was cancelled: its ``outcome`` says so). Applied, its steps
        after the write (the cached copies, ``post_save``) follow, in a task
        of their own, as after a save that returned (the changes clear once
        they ended). In a ``transaction`` its end decides: see
        :meth:`_landed_in_transaction`."""
        shown = deltas.listed_sent(sent)  # (what give-back leaves)
        meanwhile = deltas.give_back_changes(self, sent)
        if write.cancelled() or write.result() is FAILED:
            error = None if write.cancelled() else failure(write, outcome)
            if given is not None and error and to_bson.not_stored(error):
                to_bson.take_id_back(self, given)
            return
        object_id, created = write.result()
        self._landed(transaction)
        if transaction is not None:
            self._landed_in_transaction(
                transaction, created, object_id, meanwhile, shown, signal_kwargs
            )
            return
        self._set_saved_id(created, object_id)
        cls = type(self)
        if cls._cached_reference_fields or (
            signal_kwargs is not None and signals.has_receivers(signals.post_save, cls)
        ):
            # (Watched from now: what other tasks change meanwhile stays.)
            watched = deltas.watch_changes(self, meanwhile)
            self._follow_cancelled_write(
                created,
                object_id,
                signal_kwargs,
                watched,
                meanwhile,
                deltas.own_list(shown),
            )
            return
        self._end_save(True, meanwhile)

    def _landed_in_transaction(
        self,
        session: AsyncClientSession,
        created: bool,
        object_id: Any,
        meanwhile: list[str] | None,
        shown: list[str] | None,
        signal_kwargs: dict | None,
    ) -> None:
        """A cancelled save's write applied in ``session``'s transaction: in
        one this package bound, the document is saved as by a save that
        returned there (an abort gives it back, by the journal), and its steps
        after the write follow the commit (:meth:`_follow_commit`). In the
        caller's own transaction nothing tells its end: the changes stay given
        back, and nothing follows."""
        copies = fields.cached_updates(self, created)  # (before they clear)
        if self._follow_commit(session, created, copies, shown, signal_kwargs):
            self._set_saved_id(created, object_id)
            self._end_save(True, meanwhile)

    def _follow_commit(
        self,
        session: AsyncClientSession,
        created: bool,
        copies: list[Any],
        shown: list[str] | None,
        signal_kwargs: dict | None,
    ) -> bool:
        """Once ``session``'s transaction (one this package bound) committed,
        update the cached ``copies`` and send ``post_save``, in a task of
        their own (or in the block, first, when it begins another save,
        delete or insert before: see ``context.after_commit``); False when it
        is no such transaction. The receivers see the changes the save sent
        (``shown``) listed, as those of a save that returned do."""
        if context.journal(session) is None:
            return False

        def follow() -> None:
            steps = self._async_after_commit(
                created, copies, shown, signal_kwargs, None
            )
            follow_up(steps, "steps after the commit of a cancelled save")

        def now() -> Coroutine[Any, Any, None]:
            return self._async_after_commit(
                created, copies, shown, signal_kwargs, session
            )

        if copies or (
            signal_kwargs is not None
            and signals.has_receivers(signals.post_save, type(self))
        ):
            context.after_commit(session, follow, now)
        return True

    async def _async_after_commit(
        self,
        created: bool,
        copies: list[Any],
        shown: list[str] | None,
        signal_kwargs: dict | None,
        session: AsyncClientSession | None,
    ) -> None:
        """The steps after the write of a cancelled save, once its
        transaction committed (or in it, in ``session``): the cached copies,
        then ``post_save``, the document as it is then, the changes the save
        sent (``shown``) listed again while it is sent (a new one that had
        no list, None or an ``Unlisted``, whole, its embedded documents'
        changes given back to them, as MongoEngine's receiver sees it)."""
        await fields.apply_cached_updates(self, copies, session)
        if signal_kwargs is None:  # (held back by a muted block)
            return
        watched = None
        if shown is not None:
            kept = deltas.give_back_changes(self, deltas.listed_sent(shown))
            watched = None if kept is None else deltas.watch_changes(self, kept)
        context.signalling()
        try:
            await signals.send_around(
                signals.post_save,
                type(self),
                functools.partial(deltas.unlisted, self)
                if created and not deltas.own_list(shown)
                else None,
                {"document": self, "created": created, **signal_kwargs},
            )
        finally:
            if watched is not None:
                self._end_save(*deltas.end_watch(self, watched))

    async def _async_replace_or_insert(
        self, collection: AsyncCollection, raw: dict, session: AsyncClientSession | None
    ) -> Any:
        """Save a new document with its own id: replace any same-id one, else
        insert it; returns the id.

        The sequence of MongoEngine's ``_save_create``: find_one_and_replace,
        then insert_one when nothing matched. A single ``replace_one(upsert)``
        would save a round trip but differs: the server reports its errors
        differently (messages) and two concurrent saves of one new id would both
        succeed where MongoEngine's second one raises NotUniqueError.
        """
        selector = self._integrate_shard_key(raw, {"_id": raw["_id"]})
        # Only whether something was replaced matters: fetch just the id.
        replaced = await collection.find_one_and_replace(
            selector, raw, projection={"_id": True}, session=session
        )
        if replaced:
            return raw["_id"]
        return (await collection.insert_one(raw, session=session)).inserted_id

    def _get_update_doc(self) -> dict[str, Any]:
        """MongoEngine's (the update a sync ``save()`` of this loaded document
        sends); for a plain change built from the write plan's dump
        (:func:`deltas.plain_update`), without ``_delta``'s second ``to_mongo``
        and walks; MongoEngine's otherwise. The plans are as the save's
        ``to_mongo()`` just checked them (one comparison fewer a save)."""
        update = deltas.plain_update(self, to_bson.raw)
        return super()._get_update_doc() if update is None else update

    def _clear_changed_fields(self) -> None:
        """MongoEngine's (as a sync ``save()`` ends); for plain changes the
        list emptied (:func:`deltas.plain_clear`), without its walk of them;
        the plans as the save's ``to_mongo()`` checked them, as ``async_save``
        clears by those of its ``validate()``."""
        if not deltas.plain_clear(self):
            super()._clear_changed_fields()

    def _delta_update(
        self, raw: dict, save_condition: dict | None
    ) -> tuple[dict, dict]:
        """The selector and the update (``$set``/``$unset``, empty when nothing
        changed) of a save of this stored document, ``raw`` its ``to_mongo``."""
        selector = {}
        if save_condition:  # (MongoEngine's errors first: a Q is no mapping)
            selector = transform.query(type(self), **save_condition)
            check_query_values(type(self), None, save_condition)
        selector["_id"] = raw["_id"]
        if (
            "shard_key" in self._meta
            or type(self)._integrate_shard_key is not _INTEGRATE_SHARD_KEY
            or "_integrate_shard_key" in self.__dict__
        ):  # (else MongoEngine's method, which adds nothing without a shard key)
            selector = self._integrate_shard_key(raw, selector)
        return selector, deltas.update_doc(self, raw)

    async def async_cascade_save(
        self, session: AsyncClientSession | None = None, **kwargs: Any
    ) -> None:
        """Save the changed documents this one references, not this one, as
        MongoEngine's ``cascade_save`` does (``kwargs`` go to their saves)."""
        await self._async_operation("async_cascade_save", "cascade_save()", session)
        await self._async_cascade_save(**kwargs, session=session)

    async def _async_cascade_save(self, **kwargs: Any) -> None:
        """Save changed referenced documents too (MongoEngine's ``cascade``),
        each in the save's session when it is its client's, else in that
        client's bound transaction (a session works with one client only).
        Each document is saved once: this one counts as visited, so a reference
        back to it (itself, or a cycle) does not save it again, where
        MongoEngine's ``cascade_save`` marks only the documents it saves."""
        refs = kwargs.get("_refs") or []
        counted = False
        for name, field in self._fields.items():
            if not isinstance(field, _CASCADED_FIELDS):
                continue
            ref: Any = self._data.get(name)
            if not _cascades_into(ref):
                continue
            if not counted:  # (only a cascade that goes on: no str() else)
                _visit(self, refs, starting=True)
                counted = True
            if not _visit(ref, refs):
                continue
            lower = await ref._async_operation("async_save", "save()")
            session = session_for(lower.collection.database.client, kwargs["session"])
            # (Not MongoEngine's ``ref._changed_fields = []`` after it: the save
            # cleared what it sent; what another task changed meanwhile stays.)
            await ref.async_save(**{**kwargs, "_refs": refs, "session": session})

    async def async_delete(
        self,
        signal_kwargs: dict[str, Any] | None = None,
        transaction: bool = True,
        session: AsyncClientSession | None = None,
        _post_delete_on_commit: bool = False,
        **write_concern: Any,
    ) -> None:
        """Delete this document (then its GridFS files), applying delete rules.

        A delete that cascades runs in one transaction unless ``transaction=False``.
        Files go only once the document is gone: a refused delete (DENY, a
        failure) keeps them, unlike MongoEngine, which deletes them first; if
        their delete fails, ``post_delete`` is sent, then the error raised.
        Under a ``pymongo.timeout()`` their deletes outlive, ``post_delete``
        follows once they ended (after the call raised its time-out).
        ``_post_delete_on_commit``: in a transaction this package bound (a
        queryset's one-by-one delete's own), ``post_delete`` once it committed.
        """
        operation = await self._async_operation("async_delete", "delete()", session)
        # (Its write concern: how its steps after a failure read, see after_failure.)
        operation = dataclasses.replace(operation, write_concern=write_concern)
        signal_kwargs = signal_kwargs or {}
        if context.follow_ups_pending():
            await context.run_follow_ups()
        await signals.send(
            signals.pre_delete, type(self), document=self, **signal_kwargs
        )
        files = self._file_proxies()
        check_deletable(files)
        # After a save of this instance in flight (its write), as a save would
        # be: a delete begun after it cannot be overtaken by its write.
        turn = await _turn_after_follow_ups(self, _wait_other_turn)
        try:
            # Its writes go on once cancelled (those of a cascade too, outside
            # a transaction or in the caller's), but for a cascade in a
            # transaction of its own, which the cancellation aborts.
            alone = turn and not (
                has_rules(type(self))
                and await runs_own_transaction(
                    type(self),
                    operation,
                    transaction,
                )
            )
            held_back = signals.unless_muted(signals.post_delete, signal_kwargs)
            failed: list[Exception] = []  # (the cascaded files': raised last)
            # (The steps after a failed write share it: see _after_failed_delete.)
            unreachable = Unreachable()
            deleting = functools.partial(
                self._qs.filter(**self._object_key).async_delete,
                write_concern=write_concern,
                _from_doc_delete=True,
                transaction=transaction,
                session=operation.session,
                _aborts=_post_delete_on_commit,
                # (Cancelled while a transaction of its own commits: once it
                # committed, the files and post_delete follow; the count it
                # is told tells nothing of its one document.)
                _followed=lambda _deleted: self._follow_delete(
                    files, operation, held_back
                ),
                _failed=failed,
                _unreachable=unreachable,
            )
            # Its files go once it was applied (in a transaction, once that
            # committed), as after a delete that returned. Its rules' writes
            # on the caller's own session (not a transaction of ours, whose
            # end waits for them): the caller waits for them, its next use of
            # the session must come after.
            await (
                _write_in_turn(
                    self,
                    self._delete_surely(
                        deleting, files, operation, held_back, unreachable
                    ),
                    operation.session,
                    functools.partial(
                        self._after_cancelled_delete, files, operation, held_back
                    ),
                    wait=(
                        session is not None
                        and has_rules(type(self))
                        and context.journal(session) is None
                    ),
                    cascades=has_rules(type(self)),
                )
                if alone
                else deleting()
            )
        except pymongo.errors.OperationFailure as err:
            # MongoEngine's formatting: the message, not the args tuple's repr.
            message = "Could not delete document (%s)" % err.args  # noqa: UP031
            raise OperationError(message) from err
        finally:
            if turn:
                _end_own_turn(self)
        beyond = alone_past_timeout(files, operation)
        if beyond is not None:
            # (Its files' deletes may outlive the call: post_delete once they
            # ended, then, in the task they go on in, under the caller's
            # time-out if not spent, as the caller would send it.)
            steps = self._async_after_delete(
                files, beyond, held_back, True, context.caller_deadline()
            )
            await file_error_wins(past_timeout(files, steps), failed)
            if failed:
                raise failed[0]
            return
        try:
            await delete_files(files, operation)  # once the document is gone
        except asyncio.CancelledError:
            # It is gone (unless the transaction it is in aborts): the files
            # and post_delete follow, as after a cancelled write that landed
            # (a file's delete the cancellation cut short is done again).
            session = operation.session
            if session is None or not session.in_transaction:
                self._follow_delete(files, operation, held_back)
            else:  # (a file's delete the transaction's commit kept is gone)
                self._follow_delete_commit(files, operation, held_back)
            raise
        except Exception:
            await self._signal_gone(operation, signal_kwargs)
            raise
        undos = context.journal(operation.session) if _post_delete_on_commit else None
        if undos is None:
            await signals.send(
                signals.post_delete, type(self), document=self, **signal_kwargs
            )
        elif held_back is not None:  # (not muted: sent once committed)
            send = functools.partial(
                signals.send, signals.post_delete, type(self), document=self
            )
            context.on_commit(undos, functools.partial(send, **held_back))
        if failed:  # (the document and its own files gone, post_delete sent)
            raise failed[0]

    async def _delete_surely(
        self,
        deleting: Callable[[], Awaitable[Any]],
        files: list[AsyncGridFSProxy],
        operation: Operation,
        signal_kwargs: dict | None,
        unreachable: Unreachable,
    ) -> Any:
        """``await deleting()``, the write of a delete; cancelled itself while
        it is on its way (its loop ending: ``asyncio.run()`` cancels the tasks
        left, and waits for them), outside a transaction, it may reach the
        server all the same: it is sent again, then the steps after it run
        (files, ``post_delete``), before the cancellation is raised. Failing
        on the server, it may have been applied: see
        :meth:`_after_failed_delete` (also when cut short after that failure:
        it is not sent again then)."""
        try:
            return await deleting()
        except CancelledAfterFailure:
            await self._after_failed_delete(
                files, operation, signal_kwargs, unreachable
            )
            raise
        except asyncio.CancelledError:
            session = operation.session
            if session is not None and session.in_transaction:
                raise  # (aborted as the loop ends: the document stays)
            await deleting()
            await self._async_after_delete(files, operation, signal_kwargs, True)
            raise
        except _NOT_SENT:
            raise  # (its delete, the last write, was not sent: it is there)
        except pymongo.errors.PyMongoError:
            await self._after_failed_delete(
                files, operation, signal_kwargs, unreachable
            )
            raise

    async def _after_failed_delete(
        self,
        files: list[AsyncGridFSProxy],
        operation: Operation,
        signal_kwargs: dict | None,
        unreachable: Unreachable,
    ) -> None:
        """After its delete failed outside a transaction, applied all the same
        (a write concern error, a reply lost): the document read gone, its
        files are deleted and ``post_delete`` sent, as after a delete that
        returned; their errors are dropped for the delete's. That read
        failing (or its client given up by ``unreachable``: it would wait a
        server selection), all stay: the document may still be there. In a
        transaction (the caller's) nothing is read: its abort keeps them;
        nor with no file and no ``post_delete`` receiver: nothing follows.
        Cut short by its loop's end, these steps are run again (see
        ``run_again_if_cut_short``). With files, beyond the caller's
        ``pymongo.timeout()`` (see ``delete_files``): cut short by it, the
        read kept them, orphaned (``post_delete`` then follows the call)."""
        session = operation.session
        if session is not None and session.in_transaction:
            return
        if not files and not (
            signal_kwargs is not None
            and signals.has_receivers(signals.post_delete, type(self))
        ):
            return
        alone = alone_past_timeout(files, operation)
        steps = run_again_if_cut_short(
            functools.partial(
                self._steps_if_gone,
                files,
                alone or operation,
                signal_kwargs,
                unreachable,
            )
        )
        if alone is None:
            await steps
            return
        # (Beyond the caller's time-out: its error, or a file's the steps met
        # by then, is dropped for the delete's, as the steps drop theirs.)
        with contextlib.suppress(Exception):
            await past_timeout(files, steps)

    async def _steps_if_gone(
        self,
        files: list[AsyncGridFSProxy],
        operation: Operation,
        signal_kwargs: dict | None,
        unreachable: Unreachable,
        signalled: set[int],
    ) -> None:
        """The steps of :meth:`_after_failed_delete`: unless sent already (its
        ``id()`` in ``signalled``), read whether the document is gone and, so,
        delete its files and send ``post_delete``, their errors dropped."""
        if id(self) in signalled:
            return
        query = self._qs.filter(**self._object_key)._query
        try:
            there = await unreachable.ids_there(operation, query, 1)
        except Exception:
            return
        if there:
            return
        with contextlib.suppress(Exception):
            await delete_files(files, operation, unreachable=unreachable)
        signalled.add(id(self))
        with contextlib.suppress(Exception):
            await self._signal_gone(operation, signal_kwargs)

    async def _signal_gone(
        self, operation: Operation, signal_kwargs: dict | None
    ) -> None:
        """After a delete whose files' delete failed (or was cut short by
        the loop's end, each file tried all the same): ``post_delete``, unless
        in a transaction (which that error aborts, keeping the document) or
        held back (``signal_kwargs`` None). Outside one the document is gone,
        and its receivers must learn of it (the caller gets the error next)."""
        session = operation.session
        if signal_kwargs is not None and (
            session is None or not session.in_transaction
        ):
            await signals.send(
                signals.post_delete, type(self), document=self, **signal_kwargs
            )

    async def _async_after_delete(
        self,
        files: list[AsyncGridFSProxy],
        operation: Operation,
        signal_kwargs: dict | None,
        surely: bool = False,
        deadline: float | None = None,
    ) -> None:
        """A delete's steps once the document is gone: its files (each even
        when cancelled meanwhile, if ``surely``: see ``delete_files``; then
        ``post_delete`` is sent before the cancellation is raised, the loop's
        end cancelling a follow-up task), then ``post_delete`` (not if
        ``signal_kwargs`` is None: held back by a muted block), its receivers
        under the caller's ``pymongo.timeout()`` running out at ``deadline``
        while it has time left (see ``context.until_caller_deadline``)."""
        try:
            await delete_files(files, operation, surely)
        except asyncio.CancelledError:
            if surely:
                context.signalling()
                with context.until_caller_deadline(deadline):
                    await self._signal_gone(operation, signal_kwargs)
            raise
        except Exception:
            context.signalling()
            with context.until_caller_deadline(deadline):
                await self._signal_gone(operation, signal_kwargs)
            raise
        if signal_kwargs is None:
            return
        context.signalling()
        with context.until_caller_deadline(deadline):
            await signals.send(
                signals.post_delete, type(self), document=self, **signal_kwargs
            )

    def _after_cancelled_delete(
        self,
        files: list[AsyncGridFSProxy],
        operation: Operation,
        signal_kwargs: dict | None,
        write: asyncio.Future[Any],
        in_transaction: bool,
    ) -> None:
        """After a delete whose caller was cancelled while its write was on
        its way: once that write was applied, its steps after it (the
        document's files, ``post_delete``), in a task of their own, as after
        a delete that returned; in a transaction, once it committed."""
        if write.cancelled() or write.result() is FAILED:
            return
        if in_transaction:
            self._follow_delete_commit(files, operation, signal_kwargs)
        else:
            self._follow_delete(files, operation, signal_kwargs)

    def _follow_delete_commit(
        self,
        files: list[AsyncGridFSProxy],
        operation: Operation,
        signal_kwargs: dict | None,
    ) -> None:
        """:meth:`_follow_delete` once the transaction of the delete's
        session committed (one this package bound: in the caller's own,
        nothing tells its end, and nothing follows); or in the block, first,
        when it begins another save, delete or insert before (see
        ``context.after_commit``)."""
        context.after_commit(
            operation.session,
            lambda: self._follow_delete(files, operation, signal_kwargs),
            lambda: self._async_after_delete(files, operation, signal_kwargs),
        )

    def _follow_delete(
        self,
        files: list[AsyncGridFSProxy],
        operation: Operation,
        signal_kwargs: dict | None,
    ) -> None:
        """:meth:`_async_after_delete` in a task of its own (the caller was
        cancelled), if it has something to do."""
        if files or (
            signal_kwargs is not None
            and signals.has_receivers(signals.post_delete, type(self))
        ):
            # (Not in the delete's own session: its caller may use it meanwhile.)
            alone = dataclasses.replace(operation, session=None)
            steps = self._async_after_delete(files, alone, signal_kwargs, True)
            what = "steps after the write of a cancelled delete"
            aliases = {proxy.db_alias for proxy in files}
            follow_up(steps, what, finish=bool(files), aliases=aliases)

    def _file_proxies(self) -> list[AsyncGridFSProxy]:
        """The GridFS files of this document's file fields (and of its lists
        and dicts of files)."""
        proxies = []
        for name, field in self._fields.items():
            if isinstance(field, mongoengine.FileField):
                proxies.append(getattr(self, name))
            elif isinstance(getattr(field, "field", None), mongoengine.FileField):
                value = getattr(self, name) or []
                proxies.extend(value.values() if isinstance(value, dict) else value)
        return [proxy for proxy in proxies if proxy and hasattr(proxy, "async_delete")]

    async def async_select_related(
        self, max_depth: int = 1, *, session: AsyncClientSession | None = None
    ) -> Self:
        """Load this document's references ``max_depth`` levels deep (in
        ``session`` if given); returns self."""
        self._require_async("async_select_related", "select_related()")
        # MongoEngine's select_related() first adds 1 to it: its TypeError for
        operator.add(max_depth, 1)  # a max_depth of another type
        if session is not None:  # refused if another client's, as elsewhere
            operation = await self._async_operation(
                "async_select_related", "select_related()", session
            )
            session = operation.session
        await select_related([self], max_depth, session)
        return self

    async def async_reload(
        self, *fields: str, session: AsyncClientSession | None = None, **kwargs: Any
    ) -> Self:
        """Reload all fields, or only ``fields``, from the database."""
        # As MongoEngine, before any collection is resolved (unless a save,
        # which may give the pk, is in flight: checked again in turn).
        if self.pk is None and _TURNS not in self.__dict__:
            self._require_async("async_reload", "reload()")
            raise self.DoesNotExist("Document does not exist")
        # Another task's changes from now on, while this awaits its turn and
        # its read, are not those MongoEngine's reload drops (see below).
        before = deltas.values_and_changes(self)
        operation = await self._async_operation("async_reload", "reload()", session)
        if fields and isinstance(fields[0], int):
            fields = fields[1:]
        elif "max_depth" in kwargs:  # (unused: references load when awaited)
            # MongoEngine's reload() gives it to select_related(), which first
            operator.iadd(kwargs["max_depth"], 1)  # adds 1: its TypeError
        # After a save of this instance in flight (its write): a reload begun
        # after it reads what it wrote.
        turn = await _wait_other_turn(self)
        try:
            if self.pk is None:
                raise self.DoesNotExist("Document does not exist")
            fresh = await (
                self._qs.read_preference(ReadPreference.PRIMARY)
                .filter(**self._object_key)
                .only(*fields)
                .async_first(session=operation.session)
            )
            if fresh is None:
                raise self.DoesNotExist("Document does not exist")
            self._copy_loaded_fields(fresh, fields)
            changes = (
                list(set(self._changed_fields) - set(fields))
                if fields
                else fresh._changed_fields
            )
            # Fields the read gave no value (a DynamicDocument's, absent from
            # the database) keep the changes made since the reload began.
            unread = {name.partition(".")[0] for name in fields or self._data}
            since = deltas.set_since(self, before, unread - fresh._data.keys())
            # (A save's steps after its write keep the changes made since.)
            deltas.reset_changes(self, list(dict.fromkeys(changes + since)))
            self._created = False
        finally:
            if turn:
                _end_turn(self)
        return self

    def _copy_loaded_fields(self, fresh: Document, fields: tuple[str, ...]) -> None:
        """Take the (requested) fields of ``fresh`` as this document's values."""
        for name in fresh._data:
            if fields and name not in fields:
                continue
            try:
                value = fresh[name]
            except (KeyError, AttributeError):
                value = fresh._data.get(name)
            try:
                setattr(self, name, self._reload(name, value))
            except KeyError:
                delattr(self, name)

    async def async_modify(
        self,
        query: dict[str, Any] | None = None,
        *,
        session: AsyncClientSession | None = None,
        **update: Any,
    ) -> bool:
        """Update this document atomically if it matches ``query``; reload it.

        Returns False (changing nothing) when the stored document does not match.
        """
        session = field_or_session(type(self), session, update, "set__session")
        # As MongoEngine, before any collection is resolved (unless a save,
        # which may give the pk, is in flight: checked again in turn).
        if self.pk is None and _TURNS not in self.__dict__:
            self._require_async("async_modify", "modify()")
            raise InvalidDocumentError("The document does not have a primary key.")
        operation = await self._async_operation("async_modify", "modify()", session)
        # After a save of this instance in flight (its write), as a save would
        # be: its write cannot overtake this one, nor its values the ones read.
        turn = await _wait_other_turn(self)
        try:
            return await self._async_modify(query, operation, update, turn)
        finally:
            if turn:
                _end_own_turn(self)

    async def _async_modify(
        self, query: Any, operation: Operation, update: dict[str, Any], turn: bool
    ) -> bool:
        if self.pk is None:
            raise InvalidDocumentError("The document does not have a primary key.")
        id_field = self._meta["id_field"]
        query = {} if query is None else query
        # A Q object filters as such (MongoEngine passes its compiled form as
        # keywords, which reads its operators as plain values).
        q_obj, query = (None, query.copy()) if isinstance(query, dict) else (query, {})
        if id_field not in query:
            query[id_field] = self.pk
        elif query[id_field] != self.pk:
            raise InvalidQueryError(
                "Invalid document modify query: it must modify only this document."
            )
        query.update(self._object_key)
        modifying = self._qs(q_obj, **query).async_modify(
            new=True, session=operation.session, **update
        )
        updated = await (
            _write_in_turn(self, modifying, operation.session) if turn else modifying
        )
        if updated is None:
            return False
        for name in self._fields_ordered:
            setattr(self, name, self._reload(name, updated[name]))
        deltas.reset_changes(self, updated._changed_fields)
        self._created = False
        return True

    async def async_update(
        self, *, session: AsyncClientSession | None = None, **kwargs: Any
    ) -> Any:
        """Apply a MongoEngine-style update to this document only."""
        session = field_or_session(type(self), session, kwargs, "set__session")
        numbered = sequences.has_sequences(type(self))
        # As MongoEngine, refused before any collection is resolved (a pk to
        # number is read once numbered, below; a save in flight may give it).
        if (
            not numbered
            and self.pk is None
            and not kwargs.get("upsert", False)
            and _TURNS not in self.__dict__
        ):
            self._require_async("async_update", "update()")
            raise OperationError("attempt to update a document not yet saved")
        operation = await self._async_operation("async_update", "update()", session)
        kwargs["session"] = operation.session
        # After a save of this instance in flight (its write), as a save would
        # be: its write cannot overtake this one.
        turn = await _wait_other_turn(self)
        try:
            return await self._async_update(numbered, kwargs, turn)
        finally:
            if turn:
                _end_own_turn(self)

    async def _async_update(
        self, numbered: bool, kwargs: dict[str, Any], turn: bool
    ) -> Any:
        if numbered:  # as reading an unset sequence pk does on a sync alias
            await sequences.async_fill([self], id_only=True)
        if self.pk is not None:
            updating = self._qs.filter(**self._object_key).async_update_one(**kwargs)
            return await (
                _write_in_turn(self, updating, kwargs["session"]) if turn else updating
            )
        if not kwargs.get("upsert", False):
            raise OperationError("attempt to update a document not yet saved")
        if numbered:
            await sequences.async_fill([self])
        query = self.to_mongo()
        query.pop("_cls", None)
        updating = self._qs.filter(**query).async_update_one(**kwargs)
        return await (
            _write_in_turn(self, updating, kwargs["session"]) if turn else updating
        )


class _IndexesRead:
    """A class as MongoEngine's ``compare_indexes`` reads it: the indexes it
    expects (``list_indexes``) and, for its collection, the index information
    read already."""

    def __init__(self, cls: type[Document], information: Mapping[str, Any]) -> None:
        self._cls, self._information = cls, information

    def list_indexes(self) -> list[list[tuple[str, int]]]:
        return self._cls.list_indexes()

    def _get_collection(self) -> _IndexesRead:
        return self

    def index_information(self) -> Mapping[str, Any]:
        return self._information


def _sharing_collection(cls: type[Document], full_name: str) -> list[type[Document]]:
    """The other classes of ``cls``'s hierarchy stored in its collection
    ``full_name`` (bases, subclasses, theirs): those MongoEngine's
    ``list_indexes`` asks for their collection, which creates their indexes on
    first use, before its ``compare_indexes`` reads the collection's."""
    found: list[type[Document]] = []
    pending: list[type[Any]] = [*cls.__bases__, *cls.__subclasses__()]
    while pending:
        klass = pending.pop()
        if (
            klass is cls
            or klass in found
            or not issubclass(klass, Document)
            or klass._meta.get("abstract")
            or not klass._is_async()  # (its collection a sync alias's: not ours)
            or klass._get_collection().full_name != full_name
        ):
            continue
        found.append(klass)
        pending += [*klass.__bases__, *klass.__subclasses__()]
    return found


# MongoEngine's comparison, called on an _IndexesRead (its own is guarded here).
_COMPARE_INDEXES = mongoengine.Document.__dict__["compare_indexes"].__func__

# MongoEngine's selector of a stored document's update (the shard key): a class
# or document with its own (an override, a patch) gets it called on every
# update, as MongoEngine's ``_save_update`` calls it.
_INTEGRATE_SHARD_KEY = mongoengine.Document.__dict__["_integrate_shard_key"]


def _save_error(err: pymongo.errors.OperationFailure) -> OperationError:
    """MongoEngine's error for a save's failed write: ``NotUniqueError`` for a
    duplicate key, else ``OperationError``."""
    if isinstance(err, pymongo.errors.DuplicateKeyError) or re.match(
        "^E1100[01] duplicate key", str(err)
    ):
        return NotUniqueError(f"Tried to save duplicate unique keys ({err})")
    return OperationError(f"Could not save document ({err})")


def _concerned(collection: AsyncCollection, write_concern: dict) -> AsyncCollection:
    """``collection`` with ``write_concern`` merged into its own, as
    MongoEngine's ``set_write_concern`` gives it."""
    with set_write_concern(collection, write_concern) as target:
        return target


# Marks a document whose save (or delete) is in flight, as keys of its
# instance dict (absent otherwise): _NO_WAITER, or the deque of the saves and
# deletes waiting for it; and the task of the one in flight (or the future of
# the waiter given the turn, until it runs). Changed under _TURN_LOCK: one
# instance may be saved from threads running event loops of their own.
_TURNS = "_async_save_turns"
_SAVER = "_async_save_task"
_NO_WAITER: tuple[()] = ()
# What a save's write took of its changes when it sent none (nothing changed).
_UNTAKEN: Any = object()
_TURN_LOCK = threading.Lock()


async def _wait_turn(document: Document) -> asyncio.Task[Any] | None:
    """Wait until no other save of ``document`` is in flight, then mark this
    one in flight: one instance's writes are sent, and applied, in the order
    its saves began; returns this task, the turn's holder. None in flight
    (most saves): no wait, nothing allocated. The document keeps its id
    (``to_bson.keep_id``): a refused insert that gave it no longer takes it back.
    A save in flight in this very task (a ``pre_save`` receiver saving the
    document) would wait for itself: OperationError instead."""
    state = document.__dict__
    try:
        task = asyncio.current_task()
    except RuntimeError:  # no asyncio loop (trio): refused clearly
        running_loop()
        raise
    with _TURN_LOCK:
        waiters = state.get(_TURNS)
        if waiters is not None and _on_closed_loop(state.get(_SAVER)):
            _pass_turn(state)  # its holder can never end it
            waiters = state.get(_TURNS)
        if waiters is None:
            state[_TURNS] = _NO_WAITER
            state[_SAVER] = task
            to_bson.keep_id(document)  # (may store it: see keep_id)
            return task
        if state.get(_SAVER) is task:
            raise OperationError(
                f"{type(document).__name__}.async_save() called for a document "
                "this task is saving (by a pre_save or pre_save_post_validation "
                "receiver?): it would wait for itself; save it again from post_save"
            )
        if waiters is _NO_WAITER:
            waiters = state[_TURNS] = collections.deque()
        turn = asyncio.get_running_loop().create_future()
        waiters.append(turn)
    try:
        await turn
    except asyncio.CancelledError:
        if turn.done() and not turn.cancelled():  # given the turn, then cancelled
            _end_turn(document)
        else:
            with _TURN_LOCK:
                if turn in waiters:
                    waiters.remove(turn)
        raise
    state[_SAVER] = task
    to_bson.keep_id(document)
    return task


async def _wait_other_turn(document: Document) -> bool:
    """:func:`_wait_turn` for a delete, reload, modify or update of
    ``document``; returns whether it took a turn. Not when this task's own
    save (or delete) is in flight (a ``pre_save`` receiver deleting or
    reloading the document): that save's write comes after, in this task's
    order, and waiting would be waiting for itself."""
    if document.__dict__.get(_SAVER) is asyncio.current_task():
        return False
    await _wait_turn(document)
    return True


# Errors of a command never sent: a delete failing so was not applied.
_NOT_SENT = (
    pymongo.errors.ServerSelectionTimeoutError,
    pymongo.errors.WaitQueueTimeoutError,
)


async def _turn_after_follow_ups(
    document: Document, wait: Callable[[Document], Awaitable[T]]
) -> T:
    """``await wait(document)`` (:func:`_wait_turn`, :func:`_wait_other_turn`),
    once the follow-ups of cancelled writes that landed in this task's
    transactions ran (see ``context.run_follow_ups``): also those of a
    write of ``document`` that settled meanwhile. They run out of the turn:
    their ``post_save`` receivers may save the document again."""
    took = await wait(document)
    while context.follow_ups_pending():
        if took is not False:  # (False: no turn taken)
            _end_own_turn(document)
        await context.run_follow_ups()
        took = await wait(document)
    return took


def _end_turn(document: Document) -> None:
    """Give the turn to the next save of ``document`` still waiting, or mark
    none in flight. A save waiting on another event loop (another thread's)
    is woken through that loop: a future is resolved only from its own."""
    with _TURN_LOCK:
        _pass_turn(document.__dict__)


def _pass_turn(state: dict[str, Any]) -> None:
    """:func:`_end_turn` of the document of instance dict ``state``, under
    ``_TURN_LOCK``."""
    waiters = state[_TURNS]
    while waiters:
        turn = waiters.popleft()
        if turn.done():  # (a cancelled one)
            continue
        loop = turn.get_loop()
        if loop is running_loop_or_none():
            turn.set_result(None)
        else:
            try:
                loop.call_soon_threadsafe(_give_turn, state, turn)
            except RuntimeError:  # its loop has closed: the next one's turn
                continue
        state[_SAVER] = turn  # until its save runs
        return
    del state[_TURNS], state[_SAVER]


def _on_closed_loop(holder: Any) -> bool:
    """Whether ``holder`` of a turn (a save's task, a write's, or the future
    of a waiter given it) belongs to an event loop that has closed: closed
    with the save still in flight (``loop.close()`` alone, its tasks never
    cancelled), it can never end the turn, which would keep every later save
    of the document waiting."""
    return isinstance(holder, asyncio.Future) and holder.get_loop().is_closed()


def _end_own_turn(document: Document, task: asyncio.Task[Any] | None = None) -> None:
    """:func:`_end_turn`, unless the turn went to a write still on its way
    (:func:`_settle_in_turn`): that one ends it once it settled. ``task``:
    the current one, if known (the turn's holder :func:`_wait_turn` gave).
    Not from a save's coroutine collected unfinished, outside any loop (its
    loop closed meanwhile): the next save takes the turn (see
    :func:`_on_closed_loop`)."""
    if running_loop_or_none() is None:
        return
    if document.__dict__.get(_SAVER) is (task or asyncio.current_task()):
        _end_turn(document)


async def _write_in_turn(
    document: Document,
    write: Coroutine[Any, Any, T],
    session: AsyncClientSession | None,
    settle: Callable[[asyncio.Future[Any], bool], None] | None = None,
    wait: bool = False,
    cascades: bool = False,
) -> T:
    """``await write``, the write of a delete, modify or update holding
    ``document``'s turn, in a task that the caller's cancellation does not
    cancel: cancelled while it is on its way, the caller raises at once (once
    it settled, if ``wait``: even when cancelled again meanwhile) and the
    turn ends once the write settled (see :func:`_settle_in_turn`), after
    ``settle(write, in_transaction)`` if given. ``cascades``: a delete with
    rules, which the transactions bound here wait for (``cascade_on_its_way``).
    The disconnect of an alias it may use (another task's) waits for it from
    its start: noted only once the cancelled caller ran, a disconnect right
    after ``task.cancel()`` closed the files' client under the steps after it."""
    outcome, task = detached(write)
    finish_before_close(task, _write_of(document), _needs(document))
    try:
        return await outcome
    except asyncio.CancelledError:
        if cascades:
            cascade_on_its_way(task)
        in_transaction = session is not None and session.in_transaction
        _settle_in_turn(
            document,
            task,
            session,
            None if settle is None else lambda done: settle(done, in_transaction),
            write,
        )
        if wait:
            await until_done(task)
        raise


def _settle_in_turn(
    document: Document,
    write: asyncio.Future[Any],
    session: AsyncClientSession | None,
    settle: Callable[[asyncio.Future[Any]], None] | None = None,
    coroutine: Coroutine[Any, Any, Any] | None = None,
) -> None:
    """A caller holding ``document``'s turn was cancelled while awaiting
    ``write``, which runs on: ``settle(write)`` and the turn's end wait
    until it settled (its reply arrived or it failed), so that the
    instance's next write cannot be applied before it, and be overwritten.
    The turn is the write's meanwhile (not the caller's: the caller's task
    saving the instance again waits for it). ``coroutine``, the one ``write``
    runs, is closed once it settled: a task cancelled before it started (the
    loop ending, on Python 3.10/3.11) never ran it, which Python warns of."""
    if coroutine is not None:
        write.add_done_callback(lambda _: coroutine.close())
    if write.done():
        _settled(document, settle, write)
        return
    with _TURN_LOCK:
        document.__dict__[_SAVER] = write
    write.add_done_callback(functools.partial(_settled, document, settle))
    finish_before_close(write, _cancelled_write_of(document), _needs(document))
    write_on_its_way(session, write)  # in a transaction: it aborts after it


def _needs(document: Document) -> frozenset[str]:
    """The aliases a write of ``document`` may use (a delete's rules and files
    too), whose disconnect waits for it (see ``finish_before_close``)."""
    return aliases_of_delete(type(document), _describe(document)[2])


def _cancelled_write_of(document: Document) -> str:
    """What a report of ``document``'s cancelled write left undone names (see
    ``finish_before_close``): the document, for its owner to find what is left
    (its files in GridFS)."""
    return _write_of(document, " whose caller was cancelled")


def _write_of(document: Document, caller: str = "") -> str:
    """``document``'s write as a report names it (see ``finish_before_close``),
    its ``caller`` described."""
    named = type(document).__name__
    if document.pk is not None:
        named = f"{named} {id_repr(document.pk)}"
    return f"write of {named}{caller} (and the steps after it)"


def _settled(
    document: Document,
    settle: Callable[[asyncio.Future[Any]], None] | None,
    write: asyncio.Future[Any],
) -> None:
    try:
        if not write.cancelled():
            write.exception()  # retrieved: the caller was cancelled
        if settle is not None:
            settle(write)
    finally:
        if document.__dict__.get(_SAVER) is write:
            _end_turn(document)


def _give_turn(state: dict[str, Any], turn: asyncio.Future) -> None:
    """Give the turn to ``turn``, on its own loop; if it was cancelled since,
    to the next save waiting (of the document of instance dict ``state``)."""
    if turn.done():
        with _TURN_LOCK:
            if state.get(_SAVER) is turn:
                _pass_turn(state)
    else:
        turn.set_result(None)


class DynamicDocument(Document, MongoEngineDynamicDocument):
    """A MongoEngine DynamicDocument that also works on async aliases."""

    my_metaclass = TopLevelDocumentMetaclass  # a base class (see Document)
    meta = {"abstract": True, "queryset_class": QuerySet}


_BLOCKING = {
    "save": "await document.async_save()",
    "delete": "await document.async_delete()",
    "reload": "await document.async_reload()",
    "modify": "await document.async_modify()",
    "update": "await document.async_update()",
    "cascade_save": "await document.async_cascade_save()",
    "select_related": "await document.async_select_related()",
    "ensure_indexes": "await Model.async_ensure_indexes()",
    "create_index": "await Model.async_create_index()",
    "drop_collection": "await Model.async_drop_collection()",
    "compare_indexes": "await Model.async_compare_indexes()",
}


# The class whose sync collection MongoEngine's ``_get_collection`` is
# resolving in this task (or thread): see Document._get_collection.
_resolving_sync: ContextVar[type[Any] | None] = ContextVar(
    "mongoengine_async_resolving_sync", default=None
)


def _refuse_task_switch(cls: type[Any], alias: str) -> None:
    """Refuse a sync operation on ``cls`` inside ``async_switch_db`` or
    ``async_switch_collection``: MongoEngine's sync path keeps the collection
    on the class (for every task, after the block too) and reads the alias
    from ``meta``, so the switch would be ignored or outlive its block."""
    if anything_bound() and (switched_alias(cls) or switched_collection(cls)):
        if not is_sync_connection(alias):
            raise undefined_alias_error(alias)
        raise AsyncUsageError(
            f"{cls.__name__} is switched by async_switch_db() or "
            "async_switch_collection(), which only async operations follow, and "
            f"its alias '{alias}' is not async: for sync operations use "
            "MongoEngine's switch_db() or switch_collection() "
            "(mongoengine.context_managers)"
        )


def _describe(document: Any) -> tuple[bool, str, str]:
    """Whether the class, or the document (moved by ``switch_db()``, perhaps),
    is on an async alias, its name and the alias. A document moved to a sync
    alias that was connected again with connect_async() since is refused too
    (:func:`_blocking_error`): its collection is one of the closed sync client."""
    moved = _moved(document)
    if moved is None:
        if not document._is_async():
            return False, "", ""  # (the names only matter for an async alias)
        return True, _name(document), document._db_alias()
    collection = moved()
    found = collection_alias(collection, document._db_alias())
    alias = found or document._db_alias()
    if isinstance(collection, AsyncCollection):
        return True, _name(document), alias
    return found is not None and is_async_connection(found), _name(document), alias


def _moved(document: Any) -> Any:
    """The ``_get_collection`` that ``switch_db()`` (or ``switch_collection()``)
    set on the document, if any."""
    return (
        None if isinstance(document, type) else document.__dict__.get("_get_collection")
    )


def _blocking_error(
    document: Any, target: str, name: str, alias: str, use: str
) -> Exception:
    """The error of a sync method refused by :func:`_describe`."""
    moved = _moved(document)
    if moved is not None and not isinstance(moved(), AsyncCollection):
        return kind_changed_error(target, name, alias, now_async=True)
    return blocking_call_error(target, name, alias, use)


def _name(document: Any) -> str:
    return document.__name__ if isinstance(document, type) else type(document).__name__


# The sync methods of an instance that may store it under the id it holds.
_STORING = frozenset({"save", "modify", "update"})


def _sync_write_starts(document: Any, name: str) -> None:
    """MongoEngine's ``name`` of ``document`` starting on a sync alias: one
    that may store it under the id it holds keeps that id (``to_bson.keep_id``),
    as an async write's turn does: an async insert that gave it, refused
    after, no longer takes it back."""
    if name in _STORING:
        to_bson.keep_id(document)


guard_blocking_methods(
    Document, _BLOCKING, _describe, _blocking_error, _sync_write_starts
)
deltas.takes_over(Document._get_update_doc, Document._clear_changed_fields)

# Where a class's own documents go; a subclass's override is honoured by
# Document._known_operation, which then leaves the work to it.
_GET_COLLECTION = Document.__dict__["_get_collection"].__func__


if not TYPE_CHECKING:  # (checkers see this module's own names alone)

    def __getattr__(name: str) -> Any:
        """MongoEngine's ``mongoengine.document.<name>`` where this module has no
        ``name`` (see :mod:`mongoengine_async.same_named`)."""
        return mongoengine_attribute(__name__, name)
