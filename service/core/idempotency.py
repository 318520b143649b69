"""Idempotency keys for POST requests, stored in PostgreSQL.

A request with a key first *claims* it by inserting a row under the unique (caller, key)
constraint, in the request's own transaction. A concurrent request with the same key blocks on
that insert until the first commits (then it replays the stored response) or rolls back (then it
runs itself). The response is saved in the same transaction as the change, so a committed change
always has its replay, and a failed request (any 4xx/5xx) leaves no key behind and may be retried.

Responses may carry secrets shown once (API keys, webhook signing secrets, calendar feed URLs),
so the table keeps neither the key nor the response in the clear: the key is stored as a hash
(with the caller), the response encrypted under a key derived from the server's secret key, the
caller and the Idempotency-Key itself. A copy of the database (or of the server's key) alone
cannot read a replay; only a request carrying the same Idempotency-Key gets it back.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass

from sqlalchemy import bindparam, select, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col

from models.idempotency import IdempotencyRecord
from service.core.encryption import Keyring
from service.core.errors import Conflict, FieldError, IdempotencyMismatch, ValidationFailed

HEADER = "Idempotency-Key"
MAX_KEY_LENGTH = 255
RESPONSE_PURPOSE = "idempotent-response"
# Visible ASCII, inner spaces allowed (HTTP strips the outer ones); the OpenAPI document says
# the same (routers.openapi).
KEY_PATTERN = r"^[\x21-\x7e](?:[\x20-\x7e]*[\x21-\x7e])?$"


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


def key_hash(caller: str, key: str) -> str:
    """How a key is stored: the hash of the caller and the key (callers never contain ':')."""
    return hashlib.sha256(f"{caller}:{key}".encode()).hexdigest()


def seal_response(keyring: Keyring, *, caller: str, key: str, body: bytes) -> str:
    return keyring.encrypt(
        RESPONSE_PURPOSE, body, aad=key_hash(caller, key).encode(), context=_context(caller, key)
    )


def open_response(keyring: Keyring, *, caller: str, key: str, sealed: str) -> bytes:
    return keyring.decrypt(
        RESPONSE_PURPOSE, sealed, aad=key_hash(caller, key).encode(), context=_context(caller, key)
    )


def _context(caller: str, key: str) -> bytes:
    return caller.encode() + b"\0" + key.encode()


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
    db: AsyncSession,
    *,
    keyring: Keyring,
    caller: str,
    key: str,
    fingerprint: str,
    method: str,
    path: str,
) -> StoredResponse | None:
    """Claim `key` for this request, or return the response it already produced."""
    hashed = key_hash(caller, key)
    claimed = {
        "claimant": caller,
        "hashed": hashed,
        "fingerprint": fingerprint,
        "verb": method,
        "target": path,
    }
    inserted = (await db.execute(_CLAIM, claimed)).scalar_one_or_none()
    if inserted is not None:
        return None
    record = (
        await db.execute(
            select(IdempotencyRecord).where(
                col(IdempotencyRecord.caller) == caller, col(IdempotencyRecord.key_hash) == hashed
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
        body=open_response(keyring, caller=caller, key=key, sealed=record.response_body),
        content_type=record.response_content_type or "application/json",
    )


async def save_response(
    db: AsyncSession, *, keyring: Keyring, caller: str, key: str, response: StoredResponse
) -> None:
    sealed = seal_response(keyring, caller=caller, key=key, body=response.body)
    await db.execute(
        _SAVE,
        {
            "claimant": caller,
            "hashed": key_hash(caller, key),
            "status": response.status,
            "sealed": sealed,
            "content_type": response.content_type,
        },
    )


# Every POST with a key sends both, so they are built once, on the table itself: a statement
# built per request was walked for its cache key each time, and the ORM's insert path cost
# more than the statement (a fifth of an idempotent POST's CPU went to these two). Their
# parameters are not named as columns: SQLAlchemy keeps those names for VALUES and SET.
_RECORDS = IdempotencyRecord.metadata.tables[IdempotencyRecord.__tablename__]
_CLAIM = (
    insert(_RECORDS)
    .values(
        caller=bindparam("claimant"),
        key_hash=bindparam("hashed"),
        request_hash=bindparam("fingerprint"),
        method=bindparam("verb"),
        path=bindparam("target"),
    )
    .on_conflict_do_nothing(constraint="uq_idempotency_keys_caller_key_hash")
    .returning(_RECORDS.c.id)
)
_SAVE = (
    update(_RECORDS)
    .where(_RECORDS.c.caller == bindparam("claimant"), _RECORDS.c.key_hash == bindparam("hashed"))
    .values(
        response_status=bindparam("status"),
        response_body=bindparam("sealed"),
        response_content_type=bindparam("content_type"),
    )
)
