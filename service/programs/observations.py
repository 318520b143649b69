"""Observations of delivered sessions: the therapist's ratings on the program's focus areas and
an optional clinical note.

Who: the therapist who delivered the session (the session's therapist, a substitute included),
within `observation_window_days` after it ended, or an admin at any time; both read it back.
Anyone else — coordinators, finance, other therapists — gets a 404, as if there were none.

The note is sealed with core.encryption (purpose `observation-note`, bound to the observation's
row id): no column, audit snapshot, event or log line holds its text. Every write is audited
with the ratings before and after and whether a note is present; every read is audited too.
"""

from __future__ import annotations

import uuid
from datetime import timedelta

from sqlalchemy import delete, insert, select, update
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col

from models.base import utcnow
from models.observations import (
    NoteRead,
    Observation,
    ObservationAudit,
    ObservationRating,
    ObservationRead,
    ObservationWrite,
)
from models.programs import Program
from models.sessions import Session, SessionStatus
from models.types import FocusArea, Role
from service.core import audit
from service.core.auth import Principal, is_the_therapist
from service.core.encryption import Keyring
from service.core.errors import FieldError, InvalidState, NotFound, ValidationFailed
from service.programs.session_records import get_visible

NOTE_PURPOSE = "observation-note"


def seal_note(keyring: Keyring, observation_id: uuid.UUID, note: str) -> str:
    return keyring.encrypt_text(NOTE_PURPOSE, note, aad=observation_id.bytes)


def open_note(keyring: Keyring, observation_id: uuid.UUID, ciphertext: str) -> str:
    return keyring.decrypt_text(NOTE_PURPOSE, ciphertext, aad=observation_id.bytes)


def _may_observe(principal: Principal, session: Session) -> bool:
    """The delivering therapist or an admin; scoping already hid other organizations'."""
    if principal.role == Role.admin:
        return True
    return is_the_therapist(principal, session.therapist_id)


async def _observed_session(
    db: AsyncSession, principal: Principal, session_id: uuid.UUID, *, for_update: bool = False
) -> tuple[Session, Program]:
    session, program = await get_visible(db, principal, session_id, for_update=for_update)
    if not _may_observe(principal, session):
        raise NotFound(f"Session {session_id} not found")
    return session, program


async def focus_areas_to_rate(
    db: AsyncSession, principal: Principal, session_id: uuid.UUID
) -> list[FocusArea]:
    """The program's focus areas an observation of the session rates, for the same people as
    `record` (anyone else: 404). The portal's observation form asks for exactly these."""
    _, program = await _observed_session(db, principal, session_id)
    return [FocusArea(area) for area in program.focus_areas if area in FocusArea._value2member_map_]


async def _ratings(db: AsyncSession, session_id: uuid.UUID) -> dict[str, int]:
    rows = await db.execute(
        select(col(ObservationRating.focus_area), col(ObservationRating.rating))
        .where(col(ObservationRating.session_id) == session_id)
        .order_by(col(ObservationRating.focus_area))
    )
    return {area: int(rating) for area, rating in rows}


def _audit_view(observation: Observation, ratings: dict[str, int]) -> ObservationAudit:
    return ObservationAudit(
        session_id=observation.session_id,
        ratings=dict(sorted(ratings.items())),
        note_present=observation.note_ciphertext is not None,
        note_changed_at=observation.note_changed_at,
    )


def _to_read(
    observation: Observation, ratings: dict[str, int], note: str | None
) -> ObservationRead:
    return ObservationRead(
        session_id=observation.session_id,
        program_id=observation.program_id,
        organization_id=observation.organization_id,
        therapist_id=observation.therapist_id,
        ratings={FocusArea(area): rating for area, rating in sorted(ratings.items())},
        note=note,
        created_at=observation.created_at,
        updated_at=observation.updated_at,
    )


def _check_writable(
    principal: Principal, session: Session, program: Program, data: ObservationWrite, days: int
) -> None:
    if session.status != SessionStatus.completed:
        raise InvalidState(
            f"A {session.status} session has no observation; only a completed one has",
            session_id=str(session.id),
            session_status=session.status,
        )
    closes = session.ends_at + timedelta(days=days)
    if principal.role == Role.therapist and utcnow() > closes:
        raise InvalidState(
            f"Observations are recorded within {days} days after the session; ask an admin",
            session_id=str(session.id),
            window_closed_at=closes.isoformat(),
        )
    unknown = [area for area in data.ratings if area.value not in program.focus_areas]
    if unknown:
        raise ValidationFailed(
            [
                FieldError(
                    f"ratings.{area.value}",
                    "is not a focus area of this program "
                    f"({', '.join(program.focus_areas) or 'it has none'})",
                    "not_a_focus_area",
                )
                for area in unknown
            ]
        )


async def record(
    db: AsyncSession,
    principal: Principal,
    session_id: uuid.UUID,
    data: ObservationWrite,
    *,
    keyring: Keyring,
    window_days: int,
) -> tuple[ObservationRead, bool]:
    """Create or replace the session's observation; answers it and whether it was created."""
    session, program = await _observed_session(db, principal, session_id, for_update=True)
    _check_writable(principal, session, program, data, window_days)
    observation = (
        await db.execute(
            select(Observation).where(col(Observation.session_id) == session.id).with_for_update()
        )
    ).scalar_one_or_none()
    now = utcnow()
    created = observation is None
    before = None
    if observation is None:
        observation = Observation(
            session_id=session.id,
            program_id=session.program_id,
            organization_id=session.organization_id,
            therapist_id=session.therapist_id,
            created_at=now,
            updated_at=now,
        )
        db.add(observation)
        await db.flush()
        previous_note = None
    else:
        before = _audit_view(observation, await _ratings(db, session.id))
        previous_note = (
            open_note(keyring, observation.id, observation.note_ciphertext)
            if observation.note_ciphertext is not None
            else None
        )
    note = data.note or None
    if note != previous_note:
        observation.note_ciphertext = (
            seal_note(keyring, observation.id, note) if note is not None else None
        )
        observation.note_changed_at = now
    observation.updated_at = now
    ratings = {area.value: rating for area, rating in data.ratings.items()}
    await db.execute(
        delete(ObservationRating).where(col(ObservationRating.session_id) == session.id)
    )
    if ratings:
        await db.execute(
            insert(ObservationRating),
            [
                {"session_id": session.id, "focus_area": area, "rating": rating}
                for area, rating in ratings.items()
            ],
        )
    await db.flush()
    await audit.record_change(
        db,
        principal,
        "observation.recorded" if created else "observation.updated",
        observation,
        before=before,
        after=_audit_view(observation, ratings),
    )
    return _to_read(observation, ratings, note), created


async def read(
    db: AsyncSession, principal: Principal, session_id: uuid.UUID, *, keyring: Keyring
) -> ObservationRead:
    """The session's observation with its note; the read itself is audited."""
    session, _ = await _observed_session(db, principal, session_id)
    observation = (
        await db.execute(select(Observation).where(col(Observation.session_id) == session.id))
    ).scalar_one_or_none()
    if observation is None:
        raise NotFound(f"Session {session_id} has no observation recorded")
    note = (
        open_note(keyring, observation.id, observation.note_ciphertext)
        if observation.note_ciphertext is not None
        else None
    )
    await audit.record_change(
        db,
        principal,
        "observation.read",
        observation,
        after=NoteRead(session_id=session.id, note_present=note is not None),
    )
    return _to_read(observation, await _ratings(db, session.id), note)


RESEAL_BATCH = 500


async def reseal_notes(db: AsyncSession, keyring: Keyring) -> int:
    """Re-encrypt every note not yet under the first key of ENSEMBLE_SECRET_KEY (the end of a
    key rotation: afterwards the old key may be removed), a batch at a time. The notes do not
    change. Answers how many were re-encrypted."""
    resealed = 0
    current = f"enc1:{keyring.primary_id}:%"
    while True:
        rows = (
            await db.execute(
                select(col(Observation.id), col(Observation.note_ciphertext))
                .where(
                    col(Observation.note_ciphertext).is_not(None),
                    col(Observation.note_ciphertext).not_like(current),
                )
                .limit(RESEAL_BATCH)
                .with_for_update()
            )
        ).all()
        if not rows:
            return resealed
        await db.execute(
            update(Observation),
            [
                {
                    "id": row.id,
                    "note_ciphertext": seal_note(
                        keyring, row.id, open_note(keyring, row.id, row.note_ciphertext)
                    ),
                }
                for row in rows
            ],
        )
        resealed += len(rows)
