"""Schemathesis hooks for tests/test_openapi_conformance.py (loaded by `st run` through
SCHEMATHESIS_HOOKS). They teach the generator what a schema cannot say, and nothing else:

- a cursor (format `ensemble-cursor`) is opaque: a valid one is what the API itself encodes;
- a time zone, a currency or a holiday region (their formats) is one the registry the server
  checks against knows;
- an Idempotency-Key names one request: a generated valid key is made unique per request (a
  fuzzer reuses values across requests, and the server rightly answers a key reused for another
  request 422);
- a path parameter naming a kind of resource the run seeded (SEEDED_IDS, JSON of parameter name
  to id) names that resource for about half the generated ids, so that operations reach real
  rows, not only 404s.
"""

from __future__ import annotations

import json
import os
import re
import uuid
from datetime import UTC, date, datetime, timedelta, timezone
from typing import Any

import schemathesis
from hypothesis import strategies as st

from models.types import (
    CURRENCY_FORMAT,
    HOLIDAY_REGION_FORMAT,
    TIME_ZONE_FORMAT,
    TWO_DECIMAL_CURRENCIES,
    _zones,
)
from service.core.idempotency import HEADER, KEY_PATTERN, MAX_KEY_LENGTH
from service.core.pagination import CURSOR_FORMAT, encode_cursor

SEEDED: dict[str, str] = json.loads(os.environ.get("SEEDED_IDS", "{}"))

schemathesis.openapi.format(
    CURSOR_FORMAT,
    st.builds(
        encode_cursor,
        st.datetimes(
            min_value=datetime(1901, 1, 1),
            max_value=datetime(2199, 12, 31),
            timezones=st.just(UTC),
        ),
        st.uuids(),
    ),
)


# Dates and instants in the years the server takes (1900-2200, as their patterns say): drawn
# there, rather than drawn from any year and filtered down to the few that match.
_YEARS = {"min_value": date(1900, 1, 1), "max_value": date(2200, 12, 31)}
_OFFSETS = st.sampled_from(
    [UTC, timezone(timedelta(hours=-7)), timezone(timedelta(hours=5, minutes=30))]
)
schemathesis.openapi.format("date", st.dates(**_YEARS).map(date.isoformat))
schemathesis.openapi.format(
    "date-time",
    st.datetimes(
        min_value=datetime(1900, 1, 2), max_value=datetime(2200, 12, 30), timezones=_OFFSETS
    ).map(datetime.isoformat),
)

# Registry-checked values: drawn from the registries the server checks against.
schemathesis.openapi.format(TIME_ZONE_FORMAT, st.sampled_from(sorted(_zones())))
schemathesis.openapi.format(CURRENCY_FORMAT, st.sampled_from(sorted(TWO_DECIMAL_CURRENCIES)))
schemathesis.openapi.format(
    HOLIDAY_REGION_FORMAT, st.sampled_from(["CA", "CA-AB", "CA-ON", "US", "US-NY", "GB", "DE"])
)


@schemathesis.hook
def map_headers(context: Any, headers: dict[str, Any] | None) -> dict[str, Any] | None:
    if headers and isinstance(headers.get(HEADER), str):
        key = headers[HEADER]
        if re.fullmatch(KEY_PATTERN, key) and len(key) <= MAX_KEY_LENGTH:
            headers[HEADER] = f"{key[:200]}-{uuid.uuid4().hex}"
    return headers


@schemathesis.hook
def map_path_parameters(
    context: Any, path_parameters: dict[str, Any] | None
) -> dict[str, Any] | None:
    for name, value in (path_parameters or {}).items():
        if name in SEEDED and isinstance(value, str):
            try:
                generated = uuid.UUID(value)
            except ValueError:
                continue  # not an id at all: left as generated
            if generated.int % 2 == 0:
                assert path_parameters is not None
                path_parameters[name] = SEEDED[name]
    return path_parameters


# Rules no JSON Schema can state, so a request the document allows may still break them and be
# rightly refused with a 422 naming the field: they weigh the request against the database (a
# referenced row must exist, a window must not overlap one already held, an invoice's amount
# due), against today (a date must not be past), against the caller's role, or one field
# against another (an end after its start); an RFC 5545 recurrence rule's meaning, and whether
# a webhook host resolves to a public address. The service raises them with these error
# `type`s (service/**: FieldError); a schema-valid request refused only for them is no
# mismatch between the document and the server.
SERVICE_RULES = frozenset(
    {
        "not_found",  # a referenced row that does not exist (or is not the caller's)
        "foreign_key",
        "overlap",  # availability windows overlapping one another
        "individual_participants",  # an individual offering takes one participant
        "too_many_participants",  # at most the offering's capacity
        "less_than_equal",  # attendance at most the program's participants
        "exceeds_amount_due",
        "required",  # online needs a video link, in-person a location; effective_date
        "past_start",  # today or later, in the organization's zone
        "past_date",
        "provider_only",  # only the provider sets a rate
        "empty_schedule",
        "schedule",  # RFC 5545 recurrence rules and their exceptions
        "order",  # `to` not before `from`
        "too_long",  # a report period of at most a year
        "unsafe_url",  # a webhook host that resolves to a private address
        "invalid",  # an end before its start, a start in the past, who may cancel
    }
)
# Cross-field rules checked by the request models themselves (pydantic's `value_error`).
MODEL_RULES = (
    "must be after starts_at",  # time off: ends_at after starts_at
    "must not be before period_start",
    "end must be after start",  # an availability window
)


def _service_rule(error: dict[str, Any]) -> bool:
    if error.get("type") in SERVICE_RULES:
        return True
    message = str(error.get("message", ""))
    return error.get("type") == "value_error" and any(rule in message for rule in MODEL_RULES)


@schemathesis.hook
def filter_failure(context: Any, failure: Any, case: Any, response: Any) -> bool:
    """Keep every failure but a positive request refused only by SERVICE_RULES."""
    if type(failure).__name__ != "RejectedPositiveData" or response.status_code != 422:
        return True
    try:
        errors = response.json().get("errors") or []
    except ValueError:
        return True
    return not (errors and all(_service_rule(e) for e in errors))
