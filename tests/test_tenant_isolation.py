"""Tenant isolation: a coordinator sees and changes only their own organization and what hangs
off it; a therapist sees only their own therapist record; anything else is a 404 (or a 403 where
the role never touches that kind of resource), lists are filtered, and nothing answers 5xx.

The walk iterates the app's own routes, so a route added later is walked without editing this
file. Path and query parameters are filled by name from each walker's `ids` table below; a name
the table does not know yet gets a random UUID (`unknown_parameter_id`, and the failure text
says so), so the walk still runs, but such a route deserves an entry in the tables so that it is
walked with a real foreign id.
"""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

import fastapi.routing
import httpx
import pytest
import pytest_asyncio
from fastapi import FastAPI
from fastapi.routing import APIRoute
from pydantic import SecretStr

from service.core.settings import Settings
from tests.billing_support import complete, delivered_program, period, run
from tests.programs_support import confirmed_program, sessions_of
from tests.support import Api, Headers, ok

# --------------------------------------------------------------------------------------------
# The world: two organizations, two therapists, one offering, a key per role, a confirmed
# program per organization: org A's staffed by T1, org B's by T2, each with sessions in 2030,
# and a calendar feed (made by the admin) for each organization and each therapist. Billing:
# each organization also has delivered work (past programs, made by the admin, staffed by
# therapists of their own) billed on one issued invoice and, delivered after that issue, a draft.
# Webhooks (the provider's, for its finance systems): an endpoint registered by the admin before
# anything else, so every event of the world has a delivery to it (pending: nothing sends them).
# --------------------------------------------------------------------------------------------


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


async def _key_id(api: Api, headers: Headers) -> str:
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
WEBHOOK_SECRET = "whsec_walk_only"
# A public literal address: accepted without ENSEMBLE_WEBHOOK_ALLOW_PRIVATE (this module's
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


@pytest.fixture(scope="module")
def settings(database_url: str) -> Settings:
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


@pytest_asyncio.fixture
async def world(api: Api) -> World:
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
    # Weekly from 2030, so every session is in the future: none can be completed yet, and a
    # cancellation by the organization is never late.
    program_a = await confirmed_program(
        api,
        org_a,
        offering,
        therapist_1,
        title=f"Home program A {tag}",
        schedule={"start_date": "2030-01-07", "start_time": "10:00", "rrule": _THREE_WEEKS},
    )
    program_b = await confirmed_program(
        api,
        org_b,
        offering,
        therapist_2,
        title=f"Foreign program B {tag}",
        schedule={"start_date": "2030-01-08", "start_time": "14:00", "rrule": _THREE_WEEKS},
    )
    sessions_a = await sessions_of(api, program_a["id"])
    sessions_b = await sessions_of(api, program_b["id"])
    assert len(sessions_a) == len(sessions_b) == 3
    coordinator_b = await api.coordinator(org_b["id"])
    therapist_2_key = await api.therapist_key(therapist_2["id"])
    spare = await api.key("finance")
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
        coordinator_b_key_id=await _key_id(api, coordinator_b),
        therapist_1_key=await api.therapist_key(therapist_1["id"]),
        therapist_2_key_id=await _key_id(api, therapist_2_key),
        spare_key_id=await _key_id(api, spare),
        feed_org_a=await _feed(api, organization_id=org_a["id"]),
        feed_org_b=await _feed(api, organization_id=org_b["id"]),
        feed_therapist_1=await _feed(api, therapist_id=therapist_1["id"]),
        feed_therapist_2=await _feed(api, therapist_id=therapist_2["id"]),
        billing_a=await _billing(api, org_a, f"Home billed A {tag}"),
        billing_b=await _billing(api, org_b, f"Foreign billed B {tag}"),
        webhook_endpoint=webhook_endpoint,
        webhook_delivery=await _first_delivery(api, webhook_endpoint),
    )


# --------------------------------------------------------------------------------------------
# What each role walks with: the ids put in paths and query filters, the markers that must
# never appear in its responses, and the status a foreign resource must answer.
# --------------------------------------------------------------------------------------------

NOT_FOUND = frozenset({404})
THERAPISTS_OWN_VIEW = frozenset({("GET", "/v1/me/programs"), ("GET", "/v1/me/sessions")})
NEVER_TOUCHES = frozenset({403, 404})  # a role barred from a kind: 403 by role, or 404
# Reports are the provider's (admin, finance): aggregates over every tenant.
REPORTS = frozenset({("GET", "/v1/reports/utilization"), ("GET", "/v1/reports/revenue")})
CREATE_FEED = ("POST", "/v1/calendar-feeds")
BY_ROLE = frozenset({403})  # a role that may use none of a kind, whoever's it is
# Billing: invoice runs, invoices and whatever hangs off an invoice (a route added later too).
BILLING_PATHS = ("/v1/invoice-runs", "/v1/invoices")
EXPORT_INVOICES = ("GET", "/v1/invoices/export.csv")
# Stripe calls it without an API key (the signature is the credential): an unsigned body is a
# 400 for every caller, whatever API key it carries, and changes nothing.
STRIPE_WEBHOOK = ("POST", "/v1/integrations/stripe/webhook")


def billing_operations(world: World) -> frozenset[tuple[str, str]]:
    """Every billing route the app has, from the app itself, so that one added later (a Stripe
    sync of an invoice, say) is refused to therapists and, unless a read, to coordinators."""
    return frozenset(
        (op.method, op.path)
        for op in operations(app_of(world.api.client))
        if op.path.startswith(BILLING_PATHS)
    )


def coordinators_refused_billing(world: World) -> frozenset[tuple[str, str]]:
    """Coordinators read their organization's issued invoices; every change, invoice runs and
    the accounting export are the provider's (403)."""
    return frozenset(
        op for op in billing_operations(world) if op[0] != "GET" or op == EXPORT_INVOICES
    )


# Outbound webhooks and the scheduler's jobs are the provider's: endpoints and their deliveries
# (admin, finance), the jobs (admin).
WEBHOOK_PATHS = ("/v1/webhook-endpoints", "/v1/webhook-deliveries")
JOBS = ("GET", "/v1/jobs")


def webhook_operations(world: World) -> frozenset[tuple[str, str]]:
    """Every webhook route the app has (one added later too): a scoped key uses none."""
    return frozenset(
        (op.method, op.path)
        for op in operations(app_of(world.api.client))
        if op.path.startswith(WEBHOOK_PATHS)
    )


def unknown_parameter_id() -> str:
    """UNKNOWN PARAMETER: a name no walker table knows yet (a route added after this file).
    A random UUID keeps the walk running; nothing by that id exists, so it must not be a 2xx."""
    return str(uuid.uuid4())


@dataclass
class Walker:
    role: str
    headers: Headers
    ids: dict[str, str]
    """Path/query parameter name -> the id to send (foreign ones for scoped roles)."""
    foreign_markers: dict[str, str] = field(default_factory=dict)
    """Strings that identify another tenant's data -> what they are (for the failure text)."""
    expected_for_foreign: dict[str, frozenset[int]] = field(default_factory=dict)
    """Path parameter name -> the statuses allowed when the path names that foreign resource."""
    own_ids: dict[str, str] = field(default_factory=dict)
    """The caller's own resources, walked too: what hangs off them must not leak either."""
    refused: frozenset[tuple[str, str]] = frozenset()
    """(method, path template) the role may not use: a 403 where the path names nothing or the
    caller's own resources (another tenant's is still what `expected_for_foreign` says)."""
    sees_money: bool = True
    """False: no `*_cents` field in any successful response."""
    also_foreign: dict[str, dict[str, str]] = field(default_factory=dict)
    """Path parameter name -> more foreign ids to walk it with (id -> what it is), each judged
    like the one in `ids`: a feed of another organization and a therapist's feed, say."""
    feed_subject: str = "organization_id"
    """What the caller makes calendar feeds for: `organization_id` or `therapist_id` (the body
    of POST /v1/calendar-feeds names that id from `ids`, and it is judged like a path's)."""

    @property
    def own_organization_id(self) -> str | None:
        return self.own_ids.get("organization_id")

    @property
    def own_therapist_id(self) -> str | None:
        return self.own_ids.get("therapist_id")

    def at_home(self) -> Walker:
        """The same caller with its own ids in the paths (foreign ones elsewhere)."""
        return replace(
            self,
            role=f"{self.role} (own ids)",
            ids={**self.ids, **self.own_ids},
            expected_for_foreign={
                name: statuses
                for name, statuses in self.expected_for_foreign.items()
                if name not in self.own_ids
            },
            also_foreign={
                name: others
                for name, others in self.also_foreign.items()
                if name not in self.own_ids
            },
        )


def _markers_of_org_b(world: World) -> dict[str, str]:
    return {
        world.org_b["id"]: "org B id",
        world.org_b["name"]: "org B name",
        world.org_b["billing_email"]: "org B billing email",
        world.location_b["id"]: "org B location id",
        world.location_b["name"]: "org B location name",
        world.coordinator_b_key_id: "org B coordinator key id",
        world.feed_org_b["id"]: "org B calendar feed id",
        world.feed_org_b["token"]: "org B calendar feed token",
    }


def _markers_of_therapist_2(world: World) -> dict[str, str]:
    return {
        world.therapist_2["id"]: "T2 id",
        world.therapist_2["name"]: "T2 name",
        world.therapist_2["email"]: "T2 email",
        world.therapist_2_key_id: "T2 key id",
        world.feed_therapist_2["id"]: "T2 calendar feed id",
        world.feed_therapist_2["token"]: "T2 calendar feed token",
    }


def _markers_of_billing(billing: Billing, whose: str) -> dict[str, str]:
    """An organization's invoices and the delivered programs they bill."""
    return {
        billing.issued["id"]: f"{whose} issued invoice id",
        billing.issued["number"]: f"{whose} invoice number",
        billing.draft["id"]: f"{whose} draft invoice id",
        **{p["id"]: f"{whose} billed program id" for p in billing.programs},
        **{p["title"]: f"{whose} billed program title" for p in billing.programs},
        **{p["therapist_id"]: f"{whose} billed program's therapist id" for p in billing.programs},
        **{s["id"]: f"{whose} billed session id" for s in billing.sessions},
    }


def _markers_of_webhooks(world: World) -> dict[str, str]:
    """The provider's webhook endpoint: where finance data goes and the key that signs it."""
    endpoint, delivery = world.webhook_endpoint, world.webhook_delivery
    return {
        endpoint["id"]: "webhook endpoint id",
        endpoint["url"]: "webhook endpoint url",
        endpoint["secret"]: "webhook signing secret",
        endpoint["description"]: "webhook endpoint description",
        delivery["id"]: "webhook delivery id",
        delivery["webhook_id"]: "webhook delivery's webhook-id",
    }


def _markers_of_program_b(world: World) -> dict[str, str]:
    """Org B's program, staffed by T2: foreign to org A's coordinator and to T1 alike."""
    return {
        world.program_b["id"]: "program B id",
        world.program_b["title"]: "program B title",
        **{s["id"]: "program B (T2) session id" for s in world.sessions_b},
    }


def coordinator_of_a(world: World) -> Walker:
    return Walker(
        role="coordinator of A",
        headers=world.coordinator_a,
        ids={
            "organization_id": world.org_b["id"],
            "location_id": world.location_b["id"],
            "therapist_id": world.therapist_2["id"],
            "offering_id": world.offering["id"],  # the catalog is shared, not foreign
            "api_key_id": world.coordinator_b_key_id,
            "program_id": world.program_b["id"],
            "session_id": world.sessions_b[0]["id"],
            "feed_id": world.feed_org_b["id"],
            "token": unknown_calendar_token(),
            "invoice_id": world.billing_b.issued["id"],
            # The provider's (no organization's): real ids, refused by role.
            "endpoint_id": world.webhook_endpoint["id"],
            "delivery_id": world.webhook_delivery["id"],
        },
        foreign_markers={
            **_markers_of_org_b(world),
            **_markers_of_therapist_2(world),
            **_markers_of_program_b(world),
            **_markers_of_billing(world.billing_b, "org B"),
            **_markers_of_webhooks(world),
            # A therapist's feed is the therapist's, even T1's (who works in org A).
            world.feed_therapist_1["id"]: "T1 calendar feed id",
            world.feed_therapist_1["token"]: "T1 calendar feed token",
        },
        expected_for_foreign={
            "organization_id": NOT_FOUND,
            "location_id": NOT_FOUND,
            "therapist_id": NEVER_TOUCHES,  # coordinators do not browse the provider's staff
            "api_key_id": NEVER_TOUCHES,  # keys are admin-only
            # Coordinators read their organization's programs and sessions, so another's is a
            # 404 even on an action they may not take (staffing, rescheduling, recording).
            "program_id": NOT_FOUND,
            "session_id": NOT_FOUND,
            # Coordinators reach their organization's feeds only: another organization's and
            # every therapist's are 404. An unknown token opens nothing, for anyone.
            "feed_id": NOT_FOUND,
            "token": NOT_FOUND,
            # Visibility before role: another organization's invoice is a 404 even for a change
            # coordinators may never make, and so is any draft, their own organization's too.
            "invoice_id": NOT_FOUND,
            # Webhooks are the provider's alone: 403 by role, whichever endpoint or delivery.
            "endpoint_id": BY_ROLE,
            "delivery_id": BY_ROLE,
        },
        also_foreign={
            "feed_id": {
                world.feed_therapist_1["id"]: "T1's feed",
                world.feed_therapist_2["id"]: "T2's feed",
            },
            "invoice_id": {
                world.billing_b.draft["id"]: "org B's draft",
                world.billing_a.draft["id"]: "org A's own draft (the provider's work in progress)",
            },
        },
        own_ids={
            "organization_id": world.org_a["id"],
            "location_id": world.location_a["id"],
            "program_id": world.program_a["id"],
            "session_id": world.sessions_a[0]["id"],
            "feed_id": world.feed_org_a["id"],
            "invoice_id": world.billing_a.issued["id"],
        },
        # Staffing is the provider's: the ranking names and scores its therapists.
        refused=frozenset({("GET", "/v1/programs/{program_id}/therapist-suggestions"), JOBS})
        | REPORTS
        | coordinators_refused_billing(world)
        | webhook_operations(world),
    )


def therapist_1(world: World) -> Walker:
    return Walker(
        role="therapist T1",
        headers=world.therapist_1_key,
        ids={
            "organization_id": world.org_b["id"],
            "location_id": world.location_b["id"],
            "therapist_id": world.therapist_2["id"],
            "offering_id": world.offering["id"],
            "api_key_id": world.therapist_2_key_id,
            "program_id": world.program_b["id"],
            "session_id": world.sessions_b[0]["id"],
            "feed_id": world.feed_therapist_2["id"],
            "token": unknown_calendar_token(),
            "invoice_id": world.billing_b.issued["id"],
            "endpoint_id": world.webhook_endpoint["id"],
            "delivery_id": world.webhook_delivery["id"],
        },
        foreign_markers={
            **_markers_of_therapist_2(world),
            **_markers_of_webhooks(world),
            **_markers_of_org_b(world),
            **_markers_of_program_b(world),
            **_markers_of_billing(world.billing_b, "org B"),
            # Invoices are money, and org A's billed programs are other therapists' work.
            **_markers_of_billing(world.billing_a, "org A"),
            # An organization's feed is its coordinators', even that of org A (where T1 works).
            world.feed_org_a["id"]: "org A calendar feed id",
            world.feed_org_a["token"]: "org A calendar feed token",
        },
        expected_for_foreign={
            "therapist_id": NOT_FOUND,
            "organization_id": NEVER_TOUCHES,
            "location_id": NEVER_TOUCHES,
            "api_key_id": NEVER_TOUCHES,
            # Programs carry money: therapists never touch /v1/programs (their own included,
            # so program A is not among T1's own ids). Sessions they read and record: their
            # own, and another therapist's is a 404.
            "program_id": NEVER_TOUCHES,
            "session_id": NOT_FOUND,
            # A therapist reaches their own feed only: another's and organizations' are 404.
            "feed_id": NOT_FOUND,
            "token": NOT_FOUND,
            # Therapists see no money: every billing route is a 403, whoever's the invoice.
            "invoice_id": BY_ROLE,
            "endpoint_id": BY_ROLE,
            "delivery_id": BY_ROLE,
        },
        also_foreign={
            "feed_id": {
                world.feed_org_a["id"]: "org A's feed",
                world.feed_org_b["id"]: "org B's feed",
            },
            "invoice_id": {
                world.billing_a.issued["id"]: "org A's issued invoice (T1 works in org A)",
                world.billing_a.draft["id"]: "org A's draft",
                world.billing_b.draft["id"]: "org B's draft",
            },
        },
        own_ids={
            "therapist_id": world.therapist_1["id"],
            "session_id": world.sessions_a[0]["id"],
            "feed_id": world.feed_therapist_1["id"],
        },
        # Their programs come through /v1/me/programs, without the money; billing is all money.
        refused=frozenset({("GET", "/v1/programs"), ("POST", "/v1/programs"), JOBS})
        | REPORTS
        | billing_operations(world)
        | webhook_operations(world),
        sees_money=False,  # "therapists see no money at all"
        feed_subject="therapist_id",
    )


def provider_staff(world: World, role: str) -> Walker:
    """Admin and finance see every tenant: they walk with real ids of org A and T1 (and of
    program A, staffed by T1, and one of its sessions). The admin rotates and revokes org A's
    feed and reads T1's by its real token (a feed the walk leaves alone); finance manages no
    feeds (403 to make one, 404 to rotate or revoke) and gets an unknown token. Both walk org A's
    issued invoice: read first (the routes come in the app's order, deletions last), then not
    re-issued (409), then voided, after which payments and credit notes are a 409, and last not
    deleted (409). Both walk the webhook endpoint: read, its secret rotated, its deliveries read,
    the delivery not retried (409: still pending), and last the endpoint deleted."""
    admin = role == "admin"
    return Walker(
        role=role,
        headers=world.api.admin if role == "admin" else world.finance,
        ids={
            "organization_id": world.org_a["id"],
            "location_id": world.location_a["id"],
            "therapist_id": world.therapist_1["id"],
            "offering_id": world.offering["id"],
            "api_key_id": world.spare_key_id,
            "program_id": world.program_a["id"],
            "session_id": world.sessions_a[0]["id"],
            "feed_id": world.feed_org_a["id"],
            "token": world.feed_therapist_1["token"] if admin else unknown_calendar_token(),
            "invoice_id": world.billing_a.issued["id"],
            "endpoint_id": world.webhook_endpoint["id"],
            "delivery_id": world.webhook_delivery["id"],
        },
        refused=THERAPISTS_OWN_VIEW if admin else THERAPISTS_OWN_VIEW | {CREATE_FEED, JOBS},
    )


# --------------------------------------------------------------------------------------------
# The routes, straight from the app.
# --------------------------------------------------------------------------------------------

PATH_PARAMETER = re.compile(r"{(\w+)(?::[^}]*)?}")
DATE_QUERY_PARAMETERS = {"from": "2030-01-01", "to": "2030-12-31"}


@dataclass(frozen=True)
class Operation:
    method: str
    path: str
    path_params: tuple[str, ...]
    required_query: tuple[str, ...]
    optional_query: tuple[str, ...]


def deletions_last(found: list[Operation]) -> list[Operation]:
    """The app's order with every DELETE moved to the end (a stable sort): a walk that deletes
    what it walks would otherwise turn the reads after it into 404s (a webhook endpoint's
    deliveries, read after the endpoint was deleted)."""
    return sorted(found, key=lambda op: op.method == "DELETE")


def app_of(client: httpx.AsyncClient) -> FastAPI:
    transport = client._transport
    assert isinstance(transport, httpx.ASGITransport)
    app = transport.app
    assert isinstance(app, FastAPI)
    return app


def _flat_routes(app: FastAPI) -> Iterator[tuple[str, set[str]]]:
    # FastAPI >= 0.16x keeps each included router as one nested entry of `app.routes`;
    # `iter_route_contexts` flattens them with their prefixes. Older releases flatten
    # `app.routes` themselves.
    flatten = getattr(fastapi.routing, "iter_route_contexts", None)
    route: Any
    for route in flatten(app.routes) if flatten is not None else app.routes:
        original = getattr(route, "original_route", route)
        if isinstance(original, APIRoute):
            yield str(route.path), set(route.methods or ())


def operations(app: FastAPI) -> list[Operation]:
    spec_paths = app.openapi().get("paths", {})
    found = []
    for path, methods in _flat_routes(app):
        for method in sorted(methods - {"HEAD", "OPTIONS"}):
            documented = spec_paths.get(path, {}).get(method.lower(), {})
            query = [p for p in documented.get("parameters", []) if p.get("in") == "query"]
            found.append(
                Operation(
                    method=method,
                    path=path,
                    path_params=tuple(PATH_PARAMETER.findall(path)),
                    required_query=tuple(p["name"] for p in query if p.get("required")),
                    optional_query=tuple(p["name"] for p in query if not p.get("required")),
                )
            )
    return found


def body_for(
    method: str, path: str, ids: Mapping[str, str], *, feed_subject: str = "organization_id"
) -> Any:
    """A minimal valid body where the route is known, so a foreign id is judged on its own and
    not hidden behind a 422; otherwise a small harmless dict (a 422 is then acceptable). Ids in
    a body come from the walker's table, like those in the path; a calendar feed is made for
    the walker's `feed_subject`."""
    if method not in {"POST", "PUT", "PATCH"}:
        return None
    period_start, period_end = period()  # the delivered work of the world
    known: dict[tuple[str, str], Any] = {
        ("POST", "/v1/api-keys"): {"name": "walk key", "role": "finance"},
        ("POST", "/v1/organizations"): {
            "name": "Walk Org",
            "kind": "other",
            "timezone": "America/Edmonton",
        },
        ("PATCH", "/v1/organizations/{organization_id}"): {"address": "1 Walk Street"},
        ("POST", "/v1/organizations/{organization_id}/locations"): {
            "name": "Walk Room",
            "timezone": "America/Edmonton",
        },
        ("POST", "/v1/therapists"): {
            "name": "Walk Therapist",
            "email": f"walk-{uuid.uuid4().hex[:8]}@ensemble.example",
            "timezone": "America/Edmonton",
        },
        ("PATCH", "/v1/therapists/{therapist_id}"): {"languages": ["en", "fr"]},
        ("PUT", "/v1/therapists/{therapist_id}/availability"): [
            {"weekday": "MO", "start": "09:00", "end": "17:00"}
        ],
        ("POST", "/v1/therapists/{therapist_id}/time-off"): {
            "starts_at": "2030-03-04T09:00:00-07:00",
            "ends_at": "2030-03-05T09:00:00-07:00",
            "reason": "walk",
        },
        ("POST", "/v1/offerings"): {
            "name": "Walk Offering",
            "format": "individual",
            "duration_minutes": 45,
            "rate_cents": 15000,
        },
        ("PATCH", "/v1/offerings/{offering_id}"): {"cancellation_notice_hours": 24},
        ("POST", "/v1/programs"): {
            "organization_id": ids.get("organization_id"),
            "offering_id": ids.get("offering_id"),
            "title": "Walk program",
            "modality": "online",
            "video_url": "https://meet.example.org/walk",
            "participants": 1,
            "schedule": {
                "timezone": "America/Edmonton",
                "start_date": "2031-03-03",
                "start_time": "08:00",
                "rrule": "FREQ=WEEKLY;COUNT=2",
            },
        },
        ("PATCH", "/v1/programs/{program_id}"): {"title": "Walk program renamed"},
        ("POST", "/v1/programs/{program_id}/assign"): {"therapist_id": ids.get("therapist_id")},
        ("POST", "/v1/programs/{program_id}/confirm"): None,
        ("POST", "/v1/programs/{program_id}/cancel"): {
            "effective_date": "2030-06-01",
            "reason": "walk",
        },
        ("PATCH", "/v1/sessions/{session_id}"): {"starts_at": "2031-01-01T10:00:00Z"},
        ("POST", "/v1/sessions/{session_id}/cancel"): {"reason": "walk"},
        ("POST", "/v1/sessions/{session_id}/complete"): {"attendance": 1},
        ("POST", "/v1/sessions/{session_id}/no-show"): None,
        ("POST", "/v1/sessions/{session_id}/substitute"): {"therapist_id": ids.get("therapist_id")},
        CREATE_FEED: {feed_subject: ids.get(feed_subject)},
        ("POST", "/v1/invoice-runs"): {
            "period_start": period_start,
            "period_end": period_end,
            "organization_id": ids.get("organization_id"),
        },
        ("POST", "/v1/invoices/{invoice_id}/issue"): None,
        ("POST", "/v1/invoices/{invoice_id}/void"): {"reason": "walk"},
        ("POST", "/v1/invoices/{invoice_id}/payments"): {
            "amount_cents": 1,
            "method": "bank_transfer",
        },
        ("POST", "/v1/invoices/{invoice_id}/credit-notes"): {"amount_cents": 1},
        ("POST", "/v1/invoices/{invoice_id}/stripe-sync"): None,
        ("POST", "/v1/webhook-endpoints"): {"url": WEBHOOK_URL, "events": ["invoice.paid"]},
        ("POST", "/v1/webhook-endpoints/{endpoint_id}/rotate-secret"): None,
        ("POST", "/v1/webhook-deliveries/{delivery_id}/retry"): None,
        # Shaped like a Stripe event about the walked invoice, but unsigned: refused (400).
        STRIPE_WEBHOOK: {
            "id": "evt_walk",
            "type": "invoice.paid",
            "data": {
                "object": {"id": "in_walk", "metadata": {"invoice_id": ids.get("invoice_id")}}
            },
        },
    }
    if (method, path) in known:
        return known[(method, path)]
    return {"name": "walk"}


@dataclass(frozen=True)
class Request:
    method: str
    template: str
    url: str
    params: dict[str, str]
    body: Any
    known_params: tuple[str, ...]
    """Path parameters filled from the walker's table."""
    body_params: tuple[str, ...]
    """Ids from the walker's table that the body names as the resource acted on (the subject
    of a new calendar feed): judged like path parameters."""
    random_params: tuple[str, ...]
    """Path or required query parameters no table knows, sent as random UUIDs."""
    own_only: bool
    """The path names resources, all of them the caller's own."""
    note: str = ""
    """Which of the walker's `also_foreign` ids the path carries, for the failure text."""


def requests_for(operation: Operation, walker: Walker) -> list[Request]:
    """One request with the required query parameters; one more with every id filter the
    walker knows set to its id (a list filtered by a foreign id must still leak nothing); and
    the same again with each of the walker's `also_foreign` ids in the path."""
    tables: list[tuple[dict[str, str], str]] = [(walker.ids, "")]
    for name, others in walker.also_foreign.items():
        if name in operation.path_params:
            tables += [
                ({**walker.ids, name: other}, f"{name} = {label}")
                for other, label in others.items()
            ]
    return [
        request for ids, note in tables for request in _requests_with(operation, walker, ids, note)
    ]


def _requests_with(
    operation: Operation, walker: Walker, ids: Mapping[str, str], note: str
) -> list[Request]:
    random_params: list[str] = []
    path = operation.path
    for name in operation.path_params:
        value = ids.get(name)
        if value is None:
            value = unknown_parameter_id()
            random_params.append(name)
        path = re.sub(r"{" + name + r"(?::[^}]*)?}", value, path)
    required: dict[str, str] = {}
    for name in operation.required_query:
        filled = ids.get(name) or DATE_QUERY_PARAMETERS.get(name)
        if filled is None:
            filled = unknown_parameter_id()
            random_params.append(name)
        required[name] = filled
    variants = [required]
    filters = {n: ids[n] for n in operation.optional_query if n in ids}
    if filters:
        variants.append({**required, **filters})
    known = tuple(n for n in operation.path_params if n in ids)
    own_only = bool(operation.path_params) and all(
        ids.get(n) == walker.own_ids.get(n, "") for n in operation.path_params
    )
    body_params = (
        (walker.feed_subject,)
        if (operation.method, operation.path) == CREATE_FEED and walker.feed_subject in ids
        else ()
    )
    return [
        Request(
            method=operation.method,
            template=operation.path,
            url=path,
            params=params,
            body=body_for(operation.method, operation.path, ids, feed_subject=walker.feed_subject),
            known_params=known,
            body_params=body_params,
            random_params=tuple(random_params),
            own_only=own_only,
            note=note,
        )
        for params in variants
    ]


async def send(client: httpx.AsyncClient, request: Request, headers: Headers) -> httpx.Response:
    if request.body is None:
        return await client.request(
            request.method, request.url, params=request.params, headers=headers
        )
    # Without its content type, FastAPI reads a JSON body as bytes and answers 422 before the
    # route runs: every body would be judged as a body validation error, and nothing else.
    return await client.request(
        request.method,
        request.url,
        params=request.params,
        headers={**headers, "Content-Type": "application/json"},
        content=json.dumps(request.body),
    )


def describe(walker: Walker, request: Request, response: httpx.Response) -> str:
    query = f"?{httpx.QueryParams(request.params)}" if request.params else ""
    unknown = (
        f" [UNKNOWN PARAMETER {', '.join(request.random_params)}: random UUID sent]"
        if request.random_params
        else ""
    )
    note = f" [{request.note}]" if request.note else ""
    return (
        f"{walker.role}: {request.method} {request.template}{query}{unknown}{note} -> "
        f"{response.status_code} {response.text[:300]}"
    )


# --------------------------------------------------------------------------------------------
# What a response may not contain.
# --------------------------------------------------------------------------------------------


def _values_of(document: Any, key: str) -> Iterator[Any]:
    if isinstance(document, dict):
        for name, value in document.items():
            if name == key:
                yield value
            yield from _values_of(value, key)
    elif isinstance(document, list):
        for item in document:
            yield from _values_of(item, key)


def _keys_of(document: Any) -> Iterator[str]:
    if isinstance(document, dict):
        for name, value in document.items():
            yield name
            yield from _keys_of(value)
    elif isinstance(document, list):
        for item in document:
            yield from _keys_of(item)


def _is_body_validation_error(response: httpx.Response) -> bool:
    """A 422 about the body alone: the route never looked at the resource, so it told nothing."""
    if response.status_code != 422:
        return False
    errors = response.json().get("errors") or []
    return bool(errors) and all(e.get("in") == "body" for e in errors)


def _is_refused(walker: Walker, request: Request) -> bool:
    return (request.method, request.template) in walker.refused


def refusal_failures(walker: Walker, request: Request, response: httpx.Response) -> list[str]:
    """An operation the role may not use is a 403 by role, unless the path names another
    tenant's resource (then `expected_for_foreign` applies) or an id nobody has."""
    if not _is_refused(walker, request) or request.random_params:
        return []
    if request.known_params and not request.own_only:
        return []
    if response.status_code == 403 or _is_body_validation_error(response):
        return []
    return [f"expected 403 (not for this role): {describe(walker, request, response)}"]


def webhook_failures(walker: Walker, request: Request, response: httpx.Response) -> list[str]:
    """The Stripe webhook takes no API key (the signature is its credential): the walk's body is
    unsigned, so it is a 400 for everyone (the answer, not a leak), and never acted on."""
    if (request.method, request.template) != STRIPE_WEBHOOK or response.status_code == 400:
        return []
    return [f"unsigned webhook not refused with 400: {describe(walker, request, response)}"]


def isolation_failures(walker: Walker, request: Request, response: httpx.Response) -> list[str]:
    what = describe(walker, request, response)
    failures = refusal_failures(walker, request, response) + webhook_failures(
        walker, request, response
    )
    if response.status_code >= 500:
        failures.append(f"server error: {what}")
    sent = request.url + json.dumps(request.params) + json.dumps(request.body)
    leaked = [
        label
        for marker, label in walker.foreign_markers.items()
        # An id the caller put in the request (path, query or body) may be echoed back
        # ("Organization <id> not found").
        if marker in response.text and marker not in sent
    ]
    if leaked:
        failures.append(f"foreign data ({', '.join(leaked)}): {what}")
    if request.known_params or request.body_params:
        allowed = frozenset().union(
            *(
                walker.expected_for_foreign.get(n, frozenset())
                for n in request.known_params + request.body_params
            )
        )
        if (
            allowed
            and response.status_code not in allowed
            and not _is_body_validation_error(response)
        ):
            failures.append(f"expected one of {sorted(allowed)}: {what}")
    elif request.random_params and response.is_success:
        failures.append(f"2xx for a random id: {what}")
    if response.is_success and "json" in response.headers.get("content-type", ""):
        body = response.json()
        if walker.own_organization_id is not None:
            others = {
                v
                for v in _values_of(body, "organization_id")
                if v not in (None, walker.own_organization_id)
            }
            if others:
                failures.append(f"organization_id outside org A {sorted(others)}: {what}")
        if walker.own_therapist_id is not None:
            others = {
                v
                for v in _values_of(body, "therapist_id")
                if v not in (None, walker.own_therapist_id)
            }
            if others:
                failures.append(f"therapist_id other than T1 {sorted(others)}: {what}")
        if not walker.sees_money:
            money = sorted({k for k in _keys_of(body) if k.endswith("_cents")})
            if money:
                failures.append(f"money ({', '.join(money)}) for a role that sees none: {what}")
    return failures


# --------------------------------------------------------------------------------------------
# The walks.
# --------------------------------------------------------------------------------------------


async def test_the_walk_covers_every_operation_the_api_documents(
    client: httpx.AsyncClient,
) -> None:
    app = app_of(client)
    walked = {(op.method, op.path) for op in operations(app)}
    documented = {
        (method.upper(), path)
        for path, item in app.openapi()["paths"].items()
        for method in item
        if method.upper() in {"GET", "POST", "PUT", "PATCH", "DELETE"}
    }
    assert documented <= walked
    assert ("GET", "/v1/organizations/{organization_id}") in walked
    assert ("PUT", "/v1/therapists/{therapist_id}/availability") in walked


@pytest.mark.parametrize(
    "make_walker", [coordinator_of_a, therapist_1], ids=["coordinator", "therapist"]
)
async def test_a_scoped_key_walking_every_route_with_foreign_and_own_ids_sees_nothing_foreign(
    world: World, make_walker: Callable[[World], Walker]
) -> None:
    abroad = make_walker(world)
    client = world.api.client
    failures: list[str] = []
    for walker in (abroad, abroad.at_home()):
        for operation in operations(app_of(client)):
            for request in requests_for(operation, walker):
                response = await send(client, request, walker.headers)
                failures += isolation_failures(walker, request, response)
                if (
                    request.method == "GET"
                    and request.own_only
                    and not request.random_params
                    and not _is_refused(walker, request)
                    and not response.is_success
                ):
                    # Guards the walk itself: a scope that refused everything would pass it.
                    failures.append(f"own resource refused: {describe(walker, request, response)}")
    assert failures == [], "\n".join(failures)


@pytest.mark.parametrize("role", ["admin", "finance"])
async def test_provider_staff_walking_every_route_with_real_ids_never_get_a_server_error(
    world: World, role: str
) -> None:
    walker = provider_staff(world, role)
    client = world.api.client
    failures: list[str] = []
    for operation in deletions_last(operations(app_of(client))):
        for request in requests_for(operation, walker):
            response = await send(client, request, walker.headers)
            failures += webhook_failures(walker, request, response)
            if response.status_code >= 500:
                failures.append(f"server error: {describe(walker, request, response)}")
            elif _is_refused(walker, request):
                failures += refusal_failures(walker, request, response)
            elif (
                role == "admin"
                and request.method == "GET"
                and not request.random_params
                and not response.is_success
            ):
                failures.append(f"admin GET refused: {describe(walker, request, response)}")
    assert failures == [], "\n".join(failures)


@pytest.mark.parametrize(
    "make_walker",
    [coordinator_of_a, therapist_1, lambda w: provider_staff(w, "admin")],
    ids=["coordinator", "therapist", "provider staff"],
)
async def test_every_walker_knows_every_path_parameter_the_app_has(
    world: World, make_walker: Callable[[World], Walker]
) -> None:
    """A parameter no table knows is walked with a random UUID, which proves little: a route
    added later (webhook endpoints and deliveries, say) needs its ids in the tables."""
    walker = make_walker(world)
    unknown = {
        f"{request.method} {request.template}: {', '.join(request.random_params)}"
        for operation in operations(app_of(world.api.client))
        for request in requests_for(operation, walker)
        if request.random_params
    }
    assert unknown == set()


# --------------------------------------------------------------------------------------------
# The same promises, one at a time.
# --------------------------------------------------------------------------------------------


async def test_coordinator_lists_organizations_and_sees_only_their_own(world: World) -> None:
    page = ok(await world.api.client.get("/v1/organizations", headers=world.coordinator_a))
    assert [org["id"] for org in page["data"]] == [world.org_a["id"]]
    assert page["next_cursor"] is None


async def test_coordinator_cannot_read_another_organization(world: World) -> None:
    response = await world.api.client.get(
        f"/v1/organizations/{world.org_b['id']}", headers=world.coordinator_a
    )
    assert response.status_code == 404
    assert world.org_b["name"] not in response.text
    assert world.org_b["billing_email"] not in response.text


async def test_coordinator_cannot_change_another_organization(world: World) -> None:
    client = world.api.client
    response = await client.patch(
        f"/v1/organizations/{world.org_b['id']}",
        json={"name": "Taken over", "billing_email": "thief@example.org"},
        headers=world.coordinator_a,
    )
    assert response.status_code == 404
    after = ok(await client.get(f"/v1/organizations/{world.org_b['id']}", headers=world.api.admin))
    assert after == world.org_b


async def test_coordinator_cannot_add_a_location_to_another_organization(world: World) -> None:
    client = world.api.client
    response = await client.post(
        f"/v1/organizations/{world.org_b['id']}/locations",
        json={"name": "Smuggled Room", "timezone": "America/Edmonton"},
        headers=world.coordinator_a,
    )
    assert response.status_code == 404
    locations = ok(
        await client.get(
            f"/v1/organizations/{world.org_b['id']}/locations", headers=world.api.admin
        )
    )
    assert [loc["id"] for loc in locations["data"]] == [world.location_b["id"]]


async def test_coordinator_cannot_list_another_organizations_locations(world: World) -> None:
    response = await world.api.client.get(
        f"/v1/organizations/{world.org_b['id']}/locations", headers=world.coordinator_a
    )
    assert response.status_code == 404
    assert world.location_b["name"] not in response.text


async def test_coordinator_lists_their_own_locations_only(world: World) -> None:
    page = ok(
        await world.api.client.get(
            f"/v1/organizations/{world.org_a['id']}/locations", headers=world.coordinator_a
        )
    )
    assert [loc["id"] for loc in page["data"]] == [world.location_a["id"]]


async def test_therapist_lists_therapists_and_sees_only_themself(world: World) -> None:
    page = ok(await world.api.client.get("/v1/therapists", headers=world.therapist_1_key))
    assert [t["id"] for t in page["data"]] == [world.therapist_1["id"]]
    assert page["next_cursor"] is None


async def test_therapist_reads_their_own_record(world: World) -> None:
    got = ok(
        await world.api.client.get(
            f"/v1/therapists/{world.therapist_1['id']}", headers=world.therapist_1_key
        )
    )
    assert got == world.therapist_1


async def test_therapist_cannot_read_another_therapist(world: World) -> None:
    response = await world.api.client.get(
        f"/v1/therapists/{world.therapist_2['id']}", headers=world.therapist_1_key
    )
    assert response.status_code == 404
    assert world.therapist_2["email"] not in response.text


async def test_therapist_cannot_record_time_off_for_another_therapist(world: World) -> None:
    client = world.api.client
    response = await client.post(
        f"/v1/therapists/{world.therapist_2['id']}/time-off",
        json={"starts_at": "2030-03-04T09:00:00-07:00", "ends_at": "2030-03-05T09:00:00-07:00"},
        headers=world.therapist_1_key,
    )
    assert response.status_code == 404
    time_off = ok(
        await client.get(
            f"/v1/therapists/{world.therapist_2['id']}/time-off", headers=world.api.admin
        )
    )
    assert time_off["data"] == []


async def test_revoked_coordinator_key_is_refused_at_once(world: World) -> None:
    client = world.api.client
    key_id = await _key_id(world.api, world.coordinator_a)
    ok(await client.delete(f"/v1/api-keys/{key_id}", headers=world.api.admin))
    response = await client.get(
        f"/v1/organizations/{world.org_a['id']}", headers=world.coordinator_a
    )
    assert response.status_code == 401
    assert world.org_a["name"] not in response.text


async def test_revoked_coordinator_key_cannot_replay_an_earlier_idempotent_request(
    world: World,
) -> None:
    client = world.api.client

    async def create_room() -> httpx.Response:
        return await client.post(
            f"/v1/organizations/{world.org_a['id']}/locations",
            json={"name": "Music Room 2", "timezone": "America/Edmonton"},
            headers={**world.coordinator_a, "Idempotency-Key": "room-2"},
        )

    ok(await create_room(), 201)
    key_id = await _key_id(world.api, world.coordinator_a)
    ok(await client.delete(f"/v1/api-keys/{key_id}", headers=world.api.admin))
    replay = await create_room()
    assert replay.status_code == 401
    assert "Music Room 2" not in replay.text


# Programs and sessions. Programs carry money (rates): therapists never read them. Coordinators
# see their organization's programs and sessions, therapists the sessions they work.


async def test_coordinator_lists_sessions_and_sees_only_their_organizations(
    world: World,
) -> None:
    client = world.api.client
    page = ok(
        await client.get("/v1/sessions", params={"limit": "200"}, headers=world.coordinator_a)
    )
    own = world.sessions_a + world.billing_a.sessions
    assert {s["id"] for s in page["data"]} == {s["id"] for s in own}
    assert {s["organization_id"] for s in page["data"]} == {world.org_a["id"]}
    for foreign_filter in (
        {"organization_id": world.org_b["id"]},
        {"program_id": world.program_b["id"]},
        {"therapist_id": world.therapist_2["id"]},
    ):
        response = await client.get(
            "/v1/sessions", params=foreign_filter, headers=world.coordinator_a
        )
        assert ok(response)["data"] == [], foreign_filter


async def test_coordinator_lists_programs_and_sees_only_their_organizations(
    world: World,
) -> None:
    client = world.api.client
    page = ok(await client.get("/v1/programs", headers=world.coordinator_a))
    own = [world.program_a, *world.billing_a.programs]
    assert [p["id"] for p in page["data"]] == [p["id"] for p in own]
    response = await client.get(
        "/v1/programs",
        params={"organization_id": world.org_b["id"]},
        headers=world.coordinator_a,
    )
    assert ok(response)["data"] == []


@pytest.mark.parametrize("suffix", ["", "/summary"])
async def test_coordinator_cannot_read_another_organizations_program(
    world: World, suffix: str
) -> None:
    response = await world.api.client.get(
        f"/v1/programs/{world.program_b['id']}{suffix}", headers=world.coordinator_a
    )
    assert response.status_code == 404
    assert world.program_b["title"] not in response.text
    assert world.therapist_2["id"] not in response.text


async def test_coordinator_cannot_read_another_organizations_session(world: World) -> None:
    session_b = world.sessions_b[0]
    response = await world.api.client.get(
        f"/v1/sessions/{session_b['id']}", headers=world.coordinator_a
    )
    assert response.status_code == 404
    assert world.program_b["id"] not in response.text
    assert world.therapist_2["id"] not in response.text


async def test_coordinator_cannot_cancel_another_organizations_session(world: World) -> None:
    client = world.api.client
    session_b = world.sessions_b[0]
    response = await client.post(
        f"/v1/sessions/{session_b['id']}/cancel",
        json={"reason": "not ours"},
        headers=world.coordinator_a,
    )
    assert response.status_code == 404
    after = ok(await client.get(f"/v1/sessions/{session_b['id']}", headers=world.api.admin))
    assert after["status"] == "scheduled"
    assert after == session_b


async def test_coordinator_cannot_cancel_another_organizations_program(world: World) -> None:
    client = world.api.client
    response = await client.post(
        f"/v1/programs/{world.program_b['id']}/cancel",
        json={"effective_date": "2030-01-01", "reason": "not ours"},
        headers=world.coordinator_a,
    )
    assert response.status_code == 404
    after = ok(await client.get(f"/v1/programs/{world.program_b['id']}", headers=world.api.admin))
    assert after == world.program_b
    assert [s["status"] for s in await sessions_of(world.api, world.program_b["id"])] == [
        "scheduled"
    ] * len(world.sessions_b)


# The API conventions: another tenant's resource is a 404, "never a 403", even for an action the
# caller's role may not take on its own resources (that is the 403 case). Programs and therapists
# resolve the resource first (`ProgramInPath`, `TherapistInPath`); these session actions must too.
FOREIGN_SESSION_ACTIONS = [
    ("coordinator", "PATCH", "", {"starts_at": "2031-01-01T10:00:00Z"}),
    ("coordinator", "POST", "/complete", {"attendance": 1}),
    ("coordinator", "POST", "/no-show", None),
    ("therapist", "PATCH", "", {"starts_at": "2031-01-01T10:00:00Z"}),
    ("therapist", "POST", "/cancel", {"reason": "not mine"}),
]


@pytest.mark.parametrize(
    ("caller", "method", "suffix", "body"),
    FOREIGN_SESSION_ACTIONS,
    ids=[f"{c}-{s.lstrip('/') or 'reschedule'}" for c, _, s, _ in FOREIGN_SESSION_ACTIONS],
)
async def test_a_session_action_the_role_may_not_take_is_still_404_on_a_foreign_session(
    world: World, caller: str, method: str, suffix: str, body: Any
) -> None:
    client = world.api.client
    session_b = world.sessions_b[0]
    headers = world.coordinator_a if caller == "coordinator" else world.therapist_1_key
    response = await client.request(
        method, f"/v1/sessions/{session_b['id']}{suffix}", json=body, headers=headers
    )
    assert response.status_code == 404, response.text
    after = ok(await client.get(f"/v1/sessions/{session_b['id']}", headers=world.api.admin))
    assert after == session_b


async def test_therapist_lists_sessions_and_sees_only_their_own(world: World) -> None:
    client = world.api.client
    page = ok(
        await client.get("/v1/sessions", params={"limit": "200"}, headers=world.therapist_1_key)
    )
    assert {s["id"] for s in page["data"]} == {s["id"] for s in world.sessions_a}
    assert {s["therapist_id"] for s in page["data"]} == {world.therapist_1["id"]}
    for foreign_filter in (
        {"therapist_id": world.therapist_2["id"]},
        {"program_id": world.program_b["id"]},
        {"organization_id": world.org_b["id"]},
    ):
        response = await client.get(
            "/v1/sessions", params=foreign_filter, headers=world.therapist_1_key
        )
        assert ok(response)["data"] == [], foreign_filter


async def test_therapist_reads_their_own_session_but_not_another_therapists(
    world: World,
) -> None:
    client = world.api.client
    own = world.sessions_a[0]
    assert ok(await client.get(f"/v1/sessions/{own['id']}", headers=world.therapist_1_key)) == own
    foreign = await client.get(
        f"/v1/sessions/{world.sessions_b[0]['id']}", headers=world.therapist_1_key
    )
    assert foreign.status_code == 404
    assert world.program_b["id"] not in foreign.text


@pytest.mark.parametrize("who", ["own", "foreign"])
async def test_therapist_cannot_record_another_therapists_session(world: World, who: str) -> None:
    """Recording is a therapist's own business: T2's session is a 404 to T1 (T1's own, still in
    the future, is a 409: not yet started)."""
    client = world.api.client
    session = world.sessions_a[0] if who == "own" else world.sessions_b[0]
    for suffix, body in (("/complete", {"attendance": 1}), ("/no-show", None)):
        response = await client.post(
            f"/v1/sessions/{session['id']}{suffix}", json=body, headers=world.therapist_1_key
        )
        assert response.status_code == (409 if who == "own" else 404), response.text
    after = ok(await client.get(f"/v1/sessions/{session['id']}", headers=world.api.admin))
    assert after == session


@pytest.mark.parametrize("path", ["/v1/programs", "/v1/programs/{a}", "/v1/programs/{a}/summary"])
async def test_therapist_never_reads_programs_not_even_their_own(world: World, path: str) -> None:
    response = await world.api.client.get(
        path.format(a=world.program_a["id"]), headers=world.therapist_1_key
    )
    assert response.status_code == 403
    assert "rate_cents" not in response.text
    assert world.program_a["title"] not in response.text


async def test_therapists_own_view_lists_their_programs_and_sessions_without_money(
    world: World,
) -> None:
    client = world.api.client
    programs = ok(await client.get("/v1/me/programs", headers=world.therapist_1_key))
    assert [p["id"] for p in programs["data"]] == [world.program_a["id"]]
    sessions = ok(
        await client.get("/v1/me/sessions", params={"limit": "200"}, headers=world.therapist_1_key)
    )
    assert {s["id"] for s in sessions["data"]} == {s["id"] for s in world.sessions_a}
    for page in (programs, sessions):
        assert not [k for k in _keys_of(page) if k.endswith("_cents")]
        assert world.program_b["title"] not in json.dumps(page)


# Calendar feeds. The token is the credential (anyone holding it reads the feed, no API key),
# so the API only guards who makes, rotates and revokes feeds; an unknown token opens nothing.


async def _feed_still_works(world: World, feed: dict[str, Any]) -> None:
    """The feed neither rotated nor revoked: its token still reads it."""
    response = await world.api.client.get(f"/v1/calendar/{feed['token']}.ics")
    assert response.status_code == 200, response.text


@pytest.mark.parametrize(
    ("subject", "status"),
    [("org_a", 201), ("org_b", 404), ("therapist_1", 403), ("therapist_2", 403)],
)
async def test_coordinator_makes_feeds_only_for_their_own_organization(
    world: World, subject: str, status: int
) -> None:
    """Another organization is a 404; a therapist's feed is not a coordinator's to make (403,
    their own therapist T1's included)."""
    body = (
        {"organization_id": getattr(world, subject)["id"]}
        if subject.startswith("org")
        else {"therapist_id": getattr(world, subject)["id"]}
    )
    response = await world.api.client.post(
        "/v1/calendar-feeds", json=body, headers=world.coordinator_a
    )
    assert response.status_code == status, response.text
    if status != 201:
        assert "token" not in response.json()


@pytest.mark.parametrize(
    ("subject", "status"), [("therapist_1", 201), ("therapist_2", 404), ("org_a", 403)]
)
async def test_therapist_makes_a_feed_only_for_themself(
    world: World, subject: str, status: int
) -> None:
    body = (
        {"organization_id": getattr(world, subject)["id"]}
        if subject.startswith("org")
        else {"therapist_id": getattr(world, subject)["id"]}
    )
    response = await world.api.client.post(
        "/v1/calendar-feeds", json=body, headers=world.therapist_1_key
    )
    assert response.status_code == status, response.text
    if status != 201:
        assert "token" not in response.json()


async def test_finance_may_not_make_a_feed(world: World) -> None:
    response = await world.api.client.post(
        "/v1/calendar-feeds", json={"organization_id": world.org_a["id"]}, headers=world.finance
    )
    assert response.status_code == 403, response.text


FOREIGN_FEEDS = [
    ("coordinator_a", "feed_org_b"),
    ("coordinator_a", "feed_therapist_1"),
    ("coordinator_a", "feed_therapist_2"),
    ("therapist_1_key", "feed_therapist_2"),
    ("therapist_1_key", "feed_org_a"),
    ("therapist_1_key", "feed_org_b"),
    ("finance", "feed_org_a"),
]


@pytest.mark.parametrize(("caller", "feed"), FOREIGN_FEEDS)
@pytest.mark.parametrize(("method", "suffix"), [("POST", "/rotate"), ("DELETE", "")])
async def test_a_feed_out_of_reach_is_404_to_rotate_or_revoke_and_keeps_working(
    world: World, caller: str, feed: str, method: str, suffix: str
) -> None:
    target = getattr(world, feed)
    response = await world.api.client.request(
        method, f"/v1/calendar-feeds/{target['id']}{suffix}", headers=getattr(world, caller)
    )
    assert response.status_code == 404, response.text
    assert target["token"] not in response.text
    await _feed_still_works(world, target)


@pytest.mark.parametrize(
    ("caller", "feed"), [("coordinator_a", "feed_org_a"), ("therapist_1_key", "feed_therapist_1")]
)
async def test_a_scoped_key_rotates_and_revokes_its_own_feed(
    world: World, caller: str, feed: str
) -> None:
    client = world.api.client
    headers = getattr(world, caller)
    own = getattr(world, feed)
    rotated = ok(await client.post(f"/v1/calendar-feeds/{own['id']}/rotate", headers=headers))
    assert rotated["id"] == own["id"] and rotated["token"] != own["token"]
    old = await client.get(f"/v1/calendar/{own['token']}.ics")
    assert old.status_code == 404
    await _feed_still_works(world, rotated)
    revoked = ok(await client.delete(f"/v1/calendar-feeds/{own['id']}", headers=headers))
    assert revoked["revoked_at"] is not None
    assert (await client.get(f"/v1/calendar/{rotated['token']}.ics")).status_code == 404
    again = await client.post(f"/v1/calendar-feeds/{own['id']}/rotate", headers=headers)
    assert again.status_code == 409, again.text


@pytest.mark.parametrize("caller", [None, "admin", "finance", "coordinator_a", "therapist_1_key"])
async def test_an_unknown_calendar_token_is_404_for_everyone(
    world: World, caller: str | None
) -> None:
    headers = (
        {} if caller is None else world.api.admin if caller == "admin" else getattr(world, caller)
    )
    response = await world.api.client.get(
        f"/v1/calendar/{unknown_calendar_token()}.ics", headers=headers
    )
    assert response.status_code == 404, response.text
    assert "BEGIN:VCALENDAR" not in response.text


# Reports aggregate every tenant: the provider's (admin, finance) alone.


@pytest.mark.parametrize("path", sorted(path for _, path in REPORTS))
@pytest.mark.parametrize("caller", ["coordinator_a", "therapist_1_key"])
async def test_reports_are_refused_to_scoped_keys(world: World, path: str, caller: str) -> None:
    response = await world.api.client.get(
        path, params={"from": "2030-01-01", "to": "2030-12-31"}, headers=getattr(world, caller)
    )
    assert response.status_code == 403, response.text
    assert world.therapist_2["name"] not in response.text


# Billing. Admin and finance do everything; a coordinator reads their organization's issued
# invoices (drafts are the provider's work in progress: 404) and changes none (403); another
# organization's invoice is a 404, whatever the action. Therapists see no money: 403 throughout.


async def test_coordinator_lists_only_their_organizations_issued_invoices(world: World) -> None:
    client = world.api.client
    a, b = world.billing_a, world.billing_b
    everything = ok(await client.get("/v1/invoices", headers=world.api.admin))
    assert {a.issued["id"], a.draft["id"], b.issued["id"], b.draft["id"]} <= {
        i["id"] for i in everything["data"]
    }
    page = ok(await client.get("/v1/invoices", headers=world.coordinator_a))
    assert [i["id"] for i in page["data"]] == [a.issued["id"]]
    text = json.dumps(page)
    for marker in (
        a.draft["id"],
        b.issued["id"],
        b.issued["number"],
        b.draft["id"],
        world.org_b["id"],
        world.org_b["name"],
    ):
        assert marker not in text
    for query in (
        {"status": "draft"},
        {"organization_id": world.org_b["id"]},
        {"organization_id": world.org_b["id"], "status": "open"},
    ):
        response = await client.get("/v1/invoices", params=query, headers=world.coordinator_a)
        assert ok(response)["data"] == [], query


async def test_coordinator_reads_their_organizations_issued_invoice(world: World) -> None:
    issued = world.billing_a.issued
    got = ok(
        await world.api.client.get(f"/v1/invoices/{issued['id']}", headers=world.coordinator_a)
    )
    assert (got["id"], got["number"], got["organization_id"]) == (
        issued["id"],
        issued["number"],
        world.org_a["id"],
    )
    assert {line["session_id"] for line in got["lines"]} == {
        s["id"] for s in world.billing_a.sessions[:2]
    }


@pytest.mark.parametrize(
    "invoice", ["org B's issued invoice", "org B's draft", "org A's own draft"]
)
async def test_coordinator_gets_404_for_another_organizations_invoice_and_for_drafts(
    world: World, invoice: str
) -> None:
    target = {
        "org B's issued invoice": world.billing_b.issued,
        "org B's draft": world.billing_b.draft,
        "org A's own draft": world.billing_a.draft,
    }[invoice]
    response = await world.api.client.get(
        f"/v1/invoices/{target['id']}", headers=world.coordinator_a
    )
    assert response.status_code == 404, response.text
    assert world.org_b["name"] not in response.text
    assert world.billing_b.issued["number"] not in response.text
    assert "_cents" not in response.text


INVOICE_CHANGES = [
    ("POST", "/payments", {"amount_cents": 1, "method": "bank_transfer"}),
    ("POST", "/credit-notes", {"amount_cents": 1}),
    ("POST", "/void", {"reason": "not ours to void"}),
    ("POST", "/issue", None),
    ("DELETE", "", None),
]


@pytest.mark.parametrize(
    ("method", "suffix", "body"),
    INVOICE_CHANGES,
    ids=[s.lstrip("/") or "delete" for _, s, _ in INVOICE_CHANGES],
)
@pytest.mark.parametrize(("whose", "status"), [("billing_a", 403), ("billing_b", 404)])
async def test_coordinator_changes_no_invoice_and_nothing_is_recorded(
    world: World, method: str, suffix: str, body: Any, whose: str, status: int
) -> None:
    """Their own organization's issued invoice: 403 (a change is the provider's); another
    organization's: 404 (visibility before role). Re-read as admin, nothing moved."""
    client = world.api.client
    invoice = getattr(world, whose).issued
    before = ok(await client.get(f"/v1/invoices/{invoice['id']}", headers=world.api.admin))
    response = await client.request(
        method, f"/v1/invoices/{invoice['id']}{suffix}", json=body, headers=world.coordinator_a
    )
    assert response.status_code == status, response.text
    after = ok(await client.get(f"/v1/invoices/{invoice['id']}", headers=world.api.admin))
    assert after == before
    assert (after["status"], after["payments"], after["credit_notes"]) == ("open", [], [])
    assert after["amount_paid_cents"] == after["amount_credited_cents"] == 0


@pytest.mark.parametrize("caller", ["coordinator_a", "therapist_1_key"])
async def test_invoice_runs_and_the_export_are_refused_to_scoped_keys(
    world: World, caller: str
) -> None:
    client = world.api.client
    headers = getattr(world, caller)
    start, end = period()
    export = await client.get(
        "/v1/invoices/export.csv", params={"from": start, "to": end}, headers=headers
    )
    assert export.status_code == 403, export.text
    assert "invoice_number" not in export.text
    assert world.billing_a.issued["number"] not in export.text
    drafts_before = ok(
        await client.get("/v1/invoices", params={"status": "draft"}, headers=world.api.admin)
    )
    response = await client.post(
        "/v1/invoice-runs",
        json={"period_start": start, "period_end": end, "organization_id": world.org_a["id"]},
        headers=headers,
    )
    assert response.status_code == 403, response.text
    drafts_after = ok(
        await client.get("/v1/invoices", params={"status": "draft"}, headers=world.api.admin)
    )
    assert drafts_after == drafts_before


@pytest.mark.parametrize(
    "path",
    [
        "/v1/invoices",
        "/v1/invoices/{a_issued}",
        "/v1/invoices/{a_draft}",
        "/v1/invoices/{b_issued}",
    ],
)
async def test_therapist_reads_no_invoice_at_all(world: World, path: str) -> None:
    """T1 works in org A, and still sees none of its invoices: 403, never a 404 or the money."""
    url = path.format(
        a_issued=world.billing_a.issued["id"],
        a_draft=world.billing_a.draft["id"],
        b_issued=world.billing_b.issued["id"],
    )
    response = await world.api.client.get(url, headers=world.therapist_1_key)
    assert response.status_code == 403, response.text
    assert "_cents" not in response.text
    assert "INV-" not in response.text


# Outbound webhooks and the scheduler are the provider's: a scoped key is refused by role (403),
# with the real ids of the provider's endpoint and delivery, and changes nothing.


@pytest.mark.parametrize("caller", ["coordinator_a", "therapist_1_key"])
async def test_scoped_keys_get_403_on_every_webhook_route_and_the_jobs(
    world: World, caller: str
) -> None:
    client = world.api.client
    headers = getattr(world, caller)
    endpoint, delivery = world.webhook_endpoint, world.webhook_delivery
    endpoint_path = f"/v1/webhook-endpoints/{endpoint['id']}"
    before = ok(await client.get(f"{endpoint_path}/deliveries", headers=world.api.admin))
    responses = [
        await client.post(
            "/v1/webhook-endpoints",
            json={"url": WEBHOOK_URL, "events": ["*"]},
            headers=headers,
        ),
        await client.get("/v1/webhook-endpoints", headers=headers),
        await client.get(endpoint_path, headers=headers),
        await client.post(f"{endpoint_path}/rotate-secret", headers=headers),
        await client.get(f"{endpoint_path}/deliveries", headers=headers),
        await client.post(f"/v1/webhook-deliveries/{delivery['id']}/retry", headers=headers),
        await client.delete(endpoint_path, headers=headers),
        await client.get("/v1/jobs", headers=headers),
    ]
    assert [r.status_code for r in responses] == [403] * len(responses)
    for response in responses:
        assert endpoint["url"] not in response.text
        assert endpoint["secret"] not in response.text
        assert "whsec_" not in response.text
    listed = ok(await client.get("/v1/webhook-endpoints", headers=world.api.admin))
    assert [e["id"] for e in listed["data"]] == [endpoint["id"]]
    shown = ok(await client.get(endpoint_path, headers=world.api.admin))
    assert shown["updated_at"] == endpoint["updated_at"]  # the secret was not rotated
    after = ok(await client.get(f"{endpoint_path}/deliveries", headers=world.api.admin))
    assert after == before


async def test_the_world_has_a_delivery_for_every_event_since_the_endpoint_was_registered(
    world: World,
) -> None:
    """The walk's delivery id is a real one: the endpoint (subscribed to "*") was registered
    first, so the world's programs and invoices each left one behind, waiting."""
    page = ok(
        await world.api.client.get(
            f"/v1/webhook-endpoints/{world.webhook_endpoint['id']}/deliveries",
            params={"limit": "200"},
            headers=world.api.admin,
        )
    )
    types = {d["event_type"] for d in page["data"]}
    assert {"program.requested", "program.confirmed", "invoice.issued"} <= types
    assert {d["status"] for d in page["data"]} == {"pending"}
    assert world.webhook_delivery["id"] in {d["id"] for d in page["data"]}


# Stripe's webhook takes no API key: the signature is the only credential.


@pytest.mark.parametrize(
    ("signature", "caller"),
    [(None, None), ("t=1,v1=0000", None), (f"t=1,v1={'0' * 64}", "coordinator_a")],
    ids=["unsigned", "malformed-signature", "forged-signature-with-a-coordinator-key"],
)
async def test_an_unsigned_webhook_event_is_400_and_pays_nothing(
    world: World, signature: str | None, caller: str | None
) -> None:
    """An `invoice.paid` about org A's invoice, unsigned or badly signed: an API key adds
    nothing (the walk sends every role's)."""
    client = world.api.client
    invoice = world.billing_a.issued
    before = ok(await client.get(f"/v1/invoices/{invoice['id']}", headers=world.api.admin))
    event = {
        "id": f"evt_{uuid.uuid4().hex}",
        "type": "invoice.paid",
        "data": {"object": {"id": "in_walk", "metadata": {"invoice_id": invoice["id"]}}},
    }
    headers = {} if caller is None else dict(getattr(world, caller))
    if signature is not None:
        headers["Stripe-Signature"] = signature
    response = await client.post("/v1/integrations/stripe/webhook", json=event, headers=headers)
    assert response.status_code == 400, response.text
    assert invoice["number"] not in response.text
    assert "_cents" not in response.text
    after = ok(await client.get(f"/v1/invoices/{invoice['id']}", headers=world.api.admin))
    assert after == before
