"""Without the optional extras (blinker, Pillow) every feature still works.

``make test`` also runs ``tests/smoke/plain_install.py`` in a venv holding a
plain install; here the same script runs in this venv with ``blinker`` and
``PIL`` made unimportable, so the main suite catches the regression too.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from pathlib import Path
from uuid import uuid4

import pytest

from conftest import held_on_server
from mongoengine_async import (
    CASCADE,
    Document,
    ReferenceField,
    StringField,
    disconnect_all_async,
    signals,
)
from mongoengine_async.testing import fresh_database

SMOKE = Path(__file__).resolve().parent / "smoke" / "plain_install.py"

WITHOUT_EXTRAS = """
import runpy, sys

class BlockExtras:
    def find_spec(self, name, path=None, target=None):
        if name.partition(".")[0] in ("blinker", "PIL"):
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
        return None

sys.meta_path.insert(0, BlockExtras())
runpy.run_path(sys.argv[1], run_name="__main__")
"""


def test_everything_works_without_blinker_and_pillow(mongodb_uri: str) -> None:
    result = subprocess.run(
        [sys.executable, "-c", WITHOUT_EXTRAS, str(SMOKE)],
        env={**os.environ, "MONGODB_URI": mongodb_uri},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert "plain install smoke test passed" in result.stdout


class OldBlinkerAuthor(Document):
    name = StringField()


class OldBlinkerBook(Document):
    title = StringField()
    author = ReferenceField(OldBlinkerAuthor, reverse_delete_rule=CASCADE)


@pytest.fixture
def blinker_before_1_6(monkeypatch: pytest.MonkeyPatch) -> None:
    """MongoEngine's signals as an older blinker (before 1.6, which a plain
    install keeps when it finds one) makes them: no ``is_muted`` (nor
    ``muted()``). Under such a blinker, as they are."""
    for signal in (
        signals.pre_init,
        signals.post_init,
        signals.pre_save,
        signals.pre_save_post_validation,
        signals.post_save,
        signals.pre_delete,
        signals.post_delete,
        signals.pre_bulk_insert,
        signals.post_bulk_insert,
    ):
        monkeypatch.delattr(signal, "is_muted", raising=False)


async def test_an_older_blinker_found_beside_a_plain_install(
    mongodb_uri: str, blinker_before_1_6: None
) -> None:
    """Saves (one cancelled once sent too) and a cascading delete work, their
    receivers called, with a blinker that has no ``is_muted``: every delete
    and every save with a receiver raised AttributeError, and a cancelled
    save that instead of its CancelledError."""
    seen: list[tuple[str, str]] = []
    landed = asyncio.Event()

    def saved(sender: type, document: OldBlinkerBook, **kwargs: object) -> None:
        seen.append(("post_save", document.title))
        if document.title == "cancelled":
            landed.set()

    def deleted(sender: type, document: Document, **kwargs: object) -> None:
        seen.append(("post_delete", type(document).__name__))

    signals.post_save.connect(saved, sender=OldBlinkerBook)
    signals.post_delete.connect(deleted, sender=OldBlinkerAuthor)
    app = f"old-blinker-{uuid4().hex[:8]}"
    try:
        async with fresh_database("default", mongodb_uri, appname=app):
            author = await OldBlinkerAuthor(name="a").async_save()
            await OldBlinkerBook(title="first", author=author).async_save()
            async with held_on_server(app, "insert", 700) as held:
                saving = asyncio.ensure_future(
                    OldBlinkerBook(title="cancelled", author=author).async_save()
                )
                await held.reached_server()
                saving.cancel()
                with pytest.raises(asyncio.CancelledError):
                    await saving
            await landed.wait()  # (its post_save follows its write)
            assert await OldBlinkerBook.objects.async_count() == 2
            await author.async_delete()
            assert await OldBlinkerBook.objects.async_count() == 0
            assert await OldBlinkerAuthor.objects.async_count() == 0
    finally:
        signals.post_save.disconnect(saved, sender=OldBlinkerBook)
        signals.post_delete.disconnect(deleted, sender=OldBlinkerAuthor)
        await disconnect_all_async()
    assert seen == [
        ("post_save", "first"),
        ("post_save", "cancelled"),
        ("post_delete", "OldBlinkerAuthor"),
    ]
