"""The portal: server-rendered pages under /app for coordinators, therapists, finance and the
provider's admin, on the same service functions as the /v1 routers (HTTP only here, no SQL),
signed in with an API key (`signin`), rendered from the package's templates (`render`).
Left out of the OpenAPI document: the API is /v1; these are pages."""

from __future__ import annotations

from fastapi import APIRouter

from routers.portal import booking, home, invoices, observations, programs, staffing, therapist

# Order matters where paths overlap: /programs/new before /programs/{program_id}, and
# /invoices/run and /invoices/export.csv before /invoices/{invoice_id}.
ROUTERS: tuple[APIRouter, ...] = (
    home.router,
    booking.router,
    programs.router,
    therapist.router,
    observations.router,
    invoices.router,
    staffing.router,
)
