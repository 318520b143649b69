"""The provider's admin: Needs a therapist (programs waiting for one, with the ranked
suggestions and their reasons) and Assign, through `programs.staffing` as the /v1 routes."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response
from pydantic import ValidationError

from models.programs import AssignTherapist, ProgramStatus
from routers.deps import AppSettings, DbSession
from routers.portal.render import PortalRoute, page, see_other, uuid_or_404
from routers.portal.signin import CheckedForm, CurrentVisitor
from service.catalog import organizations
from service.core.errors import FieldError, ValidationFailed
from service.core.pagination import PageRequest
from service.programs import records, staffing

router = APIRouter(prefix="/app", include_in_schema=False, route_class=PortalRoute)
SHOWN = 20  # programs per page load: each is ranked against every active therapist


@router.get("/needs-therapist")
async def portal_needs_therapist(
    request: Request, visitor: CurrentVisitor, db: DbSession, settings: AppSettings
) -> Response:
    principal = visitor.principal
    requested = await records.list_programs(
        db, principal, PageRequest(limit=200), status=ProgramStatus.requested
    )
    waiting = [p for p in requested.data if p.therapist_id is None][:SHOWN]
    orgs = await organizations.list_organizations(db, principal, PageRequest(limit=200))
    names = {o.id: o.name for o in orgs.data}
    ranked = []
    for read in waiting:
        program = await records.get_visible(db, principal, read.id)
        suggestions = await staffing.suggest_therapists(db, principal, program, settings=settings)
        ranked.append((read, suggestions.data))
    return page(
        request,
        "needs_therapist.html",
        visitor,
        title="Needs a therapist",
        ranked=ranked,
        names=names,
        error=request.query_params.get("error", "")[:300],
    )


@router.post("/programs/{program_id}/assign")
async def portal_assign(
    program_id: str,
    visitor: CurrentVisitor,
    form: CheckedForm,
    db: DbSession,
    settings: AppSettings,
) -> Response:
    principal = visitor.principal
    program = await records.get_visible(db, principal, uuid_or_404(program_id), for_update=True)
    try:
        body = AssignTherapist.model_validate({"therapist_id": form.get("therapist_id")})
    except ValidationError:
        raise ValidationFailed(
            [FieldError("therapist_id", "Choose a therapist from the list.")]
        ) from None
    await staffing.assign(db, principal, program, body, settings=settings)
    return see_other(f"/app/programs/{program.id}")
