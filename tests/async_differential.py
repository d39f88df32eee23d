"""Scenarios run once through plain MongoEngine's sync API, once through this
package's async API on a connect_async() alias, each in a process of its own
(tests/test_async_differential.py compares the two transcripts).

``python async_differential.py LIBRARY MODE``, as ``sync_differential.py``
(whose recording, normalising and running this reuses): with ``mongoengine``
each I/O call of a scenario, written ``io(target, "save", ...)``, is
MongoEngine's ``target.save(...)``; with ``mongoengine_async`` it is
``await target.async_save(...)``, run on one event loop (the spellings of
docs/migrating.md's table). What the async API does differently on purpose is
normalised where it shows, citing the doc; the rest must match.
"""

import asyncio
import enum
import functools
import random
import sys
from collections.abc import Callable
from types import SimpleNamespace
from typing import Any

from bson import ObjectId

import sync_differential as harness
from differential_fuzz import Fuzz, field_kinds, sync_io
from sync_differential import LOG, rec

LIBRARY, MODE = sys.argv[1:3] if __name__ == "__main__" else ("mongoengine", "quiet")
ASYNC = LIBRARY == "mongoengine_async"
M: Any = harness.importlib.import_module(LIBRARY)
LOOP = asyncio.new_event_loop()


def run_async(awaitable: Any) -> Any:
    """``awaitable`` run to its end on the scenario's one event loop."""
    return LOOP.run_until_complete(awaitable)


async def aggregate(queryset: Any, pipeline: list, **kwargs: Any) -> list:
    """The results of ``async_aggregate``, through the cursor it gives."""
    cursor = await queryset.async_aggregate(pipeline, **kwargs)
    return await cursor.to_list()


async def iterate(queryset: Any) -> list:
    """The documents ``async for`` gives (MongoEngine's: ``for``)."""
    return [document async for document in queryset]


ASYNC_SPELLING: dict[str, Callable[..., Any]] = {
    "aggregate": aggregate,
    "iterate": iterate,
}


def io(target: Any, method: str, /, *args: Any, **kwargs: Any) -> Any:
    """MongoEngine's ``target.method(...)``, or this package's async
    counterpart (``await target.async_method(...)``) run on the loop."""
    if ASYNC:
        spelled = ASYNC_SPELLING.get(method)
        call = spelled or (lambda t, *a, **k: getattr(t, "async_" + method)(*a, **k))
        return run_async(call(target, *args, **kwargs))
    return sync_io(target, method, *args, **kwargs)


def deref(document: Any, field: str) -> Any:
    """A reference read: MongoEngine loads it on the read; here it reads as a
    proxy that is awaited (docs/migrating.md: "References never do hidden I/O").
    A missing target raises the target's ``DoesNotExist`` naming the field
    (docs/references.md: "raises the target's `DoesNotExist`, naming the
    collection and id"), here given as MongoEngine's, less that name."""
    value = getattr(document, field)
    if not ASYNC or value is None:
        return value
    try:
        return run_async(value.fetch())
    except M.DoesNotExist as error:
        named = f" (reference '{field}')"
        assert str(error).endswith(named) and type(error) is not M.DoesNotExist
        raise M.DoesNotExist(str(error).removesuffix(named)) from None


def comparable(event: Any) -> Any:
    """``event`` with the options of its command that the async API sets
    otherwise left out, both ways: ``batchSize`` and ``singleBatch`` of a read
    (docs/architecture.md: "`async_to_list` asks for the whole result in one
    reply"; docs/querysets.md: `async_first`'s "limit: 1, singleBatch: true"),
    the projection on ``_id`` of the ``findAndModify`` a save of a new
    document with its own id sends (its reply is unread, both ways), and the
    ``_id`` of ``async_sum``'s and ``async_average``'s ``$group`` (one group,
    whose key nobody reads: MongoEngine names it, this package sends null)."""
    command = {
        key: value
        for key, value in event.command.items()
        if key not in ("batchSize", "singleBatch")
    }
    if event.command_name == "findAndModify" and command.get("fields") == {"_id": True}:
        del command["fields"]
    if event.command_name == "aggregate" and "$group" in command["pipeline"][-1]:
        last = command["pipeline"][-1]["$group"]
        command["pipeline"] = [
            *command["pipeline"][:-1],
            {"$group": {**last, "_id": 0}},
        ]
    return SimpleNamespace(command_name=event.command_name, command=command)


def record_comparable(event: Any) -> None:
    """The harness's record of ``event``, as ``comparable`` gives it."""
    harness.Log.started(LOG, comparable(event))


class AsyncAdapter:
    """What ``harness.run`` calls on its module ``M``, on async aliases."""

    @staticmethod
    def connect(**kwargs: Any) -> Any:
        return run_async(M.connect_async(**kwargs))

    @staticmethod
    def get_db() -> Any:
        return AsyncAdapter

    class client:  # (what ``get_db().client.drop_database(name)`` reaches)
        @staticmethod
        def drop_database(name: str) -> None:
            run_async(M.get_async_connection().drop_database(name))


# -- scenarios ---------------------------------------------------------------


class XEmb(M.EmbeddedDocument):
    a = M.IntField()
    b = M.StringField()


class XPerson(M.Document):
    name = M.StringField(max_length=20)
    age = M.IntField(min_value=0)
    tags = M.ListField(M.StringField())
    embs = M.ListField(M.EmbeddedDocumentField(XEmb))
    emb = M.EmbeddedDocumentField(XEmb)
    score = M.FloatField()
    meta = {"allow_inheritance": True, "indexes": ["name"]}


class XStudent(XPerson):
    school = M.StringField()


def quietly(step: Callable[[], Any], kept: Callable[[list], bool] = bool) -> Any:
    """``step()`` with no command recorded, nor what ``kept`` refuses."""
    length = len(harness.OUT)
    LOG.on = False
    try:
        return step()
    finally:
        LOG.on = True
        recorded = [s for s in harness.OUT[length:] if "command" not in s[0]]
        harness.OUT[length:] = [step for step in recorded if kept(step)]


def deleting(step: Callable[[], Any]) -> Any:
    """``step()``, a delete with rules, its commands and the documents' loads
    unrecorded, its other signals sorted. Its commands are its own, in a
    transaction, a bounded number (docs/delete_rules.md), loading no document
    one by one: no init signal; a CASCADE sends its signals level by level
    (docs/migrating.md, "Cascaded deletes send their signals level by level")."""
    length = len(harness.OUT)
    try:
        return quietly(step, lambda s: s[1] not in ("pre_init", "post_init"))
    finally:
        harness.OUT[length:] = sorted(harness.OUT[length:], key=harness.json.dumps)


def unrecorded(step: Callable[[], Any]) -> Any:
    """``step()`` with nothing it sends or receives recorded (its result is)."""
    length = len(harness.OUT)
    try:
        return step()
    finally:
        del harness.OUT[length:]


def seed() -> None:
    """Five people and a student, stored quietly."""

    def store() -> None:
        io(XPerson, "drop_collection")
        for i in range(5):
            person = XPerson(
                name=f"p{i}",
                age=i % 3,
                tags=[f"t{i % 2}", "x"],
                embs=[XEmb(a=i, b=f"b{i}"), XEmb(a=i + 1)],
                emb=XEmb(a=i),
                score=i / 2,
            )
            io(person, "save")
        io(XStudent(name="s", age=9, school="sch", tags=["y"]), "save")

    quietly(store)


def a_reads() -> None:
    """get() errors, first, count, distinct, aggregate, in_bulk, scalar,
    values_list, sums, with_id, exists, projections."""
    seed()
    people = XPerson.objects
    rec("get", lambda: io(people(name="p1"), "get"))
    rec("get_kw", lambda: io(people, "get", name="p2"))
    rec("get_two", lambda: io(people, "get", age=1))
    rec("get_none", lambda: io(people, "get", age=77))
    rec("get_sub_none", lambda: io(XStudent.objects, "get", name="p1"))
    rec("get_bad_field", lambda: io(people, "get", nope=1))
    rec("first", lambda: io(people.order_by("-name"), "first"))
    rec("first_none", lambda: io(people(name="zz"), "first"))
    rec("list", lambda: io(people.order_by("name"), "to_list"))
    rec("only", lambda: io(people.only("name", "embs.a").order_by("name"), "to_list"))
    rec("exclude", lambda: io(people.exclude("embs", "tags")[1:3], "to_list"))
    rec("count", lambda: io(people, "count"))
    rec("count_sub", lambda: io(XStudent.objects, "count"))
    rec("count_ls", lambda: io(people.skip(2).limit(2), "count", True))
    # (async_exists reads less than bool(queryset), which asks first():
    # docs/querysets.md, "MongoEngine's `bool(queryset)` asks `first()`")
    rec(
        "exists",
        lambda: unrecorded(
            lambda: (io(people(age=1), "exists"), io(people(age=7), "exists"))
        ),
    )
    rec("distinct", lambda: sorted(io(people, "distinct", "age")))
    rec("distinct_tags", lambda: sorted(io(people, "distinct", "tags")))
    rec("distinct_emb_a", lambda: sorted(io(people, "distinct", "embs.a")))
    rec("distinct_emb", lambda: io(people.order_by("name"), "distinct", "emb"))
    rec("scalar", lambda: io(people.order_by("name"), "scalar", "name"))
    rec("scalar_emb", lambda: io(people.order_by("name"), "scalar", "emb"))
    rec("scalar2", lambda: io(people.order_by("name"), "scalar", "name", "age"))
    rec("values_list", lambda: io(people.order_by("name"), "values_list", "name"))
    rec("sum", lambda: io(people, "sum", "age"))
    rec("sum_embs", lambda: io(people, "sum", "embs.a"))
    rec("avg", lambda: io(people, "average", "score"))
    rec("avg_empty", lambda: io(people(name="zz"), "average", "score"))
    pipeline = [{"$project": {"name": 1, "_id": 0}}]
    rec("agg", lambda: io(people(age__gte=1).order_by("name"), "aggregate", pipeline))
    rec(
        "agg_limit",
        lambda: io(people.order_by("-name").skip(1).limit(2), "aggregate", pipeline),
    )
    ids = io(people.order_by("name"), "scalar", "id")
    rec(
        "in_bulk",
        lambda: sorted(io(people, "in_bulk", ids[:3]).values(), key=lambda d: d.name),
    )
    rec("in_bulk_none", lambda: io(people, "in_bulk", [ObjectId()]))
    rec("with_id", lambda: io(people, "with_id", ids[0]))
    rec("with_id_none", lambda: io(people, "with_id", ObjectId()))
    rec("as_pymongo", lambda: io(people.only("name").as_pymongo()[:2], "to_list"))
    rec("bad_op", lambda: io(people(age__nope=1), "to_list"))
    rec("bad_order", lambda: io(people.order_by("nope"), "to_list"))
    rec("emb_match", lambda: io(people(embs__match={"a": 3, "b": "b3"}), "to_list"))


def a_updates() -> None:
    """Queryset updates with each operator, update_one, upsert_one, modify,
    deletes, and what they stored."""
    seed()
    people = XPerson.objects
    rec("set", lambda: io(people(name="p0"), "update", set__age=10, inc__score=1))
    rec(
        "inc_many",
        lambda: io(people(age=1), "update", inc__age=1, full_result=True).raw_result,
    )
    one = people(name="p0")
    rec("push", lambda: io(one, "update_one", push__tags="n"))
    rec("push_all", lambda: io(one, "update_one", push_all__tags=["a", "b"]))
    rec("push_pos", lambda: io(one, "update_one", push__tags__0="first"))
    rec("pull", lambda: io(one, "update_one", pull__tags="x"))
    rec("pull_all", lambda: io(one, "update_one", pull_all__tags=["a", "b"]))
    rec("add_to_set", lambda: io(one, "update_one", add_to_set__tags=["z", "z"]))
    rec("pop", lambda: io(one, "update_one", pop__tags=1))
    rec("unset", lambda: io(one, "update_one", unset__score=1))
    rec("min_max", lambda: io(people(name="p1"), "update_one", max__age=50))
    rec("mul", lambda: io(people(name="p2"), "update_one", mul__age=3))
    rec("rename", lambda: io(people(name="p2"), "update_one", rename__score="sc"))
    rec("pull_emb", lambda: io(people(name="p3"), "update_one", pull__embs__a=4))
    rec(
        "pull_emb_obj",
        lambda: io(people(name="p3"), "update_one", pull__embs=XEmb(a=3, b="b3")),
    )
    rec(
        "set_pos",
        lambda: io(people(name="p4", embs__a=4), "update_one", set__embs__S__b="pos"),
    )
    rec("set_emb", lambda: io(people(name="p4"), "update_one", set__emb=XEmb(a=99)))
    rec("set_emb_a", lambda: io(people(name="p4"), "update_one", set__emb__a=98))
    # An upsert's _cls goes in $setOnInsert, not $set (docs/querysets.md: "gives
    # the document it inserts the queryset's class in `_cls` (`$setOnInsert`)"):
    # what they return and store is compared, not the updates sent.
    rec(
        "set_on_insert",
        lambda: quietly(
            lambda: io(
                people(name="new"), "update_one", set_on_insert__age=3, upsert=True
            )
        ),
    )
    rec(
        "upsert_one",
        lambda: quietly(lambda: io(people(name="up"), "upsert_one", set__age=7)),
    )
    rec(
        "upsert_one_again",
        lambda: quietly(lambda: io(people(name="up"), "upsert_one", inc__age=1)),
    )
    rec("update_bad_op", lambda: io(people(name="p4"), "update", nope__age=1))
    rec("update_bad_field", lambda: io(people(name="p4"), "update", set__nope=1))
    rec("update_empty", lambda: io(people(name="p4"), "update"))
    rec("update_invalid", lambda: io(people(name="p4"), "update", set__age="x"))
    rec("update_raw", lambda: io(one, "update", __raw__={"$set": {"tags": ["r"]}}))
    rec("modify_new", lambda: io(people(name="p1"), "modify", new=True, inc__age=5))
    rec("modify_old", lambda: io(people(name="p1"), "modify", inc__age=5))
    rec("modify_none", lambda: io(people(name="zz"), "modify", set__age=1))
    rec("modify_remove", lambda: io(people(name="p1"), "modify", remove=True))
    rec(
        "modify_upsert",
        lambda: io(people(name="mu"), "modify", upsert=True, new=True, set__age=1),
    )
    rec(
        "modify_only",
        lambda: io(people(name="p3").only("name"), "modify", new=True, set__age=33),
    )
    rec("modify_sub", lambda: io(XStudent.objects, "modify", new=True, set__age=8))
    rec("stored", lambda: io(people.order_by("name").as_pymongo(), "to_list"))
    rec("delete", lambda: io(people(age__gte=30), "delete"))
    rec("delete_limit", lambda: io(people.order_by("name").limit(1), "delete"))
    rec("delete_skip", lambda: io(people.order_by("name").skip(3), "delete"))
    rec("stored2", lambda: io(people.order_by("name").as_pymongo(), "to_list"))


def a_documents() -> None:
    """A document's save (new, changed, conditions, errors), reload, modify,
    update and delete; embedded documents and list changes saved."""
    # (the collection's indexes made first: the async API makes them as the
    # save begins, docs/documents.md "created once, on the first async use")
    quietly(lambda: (io(XPerson, "drop_collection"), io(XPerson.objects, "count")))
    ann = XPerson(name="ann", age=3, tags=["a"], embs=[XEmb(a=1)], emb=XEmb(a=2))
    rec("save_new", lambda: io(ann, "save"))
    rec("after_new", lambda: ann)
    ann.age = 4
    ann.tags.append("b")
    ann.embs[0].b = "eb"
    ann.emb.a = 5
    rec("changed", lambda: ann._get_changed_fields())
    rec("save_changed", lambda: io(ann, "save"))
    rec("after_changed", lambda: ann)
    ann.tags.pop(0)
    ann.embs.append(XEmb(a=9))
    del ann.emb
    ann.score = None
    rec("save_list_ops", lambda: io(ann, "save"))
    ann.tags.remove("b")
    ann.embs[1] = XEmb(a=10, b="r")
    rec("save_list_ops2", lambda: io(ann, "save"))
    rec("save_unchanged", lambda: io(ann, "save"))
    ann.name = "anne"
    rec("save_cond_bad", lambda: io(ann, "save", save_condition={"age": 99}))
    rec("save_cond", lambda: io(ann, "save", save_condition={"age": 4}))
    rec("invalid", lambda: io(XPerson(name="x" * 30, age=-1), "save"))
    rec("invalid_emb", lambda: io(XPerson(embs=[XEmb(a="q")]), "save"))
    rec("no_validate", lambda: io(XPerson(name="x" * 30), "save", validate=False))
    twin = XPerson(id=ann.id, name="twin")
    rec("force_insert_dup", lambda: io(twin, "save", force_insert=True))
    rec("own_id", lambda: io(XPerson(id=ObjectId(), name="own"), "save"))
    rec("wc0", lambda: io(XPerson(name="w0"), "save", write_concern={"w": 0}))
    ann.age = 40
    rec("reload_fields", lambda: io(ann, "reload", "name"))
    rec("after_reload_fields", lambda: ann)
    rec("reload", lambda: io(ann, "reload"))
    rec("reload_bad", lambda: io(ann, "reload", "nope"))
    rec("modify", lambda: io(ann, "modify", set__age=6, push__tags="m"))
    rec("after_modify", lambda: ann)
    rec("modify_miss", lambda: io(ann, "modify", query={"age": 0}, set__age=7))
    rec("update", lambda: io(ann, "update", inc__age=1, pull__tags="m"))
    rec("after_update", lambda: ann)
    rec("update_unsaved", lambda: io(XPerson(name="u"), "update", set__age=1))
    rec("update_bad", lambda: io(ann, "update", nope__age=1))
    rec("delete", lambda: io(ann, "delete"))
    rec("after_delete", lambda: ann)
    rec("reload_deleted", lambda: io(ann, "reload"))
    rec("modify_deleted", lambda: io(ann, "modify", set__age=1))
    ann.age = 41
    rec("save_deleted", lambda: io(ann, "save"))
    rec("stored", lambda: io(XPerson.objects.order_by("name").as_pymongo(), "to_list"))


def a_inserts() -> None:
    """insert one, many, unloaded, duplicate, wrong class; create."""
    seed()
    people = XPerson.objects
    rec("insert_one", lambda: io(people, "insert", XPerson(name="i1")))
    rec(
        "insert_many",
        lambda: io(people, "insert", [XPerson(name="i2"), XStudent(name="i3")]),
    )
    rec(
        "insert_nobulk",
        lambda: io(people, "insert", [XPerson(name="i4")], load_bulk=False),
    )
    same = ObjectId("5f0000000000000000000001")
    rec(
        "insert_dup",
        lambda: io(
            people, "insert", [XPerson(id=same, name="d"), XPerson(id=same, name="d")]
        ),
    )
    rec("insert_dup_one", lambda: io(people, "insert", XPerson(id=same, name="d")))
    rec("insert_wrong", lambda: io(people, "insert", [XEmb(a=1)]))
    rec("insert_other", lambda: io(XStudent.objects, "insert", [XPerson(name="x")]))
    rec("insert_invalid", lambda: io(people, "insert", [XPerson(age=-3)]))
    rec("create", lambda: io(people, "create", name="c", age=3))
    rec("create_bad", lambda: io(people, "create", name="c", age="x"))
    rec("stored", lambda: io(people(name__startswith="i").as_pymongo(), "to_list"))


class XOwner(M.Document):
    name = M.StringField(required=True)
    meta = {"allow_inheritance": True}


class XVip(XOwner):
    level = M.IntField()


class XThing(M.Document):
    name = M.StringField()
    owner = M.ReferenceField(XOwner, reverse_delete_rule=M.NULLIFY)
    owners = M.ListField(M.ReferenceField(XOwner, reverse_delete_rule=M.PULL))


class XBox(M.Document):
    name = M.StringField()
    owner = M.ReferenceField(XOwner, reverse_delete_rule=M.CASCADE)


class XLock(M.Document):
    owner = M.ReferenceField(XOwner, reverse_delete_rule=M.DENY)


class XInner(M.Document):
    box = M.ReferenceField(XBox, reverse_delete_rule=M.CASCADE)


RULED = (XOwner, XThing, XBox, XLock, XInner)


def stored_rules() -> Any:
    """What every class of the delete-rule scenario stores."""
    return [io(c.objects.order_by("id").as_pymongo(), "to_list") for c in RULED]


def a_rules() -> None:
    """CASCADE (two levels, one document each), NULLIFY, PULL and DENY on a
    document's and a queryset's delete, with their signals and what stays."""

    def store() -> tuple:
        for c in RULED:
            io(c, "drop_collection")
        o, v, w = (
            io(c(name=n), "save")
            for c, n in ((XOwner, "o"), (XVip, "v"), (XOwner, "w"))
        )
        io(XThing(name="t", owner=o, owners=[o, v, w]), "save")
        box = io(XBox(name="b", owner=o), "save")
        io(XInner(box=box), "save")
        io(XLock(owner=v), "save")
        return o, v, w

    o, v, _ = quietly(store)
    # (MongoEngine's queryset delete refused by DENY half-done is not
    # compared: DESIGN.md, "DENY is checked for everything before anything is
    # written")
    rec("deny", lambda: deleting(lambda: io(v, "delete")))
    rec("after_deny", lambda: quietly(stored_rules))
    rec("cascade", lambda: deleting(lambda: io(o, "delete")))
    rec("after_cascade", lambda: quietly(stored_rules))
    rec("qs_deny", lambda: deleting(lambda: io(XOwner.objects(name="v"), "delete")))
    rec("qs_sub_deny", lambda: deleting(lambda: io(XVip.objects, "delete")))
    rec("qs", lambda: deleting(lambda: io(XOwner.objects(name="w"), "delete")))
    rec("after_qs", lambda: quietly(stored_rules))
    rec("unlock", lambda: deleting(lambda: io(XLock.objects, "delete")))
    rec("qs_all", lambda: deleting(lambda: io(XOwner.objects, "delete")))
    rec("after_all", lambda: quietly(stored_rules))


class XComment(M.EmbeddedDocument):
    author = M.StringField(required=True)
    votes = M.IntField(default=0)


class XPost(M.Document):
    title = M.StringField()
    comments = M.EmbeddedDocumentListField(XComment)
    tags = M.ListField(M.StringField())
    scores = M.MapField(M.IntField())


def a_lists() -> None:
    """EmbeddedDocumentListField methods and list and map changes saved, then
    reloaded; list operators of updates on embedded documents."""
    quietly(lambda: (io(XPost, "drop_collection"), io(XPost.objects, "count")))
    post = XPost(
        title="p",
        comments=[XComment(author="a", votes=1), XComment(author="b", votes=3)],
        tags=["x", "y"],
        scores={"a": 1},
    )
    rec("save", lambda: io(post, "save"))
    got = rec("get", lambda: io(XPost.objects, "get"))
    rec("create", lambda: got.comments.create(author="c", votes=2))
    rec("save_created", lambda: io(got, "save"))
    rec("update", lambda: got.comments.filter(author="a").update(votes=10))
    rec("delete", lambda: got.comments.filter(author="b").delete())
    got.tags.insert(0, "w")
    got.tags.extend(["z"])
    got.tags.reverse()
    got.scores["b"] = 2
    del got.scores["a"]
    rec("changed", lambda: got._get_changed_fields())
    rec("save2", lambda: io(got, "save"))
    rec("reload", lambda: io(got, "reload"))
    got.tags.sort()
    got.comments[0].votes += 1
    rec("save3", lambda: io(got, "save"))
    posts = XPost.objects(title="p")
    rec(
        "push_emb", lambda: io(posts, "update_one", push__comments=XComment(author="d"))
    )
    rec(
        "push_each",
        lambda: io(posts, "update_one", push_all__comments=[XComment(author="e")]),
    )
    rec("pull_emb", lambda: io(posts, "update_one", pull__comments__author="d"))
    rec(
        "inc_pos",
        lambda: io(
            posts(comments__author="c"), "update_one", inc__comments__S__votes=5
        ),
    )
    rec("set_key", lambda: io(posts, "update_one", set__scores__c=3))
    rec("unset_key", lambda: io(posts, "update_one", unset__scores__b=1))
    rec("bad_emb", lambda: io(posts, "update_one", push__comments=XComment()))
    rec("final", lambda: io(XPost.objects, "get"))
    rec("stored", lambda: io(XPost.objects.as_pymongo(), "to_list"))


class XWriter(M.Document):
    name = M.StringField()


class XBook(M.Document):
    title = M.StringField()
    writer = M.ReferenceField(XWriter)
    writers = M.ListField(M.ReferenceField(XWriter))


def a_references() -> None:
    """References read (each awaited here: ``deref``), select_related, saves
    with cascade, queries by reference, a missing target."""

    def store() -> None:
        for c in (XWriter, XBook):
            io(c, "drop_collection")
            io(c.objects, "count")

    quietly(store)
    ann = rec("ann", lambda: io(XWriter(name="ann"), "save"))
    bob = io(XWriter(name="bob"), "save")
    rec("book", lambda: io(XBook(title="b", writer=ann, writers=[ann, bob]), "save"))
    got = io(XBook.objects, "get")
    rec("raw", lambda: got.to_mongo())
    rec("writer", lambda: deref(got, "writer"))
    rec("by_ref", lambda: io(XBook.objects(writer=ann), "count"))
    rec("by_refs", lambda: io(XBook.objects(writers__in=[bob]), "scalar", "title"))
    rec("select_related", lambda: io(XBook.objects, "select_related"))
    rec("distinct_ref", lambda: io(XBook.objects, "distinct", "writer"))
    rec("unsaved_ref", lambda: io(XBook(title="u", writer=XWriter(name="u")), "save"))
    rec(
        "cascade",
        lambda: io(XBook(title="c", writer=XWriter(name="c")), "save", cascade=True),
    )
    rec("writers", lambda: io(XWriter.objects.order_by("name"), "scalar", "name"))
    quietly(lambda: io(XWriter.objects(name="ann"), "delete"))
    rec("missing", lambda: deref(io(XBook.objects(title="b"), "get"), "writer"))
    rec("stored", lambda: io(XBook.objects.order_by("title").as_pymongo(), "to_list"))


def a_odds() -> None:
    """Empty and sliced querysets, limit(0), none(), no_sub_classes, Q,
    values_list of several fields, write concerns and full results."""
    seed()
    people = XPerson.objects
    rec("none_list", lambda: io(people.none(), "to_list"))
    rec("none_count", lambda: io(people.none(), "count"))
    rec("none_first", lambda: io(people.none(), "first"))
    rec("none_get", lambda: io(people.none(), "get"))
    rec("none_update", lambda: io(people.none(), "update", set__age=1))
    rec("none_distinct", lambda: io(people.none(), "distinct", "age"))
    rec("limit0", lambda: io(people.limit(0), "to_list"))
    rec("limit0_count", lambda: io(people.limit(0), "count", True))
    rec("slice", lambda: io(people.order_by("name")[1:3], "to_list"))
    rec("slice_first", lambda: io(people.order_by("name")[2:4], "first"))
    rec("slice_count", lambda: io(people.order_by("name")[2:4], "count", True))
    rec("no_sub", lambda: io(people.no_sub_classes(), "count"))
    rec("sub_get_two", lambda: io(XStudent.objects, "get"))
    rec(
        "Q",
        lambda: io(
            people(M.Q(age=0) | M.Q(name="s")).order_by("name"), "scalar", "name"
        ),
    )
    rec(
        "values_list2",
        lambda: io(people.order_by("name"), "values_list", "name", "emb.a", "tags"),
    )
    rec("scalar_embs_a", lambda: io(people.order_by("name"), "scalar", "embs"))
    rec(
        "full_result",
        lambda: io(people(age=0), "update", inc__age=0, full_result=True).raw_result,
    )
    rec(
        "update_one_full",
        lambda: (
            io(
                people(age=2), "update_one", set__score=1.5, full_result=True
            ).matched_count
        ),
    )
    rec(
        "update_wc0",
        lambda: io(people(age=2), "update", set__age=2, write_concern={"w": 0}),
    )
    doc = io(people(name="p1"), "get")
    rec("delete_wc", lambda: io(doc, "delete", w=1))
    rec("delete_qs_wc", lambda: io(people(name="p2"), "delete", write_concern={"w": 1}))
    rec("modify_bad", lambda: io(people(name="p3"), "modify", nope__age=1))
    rec("modify_invalid", lambda: io(people(name="p3"), "modify", set__age="x"))
    rec("modify_both", lambda: io(people(name="p3"), "modify", remove=True, new=True))
    rec(
        "agg_kwargs",
        lambda: io(people.order_by("name"), "aggregate", [{"$count": "n"}]),
    )
    rec("stored", lambda: io(people.order_by("name").as_pymongo(), "to_list"))


class XSig(M.Document):
    name = M.StringField()
    slug = M.StringField()
    n = M.IntField(default=0)
    tags = M.ListField(M.StringField())
    embs = M.ListField(M.EmbeddedDocumentField(XEmb))


def a_receivers() -> None:
    """The harness's receivers changing values and documents (``MUTATING``:
    init, save and bulk insert signals), in every mode."""
    for signal, receiver in harness.MUTATING:
        signal.connect(receiver, sender=XSig)
    try:
        quietly(lambda: (io(XSig, "drop_collection"), io(XSig.objects, "count")))
        rec("save", lambda: io(XSig(name="Hello"), "save"))
        rec("save_late", lambda: io(XSig(name="late"), "save"))
        rec("save_kwargs", lambda: io(XSig(name="K"), "save", signal_kwargs={"x": 1}))
        rec("load", lambda: io(XSig.objects.order_by("name"), "to_list"))
        io(XSig.objects(name="K"), "update", set__n=5)
        rec("load5", lambda: io(XSig.objects, "get", name="K"))
        d = io(XSig.objects, "get", name="Hello")
        d.name = "Changed"
        d.embs.append(XEmb(a=1))
        rec("resave", lambda: io(d, "save"))
        d.embs[0].a = 2
        d.tags = ["t"]
        rec("resave_nested", lambda: io(d, "save"))
        rec(
            "insert",
            lambda: io(XSig.objects, "insert", [XSig(name="b1"), XSig(name="upper")]),
        )
        rec(
            "insert_nb",
            lambda: io(XSig.objects, "insert", [XSig(name="b2")], load_bulk=False),
        )
        rec("modify", lambda: io(XSig.objects(name="b1"), "modify", new=True, n=5))
        rec("delete", lambda: io(d, "delete", signal_kwargs={"y": 2}))
        rec("stored", lambda: io(XSig.objects.order_by("name").as_pymongo(), "to_list"))
    finally:
        for signal, receiver in harness.MUTATING:
            signal.disconnect(receiver, sender=XSig)


class XDyn(M.DynamicDocument):
    name = M.StringField()
    meta = {"allow_inheritance": True}


def a_dynamic() -> None:
    """A dynamic document's fields added, changed, deleted, saved, reloaded,
    queried, updated and modified."""
    quietly(lambda: (io(XDyn, "drop_collection"), io(XDyn.objects, "count")))
    d = XDyn(name="d", extra=1, emb=XEmb(a=1), items=[1, {"k": 2}])
    rec("save", lambda: io(d, "save"))
    d.extra = 2
    d.more = "m"
    d.emb.a = 3
    d.items[1]["k"] = 4
    rec("changed", lambda: d._get_changed_fields())
    rec("save2", lambda: io(d, "save"))
    del d.more
    rec("save3", lambda: io(d, "save"))
    rec("reload", lambda: io(d, "reload"))
    rec("get", lambda: io(XDyn.objects, "get", extra=2))
    rec("update", lambda: io(XDyn.objects, "update", set__other=5, inc__extra=1))
    rec("modify", lambda: io(XDyn.objects, "modify", new=True, push__items=7))
    rec("only", lambda: io(XDyn.objects.only("extra"), "first"))
    rec("distinct", lambda: io(XDyn.objects, "distinct", "emb"))
    rec("stored", lambda: io(XDyn.objects.as_pymongo(), "to_list"))


class XIn(M.EmbeddedDocument):
    x = M.IntField()


class XOuter(M.EmbeddedDocument):
    inner = M.EmbeddedDocumentField(XIn)
    n = M.IntField()


class XShape(M.Document):
    name = M.StringField(unique=True)
    outers = M.ListField(M.EmbeddedDocumentField(XOuter))
    emap = M.MapField(M.EmbeddedDocumentField(XOuter))
    lol = M.ListField(M.ListField(M.IntField()))
    emb = M.EmbeddedDocumentField(XOuter)
    scores = M.DictField()
    n = M.IntField(default=0)
    ordered = M.SortedListField(M.EmbeddedDocumentField(XIn), ordering="x")
    gen = M.GenericEmbeddedDocumentField()
    lole = M.ListField(M.ListField(M.EmbeddedDocumentField(XIn)))


def shape_view(label: str, document: Any) -> None:
    """What a receiver sees: the document (its and its embedded documents'
    changes), ``_get_changed_fields()`` and ``_delta()``."""
    harness.OUT.append(
        [
            label,
            harness.norm(document),
            document._get_changed_fields()
            if hasattr(document, "_changed_fields")
            else "<none>",
            harness.norm(document._delta()),
        ]
    )


def on_shape_pre_save(sender: Any, document: Any, **kwargs: Any) -> None:
    if document.n == 300:
        document.emb.inner.x = (document.emb.inner.x or 0) + 1


def on_shape_pre_save_pv(sender: Any, document: Any, **kwargs: Any) -> None:
    if document.n == 400:
        document.outers[0].inner.x = 7
    if document.n == 200:
        raise M.ValidationError("refused by a receiver")


def on_shape_post_save(sender: Any, document: Any, **kwargs: Any) -> Any:
    shape_view("post_save_view", document)
    if document.n == 500:
        document.emb.inner.x = 42  # (cleared by the save's end)
    if document.n != 100:
        return None
    document.n = 101
    document.emb.inner.x = 9
    if ASYNC:
        return document.async_save()
    document.save()
    return None


async def on_shape_post_save_async(sender: Any, document: Any, **kw: Any) -> None:
    """The async API's receiver: its inner save awaited."""
    inner = on_shape_post_save(sender, document, **kw)
    if inner is not None:
        await inner


SHAPE_RECEIVERS = (
    (M.signals.pre_save, on_shape_pre_save),
    (M.signals.pre_save_post_validation, on_shape_pre_save_pv),
    (
        M.signals.post_save,
        on_shape_post_save_async if ASYNC else on_shape_post_save,
    ),
)


def shape(name: str) -> Any:
    """A stored XShape named ``name``, loaded back."""

    def store() -> Any:
        io(
            XShape(
                name=name,
                outers=[
                    XOuter(inner=XIn(x=1), n=1),
                    XOuter(inner=XIn(x=2), n=2),
                ],
                emap={"a": XOuter(inner=XIn(x=3)), "b": XOuter(n=4)},
                lol=[[1, 2], [3]],
                emb=XOuter(inner=XIn(x=5), n=5),
                scores={"k": {"v": 1}},
                ordered=[XIn(x=2), XIn(x=1)],
                gen=XOuter(inner=XIn(x=6)),
                lole=[[XIn(x=7)], []],
            ),
            "save",
        )
        return io(XShape.objects, "get", name=name)

    return quietly(store)


def after_save(label: str, document: Any, *args: Any, **kwargs: Any) -> None:
    """``document`` saved (or its error), then its state and what is stored."""
    rec(label, lambda: io(document, "save", *args, **kwargs))
    shape_view(label + "_after", document)
    rec(
        label + "_stored",
        lambda: io(XShape.objects(id=document.id).as_pymongo(), "to_list"),
    )


def a_save_shapes() -> None:
    """Saves of changes of every shape (nested embedded documents in a list
    set whole, maps of embedded documents, lists of lists of values and of
    embedded documents, a sorted list, a generic embedded document, a value
    set whole then changed inside, changes made by pre_save receivers, new
    documents' embedded ones (inserted, or kept by a failing insert), a
    post_save receiver saving again, w=0), saves that fail (a duplicate key,
    a receiver's validation error, a save_condition) and their retries: what
    post_save receivers see, what the document keeps, what is stored."""
    for signal, receiver in SHAPE_RECEIVERS:
        signal.connect(receiver, sender=XShape)
    try:
        quietly(lambda: (io(XShape, "drop_collection"), io(XShape.objects, "count")))
        d = shape("nested")
        d.outers[0].inner.x = 10
        d.outers[1].n = 20
        d.outers = d.outers[::-1]
        after_save("nested", d)
        d = shape("map")
        d.emap["a"].inner.x = 30
        d.emap = {"c": d.emap["a"], "b": d.emap["b"]}
        after_save("map", d)
        d = shape("lol")
        d.lol[0].append(5)
        d.lol[1] = [6]
        after_save("lol", d)
        d.lol = [[7], d.lol[0]]
        d.lol[1].append(8)
        after_save("lol_whole", d)
        d = shape("whole")
        d.emb = XOuter(inner=XIn(x=1))
        d.emb.inner.x = 2
        d.emb.n = 3
        d.scores = {"k": {"v": 2}}
        d.scores["k"]["v"] = 3
        d.scores["j"] = 1
        after_save("whole", d)
        d.emb.inner = XIn(x=4)
        d.emb.inner.x = 5
        d.outers[1].inner.x = 6
        after_save("whole2", d)
        d = shape("deep")
        d.ordered[0].x = 3
        d.gen.inner.x = 8
        d.lole[0][0].x = 9
        after_save("deep", d)
        d.ordered[1].x = 0
        d.lole = [d.lole[0], [XIn(x=1)]]
        d.lole[1][0].x = 2
        d.lole[0][0].x = 10
        d.gen = XIn(x=1)
        d.gen.x = 2
        after_save("deep_whole", d)
        after_save("deep_again", d)
        d = shape("pre")
        d.n = 300
        after_save("pre", d)
        d = XShape(name="new", emb=XOuter(inner=XIn(x=1), n=1), n=300)
        d.outers = [XOuter(inner=XIn(x=2))]
        d.outers[0].inner.x = 3
        d.emb.n = 2
        after_save("new", d)
        d = XShape(name="new", emb=XOuter(inner=XIn(x=4)), lole=[[XIn(x=5)]])
        d.emb.inner.x = 6
        d.lole[0][0].x = 7
        # (not the document: a failed insert keeps the id ours gave it)
        rec("new_dup", lambda: io(d, "save"))
        harness.OUT.append(["new_dup_kept", harness.norm(d.emb), harness.norm(d.lole)])
        d = shape("prepv")
        d.n = 400
        d.outers = d.outers[:1]
        after_save("prepv", d)
        d = shape("after")
        d.n = 500
        d.emb.n = 8
        after_save("after", d)
        d = shape("again")
        d.outers[0].inner.x = 11
        d.n = 100
        after_save("again", d)
        d = shape("dup")
        d.name = "nested"
        d.outers[0].inner.x = 12
        d.outers = d.outers[:1]
        d.emap["a"].inner.x = 13
        after_save("dup", d)
        d.name = "dup"
        after_save("dup_retry", d)
        d = shape("invalid")
        d.emb.inner.x = 14
        d.lol = [[1]]
        d.n = 200
        after_save("invalid", d)
        d.n = 201
        after_save("invalid_retry", d)
        d = shape("cond")
        d.emb.inner.x = 15
        d.outers = d.outers[:1]
        d.outers[0].inner.x = 16
        after_save("cond", d, save_condition={"n": 99})
        after_save("cond_retry", d, save_condition={"n": 0})
        d = shape("w0")
        d.emb.inner.x = 17
        d.outers = d.outers[::-1]
        d.outers[0].n = 18
        after_save("w0", d, write_concern={"w": 0})
    finally:
        for signal, receiver in SHAPE_RECEIVERS:
            signal.disconnect(receiver, sender=XShape)


class XDynEmb(M.DynamicEmbeddedDocument):
    a = M.IntField()


class XBaseEmb(M.EmbeddedDocument):
    a = M.IntField()
    meta = {"allow_inheritance": True}


class XSubEmb(XBaseEmb):
    b = M.IntField()


class XHolder(M.Document):
    dyn = M.EmbeddedDocumentField(XDynEmb)
    gen = M.GenericEmbeddedDocumentField()
    subs = M.ListField(M.EmbeddedDocumentField(XBaseEmb))
    outer = M.EmbeddedDocumentField(XOuter)
    outers = M.EmbeddedDocumentListField(XOuter)


def a_distinct_embedded() -> None:
    """distinct() of embedded documents: dynamic ones, generic ones, lists of
    them (subclasses too), on a dotted path into them; built as
    MongoEngine's distinct builds them (new, or as loaded)."""
    quietly(lambda: (io(XHolder, "drop_collection"), io(XHolder.objects, "count")))
    for i in range(2):
        holder = XHolder(
            dyn=XDynEmb(a=i, extra=f"e{i}"),
            gen=XIn(x=i),
            subs=[XBaseEmb(a=i), XSubEmb(a=i, b=i)],
            outer=XOuter(inner=XIn(x=i), n=i),
            outers=[XOuter(inner=XIn(x=i))],
        )
        quietly(lambda holder=holder: io(holder, "save"))
    # (not "subs": MongoEngine's distinct fails on a class allowing
    # inheritance in an EmbeddedDocumentField, where ours gives them,
    # docs/querysets.md: "where MongoEngine's `distinct` fails")
    for path in (
        "dyn",
        "gen",
        "outer",
        "outer.inner",
        "outers",
        "outers.inner",
        "outer.inner.x",
        "dyn.extra",
    ):
        rec(
            path, lambda path=path: io(XHolder.objects.order_by("id"), "distinct", path)
        )


def explained(queryset: Any) -> Any:
    """The parts of ``explain()``'s result that two runs share: its keys and
    the namespace and filter its query planner read."""
    result = io(queryset, "explain")
    planner = result["queryPlanner"]
    return sorted(result), planner["namespace"], planner["parsedQuery"]


def a_terminals() -> None:
    """Queryset terminals: get()'s errors on slices and limits, first() of
    slices and skips, counts with and without limit and skip, in_bulk of a
    subclass, iterations of sliced, limited and skipped querysets (twice:
    the cache), distinct, sums and averages, explain, updates with upsert,
    multi=False, full_result and write concerns, update_one and upsert_one,
    modify with a sort, remove, full_response, inserts with signal_kwargs,
    deletes, aggregations of projections and subclasses."""
    seed()
    people = XPerson.objects
    rec("get_many", lambda: io(people, "get", tags="x"))
    rec("get_slice", lambda: io(people.order_by("name")[0:1], "get"))
    rec("get_limit", lambda: io(people.order_by("name").limit(2), "get"))
    rec("get_skip", lambda: io(people.order_by("name").skip(5), "get"))
    rec("get_sub", lambda: io(XStudent.objects, "get", age=9))
    rec("get_q", lambda: io(people, "get", M.Q(name="p1") | M.Q(name="zz")))
    rec("first_slice", lambda: io(people.order_by("name")[3:], "first"))
    rec("first_skip", lambda: io(people.order_by("-age", "name").skip(2), "first"))
    rec("first_index", lambda: io(people.order_by("-name")[1:2], "first"))
    rec("first_only", lambda: io(people.only("age").order_by("age"), "first"))
    rec("count_skip", lambda: io(people.skip(4), "count", True))
    rec("count_no_ls", lambda: io(people.skip(4).limit(1), "count"))
    rec("count_slice", lambda: io(people[1:4], "count", with_limit_and_skip=True))
    rec("count_limit", lambda: io(people.limit(2), "count", True))
    ids = io(people.order_by("name"), "scalar", "pk")
    rec(
        "in_bulk_sub",
        lambda: list(io(XStudent.objects, "in_bulk", ids).values()),
    )
    rec("in_bulk_empty", lambda: io(people, "in_bulk", []))
    rec(
        "in_bulk_pymongo",
        lambda: sorted(
            io(people.as_pymongo(), "in_bulk", ids[:2]).values(),
            key=lambda d: d["name"],
        ),
    )
    rec("iter_slice", lambda: io(people.order_by("name")[1:4], "iterate"))
    rec("iter_sl", lambda: io(people.order_by("name").skip(2).limit(2), "iterate"))
    rec("iter_limit", lambda: io(people.order_by("-name").limit(3), "iterate"))
    rec("iter_skip", lambda: io(people.order_by("name").skip(4), "iterate"))
    rec("iter_excl", lambda: io(people.exclude("embs").order_by("age"), "iterate"))
    # (a queryset read again reads the server again: docs/querysets.md, "`async
    # for` streams through a driver cursor ... it never loads the whole
    # result"; MongoEngine's reads its result cache. The results compared.)
    twice = people.order_by("name")
    rec("iter_once", lambda: [d.name for d in io(twice, "iterate")])
    rec(
        "iter_twice", lambda: unrecorded(lambda: [d.name for d in io(twice, "iterate")])
    )
    listed = people.order_by("-name")
    rec("list_once", lambda: [d.name for d in io(listed, "to_list")])
    rec(
        "list_twice",
        lambda: unrecorded(lambda: [d.name for d in io(listed, "to_list")]),
    )
    rec("distinct_q", lambda: sorted(io(people(age__gte=1), "distinct", "name")))
    rec("distinct_sub", lambda: io(XStudent.objects, "distinct", "school"))
    rec("distinct_bad", lambda: io(people, "distinct", "nope"))
    rec("sum_none", lambda: io(people(name="zz"), "sum", "age"))
    rec("sum_float", lambda: io(people, "sum", "score"))
    rec("sum_sub", lambda: io(XStudent.objects, "sum", "age"))
    rec("avg_embs", lambda: io(people, "average", "embs.a"))
    rec("avg_limit", lambda: io(people.order_by("name").limit(2), "average", "age"))
    rec("explain", lambda: explained(people(age=1)))
    rec("values_list_emb", lambda: io(people.order_by("name"), "values_list", "emb"))
    rec("scalar_none", lambda: io(people(name="zz"), "scalar", "name"))
    rec(
        "update_upsert",
        lambda: quietly(
            lambda: io(people(name="uu"), "update", upsert=True, set__age=5)
        ),
    )
    rec(
        "update_upsert_full",
        lambda: quietly(
            lambda: io(
                people(name="uf"), "update", upsert=True, full_result=True, inc__age=1
            ).raw_result.get("n")
        ),
    )
    rec("update_multi", lambda: io(people(age=0), "update", multi=False, inc__age=1))
    rec(
        "update_wc",
        lambda: io(
            people(age=1), "update", write_concern={"w": 1, "j": True}, set__score=2.0
        ),
    )
    rec("update_one_none", lambda: io(people(name="zz"), "update_one", set__age=1))
    rec(
        "update_one_upsert",
        lambda: quietly(
            lambda: io(people(name="u1"), "update_one", upsert=True, set__age=2)
        ),
    )
    rec(
        "upsert_one_sub",
        lambda: quietly(
            lambda: io(XStudent.objects(name="su"), "upsert_one", set__school="x")
        ),
    )
    rec(
        "modify_sort",
        lambda: io(people.order_by("-age"), "modify", new=True, inc__age=1),
    )
    rec("modify_remove_none", lambda: io(people(name="zz"), "modify", remove=True))
    # (not full_response=True: docs/querysets.md, "returns what `async_modify()`
    # returns", where MongoEngine's writes, then fails reading the reply)
    rec(
        "modify_skip", lambda: io(people.order_by("name").skip(1), "modify", inc__age=1)
    )
    rec(
        "insert_kwargs",
        lambda: io(people, "insert", [XPerson(name="ik")], signal_kwargs={"z": 1}),
    )
    # (not an empty insert: docs/querysets.md, "an empty list sends no command
    # and returns `[]`", where MongoEngine's gets PyMongo's TypeError)
    saved = io(people, "get", name="p3")
    rec("insert_saved", lambda: io(people, "insert", saved))
    rec(
        "insert_wc",
        lambda: io(people, "insert", [XPerson(name="iw")], write_concern={"w": 1}),
    )
    rec("delete_none", lambda: io(people(name="zz"), "delete"))
    rec("delete_sub", lambda: io(XStudent.objects(name="su"), "delete"))
    rec(
        "agg_sub",
        lambda: io(
            XStudent.objects, "aggregate", [{"$project": {"school": 1, "_id": 0}}]
        ),
    )
    rec(
        "agg_only",
        lambda: io(
            people.only("name").order_by("name").limit(2),
            "aggregate",
            [{"$project": {"_id": 0}}],
        ),
    )
    rec(
        "agg_disk",
        lambda: io(people(age=2), "aggregate", [{"$count": "n"}], allowDiskUse=True),
    )
    rec("agg_bad", lambda: io(people, "aggregate", [{"$nope": 1}]))
    rec("stored", lambda: io(people.order_by("name").as_pymongo(), "to_list"))


class XCounted(M.Document):
    number = M.SequenceField()
    code = M.SequenceField(sequence_name="codes", value_decorator=str)
    name = M.StringField()
    meta = {"allow_inheritance": True}


class XCountedSub(XCounted):
    extra = M.IntField()


class XClean(M.Document):
    name = M.StringField(required=True)
    slug = M.StringField()
    owner = M.ReferenceField(XPerson)

    def clean(self) -> None:
        """The slug from the name; a name "bad" refused."""
        if self.name == "bad":
            raise M.ValidationError("bad name", errors={"name": "no"})
        self.slug = (self.name or "").lower()


def a_documents_more() -> None:
    """A document's reload of some fields after changes elsewhere, delete with
    signal_kwargs, save with cascade, validate=False, clean=False, write
    concerns, a failing save_condition on a new document, update with upsert
    and errors, modify returning False, SequenceField numbers (save, insert,
    subclass, counters set), subclasses with ``_cls`` loaded by their base."""
    quietly(
        lambda: [
            (io(c, "drop_collection"), io(c.objects, "count"))
            for c in (XPerson, XCounted, XClean)
        ]
    )
    ann = io(XPerson(name="ann", age=3, tags=["a"]), "save")
    io(
        XPerson.objects(id=ann.id),
        "update",
        set__age=30,
        push__tags="z",
        set__name="a2",
    )
    ann.score = 1.5
    rec("reload_two", lambda: io(ann, "reload", "age", "tags"))
    rec("after_reload_two", lambda: ann)
    rec("changed", lambda: ann._get_changed_fields())
    rec("reload_emb", lambda: io(ann, "reload", "emb"))
    rec("reload_all", lambda: io(ann, "reload"))
    rec("update_kw", lambda: io(ann, "update", set__score=2.5, unset__tags=1))
    rec("after_update_kw", lambda: ann)
    rec(
        "update_upsert",
        lambda: quietly(lambda: io(ann, "update", upsert=True, inc__age=1)),
    )
    rec("update_empty", lambda: io(ann, "update"))
    rec("update_invalid", lambda: io(ann, "update", set__age="x"))
    rec("modify_false", lambda: io(ann, "modify", query={"name": "zz"}, inc__age=1))
    rec("after_modify_false", lambda: ann)
    rec("modify_pk", lambda: io(ann, "modify", set__id=ObjectId()))
    rec("modify_empty", lambda: io(ann, "modify"))
    cleaned = XClean(name="Hello", owner=ann)
    rec("save_clean", lambda: io(cleaned, "save"))
    rec("after_clean", lambda: cleaned)
    cleaned.name = "Other"
    rec("save_no_clean", lambda: io(cleaned, "save", clean=False))
    rec("after_no_clean", lambda: cleaned)
    rec("bad_clean", lambda: io(XClean(name="bad"), "save"))
    rec("bad_no_clean", lambda: io(XClean(name="bad"), "save", clean=False))
    rec("no_validate", lambda: io(XClean(name="bad"), "save", validate=False))
    rec("required", lambda: io(XClean(), "save"))
    ann.age = 77
    cleaned.name = "Cascaded"
    rec("cascade", lambda: io(cleaned, "save", cascade=True))
    rec("cascaded", lambda: io(XPerson.objects(id=ann.id).as_pymongo(), "to_list"))
    rec("wc", lambda: io(XPerson(name="wc"), "save", write_concern={"w": 1, "j": True}))
    new = XPerson(name="cond")
    rec("cond_new", lambda: io(new, "save", save_condition={"age": 1}))
    rec("after_cond_new", lambda: new)
    rec("force_insert", lambda: io(XPerson(name="fi"), "save", force_insert=True))
    doomed = io(XPerson(name="doomed"), "save")
    rec("delete_kw", lambda: io(doomed, "delete", signal_kwargs={"why": "x"}))
    rec("delete_again", lambda: io(doomed, "delete"))
    rec("delete_wc", lambda: io(ann, "delete", write_concern={"w": 1}))
    # (the numbers compared, not how they are taken: docs/migrating.md,
    # "Sequence numbers come with the write", one $inc per counter for a batch,
    # docs/documents.md; nor the signals of documents not yet numbered)
    first = unrecorded(lambda: XCounted(name="a"))
    rec("seq_save", lambda: unrecorded(lambda: io(first, "save")))
    rec("seq_after", lambda: (first.number, first.code))
    rec(
        "seq_given",
        lambda: unrecorded(lambda: io(XCounted(number=10, code="c", name="g"), "save")),
    )
    rec(
        "seq_insert",
        lambda: unrecorded(
            lambda: io(
                XCounted.objects, "insert", [XCounted(name="b"), XCountedSub(extra=1)]
            )
        ),
    )
    rec("seq_sub", lambda: unrecorded(lambda: io(XCountedSub(name="s"), "save")))
    rec("seq_set", lambda: io(XCounted.number, "set_next_value", 100))
    rec("seq_next", lambda: io(XCounted.number, "get_next_value"))
    rec(
        "seq_after_set",
        lambda: unrecorded(lambda: io(XCounted(name="c"), "save").number),
    )
    rec(
        "seq_create",
        lambda: unrecorded(lambda: io(XCountedSub.objects, "create", name="cr")),
    )
    rec(
        "seq_stored",
        lambda: io(XCounted.objects.order_by("name").as_pymongo(), "to_list"),
    )
    rec("seq_loaded", lambda: io(XCounted.objects.order_by("name"), "to_list"))
    rec("seq_sub_only", lambda: io(XCountedSub.objects.order_by("name"), "to_list"))


class XColor(enum.Enum):
    RED = "r"
    BLUE = "b"


class XFzE(M.EmbeddedDocument):
    a = M.IntField()
    s = M.StringField(default="x")
    lst = M.ListField(M.IntField())
    dct = M.DictField()


class XFzT(M.Document):
    name = M.StringField()


# What a_random_documents draws (differential_fuzz.py, as sync_differential_kinds.py
# does, with embedded documents' lists and maps too: "ES", "EM"); references
# read as proxies here: assigned, never read.
FZ = Fuzz(
    M=M,
    embedded=XFzE,
    referenced=XFzT,
    kinds=[
        *field_kinds(M, XFzE, XFzT, XColor),
        (lambda **kw: M.EmbeddedDocumentListField(XFzE, **kw), ["ES", [], None]),
        (
            lambda **kw: M.MapField(M.EmbeddedDocumentField(XFzE), **kw),
            ["EM", {}, None],
        ),
    ],
    io=io,
    ways=("get", "only", "exclude", "first", "bulk", "sr", "iterate"),
    dynamic=True,
    loads_references=False,
    nested_changes=True,
)


def fz_updates(draw: random.Random, cls: Any, spec: list, target: Any) -> None:
    """Drawn updates of ``cls``'s documents (an operator on a field, with a
    drawn value), some an upsert of a new id, some a modify; what each
    stores and loads."""
    upserted = cls.objects(id=ObjectId("5f00000000000000000000aa"))
    for _ in range(6):
        key, value = FZ.update(draw, spec, target)
        queryset = upserted if draw.random() < 0.2 else cls.objects.order_by("id")
        how = draw.choice(["update", "update_one", "modify"])
        options: dict[str, Any] = {"upsert": True} if queryset is upserted else {}
        if how == "modify":
            options["new"] = draw.random() < 0.5
        # (an upsert's _cls is in $setOnInsert: docs/querysets.md; the
        # commands of an upsert are not compared, what it stores is)
        step = functools.partial(io, queryset, how, **options, **{key: value})
        rec(
            f"{how} {key}",
            (lambda s=step: quietly(s)) if options.get("upsert") else step,
        )
        rec("updated", lambda: io(cls.objects.order_by("id").as_pymongo(), "to_list"))
        # (iterated, not list(): MongoEngine's list() drops a document whose
        # load raises TypeError, a stored value of another type, as len()
        # fills its cache: Python's list() ignores that error of __len__)
        rec("loaded", lambda: io(cls.objects.order_by("id"), "iterate"))


def fz_reads(draw: random.Random, cls: Any, spec: list) -> None:
    """Terminals on drawn fields of ``cls``: a projection listed, first of
    the other fields, a count of an existence filter, scalars and
    values_list of those holding no reference (and of the containers of
    embedded ones), distinct of every field."""
    # (not sum: docs/querysets.md, a ListField's db_field unwound)
    names = [name for name, _, _ in spec]
    picked = draw.sample(names, k=max(1, len(names) // 2))
    ordered = cls.objects.order_by("id")
    rec("only", lambda: io(ordered.only(*picked), "to_list"))
    rec("exclude_first", lambda: io(ordered.exclude(*picked), "first"))
    rec("count", lambda: io(cls.objects(**{picked[0] + "__exists": True}), "count"))
    # (scalars of the fields holding no references: docs/migrating.md,
    # "References never do hidden I/O", MongoEngine's read loads them)
    plain = [name for name, refers, _ in spec if not refers and name in picked]
    if plain:
        rec("scalar", lambda: io(ordered, "scalar", plain[0]))
        rec("values_list", lambda: io(ordered, "values_list", *plain))
    for name in names:
        rec(f"distinct {name}", lambda name=name: fz_distinct(cls, name))
    for name in plain:  # (and the containers of the embedded documents)
        if isinstance(cls._fields[name], M.EmbeddedDocumentField):
            for sub in ("lst", "dct"):
                path = f"{name}__{sub}"
                rec(f"scalar {path}", lambda p=path: io(ordered, "scalar", p))
                path = f"{name}.{sub}"
                rec(f"distinct {path}", lambda p=path: io(ordered, "distinct", p))


def fz_distinct(cls: Any, name: str) -> Any:
    """``distinct`` of the drawn field ``name``; over an embedded document
    field (or a list of them) with a ``db_field`` of its own, or whose
    distinct values hold a null, and over a reference field (or a list of
    them) whose distinct values hold a null, the stored values instead: there
    ours gives the embedded documents (and None for a null) where
    MongoEngine's gives the stored dicts, or fails building its class with
    None (docs/querysets.md, "where MongoEngine's `distinct` fails"), and
    None where MongoEngine's makes a null a DBRef to a new ObjectId."""
    field = cls._fields[name]
    me = harness.mongoengine
    item = field.field if isinstance(field, me.ListField) else field
    if isinstance(item, me.EmbeddedDocumentField):
        stored = io(cls.objects.no_dereference(), "distinct", name)
        if field.db_field != name or None in stored:
            return stored
    if isinstance(item, me.ReferenceField):
        stored = io(cls.objects.no_dereference(), "distinct", name)
        if None in stored:
            return stored
    return io(cls.objects.order_by("id"), "distinct", name)


def ran(step: Callable[[], Any]) -> None:
    """``step()`` run, whatever it returns or raises (not compared)."""
    try:
        step()
    except Exception:  # (the outcome is not compared, what it stored is)
        return


def fz_document_writes(
    draw: random.Random, document: Any, spec: list, target: Any
) -> None:
    """A drawn update or modify of ``document`` itself (an operator on a
    field, with a drawn value), then the document and what is stored."""
    name, _, values = draw.choice(spec)
    operator = draw.choice(["set", "unset", "inc", "push", "pull", "add_to_set"])
    value = 1 if operator == "unset" else FZ.value(draw, draw.choice(values), target)
    how = draw.choice(["update", "modify"])
    step = functools.partial(io, document, how, **{f"{operator}__{name}": value})
    if how == "modify" and any(refers for _, refers, _ in spec):
        # (MongoEngine's modify loads the references as it sets the values
        # read back, and fails there on a stored value it cannot load, the
        # write done: docs/migrating.md, "References never do hidden I/O";
        # docs/documents.md, a reload's references. What it stored compared.)
        rec(f"doc {how} {operator}__{name}", lambda: unrecorded(lambda: ran(step)))
    else:
        rec(f"doc {how} {operator}__{name}", step)
        rec("doc after", lambda: (document.to_mongo(), document._get_changed_fields()))
    rec(
        "doc stored",
        lambda: io(type(document).objects(pk=document.pk).as_pymongo(), "to_list"),
    )


def a_random_documents() -> None:
    """Classes of drawn fields and options (seeded), documents of drawn values
    built, validated, dumped, saved, read (whole, projected, iterated, in
    bulk, with select_related), changed by drawn assignments and in-place
    list, dict and embedded changes, saved again, reloaded; drawn updates,
    update_ones and modifies (upserts too), listed, inserted."""
    target = quietly(
        lambda: (
            io(XFzT, "drop_collection"),
            io(XFzT(name="t"), "save"),
        )[1]
    )
    for number in (1, 3, 5, 7, 9, 11):
        draw = random.Random(number)
        classes = [FZ.document_class(draw, f"XRand{number}_{n}") for n in range(12)]
        quietly(
            lambda classes=classes: [
                (io(cls, "drop_collection"), io(cls.objects, "count"))
                for cls, _ in classes
            ]
        )
        for cls, spec in classes:
            for _ in range(4):
                saved = FZ.saved_and_changed(draw, cls, spec, target)
                if saved is None:
                    continue
                _, loaded = saved
                if any(refers for _, refers, _ in spec):
                    # (MongoEngine's reload loads the references, ours
                    # leaves them stored: docs/documents.md, "One difference
                    # is by design": what it stores and its changes compared)
                    rec(
                        "reload",
                        lambda d=loaded: (
                            unrecorded(lambda: io(d, "reload"))
                            and (d.to_mongo(), d._get_changed_fields())
                        ),
                    )
                else:
                    rec("reload", lambda d=loaded: io(d, "reload"))
                fz_document_writes(draw, loaded, spec, target)
            fz_updates(draw, cls, spec, target)
            rec("list", lambda c=cls: io(c.objects.order_by("id"), "iterate"))
            fz_reads(draw, cls, spec)
            rec("insert", lambda c=cls: io(c.objects, "insert", [c(), c()]))


class XReqEmb(M.EmbeddedDocument):
    code = M.StringField(required=True, regex=r"^[A-Z]+$")
    n = M.IntField(max_value=5)


class XValid(M.Document):
    name = M.StringField(required=True, max_length=5, unique=True)
    email = M.EmailField()
    url = M.URLField()
    age = M.IntField(min_value=0, max_value=150)
    size = M.StringField(choices=("S", "M", "L"))
    ratio = M.FloatField(min_value=0.0)
    nums = M.ListField(M.IntField(min_value=0), max_length=3)
    emb = M.EmbeddedDocumentField(XReqEmb)
    embs = M.EmbeddedDocumentListField(XReqEmb)
    emap = M.MapField(M.EmbeddedDocumentField(XReqEmb))
    when = M.DateTimeField()
    code = M.StringField(unique_with="age")

    def clean(self) -> None:
        """A size "L" needs an age."""
        if self.size == "L" and self.age is None:
            raise M.ValidationError("L needs an age", errors={"age": "needed for L"})


def refused(step: Callable[[], Any]) -> Any:
    """The ValidationError ``step()`` raises, as its message, ``to_dict()``
    and field name; else what it returns."""
    try:
        return step()
    except M.ValidationError as error:
        return ["ValidationError", str(error), error.to_dict(), error.field_name]


def a_validation() -> None:
    """Validation errors of async_save (each field's constraint, embedded
    documents, lists and maps of them, clean(), several at once) as save()'s:
    message, to_dict() and field name; unique indexes' errors; what is stored."""
    quietly(lambda: (io(XValid, "drop_collection"), io(XValid.objects, "count")))
    cases = {
        "required": {},
        "long": {"name": "toolong"},
        "email": {"name": "e", "email": "nope"},
        "url": {"name": "u", "url": "nope"},
        "min": {"name": "m", "age": -1},
        "max": {"name": "m", "age": 151},
        "int": {"name": "i", "age": "x"},
        "choice": {"name": "c", "size": "XL"},
        "float": {"name": "f", "ratio": -0.5},
        "list_item": {"name": "l", "nums": [1, -2, "x"]},
        "list_long": {"name": "l", "nums": [1, 2, 3, 4]},
        "emb": {"name": "e", "emb": XReqEmb(n=9)},
        "emb_regex": {"name": "e", "emb": XReqEmb(code="abc")},
        "embs": {"name": "e", "embs": [XReqEmb(code="A"), XReqEmb(code="1", n=7)]},
        "emap": {"name": "e", "emap": {"k": XReqEmb()}},
        "date": {"name": "d", "when": "not a date"},
        "clean": {"name": "c", "size": "L"},
        "many": {"name": "toolong", "age": -1, "email": "x", "emb": XReqEmb()},
        "emb_type": {"name": "t", "emb": XEmb(a=1)},
    }
    for label, values in cases.items():
        rec(label, lambda v=values: refused(lambda: io(XValid(**v), "save")))
    rec(
        "no_clean",
        lambda: refused(lambda: io(XValid(name="n", size="L"), "save", clean=False)),
    )
    rec("valid", lambda: io(XValid(name="ok", age=1, code="c"), "save"))
    rec("unique", lambda: io(XValid(name="ok"), "save"))
    rec("unique_with", lambda: io(XValid(name="ok2", age=1, code="c"), "save"))
    rec("unique_insert", lambda: io(XValid.objects, "insert", [XValid(name="ok")]))
    rec(
        "unique_update",
        lambda: io(XValid.objects(name="ok2"), "update", set__name="ok"),
    )
    loaded = io(XValid.objects, "get", name="ok")
    loaded.age = -5
    loaded.emb = XReqEmb()
    rec("changed_invalid", lambda: refused(lambda: io(loaded, "save")))
    rec("changed_kept", lambda: (loaded._get_changed_fields(), loaded.age))
    rec(
        "create_invalid",
        lambda: refused(lambda: io(XValid.objects, "create", name="x" * 9)),
    )
    rec("modify_invalid", lambda: io(XValid.objects(name="ok"), "modify", set__age="x"))
    rec("stored", lambda: io(XValid.objects.order_by("name").as_pymongo(), "to_list"))


def entered(manager: Any) -> Any:
    """``manager`` entered: MongoEngine's sync block, or this package's async
    one entered in the scenario's own context (its task-local switch seen by
    the reads that follow, each run on the loop in a copy of that context)."""
    if not ASYNC:
        return manager.__enter__()
    step = manager.__aenter__()
    try:
        step.send(None)
    except StopIteration as done:
        return done.value
    raise AssertionError("the block's entry awaited")


def left(manager: Any) -> None:
    """``manager`` (of :func:`entered`) left."""
    if not ASYNC:
        manager.__exit__(None, None, None)
        return
    step = manager.__aexit__(None, None, None)
    try:
        step.send(None)
    except StopIteration:
        return
    raise AssertionError("the block's exit awaited")


def no_dereference(cls: Any) -> Any:
    """MongoEngine's ``no_dereference(cls)``, or ``async_no_dereference``."""
    if ASYNC:
        return M.async_no_dereference(cls)
    return harness.mongoengine.context_managers.no_dereference(cls)


class XChapter(M.Document):
    title = M.StringField()
    book = M.ReferenceField(XBook)
    books = M.ListField(M.ReferenceField(XBook))


def a_references_more() -> None:
    """select_related with max_depth (0, 1, 2) on querysets and documents;
    reads inside a no_dereference block (querysets, get, first, scalar,
    in_bulk) and after it; a no_dereference() queryset."""

    def store() -> None:
        for c in (XWriter, XBook, XChapter):
            io(c, "drop_collection")
            io(c.objects, "count")

    quietly(store)
    ann = io(XWriter(name="ann"), "save")
    bob = io(XWriter(name="bob"), "save")
    b1 = io(XBook(title="b1", writer=ann, writers=[ann, bob]), "save")
    b2 = io(XBook(title="b2", writer=bob, writers=[bob]), "save")
    io(XChapter(title="c1", book=b1, books=[b1, b2]), "save")
    io(XChapter(title="c2", book=b2, books=[]), "save")

    # (not max_depth 0 nor 2 on chapters: docs/references.md, "MongoEngine's
    # `max_depth` counts something else"; querysets not read twice:
    # a_terminals's note on reading again)
    def chapters() -> Any:
        return XChapter.objects.order_by("title")

    rec("sr", lambda: io(chapters(), "select_related"))
    rec("sr_books2", lambda: io(XBook.objects.order_by("title"), "select_related", 2))
    rec("sr_only", lambda: io(chapters().only("book"), "select_related"))
    rec("sr_none", lambda: io(chapters()(title="zz"), "select_related"))
    one = io(chapters(), "first")
    rec("doc_sr", lambda: io(one, "select_related"))
    block = no_dereference(XChapter)
    entered(block)
    try:
        rec("nd_list", lambda: [(c.book, c.books) for c in io(chapters(), "to_list")])
        rec("nd_first", lambda: (lambda c: (c.book, c.books))(io(chapters(), "first")))
        rec("nd_get", lambda: io(XChapter.objects, "get", title="c1").books)
        rec("nd_scalar", lambda: io(chapters(), "scalar", "book", "books"))
        rec("nd_iterate", lambda: [c.book for c in io(chapters(), "iterate")])
        rec(
            "nd_in_bulk",
            lambda: [
                c.book for c in io(XChapter.objects, "in_bulk", [one.pk]).values()
            ],
        )
        rec("nd_other", lambda: io(XBook.objects(title="b1"), "first").to_mongo())
    finally:
        left(block)
    rec("after_block", lambda: io(chapters(), "first").to_mongo())
    nd = chapters().no_dereference()
    rec("qs_nd", lambda: [(c.book, c.books) for c in io(nd, "to_list")])


SCENARIOS = [
    a_validation,
    a_references_more,
    a_random_documents,
    a_terminals,
    a_documents_more,
    a_distinct_embedded,
    a_save_shapes,
    a_dynamic,
    a_receivers,
    a_odds,
    a_reads,
    a_updates,
    a_documents,
    a_inserts,
    a_rules,
    a_lists,
    a_references,
]

if __name__ == "__main__":
    harness.LIBRARY, harness.MODE = LIBRARY, MODE
    LOG.started = record_comparable  # type: ignore[method-assign]
    if ASYNC:
        harness.M = AsyncAdapter
    harness.run(SCENARIOS)
