"""Where a delete with rules reads and writes: its plan's reads (the roots'
ids, the cascaded ids, the DENY checks, the cascaded documents its receivers
get, a one-by-one delete's listing) go to the primary, where its writes go,
whatever the client's read preference; a ``using()`` queryset (or one of a
switched class) deleting one by one deletes each document where it was read."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
from bson import ObjectId
from mongoengine.errors import OperationError
from pymongo import ReadPreference
from pymongo.errors import OperationFailure

from mongoengine_async import (
    CASCADE,
    DENY,
    NULLIFY,
    Document,
    ReferenceField,
    StringField,
    async_run_in_transaction,
    async_switch_collection,
    async_switch_db,
    get_async_db,
    signals,
)
from mongoengine_async.testing import fresh_database

ALIAS = "drd_secondary"
OTHER = "drd_other"


class DrdAuthor(Document):
    name = StringField()
    meta = {"db_alias": ALIAS}


class DrdBook(Document):
    """Cascaded, with a rule of its own: found by id."""

    title = StringField()
    author = ReferenceField(DrdAuthor, reverse_delete_rule=CASCADE)
    meta = {"db_alias": ALIAS}


class DrdReview(Document):
    book = ReferenceField(DrdBook, reverse_delete_rule=NULLIFY)
    meta = {"db_alias": ALIAS}


class DrdLock(Document):
    author = ReferenceField(DrdAuthor, reverse_delete_rule=DENY)
    meta = {"db_alias": ALIAS}


@pytest.fixture(name="secondary_reads")
async def _secondary_reads(mongodb_uri: str) -> AsyncIterator[str]:
    """``ALIAS`` on the test deployment (one member: no secondary to read
    from) with ``read_preference=SECONDARY``: any read not sent to the
    primary times out (after 2 s)."""
    async with fresh_database(
        ALIAS,
        mongodb_uri,
        read_preference=ReadPreference.SECONDARY,
        serverSelectionTimeoutMS=2000,
    ) as alias:
        yield alias


async def primary_titles() -> list[str]:
    """The titles of the books left, read on the primary."""
    books = get_async_db(ALIAS)["drd_book"]
    primary = books.with_options(read_preference=ReadPreference.PRIMARY)
    return sorted(raw["title"] for raw in await primary.find().to_list())


async def saved_author(name: str) -> DrdAuthor:
    """An author with a book, reviewed."""
    author = await DrdAuthor(name=name).async_save()
    book = await DrdBook(title=name, author=author).async_save()
    await DrdReview(book=book).async_save()
    return author


@pytest.mark.parametrize("kind", ["document", "queryset", "one_by_one"])
async def test_a_cascade_outside_a_transaction_reads_the_primary(
    secondary_reads: str, kind: str
) -> None:
    """A delete of a document, of a queryset, and one by one (``limit``)
    with ``transaction=False`` cascades on a client reading from secondaries
    (none here): its reads went to the primary, none timed out."""
    author = await saved_author("doomed")
    await saved_author("kept")
    if kind == "document":
        await author.async_delete(transaction=False)
    elif kind == "queryset":
        assert (
            await DrdAuthor.objects(name="doomed").async_delete(transaction=False) == 1
        )
    else:
        deleting = DrdAuthor.objects(name="doomed").limit(5)
        assert await deleting.async_delete(transaction=False) == 1
    assert await primary_titles() == ["kept"]
    reviews = get_async_db(ALIAS)["drd_review"].with_options(
        read_preference=ReadPreference.PRIMARY
    )
    assert sorted("book" in raw for raw in await reviews.find().to_list()) == [
        False,
        True,
    ]


async def test_a_deny_check_reads_the_primary(secondary_reads: str) -> None:
    """A DENY rule's check outside a transaction reads the primary: the lock
    refuses the delete with its own error, not a server selection timeout."""
    author = await saved_author("locked")
    await DrdLock(author=author).async_save()
    with pytest.raises(OperationError) as raised:
        await author.async_delete(transaction=False)
    assert str(raised.value) == (
        "Could not delete document (DrdLock.author refers to it)"
    )
    assert await primary_titles() == ["locked"]


async def test_cascaded_documents_for_receivers_are_read_on_the_primary(
    secondary_reads: str,
) -> None:
    """The cascaded documents a delete loads for their receivers are read on
    the primary: the receiver gets the book."""
    author = await saved_author("doomed")
    seen: list[str] = []

    async def receiver(sender: type, document: Any, **kwargs: Any) -> None:
        seen.append(document.title)

    signals.post_delete.connect(receiver, sender=DrdBook)
    try:
        await author.async_delete(transaction=False)
    finally:
        signals.post_delete.disconnect(receiver, sender=DrdBook)
    assert seen == ["doomed"]
    assert await primary_titles() == []


class DruAuthor(Document):
    name = StringField()
    meta = {"db_alias": ALIAS}


class DruBook(Document):
    title = StringField()
    author = ReferenceField(DruAuthor, reverse_delete_rule=CASCADE)
    meta = {"db_alias": ALIAS}


@pytest.fixture(name="two_aliases")
async def _two_aliases(mongodb_uri: str) -> AsyncIterator[tuple[str, str]]:
    """``ALIAS`` and ``OTHER``, two databases of the test deployment, on
    clients of their own (other options)."""
    async with (
        fresh_database(ALIAS, mongodb_uri),
        fresh_database(OTHER, mongodb_uri, appname=OTHER),
    ):
        yield ALIAS, OTHER


@pytest.mark.parametrize("transaction", [True, False])
async def test_a_using_queryset_deletes_one_by_one_where_it_read(
    two_aliases: tuple[str, str], transaction: bool
) -> None:
    """``using(OTHER).limit(5).async_delete()`` on a class with rules deletes
    each document it read in ``OTHER``'s database (in its transaction there),
    not the one with the same id in the class's own; the rules apply to the
    referring classes in their own collections, as a ``switch_db()``
    document's delete does. It raised ForeignSessionError: each document
    was deleted on its class's alias, in the other client's session."""
    shared = ObjectId()
    await get_async_db(OTHER)["dru_author"].insert_one({"_id": shared, "name": "a"})
    await get_async_db(ALIAS)["dru_author"].insert_one({"_id": shared, "name": "a"})
    await DruBook(title="cascaded", author=shared).async_save()

    deleting = DruAuthor.objects.using(OTHER).limit(5)
    assert await deleting.async_delete(transaction=transaction) == 1

    assert await get_async_db(OTHER)["dru_author"].count_documents({}) == 0
    assert await DruAuthor.objects.async_scalar("pk") == [shared]
    assert await DruBook.objects.async_count() == 0


class DriAuthor(Document):
    """Of subclasses: ``async_switch_db``/``async_switch_collection`` of this
    class reads theirs where it is switched to, their classes are not."""

    name = StringField()
    meta = {"db_alias": ALIAS, "allow_inheritance": True}


class DriPoet(DriAuthor):
    pass


class DriBook(Document):
    author = ReferenceField(DriAuthor, reverse_delete_rule=CASCADE)
    meta = {"db_alias": ALIAS}


@pytest.mark.parametrize("switched", ["collection", "db"])
async def test_a_switched_class_deletes_its_subclass_documents_where_it_read(
    two_aliases: tuple[str, str], switched: str
) -> None:
    """Inside ``async_switch_collection(DriAuthor, "dri_archive")`` (or
    ``async_switch_db(DriAuthor, OTHER)``), ``limit(5).async_delete()``
    deletes the poet it read there, not the one of the same id in the class's
    own collection. It deleted that one (on another client: raised
    ForeignSessionError): the switch is of DriAuthor, not of DriPoet, and
    each document was deleted on its own class's collection."""
    shared = ObjectId()
    poet = {"_id": shared, "name": "p", "_cls": "DriAuthor.DriPoet"}
    home = get_async_db(ALIAS)["dri_author"]
    await home.insert_one(poet)
    if switched == "collection":
        away = get_async_db(ALIAS)["dri_archive"]
        switch = async_switch_collection(DriAuthor, "dri_archive")
    else:
        away = get_async_db(OTHER)["dri_author"]
        switch = async_switch_db(DriAuthor, OTHER)
    await away.insert_one(poet)

    async with switch:
        assert await DriAuthor.objects.limit(5).async_delete() == 1

    assert await away.count_documents({}) == 0
    assert await home.count_documents({}) == 1


class DrsAuthor(Document):
    name = StringField()


class DrsBook(Document):
    title = StringField()
    author = ReferenceField(DrsAuthor, reverse_delete_rule=CASCADE)
    meta = {"indexes": ["title"]}


async def test_a_class_first_prepared_inside_a_running_transaction(
    async_alias: str,
) -> None:
    """As docs/transactions.md says: a delete with rules after another
    operation of the caller's transaction prepares the class its rule
    reaches (its index, outside the transaction) after the transaction's
    snapshot, and its read of that collection fails with SnapshotUnavailable
    (transient), though it matched nothing. Run again, as a retry is, the
    class prepared then (by that attempt), it deletes and cascades."""
    author = await DrsAuthor(name="Ann").async_save()
    with pytest.raises(OperationFailure) as raised:
        async with async_run_in_transaction():
            await DrsAuthor.objects.async_count()
            await DrsAuthor.objects(name="nobody").async_delete()
            await DrsBook.objects.async_count()
    assert raised.value.code == 246  # SnapshotUnavailable
    assert raised.value.has_error_label("TransientTransactionError")

    await DrsBook(title="First", author=author).async_save()
    async with async_run_in_transaction():
        assert await DrsAuthor.objects.async_count() == 1
        assert await DrsAuthor.objects(name="Ann").async_delete() == 1
    assert await DrsBook.objects.async_count() == 0
