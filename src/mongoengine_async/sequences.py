"""SequenceField counting on an async alias: its next values are awaited.

MongoEngine's ``SequenceField`` takes the next value of a counter document
(``find_one_and_update`` with ``$inc``, in ``mongoengine.counters`` on the
field's own ``db_alias``) whenever an unset value is read, set to None or
converted by ``to_mongo``: blocking I/O. When that alias is async, reading an
unset value gives None, and ``async_save``, ``async_insert``, the async updates
and modifies first give every unset value of the documents (of the documents
they embed through typed fields, of any subclass, and the None items of lists
and dicts of sequence values; for an update, of the embedded documents its
values carry) its number, with one ``$inc`` per counter, in the order
``to_mongo`` would have asked for them; any other conversion raises
:class:`AsyncUsageError`, as does an async write of a value counted on a sync
alias and a sync write of one counted on an async alias. The counters are
outside transactions, as SQL sequences are: a rolled-back insert leaves a gap
and concurrent transactions never conflict on a counter. On a sync alias the
field is MongoEngine's.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import mongoengine
from mongoengine.base import BaseDocument, BaseField, ComplexBaseField
from mongoengine.connection import DEFAULT_CONNECTION_NAME
from pymongo import ReturnDocument

from mongoengine_async.classes import keyed_by_class, taken_in, with_subclasses
from mongoengine_async.connection import (
    get_async_db,
    is_async_connection,
    is_sync_connection,
    sync_registration,
    undefined_alias_error,
)
from mongoengine_async.errors import AsyncUsageError
from mongoengine_async.guards import blocking_call_error

__all__ = (
    "SequenceField",
    "async_fill",
    "async_fill_update",
    "has_sequences",
    "has_sequences_below",
)


class SequenceField(mongoengine.SequenceField):
    """MongoEngine's SequenceField, with its counter awaited on an async alias."""

    def __get__(self, instance: Any, owner: type[Any]) -> Any:
        if instance is not None and is_async_connection(self.db_alias):
            return BaseField.__get__(self, instance, owner)  # None while unset
        return super().__get__(instance, owner)

    def __set__(self, instance: Any, value: Any) -> None:
        if value is None and is_async_connection(self.db_alias):
            BaseField.__set__(self, instance, value)  # numbered by the save
        else:
            super().__set__(instance, value)

    def to_python(self, value: Any) -> Any:
        """MongoEngine's, but None stays None on an async alias (no I/O)."""
        if value is None and is_async_connection(self.db_alias):
            return None  # an item of a list or dict: numbered by the save
        return super().to_python(value)

    def to_mongo(self, value: Any) -> Any:
        """MongoEngine's (its ``to_python``), which numbers None."""
        return self.generate() if value is None else super().to_mongo(value)

    def generate(self) -> Any:
        self._refuse_on_sync_document()
        self._refuse_blocking(
            "generate", "await document.async_save(), which sets it, or "
        )
        return super().generate()

    def set_next_value(self, value: Any) -> Any:
        self._refuse_blocking("set_next_value", arguments="(value)")
        return super().set_next_value(value)

    def get_next_value(self) -> Any:
        self._refuse_blocking("get_next_value")
        return super().get_next_value()

    async def async_generate(self) -> Any:
        """Advance the counter and return its new value (``generate``)."""
        return (await self._async_take(1))[0]

    async def _async_take(self, count: int) -> list[Any]:
        """Advance the counter by ``count`` at once: the ``count`` values that
        ``count`` calls of ``generate`` would have returned, in order."""
        counter = await self._async_counter({"$inc": {"next": count}})
        last = counter["next"]
        return [self.value_decorator(last - count + n) for n in range(1, count + 1)]

    async def async_set_next_value(self, value: Any) -> Any:
        """Set the counter to ``value`` and return it (``set_next_value``)."""
        counter = await self._async_counter({"$set": {"next": value}})
        return self.value_decorator(counter["next"])

    async def async_get_next_value(self) -> Any:
        """The value the next number would have now (``get_next_value``): a
        preview only, as another writer may take it first."""
        collection = get_async_db(self.db_alias)[self.collection_name]
        counter = await collection.find_one({"_id": self._sequence_id()})
        return self.value_decorator(counter["next"] + 1 if counter else 1)

    async def _async_counter(self, update: dict[str, Any]) -> Any:
        collection = get_async_db(self.db_alias)[self.collection_name]
        return await collection.find_one_and_update(
            {"_id": self._sequence_id()},
            update,
            return_document=ReturnDocument.AFTER,
            upsert=True,
        )

    def _sequence_id(self) -> str:
        """The counter document's id, as MongoEngine's methods name it."""
        return f"{self.get_sequence_name()}.{self.name}"

    def _refuse_on_sync_document(self) -> None:
        """Raise when the counter is async but the field's document class is
        on a sync alias, whose ``save()`` would take the number with blocking
        I/O (where ``async_save`` is refused)."""
        owner = self.owner_document
        if not (
            is_async_connection(self.db_alias)
            and issubclass(owner, mongoengine.Document)
            and is_sync_connection(
                document_alias := owner._meta.get("db_alias", DEFAULT_CONNECTION_NAME)
            )
        ):
            return
        raise AsyncUsageError(
            f"{owner.__name__}.{self.name}: the SequenceField's alias "
            f"'{self.db_alias}' is async (connect_async), but {owner.__name__} is on "
            f"sync alias '{document_alias}', whose save() numbers it with blocking "
            f"I/O (a SequenceField does not follow its document's db_alias; pass "
            f"SequenceField(db_alias=...) naming a sync alias)"
        )

    def _refuse_blocking(
        self, name: str, before: str = "", arguments: str = "()"
    ) -> None:
        """Raise on an async counter alias, naming ``async_<name>`` to await."""
        if is_async_connection(self.db_alias):
            field = f"{self.owner_document.__name__}.{self.name}"
            use = f"{before}await {field}.async_{name}{arguments}"
            raise blocking_call_error(field, name, self.db_alias, use)


def has_sequences(cls: type[Any]) -> bool:
    """Whether documents of ``cls`` may hold a sequence value: a field of its
    own, or of a document class (or subclass) it embeds through typed fields.
    An async write of them walks their values (see :func:`async_fill`)."""
    found = _fields.get(cls)
    if found is not None and not found[1]:  # (most classes: embeds no document)
        return found[0]
    return _has_sequences(cls, set())


def has_sequences_below(cls: type[Any]) -> bool:
    """:func:`has_sequences` for ``cls`` or any of its subclasses: for a write
    of documents of ``cls`` without a look at each one's class."""
    return any(map(has_sequences, with_subclasses(cls)))


def _has_sequences(cls: type[Any], seen: set[type[Any]]) -> bool:
    """:func:`has_sequences`, not walking the classes in ``seen`` again. The
    subclasses are looked up on each call: they may be defined at any time."""
    seen.add(cls)
    own, embedded = _fields_of(cls)
    return own or any(
        _has_sequences(each, seen)
        for declared in embedded
        for each in with_subclasses(declared)
        if each not in seen
    )


# Per class: whether it declares a SequenceField, and the embedded document
# classes its typed fields declare.
_fields: dict[type[Any], tuple[bool, tuple[type[Any], ...]]] = keyed_by_class({})


def _fields_of(cls: type[Any]) -> tuple[bool, tuple[type[Any], ...]]:
    """Whether ``cls`` declares a SequenceField (alone or in typed containers),
    and the document types of its EmbeddedDocumentFields (see :func:`innermost`)."""
    found = _fields.get(cls)
    if found is None:
        taken_in(cls)
        inner = [innermost(field) for field in cls._fields.values()]
        own = any(isinstance(field, SequenceField) for field in inner)
        embedded = tuple(
            field.document_type
            for field in inner
            if isinstance(field, mongoengine.EmbeddedDocumentField)
        )
        found = _fields[cls] = (own, embedded)
    return found


def innermost(field: BaseField) -> BaseField:
    """The item field of a (nested) typed list or dict field, else ``field``:
    documents embedded through an ``EmbeddedDocumentField``, alone or in typed
    containers, are numbered; others (generic, dynamic, untyped) are not."""
    while isinstance(field, ComplexBaseField) and field.field is not None:
        field = field.field
    return field


# Where unset values go, per counter: the counter's field and its slots, each
# (container, key) once (a document given twice takes one number), in order.
_Slots = dict[tuple[int, Any], tuple[Any, Any]]
_Unset = dict[tuple[str, str, str], tuple[SequenceField, _Slots]]


async def async_fill(documents: Iterable[BaseDocument], id_only: bool = False) -> None:
    """Number every unset sequence value in ``documents`` and the documents
    they embed (only the primary key with ``id_only``), as their ``to_mongo``
    would: the value in ``_data``, not marked as changed, one ``$inc`` per
    counter. A counter on an alias that is not async is refused first."""
    unset: _Unset = {}
    for document in documents:
        _collect(document, id_only, unset)
    for field, slots in unset.values():
        values = await field._async_take(len(slots))
        for (container, key), value in zip(slots.values(), values, strict=True):
            _put(container, key, value)


def _put(container: Any, key: Any, value: Any) -> None:
    """``container[key] = value`` by the plain setter: a list or dict of the
    document (MongoEngine's ``BaseList``/``BaseDict``) marks no change."""
    if isinstance(container, dict):
        dict.__setitem__(container, key, value)
    else:
        list.__setitem__(container, key, value)


async def async_fill_update(update: Mapping[str, Any]) -> None:
    """Number the unset sequence values of the embedded documents that an
    update's keyword values hold, as MongoEngine's ``transform.update``
    numbers them (their ``to_mongo``); ``__raw__`` is not converted."""
    embedded = [
        document
        for key, value in update.items()
        if key != "__raw__"
        for document in _embedded_in(value)
    ]
    if embedded:
        await async_fill(embedded)


def _collect(document: BaseDocument, id_only: bool, unset: _Unset) -> None:
    """Add ``document``'s unset sequence values to ``unset``, by counter,
    walking its fields (and its embedded documents) in ``to_mongo``'s order."""
    names = [document._meta["id_field"]] if id_only else document
    for name in names:
        field = document._fields.get(name)
        value = document._data.get(name)
        if isinstance(field, SequenceField):
            if value is None:
                _add(field, document._data, name, unset)
            continue
        inner = None if value is None else innermost(field)
        if isinstance(inner, SequenceField):  # a list or dict of numbers
            for container, key in _none_items(value):
                _add(inner, container, key, unset)
        elif isinstance(inner, mongoengine.EmbeddedDocumentField):
            for embedded in _embedded_in(value):
                _collect(embedded, False, unset)


def _add(field: SequenceField, container: Any, key: Any, unset: _Unset) -> None:
    """Add the slot ``container[key]`` to ``field``'s counter in ``unset``."""
    if not is_async_connection(field.db_alias):
        raise _counter_alias_error(field)
    counter = (field.db_alias, field.collection_name, field._sequence_id())
    slots = unset.setdefault(counter, (field, {}))[1]
    slots[id(container), key] = (container, key)


def _counter_alias_error(field: SequenceField) -> Exception:
    """The error for a counter an async write cannot take: its alias is sync
    (MongoEngine's counter call would block the event loop) or undefined."""
    alias = field.db_alias
    if not is_sync_connection(alias):
        return undefined_alias_error(alias)
    return AsyncUsageError(
        f"{field.owner_document.__name__}.{field.name}: the SequenceField's alias "
        f"'{alias}' was registered with {sync_registration(alias)} (sync), but "
        "an async write "
        f"numbers it, which needs an async alias (a SequenceField does not follow "
        f"its document's db_alias; pass SequenceField(db_alias=...) naming an "
        f"async alias, or connect_async(alias='{alias}'))"
    )


def _none_items(value: Any) -> Iterable[tuple[Any, Any]]:
    """The (container, key) of each None in ``value``'s nested lists and dicts."""
    if isinstance(value, dict):
        items: Iterable[tuple[Any, Any]] = value.items()
    elif isinstance(value, list):
        items = enumerate(value)
    else:
        return
    for key, item in items:
        if item is None:
            yield value, key
        else:
            yield from _none_items(item)


def _embedded_in(value: Any) -> Iterable[BaseDocument]:
    """The embedded documents ``value`` holds, directly or in lists and dicts."""
    if isinstance(value, mongoengine.EmbeddedDocument):
        yield value
    elif isinstance(value, list | tuple):
        for item in value:
            yield from _embedded_in(item)
    elif isinstance(value, dict):
        for item in value.values():
            yield from _embedded_in(item)
