"""A save of a stored document whose dict gained, changed or lost a key with a
``.`` in place (``doc.d["a.b"] = 1``) stores it: an update path cannot name such
a key (``d.a.b`` is read as nested fields, and MongoEngine's update unsets it),
so the save sets the whole dict holding it. Values are read back from the
database; the updates sent are read from the command log."""

from __future__ import annotations

from typing import Any

from mongoengine_async import (
    DictField,
    Document,
    DynamicDocument,
    EmbeddedDocument,
    EmbeddedDocumentField,
    IntField,
    ListField,
    MapField,
    get_async_db,
)


class DkPoint(EmbeddedDocument):
    x = IntField()
    tags = DictField()


class DkHolder(Document):
    d = DictField()
    m = MapField(EmbeddedDocumentField(DkPoint))
    rows = ListField(DictField())
    point = EmbeddedDocumentField(DkPoint)
    n = IntField()


class DkLoose(DynamicDocument):
    name = IntField()


def _updates(command_log: Any) -> list[dict]:
    """The update documents (``u``) of the update commands logged."""
    return [
        statement["u"]
        for event in command_log.events
        if event.command_name == "update"
        for statement in event.command["updates"]
    ]


async def _stored(holder: DkHolder) -> dict:
    found = await get_async_db().dk_holder.find_one({"_id": holder.pk})
    assert found is not None
    return found


async def test_a_dotted_key_set_in_place_is_stored(async_alias, command_log):
    holder = await DkHolder(d={"k": 1}, n=1).async_save()
    command_log.clear()
    holder.d["a.b"] = 2
    holder.n = 3
    await holder.async_save()
    assert _updates(command_log) == [{"$set": {"n": 3, "d": {"k": 1, "a.b": 2}}}]
    stored = await _stored(holder)
    assert stored["d"] == {"k": 1, "a.b": 2} and stored["n"] == 3
    assert holder._get_changed_fields() == []
    await holder.async_reload()
    assert holder.d == {"k": 1, "a.b": 2}


async def test_a_dotted_key_deleted_in_place_is_removed(async_alias):
    holder = await DkHolder(d={"k": 1, "a.b": 2}).async_save()
    del holder.d["a.b"]
    await holder.async_save()
    assert (await _stored(holder))["d"] == {"k": 1}


async def test_a_dotted_key_beside_its_nested_reading_changes_only_itself(
    async_alias,
):
    holder = await DkHolder(d={"a": {"b": 0}, "a.b": 1}).async_save()
    holder.d["a.b"] = 5
    await holder.async_save()
    assert (await _stored(holder))["d"] == {"a": {"b": 0}, "a.b": 5}


async def test_dotted_keys_in_maps_lists_and_embedded_documents(
    async_alias, command_log
):
    holder = await DkHolder(
        m={"p": DkPoint(x=1)}, rows=[{"k": 1}, {"k": 2}], point=DkPoint(tags={})
    ).async_save()
    command_log.clear()
    holder.m["p.q"] = DkPoint(x=2)
    holder.rows[1]["r.s"] = 3
    holder.point.tags["t.u"] = 4
    await holder.async_save()
    (update,) = _updates(command_log)
    assert set(update["$set"]) == {"m", "rows.1", "point.tags"}
    stored = await _stored(holder)
    assert stored["m"] == {"p": {"x": 1, "tags": {}}, "p.q": {"x": 2, "tags": {}}}
    assert stored["rows"] == [{"k": 1}, {"k": 2, "r.s": 3}]
    assert stored["point"]["tags"] == {"t.u": 4}


async def test_nested_changes_without_dotted_keys_keep_their_paths(
    async_alias, command_log
):
    holder = await DkHolder(d={"x": {"y": 1}}, point=DkPoint(x=1)).async_save()
    command_log.clear()
    holder.d["x"]["y"] = 2
    holder.point.x = 3
    await holder.async_save()
    assert _updates(command_log) == [{"$set": {"d.x.y": 2, "point.x": 3}}]
    stored = await _stored(holder)
    assert stored["d"] == {"x": {"y": 2}} and stored["point"]["x"] == 3


async def test_a_dotted_key_in_a_dynamic_documents_dict_is_stored(async_alias):
    loose = await DkLoose(name=1, extra={"k": 1}).async_save()
    loose.extra["a.b"] = 2
    await loose.async_save()
    stored = await get_async_db().dk_loose.find_one({"_id": loose.pk})
    assert stored is not None and stored["extra"] == {"k": 1, "a.b": 2}


async def test_an_embedded_document_under_a_dotted_key_changed_in_place(
    async_alias, command_log
):
    holder = await DkHolder(m={"p.q": DkPoint(x=1), "k": DkPoint(x=1)}).async_save()
    command_log.clear()
    holder.m["p.q"].x = 5  # (MongoEngine's update raises AttributeError here)
    await holder.async_save()
    assert _updates(command_log) == [
        {"$set": {"m": {"p.q": {"x": 5, "tags": {}}, "k": {"x": 1, "tags": {}}}}}
    ]
    assert (await _stored(holder))["m"]["p.q"] == {"x": 5, "tags": {}}
    assert holder._get_changed_fields() == []


async def test_a_dotted_key_changed_in_an_embedded_document_under_one(
    async_alias, command_log
):
    """A dict of an embedded document stored under a dotted key gaining or
    changing a dotted key in place: the map holding it is set whole (the save
    raised MongoEngine's AttributeError from its clearing, nothing written)."""
    holder = await DkHolder(
        m={"p.q": DkPoint(x=1, tags={"t.u": 1}), "k": DkPoint(x=1)}
    ).async_save()
    command_log.clear()
    holder.m["p.q"].tags["t.u"] = 2
    holder.m["p.q"].tags["v.w"] = 3
    await holder.async_save()
    assert _updates(command_log) == [
        {
            "$set": {
                "m": {
                    "p.q": {"x": 1, "tags": {"t.u": 2, "v.w": 3}},
                    "k": {"x": 1, "tags": {}},
                }
            }
        }
    ]
    assert (await _stored(holder))["m"]["p.q"]["tags"] == {"t.u": 2, "v.w": 3}
    assert holder._get_changed_fields() == []
    assert holder.m["p.q"]._get_changed_fields() == []
