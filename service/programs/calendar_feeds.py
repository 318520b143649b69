"""Calendar feeds: a secret URL per therapist or organization that calendar apps poll.

The token is the only credential (no API key), so it is random, shown only on create and
rotate, stored hashed, and a rotated or revoked token stops working at once. Feeds carry no
money: what, when, where, and whether it is still on.
"""

from __future__ import annotations

import re
import secrets
import uuid
from datetime import timedelta
from urllib.parse import quote

import icalendar
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col

from models.base import utcnow
from models.calendar_feeds import (
    CalendarFeed,
    CalendarFeedCreate,
    CalendarFeedCreated,
    CalendarFeedRead,
)
from models.organizations import Location, Organization
from models.programs import Program
from models.sessions import CANCELLED_STATUSES, Session
from models.therapists import Therapist
from models.types import Role
from service.catalog import organizations, therapists
from service.core import crud
from service.core.auth import Principal, hash_secret, require_role, scope_to_tenant
from service.core.errors import InvalidState, NotFound

TOKEN_PREFIX = "cal_"  # noqa: S105 (a label, not a secret)
FEED_PAST = timedelta(days=90)  # how far back a feed still shows sessions
FEED_LIMIT = 2000
# RFC 5545 §3.3.11: TEXT holds no CONTROL character but HTAB; a line break is written `\n`.
_TEXT_CONTROLS = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")
# Every printable ASCII character but the space stays as it is in a URI; the rest is
# percent-encoded, so no stored value can end a content line.
_URI_SAFE = "".join(chr(c) for c in range(0x21, 0x7F))


def ical_text(value: str) -> str:
    r"""User text made safe for an iCalendar TEXT value: line breaks (CR LF, CR, LF) become one
    LF, which the icalendar library writes as the escape `\n`; other controls are dropped. The
    library escapes `\`, `;` and `,` and folds long lines (RFC 5545 §3.1)."""
    return _TEXT_CONTROLS.sub("", value.replace("\r\n", "\n").replace("\r", "\n"))


def ical_uri(value: str) -> str:
    """A stored URL as an iCalendar URI value: spaces and control characters percent-encoded."""
    return quote(value, safe=_URI_SAFE)


def _new_token() -> str:
    return TOKEN_PREFIX + secrets.token_urlsafe(32)


def to_read(feed: CalendarFeed) -> CalendarFeedRead:
    return CalendarFeedRead.model_validate(feed, from_attributes=True)


def _created(feed: CalendarFeed, token: str, base_url: str) -> CalendarFeedCreated:
    url = f"{base_url.rstrip('/')}/v1/calendar/{token}.ics"
    return CalendarFeedCreated(**to_read(feed).model_dump(), token=token, url=url)


async def create(
    db: AsyncSession, principal: Principal, data: CalendarFeedCreate, *, base_url: str
) -> CalendarFeedCreated:
    """Admins make any feed; a coordinator their organization's; a therapist their own."""
    require_role(principal, (Role.admin, Role.coordinator, Role.therapist), "create feeds")
    if data.organization_id is not None:
        await organizations.get_visible(db, principal, data.organization_id)
    if data.therapist_id is not None:
        await therapists.get_visible(db, principal, data.therapist_id)
    token = _new_token()
    feed = CalendarFeed(
        therapist_id=data.therapist_id,
        organization_id=data.organization_id,
        token_hash=hash_secret(token),
        created_by_key_id=principal.key_id,
    )
    await crud.create(db, principal, feed, action="calendar_feed.created", to_read=to_read)
    return _created(feed, token, base_url)


async def _get_visible(db: AsyncSession, principal: Principal, feed_id: uuid.UUID) -> CalendarFeed:
    stmt = scope_to_tenant(
        select(CalendarFeed).where(col(CalendarFeed.id) == feed_id).with_for_update(),
        principal,
        organization_column=CalendarFeed.organization_id,
        therapist_column=CalendarFeed.therapist_id,
    )
    feed = (await db.execute(stmt)).scalar_one_or_none()
    if feed is None or principal.role == Role.finance:
        raise NotFound(f"Calendar feed {feed_id} not found")
    if feed.revoked_at is not None:
        raise InvalidState(f"Calendar feed {feed_id} has been revoked")
    return feed


async def rotate(
    db: AsyncSession, principal: Principal, feed_id: uuid.UUID, *, base_url: str
) -> CalendarFeedCreated:
    """A new secret URL; the old one stops working now."""
    feed = await _get_visible(db, principal, feed_id)
    token = _new_token()
    await crud.update(
        db,
        principal,
        feed,
        {"token_hash": hash_secret(token), "rotated_at": utcnow()},
        action="calendar_feed.rotated",
        to_read=to_read,
    )
    return _created(feed, token, base_url)


async def revoke(db: AsyncSession, principal: Principal, feed_id: uuid.UUID) -> CalendarFeedRead:
    feed = await _get_visible(db, principal, feed_id)
    return await crud.update(
        db,
        principal,
        feed,
        {"revoked_at": utcnow()},
        action="calendar_feed.revoked",
        to_read=to_read,
    )


async def render(db: AsyncSession, token: str) -> bytes:
    """The feed's iCalendar document, or NotFound for an unknown, rotated or revoked token."""
    feed = (
        await db.execute(
            select(CalendarFeed).where(
                col(CalendarFeed.token_hash) == hash_secret(token),
                col(CalendarFeed.revoked_at).is_(None),
            )
        )
    ).scalar_one_or_none()
    if feed is None:
        raise NotFound("No calendar feed at this address")
    subject = (
        col(Session.therapist_id) == feed.therapist_id
        if feed.therapist_id
        else col(Session.organization_id) == feed.organization_id
    )
    rows = (
        await db.execute(
            select(
                Session, Program, col(Organization.name), col(Location.name), col(Location.address)
            )
            .join(Program, col(Program.id) == Session.program_id)
            .join(Organization, col(Organization.id) == Session.organization_id)
            .outerjoin(Location, col(Location.id) == Program.location_id)
            .where(subject, col(Session.starts_at) >= utcnow() - FEED_PAST)
            .order_by(col(Session.starts_at))
            .limit(FEED_LIMIT)
        )
    ).all()
    name = await _feed_name(db, feed)
    calendar = icalendar.Calendar()
    calendar.add("prodid", "-//Ensemble//Music therapy sessions//EN")
    calendar.add("version", "2.0")
    calendar.add("calscale", "GREGORIAN")
    calendar.add("x-wr-calname", ical_text(f"Ensemble: {name}"))
    for session, program, org_name, location_name, location_address in rows:
        calendar.add_component(
            _event(
                session,
                program,
                org_name,
                location_name,
                location_address,
                for_therapist=feed.therapist_id is not None,
            )
        )
    return calendar.to_ical()


async def _feed_name(db: AsyncSession, feed: CalendarFeed) -> str:
    if feed.therapist_id is not None:
        therapist = await db.get(Therapist, feed.therapist_id)
        return therapist.name if therapist else "therapist"
    org = await db.get(Organization, feed.organization_id)
    return org.name if org else "organization"


def _event(
    session: Session,
    program: Program,
    org_name: str,
    location_name: str | None,
    location_address: str | None,
    *,
    for_therapist: bool,
) -> icalendar.Event:
    event = icalendar.Event()
    # The session id never changes, so calendar apps update the event in place; SEQUENCE rises
    # with every change (RFC 5545 §3.8.7.4) so they know which version is newer.
    event.add("uid", f"{session.id}@ensemble")
    event.add("sequence", session.sequence)
    event.add("dtstamp", session.updated_at)
    event.add("last-modified", session.updated_at)
    event.add("dtstart", session.starts_at)
    event.add("dtend", session.ends_at)
    summary = f"{program.title} ({org_name})" if for_therapist else program.title
    event.add("summary", ical_text(summary))
    where = (
        (f"{location_name}, {location_address}" if location_address else location_name)
        if location_name
        else program.video_url
    )
    if where:
        event.add("location", ical_text(where))
    if program.video_url:
        event.add("url", ical_uri(program.video_url))
    event.add(
        "description",
        f"Music therapy session, {program.participants} participant(s). Status: {session.status}.",
    )
    event.add("status", "CANCELLED" if session.status in CANCELLED_STATUSES else "CONFIRMED")
    return event
