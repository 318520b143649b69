"""Calendar feeds: managed with an API key, read by calendar apps with the token alone."""

from __future__ import annotations

import uuid

from fastapi import APIRouter, Response, status

from models.calendar_feeds import CalendarFeedCreate, CalendarFeedCreated, CalendarFeedRead
from routers.deps import AppSettings, CurrentPrincipal, DbSession
from service.programs import calendar_feeds

router = APIRouter(prefix="/v1", tags=["calendar"])


@router.post("/calendar-feeds", status_code=status.HTTP_201_CREATED)
async def create_calendar_feed(
    body: CalendarFeedCreate, db: DbSession, principal: CurrentPrincipal, settings: AppSettings
) -> CalendarFeedCreated:
    """A subscribable feed of a therapist's or an organization's sessions. `url` (with its
    token) is shown only here and on rotate; anyone holding it can read the calendar."""
    return await calendar_feeds.create(db, principal, body, base_url=settings.public_url)


@router.post("/calendar-feeds/{feed_id}/rotate")
async def rotate_calendar_feed(
    feed_id: uuid.UUID, db: DbSession, principal: CurrentPrincipal, settings: AppSettings
) -> CalendarFeedCreated:
    """Replace the feed's secret URL; the old one stops working immediately."""
    return await calendar_feeds.rotate(db, principal, feed_id, base_url=settings.public_url)


@router.delete("/calendar-feeds/{feed_id}")
async def revoke_calendar_feed(
    feed_id: uuid.UUID, db: DbSession, principal: CurrentPrincipal
) -> CalendarFeedRead:
    """Revoke the feed; its URL answers 404 from now on."""
    return await calendar_feeds.revoke(db, principal, feed_id)


@router.get(
    "/calendar/{token}.ics",
    response_class=Response,
    responses={200: {"content": {"text/calendar": {}}, "description": "An iCalendar feed"}},
)
async def read_calendar_feed(token: str, db: DbSession) -> Response:
    """The feed itself (RFC 5545), for calendar apps. No API key: the token is the secret."""
    body = await calendar_feeds.render(db, token)
    return Response(
        body,
        media_type="text/calendar; charset=utf-8",
        headers={"Cache-Control": "private, max-age=300"},
    )
