"""Deliberate mistakes that the checkers must report (tests/test_typing.py
asserts each one, by line); never run, and left out of ``make lint``."""

from models import Book


async def mistakes(book: Book) -> None:
    book.titel  # MISTAKE: attribute
    book.pages = "many"  # MISTAKE: assignment
    found: Book = await Book.objects.async_first()  # MISTAKE: optional
    title: str = book.title  # MISTAKE: optional
    count: str = await Book.objects.async_count()  # MISTAKE: int
    book.scores = ["x"]  # MISTAKE: list item
    book.counts = {"a": "b"}  # MISTAKE: dict value
    book.reviewers = ["x"]  # MISTAKE: reference list item


def sync_mistakes(maybe: list[str | None]) -> None:
    found: Book = Book.objects.first()  # MISTAKE: optional
    Book.objects.get(title="x").titel  # MISTAKE: attribute
    Book.objects.first().title  # MISTAKE: optional
    Book.objects.get().labels = maybe  # MISTAKE: None items


def cache_mistakes() -> None:
    Book.objects.cache()  # MISTAKE: attribute of QuerySet
    Book.objects.no_cache().no_cache()  # MISTAKE: attribute of QuerySetNoCache
