"""The App's key pair and the checks GitHub makes of the JWTs an App signs with it (RS256, `iss`
the App's id, `iat` in the past, `exp` in the future and at most ten minutes after `iat`)."""

from __future__ import annotations

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

# GitHub tolerates some drift between the App's clock and its own.
CLOCK_SKEW = 60
MAX_LIFETIME = 600


class JwtRefused(Exception):
    """A JWT GitHub would not accept; the message is the one GitHub answers with."""


def new_private_key_pem() -> str:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.TraditionalOpenSSL,  # what GitHub's .pem downloads hold
        serialization.NoEncryption(),
    ).decode()


def public_key_pem(private_key_pem: str) -> str:
    key = serialization.load_pem_private_key(private_key_pem.encode(), password=None)
    return (
        key.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )


def looks_like_jwt(token: str) -> bool:
    return token.count(".") == 2 and token.startswith("ey")


def verify(token: str, public_pem: str, app_id: str, now: float) -> None:
    """Accept the App's JWT, or raise JwtRefused."""
    try:
        claims = jwt.decode(
            token,
            public_pem,
            algorithms=["RS256"],
            options={"verify_exp": False, "verify_iat": False, "verify_nbf": False},
        )
    except jwt.PyJWTError:
        raise JwtRefused("A JSON web token could not be decoded") from None
    iat, exp = claims.get("iat"), claims.get("exp")
    if not isinstance(iat, int) or iat > now + CLOCK_SKEW:
        raise JwtRefused(
            "'Issued at' claim ('iat') must be an Integer representing the time that the "
            "assertion was issued"
        )
    if not isinstance(exp, int | float) or exp <= now:
        raise JwtRefused(
            "'Expiration time' claim ('exp') must be a numeric value representing the future "
            "time at which the assertion expires"
        )
    if exp - iat > MAX_LIFETIME or exp > now + MAX_LIFETIME + CLOCK_SKEW:
        raise JwtRefused("'Expiration time' claim ('exp') is too far in the future")
    if str(claims.get("iss")) != app_id:
        raise JwtRefused("Integration not found")
