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


ARCHITECTURE = DOCS / "architecture.md"
PACKAGE = DOCS.parent / "src" / "mongoengine_async"
MODULE_ROW = re.compile(r"^\| `(\w+)\.py` \|", re.MULTILINE)


def module_tables() -> tuple[list[str], list[str]]:
    """The modules of architecture.md's two tables, each in its order."""
    base, models = ARCHITECTURE.read_text().split("\nModels and their I/O:\n")
    models = models.split("\n## ")[0]
    return MODULE_ROW.findall(base), MODULE_ROW.findall(models)


def package_imports(module: str) -> set[str]:
    """The package's modules that ``module`` imports when it is imported.

    Imports inside functions and under ``if TYPE_CHECKING:`` are left out: the
    page allows them.
    """
    found = set()
    pending: list[ast.AST] = [ast.parse((PACKAGE / f"{module}.py").read_text())]
    while pending:
        node = pending.pop()
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
            continue
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            pending.extend(node.orelse)
            continue
        if isinstance(node, ast.ImportFrom) and node.module:
            parts = node.module.split(".")
            if node.level == 1:
                found.add(parts[0])
            elif parts[0] == "mongoengine_async" and len(parts) > 1:
                found.add(parts[1])
            elif parts == ["mongoengine_async"]:  # (from mongoengine_async import x)
                found.update(alias.name for alias in node.names)
        pending.extend(ast.iter_child_nodes(node))
    return found & {path.stem for path in PACKAGE.glob("*.py")} - {module}


def test_architecture_lists_every_module() -> None:
    base, models = module_tables()
    modules = {path.stem for path in PACKAGE.glob("*.py")} - {"__init__"}
    assert sorted(base + models) == sorted(modules)


def test_architecture_layers_hold() -> None:
    """The first table imports only itself; a module of the second imports
    only the first table and the modules listed below it; but for the one
    module-level import the page names (operation.py's of collection_setup.py)."""
    base, models = module_tables()
    upward = {
        module: sorted(package_imports(module) - set(base)) for module in base
    } | {
        module: sorted(package_imports(module) - set(base) - set(models[i + 1 :]))
        for i, module in enumerate(models)
    }
    assert {module: up for module, up in upward.items() if up} == {
        "operation": ["collection_setup"]
    }
