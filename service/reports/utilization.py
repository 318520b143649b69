"""Reports for the provider (admin, finance). Each is a few aggregate queries."""

from __future__ import annotations

import asyncio
from bisect import bisect_right
from collections import defaultdict
from datetime import date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import select, text
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col

from models.base import sql_values
from models.reports import UtilizationReport, UtilizationRow
from models.sessions import CANCELLED_STATUSES, LIVE_STATUSES, SessionStatus
from models.therapists import AvailabilityRow, Therapist, TimeOff
from models.types import Role
from service.core.auth import Principal, require_role
from service.core.clock import local_midnight
from service.core.errors import FieldError, ValidationFailed
from service.scheduling.staffing import available_spans, merged

MAX_REPORT_DAYS = 366

_SESSION_MINUTES = text(
    f"""
    SELECT s.therapist_id,
           coalesce(sum(extract(epoch FROM s.ends_at - s.starts_at) / 60) FILTER (
               WHERE s.status IN ({sql_values(LIVE_STATUSES)})), 0)::int AS scheduled,
           coalesce(sum(extract(epoch FROM s.ends_at - s.starts_at) / 60) FILTER (
               WHERE s.status = '{SessionStatus.completed.value}'), 0)::int AS delivered,
           count(*) FILTER (WHERE s.status IN ({sql_values(CANCELLED_STATUSES)})) AS cancelled
    FROM sessions s
    JOIN unnest(CAST(:therapists AS uuid[]), CAST(:lows AS timestamptz[]),
                CAST(:highs AS timestamptz[])) AS b(therapist_id, low, high)
      ON b.therapist_id = s.therapist_id AND s.starts_at >= b.low AND s.starts_at < b.high
    GROUP BY s.therapist_id
    """
)


def _check_period(start: date, end: date) -> None:
    if end < start:
        raise ValidationFailed([FieldError("to", "must not be before from", "order", "query")])
    if (end - start).days >= MAX_REPORT_DAYS:
        raise ValidationFailed(
            [
                FieldError(
                    "to", f"the period may span at most {MAX_REPORT_DAYS} days", "too_long", "query"
                )
            ]
        )


async def utilization(
    db: AsyncSession, principal: Principal, *, start: date, end: date
) -> UtilizationReport:
    """Per therapist, over local dates `start`..`end` (inclusive, in each therapist's zone):
    minutes of weekly availability less time off, minutes booked (scheduled, completed and
    no-show sessions), minutes delivered (completed), and cancelled sessions."""
    require_role(principal, (Role.admin, Role.finance), "read reports")
    _check_period(start, end)
    therapists = list((await db.execute(select(Therapist).order_by(col(Therapist.name)))).scalars())
    windows: dict[Any, list[AvailabilityRow]] = defaultdict(list)
    for window in (await db.execute(select(AvailabilityRow))).scalars():
        windows[window.therapist_id].append(window)
    # Time off anywhere near the period (a day of margin covers every zone's offset).
    low = datetime.combine(start - timedelta(days=1), datetime.min.time(), ZoneInfo("UTC"))
    high = datetime.combine(end + timedelta(days=2), datetime.min.time(), ZoneInfo("UTC"))
    time_off: dict[Any, list[TimeOff]] = defaultdict(list)
    for off in (
        await db.execute(
            select(TimeOff).where(col(TimeOff.starts_at) < high, col(TimeOff.ends_at) > low)
        )
    ).scalars():
        time_off[off.therapist_id].append(off)
    # The period's local dates as instants, in each therapist's zone (Python's rules).
    booked = {
        row.therapist_id: row
        for row in await db.execute(
            _SESSION_MINUTES,
            {
                "therapists": [t.id for t in therapists],
                "lows": [local_midnight(start, t.timezone) for t in therapists],
                "highs": [local_midnight(end + timedelta(days=1), t.timezone) for t in therapists],
            },
        )
    }
    # Pure arithmetic over days, windows and time off: off the event loop, so a large period
    # never stalls other requests.
    available = await asyncio.to_thread(
        lambda: {
            t.id: _available_minutes(t, windows[t.id], time_off[t.id], start, end)
            for t in therapists
        }
    )
    rows = []
    for therapist in therapists:
        sessions = booked.get(therapist.id)
        if not therapist.active and sessions is None:
            continue
        rows.append(
            UtilizationRow(
                therapist_id=therapist.id,
                name=therapist.name,
                available_minutes=available[therapist.id],
                scheduled_minutes=int(sessions.scheduled) if sessions else 0,
                delivered_minutes=int(sessions.delivered) if sessions else 0,
                cancelled_sessions=int(sessions.cancelled) if sessions else 0,
            )
        )
    return UtilizationReport(data=rows)


def _available_minutes(
    therapist: Therapist,
    windows: list[AvailabilityRow],
    time_off: list[TimeOff],
    start: date,
    end: date,
) -> int:
    """Real elapsed minutes of the weekly windows on each local date, less time off (time off
    that overlaps other time off counts once)."""
    zone = ZoneInfo(therapist.timezone)
    by_day: dict[str, list[AvailabilityRow]] = defaultdict(list)
    for window in windows:
        by_day[window.weekday].append(window)
    away = merged((off.starts_at, off.ends_at) for off in time_off)
    away_starts = [opens for opens, _ in away]
    seconds = 0.0
    for opens, closes in available_spans(by_day, zone, start, end):
        seconds += (closes - opens).total_seconds()
        # Only the time off that starts before the window closes can overlap it.
        for off_start, off_end in away[max(bisect_right(away_starts, opens) - 1, 0) :]:
            if off_start >= closes:
                break
            overlap = min(closes, off_end) - max(opens, off_start)
            seconds -= max(overlap.total_seconds(), 0)
    return int(seconds // 60)
