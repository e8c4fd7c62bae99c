"""Reading the Kubernetes manifests the way a cluster would: rendered by `kubectl kustomize`,
validated against the API's schemas, label selectors matched, pods held to the restricted Pod
Security profile."""

from __future__ import annotations

import functools
import ipaddress
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

MANIFESTS = Path(__file__).parent.parent / "manifests"
KUBERNETES_VERSION = "1.33.0"
WORKLOADS = ("Deployment", "StatefulSet", "DaemonSet", "ReplicaSet", "Job")
# The volume types the restricted Pod Security profile allows.
RESTRICTED_VOLUMES = {
    "configMap",
    "csi",
    "downwardAPI",
    "emptyDir",
    "ephemeral",
    "persistentVolumeClaim",
    "projected",
    "secret",
}

Obj = dict[str, Any]


def kubectl() -> str:
    """`kubectl` (Debian's kubernetes-client), or the one $KUBECTL names."""
    found = os.environ.get("KUBECTL") or shutil.which("kubectl")
    if not found:
        pytest.fail("kubectl is not installed (apt-get install kubernetes-client)")
    return found


def kustomizations() -> list[str]:
    """Every directory under manifests/ with a kustomization, relative to manifests/."""
    found = MANIFESTS.rglob("kustomization.yaml")
    return sorted(str(path.parent.relative_to(MANIFESTS)) for path in found)


@functools.cache
def render(kustomization: str) -> tuple[Obj, ...]:
    done = subprocess.run(
        [kubectl(), "kustomize", str(MANIFESTS / kustomization)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, f"kubectl kustomize {kustomization}: {done.stderr}"
    return tuple(doc for doc in yaml.safe_load_all(done.stdout) if doc)


def validate(obj: Obj) -> None:
    """Strict validation against the schemas of KUBERNETES_VERSION: unknown fields and kinds
    fail, as the API server would refuse them."""
    meta = obj.get("metadata", {})
    name = f"{obj.get('kind')}/{meta.get('name') or meta.get('generateName')}"
    try:
        kubernetes_validate.validate(obj, KUBERNETES_VERSION, strict=True)
        return
    except kubernetes_validate.SchemaNotFoundError as exc:
        problem = exc.message
    except kubernetes_validate.ValidationError as exc:
        problem = f"invalid at {'.'.join(str(part) for part in exc.path)}: {exc.message}"
    pytest.fail(f"{name}: {problem}", pytrace=False)


def of_kind(objects: tuple[Obj, ...], kind: str) -> list[Obj]:
    return [obj for obj in objects if obj["kind"] == kind]


def one(objects: tuple[Obj, ...], kind: str, name: str) -> Obj:
    found = [obj for obj in of_kind(objects, kind) if obj["metadata"]["name"] == name]
    assert len(found) == 1, f"expected one {kind} {name}, found {len(found)}"
    return found[0]


def selects(selector: Obj | None, labels: dict[str, str]) -> bool:
    """Whether a label selector matches `labels` (an empty selector matches everything)."""
    selector = selector or {}
    for key, value in (selector.get("matchLabels") or {}).items():
        if labels.get(key) != value:
            return False
    for expr in selector.get("matchExpressions") or []:
        key, operator, values = expr["key"], expr["operator"], expr.get("values") or []
        present = key in labels
        if operator == "In" and not (present and labels[key] in values):
            return False
        if operator == "NotIn" and present and labels[key] in values:
            return False
        if operator == "Exists" and not present:
            return False
        if operator == "DoesNotExist" and present:
            return False
    return True


def pods(objects: tuple[Obj, ...]) -> list[tuple[str, Obj, Obj]]:
    """(namespace, labels, pod spec) of every workload's pod template."""
    found = []
    for obj in objects:
        if obj["kind"] in WORKLOADS:
            template = obj["spec"]["template"]
            labels = template["metadata"].get("labels", {})
            found.append((obj["metadata"]["namespace"], labels, template["spec"]))
    return found


def covered(address: str, networks: list[str]) -> bool:
    ip = ipaddress.ip_address(address)
    return any(ip in ipaddress.ip_network(network) for network in networks)


def restricted_violations(spec: Obj) -> list[str]:
    """What keeps a pod spec from the restricted Pod Security profile (and our own rule that
    every container has requests and limits)."""
    wrong = []
    pod = spec.get("securityContext") or {}
    for key in ("hostNetwork", "hostPID", "hostIPC"):
        if spec.get(key):
            wrong.append(f"{key} is set")
    for volume in spec.get("volumes") or []:
        if not set(volume) - {"name"} <= RESTRICTED_VOLUMES:
            wrong.append(f"volume {volume['name']} is of a type the profile forbids")
    for container in [*spec.get("initContainers", []), *spec["containers"]]:
        own = container.get("securityContext") or {}
        name = container["name"]

        def setting(key: str, own: Obj = own) -> Any:
            return own.get(key, pod.get(key))

        if setting("runAsNonRoot") is not True:
            wrong.append(f"{name}: runAsNonRoot is not true")
        if setting("runAsUser") == 0:
            wrong.append(f"{name}: runs as root")
        if (setting("seccompProfile") or {}).get("type") not in ("RuntimeDefault", "Localhost"):
            wrong.append(f"{name}: no RuntimeDefault seccomp profile")
        if own.get("allowPrivilegeEscalation") is not False:
            wrong.append(f"{name}: allowPrivilegeEscalation is not false")
        if own.get("privileged"):
            wrong.append(f"{name}: privileged")
        if any(port.get("hostPort") for port in container.get("ports") or []):
            wrong.append(f"{name}: uses a host port")
        capabilities = own.get("capabilities") or {}
        if capabilities.get("drop") != ["ALL"]:
            wrong.append(f"{name}: capabilities are not all dropped")
        if set(capabilities.get("add") or []) - {"NET_BIND_SERVICE"}:
            wrong.append(f"{name}: adds capabilities")
        resources = container.get("resources") or {}
        if "memory" not in (resources.get("limits") or {}):
            wrong.append(f"{name}: no memory limit")
        if not {"cpu", "memory"} <= set(resources.get("requests") or {}):
            wrong.append(f"{name}: no cpu and memory requests")
    return wrong
