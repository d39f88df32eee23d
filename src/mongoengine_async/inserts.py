"""Inserting documents as MongoEngine's ``QuerySet.insert`` does, each one
dumped by its class's write plan (``to_bson.raw``, a dict where ``to_mongo()``
builds a SON) and given its id without the ``pk`` setter's lookups.

:class:`FastSyncInserts` (a base of our ``QuerySet``) is that ``insert`` on
sync aliases; ``QuerySet.async_insert`` shares its checks, errors and ids.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING, Any

import pymongo.errors
from mongoengine import signals
from mongoengine.context_managers import set_write_concern
from mongoengine.document import Document as MongoEngineDocument
from mongoengine.errors import BulkWriteError, NotUniqueError, OperationError
from mongoengine.queryset.base import BaseQuerySet as _MongoEngineBaseQuerySet

from mongoengine_async import plan_watch, to_bson
from mongoengine_async.to_bson import EARLY_MARK, GIVEN_MARK, GivenId, id_key

if TYPE_CHECKING:
    from mongoengine_async._typing import MongoEngineQuerySet
else:  # checkers see MongoEngine's class through the typed stub _typing.pyi
    MongoEngineQuerySet = _MongoEngineBaseQuerySet

__all__ = (
    "FastSyncInserts",
    "check_insertable",
    "give_ids",
    "insert_errors",
    "refresh_plans",
    "set_ids",
    "take_ids_back",
)


def check_insertable(cls: type[Any], documents: Iterable[Any]) -> None:
    """Refuse, as MongoEngine's ``insert`` does, a document not of ``cls``
    or one already stored (``pk`` set, not created)."""
    for document in documents:
        if not isinstance(document, cls):
            raise OperationError(f"Some documents inserted aren't instances of {cls}")
        if document.pk and not document._created:
            raise OperationError(
                "Some documents have ObjectIds, use doc.update() instead"
            )


@contextlib.contextmanager
def insert_errors() -> Iterator[None]:
    """Turn the driver's errors of an insert into MongoEngine's (a list's
    duplicate is a BulkWriteError, its details as ``to_mongo()`` shows them)."""
    try:
        yield
    except pymongo.errors.DuplicateKeyError as err:
        raise NotUniqueError(f"Could not save document ({err})") from err
    except pymongo.errors.BulkWriteError as err:
        details = to_bson.son_details(err.details)
        raise BulkWriteError(f"Bulk write error: ({details})") from err
    except pymongo.errors.OperationFailure as err:
        if re.match("^E1100[01] duplicate key", str(err)):
            message = f"Tried to save duplicate unique keys ({err})"
            raise NotUniqueError(message) from err
        raise OperationError(f"Could not save document ({err})") from err


def refresh_plans(documents: Iterable[Any]) -> None:
    """``plan_watch.refresh`` once for each class of a batch about to be
    dumped (the queryset's, and its subclasses' among the documents)."""
    for cls in dict.fromkeys(map(type, documents)):
        plan_watch.refresh(cls)


def give_ids(
    documents: list[Any], raw: list[dict]
) -> tuple[list[Any], list[GivenId | None]]:
    """Give each document whose son has no ``_id`` the id PyMongo's insert
    would make (``to_bson.give_id``), before the write is awaited. Returns
    those whose id mark an early id made, this insert's or that of a save or
    insert that did not return (failed, cancelled, aborted: new still,
    holding that id and its mark): MongoEngine's insert marks the id as its
    write returns, after a dynamic document's ``pk``, where ``set_ids`` moves
    the mark; and what ``give_id`` gave each (None: it held an id), for
    ``take_ids_back``."""
    marked: dict[int, Any] = {}  # (by identity: a document listed twice)
    given: list[GivenId | None] = [None] * len(raw)
    for index, (document, son) in enumerate(zip(documents, raw, strict=True)):
        state = document.__dict__
        if "_id" in son:
            to_bson.keep_id(document)  # (an insert under it may store it)
            if EARLY_MARK in state and document._created:
                marked[id(document)] = document
            continue
        given[index] = gave = to_bson.give_id(document, son)
        if gave.marked:  # (flagged EARLY_MARK)
            marked[id(document)] = document
        elif EARLY_MARK in state and id(document) not in marked:
            del state[EARLY_MARK]  # (a mark of its own, or none)
    return list(marked.values()), given


def take_ids_back(
    documents: list[Any], given: list[GivenId | None], error: BaseException
) -> None:
    """After an insert that failed with ``error``, the early ids of the
    documents it proves were not stored taken back (``to_bson.take_id_back``),
    as MongoEngine's failed insert leaves them none: inserted or saved again,
    each is one insert. Last first: a document listed twice holds again the
    id of a copy stored (``GivenId.before``), or none."""
    for index in reversed(_not_inserted(error, len(documents))):
        gave = given[index]
        if gave is not None:
            to_bson.take_id_back(documents[index], gave)


def _not_inserted(error: BaseException, count: int) -> range:
    """The indexes of an insert's ``count`` documents that ``error`` (PyMongo's,
    or MongoEngine's caused by it) proves were not stored: an ordered
    ``insert_many`` stores none from its first write error on, unless that
    error is on ``_id`` (an earlier attempt of the batch may hold them); a
    single document, as ``to_bson.not_stored`` says."""
    cause = error.__cause__ or error
    if isinstance(cause, pymongo.errors.BulkWriteError):
        errors = cause.details.get("writeErrors") or ()
        if not errors or errors[0].get("keyPattern") == {"_id": 1}:
            return range(0)
        return range(errors[0]["index"], count)
    return range(1 if count == 1 and to_bson.not_stored(cause) else 0)


def _changes(document: Any) -> list[str]:
    """The document's list of changes (empty for one ``__init__`` built)."""
    return getattr(document, "_changed_fields", None) or []


def set_ids(
    documents: Iterable[Any], ids: Iterable[Any], marked: Iterable[Any] = ()
) -> None:
    """``document.pk = object_id`` for each inserted document and its id; the
    id's mark of each ``marked`` one (``give_ids``) moved last, where
    ``insert()`` leaves it (after ``pk``'s on a dynamic document)."""
    for document, object_id in zip(documents, ids, strict=False):
        to_bson.set_id(document, object_id, by_pk=True)
        # to_bson.keep_id, inlined: a call fewer per document (none for one
        # given no early id, which holds no mark)
        state = document.__dict__
        if GIVEN_MARK in state:
            state.pop(GIVEN_MARK, None)
    for document in marked:
        document.__dict__.pop(EARLY_MARK, None)
        changes, key = _changes(document), id_key(document)
        if key in changes:
            changes.remove(key)
            changes.append(key)


# MongoEngine's insert as the package imported it: one patched since (on
# MongoEngine's BaseQuerySet or QuerySet) is called instead, as MongoEngine's
# queryset calls it.
_MONGOENGINE_INSERT = _MongoEngineBaseQuerySet.insert


class FastSyncInserts(MongoEngineQuerySet):
    """MongoEngine's queryset, its ``insert`` dumping by the write plans."""

    def insert(
        self,
        doc_or_docs: Any,
        load_bulk: bool = True,
        write_concern: dict[str, Any] | None = None,
        signal_kwargs: dict[str, Any] | None = None,
    ) -> Any:
        """MongoEngine's ``insert``: the same checks, signals, writes, errors and
        results, each document dumped by its class's write plan."""
        return_one = isinstance(doc_or_docs, MongoEngineDocument)
        documents = [doc_or_docs] if return_one else doc_or_docs
        theirs = super().insert
        if getattr(theirs, "__func__", None) is not _MONGOENGINE_INSERT:
            results = theirs(doc_or_docs, load_bulk, write_concern, signal_kwargs)
            for document in documents:  # (stored under the ids they hold)
                to_bson.keep_id(document)  # as set_ids does
            return results
        check_insertable(self._document, documents)
        signal_kwargs = signal_kwargs or {}
        signals.pre_bulk_insert.send(
            self._document, documents=documents, **signal_kwargs
        )
        refresh_plans(documents)
        raw = [to_bson.raw(document) for document in documents]
        with (
            set_write_concern(self._collection, write_concern or {}) as collection,
            insert_errors(),
        ):
            if return_one:
                ids = [collection.insert_one(raw[0]).inserted_id]
            else:
                ids = collection.insert_many(raw).inserted_ids
        set_ids(documents, ids)
        if load_bulk:
            loaded = self.in_bulk(ids)
            documents = [loaded.get(object_id) for object_id in ids]
        signals.post_bulk_insert.send(
            self._document, documents=documents, loaded=load_bulk, **signal_kwargs
        )
        results = documents if load_bulk else ids
        return results[0] if return_one else results
