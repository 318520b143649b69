"""Engines, session factories and `transaction` for work outside a request (CLI, jobs). A
request's transaction is routers.unit_of_work's; service code flushes and never commits."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from sqlalchemy import create_engine
from sqlalchemy.engine import Engine, make_url
from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)


def sqlalchemy_url(libpq_url: str) -> str:
    """Turn a plain libpq URL (postgresql://user@host/db, ?host=/socket) into one for psycopg 3."""
    url = make_url(libpq_url)
    if url.get_backend_name() not in {"postgresql", "postgres"}:
        raise ValueError(f"DATABASE_URL must be a postgresql:// URL, got {url.drivername}://")
    return url.set(drivername="postgresql+psycopg").render_as_string(hide_password=False)


def make_async_engine(libpq_url: str, *, pool_size: int = 10) -> AsyncEngine:
    return create_async_engine(
        sqlalchemy_url(libpq_url),
        pool_size=pool_size,
        max_overflow=pool_size,
        pool_pre_ping=True,
    )


def make_sync_engine(libpq_url: str) -> Engine:
    """For migrations and CLI chores that run outside the event loop."""
    return create_engine(sqlalchemy_url(libpq_url), pool_pre_ping=True)


def make_session_factory(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    return async_sessionmaker(engine, expire_on_commit=False, autoflush=False)


@asynccontextmanager
async def transaction(factory: async_sessionmaker[AsyncSession]) -> AsyncIterator[AsyncSession]:
    """One unit of work outside a request (CLI, jobs): commit on success, roll back on error."""
    async with factory() as session, session.begin():
        yield session
