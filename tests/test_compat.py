"""The private names of MongoEngine and PyMongo this package relies on still
exist, with the parameters we pass: an upgrade renaming one fails here."""

import inspect
from collections.abc import Iterator
from typing import Any

import mongoengine
import pymongo._csot
import pymongo.cursor_shared
import pymongo.helpers_shared
import pytest
from gridfs.asynchronous import AsyncGridIn, AsyncGridOut
from mongoengine.base import BaseDocument
from mongoengine.queryset.base import BaseQuerySet
from pymongo import AsyncMongoClient, MongoClient
from pymongo.asynchronous.command_cursor import AsyncCommandCursor
from pymongo.asynchronous.cursor import AsyncCursor
from pymongo.errors import ServerSelectionTimeoutError
from pymongo.synchronous.cursor import Cursor

from mongoengine_async import _compat, context


class CompatSample(mongoengine.Document):
    """A plain MongoEngine model: its class and instances carry what the
    metaclass and ``__init__`` set."""

    name = mongoengine.StringField()


@pytest.fixture(scope="module")
def samples() -> Iterator[dict[type, Any]]:
    """An instance of each class whose private attributes are set in ``__init__``
    (or by the metaclass); nothing connects to a server."""
    client = AsyncMongoClient("mongodb://127.0.0.1:1", connect=False)
    root = client["compat"]["fs"]
    grid_out = AsyncGridOut(root, file_document={"_id": 1, "length": 0, "chunkSize": 4})
    document = CompatSample(name="x")
    sync_client = MongoClient("mongodb://127.0.0.1:1", connect=False)
    yield {
        BaseDocument: document,
        mongoengine.Document: document,
        AsyncMongoClient: client,
        BaseQuerySet: BaseQuerySet(CompatSample, root),
        AsyncGridIn: AsyncGridIn(root),
        AsyncGridOut: grid_out,
        _compat.AsyncGridOutChunkIterator: _compat.AsyncGridOutChunkIterator(
            grid_out, grid_out._chunks, None, 0
        ),
        Cursor: sync_client["compat"]["fs"].find(),
        AsyncCursor: root.find(),
        AsyncCommandCursor: AsyncCommandCursor(root, {"id": 0, "firstBatch": []}, None),
    }
    sync_client.close()


@pytest.mark.parametrize(
    "owner,name",
    _compat.PRIVATE_ATTRIBUTES,
    ids=[f"{owner.__name__}.{name}" for owner, name in _compat.PRIVATE_ATTRIBUTES],
)
def test_private_attribute_exists(owner: type, name: str, samples: dict) -> None:
    found = hasattr(owner, name) or (owner in samples and hasattr(samples[owner], name))
    assert found, f"{owner.__module__}.{owner.__qualname__} has no {name!r} any more"


@pytest.mark.parametrize(
    "function,parameters",
    _compat.PRIVATE_SIGNATURES,
    ids=[function.__qualname__ for function, _ in _compat.PRIVATE_SIGNATURES],
)
def test_private_callable_takes_our_parameters(
    function: Any, parameters: tuple
) -> None:
    accepted = inspect.signature(function).parameters
    missing = [name for name in parameters if name not in accepted]
    assert not missing, (
        f"{function.__qualname__}{inspect.signature(function)} lacks {missing}"
    )


def test_module_level_names_are_the_private_ones() -> None:
    """The re-exports are MongoEngine's/PyMongo's own objects, not look-alikes."""
    import asyncio

    import mongoengine.connection as me_connection
    from gridfs.asynchronous import grid_file
    from mongoengine.base import common

    assert _compat.get_connection_settings is me_connection._get_connection_settings
    assert _compat.document_registry is common._document_registry
    assert _compat.AsyncGridOutChunkIterator is grid_file._AsyncGridOutChunkIterator
    assert _compat.running_loop_or_none is asyncio._get_running_loop
    assert _compat.apply_client_timeout is pymongo._csot.apply
    assert _compat.CURSOR_CLOSED_ERRORS is pymongo.cursor_shared._CURSOR_CLOSED_ERRORS
    retryable_codes = pymongo.helpers_shared._RETRYABLE_ERROR_CODES
    assert _compat.RETRYABLE_ERROR_CODES is retryable_codes
    for name in _compat.MONGOENGINE_CONNECTION_GLOBALS:
        assert isinstance(getattr(me_connection, name), dict), name


def test_sync_registration_is_read_from_mongoengine() -> None:
    mongoengine.register_connection(
        "compat-registered", db="compat", uuidRepresentation="standard"
    )
    try:
        assert _compat.is_registered_sync("compat-registered")
    finally:
        mongoengine.disconnect("compat-registered")
    assert not _compat.is_registered_sync("compat-registered")


def test_container_location_of_mongoengine_and_plain_containers() -> None:
    document = CompatSample(name="x")
    tracked = mongoengine.base.BaseList([1], document, "tags")
    name, owner = _compat.container_location(tracked)
    assert name == "tags"
    assert owner.name == "x"  # a weak proxy of the document
    assert _compat.container_location([1]) == (None, None)
    assert _compat.container_location({"a": 1}) == (None, None)


async def test_server_selection_time_out_says_its_wait_and_its_client() -> None:
    # A transaction's abort is not fenced after a server selection that
    # waited its client's whole serverSelectionTimeoutMS (context._no_server),
    # which PyMongo says in its message only ("Timeout: <n>s", the topology's
    # id): worded otherwise, every block on a lost server waits again.
    client = AsyncMongoClient("mongodb://127.0.0.1:1", serverSelectionTimeoutMS=50)
    other = AsyncMongoClient("mongodb://127.0.0.1:1", serverSelectionTimeoutMS=50)
    try:
        with pytest.raises(ServerSelectionTimeoutError) as error:
            await client.admin.command("ping")
        assert context._waited_whole(error.value, client)
        assert not context._waited_whole(error.value, other)
    finally:
        await client.close()
        await other.close()
