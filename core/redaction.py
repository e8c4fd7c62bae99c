"""Redaction of secret values and well-known credential shapes from text.

A `Redactor` knows a deployment's secret values (name → value) and replaces each value of 8 or
more characters with `[REDACTED:NAME]`, also in the forms a value takes when a program prints
it: base64 (standard and URL-safe, at each of the three byte alignments, so a value embedded in
a longer base64 blob is still caught), URL-encoded and JSON-escaped. Strings that look like
credentials whatever their name (GitHub, Slack, Anthropic, OpenAI and AWS keys, PEM private
keys, our own bridge tokens) become `[REDACTED]`.

Everything is one compiled regular expression: the values as a prefix tree (longest first at
each branch), then the shapes. Overlapping matches are merged, so two secrets that share
characters are both hidden. `stream()` redacts text that arrives in pieces: it holds back only
the tail that could still grow into a match, so a value split across two pieces is caught.

Hygiene, not a boundary: whoever can read a secret can still encode it in a way no pattern
knows. This module imports only the standard library: the sandbox uses it too.
"""

from __future__ import annotations

import base64
import json
import re
import sys
from bisect import bisect_left
from collections.abc import Iterator, Mapping
from typing import Any
from urllib.parse import quote, quote_plus

MIN_SECRET_CHARS = 8
REDACTED = "[REDACTED]"


def label(name: str) -> str:
    return f"[REDACTED:{name}]"


# ----- credential shapes -------------------------------------------------------------------------

# A shape is a sequence of elements, so that both its full pattern and the pattern of "a
# beginning of it that reaches the end of the text" (for the stream form) come from one source:
#   ("guard", class)             first only: the match must not follow a character of the class
#   ("lit", (strings...))        one of the literal strings
#   ("run", class, low, high)    low..high characters of the class (greedy)
#   ("lazy", class, low, high)   the same, as few as possible
#   ("look", pattern)            a zero-width condition of the full pattern only
# Every repetition is bounded: the longest possible match bounds what a stream holds back. Each
# full pattern starts with a literal character, so the regex engine skips every position whose
# character starts no pattern without entering the matcher.
_Element = tuple[Any, ...]
_ALNUM = "[A-Za-z0-9]"
_TOKEN_CHARS = "[A-Za-z0-9_-]"
_SHAPES: tuple[tuple[_Element, ...], ...] = (
    # GitHub: personal, OAuth, user-to-server, installation and refresh tokens; fine-grained.
    (("lit", ("ghp_", "gho_", "ghu_", "ghs_", "ghr_")), ("run", _ALNUM, 30, 255)),
    (("lit", ("github_pat_",)), ("run", "[A-Za-z0-9_]", 30, 255)),
    # Slack: bot, user, app-level and the other xox tokens, which go on with a number (so
    # "xoxo-hugs" stays).
    (
        ("lit", ("xoxa-", "xoxb-", "xoxp-", "xoxo-", "xoxs-", "xoxr-", "xapp-")),
        ("look", "(?=[0-9])"),
        ("run", "[A-Za-z0-9-]", 10, 255),
    ),
    # Anthropic, then OpenAI-style keys: `sk-` and 32+ key characters, one a digit at least, so
    # a hyphenated word after "sk-" stays.
    (("guard", _TOKEN_CHARS), ("lit", ("sk-ant-",)), ("run", _TOKEN_CHARS, 20, 255)),
    (
        ("guard", _TOKEN_CHARS),
        ("lit", ("sk-",)),
        ("look", r"(?=[A-Za-z0-9_-]{0,254}[0-9])"),
        ("run", _TOKEN_CHARS, 32, 255),
    ),
    # AWS access key ids.
    (
        ("guard", _ALNUM),
        ("lit", ("AKIA", "ASIA")),
        ("run", "[A-Z0-9]", 16, 16),
        ("look", r"(?![A-Za-z0-9])"),
    ),
    # Our own sandbox bridge tokens.
    (("lit", ("oisbx_",)), ("run", _TOKEN_CHARS, 20, 255)),
    # PEM private keys, whole blocks (an 8192-bit RSA key is about 6.5 KB).
    (
        ("lit", ("-----BEGIN",)),
        ("run", "[A-Z0-9 ]", 0, 40),
        ("lit", ("PRIVATE KEY-----",)),
        ("lazy", r"[\s\S]", 1, 16384),
        ("lit", ("-----END",)),
        ("run", "[A-Z0-9 ]", 0, 40),
        ("lit", ("PRIVATE KEY-----",)),
    ),
)


def _full(element: _Element) -> str:
    kind = element[0]
    if kind == "lit":
        return _tree_pattern(list(element[1]))
    if kind == "look":
        return element[1]
    _, cls, low, high = element
    return f"{cls}{{{low},{high}}}" + ("?" if kind == "lazy" else "")


def _partial(element: _Element, first: bool = False) -> str:
    """A proper beginning of the element: possibly empty, unless it is the `first` (then it
    starts with a literal character, as every alternative of a fast pattern does)."""
    kind = element[0]
    if kind == "lit":
        prefixes = {s[:i] for s in element[1] for i in range(1 if first else 0, len(s))}
        pattern = _tree_pattern(sorted(p for p in prefixes if p))
        return pattern if first else f"(?:{pattern})?"
    _, cls, _, high = element
    return f"{cls}{{0,{high}}}"


def _longest(element: _Element) -> int:
    kind = element[0]
    if kind == "lit":
        return max(len(s) for s in element[1])
    return element[3] if kind in ("run", "lazy") else 0


def _shape_pattern(shape: tuple[_Element, ...]) -> str:
    if shape[0][0] != "guard":
        return "".join(_full(e) for e in shape)
    # The guard goes after the first character (a lookbehind over it), so that the pattern
    # still starts with that character.
    cls, (_, strings), rest = shape[0][1], shape[1], shape[2:]
    assert len({s[0] for s in strings}) == 1, "a guarded literal has one first character"
    first = re.escape(strings[0][0])
    tails = _tree_pattern([s[1:] for s in strings])
    return first + f"(?<!{cls}{first})" + tails + "".join(_full(e) for e in rest)


def _shape_beginnings(shape: tuple[_Element, ...]) -> list[str]:
    """Every beginning of a match of the shape, a whole match included (it may grow), each
    running to the end of the text."""
    plain = [e for e in shape if e[0] not in ("guard", "look")]
    options = [
        "".join(_full(e) for e in plain[:k]) + _partial(plain[k], first=k == 0)
        for k in range(len(plain))
    ]
    options.append("".join(_full(e) for e in plain))
    return [option + r"\Z" for option in options]


# ----- secret values -----------------------------------------------------------------------------


def variants(value: str) -> set[str]:
    """The forms of `value` that are redacted: itself, URL-encoded, JSON-escaped, and the
    characters of its base64 (standard and URL-safe) that depend on its bytes alone, for each
    of the three positions it can start at inside a longer encoded blob."""
    found = {value, quote(value, safe=""), quote_plus(value, safe=""), json.dumps(value)[1:-1]}
    found.add(re.sub(r"%[0-9A-F]{2}", lambda m: m.group().lower(), quote(value, safe="")))
    raw = value.encode("utf-8")
    for offset in range(3):
        encoded = base64.b64encode(b"\0" * offset + raw).decode("ascii")
        # Character i covers bits 6i..6i+6: keep those entirely inside the value's bits.
        start, end = (8 * offset + 5) // 6, 8 * (offset + len(raw)) // 6
        piece = encoded[start:end]
        found.add(piece)
        found.add(piece.replace("+", "-").replace("/", "_"))
    return {form for form in found if len(form) >= MIN_SECRET_CHARS}


def _tree_branches(words: list[str]) -> list[str]:
    """Patterns for many literals, factored as a prefix tree so that matching costs one branch
    per character rather than one try per literal (a longer literal wins over one that is its
    prefix): one pattern for each first character."""
    tree: dict[str, Any] = {}
    for word in words:
        node = tree
        for char in word:
            node = node.setdefault(char, {})
        node[""] = {}

    def branches(node: dict[str, Any]) -> list[str]:
        found = []
        for char in sorted(c for c in node if c):
            chain, child = char, node[char]
            # A run of single-child nodes is one literal: keeps the pattern shallow.
            while len(child) == 1 and "" not in child:
                ((next_char, grandchild),) = child.items()
                chain, child = chain + next_char, grandchild
            found.append(re.escape(chain) + rest(child))
        return found

    def rest(node: dict[str, Any]) -> str:
        below = branches(node)
        if not below:
            return ""
        body = below[0] if len(below) == 1 else "(?:" + "|".join(below) + ")"
        return f"(?:{body})?" if "" in node else body

    return branches(tree)


def _tree_pattern(words: list[str]) -> str:
    found = _tree_branches(words)
    return found[0] if len(found) == 1 else "(?:" + "|".join(found) + ")"


def _anchors(form: str) -> set[int]:
    """The 4-byte pieces of `form` at offsets 0..3, as integers: an occurrence of the form (8
    bytes at least) always has one of them at a position of the text that is a multiple of 4."""
    data = form.encode("utf-8", "surrogatepass")
    return {int.from_bytes(data[i : i + 4], sys.byteorder) for i in range(4) if i + 4 <= len(data)}


_SHAPE_PATTERNS = [_shape_pattern(s) for s in _SHAPES]
_SHAPE_LONGEST = max(sum(_longest(e) for e in s) for s in _SHAPES)
# Every alternative starts with a literal character (none is wrapped in a group), so that the
# regex engine skips the positions that start nothing without entering its matcher.
_SHAPES_ONLY = re.compile("|".join(_SHAPE_PATTERNS))
# A beginning of a shape's match that runs to the end of the text: what a stream holds back.
_SHAPE_BEGINNING = re.compile("|".join(o for s in _SHAPES for o in _shape_beginnings(s)))


class Redactor:
    """Redacts the given secret values (name → value) and well-known credential shapes."""

    def __init__(self, secrets: Mapping[str, str]) -> None:
        self._names: dict[str, str] = {}
        # Longest values first: where one value's form equals another's, the longer secret
        # names it.
        for name, value in sorted(secrets.items(), key=lambda item: -len(item[1])):
            if isinstance(value, str) and len(value) >= MIN_SECRET_CHARS:
                for form in variants(value):
                    self._names.setdefault(form, name)
        self.names = frozenset(self._names.values())
        forms = sorted(self._names)
        # One regex for everything, values first: with many values nearly every character of
        # a text starts one of them, which costs about 100 ns a character. A text that holds
        # no 4-byte piece of any value (the common case, checked at C speed) cannot contain
        # one, and gets the regex of the shapes alone.
        self._regex = re.compile("|".join(_tree_branches(forms) + _SHAPE_PATTERNS))
        self._anchors = frozenset(a for form in forms for a in _anchors(form))
        self._forms = forms  # sorted, for the stream's "could this grow into a value" test
        self._form_chars = "".join(sorted({char for form in forms for char in form}))
        self._longest_form = max((len(form) for form in forms), default=0)
        self.longest = max(self._longest_form, _SHAPE_LONGEST)

    def __repr__(self) -> str:
        # Names only: a redactor may end up in a log line or a traceback.
        return f"Redactor(names={sorted(self.names)!r})"

    def redact(self, text: str) -> str:
        return self._redact(text, 0)

    def _redact(self, text: str, start: int) -> str:
        """`text[start:]` redacted; what comes before `start` is context (for the shapes that
        must not follow certain characters)."""
        spans = self._spans(text, start)
        first = next(spans, None)
        if first is None:
            return text[start:] if start else text
        parts: list[str] = []
        done = start
        for begin, end, replacement in (first, *spans):
            parts.append(text[done:begin])
            parts.append(replacement)
            done = end
        parts.append(text[done:])
        return "".join(parts)

    def redact_value(self, value: Any) -> Any:
        """`value` with every string in it redacted, through dicts, lists and tuples (keys
        too). Returns the very same object when nothing needed redacting."""
        if isinstance(value, str):
            return self.redact(value)
        if isinstance(value, dict):
            changed = False
            result = {}
            for key, item in value.items():
                new_key = self.redact(key) if isinstance(key, str) else key
                new_item = self.redact_value(item)
                changed = changed or new_key is not key or new_item is not item
                result[new_key] = new_item
            return result if changed else value
        if isinstance(value, list | tuple):
            items = [self.redact_value(item) for item in value]
            if all(new is old for new, old in zip(items, value, strict=True)):
                return value
            return items
        return value

    def stream(self) -> StreamRedactor:
        return StreamRedactor(self)

    def _spans(self, text: str, start: int = 0) -> Iterator[tuple[int, int, str]]:
        """(start, end, replacement) of each redacted stretch from `start` on, in order;
        matches that overlap are merged into one stretch, named after the first."""
        search = (self._regex if self._may_hold_a_value(text) else _SHAPES_ONLY).search
        match = search(text, start)
        while match is not None:
            begin, end = match.span()
            name = self._names.get(match.group())
            following = search(text, begin + 1)
            while following is not None and following.start() < end:
                end = max(end, following.end())
                following = search(text, following.start() + 1)
            yield begin, end, REDACTED if name is None else label(name)
            match = following

    def _may_hold_a_value(self, text: str) -> bool:
        if not self._anchors:
            return False
        data = text.encode("utf-8", "surrogatepass")
        usable = len(data) - len(data) % 4
        return not self._anchors.isdisjoint(memoryview(data)[:usable].cast("I"))

    def _growing_from(self, text: str, low: int) -> int:
        """Where, at or after `low`, the earliest stretch starts that is a beginning of a
        match and runs to the end of `text` (len(text) when there is none): text from there
        on may yet turn out to be a secret."""
        size = len(text)
        window = max(low, size - self.longest)
        hold = size
        found = _SHAPE_BEGINNING.search(text, window)
        if found is not None:
            hold = found.start()
        # A beginning of a value is no longer than the value, and made of its characters only.
        start = max(window, size - self._longest_form, len(text.rstrip(self._form_chars)))
        for position in range(start, hold):
            if self._begins_a_form(text[position:]):
                return position
        return hold

    def _begins_a_form(self, tail: str) -> bool:
        at = bisect_left(self._forms, tail)
        return at < len(self._forms) and self._forms[at].startswith(tail)


class StreamRedactor:
    """Redacts text that arrives in pieces (a model's streamed answer): `feed` returns what is
    safe to show now, `flush` the rest at the end. The output, joined, is what `redact` makes
    of the whole text."""

    # Characters of the text already shown that are kept as context: some shapes must not
    # follow a letter, and the piece that follows must be judged as the whole text would be.
    _CONTEXT = 8

    def __init__(self, redactor: Redactor) -> None:
        self._redactor = redactor
        self._before = ""
        self._pending = ""

    def feed(self, chunk: str) -> str:
        text = self._before + self._pending + chunk
        low = len(self._before)
        hold = self._redactor._growing_from(text, low)
        parts: list[str] = []
        done = low
        for start, end, replacement in self._redactor._spans(text, low):
            if end > hold:  # may still grow, or overlap what may: decide later
                hold = min(hold, start)
                break
            parts.append(text[done:start])
            parts.append(replacement)
            done = end
        if hold > done:
            parts.append(text[done:hold])
        kept = max(done, hold)
        self._before = text[max(0, kept - self._CONTEXT) : kept]
        self._pending = text[kept:]
        return "".join(parts)

    def flush(self) -> str:
        text = self._before + self._pending
        start = len(self._before)
        self._before = self._pending = ""
        return self._redactor._redact(text, start)
