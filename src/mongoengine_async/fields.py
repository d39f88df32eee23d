"""Field subclasses whose reads never do I/O when the data lives on an async alias.

On sync aliases every field behaves exactly as MongoEngine's. On async aliases
an unloaded reference reads as an :class:`AsyncReferenceProxy`, lazy references
come with ``async_fetch``, containers hand out proxies instead of running
MongoEngine's blocking dereference, and file fields read as
:class:`~mongoengine_async.gridfs.AsyncGridFSProxy` (see ``gridfs.py``).
"""

from __future__ import annotations

from typing import Any

import mongoengine
from bson import SON, DBRef
from mongoengine.base import BaseDocument, get_document
from mongoengine.base.datastructures import LazyReference as MongoEngineLazyReference

from mongoengine_async.connection import has_async_connections, is_async_connection
from mongoengine_async.gridfs import AsyncGridFSProxy, AsyncImageGridFSProxy
from mongoengine_async.guards import AsyncUsageError, require_async
from mongoengine_async.references import (
    AsyncReferenceProxy,
    LazyReference,
    Slot,
    dereference_allowed,
    is_async_class,
    owner_class,
    proxy_items,
    reference_class,
)

__all__ = (
    "DictField",
    "EmbeddedDocumentListField",
    "FileField",
    "GenericLazyReferenceField",
    "GenericReferenceField",
    "ImageField",
    "LazyReferenceField",
    "ListField",
    "MapField",
    "ReferenceField",
    "SortedListField",
)


class _ProxyingReference:
    """Reads of an unloaded reference to an async class give a proxy."""

    def _target(self, value: Any) -> type | None:
        """The referenced class when ``value`` is an unloaded reference."""
        raise NotImplementedError

    def __get__(self, instance: BaseDocument | None, owner: type) -> Any:
        if instance is None:
            return self
        value = instance._data.get(self.name)
        # A loaded document (or a value that is no reference at all) is what
        # MongoEngine's __get__ returns too. BaseDocument: its isinstance is
        # three times as fast as Document's, whose metaclass is not ``type``.
        if value is None or isinstance(value, BaseDocument):
            return value
        if isinstance(value, AsyncReferenceProxy):
            if value.fetched:  # loaded since it was read: the document takes its place
                instance._data[self.name] = value._document
                return value._document
            return value if dereference_allowed(instance, self.name) else value.stored
        target = self._target(value)
        if target is None or not is_async_class(target):
            return super().__get__(instance, owner)
        if not dereference_allowed(instance, self.name):
            return value
        slot = Slot(instance, self.name).weakly()  # once fetched, in place
        proxy = AsyncReferenceProxy(value, target, self.name, slot)
        instance._data[self.name] = proxy
        return proxy

    async def async_fetch(self, instance: BaseDocument) -> Any:
        """Load the referenced document and keep it in ``instance``."""
        value = self.__get__(instance, type(instance))
        if isinstance(value, AsyncReferenceProxy):
            return await value.fetch()
        return value


class ReferenceField(_ProxyingReference, mongoengine.ReferenceField):
    """MongoEngine's ReferenceField; on async aliases reads give proxies."""

    def _target(self, value: Any) -> type | None:
        if isinstance(value, DBRef) and not isinstance(value, MongoEngineLazyReference):
            return reference_class(self, value)
        return None

    def to_mongo(self, document: Any) -> Any:
        if isinstance(document, AsyncReferenceProxy):
            document = document.as_dbref()
        return super().to_mongo(document)


class GenericReferenceField(_ProxyingReference, mongoengine.GenericReferenceField):
    """MongoEngine's GenericReferenceField; on async aliases reads give proxies."""

    def _target(self, value: Any) -> type | None:
        if isinstance(value, dict) and "_cls" in value:
            return get_document(value["_cls"])
        return None

    def to_mongo(self, document: Any) -> Any:
        if isinstance(document, AsyncReferenceProxy):
            if isinstance(document.stored, dict):
                return document.stored
            return SON(
                (
                    ("_cls", document.document_type._class_name),
                    ("_ref", document.as_dbref()),
                )
            )
        return super().to_mongo(document)

    def _validate_choices(self, value: Any) -> None:
        if isinstance(value, AsyncReferenceProxy):
            value = {"_cls": value.document_type._class_name}
        super()._validate_choices(value)


class LazyReferenceField(mongoengine.LazyReferenceField):
    """MongoEngine's LazyReferenceField giving LazyReferences with ``async_fetch``."""

    def build_lazyref(self, value: Any) -> Any:
        return LazyReference.of(super().build_lazyref(value))


class GenericLazyReferenceField(mongoengine.GenericLazyReferenceField):
    """MongoEngine's GenericLazyReferenceField with ``async_fetch`` references."""

    def build_lazyref(self, value: Any) -> Any:
        return LazyReference.of(super().build_lazyref(value))


class _NonBlockingContainer:
    """On async aliases, skip MongoEngine's blocking dereference of the items
    and hand out proxies for the unloaded references instead.

    Each of our container classes reports MongoEngine's class of the same name
    as ``__class__`` (``type()`` and ``isinstance`` still see ours): MongoEngine
    compares exact classes (``transform.update`` builds ``$pull`` from
    ``ListField in [f.__class__ ...]``), and it must give the same answer for
    our fields without us patching its registry. A user's subclass reports
    itself, as with MongoEngine.
    """

    _reported_class: type

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        ours = cls.__module__ == __name__
        same_name = getattr(mongoengine.fields, cls.__name__, cls)
        cls._reported_class = same_name if ours else cls

    @property
    def __class__(self) -> type:
        """MongoEngine's class of the same name for ours, else the real class."""
        return type(self)._reported_class

    def __reduce_ex__(self, protocol: int) -> tuple:
        """Pickle as our class. Pickle refuses the default ``__newobj__``
        recipe, whose class is not ``__class__``; ``object.__new__`` is the
        same recipe under another name (and protocols 0-1 would rebuild
        MongoEngine's class)."""
        _, args, *state = super().__reduce_ex__(2)
        return (object.__new__, args, *state)

    def __get__(self, instance: BaseDocument | None, owner: type) -> Any:
        if instance is None or not self._reads_async(instance):
            return super().__get__(instance, owner)
        self._incr_no_dereference_context()
        try:
            value = super().__get__(instance, owner)
        finally:
            self._decr_no_dereference_context()
        if (
            isinstance(value, list | dict)
            and not getattr(value, "_dereferenced", False)
            and dereference_allowed(instance, self.name)
        ):
            proxy_items(value, self.field, self.name)
            value._dereferenced = True
        return value

    def _reads_async(self, instance: BaseDocument) -> bool:
        if not has_async_connections():
            return False
        if is_async_class(owner_class(instance)):
            return True
        document_type = getattr(self.field, "document_type", None)
        return isinstance(document_type, type) and is_async_class(document_type)


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


class FileField(mongoengine.FileField):
    """MongoEngine's FileField; on async aliases it reads as an AsyncGridFSProxy.

    The stored value (the GridFS file id) is the one the sync field stores, so
    sync and async code read each other's files.
    """

    async_proxy_class = AsyncGridFSProxy

    def _reads_async(self, instance: BaseDocument) -> bool:
        return is_async_class(owner_class(instance)) or is_async_connection(
            self.db_alias
        )

    def get_async_proxy(self, grid_id: Any, instance: BaseDocument | None) -> Any:
        """An async proxy for ``grid_id`` on this field's bucket (no I/O)."""
        return self.async_proxy_class(
            grid_id,
            key=self.name,
            instance=instance,
            db_alias=self.db_alias,
            collection_name=self.collection_name,
            field=self,
        )

    def __get__(self, instance: BaseDocument | None, owner: type) -> Any:
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
        if not self._reads_async(instance):
            target = f"{type(instance).__name__}.{self.name}"
            require_async(self.db_alias, target, method, use)
        return self.__get__(instance, type(instance))

    async def async_put(
        self, data: Any, instance: BaseDocument | None = None, **kwargs: Any
    ) -> Any:
        """Store ``data`` as the file of ``instance`` (marked as changed, so
        its next ``async_save`` stores the id); returns the AsyncGridFSProxy."""
        proxy = self._async_proxy_of(instance, "async_put", "document.file.put()")
        return await proxy.async_put(data, **kwargs)

    async def async_get(self, instance: BaseDocument) -> Any:
        """The file of ``instance`` with its metadata loaded, or None when the
        document holds no file (``NoFile`` when the stored id is missing)."""
        proxy = self._async_proxy_of(instance, "async_get", "document.file.get()")
        if not proxy.grid_id:
            return None
        await proxy.async_get()
        return proxy


class ImageField(FileField, mongoengine.ImageField):
    """MongoEngine's ImageField; on async aliases it reads as an
    AsyncImageGridFSProxy (resizing and thumbnails done off the event loop)."""

    async_proxy_class = AsyncImageGridFSProxy
