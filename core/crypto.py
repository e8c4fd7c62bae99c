"""Secrets at rest (AES-256-GCM with key ids, so keys can rotate) and signed, expiring tokens
(HMAC-SHA256, for web links and OAuth state).

Primitives come from `cryptography` and the standard library; this module only decides the
formats and turns every failure into a `CryptoError` a person can act on.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import os
import re
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from core.errors import CryptoError

KEY_BYTES = 32
NONCE_BYTES = 12
TAG_BYTES = 16
MIN_SIGNER_SECRET_BYTES = 16

CURRENT_KEY_VARIABLE = "OPEN_INSPECT_SECRETS_KEY"
OLD_KEYS_VARIABLE = "OPEN_INSPECT_SECRETS_OLD_KEYS"


class TokenExpired(CryptoError):
    """A signed token was genuine but is past its expiry."""


def generate_key() -> str:
    """A fresh secrets key, in the form `OPEN_INSPECT_SECRETS_KEY` expects."""
    return base64.b64encode(os.urandom(KEY_BYTES)).decode("ascii")


def key_id(key: bytes) -> str:
    """Names a key without revealing it: stored next to each ciphertext to pick the key."""
    return hashlib.sha256(key).hexdigest()[:16]


@dataclass(frozen=True)
class Sealed:
    """A ciphertext and the id of the key that sealed it. `ciphertext` is nonce + AESGCM output."""

    key_id: str
    ciphertext: bytes


class Keyring:
    """Encrypts under the current key; decrypts under the current or any old key, so data
    sealed before a rotation stays readable until it has been re-encrypted."""

    def __init__(self, current: bytes, old: Sequence[bytes] = ()) -> None:
        _check_key_length(current, "the current secrets key")
        for index, key in enumerate(old, start=1):
            _check_key_length(key, f"old secrets key {index}")
        self._current_id = key_id(current)
        self._ciphers: dict[str, AESGCM] = {key_id(key): AESGCM(key) for key in old}
        self._ciphers[self._current_id] = AESGCM(current)

    @classmethod
    def from_base64(cls, current: str, old: Sequence[str] = ()) -> Keyring:
        """Builds the keyring from configuration, naming the variable or entry that is wrong."""
        current_key = _decode_config_key(current, CURRENT_KEY_VARIABLE)
        old_keys = [
            _decode_config_key(value, f"{OLD_KEYS_VARIABLE} entry {index}")
            for index, value in enumerate(old, start=1)
        ]
        return cls(current_key, old_keys)

    @property
    def current_key_id(self) -> str:
        return self._current_id

    def __repr__(self) -> str:
        # Key ids only: a keyring may end up in a log line or a traceback.
        old = sorted(kid for kid in self._ciphers if kid != self._current_id)
        return f"Keyring(current={self._current_id!r}, old={old!r})"

    def encrypt(self, plaintext: bytes, context: bytes = b"") -> Sealed:
        """`context` is bound to the ciphertext (e.g. the secret's name), so a ciphertext copied
        to another row fails to decrypt there."""
        nonce = os.urandom(NONCE_BYTES)
        sealed = self._ciphers[self._current_id].encrypt(nonce, plaintext, context)
        return Sealed(key_id=self._current_id, ciphertext=nonce + sealed)

    def decrypt(self, sealed: Sealed, context: bytes = b"") -> bytes:
        cipher = self._ciphers.get(sealed.key_id)
        if cipher is None:
            raise CryptoError(
                f"this secret was encrypted with key {sealed.key_id}, which is not configured; "
                f"add it to {OLD_KEYS_VARIABLE}"
            )
        data = sealed.ciphertext
        if len(data) < NONCE_BYTES + TAG_BYTES:
            raise CryptoError(
                f"cannot decrypt a secret sealed with key {sealed.key_id}: the ciphertext is "
                "truncated"
            )
        try:
            return cipher.decrypt(data[:NONCE_BYTES], data[NONCE_BYTES:], context)
        except InvalidTag:
            raise CryptoError(
                f"cannot decrypt a secret sealed with key {sealed.key_id}: it was tampered with, "
                "belongs to another record, or the key with that id is not the one it was "
                "sealed with"
            ) from None

    def reencrypt(self, sealed: Sealed, context: bytes = b"") -> Sealed:
        """Seals the same plaintext under the current key (key rotation)."""
        return self.encrypt(self.decrypt(sealed, context), context)

    def has_key(self, key_id: str) -> bool:
        """Whether data sealed with the key named `key_id` can be opened here."""
        return key_id in self._ciphers

    def needs_rotation(self, sealed: Sealed) -> bool:
        return sealed.key_id != self._current_id


def _check_key_length(key: bytes, what: str) -> None:
    if not isinstance(key, bytes | bytearray):
        raise CryptoError(f"{what} must be {KEY_BYTES} bytes (got {type(key).__name__})")
    if len(key) != KEY_BYTES:
        raise CryptoError(f"{what} must be {KEY_BYTES} bytes (got {len(key)} bytes)")


def _decode_config_key(value: str, name: str) -> bytes:
    # Messages name the variable but never repeat its value: it is key material.
    try:
        key = base64.b64decode(value.strip(), validate=True)
    except (binascii.Error, ValueError):
        raise CryptoError(
            f"{name} must be base64 of {KEY_BYTES} bytes (it is not valid base64)"
        ) from None
    if len(key) != KEY_BYTES:
        raise CryptoError(f"{name} must be base64 of {KEY_BYTES} bytes (got {len(key)} bytes)")
    return key


# --- signed tokens ---------------------------------------------------------------------------

# Tokens are `base64url(body).base64url(mac)`, where body is compact JSON
# {"exp": ..., "payload": ..., "purpose": ...} and the MAC is over the body bytes as sent,
# so verification never depends on re-serialising JSON the same way.
_TOKEN_MAC_LABEL = b"open-inspect token v1\x00"
_BASE64URL = re.compile(r"[A-Za-z0-9_-]+")


class Signer:
    """Signs small JSON payloads with a purpose and an expiry; a token made for one purpose
    (say "link") is refused for another (say "oauth-state")."""

    def __init__(self, secret: bytes) -> None:
        if not isinstance(secret, bytes | bytearray) or len(secret) < MIN_SIGNER_SECRET_BYTES:
            raise CryptoError(
                f"the signing secret must be at least {MIN_SIGNER_SECRET_BYTES} bytes"
            )
        self._secret = bytes(secret)

    def __repr__(self) -> str:
        return "Signer(<secret>)"

    def sign(
        self, purpose: str, payload: dict[str, Any], ttl_seconds: float, now: float | None = None
    ) -> str:
        if ttl_seconds <= 0:
            raise ValueError(f"ttl_seconds must be positive (got {ttl_seconds})")
        issued = time.time() if now is None else now
        body = json.dumps(
            {"exp": issued + ttl_seconds, "payload": payload, "purpose": purpose},
            separators=(",", ":"),
            sort_keys=True,
            allow_nan=False,
        ).encode("utf-8")
        return f"{_b64url_encode(body)}.{_b64url_encode(self._mac(body))}"

    def verify(self, purpose: str, token: str, now: float | None = None) -> dict[str, Any]:
        """Returns the payload, or raises: "malformed token", "invalid signature" (forged,
        tampered or made for another purpose), or `TokenExpired`."""
        body, mac = _split_token(token)
        if not hmac.compare_digest(mac, self._mac(body)):
            raise CryptoError("invalid signature")
        claims = _parse_claims(body)
        # Same message as a bad MAC: a token for another purpose is simply not valid here.
        if claims["purpose"] != purpose:
            raise CryptoError("invalid signature")
        checked_at = time.time() if now is None else now
        if checked_at >= claims["exp"]:
            raise TokenExpired(f"this {purpose} token has expired; ask for a new one")
        return claims["payload"]

    def _mac(self, body: bytes) -> bytes:
        return hmac.new(self._secret, _TOKEN_MAC_LABEL + body, hashlib.sha256).digest()


def _split_token(token: str) -> tuple[bytes, bytes]:
    if not isinstance(token, str):
        raise CryptoError("malformed token")
    parts = token.split(".")
    if len(parts) != 2:
        raise CryptoError("malformed token")
    body, mac = (_b64url_decode(part) for part in parts)
    if len(mac) != hashlib.sha256().digest_size:
        raise CryptoError("malformed token")
    return body, mac


def _parse_claims(body: bytes) -> dict[str, Any]:
    # Only reached once the MAC matched, so a failure here means a format we never wrote.
    try:
        claims = json.loads(body)
    except (ValueError, RecursionError):
        raise CryptoError("malformed token") from None
    if (
        not isinstance(claims, dict)
        or not isinstance(claims.get("purpose"), str)
        or not isinstance(claims.get("payload"), dict)
        or isinstance(claims.get("exp"), bool)
        or not isinstance(claims.get("exp"), int | float)
    ):
        raise CryptoError("malformed token")
    return claims


def _b64url_encode(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _b64url_decode(text: str) -> bytes:
    # Strict: only the URL-safe alphabet, and only the canonical spelling of the bytes, so one
    # token has exactly one valid string form.
    if not _BASE64URL.fullmatch(text):
        raise CryptoError("malformed token")
    try:
        data = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (binascii.Error, ValueError):
        raise CryptoError("malformed token") from None
    if _b64url_encode(data) != text:
        raise CryptoError("malformed token")
    return data
