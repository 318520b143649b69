"""Invoice runs, amounts, issuing, voids, payments and credit notes, as finance staff use them."""

from __future__ import annotations

from datetime import timedelta

from service.core.clock import local_today
from service.core.settings import Settings
from tests.billing_support import complete, delivered_program, period, run
from tests.support import Api, invalid_fields, ok, problem


async def billed_world(api: Api, **org: object):
    org_row = await api.make_org(tax_rate_bps=500, **org)
    program, sessions = await delivered_program(api, org_row, rate_cents=10001, fee_percent=50)
    await complete(api, sessions[0])
    ok(await api.client.post(f"/v1/sessions/{sessions[1]['id']}/no-show", headers=api.admin))
    ok(
        await api.client.post(
            f"/v1/sessions/{sessions[2]['id']}/cancel",
            headers=api.admin,
            json={"cancelled_by": "organization"},
        )
    )  # late: already past
    ok(
        await api.client.post(
            f"/v1/sessions/{sessions[3]['id']}/cancel", headers=api.admin, json={}
        )
    )  # the provider's: free
    return org_row, program, sessions


async def test_a_run_bills_delivered_sessions_at_the_rate_and_late_ones_at_the_fee(api: Api):
    org, _, sessions = await billed_world(api)
    drafts = await run(api, *period())
    assert len(drafts) == 1
    invoice = ok(await api.client.get(f"/v1/invoices/{drafts[0]['id']}", headers=api.admin))
    amounts = {line["session_id"]: line["amount_cents"] for line in invoice["lines"]}
    # 10001 at 50% is 5000.5, rounded half up to 5001.
    assert amounts == {sessions[0]["id"]: 10001, sessions[1]["id"]: 5001, sessions[2]["id"]: 5001}
    assert (invoice["status"], invoice["number"], invoice["organization_id"]) == (
        "draft",
        None,
        org["id"],
    )
    assert invoice["subtotal_cents"] == 20003
    assert invoice["tax_cents"] == 1000  # 5% of 20003 = 1000.15
    assert invoice["total_cents"] == 21003
    assert invoice["amount_due_cents"] == 21003
    billed = ok(await api.client.get(f"/v1/sessions/{sessions[0]['id']}", headers=api.admin))
    assert billed["invoice_id"] == invoice["id"]


async def test_running_twice_adds_nothing_and_a_later_session_joins_the_same_draft(api: Api):
    org = await api.make_org()
    _, sessions = await delivered_program(api, org)
    await complete(api, sessions[0])
    first = await run(api, *period())
    assert await run(api, *period()) == []
    await complete(api, sessions[1])
    again = await run(api, *period())
    assert [d["id"] for d in again] == [first[0]["id"]]
    invoice = ok(await api.client.get(f"/v1/invoices/{first[0]['id']}", headers=api.admin))
    assert [line["session_id"] for line in invoice["lines"]] == [s["id"] for s in sessions[:2]]


async def test_deleting_a_draft_frees_its_sessions_for_the_next_run(api: Api):
    org = await api.make_org()
    _, sessions = await delivered_program(api, org)
    await complete(api, sessions[0])
    draft = (await run(api, *period()))[0]
    assert (
        await api.client.delete(f"/v1/invoices/{draft['id']}", headers=api.admin)
    ).status_code == 204
    problem(await api.client.get(f"/v1/invoices/{draft['id']}", headers=api.admin), 404)
    assert (
        ok(await api.client.get(f"/v1/sessions/{sessions[0]['id']}", headers=api.admin))[
            "invoice_id"
        ]
        is None
    )
    assert len(await run(api, *period())) == 1


async def test_issuing_numbers_freezes_and_dates_the_invoice_once(api: Api, settings: Settings):
    _, _, _ = await billed_world(api, payment_terms_days=15)
    draft = (await run(api, *period()))[0]
    issued = ok(await api.client.post(f"/v1/invoices/{draft['id']}/issue", headers=api.admin))
    # Dated in the provider's zone: the first number of the year's series, due 15 days later.
    today = local_today(settings.timezone)
    assert issued["number"] == f"INV-{today.year}-000001"
    assert issued["status"] == "open"
    assert issued["stripe_sync_status"] == "disabled"
    assert issued["due_date"] == str(today + timedelta(days=15))
    problem(await api.client.post(f"/v1/invoices/{draft['id']}/issue", headers=api.admin), 409)
    problem(await api.client.delete(f"/v1/invoices/{draft['id']}", headers=api.admin), 409)


async def test_issued_invoices_are_numbered_consecutively(api: Api):
    numbers = []
    for _ in range(3):
        org = await api.make_org()
        _, sessions = await delivered_program(api, org)
        await complete(api, sessions[0])
        draft = (await run(api, *period(), organization_id=org["id"]))[0]
        numbers.append(
            ok(await api.client.post(f"/v1/invoices/{draft['id']}/issue", headers=api.admin))[
                "number"
            ]
        )
    sequence = [int(n.rsplit("-", 1)[1]) for n in numbers]
    assert sequence == [sequence[0], sequence[0] + 1, sequence[0] + 2]


async def test_a_void_keeps_its_number_and_makes_its_sessions_billable_again(api: Api):
    org = await api.make_org()
    _, sessions = await delivered_program(api, org)
    await complete(api, sessions[0])
    draft = (await run(api, *period()))[0]
    issued = ok(await api.client.post(f"/v1/invoices/{draft['id']}/issue", headers=api.admin))
    voided = ok(
        await api.client.post(
            f"/v1/invoices/{draft['id']}/void", headers=api.admin, json={"reason": "Wrong rate"}
        )
    )
    assert (voided["status"], voided["number"]) == ("void", issued["number"])
    rebilled = await run(api, *period())
    assert len(rebilled) == 1 and rebilled[0]["id"] != draft["id"]
    problem(await api.client.post(f"/v1/invoices/{draft['id']}/void", headers=api.admin), 409)


async def test_payments_never_exceed_the_amount_due_and_settle_the_invoice(api: Api):
    _org, _, _ = await billed_world(api)
    draft = (await run(api, *period()))[0]
    invoice = ok(await api.client.post(f"/v1/invoices/{draft['id']}/issue", headers=api.admin))
    url = f"/v1/invoices/{draft['id']}/payments"
    too_much = await api.client.post(
        url,
        headers=api.admin,
        json={"amount_cents": invoice["total_cents"] + 1, "method": "bank_transfer"},
    )
    assert invalid_fields(too_much) == ["amount_cents"]
    part = ok(
        await api.client.post(
            url,
            headers=api.admin,
            json={"amount_cents": 1003, "method": "cheque", "reference": "CHQ 118"},
        ),
        201,
    )
    assert (part["amount_paid_cents"], part["amount_due_cents"], part["status"]) == (
        1003,
        20000,
        "open",
    )
    problem(await api.client.post(f"/v1/invoices/{draft['id']}/void", headers=api.admin), 409)
    paid = ok(
        await api.client.post(
            url, headers=api.admin, json={"amount_cents": 20000, "method": "bank_transfer"}
        ),
        201,
    )
    assert (paid["status"], paid["amount_due_cents"]) == ("paid", 0)
    assert paid["paid_at"] is not None
    assert [p["amount_cents"] for p in paid["payments"]] == [1003, 20000]
    problem(
        await api.client.post(url, headers=api.admin, json={"amount_cents": 1, "method": "other"}),
        409,
    )


async def test_credit_notes_have_their_own_gapless_series_and_count_toward_settling(
    api: Api, settings: Settings
):
    _org, _, _ = await billed_world(api)
    draft = (await run(api, *period()))[0]
    invoice = ok(await api.client.post(f"/v1/invoices/{draft['id']}/issue", headers=api.admin))
    url = f"/v1/invoices/{draft['id']}/credit-notes"
    first = ok(
        await api.client.post(
            url, headers=api.admin, json={"amount_cents": 3, "reason": "Rounding"}
        ),
        201,
    )
    second = ok(await api.client.post(url, headers=api.admin, json={"amount_cents": 1000}), 201)
    numbers = [n["number"] for n in second["credit_notes"]]
    year = local_today(settings.timezone).year
    assert numbers == [f"CN-{year}-000001", f"CN-{year}-000002"]
    assert first["credit_notes"][0]["number"] == f"CN-{year}-000001"
    assert second["amount_due_cents"] == invoice["total_cents"] - 1003
    over = await api.client.post(
        url, headers=api.admin, json={"amount_cents": second["amount_due_cents"] + 1}
    )
    assert invalid_fields(over) == ["amount_cents"]


async def test_coordinators_read_only_their_issued_invoices_and_therapists_see_no_money(
    api: Api,
):
    org, _, _ = await billed_world(api)
    other = await api.make_org()
    draft = (await run(api, *period()))[0]
    coordinator = await api.coordinator(org["id"])
    stranger = await api.coordinator(other["id"])
    therapist = await api.therapist_key((await api.make_therapist())["id"])
    problem(await api.client.get(f"/v1/invoices/{draft['id']}", headers=coordinator), 404)
    assert ok(await api.client.get("/v1/invoices", headers=coordinator))["data"] == []
    ok(await api.client.post(f"/v1/invoices/{draft['id']}/issue", headers=api.admin))
    seen = ok(await api.client.get(f"/v1/invoices/{draft['id']}", headers=coordinator))
    assert seen["id"] == draft["id"]
    problem(await api.client.get(f"/v1/invoices/{draft['id']}", headers=stranger), 404)
    problem(
        await api.client.post(
            f"/v1/invoices/{draft['id']}/payments",
            headers=coordinator,
            json={"amount_cents": 1, "method": "card"},
        ),
        403,
    )
    problem(
        await api.client.post(
            "/v1/invoice-runs",
            headers=coordinator,
            json=dict(zip(("period_start", "period_end"), period(), strict=True)),
        ),
        403,
    )
    for path in ("/v1/invoices", f"/v1/invoices/{draft['id']}"):
        problem(await api.client.get(path, headers=therapist), 403)


async def test_a_run_with_an_inverted_period_is_refused(api: Api):
    response = await api.client.post(
        "/v1/invoice-runs",
        headers=api.admin,
        json=dict(zip(("period_end", "period_start"), period(), strict=True)),
    )
    assert invalid_fields(response) == ["period_end"]


async def test_a_session_shows_its_invoice_to_whoever_may_see_that_invoice(api: Api):
    org = await api.make_org()
    _, sessions = await delivered_program(api, org)
    await complete(api, sessions[0])
    draft = (await run(api, *period()))[0]
    coordinator = await api.coordinator(org["id"])
    path = f"/v1/sessions/{sessions[0]['id']}"
    assert ok(await api.client.get(path, headers=api.admin))["invoice_id"] == draft["id"]
    assert ok(await api.client.get(path, headers=coordinator))["invoice_id"] is None
    ok(await api.client.post(f"/v1/invoices/{draft['id']}/issue", headers=api.admin))
    assert ok(await api.client.get(path, headers=coordinator))["invoice_id"] == draft["id"]
    listed = ok(
        await api.client.get(
            f"/v1/sessions?program_id={sessions[0]['program_id']}", headers=coordinator
        )
    )["data"]
    assert [s["invoice_id"] for s in listed] == [draft["id"], None, None, None]
