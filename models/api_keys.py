"""API keys: a bearer secret bound to a role and, for coordinators and therapists, a scope."""

from __future__ import annotations

import uuid
from datetime import datetime

from pydantic import model_validator
from sqlalchemy import CheckConstraint, String, UniqueConstraint
from sqlmodel import Field, SQLModel

from models.base import FORBID_EXTRA, id_field, sql_values, timestamp_field
from models.types import Name, Role


class ApiKeyBase(SQLModel):
    name: Name = Field(sa_type=String(200))
    role: Role = Field(sa_type=String(20))
    organization_id: uuid.UUID | None = Field(
        default=None, foreign_key="organizations.id", ondelete="CASCADE", index=True
    )
    therapist_id: uuid.UUID | None = Field(
        default=None, foreign_key="therapists.id", ondelete="CASCADE", index=True
    )


class ApiKey(ApiKeyBase, table=True):
    __tablename__ = "api_keys"
    __table_args__ = (
        UniqueConstraint("secret_hash"),
        CheckConstraint(f"role IN ({sql_values(Role)})", name="role"),
        # A key's scope matches its role: exactly the coordinator has an organization and
        # exactly the therapist has a therapist record.
        CheckConstraint(
            "(role = 'coordinator') = (organization_id IS NOT NULL)", name="coordinator_scope"
        ),
        CheckConstraint(
            "(role = 'therapist') = (therapist_id IS NOT NULL)", name="therapist_scope"
        ),
    )

    id: uuid.UUID = id_field()
    prefix: str = Field(sa_type=String(16))
    secret_hash: str = Field(sa_type=String(64))
    created_at: datetime = timestamp_field()
    revoked_at: datetime | None = timestamp_field(nullable=True)


_NONE = {"type": "null"}
_SCOPE_BY_ROLE = {  # the spec says what the validator below checks
    "oneOf": [
        {
            "properties": {
                "role": {"const": "coordinator"},
                "organization_id": {"type": "string"},
                "therapist_id": _NONE,
            },
            "required": ["organization_id"],
        },
        {
            "properties": {
                "role": {"const": "therapist"},
                "therapist_id": {"type": "string"},
                "organization_id": _NONE,
            },
            "required": ["therapist_id"],
        },
        {
            "properties": {
                "role": {"enum": ["admin", "finance"]},
                "organization_id": _NONE,
                "therapist_id": _NONE,
            }
        },
    ]
}


class ApiKeyCreate(ApiKeyBase):
    model_config = FORBID_EXTRA | {"json_schema_extra": _SCOPE_BY_ROLE}

    @model_validator(mode="after")
    def _scope_matches_role(self) -> ApiKeyCreate:
        if self.role == Role.coordinator and self.organization_id is None:
            raise ValueError("a coordinator key needs organization_id")
        if self.role != Role.coordinator and self.organization_id is not None:
            raise ValueError("only a coordinator key takes organization_id")
        if self.role == Role.therapist and self.therapist_id is None:
            raise ValueError("a therapist key needs therapist_id")
        if self.role != Role.therapist and self.therapist_id is not None:
            raise ValueError("only a therapist key takes therapist_id")
        return self


class ApiKeyRead(ApiKeyBase):
    # Read back as stored: output is not validated against the input rules.
    name: str
    id: uuid.UUID
    prefix: str
    created_at: datetime
    revoked_at: datetime | None


class ApiKeyCreated(ApiKeyRead):
    """The only response that carries the secret; it cannot be shown again."""

    key: str


class Me(SQLModel):
    api_key_id: uuid.UUID
    name: str
    role: Role
    organization_id: uuid.UUID | None
    therapist_id: uuid.UUID | None
