"""Models that use MongoEngine's own classes where this package has its own.

MongoEngine's ``ReferenceField`` (and the other reference, file and container
fields) dereference with blocking I/O, and a ``mongoengine.Document`` knows no
async alias: on an async alias they fail deep inside MongoEngine ("The source
SON object needs to be of type 'dict'", "You have not defined a default
connection"). :func:`check_model` finds them when a class is first used on an
async alias and raises an :class:`AsyncUsageError` that names the fix.
"""

from __future__ import annotations

from typing import Any

import mongoengine
from mongoengine.base import BaseField, ComplexBaseField
from mongoengine.errors import NotRegistered

from mongoengine_async import fields
from mongoengine_async.errors import AsyncUsageError
from mongoengine_async.guards import (
    is_plain_async_document,
    plain_document_error,
)
from mongoengine_async.queryset import BaseQuerySet

__all__ = ("check_model", "check_queryset_class")

# Our field classes, by the name of the MongoEngine class each replaces.
_OURS: dict[str, type[Any]] = {name: getattr(fields, name) for name in fields.__all__}

# Item fields for which MongoEngine's containers dereference or do file I/O.
_DOING_IO = (
    mongoengine.ReferenceField,
    mongoengine.GenericReferenceField,
    mongoengine.CachedReferenceField,
    mongoengine.FileField,
)


def check_model(cls: type[Any], alias: str) -> None:
    """Raise AsyncUsageError when ``cls``, used on async ``alias``, has a field
    (or a field of a document it embeds) of MongoEngine's own class where ours
    exists, or refers to a ``mongoengine.Document`` on an async alias."""
    _check_fields(cls, cls.__name__, alias, set())


def check_queryset_class(cls: type[Any], alias: str) -> None:
    """Raise AsyncUsageError when ``cls``'s ``meta['queryset_class']`` is not one
    of ours: MongoEngine's QuerySet has no async terminal and iterates an
    AsyncCursor as a sync one ("'AsyncCursor' object is not an iterator")."""
    queryset_class = cls._meta.get("queryset_class")
    if queryset_class is None or issubclass(queryset_class, BaseQuerySet):
        return
    raise AsyncUsageError(
        f"{cls.__name__}'s meta queryset_class {queryset_class.__name__} is a "
        f"mongoengine QuerySet, which knows no async alias ('{alias}'): subclass "
        "mongoengine_async.QuerySet (from mongoengine_async import *)"
    )


def _check_fields(cls: type[Any], path: str, alias: str, seen: set[type[Any]]) -> None:
    seen.add(cls)
    for name, field in cls._fields.items():
        _check_field(field, f"{path}.{name}", alias, seen)


def _check_field(field: BaseField, path: str, alias: str, seen: set[type[Any]]) -> None:
    name = _replaced_name(field)
    if name is not None and _does_io(field):
        raise AsyncUsageError(
            f"{path} is mongoengine.{name}, which does blocking I/O on async "
            f"alias '{alias}': use mongoengine_async.{name} "
            "(from mongoengine_async import *)"
        )
    target = _referenced_class(field)
    if target is not None and is_plain_async_document(target):
        raise plain_document_error(target, f"{path} refers to it")
    if isinstance(field, ComplexBaseField) and field.field is not None:
        _check_field(field.field, path, alias, seen)
    # (only an embedded field's class: a reference's may be undefined yet)
    embedded = isinstance(field, mongoengine.EmbeddedDocumentField)
    if embedded and field.document_type not in seen:
        _check_fields(field.document_type, path, alias, seen)


def _replaced_name(field: BaseField) -> str | None:
    """The name of MongoEngine's class of ``field`` when it is MongoEngine's
    (or a subclass not of ours) and this package replaces it."""
    for klass in type(field).__mro__:
        if klass.__module__.startswith("mongoengine.") and klass.__name__ in _OURS:
            name = klass.__name__
            return None if isinstance(field, _OURS[name]) else name
    return None


def _does_io(field: BaseField) -> bool:
    """Whether MongoEngine's ``field`` does I/O on reads: a reference or file
    field, or a container that dereferences (untyped, or holding those)."""
    if not isinstance(field, ComplexBaseField):
        return True
    item = field.field
    return (
        item is None
        or isinstance(item, _DOING_IO)
        or (isinstance(item, ComplexBaseField) and _does_io(item))
    )


def _referenced_class(field: BaseField) -> type[Any] | None:
    """The class a (lazy, cached) reference field points to, if defined."""
    return _defined_class(field) if isinstance(field, _REFERENCES) else None


def _defined_class(field: BaseField) -> type[Any] | None:
    """``field.document_type``, or None for a class it names that is not
    defined yet: MongoEngine looks it up only to dereference (a read then
    refuses a ``mongoengine.Document``)."""
    try:
        return field.document_type
    except NotRegistered:
        return None


_REFERENCES = (
    mongoengine.ReferenceField,
    mongoengine.LazyReferenceField,
    mongoengine.CachedReferenceField,
)
