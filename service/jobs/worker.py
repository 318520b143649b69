"""The processes that run jobs: `ensemble worker` (until SIGTERM) and `ensemble jobs run NAME`."""

from __future__ import annotations

import asyncio
import signal
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from models.jobs import JobOutcome
from service.core import process
from service.core.db import Deadlines, make_async_engine, make_session_factory
from service.core.settings import Settings
from service.integrations import stripe_api
from service.jobs.definitions import JobContext, Summary
from service.jobs.scheduler import Scheduler, job_context, run_job


@asynccontextmanager
async def _context(settings: Settings) -> AsyncIterator[JobContext]:
    assert settings.database_url
    engine = make_async_engine(
        settings.database_url,
        pool_size=settings.db_pool_size,
        deadlines=Deadlines.for_jobs(settings),
    )
    ctx = job_context(settings, make_session_factory(engine), stripe_api.make_client(settings))
    try:
        yield ctx
    finally:
        await ctx.deliverer.aclose()
        await engine.dispose()


async def run_until_stopped(settings: Settings) -> None:
    stopped = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stopped.set)
    async with _context(settings) as ctx:
        scheduler = Scheduler(ctx)
        await scheduler.start()
        process.settle_after_startup()
        try:
            await stopped.wait()
        finally:
            await scheduler.stop()


async def run_once(settings: Settings, name: str) -> tuple[JobOutcome, Summary]:
    async with _context(settings) as ctx:
        return await run_job(ctx, name)
