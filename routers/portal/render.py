"""How the portal answers: pages rendered from the package's Jinja2 templates, and the route
class that turns the domain's errors into pages (404 and 403 pages, a redirect to sign in)
instead of problem+json. HTTP only: what a page shows comes from the service functions."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Coroutine
from datetime import date, datetime
from typing import Any
from zoneinfo import ZoneInfo

from fastapi import Request, Response
from fastapi.responses import HTMLResponse, RedirectResponse
from fastapi.routing import APIRoute
from jinja2 import Environment, PackageLoader, select_autoescape
from pydantic import ValidationError

from models.types import Role
from routers.portal.signin import (
    COOKIE,
    SIGNIN_REFUSED,
    SignInRequired,
    Visitor,
    clear_cookie,
)
from service.core.errors import DomainError, NotFound, ValidationFailed
from service.reports import outcomes_pdf

SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; style-src 'self'; img-src 'self'; form-action 'self'; "
        "frame-ancestors 'none'; base-uri 'none'"
    ),
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-store",
}

# Each role's menu: (label, path). The contract's labels, as visible text.
MENUS: dict[Role, list[tuple[str, str]]] = {
    Role.coordinator: [
        ("Programs", "/app/programs"),
        ("Book a program", "/app/programs/new"),
        ("Invoices", "/app/invoices"),
    ],
    Role.therapist: [("My week", "/app/week"), ("Time off", "/app/time-off")],
    Role.finance: [("Invoices", "/app/invoices"), ("Run invoicing", "/app/invoices/run")],
    Role.admin: [
        ("Needs a therapist", "/app/needs-therapist"),
        ("Programs", "/app/programs"),
        ("Book a program", "/app/programs/new"),
        ("Invoices", "/app/invoices"),
        ("Run invoicing", "/app/invoices/run"),
    ],
}
HOME = {
    Role.coordinator: "/app/programs",
    Role.therapist: "/app/week",
    Role.finance: "/app/invoices",
    Role.admin: "/app/needs-therapist",
}


def money(cents: int | None, currency: str = "") -> str:
    if cents is None:
        return ""
    sign = "-" if cents < 0 else ""
    whole, part = divmod(abs(cents), 100)
    return f"{sign}{currency} {whole:,}.{part:02d}".strip()


def local(moment: datetime | None, zone: str, fmt: str = "%a %d %b %Y, %H:%M") -> str:
    if moment is None:
        return ""
    return moment.astimezone(ZoneInfo(zone)).strftime(fmt)


def day(value: date | None) -> str:
    return value.strftime("%a %d %b %Y") if value else ""


def words(value: object) -> str:
    """An enum value in plain words: `late_cancelled` -> "late cancelled"."""
    text = str(getattr(value, "value", value))
    return text.replace("_", " ")


TEMPLATES = Environment(
    loader=PackageLoader("routers.portal", "templates"),
    autoescape=select_autoescape(["html"]),
    trim_blocks=True,
    lstrip_blocks=True,
)
# Averages and rates written as the board's PDF writes them ("withheld" for a null average).
TEMPLATES.filters.update(
    money=money,
    local=local,
    day=day,
    words=words,
    two=outcomes_pdf.two,
    percent=outcomes_pdf.percent,
)


def page(
    request: Request,
    template: str,
    visitor: Visitor | None = None,
    *,
    status: int = 200,
    **context: Any,
) -> HTMLResponse:
    role = visitor.principal.role if visitor else None
    html = TEMPLATES.get_template(template).render(
        request=request,
        path=request.url.path,
        visitor=visitor,
        role=role.value if role else None,
        menu=MENUS.get(role, []) if role else [],
        csrf=visitor.csrf if visitor else "",
        **context,
    )
    return HTMLResponse(html, status_code=status, headers=SECURITY_HEADERS)


def see_other(url: str) -> RedirectResponse:
    return RedirectResponse(url, status_code=303, headers={"Cache-Control": "no-store"})


def uuid_or_404(value: str) -> uuid.UUID:
    try:
        return uuid.UUID(value)
    except ValueError:
        raise NotFound("No such page") from None


# Pydantic's messages for the mistakes a person makes in a form, in plain words.
PLAIN = {
    "missing": "This is required.",
    "int_parsing": "Enter a whole number.",
    "int_type": "Enter a whole number.",
    "uuid_parsing": "Choose one from the list.",
    "uuid_type": "Choose one from the list.",
    "date_from_datetime_parsing": "Enter a date.",
    "date_parsing": "Enter a date.",
    "time_parsing": "Enter a time such as 10:30.",
    "enum": "Choose one of the options.",
    "string_too_short": "This is required.",
}


def field_errors(exc: ValidationFailed | ValidationError) -> dict[str, str]:
    """Errors by field name (`schedule.start_date`), in plain words, the first per field."""
    found: dict[str, str] = {}
    if isinstance(exc, ValidationError):
        for item in exc.errors():
            parts = [str(p) for p in item.get("loc", ()) if not isinstance(p, int)]
            message = PLAIN.get(item.get("type", ""), str(item.get("msg", "is invalid")))
            found.setdefault(".".join(parts) or "form", message.removeprefix("Value error, "))
        return found
    for error in exc.errors:
        found.setdefault(error.field, error.message)
    return found


def error_page(request: Request, error: DomainError, visitor: Visitor | None) -> HTMLResponse:
    titles = {404: "Not found", 403: "Not allowed", 409: "Cannot do that now"}
    return page(
        request,
        "error.html",
        visitor,
        status=error.status,
        title=titles.get(error.status, error.title),
        detail=error.detail,
    )


class PortalRoute(APIRoute):
    """A portal page: a domain error becomes an HTML page with its status (so the unit of
    work rolls back as for the API), and a missing or ended session a redirect to sign in."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def portal_handler(request: Request) -> Response:
            try:
                return await handler(request)
            except SignInRequired:
                if request.cookies.get(COOKIE):
                    request.scope.setdefault("state", {})[SIGNIN_REFUSED] = True
                response = see_other("/app/login")
                clear_cookie(response, request.app.state.settings)
                # A redirect is a success to the unit of work; nothing was changed.
                return response
            except DomainError as error:
                return error_page(request, error, _visitor_of(request))

        return portal_handler


def _visitor_of(request: Request) -> Visitor | None:
    visitor = getattr(request.state, "portal_visitor", None)
    return visitor if isinstance(visitor, Visitor) else None
