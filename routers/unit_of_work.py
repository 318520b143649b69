"""The unit of work: every request is one transaction, committed before its response leaves.

`UnitOfWork` is an ASGI middleware around the whole application, so every route runs in it
without opting in. The request's database session is opened lazily (a route that never touches
the database never takes a connection) and is:

- committed when the response starts with a status below 400, before a byte of it is sent, so
  a failed commit is never a 200 (the client gets the problem instead);
- rolled back on any 4xx/5xx answer and on any exception.

A request that only reads (GET, HEAD, OPTIONS) gets an autocommit session instead: its
statements go out alone, with no BEGIN/COMMIT around them (service.core.db's
`make_read_session_factory`).
What such a request adds to its session (an audit row of a read) is still written only when
its answer is below 400, when the session is committed; a read that added nothing is not
committed at all (there is nothing to send).

It is also the one place where Idempotency-Key is honoured (POST only, in the same transaction
as the change: a committed change always has its replay; a failed request leaves the key free)
and where a route's follow-up runs once the change is committed (`Work.answer_with`: an outside
call such as a Stripe push, which must never run inside the request's transaction).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from fastapi.encoders import jsonable_encoder
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from sqlalchemy.exc import DBAPIError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from starlette.datastructures import Headers
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from routers.body_limit import replay_body
from routers.problems import database_error_response, problem_response
from service.core import encryption, idempotency
from service.core.auth import Principal, authenticate, caller_fingerprint
from service.core.db import AUTOCOMMIT
from service.core.errors import DomainError, ServiceUnavailable

log = logging.getLogger(__name__)
READ_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
FollowUp = Callable[[], Awaitable[BaseModel | Response]]


class Work:
    """One request's transaction, and the follow-up to run after it commits."""

    def __init__(self, factory: async_sessionmaker[AsyncSession]) -> None:
        self._factory = factory
        self._session: AsyncSession | None = None
        self.follow_up: FollowUp | None = None
        # The caller, once authenticated in this transaction (the idempotency claim does it
        # first on a POST with a key; the route's dependency then asks no second time).
        self.principal: Principal | None = None

    @property
    def session(self) -> AsyncSession:
        if self._session is None:
            self._session = self._factory()
        return self._session

    def new_session(self) -> AsyncSession:
        """A session of its own, outside the request's transaction (for after the commit)."""
        return self._factory()

    def answer_with(self, follow_up: FollowUp) -> None:
        """Run `follow_up` after the commit (with no session of the request open: it opens its
        own short ones); its result becomes the response body, with the same status, and the
        replay of the request's Idempotency-Key. Should it fail, the committed change still
        answers with the route's own response."""
        self.follow_up = follow_up

    async def commit(self) -> None:
        session = self._session
        if session is None:
            return
        if session.info.get(AUTOCOMMIT) and not (session.new or session.dirty or session.deleted):
            # Autocommit: every statement is committed already, and with nothing to flush a
            # commit would only walk the session's bookkeeping (a twentieth of a /v1/me).
            return
        await session.commit()

    async def rollback(self) -> None:
        """Roll back; a connection that broke meanwhile is discarded, never a second error."""
        if self._session is not None:
            try:
                await self._session.rollback()
            except (DBAPIError, OSError):
                log.warning("rollback on a broken connection; the connection is discarded")

    async def invalidate(self) -> None:
        if self._session is not None:
            try:
                await self._session.invalidate()
            except (DBAPIError, OSError):
                log.warning("invalidating a broken connection failed; it is discarded")
            self._session = None

    async def close(self) -> None:
        if self._session is not None:
            try:
                await self._session.close()
            except (DBAPIError, OSError):
                log.warning("closing a broken connection; the connection is discarded")


class UnitOfWork:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        app_state = scope["app"].state
        reads_only = scope["method"] in READ_METHODS
        work = Work(app_state.read_session_factory if reads_only else app_state.session_factory)
        scope.setdefault("state", {})["work"] = work
        request = _Request(self.app, scope, receive, send, work)
        # The route runs in a task of its own, so that the deadline's answer never waits for
        # the route to unwind: the driver, cancelled in a query, first asks the server to
        # cancel it and waits for that (up to ten seconds when the server is silent).
        route = asyncio.ensure_future(request.run())
        unwinding = False
        try:
            async with asyncio.timeout(app_state.settings.request_timeout) as deadline:
                request.deadline = deadline
                await asyncio.shield(route)
        except TimeoutError:
            if request.settled:
                raise
            route.cancel()
            # Whatever it waited for (a database that stopped answering, a lock), the work is
            # dropped unsaved: its connection is discarded, not rolled back over a dead line.
            late = ServiceUnavailable("The request took too long to complete; nothing was saved")
            await problem_response(late)(scope, receive, send)
            unwinding = True
            _in_background(_discard(route, work))
        except BaseException:
            route.cancel()  # the server gave up on the request (a client gone): so does the route
            with contextlib.suppress(BaseException):
                await route
            raise
        finally:
            if not unwinding:
                await work.close()


_UNWINDING: set[asyncio.Task[None]] = set()


def _in_background(work: Awaitable[None]) -> None:
    task = asyncio.ensure_future(work)
    _UNWINDING.add(task)  # held until done: the loop keeps only weak references to tasks
    task.add_done_callback(_UNWINDING.discard)


async def _discard(route: asyncio.Future[None], work: Work) -> None:
    """After a late answer: let the cancelled route unwind, then drop its connection."""
    with contextlib.suppress(BaseException):
        await route
    await work.invalidate()


class _Request:
    """One request through the unit of work: the idempotency claim, the route, and holding
    its response back until the transaction's fate is decided."""

    def __init__(
        self, app: ASGIApp, scope: Scope, receive: Receive, send: Send, work: Work
    ) -> None:
        self.app, self.scope, self.receive, self.send, self.work = app, scope, receive, send, work
        headers = Headers(scope=scope)
        self.authorization = headers.get("authorization")
        self.key = headers.get(idempotency.HEADER) if scope["method"] == "POST" else None
        self.caller = caller_fingerprint(self.authorization)
        self.keyring = encryption.keyring(scope["app"].state.settings)
        self.status = 0
        self.start: Message | None = None
        self.held: list[bytes] = []
        self.mode = "undecided"  # then "forward" (sent as it comes), "hold", or "drop"
        self.deadline: asyncio.Timeout | None = None
        self.settled = False  # committed or answered: no other answer is possible

    async def run(self) -> None:
        if self.key is not None and await self._replayed():
            return
        try:
            await self.app(self.scope, self.receive, self._on_send)
        except asyncio.CancelledError:
            raise  # the deadline, or a gone client: the caller drops the session, no wait here
        except BaseException:
            await self.work.rollback()
            raise

    async def _replayed(self) -> bool:
        """Claim the key for this request; True when the answer was a replay or a refusal."""
        assert self.key is not None
        body = await _read_body(self.receive)
        self.receive = replay_body(body, self.receive)
        try:
            idempotency.validate_key(self.key)
            if self.authorization:
                # A replay is an answer like any other: a revoked key must not get one.
                self.work.principal = await authenticate(self.work.session, self.authorization)
            stored = await idempotency.claim(
                self.work.session,
                keyring=self.keyring,
                caller=self.caller,
                key=self.key,
                method=self.scope["method"],
                path=self.scope["path"],
                fingerprint=idempotency.request_hash(
                    self.scope["method"],
                    self.scope["path"],
                    self.scope.get("query_string", b"").decode("latin-1"),
                    body,
                ),
            )
        except DomainError as error:
            await self.work.rollback()
            await self._answer(problem_response(error))
            return True
        except (DBAPIError, PoolTimeout) as exc:
            await self.work.rollback()
            await self._answer(database_error_response(exc))
            return True
        if stored is None:
            return False
        await self.work.rollback()
        replay = Response(
            stored.body,
            status_code=stored.status,
            media_type=stored.content_type,
            headers={"Idempotent-Replayed": "true"},
        )
        await self._answer(replay)
        return True

    async def _on_send(self, message: Message) -> None:
        if message["type"] == "http.response.start":
            self.status, self.start = message["status"], message
            if self.status >= 400:
                await self.work.rollback()
                self.mode = "forward"
            elif self.key is not None or self.work.follow_up is not None:
                self.mode = "hold"
                return
            else:
                self.mode = "forward" if await self._committed() else "drop"
            if self.mode == "forward":
                await self._send_start(message)
            return
        if message["type"] != "http.response.body" or self.mode == "forward":
            await self.send(message)
            return
        if self.mode == "hold":
            self.held.append(message.get("body", b""))
            if not message.get("more_body", False):
                await self._finish_held()

    async def _committed(self, stored: idempotency.StoredResponse | None = None) -> bool:
        """Commit (saving the idempotent answer first); on failure answer the problem."""
        try:
            if stored is not None and self.key is not None:
                await idempotency.save_response(
                    self.work.session,
                    keyring=self.keyring,
                    caller=self.caller,
                    key=self.key,
                    response=stored,
                )
            await self.work.commit()
            self._no_deadline()
        except (DBAPIError, PoolTimeout) as exc:
            await self.work.rollback()
            await self._answer(database_error_response(exc))
            return False
        return True

    async def _finish_held(self) -> None:
        assert self.start is not None
        body = b"".join(self.held)
        content_type = Headers(raw=self.start["headers"]).get("content-type", "application/json")
        stored = idempotency.StoredResponse(self.status, body, content_type)
        if not await self._committed(stored):
            return
        if self.work.follow_up is not None:
            await self._answer(await self._follow_up(self.work.follow_up))
            return
        await self._send_start(self.start)
        await self.send({"type": "http.response.body", "body": body, "more_body": False})

    async def _follow_up(self, follow_up: FollowUp) -> Response:
        assert self.start is not None
        try:
            result = await follow_up()
            answer = (
                result
                if isinstance(result, Response)  # a portal page's own redirect
                else JSONResponse(jsonable_encoder(result), status_code=self.status)
            )
        except Exception:
            log.exception("follow-up of %s %s failed", self.scope["method"], self.scope["path"])
            return Response(
                b"".join(self.held),
                status_code=self.status,
                headers=Headers(raw=self.start["headers"]),
            )
        if self.key is not None:
            async with self.work.new_session() as db:
                await idempotency.save_response(
                    db,
                    keyring=self.keyring,
                    caller=self.caller,
                    key=self.key,
                    response=idempotency.StoredResponse(
                        answer.status_code,
                        bytes(answer.body),
                        answer.media_type or "application/json",
                    ),
                )
                await db.commit()
        return answer

    async def _send_start(self, message: Message) -> None:
        self._no_deadline()
        await self.send(message)

    def _no_deadline(self) -> None:
        """The work is settled (committed or refused): what remains has no request deadline
        (a follow-up has its own, a streamed body the client's pace)."""
        self.settled = True
        if self.deadline is not None:
            self.deadline.reschedule(None)

    async def _answer(self, response: Response) -> None:
        self.mode = "drop"
        self._no_deadline()
        await response(self.scope, self.receive, self.send)


async def _read_body(receive: Receive) -> bytes:
    chunks = []
    while True:
        message = await receive()
        if message["type"] != "http.request":
            break
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            break
    return b"".join(chunks)


def work_of(state: Any) -> Work:
    work: Work = state.work
    return work
