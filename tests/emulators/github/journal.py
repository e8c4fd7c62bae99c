"""The record of every call made to the emulator (its control endpoints aside), without the
credentials themselves."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Call:
    at: float  # epoch seconds
    method: str
    path: str  # API paths without the /api/v3 prefix; the query string left out
    status: int
    token_kind: str  # none | app | installation | user | unknown (a malformed or foreign token)
    api: bool  # the REST API, rather than OAuth pages or git
