"""An explicit ``session=`` on the async operations, against the real replica set.

Inside ``session.start_transaction()`` the operations are undone by
``abort_transaction()``; without a transaction they still run in the session
(the commands carry its lsid); an explicit session wins over the bound
transaction's; a session of another client is refused before anything is sent.
"""

from __future__ import annotations

from functools import partial

import pymongo.errors
import pytest
from bson import ObjectId

from mongoengine_async import (
    CASCADE,
    CachedReferenceField,
    Document,
    FileField,
    ForeignSessionError,
    IntField,
    LazyReferenceField,
    MisuseError,
    ReferenceField,
    StringField,
    async_run_in_transaction,
    get_async_connection,
)
from mongoengine_async.testing import fresh_database


class SesAccount(Document):
    name = StringField()
    balance = IntField(default=0)


class SesOwner(Document):
    name = StringField()


class SesPet(Document):
    name = StringField()
    owner = ReferenceField(SesOwner, reverse_delete_rule=CASCADE)


class SesLogin(Document):
    """A model with a field named like the ``session=`` keyword."""

    user = StringField()
    session = StringField()


class SesFile(Document):
    name = StringField()
    data = FileField()


async def _accounts() -> tuple[SesAccount, SesAccount]:
    ann = await SesAccount(name="Ann", balance=100).async_save()
    bob = await SesAccount(name="Bob", balance=0).async_save()
    return ann, bob


async def _balances() -> dict[str, int]:
    return {a.name: a.balance for a in await SesAccount.objects.async_to_list()}


async def test_document_operations_in_an_aborted_transaction_are_undone(async_alias):
    ann, bob = await _accounts()
    async with get_async_connection().start_session() as session:
        await session.start_transaction()
        ann.balance = 70
        await ann.async_save(session=session)
        await bob.async_update(session=session, inc__balance=30)
        assert await bob.async_modify(session=session, set__name="Bobby")
        await SesAccount(name="Cy").async_save(session=session)
        await bob.async_reload(session=session)
        assert (bob.name, bob.balance) == ("Bobby", 30)
        await ann.async_delete(session=session)
        # Outside the session nothing is visible yet.
        assert await _balances() == {"Ann": 100, "Bob": 0}
        await session.abort_transaction()
    assert await _balances() == {"Ann": 100, "Bob": 0}


async def test_queryset_terminals_in_an_aborted_transaction_are_undone(async_alias):
    await _accounts()
    objects = SesAccount.objects
    async with get_async_connection().start_session() as session:
        await session.start_transaction()
        await objects(name="Ann").async_update(session=session, dec__balance=30)
        await objects(name="Bob").async_update_one(session=session, inc__balance=30)
        await objects.async_insert([SesAccount(name="Cy")], session=session)
        await objects.async_create(session=session, name="Dee")
        await objects(name="Eve").async_upsert_one(session=session, balance=5)
        assert await objects.async_count(session=session) == 5
        assert await objects.async_sum("balance", session=session) == 105
        seen = [
            a.name async for a in objects.order_by("name").async_iter(session=session)
        ]
        assert seen == ["Ann", "Bob", "Cy", "Dee", "Eve"]
        assert (await objects.async_get(name="Bob", session=session)).balance == 30
        assert await objects(name="Cy").async_delete(session=session) == 1
        assert await objects.async_count(session=session) == 4
        assert await _balances() == {"Ann": 100, "Bob": 0}  # outside the session
        await session.abort_transaction()
    assert await _balances() == {"Ann": 100, "Bob": 0}


async def test_without_a_transaction_the_commands_carry_the_session(
    async_alias, command_log
):
    ann, _ = await _accounts()
    async with get_async_connection().start_session() as session:
        command_log.clear()
        ann.balance = 50
        await ann.async_save(session=session)
        await SesAccount.objects(name="Bob").async_update(
            session=session, set__balance=9
        )
        assert await SesAccount.objects.async_count(session=session) == 2
        await ann.async_reload(session=session)
        await ann.async_delete(session=session)
        assert command_log.names == ["update", "update", "aggregate", "find", "delete"]
        assert {event.command["lsid"]["id"] for event in command_log.events} == {
            session.session_id["id"]
        }
    assert await _balances() == {"Bob": 9}


async def test_an_explicit_session_wins_over_the_bound_transaction(async_alias):
    ann, _ = await _accounts()
    with pytest.raises(ValueError):
        async with get_async_connection().start_session() as session:
            async with async_run_in_transaction():
                await SesAccount(name="Cy").async_save()  # the transaction's
                ann.balance = 1
                await ann.async_save(session=session)  # not in the transaction
                raise ValueError("abort the transaction")
    assert await _balances() == {"Ann": 1, "Bob": 0}


async def test_a_field_named_session_is_filtered_set_and_updated(
    async_alias, command_log
):
    """``session=`` with a value that is no session is the field's, as the
    keyword is in MongoEngine's get(), create() and update(): nothing runs
    in a session of the user's."""
    await SesLogin.objects.async_create(user="ann", session="abc")
    await SesLogin.objects.async_create(user="bob", session="xyz")
    assert (await SesLogin.objects.async_get(session="abc")).user == "ann"
    assert await SesLogin.objects(user="bob").async_update(session="new") == 1
    moved = await SesLogin.objects(user="ann").async_modify(session="def", new=True)
    assert moved.session == "def"
    bob = await SesLogin.objects(user="bob").async_upsert_one(session="up")
    assert (bob.user, bob.session) == ("bob", "up")
    await bob.async_update(session="doc")
    assert await bob.async_modify(session="up")
    assert bob.session == "up"
    stored = await SesLogin._get_collection().find({}, {"_id": 0}).to_list(None)
    assert stored == [
        {"user": "ann", "session": "def"},
        {"user": "bob", "session": "up"},
    ]
    # With a session as well, the filter goes first.
    async with get_async_connection().start_session() as session:
        command_log.clear()
        found = await SesLogin.objects(session="up").async_get(session=session)
        assert found.user == "bob"
        (find,) = command_log.events
        assert find.command["lsid"]["id"] == session.session_id["id"]


async def test_a_session_that_is_no_session_is_refused(async_alias, command_log):
    with pytest.raises(TypeError) as excinfo:
        await SesAccount.objects.async_get(session="abc")
    assert str(excinfo.value) == (
        "session= takes a pymongo AsyncClientSession, not 'str'"
    )
    with pytest.raises(TypeError, match="AsyncClientSession, not 'int'"):
        await SesAccount(name="Dee").async_save(session=1)
    assert command_log.count() == 0


async def test_a_session_of_another_client_is_refused(async_alias, mongodb_uri):
    ann, _ = await _accounts()
    async with fresh_database("ses_other", mongodb_uri):
        other = get_async_connection("ses_other")
        async with other.start_session() as session:
            ann.balance = 0
            with pytest.raises(ForeignSessionError) as error:
                await ann.async_save(session=session)
            with pytest.raises(ForeignSessionError):
                await SesAccount.objects.async_to_list(session=session)
    assert isinstance(error.value, pymongo.errors.InvalidOperation)
    assert isinstance(error.value, MisuseError)
    assert str(error.value) == (
        "session= belongs to another client than the one of SesAccount "
        "(alias 'default'): a session works only with the client that started it"
    )
    assert await _balances() == {"Ann": 100, "Bob": 0}


async def test_a_cascade_joins_the_explicit_transaction(async_alias):
    owner = await SesOwner(name="Ann").async_save()
    await SesPet(name="Rex", owner=owner).async_save()
    async with get_async_connection().start_session() as session:
        await session.start_transaction()
        await owner.async_delete(session=session)
        assert await SesPet.objects.async_count(session=session) == 0
        assert len(await SesPet.objects.async_to_list()) == 1  # outside it
        await session.abort_transaction()
        assert await SesOwner.objects.async_count() == 1
        # Without a transaction on the session the cascade runs in its own.
        await owner.async_delete(session=session)
    assert await SesOwner.objects.async_count() == 0
    assert await SesPet.objects.async_count() == 0


async def test_a_gridfs_delete_in_an_aborted_transaction_is_undone(async_alias):
    holder = SesFile(name="a")
    await holder.data.async_put(b"hello", filename="a.txt")
    await holder.async_save()
    proxy = (await SesFile.objects.async_first()).data
    async with get_async_connection().start_session() as session:
        await session.start_transaction()
        await proxy.async_delete(session=session)
        await session.abort_transaction()
    stored = (await SesFile.objects.async_first()).data
    assert await stored.async_read() == b"hello"


class SesCard(Document):
    owner = LazyReferenceField(SesOwner)


async def _pet_of_an_uncommitted_owner(session) -> tuple[SesPet, SesOwner]:
    """A committed pet whose owner exists only in ``session``'s transaction."""
    await SesOwner(name="Old").async_save()  # the collections exist already
    await SesPet(name="Old").async_save()
    pet = await SesPet(name="Rex", owner=ObjectId()).async_save()
    await session.start_transaction()  # its snapshot has the pet
    owner = SesOwner(id=pet.owner.pk, name="Ann")
    await owner.async_save(session=session, force_insert=True)
    return pet, owner


async def test_select_related_loads_the_references_in_the_session(async_alias):
    async with get_async_connection().start_session() as session:
        await _pet_of_an_uncommitted_owner(session)
        pets = SesPet.objects(name="Rex")
        [pet] = await pets.async_select_related(session=session)
        assert pet.owner.name == "Ann"
        [outside] = await pets.async_select_related()  # the owner is not there yet
        with pytest.raises(SesOwner.DoesNotExist):
            await outside.owner
        document = await pets.async_first()
        assert (await document.async_select_related(session=session)) is document
        assert document.owner.name == "Ann"
        await session.abort_transaction()
    [pet] = await pets.async_select_related()
    with pytest.raises(SesOwner.DoesNotExist):
        await pet.owner


async def test_fetching_a_reference_in_the_session(async_alias):
    async with get_async_connection().start_session() as session:
        pet, owner = await _pet_of_an_uncommitted_owner(session)
        card = await SesCard(owner=owner.pk).async_save()
        pet = await SesPet.objects.async_get(name="Rex")
        with pytest.raises(SesOwner.DoesNotExist):
            await pet.owner.fetch()
        assert (await pet.owner.fetch(session=session)).name == "Ann"
        pet = await SesPet.objects.async_get(name="Rex")
        assert (await SesPet.owner.async_fetch(pet, session=session)).name == "Ann"
        assert pet.owner.name == "Ann"  # kept in the document
        card = await SesCard.objects.async_get(id=card.pk)
        with pytest.raises(SesOwner.DoesNotExist):
            await card.owner.async_fetch()
        assert (await card.owner.async_fetch(session=session)).name == "Ann"
        await session.abort_transaction()


async def test_reference_queries_carry_the_session(async_alias, command_log):
    owner = await SesOwner(name="Ann").async_save()
    await SesPet(name="Rex", owner=owner).async_save()
    async with get_async_connection().start_session() as session:
        command_log.clear()
        [pet] = await SesPet.objects.async_select_related(session=session)
        pet = await SesPet.objects.async_first(session=session)
        await pet.async_select_related(session=session)
        pet = await SesPet.objects.async_first(session=session)
        await pet.owner.fetch(session=session)
        assert command_log.names == ["find"] * 6
        assert {event.command["lsid"]["id"] for event in command_log.events} == {
            session.session_id["id"]
        }


async def test_select_related_refuses_a_session_of_another_client(
    async_alias, mongodb_uri
):
    owner = await SesOwner(name="Ann").async_save()
    pet = await SesPet(name="Rex", owner=owner).async_save()
    async with fresh_database("ses_other2", mongodb_uri):
        async with get_async_connection("ses_other2").start_session() as session:
            with pytest.raises(ForeignSessionError):
                await pet.async_select_related(session=session)
            with pytest.raises(ForeignSessionError):
                await SesPet.objects.async_select_related(session=session)


async def test_gridfs_reads_and_writes_carry_the_session(async_alias, command_log):
    await SesFile(name="old").async_save()  # the collection exists already
    async with get_async_connection().start_session() as session:
        command_log.clear()
        other = SesFile(name="b")
        await other.data.async_put(b"other", filename="b.txt", session=session)
        holder = SesFile(name="a")
        await SesFile.data.async_put(b"hello", holder, session=session)
        await holder.async_save(session=session)
        proxy = (await SesFile.objects.async_get(name="a", session=session)).data
        assert await proxy.async_read(session=session) == b"hello"
        assert [c async for c in proxy.async_iter_chunks(session=session)] == [b"hello"]
        grid_out = await proxy.async_get(session=session)
        assert await grid_out.read() == b"hello"
        assert await SesFile.data.async_get(holder, session=session) is holder.data
        await proxy.async_replace(b"bye", session=session)
        assert await proxy.async_read(session=session) == b"bye"
        assert {event.command["lsid"]["id"] for event in command_log.events} == {
            session.session_id["id"]
        }
        assert "insert" in command_log.names and "delete" in command_log.names


async def test_gridfs_refuses_transactions_as_pymongo_does(async_alias):
    holder = SesFile(name="a")
    await holder.data.async_put(b"hello")
    async with get_async_connection().start_session() as session:
        await session.start_transaction()
        with pytest.raises(pymongo.errors.InvalidOperation) as put_error:
            await SesFile(name="b").data.async_put(b"x", session=session)
        with pytest.raises(pymongo.errors.InvalidOperation) as read_error:
            await holder.data.async_read(session=session)
        await session.abort_transaction()
    message = "GridFS does not support multi-document transactions"
    assert str(put_error.value) == str(read_error.value) == message


class SesIndexed(Document):
    name = StringField()
    meta = {"indexes": ["name"], "auto_create_index": False}


async def test_index_builds_and_drops_carry_the_session(async_alias, command_log):
    await SesIndexed(name="a").async_save()
    async with get_async_connection().start_session() as session:
        command_log.clear()
        await SesIndexed.async_ensure_indexes(session=session)
        name = await SesIndexed.async_create_index("-name", session=session)
        await SesIndexed.async_drop_collection(session=session)
        assert command_log.names == ["createIndexes", "createIndexes", "drop"]
        assert {event.command["lsid"]["id"] for event in command_log.events} == {
            session.session_id["id"]
        }
    assert name == "name_-1"
    assert await SesIndexed.objects.async_count() == 0


async def test_index_builds_and_drops_refuse_a_session_of_another_client(
    async_alias, mongodb_uri, command_log
):
    await SesIndexed(name="a").async_save()
    async with fresh_database("ses_other3", mongodb_uri):
        async with get_async_connection("ses_other3").start_session() as session:
            command_log.clear()
            with pytest.raises(ForeignSessionError):
                await SesIndexed.async_ensure_indexes(session=session)
            with pytest.raises(ForeignSessionError):
                await SesIndexed.async_create_index("-name", session=session)
            with pytest.raises(ForeignSessionError):
                await SesIndexed.async_drop_collection(session=session)
            assert command_log.names == []
    assert await SesIndexed.objects.async_count() == 1


class SesAuthor(Document):
    name = StringField()


class SesBook(Document):
    author = CachedReferenceField(SesAuthor, fields=["name"], auto_sync=True)


async def test_cached_copies_are_synced_in_the_session_of_the_save(
    async_alias, command_log
):
    author = await SesAuthor(name="Ann").async_save()
    book = await SesBook(author=author).async_save()
    books = await SesBook._async_get_collection()
    async with get_async_connection().start_session() as session:
        await session.start_transaction()
        author.name = "Bob"
        command_log.clear()
        await author.async_save(session=session)
        assert command_log.names == ["update", "update"]  # the author, the copies
        assert {event.command["lsid"]["id"] for event in command_log.events} == {
            session.session_id["id"]
        }
        in_session = await books.find_one({"_id": book.pk}, session=session)
        assert in_session["author"]["name"] == "Bob"
        await session.abort_transaction()
    assert (await books.find_one({"_id": book.pk}))["author"]["name"] == "Ann"


class SesRemote(Document):
    """On the alias ``ses_remote``, whose client is another than the default's."""

    name = StringField()
    meta = {"db_alias": "ses_remote"}


class SesHolder(Document):
    name = StringField()
    remote = ReferenceField(SesRemote)


async def test_a_cascade_save_reaching_another_client_leaves_it_the_session(
    async_alias, mongodb_uri, command_log
):
    """The referenced document of another client is saved in that client's
    bound transaction (none here), not in the session: no ForeignSessionError,
    nothing half-saved."""
    async with fresh_database("ses_remote", mongodb_uri, appname="ses-remote"):
        assert get_async_connection("ses_remote") is not get_async_connection()
        remote = await SesRemote(name="r1").async_save()
        holder = await SesHolder(name="h1", remote=remote).async_save()
        remotes = await SesRemote._async_get_collection()
        holders = await SesHolder._async_get_collection()

        remote.name, holder.name = "r2", "h2"
        async with get_async_connection().start_session() as session:
            command_log.clear()
            await holder.async_save(cascade=True, session=session)
            (update,) = command_log.events  # (the default client's commands)
            assert update.command["lsid"]["id"] == session.session_id["id"]
        assert (await holders.find_one())["name"] == "h2"
        assert (await remotes.find_one())["name"] == "r2"

        remote.name, holder.name = "r3", "h3"
        with pytest.raises(ZeroDivisionError):
            async with async_run_in_transaction():
                await holder.async_save(cascade=True)
                1 / 0  # noqa: B018
        assert (await holders.find_one())["name"] == "h2"  # rolled back
        assert (await remotes.find_one())["name"] == "r3"  # outside it


async def test_reference_fetches_and_files_refuse_a_wrong_session(
    async_alias, mongodb_uri, command_log
):
    owner = await SesOwner(name="Ann").async_save()
    await SesPet(name="Rex", owner=owner).async_save()
    await SesCard(owner=owner).async_save()
    holder = SesFile(name="a")
    await holder.data.async_put(b"hello")
    await holder.async_save()
    owner_client = "the one of SesOwner (alias 'default')"
    bucket = "GridFS bucket 'fs' (alias 'default'), field 'data'"
    async with fresh_database("ses_other4", mongodb_uri, appname="ses-other4"):
        async with get_async_connection("ses_other4").start_session() as foreign:
            for session in (foreign, "abc"):
                pet = await SesPet.objects.async_get(name="Rex")
                card = await SesCard.objects.async_first()
                stored = await SesFile.objects.async_first()
                command_log.clear()
                for fetch, belongs_to in (
                    (partial(pet.owner.fetch, session=session), owner_client),
                    (
                        partial(SesPet.owner.async_fetch, pet, session=session),
                        owner_client,
                    ),
                    (partial(card.owner.async_fetch, session=session), owner_client),
                    (partial(stored.data.async_read, session=session), bucket),
                    (partial(SesFile.data.async_get, stored, session=session), bucket),
                ):
                    error = ForeignSessionError if session is foreign else TypeError
                    with pytest.raises(error) as excinfo:
                        await fetch()
                    assert str(excinfo.value) == (
                        f"session= belongs to another client than {belongs_to}: a "
                        "session works only with the client that started it"
                        if session is foreign
                        else "session= takes a pymongo AsyncClientSession, not 'str'"
                    )
                assert command_log.count() == 0
