"""Each async method of a loaded document, and each async write of a queryset,
does what its MongoEngine counterpart does on a sync alias: the same return
value (or error), the same document afterwards (its stored form and state) and
the same data in the database.

The documents are the matrices' (conftest.matrix_database: every field kind, a
subclass, defaults and nulls), put back before each case; MongoEngine's own
code runs on a sync alias to the same database (``switch_db``).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from bson import ObjectId
from mongoengine import signals
from mongoengine.base import BaseDocument
from pymongo.results import UpdateResult

from test_loading import LdEverything, LdTarget
from test_queryset_matrix import async_outcome, on_sync_alias
from test_signals import ALL
from test_sync_loader import plain
from test_sync_queryset_matrix import outcome


def change_text(document: Any) -> None:
    document.text = "changed"
    document.tags = ["x", "y"]
    document.number = None


def both(
    method: str, *args: Any, before: Callable[[Any], Any] | None = None, **options: Any
) -> tuple[Callable[[Any], Any], Callable[[Any], Any]]:
    """Our async ``method`` and MongoEngine's, each called on a document with the
    same arguments, after ``before(document)``."""

    def calling(name: str) -> Callable[[Any], Any]:
        def call(document: Any) -> Any:
            if before is not None:
                before(document)
            return getattr(document, name)(*args, **options)

        return call

    return calling(f"async_{method}"), calling(method)


def deleted_then(method: str) -> tuple[Callable[[Any], Any], Callable[[Any], Any]]:
    """The document deleted, then our async ``method`` and MongoEngine's."""

    async def ours(document: Any) -> Any:
        await document.async_delete()
        return await getattr(document, f"async_{method}")()

    def theirs(document: Any) -> Any:
        document.delete()
        return getattr(document, method)()

    return ours, theirs


def invalid_email(document: Any) -> None:
    document.email = "not an email"


# name: (our async call, MongoEngine's call), each given the loaded document
OPERATIONS = {
    "reload": both("reload"),
    "reload_fields": both("reload", "number", "tags"),
    "reload_changed": both("reload", before=change_text),
    "modify": both("modify", set__number=42, push__tags="new"),
    "modify_missed": both("modify", query={"number": -5}, set__number=1),
    "modify_unset": both("modify", unset__text=True),
    "modify_inc": both("modify", inc__number=1),
    "update": both("update", set__number=3, inc__big=1),
    "update_nothing": both("update"),
    "update_list_ops": both("update", pull__tags="a", add_to_set__scores=5),
    "save": both("save"),
    "save_changed": both("save", before=change_text),
    "save_invalid": both("save", before=invalid_email),
    "save_appended": both("save", before=lambda d: d.tags.append("z")),
    "save_item_set": both("save", before=lambda d: d.scores.__setitem__(0, 9)),
    "save_embedded": both("save", before=lambda d: setattr(d.part or d, "label", "n")),
    "save_dict": both("save", before=lambda d: d.attributes.__setitem__("k", [1])),
    "save_unset": both("save", before=lambda d: setattr(d, "ratio", None)),
    "save_deleted": both("save", before=lambda d: delattr(d, "text")),
    "save_condition": both("save", before=change_text, save_condition={"number": -1}),
    "save_condition_met": both(
        "save", before=change_text, save_condition={"_id": {"$exists": True}}
    ),
    "save_force_insert": both("save", force_insert=True),
    "delete": both("delete"),
    "delete_then_save": deleted_then("save"),
    "delete_then_reload": deleted_then("reload"),
}


def state(document: Any) -> Any:
    """What a user sees of a document after a call: its stored form (references
    as ids, however loaded) and its save state; an error's type and message
    (without the server's reply, whose cluster time differs)."""
    if isinstance(document, tuple) and document[:1] == ("raised",):
        return (*document[:2], document[2].split(", full error: ")[0])
    if isinstance(document, UpdateResult):
        return document.matched_count, document.modified_count, document.upserted_id
    if isinstance(document, list):
        return [state(item) for item in document]
    if not isinstance(document, BaseDocument):
        return document
    return (
        type(document),
        document.to_mongo().to_dict(),
        sorted(document._changed_fields),
        document._created,
    )


SIGNALS = ("pre_init", "post_init", *ALL)  # every one of MongoEngine's


@contextlib.contextmanager
def signals_sent() -> Iterator[list]:
    """The signals MongoEngine's receivers get meanwhile: each one's name, sender,
    the document's class and pk, and the plain values of its arguments. Not the
    referenced class's: MongoEngine's reload() and modify() read the references
    they load (on a sync alias a reference loads when read; see references.md),
    async_reload() and async_modify() leave them as proxies."""
    sent: list = []

    def receiver(name: str) -> Callable[..., None]:
        def receive(sender: Any, document: Any = None, **kwargs: Any) -> None:
            if sender is LdTarget:
                return
            plain = {
                key: value
                for key, value in kwargs.items()
                if isinstance(value, bool | int | str | type(None))
            }
            pk = getattr(document, "pk", None)
            sent.append((name, sender.__name__, type(document).__name__, pk, plain))

        return receive

    receivers = [(getattr(signals, name), receiver(name)) for name in SIGNALS]
    for signal, receive in receivers:
        signal.connect(receive)
    try:
        yield sent
    finally:
        for signal, receive in receivers:
            signal.disconnect(receive)


def contents(database: Any) -> list:
    """Every collection's documents."""
    return sorted(
        (name, sorted(database[name].find(), key=str))
        for name in database.list_collection_names()
    )


def restore(database: Any, snapshot: list) -> None:
    for name, documents in snapshot:
        database[name].delete_many({})
        database[name].insert_many(documents)


@pytest.fixture(scope="module")
def snapshot(matrix_database: tuple[Any, dict[type, list]]) -> list:
    """What the matrices' database holds before any call (put back before each)."""
    return contents(matrix_database[0])


@pytest.fixture
def seeded(
    matrix_database: tuple[Any, dict[type, list]],
    matrix_keys: dict[type, list],
    snapshot: list,
) -> tuple[Any, list, list]:
    """The database (the alias "default" connected async to it), the ids of
    its LdEverything documents and what it holds."""
    return matrix_database[0], matrix_keys[LdEverything], snapshot


@pytest.mark.parametrize("index", [0, 1, 2])
@pytest.mark.parametrize("operation", OPERATIONS)
async def test_document_calls_do_what_mongoengines_do(
    seeded: tuple[Any, list, list], operation: str, index: int
) -> None:
    database, ids, snapshot = seeded
    ours, theirs = OPERATIONS[operation]
    restore(database, snapshot)
    with signals_sent() as fast_signals:
        document = await LdEverything.objects.async_get(pk=ids[index])
        fast = await async_outcome(lambda: ours(document))
    fast_result = (state(fast), state(document), contents(database), fast_signals)

    restore(database, snapshot)
    with on_sync_alias(), signals_sent() as slow_signals:
        document = plain(LdEverything).get(pk=ids[index])
        slow = outcome(lambda: theirs(document))
        slow_result = (state(slow), state(document), contents(database), slow_signals)
    assert fast_result == slow_result


# An id no stored document has, for upserts (the same in both runs).
NEW_ID = ObjectId()

# name: (a chain of modifiers, a write): each run async and through MongoEngine
WRITES = {
    "update": (lambda qs: qs, both("update", set__number=7)),
    "update_matching": (lambda qs: qs(number=7), both("update", inc__number=1)),
    "update_none": (lambda qs: qs(number=-1), both("update", set__number=7)),
    "update_empty": (lambda qs: qs.none(), both("update", set__number=7)),
    "update_full": (lambda qs: qs, both("update", set__text="t", full_result=True)),
    "update_nothing": (lambda qs: qs, both("update")),
    "update_upsert": (
        lambda qs: qs(pk=NEW_ID),
        both("update", upsert=True, set__text="new"),
    ),
    "update_one": (lambda qs: qs.order_by("number"), both("update_one", set__big=2)),
    "upsert_one": (lambda qs: qs(pk=NEW_ID), both("upsert_one", set__text="u")),
    "upsert_one_found": (lambda qs: qs(number=1), both("upsert_one", set__text="u")),
    "modify": (lambda qs: qs.order_by("-number"), both("modify", set__number=8)),
    "modify_new": (
        lambda qs: qs.order_by("number"),
        both("modify", new=True, set__text="n"),
    ),
    "modify_remove": (lambda qs: qs(number=7), both("modify", remove=True)),
    "modify_upsert": (
        lambda qs: qs(pk=NEW_ID),
        both("modify", upsert=True, new=True, set__number=5),
    ),
    "modify_missed": (lambda qs: qs(number=-1), both("modify", set__number=8)),
    "delete": (lambda qs: qs, both("delete")),
    "delete_matching": (lambda qs: qs(number=7), both("delete")),
    "delete_skip": (lambda qs: qs.order_by("number").skip(1), both("delete")),
    "delete_limit": (lambda qs: qs.order_by("-number").limit(1), both("delete")),
    "delete_limit0": (lambda qs: qs.limit(0), both("delete")),
    "create": (lambda qs: qs, both("create", id=NEW_ID, number=3, text="c")),
    "create_invalid": (lambda qs: qs, both("create", id=NEW_ID, email="x")),
}


@pytest.mark.parametrize("write", WRITES)
async def test_queryset_writes_do_what_mongoengines_do(
    seeded: tuple[Any, list, list], write: str
) -> None:
    database, _, snapshot = seeded
    chain, (ours, theirs) = WRITES[write]
    restore(database, snapshot)
    with signals_sent() as fast_signals:
        fast = await async_outcome(lambda: ours(chain(LdEverything.objects)))
    fast_result = (state(fast), contents(database), fast_signals)

    restore(database, snapshot)
    with on_sync_alias(), signals_sent() as slow_signals:
        slow = outcome(lambda: theirs(chain(plain(LdEverything))))
        slow_result = (state(slow), contents(database), slow_signals)
    assert fast_result == slow_result


@pytest.mark.parametrize("empty", [lambda qs: qs.none(), lambda qs: qs[0:0]])
async def test_deleting_an_empty_queryset_deletes_nothing(
    seeded: tuple[Any, list, list], empty: Callable[[Any], Any]
) -> None:
    """Where ours and MongoEngine's differ on purpose: MongoEngine's delete()
    ignores none() and an empty slice (its listing and update() do not) and
    deletes every document the filter matches; ours deletes nothing."""
    database, _, snapshot = seeded
    restore(database, snapshot)
    assert await empty(LdEverything.objects).async_delete() == 0
    assert contents(database) == snapshot
    with on_sync_alias():
        assert empty(plain(LdEverything)).delete() == 3
    assert database.ld_everything.count_documents({}) == 0


async def test_a_delete_by_document_sends_signals_in_mongoengines_order(
    seeded: tuple[Any, list, list],
) -> None:
    """More documents than one chunk of MongoEngine's result cache (100): each
    chunk is built (post_init) before its documents are deleted, as there."""
    database, _, snapshot = seeded
    many = [
        {"_id": ObjectId(), "_cls": "LdEverything", "number": number}
        for number in range(150)
    ]

    def seed() -> None:
        restore(database, snapshot)
        database.ld_everything.insert_many(many)

    seed()
    with signals_sent() as fast_signals:
        fast = await LdEverything.objects.async_delete()
    seed()
    with on_sync_alias(), signals_sent() as slow_signals:
        slow = plain(LdEverything).delete()
    assert (fast, fast_signals) == (slow, slow_signals)
    built = [
        n
        for n, (name, sender, *_) in enumerate(fast_signals)
        if name == "post_init" and sender != "LdPart"  # a document, not embedded
    ]
    first_delete = [sent[0] for sent in fast_signals].index("pre_delete")
    assert fast == 153 and built[99] < first_delete < built[100]
