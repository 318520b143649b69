"""The OpenAPI document, told whole: besides what each route declares, every operation lists
the error responses the app's middleware and error mechanism can give it, as
`application/problem+json` with the shared schemas of models.problems, and the POSTs document
their Idempotency-Key. Decided here, once, from what an operation is (authenticated or public,
with path parameters, with a body, a write), never by hand per route.

Which errors an operation can give (routers.problems renders all of them):

- 401 and 403: authenticated operations (a missing or unknown key; a role that may not);
- 404: operations naming a resource, in the path or (authenticated) by id in a body (missing
  or out of the caller's scope);
- 409: writes (an invalid state, a clash, a concurrent change, a key still in progress) and
  authenticated operations on a resource (one whose state does not allow them);
- 413 and 408: operations with a body (routers.body_limit);
- 422: operations with any parameter or a body, and every POST (its Idempotency-Key);
- 429: everything the rate limiter counts (routers.rate_limit);
- 503: everything that uses the database (a deadline passed, the database unreachable).
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi

from models.problems import PROBLEM_SCHEMAS
from routers.problems import PROBLEM_JSON
from routers.rate_limit import UNLIMITED_PATHS
from service.core import idempotency
from service.core.settings import Settings

WITHOUT_DATABASE = frozenset({"/healthz", "/metrics"})
WRITES = frozenset({"post", "put", "patch", "delete"})
REF = "#/components/schemas/{model}"

RETRY_AFTER = {
    "Retry-After": {
        "description": "Seconds to wait before trying again",
        "schema": {"type": "integer", "minimum": 0},
    }
}
# status -> (description, schema, headers)
RESPONSES: dict[int, tuple[str, str, dict[str, Any]]] = {
    400: ("The request cannot be read (e.g. a body that is not JSON)", "Problem", {}),
    401: (
        "No API key, or one that is unknown or revoked",
        "Problem",
        {
            "WWW-Authenticate": {
                "description": "`Bearer`: send the key as `Authorization: Bearer ens_...`",
                "schema": {"type": "string"},
            }
        },
    ),
    403: ("The key's role may not do this", "Problem", {}),
    404: ("No such resource, or not one the caller may see", "Problem", {}),
    408: ("The request body did not arrive in time", "Problem", {}),
    409: (
        "The change clashes with existing data (see `conflicts`) or with the resource's state",
        "ConflictProblem",
        {},
    ),
    413: ("The request body is too large", "Problem", {}),
    422: ("A field, or a rule on the request's values, was refused", "ValidationProblem", {}),
    429: ("Too many requests; wait for Retry-After seconds", "Problem", RETRY_AFTER),
    503: (
        "The server or its database cannot answer now; nothing was saved",
        "Problem",
        RETRY_AFTER,
    ),
}

IDEMPOTENCY_KEY = {
    "name": idempotency.HEADER,
    "in": "header",
    "required": False,
    "description": (
        "Makes a POST safe to retry: the same key with the same request within "
        f"{Settings.model_fields['idempotency_retention_hours'].default} hours (by default; "
        "ENSEMBLE_IDEMPOTENCY_RETENTION_HOURS) answers the first response "
        "again and changes nothing; with another request it is a 422. "
        f"1 to {idempotency.MAX_KEY_LENGTH} visible ASCII characters (spaces inside)."
    ),
    "schema": {
        "type": "string",
        "minLength": 1,
        "maxLength": idempotency.MAX_KEY_LENGTH,
        "pattern": idempotency.KEY_PATTERN,
    },
}


def possible_errors(path: str, method: str, operation: dict[str, Any]) -> list[int]:
    """The error statuses `operation` (at `path`, by `method`) can answer."""
    parameters = operation.get("parameters", [])
    has_body = "requestBody" in operation
    statuses: list[int] = []
    secured = bool(operation.get("security"))
    if secured:
        statuses += [401, 403]
    names_resources = any(p["in"] == "path" for p in parameters)
    if names_resources or (has_body and secured):  # in the path, or by id in a client's body
        statuses.append(404)
    if method in WRITES or (names_resources and secured):  # a change, or a resource's state
        statuses.append(409)
    if has_body:
        statuses += [400, 408, 413]
    if parameters or has_body or method == "post":
        statuses.append(422)
    if path not in UNLIMITED_PATHS:
        statuses.append(429)
    if path not in WITHOUT_DATABASE:
        statuses.append(503)
    return sorted(statuses)


def _problem_response(status: int) -> dict[str, Any]:
    description, schema, headers = RESPONSES[status]
    response: dict[str, Any] = {
        "description": description,
        "content": {PROBLEM_JSON: {"schema": {"$ref": REF.format(model=schema)}}},
    }
    if headers:
        response["headers"] = headers
    return response


def complete(spec: dict[str, Any]) -> dict[str, Any]:
    """Add the error responses, their schemas and the Idempotency-Key to `spec` (in place)."""
    schemas = spec.setdefault("components", {}).setdefault("schemas", {})
    for model in PROBLEM_SCHEMAS:
        found = model.model_json_schema(ref_template=REF, mode="serialization")
        schemas.update(found.pop("$defs", {}))
        schemas[model.__name__] = found
    for path, operations in spec.get("paths", {}).items():
        for method, operation in operations.items():
            responses = operation.setdefault("responses", {})
            for status in possible_errors(path, method, operation):
                declared = responses.get(str(status), {})
                if status != 422 and "content" in declared:
                    continue  # the route describes this answer itself (e.g. /readyz's 503)
                problem = _problem_response(status)
                if status != 422 and "description" in declared:
                    problem["description"] = declared["description"]
                responses[str(status)] = problem
            operation["responses"] = dict(sorted(responses.items()))
            if method == "post":
                operation.setdefault("parameters", []).append(IDEMPOTENCY_KEY)
    # FastAPI's own 422 shapes are replaced everywhere by the problem the app really sends.
    for unused in ("HTTPValidationError", "ValidationError"):
        schemas.pop(unused, None)
    return spec


def install(app: FastAPI) -> None:
    """Serve (and let `ensemble openapi` print) the completed document."""

    def document() -> dict[str, Any]:
        if app.openapi_schema is None:
            app.openapi_schema = complete(
                get_openapi(
                    title=app.title,
                    version=app.version,
                    openapi_version=app.openapi_version,
                    description=app.description,
                    routes=app.routes,
                    separate_input_output_schemas=app.separate_input_output_schemas,
                )
            )
        return app.openapi_schema

    app.openapi = document  # type: ignore[method-assign]
