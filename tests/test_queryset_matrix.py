"""Every async terminal on an async alias gives what its MongoEngine
counterpart gives on the same stored documents: each chain of modifiers with
each terminal, results compared value by value, errors by type and message.

The documents are tests/test_sync_loader.py's (every field kind, a subclass,
defaults and nulls) and tests/test_sync_queryset_matrix.py's (renamed fields, a
string primary key), stored once for the module; MongoEngine's own QuerySet
reads them on a sync alias to the same database (``switch_db``). A reference
read on the async alias is a proxy (equal to the document MongoEngine reads).
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Iterator
from typing import Any

import pytest
from mongoengine.context_managers import switch_db

from test_loading import LdEverything, LdSpecial, LdTarget
from test_sync_loader import plain
from test_sync_queryset_matrix import (
    CHAINS,
    MxRenamed,
    MxRenamedSub,
    assert_alike,
    outcome,
    raised,
)


async def collected(results: Any) -> list:
    return [result async for result in results]


# After the queryset's filter, ordering, skip and limit.
PIPELINE = [{"$project": {"number": 1, "tags": 1}}]


# name: (our async terminal, MongoEngine's counterpart)
TERMINALS = {
    "list": (lambda qs, ids: qs.async_to_list(), lambda qs, ids: list(qs)),
    "length": (lambda qs, ids: qs.async_to_list(2), lambda qs, ids: list(qs)[:2]),
    "loop": (lambda qs, ids: collected(qs), lambda qs, ids: list(qs)),
    "first": (lambda qs, ids: qs.async_first(), lambda qs, ids: qs.first()),
    "get": (
        lambda qs, ids: qs.async_get(pk=ids[0]),
        lambda qs, ids: qs.get(pk=ids[0]),
    ),
    "get_many": (lambda qs, ids: qs.async_get(), lambda qs, ids: qs.get()),
    "with_id": (
        lambda qs, ids: qs.async_with_id(ids[1]),
        lambda qs, ids: qs.with_id(ids[1]),
    ),
    "in_bulk": (
        lambda qs, ids: qs.async_in_bulk(ids),
        lambda qs, ids: qs.in_bulk(ids),
    ),
    "count": (lambda qs, ids: qs.async_count(), lambda qs, ids: qs.count()),
    "count_limited": (
        lambda qs, ids: qs.async_count(True),
        lambda qs, ids: qs.count(True),
    ),
    "exists": (lambda qs, ids: qs.async_exists(), lambda qs, ids: bool(qs)),
    "scalar": (
        lambda qs, ids: qs.async_scalar("number", "text"),
        lambda qs, ids: list(qs.scalar("number", "text")),
    ),
    "values_list": (
        lambda qs, ids: qs.async_values_list("number"),
        lambda qs, ids: list(qs.values_list("number")),
    ),
    "distinct": (
        lambda qs, ids: qs.async_distinct("number"),
        lambda qs, ids: qs.distinct("number"),  # (a BaseList: ours too)
    ),
    "sum": (lambda qs, ids: qs.async_sum("number"), lambda qs, ids: qs.sum("number")),
    "aggregate": (
        lambda qs, ids: collected(qs.async_aggregate(PIPELINE)),
        lambda qs, ids: list(qs.aggregate(PIPELINE)),
    ),
    "average": (
        lambda qs, ids: qs.async_average("ratio"),
        lambda qs, ids: qs.average("ratio"),
    ),
}


async def async_outcome(call: Any) -> Any:
    """What ``call()`` gives (awaited), or the type and message of what it raises."""
    try:
        result = call()
        return await result if hasattr(result, "__await__") else result
    except Exception as error:
        return raised(error)


# The sync alias MongoEngine's code reads the stored documents on
# (conftest.matrix_database connects it).
SYNC = "matrix_sync"


@contextlib.contextmanager
def on_sync_alias() -> Iterator[None]:
    """The test classes on the sync alias SYNC, as MongoEngine's code wants."""
    with contextlib.ExitStack() as stack:
        for cls in (LdEverything, LdSpecial, LdTarget, MxRenamed, MxRenamedSub):
            stack.enter_context(switch_db(cls, SYNC))
        yield


@pytest.mark.parametrize("terminal", TERMINALS)
@pytest.mark.parametrize("chain", CHAINS)
@pytest.mark.parametrize("cls", [LdEverything, MxRenamed], ids=lambda c: c.__name__)
async def test_reads_as_mongoengine(
    matrix_keys: dict[type, list], cls: type, chain: str, terminal: str
) -> None:
    make = CHAINS[chain]
    ours, theirs = TERMINALS[terminal]

    def view(queryset: Any) -> Any:
        return make(queryset.order_by("number", "pk"))

    fast = await async_outcome(lambda: ours(view(cls.objects), matrix_keys[cls]))
    with on_sync_alias():
        slow = outcome(lambda: theirs(view(plain(cls)), matrix_keys[cls]))
    assert_alike(fast, slow, f"{chain}/{terminal}")


@pytest.mark.parametrize("index", [0, 1, 2])
@pytest.mark.parametrize("cls", [LdEverything, MxRenamed], ids=lambda c: c.__name__)
async def test_every_field_reads_as_mongoengines(
    matrix_keys: dict[type, list], cls: type, index: int
) -> None:
    """Each attribute of a document read on the async alias, as MongoEngine's
    reads it on a sync one (a reference is a proxy for its document)."""
    fast = await cls.objects.async_get(pk=matrix_keys[cls][index])
    fast_values = fields_read(fast)
    with on_sync_alias():
        slow_values = fields_read(plain(cls).get(pk=matrix_keys[cls][index]))
    assert_alike(fast_values, slow_values, "fields")


def fields_read(document: Any) -> dict[str, Any]:
    """Each field of ``document`` as reading it gives it (or its error)."""
    return {
        name: outcome(functools.partial(getattr, document, name))
        for name in document._fields_ordered
    }


# Skips and slices MongoEngine takes although PyMongo's skip() and limit()
# would refuse them: a bool skip (its first() and bool() ask PyMongo's
# ``cursor[0]``, which skips ``0 + True``), float bounds (its sliced cursor
# sends them unchecked, and the server truncates them).
ODD_CHAINS = {
    "skip_true": lambda qs: qs.skip(True),
    "slice_true": lambda qs: qs[True:],
    "skip_false": lambda qs: qs.skip(False),
    "slice_floats": lambda qs: qs[1.0:3.0],
    "slice_halves": lambda qs: qs[0.5:2.5],
    "slice_float_stop": lambda qs: qs[:2.0],
    "slice_float_start": lambda qs: qs[2.0:],
    "slice_under_one": lambda qs: qs[1.5:2.0],  # a limit of 0.5: none
    "slice_stop_str": lambda qs: qs[:"b"],  # (PyMongo's TypeError)
    # (PyMongo sends a bool batch size as it is: the server refuses it where
    # first() asks for one document, listing takes it)
    "batch_true": lambda qs: qs.batch_size(True),
    "batch_false": lambda qs: qs.batch_size(False),
}
# Where MongoEngine raises for a float slice (PyMongo's TypeError where its
# first(), get(), with_id() or bool() build another cursor, the server's
# error for a non-integral $skip in count(True)), ours reads the slice as its
# listing does: as the bounds truncated.
TRUNCATED = {
    "slice_floats": lambda qs: qs[1:3],
    "slice_halves": lambda qs: qs[0:2],
    "slice_float_stop": lambda qs: qs[:2],
    "slice_float_start": lambda qs: qs[2:],
    "slice_under_one": lambda qs: qs[1:],
}


@pytest.mark.parametrize("terminal", TERMINALS)
@pytest.mark.parametrize("chain", ODD_CHAINS)
async def test_odd_skips_and_slices_read_as_mongoengine(
    matrix_keys: dict[type, list], chain: str, terminal: str
) -> None:
    """An async terminal after ``skip(True)`` or a float slice gives what
    MongoEngine's gives (async_first() sent ``skip: true``, which the server
    refuses; a float slice raised PyMongo's TypeError for every terminal)."""
    cls = LdEverything
    ours, theirs = TERMINALS[terminal]

    def view(queryset: Any, make: Any = ODD_CHAINS[chain]) -> Any:
        return make(queryset.order_by("number", "pk"))

    fast = await async_outcome(lambda: ours(view(cls.objects), matrix_keys[cls]))
    with on_sync_alias():
        slow = outcome(lambda: theirs(view(plain(cls)), matrix_keys[cls]))
        if chain in TRUNCATED and isinstance(slow, tuple) and slow[:1] == ("raised",):
            truncated = TRUNCATED[chain]
            slow = outcome(
                lambda: theirs(view(plain(cls), truncated), matrix_keys[cls])
            )
    assert_alike(fast, slow, f"{chain}/{terminal}")
