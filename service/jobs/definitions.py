"""The background jobs, defined in code. Each takes the context (ids and factories, never ORM
objects), opens its own short transactions, is safe to run twice or in two processes at once,
and answers a small summary for `GET /v1/jobs` and `ensemble jobs run`."""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import date, timedelta
from typing import Any

import stripe
from apscheduler.triggers.base import BaseTrigger
from apscheduler.triggers.cron import CronTrigger
from apscheduler.triggers.interval import IntervalTrigger
from sqlalchemy import select, text
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from sqlmodel import col

from models.billing import Invoice, InvoiceRunCreate, InvoiceStatus
from models.programs import Program
from models.sessions import Session, SessionStatus
from models.webhooks import EventType
from service.billing import invoices
from service.core import outbox
from service.core.auth import SYSTEM
from service.core.clock import local_today
from service.core.db import transaction
from service.core.errors import DomainError
from service.core.settings import Settings
from service.integrations import stripe_sync
from service.integrations.webhook_delivery import Deliverer
from service.jobs import retention
from service.programs import materialize, session_records

Summary = dict[str, Any]
REMINDER_AHEAD = timedelta(hours=24)
STRIPE_BATCH = 50


@dataclass
class JobContext:
    settings: Settings
    session_factory: async_sessionmaker[AsyncSession]
    deliverer: Deliverer
    stripe: stripe.StripeClient | None


@dataclass(frozen=True)
class Job:
    name: str
    description: str
    schedule: str
    trigger: Callable[[Settings], BaseTrigger]
    run: Callable[[JobContext], Awaitable[Summary]]


async def extend_horizon(ctx: JobContext) -> Summary:
    async with transaction(ctx.session_factory) as db:
        added = await materialize.extend_horizon(
            db,
            today=local_today(ctx.settings.timezone),
            weeks=ctx.settings.horizon_weeks,
        )
    return {"sessions_added": added}


def last_month(today: date) -> tuple[date, date]:
    end = today.replace(day=1) - timedelta(days=1)
    return end.replace(day=1), end


async def draft_invoices(ctx: JobContext) -> Summary:
    """Last month's invoice run (in the provider's zone); with `issue`, every draft up to the end
    of last month is issued too, each in its own transaction (one failing leaves the others)."""
    mode = ctx.settings.auto_invoice
    if mode == "off":
        return {"mode": mode}
    start, end = last_month(local_today(ctx.settings.timezone))
    async with transaction(ctx.session_factory) as db:
        drafts = await invoices.run(
            db, SYSTEM, InvoiceRunCreate(period_start=start, period_end=end)
        )
    summary: Summary = {
        "mode": mode,
        "period_start": start.isoformat(),
        "period_end": end.isoformat(),
        "drafts": len(drafts.data),
    }
    if mode == "issue":
        async with ctx.session_factory() as db:
            due = (
                await db.execute(
                    select(col(Invoice.id)).where(
                        col(Invoice.status) == InvoiceStatus.draft.value,
                        col(Invoice.period_end) <= end,
                        col(Invoice.total_cents) > 0,
                    )
                )
            ).scalars()
            to_issue = list(due)
        issued, refused = 0, {}
        for invoice_id in to_issue:
            try:
                async with transaction(ctx.session_factory) as db:
                    await invoices.issue(
                        db,
                        SYSTEM,
                        invoice_id,
                        stripe_enabled=ctx.stripe is not None,
                        settings=ctx.settings,
                    )
                issued += 1
            except DomainError as exc:  # e.g. issued by hand meanwhile; the others go on
                refused[str(invoice_id)] = exc.detail
        summary["issued"] = issued
        if refused:
            summary["not_issued"] = refused
    return summary


async def sync_stripe(ctx: JobContext) -> Summary:
    """Resume pushes that failed or never ran; each failure waits longer (see stripe_sync)."""
    if ctx.stripe is None:
        return {"skipped": "Stripe is not configured (STRIPE_API_KEY)"}
    async with ctx.session_factory() as db:
        due = await stripe_sync.invoices_to_resume(db, limit=STRIPE_BATCH)
    outcomes: dict[str, int] = {}
    for invoice_id in due:
        status = await stripe_sync.sync_invoice(
            ctx.session_factory, ctx.stripe, invoice_id, provider_zone=ctx.settings.timezone
        )
        key = status.value if status else "skipped"
        outcomes[key] = outcomes.get(key, 0) + 1
    return {"invoices": len(due), **outcomes}


async def deliver_webhooks(ctx: JobContext) -> Summary:
    return (await ctx.deliverer.deliver_due()).as_dict()


async def mark_overdue(ctx: JobContext) -> Summary:
    """`invoice.overdue` once per invoice: the first run after its due date while it is open."""
    today = local_today(ctx.settings.timezone)
    async with transaction(ctx.session_factory) as db:
        overdue = (
            await db.execute(
                text(
                    "UPDATE invoices SET overdue_notified_at = now() "
                    f"WHERE status = '{InvoiceStatus.open.value}' AND due_date < :today "
                    "AND overdue_notified_at IS NULL "
                    "RETURNING id"
                ),
                {"today": today},
            )
        ).scalars()
        ids = list(overdue)
        shown = [
            await invoices.detail(db, invoice)
            for invoice in (
                await db.execute(
                    select(Invoice).where(col(Invoice.id).in_(ids)).order_by(col(Invoice.number))
                )
            ).scalars()
        ]
        await outbox.publish_many(db, EventType.invoice_overdue, shown)
    return {"invoices": len(ids)}


async def remind_sessions(ctx: JobContext) -> Summary:
    """`session.upcoming` once per session and start time, for sessions starting within a day."""
    async with transaction(ctx.session_factory) as db:
        reminded = (
            await db.execute(
                text(
                    "INSERT INTO session_reminders (session_id, starts_at, sent_at) "
                    "SELECT id, starts_at, now() FROM sessions "
                    f"WHERE status = '{SessionStatus.scheduled.value}' AND starts_at > now() "
                    "AND starts_at <= now() + make_interval(secs => :ahead) "
                    "ON CONFLICT DO NOTHING RETURNING session_id"
                ),
                {"ahead": REMINDER_AHEAD.total_seconds()},
            )
        ).scalars()
        ids: list[uuid.UUID] = list(reminded)
        rows = await db.execute(
            select(Session, col(Program.timezone))
            .join(Program, col(Program.id) == Session.program_id)
            .where(col(Session.id).in_(ids))
            .order_by(col(Session.starts_at), col(Session.id))
        )
        await outbox.publish_many(
            db, EventType.session_upcoming, [session_records.to_read(s, tz) for s, tz in rows.all()]
        )
    return {"sessions": len(ids)}


async def apply_retention(ctx: JobContext) -> Summary:
    """Forget what is past its retention period (see `retention`), in bounded batches."""
    return (await retention.apply_retention(ctx.session_factory, ctx.settings)).as_dict()


def _every(**interval: int) -> Callable[[Settings], BaseTrigger]:
    return lambda settings: IntervalTrigger(**interval, timezone=settings.timezone)


def _cron(**fields: str | int) -> Callable[[Settings], BaseTrigger]:
    return lambda settings: CronTrigger(**fields, timezone=settings.timezone)


# The job that new events wake (see `scheduler.Scheduler.wake_deliverer`).
DELIVER_WEBHOOKS = "deliver-webhooks"

JOBS: dict[str, Job] = {
    job.name: job
    for job in (
        Job(
            "extend-horizon",
            "Fill open-ended programs with sessions up to ENSEMBLE_HORIZON_WEEKS ahead",
            "every hour",
            _every(hours=1),
            extend_horizon,
        ),
        Job(
            "draft-invoices",
            "Last month's invoice run on the 1st (ENSEMBLE_AUTO_INVOICE = off | draft | issue)",
            "monthly on the 1st at 02:00 (ENSEMBLE_TIMEZONE)",
            _cron(day=1, hour=2, minute=0),
            draft_invoices,
        ),
        Job(
            "stripe-sync",
            "Resume Stripe pushes that failed, waiting longer after each failure",
            "every minute",
            _every(minutes=1),
            sync_stripe,
        ),
        Job(
            DELIVER_WEBHOOKS,
            "Send due webhook deliveries (also woken at once by each committed event)",
            "every second, and on every new event",
            _every(seconds=1),
            deliver_webhooks,
        ),
        Job(
            "mark-overdue",
            "Emit invoice.overdue once for each open invoice past its due date",
            "hourly at :05",
            _cron(minute=5),
            mark_overdue,
        ),
        Job(
            "session-reminders",
            "Emit session.upcoming once for each session starting within 24 hours",
            "every 5 minutes",
            _every(minutes=5),
            remind_sessions,
        ),
        Job(
            "apply-retention",
            "Delete idempotency records, finished webhook deliveries and their events, and "
            "audit events older than their retention periods (ENSEMBLE_*_RETENTION_*), "
            "in batches",
            "hourly at :15",
            _cron(minute=15),
            apply_retention,
        ),
    )
}
