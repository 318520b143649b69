"""The therapist's pages: My week (sessions with their place or video link), Complete a
session, Time off (add and list) and the calendar feed link."""

from __future__ import annotations

from datetime import date, timedelta
from typing import Annotated

from fastapi import APIRouter, Query, Request, Response
from pydantic import ValidationError

from models.calendar_feeds import CalendarFeedCreate
from models.sessions import CompleteSession
from models.therapist_view import MySessionRead
from models.therapists import Therapist, TimeOffCreate
from routers.deps import AppSettings, DbSession
from routers.portal.observations import ObservationForm, blank_form, save, session_of
from routers.portal.render import PortalRoute, field_errors, page, see_other, uuid_or_404
from routers.portal.signin import CheckedForm, CurrentVisitor, Visitor
from service.catalog import therapists
from service.core.clock import local_date, local_midnight, local_today
from service.core.errors import NotFound, ValidationFailed
from service.core.pagination import MAX_LIMIT, PageRequest
from service.programs import calendar_feeds, sessions, therapist_view

router = APIRouter(prefix="/app", include_in_schema=False, route_class=PortalRoute)
ALL = PageRequest(limit=MAX_LIMIT)


def _monday(value: str | None, today: date) -> date:
    try:
        day = date.fromisoformat(value) if value else today
    except ValueError:
        day = today
    return day - timedelta(days=day.weekday())


async def _me(db: DbSession, visitor: Visitor) -> Therapist:
    if visitor.principal.therapist_id is None:
        raise NotFound("This page is for therapists")
    return await therapists.get_visible(db, visitor.principal, visitor.principal.therapist_id)


@router.get("/week")
async def portal_my_week(
    request: Request,
    visitor: CurrentVisitor,
    db: DbSession,
    settings: AppSettings,
    start: Annotated[str | None, Query(max_length=10)] = None,
) -> Response:
    therapist = await _me(db, visitor)
    due = await therapist_view.observations_due(
        db, visitor.principal, ALL, window_days=settings.observation_window_days
    )
    monday = _monday(start, local_today(therapist.timezone))
    sunday = monday + timedelta(days=6)
    week = await therapist_view.my_sessions(db, visitor.principal, ALL, start=monday, end=sunday)
    days: list[tuple[date, list[MySessionRead]]] = [
        (monday + timedelta(days=n), []) for n in range(7)
    ]
    by_day = dict(days)
    for session in week.data:
        by_day[local_date(session.starts_at, session.timezone)].append(session)
    return page(
        request,
        "week.html",
        visitor,
        title="My week",
        monday=monday,
        days=[(d, by_day[d]) for d, _ in days],
        previous=(monday - timedelta(days=7)).isoformat(),
        following=(monday + timedelta(days=7)).isoformat(),
        feed_url=request.query_params.get("feed", ""),
        due=due.data,
        notice="Observation recorded." if request.query_params.get("recorded") else "",
    )


@router.get("/sessions/{session_id}/complete")
async def portal_complete_page(
    request: Request, session_id: str, visitor: CurrentVisitor, db: DbSession
) -> Response:
    session = await session_of(db, visitor, session_id)
    fields = await blank_form(db, visitor, session_id)
    return page(
        request,
        "complete.html",
        visitor,
        title="Complete a session",
        session=session,
        completing=True,
        errors={},
        **fields.context(),
    )


@router.post("/sessions/{session_id}/complete")
async def portal_complete(
    request: Request,
    session_id: str,
    visitor: CurrentVisitor,
    form: CheckedForm,
    db: DbSession,
    settings: AppSettings,
) -> Response:
    """Attendance, and the observation with it when any of its fields is filled: both in one
    transaction, so a refused observation leaves the session as it was."""
    attendance = form.get("attendance").strip()
    fields = ObservationForm.read(form, (await blank_form(db, visitor, session_id)).areas)
    errors: dict[str, str] = {}
    try:
        data = CompleteSession.model_validate({"attendance": attendance or None})
    except ValidationError as exc:
        errors |= field_errors(exc)
    try:
        observed = fields.to_write() if fields.given else None
    except ValidationError as exc:
        errors |= field_errors(exc)
    if not errors:
        try:
            done = await sessions.complete(db, visitor.principal, uuid_or_404(session_id), data)
            if observed is not None:
                await save(db, visitor, settings, session_id, observed)
            week = local_date(done.starts_at, done.timezone).isoformat()
            return see_other(f"/app/week?start={week}")
        except (ValidationFailed, ValidationError) as exc:
            errors = field_errors(exc)
    return page(
        request,
        "complete.html",
        visitor,
        status=422,
        title="Complete a session",
        session=await session_of(db, visitor, session_id),
        completing=True,
        errors=errors,
        attendance=attendance,
        **fields.context(),
    )


async def _time_off_page(
    request: Request,
    visitor: Visitor,
    db: DbSession,
    *,
    status: int = 200,
    errors: dict[str, str] | None = None,
    values: dict[str, str] | None = None,
) -> Response:
    therapist = await _me(db, visitor)
    listed = await therapists.list_time_off(db, therapist, ALL)
    return page(
        request,
        "time_off.html",
        visitor,
        status=status,
        title="Time off",
        periods=listed.data,
        timezone=therapist.timezone,
        errors=errors or {},
        values=values or {},
    )


@router.get("/time-off")
async def portal_time_off(request: Request, visitor: CurrentVisitor, db: DbSession) -> Response:
    return await _time_off_page(request, visitor, db)


@router.post("/time-off")
async def portal_add_time_off(
    request: Request, visitor: CurrentVisitor, form: CheckedForm, db: DbSession
) -> Response:
    """Whole days in the therapist's own zone: from the first day's midnight to the midnight
    after the last day."""
    therapist = await _me(db, visitor)
    values = {k: form.get(k).strip() for k in ("first_day", "last_day", "reason")}
    errors: dict[str, str] = {}
    days: dict[str, date] = {}
    for name in ("first_day", "last_day"):
        try:
            days[name] = date.fromisoformat(values[name])
        except ValueError:
            errors[name] = "Enter a date."
    if not errors:
        try:
            data = TimeOffCreate.model_validate(
                {
                    "starts_at": local_midnight(days["first_day"], therapist.timezone),
                    "ends_at": local_midnight(
                        days["last_day"] + timedelta(days=1), therapist.timezone
                    ),
                    "reason": values["reason"] or None,
                }
            )
            await therapists.add_time_off(db, visitor.principal, therapist, data)
            return see_other("/app/time-off")
        except (ValidationFailed, ValidationError) as exc:
            named = {"starts_at": "first_day", "ends_at": "last_day"}
            errors = {named.get(k, k): v for k, v in field_errors(exc).items()}
    return await _time_off_page(request, visitor, db, status=422, errors=errors, values=values)


@router.post("/calendar-feed")
async def portal_calendar_feed(
    request: Request,
    visitor: CurrentVisitor,
    form: CheckedForm,
    db: DbSession,
    settings: AppSettings,
) -> Response:
    """A new feed of the therapist's sessions; its secret link is shown once, on this page."""
    therapist = await _me(db, visitor)
    feed = await calendar_feeds.create(
        db,
        visitor.principal,
        CalendarFeedCreate(therapist_id=therapist.id),
        base_url=settings.public_url,
    )
    return page(request, "calendar_feed.html", visitor, title="Calendar feed", url=feed.url)
