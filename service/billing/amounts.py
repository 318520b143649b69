"""Money arithmetic, in integer cents only. Pure functions, property-tested; the SQL that
computes the same amounts in bulk is written next to them so the two cannot drift apart."""

from __future__ import annotations

from models.sessions import BILLABLE_STATUSES, SessionStatus


def half_up_div(numerator: int, denominator: int) -> int:
    """numerator / denominator rounded half up, for non-negative integers."""
    if numerator < 0 or denominator <= 0:
        raise ValueError("half_up_div takes a non-negative numerator and a positive divisor")
    return (2 * numerator + denominator) // (2 * denominator)


def line_amount(rate_cents: int, status: str, late_cancel_fee_percent: int) -> int:
    """A delivered session bills its rate; a late cancellation or no-show the offering's fee
    percent of it, rounded half up."""
    if status == SessionStatus.completed:
        return rate_cents
    if status in BILLABLE_STATUSES:
        return half_up_div(rate_cents * late_cancel_fee_percent, 100)
    raise ValueError(f"a {status} session is not billable")


def tax(subtotal_cents: int, tax_rate_bps: int) -> int:
    """Tax once per invoice, on the subtotal, rounded half up."""
    return half_up_div(subtotal_cents * tax_rate_bps, 10_000)


def document_number(series: str, year: int, sequence: int) -> str:
    return f"{series}-{year}-{sequence:06d}"


# The same rules for set-based statements (PostgreSQL integer division truncates, and every
# operand is a non-negative integer, so (2n + d) / (2d) is half-up like half_up_div; the casts
# keep PostgreSQL from switching to numeric division, which would round instead).
LINE_AMOUNT_SQL = f"""
    CASE s.status
      WHEN '{SessionStatus.completed.value}' THEN s.rate_cents
      ELSE (2 * s.rate_cents * f.late_cancel_fee_percent + 100) / 200
    END
"""
TAX_SQL = "(2 * CAST({subtotal} AS bigint) * {bps} + 10000) / 20000"
