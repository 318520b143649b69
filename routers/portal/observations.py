"""Observations in the portal: the form the therapist who delivered a session (or the
provider's admin) fills when completing it, or afterwards from My week — a rating from 1 to 5
per focus area of the program and an optional note — saved through the same service function
as PUT /v1/sessions/{id}/observation (same people, same window, same errors)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from fastapi import APIRouter, Request, Response
from pydantic import ValidationError

from models.observations import ObservationWrite
from models.types import FocusArea
from routers.deps import AppSettings, DbSession
from routers.portal.render import PortalRoute, field_errors, page, see_other, uuid_or_404
from routers.portal.signin import CheckedForm, CurrentVisitor, Form, Visitor
from service.core import encryption
from service.core.clock import local_date
from service.core.errors import NotFound, ValidationFailed
from service.core.pagination import MAX_LIMIT, PageRequest
from service.core.settings import Settings
from service.programs import observations, sessions, therapist_view

router = APIRouter(prefix="/app", include_in_schema=False, route_class=PortalRoute)


async def session_of(db: DbSession, visitor: Visitor, session_id: str) -> object:
    """The therapist's own view of the session (place, participants), or a 404 like the
    API's; the admin gets the session as the API shows it."""
    found = await sessions.read(db, visitor.principal, uuid_or_404(session_id))
    if visitor.principal.therapist_id is None:
        return found
    week = await therapist_view.my_sessions(
        db,
        visitor.principal,
        PageRequest(limit=MAX_LIMIT),
        start=found.starts_at,
        end=found.ends_at,
    )
    return next((s for s in week.data if s.id == found.id), found)


@dataclass(frozen=True)
class ObservationForm:
    """The observation fields as typed: a rating per focus area ("" for not rated), a note."""

    areas: list[FocusArea]
    ratings: dict[str, str]
    note: str

    @classmethod
    def read(cls, form: Form, areas: list[FocusArea]) -> ObservationForm:
        return cls(
            areas=areas,
            ratings={a.value: form.get(f"ratings.{a.value}").strip() for a in areas},
            note=form.get("note"),
        )

    @property
    def given(self) -> bool:
        return any(self.ratings.values()) or bool(self.note.strip())

    def to_write(self) -> ObservationWrite:
        """The PUT body these fields make (a ValidationError names `ratings.<area>`, `note`)."""
        return ObservationWrite.model_validate(
            {
                "ratings": {area: value for area, value in self.ratings.items() if value},
                "note": self.note if self.note.strip() else None,
            }
        )

    def context(self) -> dict[str, Any]:
        return {"areas": self.areas, "ratings": self.ratings, "note": self.note}


async def save(
    db: DbSession, visitor: Visitor, settings: Settings, session_id: str, data: ObservationWrite
) -> None:
    await observations.record(
        db,
        visitor.principal,
        uuid_or_404(session_id),
        data,
        keyring=encryption.keyring(settings),
        window_days=settings.observation_window_days,
    )


async def blank_form(db: DbSession, visitor: Visitor, session_id: str) -> ObservationForm:
    areas = await observations.focus_areas_to_rate(db, visitor.principal, uuid_or_404(session_id))
    return ObservationForm(areas=areas, ratings={}, note="")


@router.get("/sessions/{session_id}/observation")
async def portal_observation_page(
    request: Request, session_id: str, visitor: CurrentVisitor, db: DbSession, settings: AppSettings
) -> Response:
    """The form, filled with the observation already recorded (reading it is audited)."""
    session = await session_of(db, visitor, session_id)
    fields = await blank_form(db, visitor, session_id)
    try:
        found = await observations.read(
            db, visitor.principal, uuid_or_404(session_id), keyring=encryption.keyring(settings)
        )
        fields = ObservationForm(
            areas=fields.areas,
            ratings={area.value: str(rating) for area, rating in found.ratings.items()},
            note=found.note or "",
        )
    except NotFound:
        pass  # none yet: a blank form
    return page(
        request,
        "complete.html",
        visitor,
        title="Record the observation",
        session=session,
        completing=False,
        errors={},
        **fields.context(),
    )


@router.post("/sessions/{session_id}/observation")
async def portal_record_observation(
    request: Request,
    session_id: str,
    visitor: CurrentVisitor,
    form: CheckedForm,
    db: DbSession,
    settings: AppSettings,
) -> Response:
    fields = ObservationForm.read(form, (await blank_form(db, visitor, session_id)).areas)
    try:
        await save(db, visitor, settings, session_id, fields.to_write())
    except (ValidationFailed, ValidationError) as exc:
        return page(
            request,
            "complete.html",
            visitor,
            status=422,
            title="Record the observation",
            session=await session_of(db, visitor, session_id),
            completing=False,
            errors=field_errors(exc),
            **fields.context(),
        )
    done = await sessions.read(db, visitor.principal, uuid_or_404(session_id))
    if visitor.principal.therapist_id is None:  # the admin: back to the program
        return see_other(f"/app/programs/{done.program_id}")
    week = local_date(done.starts_at, done.timezone).isoformat()
    return see_other(f"/app/week?start={week}&recorded=1")
