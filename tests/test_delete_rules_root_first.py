"""A document's own cascading delete, in a transaction of its own, deletes the
document first instead of reading its id: an abort would undo it. Where it
could be seen gone (a DENY check, receivers of cascaded documents, the caller's
transaction) the id is read first and the document deleted last."""

from __future__ import annotations

from typing import Any

from mongoengine_async import (
    CASCADE,
    NULLIFY,
    Document,
    ReferenceField,
    StringField,
    async_run_in_transaction,
    get_async_db,
    signals,
)
from mongoengine_async.testing import CommandLog


class DrrAuthor(Document):
    name = StringField()


class DrrBook(Document):
    title = StringField()
    author = ReferenceField(DrrAuthor, reverse_delete_rule=CASCADE)


async def test_a_document_already_gone_cascades_nothing(
    async_alias: str, command_log: CommandLog
) -> None:
    author = await DrrAuthor(name="gone").async_save()
    await DrrBook(title="orphan", author=author).async_save()
    await get_async_db()["drr_author"].delete_one({"_id": author.pk})

    command_log.clear()
    await author.async_delete()

    assert command_log.names == ["delete", "commitTransaction"]
    assert await DrrBook.objects.async_scalar("title") == ["orphan"]


async def test_receivers_of_cascaded_documents_still_find_the_root(
    async_alias: str, command_log: CommandLog
) -> None:
    author = await DrrAuthor(name="Ann").async_save()
    await DrrBook(title="First", author=author).async_save()
    seen = []

    async def receiver(sender: type, document: Any, **kwargs: Any) -> None:
        # Inside the delete's transaction, as the receiver's own queries are.
        seen.append(await DrrAuthor.objects(id=document.author.pk).async_count())

    signals.pre_delete.connect(receiver, sender=DrrBook)
    try:
        command_log.clear()
        await author.async_delete()
    finally:
        signals.pre_delete.disconnect(receiver, sender=DrrBook)
    assert seen == [1]
    assert command_log.names[0] == "find"
    assert await DrrBook.objects.async_count() == 0


async def test_in_the_callers_transaction_the_root_is_deleted_last(
    async_alias: str, command_log: CommandLog
) -> None:
    author = await DrrAuthor(name="Ann").async_save()
    await DrrBook(title="First", author=author).async_save()

    command_log.clear()
    async with async_run_in_transaction():
        await author.async_delete()

    assert command_log.names == ["find", "delete", "delete", "commitTransaction"]
    root = command_log.events[2].command
    assert root["deletes"][0]["q"] == {"_id": {"$in": [author.pk]}}
    assert await DrrAuthor.objects.async_count() == 0
    assert await DrrBook.objects.async_count() == 0


class DrrEditor(Document):
    name = StringField()


class DrrAnthology(Document):
    # The editor is nullified first, then cascades: the cascade's rules count.
    reviewer = ReferenceField(DrrEditor, reverse_delete_rule=NULLIFY)
    editor = ReferenceField(DrrEditor, reverse_delete_rule=CASCADE)


class DrrStory(Document):
    anthology = ReferenceField(DrrAnthology, reverse_delete_rule=CASCADE)


async def test_receivers_reached_through_a_referrer_nullified_first_find_the_root(
    async_alias: str, command_log: CommandLog
) -> None:
    """A class a rule reached first with NULLIFY, then with CASCADE, had its
    own rules left out of what the delete may reach: the receivers of the
    stories its cascade deletes found the editor deleted already."""
    assert list(DrrEditor._meta["delete_rules"].values()) == [NULLIFY, CASCADE]
    editor = await DrrEditor(name="Ed").async_save()
    anthology = await DrrAnthology(editor=editor).async_save()
    await DrrStory(anthology=anthology).async_save()
    seen = []

    async def receiver(sender: type, document: Any, **kwargs: Any) -> None:
        seen.append(await DrrEditor.objects(id=editor.pk).async_count())

    signals.pre_delete.connect(receiver, sender=DrrStory)
    try:
        command_log.clear()
        await editor.async_delete()
    finally:
        signals.pre_delete.disconnect(receiver, sender=DrrStory)
    assert seen == [1]
    assert command_log.names[0] == "find"
    assert await DrrStory.objects.async_count() == 0
    assert await DrrAnthology.objects.async_count() == 0
