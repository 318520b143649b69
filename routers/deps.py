"""What every router shares: typed dependency aliases for the request's session, the caller,
the settings, the page and the resources named in a path (loaded already scoped to the caller,
404 when missing or out of scope). The transaction itself is routers.unit_of_work's."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import date
from typing import Annotated

from fastapi import Depends, Query, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import StringConstraints, WithJsonSchema
from sqlalchemy.ext.asyncio import AsyncSession

from models.offerings import Offering
from models.organizations import Organization
from models.therapists import Therapist
from models.types import PATTERN_MESSAGES, Day
from routers.unit_of_work import work_of
from service.catalog import offerings, organizations, therapists
from service.core.auth import Principal, authenticate
from service.core.pagination import CURSOR_FORMAT, DEFAULT_LIMIT, MAX_LIMIT, PageRequest
from service.core.settings import Settings


async def db_session(request: Request) -> AsyncSession:
    return work_of(request.state).session


DbSession = Annotated[AsyncSession, Depends(db_session)]


async def app_settings(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


AppSettings = Annotated[Settings, Depends(app_settings)]

_bearer = HTTPBearer(auto_error=False, description="An API key: `Authorization: Bearer ens_...`")


async def current_principal(
    db: DbSession,
    request: Request,
    _credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> Principal:
    work = work_of(request.state)
    if work.principal is None:
        work.principal = await authenticate(db, request.headers.get("authorization"))
    return work.principal


CurrentPrincipal = Annotated[Principal, Depends(current_principal)]


CURSOR_PATTERN = r"^[A-Za-z0-9_=-]*$"  # what a page's `next_cursor` holds: URL-safe base64
PATTERN_MESSAGES[CURSOR_PATTERN] = "is not a cursor this API returned"
Cursor = Annotated[
    str,
    StringConstraints(max_length=500, pattern=CURSOR_PATTERN),
    WithJsonSchema(
        {"type": "string", "maxLength": 500, "pattern": CURSOR_PATTERN, "format": CURSOR_FORMAT}
    ),
]


async def page_request(
    limit: Annotated[int, Query(ge=1, le=MAX_LIMIT)] = DEFAULT_LIMIT,
    cursor: Annotated[
        Cursor | None,
        Query(description="The `next_cursor` of the previous page, as it was answered"),
    ] = None,
) -> PageRequest:
    return PageRequest(limit=limit, cursor=cursor)


PageParams = Annotated[PageRequest, Depends(page_request)]


@dataclass(frozen=True)
class DateRange:
    """Inclusive local dates `from`..`to`, both required (reports, exports)."""

    start: date
    end: date


async def date_range(
    start: Annotated[Day, Query(alias="from")], end: Annotated[Day, Query(alias="to")]
) -> DateRange:
    return DateRange(start, end)


Dates = Annotated[DateRange, Depends(date_range)]


async def organization_in_path(
    organization_id: uuid.UUID, db: DbSession, principal: CurrentPrincipal
) -> Organization:
    return await organizations.get_visible(db, principal, organization_id)


async def therapist_in_path(
    therapist_id: uuid.UUID, db: DbSession, principal: CurrentPrincipal
) -> Therapist:
    return await therapists.get_visible(db, principal, therapist_id)


async def offering_in_path(
    offering_id: uuid.UUID, db: DbSession, principal: CurrentPrincipal
) -> Offering:
    return await offerings.get_visible(db, principal, offering_id)


OrganizationInPath = Annotated[Organization, Depends(organization_in_path)]
TherapistInPath = Annotated[Therapist, Depends(therapist_in_path)]
OfferingInPath = Annotated[Offering, Depends(offering_in_path)]
