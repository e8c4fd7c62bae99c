"""The three core/v1 resources served, and what the API server does to an object before storing
it: defaulting, the admission plugins' additions (pvc-protection's finalizer, default
tolerations), the scheduler's binding (all pods go to the one node), claims bound at once, and
on update keeping what the client may not change through the main resource (status, uid...)."""

from __future__ import annotations

import base64
import binascii
import copy
import time
from dataclasses import dataclass
from typing import Any

from tests.emulators.kubernetes.errors import bad_request

Obj = dict[str, Any]
NODE = "emulator-node"
PVC_PROTECTION = "kubernetes.io/pvc-protection"


@dataclass(frozen=True)
class Kind:
    resource: str
    kind: str
    short_names: tuple[str, ...]

    @property
    def list_kind(self) -> str:
        return self.kind + "List"


KINDS = {
    "pods": Kind("pods", "Pod", ("po",)),
    "secrets": Kind("secrets", "Secret", ()),
    "persistentvolumeclaims": Kind("persistentvolumeclaims", "PersistentVolumeClaim", ("pvc",)),
}
RESOURCE_OF_KIND = {kind.kind: resource for resource, kind in KINDS.items()}


def now(offset: float = 0) -> str:
    """A metav1.Time: RFC 3339, to the second."""
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() + offset))


def defaults(resource: str, obj: Obj) -> None:
    """The API's defaulting, done on every write, so an update compares like with like."""
    if resource == "pods":
        _pod_defaults(obj.setdefault("spec", {}))
    elif resource == "secrets":
        obj.setdefault("type", "Opaque")
        _string_data(obj)
    elif resource == "persistentvolumeclaims":
        spec = obj.setdefault("spec", {})
        spec.setdefault("volumeMode", "Filesystem")
        spec.setdefault("storageClassName", "standard")


def _pod_defaults(spec: Obj) -> None:
    for key, value in {
        "restartPolicy": "Always",
        "terminationGracePeriodSeconds": 30,
        "dnsPolicy": "ClusterFirst",
        "securityContext": {},
        "schedulerName": "default-scheduler",
        "enableServiceLinks": True,
        "priority": 0,
        "preemptionPolicy": "PreemptLowerPriority",
    }.items():
        spec.setdefault(key, value)
    spec.setdefault("serviceAccountName", spec.get("serviceAccount") or "default")
    spec.setdefault("serviceAccount", spec["serviceAccountName"])
    for container in [*(spec.get("initContainers") or []), *(spec.get("containers") or [])]:
        image = str(container.get("image") or "")
        tagged = ":" in image.rsplit("/", 1)[-1] and not image.endswith(":latest")
        container.setdefault("imagePullPolicy", "IfNotPresent" if tagged else "Always")
        container.setdefault("terminationMessagePath", "/dev/termination-log")
        container.setdefault("terminationMessagePolicy", "File")
        resources = container.setdefault("resources", {})
        if resources.get("limits"):  # requests default to the limits
            resources["requests"] = {**resources["limits"], **(resources.get("requests") or {})}
        for port in container.get("ports") or []:
            port.setdefault("protocol", "TCP")
        for env in container.get("env") or []:
            field_ref = (env.get("valueFrom") or {}).get("fieldRef")
            if field_ref is not None:
                field_ref.setdefault("apiVersion", "v1")
    for volume in spec.get("volumes") or []:
        if volume.get("secret") is not None:
            volume["secret"].setdefault("defaultMode", 0o644)


def _string_data(secret: Obj) -> None:
    """stringData is write-only: merged into data, base64 encoded; data must be base64."""
    for key, value in (secret.get("data") or {}).items():
        try:
            base64.b64decode(value or "", validate=True)
        except (binascii.Error, TypeError):
            raise bad_request(
                f'Secret in version "v1" cannot be handled as a Secret: illegal base64 data in '
                f"key {key!r}"
            ) from None
    string_data = secret.pop("stringData", None) or {}
    if string_data:
        data = secret.setdefault("data", {})
        for key, value in string_data.items():
            data[key] = base64.b64encode(str(value).encode()).decode()


def prepare_create(resource: str, obj: Obj) -> None:
    """What storing a new object adds: the status the client may not choose, the admission
    plugins' and scheduler's work."""
    meta = obj["metadata"]
    if resource == "pods":
        spec = obj["spec"]
        tolerations = spec.setdefault("tolerations", [])
        for taint in ("not-ready", "unreachable"):
            key = f"node.kubernetes.io/{taint}"
            if not any(t.get("key") == key for t in tolerations):
                tolerations.append(
                    {
                        "key": key,
                        "operator": "Exists",
                        "effect": "NoExecute",
                        "tolerationSeconds": 300,
                    }
                )
        spec.setdefault("nodeName", NODE)
        obj["status"] = {
            "phase": "Pending",
            "conditions": [
                {
                    "type": "PodScheduled",
                    "status": "True",
                    "lastProbeTime": None,
                    "lastTransitionTime": now(),
                }
            ],
            "qosClass": _qos_class(spec),
        }
    elif resource == "persistentvolumeclaims":
        meta["finalizers"] = [*(meta.get("finalizers") or []), PVC_PROTECTION]
        spec = obj["spec"]
        spec.setdefault("volumeName", f"pvc-{meta['uid']}")
        obj["status"] = {
            "phase": "Bound",
            "accessModes": list(spec.get("accessModes") or []),
            "capacity": {"storage": spec["resources"]["requests"]["storage"]},
        }


def prepare_update(resource: str, old: Obj, new: Obj) -> None:
    """Keep what an update through the main resource cannot change."""
    meta, before = new.setdefault("metadata", {}), old["metadata"]
    for key in (
        "uid",
        "creationTimestamp",
        "deletionTimestamp",
        "deletionGracePeriodSeconds",
        "generation",
        "namespace",
        "name",
    ):
        if key in before:
            meta[key] = before[key]
        else:
            meta.pop(key, None)
    if "status" in old:
        new["status"] = copy.deepcopy(old["status"])
    if resource == "pods" and "nodeName" in old["spec"]:
        new.setdefault("spec", {}).setdefault("nodeName", old["spec"]["nodeName"])


def _qos_class(spec: Obj) -> str:
    containers = [*(spec.get("initContainers") or []), *(spec.get("containers") or [])]
    resources = [c.get("resources") or {} for c in containers]
    if not any(r.get("requests") or r.get("limits") for r in resources):
        return "BestEffort"
    for r in resources:
        limits, requests = r.get("limits") or {}, r.get("requests") or {}
        for name in ("cpu", "memory"):
            if name not in limits or requests.get(name, limits[name]) != limits[name]:
                return "Burstable"
    return "Guaranteed"
