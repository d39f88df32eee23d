"""On a connect() alias the fast reads (sync_reads.py, sync_select_related.py)
call what MongoEngine's own queryset calls: a method of MongoEngine's queryset,
``DeReference`` or reference fields patched (``mock.patch.object``), one
patched on our queryset class, or one a user's ``queryset_class`` overrides.
Each case runs through our queryset and through MongoEngine's own ``QuerySet``
class (or the user's subclass of it) of the same document class, and compares
how often the method is called and what comes back."""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any
from unittest import mock

import mongoengine
import pytest
from mongoengine.dereference import DeReference
from mongoengine.queryset.base import BaseQuerySet as MongoEngineBaseQuerySet
from mongoengine.queryset.queryset import QuerySet as MongoEngineQuerySet
from mongoengine.queryset.queryset import QuerySetNoCache as MongoEngineNoCache

from mongoengine_async import (
    Document,
    GenericReferenceField,
    IntField,
    QuerySet,
    ReferenceField,
    StringField,
)
from mongoengine_async.queryset import BaseQuerySet as OurBaseQuerySet
from test_sync_loader import built_by_loader


class SpAuthor(Document):
    name = StringField()


class SpBook(Document):
    n = IntField()
    author = ReferenceField(SpAuthor)


class SpLinked(Document):
    author = ReferenceField(SpAuthor)
    other = GenericReferenceField()


@pytest.fixture
def books(sync_default: Any) -> list[Any]:
    """Three books of one author, and one SpLinked pointing at the author."""
    author = SpAuthor(name="a").save()
    SpLinked(author=author, other=author).save()
    return [SpBook(n=n, author=author).save() for n in range(3)]


Use = Callable[[Any, list[Any]], Any]

# What a user does with a queryset (ours, or MongoEngine's of the same class).
USES: dict[str, Use] = {
    "list": lambda qs, books: [book.n for book in qs.order_by("n")],
    "len": lambda qs, books: len(qs),
    "no_cache": lambda qs, books: [book.n for book in qs.order_by("n").no_cache()],
    "cache": lambda qs, books: [book.n for book in qs.order_by("n").no_cache().cache()],
    "next": lambda qs, books: next(qs.order_by("n").no_cache()).n,
    "get": lambda qs, books: qs.get(n=1).n,
    "first": lambda qs, books: qs.order_by("n").first().n,
    "index": lambda qs, books: qs.order_by("n")[2].n,
    "with_id": lambda qs, books: qs.with_id(books[0].pk).n,
    "values_list": lambda qs, books: list(qs.order_by("n").values_list("n")),
    "as_pymongo": lambda qs, books: [raw["n"] for raw in qs.order_by("n").as_pymongo()],
    "in_bulk": lambda qs, books: sorted(
        book.n for book in qs.in_bulk([book.pk for book in books]).values()
    ),
    "select_related": lambda qs, books: [
        (book.n, book.author.name) for book in qs.order_by("n").select_related()
    ],
}


def _noting(calls: list[str], name: str, original: Any) -> Any:
    """A stand-in for ``original`` that notes ``name`` in ``calls`` and does
    what it did (a staticmethod stays one)."""
    if isinstance(original, staticmethod):
        function = original.__func__

        def noting_static(*args: Any, **kwargs: Any) -> Any:
            calls.append(name)
            return function(*args, **kwargs)

        return staticmethod(noting_static)

    def noting(receiver: Any, *args: Any, **kwargs: Any) -> Any:
        calls.append(name)
        return original(receiver, *args, **kwargs)

    return noting


def _run(owner: type, name: str, use: Use, queryset: Any, books: list) -> tuple:
    """``use(queryset, books)`` with ``owner.name`` patched: (calls, result)."""
    calls: list[str] = []
    original = inspect.getattr_static(owner, name)
    with mock.patch.object(owner, name, _noting(calls, name, original)):
        result = use(queryset, books)
    return len(calls), result


def _mongoengines(cls: type, queryset_class: type = MongoEngineQuerySet) -> Any:
    """MongoEngine's own queryset (or a subclass of it) of ``cls``."""
    return queryset_class(cls, cls._get_collection())


_BY_INDEX = {"first", "index", "with_id"}  # (queryset[i], no __next__)

# MongoEngine's methods a user patches, and the uses that go through them.
PATCHED = [
    (MongoEngineBaseQuerySet, "__next__", [*USES.keys() - _BY_INDEX - {"in_bulk"}]),
    (MongoEngineBaseQuerySet, "__getitem__", ["first", "index", "with_id"]),
    (MongoEngineBaseQuerySet, "in_bulk", ["in_bulk", "select_related"]),
    (MongoEngineBaseQuerySet, "select_related", ["select_related"]),
    (MongoEngineBaseQuerySet, "_clone_into", ["list", "no_cache", "cache"]),
    (MongoEngineQuerySet, "__next__", ["list", "len", "get", "select_related"]),
    (MongoEngineQuerySet, "_populate_cache", ["list", "len", "select_related"]),
    (MongoEngineQuerySet, "_iter_results", ["list", "select_related"]),
    (MongoEngineQuerySet, "__iter__", ["list", "select_related"]),
    (MongoEngineNoCache, "__next__", ["no_cache", "next"]),
    (DeReference, "__call__", ["select_related"]),
    (DeReference, "_find_references", ["select_related"]),
    (DeReference, "_fetch_objects", ["select_related"]),
    (DeReference, "_attach_objects", ["select_related"]),
]


@pytest.mark.parametrize(
    ("owner", "name", "use"),
    [
        pytest.param(owner, name, use, id=f"{owner.__name__}.{name}-{use}")
        for owner, name, uses in PATCHED
        for use in uses
    ],
)
def test_mongoengines_methods_patched_are_called_as_by_mongoengine(
    books: list, owner: type, name: str, use: str
) -> None:
    """A method of MongoEngine's queryset or DeReference patched on its class
    is called by our queryset as often as by MongoEngine's, and the results
    are the same."""
    theirs = _run(owner, name, USES[use], _mongoengines(SpBook), books)
    ours = _run(owner, name, USES[use], SpBook.objects, books)
    assert theirs[0] > 0
    assert ours == theirs


# Our queryset class's methods a user patches (as MongoEngine's, on MongoEngine's).
PATCHED_OURS = [
    (
        QuerySet,
        MongoEngineQuerySet,
        "__next__",
        ["list", "len", "get", "select_related"],
    ),
    (QuerySet, MongoEngineQuerySet, "__getitem__", ["first", "index"]),
    (QuerySet, MongoEngineQuerySet, "in_bulk", ["in_bulk", "select_related"]),
    (QuerySet, MongoEngineQuerySet, "_populate_cache", ["list", "select_related"]),
    (QuerySet, MongoEngineQuerySet, "_iter_results", ["list", "select_related"]),
]


@pytest.mark.parametrize(
    ("ours", "theirs", "name", "use"),
    [
        pytest.param(ours, theirs, name, use, id=f"{name}-{use}")
        for ours, theirs, name, uses in PATCHED_OURS
        for use in uses
    ],
)
def test_our_querysets_methods_patched_are_called_as_mongoengines(
    books: list, ours: type, theirs: type, name: str, use: str
) -> None:
    """A method patched on our QuerySet is called as often as the same method
    patched on MongoEngine's QuerySet is by MongoEngine."""
    expected = _run(theirs, name, USES[use], _mongoengines(SpBook), books)
    assert expected[0] > 0
    assert _run(ours, name, USES[use], SpBook.objects, books) == expected


# The same methods patched on our BaseQuerySet (the base of our QuerySet and
# QuerySetNoCache, below the guards of the blocking ones) as on MongoEngine's.
PATCHED_OUR_BASE = [
    ("__next__", [*USES.keys() - _BY_INDEX - {"in_bulk"}]),
    ("__getitem__", ["first", "index", "with_id"]),
    ("in_bulk", ["in_bulk", "select_related"]),
    ("select_related", ["select_related"]),
]


@pytest.mark.parametrize(
    ("name", "use"),
    [
        pytest.param(name, use, id=f"{name}-{use}")
        for name, uses in PATCHED_OUR_BASE
        for use in uses
    ],
)
def test_our_base_querysets_methods_patched_are_called_as_mongoengines(
    books: list, name: str, use: str
) -> None:
    """A method patched on our BaseQuerySet is called as often as the same
    method patched on MongoEngine's BaseQuerySet is by MongoEngine, a guarded
    one (``__next__``, ``in_bulk``, ``select_related``) too."""
    expected = _run(
        MongoEngineBaseQuerySet, name, USES[use], _mongoengines(SpBook), books
    )
    assert expected[0] > 0
    assert _run(OurBaseQuerySet, name, USES[use], SpBook.objects, books) == expected


def _counting_class(base: type, names: list[str]) -> type:
    """A user's queryset class, subclass of ``base``, whose methods ``names``
    note each call in its ``calls`` and call the inherited ones."""
    calls: list[str] = []

    def counting(name: str) -> Callable:
        def method(self: Any, *args: Any, **kwargs: Any) -> Any:
            calls.append(name)
            return getattr(super(klass, self), name)(*args, **kwargs)

        return method

    body = {name: counting(name) for name in names}
    klass = type(f"Counting{base.__name__}", (base,), {**body, "calls": calls})
    return klass


OVERRIDDEN = [
    "__next__",
    "__getitem__",
    "__iter__",
    "_iter_results",
    "_populate_cache",
    "_clone_into",
    "in_bulk",
    "select_related",
    "count",
    "first",
    "get",
]


@pytest.mark.parametrize("use", list(USES))
def test_a_users_queryset_class_overriding_methods_gets_them_called(
    books: list, use: str
) -> None:
    """A user's ``queryset_class`` overriding MongoEngine's methods gets them
    called as a subclass of MongoEngine's QuerySet does."""
    ours_class = _counting_class(QuerySet, OVERRIDDEN)
    theirs_class = _counting_class(MongoEngineQuerySet, OVERRIDDEN)
    theirs = USES[use](_mongoengines(SpBook, theirs_class), books)
    ours = USES[use](_mongoengines(SpBook, ours_class), books)
    assert ours == theirs
    # (no_cache() leaves the user's class, as MongoEngine's does)
    assert sorted(ours_class.calls) == sorted(theirs_class.calls)


@pytest.mark.parametrize(
    ("field", "owner"),
    [
        ("author", mongoengine.ReferenceField),
        ("other", mongoengine.GenericReferenceField),
    ],
)
def test_mongoengines_lazy_load_ref_patched_is_called(
    books: list, field: str, owner: type
) -> None:
    """MongoEngine's read of one reference (``_lazy_load_ref`` of its field
    classes), patched, is called by a read of the reference on a sync alias."""
    calls: list[str] = []
    original = inspect.getattr_static(owner, "_lazy_load_ref")
    with mock.patch.object(owner, "_lazy_load_ref", _noting(calls, field, original)):
        linked = SpLinked.objects.first()
        assert getattr(linked, field).name == "a"
    assert calls == [field]


@pytest.mark.parametrize(
    ("use", "name"),
    [
        ("list", "__next__"),
        ("no_cache", "__next__"),
        ("get", "__next__"),
        ("first", "__getitem__"),
        ("in_bulk", "in_bulk"),
    ],
)
def test_reads_take_the_fast_paths_again_once_unpatched(
    books: list, use: str, name: str
) -> None:
    """While MongoEngine's method is patched the results are built by its
    ``_from_son``; once the patch is undone, by the loader again."""
    reads: dict[str, Callable[[], list]] = {
        "list": lambda: list(SpBook.objects),
        "no_cache": lambda: list(SpBook.objects.no_cache()),
        "get": lambda: [SpBook.objects.get(n=1)],
        "first": lambda: [SpBook.objects.first()],
        "in_bulk": lambda: list(SpBook.objects.in_bulk([books[0].pk]).values()),
    }
    assert all(map(built_by_loader, reads[use]()))
    calls: list[str] = []
    original = inspect.getattr_static(MongoEngineBaseQuerySet, name)
    with mock.patch.object(
        MongoEngineBaseQuerySet, name, _noting(calls, name, original)
    ):
        patched = reads[use]()
    assert calls and patched and not any(map(built_by_loader, patched))
    assert all(map(built_by_loader, reads[use]()))
