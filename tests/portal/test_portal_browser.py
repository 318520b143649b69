"""The portal in headless Chromium: each role signs in and does its main job through the
pages; every page passes axe-core with no serious or critical violation; a coordinator who
edits the URL to another organization's program gets the 404 page; a revoked key is signed
out on the next page load."""

from __future__ import annotations

import asyncio
import re
import uuid
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from axe_playwright_python.async_playwright import Axe

from tests.portal.conftest import PortalWorld, follow, sign_in

AXE = Axe()
BLOCKING = {"serious", "critical"}


async def blocking_violations(page: Any) -> list[str]:
    results = await AXE.run(page)
    return [
        f"{page.url}: {v['id']} ({v['impact']}): {v['help']} x{len(v['nodes'])}"
        for v in results.response["violations"]
        if v["impact"] in BLOCKING
    ]


def day(value: Any) -> str:
    return value.strftime("%a %d %b %Y")


async def test_a_coordinator_previews_then_books_a_program_and_sees_its_dates(
    page: Any, portal: PortalWorld
) -> None:
    await sign_in(page, portal, "coordinator")
    await follow(page, page.get_by_role("link", name="Book a program").first)
    assert await page.get_by_role("heading", name="Book a program").is_visible()
    start = portal.today + timedelta(days=7)
    start = start + timedelta(days=(7 - start.weekday()) % 7)  # a Monday, a week or more away
    skipped = start + timedelta(days=7)
    await page.get_by_label("Offering").select_option(
        label="Group rhythm (45 min) (45 min, CAD 180.00)"
    )
    await page.get_by_label("Title").fill("Rhythm and focus")
    await page.get_by_label("focus attention").check()
    await page.get_by_label("online", exact=True).check()
    await page.get_by_label("Video link (online)").fill("https://video.example/focus")
    await page.get_by_label("Participants").fill("6")
    await page.get_by_label("Start date").fill(start.isoformat())
    await page.get_by_label("Time", exact=True).fill("10:30")
    await page.get_by_label("Monday").check()
    await page.get_by_label("Number of sessions").fill("4")
    await page.get_by_label("Dates to skip (term breaks)").fill(skipped.isoformat())
    await follow(page, page.get_by_role("button", name="Preview"))

    dates = await page.locator("ol.preview-dates li").all_inner_texts()
    expected = [start, start + timedelta(days=14), start + timedelta(days=21)]
    made_up = start + timedelta(days=28)
    assert dates == [day(d) for d in expected] + [f"{day(made_up)} made up"]
    assert await page.locator("ul.skipped-dates li").all_inner_texts() == [
        f"{day(skipped)} (excluded date)"
    ]
    # The form kept what was typed; Book sends it.
    assert await page.get_by_label("Title").input_value() == "Rhythm and focus"
    await follow(page, page.get_by_role("button", name="Book", exact=True))
    assert await page.get_by_role("heading", name="Rhythm and focus").is_visible()
    assert "requested" in await page.locator("dl.facts").inner_text()

    await follow(page, page.get_by_role("link", name="Programs").first)
    row = page.get_by_role("row", name=re.compile("Rhythm and focus"))
    assert await row.get_by_role("cell").all_inner_texts() == [
        "Rhythm and focus",
        "requested",
        "None scheduled",
        "Not yet assigned",
    ]


async def test_a_booking_error_is_shown_next_to_its_field_and_the_form_keeps_its_values(
    page: Any, portal: PortalWorld
) -> None:
    await sign_in(page, portal, "coordinator")
    await page.goto(f"{portal.url}/app/programs/new")
    await page.get_by_label("Title").fill("Too many people")
    await page.get_by_label("online", exact=True).check()
    await page.get_by_label("Video link (online)").fill("https://video.example/big")
    await page.get_by_label("Participants").fill("40")
    await page.get_by_label("Start date").fill((portal.today + timedelta(days=3)).isoformat())
    await page.get_by_label("Tuesday").check()
    await page.get_by_label("Number of sessions").fill("3")
    await follow(page, page.get_by_role("button", name="Preview"))
    field = page.get_by_label("Participants")
    assert await field.get_attribute("aria-invalid") == "true"
    assert await page.locator("#e-f-participants").inner_text() == (
        "Group rhythm (45 min) takes at most 8 participant(s)"
    )
    assert await field.input_value() == "40"
    assert await page.get_by_label("Title").input_value() == "Too many people"


async def test_a_coordinator_sees_the_late_cancellation_fee_before_cancelling(
    page: Any, portal: PortalWorld
) -> None:
    await sign_in(page, portal, "coordinator")
    tomorrow = portal.today + timedelta(days=1)
    month = tomorrow.strftime("%Y-%m")
    await page.goto(f"{portal.url}/app/programs/{portal.ids['running']}?month={month}")
    await follow(
        page, page.get_by_role("link", name=f"Cancel the session of {day(tomorrow)}, 09:00")
    )
    # Tomorrow's session is inside the 48-hour notice: billed in full (100% of CAD 180.00).
    assert (await page.locator("#fee").inner_text()).startswith("CAD 180.00")
    await follow(page, page.get_by_role("button", name="Cancel this session"))
    cell = page.get_by_role("cell", name=re.compile(f"^{tomorrow.day} 09:00"))
    assert "late cancelled" in await cell.inner_text()


async def test_a_therapist_completes_a_session_from_my_week(page: Any, portal: PortalWorld) -> None:
    await sign_in(page, portal, "therapist")
    assert await page.get_by_role("heading", name="My week").is_visible()
    await page.goto(f"{portal.url}/app/week?start={portal.ids['to_complete_day']}")
    assert await page.get_by_role("link", name="video link for Morning rhythm").first.is_visible()
    week_ago = portal.today - timedelta(days=7)
    await follow(
        page, page.get_by_role("link", name=f"Complete the session of {day(week_ago)}, 09:00")
    )
    await page.get_by_label("Attendance").fill("9")
    await follow(page, page.get_by_role("button", name="Complete"))
    assert await page.locator("#e-f-attendance").inner_text() == (
        "must be at most the program's 5 participants"
    )
    assert await page.get_by_label("Attendance").input_value() == "9"
    await page.get_by_label("Attendance").fill("4")
    await follow(page, page.get_by_role("button", name="Complete"))
    done = page.get_by_role("region", name=day(week_ago))
    assert "completed" in await done.inner_text()
    assert "Attendance: 4" in await done.inner_text()


async def test_a_therapist_completes_a_session_with_its_observation_then_records_a_due_one(
    page: Any, portal: PortalWorld
) -> None:
    therapist = {"Authorization": f"Bearer {portal.key_for('therapist')}"}
    completed = portal.ids["to_complete_observed"]
    await sign_in(page, portal, "therapist")
    await page.goto(f"{portal.url}/app/sessions/{completed}/complete")
    ratings = page.get_by_role("group", name="Focus attention", exact=True)
    await page.get_by_label("Attendance").fill("9")
    await ratings.get_by_label("4", exact=True).check()
    await page.get_by_label("Note", exact=True).fill("Kept a steady pulse for ten minutes.")
    await follow(page, page.get_by_role("button", name="Complete"))
    # Attendance refused: the session stays scheduled, and the observation typed is kept.
    assert await page.locator("#e-f-attendance").inner_text() == (
        "must be at most the program's 5 participants"
    )
    assert await ratings.get_by_label("4", exact=True).is_checked()
    assert await page.get_by_label("Note", exact=True).input_value() == (
        "Kept a steady pulse for ten minutes."
    )
    await page.get_by_label("Attendance").fill("5")
    await follow(page, page.get_by_role("button", name="Complete"))
    await page.wait_for_url(re.compile(r"/app/week\?start="))
    got = await asyncio.to_thread(
        httpx.get, f"{portal.url}/v1/sessions/{completed}/observation", headers=therapist
    )
    assert got.status_code == 200, got.text
    assert (got.json()["ratings"], got.json()["note"]) == (
        {"focus_attention": 4},
        "Kept a steady pulse for ten minutes.",
    )

    # A delivered session waiting for its observation: listed on My week, recorded from there.
    due = page.get_by_role("region", name="Observations due")
    await follow(
        page,
        due.get_by_role(
            "link", name=f"Record the observation of Morning rhythm, {portal.ids['to_observe_at']}"
        ),
    )
    assert await page.get_by_role("heading", name="Record the observation").is_visible()
    await (
        page.get_by_role("group", name="Focus attention", exact=True)
        .get_by_label("2", exact=True)
        .check()
    )
    await follow(page, page.get_by_role("button", name="Save the observation"))
    assert await page.get_by_role("status").inner_text() == "Observation recorded."
    got = await asyncio.to_thread(
        httpx.get,
        f"{portal.url}/v1/sessions/{portal.ids['to_observe']}/observation",
        headers=therapist,
    )
    assert (got.json()["ratings"], got.json()["note"]) == ({"focus_attention": 2}, None)


def two(value: float | None) -> str:
    return "withheld" if value is None else f"{value:.2f}"


async def test_a_coordinator_sees_the_outcomes_the_api_answers_and_never_a_note(
    page: Any, portal: PortalWorld
) -> None:
    marker = f"private-{uuid.uuid4().hex}"
    planted = portal.admin.put(
        f"/v1/sessions/{portal.ids['noted']}/observation",
        json={"ratings": {"focus_attention": 3}, "note": f"Note {marker}"},
    )
    assert planted.status_code in (200, 201), planted.text
    program = portal.ids["running"]
    await sign_in(page, portal, "coordinator")
    await page.goto(f"{portal.url}/app/programs/{program}")
    answered = await asyncio.to_thread(
        httpx.get,
        f"{portal.url}/v1/programs/{program}/outcomes",
        headers={"Authorization": f"Bearer {portal.key_for('coordinator')}"},
    )
    assert answered.status_code == 200, answered.text
    api = answered.json()

    async def cells(table: str) -> list[str]:
        return await page.locator(f"#{table} tbody").get_by_role("cell").all_inner_texts()

    counts = api["sessions"]
    assert await cells("outcome-sessions") == [
        str(counts[k]) for k in ("planned", "delivered", "cancelled", "late_cancelled", "no_show")
    ]
    attendance = api["attendance"]
    assert await cells("outcome-attendance") == [
        two(attendance["expected_per_session"]),
        two(attendance["average"]),
        f"{attendance['rate'] * 100:.1f}%",
    ]
    assert await page.locator("#outcome-focus-areas tbody tr").all_inner_texts() == [
        "\t".join(
            [
                a["focus_area"].replace("_", " ").capitalize(),
                str(a["observations"]),
                two(a["average"]),
                two(a["first_month_average"]),
                two(a["last_month_average"]),
            ]
        )
        for a in api["focus_areas"]
    ]
    trend = api["focus_areas"][0]["trend"]
    assert trend and await page.locator("#trend-focus_attention tbody tr").all_inner_texts() == [
        f"{t['month']}\t{t['observations']}\t{two(t['average'])}" for t in trend
    ]
    assert api["suppressed"] is True
    assert await page.locator("#suppression").inner_text() == (
        f"Some averages are withheld: {api['suppression_reason']}."
    )
    assert marker not in await page.content()

    pdf = await page.request.get(f"{portal.url}/app/programs/{program}/outcomes.pdf")
    assert (pdf.status, pdf.headers["content-type"]) == (200, "application/pdf")
    assert await page.get_by_role("link", name="Download outcomes PDF").get_attribute("href") == (
        f"/app/programs/{program}/outcomes.pdf"
    )
    body = await pdf.body()
    assert body.startswith(b"%PDF") and marker.encode() not in body
    # The observation page is not the coordinator's: the 404 page, no note.
    refused = await page.goto(f"{portal.url}/app/sessions/{portal.ids['noted']}/observation")
    assert refused is not None and refused.status == 404
    assert marker not in await page.content()


async def test_a_therapist_adds_time_off_and_gets_a_calendar_feed_link(
    page: Any, portal: PortalWorld
) -> None:
    await sign_in(page, portal, "therapist")
    await follow(page, page.get_by_role("link", name="Time off"))
    first = portal.today + timedelta(days=60)
    await page.get_by_label("First day").fill(first.isoformat())
    await page.get_by_label("Last day").fill((first + timedelta(days=2)).isoformat())
    await page.get_by_label("Reason (optional)").fill("Conference")
    await follow(page, page.get_by_role("button", name="Add time off"))
    assert await page.get_by_role("cell", name="Conference").is_visible()
    await follow(page, page.get_by_role("link", name="My week"))
    await follow(page, page.get_by_role("button", name="Get a calendar feed link"))
    link = await page.get_by_label(re.compile("^Calendar feed link")).input_value()
    assert re.fullmatch(r"http://127\.0\.0\.1:8000/v1/calendar/cal_[\w-]+\.ics", link)


async def test_finance_runs_invoicing_issues_an_invoice_and_exports_csv(
    page: Any, portal: PortalWorld
) -> None:
    await sign_in(page, portal, "finance")
    await follow(page, page.get_by_role("link", name="Run invoicing").first)
    # The two sessions delivered ten and nine days ago (the world's), nothing else.
    await page.get_by_label("Period start").fill((portal.today - timedelta(days=10)).isoformat())
    await page.get_by_label("Period end").fill((portal.today - timedelta(days=9)).isoformat())
    await page.get_by_label("Organization").select_option(label="Maple School")
    await follow(page, page.get_by_role("button", name="Run invoicing"))
    assert (await page.get_by_role("status").inner_text()).startswith("Invoicing run: 1 draft")
    await follow(page, page.get_by_role("link", name="Draft"))
    # Two sessions delivered at CAD 180.00, 5% GST.
    assert (await page.get_by_role("definition").all_inner_texts())[3:6] == [
        "CAD 360.00",
        "CAD 18.00",
        "CAD 378.00",
    ]
    await follow(page, page.get_by_role("button", name="Issue"))
    assert await page.locator("#invoice-status").inner_text() == "open"
    number = (await page.get_by_role("heading", level=1).inner_text()).removeprefix("Invoice ")
    assert re.fullmatch(r"INV-\d{4}-\d{6}", number)

    await page.get_by_label("Amount", exact=True).fill("100.00")
    await follow(page, page.get_by_role("button", name="Record payment"))
    assert (await page.get_by_role("definition").all_inner_texts())[8].startswith("CAD 278.00")

    await page.get_by_label("Amount to credit").fill("abc")
    await follow(page, page.get_by_role("button", name="Add credit note"))
    assert (
        await page.locator("#e-f-credit_amount").inner_text() == "Enter an amount such as 120.00."
    )
    assert await page.get_by_label("Amount to credit").input_value() == "abc"
    await page.get_by_label("Amount to credit").fill("50.00")
    await page.get_by_label("Reason for the credit (optional)").fill("Goodwill")
    await follow(page, page.get_by_role("button", name="Add credit note"))
    assert (await page.get_by_role("definition").all_inner_texts())[8].startswith("CAD 228.00")
    assert await page.get_by_role("cell", name="Goodwill").is_visible()

    await follow(page, page.get_by_role("link", name="Invoices").first)
    await page.get_by_label("Status").select_option("open")
    await page.get_by_label("Organization").select_option(label="Maple School")
    await follow(page, page.get_by_role("button", name="Filter"))
    assert await page.get_by_role("link", name=number).is_visible()
    await page.get_by_label("From").fill((portal.today - timedelta(days=1)).isoformat())
    await page.get_by_label("To").fill((portal.today + timedelta(days=1)).isoformat())
    async with page.expect_download() as started:
        await page.get_by_role("button", name="Export CSV").click()
    download = await started.value
    csv = await asyncio.to_thread(Path(await download.path()).read_text, encoding="utf-8")
    assert csv.startswith("invoice_number,")
    assert csv.count(number) == 2  # one row per line


async def test_an_admin_assigns_a_suggested_therapist(page: Any, portal: PortalWorld) -> None:
    await sign_in(page, portal, "admin")
    assert await page.get_by_role("heading", name="Needs a therapist").is_visible()
    section = page.get_by_role("region", name="Afternoon songwriting")
    assert "Noor Haddad" in await section.get_by_role("row").nth(1).inner_text()
    await follow(
        page, section.get_by_role("button", name="Assign Noor Haddad to Afternoon songwriting")
    )
    assert await page.get_by_role("heading", name="Afternoon songwriting").is_visible()
    assert "Noor Haddad" in await page.locator("dl.facts").inner_text()


async def test_a_coordinator_editing_the_url_to_another_organizations_program_gets_404(
    page: Any, portal: PortalWorld
) -> None:
    await sign_in(page, portal, "coordinator")
    response = await page.goto(f"{portal.url}/app/programs/{portal.ids['foreign']}")
    assert response is not None and response.status == 404
    assert await page.get_by_role("heading", name="Not found").is_visible()
    assert "Birch clinic circle" not in await page.content()


async def test_a_revoked_key_is_signed_out_on_the_next_page_load(
    page: Any, portal: PortalWorld
) -> None:
    made = portal.admin.post(
        "/v1/api-keys",
        json={"name": "Short-lived", "role": "coordinator", "organization_id": portal.ids["org_a"]},
    ).json()
    portal.keys["short_lived"] = made["key"]
    await sign_in(page, portal, "short_lived")
    assert await page.get_by_role("heading", name="Programs").is_visible()
    assert portal.admin.delete(f"/v1/api-keys/{made['id']}").status_code == 200
    await page.reload()
    assert page.url == f"{portal.url}/app/login"
    assert await page.get_by_label("API key").is_visible()


async def test_signing_out_ends_the_session(page: Any, portal: PortalWorld) -> None:
    await sign_in(page, portal, "finance")
    await follow(page, page.get_by_role("button", name="Sign out"))
    assert page.url == f"{portal.url}/app/login"
    await page.goto(f"{portal.url}/app/invoices")
    assert page.url == f"{portal.url}/app/login"


PAGES = {
    "coordinator": ["/app/programs", "/app/programs/new", "/app/invoices", "program:running"],
    "therapist": [
        "/app/week",
        "/app/time-off",
        "/app/sessions/{to_complete_observed}/complete",
        "/app/sessions/{to_observe}/observation",
    ],
    "finance": ["/app/invoices", "/app/invoices/run"],
    "admin": ["/app/needs-therapist", "/app/programs", "/app/programs/new"],
}


@pytest.mark.parametrize("role", sorted(PAGES))
async def test_every_page_passes_axe_with_no_serious_or_critical_violation(
    page: Any, portal: PortalWorld, role: str
) -> None:
    await page.goto(f"{portal.url}/app/login")
    found = await blocking_violations(page)
    await sign_in(page, portal, role)
    for path in PAGES[role]:
        if path.startswith("program:"):
            path = f"/app/programs/{portal.ids[path.split(':')[1]]}"
        path = path.format(**portal.ids)
        await page.goto(f"{portal.url}{path}")
        found += await blocking_violations(page)
    if role == "coordinator":  # a form with errors, and a cancellation page
        await page.goto(f"{portal.url}/app/programs/new")
        await follow(page, page.get_by_role("button", name="Preview"))
        found += await blocking_violations(page)
        await page.goto(f"{portal.url}/app/programs/{portal.ids['foreign']}")
        found += await blocking_violations(page)
    if role == "finance":
        await page.goto(f"{portal.url}/app/invoices")
        links = page.locator("table a")
        if await links.count():
            await follow(page, links.first)
            found += await blocking_violations(page)
    assert found == []


async def test_the_keyboard_alone_signs_in_and_books_with_the_focus_always_visible(
    page: Any, portal: PortalWorld
) -> None:
    await page.goto(f"{portal.url}/app/login")

    async def focused() -> dict[str, str]:
        result: dict[str, str] = await page.evaluate(
            """() => { const e = document.activeElement, s = getComputedStyle(e);
                 return {name: e.getAttribute('name') || e.textContent.trim(),
                         outline: s.outlineStyle + ' ' + s.outlineWidth}; }"""
        )
        return result

    await page.keyboard.press("Tab")
    assert await focused() == {"name": "Skip to content", "outline": "solid 3px"}
    await page.keyboard.press("Tab")
    await page.keyboard.press("Tab")
    assert await focused() == {"name": "api_key", "outline": "solid 3px"}
    await page.keyboard.type(portal.key_for("coordinator"))
    await page.keyboard.press("Enter")
    await page.wait_for_url(f"{portal.url}/app/programs")
    for _ in range(4):  # skip link, brand, Programs, Book a program
        await page.keyboard.press("Tab")
    assert await focused() == {"name": "Book a program", "outline": "solid 3px"}
    await page.keyboard.press("Enter")
    await page.wait_for_url(f"{portal.url}/app/programs/new")
