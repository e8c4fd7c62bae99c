"""Label and field selectors, in the syntax and with the meaning of apimachinery's `labels` and
`fields` packages: `a=b`, `a==b`, `a!=b`, `a`, `!a`, `a in (x,y)`, `a notin (x)`, `a>1`,
`a<1`, the comma meaning AND."""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from tests.emulators.kubernetes.errors import bad_request

_KEY = r"[A-Za-z0-9](?:[-A-Za-z0-9_./]*[A-Za-z0-9])?"
_VALUE = r"(?:[A-Za-z0-9](?:[-A-Za-z0-9_.]*[A-Za-z0-9])?)?"
_EXISTS = re.compile(rf"^(!?)\s*({_KEY})$")
_SET = re.compile(rf"^({_KEY})\s+(in|notin)\s*\(([^()]*)\)$")
_COMPARE = re.compile(rf"^({_KEY})\s*(==|=|!=|>|<)\s*({_VALUE})$")

# The fields each resource may be selected on (the real server refuses any other).
FIELDS: dict[str, dict[str, Callable[[dict[str, Any]], str]]] = {}


def _path(*keys: str) -> Callable[[dict[str, Any]], str]:
    def read(obj: dict[str, Any]) -> str:
        value: Any = obj
        for key in keys:
            value = value.get(key) if isinstance(value, dict) else None
        if isinstance(value, bool):
            return str(value).lower()
        return "" if value is None else str(value)

    return read


_METADATA = {
    "metadata.name": _path("metadata", "name"),
    "metadata.namespace": _path("metadata", "namespace"),
}
FIELDS["pods"] = _METADATA | {
    f"{part}.{key}": _path(part, key)
    for part, keys in {
        "spec": ("nodeName", "restartPolicy", "schedulerName", "serviceAccountName", "hostNetwork"),
        "status": ("phase", "podIP", "nominatedNodeName"),
    }.items()
    for key in keys
}
FIELDS["secrets"] = _METADATA | {"type": _path("type")}
FIELDS["persistentvolumeclaims"] = dict(_METADATA)


@dataclass(frozen=True)
class Requirement:
    key: str
    operator: str  # =, !=, in, notin, exists, !, >, <
    values: tuple[str, ...] = ()

    def matches(self, labels: dict[str, str]) -> bool:
        present = self.key in labels
        value = labels.get(self.key)
        if self.operator == "exists":
            return present
        if self.operator == "!":
            return not present
        if self.operator in ("=", "in"):
            return present and value in self.values
        if self.operator in ("!=", "notin"):
            return not present or value not in self.values
        try:  # > and <: integers on both sides, or no match
            have, bound = int(value or ""), int(self.values[0])
        except ValueError:
            return False
        return have > bound if self.operator == ">" else have < bound


def _split(text: str) -> list[str]:
    """Requirements split at the commas outside parentheses."""
    parts, depth, current = [], 0, ""
    for char in text:
        depth += {"(": 1, ")": -1}.get(char, 0)
        if char == "," and depth == 0:
            parts.append(current)
            current = ""
        else:
            current += char
    parts.append(current)
    return [part.strip() for part in parts]


def parse_labels(text: str | None) -> list[Requirement]:
    """A label selector's requirements; 400 BadRequest for one that does not parse."""
    if not text or not text.strip():
        return []
    requirements = []
    for part in _split(text):
        if found := _SET.match(part):
            values = tuple(v.strip() for v in found[3].split(","))
            if not all(re.fullmatch(_VALUE, v) for v in values):
                raise bad_request(f"unable to parse requirement: invalid values in {part!r}")
            requirements.append(Requirement(found[1], found[2], values))
        elif found := _COMPARE.match(part):
            operator = "=" if found[2] == "==" else found[2]
            if operator in "<>" and not re.fullmatch(r"-?\d+", found[3]):
                raise bad_request(f"unable to parse requirement: {part!r}: not an integer")
            requirements.append(Requirement(found[1], operator, (found[3],)))
        elif found := _EXISTS.match(part):
            requirements.append(Requirement(found[2], "!" if found[1] else "exists"))
        else:
            raise bad_request(f"unable to parse requirement: found {part!r}, expected a selector")
    return requirements


def parse_fields(resource: str, text: str | None) -> list[tuple[str, bool, str]]:
    """A field selector as (field, equal, value) terms; 400 for a field it cannot select on."""
    if not text or not text.strip():
        return []
    terms = []
    for part in text.split(","):
        found = re.fullmatch(r"\s*([A-Za-z0-9_.]+)\s*(==|=|!=)\s*(.*?)\s*", part)
        if found is None:
            raise bad_request(f"invalid selector: '{text}'; can't understand '{part}'")
        if found[1] not in FIELDS[resource]:
            raise bad_request(f"field label not supported: {found[1]}")
        terms.append((found[1], found[2] != "!=", found[3]))
    return terms


@dataclass(frozen=True)
class Selector:
    resource: str
    labels: list[Requirement]
    fields: list[tuple[str, bool, str]]

    @classmethod
    def parse(cls, resource: str, labels: str | None, fields: str | None) -> Selector:
        return cls(resource, parse_labels(labels), parse_fields(resource, fields))

    def matches(self, obj: dict[str, Any]) -> bool:
        labels = obj.get("metadata", {}).get("labels") or {}
        if not all(requirement.matches(labels) for requirement in self.labels):
            return False
        readers = FIELDS[self.resource]
        return all((readers[f](obj) == value) == equal for f, equal, value in self.fields)
