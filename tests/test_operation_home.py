"""A class's kept home (operation.py ``_homes``): one per class, kept by the
first operation that resolves it with no switch of ours in effect, and taken
by saves, terminals and references alike while it still holds. These show that
a home resolved inside a switch is never the one the plain case takes."""

from __future__ import annotations

from mongoengine.context_managers import switch_db

from mongoengine_async import (
    Document,
    ReferenceField,
    StringField,
    async_run_in_transaction,
    async_switch_collection,
    async_switch_db,
    get_async_db,
)
from mongoengine_async.operation import plain_home, reached


class HomeNote(Document):
    text = StringField()


class HomeNoteLink(Document):
    note = ReferenceField(HomeNote)


async def texts(alias: str, collection: str = "home_note") -> list[str]:
    """The texts stored in ``collection`` of ``alias``, read with the driver."""
    cursor = get_async_db(alias)[collection].find().sort("text")
    return [raw["text"] async for raw in cursor]


async def test_a_home_resolved_inside_async_switch_db_is_not_kept(
    other_alias: str,
) -> None:
    async with async_switch_db(HomeNote, other_alias):
        await HomeNote(text="away 1").async_save()  # prepares the collection
        await HomeNote(text="away 2").async_save()  # resolves its home there
        assert plain_home(HomeNote) is None  # (something is bound)
    await HomeNote(text="home").async_save()
    assert await texts("default") == ["home"]
    assert await texts(other_alias) == ["away 1", "away 2"]
    assert [n.text for n in await HomeNote.objects.async_to_list()] == ["home"]
    home = plain_home(HomeNote)
    assert home is not None and home.operation.alias == "default"


async def test_a_home_resolved_inside_async_switch_collection_is_not_kept(
    async_alias: str,
) -> None:
    async with async_switch_collection(HomeNote, "home_note_archive"):
        await HomeNote(text="archived 1").async_save()
        await HomeNote(text="archived 2").async_save()
    await HomeNote(text="main").async_save()
    assert await texts("default") == ["main"]
    assert await texts("default", "home_note_archive") == ["archived 1", "archived 2"]
    home = plain_home(HomeNote)
    assert home is not None and home.name == "home_note"


async def test_a_kept_home_is_not_taken_inside_a_switch(other_alias: str) -> None:
    note = await HomeNote(text="home").async_save()
    await HomeNote(text="home 2").async_save()  # the home is kept now
    async with async_switch_db(HomeNote, other_alias):
        await HomeNote(text="away").async_save()
        await HomeNote(text="away 2").async_save()
        assert await HomeNote.objects.async_count() == 2
        await HomeNoteLink(note=note).async_save()  # HomeNoteLink: not switched
    link = await HomeNoteLink.objects.async_get()
    assert (await link.note).text == "home"
    assert await texts("default") == ["home", "home 2"]
    assert await texts(other_alias) == ["away", "away 2"]


async def test_a_home_resolved_in_a_transaction_is_kept_and_joins_it(
    async_alias: str,
) -> None:
    await HomeNote(text="before").async_save()  # prepares the collection
    async with async_run_in_transaction():
        operation = reached(HomeNote)
        assert operation is not None and operation.session is not None
        await HomeNote(text="inside").async_save()
    home = plain_home(HomeNote, keep=False)
    assert home is not None and home.operation.session is None
    assert reached(HomeNote) is home.operation
    assert await texts("default") == ["before", "inside"]


async def test_mongoengines_switch_db_and_back_alternate(other_alias: str) -> None:
    for round_ in range(3):
        await HomeNote(text=f"home {round_}").async_save()
        with switch_db(HomeNote, other_alias):
            await HomeNote(text=f"away {round_}").async_save()
            assert await HomeNote.objects.async_count() == round_ + 1
    assert await texts("default") == ["home 0", "home 1", "home 2"]
    assert await texts(other_alias) == ["away 0", "away 1", "away 2"]
