"""Engines, session factories and `transaction` for work outside a request (CLI, jobs). A
request's transaction is routers.unit_of_work's; service code flushes and never commits."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, replace
from typing import Any

from sqlalchemy import create_engine, event
from sqlalchemy.engine import Engine, make_url
from sqlalchemy.exc import DisconnectionError
from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)
from sqlalchemy.pool import ConnectionPoolEntry

from service.core.settings import Settings


def sqlalchemy_url(libpq_url: str) -> str:
    """Turn a plain libpq URL (postgresql://user@host/db, ?host=/socket) into one for psycopg 3."""
    url = make_url(libpq_url)
    if url.get_backend_name() not in {"postgresql", "postgres"}:
        raise ValueError(f"DATABASE_URL must be a postgresql:// URL, got {url.drivername}://")
    return url.set(drivername="postgresql+psycopg").render_as_string(hide_password=False)


@dataclass(frozen=True)
class Deadlines:
    """How long each wait on the database may last, in seconds (see Settings)."""

    statement: float = 5.0
    lock: float = 2.0
    idle_in_transaction: float = 10.0
    pool: float = 2.0
    connect: int = 3

    @classmethod
    def for_requests(cls, settings: Settings) -> Deadlines:
        return cls(
            statement=settings.db_statement_timeout,
            lock=settings.db_lock_timeout,
            idle_in_transaction=settings.db_idle_in_transaction_timeout,
            pool=settings.db_pool_timeout,
            connect=settings.db_connect_timeout,
        )

    @classmethod
    def for_jobs(cls, settings: Settings) -> Deadlines:
        return replace(
            cls.for_requests(settings),
            statement=settings.job_statement_timeout,
            lock=max(settings.db_lock_timeout, 10.0),
            idle_in_transaction=max(settings.db_idle_in_transaction_timeout, 60.0),
        )

    def connect_args(self) -> dict[str, Any]:
        """libpq parameters: server-side timeouts for the session, a connect timeout, and TCP
        keepalives plus a user timeout so that a silent network loss ends the connection (a
        client-side wait on a dead peer would otherwise last as long as the kernel's)."""
        ms = lambda seconds: int(seconds * 1000)  # noqa: E731
        return {
            "connect_timeout": self.connect,
            "options": (
                f"-c statement_timeout={ms(self.statement)} -c lock_timeout={ms(self.lock)} "
                f"-c idle_in_transaction_session_timeout={ms(self.idle_in_transaction)}"
            ),
            **KEEPALIVE,
        }


KEEPALIVE: dict[str, Any] = {
    "keepalives": 1,
    "keepalives_idle": 5,
    "keepalives_interval": 2,
    "keepalives_count": 2,
    "tcp_user_timeout": 6000,
}


PING_WHEN_IDLE_FOR = 1.0  # seconds a pooled connection may rest before it is checked again


def make_async_engine(
    libpq_url: str, *, pool_size: int = 10, deadlines: Deadlines | None = None
) -> AsyncEngine:
    deadlines = deadlines or Deadlines()
    engine = create_async_engine(
        sqlalchemy_url(libpq_url),
        pool_size=pool_size,
        max_overflow=pool_size,
        pool_timeout=deadlines.pool,
        connect_args=deadlines.connect_args(),
    )
    _ping_when_idle(engine)
    return engine


def _ping_when_idle(engine: AsyncEngine) -> None:
    """Check a pooled connection before use only when it has rested (a database restarted or
    a network dropped while nobody asked): a busy connection is not pinged, which saves every
    request a round trip that SQLAlchemy's `pool_pre_ping` would spend. A connection that
    fails the ping is replaced (DisconnectionError makes the pool connect anew); one that
    breaks in use is a 503 for that request and is discarded with the rest of the pool."""

    @event.listens_for(engine.sync_engine, "checkin")
    def rested(dbapi_connection: Any, record: ConnectionPoolEntry) -> None:
        record.info["rested_at"] = time.monotonic()

    @event.listens_for(engine.sync_engine, "checkout")
    def ping(dbapi_connection: Any, record: ConnectionPoolEntry, proxy: Any) -> None:
        rested_at = record.info.get("rested_at")
        if rested_at is None or time.monotonic() - rested_at < PING_WHEN_IDLE_FOR:
            return
        try:
            # In autocommit: one statement, no transaction to end (a rollback would also make
            # the driver forget its prepared statements).
            autocommit = dbapi_connection.autocommit
            dbapi_connection.autocommit = True
            cursor = dbapi_connection.cursor()
            cursor.execute("SELECT 1")
            cursor.close()
            dbapi_connection.autocommit = autocommit
        except Exception as exc:
            raise DisconnectionError("the pooled connection failed its ping") from exc


def make_sync_engine(libpq_url: str) -> Engine:
    """For migrations and CLI chores that run outside the event loop."""
    return create_engine(sqlalchemy_url(libpq_url), pool_pre_ping=True)


def make_session_factory(
    engine: AsyncEngine, *, autocommit: bool = False
) -> async_sessionmaker[AsyncSession]:
    """`autocommit`: the engine's connections are in autocommit (said in each session's
    `info`, so that the unit of work knows a session with nothing to flush needs no commit)."""
    return async_sessionmaker(
        engine, expire_on_commit=False, autoflush=False, info={AUTOCOMMIT: autocommit}
    )


AUTOCOMMIT = "autocommit"  # the key of Session.info set by make_session_factory


def make_read_session_factory(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    """Sessions for requests that only read: autocommit, so each statement is sent alone,
    without a BEGIN before it and a COMMIT after (two round trips of three for a one-query
    read). Under READ COMMITTED each statement saw its own snapshot anyway, so a read sees
    nothing it would not have seen in a transaction."""
    return make_session_factory(
        engine.execution_options(isolation_level="AUTOCOMMIT"), autocommit=True
    )


@asynccontextmanager
async def transaction(factory: async_sessionmaker[AsyncSession]) -> AsyncIterator[AsyncSession]:
    """One unit of work outside a request (CLI, jobs): commit on success, roll back on error."""
    async with factory() as session, session.begin():
        yield session
