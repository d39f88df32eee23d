"""One connect_async() used from any event loop: asyncio.run() twice, worker
threads with loops of their own, and pytest's fresh loop per test."""

from __future__ import annotations

import asyncio
import contextlib
import copy
import gc
import logging
import os
import pickle
import subprocess
import sys
import textwrap
import threading
import time
import warnings
import weakref
from collections.abc import AsyncGenerator, AsyncIterator, Coroutine, Iterator
from datetime import datetime
from typing import Any
from uuid import uuid4

import pytest
from bson import Binary
from bson.tz_util import utc
from pymongo import MongoClient, monitoring
from pymongo.errors import OperationFailure

from conftest import loop_prelude, run_script
from mongoengine_async import (
    CASCADE,
    AsyncUsageError,
    DateTimeField,
    Document,
    FileField,
    IntField,
    ReferenceField,
    StringField,
    async_run_in_transaction,
    async_run_transaction,
    connect_async,
    connection,
    context,
    disconnect_async,
    get_async_connection,
)
from mongoengine_async.testing import CommandLog


class LoopBook(Document):
    title = StringField()
    copies = IntField(default=0)
    meta = {"db_alias": "loops", "indexes": ["title"]}


@pytest.fixture
def database(mongodb_uri: str) -> Iterator[str]:
    """A fresh database name, dropped afterwards."""
    name = f"test_loops_{uuid4().hex[:12]}"
    yield name
    with MongoClient(mongodb_uri) as client:
        client.drop_database(name)


@pytest.fixture
def loops_alias(mongodb_uri: str, database: str) -> Iterator[str]:
    """Alias "loops" connected once, in a loop of its own that has closed since."""
    asyncio.run(connect_async(database, alias="loops", host=mongodb_uri, **_STANDARD))
    yield "loops"
    asyncio.run(disconnect_async("loops"))


_STANDARD = {"uuidRepresentation": "standard"}


def _stored_titles(mongodb_uri: str, database: str) -> list[str]:
    with MongoClient(mongodb_uri) as client:
        return sorted(raw["title"] for raw in client[database].loop_book.find())


def test_a_queryset_built_outside_any_loop_works_in_each_asyncio_run(
    loops_alias, mongodb_uri, database
):
    """A queryset built before asyncio.run (as at module level) is awaited in two
    runs; each run uses its own client, never the closed loop's."""
    novels = LoopBook.objects(title__startswith="novel").order_by("title")

    async def add_and_read(title: str) -> tuple[list[str], int, object]:
        await LoopBook(title=title).async_save()
        await novels.async_update(inc__copies=1)
        titles = [book.title async for book in novels]
        return titles, await novels.async_sum("copies"), get_async_connection("loops")

    first = asyncio.run(add_and_read("novel 1"))
    second = asyncio.run(add_and_read("novel 2"))

    assert first[:2] == (["novel 1"], 1)
    assert second[:2] == (["novel 1", "novel 2"], 3)
    assert first[2] is not second[2]  # the first loop's client is not reused
    outside = get_async_connection("loops")  # outside any loop: a fresh one
    assert outside is not first[2] and outside is not second[2]
    assert _stored_titles(mongodb_uri, database) == ["novel 1", "novel 2"]


class LoopEvent(Document):
    """Reads its collection with tz-aware datetimes (collection options)."""

    at = DateTimeField()
    meta = {"db_alias": "loops"}

    @classmethod
    def _get_collection(cls):
        collection = super()._get_collection()
        aware = collection.codec_options.with_options(tz_aware=True)
        return collection.with_options(codec_options=aware)


def test_a_queryset_keeps_its_collection_options_in_another_loop(loops_alias):
    """Options of the collection a queryset was built with (here tz-aware
    datetimes) still apply when it is awaited on another loop's client."""
    events = LoopEvent.objects.as_pymongo()

    async def add_and_read() -> list:
        await LoopEvent(at=datetime(2024, 5, 1, 12, 30)).async_save()
        return [raw["at"] async for raw in events]

    assert asyncio.run(add_and_read()) == [datetime(2024, 5, 1, 12, 30, tzinfo=utc)]
    assert [at.tzinfo for at in asyncio.run(add_and_read())] == [utc, utc]


def test_documents_and_using_querysets_made_in_one_run_work_in_the_next(
    loops_alias, mongodb_uri, database
):
    """A document moved with switch_db() and a using() queryset hold the
    collection of the loop they were made in; the next run still uses them."""
    other = f"{database}_other"

    async def make() -> tuple[LoopBook, object]:
        await connect_async(other, alias="loops-other", host=mongodb_uri, **_STANDARD)
        book = await LoopBook(title="moved").switch_db("loops-other").async_save()
        return book, LoopBook.objects.using("loops-other")

    async def change(book: LoopBook, elsewhere) -> list[tuple[str, int]]:
        book.copies = 5
        await book.async_save()
        await book.async_reload()
        return [(b.title, b.copies) async for b in elsewhere]

    try:
        book, elsewhere = asyncio.run(make())
        assert asyncio.run(change(book, elsewhere)) == [("moved", 5)]
        assert _stored_titles(mongodb_uri, other) == ["moved"]
        assert _stored_titles(mongodb_uri, database) == []
    finally:
        asyncio.run(disconnect_async("loops-other"))
        with MongoClient(mongodb_uri) as client:
            client.drop_database(other)


async def test_worker_threads_with_their_own_loops_beside_the_main_loop(
    mongodb_uri, database
):
    """Threads build a queryset outside any loop, then run loops of their own
    while the main loop keeps working with its client."""
    client = await connect_async(database, alias="loops", host=mongodb_uri, **_STANDARD)
    try:
        results = await asyncio.gather(
            *(asyncio.to_thread(_worker, f"thread {n}") for n in range(3)),
            _main_loop_work(),
        )
        assert get_async_connection("loops") is client
        assert await LoopBook.objects(title="main").async_count() == 5
    finally:
        await disconnect_async("loops")
    *threads, main = results
    # Each thread: its two runs, each seeing its own two saves.
    assert threads == [(2, 4, False)] * 3
    assert main == [1, 2, 3, 4, 5]
    assert _stored_titles(mongodb_uri, database) == sorted(
        ["main"] * 5 + [f"thread {n}" for n in range(3) for _ in range(4)]
    )


def _worker(title: str) -> tuple[int, int, bool]:
    """Two asyncio.run() in a thread, on a queryset built before either."""
    mine = LoopBook.objects(title=title)

    async def save_twice() -> tuple[int, object]:
        await LoopBook(title=title).async_save()
        await LoopBook(title=title).async_save()
        return await mine.async_count(), get_async_connection("loops")

    first, first_client = asyncio.run(save_twice())
    second, second_client = asyncio.run(save_twice())
    return first, second, first_client is second_client


async def _main_loop_work() -> list[int]:
    counts = []
    for _ in range(5):
        await LoopBook(title="main").async_save()
        counts.append(await LoopBook.objects(title="main").async_count())
        await asyncio.sleep(0.01)  # let the threads' loops run meanwhile
    return counts


def test_two_pytest_tests_with_their_own_loops_share_a_module_connection(
    mongodb_uri, database, tmp_path
):
    """What a user writes: connect once at module level, then async tests (each
    on a fresh function-scoped loop) use it and a module-level queryset."""
    test_file = tmp_path / "test_user_suite.py"
    test_file.write_text(_USER_SUITE.format(database=database))
    result = _pytest_in(tmp_path, mongodb_uri, str(test_file))
    assert "2 passed" in result.stdout
    assert _stored_titles(mongodb_uri, database) == ["one", "two"]


def _pytest_in(
    directory: Any, mongodb_uri: str, *args: str
) -> subprocess.CompletedProcess[str]:
    """pytest run on ``args`` in ``directory``, as a user runs it (on the
    loop of this run: a conftest.py sets it); it passed."""
    if prelude := loop_prelude():
        (directory / "conftest.py").write_text(prelude)
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *args],
        cwd=directory,
        env={**os.environ, "MONGODB_URI": mongodb_uri},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return result


_USER_SUITE = textwrap.dedent(
    """
    import asyncio
    import os

    import pytest

    from mongoengine_async import Document, StringField, connect_async

    class LoopBook(Document):
        title = StringField()
        meta = {{"indexes": ["title"]}}

    asyncio.run(connect_async("{database}", host=os.environ["MONGODB_URI"],
                              uuidRepresentation="standard"))
    books = LoopBook.objects.order_by("title")
    loops = []

    @pytest.mark.asyncio
    async def test_one():
        loops.append(asyncio.get_running_loop())
        await LoopBook(title="one").async_save()
        assert await books.async_scalar("title") == ["one"]

    @pytest.mark.asyncio
    async def test_two():
        assert loops[0] is not asyncio.get_running_loop()
        await LoopBook(title="two").async_save()
        assert await books.async_scalar("title") == ["one", "two"]
    """
)


def test_tests_with_their_own_loops_leave_no_client_unclosed(
    mongodb_uri, database, tmp_path
):
    """The suite above under ``-W error`` (as projects setting pytest's
    ``filterwarnings = error`` run), with a module of tests sharing a
    module-scoped loop first: each loop closes its clients as it shuts down.
    The client of a closed loop was left to the garbage collector, whose
    ResourceWarnings (PyMongo's "Unclosed AsyncMongoClient", asyncio's
    unclosed transports) failed the tests that happened to collect them; on
    PyMongo 4.17, whose close() begins async generators of its own, a close
    at the loop's shutdown was itself cut short by the loop's warning of them."""
    (tmp_path / "test_a_module_loop.py").write_text(
        _MODULE_LOOP_SUITE.format(database=database)
    )
    (tmp_path / "test_user_suite.py").write_text(
        _STRICT_SUITE.format(database=database)
    )
    result = _pytest_in(
        tmp_path,
        mongodb_uri,
        *("-W", "error", "-W", "ignore::DeprecationWarning"),
        *("test_a_module_loop.py", "test_user_suite.py"),
    )
    assert "6 passed" in result.stdout


_STRICT_SUITE = textwrap.dedent(
    """
    import asyncio
    import gc
    import os

    import pytest

    from mongoengine_async import Document, StringField, connect_async

    class LoopBook(Document):
        title = StringField()

    asyncio.run(connect_async("{database}", host=os.environ["MONGODB_URI"],
                              uuidRepresentation="standard"))
    books = LoopBook.objects.order_by("title")

    @pytest.mark.parametrize("title", ["one", "two", "three", "four"])
    @pytest.mark.asyncio
    async def test_save_and_read(title):
        gc.collect()  # the clients of the loops before, if still open
        await LoopBook(title=title).async_save()
        assert title in await books.async_scalar("title")
    """
)

_MODULE_LOOP_SUITE = textwrap.dedent(
    """
    import asyncio
    import os

    import pytest

    from mongoengine_async import Document, StringField, connect_async

    pytestmark = pytest.mark.asyncio(loop_scope="module")

    class ModuleBook(Document):
        title = StringField()
        meta = {{"db_alias": "module"}}

    async def test_connect():
        await connect_async("{database}", alias="module",
                            host=os.environ["MONGODB_URI"],
                            uuidRepresentation="standard")
        await ModuleBook(title="first").async_save()

    async def test_same_loop():
        assert await ModuleBook.objects.async_count() == 1
    """
)


def _run_loop_by_hand(main: Coroutine[Any, Any, Any]) -> None:
    """``main`` on a loop of its own, shut down as asyncio.run() does."""
    loop = asyncio.new_event_loop()
    try:
        loop.run_until_complete(main)
    finally:
        loop.run_until_complete(loop.shutdown_asyncgens())
        loop.close()


if sys.version_info >= (3, 11):
    from asyncio import Runner
else:  # as pytest-asyncio uses
    from backports.asyncio.runner import Runner


def _run_in_runner(main: Coroutine[Any, Any, Any]) -> None:
    """``main`` in an ``asyncio.Runner`` (its backport on Python 3.10), then
    another run: the client outlives the first."""
    with Runner() as runner:
        runner.run(main)
        runner.run(LoopBook.objects.async_count())


@pytest.mark.parametrize("run", [asyncio.run, _run_in_runner, _run_loop_by_hand])
def test_a_loop_that_shuts_down_closes_its_client(loops_alias, run):
    """The client a loop got is closed as the loop shuts down (its
    ``shutdown_asyncgens()``) and leaves the registry: its sockets and server
    sessions were left to the garbage collector, with ResourceWarnings."""
    clients = []

    async def main() -> None:
        await LoopBook(title="one").async_save()
        clients.append(get_async_connection(loops_alias))

    run(main())
    assert clients[0]._closed
    assert get_async_connection(loops_alias) is not clients[0]


async def _until_the_closer_began() -> None:
    """Return once the closer of the running loop's clients, which its
    ``shutdown_asyncgens()`` finalises, began its work (left the registry)."""
    loop = asyncio.get_running_loop()
    deadline = time.monotonic() + 10
    while loop in connection._closers:
        assert time.monotonic() < deadline, "the closer never began"
        await asyncio.sleep(0.01)


@pytest.mark.filterwarnings("error::ResourceWarning")
def test_database_work_in_an_async_generators_cleanup_at_shutdown(loops_alias):
    """An async generator left unfinished is finalised by the loop's
    ``shutdown_asyncgens()``, alongside the closer of the loop's clients: its
    cleanup's database work runs on the loop's client, closed once it is done.
    The closer closed the client first: the cleanup got a new one, never
    closed (or had its own closed under it). Under ``-W
    error::ResourceWarning`` too: the loop's first-iteration hook stays off
    while the closer waits for that cleanup (asyncio's "asynchronous
    generator ... was scheduled after loop.shutdown_asyncgens() call", of
    PyMongo's ``_tmp_session`` generator, raised in the save: nothing saved)."""
    clients = []

    async def titles() -> AsyncIterator[str]:
        try:
            yield "one"
            yield "two"
        finally:
            await _until_the_closer_began()
            clients.append(get_async_connection(loops_alias))
            await LoopBook(title="cleanup").async_save()

    async def main() -> AsyncIterator[str]:
        await LoopBook(title="one").async_save()
        clients.append(get_async_connection(loops_alias))
        generator = titles()
        async for _ in generator:
            break
        return generator  # (kept unfinished until the loop shuts down)

    kept = asyncio.run(main())
    assert clients[1] is clients[0]
    assert clients[0]._closed
    assert asyncio.run(LoopBook.objects(title="cleanup").async_count()) == 1
    del kept


def test_disconnect_in_an_async_generators_cleanup_at_shutdown(loops_alias):
    """``disconnect_async()`` in the cleanup of an async generator that the
    loop's ``shutdown_asyncgens()`` finalises closes the client: PyMongo
    4.17's close() begins async generators of its own, which the loop warned
    of then ("scheduled after loop.shutdown_asyncgens() call"), a
    ResourceWarning raised inside close() under ``-W error``: the client was
    left unclosed ("Unclosed AsyncMongoClient", unclosed sockets)."""
    clients = []

    async def pages() -> AsyncIterator[int]:
        try:
            yield 1
            yield 2
        finally:
            await disconnect_async(loops_alias)

    async def main() -> AsyncIterator[int]:
        await LoopBook(title="one").async_save()
        clients.append(get_async_connection(loops_alias))
        generator = pages()
        await generator.__anext__()
        return generator  # (kept unfinished until the loop shuts down)

    with warnings.catch_warnings():
        warnings.simplefilter("error", ResourceWarning)
        kept = asyncio.run(main())
    assert clients[0]._closed
    del kept


class _FlagKeepingLoop(asyncio.SelectorEventLoop):
    """asyncio's loop keeping whether its ``shutdown_asyncgens()`` began to
    itself, as uvloop's does (a C field): only asyncio's code reads it."""

    def __getattribute__(self, name: str) -> Any:
        if name == "_asyncgens_shutdown_called":
            caller = sys._getframe(1).f_globals.get("__name__")
            if caller != "asyncio.base_events":
                raise AttributeError(name)
        return super().__getattribute__(name)


def test_a_loop_whose_first_client_comes_in_its_shutdown(loops_alias):
    """A loop whose first client is got by an async generator's cleanup that
    its ``shutdown_asyncgens()`` runs does not have the client closed at its
    shutdown, begun already (left to the garbage collector, as documented),
    on any loop: on uvloop's the closer begun then made the loop warn
    ("asynchronous generator ... was scheduled after loop.shutdown_asyncgens()
    call", a ResourceWarning, raised in that cleanup under
    ``-W error::ResourceWarning``)."""
    got = []

    async def pages() -> AsyncIterator[int]:
        try:
            yield 1
            yield 2
        finally:
            got.append(get_async_connection(loops_alias))

    async def main() -> AsyncIterator[int]:
        generator = pages()
        await generator.__anext__()
        return generator  # (kept unfinished until the loop shuts down)

    loop = _FlagKeepingLoop()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        kept = loop.run_until_complete(main())
        loop.run_until_complete(loop.shutdown_asyncgens())
        loop.close()
    assert len(got) == 1
    assert [str(w.message) for w in caught if w.category is ResourceWarning] == []
    del kept


@pytest.mark.parametrize("kind", [asyncio.SelectorEventLoop, _FlagKeepingLoop])
def test_a_client_got_after_a_loops_shutdown_asyncgens(loops_alias, kind):
    """A loop run by hand that runs more code once its ``shutdown_asyncgens()``
    has finished (which closed its client): the client it gets then is had
    with no warning, and ``disconnect_async()`` closes it. The loop warned of
    the clients' closer begun then ("asynchronous generator ... was scheduled
    after loop.shutdown_asyncgens() call", a ResourceWarning, raised by
    ``get_async_connection()`` under ``-W error``), and of PyMongo 4.17's own
    generators in that close (the client left unclosed)."""
    clients = []

    async def client() -> None:
        clients.append(get_async_connection(loops_alias))

    loop = kind()
    try:
        loop.run_until_complete(client())
        loop.run_until_complete(loop.shutdown_asyncgens())
        with warnings.catch_warnings():
            warnings.simplefilter("error", ResourceWarning)
            loop.run_until_complete(client())
            loop.run_until_complete(disconnect_async(loops_alias))
    finally:
        loop.close()
    assert clients[0] is not clients[1]
    assert clients[0]._closed and clients[1]._closed


def test_a_loop_closed_without_shutting_down_keeps_its_client_open(
    mongodb_uri, database
):
    """``loop.close()`` alone: the loop can no longer run anything, so nothing
    can close its client (left to the garbage collector, as documented); the
    next loop gets a client of its own. (In a process of its own: what the
    collector finds of that client fails in odd ways, the loop being closed.)"""
    assert _printed(_CLOSED_BY_HAND, mongodb_uri, database) == ["False", "True"]


def _printed(script: str, mongodb_uri: str, database: str) -> list[str]:
    """The words ``script`` (its database: ``{}``) prints, in a process of
    its own, warnings ignored."""
    return run_script(script.format(database), mongodb_uri).stdout.split()


_CLOSED_BY_HAND = textwrap.dedent(
    """
    import asyncio, os
    from mongoengine_async import (
        Document, StringField, connect_async, get_async_connection)

    class LoopBook(Document):
        title = StringField()

    async def client_after_a_save():
        await LoopBook(title="one").async_save()
        return get_async_connection()

    asyncio.run(connect_async("{}", host=os.environ["MONGODB_URI"]))
    loop = asyncio.new_event_loop()
    client = loop.run_until_complete(client_after_a_save())
    loop.close()
    print(client._closed)
    print(asyncio.run(client_after_a_save()) is not client)
    """
)


def test_a_save_in_flight_when_its_loop_is_closed_by_hand(mongodb_uri, database):
    """``loop.close()`` alone with a save of a document still in flight (its
    task never cancelled, then collected): the next save, delete or reload
    of that document, in another loop, takes the turn that save can no longer
    end. Each waited for it forever. (In a process of its own, as above.)"""
    printed = _printed(_SAVE_IN_FLIGHT, mongodb_uri, database)
    assert printed == ["saved", "2", "reloaded", "deleted"]


_SAVE_IN_FLIGHT = textwrap.dedent(
    """
    import asyncio, gc, os
    from mongoengine_async import Document, IntField, connect_async

    class LoopCounter(Document):
        n = IntField()

    async def left_in_flight(document, saves):
        for n in range(1, saves + 1):
            document.n = n
            asyncio.ensure_future(document.async_save())
        await asyncio.sleep(0)

    async def in_turn(document):
        document.n = 2
        await asyncio.wait_for(document.async_save(), 10)
        print("saved", (await LoopCounter.objects.async_get(pk=document.pk)).n)
        await asyncio.wait_for(document.async_reload(), 10)
        print("reloaded")
        await asyncio.wait_for(document.async_delete(), 10)
        print("deleted")

    asyncio.run(connect_async("{}", host=os.environ["MONGODB_URI"]))
    document = asyncio.run(LoopCounter(n=0).async_save())
    for saves in (1, 3):  # the turn held by a task, then waiters too
        loop = asyncio.new_event_loop()
        loop.run_until_complete(left_in_flight(document, saves))
        loop.close()
        gc.collect()
    asyncio.run(in_turn(document))
    """
)


def test_a_transaction_whose_loop_is_closed_by_hand_is_collected_quietly(
    mongodb_uri, database
):
    """``loop.close()`` alone while a transaction block (and a callback given
    to ``async_run_transaction``) is under way: collected, its coroutine is
    closed outside its loop, and its cleanup tried to hand ``with_transaction``
    the abort ("Event loop is closed"); the rest of its cleanup then raised in
    its stead, printed as "Exception ignored in: <coroutine ...>" with
    "ValueError: <Token ...> was created in a different Context". Nothing of
    the transaction is committed (left open on the server until its time
    limit); the next loop uses the alias."""
    result = run_script(_TRANSACTION_CLOSED_BY_HAND.format(database), mongodb_uri)
    *sessions, after = result.stdout.split()
    assert (len(sessions), after) == (2, "1")
    assert "Exception ignored" not in result.stderr, result.stderr
    with MongoClient(mongodb_uri) as client:
        assert client[database].loop_counter.count_documents({}) == 0
        # (Their transactions ended: else dropping the database waits for them.)
        left = [{"id": Binary(bytes.fromhex(lsid), 4)} for lsid in sessions]
        client.admin.command("killSessions", left)


_TRANSACTION_CLOSED_BY_HAND = textwrap.dedent(
    """
    import asyncio, gc, os
    from mongoengine_async import (
        Document, IntField, async_run_in_transaction, async_run_transaction,
        connect_async)
    from mongoengine_async.context import current_session

    class LoopCounter(Document):
        n = IntField()

    class LoopOther(Document):
        n = IntField()

    async def saves_then_stops():
        for n in range(3):
            await LoopCounter(n=n).async_save()
        print(current_session().session_id["id"].hex())  # (left open)
        asyncio.get_running_loop().stop()
        await asyncio.Event().wait()  # (never set: left under way)

    async def block():
        async with async_run_in_transaction():
            await saves_then_stops()

    asyncio.run(connect_async("{}", host=os.environ["MONGODB_URI"]))
    asyncio.run(LoopCounter.objects.async_delete())  # (the collection made)
    for under_way in (block, lambda: async_run_transaction(saves_then_stops)):
        loop = asyncio.new_event_loop()
        task = loop.create_task(under_way())
        loop.run_forever()
        assert not task.done()
        loop.close()
        del task
        gc.collect()

    async def after():
        async with async_run_in_transaction():
            await LoopOther(n=9).async_save()
        print(await LoopOther.objects(n=9).async_count())

    asyncio.run(after())
    """
)


@pytest.mark.parametrize("kind", ["proxy", "lazy"])
def test_a_reference_fetched_as_its_loop_is_closed_by_hand(mongodb_uri, database, kind):
    """``loop.close()`` alone while fetches of a reference (a ReferenceField's
    proxy, a LazyReference) wait for its query: in the next loop, concurrent
    fetches of it share one query again (the closed loop's, collected
    meanwhile, leave it alone), and the closed loop is let go. Each sent its
    own query, and the reference held the closed loop for good.
    (In a process of its own, as above.)"""
    script = _FETCH_AS_LOOP_CLOSES.replace("KIND", kind)
    printed = _printed(script, mongodb_uri, database)
    assert printed == ["finds", "1", "read", "a", "collected", "True"]


# What the scripts of a reference fetched as its loop closes share: a book's
# references (a proxy, a LazyReference) to an author, their fetch by KIND.
_FETCH_MODELS = textwrap.dedent(
    """
    import asyncio, gc, os, sys, weakref
    from pymongo import monitoring
    from mongoengine_async import (
        Document, LazyReferenceField, ReferenceField, StringField, connect_async)

    class FetchAuthor(Document):
        name = StringField()

    class FetchBook(Document):
        author = ReferenceField(FetchAuthor)
        lazy = LazyReferenceField(FetchAuthor)

    def fetch(reference):
        return reference.fetch() if "KIND" == "proxy" else reference.async_fetch()
    """
)


_FETCH_AS_LOOP_CLOSES = _FETCH_MODELS + textwrap.dedent(
    """
    finds = []

    class Listener(monitoring.CommandListener):
        def started(self, event):
            if event.command.get("find") == "fetch_author":
                finds.append(event)
                if stopping:
                    loop.stop()  # as the query is sent
                else:  # the closed loop's fetches collected, ended meanwhile
                    gc.collect()

        def succeeded(self, event):
            pass

        def failed(self, event):
            pass

    async def stored():
        await connect_async(
            "{}", host=os.environ["MONGODB_URI"], event_listeners=[Listener()])
        author = await FetchAuthor(name="a").async_save()
        book = await FetchBook(author=author, lazy=author).async_save()
        book = await FetchBook.objects.async_get(pk=book.pk)
        return book.author if "KIND" == "proxy" else book.lazy

    async def fetches(count):
        return await asyncio.gather(*(fetch(reference) for _ in range(count)))

    stopping = False
    loop = asyncio.new_event_loop()
    reference = loop.run_until_complete(stored())
    stopping = True
    loop.create_task(fetches(3))
    loop.run_forever()
    stopping = False
    loop.close()
    closed = weakref.ref(loop)
    del loop
    finds.clear()
    read = asyncio.run(fetches(4))
    print("finds", len(finds))
    print("read", *{{document.name for document in read}})
    gc.collect()
    print("collected", closed() is None)
    """
)


@pytest.mark.parametrize("kind", ["proxy", "lazy"])
def test_a_closed_loops_fetch_collected_during_another_fetch(
    mongodb_uri, database, kind
):
    """A fetch left by a loop closed by hand, collected by a garbage collection
    that a later fetch (of another reference) starts while it holds the lock of
    fetches in flight: the collected fetch's cleanup takes that lock too, in
    the same thread. Both end; the collection hung for good.
    (In a process of its own, as above.)"""
    script = _COLLECTED_DURING_A_FETCH.replace("KIND", kind)
    printed = _printed(script, mongodb_uri, database)
    assert printed == ["read", "a", "collected", "True"]


_COLLECTED_DURING_A_FETCH = _FETCH_MODELS + textwrap.dedent(
    """
    class Listener(monitoring.CommandListener):
        def started(self, event):
            if event.command.get("find") == "fetch_author" and stopping:
                loop.stop()  # as the query is sent

        def succeeded(self, event):
            pass

        def failed(self, event):
            pass

    async def stored():
        await connect_async(
            "{}", host=os.environ["MONGODB_URI"], event_listeners=[Listener()])
        author = await FetchAuthor(name="a").async_save()
        references = []
        for _ in range(2):
            book = await FetchBook(author=author, lazy=author).async_save()
            book = await FetchBook.objects.async_get(pk=book.pk)
            references.append(book.author if "KIND" == "proxy" else book.lazy)
        return references

    async def fetches(reference, count):
        return await asyncio.gather(*(fetch(reference) for _ in range(count)))

    stopping = False
    loop = asyncio.new_event_loop()
    first, other = loop.run_until_complete(stored())
    stopping = True
    loop.create_task(fetches(first, 3))
    loop.run_forever()
    stopping = False
    loop.close()
    closed = weakref.ref(loop)
    del loop
    gc.disable()
    asyncio.run(fetches(first, 2))  # takes over: the closed loop's is garbage

    def collecting(make):
        # A collection, as an allocation may start one, in the fetch's lock.
        def made(*args, **kwargs):
            if sys._getframe(1).f_code.co_name in ("fetch", "_fetch_lock"):
                gc.collect()
            return make(*args, **kwargs)
        return made

    asyncio.BaseEventLoop.create_future = collecting(
        asyncio.BaseEventLoop.create_future)
    asyncio.Lock = collecting(asyncio.Lock)
    read = asyncio.run(fetches(other, 2))
    print("read", *{{document.name for document in read}})
    gc.collect()  # (uvloop's: the old client's transports, in cycles, hold it)
    print("collected", closed() is None)
    """
)


def test_a_fence_whose_loop_is_stopped_as_it_ends_logs_no_error(mongodb_uri, database):
    """A delete of its own transaction cancelled once sent: its abort is
    fenced by a read the server refuses, as meant; the loop stopped as that
    read ends and closed alone (``loop.close()``). The read's error, never
    awaited, was logged as "Task exception was never retrieved" with
    "unknown top level operator: $mongoengine_async_fence", beside the
    report of the abort left undone. (In a process of its own, as above.)"""
    result = run_script(_FENCE_AS_LOOP_STOPS.format(database), mongodb_uri)
    assert result.stdout.split() == ["fence", "refused"]
    assert "The event loop closed before the abort of a transaction" in result.stderr
    assert "never retrieved" not in result.stderr
    assert "mongoengine_async_fence" not in result.stderr


def test_a_fence_failing_otherwise_as_its_loop_is_stopped_is_logged(
    mongodb_uri, database
):
    """As above, the fence's read failing instead with an error of no
    server's (here a ZeroDivisionError, as a bug would raise): it is logged
    as asyncio logs an error never retrieved. It was dropped unseen."""
    fails = _FENCE_AS_LOOP_STOPS.replace("# (MAY FAIL)", _FAILING_FENCE)
    result = run_script(fails.format(database), mongodb_uri)
    assert result.stdout.split() == ["fence", "refused"]
    assert "Task exception was never retrieved" in result.stderr
    assert "ZeroDivisionError: division by zero" in result.stderr


_FAILING_FENCE = textwrap.dedent(
    """
    from pymongo.asynchronous.collection import AsyncCollection
    find_one = AsyncCollection.find_one

    async def failing_fence(self, *args, **kwargs):
        try:
            return await find_one(self, *args, **kwargs)
        except Exception as error:
            if "mongoengine_async_fence" in str(error):
                1 / 0
            raise

    AsyncCollection.find_one = failing_fence
    """
)


_FENCE_AS_LOOP_STOPS = textwrap.dedent(
    """
    import asyncio, gc, os
    from pymongo import monitoring
    from mongoengine_async import (
        CASCADE, Document, ReferenceField, StringField, connect_async)
    # (MAY FAIL)

    class FenceAuthor(Document):
        name = StringField()

    class FenceBook(Document):
        author = ReferenceField(FenceAuthor, reverse_delete_rule=CASCADE)

    loop = asyncio.new_event_loop()
    deleting = []

    class Listener(monitoring.CommandListener):
        def started(self, event):
            if event.command_name == "delete" and deleting:
                loop.call_soon(deleting.pop().cancel)  # once sent

        def succeeded(self, event):
            pass

        def failed(self, event):
            if "$mongoengine_async_fence" in str(event.failure):
                print("fence refused")
                loop.stop()  # as the fence's read ends

    async def main():
        await connect_async(
            "{}", host=os.environ["MONGODB_URI"], event_listeners=[Listener()])
        author = await FenceAuthor(name="a").async_save()
        await FenceBook(author=author).async_save()
        deleting.append(asyncio.ensure_future(author.async_delete()))
        await asyncio.sleep(30)
        print("no fence")
        loop.stop()

    loop.create_task(main())
    loop.run_forever()
    loop.close()
    gc.collect()
    """
)


class LoopScan(Document):
    scan = FileField(db_alias="loops")
    meta = {"db_alias": "loops"}


async def _left_at_once(read: str) -> None:
    """``break`` out of an ``async for`` of ``read`` whose server cursor has
    more to give, as the last thing the loop runs."""
    if read == "file":
        scan = LoopScan()  # more than a batch of chunks (4 MB)
        await scan.scan.async_put(b"x" * 5 * 1024 * 1024)
        await scan.async_save()
        async for _ in scan.scan:
            break
        return
    if read == "change stream":
        stream = LoopBook.objects.async_watch()
        assert await stream.try_next() is None  # opened before the insert
        await LoopBook(title="new").async_save()
        async for _ in stream:
            break
        return
    await LoopBook.objects.async_insert([LoopBook(title=str(n)) for n in range(150)])
    if read == "queryset":
        async for _ in LoopBook.objects:
            break
    else:
        async for _ in LoopBook.objects.async_aggregate([{"$match": {}}]):
            break


@pytest.mark.parametrize("read", ["queryset", "aggregate", "change stream", "file"])
def test_leaving_an_async_for_as_its_loop_ends(loops_alias, read, caplog):
    """``break`` as ``asyncio.run()`` ends: the generator's finaliser runs as
    the loop shuts down, its ``aclose()`` cancelled before it starts (so the
    cancellation, then GeneratorExit, came into the ``killCursors`` its
    cleanup awaited): PyMongo's tasks of that command were left pending as
    the loop closed ("Task was destroyed but it is pending!")."""
    asyncio.run(_left_at_once(read))
    gc.collect()
    destroyed = [r for r in caplog.records if "Task was destroyed" in r.getMessage()]
    assert not destroyed, destroyed[0].getMessage()


def test_threads_running_many_short_loops_at_once(mongodb_uri, database):
    """Threads each running many short loops on one alias at the same time:
    every loop gets a client of its own; the registry (changed as loops come
    and their closed predecessors' clients go) never breaks."""
    errors: list[BaseException] = []

    async def use_alias(title: str) -> object:
        client = get_async_connection("loops")
        if title:
            await LoopBook(title=title).async_save()
        return client

    def run_loops(title: str) -> None:
        try:
            clients = [asyncio.run(use_alias("")) for _ in range(200)]
            clients.append(asyncio.run(use_alias(title)))
            assert len({id(client) for client in clients[-2:]}) == 2
        except BaseException as error:  # reported below
            errors.append(error)

    asyncio.run(connect_async(database, alias="loops", host=mongodb_uri, **_STANDARD))
    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)  # switch threads often: races show up at once
    try:
        threads = [
            threading.Thread(target=run_loops, args=(f"thread {n}",)) for n in range(8)
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    finally:
        sys.setswitchinterval(interval)
        asyncio.run(disconnect_async("loops"))
    assert errors == []
    assert _stored_titles(mongodb_uri, database) == [f"thread {n}" for n in range(8)]


@pytest.fixture
def worker_loop() -> Iterator[asyncio.AbstractEventLoop]:
    """An event loop running in a thread of its own (a worker's), closed after."""
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    yield loop
    loop.call_soon_threadsafe(loop.stop)
    thread.join(10)
    loop.close()


def _on(loop: asyncio.AbstractEventLoop, coroutine):
    """Run ``coroutine`` on ``loop`` (another thread's) and wait for its result."""
    return asyncio.run_coroutine_threadsafe(coroutine, loop).result(30)


class LoopUser(Document):
    email = StringField(unique=True)
    meta = {"db_alias": "loops"}


async def test_a_collection_dropped_in_one_loop_gets_its_indexes_in_another(
    mongodb_uri, database, worker_loop
):
    """async_drop_collection() in one loop: a worker thread's loop that had used
    the class creates its indexes again on its next write, so a unique index is
    not silently lost (MongoEngine's drop_collection() does so for any thread)."""
    from mongoengine_async import NotUniqueError

    await connect_async(database, alias="loops", host=mongodb_uri, **_STANDARD)
    try:
        await asyncio.to_thread(_on, worker_loop, LoopUser(email="a@x").async_save())
        await LoopUser.async_drop_collection()
        await asyncio.to_thread(_on, worker_loop, LoopUser(email="b@x").async_save())
        with pytest.raises(NotUniqueError):
            await asyncio.to_thread(
                _on, worker_loop, LoopUser(email="b@x").async_save()
            )
        collection = await LoopUser._async_get_collection()
        assert "email_1" in await collection.index_information()
    finally:
        await asyncio.to_thread(_on, worker_loop, _close_client("loops"))
        await disconnect_async("loops")


async def _close_client(alias: str) -> None:
    """Close the running loop's client of ``alias`` (before its loop closes)."""
    await get_async_connection(alias).close()


class LoopStamp(Document):
    at = DateTimeField()
    meta = {"db_alias": "loops"}


@pytest.mark.parametrize("same_loop", [True, False])
def test_a_kept_queryset_follows_its_alias_connected_again_elsewhere(
    mongodb_uri, database, same_loop
):
    """A queryset kept while its alias is disconnected and connected again to
    another database with other client options reads and writes that database
    with those options: it read and wrote the first database, silently
    (MongoEngine's raises, its client being closed)."""
    other = f"{database}_again"
    stamp = datetime(2024, 5, 1, 12, 30)

    async def first() -> tuple:
        await connect_async(database, alias="loops", host=mongodb_uri, **_STANDARD)
        await LoopBook(title="kept").async_save()
        await LoopStamp(at=stamp).async_save()
        return LoopBook.objects(title="kept"), LoopStamp.objects.as_pymongo()

    async def again(books, stamps) -> tuple:
        await disconnect_async("loops")
        await connect_async(
            other, alias="loops", host=mongodb_uri, tz_aware=True, **_STANDARD
        )
        before = await books.async_count(), await stamps.async_count()
        await LoopBook(title="kept").async_save()
        await books.async_update(inc__copies=1)
        await LoopStamp(at=stamp).async_save()
        return before, [b.copies async for b in books], [r["at"] async for r in stamps]

    async def both() -> tuple:
        return await again(*await first())

    try:
        if same_loop:
            result = asyncio.run(both())
        else:
            result = asyncio.run(again(*asyncio.run(first())))
        assert result == ((0, 0), [1], [datetime(2024, 5, 1, 12, 30, tzinfo=utc)])
        assert _stored_titles(mongodb_uri, other) == ["kept"]
        with MongoClient(mongodb_uri) as client:
            assert [raw["copies"] for raw in client[database].loop_book.find()] == [0]
    finally:
        asyncio.run(disconnect_async("loops"))
        with MongoClient(mongodb_uri) as client:
            client.drop_database(other)


class LoopCounter(Document):
    n = IntField()
    meta = {"db_alias": "loops"}


async def _until_a_save_waits(document: Document) -> None:
    """Return once another save of ``document`` waits for the one in flight
    (the deque of waiters its instance dict holds is not empty)."""
    deadline = time.monotonic() + 10
    while not document.__dict__["_async_save_turns"]:
        assert time.monotonic() < deadline, "no save waits"
        await asyncio.sleep(0.01)


async def test_one_document_saved_from_two_threads_loops_at_once(
    mongodb_uri, database, worker_loop
):
    """A save of an instance waits for the save of it in flight; when that one
    runs on another thread's loop, it wakes the waiter through the waiter's
    loop: the second save hung forever (its loop was never woken)."""
    from mongoengine_async import signals

    in_flight = asyncio.Event()

    async def slow_first(sender, document, **kwargs) -> None:
        if asyncio.get_running_loop() is not worker_loop:
            in_flight.set()
            await _until_a_save_waits(document)

    await connect_async(database, alias="loops", host=mongodb_uri, **_STANDARD)
    signals.pre_save.connect(slow_first, sender=LoopCounter)
    try:
        counter = LoopCounter(n=1)
        first = asyncio.ensure_future(counter.async_save())
        await in_flight.wait()
        second = asyncio.run_coroutine_threadsafe(counter.async_save(), worker_loop)
        await asyncio.wait_for(asyncio.wrap_future(second), 10)
        await first
        assert await LoopCounter.objects.async_count() == 1
    finally:
        signals.pre_save.disconnect(slow_first, sender=LoopCounter)
        await asyncio.to_thread(_on, worker_loop, _close_client("loops"))
        await disconnect_async("loops")


def test_the_client_got_outside_any_loop_and_awaited_directly(
    loops_alias, mongodb_uri, database
):
    """get_async_connection() outside any loop gives a client no loop has used;
    awaited on directly in one asyncio.run() (which binds it to that loop), it
    is not handed to the next loop, nor given again outside any loop: the next
    run failed with PyMongo's "Cannot use AsyncMongoClient in different event
    loop"."""
    client = get_async_connection("loops")
    asyncio.run(client[database].loop_book.insert_one({"title": "raw"}))
    assert get_async_connection("loops") is not client
    assert asyncio.run(LoopBook.objects(title="raw").async_count()) == 1
    assert asyncio.run(LoopBook.objects(title="raw").async_count()) == 1


def test_the_client_got_outside_any_loop_closes_with_the_loop_it_went_to(
    loops_alias, database
):
    """The client above, awaited on directly in a loop, then made that loop's
    in the registry by another loop's lookup: its loop closes it as it shuts
    down, as the clients it got itself (it was left to the garbage collector)."""
    client = get_async_connection("loops")
    with Runner() as runner:
        runner.run(client[database].loop_book.insert_one({"title": "raw"}))
        assert asyncio.run(LoopBook.objects.async_count()) == 1  # another loop
        assert runner.run(LoopBook.objects.async_count()) == 1
        assert not client._closed
    assert client._closed


@pytest.mark.parametrize("awaited", ["client", "collection", "beside its own"])
def test_the_client_got_outside_any_loop_closes_with_the_only_loop_it_ran_in(
    loops_alias, database, awaited
):
    """The client got outside any loop (by get_async_connection(), with a
    model's _get_collection(), or by a thread while the loop has a client of
    its own), awaited on directly in an asyncio.run() that runs nothing else
    of ours: that loop closes it as it shuts down. It was left to the garbage
    collector, let go once another loop needed a client ("Unclosed
    AsyncMongoClient")."""
    clients = []

    async def main() -> None:
        if awaited == "beside its own":
            await LoopBook(title="own").async_save()
            clients.append(get_async_connection(loops_alias))
            # (a thread is outside any loop)
            got = await asyncio.to_thread(get_async_connection, loops_alias)
            collection = got[database].loop_book
        elif awaited == "client":
            collection = outside[database].loop_book
        else:
            collection = outside
        clients.append(collection.database.client)
        await collection.insert_one({"title": "raw"})

    if awaited == "client":
        outside = get_async_connection(loops_alias)
    elif awaited == "collection":
        outside = LoopBook._get_collection()
    asyncio.run(main())
    assert all(client._closed for client in clients)
    assert len({id(client) for client in clients}) == len(clients)
    assert asyncio.run(LoopBook.objects(title="raw").async_count()) == 1


def test_a_close_by_disconnect_that_its_loops_end_cut_short(loops_alias):
    """disconnect_async() in one loop closes another loop's client by a task
    on that loop; that loop's end (asyncio.run() or a Runner returning)
    cancels the task: its shutdown closes the client then. It stayed open
    ("Unclosed AsyncMongoClient"), the registry having let it go."""
    with Runner() as runner:
        runner.run(LoopBook.objects.async_count())
        client = runner.run(_current_client(loops_alias))
        asyncio.run(disconnect_async(loops_alias))  # (from another loop)
        runner.run(asyncio.sleep(0))  # the close begins, and is on its way
        assert not client._closed
    assert client._closed


async def _current_client(alias: str) -> Any:
    return get_async_connection(alias)


async def test_disconnect_closes_the_clients_of_other_running_loops(
    mongodb_uri, database, worker_loop
):
    """disconnect_async() closes the alias's client of another thread's running
    loop on that loop: it was only dropped, and stayed open (its monitor tasks
    and sockets) while anything held it, such as a kept queryset."""
    from pymongo.errors import InvalidOperation

    async def worker_client():
        await LoopBook.objects.async_count()
        return get_async_connection("loops")

    await connect_async(database, alias="loops", host=mongodb_uri, **_STANDARD)
    kept = await asyncio.to_thread(_on, worker_loop, worker_client())
    await disconnect_async("loops")
    # (its close runs on that loop, round trips of its own: bounded by a
    # deadline, not a count of polls a loaded machine outlasts)
    deadline = time.monotonic() + 30
    while True:
        try:
            await asyncio.to_thread(_on, worker_loop, kept.admin.command("ping"))
        except InvalidOperation:
            break  # "Cannot use AsyncMongoClient after close"
        assert time.monotonic() < deadline, "the worker loop's client is still open"
        await asyncio.sleep(0.05)


def test_a_dropped_aggregation_cursor_is_let_go(loops_alias, mongodb_uri, database):
    """The driver's cursor of an awaited ``async_aggregate()``, read in part
    and dropped, is collected, and killed on the server: the task that opened
    it (one a cancellation leaves alone) kept it as its result for as long as
    anything captured that task's context (the client's tasks and the
    connections it opened, pooled), and the server kept the cursor 10
    minutes."""
    with MongoClient(mongodb_uri) as client:
        client[database].loop_book.insert_many([{"title": str(n)} for n in range(9)])
    collected = []

    async def main() -> None:  # (the loop's first operation: its client opens)
        cursor = await LoopBook.objects.async_aggregate([], batchSize=2)
        assert (await cursor.next())["title"] == "0"
        dropped = weakref.ref(cursor)
        del cursor
        await asyncio.sleep(0)  # (the loop lets go of the reply's callback)
        gc.collect()
        collected.append(dropped() is None)

    asyncio.run(main())  # (its client, closing, kills the cursors it was given)
    assert collected == [True]
    with MongoClient(mongodb_uri) as client:
        idle = client.admin.aggregate(
            [
                {"$currentOp": {"idleCursors": True}},
                {"$match": {"type": "idleCursor", "ns": f"{database}.loop_book"}},
            ]
        )
        assert list(idle) == []


class LoopLoan(Document):
    book = ReferenceField(LoopBook)
    scan = FileField(db_alias="loops")
    meta = {"db_alias": "loops"}


NO_ASYNCIO = (
    "mongoengine-async runs on asyncio (PyMongo's async API) and no asyncio "
    "event loop is running here: await it in asyncio code (with anyio, its "
    "asyncio backend; trio is not supported)"
)


def _awaited_elsewhere(alias: str, loan: LoopLoan) -> dict[str, Any]:
    """An awaitable of each kind of operation, by name."""
    return {
        "connect_async": lambda: connect_async("other", alias="other", **_STANDARD),
        "disconnect_async": lambda: disconnect_async(alias),
        "async_count": lambda: LoopBook.objects.async_count(),
        "async for": lambda: LoopBook.objects.__aiter__().__anext__(),
        "async_save new": lambda: LoopBook(title="new").async_save(),
        "async_save loaded": lambda: loan.async_save(),
        "reference fetch": lambda: loan.book.fetch(),
        "async_put": lambda: LoopLoan().scan.async_put(b"data"),
        "async_read": lambda: loan.scan.async_read(),
        "async_watch": lambda: LoopBook.objects.async_watch().try_next(),
        "async_ensure_indexes": lambda: LoopBook.async_ensure_indexes(),
        "transaction": lambda: async_run_in_transaction(alias=alias).__aenter__(),
    }


@pytest.mark.parametrize("name", list(_awaited_elsewhere("", LoopLoan())))
def test_an_operation_awaited_without_an_asyncio_loop_is_refused(loops_alias, name):
    """Awaited where no asyncio loop runs (trio, or anyio's trio backend,
    drives coroutines as this test does by hand), an operation raised
    asyncio's "no running event loop" (or "no current event loop") from deep
    inside, some leaving a coroutine never awaited, disconnect_async() the
    alias half disconnected: it is refused at once, naming what works."""

    async def loaded() -> LoopLoan:
        loan = LoopLoan(book=await LoopBook(title="lent").async_save())
        await loan.scan.async_put(b"scan")
        await loan.async_save()
        return await LoopLoan.objects.async_get()

    loan = asyncio.run(loaded())
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with pytest.raises(AsyncUsageError) as raised:
            _awaited_elsewhere(loops_alias, loan)[name]().send(None)
        gc.collect()
    assert str(raised.value) == NO_ASYNCIO
    assert [str(w.message) for w in caught] == []

    async def still_there() -> list[str]:
        return await LoopBook.objects.order_by("title").async_scalar("title")

    assert asyncio.run(still_there()) == ["lent"]


class LoopShelf(Document):
    meta = {"db_alias": "loops"}


class LoopItem(Document):
    shelf = ReferenceField(LoopShelf, reverse_delete_rule=CASCADE)
    meta = {"db_alias": "loops"}


@pytest.mark.parametrize("steps", [1, 2, 3])
def test_a_cascade_cancelled_as_its_loop_ends_reports_no_error(
    loops_alias, steps, caplog
):
    """A cascade delete cancelled as it begins its transaction, the loop
    ending right after: the transaction's task, aborting, was cancelled by
    ``asyncio.run()`` with the abort, whose ``wait_for`` (Python 3.10, 3.11)
    swallowed the cancellation; the task went on and ended with an internal
    error, which asyncio logged ("unhandled exception during asyncio.run()
    shutdown"). Nothing is deleted: the transaction was aborted."""

    async def main() -> None:
        shelf = await LoopShelf().async_save()
        await LoopItem(shelf=shelf).async_save()
        task = asyncio.ensure_future(shelf.async_delete())
        for _ in range(steps):
            await asyncio.sleep(0)
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task

    asyncio.run(main())
    gc.collect()
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR] == []

    async def stored() -> tuple[int, int]:
        return (
            await LoopShelf.objects.async_count(),
            await LoopItem.objects.async_count(),
        )

    assert asyncio.run(stored()) == (1, 1)


class FencedShelf(Document):
    meta = {"db_alias": "fenced"}


class FencedItem(Document):
    shelf = ReferenceField(FencedShelf, reverse_delete_rule=CASCADE)
    meta = {"db_alias": "fenced"}


class _FenceFailed(monitoring.CommandListener):
    """Sets ``future`` as the fence's read fails on the server: the step that
    makes the transaction's task abort the fence's transaction next."""

    future: asyncio.Future[None] | None = None

    def started(self, event: monitoring.CommandStartedEvent) -> None:
        pass

    def succeeded(self, event: monitoring.CommandSucceededEvent) -> None:
        pass

    def failed(self, event: monitoring.CommandFailedEvent) -> None:
        fence = event.command_name == "find" and event.database_name != "admin"
        if fence and self.future is not None and not self.future.done():
            self.future.set_result(None)


def test_a_fence_cut_short_by_the_loop_end_reports_no_error(
    mongodb_uri, database, caplog
):
    """A cascade cancelled as it begins: its transaction's task aborts it, then
    fences it (a read the server refuses, then its abort). The loop ends as
    the fence's read failed: ``asyncio.run()`` cancelled the task before the
    fence's abort started, the read's error was left unretrieved, and the
    session, still in the fence's transaction, was ended in a task of its
    own, whose abort ran as the loop's ``shutdown_asyncgens()`` closed
    PyMongo's generator it was in: asyncio logged "Task exception was never
    retrieved" (Python 3.10, 3.11: "generator didn't stop after athrow()").
    Nothing is deleted: the transaction was aborted."""
    listener = _FenceFailed()

    async def main() -> None:
        await connect_async(
            database,
            alias="fenced",
            host=mongodb_uri,
            event_listeners=[listener],
            **_STANDARD,
        )
        shelf = await FencedShelf().async_save()
        await FencedItem(shelf=shelf).async_save()
        listener.future = asyncio.get_running_loop().create_future()
        task = asyncio.ensure_future(shelf.async_delete())
        await asyncio.sleep(0)
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await listener.future

    asyncio.run(main())
    gc.collect()
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR] == []

    async def stored() -> tuple[int, int]:
        counts = (
            await FencedShelf.objects.async_count(),
            await FencedItem.objects.async_count(),
        )
        await disconnect_async("fenced")
        return counts

    assert asyncio.run(stored()) == (1, 1)


def test_an_abort_or_fence_read_failing_as_its_caller_is_cancelled_is_not_logged(
    caplog,
):
    """The fence's read (or an abort) fails on the server as the loop's end
    cancels the transaction's task waiting for it (as it did beside other
    operations ending): its error, dropped as when not cancelled, was left
    unretrieved, and asyncio logged "Task exception was never retrieved"."""

    async def refused() -> None:
        raise OperationFailure("unknown top level operator", 2)

    async def main() -> None:
        waiting = asyncio.ensure_future(context._bounded(refused()))
        await asyncio.sleep(0)  # it waits for the read's task
        await asyncio.sleep(0)  # the read failed, the wait not woken yet
        waiting.cancel()
        with pytest.raises(asyncio.CancelledError):
            await waiting

    asyncio.run(main())
    gc.collect()
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR] == []


async def test_the_tests_run_on_the_loop_of_the_run(request):
    """``--loop=uvloop`` (make test-uvloop) runs every test on uvloop's loop:
    pytest-asyncio's and asyncio.run()'s in a thread alike (a leg that would
    otherwise pass on asyncio's loop without a word)."""

    async def kind() -> str:
        return type(asyncio.get_running_loop()).__module__.split(".")[0]

    expected = request.config.getoption("loop")
    assert await kind() == expected
    assert await asyncio.to_thread(asyncio.run, kind()) == expected


class LoopPaper(Document):
    title = StringField()
    revisions = IntField(default=0)
    scan = FileField(db_alias="loops")
    meta = {"db_alias": "loops"}


async def _write_transact_store_read(thread: int) -> list[tuple[int, int, bool]]:
    """Papers of ``thread`` saved, revised in a transaction (with a note in
    it), given a file, read back and checked: what each paper read back."""
    read_back = []
    for n in range(4):
        paper = LoopPaper(title=f"{thread}-{n}")
        await paper.async_save()

        async def revise(paper: LoopPaper = paper, note: str = f"{thread}-{n}") -> None:
            await LoopPaper.objects(id=paper.id).async_update(inc__revisions=1)
            await LoopBook(title=f"note {note}").async_save()

        # (The callback form: the other thread's first writes create the
        # collections, which the server reports as transient to a transaction.)
        await async_run_transaction(revise, alias="loops")
        data = f"{thread}-{n}".encode() * 100_000  # a few GridFS chunks
        await paper.scan.async_put(data, filename=paper.title)
        await paper.async_save()
        again = await LoopPaper.objects.async_get(id=paper.id)
        stored = await again.scan.async_read()
        read_back.append((thread, again.revisions, stored == data))
    return read_back


def test_threads_with_loops_of_their_own_transact_and_store_files_at_once(
    loops_alias, mongodb_uri, database
):
    """Two threads, each in asyncio.run() on the same alias and models at once:
    saves, reads, transactions and GridFS uploads and reads each on its own
    loop's client, every write there once."""
    results: dict[int, Any] = {}

    def run(thread: int) -> None:
        try:
            results[thread] = asyncio.run(_write_transact_store_read(thread))
        except BaseException as error:  # reported below
            results[thread] = error

    threads = [threading.Thread(target=run, args=(n,)) for n in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert results == {n: [(n, 1, True)] * 4 for n in range(2)}
    with MongoClient(mongodb_uri) as client:
        papers = client[database].loop_paper.find()
        assert sorted((p["title"], p["revisions"]) for p in papers) == sorted(
            (f"{t}-{n}", 1) for t in range(2) for n in range(4)
        )
        assert client[database]["fs.files"].count_documents({}) == 8
    assert _stored_titles(mongodb_uri, database) == sorted(
        f"note {t}-{n}" for t in range(2) for n in range(4)
    )


def test_proxies_made_on_one_loop_are_read_on_another(loops_alias):
    """A document loaded in one asyncio.run(), its reference proxy unfetched
    and its file proxy with the file's metadata got: the next run fetches the
    reference, streams the file and saves the document, on its own client."""
    data = bytes(range(256)) * 4_000  # four chunks of 255 kB

    async def store() -> Any:
        shelf = LoopShelf()
        await shelf.async_save()
        paper = LoopPaper(title="scan")
        await paper.scan.async_put(data, filename="scan")
        await paper.async_save()
        await LoopItem(shelf=shelf).async_save()
        return shelf.id

    async def load() -> tuple[LoopItem, LoopPaper]:
        item = await LoopItem.objects.async_get()
        paper = await LoopPaper.objects.async_get(title="scan")
        assert (await paper.scan.async_get()).length == len(data)
        return item, paper

    async def elsewhere(item: LoopItem, paper: LoopPaper) -> tuple[Any, bytes]:
        shelf = await item.shelf
        chunks = [chunk async for chunk in paper.scan]
        paper.title = "read"
        await paper.async_save()
        return shelf.id, b"".join(chunks)

    shelf_id = asyncio.run(store())
    item, paper = asyncio.run(load())
    assert asyncio.run(elsewhere(item, paper)) == (shelf_id, data)
    titles = asyncio.run(LoopPaper.objects(id=paper.id).async_scalar("title"))
    assert titles == ["read"]


_LARGE = bytes(range(256)) * 25_000  # 6.4 MB: 26 chunks, two cursor batches


@pytest.mark.parametrize("read_first", [0, 10, 300_000])
def test_a_grid_out_opened_on_one_loop_is_read_on_another(loops_alias, read_first):
    """The AsyncGridOut of ``proxy.async_get()``, got (and ``read_first``
    bytes of it read) in one ``asyncio.run()``, is read to its end in the
    next, on that loop's client: it raised PyMongo's RuntimeError ("Cannot use
    AsyncMongoClient in different event loop"). The chunk cursor the first
    loop left, closed with its client, is let go; the read goes on from where
    it was."""

    async def opened() -> tuple[Any, bytes]:
        paper = LoopPaper(title="large")
        await paper.scan.async_put(_LARGE, filename="large")
        await paper.async_save()
        grid_out = await paper.scan.async_get()
        return grid_out, await grid_out.read(read_first)

    async def rest(grid_out: Any) -> tuple[bytes, bytes]:
        data = await grid_out.read()
        await grid_out.seek(5)
        return data, await grid_out.read(3)

    grid_out, first = asyncio.run(opened())
    data, again = asyncio.run(rest(grid_out))
    assert first + data == _LARGE
    assert again == _LARGE[5:8]


_DATA = bytes(range(256)) * 4000  # four chunks of a file


async def _shelf() -> LoopScan:
    """Five books and a stored file of four chunks."""
    await LoopBook.objects.async_insert([LoopBook(title=f"b{n}") for n in range(5)])
    scan = LoopScan()
    await scan.scan.async_put(_DATA)
    return await scan.async_save()


_ITERATIONS = {
    "queryset": lambda scan: LoopBook.objects.order_by("title").batch_size(2),
    "async_iter": lambda scan: (
        LoopBook.objects.order_by("title").batch_size(2).async_iter()
    ),
    "aggregate": lambda scan: LoopBook.objects.async_aggregate(
        [{"$sort": {"title": 1}}], batchSize=2
    ),
    "file": lambda scan: scan.scan,
    "file pieces": lambda scan: scan.scan.async_iter_chunks(300_000),
}
_NAMED = {
    "queryset": "LoopBook.objects",
    "async_iter": "LoopBook.objects",
    "aggregate": "LoopBook's async_aggregate()",
    "file": "a file of GridFS bucket 'fs' (alias 'loops'), field 'scan'",
    "file pieces": "a file of GridFS bucket 'fs' (alias 'loops'), field 'scan'",
}
# What each error says to do instead: an aggregation runs once (a new async
# for over it raises RuntimeError), so another async_aggregate().
_AGAIN = dict.fromkeys(_ITERATIONS, "Iterate again (a new async for)") | {
    "aggregate": "Call async_aggregate() again for a new async for"
}


async def _begun(read: str) -> tuple[AsyncIterator[Any], Any]:
    """An ``async for`` of ``read`` that has given its first result, and it."""
    iteration = aiter(_ITERATIONS[read](await _shelf()))
    return iteration, await anext(iteration)


async def _rest(iteration: AsyncIterator[Any]) -> list[Any]:
    return [item async for item in iteration]


@pytest.mark.parametrize("read", list(_ITERATIONS))
def test_an_async_for_carried_past_its_loops_end_raises(loops_alias, read):
    """An ``async for`` begun in one ``asyncio.run()`` and continued in the
    next: its generator was closed as the first loop shut down, and the rest
    of the results read as none at all (a file's bytes cut short)."""
    iteration, _ = asyncio.run(_begun(read))

    with pytest.raises(AsyncUsageError) as raised:
        asyncio.run(_rest(iteration))
    assert str(raised.value) == (
        f"An async for over {_NAMED[read]} was begun on an event loop that has "
        "shut down since (asyncio.run() returned), which closed it: the results "
        f"it had not given yet were not read. {_AGAIN[read]} on the running loop"
    )
    with pytest.raises(AsyncUsageError):  # (and again)
        asyncio.run(_rest(iteration))


def _whole(read: str, results: list[Any]) -> Any:
    """What ``read`` gave: the file's bytes, or the titles of the books."""
    if read.startswith("file"):
        return b"".join(results)
    return [item["title"] if read == "aggregate" else item.title for item in results]


@pytest.mark.parametrize("read", list(_ITERATIONS))
def test_an_async_for_continued_on_the_same_loop_in_a_runner(loops_alias, read):
    """Two ``run()`` of one ``asyncio.Runner`` share its loop, which does not
    shut down between them: the iteration goes on where it stopped."""
    with Runner() as runner:
        iteration, first = runner.run(_begun(read))
        rest = runner.run(_rest(iteration))
    expected = _DATA if read.startswith("file") else [f"b{n}" for n in range(5)]
    assert _whole(read, [first, *rest]) == expected


@pytest.mark.parametrize("read", list(_ITERATIONS))
def test_an_async_for_closed_by_its_user_still_ends(loops_alias, read):
    """``aclose()`` (as ``contextlib.aclosing`` calls it), then the next loop:
    the iteration ends, as an async generator's does, with no error."""

    async def begun_and_closed() -> AsyncIterator[Any]:
        iteration, _ = await _begun(read)
        await iteration.aclose()  # type: ignore[attr-defined]
        return iteration

    iteration = asyncio.run(begun_and_closed())
    assert asyncio.run(_rest(iteration)) == []


@pytest.mark.parametrize("read", list(_ITERATIONS))
def test_an_async_for_is_still_an_async_generator(loops_alias, read):
    """What ``async for`` steps through was an async generator, and is used
    as one (``isinstance(it, AsyncGenerator)``, ``asend``, ``athrow``): a
    step by ``asend(None)``, and ``athrow()`` at its yield raises there and
    ends it, with no ``AsyncUsageError`` after."""

    async def used_as_a_generator() -> list[Any]:
        iteration, first = await _begun(read)
        assert isinstance(iteration, AsyncGenerator)
        second = await iteration.asend(None)
        with pytest.raises(LookupError):
            await iteration.athrow(LookupError("stop"))
        with pytest.raises(StopAsyncIteration):
            await anext(iteration)
        return [first, second]

    results = asyncio.run(used_as_a_generator())
    whole = _whole(read, results)
    assert whole == (_DATA[: len(whole)] if read.startswith("file") else ["b0", "b1"])
    assert len(whole) > len(_whole(read, results[:1]))  # asend(None) read on

    async def sent(iteration: Any) -> Any:
        return await iteration.asend(None)

    iteration, _ = asyncio.run(_begun(read))  # asend() past the loop's end
    with pytest.raises(AsyncUsageError, match="shut down since"):
        asyncio.run(sent(iteration))


@pytest.mark.parametrize("read", ["queryset", "async_iter", "aggregate"])
def test_an_async_for_thrown_into_while_it_reads_still_raises_past_its_loop(
    loops_alias, read
):
    """``athrow()`` or ``aclose()`` while a step reads its getMore raises
    ``RuntimeError`` (the generator is running), as an async generator's
    does, and changes nothing: the step gives its result, and the iteration
    carried past its loop's end still raises, rather than ending silently."""

    async def thrown_while_reading() -> tuple[Any, list[Any]]:
        iteration, first = await _begun(read)
        second = await anext(iteration)  # (the rest of the first batch)
        step = asyncio.ensure_future(anext(iteration))
        await asyncio.sleep(0)  # (the step awaits its getMore)
        with pytest.raises(RuntimeError, match="already running"):
            await iteration.athrow(LookupError("stop"))  # type: ignore[attr-defined]
        with pytest.raises(RuntimeError, match="already running"):
            await iteration.aclose()  # type: ignore[attr-defined]
        return iteration, [first, second, await step]

    iteration, results = asyncio.run(thrown_while_reading())
    assert _whole(read, results) == ["b0", "b1", "b2"]
    with pytest.raises(AsyncUsageError, match="shut down since"):
        asyncio.run(_rest(iteration))


def test_an_async_for_cannot_be_copied(loops_alias):
    """Copying what ``async for`` steps through is refused, as an async
    generator's copy is: ``copy.copy`` would give a second iteration
    stepping the same read."""

    async def copied() -> None:
        iteration, _ = await _begun("async_iter")
        refused = r"^cannot pickle 'async_generator' object$"
        for copying in (copy.copy, copy.deepcopy, pickle.dumps):
            with pytest.raises(TypeError, match=refused):
                copying(iteration)
        assert [book.title for book in await _rest(iteration)] == [
            f"b{n}" for n in range(1, 5)
        ]

    asyncio.run(copied())


@pytest.fixture
def loops_log(mongodb_uri: str, database: str) -> Iterator[CommandLog]:
    """Alias "loops" as ``loops_alias``, its commands logged."""
    log = CommandLog()
    connecting = connect_async(
        database, alias="loops", host=mongodb_uri, event_listeners=[log], **_STANDARD
    )
    asyncio.run(connecting)
    yield log
    asyncio.run(disconnect_async("loops"))


# How many results each read gives before the step whose command is cut short:
# a getMore (batches of two), or the command opening the read (for a file,
# whose chunks come in one reply, its first find).
_CUT_AFTER = [
    ("queryset", 2),
    ("async_iter", 2),
    ("aggregate", 2),
    ("aggregate", 0),
    ("queryset", 0),
    ("file", 0),
]


@pytest.mark.parametrize(("read", "given"), _CUT_AFTER)
def test_an_async_for_cancelled_while_it_reads_raises_when_stepped_again(
    loops_log, read, given
):
    """A step cancelled while its command is on its way (``wait_for`` timing
    out, its task cancelled as ``asyncio.run()`` ends) ended the generator:
    the next steps gave the end of the results, the rest unread."""

    async def cancelled_then_stepped() -> None:
        scan = await _shelf()
        iteration = aiter(_ITERATIONS[read](scan))
        for _ in range(given):
            await anext(iteration)
        sent = len(loops_log.events)
        step = asyncio.ensure_future(anext(iteration))
        while len(loops_log.events) == sent:  # its command sent
            assert not step.done(), "the step sent no command"
            await asyncio.sleep(0)
        step.cancel()
        with pytest.raises(asyncio.CancelledError):
            await step
        with pytest.raises(AsyncUsageError) as raised:
            await anext(iteration)
        assert str(raised.value) == (
            f"An async for over {_NAMED[read]} was cancelled while it read, which "
            f"ended it: the results it had not given yet were not read. {_AGAIN[read]}"
        )

    asyncio.run(cancelled_then_stepped())


def test_a_change_streams_async_for_carried_past_its_loops_end_raises(loops_alias):
    """A change stream's ``async for`` kept unfinished as its loop ended, then
    stepped in the next ``asyncio.run()``: it ended with no error, the stream
    closed by the first loop's shutdown."""

    async def begun() -> tuple[AsyncIterator[Any], str]:
        stream = LoopBook.objects.async_watch()
        assert await stream.try_next() is None  # opened before the insert
        await LoopBook(title="new").async_save()
        iteration = aiter(stream)
        return iteration, (await anext(iteration)).document.title

    iteration, title = asyncio.run(begun())

    assert title == "new"
    with pytest.raises(AsyncUsageError) as raised:
        asyncio.run(_rest(iteration))
    assert str(raised.value) == (
        "An async for over the change stream of LoopBook.objects was begun on an "
        "event loop that has shut down since (asyncio.run() returned), which "
        "closed it: the results it had not given yet were not read. Open a new "
        "stream (async_watch(resume_after=stream.resume_token)) on the running loop"
    )
