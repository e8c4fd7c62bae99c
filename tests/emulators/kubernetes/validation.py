"""What the API server refuses with 422 Invalid: objects that do not match the Kubernetes 1.33
OpenAPI schemas (strictly: unknown fields too), and the semantic rules the schemas cannot say
(names, labels, required containers and images, volume references, quantities, the fields an
update may not change)."""

from __future__ import annotations

import functools
import json
import re
from typing import Any

import jsonschema
from kubernetes_validate.utils import schema_contents
from referencing import Registry, Resource

from tests.emulators.kubernetes.errors import Cause, invalid

KUBERNETES_VERSION = "1.33.0"
_SCHEMAS = f"kubernetes-json-schema/v{KUBERNETES_VERSION}-local-strict"

_DNS_LABEL = r"[a-z0-9]([-a-z0-9]*[a-z0-9])?"
_DNS_SUBDOMAIN = rf"{_DNS_LABEL}(\.{_DNS_LABEL})*"
_QUALIFIED_NAME = r"([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]"
_CONFIG_KEY = r"[-._a-zA-Z0-9]+"
_QUANTITY = r"[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+|[KMGTPE]i|[numkMGTPE])?"
_VOLUME_TYPES = (
    "hostPath emptyDir gcePersistentDisk awsElasticBlockStore gitRepo secret nfs iscsi glusterfs "
    "persistentVolumeClaim rbd flexVolume cinder cephfs flocker downwardAPI fc azureFile "
    "configMap vsphereVolume quobyte azureDisk photonPersistentDisk projected portworxVolume "
    "scaleIO storageos csi ephemeral image"
).split()
_ENUMS = {
    "spec.restartPolicy": ("Always", "OnFailure", "Never"),
    "spec.dnsPolicy": ("ClusterFirstWithHostNet", "ClusterFirst", "Default", "None"),
    "imagePullPolicy": ("Always", "IfNotPresent", "Never"),
    "accessModes": ("ReadWriteOnce", "ReadOnlyMany", "ReadWriteMany", "ReadWriteOncePod"),
}
_KINDS = {"pods": "Pod", "secrets": "Secret", "persistentvolumeclaims": "PersistentVolumeClaim"}


@functools.cache
def _validator(kind: str) -> jsonschema.Draft202012Validator:
    """Built once per kind: kubernetes_validate.validate rebuilds it (tens of ms) every call."""
    schema = schema_contents(f"{_SCHEMAS}/{kind.lower()}-v1.json", KUBERNETES_VERSION)
    definitions = schema_contents(f"{_SCHEMAS}/_definitions.json", KUBERNETES_VERSION)
    registry = Resource.from_contents(definitions) @ (Resource.from_contents(schema) @ Registry())
    return jsonschema.Draft202012Validator(schema, registry=registry)


def field_path(parts: Any) -> str:
    path = ""
    for part in parts:
        path += f"[{part}]" if isinstance(part, int) else f".{part}" if path else str(part)
    return path


def _shown(value: Any) -> str:
    return json.dumps(value)


def schema_causes(obj: dict[str, Any]) -> list[Cause]:
    causes = []
    for error in _validator(obj["kind"]).iter_errors(obj):
        path = field_path(error.absolute_path)
        if error.validator == "additionalProperties" and isinstance(error.instance, dict):
            known = set(error.schema.get("properties", {}))
            for name in sorted(set(error.instance) - known):
                field = f"{path}.{name}" if path else name
                causes.append(Cause(field, "FieldValueInvalid", f'unknown field "{name}"'))
        elif error.validator == "type":
            types = [t for t in error.validator_value if t != "null"]
            message = (
                f"Invalid value: {_shown(error.instance)}: must be of type {' or '.join(types)}"
            )
            causes.append(Cause(path, "FieldValueTypeInvalid", message))
        elif error.validator == "required":
            missing = re.match(r"'([^']*)'", error.message)
            field = (
                f"{path}.{missing[1]}" if path and missing else (missing[1] if missing else path)
            )
            causes.append(Cause(field, "FieldValueRequired", "Required value"))
        else:
            message = f"Invalid value: {_shown(error.instance)}: {error.message}"
            causes.append(Cause(path, "FieldValueInvalid", message))
    return causes


class _Checks:
    """Collects the causes of one object's semantic problems."""

    def __init__(self) -> None:
        self.causes: list[Cause] = []

    def required(self, field: str, detail: str = "") -> None:
        self.causes.append(Cause(field, "FieldValueRequired", "Required value" + detail))

    def bad(self, field: str, value: Any, why: str) -> None:
        self.causes.append(
            Cause(field, "FieldValueInvalid", f"Invalid value: {_shown(value)}: {why}")
        )

    def forbidden(self, field: str, why: str) -> None:
        self.causes.append(Cause(field, "FieldValueForbidden", f"Forbidden: {why}"))

    def one_of(self, field: str, value: Any, allowed: tuple[str, ...]) -> None:
        if value is not None and value not in allowed:
            supported = ", ".join(_shown(a) for a in allowed)
            message = f"Unsupported value: {_shown(value)}: supported values: {supported}"
            self.causes.append(Cause(field, "FieldValueNotSupported", message))

    def unique(self, field: str, values: list[Any]) -> None:
        seen = set()
        for i, value in enumerate(values):
            if value in seen:
                message = f"Duplicate value: {_shown(value)}"
                self.causes.append(Cause(f"{field}[{i}]", "FieldValueDuplicate", message))
            seen.add(value)

    def dns_label(self, field: str, value: Any) -> None:
        if not isinstance(value, str) or not value:
            self.required(field)
        elif len(value) > 63 or not re.fullmatch(_DNS_LABEL, value):
            self.bad(
                field,
                value,
                "a lowercase RFC 1123 label must consist of lower case "
                "alphanumeric characters or '-', and must start and end with an alphanumeric "
                f"character (regex used for validation is '{_DNS_LABEL}')",
            )

    def quantities(self, field: str, values: Any) -> None:
        for name, value in (values or {}).items():
            if not re.fullmatch(_QUANTITY, str(value)):
                self.bad(
                    f"{field}[{name}]",
                    value,
                    "quantities must match the regular "
                    "expression '^([+-]?[0-9.]+)([eEinumkKMGTP]*[-+]?[0-9]*)$'",
                )


def _metadata(checks: _Checks, meta: dict[str, Any]) -> None:
    name = meta.get("name")
    if not name:
        checks.required("metadata.name", ": name or generateName is required")
    elif len(name) > 253 or not re.fullmatch(_DNS_SUBDOMAIN, name):
        checks.bad(
            "metadata.name",
            name,
            "a lowercase RFC 1123 subdomain must consist of lower "
            "case alphanumeric characters, '-' or '.', and must start and end with an "
            f"alphanumeric character (regex used for validation is '{_DNS_SUBDOMAIN}')",
        )
    for key, value in (meta.get("labels") or {}).items():
        if not _qualified(key):
            checks.bad(
                "metadata.labels",
                key,
                "name part must consist of alphanumeric "
                "characters, '-', '_' or '.', and must start and end with an alphanumeric "
                "character, with an optional DNS subdomain prefix and '/'",
            )
        if value and (len(value) > 63 or not re.fullmatch(_QUALIFIED_NAME, value)):
            checks.bad(
                "metadata.labels",
                value,
                "a valid label must be an empty string or "
                "consist of alphanumeric characters, '-', '_' or '.', and must start and end "
                "with an alphanumeric character, at most 63 characters",
            )
    for key in meta.get("annotations") or {}:
        if not _qualified(key):
            checks.bad("metadata.annotations", key, "not a qualified name")
    controllers = [ref for ref in meta.get("ownerReferences") or [] if ref.get("controller")]
    if len(controllers) > 1:
        checks.bad(
            "metadata.ownerReferences",
            controllers,
            "Only one reference can have Controller set to true",
        )


def _qualified(key: str) -> bool:
    prefix, _, name = key.rpartition("/")
    if prefix and (len(prefix) > 253 or not re.fullmatch(_DNS_SUBDOMAIN, prefix)):
        return False
    return len(name) <= 63 and bool(re.fullmatch(_QUALIFIED_NAME, name))


def _container(checks: _Checks, field: str, container: dict[str, Any], volumes: set[str]) -> None:
    checks.dns_label(f"{field}.name", container.get("name"))
    if not container.get("image"):
        checks.required(f"{field}.image")
    checks.one_of(
        f"{field}.imagePullPolicy", container.get("imagePullPolicy"), _ENUMS["imagePullPolicy"]
    )
    for i, env in enumerate(container.get("env") or []):
        name = env.get("name") or ""
        if not name or "=" in name:
            checks.bad(
                f"{field}.env[{i}].name",
                name,
                "a valid environment variable name "
                "must consist only of printable ASCII characters other than '='",
            )
        source = env.get("valueFrom")
        if source is not None:
            if env.get("value"):
                checks.bad(
                    f"{field}.env[{i}].valueFrom",
                    "",
                    "may not be specified when `value` is not empty",
                )
            if len([k for k, v in source.items() if v is not None]) != 1:
                checks.bad(
                    f"{field}.env[{i}].valueFrom",
                    source,
                    "must specify one of: "
                    "`fieldRef`, `resourceFieldRef`, `configMapKeyRef` or `secretKeyRef`",
                )
    mounts = container.get("volumeMounts") or []
    for i, mount in enumerate(mounts):
        if mount.get("name") not in volumes:
            message = f"Not found: {_shown(mount.get('name'))}"
            checks.causes.append(
                Cause(f"{field}.volumeMounts[{i}].name", "FieldValueNotFound", message)
            )
        if not mount.get("mountPath"):
            checks.required(f"{field}.volumeMounts[{i}].mountPath")
    checks.unique(f"{field}.volumeMounts", [m.get("mountPath") for m in mounts])
    for i, port in enumerate(container.get("ports") or []):
        if not 1 <= (port.get("containerPort") or 0) <= 65535:
            checks.bad(
                f"{field}.ports[{i}].containerPort",
                port.get("containerPort"),
                "must be between 1 and 65535, inclusive",
            )
    resources = container.get("resources") or {}
    checks.quantities(f"{field}.resources.limits", resources.get("limits"))
    checks.quantities(f"{field}.resources.requests", resources.get("requests"))


def _pod(checks: _Checks, spec: dict[str, Any]) -> None:
    volumes = spec.get("volumes") or []
    for i, volume in enumerate(volumes):
        checks.dns_label(f"spec.volumes[{i}].name", volume.get("name"))
        kinds = [k for k in volume if k in _VOLUME_TYPES and volume[k] is not None]
        if not kinds:
            checks.required(f"spec.volumes[{i}]", ": must specify a volume type")
        elif len(kinds) > 1:
            checks.forbidden(
                f"spec.volumes[{i}].{kinds[1]}", "may not specify more than 1 volume type"
            )
        for mode_field, mode in [
            ("secret.defaultMode", (volume.get("secret") or {}).get("defaultMode"))
        ]:
            if mode is not None and not 0 <= mode <= 0o777:
                checks.bad(
                    f"spec.volumes[{i}].{mode_field}",
                    mode,
                    "must be a number between 0 and 0777 (octal), both inclusive",
                )
    checks.unique("spec.volumes", [v.get("name") for v in volumes])
    names = {v.get("name") for v in volumes}
    containers = spec.get("containers") or []
    if not containers:
        checks.required("spec.containers")
    every = [("initContainers", c) for c in spec.get("initContainers") or []]
    every += [("containers", c) for c in containers]
    counters = {"initContainers": 0, "containers": 0}
    for part, container in every:
        _container(checks, f"spec.{part}[{counters[part]}]", container, names)
        counters[part] += 1
    checks.unique("spec.containers", [c.get("name") for _, c in every])
    checks.one_of("spec.restartPolicy", spec.get("restartPolicy"), _ENUMS["spec.restartPolicy"])
    checks.one_of("spec.dnsPolicy", spec.get("dnsPolicy"), _ENUMS["spec.dnsPolicy"])
    deadline = spec.get("activeDeadlineSeconds")
    if deadline is not None and deadline < 1:
        checks.bad(
            "spec.activeDeadlineSeconds", deadline, "must be between 1 and 2147483647, inclusive"
        )


def _secret(checks: _Checks, secret: dict[str, Any]) -> None:
    total = 0
    for key, value in (secret.get("data") or {}).items():
        if not re.fullmatch(_CONFIG_KEY, key):
            checks.bad(
                "data",
                key,
                "a valid config key must consist of alphanumeric characters, "
                "'-', '_' or '.' (regex used for validation is '[-._a-zA-Z0-9]+')",
            )
        total += len(value or "") * 3 // 4
    if total > 1024 * 1024:
        checks.causes.append(
            Cause("data", "FieldValueTooLong", "Too long: must have at most 1048576 bytes")
        )


def _claim(checks: _Checks, spec: dict[str, Any]) -> None:
    modes = spec.get("accessModes") or []
    if not modes:
        checks.required("spec.accessModes", ": at least 1 access mode is required")
    for i, mode in enumerate(modes):
        checks.one_of(f"spec.accessModes[{i}]", mode, _ENUMS["accessModes"])
    requests = (spec.get("resources") or {}).get("requests") or {}
    if "storage" not in requests:
        checks.required("spec.resources[storage]")
    checks.quantities("spec.resources.requests", requests)


def check(resource: str, obj: dict[str, Any]) -> None:
    """422 Invalid, naming every problem, unless `obj` is a valid `resource` object."""
    causes = schema_causes(obj)
    if not causes:  # the semantic rules read fields the schema has vouched for
        checks = _Checks()
        _metadata(checks, obj.get("metadata") or {})
        if resource == "pods":
            _pod(checks, obj.get("spec") or {})
        elif resource == "secrets":
            _secret(checks, obj)
        else:
            _claim(checks, obj.get("spec") or {})
        causes = checks.causes
    if causes:
        raise invalid(_KINDS[resource], (obj.get("metadata") or {}).get("name") or "", causes)


def check_update(resource: str, old: dict[str, Any], new: dict[str, Any]) -> None:
    """422 Invalid for a change the resource does not allow once created."""
    checks = _Checks()
    if resource == "pods":
        _pod_update(checks, old["spec"], new.get("spec") or {})
    elif resource == "secrets" and old.get("immutable"):
        if new.get("data") != old.get("data"):
            checks.forbidden("data", "field is immutable when `immutable` is set")
        if new.get("immutable") is not True:
            checks.forbidden("immutable", "field is immutable when `immutable` is set")
    elif resource == "persistentvolumeclaims":

        def frozen(spec: dict[str, Any]) -> dict[str, Any]:
            return {
                k: v for k, v in spec.items() if k not in ("resources", "volumeAttributesClassName")
            }

        if frozen(old["spec"]) != frozen(new.get("spec") or {}):
            checks.forbidden(
                "spec",
                "spec is immutable after creation except resources.requests "
                "and volumeAttributesClassName for bound claims",
            )
    if checks.causes:
        raise invalid(_KINDS[resource], old["metadata"]["name"], checks.causes)


def _pod_update(checks: _Checks, old: dict[str, Any], new: dict[str, Any]) -> None:
    """A pod's spec may change only in its containers' images, its activeDeadlineSeconds (set,
    or lowered) and added tolerations."""
    before, after = old.get("activeDeadlineSeconds"), new.get("activeDeadlineSeconds")
    if before is not None and after is None:
        checks.bad(
            "spec.activeDeadlineSeconds",
            after,
            "must not update from a positive integer to nil value",
        )
    elif before is not None and after > before:
        checks.bad(
            "spec.activeDeadlineSeconds", after, "must be less than or equal to previous value"
        )

    def frozen(spec: dict[str, Any]) -> dict[str, Any]:
        spec = json.loads(json.dumps(spec))
        spec.pop("activeDeadlineSeconds", None)
        spec.pop("tolerations", None)
        for part in ("containers", "initContainers"):
            for container in spec.get(part) or []:
                container.pop("image", None)
        return spec

    added = new.get("tolerations") or []
    if (
        frozen(old) != frozen(new)
        or (old.get("tolerations") or []) != added[: len(old.get("tolerations") or [])]
    ):
        checks.forbidden(
            "spec",
            "pod updates may not change fields other than "
            "`spec.containers[*].image`,`spec.initContainers[*].image`,"
            "`spec.activeDeadlineSeconds`,`spec.tolerations` (only additions to "
            "existing tolerations),`spec.terminationGracePeriodSeconds` (allow it to "
            "be set to 1 if it was previously negative)",
        )
