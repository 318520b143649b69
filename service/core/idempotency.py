"""Idempotency keys for POST requests, stored in PostgreSQL.

A request with a key first *claims* it by inserting a row under the unique (caller, key)
constraint, in the request's own transaction. A concurrent request with the same key blocks on
that insert until the first commits (then it replays the stored response) or rolls back (then it
runs itself). The response is saved in the same transaction as the change, so a committed change
always has its replay, and a failed request (any 4xx/5xx) leaves no key behind and may be retried.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from datetime import timedelta

from sqlalchemy import select, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col

from models.idempotency import IdempotencyRecord
from service.core.errors import Conflict, FieldError, IdempotencyMismatch, ValidationFailed

HEADER = "Idempotency-Key"
MAX_KEY_LENGTH = 255
# Visible ASCII, inner spaces allowed (HTTP strips the outer ones); the OpenAPI document says
# the same (routers.openapi).
KEY_PATTERN = r"^[\x21-\x7e](?:[\x20-\x7e]*[\x21-\x7e])?$"
KEPT = timedelta(hours=24)  # how long a key replays (the expire-idempotency-keys job)


@dataclass(frozen=True)
class StoredResponse:
    status: int
    body: bytes
    content_type: str


def request_hash(method: str, path: str, query: str, body: bytes) -> str:
    digest = hashlib.sha256()
    for part in (method.encode(), path.encode(), query.encode(), body):
        digest.update(len(part).to_bytes(8, "big"))
        digest.update(part)
    return digest.hexdigest()


def validate_key(key: str) -> str:
    if len(key) > MAX_KEY_LENGTH or not re.fullmatch(KEY_PATTERN, key):
        raise ValidationFailed(
            [
                FieldError(
                    HEADER,
                    f"must be 1 to {MAX_KEY_LENGTH} visible ASCII characters (and spaces)",
                    "idempotency_key",
                    "header",
                )
            ]
        )
    return key


async def claim(
    db: AsyncSession, *, caller: str, key: str, fingerprint: str, method: str, path: str
) -> StoredResponse | None:
    """Claim `key` for this request, or return the response it already produced."""
    inserted = (
        await db.execute(
            insert(IdempotencyRecord)
            .values(caller=caller, key=key, request_hash=fingerprint, method=method, path=path)
            .on_conflict_do_nothing(constraint="uq_idempotency_keys_caller_key")
            .returning(col(IdempotencyRecord.id))
        )
    ).scalar_one_or_none()
    if inserted is not None:
        return None
    record = (
        await db.execute(
            select(IdempotencyRecord).where(
                col(IdempotencyRecord.caller) == caller, col(IdempotencyRecord.key) == key
            )
        )
    ).scalar_one()
    if record.request_hash != fingerprint:
        raise IdempotencyMismatch(
            f"Idempotency-Key {key!r} was first used with a different request "
            f"({record.method} {record.path}); use a new key for a new request"
        )
    if record.response_status is None or record.response_body is None:
        raise Conflict(f"A request with Idempotency-Key {key!r} is still in progress")
    return StoredResponse(
        status=record.response_status,
        body=record.response_body,
        content_type=record.response_content_type or "application/json",
    )


async def save_response(
    db: AsyncSession, *, caller: str, key: str, response: StoredResponse
) -> None:
    await db.execute(
        update(IdempotencyRecord)
        .where(col(IdempotencyRecord.caller) == caller, col(IdempotencyRecord.key) == key)
        .values(
            response_status=response.status,
            response_body=response.body,
            response_content_type=response.content_type,
        )
    )
