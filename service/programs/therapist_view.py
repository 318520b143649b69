"""The therapist's own view: their programs and sessions with everything needed to show up
(organization, place or link, participants) and nothing about money."""

from __future__ import annotations

from datetime import date, datetime, timedelta
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col

from models.base import Page, read_model, utcnow
from models.observations import Observation
from models.offerings import Offering
from models.organizations import Location, Organization
from models.programs import Program
from models.sessions import Session, SessionStatus
from models.therapist_view import MyProgramRead, MySessionRead, ObservationDueRead, PlaceRead
from models.types import Role
from service.core.auth import Principal, require_role, scope_to_therapist
from service.core.pagination import PageRequest, paginate, row_values
from service.programs import records
from service.programs.session_records import SessionFilters, local_date_filter


def _place(location: Location | None) -> PlaceRead | None:
    if location is None:
        return None
    return PlaceRead(location_id=location.id, name=location.name, address=location.address)


def _program(row: Any) -> MyProgramRead:
    program, org_name, offering_name, location = row
    return MyProgramRead(
        **records.to_read(program).model_dump(
            include={
                "id",
                "title",
                "status",
                "organization_id",
                "focus_areas",
                "modality",
                "video_url",
                "participants",
                "schedule",
            }
        ),
        organization_name=org_name,
        offering_name=offering_name,
        location=_place(location),
    )


def _session_values(row: Any) -> dict[str, Any]:
    """A row of `_SESSIONS_SEEN` as the values of a `MySessionRead`."""
    values = row_values(_SEEN_KEYS, row)
    place = {
        "location_id": values.pop("location_id"),
        "name": values.pop("location_name"),
        "address": values.pop("location_address"),
    }
    values["location"] = None if place["location_id"] is None else place
    values["observation_recorded"] = values.pop("observed")
    return values


def _session(row: Any) -> MySessionRead:
    return read_model(MySessionRead, _session_values(row))


# Sessions with what a therapist needs to show up, and whether each is observed (one
# statement, joins only; columns, not entities: a page of 50 rows of three entities each cost
# more than the rest of the request). Built once; a request only narrows it.
_SESSIONS_SEEN: Any = (
    select(
        col(Session.id),
        col(Session.program_id),
        col(Program.title).label("program_title"),
        col(Session.organization_id),
        col(Organization.name).label("organization_name"),
        col(Session.starts_at),
        col(Session.ends_at),
        col(Program.timezone),
        col(Session.status),
        col(Session.attendance),
        col(Program.modality),
        col(Location.id).label("location_id"),
        col(Location.name).label("location_name"),
        col(Location.address).label("location_address"),
        col(Program.video_url),
        col(Program.participants),
        col(Observation.id).is_not(None).label("observed"),
    )
    .select_from(Session)
    .join(Program, col(Program.id) == Session.program_id)
    .join(Organization, col(Organization.id) == Session.organization_id)
    .outerjoin(Location, col(Location.id) == Program.location_id)
    .outerjoin(Observation, col(Observation.session_id) == Session.id)
)
_SEEN_KEYS = tuple(_SESSIONS_SEEN.selected_columns.keys())


async def my_programs(
    db: AsyncSession, principal: Principal, page: PageRequest
) -> Page[MyProgramRead]:
    require_role(principal, (Role.therapist,), "use the therapist's own view")
    stmt = (
        select(Program, col(Organization.name), col(Offering.name), Location)
        .join(Organization, col(Organization.id) == Program.organization_id)
        .join(Offering, col(Offering.id) == Program.offering_id)
        .outerjoin(Location, col(Location.id) == Program.location_id)
    )
    stmt = scope_to_therapist(stmt, principal, Program.therapist_id)
    return await paginate(db, stmt, page, _program, rows="tuples")


async def my_sessions(
    db: AsyncSession,
    principal: Principal,
    page: PageRequest,
    *,
    start: date | datetime | None = None,
    end: date | datetime | None = None,
    status: SessionStatus | None = None,
) -> Page[MySessionRead]:
    require_role(principal, (Role.therapist,), "use the therapist's own view")
    stmt = scope_to_therapist(_SESSIONS_SEEN, principal, Session.therapist_id)
    stmt = await local_date_filter(db, stmt, SessionFilters(start=start, end=end))
    if status is not None:
        stmt = stmt.where(col(Session.status) == status.value)
    return await paginate(
        db, stmt, page, _session, order_by=Session.starts_at, rows="records", entity=Session
    )


async def observations_due(
    db: AsyncSession, principal: Principal, page: PageRequest, *, window_days: int
) -> Page[ObservationDueRead]:
    """The therapist's completed sessions without an observation whose window (
    `window_days` after the session ended) is still open, oldest first."""
    require_role(principal, (Role.therapist,), "use the therapist's own view")
    window = timedelta(days=window_days)
    stmt = scope_to_therapist(_SESSIONS_SEEN, principal, Session.therapist_id).where(
        col(Session.status) == SessionStatus.completed.value,
        col(Session.ends_at) >= utcnow() - window,
        col(Observation.id).is_(None),
    )

    def due(row: Any) -> ObservationDueRead:
        values = _session_values(row)
        values["observation_due_by"] = row.ends_at + window
        return read_model(ObservationDueRead, values)

    return await paginate(
        db, stmt, page, due, order_by=Session.starts_at, rows="records", entity=Session
    )
