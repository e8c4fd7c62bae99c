"""GitHub: the App's installation tokens (`app`), the installation's repository list
(`repositories`) and pull requests opened with a person's own token (`pulls`).

PyGithub is synchronous: every call of it goes through `asyncio.to_thread`.
"""

from __future__ import annotations

from urllib.parse import urlsplit


def on_host(url: str, web_url: str) -> bool:
    """Whether the clone URL `url` is a repository on the GitHub at `web_url` (same host and
    port; credentials in either URL do not count)."""
    clone, web = urlsplit(url), urlsplit(web_url)
    if not clone.scheme.startswith("http") or not clone.hostname:
        return False
    return (clone.hostname, clone.port) == (web.hostname, web.port)
