"""The Stripe client and the rules every call to Stripe follows.

- One `StripeClient` per process, on the SDK's httpx client, pointed at STRIPE_API_BASE (the
  real API, or a stub in tests), with the SDK's retries (and backoff) for reads.
- Every write carries an idempotency key built from our ids and the step
  (`ensemble:invoice:{id}:finalize`), never a random one.
- Stripe saves the result of a keyed request for 24 hours, errors included, and answers a
  replay with the header `Idempotent-Replayed: true`
  (https://docs.stripe.com/api/idempotent_requests). So re-sending a key whose earlier attempt
  failed only replays the failure. `call_once` therefore probes each key once, without the
  SDK's retries: a replayed failure means that attempt is over (and the lookup the caller made
  just before saw its effect, if it had any), so the next key of the step's series is used
  (`...:finalize`, `...:finalize:2`, ...). Only when the probe got no answer at all is the same
  key retried (the SDK's backoff), which replays what Stripe did instead of repeating it.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

import httpx
import stripe

from service.core.settings import Settings

T = TypeVar("T")

NETWORK_RETRIES = 2
TIMEOUT = httpx.Timeout(30.0, connect=5.0)
# Each failed attempt of a step adds at most one key to its series within Stripe's 24 hours.
MAX_KEYS_PER_STEP = 20
# Retrying one request under one key (409 in flight, 429, no answer): the first wait, the
# longest, how many attempts at most, and how long all of them may take together (seconds).
RETRY_FIRST = 0.5
RETRY_MAX = 8.0
MAX_ATTEMPTS = 6
RETRY_DEADLINE = 30.0


class StripeStepFailed(Exception):
    """A step of a push could not be completed; the push is left to resume later."""

    def __init__(self, step: str, message: str, *, maybe_done: bool = False) -> None:
        super().__init__(f"{step}: {message}")
        self.step = step
        self.message = message
        # An attempt got no answer, or met its key still in flight: Stripe may have acted.
        self.maybe_done = maybe_done


def make_client(
    settings: Settings,
    *,
    timeout: httpx.Timeout = TIMEOUT,
    max_network_retries: int = NETWORK_RETRIES,
) -> stripe.StripeClient | None:
    """The client for STRIPE_API_KEY, or None when Stripe is not configured."""
    if settings.stripe_api_key is None:
        return None
    return stripe.StripeClient(
        settings.stripe_api_key.get_secret_value(),
        base_addresses={"api": settings.stripe_api_base.rstrip("/")},
        http_client=stripe.HTTPXClient(timeout=timeout),
        max_network_retries=max_network_retries,
    )


def idempotency_key(*parts: object) -> str:
    """`ensemble:invoice:<id>:finalize` from ("invoice", id, "finalize")."""
    return ":".join(["ensemble", *(str(part) for part in parts)])


def _is_settled_failure(error: stripe.StripeError) -> bool:
    """Stripe replayed the saved failure of an earlier attempt under this key, or refused the
    key because it was first used with other parameters: either way the key can never succeed."""
    if isinstance(error, stripe.IdempotencyError):
        return True
    headers = {str(k).lower(): str(v) for k, v in (error.headers or {}).items()}
    return headers.get("idempotent-replayed") == "true"


async def call_once(
    step: str, key: str, call: Callable[[stripe.RequestOptions], Awaitable[T]]
) -> T:
    """Run one write under the step's key series (see the module docstring). Only for a step
    whose effect a lookup has just shown to be absent."""
    errors: list[stripe.StripeError] = []
    for n in range(1, MAX_KEYS_PER_STEP + 1):
        options: stripe.RequestOptions = {"idempotency_key": key if n == 1 else f"{key}:{n}"}
        try:
            return await with_backoff(_bound(call, {**options, "max_network_retries": 0}), errors)
        except stripe.StripeError as error:
            if _is_settled_failure(error) and not _is_transient(error):
                continue
            maybe_done = any(_is_transient(e) and e.http_status != 429 for e in errors)
            raise StripeStepFailed(step, describe(error), maybe_done=maybe_done) from error
    raise StripeStepFailed(step, f"{MAX_KEYS_PER_STEP} attempts failed within Stripe's 24 hours")


def _bound(
    call: Callable[[stripe.RequestOptions], Awaitable[T]], options: stripe.RequestOptions
) -> Callable[[], Awaitable[T]]:
    return lambda: call(options)


async def with_backoff(
    attempt: Callable[[], Awaitable[T]], errors: list[stripe.StripeError] | None = None
) -> T:
    """`attempt` again while Stripe answers that nothing happened yet (409 in flight, 429) or
    gave no answer, waiting longer each time, within MAX_ATTEMPTS and RETRY_DEADLINE. Every
    error met is added to `errors`."""
    deadline = time.monotonic() + RETRY_DEADLINE
    delay = RETRY_FIRST
    for attempts in range(1, MAX_ATTEMPTS + 1):
        try:
            return await attempt()
        except stripe.StripeError as error:
            if errors is not None:
                errors.append(error)
            wait = _retry_after(error, delay)
            last = attempts == MAX_ATTEMPTS or time.monotonic() + wait > deadline
            if last or not _is_transient(error):
                raise
        await asyncio.sleep(wait)
        delay = min(delay * 2, RETRY_MAX)
    raise AssertionError("unreachable")  # pragma: no cover


def _is_transient(error: stripe.StripeError) -> bool:
    """No answer (Stripe may have acted: the same key replays it), a request under the same
    key still in flight (409), or a rate limit (429): Stripe saved nothing under the key."""
    return isinstance(error, stripe.APIConnectionError) or error.http_status in (409, 429)


def _retry_after(error: stripe.StripeError, delay: float) -> float:
    """Stripe's `Retry-After` when it gives one, else the backoff with jitter."""
    headers = {str(k).lower(): str(v) for k, v in (error.headers or {}).items()}
    try:
        return min(float(headers["retry-after"]), RETRY_MAX)
    except (KeyError, ValueError):
        return delay * random.uniform(0.5, 1.0)  # noqa: S311 (jitter, not a secret)


def describe(error: stripe.StripeError) -> str:
    """A short, secret-free account of a Stripe error for the audit trail."""
    if isinstance(error, stripe.APIConnectionError):
        return "no answer from Stripe (connection failed, dropped or timed out)"
    status = error.http_status or "?"
    return f"Stripe answered {status}: {error.user_message or 'no message'}"[:500]
