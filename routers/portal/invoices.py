"""Invoices: the list (by status and organization), one invoice with what may be done to it
(issue, record a payment, void, credit note), Run invoicing for a period, and Export CSV —
each through the billing service, as the /v1 billing routes."""

from __future__ import annotations

import uuid
from datetime import date, timedelta
from decimal import Decimal, InvalidOperation
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request, Response
from fastapi.responses import StreamingResponse
from pydantic import ValidationError

from models.billing import (
    CreditNoteCreate,
    InvoiceRunCreate,
    InvoiceStatus,
    PaymentCreate,
    PaymentMethod,
    StripeSyncStatus,
    VoidInvoice,
)
from models.types import Role
from routers.deps import AppSettings, DbSession
from routers.integrations import StripeAfterCommit, StripePush
from routers.portal.render import PortalRoute, field_errors, page, see_other, uuid_or_404
from routers.portal.signin import CheckedForm, CurrentVisitor, Form, Visitor
from service.billing import exports, invoices
from service.catalog import organizations
from service.core.auth import Principal
from service.core.clock import local_today
from service.core.errors import FieldError, ValidationFailed
from service.core.pagination import MAX_LIMIT, PageRequest

router = APIRouter(prefix="/app", include_in_schema=False, route_class=PortalRoute)
ALL = PageRequest(limit=MAX_LIMIT)
STAFF = (Role.admin, Role.finance)


async def _organization_names(db: DbSession, principal: Principal) -> dict[uuid.UUID, str]:
    orgs = await organizations.list_organizations(db, principal, ALL)
    return {o.id: o.name for o in orgs.data}


def _status(value: str | None) -> InvoiceStatus | None:
    return InvoiceStatus(value) if value in set(InvoiceStatus) else None


def _org(value: str | None) -> uuid.UUID | None:
    try:
        return uuid.UUID(value) if value else None
    except ValueError:
        return None


@router.get("/invoices")
async def portal_invoices(
    request: Request,
    visitor: CurrentVisitor,
    db: DbSession,
    settings: AppSettings,
    status: Annotated[str | None, Query(max_length=20)] = None,
    organization_id: Annotated[str | None, Query(max_length=40)] = None,
) -> Response:
    principal = visitor.principal
    listed = await invoices.list_invoices(
        db, principal, ALL, organization_id=_org(organization_id), status=_status(status)
    )
    today = local_today(settings.timezone)
    return page(
        request,
        "invoices.html",
        visitor,
        title="Invoices",
        invoices=listed.data,
        names=await _organization_names(db, principal),
        statuses=list(InvoiceStatus),
        chosen_status=status or "",
        chosen_org=organization_id or "",
        staff=principal.role in STAFF,
        export_from=today.replace(day=1).isoformat(),
        export_to=today.isoformat(),
        notice=request.query_params.get("notice", "")[:200],
    )


@router.get("/invoices/export.csv")
async def portal_export_csv(
    request: Request,
    visitor: CurrentVisitor,
    settings: AppSettings,
    start: Annotated[date, Query(alias="from")],
    end: Annotated[date, Query(alias="to")],
) -> Response:
    """The same stream as GET /v1/invoices/export.csv."""
    window = exports.authorize_export(visitor.principal, start, end, settings=settings)
    return StreamingResponse(
        exports.csv_chunks(request.app.state.session_factory, window),
        media_type="text/csv; charset=utf-8",
        headers={"Content-Disposition": f'attachment; filename="invoices-{start}-{end}.csv"'},
    )


def _run_page(
    request: Request,
    visitor: Visitor,
    names: dict[uuid.UUID, str],
    *,
    values: dict[str, str],
    errors: dict[str, str] | None = None,
) -> Response:
    return page(
        request,
        "run_invoicing.html",
        visitor,
        status=422 if errors else 200,
        title="Run invoicing",
        names=names,
        values=values,
        errors=errors or {},
    )


@router.get("/invoices/run")
async def portal_run_page(
    request: Request, visitor: CurrentVisitor, db: DbSession, settings: AppSettings
) -> Response:
    last_month_end = local_today(settings.timezone).replace(day=1) - timedelta(days=1)
    values = {
        "period_start": last_month_end.replace(day=1).isoformat(),
        "period_end": last_month_end.isoformat(),
    }
    names = await _organization_names(db, visitor.principal)
    return _run_page(request, visitor, names, values=values)


@router.post("/invoices/run")
async def portal_run(
    request: Request, visitor: CurrentVisitor, form: CheckedForm, db: DbSession
) -> Response:
    values = {k: form.get(k).strip() for k in ("period_start", "period_end", "organization_id")}
    try:
        data = InvoiceRunCreate.model_validate({k: v or None for k, v in values.items()})
        drafts = await invoices.run(db, visitor.principal, data)
    except (ValidationFailed, ValidationError) as exc:
        names = await _organization_names(db, visitor.principal)
        return _run_page(request, visitor, names, values=values, errors=field_errors(exc))
    notice = f"Invoicing run: {len(drafts.data)} draft invoice(s) made or added to."
    return see_other(f"/app/invoices?status=draft&notice={notice}")


async def _invoice_page(
    request: Request,
    visitor: Visitor,
    db: DbSession,
    invoice_id: uuid.UUID,
    *,
    errors: dict[str, str] | None = None,
    values: dict[str, str] | None = None,
) -> Response:
    principal = visitor.principal
    invoice = await invoices.detail(db, await invoices.get_visible(db, principal, invoice_id))
    names = await _organization_names(db, principal)
    return page(
        request,
        "invoice.html",
        visitor,
        status=422 if errors else 200,
        title=f"Invoice {invoice.number or '(draft)'}",
        invoice=invoice,
        organization=names.get(invoice.organization_id, ""),
        staff=principal.role in STAFF,
        methods=[
            (m.value, m.value.replace("_", " ")) for m in PaymentMethod if m != PaymentMethod.stripe
        ],
        errors=errors or {},
        values=values or {},
    )


@router.get("/invoices/{invoice_id}")
async def portal_invoice(
    request: Request, invoice_id: str, visitor: CurrentVisitor, db: DbSession
) -> Response:
    return await _invoice_page(request, visitor, db, uuid_or_404(invoice_id))


def _after_commit(
    stripe: StripeAfterCommit | None, invoice_id: uuid.UUID, principal: Principal
) -> Response:
    """Back to the invoice; with Stripe on, the push runs after the commit, as for the API."""
    url = f"/app/invoices/{invoice_id}"
    if stripe is not None and stripe.enabled:

        async def pushed_then_back() -> Response:
            await stripe.sync.sync_then_read(invoice_id, principal)
            return see_other(url)

        stripe.work.answer_with(pushed_then_back)
    return see_other(url)


def _cents(form: Form, name: str) -> int:
    try:
        amount = Decimal(form.get(name).strip().replace(",", ""))
    except InvalidOperation:
        amount = Decimal(-1)
    if amount <= 0 or amount != amount.quantize(Decimal("0.01")) or amount > 10**10:
        raise ValidationFailed([FieldError(name, "Enter an amount such as 120.00.")])
    return int(amount * 100)


@router.post("/invoices/{invoice_id}/{action}")
async def portal_invoice_action(
    request: Request,
    invoice_id: str,
    action: str,
    visitor: CurrentVisitor,
    form: CheckedForm,
    db: DbSession,
    settings: AppSettings,
    stripe: StripePush,
) -> Response:
    principal, target = visitor.principal, uuid_or_404(invoice_id)
    values = form.values()
    push = True
    try:
        if action == "issue":
            await invoices.issue(
                db, principal, target, stripe_enabled=stripe.enabled, settings=settings
            )
        elif action == "payments":
            payment = PaymentCreate.model_validate(
                {
                    "amount_cents": _cents(form, "amount"),
                    "method": form.get("method"),
                    "reference": form.get("reference").strip() or None,
                }
            )
            recorded = await invoices.record_payment(db, principal, target, payment)
            push = recorded.stripe_sync_status == StripeSyncStatus.pending
        elif action == "credit-notes":
            credit: dict[str, Any] = {
                "amount_cents": _cents(form, "credit_amount"),
                "reason": form.get("credit_reason").strip() or None,
            }
            await invoices.add_credit_note(
                db, principal, target, CreditNoteCreate.model_validate(credit), settings=settings
            )
        elif action == "void":
            reason = form.get("void_reason").strip() or None
            await invoices.void(
                db, principal, target, VoidInvoice.model_validate({"reason": reason})
            )
        else:
            return see_other(f"/app/invoices/{target}")
    except (ValidationFailed, ValidationError) as exc:
        errors = field_errors(exc)
        renamed = {
            "amount_cents": "amount",
            "reason": "void_reason" if action == "void" else "credit_reason",
        }
        if action == "credit-notes":
            renamed["amount_cents"] = "credit_amount"
        errors = {renamed.get(k, k): v for k, v in errors.items()}
        return await _invoice_page(request, visitor, db, target, errors=errors, values=values)
    return _after_commit(stripe if push else None, target, principal)
