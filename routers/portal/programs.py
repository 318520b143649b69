"""Programs for coordinators (and the provider's admin): the list, one program with its
sessions as a month calendar, and cancelling a session with its fee shown first."""

from __future__ import annotations

import calendar
from datetime import date, timedelta
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request, Response
from pydantic import ValidationError

from models.programs import ConfirmProgram
from models.sessions import CancelSession
from models.types import Role
from routers.deps import AppSettings, DbSession
from routers.portal.render import PortalRoute, field_errors, page, see_other, uuid_or_404
from routers.portal.signin import CheckedForm, CurrentVisitor
from service.billing import amounts
from service.core.clock import local_date, local_today
from service.core.errors import ValidationFailed
from service.core.pagination import MAX_LIMIT, PageRequest
from service.programs import records, sessions, staffing
from service.programs.session_records import SessionFilters
from service.reports import outcomes, outcomes_pdf

router = APIRouter(prefix="/app", include_in_schema=False, route_class=PortalRoute)
ALL = PageRequest(limit=MAX_LIMIT)


@router.get("/programs")
async def portal_programs(request: Request, visitor: CurrentVisitor, db: DbSession) -> Response:
    principal = visitor.principal
    programs = (await records.list_programs(db, principal, ALL)).data
    names = await records.therapist_names(db, principal, [p.id for p in programs])
    next_session = await sessions.next_scheduled(db, principal, [p.id for p in programs])
    return page(
        request,
        "programs.html",
        visitor,
        title="Programs",
        programs=programs,
        names=names,
        next_session=next_session,
    )


def _month(value: str | None, fallback: date) -> date:
    try:
        year, month = (int(part) for part in (value or "").split("-"))
        return date(year, month, 1)
    except ValueError:
        return fallback.replace(day=1)


@router.get("/programs/{program_id}")
async def portal_program(
    request: Request,
    program_id: str,
    visitor: CurrentVisitor,
    db: DbSession,
    settings: AppSettings,
    month: Annotated[str | None, Query(max_length=7)] = None,
) -> Response:
    principal = visitor.principal
    program = await records.get_visible(db, principal, uuid_or_404(program_id))
    found = None
    if principal.role in outcomes.READERS:  # the same figures as GET /v1/programs/{id}/outcomes
        found, _ = await outcomes.program_outcomes(
            db, principal, program.id, start=None, end=None, min_group=settings.outcomes_min_group
        )
    read = records.to_read(program)
    first = _month(month, max(read.schedule.start_date, local_today(read.schedule.timezone)))
    last = first.replace(day=calendar.monthrange(first.year, first.month)[1])
    in_month = await sessions.list_sessions(
        db, principal, SessionFilters(program_id=program.id, start=first, end=last), ALL
    )
    by_day: dict[date, list[object]] = {}
    for session in in_month.data:
        by_day.setdefault(local_date(session.starts_at, session.timezone), []).append(session)
    weeks = calendar.Calendar(firstweekday=0).monthdatescalendar(first.year, first.month)
    names = await records.therapist_names(db, principal, [program.id])
    return page(
        request,
        "program.html",
        visitor,
        title=read.title,
        program=read,
        summary=await records.summary(db, principal, program),
        therapist=names.get(program.id),
        weeks=weeks,
        month=first,
        by_day=by_day,
        previous=(first - timedelta(days=1)).strftime("%Y-%m"),
        following=(last + timedelta(days=1)).strftime("%Y-%m"),
        outcomes=found,
        can_confirm=principal.role == Role.admin and read.status == "requested",
        notice="Booked: the program is requested; its sessions are created once the provider "
        "confirms it."
        if request.query_params.get("booked")
        else "",
    )


@router.get("/programs/{program_id}/outcomes.pdf")
async def portal_outcomes_pdf(
    program_id: str, visitor: CurrentVisitor, db: DbSession, settings: AppSettings
) -> Response:
    """The board's PDF, as GET /v1/programs/{id}/outcomes.pdf answers it (same service, same
    people; anyone else the 404 page): the API route takes a key, not the portal's cookie."""
    document, name = await outcomes_pdf.program_report(
        db,
        visitor.principal,
        uuid_or_404(program_id),
        start=None,
        end=None,
        min_group=settings.outcomes_min_group,
    )
    return Response(
        document,
        media_type="application/pdf",
        headers={
            "Content-Disposition": f'attachment; filename="{name}"',
            "Cache-Control": "no-store",
            "X-Content-Type-Options": "nosniff",
        },
    )


@router.post("/programs/{program_id}/confirm")
async def portal_confirm_program(
    program_id: str,
    visitor: CurrentVisitor,
    form: CheckedForm,
    db: DbSession,
    settings: AppSettings,
) -> Response:
    program = await records.get_visible(
        db, visitor.principal, uuid_or_404(program_id), for_update=True
    )
    await staffing.confirm(db, visitor.principal, program, ConfirmProgram(), settings=settings)
    return see_other(f"/app/programs/{program.id}")


async def _cancel_context(
    visitor: CurrentVisitor, db: DbSession, session_id: str
) -> dict[str, Any]:
    principal = visitor.principal
    session = await sessions.read(db, principal, uuid_or_404(session_id))
    terms = await sessions.cancellation_terms(db, principal, session.id)
    by_organization = principal.role == Role.coordinator
    fee = (
        amounts.line_amount(terms.rate_cents, "late_cancelled", terms.late_cancel_fee_percent)
        if terms.late and by_organization
        else 0
    )
    return {"session": session, "terms": terms, "fee": fee, "by_organization": by_organization}


@router.get("/sessions/{session_id}/cancel")
async def portal_cancel_session_page(
    request: Request, session_id: str, visitor: CurrentVisitor, db: DbSession
) -> Response:
    context = await _cancel_context(visitor, db, session_id)
    return page(request, "cancel_session.html", visitor, title="Cancel a session", **context)


@router.post("/sessions/{session_id}/cancel")
async def portal_cancel_session(
    request: Request, session_id: str, visitor: CurrentVisitor, form: CheckedForm, db: DbSession
) -> Response:
    reason = form.get("reason").strip() or None
    try:
        data = CancelSession.model_validate({"reason": reason})
        cancelled = await sessions.cancel(db, visitor.principal, uuid_or_404(session_id), data)
    except (ValidationFailed, ValidationError) as exc:
        context = await _cancel_context(visitor, db, session_id)
        return page(
            request,
            "cancel_session.html",
            visitor,
            status=422,
            title="Cancel a session",
            errors=field_errors(exc),
            reason=reason or "",
            **context,
        )
    month = local_date(cancelled.starts_at, cancelled.timezone).strftime("%Y-%m")
    return see_other(f"/app/programs/{cancelled.program_id}?month={month}")
