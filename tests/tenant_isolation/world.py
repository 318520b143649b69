"""The world the tenant-isolation tests walk and probe, built once for them all (see
conftest.py): two organizations, two therapists, one offering, a key per role, a confirmed
program per organization: org A's staffed by T1, org B's by T2, each with sessions weeks ahead,
and a calendar feed (made by the admin) for each organization and each therapist. Billing: each
organization also has delivered work (past programs, made by the admin, staffed by therapists of
their own) billed on one issued invoice and, delivered after that issue, a draft. Webhooks (the
provider's, for its finance systems): an endpoint registered by the admin before anything else,
so every event of the world has a delivery to it (pending: nothing sends them). Clinical
notes: T1 also delivered a session of org A three days ago (a program of its own) and recorded
its observation with a note holding NOTE_MARKER, which only T1 and the admin may ever read back.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from pydantic import SecretStr

from service.core.settings import Settings
from tests.billing_support import complete, delivered_program, period, run
from tests.programs_support import confirmed_program, quiet_weekday, sessions_of
from tests.support import Api, Headers, ok


@dataclass(frozen=True)
class Billing:
    """An organization's billed work: an invoice issued, then a draft (the provider's work in
    progress, which the organization's coordinators never see)."""

    programs: list[dict[str, Any]]  # delivered programs: the issued invoice's, then the draft's
    sessions: list[dict[str, Any]]  # their sessions, all billed
    issued: dict[str, Any]  # as issued: open, numbered INV-YYYY-NNNNNN
    draft: dict[str, Any]


@dataclass(frozen=True)
class World:
    api: Api
    org_a: dict[str, Any]
    org_b: dict[str, Any]
    location_a: dict[str, Any]
    location_b: dict[str, Any]
    therapist_1: dict[str, Any]
    therapist_2: dict[str, Any]
    offering: dict[str, Any]
    program_a: dict[str, Any]  # org A's, staffed by T1
    program_b: dict[str, Any]  # org B's, staffed by T2
    sessions_a: list[dict[str, Any]]  # program A's: T1's sessions in org A
    sessions_b: list[dict[str, Any]]  # program B's: T2's sessions in org B
    finance: Headers
    coordinator_a: Headers
    coordinator_b_key_id: str
    therapist_1_key: Headers
    therapist_2_key_id: str
    spare_key_id: str  # a key the admin walk may revoke without locking anyone out
    # Calendar feeds as created (`id`, `token`, `url`, ...). The tokens are credentials in
    # themselves: only the admin walk reads a feed by its real token.
    feed_org_a: dict[str, Any]
    feed_org_b: dict[str, Any]
    feed_therapist_1: dict[str, Any]
    feed_therapist_2: dict[str, Any]
    billing_a: Billing
    billing_b: Billing
    webhook_endpoint: dict[str, Any]  # as created: with its secret, shown once
    webhook_delivery: dict[str, Any]  # one of the endpoint's deliveries (the first event's)
    observed_program: dict[str, Any]  # org A's, delivered by T1 three days ago
    observed_session: dict[str, Any]  # its one session: completed, observed with NOTE_MARKER


async def api_key_id(api: Api, headers: Headers) -> str:
    me = ok(await api.client.get("/v1/me", headers=headers))
    return str(me["api_key_id"])


async def _feed(api: Api, **subject: str) -> dict[str, Any]:
    """A calendar feed made by the admin for one organization or one therapist."""
    response = await api.client.post("/v1/calendar-feeds", json=subject, headers=api.admin)
    feed: dict[str, Any] = ok(response, 201)
    return feed


def unknown_calendar_token() -> str:
    """A token shaped like a real one that opens no feed: the walk never sends a real token
    as a scoped caller's, since the token is the credential (whoever holds it reads the feed)."""
    return f"cal_{uuid.uuid4().hex}"


_THREE_WEEKS = "FREQ=WEEKLY;COUNT=3"

# Every date of the world and the walk derives from this Monday, weeks after today (never a
# fixed year): the world's sessions are in its first three weeks; what the walk books, moves,
# cancels from or takes off lies weeks after them.
MONDAY = quiet_weekday(0)


def monday_plus(weeks: int = 0, days: int = 0) -> str:
    return str(MONDAY + timedelta(weeks=weeks, days=days))


# A period around everything the world holds, for the routes that take one.
DATE_QUERY_PARAMETERS = {"from": monday_plus(), "to": monday_plus(days=364)}
TIME_OFF = {
    "starts_at": f"{monday_plus(weeks=8)}T09:00:00-07:00",
    "ends_at": f"{monday_plus(weeks=8, days=1)}T09:00:00-07:00",
}
MOVED_TO = f"{monday_plus(weeks=30, days=2)}T10:00:00Z"
WEBHOOK_SECRET = "whsec_walk_only"
# The clinical note of the world's observed session: no response, row, event or log line may
# carry it but the observation itself, read by T1 (who delivered the session) or the admin. The
# walk's own PUT of that observation writes the same note, so the marker stays planted.
NOTE_MARKER = "WALK-NOTE-MARKER Participant cried during the improvisation 5e1f"
OBSERVATION_PATH = "/v1/sessions/{session_id}/observation"
# A public literal address: accepted without ENSEMBLE_WEBHOOK_ALLOW_PRIVATE (the walk's
# settings leave it off) and without a DNS lookup. Nothing is ever sent to it: the walk runs no
# deliverer.
WEBHOOK_URL = "https://8.8.8.8/ensemble-walk"


async def _webhook_endpoint(api: Api, tag: str) -> dict[str, Any]:
    response = await api.client.post(
        "/v1/webhook-endpoints",
        json={"url": WEBHOOK_URL, "events": ["*"], "description": f"Provider ledger {tag}"},
        headers=api.admin,
    )
    endpoint: dict[str, Any] = ok(response, 201)
    return endpoint


async def _first_delivery(api: Api, endpoint: dict[str, Any]) -> dict[str, Any]:
    page = ok(
        await api.client.get(
            f"/v1/webhook-endpoints/{endpoint['id']}/deliveries",
            params={"limit": "1"},
            headers=api.admin,
        )
    )
    [delivery] = page["data"]
    assert delivery["status"] == "pending"
    return dict(delivery)


def walk_settings(database_url: str) -> Settings:
    """The suite's settings, with Stripe's webhook secret set (and still no Stripe API key): the
    webhook, which takes no API key, then answers an unsigned body with its signature check
    (400), not with "not configured" (503), so the walk judges the check itself."""
    return Settings(
        database_url=database_url,
        environment="development",
        stripe_webhook_secret=SecretStr(WEBHOOK_SECRET),
        rate_limits=False,
    )


async def _billing(api: Api, org: dict[str, Any], title: str) -> Billing:
    """Bill and issue a delivered program of `org`, then deliver and bill another: a draft."""
    start, end = period()
    issued_program, issued_sessions = await delivered_program(
        api, org, sessions=2, days_ago=20, title=f"{title} issued"
    )
    for session in issued_sessions:
        await complete(api, session)
    drafts = await run(api, start, end, organization_id=org["id"])
    assert len(drafts) == 1
    response = await api.client.post(f"/v1/invoices/{drafts[0]['id']}/issue", headers=api.admin)
    issued: dict[str, Any] = ok(response)
    assert issued["status"] == "open" and issued["number"].startswith("INV-")
    draft_program, draft_sessions = await delivered_program(
        api, org, sessions=1, days_ago=10, title=f"{title} draft"
    )
    await complete(api, draft_sessions[0])
    drafts = await run(api, start, end, organization_id=org["id"])
    assert len(drafts) == 1 and drafts[0]["id"] != issued["id"]
    assert drafts[0]["status"] == "draft"
    return Billing(
        programs=[issued_program, draft_program],
        sessions=issued_sessions + draft_sessions,
        issued=issued,
        draft=drafts[0],
    )


async def _observed(
    api: Api, org: dict[str, Any], offering: dict[str, Any], therapist: dict[str, Any], tag: str
) -> tuple[dict[str, Any], dict[str, Any]]:
    """A session of `org` delivered by `therapist` three days ago, observed by them with the
    note NOTE_MARKER (after the world's invoices: it is not billed)."""
    start = datetime.now(UTC).date() - timedelta(days=3)
    program = await confirmed_program(
        api,
        org,
        offering,
        therapist,
        title=f"Home observed program A {tag}",
        focus_areas=["stress_anxiety", "wellbeing"],
        schedule={"start_date": str(start), "start_time": "10:00", "rrule": "FREQ=DAILY;COUNT=1"},
    )
    [session] = await sessions_of(api, program["id"])
    key = await api.therapist_key(therapist["id"])
    ok(
        await api.client.post(
            f"/v1/sessions/{session['id']}/complete", json={"attendance": 1}, headers=key
        )
    )
    ok(
        await api.client.put(
            OBSERVATION_PATH.format(session_id=session["id"]),
            json={"ratings": {"stress_anxiety": 3, "wellbeing": 4}, "note": NOTE_MARKER},
            headers=key,
        ),
        201,
    )
    [session] = await sessions_of(api, program["id"])
    return program, session


async def build_world(api: Api) -> World:
    """The world, made through the API by `api`'s admin (about 70 requests)."""
    tag = uuid.uuid4().hex[:10]
    webhook_endpoint = await _webhook_endpoint(api, tag)
    org_a = await api.make_org(
        name=f"Home Org A {tag}", billing_email=f"billing-a-{tag}@home.example"
    )
    org_b = await api.make_org(
        name=f"Foreign Org B {tag}", billing_email=f"billing-b-{tag}@foreign.example"
    )
    location_a = await api.make_location(org_a["id"], name=f"Home Room A {tag}")
    location_b = await api.make_location(org_b["id"], name=f"Foreign Room B {tag}")
    therapist_1 = await api.make_therapist(
        name=f"Own Therapist T1 {tag}", email=f"t1-{tag}@own.example"
    )
    therapist_2 = await api.make_therapist(
        name=f"Foreign Therapist T2 {tag}", email=f"t2-{tag}@foreign.example"
    )
    offering = await api.make_offering(name=f"Shared Offering {tag}")
    # Weekly from MONDAY, so every session is in the future: none can be completed yet, and a
    # cancellation by the organization is never late.
    program_a = await confirmed_program(
        api,
        org_a,
        offering,
        therapist_1,
        title=f"Home program A {tag}",
        schedule={"start_date": monday_plus(), "start_time": "10:00", "rrule": _THREE_WEEKS},
    )
    program_b = await confirmed_program(
        api,
        org_b,
        offering,
        therapist_2,
        title=f"Foreign program B {tag}",
        schedule={"start_date": monday_plus(days=1), "start_time": "14:00", "rrule": _THREE_WEEKS},
    )
    sessions_a = await sessions_of(api, program_a["id"])
    sessions_b = await sessions_of(api, program_b["id"])
    assert len(sessions_a) == len(sessions_b) == 3
    coordinator_b = await api.coordinator(org_b["id"])
    therapist_2_key = await api.therapist_key(therapist_2["id"])
    spare = await api.key("finance")
    billing_a = await _billing(api, org_a, f"Home billed A {tag}")
    billing_b = await _billing(api, org_b, f"Foreign billed B {tag}")
    observed_program, observed_session = await _observed(api, org_a, offering, therapist_1, tag)
    return World(
        api=api,
        org_a=org_a,
        org_b=org_b,
        location_a=location_a,
        location_b=location_b,
        therapist_1=therapist_1,
        therapist_2=therapist_2,
        offering=offering,
        program_a=program_a,
        program_b=program_b,
        sessions_a=sessions_a,
        sessions_b=sessions_b,
        finance=await api.key("finance"),
        coordinator_a=await api.coordinator(org_a["id"]),
        coordinator_b_key_id=await api_key_id(api, coordinator_b),
        therapist_1_key=await api.therapist_key(therapist_1["id"]),
        therapist_2_key_id=await api_key_id(api, therapist_2_key),
        spare_key_id=await api_key_id(api, spare),
        feed_org_a=await _feed(api, organization_id=org_a["id"]),
        feed_org_b=await _feed(api, organization_id=org_b["id"]),
        feed_therapist_1=await _feed(api, therapist_id=therapist_1["id"]),
        feed_therapist_2=await _feed(api, therapist_id=therapist_2["id"]),
        billing_a=billing_a,
        billing_b=billing_b,
        webhook_endpoint=webhook_endpoint,
        webhook_delivery=await _first_delivery(api, webhook_endpoint),
        observed_program=observed_program,
        observed_session=observed_session,
    )
