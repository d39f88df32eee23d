"""MongoEngine's signals sent by async operations, against the real server.

Receivers get MongoEngine's arguments; coroutine-function receivers are awaited
(the operation waits for them), plain ones are called.
"""

from __future__ import annotations

import asyncio
import contextlib

import mongoengine.signals
import pytest
from bson import ObjectId

from mongoengine_async import (
    CASCADE,
    Document,
    IntField,
    NestedTransactionError,
    ReferenceField,
    StringField,
    ValidationError,
    async_run_in_transaction,
    get_async_db,
    signals,
)


class SigBook(Document):
    title = StringField(required=True)
    pages = IntField()


class SigOther(Document):
    title = StringField()


class SigReview(Document):
    book = ReferenceField(SigBook, reverse_delete_rule=CASCADE)


@pytest.fixture
def connect():
    """``connect(signal, receiver, sender=...)``; everything is disconnected after."""
    connected = []

    def _connect(signal, receiver, **kwargs):
        signal.connect(receiver, **kwargs)
        connected.append((signal, receiver, kwargs.get("sender")))

    yield _connect
    for signal, receiver, sender in connected:
        if sender is None:
            signal.disconnect(receiver)
        else:
            signal.disconnect(receiver, sender=sender)


def recorder(log: list, name: str):
    def receiver(sender, **kwargs):
        log.append((name, sender, kwargs))

    return receiver


ALL = [
    "pre_save",
    "pre_save_post_validation",
    "post_save",
    "pre_delete",
    "post_delete",
    "pre_bulk_insert",
    "post_bulk_insert",
]


def test_signals_are_mongoengines():
    for name in ALL:
        assert getattr(signals, name) is getattr(mongoengine.signals, name)


def test_the_module_has_every_public_name_of_mongoengines():
    """``from mongoengine import signals`` becomes ``from mongoengine_async
    import signals``: ``signals.signals_available`` and ``signals.Namespace``
    (for signals of one's own) are MongoEngine's."""
    public = [name for name in dir(mongoengine.signals) if not name.startswith("_")]
    assert {"signals_available", "Namespace", *ALL} <= set(public)
    for name in public:
        assert getattr(signals, name) is getattr(mongoengine.signals, name), name
    assert signals.signals_available  # blinker is installed for the tests
    assert signals.Namespace().signal("own").name == "own"


async def test_save_signals_with_mongoengines_arguments(async_alias, connect):
    log = []
    for name in ALL:
        connect(getattr(signals, name), recorder(log, name), sender=SigBook)

    book = SigBook(title="Dune")
    await book.async_save(signal_kwargs={"reason": "new"})
    assert [(name, sender) for name, sender, _ in log] == [
        ("pre_save", SigBook),
        ("pre_save_post_validation", SigBook),
        ("post_save", SigBook),
    ]
    assert log[0][2] == {"document": book, "reason": "new"}
    assert log[1][2] == {"document": book, "created": True, "reason": "new"}
    assert log[2][2] == {"document": book, "created": True, "reason": "new"}

    log.clear()
    book.pages = 412
    await book.async_save()
    assert [(name, kwargs) for name, _, kwargs in log] == [
        ("pre_save", {"document": book}),
        ("pre_save_post_validation", {"document": book, "created": False}),
        ("post_save", {"document": book, "created": False}),
    ]

    log.clear()
    created = await SigBook.objects.async_create(title="Emma")
    assert [(name, kwargs["created"]) for name, _, kwargs in log[1:]] == [
        ("pre_save_post_validation", True),
        ("post_save", True),
    ]
    assert log[2][2]["document"] is created


async def test_pre_save_runs_before_validation(async_alias, connect):
    def fill_title(sender, document, **kwargs):
        document.title = document.title or "Untitled"

    connect(signals.pre_save, fill_title, sender=SigBook)
    book = await SigBook().async_save()
    raw = await get_async_db().sig_book.find_one({"_id": book.pk})
    assert raw["title"] == "Untitled"


async def test_delete_signals(async_alias, connect):
    log = []
    for name in ALL:
        connect(getattr(signals, name), recorder(log, name), sender=SigBook)
    book = await SigBook(title="Dune").async_save()
    log.clear()
    await book.async_delete(signal_kwargs={"by": "test"})
    assert log == [
        ("pre_delete", SigBook, {"document": book, "by": "test"}),
        ("post_delete", SigBook, {"document": book, "by": "test"}),
    ]

    # A queryset delete sends each document's signals. Its rules (SigReview's
    # CASCADE) run it in a transaction: the post_delete signals follow its
    # commit; without one, each follows its document's delete, as in MongoEngine.
    expected = {
        True: ["pre a", "pre b", "post a", "post b"],
        False: ["pre a", "post a", "pre b", "post b"],
    }
    for transaction, order in expected.items():
        await SigBook.objects.async_insert([SigBook(title="a"), SigBook(title="b")])
        log.clear()
        assert await SigBook.objects.async_delete(transaction=transaction) == 2
        assert [
            f"{name[:-7]} {kwargs['document'].title}" for name, _, kwargs in log
        ] == order


@pytest.mark.parametrize("load_bulk", [True, False])
async def test_bulk_insert_signals(async_alias, connect, load_bulk):
    log = []
    for name in ALL:
        connect(getattr(signals, name), recorder(log, name), sender=SigBook)
    books = [SigBook(title="a"), SigBook(title="b")]
    result = await SigBook.objects.async_insert(
        books, load_bulk=load_bulk, signal_kwargs={"batch": 1}
    )
    assert [name for name, _, _ in log] == ["pre_bulk_insert", "post_bulk_insert"]
    pre, post = log[0][2], log[1][2]
    assert pre == {"documents": books, "batch": 1}
    assert post["loaded"] is load_bulk and post["batch"] == 1
    if load_bulk:
        # The documents as read back from the database.
        assert post["documents"] == result
        assert [doc.title for doc in post["documents"]] == ["a", "b"]
        assert all(doc is not book for doc, book in zip(result, books, strict=True))
    else:
        assert post["documents"] == books
        assert [doc.pk for doc in books] == result


async def test_coroutine_receivers_are_awaited(async_alias, connect):
    entered, release = asyncio.Event(), asyncio.Event()
    log = []

    async def pre_save(sender, document, **kwargs):
        entered.set()
        await release.wait()  # the save must wait for this
        document.pages = 1
        log.append("pre_save done")

    async def post_save(sender, document, created, **kwargs):
        await asyncio.sleep(0)
        raw = await get_async_db().sig_book.find_one({"_id": document.pk})
        log.append(("post_save saw", raw["pages"], created))

    def plain(sender, document, **kwargs):
        log.append("plain called")

    connect(signals.pre_save, pre_save, sender=SigBook)
    connect(signals.pre_save, plain, sender=SigBook)
    connect(signals.post_save, post_save, sender=SigBook)

    task = asyncio.create_task(SigBook(title="slow").async_save())
    await asyncio.wait_for(entered.wait(), 10)
    for _ in range(5):
        await asyncio.sleep(0.01)
    assert not task.done()
    assert await get_async_db().sig_book.count_documents({}) == 0
    release.set()
    book = await asyncio.wait_for(task, 10)
    assert sorted(map(str, log)) == sorted(
        map(str, ["pre_save done", "plain called", ("post_save saw", 1, True)])
    )
    assert book.pages == 1


async def test_coroutine_delete_and_bulk_receivers_are_awaited(async_alias, connect):
    seen = []

    async def receiver(sender, **kwargs):
        await asyncio.sleep(0.01)
        seen.append(sorted(kwargs))

    for name in ("pre_delete", "post_delete", "pre_bulk_insert", "post_bulk_insert"):
        connect(getattr(signals, name), receiver, sender=SigBook)
    [book] = await SigBook.objects.async_insert([SigBook(title="a")])
    await book.async_delete()
    assert seen == [["documents"], ["documents", "loaded"], ["document"], ["document"]]


async def test_receivers_for_another_sender_are_not_called(async_alias, connect):
    called = []

    def other(sender, **kwargs):
        called.append(("other", sender))

    def anyone(sender, **kwargs):
        called.append(("any", sender))

    for name in ALL:
        connect(getattr(signals, name), other, sender=SigOther)
    connect(signals.post_save, anyone)  # no sender: every class

    book = await SigBook(title="x").async_save()
    await SigBook.objects.async_insert([SigBook(title="y")])
    await book.async_delete()
    assert called == [("any", SigBook)]
    await SigOther(title="o").async_save()
    assert ("other", SigOther) in called and ("any", SigOther) in called


async def test_a_raising_receiver_stops_the_operation(async_alias, connect):
    def refuse(sender, document, **kwargs):
        raise ValidationError("refused by a receiver")

    connect(signals.pre_save, refuse, sender=SigBook)
    with pytest.raises(ValidationError, match="refused"):
        await SigBook(title="never").async_save()
    assert await get_async_db().sig_book.count_documents({}) == 0


async def test_receivers_disconnected_are_not_called(async_alias):
    called = []

    async def receiver(sender, **kwargs):
        called.append(sender)

    signals.post_save.connect(receiver, sender=SigBook)
    signals.post_save.disconnect(receiver, sender=SigBook)
    await SigBook(title="x").async_save()
    assert called == []


async def test_muted_signals_call_no_receiver(async_alias, connect):
    """Inside blinker's ``signal.muted()`` async operations call no receiver of
    it, as MongoEngine's sync ones (blinker's ``send``) do not."""
    log = []
    for name in ALL:
        for sender in (SigBook, SigReview):
            connect(getattr(signals, name), recorder(log, name), sender=sender)
    with contextlib.ExitStack() as stack:
        for name in ALL:
            stack.enter_context(getattr(signals, name).muted())
        book = await SigBook(title="a").async_save()
        book.title = "b"
        await book.async_save()
        await SigReview(book=book).async_save()
        await book.async_delete()  # cascades to the review
        await SigBook.objects.async_insert([SigBook(title="c"), SigBook(title="d")])
        assert await SigBook.objects(title="c").async_delete() == 1
    assert log == []
    db = get_async_db()
    assert await db.sig_review.count_documents({}) == 0
    assert [raw["title"] async for raw in db.sig_book.find()] == ["d"]
    await SigBook(title="e").async_save()  # unmuted again
    assert [name for name, _, _ in log] == ALL[:3]


@pytest.mark.parametrize("cached", [True, False])
async def test_init_receivers_connected_while_streaming(async_alias, connect, cached):
    """A post_init receiver connected during ``async for`` gets the documents
    of the next batches, as MongoEngine's loop sends it from its next chunk."""
    await SigBook.objects.async_insert(
        [SigBook(title="t", pages=n) for n in range(120)], load_bulk=False
    )
    seen = []

    def receiver(sender, document, **kwargs):
        seen.append(document.pages)

    queryset = SigBook.objects.order_by("pages").batch_size(50)
    if not cached:
        queryset = queryset.no_cache()
    pages = []
    async for book in queryset:
        if not pages:
            connect(signals.post_init, receiver, sender=SigBook)
        pages.append(book.pages)
    assert pages == list(range(120))
    assert seen == list(range(50, 120))


async def test_cascaded_delete_receivers_run_in_the_deletes_transaction(
    async_alias, connect
):
    """A cascaded document's receivers run inside the delete's transaction
    (docs/signals.md): their writes join it, and one of their own is refused
    with NestedTransactionError, which undoes the whole delete."""
    book = await SigBook(title="a").async_save()
    await SigReview(book=book).async_save()

    async def audit(sender, document, **kwargs):
        await SigOther(title="review deleted").async_save()

    connect(signals.post_delete, audit, sender=SigReview)
    await book.async_delete()
    db = get_async_db()
    assert await db.sig_review.count_documents({}) == 0
    assert await SigOther.objects.async_scalar("title") == ["review deleted"]

    async def own_transaction(sender, document, **kwargs):
        async with async_run_in_transaction():
            await SigOther(title="never").async_save()

    book = await SigBook(title="b").async_save()
    await SigReview(book=book).async_save()
    connect(signals.post_delete, own_transaction, sender=SigReview)
    with pytest.raises(NestedTransactionError):
        await book.async_delete()
    assert await db.sig_book.count_documents({}) == 1
    assert await db.sig_review.count_documents({}) == 1
    assert await SigOther.objects.async_count() == 1


@pytest.mark.parametrize("delete", ["document", "queryset, one by one"])
async def test_a_task_a_cascaded_delete_receiver_starts_is_outside_its_transaction(
    async_alias, connect, delete
):
    """A task that a cascaded document's receiver starts (fire and forget)
    does not inherit the delete's transaction, which it may outlive: its
    write stays when the delete aborts, while the receiver's own joins the
    transaction and is undone. It inherited it: it joined the transaction,
    beside the delete's own operations, and was undone with it (or, run
    once the delete ended, failed with 'Cannot use ended session')."""
    book = await SigBook(title="a").async_save()
    await SigReview(book=book).async_save()
    await get_async_db().create_collection("sig_other")
    started = []

    async def audit(sender, document, **kwargs):
        task = asyncio.ensure_future(SigOther(title="task").async_save())
        started.append(task)
        await SigOther(title="receiver").async_save()
        await asyncio.wait({task})
        raise ValueError("undo")

    connect(signals.post_delete, audit, sender=SigReview)
    if delete == "document":
        work = book.async_delete()
    else:  # (a receiver of its own: deleted one by one, each in turn)
        connect(signals.pre_delete, lambda sender, **kwargs: None, sender=SigBook)
        work = SigBook.objects(title="a").async_delete()
    with pytest.raises(ValueError, match="undo"):
        await work
    [task] = started
    assert task.exception() is None
    assert await SigOther.objects.async_scalar("title") == ["task"]
    assert await get_async_db().sig_review.count_documents({}) == 1


async def test_post_save_of_an_inserted_document_shows_it_all_changed(
    async_alias, connect
):
    """A plain ``post_save`` receiver sees a document its save inserted as
    MongoEngine's does: without ``_changed_fields`` (every field counts as
    changed), ``_delta()`` giving the whole document; a loaded one, its
    changes. (Ours had given the inserted one an empty list: ``({}, {})``.)"""
    seen = []

    def receiver(sender, document, created, **kwargs):
        seen.append((created, hasattr(document, "_changed_fields"), document._delta()))
        document.pages = 9  # cleared as MongoEngine's save clears it

    connect(signals.post_save, receiver, sender=SigBook)
    book = await SigBook(title="T", pages=3).async_save()
    book.pages = 4
    await book.async_save()
    assert seen == [
        (True, False, ({"title": "T", "pages": 3}, {})),
        (False, True, ({"pages": 4}, {})),
    ]
    assert book._changed_fields == []


async def test_a_coroutine_post_save_receiver_sees_an_inserted_document_all_changed(
    async_alias, connect
):
    """A coroutine ``post_save`` receiver sees an inserted document as a plain
    one does (as MongoEngine's do): without ``_changed_fields``, at each step
    of its body; it saw the list noting other tasks' changes (``({}, {})``).
    A change another task makes while it waits is kept for the next save."""
    seen = []
    waiting, changed = asyncio.Event(), asyncio.Event()

    async def receiver(sender, document, created, **kwargs):
        seen.append((created, hasattr(document, "_changed_fields"), document._delta()))
        waiting.set()
        await changed.wait()
        seen.append((created, hasattr(document, "_changed_fields"), document._delta()))

    async def other_task(book):
        await waiting.wait()
        book.title = "U"  # while the receiver waits
        changed.set()

    connect(signals.post_save, receiver, sender=SigBook)
    book = SigBook(title="T", pages=3)
    await asyncio.gather(book.async_save(), other_task(book))
    whole = (True, False, ({"title": "T", "pages": 3}, {}))
    assert seen == [whole, (True, False, ({"title": "U", "pages": 3}, {}))]
    assert book._changed_fields == ["title"]
    seen.clear()
    waiting.clear()
    await asyncio.gather(book.async_save(), other_task(book))
    assert seen[0] == (False, True, ({"title": "U"}, {}))
    raw = await get_async_db().sig_book.find_one({"_id": book.pk})
    assert raw["title"] == "U"


async def test_a_coroutine_post_save_receiver_saving_an_inserted_document_again(
    async_alias, connect
):
    """Its own save of the document (as MongoEngine's receivers may do) stores
    the document whole, as MongoEngine's does (it is still new there)."""

    async def receiver(sender, document, created, **kwargs):
        if document.pages is None:
            document.pages = 1
            await document.async_save()

    connect(signals.post_save, receiver, sender=SigBook)
    book = await SigBook(title="T").async_save()
    raw = await get_async_db().sig_book.find_one({"_id": book.pk})
    assert raw == {"_id": book.pk, "title": "T", "pages": 1}
    assert not book._created and book._get_changed_fields() == []


async def test_post_save_of_an_inserted_document_with_a_list_shows_its_changes(
    async_alias, connect
):
    """An insert of a document that has a list of changes (built by
    ``_from_son(created=True)``, loaded then saved with ``force_insert``, or
    loaded from a son never stored, which the save's update upserts) shows
    ``post_save`` that list, as MongoEngine's save does (its receivers run
    before it clears the changes): ``_delta()`` gives those changes. (Ours
    had removed it while the receivers ran: ``_delta()`` gave the whole
    document, or ``({}, {})`` for a loaded one.)"""
    seen = []

    def receiver(sender, document, created, **kwargs):
        seen.append((created, document._changed_fields, document._delta()))

    connect(signals.post_save, receiver, sender=SigBook)
    made = SigBook._from_son(
        {"_id": ObjectId(), "title": "T", "pages": 3}, created=True
    )
    made.pages = 4
    await made.async_save()
    loaded = await SigBook.objects.async_get(id=made.id)
    await SigBook.objects(id=made.id).async_delete()
    loaded.title = "U"
    await loaded.async_save(force_insert=True)
    unstored = SigBook._from_son({"_id": ObjectId(), "title": "V", "pages": 5})
    unstored.pages = 6
    await unstored.async_save()
    assert seen == [
        (True, ["pages"], ({"pages": 4}, {})),
        (True, ["title"], ({"title": "U"}, {})),
        (True, ["pages"], ({"pages": 6}, {})),
    ]
    stored = {d.id: (d.title, d.pages) for d in await SigBook.objects.async_to_list()}
    # (The upsert sets only the change, as MongoEngine's does.)
    assert stored == {made.id: ("U", 4), unstored.id: (None, 6)}
    assert (
        made._changed_fields == loaded._changed_fields == unstored._changed_fields == []
    )
