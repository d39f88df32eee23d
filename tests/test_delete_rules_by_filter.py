"""A CASCADE into a class whose deleted ids nothing needs (no rules of its own,
no delete receivers, not a DENY referrer) deletes by the rule's filter: the ids
are never fetched nor sent back. Everything else behaves as with the ids."""

from __future__ import annotations

from typing import Any

import pytest

from mongoengine_async import (
    CASCADE,
    DENY,
    NULLIFY,
    Document,
    GenericReferenceField,
    ListField,
    OperationError,
    ReferenceField,
    StringField,
    get_async_db,
    signals,
)
from mongoengine_async.testing import CommandLog


class DrfAuthor(Document):
    name = StringField()


class DrfBook(Document):
    """A leaf: nothing refers to books."""

    title = StringField()
    author = ReferenceField(DrfAuthor, reverse_delete_rule=CASCADE)


async def test_a_leaf_is_deleted_by_the_rules_filter_in_the_transaction(
    async_alias: str, command_log: CommandLog
) -> None:
    author = await DrfAuthor(name="doomed").async_save()
    bystander = await DrfAuthor(name="bystander").async_save()
    await DrfBook.objects.async_insert(
        [DrfBook(title=f"b{i}", author=author) for i in range(1000)], load_bulk=False
    )
    await DrfBook(title="survivor", author=bystander).async_save()

    command_log.clear()
    await author.async_delete()

    assert command_log.names == ["delete", "delete", "commitTransaction"]
    root, books = (event.command for event in command_log.events[:2])
    assert root["deletes"][0]["q"] == {"_id": author.pk}
    assert books["deletes"][0]["q"] == {"author": {"$in": [author.pk]}}
    assert all("txnNumber" in event.command for event in command_log.events)
    assert await DrfBook.objects.async_scalar("title") == ["survivor"]
    assert await DrfAuthor.objects.async_scalar("name") == ["bystander"]


class DrfCritic(Document):
    name = StringField()


class DrfReview(Document):
    """Its author's deletion removes it; its book's deletion only empties
    ``about`` (NULLIFY on a list: the whole list)."""

    text = StringField()
    about = ListField(GenericReferenceField())


class DrfEssay(Document):
    title = StringField()
    critic = ReferenceField(DrfCritic, reverse_delete_rule=CASCADE)


DrfCritic.register_delete_rule(DrfReview, "about", CASCADE)
DrfEssay.register_delete_rule(DrfReview, "about", NULLIFY)


async def test_a_leaf_a_nullify_also_updates_is_deleted(async_alias: str) -> None:
    """The filter deletes run before the updates, which could make a document
    the cascade removes stop matching the filter."""
    critic = await DrfCritic(name="doomed").async_save()
    other = await DrfCritic(name="other").async_save()
    essay = await DrfEssay(title="essay", critic=critic).async_save()
    await DrfReview(text="on both", about=[critic, essay]).async_save()
    nullified = await DrfReview(text="on the essay", about=[essay]).async_save()
    await DrfReview(text="on the other", about=[other]).async_save()

    await critic.async_delete()

    assert await DrfReview.objects.async_scalar("text") == [
        "on the essay",
        "on the other",
    ]
    stored = await get_async_db()["drf_review"].find_one({"_id": nullified.pk})
    assert stored is not None and "about" not in stored
    assert await DrfEssay.objects.async_count() == 0


class DrfBand(Document):
    name = StringField()


class DrfAlbum(Document):
    title = StringField()
    band = ReferenceField(DrfBand, reverse_delete_rule=CASCADE)


class DrfNote(Document):
    """Deleted with its band; it also protects the album it is about (DENY)."""

    text = StringField()
    band = ReferenceField(DrfBand, reverse_delete_rule=CASCADE)
    album = ReferenceField(DrfAlbum, reverse_delete_rule=DENY)


async def test_a_deny_referrer_removed_by_the_same_cascade_does_not_block(
    async_alias: str,
) -> None:
    band = await DrfBand(name="doomed").async_save()
    other = await DrfBand(name="other").async_save()
    album = await DrfAlbum(title="first", band=band).async_save()
    await DrfNote(text="removed too", band=band, album=album).async_save()

    await band.async_delete()

    assert await DrfAlbum.objects.async_count() == 0
    assert await DrfNote.objects.async_count() == 0

    band = await DrfBand(name="doomed again").async_save()
    album = await DrfAlbum(title="second", band=band).async_save()
    await DrfNote(text="stays", band=other, album=album).async_save()
    with pytest.raises(OperationError, match=r"DrfNote\.album refers to it"):
        await band.async_delete()
    assert await DrfAlbum.objects.async_scalar("title") == ["second"]


class DrfShow(Document):
    name = StringField()


class DrfTicket(Document):
    seat = StringField()
    show = GenericReferenceField()
    meta = {"allow_inheritance": True}


# Registered before the subclass exists: the rule names DrfTicket only.
DrfShow.register_delete_rule(DrfTicket, "show", CASCADE)


class DrfVipTicket(DrfTicket):
    pass


async def test_a_subclass_receiver_gets_no_signal_from_a_cascade_through_its_parent(
    async_alias: str,
) -> None:
    """MongoEngine deletes what the rule on DrfTicket (which has no receivers)
    reaches in one batch, sending no signal (tests/test_delete_rules_parity.py
    compares the two)."""
    assert list(DrfShow._meta["delete_rules"]) == [(DrfTicket, "show")]
    show = await DrfShow(name="doomed").async_save()
    await DrfTicket(seat="a1", show=show).async_save()
    await DrfVipTicket(seat="v1", show=show).async_save()
    seen = []

    def receiver(sender: type, document: Any, **kwargs: Any) -> None:
        seen.append((sender, document.seat))

    signals.post_delete.connect(receiver, sender=DrfVipTicket)
    try:
        await show.async_delete()
    finally:
        signals.post_delete.disconnect(receiver, sender=DrfVipTicket)
    assert seen == []
    assert await DrfTicket.objects.async_count() == 0


async def test_a_disconnected_receiver_no_longer_makes_the_cascade_load_ids(
    async_alias: str, command_log: CommandLog
) -> None:
    """blinker keeps a sender known after its last receiver is disconnected;
    the cascade looks at the receivers left, and deletes by the filter again."""

    def receiver(sender: type, document: Any, **kwargs: Any) -> None:
        raise AssertionError("disconnected")

    signals.post_delete.connect(receiver, sender=DrfBook)
    signals.post_delete.disconnect(receiver, sender=DrfBook)
    assert signals.post_delete.has_receivers_for(DrfBook)
    author = await DrfAuthor(name="doomed").async_save()
    await DrfBook(title="gone", author=author).async_save()

    command_log.clear()
    await author.async_delete()

    assert command_log.names == ["delete", "delete", "commitTransaction"]
    assert await DrfBook.objects.async_count() == 0
