"""Keeps the generated plans as current as MongoEngine's code, which reads every
field setting and class hook on each call.

The plans (``from_bson``, ``to_bson``, ``deltas``) bake in what they find
when first built: the fields' settings (``choices``, ``default``, ``required``,
bounds...), the class's fields (``_fields``), its hooks (``clean``,
``to_mongo``, ``_from_son``...), its field classes' methods (``validate``,
``to_mongo``...) and the methods of MongoEngine's ``Document`` that ours
override and call (``validate``, ``to_mongo``...). No plan is made while a
MongoEngine document method that some plan does the work of is not the one
MongoEngine defined (patched: MongoEngine's code runs, and calls it).
Each class with a plan gets a :class:`_Watch`, a copy of those; the entry
points (a save, an insert, a batch of loads) ask :func:`refresh` once per
call, which compares the copy with the live values (the fields' ``__dict__``
compared in C, the hooks read again by one ``map`` over the watch's reads
and compared as one tuple) and, on any difference, forgets every plan, so
the next use builds them again. A
constructor asks only when its plan (which checks, by identity, what it
uses) refuses. A plan is kept through :func:`keep`, which drops it when
another thread's refresh forgot every plan while it was being built (it may
be built from the old values, and its watch is gone).
"""

from __future__ import annotations

import itertools
import operator
from collections.abc import MutableMapping
from functools import partial
from typing import Any

import mongoengine
from mongoengine import EmbeddedDocumentField, EnumField
from mongoengine.base import BaseField, ComplexBaseField
from mongoengine.errors import NotRegistered

from mongoengine_async.classes import keyed_by_class, taken_in

__all__ = (
    "forgets",
    "generation",
    "keep",
    "library_intact",
    "lookup",
    "refresh",
    "watch",
)

# The class hooks some plan replaces or reads (any of them changed: rebuilt).
_HOOK_NAMES = (
    "__new__",
    "__init__",
    "__setattr__",
    "_from_son",
    "clean",
    "validate",
    "to_mongo",
    "_delta",
    "_get_changed_fields",
    "_clear_changed_fields",
)
_HOOKS = operator.attrgetter(*_HOOK_NAMES)
# A document class's: those, and the update its save sends.
_DOCUMENT_HOOKS = operator.attrgetter(*_HOOK_NAMES, "_get_update_doc")

# MongoEngine's Document methods that ours override and call (FastWrites's
# ``__init__``, ``validate`` and ``to_mongo``; its ``to_mongo`` calls
# BaseDocument's): one patched there (``mock.patch.object(BaseDocument,
# "validate", ...)``) changes no class's hooks, which find ours first.
_SHADOWED_DOCUMENT_HOOKS = operator.attrgetter(
    "__init__", "validate", "to_mongo", "__base__.to_mongo"
)

# MongoEngine's document methods that some plan does the work of, as MongoEngine
# defined them when the package was imported: plans are made only while they
# are those (one patched before a class's plans are built is no hook to compare).
_LIBRARY = (
    (mongoengine.Document, _DOCUMENT_HOOKS),
    (mongoengine.Document, _SHADOWED_DOCUMENT_HOOKS),
    (mongoengine.EmbeddedDocument, _HOOKS),
)
_AS_IMPORTED = [hooks(klass) for klass, hooks in _LIBRARY]

# The methods of the field classes that some plan replaces or reads (one
# patched, by ``mock.patch.object(StringField, "validate", ...)`` say: rebuilt).
_FIELD_HOOKS = operator.attrgetter(
    "__get__",
    "__set__",
    "to_python",
    "to_mongo",
    "validate",
    "_validate",
    "_validate_choices",
)

# The methods of MongoEngine's container classes that ours override and call,
# and of ComplexBaseField and BaseField, whose ``validate`` theirs and
# EnumField's call (``super()``).
_SHADOWED_HOOKS = operator.attrgetter("to_python", "to_mongo", "validate")

# A class's fields (one added, replaced or removed) and their order.
_CLASS_FIELDS = operator.attrgetter("_fields", "_fields_ordered")

# A read made: ``read()``, without a Python call (``map`` over the reads).
_CALL = operator.methodcaller("__call__")

# The field attributes no plan bakes in: the one MongoEngine's loading sets
# for each batch (``set_auto_dereferencing``), and what our reference fields
# cache when first read (``_concrete_type``, from the watched
# ``document_type``): set, they would make every plan be built again.
_VOLATILE = {"_BaseField__auto_dereference": None, "_concrete_type": None}


class _Watch:
    """The settings, fields and hooks the plans of one class were built from."""

    __slots__ = ("kept", "lives", "reads", "snapshots")

    reads: tuple[partial[Any], ...]
    kept: tuple[Any, ...]

    def __init__(self, cls: type[Any]) -> None:
        fields: list[Any] = []
        classes = _reached_classes(cls, fields)
        # Each read (a hook getter and what it reads), made at once, and the
        # values it gave: a class's hooks and fields (a field added, replaced
        # or removed), the field classes' hooks, the shadowed ones.
        reads: list[partial[Any]] = [
            partial(_SHADOWED_DOCUMENT_HOOKS, mongoengine.Document)
        ]
        for klass in classes:
            document = issubclass(klass, mongoengine.Document)
            reads.append(partial(_DOCUMENT_HOOKS if document else _HOOKS, klass))
            reads.append(partial(_CLASS_FIELDS, klass))
        kinds = tuple(dict.fromkeys(type(field) for field in fields))
        reads.extend(partial(_FIELD_HOOKS, kind) for kind in kinds)
        reads.extend(partial(_SHADOWED_HOOKS, klass) for klass in _shadowed_of(kinds))
        self.reads = tuple(reads)
        self.kept = tuple(  # (a copy of each fields dict: the live one changes)
            (dict(value[0]), value[1]) if read.func is _CLASS_FIELDS else value
            for read, value in zip(self.reads, map(_CALL, self.reads), strict=True)
        )
        self.lives = [vars(field) for field in fields]
        self.snapshots = [dict(live) for live in self.lives]

    def settings_hold(self) -> bool:
        """Whether the fields' settings are those copied (a change of the
        volatile attributes alone is taken in, as a new copy)."""
        # Copied before compared: a change meanwhile (another thread's) is
        # not taken in unseen, and the next refresh meets it.
        copies = [dict(live) for live in self.lives]
        if any(map(_differs, copies, self.snapshots)):
            return False
        self.snapshots = copies
        return True


def _shadowed_of(kinds: tuple[type[Any], ...]) -> tuple[type[Any], ...]:
    """The classes whose methods those of field classes ``kinds`` call through
    ``super()``, which a patch there changes (see :data:`_SHADOWED_HOOKS`)."""
    shadowed = dict.fromkeys(filter(None, map(_shadowed, kinds)))
    if any(issubclass(kind, ComplexBaseField) for kind in kinds):
        shadowed[ComplexBaseField] = None
    if any(issubclass(kind, EnumField) for kind in kinds):
        shadowed[BaseField] = None  # (whose validate EnumField's calls)
    return tuple(shadowed)


def _shadowed(kind: type[Any]) -> type[Any] | None:
    """For a container field class of this package, the MongoEngine class it
    extends, whose ``to_python`` and ``to_mongo`` its own call and the plans
    take for them: one patched there changes the field without changing the
    methods of its class."""
    if not (
        kind.__module__.startswith("mongoengine_async.")
        and issubclass(kind, ComplexBaseField)
    ):
        return None
    return next(k for k in kind.__mro__ if k.__module__.startswith("mongoengine."))


def _differs(live: dict[str, Any], snapshot: dict[str, Any]) -> bool:
    """Whether a field's settings changed, the volatile attributes aside."""
    return {**live, **_VOLATILE} != {**snapshot, **_VOLATILE}


def _reached_classes(cls: type[Any], fields: list[Any]) -> list[type[Any]]:
    """``cls`` and the embedded document classes its fields hold (whose plans
    its own use), their fields (item fields too) added to ``fields``."""
    classes = [cls]
    for klass in classes:
        for field in klass._fields.values():
            while field is not None:
                fields.append(field)
                if isinstance(field, EmbeddedDocumentField):
                    try:
                        embedded = field.document_type
                    except NotRegistered:  # not defined yet: no plan of it either
                        embedded = None
                    if isinstance(embedded, type) and embedded not in classes:
                        classes.append(embedded)
                field = getattr(field, "field", None)
    return classes


def library_intact() -> bool:
    """Whether MongoEngine's document methods the plans do the work of are
    those it defined (none patched): else no plan is made, and MongoEngine's
    code runs, calling the patched method."""
    return all(
        hooks(klass) == kept
        for (klass, hooks), kept in zip(_LIBRARY, _AS_IMPORTED, strict=True)
    )


_watches: dict[type[Any], _Watch] = keyed_by_class({})
_caches: list[MutableMapping[Any, Any]] = []

# A stamp of the last time every plan was forgotten (each a new number, taken
# atomically): a plan built across one was maybe built from what changed, and
# its watch is gone.
_forgettings = itertools.count(1)
_generation = 0


def forgets(cache: MutableMapping[Any, Any]) -> None:
    """Register a module's plans by class, emptied when a watched class
    changes; a class defined again has its own dropped (``classes.taken_in``)."""
    _caches.append(cache)
    keyed_by_class(cache)


def generation() -> int:
    """The stamp to hand :func:`keep`, read before :func:`watch` and the build."""
    return _generation


def lookup(mapping: str, key: str) -> str:
    """The source of ``mapping.get(key)`` in a generated plan, read without
    a call (``key`` a string; ``mapping`` a local name bound to a dict)."""
    return f"({mapping}[{key!r}] if {key!r} in {mapping} else None)"


def keep(cache: MutableMapping[Any, Any], cls: type[Any], plan: Any, since: int) -> Any:
    """``cache[cls] = plan`` and ``plan``; not kept if every plan was forgotten
    since ``since`` (another thread's :func:`refresh` met a change while this
    one was built: it may be built from the old values, and its watch is
    gone). Checked after storing it, as a refresh stamps before it clears."""
    cache[cls] = plan
    if _generation != since:
        cache.pop(cls, None)
    return plan


def watch(cls: type[Any]) -> None:
    """Note what ``cls``'s plans are being built from (once, until forgotten)."""
    if cls not in _watches:
        taken_in(cls)
        _watches[cls] = _Watch(cls)


def refresh(cls: type[Any]) -> None:
    """Forget every plan if a field setting, field or hook of ``cls`` (or of
    an embedded class it holds), a method of one of their field classes, or
    a method of MongoEngine's Document that ours call, changed since its
    plans were built. The unchanged case, every time, costs no Python call
    but ``settings_hold``'s when a setting changed: the hooks are read by
    ``map`` over the watch's reads, and compared as one tuple."""
    try:
        kept = _watches[cls]
    except KeyError:
        return  # no plan built for it since the last change
    # The hooks: each read made again, compared with what it gave (one tuple).
    if (kept.lives == kept.snapshots or kept.settings_hold()) and tuple(
        map(_CALL, kept.reads)
    ) == kept.kept:
        return
    global _generation
    # The watches first: a plan whose build reads the new stamp makes its
    # watch anew (found, an old watch about to go would leave it unwatched).
    _watches.clear()
    _generation = next(_forgettings)  # (before clearing the plans: see keep)
    for cache in _caches:
        cache.clear()
