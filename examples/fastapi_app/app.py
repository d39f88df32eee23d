"""The application: settings, lifespan (connect, indexes, disconnect), routes."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

from fastapi import FastAPI

from fastapi_app.errors import add_error_handlers
from fastapi_app.models import MODELS
from fastapi_app.routes import router
from mongoengine_async import connect_async, disconnect_async


@dataclass(frozen=True)
class Settings:
    """Where the service keeps its data; ``client_options`` go to PyMongo.

    ``transaction_seconds`` bounds a request's transaction, its retries on a
    write conflict included (PyMongo's own limit is 120 s, longer than an HTTP
    client waits); past it the request answers 503 (``None``: PyMongo's 120 s).
    """

    uri: str = "mongodb://127.0.0.1:27017/?replicaSet=rs0"
    db: str = "fastapi_example"
    client_options: dict[str, Any] = field(default_factory=dict)
    transaction_seconds: float | None = 10.0

    def __post_init__(self) -> None:
        """Refuse a ``transaction_seconds`` not over 0, or over a day, at
        start-up (each request would run out of time at once, or PyMongo or the
        server refuse it, past ~24 days of ``maxTimeMS`` or infinite: a 500)."""
        seconds = self.transaction_seconds
        if seconds is not None and not 0 < seconds <= 86400:
            message = "transaction_seconds must be over 0 and at most 86400 (a day)"
            raise ValueError(f"{message}, not {seconds}")

    @classmethod
    def from_env(cls) -> Settings:
        """``$MONGODB_URI``, ``$MONGODB_DB`` and ``$TRANSACTION_SECONDS``, or
        the defaults."""
        seconds = os.environ.get("TRANSACTION_SECONDS")
        return cls(
            uri=os.environ.get("MONGODB_URI", cls.uri),
            db=os.environ.get("MONGODB_DB", cls.db),
            transaction_seconds=cls.transaction_seconds
            if seconds is None
            else seconds_in(seconds),
        )


def seconds_in(value: str) -> float:
    """``$TRANSACTION_SECONDS`` as a float, refused at start-up with a message
    naming the variable (``float()``'s alone names neither it nor the unit)."""
    try:
        return float(value)
    except ValueError:
        message = f"$TRANSACTION_SECONDS must be a number of seconds, not {value!r}"
        raise ValueError(message) from None


def lifespan_for(settings: Settings) -> Any:
    """The lifespan: connect and create every index before the first request,
    close the client after the last one."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await connect_async(
            db=settings.db,
            host=settings.uri,
            uuidRepresentation="standard",
            **settings.client_options,
        )
        try:
            for model in MODELS:
                await model.async_ensure_indexes()
            yield
        finally:
            await disconnect_async()

    return lifespan


def create_app(settings: Settings | None = None) -> FastAPI:
    """A new application on ``settings`` (by default read from the environment)."""
    settings = settings or Settings.from_env()
    app = FastAPI(
        title="Library (mongoengine-async example)", lifespan=lifespan_for(settings)
    )
    app.state.settings = settings
    add_error_handlers(app)
    app.include_router(router)
    return app
