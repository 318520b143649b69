"""Signing in to the portal: an API key, given once, becomes a session cookie.

The cookie holds the key encrypted and authenticated under ENSEMBLE_SECRET_KEY
(`core.encryption`, purpose `portal-session`) with its CSRF token and expiry, so it can be
neither read nor forged; HttpOnly, SameSite=Lax, Secure in production, scoped to /app.
Every page load decrypts it and authenticates the key through `core.auth.authenticate`, the
API's own path: a revoked key, or one ended by off-boarding, signs the visitor out on the next
page. Every form carries the session's CSRF token and every POST is checked against it.
"""

from __future__ import annotations

import hmac
import json
import secrets
import time
from dataclasses import dataclass
from typing import Annotated
from urllib.parse import parse_qsl

from fastapi import Depends, Request, Response

from routers.deps import AppSettings, DbSession
from service.core.auth import Principal, authenticate
from service.core.encryption import DecryptionFailed, keyring
from service.core.errors import DomainError, Unauthorized
from service.core.settings import Settings

COOKIE = "ensemble_portal"
SIGNIN_CSRF_COOKIE = "ensemble_signin"
PURPOSE = "portal-session"
PATH = "/app"
MAX_FORM_BYTES = 64 * 1024
# Set in the request's state when a session cookie no longer signs in (the rate limit counts
# it against the address, as it counts a failed API key).
SIGNIN_REFUSED = "portal_signin_refused"


class SignInRequired(Exception):
    """No session, an expired or altered one, or a key that no longer authenticates."""


class CsrfRefused(DomainError):
    status, slug, title = 403, "csrf", "The form has expired"


@dataclass(frozen=True)
class Visitor:
    principal: Principal
    csrf: str


class Form:
    """A submitted urlencoded form: the last value of a field, or all of them."""

    def __init__(self, pairs: list[tuple[str, str]]) -> None:
        self.pairs = pairs

    def get(self, name: str, default: str = "") -> str:
        values = self.getlist(name)
        return values[-1] if values else default

    def getlist(self, name: str) -> list[str]:
        return [value for key, value in self.pairs if key == name]

    def values(self) -> dict[str, str]:
        return dict(self.pairs)


async def read_form(request: Request) -> Form:
    body = await request.body()
    if len(body) > MAX_FORM_BYTES:
        raise CsrfRefused("The form is too large")
    text = body.decode("utf-8", errors="replace")
    return Form(parse_qsl(text, keep_blank_values=True, max_num_fields=500))


def new_cookie(settings: Settings, api_key: str) -> tuple[str, str]:
    """The sealed cookie value for a key that just authenticated, and its CSRF token."""
    csrf = secrets.token_urlsafe(32)
    expires = int(time.time()) + settings.portal_session_hours * 3600
    payload = json.dumps({"key": api_key, "csrf": csrf, "exp": expires})
    return keyring(settings).encrypt_text(PURPOSE, payload), csrf


def _opened(settings: Settings, cookie: str) -> dict[str, object]:
    try:
        payload = json.loads(keyring(settings).decrypt_text(PURPOSE, cookie))
    except (DecryptionFailed, ValueError, UnicodeDecodeError) as exc:
        raise SignInRequired from exc
    if not isinstance(payload, dict) or not isinstance(payload.get("exp"), int):
        raise SignInRequired
    if payload["exp"] <= time.time():
        raise SignInRequired
    return payload


def set_cookie(response: Response, settings: Settings, name: str, value: str) -> None:
    response.set_cookie(
        name,
        value,
        max_age=settings.portal_session_hours * 3600,
        path=PATH,
        httponly=True,
        samesite="lax",
        secure=settings.environment == "production",
    )


def clear_cookie(response: Response, settings: Settings) -> None:
    response.delete_cookie(
        COOKIE,
        path=PATH,
        httponly=True,
        samesite="lax",
        secure=settings.environment == "production",
    )


async def current_visitor(request: Request, db: DbSession, settings: AppSettings) -> Visitor:
    cookie = request.cookies.get(COOKIE)
    if not cookie or len(cookie) > 2000:
        raise SignInRequired
    payload = _opened(settings, cookie)
    key, csrf = payload.get("key"), payload.get("csrf")
    if not isinstance(key, str) or not isinstance(csrf, str):
        raise SignInRequired
    try:
        principal = await authenticate(db, f"Bearer {key}")
    except Unauthorized as exc:
        raise SignInRequired from exc
    visitor = Visitor(principal, csrf)
    request.state.portal_visitor = visitor  # for the error pages (routers.portal.render)
    return visitor


CurrentVisitor = Annotated[Visitor, Depends(current_visitor)]


async def checked_form(request: Request, visitor: CurrentVisitor) -> Form:
    """The POSTed form, once its CSRF token matches the session's."""
    form = await read_form(request)
    if not hmac.compare_digest(form.get("csrf").encode(), visitor.csrf.encode()):
        raise CsrfRefused("The form has expired; reload the page and send it again")
    return form


CheckedForm = Annotated[Form, Depends(checked_form)]
