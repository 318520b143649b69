"""What every router shares: the unit-of-work route class and typed dependency aliases.

`UnitOfWorkRoute` is the one place a request's transaction begins and ends. It commits before
the response leaves (so a failed commit is never a 200), and it is where Idempotency-Key is
honoured for every POST, in the same transaction as the change.

It is also the one place for work that must wait until that commit: a route hands an
`AfterCommit` follow-up (an outside call such as a Stripe push, which must never run inside the
request's transaction), and the route class runs it once the change is committed and answers
with what it returns.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Awaitable, Callable, Coroutine
from typing import Annotated, Any

from fastapi import Depends, Query, Request, Response
from fastapi.encoders import jsonable_encoder
from fastapi.responses import JSONResponse
from fastapi.routing import APIRoute
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel
from sqlalchemy.ext.asyncio import AsyncSession

from models.offerings import Offering
from models.organizations import Organization
from models.therapists import Therapist
from service.catalog import offerings, organizations, therapists
from service.core import idempotency
from service.core.auth import Principal, authenticate, caller_fingerprint
from service.core.pagination import DEFAULT_LIMIT, MAX_LIMIT, PageRequest
from service.core.settings import Settings

log = logging.getLogger(__name__)
FollowUp = Callable[[], Awaitable[BaseModel]]


class AfterCommit:
    """A route's follow-up, run after its transaction is committed (and only then), with no
    session of the request open: it opens its own short ones. Its result becomes the response
    body (same status), and the replay of the request's Idempotency-Key. Should it fail, the
    committed change still answers with the handler's response."""

    def __init__(self) -> None:
        self.follow_up: FollowUp | None = None

    def answer_with(self, follow_up: FollowUp) -> None:
        self.follow_up = follow_up


class UnitOfWorkRoute(APIRoute):
    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def run_in_transaction(request: Request) -> Response:
            request.state.after_commit = after = AfterCommit()
            async with request.app.state.session_factory() as db:
                request.state.db = db
                try:
                    response, committed = await _run_once(request, db, handler)
                except BaseException:
                    await db.rollback()
                    raise
            if committed and after.follow_up is not None:
                response = await _follow_up(request, response, after.follow_up)
            return response

        return run_in_transaction


async def _follow_up(request: Request, response: Response, follow_up: FollowUp) -> Response:
    try:
        answer: Response = JSONResponse(
            jsonable_encoder(await follow_up()), status_code=response.status_code
        )
    except Exception:
        log.exception("follow-up of %s %s failed", request.method, request.url.path)
        return response
    key = request.headers.get(idempotency.HEADER) if request.method == "POST" else None
    if key is not None:
        async with request.app.state.session_factory() as db:
            await idempotency.save_response(
                db,
                caller=caller_fingerprint(request.headers.get("authorization")),
                key=key,
                response=idempotency.StoredResponse(
                    status=answer.status_code,
                    body=bytes(answer.body),
                    content_type=answer.media_type or "application/json",
                ),
            )
            await db.commit()
    return answer


async def _run_once(
    request: Request, db: AsyncSession, handler: Callable[[Request], Awaitable[Response]]
) -> tuple[Response, bool]:
    """The handler's response, and whether its change was committed."""
    key = request.headers.get(idempotency.HEADER) if request.method == "POST" else None
    caller = caller_fingerprint(request.headers.get("authorization"))
    if key is not None:
        idempotency.validate_key(key)
        if request.headers.get("authorization"):
            # A replay is an answer like any other: a revoked key must not get one.
            await authenticate(db, request.headers.get("authorization"))
        stored = await idempotency.claim(
            db,
            caller=caller,
            key=key,
            method=request.method,
            path=request.url.path,
            fingerprint=idempotency.request_hash(
                request.method, request.url.path, request.url.query, await request.body()
            ),
        )
        if stored is not None:
            await db.rollback()
            return Response(
                stored.body,
                status_code=stored.status,
                media_type=stored.content_type,
                headers={"Idempotent-Replayed": "true"},
            ), False
    response = await handler(request)
    if response.status_code >= 400:
        await db.rollback()
        return response, False
    if key is not None:
        await idempotency.save_response(
            db,
            caller=caller,
            key=key,
            response=idempotency.StoredResponse(
                status=response.status_code,
                body=bytes(response.body),
                content_type=response.media_type or "application/json",
            ),
        )
    await db.commit()
    return response, True


def db_session(request: Request) -> AsyncSession:
    session: AsyncSession = request.state.db
    return session


DbSession = Annotated[AsyncSession, Depends(db_session)]


def app_settings(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


AppSettings = Annotated[Settings, Depends(app_settings)]


def after_commit(request: Request) -> AfterCommit:
    hook: AfterCommit = request.state.after_commit
    return hook


ThenAfterCommit = Annotated[AfterCommit, Depends(after_commit)]

_bearer = HTTPBearer(auto_error=False, description="An API key: `Authorization: Bearer ens_...`")


async def current_principal(
    db: DbSession,
    request: Request,
    _credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> Principal:
    return await authenticate(db, request.headers.get("authorization"))


CurrentPrincipal = Annotated[Principal, Depends(current_principal)]


def page_request(
    limit: Annotated[int, Query(ge=1, le=MAX_LIMIT)] = DEFAULT_LIMIT,
    cursor: Annotated[str | None, Query(max_length=500)] = None,
) -> PageRequest:
    return PageRequest(limit=limit, cursor=cursor)


PageParams = Annotated[PageRequest, Depends(page_request)]


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
