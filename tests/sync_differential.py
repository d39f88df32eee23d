"""Scenarios run once through plain MongoEngine, once through this package
on a connect() alias, each in a process of its own (tests/test_sync_differential.py
compares the two transcripts).

``python sync_differential.py LIBRARY MODE``: LIBRARY is ``mongoengine`` or
``mongoengine_async`` (the module the models are built from), MODE ``signals``
(a receiver of every MongoEngine signal records each one, document included),
``writes`` (those of the write signals only) or ``quiet`` (no receiver, but in
``s_mut``). Init signal receivers send documents to MongoEngine's code; without
them the package's generated loaders and writers run.
Prints one JSON object: each scenario's transcript, the list of what it
recorded: results (documents as their class, ``_data`` keys in order, values,
changes, flags and ``to_mongo()``), errors (type and message), the commands
sent (as sent, less session and cluster fields) and the signals.
Ids, cursor ids, times and database names are replaced by stable names.
To extend it: write a function of ``rec(label, fn)`` calls and add it to
``SCENARIOS``.
"""

import copy
import datetime
import enum
import importlib
import importlib.util
import io
import json
import os
import pickle
import re
import sys
import traceback
import uuid
from decimal import Decimal
from typing import Any

import mongoengine
import pymongo
from bson import SON, Binary, Code, DBRef, Decimal128, Int64, MinKey, ObjectId, Regex
from mongoengine.context_managers import query_counter
from pymongo import monitoring

LIBRARY, MODE = sys.argv[1:3] if __name__ == "__main__" else ("mongoengine", "quiet")
M: Any = importlib.import_module(LIBRARY)

OUT: list = []
IDS: dict = {}


def oid_name(value: ObjectId) -> str:
    """An id's stable name: its rank among the ids the scenario has shown."""
    return f"OID{IDS.setdefault(value, len(IDS))}"


DATABASE = re.compile(r"differential_[a-z_]+_[0-9]+")
HEX_ID = re.compile(r"[0-9a-f]{24}")


def norm(value: Any, depth: int = 0) -> Any:
    """``value`` as JSON data that two runs can compare: ids by rank, database
    names and the times of now replaced, types of containers and numbers kept."""
    if depth > 12:
        return "<deep>"
    if isinstance(value, ObjectId):
        return oid_name(value)
    if isinstance(value, DBRef):
        return ["DBRef", value.collection, norm(value.id, depth + 1)]
    if isinstance(value, dict):
        if list(value) == ["$in"] and isinstance(value["$in"], list):
            # (the order of the ids MongoEngine's dereference asks for is a set's)
            items = norm(value["$in"], depth + 1)[1:]
            return [["$in", ["list", *sorted(map(str, items))]]]
        pairs = [[norm(k, depth + 1), norm(x, depth + 1)] for k, x in value.items()]
        # (its type kept: a BaseDict is no dict; a SON and a dict are sent alike)
        return ["dict" if type(value) is SON else type(value).__name__, pairs]
    if isinstance(value, list | tuple):
        return [type(value).__name__, *(norm(x, depth + 1) for x in value)]
    if isinstance(value, mongoengine.base.BaseDocument):
        return document_form(value, depth + 1)
    if isinstance(value, str):
        return text(value)
    if value is None or type(value) is int:
        return value
    if isinstance(value, bool | float):  # (JSON's 1, 1.0 and true compare equal)
        return [type(value).__name__, repr(value)]
    if isinstance(value, datetime.datetime):
        return "now" if value.year >= 2026 else "dt:" + value.isoformat()
    if isinstance(value, uuid.UUID | Decimal):
        return repr(value)
    if type(value).__name__ in ("Timestamp", "Int64") or isinstance(value, bytes):
        return type(value).__name__  # (cluster times, cursor ids, signatures)
    if isinstance(value, type):
        return "class " + value.__name__
    return type(value).__name__ + ":" + text(re.sub(r"0x[0-9a-f]+", "0x", repr(value)))


def text(value: str) -> str:
    """A text with its database names and hex ids replaced."""
    value = DATABASE.sub("DB", value)
    return HEX_ID.sub(lambda found: oid_name(ObjectId(found.group(0))), value)


def document_form(document: Any, depth: int) -> Any:
    """A document as its class, ``_data`` (keys in order), changes, flags,
    dynamic fields and ``to_mongo()`` (or the type of its error)."""
    data = getattr(document, "_data", None)
    if data is None:  # (pre_init: not built yet)
        return {"class": type(document).__name__}
    try:
        mongo = norm(document.to_mongo().to_dict(), depth + 1)
    except Exception as error:
        mongo = "to_mongo raised " + type(error).__name__
    keys = list(data)
    return {
        "class": type(document).__name__,
        "keys": keys,
        "data": norm({key: data[key] for key in keys}, depth + 1),
        "changed": list(getattr(document, "_changed_fields", ["<none>"])),
        "created": getattr(document, "_created", None),
        "initialised": getattr(document, "_initialised", None),
        "dynamic": sorted(getattr(document, "_dynamic_fields", {})),
        "mongo": mongo,
    }


def rec(label: str, function: Any) -> Any:
    """Record what ``function()`` returns, or the error it raises (type,
    module, message); returns the result (None after an error)."""
    try:
        result = function()
    except Exception as error:
        message = re.sub(r"0x[0-9a-f]+", "0x", str(error))
        message = re.sub(r"Timestamp\([0-9, ]+\)", "TS", message)
        module = type(error).__module__
        OUT.append([label, "raised", type(error).__name__, module, text(message)])
        return None
    OUT.append([label, "returned", norm(result)])
    return result


class Log(monitoring.CommandListener):
    """Records each command sent while ``on``, less its session, cluster and
    cursor ids (and the driver's own hello and endSessions)."""

    on = True
    UNCOMPARED = ("lsid", "$clusterTime", "$db", "txnNumber", "$readPreference")

    def started(self, event: Any) -> None:
        name = event.command_name
        if not self.on or name in ("endSessions", "hello", "isMaster", "ismaster"):
            return
        command = {k: v for k, v in event.command.items() if k not in self.UNCOMPARED}
        if name == "getMore":
            command["getMore"] = "cursor"
        if name == "killCursors":
            command["cursors"] = "cursors"
        OUT.append(["command", name, norm(command)])

    def succeeded(self, event: Any) -> None:
        pass

    def failed(self, event: Any) -> None:
        OUT.append(["command failed", event.command_name])


LOG = Log()
SIGNALS = (
    "pre_init",
    "post_init",
    "pre_save",
    "pre_save_post_validation",
    "post_save",
    "pre_delete",
    "post_delete",
    "pre_bulk_insert",
    "post_bulk_insert",
)


def recorder(signal: str) -> Any:
    """A receiver recording ``signal``: sender, document(s), other arguments."""

    def receive(sender: Any, **kwargs: Any) -> None:
        document = kwargs.pop("document", None)
        documents = kwargs.pop("documents", None)
        sent = [norm(document), norm(documents), sorted(kwargs), norm(kwargs)]
        OUT.append(["signal", signal, getattr(sender, "__name__", None), *sent])

    return receive


RECEIVERS = [recorder(signal) for signal in SIGNALS]  # (blinker keeps weak refs)


def run(scenarios: list) -> None:
    """Run each scenario on fresh databases; print the transcripts as JSON."""
    recorded = {"signals": SIGNALS, "writes": SIGNALS[2:], "quiet": ()}[MODE]
    if mongoengine.signals.signals_available:  # (blinker)
        for signal, receiver in zip(SIGNALS, RECEIVERS, strict=True):
            if signal in recorded:
                getattr(mongoengine.signals, signal).connect(receiver)
    name = f"differential_{LIBRARY}_{os.getpid()}"
    for alias, database in (("default", name), ("other", name + "_other")):
        M.connect(
            db=database,
            alias=alias,
            host=os.environ["MONGODB_URI"],
            uuidRepresentation="standard",
            event_listeners=[LOG],
        )
    client = M.get_db().client
    transcripts = {}
    try:
        for scenario in scenarios:
            OUT.clear()
            IDS.clear()
            try:
                scenario()
            except Exception as error:
                OUT.append(["scenario raised", type(error).__name__, str(error)])
                traceback.print_exc()
            transcripts[scenario.__name__] = list(OUT)
    finally:
        LOG.on = False
        client.drop_database(name)
        client.drop_database(name + "_other")
    json.dump(transcripts, sys.stdout)


# -- scenarios ---------------------------------------------------------------


class Emb(M.EmbeddedDocument):
    a = M.IntField()
    b = M.StringField()


class Person(M.Document):
    name = M.StringField()
    age = M.IntField()
    tags = M.ListField(M.StringField())
    embs = M.ListField(M.EmbeddedDocumentField(Emb))
    emb = M.EmbeddedDocumentField(Emb)
    score = M.FloatField()
    meta = {"allow_inheritance": True, "indexes": ["name", ("age", "-name")]}


class Student(Person):
    school = M.StringField()


def seed() -> None:
    """Six people and a student, stored quietly."""
    LOG.on = False
    Person.drop_collection()
    for i in range(6):
        Person(
            name=f"p{i}",
            age=i % 3,
            tags=[f"t{i % 2}", "x"],
            embs=[Emb(a=i, b=f"b{i}"), Emb(a=i + 1)],
            emb=Emb(a=i),
            score=i / 2,
        ).save()
    Student(name="s", age=9, school="sch", tags=["y"]).save()
    LOG.on = True


def q_projections() -> None:
    """only, exclude, slices, elemMatch, all_fields, a subclass's only."""
    seed()
    rec("only", lambda: list(Person.objects.only("name", "embs.a").order_by("name")))
    rec(
        "exclude", lambda: list(Person.objects.exclude("embs", "tags").order_by("name"))
    )
    rec("slice", lambda: list(Person.objects.fields(slice__tags=1).order_by("name")))
    rec(
        "slice2",
        lambda: list(
            Person.objects.fields(slice__embs=[1, 1], name=1).order_by("name")
        ),
    )
    rec(
        "elemMatch",
        lambda: list(Person.objects.fields(elemMatch__embs={"a": 3}).order_by("name")),
    )
    rec(
        "only_then_exclude",
        lambda: list(
            Person.objects.only("name", "age").exclude("age").order_by("name")
        ),
    )
    rec(
        "all_fields",
        lambda: list(Person.objects.only("name").all_fields().order_by("name")[:2]),
    )
    rec("only_subclass", lambda: list(Student.objects.only("school")))


def q_values() -> None:
    """values_list, scalar, distinct, item_frequencies, sums, aggregate, in_bulk."""
    seed()
    rec(
        "values_list",
        lambda: Person.objects.order_by("name").values_list("name", "age"),
    )
    rec("scalar1", lambda: list(Person.objects.order_by("name").scalar("name")))
    rec("scalar_emb", lambda: list(Person.objects.order_by("name").scalar("emb")))
    rec("scalar_emb_a", lambda: list(Person.objects.order_by("name").scalar("emb.a")))
    rec("scalar_embs", lambda: list(Person.objects.order_by("name").scalar("embs")))
    rec("scalar_id", lambda: list(Person.objects.order_by("name").scalar("id"))[:1])
    rec("distinct", lambda: sorted(Person.objects.distinct("age")))
    rec("distinct_emb", lambda: Person.objects.order_by("name").distinct("embs"))
    rec("distinct_emb_a", lambda: Person.objects.distinct("embs.a"))
    rec("distinct_tags", lambda: sorted(Person.objects.distinct("tags")))
    rec("item_freq", lambda: sorted(Person.objects.item_frequencies("tags").items()))
    rec(
        "item_freq_norm",
        lambda: sorted(Person.objects.item_frequencies("age", normalize=True).items()),
    )
    rec(
        "item_freq_mr",
        lambda: sorted(
            Person.objects.item_frequencies("tags", map_reduce=True).items()
        ),
    )
    rec("sum", lambda: Person.objects.sum("age"))
    rec("sum_embs", lambda: Person.objects.sum("embs.a"))
    rec("avg", lambda: Person.objects.average("score"))
    rec("avg_empty", lambda: Person.objects(name="zz").average("score"))
    rec("count", lambda: Person.objects.count())
    rec(
        "count_ls",
        lambda: Person.objects.skip(2).limit(2).count(with_limit_and_skip=True),
    )
    rec("len", lambda: len(Person.objects(age=1)))
    rec(
        "agg",
        lambda: list(
            Person.objects(age__gte=1)
            .order_by("name")
            .aggregate([{"$project": {"name": 1, "_id": 0}}])
        ),
    )
    rec(
        "agg_limit",
        lambda: list(
            Person.objects.order_by("-name")
            .skip(1)
            .limit(2)
            .aggregate([{"$project": {"name": 1, "_id": 0}}])
        ),
    )
    rec(
        "as_pymongo",
        lambda: list(Person.objects.only("name").order_by("name").as_pymongo()),
    )
    rec(
        "in_bulk",
        lambda: sorted(
            Person.objects.in_bulk(list(Person.objects.scalar("id"))).values(),
            key=lambda d: d.name,
        ),
    )


def q_options() -> None:
    """Ordering, hint, collation, comment, cursor options, Q, get and indexing."""
    seed()
    rec("natural", lambda: [p.name for p in Person.objects.order_by("$natural")])
    rec("natural_desc", lambda: [p.name for p in Person.objects.order_by("-$natural")])
    rec("hint", lambda: [p.name for p in Person.objects.hint("name_1").filter(age=1)])
    rec("hint_bad", lambda: [p.name for p in Person.objects.hint("nope_1")])
    rec(
        "collation",
        lambda: [
            p.name
            for p in Person.objects.collation({"locale": "en", "strength": 1}).filter(
                name="P1"
            )
        ],
    )
    rec(
        "comment",
        lambda: [p.name for p in Person.objects.comment("hello").filter(age=2)],
    )
    rec(
        "no_cache", lambda: [p.name for p in Person.objects.no_cache().order_by("name")]
    )
    rec(
        "batch_size",
        lambda: [p.name for p in Person.objects.batch_size(2).order_by("name")],
    )
    rec(
        "timeout",
        lambda: [p.name for p in Person.objects.timeout(False).order_by("name")],
    )
    rec(
        "max_time",
        lambda: [p.name for p in Person.objects.max_time_ms(5000).order_by("name")],
    )
    rec("explain_keys", lambda: sorted(Person.objects(age=1).explain().keys()))
    rec(
        "raw",
        lambda: [
            p.name
            for p in Person.objects(__raw__={"age": {"$in": [0, 2]}}).order_by("name")
        ],
    )
    rec(
        "raw_and",
        lambda: [p.name for p in Person.objects(__raw__={"age": 1}, name="p1")],
    )
    rec(
        "Q_or",
        lambda: [
            p.name for p in Person.objects(M.Q(age=0) | M.Q(name="p1")).order_by("name")
        ],
    )
    rec(
        "Q_and_or",
        lambda: [
            p.name
            for p in Person.objects(
                (M.Q(age=0) | M.Q(age=1)) & M.Q(tags="t1")
            ).order_by("name")
        ],
    )
    rec(
        "Q_empty",
        lambda: [p.name for p in Person.objects(M.Q() | M.Q(age=2)).order_by("name")],
    )
    rec(
        "Q_raw",
        lambda: [
            p.name
            for p in Person.objects(M.Q(__raw__={"age": 2}) | M.Q(name="s")).order_by(
                "name"
            )
        ],
    )
    rec("first_empty", lambda: Person.objects(name="none").first())
    rec("get_two", lambda: Person.objects.get(age=1))
    rec("get_none", lambda: Person.objects.get(age=77))
    rec("get_sub_none", lambda: Student.objects.get(name="p1"))
    rec("slice_qs", lambda: [p.name for p in Person.objects.order_by("name")[2:4]])
    rec("index_qs", lambda: Person.objects.order_by("name")[3])
    rec("index_oob", lambda: Person.objects.order_by("name")[30])
    rec("neg_idx", lambda: Person.objects.order_by("name")[-1])
    rec("with_id", lambda: Person.objects.with_id(ObjectId()))
    rec("exists", lambda: Person.objects(age=4).exists())
    rec("none", lambda: list(Person.objects.none()))
    rec("none_count", lambda: Person.objects.none().count())
    rec(
        "no_sub",
        lambda: [p.name for p in Person.objects.no_sub_classes().order_by("name")],
    )
    rec(
        "where",
        lambda: [
            p.name for p in Person.objects.where("this.age == 2").order_by("name")
        ],
    )
    rec("search_text_noidx", lambda: list(Person.objects.search_text("p")))
    rec("clone_repr", lambda: repr(Person.objects.order_by("name").limit(2)))
    rec(
        "read_pref",
        lambda: [
            p.name
            for p in Person.objects.read_preference(
                pymongo.ReadPreference.PRIMARY
            ).order_by("name")[:2]
        ],
    )
    rec(
        "read_concern",
        lambda: [
            p.name
            for p in Person.objects.read_concern({"level": "local"}).order_by("name")[
                :2
            ]
        ],
    )
    rec("bad_field", lambda: list(Person.objects(nope=1)))
    rec("bad_op", lambda: list(Person.objects(age__nope=1)))
    rec("bad_order", lambda: list(Person.objects.order_by("nope")))
    rec(
        "emb_query",
        lambda: [p.name for p in Person.objects(embs__a=3).order_by("name")],
    )
    rec(
        "emb_match",
        lambda: [p.name for p in Person.objects(embs__match={"a": 3, "b": "b3"})],
    )
    rec("size", lambda: [p.name for p in Person.objects(tags__size=1)])
    rec("pos", lambda: [p.name for p in Person.objects(embs__1__a=2)])


def q_updates() -> None:
    """update with each operator, upsert_one, modify (new, remove), deletes."""
    seed()
    rec("set", lambda: Person.objects(name="p0").update(set__age=10, inc__score=1))
    rec(
        "inc_many",
        lambda: Person.objects(age=1).update(inc__age=1, full_result=True).raw_result,
    )
    rec("push", lambda: Person.objects(name="p0").update_one(push__tags="n"))
    rec(
        "push_all",
        lambda: Person.objects(name="p0").update_one(push_all__tags=["a", "b"]),
    )
    rec("push_pos", lambda: Person.objects(name="p0").update_one(push__tags__0="first"))
    rec("pull", lambda: Person.objects(name="p0").update_one(pull__tags="x"))
    rec(
        "pull_all",
        lambda: Person.objects(name="p0").update_one(pull_all__tags=["a", "b"]),
    )
    rec(
        "add_to_set",
        lambda: Person.objects(name="p0").update_one(add_to_set__tags=["z", "z", "q"]),
    )
    rec("pop", lambda: Person.objects(name="p0").update_one(pop__tags=1))
    rec("unset", lambda: Person.objects(name="p0").update_one(unset__score=1))
    rec(
        "min_max",
        lambda: Person.objects(name="p1").update_one(max__age=50, min__score=0.1),
    )
    rec("mul", lambda: Person.objects(name="p2").update_one(mul__age=3))
    rec("rename", lambda: Person.objects(name="p2").update_one(rename__score="sc"))
    rec(
        "set_on_insert",
        lambda: Person.objects(name="new").update_one(
            set_on_insert__age=3, set__tags=["i"], upsert=True
        ),
    )
    rec("pull_emb", lambda: Person.objects(name="p3").update_one(pull__embs__a=4))
    rec(
        "pull_emb_obj",
        lambda: Person.objects(name="p3").update_one(pull__embs=Emb(a=3, b="b3")),
    )
    rec(
        "set_pos",
        lambda: Person.objects(name="p4", embs__a=4).update_one(set__embs__S__b="pos"),
    )
    rec("set_emb", lambda: Person.objects(name="p4").update_one(set__emb=Emb(a=99)))
    rec(
        "set_emb_dict", lambda: Person.objects(name="p4").update_one(set__emb={"a": 98})
    )
    rec("upsert_one", lambda: Person.objects(name="up").upsert_one(set__age=7))
    rec("upsert_one_exist", lambda: Person.objects(name="up").upsert_one(inc__age=1))
    rec(
        "upsert_one_raw",
        lambda: Person.objects(name="up2").upsert_one(__raw__={"$set": {"age": 3}}),
    )
    rec(
        "update_raw",
        lambda: Person.objects(name="p5").update(__raw__={"$set": {"tags": ["r"]}}),
    )
    rec("update_bad_op", lambda: Person.objects(name="p5").update(nope__age=1))
    rec("update_bad_field", lambda: Person.objects(name="p5").update(set__nope=1))
    rec("update_empty", lambda: Person.objects(name="p5").update())
    rec(
        "update_wc",
        lambda: Person.objects(name="p5").update(set__age=1, write_concern={"w": 1}),
    )
    rec(
        "update_wc0",
        lambda: Person.objects(name="p5").update(set__age=2, write_concern={"w": 0}),
    )
    rec("update_validate", lambda: Person.objects(name="p5").update(set__age="notint"))
    rec(
        "update_array_filters",
        lambda: Person.objects(name="p1").update(set__embs__S__a=0, array_filters=[]),
    )
    rec("modify_new", lambda: Person.objects(name="p1").modify(new=True, inc__age=5))
    rec("modify_old", lambda: Person.objects(name="p1").modify(inc__age=5))
    rec("modify_remove", lambda: Person.objects(name="p1").modify(remove=True))
    rec(
        "modify_remove_new",
        lambda: Person.objects(name="p2").modify(remove=True, new=True),
    )
    rec(
        "modify_upsert_new",
        lambda: Person.objects(name="mu").modify(upsert=True, new=True, set__age=1),
    )
    rec(
        "modify_upsert_old",
        lambda: Person.objects(name="mu2").modify(upsert=True, set__age=1),
    )
    rec(
        "modify_sorted",
        lambda: (
            Person.objects(age__gte=0).order_by("-name").modify(new=True, set__score=9)
        ),
    )
    rec("modify_none", lambda: Person.objects(name="zz").modify(set__age=1))
    rec(
        "modify_fields",
        lambda: Person.objects(name="p3").only("name").modify(new=True, set__age=33),
    )
    rec(
        "modify_sub",
        lambda: Student.objects(name="s").modify(new=True, set__school="s2"),
    )
    rec("final", lambda: list(Person.objects.order_by("name").as_pymongo()))
    rec("delete", lambda: Person.objects(age__gte=30).delete())
    rec("delete_wc", lambda: Person.objects(name="up").delete(write_concern={"w": 1}))
    rec("delete_limit", lambda: Person.objects.order_by("name").limit(1).delete())
    rec("delete_skip", lambda: Person.objects.order_by("name").skip(2).delete())
    rec("final2", lambda: list(Person.objects.order_by("name").as_pymongo()))


def q_insert() -> None:
    """insert one, many, unloaded, stored, duplicate, wrong class; create."""
    seed()
    rec("insert_one", lambda: Person.objects.insert(Person(name="i1")))
    rec(
        "insert_many",
        lambda: Person.objects.insert(
            [Person(name="i2"), Student(name="i3", school="x")]
        ),
    )
    rec(
        "insert_nobulk",
        lambda: Person.objects.insert([Person(name="i4")], load_bulk=False),
    )
    rec("insert_saved", lambda: Person.objects.insert(Person.objects.first()))
    rec(
        "insert_dup",
        lambda: Person.objects.insert(
            [
                Person(id=ObjectId("5f0000000000000000000001"), name="d"),
                Person(id=ObjectId("5f0000000000000000000001"), name="d"),
            ]
        ),
    )
    rec("insert_wrong", lambda: Person.objects.insert([Emb(a=1)]))
    rec("insert_other", lambda: Student.objects.insert([Person(name="x")]))
    rec("create", lambda: Person.objects.create(name="c", age=3))
    rec("create_bad", lambda: Person.objects.create(name="c", age="x"))
    rec("get_or_create_gone", lambda: hasattr(Person.objects, "get_or_create"))


class AEmb(M.EmbeddedDocument):
    a = M.IntField()
    b = M.StringField()
    items = M.ListField(M.IntField())


class ADEmb(M.DynamicEmbeddedDocument):
    x = M.IntField()


class Author(M.Document):
    name = M.StringField()
    meta = {"indexes": ["name"]}


class Base(M.Document):
    meta = {"abstract": True, "indexes": ["title"], "ordering": ["-title"]}
    title = M.StringField()


class Article(Base):
    author = M.ReferenceField(Author)
    authors = M.ListField(M.ReferenceField(Author))
    amap = M.MapField(M.ReferenceField(Author))
    gen = M.GenericReferenceField()
    lazy = M.LazyReferenceField(Author)
    glazy = M.GenericLazyReferenceField()
    embs = M.ListField(M.EmbeddedDocumentField(AEmb))
    emap = M.MapField(M.EmbeddedDocumentField(AEmb))
    demb = M.EmbeddedDocumentField(ADEmb)
    price = M.DecimalField(precision=3, rounding="ROUND_HALF_UP")
    price2 = M.DecimalField(force_string=True)
    when = M.DateTimeField()
    cwhen = M.ComplexDateTimeField()
    seq = M.SequenceField()
    meta = {
        "indexes": [{"fields": ["$title"]}, ("when", "-price")],
        "collection": "articles",
    }


class Dyn(M.DynamicDocument):
    name = M.StringField()
    meta = {"allow_inheritance": True}


class Node(M.Document):
    name = M.StringField()
    parent = M.ReferenceField("self")
    kids = M.ListField(M.ReferenceField("self"))


def clean() -> None:
    """Empty collections and counters for the article scenarios."""
    LOG.on = False
    for c in (Author, Article, Dyn, Node):
        c.drop_collection()
    M.get_db()["mongoengine.counters"].drop()
    LOG.on = True


def d_fields() -> None:
    """Every reference kind, decimals, dates, sequences, indexes, JSON, copies."""
    clean()
    a = rec("author", lambda: Author(name="A").save())
    b = Author(name="B").save()
    art = Article(
        title="t",
        author=a,
        authors=[a, b],
        amap={"x": a},
        gen=b,
        lazy=a,
        glazy=b,
        embs=[AEmb(a=1, items=[1, 2]), AEmb(a=2)],
        emap={"k": AEmb(a=3)},
        demb=ADEmb(x=1, y="dyn"),
        price=Decimal("1.23456"),
        price2=Decimal("2.5"),
        when=datetime.datetime(
            2020,
            1,
            2,
            3,
            4,
            5,
            678901,
            tzinfo=datetime.timezone(datetime.timedelta(hours=2)),
        ),
        cwhen=datetime.datetime(2020, 1, 2, 3, 4, 5, 678901),
    )
    rec("save", lambda: art.save())
    rec("raw", lambda: M.get_db()["articles"].find_one())
    got = rec("get", lambda: Article.objects.get())
    rec("author_deref", lambda: got.author)
    rec("authors_deref", lambda: got.authors)
    rec("amap_deref", lambda: got.amap)
    rec("gen_deref", lambda: got.gen)
    rec("lazy", lambda: (got.lazy, got.lazy.fetch(), got.lazy.pk))
    rec("glazy", lambda: (got.glazy, got.glazy.fetch()))
    rec("decimal", lambda: (got.price, got.price2, got.when, got.cwhen))
    rec("seq", lambda: (got.seq, Article(title="u").save().seq, Article(title="v").seq))
    rec("counters", lambda: list(M.get_db()["mongoengine.counters"].find()))
    rec("indexes", lambda: sorted(M.get_db()["articles"].index_information().items()))
    rec("index_spec", lambda: Article._meta["index_specs"])
    rec("ensure", lambda: Article.ensure_indexes())
    rec("list_indexes", lambda: Article.list_indexes())
    rec("compare_indexes", lambda: Article.compare_indexes())
    rec("ordering", lambda: [x.title for x in Article.objects])
    rec("json", lambda: got.to_json(sort_keys=True))
    rec("from_json", lambda: Article.from_json(got.to_json()))
    rec("from_json_created", lambda: Article.from_json(got.to_json(), created=True))
    rec(
        "from_json_created_save",
        lambda: Article.from_json(
            Article(title="j", price=Decimal(1)).to_json(), created=True
        ).save(),
    )
    rec("qs_json", lambda: Article.objects.order_by("title").only("title").to_json())
    rec(
        "qs_from_json",
        lambda: Article.objects.from_json(Article.objects.order_by("title").to_json()),
    )
    rec("pickle", lambda: pickle.loads(pickle.dumps(got)))
    rec("deepcopy", lambda: copy.deepcopy(got))
    rec(
        "select_related",
        lambda: Article.objects.order_by("title").select_related(max_depth=2),
    )
    rec(
        "doc_select_related",
        lambda: Article.objects.order_by("title").first().select_related(max_depth=1),
    )
    rec("no_deref", lambda: Article.objects.no_dereference().order_by("title").first())
    rec(
        "no_deref_author",
        lambda: Article.objects.no_dereference().order_by("title").first().author,
    )
    rec(
        "eq",
        lambda: (
            got == Article.objects.get(pk=got.pk),
            hash(got) == hash(Article.objects.get(pk=got.pk)),
        ),
    )


def d_reload_update() -> None:
    """reload with fields, update, modify, saves of deleted documents."""
    clean()
    a = Author(name="A").save()
    art = Article(title="t", author=a, embs=[AEmb(a=1)], price=Decimal("3.3")).save()
    Article.objects(pk=art.pk).update(
        set__title="new", set__price=Decimal("9.999"), push__embs=AEmb(a=5)
    )
    art.embs[0].a = 7
    rec("reload_fields", lambda: art.reload("title", "price"))
    rec("changed_after", lambda: art._get_changed_fields())
    rec("reload_all", lambda: art.reload())
    rec("reload_bad", lambda: art.reload("nope"))
    rec("update", lambda: art.update(set__title="u2", inc__seq=1))
    rec("update_unsaved", lambda: Article(title="z").update(set__title="x"))
    rec("after_update", lambda: art)
    rec("modify", lambda: art.modify(set__title="m"))
    rec("modify_q", lambda: art.modify(query={"title": "nope"}, set__title="m2"))
    rec("after_modify", lambda: art)
    rec("reload_deleted", lambda: (Article.objects(pk=art.pk).delete(), art.reload()))
    rec("save_deleted", lambda: art.save())
    rec("after", lambda: art)
    rec(
        "cascade_save", lambda: Article(title="c", author=Author(name="unsaved")).save()
    )
    rec(
        "cascade_save2",
        lambda: Article(title="c", author=Author(name="unsaved2")).save(cascade=True),
    )
    rec("unsaved_ref_qs", lambda: list(Article.objects(author=Author(name="nope"))))
    rec("validation", lambda: Article(title=3).validate())
    rec("validation2", lambda: Article(embs=[AEmb(a="x")]).save())
    rec(
        "save_condition",
        lambda: Article.objects.first().save(save_condition={"title": "zzz"}),
    )
    rec("force_insert", lambda: Article.objects.first().save(force_insert=True))


def d_delta() -> None:
    """Changes in lists and maps of embedded documents: deltas and saves."""
    clean()
    art = Article(
        title="t",
        embs=[AEmb(a=1, items=[1]), AEmb(a=2)],
        emap={"k": AEmb(a=3), "j": AEmb(a=4)},
        demb=ADEmb(x=1),
    ).save()
    art = Article.objects.get(pk=art.pk)
    art.embs[0].items.append(5)
    art.embs[1].b = "x"
    art.emap["k"].a = 10
    art.emap["new"] = AEmb(a=1)
    del art.emap["j"]
    art.demb.z = [1, {"q": 2}]
    art.demb.x = None
    rec("changed", lambda: art._get_changed_fields())
    rec("delta", lambda: art._delta())
    rec("save", lambda: art.save())
    rec("stored", lambda: Article.objects.as_pymongo().get(pk=art.pk))
    art.embs.insert(0, AEmb(a=0))
    art.embs.pop()
    art.emap["k"].items = [3]
    rec("changed2", lambda: art._get_changed_fields())
    rec("delta2", lambda: art._delta())
    rec("save2", lambda: art.save())
    rec("stored2", lambda: Article.objects.as_pymongo().get(pk=art.pk))
    art.embs = []
    art.emap = {}
    art.demb = None
    rec("delta3", lambda: art._delta())
    rec("save3", lambda: art.save())
    rec("stored3", lambda: Article.objects.as_pymongo().get(pk=art.pk))


def d_dynamic() -> None:
    """Dynamic documents: fields added, removed, queried, built by _from_son."""
    clean()
    d = Dyn(name="n", extra=1, other={"a": [1, 2]})
    rec("new", lambda: d)
    rec("save", lambda: d.save())
    d.extra = 2
    d.more = AEmb(a=1)
    del d.other
    rec("changed", lambda: d._get_changed_fields())
    rec("delta", lambda: d._delta())
    rec("save2", lambda: d.save())
    rec("stored", lambda: Dyn.objects.as_pymongo().get())
    rec("loaded", lambda: Dyn.objects.get())
    loaded = Dyn.objects.get()
    loaded.more.a = 5
    loaded.newlist = [ADEmb(x=1, y=2)]
    rec("delta_l", lambda: loaded._delta())
    rec("save_l", lambda: loaded.save())
    rec("loaded2", lambda: Dyn.objects.get())
    rec("query_dyn", lambda: list(Dyn.objects(extra=2)))
    rec("query_dyn_sub", lambda: list(Dyn.objects(more__a=5)))
    rec("order_dyn", lambda: list(Dyn.objects.order_by("extra")))
    rec("update_dyn", lambda: Dyn.objects.update(set__extra=3, set__brand_new="x"))
    rec("loaded3", lambda: Dyn.objects.get())
    son = {"_id": ObjectId(), "_cls": "Dyn", "name": "s", "zzz": 1}
    d2 = rec("from_son_created", lambda: Dyn._from_son(son, created=True))
    rec("from_son_save", lambda: d2.save())
    rec("from_son_after", lambda: d2)
    d3 = Dyn._from_son({"_id": ObjectId(), "name": "s", "zzz": 1})
    rec("from_son_nocreated", lambda: d3)
    rec("from_son_nocreated_save", lambda: d3.save())
    d4 = Dyn(id=ObjectId(), name="q")
    rec("id_given", lambda: d4)
    rec("id_given_save", lambda: d4.save())
    rec("id_given_after", lambda: d4)
    d5 = Dyn(name="q", x=1)
    d5.pk = ObjectId()
    rec("pk_set", lambda: d5)
    rec("pk_set_save", lambda: d5.save())


def d_nulls() -> None:
    """Stored nulls and unknown fields, read every way and saved."""
    clean()
    coll = M.get_db()["articles"]
    oid = ObjectId()
    coll.insert_one(
        SON(
            [
                ("_id", oid),
                ("price", None),
                ("title", "x"),
                ("when", None),
                ("seq", 5),
                ("embs", []),
            ]
        )
    )
    coll.insert_one(SON([("seq", 6), ("title", "y"), ("_id", ObjectId())]))
    coll.insert_one(
        SON(
            [
                ("seq", 7),
                ("title", None),
                ("lazy", None),
                ("_id", ObjectId()),
                ("unknown", 1),
            ]
        )
    )
    rec("loaded", lambda: list(Article.objects.order_by("seq")))
    rec("first", lambda: Article.objects.order_by("seq").first())
    rec("get", lambda: Article.objects.get(pk=oid))
    rec(
        "in_bulk",
        lambda: [v for k, v in sorted(Article.objects.in_bulk([oid]).items())],
    )
    rec("idx", lambda: Article.objects.order_by("seq")[2])
    rec("modify", lambda: Article.objects(pk=oid).modify(new=True, set__title="z"))
    d = Article.objects.get(pk=oid)
    d.title = "w"
    rec("save", lambda: d.save())
    rec("stored", lambda: coll.find_one({"_id": oid}))
    Dyn._get_collection().insert_one(
        SON([("_id", oid), ("zz", None), ("name", None), ("_cls", "Dyn"), ("aa", 1)])
    )
    rec("dyn_null", lambda: Dyn.objects.get())


def d_switch() -> None:
    """switch_db, switch_collection, using, no_dereference, query_counter."""
    clean()
    a = Author(name="A")
    a.switch_db("other")
    rec("switch_db_save", lambda: a.save())
    rec("switch_db_reload", lambda: a.reload())
    rec("default_count", lambda: Author.objects.count())
    b = Author(name="B")
    b.switch_collection("authors2")
    rec("switch_coll_save", lambda: b.save())
    b.name = "B2"
    rec("switch_coll_save2", lambda: b.save())
    rec("switch_coll_delete", lambda: b.delete())
    with mongoengine.context_managers.switch_db(Author, "other") as A2:
        rec("cm_switch_db", lambda: [x.name for x in A2.objects])
        rec("cm_switch_db_create", lambda: A2(name="C").save())
    with mongoengine.context_managers.switch_collection(Author, "authors3") as A3:
        rec("cm_switch_coll", lambda: A3(name="D").save())
        rec("cm_switch_coll_list", lambda: [x.name for x in A3.objects])
        rec("cm_coll_name", lambda: A3._get_collection_name())
    rec("after_cm", lambda: [x.name for x in Author.objects])
    rec("qs_using", lambda: [x.name for x in Author.objects.using("other")])
    x = Author.objects.using("other").first()
    rec("using_doc", lambda: x)
    x.name = "changed"
    rec("using_save", lambda: x.save())
    rec("using_after", lambda: [x.name for x in Author.objects.using("other")])
    Article(title="t", author=Author(name="R").save()).save()
    with mongoengine.context_managers.no_dereference(Article) as Art:
        rec("no_deref_cm", lambda: Art.objects.first().author)
    rec("deref_after", lambda: Article.objects.first().author)
    with query_counter() as q:
        rec("qc read", lambda: Article.objects.first().author)
        list(Article.objects.select_related())
        rec("qc", lambda: int(q))
    with query_counter() as q:
        Author(name="qq").save()
        Author.objects(name="qq").update(set__name="qr")
        Author.objects(name="qr").delete()
        Author.objects.count()
        rec("qc2", lambda: int(q))
    with query_counter("other") as q:
        list(Author.objects.using("other"))
        list(Article.objects)
        rec("qc3", lambda: (q == 1, q < 3, int(q)))


def d_nodes() -> None:
    """select_related to each depth, dangling references."""
    clean()
    root = Node(name="root").save()
    c1 = Node(name="c1", parent=root).save()
    c2 = Node(name="c2", parent=c1).save()
    root.kids = [c1, c2]
    root.save()
    rec("sr1", lambda: Node.objects.order_by("name").select_related(max_depth=1))
    rec("sr3", lambda: Node.objects.order_by("name").select_related(max_depth=3))
    n = Node.objects.get(name="c2")
    rec("chain", lambda: n.parent.parent.kids)
    with query_counter() as q:
        n = Node.objects.get(name="c2")
        rec("qc parent", lambda: n.parent.parent)
        rec("qc", lambda: int(q))
    Node.objects(name="c1").delete()
    rec("dangling", lambda: Node.objects.get(name="c2").parent)
    rec("dangling_list", lambda: Node.objects.get(name="root").kids)
    rec("dangling_sr", lambda: Node.objects.order_by("name").select_related())


def d_files() -> None:
    """FileField and ImageField: put, read, replace, delete."""

    class F(M.Document):
        f = M.FileField()
        fs = M.ListField(M.FileField())
        img = M.ImageField(size=(10, 10, True), thumbnail_size=(5, 5, True))

    LOG.on = False
    F.drop_collection()
    M.get_db()["fs.files"].drop()
    M.get_db()["fs.chunks"].drop()
    M.get_db()["images.files"].drop()
    LOG.on = True
    doc = F()
    doc.f.put(b"hello", filename="h.txt", content_type="text/plain")
    rec("proxy", lambda: (doc.f.filename, doc.f.length, doc.f.content_type))
    rec("save", lambda: doc.save())
    if importlib.util.find_spec("PIL"):  # (Pillow is optional)
        from PIL import Image

        buf = io.BytesIO()
        Image.new("RGB", (40, 20), "red").save(buf, "PNG")
        buf.seek(0)
        doc.img.put(buf)
        shown = (doc.img.size, doc.img.format, doc.img.thumbnail.length > 0)
        rec("img", lambda: shown)
        doc.save()
        rec("read_img", lambda: (F.objects.first().img.size, doc.img.format))
    g = F.objects.first()
    rec("read", lambda: (g.f.read(), g.f.filename, g.f.length, bool(g.f), g.f == doc.f))
    rec("replace", lambda: g.f.replace(b"new", filename="n"))
    rec("read2", lambda: g.f.read())
    rec("save2", lambda: g.save())
    rec("delete_file", lambda: g.f.delete())
    rec("after_delete", lambda: (g.f.grid_id, g.f.read(), bool(g.f)))
    rec("save3", lambda: g.save())
    rec("stored", lambda: F.objects.as_pymongo().first())
    rec("del_doc", lambda: g.delete())
    rec("files", lambda: M.get_db()["fs.files"].count_documents({}))
    rec("img_files", lambda: M.get_db()["images.files"].count_documents({}))


class NDoc(M.Document):
    name = M.StringField()
    n = M.IntField()
    e = M.EmbeddedDocumentField(Emb)
    tags = M.ListField(M.StringField())
    x = M.StringField(db_field="xx")


STORED = [  # every field, in other orders, some null; one lacking fields
    {"_id": 1, "name": "full", "n": 1, "e": {"a": 1, "b": None}, "tags": ["a"]},
    {"_id": 2, "name": "nul", "n": None, "e": {"b": "q", "a": None}, "tags": []},
    {"xx": None, "n": 3, "_id": 3, "name": "nul2", "e": None, "tags": None},
    {"tags": [], "n": 5, "xx": "z", "name": "reorder", "e": {"b": "1"}, "_id": 4},
    {"n": 4, "name": "lack", "_id": 5},
]


def store_nulls() -> None:
    """STORED, each lacking an ``xx`` given one."""
    LOG.on = False
    NDoc.drop_collection()
    stored = [dict(son, xx=son.get("xx", "x")) for son in STORED]
    for son in stored:
        son["_id"] = ObjectId(f"{son['_id']:024x}")
    NDoc._get_collection().insert_many([SON(son) for son in stored])
    LOG.on = True


def nulls() -> None:
    """Documents storing every field (some null) read every way."""
    store_nulls()
    for name in ("full", "nul", "nul2", "reorder"):
        found = NDoc.objects(name=name)
        rec("get " + name, lambda found=found: found.get())
        rec("first " + name, found.first)
        rec("list " + name, lambda found=found: list(found.clone()))
        rec("iterate " + name, lambda found=found: next(iter(found.clone())))
        rec(
            "in_bulk " + name,
            lambda found=found: found.in_bulk(list(found.scalar("id"))),
        )
        raw = found.as_pymongo().first()
        rec("_from_son " + name, lambda raw=raw: NDoc._from_son(raw))
        rec("modify " + name, lambda found=found: found.modify(new=True, set__n=9))


def nulls_partial() -> None:
    """Documents read without some of their fields."""
    store_nulls()
    for name in ("full", "nul", "nul2", "reorder", "lack"):
        found = NDoc.objects(name=name)
        rec("get " + name, lambda found=found: found.get())
        rec("only " + name, lambda found=found: found.only("name", "n").first())
        rec("exclude " + name, lambda found=found: found.exclude("n").first())
    rec("all", lambda: list(NDoc.objects.order_by("n", "_id")))
    rec("no_cache", lambda: list(NDoc.objects.order_by("n", "_id").no_cache()))
    rec("batch", lambda: list(NDoc.objects.order_by("n", "_id").batch_size(2)))


class Color(enum.Enum):
    RED = "r"
    BLUE = "b"


class Animal(M.EmbeddedDocument):
    name = M.StringField()
    meta = {"allow_inheritance": True}


class Dog(Animal):
    bark = M.IntField(default=1)


class TDEmb(M.DynamicEmbeddedDocument):
    x = M.IntField()


class Owner(M.Document):
    name = M.StringField(required=True)
    meta = {"allow_inheritance": True}


class Vip(Owner):
    level = M.IntField(choices=[1, 2, 3])


class Thing(M.Document):
    size = M.StringField(choices=(("S", "Small"), ("L", "Large")))
    color = M.EnumField(Color, default=Color.RED)
    uid = M.UUIDField(binary=True)
    uid2 = M.UUIDField(binary=False)
    blob = M.BinaryField()
    pets = M.ListField(M.EmbeddedDocumentField(Animal))
    demb = M.ListField(M.EmbeddedDocumentField(TDEmb))
    anydict = M.DictField()
    maplist = M.MapField(M.ListField(M.IntField()))
    point = M.PointField()
    geo = M.GeoPointField()
    email = M.EmailField()
    url = M.URLField()
    owner = M.ReferenceField(Owner, reverse_delete_rule=M.NULLIFY)
    owners = M.ListField(M.ReferenceField(Owner, reverse_delete_rule=M.PULL))
    cached = M.CachedReferenceField(Owner, fields=["name"])
    seq = M.SequenceField(sequence_name="things", value_decorator=str)
    when = M.DateTimeField(default=lambda: datetime.datetime(2020, 1, 1))
    sorted_l = M.SortedListField(M.IntField())
    lng = M.LongField()
    flt = M.FloatField(min_value=0)
    boolf = M.BooleanField()
    dyn = M.DynamicField()
    meta = {"indexes": [{"fields": ["point"]}], "strict": False}


class Box(M.Document):
    owner = M.ReferenceField(Owner, reverse_delete_rule=M.CASCADE)
    lazy = M.LazyReferenceField(Owner, passthrough=True, reverse_delete_rule=M.DENY)


def clean_things() -> None:
    """Empty collections and counters for the field type scenarios."""
    LOG.on = False
    for c in (Owner, Thing, Box):
        c.drop_collection()
    M.get_db()["mongoengine.counters"].drop()
    LOG.on = True


def f_types() -> None:
    """Choices, enums, UUIDs, geo, cached references, sequences, validation."""
    clean_things()
    o = Owner(name="o").save()
    v = Vip(name="v", level=2).save()
    t = Thing(
        size="S",
        color=Color.BLUE,
        uid=uuid.UUID(int=1),
        uid2=uuid.UUID(int=2),
        blob=b"\x00\x01",
        pets=[Dog(name="d"), Animal(name="a")],
        demb=[TDEmb(x=1, extra="e")],
        anydict={"a": {"b": [1, {"c": 2}]}, "e": Dog(name="x")},
        maplist={"k": [3, 1]},
        point=[1, 2],
        geo=[3, 4],
        email="a@b.co",
        url="http://x.org",
        owner=v,
        owners=[o, v],
        cached=v,
        sorted_l=[3, 1, 2],
        lng=2**40,
        flt=1.5,
        boolf=False,
        dyn={"z": [1]},
    )
    rec("new", lambda: t)
    rec("display", lambda: t.get_size_display())
    rec("save", lambda: t.save())
    rec("raw", lambda: Thing.objects.as_pymongo().first())
    g = rec("get", lambda: Thing.objects.get())
    rec("deref", lambda: (g.owner, g.owners, g.cached, g.cached.name))
    rec("pets", lambda: g.pets)
    g.pets[0].bark = 5
    g.demb[0].more = 2
    g.anydict["a"]["b"][1]["c"] = 3
    g.maplist["k"].append(0)
    g.sorted_l.append(0)
    g.color = Color.RED
    rec("changed", lambda: g._get_changed_fields())
    rec("delta", lambda: g._delta())
    rec("save2", lambda: g.save())
    rec("raw2", lambda: Thing.objects.as_pymongo().first())
    rec("bad_choice", lambda: Thing(size="M").validate())
    rec("bad_email", lambda: Thing(email="nope").validate())
    rec("bad_level", lambda: Vip(name="x", level=5).save())
    rec("missing_req", lambda: Owner().save())
    rec("neg_float", lambda: Thing(flt=-1).validate())
    rec("bad_enum", lambda: Thing(color="r").validate())
    rec("strict_false", lambda: Thing._from_son({"unknown": 1, "size": "L"}))
    rec("q_enum", lambda: Thing.objects(color=Color.RED).count())
    rec("q_uuid", lambda: Thing.objects(uid=uuid.UUID(int=1)).count())
    rec("q_cached", lambda: Thing.objects(cached__name="v").count())
    rec("q_near", lambda: [x.id == g.id for x in Thing.objects(point__near=[1, 2])])
    rec("q_within", lambda: Thing.objects(geo__within_box=[(0, 0), (5, 5)]).count())
    rec("q_sub", lambda: Owner.objects(level=2).count())
    rec("q_vip_list", lambda: list(Owner.objects.order_by("name")))
    rec("q_pets_cls", lambda: Thing.objects(pets__bark=5).count())
    v.name = "v2"
    rec("v_save", lambda: v.save())
    rec("cached_after", lambda: Thing.objects.as_pymongo().first()["cached"])
    rec("seq_next", lambda: Thing(size="L").save().seq)
    rec("seq_counters", lambda: list(M.get_db()["mongoengine.counters"].find()))
    rec("sync_cached", lambda: Thing.cached.sync_all())
    rec(
        "cached_after2",
        lambda: [d.get("cached") for d in Thing.objects.as_pymongo().order_by("seq")],
    )


def f_delete_rules() -> None:
    """NULLIFY, PULL, CASCADE and DENY on document and queryset deletes."""
    clean_things()
    o = Owner(name="o").save()
    v = Vip(name="v").save()
    Thing(owner=o, owners=[o, v]).save()
    Box(owner=o).save()
    b2 = Box(owner=v, lazy=v).save()
    rec("deny", lambda: v.delete())
    rec("after_deny", lambda: (Owner.objects.count(), Box.objects.count()))
    rec("delete_o", lambda: o.delete())
    rec("thing", lambda: Thing.objects.as_pymongo().first())
    rec("boxes", lambda: list(Box.objects.as_pymongo()))
    rec("qs_delete_deny", lambda: Owner.objects.delete())
    b2.delete()
    rec("qs_delete", lambda: Owner.objects.delete())
    rec("thing2", lambda: Thing.objects.as_pymongo().first())
    rec("lazy_pass", lambda: Box(lazy=Owner(name="q").save()).save().lazy.name)


def f_inheritance() -> None:
    """An abstract base with a collection and indexes of a subclass."""

    class AbsBase(M.Document):
        meta = {"abstract": True, "allow_inheritance": True, "collection": "zoo"}
        a = M.IntField()

    class Z1(AbsBase):
        b = M.IntField()

    class Z2(Z1):
        c = M.IntField()
        meta = {"indexes": ["c"]}

    LOG.on = False
    Z1.drop_collection()
    LOG.on = True
    rec(
        "coll",
        lambda: (
            Z1._get_collection_name(),
            Z2._get_collection_name(),
            Z2._meta.get("allow_inheritance"),
        ),
    )
    rec("save", lambda: (Z1(a=1, b=2).save(), Z2(a=1, b=2, c=3).save()))
    rec("list", lambda: list(Z1.objects.order_by("id")))
    rec("list2", lambda: list(Z2.objects))
    rec("sub_cls", lambda: Z1._subclasses)
    rec("idx", lambda: Z2._meta["index_specs"])
    rec("count", lambda: (Z1.objects.count(), Z2.objects.count()))
    rec("update_sub", lambda: Z2.objects.update(inc__a=1))
    rec("raw", lambda: list(Z1.objects.as_pymongo().order_by("id")))


class Comment(M.EmbeddedDocument):
    author = M.StringField(required=True)
    votes = M.IntField(default=0)

    def clean(self) -> None:
        if self.author == "bad":
            raise M.ValidationError("bad author")


class Post(M.Document):
    title = M.StringField(max_length=10)
    comments = M.EmbeddedDocumentListField(Comment)
    ranked = M.SortedListField(
        M.EmbeddedDocumentField(Comment), ordering="votes", reverse=True
    )
    meta = {"ordering": ["title"]}

    def clean(self) -> None:
        if self.title == "clean":
            self.title = "cleaned"


class Custom(M.Document):
    name = M.StringField()
    n = M.IntField()

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("n", 42)
        super().__init__(*args, **kwargs)


def e_lists() -> None:
    """EmbeddedDocumentListField methods, clean(), an own __init__, queryset odds."""
    LOG.on = False
    Post.drop_collection()
    Custom.drop_collection()
    LOG.on = True
    p = Post(
        title="p",
        comments=[Comment(author="a", votes=1), Comment(author="b", votes=3)],
        ranked=[Comment(author="x", votes=1), Comment(author="y", votes=5)],
    )
    rec("save", lambda: p.save())
    rec("raw", lambda: Post.objects.as_pymongo().first())
    g = Post.objects.first()
    rec("filter", lambda: g.comments.filter(author="a"))
    rec("exclude", lambda: g.comments.exclude(author="a"))
    rec("get", lambda: g.comments.get(votes=3))
    rec("get_none", lambda: g.comments.get(votes=99))
    rec(
        "get_two",
        lambda: (g.comments.append(Comment(author="a")), g.comments.get(author="a"))[1],
    )
    rec("count", lambda: g.comments.count())
    rec("first", lambda: g.comments.first())
    rec("create", lambda: g.comments.create(author="c", votes=2))
    rec("update", lambda: g.comments.filter(author="a").update(votes=10))
    rec("delete", lambda: g.comments.filter(author="b").delete())
    rec("changed", lambda: g._get_changed_fields())
    rec("delta", lambda: g._delta())
    rec("save2", lambda: g.save())
    rec("raw2", lambda: Post.objects.as_pymongo().first())
    rec("qs_emb_list", lambda: [x.title for x in Post.objects(comments__author="c")])
    rec("long_title", lambda: Post(title="x" * 20).save())
    rec("bad_comment", lambda: Post(title="t", comments=[Comment(author="bad")]).save())
    rec("req_comment", lambda: Post(title="t", comments=[Comment()]).save())
    rec("clean", lambda: Post(title="clean").save())
    rec("clean_noclean", lambda: Post(title="clean").save(clean=False))
    rec("validate_false", lambda: Post(title="x" * 20).save(validate=False))
    rec("ordering", lambda: [x.title for x in Post.objects])
    rec("ordering_clear", lambda: [x.title for x in Post.objects.order_by()])
    rec("custom_init", lambda: Custom(name="c"))
    rec("custom_save", lambda: Custom(name="c").save())
    rec("custom_load", lambda: Custom.objects.first())
    rec("custom_update", lambda: Custom.objects(name="c").update_one(unset__n=True))
    rec("custom_load2", lambda: Custom.objects.first())
    rec("repr", lambda: (repr(Post.objects.first()), str(Comment(author="q"))))
    rec("to_dict", lambda: Post.objects.first().to_mongo().to_dict())
    rec("limit0", lambda: len(list(Post.objects.limit(0))))
    rec("skip_neg", lambda: list(Post.objects.skip(-1)))
    rec(
        "values_only",
        lambda: Post.objects.only("title").values_list("title", "comments"),
    )
    rec(
        "rewind",
        lambda: (lambda q: (list(q), q.rewind(), list(q))[2])(Post.objects.all()),
    )
    rec(
        "qs_len_twice",
        lambda: (lambda q: (len(q), len(q), q.count()))(Post.objects.all()),
    )
    rec("qs_bool", lambda: (bool(Post.objects(title="nope")), bool(Post.objects)))
    rec("qs_contains", lambda: Post.objects.first() in Post.objects)
    rec("clear_cls", lambda: Post.objects.clear_cls_query().count())
    rec("qs_getitem_slice_step", lambda: Post.objects[::2])
    rec("sum_emb_list", lambda: Post.objects.sum("comments.votes"))
    rec("avg_emb_list", lambda: Post.objects.average("comments.votes"))
    rec("drop", lambda: Post.drop_collection())
    rec("after_drop", lambda: Post.objects.count())


class MyQS(M.QuerySet):
    def tagged(self) -> Any:
        return self.filter(tags="x")

    def get_first_name(self) -> Any:
        doc = self.first()
        return doc.name if doc else None


class Tgt(M.Document):
    name = M.StringField()
    meta = {"allow_inheritance": True}


class Tgt2(Tgt):
    extra = M.IntField()


class Holder(M.Document):
    name = M.StringField()
    tags = M.ListField(M.StringField())
    gen = M.GenericReferenceField()
    gens = M.ListField(M.GenericReferenceField())
    glazy = M.GenericLazyReferenceField()
    refmap = M.DictField(M.ReferenceField(Tgt))
    anyd = M.DictField()
    refs = M.ListField(M.ReferenceField(Tgt, dbref=True))
    lazies = M.ListField(M.LazyReferenceField(Tgt))
    meta = {"queryset_class": MyQS}

    @M.queryset_manager
    def named(doc_cls: Any, queryset: Any) -> Any:
        return queryset.filter(name__ne=None).order_by("name")


def r_refs() -> None:
    """A queryset class and manager; generic, lazy, mapped and listed references."""
    LOG.on = False
    Tgt.drop_collection()
    Holder.drop_collection()
    LOG.on = True
    a = Tgt(name="a").save()
    b = Tgt2(name="b", extra=1).save()
    Holder(
        name="h",
        tags=["x"],
        gen=b,
        gens=[a, b],
        glazy=a,
        refmap={"k": a, "j": b},
        anyd={"r": a, "l": [b]},
        refs=[a, b],
        lazies=[a, b],
    ).save()
    Holder(name="i", tags=["y"]).save()
    rec("raw", lambda: Holder.objects(name="h").as_pymongo().first())
    rec("qs_class", lambda: type(Holder.objects).__name__)
    rec("tagged", lambda: [x.name for x in Holder.objects.tagged()])
    rec("first_name", lambda: Holder.objects.order_by("-name").get_first_name())
    rec("named", lambda: [x.name for x in Holder.named])
    g = Holder.objects.get(name="h")
    rec("gen", lambda: g.gen)
    rec("gens", lambda: g.gens)
    rec("glazy", lambda: (g.glazy, g.glazy.fetch()))
    rec("refmap", lambda: g.refmap)
    rec("anyd", lambda: g.anyd)
    rec("refs", lambda: g.refs)
    rec("lazies", lambda: [lazy.fetch() for lazy in g.lazies])
    rec("sr", lambda: Holder.objects.order_by("name").select_related())
    rec("nd", lambda: Holder.objects.no_dereference().get(name="h"))
    rec("nd_gens", lambda: Holder.objects.no_dereference().get(name="h").gens)
    rec("q_gen", lambda: [x.name for x in Holder.objects(gen=b)])
    rec("q_gens", lambda: [x.name for x in Holder.objects(gens=a)])
    rec("q_refs_in", lambda: [x.name for x in Holder.objects(refs__in=[a])])
    rec("q_refmap", lambda: [x.name for x in Holder.objects(refmap__k=a)])
    rec("q_glazy", lambda: [x.name for x in Holder.objects(glazy=a)])
    rec("q_lazies", lambda: [x.name for x in Holder.objects(lazies=b)])
    rec("pickle_qs", lambda: list(pickle.loads(pickle.dumps(Holder.objects(name="h")))))
    rec("pickle_doc", lambda: pickle.loads(pickle.dumps(g)))
    rec("copy_qs", lambda: list(copy.deepcopy(Holder.objects(name="i"))))
    g.refs.append(a)
    g.gens.pop(0)
    g.refmap["z"] = b
    rec("delta", lambda: g._delta())
    rec("save", lambda: g.save())
    rec("raw2", lambda: Holder.objects(name="h").as_pymongo().first())
    b.delete()
    rec("dangling", lambda: Holder.objects.get(name="h"))
    rec("dangling_gen", lambda: Holder.objects.get(name="h").gen)
    rec("dangling_gens", lambda: Holder.objects.get(name="h").gens)
    rec("dangling_refs", lambda: Holder.objects.get(name="h").refs)
    rec("dangling_sr", lambda: Holder.objects(name="h").select_related())
    rec("reload", lambda: g.reload())
    rec("sr_doc", lambda: g.select_related())


class Sig(M.Document):
    name = M.StringField()
    slug = M.StringField()
    n = M.IntField(default=0)
    tags = M.ListField(M.StringField())


def on_pre_init(sender: Any, document: Any, values: Any, **kw: Any) -> None:
    if "name" in values and values["name"] == "upper":
        values["name"] = "UPPER"


def on_post_init(sender: Any, document: Any, **kw: Any) -> None:
    if document.n == 5:
        document.tags = ["five"]


def on_pre_save(sender: Any, document: Any, **kw: Any) -> None:
    document.slug = (document.name or "").lower()


def on_pre_save_pv(sender: Any, document: Any, created: Any, **kw: Any) -> None:
    if document.name == "late":
        document.n = 99


def on_post_save(sender: Any, document: Any, created: Any, **kw: Any) -> None:
    OUT.append(
        [
            "post_save_view",
            created,
            list(getattr(document, "_changed_fields", ["<none>"])),
            norm(document._delta()),
        ]
    )


def on_pre_bulk(sender: Any, documents: Any, **kw: Any) -> None:
    for d in documents:
        d.slug = "bulk"


MUTATING = (
    (mongoengine.signals.pre_init, on_pre_init),
    (mongoengine.signals.post_init, on_post_init),
    (mongoengine.signals.pre_save, on_pre_save),
    (mongoengine.signals.pre_save_post_validation, on_pre_save_pv),
    (mongoengine.signals.post_save, on_post_save),
    (mongoengine.signals.pre_bulk_insert, on_pre_bulk),
)


def s_mut() -> None:
    """Receivers of one class, in both modes, changing values and documents."""
    # (connected only meanwhile: init receivers send every class to MongoEngine's code)
    for signal, receiver in MUTATING:
        signal.connect(receiver, sender=Sig)
    try:
        LOG.on = False
        Sig.drop_collection()
        LOG.on = True
        rec("upper", lambda: Sig(name="upper"))
        rec("five", lambda: Sig(name="x", n=5))
        rec("save", lambda: Sig(name="Hello").save())
        rec("save_late", lambda: Sig(name="late").save())
        rec("save_kwargs", lambda: Sig(name="K").save(signal_kwargs={"extra": 1}))
        rec("load", lambda: list(Sig.objects.order_by("name")))
        Sig.objects(name="K").update(set__n=5)
        rec("load5", lambda: Sig.objects.get(name="K"))
        d = Sig.objects.get(name="Hello")
        d.name = "Changed"
        rec("resave", lambda: d.save())
        rec("insert", lambda: Sig.objects.insert([Sig(name="b1"), Sig(name="upper")]))
        rec("insert_nb", lambda: Sig.objects.insert([Sig(name="b2")], load_bulk=False))
        rec("from_son", lambda: Sig._from_son({"name": "fs", "n": 5}))
        rec(
            "from_son_created_save",
            lambda: Sig._from_son({"name": "fc"}, created=True).save(),
        )
        rec("modify", lambda: Sig.objects(name="b1").modify(new=True, set__n=5))
        rec("stored", lambda: list(Sig.objects.order_by("name").as_pymongo()))
    finally:
        for signal, receiver in MUTATING:
            signal.disconnect(receiver, sender=Sig)


def c_construct() -> None:
    """Constructors' forms: keywords out of order, None, ``pk``/``id``, the
    flags ``__auto_convert`` and ``_created``, ``_cls``, extra or positional
    values, conversions; then what a save stores."""
    LOG.on = False
    NDoc.drop_collection()
    LOG.on = True
    oid = ObjectId("5f0000000000000000000001")
    rec("order", lambda: NDoc(x="x", n=3, name="a"))
    rec("none", lambda: NDoc(n=None, name="a", tags=None))
    rec("pk", lambda: NDoc(name="a", pk=oid))
    rec("id", lambda: NDoc(id=oid, name="a"))
    rec("raw", lambda: NDoc(**{"__auto_convert": False, "n": "7", "name": "a"}))
    rec("created", lambda: NDoc(_created=False, n=1, id=oid))
    rec("cls", lambda: Student(school="s", _cls="Person.Student", name="n"))
    rec("converted", lambda: Person(score=1, tags=("a",), age="4", emb={"a": 1}))
    rec("extra", lambda: NDoc(name="a", zzz=1))
    rec("stored_name", lambda: NDoc(xx="x"))
    rec("positional", lambda: NDoc("a"))
    rec("dynamic", lambda: Dyn(extra=[1], name="d"))
    saved = rec("save", lambda: NDoc(tags=["t"], x="x", n=2, name="a").save())
    rec("stored", lambda: NDoc._get_collection().find_one({"_id": saved.id}))


class MpEmb(M.EmbeddedDocument):
    v = M.IntField(min_value=0)
    tags = M.ListField(M.StringField())


class MpDyn(M.DynamicEmbeddedDocument):
    label = M.StringField()


class MpDoc(M.Document):
    slots = M.MapField(M.EmbeddedDocumentField(MpEmb))
    info = M.DictField()
    items = M.ListField(M.EmbeddedDocumentField(MpEmb))
    dyn = M.EmbeddedDocumentField(MpDyn)
    nested = M.DictField(M.ListField(M.IntField()))


def changed_and_saved(label: str, document: Any) -> None:
    """Record ``document``'s changes, its delta, its save and what is stored."""
    rec(label + "_changed", lambda: document._get_changed_fields())
    rec(label + "_delta", lambda: document._delta())
    rec(label + "_save", lambda: document.save())
    rec(label + "_stored", lambda: MpDoc.objects.as_pymongo().get())


def e_maps() -> None:
    """Maps, dicts and lists of embedded documents (dynamic ones too) changed
    in place and saved, nested validation errors, their update operators."""
    LOG.on = False
    MpDoc.drop_collection()
    LOG.on = True
    saved = rec(
        "save",
        lambda: MpDoc(
            slots={"a": MpEmb(v=1), "b": MpEmb(v=2, tags=["x"])},
            info={"k": {"deep": 1}, "l": [1]},
            items=[MpEmb(v=3), MpEmb(v=4)],
            dyn=MpDyn(label="l", extra=1),
            nested={"n": [1, 2]},
        ).save(),
    )
    g = MpDoc.objects.get()
    g.slots["a"].v = 10
    g.slots["b"].tags.append("y")
    g.slots["c"] = MpEmb(v=5)
    g.info["k"]["deep"] = 2
    g.items[1].tags = ["t"]
    changed_and_saved("first", g)
    g = MpDoc.objects.get()
    del g.slots["a"]
    g.info["new"] = None
    g.info["l"].append(2)
    g.items.append(MpEmb())
    g.dyn.extra = 5
    g.dyn.more = [MpEmb(v=1)]
    g.nested["n"].append(3)
    g.nested["m"] = []
    changed_and_saved("second", g)
    g = MpDoc.objects.get()
    del g.dyn.extra
    g.dyn.more[0].v = 2
    g.items.pop(0)
    changed_and_saved("third", g)
    g = MpDoc.objects.get()
    g.slots["b"].v = -1
    g.items[0].v = "x"
    rec("invalid_save", lambda: g.save())
    rec("invalid_validate", lambda: g.validate())

    def errors() -> Any:
        try:
            g.validate()
        except M.ValidationError as error:
            return [error.to_dict(), sorted(error.errors), error.message]
        return None

    rec("invalid_errors", errors)
    g = MpDoc.objects.get()
    g.slots = {}
    g.info = {}
    g.items = []
    g.dyn = None
    changed_and_saved("emptied", g)
    q = MpDoc.objects
    rec("set_map_key", lambda: q.update_one(set__slots__z=MpEmb(v=7)))
    rec("inc_map_key", lambda: q.update_one(inc__slots__z__v=1))
    rec("push_emb", lambda: q.update_one(push__items=MpEmb(v=8)))
    rec("push_all", lambda: q.update_one(push_all__items=[MpEmb(v=9), MpEmb(v=3)]))
    rec("pull_emb", lambda: q.update_one(pull__items__v=3))
    rec("pop_last", lambda: q.update_one(pop__items=1))
    rec("add_to_set", lambda: q.update_one(add_to_set__items=MpEmb(v=8)))
    rec("unset_map_key", lambda: q.update_one(unset__slots__z=True))
    rec("rename", lambda: q.update_one(rename__info="information"))
    rec("after_ops", lambda: q.as_pymongo().get())
    rec("loaded_after_ops", lambda: q.get())
    rec(
        "modify_new",
        lambda: q.modify(new=True, push__items=MpEmb(v=1), set__dyn=MpDyn(z=1)),
    )
    rec("modify_old", lambda: q.modify(set__dyn__label="o", pull__items__v=1))
    rec("modify_bad_path", lambda: q.modify(new=True, push__nested__n=4))
    rec("upsert_one", lambda: q(slots__q__v=1).upsert_one(set__info={"u": 1}))
    rec("count", lambda: q.count())
    g = q.get(id=saved.id)  # (not the upserted one: its id is the server's)
    rec("reload_some", lambda: g.reload("slots", "nested"))
    rec("reload_all", lambda: g.reload())
    rec("pickled", lambda: pickle.loads(pickle.dumps(g)))


class RcAuthor(M.Document):
    name = M.StringField()
    meta = {"allow_inheritance": True}


class RcGuest(RcAuthor):
    since = M.IntField()


class RcBook(M.Document):
    title = M.StringField()
    author = M.ReferenceField(RcAuthor, reverse_delete_rule=M.CASCADE)
    cached = M.CachedReferenceField(RcAuthor, fields=["name"], auto_sync=True)


class RcReview(M.Document):
    book = M.ReferenceField(RcBook, reverse_delete_rule=M.CASCADE)
    about = M.GenericLazyReferenceField()
    mentions = M.ListField(M.GenericReferenceField())


class RcShelf(M.Document):
    books = M.ListField(M.ReferenceField(RcBook, reverse_delete_rule=M.PULL))
    best = M.ReferenceField(RcBook, reverse_delete_rule=M.NULLIFY)


def stored_all() -> Any:
    """Every stored document of the rule chain's collections."""
    return {
        cls.__name__: list(cls.objects.order_by("id").as_pymongo())
        for cls in (RcAuthor, RcBook, RcReview, RcShelf)
    }


def f_rule_chain() -> None:
    """A cascade through two levels with PULL and NULLIFY beside it (each
    delete's signals in the signals mode), a cached reference kept in sync,
    generic and generic lazy references read, queried and loaded."""
    LOG.on = False
    for cls in (RcAuthor, RcBook, RcReview, RcShelf):
        cls.drop_collection()
    LOG.on = True
    a = rec("author", lambda: RcAuthor(name="a").save())
    g = rec("guest", lambda: RcGuest(name="g", since=1).save())
    b1 = rec("book1", lambda: RcBook(title="1", author=a, cached=a).save())
    b2 = RcBook(title="2", author=a, cached=g).save()
    b3 = RcBook(title="3", author=g, cached=g).save()
    RcReview(book=b1, about=a, mentions=[a, b2]).save()
    RcReview(book=b3, about=b3, mentions=[g]).save()
    RcShelf(books=[b1, b2, b3], best=b2).save()
    a.name = "a2"
    rec("rename_author", lambda: a.save())
    rec("cached_synced", lambda: list(RcBook.objects.order_by("title").as_pymongo()))
    rec("cached_read", lambda: RcBook.objects.get(title="1").cached)
    review = RcReview.objects.order_by("id").first()
    rec("generic_lazy", lambda: review.about)
    rec("generic_lazy_fetch", lambda: review.about.fetch())
    rec("generic_list", lambda: review.mentions)
    rec("by_generic_lazy", lambda: RcReview.objects(about=a).count())
    rec("by_generic", lambda: [r.book.title for r in RcReview.objects(mentions=g)])
    rec("select_related", lambda: RcReview.objects.order_by("id").select_related())
    rec("no_deref", lambda: RcReview.objects.no_dereference().first().mentions)
    rec("delete_author", lambda: a.delete())
    rec("after_author", stored_all)
    rec("delete_guests", lambda: RcGuest.objects.delete())
    rec("after_guests", stored_all)


class SqLine(M.EmbeddedDocument):
    number = M.SequenceField(sequence_name="lines")
    text = M.StringField()


class SqOrder(M.Document):
    number = M.SequenceField()
    code = M.SequenceField(sequence_name="codes", value_decorator="C{}".format)
    lines = M.ListField(M.EmbeddedDocumentField(SqLine))
    tags = M.ListField(M.SequenceField(sequence_name="tags"))
    meta = {"allow_inheritance": True}


class SqRush(SqOrder):
    fee = M.IntField()


def counters() -> Any:
    """The counter documents, by name."""
    return list(M.get_db()["mongoengine.counters"].find({}, sort=[("_id", 1)]))


def f_sequences() -> None:
    """Sequence fields: numbered by a save, an insert, an embedded document, a
    list's None items, a subclass; their counters read, set and reset."""
    LOG.on = False
    SqOrder.drop_collection()
    M.get_db()["mongoengine.counters"].drop()
    LOG.on = True
    first = SqOrder(lines=[SqLine(text="a")], tags=[None, None])
    rec("new", lambda: first)
    rec("read_number", lambda: first.number)
    rec("save", lambda: first.save())
    rec("stored", lambda: SqOrder.objects.as_pymongo().get())
    rec("counters", counters)
    rec("insert", lambda: SqOrder.objects.insert([SqOrder(), SqRush(fee=1)]))
    rec("insert_one", lambda: SqOrder.objects.insert(SqOrder(), load_bulk=False))
    rec("given", lambda: SqOrder(number=100, code="X").save())
    rec("next", lambda: SqOrder.number.get_next_value())
    rec("set_next", lambda: SqOrder.number.set_next_value(50))
    rec("after_set", lambda: SqOrder(lines=[SqLine(), SqLine(number=7)]).save())
    rec("create", lambda: SqRush.objects.create(fee=2))
    rec("update_push", lambda: SqOrder.objects(number=1).update(push__lines=SqLine()))
    rec("all", lambda: list(SqOrder.objects.order_by("number").as_pymongo()))
    rec("loaded", lambda: list(SqOrder.objects.order_by("number")))
    rec("counters_after", counters)
    rec("reset", lambda: SqOrder.code.set_next_value(0))
    rec("after_reset", lambda: SqOrder().save().code)
    rec("delete_all", lambda: SqOrder.objects.delete())
    rec("counters_end", counters)


class HyShape(M.Document):
    name = M.StringField()
    meta = {"allow_inheritance": True, "indexes": ["name"]}


class HyPolygon(HyShape):
    sides = M.IntField()


class HySquare(HyPolygon):
    side = M.FloatField()


class HyCircle(HyShape):
    radius = M.FloatField(db_field="r")


class HyCanvas(M.Document):
    shapes = M.ListField(M.ReferenceField(HyShape))
    main = M.ReferenceField(HyShape)


def f_hierarchy() -> None:
    """Three levels of subclasses in one collection: what each class's
    queryset finds, projects, counts, updates and deletes, documents stored
    under an unknown or a parent's ``_cls``, references to the base class."""
    LOG.on = False
    HyShape.drop_collection()
    HyCanvas.drop_collection()
    LOG.on = True
    shapes = [
        HyShape(name="s").save(),
        HyPolygon(name="p", sides=5).save(),
        HySquare(name="q", sides=4, side=2.0).save(),
        HyCircle(name="c", radius=1.5).save(),
    ]
    rec("all", lambda: list(HyShape.objects.order_by("name")))
    rec("polygons", lambda: list(HyPolygon.objects.order_by("name")))
    rec("no_sub", lambda: list(HyPolygon.objects.no_sub_classes()))
    rec("by_sub_field", lambda: list(HyShape.objects(sides=4)))
    rec("only_sub_field", lambda: list(HyPolygon.objects.only("side").order_by("name")))
    rec("exclude", lambda: list(HyShape.objects.exclude("name").order_by("name")))
    ordered = HyPolygon.objects.order_by("name")
    rec("values", lambda: list(ordered.values_list("name", "side")))
    rec("distinct_cls", lambda: sorted(HyShape.objects.distinct("_cls")))
    rec("get_many", lambda: HyPolygon.objects.get())
    rec("get_missing", lambda: HySquare.objects.get(name="p"))
    rec("in_bulk", lambda: HyShape.objects.in_bulk([x.pk for x in shapes]))
    rec("modify_sub", lambda: HyShape.objects(name="q").modify(new=True, inc__sides=1))
    rec("update_sub", lambda: HyPolygon.objects.update(set__sides=6))
    rec("update_wrong_class", lambda: HyCircle.objects.update(set__sides=6))
    rec("reload", lambda: shapes[2].reload())
    canvas = HyCanvas(shapes=shapes, main=shapes[3]).save()
    rec("canvas", lambda: HyCanvas.objects.get().shapes)
    rec("canvas_main", lambda: HyCanvas.objects.get().main)
    rec("canvas_related", lambda: HyCanvas.objects.select_related())
    collection = HyShape._get_collection()
    LOG.on = False
    collection.insert_one({"_cls": "HyShape.HyGone", "name": "gone"})
    collection.insert_one({"_cls": "HyShape.HyPolygon", "name": "bare"})
    LOG.on = True
    rec("unknown_cls", lambda: list(HyShape.objects.order_by("name")))
    rec("bare", lambda: HyPolygon.objects.get(name="bare"))
    rec("count_each", lambda: [c.objects.count() for c in (HyShape, HyPolygon)])
    rec("delete_sub", lambda: HySquare.objects.delete())
    rec("delete_left", lambda: list(HyShape.objects(name__ne="gone").as_pymongo()))
    rec("canvas_after", lambda: HyCanvas.objects.get(pk=canvas.pk).shapes)


def many_people(count: int) -> None:
    """``count`` people named by number, stored quietly."""
    LOG.on = False
    Person.drop_collection()
    Person._get_collection().insert_many(
        [{"_cls": "Person", "name": f"n{i:03}", "age": i} for i in range(count)]
    )
    LOG.on = True


def q_cache() -> None:
    """The result cache: iterations interrupted and resumed over its chunks,
    lengths before iterations, slices and indexes of slices, clones taken
    mid-iteration, no_cache, a load failing inside a chunk."""
    many_people(250)
    qs = Person.objects.order_by("name")
    it = iter(qs)
    rec("first_two", lambda: [next(it).name, next(it).name])
    rec("list_while_iterating", lambda: [p.name for p in qs][-1])
    rec("resumed", lambda: [next(it).name for _ in range(3)])
    rec("rest", lambda: len(list(it)))
    qs = Person.objects.order_by("name")
    rec("len_first", lambda: len(qs))
    rec("iter_after_len", lambda: [p.age for p in qs][::50])
    rec("index_cached", lambda: qs[120].name)
    qs = Person.objects.order_by("name")
    it = iter(qs)
    rec("partial", lambda: [next(it).name for _ in range(150)][-1])
    rec("clone_mid", lambda: [p.name for p in qs.clone()][:2])
    rec("index_after_partial", lambda: (qs[10].name, qs[200].name))
    rec("len_after_partial", lambda: len(qs))
    qs = Person.objects.order_by("name")
    rec("slice_slice", lambda: [p.name for p in qs[10:40][5:8]])
    rec("slice_index", lambda: qs[10:40][3].name)
    rec("slice_neg_stop", lambda: qs[5:2])
    rec("slice_then_len", lambda: (lambda s: (len(s), s.count(True), len(s)))(qs[3:9]))
    rec("skip_limit_idx", lambda: qs.skip(5).limit(3)[1].name)
    nc = Person.objects.order_by("name").no_cache()
    rec("no_cache_twice", lambda: (len(list(nc)), len(list(nc))))
    rec("no_cache_len", lambda: len(nc))
    rec("no_cache_idx", lambda: nc[7].name)
    rec("cache_then_no_cache", lambda: qs.no_cache())
    rec("batch_then_iter", lambda: [p.name for p in qs.batch_size(40)][::60])
    rec(
        "scalar_partial",
        lambda: (lambda i: [next(i) for _ in range(3)])(
            iter(Person.objects.order_by("name").limit(9).scalar("age", "name"))
        ),  # (no cursor left open: pymongo's thread would kill it at any time)
    )
    rec(
        "values_list_one",
        lambda: Person.objects.order_by("-age").values_list("age")[:3],
    )
    LOG.on = False
    Person._get_collection().insert_one({"_cls": "Person", "name": "n120x", "nope": 1})
    LOG.on = True
    qs = Person.objects.order_by("name")
    rec("bad_in_chunk", lambda: list(qs))
    rec("bad_cache_len", lambda: len(qs._result_cache or []))
    rec("bad_again", lambda: len(list(qs)))
    rec("bad_after", lambda: [p.name for p in qs._result_cache][-2:])
    rec("bad_first", lambda: Person.objects(name="n120x").first())
    rec(
        "bad_in_bulk",
        lambda: len(Person.objects.in_bulk(list(Person.objects.scalar("id")))),
    )


class Strict(M.Document):
    id = M.IntField(primary_key=True)
    name = M.StringField()
    emb = M.EmbeddedDocumentField(Emb)
    embs = M.ListField(M.EmbeddedDocumentField(Emb))
    meta = {"strict": True}


class Loose(M.Document):
    id = M.IntField(primary_key=True)
    name = M.StringField()
    emb = M.EmbeddedDocumentField(Emb)
    meta = {"strict": False, "collection": "strict"}


class LooseEmb(M.EmbeddedDocument):
    a = M.IntField()
    meta = {"strict": False}


class LooseHolder(M.Document):
    id = M.IntField(primary_key=True)
    emb = M.EmbeddedDocumentField(LooseEmb)
    embs = M.ListField(M.EmbeddedDocumentField(LooseEmb))
    meta = {"collection": "strict_holder"}


def d_strict() -> None:
    """Unknown keys in the database under strict and loose documents and
    embedded documents, every read path; saves of what was loaded."""
    LOG.on = False
    coll = Strict._get_collection()
    coll.drop()
    M.get_db()["strict_holder"].drop()
    coll.insert_one({"_id": 1, "name": "top", "zz": 1})
    coll.insert_one({"_id": 2, "name": "emb", "emb": {"a": 1, "qq": 2}})
    coll.insert_one({"_id": 3, "name": "embs", "embs": [{"a": 1}, {"a": 2, "qq": 3}]})
    coll.insert_one({"_id": 4, "name": "emb_cls", "emb": {"_cls": "Emb", "a": 1}})
    M.get_db()["strict_holder"].insert_one(
        {"_id": 1, "emb": {"a": 1, "qq": 2}, "embs": [{"qq": 1, "a": 3}]}
    )
    LOG.on = True
    for n in (1, 2, 3, 4):
        rec(f"strict_get{n}", lambda n=n: Strict.objects.get(pk=n))
        rec(f"strict_only{n}", lambda n=n: Strict.objects.only("name").get(pk=n))
        rec(
            f"strict_scalar{n}", lambda n=n: Strict.objects(pk=n).scalar("name").first()
        )
        rec(f"loose_get{n}", lambda n=n: Loose.objects.get(pk=n))
    rec("loose_list", lambda: list(Loose.objects.order_by("id")))
    loaded = Loose.objects.get(pk=1)
    loaded.name = "changed"
    rec("loose_save", lambda: loaded.save())
    rec("loose_stored", lambda: Loose.objects.as_pymongo().get(pk=1))
    rec("loose_emb", lambda: LooseHolder.objects.get())
    h = LooseHolder.objects.get()
    h.emb.a = 5
    rec("loose_emb_delta", lambda: h._delta())
    rec("loose_emb_save", lambda: h.save())
    rec("loose_emb_built", lambda: LooseEmb(a=9, other=1))
    h.embs[0] = LooseEmb(a=9)
    rec("loose_emb_save2", lambda: h.save())
    rec("loose_emb_stored", lambda: LooseHolder.objects.as_pymongo().get())
    rec("strict_build_unknown", lambda: Strict(name="x", zz=1))
    rec("strict_from_son", lambda: Strict._from_son({"_id": 9, "zz": 1}))


class RawAll(M.Document):
    key = M.StringField(primary_key=True)
    i = M.IntField()
    f = M.FloatField()
    s = M.StringField()
    b = M.BooleanField()
    d = M.DecimalField(precision=2)
    d3 = M.DecimalField(precision=3, rounding="ROUND_DOWN")
    ds = M.DecimalField(force_string=True, precision=1)
    dt = M.DateTimeField()
    dd = M.DateField()
    cdt = M.ComplexDateTimeField()
    u = M.UUIDField()
    ub = M.UUIDField(binary=True)
    e = M.EnumField(Color)
    lg = M.LongField()
    li = M.ListField(M.IntField())
    sl = M.SortedListField(M.IntField())
    mp = M.MapField(M.IntField())
    oid = M.ObjectIdField()
    ref = M.ReferenceField(Author)
    refd = M.ReferenceField(Author, dbref=True)
    gen = M.GenericReferenceField()
    geo = M.GeoPointField()
    pt = M.PointField()
    bn = M.BinaryField()
    emb = M.EmbeddedDocumentField(Emb)
    anyf = M.DynamicField()
    meta = {"collection": "raw_all"}


RAW_VALUES: dict = {
    "i": ["5", 5.7, None, True],
    "f": [3, "2.5", None],
    "s": [7, b"by"],
    "b": [1, 0, "x", None],
    "d": [1.005, "2.345", 3, "nan", None],
    "d3": [1.23999, "9.9999"],
    "ds": ["1.25", 2.35, 7],
    "dt": ["2020-01-02T03:04:05", "2020-01-02", 1577934245, "bad"],
    "dd": [datetime.datetime(2020, 1, 2, 3, 4), "2020-05-06"],
    "cdt": ["2020,01,02,03,04,05,000006", "bad", datetime.datetime(2020, 1, 1)],
    "u": ["00000000-0000-0000-0000-000000000001", uuid.UUID(int=3), "zz"],
    "ub": [uuid.UUID(int=2), "00000000-0000-0000-0000-000000000004"],
    "e": ["r", "b", "zz"],
    "lg": [5.0, "6"],
    "li": [["1", 2.0, None], [], "abc"],
    "sl": [[3, 1, 2]],
    "mp": [{"a": "1", "b": 2.5}],
    "oid": ["5f0000000000000000000001", 12],
    "ref": [
        "5f0000000000000000000001",
        DBRef("author", ObjectId("5f0000000000000000000001")),
        {"_ref": DBRef("author", ObjectId("5f0000000000000000000001"))},
    ],
    "refd": [ObjectId("5f0000000000000000000001")],
    "gen": [
        DBRef("author", ObjectId("5f0000000000000000000001")),
        {
            "_cls": "Author",
            "_ref": DBRef("author", ObjectId("5f0000000000000000000001")),
        },
        {"_cls": "Nope", "_ref": DBRef("author", ObjectId("5f0000000000000000000001"))},
    ],
    "geo": [[1, 2], (1.5, 2)],
    "pt": [[1, 2], {"type": "Point", "coordinates": [3, 4]}],
    "bn": ["text", b"\x00"],
    "emb": [{"a": "7", "b": 5}, {"_cls": "Emb", "a": 1}, "notadict", None],
    "anyf": [
        {"_cls": "Emb", "a": 1},
        [{"_cls": "Emb", "a": 2}, 3],
        DBRef("author", ObjectId("5f0000000000000000000001")),
        {
            "_ref": DBRef("author", ObjectId("5f0000000000000000000001")),
            "_cls": "Author",
        },
    ],
}


def f_raw_values() -> None:
    """Values of the wrong type stored under each field kind, read through
    every path (list, get, only, in_bulk, scalar, values_list, reload), then
    changed and saved."""
    LOG.on = False
    RawAll.drop_collection()
    Author.drop_collection()
    Author(id=ObjectId("5f0000000000000000000001"), name="A").save()
    coll = RawAll._get_collection()
    docs = []
    for field, values in RAW_VALUES.items():
        for n, value in enumerate(values):
            docs.append({"_id": f"{field}{n}", field: value})
    coll.insert_many(docs)
    LOG.on = True
    for son in docs:
        field, pk = next(k for k in son if k != "_id"), son["_id"]
        found = RawAll.objects(pk=pk)
        got = rec(pk + " get", found.get)
        rec(pk + " read", lambda got=got, field=field: getattr(got, field))
        rec(pk + " only", lambda found=found, field=field: found.only(field).get())
        rec(pk + " scalar", lambda found=found, field=field: list(found.scalar(field)))
        rec(
            pk + " vlist",
            lambda found=found, field=field: found.values_list(field, "id"),
        )
        rec(pk + " bulk", lambda pk=pk: list(RawAll.objects.in_bulk([pk]).values()))
        rec(pk + " validate", lambda got=got: got and got.validate())
        rec(pk + " delta", lambda got=got: got and got._delta())
        rec(pk + " save", lambda got=got: got and got.save())
        if got is not None:
            rec(pk + " reload", lambda got=got, field=field: got.reload(field))
    rec("all", lambda: len(list(RawAll.objects.order_by("id"))))
    rec("select_related", lambda: len(RawAll.objects.order_by("id").select_related()))
    rec("stored", lambda: list(RawAll.objects.order_by("id").as_pymongo()))


def d_partial() -> None:
    """Documents loaded with only/exclude: flags and changes, fields read,
    changed, saved (what the update sends), reloaded; eq and hash of new ones."""
    seed()
    p = rec("only", lambda: Person.objects.only("name", "emb.a").get(name="p2"))
    rec(
        "only_flags",
        lambda: (
            p._initialised,
            p._created,
            p._changed_fields,
            sorted(p._fields_ordered),
            p._loaded_fields,
        ),
    )
    rec("only_unloaded", lambda: (p.age, p.tags, p.embs, p.emb))
    p.age = 7
    p.emb.b = "new"
    rec("only_changed", lambda: p._get_changed_fields())
    rec("only_save", lambda: p.save())
    rec("only_stored", lambda: Person.objects.as_pymongo().get(name="p2"))
    rec("only_reload", lambda: p.reload())
    e = Person.objects.exclude("tags", "embs").get(name="p3")
    e.tags = ["only"]
    e.embs.append(Emb(a=1))
    rec("exclude_changed", lambda: e._get_changed_fields())
    rec("exclude_save", lambda: e.save())
    rec("exclude_stored", lambda: Person.objects.as_pymongo().get(name="p3"))
    r = Person.objects.get(name="p4")
    Person.objects(name="p4").update(set__age=40, set__tags=["u"], unset__emb=1)
    r.score = 9.0
    rec("reload_some", lambda: r.reload("age", "emb"))
    rec("reload_some_changed", lambda: r._get_changed_fields())
    rec("reload_some_save", lambda: r.save())
    rec("reload_stored", lambda: Person.objects.as_pymongo().get(name="p4"))
    rec("reload_sub", lambda: Student.objects.get().reload("school"))
    rec("reload_emb_field", lambda: r.reload("emb.a"))
    a, b = Person(name="x"), Person(name="x")
    rec("eq_new", lambda: (a == b, a == a, a != b, a == None))  # noqa: E711
    rec("hash_new", lambda: (hash(a) == hash(a), len({a, b})))
    saved = Person.objects.get(name="p1")
    rec(
        "eq_saved",
        lambda: (
            saved == Person.objects.get(name="p1"),
            len({saved, Person.objects.get(name="p1")}),
            saved == Student.objects.get(),
        ),
    )
    rec("emb_eq", lambda: (Emb(a=1) == Emb(a=1), Emb(a=1) == Emb(a=2)))
    emb_owner = Person.objects.get(name="p5")
    rec(
        "emb_instance",
        lambda: (
            emb_owner.emb._instance is emb_owner,
            emb_owner.embs[1]._instance is emb_owner,
            emb_owner.embs._instance is emb_owner,
            emb_owner.tags._instance is emb_owner,
            emb_owner.embs._name,
            emb_owner.tags._name,
        ),
    )
    rec("validate_noclean", lambda: Post(title="clean").validate(clean=False))
    rec("to_json_partial", lambda: Person.objects.only("name").get(name="p0").to_json())
    rec("from_json_partial", lambda: Person.from_json('{"name": "j", "zz": 1}'))
    rec(
        "from_json_sub",
        lambda: Person.from_json('{"_cls": "Person.Student", "school": "q"}'),
    )
    rec("dyn_order", lambda: Dyn(z=1, name="n", a=2, m=[1]))
    rec("dyn_order_saved", lambda: Dyn(z=1, name="n", a=2).save())
    rec("dyn_loaded_order", lambda: list(Dyn.objects.order_by("id")))


class TzDoc(M.Document):
    when = M.DateTimeField()
    cwhen = M.ComplexDateTimeField()
    day = M.DateField()
    meta = {"db_alias": "tz"}


def d_tz() -> None:
    """Dates stored and read on a tz_aware alias."""
    M.connect(
        db=M.get_db().name,
        alias="tz",
        host=os.environ["MONGODB_URI"],
        tz_aware=True,
        uuidRepresentation="standard",
        event_listeners=[LOG],
    )
    LOG.on = False
    TzDoc.drop_collection()
    LOG.on = True
    aware = datetime.datetime(
        2020, 1, 2, 3, 4, 5, 6000, tzinfo=datetime.timezone(datetime.timedelta(hours=3))
    )
    naive = datetime.datetime(2020, 1, 2, 3, 4, 5, 6000)
    rec("save_aware", lambda: TzDoc(when=aware, cwhen=aware, day=aware).save())
    rec("save_naive", lambda: TzDoc(when=naive, cwhen=naive, day=naive.date()).save())
    rec("save_str", lambda: TzDoc(when="2020-03-04 05:06:07").save())
    rec(
        "list",
        lambda: [
            (d.when, d.when and d.when.tzinfo, d.cwhen, d.day)
            for d in TzDoc.objects.order_by("id")
        ],
    )
    rec("get", lambda: TzDoc.objects.order_by("id").first())
    rec("scalar", lambda: list(TzDoc.objects.order_by("id").scalar("when")))
    rec("query", lambda: TzDoc.objects(when__gte=naive).count())
    rec("stored", lambda: list(TzDoc.objects.order_by("id").as_pymongo()))
    M.disconnect("tz")


class WAll(M.Document):
    i = M.IntField(min_value=0, max_value=10**12)
    f = M.FloatField()
    s = M.StringField(max_length=5, regex="^[a-z0-9]*$")
    b = M.BooleanField()
    d = M.DecimalField(precision=2, min_value=0)
    ds = M.DecimalField(force_string=True, precision=1)
    dt = M.DateTimeField()
    dd = M.DateField()
    cdt = M.ComplexDateTimeField()
    u = M.UUIDField()
    e = M.EnumField(Color)
    lg = M.LongField()
    li = M.ListField(M.IntField())
    sl = M.SortedListField(M.StringField())
    mp = M.MapField(M.FloatField())
    dc = M.DictField()
    oid = M.ObjectIdField()
    ref = M.ReferenceField(Author)
    refs = M.ListField(M.ReferenceField(Author))
    emb = M.EmbeddedDocumentField(Emb)
    embs = M.ListField(M.EmbeddedDocumentField(Emb))
    bn = M.BinaryField(max_bytes=3)
    url = M.URLField()
    em = M.EmailField()
    nn = M.StringField(null=True)
    req = M.StringField(required=True, default="r")
    ch = M.IntField(choices=[1, 2])
    meta = {"collection": "w_all"}


def w_values_given() -> dict:
    """Odd values for each field of WAll, new ones at each call (an embedded
    document given to two documents would link to the one built last)."""
    return {
        "i": ["5", 5.7, True, -1, 10**13, "x", None],
        "f": ["2.5", 3, float("inf"), "x", Decimal("1.5")],
        "s": [7, "ABC", "abcdef", b"ab", ""],
        "b": ["x", 0, 1, "", None],
        "d": [1.005, "2.345", 3, "x", -1, Decimal("NaN"), 1e20],
        "ds": [2.35, "7", Decimal("1.25")],
        "dt": [
            "2020-01-02T03:04:05",
            "2020-01-02",
            1577934245,
            "bad",
            datetime.date(2020, 1, 2),
        ],
        "dd": [datetime.datetime(2020, 1, 2, 3, 4), "2020-05-06", "bad"],
        "cdt": ["2020,01,02,03,04,05,000006", "bad", datetime.date(2020, 1, 1)],
        "u": ["00000000-0000-0000-0000-000000000001", "zz", 5],
        "e": ["r", "zz", Color.BLUE],
        "lg": [5.0, "6", 2**70],
        "li": [("1", 2.0), [None], "abc", {1: 2}, [True]],
        "sl": [["b", "a", "c"], ("z", "y"), ["a", 1]],
        "mp": [{"a": "1", "b": 2}, {1: 2.0}, [1]],
        "dc": [{"a": {"$b": 1}}, {"a.b": 1}, {1: 2}, SON([("z", 1), ("a", 2)]), []],
        "oid": ["5f0000000000000000000001", 12, "zz"],
        "ref": [
            ObjectId("5f0000000000000000000001"),
            "5f0000000000000000000001",
            DBRef("author", ObjectId("5f0000000000000000000001")),
            Author(name="unsaved"),
            Emb(a=1),
        ],
        "refs": [[ObjectId("5f0000000000000000000001")], [Author(name="u")], ["x"]],
        "emb": [
            {"a": "7", "b": 5},
            {"a": 1, "zz": 2},
            Emb(a="x"),
            "notadoc",
            Student(),
        ],
        "embs": [[{"a": 1}], [Emb(a=1), None], (Emb(a=2),), [Emb(b=3)]],
        "bn": ["text", b"\x00\x01\x02\x03", bytearray(b"ab")],
        "url": ["http://x", "nope", "ftp://a.b/c"],
        "em": ["a@b.cc", "no", "a@localhost"],
        "nn": [None, ""],
        "req": [None, ""],
        "ch": [3, "1", 1.0],
    }


def odd_values(cls: Any, values: Any) -> None:
    """Each value of ``values()`` (new ones at each call) given to its field of
    ``cls`` by the constructor, by assignment, an insert, an update and a
    query: the documents built, validated, saved and what is stored."""
    for field, given in values().items():
        for n in range(len(given)):
            label = f"{field}{n}"
            value = lambda f=field, n=n: values()[f][n]  # noqa: E731
            built = rec(label + " built", lambda f=field, v=value: cls(**{f: v()}))
            rec(label + " validate", lambda d=built: d and d.validate())
            saved = rec(label + " save", lambda d=built: d and d.save())
            if saved is not None:
                rec(
                    label + " stored",
                    lambda d=saved: cls.objects.as_pymongo().get(pk=d.pk),
                )
            later = rec(label + " first", lambda: cls.objects.first()) or cls()
            rec(label + " set", lambda d=later, f=field, v=value: setattr(d, f, v()))
            rec(label + " set_doc", lambda d=later: d)
            rec(label + " set_delta", lambda d=later: d._delta())
            rec(label + " set_save", lambda d=later: d.save())
            rec(
                label + " insert",
                lambda f=field, v=value: cls.objects.insert([cls(**{f: v()})]),
            )
            rec(
                label + " update",
                lambda f=field, v=value: cls.objects.limit(1).update(
                    **{"set__" + f: v()}
                ),
            )
            rec(
                label + " query",
                lambda f=field, v=value: cls.objects(**{f: v()}).count(),
            )
    rec("all", lambda: list(cls.objects.order_by("id").as_pymongo()))


def w_values() -> None:
    """Odd values given to each field kind, by the constructor and by
    assignment: the document built, validated, saved and what is stored."""
    LOG.on = False
    WAll.drop_collection()
    Author.drop_collection()
    Author(id=ObjectId("5f0000000000000000000001"), name="A").save()
    LOG.on = True
    odd_values(WAll, w_values_given)


def is_even(value: Any) -> None:
    """A field's ``validation``: refuses odd numbers."""
    if value % 2:
        raise M.ValidationError("odd")


class WEmbReq(M.EmbeddedDocument):
    need = M.StringField(required=True)
    n = M.IntField(min_value=1)


class WMore(M.Document):
    key = M.StringField(primary_key=True, min_length=2, default=lambda: str(ObjectId()))
    sn = M.StringField(db_field="s_n", min_length=2, choices=[("aa", "A"), ("bb", "B")])
    ev = M.IntField(validation=is_even)
    fl = M.FloatField(min_value=0.5, max_value=2)
    lm = M.ListField(M.IntField(), max_length=2)
    el = M.EmbeddedDocumentListField(WEmbReq)
    er = M.EmbeddedDocumentField(WEmbReq)
    me = M.MapField(M.EmbeddedDocumentField(WEmbReq))
    di = M.DictField(field=M.IntField())
    rd = M.ReferenceField(Author, dbref=True)
    gr = M.GenericReferenceField(choices=[Author])
    url = M.URLField(schemes=["https"])
    em = M.EmailField(domain_whitelist=["localhost"], allow_ip_domain=True)
    pt = M.PointField()
    ln = M.LineStringField()
    gp = M.GeoPointField()
    mpt = M.MultiPointField()
    meta = {"collection": "w_more"}


def w_more_given() -> dict:
    """Odd values for WMore's fields (constraints WAll's have not)."""
    author = Author.objects.first()
    return {
        "sn": ["aa", "A", "cc", "a"],
        "ev": [2, 3, "4"],
        "fl": [0.1, 3, "1.5", 1],
        "lm": [[1, 2, 3], [1, "x"], []],
        "el": [[WEmbReq()], [{"need": "x", "n": 0}], [WEmbReq(need="y")], [1]],
        "er": [WEmbReq(n="z"), {"need": 5}],
        "di": [{"a": "1"}, {"a": "x"}, {"a": None}],
        "rd": [author, author.pk, "5f0000000000000000000001"],
        "gr": [author, Emb(a=1), {"_cls": "Author", "_ref": author.to_dbref()}, 5],
        "url": ["http://x.org", "https://x.org", "https://x"],
        "em": ["a@localhost", "a@[127.0.0.1]", "a@b", "ü@x.org"],
        "pt": [[1], [1, "x"], {"type": "Point", "coordinates": [1, 2]}, "p"],
        "ln": [[[1, 2], [3, 4]], [[1, 2]], [1, 2]],
        "gp": [[1, 2], [1, 2, 3], (200, 1), "x"],
        "mpt": [[[1, 2], [3, 4]], [[1]], {"type": "MultiPoint", "coordinates": []}],
        # (last: a short key inserted and a map holding a number stored by the
        # update fail the validation of each document read after)
        "key": ["a", "ab", 5],
        "me": [{"a": WEmbReq()}, {"b": {"need": "q"}}, {"c": 1}],
    }


def w_more() -> None:
    """Odd values given to fields with constraints: a custom primary key,
    choices with labels, validation callables, bounds, lengths, required
    fields of embedded documents, references stored as DBRefs, geo fields."""
    LOG.on = False
    WMore.drop_collection()
    Author.drop_collection()
    Author(id=ObjectId("5f0000000000000000000001"), name="A").save()
    LOG.on = True
    odd_values(WMore, w_more_given)
    rec("display", lambda: WMore(key="k", sn="bb").get_sn_display())
    rec(
        "pk_change",
        lambda: (lambda d: (setattr(d, "key", "k2"), d.save()))(WMore(key="k1").save()),
    )
    rec("pk_all", lambda: list(WMore.objects.order_by("pk").scalar("pk")))


class FdDoc(M.Document):
    d = M.Decimal128Field(min_value=0, max_value=100)
    mls = M.MultiLineStringField()
    mpg = M.MultiPolygonField()
    pg = M.PolygonField()
    meta = {"collection": "fd_doc"}


def fd_values() -> dict:
    """Odd values for FdDoc's fields (kinds no other scenario has)."""
    return {
        "d": [Decimal("1.5"), 1, 1.5, "2.5", "x", Decimal128("3"), -1, 1000, None],
        "mls": [
            [[[1, 2], [3, 4]]],
            [[1, 2]],
            "x",
            {"type": "MultiLineString", "coordinates": [[[1, 2], [3, 4]]]},
        ],
        "mpg": [[[[[0, 0], [0, 1], [1, 1], [0, 0]]]], [[[0, 0]]], [1]],
        "pg": [
            [[[0, 0], [0, 1], [1, 1], [0, 0]]],
            [[[0, 0], [0, 1], [1, 1]]],
            [[1, 2]],
        ],
    }


def f_decimal128_geo() -> None:
    """Decimal128Field (bounds, conversions, sums, updates, JSON) and the
    MultiLineString, MultiPolygon and Polygon fields given odd values."""
    LOG.on = False
    FdDoc.drop_collection()
    LOG.on = True
    odd_values(FdDoc, fd_values)
    LOG.on = False
    FdDoc.drop_collection()
    LOG.on = True
    rec("saved", lambda: [FdDoc(d=v).save().d for v in ("1.25", 2, Decimal("0.5"))])
    rec("sum", lambda: FdDoc.objects.sum("d"))
    rec("avg", lambda: FdDoc.objects.average("d"))
    rec("q_gt", lambda: FdDoc.objects(d__gt=1).count())
    rec("q_gt_dec", lambda: FdDoc.objects(d__gt=Decimal("1.3")).count())
    rec("inc", lambda: FdDoc.objects(d__lt=1).update(inc__d=Decimal("0.5")))
    rec("scalar", lambda: sorted(FdDoc.objects.scalar("d")))
    rec("distinct", lambda: sorted(map(str, FdDoc.objects.distinct("d"))))
    rec("json", lambda: FdDoc.objects.order_by("d").exclude("id").to_json())


class DbEmb(M.EmbeddedDocument):
    x = M.IntField(db_field="xx")
    r = M.ReferenceField(Author, db_field="rr")


class DbDoc(M.Document):
    name = M.StringField(db_field="nm")
    e = M.EmbeddedDocumentField(DbEmb, db_field="ee")
    es = M.ListField(M.EmbeddedDocumentField(DbEmb), db_field="ess")
    m = M.MapField(M.EmbeddedDocumentField(DbEmb), db_field="mm")
    meta = {"collection": "db_doc", "indexes": ["name", "e.x"]}


def q_db_fields() -> None:
    """Fields stored under other names (db_field), in embedded documents,
    lists and maps: read, projected, queried, updated, summed, saved by delta,
    reloaded and joined."""
    LOG.on = False
    DbDoc.drop_collection()
    Author.drop_collection()
    LOG.on = True
    a = Author(name="a").save()
    for i in range(3):
        DbDoc(
            name=f"n{i}",
            e=DbEmb(x=i, r=a),
            es=[DbEmb(x=i), DbEmb(x=i + 1, r=a)],
            m={"k": DbEmb(x=i)},
        ).save()
    qs = DbDoc.objects.order_by("-e.x")
    rec("list", lambda: list(qs))
    rec("only", lambda: list(qs.only("e.x", "name")))
    rec("exclude", lambda: list(qs.exclude("es", "m.k.x")))
    rec("scalar", lambda: list(qs.scalar("e__x", "name", "e__r")))
    rec("values", lambda: list(qs.values_list("es")))
    rec("distinct", lambda: sorted(qs.distinct("es.x")))
    rec("distinct_m", lambda: qs.distinct("m.k"))
    rec("q", lambda: list(qs(e__x__gte=1, es__x=2, m__k__x=1)))
    rec("q_r", lambda: list(qs(e__r=a).scalar("name")))
    rec("q_es_r", lambda: list(qs(es__r=a).scalar("name")))
    rec("slice", lambda: list(qs.fields(slice__es=1)))
    rec("elem", lambda: list(qs.fields(elemMatch__es={"x": 2})))
    rec("sum", lambda: qs.sum("es.x"))
    rec("avg", lambda: qs.average("e.x"))
    rec("freq", lambda: sorted(qs.item_frequencies("es.x", map_reduce=True).items()))
    rec(
        "upd",
        lambda: qs(name="n0").update(set__e__x=9, push__es=DbEmb(x=7), set__m__k__x=4),
    )
    rec("upd_pos", lambda: qs(es__x=1).update(set__es__S__x=11))
    rec("upd_pull", lambda: qs.update(pull__es__x=2))
    rec("modify", lambda: qs(name="n1").modify(new=True, inc__e__x=1))
    rec("agg", lambda: list(qs.aggregate([{"$project": {"_id": 0}}])))
    rec("stored", lambda: list(qs.exclude("id").as_pymongo()))
    d = qs.first()
    d.e.x = 100
    d.es[0].x = 200
    d.m["k"].x = 300
    d.m["new"] = DbEmb(x=1)
    rec("delta", lambda: d._delta())
    rec("save", lambda: d.save())
    rec("reload", lambda: d.reload("e"))
    rec("stored2", lambda: list(qs.exclude("id").as_pymongo()))
    rec("sr", lambda: qs.select_related())


class SrPerson(M.Document):
    name = M.StringField()
    friends = M.ListField(M.ReferenceField("SrPerson"))
    meta = {"allow_inheritance": True, "ordering": ["-name"]}


class SrKid(SrPerson):
    toy = M.StringField()


class SrOther(M.Document):
    name = M.StringField()
    meta = {"collection": "sr_person"}


class SrStrict(M.Document):
    name = M.StringField()


class SrLink(M.Document):
    name = M.StringField()
    person = M.ReferenceField(SrPerson)
    kid = M.ReferenceField(SrKid)
    other = M.ReferenceField(SrOther)
    as_dbref = M.ReferenceField(SrPerson, dbref=True)
    strict = M.ReferenceField(SrStrict)
    score = M.IntField()
    tags = M.ListField(M.StringField())
    emb = M.EmbeddedDocumentField(Emb)


class SrPlain(M.Document):
    """SrLink read without its DBRef field: only plain references."""

    name = M.StringField()
    person = M.ReferenceField(SrPerson)
    kid = M.ReferenceField(SrKid)
    other = M.ReferenceField(SrOther)
    strict = M.ReferenceField(SrStrict)
    score = M.IntField()
    tags = M.ListField(M.StringField())
    emb = M.EmbeddedDocumentField(Emb)
    meta = {"collection": "sr_link", "strict": False}


def sr_joins() -> None:
    """select_related over plain references: classes sharing a collection, a
    subclass's documents, DBRefs naming another collection, dangling ones,
    a referenced document failing to load, depths, partial reads."""
    LOG.on = False
    for cls in (SrPerson, SrStrict, SrLink):
        cls.drop_collection()
    LOG.on = True
    p = SrPerson(name="p").save()
    k = SrKid(name="k", toy="t", friends=[p]).save()
    o = SrOther(name="o").save()
    s = SrStrict(name="s").save()
    SrLink(name="a", person=k, kid=k, other=o, as_dbref=p, strict=s, score=1).save()
    SrLink(name="b", person=p, other=SrOther(id=k.id), emb=Emb(a=1)).save()
    SrLink(name="c", person=SrPerson(id=ObjectId()), tags=["x"]).save()
    LOG.on = False
    coll = SrLink._get_collection()
    coll.insert_one(
        {"name": "d", "person": DBRef("sr_strict", s.id), "as_dbref": DBRef("x", p.id)}
    )
    coll.insert_one({"name": "e", "person": p.id, "kid": DBRef("sr_person", p.id)})
    coll.insert_one({"name": "f", "person": str(p.id), "score": "7"})
    LOG.on = True
    ordered = SrLink.objects.order_by("name")
    for depth in (0, 1, 2, 3):
        rec(f"depth{depth}", lambda d=depth: ordered.select_related(max_depth=d))
    plain = SrPlain.objects.order_by("name")
    for names in ("abc", "abce", "ad", "bc", "abcdef"):
        found = plain.filter(name__in=list(names))
        rec("join_" + names, lambda found=found: found.select_related())
        rec("join2_" + names, lambda found=found: found.select_related(max_depth=2))
    rec("limit_skip", lambda: ordered.skip(1).limit(2).select_related())
    rec("only", lambda: ordered.only("person", "name").select_related())
    rec("exclude", lambda: ordered.exclude("kid").select_related())
    rec("no_deref", lambda: ordered.no_dereference().select_related())
    rec("filtered", lambda: SrLink.objects(score__gte=1).select_related())
    half = SrLink.objects.order_by("name")
    it = iter(half)
    rec("half", lambda: next(it).name)
    rec("after_half", lambda: half.select_related())
    rec("list_after", lambda: [x.name for x in half])
    rec("people", lambda: SrPerson.objects.select_related(max_depth=2))
    rec("doc", lambda: SrLink.objects.get(name="a").select_related(max_depth=2))
    LOG.on = False
    SrStrict._get_collection().update_one({}, {"$set": {"zz": 1}})
    LOG.on = True
    rec("strict_fails", lambda: ordered.select_related())
    rec("strict_read", lambda: SrLink.objects.get(name="a").strict)
    rec("bad_depth", lambda: ordered.select_related(max_depth="x"))
    rec("neg_depth", lambda: ordered.select_related(max_depth=-1))


DEFAULT_CALLS: list = []


def counted_default() -> int:
    """A default recording each call (a loader must call it as often)."""
    DEFAULT_CALLS.append(1)
    return len(DEFAULT_CALLS)


class UpperField(M.StringField):
    """A user's field: its own to_python, to_mongo and validate."""

    def to_python(self, value: Any) -> Any:
        return value.upper() if isinstance(value, str) else value

    def to_mongo(self, value: Any) -> Any:
        return value.lower() if isinstance(value, str) else value

    def validate(self, value: Any) -> None:
        if value == "BAD":
            self.error("bad value")


class DfEmb(M.EmbeddedDocument):
    n = M.IntField(default=counted_default)
    up = UpperField()
    meta = {"allow_inheritance": True}


class DfEmbSub(DfEmb):
    extra = M.ListField(M.IntField(), default=lambda: [9])


class DfDoc(M.Document):
    id = M.IntField(primary_key=True)
    n = M.IntField(default=counted_default)
    s = M.StringField(default="d")
    nl = M.StringField(default="dn", null=True)
    li = M.ListField(M.IntField(), default=lambda: [1])
    up = UpperField()
    emb = M.EmbeddedDocumentField(DfEmb, default=lambda: DfEmb(up="e"))
    embs = M.ListField(M.EmbeddedDocumentField(DfEmb))
    deep = M.ListField(M.ListField(M.EmbeddedDocumentField(DfEmb)))
    dmap = M.MapField(M.ListField(M.EmbeddedDocumentField(DfEmb)))
    gen = M.GenericEmbeddedDocumentField(choices=[DfEmb, Emb])
    x = M.IntField(db_field="y")
    y = M.IntField(db_field="x")
    items = M.IntField()  # (a name of dict's)
    meta = {"collection": "df_doc"}


def l_defaults() -> None:
    """Defaults (counted calls) of fields missing or null in the database,
    a user's field with its own conversions, embedded subclasses nested in
    lists and maps, two fields storing under each other's names."""
    LOG.on = False
    DfDoc.drop_collection()
    DEFAULT_CALLS.clear()
    coll = DfDoc._get_collection()
    coll.insert_many(
        [
            {"_id": 1},
            {"_id": 2, "n": None, "s": None, "nl": None, "li": None, "emb": None},
            {"_id": 3, "up": "abc", "emb": {"up": "q"}, "x": 1, "y": 2, "items": 3},
            {
                "_id": 4,
                "embs": [{"_cls": "DfEmb.DfEmbSub"}, {}, {"_cls": "DfEmb", "n": None}],
                "deep": [
                    [{"up": "z"}],
                    [],
                    [{"_cls": "DfEmb.DfEmbSub", "extra": None}],
                ],
                "dmap": {"k": [{"n": 5}], "j": []},
                "gen": {"_cls": "Emb", "a": 1},
            },
            {"_id": 5, "gen": {"_cls": "DfEmbSub"}, "embs": [{"_cls": "Nope"}]},
            {"_id": 6, "gen": {"a": 1}},
        ]
    )
    LOG.on = True
    for n in range(1, 7):
        found = DfDoc.objects(pk=n)
        rec(f"get{n}", found.get)
        rec(f"calls{n}", lambda: len(DEFAULT_CALLS))
        rec(f"only{n}", lambda found=found: found.only("n", "emb").get())
        rec(f"exclude{n}", lambda found=found: found.exclude("n", "li").get())
        rec(f"calls_after{n}", lambda: len(DEFAULT_CALLS))
    rec("list", lambda: list(DfDoc.objects.order_by("id")))
    rec("calls_list", lambda: len(DEFAULT_CALLS))
    rec("new", lambda: DfDoc(id=10, up="Hi", x=5, y=6))
    rec("new_save", lambda: DfDoc(id=11, up="Hi", emb=None, n=None, s=None).save())
    rec("new_bad", lambda: DfDoc(id=12, up="bad").save())
    rec("new_unknown_emb", lambda: DfDoc(n=None, emb={"up": "x", "zz": 1}))
    rec("calls_new", lambda: len(DEFAULT_CALLS))
    rec("stored", lambda: list(DfDoc.objects.order_by("id").as_pymongo()))
    rec("by_up", lambda: DfDoc.objects(up="HI").count())
    rec("swap_query", lambda: DfDoc.objects(x=1).count())
    rec("swap_order", lambda: [d.id for d in DfDoc.objects.order_by("-x", "id")])
    rec("swap_only", lambda: DfDoc.objects.only("x").get(pk=3))
    rec("swap_values", lambda: DfDoc.objects.order_by("id").values_list("x", "y"))
    got = DfDoc.objects.get(pk=3)
    got.x, got.y = got.y, got.x
    got.emb.up = "changed"
    rec("swap_delta", lambda: got._delta())
    rec("swap_save", lambda: got.save())
    rec("swap_stored", lambda: DfDoc.objects.as_pymongo().get(pk=3))
    rec("calls_end", lambda: len(DEFAULT_CALLS))


def q_insert_more() -> None:
    """Inserts: signal keywords, write concerns, documents saved before,
    given ids, a subclass, a bad document among good ones, defaults counted,
    an empty list, a generator, a duplicate in the middle."""
    LOG.on = False
    DfDoc.drop_collection()
    Person.drop_collection()
    DEFAULT_CALLS.clear()
    LOG.on = True
    rec(
        "kwargs",
        lambda: Person.objects.insert(Person(name="k"), signal_kwargs={"x": 1}),
    )
    rec("w0", lambda: Person.objects.insert([Person(name="w")], write_concern={"w": 0}))
    rec("empty", lambda: Person.objects.insert([]))
    rec("gen", lambda: Person.objects.insert(Person(name=n) for n in "ab"))
    rec("tuple", lambda: Person.objects.insert((Person(name="t"),)))
    saved = Person(name="s").save()
    rec("saved_again", lambda: Person.objects.insert([saved]))
    rec("mixed_bad", lambda: Person.objects.insert([Person(name="g"), Person(age="x")]))
    rec("counted", lambda: DfDoc.objects.insert([DfDoc(id=1), DfDoc(id=2, n=None)]))
    rec("counted_calls", lambda: len(DEFAULT_CALLS))
    rec(
        "dup_middle",
        lambda: DfDoc.objects.insert([DfDoc(id=3), DfDoc(id=1), DfDoc(id=4)]),
    )
    rec("after_dup", lambda: list(DfDoc.objects.order_by("id").scalar("id")))
    rec(
        "dup_nobulk",
        lambda: DfDoc.objects.insert([DfDoc(id=5), DfDoc(id=5)], load_bulk=False),
    )
    docs = [Person(name="o1"), Student(name="o2", school="x")]
    rec("objects_after", lambda: (Person.objects.insert(docs), docs))
    rec(
        "doc_state",
        lambda: [(d.pk is not None, d._created, d._changed_fields) for d in docs],
    )
    rec("insert_emb_doc", lambda: Person.objects.insert(Person(emb=Emb(a="bad"))))
    rec("all", lambda: list(Person.objects.order_by("name").as_pymongo()))


def d_misc() -> None:
    """Item access, to_mongo's options, slices saved back, reloads of stored
    documents that changed shape, dynamic fields deleted and set by item."""
    seed()
    p = Person.objects.get(name="p1")
    rec("getitem", lambda: (p["name"], p["embs"][0]["a"]))
    rec("getitem_bad", lambda: p["nope"])
    rec("setitem", lambda: (p.__setitem__("age", 5), p._get_changed_fields()))
    rec("setitem_bad", lambda: p.__setitem__("nope", 5))
    rec("contains", lambda: ("name" in p, "nope" in p, len(p), list(iter(p))))
    rec("to_mongo_opts", lambda: p.to_mongo(use_db_field=False, fields=["name"]))
    rec("to_dict", lambda: Person.objects.only("name").get(name="p2").to_mongo())
    sliced = Person.objects.fields(slice__tags=1, slice__embs=[1, 1]).get(name="p3")
    rec("sliced", lambda: sliced)
    sliced.tags.append("z")
    sliced.embs[0].a = 100
    rec("sliced_delta", lambda: sliced._delta())
    rec("sliced_save", lambda: sliced.save())
    rec("sliced_stored", lambda: Person.objects.as_pymongo().get(name="p3"))
    el = Person.objects.fields(elemMatch__embs={"a": 4}).get(name="p4")
    el.embs[0].b = "em"
    rec("elem_delta", lambda: el._delta())
    rec("elem_save", lambda: el.save())
    rec("elem_stored", lambda: Person.objects.as_pymongo().get(name="p4"))
    r = Person.objects.get(name="p5")
    LOG.on = False
    Person._get_collection().update_one(
        {"name": "p5"}, {"$set": {"zz": 1, "emb": {"a": 1, "qq": 2}}}
    )
    LOG.on = True
    rec("reload_unknown", lambda: r.reload())
    rec("reload_unknown_field", lambda: r.reload("name"))
    rec("after_reload", lambda: r)
    LOG.on = False
    Dyn.drop_collection()
    LOG.on = True
    d = Dyn(name="d", a=1, b=[1]).save()
    d["c"] = 3
    del d.a
    d.b = None
    rec("dyn_changes", lambda: (d._get_changed_fields(), d._delta()))
    rec("dyn_save", lambda: d.save())
    rec("dyn_stored", lambda: Dyn.objects.as_pymongo().get())
    LOG.on = False
    Dyn._get_collection().update_one({}, {"$set": {"late": {"_cls": "Emb", "a": 1}}})
    LOG.on = True
    rec("dyn_reload", lambda: d.reload())
    rec("dyn_reload_some", lambda: d.reload("late", "c"))
    rec("dyn_late_type", lambda: type(Dyn.objects.get().late).__name__)
    rec("dyn_only", lambda: Dyn.objects.only("name").get())
    rec("dyn_exclude", lambda: Dyn.objects.exclude("late").get())
    rec("dyn_values", lambda: Dyn.objects.values_list("late", "c"))
    rec("dyn_scalar_unknown", lambda: list(Dyn.objects.scalar("nope")))


def q_more() -> None:
    """in_bulk with scalar, as_pymongo, only, no_dereference; counts and
    first() after iterations; select_related of dynamic documents; sums of
    a list field; scalar of a reference; clones keeping their options."""
    seed()
    ids = list(Person.objects.order_by("name").scalar("id"))
    rec(
        "bulk_scalar",
        lambda: sorted(Person.objects.scalar("name").in_bulk(ids).values()),
    )
    rec("bulk_pymongo", lambda: len(Person.objects.as_pymongo().in_bulk(ids)))
    rec(
        "bulk_scalar_pymongo",
        lambda: sorted(
            map(str, Person.objects.scalar("age").as_pymongo().in_bulk(ids).values())
        ),
    )
    rec(
        "bulk_only",
        lambda: sorted(Person.objects.only("age").in_bulk(ids[:2]).values(), key=str),
    )
    rec("bulk_empty", lambda: Person.objects.in_bulk([]))
    qs = Person.objects.order_by("name")
    rec(
        "iter_then_count", lambda: (len(list(qs)), qs.count(), qs.first().name, len(qs))
    )
    rec("filter_after_iter", lambda: [p.name for p in qs.filter(age=1)])
    rec("clone_opts", lambda: [p.name for p in qs.limit(3).clone().skip(1)])
    rec("scalar_emb_list", lambda: list(qs.scalar("embs")[:2]))
    rec("values_list_flat", lambda: qs.values_list("emb.a")[:3])
    rec("as_pymongo_scalar", lambda: list(qs.as_pymongo().scalar("name")))
    rec("scalar_as_pymongo", lambda: list(qs.scalar("name", "emb").as_pymongo())[:2])
    rec("exclude_id", lambda: list(qs.exclude("id").only("name"))[:2])
    rec("only_id", lambda: list(qs.only("id"))[:2])
    rec("fields_zero", lambda: list(qs.fields(name=0, tags=0, embs=0))[:2])
    rec("fields_mixed", lambda: list(qs.fields(name=1, tags=0)))
    LOG.on = False
    Dyn.drop_collection()
    Author.drop_collection()
    LOG.on = True
    au = Author(name="x").save()
    Dyn(name="d", ref=au, refs=[au], m={"r": au}).save()
    rec("dyn_sr", lambda: Dyn.objects.select_related())
    rec("dyn_ref", lambda: Dyn.objects.first().ref)
    rec("dyn_refs", lambda: Dyn.objects.first().refs)
    rec("dyn_stored", lambda: Dyn.objects.as_pymongo().first())


class ScEmb(M.EmbeddedDocument):
    ref = M.ReferenceField(SrPerson)
    refs = M.ListField(M.ReferenceField(SrPerson))


class ScHolder(M.Document):
    name = M.StringField()
    gens = M.ListField(M.GenericReferenceField())
    dmap = M.DictField(M.ReferenceField(SrPerson))
    dyn = M.DictField()
    embs = M.ListField(M.EmbeddedDocumentField(ScEmb))
    emb = M.EmbeddedDocumentField(ScEmb)
    nested = M.ListField(M.ListField(M.ReferenceField(SrPerson)))
    cached = M.CachedReferenceField(SrPerson, fields=["name"], auto_sync=True)


def sr_containers() -> None:
    """select_related into lists, dicts, embedded documents and nested lists
    of references, generic ones, to each depth; cached references synced."""
    LOG.on = False
    for cls in (SrPerson, ScHolder):
        cls.drop_collection()
    LOG.on = True
    p = SrPerson(name="p").save()
    k = SrKid(name="k", friends=[p]).save()
    p.friends = [k]
    p.save()
    ScHolder(
        name="h",
        gens=[p, k],
        dmap={"a": p, "b": k},
        dyn={"x": p, "l": [k, {"y": p}]},
        embs=[ScEmb(ref=p, refs=[k])],
        emb=ScEmb(ref=k),
        nested=[[p], [k, p]],
        cached=k,
    ).save()
    ScHolder(name="i", gens=[SrPerson(id=ObjectId())], cached=p).save()
    ordered = ScHolder.objects.order_by("name")
    for depth in (0, 1, 2, 3):
        rec(f"depth{depth}", lambda d=depth: ordered.select_related(max_depth=d))
    h = ScHolder.objects.get(name="h")
    rec("lazy_reads", lambda: (h.gens, h.dmap, h.dyn, h.embs, h.emb, h.nested))
    rec("deep_read", lambda: h.embs[0].refs[0].friends[0].friends)
    rec("doc_sr", lambda: ScHolder.objects.get(name="h").select_related(max_depth=3))
    k.name = "k2"
    rec("sync_save", lambda: k.save())
    rec("cached_after", lambda: list(ordered.as_pymongo().scalar("cached")))
    rec("q_cached", lambda: [x.name for x in ScHolder.objects(cached__name="k2")])
    rec("q_emb_ref", lambda: [x.name for x in ScHolder.objects(embs__ref=p)])
    rec("q_dmap", lambda: [x.name for x in ScHolder.objects(dmap__a=p)])
    rec("q_nested", lambda: [x.name for x in ScHolder.objects(nested=[p])])
    p.delete()
    rec("dangling_read", lambda: ScHolder.objects.get(name="h").dmap)


class GeHolder(M.Document):
    id = M.IntField(primary_key=True)
    ge = M.GenericEmbeddedDocumentField()
    ges = M.ListField(M.GenericEmbeddedDocumentField())
    pets = M.MapField(M.EmbeddedDocumentField(Animal))
    lazy = M.LazyReferenceField(Author, passthrough=True)
    i = M.IntField()
    s = M.StringField()
    d = M.DecimalField()
    u = M.UUIDField(binary=False)
    ub = M.UUIDField()
    f = M.FloatField()
    meta = {"collection": "ge_holder"}


def x_bson() -> None:
    """Stored BSON types of other kinds (Decimal128, Int64, Regex, Code,
    MinKey, a UUID's binary) and generic, mapped or unknown embedded classes,
    each document read, validated and saved."""
    LOG.on = False
    GeHolder.drop_collection()
    Author.drop_collection()
    au = Author(name="a").save()
    GeHolder._get_collection().insert_many(
        [
            {
                "_id": 1,
                "ge": {"_cls": "Emb", "a": 1},
                "ges": [{"_cls": "Dog", "bark": 2}],
            },
            {
                "_id": 2,
                "pets": {
                    "x": {"_cls": "Animal.Dog", "bark": 3},
                    "y": {"name": "n"},
                },
            },
            {
                "_id": 6,
                "ges": [{"_cls": "Nope"}],
                "pets": {"z": {"_cls": "Animal.Cat"}},
            },
            {
                "_id": 3,
                "lazy": au.pk,
                "i": Int64(5),
                "s": Regex("a"),
                "d": Decimal128("1.5"),
                "f": Int64(2),
            },
            {
                "_id": 4,
                "u": Binary(uuid.UUID(int=5).bytes, 4),
                "ub": "00000000-0000-0000-0000-000000000006",
                "s": Code("x"),
                "i": MinKey(),
            },
            {
                "_id": 5,
                "lazy": DBRef("author", au.pk),
                "d": Decimal128("NaN"),
                "s": datetime.datetime(2020, 1, 1),
            },
        ]
    )
    LOG.on = True
    for n in range(1, 7):
        g = rec(f"get{n}", lambda n=n: GeHolder.objects.get(pk=n))
        rec(
            f"read{n}",
            lambda g=g: (
                g and (g.ge, g.ges, g.pets, g.lazy, g.i, g.s, g.d, g.u, g.ub, g.f)
            ),
        )
        rec(f"lazy{n}", lambda g=g: g and g.lazy and (g.lazy.name, g.lazy.pk))
        rec(f"validate{n}", lambda g=g: g and g.validate())
        rec(f"save{n}", lambda g=g: g and g.save())
    rec("list", lambda: list(GeHolder.objects.order_by("id")))
    rec("stored", lambda: list(GeHolder.objects.order_by("id").as_pymongo()))


def q_operators() -> None:
    """Each query operator: strings, numbers, lists, embedded documents and
    their paths, references, existence and types, negations, Q combinations;
    orderings by paths; update operators on embedded and list paths."""
    seed()

    def names(*q: Any, **query: Any) -> Any:
        return [p.name for p in Person.objects(*q, **query).order_by("name")]

    filters = {
        "ne": {"age__ne": 1},
        "lt_lte": {"age__lt": 2, "score__lte": 1},
        "nin": {"age__nin": [0, 9]},
        "not_in": {"age__not__in": [0, 1]},
        "not_gt": {"age__not__gt": 0},
        "mod": {"age__mod": (2, 0)},
        "all": {"tags__all": ["x", "t1"]},
        "size0": {"tags__size": 2},
        "tags_idx": {"tags__0": "t0"},
        "exists": {"score__exists": False},
        "exists_emb": {"emb__a__exists": True},
        "type": {"score__type": "double"},
        "type_num": {"age__type": 16},
        "exact": {"name__exact": "p1"},
        "iexact": {"name__iexact": "P1"},
        "contains": {"name__contains": "1"},
        "icontains": {"name__icontains": "P"},
        "startswith": {"name__startswith": "p"},
        "istartswith": {"name__istartswith": "S"},
        "endswith": {"name__endswith": "3"},
        "iendswith": {"name__iendswith": "3"},
        "wholeword": {"name__wholeword": "p2"},
        "iwholeword": {"name__iwholeword": "P2"},
        "regex": {"name__regex": "^p[0-2]$"},
        "iregex": {"name__iregex": "^P[3-4]$"},
        "not_regex": {"name__not__regex": "^p"},
        "none": {"score": None},
        "ne_none": {"school__ne": None},
        "emb_eq": {"emb": Emb(a=2)},
        "emb_dict": {"emb": {"a": 3}},
        "emb_a_in": {"emb__a__in": [1, 4]},
        "embs_a_gt": {"embs__a__gt": 4},
        "embs_b_in": {"embs__b__in": ["b1", "b2"]},
        "embs_elem": {"embs__elemMatch": {"a": 2, "b": None}},
        "embs_emb": {"embs": Emb(a=1)},
        "embs_not_size": {"embs__not__size": 2},
        "tags_in_str": {"tags__in": "t1"},
        "pk_in_str": {"pk__in": ["5f0000000000000000000001"]},
        "id_str": {"id": "5f0000000000000000000001"},
        "id_bad": {"id": "nope"},
        "age_str": {"age": "1"},
        "score_int": {"score": 1},
        "sub_field": {"school": "sch"},
        "cls": {"_cls": "Person.Student"},
        "bad_size": {"tags__size": "x"},
        "bad_mod": {"age__mod": 2},
        "in_not_list": {"age__in": 1},
        "all_emb": {"embs__all": [Emb(a=3), Emb(a=2)]},
        "match_in": {"embs__match": {"a__gt": 4}},
    }
    for label, query in filters.items():
        rec(label, lambda query=query: names(**query))
    rec("q_not_ne", lambda: names(M.Q(age__not__ne=1)))
    rec("q_nested", lambda: names((M.Q(age=0) & M.Q(tags="t0")) | M.Q(emb__a=5)))
    rec("q_and_same", lambda: names(M.Q(age__gte=1) & M.Q(age__lte=1)))
    rec("q_kw", lambda: names(M.Q(age=2), name__ne="p2"))
    rec("q_empty_and", lambda: names(M.Q() & M.Q(age=0)))
    rec("filter_twice", lambda: [p.name for p in Person.objects(age=0).filter(age=1)])
    rec(
        "filter_twice_gt",
        lambda: [p.name for p in Person.objects(age__gt=0)(age__lt=2)],
    )
    order = Person.objects.only("name")
    rec("order_emb", lambda: [p.name for p in order.order_by("-emb.a", "name")])
    rec("order_embs", lambda: [p.name for p in order.order_by("embs__a", "-name")])
    rec("order_clear", lambda: order.order_by("-name").order_by()._ordering)
    rec(
        "order_twice", lambda: [p.name for p in order.order_by("age").order_by("-name")]
    )
    rec("order_plus", lambda: [p.name for p in order.order_by("+age", "-name")])
    rec("order_bad", lambda: list(order.order_by("emb.nope")))
    updates = [
        ("inc_emb", {"name": "p0"}, {"inc__emb__a": 2}),
        ("unset_emb", {"name": "p1"}, {"unset__emb__a": True}),
        ("set_embs_idx", {"name": "p2"}, {"set__embs__1": Emb(a=70)}),
        ("set_embs_idx_a", {"name": "p2"}, {"set__embs__0__a": 71}),
        ("pull_in", {"name": "p3"}, {"pull__tags__in": ["x", "t1"]}),
        ("pull_emb_gt", {"name": "p4"}, {"pull__embs__a__gt": 4}),
        ("pull_nin", {"name": "p5"}, {"pull__tags__nin": ["x"]}),
        ("push_emb", {"name": "p0"}, {"push__embs": {"a": 9}}),
        ("add_emb", {"name": "p0"}, {"add_to_set__embs": Emb(a=9)}),
        ("add_each", {"name": "p1"}, {"add_to_set__tags": ["x", "new"]}),
        ("push_each_pos", {"name": "p1"}, {"push__tags__1": ["y", "z"]}),
        ("pop_first", {"name": "p1"}, {"pop__tags": -1}),
        ("set_str_int", {"name": "p3"}, {"set__age": "4"}),
        ("set_none", {"name": "p3"}, {"set__emb": None}),
        ("inc_str", {"name": "p4"}, {"inc__age": "x"}),
        ("set_tags_str", {"name": "p4"}, {"set__tags": "abc"}),
        ("set_sub", {"name": "s"}, {"set__school": "s2"}),
        ("set_sub_parent", {"name": "s"}, {"set__nope": 1}),
        ("rename_emb", {"name": "p5"}, {"rename__emb__a": "emb.z"}),
        ("current_date", {"name": "p5"}, {"__raw__": {"$currentDate": {"d": True}}}),
    ]
    for label, query, update in updates:
        rec(
            label,
            lambda query=query, update=update: Person.objects(**query).update(**update),
        )
    rec(
        "updated",
        lambda: list(Person.objects.order_by("name").exclude("id").as_pymongo()),
    )
    rec("sub_update", lambda: Student.objects.update(set__school="s3", upsert=True))
    rec(
        "sub_upsert",
        lambda: Student.objects(name="ns").update_one(set__age=1, upsert=True),
    )
    rec("sub_upserted", lambda: Student.objects(name="ns").as_pymongo().first())


class CsCapped(M.Document):
    n = M.IntField()
    meta = {"collection": "cs_capped", "max_documents": 3, "max_size": 4096}


class CsIndexed(M.Document):
    name = M.StringField(unique=True, sparse=True)
    code = M.StringField(unique_with="name")
    when = M.DateTimeField()
    body = M.StringField()
    n = M.IntField()
    meta = {
        "collection": "cs_indexed",
        "indexes": [
            {"fields": ["when"], "expireAfterSeconds": 3600},
            {"fields": ["n"], "partialFilterExpression": {"n": {"$gt": 1}}},
            {"fields": ["-name"], "collation": {"locale": "en", "strength": 2}},
            {"fields": ["$body"], "weights": {"body": 3}, "default_language": "none"},
            {"fields": ["#code"], "name": "hashed_code", "cls": False},
        ],
    }


class CsNoAuto(M.Document):
    name = M.StringField()
    meta = {"collection": "cs_no_auto", "auto_create_index": False, "indexes": ["name"]}


class CsSeries(M.Document):
    at = M.DateTimeField()
    meta_f = M.DictField(db_field="m")
    v = M.IntField()
    meta = {
        "collection": "cs_series",
        "timeseries": {"timeField": "at", "metaField": "m", "granularity": "hours"},
    }


def c_collections() -> None:
    """Collections made on first use: capped (and one found not capped),
    timeseries, indexes with options (TTL, partial, collation, text weights,
    hashed, unique_with), no automatic indexes; made again after a drop."""
    LOG.on = False
    for cls in (CsCapped, CsIndexed, CsNoAuto, CsSeries):
        cls.drop_collection()
    LOG.on = True
    db = M.get_db()
    rec("capped_saves", lambda: [CsCapped(n=i).save().n for i in range(5)])
    rec("capped_left", lambda: [d.n for d in CsCapped.objects.order_by("n")])
    rec("capped_opts", lambda: db["cs_capped"].options())
    rec("capped_drop", lambda: CsCapped.drop_collection())
    LOG.on = False
    db.create_collection("cs_capped")
    LOG.on = True
    rec("capped_found_plain", lambda: CsCapped(n=1).save())
    rec("capped_found_plain_qs", lambda: CsCapped.objects.count())
    LOG.on = False
    CsCapped.drop_collection()
    db.create_collection("cs_capped", capped=True, size=8192, max=3)
    CsCapped._collection = None
    LOG.on = True
    rec("capped_other_size", lambda: CsCapped(n=1).save())
    rec("indexed_save", lambda: CsIndexed(name="a", code="c", n=2, body="c d").save())
    rec("indexed_info", lambda: sorted(db["cs_indexed"].index_information().items()))
    rec("indexed_list", lambda: CsIndexed.list_indexes())
    rec("indexed_compare", lambda: CsIndexed.compare_indexes())
    rec("indexed_dup", lambda: CsIndexed(name="a", code="c").save())
    rec("indexed_dup_insert", lambda: CsIndexed.objects.insert(CsIndexed(name="a")))
    rec(
        "indexed_unique_with",
        lambda: [CsIndexed(name=n, code="x").save().name for n in ("b", "c", "b")],
    )
    rec("indexed_text", lambda: [d.name for d in CsIndexed.objects.search_text("c")])
    rec("indexed_drop", lambda: CsIndexed.drop_collection())
    rec("indexed_again", lambda: CsIndexed(name="b").save())
    rec("indexed_info2", lambda: sorted(db["cs_indexed"].index_information()))
    rec("no_auto_save", lambda: CsNoAuto(name="x").save())
    rec("no_auto_info", lambda: sorted(db["cs_no_auto"].index_information()))
    rec("no_auto_ensure", lambda: CsNoAuto.ensure_indexes())
    rec("no_auto_info2", lambda: sorted(db["cs_no_auto"].index_information()))
    rec(
        "series_save",
        lambda: CsSeries(at=datetime.datetime(2020, 1, 1), meta_f={"s": 1}, v=1).save(),
    )
    rec("series_opts", lambda: db["cs_series"].options())
    rec("series_read", lambda: list(CsSeries.objects.exclude("id")))
    rec(
        "series_insert",
        lambda: CsSeries.objects.insert(
            [CsSeries(at=datetime.datetime(2020, 1, 2), v=2)], load_bulk=False
        ),
    )
    rec("series_count", lambda: CsSeries.objects(v__gte=1).count())


class ShDoc(M.Document):
    region = M.StringField()
    name = M.StringField()
    n = M.IntField()
    meta = {"collection": "sh_doc", "shard_key": ("region",)}


class ShNested(M.Document):
    emb = M.EmbeddedDocumentField(Emb)
    name = M.StringField()
    meta = {"collection": "sh_nested", "shard_key": ("emb.a", "name")}


def d_shard() -> None:
    """Documents with shard keys (a field, an embedded path): saves, updates,
    reloads, deletes and modifies send them; changing one is refused; new
    documents given an id replace the stored one or are inserted."""
    LOG.on = False
    ShDoc.drop_collection()
    ShNested.drop_collection()
    LOG.on = True
    d = rec("new", lambda: ShDoc(region="eu", name="a").save())
    d.name = "b"
    rec("changed", lambda: d.save())
    rec("set_key", lambda: setattr(d, "region", "us"))
    rec("set_key_same", lambda: setattr(d, "region", "eu"))
    rec("after_set", lambda: d)
    rec("reload", lambda: d.reload())
    rec("reload_fields", lambda: d.reload("name"))
    rec("update", lambda: d.update(inc__n=1))
    rec("modify", lambda: d.modify(set__name="m"))
    rec("given_id_new", lambda: ShDoc(id=ObjectId(), region="us", name="g").save())
    rec("given_id_old", lambda: ShDoc(id=d.id, region="eu", name="r").save())
    rec("given_id_other_key", lambda: ShDoc(id=d.id, region="as", name="x").save())
    rec("stored", lambda: list(ShDoc.objects.order_by("name").as_pymongo()))
    loaded = ShDoc.objects.get(name="r")
    rec("loaded_set_key", lambda: setattr(loaded, "region", "zz"))
    rec("loaded_delete", lambda: loaded.delete())
    rec("new_set_key", lambda: setattr(ShDoc(region="a"), "region", "b"))
    s = rec("nested_new", lambda: ShNested(emb=Emb(a=1), name="n").save())
    s.emb.b = "x"
    rec("nested_changed", lambda: s.save())
    rec("nested_set", lambda: setattr(s, "name", "other"))
    rec("nested_emb_set", lambda: (setattr(s.emb, "a", 2), s.save()))
    rec("nested_reload", lambda: s.reload())
    rec("nested_delete", lambda: s.delete())
    rec("nested_left", lambda: list(ShNested.objects.as_pymongo()))


class GqTag(M.Document):
    name = M.StringField()
    meta = {"collection": "gq_tag"}


class GqEmb(M.EmbeddedDocument):
    k = M.IntField()
    tag = M.ReferenceField(GqTag)


class GqPlace(M.Document):
    name = M.StringField()
    body = M.StringField()
    n = M.IntField()
    loc = M.PointField()
    area = M.PolygonField()
    tags = M.ListField(M.ReferenceField(GqTag))
    main = M.ReferenceField(GqTag)
    emb = M.EmbeddedDocumentField(GqEmb)
    embs = M.ListField(M.EmbeddedDocumentField(GqEmb))
    meta = {
        "collection": "gq_place",
        "allow_inheritance": True,
        "index_cls": False,
        "indexes": [("$name", "$body"), [("loc", "2dsphere")], "n"],
    }


class GqCity(GqPlace):
    pop = M.IntField()


def gq_seed() -> list:
    """Three tags and five places (two cities), stored quietly; the tags."""
    LOG.on = False
    GqTag.drop_collection()
    GqPlace.drop_collection()
    GqPlace.ensure_indexes()
    tags = [GqTag(name=f"g{i}").save() for i in range(3)]
    for i in range(5):
        cls = GqCity if i % 2 else GqPlace
        cls(
            name=f"n{i}",
            body="red fox" if i < 3 else "blue whale fox",
            n=i % 3,
            loc=[i, i],
            tags=tags[: i % 3 + 1],
            main=tags[i % 3],
            emb=GqEmb(k=i % 2, tag=tags[i % 2]),
            embs=[GqEmb(k=i), GqEmb(k=i + 1, tag=tags[0])],
        ).save()
    LOG.on = True
    return tags


def q_aggregate() -> None:
    """aggregate() of a filter, a subclass, an ordered and sliced set, with a
    collation, hint, read preference, comment and keywords; explain()."""
    gq_seed()
    project = [{"$project": {"name": 1, "_id": 0}}]
    rec("plain", lambda: list(GqPlace.objects.aggregate(project)))
    rec("filtered", lambda: list(GqPlace.objects(n__gte=1).aggregate(project)))
    rec("sub", lambda: list(GqCity.objects.aggregate(project)))
    rec("sub_no_sub", lambda: list(GqPlace.objects.no_sub_classes().aggregate(project)))
    rec(
        "varargs",
        lambda: list(GqPlace.objects.aggregate({"$match": {"n": 1}}, *project)),
    )
    rec(
        "collation",
        lambda: list(
            GqPlace.objects(name="N1")
            .collation({"locale": "en", "strength": 1})
            .aggregate(project)
        ),
    )
    rec("hint", lambda: list(GqPlace.objects.hint("n_1").aggregate(project)))
    rec(
        "read_pref",
        lambda: list(
            GqPlace.objects.read_preference(
                pymongo.ReadPreference.PRIMARY_PREFERRED
            ).aggregate(project)
        ),
    )
    rec("comment", lambda: list(GqPlace.objects.comment("c").aggregate(project)))
    rec("max_time", lambda: list(GqPlace.objects.max_time_ms(4000).aggregate(project)))
    rec(
        "kwargs",
        lambda: list(GqPlace.objects.aggregate(project, allowDiskUse=True)),
    )
    rec(
        "ordered_skip",
        lambda: list(
            GqPlace.objects.order_by("-name").skip(1).limit(2).aggregate(project)
        ),
    )
    rec(
        "text",
        lambda: list(GqPlace.objects.search_text("whale").aggregate(project)),
    )
    rec("empty", lambda: list(GqPlace.objects(name="zz").aggregate(project)))
    rec("none", lambda: list(GqPlace.objects.none().aggregate(project)))
    rec("bad_stage", lambda: list(GqPlace.objects.aggregate([{"$nope": 1}])))
    rec("not_list", lambda: list(GqPlace.objects.aggregate("x")))
    rec("explain", lambda: sorted(GqPlace.objects(n=1).order_by("name").explain()))
    coll = GqPlace.objects.collation({"locale": "en", "strength": 1})
    rec("coll_distinct", lambda: sorted(coll(name="N1").distinct("n")))
    rec("coll_count", lambda: coll(name="N2").count())
    rec("coll_sum", lambda: coll(name="N2").sum("n"))
    rec("comment_count", lambda: GqPlace.objects.comment("x").count())
    rec("hint_distinct", lambda: sorted(GqPlace.objects.hint("n_1").distinct("n")))
    rec("disk_use", lambda: [p.name for p in GqPlace.objects.allow_disk_use(True)])
    rec(
        "read_pref_count",
        lambda: GqPlace.objects.read_preference(
            pymongo.ReadPreference.SECONDARY_PREFERRED
        ).count(),
    )
    rec("max_time_count", lambda: GqPlace.objects.max_time_ms(3000).count())


def q_distinct_freq() -> None:
    """distinct() of references, lists of references, embedded documents and
    their paths; item_frequencies of paths, normalized, with and without
    map/reduce; in_bulk, scalar and values_list of references."""
    tags = gq_seed()
    qs = GqPlace.objects
    # (the tags' ids named in their order, not in a dereference's set order)
    rec("tags", lambda: [t.id for t in tags])
    rec("d_ref", lambda: sorted(qs.distinct("main"), key=lambda t: t.name))
    rec("d_refs", lambda: sorted(qs.distinct("tags"), key=lambda t: t.name))
    rec("d_emb", lambda: qs.order_by("name").distinct("emb"))
    rec("d_emb_ref", lambda: sorted(qs.distinct("emb.tag"), key=lambda t: str(t.pk)))
    rec("d_embs_k", lambda: sorted(qs.distinct("embs.k")))
    rec("d_embs_tag", lambda: qs.distinct("embs.tag"))
    rec("d_sub", lambda: sorted(GqCity.objects.distinct("name")))
    rec("d_pk", lambda: len(qs.distinct("pk")))
    rec("d_bad", lambda: qs.distinct("nope"))
    rec("d_limited", lambda: sorted(qs.order_by("name").limit(1).distinct("n")))
    rec("d_loc", lambda: qs.order_by("name").distinct("loc")[:1])
    for mr in (False, True):
        for normalize in (False, True):
            rec(
                f"f_n_{mr}_{normalize}",
                lambda mr=mr, normalize=normalize: sorted(
                    qs.item_frequencies("n", map_reduce=mr, normalize=normalize).items()
                ),
            )
        rec(
            f"f_embs_{mr}",
            lambda mr=mr: sorted(qs.item_frequencies("embs.k", map_reduce=mr).items()),
        )
        rec(
            f"f_emb_{mr}",
            lambda mr=mr: sorted(qs.item_frequencies("emb.k", map_reduce=mr).items()),
        )
        rec(
            f"f_tags_{mr}",
            lambda mr=mr: sorted(
                map(str, qs.item_frequencies("tags", map_reduce=mr).items())
            ),
        )
        rec(
            f"f_missing_{mr}",
            lambda mr=mr: sorted(qs.item_frequencies("nope", map_reduce=mr).items()),
        )
    ids = [t.id for t in tags]
    rec("bulk_pymongo", lambda: sorted(GqTag.objects.as_pymongo().in_bulk(ids).items()))
    rec("bulk_missing", lambda: GqTag.objects.in_bulk([ObjectId()]))
    rec(
        "bulk_nodrf",
        lambda: list(
            qs.no_dereference()
            .in_bulk(list(qs.order_by("name").scalar("id"))[:1])
            .values()
        ),
    )
    rec("scalar_ref", lambda: list(qs.order_by("name").scalar("main"))[:2])
    rec("scalar_refs", lambda: list(qs.order_by("name").scalar("tags"))[:2])
    rec("scalar_emb_ref", lambda: list(qs.order_by("name").scalar("emb__tag"))[:2])
    rec("scalar_embs_tag", lambda: list(qs.order_by("name").scalar("embs__tag"))[:2])
    rec(
        "scalar_nodrf",
        lambda: list(qs.order_by("name").no_dereference().scalar("main", "emb"))[:2],
    )
    rec(
        "values_refs", lambda: list(qs.order_by("name").values_list("main", "tags"))[:2]
    )
    rec("values_emb_k", lambda: list(qs.order_by("name").values_list("emb__k", "name")))


def q_geo_text() -> None:
    """search_text ordered by the text score, with a language; geo queries on
    a PointField and a PolygonField."""
    gq_seed()
    qs = GqPlace.objects
    rec("text", lambda: [p.name for p in qs.search_text("fox").order_by("name")])
    rec(
        "text_score",
        lambda: [
            (p.name, p.get_text_score())
            for p in qs.search_text("whale fox").order_by("$text_score", "name")
        ],
    )
    rec(
        "text_score_only",
        lambda: list(
            qs.search_text("whale").order_by("$text_score", "name").only("name")
        ),
    )
    rec("text_lang", lambda: qs.search_text("fox", language="english").count())
    rec("text_twice", lambda: list(qs.search_text("fox").search_text("red")))
    rec("text_score_none", lambda: qs.order_by("name").first().get_text_score())
    rec(
        "text_scalar",
        lambda: list(qs.search_text("whale").order_by("name").scalar("name")),
    )
    rec("near", lambda: [p.name for p in qs(loc__near=[0, 0])])
    rec(
        "near_max",
        lambda: [p.name for p in qs(loc__near=[0, 0], loc__max_distance=200000)],
    )
    rec(
        "near_min_max",
        lambda: [
            p.name
            for p in qs(
                loc__near={"type": "Point", "coordinates": [0, 0]},
                loc__min_distance=1000,
                loc__max_distance=400000,
            )
        ],
    )
    rec(
        "near_count",
        lambda: qs(loc__near=[0, 0], loc__max_distance=200000).count(),
    )
    rec(
        "within_sphere",
        lambda: sorted(p.name for p in qs(loc__geo_within_sphere=[(0, 0), 0.04])),
    )
    rec(
        "within_box",
        lambda: sorted(p.name for p in qs(loc__geo_within_box=[(0.5, 0.5), (3, 3)])),
    )
    rec(
        "within_polygon",
        lambda: sorted(
            p.name
            for p in qs(loc__geo_within_polygon=[[0, 0], [0, 2.5], [2.5, 2.5], [0, 0]])
        ),
    )
    poly = {"type": "Polygon", "coordinates": [[[-1, -1], [-1, 3], [3, 3], [-1, -1]]]}
    rec("geo_within", lambda: sorted(p.name for p in qs(loc__geo_within=poly)))
    rec(
        "geo_intersects",
        lambda: sorted(p.name for p in qs(loc__geo_intersects=poly)),
    )
    rec("near_bad", lambda: list(qs(loc__near="x")))
    rec("within_center", lambda: list(qs(loc__within_distance=[(0, 0), 1])))


def q_edges() -> None:
    """array_filters, modify and upsert_one's forms; slices, indexes and
    counts; get's errors; bool and len of a set; queryset update and delete
    with the documents' signals."""
    gq_seed()
    qs = GqPlace.objects
    rec(
        "array_filters",
        lambda: qs(name="n2").update_one(
            set__embs__S__k=40, array_filters=[{"elem.k": {"$gte": 3}}]
        ),
    )
    rec(
        "array_filters_named",
        lambda: qs(name="n3").update(
            __raw__={"$set": {"embs.$[e].k": 50}}, array_filters=[{"e.k": 3}]
        ),
    )
    rec(
        "array_filters_bad",
        lambda: qs(name="n3").update(
            __raw__={"$set": {"embs.$[e].k": 50}}, array_filters=[{"x.k": 3}]
        ),
    )
    rec("after_af", lambda: list(qs.order_by("name").scalar("embs"))[2:4])
    rec(
        "modify_upsert_new_sub",
        lambda: GqCity.objects(name="c9").modify(upsert=True, new=True, set__pop=3),
    )
    rec(
        "modify_full",
        lambda: qs(name="n0").modify(new=True, full_response=True, set__n=7),
    )
    rec("modify_fields", lambda: qs(name="n0").modify(new=True, inc__n=1, fields=["n"]))
    rec("upsert_one_new", lambda: GqCity.objects(name="u1").upsert_one(set__pop=1))
    rec("upsert_one_many", lambda: qs(n__gte=0).upsert_one(set__body="b"))
    rec("update_multi_upsert", lambda: qs(name="u2").update(set__n=2, upsert=True))
    rec(
        "update_full_upsert",
        lambda: (
            qs(name="u3").update(set__n=2, upsert=True, full_result=True).raw_result
        ),
    )
    rec("first_empty", lambda: qs(name="zz").first())
    rec("first_ordered", lambda: qs.order_by("-name").first().name)
    o = qs.order_by("name")
    rec("slice", lambda: [p.name for p in o[1:3]])
    rec("slice_open", lambda: [p.name for p in o[5:]])
    rec("slice_to", lambda: [p.name for p in o[:2]])
    rec("slice_past", lambda: list(o[40:50]))
    rec("slice_empty", lambda: list(o[2:2]))
    rec("slice_neg", lambda: o[-2:])
    rec("slice_count", lambda: (o[1:3].count(), o[1:3].count(True), len(o[1:3])))
    rec("slice_slice", lambda: [p.name for p in o[1:5][1:2]])
    rec("index", lambda: o[2].name)
    rec("index_oob", lambda: o[100])
    rec("index_after_iter", lambda: (list(o), o[1].name, o[50])[1:2])
    rec("index_str", lambda: o["x"])
    rec(
        "count_ls",
        lambda: (
            qs.skip(1).limit(2).count(),
            qs.skip(1).limit(2).count(with_limit_and_skip=True),
            qs.skip(10).count(True),
            qs.limit(0).count(True),
        ),
    )
    rec("count_hint", lambda: qs.hint("n_1").count())
    rec(
        "count_coll",
        lambda: qs(name="N1").collation({"locale": "en", "strength": 2}).count(),
    )
    rec(
        "options",
        lambda: [
            p.name
            for p in qs.order_by("name")
            .max_time_ms(3000)
            .batch_size(1)
            .comment("z")
            .timeout(False)
        ],
    )
    listed = qs.order_by("name")
    rec(
        "len_after_iter",
        lambda: (len(list(listed)), len(listed), bool(listed), listed.count()),
    )
    rec("bool_empty", lambda: (bool(qs(name="zz")), len(qs(name="zz"))))
    rec("bool_after_slice", lambda: bool(qs.order_by("name")[40:]))
    rec("get_many", lambda: qs.get(n=1))
    rec("get_many_sub", lambda: GqCity.objects.get())
    rec("get_missing", lambda: GqCity.objects.get(name="n0"))
    rec("get_missing_q", lambda: qs.get(M.Q(name="a") | M.Q(name="b")))
    rec("get_missing_raw", lambda: qs(__raw__={"n": 99}).get())
    rec("doc_missing_class", lambda: GqTag.DoesNotExist.__mro__[1].__name__)
    rec("with_id_filtered", lambda: qs(name="x").with_id(ObjectId()))
    rec(
        "update_signals",
        lambda: qs(name="n1").update(set__n=5),
    )
    rec("delete_signals", lambda: GqCity.objects(name="n1").delete())
    rec("delete_none", lambda: qs(name="zz").delete())
    rec(
        "using_other",
        lambda: (
            GqCity.objects.using("other").insert(GqCity(name="o1", pop=1)),
            list(GqPlace.objects.using("other").aggregate([{"$project": {"_id": 0}}])),
            GqPlace.objects.no_sub_classes().using("other").count(),
            list(GqPlace.objects.using("other").scalar("name")),
        ),
    )
    with mongoengine.context_managers.switch_db(GqPlace, "other") as Other:
        rec("switch_db_delete", lambda: Other.objects.delete())
        rec("switch_db_after", lambda: Other.objects.count())
    rec("final", lambda: list(qs.order_by("name").as_pymongo()))


class GqRl(M.Document):
    name = M.StringField()
    n = M.IntField(default=1)
    e = M.EmbeddedDocumentField(GqEmb)
    meta = {
        "collection": "gq_rl",
        "indexes": ["-n", {"fields": ["name"], "unique": True, "sparse": True}],
    }


def d_reload_missing() -> None:
    """reload (all, some fields) of a document deleted from the database,
    of an unsaved one; index helpers; pre_save_post_validation's changed
    fields."""
    LOG.on = False
    GqRl.drop_collection()
    LOG.on = True
    d = GqRl(name="a", e=GqEmb(k=1)).save()
    GqRl.objects(pk=d.pk).delete()
    rec("reload_missing", lambda: d.reload())
    rec("reload_missing_fields", lambda: d.reload("name"))
    rec("reload_unsaved", lambda: GqRl(name="u").reload())
    rec("reload_unsaved_fields", lambda: GqRl(name="u").reload("n"))
    d2 = GqRl(name="b").save()
    d2.name = "b2"
    d2.e = GqEmb(k=2)
    rec("save_changed", lambda: d2.save())
    d2.e.k = 3
    rec("save_changed_emb", lambda: d2.save())
    rec("save_unchanged", lambda: d2.save())
    rec("reload_emb", lambda: d2.reload("e"))
    rec("reload_twice_fields", lambda: d2.reload("n", "name"))
    rec("dup", lambda: GqRl(name="b2").save())
    rec("list_indexes", lambda: GqRl.list_indexes())
    rec("compare", lambda: GqRl.compare_indexes())
    rec(
        "extra_index",
        lambda: (
            GqRl._get_collection().create_index("e.k"),
            GqRl.compare_indexes(),
        ),
    )
    rec("ensure", lambda: GqRl.ensure_indexes())
    rec("index_info", lambda: sorted(GqRl._get_collection().index_information()))
    rec("drop", lambda: GqRl.drop_collection())
    rec("compare_dropped", lambda: GqRl.compare_indexes())


def q_indexing() -> None:
    """queryset[i] of scalars, raw results, no-dereference and only() sets,
    of none() and empty slices (MongoEngine still reads), of slices, skips and
    limits; counts and first() amid a partial iteration."""
    gq_seed()
    qs = GqPlace.objects.order_by("name")
    rec("scalar_idx", lambda: qs.scalar("main")[1])
    rec("scalar2_idx", lambda: qs.scalar("main", "name")[1])
    rec("pymongo_idx", lambda: qs.as_pymongo()[1])
    rec("scalar_pymongo_idx", lambda: qs.scalar("name").as_pymongo()[1])
    rec("nodrf_idx", lambda: qs.no_dereference()[1].main)
    rec("nodrf_scalar_idx", lambda: qs.no_dereference().scalar("main")[1])
    rec("only_idx", lambda: qs.only("name")[2])
    rec("none_idx", lambda: qs.none()[0])
    rec("none_first", lambda: qs.none().first())
    rec("none_slice", lambda: list(qs.none()[0:2]))
    rec("empty_slice_idx", lambda: qs[1:1][0])
    rec("slice_idx", lambda: qs[1:3][1].name)
    rec("slice_idx_oob", lambda: qs[1:3][5])
    rec("skip_idx", lambda: qs.skip(2)[0].name)
    rec("limit_idx", lambda: qs.limit(1)[3])
    it = iter(qs)
    rec("partial", lambda: (next(it).name, next(it).name))
    rec("partial_count", lambda: (qs.count(), qs[0].name, len(qs), next(it).name))
    rec("partial_first", lambda: (qs.first().name, next(it).name))
    rec("sub_idx", lambda: GqCity.objects.order_by("name")[1])
    rec("sub_no_sub_idx", lambda: GqPlace.objects.no_sub_classes().order_by("-name")[0])
    rec("sr_then_idx", lambda: (qs.select_related(), qs[0].main)[1])


# A module half migrated: ``import mongoengine_async as me`` at its top, but
# lines such as ``from mongoengine.queryset import QuerySet`` left as they
# were: MongoEngine's own queryset class, manager and fields inside the
# package's documents, and a module not migrated referring to them.


class MxQuerySet(mongoengine.QuerySet):
    def named(self, name: str) -> Any:
        return self.filter(name=name)


class MxAuthor(M.Document):
    name = M.StringField()
    seq = mongoengine.SequenceField()
    meta = {"queryset_class": MxQuerySet, "allow_inheritance": True}

    @mongoengine.queryset_manager
    def by_name_desc(doc_cls: Any, queryset: Any) -> Any:
        return queryset.order_by("-name")


class MxGuest(MxAuthor):
    visits = M.IntField(default=0)


class MxBook(M.Document):
    title = M.StringField()
    author = mongoengine.ReferenceField(MxAuthor, reverse_delete_rule=M.CASCADE)
    coauthors = mongoengine.ListField(
        mongoengine.ReferenceField(MxAuthor, reverse_delete_rule=M.PULL)
    )
    by_role = mongoengine.MapField(mongoengine.ReferenceField(MxAuthor))
    lazy = mongoengine.LazyReferenceField(MxAuthor)
    anything = mongoengine.GenericReferenceField()
    extra = mongoengine.DictField()
    tags = mongoengine.ListField(M.StringField())


class MxShelf(mongoengine.Document):
    """Of a module not migrated: plain MongoEngine, referring to ours."""

    books = mongoengine.ListField(
        mongoengine.ReferenceField(MxBook, reverse_delete_rule=M.PULL)
    )
    owner = mongoengine.ReferenceField(MxAuthor, reverse_delete_rule=M.NULLIFY)


def mx_stored() -> Any:
    """Every stored document of the half-migrated module's collections."""
    return {
        cls.__name__: list(cls._get_collection().find().sort("_id"))
        for cls in (MxAuthor, MxBook, MxShelf)
    }


def on_guest_init(sender: Any, document: Any, **kw: Any) -> None:
    """A post_init receiver of one subclass alone."""
    OUT.append(["guest post_init", sender.__name__, document.name])


def m_mixed_imports() -> None:
    """A half-migrated module: MongoEngine's QuerySet subclass as the
    queryset_class, its queryset_manager, its container, reference and
    sequence fields in the package's documents, a plain MongoEngine document
    referring to them (delete rules both ways), a post_init receiver of one
    subclass while its base's queryset loads both."""
    LOG.on = False
    for cls in (MxAuthor, MxBook, MxShelf):
        cls.drop_collection()
    M.get_db()["mongoengine.counters"].delete_many({"_id": "mx_author.seq"})
    LOG.on = True
    rec("qs_class", lambda: [type(MxAuthor.objects).__name__, type(MxGuest.objects)])
    a = rec("a", lambda: MxAuthor(name="ann").save())
    b = rec("b", lambda: MxGuest(name="bob", visits=2).save())
    rec("named", lambda: list(MxAuthor.objects.named("ann")))
    rec("manager", lambda: [x.name for x in MxAuthor.by_name_desc])
    mongoengine.signals.post_init.connect(on_guest_init, sender=MxGuest)
    try:
        rec("loaded_mixed", lambda: list(MxAuthor.objects.order_by("name")))
        rec("guest_get", lambda: MxAuthor.objects.named("bob").get())
    finally:
        mongoengine.signals.post_init.disconnect(on_guest_init, sender=MxGuest)
    book = rec(
        "book",
        lambda: MxBook(
            title="t",
            author=a,
            coauthors=[a, b],
            by_role={"ed": b},
            lazy=a,
            anything=b,
            extra={"k": [1]},
            tags=["x"],
        ).save(),
    )
    g = rec("load", lambda: MxBook.objects.get())
    rec(
        "deref",
        lambda: [
            g.author,
            g.coauthors,
            g.by_role["ed"],
            g.lazy.fetch(),
            g.anything,
        ],
    )
    g.coauthors.remove(g.coauthors[0])
    g.tags.append("y")
    g.extra["k"].append(2)
    rec("changed", lambda: [g._get_changed_fields(), g._delta()])
    rec("save", lambda: g.save())
    rec("sr", lambda: MxBook.objects.select_related())
    rec("no_deref", lambda: MxBook.objects.no_dereference().get())
    rec("values", lambda: list(MxBook.objects.values_list("author", "coauthors")))
    rec("in_bulk", lambda: MxAuthor.objects.in_bulk([a.pk, b.pk]))
    rec("shelf", lambda: MxShelf(books=[book], owner=b).save())
    rec("shelf_load", lambda: MxShelf.objects.get())
    rec("shelf_books", lambda: MxShelf.objects.get().books)
    rec("shelf_sr", lambda: MxShelf.objects.select_related())
    rec("delete_b", lambda: b.delete())
    rec("after_b", mx_stored)
    rec("delete_a", lambda: MxAuthor.objects(name="ann").delete())
    rec("after_a", mx_stored)


# A user's own field classes, built on the package's (its containers and
# embedded documents' field) and on MongoEngine's.


class UfSortedTags(M.ListField):
    """Read sorted, stored sorted without duplicates."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(M.StringField(), **kwargs)

    def to_python(self, value: Any) -> Any:
        value = super().to_python(value)
        return sorted(value) if isinstance(value, list) else value

    def to_mongo(self, value: Any, *args: Any, **kwargs: Any) -> Any:
        stored = super().to_mongo(value, *args, **kwargs)
        return sorted(set(stored)) if isinstance(stored, list) else stored


class UfNote(M.EmbeddedDocument):
    text = M.StringField()
    stars = M.IntField(default=0)


class UfLegacyNoteField(M.EmbeddedDocumentField):
    """Reads a note stored as a bare string (an older schema) too."""

    def to_python(self, value: Any) -> Any:
        return super().to_python({"text": value} if isinstance(value, str) else value)


class UfTrimmed(M.StringField):
    """Trims what is set (a ``__set__`` of its own)."""

    def __set__(self, instance: Any, value: Any) -> None:
        super().__set__(instance, value.strip() if isinstance(value, str) else value)


class UfUpper(M.StringField):
    """Reads upper case (a ``__get__`` of its own)."""

    def __get__(self, instance: Any, owner: Any) -> Any:
        value = super().__get__(instance, owner)
        if instance is not None and isinstance(value, str):
            return value.upper()
        return value


class UfJSONText(M.StringField):
    """JSON data stored as a string."""

    def to_python(self, value: Any) -> Any:
        if isinstance(value, str):
            try:
                return json.loads(value)
            except ValueError:
                return value
        return value

    def to_mongo(self, value: Any) -> Any:
        return value if isinstance(value, str) else json.dumps(value, sort_keys=True)

    def validate(self, value: Any) -> None:
        pass


class UfBare(mongoengine.base.BaseField):
    """A field with none of its own methods."""


class UfDoc(M.Document):
    tags = UfSortedTags()
    note = UfLegacyNoteField(UfNote)
    notes = M.ListField(UfLegacyNoteField(UfNote))
    by_key = M.MapField(UfLegacyNoteField(UfNote))
    name = UfTrimmed()
    shout = UfUpper()
    payload = UfJSONText()
    bare = UfBare()
    bares = M.ListField(UfBare())


def uf_stored() -> Any:
    """UfDoc's stored documents."""
    return list(UfDoc._get_collection().find({}, {"_id": 0}).sort("_id"))


def u_user_fields() -> None:
    """A user's field classes (a container's and an embedded field's
    to_python/to_mongo, a __set__, a __get__, JSON in a string, a bare
    BaseField) read from stored documents of an older schema, changed in
    place, saved, queried and created."""
    LOG.on = False
    UfDoc.drop_collection()
    UfDoc._get_collection().insert_many(
        [
            {
                "tags": ["b", "a", "b"],
                "note": "legacy",
                "notes": ["l1", {"text": "l2"}],
                "by_key": {"k": "lk"},
                "name": "  spaced  ",
                "shout": "quiet",
                "payload": '{"a": [1, 2]}',
                "bare": {"x": 1},
                "bares": [1, "two", {"3": 3}],
            },
            {"tags": "no list", "payload": "no json", "bare": [1]},
        ]
    )
    LOG.on = True
    first, second = rec("load", lambda: list(UfDoc.objects.order_by("_id")))
    rec("read", lambda: [first.tags, first.name, first.shout, first.payload])
    first.tags.append("a")
    first.notes[1].stars = 2
    first.name = "  again  "
    first.shout = "loud"
    first.payload = {**first.payload, "b": 1}
    first.bare["x"] = 2
    first.bares.append(None)
    rec("changed", lambda: [first._get_changed_fields(), first._delta()])
    rec("save", lambda: first.save())
    first.note.stars = 1  # (stored as strings: MongoEngine's $set fails)
    first.by_key["k"].stars = 3
    rec("save_legacy_note", lambda: first.save())
    second.bare.append(2)
    rec("second_delta", lambda: second._delta())
    rec("second_save", lambda: second.save())
    new = UfDoc(
        tags=["z", "y", "z"],
        note=UfNote(text="n"),
        name=" new ",
        shout="s",
        payload={"b": 1},
        bare=(1, 2),
        bares=[{"q": 1}],
    )
    rec("new", lambda: new)
    rec("new_save", lambda: new.save())
    rec("stored", uf_stored)
    rec("reloaded", lambda: list(UfDoc.objects.order_by("_id")))
    rec(
        "queried",
        lambda: [
            UfDoc.objects(shout="loud").count(),
            UfDoc.objects(name="again").count(),
        ],
    )
    rec("scalar", lambda: list(UfDoc.objects.order_by("_id").scalar("tags", "shout")))
    rec("only", lambda: UfDoc.objects.only("name", "note").order_by("_id").first())


class EdSettings(M.EmbeddedDocument):
    theme = M.StringField(default="light")
    flags = M.ListField(M.StringField(), default=lambda: ["f"])
    inner = M.EmbeddedDocumentField(UfNote, default=lambda: UfNote(text="inner"))


class EdShape(M.EmbeddedDocument):
    name = M.StringField()
    meta = {"allow_inheritance": True}


class EdCircle(EdShape):
    radius = M.FloatField()


class EdProfile(M.Document):
    name = M.StringField()
    settings = M.EmbeddedDocumentField(EdSettings, default=EdSettings)
    notes = M.ListField(
        M.EmbeddedDocumentField(UfNote), default=lambda: [UfNote(text="d")]
    )
    prefs = M.DictField(default=lambda: {"a": {"b": 1}})
    shape = M.EmbeddedDocumentField(EdShape, default=lambda: EdCircle(radius=1.0))
    counts = M.MapField(M.IntField(), default=lambda: {"x": 1})


def d_embedded_defaults() -> None:
    """Defaults that are embedded documents (a class, nested defaults, a
    subclass) or containers, of documents stored without them (or null):
    changed in place and saved (MongoEngine's $set of their paths stores a
    list's item under a key "0", a subclass without its _cls), read again."""
    LOG.on = False
    EdProfile.drop_collection()
    EdProfile._get_collection().insert_many(
        [
            {"name": "bare"},
            {"name": "nulls", "settings": None, "notes": None, "counts": None},
            {"name": "partial", "settings": {"theme": "dark"}},
        ]
    )
    LOG.on = True
    for name in ("bare", "nulls", "partial"):
        g = rec("load_" + name, lambda name=name: EdProfile.objects.get(name=name))
        g.settings.theme = "blue"
        g.settings.flags.append("g")
        g.settings.inner.stars = 2
        g.notes[0].stars = 3
        g.prefs["a"]["b"] = 2
        g.shape.radius = 2.0
        g.counts["x"] += 1
        rec(name + "_changes", lambda g=g: [g._get_changed_fields(), g._delta()])
        rec(name + "_save", lambda g=g: g.save())
    rec("stored", lambda: list(EdProfile._get_collection().find().sort("_id")))
    rec("read_again", lambda: list(EdProfile.objects.order_by("_id")))
    new = EdProfile(name="new")
    new.settings.inner.text = "x"
    rec("new_save", lambda: new.save())
    new.settings.flags.append("again")
    rec("new_changes", lambda: [new._get_changed_fields(), new._delta()])
    rec("new_save_again", lambda: new.save())
    only = rec("only", lambda: EdProfile.objects.only("name").get(name="new"))
    only.settings.theme = "only"
    rec("only_changes", lambda: [only._get_changed_fields(), only._delta()])
    rec("only_save", lambda: only.save())
    rec("stored_new", lambda: EdProfile._get_collection().find_one({"name": "new"}))


SCENARIOS = [
    q_projections,
    q_values,
    q_options,
    q_updates,
    q_insert,
    d_fields,
    d_reload_update,
    d_delta,
    d_dynamic,
    d_nulls,
    d_switch,
    d_nodes,
    d_files,
    nulls,
    nulls_partial,
    f_types,
    f_delete_rules,
    f_inheritance,
    e_lists,
    r_refs,
    s_mut,
    c_construct,
    e_maps,
    f_rule_chain,
    f_sequences,
    f_hierarchy,
    q_cache,
    d_strict,
    f_raw_values,
    d_partial,
    d_tz,
    w_values,
    sr_joins,
    l_defaults,
    q_insert_more,
    d_misc,
    q_more,
    sr_containers,
    x_bson,
    q_aggregate,
    q_distinct_freq,
    q_geo_text,
    q_edges,
    d_reload_missing,
    w_more,
    q_operators,
    c_collections,
    d_shard,
    f_decimal128_geo,
    q_db_fields,
    q_indexing,
    m_mixed_imports,
    u_user_fields,
    d_embedded_defaults,
]

if __name__ == "__main__":
    run(SCENARIOS)
