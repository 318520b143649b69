"""Invoice runs, invoices, payments, credit notes and the accounting export."""

from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import APIRouter, Body, Query, Request, Response, status
from fastapi.responses import StreamingResponse

from models.base import Page
from models.billing import (
    CreditNoteCreate,
    InvoiceDetail,
    InvoiceList,
    InvoiceRead,
    InvoiceRunCreate,
    InvoiceStatus,
    PaymentCreate,
    StripeSyncStatus,
    VoidInvoice,
)
from routers.deps import (
    AppSettings,
    CurrentPrincipal,
    Dates,
    DbSession,
    PageParams,
)
from routers.integrations import StripePush
from service.billing import exports, invoices

router = APIRouter(prefix="/v1", tags=["billing"])


@router.post("/invoice-runs", status_code=status.HTTP_201_CREATED)
async def create_invoice_run(
    body: InvoiceRunCreate, db: DbSession, principal: CurrentPrincipal
) -> InvoiceList:
    """Bill every billable session of the period not yet on a live invoice (admin, finance):
    completed at the program's rate, late-cancelled and no-show at the offering's fee. Each
    organization has at most one draft per currency, which the run adds to or creates.
    Answers the drafts touched; running again adds nothing."""
    return await invoices.run(db, principal, body)


@router.get("/invoices")
async def list_invoices(
    db: DbSession,
    principal: CurrentPrincipal,
    page: PageParams,
    organization_id: uuid.UUID | None = None,
    status: Annotated[InvoiceStatus | None, Query()] = None,
) -> Page[InvoiceRead]:
    """Invoices (admin, finance; a coordinator sees their organization's issued invoices)."""
    return await invoices.list_invoices(
        db, principal, page, organization_id=organization_id, status=status
    )


@router.get(
    "/invoices/export.csv",
    response_class=StreamingResponse,
    responses={200: {"content": {"text/csv": {}}, "description": "One row per invoice line"}},
)
async def export_invoices(
    request: Request,
    principal: CurrentPrincipal,
    settings: AppSettings,
    period: Dates,
) -> StreamingResponse:
    """Issued invoices by issue date (`from`..`to`, inclusive, provider's zone), one row per
    line, streamed (admin, finance). Cells a spreadsheet would run as formulas are quoted."""
    window = exports.authorize_export(principal, period.start, period.end, settings=settings)
    name = f"invoices-{period.start}-{period.end}.csv"
    return StreamingResponse(
        exports.csv_chunks(request.app.state.session_factory, window),
        media_type="text/csv; charset=utf-8",
        headers={"Content-Disposition": f'attachment; filename="{name}"'},
    )


@router.get("/invoices/{invoice_id}")
async def get_invoice(
    invoice_id: uuid.UUID, db: DbSession, principal: CurrentPrincipal
) -> InvoiceDetail:
    """One invoice with its lines, payments and credit notes."""
    return await invoices.detail(db, await invoices.get_visible(db, principal, invoice_id))


@router.delete("/invoices/{invoice_id}", status_code=status.HTTP_204_NO_CONTENT)
async def delete_invoice(
    invoice_id: uuid.UUID, db: DbSession, principal: CurrentPrincipal
) -> Response:
    """Discard a draft (admin, finance); its sessions become billable again."""
    await invoices.delete_draft(db, principal, invoice_id)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.post("/invoices/{invoice_id}/issue")
async def issue_invoice(
    invoice_id: uuid.UUID,
    db: DbSession,
    principal: CurrentPrincipal,
    settings: AppSettings,
    stripe: StripePush,
) -> InvoiceDetail:
    """Issue a draft: number it (INV-YYYY-NNNNNN, gapless), freeze it, set the due date.
    With Stripe configured, the issued invoice is then pushed to Stripe; the answer shows the
    outcome (`stripe_sync_status` `synced`, or `failed`: the invoice is issued all the same,
    and `POST /v1/invoices/{id}/stripe-sync` resumes the push)."""
    issued = await invoices.issue(
        db, principal, invoice_id, stripe_enabled=stripe.enabled, settings=settings
    )
    stripe.push(invoice_id, principal)
    return issued


@router.post("/invoices/{invoice_id}/void")
async def void_invoice(
    invoice_id: uuid.UUID,
    db: DbSession,
    principal: CurrentPrincipal,
    stripe: StripePush,
    body: Annotated[VoidInvoice | None, Body()] = None,
) -> InvoiceDetail:
    """Void an open invoice with nothing paid or credited; its sessions become billable again
    and its number stays used. An invoice pushed to Stripe is voided there too."""
    voided = await invoices.void(db, principal, invoice_id, body or VoidInvoice())
    stripe.push(invoice_id, principal)
    return voided


@router.post("/invoices/{invoice_id}/stripe-sync")
async def sync_invoice_to_stripe(
    invoice_id: uuid.UUID,
    db: DbSession,
    principal: CurrentPrincipal,
    stripe: StripePush,
) -> InvoiceDetail:
    """Push an issued invoice to Stripe again (admin, finance): resumes a push that failed
    where it stopped, without duplicating anything in Stripe; also pushes an invoice issued
    before Stripe was configured. 409 when Stripe is not configured."""
    marked = await invoices.request_stripe_sync(
        db, principal, invoice_id, stripe_enabled=stripe.enabled
    )
    stripe.push(invoice_id, principal)
    return marked


@router.post("/invoices/{invoice_id}/payments", status_code=status.HTTP_201_CREATED)
async def record_payment(
    invoice_id: uuid.UUID,
    body: PaymentCreate,
    db: DbSession,
    principal: CurrentPrincipal,
    stripe: StripePush,
) -> InvoiceDetail:
    """Record a payment on an open invoice, at most the amount due; at zero due it is paid.
    A payment that settles an invoice pushed to Stripe marks the Stripe invoice paid out of
    band (after commit; `stripe_sync_status` shows the outcome, and
    `POST /v1/invoices/{id}/stripe-sync` resumes it); a partial one is not mirrored."""
    recorded = await invoices.record_payment(db, principal, invoice_id, body)
    if recorded.stripe_sync_status == StripeSyncStatus.pending:
        stripe.push(invoice_id, principal)
    return recorded


@router.post("/invoices/{invoice_id}/credit-notes", status_code=status.HTTP_201_CREATED)
async def add_credit_note(
    invoice_id: uuid.UUID,
    body: CreditNoteCreate,
    db: DbSession,
    principal: CurrentPrincipal,
    settings: AppSettings,
    stripe: StripePush,
) -> InvoiceDetail:
    """Credit an open invoice, at most the amount due (CN-YYYY-NNNNNN, its own gapless series).
    An invoice pushed to Stripe gets the same credit note there (after commit)."""
    credited = await invoices.add_credit_note(db, principal, invoice_id, body, settings=settings)
    stripe.push(invoice_id, principal)
    return credited
