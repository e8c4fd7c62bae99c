"""Query parameters as the API server reads them: booleans as Go's strconv.ParseBool does
(kubernetes_asyncio sends Python's `True`), integers, and 400 BadRequest for anything else."""

from __future__ import annotations

from collections.abc import Mapping

from tests.emulators.kubernetes.errors import bad_request

_TRUE = {"1", "t", "T", "true", "TRUE", "True"}
_FALSE = {"0", "f", "F", "false", "FALSE", "False"}


def flag(query: Mapping[str, str], name: str) -> bool:
    value = query.get(name)
    if value is None or value == "" or value in _FALSE:
        return False
    if value in _TRUE:
        return True
    raise bad_request(f"{name}: invalid boolean value {value!r}")


def integer(query: Mapping[str, str], name: str) -> int | None:
    value = query.get(name)
    if value is None or value == "":
        return None
    try:
        return int(value)
    except ValueError:
        raise bad_request(f"{name}: invalid integer value {value!r}") from None
