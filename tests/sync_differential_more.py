"""More scenarios for ``sync_differential.py``'s harness (run as it is, by
tests/test_sync_differential.py): threads sharing one connect() alias (saves,
reads, dereferences, a shared queryset, a switch_db / switch_collection /
no_dereference block of one thread while another reads), the numbers
MongoEngine's query_counter gives for each operation (nested counters, another
alias), custom querysets and managers, the errors users catch (their types and
messages), and documents' lifecycle odds (equality, hashes, copies, changes in
place, save options, update and modify).

``python sync_differential_more.py LIBRARY MODE``, as ``sync_differential.py``.
"""

import copy
import json
import pickle
import threading
from typing import Any

import mongoengine
from mongoengine.context_managers import (
    no_dereference,
    query_counter,
    switch_collection,
    switch_db,
)

import sync_differential as harness
from sync_differential import LOG, OUT, rec

M: Any = harness.M

# -- threads -------------------------------------------------------------------


class ThRef(M.Document):
    key = M.StringField(primary_key=True)
    label = M.StringField()


class ThDoc(M.Document):
    key = M.StringField(primary_key=True)
    n = M.IntField()
    ref = M.ReferenceField(ThRef)
    refs = M.ListField(M.ReferenceField(ThRef))
    tags = M.ListField(M.StringField())


def threaded(workers: dict) -> dict:
    """Run each ``workers`` function in a thread of its own, all at once; what
    each returned (or the error it raised) by name. What the threads record
    (signals, in no fixed order) is kept sorted; the commands are not logged."""
    results: dict = {}
    start = len(OUT)
    barrier = threading.Barrier(len(workers))

    def run(name: str, work: Any) -> None:
        barrier.wait()
        try:
            results[name] = harness.norm(work())
        except Exception as error:
            results[name] = ["raised", type(error).__name__, str(error)]

    LOG.on = False
    threads = [
        threading.Thread(target=run, args=(name, work))
        for name, work in workers.items()
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    LOG.on = True
    recorded = OUT[start:]
    del OUT[start:]
    OUT.append(["thread records", sorted(json.dumps(x) for x in recorded)])
    return dict(sorted(results.items()))


def th_seed() -> None:
    """Empty thread collections, and three refs."""
    LOG.on = False
    ThRef.drop_collection()
    ThDoc.drop_collection()
    for i in range(3):
        ThRef(key=f"r{i}", label=f"L{i}").save()
    LOG.on = True


def th_work(prefix: str) -> Any:
    """Saves, changes, reads and dereferences of a thread's own documents."""
    out = []
    for i in range(5):
        ThDoc(
            key=f"{prefix}{i}",
            n=i,
            ref=ThRef.objects.get(key=f"r{i % 3}"),
            refs=[ThRef(key="r0"), ThRef(key=f"r{(i + 1) % 3}")],
        ).save()
    for doc in ThDoc.objects(key__startswith=prefix).order_by("key"):
        out.append((doc.key, doc.ref.label, [r.label for r in doc.refs]))
        doc.n += 10
        doc.tags.append(prefix)
        doc.save()
    out.append(ThDoc.objects(key__startswith=prefix).count())
    out.append(ThDoc.objects(key__startswith=prefix).sum("n"))
    out.append(
        list(ThDoc.objects(key__startswith=prefix).order_by("key").select_related())
    )
    first = ThDoc.objects(key__startswith=prefix).order_by("-key").first()
    first.reload()
    out.append(first)
    ThDoc.objects(key=f"{prefix}0").update(inc__n=100, push__tags="u")
    ThDoc.objects(key=f"{prefix}4").delete()
    return out


def t_threads() -> None:
    """Four threads on one sync alias: saves, changes and saves in a loop,
    dereferences, select_related, reloads, updates and deletes; the stored
    documents after."""
    th_seed()
    rec("results", lambda: threaded({p: (lambda p=p: th_work(p)) for p in "abcd"}))
    rec("stored", lambda: list(ThDoc.objects.order_by("key").as_pymongo()))
    rec("loaded", lambda: list(ThDoc.objects.order_by("key")))


def t_shared_queryset() -> None:
    """One queryset shared by threads (as a module's constant): iterated and
    counted by each in turn, then by all at once; a cached queryset's
    results read in threads; a document loaded in one thread dereferenced
    and saved in others."""
    th_seed()
    for i in range(150):
        ThDoc(key=f"k{i:03}", n=i, ref=ThRef(key=f"r{i % 3}")).save()
    shared = ThDoc.objects.order_by("key")
    turn = threading.Lock()

    def in_turn() -> Any:
        with turn:
            return [len(list(shared)), shared.count(), shared[3].key, len(shared)]

    rec("in_turn", lambda: threaded({str(i): in_turn for i in range(3)}))
    fresh = ThDoc.objects(n__lt=120).order_by("-key")
    rec(
        "at_once",
        lambda: threaded(
            {
                str(i): (lambda: len([d.ref.label for d in fresh.clone()]))
                for i in range(3)
            }
        ),
    )
    rec(
        "clone_each",
        lambda: threaded(
            {
                str(i): (
                    lambda i=i: [d.key for d in shared.clone().skip(i * 10).limit(3)]
                )
                for i in range(3)
            }
        ),
    )
    doc = ThDoc.objects.get(key="k001")
    rec(
        "one_doc",
        lambda: threaded(
            {
                "a": lambda: doc.ref.label,
                "b": lambda: [r.label for r in doc.refs],
                "c": lambda: ThDoc.objects.get(key="k002").ref.label,
            }
        ),
    )
    rec("stored_count", lambda: ThDoc.objects.count())


def t_blocks() -> None:
    """A switch_db, switch_collection or no_dereference block open in one
    thread while another thread reads and saves (sequenced by events)."""
    th_seed()
    ThDoc(key="x", n=1, ref=ThRef(key="r1")).save()
    LOG.on = False
    ThDoc._get_db().client[M.get_db("other").name]["th_doc"].drop()
    LOG.on = True
    inside = threading.Event()
    done = threading.Event()

    def block(kind: str) -> Any:
        if kind == "db":
            manager = switch_db(ThDoc, "other")
        elif kind == "coll":
            manager = switch_collection(ThDoc, "th_doc_b")
        else:
            manager = no_dereference(ThDoc)
        with manager as cls:
            if kind == "nd":
                got = [repr(ThDoc.objects.get(key="x").ref), repr(cls)]
            else:
                cls(key=f"in-{kind}", n=2).save()
                got = [cls.objects.count()]
            inside.set()
            done.wait(10)
        return got

    def reader() -> Any:
        inside.wait(10)
        try:
            doc = ThDoc.objects.get(key="x")
            out = [ThDoc.objects.count(), repr(doc.ref), ThDoc._get_collection_name()]
            ThDoc(key="from-reader", n=3).save()
            out.append(ThDoc.objects.count())
            return out
        except Exception as error:
            return ["raised", type(error).__name__, str(error)]
        finally:
            done.set()

    for kind in ("db", "coll", "nd"):
        inside.clear()
        done.clear()
        rec(
            "block " + kind,
            lambda kind=kind: threaded(
                {"block": lambda: block(kind), "reader": reader}
            ),
        )
        rec("stored " + kind, lambda: list(ThDoc.objects.order_by("key").as_pymongo()))
        LOG.on = False
        ThDoc.objects(key="from-reader").delete()
        LOG.on = True
    rec(
        "other",
        lambda: list(
            ThDoc._get_db().client[M.get_db("other").name]["th_doc"].find({}, {"n": 1})
        ),
    )
    rec(
        "coll_b",
        lambda: list(ThDoc._get_db()["th_doc_b"].find({}, {"n": 1})),
    )


# -- query_counter -----------------------------------------------------------


class QcTag(M.Document):
    name = M.StringField()
    meta = {"allow_inheritance": True}


class QcSub(QcTag):
    extra = M.IntField()


class QcEmb(M.EmbeddedDocument):
    tag = M.ReferenceField(QcTag)


class QcDoc(M.Document):
    name = M.StringField()
    n = M.IntField(default=0)
    tag = M.ReferenceField(QcTag, reverse_delete_rule=mongoengine.NULLIFY)
    tags = M.ListField(M.ReferenceField(QcTag, reverse_delete_rule=mongoengine.PULL))
    gen = M.GenericReferenceField()
    lazy = M.LazyReferenceField(QcTag)
    emb = M.EmbeddedDocumentField(QcEmb)
    tmap = M.MapField(M.ReferenceField(QcTag))


class QcChild(M.Document):
    parent = M.ReferenceField(QcDoc, reverse_delete_rule=mongoengine.CASCADE)
    name = M.StringField()


def counted(label: str, function: Any, alias: str = "default") -> None:
    """Record what query_counter(alias) counts around ``function()`` (and
    what it returns or raises)."""

    def run() -> Any:
        with query_counter(alias) as q:
            try:
                result = harness.norm(function())
            except Exception as error:
                result = ["raised", type(error).__name__]
            return [int(q), q == int(q), result]

    rec(label, run)


def qc_seed() -> list:
    """Tags (one of a subclass), five documents referring to them, children."""
    LOG.on = False
    for cls in (QcTag, QcDoc, QcChild):
        cls.drop_collection()
    tags = [QcTag(name=f"t{i}").save() for i in range(3)] + [
        QcSub(name="s", extra=1).save()
    ]
    for i in range(5):
        doc = QcDoc(
            name=f"d{i}",
            n=i,
            tag=tags[i % 4],
            tags=tags[:2],
            gen=tags[3],
            lazy=tags[0],
            emb=QcEmb(tag=tags[1]),
            tmap={"a": tags[2]},
        ).save()
        QcChild(parent=doc, name=f"c{i}").save()
    LOG.on = True
    return tags


def q_counter_reads() -> None:
    """query_counter around each kind of read: first, get, count, iteration
    (with getMores), dereferences of each reference kind, select_related,
    in_bulk, scalar, distinct, aggregate, exists checks; nested counters."""
    tags = qc_seed()
    for i in range(110):
        QcTag(name=f"many{i}").save()
    counted("nothing", lambda: None)
    counted("first", lambda: QcDoc.objects.first())
    counted("first_empty", lambda: QcDoc.objects(name="none").first())
    counted("get", lambda: QcDoc.objects.get(name="d1"))
    counted("get_missing", lambda: QcDoc.objects.get(name="zz"))
    counted("get_multi", lambda: QcDoc.objects.get(n__gte=0))
    counted("count", lambda: QcDoc.objects.count())
    counted("count_ls", lambda: QcDoc.objects.skip(1).limit(2).count(True))
    counted("len", lambda: len(QcDoc.objects))
    counted("list", lambda: len(list(QcDoc.objects)))
    counted("iter_big", lambda: len(list(QcTag.objects)))
    counted("iter_big_nocache", lambda: len(list(QcTag.objects.no_cache())))
    counted("iter_batch", lambda: len(list(QcTag.objects.batch_size(20))))
    counted("iter_break", lambda: next(iter(QcTag.objects.limit(3))).name)
    counted("bool", lambda: bool(QcDoc.objects(name="d1")))
    counted("index", lambda: QcDoc.objects.order_by("n")[2].name)
    counted("slice", lambda: [d.name for d in QcDoc.objects.order_by("n")[1:3]])
    counted("deref_one", lambda: QcDoc.objects.get(name="d0").tag.name)
    counted("deref_sub", lambda: QcDoc.objects.get(name="d3").tag.extra)
    counted("deref_list", lambda: [t.name for t in QcDoc.objects.get(name="d0").tags])
    counted("deref_gen", lambda: QcDoc.objects.get(name="d0").gen.name)
    counted("deref_emb", lambda: QcDoc.objects.get(name="d0").emb.tag.name)
    counted("deref_map", lambda: QcDoc.objects.get(name="d0").tmap["a"].name)
    counted("lazy_fetch", lambda: QcDoc.objects.get(name="d0").lazy.fetch().name)
    counted("deref_all", lambda: [(d.tag.name, d.gen.name) for d in QcDoc.objects])
    counted("select_related", lambda: len(QcDoc.objects.select_related()))
    counted(
        "select_related_read",
        lambda: [
            (d.tag.name, d.gen.name, [t.name for t in d.tags])
            for d in QcDoc.objects.select_related()
        ],
    )
    counted("select_related_1", lambda: len(QcDoc.objects.select_related(1)))
    doc = QcDoc.objects.get(name="d0")
    counted("doc_select_related", lambda: doc.select_related().tag.name)
    counted("no_dereference", lambda: QcDoc.objects.no_dereference().first().tag)
    counted("in_bulk", lambda: len(QcTag.objects.in_bulk([t.pk for t in tags])))
    counted("scalar", lambda: list(QcDoc.objects.scalar("name")))
    counted("scalar_ref", lambda: list(QcDoc.objects.scalar("tag")))
    counted("values_list", lambda: QcDoc.objects.values_list("name", "n"))
    counted("distinct", lambda: sorted(QcDoc.objects.distinct("name")))
    counted("distinct_ref", lambda: len(QcDoc.objects.distinct("tag")))
    counted("aggregate", lambda: list(QcDoc.objects.aggregate([{"$count": "c"}])))
    counted("sum", lambda: QcDoc.objects.sum("n"))
    counted("average", lambda: QcDoc.objects.average("n"))
    counted("item_frequencies", lambda: QcDoc.objects.item_frequencies("n"))
    counted("as_pymongo", lambda: len(list(QcDoc.objects.as_pymongo())))
    counted("with_id", lambda: QcTag.objects.with_id(tags[0].pk))
    counted("reload", lambda: doc.reload())
    counted("reload_fields", lambda: doc.reload("name"))
    counted("explain", lambda: type(QcDoc.objects.explain()).__name__)
    counted("other_alias", lambda: list(QcDoc.objects.using("other")), "other")
    counted("default_by_other", lambda: len(list(QcDoc.objects)), "other")

    cached = QcDoc.objects.order_by("name")
    counted("cached_list", lambda: len(list(cached)))
    counted("cached_list_again", lambda: len(list(cached)))
    counted("cached_len", lambda: len(cached))
    counted("cached_count", lambda: cached.count())
    counted("cached_count_ls", lambda: cached.count(True))
    counted("cached_count_ls_again", lambda: cached.count(True))
    counted("cached_index", lambda: cached[1].name)
    counted("cached_slice", lambda: [d.name for d in cached[1:3]])
    counted("cached_first", lambda: cached.first().name)
    counted("cached_bool", lambda: bool(cached))
    counted("cached_deref", lambda: [d.tag.name for d in cached])
    counted("cached_deref_again", lambda: [d.tag.name for d in cached])
    fresh = QcDoc.objects.order_by("name")
    counted("fresh_bool", lambda: bool(fresh))
    counted("fresh_bool_again", lambda: bool(fresh))
    counted("fresh_len_after_bool", lambda: len(fresh))
    nocache = QcDoc.objects.order_by("name").no_cache()
    counted("nocache_list", lambda: len(list(nocache)))
    counted("nocache_list_again", lambda: len(list(nocache)))
    counted("nocache_sr", lambda: len(nocache.select_related()))
    counted("nocache_first", lambda: nocache.first().name)

    def threads_counted() -> Any:
        with query_counter() as q:
            threaded(
                {
                    str(i): lambda i=i: (
                        [QcTag(name=f"th{i}-{n}").save() for n in range(3)]
                        + [QcTag.objects(name__startswith=f"th{i}").count()]
                    )
                    for i in range(4)
                }
            )
            return int(q)

    rec("threads", threads_counted)

    def nested() -> Any:
        out = []
        with query_counter() as outer:
            QcDoc.objects.first()
            with query_counter() as inner:
                QcDoc.objects.count()
                out.append(("inner", int(inner)))
            out.append(("outer", int(outer)))
            QcDoc.objects.first()
            out.append(("outer2", int(outer), outer == 2, outer < 5, outer >= 1))
        out.append(repr(outer))
        return out

    rec("nested", nested)


def q_counter_writes() -> None:
    """query_counter around each kind of write: save (new, changed, unchanged,
    cascade), delete with rules, update, update_one, upsert_one, modify,
    insert, create, queryset deletes, reload after a delete."""
    tags = qc_seed()
    counted("save_new", lambda: QcTag(name="new").save())
    tag = QcTag.objects.get(name="new")
    counted("save_unchanged", lambda: tag.save())
    tag.name = "new2"
    counted("save_changed", lambda: tag.save())
    counted("save_novalidate", lambda: tag.save(validate=False))
    doc = QcDoc.objects.get(name="d0")
    doc.tag.name = "changed-through"
    counted("save_cascade", lambda: doc.save(cascade=True))
    doc = QcDoc.objects.get(name="d0")
    doc.tag.name = "changed-through2"
    counted("save_no_cascade", lambda: doc.save())
    doc.n = 5
    counted("save_cond", lambda: doc.save(save_condition={"n": 0}))
    counted("save_force", lambda: QcTag(name="f").save(force_insert=True))
    counted("create", lambda: QcTag.objects.create(name="c"))
    counted("insert_one", lambda: QcTag.objects.insert(QcTag(name="i")))
    counted(
        "insert_many",
        lambda: len(QcTag.objects.insert([QcTag(name="i1"), QcTag(name="i2")])),
    )
    counted(
        "insert_unloaded",
        lambda: len(QcTag.objects.insert([QcTag(name="u")], load_bulk=False)),
    )
    counted("update", lambda: QcDoc.objects(n__gte=2).update(inc__n=1))
    counted(
        "update_full",
        lambda: QcDoc.objects.update(set__n=1, full_result=True).modified_count,
    )
    counted("update_one", lambda: QcDoc.objects(n=1).update_one(set__name="x"))
    counted("upsert_one", lambda: QcDoc.objects(name="up").upsert_one(set__n=9))
    counted("modify", lambda: QcDoc.objects(name="up").modify(set__n=10, new=True))
    counted("modify_none", lambda: QcDoc.objects(name="nope").modify(set__n=1))
    d1 = QcDoc.objects.get(name="d1")
    counted("doc_update", lambda: d1.update(set__n=7))
    counted("doc_modify", lambda: d1.modify(n=8))
    counted("doc_modify_false", lambda: d1.modify(query={"n": 99}, n=9))
    counted("delete_doc_rules", lambda: d1.delete())
    counted("delete_tag_rules", lambda: tags[1].delete())
    counted("qs_delete_rules", lambda: QcDoc.objects(name="d2").delete())
    counted("qs_delete_tag_rules", lambda: QcTag.objects(name="t0").delete())
    counted("qs_delete_plain", lambda: QcTag.objects(name__startswith="i").delete())
    counted("reload_deleted", lambda: d1.reload())
    counted("drop", lambda: QcChild.drop_collection())
    rec("stored", lambda: list(QcDoc.objects.order_by("name").as_pymongo()))


# -- custom querysets and managers -----------------------------------------


class CqSet(M.QuerySet):
    """A user's queryset: chained filters and super() calls."""

    def named(self, prefix: str) -> Any:
        return self.filter(name__startswith=prefix)

    def big(self) -> Any:
        return self.filter(n__gte=3).order_by("-n")

    def first(self) -> Any:
        found = super().first()
        return ("first", found.name if found else None)

    def count(self, with_limit_and_skip: bool = False) -> Any:
        return 1000 + super().count(with_limit_and_skip)

    def delete(self, *args: Any, **kwargs: Any) -> Any:
        return ("deleted", super().delete(*args, **kwargs))


class CqManager(M.QuerySetManager):
    """A manager subclass: its own get_queryset."""

    @staticmethod
    def get_queryset(doc_cls: Any, queryset: Any) -> Any:
        return queryset.filter(n__lt=4)


class CqBase(M.Document):
    meta = {"abstract": True, "queryset_class": CqSet}
    name = M.StringField()
    n = M.IntField()

    @M.queryset_manager
    def odd(doc_cls: Any, queryset: Any) -> Any:
        return queryset.filter(n__in=[1, 3, 5])

    @M.queryset_manager
    def everything(queryset: Any) -> Any:
        return queryset.order_by("name")


class CqDoc(CqBase):
    small = CqManager()
    meta = {"allow_inheritance": True}


class CqSub(CqDoc):
    extra = M.IntField()

    @M.queryset_manager
    def objects(doc_cls: Any, queryset: Any) -> Any:
        return queryset.order_by("-n")


class CqPlain(M.Document):
    name = M.StringField()
    n = M.IntField()
    meta = {"queryset_class": CqSet}


def m_custom_querysets() -> None:
    """meta queryset_class on an abstract base, @queryset_manager in both
    forms, a QuerySetManager subclass with get_queryset, methods chaining and
    overriding first/count/delete with super(), a subclass's own objects."""
    LOG.on = False
    CqDoc.drop_collection()
    CqPlain.drop_collection()
    LOG.on = True
    for i in range(6):
        CqDoc(name=f"d{i}", n=i).save()
    for i in range(3):
        CqSub(name=f"s{i}", n=i, extra=i).save()
        CqPlain(name=f"p{i}", n=i).save()
    rec(
        "types",
        lambda: [
            type(q).__name__
            for q in (
                CqDoc.objects,
                CqSub.objects,
                CqDoc.odd,
                CqDoc.small,
                CqPlain.objects,
            )
        ],
    )
    rec("named", lambda: [d.name for d in CqDoc.objects.named("d").order_by("n")])
    rec("chain", lambda: [d.name for d in CqDoc.objects.named("d").big()])
    rec("chain_first", lambda: CqDoc.objects.named("d").big().first())
    rec("first_empty", lambda: CqDoc.objects(name="zz").first())
    rec("count", lambda: CqDoc.objects.named("s").count())
    rec("count_ls", lambda: CqDoc.objects.limit(2).count(True))
    rec("len", lambda: len(CqDoc.objects.named("d")))
    rec("odd", lambda: [d.name for d in CqDoc.odd.order_by("name")])
    rec("odd_sub", lambda: [d.name for d in CqSub.odd.order_by("name")])
    rec("everything", lambda: [d.name for d in CqDoc.everything])
    rec("everything_first", lambda: CqDoc.everything.first())
    rec("small", lambda: [d.name for d in CqDoc.small.order_by("n")])
    rec("small_sub", lambda: [d.name for d in CqSub.small.order_by("n")])
    rec("small_count", lambda: CqDoc.small.count())
    rec("sub_objects", lambda: [d.name for d in CqSub.objects])
    rec("sub_first", lambda: CqSub.objects.first())
    rec("sub_named", lambda: [d.name for d in CqSub.objects.named("s")])
    rec("plain", lambda: (CqPlain.objects.first(), CqPlain.objects.count()))
    rec("get", lambda: CqDoc.objects.named("d").get(n=2))
    rec(
        "in_bulk",
        lambda: sorted(
            d.name
            for d in CqDoc.objects.in_bulk(
                [CqDoc.objects.get(n=1, name="d1").pk]
            ).values()
        ),
    )
    rec("sliced", lambda: [d.name for d in CqDoc.objects.named("d").order_by("n")[1:3]])
    rec("clone_type", lambda: type(CqDoc.objects.named("d").clone()).__name__)
    rec("none", lambda: (CqDoc.objects.none().first(), CqDoc.objects.none().count()))
    rec(
        "using",
        lambda: (
            type(CqDoc.objects.using("other")).__name__,
            CqDoc.objects.using("other").count(),
        ),
    )
    rec("delete", lambda: CqDoc.objects.named("d5").delete())
    rec("sub_delete", lambda: CqSub.objects(n=0).delete())
    rec("doc_delete", lambda: CqDoc.objects.get(name="d4").delete())
    rec("update", lambda: CqDoc.objects.named("d").big().update(inc__n=10))
    rec(
        "stored",
        lambda: list(CqDoc._get_collection().find({}, {"_id": 0}).sort("name")),
    )


# -- errors ------------------------------------------------------------------


class ErrEmb(M.EmbeddedDocument):
    code = M.IntField(min_value=0, required=True)
    label = M.StringField(max_length=3)


class ErrDoc(M.Document):
    name = M.StringField(unique=True)
    team = M.StringField()
    num = M.IntField(unique_with="team")
    sparse_code = M.StringField(unique=True, sparse=True)
    emb = M.EmbeddedDocumentField(ErrEmb)
    embs = M.ListField(M.EmbeddedDocumentField(ErrEmb))
    emap = M.MapField(M.EmbeddedDocumentField(ErrEmb))
    nums = M.ListField(M.IntField(max_value=5))
    nmap = M.DictField(M.IntField())
    email = M.EmailField()
    meta = {"strict": True}


class ErrAbstract(M.Document):
    meta = {"abstract": True}
    name = M.StringField()


class ErrLoose(M.Document):
    name = M.StringField()
    meta = {"strict": False}


def validation(label: str, build: Any) -> None:
    """Record a document's validation error: its message, to_dict(), errors'
    types and str."""

    def check() -> Any:
        document = build()
        try:
            document.validate()
        except mongoengine.ValidationError as error:
            return [
                str(error),
                error.message,
                error.to_dict(),
                sorted(error.errors or {}),
                repr(error),
            ]
        return "valid"

    rec(label, check)


def e_errors() -> None:
    """get()'s DoesNotExist and MultipleObjectsReturned, NotUniqueError on save,
    insert and update (unique, unique_with, sparse), OperationError cases,
    InvalidQueryError, FieldDoesNotExist, LookUpError, ValidationError
    to_dict() of nested embedded documents, lists and maps."""
    LOG.on = False
    ErrDoc.drop_collection()
    ErrLoose.drop_collection()
    LOG.on = True
    rec("save_a", lambda: ErrDoc(name="a", team="x", num=1).save())
    rec("save_b", lambda: ErrDoc(name="b", team="x", num=2, sparse_code="s").save())
    rec("save_c", lambda: ErrDoc(name="c", team="y", num=1).save())
    rec("dup_unique", lambda: ErrDoc(name="a").save())
    rec("dup_unique_with", lambda: ErrDoc(name="z", team="x", num=1).save())
    rec("dup_sparse", lambda: ErrDoc(name="z2", sparse_code="s").save())
    rec("sparse_two_missing", lambda: ErrDoc(name="z3").save())
    rec("insert_dup", lambda: ErrDoc.objects.insert(ErrDoc(name="a")))
    rec(
        "insert_dup_many",
        lambda: ErrDoc.objects.insert([ErrDoc(name="n1"), ErrDoc(name="b")]),
    )
    rec("after_insert", lambda: sorted(ErrDoc.objects.scalar("name")))
    rec("update_dup", lambda: ErrDoc.objects(name="c").update(set__name="a"))
    rec("update_one_dup", lambda: ErrDoc.objects(name="c").update_one(set__name="a"))
    rec("modify_dup", lambda: ErrDoc.objects(name="c").modify(set__name="a"))
    rec("upsert_dup", lambda: ErrDoc.objects(name="q").upsert_one(set__sparse_code="s"))
    c = ErrDoc.objects.get(name="c")
    c.name = "a"
    rec("save_changed_dup", lambda: c.save())
    rec("doc_update_dup", lambda: ErrDoc.objects.get(name="b").update(set__name="a"))
    rec("get_missing", lambda: ErrDoc.objects.get(name="nope"))
    rec("get_multi", lambda: ErrDoc.objects.get(team="x"))
    rec("get_multi_all", lambda: ErrDoc.objects.get())
    rec("get_sub_missing", lambda: ErrDoc.objects(team="x").get(name="c"))
    rec(
        "is_doesnotexist",
        lambda: issubclass(ErrDoc.DoesNotExist, mongoengine.DoesNotExist),
    )
    rec("with_id_missing", lambda: ErrDoc.objects.with_id("5f00000000000000000000aa"))
    rec("update_no_ops", lambda: ErrDoc.objects.update())
    rec("update_one_no_ops", lambda: ErrDoc.objects.update_one())
    rec("update_bad_op", lambda: ErrDoc.objects.update(bad__name="x"))
    rec("update_bad_field", lambda: ErrDoc.objects.update(set__nofield="x"))
    rec("modify_no_ops", lambda: ErrDoc.objects(name="a").modify())
    rec("modify_upsert_remove", lambda: ErrDoc.objects.modify(upsert=True, remove=True))
    rec("doc_update_no_ops", lambda: ErrDoc.objects.get(name="a").update())
    rec("delete_unsaved", lambda: ErrDoc(name="u").delete())
    rec("update_unsaved", lambda: ErrDoc(name="u").update(set__name="v"))
    rec("reload_unsaved", lambda: ErrDoc(name="u").reload())
    rec("modify_unsaved", lambda: ErrDoc(name="u").modify(name="v"))
    rec("abstract_new", lambda: ErrAbstract(name="x"))
    rec("abstract_objects", lambda: ErrAbstract.objects)
    rec("bad_key", lambda: ErrDoc.objects(nofield="x").count())
    rec("bad_op", lambda: ErrDoc.objects(name__bogus="x").count())
    rec("bad_deep", lambda: ErrDoc.objects(emb__nofield=1).count())
    rec("bad_emb_op", lambda: ErrDoc.objects(emb__code__bogus=1).count())
    rec("bad_order", lambda: list(ErrDoc.objects.order_by("nofield")))
    rec("bad_only", lambda: list(ErrDoc.objects.only("nofield")))
    rec("bad_distinct", lambda: ErrDoc.objects.distinct("nofield"))
    rec("bad_scalar", lambda: list(ErrDoc.objects.scalar("nofield")))
    rec("bad_q_obj", lambda: ErrDoc.objects(M.Q(nofield=1) | M.Q(name="a")).count())
    rec("bad_raw_and_kw", lambda: ErrDoc.objects(__raw__={"x": 1}, name="a").count())
    rec("strict_ctor", lambda: ErrDoc(nofield=1))
    rec("strict_ctor_two", lambda: ErrDoc(nofield=1, other=2))
    rec("loose_ctor", lambda: ErrLoose(nofield=1).save())
    rec("loose_query", lambda: ErrLoose.objects(nofield=1).count())
    LOG.on = False
    ErrDoc._get_collection().insert_one({"name": "stray", "num": 77, "unknown": 1})
    LOG.on = True
    rec("strict_load", lambda: ErrDoc.objects.get(name="stray"))
    rec("strict_load_list", lambda: list(ErrDoc.objects(name="stray")))
    rec(
        "strict_load_pymongo", lambda: ErrDoc.objects(name="stray").as_pymongo().first()
    )
    rec("first_bad", lambda: ErrDoc.objects.get(name="stray", team__bogus=1))
    validation(
        "nested",
        lambda: ErrDoc(
            name=1,
            emb=ErrEmb(code=-1, label="long"),
            embs=[ErrEmb(code=1), ErrEmb(label="abcd")],
            emap={"k": ErrEmb(code=-3), "ok": ErrEmb(code=1)},
            nums=[1, 6, "x"],
            nmap={"a": "b"},
            email="nope",
        ),
    )
    validation("emb_missing", lambda: ErrDoc(name="v", emb=ErrEmb()))
    validation("list_only", lambda: ErrDoc(name="v", nums=[9]))
    validation("wrong_emb_class", lambda: ErrDoc(name="v", emb=ErrLoose()))
    validation("not_emb_in_list", lambda: ErrDoc(name="v", embs=["notemb"]))
    validation("str_emb", lambda: ErrDoc(name="v", emb="x"))
    rec("save_invalid", lambda: ErrDoc(name="v", nums=[9], emb=ErrEmb()).save())
    rec("update_invalid", lambda: ErrDoc.objects(name="a").update(set__nums=[9]))
    rec("update_invalid_type", lambda: ErrDoc.objects(name="a").update(set__num="x"))
    rec("push_invalid", lambda: ErrDoc.objects(name="a").update(push__embs="x"))
    rec("stored", lambda: list(ErrDoc.objects.order_by("name").as_pymongo()))


# -- lifecycle ---------------------------------------------------------------


class LcEmb(M.EmbeddedDocument):
    a = M.IntField()
    items = M.ListField(M.IntField())
    sub = M.DictField()


class LcRef(M.Document):
    name = M.StringField()


class LcDoc(M.Document):
    name = M.StringField(required=True)
    n = M.IntField(default=0)
    tags = M.ListField(M.StringField())
    data = M.DictField()
    emb = M.EmbeddedDocumentField(LcEmb)
    embs = M.ListField(M.EmbeddedDocumentField(LcEmb))
    emap = M.MapField(M.EmbeddedDocumentField(LcEmb))
    ref = M.ReferenceField(LcRef)
    refs = M.ListField(M.ReferenceField(LcRef))
    meta = {"allow_inheritance": True}

    def clean(self) -> None:
        """Refuses names starting with 'bad' (so clean=False matters)."""
        if self.name and self.name.startswith("bad"):
            raise mongoengine.ValidationError("bad name")


class LcSub(LcDoc):
    extra = M.IntField()


class LcCascading(M.Document):
    name = M.StringField()
    ref = M.ReferenceField(LcRef)
    meta = {"cascade": True}


class LcOther(M.Document):
    name = M.StringField()


class LcAbs(M.Document):
    meta = {"abstract": True, "allow_inheritance": True}
    name = M.StringField()


class LcAbsKid(LcAbs):
    k = M.IntField()


class LcAbsKid2(LcAbsKid):
    k2 = M.IntField()


class LcAbsNoInh(M.Document):
    meta = {"abstract": True}
    name = M.StringField()


class LcNoInhKid(LcAbsNoInh):
    k = M.IntField()
    meta = {"allow_inheritance": True}


class LcNoInhGrandKid(LcNoInhKid):
    g = M.IntField()


def changed(label: str, document: Any) -> None:
    """Record a document's changes and delta, then save it and read back."""
    rec(label + " changed", lambda: sorted(document._get_changed_fields()))
    rec(label + " delta", document._delta)
    rec(label + " save", document.save)
    rec(label + " stored", lambda: LcDoc.objects.as_pymongo().get(pk=document.pk))


def l_lifecycle() -> None:
    """Equality and hashes of saved, unsaved and other classes' documents;
    copies and deep copies of loaded documents saved; abstract bases with
    allow_inheritance; changes in place in lists, dicts and embedded
    documents; save's options (cascade, validate, clean, write_concern,
    signal_kwargs); update() and modify() on documents (False when not
    matched)."""
    LOG.on = False
    for cls in (LcDoc, LcRef, LcOther, LcAbsKid, LcNoInhKid, LcCascading):
        cls.drop_collection()
    LOG.on = True
    r = LcRef(name="r").save()
    d = LcDoc(
        name="d",
        tags=["a", "b", "c"],
        data={"x": 1, "y": {"z": [1, 2]}},
        emb=LcEmb(a=1, items=[1, 2], sub={"k": 1}),
        embs=[LcEmb(a=1), LcEmb(a=2, items=[3])],
        emap={"m": LcEmb(a=5)},
        ref=r,
        refs=[r],
    ).save()
    same = LcDoc.objects.get(pk=d.pk)
    sub = LcSub(name="s").save()
    rec(
        "eq",
        lambda: [
            d == same,
            d != same,
            LcDoc(name="x") == LcDoc(name="x"),
            LcDoc(name="x") == d,
            d == LcOther(id=d.pk),
            LcSub.objects.get() == LcDoc.objects.get(pk=sub.pk),
            d == d.pk,
            d == None,  # noqa: E711
        ],
    )
    rec(
        "hash",
        lambda: [
            hash(d) == hash(same),
            len({d, same, LcDoc.objects.get(pk=d.pk)}),
            len({LcDoc(name="u"), LcDoc(name="u")}),
            hash(LcDoc(name="u")) is not None,
            same in [d],
            same in {d},
        ],
    )
    unsaved = LcDoc(name="u")
    h = hash(unsaved)
    unsaved.save()
    rec("hash_after_save", lambda: [hash(unsaved) == h, unsaved in {unsaved}])
    c1 = copy.copy(LcDoc.objects.get(pk=d.pk))
    c1.tags.append("copy")
    c1.emb.a = 9
    changed("copy", c1)
    c2 = copy.deepcopy(LcDoc.objects.get(pk=d.pk))
    c2.tags.append("deep")
    c2.emb.items.append(7)
    c2.embs[1].a = 22
    c2.emap["m"].a = 55
    c2.data["y"]["z"].append(3)
    changed("deepcopy", c2)
    original = LcDoc.objects.get(pk=d.pk)
    shallow = copy.copy(original)
    shallow.emb.items.append(6)
    shallow.tags.append("shallow")
    rec(
        "original_after_copy_change",
        lambda: (original._get_changed_fields(), original._delta()),
    )
    p1 = pickle.loads(pickle.dumps(LcDoc.objects.get(pk=d.pk)))
    rec("unpickled", lambda: p1)
    p1.tags.append("pickled")
    p1.emb.items.append(4)
    p1.embs[0].sub["p"] = 1
    p1.emap["m"].a = 77
    p1.data["new"] = [1]
    changed("pickled", p1)
    p2 = pickle.loads(pickle.dumps(LcDoc.objects.only("tags", "emb").get(pk=d.pk)))
    p2.tags.append("partial")
    p2.emb.a = 3
    changed("pickled_partial", p2)
    c3 = copy.deepcopy(LcDoc.objects.get(pk=d.pk))
    c3.id = None
    c3.name = "clone"
    rec("deepcopy_new", lambda: (c3.save(), c3._created))
    rec("abs_objects", lambda: LcAbs.objects)
    rec("abs_kid_save", lambda: LcAbsKid(name="k", k=1).save())
    rec("abs_kid2_save", lambda: LcAbsKid2(name="k2", k=2, k2=3).save())
    rec(
        "noinh_save",
        lambda: (
            LcNoInhKid(name="a", k=1).save(),
            LcNoInhGrandKid(name="b", k=2, g=3).save(),
        ),
    )
    rec(
        "noinh_list",
        lambda: (
            list(LcNoInhKid.objects.order_by("name")),
            list(LcNoInhGrandKid.objects),
        ),
    )
    rec("noinh_raw", lambda: list(LcNoInhKid.objects.order_by("name").as_pymongo()))
    rec(
        "noinh_names",
        lambda: (
            LcNoInhKid._get_collection_name(),
            LcNoInhGrandKid._class_name,
            LcNoInhKid._subclasses,
        ),
    )
    rec("abs_kid_list", lambda: list(LcAbsKid.objects.order_by("name")))
    rec("abs_kid2_list", lambda: list(LcAbsKid2.objects))
    rec("abs_kid_raw", lambda: list(LcAbsKid.objects.order_by("name").as_pymongo()))
    rec(
        "abs_kid_coll",
        lambda: (LcAbsKid._get_collection_name(), LcAbsKid2._get_collection_name()),
    )
    e = LcDoc.objects.get(pk=d.pk)
    e.tags[1] = "B"
    e.tags.remove("c")
    e.data["x"] = 2
    e.data["y"]["z"].pop()
    e.emb.sub["k"] = 2
    e.embs.pop(0)
    changed("inplace1", e)
    e = LcDoc.objects.get(pk=d.pk)
    e.tags.insert(0, "first")
    e.tags.sort()
    del e.data["x"]
    e.emb.items.extend([8, 9])
    e.embs[0].items.append(4)
    e.emap["new"] = LcEmb(a=6)
    changed("inplace2", e)
    e = LcDoc.objects.get(pk=d.pk)
    e.tags.clear()
    e.data.clear()
    e.emb = None
    e.embs += [LcEmb(a=7)]
    e.emap.pop("m")
    changed("inplace3", e)
    e = LcDoc.objects.get(pk=d.pk)
    e.tags.reverse()
    e.data.setdefault("q", []).append(1)
    e.data.update({"w": 2})
    e.embs[0] = LcEmb(a=100)
    e.refs.append(LcRef(name="r2").save())
    changed("inplace4", e)
    e = LcDoc.objects.get(pk=d.pk)
    e.tags *= 2
    e.data.popitem()
    e.embs[-1].sub["deep"] = {"x": 1}
    changed("inplace5", e)
    LOG.on = False
    LcDoc.objects(pk=d.pk).update(set__emb=LcEmb(a=1, items=[1, 2, 3], sub={"k": 1}))
    LOG.on = True
    e = LcDoc.objects.get(pk=d.pk)
    e.tags[0:2] = ["s1", "s2", "s3"]
    del e.embs[0:1]
    e.emb.items[1:] = []
    changed("slices1", e)
    e = LcDoc.objects.get(pk=d.pk)
    del e.tags[-1]
    e.tags += ["t"]
    e.emb.items += [5]
    e.emb.items *= 2
    e.data["y"] = {"z": [9]}
    e.data["y"]["z"].insert(0, 8)
    changed("slices2", e)
    e = LcDoc.objects.get(pk=d.pk)
    e.embs.append(LcEmb(a=3))
    e.embs[-1].items.append(1)
    e.embs[0].sub["n"] = {"deep": [1]}
    e.embs[0].sub["n"]["deep"].append(2)
    e.emap["new"].items.extend([1, 2])
    e.emap["new"].sub.update(a=1)
    changed("nested1", e)
    e = LcDoc.objects.get(pk=d.pk)
    e.emap["new"] = e.emap["new"]
    e.embs[0] = e.embs[0]
    e.emb.items.sort(reverse=True)
    e.data.pop("y", None)
    e.data["k.dot"] = 1
    changed("reassigned", e)
    e = LcDoc.objects.get(pk=d.pk)
    e.tags = e.tags
    e.data = dict(e.data)
    e.emb = e.emb
    changed("same_values", e)
    f = LcDoc.objects.get(pk=d.pk)
    f.ref.name = "through"
    rec("save_cascade", lambda: f.save(cascade=True))
    rec("ref_after_cascade", lambda: LcRef.objects.as_pymongo().get(pk=r.pk))
    f.ref.name = "not-through"
    rec("save_plain", lambda: f.save())
    rec("ref_after_plain", lambda: LcRef.objects.as_pymongo().get(pk=r.pk))
    f.ref.name = "kw"
    f.refs[0].name = "kw-list"
    f.name = "cascading"
    rec(
        "save_cascade_kwargs",
        lambda: f.save(
            cascade=True,
            cascade_kwargs={"validate": False},
            signal_kwargs={"who": "cascade"},
        ),
    )
    rec("ref_after_kwargs", lambda: list(LcRef.objects.order_by("id").as_pymongo()))
    f.ref.name = 5
    rec("save_cascade_invalid", lambda: f.save(cascade=True))
    rec("ref_after_invalid", lambda: list(LcRef.objects.order_by("id").as_pymongo()))
    f.ref.name = "fixed"
    c = LcCascading(name="c", ref=f.ref).save()
    c.ref.name = "by-meta"
    c.name = "c2"
    rec("meta_cascade", lambda: c.save())
    rec("ref_after_meta", lambda: list(LcRef.objects.order_by("id").as_pymongo()))
    c.ref.name = "not-by-meta"
    rec("meta_cascade_off", lambda: c.save(cascade=False))
    rec("ref_after_off", lambda: list(LcRef.objects.order_by("id").as_pymongo()))
    g = LcDoc.objects.get(pk=d.pk)
    g.name = None
    rec("save_invalid", lambda: g.save())
    rec("save_novalidate", lambda: g.save(validate=False))
    rec("stored_novalidate", lambda: LcDoc.objects.as_pymongo().get(pk=d.pk))
    g.name = "bad1"
    rec("save_clean", lambda: g.save())
    rec("save_noclean", lambda: g.save(clean=False))
    rec("stored_noclean", lambda: LcDoc.objects.as_pymongo().get(pk=d.pk))
    g.name = "wc"
    rec("save_wc", lambda: g.save(write_concern={"w": 1, "j": True}))
    g.n = 3
    rec("save_wc0", lambda: g.save(write_concern={"w": 0}))
    g.n = 4
    rec("save_sigkw", lambda: g.save(signal_kwargs={"who": "me"}))
    rec("doc_update", lambda: g.update(inc__n=1, push__tags="upd"))
    rec("doc_update_kw", lambda: g.update(n=50))
    rec("after_update", lambda: g)
    rec("reloaded", lambda: g.reload())
    rec("doc_update_upsert", lambda: LcDoc(name="nu").update(upsert=True, n=1))
    rec("modify_ok", lambda: g.modify(query={"n": 50}, n=51))
    rec("after_modify", lambda: g)
    rec("modify_false", lambda: g.modify(query={"n": 0}, n=52))
    rec("after_false", lambda: g)
    rec("modify_pk", lambda: g.modify(id=None))
    rec("modify_unknown", lambda: g.modify(nofield=1))
    rec("stored_all", lambda: list(LcDoc.objects.order_by("name").as_pymongo()))
    rec("delete_then_save", lambda: (g.delete(), g.save()))
    rec("stored_end", lambda: list(LcDoc.objects.order_by("name").as_pymongo()))


def t_iteration_across_blocks() -> None:
    """An iteration begun in one thread continued while another thread is in
    a no_dereference block of its class (and after), select_related and
    in_bulk in the other thread meanwhile, an init receiver connected by one
    thread while another iterates."""
    th_seed()
    for i in range(8):
        ThDoc(
            key=f"k{i}", n=i, ref=ThRef(key=f"r{i % 3}"), refs=[ThRef(key="r2")]
        ).save()
    steps = [threading.Event() for _ in range(4)]

    def iterating() -> Any:
        out = []
        qs = ThDoc.objects.order_by("key")
        it = iter(qs)
        out.append(repr(next(it).ref))
        steps[0].set()
        steps[1].wait(10)
        out.append([repr(next(it).ref) for _ in range(2)])
        out.append(
            [repr(d.ref) for d in ThDoc.objects.order_by("key").select_related()][:2]
        )
        out.append(
            sorted(repr(d.ref) for d in ThDoc.objects.in_bulk(["k1", "k2"]).values())
        )
        out.append(repr(ThDoc.objects.get(key="k3").refs))
        steps[2].set()
        steps[3].wait(10)
        out.append([repr(d.ref) for d in it])
        return out

    def blocking() -> Any:
        out = []
        steps[0].wait(10)
        with no_dereference(ThDoc):
            steps[1].set()
            steps[2].wait(10)
            out.append([repr(d.ref) for d in ThDoc.objects.order_by("key")][:2])
            out.append(repr(ThRef.objects.first()))
        out.append(repr(ThDoc.objects.first().ref))
        steps[3].set()
        return out

    rec("interleaved", lambda: threaded({"it": iterating, "block": blocking}))
    seen: list = []

    def on_init(sender: Any, document: Any, **kwargs: Any) -> None:
        seen.append(document.key)

    ready = threading.Event()
    go = threading.Event()

    def reading() -> Any:
        it = iter(ThDoc.objects.order_by("key"))
        first = next(it).key
        ready.set()
        go.wait(10)
        return [first, [d.key for d in it]]

    def connecting() -> Any:
        ready.wait(10)
        M.post_init.connect(on_init, sender=ThDoc)
        go.set()
        return "connected"

    try:
        rec("receiver", lambda: threaded({"r": reading, "c": connecting}))
        rec("seen", lambda: sorted(seen))
        rec("after", lambda: [d.key for d in ThDoc.objects.order_by("key")[:2]])
        rec("seen2", lambda: sorted(seen))
    finally:
        M.post_init.disconnect(on_init, sender=ThDoc)


class QfIdx(M.Document):
    name = M.StringField(unique=True)
    n = M.IntField()
    meta = {"indexes": ["n", {"fields": ["-n", "name"], "sparse": True}]}


class QfCapped(M.Document):
    name = M.StringField()
    meta = {"max_documents": 10, "max_size": 4096}


class QfNoAuto(M.Document):
    name = M.StringField()
    meta = {"auto_create_index": False, "indexes": ["name"]}


class QfSeq(M.Document):
    num = M.SequenceField()
    name = M.StringField()


class QfDyn(M.DynamicDocument):
    name = M.StringField()
    meta = {"indexes": ["name"]}


class QfOnSave(M.Document):
    name = M.StringField()
    meta = {"auto_create_index_on_save": True, "indexes": ["name"]}


class QfOnSaveOnly(M.Document):
    name = M.StringField()
    meta = {
        "auto_create_index": False,
        "auto_create_index_on_save": True,
        "indexes": ["-name"],
    }


def q_counter_first_use() -> None:
    """query_counter around the first use of classes (indexes, a capped
    collection, no automatic indexes, a sequence, a dynamic class), their
    use again after drop_collection, on another alias by switch_db and
    using(), ensure_indexes, list_indexes, compare_indexes."""
    LOG.on = False
    for cls in (QfIdx, QfCapped, QfNoAuto, QfSeq, QfDyn, QfOnSave, QfOnSaveOnly):
        cls._get_db().drop_collection(cls._get_collection_name())
        cls._collection = None
    M.get_db()["mongoengine.counters"].drop()
    LOG.on = True
    for cls in (QfOnSave, QfOnSaveOnly):
        counted(cls.__name__ + " first", lambda c=cls: c.objects.first())
        counted(cls.__name__ + " save", lambda c=cls: c(name="a").save())
        counted(cls.__name__ + " save2", lambda c=cls: c(name="b").save())
        saved = cls.objects.get(name="a")
        saved.name = "c"
        counted(cls.__name__ + " change", lambda d=saved: d.save())
        counted(cls.__name__ + " insert", lambda c=cls: c.objects.insert(c(name="i")))
        counted(cls.__name__ + " create", lambda c=cls: c.objects.create(name="j"))
        counted(cls.__name__ + " modify", lambda d=saved: d.modify(name="m"))
        counted(
            cls.__name__ + " indexes",
            lambda c=cls: sorted(c._get_collection().index_information()),
        )
    counted("idx_first", lambda: QfIdx.objects.first())
    counted("idx_save", lambda: QfIdx(name="a", n=1).save())
    counted("capped_save", lambda: QfCapped(name="a").save())
    counted("capped_count", lambda: QfCapped.objects.count())
    counted("noauto_save", lambda: QfNoAuto(name="a").save())
    counted(
        "noauto_indexes", lambda: sorted(QfNoAuto._get_collection().index_information())
    )
    counted("seq_save", lambda: QfSeq(name="a").save())
    counted("seq_save2", lambda: QfSeq(name="b").save())
    counted(
        "seq_insert",
        lambda: len(QfSeq.objects.insert([QfSeq(name="c"), QfSeq(name="d")])),
    )
    counted("dyn_save", lambda: QfDyn(name="a", extra=1).save())
    counted("idx_drop", lambda: QfIdx.drop_collection())
    counted("idx_after_drop", lambda: QfIdx(name="b", n=2).save())
    counted("idx_ensure", lambda: QfIdx.ensure_indexes())
    counted("idx_list", lambda: QfIdx.list_indexes())
    counted("idx_compare", lambda: QfIdx.compare_indexes())

    def switched() -> Any:
        with switch_db(QfIdx, "other") as cls:
            cls(name="o", n=1).save()
            return cls.objects.count()

    counted("switch_db_default", switched)
    counted("switch_db_other", switched, "other")
    counted("using_other", lambda: QfIdx.objects.using("other").count(), "other")
    counted(
        "noauto_drop_save",
        lambda: (QfNoAuto.drop_collection(), QfNoAuto(name="b").save())[1],
    )


class CmBase(M.Document):
    meta = {"abstract": True, "queryset_class": M.QuerySetNoCache}
    name = M.StringField()
    n = M.IntField()

    @M.queryset_manager
    def objects(doc_cls: Any, queryset: Any) -> Any:
        return queryset.order_by("name")

    @M.queryset_manager
    def counted_n(doc_cls: Any, queryset: Any) -> Any:
        return queryset.filter(n__gt=0).count()


class CmDoc(CmBase):
    meta = {"allow_inheritance": True}

    @M.queryset_manager
    def named(doc_cls: Any, queryset: Any, name: str) -> Any:
        return queryset.filter(name=name)


class CmSub(CmDoc):
    pass


class CmOwnSet(M.QuerySet):
    def mine(self) -> Any:
        return self.filter(n=1)


class CmManagerSet(M.QuerySetManager):
    queryset_class = CmOwnSet


class CmOwn(M.Document):
    name = M.StringField()
    n = M.IntField()
    objects = CmManagerSet()
    all_of = M.QuerySetManager()


def m_managers_more() -> None:
    """An objects manager on an abstract base (with QuerySetNoCache), a
    manager returning a number, a QuerySetManager subclass naming its
    queryset_class, iteration twice of a no-cache set, managers on
    subclasses, deletes through managers."""
    LOG.on = False
    CmDoc.drop_collection()
    CmOwn.drop_collection()
    LOG.on = True
    for i, name in enumerate(["c", "a", "b"]):
        CmDoc(name=name, n=i).save()
        CmOwn(name=name, n=i).save()
    CmSub(name="s", n=5).save()
    rec(
        "types",
        lambda: [
            type(x).__name__
            for x in (CmDoc.objects, CmSub.objects, CmOwn.objects, CmOwn.all_of)
        ],
    )
    rec("ordered", lambda: [d.name for d in CmDoc.objects])
    qs = CmDoc.objects
    rec("twice", lambda: ([d.name for d in qs], [d.name for d in qs]))
    rec("len_nocache", lambda: len(list(CmDoc.objects)))
    rec("first", lambda: CmDoc.objects.first())
    rec("sub", lambda: [d.name for d in CmSub.objects])
    rec("counted", lambda: (CmDoc.counted_n, CmSub.counted_n))
    rec("mine", lambda: [d.name for d in CmOwn.objects.mine()])
    rec(
        "all_of",
        lambda: (type(CmOwn.all_of.filter(n=1)).__name__, CmOwn.all_of.count()),
    )
    rec("named_type", lambda: type(CmDoc.named).__name__)
    rec("named", lambda: [d.name for d in CmDoc.named("b")])
    rec("named_sub", lambda: [d.name for d in CmSub.named("s")])
    rec("named_first", lambda: CmDoc.named("c").first())
    rec("abstract_objects", lambda: CmBase.objects)
    rec("delete", lambda: CmDoc.objects(name="a").delete())
    rec("stored", lambda: list(CmDoc.objects.as_pymongo()))


class Er2Tag(M.Document):
    name = M.StringField()


class Er2Doc(M.Document):
    ref = M.ReferenceField(Er2Tag)
    refs = M.ListField(M.ReferenceField(Er2Tag))
    gen = M.GenericReferenceField(choices=[Er2Tag])
    m = M.MapField(M.IntField())
    choice = M.StringField(choices=["a", "b"])
    req = M.StringField(required=True)
    regex = M.StringField(regex=r"^x+$")


def e_errors_more() -> None:
    """References to unsaved documents, generic choices, choices, required,
    regex, unique checks on unsaved values, errors of get() with Q objects,
    slices, order_by, bad ids; messages of each."""
    LOG.on = False
    Er2Tag.drop_collection()
    Er2Doc.drop_collection()
    LOG.on = True
    unsaved = Er2Tag(name="u")
    saved = Er2Tag(name="s").save()
    rec("ref_unsaved", lambda: Er2Doc(req="r", ref=unsaved).save())
    rec("refs_unsaved", lambda: Er2Doc(req="r", refs=[saved, unsaved]).save())
    rec("gen_unsaved", lambda: Er2Doc(req="r", gen=unsaved).save())
    rec("gen_bad_choice", lambda: Er2Doc(req="r", gen=Er2Doc(req="x")).save())
    rec("map_bad", lambda: Er2Doc(req="r", m={"a": "x"}).save())
    rec("map_bad_key", lambda: Er2Doc(req="r", m={1: 1}).save())
    rec("choice_bad", lambda: Er2Doc(req="r", choice="c").save())
    rec("req_missing", lambda: Er2Doc().save())
    rec("regex_bad", lambda: Er2Doc(req="r", regex="y").save())
    rec(
        "all_bad",
        lambda: Er2Doc(ref=unsaved, choice="z", regex="y", m={"a": "b"}).save(),
    )
    rec("ref_wrong_class", lambda: Er2Doc(req="r", ref=Er2Doc(req="x")).save())
    rec("ref_id_string", lambda: Er2Doc(req="r", ref="nope").save())
    rec("query_unsaved_ref", lambda: Er2Doc.objects(ref=unsaved).count())
    rec("query_bad_id", lambda: Er2Doc.objects(id="bad").first())
    rec("query_ref_bad", lambda: Er2Doc.objects(ref="bad").first())
    rec("get_q", lambda: Er2Doc.objects.get(M.Q(req="none") | M.Q(req="none2")))
    rec("slice_neg", lambda: Er2Doc.objects[-1])
    rec("slice_step", lambda: Er2Doc.objects[::2])
    rec("index_out", lambda: Er2Doc.objects[100])
    rec("order_bad", lambda: Er2Doc.objects.order_by("+nofield").first())
    rec("update_ref_unsaved", lambda: Er2Doc.objects.update(set__ref=unsaved))
    rec("update_choice", lambda: Er2Doc.objects.update(set__choice="z"))
    rec("update_regex", lambda: Er2Doc.objects.update(set__regex="y"))
    rec("push_unsaved", lambda: Er2Doc.objects.update(push__refs=unsaved))
    rec(
        "insert_unsaved_ref",
        lambda: Er2Doc.objects.insert([Er2Doc(req="r", ref=unsaved)]),
    )
    rec("insert_invalid", lambda: Er2Doc.objects.insert([Er2Doc()]))
    rec("insert_not_doc", lambda: Er2Doc.objects.insert(["x"]))
    rec("insert_saved", lambda: Er2Doc.objects.insert([Er2Doc(req="a").save()]))
    rec("abstract_save", lambda: ErrAbstract(name="x").save())
    rec("abstract_delete", lambda: ErrAbstract(name="x").delete())
    rec("abstract_validate", lambda: ErrAbstract(name=1).validate())
    rec("abstract_reload", lambda: ErrAbstract(name="x").reload())
    rec("abstract_collection", lambda: ErrAbstract._get_collection())
    rec("abstract_drop", lambda: ErrAbstract.drop_collection())
    rec("upsert_no_ops", lambda: Er2Doc.objects.update(upsert=True))
    rec("update_raw_empty", lambda: Er2Doc.objects.update(__raw__={}))
    rec("update_raw_bad", lambda: Er2Doc.objects.update(__raw__={"$bogus": {"a": 1}}))
    rec("get_limited", lambda: Er2Doc.objects.limit(1).get())
    rec("get_skipped", lambda: Er2Doc.objects.skip(100).get())
    rec(
        "modify_sorted_bad",
        lambda: Er2Doc.objects.order_by("nofield").modify(set__req="q"),
    )
    rec("delete_limited", lambda: Er2Doc.objects.limit(1).delete())
    rec("delete_skipped", lambda: Er2Doc.objects.skip(1).delete())
    rec("count_bad_hint", lambda: Er2Doc.objects.hint("nope_1").count())
    rec("first_bad_hint", lambda: Er2Doc.objects.hint("nope_1").first())
    rec("distinct_ref", lambda: Er2Doc.objects.distinct("ref"))
    rec("stored", lambda: list(Er2Doc.objects.as_pymongo()))


class SwTarget(M.Document):
    name = M.StringField()
    meta = {"allow_inheritance": True}


class SwTargetSub(SwTarget):
    x = M.IntField()


class SwEmb(M.EmbeddedDocument):
    t = M.ReferenceField(SwTarget)


class SwHolder(M.Document):
    name = M.StringField()
    t = M.ReferenceField(SwTarget)
    td = M.ReferenceField(SwTarget, dbref=True)
    ts = M.ListField(M.ReferenceField(SwTarget))
    tm = M.MapField(M.ReferenceField(SwTarget))
    g = M.GenericReferenceField()
    lz = M.LazyReferenceField(SwTarget)
    e = M.EmbeddedDocumentField(SwEmb)


class SwCached(M.Document):
    name = M.StringField()
    cr = M.CachedReferenceField(SwTarget, fields=["name"])


def sw_reads(label: str, cls: Any = None) -> None:
    """Each way of reading the holders (their references dereferenced)."""
    cls = cls or SwHolder
    rec(label + " list", lambda: list(cls.objects.order_by("name")))
    rec(
        label + " deref",
        lambda: [
            (h.t, h.td, h.ts, h.tm, h.g, h.e.t if h.e else None)
            for h in cls.objects.order_by("name")
        ],
    )
    rec(
        label + " lazy",
        lambda: [h.lz.fetch() if h.lz else None for h in cls.objects.order_by("name")],
    )
    rec(label + " sr", lambda: cls.objects.order_by("name").select_related())
    rec(label + " get", lambda: cls.objects.get(name="h1").t)
    rec(label + " first", lambda: cls.objects.order_by("name").first().ts)
    rec(
        label + " in_bulk",
        lambda: sorted(
            (h.name, h.t)
            for h in cls.objects.in_bulk(list(cls.objects.scalar("id"))).values()
        ),
    )
    rec(label + " scalar", lambda: list(cls.objects.order_by("name").scalar("t", "ts")))
    rec(label + " nd", lambda: list(cls.objects.order_by("name").no_dereference()))
    rec(label + " raw", lambda: list(cls.objects.order_by("name").as_pymongo()))


def d_switched_targets() -> None:
    """Documents referring to a class read, saved and queried while that
    class is switched to another collection or database (switch_collection,
    switch_db blocks; a referred document's switch_db/switch_collection)."""
    LOG.on = False
    SwTarget.drop_collection()
    SwHolder.drop_collection()
    SwCached.drop_collection()
    db = M.get_db()
    db["sw_alt"].drop()
    M.get_db("other")["sw_target"].drop()
    LOG.on = True
    t1 = SwTarget(name="t1").save()
    t2 = SwTargetSub(name="t2", x=1).save()
    for i, t in enumerate([t1, t2]):
        SwHolder(
            name=f"h{i}", t=t, td=t, ts=[t1, t2], tm={"k": t}, g=t, lz=t, e=SwEmb(t=t)
        ).save()
        SwCached(name=f"c{i}", cr=t).save()
    with switch_collection(SwTarget, "sw_alt") as Alt:
        Alt(id=t1.pk, name="alt1").save()
        sw_reads("in coll")
        rec("coll save", lambda: SwHolder(name="h2", t=t1, td=t2, ts=[t1], g=t1).save())
        rec("coll cached", lambda: list(SwCached.objects.order_by("name")))
        rec("coll query", lambda: SwHolder.objects(td=t2).count())
        h = SwHolder.objects.get(name="h0")
        h.ts.append(t2)
        h.name = "h0b"
        rec("coll change save", lambda: h.save())
        rec("coll reload", lambda: h.reload())
    sw_reads("after coll")
    with switch_db(SwTarget, "other") as Other:
        Other(id=t2.pk, name="other2").save()
        sw_reads("in db")
        rec("db save", lambda: SwHolder(name="h3", t=t2, td=t2, ts=[t2]).save())
        rec("db cached", lambda: list(SwCached.objects.order_by("name")))
        rec("db cached save", lambda: SwCached(name="c9", cr=t2).save())
    sw_reads("after db")
    with switch_db(SwHolder, "other") as OH:
        rec("holder other", lambda: OH(name="o", t=t1, ts=[t1, t2]).save())
        sw_reads("holder in db", OH)
    rec("using", lambda: [(h.t, h.ts) for h in SwHolder.objects.using("other")])
    t1.switch_collection("sw_alt")
    rec("ref switched doc", lambda: SwHolder(name="h4", t=t1, td=t1).save())
    rec("stored", lambda: list(SwHolder.objects.order_by("name").as_pymongo()))


class FwDoc(M.Document):
    name = M.StringField(unique=True)
    n = M.IntField()
    tags = M.ListField(M.StringField())
    emb = M.EmbeddedDocumentField(LcEmb)


class FwKeyed(M.Document):
    key = M.StringField(primary_key=True)
    n = M.IntField()


def failed(label: str, document: Any, action: Any) -> None:
    """Record ``action()`` failing (or not), then the document after it: its
    id, flags, changes and delta."""
    rec(label, action)
    rec(
        label + " after",
        lambda: (document, document.pk, document._created, document._delta()),
    )


def l_failed_writes() -> None:
    """Documents after a save, insert, update or modify the server refuses
    (duplicate keys, a save condition not met, force_insert of a stored id),
    then saved again once fixed; what is stored."""
    LOG.on = False
    FwDoc.drop_collection()
    FwKeyed.drop_collection()
    LOG.on = True
    FwDoc(name="a", n=1).save()
    FwKeyed(key="k", n=1).save()
    new = FwDoc(name="a", n=2, tags=["x"], emb=LcEmb(a=1))
    failed("new dup", new, new.save)
    new.name = "b"
    failed("new fixed", new, new.save)
    new.name = "a"
    new.tags.append("y")
    failed("existing dup", new, new.save)
    new.name = "c"
    failed("existing fixed", new, new.save)
    forced = FwDoc(id=new.pk, name="z")
    failed("force dup id", forced, lambda: forced.save(force_insert=True))
    failed("plain save of that id", forced, forced.save)
    cond = FwDoc.objects.get(name="a")
    cond.n = 5
    failed("condition unmet", cond, lambda: cond.save(save_condition={"n": 99}))
    failed("condition met", cond, lambda: cond.save(save_condition={"n": 1}))
    keyed = FwKeyed(key="k", n=2)
    failed("keyed new same key", keyed, keyed.save)
    keyed2 = FwKeyed(key="k", n=3)
    failed("keyed force", keyed2, lambda: keyed2.save(force_insert=True))
    batch = [FwDoc(name="d"), FwDoc(name="a"), FwDoc(name="e")]
    rec("insert dup", lambda: FwDoc.objects.insert(batch))
    rec("insert after", lambda: [(d.pk, d._created, d.name) for d in batch])
    rec(
        "insert again",
        lambda: FwDoc.objects.insert([d for d in batch if d.name != "a"]),
    )
    w0 = FwDoc(name="a")
    failed("w0 dup", w0, lambda: w0.save(write_concern={"w": 0}))
    upd = FwDoc.objects.get(name="z")
    failed("doc update dup", upd, lambda: upd.update(set__name="a"))
    failed("doc modify dup", upd, lambda: upd.modify(name="a"))
    rec("stored", lambda: list(FwDoc.objects.order_by("name").as_pymongo()))
    rec("stored keyed", lambda: list(FwKeyed.objects.as_pymongo()))


class OvSet(M.QuerySet):
    """A user's queryset overriding the methods results are built through."""

    def __next__(self) -> Any:
        document = super().__next__()
        if isinstance(document, M.Document):
            document.seen = getattr(document, "seen", 0) + 1
        return document

    def in_bulk(self, object_ids: Any) -> Any:
        found = super().in_bulk(object_ids)
        return {key: ("bulk", value.name) for key, value in found.items()}

    def _populate_cache(self) -> None:
        self.populated = getattr(self, "populated", 0) + 1
        super()._populate_cache()

    def __getitem__(self, key: Any) -> Any:
        got = super().__getitem__(key)
        return ("item", got.name) if isinstance(got, M.Document) else got


class OvSetNoCache(M.QuerySetNoCache):
    def __next__(self) -> Any:
        return ("nc", super().__next__().name)


class OvTag(M.Document):
    name = M.StringField()
    meta = {"queryset_class": OvSet}


class OvDoc(M.Document):
    name = M.StringField()
    tag = M.ReferenceField(OvTag)
    tags = M.ListField(M.ReferenceField(OvTag))
    meta = {"queryset_class": OvSet}


class OvPlain(M.Document):
    name = M.StringField()
    meta = {"queryset_class": OvSetNoCache}


def m_overriding_querysets() -> None:
    """Querysets of a user's class overriding __next__, in_bulk,
    _populate_cache, __getitem__ and __iter__: listing, first, get, slices,
    select_related, dereferences (which call the referred class's in_bulk),
    reload."""
    LOG.on = False
    for cls in (OvTag, OvDoc, OvPlain):
        cls.drop_collection()
    LOG.on = True
    tags = [OvTag(name=f"t{i}").save() for i in range(3)]
    for i in range(4):
        OvDoc(name=f"d{i}", tag=tags[i % 3], tags=tags[:2]).save()
        OvPlain(name=f"p{i}").save()
    qs = OvDoc.objects.order_by("name")
    rec("list", lambda: [(d.name, getattr(d, "seen", None)) for d in qs])
    rec("populated", lambda: getattr(qs, "populated", None))
    rec("list_again", lambda: [(d.name, getattr(d, "seen", None)) for d in qs])
    rec("first", lambda: OvDoc.objects.order_by("name").first())
    rec("get", lambda: getattr(OvDoc.objects.get(name="d1"), "seen", None))
    rec("index", lambda: OvDoc.objects.order_by("name")[1])
    rec("slice", lambda: list(OvDoc.objects.order_by("name")[1:3]))
    rec("in_bulk", lambda: sorted(OvDoc.objects.in_bulk([t.pk for t in tags]).values()))
    rec(
        "in_bulk_tags",
        lambda: sorted(OvTag.objects.in_bulk([t.pk for t in tags]).values()),
    )
    rec("deref", lambda: [(d.tag, d.tags) for d in OvDoc.objects.order_by("name")])
    rec(
        "sr",
        lambda: [
            (d.tag, d.tags) for d in OvDoc.objects.order_by("name").select_related()
        ],
    )
    rec("next", lambda: getattr(next(OvDoc.objects.order_by("name")), "seen", None))
    rec("len", lambda: len(OvDoc.objects))
    rec("scalar", lambda: list(OvDoc.objects.order_by("name").scalar("name")))
    rec("pymongo", lambda: list(OvDoc.objects.order_by("name").as_pymongo()))
    rec("reload", lambda: OvDoc.objects.order_by("name").first().reload())
    rec("nocache", lambda: list(OvPlain.objects.order_by("name")))
    rec("nocache_first", lambda: OvPlain.objects.order_by("name").first())
    rec("nocache_count", lambda: OvPlain.objects.count())


class QcFile(M.Document):
    name = M.StringField()
    f = M.FileField()
    fs = M.ListField(M.FileField())


def q_counter_files() -> None:
    """query_counter around FileField work: put, read, replace, delete, a
    document's save and delete, a queryset's delete, a list of files."""
    LOG.on = False
    QcFile.drop_collection()
    M.get_db()["fs.files"].drop()
    M.get_db()["fs.chunks"].drop()
    LOG.on = True
    doc = QcFile(name="a")
    counted("put", lambda: doc.f.put(b"hello" * 100, filename="h.txt"))
    counted("save", lambda: doc.save())
    got = QcFile.objects.get(name="a")
    counted("read", lambda: got.f.read())
    counted("read_again", lambda: got.f.read())
    counted("attrs", lambda: (got.f.filename, got.f.length, got.f.md5))
    counted("get_read", lambda: QcFile.objects.get(name="a").f.read())
    counted("replace", lambda: got.f.replace(b"new", filename="n"))
    counted("save2", lambda: got.save())
    counted("new_file", lambda: (got.f.new_file(), got.f.write(b"ab"), got.f.close()))
    counted("list_put", lambda: QcFile(name="b", fs=[]).save())
    b = QcFile.objects.get(name="b")
    proxy = M.GridFSProxy()
    counted("proxy_put", lambda: proxy.put(b"x"))
    b.fs.append(proxy)
    counted("list_save", lambda: b.save())
    counted("list_read", lambda: [p.read() for p in QcFile.objects.get(name="b").fs])
    counted("file_delete", lambda: got.f.delete())
    counted("doc_delete", lambda: QcFile.objects.get(name="b").delete())
    counted("qs_delete", lambda: QcFile.objects.delete())
    rec("files", lambda: M.get_db()["fs.files"].count_documents({}))


class RcTag(M.Document):
    name = M.StringField()
    n = M.IntField()


class RcEmb(M.EmbeddedDocument):
    ref = M.ReferenceField(RcTag)
    label = M.StringField()


class RcDoc(M.Document):
    name = M.StringField()
    anyd = M.DictField()
    anyl = M.ListField()
    nested = M.ListField(M.ListField(M.ReferenceField(RcTag)))
    cached = M.ListField(M.CachedReferenceField(RcTag, fields=["name"]))
    one_cached = M.CachedReferenceField(RcTag, fields=["name"])
    gens = M.ListField(M.GenericReferenceField())
    lazies = M.ListField(M.LazyReferenceField(RcTag, passthrough=True))
    emb = M.EmbeddedDocumentField(RcEmb)
    dyn = M.DynamicField()
    ref = M.ReferenceField(RcTag)
    refmap = M.MapField(M.ReferenceField(RcTag))


def rc_changed(label: str, change: Any) -> None:
    """A fresh RcDoc changed by ``change(doc)`` (its name too): its changes,
    delta, the save's commands and what is stored."""
    doc = RcDoc.objects.get()
    change(doc)
    doc.name = label
    rec(label + " changed", doc._get_changed_fields)
    rec(label + " delta", doc._delta)
    rec(label + " save", doc.save)
    rec(label + " stored", lambda: RcDoc.objects.as_pymongo().get())
    rec(label + " tags", lambda: list(RcTag.objects.order_by("name").as_pymongo()))


def l_referenced_changes() -> None:
    """Referenced documents changed in place where a document holds them (an
    untyped dict and list, lists of lists of references, cached references,
    generic and lazy references, an embedded document's reference, a
    DynamicField, a reference and a map of them), with a plain change beside:
    what the save sends (MongoEngine walks some of them, not others)."""
    LOG.on = False
    RcTag.drop_collection()
    RcDoc.drop_collection()
    LOG.on = True
    t = [RcTag(name=f"t{i}", n=i).save() for i in range(3)]
    RcDoc(
        name="d",
        anyd={"r": t[0], "l": [t[1]], "plain": 1},
        anyl=[t[0], {"x": t[1]}],
        nested=[[t[0], t[1]], [t[2]]],
        cached=[t[0], t[1]],
        one_cached=t[2],
        gens=[t[0]],
        lazies=[t[1]],
        emb=RcEmb(ref=t[0], label="e"),
        dyn=t[1],
        ref=t[2],
        refmap={"k": t[0]},
    ).save()
    rc_changed("anyd", lambda d: setattr(d.anyd["r"], "n", 10))
    rc_changed("anyd_list", lambda d: setattr(d.anyd["l"][0], "n", 11))
    rc_changed("anyl", lambda d: setattr(d.anyl[0], "n", 12))
    rc_changed("anyl_dict", lambda d: setattr(d.anyl[1]["x"], "n", 13))
    rc_changed("nested", lambda d: setattr(d.nested[0][1], "n", 14))
    rc_changed("cached", lambda d: setattr(d.cached[0], "name", "c0"))
    rc_changed("cached_n", lambda d: setattr(d.cached[1], "n", 15))
    rc_changed("one_cached", lambda d: setattr(d.one_cached, "name", "oc"))
    rc_changed("gens", lambda d: setattr(d.gens[0], "n", 16))
    rc_changed("lazies", lambda d: setattr(d.lazies[0].fetch(), "n", 17))
    rc_changed("emb_ref", lambda d: setattr(d.emb.ref, "n", 18))
    rc_changed("dyn", lambda d: setattr(d.dyn, "n", 19))
    rc_changed("ref", lambda d: setattr(d.ref, "n", 20))
    rc_changed("refmap", lambda d: setattr(d.refmap["k"], "n", 21))
    rc_changed(
        "cascade", lambda d: (setattr(d.ref, "n", 22), setattr(d.nested[1][0], "n", 23))
    )
    doc = RcDoc.objects.get()
    doc.nested[0][0].n = 30
    doc.anyd["r"].n = 31
    rec("cascade save", lambda: doc.save(cascade=True))
    rec("cascade tags", lambda: list(RcTag.objects.order_by("name").as_pymongo()))
    rec("cascade stored", lambda: RcDoc.objects.as_pymongo().get())


def d_other_class_blocks() -> None:
    """Documents of a class read every way inside MongoEngine's
    no_dereference() block of another class (unrelated, the referred class,
    a subclass), nested blocks; read again after."""
    qc_seed()

    def reads(label: str) -> None:
        rec(
            label + " list",
            lambda: [
                (d.tag, d.tags, d.gen, d.emb.tag, d.tmap)
                for d in QcDoc.objects.order_by("name")
            ],
        )
        rec(label + " sr", lambda: QcDoc.objects.order_by("name").select_related())
        rec(
            label + " sr1",
            lambda: [
                (d.tag, d.tags)
                for d in QcDoc.objects.order_by("name").select_related(1)
            ],
        )
        rec(
            label + " get",
            lambda: (lambda d: (d.tag, d.tags, d.gen, d.lazy))(
                QcDoc.objects.get(name="d3")
            ),
        )
        rec(label + " first", lambda: QcDoc.objects.order_by("name").first().tags)
        rec(
            label + " bulk",
            lambda: sorted(
                (d.name, d.tag)
                for d in QcDoc.objects.in_bulk(
                    list(QcDoc.objects.scalar("id"))
                ).values()
            ),
        )
        rec(
            label + " scalar",
            lambda: list(QcDoc.objects.order_by("name").scalar("tag", "gen")),
        )
        rec(
            label + " values",
            lambda: QcDoc.objects.order_by("name").values_list("tags"),
        )
        rec(
            label + " children",
            lambda: [
                (c.parent, c.parent.tag if c.parent else None)
                for c in QcChild.objects.order_by("name")
            ],
        )
        rec(
            label + " child_sr",
            lambda: [
                c.parent.tags
                for c in QcChild.objects.order_by("name").select_related(2)
            ],
        )
        rec(
            label + " doc_sr",
            lambda: QcDoc.objects.get(name="d1").select_related().tags,
        )
        rec(label + " reload", lambda: outside.reload().tags)
        rec(label + " outside", lambda: (outside.tag, outside.tags, outside.gen))

    outside = QcDoc.objects.get(name="d0")
    for cls in (ThDoc, QcTag, QcSub, QcChild):
        with no_dereference(cls):
            reads("in " + cls.__name__)
    with no_dereference(QcTag), no_dereference(ThDoc):
        reads("nested")
    with no_dereference(QcDoc):
        with no_dereference(QcDoc):
            pass
        reads("inner ended")
    reads("after")


class StTarget(M.Document):
    name = M.StringField()
    emb = M.EmbeddedDocumentField(ErrEmb)


class StLoose(M.Document):
    name = M.StringField()
    meta = {"strict": False}


class StHolder(M.Document):
    name = M.StringField()
    t = M.ReferenceField(StTarget)
    ts = M.ListField(M.ReferenceField(StTarget))
    g = M.GenericReferenceField()
    lz = M.LazyReferenceField(StTarget)
    loose = M.ReferenceField(StLoose)


def e_unknown_stored_fields() -> None:
    """Stored documents with keys their strict class lacks (top level and in
    an embedded document), read every way: directly, through references
    (single, listed, generic, lazy), select_related, in_bulk, reload, modify,
    upsert_one; a non-strict class's extra keys kept and saved back."""
    LOG.on = False
    for cls in (StTarget, StLoose, StHolder):
        cls.drop_collection()
    LOG.on = True
    ok = StTarget(name="ok").save()
    stray = StTarget(name="stray").save()
    inner = StTarget(name="inner", emb=ErrEmb(code=1)).save()
    loose = StLoose(name="l").save()
    LOG.on = False
    StTarget._get_collection().update_one({"_id": stray.pk}, {"$set": {"extra": 1}})
    StTarget._get_collection().update_one({"_id": inner.pk}, {"$set": {"emb.extra": 2}})
    StLoose._get_collection().update_one({"_id": loose.pk}, {"$set": {"extra": [1]}})
    LOG.on = True
    for target in (stray, inner):
        StHolder(
            name=target.name,
            t=target,
            ts=[ok, target],
            g=target,
            lz=target,
            loose=loose,
        ).save()
    rec("get", lambda: StTarget.objects.get(name="stray"))
    rec("get_inner", lambda: StTarget.objects.get(name="inner"))
    rec("list", lambda: list(StTarget.objects.order_by("name")))
    rec("first", lambda: StTarget.objects.order_by("-name").first())
    rec("index", lambda: StTarget.objects.order_by("-name")[0])
    rec("bulk", lambda: StTarget.objects.in_bulk([stray.pk, ok.pk]))
    rec("only", lambda: list(StTarget.objects.only("name").order_by("name")))
    rec("exclude", lambda: list(StTarget.objects.exclude("extra").order_by("name")))
    rec("reload", lambda: stray.reload())
    rec("reload_name", lambda: stray.reload("name"))
    rec(
        "modify",
        lambda: StTarget.objects(name="stray").modify(set__name="s2", new=True),
    )
    rec("upsert_one", lambda: StTarget.objects(name="s2").upsert_one(set__name="stray"))
    for name in ("stray", "inner"):
        rec(name + " holder_t", lambda n=name: StHolder.objects.get(name=n).t)
        rec(name + " holder_ts", lambda n=name: StHolder.objects.get(name=n).ts)
        rec(name + " holder_g", lambda n=name: StHolder.objects.get(name=n).g)
        rec(name + " holder_lz", lambda n=name: StHolder.objects.get(name=n).lz.fetch())
        rec(
            name + " holder_sr",
            lambda n=name: StHolder.objects(name=n).select_related(),
        )
        rec(
            name + " holder_doc_sr",
            lambda n=name: StHolder.objects.get(name=n).select_related(),
        )
    rec("loose", lambda: StLoose.objects.get())
    rec("loose_ref", lambda: StHolder.objects.first().loose)
    l2 = StLoose.objects.get()
    l2.name = "l2"
    rec("loose_delta", l2._delta)
    rec("loose_save", l2.save)
    rec("loose_stored", lambda: StLoose.objects.as_pymongo().get())
    rec("stored", lambda: list(StTarget.objects.order_by("name").as_pymongo()))


class ThAudit(M.Document):
    key = M.StringField(primary_key=True)
    what = M.StringField()
    n = M.IntField()


def audit_saved(sender: Any, document: Any, created: bool, **kwargs: Any) -> None:
    """A post_save receiver writing an audit document (reads the reference)."""
    label = document.ref.label if document.ref else None
    ThAudit(
        key=f"save-{document.key}-{document.n}", what=str(created), n=len(label or "")
    ).save()


def audit_deleted(sender: Any, document: Any, **kwargs: Any) -> None:
    """A pre_delete receiver writing an audit document."""
    ThAudit(key=f"delete-{document.key}", what="deleted").save()


def t_receivers_writing() -> None:
    """Threads saving and deleting documents whose post_save and pre_delete
    receivers read references and save documents of their own."""
    th_seed()
    LOG.on = False
    ThAudit.drop_collection()
    LOG.on = True
    M.post_save.connect(audit_saved, sender=ThDoc)
    M.pre_delete.connect(audit_deleted, sender=ThDoc)

    def work(prefix: str) -> Any:
        for i in range(4):
            doc = ThDoc(key=f"{prefix}{i}", n=i, ref=ThRef(key=f"r{i % 3}")).save()
            doc.n += 10
            doc.save()
        ThDoc.objects.get(key=f"{prefix}0").delete()
        ThDoc.objects(key=f"{prefix}1").delete()
        return ThAudit.objects(key__contains=f"-{prefix}").count()

    try:
        rec("threads", lambda: threaded({p: (lambda p=p: work(p)) for p in "abc"}))
    finally:
        M.post_save.disconnect(audit_saved, sender=ThDoc)
        M.pre_delete.disconnect(audit_deleted, sender=ThDoc)
    rec("audits", lambda: list(ThAudit.objects.order_by("key").as_pymongo()))
    rec("stored", lambda: list(ThDoc.objects.order_by("key").as_pymongo()))


SCENARIOS = [
    t_threads,
    t_shared_queryset,
    t_blocks,
    t_iteration_across_blocks,
    t_receivers_writing,
    q_counter_reads,
    q_counter_writes,
    q_counter_first_use,
    q_counter_files,
    m_custom_querysets,
    m_managers_more,
    e_errors,
    e_errors_more,
    l_lifecycle,
    d_switched_targets,
    l_failed_writes,
    m_overriding_querysets,
    l_referenced_changes,
    d_other_class_blocks,
    e_unknown_stored_fields,
]

if __name__ == "__main__":
    harness.run(SCENARIOS)
