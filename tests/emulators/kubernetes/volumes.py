"""A pod's volumes as host directories, as the kubelet mounts them: a fresh `emptyDir` per pod,
a `secret`'s keys as files (modes from `defaultMode` / `items`), and a `persistentVolumeClaim`'s
directory, kept per claim so the files outlive the pods. A volume that cannot be set up yet (its
Secret or claim missing) raises NotReady with what the kubelet would report."""

from __future__ import annotations

import base64
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.emulators.kubernetes.store import Store

Obj = dict[str, Any]


class NotReady(Exception):
    """Why a container cannot start yet: its waiting reason and message."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason, self.message = reason, message


@dataclass(frozen=True)
class Mount:
    source: Path
    target: str
    read_only: bool


def claim_directory(root: Path, claim: Obj) -> Path:
    """Where a claim's data lives: one directory per claim object (by uid), so a claim made
    again under the same name starts empty, as a dynamically provisioned volume does."""
    return root / "claims" / claim["metadata"]["uid"]


def prepare(store: Store, root: Path, pod: Obj, pod_dir: Path) -> dict[str, Path]:
    """Every volume of `pod` as a host directory, by volume name."""
    namespace = pod["metadata"]["namespace"]
    prepared = {}
    for volume in pod["spec"].get("volumes") or []:
        name = volume["name"]
        if volume.get("emptyDir") is not None:
            path = pod_dir / "volumes" / name
            path.mkdir(parents=True, exist_ok=True)
        elif volume.get("secret") is not None:
            path = _secret_volume(store, namespace, volume, pod_dir / "volumes" / name)
        elif volume.get("persistentVolumeClaim") is not None:
            claim_name = volume["persistentVolumeClaim"]["claimName"]
            claim = store.get("persistentvolumeclaims", namespace, claim_name)
            if claim is None or claim["metadata"].get("deletionTimestamp"):
                why = "not found" if claim is None else "is being deleted"
                raise NotReady("ContainerCreating", f'persistentvolumeclaim "{claim_name}" {why}')
            path = claim_directory(root, claim)
            path.mkdir(parents=True, exist_ok=True)
        else:
            kinds = sorted(set(volume) - {"name"})
            raise NotReady(
                "ContainerCreating", f'volume "{name}": {", ".join(kinds)} is not emulated'
            )
        prepared[name] = path
    return prepared


def _secret_volume(store: Store, namespace: str, volume: Obj, path: Path) -> Path:
    source = volume["secret"]
    secret_name = source.get("secretName", "")
    secret = store.get("secrets", namespace, secret_name)
    failed = f'MountVolume.SetUp failed for volume "{volume["name"]}" : '
    if secret is None and not source.get("optional"):
        raise NotReady("ContainerCreating", failed + f'secret "{secret_name}" not found')
    data = (secret or {}).get("data") or {}
    items = source.get("items") or [{"key": key, "path": key} for key in sorted(data)]
    default_mode = source.get("defaultMode", 0o644)
    files = []
    for item in items:
        if item["key"] not in data:
            if source.get("optional"):
                continue
            raise NotReady(
                "ContainerCreating", failed + f"references non-existent secret key: {item['key']}"
            )
        files.append((item["path"], base64.b64decode(data[item["key"]]), item.get("mode")))
    # Written afresh each start: the content is the Secret's as the container starts.
    shutil.rmtree(path, ignore_errors=True)
    path.mkdir(parents=True)
    for relative, content, mode in files:
        target = path / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(content)
        os.chmod(target, default_mode if mode is None else mode)
    return path


def mounts(container: Obj, volumes: dict[str, Path], pod: Obj) -> list[Mount]:
    """The container's volumeMounts as host directory -> path inside, parents first."""
    always_read_only = {
        volume["name"]
        for volume in pod["spec"].get("volumes") or []
        if (volume.get("persistentVolumeClaim") or {}).get("readOnly")
        or volume.get("secret") is not None
    }
    found = []
    for mount in container.get("volumeMounts") or []:
        source = volumes[mount["name"]]
        if mount.get("subPath"):
            source = source / mount["subPath"]
            source.mkdir(parents=True, exist_ok=True)
        read_only = bool(mount.get("readOnly")) or mount["name"] in always_read_only
        found.append(Mount(source, mount["mountPath"], read_only))
    return sorted(found, key=lambda m: m.target.rstrip("/").count("/"))
