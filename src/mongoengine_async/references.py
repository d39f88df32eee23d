"""References on async aliases: proxies, lazy references and batch loading.

Reading a reference never does I/O here. An unloaded reference reads as an
:class:`AsyncReferenceProxy` (a ``DBRef``, so it is stored and compared as the
reference it stands for); awaiting it loads the document. :func:`select_related`
loads the references of many documents with one query per collection and level.
"""

from __future__ import annotations

import asyncio
import copy
import weakref
from collections.abc import Iterable
from operator import methodcaller
from typing import Any

import mongoengine
from bson import SON, DBRef, ObjectId
from mongoengine.base import BaseDocument, ComplexBaseField, get_document
from mongoengine.base.common import _document_registry
from mongoengine.base.datastructures import BaseDict, BaseList
from mongoengine.base.datastructures import LazyReference as MongoEngineLazyReference
from mongoengine.connection import DEFAULT_CONNECTION_NAME
from pymongo.asynchronous.collection import AsyncCollection

from mongoengine_async.connection import on_running_loop
from mongoengine_async.context import current_session, dereference_disabled
from mongoengine_async.errors import AsyncUsageError
from mongoengine_async.guards import require_async
from mongoengine_async.loading import (
    WHOLE_RESULT,
    from_son,
    gc_paused,
    joining_loader,
    loader,
    materialise_all,
    plain_references,
)

__all__ = ("AsyncReferenceProxy", "LazyReference", "load_related", "select_related")


def is_async_class(cls: Any) -> bool:
    """Whether ``cls`` is one of our documents bound (now) to an async alias."""
    is_async = getattr(cls, "_is_async", None)
    return is_async is not None and is_async()


def alias_of(cls: type) -> str:
    """The alias ``cls`` is bound to now (ours honour ``async_switch_db``)."""
    db_alias = getattr(cls, "_db_alias", None)
    if db_alias is None:
        return cls._meta.get("db_alias", DEFAULT_CONNECTION_NAME)
    return db_alias()


def owner_class(instance: BaseDocument) -> type:
    """The class of the top-level document holding ``instance`` (of the
    outermost one still alive: an embedded document holds its owner weakly)."""
    cls = instance.__class__
    try:
        while not issubclass(cls, mongoengine.Document):
            instance = getattr(instance, "_instance", None)
            if instance is None:
                break
            cls = instance.__class__
    except ReferenceError:  # that owner is gone: its weak proxy is dead
        pass
    return cls


def dereference_allowed(instance: BaseDocument, name: str) -> bool:
    """False inside ``async_no_dereference`` or MongoEngine's ``no_dereference``."""
    field = instance._fields.get(name)
    if field is not None and not field._auto_dereference:
        return False
    return not dereference_disabled(owner_class(instance))


class Slot:
    """A place holding a reference: a key of a dict, an index of a list or a
    field of a document (its key in the document's ``_data``).

    Replacing its value goes around MongoEngine's change tracking: loading a
    reference changes nothing that would be saved.
    """

    __slots__ = ("_container", "key")

    def __init__(self, container: Any, key: Any):
        self._container = container
        self.key = key

    @property
    def container(self) -> Any:
        """The list or dict (None once a weakly held one is gone)."""
        container = self._container
        if type(container) is weakref.ReferenceType:
            container = container()
        if isinstance(container, BaseDocument):
            return container._data
        return container

    def weakly(self) -> Slot:
        """This slot holding its list, dict or document weakly when it can
        (documents and MongoEngine's BaseList and BaseDict can): a proxy
        remembering where it sits then makes no reference cycle with what
        holds it."""
        try:
            return Slot(weakref.ref(self._container), self.key)
        except TypeError:
            return self

    def get(self) -> Any:
        container = self.container
        return None if container is None else _read(container, self.key)

    def put(self, value: Any) -> None:
        container = self.container
        if container is not None:
            _write(container, self.key, value)


def _read(container: list | dict, key: Any) -> Any:
    """``container[key]`` without MongoEngine's BaseList/BaseDict hooks."""
    if isinstance(container, list):
        return list.__getitem__(container, key)
    return dict.get(container, key)


def _write(container: list | dict, key: Any, value: Any) -> None:
    """``container[key] = value`` without MongoEngine's change tracking."""
    if isinstance(container, list):
        list.__setitem__(container, key, value)
    else:
        dict.__setitem__(container, key, value)


def slots(container: Any) -> list[Slot]:
    """The slots of a list or of a dict (not of a stored generic reference)."""
    if isinstance(container, list):
        return [Slot(container, index) for index in range(len(container))]
    if isinstance(container, dict) and not isinstance(container, SON):
        return [Slot(container, key) for key in list(container)]
    return []


def install_proxy(slot: Slot, stored: Any, cls: type, name: str) -> AsyncReferenceProxy:
    """Put a proxy for the reference ``stored`` in ``slot`` and return it; once
    fetched, the proxy puts the document there (if the container still exists)."""
    proxy = AsyncReferenceProxy(stored, cls, name, slot.weakly())
    slot.put(proxy)
    return proxy


def proxy_items(container: Any, item_field: Any, name: str) -> None:
    """Replace the unloaded references in a (nested) container by proxies."""
    for slot in slots(container):
        item = slot.get()
        if isinstance(item, AsyncReferenceProxy | MongoEngineLazyReference):
            continue
        target = _unloaded_target(item_field, item)
        if target is not None and is_async_class(target):
            install_proxy(slot, item, target, name)
        elif isinstance(item_field, ComplexBaseField) or item_field is None:
            proxy_items(_tracked(slot, item), getattr(item_field, "field", None), name)


def _tracked(slot: Slot, item: Any) -> Any:
    """A nested plain list/dict, wrapped in place as MongoEngine's BaseList or
    BaseDict would wrap it on first access (``__getitem__`` copies it), so the
    proxies put into it are the ones read later and are replaced in place."""
    if isinstance(item, list) and not isinstance(item, BaseList):
        wrapper = BaseList
    elif isinstance(item, dict) and not isinstance(item, BaseDict | SON):
        wrapper = BaseDict
    else:
        return item
    container = slot.container
    item = wrapper(item, None, f"{getattr(container, '_name', None)}.{slot.key}")
    item._instance = getattr(container, "_instance", None)
    slot.put(item)
    return item


def _unloaded_target(field: Any, value: Any) -> type | None:
    """The class of an unloaded (Generic, Cached)ReferenceField value, or of
    a DBRef (or generic reference) in an untyped container; else None."""
    if field is None:
        return _untyped_class(value)
    if isinstance(field, mongoengine.GenericLazyReferenceField):
        return None
    if isinstance(field, mongoengine.GenericReferenceField):
        return _generic_class(value)
    if isinstance(field, mongoengine.CachedReferenceField):
        cached = isinstance(value, dict | AsyncReferenceProxy)
        return field.document_type if cached else None
    if isinstance(field, mongoengine.ReferenceField) and isinstance(value, DBRef):
        return reference_class(field, value)
    return None


async def load_reference(cls: type, dbref: DBRef, name: str) -> Any:
    """Load the document ``dbref`` points to, as an instance of ``cls``."""
    collection = await cls._async_get_collection()
    database = collection.database
    raw = await database[dbref.collection].find_one(
        {"_id": dbref.id}, session=current_session(database.client)
    )
    if raw is None:
        raise cls.DoesNotExist(
            f"Trying to dereference unknown document "
            f"{DBRef(dbref.collection, dbref.id)!r} (reference {name!r})"
        )
    return from_son(cls, raw)


def _stored_value(stored: Any) -> Any:
    return stored


class AsyncReferenceProxy(DBRef):
    """An unloaded reference: ``await`` it (or ``fetch()``) for the document.

    ``id``/``pk`` need no I/O; it equals the referenced document, its id and its
    DBRef; the loaded document is cached and put in place of the proxy.
    """

    def __init__(
        self, stored: Any, document_cls: type, name: str, slot: Slot | None = None
    ):
        dbref = _dbref(stored, document_cls)
        if type(dbref) is DBRef:  # its pickle state: collection, id, database, extras
            self.__setstate__(dbref.__getstate__())
        else:
            extra = {k: v for k, v in dbref.as_doc().items() if not k.startswith("$")}
            super().__init__(dbref.collection, dbref.id, dbref.database, **extra)
        self.__dict__.update(
            stored=stored,
            document_type=document_cls,
            _name=name,
            _slot=slot,
            _document=None,
            _lock=None,
        )

    @property
    def pk(self) -> Any:
        return self.id

    def as_dbref(self) -> DBRef:
        """The plain DBRef this proxy stands for."""
        return _dbref(self.stored, self.document_type)

    @property
    def fetched(self) -> bool:
        """Whether the document has been loaded."""
        return self._document is not None

    async def fetch(self) -> Any:
        """The referenced document (one query, then cached)."""
        if self._document is None:
            if self._lock is None:
                self._lock = asyncio.Lock()
            async with self._lock:
                if self._document is None:
                    document = await load_reference(
                        self.document_type, self, self._name
                    )
                    self._document = document
                    if self._slot is not None and self._slot.get() is self:
                        self._slot.put(document)
        return self._document

    async_fetch = fetch

    def __await__(self):
        return self.fetch().__await__()

    def __eq__(self, other: Any) -> bool:
        if isinstance(other, mongoengine.Document):
            return other.pk == self.id and (
                other._get_collection_name() == self.collection
            )
        if isinstance(other, DBRef):
            return (other.collection, other.id) == (self.collection, self.id)
        return other == self.id

    def __ne__(self, other: Any) -> bool:
        return not self == other

    def __hash__(self) -> int:
        return hash(self.id)

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_"):
            # Private names (also during copy/unpickling, before __init__ ran).
            raise AttributeError(name)
        try:
            return super().__getattr__(name)
        except AttributeError:
            pass
        raise AttributeError(
            f"{name!r} is not available on the unloaded reference "
            f"{self._name!r}: `await` it (or its fetch()) to get the document"
        )

    def __reduce__(self) -> tuple:
        # Copies and pickles of a proxy are the stored reference it stands for.
        return _stored_value, (self.stored,)

    def __deepcopy__(self, memo: dict) -> Any:
        return copy.deepcopy(self.stored, memo)

    def __repr__(self) -> str:
        state = "fetched" if self._document is not None else "unfetched"
        return f"<AsyncReferenceProxy: {self._name} ({state})>"


class LazyReference(MongoEngineLazyReference):
    """MongoEngine's LazyReference with ``async_fetch`` for async aliases.

    On an async alias ``fetch()`` and passthrough attribute access work only
    once the document is loaded; otherwise they raise, naming ``async_fetch``.
    """

    __slots__ = ("_lock",)

    async def async_fetch(self, force: bool = False) -> Any:
        """The referenced document, loaded once (again with ``force=True``).

        Concurrent fetches of this reference send one query: the others wait
        for it, as with an :class:`AsyncReferenceProxy`.
        """
        cls = self.document_type
        if not is_async_class(cls):
            require_async(alias_of(cls), repr(self), "async_fetch", "reference.fetch()")
        if self._cached_doc is None or force:
            lock = self._fetch_lock()
            try:
                async with lock:
                    if self._cached_doc is None or force:
                        self._cached_doc = await load_reference(cls, self, cls.__name__)
            finally:
                self._drop_lock(lock)
        return self._cached_doc

    def _fetch_lock(self) -> asyncio.Lock:
        """The lock of the fetch in flight, made by the first fetch."""
        try:  # not ``self._lock``: MongoEngine's __getattr__ may fetch
            lock = object.__getattribute__(self, "_lock")
        except AttributeError:  # slots start unset
            lock = None
        if lock is None:
            lock = self._lock = asyncio.Lock()
        return lock

    def _drop_lock(self, lock: asyncio.Lock) -> None:
        """Forget ``lock`` once free: a lock used by waiters is bound to their
        event loop, and a reference is copied and pickled with its slots."""
        if self._lock is lock and not lock.locked():
            self._lock = None

    def fetch(self, force: bool = False) -> Any:
        if is_async_class(self.document_type):
            if self._cached_doc is not None and not force:
                return self._cached_doc
            raise AsyncUsageError(
                f"{self!r}.fetch() would block the event loop: "
                f"use `await reference.async_fetch()` instead"
            )
        return super().fetch(force)

    @classmethod
    def of(cls, value: Any) -> Any:
        """``value`` as our LazyReference (other values are returned as they are)."""
        if isinstance(value, MongoEngineLazyReference) and not isinstance(value, cls):
            return cls(
                value.document_type,
                value.pk,
                cached_doc=value._cached_doc,
                passthrough=value.passthrough,
            )
        return value


# -- select_related ---------------------------------------------------------------

# The references found at one level: per (class, collection), the places each
# id goes to. A place is ``(container, key)`` for ``container[key]``, or
# ``(lazy reference, _CACHE)`` for the cache of a lazy reference.
_Wanted = dict[tuple[type, str], dict[Any, list[tuple[Any, Any]]]]
_CACHE = object()


def _references_in(documents: Iterable[BaseDocument]) -> _Wanted:
    wanted: _Wanted = {}
    for document in documents:
        _walk_document(document, wanted)
    return wanted


def _want(wanted: _Wanted, cls: type, dbref: DBRef, container: Any, key: Any) -> None:
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


_SCALAR_FIELDS = (
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
_Referring = list[tuple[str, Any, type | None]]
_referring_fields: dict[type, _Referring] = {}


def _fields_that_may_refer(document: BaseDocument) -> _Referring:
    """The fields of the document that can hold a reference, each with the
    class a plain stored DBRef in it points to, when the field alone says."""
    if document._dynamic:  # a dynamic document's fields are its own
        return _referring(document._fields)
    return _referring_fields_of(type(document))


def _referring_fields_of(cls: type) -> _Referring:
    fields = _referring_fields.get(cls)
    if fields is None:
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
    if isinstance(field, _SCALAR_FIELDS):
        return False
    if isinstance(field, ComplexBaseField) and field.field is not None:
        return _may_refer(field.field)
    return True


def _plain_target(field: Any) -> type | None:
    """The class of a ReferenceField to a concrete class (its DBRefs carry no cls)."""
    if not isinstance(field, mongoengine.ReferenceField):
        return None
    document_type = field.document_type
    return None if document_type._meta.get("abstract") else document_type


def _walk_value(
    value: Any, field: Any, container: Any, key: Any, wanted: _Wanted
) -> None:
    if isinstance(value, MongoEngineLazyReference):
        if value._cached_doc is None:
            _want(wanted, value.document_type, value, value, _CACHE)
    elif isinstance(field, mongoengine.GenericLazyReferenceField):
        if isinstance(value, dict):
            # Keep the reference whose cache gets filled: reads return it.
            reference = LazyReference.of(field.build_lazyref(value))
            _write(container, key, reference)
            _walk_value(reference, None, container, key, wanted)
    elif isinstance(value, BaseDocument):
        if not isinstance(value, mongoengine.Document):
            _walk_document(value, wanted)
    elif (target := _unloaded_target(field, value)) is not None:
        _want(wanted, target, _dbref(value, target), container, key)
    elif isinstance(field, ComplexBaseField) or field is None:
        _walk_container(value, getattr(field, "field", None), wanted)


def _walk_container(value: Any, item_field: Any, wanted: _Wanted) -> None:
    for slot in slots(value):
        item = slot.get()
        if item is not None:
            _walk_value(item, item_field, slot.container, slot.key, wanted)


def _fill(container: Any, key: Any, document: Any) -> None:
    """Put the loaded document where its reference was; a proxy there is marked
    fetched too, so code still holding it does not query again."""
    if key is _CACHE:
        container._cached_doc = document
        return
    current = _read(container, key)
    _write(container, key, document)
    if isinstance(current, AsyncReferenceProxy):
        current._document = document


def _dbref(value: Any, cls: type) -> DBRef:
    """The DBRef of a stored reference to ``cls``: generic ones keep it under
    ``_ref``; a CachedReferenceField stores ``_id`` and the cached fields."""
    if not isinstance(value, dict):
        return value
    if "_ref" in value:
        return value["_ref"]
    id_field = cls._fields[cls._meta["id_field"]]
    return DBRef(cls._get_collection_name(), id_field.to_python(value["_id"]))


def _untyped_class(value: Any) -> type | None:
    """The class a reference in an untyped ListField/DictField is loaded as:
    a generic one names it; a DBRef's is found by its collection, as
    MongoEngine's DeReference finds it (a stored ``_cls`` still wins)."""
    if type(value) is DBRef:
        return _collection_class(value.collection)
    if isinstance(value, AsyncReferenceProxy):
        return value.document_type
    if isinstance(value, dict) and "_ref" in value:
        return _generic_class(value)
    return None


def _collection_class(collection: str) -> type | None:
    """The class named after ``collection`` (``ut_author``: ``UtAuthor``), as
    in MongoEngine; else the topmost registered class stored in it."""
    name = "".join(part.capitalize() for part in collection.split("_"))
    cls = _document_registry.get(name)
    if cls is not None and cls._get_collection_name() == collection:
        return cls
    stored_there = [
        cls
        for cls in _document_registry.values()
        if issubclass(cls, mongoengine.Document)
        and not cls._meta.get("abstract")
        and cls._get_collection_name() == collection
    ]
    return min(stored_there, key=lambda cls: len(cls.__mro__), default=None)


def _generic_class(value: Any) -> type | None:
    if isinstance(value, AsyncReferenceProxy):
        return value.document_type
    if isinstance(value, dict) and "_cls" in value:
        return get_document(value["_cls"])
    return None


def reference_class(field: Any, dbref: DBRef) -> type:
    """The class a ReferenceField value points to (``cls`` in the DBRef wins)."""
    if isinstance(dbref, AsyncReferenceProxy):
        return dbref.document_type
    document_type = field.document_type
    if not document_type._meta.get("abstract"):
        return document_type  # only references to abstract classes carry cls
    class_name = dbref.as_doc().get("cls")
    return get_document(class_name) if class_name else document_type


# Where referenced documents live: (id of the client, database, collection).
_Where = tuple[int, str, str]
# The documents loaded so far: where -> id -> document (None: the id was
# looked for and is missing).
_Loaded = dict[_Where, dict[Any, Any]]


async def select_related(documents: list, max_depth: int = 1) -> list:
    """Load every reference of ``documents``, ``max_depth`` levels deep.

    One query per referenced collection per level, whatever the number of
    documents; documents already loaded are reused, so cycles terminate.
    Missing targets are left as proxies that raise ``DoesNotExist`` on fetch.
    """
    await _load_levels(list(documents), {}, max_depth, documents)
    return documents


async def load_related(
    cls: type,
    raws: list,
    origin: AsyncCollection | None,
    max_depth: int = 1,
    auto_dereference: bool = True,
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
    if join is None:
        documents = materialise_all(loader(cls, auto_dereference), raws)
        level, loaded, levels = list(documents), {}, max_depth
    else:
        groups, wanted = join
        found = await _find_joined(wanted)
        load = loader(cls)

        def fallback(raw: Any) -> Any:
            """A result the joining loader does not take is loaded as usual."""
            document = load(raw)
            stragglers.append(document)
            return document

        finders = [found.get(_where(*group), {}).get for group in groups]
        documents = materialise_all(joining_loader(cls, finders, fallback), raws)
        if not stragglers and max_depth == 1:
            return documents
        loaded = _loaded_by_id(wanted, found)
        level = [document for by_id in found.values() for document in by_id.values()]
        levels = max_depth - 1
    top, source = ((), None) if origin is None else (documents, _where_of(origin))
    if stragglers:
        level += await _load_level(stragglers, loaded, top, source)
    await _load_levels(level, loaded, levels, top, source)
    return documents


# The ids a join wants, per (class, collection): ``ObjectId.binary`` -> ObjectId.
_JoinWanted = dict[tuple[type, str], dict[bytes, ObjectId]]


def _join(cls: type, raws: list) -> tuple[list[tuple[type, str]], _JoinWanted] | None:
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
        ids = _stored_ids(raws, field.db_field)
        if ids is None:
            return None
        wanted.setdefault(group, {}).update(ids)
    return groups, wanted


def _stored_ids(raws: list, db_field: str) -> dict[bytes, ObjectId] | None:
    """The ObjectIds stored under ``db_field``, by their bytes
    (``ObjectId.binary``, hashed in C); None if any is stored otherwise."""
    ids: dict[bytes, ObjectId] = {}
    for value in map(methodcaller("get", db_field), raws):
        if type(value) is ObjectId:
            ids[value.binary] = value
        elif value is not None:
            return None
    return ids


async def _find_joined(wanted: _JoinWanted) -> dict[_Where, dict[bytes, Any]]:
    """The documents a join wants, one query per collection and class
    hierarchy: per collection, ``ObjectId.binary`` -> document (missing ids
    are absent)."""
    found: dict[_Where, dict[bytes, Any]] = {}
    queries = _queries(((*group, ids) for group, ids in wanted.items()), dict)
    for (where, _), wanted_by in queries.items():
        raws, documents = await _query(where, wanted_by)
        binaries = [raw["_id"].binary for raw in raws]  # an $in of ObjectIds
        found.setdefault(where, {}).update(zip(binaries, documents, strict=True))
    return found


def _loaded_by_id(
    wanted: _JoinWanted, found: dict[_Where, dict[bytes, Any]]
) -> _Loaded:
    """What a join found, as the walk keeps it for the levels below."""
    loaded: _Loaded = {}
    for group, ids in wanted.items():
        where = _where(*group)
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
) -> None:
    """Load ``levels`` levels of references, from those of the ``level`` documents;
    the ``top`` documents (from ``source``, if known) are reused where referenced."""
    for _ in range(levels):
        level = await _load_level(level, loaded, top, source)
        if not level:
            break


async def _load_level(
    level: list, loaded: _Loaded, top: list | tuple, source: _Where | None
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
    new_documents = await _load_missing(wanted, loaded)
    with gc_paused():
        _fill_all(wanted, loaded)
    return new_documents


def _remember(
    documents: list | tuple, source: _Where | None, places: set[_Where], loaded: _Loaded
) -> None:
    """Index the documents living in the referenced places, to reuse them.

    They all live in ``source`` when it is known (a query's results, read with
    ``using()`` perhaps); otherwise each lives where its class says, unless
    it was moved with ``switch_db`` or ``switch_collection``.
    """
    if not places or (source is not None and source not in places):
        return
    by_class: dict[type, _Where | None] = {}
    for document in documents:
        where = source or _home(document, by_class)
        if where in places:
            loaded.setdefault(where, {})[document.pk] = document


def _home(document: Any, by_class: dict[type, _Where | None]) -> _Where | None:
    """Where ``document`` lives (None: not a document of an async alias)."""
    if "_get_collection" in vars(document):  # moved, by switch_db or the like
        return _where_of(on_running_loop(document._get_collection()))
    cls = type(document)
    if cls not in by_class:
        top_level = issubclass(cls, mongoengine.Document)
        by_class[cls] = _where(cls, cls._get_collection_name()) if top_level else None
    return by_class[cls]


async def _load_missing(wanted: dict[tuple[type, str], Any], loaded: _Loaded) -> list:
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
        _, documents = await _query(where, wanted_by)
        for document in documents:
            known[document.pk] = document
            new_documents.append(document)
        for ids in wanted_by.values():
            for id_ in ids:
                known.setdefault(id_, None)
    return new_documents


def _unknown(known: dict[Any, Any], id_: Any, cls: type) -> bool:
    """Whether ``id_`` is still to be queried for ``cls``: not looked for yet,
    or loaded as a class that is not ``cls`` (a document without ``_cls``)."""
    if id_ not in known:
        return True
    document = known[id_]
    return document is not None and not isinstance(document, cls)


def _fill_all(wanted: _Wanted, loaded: _Loaded) -> None:
    for group, ids in wanted.items():
        found = loaded.get(_where(*group), {})
        for id_, places in ids.items():
            document = found.get(id_)
            if document is not None:
                for container, key in places:
                    _fill(container, key, document)


# Per query, the ids each class wants: a set of ids, or ObjectId.binary -> ObjectId.
_WantedBy = dict[type, set | dict[bytes, ObjectId]]


def _queries(
    groups: Iterable[tuple[type, str, Iterable]], ids_type: type[set] | type[dict]
) -> dict[tuple[_Where, type], _WantedBy]:
    """The ids of ``(class, collection, ids)`` groups, gathered per query: one
    per collection (of a database) and class hierarchy; unrelated classes
    sharing a collection get a query each, as in MongoEngine. Async classes only."""
    queries: dict[tuple[_Where, type], _WantedBy] = {}
    for cls, collection_name, ids in groups:
        where = _where(cls, collection_name)
        if where is not None and ids:
            wanted_by = queries.setdefault((where, _top_class(cls)), {})
            wanted_by.setdefault(cls, ids_type()).update(ids)
    return queries


def _top_class(cls: type) -> type:
    """The topmost concrete class of ``cls``'s hierarchy (``cls`` if abstract)."""
    concrete = [
        base
        for base in cls.__mro__
        if issubclass(base, mongoengine.Document) and not base._meta.get("abstract")
    ]
    return concrete[-1] if concrete else cls


async def _query(where: _Where, wanted_by: _WantedBy) -> tuple[list[dict], list]:
    """One query for what classes of one hierarchy want in ``where``: the raw
    documents, and each built as the class that wanted it (the most specific,
    if several did); a stored ``_cls`` still picks the document's own class."""
    classes = sorted(wanted_by, key=lambda cls: len(cls.__mro__))
    ids = [id_ for cls in classes for id_ in _ids(wanted_by[cls])]
    raws = await _find_raws(classes[0], where, ids)  # all are bound to ``where``
    if len(classes) == 1:
        return raws, materialise_all(loader(classes[0]), raws)
    class_of = {id_: cls for cls in classes for id_ in _ids(wanted_by[cls])}
    loaders = {cls: loader(cls) for cls in classes}
    return raws, materialise_all(lambda raw: loaders[class_of[raw["_id"]]](raw), raws)


def _ids(ids: set | dict[bytes, ObjectId]) -> Iterable:
    return ids.values() if type(ids) is dict else ids


def _where(cls: type, collection_name: str) -> _Where | None:
    """Where a reference to ``cls`` in ``collection_name`` points now: in the
    database ``cls`` is bound to (None: ``cls`` is not on an async alias)."""
    if not is_async_class(cls):
        return None
    database = cls._get_db()
    return id(database.client), database.name, collection_name


def _where_of(collection: AsyncCollection) -> _Where:
    database = collection.database
    return id(database.client), database.name, collection.name


async def _find_raws(cls: type, where: _Where, ids: Iterable) -> list[dict]:
    """The raw documents with these ids in ``where`` (a collection of the
    database ``cls`` is bound to), in one reply."""
    *_, collection_name = where
    collection = await cls._async_get_collection()
    if collection.name != collection_name:
        collection = collection.database[collection_name]
    cursor = collection.find(
        {"_id": {"$in": list(ids)}},
        batch_size=WHOLE_RESULT,
        session=current_session(collection.database.client),
    )
    return await cursor.to_list(None)
