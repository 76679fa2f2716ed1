"""FastAPI dependencies shared by every router (``Annotated`` aliases)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Annotated

from fastapi import Depends, Request
from sqlalchemy.ext.asyncio import AsyncSession

from payoutsvc.runtime import Runtime

_READ_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


def runtime_of(request: Request) -> Runtime:
    runtime: Runtime = request.app.state.runtime
    return runtime


async def get_runtime(request: Request) -> Runtime:
    """Async, so FastAPI calls it inline: a sync dependency goes through the threadpool."""
    return runtime_of(request)


async def get_session(request: Request) -> AsyncIterator[AsyncSession]:
    """The request's single transaction: commits when the endpoint returns, rolls back if it
    raises. ``scope="function"`` makes the commit happen before the response is sent, so a
    client never sees 201 for something that then failed to commit."""
    runtime = runtime_of(request)
    async with runtime.db.transaction(write=request.method not in _READ_METHODS) as session:
        yield session


async def get_write_session(request: Request) -> AsyncIterator[AsyncSession]:
    """:func:`get_session` as a write transaction whatever the method: for a GET that
    records something (an export of full accounts writes its audit events)."""
    async with runtime_of(request).db.transaction(write=True) as session:
        yield session


RuntimeDep = Annotated[Runtime, Depends(get_runtime)]
DbSession = Annotated[AsyncSession, Depends(get_session, scope="function")]
WriteSession = Annotated[AsyncSession, Depends(get_write_session, scope="function")]
