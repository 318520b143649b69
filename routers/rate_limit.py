"""Rate limits, per API key and, per client address, for requests without a key and for keys
that fail (two counters: an anonymous flood never stops a client with a good key); counted in a
store every replica shares (Redis through the `limits` library).

Every limited response carries the IETF draft's `RateLimit-Limit`, `RateLimit-Remaining` and
`RateLimit-Reset` (seconds); a request over the limit is a 429 problem+json with
`Retry-After`, answered before its body is read or the database is touched. A failed key
(401) counts against its address, so guessing keys is slowed like any anonymous traffic.
When the store cannot be reached, requests go through unlimited (a warning in the log, at most
one a minute, and `ensemble_rate_limit_store_failures_total`), and the store is asked again
after a few seconds: the limiter never takes the API down with it.

The probes and metrics (`/healthz`, `/readyz`, `/metrics`) are not limited.

The counting is the library's fixed window (its storage, keys and expiry), asked as little as
possible: a request without a key costs the store one round trip, one with a key two (its
address's failures, then the key's count); the end of a window is learned once per window.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import math
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import cast

from limits import RateLimitItem, parse
from limits.aio.storage import Storage as AsyncStorage
from limits.storage import storage_from_string
from starlette.datastructures import Headers, MutableHeaders
from starlette.requests import cookie_parser
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from routers.portal.signin import COOKIE, SIGNIN_REFUSED
from routers.problems import problem_response
from service.core.auth import bearer_token
from service.core.errors import DomainError
from service.core.metrics import RATE_LIMIT_STORE_FAILURES
from service.core.settings import Settings

log = logging.getLogger(__name__)
UNLIMITED_PATHS = frozenset({"/healthz", "/readyz", "/metrics"})
STORE_DEADLINE = 0.5  # seconds for one call to the store
STORE_PAUSE = 5.0  # after a failure, requests go through without asking for this long
WARN_EVERY = 60.0
WINDOWS_REMEMBERED = 10_000  # window ends kept per process (forgotten all at once past it)


class TooManyRequests(DomainError):
    status, slug, title = 429, "rate-limited", "Too many requests"


@dataclass(frozen=True)
class Verdict:
    allowed: bool
    limit: int
    remaining: int
    reset: int  # seconds until the window resets

    def headers(self) -> dict[str, str]:
        return {
            "RateLimit-Limit": str(self.limit),
            "RateLimit-Remaining": str(self.remaining),
            "RateLimit-Reset": str(self.reset),
        }


class Limiter:
    """Counts hits per bucket in the shared store; None when the store is unavailable."""

    def __init__(self, settings: Settings) -> None:
        url = settings.rate_limit_storage
        # An async+ URL always makes an asyncio storage (redis-py's client: of the two the
        # library offers, the one that costs a request less).
        self._storage = cast(
            AsyncStorage,
            storage_from_string(
                url if url.startswith("async+") else f"async+{url}", implementation="redispy"
            ),
        )
        self.per_key = parse(settings.rate_limit)
        self.per_address = parse(settings.rate_limit_anonymous)
        self.prefix = settings.rate_limit_prefix
        self._paused_until = 0.0
        self._warned_at = -WARN_EVERY
        self._window_ends: dict[str, float] = {}

    async def hit(self, item: RateLimitItem, bucket: str) -> Verdict | None:
        """Count one request: one round trip to the store (its window's end is remembered)."""
        key = item.key_for(self.prefix, bucket)

        async def ask() -> Verdict:
            count = await self._storage.incr(key, item.get_expiry())
            return self._verdict(item, count, await self._window_end(item, key, count))

        return await self._asking(ask)

    async def peek(self, item: RateLimitItem, bucket: str) -> Verdict | None:
        """How a bucket stands, without counting: one round trip while it is under its limit."""
        key = item.key_for(self.prefix, bucket)

        async def ask() -> Verdict:
            count = await self._storage.get(key)
            if count < item.amount:
                return Verdict(True, item.amount, item.amount - count, 0)
            return self._verdict(item, count + 1, await self._storage.get_expiry(key))

        return await self._asking(ask)

    async def _window_end(self, item: RateLimitItem, key: str, count: int) -> float:
        """When the window of `key` ends (epoch seconds). The first hit of a window starts it
        (the store sets its expiry then), so its end is known without asking; later hits ask
        the store once per window and process, and remember the answer until it passes."""
        now = time.time()
        if count == 1:
            end = now + item.get_expiry()
        else:
            end = self._window_ends.get(key, 0.0)
            if end <= now:
                end = await self._storage.get_expiry(key)
        if len(self._window_ends) > WINDOWS_REMEMBERED:
            self._window_ends.clear()
        self._window_ends[key] = end
        return end

    @staticmethod
    def _verdict(item: RateLimitItem, count: int, window_end: float) -> Verdict:
        reset = max(math.ceil(window_end - time.time()), 0)
        return Verdict(count <= item.amount, item.amount, max(item.amount - count, 0), reset)

    async def _asking(self, ask: Callable[[], Awaitable[Verdict]]) -> Verdict | None:
        if time.monotonic() < self._paused_until:
            return None
        try:
            async with asyncio.timeout(STORE_DEADLINE):
                return await ask()
        except Exception as exc:  # any failure of the store: let the request through
            self._store_failed(exc)
            return None

    def _store_failed(self, exc: Exception) -> None:
        RATE_LIMIT_STORE_FAILURES.inc()
        self._paused_until = time.monotonic() + STORE_PAUSE
        if time.monotonic() - self._warned_at >= WARN_EVERY:
            self._warned_at = time.monotonic()
            log.warning("rate limit store unavailable (%s); requests go through unlimited", exc)


class RateLimit:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self._limiter: Limiter | None = None

    def _limiter_for(self, scope: Scope) -> Limiter | None:
        settings: Settings = scope["app"].state.settings
        if not settings.rate_limits:
            return None
        if self._limiter is None:
            self._limiter = Limiter(settings)
        return self._limiter

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        limiter = self._limiter_for(scope) if scope["type"] == "http" else None
        if limiter is None or scope["path"] in UNLIMITED_PATHS:
            await self.app(scope, receive, send)
            return
        headers = Headers(scope=scope)
        token = bearer_token(headers.get("authorization")) or _portal_session(scope, headers)
        state: dict[str, object] = scope.setdefault("state", {})  # shared with the portal
        address = (scope.get("client") or ("unknown",))[0]
        failed = f"failed:{address}"
        verdict: Verdict | None
        if token is None:
            verdict = await limiter.hit(limiter.per_address, f"anonymous:{address}")
        else:
            # A key is counted by its hash; an address whose keys keep failing is stopped
            # before the next key is even looked up.
            failures = await limiter.peek(limiter.per_address, failed)
            if failures is not None and not failures.allowed:
                verdict = failures
            else:
                verdict = await limiter.hit(limiter.per_key, "key:" + _digest(token))
        if verdict is not None and not verdict.allowed:
            refused = problem_response(
                TooManyRequests(f"Over {verdict.limit} requests; retry in {verdict.reset} s")
            )
            refused.headers.update(verdict.headers() | {"Retry-After": str(max(verdict.reset, 1))})
            await refused(scope, receive, send)
            return

        async def with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                if token is not None and (
                    message["status"] == 401 or state.get(SIGNIN_REFUSED) is True
                ):
                    await limiter.hit(limiter.per_address, failed)
                if verdict is not None:
                    MutableHeaders(scope=message).update(verdict.headers())
            await send(message)

        await self.app(scope, receive, with_headers)


def _portal_session(scope: Scope, headers: Headers) -> str | None:
    """A portal page's credential is its session cookie: counted per session like a key (a
    cookie that fails counts against its address, as a failed key does)."""
    path = scope["path"]
    if path != "/app" and not path.startswith("/app/"):
        return None
    return cookie_parser(headers.get("cookie", "")).get(COOKIE) or None


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()
