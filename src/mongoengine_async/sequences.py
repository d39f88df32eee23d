"""SequenceField counting on an async alias: its next values are awaited.

MongoEngine's ``SequenceField`` takes the next value of a counter document
(``find_one_and_update`` with ``$inc``, in ``mongoengine.counters`` on the
field's own ``db_alias``) whenever an unset value is read, set to None or
converted by ``to_mongo``: blocking I/O. When that alias is async, reading an
unset value gives None, and ``async_save``, ``async_insert`` and
``async_update`` first give every unset value of the documents (and of the
documents they embed through typed fields) its number, with one ``$inc`` per
counter, in the order ``to_mongo`` would have asked for them; any other
conversion raises :class:`AsyncUsageError`. The counters are
outside transactions, as SQL sequences are: a rolled-back insert leaves a gap
and concurrent transactions never conflict on a counter. On a sync alias the
field is MongoEngine's.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import mongoengine
from mongoengine.base import BaseDocument, BaseField, ComplexBaseField
from pymongo import ReturnDocument

from mongoengine_async.connection import get_async_db, is_async_connection
from mongoengine_async.guards import blocking_call_error

__all__ = ("SequenceField", "async_fill", "counts_async", "counts_async_below")


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

    def generate(self) -> Any:
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

    def _refuse_blocking(
        self, name: str, before: str = "", arguments: str = "()"
    ) -> None:
        """Raise on an async counter alias, naming ``async_<name>`` to await."""
        if is_async_connection(self.db_alias):
            field = f"{self.owner_document.__name__}.{self.name}"
            use = f"{before}await {field}.async_{name}{arguments}"
            raise blocking_call_error(field, name, self.db_alias, use)


def counts_async(cls: type[Any]) -> bool:
    """Whether documents of ``cls`` may hold a sequence value counted on an
    async alias: a field of its own, or of a document class it embeds."""
    aliases = _aliases.get(cls)
    if aliases is None:
        aliases = _aliases[cls] = _counter_aliases(cls, set())
    return bool(aliases) and any(map(is_async_connection, aliases))


def counts_async_below(cls: type[Any]) -> bool:
    """:func:`counts_async` for ``cls`` or any of its subclasses: for a write
    of documents of ``cls`` without a look at each one's class."""
    return counts_async(cls) or any(map(counts_async_below, cls.__subclasses__()))


# The counter aliases of the SequenceFields each class may hold.
_aliases: dict[type[Any], frozenset[str]] = {}


def _counter_aliases(cls: type[Any], seen: set[type[Any]]) -> frozenset[str]:
    """The counter aliases of the SequenceFields of ``cls`` and of the classes
    it embeds (see :func:`_innermost`)."""
    seen.add(cls)
    aliases: set[str] = set()
    for field in map(_innermost, cls._fields.values()):
        if isinstance(field, SequenceField):
            aliases.add(field.db_alias)
        if isinstance(field, mongoengine.EmbeddedDocumentField):
            embedded: type[Any] = field.document_type
            if embedded not in seen:
                aliases |= _counter_aliases(embedded, seen)
    return frozenset(aliases)


def _innermost(field: BaseField) -> BaseField:
    """The item field of a (nested) typed list or dict field, else ``field``:
    documents embedded through an ``EmbeddedDocumentField``, alone or in typed
    containers, are numbered; others (generic, dynamic, untyped) are not."""
    while isinstance(field, ComplexBaseField) and field.field is not None:
        field = field.field
    return field


async def async_fill(documents: Iterable[BaseDocument], id_only: bool = False) -> None:
    """Number every unset sequence value counted on an async alias in
    ``documents`` and the documents they embed (only the primary key with
    ``id_only``), as their ``to_mongo`` would: the value in ``_data``, not
    marked as changed, one ``$inc`` per counter."""
    unset: dict[tuple[str, str, str], list[tuple[BaseDocument, SequenceField]]] = {}
    for document in documents:
        _collect(document, id_only, unset)
    for slots in unset.values():
        values = await slots[0][1]._async_take(len(slots))
        for (document, field), value in zip(slots, values, strict=True):
            document._data[field.name] = value


def _collect(
    document: BaseDocument,
    id_only: bool,
    unset: dict[tuple[str, str, str], list[tuple[BaseDocument, SequenceField]]],
) -> None:
    """Add ``document``'s unset async sequence values to ``unset``, by counter,
    walking its fields (and its embedded documents) in ``to_mongo``'s order."""
    names = [document._meta["id_field"]] if id_only else document
    for name in names:
        field = document._fields.get(name)
        value = document._data.get(name)
        if value is None:
            if isinstance(field, SequenceField) and is_async_connection(field.db_alias):
                key = (field.db_alias, field.collection_name, field._sequence_id())
                unset.setdefault(key, []).append((document, field))
        elif isinstance(_innermost(field), mongoengine.EmbeddedDocumentField):
            for embedded in _embedded_in(value):
                _collect(embedded, False, unset)


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
