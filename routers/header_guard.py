"""Request headers carry no control characters: a header whose name or value holds NUL, CR, LF
or any other control character (HTAB aside, which RFC 9110 allows in values) is a 422 naming
the header, before any route, log line or database statement sees it. HTTP servers in front
usually refuse these already; this holds the rule when they do not (or when one is absent)."""

from __future__ import annotations

import re

from starlette.types import ASGIApp, Receive, Scope, Send

from routers.problems import problem_response
from service.core.errors import FieldError, ValidationFailed

_CONTROL = re.compile(rb"[\x00-\x08\x0a-\x1f\x7f]")


def refused_headers(headers: list[tuple[bytes, bytes]]) -> list[FieldError]:
    """One error per header with a control character in its name or value."""
    errors: list[FieldError] = []
    for name, value in headers:
        if _CONTROL.search(name) or _CONTROL.search(value):
            printable = _CONTROL.sub(b"?", name).decode("latin-1").lower()
            errors.append(
                FieldError(
                    printable, "must not contain control characters", "control_character", "header"
                )
            )
    return errors


class HeaderGuard:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            errors = refused_headers(scope["headers"])
            if errors:
                await problem_response(ValidationFailed(errors))(scope, receive, send)
                return
        await self.app(scope, receive, send)
