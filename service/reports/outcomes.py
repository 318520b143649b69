"""Outcomes for the organization: sessions delivered against planned, attendance, and the
sessions' ratings on the focus areas by month, for one program or all of an organization's.

Computed in SQL, two set-based statements whatever the number of programs and sessions: the
session counts and attendance, then the ratings grouped by focus area and local month (with
the per-area totals in the same pass, by GROUPING SETS). Local dates and months come from
Python's zone rules (core.zones), never the database server's.

Suppression: a rating average is shown only over a group of at least `outcomes_min_group`
participants (those of the programs whose ratings it averages: a program's own participants,
and in an organization's rollup only the programs rated in that month and focus area, so an
individual program is never singled out by being the only one rated) and at least as many
observations (per month, and overall). Anything less is null, and
`suppressed`/`suppression_reason` say why. Counts are always shown. Notes are
never read here.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any

from sqlalchemy import func, select, text
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col

from models.base import sql_values
from models.organizations import Organization
from models.outcomes import (
    Attendance,
    FocusAreaOutcome,
    MonthOutcome,
    OrganizationOutcomes,
    Period,
    ProgramOutcomes,
    SessionCounts,
)
from models.programs import Program
from models.sessions import Session, SessionStatus
from models.types import FocusArea, Role
from service.catalog import organizations
from service.core import zones
from service.core.auth import Principal
from service.core.clock import local_date
from service.core.errors import FieldError, NotFound, ValidationFailed
from service.programs import records

READERS = (Role.admin, Role.coordinator)
MAX_PERIOD_DAYS = 3660  # ten years: a program's whole life

_COMPLETED = f"'{SessionStatus.completed.value}'"


def _in_period(scope: str) -> str:
    """The scoped sessions whose local start date is in the period (an index range first)."""
    return f"""
    in_period AS (
        SELECT s.id, s.program_id, s.status, s.attendance, s.made_up_by, p.participants,
               p.focus_areas, CAST({zones.local_time("s.starts_at")} AS date) AS local_day
        FROM sessions s
        JOIN programs p ON p.id = s.program_id
        {zones.offsets_join("p.timezone", "s.starts_at")}
        WHERE {scope} AND s.starts_at >= :low AND s.starts_at < :high
    ), scoped AS (
        SELECT * FROM in_period WHERE local_day BETWEEN :first AND :last
    )"""


def _counts(scope: str) -> Any:
    return text(
        f"""
        WITH {_in_period(scope)}
        SELECT count(*) FILTER (WHERE made_up_by IS NULL) AS planned,
               count(*) FILTER (WHERE status = {_COMPLETED}) AS delivered,
               count(*) FILTER (WHERE status = '{SessionStatus.cancelled.value}') AS cancelled,
               count(*) FILTER (
                   WHERE status = '{SessionStatus.late_cancelled.value}') AS late_cancelled,
               count(*) FILTER (WHERE status = '{SessionStatus.no_show.value}') AS no_show,
               round(CAST(sum(participants) FILTER (WHERE status = {_COMPLETED}) AS numeric)
                     / nullif(count(*) FILTER (WHERE status = {_COMPLETED}), 0), 2)
                   AS expected_per_session,
               round(CAST(sum(attendance) FILTER (WHERE status = {_COMPLETED}) AS numeric)
                     / nullif(count(*) FILTER (WHERE status = {_COMPLETED}), 0), 2)
                   AS attendance_average,
               round(CAST(sum(attendance) FILTER (WHERE status = {_COMPLETED}) AS numeric)
                     / nullif(sum(participants) FILTER (WHERE status = {_COMPLETED}), 0), 4)
                   AS attendance_rate,
               count(DISTINCT program_id) AS programs,
               (SELECT coalesce(array_agg(DISTINCT area), '{{}}') FROM scoped,
                       unnest(scoped.focus_areas) AS area) AS focus_areas
        FROM scoped
        """
    )


def _ratings(scope: str) -> Any:
    """Per focus area and local month, and per focus area over the period (GROUPING SETS):
    ratings, their average and the participants of the programs rated. The ratings are first
    summed per program and month, so the grouping sets work over a few hundred rows."""
    return text(
        f"""
        WITH {_in_period(scope)}, per_program AS (
            SELECT r.focus_area,
                   to_char(date_trunc('month', s.local_day), 'YYYY-MM') AS month,
                   s.program_id,
                   count(*) AS observations,
                   sum(r.rating) AS total
            FROM scoped s
            JOIN observation_ratings r ON r.session_id = s.id
            WHERE s.status IN ({sql_values([SessionStatus.completed])})
            GROUP BY r.focus_area, month, s.program_id
        )
        SELECT focus_area,
               month,
               sum(observations) AS observations,
               round(sum(total) / sum(observations), 2) AS average,
               -- The people behind the cell: the participants of the programs rated in it.
               (SELECT coalesce(sum(p.participants), 0) FROM programs p
                 WHERE p.id = ANY(array_agg(DISTINCT program_id))) AS group_size
        FROM per_program
        GROUP BY GROUPING SETS ((focus_area, month), (focus_area))
        ORDER BY focus_area, month NULLS FIRST
        """
    )


_PROGRAM = "s.program_id = :program_id"
_ORGANIZATION = "s.organization_id = :organization_id"
STATEMENTS = {
    _PROGRAM: (_counts(_PROGRAM), _ratings(_PROGRAM)),
    _ORGANIZATION: (_counts(_ORGANIZATION), _ratings(_ORGANIZATION)),
}


@dataclass(frozen=True)
class Figures:
    """What both statements answered, before suppression."""

    period: Period
    sessions: SessionCounts
    attendance: Attendance
    focus_areas: list[FocusAreaOutcome]
    suppressed: bool
    suppression_reason: str | None
    programs: int


def check_period(start: date, end: date) -> None:
    if end < start:
        raise ValidationFailed([FieldError("to", "must not be before from", "order", "query")])
    if (end - start).days >= MAX_PERIOD_DAYS:
        raise ValidationFailed(
            [
                FieldError(
                    "to", f"the period may span at most {MAX_PERIOD_DAYS} days", "too_long", "query"
                )
            ]
        )


def _number(value: Any) -> float | None:
    """A rounded SQL numeric as the JSON number it is (null stays null)."""
    return None if value is None else float(value)


async def _figures(
    db: AsyncSession,
    scope: str,
    scope_params: dict[str, Any],
    time_zones: list[str],
    start: date,
    end: date,
    *,
    min_group: int,
    known_areas: list[str],
    participants: int | None,
) -> Figures:
    """`participants`: the program's, for a program's outcomes (None for an organization's)."""
    low, high = zones.utc_window(start, end)
    params = {
        **scope_params,
        **zones.offsets(time_zones or ["UTC"], low, high).params(),
        "low": low,
        "high": high,
        "first": start,
        "last": end,
    }
    counts_sql, ratings_sql = STATEMENTS[scope]
    counts = (await db.execute(counts_sql, params)).one()
    rows = (await db.execute(ratings_sql, params)).all()

    small_cells = few_cells = False

    def withheld(row: Any) -> bool:
        nonlocal small_cells, few_cells
        small = int(row.group_size) < min_group
        few = int(row.observations) < min_group
        small_cells |= small
        few_cells |= few and not small
        return small or few

    areas = {a for a in (*known_areas, *counts.focus_areas) if a in FocusArea._value2member_map_}
    areas |= {row.focus_area for row in rows}
    totals = {row.focus_area: row for row in rows if row.month is None}
    trends: dict[str, list[MonthOutcome]] = {area: [] for area in areas}
    for row in rows:
        if row.month is None:
            continue
        trends[row.focus_area].append(
            MonthOutcome(
                month=row.month,
                average=None if withheld(row) else _number(row.average),
                observations=int(row.observations),
            )
        )
    outcomes = []
    for area in sorted(areas, key=list(FocusArea._value2member_map_).index):
        total = totals.get(area)
        trend = trends[area]
        outcomes.append(
            FocusAreaOutcome(
                focus_area=FocusArea(area),
                observations=int(total.observations) if total else 0,
                average=None if total is None or withheld(total) else _number(total.average),
                first_month_average=trend[0].average if trend else None,
                last_month_average=trend[-1].average if trend else None,
                trend=trend,
            )
        )
    reasons = []
    if small_cells:
        reasons.append(
            f"Ratings are averaged only over at least {min_group} participants; the program "
            f"has {participants}, so every rating average is withheld"
            if participants is not None
            else f"Ratings are averaged only over at least {min_group} participants; averages "
            "whose ratings come from programs with fewer participants in all are withheld"
        )
    if few_cells:
        reasons.append(
            f"Averages over fewer than {min_group} observations (a month, or the whole period) "
            "are withheld"
        )
    reason = "; ".join(reasons) or None
    return Figures(
        period=Period(start=start, end=end),
        sessions=SessionCounts(
            planned=int(counts.planned),
            delivered=int(counts.delivered),
            cancelled=int(counts.cancelled),
            late_cancelled=int(counts.late_cancelled),
            no_show=int(counts.no_show),
        ),
        attendance=Attendance(
            expected_per_session=_number(counts.expected_per_session),
            average=_number(counts.attendance_average),
            rate=_number(counts.attendance_rate),
        ),
        focus_areas=outcomes,
        suppressed=reason is not None,
        suppression_reason=reason,
        programs=int(counts.programs),
    )


async def visible_program(db: AsyncSession, principal: Principal, program_id: uuid.UUID) -> Program:
    """The program for its outcomes: admins and its organization's coordinators; anyone else
    gets a 404 (finance and therapists included: outcomes are the organization's)."""
    if principal.role not in READERS:
        raise NotFound(f"Program {program_id} not found")
    return await records.get_visible(db, principal, program_id)


async def default_period(db: AsyncSession, program: Program) -> tuple[date, date]:
    """From the program's start to its last session (local dates)."""
    last = await db.scalar(
        select(func.max(col(Session.starts_at))).where(col(Session.program_id) == program.id)
    )
    end = local_date(last, program.timezone) if isinstance(last, datetime) else program.start_date
    return program.start_date, max(end, program.start_date)


async def program_outcomes(
    db: AsyncSession,
    principal: Principal,
    program_id: uuid.UUID,
    *,
    start: date | None,
    end: date | None,
    min_group: int,
) -> tuple[ProgramOutcomes, Program]:
    program = await visible_program(db, principal, program_id)
    if start is None or end is None:
        default_start, default_end = await default_period(db, program)
        start, end = start or default_start, end or default_end
    check_period(start, end)
    figures = await _figures(
        db,
        _PROGRAM,
        {"program_id": program.id},
        [program.timezone],
        start,
        end,
        min_group=min_group,
        known_areas=list(program.focus_areas),
        participants=program.participants,
    )
    return (
        ProgramOutcomes(program_id=program.id, **_fields(figures)),
        program,
    )


async def organization_outcomes(
    db: AsyncSession,
    principal: Principal,
    organization_id: uuid.UUID,
    *,
    start: date,
    end: date,
    min_group: int,
) -> OrganizationOutcomes:
    if principal.role not in READERS:
        raise NotFound(f"Organization {organization_id} not found")
    org: Organization = await organizations.get_visible(db, principal, organization_id)
    check_period(start, end)
    time_zones = list(
        await db.scalars(
            select(col(Program.timezone)).where(col(Program.organization_id) == org.id).distinct()
        )
    )
    figures = await _figures(
        db,
        _ORGANIZATION,
        {"organization_id": org.id},
        time_zones,
        start,
        end,
        min_group=min_group,
        known_areas=[],
        participants=None,
    )
    return OrganizationOutcomes(
        organization_id=org.id, programs=figures.programs, **_fields(figures)
    )


def _fields(figures: Figures) -> dict[str, Any]:
    return {
        "period": figures.period,
        "sessions": figures.sessions,
        "attendance": figures.attendance,
        "focus_areas": figures.focus_areas,
        "suppressed": figures.suppressed,
        "suppression_reason": figures.suppression_reason,
    }
