"""The typed public API holds: mypy (--strict) and pyright, with a user's
settings (tests/typing/mypy.ini, pyrightconfig.json), accept
tests/typing/check_table.py (issue 16's table, as ``assert_type``, with the sync
API and container assignments), tests/typing/submodule_imports.py and
tests/typing/strict.py (the async API in pyright's strict mode), and report
each deliberate mistake of tests/typing/errors.py, so a change that loses a type
fails the suite."""

from __future__ import annotations

import ast
import importlib
import os
import re
import subprocess
import sys
from pathlib import Path

import mongoengine
import pytest
from mongoengine.context_managers import query_counter

import mongoengine_async

TYPING_DIR = Path(__file__).parent / "typing"
FILES = [
    "models.py",
    "check_table.py",
    "star_import.py",
    "submodule_imports.py",
    "strict.py",
    "errors.py",
]
BIN = Path(sys.executable).parent
# The package of the tree this file belongs to: in a git worktree the editable
# install points the checkers at another checkout's package.
SRC = Path(__file__).resolve().parents[1] / "src"


def _mistakes() -> dict[int, str]:
    """Line number -> what must be reported there, from ``# MISTAKE:`` comments."""
    lines = (TYPING_DIR / "errors.py").read_text().splitlines()
    return {
        number: line.split("# MISTAKE:")[1].strip()
        for number, line in enumerate(lines, start=1)
        if "# MISTAKE:" in line
    }


def _run(command: list[str]) -> str:
    """Run a checker on the files of tests/typing, which import this tree's
    package (MYPYPATH for mypy; PYTHONPATH, ahead of site-packages in the
    interpreter's sys.path that pyright reads)."""
    path = os.pathsep.join(filter(None, [str(SRC), os.environ.get("PYTHONPATH")]))
    env = {**os.environ, "MYPYPATH": str(SRC), "PYTHONPATH": path}
    result = subprocess.run(
        command, cwd=TYPING_DIR, env=env, capture_output=True, text=True, check=False
    )
    return result.stdout + result.stderr


def _errors(output: str, pattern: str) -> dict[tuple[str, int], str]:
    """(file, line) -> message of each error the tool reported."""
    found: dict[tuple[str, int], str] = {}
    for match in re.finditer(pattern, output, re.MULTILINE):
        key = (Path(match["file"]).name, int(match["line"]))
        found[key] = found.get(key, "") + match["message"]
    return found


@pytest.fixture(scope="module")
def mypy_errors() -> dict[tuple[str, int], str]:
    output = _run([str(BIN / "mypy"), "--strict", *FILES])
    return _errors(output, r"^(?P<file>[\w/.]+):(?P<line>\d+): error: (?P<message>.*)$")


@pytest.fixture(scope="module")
def pyright_errors() -> dict[tuple[str, int], str]:
    output = _run(
        [
            str(BIN / "pyright"),
            *("--pythonpath", sys.executable),
            *FILES,
        ]
    )
    return _errors(
        output, r"^\s+(?P<file>/\S+):(?P<line>\d+):\d+ - error: (?P<message>.*)$"
    )


@pytest.mark.parametrize("tool", ["mypy_errors", "pyright_errors"])
def test_checkers_see_the_table_and_each_mistake(
    tool: str, request: pytest.FixtureRequest
) -> None:
    errors: dict[tuple[str, int], str] = request.getfixturevalue(tool)
    expected = {("errors.py", line) for line in _mistakes()}
    assert set(errors) == expected, errors
    typos = [line for line, note in _mistakes().items() if note == "attribute"]
    assert len(typos) == 2  # book.titel, on the async and the sync API
    for line in typos:
        assert "titel" in errors[("errors.py", line)]


def test_the_package_imported_is_this_trees() -> None:
    """The tests below read the package imported: the tree's (in a git
    worktree, run with PYTHONPATH=src), not the editable install's."""
    package = Path(mongoengine_async.__file__).resolve().parent
    assert package == SRC / "mongoengine_async"


def test_every_name_is_exported_statically() -> None:
    """``__all__`` is a literal list holding all of MongoEngine's names."""
    tree = ast.parse(Path(mongoengine_async.__file__).read_text())
    star_imports = [
        node
        for node in ast.walk(tree)
        if isinstance(node, ast.ImportFrom) and node.names[0].name == "*"
    ]
    assert star_imports == []
    (assignment,) = [
        node
        for node in tree.body
        if isinstance(node, ast.Assign) and ast.unparse(node.targets[0]) == "__all__"
    ]
    assert ast.literal_eval(assignment.value) == mongoengine_async.__all__
    assert set(mongoengine.__all__) <= set(mongoengine_async.__all__)
    missing = [
        name
        for name in mongoengine_async.__all__
        if not hasattr(mongoengine_async, name)
    ]
    assert missing == []


REFERENCE_FIELDS = [
    "ReferenceField",
    "GenericReferenceField",
    "CachedReferenceField",
    "LazyReferenceField",
    "GenericLazyReferenceField",
    "DynamicField",
]


def _declared(classes: dict[str, ast.ClassDef], name: str) -> set[str]:
    """The methods and attributes the stub declares on ``name`` and its bases."""
    node = classes.get(name)
    if node is None:
        return set()
    names = {
        item.name
        for item in node.body
        if isinstance(item, ast.FunctionDef | ast.AsyncFunctionDef)
    }
    names |= {
        item.target.id
        for item in node.body
        if isinstance(item, ast.AnnAssign) and isinstance(item.target, ast.Name)
    }
    for base in node.bases:
        base_name = ast.unparse(base).split("[")[0]
        names |= _declared(classes, base_name)
    return names


@pytest.mark.parametrize("name", REFERENCE_FIELDS)
def test_the_stub_declares_each_public_async_method(name: str) -> None:
    """A public ``async_*`` method a checker does not see is a false error in
    a user's code: each is declared in ``_typing.pyi``, or private."""
    stub = Path(mongoengine_async.__file__).parent / "_typing.pyi"
    tree = ast.parse(stub.read_text())
    classes = {node.name: node for node in tree.body if isinstance(node, ast.ClassDef)}
    runtime = getattr(mongoengine_async, name)
    public = {attribute for attribute in dir(runtime) if attribute.startswith("async_")}
    assert public - _declared(classes, name) == set()


SAME_NAMED = ["connection", "document", "errors", "fields", "queryset", "signals"]


@pytest.mark.parametrize("module", SAME_NAMED)
def test_same_named_module_exports_mongoengine_names(module: str) -> None:
    """``from mongoengine.<module> import X`` migrates by the module name alone:
    ours of the same name exports every name of MongoEngine's ``__all__``, each
    the top level's object (our subclass where we have one)."""
    theirs = importlib.import_module(f"mongoengine.{module}")
    ours = importlib.import_module(f"mongoengine_async.{module}")
    assert set(theirs.__all__) <= set(ours.__all__)
    different = [
        name
        for name in theirs.__all__
        if getattr(ours, name) is not getattr(mongoengine_async, name)
    ]
    assert different == []


def test_module_attributes_of_mongoengine_are_reachable() -> None:
    """``import mongoengine as me`` changed to ``import mongoengine_async as me``
    leaves every ``me.<name>`` working: MongoEngine's version and the submodules
    its import loads are reachable as its (``me.context_managers.switch_db``
    was an AttributeError), each MongoEngine's own object."""
    me = mongoengine_async
    missing = [
        name
        for name in dir(mongoengine)
        if not name.startswith("_") and not hasattr(me, name)
    ]
    assert missing == []
    assert me.VERSION == mongoengine.VERSION
    assert me.get_version() == mongoengine.get_version()
    assert me.context_managers.switch_db is mongoengine.context_managers.switch_db
    assert me.context_managers.query_counter is query_counter
    assert me.base.BaseField is mongoengine.base.BaseField
    assert isinstance(me.StringField(), me.base.BaseField)
    for name in ("common", "dereference", "pymongo_support"):
        assert getattr(me, name) is getattr(mongoengine, name)
    assert not {"VERSION", "base", "context_managers"} & set(me.__all__)


@pytest.mark.parametrize("module", SAME_NAMED)
def test_same_named_module_has_every_name_of_mongoengines(module: str) -> None:
    """``me.<module>.<name>`` after ``import mongoengine_async as me`` gives
    what MongoEngine's module has, its own where this package has none
    (``me.queryset.visitor``, ``me.errors.MongoEngineException`` were
    AttributeErrors); a name neither has still raises AttributeError."""
    theirs = importlib.import_module(f"mongoengine.{module}")
    ours = getattr(mongoengine_async, module)
    names = [name for name in dir(theirs) if not name.startswith("__")]
    assert [name for name in names if not hasattr(ours, name)] == []
    kept = [name for name in names if name not in vars(ours)]
    assert [n for n in kept if getattr(ours, n) is not expected(theirs, n)] == []
    with pytest.raises(AttributeError) as error:
        ours.no_such_name  # noqa: B018
    assert str(error.value) == (
        f"module 'mongoengine_async.{module}' has no attribute 'no_such_name'"
    )


def expected(theirs: object, name: str) -> object:
    """What ``me.<module>.<name>`` should be: MongoEngine's module's object,
    but this package's replacement of a public one it merely imports."""
    found = getattr(theirs, name)
    if name in mongoengine.__all__ and getattr(mongoengine, name) is found:
        return getattr(mongoengine_async, name)
    return found


def test_public_objects_mongoengines_modules_import_are_ours() -> None:
    """``me.document.get_db`` and ``me.fields.Document`` (MongoEngine's
    modules import its public ``get_db`` and ``Document``) are this package's:
    MongoEngine's ``get_db`` named an async alias "You have not defined a
    default connection", and ``Document`` was the sync-only class."""
    me = mongoengine_async
    assert me.document.get_db is me.get_db is me.fields.get_db
    assert me.fields.Document is me.Document
    assert me.get_db is not mongoengine.get_db
    assert me.Document is not mongoengine.Document


def test_same_named_modules_are_no_packages_of_mongoengines() -> None:
    """The names reached through MongoEngine's modules are its objects:
    ``me.queryset.visitor.Q`` is ``Q``; no dunder is looked up there, so
    ``import mongoengine_async.queryset.visitor`` loads no second copy of
    MongoEngine's module (our ``queryset`` is a module, not a package)."""
    me = mongoengine_async
    assert me.queryset.visitor.Q is me.Q
    assert me.errors.MongoEngineException is mongoengine.errors.MongoEngineException
    assert issubclass(me.NotUniqueError, me.errors.MongoEngineException)
    assert me.connection._connections is mongoengine.connection._connections
    with pytest.raises(ModuleNotFoundError):
        importlib.import_module("mongoengine_async.queryset.visitor")
    assert "mongoengine_async.queryset.visitor" not in sys.modules
