"""Invoice runs: bill every billable session of a period exactly once, set-based.

A fixed number of statements whatever the number of sessions: upsert one draft per
organization and currency, insert the lines with INSERT ... SELECT (ON CONFLICT on the
one-live-line-per-session index skips what a concurrent run billed first) on the drafts the
upsert holds, then recompute the touched drafts' totals. Sessions are not rewritten: a
session's invoice is its live line's."""

from __future__ import annotations

import uuid
from datetime import date

from sqlalchemy import select, text
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col

from models.base import sql_values
from models.billing import InvoiceStatus, StripeSyncStatus
from models.organizations import Organization
from models.sessions import BILLABLE_STATUSES, SessionStatus
from service.billing.amounts import LINE_AMOUNT_SQL, TAX_SQL
from service.core import zones

DRAFT = InvoiceStatus.draft.value

# Each session with the UTC offset of its organization's zone at its start (service.core.zones:
# Python's rules, never the database server's).
_SESSIONS = f"""
    FROM sessions s
    JOIN programs p ON p.id = s.program_id
    JOIN offerings f ON f.id = p.offering_id
    JOIN organizations o ON o.id = s.organization_id
    {zones.offsets_join("o.timezone", "s.starts_at")}
"""
_LOCAL_START = zones.local_time("s.starts_at")
# Billable in the period: delivered, late-cancelled or no-show, dated (in the organization's
# zone) inside the period, and not already on a live line.
_BILLABLE = f"""
    WHERE s.status IN ({sql_values(BILLABLE_STATUSES)})
      AND s.starts_at >= :utc_low AND s.starts_at < :utc_high
      AND {_LOCAL_START}::date BETWEEN :period_start AND :period_end
      AND (CAST(:organization_id AS uuid) IS NULL OR s.organization_id = :organization_id)
      AND NOT EXISTS (SELECT 1 FROM invoice_lines l WHERE l.session_id = s.id AND l.live)
"""

_UPSERT_DRAFTS = text(
    f"""
    INSERT INTO invoices (id, organization_id, currency, status, period_start, period_end,
                          tax_rate_bps, subtotal_cents, tax_cents, total_cents,
                          amount_paid_cents, amount_credited_cents, stripe_sync_status,
                          created_at, updated_at)
    SELECT gen_random_uuid(), s.organization_id, p.currency, '{DRAFT}', :period_start,
           :period_end, 0, 0, 0, 0, 0, 0, '{StripeSyncStatus.disabled.value}', now(), now()
    {_SESSIONS} {_BILLABLE}
    GROUP BY s.organization_id, p.currency
    ON CONFLICT (organization_id, currency) WHERE status = '{DRAFT}'
    DO UPDATE SET period_start = least(invoices.period_start, excluded.period_start),
                  period_end = greatest(invoices.period_end, excluded.period_end),
                  updated_at = now()
    RETURNING id
    """
)

_BILL_SESSIONS = text(
    f"""
    WITH billed AS (
        INSERT INTO invoice_lines (id, invoice_id, session_id, description, quantity,
                                   unit_amount_cents, amount_cents, live, created_at)
        SELECT gen_random_uuid(), i.id, s.id,
               left(p.title || ' (' || f.name || '), '
                    || to_char({_LOCAL_START}, 'YYYY-MM-DD HH24:MI')
                    || CASE s.status WHEN '{SessionStatus.completed.value}' THEN ''
                                     WHEN '{SessionStatus.no_show.value}' THEN ', no-show fee'
                                     ELSE ', late cancellation fee' END, 500),
               1, {LINE_AMOUNT_SQL}, {LINE_AMOUNT_SQL}, true, now()
        {_SESSIONS}
        JOIN invoices i ON i.organization_id = s.organization_id AND i.currency = p.currency
                       AND i.status = '{DRAFT}' AND i.id = ANY(CAST(:drafts AS uuid[]))
        {_BILLABLE}
        ON CONFLICT (session_id) WHERE live DO NOTHING
        RETURNING invoice_id
    )
    SELECT DISTINCT invoice_id FROM billed
    """
)

_RECOMPUTE_DRAFTS = text(
    f"""
    UPDATE invoices i
    SET subtotal_cents = t.subtotal,
        tax_rate_bps = t.bps,
        tax_cents = {TAX_SQL.format(subtotal="t.subtotal", bps="t.bps")},
        total_cents = t.subtotal + {TAX_SQL.format(subtotal="t.subtotal", bps="t.bps")},
        updated_at = now()
    FROM (SELECT d.id, o.tax_rate_bps AS bps,
                 coalesce((SELECT sum(l.amount_cents) FROM invoice_lines l
                           WHERE l.invoice_id = d.id AND l.live), 0)::bigint AS subtotal
          FROM invoices d JOIN organizations o ON o.id = d.organization_id
          WHERE d.id = ANY(CAST(:invoice_ids AS uuid[])) AND d.status = '{DRAFT}') t
    WHERE i.id = t.id
    """
)


async def recompute_drafts(db: AsyncSession, invoice_ids: list[uuid.UUID]) -> None:
    """Subtotal from the live lines; tax once, on the subtotal, at the organization's rate."""
    if invoice_ids:
        await db.execute(_RECOMPUTE_DRAFTS, {"invoice_ids": invoice_ids})


async def bill_period(
    db: AsyncSession,
    *,
    period_start: date,
    period_end: date,
    organization_id: uuid.UUID | None,
) -> list[uuid.UUID]:
    """Put every unbilled billable session of the period on its organization's draft; return
    the drafts that gained lines."""
    utc_low, utc_high = zones.utc_window(period_start, period_end)
    in_use = select(col(Organization.timezone)).distinct()
    if organization_id is not None:
        in_use = in_use.where(col(Organization.id) == organization_id)
    params = {
        "period_start": period_start,
        "period_end": period_end,
        "organization_id": organization_id,
        "utc_low": utc_low,
        "utc_high": utc_high,
        **zones.offsets(await db.scalars(in_use), utc_low, utc_high).params(),
    }
    # Lines go only on the drafts the upsert returned: it holds their rows until commit, so an
    # issue cannot total one of them meanwhile. (A draft joined by status alone could be one an
    # issue has locked and totalled; the line would land on the issued invoice uncounted.) A
    # session recorded after the upsert's snapshot, of an organization it did not touch, waits
    # for the next run.
    drafts = list((await db.execute(_UPSERT_DRAFTS, params)).scalars())
    billed = await db.execute(_BILL_SESSIONS, params | {"drafts": drafts})
    touched = sorted({row[0] for row in billed})
    await recompute_drafts(db, touched)
    return touched
