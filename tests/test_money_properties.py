"""Money invariants as properties, checked through the API on the real database against an
independent model (Decimal arithmetic here, never the service's own functions):

- an invoice bills exactly the delivered, late-cancelled and no-show sessions of its period,
  each line at its rate (or the fee percent of it, half up), and its total is the sum of the
  lines plus tax computed once on the subtotal, half up;
- payments and credit notes never go past what is due (over it is a 422 naming
  `amount_cents`), so credits never exceed what was invoiced;
- the accounting CSV and the revenue report reconcile with the invoices to the cent;
- invoice and credit-note numbers are gapless per series and year under concurrent issues;
- a run never puts a line on a draft that an issue is totalling at the same moment.
"""

from __future__ import annotations

import asyncio
import csv
import io
import re
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from decimal import ROUND_HALF_UP, Decimal
from typing import Any
from zoneinfo import ZoneInfo

import httpx
import hypothesis
import psycopg
from hypothesis import HealthCheck, example, given
from hypothesis import strategies as st

from service.core.settings import Settings
from tests.billing_support import complete, delivered_program, period, run
from tests.conftest import LiveServer
from tests.programs_support import confirmed_program, sessions_of
from tests.support import Api, invalid_fields, ok, problem

# Zones far from UTC on both sides, and half- and quarter-hour offsets.
ZONES = (
    "America/Edmonton",
    "Europe/Berlin",
    "Asia/Kolkata",
    "Pacific/Chatham",
    "Pacific/Kiritimati",
    "Pacific/Pago_Pago",
    "America/St_Johns",
)
# Local start times at both ends of the day (an hour-long session ends by 23:59).
START_TIMES = ("00:00", "00:30", "10:00", "22:59")
MAX_CENTS = 100_000_000_00  # the most one amount may be (a rate, a payment, a credit note)
# Rates a finance team meets, and odd ones whose rounding is easy to get wrong.
ODD_TAX_BPS = (0, 1, 5, 333, 500, 725, 1234, 1499, 4999, 9999, 10_000)
ODD_RATES = (0, 1, 3, 99, 101, 12345, 33333, 99999, MAX_CENTS)
# What happens to a past session, and to a future one (more than the notice ahead).
PAST = ("completed", "no_show", "late_cancelled", "provider_cancelled", "scheduled")
FUTURE = ("cancelled_with_notice", "scheduled")
NOTICE_HOURS = 24
EVERY = 5  # days between sessions


def half_up(numerator: int, denominator: int) -> int:
    """The model's rounding: exact decimal division, rounded half up."""
    quotient = Decimal(numerator) / Decimal(denominator)
    return int(quotient.quantize(Decimal(1), rounding=ROUND_HALF_UP))


@dataclass(frozen=True)
class MoneyOp:
    kind: str  # payment | credit | void
    percent_of_due: int  # 1..130: over 100 asks for more than is due


@dataclass(frozen=True)
class Scenario:
    zone: str
    start_time: str
    tax_bps: int
    rate_cents: int
    program_rate_cents: int | None
    fee_percent: int
    past: tuple[str, ...]
    future: tuple[str, ...] = ()
    money: tuple[MoneyOp, ...] = ()
    tax_bps_at_issue: int | None = None  # the organization's rate changed between run and issue


money_ops = st.builds(
    MoneyOp,
    kind=st.sampled_from(("payment", "payment", "credit", "credit", "void")),
    percent_of_due=st.one_of(st.sampled_from((1, 50, 100, 101)), st.integers(1, 130)),
)
scenarios = st.builds(
    Scenario,
    zone=st.sampled_from(ZONES),
    start_time=st.sampled_from(START_TIMES),
    tax_bps=st.one_of(st.sampled_from(ODD_TAX_BPS), st.integers(0, 10_000)),
    rate_cents=st.one_of(st.sampled_from(ODD_RATES), st.integers(0, 10**6)),
    program_rate_cents=st.one_of(st.none(), st.integers(0, 10**6)),
    fee_percent=st.one_of(st.sampled_from((0, 33, 50, 100)), st.integers(0, 100)),
    past=st.lists(st.sampled_from(PAST), min_size=1, max_size=5).map(tuple),
    future=st.lists(st.sampled_from(FUTURE), max_size=2).map(tuple),
    money=st.lists(money_ops, max_size=5).map(tuple),
    tax_bps_at_issue=st.one_of(st.none(), st.sampled_from(ODD_TAX_BPS)),
)


@dataclass
class Ledger:
    """The model of one issued invoice."""

    total: int
    status: str
    paid: int = 0
    credited: int = 0
    credit_numbers: list[str] = field(default_factory=list)

    @property
    def due(self) -> int:
        return self.total - self.paid - self.credited


async def record_attendance(api: Api, session: dict[str, Any], outcome: str) -> str:
    """Apply `outcome` to the session; answer the status the model expects."""
    path = f"/v1/sessions/{session['id']}"
    if outcome == "scheduled":
        return "scheduled"
    if outcome == "completed":
        await complete(api, session)
        return "completed"
    if outcome == "no_show":
        ok(await api.client.post(f"{path}/no-show", headers=api.admin))
        return "no_show"
    by = "provider" if outcome == "provider_cancelled" else "organization"
    cancelled = ok(
        await api.client.post(f"{path}/cancel", json={"cancelled_by": by}, headers=api.admin)
    )
    # An organization's cancellation of a past session is late; of one more than the notice
    # ahead, free; the provider's always free.
    expected = "late_cancelled" if outcome == "late_cancelled" else "cancelled"
    assert cancelled["status"] == expected
    return expected


def expected_line(status: str, rate: int, fee_percent: int) -> int | None:
    if status == "completed":
        return rate
    if status in ("no_show", "late_cancelled"):
        return half_up(rate * fee_percent, 100)
    return None


async def apply_money(api: Api, invoice_id: str, op: MoneyOp, ledger: Ledger) -> None:
    base = f"/v1/invoices/{invoice_id}"
    if op.kind == "void":
        response = await api.client.post(f"{base}/void", json={"reason": "x"}, headers=api.admin)
        if ledger.status == "open" and ledger.paid == 0 and ledger.credited == 0:
            assert ok(response)["status"] == "void"
            ledger.status = "void"
        else:
            problem(response, 409)
        return
    amount = max(1, ledger.due * op.percent_of_due // 100)
    if op.kind == "payment":
        response = await api.client.post(
            f"{base}/payments", json={"amount_cents": amount, "method": "cheque"}, headers=api.admin
        )
    else:
        response = await api.client.post(
            f"{base}/credit-notes", json={"amount_cents": amount}, headers=api.admin
        )
    if ledger.status != "open":
        problem(response, 409)
        return
    if amount > min(ledger.due, MAX_CENTS):
        assert invalid_fields(response) == ["amount_cents"]
        return
    body = ok(response, 201)
    if op.kind == "payment":
        ledger.paid += amount
    else:
        ledger.credited += amount
        ledger.credit_numbers.append(body["credit_notes"][-1]["number"])
    if ledger.due == 0:
        ledger.status = "paid"
    assert (body["status"], body["amount_due_cents"]) == (ledger.status, ledger.due)


def sequence(number: str) -> int:
    return int(number.rsplit("-", 1)[1])


async def export_rows(api: Api, org_id: str, start: date, end: date) -> list[dict[str, str]]:
    response = await api.client.get(
        f"/v1/invoices/export.csv?from={start}&to={end}", headers=api.admin
    )
    assert response.status_code == 200
    return [r for r in csv.DictReader(io.StringIO(response.text)) if r["organization_id"] == org_id]


@hypothesis.settings(
    max_examples=12,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@example(  # Tax on a subtotal ending in exactly half a cent rounds up (1 cent * 50% = 0.5).
    Scenario(
        zone="America/Edmonton",
        start_time="10:00",
        tax_bps=5000,
        rate_cents=1,
        program_rate_cents=None,
        fee_percent=50,
        past=("completed", "no_show", "late_cancelled"),
        money=(MoneyOp("credit", 100), MoneyOp("payment", 1)),
    )
)
@example(  # Every kind of attendance, an odd tax rate, and a credit over what is due.
    Scenario(
        zone="Pacific/Chatham",
        start_time="00:00",
        tax_bps=725,
        rate_cents=33333,
        program_rate_cents=12345,
        fee_percent=33,
        past=("completed", "no_show", "late_cancelled", "provider_cancelled", "scheduled"),
        future=("cancelled_with_notice", "scheduled"),
        money=(MoneyOp("credit", 120), MoneyOp("payment", 50), MoneyOp("void", 1)),
        tax_bps_at_issue=1499,
    )
)
@example(  # Nothing billable: no draft at all.
    Scenario(
        zone="Pacific/Kiritimati",
        start_time="22:59",
        tax_bps=500,
        rate_cents=10000,
        program_rate_cents=None,
        fee_percent=50,
        past=("provider_cancelled", "scheduled"),
        future=("cancelled_with_notice",),
    )
)
@example(  # A void, then nothing more can be recorded on it.
    Scenario(
        zone="Pacific/Pago_Pago",
        start_time="00:30",
        tax_bps=1,
        rate_cents=99,
        program_rate_cents=None,
        fee_percent=100,
        past=("no_show",),
        money=(MoneyOp("void", 1), MoneyOp("payment", 50), MoneyOp("credit", 50)),
    )
)
@given(scenario=scenarios)
async def test_an_invoice_bills_the_fee_bearing_sessions_and_its_money_adds_up(
    api: Api, settings: Settings, scenario: Scenario
):
    zone = ZoneInfo(scenario.zone)
    org = await api.make_org(
        timezone=scenario.zone, tax_rate_bps=scenario.tax_bps, holiday_region=None
    )
    offering = await api.make_offering(
        rate_cents=scenario.rate_cents,
        late_cancel_fee_percent=scenario.fee_percent,
        cancellation_notice_hours=NOTICE_HOURS,
    )
    therapist = await api.make_therapist(timezone=scenario.zone)
    # Every fifth day: the past ones two or more local days ago, the future ones three or more
    # local days ahead (more than the notice, whatever the hour now).
    today = datetime.now(UTC).astimezone(zone).date()
    start = today - timedelta(days=2 + EVERY * (len(scenario.past) - 1))
    count = len(scenario.past) + len(scenario.future)
    extra = (
        {} if scenario.program_rate_cents is None else {"rate_cents": scenario.program_rate_cents}
    )
    program = await confirmed_program(
        api,
        org,
        offering,
        therapist,
        schedule={
            "timezone": scenario.zone,
            "start_date": str(start),
            "start_time": scenario.start_time,
            "rrule": f"FREQ=DAILY;INTERVAL={EVERY};COUNT={count}",
        },
        **extra,
    )
    listed = sorted(await sessions_of(api, program["id"]), key=lambda s: s["starts_at"])
    assert len(listed) == count
    rate = (
        scenario.rate_cents if scenario.program_rate_cents is None else scenario.program_rate_cents
    )
    expected: dict[str, int] = {}
    local_dates: dict[str, str] = {}
    for session, outcome in zip(listed, scenario.past + scenario.future, strict=True):
        status = await record_attendance(api, session, outcome)
        amount = expected_line(status, rate, scenario.fee_percent)
        if amount is not None:
            expected[session["id"]] = amount
            starts = datetime.fromisoformat(session["starts_at"]).astimezone(zone)
            local_dates[session["id"]] = str(starts.date())

    # The run takes sessions by their local date: the days just outside bill nothing.
    period_end = start + timedelta(days=EVERY * (count - 1))
    for outside in (start - timedelta(days=1), period_end + timedelta(days=1)):
        assert await run(api, str(outside), str(outside), organization_id=org["id"]) == []
    drafts = await run(api, str(start), str(period_end), organization_id=org["id"])
    if not expected:
        assert drafts == []
        return
    assert len(drafts) == 1
    subtotal = sum(expected.values())
    tax = half_up(subtotal * scenario.tax_bps, 10_000)
    draft = ok(await api.client.get(f"/v1/invoices/{drafts[0]['id']}", headers=api.admin))
    assert {line["session_id"]: line["amount_cents"] for line in draft["lines"]} == expected
    assert [line["quantity"] for line in draft["lines"]] == [1] * len(expected)
    assert (draft["subtotal_cents"], draft["tax_cents"]) == (subtotal, tax)
    assert draft["total_cents"] == subtotal + tax
    assert draft["total_cents"] == sum(line["amount_cents"] for line in draft["lines"]) + tax

    if scenario.tax_bps_at_issue is not None:
        # Issuing recomputes the tax at the organization's rate of the day.
        changed = {"tax_rate_bps": scenario.tax_bps_at_issue}
        ok(
            await api.client.patch(
                f"/v1/organizations/{org['id']}", json=changed, headers=api.admin
            )
        )
        tax = half_up(subtotal * scenario.tax_bps_at_issue, 10_000)
    issued = ok(await api.client.post(f"/v1/invoices/{draft['id']}/issue", headers=api.admin))
    assert re.fullmatch(r"INV-\d{4}-\d{6}", issued["number"])
    assert (issued["subtotal_cents"], issued["tax_cents"]) == (subtotal, tax)
    ledger = Ledger(total=subtotal + tax, status="paid" if subtotal + tax == 0 else "open")
    assert (issued["total_cents"], issued["status"], issued["amount_due_cents"]) == (
        ledger.total,
        ledger.status,
        ledger.total,
    )
    for op in scenario.money:
        await apply_money(api, draft["id"], op, ledger)

    final = ok(await api.client.get(f"/v1/invoices/{draft['id']}", headers=api.admin))
    assert (final["status"], final["amount_paid_cents"], final["amount_credited_cents"]) == (
        ledger.status,
        ledger.paid,
        ledger.credited,
    )
    assert final["amount_due_cents"] == ledger.due
    credits = [note["amount_cents"] for note in final["credit_notes"]]
    payments = [payment["amount_cents"] for payment in final["payments"]]
    assert sum(credits) == ledger.credited <= ledger.total
    assert sum(payments) + sum(credits) <= ledger.total
    # Credit notes of one invoice, issued one after another, take consecutive numbers.
    numbers = [note["number"] for note in final["credit_notes"]]
    assert numbers == ledger.credit_numbers
    assert [sequence(n) for n in numbers] == list(
        range(sequence(numbers[0]), sequence(numbers[0]) + len(numbers)) if numbers else []
    )

    # The export has one row per line, dated by the session's local day, adding up.
    issued_local = datetime.fromisoformat(issued["issued_at"]).astimezone(
        ZoneInfo(settings.timezone)
    )
    day = issued_local.date()
    rows = await export_rows(api, org["id"], day, day)
    assert {r["session_id"]: int(r["amount_cents"]) for r in rows} == expected
    assert {r["session_id"]: r["session_date"] for r in rows} == local_dates
    assert {
        (r["invoice_number"], r["status"], r["invoice_subtotal_cents"], r["invoice_tax_cents"])
        for r in rows
    } == {(issued["number"], ledger.status, str(subtotal), str(tax))}
    assert {r["invoice_total_cents"] for r in rows} == {str(ledger.total)}

    report = ok(await api.client.get(f"/v1/reports/revenue?from={day}&to={day}", headers=api.admin))
    mine = [r for r in report["data"] if r["organization_id"] == org["id"]]
    if ledger.status == "void":
        assert mine == []
    else:
        assert mine == [
            {
                "organization_id": org["id"],
                "currency": "CAD",
                "month": issued_local.strftime("%Y-%m"),
                "invoiced_cents": ledger.total,
                "credited_cents": ledger.credited,
                "paid_cents": ledger.paid,
                "outstanding_cents": ledger.due,
                # Payments recorded in Ensemble never pass what is due; only money received
                # in Stripe beyond it is an overpayment (tests/test_stripe_mirror.py).
                "overpaid_cents": 0,
            }
        ]

    if ledger.status == "void":
        # A void frees its sessions: the next run bills them again, and the next issue takes
        # the next number (the voided one stays used).
        again = await run(api, str(start), str(period_end), organization_id=org["id"])
        assert [d["id"] == draft["id"] for d in again] == [False]
        rebilled = ok(
            await api.client.post(f"/v1/invoices/{again[0]['id']}/issue", headers=api.admin)
        )
        assert {line["session_id"]: line["amount_cents"] for line in rebilled["lines"]} == expected
        assert (rebilled["subtotal_cents"], rebilled["tax_cents"]) == (subtotal, tax)
        assert sequence(rebilled["number"]) == sequence(issued["number"]) + 1


async def test_the_worked_example_in_the_finance_rules(api: Api):
    """docs/finance.md, "A worked example", to the cent."""
    org = await api.make_org(tax_rate_bps=725)
    _, sessions = await delivered_program(api, org, rate_cents=3333, fee_percent=50, sessions=3)
    await complete(api, sessions[0])
    ok(await api.client.post(f"/v1/sessions/{sessions[1]['id']}/no-show", headers=api.admin))
    await record_attendance(api, sessions[2], "late_cancelled")
    draft = (await run(api, *period(), organization_id=org["id"]))[0]
    invoice = ok(await api.client.post(f"/v1/invoices/{draft['id']}/issue", headers=api.admin))
    assert [line["amount_cents"] for line in invoice["lines"]] == [3333, 1667, 1667]
    assert (invoice["subtotal_cents"], invoice["tax_cents"], invoice["total_cents"]) == (
        6667,
        483,
        7150,
    )
    base = f"/v1/invoices/{invoice['id']}"
    paid = ok(
        await api.client.post(
            f"{base}/payments", json={"amount_cents": 5000, "method": "cheque"}, headers=api.admin
        ),
        201,
    )
    assert (paid["status"], paid["amount_due_cents"]) == ("open", 2150)
    refused = await api.client.post(
        f"{base}/credit-notes", json={"amount_cents": 2151}, headers=api.admin
    )
    assert problem(refused, 422)["errors"] == [
        {
            "field": "amount_cents",
            "message": "must be at most the amount due (2150)",
            "type": "exceeds_amount_due",
            "in": "body",
        }
    ]
    credited = ok(
        await api.client.post(
            f"{base}/credit-notes", json={"amount_cents": 150}, headers=api.admin
        ),
        201,
    )
    assert credited["amount_due_cents"] == 2000
    settled = ok(
        await api.client.post(
            f"{base}/payments", json={"amount_cents": 2000, "method": "card"}, headers=api.admin
        ),
        201,
    )
    assert (settled["status"], settled["amount_paid_cents"], settled["amount_credited_cents"]) == (
        "paid",
        7000,
        150,
    )


# --- Gapless numbers under concurrent issues, on a live server -------------------------------


def lock_waiters(database_url: str, statement: str) -> int:
    """Backends of this database waiting for a lock in a statement containing `statement`."""
    with psycopg.connect(database_url, autocommit=True) as conn:
        row = conn.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
            "AND wait_event_type = 'Lock' AND strpos(query, %s) > 0",
            (statement,),
        ).fetchone()
    assert row is not None
    return int(row[0])


async def until_blocked(
    database_url: str, statement: str, count: int, tasks: list[asyncio.Future[Any]]
) -> None:
    """Wait until `count` backends wait for a lock in `statement` (the requests of `tasks`
    really are inside their transactions, overlapping); none of the tasks may finish first."""
    for _ in range(600):
        if lock_waiters(database_url, statement) == count:
            break
        assert not any(t.done() for t in tasks), [t.result().text for t in tasks if t.done()]
        await asyncio.sleep(0.05)
    assert lock_waiters(database_url, statement) == count


async def together_while_counter_held(
    database_url: str, series: str, year: int, requests: list[Any]
) -> list[httpx.Response]:
    """Start every request while a transaction holds the series' counter row, wait until each
    of them is blocked on it (so they really overlap), then let them all go."""
    with psycopg.connect(database_url) as holder:
        held = holder.execute(
            "SELECT last_number FROM document_counters WHERE series = %s AND year = %s FOR UPDATE",
            (series, year),
        ).fetchone()
        assert held is not None
        tasks = [asyncio.ensure_future(r) for r in requests]
        await until_blocked(database_url, "document_counters", len(requests), tasks)
        holder.commit()
    return list(await asyncio.gather(*tasks))


def numbers_in(database_url: str, table: str, series: str, year: int) -> list[int]:
    with psycopg.connect(database_url) as conn:
        rows = conn.execute(
            f"SELECT number FROM {table} WHERE number LIKE %s ORDER BY number",
            (f"{series}-{year}-%",),
        ).fetchall()
    return [sequence(r[0]) for r in rows]


async def test_numbers_stay_gapless_under_concurrent_issues_and_the_reports_reconcile(
    live_server: LiveServer, database_url: str
):
    admin = await live_server.admin_key()
    parallel = 5
    async with httpx.AsyncClient(base_url=live_server.url, timeout=120) as client:
        api = Api(client=client, admin=admin)
        tax_rates: dict[str, int] = {}
        for n in range(parallel + 2):
            org = await api.make_org(tax_rate_bps=ODD_TAX_BPS[n + 2], holiday_region=None)
            tax_rates[org["id"]] = ODD_TAX_BPS[n + 2]
            _, sessions = await delivered_program(
                api, org, rate_cents=ODD_RATES[n + 1] + 1000, fee_percent=33, sessions=2
            )
            await complete(api, sessions[0])
            ok(await client.post(f"/v1/sessions/{sessions[1]['id']}/no-show", headers=admin))
        drafts = await run(api, *period())
        assert len(drafts) == parallel + 2

        first = ok(await client.post(f"/v1/invoices/{drafts[0]['id']}/issue", headers=admin))
        year = (
            datetime.fromisoformat(first["issued_at"])
            .astimezone(ZoneInfo(live_server.settings.timezone))
            .year
        )
        issued = await together_while_counter_held(
            database_url,
            "INV",
            year,
            [client.post(f"/v1/invoices/{d['id']}/issue", headers=admin) for d in drafts[1:-1]],
        )
        assert [r.status_code for r in issued] == [200] * parallel
        last = ok(await client.post(f"/v1/invoices/{drafts[-1]['id']}/issue", headers=admin))
        invoices = [first, *(r.json() for r in issued), last]
        expected = list(range(1, parallel + 3))
        assert sorted(sequence(i["number"]) for i in invoices) == expected
        assert numbers_in(database_url, "invoices", "INV", year) == expected

        # Credit notes: the same, on the CN series; then one invoice paid, one voided.
        ok(
            await client.post(
                f"/v1/invoices/{first['id']}/credit-notes", json={"amount_cents": 1}, headers=admin
            ),
            201,
        )
        credited = await together_while_counter_held(
            database_url,
            "CN",
            year,
            [
                client.post(
                    f"/v1/invoices/{i['id']}/credit-notes",
                    json={"amount_cents": 100 + k},
                    headers=admin,
                )
                for k, i in enumerate(invoices[1:-1])
            ],
        )
        assert [r.status_code for r in credited] == [201] * parallel
        assert numbers_in(database_url, "credit_notes", "CN", year) == list(range(1, parallel + 2))
        paid = invoices[1]["total_cents"] - 100
        ok(
            await client.post(
                f"/v1/invoices/{invoices[1]['id']}/payments",
                json={"amount_cents": paid, "method": "card"},
                headers=admin,
            ),
            201,
        )
        ok(
            await client.post(
                f"/v1/invoices/{last['id']}/void", json={"reason": "x"}, headers=admin
            )
        )

        # Reconcile: the revenue report and the CSV against the invoices themselves.
        zone = ZoneInfo(live_server.settings.timezone)
        day = datetime.fromisoformat(first["issued_at"]).astimezone(zone).date()
        listed = ok(await client.get("/v1/invoices?limit=200", headers=admin))["data"]
        model: dict[tuple[str, str], list[int]] = defaultdict(lambda: [0, 0, 0, 0])
        for invoice in listed:
            if invoice["status"] in ("open", "paid"):
                month = datetime.fromisoformat(invoice["issued_at"]).astimezone(zone)
                sums = model[(invoice["organization_id"], month.strftime("%Y-%m"))]
                sums[0] += invoice["total_cents"]
                sums[1] += invoice["amount_credited_cents"]
                sums[2] += invoice["amount_paid_cents"]
                sums[3] += invoice["amount_due_cents"]
        assert len(model) == parallel + 1
        report = ok(await client.get(f"/v1/reports/revenue?from={day}&to={day}", headers=admin))[
            "data"
        ]
        assert {
            (r["organization_id"], r["month"]): [
                r["invoiced_cents"],
                r["credited_cents"],
                r["paid_cents"],
                r["outstanding_cents"],
            ]
            for r in report
        } == dict(model)
        assert sum(r["paid_cents"] for r in report) == paid
        assert sum(r["credited_cents"] for r in report) == 1 + sum(100 + k for k in range(parallel))

        response = await client.get(f"/v1/invoices/export.csv?from={day}&to={day}", headers=admin)
        rows = list(csv.DictReader(io.StringIO(response.text)))
        by_number: dict[str, list[dict[str, str]]] = defaultdict(list)
        for row in rows:
            by_number[row["invoice_number"]].append(row)
        assert set(by_number) == {i["number"] for i in invoices}
        for invoice in listed:
            mine = by_number[invoice["number"]]
            assert len(mine) == 2
            assert sum(int(r["amount_cents"]) for r in mine) == invoice["subtotal_cents"]
            assert {(r["status"], int(r["invoice_total_cents"])) for r in mine} == {
                (invoice["status"], invoice["total_cents"])
            }
            assert invoice["total_cents"] == invoice["subtotal_cents"] + half_up(
                invoice["subtotal_cents"] * tax_rates[invoice["organization_id"]], 10_000
            )


async def test_a_run_never_adds_a_line_to_a_draft_being_issued(
    live_server: LiveServer, database_url: str
):
    """A run puts lines only on drafts it holds. Before, a session recorded while a run was
    under way could land, through the run's second statement, on a draft that an issue had
    locked and totalled: the issued invoice then held a line its total did not count."""
    admin = await live_server.admin_key()
    async with httpx.AsyncClient(base_url=live_server.url, timeout=120) as client:
        api = Api(client=client, admin=admin)
        org_x, org_y, org_z = [await api.make_org(holiday_region=None) for _ in range(3)]
        _, x_sessions = await delivered_program(api, org_x, rate_cents=10000, sessions=2)
        _, y_sessions = await delivered_program(api, org_y, rate_cents=20000, sessions=2)
        _, z_sessions = await delivered_program(api, org_z, rate_cents=30000, sessions=1)
        for session in (x_sessions[0], y_sessions[0], z_sessions[0]):
            await complete(api, session)
        drafts = {d["organization_id"]: d for d in await run(api, *period())}
        draft_x, draft_y = drafts[org_x["id"]], drafts[org_y["id"]]
        first = ok(
            await client.post(f"/v1/invoices/{drafts[org_z['id']]['id']}/issue", headers=admin)
        )
        year = (
            datetime.fromisoformat(first["issued_at"])
            .astimezone(ZoneInfo(live_server.settings.timezone))
            .year
        )
        await complete(api, y_sessions[1])  # unbilled: the next run updates Y's draft

        with psycopg.connect(database_url) as counter, psycopg.connect(database_url) as draft:
            # The issue of X locks X and totals it, then waits for its number.
            counter.execute(
                "SELECT 1 FROM document_counters WHERE series = 'INV' AND year = %s FOR UPDATE",
                (year,),
            )
            issuing = asyncio.ensure_future(
                client.post(f"/v1/invoices/{draft_x['id']}/issue", headers=admin)
            )
            await until_blocked(database_url, "document_counters", 1, [issuing])
            # A run starts, and waits on Y's draft with the snapshot of its first statement.
            draft.execute("SELECT 1 FROM invoices WHERE id = %s FOR UPDATE", (draft_y["id"],))
            running = asyncio.ensure_future(
                client.post(
                    "/v1/invoice-runs",
                    json=dict(zip(("period_start", "period_end"), period(), strict=True)),
                    headers=admin,
                )
            )
            await until_blocked(database_url, "INSERT INTO invoices", 1, [issuing, running])
            # Meanwhile X's second session is recorded, then the run goes on.
            await complete(api, x_sessions[1])
            draft.commit()
            for _ in range(600):  # the run's next statements, up to where it would wait on X
                await asyncio.sleep(0.05)
                if running.done() or lock_waiters(database_url, "INSERT INTO invoice_lines"):
                    break
            counter.commit()
            issued, ran = await issuing, await running
        assert (issued.status_code, ran.status_code) == (200, 201)
        invoice_x = ok(await client.get(f"/v1/invoices/{draft_x['id']}", headers=admin))
        assert [line["session_id"] for line in invoice_x["lines"]] == [x_sessions[0]["id"]]
        assert (invoice_x["status"], invoice_x["subtotal_cents"]) == ("open", 10000)
        # The session recorded meanwhile is billed by the next run, on a new draft.
        again = await run(api, *period())
        assert [d["organization_id"] for d in again] == [org_x["id"]]
        assert (again[0]["id"] != draft_x["id"], again[0]["subtotal_cents"]) == (True, 10000)
        with psycopg.connect(database_url) as conn:
            assert conn.execute(
                "SELECT count(*) FROM invoices i WHERE subtotal_cents <> (SELECT "
                "coalesce(sum(amount_cents), 0) FROM invoice_lines l "
                "WHERE l.invoice_id = i.id AND l.live)"
            ).fetchone() == (0,)
