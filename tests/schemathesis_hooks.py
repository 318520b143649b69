"""Schemathesis hooks for tests/test_openapi_conformance.py (loaded by `st run` through
SCHEMATHESIS_HOOKS). They teach the generator what a schema cannot say, and nothing else:

- a cursor (format `ensemble-cursor`) is opaque: a valid one is what the API itself encodes;
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
from datetime import UTC, datetime
from typing import Any

import schemathesis
from hypothesis import strategies as st

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
