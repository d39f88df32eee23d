"""Saves of one instance from several tasks, while other tasks change it, keep
every change: none is reported saved that was not stored.

Hypothesis draws a schedule: saver tasks (how long each waits, in event loop
turns, before each of its saves), a changer task (its edits: top-level
fields, fields of embedded documents, also nested ones, list items and
appends, map values, each after some turns) and what the ``post_save``
receivers do (turns they await; some change a field themselves, a change
MongoEngine's save clears). The schedule runs on one instance, new or loaded,
of a Document or a DynamicDocument; once every task ended, one more save
must leave in the database (read with PyMongo) exactly what the instance
holds. A change reported saved but not stored, or one dropped from the
changes, makes them differ. The drawn turns are the interleaving: a failing
one shrinks to a short schedule.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mongoengine_async import (
    Document,
    DynamicDocument,
    EmbeddedDocument,
    EmbeddedDocumentField,
    IntField,
    ListField,
    MapField,
    signals,
)


class SiInner(EmbeddedDocument):
    z = IntField()


class SiPart(EmbeddedDocument):
    x = IntField()
    y = IntField()
    inner = EmbeddedDocumentField(SiInner)


class SiDoc(Document):
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
    "e.x": lambda d, v: setattr(d.e, "x", v),
    "e.inner.z": lambda d, v: setattr(d.e.inner, "z", v),
    "e=": lambda d, v: setattr(d, "e", part(v)),
    "es[0].y": lambda d, v: setattr(d.es[0], "y", v),
    "es[0].inner=": lambda d, v: setattr(d.es[0], "inner", SiInner(z=v)),
    "es.append": lambda d, v: d.es.append(part(v)),
    "tags.append": lambda d, v: d.tags.append(v),
    "tags=": lambda d, v: setattr(d, "tags", [v]),
    "m.k1.x": lambda d, v: setattr(d.m["k1"], "x", v),
    "m.k1.inner.z": lambda d, v: setattr(d.m["k1"].inner, "z", v),
    "m.k2=": lambda d, v: d.m.__setitem__("k2", part(v)),
}

turns = st.integers(min_value=0, max_value=4)
edits = st.tuples(turns, st.sampled_from(sorted(EDITS)), st.integers(0, 999))
# A receiver: the turns it awaits, and whether it then sets ``mark``.
receivers = st.tuples(turns, st.booleans())
schedules = st.fixed_dictionaries(
    {
        "savers": st.lists(
            st.lists(turns, min_size=1, max_size=4), min_size=2, max_size=4
        ),
        "edits": st.lists(edits, min_size=1, max_size=15),
        "receivers": st.lists(receivers, min_size=1, max_size=6),
    }
)

EXAMPLES = settings(
    max_examples=25,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


async def pause(count: int) -> None:
    for _ in range(count):
        await asyncio.sleep(0)


class Receivers:
    """A ``post_save`` receiver playing the drawn behaviours, in turn."""

    def __init__(self) -> None:
        self.plays: Iterator[tuple[int, bool]] = iter(())

    async def __call__(self, sender: Any, document: Any, **kwargs: Any) -> None:
        waits, marks = next(self.plays, (0, False))
        await pause(waits)
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
    return {key: value for key, value in son.items() if key not in ("mark", "_cls")}


async def play(model: type, new: bool, schedule: dict, receiver: Any) -> None:
    if receiver is not None:
        receiver.plays = itertools.cycle(schedule["receivers"])
    document = model(**initial())
    if not new:
        await document.async_save()

    async def saver(waits: list[int]) -> None:
        for count in waits:
            await pause(count)
            await document.async_save()

    async def changer() -> None:
        for count, name, value in schedule["edits"]:
            await pause(count)
            EDITS[name](document, value)

    await asyncio.gather(changer(), *map(saver, schedule["savers"]))
    await document.async_save()
    stored = await model._get_collection().find_one({"_id": document.pk})
    assert comparable(stored) == comparable(document.to_mongo().to_dict()), schedule


@pytest.mark.parametrize("model", [SiDoc, SiDynamic])
@pytest.mark.parametrize("new", [False, True], ids=["loaded", "new"])
@EXAMPLES
@given(schedule=schedules)
async def test_interleaved_saves_store_every_change(
    async_alias: str, receiver: Receivers | None, model: type, new: bool, schedule: dict
) -> None:
    await play(model, new, schedule, receiver)
