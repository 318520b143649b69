"""Running a benchmark's hand-written SQL: a script of statements, one after another."""

from __future__ import annotations

from typing import Any

import psycopg


def run_script(conn: psycopg.Connection[Any], script: str, params: Any = None) -> None:
    """Each statement of `script` (statements end with ';' at the end of a line), with the
    same parameters; the caller commits."""
    for statement in filter(str.strip, script.split(";\n")):
        conn.execute(statement, params)
