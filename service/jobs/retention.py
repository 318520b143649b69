"""Retention: what Ensemble forgets, and when (the `apply-retention` job).

Each kind of record has a period in settings; rows older than it are deleted oldest first, at
most `batch_size` rows per statement, each statement in its own short transaction (so no long
lock, no huge WAL burst, and a concurrent writer waits at most one batch), until none is left
or the time budget is spent — the next run goes on where this one stopped.

- Idempotency records older than `idempotency_retention_hours` (the key no longer replays).
- Webhook deliveries that are finished — succeeded, or cancelled because their endpoint was
  deleted — older than `delivered_event_retention_days`, with their attempt log (ON DELETE
  CASCADE); then outbox events of that age with no delivery left. A pending delivery, or a
  failed one kept for a manual retry, is never deleted, and neither is its event.
- Audit events older than `audit_retention_days`.

Ages count from each row's `created_at`, against the database's clock.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

from sqlalchemy import TextClause, text
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from service.core.db import transaction
from service.core.settings import Settings

BATCH_SIZE = 1000
TIME_BUDGET = 60.0  # seconds per run; what is left waits for the next run

# Each statement deletes one batch of the oldest expired rows. SKIP LOCKED: a row another
# transaction holds (a delivery being retried by hand, a key being claimed) waits for next time.
_IDEMPOTENCY = text(
    """
    DELETE FROM idempotency_keys WHERE id IN (
        SELECT id FROM idempotency_keys
        WHERE created_at < now() - make_interval(hours => :hours)
        ORDER BY created_at LIMIT :batch FOR UPDATE SKIP LOCKED)
    """
)
# Finished: succeeded, or cancelled (its endpoint is gone); the partial index
# ix_webhook_deliveries_finished has the same predicate.
_DELIVERIES = text(
    """
    DELETE FROM webhook_deliveries WHERE id IN (
        SELECT id FROM webhook_deliveries
        WHERE status IN ('succeeded', 'cancelled')
          AND created_at < now() - make_interval(days => :days)
        ORDER BY created_at LIMIT :batch FOR UPDATE SKIP LOCKED)
    """
)
_EVENTS = text(
    """
    DELETE FROM webhook_events WHERE id IN (
        SELECT e.id FROM webhook_events AS e
        WHERE e.created_at < now() - make_interval(days => :days)
          AND NOT EXISTS (SELECT 1 FROM webhook_deliveries AS d WHERE d.event_id = e.id)
        ORDER BY e.created_at LIMIT :batch FOR UPDATE SKIP LOCKED)
    """
)
_AUDIT = text(
    """
    DELETE FROM audit_events WHERE id IN (
        SELECT id FROM audit_events
        WHERE created_at < now() - make_interval(days => :days)
        ORDER BY created_at LIMIT :batch FOR UPDATE SKIP LOCKED)
    """
)


def _rules(settings: Settings) -> tuple[tuple[str, TextClause, dict[str, int]], ...]:
    """What is deleted, in order (deliveries before the events they point at)."""
    delivered = {"days": settings.delivered_event_retention_days}
    return (
        ("idempotency_records", _IDEMPOTENCY, {"hours": settings.idempotency_retention_hours}),
        ("webhook_deliveries", _DELIVERIES, delivered),
        ("webhook_events", _EVENTS, delivered),
        ("audit_events", _AUDIT, {"days": settings.audit_retention_days}),
    )


@dataclass
class RetentionRun:
    deleted: dict[str, int] = field(default_factory=dict)
    statements: int = 0
    complete: bool = True

    def as_dict(self) -> dict[str, object]:
        return {"deleted": self.deleted, "statements": self.statements, "complete": self.complete}


async def apply_retention(
    factory: async_sessionmaker[AsyncSession],
    settings: Settings,
    *,
    batch_size: int = BATCH_SIZE,
    budget: float = TIME_BUDGET,
    clock: Callable[[], float] = time.monotonic,
) -> RetentionRun:
    """Delete every expired row, `batch_size` at a time, until done or `budget` seconds pass."""
    run = RetentionRun()
    deadline = clock() + budget
    for name, statement, periods in _rules(settings):
        run.deleted[name] = 0
        while True:
            if clock() >= deadline:
                run.complete = False
                return run
            async with transaction(factory) as db:
                result = await db.execute(statement, {**periods, "batch": batch_size})
            removed = int(getattr(result, "rowcount", 0))
            run.statements += 1
            run.deleted[name] += removed
            if removed < batch_size:
                break
    return run
