"""The JSON shapes of the API (pydantic), and how a document becomes one."""

from __future__ import annotations

from pydantic import BaseModel, Field

from fastapi_app.models import Author, Book


class AuthorIn(BaseModel):
    name: str = Field(min_length=1, max_length=200)


class AuthorOut(BaseModel):
    id: str
    name: str

    @classmethod
    def of(cls, author: Author) -> AuthorOut:
        return cls(id=str(author.pk), name=author.name)


class BookIn(BaseModel):
    title: str = Field(min_length=1, max_length=300)
    year: int | None = None


class NewBook(BookIn):
    author_id: str


class BookPatch(BaseModel):
    title: str | None = Field(default=None, min_length=1, max_length=300)
    year: int | None = None


class BookOut(BaseModel):
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
    filename: str | None
    content_type: str | None
    length: int
