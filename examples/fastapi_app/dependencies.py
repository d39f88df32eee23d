"""Request-scoped dependencies."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Annotated

from fastapi import Depends
from pymongo.asynchronous.client_session import AsyncClientSession

from mongoengine_async import async_run_in_transaction


async def transaction() -> AsyncIterator[AsyncClientSession]:
    """Run the endpoint in one MongoDB transaction: commit when it returns,
    abort when it raises (the exception then reaches the exception handlers)."""
    async with async_run_in_transaction() as session:
        yield session


# scope="function": the transaction ends before the response is sent, so a
# client never sees a success whose commit then fails.
Transaction = Annotated[AsyncClientSession, Depends(transaction, scope="function")]
