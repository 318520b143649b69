"""Book a program: the coordinator's form, its Preview (the dates booking would plan, from
`programs.booking.preview`) and Book (`programs.booking.book`, as POST /v1/programs)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request, Response
from pydantic import ValidationError

from models.programs import Modality, ProgramCreate
from models.types import FocusArea, Role
from routers.deps import AppSettings, DbSession
from routers.portal.render import PortalRoute, field_errors, page, see_other
from routers.portal.signin import CheckedForm, CurrentVisitor, Form, Visitor
from service.catalog import offerings, organizations
from service.core.errors import ValidationFailed
from service.core.pagination import MAX_LIMIT, PageRequest
from service.programs import booking

router = APIRouter(prefix="/app", include_in_schema=False, route_class=PortalRoute)
ALL = PageRequest(limit=MAX_LIMIT)
WEEKDAYS = [
    ("MO", "Monday"),
    ("TU", "Tuesday"),
    ("WE", "Wednesday"),
    ("TH", "Thursday"),
    ("FR", "Friday"),
    ("SA", "Saturday"),
    ("SU", "Sunday"),
]
# Where a schedule error is shown: the rule is built from the weekdays and the count or end.
FIELD_OF = {
    "schedule.rrule": "weekdays",
    "schedule.start_date": "start_date",
    "schedule.start_time": "start_time",
    "schedule.duration_minutes": "offering_id",
    "schedule.exdates": "exdates",
}


async def _choices(db: DbSession, visitor: Visitor, organization_id: str) -> dict[str, Any]:
    principal = visitor.principal
    orgs = (await organizations.list_organizations(db, principal, ALL)).data
    chosen = next((o for o in orgs if str(o.id) == organization_id), orgs[0] if orgs else None)
    locations = []
    if chosen is not None:
        org = await organizations.get_visible(db, principal, chosen.id)
        locations = (await organizations.list_locations(db, principal, org, ALL)).data
    return {
        "organizations": orgs,
        "organization": chosen,
        "offerings": (await offerings.list_offerings(db, principal, ALL)).data,
        "locations": locations,
        "focus_areas": list(FocusArea),
        "modalities": list(Modality),
        "weekdays": WEEKDAYS,
        "choose_organization": principal.role == Role.admin,
    }


def _request_of(form: Form, timezone: str) -> dict[str, Any]:
    """The form as the JSON body POST /v1/programs takes (empty optional fields left out)."""
    weekdays = [d for d in form.getlist("weekdays") if d in dict(WEEKDAYS)]
    rule = "FREQ=WEEKLY"
    if weekdays:
        rule += ";BYDAY=" + ",".join(weekdays)
    count, until = form.get("count").strip(), form.get("until").strip()
    if count:
        rule += f";COUNT={count}"
    elif until:
        rule += ";UNTIL=" + until.replace("-", "")
    body: dict[str, Any] = {
        "organization_id": form.get("organization_id"),
        "offering_id": form.get("offering_id"),
        "title": form.get("title"),
        "focus_areas": form.getlist("focus_areas"),
        "modality": form.get("modality"),
        "participants": form.get("participants") or None,
        "schedule": {
            "timezone": timezone,
            "start_date": form.get("start_date") or None,
            "start_time": form.get("start_time") or None,
            "rrule": rule,
            "skip_holidays": form.get("skip_holidays") == "on",
            "exdates": form.get("exdates").replace(",", " ").split(),
        },
    }
    for optional in ("location_id", "video_url"):
        if form.get(optional).strip():
            body[optional] = form.get(optional).strip()
    return body


def _form_problems(form: Form) -> dict[str, str]:
    problems = {}
    if not form.getlist("weekdays"):
        problems["weekdays"] = "Choose at least one weekday."
    if not form.get("count").strip() and not form.get("until").strip():
        problems["count"] = "Give a number of sessions or an end date."
    return problems


@router.get("/programs/new")
async def portal_book_page(request: Request, visitor: CurrentVisitor, db: DbSession) -> Response:
    choices = await _choices(db, visitor, request.query_params.get("organization_id", ""))
    values = {"skip_holidays": "on", "start_time": "10:00", "participants": "1"}
    return page(
        request, "book.html", visitor, title="Book a program", values=values, errors={}, **choices
    )


@router.post("/programs/new")
async def portal_book(
    request: Request,
    visitor: CurrentVisitor,
    form: CheckedForm,
    db: DbSession,
    settings: AppSettings,
) -> Response:
    principal = visitor.principal
    organization_id = form.get("organization_id") or str(principal.organization_id or "")
    choices = await _choices(db, visitor, organization_id)
    org = choices["organization"]
    values = form.values() | {"organization_id": organization_id}
    errors = _form_problems(form)
    preview = None
    if not errors and org is not None:
        body = _request_of(form, org.timezone) | {"organization_id": organization_id}
        try:
            data = ProgramCreate.model_validate(body)
            if form.get("action") == "book":
                booked = await booking.book(db, principal, data)
                return see_other(f"/app/programs/{booked.id}?booked=1")
            preview = await booking.preview(
                db, principal, data, horizon_weeks=settings.horizon_weeks
            )
        except (ValidationFailed, ValidationError) as exc:
            errors = {FIELD_OF.get(k, k): v for k, v in field_errors(exc).items()}
    return page(
        request,
        "book.html",
        visitor,
        status=422 if errors else 200,
        title="Book a program",
        values=values,
        chosen_weekdays=form.getlist("weekdays"),
        chosen_focus=form.getlist("focus_areas"),
        errors=errors,
        preview=preview,
        **choices,
    )
