"""Request bodies are bounded in size and in time, and read whole before the app sees them.

A body over `ENSEMBLE_MAX_BODY_BYTES` is a 413 (announced by Content-Length: refused before a
byte of it is read; chunked: refused as soon as the count passes the limit, the rest unread).
A client that stops sending is a 408 after `ENSEMBLE_BODY_TIMEOUT` seconds. Only then does the
request reach the unit of work, so a slow or huge upload never holds a database connection.
"""

from __future__ import annotations

import asyncio

from starlette.datastructures import Headers
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from routers.problems import problem_response
from service.core.errors import DomainError


class BodyTooLarge(DomainError):
    status, slug, title = 413, "body-too-large", "Request body too large"


class BodyTimeout(DomainError):
    status, slug, title = 408, "request-timeout", "Request body not received in time"


class _Refused(Exception):
    def __init__(self, error: DomainError) -> None:
        self.error = error


class BodyLimit:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        settings = scope["app"].state.settings
        limit: int = settings.max_body_bytes
        declared = Headers(scope=scope).get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > limit:
            await problem_response(_too_large(limit))(scope, receive, send)
            return
        try:
            async with asyncio.timeout(settings.body_timeout):
                body = await _read(receive, limit)
        except TimeoutError:
            late = BodyTimeout(
                f"The request body did not arrive within {settings.body_timeout:g} seconds"
            )
            await problem_response(late)(scope, receive, send)
            return
        except _Refused as refused:
            await problem_response(refused.error)(scope, receive, send)
            return
        if body is None:  # the client went away
            return
        await self.app(scope, replay_body(body, receive), send)


def _too_large(limit: int) -> BodyTooLarge:
    return BodyTooLarge(f"The request body may be at most {limit} bytes")


async def _read(receive: Receive, limit: int) -> bytes | None:
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return None
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise _Refused(_too_large(limit))
        chunks.append(chunk)
        if not message.get("more_body", False):
            return b"".join(chunks)


def replay_body(body: bytes, receive: Receive) -> Receive:
    """The whole body at once, then the client's own messages (a disconnect)."""
    sent = False

    async def replayed() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replayed
