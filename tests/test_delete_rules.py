"""Delete rules on async deletes, against the real replica set.

Every rule (CASCADE, NULLIFY, PULL, DENY) over every kind of reference field,
document and queryset deletes, inheritance, deep and cyclic graphs, DENY found
deep, bounded round trips, and atomicity: a failure anywhere in a cascade (an
error, a server error, a cancelled task) leaves every collection as it was.
"""

from __future__ import annotations

import asyncio

import pytest
from bson import DBRef

from conftest import receiving
from mongoengine_async import (
    CASCADE,
    DENY,
    DO_NOTHING,
    NULLIFY,
    PULL,
    Document,
    FileField,
    GenericReferenceField,
    IntField,
    LazyReferenceField,
    ListField,
    OperationError,
    ReferenceField,
    StringField,
    async_run_in_transaction,
    get_async_connection,
    get_async_db,
    signals,
)
from mongoengine_async.testing import CommandLog, fresh_database

# -- models: one target, a referring class per (field kind, rule) ----------------------


class DrTarget(Document):
    name = StringField()


FIELD_KINDS = {
    "ref": lambda rule: ReferenceField(DrTarget, reverse_delete_rule=rule),
    "ref_dbref": lambda rule: ReferenceField(
        DrTarget, dbref=True, reverse_delete_rule=rule
    ),
    "lazy": lambda rule: LazyReferenceField(DrTarget, reverse_delete_rule=rule),
    "generic": lambda rule: GenericReferenceField(),
    "list_ref": lambda rule: ListField(
        ReferenceField(DrTarget, reverse_delete_rule=rule)
    ),
    "list_lazy": lambda rule: ListField(
        LazyReferenceField(DrTarget, reverse_delete_rule=rule)
    ),
    "list_generic": lambda rule: ListField(GenericReferenceField()),
}
RULES = {"cascade": CASCADE, "nullify": NULLIFY, "pull": PULL, "deny": DENY}
REFERRERS: dict[tuple[str, str], type] = {}

for _kind, _make_field in FIELD_KINDS.items():
    for _rule_name, _rule in RULES.items():
        if _rule == PULL and not _kind.startswith("list"):
            continue
        _name = "Dr" + "".join(p.title() for p in _kind.split("_")) + _rule_name.title()
        _cls = type(
            _name,
            (Document,),
            {"__module__": __name__, "label": StringField(), "ref": _make_field(_rule)},
        )
        if "generic" in _kind:  # generic fields take no reverse_delete_rule
            DrTarget.register_delete_rule(_cls, "ref", _rule)
        REFERRERS[(_kind, _rule_name)] = _cls
        globals()[_name] = _cls

CASES = sorted(REFERRERS)


async def snapshot() -> dict[str, list[dict]]:
    """The raw contents of every collection of the test database."""
    db = get_async_db()
    names = sorted(
        name
        for name in await db.list_collection_names()
        if not name.startswith("system.")
    )
    return {name: await db[name].find().sort("_id", 1).to_list(None) for name in names}


async def raw(cls: type, document: Document) -> dict | None:
    collection = await cls._async_get_collection()
    return await collection.find_one({"_id": document.pk})


async def make_case(kind: str, rule: str):
    """Targets t1, t2 and three referrers: r1, r2 point at t1, r3 only at t2."""
    cls = REFERRERS[(kind, rule)]
    t1 = await DrTarget(name="t1").async_save()
    t2 = await DrTarget(name="t2").async_save()
    if kind.startswith("list"):
        values = {"r1": [t1, t2], "r2": [t1], "r3": [t2]}
    else:
        values = {"r1": t1, "r2": t1, "r3": t2}
    refs = {
        label: await cls(label=label, ref=value).async_save()
        for label, value in values.items()
    }
    return cls, t1, t2, refs


async def delete_t1(how: str, t1: DrTarget) -> None:
    if how == "document":
        assert await t1.async_delete() is None
    else:
        assert await DrTarget.objects(name="t1").async_delete() == 1


# -- each rule, each field kind --------------------------------------------------------


def test_rules_are_registered_as_mongoengine_does():
    rules = DrTarget._meta["delete_rules"]
    for (kind, rule), cls in REFERRERS.items():
        assert rules[(cls, "ref")] == RULES[rule], (kind, rule)


@pytest.mark.parametrize("how", ["document", "queryset"])
@pytest.mark.parametrize(("kind", "rule"), CASES, ids=["-".join(c) for c in CASES])
async def test_rule(async_alias, kind, rule, how):
    cls, t1, t2, refs = await make_case(kind, rule)
    before = await snapshot()
    r3_raw = await raw(cls, refs["r3"])

    if rule == "deny":
        with pytest.raises(OperationError) as error:
            await delete_t1(how, t1)
        assert str(error.value) == (
            f"Could not delete document ({cls.__name__}.ref refers to it)"
        )
        assert await snapshot() == before
        # A target nobody refers to can still be deleted.
        t3 = await DrTarget(name="t3").async_save()
        await t3.async_delete()
        assert await DrTarget.objects.async_count() == 2
        return

    await delete_t1(how, t1)
    assert await DrTarget.objects.async_scalar("name") == ["t2"]
    assert await raw(cls, refs["r3"]) == r3_raw  # untouched
    if rule == "cascade":
        assert await cls.objects.async_scalar("label") == ["r3"]
    elif rule == "nullify":
        for label in ("r1", "r2"):
            stored = await raw(cls, refs[label])
            assert stored is not None and "ref" not in stored
    elif rule == "pull":
        assert (await raw(cls, refs["r1"]))["ref"] == r3_raw["ref"]
        assert (await raw(cls, refs["r2"]))["ref"] == []
        reloaded = await cls.objects.async_get(label="r1")
        assert [item.pk for item in reloaded.ref] == [t2.pk]


async def test_pull_on_a_single_reference_fails_and_changes_nothing(async_alias):
    """MongoEngine allows declaring PULL on a plain reference; the server refuses
    $pull on a non-array. The delete fails as a whole: nothing is half-done."""

    t1 = await DrPullTarget(name="t1").async_save()
    await DrPullSingle(ref=t1).async_save()
    await DrPullNullified(ref=t1).async_save()
    before = await snapshot()
    with pytest.raises(OperationError):
        await t1.async_delete()
    assert await snapshot() == before


class DrPullTarget(Document):
    name = StringField()


class DrPullNullified(Document):  # registered first, so applied first
    ref = ReferenceField(DrPullTarget, reverse_delete_rule=NULLIFY)


class DrPullSingle(Document):
    ref = ReferenceField(DrPullTarget, reverse_delete_rule=PULL)


async def test_queryset_delete_of_many_targets(async_alias):
    cls = REFERRERS[("list_ref", "pull")]
    targets = [await DrTarget(name=f"t{i}").async_save() for i in range(5)]
    holder = await cls(label="all", ref=targets).async_save()
    assert await DrTarget.objects(name__in=["t0", "t2", "t4"]).async_delete() == 3
    stored = await cls.objects.async_get(pk=holder.pk)
    assert [item.pk for item in stored.ref] == [targets[1].pk, targets[3].pk]


async def test_delete_without_rules_is_one_command(async_alias, command_log):
    plain = await DrPlain(name="x").async_save()
    command_log.clear()
    await plain.async_delete()
    assert command_log.names == ["delete"]


class DrPlain(Document):
    name = StringField()


# -- inheritance and abstract classes --------------------------------------------------


class DrInhTarget(Document):
    name = StringField()
    meta = {"allow_inheritance": True}


class DrInhTargetSub(DrInhTarget):
    extra = StringField()


class DrAbstractReferrer(Document):
    target = ReferenceField(DrInhTarget, reverse_delete_rule=CASCADE)
    meta = {"abstract": True}


class DrConcreteReferrer(DrAbstractReferrer):
    label = StringField()


class DrPost(Document):
    target = ReferenceField(DrInhTarget, reverse_delete_rule=NULLIFY)
    label = StringField()
    meta = {"allow_inheritance": True}


class DrImagePost(DrPost):
    url = StringField()


class DrAnimal(Document):
    name = StringField()
    meta = {"abstract": True}


class DrDog(DrAnimal):
    pass


class DrCat(DrAnimal):
    pass


class DrOwner(Document):
    """A reference to an abstract class is stored as a DBRef with ``cls``."""

    label = StringField()
    pet = ReferenceField(DrAnimal, reverse_delete_rule=CASCADE)
    pets = ListField(ReferenceField(DrAnimal, reverse_delete_rule=PULL))


def test_inherited_rules_as_mongoengine_resolves_them():
    rules = DrInhTarget._meta["delete_rules"]
    assert rules[(DrAbstractReferrer, "target")] == CASCADE
    assert rules[(DrConcreteReferrer, "target")] == CASCADE
    assert rules[(DrPost, "target")] == NULLIFY
    assert rules[(DrImagePost, "target")] == NULLIFY
    assert DrInhTargetSub._meta["delete_rules"] == rules
    assert DrDog._meta["delete_rules"][(DrOwner, "pet")] == CASCADE


@pytest.mark.parametrize("target_cls", [DrInhTarget, DrInhTargetSub])
async def test_rules_declared_on_abstract_and_inherited_classes(
    async_alias, target_cls
):
    t1 = await target_cls(name="t1").async_save()
    t2 = await target_cls(name="t2").async_save()
    await DrConcreteReferrer(label="gone", target=t1).async_save()
    await DrConcreteReferrer(label="kept", target=t2).async_save()
    post = await DrPost(label="post", target=t1).async_save()
    image = await DrImagePost(label="image", target=t1, url="u").async_save()
    other = await DrImagePost(label="other", target=t2, url="u").async_save()

    await t1.async_delete()

    assert await DrConcreteReferrer.objects.async_scalar("label") == ["kept"]
    assert "target" not in await raw(DrPost, post)
    assert "target" not in await raw(DrPost, image)
    assert (await raw(DrPost, other))["target"] == t2.pk
    assert await DrInhTarget.objects.async_scalar("name") == ["t2"]


async def test_references_to_an_abstract_class(async_alias):
    rex = await DrDog(name="Rex").async_save()
    tom = await DrCat(name="Tom").async_save()
    await DrOwner(label="rex's", pet=rex).async_save()
    both = await DrOwner(label="both", pet=tom, pets=[rex, tom]).async_save()
    stored = await raw(DrOwner, both)
    assert stored["pets"][0] == DBRef("dr_dog", rex.pk, cls="DrDog")

    await rex.async_delete()

    assert await DrOwner.objects.async_scalar("label") == ["both"]
    assert (await raw(DrOwner, both))["pets"] == [DBRef("dr_cat", tom.pk, cls="DrCat")]


# -- deep, self-referencing and cyclic graphs ------------------------------------------


class DrA(Document):
    name = StringField()


class DrB(Document):
    name = StringField()
    a = ReferenceField(DrA, reverse_delete_rule=CASCADE)


class DrC(Document):
    name = StringField()
    b = ReferenceField(DrB, reverse_delete_rule=CASCADE)


class DrCNote(Document):
    name = StringField()
    c = ReferenceField(DrC, reverse_delete_rule=NULLIFY)
    cs = ListField(ReferenceField(DrC, reverse_delete_rule=PULL))


class DrNode(Document):
    name = StringField()
    parent = ReferenceField("self", reverse_delete_rule=CASCADE)


class DrCycleX(Document):
    name = StringField()
    y = ReferenceField("DrCycleY")  # a rule needs the class: registered below


class DrCycleY(Document):
    name = StringField()
    x = ReferenceField(DrCycleX, reverse_delete_rule=CASCADE)


DrCycleY.register_delete_rule(DrCycleX, "y", CASCADE)


async def test_deep_cascade(async_alias):
    a1, a2 = await DrA(name="a1").async_save(), await DrA(name="a2").async_save()
    b1 = await DrB(name="b1", a=a1).async_save()
    b2 = await DrB(name="b2", a=a1).async_save()
    b3 = await DrB(name="b3", a=a2).async_save()
    c1 = await DrC(name="c1", b=b1).async_save()
    c2 = await DrC(name="c2", b=b2).async_save()
    c3 = await DrC(name="c3", b=b3).async_save()
    note = await DrCNote(name="n", c=c1, cs=[c1, c2, c3]).async_save()

    await a1.async_delete()

    assert await DrA.objects.async_scalar("name") == ["a2"]
    assert await DrB.objects.async_scalar("name") == ["b3"]
    assert await DrC.objects.async_scalar("name") == ["c3"]
    stored = await raw(DrCNote, note)
    assert "c" not in stored and stored["cs"] == [c3.pk]


async def test_self_reference_tree_and_self_loop(async_alias):
    root = await DrNode(name="root").async_save()
    child = await DrNode(name="child", parent=root).async_save()
    await DrNode(name="grandchild", parent=child).async_save()
    loop = await DrNode(name="loop").async_save()
    loop.parent = loop
    await loop.async_save()
    await DrNode(name="other").async_save()

    assert await DrNode.objects(name="root").async_delete() == 1  # as MongoEngine
    assert await DrNode.objects.async_scalar("name") == ["loop", "other"]
    await asyncio.wait_for(loop.async_delete(), 10)
    assert await DrNode.objects.async_scalar("name") == ["other"]


async def test_cycle_terminates(async_alias):
    x1 = await DrCycleX(name="x1").async_save()
    y1 = await DrCycleY(name="y1", x=x1).async_save()
    x1.y = y1
    await x1.async_save()
    y2 = await DrCycleY(name="y2").async_save()
    await DrCycleX(name="x2", y=y2).async_save()

    await asyncio.wait_for(y1.async_delete(), 10)

    assert await DrCycleX.objects.async_scalar("name") == ["x2"]
    assert await DrCycleY.objects.async_scalar("name") == ["y2"]


async def test_rules_apply_where_the_document_was_switched_to(async_alias, mongodb_uri):
    other_log = CommandLog()
    # Other settings: a client of its own.
    async with fresh_database("dr_other", mongodb_uri, event_listeners=[other_log]):
        await DrA(name="a1").async_save()
        there = await DrA(name="there").switch_db("dr_other").async_save()
        await DrB(name="b1", a=there).async_save()
        other_log.clear()

        await there.async_delete()

        # The document goes from the database it was switched to, in one
        # transaction on that document's client; the rules apply to the
        # referring classes' own collections, as in MongoEngine.
        assert other_log.names == ["delete", "commitTransaction"]
        assert await get_async_db("dr_other").dr_a.count_documents({}) == 0
        assert await DrA.objects.async_scalar("name") == ["a1"]
        assert await DrB.objects.async_scalar("name") == []


class DrSideRoot(Document):
    """On alias "dr_side", a client of its own; its deletes cascade there
    (DrSideNote) and to the default alias (DrSideBook)."""

    meta = {"db_alias": "dr_side"}


class DrSideNote(Document):
    root = ReferenceField(DrSideRoot, reverse_delete_rule=CASCADE)
    scan = FileField(db_alias="dr_side", collection_name="dr_side_files")
    meta = {"db_alias": "dr_side"}


class DrSideBook(Document):
    root = ReferenceField(DrSideRoot, reverse_delete_rule=CASCADE)
    scan = FileField(collection_name="dr_side_files")


async def test_a_failed_cascade_into_another_clients_transaction(
    async_alias, mongodb_uri
):
    """A ``transaction=False`` delete on one client, inside a transaction on
    another whose documents it cascades to: its write there (in that
    transaction) failing with a write conflict, which aborts it, the
    documents its earlier writes deleted for good get their post_delete and
    lose their files before the error is raised; those of the aborted
    transaction, there, neither. (Ours read them in that transaction, whose
    read failed, and sent no post_delete at all, ``[]``, nor deleted a file.)"""
    async with fresh_database("dr_side", mongodb_uri, appname="dr-side"):
        root = await DrSideRoot().async_save()
        note = DrSideNote(root=root)
        await note.scan.async_put(b"note", filename="note.txt")
        await note.async_save()
        book = DrSideBook(root=root)
        await book.scan.async_put(b"book", filename="book.txt")
        await book.async_save()
        seen = []

        def note_delete(sender: type, document: Document, **kwargs: object) -> None:
            seen.append((sender.__name__, document.pk))

        # Another transaction holds the book: the cascade's delete conflicts.
        other = get_async_connection().start_session()
        await other.start_transaction()
        await DrSideBook._get_collection().update_one(
            {"_id": book.pk}, {"$set": {"held": True}}, session=other
        )
        for cls in (DrSideNote, DrSideBook):
            signals.post_delete.connect(note_delete, sender=cls)
        try:
            with pytest.raises(OperationError, match="WriteConflict"):
                async with async_run_in_transaction():
                    await root.async_delete(transaction=False)
        finally:
            for cls in (DrSideNote, DrSideBook):
                signals.post_delete.disconnect(note_delete, sender=cls)
            await other.abort_transaction()
            await other.end_session()
        assert seen == [("DrSideNote", note.pk)]
        assert await DrSideNote.objects.async_count() == 0
        assert await DrSideBook.objects.async_scalar("pk") == [book.pk]
        assert await DrSideRoot.objects.async_scalar("pk") == [root.pk]
        assert await note.scan.async_get() is None
        assert await book.scan.async_read() == b"book"


class DrSplitRoot(Document):
    """On alias "dr_split", a client of its own; its deletes cascade there
    (DrSplitMemo, DrSplitNote) and to the default alias (DrSplitBook)."""

    meta = {"db_alias": "dr_split"}


class DrSplitMemo(Document):
    """Its files are on the default alias, the other client."""

    root = ReferenceField(DrSplitRoot, reverse_delete_rule=CASCADE)
    scan = FileField(collection_name="dr_split_files")
    meta = {"db_alias": "dr_split"}


class DrSplitNote(Document):
    root = ReferenceField(DrSplitRoot, reverse_delete_rule=CASCADE)
    scan = FileField(db_alias="dr_split", collection_name="dr_split_files")
    meta = {"db_alias": "dr_split"}


class DrSplitBook(Document):
    root = ReferenceField(DrSplitRoot, reverse_delete_rule=CASCADE)


async def test_a_file_in_an_aborted_transaction_leaves_the_others_deleted(
    async_alias, mongodb_uri
):
    """The failed cascade of the test above (a conflict aborting the other
    client's transaction), the memo's file stored on that client: its
    delete in the aborted transaction fails (the file is left, orphaned),
    and the note's file, on the delete's own client, is deleted all the
    same, both documents gone for good with their post_delete. (Ours
    stopped at the memo's file, which comes first: the note's was left.)"""
    async with fresh_database("dr_split", mongodb_uri, appname="dr-split"):
        root = await DrSplitRoot().async_save()
        memo = DrSplitMemo(root=root)
        await memo.scan.async_put(b"memo", filename="memo.txt")
        await memo.async_save()
        note = DrSplitNote(root=root)
        await note.scan.async_put(b"note", filename="note.txt")
        await note.async_save()
        book = await DrSplitBook(root=root).async_save()
        other = get_async_connection().start_session()
        await other.start_transaction()
        await DrSplitBook._get_collection().update_one(
            {"_id": book.pk}, {"$set": {"held": True}}, session=other
        )
        seen = []

        def note_delete(sender: type, document: Document, **kwargs: object) -> None:
            seen.append((sender.__name__, document.pk))

        classes = (DrSplitMemo, DrSplitNote, DrSplitBook)
        try:
            with receiving(signals.post_delete, note_delete, *classes):
                with pytest.raises(OperationError, match="WriteConflict"):
                    async with async_run_in_transaction():
                        await root.async_delete(transaction=False)
        finally:
            await other.abort_transaction()
            await other.end_session()
        assert sorted(seen) == sorted(
            [("DrSplitMemo", memo.pk), ("DrSplitNote", note.pk)]
        )
        assert await DrSplitBook.objects.async_scalar("pk") == [book.pk]
        assert await DrSplitNote.objects.async_count() == 0
        assert await note.scan.async_get() is None


# -- DENY found deep -------------------------------------------------------------------


class DrDenyRoot(Document):
    name = StringField()


class DrDenyMiddle(Document):
    name = StringField()
    root = ReferenceField(DrDenyRoot, reverse_delete_rule=CASCADE)


class DrDenyNullified(Document):
    name = StringField()
    root = ReferenceField(DrDenyRoot, reverse_delete_rule=NULLIFY)
    roots = ListField(ReferenceField(DrDenyRoot, reverse_delete_rule=PULL))


class DrDenyLeaf(Document):
    name = StringField()
    middle = ReferenceField(DrDenyMiddle, reverse_delete_rule=DENY)


async def test_deny_at_depth_two_leaves_everything_untouched(async_alias, command_log):
    root = await DrDenyRoot(name="root").async_save()
    middle = await DrDenyMiddle(name="m", root=root).async_save()
    await DrDenyMiddle(name="m2", root=root).async_save()
    await DrDenyNullified(name="n", root=root, roots=[root]).async_save()
    await DrDenyLeaf(name="leaf", middle=middle).async_save()
    before = await snapshot()

    command_log.clear()
    with pytest.raises(OperationError) as error:
        await root.async_delete()
    assert str(error.value) == (
        "Could not delete document (DrDenyLeaf.middle refers to it)"
    )
    writes = {"update", "delete", "insert", "findAndModify"}
    assert not writes & set(command_log.names)  # DENY is checked before any write
    assert await snapshot() == before

    # The same through the queryset.
    with pytest.raises(OperationError):
        await DrDenyRoot.objects.async_delete()
    assert await snapshot() == before


class DrDenyTree(Document):
    name = StringField()
    parent = ReferenceField("self", reverse_delete_rule=DENY)


async def test_deny_ignores_referrers_deleted_by_the_same_delete(async_alias):
    """DENY protects against dangling references: a referrer that the same delete
    removes leaves nothing dangling, so it does not block (MongoEngine's sync
    delete checks DENY before knowing what it deletes, and would refuse)."""
    root = await DrDenyTree(name="root").async_save()
    await DrDenyTree(name="child", parent=root).async_save()
    with pytest.raises(OperationError, match=r"DrDenyTree\.parent refers to it"):
        await root.async_delete()
    assert await DrDenyTree.objects.async_delete() == 2


# -- round trips -----------------------------------------------------------------------


class DrCountAuthor(Document):
    name = StringField()


class DrCountBook(Document):
    n = IntField()
    author = ReferenceField(DrCountAuthor, reverse_delete_rule=CASCADE)


class DrCountReview(Document):
    book = ReferenceField(DrCountBook, reverse_delete_rule=NULLIFY)


class DrCountShelf(Document):
    books = ListField(ReferenceField(DrCountBook, reverse_delete_rule=PULL))


class DrCountQuote(Document):
    book = LazyReferenceField(DrCountBook, reverse_delete_rule=DENY)


async def cascade_commands(command_log, n: int) -> dict[str, int]:
    author = await DrCountAuthor(name=f"a{n}").async_save()
    books = await DrCountBook.objects.async_insert(
        [DrCountBook(n=i, author=author) for i in range(n)], load_bulk=False
    )
    await DrCountReview.objects.async_insert(
        [DrCountReview(book=book) for book in books], load_bulk=False
    )
    await DrCountShelf(books=books[:50]).async_save()
    await DrCountQuote().async_save()  # warms the collection, refers to nothing

    command_log.clear()
    await author.async_delete()
    counts: dict[str, int] = {}
    for name in command_log.names:
        counts[name] = counts.get(name, 0) + 1

    assert await DrCountBook.objects.async_count() == 0
    assert await DrCountReview.objects(book__exists=True).async_count() == 0
    assert await DrCountReview.objects(book__exists=False).async_count() >= n
    assert await DrCountShelf.objects(books__size=0).async_count() >= 1
    return counts


async def test_cascade_round_trips_do_not_grow_with_documents(async_alias, command_log):
    small = await cascade_commands(command_log, 10)
    large = await cascade_commands(command_log, 1000)
    # root ids, cascaded ids (each in one reply, no getMore), DENY check (find
    # with limit 1); NULLIFY, PULL; the two deletes; one commit.
    expected = {"find": 3, "update": 2, "delete": 2, "commitTransaction": 1}
    assert small == expected
    assert large == expected


# -- atomicity -------------------------------------------------------------------------


class DrTxAuthor(Document):
    name = StringField()


class DrTxBook(Document):
    title = StringField()
    author = ReferenceField(DrTxAuthor, reverse_delete_rule=CASCADE)


class DrTxReview(Document):
    text = StringField()
    book = ReferenceField(DrTxBook, reverse_delete_rule=NULLIFY)


class DrTxShelf(Document):
    books = ListField(ReferenceField(DrTxBook, reverse_delete_rule=PULL))
    author = ReferenceField(DrTxAuthor, reverse_delete_rule=NULLIFY)


async def tx_library() -> tuple[DrTxAuthor, dict]:
    author = await DrTxAuthor(name="Lem").async_save()
    await DrTxAuthor(name="Other").async_save()
    books = [
        await DrTxBook(title=f"b{i}", author=author).async_save() for i in range(3)
    ]
    for book in books:
        await DrTxReview(text="good", book=book).async_save()
    await DrTxShelf(books=books, author=author).async_save()
    return author, await snapshot()


class Boom(Exception):
    pass


@pytest.mark.parametrize("signal_name", ["pre_delete", "post_delete"])
async def test_receiver_raising_mid_cascade_rolls_back(async_alias, signal_name):
    """post_delete of cascaded documents is sent after every write of the cascade,
    inside its transaction: raising there proves the writes are rolled back."""
    author, before = await tx_library()
    calls = []

    def receiver(sender, document, **kwargs):
        calls.append(document.title)
        if len(calls) == 2:
            raise Boom

    signal = getattr(signals, signal_name)
    signal.connect(receiver, sender=DrTxBook)
    try:
        with pytest.raises(Boom):
            await author.async_delete()
    finally:
        signal.disconnect(receiver, sender=DrTxBook)
    assert len(calls) == 2
    assert await snapshot() == before


@pytest.mark.parametrize("via", ["signals", "limit"])
async def test_document_by_document_queryset_delete_is_one_transaction(
    async_alias, command_log, via
):
    """With root receivers (or skip/limit) the queryset deletes document by
    document, as MongoEngine does; with rules, all of it in one transaction:
    the second document's ``pre_delete`` receiver raising (or, with a limit,
    its cascaded book's ``post_delete``) leaves the first undeleted."""
    for name in ("a", "b", "c"):
        author = await DrTxAuthor(name=name).async_save()
        await DrTxBook(title=f"{name}-book", author=author).async_save()
    before = await snapshot()
    deleted = []

    def receiver(sender, document, **kwargs):
        deleted.append(document.name)
        if len(deleted) == 2 and via == "signals":
            raise Boom

    def book_receiver(sender, document, **kwargs):
        if document.title == "b-book" and via == "limit":
            raise Boom

    signals.pre_delete.connect(receiver, sender=DrTxAuthor)
    signals.post_delete.connect(book_receiver, sender=DrTxBook)
    queryset = DrTxAuthor.objects.order_by("name")
    if via == "limit":
        queryset = queryset.limit(2)
    try:
        with pytest.raises(Boom):
            await queryset.async_delete()
        assert await snapshot() == before
        command_log.clear()
        deleted.clear()
        with pytest.raises(Boom):
            await queryset.async_delete(transaction=False)
        assert not any("autocommit" in e.command for e in command_log.events)
    finally:
        signals.pre_delete.disconnect(receiver, sender=DrTxAuthor)
        signals.post_delete.disconnect(book_receiver, sender=DrTxBook)
    # Without a transaction the deletes before the failure stayed done (the
    # cascaded book's post_delete raising found its author deleted too).
    left = ["b", "c"] if via == "signals" else ["c"]
    assert await DrTxAuthor.objects.async_scalar("name") == left
    assert await queryset.async_delete() == len(left)


async def test_document_by_document_post_delete_follows_the_commit(async_alias):
    """In its own transaction, a document-by-document delete sends each
    document's ``post_delete`` once it committed: a receiver sees every
    document gone for other readers too, and one raising rolls nothing back;
    the others are sent all the same, then its error is raised."""
    for name in ("a", "b", "c"):
        author = await DrTxAuthor(name=name).async_save()
        await DrTxBook(title=f"{name}-book", author=author).async_save()
    seen = []

    async def receiver(sender, document, **kwargs):
        seen.append(
            (document.name, await get_async_db().dr_tx_author.count_documents({}))
        )
        if document.name == "b":
            raise Boom(document.name)

    signals.post_delete.connect(receiver, sender=DrTxAuthor)
    try:
        with pytest.raises(Boom, match=r"^b$"):
            await DrTxAuthor.objects.order_by("name").async_delete()
    finally:
        signals.post_delete.disconnect(receiver, sender=DrTxAuthor)
    assert seen == [("a", 0), ("b", 0), ("c", 0)]
    assert await DrTxBook.objects.async_count() == 0


class DrFileAuthor(Document):
    name = StringField()
    photo = FileField(collection_name="dr_post_files")


class DrFileBook(Document):
    title = StringField()
    author = ReferenceField(DrFileAuthor, reverse_delete_rule=CASCADE)
    scan = FileField(collection_name="dr_post_files")


@pytest.mark.parametrize("how", ["document", "queryset"])
async def test_cascaded_post_delete_raising_still_deletes_the_files(async_alias, how):
    """transaction=False: a cascaded document's post_delete receiver raising
    finds the whole cascade written; the files of the deleted documents (its
    own, the root's) are deleted all the same, then its error is raised (they
    stayed in GridFS, referenced by no document)."""
    author = DrFileAuthor(name="Lem")
    await author.photo.async_put(b"photo")
    await author.async_save()
    book = DrFileBook(title="Solaris", author=author)
    await book.scan.async_put(b"scan")
    await book.async_save()
    sent = []

    def boom(sender, document, **kwargs):
        raise Boom(f"post_delete of {document.title}")

    def root_receiver(sender, document, **kwargs):
        sent.append(document.name)

    signals.post_delete.connect(boom, sender=DrFileBook)
    if how == "document":  # (a root receiver: the queryset goes one by one)
        signals.post_delete.connect(root_receiver, sender=DrFileAuthor)
    try:
        with pytest.raises(Boom, match=r"^post_delete of Solaris$"):
            if how == "document":
                await author.async_delete(transaction=False)
            else:
                await DrFileAuthor.objects(name="Lem").async_delete(transaction=False)
    finally:
        signals.post_delete.disconnect(boom, sender=DrFileBook)
        signals.post_delete.disconnect(root_receiver, sender=DrFileAuthor)
    db = get_async_db()
    assert await DrFileAuthor.objects.async_count() == 0
    assert await DrFileBook.objects.async_count() == 0
    assert await db["dr_post_files.files"].count_documents({}) == 0
    assert await db["dr_post_files.chunks"].count_documents({}) == 0
    # The root is gone: its receivers learn of it, as after a file's failure.
    assert sent == (["Lem"] if how == "document" else [])


@pytest.mark.parametrize("how", ["document", "queryset"])
async def test_cancelled_task_mid_cascade_rolls_back(async_alias, how):
    author, before = await tx_library()
    reached, never = asyncio.Event(), asyncio.Event()
    states = []

    async def receiver(sender, document, **kwargs):
        # Runs after the deletes and updates of the cascade, inside it.
        states.append(await DrTxBook.objects.async_count())
        reached.set()
        await never.wait()

    signals.post_delete.connect(receiver, sender=DrTxBook)
    try:
        if how == "document":
            task = asyncio.create_task(author.async_delete())
        else:
            task = asyncio.create_task(DrTxAuthor.objects(name="Lem").async_delete())
        await asyncio.wait_for(reached.wait(), 10)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    finally:
        signals.post_delete.disconnect(receiver, sender=DrTxBook)
    assert states == [0]  # inside the transaction the books were gone
    assert await snapshot() == before


async def test_server_error_mid_cascade_rolls_back(async_alias, command_log):
    """A write error after other writes of the cascade undoes them."""
    author, _ = await tx_library()
    book = await DrTxBook.objects.async_first()
    # A shelf whose `books` is a single id, not an array: the PULL matches it
    # and the server refuses it, after the NULLIFYs have been applied.
    await get_async_db().dr_tx_shelf.insert_one({"books": book.pk})
    before = await snapshot()
    command_log.clear()
    with pytest.raises(OperationError):
        await author.async_delete()
    assert command_log.names.count("update") >= 2  # some writes went through
    assert command_log.names[-1] == "abortTransaction"
    assert await snapshot() == before


async def test_delete_joins_the_callers_transaction(async_alias, command_log):
    author, before = await tx_library()
    command_log.clear()
    with pytest.raises(Boom):
        async with async_run_in_transaction() as session:
            session_id = session.session_id["id"]
            await author.async_delete()
            assert await DrTxBook.objects.async_count() == 0
            raise Boom
    names, events = list(command_log.names), list(command_log.events)
    assert await snapshot() == before
    assert {event.command["lsid"]["id"] for event in events} == {session_id}
    assert "commitTransaction" not in names
    assert names[-1] == "abortTransaction"

    async with async_run_in_transaction():
        await author.async_delete()
    assert await DrTxBook.objects.async_count() == 0
    assert await DrTxAuthor.objects.async_scalar("name") == ["Other"]


@pytest.mark.parametrize("how", ["document", "queryset"])
async def test_transaction_opt_out(async_alias, command_log, how):
    author, _ = await tx_library()
    command_log.clear()
    if how == "document":
        await author.async_delete(transaction=False)
    else:
        await DrTxAuthor.objects(name="Lem").async_delete(transaction=False)
    assert not any("autocommit" in event.command for event in command_log.events)
    assert "commitTransaction" not in command_log.names
    assert await DrTxBook.objects.async_count() == 0
    assert await DrTxReview.objects(book__exists=True).async_count() == 0


async def test_cascade_runs_in_one_transaction(async_alias, command_log):
    author, _ = await tx_library()
    command_log.clear()
    await author.async_delete()
    writes = [
        event
        for event in command_log.events
        if event.command_name in ("find", "update", "delete")
    ]
    assert all(event.command.get("autocommit") is False for event in writes)
    assert len({(e.command["lsid"]["id"], e.command["txnNumber"]) for e in writes}) == 1
    assert command_log.names[-1] == "commitTransaction"


# -- signals ---------------------------------------------------------------------------


async def test_queryset_delete_sends_each_documents_signals(async_alias):
    for name in ("a", "b", "c"):
        author = await DrTxAuthor(name=name).async_save()
        await DrTxBook(title=f"{name}-book", author=author).async_save()
    seen = []

    def pre(sender, document, **kwargs):
        seen.append(("pre", sender.__name__, document.name))

    async def post(sender, document, **kwargs):
        await asyncio.sleep(0)
        seen.append(("post", sender.__name__, document.name))

    def book_pre(sender, document, **kwargs):
        seen.append(("pre", sender.__name__, document.title))

    signals.pre_delete.connect(pre, sender=DrTxAuthor)
    signals.post_delete.connect(post, sender=DrTxAuthor)
    signals.pre_delete.connect(book_pre, sender=DrTxBook)
    try:
        assert await DrTxAuthor.objects(name__in=["a", "b"]).async_delete() == 2
    finally:
        signals.pre_delete.disconnect(pre, sender=DrTxAuthor)
        signals.post_delete.disconnect(post, sender=DrTxAuthor)
        signals.pre_delete.disconnect(book_pre, sender=DrTxBook)
    assert sorted(seen) == sorted(
        [
            ("pre", "DrTxAuthor", "a"),
            ("post", "DrTxAuthor", "a"),
            ("pre", "DrTxBook", "a-book"),
            ("pre", "DrTxAuthor", "b"),
            ("post", "DrTxAuthor", "b"),
            ("pre", "DrTxBook", "b-book"),
        ]
    )
    assert await DrTxBook.objects.async_scalar("title") == ["c-book"]


async def test_cascaded_documents_signals_once_each_with_their_own_class(
    async_alias,
):
    """Receivers on the classes of cascaded documents fire once per document,
    with the document's own class as sender (as ``document.delete()`` sends)."""
    root = await DrNode(name="root").async_save()
    await DrNode(name="child", parent=root).async_save()
    t1 = await DrInhTarget(name="t1").async_save()
    await DrConcreteReferrer(label="c", target=t1).async_save()
    seen = []

    def node(sender, document, **kwargs):
        seen.append((sender.__name__, document.name))

    def referrer(sender, document, **kwargs):
        seen.append((sender.__name__, document.label))

    signals.pre_delete.connect(node, sender=DrNode)
    signals.pre_delete.connect(referrer, sender=DrConcreteReferrer)
    try:
        await root.async_delete()
        await t1.async_delete()
    finally:
        signals.pre_delete.disconnect(node, sender=DrNode)
        signals.pre_delete.disconnect(referrer, sender=DrConcreteReferrer)
    assert seen == [
        ("DrNode", "root"),
        ("DrNode", "child"),
        ("DrConcreteReferrer", "c"),
    ]


class DrSigParent(Document):
    name = StringField()
    target = ReferenceField(DrInhTarget, reverse_delete_rule=CASCADE)
    meta = {"allow_inheritance": True}


class DrSigChild(DrSigParent):
    pass


async def test_cascaded_subclass_documents_signal_once(async_alias):
    t1 = await DrInhTarget(name="t1").async_save()
    await DrSigParent(name="parent", target=t1).async_save()
    await DrSigChild(name="child", target=t1).async_save()
    seen = []

    def receiver(sender, document, **kwargs):
        seen.append((sender.__name__, document.name))

    with receiving(signals.pre_delete, receiver, DrSigParent, DrSigChild):
        await t1.async_delete()
    assert sorted(seen) == [("DrSigChild", "child"), ("DrSigParent", "parent")]
    assert await DrSigParent.objects.async_count() == 0


def test_do_nothing_is_not_a_rule():
    class DrIgnored(Document):
        ref = ReferenceField(DrPlain, reverse_delete_rule=DO_NOTHING)

    assert not DrPlain._meta.get("delete_rules")


async def test_document_by_document_post_delete_on_an_explicit_session(async_alias):
    """Given an explicit session in no transaction, the delete's own
    transaction starts on it: each document's ``post_delete`` is still sent
    once it committed (it was sent inside, the document found outside)."""
    for name in ("a", "b"):
        author = await DrTxAuthor(name=name).async_save()
        await DrTxBook(title=f"{name}-book", author=author).async_save()
    seen = []

    async def receiver(sender, document, **kwargs):
        seen.append(
            (document.name, await get_async_db().dr_tx_author.count_documents({}))
        )

    signals.post_delete.connect(receiver, sender=DrTxAuthor)
    try:
        async with get_async_connection().start_session() as session:
            queryset = DrTxAuthor.objects.order_by("name")
            assert await queryset.async_delete(session=session) == 2
    finally:
        signals.post_delete.disconnect(receiver, sender=DrTxAuthor)
    assert seen == [("a", 0), ("b", 0)]
    assert await DrTxBook.objects.async_count() == 0
