"""Money arithmetic: property tests for the pure functions, and the SQL that bills in bulk
checked against them on the real database."""

from __future__ import annotations

from decimal import ROUND_HALF_UP, Decimal

from hypothesis import given, settings
from hypothesis import strategies as st

from service.billing import amounts

cents = st.integers(min_value=0, max_value=10**10)
percent = st.integers(min_value=0, max_value=100)
bps = st.integers(min_value=0, max_value=10_000)


def reference_half_up(numerator: int, denominator: int) -> int:
    return int(
        (Decimal(numerator) / Decimal(denominator)).quantize(Decimal(1), rounding=ROUND_HALF_UP)
    )


@given(
    numerator=st.integers(min_value=0, max_value=10**15),
    denominator=st.integers(min_value=1, max_value=10**6),
)
def test_half_up_division_matches_decimal_rounding(numerator: int, denominator: int):
    assert amounts.half_up_div(numerator, denominator) == reference_half_up(numerator, denominator)


@given(rate=cents, fee=percent)
def test_late_fees_are_the_percent_of_the_rate_rounded_half_up(rate: int, fee: int):
    charged = amounts.line_amount(rate, "late_cancelled", fee)
    assert charged == reference_half_up(rate * fee, 100)
    assert amounts.line_amount(rate, "no_show", fee) == charged
    assert 0 <= charged <= rate
    assert amounts.line_amount(rate, "completed", fee) == rate


@given(lines=st.lists(st.integers(min_value=0, max_value=10**8), max_size=60), rate=bps)
def test_tax_is_computed_once_on_the_subtotal(lines: list[int], rate: int):
    subtotal = sum(lines)
    tax = amounts.tax(subtotal, rate)
    assert tax == reference_half_up(subtotal * rate, 10_000)
    # Once per invoice: summing per-line rounded taxes may differ; the invoice's never does.
    assert abs(tax - subtotal * rate / 10_000) <= 0.5


def test_numbers_are_zero_padded_per_series_and_year():
    assert amounts.document_number("INV", 2026, 7) == "INV-2026-000007"
    assert amounts.document_number("CN", 2027, 123456) == "CN-2027-123456"


@settings(max_examples=60, deadline=None)
@given(rate=cents, fee=percent, subtotal=st.integers(min_value=0, max_value=10**12), tax_bps=bps)
def test_the_bulk_sql_rounds_exactly_like_the_python(
    database_url: str, rate: int, fee: int, subtotal: int, tax_bps: int
):
    import psycopg

    line_sql = (
        amounts.LINE_AMOUNT_SQL.replace("s.status", "'late_cancelled'")
        .replace("s.rate_cents", "CAST(%(rate)s AS bigint)")
        .replace("f.late_cancel_fee_percent", "CAST(%(fee)s AS int)")
    )
    tax_sql = amounts.TAX_SQL.format(subtotal="%(subtotal)s", bps="CAST(%(bps)s AS int)")
    with psycopg.connect(database_url) as conn:
        row = conn.execute(
            f"SELECT {line_sql}, {tax_sql}",
            {"rate": rate, "fee": fee, "subtotal": subtotal, "bps": tax_bps},
        ).fetchone()
    assert row is not None
    line, tax = row
    assert line == amounts.line_amount(rate, "late_cancelled", fee)
    assert tax == amounts.tax(subtotal, tax_bps)
