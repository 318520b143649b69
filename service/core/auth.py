"""Authentication and tenant scoping: the one place that decides who may see what.

A caller is a `Principal` resolved from a bearer API key. Queries for tenant-owned rows go
through the `scope_to_*` helpers below (or `ScopedStatement`, the same narrowing built once for
a hot statement), the only code that filters by the caller's organization or therapist
(scripts/lint_rules.py holds that line), so a coordinator can never be handed another
organization's rows by a forgotten WHERE clause.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from sqlalchemy import ColumnElement, Select, bindparam, false
from sqlalchemy.ext.asyncio import AsyncSession

from models.types import Role
from service.core.errors import Forbidden, Unauthorized

KEY_PREFIX = "ens_"
SECRET_BYTES = 32  # 256 bits of randomness: a hash lookup is then as safe as a password check

S = TypeVar("S", bound=Select)


@dataclass(frozen=True)
class Principal:
    key_id: uuid.UUID
    name: str
    role: Role
    organization_id: uuid.UUID | None = None
    therapist_id: uuid.UUID | None = None

    @property
    def sees_all_organizations(self) -> bool:
        return self.role in (Role.admin, Role.finance)


SYSTEM = Principal(key_id=uuid.UUID(int=0), name="system", role=Role.admin)
"""The actor for work the provider itself does (CLI, demo data, scheduled jobs)."""


def new_secret() -> str:
    return KEY_PREFIX + secrets.token_urlsafe(SECRET_BYTES)


def hash_secret(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def caller_fingerprint(authorization: str | None) -> str:
    """A stable, non-secret id for whoever sent a request (the hash of their key, if any)."""
    token = bearer_token(authorization)
    return hash_secret(token) if token else "anonymous"


def bearer_token(authorization: str | None) -> str | None:
    if not authorization:
        return None
    scheme, _, token = authorization.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return None
    return token.strip()


async def authenticate(db: AsyncSession, authorization: str | None) -> Principal:
    token = bearer_token(authorization)
    if token is None or not token.startswith(KEY_PREFIX) or len(token) > 200:
        raise Unauthorized("Send an API key as 'Authorization: Bearer ens_...'")
    digest = hash_secret(token)
    # Every request asks this, so it skips the ORM: one prepared statement on the request's
    # connection, its five columns straight into a Principal (no entity, no identity map).
    connection = await db.connection()
    row = (await connection.exec_driver_sql(_KEY_LOOKUP, (digest,))).first()
    # The lookup is by hash; compare once more in constant time so that no code path ever
    # compares secret material with an early-exit equality.
    if row is None or not hmac.compare_digest(row.secret_hash, digest):
        raise Unauthorized("The API key is unknown or has been revoked")
    return Principal(
        key_id=row.id,
        name=row.name,
        role=Role(row.role),
        organization_id=row.organization_id,
        therapist_id=row.therapist_id,
    )


_KEY_LOOKUP = (
    "SELECT id, name, role, organization_id, therapist_id, secret_hash FROM api_keys"
    " WHERE secret_hash = %s AND revoked_at IS NULL"
)


def require_role(principal: Principal, roles: Iterable[Role], action: str) -> None:
    allowed = set(roles)
    if principal.role not in allowed:
        names = ", ".join(sorted(r.value for r in allowed))
        raise Forbidden(f"Only {names} may {action}")


def is_the_therapist(principal: Principal, therapist_id: uuid.UUID) -> bool:
    """Whether the caller is this therapist's own key (what only they may do: their notes)."""
    return principal.role == Role.therapist and principal.therapist_id == therapist_id


def scope_to_organizations(stmt: S, principal: Principal, column: ColumnElement[Any] | Any) -> S:
    """Restrict a query on tenant-owned rows to the organizations the caller may reach."""
    reach, tenant = _tenant_reach(principal)
    return _narrowed(stmt, reach, tenant, column, None)


def scope_to_therapist(stmt: S, principal: Principal, column: ColumnElement[Any] | Any) -> S:
    """Restrict a query on therapist-owned rows to what the caller may reach."""
    if principal.sees_all_organizations:
        return stmt
    if principal.role == Role.therapist and principal.therapist_id is not None:
        return stmt.where(column == principal.therapist_id)
    return stmt.where(false())


def scope_to_tenant(
    stmt: S,
    principal: Principal,
    *,
    organization_column: ColumnElement[Any] | Any,
    therapist_column: ColumnElement[Any] | Any,
) -> S:
    """Rows that belong to an organization and are worked by a therapist (programs, sessions):
    coordinators reach their organization's, therapists their own, staff all."""
    reach, tenant = _tenant_reach(principal)
    return _narrowed(stmt, reach, tenant, organization_column, therapist_column)


TENANT_PARAMETER = "scope_tenant_id"


class ScopedStatement(Generic[S]):
    """A statement on tenant-owned rows narrowed exactly as `scope_to_tenant` narrows it (or,
    without a therapist column, as `scope_to_organizations`), built once per kind of caller
    with the tenant's id as a bound parameter (`TENANT_PARAMETER`).

    SQLAlchemy finds a statement's compiled form by a cache key it computes by walking the
    statement, once per statement object: a statement narrowed anew on each request is walked
    on each request (a quarter of a millisecond of a session read's 2.3). Built once, it is
    walked once per process and kind of caller; each request only brings its parameters."""

    def __init__(
        self,
        stmt: S,
        *,
        organization_column: ColumnElement[Any] | Any,
        therapist_column: ColumnElement[Any] | Any = None,
    ) -> None:
        self._stmt = stmt
        self._columns = (organization_column, therapist_column)
        self._built: dict[str, S] = {}

    def for_principal(self, principal: Principal, **bound: Any) -> tuple[S, dict[str, Any]]:
        """The statement for this caller, and its parameters: the request's own (`bound`, by
        the names the statement gave them) with the ones its scope needs."""
        reach, tenant = _tenant_reach(principal)
        built = self._built.get(reach)
        if built is None:
            built = _narrowed(self._stmt, reach, bindparam(TENANT_PARAMETER), *self._columns)
            self._built[reach] = built
        return built, (bound if tenant is None else {**bound, TENANT_PARAMETER: tenant})


def _tenant_reach(principal: Principal) -> tuple[str, uuid.UUID | None]:
    """Which rows of organizations and therapists the caller reaches, and whose."""
    if principal.sees_all_organizations:
        return "all", None
    if principal.role == Role.coordinator and principal.organization_id is not None:
        return "organization", principal.organization_id
    if principal.role == Role.therapist and principal.therapist_id is not None:
        return "therapist", principal.therapist_id
    return "none", None


def _narrowed(
    stmt: S,
    reach: str,
    tenant: Any,
    organization_column: ColumnElement[Any] | Any,
    therapist_column: ColumnElement[Any] | Any,
) -> S:
    """`stmt` narrowed to the reach; without a therapist column, therapists reach nothing."""
    if reach == "all":
        return stmt
    if reach == "organization":
        return stmt.where(organization_column == tenant)
    if reach == "therapist" and therapist_column is not None:
        return stmt.where(therapist_column == tenant)
    return stmt.where(false())
