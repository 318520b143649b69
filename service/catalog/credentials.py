"""Credentials tied to a person or an organization, revoked together when they leave.

A therapist or an organization that is deactivated (or a therapist erased) loses every
credential tied to it at once: the API keys bound to it and the calendar feeds of it or made
with those keys. Revoking one API key also ends the feeds made with it. Each statement is one
set-based UPDATE in the caller's transaction, so the next request (after the commit) already
finds them revoked; every credential revoked is audited with the reason. Nothing here brings a
credential back: reactivation does not, and a revoked key or feed stays revoked for good.
"""

from __future__ import annotations

import uuid
from enum import StrEnum
from typing import Any

from sqlalchemy import ColumnElement, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col

from models.api_keys import ApiKey, ApiKeyRead
from models.base import utcnow
from models.calendar_feeds import CalendarFeed, CalendarFeedRead
from service.core import audit
from service.core.auth import Principal


class RevocationReason(StrEnum):
    """Why a credential was revoked without being named itself (the audit row's `reason`)."""

    therapist_deactivated = "therapist_deactivated"
    organization_deactivated = "organization_deactivated"
    api_key_revoked = "api_key_revoked"
    therapist_erased = "therapist_erased"


async def revoke_for_therapist(
    db: AsyncSession, principal: Principal, therapist_id: uuid.UUID, *, reason: RevocationReason
) -> None:
    """The therapist's keys, their feeds and every feed made with one of their keys."""
    keys_of_therapist = select(col(ApiKey.id)).where(col(ApiKey.therapist_id) == therapist_id)
    await _revoke_keys(db, principal, col(ApiKey.therapist_id) == therapist_id, reason)
    await _revoke_feeds(
        db,
        principal,
        or_(
            col(CalendarFeed.therapist_id) == therapist_id,
            col(CalendarFeed.created_by_key_id).in_(keys_of_therapist),
        ),
        reason,
    )


async def revoke_for_organization(
    db: AsyncSession, principal: Principal, organization_id: uuid.UUID, *, reason: RevocationReason
) -> None:
    """The organization's coordinator keys, its feeds and every feed made with one of those
    keys."""
    keys_of_organization = select(col(ApiKey.id)).where(
        col(ApiKey.organization_id) == organization_id
    )
    await _revoke_keys(db, principal, col(ApiKey.organization_id) == organization_id, reason)
    await _revoke_feeds(
        db,
        principal,
        or_(
            col(CalendarFeed.organization_id) == organization_id,
            col(CalendarFeed.created_by_key_id).in_(keys_of_organization),
        ),
        reason,
    )


async def end_feeds_of_key(db: AsyncSession, principal: Principal, key_id: uuid.UUID) -> None:
    """Every feed made with the key (just revoked), whoever it is for."""
    await _revoke_feeds(
        db,
        principal,
        col(CalendarFeed.created_by_key_id) == key_id,
        RevocationReason.api_key_revoked,
    )


async def _revoke_keys(
    db: AsyncSession, principal: Principal, tied: ColumnElement[bool], reason: RevocationReason
) -> None:
    await _revoke_and_audit(db, principal, ApiKey, ApiKeyRead, "api_key.revoked", tied, reason)


async def _revoke_feeds(
    db: AsyncSession, principal: Principal, tied: ColumnElement[bool], reason: RevocationReason
) -> None:
    await _revoke_and_audit(
        db, principal, CalendarFeed, CalendarFeedRead, "calendar_feed.revoked", tied, reason
    )


async def _revoke_and_audit(
    db: AsyncSession,
    principal: Principal,
    table: type[ApiKey] | type[CalendarFeed],
    read: type[ApiKeyRead] | type[CalendarFeedRead],
    action: str,
    tied: ColumnElement[bool],
    reason: RevocationReason,
) -> None:
    """Revoke what `tied` selects and audit each credential as the API shows it."""
    for row in await _revoke(db, table, tied):
        after = read.model_validate(row, from_attributes=True)
        await audit.record_change(
            db,
            principal,
            action,
            row,
            before=after.model_copy(update={"revoked_at": None}),
            after=after,
            reason=reason.value,
        )


async def _revoke(
    db: AsyncSession, table: type[ApiKey] | type[CalendarFeed], tied: ColumnElement[bool]
) -> list[Any]:
    """One UPDATE of every live credential `tied` selects; the rows as revoked."""
    stmt = (
        update(table)
        .where(tied, col(table.revoked_at).is_(None))
        .values(revoked_at=utcnow())
        .returning(table)
        .execution_options(synchronize_session="fetch", populate_existing=True)
    )
    return list((await db.execute(stmt)).scalars().all())
