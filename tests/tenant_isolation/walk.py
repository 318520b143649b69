"""The route walk: every route of the app, walked by each role with ids from the world.

The walk iterates the app's own routes, so a route added later is walked without editing this
file. Path and query parameters are filled by name from each walker's `ids` table below; a name
the table does not know yet gets a random UUID (`unknown_parameter_id`, and the failure text
says so), so the walk still runs, but such a route deserves an entry in the tables so that it is
walked with a real foreign id (test_walk.py fails until it has one).
"""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

import fastapi.routing
import httpx
from fastapi import FastAPI
from fastapi.routing import APIRoute

from tests.billing_support import period
from tests.support import Headers
from tests.tenant_isolation.world import (
    DATE_QUERY_PARAMETERS,
    MOVED_TO,
    NOTE_MARKER,
    OBSERVATION_PATH,
    TIME_OFF,
    WEBHOOK_URL,
    Billing,
    World,
    monday_plus,
    unknown_calendar_token,
)

# --------------------------------------------------------------------------------------------
# What each role walks with: the ids put in paths and query filters, the markers that must
# never appear in its responses, and the status a foreign resource must answer.
# --------------------------------------------------------------------------------------------

NOT_FOUND = frozenset({404})
THERAPISTS_OWN_VIEW = frozenset(
    {
        ("GET", "/v1/me/programs"),
        ("GET", "/v1/me/sessions"),
        ("GET", "/v1/me/observations-due"),
    }
)
NEVER_TOUCHES = frozenset({403, 404})  # a role barred from a kind: 403 by role, or 404
# Reports are the provider's (admin, finance): aggregates over every tenant.
REPORTS = frozenset({("GET", "/v1/reports/utilization"), ("GET", "/v1/reports/revenue")})
CREATE_FEED = ("POST", "/v1/calendar-feeds")
# Erasing a former therapist is the admin's alone (the walk's T1 is active: a 409 for the admin).
ERASE_THERAPIST = ("POST", "/v1/therapists/{therapist_id}/erase")
BY_ROLE = frozenset({403})  # a role that may use none of a kind, whoever's it is
# Billing: invoice runs, invoices and whatever hangs off an invoice (a route added later too).
BILLING_PATHS = ("/v1/invoice-runs", "/v1/invoices")
EXPORT_INVOICES = ("GET", "/v1/invoices/export.csv")
# Stripe calls it without an API key (the signature is the credential): an unsigned body is a
# 400 for every caller, whatever API key it carries, and changes nothing.
STRIPE_WEBHOOK = ("POST", "/v1/integrations/stripe/webhook")
# A session's observation (and its clinical note) is the delivering therapist's and the
# admin's: to anyone else it answers 404 whatever the session, their own organization's too.
OBSERVATION = frozenset({("GET", OBSERVATION_PATH), ("PUT", OBSERVATION_PATH)})


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
    hidden: frozenset[tuple[str, str]] = frozenset()
    """(method, path template) that answer this role 404 whatever the ids, its own included:
    the role must not even learn that the resource exists (another's clinical note)."""
    reads_notes: bool = False
    """The world's planted note may appear in this role's answers of the observation routes
    (the delivering therapist, the admin); in any other answer, or to anyone else, never."""

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
            # Org A's session that T1 observed, with a note the coordinator must never see.
            "session_id": world.observed_session["id"],
            "feed_id": world.feed_org_a["id"],
            "invoice_id": world.billing_a.issued["id"],
        },
        hidden=OBSERVATION,
        # Staffing is the provider's: the ranking names and scores its therapists.
        refused=frozenset(
            {("GET", "/v1/programs/{program_id}/therapist-suggestions"), JOBS, ERASE_THERAPIST}
        )
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
            # The session T1 delivered and observed: its note is T1's to read.
            "session_id": world.observed_session["id"],
            "feed_id": world.feed_therapist_1["id"],
        },
        reads_notes=True,
        # Their programs come through /v1/me/programs, without the money; billing is all money.
        refused=frozenset(
            {("GET", "/v1/programs"), ("POST", "/v1/programs"), JOBS, ERASE_THERAPIST}
        )
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
            "session_id": world.observed_session["id"],
            "feed_id": world.feed_org_a["id"],
            "token": world.feed_therapist_1["token"] if admin else unknown_calendar_token(),
            "invoice_id": world.billing_a.issued["id"],
            "endpoint_id": world.webhook_endpoint["id"],
            "delivery_id": world.webhook_delivery["id"],
        },
        refused=(
            THERAPISTS_OWN_VIEW
            if admin
            else THERAPISTS_OWN_VIEW | {CREATE_FEED, JOBS, ERASE_THERAPIST}
        ),
        hidden=frozenset() if admin else OBSERVATION,
        reads_notes=admin,
    )


# --------------------------------------------------------------------------------------------
# The routes, straight from the app.
# --------------------------------------------------------------------------------------------

PATH_PARAMETER = re.compile(r"{(\w+)(?::[^}]*)?}")


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


def _flat_routes(app: FastAPI, *, api: bool = True) -> Iterator[tuple[str, set[str]]]:
    """The API's routes (`api`), or the portal's pages (not in the OpenAPI document: they
    answer HTML to a signed-in browser, and test_portal_walk.py walks them with a session)."""
    # FastAPI >= 0.16x keeps each included router as one nested entry of `app.routes`;
    # `iter_route_contexts` flattens them with their prefixes. Older releases flatten
    # `app.routes` themselves.
    flatten = getattr(fastapi.routing, "iter_route_contexts", None)
    route: Any
    for route in flatten(app.routes) if flatten is not None else app.routes:
        original = getattr(route, "original_route", route)
        path = str(route.path)
        in_portal = path == PORTAL or path.startswith(PORTAL + "/")
        if isinstance(original, APIRoute) and in_portal != api:
            yield str(route.path), set(route.methods or ())


PORTAL = "/app"


def portal_pages(app: FastAPI) -> list[tuple[str, str]]:
    """(method, path template) of every portal page."""
    return [
        (method, path)
        for path, methods in _flat_routes(app, api=False)
        for method in sorted(methods - {"HEAD", "OPTIONS"})
    ]


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
        ERASE_THERAPIST: None,
        ("POST", "/v1/therapists/{therapist_id}/time-off"): {
            **TIME_OFF,
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
                "start_date": monday_plus(weeks=12),
                "start_time": "08:00",
                "rrule": "FREQ=WEEKLY;COUNT=2",
            },
        },
        ("PATCH", "/v1/programs/{program_id}"): {"title": "Walk program renamed"},
        ("POST", "/v1/programs/{program_id}/assign"): {"therapist_id": ids.get("therapist_id")},
        ("POST", "/v1/programs/{program_id}/confirm"): None,
        ("POST", "/v1/programs/{program_id}/cancel"): {
            "effective_date": monday_plus(weeks=20),
            "reason": "walk",
        },
        ("PATCH", "/v1/sessions/{session_id}"): {"starts_at": MOVED_TO},
        ("POST", "/v1/sessions/{session_id}/cancel"): {"reason": "walk"},
        ("POST", "/v1/sessions/{session_id}/complete"): {"attendance": 1},
        ("POST", "/v1/sessions/{session_id}/no-show"): None,
        ("POST", "/v1/sessions/{session_id}/make-up"): {"starts_at": "2031-01-02T10:00:00Z"},
        ("POST", "/v1/sessions/{session_id}/substitute"): {"therapist_id": ids.get("therapist_id")},
        # The same note again: the marker stays planted for every route walked after this one.
        ("PUT", OBSERVATION_PATH): {
            "ratings": {"stress_anxiety": 3, "wellbeing": 4},
            "note": NOTE_MARKER,
        },
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


def keys_of(document: Any) -> Iterator[str]:
    if isinstance(document, dict):
        for name, value in document.items():
            yield name
            yield from keys_of(value)
    elif isinstance(document, list):
        for item in document:
            yield from keys_of(item)


def _is_body_validation_error(response: httpx.Response) -> bool:
    """A 422 about the body alone: the route never looked at the resource, so it told nothing."""
    if response.status_code != 422:
        return False
    errors = response.json().get("errors") or []
    return bool(errors) and all(e.get("in") == "body" for e in errors)


def is_refused(walker: Walker, request: Request) -> bool:
    return (request.method, request.template) in walker.refused


def refusal_failures(walker: Walker, request: Request, response: httpx.Response) -> list[str]:
    """An operation the role may not use is a 403 by role, unless the path names another
    tenant's resource (then `expected_for_foreign` applies) or an id nobody has."""
    if not is_refused(walker, request) or request.random_params:
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


def is_hidden(walker: Walker, request: Request) -> bool:
    return (request.method, request.template) in walker.hidden


def note_failures(walker: Walker, request: Request, response: httpx.Response) -> list[str]:
    """The planted clinical note appears only in the observation routes' answers to those who
    may read it; a hidden route is a 404 (or a 422 about the body alone), whoever's the id."""
    failures = []
    reading = walker.reads_notes and (request.method, request.template) in OBSERVATION
    if NOTE_MARKER in response.text and not reading:
        failures.append(f"clinical note: {describe(walker, request, response)}")
    if (
        is_hidden(walker, request)
        and response.status_code != 404
        and not _is_body_validation_error(response)
    ):
        failures.append(
            f"expected 404 (hidden from this role): {describe(walker, request, response)}"
        )
    return failures


def isolation_failures(walker: Walker, request: Request, response: httpx.Response) -> list[str]:
    what = describe(walker, request, response)
    failures = (
        refusal_failures(walker, request, response)
        + webhook_failures(walker, request, response)
        + note_failures(walker, request, response)
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
            money = sorted({k for k in keys_of(body) if k.endswith("_cents")})
            if money:
                failures.append(f"money ({', '.join(money)}) for a role that sees none: {what}")
    return failures
