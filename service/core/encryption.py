"""Encryption at rest: what must be stored but must not be readable from a copy of the database
(webhook signing secrets, replayable responses that carry shown-once secrets).

The keys come from ENSEMBLE_SECRET_KEY: one or more keys separated by commas. The first one
encrypts; every one of them decrypts, so a key is rotated by putting a new key first and
removing the old one once nothing it encrypted is left. Each ciphertext names the key that made
it by a short fingerprint, so decryption never has to guess.

AES-256-GCM (authenticated: a changed byte fails to decrypt rather than decrypting to garbage)
under a subkey derived by HKDF-SHA256 for each purpose, so a ciphertext of one purpose never
decrypts as another. A caller may mix more into the subkey (`context`, e.g. an Idempotency-Key
that only its holder knows) and bind the ciphertext to where it is stored (`aad`, e.g. the id
of its row).

Text form: `enc1:<key id>:<base64url(nonce + ciphertext + tag)>`.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import os
from dataclasses import dataclass
from functools import lru_cache
from typing import TYPE_CHECKING

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

if TYPE_CHECKING:  # settings validates its key with parse_keys below
    from service.core.settings import Settings

VERSION = "enc1"
NONCE_BYTES = 12  # GCM's standard nonce; random per encryption
MIN_KEY_LENGTH = 32
# Used only when ENSEMBLE_SECRET_KEY is not set, in development: anything it encrypts is as good
# as plaintext to anyone who has read this file. Production refuses to start without a key.
DEVELOPMENT_ONLY_KEY = "ensemble-development-only-key-not-a-secret-never-use-in-production"


class DecryptionFailed(Exception):
    """A ciphertext that none of the configured keys can open (or that was altered)."""


def parse_keys(value: str) -> tuple[str, ...]:
    """ENSEMBLE_SECRET_KEY's keys, newest first; ValueError (never echoing a key) if unusable."""
    keys = tuple(part.strip() for part in value.split(","))
    for number, key in enumerate(keys, start=1):
        if len(key) < MIN_KEY_LENGTH:
            raise ValueError(
                f"key {number} of {len(keys)} has {len(key)} characters; each comma-separated key "
                f"needs at least {MIN_KEY_LENGTH} (make one with "
                "`python -c 'import secrets; print(secrets.token_urlsafe(32))'`)"
            )
    if len(set(keys)) != len(keys):
        raise ValueError("lists the same key twice")
    return keys


def key_id(key: str) -> str:
    """A short, stable fingerprint of a key; it reveals nothing usable about the key."""
    return hashlib.sha256(b"ensemble key id\0" + key.encode()).hexdigest()[:8]


@dataclass(frozen=True)
class _Key:
    id: str
    material: bytes

    def subkey(self, purpose: str, context: bytes) -> AESGCM:
        derived = HKDF(
            algorithm=hashes.SHA256(),
            length=32,
            salt=None,
            info=b"ensemble/" + purpose.encode() + b"\0" + context,
        ).derive(self.material)
        return AESGCM(derived)


class Keyring:
    """The configured keys: the first encrypts, every one decrypts."""

    def __init__(self, keys: tuple[str, ...]) -> None:
        if not keys:
            raise ValueError("a keyring needs at least one key")
        self._keys = tuple(_Key(key_id(k), k.encode()) for k in keys)
        self._by_id = {k.id: k for k in self._keys}

    @property
    def primary_id(self) -> str:
        return self._keys[0].id

    def is_primary(self, ciphertext: str) -> bool:
        """Whether this ciphertext was made with the key that encrypts now."""
        return ciphertext.startswith(f"{VERSION}:{self.primary_id}:")

    def encrypt(
        self, purpose: str, plaintext: bytes, *, aad: bytes = b"", context: bytes = b""
    ) -> str:
        key = self._keys[0]
        nonce = os.urandom(NONCE_BYTES)
        sealed = key.subkey(purpose, context).encrypt(nonce, plaintext, aad)
        return f"{VERSION}:{key.id}:{base64.urlsafe_b64encode(nonce + sealed).decode()}"

    def decrypt(
        self, purpose: str, ciphertext: str, *, aad: bytes = b"", context: bytes = b""
    ) -> bytes:
        version, _, rest = ciphertext.partition(":")
        kid, _, payload = rest.partition(":")
        if version != VERSION or not kid or not payload:
            raise DecryptionFailed(f"not a ciphertext of this application ({VERSION}:...)")
        key = self._by_id.get(kid)
        if key is None:
            raise DecryptionFailed(
                f"encrypted with key {kid}, which ENSEMBLE_SECRET_KEY no longer lists "
                f"(it lists {', '.join(self._by_id)}); add that key back after the first one"
            )
        try:
            raw = base64.urlsafe_b64decode(payload.encode())
        except (binascii.Error, ValueError) as exc:
            raise DecryptionFailed("the ciphertext is not valid base64") from exc
        try:
            return key.subkey(purpose, context).decrypt(raw[:NONCE_BYTES], raw[NONCE_BYTES:], aad)
        except (InvalidTag, ValueError) as exc:
            raise DecryptionFailed(
                f"the ciphertext under key {kid} does not authenticate (altered, or stored for "
                "another purpose or row)"
            ) from exc

    def encrypt_text(self, purpose: str, plaintext: str, *, aad: bytes = b"") -> str:
        return self.encrypt(purpose, plaintext.encode(), aad=aad)

    def decrypt_text(self, purpose: str, ciphertext: str, *, aad: bytes = b"") -> str:
        return self.decrypt(purpose, ciphertext, aad=aad).decode()


def uses_development_key(settings: Settings) -> bool:
    """True when no ENSEMBLE_SECRET_KEY is set and the development-only key stands in."""
    return settings.secret_key is None


def keyring(settings: Settings) -> Keyring:
    """The keyring of these settings (the development-only key when none is set)."""
    configured = settings.secret_key.get_secret_value() if settings.secret_key else None
    return _keyring(configured or DEVELOPMENT_ONLY_KEY)


@lru_cache(maxsize=8)
def _keyring(value: str) -> Keyring:
    return Keyring(parse_keys(value))
