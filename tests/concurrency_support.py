"""Races that really race, and proof that they did.

`Gate` is a barrier inside the database: while it is closed, every transaction that writes
`table` stops at its first write (a statement trigger the test installs takes a shared advisory
lock that the gate holds exclusively). The test starts its requests, waits until `expected` of
them are parked at the gate at once — seen in pg_stat_activity as waiting on the gate's lock,
filtered to this test database — and then opens it, so they all go on from the same point
inside their transactions. If the server handled requests one by one, never more than one
would be parked at a time, `wait_until_parked` would not see them all and the test fails.

Postgres's own deadlines still apply to a parked request, so races through a server use
`contended_server` (tests/conftest.py), whose lock and statement deadlines are long enough for
a slow machine.
"""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import Awaitable, Iterable
from types import TracebackType
from typing import Any, TypeVar

import psycopg
from psycopg import sql

T = TypeVar("T")

# How long a test waits for what it expects (requests parked, a lock waited on): a bound on a
# hang, not a speed requirement — everything it waits for happens without the clock moving.
PATIENCE_SECONDS = 60.0


async def together(*calls: Awaitable[T]) -> list[T]:
    """Start every call at the same moment: each task waits at a barrier until all of them
    exist, then sends."""
    barrier = asyncio.Barrier(len(calls))

    async def send(call: Awaitable[T]) -> T:
        await barrier.wait()
        return await call

    return list(await asyncio.gather(*(send(c) for c in calls)))


class Gate:
    def __init__(
        self, database_url: str, table: str, events: Iterable[str] = ("INSERT", "UPDATE")
    ) -> None:
        self.database_url, self.table, self.events = database_url, table, tuple(events)
        self.key = secrets.randbelow(2**62)
        self.name = f"test_gate_{secrets.token_hex(4)}"
        self.conn: psycopg.AsyncConnection[tuple[Any, ...]] | None = None
        self.parked_at_most = 0

    async def __aenter__(self) -> Gate:
        self.conn = await psycopg.AsyncConnection.connect(self.database_url, autocommit=True)
        await self.conn.execute("SELECT pg_advisory_lock(%s)", (self.key,))
        # SET lock_timeout on the function: the wait at the gate is the test's, not the app's.
        await self.conn.execute(
            sql.SQL(
                "CREATE FUNCTION {name}() RETURNS trigger LANGUAGE plpgsql "
                "SET lock_timeout = 0 AS $$ BEGIN "
                "PERFORM pg_advisory_xact_lock_shared({key}); RETURN NULL; END $$"
            ).format(name=sql.Identifier(self.name), key=sql.Literal(self.key))
        )
        await self.conn.execute(
            sql.SQL(
                "CREATE TRIGGER {name} BEFORE {events} ON {table} "
                "FOR EACH STATEMENT EXECUTE FUNCTION {name}()"
            ).format(
                name=sql.Identifier(self.name),
                events=sql.SQL(" OR ").join(sql.SQL(e) for e in self.events),
                table=sql.Identifier(self.table),
            )
        )
        return self

    async def parked(self) -> int:
        """Transactions of this database waiting at the gate right now."""
        assert self.conn is not None
        row = await (
            await self.conn.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                "AND wait_event_type = 'Lock' AND wait_event = 'advisory' "
                "AND pg_backend_pid() = ANY(pg_blocking_pids(pid))"
            )
        ).fetchone()
        count = int(row[0]) if row else 0
        self.parked_at_most = max(self.parked_at_most, count)
        return count

    async def wait_until_parked(self, expected: int, *pending: asyncio.Future[Any]) -> None:
        """Until `expected` transactions wait at the gate at once; fails if a request ends
        first (it did not reach the gate) or if they never all wait together."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + PATIENCE_SECONDS
        while await self.parked() < expected:
            finished = [p for p in pending if p.done()]
            assert not finished, f"a request ended before the gate: {finished[0].result()!r}"
            assert loop.time() < deadline, (
                f"only {self.parked_at_most} of {expected} requests were ever in flight at once"
            )
            await asyncio.sleep(0.01)

    async def open(self) -> None:
        assert self.conn is not None
        await self.conn.execute("SELECT pg_advisory_unlock(%s)", (self.key,))

    async def __aexit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        trace: TracebackType | None,
    ) -> None:
        assert self.conn is not None
        try:
            await self.conn.execute("SELECT pg_advisory_unlock_all()")
            await self.conn.execute(
                sql.SQL("DROP TRIGGER IF EXISTS {name} ON {table}").format(
                    name=sql.Identifier(self.name), table=sql.Identifier(self.table)
                )
            )
            await self.conn.execute(
                sql.SQL("DROP FUNCTION IF EXISTS {name}()").format(name=sql.Identifier(self.name))
            )
        finally:
            await self.conn.close()


async def race(gate: Gate, calls: list[Awaitable[T]], parked: int | None = None) -> list[T]:
    """Send `calls` together, wait until `parked` (default: all) of them wait at the gate at
    once, open it and collect the answers."""
    sending = asyncio.ensure_future(together(*calls))
    try:
        await gate.wait_until_parked(len(calls) if parked is None else parked, sending)
    finally:
        await gate.open()  # on failure too: let what was parked finish before the test ends
        if not sending.done():
            await asyncio.wait([sending], timeout=PATIENCE_SECONDS)
    return await sending


# Backends of this database waiting, directly or behind another waiter, on a lock that the
# given backend holds (a row lock's later waiters queue behind the first one's tuple lock).
_WAITING_ON = """
    WITH RECURSIVE chain(pid) AS (
        SELECT %(blocker)s::int
        UNION
        SELECT a.pid FROM pg_stat_activity a JOIN chain c ON c.pid = ANY(pg_blocking_pids(a.pid))
        WHERE a.datname = current_database() AND a.wait_event_type = 'Lock'
    )
    SELECT count(*) - 1 FROM chain
"""


async def wait_for_lock_waiters(
    database_url: str, blocker_pid: int, expected: int, *pending: asyncio.Future[Any]
) -> None:
    """Until `expected` backends of this database wait for a lock held by `blocker_pid`; fails
    if one of `pending` ends first or if they never all wait at once."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + PATIENCE_SECONDS
    most = 0
    async with await psycopg.AsyncConnection.connect(database_url, autocommit=True) as conn:
        while True:
            row = await (await conn.execute(_WAITING_ON, {"blocker": blocker_pid})).fetchone()
            most = max(most, int(row[0]) if row else 0)
            if most >= expected:
                return
            finished = [p for p in pending if p.done()]
            assert not finished, f"ended before waiting on the lock: {finished[0].result()!r}"
            assert loop.time() < deadline, f"only {most} of {expected} ever waited on the lock"
            await asyncio.sleep(0.01)


async def race_behind_lock(
    database_url: str, lock: str, params: tuple[object, ...], calls: list[Awaitable[T]]
) -> list[T]:
    """Take a lock in a transaction of the test's own (`lock`, e.g. SELECT ... FOR UPDATE),
    send `calls` together, wait until every one of them waits for that lock at once, then
    commit and collect the answers. Serialized, only one would ever wait: the test fails."""
    async with await psycopg.AsyncConnection.connect(database_url) as holder:
        await holder.execute(lock, params)
        sending = asyncio.ensure_future(together(*calls))
        await wait_for_lock_waiters(database_url, holder.info.backend_pid, len(calls), sending)
        await holder.commit()
        return await sending
