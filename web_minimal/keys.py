"""What the page's handlers find on the aiohttp application."""

from __future__ import annotations

from aiohttp import web

from core.engine import Engine

ENGINE = web.AppKey("engine", Engine)
