"""Sign in, sign out, the landing page of each role, and the stylesheet."""

from __future__ import annotations

import hmac
import secrets
from importlib.resources import files

from fastapi import APIRouter, Request, Response

from routers.deps import AppSettings, DbSession
from routers.portal.render import HOME, PortalRoute, page, see_other
from routers.portal.signin import (
    COOKIE,
    SIGNIN_CSRF_COOKIE,
    CheckedForm,
    CurrentVisitor,
    clear_cookie,
    new_cookie,
    read_form,
    set_cookie,
)
from service.core.auth import authenticate
from service.core.errors import Unauthorized

router = APIRouter(prefix="/app", include_in_schema=False, route_class=PortalRoute)
STYLESHEET = files("routers.portal").joinpath("static/portal.css").read_bytes()


@router.get("/static/portal.css")
async def portal_stylesheet() -> Response:
    return Response(
        STYLESHEET, media_type="text/css", headers={"Cache-Control": "public, max-age=3600"}
    )


@router.get("")
@router.get("/")
async def portal_home(visitor: CurrentVisitor) -> Response:
    return see_other(HOME[visitor.principal.role])


def _signin_page(request: Request, settings: AppSettings, *, error: str = "") -> Response:
    token = secrets.token_urlsafe(32)
    response = page(
        request,
        "login.html",
        status=401 if error else 200,
        title="Sign in",
        signin_csrf=token,
        error=error,
    )
    set_cookie(response, settings, SIGNIN_CSRF_COOKIE, token)
    return response


@router.get("/login")
async def portal_login_page(request: Request, settings: AppSettings) -> Response:
    return _signin_page(request, settings)


@router.post("/login")
async def portal_login(request: Request, db: DbSession, settings: AppSettings) -> Response:
    """The key authenticates exactly as an API request would; the key itself is never sent
    back in the page (a failed sign-in shows an empty field)."""
    form = await read_form(request)
    expected = request.cookies.get(SIGNIN_CSRF_COOKIE, "")
    if not expected or not hmac.compare_digest(form.get("csrf").encode(), expected.encode()):
        return _signin_page(request, settings, error="The form had expired; sign in again.")
    api_key = form.get("api_key").strip()
    if not api_key:
        return _signin_page(request, settings, error="Enter your API key.")
    try:
        principal = await authenticate(db, f"Bearer {api_key}")
    except Unauthorized:
        return _signin_page(request, settings, error="That API key is unknown or has been revoked.")
    cookie, _ = new_cookie(settings, api_key)
    response = see_other(HOME[principal.role])
    set_cookie(response, settings, COOKIE, cookie)
    response.delete_cookie(SIGNIN_CSRF_COOKIE, path="/app")
    return response


@router.post("/logout")
async def portal_logout(form: CheckedForm, settings: AppSettings) -> Response:
    response = see_other("/app/login")
    clear_cookie(response, settings)
    return response
