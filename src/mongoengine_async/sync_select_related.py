"""``select_related()`` on ``connect()`` aliases: MongoEngine's result, joined
while the documents are built.

MongoEngine lists the queryset, walks every document for its DBRefs, loads
each referenced class with ``in_bulk`` and walks the documents again to put
what it found in place (its ``DeReference``). When the only values of the
queryset's class that walk touches are plain ReferenceFields (the others are
scalars, lists of them or embedded documents, which it leaves as they are),
:func:`select_related_joined` sends the same queries (the results, then one
``in_bulk`` per referenced class, in the order the walk meets them) and puts
each referenced document in place while the results are built.
"""

from __future__ import annotations

import itertools
from types import NoneType
from typing import TYPE_CHECKING, Any

import mongoengine
from bson import DBRef, ObjectId

from mongoengine_async.batches import materialise_all, replies
from mongoengine_async.from_bson import (
    joining_loader,
    object_id_bytes,
    plain_references,
)
from mongoengine_async.select_related import (
    PLAIN_VALUE_TYPES,
    SCALAR_FIELDS,
    stored_ids,
)

if TYPE_CHECKING:
    from mongoengine_async.sync_reads import FastSyncReads

__all__ = ("select_related_joined",)

# MongoEngine's found documents: (collection, id) -> document.
_ObjectMap = dict[tuple[str, Any], Any]


def select_related_joined(queryset: FastSyncReads, max_depth: int) -> list | None:
    """``queryset.select_related(max_depth)`` (``queryset`` a clone, used up),
    or None, with nothing sent, when only MongoEngine's walk gives its result.

    The ids come from the raw results; when one is not stored as a bare
    ObjectId, or another field holds a value the walk would look into (a dict
    or a DBRef where the class declares a string, say), the results are
    loaded and handed to MongoEngine's walk.
    """
    fields = _joinable(queryset, max_depth)
    if fields is None:
        return None
    references, others = fields
    raws = list(itertools.chain.from_iterable(replies(queryset._cursor)))
    ids = [stored_ids(raws, field.db_field) for field in references]
    if any(by_binary is None for by_binary in ids) or not all(
        _holds_plain_values(raws, field) for field in others
    ):
        documents = materialise_all(queryset._loader(True), raws)
        return queryset._dereference(documents, max_depth=max_depth + 1)
    object_map = _fetch(references, raws, ids)
    joins = _joins(references, object_map)
    load = queryset._loader(True)
    stragglers: list = []

    def fallback(raw: dict) -> Any:
        """A result the joining loader does not take: loaded, joined below."""
        document = load(raw)
        stragglers.append(document)
        return document

    cls = queryset._document
    documents = materialise_all(joining_loader(cls, joins, fallback), raws)
    for document in stragglers:
        _attach(document, references, object_map)
    return documents


def _joinable(queryset: FastSyncReads, max_depth: int) -> tuple[list, list] | None:
    """The plain ReferenceFields to join and the class's other fields, or None
    when MongoEngine's walk could touch any other (or the queryset is not a
    plain read)."""
    cls = queryset._document
    if (
        max_depth < 0  # (MongoEngine's walk stops before the first level)
        or queryset._as_pymongo
        or queryset._scalar
        or queryset._none
        or queryset._empty
        or queryset._loaded_fields
        or not queryset._auto_dereference
        or cls._dynamic
        or cls._subclasses != (cls._class_name,)
    ):
        return None
    references = plain_references(cls)
    if not references or any(
        field.document_type._meta.get("abstract") for field in references
    ):
        return None
    joined = set(map(id, references))
    others = [field for field in cls._fields.values() if id(field) not in joined]
    return (references, others) if all(map(_left_alone, others)) else None


def _left_alone(field: Any) -> bool:
    """Whether MongoEngine's walk leaves the values of ``field`` as they are
    (a list, as an equal new list), when they are of the declared kind
    (:func:`_holds_plain_values`): no reference and no dict (a dict with a
    ``_cls`` or ``_ref`` key it would turn into a document)."""
    if isinstance(field, mongoengine.EmbeddedDocumentField):
        return True  # (the walk does not look into an embedded document)
    if isinstance(field, mongoengine.ListField):
        return _scalar(field.field)
    return _scalar(field)


def _scalar(field: Any) -> bool:
    return isinstance(field, SCALAR_FIELDS) and not isinstance(
        field, mongoengine.fields.GeoJsonBaseField
    )


def _holds_plain_values(raws: list, field: Any) -> bool:
    """Whether every stored value of a field :func:`_left_alone` accepts is
    of the declared kind: an embedded document's dict, a list of plain values,
    a plain value (stored data may hold anything)."""
    values = [raw.get(field.db_field) for raw in raws]
    kinds = set(map(type, values))
    if isinstance(field, mongoengine.EmbeddedDocumentField):
        return kinds <= _EMBEDDED_KINDS
    if isinstance(field, mongoengine.ListField):
        items = itertools.chain.from_iterable(filter(None, values))
        return kinds <= _LIST_KINDS and PLAIN_VALUE_TYPES.issuperset(map(type, items))
    return PLAIN_VALUE_TYPES.issuperset(kinds)


_EMBEDDED_KINDS = frozenset((dict, NoneType))
_LIST_KINDS = frozenset((list, NoneType))


def _fetch(references: list, raws: list, ids: list) -> _ObjectMap:
    """MongoEngine's ``DeReference._fetch_objects`` for these references:
    per referenced class, in the order its walk first meets each, one
    ``in_bulk`` of the ids not found yet in that class's collection."""
    by_class: dict[type[Any], set] = {}
    for field in _in_order_met(references, raws):
        by_class.setdefault(field.document_type, set())
    for field, by_binary in zip(references, ids, strict=True):
        if by_binary:
            by_class[field.document_type].update(by_binary.values())
    object_map: _ObjectMap = {}
    for cls, wanted in by_class.items():
        collection = cls._get_collection_name()
        refs = [id_ for id_ in wanted if (collection, id_) not in object_map]
        for id_, document in cls.objects.in_bulk(refs).items():
            object_map[(collection, id_)] = document
    return object_map


def _joins(references: list, object_map: _ObjectMap) -> list[dict[bytes, Any]]:
    """For each reference, what the joining loader looks a stored id up in:
    the documents found in its collection, by ``ObjectId.binary``."""
    found: dict[str, dict[bytes, Any]] = {}
    for (collection, id_), document in object_map.items():
        if type(id_) is ObjectId:
            found.setdefault(collection, {})[object_id_bytes(id_)] = document
    return [
        found.get(field.document_type._get_collection_name(), {})
        for field in references
    ]


def _in_order_met(references: list, raws: list) -> list:
    """The references that any result holds a value for, in the order
    MongoEngine's walk meets them: by first result holding one, then by field."""
    met = []
    for position, field in enumerate(references):
        name = field.db_field
        found = (i for i, raw in enumerate(raws) if raw.get(name) is not None)
        first = next(found, None)
        if first is not None:
            met.append((first, position, field))
    return [field for *_, field in sorted(met, key=lambda held: held[:2])]


def _attach(document: Any, references: list, object_map: _ObjectMap) -> None:
    """Put the found documents in place of the DBRefs of a document the
    joining loader left, as MongoEngine's ``_attach_objects`` does."""
    data = document._data
    for field in references:
        value = data.get(field.name)
        if type(value) is DBRef:
            data[field.name] = object_map.get((value.collection, value.id), value)
