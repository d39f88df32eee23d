"""Classes, documents, changes and updates drawn at random (seeded): the one
definition the random scenarios of both differential suites draw from
(``sync_differential_kinds.py``'s ``k_random_documents`` and
``async_differential.py``'s ``a_random_documents``).

A suite makes a :class:`Fuzz` of its own classes, field kinds and I/O call
(``io(target, "save", ...)``: MongoEngine's ``target.save(...)``, or this
package's ``await target.async_save(...)``); its settings keep what each
suite draws, in the order it draws it, as the suite's transcripts were
recorded with.
"""

import copy
import datetime
import enum
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from decimal import Decimal
from random import Random
from typing import Any

from bson import ObjectId

from sync_differential import rec

# The update operators drawn ("set_0": the first item).
OPERATORS = [
    "set",
    "unset",
    "inc",
    "push",
    "pull",
    "add_to_set",
    "pop",
    "set_on_insert",
    "max",
    "min",
    "mul",
    "push_all",
    "pull_all",
    "rename",
    "set_0",
]

# The kinds of field_kinds() that hold references.
REFERENCE_KINDS = (12, 13)


def field_kinds(
    M: Any, embedded: type, referenced: type, color: type[enum.Enum]
) -> list:
    """The field kinds drawn, each a maker taking the field's options and the
    values drawn for it ("E", "ES": new ``embedded`` documents; "T", "TS",
    "TID": the ``referenced`` document, a list of it, its id): fields of the
    library module ``M``; ``color`` an Enum of the values "r" and "b"."""
    return [
        (lambda **kw: M.IntField(**kw), [0, 1, -5, "7", 2.5, None, True, "x"]),
        (lambda **kw: M.FloatField(**kw), [0.0, 1.5, 3, "2.5", None, "x"]),
        (lambda **kw: M.StringField(**kw), ["", "a", "abc", 5, None, b"b"]),
        (lambda **kw: M.BooleanField(**kw), [True, False, 0, 1, None, "x"]),
        (
            lambda **kw: M.DecimalField(precision=2, **kw),
            [Decimal("1.005"), 1, "2.5", 0, None, "x"],
        ),
        (
            lambda **kw: M.DateTimeField(**kw),
            [datetime.datetime(2020, 1, 2, 3, 4, 5, 123456), "2020-01-01", None, 5],
        ),
        (
            lambda **kw: M.ListField(M.IntField(), **kw),
            [[], [1, 2], ["3"], None, [None]],
        ),
        (lambda **kw: M.SortedListField(M.IntField(), **kw), [[3, 1], [], None]),
        (lambda **kw: M.DictField(**kw), [{}, {"a": 1}, {"a": [1, {"b": 2}]}, None]),
        (
            lambda **kw: M.MapField(M.IntField(), **kw),
            [{}, {"k": 1}, {"k": "2"}, None],
        ),
        (lambda **kw: M.EmbeddedDocumentField(embedded, **kw), ["E", None, {"a": 1}]),
        (
            lambda **kw: M.ListField(M.EmbeddedDocumentField(embedded), **kw),
            ["ES", [], None],
        ),
        (lambda **kw: M.ReferenceField(referenced, **kw), ["T", None, "TID"]),
        (
            lambda **kw: M.ListField(M.ReferenceField(referenced), **kw),
            ["TS", [], None],
        ),
        (lambda **kw: M.EnumField(color, **kw), [color("r"), "b", None, "z"]),
        (
            lambda **kw: M.UUIDField(**kw),
            [uuid.UUID(int=1), "00000000-0000-0000-0000-000000000002", None],
        ),
        (
            lambda **kw: M.ObjectIdField(**kw),
            [ObjectId("5f0000000000000000000003"), None],
        ),
        (lambda **kw: M.BinaryField(**kw), [b"ab", b"", None]),
        (lambda **kw: M.LongField(**kw), [5, "6", None, 2**40]),
        (lambda **kw: M.DynamicField(**kw), [1, "s", [1, "a"], {"x": 1}, None, "E"]),
    ]


@dataclass(frozen=True)
class Fuzz:
    """What one suite draws from, and how: ``M`` its library module,
    ``embedded`` an EmbeddedDocument class with fields ``a`` (int), ``s``
    (string, default "x"), ``lst`` (list of ints) and, with
    ``nested_changes``, ``dct`` (dict); ``referenced`` the Document class of
    the references; ``kinds`` the field kinds drawn (:func:`field_kinds`, and
    more); ``io`` the suite's I/O call; ``ways`` the ways a saved document
    is drawn to be read back by (:meth:`load`).

    ``dynamic``: classes drawn are DynamicDocuments at times, given a dynamic
    value. ``loads_references``: a read of a reference loads it (MongoEngine's
    sync reads), so references are changed in place and put in lists; else
    they are only assigned (docs/migrating.md, "References never do hidden
    I/O"). ``nested_changes``: embedded documents are changed inside too
    (their lists and dicts, those a list or a map holds)."""

    M: Any
    embedded: type
    referenced: type
    kinds: list
    io: Callable[..., Any]
    ways: tuple[str, ...] = ("get", "only", "exclude", "first", "bulk", "sr")
    dynamic: bool = False
    loads_references: bool = True
    nested_changes: bool = False

    def document_class(self, draw: Random, name: str) -> tuple[Any, list]:
        """A document class of drawn fields (options drawn too), and its spec:
        each field's name, whether it holds references, the values drawn."""
        attrs: dict[str, Any] = {}
        spec = []
        for i in range(draw.randint(1, 6)):
            kind = draw.randrange(len(self.kinds))
            make, values = self.kinds[kind]
            attrs[f"f{i}"] = self._field(draw, make, values, i)
            spec.append((f"f{i}", kind in REFERENCE_KINDS, values))
        attrs["meta"] = {"collection": name, "allow_inheritance": draw.random() < 0.3}
        base = self.M.Document
        if self.dynamic and draw.random() < 0.25:
            base = self.M.DynamicDocument
        return type(name, (base,), attrs), spec

    @staticmethod
    def _field(draw: Random, make: Callable[..., Any], values: list, i: int) -> Any:
        """The field ``make`` gives with drawn options (without them where the
        field refuses them)."""
        options: dict[str, Any] = {}
        if draw.random() < 0.2:
            options["required"] = True
        if draw.random() < 0.15:
            options["null"] = True
        if draw.random() < 0.2:
            options["db_field"] = f"d{i}"
        if draw.random() < 0.25:
            default = draw.choice(values)
            if default not in ("E", "ES", "T", "TS", "TID", None):
                options["default"] = (
                    (lambda d=default: copy.deepcopy(d))
                    if draw.random() < 0.5
                    else default
                )
        if draw.random() < 0.1:
            options["choices"] = [0, 1, 7, "a", "abc", ""]
        try:
            return make(**options)
        except Exception:  # (options the field refuses)
            return make()

    def value(self, draw: Random, value: Any, target: Any) -> Any:
        """A drawn value as given: new embedded documents, the referenced one."""
        embedded = self.embedded
        if value == "E":
            return embedded(a=draw.randint(0, 3), lst=[1])
        if value == "ES":
            return [embedded(a=1), embedded(s="y")]
        if value == "EM":
            return {"k": embedded(a=2, lst=[1]), "e": embedded(dct={"q": 1})}
        if value == "T":
            return target
        if value == "TS":
            return [target, target]
        if value == "TID":
            return target.pk
        return copy.deepcopy(value)

    def list_change(self, draw: Random, value: list, target: Any) -> Any:
        """A drawn in-place change of a list read from a document: its name,
        and the change."""
        op = draw.choice(
            ["append", "insert", "pop", "del", "setitem", "extend", "sort"]
        )
        op = draw.choice([op, "reverse", "remove", "clear", "iadd", "imul"])
        items = [1, "s", self.embedded(a=9), None]
        if self.loads_references:
            items.insert(3, target)
        item = draw.choice(items)
        changes: dict[str, Callable[[], Any]] = {
            "append": lambda: value.append(item),
            "insert": lambda: value.insert(0, item),
            "pop": lambda: value.pop(),
            "del": lambda: value.__delitem__(0),
            "setitem": lambda: value.__setitem__(0, item),
            "extend": lambda: value.extend([item, item]),
            "sort": lambda: value.sort(key=str),
            "reverse": lambda: value.reverse(),
            "remove": lambda: value.remove(value[-1]),
            "clear": lambda: value.clear(),
            "iadd": lambda: value.__iadd__([item]),  # (+=, without rebinding)
            "imul": lambda: value.__imul__(2),
        }
        return op, changes[op]

    def dict_change(self, draw: Random, value: dict) -> Any:
        """A drawn in-place change of a dict read from a document: its name,
        and the change."""
        op = draw.choice(
            ["set", "pop", "update", "setdefault", "clear", "del", "popitem"]
        )
        item = draw.choice([1, [2], {"q": 1}, self.embedded(a=3), None])
        changes: dict[str, Callable[[], Any]] = {
            "set": lambda: value.__setitem__("z", item),
            "pop": lambda: value.pop(next(iter(value), "nokey"), None),
            "update": lambda: value.update({"u": item}),
            "setdefault": lambda: value.setdefault("sd", item),
            "clear": lambda: value.clear(),
            "del": lambda: value.__delitem__(next(iter(value))),
            "popitem": lambda: value.popitem(),
        }
        return op, changes[op]

    def change(self, draw: Random, document: Any, spec: list, target: Any) -> None:
        """Drawn changes of ``document``: values assigned, lists, dicts and
        embedded documents changed in place (each recorded)."""
        if document._dynamic and draw.random() < 0.7:
            value = draw.choice(
                [1, "s", [1, {"a": 2}], {"x": [3]}, self.embedded(a=4), None]
            )
            rec("set dynamic", lambda v=value: setattr(document, "extra", v))
        for name, holds_references, values in spec:
            if draw.random() < 0.3:
                value = self.value(draw, draw.choice(values), target)
                rec("set " + name, lambda n=name, v=value: setattr(document, n, v))
                continue
            if draw.random() >= 0.8 or (holds_references and not self.loads_references):
                continue
            held = getattr(document, name)
            if isinstance(held, list):
                op, change = self.list_change(draw, held, target)
                rec(f"list {op} {name}", change)
            elif isinstance(held, dict):
                op, change = self.dict_change(draw, held)
                rec(f"dict {op} {name}", change)
            elif isinstance(held, self.embedded):
                if not self.nested_changes or draw.random() < 0.5:
                    rec("emb " + name, lambda e=held: setattr(e, "a", 42))
                else:
                    rec("emb lst " + name, lambda e=held: e.lst.append(3))
            if self.nested_changes:
                self._held_embedded_change(draw, name, held)

    def _held_embedded_change(self, draw: Random, name: str, held: Any) -> None:
        """A drawn change inside the embedded document a map holds under "k",
        or a list holds first."""
        embedded = self.embedded
        if isinstance(held, dict) and isinstance(held.get("k"), embedded):
            rec("map item " + name, lambda e=held["k"]: e.dct.__setitem__("m", 1))
        if isinstance(held, list) and held and isinstance(held[0], embedded):
            inner = held[0]
            if draw.random() < 0.5:
                rec("item " + name, lambda e=inner: setattr(e, "s", "z"))
            elif draw.random() < 0.5:
                rec("item lst " + name, lambda e=inner: e.lst.extend([5, 6]))
            else:
                rec("item dct " + name, lambda e=inner: e.dct.update(x=[1]))

    def load(self, found: Any, way: str, picked: list) -> Any:
        """The one document of ``found`` read ``way``: by get(), a projection
        (only() or exclude() of the ``picked`` fields), first(), in_bulk(),
        select_related() or an iteration."""
        io = self.io
        if way == "only":
            return io(found.only(*picked), "get")
        if way == "exclude":
            return io(found.exclude(*picked), "get")
        if way == "first":
            return io(found, "first")
        if way == "bulk":
            return next(iter(io(found, "in_bulk", io(found, "scalar", "pk")).values()))
        if way == "sr":
            return io(found, "select_related")[0]
        if way == "iterate":
            return io(found, "iterate")[0]
        return io(found, "get")

    def saved_and_changed(
        self, draw: Random, cls: Any, spec: list, target: Any
    ) -> tuple[Any, Any] | None:
        """A document of ``cls`` of drawn values built, validated, dumped,
        saved, read back a drawn way of ``ways`` (:meth:`load`), changed by
        drawn changes and saved again, each step recorded: the queryset of
        its id and the document read; None where it was not built or saved."""
        io = self.io
        given = {
            name: self.value(draw, draw.choice(values), target)
            for name, _, values in spec
            if draw.random() < 0.7
        }
        new = rec("new", lambda: cls(**given))
        if new is None:
            return None
        rec("validate", new.validate)
        rec("mongo", new.to_mongo)
        rec("save", lambda: io(new, "save"))
        if new.pk is None:
            return None
        found = cls.objects(pk=new.pk)
        rec("stored", lambda: io(found.as_pymongo(), "get"))
        way = draw.choice(self.ways)
        names = [name for name, _, _ in spec]
        picked = draw.sample(names, k=max(1, len(names) // 2))
        loaded = rec("load " + way, lambda: self.load(found, way, picked))
        self.change(draw, loaded, spec, target)
        rec("changed", loaded._get_changed_fields)
        rec("delta", loaded._delta)
        rec("save2", lambda: io(loaded, "save"))
        rec("after", lambda: loaded)
        rec("stored2", lambda: io(found.as_pymongo(), "get"))
        return found, loaded

    def update(self, draw: Random, spec: list, target: Any) -> tuple[str, Any]:
        """A drawn update of a drawn field (an operator of :data:`OPERATORS`,
        with a drawn value): its keyword, and its value."""
        name, _, values = draw.choice(spec)
        operator = draw.choice(OPERATORS)
        value = self.value(draw, draw.choice(values), target)
        key = f"set__{name}__0" if operator == "set_0" else f"{operator}__{name}"
        if operator in ("unset", "pop"):
            value = 1
        elif operator == "rename":
            value = "r" + name
        elif operator in ("push_all", "pull_all"):
            value = [value]
        return key, value


SYNC_SPELLING: dict[str, Callable[..., Any]] = {  # (where not the method named)
    "to_list": lambda queryset: list(queryset),
    "scalar": lambda queryset, *fields: list(queryset.scalar(*fields)),
    "values_list": lambda queryset, *fields: list(queryset.values_list(*fields)),
    "aggregate": lambda queryset, *a, **kw: list(queryset.aggregate(*a, **kw)),
    "exists": lambda queryset: bool(queryset),
    "iterate": lambda queryset: [document for document in queryset],
}


def sync_io(target: Any, method: str, /, *args: Any, **kwargs: Any) -> Any:
    """MongoEngine's ``target.method(...)`` (lists where it gives cursors)."""
    spelled = SYNC_SPELLING.get(method)
    if spelled is not None:
        return spelled(target, *args, **kwargs)
    return getattr(target, method)(*args, **kwargs)
