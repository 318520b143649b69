"""One leader through a silent network partition: the leader's lock connection goes through a
TCP proxy of the test's own, which then blackholes it. The leader cannot confirm its lock, so
it stops leading; the database ends the silent session on its side, so the lock is freed;
a standby leads within 30 s; and at no moment do both lead."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

import pytest
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from service.core.settings import Settings
from service.jobs.scheduler import Scheduler, job_context
from tests.db_proxy import DatabaseProxy

TAKE_OVER_WITHIN = 30.0


@pytest.fixture
def factory(
    committing_factory: async_sessionmaker[AsyncSession],
) -> async_sessionmaker[AsyncSession]:
    return committing_factory


async def _until(
    condition: Callable[[], bool], within: float, watch: list[Callable[[], bool]]
) -> float:
    """Seconds until `condition()` holds, checking every 0.1 s that no two lead at once."""
    started = time.monotonic()
    while not condition():
        assert not all(leads() for leads in watch), "two leaders at once"
        assert time.monotonic() - started < within, "did not happen in time"
        await asyncio.sleep(0.1)
    return time.monotonic() - started


async def test_a_partitioned_leader_steps_down_and_a_standby_leads_within_30_s(
    database_url: str, factory: async_sessionmaker[AsyncSession]
):
    proxy = await DatabaseProxy(database_url).start()
    direct = Settings(database_url=database_url, scheduler=True, webhook_allow_private=True)
    behind_proxy = direct.model_copy(update={"database_url": proxy.url()})
    leader = Scheduler(job_context(behind_proxy, factory, None))
    standby = Scheduler(job_context(direct, factory, None))
    both = [lambda: leader.is_leader, lambda: standby.is_leader]
    await leader.start()
    try:
        await _until(lambda: leader.is_leader, 15, both)
        await standby.start()
        await asyncio.sleep(4)  # the standby has asked for the lock at least once
        assert (leader.is_leader, standby.is_leader) == (True, False)

        proxy.set("blackhole")
        stepped_down = await _until(lambda: not leader.is_leader, TAKE_OVER_WITHIN, both)
        taken_over = await _until(lambda: standby.is_leader, TAKE_OVER_WITHIN, both)
        assert stepped_down + taken_over < TAKE_OVER_WITHIN
        assert not leader.is_leader
    finally:
        await standby.stop()
        await leader.stop()
        await proxy.stop()
