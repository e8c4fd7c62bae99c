"""Signed links to a session's read-only page: `/s/<token>`.

A token names a session, a link generation and an expiry, and carries an HMAC-SHA256 of them
under `OPEN_INSPECT_LINK_SECRET`, so it cannot be forged or stretched. Revoking a session's
links bumps its generation in the database: every token issued before stops working at once,
on every replica, and new links can still be made.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import time
from dataclasses import dataclass

from core.errors import OpenInspectError

_TOKEN = re.compile(r"([a-z2-7]{1,64})\.(\d{1,9})\.([0-9a-z]{1,12})\.([A-Za-z0-9_-]{43})")


class LinkRefused(OpenInspectError):
    """The link is forged, expired or revoked; `reason` is one of those words."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


@dataclass(frozen=True)
class LinkClaim:
    session_id: str
    generation: int
    expires_at: int  # unix seconds


class LinkSigner:
    def __init__(self, secret: str) -> None:
        # Derived, so the same configured secret never signs anything else the same way.
        self._key = hashlib.sha256(b"open-inspect session link v1\0" + secret.encode()).digest()

    def sign(self, session_id: str, generation: int, expires_at: int) -> str:
        body = f"{session_id}.{generation}.{_base36(expires_at)}"
        return f"{body}.{self._mac(body)}"

    def verify(self, token: str, now: float | None = None) -> LinkClaim:
        """The claim of a genuine, unexpired token; revocation is checked by the caller, who
        knows the session's current generation."""
        match = _TOKEN.fullmatch(token)
        if match is None or not hmac.compare_digest(match[4], self._mac(token.rpartition(".")[0])):
            raise LinkRefused("forged", "This link is not valid.")
        claim = LinkClaim(match[1], int(match[2]), int(match[3], 36))
        if claim.expires_at <= (time.time() if now is None else now):
            raise LinkRefused(
                "expired", "This link has expired. Ask in the session's thread for a new one."
            )
        return claim

    def _mac(self, body: str) -> str:
        digest = hmac.new(self._key, body.encode(), hashlib.sha256).digest()
        return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


def _base36(number: int) -> str:
    digits = "0123456789abcdefghijklmnopqrstuvwxyz"
    out = ""
    while True:
        number, rest = divmod(number, 36)
        out = digits[rest] + out
        if number == 0:
            return out
