"""Injected failures: the next calls matching a method and a path pattern fail with a status, as
GitHub's front end does now and then (502, 503), so tests can see clients retry or give up."""

from __future__ import annotations

import fnmatch
from dataclasses import dataclass
from http import HTTPStatus

from aiohttp import web


@dataclass
class Fault:
    method: str  # or "*"
    pattern: str  # fnmatch-style, e.g. "/repos/*/pulls"
    status: int
    times: int
    message: str


class Faults:
    def __init__(self) -> None:
        self._pending: list[Fault] = []

    def add(self, method: str, pattern: str, status: int, times: int, message: str | None) -> None:
        reason = message or HTTPStatus(status).phrase
        self._pending.append(Fault(method.upper(), pattern, status, times, reason))

    def take(self, method: str, path: str) -> web.Response | None:
        """The failure this call should get, if one is pending for it (counting it down)."""
        for fault in self._pending:
            if fault.method in ("*", method) and fnmatch.fnmatchcase(path, fault.pattern):
                fault.times -= 1
                if fault.times <= 0:
                    self._pending.remove(fault)
                return web.json_response({"message": fault.message}, status=fault.status)
        return None
