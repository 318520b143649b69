"""Exports for accounting: the invoice lines CSV (streamed) and revenue by month."""

from __future__ import annotations

import csv
import io
from collections.abc import AsyncIterator
from datetime import date, datetime, timedelta
from typing import Any

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from models.base import sql_values
from models.billing import InvoiceStatus
from models.reports import RevenueReport, RevenueRow
from models.types import Role
from service.core import zones
from service.core.auth import Principal, require_role
from service.core.clock import local_date, local_midnight
from service.core.errors import FieldError, ValidationFailed
from service.core.settings import Settings

FINANCE = (Role.admin, Role.finance)
CSV_COLUMNS = (
    "invoice_number",
    "status",
    "issued_at",
    "due_date",
    "organization_id",
    "organization_name",
    "currency",
    "session_id",
    "session_date",
    "description",
    "quantity",
    "unit_amount_cents",
    "amount_cents",
    "invoice_subtotal_cents",
    "invoice_tax_cents",
    "invoice_total_cents",
    "invoice_overpaid_cents",
)
BATCH_ROWS = 500
# OWASP CSV injection: a cell a spreadsheet would evaluate as a formula gets a leading quote.
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")

_EXPORT = text(
    f"""
    SELECT i.number AS invoice_number, i.status, i.issued_at, i.due_date, i.organization_id,
           o.name AS organization_name, i.currency, l.session_id,
           s.starts_at AS session_starts_at, o.timezone AS organization_timezone,
           l.description, l.quantity,
           l.unit_amount_cents, l.amount_cents, i.subtotal_cents AS invoice_subtotal_cents,
           i.tax_cents AS invoice_tax_cents, i.total_cents AS invoice_total_cents,
           i.overpaid_cents AS invoice_overpaid_cents
    FROM invoices i
    JOIN organizations o ON o.id = i.organization_id
    JOIN invoice_lines l ON l.invoice_id = i.id
    JOIN sessions s ON s.id = l.session_id
    WHERE i.status <> '{InvoiceStatus.draft.value}'
      AND i.issued_at >= :start AND i.issued_at < :end
    ORDER BY i.issued_at, i.number, s.starts_at, l.id
    """
)


def _cells(row: Any) -> list[Any]:
    """A CSV row: the session's date is local to its organization (Python's zone rules)."""
    values = {
        "issued_at": row.issued_at.isoformat(),
        "session_date": local_date(row.session_starts_at, row.organization_timezone),
    }
    return [values[name] if name in values else getattr(row, name) for name in CSV_COLUMNS]


def neutralize(value: Any) -> Any:
    if isinstance(value, str) and value.startswith(FORMULA_STARTS):
        return "'" + value
    return value


def _window(start: date, end: date, zone: str) -> tuple[datetime, datetime]:
    """Local dates start..end (inclusive) in the provider's zone, as instants."""
    if end < start:
        raise ValidationFailed([FieldError("to", "must not be before from", "order", "query")])
    return local_midnight(start, zone), local_midnight(end + timedelta(days=1), zone)


def authorize_export(
    principal: Principal, start: date, end: date, *, settings: Settings
) -> tuple[datetime, datetime]:
    require_role(principal, FINANCE, "export invoices")
    return _window(start, end, settings.timezone)


async def csv_chunks(
    factory: async_sessionmaker[AsyncSession], window: tuple[datetime, datetime]
) -> AsyncIterator[str]:
    """The CSV in chunks, read with a server-side cursor in its own read-only transaction (the
    response is still streaming after the request's unit of work has ended)."""
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(CSV_COLUMNS)
    async with factory() as db, db.begin():
        result = await db.stream(_EXPORT, {"start": window[0], "end": window[1]})
        async for rows in result.partitions(BATCH_ROWS):
            for row in rows:
                writer.writerow([neutralize(value) for value in _cells(row)])
            yield buffer.getvalue()
            buffer.seek(0)
            buffer.truncate()
    yield buffer.getvalue()


_REVENUE = text(
    f"""
    SELECT i.organization_id, i.currency,
           to_char({zones.local_time("i.issued_at")}, 'YYYY-MM') AS month,
           sum(i.total_cents)::bigint AS invoiced_cents,
           sum(i.amount_credited_cents)::bigint AS credited_cents,
           sum(i.amount_paid_cents)::bigint AS paid_cents,
           sum(i.total_cents - i.amount_paid_cents - i.amount_credited_cents)::bigint
               AS outstanding_cents,
           sum(i.overpaid_cents)::bigint AS overpaid_cents
    FROM invoices i
    {zones.offsets_join(":zone", "i.issued_at")}
    WHERE i.status IN ({sql_values((InvoiceStatus.open, InvoiceStatus.paid))})
      AND i.issued_at >= :start AND i.issued_at < :end
    GROUP BY 1, 2, 3
    ORDER BY 3, 1, 2
    """
)


async def revenue(
    db: AsyncSession, principal: Principal, *, start: date, end: date, settings: Settings
) -> RevenueReport:
    """Issued (not void) invoices by organization, currency and month of issue (provider's
    zone): invoiced, credited, paid, still outstanding, and received beyond the total
    (overpaid: not in paid, which never passes what was invoiced)."""
    require_role(principal, FINANCE, "read reports")
    low, high = _window(start, end, settings.timezone)
    rows = await db.execute(
        _REVENUE,
        {
            "zone": settings.timezone,
            "start": low,
            "end": high,
            **zones.offsets([settings.timezone], low, high).params(),
        },
    )
    return RevenueReport(data=[RevenueRow.model_validate(r, from_attributes=True) for r in rows])
