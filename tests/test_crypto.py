"""Secrets at rest (Keyring) and signed, expiring tokens (Signer)."""

from __future__ import annotations

import base64
import dataclasses
import os

import pytest

from core.crypto import Keyring, Sealed, Signer, TokenExpired, generate_key, key_id
from core.errors import CryptoError

SIGNING_SECRET = b"a signing secret of enough bytes"


def new_key() -> bytes:
    return os.urandom(32)


def flip_byte(data: bytes, index: int) -> bytes:
    return data[:index] + bytes([data[index] ^ 0x01]) + data[index + 1 :]


# --- Keyring ---------------------------------------------------------------------------------


def test_sealed_secret_round_trips_with_its_context() -> None:
    keyring = Keyring(new_key())
    sealed = keyring.encrypt(b"gho_token", context=b"user:U123:github")
    assert keyring.decrypt(sealed, context=b"user:U123:github") == b"gho_token"


def test_empty_plaintext_round_trips() -> None:
    keyring = Keyring(new_key())
    assert keyring.decrypt(keyring.encrypt(b"")) == b""


def test_sealing_twice_gives_different_ciphertexts() -> None:
    keyring = Keyring(new_key())
    first, second = keyring.encrypt(b"same"), keyring.encrypt(b"same")
    assert first.key_id == second.key_id
    assert first.ciphertext != second.ciphertext
    assert first.ciphertext[:12] != second.ciphertext[:12]


def test_key_id_is_sha256_prefix_and_does_not_contain_the_key() -> None:
    key = new_key()
    sealed = Keyring(key).encrypt(b"x")
    assert sealed.key_id == key_id(key)
    assert len(sealed.key_id) == 16
    assert int(sealed.key_id, 16) >= 0
    assert key.hex()[:16] != sealed.key_id


def test_decrypting_with_another_key_under_the_same_id_is_refused() -> None:
    sealed = Keyring(new_key()).encrypt(b"secret")
    other = Keyring(new_key())
    # Pretend the ids collided so the wrong key is actually tried.
    forged = Sealed(key_id=other.current_key_id, ciphertext=sealed.ciphertext)
    with pytest.raises(CryptoError, match="cannot decrypt"):
        other.decrypt(forged)


def test_every_tampered_byte_is_detected() -> None:
    keyring = Keyring(new_key())
    sealed = keyring.encrypt(b"repo secret value")
    for index in range(len(sealed.ciphertext)):
        tampered = dataclasses.replace(sealed, ciphertext=flip_byte(sealed.ciphertext, index))
        with pytest.raises(CryptoError):
            keyring.decrypt(tampered)


def test_truncated_ciphertext_is_refused_with_crypto_error() -> None:
    keyring = Keyring(new_key())
    sealed = keyring.encrypt(b"value")
    for length in (0, 1, 12, 27, len(sealed.ciphertext) - 1):
        truncated = dataclasses.replace(sealed, ciphertext=sealed.ciphertext[:length])
        with pytest.raises(CryptoError):
            keyring.decrypt(truncated)


def test_ciphertext_moved_to_another_context_is_refused() -> None:
    keyring = Keyring(new_key())
    sealed = keyring.encrypt(b"value", context=b"secret:DEPLOY_TOKEN")
    with pytest.raises(CryptoError, match="cannot decrypt"):
        keyring.decrypt(sealed, context=b"secret:OTHER")
    with pytest.raises(CryptoError):
        keyring.decrypt(sealed)


def test_unknown_key_id_names_the_id_and_the_variable_to_set() -> None:
    sealed = Keyring(new_key()).encrypt(b"value")
    with pytest.raises(CryptoError) as caught:
        Keyring(new_key()).decrypt(sealed)
    message = str(caught.value)
    assert sealed.key_id in message
    assert "OPEN_INSPECT_SECRETS_OLD_KEYS" in message


def test_rotation_keeps_old_data_readable_and_moves_it_to_the_current_key() -> None:
    old_key, new = new_key(), new_key()
    sealed = Keyring(old_key).encrypt(b"oauth token", context=b"user:U1")

    rotated_ring = Keyring(new, old=[old_key])
    assert rotated_ring.needs_rotation(sealed)
    assert rotated_ring.decrypt(sealed, context=b"user:U1") == b"oauth token"

    moved = rotated_ring.reencrypt(sealed, context=b"user:U1")
    assert moved.key_id == key_id(new) == rotated_ring.current_key_id
    assert not rotated_ring.needs_rotation(moved)
    assert rotated_ring.decrypt(moved, context=b"user:U1") == b"oauth token"
    # Once moved, the old key is no longer needed.
    assert Keyring(new).decrypt(moved, context=b"user:U1") == b"oauth token"


def test_keys_of_the_wrong_length_are_refused() -> None:
    for length in (0, 16, 31, 33):
        with pytest.raises(CryptoError, match=f"got {length} bytes"):
            Keyring(os.urandom(length))
    with pytest.raises(CryptoError, match="old secrets key 2"):
        Keyring(new_key(), old=[new_key(), os.urandom(31)])


def test_generated_key_builds_a_working_keyring() -> None:
    encoded = generate_key()
    assert len(base64.b64decode(encoded, validate=True)) == 32
    assert generate_key() != encoded
    keyring = Keyring.from_base64(encoded)
    assert keyring.decrypt(keyring.encrypt(b"v")) == b"v"


def test_config_keys_tolerate_surrounding_whitespace() -> None:
    current, old = generate_key(), generate_key()
    keyring = Keyring.from_base64(f" {current}\n", old=[f"{old} "])
    assert keyring.current_key_id == key_id(base64.b64decode(current))


def test_short_config_key_names_the_variable_and_length_but_not_the_key() -> None:
    short = base64.b64encode(os.urandom(31)).decode()
    with pytest.raises(CryptoError) as caught:
        Keyring.from_base64(short)
    message = str(caught.value)
    assert message == "OPEN_INSPECT_SECRETS_KEY must be base64 of 32 bytes (got 31 bytes)"
    assert short not in message


def test_invalid_base64_config_key_names_the_variable_but_not_the_key() -> None:
    garbage = "not*base64*at*all!"
    with pytest.raises(CryptoError) as caught:
        Keyring.from_base64(garbage)
    message = str(caught.value)
    assert "OPEN_INSPECT_SECRETS_KEY" in message
    assert "base64" in message
    assert garbage not in message


def test_bad_old_key_names_the_entry() -> None:
    short = base64.b64encode(os.urandom(12)).decode()
    with pytest.raises(CryptoError) as caught:
        Keyring.from_base64(generate_key(), old=[generate_key(), short])
    message = str(caught.value)
    assert "OPEN_INSPECT_SECRETS_OLD_KEYS entry 2" in message
    assert "got 12 bytes" in message
    assert short not in message

    with pytest.raises(CryptoError, match="OPEN_INSPECT_SECRETS_OLD_KEYS entry 1"):
        Keyring.from_base64(generate_key(), old=["%%%"])


def test_keyring_repr_shows_key_ids_only() -> None:
    current, old = new_key(), new_key()
    text = repr(Keyring(current, old=[old]))
    assert key_id(current) in text and key_id(old) in text
    assert current.hex() not in text and old.hex() not in text


# --- Signer ----------------------------------------------------------------------------------


def test_signed_token_round_trips_its_payload() -> None:
    signer = Signer(SIGNING_SECRET)
    payload = {"session": "s-1", "user": "U1", "n": 3, "nested": {"ok": True}}
    token = signer.sign("link", payload, ttl_seconds=60, now=1_000.0)
    assert signer.verify("link", token, now=1_030.0) == payload


def test_token_is_url_safe() -> None:
    token = Signer(SIGNING_SECRET).sign("link", {"q": "a/b+c=?&é"}, ttl_seconds=60)
    assert set(token) <= set("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_.")
    assert "=" not in token


def test_token_without_explicit_now_uses_the_clock() -> None:
    signer = Signer(SIGNING_SECRET)
    assert signer.verify("link", signer.sign("link", {"a": 1}, ttl_seconds=60)) == {"a": 1}


def test_expired_token_raises_token_expired() -> None:
    signer = Signer(SIGNING_SECRET)
    token = signer.sign("oauth-state", {"user": "U1"}, ttl_seconds=10, now=1_000.0)
    with pytest.raises(TokenExpired, match="expired"):
        signer.verify("oauth-state", token, now=1_010.0)
    with pytest.raises(TokenExpired):
        signer.verify("oauth-state", token, now=5_000.0)
    assert issubclass(TokenExpired, CryptoError)


def test_token_for_one_purpose_is_refused_for_another() -> None:
    signer = Signer(SIGNING_SECRET)
    token = signer.sign("link", {"user": "U1"}, ttl_seconds=60, now=0.0)
    with pytest.raises(CryptoError, match="invalid signature"):
        signer.verify("oauth-state", token, now=1.0)


def test_token_from_another_secret_is_refused() -> None:
    token = Signer(b"another secret, also long enough").sign("link", {}, ttl_seconds=60, now=0.0)
    with pytest.raises(CryptoError, match="invalid signature"):
        Signer(SIGNING_SECRET).verify("link", token, now=1.0)


def test_tampered_payload_is_refused() -> None:
    signer = Signer(SIGNING_SECRET)
    token = signer.sign("link", {"user": "U1"}, ttl_seconds=60, now=0.0)
    body, mac = token.split(".")
    decoded = base64.urlsafe_b64decode(body + "=" * (-len(body) % 4))
    forged_body = decoded.replace(b'"U1"', b'"U2"')
    assert forged_body != decoded
    forged = base64.urlsafe_b64encode(forged_body).rstrip(b"=").decode() + "." + mac
    with pytest.raises(CryptoError, match="invalid signature"):
        signer.verify("link", forged, now=1.0)


def test_extended_expiry_is_refused() -> None:
    signer = Signer(SIGNING_SECRET)
    token = signer.sign("link", {}, ttl_seconds=5, now=0.0)
    body, mac = token.split(".")
    decoded = base64.urlsafe_b64decode(body + "=" * (-len(body) % 4))
    forged_body = decoded.replace(b'"exp":5.0', b'"exp":9999999999.0')
    assert forged_body != decoded
    forged = base64.urlsafe_b64encode(forged_body).rstrip(b"=").decode() + "." + mac
    with pytest.raises(CryptoError, match="invalid signature"):
        signer.verify("link", forged, now=100.0)


def test_tampered_signature_is_refused() -> None:
    signer = Signer(SIGNING_SECRET)
    token = signer.sign("link", {"user": "U1"}, ttl_seconds=60, now=0.0)
    body, mac = token.split(".")
    raw = base64.urlsafe_b64decode(mac + "=" * (-len(mac) % 4))
    forged_mac = base64.urlsafe_b64encode(flip_byte(raw, 0)).rstrip(b"=").decode()
    with pytest.raises(CryptoError, match="invalid signature"):
        signer.verify("link", f"{body}.{forged_mac}", now=1.0)


def test_every_single_character_change_is_refused() -> None:
    signer = Signer(SIGNING_SECRET)
    token = signer.sign("link", {"user": "U1"}, ttl_seconds=60, now=0.0)
    for index, char in enumerate(token):
        replacement = "A" if char != "A" else "B"
        altered = token[:index] + replacement + token[index + 1 :]
        with pytest.raises(CryptoError) as caught:
            signer.verify("link", altered, now=1.0)
        assert type(caught.value) is CryptoError, altered


def test_garbage_tokens_raise_crypto_error_only() -> None:
    signer = Signer(SIGNING_SECRET)
    valid = signer.sign("link", {"a": 1}, ttl_seconds=60, now=0.0)
    body, mac = valid.split(".")
    garbage = [
        "",
        ".",
        "..",
        "abc",
        "a.b",
        "a.b.c",
        "a" * 1000,
        "!!!.???",
        "ab=.cd==",
        "ab+/.cd",
        "é.é",
        "\x00.\x00",
        " " + valid,
        valid + "\n",
        valid + ".",
        f"{body}.",
        f".{mac}",
        f"{body}.{mac}.{mac}",
        f"{body}.{mac[:-1]}",
        f"{body}.{mac}A",
        f"{body}=.{mac}",
        "e30." + mac,  # "{}" with a MAC that does not match it
    ]
    for token in garbage:
        with pytest.raises(CryptoError) as caught:
            signer.verify("link", token, now=1.0)
        assert type(caught.value) is CryptoError, repr(token)


def test_correctly_signed_body_of_the_wrong_shape_is_malformed() -> None:
    signer = Signer(SIGNING_SECRET)
    for body in (b"[]", b"{}", b"not json", b'{"exp":"soon","payload":{},"purpose":"link"}'):
        encoded = base64.urlsafe_b64encode(body).rstrip(b"=").decode()
        mac = base64.urlsafe_b64encode(signer._mac(body)).rstrip(b"=").decode()
        with pytest.raises(CryptoError, match="malformed token"):
            signer.verify("link", f"{encoded}.{mac}", now=1.0)


def test_short_signing_secret_is_refused() -> None:
    with pytest.raises(CryptoError, match="at least 16 bytes"):
        Signer(b"x" * 15)
    Signer(b"x" * 16)


def test_non_positive_ttl_is_a_programming_error() -> None:
    with pytest.raises(ValueError):
        Signer(SIGNING_SECRET).sign("link", {}, ttl_seconds=0)
