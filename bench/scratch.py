"""Where a benchmark keeps its data: a throwaway embedded PostgreSQL, started for the run and
deleted after it; or, for a benchmark run by hand that says so in its docstring, the server
DATABASE_URL names (a scratch database, please: benchmarks fill it)."""

from __future__ import annotations

import contextlib
import tempfile
from collections.abc import Iterator
from pathlib import Path

from service.core.embedded import EmbeddedPostgres


@contextlib.contextmanager
def embedded_server() -> Iterator[EmbeddedPostgres]:
    """An embedded PostgreSQL in a new temporary directory, stopped and deleted at the end."""
    with tempfile.TemporaryDirectory(prefix="ensemble-bench-", ignore_cleanup_errors=True) as tmp:
        server = EmbeddedPostgres(Path(tmp) / "pgdata", delete_on_stop=True)
        server.start()
        try:
            yield server
        finally:
            server.stop()


@contextlib.contextmanager
def scratch_database(database_url: str | None = None, name: str = "bench") -> Iterator[str]:
    """`database_url` when given, else database `name` on a throwaway embedded server."""
    if database_url:
        yield database_url
        return
    with embedded_server() as server:
        yield server.ensure_database(name)
