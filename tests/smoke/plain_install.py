"""Smoke test of a plain ``pip install mongoengine-async`` (no extras).

``make test`` runs it with the python of ``.venv-plain`` (a non-editable install
without blinker or Pillow) and ``MONGODB_URI`` set to a replica set: it runs the
README's usage example as it is written, then the async reads, a GridFS round
trip and a CASCADE delete, asserting what is read back. It exits non-zero on
the first failure. Not a pytest module: pytest collects only ``test_*.py``.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import os
import re
import sys
import warnings
from pathlib import Path
from uuid import uuid4

from mongoengine_async import (
    CASCADE,
    Document,
    FileField,
    ImageField,
    ImproperlyConfigured,
    ReferenceField,
    StringField,
    connect_async,
    disconnect_async,
    get_async_connection,
    get_async_db,
)

README = Path(__file__).resolve().parents[2] / "README.md"
README_HOST = "mongodb://127.0.0.1:27017/?replicaSet=rs0"
README_DB = 'db="library"'
EXTRAS = {"blinker": "signals", "PIL": "images"}


class SmokeAuthor(Document):
    name = StringField(required=True)


class SmokeBook(Document):
    title = StringField()
    author = ReferenceField(SmokeAuthor, reverse_delete_rule=CASCADE)


class SmokeScan(Document):
    name = StringField()
    scan = FileField()


def assert_no_extras() -> None:
    """Fail when an optional dependency is importable: the run would then not
    be the plain install it claims to check."""
    for module, extra in EXTRAS.items():
        try:
            __import__(module)
        except ImportError:
            continue
        raise AssertionError(f"{module} (extra {extra!r}) is importable here")


def readme_example(uri: str, db: str) -> str:
    """The README's python block, connecting to ``uri`` and database ``db``;
    padded with blank lines so that tracebacks give README's line numbers."""
    text = README.read_text()
    blocks = list(re.finditer(r"^```python\n(.*?)^```", text, re.S | re.M))
    assert len(blocks) == 1, f"README.md has {len(blocks)} python blocks, not 1"
    source = blocks[0].group(1)
    for literal in (README_HOST, README_DB):
        assert source.count(literal) == 1, f"README example lost {literal!r}"
    padding = "\n" * (text[: blocks[0].start()].count("\n") + 1)
    return padding + source.replace(README_HOST, uri).replace(README_DB, f'db="{db}"')


def run_readme(uri: str, db: str) -> dict:
    """Run the README example (it calls ``asyncio.run`` itself); check what it
    prints and return its namespace (its models)."""
    namespace: dict = {"__name__": "readme"}
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed), warnings.catch_warnings():
        # (as a MongoEngine user is told: no deprecated default in the example)
        warnings.simplefilter("error", DeprecationWarning)
        exec(compile(readme_example(uri, db), str(README), "exec"), namespace)
    lines = printed.getvalue().splitlines()
    assert len(lines) == 3, lines
    assert lines[0].startswith("A <AsyncReferenceProxy"), lines
    assert lines[1].startswith("C <AsyncReferenceProxy"), lines
    assert lines[2] == "Ann", lines
    return namespace


async def check_readme_left_nothing(readme: dict, uri: str, db: str) -> None:
    """The README deletes Ann last: the cascade took her books with her."""
    await connect_async(db=db, host=uri, uuidRepresentation="standard")
    try:
        assert await readme["Author"].objects.async_count() == 0
        assert await readme["Book"].objects.async_count() == 0
    finally:
        await get_async_connection().drop_database(db)
        await disconnect_async()


async def check_reads() -> None:
    """Every read path that builds documents (the loader) and references."""
    ann = await SmokeAuthor(name="Ann").async_save()
    bob = await SmokeAuthor(name="Bob").async_save()
    books = [SmokeBook(title=t, author=ann) for t in "AB"] + [
        SmokeBook(title="C", author=bob)
    ]
    loaded = await SmokeBook.objects.async_insert(books, load_bulk=True)
    assert [book.title for book in loaded] == ["A", "B", "C"]

    first = await SmokeBook.objects.order_by("title").async_first()
    assert first.title == "A" and (await first.author).name == "Ann"
    got = await SmokeBook.objects.async_get(title="C")
    assert (await got.author).name == "Bob"
    titles = [book.title async for book in SmokeBook.objects(author=ann)]
    assert sorted(titles) == ["A", "B"]
    joined = await SmokeBook.objects.order_by("title").async_select_related()
    assert [book.author.name for book in joined] == ["Ann", "Ann", "Bob"]

    await ann.async_delete()  # CASCADE: A and B go, C stays
    assert await SmokeBook.objects.async_scalar("title") == ["C"]
    assert await SmokeAuthor.objects.async_scalar("name") == ["Bob"]


async def check_gridfs() -> None:
    """Store a file of several chunks, read it back whole and streamed, delete it."""
    payload = os.urandom(600 * 1024)  # three 255 kB chunks
    doc = SmokeScan(name="scan")
    await doc.scan.async_put(payload, filename="scan.bin", content_type="x/bin")
    await doc.async_save()

    stored = await SmokeScan.objects.async_get(name="scan")
    proxy = await SmokeScan.scan.async_get(stored)
    assert (proxy.filename, proxy.content_type) == ("scan.bin", "x/bin")
    assert proxy.length == len(payload)
    assert await proxy.async_read() == payload
    assert b"".join([chunk async for chunk in proxy]) == payload

    await stored.async_delete()  # deletes its file too
    db = get_async_db()
    assert await db["fs.files"].count_documents({}) == 0
    assert await db["fs.chunks"].count_documents({}) == 0


def check_image_field() -> None:
    """Without Pillow, creating an ImageField names the extra to install."""
    try:
        ImageField()
    except ImproperlyConfigured as error:
        assert str(error) == (
            "PIL library was not found: ImageField needs Pillow, "
            "install it with: pip install 'mongoengine-async[images]'"
        ), error
    else:
        raise AssertionError("ImageField() worked without Pillow")


async def check_async_paths(uri: str, db: str) -> None:
    """The package's own models, on a database of their own (dropped after)."""
    await connect_async(db=db, host=uri, uuidRepresentation="standard")
    try:
        await check_reads()
        await check_gridfs()
    finally:
        await get_async_connection().drop_database(db)
        await disconnect_async()


def main() -> None:
    """Check the install, then each part in turn; any failure raises."""
    assert_no_extras()
    uri = os.environ["MONGODB_URI"]
    readme_db, own_db = (f"smoke_{uuid4().hex[:12]}" for _ in range(2))
    readme = run_readme(uri, readme_db)
    asyncio.run(check_readme_left_nothing(readme, uri, readme_db))
    check_image_field()
    asyncio.run(check_async_paths(uri, own_db))
    package = Path(sys.modules["mongoengine_async"].__file__ or "").parent
    print(f"plain install smoke test passed ({sys.executable}, package in {package})")


if __name__ == "__main__":
    main()
