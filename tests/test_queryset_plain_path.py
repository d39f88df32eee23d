"""A queryset terminal takes its class's kept home (operation.py
``plain_home``) as its operation in the plain case: no session or write
concern, nothing bound in the task, the class's own collection. Anything else
resolves the operation the general way; these show each case reaching the
database it must, with the session it must."""

from __future__ import annotations

from typing import Any

import pytest
from mongoengine.context_managers import switch_db

from mongoengine_async import (
    Document,
    StringField,
    async_run_in_transaction,
    async_switch_db,
    get_async_connection,
)


class HomePerson(Document):
    name = StringField()
    meta = {"indexes": ["name"]}


async def _two_people(other_alias: str) -> Any:
    """Ann on the default alias and, under the same id, Bob on ``other_alias``;
    one get first, so the class's home is kept. Returns the id."""
    ann = await HomePerson(name="Ann").async_save()
    async with async_switch_db(HomePerson, other_alias):
        await HomePerson(id=ann.id, name="Bob").async_save()
    assert (await HomePerson.objects.async_get(id=ann.id)).name == "Ann"
    return ann.id


async def test_a_get_reads_the_class_collection(
    async_alias: str, command_log: Any
) -> None:
    ann = await HomePerson(name="Ann").async_save()
    await HomePerson.objects.async_get(id=ann.id)
    command_log.clear()
    assert (await HomePerson.objects.async_get(id=ann.id)).name == "Ann"
    (find,) = [e.command for e in command_log.events]
    assert (find["find"], find["filter"], find["limit"]) == (
        "home_person",
        {"_id": ann.id},
        2,
    )
    assert "lsid" in find and "txnNumber" not in find


async def test_a_using_queryset_reads_its_own_alias(other_alias: str) -> None:
    pk = await _two_people(other_alias)
    assert (await HomePerson.objects.using(other_alias).async_get(id=pk)).name == "Bob"


async def test_mongoengines_switch_db_is_followed(other_alias: str) -> None:
    pk = await _two_people(other_alias)
    with switch_db(HomePerson, other_alias):
        assert (await HomePerson.objects.async_get(id=pk)).name == "Bob"
    assert (await HomePerson.objects.async_get(id=pk)).name == "Ann"


async def test_async_switch_db_is_followed(other_alias: str) -> None:
    pk = await _two_people(other_alias)
    async with async_switch_db(HomePerson, other_alias):
        assert (await HomePerson.objects.async_get(id=pk)).name == "Bob"


async def test_a_bound_transaction_is_followed(async_alias: str) -> None:
    ann = await HomePerson(name="Ann").async_save()
    await HomePerson.objects.async_get(id=ann.id)
    async with async_run_in_transaction():
        await HomePerson.objects(id=ann.id).async_update(set__name="uncommitted")
        assert (await HomePerson.objects.async_get(id=ann.id)).name == "uncommitted"


async def test_an_explicit_session_is_followed(async_alias: str) -> None:
    ann = await HomePerson(name="Ann").async_save()
    await HomePerson.objects.async_get(id=ann.id)
    async with get_async_connection().start_session() as session:
        await session.start_transaction()
        await HomePerson.objects(id=ann.id).async_update(
            set__name="uncommitted", session=session
        )
        got = await HomePerson.objects.async_get(id=ann.id, session=session)
        assert got.name == "uncommitted"
        assert (await HomePerson.objects.async_get(id=ann.id)).name == "Ann"
        await session.abort_transaction()


async def test_a_dropped_collection_gets_its_indexes_again(async_alias: str) -> None:
    ann = await HomePerson(name="Ann").async_save()
    await HomePerson.objects.async_get(id=ann.id)
    await HomePerson.async_drop_collection()
    people = HomePerson._get_db()["home_person"]
    await people.insert_one({"_id": ann.id, "name": "again"})
    assert (await HomePerson.objects.async_get(id=ann.id)).name == "again"
    assert "name_1" in await people.index_information()


async def test_a_write_concern_is_followed(async_alias: str, command_log: Any) -> None:
    ann = await HomePerson(name="Ann").async_save()
    await HomePerson.objects.async_get(id=ann.id)
    command_log.clear()
    await HomePerson.objects(id=ann.id).async_delete(write_concern={"w": 1})
    (delete,) = [e.command for e in command_log.events if e.command_name == "delete"]
    assert delete["writeConcern"] == {"w": 1}


@pytest.mark.parametrize("terminal", ["async_to_list", "async_first", "async_count"])
async def test_other_terminals_read_the_class_collection(
    other_alias: str, terminal: str
) -> None:
    pk = await _two_people(other_alias)
    result = await getattr(HomePerson.objects(id=pk), terminal)()
    if terminal == "async_to_list":
        result = result[0]
    assert result == 1 if terminal == "async_count" else result.name == "Ann"
