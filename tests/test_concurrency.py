"""Many concurrent tasks on one event loop, against a real mongod: nothing lost."""

from __future__ import annotations

import asyncio
import itertools
import time
from typing import Any

import pytest
from bson import ObjectId

from mongoengine_async import (
    Document,
    EmbeddedDocument,
    EmbeddedDocumentField,
    IntField,
    ListField,
    OperationError,
    ReferenceField,
    SequenceField,
    StringField,
    async_run_in_transaction,
    collection_setup,
    get_async_db,
    signals,
)


class ConcItem(Document):
    name = StringField(required=True)
    n = IntField()
    tags = ListField(StringField())
    meta = {"indexes": ["name", "n"]}


class ConcPair(Document):
    a = IntField()
    b = IntField()
    note = StringField()


class ConcPrepared(Document):
    key = StringField(unique=True)


class ConcHolder(Document):
    item = ReferenceField(ConcItem)


TASKS = 300


async def test_hundreds_of_tasks_save_update_read(async_alias, command_log):
    async def life(i: int) -> ConcItem:
        item = await ConcItem(name=f"item-{i}", n=i, tags=["new"]).async_save()
        item.n = i * 10
        item.tags.append(f"t{i}")
        await item.async_save()
        await asyncio.sleep(0)
        fresh = await ConcItem.objects.async_get(pk=item.pk)
        assert fresh.name == f"item-{i}"
        assert fresh.n == i * 10
        assert fresh.tags == ["new", f"t{i}"]
        return item

    items = await asyncio.gather(*(life(i) for i in range(TASKS)))
    assert len({item.pk for item in items}) == TASKS
    assert await ConcItem.objects.async_count() == TASKS
    raw = await get_async_db().conc_item.find({}).to_list(None)
    assert len(raw) == TASKS
    by_name = {d["name"]: d for d in raw}
    for i in range(TASKS):
        assert by_name[f"item-{i}"]["n"] == i * 10
        assert by_name[f"item-{i}"]["tags"] == ["new", f"t{i}"]
    assert command_log.count("insert") == TASKS
    assert command_log.count("update") == TASKS
    assert command_log.count("createIndexes") == 1


async def test_concurrent_queryset_updates_are_not_lost(async_alias):
    counter = await ConcItem(name="counter", n=0).async_save()
    await asyncio.gather(
        *(ConcItem.objects(pk=counter.pk).async_update(inc__n=1) for _ in range(TASKS))
    )
    raw = await get_async_db().conc_item.find_one({"_id": counter.pk})
    assert raw["n"] == TASKS


async def test_concurrent_async_get_of_many_ids(async_alias):
    items = await ConcItem.objects.async_insert(
        [ConcItem(name=f"g{i}", n=i) for i in range(200)]
    )
    found = await asyncio.gather(
        *(ConcItem.objects.async_get(pk=item.pk) for item in items)
    )
    assert [(f.pk, f.name, f.n) for f in found] == [(i.pk, i.name, i.n) for i in items]
    missing = await asyncio.gather(
        *(ConcItem.objects.async_with_id(ObjectId()) for _ in range(50)),
    )
    assert missing == [None] * 50


async def test_concurrent_async_for_loops(async_alias, command_log):
    await ConcItem.objects.async_insert(
        [ConcItem(name=f"s{i:03}", n=i) for i in range(100)], load_bulk=False
    )
    command_log.clear()

    async def loop(modulo: int) -> list[int]:
        seen = []
        qs = ConcItem.objects(n__mod=(modulo, 0)).order_by("n").batch_size(3)
        async for item in qs:
            seen.append(item.n)
            await asyncio.sleep(0)
        return seen

    results = await asyncio.gather(*(loop(m) for m in range(1, 21)))
    for modulo, seen in zip(range(1, 21), results, strict=True):
        assert seen == [n for n in range(100) if n % modulo == 0]
    assert command_log.count("find") == 20
    # The loops really interleaved batches rather than loading everything.
    assert command_log.count("getMore") >= sum(len(r) // 3 for r in results) - 20
    cursors = [
        e.command["getMore"] for e in command_log.events if e.command_name == "getMore"
    ]
    assert len(set(cursors)) == 20
    switches = sum(1 for x, y in itertools.pairwise(cursors) if x != y)
    assert switches > 20 * 3


class Abort(Exception):
    """Ends the transaction of the sharing tests."""


async def test_a_shared_queryset_inserts_in_its_own_tasks_session(
    async_alias, command_log
):
    """Task A's insert (no transaction) and task B's count (in a transaction
    that is rolled back) on one queryset object: B resolves its terminal
    while A awaits a pre_bulk_insert receiver, and A's insert stays A's."""
    shared = ConcItem.objects(name__ne=None)  # say, a module's queryset
    b_counted, a_inserted = asyncio.Event(), asyncio.Event()

    async def wait_for_b(sender, documents, **kwargs):
        await b_counted.wait()

    async def task_b() -> None:
        with pytest.raises(Abort):
            async with async_run_in_transaction():
                await shared.async_count()
                b_counted.set()
                await a_inserted.wait()
                raise Abort

    await shared.async_count()  # collection prepared beforehand
    command_log.clear()
    signals.pre_bulk_insert.connect(wait_for_b, sender=ConcItem)
    try:
        b = asyncio.ensure_future(task_b())
        await shared.async_insert([ConcItem(name="kept")], load_bulk=False)
        a_inserted.set()
        await b
    finally:
        signals.pre_bulk_insert.disconnect(wait_for_b, sender=ConcItem)
    raw = await get_async_db().conc_item.find({}, {"_id": 0}).to_list(None)
    assert raw == [{"name": "kept", "tags": []}]
    (insert,) = [e.command for e in command_log.events if e.command_name == "insert"]
    assert "autocommit" not in insert  # (a retryable write has a txnNumber)


class ConcLine(EmbeddedDocument):
    number = SequenceField()
    text = StringField()


class ConcOrder(Document):
    name = StringField()
    lines = ListField(EmbeddedDocumentField(ConcLine))


@pytest.mark.parametrize("terminal", ["async_update", "async_modify"])
async def test_a_shared_queryset_updates_in_its_own_tasks_session(
    async_alias, terminal
):
    """Task A's update in a transaction, of an embedded document whose
    sequence value the update numbers first (a counter's $inc awaited), and
    task B's counts outside it, on one queryset object: B resolves its terminals
    while A awaits the counter, and A's update stays in A's transaction, which
    rolls it back."""
    await ConcOrder(name="a").async_save()
    shared = ConcOrder.objects(name="a")
    a_done = asyncio.Event()

    async def task_a() -> None:
        with pytest.raises(Abort):
            async with async_run_in_transaction():
                await getattr(shared, terminal)(push__lines=ConcLine(text="x"))
                raise Abort
        a_done.set()

    async def task_b() -> None:
        while not a_done.is_set():
            await shared.async_count()

    await asyncio.gather(task_a(), task_b())
    raw = await get_async_db().conc_order.find({}, {"_id": 0}).to_list(None)
    assert raw == [{"name": "a", "lines": []}]


async def test_a_shared_queryset_joins_in_its_own_tasks_session(
    async_alias, command_log
):
    """Task A's async_select_related() (no transaction) loads its references
    outside the transaction that task B opens, on the same queryset object,
    while A's find is in flight."""
    items = await ConcItem.objects.async_insert(
        [ConcItem(name=f"j{i}") for i in range(3)]
    )
    await ConcHolder.objects.async_insert([ConcHolder(item=item) for item in items])
    shared = ConcHolder.objects(item__ne=None)
    a_sent, b_counted = asyncio.Event(), asyncio.Event()

    async def task_b() -> None:
        with pytest.raises(Abort):
            async with async_run_in_transaction():
                await a_sent.wait()
                await shared.async_count()
                b_counted.set()
                raise Abort

    b = asyncio.ensure_future(task_b())
    await asyncio.sleep(0)  # B waits in its transaction
    command_log.clear()
    a = asyncio.ensure_future(shared.async_select_related())
    while command_log.count("find") == 0:
        await asyncio.sleep(0)
    a_sent.set()  # B resolves its count before A's reply is read
    holders = await a
    await b
    assert sorted(holder.item.name for holder in holders) == ["j0", "j1", "j2"]
    finds = [e.command for e in command_log.events if e.command_name == "find"]
    fence = [f for f in finds if f["find"] == "mongoengine_async_fence"]
    assert len(fence) == 1  # (B's abort is fenced)
    finds = [f for f in finds if f not in fence]
    assert [f["find"] for f in finds] == ["conc_holder", "conc_item"]
    assert all("autocommit" not in f for f in finds)
    counts = [e.command for e in command_log.events if e.command_name == "aggregate"]
    assert [c["autocommit"] for c in counts] == [False]  # B's, in its transaction


async def test_cancelled_insert_is_all_or_nothing(async_alias):
    documents = []
    for delay in range(40):
        pair = ConcPair(id=ObjectId(), a=delay, b=delay, note="x" * 1000)
        task = asyncio.ensure_future(pair.async_save())
        for _ in range(delay):
            await asyncio.sleep(0)
        task.cancel()
        try:
            await task
        except asyncio.CancelledError:
            pass
        documents.append(pair)
    for pair in documents:  # (a write sent goes on, cancelled: until it settled)
        await settled(pair)
    collection = get_async_db().conc_pair
    complete = 0
    for delay, pair in enumerate(documents):
        raw = await collection.find_one({"_id": pair.id})
        if raw is None:
            continue
        assert raw == {"_id": pair.id, "a": delay, "b": delay, "note": "x" * 1000}
        complete += 1
    # Cancelled before it ever ran: nothing at all.
    assert await collection.find_one({"_id": documents[0].id}) is None
    # The connection is still usable afterwards.
    final = await ConcPair(a=-1, b=-1).async_save()
    assert await collection.find_one({"_id": final.id}) is not None
    assert await collection.count_documents({}) == complete + 1


async def settled(document: Any) -> None:
    """Wait until the writes a cancelled save or delete of ``document`` sent
    have settled (they go on, holding its turn)."""
    while "_async_save_turns" in document.__dict__:
        await asyncio.sleep(0.001)


async def test_cancel_after_command_sent(async_alias, command_log):
    await ConcPair.objects.async_first()  # collection prepared beforehand
    pair = ConcPair(id=ObjectId(), a=1, b=2, note="mid-flight")
    command_log.clear()
    task = asyncio.ensure_future(pair.async_save())
    while command_log.count() == 0:
        await asyncio.sleep(0)
    # A new document with its own id: find_one_and_replace first, as MongoEngine.
    assert command_log.names[-1] == "findAndModify"
    task.cancel()
    try:
        await task
    except asyncio.CancelledError:
        pass
    # The server may still be applying the write the cancelled task sent: read
    # until the document and the count agree (they do once it is done).
    for _ in range(100):
        raw = await get_async_db().conc_pair.find_one({"_id": pair.id})
        count = await ConcPair.objects.async_count()
        if count == (0 if raw is None else 1):
            break
        await asyncio.sleep(0.01)
    assert raw in (None, {"_id": pair.id, "a": 1, "b": 2, "note": "mid-flight"})
    assert count == (0 if raw is None else 1)


async def _cancel_once_sent(command_log, write, stored: int = 1) -> None:
    """Run ``write``, cancel it once its command is sent, and wait until the
    server has stored the ``stored`` documents it sent (a cancelled task does
    not stop the server; on a loaded machine it may land seconds later)."""
    await ConcPair.objects.async_first()  # collection prepared beforehand
    command_log.clear()
    task = asyncio.ensure_future(write)
    while command_log.count() == 0:
        await asyncio.sleep(0)
    assert command_log.names == ["insert"]
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    deadline = time.monotonic() + 30
    while await get_async_db().conc_pair.count_documents({}) < stored:
        assert time.monotonic() < deadline, "the cancelled write never landed"
        await asyncio.sleep(0.01)


async def test_a_new_document_cancelled_once_sent_is_saved_once(
    async_alias, command_log
):
    """A new document has its id before its insert is awaited: saved again
    after a cancellation, it is the same document; the insert went on and
    landed, so the document is saved (not new) once it settled, and the next
    save (which waits for it) has nothing to send."""
    pair = ConcPair(a=1, b=2)
    await _cancel_once_sent(command_log, pair.async_save())
    assert pair.pk is not None
    command_log.clear()
    await pair.async_save()
    assert command_log.names == []
    stored = await get_async_db().conc_pair.find({}).to_list(None)
    assert stored == [{"_id": pair.pk, "a": 1, "b": 2}]
    assert not pair._created


async def test_an_insert_cancelled_once_sent_refuses_to_store_twice(
    async_alias, command_log
):
    """async_insert gives the documents their ids before the insert is
    awaited; the insert goes on and lands, so the documents are saved once it
    settled: inserted again after a cancellation, they are refused, as
    MongoEngine's insert() refuses stored documents, and nothing is sent."""
    pairs = [ConcPair(a=i) for i in range(3)]
    await _cancel_once_sent(command_log, ConcPair.objects.async_insert(pairs), 3)
    await _until_saved(pairs)
    one = ConcPair(a=9)
    await _cancel_once_sent(command_log, ConcPair.objects.async_insert(one), 4)
    await _until_saved([one])
    command_log.clear()
    for again in (pairs, one):
        stored = r"^Some documents have ObjectIds, use doc.update\(\) instead$"
        with pytest.raises(OperationError, match=stored):
            await ConcPair.objects.async_insert(again)
    assert command_log.names == []
    stored_pairs = await get_async_db().conc_pair.find({}).sort("a").to_list(None)
    assert stored_pairs == [{"_id": p.pk, "a": p.a} for p in [*pairs, one]]


async def _until_saved(documents: list[Any]) -> None:
    """Wait until the cancelled write that stored ``documents`` settled: each
    saved, no longer new (its done-callback may follow the server's reply)."""
    deadline = time.monotonic() + 30
    while any(document._created for document in documents):
        assert time.monotonic() < deadline, "the cancelled write never settled"
        await asyncio.sleep(0.01)


async def test_saves_of_one_instance_are_sent_in_order(async_alias, command_log):
    """Tasks saving one shared instance: each save waits for the one in
    flight, so the updates are sent one after the other, in the order the
    saves began, and what is stored is what the instance holds."""
    pair = await ConcPair(a=0, b=0).async_save()
    command_log.clear()

    async def change(i: int) -> None:
        pair.a = i
        await pair.async_save()

    await asyncio.gather(*(change(i) for i in range(1, 60)))
    sent = [e.command["updates"][0]["u"]["$set"]["a"] for e in command_log.events]
    assert sent == sorted(sent) and sent[-1] == 59
    raw = await get_async_db().conc_pair.find_one({"_id": pair.pk})
    assert raw == {"_id": pair.pk, "a": 59, "b": 0}
    assert pair._get_changed_fields() == []


async def test_a_cancelled_waiting_save_lets_the_next_one_go(async_alias, command_log):
    """A save cancelled while it waits for the one in flight leaves the
    others their turns, and its change goes with the next save."""
    pair = await ConcPair(a=0, b=0).async_save()
    command_log.clear()
    pair.a = 1
    first = asyncio.ensure_future(pair.async_save())
    while command_log.count() == 0:
        await asyncio.sleep(0)
    pair.b = 2
    waiting = asyncio.ensure_future(pair.async_save())
    await asyncio.sleep(0)
    pair.note = "last"
    last = asyncio.ensure_future(pair.async_save())
    await asyncio.sleep(0)
    waiting.cancel()
    await first
    await last
    assert waiting.cancelled()
    updates = [e.command["updates"][0]["u"] for e in command_log.events]
    assert updates == [{"$set": {"a": 1}}, {"$set": {"b": 2, "note": "last"}}]
    raw = await get_async_db().conc_pair.find_one({"_id": pair.pk})
    assert raw == {"_id": pair.pk, "a": 1, "b": 2, "note": "last"}
    assert "_async_save_turns" not in pair.__dict__  # none in flight any more


async def test_cancelled_update_is_all_or_nothing(async_alias):
    collection = get_async_db().conc_pair
    pairs = await ConcPair.objects.async_insert(
        [ConcPair(a=0, b=0, note="old") for _ in range(30)]
    )
    for delay, pair in enumerate(pairs):
        pair.a = delay + 1
        pair.b = delay + 1
        pair.note = None
        task = asyncio.ensure_future(pair.async_save())
        for _ in range(delay):
            await asyncio.sleep(0)
        task.cancel()
        try:
            await task
        except asyncio.CancelledError:
            pass
    for pair in pairs:
        await settled(pair)
    for delay, pair in enumerate(pairs):
        raw = await collection.find_one({"_id": pair.id})
        assert raw in (
            {"_id": pair.id, "a": 0, "b": 0, "note": "old"},
            {"_id": pair.id, "a": delay + 1, "b": delay + 1},
        )
    assert (await collection.find_one({"_id": pairs[0].id}))["note"] == "old"


async def test_cancelled_first_use_still_creates_indexes(async_alias, command_log):
    first = asyncio.ensure_future(ConcPrepared(key="a").async_save())
    await asyncio.sleep(0)
    first.cancel()
    try:
        await first
    except asyncio.CancelledError:
        pass
    await asyncio.gather(*(ConcPrepared(key=f"k{i}").async_save() for i in range(20)))
    info = await get_async_db().conc_prepared.index_information()
    assert any(spec.get("unique") for spec in info.values())
    assert command_log.count("createIndexes") == 1
    assert await ConcPrepared.objects.async_count() == 20


async def test_a_preparation_failing_after_its_caller_left_is_retried(
    async_alias, monkeypatch
):
    failing = asyncio.Event()

    async def create_then_fail(cls, collection):
        await failing.wait()
        raise RuntimeError("index build failed")

    with monkeypatch.context() as patched:
        patched.setattr(collection_setup, "create_collection", create_then_fail)
        first = asyncio.ensure_future(ConcPrepared(key="a").async_save())
        await asyncio.sleep(0)
        first.cancel()  # the shielded preparation goes on without its caller
        with pytest.raises(asyncio.CancelledError):
            await first
        failing.set()
        await asyncio.sleep(0)

    # The next first use prepares again instead of re-raising the old failure.
    await ConcPrepared(key="b").async_save()
    assert await ConcPrepared.objects.async_scalar("key") == ["b"]
    info = await get_async_db().conc_prepared.index_information()
    assert any(spec.get("unique") for spec in info.values())


async def test_a_pre_save_receiver_saving_its_document_is_refused(async_alias):
    """A pre_save receiver saving the document being saved would wait for its
    own save: OperationError naming why, nothing written by either."""

    async def save_again(sender, document, **kwargs):
        await document.async_save()

    signals.pre_save.connect(save_again, sender=ConcPair)
    try:
        with pytest.raises(OperationError) as raised:
            await ConcPair(a=1).async_save()
    finally:
        signals.pre_save.disconnect(save_again, sender=ConcPair)
    assert str(raised.value) == (
        "ConcPair.async_save() called for a document this task is saving (by a "
        "pre_save or pre_save_post_validation receiver?): it would wait for "
        "itself; save it again from post_save"
    )
    assert await get_async_db().conc_pair.count_documents({}) == 0


async def test_a_post_save_receiver_saves_again_while_another_task_waits(
    async_alias, command_log
):
    """A post_save receiver saving its document again, while another task's
    save of it waits for its turn, queues behind that save: no error, every
    change stored."""
    pair = await ConcPair(a=0, b=0).async_save()
    resaved = []

    async def stamp(sender, document, **kwargs):
        if not resaved:
            resaved.append(True)
            await asyncio.sleep(0)  # the waiting save gets its turn first
            document.note = "stamped"
            await document.async_save()

    signals.post_save.connect(stamp, sender=ConcPair)
    try:
        pair.a = 1
        first = asyncio.ensure_future(pair.async_save())
        await asyncio.sleep(0)
        pair.b = 2
        await asyncio.gather(first, pair.async_save())
    finally:
        signals.post_save.disconnect(stamp, sender=ConcPair)
    raw = await get_async_db().conc_pair.find_one({"_id": pair.pk})
    assert raw == {"_id": pair.pk, "a": 1, "b": 2, "note": "stamped"}


async def _yield_a_while(sender, document, **kwargs):
    for _ in range(5):
        await asyncio.sleep(0)


@pytest.mark.parametrize("stored", [False, True], ids=["new", "loaded"])
async def test_a_delete_begun_after_a_save_waits_for_its_write(async_alias, stored):
    """A delete of an instance begun while a save of it is in flight (another
    task's, here held up by a coroutine pre_save receiver) waits for the save's
    write: the save's insert or upsert cannot come after the delete and store
    the document again (a loaded one as only the fields the save sent)."""
    collection = get_async_db().conc_pair
    signals.pre_save.connect(_yield_a_while, sender=ConcPair)
    try:
        for i in range(3):
            if stored:
                pair = ConcPair(a=i, b=i)
                await ConcPair.objects.async_insert(pair)
                pair.a = 100 + i
            else:
                pair = ConcPair(a=i)
            await asyncio.gather(pair.async_save(), pair.async_delete())
            assert pair.pk is not None
            assert await collection.find_one({"_id": pair.pk}) is None
    finally:
        signals.pre_save.disconnect(_yield_a_while, sender=ConcPair)
    assert "_async_save_turns" not in pair.__dict__  # none in flight any more


async def test_a_pre_save_receiver_may_delete_its_document(async_alias):
    """A pre_save receiver deleting the document being saved (in the saving
    task) does not wait for that save: deleted, then written, as in MongoEngine."""
    pair = await ConcPair(a=1).async_save()

    async def delete_it(sender, document, **kwargs):
        await document.async_delete()

    signals.pre_save.connect(delete_it, sender=ConcPair)
    try:
        pair.a = 2
        await pair.async_save()
    finally:
        signals.pre_save.disconnect(delete_it, sender=ConcPair)
    raw = await get_async_db().conc_pair.find_one({"_id": pair.pk})
    assert raw == {"_id": pair.pk, "a": 2}  # MongoEngine's upsert of the change


async def test_a_pre_delete_receiver_may_save_its_document(async_alias):
    """A pre_delete receiver saving the document being deleted: saved, then
    deleted (the delete waits for no save of its own task)."""
    pair = await ConcPair(a=1).async_save()

    async def save_it(sender, document, **kwargs):
        document.note = "archived"
        await document.async_save()

    signals.pre_delete.connect(save_it, sender=ConcPair)
    try:
        await pair.async_delete()
    finally:
        signals.pre_delete.disconnect(save_it, sender=ConcPair)
    assert await get_async_db().conc_pair.count_documents({}) == 0
    assert "_async_save_turns" not in pair.__dict__


async def _reload_it(pair: ConcPair, i: int) -> None:
    await pair.async_reload()


async def _modify_it(pair: ConcPair, i: int) -> None:
    assert await pair.async_modify(inc__a=1, set__b=i)


async def _update_it(pair: ConcPair, i: int) -> None:
    await pair.async_update(inc__a=1, set__b=i)


# What program order gives after a save of a=100+i, then the call.
_AFTER_THE_SAVE = {
    "reload": (_reload_it, lambda i, b: {"a": 100 + i, "b": b}),
    "modify": (_modify_it, lambda i, b: {"a": 101 + i, "b": i}),
    "update": (_update_it, lambda i, b: {"a": 101 + i, "b": i}),
}


@pytest.mark.parametrize("stored", [False, True], ids=["new", "loaded"])
@pytest.mark.parametrize("method", sorted(_AFTER_THE_SAVE))
async def test_a_reload_modify_or_update_begun_after_a_save_waits_for_its_write(
    async_alias, method, stored
):
    """A reload, modify or update of an instance begun while a save of it is
    in flight (held up by a coroutine pre_save receiver) waits for the save's
    write: it reads (or changes) what the save wrote, and the instance and the
    database agree, as in program order (no silently diverged instance whose
    next save sends nothing)."""
    call, expected = _AFTER_THE_SAVE[method]
    collection = get_async_db().conc_pair
    signals.pre_save.connect(_yield_a_while, sender=ConcPair)
    try:
        for i in range(3):
            if stored:
                pair = ConcPair(a=i, b=-1)
                await ConcPair.objects.async_insert(pair)
            else:
                pair = ConcPair(b=-1)
            pair.a = 100 + i
            await asyncio.gather(pair.async_save(), call(pair, i))
            raw = await collection.find_one({"_id": pair.pk}, {"_id": 0})
            assert raw == expected(i, -1)
            if method != "update":  # which, as MongoEngine's, reloads nothing
                assert {"a": pair.a, "b": pair.b} == raw
            assert pair._get_changed_fields() == []
    finally:
        signals.pre_save.disconnect(_yield_a_while, sender=ConcPair)
    assert "_async_save_turns" not in pair.__dict__  # none in flight any more


async def test_a_cancelled_waiting_reload_lets_the_next_save_go(
    async_alias, command_log
):
    """A reload cancelled while it waits for the save in flight takes no
    turn and releases none: the save and a later one go, and end."""
    pair = await ConcPair(a=0).async_save()
    command_log.clear()
    held = asyncio.Event()
    entered = asyncio.Event()

    async def hold(sender, document, **kwargs):
        entered.set()
        await held.wait()

    signals.pre_save.connect(hold, sender=ConcPair)
    try:
        pair.a = 1
        first = asyncio.ensure_future(pair.async_save())
        await entered.wait()
        reload = asyncio.ensure_future(pair.async_reload())
        for _ in range(5):
            await asyncio.sleep(0)
        assert not reload.done()  # waiting for the save's turn, sending nothing
        assert command_log.count() == 0
        reload.cancel()
        with pytest.raises(asyncio.CancelledError):
            await reload
        pair.b = 2
        second = asyncio.ensure_future(pair.async_save())
        for _ in range(5):
            await asyncio.sleep(0)
        assert not second.done()  # the first save still holds its turn
        held.set()
        await asyncio.wait_for(asyncio.gather(first, second), 10)
    finally:
        signals.pre_save.disconnect(hold, sender=ConcPair)
    assert command_log.names == ["update"]  # the first save sent b too
    raw = await get_async_db().conc_pair.find_one({"_id": pair.pk})
    assert raw == {"_id": pair.pk, "a": 1, "b": 2}
    assert "_async_save_turns" not in pair.__dict__
    await asyncio.wait_for(pair.async_reload(), 10)  # no turn left behind


@pytest.mark.parametrize("method", ["reload", "modify", "update"])
async def test_a_pre_save_receiver_may_reload_modify_or_update_its_document(
    async_alias, method
):
    """A pre_save receiver reloading, modifying or updating the document being
    saved (in the saving task) does not wait for that save: it runs first, then
    the save's write, as in MongoEngine."""
    pair = await ConcPair(a=1, b=1).async_save()

    async def call_it(sender, document, **kwargs):
        if method == "reload":
            await document.async_reload()  # drops the change, as MongoEngine
        elif method == "modify":
            await document.async_modify(set__b=2)
        else:
            await document.async_update(set__b=2)

    signals.pre_save.connect(call_it, sender=ConcPair)
    try:
        pair.a = 5
        pair.note = "n"
        await asyncio.wait_for(pair.async_save(), 10)
    finally:
        signals.pre_save.disconnect(call_it, sender=ConcPair)
    raw = await get_async_db().conc_pair.find_one({"_id": pair.pk}, {"_id": 0})
    expected = {
        "reload": {"a": 1, "b": 1},
        "modify": {"a": 1, "b": 2},  # modify reloads: the changes are gone too
        "update": {"a": 5, "b": 2, "note": "n"},
    }
    assert raw == expected[method]
    assert "_async_save_turns" not in pair.__dict__
