"""A delete with delete rules sends no command that cannot change anything:
a delete matching nothing reads once (and, in a transaction of its own, the
read's transaction is committed), and a rule whose documents were not found
sends no query for them (an ``$in`` of no values matches nothing). The
return values and signals are MongoEngine's."""

from __future__ import annotations

import contextlib
import uuid
from typing import Any

import pytest

import mongoengine_async.delete_rules
from conftest import receiving
from mongoengine_async import (
    CASCADE,
    DENY,
    NULLIFY,
    PULL,
    Document,
    FileField,
    IntField,
    ListField,
    ReferenceField,
    StringField,
    UUIDField,
    async_run_in_transaction,
    get_async_db,
    queryset_manager,
    signals,
)
from mongoengine_async.testing import CommandLog


class DrtAuthor(Document):
    """Every kind of rule, and a file field: a queryset delete lists files."""

    name = StringField()
    photo = FileField()


class DrtBook(Document):
    """Needs its ids (its own rules): found by id."""

    title = StringField()
    author = ReferenceField(DrtAuthor, reverse_delete_rule=CASCADE)


class DrtChapter(Document):
    """A leaf: deleted by its rule's filter."""

    title = StringField()
    book = ReferenceField(DrtBook, reverse_delete_rule=CASCADE)


class DrtCover(Document):
    """A leaf with a file field: its rule's filter first reads its files."""

    book = ReferenceField(DrtBook, reverse_delete_rule=CASCADE)
    image = FileField()


class DrtReview(Document):
    text = StringField()
    book = ReferenceField(DrtBook, reverse_delete_rule=NULLIFY)


class DrtLoan(Document):
    book = ReferenceField(DrtBook, reverse_delete_rule=DENY)


class DrtNote(Document):
    text = StringField()
    author = ReferenceField(DrtAuthor, reverse_delete_rule=NULLIFY)


class DrtShelf(Document):
    authors = ListField(ReferenceField(DrtAuthor, reverse_delete_rule=PULL))


class DrtGuard(Document):
    author = ReferenceField(DrtAuthor, reverse_delete_rule=DENY)


class DrtEditor(Document):
    """Rules but no file fields: a queryset delete lists nothing first."""

    name = StringField()


class DrtManuscript(Document):
    title = StringField()
    editor = ReferenceField(DrtEditor, reverse_delete_rule=CASCADE)


class DrtMemo(Document):
    editor = ReferenceField(DrtEditor, reverse_delete_rule=NULLIFY)


class DrtDesk(Document):
    editor = ReferenceField(DrtEditor, reverse_delete_rule=DENY)


class DrtPoster(Document):
    """File fields and no rules."""

    title = StringField()
    image = FileField()


class DrtPublisher(Document):
    """Rules but no DENY, no receivers: its document's delete may go first."""

    name = StringField()


class DrtImprint(Document):
    publisher = ReferenceField(DrtPublisher, reverse_delete_rule=CASCADE)


class DrtCatalog(Document):
    publisher = ReferenceField(DrtPublisher, reverse_delete_rule=NULLIFY)


class DrtLabel(Document):
    name = StringField()


class DrtAlbum(Document):
    """Needs its ids (its own rule), and holds files."""

    title = StringField()
    label = ReferenceField(DrtLabel, reverse_delete_rule=CASCADE)
    sleeve = FileField()


class DrtTrack(Document):
    album = ReferenceField(DrtAlbum, reverse_delete_rule=NULLIFY)


def _sent(command_log: CommandLog) -> list[tuple[str, str]]:
    """The commands sent: their name and collection (a transaction's
    commit: its database, admin)."""
    sent = []
    for event in command_log.events:
        target = event.command[event.command_name]
        where = target if isinstance(target, str) else event.database_name
        sent.append((event.command_name, where))
    return sent


async def _library() -> DrtAuthor:
    """An author with a book, a chapter, a review, a note and a shelf."""
    author = await DrtAuthor(name="Ann").async_save()
    book = await DrtBook(title="First", author=author).async_save()
    await DrtChapter(title="One", book=book).async_save()
    await DrtReview(text="Good", book=book).async_save()
    await DrtNote(text="On Ann", author=author).async_save()
    await DrtShelf(authors=[author]).async_save()
    return author


async def _counts() -> dict[str, int]:
    """How many documents each collection holds, read back raw."""
    db = get_async_db()
    classes = (DrtAuthor, DrtBook, DrtChapter, DrtReview, DrtNote, DrtShelf)
    return {
        cls.__name__: await db[cls._get_collection_name()].count_documents({})
        for cls in classes
    }


async def test_a_queryset_delete_matching_nothing_only_lists_its_files(
    async_alias: str, command_log: CommandLog
) -> None:
    """The read listing the files (in the delete's transaction: the read of
    the ids it deletes) finds no document: no rule's query, no delete (their
    ``$in`` would name no id); outside a transaction, no commit."""
    await _library()
    before = await _counts()

    command_log.clear()
    assert await DrtAuthor.objects(name="none").async_delete() == 0
    assert _sent(command_log) == [
        ("find", "drt_author"),
        ("commitTransaction", "admin"),
    ]

    command_log.clear()
    assert await DrtAuthor.objects(name="none").async_delete(transaction=False) == 0
    assert _sent(command_log) == [("find", "drt_author")]
    assert "txnNumber" not in command_log.events[0].command

    command_log.clear()
    unacknowledged = {"w": 0}  # MongoEngine returns None: the count is unknown
    assert (
        await DrtAuthor.objects(name="none").async_delete(write_concern=unacknowledged)
        is None
    )
    assert _sent(command_log) == [("find", "drt_author")]
    assert await _counts() == before


async def test_a_queryset_delete_reads_its_matches_and_their_files_once(
    async_alias: str, command_log: CommandLog
) -> None:
    """With rules, file fields and a transaction (its own or the caller's),
    the read of the ids the plan deletes lists their files too: one read of
    the matches, not a listing before the transaction and the plan's read in
    it. The files of the deleted go, another author's stay."""
    query = DrtAuthor.objects(name="Ann")._query
    for joined in (False, True):
        author = await _library()
        await author.photo.async_put(b"Ann's")
        await author.async_save()
        other = DrtAuthor(name="Bob")
        await other.photo.async_put(b"Bob's")
        await other.async_save()

        command_log.clear()
        if joined:
            async with async_run_in_transaction():
                assert await DrtAuthor.objects(name="Ann").async_delete() == 1
        else:
            assert await DrtAuthor.objects(name="Ann").async_delete() == 1

        rules = [
            ("find", "drt_author"),
            ("find", "drt_book"),
            ("find", "drt_guard"),
            ("find", "drt_loan"),
            ("find", "drt_cover"),
            ("delete", "drt_chapter"),
            ("update", "drt_note"),
            ("update", "drt_shelf"),
            ("update", "drt_review"),
            ("delete", "drt_book"),
            ("delete", "drt_author"),
        ]
        files = [("delete", "fs.files"), ("delete", "fs.chunks")]
        commit = [("commitTransaction", "admin")]
        # (The files in the caller's transaction; else once it committed.)
        after = [*files, *commit] if joined else [*commit, *files]
        assert _sent(command_log) == [*rules, *after]
        assert command_log.events[0].command["filter"] == query
        assert "txnNumber" in command_log.events[0].command
        assert await DrtAuthor.objects.async_scalar("name") == ["Bob"]
        chunks = await get_async_db()["fs.chunks"].find().to_list()
        assert [each["data"] for each in chunks] == [b"Bob's"]
        await DrtAuthor.objects.async_delete()


async def test_without_rules_too_a_delete_listing_nothing_sends_no_delete(
    async_alias: str, command_log: CommandLog
) -> None:
    """Its delete would be restricted to the ids listed: none."""
    await DrtPoster(title="kept").async_save()

    command_log.clear()
    assert await DrtPoster.objects(title="none").async_delete() == 0

    assert _sent(command_log) == [("find", "drt_poster")]
    assert await DrtPoster.objects.async_scalar("title") == ["kept"]


async def test_a_queryset_delete_matching_nothing_without_files(
    async_alias: str, command_log: CommandLog
) -> None:
    """A class without file fields reads the ids to delete in the delete's
    transaction: finding none, it only commits that read."""
    editor = await DrtEditor(name="Ed").async_save()
    await DrtManuscript(title="Draft", editor=editor).async_save()
    await DrtMemo(editor=editor).async_save()

    command_log.clear()
    assert await DrtEditor.objects(name="none").async_delete() == 0
    assert _sent(command_log) == [
        ("find", "drt_editor"),
        ("commitTransaction", "admin"),
    ]

    command_log.clear()
    assert await DrtEditor.objects(name="none").async_delete(transaction=False) == 0
    assert _sent(command_log) == [("find", "drt_editor")]

    memo = await get_async_db()["drt_memo"].find_one()
    assert memo is not None and memo["editor"] == editor.pk
    assert await DrtManuscript.objects.async_scalar("title") == ["Draft"]


async def test_a_document_deleted_already_reads_itself_once(
    async_alias: str, command_log: CommandLog
) -> None:
    """Its DENY rules make it read its id first: found gone, nothing else is
    sent; its delete signals are sent all the same, as MongoEngine does."""
    author = await _library()
    await get_async_db()["drt_author"].delete_one({"_id": author.pk})
    before = await _counts()
    seen: list[tuple[str, Any]] = []

    async def pre(sender: type, document: Any, **kwargs: Any) -> None:
        seen.append(("pre_delete", document))

    async def post(sender: type, document: Any, **kwargs: Any) -> None:
        seen.append(("post_delete", document))

    signals.pre_delete.connect(pre, sender=DrtAuthor)
    signals.post_delete.connect(post, sender=DrtAuthor)
    try:
        command_log.clear()
        assert await author.async_delete() is None
    finally:
        signals.pre_delete.disconnect(pre, sender=DrtAuthor)
        signals.post_delete.disconnect(post, sender=DrtAuthor)

    assert _sent(command_log) == [
        ("find", "drt_author"),
        ("commitTransaction", "admin"),
    ]
    assert seen == [("pre_delete", author), ("post_delete", author)]
    assert await _counts() == before


async def test_a_cascade_finding_nothing_sends_nothing_for_its_rules(
    async_alias: str, command_log: CommandLog
) -> None:
    """An author without books: the books' DENY, NULLIFY and CASCADE rules
    have no book to look for (each was a query of ``$in: []``)."""
    author = await DrtAuthor(name="Bob").async_save()
    other = await _library()

    command_log.clear()
    await author.async_delete()

    assert _sent(command_log) == [
        ("find", "drt_author"),
        ("find", "drt_book"),
        ("find", "drt_guard"),
        ("update", "drt_note"),
        ("update", "drt_shelf"),
        ("delete", "drt_author"),
        ("commitTransaction", "admin"),
    ]
    assert await DrtAuthor.objects.async_scalar("name") == [other.name]
    assert await _counts() == {
        "DrtAuthor": 1,
        "DrtBook": 1,
        "DrtChapter": 1,
        "DrtReview": 1,
        "DrtNote": 1,
        "DrtShelf": 1,
    }


async def test_a_leaf_whose_files_read_found_none_is_not_deleted_by_filter(
    async_alias: str, command_log: CommandLog
) -> None:
    """A book without covers: the read of the covers' files finds none, so
    the covers' delete, restricted to those read, is not sent."""
    author = await _library()

    command_log.clear()
    await author.async_delete()

    assert _sent(command_log) == [
        ("find", "drt_author"),
        ("find", "drt_book"),
        ("find", "drt_guard"),
        ("find", "drt_loan"),
        ("find", "drt_cover"),
        ("delete", "drt_chapter"),
        ("update", "drt_note"),
        ("update", "drt_shelf"),
        ("update", "drt_review"),
        ("delete", "drt_book"),
        ("delete", "drt_author"),
        ("commitTransaction", "admin"),
    ]
    assert await _counts() == {
        "DrtAuthor": 0,
        "DrtBook": 0,
        "DrtChapter": 0,
        "DrtReview": 1,
        "DrtNote": 1,
        "DrtShelf": 1,
    }


async def test_a_limited_delete_deletes_each_document_first_in_its_transaction(
    async_alias: str, command_log: CommandLog
) -> None:
    """With ``limit``/``skip`` each match is deleted through its own delete,
    in the queryset's transaction, which any error aborts: each document
    goes first, as in a transaction of its own, without reading its id
    again (the queryset read it)."""
    publishers = [await DrtPublisher(name=name).async_save() for name in "abc"]
    for publisher in publishers:
        await DrtImprint(publisher=publisher).async_save()
        await DrtCatalog(publisher=publisher).async_save()

    command_log.clear()
    assert await DrtPublisher.objects.order_by("name").skip(1).async_delete() == 2

    each = [
        ("delete", "drt_publisher"),
        ("delete", "drt_imprint"),
        ("update", "drt_catalog"),
    ]
    assert _sent(command_log) == [
        ("find", "drt_publisher"),
        *each,
        *each,
        ("commitTransaction", "admin"),
    ]
    first, second = publishers[1:]
    deletes = [e.command["deletes"][0]["q"] for e in command_log.events[1:7:3]]
    assert deletes == [{"_id": first.pk}, {"_id": second.pk}]
    assert await DrtPublisher.objects.async_scalar("name") == ["a"]
    imprints = await get_async_db()["drt_imprint"].find().to_list()
    assert [raw["publisher"] for raw in imprints] == [publishers[0].pk]
    catalogs = await get_async_db()["drt_catalog"].find().sort("_id").to_list()
    assert [raw.get("publisher") for raw in catalogs] == [publishers[0].pk, None, None]


async def test_cascaded_documents_found_by_id_have_their_files_read_with_them(
    async_alias: str, command_log: CommandLog
) -> None:
    """Albums a label's delete cascades to are found by id (their tracks'
    rule needs them): that read lists their files too, one ``find`` of the
    albums, not a second one for their files. Their files go once the
    transaction committed (or once they are gone, without one); another
    label's album keeps its own."""
    for transaction in (True, False):
        label, other = DrtLabel(name="doomed"), DrtLabel(name="kept")
        await label.async_save()
        await other.async_save()
        for title, owner in (("one", label), ("two", label), ("three", other)):
            album = DrtAlbum(title=title, label=owner)
            await album.sleeve.async_put(title.encode())
            await album.async_save()
            await DrtTrack(album=album).async_save()

        command_log.clear()
        await label.async_delete(transaction=transaction)

        first = [("delete", "drt_label")] if transaction else [("find", "drt_label")]
        writes = [("update", "drt_track"), ("delete", "drt_album")]
        files = [("delete", "fs.files"), ("delete", "fs.chunks")] * 2
        assert _sent(command_log) == [
            *first,
            ("find", "drt_album"),
            *writes,
            *([("commitTransaction", "admin")] if transaction else []),
            *([] if transaction else [("delete", "drt_label")]),
            *files,
        ]
        assert await DrtAlbum.objects.async_scalar("title") == ["three"]
        tracks = await get_async_db()["drt_track"].find().to_list()
        assert sorted(bool(raw.get("album")) for raw in tracks) == [False, False, True]
        chunks = await get_async_db()["fs.chunks"].find().to_list()
        assert [each["data"] for each in chunks] == [b"three"]
        for cls in (DrtLabel, DrtAlbum, DrtTrack):
            await get_async_db()[cls._get_collection_name()].delete_many({})
        await get_async_db()["fs.files"].delete_many({})
        await get_async_db()["fs.chunks"].delete_many({})


class DrtStudio(Document):
    name = StringField()


class DrtTape(Document):
    """Cascaded, with delete receivers (in the tests) and a file field."""

    title = StringField()
    studio = ReferenceField(DrtStudio, reverse_delete_rule=CASCADE)
    reel = FileField()


async def _studio_with_tapes(name: str, titles: str) -> DrtStudio:
    """A studio and a tape per letter of ``titles``, each holding a file."""
    studio = await DrtStudio(name=name).async_save()
    for title in titles:
        tape = DrtTape(title=title, studio=studio)
        await tape.reel.async_put(title.encode())
        await tape.async_save()
    return studio


async def test_cascaded_documents_sent_signals_are_read_once(
    async_alias: str, command_log: CommandLog
) -> None:
    """Tapes a studio's delete cascades to, whose class has delete receivers:
    one ``find`` of them gives their ids, the documents sent to the receivers
    and their files (not a read of their ids, one of the documents and one of
    their files), in a transaction and outside one. Each receiver gets its
    document, in the order found; the files of the deleted go, another
    studio's tape keeps its own."""
    seen: list[tuple[str, str]] = []

    async def pre(sender: type, document: Any, **kwargs: Any) -> None:
        seen.append(("pre_delete", document.title))

    async def post(sender: type, document: Any, **kwargs: Any) -> None:
        seen.append(("post_delete", document.title))

    signals.pre_delete.connect(pre, sender=DrtTape)
    signals.post_delete.connect(post, sender=DrtTape)
    try:
        for transaction in (True, False):
            studio = await _studio_with_tapes("doomed", "ab")
            await _studio_with_tapes("kept", "c")
            seen.clear()

            command_log.clear()
            await studio.async_delete(transaction=transaction)

            writes = [("delete", "drt_tape"), ("delete", "drt_studio")]
            files = [("delete", "fs.files"), ("delete", "fs.chunks")] * 2
            commit = [("commitTransaction", "admin")] if transaction else []
            assert _sent(command_log) == [
                ("find", "drt_studio"),
                ("find", "drt_tape"),
                *writes,
                *commit,
                *files,
            ]
            assert seen == [
                ("pre_delete", "a"),
                ("pre_delete", "b"),
                ("post_delete", "a"),
                ("post_delete", "b"),
            ]
            assert await DrtTape.objects.async_scalar("title") == ["c"]
            chunks = await get_async_db()["fs.chunks"].find().to_list()
            assert [each["data"] for each in chunks] == [b"c"]
            for cls in (DrtStudio, DrtTape):
                await get_async_db()[cls._get_collection_name()].delete_many({})
            await get_async_db()["fs.files"].delete_many({})
            await get_async_db()["fs.chunks"].delete_many({})
    finally:
        signals.pre_delete.disconnect(pre, sender=DrtTape)
        signals.post_delete.disconnect(post, sender=DrtTape)


async def test_a_pre_delete_receiver_replacing_a_cascaded_file_has_it_deleted(
    async_alias: str, command_log: CommandLog
) -> None:
    """A cascaded document's files are those its document holds once its
    ``pre_delete`` receivers ran (read with it, not before them): a receiver
    replacing its file has the new one deleted with it, none left behind
    (outside a transaction: GridFS writes refuse one)."""

    async def replace_reel(sender: type, document: Any, **kwargs: Any) -> None:
        await document.reel.async_replace(b"new " + document.title.encode())
        await document.async_save()

    studio = await _studio_with_tapes("doomed", "a")
    await _studio_with_tapes("kept", "c")
    signals.pre_delete.connect(replace_reel, sender=DrtTape)
    try:
        await studio.async_delete(transaction=False)
    finally:
        signals.pre_delete.disconnect(replace_reel, sender=DrtTape)

    assert await DrtTape.objects.async_scalar("title") == ["c"]
    chunks = await get_async_db()["fs.chunks"].find().to_list()
    assert [each["data"] for each in chunks] == [b"c"]
    assert await get_async_db()["fs.files"].count_documents({}) == 1


class DrtShop(Document):
    name = StringField()


class DrtCassette(Document):
    """Cascaded, with delete receivers (in the tests), a file field and a key
    stored as a string that loads as a UUID."""

    id = UUIDField(binary=False, primary_key=True, default=uuid.uuid4)
    title = StringField()
    shop = ReferenceField(DrtShop, reverse_delete_rule=CASCADE)
    reel = FileField()


async def test_cascaded_documents_sent_signals_keyed_otherwise_are_read_once(
    async_alias: str, command_log: CommandLog
) -> None:
    """Cascaded documents sent delete signals whose key loads as another value
    than the one stored (a ``UUIDField(binary=False)``: a string loads as a
    UUID) have their files from their documents too: no read of their files
    after the receivers, each file deleted once."""

    async def pre(sender: type, document: Any, **kwargs: Any) -> None:
        pass

    shop = await DrtShop(name="doomed").async_save()
    for title in "ab":
        cassette = DrtCassette(title=title, shop=shop)
        await cassette.reel.async_put(title.encode())
        await cassette.async_save()
    signals.pre_delete.connect(pre, sender=DrtCassette)
    try:
        command_log.clear()
        await shop.async_delete(transaction=False)
    finally:
        signals.pre_delete.disconnect(pre, sender=DrtCassette)

    assert _sent(command_log) == [
        ("find", "drt_shop"),
        ("find", "drt_cassette"),
        ("delete", "drt_cassette"),
        ("delete", "drt_shop"),
        *[("delete", "fs.files"), ("delete", "fs.chunks")] * 2,
    ]
    assert await DrtCassette.objects.async_count() == 0
    assert await get_async_db()["fs.chunks"].count_documents({}) == 0
    for cls in (DrtShop, DrtCassette):
        await get_async_db()[cls._get_collection_name()].delete_many({})


class DrtStage(Document):
    name = StringField()


class DrtTake(Document):
    """Cascaded, with a default ordering and delete receivers (in the test)."""

    number = IntField()
    stage = ReferenceField(DrtStage, reverse_delete_rule=CASCADE)
    meta = {"ordering": ["-number"]}


async def test_cascaded_documents_are_sent_signals_in_their_default_ordering(
    async_alias: str,
) -> None:
    """The cascaded documents of a class with a default ordering are sent their
    delete signals in that order, as MongoEngine's delete iterates their
    queryset (``-number``: 3, 2, 1; stored 1, 3, 2)."""
    seen: list[tuple[str, int]] = []

    async def pre(sender: type, document: Any, **kwargs: Any) -> None:
        seen.append(("pre_delete", document.number))

    async def post(sender: type, document: Any, **kwargs: Any) -> None:
        seen.append(("post_delete", document.number))

    stage = await DrtStage(name="doomed").async_save()
    for number in (1, 3, 2):
        await DrtTake(number=number, stage=stage).async_save()
    with (
        receiving(signals.pre_delete, pre, DrtTake),
        receiving(signals.post_delete, post, DrtTake),
    ):
        await stage.async_delete()

    assert seen == [
        *(("pre_delete", number) for number in (3, 2, 1)),
        *(("post_delete", number) for number in (3, 2, 1)),
    ]
    assert await DrtTake.objects.async_count() == 0
    await get_async_db()[DrtStage._get_collection_name()].delete_many({})


CASE_INSENSITIVE = {"locale": "en", "strength": 2}


def _collated(document: type, queryset: Any) -> Any:
    """A manager matching ``kind="live"`` under a case-insensitive collation."""
    return queryset.collation(CASE_INSENSITIVE).filter(kind="live")


class DrtMarket(Document):
    name = StringField()


class DrtStall(Document):
    """Rules of its own, a collated manager: read under it and without it."""

    kind = StringField()
    market = ReferenceField(DrtMarket, reverse_delete_rule=CASCADE)
    objects = queryset_manager(_collated)


class DrtSign(Document):
    """Gives stalls a rule of their own."""

    stall = ReferenceField(DrtStall, reverse_delete_rule=NULLIFY)


class DrtKiosk(Document):
    """No rule of its own, a collated manager; its ids needed as a DENY
    referrer: read once, without the collation (what its delete matches);
    the DENY check reads it under the collation (MongoEngine's count)."""

    kind = StringField()
    market = ReferenceField(DrtMarket, reverse_delete_rule=CASCADE)
    stall = ReferenceField(DrtStall, reverse_delete_rule=DENY)
    objects = queryset_manager(_collated)


def _finds(command_log: CommandLog) -> dict[str, int]:
    """The number of ``find`` commands sent, per collection."""
    finds: dict[str, int] = {}
    for name, where in _sent(command_log):
        if name == "find":
            finds[where] = finds.get(where, 0) + 1
    return finds


async def test_a_collated_manager_costs_one_more_read_where_its_rules_apply(
    async_alias: str, command_log: CommandLog
) -> None:
    """The stalls (rules of their own) are read under their manager's
    collation, for the rules, and without it, for what is deleted; the kiosks
    (none) without it alone; a queryset's collation costs one more read of
    the markets, none without one."""
    for collation in (None, CASE_INSENSITIVE):
        market = await DrtMarket(name="doomed").async_save()
        stall = await DrtStall(kind="live", market=market).async_save()
        await DrtSign(stall=stall).async_save()
        await DrtKiosk(kind="live", market=market, stall=stall).async_save()
        deleting = DrtMarket.objects(name="doomed")
        if collation is not None:
            deleting = deleting.collation(collation)
        command_log.clear()
        assert await deleting.async_delete() == 1
        assert _finds(command_log) == {
            "drt_market": 1 if collation is None else 2,
            "drt_stall": 2,
            "drt_kiosk": 2,  # (and the DENY check's)
        }
        assert await DrtKiosk.objects.async_count() == 0
        assert await DrtStall.objects.async_count() == 0
        assert [sign.stall async for sign in DrtSign.objects] == [None]
        await DrtSign.objects.async_delete()


async def test_a_queryset_s_hint_costs_one_more_read_of_its_matches(
    async_alias: str, command_log: CommandLog
) -> None:
    """A queryset delete with a ``hint()`` reads its matches through it too,
    for the rules (what MongoEngine's iteration lists): one more read of the
    markets; none without one (the stalls and kiosks as without it), nor with
    ``hint()`` given no index (MongoEngine's cursor then has none)."""
    for hint in (-1, None, "_id_"):
        market = await DrtMarket(name="doomed").async_save()
        stall = await DrtStall(kind="live", market=market).async_save()
        await DrtKiosk(kind="live", market=market, stall=stall).async_save()
        deleting = DrtMarket.objects(name="doomed")
        if hint != -1:
            deleting = deleting.hint(hint)
        command_log.clear()
        assert await deleting.async_delete() == 1
        assert _finds(command_log) == {
            "drt_market": 1 if hint in (-1, None) else 2,
            "drt_stall": 2,
            "drt_kiosk": 2,
        }
        assert await DrtStall.objects.async_count() == 0
        assert await DrtKiosk.objects.async_count() == 0


def _deleted_one_by_one(cls: type[Document]) -> contextlib.AbstractContextManager[None]:
    """Inside the block, ``cls``'s documents are deleted one by one (each in
    cascade_refs of its own): a ``pre_delete`` receiver, doing nothing."""
    return receiving(signals.pre_delete, _ignored, cls)


def _ignored(sender: Any, document: Any, **kwargs: Any) -> None:
    """A delete receiver with nothing to do."""


async def _none_deleted_under_a_collation(cls: type[Document]) -> None:
    """Delete ``cls``'s documents named "X" under CASE_INSENSITIVE (those
    named "x" match): the count it gives, MongoEngine's delete_many's, is 0."""
    deleting = cls.objects(name="X").collation(CASE_INSENSITIVE)
    assert await deleting.async_delete() == 0  # (MongoEngine's delete_many)


class DrtFair(Document):
    name = StringField()


class DrtBooth(Document):
    """Delete receivers (see the test): deleted one by one, each document
    with cascade_refs of its own."""

    fair = ReferenceField(DrtFair, reverse_delete_rule=CASCADE)


class DrtBanner(Document):
    """A leaf: deleted by its rule's filter."""

    booth = ReferenceField(DrtBooth, reverse_delete_rule=CASCADE)


async def test_a_collated_delete_deletes_leaves_below_one_by_one_in_one_delete(
    async_alias: str, command_log: CommandLog
) -> None:
    """Under a collated delete, the leaves below documents deleted one by one
    (each in cascade_refs of its own) go in one delete when no kept document
    sets those apart, not one delete per document above them."""
    fair = await DrtFair(name="x").async_save()
    for _ in range(3):
        booth = await DrtBooth(fair=fair).async_save()
        await DrtBanner(booth=booth).async_save()

    with _deleted_one_by_one(DrtBooth):
        command_log.clear()
        await _none_deleted_under_a_collation(DrtFair)
    assert [name for name in _sent(command_log) if name[0] == "delete"] == [
        ("delete", "drt_banner"),
        ("delete", "drt_booth"),
    ]
    assert await DrtBanner.objects.async_count() == 0
    assert await DrtBooth.objects.async_count() == 0
    assert await DrtFair.objects.async_count() == 1


class DrtGala(Document):
    name = StringField()


class DrtTent(Document):
    """Delete receivers (see the test): deleted one by one, each document
    with cascade_refs of its own; its NULLIFY, PULL and CASCADE rules."""

    gala = ReferenceField(DrtGala, reverse_delete_rule=CASCADE)


class DrtFlag(Document):
    """A leaf with a file field: its rule's filter first reads its files."""

    tent = ReferenceField(DrtTent, reverse_delete_rule=CASCADE)
    image = FileField()


class DrtStake(Document):
    """Needs its ids (its own rules): found by id."""

    tent = ReferenceField(DrtTent, reverse_delete_rule=CASCADE)


class DrtRope(Document):
    stake = ReferenceField(DrtStake, reverse_delete_rule=NULLIFY)


class DrtPermit(Document):
    stake = ReferenceField(DrtStake, reverse_delete_rule=DENY)


class DrtPennant(Document):
    tent = ReferenceField(DrtTent, reverse_delete_rule=NULLIFY)


class DrtRoster(Document):
    tents = ListField(ReferenceField(DrtTent, reverse_delete_rule=PULL))


async def test_a_collated_delete_below_one_by_one_sends_a_command_a_rule(
    async_alias: str, command_log: CommandLog
) -> None:
    """Under a collated delete, below documents deleted one by one (each in
    cascade_refs of its own), each rule still costs one command when no kept
    document sets them apart: one NULLIFY or PULL update, one DENY check,
    one read of the documents needing their ids, one read of a leaf's files,
    not one per document above them."""
    gala = await DrtGala(name="x").async_save()
    tents = [await DrtTent(gala=gala).async_save() for _ in range(3)]
    for tent in tents:
        flag = DrtFlag(tent=tent)
        await flag.image.async_put(b"flag")
        await flag.async_save()
        stake = await DrtStake(tent=tent).async_save()
        await DrtRope(stake=stake).async_save()
        await DrtPennant(tent=tent).async_save()
    await DrtRoster(tents=tents).async_save()

    with _deleted_one_by_one(DrtTent):
        command_log.clear()
        await _none_deleted_under_a_collation(DrtGala)
    below = {"drt_flag", "drt_stake", "drt_rope", "drt_permit", "drt_pennant"}
    sent = [each for each in _sent(command_log) if each[1] in below | {"drt_roster"}]
    assert sorted(sent) == [
        ("delete", "drt_flag"),
        ("delete", "drt_stake"),
        ("find", "drt_flag"),  # (its files)
        ("find", "drt_permit"),  # (the DENY check)
        ("find", "drt_stake"),
        ("update", "drt_pennant"),
        ("update", "drt_rope"),
        ("update", "drt_roster"),
    ]
    db = get_async_db()
    for cls in (DrtFlag, DrtStake, DrtTent):
        assert await db[cls._get_collection_name()].count_documents({}) == 0
    assert await db.fs.files.count_documents({}) == 0
    assert await DrtGala.objects.async_count() == 1
    for cls, field in ((DrtRope, "stake"), (DrtPennant, "tent")):
        raws = await db[cls._get_collection_name()].find().to_list()
        assert [field in raw for raw in raws] == [False] * 3
    [roster] = await db.drt_roster.find().to_list()
    assert roster["tents"] == []


class DrtRally(Document):
    name = StringField()


class DrtCar(Document):
    """Delete receivers (see the test): deleted one by one."""

    rally = ReferenceField(DrtRally, reverse_delete_rule=CASCADE)


class DrtDriver(Document):
    """Its own rule: found by id, its cascade_refs its car's."""

    car = ReferenceField(DrtCar, reverse_delete_rule=CASCADE)


class DrtHelmet(Document):
    """A leaf: deleted by its rule's filter, a group per car above."""

    driver = ReferenceField(DrtDriver, reverse_delete_rule=CASCADE)


class _Scans(dict):
    """A plan's kept documents (``kept_from``), counting the passes over them."""

    passes = 0

    def items(self) -> Any:
        _Scans.passes += 1
        return super().items()


async def _scans_deleting_rallies(count: int, monkeypatch: pytest.MonkeyPatch) -> int:
    """Delete ``count`` rallies, each kept (matched under the collation
    alone) with a car, a driver and a helmet deleted; the passes over the
    kept documents the plan made."""
    for _ in range(count):
        car = await DrtCar(rally=await DrtRally(name="x").async_save()).async_save()
        await DrtHelmet(driver=await DrtDriver(car=car).async_save()).async_save()
    plan = mongoengine_async.delete_rules._DeletePlan
    planning = plan.__init__

    def counted(self: Any, *args: Any, **kwargs: Any) -> None:
        planning(self, *args, **kwargs)
        self.kept_from = _Scans()

    monkeypatch.setattr(_Scans, "passes", 0)
    with monkeypatch.context() as patched:
        patched.setattr(plan, "__init__", counted)
        await _none_deleted_under_a_collation(DrtRally)
    assert await DrtRally.objects.async_count() == count
    for cls in (DrtCar, DrtDriver, DrtHelmet):
        assert await cls.objects.async_count() == 0
    await DrtRally.objects.async_delete()
    return _Scans.passes


async def test_a_collated_delete_plans_leaves_below_one_by_one_in_linear_time(
    async_alias: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The filter of a leaf below documents deleted one by one (a group each)
    left out the kept documents held there by a pass over all the kept
    documents per group: 20,000 kept roots each with a car took 24 s to plan
    (quadratic), not 6 s. Its passes no longer grow with the groups."""

    with _deleted_one_by_one(DrtCar):
        few = await _scans_deleting_rallies(2, monkeypatch)
        many = await _scans_deleting_rallies(12, monkeypatch)
    assert few == many
