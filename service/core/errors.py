"""Domain errors and their one rendering as RFC 9457 problem details.

Service code raises these; `render_problem` is the single place that turns any error into the
status and body a client sees. Database constraint violations are translated here too, by their
stable constraint names (see models.base naming convention).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

PROBLEM_BASE = "https://ensemble.dev/problems/"


@dataclass
class FieldError:
    field: str
    message: str
    type: str = "invalid"
    location: str = "body"

    def as_dict(self) -> dict[str, str]:
        return {
            "field": self.field,
            "message": self.message,
            "type": self.type,
            "in": self.location,
        }


class DomainError(Exception):
    status: int = 400
    slug: str = "bad-request"
    title: str = "Bad request"

    def __init__(self, detail: str | None = None, **extensions: Any) -> None:
        super().__init__(detail or self.title)
        self.detail = detail or self.title
        self.extensions = extensions

    def problem(self) -> dict[str, Any]:
        # Extensions never overwrite the RFC 9457 members.
        return {
            **self.extensions,
            "type": PROBLEM_BASE + self.slug,
            "title": self.title,
            "status": self.status,
            "detail": self.detail,
        }


class Unauthorized(DomainError):
    status, slug, title = 401, "unauthorized", "Missing or invalid API key"


class Forbidden(DomainError):
    status, slug, title = 403, "forbidden", "Not allowed for this role"


class NotFound(DomainError):
    status, slug, title = 404, "not-found", "Not found"


class Conflict(DomainError):
    """A change that clashes with existing data; `conflicts` names what it clashes with."""

    status, slug, title = 409, "conflict", "Conflict"

    def __init__(self, detail: str, *, conflicts: list[dict[str, Any]] | None = None) -> None:
        super().__init__(detail, conflicts=conflicts or [])


class InvalidState(DomainError):
    status, slug, title = 409, "invalid-state", "Invalid state change"


class ValidationFailed(DomainError):
    """One 422 naming every failed field rule (collected, not first-failure-wins)."""

    status, slug, title = 422, "validation-error", "Request validation failed"

    def __init__(self, errors: list[FieldError]) -> None:
        names = ", ".join(e.field for e in errors)
        super().__init__(f"Invalid fields: {names}", errors=[e.as_dict() for e in errors])
        self.errors = errors


class IdempotencyMismatch(DomainError):
    status, slug, title = 422, "idempotency-key-reused", "Idempotency key reused"


class ServiceUnavailable(DomainError):
    """The server or the database cannot answer now; the client may retry after
    `retry_after` seconds (the Retry-After header)."""

    status, slug, title = 503, "unavailable", "Service unavailable"
    retry_after = 1


class DatabaseUnavailable(ServiceUnavailable):
    slug, title = "database-unavailable", "Database unavailable"


# SQLSTATEs that mean "not now" rather than "never": a deadline passed (statement, lock), the
# server is shutting down, starting or out of connections, or the connection broke.
RETRY_LATER = {
    "57014": "The database took too long to answer; nothing was saved",
    "55P03": "A record was locked by another change for too long; nothing was saved",
    "57P01": "The database is restarting; nothing was saved",
    "57P02": "The database is restarting; nothing was saved",
    "57P03": "The database is starting; nothing was saved",
    "53300": "The database has no free connection; nothing was saved",
}
# Two changes collided; the one refused may simply be sent again.
COLLIDED = {"40001", "40P01"}


# Constraint names (from the naming convention) that deserve a precise message. Anything else
# still maps to a generic 409 / 422 by SQLSTATE, never to a 500.
CONSTRAINT_MESSAGES: dict[str, tuple[str, str]] = {
    "uq_therapists_email": ("email", "a therapist with this email already exists"),
}


def from_database_error(sqlstate: str | None, constraint: str | None) -> DomainError | None:
    """Translate an integrity violation into a domain error, or None if it is not one."""
    if sqlstate is None:
        return None
    if sqlstate in RETRY_LATER:
        return DatabaseUnavailable(RETRY_LATER[sqlstate])
    if sqlstate.startswith("08"):  # connection exception
        return DatabaseUnavailable("The connection to the database broke; nothing was saved")
    if sqlstate in COLLIDED:
        return Conflict(
            "The change collided with another one at the same moment; send it again",
            conflicts=[{"reason": "concurrent_change"}],
        )
    if constraint and constraint in CONSTRAINT_MESSAGES:
        field_name, message = CONSTRAINT_MESSAGES[constraint]
        return Conflict(message, conflicts=[{"field": field_name, "constraint": constraint}])
    if sqlstate == "23505":  # unique_violation
        return Conflict(
            "A resource with these values already exists", conflicts=[{"constraint": constraint}]
        )
    if sqlstate == "23P01":  # exclusion_violation
        return Conflict(
            "The change overlaps an existing booking", conflicts=[{"constraint": constraint}]
        )
    if sqlstate == "23503":  # foreign_key_violation
        return ValidationFailed(
            [
                FieldError(
                    constraint or "reference",
                    "refers to a resource that does not exist",
                    "foreign_key",
                )
            ]
        )
    if sqlstate in {"23514", "23502", "22001", "22003", "22007", "22008", "22P02"}:
        return ValidationFailed(
            [FieldError(constraint or "body", "violates a data rule", "constraint")]
        )
    return None
