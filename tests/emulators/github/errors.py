"""GitHub's REST error answers: `{"message", "documentation_url", "status"}`, and for 422 the
list of validation `errors` PyGithub shows."""

from __future__ import annotations

import json
from typing import Any

from aiohttp import web

DOCS = "https://docs.github.com/rest"


class ApiError(Exception):
    def __init__(
        self, status: int, message: str, errors: list[dict[str, Any]] | None = None
    ) -> None:
        super().__init__(message)
        self.status, self.message, self.errors = status, message, errors

    def response(self) -> web.Response:
        body: dict[str, Any] = {"message": self.message}
        if self.errors is not None:
            body["errors"] = self.errors
        body |= {"documentation_url": DOCS, "status": str(self.status)}
        return web.json_response(body, status=self.status)


def not_found() -> ApiError:
    return ApiError(404, "Not Found")


def bad_credentials() -> ApiError:
    return ApiError(401, "Bad credentials")


def needs_authentication() -> ApiError:
    return ApiError(401, "Requires authentication")


def not_accessible() -> ApiError:
    """What GitHub answers an App (or a person through it) lacking a permission."""
    return ApiError(403, "Resource not accessible by integration")


def invalid(resource: str, message: str | None = None, **error: str) -> ApiError:
    """422 Validation Failed with one error: a custom message, or a field and code."""
    detail: dict[str, Any] = {"resource": resource}
    if message is not None:
        detail |= {"code": "custom", "message": message}
    detail |= error
    return ApiError(422, "Validation Failed", [detail])


async def read_json(request: web.Request) -> dict[str, Any]:
    """The request's JSON object; an empty body is an empty object, as GitHub takes it."""
    raw = await request.read()
    if not raw.strip():
        return {}
    try:
        body = json.loads(raw)
    except ValueError:
        raise ApiError(400, "Problems parsing JSON") from None
    if not isinstance(body, dict):
        raise ApiError(400, "Problems parsing JSON")
    return body
