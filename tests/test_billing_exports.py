"""The accounting CSV and the revenue report agree with the invoices to the cent."""

from __future__ import annotations

import csv
import io
from datetime import date, datetime
from zoneinfo import ZoneInfo

from service.billing.exports import CSV_COLUMNS
from tests.billing_support import complete, delivered_program, period, run
from tests.support import Api, ok, problem


async def issued_invoice(api: Api, org: dict, title: str = "Rhythm group") -> dict:
    _, sessions = await delivered_program(api, org, title=title, rate_cents=12345)
    for session in sessions[:3]:
        await complete(api, session)
    draft = (await run(api, *period(), organization_id=org["id"]))[0]
    return ok(await api.client.post(f"/v1/invoices/{draft['id']}/issue", headers=api.admin))


def around_today() -> tuple[date, date]:
    """Today in the provider's zone (the suite's default, America/Edmonton), from and to: the
    invoices issued by the test, and nothing else."""
    today = datetime.now(ZoneInfo("America/Edmonton")).date()
    return today, today


async def export(api: Api) -> list[dict[str, str]]:
    start, end = around_today()
    response = await api.client.get(
        f"/v1/invoices/export.csv?from={start}&to={end}", headers=api.admin
    )
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/csv")
    reader = csv.DictReader(io.StringIO(response.text))
    assert tuple(reader.fieldnames or ()) == CSV_COLUMNS
    return list(reader)


async def test_the_export_has_one_row_per_line_adding_up_to_each_subtotal(api: Api):
    org = await api.make_org(name="Riverside School", tax_rate_bps=500)
    invoice = await issued_invoice(api, org)
    rows = await export(api)
    mine = [r for r in rows if r["invoice_number"] == invoice["number"]]
    assert len(mine) == 3
    assert sum(int(r["amount_cents"]) for r in mine) == invoice["subtotal_cents"]
    assert {r["invoice_total_cents"] for r in mine} == {str(invoice["total_cents"])}
    assert {r["organization_name"] for r in mine} == {"Riverside School"}
    assert sorted(r["session_id"] for r in mine) == sorted(
        line["session_id"] for line in invoice["lines"]
    )


async def test_cells_a_spreadsheet_would_run_are_neutralized(api: Api):
    org = await api.make_org(name='=HYPERLINK("http://evil.example")')
    await issued_invoice(api, org, title="@SUM(A1:A9)")
    rows = await export(api)
    row = next(r for r in rows if r["organization_id"] == org["id"])
    assert row["organization_name"].startswith("'=")
    assert row["description"].startswith("'@")


async def test_drafts_are_not_exported_and_only_finance_exports(api: Api):
    org = await api.make_org()
    _, sessions = await delivered_program(api, org)
    await complete(api, sessions[0])
    await run(api, *period())
    assert [r for r in await export(api) if r["organization_id"] == org["id"]] == []
    coordinator = await api.coordinator(org["id"])
    problem(
        await api.client.get(
            "/v1/invoices/export.csv?from={}&to={}".format(*period()), headers=coordinator
        ),
        403,
    )


async def test_revenue_by_month_agrees_with_the_invoices(api: Api):
    org = await api.make_org(tax_rate_bps=500)
    invoice = await issued_invoice(api, org)
    ok(
        await api.client.post(
            f"/v1/invoices/{invoice['id']}/payments",
            headers=api.admin,
            json={"amount_cents": 5000, "method": "card"},
        ),
        201,
    )
    ok(
        await api.client.post(
            f"/v1/invoices/{invoice['id']}/credit-notes",
            headers=api.admin,
            json={"amount_cents": 77},
        ),
        201,
    )
    start, end = around_today()
    report = ok(
        await api.client.get(f"/v1/reports/revenue?from={start}&to={end}", headers=api.admin)
    )["data"]
    month = (
        datetime.fromisoformat(invoice["issued_at"])
        .astimezone(ZoneInfo("America/Edmonton"))
        .strftime("%Y-%m")
    )
    row = next(r for r in report if r["organization_id"] == org["id"])
    assert row == {
        "organization_id": org["id"],
        "currency": "CAD",
        "month": month,
        "invoiced_cents": invoice["total_cents"],
        "credited_cents": 77,
        "paid_cents": 5000,
        "outstanding_cents": invoice["total_cents"] - 5077,
        "overpaid_cents": 0,
    }
