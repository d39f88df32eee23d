"""The FastAPI example served by a real uvicorn process (started and stopped by
each test) against the real replica set: clients that go away mid-request, and
a shutdown with requests in flight. Outcomes are read back from the database
and from what the server logged."""

from __future__ import annotations

import asyncio
import os
import random
import re
import signal
import subprocess
import sys
from collections.abc import AsyncIterator, Awaitable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from uuid import uuid4

import httpx
import pytest
from pymongo import AsyncMongoClient
from pymongo.asynchronous.collection import AsyncCollection
from pymongo.asynchronous.database import AsyncDatabase

ROOT = Path(__file__).resolve().parent.parent
# What uvicorn logs as its graceful shutdown's time runs out, and the message
# of the cancellation it sends each request then.
CANCELLED = "ERROR:    Cancel 1 running task(s), timeout graceful shutdown exceeded"
CANCELLED_MESSAGE = "Task cancelled, timeout graceful shutdown exceeded"
LISTENING = re.compile(r"Uvicorn running on http://127\.0\.0\.1:(\d+)")


@dataclass
class Server:
    """A uvicorn process serving the example, where it listens and what it logs."""

    process: subprocess.Popen[bytes]
    log: Path
    base_url: str = ""

    def output(self) -> str:
        """Everything the server logged so far."""
        return self.log.read_text()

    def stop(self, sig: int = signal.SIGINT) -> str:
        """Send ``sig``, wait for the process to end (a minute at most), and
        return its whole log."""
        self.process.send_signal(sig)
        self.process.wait(timeout=60)
        return self.output()


def start_server(uri: str, db: str, log: Path, *options: str) -> Server:
    """``uvicorn fastapi_app.main:app`` on a free port, logging to ``log``; its
    client names itself ``db`` (``appName``, in the server's ``$currentOp``)."""
    env = {
        **os.environ,
        "MONGODB_URI": f"{uri}{'&' if '?' in uri else '?'}appName={db}",
        "MONGODB_DB": db,
        "PYTHONPATH": str(ROOT / "src"),
    }
    command = [sys.executable, "-m", "uvicorn", "fastapi_app.main:app"]
    command += ["--app-dir", "examples", "--host", "127.0.0.1", "--port", "0"]
    # Idle connections kept 5 minutes, not uvicorn's 5 s: one it closes as the
    # client sends on it gives that request an httpx.ReadError (HTTP
    # keep-alive's race, nothing of the app's; seen under CI's load).
    command += ["--timeout-keep-alive", "300"]
    with log.open("wb") as out:
        process = subprocess.Popen(
            [*command, *options], cwd=ROOT, env=env, stdout=out, stderr=out
        )
    return Server(process, log)


async def listening(server: Server) -> None:
    """Wait (a minute at most) until ``server`` accepts requests."""

    async def port() -> str:
        while not (found := LISTENING.search(server.output())):
            assert server.process.poll() is None, server.output()
            await asyncio.sleep(0.05)
        return found[1]

    server.base_url = f"http://127.0.0.1:{await asyncio.wait_for(port(), 60)}"


@pytest.fixture
def server_log(tmp_path: Path) -> Path:
    return tmp_path / "uvicorn.log"


@pytest.fixture
def database_name() -> str:
    return f"test_fastapi_uvicorn_{uuid4().hex[:12]}"


@pytest.fixture
async def database(
    mongodb_uri: str, database_name: str
) -> AsyncIterator[AsyncDatabase]:
    """The server's database, read with a client of the test's own; dropped."""
    client: AsyncMongoClient = AsyncMongoClient(mongodb_uri)
    try:
        yield client[database_name]
    finally:
        await client.drop_database(database_name)
        await client.close()


@pytest.fixture
def server(mongodb_uri: str, database_name: str, server_log: Path) -> Iterator[Server]:
    """A uvicorn process, killed at the end if the test did not stop it."""
    with stopped_at_the_end(
        start_server(mongodb_uri, database_name, server_log)
    ) as running:
        yield running


@contextmanager
def stopped_at_the_end(running: Server) -> Iterator[Server]:
    """``running``, killed when the test ends if the test did not stop it."""
    try:
        yield running
    finally:
        if running.process.poll() is None:
            running.process.kill()
            running.process.wait()


async def cut_upload(server: Server, book_id: str, chunks: AsyncCollection) -> None:
    """Announce a 20 MB manuscript, send it until some of its chunks are in the
    database (the endpoint is storing it), and hang up."""
    host, port = server.base_url.removeprefix("http://").split(":")
    _, writer = await asyncio.open_connection(host, int(port))
    head = f"PUT /books/{book_id}/manuscript HTTP/1.1\r\nHost: library\r\n"
    writer.write(f"{head}Content-Length: {20 * 1024 * 1024}\r\n\r\n".encode())
    for _ in range(19 * 4):
        writer.write(os.urandom(256 * 1024))
        await writer.drain()
        if await chunks.count_documents({}):
            break
    assert await chunks.count_documents({})
    writer.close()
    await writer.wait_closed()


async def test_an_upload_cut_by_the_client_logs_no_error(
    server: Server, database: AsyncDatabase
) -> None:
    """The client hangs up halfway through its upload: the upload is aborted
    (no chunks left), the server logs no error, and serves the next requests."""
    await listening(server)
    async with httpx.AsyncClient(base_url=server.base_url) as http:
        author = (await http.post("/authors", json={"name": "Ann"})).json()["id"]
        body = {"title": "Cut", "author_id": author}
        book_id = (await http.post("/books", json=body)).json()["id"]
        await cut_upload(server, book_id, database["manuscripts.chunks"])
        response = await http.put(f"/books/{book_id}/manuscript", content=b"whole")
        assert response.status_code == 200, response.text

    log = server.stop()  # once every request in flight ended
    assert "ERROR" not in log and "Traceback" not in log, log
    assert "Application shutdown complete." in log
    files = await database["manuscripts.files"].find().to_list()
    assert [file["length"] for file in files] == [5]
    chunks = await database["manuscripts.chunks"].find().to_list()
    assert [chunk["files_id"] for chunk in chunks] == [files[0]["_id"]]


async def transactions_of(database: AsyncDatabase) -> list[dict]:
    """The transactions the server holds open for the client named after
    ``database`` (the uvicorn process's)."""
    stage = {"$currentOp": {"allUsers": True, "idleSessions": True}}
    match = {"$match": {"appName": database.name, "transaction": {"$exists": True}}}
    return await (await database.client.admin.aggregate([stage, match])).to_list()


async def in_a_transaction(database: AsyncDatabase) -> None:
    """Wait (a minute at most) until the uvicorn process's client has a
    transaction open."""

    async def opened() -> None:
        while not await transactions_of(database):
            await asyncio.sleep(0.01)

    await asyncio.wait_for(opened(), 60)


def unexpected(log: str) -> list[str]:
    """The lines of ``log`` a user would not expect: all but INFO, uvicorn's
    notice that it cancels a request, and its report of that cancellation
    (as it sends the 500: the request ended before the process did)."""
    report = "ERROR:    Exception in ASGI application"
    cancelled = f"asyncio.exceptions.CancelledError: {CANCELLED_MESSAGE}"
    expected = ("INFO:", "Traceback", "  ", CANCELLED, report, cancelled)
    return [line for line in log.splitlines() if not line.startswith(expected)]


@pytest.mark.parametrize("graceful", [None, "0"])
async def test_shutdown_with_a_transaction_in_flight(
    mongodb_uri: str, database: AsyncDatabase, server_log: Path, graceful: str | None
) -> None:
    """SIGTERM while a request writes 300 books in its transaction. By default
    uvicorn lets it finish (201, all committed); with --timeout-graceful-shutdown
    0 it cancels it (a 500, or no answer: nothing committed), and the lifespan's
    disconnect_async waits for the abort: uvicorn re-raises the SIGTERM right
    after, which would leave the transaction open on the server, locking the
    books it wrote for a minute."""
    options = () if graceful is None else ("--timeout-graceful-shutdown", graceful)
    server = start_server(mongodb_uri, database.name, server_log, *options)
    with stopped_at_the_end(server) as running:
        await listening(running)
        async with httpx.AsyncClient(base_url=running.base_url, timeout=120) as http:
            author = (await http.post("/authors", json={"name": "A"})).json()["id"]
            books = [{"title": f"Book {n}"} for n in range(300)]
            request = asyncio.create_task(
                http.post(f"/authors/{author}/books", json=books)
            )
            await in_a_transaction(database)
            running.process.send_signal(signal.SIGTERM)
            try:
                status = (await request).status_code
            except httpx.RemoteProtocolError:
                status = None  # the process ended before uvicorn's 500
        log = await asyncio.to_thread(running.stop, signal.SIGTERM)
        assert running.process.returncode == -signal.SIGTERM
        assert await transactions_of(database) == []
        books_stored = await database.book.count_documents({})
        assert (status, books_stored) in (
            [(201, 300)] if graceful is None else [(500, 0), (None, 0)]
        )
        assert "Application shutdown complete." in log
        assert (CANCELLED in log) is (graceful is not None)
        assert unexpected(log) == [], log


async def test_a_client_gone_mid_transaction_leaves_the_request_to_finish(
    server: Server, database: AsyncDatabase
) -> None:
    """The client hangs up while its request writes 300 books in a
    transaction: uvicorn does not cancel the request, which commits them all
    (its answer goes nowhere); nothing is logged but INFO lines."""
    await listening(server)
    async with httpx.AsyncClient(base_url=server.base_url) as http:
        author = (await http.post("/authors", json={"name": "A"})).json()["id"]
    books = [{"title": f"Book {n}"} for n in range(300)]
    async with httpx.AsyncClient(base_url=server.base_url) as http:
        request = asyncio.create_task(http.post(f"/authors/{author}/books", json=books))
        await in_a_transaction(database)
        request.cancel()  # (httpx closes the connection)
        with pytest.raises(asyncio.CancelledError):
            await request
    log = server.stop()  # once every request in flight ended
    assert await transactions_of(database) == []
    assert await database.book.count_documents({}) == 300
    assert [line for line in log.splitlines() if line[:5] != "INFO:"] == [], log
    assert "/books HTTP/1.1" not in log  # (no answer sent, none logged)


def a_request(
    http: httpx.AsyncClient, n: int, authors: list[str], books: list[str]
) -> Awaitable[httpx.Response]:
    """The ``n``-th request of a mix of every endpoint, on random authors and
    books: one in 30 deletes an author (racing new books for them, and changes
    to their books), and batches of books repeat titles (their transactions
    conflict: run again, they answer 201 or 409)."""
    rnd = random.Random(n)
    author, book = rnd.choice(authors), rnd.choice(books)
    by_kind = [
        lambda: http.post("/authors", json={"name": f"N{n % 37}"}),
        lambda: http.post("/books", json={"title": f"T{n % 53}", "author_id": author}),
        lambda: http.post(
            f"/authors/{author}/books",
            json=[{"title": f"P{n % 3}"}, {"title": f"Q{n}"}],
        ),
        lambda: http.patch(f"/books/{book}", json={"year": n}),
        lambda: http.put(
            f"/books/{book}/manuscript",
            content=rnd.randbytes(rnd.choice([10, 300_000])),
        ),
        lambda: http.get(f"/books/{book}/manuscript"),
        lambda: http.get("/books", params={"limit": 100}),
        lambda: http.get(f"/books/{book}"),
        lambda: http.delete(f"/books/{book}"),
        lambda: http.get(f"/authors/{author}"),
    ]
    if n % 30 == 29:
        return http.delete(f"/authors/{author}")
    return by_kind[n % len(by_kind)]()


# The answers each method may get: 404 (a book deleted meanwhile), 409 (a
# name or title taken, a book changed or deleted meanwhile; a DELETE, run
# again on a conflict, never), never a 500.
EXPECTED = {
    "GET": {200, 404, 409},
    "POST": {201, 404, 409},
    "PATCH": {200, 404, 409},
    "PUT": {200, 404, 409},
    "DELETE": {204, 404},
}


async def test_hundreds_of_requests_some_cancelled(
    server: Server, database: AsyncDatabase
) -> None:
    """300 concurrent requests of every endpoint, 60 of them cancelled by their
    client at random moments: every answer is an expected one, the server logs
    nothing but INFO lines, and what is stored is consistent: no transaction
    left open, no book without its author or title, no file no book holds, no
    chunk without its file, as many authors as were created."""
    await listening(server)
    rnd = random.Random(16)
    limits = httpx.Limits(max_connections=50)
    async with httpx.AsyncClient(
        base_url=server.base_url, timeout=120, limits=limits
    ) as http:
        authors = [await new(http, "/authors", {"name": f"A{n}"}) for n in range(10)]
        books = [
            await new(http, "/books", {"title": f"B{n}", "author_id": authors[n % 10]})
            for n in range(40)
        ]
        requests = [
            asyncio.ensure_future(a_request(http, n, authors, books))
            for n in range(300)
        ]
        for _ in range(60):
            await asyncio.sleep(rnd.random() * 0.02)
            rnd.choice(requests).cancel()
        answers = await asyncio.gather(*requests, return_exceptions=True)
    log = server.stop()  # once every request in flight ended
    wrong = [
        answer
        for answer in answers
        if not isinstance(answer, asyncio.CancelledError)
        and not (
            isinstance(answer, httpx.Response)
            and answer.status_code in EXPECTED[answer.request.method]
        )
    ]
    assert wrong == [], log
    assert [line for line in log.splitlines() if line[:5] != "INFO:"] == [], log
    assert await transactions_of(database) == []
    stored = {author["_id"] for author in await database.author.find().to_list()}
    made, made_maybe = outcomes(answers, range(0, 300, 10), 201)
    deleted, deleted_maybe = outcomes(answers, range(29, 300, 30), 204)
    assert made - deleted - deleted_maybe <= len(stored) - 10
    assert len(stored) - 10 <= made + made_maybe - deleted
    books_stored = await database.book.find().to_list()
    assert [book for book in books_stored if book["author"] not in stored] == []
    assert all(book.get("title") for book in books_stored)
    files = {
        file["_id"] for file in await database["manuscripts.files"].find().to_list()
    }
    assert files == {
        book["manuscript"] for book in books_stored if "manuscript" in book
    }
    assert set(await database["manuscripts.chunks"].distinct("files_id")) <= files


def outcomes(answers: list[Any], numbers: range, status: int) -> tuple[int, int]:
    """Of the requests ``numbers``, how many answered ``status``, and how many
    were cancelled by their client (which may have done it or not)."""
    picked = [answers[n] for n in numbers]
    done = sum(
        isinstance(a, httpx.Response) and a.status_code == status for a in picked
    )
    return done, sum(isinstance(answer, BaseException) for answer in picked)


async def new(http: httpx.AsyncClient, path: str, body: dict[str, Any]) -> str:
    """The id of what ``POST path`` created."""
    response = await http.post(path, json=body)
    assert response.status_code == 201, response.text
    return str(response.json()["id"])


async def test_a_download_whose_file_is_deleted_midway_is_cut_short(
    server: Server, database: AsyncDatabase
) -> None:
    """A manuscript whose chunks are deleted once its download has started (its
    headers sent, a 200 of the whole Content-Length) reaches the client cut
    short: the server closes the connection, and the client's HTTP library
    reports the body incomplete (httpx: RemoteProtocolError), not a smaller
    file; the server logs the CorruptGridFile."""
    await listening(server)
    data = os.urandom(40 * 1024 * 1024)  # (past what the first reads bring)
    async with httpx.AsyncClient(base_url=server.base_url) as http:
        author = await new(http, "/authors", {"name": "Ann"})
        book_id = await new(http, "/books", {"title": "Cut", "author_id": author})
        path = f"/books/{book_id}/manuscript"
        assert (await http.put(path, content=data)).status_code == 200
        received = 0
        async with http.stream("GET", path) as response:
            assert response.status_code == 200
            assert response.headers["content-length"] == str(len(data))
            await database["manuscripts.chunks"].delete_many({})
            with pytest.raises(
                httpx.RemoteProtocolError, match="without sending complete message body"
            ):
                async for piece in response.aiter_raw():
                    received += len(piece)
        assert 0 < received < len(data)
    log = server.stop()
    assert "CorruptGridFile" in log, log


async def test_a_stored_content_type_with_spaces_at_its_ends_is_sent(
    server: Server, database: AsyncDatabase
) -> None:
    """A content type stored by other code with a space at either end (which
    h11, uvicorn's HTTP parser, refuses in a header value: the connection closed
    without an answer) goes out without them (``GET`` and ``HEAD``), the file
    whole, nothing logged; a type with parameters is sent as stored."""
    await listening(server)
    async with httpx.AsyncClient(base_url=server.base_url) as http:
        author = await new(http, "/authors", {"name": "Ann"})
        book_id = await new(http, "/books", {"title": "Dune", "author_id": author})
        path = f"/books/{book_id}/manuscript"
        assert (await http.put(path, content=b"draft")).status_code == 200
        files = database["manuscripts.files"]
        for stored, sent in [
            (" text/plain ", "text/plain"),
            ('text/plain; charset="utf-8"', 'text/plain; charset="utf-8"'),
        ]:
            await files.update_one({}, {"$set": {"contentType": stored}})
            for method in ("GET", "HEAD"):
                response = await http.request(method, path)
                assert response.status_code == 200
                assert response.headers["content-type"] == sent
            assert (await http.get(path)).content == b"draft"
    log = server.stop()
    assert "ERROR" not in log and "Traceback" not in log, log
