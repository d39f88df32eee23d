"""References on async aliases: proxies and lazy references (what fields.py uses).

Reading a reference never does I/O here. An unloaded reference reads as an
:class:`AsyncReferenceProxy` (a ``DBRef``, so it is stored and compared as the
reference it stands for); awaiting it loads the document. Loading the
references of many documents at once is :mod:`mongoengine_async.select_related`.
"""

from __future__ import annotations

import asyncio
import copy
import threading
import weakref
from collections.abc import Collection, Generator
from typing import TYPE_CHECKING, Any, Generic, TypeVar, cast

import mongoengine
from bson import SON, DBRef, ObjectId
from mongoengine.base import BaseDocument, ComplexBaseField, get_document
from mongoengine.base.datastructures import BaseDict, BaseList
from mongoengine.base.datastructures import LazyReference as MongoEngineLazyReference
from mongoengine.connection import DEFAULT_CONNECTION_NAME
from mongoengine.dereference import DeReference
from pymongo.asynchronous.client_session import AsyncClientSession

from mongoengine_async._compat import (
    container_location,
    document_registry,
    running_loop_or_none,
)
from mongoengine_async.classes import with_subclasses
from mongoengine_async.connection import running_loop
from mongoengine_async.context import dereference_disabled, read_context
from mongoengine_async.errors import AsyncUsageError, NotLoadedError
from mongoengine_async.from_bson import owned_loader
from mongoengine_async.guards import blocking_call_error, require_async
from mongoengine_async.operation import (
    as_session,
    own_session,
    plain_home,
    reach,
    reached,
    session_for,
)

__all__ = ("AsyncReferenceProxy", "LazyReference")

_D = TypeVar("_D")  # the referenced document class


def is_async_class(cls: Any) -> bool:
    """Whether ``cls`` is one of our documents bound (now) to an async alias."""
    is_async = getattr(cls, "_is_async", None)
    return is_async is not None and is_async()


def alias_of(cls: type[Any]) -> str:
    """The alias ``cls`` is bound to now (ours honour ``async_switch_db``)."""
    db_alias = getattr(cls, "_db_alias", None)
    if db_alias is None:
        return cls._meta.get("db_alias", DEFAULT_CONNECTION_NAME)
    return db_alias()


def owner_class(instance: BaseDocument) -> type[Any]:
    """The class of the top-level document holding ``instance`` (of the
    outermost one still alive: an embedded document holds its owner weakly;
    one still in its ``__init__`` has no ``_instance`` yet, and owns itself)."""
    cls = instance.__class__
    try:
        while not issubclass(cls, mongoengine.Document):
            if not isinstance(instance, mongoengine.EmbeddedDocument):
                break
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
    """A place holding a reference: a key of a dict or an index of a list
    (a document's field is a :class:`FieldSlot`).

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
        container: Any = self._container
        if type(container) is weakref.ReferenceType:
            container = container()
        return container

    def weakly(self) -> Slot:
        """This slot holding its list or dict weakly when it can (MongoEngine's
        BaseList and BaseDict can): a proxy
        remembering where it sits then makes no reference cycle with what
        holds it."""
        try:
            return Slot(weakref.ref(self._container), self.key)
        except TypeError:
            return self

    def get(self) -> Any:
        container = self.container
        return None if container is None else read_at(container, self.key)

    def put(self, value: Any) -> None:
        container = self.container
        if container is not None:
            write_at(container, self.key, value)

    def replace(self, old: Any, new: Any) -> None:
        """Put ``new`` here if ``old`` is still here (and its container alive)."""
        container = self.container
        if container is not None and read_at(container, self.key) is old:
            write_at(container, self.key, new)


class FieldSlot:
    """A field of a document, which it holds weakly: where a proxy read from
    the field puts its document (in the document's ``_data``, which
    MongoEngine's change tracking does not watch)."""

    __slots__ = ("_document", "key")

    def __init__(self, document: BaseDocument, key: str):
        self._document = weakref.ref(document)
        self.key = key

    def replace(self, old: Any, new: Any) -> None:
        """Put ``new`` here if ``old`` is still here (and the document alive)."""
        document = self._document()
        if document is not None and document._data.get(self.key) is old:
            document._data[self.key] = new


def read_at(container: list | dict, key: Any) -> Any:
    """``container[key]`` without MongoEngine's BaseList/BaseDict hooks."""
    if isinstance(container, list):
        return list.__getitem__(container, key)
    return dict.get(container, key)


def write_at(container: list | dict, key: Any, value: Any) -> None:
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


def install_proxy(
    slot: Slot, stored: Any, cls: type[Any], name: str
) -> AsyncReferenceProxy[Any]:
    """Put a proxy for the reference ``stored`` in ``slot`` and return it; once
    fetched, the proxy puts the document there (if the container still exists)."""
    proxy: AsyncReferenceProxy[Any] = AsyncReferenceProxy(
        stored, cls, name, slot.weakly()
    )
    slot.put(proxy)
    return proxy


def proxy_items(
    container: Any, item_field: Any, name: str, instance: BaseDocument
) -> None:
    """Replace the unloaded references in a (nested) container of
    ``instance``'s field ``name`` by proxies (in the lists and dicts a
    DynamicField item holds too, as in an untyped container, and in those an
    update stored among references: MongoEngine's read of the container loads
    those)."""
    for slot in slots(container):
        item = slot.get()
        if isinstance(item, AsyncReferenceProxy | MongoEngineLazyReference):
            if isinstance(item, AsyncReferenceProxy):  # (select_related's)
                item.name_if_unnamed(name)
                _keep_cached_of(item, item_field)
            continue
        target = unloaded_target(item_field, item)
        if target is not None and is_async_class(target):
            _keep_cached_of(install_proxy(slot, item, target, name), item_field)
        elif item_field is None or isinstance(
            item_field, ComplexBaseField | mongoengine.DynamicField
        ):
            nested = _tracked(slot, item)
            proxy_items(nested, getattr(item_field, "field", None), name, instance)
        elif target is None and isinstance(item, list | dict):
            proxy_items(_walked_in(slot, item, instance), item_field, name, instance)


def _keep_cached_of(proxy: AsyncReferenceProxy[Any], item_field: Any) -> None:
    """Make the fields a CachedReferenceField ``item_field`` holds a copy of
    readable on ``proxy``, an item of its list or dict."""
    if isinstance(item_field, mongoengine.CachedReferenceField):
        proxy.keep_cached(cast(Any, item_field).fields)  # (untyped)


class _WalkWithoutLoading(DeReference):
    """MongoEngine's ``DeReference`` that finds no reference to load, so does
    no I/O: what is left is its walk of the items (``_attach_objects``)."""

    def _find_references(self, items: Any, depth: int = 0) -> dict[Any, Any]:
        return {}


def walk_without_loading(container: Any, instance: BaseDocument, name: str) -> Any:
    """What MongoEngine's first read of the container ``name`` of ``instance``
    makes of it (its ``DeReference`` walk), with every reference left as
    stored: the lists and dicts in it wrapped for change tracking under their
    path, each dict stored with ``_cls`` (and no ``_ref``) built as its document,
    and the lists and dicts in the fields of the documents it holds wrapped
    likewise. A new container (or the document a dict with ``_cls`` stands
    for), bound to ``instance``."""
    return _WalkWithoutLoading()(container, max_depth=1, instance=instance, name=name)


def walked_document(stored: dict[str, Any]) -> Any:
    """The embedded document ``stored`` (a dict with ``_cls``) stands for, as
    MongoEngine's ``DeReference`` walk builds one it meets in a list (the
    values of ``distinct``): loaded by its class's ``_from_son``, then the
    lists and dicts of its fields walked (an empty one wrapped, bound to the
    document), as that walk leaves them."""
    return _WalkWithoutLoading()([stored], max_depth=1)[0]


def _walked_in(
    slot: Slot, item: list[Any] | dict[Any, Any], instance: BaseDocument
) -> Any:
    """A plain list or dict an update stored among references (``[ref,
    [ref]]`` in a ``ListField(GenericReferenceField())``), put back in
    ``slot`` as MongoEngine's ``DeReference`` walk leaves it: it and the lists
    and dicts in it wrapped under their path, bound to ``instance`` (a change
    through them is tracked), the references in them left for
    :func:`proxy_items` (MongoEngine's walk loads them, at any depth). One
    wrapped already is kept."""
    if isinstance(item, BaseList | BaseDict):
        return item
    name, _ = container_location(slot.container)
    walked = walk_without_loading(item, instance, f"{name}.{slot.key}")
    slot.put(walked)
    return walked


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
    name, owner = container_location(slot.container)
    item = wrapper(item, None, f"{name}.{slot.key}")
    item._instance = owner
    slot.put(item)
    return item


def unloaded_target(field: Any, value: Any) -> type[Any] | None:
    """The class of an unloaded (Generic, Cached)ReferenceField value, of a
    document stored by a DynamicField, or of a DBRef (or generic reference)
    in an untyped container; else None."""
    if field is None:
        return _untyped_class(value)
    if isinstance(field, mongoengine.DynamicField):  # a document it holds
        held = isinstance(value, AsyncReferenceProxy) or (
            isinstance(value, dict) and "_ref" in value
        )
        return _generic_class(value) if held else None
    if isinstance(field, mongoengine.GenericLazyReferenceField):
        return None
    if isinstance(field, mongoengine.GenericReferenceField):
        return _generic_class(value)
    if isinstance(field, mongoengine.CachedReferenceField):
        cached = isinstance(value, dict | AsyncReferenceProxy)
        return field.document_type if cached or is_plain_reference(value) else None
    if isinstance(field, mongoengine.ReferenceField) and isinstance(value, DBRef):
        return reference_class(field, value)
    return None


async def load_reference(
    cls: type[Any],
    dbref: DBRef,
    name: str | None,
    session: AsyncClientSession | None = None,
) -> Any:
    """Load the document ``dbref`` points to, as an instance of ``cls``, in
    ``session`` (refused unless one of ``cls``'s client), else in the bound
    transaction."""
    collection = (reached(cls) or await reach(cls)).collection
    client = collection.database.client
    session = session_for(client, own_session(cls, client, session))
    if dbref.collection != collection.name:  # (the class's own, mostly)
        collection = collection.database[dbref.collection]
    raw = await collection.find_one({"_id": dbref.id}, session=session)
    return loaded(cls, dbref, name, raw)


def loaded(cls: type[Any], dbref: DBRef, name: str | None, raw: dict | None) -> Any:
    """The document of ``cls`` the reply ``raw`` to loading ``dbref`` holds;
    ``cls.DoesNotExist`` when it found none."""
    if raw is None:
        raise missing_error(cls, dbref, name)
    return owned_loader(cls)(raw)  # the reply is this document's alone


def missing_error(cls: type[Any], dbref: DBRef, name: str | None) -> Exception:
    """The ``DoesNotExist`` of loading ``dbref`` (reference ``name``, if known)
    and finding nothing: MongoEngine's message, naming the reference."""
    named = "" if name is None else f" (reference {name!r})"
    return cls.DoesNotExist(
        f"Trying to dereference unknown document "
        f"{DBRef(dbref.collection, dbref.id)!r}{named}"
    )


def _stored_value(stored: Any) -> Any:
    return stored


# Guards the in-flight state of proxies and lazy references, which threads
# running event loops of their own may share. Reentrant: a garbage collection
# started while it is held may finalise the fetch of a loop closed by hand,
# whose cleanup takes it in that thread (that cleanup changes only its own).
_IN_FLIGHT = threading.RLock()
# A fetch that sends its own query beside the one in flight, of another context.
_APART = object()


def _of_closed_loop(loading: Any) -> bool:
    """Whether ``loading`` (a proxy's fetch in flight: its loop, or the future
    its waiters wait for) is of a loop closed since: that fetch never ends."""
    loop = loading.get_loop() if isinstance(loading, asyncio.Future) else loading
    return loop.is_closed()


def _future_of(loading: Any, loop: asyncio.AbstractEventLoop) -> bool:
    """Whether ``loading`` is the future that waiters on ``loop`` wait for."""
    return isinstance(loading, asyncio.Future) and loading.get_loop() is loop


# Sets a DBRef slot of a proxy past its __setattr__ (see AsyncReferenceProxy).
_set_slot = object.__setattr__
# What a proxy's cached read gives for a name listed in ``fields`` that is no
# field of the document's class: then it is read as any other name.
_NOT_CACHED = object()


class AsyncReferenceProxy(DBRef, Generic[_D]):
    """An unloaded reference: ``await`` it (or ``fetch()``) for the document.

    ``id``/``pk`` need no I/O; it equals the referenced document, its id and its
    DBRef; the loaded document is cached and put in place of the proxy.
    """

    # Set through __dict__ by __init__ (DBRef's own attributes are slots).
    stored: Any
    document_type: type[Any]
    _name: str | None
    _slot: Slot | FieldSlot | None
    _document: Any = None  # the loaded document
    # While a load is in flight: its event loop, or the future its waiters
    # (on that loop) wait for; and the session and read context it was sent in.
    _loading: asyncio.Future[None] | asyncio.AbstractEventLoop | None = None
    _loading_context: Any = None
    # Set when a batch load (select_related) looked the document up and found
    # none: attribute access then raises its DoesNotExist, as MongoEngine's
    # read of such a reference does, instead of asking to await it.
    _missing: bool = False
    # The fields a CachedReferenceField keeps a copy of in ``stored``: read
    # from that copy without I/O (MongoEngine loads the document to read them).
    _cached_fields: frozenset[str] = frozenset()
    # Set when read from a CachedReferenceField that stores a plain DBRef or
    # id (written by a ReferenceField, or by another tool): no copy to read,
    # and what the field saves for it is that stored value, as it was.
    _plain_in_cache: bool = False

    def __init__(
        self,
        stored: Any,
        document_cls: type[Any],
        name: str | None,
        slot: Slot | FieldSlot | None = None,
    ):
        plain = type(stored) in _DBREF_SLOTS
        dbref = stored if plain else stored_dbref(stored, document_cls)
        if type(dbref) in _DBREF_SLOTS:  # its slots, checked by its __init__ already
            # (Past this class's __setattr__: a Python call each.)
            _set_slot(self, "_DBRef__collection", dbref._DBRef__collection)
            _set_slot(self, "_DBRef__id", dbref._DBRef__id)
            _set_slot(self, "_DBRef__database", dbref._DBRef__database)
            _set_slot(self, "_DBRef__kwargs", dbref._DBRef__kwargs)  # (never changed)
        else:
            extra = {k: v for k, v in dbref.as_doc().items() if not k.startswith("$")}
            super().__init__(dbref.collection, dbref.id, dbref.database, **extra)
        state = self.__dict__
        state["stored"] = stored
        state["document_type"] = document_cls
        state["_name"] = name
        state["_slot"] = slot

    @property
    def pk(self) -> Any:
        return self.id

    def as_dbref(self) -> DBRef:
        """The plain DBRef this proxy stands for."""
        return stored_dbref(self.stored, self.document_type)

    @property
    def _document_class(self) -> type[Any]:
        """The class of the document this proxy stands for, which generic
        fields store: the loaded document's, the stored ``_cls``, or
        ``document_type`` when it has no subclass. Otherwise only loading
        tells (a ReferenceField stores no class): ValidationError naming
        ``await``, rather than storing the base class for a subclass."""
        cls = self._known_class()
        if cls is None:
            raise mongoengine.ValidationError(
                f"The unloaded reference {self._name!r} may be a subclass of "
                f"{self.document_type.__name__}: `await` it and store the "
                "document instead"
            )
        return cls

    def _known_class(self) -> type[Any] | None:
        """:attr:`_document_class` when known without loading, else None."""
        if self._document is not None:
            return type(self._document)
        stored = self.stored
        if isinstance(stored, dict) and "_cls" in stored:
            return get_document(stored["_cls"])
        cls = self.document_type
        return cls if len(cls._subclasses) == 1 else None

    def _may_be(self, cls: type[Any]) -> bool:
        """Whether the document this proxy stands for may be a ``cls``: its
        class is one or, unknown until loaded, may be one (``document_type``
        is a base class or a subclass of ``cls``)."""
        known = self._known_class()
        if known is not None:
            return issubclass(known, cls)
        return issubclass(self.document_type, cls) or issubclass(
            cls, self.document_type
        )

    def _generic_reference(self) -> dict[str, Any]:
        """``{"_cls", "_ref"}``: what a GenericReferenceField stores for the
        document this proxy stands for (a generic one's own stored value)."""
        stored = self.stored
        if isinstance(stored, dict) and "_ref" in stored:
            return stored
        return SON(
            (("_cls", self._document_class._class_name), ("_ref", self.as_dbref()))
        )

    def name_if_unnamed(self, name: str) -> None:
        """Name the reference (by its field) if whoever made it could not."""
        if self._name is None:
            self.__dict__["_name"] = name

    def keep_cached(self, fields: Collection[str]) -> None:
        """Make the fields ``stored`` (a CachedReferenceField's cache) holds a
        copy of readable on the proxy, without loading the document. No
        ``fields``: MongoEngine's field then caches them all, a subclass's own
        too (the copy's ``_cls`` names it)."""
        if not isinstance(self.stored, dict):  # a plain reference: no copy
            self.__dict__["_plain_in_cache"] = True
            return
        if not fields:
            fields = (self._known_class() or self.document_type)._fields
        self.__dict__["_cached_fields"] = frozenset(fields)

    def _cached_value(self, name: str) -> Any:
        """Cached field ``name``: the loaded document's, else the stored copy's,
        converted as loading converts it (see :func:`_cached_read`)."""
        if self._document is not None:
            return getattr(self._document, name)
        holder = self.__dict__.get("_cached_holder")
        if holder is None:
            holder = _bare_document(self._known_class() or self.document_type)
            self.__dict__["_cached_holder"] = holder
        return _cached_read(holder, self.stored, name)

    def _pk_value(self) -> Any:
        """The value of the primary key field read by its own name (``code``
        for ``code = StringField(primary_key=True)``): the id the proxy
        holds, as the loaded document's field gives it."""
        if self._document is not None:
            return self._document.pk
        cls = self.document_type
        return cls._fields[cls._meta["id_field"]].to_python(self.id)

    def mark_missing(self) -> None:
        """Record that a batch load looked the document up and found none."""
        self.__dict__["_missing"] = True

    @property
    def fetched(self) -> bool:
        """Whether the document has been loaded."""
        return self._document is not None

    async def fetch(self, session: AsyncClientSession | None = None) -> _D:
        """The referenced document (one query, in ``session`` if given, then cached).

        Concurrent fetches wait for the query in flight instead of sending
        their own; if it fails, the next of them queries again, as with a
        lock (which would cost a fifth of a fetch's own CPU time). The first
        waiter makes the future they wait for: a fetch alone makes none. A
        fetch on another event loop (another thread's) than the query in
        flight sends its own: a future belongs to one loop. So does one in
        another session, transaction or switch (``read_context``): it must
        not see what the query in flight reads there.
        """
        while self._document is None:
            # (running_loop() only for its error: a call fewer when one runs)
            loop = running_loop_or_none() or running_loop()
            context = read_context() if session is None else (session, read_context())
            state = self.__dict__  # (set there, past __setattr__'s Python call)
            with _IN_FLIGHT:
                loading: object = self._loading
                if loading is not None and _of_closed_loop(loading):
                    loading = None  # cut short as its loop closed: never ends
                if loading is None:  # this fetch queries
                    state["_loading"], state["_loading_context"] = loop, context
                elif self._loading_context != context:
                    loading = _APART  # another context's query: its own
                elif loading is loop:  # the first waiter
                    loading = state["_loading"] = loop.create_future()
            if (
                loading is not None  # (mostly None: settled without a call)
                and isinstance(loading, asyncio.Future)
                and loading.get_loop() is loop
            ):
                await asyncio.wait((loading,))  # cancelling a waiter spares it
                continue
            try:
                cls = self.document_type
                home = plain_home(cls) if session is None else None
                if home is not None and home.name == self._DBRef__collection:
                    # The common case, without load_reference's own coroutine.
                    collection = home.operation.collection
                    raw = await collection.find_one({"_id": self._DBRef__id})
                    document = loaded(cls, self, self._name, raw)
                else:
                    document = await load_reference(cls, self, self._name, session)
                if self._document is None:  # (one of another context's may be)
                    state["_document"] = document
                    if self._slot is not None:
                        self._slot.replace(self, document)
                return document  # what this fetch read, in its own context
            finally:
                if loading is None:  # this fetch's query: wake its waiters
                    with _IN_FLIGHT:
                        waiters = self._loading
                        # (Not its own when a fetch took over, this loop closed.)
                        mine = waiters is loop or _future_of(waiters, loop)
                        if mine:
                            state["_loading"] = state["_loading_context"] = None
                    # Not this loop: the future its first waiter made (told
                    # without a call); none to wake once this loop closed.
                    if mine and waiters is not loop and not loop.is_closed():
                        waiters.set_result(None)  # type: ignore[union-attr]
        return self._document

    async_fetch = fetch

    def __await__(self) -> Generator[Any, None, _D]:
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
        if name == self.document_type._meta.get("id_field"):  # held, as ``id``
            return self._pk_value()
        if name in self._cached_fields:  # the copy: read even once missing
            value = self._cached_value(name)
            if value is not _NOT_CACHED:
                return value
        if self._missing and self._document is None:
            cls = self.document_type
            if _is_field(cls, name):
                raise missing_error(cls, self, self._name)
            # Not a declared field: a field of a DynamicDocument, perhaps, or
            # what hasattr() probes (MongoEngine's to_mongo() asks for
            # ``to_mongo`` or ``items``). MongoEngine raises DoesNotExist for
            # any read of such a reference; this is that DoesNotExist and an
            # AttributeError, so hasattr() answers and the stored reference
            # is saved as it was.
            error = missing_error(cls, self, self._name)
            raised = _missing_attribute_type(type(error))(f"{error} (reading {name!r})")
            raised.name, raised.obj = name, self
            raise raised
        if self._document is not None:  # a proxy kept after it was awaited
            raise AttributeError(
                f"{name!r} is not available on the reference {self._name!r}, "
                "a proxy, fetched already: read it from the document that "
                "awaiting the proxy gave (again, without a query)"
            )
        # (NotLoadedError, the public error for data not loaded yet, is an
        # AttributeError too: hasattr() and getattr() with a default answer.)
        raise NotLoadedError(
            f"{name!r} is not available on the unloaded reference "
            f"{self._name!r}: `await` it (or its fetch()) to get the document"
        )

    def __setattr__(self, name: str, value: Any) -> None:
        """Refuse a public name: the proxy holds no field of the document, so
        ``book.author.name = "Z"`` would be kept by the proxy alone, read back
        from it, and never saved (MongoEngine's dereferenced document takes
        it). Private names are the proxy's own state."""
        if name.startswith("_"):
            super().__setattr__(name, value)
            return
        if self._document is not None:
            raise AttributeError(
                f"{name!r} cannot be set on the reference {self._name!r}, a "
                "proxy, fetched already: set it on the document that awaiting "
                "the proxy gave (again, without a query)"
            )
        raise NotLoadedError(
            f"{name!r} cannot be set on the unloaded reference {self._name!r}: "
            "`await` it (or its fetch()) and set it on the document"
        )

    def __reduce__(self) -> tuple:
        # Copies and pickles of a proxy are the stored reference it stands for.
        return _stored_value, (self.stored,)

    def __deepcopy__(self, memo: dict) -> Any:
        return copy.deepcopy(self.stored, memo)

    def __repr__(self) -> str:
        if self._document is not None:
            state = "fetched"
        else:
            state = "missing" if self._missing else "unfetched"
        name = "" if self._name is None else f": {self._name}"
        return f"<AsyncReferenceProxy{name} ({state})>"


def _bare_document(cls: type[Any]) -> Any:
    """An empty document of ``cls`` made without ``__init__`` (so sending no
    init signal): where a proxy sets the cached fields it reads, as reading a
    field (a list, a reference in it) needs a document holding it."""
    document = cast(Any, cls).__new__(cls)
    object.__setattr__(document, "_data", {})
    _set_loaded(document, loaded=True)
    return document


def _set_loaded(document: Any, loaded: bool) -> None:
    """Put ``document`` in a loaded document's state, or (not ``loaded``) in
    the one ``__init__`` sets its fields in (no change is recorded)."""
    object.__setattr__(document, "_initialised", loaded)
    object.__setattr__(document, "_created", not loaded)
    if loaded:
        document.__dict__["_changed_fields"] = []


def _cached_read(holder: Any, stored: Any, name: str) -> Any:
    """Field ``name`` of the cache ``stored`` as the document loaded from it
    reads it: the field's ``to_python`` of the stored value (absent or None:
    what ``__init__`` gives, the default), set in ``holder`` once and read
    from it. _NOT_CACHED when ``name`` is no field of ``holder``'s class."""
    field = holder._fields.get(name)
    if field is None:
        return _NOT_CACHED
    if name not in holder._data:
        value = stored.get(field.db_field)
        _set_loaded(holder, loaded=False)
        try:
            setattr(holder, name, None if value is None else field.to_python(value))
        finally:
            _set_loaded(holder, loaded=True)
    return getattr(holder, name)


def _missing_attribute_type(does_not_exist: type[Exception]) -> type[AttributeError]:
    """``does_not_exist`` (a document class's ``DoesNotExist``) that is also
    an ``AttributeError``: what reading a name that is not a declared field
    of a missing reference's document raises. Made once, kept on the class
    (so it goes with it)."""
    made = does_not_exist.__dict__.get("_as_attribute_error")
    if made is None:
        bases: Any = (does_not_exist, AttributeError)
        made = type(
            does_not_exist.__name__, bases, {"__module__": does_not_exist.__module__}
        )
        made.__qualname__ = does_not_exist.__qualname__
        setattr(does_not_exist, "_as_attribute_error", made)  # noqa: B010
    return made


def _is_field(cls: type[Any], name: str) -> bool:
    """Whether ``name`` is a field of ``cls`` or of a subclass of it."""
    return any(name in each._fields for each in with_subclasses(cls))


class LazyReference(MongoEngineLazyReference, Generic[_D]):
    """MongoEngine's LazyReference with ``async_fetch`` for async aliases.

    On an async alias ``fetch()`` and passthrough attribute access work only
    once the document is loaded; otherwise they raise, naming ``async_fetch``.
    """

    __slots__ = ("_lock",)
    # The lock of the fetch in flight, with its loop and read context.
    _lock: tuple[asyncio.AbstractEventLoop, asyncio.Lock, Any] | None
    _cached_doc: Any  # MongoEngine's slot: the loaded document, else None

    if TYPE_CHECKING:  # MongoEngine's, typed: LazyReference(Author, pk) is of Author

        def __init__(
            self,
            document_type: type[_D],
            pk: Any,
            cached_doc: _D | None = None,
            passthrough: bool = False,
        ) -> None: ...

    async def async_fetch(
        self, force: bool = False, session: AsyncClientSession | None = None
    ) -> _D:
        """The referenced document, loaded once (again with ``force=True``), in
        ``session`` if given.

        Concurrent fetches of this reference in one context send one query:
        the others wait for it, as with an :class:`AsyncReferenceProxy`; one
        in another session, transaction or switch sends its own and gets what
        it reads (the first document loaded is the one kept).
        """
        cls = self.document_type
        if not is_async_class(cls):
            require_async(alias_of(cls), repr(self), "async_fetch", "reference.fetch()")
        session = as_session(session)
        if self._cached_doc is None or force:
            lock = self._fetch_lock(session)
            try:
                async with lock:
                    if self._cached_doc is None or force:
                        # MongoEngine's fetch(): objects.get(pk=...), so its
                        # manager and class filter apply, and its DoesNotExist.
                        document = await cls.objects.async_get(
                            pk=self.pk, session=session
                        )
                        if self._cached_doc is None or force:
                            self._cached_doc = document
                        return document  # what this fetch read, in its context
            finally:
                self._drop_lock(lock)
        return self._cached_doc

    def _fetch_lock(self, session: AsyncClientSession | None) -> asyncio.Lock:
        """The lock of the fetch in flight, made by the first fetch; a new one
        when that fetch runs on another event loop (another thread's): a lock
        waited for belongs to one loop; or in another context (``session``,
        bound transaction, switch): it must not get what that fetch reads."""
        loop = running_loop()
        context = read_context() if session is None else (session, read_context())
        with _IN_FLIGHT:
            try:  # not ``self._lock``: MongoEngine's __getattr__ may fetch
                held = object.__getattribute__(self, "_lock")
            except AttributeError:  # slots start unset
                held = None
            if held is not None and held[0] is loop and held[2] == context:
                return held[1]
            lock = asyncio.Lock()
            if held is None or held[0].is_closed():  # (closed: never let go)
                self._lock = (loop, lock, context)
            return lock

    def _drop_lock(self, lock: asyncio.Lock) -> None:
        """Forget ``lock`` once free: a lock used by waiters is bound to their
        event loop, and a reference is copied and pickled with its slots."""
        with _IN_FLIGHT:
            if self._lock is not None and self._lock[1] is lock and not lock.locked():
                self._lock = None

    def _unfetched_passthrough(self) -> bool:
        """Whether reading through this reference would fetch with blocking
        I/O on an async alias (MongoEngine's passthrough ``__getattr__``)."""
        try:  # slots start unset (before unpickling sets them, say)
            passthrough = object.__getattribute__(self, "passthrough")
            cached = object.__getattribute__(self, "_cached_doc")
            cls = object.__getattribute__(self, "document_type")
        except AttributeError:
            return False
        return passthrough and cached is None and is_async_class(cls)

    def __getattr__(self, name: str) -> Any:
        if self._unfetched_passthrough():
            if name.startswith("_"):  # protocols (copy, pickle...) and privates
                raise AttributeError(name)
            raise NotLoadedError(
                f"{name!r} of the unfetched passthrough {self!r} needs its "
                "document: `await reference.async_fetch()` first (reading it "
                "here would block the event loop)"
            )
        return super().__getattr__(name)

    def __getitem__(self, name: Any) -> Any:
        if self._unfetched_passthrough():
            raise AsyncUsageError(
                f"[{name!r}] of the unfetched passthrough {self!r} needs its "
                "document: `await reference.async_fetch()` first (reading it "
                "here would block the event loop)"
            )
        return super().__getitem__(name)

    def __reduce__(self) -> tuple:
        # Copies and pickles are the same reference (MongoEngine's, whose
        # state is its own slots only, lose the id, or fetch to get it), in
        # the same collection (a switch_collection may have named it).
        arguments = (self.document_type, self.pk, self._cached_doc, self.passthrough)
        return type(self), arguments, {"_DBRef__collection": self.collection}

    def fetch(self, force: bool = False) -> _D:
        if is_async_class(self.document_type):
            if self._cached_doc is not None and not force:
                return self._cached_doc
            alias = alias_of(self.document_type)
            use = "`await reference.async_fetch()`"
            raise blocking_call_error(repr(self), "fetch", alias, use)
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


# -- what a stored reference points to -------------------------------------------


def is_plain_reference(value: Any) -> bool:
    """Whether ``value`` is a reference as a ReferenceField stores it (a DBRef,
    or an ObjectId with ``dbref=False``): what a CachedReferenceField holds
    when another field or tool wrote it, with no cached copy."""
    if isinstance(value, DBRef):
        return not isinstance(value, AsyncReferenceProxy | MongoEngineLazyReference)
    return isinstance(value, ObjectId)


class _LoadedDBRef(DBRef):
    """A DBRef a CachedReferenceField loaded (see :func:`loaded_plain`)."""

    __slots__ = ()

    def __deepcopy__(self, memo: Any) -> _LoadedDBRef:
        copied = super().__deepcopy__(memo)
        kwargs = _LoadedDBRef._kwargs(cast(_LoadedDBRef, copied))
        return type(self)(copied.collection, copied.id, copied.database, kwargs)

    def __reduce__(self) -> tuple:
        return type(self), (self.collection, self.id, self.database, self._kwargs())

    def _kwargs(self) -> dict[str, Any]:
        """The DBRef's extra fields (its private slot)."""
        return self._DBRef__kwargs


class _LoadedObjectId(ObjectId):
    """An ObjectId a CachedReferenceField loaded (see :func:`loaded_plain`)."""

    __slots__ = ()


class _LoadedId(_LoadedDBRef):
    """A bare id that is no ObjectId (what ``ReferenceField(dbref=False)``
    stores for a class keyed so) a CachedReferenceField loaded: a DBRef to it,
    so read as the same proxy as a stored DBRef, and saved as the bare id."""

    __slots__ = ()


# The types of the plain references a load marks: a value of one holds no
# change of its own (MongoEngine's _get_changed_fields does not look into it).
LOADED_PLAIN = (_LoadedDBRef, _LoadedObjectId, _LoadedId)
# The DBRefs whose slots are those of the DBRef a proxy of one is (a marked
# one's: the DBRef it is equal to).
_DBREF_SLOTS = frozenset([DBRef, _LoadedDBRef, _LoadedId])


def loaded_id(value: Any, cls: type[Any]) -> DBRef:
    """The bare id ``value`` of a ``cls`` document, stored with no cached
    copy, marked as :func:`loaded_plain` marks a DBRef (see :class:`_LoadedId`)."""
    return _LoadedId(cls._get_collection_name(), value)


def as_stored(value: Any) -> Any:
    """``value`` as the database holds it: a bare id :func:`loaded_id` marked
    is stored as that id alone."""
    return value.id if isinstance(value, _LoadedId) else value


def loaded_plain(value: DBRef | ObjectId) -> DBRef | ObjectId:
    """The plain reference ``value``, marked as one a load read from the
    database (equal to it, stored as it): saving keeps it as it was, where
    MongoEngine's validation refuses one the user assigns."""
    if isinstance(value, DBRef):
        kwargs = _LoadedDBRef._kwargs(cast(_LoadedDBRef, value))
        return _LoadedDBRef(value.collection, value.id, value.database, kwargs)
    return _LoadedObjectId(value)


def is_loaded_plain(value: Any) -> bool:
    """Whether ``value`` is a plain reference :func:`loaded_plain` marked."""
    return isinstance(value, _LoadedDBRef | _LoadedObjectId)


def stored_dbref(value: Any, cls: type[Any]) -> DBRef:
    """The DBRef of a stored reference to ``cls``: generic ones keep it under
    ``_ref``; a CachedReferenceField stores ``_id`` and the cached fields (or
    a plain DBRef or ObjectId, see :func:`is_plain_reference`)."""
    if isinstance(value, ObjectId):  # (its id unmarked: no stored value to keep)
        return DBRef(cls._get_collection_name(), ObjectId(value))
    if isinstance(value, _LoadedDBRef):  # (likewise unmarked)
        return DBRef(value.collection, value.id, value.database, value._kwargs())
    if not isinstance(value, dict):
        return value
    if "_ref" in value:
        return value["_ref"]
    id_field = cls._fields[cls._meta["id_field"]]
    return DBRef(cls._get_collection_name(), id_field.to_python(value["_id"]))


def _untyped_class(value: Any) -> type[Any] | None:
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


def _collection_class(collection: str) -> type[Any] | None:
    """The class named after ``collection`` (``ut_author``: ``UtAuthor``), as
    in MongoEngine; else the topmost registered class stored in it."""
    name = "".join(part.capitalize() for part in collection.split("_"))
    cls = document_registry.get(name)
    if cls is not None and cls._get_collection_name() == collection:
        return cls
    stored_there = [
        cls
        for cls in document_registry.values()
        if issubclass(cls, mongoengine.Document)
        and not cls._meta.get("abstract")
        and cls._get_collection_name() == collection
    ]
    return min(stored_there, key=lambda cls: len(cls.__mro__), default=None)


def _generic_class(value: Any) -> type[Any] | None:
    if isinstance(value, AsyncReferenceProxy):
        return value.document_type
    if isinstance(value, dict) and "_cls" in value:
        return get_document(value["_cls"])
    return None


def reference_class(field: Any, dbref: DBRef) -> type[Any]:
    """The class a ReferenceField value points to (``cls`` in the DBRef wins)."""
    if isinstance(dbref, AsyncReferenceProxy):
        return dbref.document_type
    document_type = field.document_type
    if not document_type._meta.get("abstract"):
        return document_type  # only references to abstract classes carry cls
    class_name = dbref.as_doc().get("cls")
    return get_document(class_name) if class_name else document_type
