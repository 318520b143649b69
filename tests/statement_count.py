"""Count the SQL statements the app sends while one request runs (for the no-N+1 test).

The in-process app runs its sessions on the test's own connection (tests/conftest.py: `client`),
and anything it does outside them goes through the same engine, so a listener on the engine
sees every statement. Nothing else runs during `await` of one request in these tests, so the
statements counted between entering and leaving `counting()` are that request's alone."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import event
from sqlalchemy.ext.asyncio import AsyncEngine


@dataclass
class Statements:
    texts: list[str] = field(default_factory=list)

    @property
    def count(self) -> int:
        return len(self.texts)


@contextmanager
def counting(engine: AsyncEngine) -> Iterator[Statements]:
    """The statements sent through `engine` while the block runs (SAVEPOINTs included)."""
    seen = Statements()

    def record(*args: Any) -> None:
        seen.texts.append(str(args[2]))  # (conn, cursor, statement, parameters, context, many)

    event.listen(engine.sync_engine, "before_cursor_execute", record)
    try:
        yield seen
    finally:
        event.remove(engine.sync_engine, "before_cursor_execute", record)
