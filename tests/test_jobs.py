"""Background jobs, run as the scheduler runs them (`run_job`), inside the test's transaction:
each is idempotent, tells what it did in its summary, and leaves a record for `GET /v1/jobs`.

PostgreSQL's now() stands still inside the test's outer transaction (it is the time the test
began), while Python's clock runs on; times the database compares against now() are set with
now() here too.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import os
import re
import sys
import uuid
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import httpx
import psycopg
import pytest
import stripe
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, AsyncSession, async_sessionmaker

from models.jobs import JobOutcome
from service.app import create_app
from service.core.settings import Settings
from service.integrations import stripe_api
from service.integrations.webhook_delivery import Deliverer
from service.jobs import scheduler
from service.jobs.definitions import JOBS, JobContext, Summary
from service.jobs.scheduler import job_context, run_job
from tests.billing_support import complete, delivered_program, period, run
from tests.conftest import LiveServer
from tests.fake_stripe import FakeStripe, stripe_fixtures
from tests.programs_support import confirmed_program, sessions_of
from tests.support import Api, ok, problem
from tests.webhook_receiver import Receiver
from tests.webhooks_support import subscribe

# The fake Stripe is started only by the tests that ask for it; `stripe_settings` is the
# suite's settings pointed at it (the other tests keep Stripe off).
stripe_server, fake_stripe, stripe_settings = stripe_fixtures()

SUCCEEDED, FAILED = JobOutcome.succeeded, JobOutcome.failed
INVOICE_NUMBER = re.compile(r"INV-(\d{4})-(\d{6})")


def in_test_transaction(connection: AsyncConnection) -> async_sessionmaker[AsyncSession]:
    return async_sessionmaker(
        bind=connection, join_transaction_mode="create_savepoint", expire_on_commit=False
    )


async def run_now(
    connection: AsyncConnection,
    settings: Settings,
    name: str,
    *,
    stripe_client: stripe.StripeClient | None = None,
    **overrides: Any,
) -> tuple[JobOutcome, Summary]:
    """Run one job now, as the scheduler would, with `overrides` applied to the settings."""
    ctx = job_context(
        settings.model_copy(update=overrides), in_test_transaction(connection), stripe_client
    )
    try:
        return await run_job(ctx, name)
    finally:
        await ctx.deliverer.aclose()


def provider_today(settings: Settings) -> date:
    return datetime.now(ZoneInfo(settings.timezone)).date()


def last_month(today: date) -> tuple[date, date]:
    end = today.replace(day=1) - timedelta(days=1)
    return end.replace(day=1), end


def upcoming_slot(zone: str) -> datetime:
    """A whole minute 2 to 20 hours from now whose local time is between 01:00 and 19:59: an
    hour-long session there, or moved two hours later, stays inside the day (therapists are
    available 00:00-23:59) and inside the 24-hour reminder window."""
    now = datetime.now(UTC).replace(second=0, microsecond=0) + timedelta(minutes=1)
    for hours in range(2, 21):
        candidate = now + timedelta(hours=hours)
        if 1 <= candidate.astimezone(ZoneInfo(zone)).hour <= 19:
            return candidate
    raise AssertionError("unreachable: 19 consecutive hours include one between 01:00 and 19:59")


def utc_text(instant: datetime) -> str:
    return instant.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


async def program_starting_at(
    api: Api, org: dict[str, Any], starts_at: datetime, *, count: int = 1
) -> list[dict[str, Any]]:
    """A daily program booked by an admin whose first session starts at `starts_at`."""
    local = starts_at.astimezone(ZoneInfo(org["timezone"]))
    program = await confirmed_program(
        api,
        org,
        await api.make_offering(),
        await api.make_therapist(),
        schedule={
            "start_date": str(local.date()),
            "start_time": local.strftime("%H:%M"),
            "rrule": f"FREQ=DAILY;COUNT={count}",
        },
    )
    return await sessions_of(api, program["id"])


async def delivered_around_month_start(
    api: Api, org: dict[str, Any], settings: Settings
) -> list[dict[str, Any]]:
    """Three sessions at 00:30, all delivered: the last two days of last month and the 1st of
    this month (so only the first half hour of a month cannot run this). At the offering's
    $200 rate and 5% GST, last month bills 400.00 + 20.00."""
    _, last_day = last_month(provider_today(settings))
    program = await confirmed_program(
        api,
        org,
        await api.make_offering(rate_cents=20000),
        await api.make_therapist(),
        schedule={
            "start_date": str(last_day - timedelta(days=1)),
            "start_time": "00:30",
            "rrule": "FREQ=DAILY;COUNT=3",
        },
    )
    sessions = await sessions_of(api, program["id"])
    for session in sessions:
        await complete(api, session)
    return sessions


async def invoices_of(api: Api, org: dict[str, Any]) -> list[dict[str, Any]]:
    listed = ok(
        await api.client.get(
            "/v1/invoices", params={"organization_id": org["id"]}, headers=api.admin
        )
    )
    found: list[dict[str, Any]] = listed["data"]
    return found


async def invoice(api: Api, invoice_id: str) -> dict[str, Any]:
    shown: dict[str, Any] = ok(
        await api.client.get(f"/v1/invoices/{invoice_id}", headers=api.admin)
    )
    return shown


async def session_as_admin(api: Api, session_id: str) -> dict[str, Any]:
    shown: dict[str, Any] = ok(
        await api.client.get(f"/v1/sessions/{session_id}", headers=api.admin)
    )
    return shown


async def issued_invoice(api: Api, org: dict[str, Any]) -> dict[str, Any]:
    """The organization's invoice for one delivered session, issued (open, due in 30 days)."""
    _, sessions = await delivered_program(api, org, sessions=1)
    await complete(api, sessions[0])
    (draft,) = await run(api, *period(), organization_id=org["id"])
    issued: dict[str, Any] = ok(
        await api.client.post(f"/v1/invoices/{draft['id']}/issue", headers=api.admin)
    )
    return issued


async def set_due_date(db: AsyncSession, invoice_id: str, due: date) -> None:
    await db.execute(
        text("UPDATE invoices SET due_date = :due WHERE id = :id"),
        {"due": due, "id": uuid.UUID(invoice_id)},
    )
    await db.commit()


async def listen(api: Api, receiver: Receiver, events: list[str]) -> None:
    """Subscribe the receiver to `events`. It answers 200: its default 204 carries a body
    ("ok"), which HTTP forbids, so the next request on that kept-alive connection reads those
    bytes as its status line and fails once before a retry succeeds."""
    receiver.status = 200
    await subscribe(api, receiver, events)


def delivered(receiver: Receiver) -> list[dict[str, Any]]:
    """What the receiver accepted, each verified against the endpoint's secret."""
    accepted = receiver.accepted()
    assert all(r.verified for r in accepted)
    return [r.payload for r in accepted]


# --- extend-horizon -----------------------------------------------------------------------------


async def test_extend_horizon_fills_an_open_ended_program_up_to_the_horizon_once(
    api: Api, connection: AsyncConnection, settings: Settings
):
    org = await api.make_org()
    today = provider_today(settings)
    open_ended = await confirmed_program(
        api,
        org,
        await api.make_offering(),
        await api.make_therapist(),
        schedule={"start_date": str(today + timedelta(days=1)), "rrule": "FREQ=DAILY"},
    )
    counted = await confirmed_program(
        api,
        org,
        await api.make_offering(),
        await api.make_therapist(),
        schedule={"start_date": str(today + timedelta(days=1)), "rrule": "FREQ=WEEKLY;COUNT=4"},
    )
    # Confirming filled tomorrow .. tomorrow + 12 weeks; the job, on the same day, has nothing
    # to add with the same horizon, and fills up to today + 14 weeks when the horizon is longer.
    assert len(await sessions_of(api, open_ended["id"])) == 12 * 7 + 1
    assert await run_now(connection, settings, "extend-horizon") == (
        SUCCEEDED,
        {"sessions_added": 0},
    )

    extended = await run_now(connection, settings, "extend-horizon", horizon_weeks=14)

    assert extended == (SUCCEEDED, {"sessions_added": 14 * 7 - (12 * 7 + 1)})
    days = [s["starts_at"][:10] for s in await sessions_of(api, open_ended["id"])]
    assert days == [str(today + timedelta(days=n)) for n in range(1, 14 * 7 + 1)]
    assert len(await sessions_of(api, counted["id"])) == 4
    again = await run_now(connection, settings, "extend-horizon", horizon_weeks=14)
    assert again == (SUCCEEDED, {"sessions_added": 0})
    assert len(await sessions_of(api, open_ended["id"])) == 14 * 7


# --- draft-invoices ------------------------------------------------------------------------------


async def test_draft_invoices_when_auto_invoicing_is_off_bills_nothing(
    api: Api, connection: AsyncConnection, settings: Settings
):
    org = await api.make_org()
    await delivered_around_month_start(api, org, settings)

    outcome = await run_now(connection, settings, "draft-invoices", auto_invoice="off")

    assert outcome == (SUCCEEDED, {"mode": "off"})
    assert await invoices_of(api, org) == []


async def test_draft_invoices_drafts_last_months_sessions_only_and_never_bills_them_twice(
    api: Api, connection: AsyncConnection, settings: Settings
):
    org = await api.make_org()
    sessions = await delivered_around_month_start(api, org, settings)
    first_day, last_day = last_month(provider_today(settings))

    outcome = await run_now(connection, settings, "draft-invoices", auto_invoice="draft")

    assert outcome == (
        SUCCEEDED,
        {
            "mode": "draft",
            "period_start": str(first_day),
            "period_end": str(last_day),
            "drafts": 1,
        },
    )
    (listed,) = await invoices_of(api, org)
    draft = await invoice(api, listed["id"])
    assert (draft["status"], draft["number"], draft["issued_at"]) == ("draft", None, None)
    assert (draft["period_start"], draft["period_end"]) == (str(first_day), str(last_day))
    assert [line["session_id"] for line in draft["lines"]] == [s["id"] for s in sessions[:2]]
    assert (draft["subtotal_cents"], draft["tax_cents"], draft["total_cents"]) == (
        40000,
        2000,
        42000,
    )
    this_months = await session_as_admin(api, sessions[2]["id"])
    assert (this_months["status"], this_months["invoice_id"]) == ("completed", None)

    again = await run_now(connection, settings, "draft-invoices", auto_invoice="draft")

    assert again[1]["drafts"] == 0
    assert await invoices_of(api, org) == [listed]
    assert await invoice(api, listed["id"]) == draft


async def test_draft_invoices_in_issue_mode_issues_last_months_drafts_and_announces_each(
    api: Api,
    connection: AsyncConnection,
    settings: Settings,
    receiver: Receiver,
    deliverer: Deliverer,
):
    await listen(api, receiver, ["invoice.issued"])
    school, clinic, running = await api.make_org(), await api.make_org(), await api.make_org()
    for org in (school, clinic, running):
        await delivered_around_month_start(api, org, settings)
    today = provider_today(settings)
    first_day, last_day = last_month(today)
    # Finance already ran this month for one organization: its draft reaches into this month,
    # so it is theirs to issue, not the job's (the job still adds last month's sessions to it).
    await run(api, str(today.replace(day=1)), str(today), organization_id=running["id"])

    outcome = await run_now(connection, settings, "draft-invoices", auto_invoice="issue")

    assert outcome == (
        SUCCEEDED,
        {
            "mode": "issue",
            "period_start": str(first_day),
            "period_end": str(last_day),
            "drafts": 3,
            "issued": 2,
        },
    )
    issued = [(await invoices_of(api, org))[0] for org in (school, clinic)]
    assert [i["status"] for i in issued] == ["open", "open"]
    assert all(i["total_cents"] == 42000 for i in issued)
    numbers = sorted(i["number"] for i in issued)
    parsed = [INVOICE_NUMBER.fullmatch(n) for n in numbers]
    assert all(parsed), numbers
    assert {m.group(1) for m in parsed if m} == {str(today.year)}
    serials = [int(m.group(2)) for m in parsed if m]
    assert serials[1] == serials[0] + 1  # gapless
    (still_draft,) = await invoices_of(api, running)
    assert (still_draft["status"], still_draft["number"]) == ("draft", None)
    assert (still_draft["period_start"], still_draft["period_end"]) == (str(first_day), str(today))
    assert still_draft["subtotal_cents"] == 60000

    await deliverer.deliver_due()

    announced = delivered(receiver)
    assert [p["type"] for p in announced] == ["invoice.issued", "invoice.issued"]
    by_id = {p["data"]["id"]: p["data"] for p in announced}
    assert set(by_id) == {i["id"] for i in issued}
    for shown in issued:
        assert by_id[shown["id"]] == await invoice(api, shown["id"])

    again = await run_now(connection, settings, "draft-invoices", auto_invoice="issue")

    assert again == (
        SUCCEEDED,
        {
            "mode": "issue",
            "period_start": str(first_day),
            "period_end": str(last_day),
            "drafts": 0,
            "issued": 0,
        },
    )
    assert [len(await invoices_of(api, org)) for org in (school, clinic, running)] == [1, 1, 1]
    for shown in issued:
        assert len((await invoice(api, shown["id"]))["lines"]) == 2
    await deliverer.deliver_due()
    assert len(delivered(receiver)) == 2


# --- mark-overdue --------------------------------------------------------------------------------


async def test_an_open_invoice_past_its_due_date_is_announced_overdue_once(
    api: Api,
    db: AsyncSession,
    connection: AsyncConnection,
    settings: Settings,
    receiver: Receiver,
    deliverer: Deliverer,
):
    await listen(api, receiver, ["invoice.overdue"])
    today = provider_today(settings)
    overdue = await issued_invoice(api, await api.make_org())
    paid = await issued_invoice(api, await api.make_org())
    ok(
        await api.client.post(
            f"/v1/invoices/{paid['id']}/payments",
            json={"amount_cents": paid["total_cents"], "method": "cheque"},
            headers=api.admin,
        ),
        201,
    )
    voided = await issued_invoice(api, await api.make_org())
    ok(
        await api.client.post(
            f"/v1/invoices/{voided['id']}/void", json={"reason": "Wrong rate"}, headers=api.admin
        )
    )
    due_today = await issued_invoice(api, await api.make_org())
    not_yet_due = await issued_invoice(api, await api.make_org())
    assert not_yet_due["due_date"] == str(today + timedelta(days=30))
    for shown in (overdue, paid, voided):
        await set_due_date(db, shown["id"], today - timedelta(days=1))
    await set_due_date(db, due_today["id"], today)

    outcome = await run_now(connection, settings, "mark-overdue")
    await deliverer.deliver_due()

    assert outcome == (SUCCEEDED, {"invoices": 1})
    (announced,) = delivered(receiver)
    assert announced["type"] == "invoice.overdue"
    assert announced["data"] == await invoice(api, overdue["id"])
    assert (announced["data"]["status"], announced["data"]["due_date"]) == (
        "open",
        str(today - timedelta(days=1)),
    )

    again = await run_now(connection, settings, "mark-overdue")
    await deliverer.deliver_due()

    assert again == (SUCCEEDED, {"invoices": 0})
    assert len(delivered(receiver)) == 1


# --- session-reminders ---------------------------------------------------------------------------


async def test_a_session_starting_within_a_day_gets_one_reminder_and_later_or_cancelled_ones_none(
    api: Api,
    connection: AsyncConnection,
    settings: Settings,
    receiver: Receiver,
    deliverer: Deliverer,
):
    await listen(api, receiver, ["session.upcoming"])
    org = await api.make_org()
    starts_at = upcoming_slot(org["timezone"])
    soon, tomorrows = await program_starting_at(api, org, starts_at, count=2)
    (cancelled,) = await program_starting_at(api, org, starts_at)
    ok(
        await api.client.post(
            f"/v1/sessions/{cancelled['id']}/cancel",
            json={"reason": "Room closed"},
            headers=api.admin,
        )
    )
    assert soon["starts_at"] == utc_text(starts_at)
    assert tomorrows["starts_at"] > utc_text(datetime.now(UTC) + timedelta(hours=24))

    outcome = await run_now(connection, settings, "session-reminders")
    await deliverer.deliver_due()

    assert outcome == (SUCCEEDED, {"sessions": 1})
    (reminder,) = delivered(receiver)
    assert reminder["type"] == "session.upcoming"
    assert reminder["data"] == await session_as_admin(api, soon["id"])

    again = await run_now(connection, settings, "session-reminders")
    await deliverer.deliver_due()

    assert again == (SUCCEEDED, {"sessions": 0})
    assert len(delivered(receiver)) == 1


async def test_a_session_rescheduled_after_its_reminder_is_reminded_again_of_its_new_time(
    api: Api,
    connection: AsyncConnection,
    settings: Settings,
    receiver: Receiver,
    deliverer: Deliverer,
):
    await listen(api, receiver, ["session.upcoming"])
    org = await api.make_org()
    starts_at = upcoming_slot(org["timezone"])
    (session,) = await program_starting_at(api, org, starts_at)
    assert await run_now(connection, settings, "session-reminders") == (
        SUCCEEDED,
        {"sessions": 1},
    )
    await deliverer.deliver_due()

    moved_to = utc_text(starts_at + timedelta(hours=2))
    moved = ok(
        await api.client.patch(
            f"/v1/sessions/{session['id']}", json={"starts_at": moved_to}, headers=api.admin
        )
    )
    assert moved["starts_at"] == moved_to
    outcome = await run_now(connection, settings, "session-reminders")
    await deliverer.deliver_due()

    assert outcome == (SUCCEEDED, {"sessions": 1})
    first, second = delivered(receiver)
    assert (first["type"], second["type"]) == ("session.upcoming", "session.upcoming")
    assert first["data"]["starts_at"] == utc_text(starts_at)
    assert second["data"] == await session_as_admin(api, session["id"])
    assert second["data"]["starts_at"] == moved_to
    assert await run_now(connection, settings, "session-reminders") == (
        SUCCEEDED,
        {"sessions": 0},
    )


# --- stripe-sync ---------------------------------------------------------------------------------


async def test_stripe_sync_without_stripe_configured_says_it_skipped(
    connection: AsyncConnection, settings: Settings
):
    assert await run_now(connection, settings, "stripe-sync") == (
        SUCCEEDED,
        {"skipped": "Stripe is not configured (STRIPE_API_KEY)"},
    )


async def test_stripe_sync_waits_out_a_failed_push_backoff_then_resumes_it(
    api: Api,
    db: AsyncSession,
    engine: AsyncEngine,
    connection: AsyncConnection,
    fake_stripe: FakeStripe,
    stripe_settings: Settings,
):
    org = await api.make_org()
    _, sessions = await delivered_program(api, org, sessions=2)
    for session in sessions:
        await complete(api, session)
    (draft,) = await run(api, *period(), organization_id=org["id"])
    app = create_app(
        stripe_settings, engine=engine, session_factory=in_test_transaction(connection)
    )
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://ensemble.test") as http:
        fake_stripe.fail("customer", "refuse")
        failed = ok(await http.post(f"/v1/invoices/{draft['id']}/issue", headers=api.admin))
    assert (failed["status"], failed["stripe_sync_status"]) == ("open", "failed")
    fake_stripe.clear_faults()
    calls_so_far = len(fake_stripe.requests)
    client = stripe_api.make_client(stripe_settings)

    backing_off = await run_now(connection, stripe_settings, "stripe-sync", stripe_client=client)

    assert backing_off == (SUCCEEDED, {"invoices": 0})
    assert len(fake_stripe.requests) == calls_so_far
    assert (await invoice(api, draft["id"]))["stripe_sync_status"] == "failed"

    await db.execute(
        text(
            "UPDATE invoices SET stripe_sync_retry_at = now() - interval '1 second' WHERE id = :id"
        ),
        {"id": uuid.UUID(draft["id"])},
    )
    await db.commit()
    resumed = await run_now(connection, stripe_settings, "stripe-sync", stripe_client=client)

    assert resumed == (SUCCEEDED, {"invoices": 1, "synced": 1})
    synced = await invoice(api, draft["id"])
    (stripe_invoice,) = fake_stripe.invoices_of(draft["id"])
    assert (synced["stripe_sync_status"], synced["stripe_invoice_id"]) == (
        "synced",
        stripe_invoice["id"],
    )
    assert (stripe_invoice["status"], stripe_invoice["sent"]) == ("open", 1)
    assert len(fake_stripe.customers_of(org["id"])) == 1
    done = await run_now(connection, stripe_settings, "stripe-sync", stripe_client=client)
    assert done == (SUCCEEDED, {"invoices": 0})


# --- outcomes and GET /v1/jobs -------------------------------------------------------------------


async def test_a_failing_job_is_recorded_as_failed_and_jobs_shows_each_last_run(
    api: Api, connection: AsyncConnection, settings: Settings, monkeypatch: pytest.MonkeyPatch
):
    async def out_of_order(ctx: JobContext) -> Summary:
        raise RuntimeError("the outbox table is locked")

    broken = dataclasses.replace(JOBS["mark-overdue"], run=out_of_order)
    monkeypatch.setitem(JOBS, "mark-overdue", broken)
    # The runner's clock, frozen: each run's started_at is exactly this instant.
    began = datetime.now(UTC).replace(microsecond=0) - timedelta(minutes=1)
    monkeypatch.setattr(scheduler, "utcnow", lambda: began)

    failed = await run_now(connection, settings, "mark-overdue")
    succeeded = await run_now(connection, settings, "session-reminders")

    error = {"error": "RuntimeError: the outbox table is locked"}
    assert failed == (FAILED, error)
    assert succeeded == (SUCCEEDED, {"sessions": 0})
    listed = ok(await api.client.get("/v1/jobs", headers=api.admin))
    jobs = {job["name"]: job for job in listed["data"]}
    assert list(jobs) == list(JOBS)
    runs = {name: jobs[name]["last_run"] for name in ("mark-overdue", "session-reminders")}
    assert {name: (r["outcome"], r["detail"]) for name, r in runs.items()} == {
        "mark-overdue": ("failed", error),
        "session-reminders": ("succeeded", {"sessions": 0}),
    }
    for last_run in runs.values():
        assert set(last_run) == {"started_at", "finished_at", "outcome", "detail"}
        started = datetime.fromisoformat(last_run["started_at"])
        finished = datetime.fromisoformat(last_run["finished_at"])
        assert started == began
        # finished_at is the database's clock_timestamp() when the run was recorded: after the
        # frozen start, and not after this moment.
        assert began < finished <= datetime.now(UTC)
    assert [name for name, job in jobs.items() if job["last_run"] is not None] == [
        "mark-overdue",
        "session-reminders",
    ]
    problem(await api.client.get("/v1/jobs", headers=await api.key("finance")), 403)


# --- ensemble jobs run ---------------------------------------------------------------------------

ENSEMBLE = str(Path(sys.executable).with_name("ensemble"))


async def ensemble(*args: str, database_url: str) -> tuple[int, str, str]:
    env = {**os.environ, "DATABASE_URL": database_url}
    env.pop("STRIPE_API_KEY", None)
    process = await asyncio.create_subprocess_exec(
        ENSEMBLE,
        *args,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(process.communicate(), timeout=120)
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()


async def test_ensemble_jobs_run_runs_a_job_now_and_prints_its_outcome_as_one_json_line(
    live_server: LiveServer, database_url: str
):
    admin = await live_server.admin_key()
    async with httpx.AsyncClient(base_url=live_server.url, timeout=30) as http:
        api = Api(client=http, admin=admin)
        org = await api.make_org()
        (session,) = await program_starting_at(api, org, upcoming_slot(org["timezone"]))

        first = await ensemble("jobs", "run", "session-reminders", database_url=database_url)
        second = await ensemble("jobs", "run", "session-reminders", database_url=database_url)

        listed = ok(await http.get("/v1/jobs", headers=admin))
    code, out, err = first
    assert code == 0, err
    assert out.endswith("\n") and out.count("\n") == 1
    assert json.loads(out) == {
        "job": "session-reminders",
        "outcome": "succeeded",
        "detail": {"sessions": 1},
    }
    code, out, err = second
    assert code == 0, err
    assert json.loads(out)["detail"] == {"sessions": 0}
    (reminders,) = [job for job in listed["data"] if job["name"] == "session-reminders"]
    assert (reminders["last_run"]["outcome"], reminders["last_run"]["detail"]) == (
        "succeeded",
        {"sessions": 0},
    )
    with psycopg.connect(database_url) as conn:
        events = conn.execute("SELECT type, data->>'id' FROM webhook_events").fetchall()
    assert [e for e in events if e[0] == "session.upcoming"] == [
        ("session.upcoming", session["id"])
    ]


async def test_ensemble_jobs_run_refuses_an_unknown_job_with_exit_code_2(database_url: str):
    code, out, err = await ensemble("jobs", "run", "nope", database_url=database_url)
    assert (code, out) == (2, "")
    assert "unknown job 'nope'" in err
    assert all(name in err for name in JOBS)
