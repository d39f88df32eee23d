"""The JSON shapes of the API (pydantic), and how a document becomes one."""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, Field, StringConstraints

from fastapi_app.models import Author, Book

# A document's id as the API takes it (in a path, a query or a body): 24 hex
# digits, so that a malformed one is FastAPI's 422, naming where it was.
Id = Annotated[str, StringConstraints(pattern=r"^[0-9a-fA-F]{24}$")]


class AuthorIn(BaseModel):
    """The body that creates an author."""

    name: str = Field(min_length=1, max_length=200)


class AuthorOut(BaseModel):
    """An author as the API shows it."""

    id: str
    name: str

    @classmethod
    def of(cls, author: Author) -> AuthorOut:
        """The shape of ``author``."""
        return cls(id=str(author.pk), name=author.name)


class BookIn(BaseModel):
    """A book of an author named by the path."""

    title: str = Field(min_length=1, max_length=300)
    # (A negative year is MongoEngine's ValidationError; a year past BSON's
    # 64-bit ints would fail to encode, a 500: pydantic refuses it first.)
    year: int | None = Field(default=None, le=9999)


class NewBook(BookIn):
    """A book and the id of its author."""

    author_id: Id


class BookPatch(BaseModel):
    """The fields to change; those left out keep their value."""

    title: str | None = Field(default=None, min_length=1, max_length=300)
    year: int | None = Field(default=None, le=9999)


class BookOut(BaseModel):
    """A book with its author, as the API shows it."""

    id: str
    title: str
    year: int | None
    author: AuthorOut
    has_manuscript: bool

    @classmethod
    def of(cls, book: Book, author: Author) -> BookOut:
        """``author`` is passed loaded: reading ``book.author`` does no I/O."""
        return cls(
            id=str(book.pk),
            title=book.title,
            year=book.year,
            author=AuthorOut.of(author),
            has_manuscript=book.manuscript.grid_id is not None,
        )


class FileOut(BaseModel):
    """What was stored as a manuscript."""

    filename: str | None
    content_type: str | None
    length: int
