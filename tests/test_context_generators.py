"""async_switch_db and async generators: the documented limit and the safe pattern."""

from __future__ import annotations

import asyncio
import contextlib
import gc

import pytest

from mongoengine_async import (
    Document,
    StringField,
    async_run_in_transaction,
    async_switch_db,
    get_async_connection,
)
from mongoengine_async.context import current_session, switched_alias
from mongoengine_async.testing import fresh_database


class GenUser(Document):
    name = StringField()


@pytest.fixture
async def archive(async_alias, mongodb_uri):
    """Alias "archive" holding two users; "default" holds one."""
    async with fresh_database("archive", mongodb_uri):
        async with async_switch_db(GenUser, "archive"):
            old = [GenUser(name="old 1"), GenUser(name="old 2")]
            await GenUser.objects.async_insert(old)
        await GenUser(name="new").async_save()
        yield


@pytest.fixture
async def loop_errors():
    """The errors the event loop reports (such as a generator closed late)."""
    errors: list[BaseException] = []
    loop = asyncio.get_running_loop()
    loop.set_exception_handler(lambda _, context: errors.append(context["exception"]))
    yield errors
    loop.set_exception_handler(None)


async def stop_early(generator) -> tuple[str, str | None, str | None]:
    """Take the first item, then drop the generator as a ``break`` does; returns
    the item's name and the alias the consumer saw during and after the loop."""
    async for user in generator:
        name, during = user.name, switched_alias(GenUser)
        break
    del generator
    gc.collect()
    for _ in range(3):
        await asyncio.sleep(0)  # let the loop close the dropped generator
    return name, during, switched_alias(GenUser)


async def test_yield_inside_the_block_leaks_and_fails_late(archive, loop_errors):
    async def unsafe():
        async with async_switch_db(GenUser, "archive"):
            async for user in GenUser.objects.order_by("name"):
                yield user

    assert await stop_early(unsafe()) == ("old 1", "archive", "archive")
    assert loop_errors == []  # (closed in the loop's context: the token left)


async def test_queryset_made_inside_iterated_outside_is_safe(archive, loop_errors):
    async def safe():
        async with async_switch_db(GenUser, "archive"):
            users = GenUser.objects.order_by("name")
        async for user in users.batch_size(1):
            yield user

    assert await stop_early(safe()) == ("old 1", None, None)
    assert loop_errors == []
    assert [user.name async for user in safe()] == ["old 1", "old 2"]
    assert await GenUser.objects.async_scalar("name") == ["new"]


async def first_of(generator) -> None:
    """Take the first item, then close the generator here (``aclosing``)."""
    async with contextlib.aclosing(generator):
        async for _ in generator:
            break


async def test_aclosing_a_generator_resets_its_switch(archive, loop_errors):
    async def unsafe():
        async with async_switch_db(GenUser, "archive"):
            yield

    await first_of(unsafe())
    assert switched_alias(GenUser) is None
    await GenUser(name="after").async_save()
    assert await GenUser.objects.order_by("name").async_scalar("name") == [
        "after",
        "new",
    ]
    assert loop_errors == []


async def test_aclosing_a_generator_aborts_its_transaction(archive, loop_errors):
    seen = []

    async def unsafe():
        async with async_run_in_transaction() as session:
            seen.append(session.session_id)
            await GenUser(name="in the transaction").async_save()
            yield

    await first_of(unsafe())
    assert current_session() is None
    await GenUser(name="after").async_save()
    assert await GenUser.objects.order_by("name").async_scalar("name") == [
        "after",
        "new",
    ]
    stage = {"$currentOp": {"idleSessions": True, "allUsers": True}}
    match = {"$match": {"lsid.id": seen[0]["id"], "transaction": {"$exists": True}}}
    admin = get_async_connection().admin
    assert await (await admin.aggregate([stage, match])).to_list() == []
    assert loop_errors == []


async def test_closed_by_another_task_the_iterating_task_keeps_the_switch(
    archive, loop_errors
):
    """The documented limit: a generator iterated by one task and closed by
    another (``aclose()`` in a task of its own) leaves the first switched; no
    code can change another task's context."""

    async def unsafe():
        async with async_switch_db(GenUser, "archive"):
            yield

    generator = unsafe()
    await generator.__anext__()
    await asyncio.create_task(generator.aclose())
    assert switched_alias(GenUser) == "archive"
    assert loop_errors == []


async def test_a_generator_closing_the_one_it_iterates_resets_its_switch(
    archive, loop_errors
):
    """Nested generators: the outer one closing the inner one itself
    (``aclosing``) restores the consumer's alias once the consumer closes
    the outer one; else the inner one, closed later by the loop, leaves the
    consumer switched (the documented limit)."""

    async def inner():
        async with async_switch_db(GenUser, "archive"):
            yield

    async def leaves_inner_open():
        async for item in inner():
            yield item

    async def closes_inner():
        async with contextlib.aclosing(inner()) as items:
            async for item in items:
                yield item

    async def consumed(generator) -> str | None:
        await first_of(generator)
        gc.collect()
        for _ in range(3):
            await asyncio.sleep(0)  # let the loop close a dropped generator
        return switched_alias(GenUser)

    assert await asyncio.create_task(consumed(closes_inner())) is None
    assert await asyncio.create_task(consumed(leaves_inner_open())) == "archive"
    assert loop_errors == []
