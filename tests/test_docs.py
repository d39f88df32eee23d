"""Every ```python block of every page in docs/ runs against the real server.

A page runs top to bottom in one namespace, with top-level ``await`` allowed,
the alias "default" connected to a fresh database and ``MONGODB_URI`` defined.
Blocks fenced as ```py are illustrations and are not run.
"""

from __future__ import annotations

import ast
import inspect
import re
from pathlib import Path

import pytest

DOCS = Path(__file__).resolve().parent.parent / "docs"
BLOCK = re.compile(r"^```python\n(.*?)^```", re.DOTALL | re.MULTILINE)
PAGES = sorted(DOCS.glob("*.md"))


def blocks(page: Path) -> list[tuple[int, str]]:
    text = page.read_text()
    return [
        (text[: match.start()].count("\n") + 2, match.group(1))
        for match in BLOCK.finditer(text)
    ]


def test_every_page_has_runnable_examples() -> None:
    assert PAGES, "docs/ has no pages"
    without = [
        page.name for page in PAGES if page.name != "index.md" and not blocks(page)
    ]
    assert without == []


@pytest.mark.parametrize("page", PAGES, ids=[page.stem for page in PAGES])
async def test_page_examples_run(
    page: Path, async_alias: str, mongodb_uri: str
) -> None:
    namespace = {"__name__": f"docs_{page.stem}", "MONGODB_URI": mongodb_uri}
    for line, source in blocks(page):
        padded = "\n" * (line - 1) + source
        code = compile(padded, str(page), "exec", flags=ast.PyCF_ALLOW_TOP_LEVEL_AWAIT)
        result = eval(code, namespace)  # our own documentation
        if inspect.isawaitable(result):
            await result
