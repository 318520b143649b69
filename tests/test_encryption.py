"""Secrets at rest (service/core/encryption.py) and log redaction (service/core/log_redaction)."""

from __future__ import annotations

import logging
import uuid
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
from pydantic import ValidationError
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

from service.core import encryption, log_redaction
from service.core.encryption import DecryptionFailed, Keyring, key_id
from service.core.settings import Settings
from service.integrations import webhook_endpoints
from service.integrations.webhook_delivery import Deliverer
from tests.programs_support import make_program
from tests.support import Api, ok
from tests.webhook_receiver import Receiver
from tests.webhooks_support import deliveries, subscribe

OLD = "old-key-" + "o" * 40
NEW = "new-key-" + "n" * 40


def test_a_ciphertext_names_its_key_and_opens_to_the_plaintext():
    keyring = Keyring((NEW,))
    sealed = keyring.encrypt("webhook-signing-secret", b"whsec_abc", aad=b"row-1")
    version, kid, payload = sealed.split(":")
    assert (version, kid) == ("enc1", key_id(NEW))
    assert b"whsec_abc" not in payload.encode()
    assert keyring.decrypt("webhook-signing-secret", sealed, aad=b"row-1") == b"whsec_abc"


def test_the_same_plaintext_encrypts_differently_each_time():
    keyring = Keyring((NEW,))
    assert keyring.encrypt("p", b"same") != keyring.encrypt("p", b"same")


def test_after_rotation_old_ciphertexts_still_open_and_new_ones_use_the_new_key():
    before = Keyring((OLD,)).encrypt_text("p", "secret one", aad=b"row")
    rotated = Keyring((NEW, OLD))
    assert rotated.decrypt_text("p", before, aad=b"row") == "secret one"
    after = rotated.encrypt_text("p", "secret two", aad=b"row")
    assert after.split(":")[1] == key_id(NEW)
    assert Keyring((NEW,)).decrypt_text("p", after, aad=b"row") == "secret two"


def test_once_the_old_key_is_removed_its_ciphertexts_fail_with_a_clear_error():
    before = Keyring((OLD,)).encrypt_text("p", "secret", aad=b"row")
    with pytest.raises(DecryptionFailed) as failed:
        Keyring((NEW,)).decrypt_text("p", before, aad=b"row")
    assert str(failed.value) == (
        f"encrypted with key {key_id(OLD)}, which ENSEMBLE_SECRET_KEY no longer lists "
        f"(it lists {key_id(NEW)}); add that key back after the first one"
    )


def test_a_tampered_ciphertext_fails_to_decrypt():
    keyring = Keyring((NEW,))
    sealed = keyring.encrypt("p", b"secret", aad=b"row")
    head, payload = sealed.rsplit(":", 1)
    flipped = payload[:-6] + ("A" if payload[-6] != "A" else "B") + payload[-5:]
    with pytest.raises(DecryptionFailed, match="does not authenticate"):
        keyring.decrypt("p", f"{head}:{flipped}", aad=b"row")


@pytest.mark.parametrize(
    "change",
    [
        {"purpose": "another-purpose"},
        {"aad": b"another-row"},
        {"context": b"another-idempotency-key"},
    ],
)
def test_a_ciphertext_opens_only_for_its_purpose_row_and_context(change: dict[str, object]):
    keyring = Keyring((NEW,))
    sealed = keyring.encrypt("p", b"secret", aad=b"row", context=b"key-1")
    args: dict[str, object] = {"purpose": "p", "aad": b"row", "context": b"key-1", **change}
    with pytest.raises(DecryptionFailed, match="does not authenticate"):
        keyring.decrypt(args.pop("purpose"), sealed, **args)  # type: ignore[arg-type]


def test_text_that_is_not_a_ciphertext_is_refused():
    with pytest.raises(DecryptionFailed, match="not a ciphertext"):
        Keyring((NEW,)).decrypt("p", "whsec_plaintext")


def test_the_settings_take_comma_separated_keys_newest_first():
    settings = Settings(secret_key=f"{NEW}, {OLD}")
    assert encryption.keyring(settings).primary_id == key_id(NEW)
    assert not encryption.uses_development_key(settings)


def test_without_a_key_development_uses_the_development_only_key():
    settings = Settings(secret_key=None)
    assert encryption.uses_development_key(settings)
    assert encryption.keyring(settings).primary_id == key_id(encryption.DEVELOPMENT_ONLY_KEY)


@pytest.mark.parametrize(
    ("value", "message"),
    [
        (
            f"{NEW},too-short",
            "key 2 of 2 has 9 characters; each comma-separated key needs at least 32",
        ),
        (f"{NEW},", "key 2 of 2 has 0 characters"),
        (f"{NEW},{NEW}", "lists the same key twice"),
    ],
)
def test_an_unusable_secret_key_is_refused_without_echoing_it(value: str, message: str):
    with pytest.raises(ValidationError) as refused:
        Settings(secret_key=value)
    assert message in str(refused.value)
    assert "n" * 40 not in str(refused.value)


@pytest.mark.parametrize(
    ("logged", "expected"),
    [
        (
            "GET /v1/calendar/cal_Q2FsZW5kYXJ0b2tlbg-_x.ics?alarm=1 HTTP/1.1",
            "GET /v1/calendar/[REDACTED].ics?alarm=1 HTTP/1.1",
        ),
        ("GET /v1/calendar/anything HTTP/1.1", "GET /v1/calendar/[REDACTED] HTTP/1.1"),
        (
            "headers {'authorization': 'Bearer ens_abc123def456', 'accept': '*/*'}",
            "headers {'authorization': '[REDACTED]', 'accept': '*/*'}",
        ),
        ("Authorization: Token abcdefgh123", "Authorization: [REDACTED]"),
        ("sent Bearer abcdefghijkl", "sent Bearer [REDACTED]"),
        ("key ens_Abc123456789xyz minted", "key ens_[REDACTED] minted"),
        ("secret whsec_AAAA/+BBBB== rotated", "secret whsec_[REDACTED] rotated"),
        ("stripe sk_test_abcdefgh12345", "stripe sk_test_[REDACTED]"),
        ("GET /v1/calendar-feeds/42 HTTP/1.1", "GET /v1/calendar-feeds/42 HTTP/1.1"),
        ("a basic plan for ens_ keys", "a basic plan for ens_ keys"),
    ],
)
def test_logged_text_loses_its_credentials(logged: str, expected: str):
    assert log_redaction.redact(logged) == expected


class Capture(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@contextmanager
def captured(*names: str) -> Iterator[Capture]:
    """Every record of these loggers from INFO up, whatever an earlier test configured."""
    capture = Capture()
    loggers = [logging.getLogger(name) for name in names]
    saved = [(lg.handlers, lg.level, lg.disabled) for lg in loggers]
    for logger in loggers:
        logger.handlers, logger.disabled = [capture], False
        logger.setLevel(logging.INFO)
    try:
        yield capture
    finally:
        for logger, (handlers, level, disabled) in zip(loggers, saved, strict=True):
            logger.handlers, logger.disabled = handlers, disabled
            logger.setLevel(level)


def test_every_log_record_is_redacted_in_its_message_and_arguments():
    log_redaction.install()
    log_redaction.install()  # twice is once
    with captured("uvicorn.access", "ensemble") as capture:
        logging.getLogger("uvicorn.access").info(
            '%s - "%s %s HTTP/%s" %d',
            "127.0.0.1:5000",
            "GET",
            "/v1/calendar/cal_secretfeedtoken123.ics",
            "1.1",
            200,
        )
        logging.getLogger("ensemble").info("minted ens_secretapikey12345")
    assert [r.getMessage() for r in capture.records] == [
        '127.0.0.1:5000 - "GET /v1/calendar/[REDACTED].ics HTTP/1.1" 200',
        "minted ens_[REDACTED]",
    ]
    assert capture.records[0].args == (
        "127.0.0.1:5000",
        "GET",
        "/v1/calendar/[REDACTED].ics",
        "1.1",
        200,
    )


def test_a_logged_traceback_is_redacted_too():
    log_redaction.install()
    with captured("ensemble") as capture:
        try:
            raise RuntimeError("refused Authorization: Bearer ens_secretapikey12345")
        except RuntimeError:
            logging.getLogger("ensemble").exception("request failed")
    written = logging.Formatter("%(message)s").format(capture.records[0])
    assert written.startswith("request failed\nTraceback (most recent call last):")
    assert written.endswith("RuntimeError: refused Authorization: [REDACTED]")
    assert "secretapikey" not in written


async def test_a_signing_secret_the_keys_cannot_open_fails_only_its_own_deliveries(
    api: Api, receiver: Receiver, deliverer: Deliverer, db: AsyncSession
) -> None:
    good = await subscribe(api, receiver, ["program.requested"])
    orphan = ok(
        await api.client.post(
            "/v1/webhook-endpoints",
            json={"url": "http://127.0.0.1:9/never-sent", "events": ["program.requested"]},
            headers=api.admin,
        ),
        201,
    )
    # As if its secret had been encrypted with a key since removed from ENSEMBLE_SECRET_KEY.
    removed = Keyring((OLD,))
    orphan_id = uuid.UUID(orphan["id"])
    await db.execute(
        text("UPDATE webhook_endpoints SET secret = :sealed WHERE id = :id"),
        {
            "id": orphan_id,
            "sealed": webhook_endpoints.seal_secret(removed, orphan_id, orphan["secret"]),
        },
    )
    await db.commit()
    await make_program(api, await api.make_org(), await api.make_offering())

    report = await deliverer.deliver_due()

    assert report.as_dict() == {"sent": 1, "retried": 3, "failed": 1}
    assert [r.verified for r in receiver.accepted()] == [True]
    [good_delivery] = await deliveries(api, good["id"])
    [failed] = await deliveries(api, orphan["id"])
    assert (good_delivery["status"], failed["status"]) == ("succeeded", "failed")
    assert {a["error"] for a in failed["attempts"]} == {
        f"signing secret cannot be decrypted: encrypted with key {key_id(OLD)}, which "
        f"ENSEMBLE_SECRET_KEY no longer lists (it lists {encryption.keyring(Settings()).primary_id}"
        "); add that key back after the first one"
    }
    assert {a["status_code"] for a in failed["attempts"]} == {None}
