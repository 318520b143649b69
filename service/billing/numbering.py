"""Gapless document numbers (INV-2026-000001, CN-2026-000001).

The counter row is incremented by an upsert inside the issuing transaction. Its row lock
serializes concurrent issuers: the second waits for the first to commit (then takes the next
number) or roll back (then takes the same number). So numbers are consecutive, never reused and
never skipped, which a sequence cannot promise (sequences do not roll back)."""

from __future__ import annotations

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

from service.billing.amounts import document_number

_NEXT = text(
    """
    INSERT INTO document_counters (series, year, last_number) VALUES (:series, :year, 1)
    ON CONFLICT (series, year)
    DO UPDATE SET last_number = document_counters.last_number + 1
    RETURNING last_number
    """
)


async def next_number(db: AsyncSession, series: str, year: int) -> str:
    sequence = (await db.execute(_NEXT, {"series": series, "year": year})).scalar_one()
    return document_number(series, year, int(sequence))
