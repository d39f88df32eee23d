"""MongoEngine's exceptions as HTTP responses."""

from __future__ import annotations

import logging
from collections.abc import Container
from typing import Any

from fastapi import FastAPI, Request, Response
from fastapi.exception_handlers import request_validation_exception_handler
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pymongo.errors import ConnectionFailure, OperationFailure, PyMongoError
from starlette.requests import ClientDisconnect

from mongoengine_async import (
    DoesNotExist,
    NotUniqueError,
    OperationError,
    SaveConditionError,
    ValidationError,
)

log = logging.getLogger(__name__)


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
    """MongoEngine's validation refused the values the body gave: a 422 of
    FastAPI's own shape (what its handler answers for pydantic's refusals),
    one error per field, so that clients read one shape of 422."""
    assert isinstance(error, ValidationError)
    return await request_validation_exception_handler(request, unprocessable(error))


def unprocessable(
    error: ValidationError,
    given: Container[str | int] | None = None,
    stored: tuple[str, ...] = (),
) -> RequestValidationError:
    """MongoEngine's refusal as FastAPI's 422, one error per field: at
    ``("body", *path)`` if the body gave the field (``given``: the fields it
    gave, all by default), else at ``(*stored, *path)``, a stored value the
    body left as it was (``stored`` names the document: the path's id)."""
    errors = []
    for path, message in field_errors(error.to_dict() or str(error)):
        from_body = given is None or (bool(path) and path[0] in given)
        loc = ("body", *path) if from_body else (*stored, *path)
        errors.append({"type": "value_error", "loc": loc, "msg": message})
    return RequestValidationError(errors)


async def unechoed(request: Request, error: Exception) -> JSONResponse:
    """FastAPI's 422, without the ``input`` of the errors found in the body:
    the client sent it, and echoed back it could be a secret, or a megabyte (a
    body that is no JSON object, a batch too long, a title far too long). An
    error without a ``loc`` (raised by other code) keeps its ``input``."""
    assert isinstance(error, RequestValidationError)
    errors = [
        {k: v for k, v in e.items() if k != "input" or not in_body(e)}
        for e in error.errors()
    ]
    return await request_validation_exception_handler(
        request, RequestValidationError(errors)
    )


def in_body(error: dict[str, Any]) -> bool:
    """Whether a validation error's ``loc`` starts at the body; an error may
    have no ``loc``, or an empty one (raised by other code, not FastAPI's)."""
    return tuple(error.get("loc") or ())[:1] == ("body",)


def field_errors(
    errors: dict[str | int, Any] | str, path: tuple[str | int, ...] = ()
) -> list[tuple[tuple[str | int, ...], str]]:
    """The messages of MongoEngine's ``ValidationError.to_dict()`` (nested by
    field, for embedded documents, and by index, for lists), each with its
    path: a field's name or a list's index (an int, as in pydantic's ``loc``)."""
    if not isinstance(errors, dict):
        return [(path, str(errors))]
    return [
        found
        for name, inner in errors.items()
        for found in field_errors(inner, (*path, name))
    ]


# The seconds a client waits before it sends a request that got a 503 again.
RETRY_AFTER = {"Retry-After": "1"}


async def unavailable(request: Request, error: Exception) -> JSONResponse:
    """The database did not answer in time (a transaction's retries ran out
    on a conflict that lasted, a time limit, no server reachable): a 503 that
    tells the client to send the request again, as HTTP clients and proxies
    expect of a passing failure. The error is logged: the client's answer
    does not say which it was."""
    log.warning("%s %s: 503 (%r)", request.method, request.url.path, error)
    detail = "the database is busy or unreachable, try again"
    return JSONResponse({"detail": detail}, status_code=503, headers=RETRY_AFTER)


def out_of_time(error: BaseException | None) -> bool:
    """Whether ``error`` is the driver's report of a time limit run out (its
    ``timeout``): an ``ExecutionTimeout``, or a ``WTimeoutError``, the write
    concern of a commit or a save that ran out of time waiting for replicas."""
    return isinstance(error, PyMongoError) and error.timeout


async def timed_out(request: Request, error: Exception) -> JSONResponse:
    """A driver's ``OperationFailure`` that reports a time-out is a 503; any
    other (a refusal of the server's) is raised again, a 500."""
    if out_of_time(error):
        return await unavailable(request, error)
    raise error


async def failed(request: Request, error: Exception) -> JSONResponse:
    """MongoEngine's ``OperationError``: a write of MongoEngine's that ran out
    of time (the driver's time-out is its cause) is a 503; any other is
    raised again, a 500 that the server logs, as with no handler."""
    if out_of_time(error.__cause__):
        return await unavailable(request, error)
    raise error


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
    app.add_exception_handler(RequestValidationError, unechoed)
    app.add_exception_handler(ClientDisconnect, gone)
    app.add_exception_handler(OperationFailure, timed_out)
    app.add_exception_handler(ConnectionFailure, unavailable)
    app.add_exception_handler(OperationError, failed)
