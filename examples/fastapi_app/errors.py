"""MongoEngine's exceptions as HTTP responses."""

from __future__ import annotations

from fastapi import FastAPI, Request, Response
from fastapi.responses import JSONResponse
from starlette.requests import ClientDisconnect

from mongoengine_async import (
    DoesNotExist,
    NotUniqueError,
    SaveConditionError,
    ValidationError,
)


async def not_found(request: Request, error: Exception) -> JSONResponse:
    """``Model.DoesNotExist`` (every model's subclasses it) is a 404."""
    return JSONResponse({"detail": str(error)}, status_code=404)


async def conflict(request: Request, error: Exception) -> JSONResponse:
    """A unique index refused the write."""
    return JSONResponse({"detail": "already exists"}, status_code=409)


async def changed(request: Request, error: Exception) -> JSONResponse:
    """A conditional save found the document changed (or deleted) meanwhile."""
    return JSONResponse({"detail": "changed meanwhile, try again"}, status_code=409)


async def invalid(request: Request, error: Exception) -> JSONResponse:
    """MongoEngine's validation (or a malformed id) refused the values."""
    return JSONResponse({"detail": str(error)}, status_code=422)


async def gone(request: Request, error: Exception) -> Response:
    """The client went away while sending its body (an upload cut short, whose
    chunks the upload removed): no one reads this answer, and no error to log."""
    return Response(status_code=499)


def add_error_handlers(app: FastAPI) -> None:
    """Register the handlers above on ``app``."""
    app.add_exception_handler(DoesNotExist, not_found)
    app.add_exception_handler(NotUniqueError, conflict)
    app.add_exception_handler(SaveConditionError, changed)
    app.add_exception_handler(ValidationError, invalid)
    app.add_exception_handler(ClientDisconnect, gone)
