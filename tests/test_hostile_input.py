"""Every bad input is a 422 naming the field, never a 500; and output that embeds one tenant's
text cannot break another's document.

The write routes and their string fields are read from the app's own OpenAPI document, so a new
route or field is driven too: each field is classified by the rule its schema declares (one-line
text, multi-line text, URL, date, time, enum, id), a field with no rule fails the walk, and
hypothesis sends hostile values of its kind on top of a valid body."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import date, timedelta
from typing import Any
from urllib.parse import urlparse

import icalendar
import pytest
import pytest_asyncio
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

from models.base import utcnow
from models.types import (
    CLOCK_TIME_PATTERN,
    CURRENCY_FORMAT,
    CURRENCY_PATTERN,
    EMAIL_PATTERN,
    HOLIDAY_REGION_FORMAT,
    HTTPS_URL_PATTERN,
    MULTILINE_PATTERN,
    SINGLE_LINE_PATTERN,
    SOME_TEXT_PATTERN,
    TIME_ZONE_FORMAT,
    URL_PATTERN,
    WINDOW_END_PATTERN,
)
from service.app import create_app
from service.programs.calendar_feeds import ical_text, ical_uri
from tests.programs_support import confirmed_program, make_program, sessions_of
from tests.support import PROBLEM_JSON, Api, invalid_fields, ok, problem
from tests.test_billing_exports import export, issued_invoice

SPEC = create_app().openapi()
WRITE_METHODS = ("post", "put", "patch")
# Bodies that are not JSON schemas of ours: Stripe's event, verified by its signature instead.
NOT_OUR_SCHEMA = {"receive_stripe_webhook"}


Path = tuple[str | int, ...]


def _resolve(schema: dict[str, Any]) -> dict[str, Any]:
    while "$ref" in schema:
        schema = SPEC["components"]["schemas"][schema["$ref"].rsplit("/", 1)[1]]
    return schema


def string_fields(schema: dict[str, Any], path: Path = ()) -> Iterator[tuple[Path, dict[str, Any]]]:
    """Every string leaf of a request schema, with its path (list items as index 0)."""
    schema = _resolve(schema)
    for option in [*schema.get("anyOf", []), *schema.get("oneOf", [])]:
        yield from string_fields(option, path)
    if schema.get("type") == "object":
        for name, field in schema.get("properties", {}).items():
            yield from string_fields(field, (*path, name))
    elif schema.get("type") == "array":
        yield from string_fields(schema["items"], (*path, 0))
    elif schema.get("type") == "string":
        yield path, schema


def kind_of(schema: dict[str, Any]) -> str:
    """The input rule a string field's schema declares."""
    if "enum" in schema:
        return "enum"
    match schema.get("format"), schema.get("pattern"):
        case ("uuid", _):
            return "id"
        case ("uri", pattern) if pattern == URL_PATTERN:
            return "url"
        case ("uri", pattern) if pattern == HTTPS_URL_PATTERN:
            return "https_url"
        case ("date", _) | ("date-time", _):
            return "date"
        case ("time", _):
            return "clock"
        case (None, pattern) if pattern == CLOCK_TIME_PATTERN:
            return "clock"
        case (name, _) if name in (TIME_ZONE_FORMAT, CURRENCY_FORMAT, HOLIDAY_REGION_FORMAT):
            return "single_line"  # a name from a registry, on one line
        case (None, pattern) if pattern == EMAIL_PATTERN:
            return "single_line"
        case (None, pattern) if pattern == WINDOW_END_PATTERN:
            return "window_end"
        case (None, pattern) if pattern == MULTILINE_PATTERN:
            return "multi_line"
        case (None, pattern) if pattern in (SINGLE_LINE_PATTERN, SOME_TEXT_PATTERN):
            return "single_line"
        case (None, pattern) if pattern == CURRENCY_PATTERN:
            return "single_line"
    raise AssertionError(f"a string field with no input rule: {schema}")


def write_fields() -> list[tuple[str, str, str, Path, str]]:
    """(operation id, method, path, field path, kind) for every string field of every write."""
    found = []
    for route, operations in SPEC["paths"].items():
        for method, operation in operations.items():
            if method not in WRITE_METHODS or operation["operationId"] in NOT_OUR_SCHEMA:
                continue
            body = operation.get("requestBody", {}).get("content", {}).get("application/json")
            if body is None:
                continue
            for field, schema in string_fields(body["schema"]):
                found.append((operation["operationId"], method, route, field, kind_of(schema)))
    return found


FIELDS = write_fields()

printable = st.text(alphabet="abcXYZ019 .-", min_size=1, max_size=6)
LINE_BREAKS = ["\n", "\r", "\r\n"]
CONTROLS = ["\x00", "\x01", "\x07", "\x08", "\x0b", "\x0c", "\x1b", "\x7f", "\x85", "\x9b"]


def embedded(bad: list[str]) -> st.SearchStrategy[str]:
    """Ordinary text with one bad character somewhere inside it."""
    return st.builds(lambda a, c, b: a + c + b, printable, st.sampled_from(bad), printable)


BAD_URLS = st.one_of(
    st.sampled_from(
        [
            "ftp://files.example.org/a",
            "javascript:alert(1)",
            "https:///no-host",
            "//meet.example.org/no-scheme",
            "meet.example.org/relative",
            "https://meet example.org/",
            "https://meet.example.org:99999/",
            "https://meet.example.org/" + "a" * 2000,
        ]
    ),
    st.builds(
        lambda c, tail: f"https://meet.example.org/{c}{tail}",
        st.sampled_from([*CONTROLS, *LINE_BREAKS, " ", "\t"]),
        printable,
    ),
)
HOSTILE: dict[str, st.SearchStrategy[str]] = {
    "single_line": embedded([*CONTROLS, *LINE_BREAKS, "\t", "\u2028", "\u2029"]),
    "multi_line": embedded([*CONTROLS, "\r"]).filter(lambda s: "\r\n" not in s),
    "url": BAD_URLS,
    "https_url": st.one_of(
        BAD_URLS, st.sampled_from(["http://meet.example.org/room", "HTTP://meet.example.org/"])
    ),
    "date": st.sampled_from(
        [
            *("0001-01-01", "9999-12-31", "1899-12-31", "2201-01-01", "2030-01-01\x00"),
            *("0001-01-01T00:00:00Z", "9999-12-31T23:59:59Z", "2030-01-01T10:00:00\x00Z"),
        ]
    ),
    "clock": st.sampled_from(["24:00", "10:60", "10:00\x00", "1\x000:00", "10:00\n"]),
    "window_end": st.sampled_from(["24:01", "25:00", "24:00\x00", "10:00\n", "24:00\n"]),
    "enum": embedded(["\x00", "\x07", "\n"]),
    "id": st.sampled_from([str(uuid.UUID(int=1))[:-1] + "\x00", "\x00", "1\r\n2"]),
}


def with_value(body: Any, path: Path, value: str) -> Any:
    """A copy of `body` with the field at `path` set to `value` (lists get one item)."""
    if not path:
        return value
    head, rest = path[0], path[1:]
    if isinstance(head, int):
        items = list(body) if isinstance(body, list) and body else [{}]
        return [with_value(items[0], rest, value)]
    copy = dict(body or {})
    copy[head] = with_value(copy.get(head), rest, value)
    return copy


def dotted(path: Path) -> str:
    return ".".join(str(part) for part in path)


def base_bodies(world: dict[str, Any]) -> dict[str, Any]:
    """A valid body per write operation (the hostile value replaces one field of it)."""
    today = utcnow().date()
    schedule = {
        "timezone": "America/Edmonton",
        "start_date": str(today + timedelta(days=30)),
        "start_time": "10:00",
        "rrule": "FREQ=WEEKLY;COUNT=2",
    }
    return {
        "create_api_key": {"name": "key", "role": "admin"},
        "create_organization": {"name": "Org", "kind": "school", "timezone": "UTC"},
        "update_organization": {},
        "create_location": {"name": "Room", "timezone": "UTC"},
        "create_therapist": {"name": "T", "email": "t@ensemble.example", "timezone": "UTC"},
        "update_therapist": {},
        "replace_availability": [{"weekday": "MO", "start": "09:00", "end": "17:00"}],
        "create_time_off": {
            "starts_at": f"{today + timedelta(days=3)}T09:00:00Z",
            "ends_at": f"{today + timedelta(days=4)}T09:00:00Z",
        },
        "create_offering": {
            "name": "O",
            "format": "group",
            "duration_minutes": 60,
            "rate_cents": 100,
            "max_participants": 5,
        },
        "update_offering": {},
        "create_program": {
            "organization_id": world["org"]["id"],
            "offering_id": world["offering"]["id"],
            "title": "Program",
            "modality": "online",
            "video_url": "https://meet.example.org/room",
            "participants": 1,
            "schedule": schedule,
        },
        "update_program": {"schedule": schedule},
        "assign_therapist": {"therapist_id": world["therapist"]["id"]},
        "confirm_program": {},
        "cancel_program": {"effective_date": str(today)},
        "reschedule_session": {"starts_at": f"{today + timedelta(days=5)}T10:00:00Z"},
        "make_up_session": {"starts_at": f"{today + timedelta(days=5)}T10:00:00Z"},
        "cancel_session": {},
        "complete_session": {"attendance": 1},
        "record_observation": {"ratings": {"wellbeing": 3}, "note": "Settled."},
        "substitute_therapist": {"therapist_id": world["therapist"]["id"]},
        "create_calendar_feed": {"therapist_id": world["therapist"]["id"]},
        "create_invoice_run": {"period_start": str(today), "period_end": str(today)},
        "void_invoice": {},
        "record_payment": {"amount_cents": 100, "method": "cheque"},
        "add_credit_note": {"amount_cents": 100},
        "create_webhook_endpoint": {"url": "https://hooks.example.org/in", "events": ["*"]},
    }


async def make_world(api: Api) -> dict[str, Any]:
    org = await api.make_org()
    offering = await api.make_offering()
    therapist = await api.make_therapist()
    program = await make_program(api, org, offering)
    return {
        "org": org,
        "offering": offering,
        "therapist": therapist,
        "program": program,
        # Loaded by the service after the body is validated: any id reaches validation.
        "other": str(uuid.uuid4()),
    }


def url_of(route: str, world: dict[str, Any]) -> str:
    ids = {
        "organization_id": world["org"]["id"],
        "offering_id": world["offering"]["id"],
        "therapist_id": world["therapist"]["id"],
        "program_id": world["program"]["id"],
    }
    for name in ("session_id", "invoice_id", "endpoint_id", "delivery_id", "feed_id"):
        ids[name] = world["other"]
    return route.format(**ids)


def test_every_string_field_of_every_write_route_declares_its_input_rule():
    operations = {operation for operation, *_ in FIELDS}
    kinds = {kind for *_, kind in FIELDS}
    # Every write with a JSON body but these (whose bodies hold only booleans and numbers).
    assert operations == set(base_bodies(WORLD_IDS)) - {"confirm_program", "complete_session"}
    assert kinds == {
        *("single_line", "multi_line", "url", "https_url", "date", "clock", "window_end"),
        *("enum", "id"),
    }


WORLD_IDS = {name: {"id": ""} for name in ("org", "offering", "therapist")}


def test_the_text_fields_and_their_rules():
    by_kind: dict[str, set[str]] = {}
    for operation, _, _, path, kind in FIELDS:
        by_kind.setdefault(kind, set()).add(f"{operation}:{dotted(path)}")
    assert by_kind["multi_line"] == {
        "add_credit_note:reason",
        "cancel_program:reason",
        "cancel_session:reason",
        "create_location:address",
        "create_organization:address",
        "create_time_off:reason",
        "create_webhook_endpoint:description",
        "record_observation:note",
        "update_organization:address",
        "void_invoice:reason",
    }
    assert by_kind["url"] == {"create_webhook_endpoint:url"}
    assert by_kind["https_url"] == {"create_program:video_url", "update_program:video_url"}


@pytest_asyncio.fixture
async def world(api: Api) -> dict[str, Any]:
    return await make_world(api)


@pytest.mark.parametrize(
    ("operation", "method", "route", "path", "kind"),
    FIELDS,
    ids=[f"{operation}:{dotted(path)}" for operation, _, _, path, _ in FIELDS],
)
@settings(
    max_examples=8,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(data=st.data())
async def test_a_hostile_value_in_any_field_is_a_422_naming_it(
    api: Api,
    world: dict[str, Any],
    operation: str,
    method: str,
    route: str,
    path: Path,
    kind: str,
    data: st.DataObject,
):
    value = data.draw(HOSTILE[kind], label=dotted(path))
    body = with_value(base_bodies(world)[operation], path, value)
    response = await api.client.request(
        method.upper(), url_of(route, world), json=body, headers=api.admin
    )
    assert response.status_code == 422, (value, response.status_code, response.text)
    assert response.headers["content-type"] == PROBLEM_JSON
    assert invalid_fields(response) == [dotted(path)], (value, response.text)


async def test_the_one_line_and_multi_line_rules_keep_ordinary_text(api: Api):
    org = await api.make_org(
        name="  École Sainte-Marie  ", address="1 Main St\r\nUnit 4\tRear\nCalgary"
    )
    assert org["name"] == "École Sainte-Marie"
    assert org["address"] == "1 Main St\r\nUnit 4\tRear\nCalgary"
    response = await api.client.post(
        "/v1/organizations",
        json={"name": "Ok", "kind": "school", "timezone": "UTC", "tax_label": "GST\n"},
        headers=api.admin,
    )
    error = problem(response, 422)["errors"][0]
    assert error == {
        "field": "tax_label",
        "message": "must be one line of text, not blank, without control characters",
        "type": "string_pattern_mismatch",
        "in": "body",
    }


@pytest.mark.parametrize(
    ("url", "params"),
    [
        ("/v1/audit-events", {"entity_type": "program\x00"}),
        ("/v1/audit-events", {"entity_type": "program\r\nX"}),
        ("/v1/offerings", {"cursor": "abc\x00"}),
        ("/v1/audit-events", {"cursor": "abc\r\n"}),
        ("/v1/sessions", {"from": "0001-01-01"}),
        ("/v1/sessions", {"to": "9999-12-31T00:00:00Z"}),
        ("/v1/me/sessions", {"from": "2030-01-01\x00"}),
        ("/v1/reports/revenue", {"from": "0001-01-01", "to": "9999-12-31"}),
        ("/v1/reports/utilization", {"from": "0001-01-01", "to": "9999-12-31"}),
        ("/v1/invoices/export.csv", {"from": "0001-01-01", "to": "9999-12-31"}),
    ],
)
async def test_hostile_query_parameters_are_a_422_naming_them(
    api: Api, url: str, params: dict[str, str]
):
    response = await api.client.get(url, params=params, headers=api.admin)
    assert invalid_fields(response) == list(params)
    assert {error["in"] for error in response.json()["errors"]} == {"query"}


async def test_the_revenue_report_and_export_name_the_years_they_accept(api: Api):
    response = await api.client.get(
        "/v1/reports/revenue", params={"from": "0001-01-01", "to": "2030-01-01"}, headers=api.admin
    )
    assert problem(response, 422)["errors"] == [
        {
            "field": "from",
            "message": "must be between the years 1900 and 2200",
            "type": "value_error",
            "in": "query",
        }
    ]


@pytest.mark.parametrize("value", ["a\x00b", "a\x07b", "a\x1bb", "a\x7fb"])
async def test_a_control_character_in_a_header_is_a_422_naming_the_header(api: Api, value: str):
    response = await api.client.get("/v1/organizations", headers={**api.admin, "X-Trace": value})
    assert problem(response, 422)["errors"] == [
        {
            "field": "x-trace",
            "message": "must not contain control characters",
            "type": "control_character",
            "in": "header",
        }
    ]


async def test_a_nul_in_the_authorization_header_is_a_422_not_a_500(api: Api):
    response = await api.client.get(
        "/v1/organizations", headers={"Authorization": "Bearer ens_\x00"}
    )
    assert invalid_fields(response) == ["authorization"]


async def test_a_tab_in_a_header_value_is_allowed(api: Api):
    response = await api.client.get("/v1/organizations", headers={**api.admin, "X-Trace": "a\tb"})
    assert response.status_code == 200


async def test_a_nul_in_a_feed_token_is_a_404(api: Api):
    response = await api.client.get("/v1/calendar/cal_%00.ics")
    problem(response, 404)


async def test_stored_text_cannot_break_another_tenants_calendar_feed(api: Api, db: AsyncSession):
    """Rows written before the input rules (or by any other path) may hold line breaks and
    controls: the feed escapes them, so every event stays one event with its own fields."""
    therapist = await api.make_therapist()
    offering = await api.make_offering()
    hostile_org = await api.make_org(name="Hostile")
    other_org = await api.make_org(name="Other")
    start = str(utcnow().date() + timedelta(days=7))
    hostile = await confirmed_program(
        api, hostile_org, offering, therapist, title="Hostile", schedule={"start_date": start}
    )
    other = await confirmed_program(
        api,
        other_org,
        offering,
        therapist,
        title="Other",
        schedule={"start_date": start, "start_time": "14:00"},
    )
    injected = "BEGIN:VEVENT\r\nUID:forged@evil\r\nSUMMARY:Forged\r\nEND:VEVENT"
    await db.execute(
        text("UPDATE programs SET video_url = :url, title = :title WHERE id = :id"),
        {
            "id": hostile["id"],
            "url": f"https://meet.example.org/x\r\n{injected}\r\nX-A: b",
            "title": f"Hostile\r{injected}\x07;,\\",
        },
    )
    await db.execute(
        text("UPDATE organizations SET name = :name WHERE id = :id"),
        {"id": other_org["id"], "name": "Other\nSchool"},
    )
    await db.flush()
    feed = ok(
        await api.client.post(
            "/v1/calendar-feeds", headers=api.admin, json={"therapist_id": therapist["id"]}
        ),
        201,
    )
    response = await api.client.get(urlparse(feed["url"]).path)
    assert response.status_code == 200, response.text
    events = icalendar.Calendar.from_ical(response.content).walk("VEVENT")
    session_ids = [s["id"] for p in (hostile, other) for s in await sessions_of(api, p["id"])]
    assert sorted(str(e["uid"]) for e in events) == sorted(f"{i}@ensemble" for i in session_ids)
    hostile_events = [e for e in events if str(e["summary"]).startswith("Hostile")]
    assert len(hostile_events) == len(session_ids) // 2
    for event in hostile_events:
        # The stored CR becomes a line break inside the value, the BEL is dropped.
        assert str(event["summary"]) == f"Hostile\n{injected.replace(chr(13), '')};,\\ (Hostile)"
        assert str(event["url"]) == (
            "https://meet.example.org/x%0D%0ABEGIN:VEVENT%0D%0AUID:forged@evil%0D%0A"
            "SUMMARY:Forged%0D%0AEND:VEVENT%0D%0AX-A:%20b"
        )
    other_events = [e for e in events if str(e["summary"]).startswith("Other")]
    assert {str(e["summary"]) for e in other_events} == {"Other (Other\nSchool)"}
    assert len(other_events) == len(session_ids) // 2
    # No content line of the document starts a forged component or property.
    lines = response.content.decode().split("\r\n")
    assert lines.count("BEGIN:VEVENT") == len(session_ids)
    assert not [line for line in lines if line.startswith(("UID:forged", "X-A", "SUMMARY:Forged"))]


def test_ical_text_keeps_line_breaks_as_escapes_and_drops_controls():
    assert ical_text("a\r\nb\rc\nd\x07e\tf\x00") == "a\nb\nc\nde\tf"
    event = icalendar.Event()
    event.add("summary", ical_text("Room 1; floor 2, \\ wing\r\nBEGIN:VEVENT"))
    assert event.to_ical() == (
        b"BEGIN:VEVENT\r\nSUMMARY:Room 1\\; floor 2\\, \\\\ wing\\nBEGIN:VEVENT\r\nEND:VEVENT\r\n"
    )
    assert ical_uri("https://x.example/a b\r\nc%20") == "https://x.example/a%20b%0D%0Ac%20"


async def test_stored_line_breaks_and_quotes_stay_inside_one_csv_cell(api: Api, db: AsyncSession):
    org = await api.make_org(name="Plain")
    invoice = await issued_invoice(api, org)
    await db.execute(
        text("UPDATE organizations SET name = :name WHERE id = :id"),
        {"id": org["id"], "name": 'Two\r\nlines, "quoted"\n=1+1'},
    )
    await db.flush()
    rows = [r for r in await export(api) if r["invoice_number"] == invoice["number"]]
    assert len(rows) == 3
    assert {r["organization_name"] for r in rows} == {'Two\r\nlines, "quoted"\n=1+1'}
    assert {r["organization_id"] for r in rows} == {org["id"]}


async def test_rows_stored_before_the_rules_are_still_served_and_changed(
    api: Api, db: AsyncSession
):
    org = await api.make_org()
    offering = await api.make_offering()
    program = await make_program(api, org, offering)
    await db.execute(
        text("UPDATE organizations SET name = :name, address = :address WHERE id = :id"),
        {"id": org["id"], "name": "Bell\x07 School", "address": "Line\rbreak"},
    )
    await db.execute(
        text("UPDATE programs SET title = :title, exdates = :exdates WHERE id = :id"),
        {"id": program["id"], "title": "Old\ttitle", "exdates": [date(1, 1, 1)]},
    )
    await db.flush()
    shown = ok(await api.client.get(f"/v1/organizations/{org['id']}", headers=api.admin))
    assert (shown["name"], shown["address"]) == ("Bell\x07 School", "Line\rbreak")
    read = ok(await api.client.get(f"/v1/programs/{program['id']}", headers=api.admin))
    assert (read["title"], read["schedule"]["exdates"]) == ("Old\ttitle", ["0001-01-01"])
    changed = ok(
        await api.client.patch(
            f"/v1/programs/{program['id']}", json={"title": "New title"}, headers=api.admin
        )
    )
    assert changed["title"] == "New title"
