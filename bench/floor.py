"""The floor of a keyed read: what each part of `GET /v1/me` costs on its own, in CPU time per
call, next to the ceiling's own work, measured in one process on one database.

Run by hand: `.venv/bin/python -m bench.floor [--calls N]`. It starts a throwaway embedded
PostgreSQL (or uses DATABASE_URL: a scratch database, please), migrates it, makes one key, and
times each part alone, in process on uvloop as `ensemble serve` runs (no sockets: HTTP parsing
and the socket write cost both servers the same), as the median of seven rounds of N calls of
the process's CPU time:

- the ceiling's request: a bare FastAPI route answering the one psycopg row of
  `bench/ceiling.py` (an autocommit connection of its own);
- Ensemble's middlewares: its `/healthz` (every middleware, no database, not rate limited)
  against the same bare FastAPI route answering `/healthz`;
- the unit of work's read session: session, connection checked out and back, closed;
- the key lookup as Ensemble runs it (one statement on the session's connection, through
  SQLAlchemy) and the same statement on the psycopg connection underneath;
- the rate limiter of a keyed request: the address's failures, then the key's count (Redis on
  127.0.0.1:6379);
- and one access-log line (uvicorn's formatter, with the redaction every record passes).

It prints each part and the best ratio to the ceiling a keyed read of this design could reach
if everything but the parts it cannot drop (the key lookup's statement, the limiter's two
counters, the access log, the middlewares' share) cost nothing. Each part is timed warm and
alone, so the sum is a lower bound: inside a whole request the same code runs colder. Numbers
are for comparing on one machine; read the ratios.
"""

from __future__ import annotations

import argparse
import logging
import logging.config
import os
import statistics
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import psycopg
import uvloop
from fastapi import FastAPI
from starlette.types import ASGIApp, Message
from uvicorn.config import LOGGING_CONFIG

from bench.scratch import scratch_database
from routers.rate_limit import Limiter
from service import bootstrap
from service.app import create_app
from service.core import migrate
from service.core.auth import _KEY_LOOKUP, hash_secret
from service.core.db import make_async_engine, make_read_session_factory
from service.core.settings import Settings

ROUNDS = 7
ONE_ROW = "SELECT id, name, role, organization_id, therapist_id FROM api_keys WHERE id = %s"


def scope(path: str) -> dict[str, Any]:
    return {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "GET",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "root_path": "",
        "headers": [(b"host", b"127.0.0.1")],
        "client": ("127.0.0.1", 40000),
        "server": ("127.0.0.1", 8000),
        "state": {},
    }


def caller(app: ASGIApp, path: str) -> Callable[[], Awaitable[None]]:

    async def receive() -> Message:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def call() -> None:
        status: list[int] = []

        async def send(message: Message) -> None:
            if message["type"] == "http.response.start":
                status.append(message["status"])

        await app(scope(path), receive, send)
        if status != [200]:
            raise RuntimeError(f"{path} answered {status}")

    return call


async def cpu_ms(call: Callable[[], Awaitable[Any]], calls: int) -> float:
    """Median over ROUNDS of the process's CPU time per call, after a warm-up."""
    for _ in range(min(calls, 200)):
        await call()
    rounds = []
    for _ in range(ROUNDS):
        began = time.process_time()
        for _ in range(calls):
            await call()
        rounds.append((time.process_time() - began) * 1000 / calls)
    return statistics.median(rounds)


def bare_app(connection: psycopg.AsyncConnection[Any]) -> FastAPI:
    app = FastAPI()

    @app.get("/healthz")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/row/{key_id}")
    async def row(key_id: uuid.UUID) -> dict[str, Any]:
        found = await (await connection.execute(ONE_ROW, (key_id,))).fetchone()
        return {"id": found[0], "name": found[1]} if found else {}

    return app


def access_logger() -> logging.Logger:
    """uvicorn's own access log configuration, written to a null stream."""
    config = {**LOGGING_CONFIG, "disable_existing_loggers": False}
    config["handlers"] = {
        name: {**handler, "stream": open(os.devnull, "w")}  # noqa: SIM115 (process lifetime)
        for name, handler in LOGGING_CONFIG["handlers"].items()
    }
    logging.config.dictConfig(config)
    return logging.getLogger("uvicorn.access")


async def run(url: str, calls: int) -> None:
    migrate.upgrade(url)
    settings = Settings(
        database_url=url,
        rate_limit="100000000/minute",  # counts, never refuses
        rate_limit_prefix=f"floor-{uuid.uuid4().hex[:8]}",
    )
    digest = hash_secret(await bootstrap.create_key(settings, role="admin", name="floor"))
    parts: dict[str, float] = {}
    async with await psycopg.AsyncConnection.connect(url, autocommit=True) as own:
        key_id = (await (await own.execute("SELECT id FROM api_keys LIMIT 1")).fetchone() or [0])[0]
        bare = bare_app(own)
        parts["ceiling: bare FastAPI route + one psycopg row"] = await cpu_ms(
            caller(bare, f"/row/{key_id}"), calls
        )
        bare_healthz = await cpu_ms(caller(bare, "/healthz"), calls)

    app = create_app(settings)
    engine = make_async_engine(url, pool_size=2)
    reads = make_read_session_factory(engine)
    limiter = Limiter(settings)
    log = access_logger()
    try:
        async with app.router.lifespan_context(app):
            ours = await cpu_ms(caller(app, "/healthz"), calls)
            parts["Ensemble's middlewares (its /healthz minus the bare one)"] = ours - bare_healthz

            # As the unit of work runs a read: no commit when nothing was added to the session.
            async def session_only() -> None:
                async with reads() as db:
                    await db.connection()

            async def through_sqlalchemy() -> None:
                async with reads() as db:
                    connection = await db.connection()
                    (await connection.exec_driver_sql(_KEY_LOOKUP, (digest,))).first()

            session = await cpu_ms(session_only, calls)
            parts["read session: connection checked out and back"] = session
            parts["key lookup through SQLAlchemy (beyond the session)"] = (
                await cpu_ms(through_sqlalchemy, calls) - session
            )
            async with reads() as db:
                connection = await db.connection()
                driver = (await connection.get_raw_connection()).driver_connection
                assert driver is not None

                async def on_the_driver() -> None:
                    await (await driver.execute(_KEY_LOOKUP, (digest,), prepare=True)).fetchone()

                parts["the same statement on the psycopg connection"] = await cpu_ms(
                    on_the_driver, calls
                )

            async def limited() -> None:
                await limiter.peek(limiter.per_address, "failed:127.0.0.1")
                await limiter.hit(limiter.per_key, "key:" + digest)

            parts["rate limiter: the address's failures, the key's count"] = await cpu_ms(
                limited, calls
            )

            async def log_line() -> None:
                log.info('%s - "%s %s HTTP/%s" %d', "127.0.0.1:40000", "GET", "/v1/me", "1.1", 200)

            parts["one access-log line"] = await cpu_ms(log_line, calls)
    finally:
        await engine.dispose()

    width = max(len(name) for name in parts)
    for name, ms in parts.items():
        print(f"{name:{width}}  {ms:6.3f} ms")
    ceiling = parts["ceiling: bare FastAPI route + one psycopg row"]
    floor = (
        ceiling
        + parts["Ensemble's middlewares (its /healthz minus the bare one)"]
        + parts["rate limiter: the address's failures, the key's count"]
        + parts["one access-log line"]
    )
    print(
        f"\nthe ceiling's request {ceiling:.3f} ms; a keyed read whose own work cost nothing but "
        f"its middlewares, limiter and access log: {floor:.3f} ms, at best "
        f"{ceiling / floor:.2f} of the ceiling's req/s"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--calls", type=int, default=1000)
    args = parser.parse_args()
    with scratch_database(os.environ.get("DATABASE_URL")) as url:
        uvloop.run(run(url, args.calls))


if __name__ == "__main__":
    main()
