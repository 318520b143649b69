"""The migration that encrypts secrets at rest converts what an older release stored: webhook
signing secrets become ciphertexts under ENSEMBLE_SECRET_KEY, idempotency keys become hashes and
their stored responses replay only to a request carrying the same key. Ending a later key
rotation (`ensemble reencrypt-secrets`) moves the secrets to the new key."""

from __future__ import annotations

import secrets
import uuid
from collections.abc import Callable

import psycopg
import pytest
from pydantic import SecretStr

from service.core import encryption, idempotency, migrate
from service.core.settings import Settings
from service.integrations import webhook_endpoints
from tests.test_cli import ensemble

BEFORE = "4740c2dd5bcb"  # the revision before secrets were encrypted


def test_existing_secrets_and_replays_are_encrypted_and_still_usable(
    scratch_database: Callable[[str], str], monkeypatch: pytest.MonkeyPatch
) -> None:
    url = scratch_database("ensemble_secrets_migration")
    key = secrets.token_urlsafe(32)
    monkeypatch.setenv("ENSEMBLE_SECRET_KEY", key)
    migrate.upgrade(url, BEFORE)
    endpoint_id, record_id = uuid.uuid4(), uuid.uuid4()
    signing, previous = webhook_endpoints.new_secret(), webhook_endpoints.new_secret()
    caller, idempotency_key = "c" * 64, "create-key-7"
    body = b'{"key":"ens_shownonce1234567890"}'
    with psycopg.connect(url) as conn:
        conn.execute(
            "INSERT INTO webhook_endpoints (id, url, events, description, secret, "
            "previous_secret) VALUES (%s, 'https://example.com/hook', '{*}', '', %s, %s)",
            (endpoint_id, signing, previous),
        )
        conn.execute(
            "INSERT INTO idempotency_keys (id, caller, key, request_hash, method, path, "
            "response_status, response_body, response_content_type) "
            "VALUES (%s, %s, %s, %s, 'POST', '/v1/api-keys', 201, %s, 'application/json')",
            (record_id, caller, idempotency_key, "f" * 64, body),
        )

    migrate.upgrade(url)

    keyring = encryption.keyring(Settings(secret_key=SecretStr(key)))
    with psycopg.connect(url) as conn:
        stored = conn.execute(
            "SELECT secret, previous_secret FROM webhook_endpoints WHERE id = %s", (endpoint_id,)
        ).fetchone()
        record = conn.execute(
            "SELECT key_hash, response_body FROM idempotency_keys WHERE id = %s", (record_id,)
        ).fetchone()
    assert stored is not None and record is not None
    assert [s.split(":")[:2] for s in stored] == [["enc1", keyring.primary_id]] * 2
    assert [webhook_endpoints.open_secret(keyring, endpoint_id, s) for s in stored] == [
        signing,
        previous,
    ]
    key_hash, sealed = record
    assert key_hash == idempotency.key_hash(caller, idempotency_key)
    assert b"ens_shownonce" not in sealed.encode()
    assert (
        idempotency.open_response(keyring, caller=caller, key=idempotency_key, sealed=sealed)
        == body
    )
    with pytest.raises(encryption.DecryptionFailed):
        idempotency.open_response(keyring, caller=caller, key="another-key", sealed=sealed)

    # Ending a key rotation: the operator puts a new key first and re-encrypts; then the old key
    # can go.
    new_key = secrets.token_urlsafe(32)
    monkeypatch.setenv("ENSEMBLE_SECRET_KEY", f"{new_key},{key}")
    done = ensemble("reencrypt-secrets", database_url=url)
    assert (done.returncode, done.stdout) == (
        0,
        '{"reencrypted_webhook_endpoints": 1, "reencrypted_observation_notes": 0}\n',
    )
    assert ensemble("reencrypt-secrets", database_url=url).stdout == (
        '{"reencrypted_webhook_endpoints": 0, "reencrypted_observation_notes": 0}\n'
    )
    only_new = encryption.keyring(Settings(secret_key=SecretStr(new_key)))
    with psycopg.connect(url) as conn:
        resealed = conn.execute(
            "SELECT secret, previous_secret FROM webhook_endpoints WHERE id = %s", (endpoint_id,)
        ).fetchone()
    assert resealed is not None
    assert [webhook_endpoints.open_secret(only_new, endpoint_id, s) for s in resealed] == [
        signing,
        previous,
    ]

    migrate.downgrade(url, BEFORE)
    with psycopg.connect(url) as conn:
        restored = conn.execute(
            "SELECT secret, previous_secret FROM webhook_endpoints WHERE id = %s", (endpoint_id,)
        ).fetchone()
        replays = conn.execute("SELECT count(*) FROM idempotency_keys").fetchone()
    assert restored == (signing, previous)
    assert replays == (0,)
