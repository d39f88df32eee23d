"""Random edit sequences store what MongoEngine stores.

Hypothesis draws a program: edits of a document (top-level values, embedded
documents, also dynamic and polymorphic ones, lists, maps, dicts of any
depth, deletions; falsy values against defaults, two fields stored under
each other's name, references), saves (some with a save condition, forced
inserts, unvalidated), reloads, fetches again (also with only() or
exclude()), JSON round trips, deep copies, validation, modifies (some with a
query), updates and deletes.
The program runs three times: through plain MongoEngine (its own
``Document`` classes) on a sync ``mongoengine.connect`` alias, through this
package's classes on a sync alias (``save()``, ``reload()``...) and on an
async alias (``async_save()``, ``async_reload()``...). After every step the
trace records the changes the document reports and its ``_delta()``, or what
is stored, or the error raised (type and message); the three traces must be
equal. Both model families are built by :func:`models` from one description;
their class names differ only by a prefix, which the traces leave out.

To extend it: add an edit to ``STATIC`` or ``DYNAMIC`` (a function of the
document, its family and two drawn arguments, doing nothing when it does not
apply), a field to :func:`models` and edits of it, or a step to
``OTHER_STEPS``.
"""

from __future__ import annotations

import copy
import datetime
import enum
import json
import re
from collections.abc import AsyncIterator, Callable
from decimal import Decimal
from types import SimpleNamespace
from typing import Any
from uuid import uuid4

import mongoengine
import pytest
import pytest_asyncio
from bson import ObjectId, json_util
from hypothesis import HealthCheck, given
from hypothesis import strategies as st

import mongoengine_async
from fuzz_budget import budget

ME_ALIAS, SYNC_ALIAS = "dd_mongoengine", "dd_sync"


class Color(enum.Enum):
    RED = "r"
    BLUE = "b"


def models(M: Any, prefix: str, alias: str | None) -> SimpleNamespace:
    """The model family of module ``M`` (mongoengine or mongoengine_async)."""
    meta = {"db_alias": alias} if alias else {}

    def make(class_name: str, base: Any, /, **attrs: Any) -> Any:
        return type(f"{prefix}{class_name}", (base,), attrs)

    emb = make(
        "Emb",
        M.EmbeddedDocument,
        x=M.IntField(),
        s=M.StringField(db_field="ss"),
        l=M.ListField(M.IntField()),
    )
    pemb = make(
        "PEmb",
        M.EmbeddedDocument,
        meta={"allow_inheritance": True},
        a=M.IntField(db_field="aa"),
    )
    psub = make(
        "PSub", pemb, b=M.ListField(M.StringField()), c=M.EmbeddedDocumentField(emb)
    )
    demb = make("DEmb", M.DynamicEmbeddedDocument, s=M.StringField())
    doc = make(
        "Doc",
        M.Document,
        meta={**meta, "allow_inheritance": True, "collection": "doc"},
        name=M.StringField(db_field="nm"),
        n=M.IntField(default=0),
        tags=M.ListField(M.StringField()),
        embs=M.EmbeddedDocumentListField(emb),
        emb=M.EmbeddedDocumentField(emb),
        mp=M.MapField(M.EmbeddedDocumentField(emb)),
        dct=M.DictField(),
        ll=M.ListField(M.ListField(M.IntField())),
        demb=M.EmbeddedDocumentField(demb),
        dembs=M.ListField(M.EmbeddedDocumentField(demb)),
        ml=M.MapField(M.ListField(M.IntField())),
        ld=M.ListField(M.DictField()),
        sl=M.SortedListField(M.StringField()),
        gl=M.ListField(M.GenericEmbeddedDocumentField()),
        pe=M.ListField(M.EmbeddedDocumentField(pemb)),
        pone=M.EmbeddedDocumentField(pemb),
        # Falsy values and defaults: a falsy value equal to the default unsets.
        flag=M.BooleanField(default=False),
        when=M.DateTimeField(),
        dec=M.DecimalField(),
        col=M.EnumField(Color),
        # Each stored under the other's name (_delta takes the default by name).
        p=M.StringField(db_field="q", default=""),
        q=M.ListField(M.IntField(), db_field="p"),
        ref=M.ReferenceField("self"),
        refs=M.ListField(M.ReferenceField("self")),
        gref=M.GenericReferenceField(),
        osl=M.SortedListField(M.EmbeddedDocumentField(emb), ordering="x"),
        mpl=M.MapField(M.ListField(M.EmbeddedDocumentField(emb))),
    )
    sub = make("Sub", doc, extra=M.StringField(db_field="ex"))
    dyn = make(
        "Dyn",
        M.DynamicDocument,
        meta={**meta, "allow_inheritance": True, "collection": "dyn"},
        name=M.StringField(db_field="nm"),
        embs=M.ListField(M.EmbeddedDocumentField(emb)),
    )
    dynsub = make("DynSub", dyn, extra=M.StringField(db_field="ex"))
    return SimpleNamespace(
        M=M,
        Emb=emb,
        PEmb=pemb,
        PSub=psub,
        DEmb=demb,
        Doc=doc,
        Sub=sub,
        Dyn=dyn,
        DynSub=dynsub,
    )


MONGOENGINE = models(mongoengine, "DdMe", ME_ALIAS)
OURS = models(mongoengine_async, "DdUs", None)
KINDS = ["Doc", "Sub", "Dyn", "DynSub"]

# -- values: plain data, with ("Emb", x) / ("DEmb", x) standing for embedded ones --

leaves = st.none() | st.booleans() | st.integers(0, 4) | st.sampled_from(["a", "b", ""])
embedded = st.tuples(st.sampled_from(["Emb", "DEmb"]), st.integers(0, 2))
values = st.recursive(
    leaves | embedded,
    lambda inner: (
        st.lists(inner, max_size=2)
        | st.dictionaries(st.sampled_from(["a", "b", "k"]), inner, max_size=2)
    ),
    max_leaves=4,
)


def build(family: SimpleNamespace, value: Any) -> Any:
    """``value`` with its ("Emb", x) tuples made documents of ``family``."""
    if isinstance(value, tuple):
        kind, x = value
        if kind == "Emb":
            return family.Emb(x=x, s="p" if x else None, l=list(range(x)))
        made = family.DEmb(s="s" if x else None)
        if x:
            made.dz = {"k": x} if x == 1 else [x]
        return made
    if isinstance(value, list):
        return [build(family, item) for item in value]
    if isinstance(value, dict):
        return {key: build(family, item) for key, item in value.items()}
    return value


# -- edits: fn(document, family, k (0..3), v (a value)) ---------------------------

KEYS = ["a", "b", "k", "k1"]
Edit = Callable[[Any, SimpleNamespace, int, Any], Any]


def _pick(container: Any, k: int) -> Any:
    return container[k % len(container)] if container else None


def _if(value: Any, kind: Any, action: Callable[[Any], Any]) -> None:
    if isinstance(value, kind):
        action(value)


STATIC: dict[str, Edit] = {
    "name=": lambda d, f, k, v: setattr(d, "name", [None, "x", "y", ""][k]),
    "n=": lambda d, f, k, v: setattr(d, "n", [None, 0, 1, 5][k]),
    "tags.append": lambda d, f, k, v: d.tags.append(KEYS[k]),
    "tags.pop": lambda d, f, k, v: d.tags and d.tags.pop(),
    "tags[i]=": lambda d, f, k, v: d.tags and d.tags.__setitem__(k % len(d.tags), "z"),
    "tags[0:1]=": lambda d, f, k, v: d.tags.__setitem__(slice(0, 1), KEYS[:k]),
    "tags.sort": lambda d, f, k, v: d.tags.sort(),
    "tags.reverse": lambda d, f, k, v: d.tags.reverse(),
    "tags.insert": lambda d, f, k, v: d.tags.insert(0, KEYS[k]),
    "tags+=": lambda d, f, k, v: d.tags.__iadd__([KEYS[k]]),
    "del tags[0]": lambda d, f, k, v: d.tags and d.tags.__delitem__(0),
    "embs.append": lambda d, f, k, v: d.embs.append(build(f, ("Emb", k))),
    "embs[i]=": lambda d, f, k, v: (
        d.embs and d.embs.__setitem__(-1, build(f, ("Emb", k)))
    ),
    "embs[i].x=": lambda d, f, k, v: _if(
        _pick(d.embs, k), f.Emb, lambda e: setattr(e, "x", k)
    ),
    "embs[i].l.append": lambda d, f, k, v: _if(
        _pick(d.embs, k), f.Emb, lambda e: e.l.append(k)
    ),
    "embs.pop": lambda d, f, k, v: d.embs and d.embs.pop(0),
    "embs=": lambda d, f, k, v: setattr(
        d, "embs", [build(f, ("Emb", i)) for i in range(k)]
    ),
    "embs.sort": lambda d, f, k, v: d.embs.sort(key=lambda e: (e.x is None, e.x or 0)),
    "embs.create": lambda d, f, k, v: d.embs.create(x=k),
    "embs.update": lambda d, f, k, v: d.embs.update(s="upd"),
    "embs.filter.delete": lambda d, f, k, v: d.embs.filter(x=1).delete(),
    "emb=": lambda d, f, k, v: setattr(d, "emb", build(f, ("Emb", k)) if k else None),
    "emb.x=": lambda d, f, k, v: _if(
        d.emb, f.Emb, lambda e: setattr(e, "x", k or None)
    ),
    "emb.l.append": lambda d, f, k, v: _if(d.emb, f.Emb, lambda e: e.l.append(k)),
    "emb.l=": lambda d, f, k, v: _if(d.emb, f.Emb, lambda e: setattr(e, "l", [])),
    "mp[k]=": lambda d, f, k, v: d.mp.__setitem__(KEYS[k], build(f, ("Emb", k))),
    "del mp[k]": lambda d, f, k, v: d.mp.pop(KEYS[k], None),
    "mp[k].x=": lambda d, f, k, v: _if(
        d.mp.get(KEYS[k]), f.Emb, lambda e: setattr(e, "x", 9)
    ),
    "mp[k].l.append": lambda d, f, k, v: _if(
        d.mp.get(KEYS[k]), f.Emb, lambda e: e.l.append(1)
    ),
    "mp.clear": lambda d, f, k, v: d.mp.clear(),
    "mp=": lambda d, f, k, v: setattr(d, "mp", {KEYS[k]: build(f, ("Emb", k))}),
    "dct[k]=": lambda d, f, k, v: d.dct.__setitem__(KEYS[k], build(f, v)),
    "del dct[k]": lambda d, f, k, v: d.dct.pop(KEYS[k], None),
    "dct[k][q]=": lambda d, f, k, v: _if(
        d.dct.get(KEYS[k]), dict, lambda m: m.__setitem__("q", build(f, v))
    ),
    "dct[k].append": lambda d, f, k, v: _if(
        d.dct.get(KEYS[k]), list, lambda m: m.append(build(f, v))
    ),
    "dct[k].x=": lambda d, f, k, v: _if(
        d.dct.get(KEYS[k]), f.Emb, lambda e: setattr(e, "x", 42)
    ),
    "dct=": lambda d, f, k, v: setattr(d, "dct", {KEYS[k]: build(f, v)}),
    "ll.append": lambda d, f, k, v: d.ll.append([k]),
    "ll[i].append": lambda d, f, k, v: _if(_pick(d.ll, k), list, lambda m: m.append(5)),
    "ll[0][0]=": lambda d, f, k, v: d.ll and d.ll[0] and d.ll[0].__setitem__(0, 6),
    "demb=": lambda d, f, k, v: setattr(
        d, "demb", build(f, ("DEmb", k)) if k < 3 else None
    ),
    "demb.dx=": lambda d, f, k, v: _if(
        d.demb, f.DEmb, lambda e: setattr(e, "dx", build(f, v))
    ),
    "del demb.dx": lambda d, f, k, v: _if(
        d.demb, f.DEmb, lambda e: "dx" in e._data and delattr(e, "dx")
    ),
    "demb.dz mutate": lambda d, f, k, v: _if(
        d.demb and d.demb._data.get("dz"),
        list | dict,
        lambda m: m.append(k) if isinstance(m, list) else m.__setitem__("n", k),
    ),
    "dembs.append": lambda d, f, k, v: d.dembs.append(build(f, ("DEmb", k))),
    "dembs[0].dx=": lambda d, f, k, v: (
        d.dembs and setattr(d.dembs[0], "dx", build(f, v))
    ),
    "ml[k]=": lambda d, f, k, v: d.ml.__setitem__(KEYS[k], [k]),
    "ml[k].append": lambda d, f, k, v: _if(
        d.ml.get(KEYS[k]), list, lambda m: m.append(7)
    ),
    "del ml[k]": lambda d, f, k, v: d.ml.pop(KEYS[k], None),
    "ld.append": lambda d, f, k, v: d.ld.append({"a": k}),
    "ld[0][b]=": lambda d, f, k, v: d.ld and d.ld[0].__setitem__("b", build(f, v)),
    "del ld[-1][a]": lambda d, f, k, v: d.ld and d.ld[-1].pop("a", None),
    "sl.append": lambda d, f, k, v: d.sl.append(KEYS[k]),
    "sl.pop(0)": lambda d, f, k, v: d.sl and d.sl.pop(0),
    "gl.append": lambda d, f, k, v: d.gl.append(
        build(f, ("Emb" if k % 2 else "DEmb", k))
    ),
    "gl[0].x=": lambda d, f, k, v: (
        d.gl and setattr(d.gl[0], "x" if isinstance(d.gl[0], f.Emb) else "dx", 31)
    ),
    "pe.append": lambda d, f, k, v: d.pe.append(
        f.PEmb(a=k) if k < 2 else f.PSub(a=2, b=[], c=f.Emb(x=k))
    ),
    "pe[0].a=": lambda d, f, k, v: d.pe and setattr(d.pe[0], "a", k or None),
    "pe[-1].b.append": lambda d, f, k, v: _if(
        _pick(d.pe, -1), f.PSub, lambda e: e.b.append("y")
    ),
    "pe[-1].c.x=": lambda d, f, k, v: _if(
        _pick(d.pe, -1), f.PSub, lambda e: e.c and setattr(e.c, "x", 44)
    ),
    "pone=": lambda d, f, k, v: setattr(
        d, "pone", [None, f.PEmb(a=1), f.PSub(a=2, b=["x"]), f.PEmb()][k]
    ),
    "del field": lambda d, f, k, v: delattr(d, ["name", "tags", "emb", "mp"][k]),
    "del field2": lambda d, f, k, v: delattr(d, ["dct", "embs", "p", "flag"][k]),
    "tags.extend": lambda d, f, k, v: d.tags.extend(KEYS[:k]),
    "tags.remove": lambda d, f, k, v: KEYS[k] in d.tags and d.tags.remove(KEYS[k]),
    "del tags[0:2]": lambda d, f, k, v: d.tags.__delitem__(slice(0, 2)),
    "tags*=": lambda d, f, k, v: d.tags.__imul__(k),
    "tags=": lambda d, f, k, v: setattr(d, "tags", [[], ["a"], None, ["b", "a"]][k]),
    "embs.insert": lambda d, f, k, v: d.embs.insert(k, build(f, ("Emb", k))),
    "embs.extend": lambda d, f, k, v: d.embs.extend([build(f, ("Emb", k))]),
    "embs.remove": lambda d, f, k, v: d.embs and d.embs.remove(d.embs[-1]),
    "embs[i].s=": lambda d, f, k, v: _if(
        _pick(d.embs, k), f.Emb, lambda e: setattr(e, "s", ["", "t", None, "p"][k])
    ),
    "del embs[i].x": lambda d, f, k, v: _if(
        _pick(d.embs, k), f.Emb, lambda e: delattr(e, "x")
    ),
    "embs[i].l=": lambda d, f, k, v: _if(
        _pick(d.embs, k), f.Emb, lambda e: setattr(e, "l", list(range(k)))
    ),
    "emb.s=": lambda d, f, k, v: _if(
        d.emb, f.Emb, lambda e: setattr(e, "s", ["", "t", None, "p"][k])
    ),
    "mp.update": lambda d, f, k, v: d.mp.update({KEYS[k]: build(f, ("Emb", k))}),
    "mp.setdefault": lambda d, f, k, v: d.mp.setdefault(KEYS[k], build(f, ("Emb", 1))),
    "mp.popitem": lambda d, f, k, v: d.mp and d.mp.popitem(),
    "dct.update": lambda d, f, k, v: d.dct.update({KEYS[k]: build(f, v)}),
    "dct.setdefault": lambda d, f, k, v: d.dct.setdefault(KEYS[k], build(f, v)),
    "dct.popitem": lambda d, f, k, v: d.dct and d.dct.popitem(),
    "dct.clear": lambda d, f, k, v: d.dct.clear(),
    "ll.pop": lambda d, f, k, v: d.ll and d.ll.pop(),
    "ll[0].pop": lambda d, f, k, v: d.ll and d.ll[0] and d.ll[0].pop(),
    "ld[0]=": lambda d, f, k, v: d.ld and d.ld.__setitem__(0, {"c": build(f, v)}),
    "flag=": lambda d, f, k, v: setattr(d, "flag", [False, True, None, 0][k]),
    "when=": lambda d, f, k, v: setattr(
        d, "when", [None, datetime.datetime(2020, 1, 2), "2021-02-03", None][k]
    ),
    "dec=": lambda d, f, k, v: setattr(
        d, "dec", [None, Decimal(0), Decimal("1.5"), 2][k]
    ),
    "col=": lambda d, f, k, v: setattr(d, "col", [None, Color.RED, Color.BLUE, "r"][k]),
    "p=": lambda d, f, k, v: setattr(d, "p", ["", "x", None, ""][k]),
    "q=": lambda d, f, k, v: setattr(d, "q", [[], [1], None, []][k]),
    "q.append": lambda d, f, k, v: d.q.append(k),
    "ref=": lambda d, f, k, v: setattr(d, "ref", [None, d, None, d][k]),
    "refs.append": lambda d, f, k, v: d.refs.append(d),
    "refs=": lambda d, f, k, v: setattr(d, "refs", [[], [d], None, [d, d]][k]),
    "gref=": lambda d, f, k, v: setattr(d, "gref", [None, d, None, d][k]),
    "osl.append": lambda d, f, k, v: d.osl.append(build(f, ("Emb", 2 - k % 3))),
    "osl[0].x=": lambda d, f, k, v: d.osl and setattr(d.osl[0], "x", 5 - k),
    "osl.pop": lambda d, f, k, v: d.osl and d.osl.pop(0),
    "mpl[k]=": lambda d, f, k, v: d.mpl.__setitem__(KEYS[k], [build(f, ("Emb", k))]),
    "mpl[k].append": lambda d, f, k, v: _if(
        d.mpl.get(KEYS[k]), list, lambda m: m.append(build(f, ("Emb", k)))
    ),
    "mpl[k][0].x=": lambda d, f, k, v: _if(
        d.mpl.get(KEYS[k]), list, lambda m: m and setattr(m[0], "x", 8)
    ),
}
SUB = {"extra=": lambda d, f, k, v: setattr(d, "extra", [None, "e", "", "f"][k])}
DYNAMIC: dict[str, Edit] = {
    "name=": STATIC["name="],
    "d=": lambda d, f, k, v: setattr(d, ["dx", "dy", "dz", "de"][k], build(f, v)),
    "del d": lambda d, f, k, v: (
        ["dx", "dy", "dz", "de"][k] in d._data
        and delattr(d, ["dx", "dy", "dz", "de"][k])
    ),
    "d[k]=": lambda d, f, k, v: _if(
        d._data.get("dx"), dict, lambda m: m.__setitem__(KEYS[k], build(f, v))
    ),
    "del d[k]": lambda d, f, k, v: _if(
        d._data.get("dy"), dict, lambda m: m.pop(KEYS[k], None)
    ),
    "d.append": lambda d, f, k, v: _if(
        d._data.get(["dx", "dy", "dz"][k % 3]), list, lambda m: m.append(build(f, v))
    ),
    "d[i] mutate": lambda d, f, k, v: _if(
        d._data.get("dz"), list, lambda m: _mutate_item(m, f, k, v)
    ),
    "d.x=": lambda d, f, k, v: _if(
        d._data.get("de"),
        f.Emb | f.DEmb,
        lambda e: setattr(e, "x" if isinstance(e, f.Emb) else "dx", k),
    ),
    "embs.append": STATIC["embs.append"],
    "embs[i].x=": STATIC["embs[i].x="],
    "embs.pop": STATIC["embs.pop"],
    "embs[i].s=": STATIC["embs[i].s="],
    "embs=": STATIC["embs="],
    "del embs": lambda d, f, k, v: delattr(d, "embs"),
    "name del": lambda d, f, k, v: delattr(d, "name"),
    "d=falsy": lambda d, f, k, v: setattr(
        d, ["dx", "dy", "dz", "de"][k], ["", [], {}, 0][k]
    ),
}


def _mutate_item(items: list, family: SimpleNamespace, k: int, v: Any) -> None:
    if not items:
        return
    item = items[k % len(items)]
    if isinstance(item, dict):
        item["w"] = build(family, v)
    elif isinstance(item, list):
        item.append(k)
    elif isinstance(item, family.Emb):
        item.x = 77
    else:
        items[k % len(items)] = build(family, v)


def edits_of(kind: str) -> dict[str, Edit]:
    if kind.startswith("Dyn"):
        return DYNAMIC | (SUB if kind == "DynSub" else {})
    return STATIC | (SUB if kind == "Sub" else {})


# -- programs ------------------------------------------------------------------------

SAVE_CONDITIONS = [{"n": 0}, {"name": "s"}, {"tags": "a"}, {"embs__x": 1}]
DYNAMIC_CONDITIONS = [{"name": "s"}, {"dx": 3}, {"dy__exists": False}, {"dx__ne": 3}]
OTHER_STEPS = ["save", "save_if", "refetch", "reload", "only", "modify", "update"]
OTHER_STEPS += ["update2", "exclude", "save_unvalidated", "delete_save"]
OTHER_STEPS += ["validate", "from_json", "force_insert", "deepcopy", "modify_if"]
STATIC_UPDATES = [
    {"inc__n": 1},
    {"push__tags": "u"},
    {"set__emb__x": 5},
    {"unset__name": True},
]
STATIC_UPDATES2 = [
    {"set__embs__0__x": 3},
    {"pull__tags": "a"},
    {"unset__mp__k1": 1},
    {"set__p": "", "set__flag": False},
]
DYNAMIC_UPDATES2 = [
    {"set__dx": {"a": 1}},
    {"unset__name": 1},
    {"set__embs": []},
    {"set__dy": ""},
]
DYNAMIC_UPDATES = [
    {"set__dx": 3},
    {"unset__dy": 1},
    {"set__name": "q"},
    {"push__dz": 1},
]


@st.composite
def programs(draw: st.DrawFn) -> tuple[str, dict, list[tuple]]:
    kind = draw(st.sampled_from(KINDS))
    names = sorted(edits_of(kind))
    edit = st.tuples(st.sampled_from(names), st.integers(0, 3), values)
    other = st.tuples(st.sampled_from(OTHER_STEPS), st.integers(0, 3), st.none())
    step = st.one_of(edit, edit, other)  # two edits for one other step
    if kind.startswith("Dyn"):
        init = draw(
            st.fixed_dictionaries(
                {}, optional={"name": st.just("s"), "dx": values, "dy": values}
            )
        )
    else:
        init = draw(
            st.fixed_dictionaries(
                {"tags": st.just(["a", "b"]), "embs": st.just([("Emb", 1)])},
                optional={
                    "name": st.just("s"),
                    "emb": st.just(("Emb", 2)),
                    "mp": st.just({"k1": ("Emb", 1)}),
                    "dct": st.dictionaries(st.just("a"), values, max_size=1),
                    "ll": st.just([[1], [2]]),
                    "demb": st.just(("DEmb", 1)),
                    "ml": st.just({"k": [1]}),
                    "ld": st.just([{"a": 1}]),
                    "gl": st.just([("Emb", 0)]),
                    "pone": st.just(None),
                    "p": st.sampled_from(["", "x"]),
                    "q": st.sampled_from([[], [1]]),
                    "flag": st.booleans(),
                    "osl": st.just([("Emb", 2), ("Emb", 1)]),
                    "mpl": st.just({"k": [("Emb", 1)]}),
                },
            )
        )
    return kind, init, draw(st.lists(step, min_size=1, max_size=12))


class Run:
    """Runs programs on one model family, through sync or async calls."""

    def __init__(self, family: SimpleNamespace, asynchronous: bool) -> None:
        self.family, self.asynchronous = family, asynchronous

    async def call(self, target: Any, name: str, *args: Any, **kwargs: Any) -> Any:
        """``target.name(...)``, or ``await target.async_name(...)``."""
        if self.asynchronous:
            return await getattr(target, f"async_{name}")(*args, **kwargs)
        return getattr(target, name)(*args, **kwargs)

    async def stored(self, cls: Any, oid: ObjectId) -> Any:
        if self.asynchronous:
            return await (await cls._async_get_collection()).find_one({"_id": oid})
        return cls._get_collection().find_one({"_id": oid})

    async def trace(self, kind: str, init: dict, steps: list[tuple]) -> list:
        family, oid = self.family, ObjectId("0" * 24)
        cls = getattr(family, kind)
        base = family.Dyn if kind.startswith("Dyn") else family.Doc
        if self.asynchronous:
            await (await cls._async_get_collection()).delete_many({})
        else:
            cls._get_collection().delete_many({})
        document = cls(id=oid, **build(family, init))
        await self.call(document, "save")
        updates = DYNAMIC_UPDATES if kind.startswith("Dyn") else STATIC_UPDATES
        updates2 = DYNAMIC_UPDATES2 if kind.startswith("Dyn") else STATIC_UPDATES2
        trace: list = []
        edits = edits_of(kind)
        for name, k, v in steps:
            try:
                if name in edits:
                    edits[name](document, family, k, v)
                    trace.append(
                        [
                            name,
                            sorted(document._get_changed_fields()),
                            document._delta(),
                        ]
                    )
                    continue
                if name == "save":
                    await self.call(document, "save")
                elif name == "save_if":
                    condition = SAVE_CONDITIONS[k]
                    await self.call(document, "save", save_condition=condition)
                elif name in ("modify", "update"):
                    name += f" -> {await self.call(document, name, **updates[k])}"
                elif name == "modify_if":
                    dynamic = kind.startswith("Dyn")
                    query = (DYNAMIC_CONDITIONS if dynamic else SAVE_CONDITIONS)[k]
                    modified = await self.call(document, "modify", query, **updates[k])
                    name += f" -> {modified}"
                elif name == "update2":
                    update = (updates2 or {})[k]
                    name += f" -> {await self.call(document, 'update', **update)}"
                elif name == "validate":
                    document.validate()
                elif name == "from_json":
                    options = json_util.CANONICAL_JSON_OPTIONS
                    text = document.to_json(json_options=options)
                    document = type(document).from_json(
                        text, created=bool(k % 2), json_options=options
                    )
                elif name == "deepcopy":
                    document = copy.deepcopy(document)
                elif name == "force_insert":
                    await self.call(document, "save", force_insert=True)
                elif name == "save_unvalidated":
                    await self.call(document, "save", validate=False)
                elif name == "delete_save":
                    await self.call(document, "delete")
                    await self.call(document, "save")
                elif name == "exclude":
                    fields = [["name"], ["embs", "tags"], ["mp", "dct"], ["q", "p"]][k]
                    queryset = base.objects(id=oid).exclude(*fields)
                    document = await self.call(queryset, "get")
                elif name == "refetch":
                    document = await self.call(base.objects(id=oid), "get")
                elif name == "only":
                    fields = [
                        ["name", "tags"],
                        ["emb", "mp"],
                        ["embs", "dct"],
                        ["name", "embs"],
                    ][k]
                    queryset = base.objects(id=oid).only(*fields)
                    document = await self.call(queryset, "get")
                else:
                    fields = [[], ["name"], ["embs", "tags"], ["name"]][k]
                    await self.call(document, "reload", *fields)
                trace.append(
                    [
                        name,
                        await self.stored(cls, oid),
                        sorted(document._get_changed_fields()),
                    ]
                )
            except Exception as error:  # the same errors, with the same messages
                trace.append(["error", type(error).__name__, str(error)])
        try:
            await self.call(document, "save")
        except Exception as error:
            trace.append(["final error", type(error).__name__, str(error)])
        trace.append(["final", await self.stored(cls, oid), document.to_mongo()])
        return normalised(trace)


def normalised(trace: list) -> Any:
    """``trace`` as JSON text, the families' class names, the databases and
    the server's times (in the full error of a failed write) alike."""
    text = json_util.dumps(trace, default=repr)
    text = re.sub(r"DdMe|DdUs", "Dd", text)
    text = re.sub(r"Timestamp\(\d+, \d+\)", "Timestamp()", text)
    return re.sub(r"test_[0-9a-f]{12}|dd_[a-z_0-9]+", "<db>", text)


# -- the test ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def sync_aliases(mongodb_uri: str) -> Any:
    """MongoEngine's own connect() for its family, ours for ours."""
    names = [f"test_{uuid4().hex[:12]}" for _ in range(2)]
    mongoengine.connect(
        db=names[0], alias=ME_ALIAS, host=mongodb_uri, uuidRepresentation="standard"
    )
    mongoengine_async.connect(
        db=names[1], alias=SYNC_ALIAS, host=mongodb_uri, uuidRepresentation="standard"
    )
    try:
        yield
    finally:
        for alias, name in zip((ME_ALIAS, SYNC_ALIAS), names, strict=True):
            mongoengine.get_connection(alias).drop_database(name)
            mongoengine.disconnect(alias)


@pytest_asyncio.fixture
async def runs(sync_aliases: Any, async_alias: str) -> AsyncIterator[list[Callable]]:
    """The three runs: MongoEngine, ours on a sync alias, ours on an async one."""

    async def ours_sync(*program: Any) -> list:
        classes = [getattr(OURS, kind) for kind in KINDS]
        for cls in classes:
            cls._meta["db_alias"], cls._collection = SYNC_ALIAS, None
        try:
            return await Run(OURS, False).trace(*program)
        finally:
            for cls in classes:
                del cls._meta["db_alias"]
                cls._collection = None

    yield [Run(MONGOENGINE, False).trace, ours_sync, Run(OURS, True).trace]


# More with RANDOM_DELTA_EXAMPLES=2000 (see fuzz_budget.py).
@budget(
    "delta",
    120,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(program=programs())
async def test_edits_store_what_mongoengine_stores(
    runs: list[Callable], program: tuple
) -> None:
    expected, *ours = [json.loads(await run(*program)) for run in runs]
    for trace, how in zip(ours, ["a sync alias", "an async alias"], strict=True):
        for step, (theirs, got) in enumerate(zip(expected, trace, strict=True)):
            assert got == theirs, f"step {step} on {how}: {program[2][: step + 1]}"
