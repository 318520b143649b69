from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import APIRouter, Body, Depends, Query, Response, status

from models.base import Page
from models.outcomes import ProgramOutcomes
from models.programs import (
    AssignTherapist,
    CancelProgram,
    ConfirmProgram,
    Program,
    ProgramCreate,
    ProgramRead,
    ProgramStatus,
    ProgramSummary,
    ProgramUpdate,
    SuggestionList,
)
from models.types import Day
from routers.deps import AppSettings, CurrentPrincipal, DbSession, PageParams
from service.programs import booking, changes, records, staffing
from service.reports import outcomes, outcomes_pdf

router = APIRouter(prefix="/v1/programs", tags=["programs"])


async def program_in_path(
    program_id: uuid.UUID, db: DbSession, principal: CurrentPrincipal
) -> Program:
    return await records.get_visible(db, principal, program_id)


async def program_to_change(
    program_id: uuid.UUID, db: DbSession, principal: CurrentPrincipal
) -> Program:
    """The program, row-locked until the request's transaction ends (changes take turns)."""
    return await records.get_visible(db, principal, program_id, for_update=True)


ProgramInPath = Annotated[Program, Depends(program_in_path)]
ProgramToChange = Annotated[Program, Depends(program_to_change)]


@router.post("", status_code=status.HTTP_201_CREATED)
async def create_program(
    body: ProgramCreate, db: DbSession, principal: CurrentPrincipal
) -> ProgramRead:
    """Book a program (status `requested`). Coordinators book for their own organization from
    today on; admins for any, including a program already under way."""
    return await booking.book(db, principal, body)


@router.get("")
async def list_programs(
    db: DbSession,
    principal: CurrentPrincipal,
    page: PageParams,
    organization_id: uuid.UUID | None = None,
    status: Annotated[ProgramStatus | None, Query()] = None,
) -> Page[ProgramRead]:
    """Programs the caller may see (admin, finance: all; coordinator: their organization's)."""
    return await records.list_programs(
        db, principal, page, organization_id=organization_id, status=status
    )


@router.get("/{program_id}")
async def get_program(program: ProgramInPath) -> ProgramRead:
    """One program."""
    return records.to_read(program)


@router.patch("/{program_id}")
async def update_program(
    program: ProgramToChange,
    body: ProgramUpdate,
    db: DbSession,
    principal: CurrentPrincipal,
    settings: AppSettings,
) -> ProgramRead:
    """Change a program (admin). On a confirmed program, a new schedule, rate or therapist needs
    `effective_date`: scheduled sessions from that date are rebuilt; completed, cancelled and
    individually rescheduled sessions are kept."""
    return await changes.update(db, principal, program, body, settings=settings)


@router.post("/{program_id}/assign")
async def assign_therapist(
    program: ProgramToChange,
    body: AssignTherapist,
    db: DbSession,
    principal: CurrentPrincipal,
    settings: AppSettings,
) -> ProgramRead:
    """Staff the program (admin). On a confirmed program the scheduled sessions from
    `effective_date` (default today) go to the new therapist. A clash is a 409 listing every
    conflicting session, and nothing changes."""
    return await staffing.assign(db, principal, program, body, settings=settings)


@router.get("/{program_id}/therapist-suggestions")
async def therapist_suggestions(
    program: ProgramInPath, db: DbSession, principal: CurrentPrincipal, settings: AppSettings
) -> SuggestionList:
    """Active therapists ranked for the whole program (admin): those who can take every
    session first, by score (specialty match with the focus areas, spare weekly capacity,
    continuity with the organization), then the others with why they cannot."""
    return await staffing.suggest_therapists(db, principal, program, settings=settings)


@router.post("/{program_id}/confirm")
async def confirm_program(
    program: ProgramToChange,
    db: DbSession,
    principal: CurrentPrincipal,
    settings: AppSettings,
    body: Annotated[ConfirmProgram | None, Body()] = None,
) -> ProgramRead:
    """Confirm a staffed program (admin): its sessions are created, or a 409 lists every
    conflicting session and nothing is written."""
    return await staffing.confirm(
        db, principal, program, body or ConfirmProgram(), settings=settings
    )


@router.post("/{program_id}/cancel")
async def cancel_program(
    program: ProgramToChange, body: CancelProgram, db: DbSession, principal: CurrentPrincipal
) -> ProgramRead:
    """Cancel from `effective_date` on (admin, or the organization's coordinator). Sessions
    before that date are kept."""
    return await changes.cancel(db, principal, program, body)


@router.get("/{program_id}/summary")
async def program_summary(
    program: ProgramInPath, db: DbSession, principal: CurrentPrincipal
) -> ProgramSummary:
    """Planned, delivered and cancelled sessions, attendance rate and billed sessions."""
    return await records.summary(db, principal, program)


OutcomesFrom = Annotated[
    Day | None, Query(alias="from", description="Default: the program's start date.")
]
OutcomesTo = Annotated[
    Day | None, Query(alias="to", description="Default: the date of its last session.")
]


@router.get("/{program_id}/outcomes")
async def program_outcomes(
    program_id: uuid.UUID,
    db: DbSession,
    principal: CurrentPrincipal,
    settings: AppSettings,
    start: OutcomesFrom = None,
    end: OutcomesTo = None,
) -> ProgramOutcomes:
    """What the program delivered over the local dates `from`..`to` (inclusive): sessions
    planned, delivered and cancelled, attendance, and the average rating per focus area with
    its monthly trend (admin, or the organization's coordinators; anyone else 404). Rating
    averages are null where fewer than ENSEMBLE_OUTCOMES_MIN_GROUP participants (or
    observations in a month) could single someone out; `suppressed` says why."""
    found, _ = await outcomes.program_outcomes(
        db, principal, program_id, start=start, end=end, min_group=settings.outcomes_min_group
    )
    return found


@router.get(
    "/{program_id}/outcomes.pdf",
    response_class=Response,
    responses={200: {"content": {"application/pdf": {}}, "description": "The report"}},
)
async def program_outcomes_pdf(
    program_id: uuid.UUID,
    db: DbSession,
    principal: CurrentPrincipal,
    settings: AppSettings,
    start: OutcomesFrom = None,
    end: OutcomesTo = None,
) -> Response:
    """The program's outcomes as a one-page PDF for the organization's board: the same
    figures and suppression as the JSON, with a chart per focus area; never a note."""
    document, name = await outcomes_pdf.program_report(
        db, principal, program_id, start=start, end=end, min_group=settings.outcomes_min_group
    )
    return Response(
        document,
        media_type="application/pdf",
        headers={"Content-Disposition": f'attachment; filename="{name}"'},
    )
