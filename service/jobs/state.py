"""What any process can tell about the jobs: last runs and the leader, kept in the database by
whichever process ran them, and read by `GET /v1/jobs` on any API replica."""

from __future__ import annotations

import json
import os
import socket
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import select, text
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from sqlmodel import col

from models.base import utcnow
from models.jobs import JobList, JobOutcome, JobRead, JobState, LastRun, LeaderRead
from models.jobs import SchedulerLeader as Leader
from models.types import Role
from service.core.auth import Principal, require_role
from service.core.db import transaction
from service.core.settings import Settings
from service.jobs.definitions import JOBS

# A leader whose heartbeat is older than this is gone (its lock is free for a standby).
LEADER_STALE = timedelta(seconds=30)

_FINISHED = text(
    """
    INSERT INTO job_states AS s
        (name, last_started_at, last_finished_at, last_outcome, last_detail, next_run_at)
    VALUES (:name, :started, clock_timestamp(), :outcome, CAST(:detail AS jsonb), :next_run_at)
    ON CONFLICT (name) DO UPDATE SET
        last_started_at = excluded.last_started_at,
        last_finished_at = excluded.last_finished_at,
        last_outcome = excluded.last_outcome,
        last_detail = excluded.last_detail,
        next_run_at = coalesce(excluded.next_run_at, s.next_run_at)
    """
)
_NEXT_RUNS = text(
    """
    INSERT INTO job_states AS s (name, next_run_at)
    SELECT name, next_run_at
    FROM jsonb_to_recordset(CAST(:jobs AS jsonb)) AS j(name text, next_run_at timestamptz)
    ON CONFLICT (name) DO UPDATE SET next_run_at = excluded.next_run_at
    """
)
_LEAD = text(
    """
    INSERT INTO scheduler_leader AS l (id, pid, hostname, since, heartbeat_at)
    VALUES (1, :pid, :hostname, now(), now())
    ON CONFLICT (id) DO UPDATE SET
        pid = excluded.pid, hostname = excluded.hostname,
        since = CASE WHEN NOT :acquired AND l.pid = excluded.pid
                          AND l.hostname = excluded.hostname
                     THEN l.since ELSE excluded.since END,
        heartbeat_at = now()
    """
)


async def record_run(
    factory: async_sessionmaker[AsyncSession],
    name: str,
    *,
    started: datetime,
    outcome: JobOutcome,
    detail: dict[str, Any],
    next_run_at: datetime | None = None,
) -> None:
    async with transaction(factory) as db:
        await db.execute(
            _FINISHED,
            {
                "name": name,
                "started": started,
                "outcome": outcome.value,
                "detail": json.dumps(detail, default=str),
                "next_run_at": next_run_at,
            },
        )


async def record_next_runs(
    factory: async_sessionmaker[AsyncSession], next_runs: dict[str, datetime | None]
) -> None:
    rows = [{"name": n, "next_run_at": t.isoformat() if t else None} for n, t in next_runs.items()]
    async with transaction(factory) as db:
        await db.execute(_NEXT_RUNS, {"jobs": json.dumps(rows)})


async def last_runs(factory: async_sessionmaker[AsyncSession]) -> dict[str, datetime]:
    async with factory() as db:
        rows = await db.execute(
            select(col(JobState.name), col(JobState.last_started_at)).where(
                col(JobState.last_started_at).is_not(None)
            )
        )
        return {name: started for name, started in rows.all() if started is not None}


async def record_leader(factory: async_sessionmaker[AsyncSession], *, acquired: bool) -> None:
    """Claim (just `acquired` the lock) or refresh (heartbeat) the leader row for this process;
    only the lock holder calls it."""
    async with transaction(factory) as db:
        await db.execute(
            _LEAD, {"pid": os.getpid(), "hostname": socket.gethostname(), "acquired": acquired}
        )


async def list_jobs(db: AsyncSession, principal: Principal, settings: Settings) -> JobList:
    require_role(principal, (Role.admin,), "read the scheduler's jobs")
    states = {s.name: s for s in (await db.execute(select(JobState))).scalars()}
    leader = (
        await db.execute(select(Leader).where(col(Leader.heartbeat_at) > utcnow() - LEADER_STALE))
    ).scalar_one_or_none()
    now = utcnow()
    shown = []
    for job in JOBS.values():
        state = states.get(job.name)
        next_run = state.next_run_at if state and leader else None
        if next_run is None:
            next_run = job.trigger(settings).get_next_fire_time(None, now)
        last_run = None
        if state and state.last_started_at:
            last_run = LastRun(
                started_at=state.last_started_at,
                finished_at=state.last_finished_at,
                outcome=JobOutcome(state.last_outcome) if state.last_outcome else None,
                detail=state.last_detail,
            )
        shown.append(
            JobRead(
                name=job.name,
                description=job.description,
                schedule=job.schedule,
                next_run_at=next_run,
                last_run=last_run,
            )
        )
    return JobList(
        data=shown,
        leader=LeaderRead(pid=leader.pid, hostname=leader.hostname, since=leader.since)
        if leader
        else None,
    )
