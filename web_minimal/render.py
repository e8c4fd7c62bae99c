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
from pygments.lexer import Lexer
from pygments.lexers import get_lexer_for_filename
from pygments.token import STANDARD_TYPES
from pygments.util import ClassNotFound

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
    code: Markup | None = None  # the line after its +/-/space marker, syntax-highlighted


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
_CODE_KINDS = ("add", "del", "context")
# Token categories worth a colour; finer pygments types fold into these.
_CATEGORIES = ("k", "s", "c", "m", "o")  # keyword, string, comment, number, operator
_HIGHLIGHTED = {*_CATEGORIES, "kt", "nf", "nc", "nb", "nd"}


@functools.lru_cache(maxsize=32)
def parse_diff(diff: str) -> ParsedDiff:
    """Split `git diff` output into files, each line classified for colouring and its code
    highlighted by the file's language. Cached: every viewer renders the same diff."""
    parsed = _split_diff(diff)
    for file in parsed.files:
        _highlight(file)
    return parsed


def _highlight(file: FileDiff) -> None:
    try:
        lexer = get_lexer_for_filename(file.path, stripnl=False, ensurenl=False)
    except ClassNotFound:
        return
    indexes = [i for i, line in enumerate(file.lines) if line.kind in _CODE_KINDS]
    code = _highlight_lines([file.lines[i].text[1:] for i in indexes], lexer)
    for i, markup in zip(indexes, code, strict=True):
        line = file.lines[i]
        file.lines[i] = DiffLine(line.kind, line.text, escape(line.text[:1]) + markup)


def _highlight_lines(lines: list[str], lexer: Lexer) -> list[Markup]:
    """Each line's tokens as spans, every span closed on its own line (a token spanning lines,
    a docstring say, is split), so lines can be wrapped one by one."""
    rendered: list[list[str]] = [[]]
    for token, value in lexer.get_tokens("\n".join(lines)):
        css = _token_class(token)
        for n, piece in enumerate(value.split("\n")):
            if n:
                rendered.append([])
            if piece:
                text = str(escape(piece))
                rendered[-1].append(f'<span class="hl-{css}">{text}</span>' if css else text)
    rendered += [[] for _ in range(len(lines) - len(rendered))]
    return [Markup("".join(parts)) for parts in rendered[: len(lines)]]


def _token_class(token: Any) -> str:
    while token is not None:
        short = STANDARD_TYPES.get(token, "")
        if short in _HIGHLIGHTED:
            return short
        if short[:1] in _CATEGORIES:
            return short[:1]
        token = token.parent
    return ""


def _split_diff(diff: str) -> ParsedDiff:
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
