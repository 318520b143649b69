"""The one staffing check: every change that gives sessions to a therapist (assign, confirm,
hand over, series edits, substitute, reschedule) passes here before anything is written."""

from __future__ import annotations

import uuid
from collections.abc import Collection, Sequence
from typing import Any

from pydantic import BaseModel
from sqlalchemy.ext.asyncio import AsyncSession

from models.offerings import Offering
from models.programs import Program
from models.sessions import Session
from models.therapists import Therapist
from models.types import Role
from service.core import audit
from service.core.auth import Principal
from service.core.errors import Conflict, FieldError, Forbidden, ValidationFailed
from service.programs import staffing_facts
from service.scheduling import staffing


class OverriddenProblems(BaseModel):
    """What an admin's override let through, as the audit trail keeps it."""

    therapist_id: uuid.UUID
    overridden: list[dict[str, Any]]


async def active_therapist(db: AsyncSession, therapist_id: uuid.UUID) -> Therapist:
    therapist = await db.get(Therapist, therapist_id)
    if therapist is None or not therapist.active:
        raise ValidationFailed(
            [FieldError("therapist_id", "no such active therapist", "not_found")]
        )
    return therapist


async def require_staffable(
    db: AsyncSession,
    principal: Principal,
    program: Program,
    therapist: Therapist,
    proposals: Sequence[staffing.Proposal],
    *,
    override: bool,
    session: Session | None = None,
    ignored_session_ids: Collection[uuid.UUID] = (),
) -> None:
    """Raise one Conflict listing every problem `therapist` would have taking the proposed
    slots of `program` (of its `session`, when one session moves or changes hands). With an
    admin's `override`, availability, time off and weekly load are let through, and what was
    overridden is audited on the session, or else the program."""
    if override and principal.role != Role.admin:
        raise Forbidden("Only an admin may override staffing rules")
    offering = await db.get(Offering, program.offering_id)
    assert offering is not None  # a foreign key with ON DELETE RESTRICT
    ignored = [session.id] if session is not None else list(ignored_session_ids)
    facts = await staffing_facts.load(db, [therapist], proposals, ignored_session_ids=ignored)
    problems = staffing.evaluate([therapist], offering, proposals, facts)[therapist.id]
    blocking = staffing.blocking(problems, override=override)
    if blocking:
        raise Conflict(
            f"The therapist cannot take {len({id(p.proposal) for p in blocking})} of the "
            f"{len(proposals)} session(s) proposed",
            conflicts=[p.as_problem() for p in blocking],
        )
    if problems:
        overridden = OverriddenProblems(
            therapist_id=therapist.id, overridden=[p.as_problem() for p in problems]
        )
        await audit.record_change(
            db,
            principal,
            "session.staffing_overridden" if session else "program.staffing_overridden",
            session or program,
            after=overridden,
        )
