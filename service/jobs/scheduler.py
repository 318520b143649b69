"""APScheduler with one leader across every process and machine.

Each process runs an APScheduler 3 `AsyncIOScheduler` (in-memory job store, jobs from
`definitions.JOBS`), started paused. A dedicated PostgreSQL connection — not one from the pool,
whose connections come and go — tries `pg_try_advisory_lock`; the process that gets it resumes
its scheduler and is the leader until that connection ends. PostgreSQL releases a session lock
when its connection closes, so a leader that is killed (`kill -9`), or whose connection dies,
frees the lock at once; standbys try every few seconds and one takes over well within 15 s.
TCP keepalives bound how long a silently vanished leader can keep the lock.

The same connection LISTENs for new outbox events and wakes the `deliver-webhooks` job, and
beats a heartbeat (the leader row for `GET /v1/jobs`, each job's next run).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from datetime import UTC, datetime
from typing import Any

import psycopg
import stripe
from apscheduler.schedulers.asyncio import AsyncIOScheduler
from apscheduler.triggers.interval import IntervalTrigger
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from models.base import utcnow
from models.jobs import JobOutcome
from service.core import encryption, metrics
from service.core.db import KEEPALIVE
from service.core.outbox import CHANNEL
from service.core.settings import Settings
from service.integrations.webhook_delivery import Deliverer
from service.jobs import state
from service.jobs.definitions import DELIVER_WEBHOOKS, JOBS, JobContext, Summary

log = logging.getLogger(__name__)

LOCK_KEY = 0x656E_7365_6D62  # "ensemb": the one scheduler lock
RETRY_EVERY = 3.0  # a standby asks for the lock this often
HEARTBEAT_EVERY = 5.0
# A leader that cannot confirm its lock (a heartbeat on the lock's connection) within this
# many seconds stops leading and cancels its running jobs at once...
HEARTBEAT_DEADLINE = 3.0
# ...well before the database ends the lock's session on its side: after this many seconds
# without a heartbeat (idle_session_timeout), or when its own TCP keepalives find the client
# gone. Only then is the lock free for a standby, so two leaders never run jobs at once: the
# old one stopped at most HEARTBEAT_EVERY + HEARTBEAT_DEADLINE seconds after its last
# heartbeat, the lock is freed LOCK_SESSION_IDLE seconds after it, and a standby asks every
# RETRY_EVERY seconds: it leads within about LOCK_SESSION_IDLE + RETRY_EVERY of a partition.
LOCK_SESSION_IDLE = 20.0
LOCK_SESSION_OPTIONS = (
    f"-c idle_session_timeout={int(LOCK_SESSION_IDLE * 1000)} "
    "-c tcp_keepalives_idle=5 -c tcp_keepalives_interval=2 -c tcp_keepalives_count=3"
)
# On stop, running jobs get this long to finish (the deliverer sends what is in flight and
# gives back what it claimed ahead) before they are cancelled; well inside `docker stop`'s 10 s.
STOP_GRACE = 5.0


def job_context(
    settings: Settings,
    factory: async_sessionmaker[AsyncSession],
    stripe_client: stripe.StripeClient | None,
) -> JobContext:
    return JobContext(
        settings=settings,
        session_factory=factory,
        deliverer=Deliverer(
            factory,
            allow_private=settings.webhook_allow_private,
            retry_delays=settings.webhook_retry_delays,
            per_endpoint=settings.webhook_slots_per_endpoint,
            keyring=encryption.keyring(settings),
        ),
        stripe=stripe_client,
    )


async def run_job(
    ctx: JobContext, name: str, *, next_run_at: datetime | None = None
) -> tuple[JobOutcome, Summary]:
    """Run one job now, record its outcome for `GET /v1/jobs`, and never raise."""
    job = JOBS[name]
    started, clock = utcnow(), time.perf_counter()
    try:
        summary = await job.run(ctx)
        outcome = JobOutcome.succeeded
    except Exception as exc:
        log.exception("job %s failed", name)
        summary, outcome = {"error": f"{type(exc).__name__}: {exc}"[:500]}, JobOutcome.failed
    metrics.JOB_RUNS.labels(name, outcome.value).inc()
    metrics.JOB_DURATION.labels(name).observe(time.perf_counter() - clock)
    try:
        await state.record_run(
            ctx.session_factory,
            name,
            started=started,
            outcome=outcome,
            detail=summary,
            next_run_at=next_run_at,
        )
    except Exception:
        log.exception("could not record the run of job %s", name)
    return outcome, summary


class Scheduler:
    """The jobs of one process, run only while this process holds the scheduler lock."""

    def __init__(self, ctx: JobContext) -> None:
        self.ctx = ctx
        self.is_leader = False
        self._apscheduler = AsyncIOScheduler(
            timezone=ctx.settings.timezone,
            job_defaults={"coalesce": True, "max_instances": 1, "misfire_grace_time": 60},
        )
        self._task: asyncio.Task[None] | None = None
        self._woken_while_delivering = False
        self._stopping = False
        self._running: dict[asyncio.Task[Any], str] = {}  # job runs under way, by job name

    async def start(self) -> None:
        for job in JOBS.values():
            self._apscheduler.add_job(
                self._run,
                job.trigger(self.ctx.settings),
                args=[job.name],
                id=job.name,
                name=job.name,
            )
        # A pass still running when the next second comes is normal for deliver-webhooks.
        logging.getLogger("apscheduler.scheduler").addFilter(_SKIP_BUSY_RUNS)
        self._apscheduler.start(paused=True)
        self._task = asyncio.create_task(self._lead_when_possible(), name="scheduler-leader")

    async def stop(self) -> None:
        """Start no more jobs, let the running ones finish (cancelled after STOP_GRACE), then
        give up the lead. A job cut off mid-way is safe (each is idempotent and transactional),
        but a delivery claimed and not recorded would wait out its lease before it is resent."""
        self._stopping = True
        if self._apscheduler.running:
            self._apscheduler.pause()
        self.ctx.deliverer.stop_claiming()
        if self._running:
            _, late = await asyncio.wait(self._running, timeout=STOP_GRACE)
            for task in late:
                task.cancel()
            await asyncio.gather(*late, return_exceptions=True)
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        self._apscheduler.shutdown(wait=False)
        await self.ctx.deliverer.aclose()

    async def _run(self, name: str) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._running[task] = name
        try:
            # A delivery run woken while under way passes again: APScheduler skips a wake-up
            # while the run is on, so an event committed after its last claim would otherwise
            # wait for the next second.
            while self.is_leader and not self._stopping:
                self._woken_while_delivering = False
                job = self._apscheduler.get_job(name)
                await run_job(self.ctx, name, next_run_at=job.next_run_time if job else None)
                if not (name == DELIVER_WEBHOOKS and self._woken_while_delivering):
                    break
        finally:
            del self._running[task]

    def wake_deliverer(self) -> None:
        if not self.is_leader or self._stopping:
            return
        if DELIVER_WEBHOOKS in self._running.values():
            self._woken_while_delivering = True
            self.ctx.deliverer.poke()
        else:
            self._apscheduler.modify_job(DELIVER_WEBHOOKS, next_run_time=datetime.now(UTC))

    async def _lead_when_possible(self) -> None:
        url = self.ctx.settings.database_url
        assert url, "the scheduler needs DATABASE_URL"
        while True:
            try:
                async with await psycopg.AsyncConnection.connect(
                    url,
                    autocommit=True,
                    application_name="ensemble-scheduler",
                    options=LOCK_SESSION_OPTIONS,
                    connect_timeout=5,
                    **KEEPALIVE,
                ) as conn:
                    # Polling the database, not an in-process flag: an Event cannot help.
                    while not await _try_lock(conn):  # noqa: ASYNC110
                        await asyncio.sleep(RETRY_EVERY)
                    await self._lead(conn)
            except asyncio.CancelledError:
                self._step_down(stopping=True)
                raise
            except (psycopg.Error, OSError, TimeoutError) as exc:
                self._step_down()
                log.warning("scheduler lock connection lost (%r); retrying", exc)
            await asyncio.sleep(RETRY_EVERY)

    async def _lead(self, conn: psycopg.AsyncConnection[Any]) -> None:
        await conn.execute(f"LISTEN {CHANNEL}")
        await state.record_leader(self.ctx.session_factory, acquired=True)
        log.info("this process leads the scheduler")
        self.is_leader = True
        metrics.SCHEDULER_LEADER.set(1)
        self._apscheduler.resume()
        await self._catch_up()
        while True:
            await self._heartbeat(conn)
            async for _ in conn.notifies(timeout=HEARTBEAT_EVERY):
                self.wake_deliverer()

    async def _catch_up(self) -> None:
        """Run now what nobody ran while no process led: interval jobs whose interval has passed
        since their last run (or that never ran; deliver-webhooks always: events may have been
        committed meanwhile), and a cron job whose fire time passed since its last run (the
        1st-of-month invoice run, when every process was down at 02:00)."""
        last_runs = await state.last_runs(self.ctx.session_factory)
        now = datetime.now(UTC)
        for job in self._apscheduler.get_jobs():
            last = last_runs.get(job.id)
            trigger = job.trigger
            if isinstance(trigger, IntervalTrigger):
                missed = last is None or last + trigger.interval <= now
            else:
                upcoming = trigger.get_next_fire_time(None, last) if last else None
                missed = upcoming is not None and upcoming <= now
            if missed:
                job.modify(next_run_time=now)

    async def _heartbeat(self, conn: psycopg.AsyncConnection[Any]) -> None:
        # Raises if the lock's connection is gone, and TimeoutError if it went silent.
        async with asyncio.timeout(HEARTBEAT_DEADLINE):
            await conn.execute("SELECT 1")
        try:
            await state.record_leader(self.ctx.session_factory, acquired=False)
            await state.record_next_runs(
                self.ctx.session_factory,
                {job.id: job.next_run_time for job in self._apscheduler.get_jobs()},
            )
        except Exception:  # the pool's trouble is not the lock's: keep leading
            log.exception("scheduler heartbeat could not be recorded")

    def _step_down(self, *, stopping: bool = False) -> None:
        if self.is_leader:
            if stopping:
                log.info("this process stops and gives up leading the scheduler")
            else:
                log.warning("this process no longer leads the scheduler")
        self.is_leader = False
        metrics.SCHEDULER_LEADER.set(0)
        if self._apscheduler.running:
            self._apscheduler.pause()
        if not stopping:
            # The lock may soon be another's: nothing of this process may still be running.
            for task in self._running:
                task.cancel()


async def _try_lock(conn: psycopg.AsyncConnection[Any]) -> bool:
    row = await (await conn.execute("SELECT pg_try_advisory_lock(%s)", (LOCK_KEY,))).fetchone()
    return bool(row and row[0])


class _SkipBusyRuns(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return "maximum number of running instances reached" not in record.getMessage()


_SKIP_BUSY_RUNS = _SkipBusyRuns()
