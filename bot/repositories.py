"""Which repository a request is about: named in it, the person's default, the channel's
default, the only one there is, a keyword rule; otherwise nobody can tell, and the bot asks."""

from __future__ import annotations

import re
from typing import Any

from core.engine import Engine

_URL = re.compile(
    r"https?://[^\s/]+/([A-Za-z0-9_.\-]+)/([A-Za-z0-9_.\-]+?)(?:\.git)?(?:[/#?]\S*)?$"
)
_OWNER_NAME = re.compile(r"[A-Za-z0-9_.\-]+/[A-Za-z0-9_.\-]+")


def channel_default_key(channel: str) -> str:
    return f"slack.channel_default:{channel}"


KEYWORD_RULES = "slack.keyword_rules"


def named_in(text: str, known: list[str]) -> str | None:
    """A word of `text` that names a known repository (`owner/name` or a URL to it, any case)."""
    by_lower = {name.lower(): name for name in known}
    for word in re.split(r"[\s,;()\[\]<>|`'\"]+", text):
        word = word.rstrip(".:!?")
        url = _URL.match(word)
        candidate = f"{url[1]}/{url[2]}" if url else word
        if _OWNER_NAME.fullmatch(candidate) and candidate.lower() in by_lower:
            return by_lower[candidate.lower()]
    return None


def by_keyword(text: str, rules: list[Any], known: list[str]) -> str | None:
    """The first rule whose keyword is a word of `text` (rules: [[keyword, repository], …])."""
    words = {w.lower() for w in re.findall(r"[\w\-.]+", text)}
    for rule in rules or []:
        if isinstance(rule, list) and len(rule) == 2 and rule[0].lower() in words:
            if rule[1] in known:
                return rule[1]
    return None


async def resolve(
    engine: Engine, text: str, channel: str, person_default: str | None = None
) -> str | None:
    """`person_default` is the asking person's own default. It comes before the channel's:
    what someone chose for themselves says more about what they mean than where they ask."""
    known = await engine.repositories()
    if (named := named_in(text, known)) is not None:
        return named
    if person_default in known:
        return person_default
    default = await engine.setting(channel_default_key(channel))
    if default in known:
        return default
    if len(known) == 1:
        return known[0]
    return by_keyword(text, await engine.setting(KEYWORD_RULES) or [], known)


_CHANNEL_DEFAULT = channel_default_key("")


def channel_defaults(settings: dict[str, Any]) -> dict[str, str]:
    """Channel → default repository, from all the run-time settings."""
    return {
        name.removeprefix(_CHANNEL_DEFAULT): value
        for name, value in settings.items()
        if name.startswith(_CHANNEL_DEFAULT) and isinstance(value, str)
    }


def keyword_rules(settings: dict[str, Any]) -> list[list[str]]:
    """[[keyword, repository], …] in the order they are tried, from all the run-time settings."""
    rules = settings.get(KEYWORD_RULES) or []
    return [r for r in rules if isinstance(r, list) and len(r) == 2]


async def set_keyword_rule(engine: Engine, keyword: str, repository: str | None, by: str) -> None:
    """Route `keyword` to `repository` (replacing its rule), or with None remove its rule."""
    keyword = keyword.lower()

    def change(rules: list[Any] | None) -> list[Any] | None:
        kept = [r for r in rules or [] if r[0] != keyword]
        return [*kept, [keyword, repository]] if repository is not None else kept or None

    await engine.update_setting(KEYWORD_RULES, change, by)
