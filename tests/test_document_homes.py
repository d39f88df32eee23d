"""Where a class operates, once kept, follows the changes MongoEngine follows.

Each operation of a class on an async alias goes where the class operates now:
after ``meta["collection"]`` is set to another collection, as after a
``switch_db`` or a ``switch_collection``, the writes and reads that follow go
there, read back from the database.
"""

from __future__ import annotations

from typing import Any

from mongoengine.context_managers import switch_collection, switch_db

from mongoengine_async import (
    Document,
    StringField,
    async_switch_collection,
    async_switch_db,
    get_async_db,
)


class HmMoved(Document):
    """A class the test below moves to another collection."""

    meta = {"collection": "hm_before"}
    name = StringField()


async def _stored(collection: str) -> list[Any]:
    """The names stored in ``collection`` of the default alias, sorted."""
    return sorted(await get_async_db().get_collection(collection).distinct("name"))


async def test_a_class_moved_to_another_collection_writes_and_reads_there(
    async_alias: str,
) -> None:
    """``meta["collection"]`` set to another name (and the cached collection
    dropped, as MongoEngine needs) once the class has operated: the next save,
    query and delete go to the new collection, as MongoEngine's do."""
    await HmMoved(name="a").async_save()
    kept = HmMoved(name="b")
    await kept.async_save()  # (where the class operates is kept by now)
    assert [doc.name async for doc in HmMoved.objects.order_by("name")] == ["a", "b"]
    HmMoved._meta["collection"] = "hm_after"
    HmMoved._collection = None
    try:
        await HmMoved(name="c").async_save()
        await HmMoved(name="d").async_save()
        moved = [doc async for doc in HmMoved.objects.order_by("name")]
        assert [doc.name for doc in moved] == ["c", "d"]
        await moved[0].async_delete()
        assert HmMoved._get_collection().name == "hm_after"
    finally:
        HmMoved._meta["collection"] = "hm_before"
        HmMoved._collection = None
    assert await _stored("hm_before") == ["a", "b"]
    assert await _stored("hm_after") == ["d"]
    await kept.async_delete()
    assert await _stored("hm_before") == ["a"]


class HmSwitched(Document):
    """A class the tests below switch to another database or collection."""

    meta = {"collection": "hm_switched"}
    name = StringField()


async def _operated(cls: type[Any]) -> None:
    """Two saves of ``cls``: where it operates is kept by the second."""
    await cls(name="a").async_save()
    await cls(name="b").async_save()


async def test_switch_db_after_the_class_operated_saves_in_the_other_database(
    async_alias: str, other_alias: str
) -> None:
    """MongoEngine's ``switch_db`` (it changes the class's meta alias) once the
    class has operated: a save in the block goes to the other database."""
    await _operated(HmSwitched)
    with switch_db(HmSwitched, other_alias):
        await HmSwitched(name="c").async_save()
    await HmSwitched(name="d").async_save()
    other = get_async_db(other_alias).get_collection("hm_switched")
    assert await _stored("hm_switched") == ["a", "b", "d"]
    assert await other.distinct("name") == ["c"]


async def test_switch_collection_after_the_class_operated_saves_in_the_other(
    async_alias: str,
) -> None:
    """MongoEngine's ``switch_collection`` (it replaces the class's
    ``_get_collection_name``) once the class has operated: a save in the
    block goes to the other collection."""
    await _operated(HmSwitched)
    with switch_collection(HmSwitched, "hm_other"):
        await HmSwitched(name="c").async_save()
    await HmSwitched(name="d").async_save()
    assert await _stored("hm_switched") == ["a", "b", "d"]
    assert await _stored("hm_other") == ["c"]


async def test_async_switches_after_the_class_operated_save_in_the_other(
    async_alias: str, other_alias: str
) -> None:
    """``async_switch_db`` and ``async_switch_collection`` (bound in the task)
    once the class has operated: a save in the block goes where they say."""
    await _operated(HmSwitched)
    async with async_switch_db(HmSwitched, other_alias):
        await HmSwitched(name="c").async_save()
    async with async_switch_collection(HmSwitched, "hm_other"):
        await HmSwitched(name="d").async_save()
    await HmSwitched(name="e").async_save()
    other = get_async_db(other_alias).get_collection("hm_switched")
    assert await _stored("hm_switched") == ["a", "b", "e"]
    assert await other.distinct("name") == ["c"]
    assert await _stored("hm_other") == ["d"]
