"""Faster construction, ``validate`` and ``to_mongo``: same results, less overhead.

What ``from_bson`` does for reads, for writes. MongoEngine's ``__init__`` sends
every value through ``BaseDocument.__setattr__`` and the field's ``__set__``;
``validate`` and ``to_mongo`` look each field up, inspect its ``to_mongo``
signature and build a ``SON`` key by key. Each class (a :class:`FastWrites`)
gets three functions generated for its fields instead (one straight block per
field, like ``dataclasses`` generates ``__init__``):

- ``construct(document, values)`` does what ``__init__`` does for the keyword
  values of a new document, skipping ``to_python`` where it returns its
  argument unchanged;
- ``valid(document, clean)`` is True only when MongoEngine's ``validate``
  would pass (plain checks on exact types, with no side effect); on False,
  MongoEngine's ``validate`` runs, so every error is MongoEngine's own;
- ``dump(document)`` builds what ``to_mongo()`` returns, as a plain dict in the
  same key order, calling each field's own ``to_mongo`` unless it returns its
  argument unchanged; embedded documents are dumped by their own class's plan.

Whatever a class needs beyond that (dynamic or strict-dict documents, custom
``__set__``/``__get__``/``__setattr__``/``validate``/``to_mongo``, generated
values, init signal receivers, unknown keyword arguments) goes to MongoEngine's
code. ``tests/test_to_bson.py`` checks that both give identical documents,
stored BSON and validation errors.
"""

from __future__ import annotations

import datetime
import uuid
from collections.abc import Callable, Mapping
from contextvars import ContextVar
from typing import TYPE_CHECKING, Any, NamedTuple

import mongoengine
import pymongo.errors
from bson import SON, DBRef, ObjectId
from bson.errors import InvalidDocument
from mongoengine import EmbeddedDocument
from mongoengine.base import (
    BaseDict,
    BaseDocument,
    BaseField,
    BaseList,
    ComplexBaseField,
    LazyReference,
)
from mongoengine.errors import NotRegistered, ValidationError
from mongoengine.fields import (
    BinaryField,
    BooleanField,
    DateTimeField,
    DictField,
    EmbeddedDocumentField,
    EnumField,
    FloatField,
    IntField,
    LazyReferenceField,
    ListField,
    ObjectIdField,
    ReferenceField,
    StringField,
    UUIDField,
)

from mongoengine_async import fields as our_fields
from mongoengine_async import plan_watch, signals
from mongoengine_async._compat import has_field_display, set_field_display
from mongoengine_async.from_bson import (
    IDENTITY_FOR,
    LIST_TO_PYTHON,
    NONE_READERS,
    UNTOUCHED,
    LoadedState,
    library_builders,
    link_embedded,
    list_converter,
    overridden,
    plain_setter,
    set_conversion,
)
from mongoengine_async.select_related import PLAIN_VALUE_TYPES, SCALAR_FIELDS
from mongoengine_async.sequences import innermost

if TYPE_CHECKING:
    from typing_extensions import Self

__all__ = (
    "EARLY_MARK",
    "FastWrites",
    "GivenId",
    "give_id",
    "has_id",
    "id_key",
    "keep_id",
    "mark_saved",
    "not_stored",
    "raw",
    "set_id",
    "son_details",
    "take_id_back",
)

_MISSING = object()

# construct()'s test for init signal receivers, as ``has_init_receivers`` but
# without a call (blinker's empty ``receivers``); no blinker: no receivers.
_INIT_RECEIVERS = (
    " or pre_init.receivers or post_init.receivers"
    if mongoengine.signals.signals_available
    else ""
)

# __get__ implementations that read an unset value as None (before __init__
# ends), so an absent value's default is the one its __set__ gives None: the
# loader's (BaseField's and those fields.py registers) and these.
_NONE_GETTERS = frozenset(NONE_READERS).union(
    cls.__get__
    for cls in (
        ComplexBaseField,
        mongoengine.ListField,
        mongoengine.ReferenceField,
        mongoengine.GenericReferenceField,
        mongoengine.LazyReferenceField,
        mongoengine.GenericLazyReferenceField,
        our_fields.ReferenceField,
        our_fields.GenericReferenceField,
        our_fields.ListField,
    )
)

# MongoEngine's _mark_as_changed, which does nothing for a document without a
# list of changes (see give_id).
_MARK_AS_CHANGED = BaseDocument._mark_as_changed

# validate implementations with a side-effect-free check that implies they pass.
_TYPE_CHECKED = {
    BinaryField.validate: bytes,
    UUIDField.validate: uuid.UUID,
    StringField.validate: str,
    IntField.validate: int,
    FloatField.validate: float,
    BooleanField.validate: bool,
    ObjectIdField.validate: ObjectId,
    DateTimeField.validate: datetime.datetime,
}


# MongoEngine's methods the plans recognise, as they were when the package was
# imported: one patched since on MongoEngine's own class (``mock.patch.object(
# ListField, "validate", ...)``) is none of these, and is left to be called.
_BASE_TO_MONGO = BaseField.to_mongo
_BASE_CHECK = BaseField._validate
_BASE_CHOICES_CHECK = BaseField._validate_choices
_COMPLEX_VALIDATE = ComplexBaseField.validate
_BASE_VALIDATE = BaseField.validate
_OBJECT_ID_TO_MONGO = ObjectIdField.to_mongo
_DATETIME_TO_MONGO = DateTimeField.to_mongo
_COMPLEX_TO_MONGO = ComplexBaseField.to_mongo
_EMBEDDED_TO_MONGO = EmbeddedDocumentField.to_mongo
_EMBEDDED_VALIDATE = EmbeddedDocumentField.validate
_LIST_VALIDATE = ListField.validate
_DICT_VALIDATE = DictField.validate
_LAZY_VALIDATE = LazyReferenceField.validate
_REFERENCE_VALIDATE = ReferenceField.validate
_ENUM_VALIDATE = EnumField.validate
_DOCUMENT_VALIDATE = BaseDocument.validate
_DOCUMENT_CLEAN = BaseDocument.clean
_DOCUMENT_SETATTR = BaseDocument.__setattr__
_DOCUMENT_INIT = mongoengine.Document.__init__
_EMBEDDED_DOCUMENT_TO_MONGO = EmbeddedDocument.to_mongo


# The exact types of the values to_python returns unchanged, by to_python.
_TYPE_KEPT = {
    to_python: kept
    for to_python, kept in IDENTITY_FOR.items()
    if isinstance(kept, type)
}


def _stored_type(field: BaseField) -> type | None:
    """The exact type whose values ``field.to_mongo`` returns unchanged."""
    to_mongo = type(field).to_mongo
    if to_mongo is _OBJECT_ID_TO_MONGO:
        return ObjectId
    if to_mongo is _DATETIME_TO_MONGO:
        return datetime.datetime
    if to_mongo is not _BASE_TO_MONGO:
        return None
    return _TYPE_KEPT.get(type(field).to_python)


# The document MongoEngine's ``__init__`` is building with the constructor's
# values, until it has converted them (see ``FastWrites.__init__``).
_CONVERTING: ContextVar[tuple[Any, dict[str, Any]] | None] = ContextVar(
    "_CONVERTING", default=None
)


class FastWrites:
    """Routes ``__init__``, ``validate`` and ``to_mongo`` through the class's
    generated plan when it has one, else to MongoEngine."""

    __slots__ = ()

    def __init__(self, *args: Any, **values: Any) -> None:
        """MongoEngine's ``__init__``, done by the plan for keyword values. No
        ``plan_watch.refresh`` first (half a construction's time): the plan
        checks what it was built from, and refuses after a change."""
        if "__auto_convert" in values:  # a load's values, kept: no plan takes
            super().__init__(*args, **values)  # that key (asked first: 3 calls fewer)
            return
        plan: Any = _plans[type(self)]
        if plan is not None and not args:
            if plan.construct(self, values):
                return
            plan_watch.refresh(type(self))  # if changed: a new plan for the next ones
        converting = _CONVERTING.set((self, values))
        try:
            super().__init__(*args, **values)
        finally:
            _CONVERTING.reset(converting)

    def _BaseDocument__set_field_display(self) -> None:
        """MongoEngine's, which its ``__init__`` calls once the values are
        converted, before ``post_init``: the values of the fields holding
        cached references kept as given there (:func:`keep_given`), so what a
        ``post_init`` receiver assigns stays as assigned."""
        held = _CONVERTING.get()
        if held is not None and held[0] is self:  # (not a document built meanwhile)
            _CONVERTING.set(None)
            our_fields.keep_given(self, held[1])
        super()._BaseDocument__set_field_display()  # type: ignore[misc]

    @classmethod
    def from_json(cls, json_data: str, created: bool = False, **kwargs: Any) -> Self:
        """MongoEngine's ``from_json``, with the plain references and bare ids
        given to fields holding cached references as given (as the constructor
        keeps them): validation refuses them, as MongoEngine's does."""
        load = super().from_json  # type: ignore[misc]
        document = load(json_data, created=created, **kwargs)
        our_fields.keep_given(document, {})  # (the user's data: none given marked)
        return document

    def validate(self, clean: bool = True) -> None:
        """MongoEngine's ``validate``, skipped when the plan proves it passes."""
        cls = type(self)
        plan_watch.refresh(cls)
        plan = _plans[cls]
        if plan is None or not plan.valid(self, clean):
            super().validate(clean=clean)  # type: ignore[misc]

    def to_mongo(self, *args: Any, **kwargs: Any) -> SON[str, Any]:
        """MongoEngine's ``to_mongo``, built by the plan for the default arguments."""
        if args or kwargs:  # MongoEngine's own: no plan to keep current
            return super().to_mongo(*args, **kwargs)  # type: ignore[misc]
        plan_watch.refresh(type(self))
        plan = _plans[type(self)]
        if plan is None:
            return super().to_mongo()  # type: ignore[misc]
        return SON(plan.dump(self))


library_builders(FastWrites)  # its __init__: MongoEngine's, for the loader


def raw(document: Any) -> dict:
    """``document.to_mongo()`` as a plain dict (same keys, same order), which
    PyMongo encodes faster than a SON; for inserts and saves (which ask
    ``plan_watch.refresh`` once first)."""
    cls = type(document)
    plan = _plans[cls]
    if plan is None or not plan.plain_to_mongo or "to_mongo" in document.__dict__:
        return document.to_mongo()  # (a to_mongo set on the document: called)
    return plan.dump(document)


def has_id(document: Any) -> bool:
    """``"_id" in document.to_mongo(fields=[id_field])``, as ``save`` asks it."""
    cls = type(document)
    plan = _plans[cls]
    if plan is not None and plan.plain_to_mongo and "to_mongo" not in document.__dict__:
        value = document._data.get(document._meta["id_field"])
        if value is None:
            return False
        if type(value) is plan.id_type:
            return True
    return "_id" in document.to_mongo(fields=[document._meta["id_field"]])


def set_id(
    document: Any, value: Any, *, stored: bool = False, by_pk: bool = False
) -> None:
    """``setattr(document, id_field, value)``, as a save ends (with
    ``by_pk``, ``document.pk = value``, as an insert ends): for a new document
    of a planned class, what MongoEngine's ``__setattr__`` and ``__set__`` do
    then, without the lookups; nothing for a stored document given the very
    id it holds. With ``stored``, ``value`` is the id the database gave,
    converted by the id field's ``to_python`` first (as ``save`` does),
    unless that keeps it unchanged."""
    name = document._meta["id_field"]
    cls = type(document)
    plan = _plans[cls]
    if stored and (plan is None or type(value) is not plan.id_kept):
        value = document._fields[name].to_python(value)
    if plan is None or type(value) is not plan.id_type:
        setattr(document, "pk" if by_pk else name, value)
        return
    data = document._data
    old = data.get(name)
    if old is value and document._created is False:
        return  # a stored document's own id again: setattr would change nothing
    state = document.__dict__
    if not (state.get("_created") is True and state.get("_initialised") is True):
        setattr(document, "pk" if by_pk else name, value)
        return
    state["_created"] = False  # __setattr__: an id makes it no longer new
    if old is not value and (old is None or old != value):  # __set__: a change
        document._mark_as_changed(name)
    data[name] = value


# Set in a document's __dict__ while the mark of its id is the one an early id
# made (give_id), until an insert returning moves it (inserts.set_ids): kept by
# a save or insert that did not return (cancelled, or of unknown outcome).
EARLY_MARK = "_async_early_id_mark"
# Set in a document's __dict__ to the GivenId of the write that gave its id
# (give_id) until another write of the document starts (keep_id): a
# refusal of that write takes the id back only if none did, which may have
# stored the document under it meanwhile.
GIVEN_MARK = "_async_given_id"


class GivenId(NamedTuple):
    """What :func:`give_id` changed on a document, for :func:`take_id_back`."""

    object_id: ObjectId
    created: bool  # the document's _created before
    marked: bool  # the id's mark added to its list of changes
    # The one it replaced, the document holding its id: one listed twice in
    # an insert (the id of its first copy, stored if only the second is refused).
    before: GivenId | None = None


def give_id(document: Any, raw: dict) -> GivenId:
    """Put the id PyMongo's insert would make into ``raw`` and on ``document``,
    which is new (``_created``, as one without an id is: a loaded one whose id
    was cleared too) until its write returns: a write cancelled on the way or
    of unknown outcome leaves the document its id, so a retry writes the same
    one, whole. Returns what it changed."""
    raw["_id"] = object_id = ObjectId()
    state = document.__dict__
    before = None  # (none on a save's path: its turn kept it)
    if GIVEN_MARK in state:  # (asked first: most documents hold none)
        before = state.get(GIVEN_MARK)  # (None if another thread popped it)
        if before is not None:
            before = _held(document, before)
    created = document._created
    changes = None  # (in the instance dict; asked first: one __init__ built
    if "_changed_fields" in state:  # holds none, and costs no call then)
        changes = state.get("_changed_fields")  # (None if another thread removed it)
    marked = changes is not None and id_key(document) not in changes
    if marked:  # (flagged for the insert that may come next: inserts.set_ids)
        state[EARLY_MARK] = True
    plan = _plans[type(document)]
    if (
        plan is not None
        and plan.id_type is ObjectId
        and plan.loaded
        and state.get("_initialised") is True
    ):
        # What set_id does but for _created, made True: the id, a change.
        state["_created"] = True
        name = document._meta["id_field"]
        document._data[name] = object_id
        # (One __init__ built has no list of changes until saved: MongoEngine's
        # _mark_as_changed, unless replaced, returns at once; a hasattr that
        # raises inside, costlier than the call.)
        if changes is not None or (
            type(document)._mark_as_changed is not _MARK_AS_CHANGED
        ):
            document._mark_as_changed(name)
    else:
        set_id(document, object_id)
        document._created = True
    state[GIVEN_MARK] = given = GivenId(object_id, created, marked, before)
    return given


def _held(document: Any, given: GivenId) -> GivenId | None:
    """``given``, the mark ``document`` holds, if it still holds that id: then
    no other write started since (only an insert listing the document twice
    gives it another: the copies were dumped before the first was given one)."""
    held = document._data.get(document._meta["id_field"])
    return given if held is given.object_id else None


def keep_id(document: Any) -> None:
    """``document`` keeps the id it holds: the write that gave it
    (:func:`give_id`), refused, no longer takes it back. Once another write
    of the document starts, which may store it under that id, or that write
    returned."""
    document.__dict__.pop(GIVEN_MARK, None)


def id_key(document: Any) -> str:
    """The name a document's id is marked changed by (its stored name)."""
    name = document._meta["id_field"]
    return document._db_field_map.get(name, name)


def not_stored(error: BaseException) -> bool:
    """Whether ``error``, raised by an insert of one document given an early
    id, proves the document was not stored: the server refused it (a write
    error: a unique key, a validation rule), and not for its ``_id`` (which an
    earlier attempt of the same insert holds), or PyMongo did before sending
    it (``InvalidDocument``: too large to encode)."""
    if isinstance(error, InvalidDocument):
        return True
    return isinstance(error, pymongo.errors.WriteError) and (
        (error.details or {}).get("keyPattern") != {"_id": 1}
    )


def take_id_back(document: Any, given: GivenId) -> None:
    """Undo :func:`give_id` after a write the server refused (or PyMongo did,
    before sending it: too large to encode): the document
    holds no id, is new or not as before, and lists its changes without the
    id's mark, as MongoEngine's failed save leaves it (unless its id was
    changed meanwhile, or another write of it started: see :func:`keep_id`).
    Given ``before`` (listed twice), it holds that one's id again."""
    name = document._meta["id_field"]
    state = document.__dict__
    # (Popped checked: a sync save in another thread may keep_id() between.)
    if state.get(GIVEN_MARK) is not given or state.pop(GIVEN_MARK, None) is not given:
        return
    if document._data.get(name) is not given.object_id:
        return
    before = given.before
    document._data[name] = None if before is None else before.object_id
    document._created = given.created
    state.pop(EARLY_MARK, None)
    if before is not None:
        state[GIVEN_MARK] = before
        if before.marked:  # (its mark an early id's again: inserts.set_ids)
            state[EARLY_MARK] = True
    changes = getattr(document, "_changed_fields", None)
    if given.marked and changes is not None and id_key(document) in changes:
        changes.remove(id_key(document))


def mark_saved(document: Any) -> None:
    """``document._created = False``, as a save ends: for a planned class,
    straight into the instance dict, where ``BaseDocument.__setattr__`` puts
    it (no field, id or shard key is named ``_created``, and LoadedState's
    class value shadows the slot)."""
    cls = type(document)
    plan = _plans[cls]
    if plan is None or not plan.loaded:
        document._created = False
    else:
        document.__dict__["_created"] = False


def son_details(details: Mapping[str, Any]) -> Mapping[str, Any]:
    """A bulk write error's details with each failed document as the SON
    ``to_mongo()`` gives (as MongoEngine's message shows it), not ``raw``'s dict."""
    errors = [
        {**error, "op": SON(error["op"])} if type(error.get("op")) is dict else error
        for error in details.get("writeErrors", ())
    ]
    return {**details, "writeErrors": errors} if errors else details


# -- plans ------------------------------------------------------------------------


class _Plan:
    """The generated write functions of one class."""

    __slots__ = (
        "construct",
        "dump",
        "id_kept",
        "id_type",
        "loaded",
        "plain_to_mongo",
        "valid",
    )

    def __init__(self, cls: type[Any], document: bool) -> None:
        fields = [(name, cls._fields[name]) for name in cls._fields_ordered]
        source = _Source(cls, fields, document)
        self.construct = source.construct() if document else None
        self.valid = source.valid()
        self.dump = source.dump()
        self.plain_to_mongo = cls.to_mongo is FastWrites.to_mongo
        id_field = cls._fields.get(cls._meta.get("id_field")) if document else None
        self.id_type = None if id_field is None else _stored_type(id_field)
        # The exact type of the ids the id field's to_python keeps unchanged.
        self.id_kept = (
            None if id_field is None else _TYPE_KEPT.get(type(id_field).to_python)
        )
        self.loaded = issubclass(cls, LoadedState)


class _Plans(dict[type[Any], "_Plan | None"]):
    """The write plans, by class: a known class's is one subscript, without a
    Python call (a save asks for it several times)."""

    def __missing__(self, cls: type[Any]) -> _Plan | None:
        """Make the plan of a FastWrites class, or None when only MongoEngine's
        code is exact for it."""
        since = plan_watch.generation()
        plan_watch.watch(cls)
        eligible = (
            issubclass(cls, FastWrites)
            and plan_watch.library_intact()
            and _eligible(cls, document=True)
        )
        return _build(cls, True, since) if eligible else _keep(cls, None, since)


_plans = _Plans()
plan_watch.forgets(_plans)


def _embedded_plan(cls: type[Any]) -> _Plan | None:
    """The plan of an EmbeddedDocument class (validate and to_mongo only)."""
    plan = _plans.get(cls, _MISSING)
    if plan is _MISSING:
        since = plan_watch.generation()
        plan_watch.watch(cls)
        eligible = (
            cls.validate is _DOCUMENT_VALIDATE
            and cls.to_mongo is _EMBEDDED_DOCUMENT_TO_MONGO
            and plan_watch.library_intact()
            and _eligible(cls, document=False)
        )
        plan = _build(cls, False, since) if eligible else _keep(cls, None, since)
    return plan  # type: ignore[return-value]


def _build(cls: type[Any], document: bool, since: int) -> _Plan | None:
    """The plan of ``cls``, kept; None, not kept, while a class it embeds is
    not defined yet (MongoEngine's code reports that, if it is asked)."""
    try:
        plan = _Plan(cls, document)
    except (NotRegistered, ValidationError):
        return None
    return _keep(cls, plan, since)


def _keep(cls: type[Any], plan: _Plan | None, since: int) -> _Plan | None:
    """``plan_watch.keep`` of the plan of ``cls``, built since ``since``."""
    return plan_watch.keep(_plans, cls, plan, since)


def _eligible(cls: type[Any], document: bool) -> bool:
    """Whether the plan can do exactly what MongoEngine does for ``cls``."""
    if cls._dynamic or cls.STRICT or cls.__setattr__ is not _DOCUMENT_SETATTR:
        return False
    if document and (
        not cls.__dictoffset__
        or (cls._meta.get("id_field") != "id" and "id" in cls._fields)
    ):
        return False
    return all(
        not field._auto_gen
        and (field.name == "_cls") == (field.db_field == "_cls")
        and plain_setter(field)
        and type(field).__get__ in _NONE_GETTERS
        and hasattr(type(field).to_mongo, "__code__")
        and not _own_methods(field)
        for field in cls._fields.values()
    )


def _calls_default(field: BaseField) -> bool:
    """Whether ``__set__(None)`` calls the field's default (a user's function)."""
    return callable(field.default) and not field.null


# The field classes whose ``to_python`` runs no user code (no document built):
# scalars (those a reference's target may have as id field), references (of
# such targets), containers.
_QUIET_SCALARS = (*SCALAR_FIELDS, mongoengine.GeoPointField)
# (the references whose ``to_python`` calls their target's id field's)
_TARGET_IDS_CONVERTED = (mongoengine.ReferenceField, mongoengine.LazyReferenceField)
_REFERENCES = (*_TARGET_IDS_CONVERTED, mongoengine.GenericReferenceField)
_QUIET_CONVERSIONS = (
    *_QUIET_SCALARS,
    *_REFERENCES,
    mongoengine.ListField,
    mongoengine.DictField,
)


def _converts_quietly(field: BaseField | None) -> bool:
    """Whether ``field.to_python`` (its items' too) runs no user code: the
    library's scalar fields, in lists and dicts, and references to documents
    whose id field is such a scalar field (their ``to_python`` converts ids)."""
    while field is not None:
        if not _library_field(field, _QUIET_CONVERSIONS):
            return False
        if isinstance(field, _TARGET_IDS_CONVERTED) and not _library_field(
            getattr(field.document_type, "id", None), _QUIET_SCALARS
        ):
            return False
        field = getattr(field, "field", None)
    return True


# The containers a quiet conversion walks without running a user's code.
_PLAIN_CONTAINERS = frozenset((list, tuple, BaseList, dict, BaseDict))


def _holds_documents(field: BaseField) -> bool:
    """Whether ``field`` keeps documents given (references, untyped lists and
    dicts, at any depth), which a value stored links to its owner."""
    return isinstance(innermost(field), (*_REFERENCES, ComplexBaseField))


def _quiet_for(field: BaseField) -> Callable[[Any], bool]:
    """For a field whose conversion runs no user code of its own: whether it
    runs none for a value either. A value's own methods that a conversion
    calls (``int()`` its ``__int__``, an item's ``to_python``...) are a
    user's code, which ``__init__`` runs after the defaults: only the types
    the driver decodes, DBRefs, the field's enum's members and, for references
    and untyped containers, documents pass (none with a ``to_python`` of its
    own, which a list or dict field calls), in lists, tuples and dicts (their
    keys too) at any depth; not a generator either, which is read once."""
    item = innermost(field)
    kept: tuple[type, ...] = (DBRef,)
    if _holds_documents(field):
        kept += (BaseDocument,)
    elif isinstance(item, EnumField):
        kept += (item._enum_cls,)

    def quiet(value: Any) -> bool:
        kind = type(value)
        if kind in PLAIN_VALUE_TYPES:
            return True
        if kind not in _PLAIN_CONTAINERS:
            return isinstance(value, kept) and not hasattr(value, "to_python")
        if isinstance(value, dict):
            return all(map(quiet, value)) and all(map(quiet, value.values()))
        return all(map(quiet, value))

    return quiet


def _library_field(field: Any, kinds: tuple[type, ...]) -> bool:
    """Whether ``field`` is one of MongoEngine's (or our) fields of ``kinds``."""
    return type(field).__module__ in _OWN_FIELD_MODULES and isinstance(field, kinds)


def _converting(field: BaseField) -> tuple[type, ...] | None:
    """The classes of the values ``field.to_python`` keeps as given, when of
    others it may run a user's code (None: it never does): an embedded
    document's class for an EmbeddedDocumentField, none for the others."""
    if _converts_quietly(field):
        return None
    if type(field) is EmbeddedDocumentField:
        return (field.document_type,)
    return ()


def _given_in_order(
    acting: dict[str, tuple[int, bool, tuple[type, ...] | None]],
) -> Callable[[dict], bool]:
    """A test of a constructor's values: whether those that run a user's code
    come in the fields' order, construct()'s (``__init__``'s is the order
    given). ``acting``: a field's name to its position, whether None calls
    its default, and what values its conversion runs such code for
    (:func:`_converting`)."""

    def given_in_order(values: dict) -> bool:
        last = -1
        for key, value in values.items():
            held = acting.get(key)
            if held is None:
                continue
            at, on_none, kept = held
            if value is None:
                acts = on_none
            else:
                acts = kept is not None and not isinstance(value, kept)
            if acts:
                if at < last:
                    return False
                last = at
        return True

    return given_in_order


def _bases_hold(validate: Any) -> bool:
    """Whether the base method MongoEngine's ``validate`` calls (``super()``)
    is MongoEngine's, not patched: ComplexBaseField's for ListField's and
    DictField's, BaseField's for EnumField's."""
    if validate is _LIST_VALIDATE or validate is _DICT_VALIDATE:
        return ComplexBaseField.validate is _COMPLEX_VALIDATE
    return validate is not _ENUM_VALIDATE or BaseField.validate is _BASE_VALIDATE


# The field methods the plans read from a field's class: one set on the field
# itself (``field.validate = ...``, ``mock.patch.object(field, ...)``) is
# MongoEngine's to call.
_METHODS = frozenset(
    ["to_python", "to_mongo", "validate", "_validate", "_validate_choices"]
)


def _own_methods(field: BaseField | None) -> bool:
    """Whether ``field`` (or its item field) has one of those methods of its own."""
    while field is not None:
        if not _METHODS.isdisjoint(vars(field)):
            return True
        field = getattr(field, "field", None)
    return False


# The modules whose fields' checks only check (no embedded document's clean(),
# no user code), and the fields of theirs that validate embedded documents.
_OWN_FIELD_MODULES = frozenset(
    ["mongoengine.base.fields", "mongoengine.fields", our_fields.__name__]
)
_CLEANING = (
    mongoengine.EmbeddedDocumentField,
    mongoengine.GenericEmbeddedDocumentField,
    mongoengine.DynamicField,
)


def _checks_only(field: BaseField | None) -> bool:
    """Whether ``field._validate`` only checks, its items' too: MongoEngine's
    (or our) field classes, no ``validation=`` function, no embedded document
    (whose ``clean()`` may change it). Asking such a check a second time, when
    MongoEngine's ``validate`` runs after it failed, changes nothing."""
    while field is not None:
        if (
            type(field).__module__ not in _OWN_FIELD_MODULES
            or field.validation is not None
            or isinstance(field, _CLEANING)
        ):
            return False
        field = getattr(field, "field", None)
    return True


def _passes(field: BaseField, value: Any) -> bool:
    """Whether ``field._validate(value)`` passes: MongoEngine's own check of
    one value, where no plain check proves it."""
    try:
        field._validate(value)
    except Exception:
        return False
    return True


def _valid_embedded(value: Any, clean: bool) -> bool:
    """Whether validating an embedded document would pass (its class's plan)."""
    plan = _embedded_plan(type(value))
    return plan is not None and plan.valid(value, clean)


def _dump_embedded(value: Any) -> Any:
    """An embedded document's ``to_mongo()`` by its class's plan, or MISSING."""
    plan = _embedded_plan(type(value))
    return _MISSING if plan is None else SON(plan.dump(value))


def _dump_embedded_list(value: Any, document_type: type[Any]) -> Any:
    """A list of ``document_type`` documents as a list field's ``to_mongo``
    gives it (each item by its class's plan), or MISSING when an item (or the
    container) is of another type, or the class has no plan."""
    if not isinstance(value, list) or not all(
        type(item) is document_type for item in value
    ):
        return _MISSING
    plan = _embedded_plan(document_type)
    if plan is None:
        return _MISSING
    dump = plan.dump
    return [SON(dump(item)) for item in value]


# -- the generated code ---------------------------------------------------------------


class _Source:
    """Generates the three functions of one class's plan."""

    def __init__(
        self, cls: type[Any], fields: list[tuple[str, BaseField]], document: bool
    ) -> None:
        self.cls, self.fields, self.document = cls, fields, document
        self.namespace: dict[str, Any] = {
            "BaseDict": BaseDict,
            "BaseList": BaseList,
            "MISSING": _MISSING,
            "class_name": cls._class_name,
            "dump_embedded": _dump_embedded,
            "dump_embedded_list": _dump_embedded_list,
            "embed": link_embedded,
            "post_init": signals.post_init,
            "pre_init": signals.pre_init,
            "set_data": BaseDocument.__dict__["_data"].__set__,
            "set_field_display": set_field_display,
            "valid_embedded": _valid_embedded,
            "passes": _passes,
        }

    def _compile(self, source: str, kind: str) -> Callable[..., Any]:
        """The function ``kind`` defined by ``source``, named after the class,
        with its own copy of the names set so far: the functions generated
        after it (which name their values by field index too, in another field
        order) do not change the names it reads."""
        name = f"<{kind} of {self.cls._class_name}>"
        namespace = dict(self.namespace)
        exec(compile(source, name, "exec"), namespace)
        return namespace[kind]

    # -- construct ------------------------------------------------------------------

    def construct(self) -> Callable[[Any, dict], bool]:
        """``construct(document, values)``: ``__init__``'s work, or False
        (having changed nothing) when MongoEngine's ``__init__`` must run.

        An absent value and None both give the field's default, as in
        ``__init__``. What may run a user's code (a default called, a
        conversion building a document) runs in ``__init__``'s order: the
        absent fields' defaults, then the given values in the order given
        (else ``__init__`` runs), after the conversions running none: one of
        those raising sends the values to ``__init__``, which raises in its
        own order; what raises once a user's code ran is raised here, as
        ``__init__`` raises it (run again, that code would run twice).
        """
        ns = self.namespace
        ns["known_keys"] = frozenset(self.cls._fields)
        fields = list(self.cls._fields.items())
        lines = [
            "def construct(self, values):",
            f"    if not known_keys.issuperset(values){_INIT_RECEIVERS}:",
            "        return False",
            f"    if not ({self._settings_hold(fields)}):",
            "        return False  # changed since built: __init__, then a new plan",
        ]
        acting = {
            name: (index, _calls_default(field), _converting(field))
            for index, (name, field) in enumerate(fields)
            if _calls_default(field) or _converting(field) is not None
        }
        if len(acting) > 1:
            ns["given_in_order"] = _given_in_order(acting)
            lines += [  # (one value: in order)
                "    if len(values) > 1 and not given_in_order(values):",
                "        return False",
            ]
        # First what runs no user's code: the checks that the defaults and
        # conversions are those built from, the quiet conversions; any of them
        # raising or refusing sends the values to __init__, nothing done yet.
        # The documents they keep are linked to this one once all passed
        # (one refusing: __init__ links them in its order, or never).
        quiet, links = [], []
        for index, (name, field) in enumerate(fields):
            if name not in acting:
                quiet += self._convert(index, name, field, linked=False)
            else:
                quiet += self._unchanged(index, field)
                if _converting(field) is not None:
                    continue
                # (a value given: converted here)
                quiet += self._convert(index, name, field, True, ["pass"], False)
            if _holds_documents(field):
                links.append(f"    embed(self, v{index})")
        if quiet:  # (an abstract class may have no field at all)
            lines += ["    try:", *_indent(quiet, 8), "    except Exception:"]
            lines += ["        return False", *links]
        # Then what may run a user's code, in __init__'s order (the absent
        # fields' defaults, then the values given, in order as tested above):
        # what raises there is what __init__ raises, so it is raised here.
        acts = []
        for index, (name, field) in enumerate(fields):
            if _calls_default(field):
                acts += [f"if {name!r} not in values:"]
                acts += _indent(self._default(index, field, f"v{index}", True), 4)
        for index, (name, field) in enumerate(fields):
            if name in acting and _converting(field) is None:  # (None given)
                acts += [f"if v{index} is None and {name!r} in values:"]
                acts += _indent(self._default(index, field, f"v{index}", True), 4)
            elif name in acting:
                block = self._convert(index, name, field, checked=True)
                if _calls_default(field):  # (absent: its default called above)
                    given = [f"v{index} = values[{name!r}]", *block[1:]]
                    block = [f"if {name!r} in values:", *_indent(given, 4)]
                acts += block
        lines += _indent(acts, 4)
        data = ", ".join(
            f"{name!r}: v{index}" for index, (name, _) in enumerate(fields)
        )
        lines.append(f"    data = {{{data}}}")
        if "_cls" in self.cls._fields:  # allow_inheritance: a field holds it
            lines += [
                "    if '_cls' not in values:",
                "        data['_cls'] = class_name",
            ]
        display = has_field_display(self.cls)
        lines += [
            # __init__'s key order: the absent fields, then the given ones in
            # the order given (moved without a call: del, then set again).
            "    for key in values:",
            "        value = data[key]",
            "        del data[key]",
            "        data[key] = value",
            "    set_data(self, data)",
            "    state = self.__dict__",
            # __init__'s flags; False while get_<field>_display are set, as there.
            f"    state['_initialised'] = {not display}",
            "    state['_created'] = True",
        ]
        if "_cls" not in self.cls._fields:
            lines.append("    state['_cls'] = class_name")
        if display:
            lines += ["    set_field_display(self)", "    state['_initialised'] = True"]
        lines.append("    return True")
        return self._compile("\n".join(lines) + "\n", "construct")

    def _settings_hold(self, fields: list[tuple[str, BaseField]]) -> str:
        """An expression, True while the class's ``__setattr__``, its fields
        and their ``choices`` (the display methods) are those construct() was
        built from: identity checks, far cheaper than ``plan_watch.refresh``."""
        ns = self.namespace
        ns["cls"], ns["base_setattr"] = self.cls, _DOCUMENT_SETATTR
        ns["library_document"], ns["base_init"] = mongoengine.Document, _DOCUMENT_INIT
        ns["fields_built"] = dict(self.cls._fields)  # (a field added, replaced...)
        checks = [
            "cls.__setattr__ is base_setattr",
            # (BaseDocument.__init__, which it does the work of, not patched)
            "library_document.__init__ is base_init",
            "cls._fields == fields_built",
        ]
        for index, (_, field) in enumerate(fields):
            ns[f"field_{index}"], ns[f"choices_{index}"] = field, field.choices
            checks.append(f"field_{index}.choices is choices_{index}")
        return " and ".join(checks)

    def _conversion_changed(self, index: int, field: BaseField) -> str:
        """An expression, True once the field's conversion may not be the one
        construct() was built from: a ``to_python`` set on the field, another
        item field, or a ``to_python`` set on it."""
        ns = self.namespace
        ns[f"settings_{index}"] = vars(field)
        changed = f"'to_python' in settings_{index}"
        inner = getattr(field, "field", None)
        if inner is None:
            return changed
        ns[f"inner_{index}"], ns[f"inner_settings_{index}"] = inner, vars(inner)
        return (
            f"{changed} or field_{index}.field is not inner_{index}"
            f" or 'to_python' in inner_settings_{index}"
        )

    def _unchanged(self, index: int, field: BaseField) -> list[str]:
        """Return False if the field's default or conversion may not be those
        construct() was built from."""
        self.namespace[f"default_{index}"] = field.default
        self.namespace[f"null_{index}"] = field.null
        return [
            f"if field_{index}.default is not default_{index}"
            f" or field_{index}.null is not null_{index}"
            f" or {self._conversion_changed(index, field)}:",
            "    return False",
        ]

    def _default(
        self, index: int, field: BaseField, target: str, checked: bool = False
    ) -> list[str]:
        """What ``__set__(None)`` stores: None, or the default (linked if
        embedded). ``checked``: :meth:`_unchanged` ran before."""
        default = field.default
        self.namespace[f"default_{index}"] = default
        self.namespace[f"null_{index}"] = field.null
        changed = (
            []
            if checked
            else [
                f"if field_{index}.default is not default_{index}"
                f" or field_{index}.null is not null_{index}:",
                "    return False",
            ]
        )
        if field.null or default is None:
            return [*changed, f"{target} = None"]
        if not callable(default) and not isinstance(
            default, list | tuple | EmbeddedDocument
        ):
            return [*changed, f"{target} = default_{index}"]
        value = f"default_{index}()" if callable(default) else f"default_{index}"
        return [*changed, f"{target} = {value}", f"embed(self, {target})"]

    def _convert(
        self,
        index: int,
        name: str,
        field: BaseField,
        checked: bool = False,
        on_none: list[str] | None = None,
        linked: bool = True,
    ) -> list[str]:
        """Set ``v<index>`` to the value ``__init__`` stores for the field
        (``checked``: :meth:`_unchanged` ran before; ``on_none``: what runs
        for None instead of the default; ``linked``: its embedded documents
        linked to the document, else left to the caller)."""
        ns = self.namespace
        value = f"v{index}"
        inner = getattr(field, "field", None)
        to_python = set_conversion(field)
        list_to_python = overridden(type(field), "to_python") is LIST_TO_PYTHON
        if list_to_python and inner is not None:
            to_python = list_converter(field, inner)
        if our_fields.holds_cached_references(field):  # (its to_python marks)
            to_python = our_fields.kept_as_given(to_python)
        ns[f"to_python_{index}"] = to_python
        lines = [
            f"{value} = {plan_watch.lookup('values', name)}",
            f"if {value} is None:",
            *_indent(on_none or self._default(index, field, value, checked), 4),
        ]
        if not checked:
            changed = self._conversion_changed(index, field)
            lines += [f"elif {changed}:", "    return False"]
        identity = _TYPE_KEPT.get(type(field).to_python)
        if identity is not None:
            ns[f"type_{index}"] = identity
            lines += [f"elif type({value}) is type_{index}:", "    pass"]
        item = _TYPE_KEPT.get(type(inner).to_python) if inner is not None else None
        if list_to_python and item is not None:
            # ComplexBaseField.to_python copies a list whose items it keeps.
            ns[f"items_{index}"] = frozenset([item])
            lines += [
                f"elif type({value}) is list and "
                f"items_{index}.issuperset(map(type, {value})):",
                f"    {value} = list({value})",
            ]
        if _converts_quietly(field):
            # A value whose conversion runs a user's code (a generator, read
            # once) goes to __init__, which runs it in its order.
            ns[f"quiet_{index}"] = _quiet_for(field)
            lines += [f"elif not quiet_{index}({value}):", "    return False"]
        lines += ["else:", f"    {value} = to_python_{index}({value})"]
        return [*lines, f"    embed(self, {value})"] if linked else lines

    # -- valid ------------------------------------------------------------------------

    def valid(self) -> Callable[[Any, bool], bool]:
        """``valid(document, clean)``: True only if ``validate`` would pass."""
        custom_clean = self.cls.clean is not _DOCUMENT_CLEAN
        body = []
        if custom_clean:
            body += ["if clean:", "    return False"]
        # A clean (or, for an embedded document, whose field calls it, a
        # validate) set on the document itself, as mock.patch.object(document,
        # "clean", ...) sets it: MongoEngine's validate calls it.
        own = [] if self.document else ["'validate' in state"]
        if not custom_clean:
            own.append("clean and 'clean' in state")
        if own and self.cls.__dictoffset__:  # (no instance dict: none of its own)
            body += ["state = self.__dict__", f"if {' or '.join(own)}:"]
            body.append("    return False")
        body.append("data = self._data")
        for index, (name, field) in enumerate(self.fields):
            check = self._check(index, field, f"v{index}", "clean")
            read = plan_watch.lookup("data", name)
            body += [f"v{index} = {read}", f"if v{index} is None:"]
            body.append("    return False" if field.required else "    pass")
            body += [f"elif not ({check}):", "    return False"]
        body.append("return True")
        # A check that raises (a value of a surprising type) is no proof either.
        lines = ["def valid(self, clean):", "    try:", *_indent(body, 8)]
        lines += ["    except Exception:", "        return False"]
        return self._compile("\n".join(lines) + "\n", "valid")

    def _check(
        self,
        index: int | str,
        field: BaseField,
        value: str,
        clean: str,
        alone: bool = True,
    ) -> str:
        """An expression, True only when ``field._validate(value)`` passes
        (``clean``: the expression of the clean flag an embedded document gets).

        Where the plain checks prove nothing, a field whose check only checks
        asks it (``alone``: or leaves that to its list's).
        """
        check = self._plain_check(index, field, value, clean)
        if not alone or not _checks_only(field):
            return check
        self.namespace[f"cfield_{index}"] = field
        asked = f"passes(cfield_{index}, {value})"
        return asked if check == "False" else f"({check}) or {asked}"

    def _plain_check(
        self, index: int | str, field: BaseField, value: str, clean: str
    ) -> str:
        """An expression of plain checks, True only when ``field._validate(value)``
        passes."""
        if field.validation is not None or type(field)._validate is not _BASE_CHECK:
            return "False"
        choices = self._choices(index, field, value)
        if choices is None:
            return "False"
        validate = type(field).validate
        if validate is _EMBEDDED_VALIDATE:
            if field.choices:  # compared by isinstance, not by value
                return "False"
            self.namespace[f"cdocument_type_{index}"] = field.document_type
            check = (
                f"type({value}) is cdocument_type_{index}"
                f" and valid_embedded({value}, {clean})"
            )
        elif not _bases_hold(validate):
            return "False"
        elif validate is _LIST_VALIDATE:
            check = self._list_check(index, field, value)
        elif validate is _DICT_VALIDATE:
            if field.required or field.choices:
                return "False"
            check = f"isinstance({value}, dict) and not {value}"  # nothing to check
        elif validate is _LAZY_VALIDATE:
            check = self._lazy_check(index, field, value)
        elif validate is _REFERENCE_VALIDATE:
            if field.choices:  # compared by isinstance, not by value
                return "False"
            check = self._reference_check(index, field, value)
        elif validate is _ENUM_VALIDATE:
            if issubclass(field._enum_cls, list | tuple):  # members read as pairs
                return "False"
            self.namespace[f"cenum_{index}"] = field._enum_cls
            check = f"type({value}) is cenum_{index}"  # a member
        else:
            check = self._scalar_check(index, field, value)
        return f"{check} and {choices}" if choices != "True" else check

    def _choices(self, index: int | str, field: BaseField, value: str) -> str | None:
        """The choices check on a value of a checked type (None: not plain)."""
        if not field.choices:
            return "True"
        if type(field)._validate_choices is not _BASE_CHOICES_CHECK:
            return None  # (the check _validate calls: not MongoEngine's)
        choices = list(field.choices)
        if isinstance(choices[0], list | tuple):
            choices = [key for key, _ in choices]
        try:
            self.namespace[f"cchoices_{index}"] = frozenset(choices)
        except TypeError:
            return None
        if type(field).validate is not _LIST_VALIDATE:
            return f"{value} in cchoices_{index}"
        return f"cchoices_{index}.issuperset({value})"

    def _scalar_check(self, index: int | str, field: BaseField, value: str) -> str:
        """The exact type and the bounds ``validate`` checks, for known fields."""
        kind = _TYPE_CHECKED.get(type(field).validate)
        if kind is None:
            return "False"
        ns = self.namespace
        ns[f"ctype_{index}"] = kind
        parts = [f"type({value}) is ctype_{index}"]
        lengths = (("max_length", "<="), ("min_length", ">="), ("max_bytes", "<="))
        for attribute, operator in lengths:
            if getattr(field, attribute, None) is not None:
                ns[f"c{attribute}_{index}"] = getattr(field, attribute)
                parts.append(f"len({value}) {operator} c{attribute}_{index}")
        for attribute, operator in (("min_value", ">="), ("max_value", "<=")):
            if getattr(field, attribute, None) is not None:
                ns[f"c{attribute}_{index}"] = getattr(field, attribute)
                parts.append(f"{value} {operator} c{attribute}_{index}")
        if getattr(field, "regex", None) is not None:
            ns[f"cregex_{index}"] = field.regex
            parts.append(f"cregex_{index}.match({value}) is not None")
        return " and ".join(parts)

    def _reference_check(self, index: int | str, field: BaseField, value: str) -> str:
        """A saved document of the referenced class, or an id, DBRef or
        LazyReference, as ``ReferenceField.validate`` takes them."""
        ns = self.namespace
        ns["Document"] = mongoengine.Document
        ns[f"creferences_{index}"] = (
            field.document_type,
            LazyReference,
            DBRef,
            ObjectId,
        )
        return (
            f"isinstance({value}, creferences_{index}) and not "
            f"(isinstance({value}, Document) and {value}.id is None)"
        )

    def _lazy_check(self, index: int | str, field: BaseField, value: str) -> str:
        """A LazyReference with an id, on the referenced class's collection
        (what the field's ``__init__`` conversion makes of a document's id)."""
        self.namespace["LazyReference"] = LazyReference
        self.namespace[f"clazy_type_{index}"] = field.document_type
        return (
            f"isinstance({value}, LazyReference) and {value}.pk is not None and "
            f"{value}.collection == clazy_type_{index}._get_collection_name()"
        )

    def _list_check(self, index: int | str, field: BaseField, value: str) -> str:
        """A list within its bounds whose items all pass their own check."""
        parts = [f"isinstance({value}, list)"]
        if field.max_length is not None:
            self.namespace[f"cmax_length_{index}"] = field.max_length
            parts.append(f"len({value}) <= cmax_length_{index}")
        if field.required:
            parts.append(value)
        inner = field.field
        if inner is not None:
            # Items validate as ``_validate(item)``: an embedded one with clean.
            # Their names are the list's, marked: no other field's.
            number = f"{index}_item"
            item = self._check(number, inner, "item", "True", alone=False)
            if item == "False":  # no plain check: only an empty list passes here
                parts.append(f"not {value}")
            elif item == f"type(item) is ctype_{number}":  # checked in C
                self.namespace[f"ctypes_{number}"] = frozenset(
                    [self.namespace[f"ctype_{number}"]]
                )
                parts.append(f"ctypes_{number}.issuperset(map(type, {value}))")
            else:
                parts.append(f"all({item} for item in {value})")
        return " and ".join(parts)

    # -- dump ------------------------------------------------------------------------

    def dump(self) -> Callable[[Any], dict]:
        """``dump(document)``: ``to_mongo()``'s keys and values, as a dict."""
        lines = [
            "def dump(self):",
            "    data = self._data",
            "    son = {'_id': None}",
        ]
        if self.cls._meta.get("allow_inheritance"):
            lines.append("    son['_cls'] = class_name")
        for index, (name, field) in enumerate(self.fields):
            read = plan_watch.lookup("data", name)
            lines += [f"    value = {read}", "    if value is not None:"]
            lines += _indent(self._to_mongo(index, field), 8)
            store = f"son[{field.db_field!r}] = value"
            lines += [
                "        if value is not None:"
                if not field.null
                else "        if True:",
                f"            {store}",
            ]
            if field.null:
                lines += ["    else:", f"        {store}"]
        if self.document:
            lines += [
                "    if son['_id'] is None:",
                f"        stored_id = {plan_watch.lookup('data', 'id')}",
                "        if stored_id is None:",
                "            del son['_id']",
                "        else:",
                "            son['_id'] = stored_id",
            ]
        else:
            lines += ["    if son['_id'] is None:", "        del son['_id']"]
        lines.append("    return son")
        return self._compile("\n".join(lines) + "\n", "dump")

    def _to_mongo(self, index: int, field: BaseField) -> list[str]:
        """Turn ``value`` into what ``field.to_mongo`` returns for it."""
        ns = self.namespace
        to_mongo = field.to_mongo
        if "use_db_field" in to_mongo.__code__.co_varnames:
            ns[f"to_mongo_{index}"] = lambda value: to_mongo(value, use_db_field=True)
        else:
            ns[f"to_mongo_{index}"] = to_mongo
        generic = [f"value = to_mongo_{index}(value)"]
        stored = _stored_type(field)
        if stored is not None:
            ns[f"stored_{index}"] = stored
            return [f"if type(value) is not stored_{index}:", *_indent(generic, 4)]
        if type(field).to_mongo is _EMBEDDED_TO_MONGO:
            ns[f"document_type_{index}"] = field.document_type
            return [
                f"dumped = dump_embedded(value) if type(value) is document_type_{index}"
                " else MISSING",
                f"value = to_mongo_{index}(value) if dumped is MISSING else dumped",
            ]
        item_type = _embedded_item_type(field)
        if item_type is not None:
            ns[f"document_type_{index}"] = item_type
            return [
                f"dumped = dump_embedded_list(value, document_type_{index})",
                f"value = to_mongo_{index}(value) if dumped is MISSING else dumped",
            ]
        kept = _kept_when_dumped(field)
        if kept is None:
            return generic
        ns[f"items_{index}"] = kept
        if isinstance(field, DictField):  # MapField too
            test = (
                "(type(value) is dict or type(value) is BaseDict) and "
                f"items_{index}.issuperset(map(type, value.values()))"
            )
            copy = "dict(value)"
        else:
            test = (
                "(type(value) is list or type(value) is BaseList) and "
                f"items_{index}.issuperset(map(type, value))"
            )
            copy = "list(value)"
        return [f"if {test}:", f"    value = {copy}", "else:", *_indent(generic, 4)]


def _container_to_mongo(field: BaseField) -> Any:
    """The ``to_mongo`` of ``field``'s class; for our containers, the one
    theirs overrides (it only changes the reference proxies an untyped one
    holds, none of the types kept)."""
    return overridden(type(field), "to_mongo")


def _kept_when_dumped(field: BaseField) -> frozenset[type] | None:
    """The exact types of the items ``ComplexBaseField.to_mongo`` keeps as they
    are in a list or dict of ``field`` (None: it is not that ``to_mongo``, or
    its item field changes every item)."""
    if _container_to_mongo(field) is not _COMPLEX_TO_MONGO:
        return None
    inner = getattr(field, "field", None)
    if inner is None:
        return UNTOUCHED
    item = _stored_type(inner)
    return None if item is None else frozenset([item])


def _embedded_item_type(field: BaseField) -> type[Any] | None:
    """The class of a list field's embedded documents when MongoEngine dumps
    each by that class's ``to_mongo``, else None."""
    inner: Any = getattr(field, "field", None)
    if (
        _container_to_mongo(field) is _COMPLEX_TO_MONGO
        and isinstance(inner, EmbeddedDocumentField)
        and type(inner).to_mongo is _EMBEDDED_TO_MONGO
    ):
        return inner.document_type
    return None


def _indent(lines: list[str], spaces: int) -> list[str]:
    """Source lines moved right by ``spaces``."""
    return [" " * spaces + line for line in lines]
