"""The FastAPI example started once for a module: the fixture and the tests
that use it share the module's event loop (pytest-asyncio's loop scopes)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
import pytest_asyncio

from test_fastapi_app import Service, new_author, new_book, running_app


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def shared_service(mongodb_uri: str) -> AsyncIterator[Service]:
    """One app for the tests of the module that run on the module's loop."""
    async for running in running_app(mongodb_uri):
        running.loop = asyncio.get_running_loop()
        yield running


@pytest.mark.asyncio(loop_scope="module")
async def test_a_module_wide_app_serves_one_test(shared_service: Service) -> None:
    assert asyncio.get_running_loop() is shared_service.loop
    author = await new_author(shared_service, "Shared 1")
    assert (await shared_service.http.get(f"/authors/{author}")).status_code == 200


@pytest.mark.asyncio(loop_scope="module")
async def test_a_module_wide_app_serves_another(shared_service: Service) -> None:
    assert asyncio.get_running_loop() is shared_service.loop
    author = await new_author(shared_service, "Shared 2")
    book = await new_book(shared_service, author, "On one loop")
    assert (await shared_service.http.get(f"/books/{book}")).status_code == 200
