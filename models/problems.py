"""The shapes of error responses as the OpenAPI document describes them: RFC 9457 problem
details, as service.core.errors builds them and routers.problems renders them (always
`application/problem+json`). These models only describe; the errors themselves are built from
the domain error classes."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

_OPEN = ConfigDict(extra="allow")  # RFC 9457: a problem may carry members of its own


class Problem(BaseModel):
    """An error, as RFC 9457 problem details. `type` is a stable URI naming the kind of
    problem (e.g. `https://ensemble.dev/problems/not-found`); `detail` says what happened to
    this request."""

    model_config = _OPEN

    type: str = Field(description="A URI naming the kind of problem; stable, for programs")
    title: str = Field(description="A short summary of the kind of problem")
    status: int = Field(ge=400, le=599, description="The HTTP status code")
    detail: str = Field(description="What went wrong with this request, for people")


class ProblemFieldError(BaseModel):
    """One field that failed its rule."""

    model_config = _OPEN

    field: str = Field(description="The field, dotted for nested ones (`lines.0.amount_cents`)")
    message: str = Field(description="The rule it failed, for people")
    type: str = Field(description="The kind of failure, for programs (e.g. `string_too_long`)")
    in_: Literal["body", "query", "path", "header"] = Field(
        alias="in", description="Where the field was sent"
    )


class ValidationProblem(Problem):
    """A 422: the request, or a rule on its values, was refused. `errors` names every field
    that failed (absent when the problem is about the request as a whole, such as a reused
    Idempotency-Key)."""

    errors: list[ProblemFieldError] = Field(default_factory=list)


class ProblemConflict(BaseModel):
    """What a change clashes with. Which members are present depends on `reason`: a staffing
    clash names the session, program, therapist and times; a uniqueness clash names the
    field or constraint."""

    model_config = _OPEN

    reason: str | None = Field(
        default=None,
        description="Why (e.g. `overlap`, `unavailable`, `time_off`, `concurrent_change`)",
    )
    detail: str | None = None
    field: str | None = None
    constraint: str | None = None
    session_id: str | None = None
    program_id: str | None = None
    therapist_id: str | None = None
    starts_at: str | None = None
    ends_at: str | None = None
    proposed_starts_at: str | None = None
    proposed_ends_at: str | None = None


class ConflictProblem(Problem):
    """A 409: the change clashes with existing data (`conflicts` lists what with) or the
    resource is not in a state that allows it (no `conflicts`)."""

    conflicts: list[ProblemConflict] = Field(default_factory=list)


PROBLEM_SCHEMAS: tuple[type[BaseModel], ...] = (
    Problem,
    ProblemFieldError,
    ValidationProblem,
    ProblemConflict,
    ConflictProblem,
)
