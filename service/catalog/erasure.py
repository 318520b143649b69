"""Erasing a former therapist: their personal data replaced by a tombstone, everything else kept.

The therapist row stays (sessions, programs and invoices keep pointing at it, so every total
still adds up and the history still reads), but its name, email and professional details become
a tombstone, their availability and time off are deleted, and their personal data is scrubbed
from wherever a copy was kept: the audit trail's before/after snapshots, the outbox's webhook
payloads and the idempotency replays (which are stored encrypted, so they are found by the
route and the caller, never by their content). Every credential tied to them is revoked. The
clinical notes of the sessions they delivered are deleted; the ratings, which name nobody, are
kept for the organizations' outcomes. The erasure itself is audited with the tombstone only.
All of it is one transaction.
"""

from __future__ import annotations

import json
from typing import Any

from sqlalchemy import delete, func, select, text, update
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col

from models.api_keys import ApiKey
from models.base import utcnow
from models.idempotency import IdempotencyRecord
from models.observations import Observation
from models.sessions import Session, SessionStatus
from models.therapists import AvailabilityRow, Therapist, TherapistRead, TimeOff
from models.types import Role
from service.catalog import credentials, therapists
from service.catalog.credentials import RevocationReason
from service.core import audit
from service.core.auth import Principal, require_role
from service.core.errors import Conflict, InvalidState

TOMBSTONE_NAME = "Former therapist"
TOMBSTONE_KEY_NAME = "Former therapist's key"
ERASED_EMAIL_DOMAIN = "erased.invalid"  # RFC 6761: a name that can never receive mail
BLOCKING_SESSIONS_SHOWN = 20


def tombstone_email(therapist: Therapist) -> str:
    return f"erased-{therapist.id}@{ERASED_EMAIL_DOMAIN}"


def _tombstone(therapist: Therapist) -> dict[str, Any]:
    """What replaces each personal field, in the row and in every snapshot of it."""
    return {
        "name": TOMBSTONE_NAME,
        "email": tombstone_email(therapist),
        "credentials": [],
        "specialties": [],
        "languages": [],
    }


async def erase(db: AsyncSession, principal: Principal, therapist: Therapist) -> TherapistRead:
    """Replace a former therapist's personal data with a tombstone (admin). Refused (409) while
    the therapist is active, has sessions still to come, or was already erased."""
    require_role(principal, (Role.admin,), "erase therapists")
    await db.refresh(therapist, with_for_update=True)
    await _check_erasable(db, therapist)
    former_name, former_email = therapist.name, therapist.email
    tombstone = _tombstone(therapist)
    key_ids = select(col(ApiKey.id)).where(col(ApiKey.therapist_id) == therapist.id)

    await credentials.revoke_for_therapist(
        db, principal, therapist.id, reason=RevocationReason.therapist_erased
    )
    now = utcnow()
    therapist.sqlmodel_update(
        {**tombstone, "max_weekly_minutes": 0, "erased_at": now, "updated_at": now}
    )
    await db.execute(
        delete(AvailabilityRow).where(col(AvailabilityRow.therapist_id) == therapist.id)
    )
    await db.execute(delete(TimeOff).where(col(TimeOff.therapist_id) == therapist.id))
    # Their clinical notes go; the de-identified ratings stay (outcomes still add up).
    await db.execute(
        update(Observation)
        .where(
            col(Observation.therapist_id) == therapist.id,
            col(Observation.note_ciphertext).is_not(None),
        )
        .values(note_ciphertext=None, note_changed_at=now)
        .execution_options(synchronize_session=False)
    )
    # A key's name is a label an admin chose, often the person's name.
    await db.execute(
        update(ApiKey)
        .where(col(ApiKey.therapist_id) == therapist.id)
        .values(name=TOMBSTONE_KEY_NAME)
        .execution_options(synchronize_session="fetch")
    )
    await db.flush()
    await _scrub_snapshots(db, therapist, tombstone)
    await _scrub_copies(db, therapist, former_name, former_email, tombstone)
    await _forget_replays(db, therapist, key_ids)

    read = therapists.to_read(therapist)
    await audit.record_change(
        db, principal, "therapist.erased", therapist, after=read, reason="erasure"
    )
    return read


async def _check_erasable(db: AsyncSession, therapist: Therapist) -> None:
    if therapist.erased_at is not None:
        raise InvalidState(f"Therapist {therapist.id} has already been erased")
    if therapist.active:
        raise InvalidState(f"Therapist {therapist.id} is active: deactivate them first")
    to_come = (
        await db.execute(
            select(col(Session.id), col(Session.starts_at))
            .where(
                col(Session.therapist_id) == therapist.id,
                col(Session.status) == SessionStatus.scheduled.value,
                col(Session.ends_at) > utcnow(),
            )
            .order_by(col(Session.starts_at))
            .limit(BLOCKING_SESSIONS_SHOWN)
        )
    ).all()
    if to_come:
        raise Conflict(
            f"Therapist {therapist.id} still has sessions to come: reassign or cancel them first",
            conflicts=[
                {
                    "reason": "session_to_come",
                    "session_id": str(session_id),
                    "starts_at": starts_at.isoformat(),
                }
                for session_id, starts_at in to_come
            ],
        )


# The snapshots of the therapist themself and of their keys: each personal field present is
# replaced by the tombstone's (time off's `reason` is cleared). A missing snapshot is JSON null.
_SCRUB_SNAPSHOTS = text(
    """
    UPDATE audit_events AS a
    SET before = CASE WHEN jsonb_typeof(a.before) = 'object' THEN a.before || coalesce(
            (SELECT jsonb_object_agg(t.key, t.value) FROM jsonb_each(CAST(:tombstone AS jsonb)) t
             WHERE (a.before -> t.key) IS NOT NULL), '{}'::jsonb) ELSE a.before END,
        after = CASE WHEN jsonb_typeof(a.after) = 'object' THEN a.after || coalesce(
            (SELECT jsonb_object_agg(t.key, t.value) FROM jsonb_each(CAST(:tombstone AS jsonb)) t
             WHERE (a.after -> t.key) IS NOT NULL), '{}'::jsonb) ELSE a.after END
    WHERE a.entity_type = :entity_type AND a.entity_id = ANY(CAST(:entity_ids AS uuid[]))
    """
)


async def _scrub_snapshots(
    db: AsyncSession, therapist: Therapist, tombstone: dict[str, Any]
) -> None:
    keys = (
        (await db.execute(select(col(ApiKey.id)).where(col(ApiKey.therapist_id) == therapist.id)))
        .scalars()
        .all()
    )
    for entity_type, entity_ids, replacement in (
        ("therapist", [therapist.id], {**tombstone, "reason": None}),
        ("api_key", list(keys), {"name": TOMBSTONE_KEY_NAME}),
    ):
        await db.execute(
            _SCRUB_SNAPSHOTS,
            {
                "tombstone": json.dumps(replacement),
                "entity_type": entity_type,
                "entity_ids": [str(i) for i in entity_ids],
            },
        )


# Any other copy of the name or the email as a whole JSON string value (a snapshot of another
# entity, a webhook payload): replaced token for token in the document's text, which keeps the
# document valid JSON and never touches a longer string that merely contains the name. Another
# therapist's own snapshots are left alone: a namesake keeps their name.
_SCRUB_AUDIT = text(
    """
    UPDATE audit_events
    SET before = CAST(replace(replace(CAST(before AS text), :name, :new_name),
                              :email, :new_email) AS jsonb),
        after = CAST(replace(replace(CAST(after AS text), :name, :new_name),
                             :email, :new_email) AS jsonb)
    WHERE (strpos(CAST(before AS text), :name) > 0 OR strpos(CAST(before AS text), :email) > 0
           OR strpos(CAST(after AS text), :name) > 0 OR strpos(CAST(after AS text), :email) > 0)
      AND NOT (entity_type = 'therapist' AND entity_id <> :therapist_id)
    """
)
_SCRUB_OUTBOX = text(
    """
    UPDATE webhook_events
    SET data = CAST(replace(replace(CAST(data AS text), :name, :new_name),
                            :email, :new_email) AS jsonb)
    WHERE strpos(CAST(data AS text), :name) > 0 OR strpos(CAST(data AS text), :email) > 0
    """
)


def _json_token(value: str) -> str:
    """`value` as PostgreSQL prints a JSON string (jsonb output escapes as json.dumps does for
    the characters a name or email can hold)."""
    return json.dumps(value, ensure_ascii=False)


async def _scrub_copies(
    db: AsyncSession,
    therapist: Therapist,
    former_name: str,
    former_email: str,
    tombstone: dict[str, Any],
) -> None:
    tokens: dict[str, Any] = {
        "name": _json_token(former_name),
        "new_name": _json_token(tombstone["name"]),
        "email": _json_token(former_email),
        "new_email": _json_token(tombstone["email"]),
    }
    await db.execute(_SCRUB_AUDIT, {**tokens, "therapist_id": therapist.id})
    await db.execute(_SCRUB_OUTBOX, tokens)


async def _forget_replays(db: AsyncSession, therapist: Therapist, key_ids: Any) -> None:
    """Stored responses that may hold the personal data, found without reading them: those of
    the therapist's own routes (time off), of creating therapists (the admin's POST
    /v1/therapists answered with the record; which one cannot be told apart from outside), and
    every replay of the therapist's own keys (the caller is the hash of the key). The erasure's
    own replay holds only the tombstone and is kept."""
    own_routes = f"/v1/therapists/{therapist.id}/%"
    this_request = f"/v1/therapists/{therapist.id}/erase"
    await db.execute(
        delete(IdempotencyRecord).where(
            (col(IdempotencyRecord.path) == "/v1/therapists")
            | (
                col(IdempotencyRecord.path).ilike(own_routes)
                & (func.lower(col(IdempotencyRecord.path)) != this_request)
            )
            | col(IdempotencyRecord.caller).in_(
                select(col(ApiKey.secret_hash)).where(col(ApiKey.id).in_(key_ids))
            )
        )
    )
