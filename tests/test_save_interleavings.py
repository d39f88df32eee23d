"""Saves of one instance from several tasks, while other tasks change it, keep
every change: none is reported saved that was not stored.

Hypothesis draws a schedule: saver tasks (how long each waits, in event loop
turns, before each of its saves, whether they cascade to a referenced document,
and their ``save_condition``: a save it refuses keeps its changes), a changer
task (its edits: top-level fields, fields of embedded documents, also nested
ones, list items, appends, pops and inserts, map values, values set to None or
emptied, the referenced document, each after some turns), a reader task (reloads
of some fields or all, modifies, also conditional, updates then reloads, a
delete), saves
cancelled at some point, and what the ``post_save`` receivers do (turns or
milliseconds they await; some change a field themselves, a change MongoEngine's
save clears). The schedule runs on one instance, new or loaded, of a Document or
a DynamicDocument; once every task ended, one more save must leave in the
database (read with PyMongo) exactly what the instance (and the referenced
document) holds. A change reported saved but not stored, one dropped from the
changes, or a stale value sent again makes them differ. The drawn turns are the
interleaving (the server's replies add some chance: a failure may not replay,
and Hypothesis then reports it as flaky, a failure all the same).

To extend it: add an edit to ``EDITS``, a read to ``READS``, or a field to
the models.

The schedule's final check cannot see a stale value sent again that equals
what the instance holds; ``test_a_read_during_post_save_in_every_shape``
checks that case, with another writer, for every shape of change.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

import pytest
from hypothesis import HealthCheck, given
from hypothesis import strategies as st

from fuzz_budget import budget
from mongoengine_async import (
    Document,
    DoesNotExist,
    DynamicDocument,
    EmbeddedDocument,
    EmbeddedDocumentField,
    IntField,
    InvalidDocumentError,
    ListField,
    MapField,
    NotUniqueError,
    ReferenceField,
    SaveConditionError,
    async_run_in_transaction,
    signals,
)


class SiInner(EmbeddedDocument):
    z = IntField()


class SiPart(EmbeddedDocument):
    x = IntField()
    y = IntField()
    inner = EmbeddedDocumentField(SiInner)


class SiRef(Document):
    """Referenced by SiDoc: saved by its cascade (``cascade=True`` saves)."""

    x = IntField()


class SiDoc(Document):
    ref = ReferenceField(SiRef)
    a = IntField()
    b = IntField(db_field="bb")
    e = EmbeddedDocumentField(SiPart)
    es = ListField(EmbeddedDocumentField(SiPart))
    tags = ListField(IntField())
    m = MapField(EmbeddedDocumentField(SiPart))
    mark = IntField()  # set by post_save receivers only (cleared, as MongoEngine)


class SiDynamic(DynamicDocument):
    pass


def part(value: int) -> SiPart:
    return SiPart(x=value, y=value, inner=SiInner(z=value))


def initial() -> dict[str, Any]:
    return {
        "a": 0,
        "b": 0,
        "e": part(0),
        "es": [part(0)],
        "tags": [],
        "m": {"k1": part(0)},
    }


# The changer's edits, by name: each sets ``value`` somewhere in the document.
EDITS: dict[str, Callable[[Any, int], None]] = {
    "a": lambda d, v: setattr(d, "a", v),
    "b": lambda d, v: setattr(d, "b", v),
    "e.x": lambda d, v: d.e and setattr(d.e, "x", v),
    "e.inner.z": lambda d, v: d.e and d.e.inner and setattr(d.e.inner, "z", v),
    "e=": lambda d, v: setattr(d, "e", part(v)),
    "es[0].y": lambda d, v: d.es and setattr(d.es[0], "y", v),
    "es[0].inner=": lambda d, v: d.es and setattr(d.es[0], "inner", SiInner(z=v)),
    "es.append": lambda d, v: d.es.append(part(v)),
    "tags.append": lambda d, v: d.tags.append(v),
    "tags=": lambda d, v: setattr(d, "tags", [v]),
    "m.k1.x": lambda d, v: "k1" in d.m and setattr(d.m["k1"], "x", v),
    "m.k1.inner.z": lambda d, v: (
        "k1" in d.m and d.m["k1"].inner and setattr(d.m["k1"].inner, "z", v)
    ),
    "m.k2=": lambda d, v: d.m.__setitem__("k2", part(v)),
    # Removals, falsy values and whole replacements.
    "a=None": lambda d, v: setattr(d, "a", None),
    "b=0": lambda d, v: setattr(d, "b", 0),
    "e=None": lambda d, v: setattr(d, "e", None),
    "e.inner=None": lambda d, v: d.e and setattr(d.e, "inner", None),
    "es.pop": lambda d, v: d.es and d.es.pop(),
    "es[0]=": lambda d, v: d.es and d.es.__setitem__(0, part(v)),
    "es.insert": lambda d, v: d.es.insert(0, part(v)),
    "es=": lambda d, v: setattr(d, "es", [part(v), part(v + 1)]),
    "tags.pop": lambda d, v: d.tags and d.tags.pop(0),
    "tags=[]": lambda d, v: setattr(d, "tags", []),
    "m.pop": lambda d, v: d.m.pop("k1", None),
    "m=": lambda d, v: setattr(d, "m", {"k3": part(v)}),
}


# What a reader task does: reload some fields, all of them, or modify.
async def reload(document: Any, *fields: str) -> None:
    """``async_reload(*fields)``; of a DynamicDocument, then also set to None
    the reloaded dynamic lists and maps the reload left as they were: absent from the
    database, MongoEngine's reload keeps their values (an ``es`` emptied,
    unset by a save, then appended to) and drops their changes, so that no
    save sends them (MongoEngine's, on a sync alias too): the final check
    would see them differ whatever the interleaving."""
    dynamic = getattr(document, "_dynamic_fields", {})
    before = {name: document._data.get(name) for name in dynamic}
    await document.async_reload(*fields)
    for name, value in before.items():  # (a list or dict: reloaded, a new one)
        if (
            (not fields or name in fields)
            and isinstance(value, (list, dict))
            and document._data.get(name) is value
        ):
            setattr(document, name, None)


async def update_then_reload(document: Any, *fields: str) -> None:
    """``async_update`` (which leaves the instance as it was), then a reload
    of what it changed: the instance holds what is stored again."""
    if document.pk is None:
        return  # (not saved yet: MongoEngine's update raises OperationError)
    await document.async_update(set__a=5, set__mark=3)
    await reload(document, "a", *fields)


READS: dict[str, Callable[[Any], Awaitable[Any]]] = {
    "reload a": lambda d: reload(d, "a"),
    "reload e, tags": lambda d: reload(d, "e", "tags"),
    "reload": lambda d: reload(d),
    "reload b, es, m": lambda d: reload(d, "b", "es", "m"),
    "modify": lambda d: d.async_modify(inc__b=1),
    "modify if": lambda d: d.async_modify({"b__lt": 500}, set__a=7, inc__b=1),
    "update, reload a": lambda d: update_then_reload(d),
    "update, reload": lambda d: update_then_reload(d, "b", "e", "es", "m", "tags"),
    # (The saves after it store only their changes: the run's end inserts the
    # instance again, which must then hold all it had.)
    "delete": lambda d: d.async_delete(),
}
# A save's condition: none, or one that holds until the changer's values
# (0 to 999) are stored. A save it refused keeps its changes for the next.
CONDITIONS: list[dict[str, Any] | None] = [None, None, {"b__lt": 500}, {"a__ne": 998}]

turns = st.integers(min_value=0, max_value=4)
# "ref.x": a change of the document SiDoc references (a reload leaves
# SiDoc.ref a proxy: the changer keeps the instance it referenced first).
edits = st.tuples(
    turns, st.sampled_from([*sorted(EDITS), "ref.x"]), st.integers(0, 999)
)
# A receiver: the turns it awaits, whether it also awaits a few milliseconds
# (as long as a reader's round trip), and whether it then sets ``mark``.
receivers = st.tuples(turns, st.booleans(), st.booleans())
schedules = st.fixed_dictionaries(
    {
        # Each saver: the turns before each of its saves, whether they
        # cascade (to the referenced document, for SiDoc), and their condition.
        "savers": st.lists(
            st.tuples(
                st.lists(turns, min_size=1, max_size=4),
                st.booleans(),
                st.sampled_from(range(len(CONDITIONS))),
            ),
            min_size=2,
            max_size=4,
        ),
        "edits": st.lists(edits, min_size=1, max_size=15),
        "receivers": st.lists(receivers, min_size=1, max_size=6),
        "reads": st.lists(st.tuples(turns, st.sampled_from(sorted(READS))), max_size=3),
        # Cancel the saver of that index (modulo their number) after the turns.
        "cancels": st.lists(st.tuples(turns, st.integers(0, 3)), max_size=2),
    }
)

# Per parametrized case; more with RANDOM_INTERLEAVINGS_EXAMPLES=500
# (see fuzz_budget.py).
EXAMPLES = budget(
    "interleavings",
    25,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


async def pause(count: int) -> None:
    for _ in range(count):
        await asyncio.sleep(0)


class Receivers:
    """A ``post_save`` receiver playing the drawn behaviours, in turn."""

    def __init__(self) -> None:
        self.plays: Iterator[tuple[int, bool, bool]] = iter(())

    async def __call__(self, sender: Any, document: Any, **kwargs: Any) -> None:
        waits, slow, marks = next(self.plays, (0, False, False))
        await pause(waits)
        if slow:
            await asyncio.sleep(0.003)
        if marks:
            document.mark = waits


@pytest.fixture(params=[False, True], ids=["no-receiver", "receiver"])
def receiver(request: pytest.FixtureRequest) -> Iterator[Receivers | None]:
    if not request.param:
        yield None
        return
    playing = Receivers()
    for model in (SiDoc, SiDynamic):
        signals.post_save.connect(playing, sender=model)
    try:
        yield playing
    finally:
        for model in (SiDoc, SiDynamic):
            signals.post_save.disconnect(playing, sender=model)


def comparable(son: dict[str, Any]) -> dict[str, Any]:
    """``son`` without the keys a save may leave out, as MongoEngine's save
    does: an emptied list or map is unset (a falsy value equal to the
    default), and so is a dynamic field set to None (which ``to_mongo`` keeps)."""
    return {
        key: value
        for key, value in son.items()
        if key not in ("mark", "_cls") and value is not None and value not in ([], {})
    }


async def play(model: type, new: bool, schedule: dict, receiver: Any) -> None:
    if receiver is not None:
        receiver.plays = itertools.cycle(schedule["receivers"])
    document = model(**initial())
    referenced = await SiRef(x=0).async_save()
    if model is SiDoc:
        document.ref = referenced
    if not new:
        await document.async_save()

    async def saver(waits: list[int], cascade: bool, condition: int) -> None:
        for count in waits:
            await pause(count)
            with contextlib.suppress(SaveConditionError):
                await document.async_save(
                    cascade=cascade, save_condition=CONDITIONS[condition]
                )

    async def changer() -> None:
        for count, name, value in schedule["edits"]:
            await pause(count)
            if name == "ref.x":
                referenced.x = value
            else:
                EDITS[name](document, value)

    half_reloaded = deleted = False

    async def reader() -> None:
        nonlocal half_reloaded, deleted
        for count, name in schedule["reads"]:
            await pause(count)
            if name == "delete":
                if document.pk is not None:
                    await READS[name](document)
                    deleted = True
                continue
            # Not saved yet (no id, or no document).
            with contextlib.suppress(
                DoesNotExist, InvalidDocumentError, AttributeError
            ):
                try:
                    await READS[name](document)
                except KeyError:
                    # MongoEngine's modify of a DynamicDocument with a dynamic
                    # field not stored (``mark``, an emptied list) raises
                    # KeyError, the instance reloaded up to that field (on a
                    # sync alias too): then only the run's end is checked.
                    if model is not SiDynamic or not name.startswith("modify"):
                        raise
                    half_reloaded = True

    savers = [asyncio.ensure_future(saver(*drawn)) for drawn in schedule["savers"]]

    async def canceller() -> None:
        for count, index in schedule["cancels"]:
            await pause(count)
            savers[index % len(savers)].cancel()

    ended = await asyncio.gather(
        changer(), reader(), canceller(), *savers, return_exceptions=True
    )
    for result in ended:
        if isinstance(result, BaseException) and not isinstance(
            result, asyncio.CancelledError
        ):
            raise result
    if deleted:
        await model.objects(pk=document.pk).async_delete()
        await document.async_save(force_insert=True)
    else:
        await document.async_save()
    stored = await model._get_collection().find_one({"_id": document.pk})
    if half_reloaded:
        return
    assert comparable(stored) == comparable(document.to_mongo().to_dict()), schedule
    if model is SiDoc:
        await referenced.async_save()
        stored = await SiRef._get_collection().find_one({"_id": referenced.pk})
        assert stored == referenced.to_mongo().to_dict(), schedule


@pytest.mark.parametrize("model", [SiDoc, SiDynamic])
@pytest.mark.parametrize("new", [False, True], ids=["loaded", "new"])
@EXAMPLES
@given(schedule=schedules)
async def test_interleaved_saves_store_every_change(
    async_alias: str, receiver: Receivers | None, model: type, new: bool, schedule: dict
) -> None:
    await play(model, new, schedule, receiver)


# A change another task makes inside a value (before a read of the document
# during a save's post_save receivers, and after it), by shape: the path it
# changes before the read (then written by another writer), the path it changes
# after, and the field a partial reload reads.
SHAPES: dict[
    str, tuple[str, str, Callable[[Any], None], Callable[[Any], None], str]
] = {
    "e": (
        "e.x",
        "e.y",
        lambda d: setattr(d.e, "x", 7),
        lambda d: setattr(d.e, "y", 5),
        "e",
    ),
    "e.inner": (
        "e.inner.z",
        "e.y",
        lambda d: setattr(d.e.inner, "z", 7),
        lambda d: setattr(d.e, "y", 5),
        "e",
    ),
    "es": (
        "es.0.x",
        "es.0.y",
        lambda d: setattr(d.es[0], "x", 7),
        lambda d: setattr(d.es[0], "y", 5),
        "es",
    ),
    "m": (
        "m.k1.x",
        "m.k1.y",
        lambda d: setattr(d.m["k1"], "x", 7),
        lambda d: setattr(d.m["k1"], "y", 5),
        "m",
    ),
}
SHAPE_READS: dict[str, Callable[[Any, str], Awaitable[Any]]] = {
    "reload": lambda d, field: d.async_reload(),
    "reload-field": lambda d, field: d.async_reload(field),
    "reload-other": lambda d, field: d.async_reload("a"),
    "modify": lambda d, field: d.async_modify(inc__a=1),
}


def _at(raw: Any, path: str) -> Any:
    for key in path.split("."):
        raw = raw[int(key)] if isinstance(raw, list) else raw[key]
    return raw


@pytest.mark.parametrize("model", [SiDoc, SiDynamic])
@pytest.mark.parametrize("phase", ["while-written", "post-save"])
async def test_a_read_during_post_save_in_every_shape(
    async_alias: str, model: type, phase: str
) -> None:
    """Another task changes a value inside an embedded document (nested, in a
    list, in a map, of a DynamicDocument) while the save's write is awaited
    or while its post_save receiver is, then reads the document: the next save
    sends no value the read replaced (another writer's newer one stays) and
    sends the change made after the read."""
    resume: asyncio.Event | None = None

    async def post_save(sender: Any, document: Any, **kwargs: Any) -> None:
        if resume is not None:
            await resume.wait()

    signals.post_save.connect(post_save, sender=model)
    try:
        for shape, read in itertools.product(SHAPES, SHAPE_READS):
            before, after, change_before, change_after, field = SHAPES[shape]
            document = await model(**initial()).async_save()
            resume = asyncio.Event()
            document.a = 1
            saving = asyncio.ensure_future(document.async_save())
            if phase == "while-written":
                await asyncio.sleep(0)  # (the write is on its way)
                change_before(document)
            while not resume.is_set() and not saving.done():
                if type(document._changed_fields).__name__ == "_Watched":
                    break  # its post_save receiver awaits
                await asyncio.sleep(0.001)
            if phase == "post-save":
                change_before(document)
            await SHAPE_READS[read](document, field)
            change_after(document)
            resume.set()
            await saving
            resume = None
            collection = model._get_collection()
            await collection.update_one({"_id": document.pk}, {"$set": {before: 99}})
            await document.async_save()
            stored = await collection.find_one({"_id": document.pk})
            # A reload of another field keeps the change (as MongoEngine's).
            expected = 7 if read == "reload-other" else 99
            assert _at(stored, before) == expected, (shape, read)
            assert _at(stored, after) == 5, (shape, read)
    finally:
        signals.post_save.disconnect(post_save, sender=model)


async def cascading_document() -> SiDoc:
    """A stored document whose ``async_save(cascade=True)`` saves its
    reference (changed: the cascade saves only a changed document)."""
    referenced = await SiRef(x=0).async_save()
    document = await SiDoc(**initial(), ref=referenced).async_save()
    referenced.x = 1
    return document


async def cascade_beside(document: SiDoc, receiver: Any, other: Any) -> Any:
    """``document.async_save(cascade=True)`` beside the coroutine ``other``,
    ``receiver`` connected to the reference's ``pre_save`` (it runs in the
    cascade, the save's steps after its write); ``other``'s result."""
    signals.pre_save.connect(receiver, sender=SiRef)
    try:
        _, result = await asyncio.gather(document.async_save(cascade=True), other)
    finally:
        signals.pre_save.disconnect(receiver, sender=SiRef)
    return result


async def save_taking_its_changes(document: SiDoc) -> asyncio.Task[Any]:
    """A save of ``document`` (with no ``post_save`` receiver) in a task of its
    own, once its write has taken the document's changes."""
    saving = asyncio.create_task(document.async_save())
    while document._changed_fields:
        await asyncio.sleep(0)
    return saving


async def test_changes_after_a_save_sending_nothing_during_a_cascade_are_kept(
    async_alias: str,
) -> None:
    """While a save's cascade runs (its steps after the write), a second save
    that finds nothing to send ends at once and clears the changes, as
    MongoEngine's does; a change made after that is not the first save's: its
    end keeps it for the next save (it cleared it: the change was lost)."""
    document = await cascading_document()
    cascading, changed = asyncio.Event(), asyncio.Event()

    async def receiver(sender: Any, document: Any, **kwargs: Any) -> None:
        cascading.set()
        await changed.wait()

    async def other_task() -> None:
        await cascading.wait()
        await document.async_save()  # nothing to send, no post_save to await
        document.a = 5
        changed.set()

    await cascade_beside(document, receiver, other_task())
    assert document._get_changed_fields() == ["a"]
    await document.async_save()
    stored = await SiDoc._get_collection().find_one({"_id": document.pk})
    assert stored["a"] == 5


@pytest.mark.parametrize("changed_meanwhile", [False, True])
async def test_a_save_sent_during_a_cascade_is_not_sent_again(
    async_alias: str, changed_meanwhile: bool
) -> None:
    """While a save's cascade runs (its steps after the write), a second save
    sends a change, and lands (a field changed while its write is awaited, or
    not): that change is saved, not one the first save's end keeps for the
    next save (it was listed again, and the next save sent its value again,
    overwriting another writer's since)."""
    document = await cascading_document()
    cascading, saved = asyncio.Event(), asyncio.Event()

    async def receiver(sender: Any, document: Any, **kwargs: Any) -> None:
        cascading.set()
        await saved.wait()

    async def other_task() -> None:
        await cascading.wait()
        document.a = 5
        saving = await save_taking_its_changes(document)
        if changed_meanwhile:
            document.b = 2
        await saving
        saved.set()

    await cascade_beside(document, receiver, other_task())
    assert document._get_changed_fields() == (["bb"] if changed_meanwhile else [])
    collection = SiDoc._get_collection()
    await collection.update_one({"_id": document.pk}, {"$set": {"a": 9}})
    document.b = 1
    await document.async_save()
    stored = await collection.find_one({"_id": document.pk})
    assert (stored["a"], stored["bb"]) == (9, 1)


@pytest.mark.parametrize("meanwhile", ["", "b", "e"])
async def test_a_cascade_change_after_a_save_during_it_is_cleared(
    async_alias: str, meanwhile: str
) -> None:
    """While a save's cascade runs, a second save (nothing follows it) sends
    a change and lands (a field, or one of an embedded document, changed
    while its write is awaited, or not); then a cascade receiver, in the
    first save's task, changes the document: that change is cleared as the
    first save ends, as MongoEngine's save clears its cascade's (it was kept
    listed, and the next save sent it, overwriting another writer's since);
    the second save's is not listed again, those made meanwhile are kept."""
    document = await cascading_document()
    cascading, saved = asyncio.Event(), asyncio.Event()

    async def receiver(sender: Any, document: Any, **kwargs: Any) -> None:
        cascading.set()
        await saved.wait()
        parent.mark = 7

    async def other_task() -> None:
        await cascading.wait()
        parent.a = 5
        saving = await save_taking_its_changes(parent)
        if meanwhile == "b":
            parent.b = 2
        elif meanwhile == "e":
            parent.e.x = 3
        await saving
        saved.set()

    parent = document
    await cascade_beside(document, receiver, other_task())
    kept = {"": [], "b": ["bb"], "e": ["e.x"]}[meanwhile]
    assert document._get_changed_fields() == kept
    collection = SiDoc._get_collection()
    await collection.update_one({"_id": document.pk}, {"$set": {"a": 9, "mark": 1}})
    await document.async_save()
    stored = await collection.find_one({"_id": document.pk})
    assert (stored["a"], stored["mark"]) == (9, 1)
    assert (stored["bb"], stored["e"]["x"]) == (
        2 if meanwhile == "b" else 0,
        3 if meanwhile == "e" else 0,
    )


async def test_a_save_landing_after_a_cascade_ended_leaves_no_watching_list(
    async_alias: str,
) -> None:
    """A second save (nothing follows it) takes the list a cascade watches,
    and lands once that cascade's save ended (its update held behind another
    writer's transaction): the document keeps a plain list, not the ended
    save's watching one (which would note every change of other tasks from
    then on, and hold that save's task)."""
    document = await cascading_document()
    cascading, taken = asyncio.Event(), asyncio.Event()
    client = SiDoc._get_collection().database.client
    collection = SiDoc._get_collection()

    async def receiver(sender: Any, document: Any, **kwargs: Any) -> None:
        cascading.set()
        await taken.wait()

    async with client.start_session() as holder:
        await holder.start_transaction()
        await collection.update_one(
            {"_id": document.pk}, {"$set": {"b": 1}}, session=holder
        )

        async def other_task() -> asyncio.Task[Any]:
            await cascading.wait()
            document.a = 5
            saving = await save_taking_its_changes(document)
            taken.set()
            return saving

        saving = await cascade_beside(document, receiver, other_task())
        assert not saving.done()  # (held behind the transaction's write)
        await holder.abort_transaction()
    await saving
    assert type(document._changed_fields) is list
    assert document._get_changed_fields() == []
    assert (await collection.find_one({"_id": document.pk}))["a"] == 5


async def test_changes_in_embedded_documents_a_reload_put_during_a_save_are_kept(
    async_alias: str,
) -> None:
    """A reload while a save's post_save receivers run puts new embedded
    documents in the instance; a change made in one of them then is not the
    save's (it sent none of it): the save's end keeps it for the next save
    (it cleared it, and the next save sent nothing: the change was lost)."""
    document = await SiDoc(**initial()).async_save()
    document.a = 1
    reloaded, changed = asyncio.Event(), asyncio.Event()

    async def receiver(sender: Any, document: Any, **kwargs: Any) -> None:
        reloaded.set()
        await changed.wait()

    async def other_task() -> None:
        await reloaded.wait()
        await document.async_reload()
        document.e.inner.z = 5
        document.m["k1"].x = 6
        document.es[0].y = 7
        changed.set()

    signals.post_save.connect(receiver, sender=SiDoc)
    try:
        await asyncio.gather(document.async_save(), other_task())
    finally:
        signals.post_save.disconnect(receiver, sender=SiDoc)
    assert sorted(document._get_changed_fields()) == ["e.inner.z", "es.0.y", "m.k1.x"]
    await document.async_save()
    stored = await SiDoc._get_collection().find_one({"_id": document.pk})
    assert stored["e"]["inner"]["z"] == 5
    assert stored["m"]["k1"]["x"] == 6
    assert stored["es"][0]["y"] == 7


async def test_a_change_given_back_then_superseded_by_its_parent(
    async_alias: str,
) -> None:
    """A change inside an embedded document that an aborted transaction's save
    gave back (``e.inner.z``, in the document's own list), then that embedded
    document removed (``e.inner = None``): the next save removes it, as
    MongoEngine's does. It raised AttributeError in MongoEngine's clearing
    (walking the None), or, both paths sent, a conflict on the server."""
    document = await SiDoc(**initial()).async_save()
    document.e.inner.z = 2
    with pytest.raises(RuntimeError, match="abort"):
        async with async_run_in_transaction():
            await document.async_save()
            raise RuntimeError("abort")
    document.e.inner = None
    document.es[0].inner.z = 3
    await document.async_save()
    stored = await SiDoc._get_collection().find_one({"_id": document.pk})
    assert "inner" not in stored["e"]
    assert stored["es"][0]["inner"]["z"] == 3
    assert document._get_changed_fields() == []


# What replaces ``e`` while a save's write is awaited (a dict or an int: a
# DynamicDocument's dynamic field only).
REPLACEMENTS: dict[str, Callable[[], Any]] = {
    "None": lambda: None,
    "part": lambda: part(9),
    "dict": lambda: {"x": 9},
    "int": lambda: 9,
}
REPLACED = [
    pytest.param(model, replacement, id=f"{model.__name__}-{replacement}")
    for model in (SiDoc, SiDynamic)
    for replacement in REPLACEMENTS
    if model is SiDynamic or replacement in ("None", "part")
]


@pytest.mark.parametrize("how", ["landed", "refused", "cancelled"])
@pytest.mark.parametrize(("model", "replacement"), REPLACED)
async def test_a_value_set_whole_then_changed_within_then_replaced_during_a_save(
    async_alias: str, model: type, replacement: str, how: str
) -> None:
    """``e`` set whole, then a change inside it (``e.inner = None``, which
    its new embedded document holds), and a save takes both; while its write
    is awaited, ``e`` is replaced (set to None, another embedded document, or
    for a DynamicDocument a dict or a number). The save's end (the write
    landed, refused by its condition, or the save cancelled) leaves ``e``
    changed whole, not also ``e.inner``: the next save stores what the
    document holds. Both were left listed (the change inside under a value
    holding nothing treated as the document's own): MongoEngine's clearing
    raised AttributeError walking the None, and the next save sent both
    paths, refused by the server ("Updating the path 'e.inner' would create
    a conflict at 'e'")."""
    document = await model(**initial()).async_save()
    collection = model._get_collection()
    document.e = part(1)
    document.e.inner = None
    condition = None
    if how == "refused":
        await collection.update_one({"_id": document.pk}, {"$set": {"a": 998}})
        condition = {"a__ne": 998}
    saving = asyncio.ensure_future(document.async_save(save_condition=condition))
    while document._changed_fields:  # (until its write took them)
        await asyncio.sleep(0)
    document.e = REPLACEMENTS[replacement]()
    if how == "cancelled":
        saving.cancel()
    with contextlib.suppress(asyncio.CancelledError, SaveConditionError):
        await saving
    if how == "refused":  # (the condition holds again)
        await collection.update_one({"_id": document.pk}, {"$set": {"a": 0}})
    await document.async_save()  # (after the cancelled write settled)
    assert document._get_changed_fields() == []
    stored = await collection.find_one({"_id": document.pk})
    assert comparable(stored) == comparable(document.to_mongo().to_dict())
    assert stored.get("e") == document.to_mongo().to_dict().get("e")


class SiUnique(Document):
    """A save made to fail: ``u`` set to another document's."""

    u = IntField(unique=True)
    e = EmbeddedDocumentField(SiPart)
    es = ListField(EmbeddedDocumentField(SiPart))
    m = MapField(EmbeddedDocumentField(SiPart))


# A change inside an embedded document (set on the loaded document), where
# MongoEngine's bookkeeping has it (the embedded document, its path there),
# and a change superseding it (the embedded document replaced or removed).
GIVEN_BACK: dict[
    str, tuple[Callable[[Any], Any], Callable[[Any], Any], Callable[[Any], Any]]
] = {
    "e.inner.z, e.inner=None": (
        lambda d: setattr(d.e.inner, "z", 2),
        lambda d: d.e.inner,
        lambda d: setattr(d.e, "inner", None),
    ),
    "e.inner.z, e.inner=new": (
        lambda d: setattr(d.e.inner, "z", 2),
        lambda d: d.e.inner,
        lambda d: setattr(d.e, "inner", SiInner(z=9)),
    ),
    "e.inner.z, e=None": (
        lambda d: setattr(d.e.inner, "z", 2),
        lambda d: d.e.inner,
        lambda d: setattr(d, "e", None),
    ),
    "es.1.x, es=new": (
        lambda d: setattr(d.es[1], "x", 2),
        lambda d: d.es[1],
        lambda d: setattr(d, "es", [part(9)]),
    ),
    "es.1.x, es.pop()": (
        lambda d: setattr(d.es[1], "x", 2),
        lambda d: d.es[1],
        lambda d: d.es.pop(),
    ),
    "es.1.x, es.pop(0)": (
        lambda d: setattr(d.es[1], "x", 2),
        lambda d: d.es[1],
        lambda d: d.es.pop(0),
    ),
    "es.1.x, es[1]=new": (
        lambda d: setattr(d.es[1], "x", 2),
        lambda d: d.es[1],
        lambda d: d.es.__setitem__(1, part(9)),
    ),
    "es.1.inner.z, es.1.inner=new": (
        lambda d: setattr(d.es[1].inner, "z", 2),
        lambda d: d.es[1].inner,
        lambda d: setattr(d.es[1], "inner", SiInner(z=9)),
    ),
    "m.k.x, m[k]=new": (
        lambda d: setattr(d.m["k"], "x", 2),
        lambda d: d.m["k"],
        lambda d: d.m.__setitem__("k", part(9)),
    ),
    "m.k.inner.z, m[k]=new": (
        lambda d: setattr(d.m["k"].inner, "z", 2),
        lambda d: d.m["k"].inner,
        lambda d: d.m.__setitem__("k", part(9)),
    ),
    "m.k.x, m.pop(k)": (
        lambda d: setattr(d.m["k"], "x", 2),
        lambda d: d.m["k"],
        lambda d: d.m.pop("k"),
    ),
    "m.k.x, m=new": (
        lambda d: setattr(d.m["k"], "x", 2),
        lambda d: d.m["k"],
        lambda d: setattr(d, "m", {"j": part(9)}),
    ),
}


@pytest.mark.parametrize("how", ["aborted transaction", "failed write"])
@pytest.mark.parametrize("shape", list(GIVEN_BACK))
async def test_changes_given_back_are_in_their_embedded_documents(
    async_alias: str, shape: str, how: str
) -> None:
    """A change inside an embedded document (in a list, in a map, nested)
    that a save gave back is back in that embedded document's own list of
    changes, as MongoEngine's bookkeeping has it (it was in the document's
    own list, by its path): the embedded document, replaced or removed
    afterwards, takes it away with it, and the next save stores what the
    document holds, as MongoEngine's save would."""
    change, holder, supersede = GIVEN_BACK[shape]
    await SiUnique(u=1).async_save()
    document = await SiUnique(
        u=2,
        e=part(0),
        es=[part(0), part(1)],
        m={"k": part(0), "l": part(1)},
    ).async_save()
    document = await SiUnique.objects.async_get(pk=document.pk)
    change(document)
    embedded = holder(document)
    if how == "aborted transaction":
        with pytest.raises(RuntimeError, match="abort"):
            async with async_run_in_transaction():
                await document.async_save()
                raise RuntimeError("abort")
    else:
        document.u = 1
        with pytest.raises(NotUniqueError):
            await document.async_save()
        document.u = 2
    assert embedded._changed_fields == [shape.split(",")[0].rsplit(".", 1)[1]]
    assert document._changed_fields == ([] if how == "aborted transaction" else ["u"])
    supersede(document)
    await document.async_save()
    assert document._get_changed_fields() == []
    stored = await SiUnique._get_collection().find_one({"_id": document.pk})
    assert stored == document.to_mongo().to_dict()


@pytest.mark.parametrize("fields", [(), ("es",), ("b", "es", "m")], ids=repr)
@pytest.mark.parametrize("stored_es", [None, []], ids=["never", "emptied"])
@pytest.mark.parametrize("phase", ["read", "turn"])
async def test_a_dynamic_field_set_while_a_reload_awaits_is_kept(
    async_alias: str,
    command_log: Any,
    fields: tuple[str, ...],
    stored_es: Any,
    phase: str,
) -> None:
    """A dynamic field the database lacks (never saved, or emptied and so
    unset) is set by another task while ``async_reload`` awaits its read, or
    its turn after a save in flight: the reload leaves the value, and the
    next save stores it. (MongoEngine's reload drops the changes of such a
    field made before it: that stays.)"""
    document = SiDynamic(b=1)
    if stored_es is not None:
        document.es = [part(1)]
        await document.async_save()
        document.es = stored_es
    await document.async_save()
    collection = SiDynamic._get_collection()
    assert "es" not in await collection.find_one({"_id": document.pk})
    # "read": as the reload's find is sent; "turn": as the write of a save
    # begun before the reload returns (the reload waits for it).
    command, hook = ("find", "started") if phase == "read" else ("update", "succeeded")

    def set_meanwhile(event: Any) -> None:
        if event.command_name == command:
            delattr(command_log, hook)  # (once)
            document.es = [part(735)]

    setattr(command_log, hook, set_meanwhile)
    saving = None
    if phase == "turn":
        document.b = 2
        saving = asyncio.ensure_future(document.async_save())
        await asyncio.sleep(0)  # (its write is on its way)
    await document.async_reload(*fields)
    if saving is not None:
        await saving
    assert document.es == [part(735)]
    await document.async_save()
    stored = await collection.find_one({"_id": document.pk})
    expected = {"x": 735, "y": 735, "inner": {"z": 735}, "_cls": "SiPart"}
    assert stored.get("es") == [expected]
