"""The ceiling bench/http.py compares Ensemble with: a bare FastAPI app answering one indexed
psycopg query per request, on the same database, served by the same uvicorn, one process.

It has none of Ensemble's work (no authentication, no unit of work, no ORM, no rate limit, no
access log): what is left is the framework, the driver and one database round trip. Ten
autocommit connections are kept open in a queue (a pool needs nothing more for one query).

Run by bench/http.py as `uvicorn bench.ceiling:app` with CEILING_DATABASE_URL set.
"""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import psycopg
from fastapi import FastAPI, HTTPException
from psycopg.rows import dict_row

CONNECTIONS = 10


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    pool: asyncio.Queue[psycopg.AsyncConnection[dict[str, Any]]] = asyncio.Queue()
    for _ in range(CONNECTIONS):
        pool.put_nowait(
            await psycopg.AsyncConnection.connect(
                os.environ["CEILING_DATABASE_URL"], autocommit=True, row_factory=dict_row
            )
        )
    app.state.pool = pool
    yield
    while not pool.empty():
        await pool.get_nowait().close()


app = FastAPI(lifespan=lifespan)


@app.get("/sessions/{session_id}")
async def one_session(session_id: uuid.UUID) -> dict[str, Any]:
    pool = app.state.pool
    conn = await pool.get()
    try:
        row = await (
            await conn.execute(
                "SELECT id, program_id, starts_at, ends_at, status FROM sessions WHERE id = %s",
                (session_id,),
            )
        ).fetchone()
    finally:
        pool.put_nowait(conn)
    if row is None:
        raise HTTPException(404)
    return row
