"""select_related: load the references of many documents in a batch.

One query per referenced collection and level, whatever the number of
documents. :func:`load_related` joins the first level while a query's results
are built (:func:`~mongoengine_async.from_bson.joining_loader`); the levels
after it walk the documents for their references and fill them in place.
"""

from __future__ import annotations

import operator
import weakref
from collections.abc import Iterable
from datetime import datetime
from decimal import Decimal
from types import NoneType
from typing import Any, cast
from uuid import UUID

import mongoengine
from bson import Binary, DBRef, Decimal128, Int64, ObjectId
from mongoengine.base import (
    BaseDict,
    BaseDocument,
    BaseList,
    ComplexBaseField,
    get_document,
)
from mongoengine.base.datastructures import LazyReference as MongoEngineLazyReference
from mongoengine.document import EmbeddedDocument
from mongoengine.errors import NotRegistered
from mongoengine.fields import DynamicField
from pymongo.asynchronous.client_session import AsyncClientSession
from pymongo.asynchronous.collection import AsyncCollection

from mongoengine_async._compat import container_location
from mongoengine_async.batches import (
    WHOLE_RESULT,
    gc_paused,
    materialise_all,
    read_list,
)
from mongoengine_async.classes import keyed_by_class, taken_in
from mongoengine_async.connection import on_running_loop
from mongoengine_async.from_bson import (
    joining_loader,
    loader,
    object_id_bytes,
    plain_references,
)
from mongoengine_async.operation import reach
from mongoengine_async.proxies import (
    AsyncReferenceProxy,
    LazyReference,
    Slot,
    is_async_class,
    is_plain_reference,
    read_at,
    slots,
    stored_dbref,
    unloaded_target,
    walk_without_loading,
    walked_document,
    write_at,
)

__all__ = (
    "PLAIN_VALUE_TYPES",
    "SCALAR_FIELDS",
    "attached_distinct",
    "built_embedded",
    "distinct_embedded",
    "load_distinct",
    "load_related",
    "select_related",
    "stored_ids",
)

# The references found at one level: per (class, collection), the places each
# id goes to. A place is ``(container, key)`` for ``container[key]``, or
# ``(lazy reference, _CACHE)`` for the cache of a lazy reference.
_Wanted = dict[tuple[type[Any], str], dict[Any, list[tuple[Any, Any]]]]
_CACHE = object()


def _references_in(documents: Iterable[BaseDocument]) -> _Wanted:
    wanted: _Wanted = {}
    for document in documents:
        _walk_document(document, wanted)
    return wanted


def _want(
    wanted: _Wanted, cls: type[Any], dbref: DBRef, container: Any, key: Any
) -> None:
    group = (cls, dbref.collection)
    ids = wanted.get(group)
    if ids is None:
        ids = wanted[group] = {}
    id_ = dbref.id
    places = ids.get(id_)
    if places is None:
        ids[id_] = [(container, key)]
    else:
        places.append((container, key))


def _walk_document(document: BaseDocument, wanted: _Wanted) -> None:
    data = document._data
    for name, field, target in _fields_that_may_refer(document):
        value = data.get(name)
        if value is None:
            continue
        if target is not None and type(value) is DBRef:
            _want(wanted, target, value, data, name)
        else:
            _walk_value(value, field, data, name, wanted)


SCALAR_FIELDS = (
    mongoengine.StringField,
    mongoengine.IntField,
    mongoengine.FloatField,
    mongoengine.BooleanField,
    mongoengine.DateTimeField,
    mongoengine.DecimalField,
    mongoengine.ObjectIdField,
    mongoengine.UUIDField,
    mongoengine.BinaryField,
    mongoengine.fields.GeoJsonBaseField,
    mongoengine.EnumField,
)

# The types of the values MongoEngine's DeReference neither looks into nor
# replaces, by exact type (as the driver decodes them): no document, DBRef,
# dict, list or tuple.
PLAIN_VALUE_TYPES: frozenset[type] = frozenset(
    (
        str,
        int,
        float,
        bool,
        NoneType,
        bytes,
        Binary,
        datetime,
        Decimal,
        Decimal128,
        Int64,
        ObjectId,
        UUID,
    )
)

_Referring = list[tuple[str, Any, type[Any] | None]]
_referring_fields: dict[type[Any], _Referring] = keyed_by_class({})


def _fields_that_may_refer(document: BaseDocument) -> _Referring:
    """The fields of the document that can hold a reference, each with the
    class a plain stored DBRef in it points to, when the field alone says."""
    if document._dynamic:  # a dynamic document's fields are its own
        return _referring(document._fields)
    return _referring_fields_of(type(document))


def _referring_fields_of(cls: type[Any]) -> _Referring:
    fields = _referring_fields.get(cls)
    if fields is None:
        taken_in(cls)
        fields = _referring_fields[cls] = _referring(cls._fields)
    return fields


def _referring(fields: dict[str, Any]) -> _Referring:
    return [
        (name, field, _plain_target(field))
        for name, field in fields.items()
        if _may_refer(field)
    ]


def _may_refer(field: Any) -> bool:
    """Whether a value of ``field`` can hold a reference (a list of strings cannot)."""
    if isinstance(field, SCALAR_FIELDS):
        return False
    if isinstance(field, ComplexBaseField) and field.field is not None:
        return _may_refer(field.field)
    return True


def _plain_target(field: Any) -> type[Any] | None:
    """The class of a ReferenceField to a concrete class (its DBRefs carry no cls)."""
    if not isinstance(field, mongoengine.ReferenceField):
        return None
    document_type = field.document_type
    return None if document_type._meta.get("abstract") else document_type


def _walk_value(
    value: Any, field: Any, container: Any, key: Any, wanted: _Wanted
) -> None:
    if isinstance(value, MongoEngineLazyReference):
        if value._cached_doc is None and _fetched_by_id(value.document_type):
            _want(wanted, value.document_type, value, value, _CACHE)
    elif isinstance(field, mongoengine.GenericLazyReferenceField):
        if isinstance(value, dict):
            # Keep the reference whose cache gets filled: reads return it.
            reference = LazyReference.of(field.build_lazyref(value))
            write_at(container, key, reference)
            _walk_value(reference, None, container, key, wanted)
    elif isinstance(value, BaseDocument):
        if not isinstance(value, mongoengine.Document):
            _walk_document(value, wanted)
    elif (target := unloaded_target(field, value)) is not None:
        cached = isinstance(field, mongoengine.CachedReferenceField)
        if cached and is_plain_reference(value):  # (with no cached copy)
            value = _cached_plain(container, key, value, target, field)
        _want(wanted, target, stored_dbref(value, target), container, key)
    elif (embedded := _stored_embedded_class(field, value)) is not None:
        _walk_stored_document(value, embedded, wanted)
    elif field is None or isinstance(field, ComplexBaseField | DynamicField):
        _walk_container(value, getattr(field, "field", None), wanted)
    elif isinstance(value, list | dict) and _walked_among(field):
        _walk_container(value, field, wanted)


def _walked_among(field: Any) -> bool:
    """Whether a list or dict an update stored among the references of
    ``field`` (``[ref, [ref]]`` in a ``ListField(GenericReferenceField())``)
    holds references MongoEngine's ``DeReference`` loads, at any depth: those
    of a GenericReferenceField or a ReferenceField storing DBRefs (stored as
    ids, MongoEngine's ``to_python`` makes the list itself a reference)."""
    if isinstance(field, mongoengine.GenericReferenceField):
        return True
    return isinstance(field, mongoengine.ReferenceField) and field.dbref


def _cached_plain(
    container: Any, key: Any, value: Any, cls: type[Any], field: Any
) -> AsyncReferenceProxy[Any]:
    """A proxy put in place of ``value``, a plain DBRef or ObjectId (no cached
    copy) that the CachedReferenceField ``field`` holds, made as that field's
    read makes it: found missing, it still saves as the value stored (a proxy
    made from a DBRef alone would be taken for a ReferenceField's)."""
    slot = Slot(container, key).weakly()
    held = slot if type(slot._container) is weakref.ReferenceType else None
    proxy: AsyncReferenceProxy[Any] = AsyncReferenceProxy(value, cls, None, held)
    proxy.keep_cached(field.fields)
    write_at(container, key, proxy)
    return proxy


def _fetched_by_id(cls: type[Any]) -> bool:
    """Whether a lazy reference to ``cls`` fetches what a query by id loads:
    its fetch is ``cls.objects.get(pk=...)`` (MongoEngine's), so not when
    ``objects`` is a custom manager (a ``queryset_manager`` filter, say), which
    only that fetch applies; such a reference is left unfetched, as
    MongoEngine's ``select_related`` leaves every lazy reference."""
    for base in cls.__mro__:
        manager = base.__dict__.get("objects")
        if manager is not None:
            plain = type(manager) is mongoengine.QuerySetManager
            return plain and manager.get_queryset is None
    return False


def _stored_embedded_class(field: Any, value: Any) -> type[Any] | None:
    """The class of an embedded document kept as stored (a dict) by an
    untyped container, which builds it only when read: named by its ``_cls``,
    or, inside such a document, by the field holding it; else None."""
    if not isinstance(value, dict) or "_ref" in value:
        return None
    cls = _registered(value.get("_cls"))
    if cls is None and isinstance(field, mongoengine.EmbeddedDocumentField):
        cls = field.document_type
    elif field is not None and not isinstance(field, _EMBEDDING_FIELDS):
        return None
    return cls if cls is not None and issubclass(cls, EmbeddedDocument) else None


def _registered(name: Any) -> type[Any] | None:
    """The class MongoEngine's ``get_document`` gives for a stored ``_cls``
    (an old-style dotted name of a subclass too, as its reads take it), if any."""
    if not isinstance(name, str):
        return None
    try:
        return get_document(name)
    except NotRegistered:
        return None


_EMBEDDING_FIELDS = (
    mongoengine.EmbeddedDocumentField,
    mongoengine.GenericEmbeddedDocumentField,
)


def built_embedded(value: Any) -> Any:
    """``value``, a distinct value, with the embedded documents stored with
    their class (``_cls``: a GenericEmbeddedDocumentField's, an untyped
    container's) built, it and in the lists and dicts it is, as MongoEngine's
    DeReference builds them for ``distinct`` (its walk: ``walked_document``)."""
    if isinstance(value, list):
        return [built_embedded(item) for item in value]
    if not isinstance(value, dict) or "_ref" in value:
        return value
    if _stored_embedded_class(None, value) is not None:
        return walked_document(value)
    return {key: built_embedded(item) for key, item in value.items()}


def attached_distinct(values: list, owner: type[Any], path: str) -> list:
    """``distinct()`` results at ``path`` of ``owner`` as MongoEngine's
    DeReference hands them back: the list, and the lists and dicts in it
    (outside documents), a ``BaseList``/``BaseDict`` named by its path; no
    result of a container of references, a plain empty list."""
    if not values and isinstance(
        _distinct_leaf(owner, path), mongoengine.ReferenceField
    ):
        return values
    return _attached(values, owner, path)


def _attached(value: Any, owner: type[Any], name: str) -> Any:
    """``value`` (a distinct value at ``name``, or the list of them) with its
    lists and dicts, and those in them, MongoEngine's tracked containers; a
    stored generic reference (``_ref``) as is."""
    if isinstance(value, list):
        items = [_attached(item, owner, f"{name}.{i}") for i, item in enumerate(value)]
        return BaseList(items, owner, name)
    if isinstance(value, dict) and "_ref" not in value:
        pairs = {
            key: _attached(item, owner, f"{name}.{key}") for key, item in value.items()
        }
        return BaseDict(pairs, owner, name)
    return value


def _distinct_leaf(owner: type[Any], path: str) -> Any:
    """The field whose values the distinct ones at ``path`` of ``owner`` are,
    as MongoEngine's DeReference finds it: a top-level field by ``path``,
    through its containers; None elsewhere."""
    field = owner._fields.get(path)
    while hasattr(field, "field"):
        field = field.field
    return field


def distinct_embedded(
    cls: type[Any], values: list, owner: type[Any], path: str
) -> list:
    """The distinct ``values`` of an ``EmbeddedDocumentField`` of ``cls`` at
    ``path`` of ``owner`` built as MongoEngine's ``distinct`` builds them:
    new, by the class's constructor given each stored value as its
    ``DeReference`` walk wraps it (init signals sent first, with those
    values, then those of the embedded documents inside). Where that
    constructor fails (a ``_cls`` naming a subclass, a renamed field),
    loaded as the class it names, new; a null is None. A
    stored value that is no document (a list, a number) goes to the
    constructor too, which raises MongoEngine's ``TypeError``."""
    return [
        None
        if value is None
        else cls._from_son(value, created=True)
        if isinstance(value, dict) and not _constructible(cls, value)
        else cls(**_walked_value(value, owner, f"{path}.{index}"))
        for index, value in enumerate(values)
    ]


def _walked_value(value: Any, owner: type[Any], path: str) -> Any:
    """``value`` as MongoEngine's ``DeReference`` walk of the distinct values
    gives it: a list or dict wrapped (with what it holds), anything else as
    it is."""
    if isinstance(value, list | dict):
        return walk_without_loading(value, owner, path)
    return value


def _constructible(cls: type[Any], value: Any) -> bool:
    """Whether ``cls(**value)`` builds what ``cls._from_son(value)`` loads:
    a dict of ``cls``'s own (no other ``_cls``), its fields stored by their
    names. A key no field has goes to the constructor too, which raises
    MongoEngine's ``FieldDoesNotExist`` (as ``_from_son`` does) after the
    ``pre_init`` MongoEngine's ``distinct`` sends, with the values walked."""
    if type(value) is not dict or value.get("_cls", cls._class_name) != (
        cls._class_name
    ):
        return False
    return all(field.db_field == name for name, field in cls._fields.items())


def _walk_stored_document(raw: dict, cls: type[Any], wanted: _Wanted) -> None:
    """The references in ``raw``, an embedded document of ``cls`` as stored:
    a loaded document put in place of its stored reference is what the
    container's first read builds the embedded document with."""
    for _, field, _ in _referring_fields_of(cls):
        key = field.db_field
        if raw.get(key) is not None:
            _walk_stored_value(raw[key], field, raw, key, wanted)


def _walk_stored_value(
    value: Any, field: Any, container: Any, key: Any, wanted: _Wanted
) -> None:
    """:func:`_walk_value` for a value of ``field`` as stored (a reference
    as its id, the items of a list of them likewise)."""
    target = _plain_target(field)
    if target is not None and not isinstance(value, DBRef | BaseDocument):
        value = field.to_python(value)  # the stored id, as the read makes it
    if target is not None and type(value) is DBRef:
        _want(wanted, target, value, container, key)
    elif isinstance(field, ComplexBaseField) and field.field is not None:
        for slot in slots(value):
            item = slot.get()
            if item is not None:
                _walk_stored_value(item, field.field, slot.container, slot.key, wanted)
    else:
        _walk_value(value, field, container, key, wanted)


def _walk_container(value: Any, item_field: Any, wanted: _Wanted) -> None:
    for slot in slots(value):
        item = slot.get()
        if item is not None:
            _walk_value(item, item_field, slot.container, slot.key, wanted)


def _fill(container: Any, key: Any, document: Any) -> None:
    """Put the loaded document where its reference was; a proxy there is marked
    fetched too, so code still holding it does not query again."""
    if key is _CACHE:
        # Not a document of another class (its fetch's class filter refuses it).
        if isinstance(document, container.document_type):
            container._cached_doc = document
        return
    current = read_at(container, key)
    write_at(container, key, document)
    if isinstance(current, AsyncReferenceProxy):
        current.__dict__["_document"] = document  # (past its __setattr__)


async def load_distinct(
    cls: type[Any], path: str, values: list, session: AsyncClientSession | None
) -> list:
    """Put in ``values`` (``distinct()`` results at ``path`` of ``cls``) the
    documents they refer to, one level, as MongoEngine's ``distinct`` has its
    DeReference do: the ids of a top-level ReferenceField (or a container of
    them: a list, a list of lists, a MapField or DictField) are its class's;
    elsewhere, DBRefs and generic references are loaded as in an untyped list.
    Missing targets stay as stored (DBRefs)."""
    field = _distinct_leaf(cls, path)
    wanted: _Wanted = {}
    if isinstance(field, mongoengine.ReferenceField):
        values[:] = [_as_reference(field, value) for value in values]
        _walk_references(values, field, wanted)
    else:
        _walk_container(values, None, wanted)
    if wanted:
        loaded: _Loaded = {}
        await _load_missing(wanted, loaded, session)
        _fill_all(wanted, loaded, mark_missing=False)  # as MongoEngine: DBRefs
    return values


def _as_reference(field: Any, value: Any) -> Any:
    """A stored id of ReferenceField ``field`` as a DBRef (its to_python),
    and those in the lists and dicts a distinct value of a container of
    references is, as MongoEngine's DeReference turns them."""
    if isinstance(value, list):
        return [_as_reference(field, item) for item in value]
    if isinstance(value, dict):
        return {key: _as_reference(field, item) for key, item in value.items()}
    if value is None or isinstance(value, DBRef):
        return value
    return field.to_python(value)


def _walk_references(value: Any, field: Any, wanted: _Wanted) -> None:
    """The DBRefs of ReferenceField ``field`` in ``value``, a list of
    distinct values, and in the lists and dicts they are."""
    for slot in slots(value):
        item = slot.get()
        if isinstance(item, list | dict):
            _walk_references(item, field, wanted)
        elif item is not None:
            _walk_value(item, field, slot.container, slot.key, wanted)


# Where referenced documents live: (id of the client, database, collection).
_Where = tuple[int, str, str]
# The documents loaded so far: where -> id -> document (None: the id was
# looked for and is missing).
_Loaded = dict[_Where | None, dict[Any, Any]]  # None: a class with no collection


async def select_related(
    documents: list, max_depth: int = 1, session: AsyncClientSession | None = None
) -> list:
    """Load every reference of ``documents``, ``max_depth`` levels deep (in
    ``session`` on its client; on others, in their bound transaction, if any).

    One query per referenced collection per level, whatever the number of
    documents; documents already loaded are reused, so cycles terminate.
    Missing targets are left as proxies that raise ``DoesNotExist`` on fetch.
    """
    await _load_levels(list(documents), {}, max_depth, documents, session=session)
    return documents


async def load_related(
    cls: type[Any],
    raws: list,
    origin: AsyncCollection | None,
    max_depth: int = 1,
    auto_dereference: bool = True,
    session: AsyncClientSession | None = None,
) -> list:
    """``select_related`` of the documents of ``cls`` loaded from ``raws``, the
    results of a query on ``origin``; None when they are partial (a projection),
    so that none stands in for a referenced document.

    When the only references ``cls`` can hold are ReferenceFields, stored as
    ObjectIds, their ids are read from ``raws`` and the first level is put in
    place while the documents are built: no DBRef is made and no document
    walked for it. The result is the same.
    """
    join = _join(cls, raws) if max_depth > 0 and auto_dereference else None
    stragglers: list = []
    # Below, the raws are handed over to the loaders: they may own them.
    if join is None:
        documents = materialise_all(loader(cls, auto_dereference, owned=True), raws)
        level, loaded, levels = list(documents), {}, max_depth
    else:
        groups, wanted = join
        wheres = {group: _where(*group) for group in wanted}  # (once each)
        found = await _find_joined(wanted, wheres, session)
        load = loader(cls, owned=True)

        def fallback(raw: Any) -> Any:
            """A result the joining loader does not take is loaded as usual."""
            document = load(raw)
            stragglers.append(document)
            return document

        joins = [found.get(wheres[group], {}) for group in groups]
        documents = materialise_all(joining_loader(cls, joins, fallback), raws)
        if _any_missing(wanted, wheres, found):  # the join left their DBRefs
            _mark_joined_missing(cls, documents, groups, wanted, wheres, found)
        if not stragglers and max_depth == 1:
            return documents
        loaded = _loaded_by_id(wanted, wheres, found)
        level = [document for by_id in found.values() for document in by_id.values()]
        levels = max_depth - 1
    top, source = ((), None) if origin is None else (documents, _where_of(origin))
    if stragglers:
        level += await _load_level(stragglers, loaded, top, source, session)
    await _load_levels(level, loaded, levels, top, source, session)
    return documents


# The ids a join wants, per (class, collection): ``ObjectId.binary`` -> ObjectId.
_JoinWanted = dict[tuple[type[Any], str], dict[bytes, ObjectId]]


def _join(
    cls: type[Any], raws: list
) -> tuple[list[tuple[type[Any], str]], _JoinWanted] | None:
    """The (class, collection) of each reference to join while loading ``raws``,
    and the ids wanted from each; None when the walk must find them instead."""
    references = plain_references(cls)
    referring = _referring_fields_of(cls)
    if (
        not references
        or len(referring) != len(references)  # others may refer too
        or any(target is None for _, _, target in referring)
        or len(cls._subclasses) > 1
    ):
        return None
    collections = [field.document_type._get_collection_name() for field in references]
    if cls._get_collection_name() in collections:
        return None  # the results themselves may be referenced: the walk reuses them
    groups = [
        (field.document_type, collection_name)
        for field, collection_name in zip(references, collections, strict=True)
    ]
    wanted: _JoinWanted = {}
    for field, group in zip(references, groups, strict=True):
        ids = stored_ids(raws, field.db_field)
        if ids is None:
            return None
        wanted.setdefault(group, {}).update(ids)
    return groups, wanted


_ID_OR_NONE = frozenset((ObjectId, NoneType))


def stored_ids(raws: list, db_field: str) -> dict[bytes, ObjectId] | None:
    """The ObjectIds stored under ``db_field``, by their bytes
    (``ObjectId.binary``, hashed in C); None if any is stored otherwise."""
    try:  # one C call, where ``raw.get`` is a call per result
        values = list(map(operator.itemgetter(db_field), raws))
    except KeyError:  # a result without it
        values = [raw.get(db_field) for raw in raws]
    kinds = set(map(type, values))
    if not kinds <= _ID_OR_NONE:
        return None
    if NoneType in kinds:
        values = [value for value in values if value is not None]
    return dict(zip(map(object_id_bytes, values), values, strict=True))


async def _find_joined(
    wanted: _JoinWanted,
    wheres: dict[tuple[type[Any], str], _Where | None],
    session: AsyncClientSession | None,
) -> dict[_Where | None, dict[bytes, Any]]:
    """The documents a join wants, one query per collection and class
    hierarchy: per collection, ``ObjectId.binary`` -> document (missing ids
    are absent). ``wheres``: where each group of ``wanted`` points."""
    found: dict[_Where | None, dict[bytes, Any]] = {}
    queries = _queries(((*group, ids) for group, ids in wanted.items()), dict, wheres)
    for (where, _), wanted_by in queries.items():
        ids, documents = await _query(where, wanted_by, session)
        binaries = map(object_id_bytes, ids)  # an $in of ObjectIds
        found.setdefault(where, {}).update(zip(binaries, documents, strict=True))
    return found


def _any_missing(
    wanted: _JoinWanted,
    wheres: dict[tuple[type[Any], str], _Where | None],
    found: dict[_Where | None, dict[bytes, Any]],
) -> bool:
    """Whether a join looked up a document it did not find."""
    for group, ids in wanted.items():
        where = wheres[group]
        if where is not None and not ids.keys() <= found.get(where, {}).keys():
            return True
    return False


def _mark_joined_missing(
    cls: type[Any],
    documents: list,
    groups: list[tuple[type[Any], str]],
    wanted: _JoinWanted,
    wheres: dict[tuple[type[Any], str], _Where | None],
    found: dict[_Where | None, dict[bytes, Any]],
) -> None:
    """Mark missing the references the join looked up and did not find."""
    for field, group in zip(plain_references(cls), groups, strict=True):
        ids, by_binary = wanted[group], found.get(wheres[group], {})
        name = field.name
        for document in documents:
            data = document._data
            value = data.get(name)
            if type(value) is DBRef and isinstance(value.id, ObjectId):
                binary = object_id_bytes(value.id)
                if binary in ids and binary not in by_binary:
                    _mark_missing(data, name, group[0], name)


def _loaded_by_id(
    wanted: _JoinWanted,
    wheres: dict[tuple[type[Any], str], _Where | None],
    found: dict[_Where | None, dict[bytes, Any]],
) -> _Loaded:
    """What a join found, as the walk keeps it for the levels below."""
    loaded: _Loaded = {}
    for group, ids in wanted.items():
        where = wheres[group]
        if where is not None:
            by_binary = found.get(where, {})
            known = loaded.setdefault(where, {})
            for binary, id_ in ids.items():
                known[id_] = by_binary.get(binary)
    return loaded


async def _load_levels(
    level: list,
    loaded: _Loaded,
    levels: int,
    top: list | tuple,
    source: _Where | None = None,
    session: AsyncClientSession | None = None,
) -> None:
    """Load ``levels`` levels of references, from those of the ``level`` documents;
    the ``top`` documents (from ``source``, if known) are reused where referenced.
    A fraction counts as a level (``max_depth=1.5`` as 2), as MongoEngine's
    select_related() compares its depths with it; ``math.inf``, every level
    (until one has no references left to load)."""
    depth = 0
    while depth < levels:
        depth += 1
        level = await _load_level(level, loaded, top, source, session)
        if not level:
            break


async def _load_level(
    level: list,
    loaded: _Loaded,
    top: list | tuple,
    source: _Where | None,
    session: AsyncClientSession | None,
) -> list:
    """Load the references of the ``level`` documents and put them in place;
    the ``top`` documents are reused where referenced. Returns the new ones."""
    with gc_paused():
        wanted = _references_in(level)
        # A collection first wanted now: the top documents in it are reused.
        places = {_where(*group) for group in wanted} - loaded.keys() - {None}
        _remember(top, source, places, loaded)
    if not wanted:
        return []
    new_documents = await _load_missing(wanted, loaded, session)
    with gc_paused():
        _fill_all(wanted, loaded)
    return new_documents


def _remember(
    documents: list | tuple,
    source: _Where | None,
    places: set[_Where | None],
    loaded: _Loaded,
) -> None:
    """Index the documents living in the referenced places, to reuse them.

    They all live in ``source`` when it is known (a query's results, read with
    ``using()`` perhaps); otherwise each lives where its class says, unless
    it was moved with ``switch_db`` or ``switch_collection``.
    """
    if not places or (source is not None and source not in places):
        return
    by_class: dict[type[Any], _Where | None] = {}
    for document in documents:
        where = source or _home(document, by_class)
        if where in places:
            loaded.setdefault(where, {})[document.pk] = document


def _home(document: Any, by_class: dict[type[Any], _Where | None]) -> _Where | None:
    """Where ``document`` lives (None: not a document of an async alias)."""
    if "_get_collection" in vars(document):  # moved, by switch_db or the like
        return _where_of(
            on_running_loop(document._get_collection(), document._db_alias())
        )
    cls = type(document)
    if cls not in by_class:
        top_level = issubclass(cls, mongoengine.Document)
        by_class[cls] = _where(cls, cls._get_collection_name()) if top_level else None
    return by_class[cls]


async def _load_missing(
    wanted: dict[tuple[type[Any], str], Any],
    loaded: _Loaded,
    session: AsyncClientSession | None,
) -> list:
    """Query, per collection, the ids not looked for yet; returns the new documents."""
    missing = []
    for (cls, collection_name), ids in wanted.items():
        known = loaded.get(_where(cls, collection_name), {})
        missing.append(
            (cls, collection_name, [i for i in ids if _unknown(known, i, cls)])
        )
    new_documents: list = []
    for (where, _), wanted_by in _queries(missing, set).items():
        known = loaded.setdefault(where, {})
        _, documents = await _query(where, wanted_by, session)
        for document in documents:
            known[document.pk] = document
            new_documents.append(document)
        for ids in wanted_by.values():
            for id_ in ids:
                known.setdefault(id_, None)
    return new_documents


def _unknown(known: dict[Any, Any], id_: Any, cls: type[Any]) -> bool:
    """Whether ``id_`` is still to be queried for ``cls``: not looked for yet,
    or loaded as a class that is not ``cls`` (a document without ``_cls``)."""
    if id_ not in known:
        return True
    document = known[id_]
    return document is not None and not isinstance(document, cls)


def _fill_all(wanted: _Wanted, loaded: _Loaded, mark_missing: bool = True) -> None:
    """Put the loaded documents in place; the references looked up and not
    found are marked missing (unless ``mark_missing`` is false: left as they are)."""
    for group, ids in wanted.items():
        found = loaded.get(_where(*group), {})
        for id_, places in ids.items():
            document = found.get(id_)
            if document is not None:
                for container, key in places:
                    _fill(container, key, document)
            elif mark_missing and id_ in found:  # looked up, and missing
                for container, key in places:
                    _mark_missing(container, key, group[0])


def _mark_missing(
    container: Any, key: Any, cls: type[Any], name: str | None = None
) -> None:
    """Leave the reference at ``container[key]``, whose document was looked up
    and not found, as a proxy marked missing: reading an attribute of it raises
    ``DoesNotExist``, as MongoEngine's read of such a reference does (a proxy
    asking to be awaited would hide that it was looked for). It still stands
    for the stored reference, so saving writes what was stored."""
    if key is _CACHE:  # a lazy reference: its fetch raises DoesNotExist itself
        return
    current = read_at(container, key)
    if isinstance(current, AsyncReferenceProxy):
        current.mark_missing()
    elif type(current) is DBRef or (
        isinstance(current, dict) and not isinstance(current, BaseDocument)
    ):
        if name is None:  # a list's or dict's path; else the field reading
            # the proxy names it (a document's field, or a container not read yet)
            name, _ = container_location(container)
        # Held weakly where it can be (a BaseList, a BaseDict): no cycle. A
        # document's field needs no slot: its read puts a fetched document there.
        slot = Slot(container, key).weakly()
        held = slot if type(slot._container) is weakref.ReferenceType else None
        proxy: AsyncReferenceProxy[Any] = AsyncReferenceProxy(current, cls, name, held)
        proxy.mark_missing()
        write_at(container, key, proxy)


# Per query, the ids each class wants: a set of ids, or ObjectId.binary -> ObjectId.
_WantedBy = dict[type[Any], set | dict[bytes, ObjectId]]


def _queries(
    groups: Iterable[tuple[type[Any], str, Iterable]],
    ids_type: type[set] | type[dict],
    wheres: dict[tuple[type[Any], str], _Where | None] | None = None,
) -> dict[tuple[_Where, type[Any]], _WantedBy]:
    """The ids of ``(class, collection, ids)`` groups, gathered per query: one
    per collection (of a database) and class hierarchy; unrelated classes
    sharing a collection get a query each, as in MongoEngine. Async classes
    only. ``wheres``, if given: :func:`_where` of each ``(class, collection)``."""
    queries: dict[tuple[_Where, type[Any]], _WantedBy] = {}
    for cls, collection_name, ids in groups:
        if wheres is None:
            where = _where(cls, collection_name)
        else:
            where = wheres[cls, collection_name]
        if where is not None and ids:
            wanted_by = queries.setdefault((where, _top_class(cls)), {})
            wanted_by.setdefault(cls, ids_type()).update(ids)
    return queries


def _top_class(cls: type[Any]) -> type[Any]:
    """The topmost concrete class of ``cls``'s hierarchy (``cls`` if abstract)."""
    concrete: list[Any] = [
        base
        for base in cast(Any, cls).__mro__
        if issubclass(base, mongoengine.Document) and not base._meta.get("abstract")
    ]
    return concrete[-1] if concrete else cls


async def _query(
    where: _Where, wanted_by: _WantedBy, session: AsyncClientSession | None
) -> tuple[list, list]:
    """One query for what classes of one hierarchy want in ``where``: the
    stored ids found, and each document built as the class that wanted it (the
    most specific, if several did); a stored ``_cls`` still picks the
    document's own class."""
    classes = sorted(wanted_by, key=lambda cls: len(cls.__mro__))
    ids = [id_ for cls in classes for id_ in _ids(wanted_by[cls])]
    raws = await _find_raws(classes[0], where, ids, session)  # all bound to ``where``
    found = [raw["_id"] for raw in raws]  # before the loaders own the raws
    if len(classes) == 1:
        return found, materialise_all(loader(classes[0], owned=True), raws)
    class_of = {id_: cls for cls in classes for id_ in _ids(wanted_by[cls])}
    loaders = {cls: loader(cls, owned=True) for cls in classes}
    return found, materialise_all(lambda raw: loaders[class_of[raw["_id"]]](raw), raws)


def _ids(ids: set | dict[bytes, ObjectId]) -> Iterable:
    return ids.values() if type(ids) is dict else ids


def _where(cls: type[Any], collection_name: str) -> _Where | None:
    """Where a reference to ``cls`` in ``collection_name`` points now: in the
    database ``cls`` is bound to (None: ``cls`` is not on an async alias)."""
    if not is_async_class(cls):
        return None
    database = cls._get_db()
    return id(database.client), database.name, collection_name


def _where_of(collection: AsyncCollection) -> _Where:
    database = collection.database
    return id(database.client), database.name, collection.name


async def _find_raws(
    cls: type[Any], where: _Where, ids: Iterable, session: AsyncClientSession | None
) -> list[dict]:
    """The raw documents with these ids in ``where`` (a collection of the
    database ``cls`` is bound to), in one reply."""
    *_, collection_name = where
    operation = await reach(cls, session)
    collection = operation.collection
    if collection.name != collection_name:
        collection = collection.database[collection_name]
    cursor = collection.find(
        {"_id": {"$in": list(ids)}},
        batch_size=WHOLE_RESULT,
        session=operation.session,
    )
    return await read_list(cursor)
