"""Every event of the contract (docs/api.md, 10. Events): the action that fires it, and the exact
payload a subscribed receiver gets: `{"type", "timestamp", "data"}`, `timestamp` the instant the
change was written, `data` the resource exactly as finance reads it from `GET` right after the
change (sessions with `invoice_id: null`), and the values that the event is about stated.

Dates are relative to today (the sessions' times in the organization's zone)."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession, async_sessionmaker

from models.webhooks import EventType
from service.core.settings import Settings
from service.integrations.webhook_delivery import Deliverer
from service.jobs.scheduler import job_context, run_job
from tests import test_stripe_mirror
from tests.billing_support import complete, delivered_program, period, run
from tests.programs_support import confirmed_program, make_program, sessions_of
from tests.support import Api, ok
from tests.webhook_receiver import Receiver
from tests.webhooks_support import subscribe

ZONE = "America/Edmonton"


def weekday_ahead(weeks: int, weekday: int) -> date:
    """The `weekday` (0 = Monday) at least `weeks` weeks after today, in the program's zone."""
    start = datetime.now(ZoneInfo(ZONE)).date() + timedelta(weeks=weeks)
    return start + timedelta(days=(weekday - start.weekday()) % 7)


def at(day: date, hour: int, minute: int = 0) -> str:
    """Local `hour:minute` on `day` in the zone, as the API writes an instant."""
    local = datetime(day.year, day.month, day.day, hour, minute, tzinfo=ZoneInfo(ZONE))
    return local.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def future_schedule(count: int = 4) -> dict[str, str]:
    return {
        "timezone": ZONE,
        "start_date": str(weekday_ahead(4, 1)),
        "start_time": "10:00",
        "rrule": f"FREQ=WEEKLY;BYDAY=TU;COUNT={count}",
    }


class Events:
    """The receiver's view of what was delivered, checked against the outbox."""

    def __init__(
        self, api: Api, receiver: Receiver, deliverer: Deliverer, db: AsyncSession
    ) -> None:
        self.api, self.receiver, self.deliverer, self.db = api, receiver, deliverer, db

    async def delivered(self, event_type: str) -> list[dict[str, Any]]:
        """Deliver what is due; the payloads of `event_type` received so far, each checked to
        be signed, to carry exactly type, timestamp and data, and to be timestamped with its
        outbox row's creation instant."""
        await self.deliverer.deliver_due()
        got = [r for r in self.receiver.accepted() if r.payload["type"] == event_type]
        assert all(r.verified for r in got)
        written = (
            await self.db.execute(
                text("SELECT created_at FROM webhook_events WHERE type = :t ORDER BY created_at"),
                {"t": event_type},
            )
        ).scalars()
        stamps = [w.isoformat() for w in written]
        payloads = [r.payload for r in got]
        assert [set(p) for p in payloads] == [{"type", "timestamp", "data"}] * len(payloads)
        assert sorted(p["timestamp"] for p in payloads) == sorted(stamps)
        return payloads

    async def one(self, event_type: str) -> dict[str, Any]:
        [payload] = await self.delivered(event_type)
        assert payload["type"] == event_type
        data: dict[str, Any] = payload["data"]
        return data

    async def get(self, path: str) -> dict[str, Any]:
        found: dict[str, Any] = ok(await self.api.client.get(path, headers=self.api.admin))
        return found


async def start(api: Api, receiver: Receiver, deliverer: Deliverer, db: AsyncSession) -> Events:
    await subscribe(api, receiver)
    return Events(api, receiver, deliverer, db)


def as_event(session: dict[str, Any]) -> dict[str, Any]:
    return {**session, "invoice_id": None}


async def test_program_requested_carries_the_booked_program(
    api: Api, receiver: Receiver, deliverer: Deliverer, db: AsyncSession
) -> None:
    events = await start(api, receiver, deliverer, db)
    org = await api.make_org(holiday_region=None)
    program = await make_program(api, org, await api.make_offering(), schedule=future_schedule())

    data = await events.one("program.requested")

    assert data == await events.get(f"/v1/programs/{program['id']}")
    assert (data["id"], data["status"], data["therapist_id"]) == (
        program["id"],
        "requested",
        None,
    )
    assert data["schedule"]["start_date"] == future_schedule()["start_date"]


async def test_program_confirmed_carries_the_confirmed_program(
    api: Api, receiver: Receiver, deliverer: Deliverer, db: AsyncSession
) -> None:
    events = await start(api, receiver, deliverer, db)
    therapist = await api.make_therapist()
    program = await confirmed_program(
        api,
        await api.make_org(holiday_region=None),
        await api.make_offering(),
        therapist,
        schedule=future_schedule(),
    )

    data = await events.one("program.confirmed")

    assert data == await events.get(f"/v1/programs/{program['id']}")
    assert (data["id"], data["status"], data["therapist_id"]) == (
        program["id"],
        "confirmed",
        therapist["id"],
    )


async def test_program_cancelled_carries_the_cancelled_program_and_no_session_events(
    api: Api, receiver: Receiver, deliverer: Deliverer, db: AsyncSession
) -> None:
    events = await start(api, receiver, deliverer, db)
    program = await confirmed_program(
        api,
        await api.make_org(holiday_region=None),
        await api.make_offering(),
        await api.make_therapist(),
        schedule=future_schedule(),
    )
    effective = future_schedule()["start_date"]
    ok(
        await api.client.post(
            f"/v1/programs/{program['id']}/cancel",
            json={"effective_date": effective, "reason": "Funding ended"},
            headers=api.admin,
        )
    )

    data = await events.one("program.cancelled")

    assert data == await events.get(f"/v1/programs/{program['id']}")
    assert (data["id"], data["status"]) == (program["id"], "cancelled")
    assert await events.delivered("session.cancelled") == []
    statuses = [s["status"] for s in await sessions_of(api, program["id"])]
    assert statuses == ["cancelled"] * 4


async def test_session_rescheduled_carries_the_session_at_its_new_time(
    api: Api, receiver: Receiver, deliverer: Deliverer, db: AsyncSession
) -> None:
    events = await start(api, receiver, deliverer, db)
    program = await confirmed_program(
        api,
        await api.make_org(holiday_region=None),
        await api.make_offering(),
        await api.make_therapist(),
        schedule=future_schedule(),
    )
    session = (await sessions_of(api, program["id"]))[0]
    day = weekday_ahead(4, 1)
    moved_to = at(day, 14, 30)
    ok(
        await api.client.patch(
            f"/v1/sessions/{session['id']}", json={"starts_at": moved_to}, headers=api.admin
        )
    )

    data = await events.one("session.rescheduled")

    assert data == as_event(await events.get(f"/v1/sessions/{session['id']}"))
    assert (data["id"], data["status"], data["starts_at"], data["ends_at"]) == (
        session["id"],
        "scheduled",
        moved_to,
        at(day, 15, 30),
    )
    assert data["invoice_id"] is None


async def test_session_cancelled_carries_the_cancelled_session(
    api: Api, receiver: Receiver, deliverer: Deliverer, db: AsyncSession
) -> None:
    events = await start(api, receiver, deliverer, db)
    program = await confirmed_program(
        api,
        await api.make_org(holiday_region=None),
        await api.make_offering(),
        await api.make_therapist(),
        schedule=future_schedule(),
    )
    session = (await sessions_of(api, program["id"]))[1]
    ok(
        await api.client.post(
            f"/v1/sessions/{session['id']}/cancel", json={"reason": "Snow day"}, headers=api.admin
        )
    )

    data = await events.one("session.cancelled")

    assert data == as_event(await events.get(f"/v1/sessions/{session['id']}"))
    assert (data["id"], data["status"], data["starts_at"]) == (
        session["id"],
        "cancelled",
        at(weekday_ahead(4, 1) + timedelta(weeks=1), 10),
    )


async def test_session_completed_carries_the_delivered_session_with_its_attendance(
    api: Api, receiver: Receiver, deliverer: Deliverer, db: AsyncSession
) -> None:
    events = await start(api, receiver, deliverer, db)
    org = await api.make_org(holiday_region=None)
    _, sessions = await delivered_program(api, org, sessions=1, days_ago=3)
    await complete(api, sessions[0], attendance=1)

    data = await events.one("session.completed")

    assert data == as_event(await events.get(f"/v1/sessions/{sessions[0]['id']}"))
    three_days_ago = (datetime.now(UTC) - timedelta(days=3)).date()
    assert (data["id"], data["status"], data["attendance"], data["starts_at"]) == (
        sessions[0]["id"],
        "completed",
        1,
        datetime(
            three_days_ago.year,
            three_days_ago.month,
            three_days_ago.day,
            10,
            tzinfo=ZoneInfo(org["timezone"]),
        )
        .astimezone(UTC)
        .strftime("%Y-%m-%dT%H:%M:%SZ"),
    )


def upcoming_slot() -> datetime:
    """A whole minute 2 to 20 hours from now whose local time is between 01:00 and 19:59, so
    an hour-long session there stays inside the day and inside the 24-hour reminder window."""
    now = datetime.now(UTC).replace(second=0, microsecond=0) + timedelta(minutes=1)
    for hours in range(2, 21):
        candidate = now + timedelta(hours=hours)
        if 1 <= candidate.astimezone(ZoneInfo(ZONE)).hour <= 19:
            return candidate
    raise AssertionError("unreachable: 19 consecutive hours include one between 01:00 and 19:59")


async def run_job_now(connection: AsyncConnection, settings: Settings, name: str) -> None:
    factory = async_sessionmaker(
        bind=connection, join_transaction_mode="create_savepoint", expire_on_commit=False
    )
    ctx = job_context(settings, factory, None)
    try:
        await run_job(ctx, name)
    finally:
        await ctx.deliverer.aclose()


async def test_session_made_up_carries_the_make_up_linked_to_the_cancelled_session(
    api: Api, receiver: Receiver, deliverer: Deliverer, db: AsyncSession
) -> None:
    events = await start(api, receiver, deliverer, db)
    program = await confirmed_program(
        api,
        await api.make_org(holiday_region=None),
        await api.make_offering(),
        await api.make_therapist(),
        schedule=future_schedule(),
    )
    session = (await sessions_of(api, program["id"]))[1]
    ok(await api.client.post(f"/v1/sessions/{session['id']}/cancel", headers=api.admin))
    thursday = weekday_ahead(4, 1) + timedelta(weeks=1, days=2)
    made = ok(
        await api.client.post(
            f"/v1/sessions/{session['id']}/make-up",
            json={"starts_at": at(thursday, 14)},
            headers=api.admin,
        ),
        201,
    )

    data = await events.one("session.made_up")

    assert data == as_event(await events.get(f"/v1/sessions/{made['id']}"))
    assert (
        data["status"],
        data["starts_at"],
        data["ends_at"],
        data["occurrence"],
        data["makes_up"],
        data["made_up_by"],
    ) == ("scheduled", at(thursday, 14), at(thursday, 15), 2, session["id"], None)
    cancelled = await events.get(f"/v1/sessions/{session['id']}")
    assert (cancelled["status"], cancelled["made_up_by"]) == ("cancelled", made["id"])


async def test_session_upcoming_carries_the_session_the_reminder_job_found(
    api: Api,
    receiver: Receiver,
    deliverer: Deliverer,
    db: AsyncSession,
    connection: AsyncConnection,
    settings: Settings,
) -> None:
    events = await start(api, receiver, deliverer, db)
    starts = upcoming_slot()
    local = starts.astimezone(ZoneInfo(ZONE))
    program = await confirmed_program(
        api,
        await api.make_org(holiday_region=None),
        await api.make_offering(),
        await api.make_therapist(),
        schedule={
            "timezone": ZONE,
            "start_date": str(local.date()),
            "start_time": local.strftime("%H:%M"),
            "rrule": "FREQ=DAILY;COUNT=1",
        },
    )
    [session] = await sessions_of(api, program["id"])
    await run_job_now(connection, settings, "session-reminders")

    data = await events.one("session.upcoming")

    assert data == as_event(await events.get(f"/v1/sessions/{session['id']}"))
    assert (data["id"], data["status"], data["starts_at"]) == (
        session["id"],
        "scheduled",
        starts.strftime("%Y-%m-%dT%H:%M:%SZ"),
    )


async def issued_invoice(api: Api) -> dict[str, Any]:
    """An open invoice for two delivered sessions at 100.00 and 5 % tax: 210.00 due."""
    org = await api.make_org(tax_rate_bps=500, holiday_region=None)
    _, sessions = await delivered_program(api, org, sessions=2, rate_cents=10000)
    for session in sessions:
        await complete(api, session)
    [draft] = await run(api, *period())
    invoice: dict[str, Any] = ok(
        await api.client.post(f"/v1/invoices/{draft['id']}/issue", headers=api.admin)
    )
    assert (invoice["subtotal_cents"], invoice["tax_cents"], invoice["total_cents"]) == (
        20000,
        1000,
        21000,
    )
    return invoice


async def test_invoice_issued_carries_the_open_invoice_with_its_lines(
    api: Api, receiver: Receiver, deliverer: Deliverer, db: AsyncSession
) -> None:
    events = await start(api, receiver, deliverer, db)
    invoice = await issued_invoice(api)

    data = await events.one("invoice.issued")

    assert data == await events.get(f"/v1/invoices/{invoice['id']}")
    assert (data["id"], data["number"], data["status"], data["total_cents"]) == (
        invoice["id"],
        invoice["number"],
        "open",
        21000,
    )
    assert [line["amount_cents"] for line in data["lines"]] == [10000, 10000]
    assert (data["payments"], data["credit_notes"]) == ([], [])


async def test_invoice_paid_carries_the_settled_invoice_with_its_payment(
    api: Api, receiver: Receiver, deliverer: Deliverer, db: AsyncSession
) -> None:
    events = await start(api, receiver, deliverer, db)
    invoice = await issued_invoice(api)
    ok(
        await api.client.post(
            f"/v1/invoices/{invoice['id']}/payments",
            json={"amount_cents": 1000, "method": "bank_transfer"},
            headers=api.admin,
        ),
        201,
    )
    assert await events.delivered("invoice.paid") == []  # 200.00 still due: no event
    ok(
        await api.client.post(
            f"/v1/invoices/{invoice['id']}/payments",
            json={"amount_cents": 20000, "method": "bank_transfer", "reference": "TX-2"},
            headers=api.admin,
        ),
        201,
    )

    data = await events.one("invoice.paid")

    assert data == await events.get(f"/v1/invoices/{invoice['id']}")
    assert (data["id"], data["status"], data["total_cents"], data["amount_paid_cents"]) == (
        invoice["id"],
        "paid",
        21000,
        21000,
    )
    assert [(p["amount_cents"], p["reference"]) for p in data["payments"]] == [
        (1000, None),
        (20000, "TX-2"),
    ]


async def test_invoice_voided_carries_the_void_invoice(
    api: Api, receiver: Receiver, deliverer: Deliverer, db: AsyncSession
) -> None:
    events = await start(api, receiver, deliverer, db)
    invoice = await issued_invoice(api)
    ok(await api.client.post(f"/v1/invoices/{invoice['id']}/void", headers=api.admin))

    data = await events.one("invoice.voided")

    assert data == await events.get(f"/v1/invoices/{invoice['id']}")
    assert (data["id"], data["number"], data["status"], data["amount_paid_cents"]) == (
        invoice["id"],
        invoice["number"],
        "void",
        0,
    )


async def test_invoice_overdue_carries_the_open_invoice_past_its_due_date(
    api: Api,
    receiver: Receiver,
    deliverer: Deliverer,
    db: AsyncSession,
    connection: AsyncConnection,
    settings: Settings,
) -> None:
    events = await start(api, receiver, deliverer, db)
    invoice = await issued_invoice(api)
    # Its due date, moved to yesterday in the provider's zone: the job's "after due_date".
    yesterday = datetime.now(ZoneInfo(settings.timezone)).date() - timedelta(days=1)
    await db.execute(
        text("UPDATE invoices SET due_date = :d WHERE id = :id"),
        {"d": yesterday, "id": invoice["id"]},
    )
    await run_job_now(connection, settings, "mark-overdue")

    data = await events.one("invoice.overdue")

    assert data == await events.get(f"/v1/invoices/{invoice['id']}")
    assert (data["id"], data["status"], data["due_date"], data["total_cents"]) == (
        invoice["id"],
        "open",
        str(yesterday),
        21000,
    )


async def test_every_event_type_of_the_contract_has_its_payload_test() -> None:
    # `invoice.overpaid` needs Stripe: its payload test lives with the fake Stripe.
    names = [*globals(), *vars(test_stripe_mirror)]
    tested = {
        name.removeprefix("test_").split("_carries_")[0].replace("_", ".", 1)
        for name in names
        if name.startswith("test_") and "_carries_" in name
    }
    assert tested == {e.value for e in EventType}
