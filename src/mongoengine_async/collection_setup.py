"""Collection setup on async aliases: a class's collection is created (capped or
timeseries, as its ``meta`` says) with its indexes once per client, on first use.

``Document._prepare_collection`` and the ``async_*`` index methods delegate here.
"""

from __future__ import annotations

import asyncio
import functools
from typing import Any

import mongoengine
from mongoengine.document import includes_cls
from pymongo import IndexModel
from pymongo.asynchronous.client_session import AsyncClientSession
from pymongo.asynchronous.collection import AsyncCollection

from mongoengine_async.checks import check_model
from mongoengine_async.classes import keyed_by_class, taken_in
from mongoengine_async.connection import (
    on_disconnect,
    registry_changed,
    released,
    running_loop,
)
from mongoengine_async.resend import sent_again_once

__all__ = (
    "create_collection",
    "create_indexes",
    "forget_prepared",
    "prepare",
    "prepared",
)

_prepared: dict[tuple[type[Any], int, str], asyncio.Future] = keyed_by_class({})


def _succeeded(task: asyncio.Future | None) -> bool:
    return (
        task is not None
        and task.done()
        and not task.cancelled()
        and task.exception() is None
    )


def forget_prepared(client: Any, full_name: str | None = None) -> None:
    """Drop the prepared-collection marks of a client (or of one collection);
    with ``client`` None, those of collection ``full_name`` on every client:
    the clients of other event loops (worker threads') would otherwise write
    to a dropped collection, recreated without its indexes."""
    for key in list(_prepared):
        if (client is None or key[1] == id(client)) and full_name in (None, key[2]):
            _prepared.pop(key, None)  # (perhaps gone meanwhile: another thread's)
    registry_changed()


on_disconnect(forget_prepared)


def _key(cls: type[Any], collection: AsyncCollection) -> tuple[type[Any], int, str]:
    return cls, id(collection.database.client), collection.full_name


def prepared(cls: type[Any], collection: AsyncCollection) -> bool:
    """Whether :func:`prepare` has succeeded for ``cls`` on ``collection``:
    the common case, in which an operation need not await it."""
    return _succeeded(_prepared.get(_key(cls, collection)))


async def prepare(cls: type[Any], collection: AsyncCollection) -> bool:
    """Create the collection (capped/timeseries) and meta indexes, once.

    Concurrent first users share one preparation; a failed or cancelled one
    is retried by the next caller. True when this call started it.
    """
    key = _key(cls, collection)
    task = _prepared.get(key)
    if _succeeded(task):  # prepared already: the common case, no await
        return False
    started = task is None or task.done()  # a done one here failed
    if task is None or started:
        taken_in(cls)
        task = running_loop().create_task(create_collection(cls, collection))
        _prepared[key] = task
    try:
        await asyncio.shield(task)
        if started and released(collection.database.client):
            # Let go meanwhile (or before: another thread's disconnect, after
            # this one resolved the collection): no mark outlives the client.
            forget_prepared(collection.database.client)
        return started
    except BaseException:
        if (
            task.done()
            and _prepared.get(key) is task
            and (task.cancelled() or task.exception() is not None)
        ):
            del _prepared[key]
        raise


async def create_collection(cls: type[Any], collection: AsyncCollection) -> None:
    """Check the model, create a capped or timeseries collection, then the
    meta indexes unless ``auto_create_index`` is off."""
    check_model(cls, cls._db_alias())  # runs once per class and client
    options = None
    if cls._meta.get("max_size") or cls._meta.get("max_documents"):
        options = _capped_options(cls)
    elif cls._meta.get("timeseries"):
        options = _timeseries_options(cls)
    if options is not None:  # (tried again after a step-down: it looks first)
        create = functools.partial(_create_special, cls, collection, options)
        await sent_again_once(collection, create, None)
    if cls._meta.get("auto_create_index", True):
        await create_indexes(cls, collection)


def _capped_options(cls: type[Any]) -> dict[str, Any]:
    """``create_collection`` options of a capped class (``max_size``,
    ``max_documents``)."""
    size = cls._meta.get("max_size") or 10 * 2**20
    options = {"capped": True, "size": -(-size // 256) * 256}
    if cls._meta.get("max_documents"):
        options["max"] = cls._meta["max_documents"]
    return options


def _timeseries_options(cls: type[Any]) -> dict[str, Any]:
    """``create_collection`` options for a timeseries class."""
    timeseries = dict(cls._meta["timeseries"])
    expire = timeseries.pop("expireAfterSeconds", None)
    return {"timeseries": timeseries, "expireAfterSeconds": expire}


async def _create_special(
    cls: type[Any], collection: AsyncCollection, options: dict[str, Any]
) -> None:
    """Create a capped or timeseries collection unless it exists already."""
    database = collection.database
    existing = await database.list_collection_names(filter={"name": collection.name})
    if not existing:
        await database.create_collection(collection.name, **options)
        return
    if options.get("capped"):
        current = await collection.options()
        if (
            current.get("max") != options.get("max")
            or current.get("size") != options["size"]
        ):
            raise mongoengine.document.InvalidCollectionError(
                f'Cannot create collection "{collection.name}" as a capped '
                "collection as it already exists"
            )


def _index_models(cls: type[Any]) -> list[IndexModel]:
    """The ``meta`` indexes (and the ``_cls`` one) as driver IndexModels."""
    background = cls._meta.get("index_background", False)
    base_options = {
        k: v for k, v in (cls._meta.get("index_opts") or {}).items() if k != "cls"
    }
    models: list[IndexModel] = []
    cls_indexed = False
    for spec in cls._meta["index_specs"] or []:
        options = {**base_options, **spec}
        fields = options.pop("fields")
        options.pop("cls", None)
        cls_indexed = cls_indexed or includes_cls(fields)
        model = IndexModel(fields, background=background, **options)
        # MongoEngine's metaclass may list an inherited index twice; its
        # create_index of the same index again changes nothing, but one
        # createIndexes command naming it twice fails.
        if all(model.document != kept.document for kept in models):
            models.append(model)
    if (
        cls._meta.get("index_cls", True)
        and not cls_indexed
        and cls._meta.get("allow_inheritance")
    ):
        models.append(IndexModel([("_cls", 1)], background=background, **base_options))
    return models


async def create_indexes(
    cls: type[Any],
    collection: AsyncCollection,
    session: AsyncClientSession | None = None,
) -> None:
    """Create the ``meta`` indexes of ``cls`` on ``collection``: in one round
    trip, or, when two of them share a name or keys (with other options: what
    MongoEngine's ensure_indexes sends one by one, the server refuses the
    second), one by one as MongoEngine does, so that the same indexes exist and
    the same error is raised. Each is sent again after a step-down (index
    creations are no retryable writes, and the caller's write is)."""
    models = _index_models(cls)
    if not _conflicting(models):
        if models:
            await _create(collection, models, session)
        return
    for model in models:
        await _create(collection, [model], session)


async def _create(
    collection: AsyncCollection,
    models: list[IndexModel],
    session: AsyncClientSession | None,
) -> None:
    """``collection.create_indexes(models)``, sent again after a step-down."""
    create = functools.partial(collection.create_indexes, models, session=session)
    await sent_again_once(collection, create, session)


def _conflicting(models: list[IndexModel]) -> bool:
    """Whether two of ``models`` have the same name or the same keys."""
    names = {model.document["name"] for model in models}
    keys = {tuple(model.document["key"].items()) for model in models}
    return len(names) < len(models) or len(keys) < len(models)
