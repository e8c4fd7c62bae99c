"""PATCH bodies: JSON merge patches (RFC 7386), strategic merge patches (a merge patch whose
lists of named things merge by key, as the API's `x-kubernetes-patch-merge-key` says), and
JSON patches (RFC 6902, `test` included)."""

from __future__ import annotations

import copy
from typing import Any

from tests.emulators.kubernetes.errors import ApiError, bad_request, unsupported_media_type

MERGE_PATCH = "application/merge-patch+json"
STRATEGIC = "application/strategic-merge-patch+json"
JSON_PATCH = "application/json-patch+json"

# The core/v1 lists a strategic merge patch merges element by element, and their merge key.
MERGE_KEYS = {
    "containers": "name",
    "initContainers": "name",
    "ephemeralContainers": "name",
    "volumes": "name",
    "env": "name",
    "imagePullSecrets": "name",
    "resourceClaims": "name",
    "volumeMounts": "mountPath",
    "volumeDevices": "devicePath",
    "ports": "containerPort",
    "hostAliases": "ip",
    "ownerReferences": "uid",
    "conditions": "type",
}


def apply(content_type: str, target: dict[str, Any], patch: Any) -> dict[str, Any]:
    kind = content_type.split(";")[0].strip().lower()
    if kind in (MERGE_PATCH, STRATEGIC):
        if not isinstance(patch, dict):
            raise bad_request("a merge patch must be a JSON object")
        return merge(target, patch, strategic=kind == STRATEGIC)
    if kind == JSON_PATCH:
        if not isinstance(patch, list):
            raise bad_request("a JSON patch must be a JSON array of operations")
        return json_patch(target, patch)
    raise unsupported_media_type(content_type)


def merge(target: Any, patch: Any, strategic: bool = False, field: str = "") -> Any:
    """RFC 7386: objects merge key by key, null removes, anything else replaces."""
    if not isinstance(patch, dict):
        if strategic and field in MERGE_KEYS and isinstance(patch, list):
            return _merge_list(target, patch, MERGE_KEYS[field])
        return copy.deepcopy(patch)
    if strategic and patch.get("$patch") == "replace":
        return {k: copy.deepcopy(v) for k, v in patch.items() if not k.startswith("$")}
    result = copy.deepcopy(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if strategic and key.startswith("$"):
            continue  # directives ($setElementOrder, $retainKeys): order and pruning only
        if value is None:
            result.pop(key, None)
        else:
            result[key] = merge(result.get(key), value, strategic, key)
    return result


def _merge_list(target: Any, patch: list[Any], key: str) -> list[Any]:
    if not isinstance(target, list) or not all(isinstance(item, dict) for item in patch):
        return copy.deepcopy(patch)
    result = copy.deepcopy(target)
    for item in patch:
        index = next(
            (
                i
                for i, old in enumerate(result)
                if isinstance(old, dict) and old.get(key) == item.get(key)
            ),
            None,
        )
        if item.get("$patch") == "delete":
            if index is not None:
                del result[index]
        elif index is None:
            result.append(merge(None, item, strategic=True))
        else:
            result[index] = merge(result[index], item, strategic=True)
    return result


def _rejected(message: str) -> ApiError:
    return ApiError(
        422,
        "Invalid",
        f"the server rejected our request due to an error in our request: {message}",
        {"causes": [{"reason": "UnexpectedServerResponse", "message": message}]},
    )


def _pointer(path: Any) -> list[str]:
    if not isinstance(path, str) or (path and not path.startswith("/")):
        raise bad_request(f"invalid JSON pointer: {path!r}")
    return [part.replace("~1", "/").replace("~0", "~") for part in path.split("/")[1:]]


def _parent(doc: Any, parts: list[str], path: str) -> tuple[Any, str]:
    node = doc
    for part in parts[:-1]:
        if isinstance(node, dict) and part in node:
            node = node[part]
        elif isinstance(node, list) and part.isdigit() and int(part) < len(node):
            node = node[int(part)]
        else:
            raise _rejected(f"doc is missing path: {path!r}")
    return node, parts[-1]


def _get(doc: Any, path: str) -> Any:
    parts = _pointer(path)
    if not parts:
        return doc
    node, last = _parent(doc, parts, path)
    if isinstance(node, dict) and last in node:
        return node[last]
    if isinstance(node, list) and last.isdigit() and int(last) < len(node):
        return node[int(last)]
    raise _rejected(f"doc is missing path: {path!r}")


def _remove(doc: Any, path: str) -> Any:
    parts = _pointer(path)
    if not parts:
        raise _rejected("cannot remove the whole document")
    node, last = _parent(doc, parts, path)
    if isinstance(node, dict) and last in node:
        return node.pop(last)
    if isinstance(node, list) and last.isdigit() and int(last) < len(node):
        return node.pop(int(last))
    raise _rejected(f"unable to remove nonexistent key: {last}: missing value")


def _add(doc: Any, path: str, value: Any, replace: bool = False) -> Any:
    parts = _pointer(path)
    if not parts:
        return value
    node, last = _parent(doc, parts, path)
    if isinstance(node, dict):
        if replace and last not in node:
            raise _rejected(f"replace operation does not apply: doc is missing key: {path}")
        node[last] = value
    elif isinstance(node, list):
        index = len(node) if last == "-" and not replace else int(last) if last.isdigit() else -1
        if replace and 0 <= index < len(node):
            node[index] = value
        elif not replace and 0 <= index <= len(node):
            node.insert(index, value)  # at len(node): appended
        else:
            raise _rejected(f"index out of bounds in {path!r}")
    else:
        raise _rejected(f"doc is missing path: {path!r}")
    return doc


def json_patch(target: dict[str, Any], operations: list[Any]) -> dict[str, Any]:
    doc: Any = copy.deepcopy(target)
    for operation in operations:
        if not isinstance(operation, dict) or "op" not in operation or "path" not in operation:
            raise bad_request(f"invalid JSON patch operation: {operation!r}")
        op, path = operation["op"], operation["path"]
        if op in ("add", "replace", "test") and "value" not in operation:
            raise bad_request(f"{op} operation at {path!r} has no value")
        if op == "add":
            doc = _add(doc, path, copy.deepcopy(operation["value"]))
        elif op == "replace":
            doc = _add(doc, path, copy.deepcopy(operation["value"]), replace=True)
        elif op == "remove":
            _remove(doc, path)
        elif op in ("move", "copy"):
            source = operation.get("from")
            value = _remove(doc, source) if op == "move" else copy.deepcopy(_get(doc, source))
            doc = _add(doc, path, value)
        elif op == "test":
            if _get(doc, path) != operation["value"]:
                raise _rejected(f"testing value {path} failed: test failed")
        else:
            raise bad_request(f"unexpected JSON patch operation {op!r}")
    if not isinstance(doc, dict):
        raise _rejected("the patched document is not an object")
    return doc
