"""More scenarios for ``sync_differential.py``'s harness (run as it is, by
tests/test_sync_differential.py): field options on load and save, read
shapes of every reference and embedded path, nested and recursive embedded
documents, dates on a tz_aware alias with a tzinfo, in_bulk and insert
through querysets with each option, references to documents keyed by
strings, ints, UUIDs, dicts and dates, lazy references, deletions and direct
changes of fields, iteration interleaved with other reads, references saved
as ids, field names a generated loader might use itself, MongoEngine's
no_dereference() block, fields redefined in subclasses, the owners embedded
documents and containers are bound to, 2d geo queries, receivers changing
what is saved or inserted, field settings patched with mock, aliases never
defined or disconnected, classes and changes drawn at random (seeded).

``python sync_differential_kinds.py LIBRARY MODE``, as ``sync_differential.py``.
"""

import copy
import datetime
import os
import pickle
import random
import re
import uuid
from decimal import Decimal
from typing import Any
from unittest import mock

import mongoengine
import pymongo
from bson import ObjectId

import sync_differential as harness
from differential_fuzz import Fuzz, field_kinds, sync_io
from sync_differential import (
    LOG,
    AEmb,
    Article,
    Author,
    Color,
    Emb,
    Person,
    Student,
    clean,
    rec,
    seed,
)

M: Any = harness.M


class Dec(M.Document):
    d1 = M.DecimalField(precision=2, rounding="ROUND_DOWN")
    d2 = M.DecimalField(force_string=True, precision=3)
    d3 = M.DecimalField(min_value=Decimal("0"), max_value=10)
    d4 = M.DecimalField(precision=0)
    lf = M.LongField()
    ff = M.FloatField()
    u = M.UUIDField(binary=False)
    ub = M.UUIDField()
    bf = M.BinaryField(max_bytes=3)
    em = M.EmailField(allow_utf8_user=True)
    em2 = M.EmailField(domain_whitelist=["localhost"])
    url = M.URLField(schemes=["http"])
    cdt = M.ComplexDateTimeField(separator="_")
    en = M.EnumField(Color)
    mp = M.MapField(M.IntField())
    mpe = M.MapField(M.EnumField(Color))


def k_field_options() -> None:
    """DecimalField precision/rounding/force_string, LongField, FloatField given
    ints, UUIDField(binary=False), BinaryField(max_bytes), EmailField/URLField
    options, ComplexDateTimeField(separator), EnumField and maps of them: built,
    saved, read every way, queried, updated, changed and saved."""
    LOG.on = False
    Dec.drop_collection()
    LOG.on = True
    vals = [
        dict(d1=Decimal("1.239"), d2=Decimal("2.0005"), d3=5, d4=Decimal("2.5")),
        dict(d1=1.239, d2=3, d3="7.1", d4="3.5"),
        dict(d1="x"),
        dict(d3=-1),
        dict(d3=11),
        dict(lf=2**63),
        dict(lf="5"),
        dict(lf=5.5),
        dict(ff=3),
        dict(ff="3.5"),
        dict(ff="x"),
        dict(u=uuid.UUID(int=7)),
        dict(u="00000000-0000-0000-0000-000000000009"),
        dict(u="bad"),
        dict(ub="00000000-0000-0000-0000-000000000009"),
        dict(bf=b"abcd"),
        dict(bf="ab"),
        dict(bf=b"ab"),
        dict(em="ü@example.com"),
        dict(em="a@localhost"),
        dict(em2="a@localhost"),
        dict(em="a@b"),
        dict(url="https://x.org"),
        dict(url="http://x"),
        dict(url="nope"),
        dict(cdt=datetime.datetime(2020, 1, 2, 3, 4, 5, 6)),
        dict(cdt="2020_01_02_03_04_05_000006"),
        dict(cdt="bad"),
        dict(en=Color.RED),
        dict(en="r"),
        dict(en="z"),
        dict(mp={"a": 1, "b": "x"}),
        dict(mp={"a.b": 1}),
        dict(mp={"$a": 1}),
        dict(mpe={"a": Color.BLUE}),
    ]
    for i, v in enumerate(vals):
        d = rec(f"new{i}", lambda v=v: Dec(**v))
        rec(f"save{i}", lambda d=d: d and d.save())
        rec(f"tomongo{i}", lambda d=d: d and d.to_mongo())
    rec("stored", lambda: list(Dec.objects.order_by("id").as_pymongo()))
    rec("loaded", lambda: list(Dec.objects.order_by("id")))
    rec(
        "scalar",
        lambda: list(
            Dec.objects.order_by("id").scalar("d1", "d2", "cdt", "u", "en", "mpe")
        ),
    )
    rec("values", lambda: Dec.objects.order_by("id").values_list("d2", "mp"))
    rec("q_d2", lambda: Dec.objects(d2=Decimal("2.001")).count())
    rec("q_d1_gt", lambda: Dec.objects(d1__gt=1).count())
    rec("q_cdt", lambda: Dec.objects(cdt__gt=datetime.datetime(2019, 1, 1)).count())
    rec("q_u", lambda: Dec.objects(u=uuid.UUID(int=7)).count())
    rec("q_en", lambda: Dec.objects(en=Color.RED).count())
    rec("q_en_str", lambda: Dec.objects(en="r").count())
    rec("q_mpe", lambda: Dec.objects(mpe__a=Color.BLUE).count())
    rec("upd_d1", lambda: Dec.objects(d1__exists=True).update(set__d1=Decimal("9.999")))
    rec("upd_d2", lambda: Dec.objects(d2__exists=True).update(set__d2=1.23456))
    rec(
        "upd_inc_d1",
        lambda: Dec.objects(d1__exists=True).update(inc__d1=Decimal("0.011")),
    )
    rec("upd_inc_f", lambda: Dec.objects(d1__exists=True).update(inc__ff=1))
    rec(
        "upd_cdt",
        lambda: Dec.objects(d1__exists=True).update(
            set__cdt=datetime.datetime(2021, 1, 1)
        ),
    )
    rec("upd_en", lambda: Dec.objects(d1__exists=True).update(set__en=Color.BLUE))
    rec("upd_mpe", lambda: Dec.objects(d1__exists=True).update(set__mpe__k=Color.BLUE))
    rec("upd_u", lambda: Dec.objects(d1__exists=True).update(set__u=uuid.UUID(int=3)))
    rec("upd_bf", lambda: Dec.objects(d1__exists=True).update(set__bf=b"abcdef"))
    rec("upd_lf", lambda: Dec.objects(d1__exists=True).update(set__lf="9"))
    rec("stored2", lambda: list(Dec.objects.order_by("id").as_pymongo()))
    rec("loaded2", lambda: list(Dec.objects.order_by("id")))
    g = Dec.objects.order_by("id").first()
    g.d1 = Decimal("5.555")
    g.d2 = 7
    g.en = "b"
    g.mp["z"] = 3
    rec("changed", lambda: (g._get_changed_fields(), g._delta()))
    rec("save", lambda: g.save())
    rec("stored3", lambda: Dec.objects.as_pymongo().get(pk=g.pk))


class PTag(M.Document):
    name = M.StringField()
    meta = {"allow_inheritance": True}


class PSub(PTag):
    x = M.IntField()


class PE(M.EmbeddedDocument):
    k = M.IntField()
    ref = M.ReferenceField(PTag)
    lst = M.ListField(M.IntField())
    inner = M.EmbeddedDocumentField(Emb)


class PDoc(M.Document):
    name = M.StringField()
    e = M.EmbeddedDocumentField(PE)
    es = M.EmbeddedDocumentListField(PE)
    ref = M.ReferenceField(PTag, dbref=True)
    refs = M.ListField(M.ReferenceField(PTag))
    gref = M.GenericReferenceField(choices=[PTag, PSub])
    glz = M.GenericLazyReferenceField()
    lz = M.LazyReferenceField(PTag, dbref=True)
    cref = M.CachedReferenceField(PTag, fields=["name"])
    mp = M.MapField(M.ReferenceField(PTag))
    nums = M.ListField(M.IntField())


def seedp() -> list:
    """Tags (one of a subclass) and five documents referring to them."""
    LOG.on = False
    PTag.drop_collection()
    PDoc.drop_collection()
    LOG.on = True
    t = [PTag(name=f"t{i}").save() for i in range(3)] + [PSub(name="s", x=1).save()]
    for i in range(5):
        PDoc(
            name=f"d{i}",
            e=PE(k=i, ref=t[i % 4], lst=[i, i + 1], inner=Emb(a=i, b="b")),
            es=[PE(k=i, ref=t[0]), PE(k=i + 10, lst=[1])],
            ref=t[i % 4],
            refs=[t[0], t[3]],
            gref=t[3 - i % 4],
            glz=t[i % 4],
            lz=t[1],
            cref=t[i % 4],
            mp={"a": t[2]},
            nums=list(range(i + 3)),
        ).save()
    return t


def k_read_shapes() -> None:
    """only/exclude/fields(slice) on embedded and list paths, as_pymongo,
    scalar/values_list/distinct/item_frequencies of every reference kind and embedded
    paths, in_bulk, first() by an embedded path, slices and negative indexes,
    select_related, no_dereference, aggregate after filters, querysets' repr,
    EmbeddedDocumentList methods."""
    t = seedp()
    qs = PDoc.objects.order_by("name")
    rec("only_e_k", lambda: list(qs.only("e.k")))
    rec("only_es_k", lambda: list(qs.only("es.k", "name")))
    rec("only_e_inner_a", lambda: list(qs.only("e.inner.a")))
    rec("exclude_e_ref", lambda: list(qs.exclude("e__ref", "es.lst")))
    rec("only_slice", lambda: list(qs.only("nums").fields(slice__nums=2)))
    rec("slice_neg", lambda: list(qs.fields(slice__nums=-2)))
    rec("slice_es", lambda: list(qs.fields(slice__es=[1, 1], name=1)))
    rec("slice_e_lst", lambda: list(qs.fields(slice__e__lst=1)))
    rec("pymongo_only", lambda: list(qs.only("e.k", "refs").as_pymongo()))
    rec("pymongo_excl", lambda: list(qs.exclude("es").as_pymongo()))
    rec("scalar_ref", lambda: list(qs.scalar("ref")))
    rec("scalar_gref", lambda: list(qs.scalar("gref")))
    rec("scalar_glz", lambda: list(qs.scalar("glz")))
    rec("scalar_lz", lambda: list(qs.scalar("lz")))
    rec("scalar_cref", lambda: list(qs.scalar("cref")))
    rec("scalar_mp", lambda: list(qs.scalar("mp")))
    rec("scalar_e_ref", lambda: list(qs.scalar("e__ref")))
    rec("scalar_e_inner", lambda: list(qs.scalar("e__inner", "e__inner__a")))
    rec("scalar_es_ref", lambda: list(qs.scalar("es__ref")))
    rec("scalar_es_k", lambda: list(qs.scalar("es.k")))
    rec("vl_e", lambda: qs.values_list("e", "es"))
    rec(
        "vl_nodrf",
        lambda: qs.no_dereference().values_list("ref", "gref", "refs", "e__ref"),
    )
    rec("d_ref", lambda: sorted(map(repr, qs.distinct("ref"))))
    rec("d_gref", lambda: sorted(map(repr, qs.distinct("gref"))))
    rec("d_glz", lambda: sorted(map(repr, qs.distinct("glz"))))
    rec("d_lz", lambda: qs.distinct("lz"))
    rec("d_cref", lambda: qs.distinct("cref"))
    rec("d_cref_name", lambda: sorted(qs.distinct("cref.name")))
    rec("d_es", lambda: qs.distinct("es"))
    rec("d_es_ref", lambda: qs.distinct("es__ref"))
    rec("d_e_inner", lambda: qs.distinct("e.inner"))
    rec("d_nums", lambda: sorted(qs.distinct("nums")))
    rec("d_mp", lambda: qs.distinct("mp"))
    rec("d_mp_a", lambda: qs.distinct("mp.a"))
    rec("if_ref", lambda: sorted(map(str, qs.item_frequencies("ref").items())))
    rec("if_e_k", lambda: sorted(qs.item_frequencies("e.k").items()))
    rec("if_nums", lambda: sorted(qs.item_frequencies("nums", normalize=True).items()))
    rec(
        "if_es_k_mr",
        lambda: sorted(qs.item_frequencies("es.k", map_reduce=True).items()),
    )
    ids = list(qs.scalar("id"))
    rec("in_bulk", lambda: sorted(qs.in_bulk(ids).values(), key=lambda d: d.name))
    rec(
        "in_bulk_sr",
        lambda: sorted(qs.select_related().in_bulk(ids).values(), key=lambda d: d.name),
    ) if False else None
    rec("first_order", lambda: PDoc.objects.order_by("-e.k").first())
    rec("first_order2", lambda: PDoc.objects.order_by("-nums").first().name)
    rec("sl", lambda: [d.name for d in qs[1:3]])
    rec("idx", lambda: qs[3])
    rec("neg", lambda: qs[-1])
    rec("neg_slice", lambda: qs[-3:-1])
    rec("step", lambda: qs[::2])
    rec("count_ls", lambda: (qs[1:3].count(with_limit_and_skip=True), qs.count(True)))
    rec("no_cache", lambda: [d.ref.name for d in qs.no_cache()])
    rec("sr1", lambda: qs.select_related(max_depth=1))
    rec("nodrf_first", lambda: qs.no_dereference().first())
    rec(
        "nodrf_e_ref",
        lambda: qs.no_dereference().first().e.ref,
    )
    rec(
        "nodrf_gref",
        lambda: qs.no_dereference().first().gref,
    )
    rec("nodrf_mp", lambda: qs.no_dereference().first().mp)
    rec(
        "agg",
        lambda: list(
            PDoc.objects(e__k__gte=1)
            .order_by("-name")
            .limit(3)
            .aggregate([{"$project": {"name": 1, "_id": 0}}])
        ),
    )
    rec(
        "agg_only",
        lambda: list(
            PDoc.objects.only("name").aggregate([{"$project": {"name": 1, "_id": 0}}])
        ),
    )
    rec("repr", lambda: repr(qs))
    rec("repr_pymongo", lambda: repr(qs.as_pymongo().only("name")))
    rec("repr_scalar", lambda: repr(qs.scalar("name")))
    rec("repr_vl", lambda: repr(qs.values_list("name", "e.k")))
    rec(
        "repr_big",
        lambda: (
            PTag.objects.insert(
                [PTag(name=str(i)) for i in range(25)], load_bulk=False
            ),
            repr(PTag.objects.order_by("name")),
        )[1],
    )
    rec("q_es_match", lambda: [d.name for d in PDoc.objects(es__match={"k": 12})])
    rec("q_ref", lambda: [d.name for d in PDoc.objects(ref=t[0])])
    rec("q_gref", lambda: [d.name for d in PDoc.objects(gref=t[0])])
    rec("q_glz", lambda: [d.name for d in PDoc.objects(glz=t[0])])
    rec("q_lz", lambda: [d.name for d in PDoc.objects(lz=t[1].pk)])
    rec("q_cref", lambda: [d.name for d in PDoc.objects(cref=t[0])])
    rec("q_refs_in", lambda: [d.name for d in PDoc.objects(refs__in=[t[3]])])
    rec("es_filter", lambda: PDoc.objects.get(name="d1").es.filter(k=11))
    rec("es_get", lambda: PDoc.objects.get(name="d1").es.get(k=1))
    rec("es_exclude", lambda: PDoc.objects.get(name="d1").es.exclude(k=1))
    rec("es_count", lambda: PDoc.objects.get(name="d1").es.count())
    rec("es_first", lambda: PDoc.objects.get(name="d1").es.first())
    rec(
        "es_create",
        lambda: (lambda d: (d.es.create(k=99), d.save(), d._get_changed_fields()))(
            PDoc.objects.get(name="d1")
        ),
    )
    rec(
        "es_delete",
        lambda: (lambda d: (d.es.filter(k=99).delete(), d.save()))(
            PDoc.objects.get(name="d1")
        ),
    )
    rec(
        "es_update",
        lambda: (lambda d: (d.es.filter(k=1).update(k=100), d._delta(), d.save()))(
            PDoc.objects.get(name="d1")
        ),
    )
    rec("es_save", lambda: (lambda d: (d.es.save(),))(PDoc.objects.get(name="d1")))
    rec("stored", lambda: PDoc.objects.as_pymongo().get(name="d1"))


class IdEmb(M.EmbeddedDocument):
    id = M.ObjectIdField(default=ObjectId)
    n = M.IntField()


class Tree(M.EmbeddedDocument):
    name = M.StringField()
    kids = M.ListField(M.EmbeddedDocumentField("self"))
    one = M.EmbeddedDocumentField("self")


class Loose2(M.EmbeddedDocument):
    a = M.IntField()
    meta = {"strict": False}


class Srt(M.EmbeddedDocument):
    k = M.IntField()
    s = M.StringField()


class Nest(M.Document):
    ids = M.ListField(M.EmbeddedDocumentField(IdEmb))
    idone = M.EmbeddedDocumentField(IdEmb)
    tree = M.EmbeddedDocumentField(Tree)
    ll = M.ListField(M.ListField(M.EmbeddedDocumentField(Emb)))
    ld = M.ListField(M.DictField())
    dl = M.DictField(M.ListField(M.IntField()))
    srt = M.SortedListField(M.EmbeddedDocumentField(Srt), ordering="k", reverse=True)
    srt2 = M.SortedListField(M.StringField())
    loose = M.EmbeddedDocumentField(Loose2)
    gemb = M.GenericEmbeddedDocumentField(choices=[Emb, Srt])
    gembs = M.ListField(M.GenericEmbeddedDocumentField())
    dflt = M.ListField(M.IntField(), default=[1, 2])
    dfd = M.DictField(default={"a": 1})


def k_nested_kinds() -> None:
    """Embedded documents with an id field, a recursive 'self' tree, lists of lists of
    embedded documents, lists of dicts, dicts of lists, a SortedListField of embedded
    documents ordered in reverse, a non-strict embedded class, generic embedded fields
    (with choices), plain list and dict defaults: built, saved, changed deep and saved,
    queried and updated."""
    LOG.on = False
    Nest.drop_collection()
    LOG.on = True
    oid = ObjectId("5f0000000000000000000009")
    n = rec(
        "new",
        lambda: Nest(
            ids=[IdEmb(id=oid, n=1), IdEmb(n=2)],
            idone=IdEmb(id=oid),
            tree=Tree(
                name="r",
                kids=[
                    Tree(name="a", kids=[Tree(name="aa")]),
                    Tree(name="b", one=Tree(name="bo")),
                ],
            ),
            ll=[[Emb(a=1)], [Emb(a=2), Emb(b="x")], []],
            ld=[{"a": 1}, {"b": [1, {"c": 2}]}],
            dl={"x": [1, 2], "y": []},
            srt=[Srt(k=1), Srt(k=3), Srt(k=2)],
            srt2=["b", "c", "a"],
            loose=Loose2(a=1),
            gemb=Srt(k=5),
            gembs=[Emb(a=1), Srt(k=2), Tree(name="t")],
        ),
    )
    rec("validate", lambda: n.validate())
    rec("to_mongo", lambda: n.to_mongo())
    rec("save", lambda: n.save())
    rec("stored", lambda: Nest.objects.as_pymongo().get())
    g = rec("get", lambda: Nest.objects.get())
    g.tree.kids[0].kids[0].name = "AA"
    g.tree.kids[1].one.name = "BO"
    g.ll[1][0].a = 20
    g.ll[2].append(Emb(a=3))
    g.ld[1]["b"][1]["c"] = 3
    g.dl["x"].append(3)
    g.srt[0].s = "z"
    g.srt.append(Srt(k=10))
    g.srt2.append("0")
    g.ids[1].n = 22
    g.gembs[2].kids = [Tree(name="gk")]
    g.dflt.append(3)
    g.dfd["b"] = 2
    rec("changed", lambda: g._get_changed_fields())
    rec("delta", lambda: g._delta())
    rec("save2", lambda: g.save())
    rec("stored2", lambda: Nest.objects.as_pymongo().get())
    rec("get2", lambda: Nest.objects.get())
    LOG.on = False
    Nest._get_collection().update_one(
        {}, {"$set": {"loose.zz": 5, "tree.kids.0.qq": 1}}
    )
    LOG.on = True
    rec("get_loose", lambda: Nest.objects.get())
    rec("only_tree", lambda: Nest.objects.only("tree.kids.name").get())
    rec("q_tree", lambda: Nest.objects(tree__kids__name="a").count())
    rec("q_tree_deep", lambda: Nest.objects(tree__kids__kids__name="AA").count())
    rec("q_ids", lambda: Nest.objects(ids__id=oid).count())
    rec("upd_tree", lambda: Nest.objects.update(set__tree__kids__0__name="A0"))
    rec("upd_push_tree", lambda: Nest.objects.update(push__tree__kids=Tree(name="c")))
    rec("upd_ll", lambda: Nest.objects.update(push__ll=[Emb(a=9)]))
    rec("upd_srt", lambda: Nest.objects.update(push__srt=Srt(k=0)))
    rec("upd_gemb", lambda: Nest.objects.update(set__gemb=Emb(a=7)))
    rec("upd_gemb_bad", lambda: Nest.objects.update(set__gemb=Tree(name="x")))
    rec("upd_ids_S", lambda: Nest.objects(ids__n=1).update(set__ids__S__n=11))
    rec("stored3", lambda: Nest.objects.as_pymongo().get())
    h = rec("get3", lambda: Nest.objects.get())
    rec("validate3", lambda: h.validate())
    rec("new_defaults", lambda: Nest())
    d1 = Nest()
    d1.dflt.append(9)
    d1.dfd["z"] = 1
    rec("defaults_shared", lambda: (Nest().dflt, Nest().dfd, d1.dflt, d1.dfd))
    rec("save_defaults", lambda: d1.save())
    rec("stored_d1", lambda: Nest.objects.as_pymongo().get(pk=d1.pk))
    rec("bad_gemb", lambda: Nest(gemb=Tree(name="x")).validate())
    rec("bad_tree", lambda: Nest(tree=Tree(kids=[Emb()])).validate())
    rec("bad_ll", lambda: Nest(ll=[[Srt()]]).validate())
    rec("emptyids", lambda: Nest(ids=[IdEmb()]).to_mongo()["ids"][0].keys())


class TzE(M.EmbeddedDocument):
    w = M.DateTimeField()
    ws = M.ListField(M.DateTimeField())


class Tz2(M.Document):
    when = M.DateTimeField()
    cw = M.ComplexDateTimeField()
    e = M.EmbeddedDocumentField(TzE)
    es = M.ListField(M.EmbeddedDocumentField(TzE))
    mp = M.MapField(M.DateTimeField())
    dy = M.DynamicField()
    day = M.DateField()
    meta = {"db_alias": "tz2"}


def k_tz_zone() -> None:
    """Dates on a tz_aware alias with a tzinfo: in embedded documents, lists, maps, a
    DynamicField; read every way, modified, saved, JSON, queried."""
    M.connect(
        db=M.get_db().name,
        alias="tz2",
        host=os.environ["MONGODB_URI"],
        tz_aware=True,
        # (A fixed offset: a zone name needs the system's time zone database.)
        tzinfo=datetime.timezone(datetime.timedelta(hours=1), "CET"),
        uuidRepresentation="standard",
        event_listeners=[LOG],
    )
    LOG.on = False
    Tz2.drop_collection()
    LOG.on = True
    aware = datetime.datetime(
        2020, 6, 2, 3, 4, 5, 6000, tzinfo=datetime.timezone(datetime.timedelta(hours=3))
    )
    naive = datetime.datetime(2020, 1, 2, 3, 4, 5, 6000)
    d = Tz2(
        when=aware,
        cw=aware,
        e=TzE(w=naive, ws=[aware, naive]),
        es=[TzE(w=aware)],
        mp={"a": aware},
        dy=aware,
        day=naive.date(),
    )
    rec("new", lambda: d)
    rec("save", lambda: d.save())
    rec("after_save", lambda: d)
    g = rec("get", lambda: Tz2.objects.get())
    rec(
        "reads",
        lambda: [
            (x, getattr(x, "tzinfo", None) and str(x.tzinfo))
            for x in (g.when, g.e.w, g.e.ws[0], g.es[0].w, g.mp["a"], g.dy)
        ],
    )
    rec("scalar", lambda: list(Tz2.objects.scalar("when", "e", "mp", "dy")))
    rec("vl", lambda: list(Tz2.objects.values_list("e__ws")))
    rec("distinct", lambda: Tz2.objects.distinct("when"))
    rec("distinct_e", lambda: Tz2.objects.distinct("e"))
    rec("pymongo", lambda: list(Tz2.objects.as_pymongo()))
    rec("first", lambda: Tz2.objects.first())
    rec("in_bulk", lambda: list(Tz2.objects.in_bulk([g.pk]).values()))
    rec("reload", lambda: g.reload())
    rec("modify", lambda: Tz2.objects.modify(new=True, set__when=naive))
    rec("agg", lambda: list(Tz2.objects.aggregate([{"$project": {"when": 1}}])))
    g.when = naive
    rec("changed", lambda: (g._get_changed_fields(), g._delta()))
    rec("save2", lambda: g.save())
    rec("json", lambda: Tz2.objects.get().to_json())
    rec("from_json", lambda: Tz2.from_json(Tz2.objects.get().to_json()))
    rec("q", lambda: Tz2.objects(when__lte=aware).count())
    rec("q_str", lambda: Tz2.objects(when__lte="2021-01-01").count())
    M.disconnect("tz2")


def k_bulk_options() -> None:
    """in_bulk and insert through querysets with each option (filters, projections,
    slices, cursor options, read preferences, text search, scalar, values_list,
    as_pymongo, subclasses, none, no_dereference, select_related, no_cache, using), and
    in_bulk of other containers of ids."""
    seed()
    ids = list(Person.objects.order_by("name").scalar("id"))
    qs = Person.objects
    variants = {
        "filtered": lambda: qs(age=1),
        "only": lambda: qs.only("name"),
        "exclude": lambda: qs.exclude("embs"),
        "slice": lambda: qs.fields(slice__tags=1),
        "elem": lambda: qs.fields(elemMatch__embs={"a": 2}),
        "timeout": lambda: qs.timeout(False),
        "disk": lambda: qs.allow_disk_use(True),
        "comment": lambda: qs.comment("c"),
        "hint": lambda: qs.hint("name_1"),
        "collation": lambda: qs.collation({"locale": "en"}),
        "limit_skip": lambda: qs.order_by("-name").skip(1).limit(2),
        "maxtime": lambda: qs.max_time_ms(1000),
        "batch": lambda: qs.batch_size(1),
        "rp": lambda: qs.read_preference(pymongo.ReadPreference.SECONDARY_PREFERRED),
        "rc": lambda: qs.read_concern({"level": "majority"}),
        "text": lambda: qs.search_text("p1"),
        "scalar_only": lambda: qs.only("age").scalar("name"),
        "scalar2": lambda: qs.scalar("name", "emb"),
        "vl": lambda: qs.values_list("name"),
        "pymongo_only": lambda: qs.as_pymongo().only("name"),
        "sub": lambda: Student.objects,
        "no_sub": lambda: qs.no_sub_classes(),
        "none": lambda: qs.none(),
        "nodrf": lambda: qs.no_dereference(),
        "sr": lambda: qs.select_related(),
        "nocache": lambda: qs.no_cache(),
        "using": lambda: qs.using("other"),
        "all_fields": lambda: qs.only("name").all_fields(),
        "text_score": lambda: qs.search_text("p1").order_by("$text_score"),
        "where": lambda: qs.where("this.age > 0"),
    }
    for name, make in variants.items():
        rec(
            name + " bulk",
            lambda make=make: sorted(
                make().in_bulk(ids).items(), key=lambda kv: str(kv[0])
            ),
        )
        rec(name + " bulk_tuple", lambda make=make: len(make().in_bulk(tuple(ids[:2]))))
        rec(
            name + " insert",
            lambda make=make, name=name: make().insert(
                [Person(name="i" + name, age=7, tags=["a"], embs=[Emb(a=1)])]
            ),
        )
        rec(
            name + " insert1",
            lambda make=make, name=name: make().insert(Person(name="j" + name, age=8)),
        )
    rec("bulk_gen", lambda: len(qs.in_bulk(x for x in ids)))
    rec("bulk_str", lambda: qs.in_bulk([str(ids[0])]))
    rec("bulk_dup", lambda: len(qs.in_bulk([ids[0], ids[0]])))
    rec("bulk_none", lambda: qs.in_bulk(None))
    rec("all", lambda: list(Person.objects.order_by("name").as_pymongo()))


class KStr(M.Document):
    id = M.StringField(primary_key=True)
    v = M.IntField()


class KInt(M.Document):
    num = M.IntField(primary_key=True)
    v = M.IntField()


class KUuid(M.Document):
    id = M.UUIDField(primary_key=True, binary=False)
    v = M.IntField()


class KUuidB(M.Document):
    id = M.UUIDField(primary_key=True, binary=True)
    v = M.IntField()


class KDict(M.Document):
    id = M.DictField(primary_key=True)
    v = M.IntField()


class KDate(M.Document):
    id = M.DateTimeField(primary_key=True)
    v = M.IntField()


class KHolder(M.Document):
    s = M.ReferenceField(KStr)
    i = M.ReferenceField(KInt)
    u = M.ReferenceField(KUuid)
    ub = M.ReferenceField(KUuidB)
    dk = M.ReferenceField(KDict)
    dt = M.ReferenceField(KDate)
    sd = M.ReferenceField(KStr, dbref=True)
    ls = M.ListField(M.ReferenceField(KInt))
    lu = M.ListField(M.ReferenceField(KUuid))
    mp = M.MapField(M.ReferenceField(KStr))
    lz = M.LazyReferenceField(KUuid)
    g = M.GenericReferenceField()
    gl = M.GenericLazyReferenceField()
    c = M.CachedReferenceField(KInt, fields=["v"])


def k_custom_keys() -> None:
    """References to documents keyed by a string, an int, a UUID (stored as string and
    binary), a dict and a date: stored, read, joined, projected, queried, in_bulk,
    reloaded, changed, updated, inserted, dangling."""
    LOG.on = False
    for c in (KStr, KInt, KUuid, KUuidB, KDict, KDate, KHolder):
        c.drop_collection()
    LOG.on = True
    s = KStr(id="a", v=1).save()
    s2 = KStr(id="b", v=2).save()
    i = KInt(num=5, v=1).save()
    i2 = KInt(num=6, v=2).save()
    u = KUuid(id=uuid.UUID(int=1), v=1).save()
    u2 = KUuid(id=uuid.UUID(int=2), v=2).save()
    ub = KUuidB(id=uuid.UUID(int=3), v=3).save()
    dk = KDict(id={"x": 1, "y": 2}, v=4).save()
    dt = KDate(id=datetime.datetime(2020, 1, 1), v=5).save()
    rec(
        "stored_keys",
        lambda: [list(c._get_collection().find()) for c in (KUuid, KUuidB, KDict)],
    )
    h = KHolder(
        s=s,
        i=i,
        u=u,
        ub=ub,
        dk=dk,
        dt=dt,
        sd=s2,
        ls=[i, i2],
        lu=[u, u2],
        mp={"k": s},
        lz=u,
        g=u2,
        gl=i,
        c=i2,
    )
    rec("new", lambda: h)
    rec("save", lambda: h.save())
    rec("stored", lambda: KHolder.objects.as_pymongo().get())
    g = rec("get", lambda: KHolder.objects.get())
    for name in ("s", "i", "u", "ub", "dk", "dt", "sd", "ls", "lu", "mp", "g", "c"):
        rec("read_" + name, lambda name=name: getattr(KHolder.objects.get(), name))
    rec("lz", lambda: (g.lz, g.lz.fetch(), g.gl.fetch()))
    rec("sr", lambda: KHolder.objects.select_related())
    rec("sr1", lambda: KHolder.objects.select_related(max_depth=1))
    rec("doc_sr", lambda: KHolder.objects.get().select_related())
    rec(
        "nodrf",
        lambda: KHolder.objects.no_dereference().get(),
    )
    rec("scalar", lambda: list(KHolder.objects.scalar("s", "u", "ls", "dk")))
    rec(
        "vl_nodrf",
        lambda: list(KHolder.objects.no_dereference().values_list("u", "lu", "dt")),
    )
    rec("distinct_u", lambda: KHolder.objects.distinct("u"))
    rec("distinct_lu", lambda: KHolder.objects.distinct("lu"))
    rec("distinct_dk", lambda: KHolder.objects.distinct("dk"))
    rec("q_u", lambda: KHolder.objects(u=u).count())
    rec("q_u_id", lambda: KHolder.objects(u=u.id).count())
    rec("q_lu_in", lambda: KHolder.objects(lu__in=[u2]).count())
    rec("q_dk", lambda: KHolder.objects(dk=dk).count())
    rec("in_bulk_u", lambda: KUuid.objects.in_bulk([u.id, u2.id]))
    rec("in_bulk_dk", lambda: KDict.objects.in_bulk([{"x": 1, "y": 2}]))
    rec("in_bulk_dt", lambda: KDate.objects.in_bulk([datetime.datetime(2020, 1, 1)]))
    rec("reload_u", lambda: KUuid.objects.get().reload())
    rec("reload_dk", lambda: KDict.objects.get().reload())
    g2 = KHolder.objects.get()
    g2.u = u2
    g2.lu.append(u)
    g2.dk = None
    rec("delta", lambda: g2._delta())
    rec("save2", lambda: g2.save())
    rec("stored2", lambda: KHolder.objects.as_pymongo().get())
    rec("upd", lambda: KHolder.objects.update(set__u=u, push__ls=i, set__mp__z=s2))
    rec("stored3", lambda: KHolder.objects.as_pymongo().get())
    rec("insert_u", lambda: KUuid.objects.insert([KUuid(id=uuid.UUID(int=9), v=9)]))
    rec("insert_dk", lambda: KDict.objects.insert([KDict(id={"q": 1}, v=9)]))
    rec(
        "insert_dt",
        lambda: KDate.objects.insert(KDate(id=datetime.datetime(2021, 1, 1), v=9)),
    )
    rec("kdict_modify", lambda: KDict.objects(v=4).modify(new=True, inc__v=1))
    k = KDict.objects.get(v=5)
    k.v = 6
    rec("kdict_save", lambda: k.save())
    rec("kdict_all", lambda: list(KDict.objects.order_by("v")))
    rec("delete_refs", lambda: (u.delete(), KHolder.objects.get().u))
    rec("dangling_sr", lambda: KHolder.objects.select_related())


class LzT(M.Document):
    name = M.StringField()
    n = M.IntField(default=3)
    meta = {"allow_inheritance": True}


class LzH(M.Document):
    lz = M.LazyReferenceField(LzT, passthrough=True)
    lzs = M.ListField(M.LazyReferenceField(LzT))
    glz = M.GenericLazyReferenceField(passthrough=True)
    name = M.StringField(default="dflt")
    cnt = M.IntField(default=lambda: 7)
    tags = M.ListField(M.StringField(), default=lambda: ["a"])
    emb = M.EmbeddedDocumentField(Emb, default=lambda: Emb(a=1))


def k_document_misc() -> None:
    """Lazy references with passthrough (attributes, equality, fetch, copies, pickles),
    fields deleted with del, _data changed directly, _mark_as_changed, falsy values
    equal to their default, saves without validation, with write concerns, conditions
    and signal keywords, force_insert duplicates, equality and to_dbref, bad primary
    keys."""
    LOG.on = False
    LzT.drop_collection()
    LzH.drop_collection()
    LOG.on = True
    t = LzT(name="t").save()
    LzH(lz=t, lzs=[t, t.pk], glz=t).save()
    g = rec("get", lambda: LzH.objects.get())
    rec("pass_attr", lambda: (g.lz.name, g.lz["n"], g.glz.name))
    rec(
        "lz_eq",
        lambda: (
            g.lz == t,
            g.lz == t.pk,
            g.lz == g.lzs[0],
            g.lzs[0] == g.lzs[1],
            hash(g.lz) == hash(g.lzs[0]),
        ),
    )
    rec(
        "lz_fetch_twice",
        lambda: (g.lzs[0].fetch(), g.lzs[0].fetch(), g.lzs[0].fetch(force=True)),
    )
    rec("lz_copy", lambda: type(copy.copy(g.lz)).__name__)
    rec(
        "lz_pickle",
        lambda: type(pickle.loads(pickle.dumps(LzH.objects.get().lzs[0]))).__name__,
    )
    rec("lz_repr", lambda: repr(LzH.objects.get().lzs))
    rec("lz_contains", lambda: t in LzH.objects.get().lzs)
    rec("copy_doc", lambda: copy.copy(LzH.objects.get()))
    d = LzH.objects.get()
    del d.name
    del d.cnt
    del d.tags
    del d.emb
    rec("after_del", lambda: d)
    rec("del_delta", lambda: (d._get_changed_fields(), d._delta()))
    rec("del_save", lambda: d.save())
    rec("del_stored", lambda: LzH.objects.as_pymongo().get())
    d2 = LzH.objects.get()
    d2._data["name"] = "direct"
    rec("direct_delta", lambda: d2._delta())
    d2._mark_as_changed("name")
    rec("marked_delta", lambda: d2._delta())
    rec("marked_save", lambda: d2.save())
    d3 = LzH.objects.get()
    d3._changed_fields = ["cnt"]
    d3.cnt = 99
    rec("manual_changed", lambda: (d3._changed_fields, d3._delta()))
    d3.name = ""
    d3.tags = []
    d3.emb = None
    rec("falsy_delta", lambda: d3._delta())
    rec("falsy_save", lambda: d3.save())
    rec("falsy_stored", lambda: LzH.objects.as_pymongo().get())
    d4 = LzH.objects.get()
    d4.cnt = 0
    d4.name = None
    rec("zero_delta", lambda: d4._delta())
    rec(
        "save_novalidate", lambda: (setattr(d4, "cnt", "x"), d4.save(validate=False))[1]
    )
    rec("stored_novalidate", lambda: LzH.objects.as_pymongo().get())
    rec("load_bad", lambda: LzH.objects.get())
    d5 = LzH.objects.get()
    rec("save_w0", lambda: (setattr(d5, "cnt", 5), d5.save(write_concern={"w": 0}))[1])
    rec(
        "save_cond_ok",
        lambda: (setattr(d5, "cnt", 6), d5.save(save_condition={"cnt": 5}))[1],
    )
    rec(
        "save_signal_kwargs",
        lambda: (setattr(d5, "cnt", 8), d5.save(signal_kwargs={"z": 1}))[1],
    )
    rec("force_insert_new", lambda: LzH(name="fi").save(force_insert=True))
    rec("force_insert_dup", lambda: LzH(id=d5.pk, name="fi").save(force_insert=True))
    rec("new_with_id_save", lambda: LzH(id=d5.pk, name="over").save())
    rec("stored_over", lambda: LzH.objects.as_pymongo().get(pk=d5.pk))
    rec("pk_none_save", lambda: (setattr(d5, "pk", None), d5.save())[1])
    rec("count", lambda: LzH.objects.count())
    e = LzH.objects.first()
    rec("to_dbref", lambda: (e.to_dbref(), e.pk == e.id, e._qs is not None))
    rec(
        "eq_ne",
        lambda: (
            e == LzH.objects.first(),
            e != LzH.objects.first(),
            e == LzH(),
            LzH() == LzH(),
        ),
    )
    rec("in_list", lambda: e in list(LzH.objects))
    rec("emb_eq", lambda: (e.emb == Emb(a=1), LzH.objects.first().emb == e.emb))
    rec("get_bad_pk", lambda: LzH.objects.get(pk="bad"))
    rec("with_id_bad", lambda: LzH.objects.with_id("bad"))
    rec("delete_doc_w", lambda: e.delete(w=1))
    rec("delete_doc_sig", lambda: LzH.objects.first().delete(signal_kwargs={"q": 1}))


def k_iteration() -> None:
    """next() on querysets interleaved with rewind, list, count, clone, indexing, first,
    filter and len; exec_js, map_reduce, to_json/from_json, a queryset's bool, equality,
    membership and pickle; sums and averages of embedded paths."""
    seed()
    qs = Person.objects.order_by("name")
    rec("next1", lambda: next(qs).name)
    rec("next2", lambda: next(qs).name)
    rec("rewind", lambda: qs.rewind())
    rec("next_after_rewind", lambda: next(qs).name)
    rec("list_after_next", lambda: [p.name for p in qs])
    rec("next_after_list", lambda: next(qs).name)
    q2 = Person.objects.order_by("name").limit(2)
    rec("next_lim", lambda: [next(q2).name, next(q2).name])
    rec("next_stop", lambda: next(q2))
    rec("next_stop2", lambda: next(q2))
    q3 = Person.objects.order_by("name").scalar("name")
    rec("next_scalar", lambda: [next(q3), next(q3)])
    q4 = Person.objects.order_by("name").as_pymongo()
    rec("next_pymongo", lambda: next(q4))
    q5 = Person.objects.order_by("name").no_dereference()
    rec("next_nodrf", lambda: next(q5))
    q6 = Person.objects.order_by("name")
    rec("cursor", lambda: type(q6._cursor).__name__)
    rec("next_after_cursor", lambda: next(q6).name)
    rec("count_mid", lambda: q6.count())
    rec("next_after_count", lambda: next(q6).name)
    rec("clone_mid", lambda: [p.name for p in q6.clone()])
    rec("next_after_clone", lambda: next(q6).name)
    rec("getitem_mid", lambda: q6[0].name)
    rec("next_after_getitem", lambda: next(q6).name)
    rec("first_mid", lambda: q6.first().name)
    rec("next_after_first", lambda: next(q6).name)
    rec("filter_mid", lambda: [p.name for p in q6.filter(age=0)])
    rec("next_after_filter", lambda: next(q6).name)
    rec("len_mid", lambda: len(q6))
    rec("next_after_len", lambda: next(q6).name)
    rec(
        "exec_js",
        lambda: Person.objects(age=1).exec_js(
            "function() { return db[collection].find(query).count(); }"
        ),
    )
    rec(
        "map_reduce",
        lambda: sorted(
            (r.key, r.value)
            for r in Person.objects.map_reduce(
                "function() { emit(this.age, 1); }",
                "function(k, vs) { return Array.sum(vs); }",
                "inline",
            )
        ),
    )
    rec(
        "map_reduce_obj",
        lambda: sorted(
            [
                r.object.name
                for r in Person.objects(age=2).map_reduce(
                    "function() { emit(this._id, 1); }",
                    "function(k, vs) { return Array.sum(vs); }",
                    "inline",
                )
            ]
        ),
    )
    rec(
        "to_json",
        lambda: Person.objects.order_by("name").exclude("id").limit(2).to_json(),
    )
    rec(
        "from_json",
        lambda: Person.objects.from_json(
            Person.objects.order_by("name").limit(2).to_json()
        ),
    )
    rec("qs_bool", lambda: (bool(Person.objects), bool(Person.objects(name="zz"))))
    rec("qs_eq", lambda: Person.objects == Person.objects)
    rec("qs_contains", lambda: Person.objects.first() in Person.objects)
    rec(
        "qs_getstate",
        lambda: sorted(
            k for k in Person.objects.__getstate__() if not k.startswith("_collection")
        ),
    )
    rec(
        "qs_pickle",
        lambda: [
            p.name
            for p in pickle.loads(
                pickle.dumps(Person.objects.order_by("name").limit(2))
            )
        ],
    )
    rec("sum_float", lambda: Person.objects.sum("score"))
    rec("avg_embs", lambda: Person.objects.average("embs.a"))
    rec("sum_emb", lambda: Person.objects.sum("emb.a"))
    rec("avg_emb", lambda: Person.objects.average("emb.a"))


class CrT(M.Document):
    name = M.StringField()


class CrH(M.Document):
    one = M.ReferenceField(CrT)
    refs = M.ListField(M.ReferenceField(CrT))
    gen = M.GenericReferenceField()
    anyl = M.ListField()
    mp = M.MapField(M.ReferenceField(CrT))
    n = M.IntField()


def k_clear_references() -> None:
    """Saves of references assigned as ids, DBRefs and documents (single, lists,
    generic, untyped lists, maps): what the save sends and dereferences, the document
    after, its reads."""
    LOG.on = False
    CrT.drop_collection()
    CrH.drop_collection()
    LOG.on = True
    a = CrT(name="a").save()
    b = CrT(name="b").save()
    CrH(one=a, refs=[a], gen=a, anyl=[a], mp={"x": a}, n=1).save()
    for label, change in [
        ("one_id", lambda d: setattr(d, "one", b.pk)),
        ("one_dbref", lambda d: setattr(d, "one", b.to_dbref())),
        ("one_doc", lambda d: setattr(d, "one", b)),
        ("refs_ids", lambda d: setattr(d, "refs", [a.pk, b.pk])),
        ("refs_dbrefs", lambda d: setattr(d, "refs", [a.to_dbref(), b.to_dbref()])),
        ("gen_dbref", lambda d: setattr(d, "gen", b)),
        ("anyl", lambda d: setattr(d, "anyl", [b, 1])),
        ("mp_ids", lambda d: setattr(d, "mp", {"y": b.pk})),
        ("n_only", lambda d: setattr(d, "n", 5)),
    ]:
        d = CrH.objects.get()
        change(d)
        rec(label + " changed", lambda d=d: d._get_changed_fields())
        rec(label + " save", lambda d=d: d.save())
        rec(label + " after", lambda d=d: d)
        rec(label + " reads", lambda d=d: (d.one, d.refs, d.gen, d.anyl, d.mp))
    rec("stored", lambda: CrH.objects.as_pymongo().get())


class Weird(M.Document):
    son = M.IntField(default=1)
    data = M.StringField()
    value = M.ListField(M.IntField())
    document = M.EmbeddedDocumentField(Emb)
    fallback = M.IntField(db_field="v0")
    v0 = M.IntField(db_field="fallback")
    load = M.DictField()
    get = M.IntField(db_field="a'b\\c\"d")
    stored_id = M.IntField()
    class_name = M.StringField(db_field="_cls_")
    MISSING = M.IntField()
    dumped = M.IntField()
    名前 = M.StringField(db_field="名")
    meta = {"allow_inheritance": True}


class WeirdSub(Weird):
    self_ = M.IntField(db_field="self")
    item = M.IntField(db_field="son")


class WE(M.EmbeddedDocument):
    son = M.IntField()
    data = M.IntField(db_field="value")
    value = M.IntField(db_field="data")


class WH(M.Document):
    es = M.ListField(M.EmbeddedDocumentField(WE))
    e = M.EmbeddedDocumentField(WE)


def k_odd_names() -> None:
    """Field names that a generated loader or writer might use for itself (son, data,
    value, document, fallback, load, get...), db_fields swapped between fields, quoted
    and non-ASCII names, a subclass reusing them; embedded documents with swapped
    db_fields."""
    LOG.on = False
    Weird.drop_collection()
    WH.drop_collection()
    LOG.on = True
    w = rec(
        "new",
        lambda: Weird(
            son=2,
            data="d",
            value=[1],
            document=Emb(a=1),
            fallback=3,
            v0=4,
            load={"x": 1},
            get=5,
            stored_id=6,
            class_name="c",
            MISSING=7,
            dumped=8,
            名前="n",
        ),
    )
    rec("save", lambda: w.save())
    rec("validate", lambda: w.validate())
    s = rec("new_sub", lambda: WeirdSub(son=9, self_=10, item=11, data="s"))
    rec("save_sub", lambda: s.save())
    rec("stored", lambda: list(Weird.objects.order_by("id").as_pymongo()))
    rec("loaded", lambda: list(Weird.objects.order_by("id")))
    rec("loaded_sub", lambda: list(WeirdSub.objects))
    g = Weird.objects.order_by("id").first()
    g.fallback = 30
    g.v0 = 40
    g.get = 50
    g.名前 = "m"
    g.value.append(2)
    rec("delta", lambda: g._delta())
    rec("save2", lambda: g.save())
    rec("only", lambda: list(Weird.objects.only("fallback", "get").order_by("id")))
    rec("q", lambda: Weird.objects(get=50, fallback=30).count())
    rec("upd", lambda: Weird.objects.update(inc__v0=1, set__名前="z"))
    rec(
        "scalar",
        lambda: list(Weird.objects.order_by("id").scalar("get", "v0", "fallback")),
    )
    rec("stored2", lambda: list(Weird.objects.order_by("id").as_pymongo()))
    rec("wh", lambda: WH(es=[WE(son=1, data=2, value=3)], e=WE(data=4, value=5)).save())
    rec("wh_stored", lambda: WH.objects.as_pymongo().get())
    gh = rec("wh_get", lambda: WH.objects.get())
    gh.es[0].data = 20
    gh.e.value = 50
    rec("wh_delta", lambda: gh._delta())
    rec("wh_save", lambda: gh.save())
    rec("wh_stored2", lambda: WH.objects.as_pymongo().get())


def k_no_dereference_block() -> None:
    """MongoEngine's no_dereference() block: listing, next() of an iteration begun
    outside, first, select_related, in_bulk, scalar, get, reload, insert inside;
    documents loaded inside read after; another class's block; no_dereference()
    querysets read twice."""
    clean()
    a = Author(name="A").save()
    b = Author(name="B").save()
    for i in range(3):
        Article(
            title=f"t{i}",
            author=a,
            authors=[a, b],
            amap={"x": b},
            gen=a,
            lazy=b,
            glazy=a,
            embs=[AEmb(a=i)],
        ).save()
    qs = Article.objects.order_by("title")
    it = iter(Article.objects.order_by("title"))
    rec("first_out", lambda: next(it).author)
    outside = Article.objects.order_by("title").first()
    with mongoengine.context_managers.no_dereference(Article) as A:
        rec(
            "in_list",
            lambda: [
                (x.author, x.authors, x.amap, x.gen)
                for x in A.objects.order_by("title")
            ],
        )
        rec("in_next", lambda: (lambda x: (x.author, x.authors, x.gen))(next(it)))
        inside = rec("in_first", lambda: A.objects.order_by("title").first())
        rec("outside_read_in", lambda: (outside.author, outside.authors))
        rec("in_sr", lambda: A.objects.order_by("title").select_related())
        rec("in_bulk", lambda: list(A.objects.in_bulk([outside.pk]).values()))
        rec(
            "in_scalar",
            lambda: list(A.objects.order_by("title").scalar("author", "authors")),
        )
        rec("in_get", lambda: A.objects.get(title="t2").authors)
        rec("in_reload", lambda: outside.reload())
        rec(
            "in_insert",
            lambda: A.objects.insert([Article(title="ins", author=a, authors=[b])]),
        )
        rec("in_doc_sr", lambda: A.objects.get(title="t1").select_related())
    rec(
        "inside_read_out",
        lambda: inside and (inside.author, inside.authors, inside.amap, inside.gen),
    )
    rec(
        "next_out",
        lambda: (lambda x: (x.author, x.authors))(next(it)) if True else None,
    )
    rec("after", lambda: [(x.author, x.authors) for x in qs.clone()])
    with mongoengine.context_managers.no_dereference(Author):
        rec("other_cls", lambda: Article.objects.order_by("title").first().authors)
    qs2 = Article.objects.order_by("title").no_dereference()
    rec("qs_nd", lambda: [(x.author, x.authors) for x in qs2])
    rec("qs_nd_read_again", lambda: [x.authors for x in qs2])


class OvA(M.Document):
    x = M.IntField(db_field="xx")
    y = M.StringField()
    z = M.ListField(M.IntField())
    meta = {"allow_inheritance": True}


class OvB(OvA):
    x = M.StringField()
    y = M.IntField(db_field="yy", default=5)


class OvC(OvB):
    z = M.ListField(M.StringField(), db_field="x")


def k_overridden_fields() -> None:
    """Fields redefined in subclasses with other types and db_fields (one naming a
    parent's stored key): saved, read by each class, projected, queried, scalar,
    in_bulk, saved again, updated."""
    LOG.on = False
    OvA.drop_collection()
    LOG.on = True
    rec("a", lambda: OvA(x=1, y="s", z=[1]).save())
    rec("b", lambda: OvB(x="bx", y=2, z=[2]).save())
    rec("c", lambda: OvC(y=3, z=["c"]).save())
    rec("stored", lambda: list(OvA.objects.order_by("id").as_pymongo()))
    rec("all_a", lambda: list(OvA.objects.order_by("id")))
    rec("all_b", lambda: list(OvB.objects.order_by("id")))
    rec("all_c", lambda: list(OvC.objects.order_by("id")))
    rec("only_a", lambda: list(OvA.objects.only("x").order_by("id")))
    rec("only_b", lambda: list(OvB.objects.only("y").order_by("id")))
    rec("q_a_x", lambda: OvA.objects(x=1).count())
    rec("q_b_x", lambda: OvB.objects(x="bx").count())
    rec("scalar_a", lambda: list(OvA.objects.order_by("id").scalar("x", "y")))
    rec("scalar_b", lambda: list(OvB.objects.order_by("id").scalar("x", "y")))
    rec(
        "bulk",
        lambda: sorted(
            OvA.objects.in_bulk(list(OvA.objects.scalar("id"))).values(),
            key=lambda d: str(d.id),
        ),
    )
    listed = rec(
        "listed", lambda: [*OvA.objects.no_sub_classes(), *OvC.objects.order_by("id")]
    )
    for d in listed or []:
        d.y = d.y
        rec("resave " + type(d).__name__, lambda d=d: (d._delta(), d.save()))
    rec("stored2", lambda: list(OvA.objects.order_by("id").as_pymongo()))
    rec("upd_b", lambda: OvB.objects.update(set__y=9))
    rec("stored3", lambda: list(OvA.objects.order_by("id").as_pymongo()))
    rec("all_a3", lambda: list(OvA.objects.order_by("id")))


class In2(M.EmbeddedDocument):
    v = M.IntField()


class In1(M.EmbeddedDocument):
    inner = M.EmbeddedDocumentField(In2)
    inners = M.ListField(M.EmbeddedDocumentField(In2))
    m = M.MapField(M.EmbeddedDocumentField(In2))
    nums = M.ListField(M.IntField())


class InDoc(M.Document):
    e = M.EmbeddedDocumentField(In1)
    es = M.ListField(M.EmbeddedDocumentField(In1))
    em = M.MapField(M.EmbeddedDocumentField(In1))
    el = M.EmbeddedDocumentListField(In1)
    d = M.DictField()
    ge = M.GenericEmbeddedDocumentField()
    dy = M.DynamicField()


def owner(x: Any, top: Any) -> Any:
    """What ``x`` is bound to: ``top`` itself, another document, a dead proxy."""
    inst = getattr(x, "_instance", None)
    if inst is None:
        return None
    try:
        return "top" if inst._data is top._data else ("emb", type(inst).__name__)
    except ReferenceError:
        return "dead"


def links(doc: Any) -> list:
    """The owners of the embedded documents and containers of ``doc``."""
    out = []
    e = doc.e
    out.append(("e", owner(e, doc)))
    out.append(("e.inner", owner(e.inner, e), owner(e.inner, doc)))
    out.append(("e.inners0", owner(e.inners[0], e), owner(e.inners[0], doc)))
    out.append(("e.m.k", owner(e.m["k"], e), owner(e.m["k"], doc)))
    out.append(
        ("e.nums", owner(e.nums, e), owner(e.nums, doc), getattr(e.nums, "_name", None))
    )
    out.append(("es0", owner(doc.es[0], doc)))
    out.append(
        ("es0.inner", owner(doc.es[0].inner, doc.es[0]), owner(doc.es[0].inner, doc))
    )
    out.append(
        (
            "es0.inners",
            owner(doc.es[0].inners, doc.es[0]),
            owner(doc.es[0].inners, doc),
            getattr(doc.es[0].inners, "_name", None),
        )
    )
    out.append(("em.a", owner(doc.em["a"], doc)))
    out.append(("el0", owner(doc.el[0], doc), type(doc.el).__name__))
    out.append(
        (
            "d",
            getattr(doc.d, "_name", None),
            type(doc.d["x"]).__name__,
            owner(doc.d["x"], doc),
        )
    )
    out.append(("ge", owner(doc.ge, doc)))
    out.append(("dy", owner(doc.dy, doc), type(doc.dy).__name__))
    return out


def mk() -> Any:
    """A document holding embedded documents in every container."""

    def i1() -> Any:
        return In1(inner=In2(v=1), inners=[In2(v=2)], m={"k": In2(v=3)}, nums=[1])

    return InDoc(
        e=i1(),
        es=[i1()],
        em={"a": i1()},
        el=[i1()],
        d={"x": In2(v=4), "y": [1]},
        ge=In2(v=5),
        dy=i1(),
    )


def k_owner_links() -> None:
    """Which document each embedded document, list and dict is bound to (their _instance
    and _name) after each way of building or reading it; then changes deep in them and
    the save."""
    LOG.on = False
    InDoc.drop_collection()
    LOG.on = True
    n = mk()
    rec("new_links", lambda: links(n))
    rec("save", lambda: n.save())
    rec("saved_links", lambda: links(n))
    qs = InDoc.objects
    rec("get", lambda: links(qs.get()))
    rec("first", lambda: links(qs.first()))
    rec("list", lambda: links(next(iter(qs))))
    rec("idx", lambda: links(qs[0]))
    rec("bulk", lambda: links(next(iter(qs.in_bulk([n.pk]).values()))))
    rec("sr", lambda: links(qs.select_related()[0]))
    rec("nocache", lambda: links(next(iter(qs.no_cache()))))
    rec("only", lambda: links(qs.exclude("id").first()))
    rec("reload", lambda: links(qs.get().reload()))
    rec("reload_f", lambda: links(qs.get().reload("e", "es")))
    rec("modify", lambda: links(qs.modify(new=True, set__d__z=1)))
    rec("insert", lambda: links(qs.insert(mk())))
    rec("nodrf", lambda: links(qs.no_dereference().first()))
    rec("from_json", lambda: links(InDoc.from_json(qs.first().to_json())))
    rec("deepcopy", lambda: links(copy.deepcopy(qs.first())))
    g = qs.first()
    g.e.inner.v = 10
    g.es[0].inners[0].v = 20
    g.el[0].m["k"].v = 30
    g.e.nums.append(5)
    g.d["x"]["v"] = 40
    g.dy.inner.v = 50
    rec("changed", lambda: g._get_changed_fields())
    rec("delta", lambda: g._delta())
    rec("save2", lambda: g.save())
    rec("stored", lambda: qs.as_pymongo().first())


class Geo2(M.Document):
    name = M.StringField()
    gp = M.GeoPointField()
    pt = M.PointField(auto_index=False)
    price = M.DecimalField(precision=2)
    tags = M.ListField(M.StringField())
    ref = M.ReferenceField(Author)
    seq = M.SequenceField(value_decorator=lambda v: f"S{v}")


def k_geo_decimal() -> None:
    """GeoPointField queries (near, max_distance, within center/box/polygon/sphere),
    near on an unindexed PointField, sums and averages of decimals, item_frequencies of
    references, explain, create() with a decorated SequenceField and queries by it,
    GeoPointField validation."""
    LOG.on = False
    Geo2.drop_collection()
    Author.drop_collection()
    M.get_db()["mongoengine.counters"].drop()
    LOG.on = True
    a = Author(name="a").save()
    for i in range(5):
        rec(
            f"create{i}",
            lambda i=i: Geo2.objects.create(
                name=f"g{i}",
                gp=[i, i],
                pt=[i, -i],
                price=Decimal(i) / 3,
                tags=["x", f"t{i % 2}"],
                ref=a if i % 2 else None,
            ),
        )
    rec("near", lambda: [g.name for g in Geo2.objects(gp__near=[0, 0])])
    rec(
        "near_max",
        lambda: [g.name for g in Geo2.objects(gp__near=[0, 0], gp__max_distance=2)],
    )
    rec(
        "within_center",
        lambda: sorted(g.name for g in Geo2.objects(gp__within_center=[(0, 0), 2])),
    )
    rec(
        "within_box",
        lambda: sorted(g.name for g in Geo2.objects(gp__within_box=[(0, 0), (2, 2)])),
    )
    rec(
        "within_polygon",
        lambda: sorted(
            g.name for g in Geo2.objects(gp__within_polygon=[(0, 0), (0, 3), (3, 3)])
        ),
    )
    rec(
        "within_sphere",
        lambda: sorted(
            g.name for g in Geo2.objects(gp__within_spherical_distance=[(0, 0), 0.03])
        ),
    )
    rec(
        "near_sphere",
        lambda: [g.name for g in Geo2.objects(gp__near_sphere=[0, 0])][:3],
    )
    rec("pt_noindex_near", lambda: list(Geo2.objects(pt__near=[0, 0])))
    rec("sum_dec", lambda: Geo2.objects.sum("price"))
    rec("avg_dec", lambda: Geo2.objects.average("price"))
    rec("distinct_dec", lambda: sorted(Geo2.objects.distinct("price")))
    rec(
        "if_ref_mr",
        lambda: sorted(
            map(str, Geo2.objects.item_frequencies("ref", map_reduce=True).items())
        ),
    )
    rec(
        "if_ref", lambda: sorted(map(str, Geo2.objects.item_frequencies("ref").items()))
    )
    rec(
        "if_tags_norm_mr",
        lambda: sorted(
            Geo2.objects.item_frequencies(
                "tags", normalize=True, map_reduce=True
            ).items()
        ),
    )
    rec(
        "explain",
        lambda: (
            sorted(Geo2.objects(name="g1").hint([("name", 1)]).explain())
            if False
            else sorted(Geo2.objects(name="g1").explain())
        ),
    )
    rec("seq_vals", lambda: list(Geo2.objects.order_by("seq").scalar("seq")))
    rec("seq_q", lambda: Geo2.objects(seq="S3").count())
    rec("seq_q_int", lambda: Geo2.objects(seq=3).count())
    rec("stored", lambda: list(Geo2.objects.order_by("seq").as_pymongo()))
    rec(
        "gp_validate",
        lambda: [Geo2(gp=v).validate() for v in ([1], [1, "a"], [200, 0])],
    )


class MutE(M.EmbeddedDocument):
    a = M.IntField()


class MutDoc(M.Document):
    name = M.StringField()
    n = M.IntField(default=0)
    e = M.EmbeddedDocumentField(MutE)
    tags = M.ListField(M.StringField())


ACTIONS: dict = {}  # what each receiver does in the current case


def on_pre_save_m(sender: Any, document: Any, **kw: Any) -> None:
    act = ACTIONS.get("pre_save")
    if act:
        act(document)


def on_pspv_m(sender: Any, document: Any, created: Any, **kw: Any) -> None:
    act = ACTIONS.get("pspv")
    if act:
        act(document)


def on_post_save_m(sender: Any, document: Any, created: Any, **kw: Any) -> None:
    act = ACTIONS.get("post_save")
    if act:
        act(document)


def on_pre_bulk_m(sender: Any, documents: Any, **kw: Any) -> None:
    act = ACTIONS.get("pre_bulk")
    if act:
        act(documents)


def k_mutating_receivers() -> None:
    """pre_save, pre_save_post_validation, post_save and pre_bulk_insert receivers
    changing the document (fields, embedded documents, lists) or the list inserted: what
    saves and inserts send and leave."""
    M.pre_save.connect(on_pre_save_m, sender=MutDoc)
    M.pre_save_post_validation.connect(on_pspv_m, sender=MutDoc)
    M.post_save.connect(on_post_save_m, sender=MutDoc)
    mongoengine.signals.pre_bulk_insert.connect(on_pre_bulk_m, sender=MutDoc)
    LOG.on = False
    MutDoc.drop_collection()
    LOG.on = True
    cases = {
        "pre_save_set": {"pre_save": lambda d: setattr(d, "name", "ps")},
        "pre_save_bad": {"pre_save": lambda d: setattr(d, "n", "bad")},
        "pspv_bad": {"pspv": lambda d: setattr(d, "n", "bad2")},
        "pspv_emb": {"pspv": lambda d: setattr(d.e, "a", 77) if d.e else None},
        "post_save_set": {"post_save": lambda d: setattr(d, "name", "after")},
        "post_save_emb": {
            "post_save": lambda d: setattr(d.e, "a", 99) if d.e else None
        },
        "post_save_list": {"post_save": lambda d: d.tags.append("z")},
        "pre_bulk_append": {
            "pre_bulk": lambda ds: (
                ds.append(MutDoc(name="extra")) if isinstance(ds, list) else None
            )
        },
        "pre_bulk_change": {"pre_bulk": lambda ds: [setattr(x, "n", 5) for x in ds]},
        "pre_bulk_bad": {"pre_bulk": lambda ds: [setattr(x, "n", "q") for x in ds]},
    }
    for label, acts in cases.items():
        ACTIONS.clear()
        ACTIONS.update(acts)
        d = rec(
            label + " new_save",
            lambda: MutDoc(name="x", e=MutE(a=1), tags=["a"]).save(),
        )
        g = (
            MutDoc.objects.get(pk=d.pk)
            if d
            else (MutDoc.objects.first() or MutDoc(name="y", e=MutE(a=0)))
        )
        g.n = 3
        g.e.a = 2
        rec(label + " save2", lambda g=g: g.save())
        rec(label + " after2", lambda g=g: (g, g._get_changed_fields()))
        rec(label + " save3", lambda g=g: g.save())
        rec(label + " insert", lambda: MutDoc.objects.insert([MutDoc(name="i")]))
        rec(
            label + " insert1",
            lambda: MutDoc.objects.insert(MutDoc(name="j"), load_bulk=False),
        )
        rec(label + " stored", lambda: list(MutDoc.objects.order_by("id").as_pymongo()))
        LOG.on = False
        MutDoc.drop_collection()
        LOG.on = True
    ACTIONS.clear()


class RtE(M.EmbeddedDocument):
    a = M.IntField()


class RtDoc(M.Document):
    name = M.StringField(max_length=5)
    n = M.IntField(min_value=0)
    f = M.FloatField()
    d = M.DecimalField(precision=2)
    tags = M.ListField(M.StringField())
    e = M.EmbeddedDocumentField(RtE)
    c = M.StringField(choices=["a", "b"])
    en = M.EnumField(Color)
    dt = M.DateTimeField()


def refuse_one(value: Any) -> None:
    """A ``validation`` function: refuses 1."""
    if value == 1:
        raise M.ValidationError("nope")


def seedrt() -> None:
    """One RtDoc, stored quietly."""
    LOG.on = False
    RtDoc.drop_collection()
    RtDoc(
        name="x",
        n=1,
        f=1.0,
        d=Decimal("1.5"),
        tags=["t"],
        e=RtE(a=1),
        c="a",
        en=Color.RED,
    ).save()
    LOG.on = True


def k_patched_fields() -> None:
    """Field settings patched with mock.patch.object (defaults, null, required,
    bounds, choices, validation, precision, rounding, force_string, a list's item
    field, an embedded class's fields, a regex): documents built, validated, saved,
    loaded, changed and inserted during the patch and after it."""
    seedrt()
    F = RtDoc._fields
    patches = [
        ("default_name", F["name"], "default", "dflt"),
        ("default_n_callable", F["n"], "default", lambda: 42),
        ("null_name", F["name"], "null", True),
        ("required_n", F["n"], "required", True),
        ("max_length", F["name"], "max_length", 2),
        ("min_value", F["n"], "min_value", 5),
        ("choices", F["c"], "choices", ["z"]),
        (
            "validation",
            F["n"],
            "validation",
            refuse_one,
        ),
        ("precision", F["d"], "precision", 0),
        ("rounding", F["d"], "rounding", "ROUND_DOWN"),
        ("force_string", F["d"], "force_string", True),
        ("list_inner", F["tags"], "field", M.IntField()),
        ("emb_required_inner", RtE._fields["a"], "required", True),
        ("emb_default_inner", RtE._fields["a"], "default", 7),
        ("regex", F["name"], "regex", re.compile("^z")),
        ("db_field_e_inner_min", RtE._fields["a"], "min_value", 10),
    ]
    for label, field, attr, value in patches:
        with mock.patch.object(field, attr, value):
            rec(
                label + " new",
                lambda: RtDoc(
                    name=None, n=None, tags=["1"], e=RtE(), d="2.345", c="a", f=2
                ),
            )
            rec(
                label + " new_validate",
                lambda: RtDoc(name="abc", n=1, e=RtE(), c="a").validate(),
            )
            rec(
                label + " new_save",
                lambda: RtDoc(
                    name="y", n=1, e=RtE(a=1), d=Decimal("3.456"), tags=["q"], c="a"
                ).save(),
            )
            g = rec(label + " load", lambda: RtDoc.objects.order_by("id").first())
            rec(label + " load_all", lambda: list(RtDoc.objects.order_by("id")))
            if g is not None:
                g.n = 1
                g.name = "abc"
                rec(label + " validate", lambda g=g: g.validate())
                rec(label + " delta", lambda g=g: g._delta())
                rec(label + " save", lambda g=g: g.save())
            rec(label + " insert", lambda: RtDoc.objects.insert([RtDoc(name="i", n=2)]))
        rec(label + " after_new", lambda: RtDoc(name=None, n=None, d="2.345"))
        rec(label + " after_load", lambda: RtDoc.objects.order_by("id").first())
        rec(label + " after_save", lambda: RtDoc(name="z", n=3).save())
        rec(label + " stored", lambda: list(RtDoc.objects.order_by("id").as_pymongo()))
        seedrt()


class NoAl(M.Document):
    name = M.StringField()
    meta = {"db_alias": "nowhere"}


class Later(M.Document):
    name = M.StringField()
    meta = {"db_alias": "later"}


def k_aliases() -> None:
    """Sync use of aliases never defined, registered later, disconnected, switched
    to by using(), switch_db() and its block, connected again: errors and results."""
    rec("objects", lambda: NoAl.objects)
    rec("list", lambda: list(NoAl.objects))
    rec("save", lambda: NoAl(name="x").save())
    rec("coll", lambda: NoAl._get_collection())
    rec("db", lambda: NoAl._get_db())
    rec("count", lambda: NoAl.objects.count())
    rec("ensure", lambda: NoAl.ensure_indexes())
    rec("drop", lambda: NoAl.drop_collection())
    rec("insert", lambda: NoAl.objects.insert([NoAl()]))
    rec("using_nope", lambda: list(Person.objects.using("nope")))
    rec(
        "switch_db_nope",
        lambda: (lambda p: (p.switch_db("nope"), p.save()))(Person(name="q")),
    )

    def cm():
        with mongoengine.context_managers.switch_db(Person, "nope") as P:
            return list(P.objects)

    rec("cm_switch_nope", cm)
    rec("get_db_nope", lambda: M.get_db("nope"))
    rec("get_conn_nope", lambda: M.get_connection("nope"))
    M.register_connection(
        "later",
        db=M.get_db().name + "_later",
        host=os.environ["MONGODB_URI"],
        uuidRepresentation="standard",
    )
    rec("later_save", lambda: Later(name="l").save())
    rec("later_list", lambda: list(Later.objects))
    rec("later_drop", lambda: Later.drop_collection())
    M.disconnect("later")
    rec("after_disconnect", lambda: list(Later.objects))
    rec("after_disconnect_save", lambda: Later(name="m").save())
    rec(
        "connect_again_conflict",
        lambda: M.connect(
            db="other_db", alias="default", host=os.environ["MONGODB_URI"]
        ),
    )
    rec(
        "connect_same",
        lambda: (
            type(
                M.connect(
                    db=M.get_db().name,
                    alias="default",
                    host=os.environ["MONGODB_URI"],
                    uuidRepresentation="standard",
                    event_listeners=[LOG],
                )
            ).__name__
        ),
    )


class FzE(M.EmbeddedDocument):
    a = M.IntField()
    s = M.StringField(default="x")
    lst = M.ListField(M.IntField())


class FzT(M.Document):
    name = M.StringField()


# What k_random_documents draws (differential_fuzz.py, as async_differential.py
# does): references loaded as they are read, changed in place too.
FZ = Fuzz(
    M=M,
    embedded=FzE,
    referenced=FzT,
    kinds=field_kinds(M, FzE, FzT, Color),
    io=sync_io,
)


def fz_updates(draw: random.Random, cls: Any, spec: list, target: Any) -> None:
    """Drawn updates of ``cls``'s documents (an operator on a field, with a
    drawn value), some an upsert of a new id; what each stores and loads."""
    upserted = cls.objects(id=ObjectId("5f00000000000000000000aa"))
    for _ in range(6):
        key, value = FZ.update(draw, spec, target)
        queryset = upserted if draw.random() < 0.2 else cls.objects
        options = {"upsert": True} if queryset is upserted else {}
        rec(
            "update " + key,
            lambda q=queryset, o=options, k=key, v=value: q.update(**o, **{k: v}),
        )
        rec("updated", lambda: list(cls.objects.order_by("id").as_pymongo()))
        rec("loaded", lambda: list(cls.objects.order_by("id")))


def k_random_documents() -> None:
    """Classes of drawn fields and options (seeded), documents of drawn values
    built, validated, dumped, saved, read (whole or projected), changed by
    drawn assignments and in-place list, dict and embedded changes, saved
    again; drawn updates (upserts too), listed, inserted."""
    LOG.on = False
    FzT.drop_collection()
    target = FzT(name="t").save()
    LOG.on = True
    for number in (1, 3):
        draw = random.Random(number)
        classes = [FZ.document_class(draw, f"KRand{number}_{n}") for n in range(12)]
        LOG.on = False
        for cls, _ in classes:
            cls.drop_collection()
        LOG.on = True
        for cls, spec in classes:
            for _ in range(4):
                saved = FZ.saved_and_changed(draw, cls, spec, target)
                if saved is None:
                    continue
                found, _ = saved
                rec("reload", found.get)
            fz_updates(draw, cls, spec, target)
            rec("list", lambda c=cls: list(c.objects.order_by("id")))
            rec("insert", lambda c=cls: c.objects.insert([c(), c()]))


SCENARIOS = [
    k_field_options,
    k_read_shapes,
    k_nested_kinds,
    k_tz_zone,
    k_bulk_options,
    k_custom_keys,
    k_document_misc,
    k_iteration,
    k_clear_references,
    k_odd_names,
    k_no_dereference_block,
    k_overridden_fields,
    k_owner_links,
    k_geo_decimal,
    k_patched_fields,
    k_aliases,
    k_random_documents,
    k_mutating_receivers,  # (last: its receivers stay connected)
]

if __name__ == "__main__":
    harness.run(SCENARIOS)
