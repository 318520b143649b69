"""Sending the outbox: signed per Standard Webhooks, retried on a schedule, never twice at once.

A pass claims due deliveries with `FOR UPDATE SKIP LOCKED` in a short transaction that raises
each one's attempt count and pushes its due time out by a lease, then sends with no transaction
open, then records results (in batches) only for the attempt it claimed. So two deliverers never
send one delivery at the same time, and a deliverer killed mid-send leaves the delivery to be
retried when the lease runs out — with the same `webhook-id`, which receivers deduplicate on.

Each endpoint gets at most a few attempts in flight, so one slow or dead endpoint holds only its
own slots and never delays the others. A pass also holds up to three times as many claimed
deliveries per endpoint queued behind those in flight, so a finished attempt's slot is taken at
once while results are recorded and more is claimed, and one transaction serves several
attempts; a queued delivery not started soon enough for its attempt to end within the lease is
given back unsent instead.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import hmac
import json
import logging
import random
import time
import uuid
from collections import Counter, deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import httpx
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from models.base import utcnow
from service.core import metrics
from service.core.db import transaction
from service.core.encryption import DecryptionFailed, Keyring
from service.integrations import address_guard
from service.integrations.webhook_endpoints import open_secret, webhook_id

log = logging.getLogger(__name__)

TIMEOUT = httpx.Timeout(connect=5.0, read=10.0, write=10.0, pool=5.0)
# The whole attempt (connect, send, the whole answer) ends by then: a receiver that answers a
# byte at a time cannot outlast the lease and be sent the same delivery twice at once.
ATTEMPT_DEADLINE = 15.0
# While attempts are in flight, a pass looks for newly due deliveries at least this often (a
# new event is also a wake-up), so slow endpoints never hold up the others' events.
POLL_WHILE_SENDING = 1.0
# Longer than START_WITHIN plus any attempt can take with TIMEOUT, so a live sender always
# records first.
LEASE = timedelta(seconds=60)
MAX_IN_FLIGHT = 64
PER_ENDPOINT = 8  # the default of ENSEMBLE_WEBHOOK_SLOTS_PER_ENDPOINT
# Claimed ahead and queued per endpoint, behind the attempts in flight (and in all, as many per
# MAX_IN_FLIGHT). `bench/webhooks.py` to one endpoint: 1 x PER_ENDPOINT took 0.29 transactions
# per event, 3 x 0.18 and a fifth more events/s.
AHEAD_PER_SLOT = 3
# A queued delivery starts only this soon after its claim, so that its attempt too ends within
# the lease; later, it is given back unsent.
START_WITHIN = timedelta(seconds=20)
EXCERPT = 500
JITTER = 0.1  # each retry waits its scheduled delay ±10%, so retries of a burst spread out

_CLAIM = text(
    """
    WITH flying AS (
        SELECT * FROM unnest(CAST(:flying AS uuid[]), CAST(:flying_n AS int[]))
            AS f(endpoint_id, n)
    ), candidate AS (
        SELECT id, endpoint_id, next_attempt_at FROM webhook_deliveries
        WHERE status = 'pending' AND next_attempt_at <= statement_timestamp()
          AND NOT (endpoint_id = ANY(CAST(:busy AS uuid[])))
        ORDER BY next_attempt_at
        LIMIT :scan
    ), ranked AS (
        SELECT c.id,
               row_number() OVER (PARTITION BY c.endpoint_id ORDER BY c.next_attempt_at, c.id)
               + coalesce(f.n, 0) AS n
        FROM candidate AS c LEFT JOIN flying AS f ON f.endpoint_id = c.endpoint_id
    ), claimable AS (
        SELECT d.id, d.next_attempt_at AS due_at FROM webhook_deliveries AS d
        JOIN ranked ON ranked.id = d.id
        WHERE ranked.n <= :per_endpoint
          AND d.status = 'pending' AND d.next_attempt_at <= statement_timestamp()
        ORDER BY d.next_attempt_at, d.id
        LIMIT :limit
        FOR UPDATE OF d SKIP LOCKED
    )
    UPDATE webhook_deliveries AS d
    SET attempt_count = d.attempt_count + 1,
        next_attempt_at = statement_timestamp() + make_interval(secs => :lease)
    FROM claimable, webhook_events AS e, webhook_endpoints AS p
    WHERE d.id = claimable.id AND e.id = d.event_id AND p.id = d.endpoint_id
    RETURNING d.id, d.attempt_count, d.endpoint_id, p.url, p.secret, p.previous_secret,
              p.previous_secret_expires_at, e.type, e.created_at, e.data,
              claimable.due_at,
              extract(epoch FROM statement_timestamp() - claimable.due_at) AS lag,
              (SELECT count(*) FROM candidate) AS scanned,
              (SELECT count(*) FROM webhook_endpoints WHERE deleted_at IS NULL) AS endpoints
    """
)

# Results apply only to the attempt that was claimed: a delivery whose lease ran out and was
# claimed again belongs to the newer attempt.
_RECORD = text(
    """
    WITH result AS (
        SELECT * FROM jsonb_to_recordset(CAST(:results AS jsonb)) AS r(
            delivery_id uuid, attempt int, attempted_at timestamptz, duration_ms int,
            status_code int, error text, excerpt text, status text, next_attempt_at timestamptz)
    ), updated AS (
        UPDATE webhook_deliveries AS d
        SET status = result.status,
            next_attempt_at = result.next_attempt_at,
            last_status_code = result.status_code,
            last_error = result.error,
            delivered_at = CASE WHEN result.status = 'succeeded' THEN now() END
        FROM result
        WHERE d.id = result.delivery_id AND d.attempt_count = result.attempt
          AND d.status = 'pending'
        RETURNING d.id
    )
    INSERT INTO webhook_attempts (id, delivery_id, attempt, attempted_at, duration_ms,
                                  status_code, error, response_excerpt, next_attempt_at)
    SELECT gen_random_uuid(), result.delivery_id, result.attempt, result.attempted_at,
           result.duration_ms, result.status_code, result.error, result.excerpt,
           result.next_attempt_at
    FROM result
    ON CONFLICT (delivery_id, attempt) DO NOTHING
    """
)


# A queued delivery that was never sent goes back as it was before its claim (unless its lease
# already ran out and another deliverer claimed it again).
_GIVE_BACK = text(
    """
    UPDATE webhook_deliveries AS d
    SET attempt_count = d.attempt_count - 1, next_attempt_at = r.due_at
    FROM jsonb_to_recordset(CAST(:unsent AS jsonb))
        AS r(delivery_id uuid, attempt int, due_at timestamptz)
    WHERE d.id = r.delivery_id AND d.attempt_count = r.attempt AND d.status = 'pending'
    """
)


def sign(secret: str, msg_id: str, timestamp: int, body: bytes) -> str:
    """`v1,<base64 HMAC-SHA256>` of `{id}.{timestamp}.{body}` (Standard Webhooks, "Signature
    scheme"); the key is the base64 part of `whsec_...`."""
    key = base64.b64decode(secret.removeprefix("whsec_"))
    signed = f"{msg_id}.{timestamp}.".encode() + body
    return "v1," + base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode()


def signed_headers(
    secrets: Sequence[str], msg_id: str, timestamp: int, body: bytes
) -> dict[str, str]:
    """The headers of one attempt, signed with each secret (two while a rotation overlaps)."""
    return {
        "content-type": "application/json",
        "user-agent": "Ensemble-Webhooks/1",
        "webhook-id": msg_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": " ".join(sign(secret, msg_id, timestamp, body) for secret in secrets),
    }


@dataclass(frozen=True)
class Claimed:
    delivery_id: uuid.UUID
    attempt: int
    endpoint_id: uuid.UUID
    url: str
    sealed_secrets: tuple[str, ...]  # as stored (encrypted); opened just before signing
    body: bytes
    due_at: datetime  # before the claim, to give it back unsent
    claimed_at: float  # time.monotonic() just before the claim


@dataclass(frozen=True)
class Result:
    claimed: Claimed
    attempted_at: datetime
    duration_ms: int
    status_code: int | None
    error: str | None
    excerpt: str | None

    @property
    def ok(self) -> bool:
        return self.status_code is not None and 200 <= self.status_code < 300


@dataclass
class DeliveryReport:
    sent: int = 0
    retried: int = 0
    failed: int = 0

    def as_dict(self) -> dict[str, int]:
        return {"sent": self.sent, "retried": self.retried, "failed": self.failed}


@dataclass
class _Pass:
    """What one pass holds: attempts in flight and claimed deliveries queued behind them, per
    endpoint; results and unsent deliveries not recorded yet."""

    in_flight: dict[asyncio.Task[Result], uuid.UUID] = field(default_factory=dict)
    per_endpoint: Counter[uuid.UUID] = field(default_factory=Counter)
    queued: dict[uuid.UUID, deque[Claimed]] = field(default_factory=dict)
    finished: list[Result] = field(default_factory=list)
    unsent: list[Claimed] = field(default_factory=list)
    error: BaseException | None = None
    changed: asyncio.Event = field(default_factory=asyncio.Event)

    def held(self) -> Counter[uuid.UUID]:
        """Claimed and not recorded yet, per endpoint."""
        held = Counter({e: n for e, n in self.per_endpoint.items() if n > 0})
        held.update({e: len(q) for e, q in self.queued.items() if q})
        return held


def body_of(event_type: str, created_at: datetime, data: dict[str, Any]) -> bytes:
    payload = {"type": event_type, "timestamp": created_at.isoformat(), "data": data}
    return json.dumps(payload, separators=(",", ":")).encode()


class Deliverer:
    """Delivers what is due. One per scheduler process; `deliver_due` is the job."""

    def __init__(
        self,
        session_factory: async_sessionmaker[AsyncSession],
        *,
        allow_private: bool,
        retry_delays: tuple[timedelta, ...],
        keyring: Keyring,
        client: httpx.AsyncClient | None = None,
        attempt_deadline: float = ATTEMPT_DEADLINE,
        per_endpoint: int = PER_ENDPOINT,
    ) -> None:
        # At most `per_endpoint` attempts in flight to one endpoint, and as many again times
        # AHEAD_PER_SLOT claimed and queued behind them; in all, claimed and not recorded:
        self._per_endpoint = per_endpoint
        self._ahead = AHEAD_PER_SLOT * per_endpoint
        self._most_held = MAX_IN_FLIGHT + self._ahead * MAX_IN_FLIGHT // per_endpoint
        self._factory = session_factory
        self._keyring = keyring  # opens the endpoints' signing secrets
        self._delays = retry_delays
        self._attempt_deadline = attempt_deadline
        self._run: _Pass | None = None
        self._client = client or address_guard.webhook_client(
            allow_private=allow_private, timeout=TIMEOUT
        )
        self._lock = asyncio.Lock()
        self._stopping = False

    async def aclose(self) -> None:
        await self._client.aclose()

    def stop_claiming(self) -> None:
        """For a process about to stop: a pass now finishes the attempts in flight, records
        them, gives back what it claimed ahead, and ends; later passes claim nothing."""
        self._stopping = True

    def poke(self) -> None:
        """New deliveries may be due: a pass under way claims them now, between its sends."""
        if self._run is not None:
            self._run.changed.set()

    async def deliver_due(self) -> DeliveryReport:
        """Send everything due now and anything that becomes due while sending; return when
        nothing due is left and every attempt started here is recorded."""
        async with self._lock:  # one pass per process at a time; other processes: SKIP LOCKED
            return await self._pass()

    async def _pass(self) -> DeliveryReport:
        report = DeliveryReport()
        run = self._run = _Pass()
        try:
            while True:
                if run.error is not None:
                    raise run.error
                finished, run.finished = run.finished, []
                unsent, run.unsent = run.unsent, []
                for item in await self._record_and_claim(finished, unsent, report, run.held()):
                    run.queued.setdefault(item.endpoint_id, deque()).append(item)
                self._start(run)
                if not (run.in_flight or run.finished or run.unsent or run.error):
                    return report
                run.changed.clear()
                if not (run.finished or run.unsent or run.error):
                    with contextlib.suppress(TimeoutError):
                        async with asyncio.timeout(POLL_WHILE_SENDING):
                            await run.changed.wait()
        finally:
            self._run = None
            for task in run.in_flight:
                task.cancel()

    def _start(self, run: _Pass) -> None:
        """Start queued deliveries while their endpoints (and the pass) have free slots; one
        that waited past START_WITHIN, or any once the deliverer stops claiming, goes back."""
        for endpoint_id, queue in run.queued.items():
            if self._stopping:
                run.unsent.extend(queue)
                queue.clear()
            while (
                queue
                and run.per_endpoint[endpoint_id] < self._per_endpoint
                and len(run.in_flight) < MAX_IN_FLIGHT
            ):
                item = queue.popleft()
                if time.monotonic() - item.claimed_at > START_WITHIN.total_seconds():
                    run.unsent.append(item)
                    continue
                task = asyncio.create_task(self._attempt(item))
                run.in_flight[task] = endpoint_id
                run.per_endpoint[endpoint_id] += 1
                task.add_done_callback(lambda task: self._finished(run, task))

    def _finished(self, run: _Pass, task: asyncio.Task[Result]) -> None:
        """An attempt ended: its slot goes to the next queued delivery at once."""
        run.per_endpoint[run.in_flight.pop(task)] -= 1
        if task.cancelled():
            return
        if (error := task.exception()) is not None:
            run.error = run.error or error
        else:
            run.finished.append(task.result())
            self._start(run)
        run.changed.set()

    async def _record_and_claim(
        self,
        finished: list[Result],
        unsent: list[Claimed],
        report: DeliveryReport,
        held: Counter[uuid.UUID],
    ) -> list[Claimed]:
        """Record `finished`, give back `unsent`, and claim what the free places take (up to
        the per-endpoint slots and as many again times AHEAD_PER_SLOT held per endpoint), in
        one transaction.

        A claim looks at the oldest due deliveries only (4 per free place). When that filled an
        endpoint's places, more was due than it looked at, and other endpoints exist, it claims
        again without the full ones: another endpoint's deliveries may be next."""
        if not (finished or unsent) and sum(held.values()) >= self._most_held:
            return []
        claimed: list[Claimed] = []
        async with transaction(self._factory) as db:
            if finished:
                await self._record(db, finished, report)
            if unsent:
                await db.execute(_GIVE_BACK, {"unsent": json.dumps([_unsent(c) for c in unsent])})
            while not self._stopping and (free := self._most_held - sum(held.values())) > 0:
                batch, others_may_be_due = await self._claim(db, free, held)
                claimed += batch
                held.update(item.endpoint_id for item in batch)
                if len(batch) >= free or not others_may_be_due:
                    break
        return claimed

    async def _claim(
        self, db: AsyncSession, limit: int, held: Counter[uuid.UUID]
    ) -> tuple[list[Claimed], bool]:
        """Up to `limit` due deliveries, never more than the slots and the queue per endpoint
        counting `held`; and whether another endpoint may have due deliveries it did not see."""
        scan = limit * 4
        per_endpoint = self._per_endpoint + self._ahead
        full = [e for e, n in held.items() if n >= per_endpoint]
        claimed_at = time.monotonic()
        rows = (
            await db.execute(
                _CLAIM,
                {
                    "busy": full,
                    "flying": list(held),
                    "flying_n": list(held.values()),
                    "scan": scan,
                    "per_endpoint": per_endpoint,
                    "limit": limit,
                    "lease": LEASE.total_seconds(),
                },
            )
        ).all()
        metrics.OUTBOX_LAG.set(max((float(r.lag) for r in rows), default=0.0))
        now = utcnow()
        claimed = [
            Claimed(
                delivery_id=r.id,
                attempt=r.attempt_count,
                endpoint_id=r.endpoint_id,
                url=r.url,
                sealed_secrets=(r.secret,)
                + (
                    (r.previous_secret,)
                    if r.previous_secret and r.previous_secret_expires_at > now
                    else ()
                ),
                body=body_of(r.type, r.created_at, r.data),
                due_at=r.due_at,
                claimed_at=claimed_at,
            )
            for r in rows
        ]
        if not rows or rows[0].scanned < scan:
            return claimed, False  # it saw every due delivery of the endpoints not full
        counts = Counter(item.endpoint_id for item in claimed)
        now_full = {e for e, n in counts.items() if held[e] + n >= per_endpoint}
        return claimed, bool(now_full) and rows[0].endpoints > len(now_full) + len(full)

    async def _attempt(self, claimed: Claimed) -> Result:
        msg_id = webhook_id(claimed.delivery_id)
        attempted_at = utcnow()
        timestamp = int(attempted_at.timestamp())
        try:
            secrets = [
                open_secret(self._keyring, claimed.endpoint_id, sealed)
                for sealed in claimed.sealed_secrets
            ]
        except DecryptionFailed as exc:
            # Only this endpoint's deliveries suffer (e.g. its key was removed from
            # ENSEMBLE_SECRET_KEY too soon); the delivery log says why, nothing is sent.
            unusable = f"signing secret cannot be decrypted: {exc}"[:EXCERPT]
            return Result(claimed, attempted_at, 0, None, unusable, None)
        headers = signed_headers(secrets, msg_id, timestamp, claimed.body)
        started = time.perf_counter()
        status_code: int | None = None
        error: str | None = None
        excerpt: str | None = None
        try:
            async with (
                asyncio.timeout(self._attempt_deadline),
                self._client.stream(
                    "POST", claimed.url, content=claimed.body, headers=headers
                ) as response,
            ):
                status_code = response.status_code
                excerpt = await _excerpt(response)
            if not 200 <= status_code < 300:
                error = f"answered {status_code}"
        except TimeoutError:
            deadline = f"{self._attempt_deadline:g} s"
            status_code, error = None, f"timed out (no whole answer within {deadline})"
        except httpx.TimeoutException as exc:
            error = f"timed out ({type(exc).__name__})"
        except httpx.HTTPError as exc:
            error = f"{type(exc).__name__}: {exc}"[:EXCERPT]
        duration = time.perf_counter() - started
        metrics.WEBHOOK_DURATION.observe(duration)
        return Result(claimed, attempted_at, round(duration * 1000), status_code, error, excerpt)

    def _next_attempt(self, attempt: int) -> datetime | None:
        """When to try again after failed attempt number `attempt`; None when it is the last."""
        if attempt > len(self._delays):
            return None
        delay = self._delays[attempt - 1].total_seconds()
        return utcnow() + timedelta(seconds=delay * random.uniform(1 - JITTER, 1 + JITTER))  # noqa: S311

    async def _record(
        self, db: AsyncSession, results: list[Result], report: DeliveryReport
    ) -> None:
        rows = []
        for result in results:
            next_at = None if result.ok else self._next_attempt(result.claimed.attempt)
            status = "succeeded" if result.ok else ("pending" if next_at else "failed")
            outcome = {"succeeded": "sent", "pending": "retried", "failed": "failed"}[status]
            setattr(report, outcome, getattr(report, outcome) + 1)
            metrics.WEBHOOK_DELIVERIES.labels(outcome).inc()
            rows.append(
                {
                    "delivery_id": str(result.claimed.delivery_id),
                    "attempt": result.claimed.attempt,
                    "attempted_at": result.attempted_at.isoformat(),
                    "duration_ms": result.duration_ms,
                    "status_code": result.status_code,
                    "error": result.error,
                    "excerpt": result.excerpt,
                    "status": status,
                    "next_attempt_at": next_at.isoformat() if next_at else None,
                }
            )
        await db.execute(_RECORD, {"results": json.dumps(rows)})


def _unsent(claimed: Claimed) -> dict[str, Any]:
    return {
        "delivery_id": str(claimed.delivery_id),
        "attempt": claimed.attempt,
        "due_at": claimed.due_at.isoformat(),
    }


async def _excerpt(response: httpx.Response) -> str | None:
    """The start of the answer, for the delivery log; the rest is never read."""
    kept = b""
    async for chunk in response.aiter_raw():
        kept += chunk
        if len(kept) >= EXCERPT:
            break
    return kept[:EXCERPT].decode("utf-8", "replace").replace("\x00", "") or None
