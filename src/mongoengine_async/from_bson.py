"""A faster ``_from_son``: the same documents, built with less overhead.

MongoEngine builds a loaded document by calling ``Document.__init__``, which
routes every field through ``BaseDocument.__setattr__`` and ``__set__``; for a
freshly loaded, non-dynamic document those checks are no-ops. Here each class
(a :class:`LoadedState`, which holds the state every loaded document shares)
gets a loader generated for its fields (one straight block per field, like
``dataclasses`` generates ``__init__``) that applies each field's own
``to_python`` and the effect of ``BaseField.__set__`` directly, skipping
``to_python`` where it returns its argument unchanged. Whenever a class or a
raw document needs anything else (dynamic or strict-dict documents, a
model's own ``__new__``, ``__init__``, ``_from_son`` or ``__setattr__``, a custom
``__set__``, unknown keys, init signal receivers, no-dereference
loading, a conversion error) MongoEngine's ``_from_son`` runs instead. A class
with ``choices`` gets its ``get_<field>_display`` methods from MongoEngine's
own code, as in ``__init__``. A plan is made again after a field setting or
hook it was made from changed (:mod:`~mongoengine_async.plan_watch`).
``tests/test_loading.py`` checks that both give identical documents.
"""

from __future__ import annotations

import datetime
import enum
import functools
import inspect
import operator
import types
import weakref
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import mongoengine
from bson import SON, DBRef, ObjectId
from mongoengine import EmbeddedDocument
from mongoengine.base import BaseDocument, BaseField, ComplexBaseField, get_document
from mongoengine.errors import NotRegistered
from mongoengine.fields import (
    BinaryField,
    BooleanField,
    EnumField,
    FloatField,
    IntField,
    ListField,
    ObjectIdField,
    StringField,
)

from mongoengine_async import plan_watch
from mongoengine_async._compat import has_field_display, set_field_display
from mongoengine_async.context import anything_bound
from mongoengine_async.sequences import innermost
from mongoengine_async.signals import has_init_receivers

__all__ = (
    "IDENTITY_FOR",
    "LIST_TO_PYTHON",
    "NONE_READERS",
    "PROXY_TAKERS",
    "UNTOUCHED",
    "LoadedState",
    "from_son",
    "joining_loader",
    "library_builders",
    "link_embedded",
    "list_converter",
    "loader",
    "loader_key",
    "object_id_bytes",
    "overridden",
    "owned_loader",
    "plain_references",
    "plain_setter",
    "set_conversion",
)

_MISSING = object()
_ANY = object()


# to_python implementations that return values of these exact types unchanged.
IDENTITY_FOR = {
    BaseField.to_python: _ANY,
    StringField.to_python: str,
    IntField.to_python: int,
    FloatField.to_python: float,
    BooleanField.to_python: bool,
    ObjectIdField.to_python: ObjectId,
}


# MongoEngine's methods the plans recognise, as they were when the package was
# imported: one patched since on MongoEngine's own class (``mock.patch.object(
# ListField, "to_python", ...)``) is none of these, and is left to be called.
_BASE_SET = BaseField.__set__
_BINARY_SET = BinaryField.__set__
_ENUM_SET = EnumField.__set__
_COMPLEX_SET = ComplexBaseField.__set__
LIST_TO_PYTHON = ListField.to_python
_COMPLEX_TO_PYTHON = ComplexBaseField.to_python
_REFERENCE_TO_PYTHON = mongoengine.ReferenceField.to_python
_ENUM_TO_PYTHON = EnumField.to_python


# The exact types of the items a container field without an item field keeps as
# they are, loading and dumping (ComplexBaseField's to_python and to_mongo): not
# those with to_python/to_mongo or items, nor anything iterable (bytes become a
# list of ints).
UNTOUCHED: frozenset[type] = frozenset(
    [str, int, float, bool, type(None), datetime.datetime, ObjectId]
)

# The __get__ implementations that read an absent value as None; fields.py
# adds those of its fields that do.
NONE_READERS: set[Callable[..., Any]] = {BaseField.__get__}

# Classes whose to_python and to_mongo differ from the ones they override only
# for a reference proxy, never in stored data (fields.py adds its containers):
# the loaders and write plans take them for the overridden ones.
PROXY_TAKERS: list[type] = []


def overridden(cls: type, name: str) -> Any:
    """``cls.<name>`` (``to_python``, ``to_mongo``), or the method it overrides
    when that is one of :data:`PROXY_TAKERS`'."""
    method = getattr(cls, name)
    for taker in PROXY_TAKERS:
        if method is taker.__dict__.get(name):
            return getattr(super(taker, cls), name)
    return method


# Fields whose to_python never returns an embedded document (or a list of them).
_NEVER_EMBEDDED = (
    mongoengine.DateTimeField,
    mongoengine.ComplexDateTimeField,
    mongoengine.ReferenceField,
    mongoengine.LazyReferenceField,
    mongoengine.GenericReferenceField,
    mongoengine.DecimalField,
    mongoengine.EnumField,
    mongoengine.UUIDField,
    mongoengine.fields.GeoJsonBaseField,
)

Load = Callable[[dict], Any]


def _object_id_slot() -> str:
    """The attribute holding an ObjectId's 12 bytes: the slot its ``binary``
    property returns, read without a Python call, where it is one."""
    slot, probe = "_ObjectId__id", ObjectId()
    is_slot = isinstance(vars(ObjectId).get(slot), types.MemberDescriptorType)
    return slot if is_slot and getattr(probe, slot) is probe.binary else "binary"


_OID_BYTES = _object_id_slot()
# ``oid.binary``, the key joins use: bytes hash and compare in C, ObjectIds in Python.
object_id_bytes: Callable[[ObjectId], bytes] = operator.attrgetter(_OID_BYTES)


class _FieldPlan:
    """How one field is loaded: conversion, default, and whether it may embed."""

    __slots__ = (
        "container",
        "field",
        "identity_type",
        "item_type",
        "kept_items",
        "may_embed",
        "name",
        "plain_get",
        "reference",
        "to_python",
    )

    def __init__(self, name: str, field: BaseField):
        self.name = name
        self.field = field
        inner = getattr(field, "field", None)
        self.to_python = set_conversion(field)
        self.identity_type = IDENTITY_FOR.get(type(field).to_python)
        if self.identity_type is _ANY and type(field).__set__ is _BINARY_SET:
            self.identity_type = bytes  # kept; a bytearray is stored as bytes
        # A list of items its to_python keeps: the type they keep (or _ANY).
        self.item_type = None
        to_python = overridden(type(field), "to_python")
        if to_python is LIST_TO_PYTHON and inner is not None:
            self.to_python = list_converter(field, inner)
            self.item_type = IDENTITY_FOR.get(type(inner).to_python)
        # A dict, or a list without an item field, kept whole when to_python
        # keeps all its items: their exact types (or _ANY), and its type.
        self.kept_items, self.container = _kept_items(field, inner)
        scalar_items = inner is not None and (
            IDENTITY_FOR.get(type(inner).to_python) is not None
            or isinstance(inner, _NEVER_EMBEDDED)
        )
        self.may_embed = not (
            self.identity_type is not None
            or scalar_items
            or isinstance(field, _NEVER_EMBEDDED)
        )
        self.reference = _stores_object_ids(field)
        # Whether an absent value reads as None (so its default is the field's);
        # a plain reference's __get__ (ours or MongoEngine's) returns None too.
        self.plain_get = self.reference or type(field).__get__ in NONE_READERS

    def default(self) -> Any:
        """What ``BaseField.__set__`` stores for None."""
        field = self.field
        if field.null or field.default is None:
            return None
        return field.default() if callable(field.default) else field.default


def _kept_items(field: BaseField, inner: BaseField | None) -> tuple[Any, str | None]:
    """For a dict field, or a list field without an item field: the exact types
    of the items ``ComplexBaseField.to_python`` keeps (or _ANY), and the name
    of the container's type; (None, None) for other fields."""
    if overridden(type(field), "to_python") is not _COMPLEX_TO_PYTHON:
        return None, None
    if isinstance(field, mongoengine.DictField):  # MapField too
        container = "dict"
    elif isinstance(field, mongoengine.ListField) and inner is None:
        container = "list"
    else:
        return None, None
    if inner is None:
        return UNTOUCHED, container
    kept = IDENTITY_FOR.get(type(inner).to_python)
    if kept is None:
        return None, None
    return (kept if kept is _ANY else frozenset([kept])), container


def _stores_object_ids(field: BaseField) -> bool:
    """Whether ``field.to_python(oid)`` is ``DBRef(<collection>, oid)``.

    True for a ReferenceField (not ``dbref=True``) to a class whose id is an
    ObjectIdField: its ``to_python`` wraps a stored ObjectId, unchanged, in a
    DBRef naming the referenced collection.
    """
    if type(field).to_python is not _REFERENCE_TO_PYTHON:
        return False
    if field.dbref:
        return False
    try:
        id_field = field.document_type.id
    except (AttributeError, NotRegistered):
        return False
    return IDENTITY_FOR.get(type(id_field).to_python) is ObjectId


def list_converter(field: BaseField, inner: BaseField) -> Callable[[Any], Any]:
    """For a list value, ComplexBaseField.to_python is its items' to_python.

    Items of a type the inner to_python returns unchanged are kept as they are;
    the inner field's dereferencing flag, which only references read, is
    aligned with the container's as MongoEngine does.
    """
    to_python, item_to_python = field.to_python, inner.to_python
    identity_type = IDENTITY_FOR.get(type(inner).to_python)
    if identity_type is None:

        def convert(value: Any) -> Any:
            if type(value) is not list:
                return to_python(value)
            inner.set_auto_dereferencing(field._auto_dereference)
            return [item_to_python(item) for item in value]

        return convert

    def convert_scalars(value: Any) -> Any:
        if type(value) is not list:
            return to_python(value)
        if identity_type is _ANY:
            return list(value)
        return [
            item if type(item) is identity_type else item_to_python(item)
            for item in value
        ]

    return convert_scalars


class _Plan:
    """How to load one class, and the loader generated for it."""

    __slots__ = (
        "cls",
        "display",
        "fields",
        "make",
        "make_joining",
        "make_owning",
        "owning_loader",
        "plain_owning_loader",
        "references",
        "renamed",
        "unrenamed",
    )

    def __init__(self, cls: type[Any]):
        self.cls = cls
        self.fields = [_FieldPlan(name, field) for name, field in cls._fields.items()]
        self.references = [plan.field for plan in self.fields if plan.reference]
        # For init_order: the fields stored under their own name, by it, and
        # the others (stored name, name), in field order.
        self.unrenamed = {fp.name for fp in self.fields if fp.field.db_field == fp.name}
        self.renamed = [
            (fp.field.db_field, fp.name)
            for fp in self.fields
            if fp.field.db_field != fp.name
        ]
        self.display = has_field_display(cls)
        self.make = _compile(cls, self, joining=False)
        self.make_joining: Callable[..., Load] | None = None  # on first use
        self.make_owning: Callable[..., Load] | None = None  # on first use
        self.owning_loader: Load | None = None  # while settled(), on first use
        # With references: (the collections they name, the owning loader made for them).
        self.plain_owning_loader: tuple[list[str | None], Load] | None = None

    def owning(self) -> Callable[..., Load]:
        """``make(fallback, *reference_collections)``: the loader that keeps
        the raw document's dict and lists as the document's own."""
        if self.make_owning is None:
            self.make_owning = _compile(self.cls, self, joining=False, owning=True)
        return self.make_owning

    def joining(self) -> Callable[..., Load]:
        """``make(fallback, *reference_collections, *joins)``: the owning
        loader putting found documents in place of the plain references."""
        if self.make_joining is None:
            self.make_joining = _compile(self.cls, self, joining=True, owning=True)
        return self.make_joining

    def settled(self) -> bool:
        """Whether a loader made once loads as a new one would: no references
        (whose collections a switch changes) and no subclass (whose loaders
        a fallback keeps); a class met under a foreign ``_cls`` is looked up
        again each time."""
        cls = self.cls
        return not self.references and cls._subclasses == (cls._class_name,)

    def plain_owning(self) -> Load | None:
        """The owning loader of a class with references and no subclass while
        nothing is bound in the task (the caller checks): kept while the
        referenced classes name the same collections (a ``switch_collection``
        or a changed ``meta["collection"]`` makes another), which saves making
        a loader per batch. None for other classes."""
        cls = self.cls
        if not self.references or cls._subclasses != (cls._class_name,):
            return None
        collections = self.reference_collections()
        kept = self.plain_owning_loader
        if kept is None or kept[0] != collections:
            fallback = _fallback(cls, True, None)
            load = self.owning()(fallback, *collections)
            kept = self.plain_owning_loader = (collections, load)
        return kept[1]

    def reference_collections(self) -> list[str | None]:
        """The collections the reference DBRefs name now (switches included)."""
        return [field.document_type._get_collection_name() for field in self.references]


_plans: dict[type[Any], _Plan | None] = {}
plan_watch.forgets(_plans)


def _plan(cls: type[Any]) -> _Plan | None:
    """The loading plan of ``cls``, or None when only MongoEngine's path is exact."""
    try:
        return _plans[cls]
    except KeyError:
        pass
    since = plan_watch.generation()
    for field in cls._fields.values():
        field.set_auto_dereferencing(True)  # as every _from_son does
    plan_watch.watch(cls)
    plan = _Plan(cls) if _eligible(cls) else None
    return plan_watch.keep(_plans, cls, plan, since)


def _eligible(cls: type[Any]) -> bool:
    fields = cls._fields.values()
    if cls._dynamic or cls.STRICT or not issubclass(cls, LoadedState):
        return False
    if not plan_watch.library_intact():  # a MongoEngine method patched
        return False
    if _builds_its_own_way(cls) or _renames_clash(cls) or _converts_its_own_way(cls):
        return False
    return all(plain_setter(field) for field in fields)


# The methods through which MongoEngine's _from_son builds a document.
_BUILDERS = ("__new__", "__init__", "_from_son", "__setattr__")

# The packages whose classes' builders are MongoEngine's, ours or object's.
_LIBRARIES = ("mongoengine", "mongoengine_async", "builtins")

# The builders those classes define, as they were when the package was
# imported (ours added by the module defining them): one patched since on such
# a class (``mock.patch.object(mongoengine_async.Document, "_from_son", ...)``)
# is none of these, and only MongoEngine's path calls it.
_LIBRARY_BUILDERS: set[Any] = set()


def library_builders(*classes: type[Any]) -> None:
    """Note the builders ``classes`` (MongoEngine's or ours) define now."""
    for klass in classes:
        _LIBRARY_BUILDERS.update(
            vars(klass)[name] for name in _BUILDERS if name in vars(klass)
        )


library_builders(
    object,
    BaseDocument,
    mongoengine.Document,
    mongoengine.DynamicDocument,
    mongoengine.EmbeddedDocument,
    mongoengine.DynamicEmbeddedDocument,
)


def _builds_its_own_way(cls: type[Any]) -> bool:
    """Whether a class of ``cls``'s MRO that is not MongoEngine's or ours
    defines one of ``_BUILDERS``, or one of theirs is not the builder it
    defined, which only MongoEngine's path calls."""
    for klass in cls.__mro__:
        library = klass.__module__.partition(".")[0] in _LIBRARIES
        for name in _BUILDERS:
            builder = vars(klass).get(name, _LIBRARY_BUILDERS)
            if builder is _LIBRARY_BUILDERS:  # (not defined there)
                continue
            if not library or builder not in _LIBRARY_BUILDERS:
                return True
    return False


def _converts_its_own_way(cls: type[Any]) -> bool:
    """Whether a field (or item field) of ``cls`` has a ``to_python`` set on
    itself, which the plans (taking conversions by the field's class) miss."""
    for field in cls._fields.values():
        while field is not None:
            if "to_python" in vars(field):
                return True
            field = getattr(field, "field", None)
    return False


def _renames_clash(cls: type[Any]) -> bool:
    """Whether a field's name is another field's stored name: MongoEngine's
    ``_from_son`` renames in place, one rename overwriting the other's value,
    and only its own path gives that result."""
    stored = {field.db_field for field in cls._fields.values()}
    return any(
        name in stored for name, field in cls._fields.items() if name != field.db_field
    )


def plain_setter(field: BaseField) -> bool:
    """Whether assigning a value ``set_conversion(field)`` gave to ``field`` only
    does what ``BaseField.__set__`` does (an enum field converts it again: no
    change)."""
    setter = type(field).__set__
    if setter is _BASE_SET or setter is _BINARY_SET:
        return True
    if setter is _ENUM_SET:
        return _converts_once(field)
    inner = getattr(field, "field", None)
    return setter is _COMPLEX_SET and (
        not isinstance(inner, EnumField) or _converts_once(inner)
    )


def set_conversion(field: BaseField) -> Callable[[Any], Any]:
    """``field.to_python``, then what the field's own ``__set__`` does to the
    value before ``BaseField.__set__`` (a ``BinaryField`` stores a bytearray
    as bytes), for a field ``plain_setter`` takes."""
    to_python = field.to_python
    if type(field).__set__ is not _BINARY_SET:
        return to_python

    def to_bytes(value: Any) -> Any:
        value = to_python(value)
        return bytes(value) if isinstance(value, bytearray) else value

    return to_bytes


# The enum lookups of the standard library: a value they refuse, they refuse again.
_STANDARD_MISSING = {vars(enum.Enum)["_missing_"], vars(enum.Flag)["_missing_"]}


def _converts_once(field: EnumField) -> bool:
    """Whether ``field.to_python`` of its own result changes nothing and keeps
    None as None (``EnumField.__set__`` converts what ``to_python`` gave): its
    own ``to_python``, a standard lookup, no member whose value is None."""
    enum_cls = field._enum_cls
    return (
        type(field).to_python is _ENUM_TO_PYTHON
        and inspect.getattr_static(enum_cls, "_missing_") in _STANDARD_MISSING
        and all(member.value is not None for member in enum_cls)
    )


# -- the generated loader -----------------------------------------------------------


class _ClassName:
    """``document._cls`` where the document stores none: its class's name."""

    def __get__(self, instance: Any, owner: type[Any]) -> Any:
        return self if instance is None else owner._class_name


class _ChangedFields:
    """``document._changed_fields``, kept in the instance dict (this is not a
    data descriptor: it shadows MongoEngine's slot, and a read of a list held
    there takes no Python call); a loaded document that has none yet gets a
    new empty list when it is first read (most are never changed); one
    ``__init__`` built (it stores ``_initialised``) has none until saved, as
    in MongoEngine."""

    def __get__(self, instance: Any, owner: type[Any]) -> Any:
        if instance is None:
            return self
        state = vars(instance)
        if "_initialised" in state:  # (MongoEngine's slot's error, unset)
            raise AttributeError(
                f"{owner.__name__!r} object has no attribute '_changed_fields'",
                name="_changed_fields",
                obj=instance,
            )
        changed: list[str] = []
        state["_changed_fields"] = changed
        return changed


class LoadedState:
    """The state of a document loaded from the database, held by its class.

    ``_from_son`` stores these five values in every document it builds; a
    class with this mixin before MongoEngine's Document in its MRO shares them
    instead, and the loader (which builds only such documents) stores none.
    They are class attributes that are not data descriptors, so they shadow
    MongoEngine's slots, and any assignment (by ``__init__``, ``save``...)
    stores the new value in that instance only (``_changed_fields`` too, made
    when first read). A ``_cls`` field (``allow_inheritance``)
    shadows ``_cls`` in turn.
    """

    __slots__ = ()
    _initialised = True
    _created = False
    # Only dynamic documents write to theirs, and never to this one: their
    # ``__init__`` gives each its own before it unlocks them.
    _dynamic_fields: SON[str, Any] = SON()
    _cls = _ClassName()
    _changed_fields = _ChangedFields()


# The slot the loader sets in every document, without looking it up.
_set_data = BaseDocument.__dict__["_data"].__set__

_HEAD = """\
def make(fallback, {references}):
    def load(son):
{taken_whole}\
        if type(son) is not dict:
            return fallback(son)
        get = son.get
{values}\
{fetching}\
        # Each field present and not null, and as many keys as fields: no
        # other key. Otherwise, any other key must be a _cls naming cls.
        whole = len(son) == field_count and not ({any_none})
        if not whole:
            if not known_keys.issuperset(son) or get("_cls", class_name) != class_name:
                return fallback(son)
        complete = failed = {flags}False
        partial = {partial}
        try:
"""

_TAIL = """\
        except (AttributeError, ValueError):
            failed = True
        if failed:  # MongoEngine's error, not chained to the one met here
            return fallback(son)
{data}\
        if complete:
            data = {{k: v for k, v in data.items() if v is not MISSING}}
        document = new(cls)
        set_data(document, data)
        if complete:
            complete_document(document, plan, data)
        else:
{embed}
        {set_cls}
        if partial:
            init_order(plan, son, data)
        {display}
        return document
{batch}
    return load
"""

# An owning loader with a shortest path also loads a batch in one call
# (``load.batch``, which ``batches.materialise_all`` and sync reads use): the
# path inlined in the loop, no call per son taking it; any other son goes to
# ``load``. ``sons`` may be an iterator, given with ``documents``, a list of
# as many Nones, which the documents replace as they are built: when a son
# fails to load, the first None left is its place.
_BATCH = """
    def load_batch(sons, documents=None):
        if documents is None:
            documents = [None] * len(sons)
        for index, son in enumerate(sons):
{taken_whole}\
            documents[index] = load(son)
        return documents

    load.batch = load_batch
"""

# An owning loader turns a whole son into the document's _data in place:
# converted values written back, renamed fields moved to their names at the
# end, in field order, as _from_son's data dict has them. So does it a son
# storing every field, some null (each value written back: a null's default).
_TAKE_SON = """\
if whole:
    if converted:
{write_back}{rename}\
    data = son
elif len(son) == field_count{no_other_key}:
{write_back_all}{rename}\
    data = son
else:
    data = {{{data}}}
    partial = True
"""


def _compile(
    cls: type[Any], plan: _Plan, joining: bool, owning: bool = False
) -> Callable[..., Load]:
    """``make(fallback, *reference_collections)``: the loader of ``cls``.

    The generated ``load(son)`` does what ``_from_son`` does for ``cls``, or
    returns ``fallback(son)`` for anything it was not generated for. A joining
    loader also takes one mapping per plain reference and stores
    ``join[oid.binary]`` instead of the DBRef, when the mapping has it; a
    son with a reference stored any other way goes to ``fallback``. An owning
    loader keeps the son's dict and lists in the document (see ``loader``).
    """
    namespace: dict[str, Any] = {
        "DBRef": DBRef,
        "MISSING": _MISSING,
        "ObjectId": ObjectId,
        "class_name": cls._class_name,
        "cls": cls,
        "complete_document": _complete,
        "init_order": init_order,
        "embed": link_embedded,
        "fetches": _fetches,
        "known_keys": frozenset(fp.field.db_field for fp in plan.fields) | {"_cls"},
        "field_count": len(plan.fields),
        "new": cls.__new__,
        "plan": plan,
        "set_data": _set_data,
        "set_field_display": set_field_display,
    }
    blocks = []
    for index, field_plan in enumerate(plan.fields):
        namespace[f"to_python_{index}"] = field_plan.to_python
        namespace[f"inner_{index}"] = innermost(field_plan.field)
        namespace[f"type_{index}"] = field_plan.identity_type
        namespace[f"default_{index}"] = field_plan.default
        if field_plan.kept_items is not None:
            namespace[f"kept_items_{index}"] = field_plan.kept_items
        if field_plan.item_type is not None:
            namespace[f"item_type_{index}"] = field_plan.item_type
            namespace[f"item_to_python_{index}"] = field_plan.field.field.to_python
        block = _field_block(index, field_plan, plan.references, joining, owning)
        blocks.append(block)
    embed = [
        f"embed(document, v{i})" for i, fp in enumerate(plan.fields) if fp.may_embed
    ]
    references = [f"collection_{i}" for i in range(len(plan.references))]
    if joining:
        references += [f"join_{i}" for i in range(len(plan.references))]
    values = "".join(
        f"v{i} = get({fp.field.db_field!r})\n" for i, fp in enumerate(plan.fields)
    )
    # A stored _cls (allow_inheritance) is a field's value: whole only when it
    # names cls, so that the son's dict, in its order, may become the _data.
    any_none = " or ".join(
        f"v{i} != class_name" if fp.field.db_field == "_cls" else f"v{i} is None"
        for i, fp in enumerate(plan.fields)
    )
    whole = _whole_son_source(plan, joining) if owning and not plan.display else ""
    batch = _whole_son_source(plan, joining, _BATCH_TAKES) if whole else ""
    source = (
        _HEAD.format(
            references=", ".join(references),
            values=_indent(values, 8),
            fetching=_indent(_fetching_source(plan), 8),
            any_none=any_none or "False",
            flags="converted = " if owning else "",
            # (an owning loader takes a whole son in its order, see _TAKE_SON)
            partial="False" if owning else "True",
            taken_whole=_indent(whole, 8),
        )
        + "".join(blocks)
        + _TAIL.format(
            data=_indent(_data_source(plan, owning), 8),
            embed=_indent("\n".join(embed or ["pass"]), 12),
            # A _cls field (allow_inheritance) holds it in _data, as in _from_son.
            set_cls="data['_cls'] = class_name" if "_cls" in cls._fields else "pass",
            # get_<field>_display, made by MongoEngine's code as __init__ makes them.
            display="set_field_display(document)" if plan.display else "pass",
            batch=_BATCH.format(taken_whole=_indent(batch, 12)) if batch else "",
        )
    )
    kind = ("joining " if joining else "") + ("owning " if owning else "")
    exec(compile(source, f"<{kind}loader of {cls._class_name}>", "exec"), namespace)
    return namespace["make"]


# How the shortest path ends: the loader returns the document, the batch
# loader stores it and takes the next son.
_LOAD_TAKES = "return document"
_BATCH_TAKES = "documents[index] = document\ncontinue"


def _fetching_source(plan: _Plan) -> str:
    """A son whose cached references a conversion would fetch goes to the
    fallback first (see :func:`_fetches`)."""
    return "".join(
        f"if v{i} is not None and fetches(inner_{i}, v{i}):\n    return fallback(son)\n"
        for i, fp in enumerate(plan.fields)
        if isinstance(innermost(fp.field), mongoengine.CachedReferenceField)
    )


def _fetches(inner: BaseField, value: Any) -> bool:
    """Whether converting ``value``, stored for a CachedReferenceField
    (``inner``, alone or in a list or dict), sends a find: a dict in it on a sync alias,
    where MongoEngine's ``to_python`` loads each cache so stored. ``_from_son``
    then loads the son, fetching each once even when the load fails (a failed
    load sent there after converting would fetch them again)."""
    from mongoengine_async.proxies import is_async_class  # (imports this)

    return _holds_dict(value) and not is_async_class(inner.document_type)


def _holds_dict(value: Any) -> bool:
    """Whether ``value`` is a dict, or a list holding one at any depth."""
    if isinstance(value, dict):
        return True
    return isinstance(value, list) and any(map(_holds_dict, value))


def _whole_son_source(plan: _Plan, joining: bool, takes: str = _LOAD_TAKES) -> str:
    """An owning loader's shortest path: a son holding every field, each of a
    type its ``to_python`` keeps (or a plain reference, joined if ``joining``),
    becomes the document's ``_data`` without any other call (ending with
    ``takes``). Empty when some field always converts."""
    checks: list[str] = []
    keep: list[str] = []  # the reference DBRefs made, renamed fields moved
    lists: list[int] = []
    for i, fp in enumerate(plan.fields):
        value, stored = f"v{i}", fp.field.db_field
        if fp.reference:
            checks.append(f"type({value}) is ObjectId")
            keep.append(
                _reference_source(value, plan.references.index(fp.field), joining)
            )
            if stored == fp.name:
                keep.append(f"son[{stored!r}] = {value}")
        elif fp.item_type is not None:
            checks.append(f"type({value}) is list")
            if fp.item_type is not _ANY:
                lists.append(i)
        elif fp.kept_items is not None:
            checks.append(_kept_source(value, i, fp))
        elif fp.identity_type is _ANY:
            checks.append(f"{value} is not None")
        elif fp.identity_type is not None:
            checks.append(f"type({value}) is type_{i}")
        else:
            return ""
        if stored == "_cls":  # allow_inheritance: a document of this very class
            checks.append(f"{value} == class_name")
        if stored != fp.name:
            keep.append(f"del son[{stored!r}]\nson[{fp.name!r}] = {value}")
    if not checks:
        return ""
    taken = "\n".join([*keep, "document = new(cls)", "set_data(document, son)", takes])
    if lists:
        taken = _items_kept_source(lists) + f"if kept:\n{_indent(taken, 4)}"
    lookups = "\n".join(
        f"v{i} = son[{fp.field.db_field!r}]" for i, fp in enumerate(plan.fields)
    )
    return (
        "if type(son) is dict and len(son) == field_count:\n"
        f"    try:\n{_indent(lookups, 8)}"
        "    except KeyError:\n"
        "        pass\n"
        f"    else:\n"
        f"        if {' and '.join(checks)}:\n"
        f"{_indent(taken, 12)}"
    )


def _items_kept_source(lists: list[int]) -> str:
    """Set ``kept``: whether each list ``v<i>`` holds only items of the type
    kept as it is. The lists are scanned one after the other, each while the
    ones before passed, not nested: a class with some ninety such lists would
    pass Python's 100 levels of indentation, and no document of it would load."""
    scans = [
        f"for item in v{i}:\n"
        f"    if type(item) is not item_type_{i}:\n"
        "        kept = False\n"
        "        break\n"
        for i in lists
    ]
    later = "".join(f"if kept:\n{_indent(scan, 4)}" for scan in scans[1:])
    return "kept = True\n" + scans[0] + later


def _data_source(plan: _Plan, owning: bool) -> str:
    """The statements making ``data``, the document's ``_data``."""
    data = ", ".join(f"{fp.name!r}: v{i}" for i, fp in enumerate(plan.fields))
    if not owning:
        return f"data = {{{data}}}\n"
    write_back, rename = [], []
    for i, fp in enumerate(plan.fields):
        stored = fp.field.db_field
        if stored == fp.name:
            write_back.append(f"son[{stored!r}] = v{i}")
        else:
            rename.append(f"del son[{stored!r}]\nson[{fp.name!r}] = v{i}")
    # (its keys are known: a stored _cls that no field holds is one more)
    no_other_key = "" if "_cls" in plan.cls._fields else " and '_cls' not in son"
    return _TAKE_SON.format(
        write_back=_indent("\n".join(write_back or ["pass"]), 8),
        write_back_all=_indent("\n".join(write_back or ["pass"]), 4),
        rename=_indent("\n".join(rename or ["pass"]), 4),
        no_other_key=no_other_key,
        data=data,
    )


def _field_block(
    index: int, field_plan: _FieldPlan, references: list, joining: bool, owning: bool
) -> str:
    """Load one field into ``v<index>``: None or absent gives the default (or
    MISSING, for ``_complete`` to ask the field), anything else converts (an
    owning loader notes it in ``converted``, and keeps a list it can)."""
    field, value = field_plan.field, f"v{index}"
    mark = "\n    converted = True" if owning else ""
    to_python = f"else:\n    {value} = to_python_{index}({value}){mark}\n"
    if field.null or field.default is None:
        default = "pass"
    else:
        default = f"{value} = default_{index}()"
    if not field_plan.plain_get:  # only an absent value is read by its __get__
        absent = f"{value} = MISSING\ncomplete = True"
        stored = f"{field.db_field!r} in son"
        default = f"if {stored}:\n{_indent(default, 4)}else:\n{_indent(absent, 4)}"
    if field_plan.reference and joining:
        joined = _reference_source(value, references.index(field), joining=True)
        if owning:
            joined += "\nconverted = True"
        convert = (
            f"elif type({value}) is ObjectId:\n{_indent(joined, 4)}"
            "else:\n"
            "    return fallback(son)\n"
        )
    elif field_plan.reference:
        collection = f"collection_{references.index(field)}"
        convert = (
            f"elif type({value}) is ObjectId:\n"
            f"    {value} = DBRef({collection}, {value}){mark}\n" + to_python
        )
    elif field_plan.item_type is _ANY:
        keep = "pass" if owning else f"{value} = list({value})"
        convert = f"elif type({value}) is list:\n    {keep}\n" + to_python
    elif field_plan.item_type is not None:
        convert = f"elif type({value}) is list:\n" + _indent(
            _items_source(index, owning), 4
        )
        convert += to_python
    elif field_plan.kept_items is not None:
        keep = "pass" if owning else f"{value} = {field_plan.container}({value})"
        test = _kept_source(value, index, field_plan)
        convert = f"elif {test}:\n    {keep}\n" + to_python
    elif field_plan.identity_type is _ANY:
        convert = ""
    elif field_plan.identity_type is not None:
        convert = (
            f"elif type({value}) is not type_{index}:\n"
            f"    {value} = to_python_{index}({value}){mark}\n"
        )
    else:
        convert = to_python
    block = f"if {value} is None:\n{_indent(default, 4)}{convert}"
    return _indent(block, 12)


def _kept_source(value: str, index: int, field_plan: _FieldPlan) -> str:
    """Whether ``value`` is a container ``to_python`` keeps every item of."""
    test = f"type({value}) is {field_plan.container}"
    if field_plan.kept_items is _ANY:
        return test
    items = f"{value}.values()" if field_plan.container == "dict" else value
    return f"{test} and kept_items_{index}.issuperset(map(type, {items}))"


def _reference_source(value: str, number: int, joining: bool) -> str:
    """Turn the ObjectId in ``value`` into what a plain reference loads as: its
    DBRef, or the document ``join_<number>`` holds for its bytes when joining
    (a subscript: no call, where ``dict.get`` is one per reference)."""
    reference = f"DBRef(collection_{number}, {value})"
    if not joining:
        return f"{value} = {reference}"
    return (
        "try:\n"
        f"    {value} = join_{number}[{value}.{_OID_BYTES}]\n"
        "except KeyError:\n"
        f"    {value} = {reference}"
    )


def _items_source(index: int, owning: bool) -> str:
    """Convert the items of list ``v<index>`` into a new list; an owning
    loader keeps the list when every item is of the type kept as it is."""
    value = f"v{index}"
    converted = (
        f"{value} = [item if type(item) is item_type_{index}"
        f" else item_to_python_{index}(item) for item in {value}]"
    )
    if not owning:
        return converted + "\n"
    return (
        f"for item in {value}:\n"
        f"    if type(item) is not item_type_{index}:\n"
        f"        {converted}\n"
        "        converted = True\n"
        "        break\n"
    )


def _indent(text: str, spaces: int) -> str:
    return "".join(" " * spaces + line + "\n" for line in text.splitlines())


def link_embedded(document: Any, value: Any) -> None:
    """Link embedded documents to their owner, as ``BaseField.__set__`` does."""
    if isinstance(value, EmbeddedDocument):
        value._instance = weakref.proxy(document)
    elif isinstance(value, list | tuple):
        for item in value:
            if isinstance(item, EmbeddedDocument):
                item._instance = weakref.proxy(document)


def _complete(document: Any, plan: _Plan, data: dict) -> None:
    """Give absent fields their defaults and link embedded documents.

    The defaults are worked out in the state ``__init__`` works them out in,
    which the document then keeps (in its ``__dict__``), set to a loaded
    document's values as ``_from_son`` leaves them.
    """
    _set_state(document, initialised=False, created=True)
    for field_plan in plan.fields:
        name = field_plan.name
        if name in data:
            if field_plan.may_embed:
                link_embedded(document, data[name])
            continue
        if field_plan.plain_get:
            value = field_plan.default()
        else:
            value = getattr(document, name, None)
            value = field_plan.default() if value is None else value
        data[name] = value
        link_embedded(document, value)
    _set_state(document, initialised=True, created=False)
    document.__dict__["_changed_fields"] = []


def init_order(plan: _Plan, son: dict, data: dict) -> None:
    """Put ``data``'s keys in the order ``_from_son``'s ``__init__`` gives
    ``_data``: the fields ``son`` lacks, in field order, then those it stores
    in its order, the renamed ones last (as ``_from_son`` renames them)."""
    unrenamed = plan.unrenamed
    for field_plan in plan.fields:
        name = field_plan.name
        if field_plan.field.db_field not in son:
            data[name] = data.pop(name)
    for key in son:
        if key in unrenamed:
            data[key] = data.pop(key)
    for stored, name in plan.renamed:
        if stored in son:
            data[name] = data.pop(name)


def _set_state(document: Any, initialised: bool, created: bool) -> None:
    # Around BaseDocument.__setattr__, whose checks are no-ops here.
    object.__setattr__(document, "_initialised", initialised)
    object.__setattr__(document, "_created", created)


# -- public entry points -------------------------------------------------------------


def from_son(cls: type[Any], son: dict, _auto_dereference: bool = True) -> Any:
    """``cls._from_son(son, _auto_dereference)``, through the fast path if it can."""
    return loader(cls, _auto_dereference)(son)


def loader(cls: type[Any], _auto_dereference: bool = True, owned: bool = False) -> Load:
    """A function doing ``cls._from_son(son, _auto_dereference)`` for many sons.

    What holds for the whole batch (no-dereference loading, init signal
    receivers, the collections references name) is settled once, here. With
    ``owned``, the caller hands the sons over (nothing else uses them after):
    a son's dict may become the document's ``_data`` and its lists the
    document's values, which saves copying them.
    """
    if not _auto_dereference or has_init_receivers():
        return functools.partial(cls._from_son, _auto_dereference=_auto_dereference)
    plan_watch.refresh(cls)
    plan = _plan(cls)
    if plan is None:
        return cls._from_son
    if owned and plan.settled():
        if plan.owning_loader is None:  # (one per class: nothing in it can change)
            plan.owning_loader = plan.owning()(_fallback(cls, owned, None))
        return plan.owning_loader
    if owned and not anything_bound():
        load = plan.plain_owning()
        if load is not None:
            return load
    make = plan.owning() if owned else plan.make
    return make(_fallback(cls, owned, {}), *plan.reference_collections())


# The owning loader of each class whose plan is settled (no references, no
# subclass), as ``loader(cls, owned=True)`` gives it: kept as the plans are.
_owned_loaders: dict[type[Any], Load] = {}
plan_watch.forgets(_owned_loaders)


def owned_loader(cls: type[Any]) -> Load:
    """``loader(cls, owned=True)``, for one son at a time (a reference's
    fetch): a settled class's loader looked up once, not for each son."""
    if has_init_receivers():
        return loader(cls, owned=True)
    plan_watch.refresh(cls)  # (a change forgets the loaders kept)
    load = _owned_loaders.get(cls)
    if load is None:
        since = plan_watch.generation()
        load = loader(cls, owned=True)
        plan = _plans.get(cls)
        if plan is not None and load is plan.owning_loader:
            plan_watch.keep(_owned_loaders, cls, load, since)
    return load


def _fallback(
    cls: type[Any], owned: bool, subclass_loaders: dict[str, Load] | None
) -> Load:
    """What loads the sons a loader of ``cls`` leaves: a son of another class
    goes to that class's loader (kept in ``subclass_loaders`` unless None),
    the rest to MongoEngine."""

    def fallback(son: dict) -> Any:
        class_name = son.get("_cls") if type(son) is dict else None
        if class_name is None or class_name == cls._class_name:
            return cls._from_son(son)
        load = None if subclass_loaders is None else subclass_loaders.get(class_name)
        if load is None:
            try:
                subclass = get_document(class_name)
            except NotRegistered:
                return cls._from_son(son)  # raises MongoEngine's own error
            if subclass._class_name != class_name:  # an old-style name: its
                return cls._from_son(son)  # loader would send it back here
            load = _loader_renaming_as(cls, subclass, owned)
            if subclass_loaders is not None:
                subclass_loaders[class_name] = load
        return load(son)

    return fallback


def _loader_renaming_as(cls: type[Any], other: type[Any], owned: bool) -> Load:
    """The loader of ``other``, for the sons of ``cls`` whose ``_cls`` names it.

    ``cls._from_son`` renames a son's keys by ``cls``'s own map before it hands
    the son to ``other``; where the two classes rename a key differently (a
    field stored under its attribute name, which only one of them renames), a
    son holding that key goes to ``cls._from_son`` itself, and so does every
    son when ``other`` has no generated loader: ``cls._from_son`` builds the
    document through ``other``'s ``__init__``, never ``other``'s own
    ``_from_son``.
    """
    load = loader(other, owned=owned)
    if type(load) is not types.FunctionType:  # (other._from_son, MongoEngine's path)
        return cls._from_son
    mine, theirs = cls._db_field_map, other._db_field_map
    differ = frozenset(
        key
        for key in mine.keys() | theirs.keys()
        if mine.get(key, key) != theirs.get(key, key)
    )
    if not differ:
        return load

    def load_renamed_alike(son: dict) -> Any:
        return load(son) if differ.isdisjoint(son) else cls._from_son(son)

    return load_renamed_alike


def loader_key(cls: type[Any], _auto_dereference: bool = True) -> tuple[Any, ...]:
    """What ``loader(cls, _auto_dereference)`` settles now: a loader made
    while the key was equal loads as a new one would (for the class's own
    documents; its subclasses' references are settled when first met)."""
    receivers = has_init_receivers()
    if not _auto_dereference or receivers:
        return (_auto_dereference, receivers)
    plan_watch.refresh(cls)
    plan = _plan(cls)  # (a new one after a change the refresh met)
    if plan is None or not plan.references:
        return (_auto_dereference, receivers, plan)
    return (_auto_dereference, receivers, plan, *plan.reference_collections())


def plain_references(cls: type[Any]) -> list[BaseField]:
    """The ReferenceFields of ``cls`` stored as bare ObjectIds, which a joining
    loader can fill; empty when only MongoEngine's path loads ``cls`` now."""
    if has_init_receivers():
        return []
    plan_watch.refresh(cls)
    plan = _plan(cls)
    return [] if plan is None else plan.references


def joining_loader(
    cls: type[Any], joins: Sequence[Mapping[bytes, Any]], fallback: Load
) -> Load:
    """A loader of ``cls`` that stores ``joins[i][oid.binary]``, when
    ``joins[i]`` holds it, where ``plain_references(cls)[i]`` would hold
    ``DBRef(collection, oid)``.

    Joining while loading saves building the DBRefs and walking the documents
    afterwards. The joins are keyed by the id's 12 bytes, which hash and
    compare in C (an ObjectId does both in Python). A son the loader cannot
    take that way goes to ``fallback``. The caller hands the sons over, as to
    ``loader(cls, owned=True)``: a son's dict may become a document's ``_data``.
    """
    plan = _plan(cls)
    assert plan is not None  # the caller joins only classes with a plan
    return plan.joining()(fallback, *plan.reference_collections(), *joins)
