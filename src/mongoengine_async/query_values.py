"""Query values an async QuerySet refuses before MongoEngine builds the filter.

Operator injection: ``User.objects(password=request_json["password"])`` given
``{"$ne": ""}`` would match any password, because MongoDB reads a dict with
``$`` keys as operators. A field that never holds a dict (string, number, id,
reference...) cannot be meant to equal one, so such a plain value is refused
unless the alias was connected with ``sanitize_filter=False``.

Long regexes: the string operators (``icontains``...) compile a Python regex
first, about 1 s per MB on the event loop, for a pattern the server refuses
anyway once the text is longer than :data:`MAX_REGEX_TEXT` characters.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from mongoengine import fields
from mongoengine.base import BaseField
from mongoengine.errors import InvalidQueryError
from mongoengine.queryset import transform
from mongoengine.queryset.visitor import Q, QCombination

from mongoengine_async.connection import sanitize_filter_enabled

__all__ = ("MAX_REGEX_TEXT", "check_query_values")

# The keyword endings of the operators whose dict value on a list of embedded
# documents MongoEngine reads as a filter on them.
_MATCH_SUFFIXES = ("__match", "__elemMatch")

# The longest text a MongoDB 6.0 server accepts as a regex: one character more
# and even "aaa..." is "regular expression is too large" (any other character,
# escaped or not, compiles at least as large).
MAX_REGEX_TEXT = 32761

# Fields whose stored value is never a dict. A dict value for them (an
# EmbeddedDocumentField, DictField, MapField, DynamicField, untyped ListField, a
# geo field or a custom field can hold one) can only be read as operators.
_NO_DICT_FIELDS = (
    fields.StringField,  # EmailField, URLField, ComplexDateTimeField
    fields.IntField,  # LongField
    fields.FloatField,
    fields.DecimalField,
    fields.Decimal128Field,
    fields.BooleanField,
    fields.DateTimeField,  # DateField
    fields.ObjectIdField,
    fields.UUIDField,
    fields.SequenceField,
    fields.BinaryField,
    fields.EnumField,
    fields.ReferenceField,
    fields.LazyReferenceField,
    fields.CachedReferenceField,
    fields.GenericReferenceField,  # GenericLazyReferenceField
    fields.FileField,  # ImageField
)


def check_query_values(document: type[Any], q_obj: Any, query: dict[str, Any]) -> None:
    """Raise ``InvalidQueryError`` for a refused value in ``query`` or ``q_obj``.

    Only suspicious values (a dict with ``$`` keys or given to ``__match``, a
    list given to ``__all``, a very long string) cost more than a type check,
    so ordinary filters stay cheap.
    """
    _check_items(document, document, query)
    if q_obj is not None:
        for node in _q_leaves(q_obj):
            _check_items(document, document, node.query)


def _check_items(owner: type[Any], document: type[Any], query: dict[str, Any]) -> None:
    """Check the keyword values of one filter call or one ``Q`` on ``document``
    (``owner``, the queried Document, or an embedded document of it)."""
    for key, value in query.items():
        if isinstance(value, str):
            if len(value) > MAX_REGEX_TEXT:
                _check_regex_text(document, key, value)
        elif isinstance(value, dict):
            if key.endswith(_MATCH_SUFFIXES):
                _check_match(owner, document, key, value)
            elif _has_operator_keys(value):
                _check_operator_dict(owner, document, key)
        elif isinstance(value, (list, tuple)) and key.endswith("__all"):
            _check_all_items(owner, document, key, value)


def _check_match(
    owner: type[Any], document: type[Any], key: str, value: dict[str, Any]
) -> None:
    """Check the query of ``field__match`` on a list of embedded documents,
    which ``transform.query`` builds from the items' fields like a filter
    (``comments__match={"author": name}``; also under a key of a typed
    DictField or MapField, ``teams__red__match=...``)."""
    operator, names = _parse(key)
    field: Any = _field(document, key, names)
    if (
        operator is not None
        and isinstance(field, fields.ListField)
        and isinstance(field.field, fields.EmbeddedDocumentField)
    ):
        _check_items(owner, field.field.document_type, value)


def _q_leaves(q_obj: Any) -> Iterator[Q]:
    """Every ``Q`` in a tree of Q objects (nothing for anything else)."""
    if isinstance(q_obj, QCombination):
        for child in q_obj.children:
            yield from _q_leaves(child)
    elif isinstance(q_obj, Q):
        yield q_obj


def _has_operator_keys(value: dict) -> bool:
    """Whether MongoDB would read ``value`` as operators rather than a document."""
    return any(isinstance(key, str) and key.startswith("$") for key in value)


def _check_operator_dict(owner: type[Any], document: type[Any], key: str) -> None:
    """Refuse an operator dict given as the plain value of a dict-less field."""
    if key == "__raw__":
        return
    operator, names = _parse(key)
    if (
        operator is not None
        or (field := _dictless(owner, document, key, names)) is None
    ):
        return
    raise InvalidQueryError(
        f"{document.__name__}.{key} ({_shown(document, key, names, field)}) was "
        f'given a dict with "$" keys as its value, which MongoDB would read as '
        f"query operators (operator injection). Write operators as {key}__ne=... "
        "(field__op=value) or in __raw__"
    )


def _check_all_items(
    owner: type[Any], document: type[Any], key: str, items: list | tuple
) -> None:
    """Refuse a dict with ``$`` keys among the values of ``field__all`` on a
    dict-less list: MongoDB reads ``{"$elemMatch": ...}`` there as a condition,
    so ``tags__all=[{"$elemMatch": {"$ne": ""}}]`` matches any tag."""
    if not any(isinstance(item, dict) and _has_operator_keys(item) for item in items):
        return
    operator, names = _parse(key)
    if operator != "all" or (field := _dictless(owner, document, key, names)) is None:
        return
    raise InvalidQueryError(
        f"{document.__name__}.{key} ({_shown(document, key, names, field)}) was "
        f'given a dict with "$" keys among its values, which MongoDB would read as '
        "query operators (operator injection). Write such a query in __raw__"
    )


def _dictless(
    owner: type[Any], document: type[Any], key: str, names: list[str]
) -> BaseField | None:
    """The field ``key`` ends on if it never holds a dict and the alias of
    ``owner`` refuses operator dicts (``sanitize_filter``); else None."""
    if not sanitize_filter_enabled(owner._db_alias()):
        return None
    field = _field(document, key, names)
    return field if field is not None and _holds_no_dict(field) else None


def _check_regex_text(document: type[Any], key: str, value: str) -> None:
    """Refuse a string operator's text too long for the server's regex limit."""
    operator, _ = _parse(key)
    if operator not in transform.STRING_OPERATORS:
        return
    raise InvalidQueryError(
        f"{document.__name__}.{key}: the text is {len(value)} characters long; "
        f"MongoDB refuses a regular expression over {MAX_REGEX_TEXT} characters, "
        "and building it would block the event loop"
    )


def _parse(key: str) -> tuple[str | None, list[str]]:
    """The operator of a query keyword (None for plain equality; "not" for a
    bare negation) and its path, read with the grammar of MongoEngine's
    ``transform.query``."""
    parts = [part for part in key.split("__") if not part.isdigit()]
    operator = None
    if len(parts) > 1 and parts[-1] in transform.MATCH_OPERATORS:
        operator = parts.pop()
    if len(parts) > 1 and parts[-1] == "":
        parts.pop()  # "name__" escapes a field named like an operator
    if len(parts) > 1 and parts[-1] == "not":
        parts.pop()  # a negation: name__not__icontains builds icontains's regex
        operator = operator or "not"
    return operator, parts


def _field(document: type[Any], key: str, names: list[str]) -> BaseField | None:
    """The field the path of ``key`` ends on (None: unknown, left for
    MongoEngine to report). ``names`` is its path without list indexes, which
    ``transform.query`` looks up; an index or a key of a typed DictField or
    MapField then leads to the item field (``labels__team``, ``scores__2024``)."""
    return _walk(document, key, names)[0]


def _walk(
    document: type[Any], key: str, names: list[str]
) -> tuple[BaseField | None, tuple[int, BaseField] | None]:
    """:func:`_field`, and the path's first step below a value that holds no
    fields: its index in ``key.split("__")`` and the field of that value (None:
    no such step)."""
    try:
        path = iter(document._lookup_field(names))
    except Exception:  # transform.query turns it into its own InvalidQueryError
        return None, None
    current: BaseField | None = None
    below = None
    for index, part in enumerate(key.split("__")):
        step = part if part.isdigit() else next(path, None)
        if step is None:
            break  # the operator escape ("name__") MongoEngine took off
        following = _next_field(current, step)
        if (
            below is None
            and current is not None
            and following is current
            and _below_scalar(current)
        ):
            below = (index, current)
        current = following
    return current, below


def _shown(document: type[Any], key: str, names: list[str], field: BaseField) -> str:
    """The refused ``field`` as a message names it: its class; for a path
    going on below a value that holds no fields (``tags__x`` on a list of
    strings, which MongoEngine's lookup lets through), also that step and
    the value it is below (whatever the path's later steps lead to, as
    ``tags__x__0``'s index), as written in ``key``."""
    below = _walk(document, key, names)[1]
    if below is None:
        return type(field).__name__
    index, item = below
    parts = key.split("__")
    kinds = [type(item).__name__]
    while isinstance(item, fields.ListField) and item.field is not None:
        item = item.field
        kinds.append(type(item).__name__)
    return (
        f"{parts[index]!r} is below {'__'.join(parts[:index])}: "
        f"{' of '.join(kinds)}, whose values hold no fields"
    )


def _next_field(current: BaseField | None, step: BaseField | str) -> BaseField | None:
    """The field at ``step`` below ``current``: a digit below a list is an
    index (its item), any step below a typed dict a key (its item field,
    which MongoEngine's lookup gives as the key itself or an untyped
    DictField); a string step elsewhere, or any step below a scalar
    (``scores__math__x``, where the lookup invents an untyped DictField),
    stays on ``current``."""
    listed: Any = current
    if (
        isinstance(step, str)
        and step.isdigit()
        and isinstance(listed, fields.ListField)
    ):
        return listed if listed.field is None else listed.field
    if _below_scalar(current):
        return current
    item = _dict_item_field(current)
    if item is not None:
        return item
    return current if isinstance(step, str) else step


def _below_scalar(field: BaseField | None) -> bool:
    """Whether a step below ``field`` (or below the items of a typed list)
    is below a value that is no dict: not a reference to a document, whose
    fields MongoEngine's lookup gives (a LazyReferenceField's)."""
    item: Any = field
    while isinstance(item, fields.ListField) and item.field is not None:
        item = item.field
    return isinstance(item, _NO_DICT_FIELDS) and not hasattr(item, "document_type")


def _dict_item_field(field: BaseField | None) -> BaseField | None:
    """The item field of ``field`` (through typed lists) when it is a typed
    DictField or MapField, whose next path step is a key; else None."""
    item: Any = field
    while isinstance(item, fields.ListField) and item.field is not None:
        item = item.field
    return item.field if isinstance(item, fields.DictField) else None


def _holds_no_dict(field: BaseField) -> bool:
    """Whether a field (or the items of a typed list) never stores a dict."""
    while isinstance(field, fields.ListField) and field.field is not None:
        field = field.field
    return isinstance(field, _NO_DICT_FIELDS)
