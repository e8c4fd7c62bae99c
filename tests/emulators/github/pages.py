"""GitHub's pagination: `per_page` (30 by default, at most 100) and `page`, and a `Link` header
naming the prev, next, last and first pages in GitHub's order and format, e.g.

    <https://api.github.com/installation/repositories?per_page=100&page=3>; rel="next",
    <https://api.github.com/installation/repositories?per_page=100&page=20>; rel="last"
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TypeVar
from urllib.parse import urlencode

from aiohttp import web

from tests.emulators.github.errors import ApiError
from tests.emulators.github.payloads import API_PREFIX, Urls

T = TypeVar("T")
DEFAULT_PER_PAGE = 30
MAX_PER_PAGE = 100


def _positive(request: web.Request, name: str, default: int) -> int:
    raw = request.query.get(name)
    if raw is None or raw == "":
        return default
    try:
        return max(int(raw), 1)
    except ValueError:
        raise ApiError(422, f"Invalid value for parameter '{name}'") from None


def paginate(request: web.Request, items: Sequence[T]) -> tuple[list[T], dict[str, str]]:
    """The page of `items` the request asks for, and the headers to answer it with."""
    per_page = min(_positive(request, "per_page", DEFAULT_PER_PAGE), MAX_PER_PAGE)
    page = _positive(request, "page", 1)
    last = max((len(items) + per_page - 1) // per_page, 1)
    chosen = list(items[(page - 1) * per_page : page * per_page])
    links = []
    if page > 1:
        links += [(min(page - 1, last), "prev")]
    if page < last:
        links += [(page + 1, "next"), (last, "last")]
    if page > 1:
        links += [(1, "first")]
    if not links:
        return chosen, {}
    return chosen, {"Link": ", ".join(f'<{_url(request, n)}>; rel="{rel}"' for n, rel in links)}


def _url(request: web.Request, page: int) -> str:
    """The request's own URL for another page, its other parameters kept in their order."""
    query = [(k, v) for k, v in request.query.items() if k != "page"] + [("page", str(page))]
    path = request.path.removeprefix(API_PREFIX)
    return f"{Urls.of(request).api}{path}?{urlencode(query)}"
