"""Turning untrusted text into safe HTML: the agent's markdown, unified diffs, the templates.

Everything shown comes from a transcript, which anyone who can talk to the agent can shape, so
nothing here trusts it: raw HTML in markdown is shown as text, links keep only web and mail
schemes, images become links (a remote image would tell its host who reads the page), and the
templates autoescape. The Content Security Policy is the second wall, not the first.
"""

from __future__ import annotations

import functools
import hashlib
import re
from dataclasses import dataclass, field
from pathlib import PurePosixPath
from typing import Any
from urllib.parse import urlsplit

import jinja2
from markdown_it import MarkdownIt
from markupsafe import Markup, escape

_SAFE_SCHEMES = {"", "http", "https", "mailto"}
_LINK_REL = "nofollow noopener noreferrer"


def _safe_url(url: str) -> bool:
    # Browsers ignore tabs, newlines and leading spaces in a scheme ("java\tscript:").
    cleaned = re.sub(r"[\x00-\x20]", "", url)
    try:
        return urlsplit(cleaned).scheme.lower() in _SAFE_SCHEMES
    except ValueError:
        return False


def _link_open(self: Any, tokens: list[Any], idx: int, options: Any, env: Any) -> str:
    tokens[idx].attrSet("rel", _LINK_REL)
    return self.renderToken(tokens, idx, options, env)


def _image(self: Any, tokens: list[Any], idx: int, options: Any, env: Any) -> str:
    token = tokens[idx]
    alt = self.renderInlineAsText(token.children or [], options, env) or "image"
    src = token.attrGet("src") or ""
    return (
        f'<a class="image-link" href="{escape(src)}" rel="{_LINK_REL}">[image: {escape(alt)}]</a>'
    )


def _markdown() -> MarkdownIt:
    md = MarkdownIt("commonmark", {"html": False, "linkify": False, "typographer": False})
    md.enable(["table", "strikethrough"])
    md.validateLink = _safe_url
    md.add_render_rule("link_open", _link_open)
    md.add_render_rule("image", _image)
    return md


_MD = _markdown()


@functools.lru_cache(maxsize=512)
def markdown(text: str) -> Markup:
    """Markdown as safe HTML. Cached: every viewer of a session renders the same blocks."""
    return Markup(_MD.render(text))


# ----- diffs -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class DiffLine:
    kind: str  # add, del, hunk, meta, context
    text: str


@dataclass
class FileDiff:
    path: str
    lines: list[DiffLine] = field(default_factory=list)
    binary: bool = False

    @property
    def language(self) -> str:
        return PurePosixPath(self.path).suffix.lstrip(".").lower()


@dataclass(frozen=True)
class ParsedDiff:
    files: list[FileDiff]
    truncated: str | None  # the truncation note, when the diff was cut


_DIFF_HEADER = re.compile(r"^diff --git a/(.*) b/(.*)$")


def parse_diff(diff: str) -> ParsedDiff:
    """Split `git diff` output into files, each line classified for colouring."""
    files: list[FileDiff] = []
    truncated = None
    current: FileDiff | None = None
    in_hunk = False
    for line in diff.splitlines():
        header = _DIFF_HEADER.match(line)
        if header:
            current, in_hunk = FileDiff(header[2]), False
            files.append(current)
            continue
        if line.startswith("[diff truncated"):
            truncated = line.strip("[]")
            continue
        if current is None:
            continue
        if line.startswith("@@"):
            in_hunk = True
            current.lines.append(DiffLine("hunk", line))
        elif not in_hunk:
            if line.startswith("+++ ") and line[4:] != "/dev/null":
                current.path = line[4:].removeprefix("b/")
            if line.startswith("Binary files"):
                current.binary = True
            current.lines.append(DiffLine("meta", line))
        elif line.startswith("+"):
            current.lines.append(DiffLine("add", line))
        elif line.startswith("-"):
            current.lines.append(DiffLine("del", line))
        else:
            current.lines.append(DiffLine("context", line))
    return ParsedDiff(files, truncated)


# ----- templates -------------------------------------------------------------------------------


def truncate(text: str, limit: int) -> tuple[str, int]:
    """`text` cut to `limit` characters, and how many were left out."""
    return (text, 0) if len(text) <= limit else (text[:limit], len(text) - limit)


@functools.cache
def templates() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.PackageLoader("web_minimal", "templates"),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["markdown"] = markdown
    env.filters["anchor"] = file_anchor
    return env


def file_anchor(path: str) -> str:
    """A stable element id for a file's diff (paths may hold anything)."""
    return "f-" + hashlib.sha1(path.encode(), usedforsecurity=False).hexdigest()[:12]


def part(name: str, **context: Any) -> str:
    """One fragment of the page (a macro of parts.html), for a live update."""
    macro = getattr(templates().get_template("parts.html").module, name)
    return str(macro(**context))
