"""The endpoints: authors, books, and each book's manuscript (GridFS)."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine
from typing import Annotated, Any, TypeVar
from urllib.parse import quote

import anyio
import pymongo
from fastapi import APIRouter, Body, HTTPException, Query, Request, Response
from fastapi.responses import StreamingResponse
from fastapi.routing import APIRoute
from gridfs.errors import CorruptGridFile
from pymongo.errors import PyMongoError
from starlette.types import Message

from fastapi_app.errors import unprocessable
from fastapi_app.models import Author, Book
from fastapi_app.schemas import (
    AuthorIn,
    AuthorOut,
    BookIn,
    BookOut,
    BookPatch,
    FileOut,
    Id,
    NewBook,
)
from mongoengine_async import (
    AsyncGridFSProxy,
    SaveConditionError,
    ValidationError,
    async_run_transaction,
)

# The largest JSON body read: a batch of 500 books of 300-character titles,
# each character sent escaped ("\u00e9"), fits; past it a 413, sent before the
# body is parsed or validated (whose 422 would echo the whole body back).
MAX_JSON_BYTES = 1024 * 1024
# The largest manuscript stored; past it a 413, and nothing left in GridFS.
MAX_MANUSCRIPT_BYTES = 64 * 1024 * 1024
# The longest wait for the next bytes of a body (uvicorn waits as long as the
# client holds the connection: one that sends fewer bytes than its
# Content-Length, or stops midway); past it a 408, the connection closed.
BODY_WAIT_SECONDS = 30.0


def bounded(request: Request, limit: int) -> Request:
    """``request``, its body read through a 413 past ``limit`` bytes: raised at
    once when its Content-Length says so (before any byte, or query), else as
    soon as the bytes received pass it (a chunked body, which has none); and
    through a 408 when no bytes come for ``BODY_WAIT_SECONDS``."""
    declared = request.headers.get("content-length", "")
    if declared.isascii() and declared.isdigit() and int(declared) > limit:
        raise HTTPException(413, f"body over {limit} bytes")
    size = 0

    async def receive() -> Message:
        nonlocal size
        try:
            with anyio.fail_after(BODY_WAIT_SECONDS):
                message = await request.receive()
        except TimeoutError:
            detail = f"no bytes of the body for {BODY_WAIT_SECONDS} s"
            raise HTTPException(408, detail, {"Connection": "close"}) from None
        size += len(message.get("body", b""))
        if size > limit:
            raise HTTPException(413, f"body over {limit} bytes")
        return message

    return Request(request.scope, receive)


class BoundedRoute(APIRoute):
    """A route whose JSON body, which FastAPI reads whole and parses, is
    ``bounded`` by ``MAX_JSON_BYTES``: a 413 before it is parsed."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        """FastAPI's handler, given the request ``bounded`` if it has a body
        to parse (an upload, which has none, bounds its own stream)."""
        handler = super().get_route_handler()
        if self.body_field is None:
            return handler

        async def bounded_handler(request: Request) -> Response:
            return await handler(bounded(request, MAX_JSON_BYTES))

        return bounded_handler


router = APIRouter(route_class=BoundedRoute)
# Where a 422 names a stored book's values (the body left them as they were).
STORED_BOOK = ("path", "book_id")
log = logging.getLogger(__name__)
T = TypeVar("T")


async def in_transaction(request: Request, fn: Callable[[], Awaitable[T]]) -> T:
    """``await fn()`` in one transaction, run again on a write conflict for the
    settings' ``transaction_seconds`` at most (a PyMongo timeout, which bounds
    each operation too): past it, PyMongo's ``ExecutionTimeout``, a 503."""
    with pymongo.timeout(request.app.state.settings.transaction_seconds):
        return await async_run_transaction(fn)


@router.post("/authors", status_code=201)
async def create_author(body: AuthorIn) -> AuthorOut:
    """A new author; a name already taken is a 409 (unique index)."""
    author = await Author(name=body.name).async_save()
    return AuthorOut.of(author)


@router.get("/authors/{author_id}")
async def get_author(author_id: Id) -> AuthorOut:
    """One author; an unknown id is a 404 (``DoesNotExist``)."""
    return AuthorOut.of(await Author.objects.async_get(id=author_id))


@router.delete("/authors/{author_id}", status_code=204)
async def delete_author(author_id: Id, request: Request) -> None:
    """The author, their books and the books' manuscripts, all or nothing.

    The CASCADE on ``Book.author`` deletes the books, and the GridFS files of
    the books it deletes, in the transaction (run again on a write conflict).
    """

    async def delete() -> None:
        author = await Author.objects.async_get(id=author_id)
        await author.async_delete()

    await in_transaction(request, delete)


@router.post("/authors/{author_id}/books", status_code=201)
async def publish_books(
    author_id: Id,
    # (One transaction, bounded by transaction_seconds: a batch too large for
    # it would answer 503 at every try; pydantic refuses it first, a 422.)
    books: Annotated[list[BookIn], Body(max_length=500)],
    request: Request,
) -> list[BookOut]:
    """Every book or none, in one transaction, which every operation of
    ``publish`` joins without being passed a session."""

    async def publish() -> list[BookOut]:
        author = await add_books_to(author_id, len(books))
        saved = [
            await save_at(index, Book(title=book.title, year=book.year, author=author))
            for index, book in enumerate(books)
        ]
        return [BookOut.of(book, author) for book in saved]

    return await in_transaction(request, publish)


async def save_at(index: int, book: Book) -> Book:
    """Save the batch's book at ``index``; MongoEngine's refusal of its values
    names it, as pydantic's do (the 422's ``loc``: ``["body", index, field]``)."""
    try:
        return await book.async_save()
    except ValidationError as error:
        raise ValidationError(error.message, errors={index: error}) from error


@router.post("/books", status_code=201)
async def create_book(body: NewBook, request: Request) -> BookOut:
    """A new book of an existing author."""

    async def create() -> BookOut:
        author = await add_books_to(body.author_id, 1)
        book = await Book(title=body.title, year=body.year, author=author).async_save()
        return BookOut.of(book, author)

    return await in_transaction(request, create)


async def add_books_to(author_id: str, count: int) -> Author:
    """The author, whose count of books added this transaction raises: a write
    to the author, so a delete of the author in flight conflicts with it and
    one of the two transactions runs again (no book is left without its author)."""
    counted = Author.objects(id=author_id)
    author = await counted.async_modify(inc__books_added=count, new=True)
    if author is None:
        raise Author.DoesNotExist(f"author {author_id} does not exist")
    return author


@router.get("/books")
async def list_books(
    author_id: Id | None = None,
    # (Past BSON's 64-bit ints a skip fails to encode, a 500; a deep page
    # costs a scan of every book it skips: pydantic refuses both, a 422.)
    skip: int = Query(0, ge=0, le=100_000),
    limit: int = Query(50, ge=1, le=500),
) -> list[BookOut]:
    """One page of books with their authors: two queries, whatever the page size."""
    books = Book.objects.order_by("title", "id").skip(skip).limit(limit)
    if author_id is not None:
        books = books.filter(author=author_id)
    loaded = await books.async_select_related()
    return [BookOut.of(book, book.author) for book in loaded]


@router.get("/books/{book_id}")
async def get_book(book_id: Id) -> BookOut:
    """One book, its author loaded by one more query."""
    book = await Book.objects.async_get(id=book_id)
    return BookOut.of(book, await Book.author.async_fetch(book))


@router.patch("/books/{book_id}")
async def update_book(book_id: Id, body: BookPatch) -> BookOut:
    """Change the given fields; the save sends only what changed."""
    book = await Book.objects.async_get(id=book_id)
    for name, value in body.model_dump(exclude_unset=True).items():
        setattr(book, name, value)
    try:
        # $set of the changed fields only, on the stored book: a save upserts,
        # which would bring back a book deleted meanwhile (SaveConditionError: 409)
        await book.async_save(save_condition={"pk": book.pk})
    except ValidationError as error:  # (a stored value is named at the path's id)
        raise unprocessable(error, body.model_fields_set, STORED_BOOK) from error
    return BookOut.of(book, await Book.author.async_fetch(book))


@router.delete("/books/{book_id}", status_code=204)
async def delete_book(book_id: Id, request: Request) -> None:
    """The book and its manuscript, all or nothing: a 503 (a file's delete
    failed) leaves both, and a manuscript uploaded meanwhile is a write
    conflict, the delete run again on the book that holds it."""

    async def delete() -> None:
        book = await Book.objects.async_get(id=book_id)
        await book.async_delete()

    await in_transaction(request, delete)


@router.put("/books/{book_id}/manuscript")
async def upload_manuscript(
    book_id: Id, request: Request, filename: str = "manuscript"
) -> FileOut:
    """Store the request body as the book's manuscript, chunk by chunk as it
    arrives (never whole in memory; over ``MAX_MANUSCRIPT_BYTES``, a 413 that
    leaves no chunk behind); a previous manuscript is replaced."""
    body = bounded(request, MAX_MANUSCRIPT_BYTES).stream()  # (413 before the read)
    book = await Book.objects.async_get(id=book_id)
    content_type = request.headers.get("content-type", "application/octet-stream")
    previous = book.manuscript  # (deleted once the book holds the new one)
    book.manuscript = await Book.manuscript.async_put(  # (a new file beside it)
        body, filename=filename, content_type=content_type
    )
    held = {"pk": book.pk, "manuscript": previous.grid_id}
    try:
        # Only if the book still holds the manuscript read above: a concurrent
        # upload, or a delete of the book, makes this one give way (409).
        await book.async_save(save_condition=held)
    except (SaveConditionError, ValidationError) as error:  # (nothing written)
        await delete_unheld(book.manuscript, book_id, "refused")
        if isinstance(error, ValidationError):  # (a stored value: a 422)
            raise unprocessable(error, (), STORED_BOOK) from error
        raise  # (a 409)
    # (A save that failed otherwise, which may have applied, keeps both.)
    await delete_unheld(previous, book_id, "replaced")
    manuscript = book.manuscript
    return FileOut(
        filename=manuscript.filename,
        content_type=manuscript.content_type,
        length=manuscript.length or 0,  # (None only for a file not stored)
    )


async def delete_unheld(file: AsyncGridFSProxy, book_id: str, which: str) -> None:
    """Delete a manuscript the book does not hold (the one it held before the
    upload, or the upload's own, its save refused): the answer stands (200, or
    409), so a delete that fails, the file left in GridFS held by nothing, is
    logged, not a 503 (which would have the whole file sent again)."""
    grid_id = file.grid_id
    try:
        await file.async_delete(missing_ok=True)
    except PyMongoError as error:
        log.warning(
            "book %s: %s manuscript %s left in GridFS (%r)",
            book_id,
            which,
            grid_id,
            error,
        )


@router.get("/books/{book_id}/manuscript")
async def download_manuscript(book_id: Id) -> StreamingResponse:
    """Stream the manuscript out as GridFS hands its chunks over."""
    book, manuscript = await manuscript_of(book_id)
    chunks = aiter(manuscript)
    try:
        # Read before the answer starts: a file deleted since its metadata was
        # read (its book deleted, or a new upload) is a 409, not a 200 cut short.
        first = await anext(chunks, b"")
    except CorruptGridFile:
        await raise_if_changed(book)
        raise  # (chunks lost, the book unchanged: a 500, logged by the server)
    return StreamingResponse(
        sent_after(first, chunks), headers=download_headers(manuscript)
    )


@router.head("/books/{book_id}/manuscript")
async def manuscript_headers(book_id: Id) -> Response:
    """A download's headers without its body (``HEAD``, which clients send to
    learn a file's length): its metadata is read, none of its chunks."""
    _, manuscript = await manuscript_of(book_id)
    return Response(headers=download_headers(manuscript))


async def manuscript_of(book_id: str) -> tuple[Book, AsyncGridFSProxy]:
    """The book and its manuscript, metadata loaded: a 404 if either is
    missing, a 409 if the file was deleted since the book was read."""
    book = await Book.objects.async_get(id=book_id)
    manuscript = await Book.manuscript.async_get(book)
    if manuscript is None:
        if book.manuscript.grid_id is not None:  # (deleted since the book was read)
            await raise_if_changed(book)
        raise HTTPException(404, f"book {book_id} has no manuscript")
    return book, manuscript


def download_headers(manuscript: AsyncGridFSProxy) -> dict[str, str]:
    """The length, type and file name of a download (``GET`` or ``HEAD``): the
    uploader's type as stored (no charset added), saved as a file, not shown,
    and not sniffed (a browser runs no text/html sent as a manuscript)."""
    disposition = f"attachment; filename*=UTF-8''{quote(manuscript.filename or '')}"
    return {
        "Content-Length": str(manuscript.length),
        "Content-Type": header_safe(manuscript.content_type),
        "Content-Disposition": disposition,
        "X-Content-Type-Options": "nosniff",
    }


def header_safe(content_type: str | None) -> str:
    """A stored content type that a header can carry (printable ASCII: no line
    break, nothing Latin-1 cannot encode, stored by other code), its spaces at
    either end dropped (which uvicorn's h11 refuses, the answer never sent),
    else bytes (``application/octet-stream``, as for a file stored without one)."""
    stripped = (content_type or "").strip()
    if stripped and stripped.isascii() and stripped.isprintable():
        return stripped
    return "application/octet-stream"


async def raise_if_changed(book: Book) -> None:
    """A 409, changed meanwhile, if ``book`` is gone or holds another file than
    when it was read (the file a download missed was deleted with it, or
    replaced): sent again, the request finds the book as it is now."""
    held = Book.objects(pk=book.pk, manuscript=book.manuscript.grid_id)
    if not await held.async_exists():
        raise HTTPException(409, "changed meanwhile, try again")


async def sent_after(first: bytes, rest: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
    """``first`` (the chunk read before the answer started), then ``rest``."""
    yield first
    async for chunk in rest:
        yield chunk
