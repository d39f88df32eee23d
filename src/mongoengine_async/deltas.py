"""The update a save of a loaded document sends, with less work: same update,
same state after.

MongoEngine's ``save`` of a loaded document asks ``_get_update_doc`` for the
update (``_delta``: ``_get_changed_fields`` and another full ``to_mongo``),
then ``_clear_changed_fields`` (``_get_changed_fields`` once more). Most saves
are plain: the changes are whole top-level fields, and no other value holds a
change of its own (no changed embedded document; lists and dicts of plain
values). For those, :func:`update_doc` builds the ``$set``/``$unset`` from
the ``to_mongo`` the save made already, and :func:`clear_changes` empties the
list. Anything else (nested changes, dynamic documents, classes that override
these methods) goes to MongoEngine's own methods. ``tests/test_deltas.py``
checks that both give identical updates and leave identical documents.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import enum
import numbers
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping
from decimal import Decimal
from typing import Any

import mongoengine
from bson import ObjectId
from mongoengine.base import BaseDict, BaseDocument, BaseField, BaseList
from mongoengine.base.datastructures import EmbeddedDocumentList
from pymongo.asynchronous.client_session import AsyncClientSession

from mongoengine_async import plan_watch
from mongoengine_async.context import journal
from mongoengine_async.proxies import LOADED_PLAIN

__all__ = (
    "Unlisted",
    "clear_changes",
    "drop_sent",
    "end_watch",
    "give_back_changes",
    "journal_bookkeeping",
    "keep_watching",
    "listed_changes",
    "listed_sent",
    "own_list",
    "plain_clear",
    "plain_update",
    "put_changes",
    "reset_changes",
    "take_changes",
    "takes_over",
    "unlisted",
    "unlisted_changes",
    "update_doc",
    "watch_changes",
)

# Exact types whose values hold no change of their own (MongoEngine looks into
# embedded documents, and into lists, tuples and dicts, only).
_FLAT = frozenset(
    [
        type(None),
        str,
        int,
        float,
        bool,
        bytes,
        ObjectId,
        Decimal,
        uuid.UUID,
        datetime.datetime,
        datetime.date,
        *LOADED_PLAIN,
    ]
)
_SEQUENCES = frozenset([list, tuple, BaseList, EmbeddedDocumentList])
_MAPPINGS = frozenset([dict, BaseDict])
_CONTAINERS = (list, tuple, dict)
_REFERENCES = (
    mongoengine.ReferenceField,
    mongoengine.LazyReferenceField,
    mongoengine.GenericReferenceField,
    mongoengine.GenericLazyReferenceField,
)

# How _get_changed_fields treats a field's value (by the field's kind).
_PLAIN = 0  # looked into: embedded documents, containers
_SKIPPED = 1  # a ReferenceField: never looked into
_REFERENCE_ITEMS = 2  # a container of references: looked into unless a container
_ORDERED = 3  # a SortedListField with ordering: a list needs MongoEngine's code
_LIST = 4  # a list field otherwise: looked into, as _PLAIN


def _kind(field: BaseField) -> int:
    """How ``_get_changed_fields`` looks into the values of ``field``."""
    if isinstance(field, mongoengine.ReferenceField):
        return _SKIPPED
    if isinstance(getattr(field, "field", None), _REFERENCES):
        return _REFERENCE_ITEMS
    if isinstance(field, mongoengine.SortedListField) and field._ordering:
        return _ORDERED
    return _LIST if isinstance(field, mongoengine.ListField) else _PLAIN


# The check of one field's value, by kind (``v``: the value): True when it
# holds no change of its own.
_CHECKS = {
    _PLAIN: "type(v) in FLAT or quiet_value(v)",
    # A list field's value: checked here when it is a list of flat values.
    _LIST: "type(v) in FLAT or (type(v) in SEQUENCES and FLAT.issuperset(map(type, v)))"
    " or quiet_value(v)",
    _REFERENCE_ITEMS: "type(v) in FLAT or isinstance(v, CONTAINERS)",
    _ORDERED: "type(v) in FLAT",
}


class _Plan:
    """What one class's saves need to know about its fields."""

    __slots__ = ("defaults", "has_dict", "paths", "plain_reads", "quiet")

    def __init__(self, cls: type[Any]) -> None:
        # Whether its documents may hold methods of their own (an instance dict).
        self.has_dict = bool(cls.__dictoffset__)
        fields, reverse = cls._fields, cls._reverse_db_field_map
        # The default _delta compares a falsy value with, by top-level path.
        self.defaults: dict[str, Any] = {}
        # The top-level paths whose attribute is the stored value, by path.
        self.plain_reads: dict[str, str] = {}
        for field in fields.values():
            path = field.db_field
            name = reverse.get(path, path)
            # A path that is some field's name takes that field's default.
            named = fields[path] if path in fields else fields.get(name)
            self.defaults[path] = None if named is None else named.default
            if name in fields and type(fields[name]).__get__ is BaseField.__get__:
                self.plain_reads[path] = name
        self.paths = frozenset(self.defaults)
        self.quiet = _quiet_function(cls)


def _quiet_function(cls: type[Any]) -> Callable[[Any], bool]:
    """``quiet(document)``, generated for ``cls``: whether no value of the
    document holds a change of its own (one check per field, by its kind)."""
    lines = ["def quiet(document):", "    data = document._data"]
    for name, field in cls._fields.items():
        check = _CHECKS.get(_kind(field))
        if check is not None:
            lines += [
                f"    v = {plan_watch.lookup('data', name)}",
                f"    if not ({check}):",
            ]
            lines.append("        return False")
    lines.append("    return True")
    namespace: dict[str, Any] = {
        "CONTAINERS": _CONTAINERS,
        "FLAT": _FLAT,
        "SEQUENCES": _SEQUENCES,
        "quiet_value": _quiet,
    }
    exec(
        compile("\n".join(lines) + "\n", f"<quiet of {cls.__name__}>", "exec"),
        namespace,
    )
    return namespace["quiet"]


class _Plans(dict[type[Any], "_Plan | None"]):
    """The delta plans, by class: a known class's is one subscript, without a
    Python call."""

    def __missing__(self, cls: type[Any]) -> _Plan | None:
        """Make the plan of ``cls``, or None when only MongoEngine's code is exact."""
        since = plan_watch.generation()
        plan_watch.watch(cls)
        own = (
            not cls._dynamic
            and plan_watch.library_intact()  # none of MongoEngine's patched
            and cls.__setattr__ is BaseDocument.__setattr__
            and cls._get_changed_fields is BaseDocument._get_changed_fields
            and cls._clear_changed_fields in _LIBRARY_METHODS["_clear_changed_fields"]
            and cls._delta is BaseDocument._delta
            and (
                issubclass(cls, mongoengine.EmbeddedDocument)
                or cls._get_update_doc in _LIBRARY_METHODS["_get_update_doc"]
            )
        )
        return plan_watch.keep(self, cls, _Plan(cls) if own else None, since)


_plans = _Plans()
plan_watch.forgets(_plans)
# MongoEngine's methods whose work the plans do, and our Document's that
# override them (see takes_over): a class resolving to one of them is planned.
_LIBRARY_METHODS: dict[str, set[Callable[..., Any]]] = {
    "_get_update_doc": {mongoengine.Document._get_update_doc},
    "_clear_changed_fields": {BaseDocument._clear_changed_fields},
}


def takes_over(*methods: Callable[..., Any]) -> None:
    """Note ``methods`` (our Document's ``_get_update_doc`` and
    ``_clear_changed_fields``, which ask :func:`plain_update` and
    :func:`plain_clear` first) as the library's own."""
    for method in methods:
        _LIBRARY_METHODS[method.__name__].add(method)


# A document's list of changes set and removed around BaseDocument.__setattr__
# (whose checks are no-ops for it), where reads find it: in the instance dict
# of a document of ours (see from_bson.LoadedState), in MongoEngine's slot for
# an embedded document.
_CHANGES = "_changed_fields"
_set_attribute, _delete_attribute = object.__setattr__, object.__delattr__


def _quiet(value: Any) -> bool:
    """Whether ``value`` (not of a flat type) holds no change of its own."""
    kind = type(value)
    if kind in _SEQUENCES:
        return _FLAT.issuperset(map(type, value)) or all(map(_quiet_item, value))
    if kind in _MAPPINGS:
        return all(map(_quiet_item, value.values()))
    if issubclass(kind, enum.Enum):  # a member, looked into only if a container
        return not issubclass(kind, _CONTAINERS)
    if not issubclass(kind, mongoengine.EmbeddedDocument):
        return False
    plan = _plans[kind]
    return (
        plan is not None
        and not getattr(value, "_changed_fields", None)
        and plan.quiet(value)
    )


def _quiet_item(value: Any) -> bool:
    return type(value) in _FLAT or _quiet(value)


def _plain(document: Any, changed: list[str]) -> _Plan | None:
    """The plan of ``document``'s class when the save of ``changed`` is plain."""
    plan = _plans[type(document)]
    if (
        plan is None
        or (changed and not plan.paths.issuperset(changed))
        or not plan.quiet(document)
    ):
        return None
    if plan.has_dict:  # one of those methods set on the document itself
        state = document.__dict__  # (mock.patch.object(document, "_delta", ...))
        if (
            "_get_update_doc" in state
            or "_delta" in state
            or "_get_changed_fields" in state
            or "_clear_changed_fields" in state
        ):
            return None
    return plan


def update_doc(document: Any, son: Mapping[str, Any]) -> dict[str, Any]:
    """``document._get_update_doc()``, given ``son``, its ``to_mongo()``."""
    # Without the list (never set on this document), _delta sets everything.
    changed = getattr(document, "_changed_fields", None)
    plan = None if changed is None else _plain(document, changed)
    if plan is None or changed is None:
        return _update_naming_dotted_keys(document, son)
    return _set_and_unset(plan, changed, son)


def plain_update(
    document: Any, dump: Callable[[Any], Mapping[str, Any]]
) -> dict[str, Any] | None:
    """``document._get_update_doc()`` when its save is plain, built from
    ``dump(document)`` (its ``to_mongo()``, asked only then); None otherwise
    (MongoEngine's ``_delta`` must make it)."""
    changed = getattr(document, "_changed_fields", None)
    plan = None if changed is None else _plain(document, changed)
    if plan is None or changed is None:
        return None
    return _set_and_unset(plan, changed, dump(document))


def _set_and_unset(
    plan: _Plan, changed: list[str], son: Mapping[str, Any]
) -> dict[str, Any]:
    """The ``$set``/``$unset`` of the ``changed`` top-level paths, their
    values taken from ``son``, as MongoEngine's ``_delta`` gives them."""
    updates, removals = {}, {}
    for path in changed:
        value = son.get(path)
        # A falsy value (not a number) equal to the field's default unsets it.
        default = plan.defaults[path]
        if (
            value
            or isinstance(value, numbers.Number | bool)
            or value != (default() if callable(default) else default)
        ):
            updates[path] = value
        else:
            removals[path] = 1
    update: dict[str, Any] = {}
    if updates:
        update["$set"] = updates
    if removals:
        update["$unset"] = removals
    return update


def _update_naming_dotted_keys(document: Any, son: Mapping[str, Any]) -> dict:
    """MongoEngine's ``_get_update_doc()``, each dict holding a key with a ``.``
    that a change runs into set whole (see :func:`_mark_dotted_holders`)."""
    try:
        update = document._get_update_doc()
    except AttributeError:  # (_delta walking into such a key's embedded document)
        if not _mark_dotted_holders(document, document._get_changed_fields(), son):
            raise
        return document._get_update_doc()
    if _mark_dotted_holders(
        document, [*update.get("$set", ()), *update.get("$unset", ())], son
    ):  # (rare)
        update = document._get_update_doc()
    return update


def _mark_dotted_holders(
    document: Any, paths: Iterable[str], son: Mapping[str, Any]
) -> bool:
    """Mark as changed, in the document holding it, each dict of ``son`` that
    one of ``paths`` runs into and that holds a key with a ``.``, so that the
    update sets it whole; returns whether there was one. A path cannot name
    such a key: for ``d["a.b"] = 1`` MongoEngine's update unsets ``d.a.b``
    (nested fields), and the value is lost."""
    holders = {holder for path in paths if (holder := _dotted_holder(son, path))}
    for holder in holders:
        parts = holder.split(".")
        found = _descend(document, parts)  # (the owner of the dict itself)
        if found is not None:
            owner, start, value = found
            first, dot, tail = ".".join(parts[start:]).partition(".")
            # (_mark_as_changed maps its first name to its db_field; it drops
            # the changes inside the dict)
            owner._mark_as_changed(
                owner._reverse_db_field_map.get(first, first) + dot + tail
            )
            _clear_within(value)
    return bool(holders)


def _clear_within(value: Any) -> None:
    """Empty the lists of changes of the embedded documents in ``value``, a
    dict the update sets whole: its value holds them. MongoEngine's clearing
    walks each one's own paths, and raises on one naming a key with a ``.``
    (``d.p.q`` for ``m["a.b"].d["p.q"] = 2``)."""
    if isinstance(value, mongoengine.EmbeddedDocument):  # (not a reference's)
        if getattr(value, "_changed_fields", None):
            _set_attribute(value, _CHANGES, [])
        items: Iterable[Any] = value._data.values()
    elif isinstance(value, dict):
        items = value.values()
    elif isinstance(value, list | tuple):
        items = value
    else:
        return
    for item in items:
        _clear_within(item)


def _dotted_holder(son: Mapping[str, Any], path: str) -> str | None:
    """The path of the dict of ``son`` that ``path`` runs into, if the rest of
    ``path`` may name a key of it with a ``.``: one it holds, or, going deeper,
    a next part it lacks (``d.a.b`` for ``d["a.b"]``, kept or deleted: ``d``);
    None when ``path`` names its value."""
    parts = path.split(".")
    value: Any = son
    for index, part in enumerate(parts):
        if isinstance(value, Mapping):
            rest = parts[index:]
            if (
                index
                and len(rest) > 1
                and (
                    part not in value
                    or any(
                        ".".join(rest[:end]) in value for end in range(2, len(rest) + 1)
                    )
                )
            ):
                return ".".join(parts[:index])
            value = value.get(part)
        elif isinstance(value, list) and part.isdigit() and int(part) < len(value):
            value = value[int(part)]
        else:
            return None
    return None


def clear_changes(document: Any) -> None:
    """``document._clear_changed_fields()``, as a save ends."""
    changed = getattr(document, "_changed_fields", [])  # none yet: no change
    if type(changed) is _Watched:
        # Another save's steps after its write watch the list (this save sent
        # nothing: it took none): emptied in place, it still notes the changes
        # made since, which that save keeps as it ends.
        document._clear_changed_fields()  # (the nested ones too)
        del changed[:]
        _set_attribute(document, _CHANGES, changed)
        return
    if not _cleared(document, changed):
        document._clear_changed_fields()


def plain_clear(document: Any) -> bool:
    """``document._clear_changed_fields()`` when its changes are plain (whole
    top-level fields of flat values): done, True; else False, undone
    (MongoEngine's must walk into the values)."""
    changed = getattr(document, "_changed_fields", [])  # none yet: no change
    return type(changed) is not _Watched and _cleared(document, changed)


def _cleared(document: Any, changed: list[str]) -> bool:
    """Empty ``document``'s list of changes, ``changed``, when nothing else
    holds one; whether it did."""
    if not _flat_changes(document, changed):
        return False
    _set_attribute(document, _CHANGES, [])  # what BaseDocument.__setattr__ does
    return True


def _flat_changes(document: Any, changed: list[str]) -> bool:
    """Whether ``changed``, paths of ``document``, are whole top-level fields
    holding flat values: MongoEngine's clearing of them only empties the
    list. (It reads every other path, and a read wraps a list or dict set
    whole in a ``BaseList`` or ``BaseDict``, a copy, for change tracking.)"""
    plan = _plain(document, changed)
    if plan is None:
        return False
    data = document._data
    for path in changed:
        name = plan.plain_reads.get(path)
        if name is None or type(data.get(name)) not in _FLAT:
            return False
    return True


def take_changes(document: Any) -> list[str] | None:
    """Give ``document`` a fresh, empty list of changes and return its own
    (None when it has none: every field counts as changed), as a save's write
    is sent: what changes while the write is awaited goes to the fresh list.
    Changes held by embedded documents are taken too (returned as their
    paths, and cleared), so that those made meanwhile are told apart; for a
    document without a list, in an :class:`Unlisted` (it still has none)."""
    sent = getattr(document, "_changed_fields", None)
    if type(sent) is _Watched:  # another save's steps after its write watch it
        sent.taken = True
    if _nested_changes(document):
        if sent is not None:  # (its own, as they are: not those computed)
            sent = list(sent) + _embedded_paths(document)
        else:  # (a new document's: its post_save receivers see them)
            sent = unlisted_changes(document)
        # (the nested ones too, by _data: MongoEngine's clearing reads the
        # changed fields, wrapping a list set whole in a BaseList, only once
        # its post_save was sent, as this save's end does)
        _set_attribute(document, _CHANGES, [])
        _clear_within(document._data)
    else:
        _set_attribute(document, _CHANGES, [])
    return sent


class Unlisted(list[str]):
    """The changes :func:`take_changes` took from the embedded documents of
    a document that has no list of its own (every field counts as changed:
    a new one), by their paths; given back to them alone."""

    __slots__ = ()


def listed_sent(sent: list[str] | None) -> list[str] | None:
    """A copy of the changes a save took (:func:`take_changes`), as its
    ``post_save`` shows them: those of a document that had no list in an
    :class:`Unlisted` (given back to its embedded documents alone)."""
    return None if sent is None else type(sent)(sent)


def own_list(changes: list[str] | None) -> bool:
    """Whether ``changes`` (:func:`listed_sent`, :func:`listed_changes`)
    are those of a document that had a list of its own."""
    return changes is not None and type(changes) is not Unlisted


def unlisted_changes(document: Any) -> Unlisted | None:
    """The changes of ``document``'s embedded documents, by their paths, as
    those of a document without a list of its own; None when there are none."""
    return Unlisted(_embedded_paths(document)) or None


def _embedded_paths(document: Any) -> list[str]:
    """The changes held by the embedded documents of ``document``, each by
    its path, where they are: MongoEngine's ``post_save`` receivers still
    see them there, also those ``_get_changed_fields()`` leaves out (inside
    a value changed whole, at any depth; in a sorted list)."""
    paths: list[str] = []
    for name, value in document._data.items():
        if type(value) not in _FLAT:
            key = document._db_field_map.get(name, name)
            _embedded_changes(value, key, paths)
    return paths


def _embedded_changes(value: Any, path: str, paths: list[str]) -> None:
    """Add to ``paths`` the changes of the embedded documents in ``value``
    (at ``path``), theirs and those of the ones inside them."""
    if isinstance(value, mongoengine.EmbeddedDocument):
        paths.extend(f"{path}.{name}" for name in value._changed_fields or ())
        for name, item in value._data.items():
            key = value._db_field_map.get(name, name)
            _embedded_changes(item, f"{path}.{key}", paths)
    elif type(value) in _SEQUENCES:
        for index, item in enumerate(value):
            _embedded_changes(item, f"{path}.{index}", paths)
    elif type(value) in _MAPPINGS:
        for key, item in value.items():
            _embedded_changes(item, f"{path}.{key}", paths)


def give_back_changes(document: Any, sent: list[str] | None) -> list[str] | None:
    """Put back the list :func:`take_changes` took, with the changes made
    meanwhile added to it; those inside embedded documents go back to the
    embedded documents holding them (see :func:`put_changes`). Returns the
    changes made meanwhile (the write did not send them; those in embedded
    documents by their paths). None when the list was removed meanwhile (by
    an aborted transaction's undo): every field counts as changed, and the
    document is left so."""
    if _nested_changes(document):
        meanwhile = document._get_changed_fields()  # (they stay where they are)
    else:
        meanwhile = getattr(document, "_changed_fields", None)
        if meanwhile is None:
            return None
    if type(sent) is Unlisted:  # (before the list goes: what supersedes them)
        _give_nested(document, {path: _owner(document, path) for path in sent})
        put_changes(document, None)
        return meanwhile
    hidden = _under_listed(sent)
    put_changes(document, sent)
    for path in hidden:  # (their holder is listed whole: put back as they were)
        _mark_on_owner(_owner(document, path))
    # No list: every field counts as changed already; no change meanwhile
    # (most saves): nothing to add.
    if sent is not None and meanwhile:
        _merge_changes(document, meanwhile)
    return meanwhile


def drop_sent(document: Any, sent: Any) -> bool:
    """Whether a save whose write landed, with nothing after it, may leave
    ``document`` the list :func:`take_changes` gave it, without giving back
    what it sent (``sent``) and clearing it (the same end in fewer calls):
    nothing changed while the write was awaited (that list is empty, no
    embedded document holds a change), MongoEngine's clearing is not
    overridden, and it would not read what was sent: none (nothing listed),
    or whole fields of flat values (a list or dict set whole is read, so
    wrapped, as MongoEngine's save ends)."""
    changes = getattr(document, "_changed_fields", None)
    return (
        type(changes) is list
        and not changes
        and _plain(document, []) is not None
        and (sent is None or _flat_changes(document, sent))
    )


def keep_watching(document: Any, sent: Any) -> None:
    """As a save with nothing after its write ends: when the list its write
    took (``sent``) was another save's, watched by its steps after its
    write, put it back on ``document`` holding the changes left for the next
    save, noted as other tasks' (kept), and not what it sent (sent); those
    steps then tell their own task's changes since, which that save clears
    as MongoEngine's does (a plain list left kept them). Not once those
    steps ended: the document keeps its plain list."""
    if type(sent) is not _Watched or sent.ended:
        return
    own = getattr(document, "_changed_fields", None)
    if own is None:  # (an aborted transaction's undo: everything changed)
        return
    kept = document._get_changed_fields()  # (its embedded documents' too)
    sent[:] = own  # (not noted: no task's change)
    sent.others[:] = kept
    _set_attribute(document, _CHANGES, sent)


def _nested_changes(document: Any) -> bool:
    """Whether some value of ``document`` may hold changes of its own (an
    embedded document's): False for most saves (its class's plan proves it,
    or, without a plan, its values are flat, or lists or dicts of flat ones)."""
    plan = _plans[type(document)]
    if plan is not None:
        return not plan.quiet(document)
    return not all(map(_flat_value, document._data.values()))


def _flat_value(value: Any) -> bool:
    kind = type(value)
    if kind in _FLAT:
        return True
    if kind in _SEQUENCES:
        return _FLAT.issuperset(map(type, value))
    return kind in _MAPPINGS and _FLAT.issuperset(map(type, value.values()))


class _Watched(list[str]):
    """A document's list of changes while its save awaits its steps after the
    write (cascade, cached references, post_save receivers): it notes the
    paths other tasks than the save's mark as changed (``others``): those
    ``_mark_as_changed`` appends, and those it finds there already (the path,
    or one holding it, that the save sent); ``taken`` once another save
    took it (to send what it holds, or, having nothing to send, for its own
    steps after its write)."""

    __slots__ = ("ended", "nested", "others", "taken", "task")

    def __init__(self, changes: Iterable[str], task: asyncio.Task[Any] | None) -> None:
        super().__init__(changes)
        self.task = task
        self.others: list[str] = []
        self.taken = False
        self.ended = False  # (the save's steps ended: it watches no more)
        # A document's own list: the watched lists of its embedded documents
        # (its _Watch's), which a reload or a modify changes.
        self.nested: list[tuple[str, Any, _Watched]] | None = None

    def __contains__(self, path: object) -> bool:
        found = super().__contains__(path)
        if found:
            self._note(path)  # type: ignore[arg-type]
        return found

    def append(self, path: str) -> None:
        self._note(path)
        super().append(path)

    def _note(self, path: str) -> None:
        try:
            task = asyncio.current_task()
        except RuntimeError:  # another thread, without a running loop
            task = None
        if task is not self.task:
            self.others.append(path)

    def __reduce__(self) -> tuple[type[list[str]], tuple[list[str]]]:
        """Pickled and copied as the plain list it stands for (a post_save
        receiver may pickle or deep-copy the document; a task cannot be)."""
        return list, (list(self),)


class _Watch:
    """The watching lists a save's steps after its write put on a document
    (``top``) and on the embedded documents it holds (``nested``: each with
    its path, as ``_get_changed_fields`` prefixes their changes), and the
    changes made while the write was awaited (``meanwhile``)."""

    __slots__ = ("meanwhile", "nested", "top")

    def __init__(
        self,
        top: _Watched,
        nested: list[tuple[str, Any, _Watched]],
        meanwhile: list[str],
    ) -> None:
        self.top, self.nested, self.meanwhile = top, nested, meanwhile

    def others(self) -> list[str]:
        """The paths other tasks marked as changed, once each; the embedded
        documents' lists get back plain lists."""
        paths = list(self.top.others)
        for prefix, embedded, watched in self.nested:
            if getattr(embedded, "_changed_fields", None) is watched:
                _set_attribute(embedded, _CHANGES, list(watched))
            paths += [prefix + path for path in watched.others]
        return list(dict.fromkeys(paths))


def watch_changes(document: Any, meanwhile: list[str] | None) -> _Watch | None:
    """Make ``document``'s list of changes, and those of the embedded
    documents it holds, note the changes other tasks make, as a save's steps
    after its write begin; returns the watch, for :func:`end_watch`. A
    document the save inserted has no list (everything counts as changed):
    it gets one holding what changed since the insert was sent (``meanwhile``:
    another save meanwhile sends that), unless every field counts as changed
    again (None: an aborted transaction's undo), which it is left to mean."""
    if meanwhile is None:
        return None
    task = asyncio.current_task()
    if getattr(document, "_changed_fields", None) is None:
        put_changes(document, list(meanwhile))
    top = _watched(document, task)
    nested: list[tuple[str, Any, _Watched]] = []
    if _nested_values(document):
        _watch_nested(document, "", task, nested)
    top.nested = nested
    return _Watch(top, nested, meanwhile)


def _watched(document: Any, task: asyncio.Task[Any] | None) -> _Watched:
    """Put a watching list of changes on ``document`` (holding its own)."""
    changes = getattr(document, "_changed_fields", None)
    if type(changes) is _Watched:  # another save's steps: this one takes over
        changes.taken = True
    watched = _Watched(changes or (), task)
    _set_attribute(document, _CHANGES, watched)
    return watched


def _nested_values(document: Any) -> bool:
    """Whether ``document`` may hold embedded documents (the plain case: no)."""
    plan = _plans[type(document)]
    return plan is None or not all(
        type(value) in _FLAT for value in document._data.values()
    )


def _watch_nested(
    document: Any,
    prefix: str,
    task: asyncio.Task[Any] | None,
    nested: list[tuple[str, Any, _Watched]],
    before: list[tuple[str, Any, _Watched]] | None = None,
) -> None:
    """Watch the lists of the embedded documents in ``document``'s values,
    where ``_get_changed_fields`` looks for their changes (not in references);
    those ``before`` holds at the same path stay as they are watched."""
    fields, names = document._fields, document._db_field_map
    for name in document._fields_ordered:
        value = document._data.get(name)
        field = fields.get(name)
        if type(value) in _FLAT or _kind(field) in (_SKIPPED, _REFERENCE_ITEMS):
            continue
        path = f"{prefix}{names.get(name, name)}."
        _watch_value(value, path, task, nested, before)


def _watch_value(
    value: Any,
    prefix: str,
    task: asyncio.Task[Any] | None,
    nested: list[tuple[str, Any, _Watched]],
    before: list[tuple[str, Any, _Watched]] | None = None,
) -> None:
    if isinstance(value, mongoengine.EmbeddedDocument):
        watched = next(
            (
                watched
                for path, embedded, watched in before or ()
                if embedded is value
                and path == prefix
                and getattr(value, "_changed_fields", None) is watched
            ),
            None,
        )
        nested.append((prefix, value, watched or _watched(value, task)))
        _watch_nested(value, prefix, task, nested, before)
    elif isinstance(value, list | tuple):
        for index, item in enumerate(value):
            if type(item) not in _FLAT:
                _watch_value(item, f"{prefix}{index}.", task, nested, before)
    elif isinstance(value, dict):
        for key, item in value.items():
            if type(item) not in _FLAT:
                _watch_value(item, f"{prefix}{key}.", task, nested, before)


def end_watch(document: Any, watch: _Watch) -> tuple[bool, list[str] | None]:
    """End the watch :func:`watch_changes` began, as the save's steps after
    its write end (even by an error): whether the save then clears
    ``document``'s changes, as MongoEngine's does, and the changes to keep for
    the next save (None: every field counts as changed). Kept: those made
    while the write was awaited and those other tasks made since, in the
    document or in its embedded documents (the save's own, and its
    receivers', are cleared as MongoEngine clears them); not those whose
    values a reload or a modify (:func:`reset_changes`) read since.
    Another save of the document may have begun meanwhile: if its own steps
    after its write watch the list now, that save clears it as it ends;
    if it took the list and ended (or awaits its write), the changes the
    document holds now are kept (it sent what the list held then, which
    holds all this one keeps)."""
    watched, others = watch.top, watch.others()
    watched.ended = True
    changes = getattr(document, "_changed_fields", None)
    if changes is None:  # removed (an aborted transaction's undo): all changed
        return True, None
    if changes is watched or type(changes) is _Watched:
        # Those made while the write was awaited are in the lists (a reload
        # since took out those it read, or replaced the embedded documents
        # holding them).
        held = document._get_changed_fields()
        meanwhile = [path for path in watch.meanwhile if _covered(path, held)]
        if changes is watched:
            _set_attribute(document, _CHANGES, list(changes))
            return True, _outermost(meanwhile + others)
        # Another save's steps after its write: it keeps them, unsent.
        changes.others.extend(meanwhile)
        if not watched.taken:
            changes.others.extend(others)
        return False, None
    if watched.taken:  # by another save, which ended or awaits its write
        return True, document._get_changed_fields()  # (its embedded ones too)
    return True, watch.meanwhile  # replaced (its list set anew): as it stands


def values_and_changes(document: Any) -> tuple[dict[str, Any], set[str]]:
    """``document``'s values and own list of changes as a read is sent (see
    :func:`set_since`)."""
    return dict(document._data), set(getattr(document, "_changed_fields", None) or ())


def set_since(
    document: Any, before: tuple[dict[str, Any], set[str]], names: set[str]
) -> list[str]:
    """The paths of ``document``'s own list of changes, in the fields
    ``names``, marked since ``before`` (:func:`values_and_changes`), or under
    a value set anew since: the changes another task made while a read was
    awaited, which a reload that leaves those fields keeps (those made before
    it are dropped, as MongoEngine's reload does)."""
    values, listed = before
    data, renamed = document._data, document._reverse_db_field_map
    since = []
    for path in list(getattr(document, "_changed_fields", None) or ()):
        first = path.partition(".")[0]
        name = renamed.get(first, first)
        if name in names and (
            path not in listed or data.get(name) is not values.get(name)
        ):
            since.append(path)
    return since


def reset_changes(document: Any, changes: list[str]) -> None:
    """Set ``document``'s list of changes to ``changes``, as a reload or a
    modify does (the values it read stand). A list a save's steps after its
    write watch stays that list, holding ``changes``: that save then keeps
    the changes made since, and those made before that the read left, not
    those whose values it read."""
    watched = getattr(document, "_changed_fields", None)
    if type(watched) is not _Watched:
        document._changed_fields = changes
        return
    watched[:] = changes  # (not noted: no other task's change)
    watched.others[:] = [path for path in watched.others if _covered(path, watched)]
    nested = watched.nested
    if nested is not None:  # the embedded documents it read are new ones
        _rewatch_nested(document, watched.task, nested)


def _rewatch_nested(
    document: Any,
    task: asyncio.Task[Any] | None,
    nested: list[tuple[str, Any, _Watched]],
) -> None:
    """Update the watch of ``document``'s embedded documents once a reload or
    a modify set values anew: the embedded documents it replaced are not the
    document's any more (their changes, read back, are not kept; their
    lists are plain again), those it put in are watched from now on."""
    held: list[tuple[str, Any, _Watched]] = []
    if _nested_values(document):
        _watch_nested(document, "", task, held, nested)
    for _, embedded, watched in nested:
        if getattr(embedded, "_changed_fields", None) is watched and not any(
            embedded is now for _, now, _ in held
        ):
            _set_attribute(embedded, _CHANGES, list(watched))
    nested[:] = held


def _covered(path: str, paths: list[str]) -> bool:
    """Whether ``path``, or a path holding it, is in ``paths`` (read as a
    plain list: a watching list would note the look)."""
    held = set(paths)
    return path in held or any(
        path[:index] in held for index, char in enumerate(path) if char == "."
    )


def _outermost(paths: list[str]) -> list[str]:
    """``paths`` once each, but those inside another one (``m.k`` when ``m``
    is there: the update cannot set both)."""
    unique = dict.fromkeys(paths)
    return [
        path
        for path in unique
        if not any(
            path[:index] in unique for index, char in enumerate(path) if char == "."
        )
    ]


def put_changes(document: Any, changes: list[str] | None) -> None:
    """Set ``document``'s list of changes; None removes it (a document
    without one counts every field as changed). A path inside an embedded
    document (``e.inner.z``, ``items.1.x``, ``m.k.x``: as
    ``_get_changed_fields`` gives them) is taken out of the list and given to
    that embedded document, which MongoEngine's bookkeeping has it in (see
    :func:`_give_nested`); one inside another path of the list (``e.inner``
    given back beside ``e``, whose value is no embedded document any more:
    None, a dict) is dropped, the outer one sets it whole."""
    if changes is None:
        if hasattr(document, "_changed_fields"):
            _delete_attribute(document, _CHANGES)
        return
    nested = _nested_paths(document, changes)
    if nested:
        changes[:] = [path for path in changes if path not in nested]
    if any("." in path for path in changes):  # (most saves: none)
        # MongoEngine's own list never holds a path and one inside it
        # (_mark_as_changed keeps the outer one): the update would send both,
        # which the server refuses as a conflict.
        changes[:] = _outermost(changes)
    _set_attribute(document, _CHANGES, changes)
    if nested:
        _give_nested(document, nested)


def _nested_paths(document: Any, paths: list[str]) -> dict[str, Any]:
    """The paths of ``paths`` that are not ``document``'s own, with their
    owners (see :func:`_owner`)."""
    for path in paths:  # (a loop without a call: this runs on every save)
        if "." in path:
            break
    else:
        return {}  # (most saves)
    nested = {}
    for path in paths:
        if "." in path:
            found = _owner(document, path)
            if found is None or found[0] is not document:
                nested[path] = found
    return nested


def _owner(document: Any, path: str) -> tuple[Any, str] | None:
    """The document whose own list holds ``path`` as MongoEngine's
    bookkeeping has it (the innermost embedded document it passes through,
    or ``document``), and the path in it; None when a value it passes
    through holds nothing (removed or replaced by a flat value: the change
    went with the value that held it)."""
    parts = path.split(".")
    found = _descend(document, parts[:-1])
    if found is None:
        return None
    owner, start, _ = found
    return owner, ".".join(parts[start:])


def _descend(document: Any, parts: list[str]) -> tuple[Any, int, Any] | None:
    """Follow ``parts`` (db names, list indexes, dict keys) from ``document``:
    the innermost embedded document passed through (or ``document``), the
    index of the first part inside it, and the value reached; None when a
    value on the way holds nothing."""
    owner, start = document, 0
    value: Any = document
    for index, part in enumerate(parts):
        if isinstance(value, list | tuple):
            if not part.isdigit() or int(part) >= len(value):
                return None
            value = value[int(part)]
        elif isinstance(value, dict):
            if part not in value:
                return None
            value = value[part]
        elif isinstance(value, BaseDocument):
            value = value._data.get(value._reverse_db_field_map.get(part, part))
        else:
            return None
        if isinstance(value, mongoengine.EmbeddedDocument):
            owner, start = value, index + 1
    return owner, start, value


def _give_nested(document: Any, nested: dict[str, Any]) -> None:
    """Mark each path of ``nested`` as changed in the embedded document
    holding it, unless a change of a value holding it supersedes it (``e``
    or ``e.inner`` changed too: the embedded document that had it was
    replaced or removed, and took its changes away with it)."""
    every = set(document._get_changed_fields())
    for path, found in nested.items():
        if found is None or path in every:
            continue
        if any(path[:index] in every for index, char in enumerate(path) if char == "."):
            continue
        _mark_on_owner(found)


def _mark_on_owner(found: tuple[Any, str] | None) -> None:
    """Mark the path ``found`` names as changed in its owner (see :func:`_owner`)."""
    if found is None:
        return
    owner, rest = found
    first, dot, tail = rest.partition(".")
    # (_mark_as_changed maps its first name to its db_field)
    name = owner._reverse_db_field_map.get(first, first)
    owner._mark_as_changed(name + dot + tail)


def _under_listed(sent: list[str] | None) -> list[str]:
    """The paths of ``sent`` inside another path of it (those
    :func:`_embedded_paths` added: changes of embedded documents in a value
    listed as changed whole)."""
    if not sent:
        return []
    listed = set(sent)
    return [
        path
        for path in sent
        if any(path[:index] in listed for index, char in enumerate(path) if char == ".")
    ]


@contextlib.contextmanager
def unlisted(document: Any) -> Iterator[None]:
    """``document`` without its list of changes while the block runs (plain
    code, no await: no other task can change it meanwhile), as MongoEngine's
    ``post_save`` receivers see a document its save inserted (every field
    counts as changed: ``_delta()`` gives the whole document); the list is
    put back after. Changes the block marks on the document itself are not
    noted, as MongoEngine's save clears them."""
    changes = getattr(document, "_changed_fields", None)
    if changes is None:
        yield
        return
    _delete_attribute(document, _CHANGES)
    try:
        yield
    finally:
        _set_attribute(document, _CHANGES, changes)


def listed_changes(document: Any) -> list[str] | None:
    """A copy of ``document``'s changes (its embedded documents' by their
    paths, as :func:`take_changes` gives them); for one without a list
    (every field counts as changed: a new one), :func:`unlisted_changes`."""
    own = getattr(document, "_changed_fields", None)
    if own is None:
        return unlisted_changes(document)
    return list(own) + _embedded_paths(document)


def journal_bookkeeping(documents: list[Any], session: AsyncClientSession) -> None:
    """In a transaction bound by this package, record how to give ``documents``
    back what a save or an insert changes (new or stored, the changes, nested
    ones included): if the transaction aborts, saving them again must
    send them again."""
    undos = journal(session)
    if undos is not None:
        undos.extend(map(_restorer, documents))


def _restorer(document: Any) -> Callable[[], None]:
    """What gives ``document`` back its bookkeeping as it is now. An id the
    write gave it stays: saved again, it is the same document, so a commit
    that did apply though it raised is not stored twice; one without an id
    (a loaded one whose id was cleared too) is new then, stored whole."""
    created = document._created or document.pk is None
    changed = listed_changes(document)  # None, Unlisted: everything changed
    # (Counted by the saves outside a transaction that end meanwhile:
    # see Document._landed.)
    landed = document.__dict__.setdefault("_async_landed", 0)

    def undo() -> None:
        # A save outside the transaction ended since (its write, held by the
        # transaction's, landed once this aborted): the document is stored.
        if document.__dict__["_async_landed"] == landed:
            document._created = created
        _merge_changes(document, changed)

    return undo


def _merge_changes(document: Any, changes: list[str] | None) -> None:
    """Mark ``changes`` as changed again on top of ``document``'s own list
    (the changes made since are kept), those inside embedded documents in
    them (see :func:`put_changes`); None, or an :class:`Unlisted` (given
    back to its embedded documents alone), removes the list (everything
    counts as changed)."""
    if changes is None or type(changes) is Unlisted:
        if changes:  # (before the list goes: what supersedes them)
            _give_nested(document, {path: _owner(document, path) for path in changes})
        put_changes(document, None)
        return
    if not hasattr(document, "_changed_fields"):
        return  # no list on the document: everything changed already
    nested = _nested_paths(document, changes)
    for path in changes:
        if path not in nested:
            document._mark_as_changed(path)
    if nested:
        _give_nested(document, nested)
        for path in _under_listed(changes):  # (their holder is listed whole)
            _mark_on_owner(_owner(document, path))
