"""The Kubernetes objects of a sandbox, made from the deployment's pod template, and what a
pod's status says about a sandbox that died. Plain dicts in, plain dicts out: the provider
sends them as they are, and tests read them without a cluster."""

from __future__ import annotations

import copy
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from core.errors import ConfigError

# Labels on every object of a sandbox; `release` scopes garbage collection to this deployment.
RELEASE = "app.kubernetes.io/instance"
COMPONENT = "app.kubernetes.io/component"
SANDBOX = "open-inspect.dev/sandbox"
SESSION = "open-inspect.dev/session"
OWNER = "open-inspect.dev/owner"
POOL = "open-inspect.dev/pool"  # warm pods: "starting", then "ready" once connected
# On a ready warm pod: how many of its frames were taken in, so the claimer's channel goes on
# from there (the sandbox numbers its frames once, whoever listens).
FRAMES_SEEN = "open-inspect.dev/frames-seen"

CONTAINER = "sandbox"
TOKEN_VOLUME = "token"
WORKSPACE_VOLUME = "workspace"
TOKEN_KEY = "token"


def load_template(path: Path) -> dict[str, Any]:
    """The pod template (manifests/base/sandboxes/sandbox-pod.yaml), checked for what the
    provider fills in."""
    try:
        template = yaml.safe_load(path.read_text())
    except OSError as exc:
        raise ConfigError(
            f"Cannot read the sandbox pod template {path} (OPEN_INSPECT_KUBERNETES_POD_TEMPLATE): "
            f"{exc.strerror or exc}"
        ) from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"The sandbox pod template {path} is not valid YAML: {exc}") from None
    if not isinstance(template, dict) or template.get("kind") != "Pod":
        raise ConfigError(f"The sandbox pod template {path} must be a single Pod.")
    spec = template.get("spec") or {}
    names = [c.get("name") for c in spec.get("containers") or []]
    volumes = {v.get("name") for v in spec.get("volumes") or []}
    if CONTAINER not in names or not {TOKEN_VOLUME, WORKSPACE_VOLUME} <= volumes:
        raise ConfigError(
            f"The sandbox pod template {path} needs a container named {CONTAINER!r} and volumes "
            f"named {TOKEN_VOLUME!r} and {WORKSPACE_VOLUME!r}."
        )
    return template


def label_value(text: str) -> str:
    """`text` as a label value (63 characters of [A-Za-z0-9._-], alphanumeric at both ends)."""
    return re.sub(r"[^A-Za-z0-9._-]", ".", text)[:63].strip("._-")


def names(sandbox_id: str) -> tuple[str, str, str]:
    """(pod, Secret, workspace claim) names of a sandbox: its id is a valid DNS label."""
    return sandbox_id, f"{sandbox_id}-token", f"{sandbox_id}-workspace"


@dataclass(frozen=True)
class PodSpec:
    sandbox_id: str
    labels: dict[str, str]
    env: dict[str, str]
    claim: str  # the workspace's PersistentVolumeClaim
    deadline: int | None  # activeDeadlineSeconds; None for a warm pod (set when claimed)
    annotations: dict[str, str] | None = None


def sandbox_pod(template: dict[str, Any], spec: PodSpec) -> dict[str, Any]:
    """The template with the sandbox's name, labels, environment, token Secret and workspace."""
    pod = copy.deepcopy(template)
    pod_name, secret_name, _ = names(spec.sandbox_id)
    meta = pod.setdefault("metadata", {})
    meta.pop("generateName", None)
    meta.pop("namespace", None)  # the provider's namespace setting decides
    meta["name"] = pod_name
    meta["labels"] = {**(meta.get("labels") or {}), **spec.labels}
    if spec.annotations:
        meta["annotations"] = {**(meta.get("annotations") or {}), **spec.annotations}
    body = pod["spec"]
    if spec.deadline is None:
        body.pop("activeDeadlineSeconds", None)
    else:
        body["activeDeadlineSeconds"] = spec.deadline
    container = next(c for c in body["containers"] if c["name"] == CONTAINER)
    given = [e for e in container.get("env") or [] if e.get("name") not in spec.env]
    container["env"] = [*given, *({"name": k, "value": v} for k, v in spec.env.items())]
    for volume in body["volumes"]:
        if volume["name"] == TOKEN_VOLUME:
            volume["secret"]["secretName"] = secret_name
        elif volume["name"] == WORKSPACE_VOLUME:
            volume.pop("emptyDir", None)
            volume["persistentVolumeClaim"] = {"claimName": spec.claim}
    return pod


def token_secret(
    sandbox_id: str, pod_uid: str, content: str, labels: dict[str, str]
) -> dict[str, Any]:
    """The sandbox's one Secret (its bridge token), owned by its pod so it goes with it."""
    pod_name, secret_name, _ = names(sandbox_id)
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {
            "name": secret_name,
            "labels": labels,
            "ownerReferences": [
                {"apiVersion": "v1", "kind": "Pod", "name": pod_name, "uid": pod_uid}
            ],
        },
        "type": "Opaque",
        "stringData": {TOKEN_KEY: content},
    }


def workspace_claim(
    name: str, labels: dict[str, str], size: str, storage_class: str | None
) -> dict[str, Any]:
    """A session's workspace: outlives its pods, so a hibernated session resumes in a new one."""
    spec: dict[str, Any] = {
        "accessModes": ["ReadWriteOnce"],
        "resources": {"requests": {"storage": size}},
    }
    if storage_class:
        spec["storageClassName"] = storage_class
    return {
        "apiVersion": "v1",
        "kind": "PersistentVolumeClaim",
        "metadata": {"name": name, "labels": labels},
        "spec": spec,
    }


def failure(pod: Any) -> str | None:
    """Why a pod can no longer run its sandbox, in words for the thread; None while it can.
    `pod` is a kubernetes_asyncio V1Pod."""
    status = pod.status
    if status is None:
        return None
    if status.reason == "Evicted":
        return f"The sandbox's pod was evicted by Kubernetes: {status.message or 'no reason given'}"
    if status.reason == "DeadlineExceeded":
        return "The sandbox's pod reached its deadline (activeDeadlineSeconds) and was stopped."
    for container in status.container_statuses or []:
        state = container.state
        if state is not None and state.terminated is not None:
            ended = state.terminated
            if ended.reason == "OOMKilled":
                return (
                    "The sandbox ran out of memory: Kubernetes killed its pod (OOMKilled). "
                    "Its memory limit is in the sandbox pod template."
                )
            return (
                f"The sandbox's pod stopped ({ended.reason or 'exited'}, exit code "
                f"{ended.exit_code})."
            )
        if state is not None and state.waiting is not None:
            waiting = state.waiting
            if waiting.reason in _CANNOT_START:
                return f"The sandbox's pod cannot start ({waiting.reason}): {waiting.message or ''}"
    if status.phase in ("Failed", "Succeeded"):
        return f"The sandbox's pod ended ({status.phase}): {status.message or status.reason or ''}"
    return None


# Waiting reasons that do not pass by themselves (a first ErrImagePull may: it is retried).
_CANNOT_START = frozenset(
    {
        "ImagePullBackOff",
        "InvalidImageName",
        "CreateContainerConfigError",
        "CreateContainerError",
    }
)
