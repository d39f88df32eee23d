"""The FastAPI example (examples/fastapi_app) driven through httpx against the
real replica set: its lifespan runs around each test, requests go through
``httpx.ASGITransport``, and every outcome is read back from the database."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import os
import re
import sys
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from uuid import uuid4

import httpx
import pymongo
import pytest
from bson import ObjectId
from fastapi import Request
from fastapi.exceptions import RequestValidationError
from gridfs.asynchronous import AsyncGridFSBucket
from gridfs.errors import CorruptGridFile
from pymongo.errors import WriteConcernError

from mongoengine_async import OperationError, QuerySet, get_async_db
from mongoengine_async.testing import CommandLog, fail_command

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
sys.path.insert(0, str(EXAMPLES))

from fastapi_app import Settings, create_app, routes  # noqa: E402
from fastapi_app.models import Book  # noqa: E402
from fastapi_app.routes import MAX_JSON_BYTES, bounded  # noqa: E402

MB = 1024 * 1024


@dataclass
class Service:
    """The running app: an HTTP client on it and the commands it sent."""

    http: httpx.AsyncClient
    log: CommandLog
    loop: asyncio.AbstractEventLoop | None = None
    name: str = ""  # its database, and its client's appname (for fail points)


async def running_app(uri: str, **settings: Any) -> AsyncIterator[Service]:
    """The example app on a fresh database (other ``settings`` as given), its
    lifespan entered as a server would; the database is dropped before the
    lifespan disconnects."""
    log = CommandLog()
    name = f"test_fastapi_{uuid4().hex[:12]}"
    options = {"event_listeners": [log], "appname": name}
    app = create_app(Settings(uri, name, options, **settings))
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(
            transport=transport, base_url="http://library"
        ) as http:
            try:
                yield Service(http, log, name=name)
            finally:
                await get_async_db().client.drop_database(name)


@pytest.fixture
async def service(mongodb_uri: str) -> AsyncIterator[Service]:
    """One app per test, on the test's own event loop."""
    async for running in running_app(mongodb_uri):
        yield running


@pytest.fixture
async def impatient_service(mongodb_uri: str) -> AsyncIterator[Service]:
    """The app whose transactions stop running again after half a second."""
    async for running in running_app(mongodb_uri, transaction_seconds=0.5):
        yield running


async def new_author(service: Service, name: str) -> str:
    response = await service.http.post("/authors", json={"name": name})
    assert response.status_code == 201, response.text
    return str(response.json()["id"])


async def new_book(service: Service, author_id: str, title: str, **extra: Any) -> str:
    body = {"title": title, "author_id": author_id, **extra}
    response = await service.http.post("/books", json=body)
    assert response.status_code == 201, response.text
    return str(response.json()["id"])


def test_the_settings_are_read_from_the_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The app uvicorn serves (``create_app()``) takes ``$MONGODB_URI``,
    ``$MONGODB_DB`` and ``$TRANSACTION_SECONDS`` (each request's transaction
    bounded by it), the defaults where unset; a time limit not over 0 (every
    transaction out of time at once, or a 500) or over a day (infinite, or past
    the server's ``maxTimeMS``: a 500), or no number, is refused at start-up,
    naming the variable."""
    for name in ("MONGODB_URI", "MONGODB_DB", "TRANSACTION_SECONDS"):
        monkeypatch.delenv(name, raising=False)
    assert create_app().state.settings == Settings()
    monkeypatch.setenv("MONGODB_URI", "mongodb://db.example/?replicaSet=rs1")
    monkeypatch.setenv("MONGODB_DB", "library")
    monkeypatch.setenv("TRANSACTION_SECONDS", "2.5")
    assert create_app().state.settings == Settings(
        "mongodb://db.example/?replicaSet=rs1", "library", transaction_seconds=2.5
    )
    for seconds in ("0", "-1", "nan", "inf", "86400.5"):  # (inf: a 500 each)
        monkeypatch.setenv("TRANSACTION_SECONDS", seconds)
        message = (
            "transaction_seconds must be over 0 and at most 86400 (a day),"
            f" not {float(seconds)}"
        )
        with pytest.raises(ValueError, match=f"^{re.escape(message)}$"):
            create_app()
    for seconds in ("abc", "", "10s"):  # (not float()'s message, naming neither)
        monkeypatch.setenv("TRANSACTION_SECONDS", seconds)
        message = f"$TRANSACTION_SECONDS must be a number of seconds, not {seconds!r}"
        with pytest.raises(ValueError, match=f"^{re.escape(message)}$"):
            create_app()


async def test_indexes_exist_before_the_first_request(service: Service) -> None:
    books = await get_async_db().book.index_information()
    assert books["author_1_title_1"]["unique"] is True
    assert books["title_1__id_1"]["key"] == [("title", 1), ("_id", 1)]
    authors = await get_async_db().author.index_information()
    assert authors["name_1"]["unique"] is True


async def test_the_old_list_index_is_left_and_reported_extra(
    mongodb_uri: str,
) -> None:
    """On a database of the example's earlier version (its list index on title
    alone), the app starts, creating the new index beside the old one, which
    async_compare_indexes reports as extra (what the guide says to drop)."""
    name = f"test_fastapi_{uuid4().hex[:12]}"
    async with pymongo.AsyncMongoClient(mongodb_uri) as client:
        await client[name].book.create_index("title", name="title_1")
        app = create_app(Settings(mongodb_uri, name))
        try:
            async with app.router.lifespan_context(app):
                books = await get_async_db().book.index_information()
                assert sorted(books) == [
                    "_id_",
                    "author_1_title_1",
                    "title_1",
                    "title_1__id_1",
                ]
                assert await Book.async_compare_indexes() == {
                    "missing": [],
                    "extra": [[("title", 1)]],
                }
        finally:
            await client.drop_database(name)


async def test_crud_round_trip(service: Service) -> None:
    ann = await new_author(service, "Ann Leckie")
    book_id = await new_book(service, ann, "Ancillary Justice", year=2013)

    response = await service.http.get(f"/books/{book_id}")
    assert response.status_code == 200
    assert response.json() == {
        "id": book_id,
        "title": "Ancillary Justice",
        "year": 2013,
        "author": {"id": ann, "name": "Ann Leckie"},
        "has_manuscript": False,
    }

    response = await service.http.patch(f"/books/{book_id}", json={"year": 2014})
    assert response.status_code == 200
    assert response.json()["year"] == 2014
    stored = await get_async_db().book.find_one()
    assert stored is not None
    assert (stored["title"], stored["year"]) == ("Ancillary Justice", 2014)

    response = await service.http.delete(f"/books/{book_id}")
    assert (response.status_code, response.content) == (204, b"")
    assert await get_async_db().book.count_documents({}) == 0


async def test_does_not_exist_is_a_404(service: Service) -> None:
    missing = "0123456789abcdef01234567"
    for path, model in [
        (f"/books/{missing}", "Book"),
        (f"/authors/{missing}", "Author"),
    ]:
        response = await service.http.get(path)
        assert response.status_code == 404
        assert response.json() == {"detail": f"{model} matching query does not exist."}

    response = await service.http.post(
        "/books", json={"title": "Orphan", "author_id": missing}
    )
    assert response.status_code == 404
    assert response.json() == {"detail": f"author {missing} does not exist"}
    assert await get_async_db().book.count_documents({}) == 0

    ann = await new_author(service, "Ann")
    book_id = await new_book(service, ann, "No manuscript")
    response = await service.http.get(f"/books/{book_id}/manuscript")
    assert response.status_code == 404
    assert response.json() == {"detail": f"book {book_id} has no manuscript"}

    # A dangling reference (its author removed behind the app's back) too.
    await get_async_db().author.delete_many({})
    response = await service.http.get(f"/books/{book_id}")
    assert response.status_code == 404
    detail = response.json()["detail"]
    assert detail == (
        f"Trying to dereference unknown document DBRef('author', ObjectId('{ann}'))"
        " (reference 'author')"
    )


async def test_creating_a_book_is_three_round_trips(service: Service) -> None:
    """One write of the author (which proves that it exists and conflicts with
    its delete), the book's insert and the commit, in one transaction."""
    ann = await new_author(service, "Ann")
    service.log.clear()
    book_id = await new_book(service, ann, "Dune", year=1965)
    assert service.log.names == ["findAndModify", "insert", "commitTransaction"]
    modify, insert, commit = (event.command for event in service.log.events)
    assert (modify["findAndModify"], modify["query"], modify["update"]) == (
        "author",
        {"_id": ObjectId(ann)},
        {"$inc": {"books_added": 1}},
    )
    assert modify["startTransaction"] is True
    assert insert["insert"] == "book"
    assert [book["_id"] for book in insert["documents"]] == [ObjectId(book_id)]
    assert {modify["lsid"]["id"], insert["lsid"]["id"]} == {commit["lsid"]["id"]}
    assert {modify["txnNumber"], insert["txnNumber"]} == {commit["txnNumber"]}
    stored = await get_async_db().book.find_one({"_id": ObjectId(book_id)})
    assert stored is not None
    assert (stored["title"], stored["year"], stored["author"]) == (
        "Dune",
        1965,
        ObjectId(ann),
    )
    assert (await get_async_db().author.find_one())["books_added"] == 1


async def test_a_conflict_outlasting_the_time_limit_is_a_503(
    impatient_service: Service, mongodb_uri: str
) -> None:
    """A write conflict that does not end (the server refuses every insert of
    the app's client with a WriteConflict, labelled as it labels one) runs the
    transaction again until the settings' ``transaction_seconds`` (not PyMongo's
    120 s), then answers 503 with a Retry-After: not a 500."""
    service = impatient_service
    ann = await new_author(service, "Ann")
    service.log.clear()
    with fail_command(
        mongodb_uri,
        "insert",
        mode="alwaysOn",
        error_code=112,
        error_labels=["TransientTransactionError"],
        app_name=service.name,
    ):
        for path, body in [
            ("/books", {"title": "T", "author_id": ann}),
            (f"/authors/{ann}/books", [{"title": "U"}]),
        ]:
            response = await service.http.post(path, json=body)
            assert (response.status_code, response.json()) == (
                503,
                {"detail": "the database is busy or unreachable, try again"},
            )
            assert response.headers["retry-after"] == "1"
    assert service.log.count("commitTransaction") == 0
    assert await get_async_db().book.count_documents({}) == 0
    assert (await get_async_db().author.find_one())["books_added"] == 0


@pytest.mark.parametrize(
    "failure",
    [{"close_connection": True}, {"error_code": 50}],
    ids=["connection lost", "time limit"],
)
async def test_a_database_that_does_not_answer_is_a_503(
    impatient_service: Service, mongodb_uri: str, failure: dict[str, Any]
) -> None:
    """A read whose connection is lost twice (PyMongo retries it once), or
    that exceeds its time limit (ExecutionTimeout), and a write that does
    (MongoEngine's OperationError, the driver's error its cause): a 503."""
    service = impatient_service
    ann = await new_author(service, "Ann")
    with fail_command(
        mongodb_uri,
        ["find", "findAndModify"],
        mode="alwaysOn",
        app_name=service.name,
        **failure,
    ):
        for response in [
            await service.http.get(f"/authors/{ann}"),
            await service.http.post("/books", json={"title": "T", "author_id": ann}),
        ]:
            assert (response.status_code, response.json()) == (
                503,
                {"detail": "the database is busy or unreachable, try again"},
            )
            assert response.headers["retry-after"] == "1"
    assert (await service.http.get(f"/authors/{ann}")).status_code == 200
    assert await get_async_db().book.count_documents({}) == 0


async def test_any_other_operation_error_is_a_500(
    service: Service, mongodb_uri: str
) -> None:
    """An OperationError not caused by a time-out has no answer of its own:
    raised again, it is the server's 500 (which httpx's transport raises)."""
    ann = await new_author(service, "Ann")
    body = {"title": "T", "author_id": ann}
    failure = {"error_code": 2, "app_name": service.name}  # (BadValue)
    with fail_command(mongodb_uri, "findAndModify", **failure):
        with pytest.raises(OperationError, match=r"^Update failed \(.*BadValue"):
            await service.http.post("/books", json=body)
    assert (await service.http.post("/books", json=body)).status_code == 201


async def assert_no_book_nor_manuscript_left() -> None:
    """No book is stored, nor any manuscript's file or chunk."""
    db = get_async_db()
    assert await db.book.count_documents({}) == 0
    assert await db["manuscripts.files"].count_documents({}) == 0
    assert await db["manuscripts.chunks"].count_documents({}) == 0


@contextlib.contextmanager
def write_concern_fails(
    uri: str, commands: list[str], code: int, app_name: str
) -> Iterator[None]:
    """Inside the block, the server runs ``commands`` of the client named
    ``app_name``, then answers each with a writeConcernError of ``code``."""
    error = {"code": code, "errmsg": f"write concern failed ({code})"}
    data = {"failCommands": commands, "appName": app_name, "writeConcernError": error}
    with pymongo.MongoClient(uri) as client:
        configure = functools.partial(client.admin.command, "configureFailPoint")
        configure("failCommand", mode="alwaysOn", data=data)
        try:
            yield
        finally:
            configure("failCommand", mode="off")


async def test_a_write_concern_out_of_time_is_a_503(
    service: Service, mongodb_uri: str
) -> None:
    """A commit, or a save, whose write concern ran out of time (the server's
    MaxTimeMSExpired there: PyMongo's WTimeoutError, not an ExecutionTimeout;
    for the save, MongoEngine's OperationError caused by it) is a 503 too. Both
    applied: the book sent again finds its title taken (409)."""
    ann = await new_author(service, "Ann")
    book_id = await new_book(service, ann, "Dune")
    body = {"title": "Emma", "author_id": ann}
    commands = ["commitTransaction", "update"]
    with write_concern_fails(mongodb_uri, commands, 50, service.name):
        for response in [
            await service.http.post("/books", json=body),
            await service.http.patch(f"/books/{book_id}", json={"year": 1965}),
        ]:
            assert (response.status_code, response.json()) == (
                503,
                {"detail": "the database is busy or unreachable, try again"},
            )
            assert response.headers["retry-after"] == "1"
    stored = get_async_db().book.find({}, {"_id": 0, "title": 1, "year": 1})
    assert await stored.sort("title").to_list() == [
        {"title": "Dune", "year": 1965},
        {"title": "Emma"},
    ]
    response = await service.http.post("/books", json=body)
    assert (response.status_code, response.json()) == (
        409,
        {"detail": "already exists"},
    )


async def test_another_write_concern_error_is_a_500(
    service: Service, mongodb_uri: str
) -> None:
    """A driver error that is no time-out (a commit's write concern that the
    replica set cannot satisfy, UnsatisfiableWriteConcern) stays a 500."""
    ann = await new_author(service, "Ann")
    body = {"title": "Emma", "author_id": ann}
    with write_concern_fails(mongodb_uri, ["commitTransaction"], 100, service.name):
        with pytest.raises(WriteConcernError, match=r"^write concern failed \(100\)"):
            await service.http.post("/books", json=body)


async def test_malformed_ids_are_fastapis_422_before_any_query(
    service: Service,
) -> None:
    """A malformed id, wherever the request gives it, is refused by FastAPI
    (its 422, naming where the id was) before any command is sent."""
    bad = "not-an-id"
    requests = [
        ("GET", f"/authors/{bad}", {}, ["path", "author_id"]),
        ("DELETE", f"/authors/{bad}", {}, ["path", "author_id"]),
        ("POST", f"/authors/{bad}/books", {"json": []}, ["path", "author_id"]),
        ("GET", "/books", {"params": {"author_id": bad}}, ["query", "author_id"]),
        ("POST", "/books", {"json": {"title": "T", "author_id": bad}}, None),
        ("GET", f"/books/{bad}", {}, ["path", "book_id"]),
        ("PATCH", f"/books/{bad}", {"json": {}}, ["path", "book_id"]),
        ("DELETE", f"/books/{bad}", {}, ["path", "book_id"]),
        ("PUT", f"/books/{bad}/manuscript", {"content": b"x"}, ["path", "book_id"]),
        ("GET", f"/books/{bad}/manuscript", {}, ["path", "book_id"]),
    ]
    service.log.clear()
    for method, path, options, loc in requests:
        response = await service.http.request(method, path, **options)
        assert response.status_code == 422, (method, path)
        (error,) = response.json()["detail"]
        assert (error["type"], error["loc"], error.get("input")) == (
            "string_pattern_mismatch",
            loc or ["body", "author_id"],
            None if loc is None else bad,  # (a body's value is not echoed)
        )
    assert service.log.names == []


async def test_invalid_values_are_a_422_and_duplicates_a_409(service: Service) -> None:
    ann = await new_author(service, "Ann")
    response = await service.http.post(
        "/books", json={"title": "Negative", "author_id": ann, "year": -5}
    )
    # (MongoEngine's ValidationError, in FastAPI's shape as pydantic's are)
    assert (response.status_code, response.json()) == (
        422,
        {
            "detail": [
                {
                    "type": "value_error",
                    "loc": ["body", "year"],
                    "msg": "Integer value is too small",
                }
            ]
        },
    )
    # (the author's count, raised before the book was refused, rolled back)
    assert (await get_async_db().author.find_one())["books_added"] == 0
    for year in (2**70, 10_000):  # past BSON's ints: no 500 from the encoder
        body = {"title": "Far", "author_id": ann, "year": year}
        response = await service.http.post("/books", json=body)
        assert response.status_code == 422
        assert response.json()["detail"][0]["loc"] == ["body", "year"]
    for skip in (2**63, 100_001):  # past BSON's ints, or a page too deep
        response = await service.http.get("/books", params={"skip": skip})
        assert response.status_code == 422
        assert response.json()["detail"][0]["loc"] == ["query", "skip"]

    too_many = [{"title": f"T{n}"} for n in range(501)]
    response = await service.http.post(f"/authors/{ann}/books", json=too_many)
    assert response.status_code == 422
    assert response.json()["detail"][0]["loc"] == ["body"]
    assert await get_async_db().book.count_documents({}) == 0
    response = await service.http.post("/authors", json={"name": "Ann"})
    assert (response.status_code, response.json()) == (
        409,
        {"detail": "already exists"},
    )
    assert await get_async_db().author.count_documents({}) == 1


async def test_a_batch_refused_by_mongoengine_names_the_book(
    service: Service,
) -> None:
    """A batch whose third book MongoEngine refuses (a negative year) is a 422
    whose ``loc`` names that book by its index, as pydantic's do (["body", 2,
    "year"]), not a field of no book; nothing of the batch is written."""
    ann = await new_author(service, "Ann")
    batch = [{"title": "A"}, {"title": "B"}, {"title": "C", "year": -1}]
    response = await service.http.post(f"/authors/{ann}/books", json=batch)
    assert (response.status_code, response.json()) == (
        422,
        {
            "detail": [
                {
                    "type": "value_error",
                    "loc": ["body", 2, "year"],
                    "msg": "Integer value is too small",
                }
            ]
        },
    )
    assert await get_async_db().book.count_documents({}) == 0
    response = await service.http.post(f"/authors/{ann}/books", json=[{"title": 5}])
    assert response.json()["detail"][0]["loc"] == ["body", 0, "title"]  # pydantic's


async def test_a_body_past_the_bound_is_a_413_before_it_is_parsed(
    service: Service,
) -> None:
    """A JSON body over MAX_JSON_BYTES (a batch of many books) is refused with
    a 413 as soon as its bytes pass the bound, before it is parsed or
    validated (pydantic's 422 would hold the whole body, echoed back); the
    largest batch allowed (500 books of 300 escaped characters) still fits."""
    ann = await new_author(service, "Ann")
    service.log.clear()
    many = [{"title": "T"} for _ in range(80_000)]  # (about 1.2 MB)
    read: list[int] = []
    # (the second chunked, without a Content-Length: its bytes are counted)
    for content in (json.dumps(many).encode(), spaces(MAX_JSON_BYTES + 1, read)):
        response = await service.http.post(
            f"/authors/{ann}/books",
            content=content,
            headers={"content-type": "application/json"},
        )
        assert (response.status_code, response.json()) == (
            413,
            {"detail": f"body over {MAX_JSON_BYTES} bytes"},
        )
    assert len(read) == MAX_JSON_BYTES // (64 * 1024) + 1  # (read up to the bound)
    assert service.log.names == []
    largest = [{"title": f"{n:03}" + "\u00e9" * 297} for n in range(500)]
    content = json.dumps(largest).encode()  # (each \u00e9 escaped: 6 bytes)
    assert len(content) >= 900_000
    response = await service.http.post(
        f"/authors/{ann}/books",
        content=content,
        headers={"content-type": "application/json"},
    )
    assert response.status_code == 201, response.text
    assert await get_async_db().book.count_documents({}) == 500
    exactly = b"[]".ljust(MAX_JSON_BYTES)  # (the bound itself is read)
    response = await service.http.post(
        f"/authors/{ann}/books",
        content=exactly,
        headers={"content-type": "application/json"},
    )
    assert (response.status_code, response.json()) == (201, [])


async def spaces(size: int, read: list[int]) -> AsyncIterator[bytes]:
    """``size`` spaces in pieces of 64 KiB, noting in ``read`` each piece read."""
    for start in range(0, size, 64 * 1024):
        read.append(start)
        yield b" " * min(64 * 1024, size - start)


async def test_a_declared_length_past_the_bound_is_a_413_before_any_byte_is_read(
    service: Service, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A body whose Content-Length is over the bound (a JSON body's, or a
    manuscript's) is a 413 from that header alone: none of its bytes is read
    (the server would otherwise take in up to the bound for nothing), and no
    query sent (not even the book's read, before a manuscript's 413)."""
    monkeypatch.setattr(routes, "MAX_MANUSCRIPT_BYTES", 2 * MB)
    ann = await new_author(service, "Ann")
    book_id = await new_book(service, ann, "Dune")
    service.log.clear()
    for method, path, limit in [
        ("POST", f"/authors/{ann}/books", MAX_JSON_BYTES),
        ("PUT", f"/books/{book_id}/manuscript", 2 * MB),
    ]:
        read: list[int] = []
        response = await service.http.request(
            method,
            path,
            content=spaces(limit + 1, read),
            headers={"content-length": str(limit + 1)},
        )
        assert (response.status_code, response.json()) == (
            413,
            {"detail": f"body over {limit} bytes"},
        )
        assert read == []
    assert service.log.names == []
    assert await get_async_db()["manuscripts.files"].count_documents({}) == 0


async def test_a_body_that_stops_coming_is_a_408_leaving_nothing(
    service: Service, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A body whose bytes stop coming (fewer than its Content-Length says, which
    uvicorn would wait for as long as the client holds the connection) is a
    408 after BODY_WAIT_SECONDS, the connection closed: no book stored, the
    chunks of the upload removed and the book's manuscript kept."""
    monkeypatch.setattr(routes, "BODY_WAIT_SECONDS", 1.0)
    ann = await new_author(service, "Ann")
    book_id = await new_book(service, ann, "Dune")
    path = f"/books/{book_id}/manuscript"
    assert (await service.http.put(path, content=b"first")).status_code == 200

    async def stalled(first: bytes) -> AsyncIterator[bytes]:
        yield first
        await asyncio.Event().wait()  # (the client sends no more)

    for method, path_, first in [
        ("POST", f"/authors/{ann}/books", b'[{"title": "Emma"}'),
        ("PUT", path, os.urandom(600 * 1024)),  # (over a GridFS chunk: stored)
    ]:
        sent = service.http.request(
            method,
            path_,
            content=stalled(first),
            headers={"content-length": str(len(first) + 100)},
        )
        response = await asyncio.wait_for(sent, 60)  # (without the 408: held)
        assert (response.status_code, response.json()) == (
            408,
            {"detail": "no bytes of the body for 1.0 s"},
        )
        assert response.headers["connection"] == "close"
    assert await get_async_db().book.distinct("title") == ["Dune"]
    assert await get_async_db()["manuscripts.chunks"].count_documents({}) == 1
    assert (await service.http.get(path)).content == b"first"


async def test_a_manuscript_past_the_bound_is_a_413_leaving_no_chunk(
    service: Service, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A manuscript sent without a Content-Length (chunked) is stored as it
    arrives until it passes MAX_MANUSCRIPT_BYTES: then a 413, its chunks
    already written removed, the book's manuscript kept; the bound itself fits."""
    monkeypatch.setattr(routes, "MAX_MANUSCRIPT_BYTES", 9 * MB)
    ann = await new_author(service, "Ann")
    book_id = await new_book(service, ann, "Dune")
    path = f"/books/{book_id}/manuscript"
    assert (await service.http.put(path, content=b"first")).status_code == 200
    chunks = get_async_db()["manuscripts.chunks"]
    written: list[int] = []

    async def body(pieces: int) -> AsyncIterator[bytes]:
        for _ in range(pieces):  # (256 KiB each)
            written.append(await chunks.count_documents({}))
            yield os.urandom(256 * 1024)

    response = await service.http.put(path, content=body(40))  # (10 MiB)
    assert (response.status_code, response.json()) == (
        413,
        {"detail": f"body over {9 * MB} bytes"},
    )
    assert max(written) > 1  # (chunks were stored before the bound was passed)
    stored = await get_async_db().book.find_one()
    assert stored is not None
    assert await get_async_db()["manuscripts.files"].distinct("_id") == [
        stored["manuscript"]
    ]
    assert await chunks.count_documents({}) == 1
    assert (await service.http.get(path)).content == b"first"
    response = await service.http.put(path, content=body(36))  # (the bound: 9 MiB)
    assert (response.status_code, response.json()["length"]) == (200, 9 * MB)


async def test_a_stored_value_mongoengine_refuses_is_named_at_the_books_path(
    service: Service,
) -> None:
    """A PATCH whose merge with the stored book MongoEngine refuses (a negative
    year written by another program, the body giving only a title) is a 422
    naming the stored book's field at its path (["path", "book_id", "year"]),
    not the body, which has no year; a year the body gives is the body's, and a
    PATCH that gives a valid one mends the book."""
    ann = await new_author(service, "Ann")
    book_id = await new_book(service, ann, "Dune")
    await get_async_db().book.update_one({}, {"$set": {"year": -1}})
    message = "Integer value is too small"
    for patch, loc in [
        ({"title": "Emma"}, ["path", "book_id", "year"]),
        ({"title": "Emma", "year": -2}, ["body", "year"]),
    ]:
        response = await service.http.patch(f"/books/{book_id}", json=patch)
        assert (response.status_code, response.json()) == (
            422,
            {"detail": [{"type": "value_error", "loc": loc, "msg": message}]},
        )
    stored = get_async_db().book.find({}, {"_id": 0, "title": 1, "year": 1})
    assert await stored.to_list() == [{"title": "Dune", "year": -1}]
    response = await service.http.patch(f"/books/{book_id}", json={"year": 1965})
    assert (response.status_code, response.json()["year"]) == (200, 1965)


async def test_a_422_does_not_echo_the_body_back(service: Service) -> None:
    """A body that is no JSON object (a form, plain text: FastAPI takes its
    bytes as the value), a batch too long or a field's value refused is a 422
    of FastAPI's shape that holds nothing of the body (a client's secret, up to
    a megabyte); a value refused in the path or the query is still named."""
    ann = await new_author(service, "Ann")
    secret = b"name=Ann&password=hunter2"
    for content_type in ("application/x-www-form-urlencoded", "text/plain", None):
        headers = {"content-type": content_type} if content_type else {}
        response = await service.http.post("/authors", content=secret, headers=headers)
        assert (response.status_code, response.json()) == (
            422,
            {
                "detail": [
                    {
                        "type": "model_attributes_type",
                        "loc": ["body"],
                        "msg": "Input should be a valid dictionary or object to"
                        " extract fields from",
                    }
                ]
            },
        )
    too_many = [{"title": f"secret {n}"} for n in range(501)]
    response = await service.http.post(f"/authors/{ann}/books", json=too_many)
    assert response.status_code == 422
    assert b"secret" not in response.content
    response = await service.http.post("/authors", json={"name": "secret" * 100})
    assert (response.status_code, response.json()["detail"][0]["loc"]) == (
        422,
        ["body", "name"],
    )
    assert b"secret" not in response.content
    response = await service.http.get("/books", params={"skip": -1})
    assert response.json()["detail"][0]["input"] == "-1"
    assert await get_async_db().book.count_documents({}) == 0


async def test_a_bounded_body_read_is_read_again() -> None:
    """What ``body()`` read (FastAPI's JSON) is given again by ``stream()``, as
    Starlette's request gives it (a dependency reading the raw body after
    FastAPI), not a "Stream consumed" error, a 500; ``json()`` reads it too."""
    messages = [
        {"type": "http.request", "body": b'{"title":', "more_body": True},
        {"type": "http.request", "body": b' "Dune"}', "more_body": False},
    ]

    async def receive() -> dict[str, Any]:
        return messages.pop(0)

    scope = {"type": "http", "method": "POST", "headers": []}
    request = bounded(Request(scope, receive), MAX_JSON_BYTES)
    assert await request.body() == b'{"title": "Dune"}'
    assert [chunk async for chunk in request.stream()] == [b'{"title": "Dune"}', b""]
    assert await request.json() == {"title": "Dune"}
    assert messages == []


async def test_a_content_length_that_is_no_number_is_counted(
    service: Service,
) -> None:
    """A Content-Length that is not ASCII digits (a superscript two, which
    Python's ``isdigit`` takes for a digit, ``int`` refuses) bounds nothing:
    the body is counted as it is read, and taken (not a 400, or a 500)."""
    ann = await new_author(service, "Ann")
    book_id = await new_book(service, ann, "Dune")
    headers = {"content-length": b"\xb2", "content-type": b"application/json"}
    response = await service.http.post(
        f"/authors/{ann}/books", content=b'[{"title": "Emma"}]', headers=headers
    )
    assert (response.status_code, response.json()[0]["title"]) == (201, "Emma")
    path = f"/books/{book_id}/manuscript"
    response = await service.http.put(path, content=b"draft", headers=headers)
    assert (response.status_code, response.json()["length"]) == (200, 5)
    assert (await service.http.get(path)).content == b"draft"


def plan_of(plan: dict[str, Any]) -> list[tuple[str, str | None]]:
    """The stages of an explained query plan, each with its index, if any."""
    stages = [(plan["stage"], plan.get("indexName"))]
    for child in [plan.get("inputStage"), *plan.get("inputStages", [])]:
        stages += plan_of(child) if child else []
    return stages


async def test_a_page_of_books_is_read_in_order_from_an_index(
    service: Service,
) -> None:
    """The list's find (title, then id) reads its page from an index, in
    order: no scan of the collection, no sort of every book in memory."""
    ann = await new_author(service, "Ann")
    for title in ("C", "A", "B"):
        await new_book(service, ann, title)
    service.log.clear()
    response = await service.http.get("/books", params={"skip": 1, "limit": 1})
    assert [book["title"] for book in response.json()] == ["B"]
    commands = [event.command for event in service.log.events]
    (find,) = [command for command in commands if command.get("find") == "book"]
    query = {key: find[key] for key in ("find", "filter", "sort", "skip", "limit")}
    explained = await get_async_db().command("explain", query)
    winning = explained["queryPlanner"]["winningPlan"]
    stages = plan_of(winning.get("queryPlan", winning))
    assert ("IXSCAN", "title_1__id_1") in stages
    assert {"SORT", "COLLSCAN"}.isdisjoint(stage for stage, _ in stages), stages


async def test_list_loads_authors_with_select_related(service: Service) -> None:
    authors = [await new_author(service, f"Author {n}") for n in range(3)]
    for n in range(12):
        await new_book(service, authors[n % 3], f"Book {n:02}")

    service.log.clear()
    response = await service.http.get("/books", params={"limit": 10})
    assert response.status_code == 200
    assert service.log.names == ["find", "find"]  # the books, then their authors
    books = response.json()
    assert [book["title"] for book in books] == [f"Book {n:02}" for n in range(10)]
    assert [book["author"]["name"] for book in books] == [
        f"Author {n % 3}" for n in range(10)
    ]

    response = await service.http.get(
        "/books", params={"author_id": authors[1], "skip": 1}
    )
    assert [book["title"] for book in response.json()] == [
        "Book 04",
        "Book 07",
        "Book 10",
    ]


async def test_concurrent_requests(service: Service) -> None:
    authors = await asyncio.gather(*(new_author(service, f"A{n}") for n in range(5)))
    created = await asyncio.gather(
        *(new_book(service, authors[n % 5], f"T{n:03}") for n in range(60))
    )
    assert len(set(created)) == 60

    reads = await asyncio.gather(
        *(service.http.get(f"/books/{book_id}") for book_id in created),
        *(service.http.get("/books", params={"limit": 500}) for _ in range(5)),
    )
    assert all(response.status_code == 200 for response in reads)
    for n, response in enumerate(reads[:60]):
        assert response.json()["title"] == f"T{n:03}"
        assert response.json()["author"]["name"] == f"A{n % 5}"
    for response in reads[60:]:
        assert len(response.json()) == 60

    stored = await get_async_db().book.find({}, {"title": 1, "author": 1}).to_list()
    by_title = {book["title"]: str(book["author"]) for book in stored}
    assert by_title == {f"T{n:03}": authors[n % 5] for n in range(60)}


async def test_a_request_runs_in_one_transaction(service: Service) -> None:
    ann = await new_author(service, "Ann")
    books = [{"title": "Dune"}, {"title": "Emma", "year": 1815}]
    response = await service.http.post(f"/authors/{ann}/books", json=books)
    assert response.status_code == 201
    assert [book["title"] for book in response.json()] == ["Dune", "Emma"]

    # The third book repeats a title: the whole request is rolled back.
    batch = [{"title": "Fresh 1"}, {"title": "Fresh 2"}, {"title": "Dune"}]
    response = await service.http.post(f"/authors/{ann}/books", json=batch)
    assert response.status_code == 409
    titles = await get_async_db().book.distinct("title")
    assert sorted(titles) == ["Dune", "Emma"]


async def test_concurrent_transactions_commit_or_roll_back_alone(
    service: Service,
) -> None:
    authors = await asyncio.gather(*(new_author(service, f"A{n}") for n in range(8)))

    def batch(n: int) -> list[dict[str, str]]:
        titles = [f"{n}-a", f"{n}-b", f"{n}-c"]
        return [{"title": title} for title in titles + titles[:1] * (n % 2)]

    responses = await asyncio.gather(
        *(
            service.http.post(f"/authors/{author}/books", json=batch(n))
            for n, author in enumerate(authors)
        )
    )
    assert [response.status_code for response in responses] == [201, 409] * 4
    titles = await get_async_db().book.distinct("title")
    assert sorted(titles) == sorted(
        f"{n}-{letter}" for n in (0, 2, 4, 6) for letter in "abc"
    )


async def test_large_manuscript_streams_in_and_out(service: Service) -> None:
    ann = await new_author(service, "Ann")
    book_id = await new_book(service, ann, "Big")
    data = os.urandom(20 * MB + 12345)
    pieces = [
        data[start : start + 256 * 1024] for start in range(0, len(data), 256 * 1024)
    ]
    chunks_before_the_end: list[int] = []

    async def body() -> AsyncIterator[bytes]:
        for number, piece in enumerate(pieces):
            if number == len(pieces) - 1:
                chunks = get_async_db()["manuscripts.chunks"]
                chunks_before_the_end.append(await chunks.count_documents({}))
            yield piece

    response = await service.http.put(
        f"/books/{book_id}/manuscript",
        params={"filename": "big draft.bin"},
        content=body(),
        headers={"content-type": "application/x-draft"},
    )
    assert response.status_code == 200, response.text
    assert response.json() == {
        "filename": "big draft.bin",
        "content_type": "application/x-draft",
        "length": len(data),
    }
    # Chunks were in the database before the client had sent the whole body.
    assert chunks_before_the_end[0] >= 8 * MB // (255 * 1024)

    response = await service.http.get(f"/books/{book_id}/manuscript")
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/x-draft"
    assert response.headers["content-length"] == str(len(data))
    assert response.headers["content-disposition"] == (
        "attachment; filename*=UTF-8''big%20draft.bin"
    )
    assert response.content == data

    response = await service.http.put(
        f"/books/{book_id}/manuscript", content=b"second draft"
    )
    assert response.json()["length"] == len(b"second draft")
    response = await service.http.get(f"/books/{book_id}/manuscript")
    assert response.content == b"second draft"
    files = get_async_db()["manuscripts.files"]
    assert await files.count_documents({}) == 1  # the first draft was deleted
    assert await get_async_db()["manuscripts.chunks"].count_documents({}) == 1


async def test_a_head_of_a_manuscript_reads_none_of_its_chunks(
    service: Service,
) -> None:
    """``HEAD`` of a manuscript (what a client sends to learn its length
    before it downloads) answers a download's headers, without a body, from
    the book and the file's metadata: none of its chunks is read. Without
    one, a 405 named PUT as the path's only method."""
    ann = await new_author(service, "Ann")
    book_id = await new_book(service, ann, "Dune")
    path = f"/books/{book_id}/manuscript"
    assert (await service.http.head(path)).status_code == 404
    data = os.urandom(2 * MB)
    params = {"filename": "draft.txt"}
    headers = {"content-type": "text/plain"}
    await service.http.put(path, params=params, content=data, headers=headers)
    service.log.clear()
    response = await service.http.head(path)
    assert (response.status_code, response.content) == (200, b"")
    assert [event.command["find"] for event in service.log.events] == [
        "book",
        "manuscripts.files",
    ]
    downloaded = await service.http.get(path)
    assert downloaded.content == data
    assert response.headers == downloaded.headers
    assert response.headers["content-length"] == str(len(data))


async def test_a_manuscript_is_sent_as_stored_to_be_saved_not_shown(
    service: Service,
) -> None:
    """A manuscript is sent (``GET`` and ``HEAD``) with the uploader's content
    type as stored (no charset added to a text type: a Latin-1 text is not
    read as UTF-8), as an attachment a browser neither shows nor sniffs (an
    HTML page's script does not run on the API's origin); a file stored
    without a type is sent as bytes."""
    ann = await new_author(service, "Ann")
    book_id = await new_book(service, ann, "Dune")
    path = f"/books/{book_id}/manuscript"
    for content_type, data in [
        ("text/html", b"<script>alert(document.cookie)</script>"),
        ("text/plain", "Déjà vu".encode("latin-1")),
        (None, b"raw"),
    ]:
        if content_type is None:  # (a file another program stored)
            bucket = AsyncGridFSBucket(get_async_db(), "manuscripts")
            grid_id = await bucket.upload_from_stream("raw", data)
            await get_async_db().book.update_one({}, {"$set": {"manuscript": grid_id}})
        else:
            headers = {"content-type": content_type}
            await service.http.put(path, content=data, headers=headers)
        for method in ("GET", "HEAD"):
            response = await service.http.request(method, path)
            assert response.status_code == 200
            assert {
                name: response.headers.get(name)
                for name in ("content-type", "x-content-type-options")
            } == {
                "content-type": content_type or "application/octet-stream",
                "x-content-type-options": "nosniff",
            }
            assert response.headers["content-disposition"].startswith("attachment;")
        assert response.content == b""  # (HEAD)
        assert (await service.http.get(path)).content == data


async def test_a_stored_content_type_no_header_carries_is_sent_as_bytes(
    service: Service,
) -> None:
    """A content type stored by other code that a header cannot carry (a line
    break, which would add a header; a character Latin-1 cannot encode, a 500)
    or that is not ASCII is not trusted: the manuscript is sent (``GET`` and
    ``HEAD``) as ``application/octet-stream``, whole."""
    ann = await new_author(service, "Ann")
    book_id = await new_book(service, ann, "Dune")
    path = f"/books/{book_id}/manuscript"
    response = await service.http.put(path, content=b"draft")
    files = get_async_db().manuscripts.files
    for stored in [
        "text/plain\r\nSet-Cookie: session=stolen",
        "text/plain; name=\u65e5\u672c",
        "text/plain; name=D\u00e9j\u00e0",
    ]:
        await files.update_one({}, {"$set": {"contentType": stored}})
        for method in ("GET", "HEAD"):
            response = await service.http.request(method, path)
            assert response.status_code == 200
            assert response.headers["content-type"] == "application/octet-stream"
            assert "set-cookie" not in response.headers
        assert (await service.http.get(path)).content == b"draft"


async def test_a_validation_error_without_a_loc_is_a_422() -> None:
    """A ``RequestValidationError`` raised by other code whose errors have no
    ``loc``, or an empty one, is FastAPI's 422 with them as given (their
    ``input`` kept: not the body's), not a 500 of the 422's handler."""
    app = create_app(Settings())
    errors = [
        {"type": "value_error", "msg": "no loc", "input": "given"},
        {"type": "value_error", "loc": (), "msg": "empty loc", "input": "given"},
        {
            "type": "value_error",
            "loc": ("body", "title"),
            "msg": "in the body",
            "input": "secret",
        },
    ]

    async def refuse() -> None:
        raise RequestValidationError(errors)

    app.add_api_route("/refused", refuse)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://x") as http:
        response = await http.get("/refused")
    assert (response.status_code, response.json()) == (
        422,
        {
            "detail": [
                errors[0],
                {**errors[1], "loc": []},
                {"type": "value_error", "loc": ["body", "title"], "msg": "in the body"},
            ]
        },
    )


async def test_a_replaced_manuscript_stays_until_the_book_holds_the_new_one(
    service: Service, mongodb_uri: str
) -> None:
    """An upload whose save of the book fails (its connection lost twice: a
    503) leaves the book with its manuscript, not with a file deleted before
    the save (async_replace's order: then a 404, the book saying it has one).
    The new file stays (the save may have applied); sent again, the upload
    replaces the manuscript and deletes the first one."""
    ann = await new_author(service, "Ann")
    book_id = await new_book(service, ann, "Dune")
    path = f"/books/{book_id}/manuscript"
    assert (await service.http.put(path, content=b"first")).status_code == 200
    failure = {"mode": "alwaysOn", "close_connection": True, "app_name": service.name}
    with fail_command(mongodb_uri, "update", **failure):
        response = await service.http.put(path, content=b"second")
        assert response.status_code == 503
    response = await service.http.get(path)
    assert (response.status_code, response.content) == (200, b"first")
    assert (await service.http.put(path, content=b"third")).status_code == 200
    assert (await service.http.get(path)).content == b"third"
    files = get_async_db()["manuscripts.files"]
    chunks = get_async_db()["manuscripts.chunks"]
    left = sorted(chunk["data"] for chunk in await chunks.find().to_list())
    assert (await files.count_documents({}), left) == (2, [b"second", b"third"])


async def test_a_replaced_manuscript_not_deleted_is_logged_not_a_503(
    service: Service, mongodb_uri: str, caplog: pytest.LogCaptureFixture
) -> None:
    """An upload whose save put the new manuscript in the book, then whose
    delete of the previous one failed (its connection lost twice), answers
    200, not a 503 that would have the client send the whole file again: the
    book serves the new manuscript, the previous one is left in GridFS and
    the log names it."""
    ann = await new_author(service, "Ann")
    book_id = await new_book(service, ann, "Dune")
    path = f"/books/{book_id}/manuscript"
    assert (await service.http.put(path, content=b"first")).status_code == 200
    stored = await get_async_db().book.find_one()
    assert stored is not None
    first = stored["manuscript"]
    failure = {"mode": "alwaysOn", "close_connection": True, "app_name": service.name}
    with fail_command(mongodb_uri, "delete", **failure):
        response = await service.http.put(path, content=b"second")
    file = {"filename": "manuscript", "content_type": "application/octet-stream"}
    assert (response.status_code, response.json()) == (200, {**file, "length": 6})
    response = await service.http.get(path)
    assert (response.status_code, response.content) == (200, b"second")
    files = get_async_db()["manuscripts.files"]
    assert first in await files.distinct("_id")
    assert await files.count_documents({}) == 2
    logged = [r.getMessage() for r in caplog.records if r.name == "fastapi_app.routes"]
    prefix = (
        f"book {book_id}: replaced manuscript {first} left in GridFS (AutoReconnect("
    )
    assert [message.startswith(prefix) for message in logged] == [True], logged


async def test_a_refused_upload_not_deleted_is_logged_still_a_409(
    service: Service,
    mongodb_uri: str,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """An upload whose save is refused (the book's manuscript changed since
    its load), then whose delete of its own file fails (its connection lost
    twice), still answers 409, not a 503: the book keeps what it holds, and
    the file left in GridFS is named in the log."""
    ann = await new_author(service, "Ann")
    book_id = await new_book(service, ann, "Dune")
    path = f"/books/{book_id}/manuscript"
    other = ObjectId()
    save = Book.async_save

    async def changed_first(book: Book, *args: Any, **kwargs: Any) -> Book:
        async with pymongo.AsyncMongoClient(mongodb_uri) as client:  # (not failed)
            books = client[service.name].book
            await books.update_one({"_id": book.pk}, {"$set": {"manuscript": other}})
        return await save(book, *args, **kwargs)

    monkeypatch.setattr(Book, "async_save", changed_first)
    failure = {"mode": "alwaysOn", "close_connection": True, "app_name": service.name}
    with fail_command(mongodb_uri, "delete", **failure):
        response = await service.http.put(path, content=b"late")
    assert (response.status_code, response.json()) == (
        409,
        {"detail": "changed meanwhile, try again"},
    )
    stored = await get_async_db().book.find_one()
    assert stored is not None and stored["manuscript"] == other
    files = await get_async_db()["manuscripts.files"].find().to_list()
    assert [file["length"] for file in files] == [4]
    logged = [r.getMessage() for r in caplog.records if r.name == "fastapi_app.routes"]
    prefix = (
        f"book {book_id}: refused manuscript {files[0]['_id']} left in GridFS"
        " (AutoReconnect("
    )
    assert [message.startswith(prefix) for message in logged] == [True], logged


async def test_an_upload_to_a_book_mongoengine_refuses_leaves_no_file(
    service: Service,
) -> None:
    """An upload to a book whose stored values MongoEngine refuses (a negative
    year, written by another program) is a 422, its save refused before any
    write: the file it stored is deleted, not left in GridFS held by nothing."""
    ann = await new_author(service, "Ann")
    book_id = await new_book(service, ann, "Dune")
    await get_async_db().book.update_one({}, {"$set": {"year": -1}})
    response = await service.http.put(f"/books/{book_id}/manuscript", content=b"x")
    assert (response.status_code, response.json()["detail"][0]["loc"]) == (
        422,
        ["path", "book_id", "year"],  # (the stored book's, not the body's)
    )
    stored = await get_async_db().book.find_one()
    assert stored is not None and "manuscript" not in stored
    assert await get_async_db()["manuscripts.files"].count_documents({}) == 0
    assert await get_async_db()["manuscripts.chunks"].count_documents({}) == 0


async def test_deleting_an_author_cascades_to_books_and_manuscripts(
    service: Service,
) -> None:
    ann, bob = await new_author(service, "Ann"), await new_author(service, "Bob")
    for author, title in [(ann, "A1"), (ann, "A2"), (bob, "B1")]:
        book_id = await new_book(service, author, title)
        response = await service.http.put(
            f"/books/{book_id}/manuscript", content=title.encode() * 1000
        )
        assert response.status_code == 200

    response = await service.http.delete(f"/authors/{ann}")
    assert response.status_code == 204
    assert (await service.http.get(f"/authors/{ann}")).status_code == 404
    assert await get_async_db().book.distinct("title") == ["B1"]
    files = get_async_db()["manuscripts.files"]
    assert await files.count_documents({}) == 1
    response = await service.http.get("/books")
    assert [book["title"] for book in response.json()] == ["B1"]
    assert response.json()[0]["has_manuscript"] is True


async def test_authors_deleted_while_their_books_are_written(
    service: Service,
) -> None:
    """Each author's delete races new books for them (one by one, and in a
    batch whose titles another batch repeats) and changes to their books: the
    write conflicts are retried (no 500: httpx's test transport would raise
    it), every delete cascades, and no book is left without its author."""
    authors = await asyncio.gather(*(new_author(service, f"A{n}") for n in range(8)))
    books = await asyncio.gather(
        *(
            new_book(service, author, f"{author}-{n}")
            for author in authors
            for n in range(3)
        )
    )

    def racing(n: int, author: str) -> list[Any]:
        batch = [{"title": "Same"}, {"title": f"B{n}"}]
        return [
            service.http.post(f"/authors/{author}/books", json=batch),
            service.http.post(f"/authors/{author}/books", json=batch[:1]),
            service.http.post("/books", json={"title": f"N{n}", "author_id": author}),
            service.http.delete(f"/authors/{author}"),
            service.http.post("/books", json={"title": f"M{n}", "author_id": author}),
            *(
                service.http.patch(f"/books/{book}", json={"year": n})
                for book in books[3 * n : 3 * n + 3]
            ),
        ]

    responses = await asyncio.gather(
        *(request for n, author in enumerate(authors) for request in racing(n, author))
    )
    deletes = [r for r in responses if r.request.method == "DELETE"]
    assert [r.status_code for r in deletes] == [204] * 8
    assert {r.status_code for r in responses} <= {200, 201, 204, 404, 409}
    assert await get_async_db().author.count_documents({}) == 0
    assert await get_async_db().book.find().to_list() == []
    response = await service.http.get("/books")
    assert (response.status_code, response.json()) == (200, [])


async def test_an_upload_cut_midway_leaves_no_chunks(service: Service) -> None:
    ann = await new_author(service, "Ann")
    book_id = await new_book(service, ann, "Cut")

    async def body() -> AsyncIterator[bytes]:
        for _ in range(40):  # 10 MB, more than one batch of chunks
            yield os.urandom(256 * 1024)
        raise ConnectionResetError("the client went away")

    with pytest.raises(ConnectionResetError):
        await service.http.put(f"/books/{book_id}/manuscript", content=body())
    assert await get_async_db()["manuscripts.chunks"].count_documents({}) == 0
    assert await get_async_db()["manuscripts.files"].count_documents({}) == 0
    response = await service.http.get(f"/books/{book_id}")
    assert response.json()["has_manuscript"] is False


async def test_a_book_deleted_meanwhile_is_not_saved_back(
    service: Service, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A PATCH or an upload whose book is deleted between its load and its
    save answers 409: a plain save (an upsert) would write back a book of the
    changed fields only, which the list endpoint cannot show."""
    ann = await new_author(service, "Ann")
    patched = await new_book(service, ann, "Patched")
    uploaded = await new_book(service, ann, "Uploaded")
    save = Book.async_save

    async def deleted_first(book: Book, *args: Any, **kwargs: Any) -> Book:
        await get_async_db().book.delete_one({"_id": book.pk})
        return await save(book, *args, **kwargs)

    monkeypatch.setattr(Book, "async_save", deleted_first)
    response = await service.http.patch(f"/books/{patched}", json={"year": 2000})
    assert (response.status_code, response.json()) == (
        409,
        {"detail": "changed meanwhile, try again"},
    )
    response = await service.http.put(f"/books/{uploaded}/manuscript", content=b"x")
    assert response.status_code == 409
    await assert_no_book_nor_manuscript_left()
    monkeypatch.undo()
    assert (await service.http.get("/books")).json() == []


async def test_a_manuscript_uploaded_meanwhile_is_deleted_with_its_book(
    service: Service, mongodb_uri: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A DELETE of a book whose manuscript is replaced (by another client)
    between its load and its delete conflicts with that write and runs again:
    204, the book gone with the new manuscript, no file left held by nothing."""
    ann = await new_author(service, "Ann")
    book_id = await new_book(service, ann, "Drafts")
    response = await service.http.put(f"/books/{book_id}/manuscript", content=b"one")
    assert response.status_code == 200
    load = QuerySet.async_get

    async def replaced_after(queryset: QuerySet, *args: Any, **kwargs: Any) -> Any:
        loaded = await load(queryset, *args, **kwargs)
        monkeypatch.undo()
        async with pymongo.AsyncMongoClient(mongodb_uri) as client:
            bucket = AsyncGridFSBucket(client[service.name], "manuscripts")
            new = await bucket.upload_from_stream("manuscript", b"two")
            update = {"$set": {"manuscript": new}}
            await client[service.name].book.update_one({"_id": loaded.pk}, update)
            await bucket.delete(loaded.manuscript.grid_id)
        return loaded

    monkeypatch.setattr(QuerySet, "async_get", replaced_after)
    service.log.clear()
    response = await service.http.delete(f"/books/{book_id}")
    assert (response.status_code, response.content) == (204, b"")
    assert service.log.count("find") == 2  # (run again after the conflict)
    await assert_no_book_nor_manuscript_left()


async def test_a_book_whose_manuscript_is_not_deleted_stays(
    impatient_service: Service, mongodb_uri: str, caplog: pytest.LogCaptureFixture
) -> None:
    """A DELETE of a book whose manuscript's delete fails (every delete after
    the book's loses its connection) answers 503, logging why, and leaves the
    book with its manuscript (not a book gone after a 503, its file left held
    by nothing); sent again, it deletes both."""
    service = impatient_service
    ann = await new_author(service, "Ann")
    book_id = await new_book(service, ann, "Dune")
    path = f"/books/{book_id}/manuscript"
    assert (await service.http.put(path, content=b"draft")).status_code == 200
    failure = {"close_connection": True, "app_name": service.name}
    with fail_command(mongodb_uri, "delete", mode={"skip": 1}, **failure):
        response = await service.http.delete(f"/books/{book_id}")
    assert (response.status_code, response.json()) == (
        503,
        {"detail": "the database is busy or unreachable, try again"},
    )
    logged = [r.getMessage() for r in caplog.records if r.name == "fastapi_app.errors"]
    prefix = f"DELETE /books/{book_id}: 503 ("
    assert [message.startswith(prefix) for message in logged] == [True], logged
    response = await service.http.get(path)
    assert (response.status_code, response.content) == (200, b"draft")
    response = await service.http.delete(f"/books/{book_id}")
    assert (response.status_code, response.content) == (204, b"")
    await assert_no_book_nor_manuscript_left()


async def test_a_manuscript_deleted_before_its_download_is_a_409(
    service: Service, mongodb_uri: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A download whose file is deleted (by a DELETE of the book, or an upload
    replacing it) after its metadata was read but before its first chunk is
    a 409, changed meanwhile, not a 200 cut short with an error logged (its
    chunks missing); sent again, it finds the book's new state."""
    ann = await new_author(service, "Ann")
    book_id = await new_book(service, ann, "Dune")
    path = f"/books/{book_id}/manuscript"
    assert (await service.http.put(path, content=b"draft")).status_code == 200
    get = Book.manuscript.async_get

    async def deleted_after(*args: Any, **kwargs: Any) -> Any:
        manuscript = await get(*args, **kwargs)
        async with pymongo.AsyncMongoClient(mongodb_uri) as client:
            bucket = AsyncGridFSBucket(client[service.name], "manuscripts")
            await bucket.delete(manuscript.grid_id)
            await client[service.name].book.delete_one({})
        return manuscript

    monkeypatch.setattr(Book.manuscript, "async_get", deleted_after)
    response = await service.http.get(path)
    assert (response.status_code, response.json()) == (
        409,
        {"detail": "changed meanwhile, try again"},
    )
    monkeypatch.undo()
    response = await service.http.get(path)
    assert response.status_code == 404


async def test_a_manuscript_replaced_before_its_metadata_is_read_is_a_409(
    service: Service, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A download whose book's file is replaced (an upload, which deletes the
    file it replaced) between the read of the book and of the file's metadata
    is a 409, changed meanwhile, not a 404 saying the book has no manuscript;
    sent again, it downloads the new one."""
    ann = await new_author(service, "Ann")
    book_id = await new_book(service, ann, "Dune")
    path = f"/books/{book_id}/manuscript"
    assert (await service.http.put(path, content=b"first")).status_code == 200
    get = Book.manuscript.async_get

    async def replaced_before(*args: Any, **kwargs: Any) -> Any:
        response = await service.http.put(path, content=b"second")
        assert response.status_code == 200, response.text
        return await get(*args, **kwargs)

    monkeypatch.setattr(Book.manuscript, "async_get", replaced_before)
    response = await service.http.get(path)
    assert (response.status_code, response.json()) == (
        409,
        {"detail": "changed meanwhile, try again"},
    )
    monkeypatch.undo()
    response = await service.http.get(path)
    assert (response.status_code, response.content) == (200, b"second")


async def test_a_manuscript_whose_chunks_are_lost_is_a_500_not_a_409(
    service: Service,
) -> None:
    """A download whose file lost its chunks (deleted by another program), its
    book unchanged, is the server's 500 (CorruptGridFile, which httpx's
    transport raises), not a 409 telling the client to try again, forever; a
    file whose metadata is gone too is a 404, the book has no manuscript."""
    ann = await new_author(service, "Ann")
    book_id = await new_book(service, ann, "Dune")
    path = f"/books/{book_id}/manuscript"
    assert (await service.http.put(path, content=b"draft")).status_code == 200
    await get_async_db()["manuscripts.chunks"].delete_many({})
    with pytest.raises(CorruptGridFile, match="no chunk #0"):
        await service.http.get(path)
    await get_async_db()["manuscripts.files"].delete_many({})
    response = await service.http.get(path)
    assert (response.status_code, response.json()) == (
        404,
        {"detail": f"book {book_id} has no manuscript"},
    )


async def test_concurrent_uploads_leave_one_manuscript(service: Service) -> None:
    """Of uploads to one book at once, those that lost the race answer 409 and
    delete what they stored: the book holds the one file left in GridFS."""
    ann = await new_author(service, "Ann")
    book_id = await new_book(service, ann, "Drafts")
    for _ in range(2):  # first uploads, then replacements
        responses = await asyncio.gather(
            *(
                service.http.put(
                    f"/books/{book_id}/manuscript", content=bytes([n]) * 300_000
                )
                for n in range(5)
            )
        )
        statuses = [response.status_code for response in responses]
        assert set(statuses) <= {200, 409} and 200 in statuses, statuses
        files = await get_async_db()["manuscripts.files"].find().to_list()
        stored = await get_async_db().book.find_one()
        assert stored is not None
        assert [file["_id"] for file in files] == [stored["manuscript"]]
        chunks = get_async_db()["manuscripts.chunks"]
        assert await chunks.distinct("files_id") == [stored["manuscript"]]


def excerpts(page: Path) -> list[str]:
    """The ```py blocks of ``page`` (excerpts; ```python blocks run in test_docs)."""
    return re.findall(r"^```py\n(.*?)^```", page.read_text(), re.M | re.S)


def test_the_guide_quotes_the_example_verbatim() -> None:
    guide = EXAMPLES.parent / "docs" / "fastapi.md"
    sources = [path.read_text() for path in EXAMPLES.glob("fastapi_app/*.py")]
    sources += [
        path.read_text() for path in Path(__file__).parent.glob("test_fastapi_app*.py")
    ]
    quoted = excerpts(guide)
    assert len(quoted) >= 10
    missing = [block for block in quoted if not any(block in s for s in sources)]
    assert missing == []
