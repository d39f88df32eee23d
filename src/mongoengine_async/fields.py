"""Field subclasses whose reads never do I/O when the data lives on an async alias.

On sync aliases every field behaves exactly as MongoEngine's. On async aliases
an unloaded reference reads as an :class:`AsyncReferenceProxy`, lazy references
come with ``async_fetch``, containers hand out proxies instead of running
MongoEngine's blocking dereference, and file fields read as
:class:`~mongoengine_async.gridfs.AsyncGridFSProxy` (see ``gridfs.py``). The other
names of ``mongoengine.fields`` are exported as MongoEngine's, so
``from mongoengine.fields import ...`` migrates by its module name alone.
"""

from __future__ import annotations

import functools
import operator
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any, NamedTuple, SupportsIndex

import mongoengine
from bson import DBRef, ObjectId
from mongoengine.base import BaseDocument, ComplexBaseField, get_document
from mongoengine.base.datastructures import BaseDict, BaseList, EmbeddedDocumentList
from mongoengine.base.datastructures import LazyReference as MongoEngineLazyReference
from mongoengine.errors import NotRegistered
from mongoengine.fields import (
    BinaryField,
    BooleanField,
    ComplexDateTimeField,
    DateField,
    DateTimeField,
    Decimal128Field,
    DecimalField,
    EmailField,
    EmbeddedDocumentField,
    EnumField,
    FloatField,
    GenericEmbeddedDocumentField,
    GeoJsonBaseField,
    GeoPointField,
    GridFSError,
    ImproperlyConfigured,
    IntField,
    LineStringField,
    LongField,
    MultiLineStringField,
    MultiPointField,
    MultiPolygonField,
    ObjectIdField,
    PointField,
    PolygonField,
    StringField,
    URLField,
    UUIDField,
)
from pymongo.asynchronous.client_session import AsyncClientSession

from mongoengine_async._compat import document_registry
from mongoengine_async.connection import has_async_connections, is_async_connection
from mongoengine_async.errors import AsyncUsageError
from mongoengine_async.from_bson import NONE_READERS, PROXY_TAKERS
from mongoengine_async.gridfs import (
    AsyncGridFSProxy,
    RefusesAsync,
    RefusesAsyncImage,
)
from mongoengine_async.guards import (
    guard_blocking_methods,
    is_plain_async_document,
    plain_document_error,
    require_async,
)
from mongoengine_async.images import AsyncImageGridFSProxy
from mongoengine_async.operation import plain_home, reach
from mongoengine_async.proxies import (
    AsyncReferenceProxy,
    FieldSlot,
    LazyReference,
    alias_of,
    as_stored,
    dereference_allowed,
    is_async_class,
    is_loaded_plain,
    is_plain_reference,
    loaded_id,
    loaded_plain,
    owner_class,
    proxy_items,
    reference_class,
    slots,
    walk_without_loading,
    write_at,
)
from mongoengine_async.same_named import mongoengine_attribute
from mongoengine_async.select_related import PLAIN_VALUE_TYPES
from mongoengine_async.sequences import SequenceField
from mongoengine_async.sync_reads import load_referenced

if TYPE_CHECKING:  # the mixins below are only used on MongoEngine's fields
    from mongoengine.base import ComplexBaseField as _FieldMixin
else:
    _FieldMixin = object

__all__: tuple[str, ...] = (
    "BinaryField",
    "BooleanField",
    "CachedReferenceField",
    "ComplexDateTimeField",
    "DateField",
    "DateTimeField",
    "Decimal128Field",
    "DecimalField",
    "DictField",
    "DynamicField",
    "EmailField",
    "EmbeddedDocumentField",
    "EmbeddedDocumentListField",
    "EnumField",
    "FileField",
    "FloatField",
    "GenericEmbeddedDocumentField",
    "GenericLazyReferenceField",
    "GenericReferenceField",
    "GeoJsonBaseField",
    "GeoPointField",
    "GridFSError",
    "GridFSProxy",
    "ImageField",
    "ImageGridFsProxy",
    "ImproperlyConfigured",
    "IntField",
    "LazyReferenceField",
    "LineStringField",
    "ListField",
    "LongField",
    "MapField",
    "MultiLineStringField",
    "MultiPointField",
    "MultiPolygonField",
    "ObjectIdField",
    "PointField",
    "PolygonField",
    "ReferenceField",
    "SequenceField",
    "SortedListField",
    "StringField",
    "URLField",
    "UUIDField",
)


# MongoEngine's reads of one reference, as its field classes defined them.
_MONGOENGINE_LAZY_LOADS = frozenset(
    vars(klass)["_lazy_load_ref"].__func__
    for klass in (
        mongoengine.ReferenceField,
        mongoengine.GenericReferenceField,
        mongoengine.CachedReferenceField,
    )
)


class _ProxyingReference(_FieldMixin):
    """Reads of an unloaded reference to an async class give a proxy."""

    def _lazy_load_ref(self, ref_cls: type[Any], dbref: DBRef) -> Any:
        """On a sync alias, MongoEngine's read of the reference, built by the
        loader; one patched on MongoEngine's field class since the package
        was imported is called instead, as MongoEngine's field calls it."""
        theirs = getattr(super(), "_lazy_load_ref", None)
        if theirs is None or theirs in _MONGOENGINE_LAZY_LOADS:
            return load_referenced(ref_cls, dbref)
        return theirs(ref_cls, dbref)

    @functools.cached_property
    def _concrete_type(self) -> type[Any] | None:
        """The class every stored DBRef of this field loads as, if one does."""
        return None

    def _target(self, value: Any) -> type[Any] | None:
        """The referenced class when ``value`` is an unloaded reference."""
        raise NotImplementedError

    def __get__(self, instance: BaseDocument | None, owner: type[Any]) -> Any:
        if instance is None:
            return self
        try:  # ``_data.get``, without a call: the field is mostly there
            value = instance._data[self.name]
        except KeyError:
            value = None
        # A loaded document is what MongoEngine's __get__ returns too: tested
        # first, as a batch (select_related) reads one a document. BaseDocument:
        # its isinstance is three times as fast as Document's (metaclass not type).
        if isinstance(value, BaseDocument):
            return value
        if type(value) is DBRef:  # as stored: mostly a first read
            # The plain case, settled with fewer checks than below: a class
            # every DBRef here loads as, on an async alias with nothing bound
            # in this task (its kept home), and MongoEngine's no_dereference
            # not active: the instance's field, as MongoEngine reads it (a
            # document loaded by ``queryset.no_dereference()`` has copies).
            target = self._concrete_type
            if (
                target is not None
                and plain_home(target, keep=False) is not None
                and instance._fields[self.name]._auto_dereference
            ):
                return self._proxy(instance, value, target)
        if value is None:  # (absent or null: MongoEngine's __get__ gives None too)
            return value
        if isinstance(value, AsyncReferenceProxy):
            if value.fetched:  # loaded since it was read: the document takes its place
                instance._data[self.name] = value._document
                return value._document
            if value._missing:  # marked missing by select_related
                self._read_missing(value)
            return value if dereference_allowed(instance, self.name) else value.stored
        target = self._target(value)
        if target is None or not is_async_class(target):
            if is_plain_async_document(target):
                where = f"{type(instance).__name__}.{self.name} refers to it"
                raise plain_document_error(target, where)
            return super().__get__(instance, owner)
        if not dereference_allowed(instance, self.name):
            return value
        return self._proxy(instance, value, target)

    def _read_missing(self, proxy: AsyncReferenceProxy[Any]) -> None:
        """Make ``proxy``, which select_related made when it marked the stored
        reference missing, read as one this field made: named by it."""
        proxy.name_if_unnamed(self.name)

    def _proxy(
        self, instance: BaseDocument, value: Any, target: type[Any]
    ) -> AsyncReferenceProxy[Any]:
        """A proxy for the reference ``value`` to ``target``, kept in
        ``instance``; once fetched it puts the document in its place."""
        slot = FieldSlot(instance, self.name)
        proxy: AsyncReferenceProxy[Any] = AsyncReferenceProxy(
            value, target, self.name, slot
        )
        instance._data[self.name] = proxy
        return proxy

    async def async_fetch(
        self, instance: BaseDocument, session: AsyncClientSession | None = None
    ) -> Any:
        """Load the referenced document (in ``session`` if given) and keep it
        in ``instance``."""
        self._require_async(instance)
        value = self.__get__(instance, type(instance))
        if isinstance(value, AsyncReferenceProxy):
            return await value.fetch(session)
        return value

    def _require_async(self, instance: BaseDocument) -> None:
        """Raise unless the referenced class (else the document's, when the
        reference is loaded or empty) is on an async alias: on a sync one the
        read would be MongoEngine's blocking dereference."""
        cls = self._target(instance._data.get(self.name)) or owner_class(instance)
        if not is_async_class(cls):
            target = f"{type(instance).__name__}.{self.name}"
            require_async(alias_of(cls), target, "async_fetch", f"document.{self.name}")


class ReferenceField(_ProxyingReference, mongoengine.ReferenceField):
    """MongoEngine's ReferenceField; on async aliases reads give proxies."""

    @functools.cached_property
    def _concrete_type(self) -> type[Any] | None:
        """The referenced class unless abstract (then a DBRef may name its
        subclass): what every stored DBRef of this field is loaded as."""
        document_type = self.document_type
        return None if document_type._meta.get("abstract") else document_type

    def _target(self, value: Any) -> type[Any] | None:
        if isinstance(value, DBRef) and not isinstance(value, MongoEngineLazyReference):
            return reference_class(self, value)
        return None

    def to_mongo(self, document: Any) -> Any:
        if isinstance(document, AsyncReferenceProxy):
            document = document.as_dbref()
        return super().to_mongo(document)

    def validate(self, value: Any) -> None:
        """MongoEngine's check (which takes any DBRef, so any proxy), and a
        proxy's class checked as MongoEngine checks a document's."""
        if isinstance(value, AsyncReferenceProxy) and not value._may_be(
            self.document_type
        ):
            self.error(
                "A ReferenceField only accepts DBRef, LazyReference, ObjectId "
                "or documents"
            )
        super().validate(value)


class GenericReferenceField(_ProxyingReference, mongoengine.GenericReferenceField):
    """MongoEngine's GenericReferenceField; on async aliases reads give proxies."""

    def _target(self, value: Any) -> type[Any] | None:
        if isinstance(value, dict) and "_cls" in value:
            return get_document(value["_cls"])
        return None

    def to_mongo(self, document: Any) -> Any:
        if isinstance(document, AsyncReferenceProxy):
            return document._generic_reference()
        return super().to_mongo(document)

    def validate(self, value: Any) -> None:
        if isinstance(value, AsyncReferenceProxy):  # (whose class may be unknown)
            value = value._generic_reference()
        super().validate(value)

    def _validate_choices(self, value: Any) -> None:
        if isinstance(value, AsyncReferenceProxy):
            value = value._generic_reference()
        super()._validate_choices(value)


# The update operators (as MongoEngine's transform names them when it
# prepares a value) whose value is stored, not matched.
_STORING_OPERATORS = frozenset({"set", "push", "pushAll", "addToSet", "setOnInsert"})


# How an untyped container stores a document given to it (MongoEngine uses a
# GenericReferenceField too).
_GENERIC_REFERENCE = GenericReferenceField()


def _is_bare_id(value: Any, cls: type[Any]) -> bool:
    """Whether ``value``, read from a CachedReferenceField to ``cls``, is the
    bare id of a document whose primary key is no ObjectId (as
    ``ReferenceField(dbref=False)`` stores it): no cache, reference, document
    or container (to a class keyed by ObjectId, validation refuses one)."""
    containers = dict | list | tuple | DBRef | ObjectId | BaseDocument
    if value is None or isinstance(value, containers):
        return False
    id_field = cls._fields.get(cls._meta.get("id_field"))
    return id_field is not None and not isinstance(id_field, mongoengine.ObjectIdField)


def _is_cache(value: Any) -> bool:
    """Whether ``value`` is a cache a CachedReferenceField stored: a dict
    holding the referenced id (MongoEngine's ``to_mongo`` always writes it)."""
    return isinstance(value, dict) and "_id" in value


def holds_cached_references(field: Any) -> bool:
    """Whether ``field`` is a CachedReferenceField or a list or dict of them
    (MongoEngine allows them nowhere else): the fields whose constructor
    values :func:`as_given` keeps."""
    while field is not None:
        if isinstance(field, CachedReferenceField):
            return True
        field = getattr(field, "field", None)
    return False


def _marked_in(value: Any, found: set[int]) -> set[int]:
    """``found``, with the ids of the values :func:`loaded_plain` marked that
    ``value`` holds (itself, or in its lists, tuples and dicts)."""
    if is_loaded_plain(value):
        found.add(id(value))
    elif isinstance(value, list | tuple):
        for item in value:
            _marked_in(item, found)
    elif isinstance(value, dict):
        for item in value.values():
            _marked_in(item, found)
    return found


def _unmarked(value: Any, given: set[int]) -> Any:
    """``value``, as a constructor converted it, with each plain reference or
    bare id marked as a load's (saved unchecked) but not given so (its id not
    in ``given``) unmarked: validation refuses it, as MongoEngine's does."""
    if is_loaded_plain(value):
        if id(value) in given:
            return value
        if not isinstance(value, DBRef):
            return ObjectId(value)
        stored = as_stored(value)  # (a bare id's: the id)
        if stored is not value:
            return stored
        return DBRef(value.collection, value.id, value.database, value._kwargs())
    if isinstance(value, list):
        items = [_unmarked(item, given) for item in value]
        return value if all(map(operator.is_, items, value)) else items
    if isinstance(value, dict):
        kept = {key: _unmarked(item, given) for key, item in value.items()}
        return value if all(map(operator.is_, kept.values(), value.values())) else kept
    return value


def as_given(given: Any, converted: Any) -> Any:
    """``converted``, what ``to_python`` made of ``given`` for a constructor,
    with what it marked as a load's unmarked; a value given marked (a load's)
    stays marked (see :func:`_unmarked`)."""
    return _unmarked(converted, _marked_in(given, set()))


def keep_given(document: BaseDocument, values: dict[str, Any]) -> None:
    """After MongoEngine's ``__init__`` converted the constructor's ``values``
    (which its ``pre_init`` receivers may have changed), or ``from_json`` its
    son: :func:`_unmarked` for each field holding cached references, keeping
    the marked values given (the very objects; ``to_python`` is also the
    load's, which marks)."""
    given = _marked_in(values, set())
    data = document._data
    for name, field in document._fields.items():
        if name in data and holds_cached_references(field):
            data[name] = _unmarked(data[name], given)


def kept_as_given(to_python: Callable[[Any], Any]) -> Callable[[Any], Any]:
    """``to_python`` as a constructor converts with it, for a field holding
    cached references: the values it marks put back as given (:func:`as_given`)."""

    def convert(value: Any) -> Any:
        return as_given(value, to_python(value))

    return convert


class CachedReferenceField(_ProxyingReference, mongoengine.CachedReferenceField):
    """MongoEngine's CachedReferenceField; on async aliases loading it does no
    I/O (MongoEngine's loads the document), it reads as a proxy, and saving
    keeps the stored cache until the document is loaded.

    ``auto_sync`` runs on ``async_save`` of the referenced document (see
    :func:`sync_cached_references`), with or without blinker.
    """

    def _target(self, value: Any) -> type[Any] | None:
        held = _is_cache(value) or is_plain_reference(value)
        return self.document_type if held else None

    def _proxy(
        self, instance: BaseDocument, value: Any, target: type[Any]
    ) -> AsyncReferenceProxy[Any]:
        """The proxy of :class:`_ProxyingReference`, with the cached fields
        readable from the stored copy (no I/O)."""
        proxy = super()._proxy(instance, value, target)
        proxy.keep_cached(self.fields)
        return proxy

    def _read_missing(self, proxy: AsyncReferenceProxy[Any]) -> None:
        """Also the cached fields readable from the stored copy, which a
        missing document leaves as it was."""
        super()._read_missing(proxy)
        proxy.keep_cached(self.fields)

    def to_python(self, value: Any) -> Any:
        if is_async_class(self.document_type):
            if _is_cache(value) or is_loaded_plain(value):
                return value  # the stored cache (read as a proxy), or marked
            if is_plain_reference(value):  # stored with no cache: saved as it was
                return loaded_plain(value)
            if _is_bare_id(value, self.document_type):  # likewise, keyed otherwise
                return loaded_id(value, self.document_type)
        return super().to_python(value)  # (a dict without its id: KeyError)

    def to_mongo(
        self, document: Any, use_db_field: bool = True, fields: Any = None
    ) -> Any:
        if isinstance(document, AsyncReferenceProxy):
            document = self._proxied(document)
        if self._is_stored_cache(document):  # the stored cache, not loaded: kept
            return as_stored(document)
        return super().to_mongo(document, use_db_field, fields)

    def _is_stored_cache(self, value: Any) -> bool:
        """Whether ``value`` is a cache as :meth:`to_python` keeps it, or a
        plain DBRef or ObjectId it read with none (an async alias's: saved as
        it was; one the user assigns is refused, as MongoEngine does): on a
        sync alias MongoEngine's loads the document, so a dict there is the
        user's, which MongoEngine refuses."""
        stored = _is_cache(value) or is_loaded_plain(value)
        return stored and is_async_class(self.document_type)

    def validate(self, value: Any) -> None:
        if isinstance(value, AsyncReferenceProxy):
            if not value._may_be(self.document_type):  # as for its document
                self.error("A CachedReferenceField only accepts documents")
            value = self._proxied(value)
        if not self._is_stored_cache(value):  # a stored cache is valid
            super().validate(value)

    def prepare_query_value(self, op: str, value: Any) -> Any:
        if isinstance(value, AsyncReferenceProxy):
            if op not in _STORING_OPERATORS and not value.fetched:
                return {"_id": value.id}  # a filter needs only the id
            value = self._proxied(value)
            if isinstance(value, dict) or is_loaded_plain(value):
                return as_stored(value)
        return super().prepare_query_value(op, value)

    def _proxied(self, proxy: AsyncReferenceProxy[Any]) -> Any:
        """What this field stores ``proxy`` as: its loaded document, else the
        cache (or the plain reference) it was read with. Any other unloaded
        reference has no copy of the cached fields: ValidationError naming
        ``await``."""
        if proxy.fetched:
            return proxy._document
        stored = proxy.stored
        if (isinstance(stored, dict) and "_ref" not in stored) or proxy._plain_in_cache:
            return stored
        self.error(
            f"The unloaded reference {proxy._name!r} holds no copy of the "
            "cached fields: `await` it and store the document instead"
        )

    def start_listener(self) -> None:
        """MongoEngine's post_save receiver for sync saves, when blinker is
        installed; async saves sync the caches themselves."""
        if mongoengine.signals.signals_available:
            super().start_listener()

    def on_document_pre_save(
        self, sender: Any, document: Any, created: bool, **kwargs: Any
    ) -> None:
        if not is_async_class(type(document)):  # async_save syncs on its own
            super().on_document_pre_save(sender, document, created, **kwargs)

    async def _async_sync(
        self, document: BaseDocument, session: AsyncClientSession | None = None
    ) -> None:
        """Update the cached copies of ``document``'s changed fields, as
        MongoEngine's receiver does (the same update), with async I/O: in
        ``session`` when it is the owners' client's (the save's), else in that
        client's bound transaction."""
        await self._async_apply(document, self._sync_update(document), session)

    def _sync_update(self, document: BaseDocument) -> dict[str, Any]:
        """The update of the cached copies for ``document``'s changes now."""
        return {
            f"set__{self.name}__{key}": value
            for key, value in document._delta()[0].items()
            if key in self.fields
        }

    async def _async_apply(
        self,
        document: BaseDocument,
        update: dict[str, Any],
        session: AsyncClientSession | None,
    ) -> None:
        if update:
            owner = self.owner_document
            session = (await reach(owner, session)).session
            owners = owner.objects(**{self.name: document})
            await owners.async_update(session=session, **update)

    async def async_sync_all(self) -> None:
        """MongoEngine's ``sync_all`` with async I/O: rewrite every cached copy."""
        async for document in self.document_type.objects:
            owners = self.owner_document.objects(**{self.name: document})
            await owners.async_update(**{f"set__{self.name}": document})


def _describe_cached(field: CachedReferenceField) -> tuple[bool, str, str]:
    """Whether the class ``field`` reads is on an async alias, the field's
    name as a user spells it, and that alias."""
    cls = field.document_type
    return (
        is_async_class(cls),
        f"{field.owner_document.__name__}.{field.name}",
        alias_of(cls),
    )


guard_blocking_methods(
    CachedReferenceField,
    {"sync_all": "await Model.field.async_sync_all()"},
    _describe_cached,
)


async def sync_cached_references(
    document: BaseDocument, created: bool, session: AsyncClientSession | None
) -> None:
    """MongoEngine's ``auto_sync`` after an ``async_save`` of ``document`` (in
    ``session``, the save's): the CachedReferenceFields referring to its class
    get its changed fields."""
    if created:
        return
    for field in type(document)._cached_reference_fields:
        if isinstance(field, CachedReferenceField) and field.auto_sync:
            await field._async_sync(document, session)


def cached_updates(
    document: BaseDocument, created: bool
) -> list[tuple[CachedReferenceField, dict[str, Any]]]:
    """The updates :func:`sync_cached_references` would send for
    ``document``'s changes now, to send later (:func:`apply_cached_updates`)."""
    if created:
        return []
    return [
        (field, field._sync_update(document))
        for field in type(document)._cached_reference_fields
        if isinstance(field, CachedReferenceField) and field.auto_sync
    ]


async def apply_cached_updates(
    document: BaseDocument,
    updates: list[tuple[CachedReferenceField, dict[str, Any]]],
    session: AsyncClientSession | None = None,
) -> None:
    """Send the updates :func:`cached_updates` gave (in ``session``)."""
    for field, update in updates:
        await field._async_apply(document, update, session)


class LazyReferenceField(mongoengine.LazyReferenceField):
    """MongoEngine's LazyReferenceField giving LazyReferences with ``async_fetch``."""

    def build_lazyref(self, value: Any) -> Any:
        return LazyReference.of(super().build_lazyref(value))


class GenericLazyReferenceField(mongoengine.GenericLazyReferenceField):
    """MongoEngine's GenericLazyReferenceField with ``async_fetch`` references.

    An :class:`AsyncReferenceProxy` given to it (read from another reference
    on an async alias) is taken as the document it stands for, as
    GenericReferenceField takes it: a LazyReference to its class.
    """

    def build_lazyref(self, value: Any) -> Any:
        if isinstance(value, AsyncReferenceProxy):
            value = LazyReference(
                value._document_class,
                value.id,
                cached_doc=value._document,
                passthrough=self.passthrough,
            )
        return LazyReference.of(super().build_lazyref(value))

    def to_mongo(self, document: Any) -> Any:
        if isinstance(document, AsyncReferenceProxy):
            document = self.build_lazyref(document)
        return super().to_mongo(document)

    def _validate_choices(self, value: Any) -> None:
        if isinstance(value, AsyncReferenceProxy):
            value = self.build_lazyref(value)
        super()._validate_choices(value)


class _NonBlockingContainer(_FieldMixin):
    """On async aliases, skip MongoEngine's blocking dereference of the items
    and hand out proxies for the unloaded references instead.

    Each of our container classes reports MongoEngine's class of the same name
    as ``__class__`` (``type()`` and ``isinstance`` still see ours): MongoEngine
    compares exact classes (``transform.update`` builds ``$pull`` from
    ``ListField in [f.__class__ ...]``), and it must give the same answer for
    our fields without us patching its registry. A user's subclass reports
    itself, as with MongoEngine.
    """

    _reported_class: type[Any]

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        ours = cls.__module__ == __name__
        same_name = getattr(mongoengine.fields, cls.__name__, cls)
        cls._reported_class = same_name if ours else cls

    # A read-only __class__, on purpose (checkers expect a settable one).
    @property  # type: ignore[misc]
    def __class__(self) -> type[Any]:  # pyright: ignore[reportIncompatibleMethodOverride]
        """MongoEngine's class of the same name for ours, else the real class."""
        return type(self)._reported_class

    def __reduce_ex__(self, protocol: SupportsIndex) -> tuple[Any, ...]:
        """Pickle as our class. Pickle refuses the default ``__newobj__``
        recipe, whose class is not ``__class__``; ``object.__new__`` is the
        same recipe under another name (and protocols 0-1 would rebuild
        MongoEngine's class)."""
        _, args, *state = super().__reduce_ex__(2)
        return (object.__new__, args, *state)

    def __get__(self, instance: BaseDocument | None, owner: type[Any]) -> Any:
        if instance is None:
            return self
        reads_async = self._reads_async(instance)
        rule = self._item_rule()
        if rule.plain:
            read = self._read_plain(instance, reads_async)
            if read is not _UNUSUAL:
                return read
        if not reads_async:
            return super().__get__(instance, owner)
        self._incr_no_dereference_context()
        try:
            value: Any = super().__get__(instance, owner)
        finally:
            self._decr_no_dereference_context()
        if (
            isinstance(value, BaseList | BaseDict)
            and not value._dereferenced
            and dereference_allowed(instance, self.name)
        ):
            value = self._first_read(value, instance, rule)
        if isinstance(self.field, FileField) and isinstance(value, list | dict):
            self.field.async_items(value, instance, self.name)
        return value

    def _first_read(
        self, value: BaseList | BaseDict, instance: BaseDocument, rule: _ItemRule
    ) -> Any:
        """MongoEngine's first read of ``value`` (on a sync alias: its
        ``DeReference``) without I/O, kept in ``instance``: the walk that wraps
        the lists and dicts in it and builds the documents stored with
        ``_cls``, when its items may need it; then proxies for the unloaded
        references and lazy references for the items of a dict of lazy
        references (a ListField of them builds its own); marked dereferenced."""
        read: Any = value
        if rule.walks or _holds_wrapped(value):
            read = walk_without_loading(value, instance, self.name)
            instance._data[self.name] = read
        elif value and value._name != self.name:  # wrapped where another
            # document walked (an empty one stays its: the walk returns it)
            read = _bound(value, instance, self.name)
        if isinstance(read, BaseList | BaseDict):
            read._dereferenced = True
        if rule.may_refer:
            proxy_items(read, self.field, self.name, instance)
        elif rule.lazy and isinstance(read, dict):
            build = self.field.build_lazyref
            for key, item in list(dict.items(read)):
                write_at(read, key, build(item))
        return read

    def _item_rule(self) -> _ItemRule:
        """What the items of this container are, worked out once per item
        field (again if ``field`` is replaced)."""
        item_field = self.field
        rule: _ItemRule | None = self.__dict__.get("_item_rules")
        if rule is None or rule.item_field is not item_field:
            may_refer = _may_refer(item_field)
            walks = _walks(item_field)
            lazy = isinstance(item_field, _LAZY_ITEMS)
            plain = not (may_refer or walks or isinstance(item_field, _SPECIAL_ITEMS))
            rule = _ItemRule(item_field, may_refer, walks, lazy, plain)
            self.__dict__["_item_rules"] = rule
        return rule

    # An untyped container takes a reference proxy as MongoEngine's takes the
    # document it stands for: a DBRef when built (to_python), a DBRef or a
    # generic reference when stored (to_mongo). Items of other containers are
    # their field's.

    def to_python(self, value: Any) -> Any:
        if isinstance(value, AsyncReferenceProxy):
            return DBRef(value.collection, value.id)
        return super().to_python(value)

    def to_mongo(
        self, value: Any, use_db_field: bool = True, fields: Any = None
    ) -> Any:
        if isinstance(value, AsyncReferenceProxy):
            return _untyped_item(value)
        return super().to_mongo(value, use_db_field, fields)

    def _read_plain(self, instance: BaseDocument, reads_async: bool) -> Any:
        """What MongoEngine's read (on an async alias: the one below) gives for
        a container of plain items, without its dereference machinery: a
        stored list or dict is wrapped for change tracking and kept in
        ``_data``, and marked dereferenced where that read marks it (on a sync
        alias, as a copy when already wrapped, as ``DeReference`` returns).
        On an async alias, one holding lists or dicts (stored by an update,
        of another type than its items') is walked as ``DeReference`` walks
        it: those wrapped too, under their path.
        ``_UNUSUAL`` for any other value (tuple, subclass...) or read, which
        takes MongoEngine's."""
        value: Any = instance._data.get(self.name)
        if value is None:
            return None
        kind: type[Any] = type(value)
        embedded = isinstance(self, mongoengine.EmbeddedDocumentListField)
        stored = kind is list or kind is dict
        if not (
            stored
            or kind is EmbeddedDocumentList
            or kind is BaseDict
            or (kind is BaseList and not embedded)
        ):
            return _UNUSUAL
        if not stored and value._dereferenced:
            return value  # read before: every read gives it as it is
        walk = False
        if reads_async:
            mark = dereference_allowed(instance, self.name)
            if mark and not stored and value and value._name != self.name:
                # Wrapped where another document's read walked it (an empty
                # one stays bound there: MongoEngine's walk returns it as is).
                value = _bound(value, instance, self.name)
            # Items of another type (a list in a ListField(IntField()) that an
            # update stored): MongoEngine's walk wraps them. The check of a
            # list of plain values in C first, one call on this common path.
            walk = bool(
                mark
                and value
                and (
                    kind is dict
                    or kind is BaseDict
                    or not PLAIN_VALUE_TYPES.issuperset(map(type, value))
                )
                and _walked(value)
            )
        else:
            sync_mark = self._sync_dereferences(instance)
            if sync_mark is None or (sync_mark and _walked(value)):
                return _UNUSUAL
            mark = sync_mark
        if kind is list:
            wrapper = EmbeddedDocumentList if embedded else BaseList
            value = wrapper(value, instance, self.name)
            instance._data[self.name] = value
        elif kind is dict:
            value = BaseDict(value, instance, self.name)
            instance._data[self.name] = value
        if walk:
            value = walk_without_loading(value, instance, self.name)
            instance._data[self.name] = value
        if mark:
            if not (reads_async or stored) and value:
                value = type(value)(value, instance, self.name)
                instance._data[self.name] = value
            value._dereferenced = True
        return value

    def _sync_dereferences(self, instance: BaseDocument) -> bool | None:
        """Whether MongoEngine's ``ComplexBaseField.__get__`` runs its
        ``DeReference`` on this read (a sync alias): only on an initialised
        document, outside ``no_dereference``. None when the read is unusual:
        the document's field of that name is another one, or the item field
        has a ``field`` that ``DeReference`` would look through."""
        field = instance._fields[self.name]
        if field is not self or hasattr(self.field, "field"):
            return None
        return bool(field._auto_dereference and instance._initialised)

    def _reads_async(self, instance: BaseDocument) -> bool:
        """Whether the container reads as on an async alias: its document's,
        or its items' referenced class's (one not defined yet is no async
        class: MongoEngine looks it up only to dereference)."""
        if not has_async_connections():
            return False
        if is_async_class(owner_class(instance)):
            return True
        try:
            document_type = getattr(self.field, "document_type", None)
        except NotRegistered:
            return False
        return isinstance(document_type, type) and is_async_class(document_type)


def _holds_wrapped(container: BaseList | BaseDict) -> bool:
    """Whether ``container`` holds lists or dicts wrapped already, perhaps
    under another path: what MongoEngine's ``_reload`` (reload, modify) makes
    of nested containers, named by their key alone, for the walk of the first
    read to rename them (``walk_without_loading`` does, as MongoEngine's)."""
    items = container.values() if isinstance(container, dict) else container
    return any(isinstance(item, BaseList | BaseDict) for item in items)


def _bound(container: Any, instance: BaseDocument, name: str) -> Any:
    """A copy of a wrapped list or dict bound to ``instance`` under ``name``,
    kept there: what MongoEngine's walk makes of one that another document's
    walk bound to itself (the lists of the documents an untyped list holds)."""
    bound = type(container)(container, instance, name)
    instance._data[name] = bound
    return bound


class _ItemRule(NamedTuple):
    """A container's item field and what its items need on a first read on
    an async alias: whether ``proxy_items`` can find an unloaded reference
    among them (``_may_refer``: an embedded document proxies its own fields),
    whether MongoEngine's walk may change them (``_walks``), whether they are
    lazy references, and whether they are plain: the container reads as
    MongoEngine's wrapped list/dict and nothing more (no reference to proxy,
    nothing to walk, no lazy reference for MongoEngine's ListField to build, no
    file to make async)."""

    item_field: Any
    may_refer: bool
    walks: bool
    lazy: bool
    plain: bool


def _may_refer(item_field: Any) -> bool:
    """Whether a container of ``item_field`` items can hold a reference that
    ``proxy_items`` would replace (the fields ``unloaded_target`` knows, plus
    untyped items and nested containers, which it walks)."""
    if item_field is None:
        return True
    if isinstance(item_field, mongoengine.GenericLazyReferenceField):
        return False
    return isinstance(item_field, _REFERRING_ITEMS)


_REFERRING_ITEMS = (
    mongoengine.ReferenceField,
    mongoengine.GenericReferenceField,
    mongoengine.CachedReferenceField,
    mongoengine.DynamicField,
    ComplexBaseField,
)


def _walks(item_field: Any) -> bool:
    """Whether MongoEngine's walk of a container of ``item_field`` items (on
    its first read) may change them: a list or dict an item is or holds in a
    field, which it wraps for change tracking (bound to the container's
    document, under its path: a change made through it is that document's),
    or a dict stored with ``_cls``, which it builds as a document. Scalars,
    references and embedded documents whose fields hold none of those are
    left as they are."""
    if item_field is None:
        return True
    if isinstance(item_field, ComplexBaseField):
        return _walks(item_field.field)
    if isinstance(item_field, mongoengine.EmbeddedDocumentField):
        return _holds_walked_values(item_field.document_type)
    return isinstance(item_field, _WALKED_ITEMS)


def _holds_walked_values(cls: type[Any]) -> bool:
    """Whether documents of ``cls`` (or of its subclasses known now) can hold
    a list or dict in a field: a dynamic one, a container, or a GeoJSON, geo
    point or dynamic field."""
    classes = [document_registry.get(name) for name in cls._subclasses]
    return any(
        other is not None
        and (
            other._dynamic
            or any(isinstance(f, _HOLDING_FIELDS) for f in other._fields.values())
        )
        for other in [cls, *classes]
    )


# Item fields whose values are (or may hold) dicts and lists, and the fields
# of an embedded document holding such values that are not containers.
_DICT_FIELDS = (
    mongoengine.DynamicField,
    mongoengine.fields.GeoJsonBaseField,
    mongoengine.GeoPointField,
)
_WALKED_ITEMS = (*_DICT_FIELDS, mongoengine.GenericEmbeddedDocumentField)
_HOLDING_FIELDS = (*_DICT_FIELDS, ComplexBaseField)

_LAZY_ITEMS = (mongoengine.LazyReferenceField, mongoengine.GenericLazyReferenceField)
_SPECIAL_ITEMS = (*_LAZY_ITEMS, mongoengine.FileField)


def _untyped_item(proxy: AsyncReferenceProxy[Any]) -> Any:
    """What ``ComplexBaseField.to_mongo`` stores for the document ``proxy``
    stands for, as an item of an untyped list or dict: a DBRef when its class
    allows inheritance (the stored ``_cls`` then names it), else a generic
    reference (as GenericReferenceField stores a proxy). One that
    select_related found missing stays as stored, as MongoEngine's read leaves
    the DBRef it could not load."""
    if proxy._missing and proxy._document is None:
        return proxy.stored
    if proxy.document_type._meta.get("allow_inheritance"):
        return DBRef(proxy.collection, proxy.id)
    return _GENERIC_REFERENCE.to_mongo(proxy)


def _walked(container: list[Any] | dict[Any, Any]) -> bool:
    """Whether MongoEngine's ``DeReference`` would do more with ``container``
    than copy it into a new one of its kind: an item it looks into or may
    replace, or a dict it takes for a reference or a document."""
    if isinstance(container, dict):
        if "_ref" in container or "_cls" in container:
            return True
        items: Iterable[Any] = dict.values(container)
    else:
        items = container
    if PLAIN_VALUE_TYPES.issuperset(map(type, items)):  # (the common case, in C)
        return False
    return any(isinstance(item, _WALKED) and not _kept_document(item) for item in items)


def _kept_document(item: Any) -> bool:
    """Whether ``item`` is a document whose fields ``DeReference`` leaves as
    they are: none holds a reference, a list, a dict or a tuple (it would look
    them up, or rebind them to the container's document)."""
    if not isinstance(item, _DOCUMENTS):
        return False
    data = item._data
    fields = item._fields
    return not any(isinstance(data.get(name), _WALKED_VALUES) for name in fields)


# The items MongoEngine's DeReference looks into or may replace on a sync read,
# the documents among them, and the values it looks at in their fields.
_WALKED = (BaseDocument, DBRef, dict, list, tuple)
_DOCUMENTS = (mongoengine.Document, mongoengine.EmbeddedDocument)
_WALKED_VALUES = (DBRef, dict, list, tuple)

# The value of a read that MongoEngine's own code handles.
_UNUSUAL = object()


PROXY_TAKERS.append(_NonBlockingContainer)


class ListField(_NonBlockingContainer, mongoengine.ListField):
    """MongoEngine's ListField, non-blocking on async aliases."""


class SortedListField(_NonBlockingContainer, mongoengine.SortedListField):
    """MongoEngine's SortedListField, non-blocking on async aliases."""


class EmbeddedDocumentListField(
    _NonBlockingContainer, mongoengine.EmbeddedDocumentListField
):
    """MongoEngine's EmbeddedDocumentListField, non-blocking on async aliases."""


class DictField(_NonBlockingContainer, mongoengine.DictField):
    """MongoEngine's DictField, non-blocking on async aliases."""


class MapField(_NonBlockingContainer, mongoengine.MapField):
    """MongoEngine's MapField, non-blocking on async aliases."""


# What a DynamicField's value is when it may be a document it holds (as
# stored, or its proxy): its reads look closer.
_MAY_HOLD_DOCUMENT = (dict, AsyncReferenceProxy)


class DynamicField(_ProxyingReference, mongoengine.DynamicField):
    """MongoEngine's DynamicField; on async aliases a document it holds (stored
    as ``{"_cls", "_ref"}``) loads without I/O and reads as a proxy, where
    MongoEngine's loads it with blocking I/O (on an async alias, a coroutine)."""

    def __get__(self, instance: BaseDocument | None, owner: type[Any]) -> Any:
        if instance is None:
            return self
        value = instance._data.get(self.name)
        if isinstance(value, _MAY_HOLD_DOCUMENT):  # a tuple: faster than a union
            return super().__get__(instance, owner)
        return value  # what MongoEngine's (BaseField's) read gives

    def _target(self, value: Any) -> type[Any] | None:
        if isinstance(value, dict) and "_cls" in value and "_ref" in value:
            return get_document(value["_cls"])
        return None

    def to_python(self, value: Any) -> Any:
        if isinstance(value, dict):  # a document as stored?
            target = self._target(value)
            if target is not None and is_async_class(target):
                return value  # kept; read as a proxy
        return super().to_python(value)

    def to_mongo(
        self, value: Any, use_db_field: bool = True, fields: Any = None
    ) -> Any:
        if isinstance(value, AsyncReferenceProxy):  # as the document is stored
            stored = value.stored
            if isinstance(stored, dict) and "_ref" in stored:
                return stored
            return {"_ref": value.as_dbref(), "_cls": value._document_class.__name__}
        return super().to_mongo(value, use_db_field, fields)


NONE_READERS.add(DynamicField.__get__)  # the loader then gives an absent one None


class GridFSProxy(RefusesAsync, mongoengine.fields.GridFSProxy):
    """MongoEngine's GridFSProxy (a FileField's value on a sync alias), whose
    async methods raise AsyncUsageError naming the sync method to use."""


class ImageGridFsProxy(RefusesAsyncImage, mongoengine.fields.ImageGridFsProxy):
    """MongoEngine's ImageGridFsProxy, whose async methods raise likewise."""


class FileField(mongoengine.FileField):
    """MongoEngine's FileField; on async aliases it reads as an AsyncGridFSProxy.

    The stored value (the GridFS file id) is the one the sync field stores, so
    sync and async code read each other's files.
    """

    async_proxy_class = AsyncGridFSProxy
    sync_proxy_class = GridFSProxy

    def get_proxy_obj(
        self,
        key: str,
        instance: BaseDocument,
        db_alias: str | None = None,
        collection_name: str | None = None,
    ) -> Any:
        proxy = super().get_proxy_obj(key, instance, db_alias, collection_name)
        return self._refusing_async(proxy)

    def _refusing_async(self, proxy: Any) -> Any:
        """MongoEngine's proxy, made an instance of :attr:`sync_proxy_class`
        (the same object and state; only its async methods are added). A
        proxy of the field's own ``proxy_class`` (a subclass of MongoEngine's
        that a user's field names) stays as it is, with its methods."""
        if proxy is not None and issubclass(self.sync_proxy_class, type(proxy)):
            proxy.__class__ = self.sync_proxy_class
        return proxy

    def _reads_async(self, instance: BaseDocument) -> bool:
        return is_async_class(owner_class(instance)) or is_async_connection(
            self.db_alias
        )

    def get_async_proxy(self, grid_id: Any, instance: BaseDocument | None) -> Any:
        """An async proxy for ``grid_id`` on this field's bucket (no I/O); with
        no ``instance`` it has no key either, so that the document it is then
        assigned to binds it on first read (as MongoEngine binds a proxy)."""
        return self.async_proxy_class(
            grid_id,
            key=self.name if instance is not None else None,
            instance=instance,
            db_alias=self.db_alias,
            collection_name=self.collection_name,
            field=self,
        )

    def to_python(self, value: Any) -> Any:
        if isinstance(value, AsyncGridFSProxy):  # MongoEngine's would wrap it
            return value
        return self._refusing_async(super().to_python(value))

    def _as_proxy_class(self, value: Any) -> Any:
        """``value``, or when it is the field's async proxy but the field names
        a ``proxy_class`` of its own (which the async proxy is not), the proxy
        of that class it stands for: MongoEngine's ``validate`` and ``to_mongo``
        take only instances of ``proxy_class`` (``to_mongo`` stores None for
        anything else)."""
        if (
            type(value) is self.async_proxy_class
            and value.grid_id is not None
            and not isinstance(value, self.proxy_class)
        ):
            return self.to_python(value.grid_id)
        return value

    def validate(self, value: Any) -> None:
        super().validate(self._as_proxy_class(value))

    def to_mongo(self, value: Any) -> Any:
        return super().to_mongo(self._as_proxy_class(value))

    def async_items(self, container: Any, instance: BaseDocument, key: str) -> None:
        """Turn the files in ``container`` (a list or dict of this field, held
        by ``instance`` under ``key``) into async proxies bound to ``instance``
        (no I/O): a change to a file is a change to the list. A proxy bound to
        no document yet (from ``Model.files.field.async_put``) is bound here,
        where MongoEngine would leave it unbound (a replace then not saved)."""
        for slot in slots(container):
            item = slot.get()
            if isinstance(item, self.async_proxy_class):
                if not item.key:
                    item.key = key
                    item.instance = instance
            elif isinstance(item, mongoengine.fields.GridFSProxy):
                proxy = self.get_async_proxy(item.grid_id, instance)
                proxy.key = key
                slot.put(proxy)

    def __get__(self, instance: BaseDocument | None, owner: type[Any]) -> Any:
        if instance is None or not self._reads_async(instance):
            return super().__get__(instance, owner)
        value = instance._data.get(self.name)
        if not isinstance(value, self.async_proxy_class):
            if isinstance(value, mongoengine.fields.GridFSProxy):
                value = value.grid_id
            value = self.get_async_proxy(value, instance)
            instance._data[self.name] = value
        if not value.key:
            value.key = self.name
            value.instance = instance
        return value

    def __set__(self, instance: BaseDocument, value: Any) -> None:
        if (
            isinstance(value, (bytes, str))
            or (
                hasattr(value, "read")
                and not isinstance(value, mongoengine.fields.GridFSProxy)
            )
        ) and self._reads_async(instance):
            raise AsyncUsageError(
                f"Assigning data to {type(instance).__name__}.{self.name} would "
                "block the event loop: the file lives on an async alias; use "
                f"`await {type(instance).__name__}.{self.name}.async_put(data, "
                "instance=document)` instead"
            )
        super().__set__(instance, value)

    def _async_proxy_of(
        self, instance: BaseDocument | None, method: str, use: str
    ) -> Any:
        if instance is None:
            return self.get_async_proxy(None, None)
        if getattr(instance, "_fields", {}).get(self.name) is not self:
            raise self._not_a_field_of(instance, method)
        if not self._reads_async(instance):
            target = f"{type(instance).__name__}.{self.name}"
            require_async(self.db_alias, target, method, use)
        return self.__get__(instance, type(instance))

    def _not_a_field_of(self, instance: Any, method: str) -> TypeError:
        """The error for ``method(instance=...)`` of a field that is not one of
        ``instance``'s: the item field of a list or dict of files, which holds
        no file of its own (its document's list would be left as it is), or
        another class's field."""
        kind = type(self).__name__
        if self.name is None:
            return TypeError(
                f"{kind}.{method}() of the item field of a list or dict of files "
                f"takes no document ({instance!r}): put a file without it "
                "(`await Model.files.field.async_put(data)`) and add the proxy to "
                "the list, or use an item's proxy (`document.files[0]`)"
            )
        return TypeError(
            f"{kind}.{method}() takes a document holding this field "
            f"({self.name!r} of {getattr(self.owner_document, '__name__', '?')}), "
            f"not {instance!r}"
        )

    async def async_put(
        self, data: Any, instance: BaseDocument | None = None, **kwargs: Any
    ) -> AsyncGridFSProxy:
        """Store ``data`` as the file of ``instance`` (marked as changed, so
        its next ``async_save`` stores the id); returns the AsyncGridFSProxy."""
        proxy = self._async_proxy_of(
            instance, "async_put", f"document.{self.name}.put()"
        )
        return await proxy.async_put(data, **kwargs)

    async def async_get(
        self, instance: BaseDocument, *, session: AsyncClientSession | None = None
    ) -> AsyncGridFSProxy | None:
        """The file of ``instance`` with its metadata loaded (in ``session`` if
        given), or None when the document holds no file or its file is gone
        (as MongoEngine's ``get()``)."""
        proxy = self._async_proxy_of(
            instance, "async_get", f"document.{self.name}.get()"
        )
        found = await proxy.async_get(session=session)
        return proxy if found is not None else None


class ImageField(FileField, mongoengine.ImageField):
    """MongoEngine's ImageField; on async aliases it reads as an
    AsyncImageGridFSProxy (resizing and thumbnails done off the event loop)."""

    async_proxy_class = AsyncImageGridFSProxy
    sync_proxy_class = ImageGridFsProxy

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        """MongoEngine's field; without Pillow its ImproperlyConfigured also
        names the extra to install."""
        try:
            super().__init__(*args, **kwargs)
        except ImproperlyConfigured as exc:
            raise ImproperlyConfigured(
                f"{exc}: ImageField needs Pillow, "
                "install it with: pip install 'mongoengine-async[images]'"
            ) from exc


if not TYPE_CHECKING:  # (checkers see this module's own names alone)

    def __getattr__(name: str) -> Any:
        """MongoEngine's ``mongoengine.fields.<name>`` where this module has no
        ``name`` (see :mod:`mongoengine_async.same_named`)."""
        return mongoengine_attribute(__name__, name)
