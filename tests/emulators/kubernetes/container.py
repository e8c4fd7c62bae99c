"""One container as a local process isolated with bubblewrap: an empty tmpfs root with the
host's system directories read-only, the image's directories read-only, the pod's volumes at
their mount paths, its own pid, IPC and UTS namespaces (the host's network), and only the
image's and the pod's environment."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import os
import re
import signal
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.emulators.kubernetes.resources import now
from tests.emulators.kubernetes.store import Store
from tests.emulators.kubernetes.volumes import Mount, NotReady

Obj = dict[str, Any]
_SYSTEM = ("/usr", "/bin", "/lib", "/lib64", "/sbin", "/lib32", "/libx32")
_REFERENCE = re.compile(r"\$\$|\$\(([-._a-zA-Z][-._a-zA-Z0-9]*)\)")


@dataclass(frozen=True)
class ImageSpec:
    """What an image holds: host directories it "contains" (bound read-only at the same path),
    its default environment (PATH...) and, for containers that name none, its command."""

    binds: list[Path]
    env: dict[str, str] = field(default_factory=dict)
    command: list[str] = field(default_factory=list)


def expand(text: str, env: dict[str, str]) -> str:
    """Kubernetes' `$(VAR)` references: known variables expand, `$$` is a `$`, others stay."""

    def replace(found: re.Match[str]) -> str:
        if found[0] == "$$":
            return "$"
        return env.get(found[1], found[0])

    return _REFERENCE.sub(replace, text)


def environment(store: Store, pod: Obj, container: Obj) -> dict[str, str]:
    """The variables the container defines, `envFrom` then `env` in order (the process gets
    them over the image's). NotReady (CreateContainerConfigError) when a Secret or key they
    name is missing."""
    meta = pod["metadata"]
    env: dict[str, str] = {}
    for source in container.get("envFrom") or []:
        ref = source.get("secretRef")
        if ref is None:
            raise NotReady("CreateContainerConfigError", "envFrom: only secretRef is emulated")
        secret = store.get("secrets", meta["namespace"], ref["name"])
        if secret is None:
            if ref.get("optional"):
                continue
            raise NotReady("CreateContainerConfigError", f'secret "{ref["name"]}" not found')
        for key, value in (secret.get("data") or {}).items():
            env[source.get("prefix", "") + key] = _text(value)
    for var in container.get("env") or []:
        source = var.get("valueFrom")
        if source is None:
            env[var["name"]] = expand(var.get("value") or "", env)
            continue
        value = _value_from(store, pod, source)
        if value is not None:
            env[var["name"]] = value
    return env


def _value_from(store: Store, pod: Obj, source: Obj) -> str | None:
    meta = pod["metadata"]
    if source.get("secretKeyRef") is not None:
        ref = source["secretKeyRef"]
        secret = store.get("secrets", meta["namespace"], ref["name"])
        data = (secret or {}).get("data") or {}
        if ref["key"] in data:
            return _text(data[ref["key"]])
        if ref.get("optional"):
            return None
        if secret is None:
            raise NotReady("CreateContainerConfigError", f'secret "{ref["name"]}" not found')
        raise NotReady(
            "CreateContainerConfigError",
            f"couldn't find key {ref['key']} in Secret {meta['namespace']}/{ref['name']}",
        )
    if source.get("fieldRef") is not None:
        path = source["fieldRef"]["fieldPath"]
        found = re.fullmatch(r"metadata\.(labels|annotations)\['([^']*)'\]", path)
        if found:
            return (meta.get(found[1]) or {}).get(found[2], "")
        known = {
            "metadata.name": meta["name"],
            "metadata.namespace": meta["namespace"],
            "metadata.uid": meta["uid"],
            "spec.nodeName": pod["spec"].get("nodeName", ""),
            "spec.serviceAccountName": pod["spec"].get("serviceAccountName", ""),
            "status.hostIP": "127.0.0.1",
            "status.podIP": "127.0.0.1",
        }
        if path in known:
            return known[path]
    raise NotReady("CreateContainerConfigError", f"env source {source} is not emulated")


def _text(encoded: str) -> str:
    """A Secret's value as an environment string: its bytes exactly, even if not UTF-8."""
    return base64.b64decode(encoded).decode("utf-8", "surrogateescape")


def command(container: Obj, image: ImageSpec, env: dict[str, str]) -> list[str]:
    """`command` + `args` (the image's command when the container names none), with `$(VAR)`
    references to the container's variables (`env`; not the image's) expanded."""
    argv = list(container.get("command") or image.command)
    argv += container.get("args") or []
    if not argv:
        raise NotReady("CreateContainerConfigError", "no command specified")
    return [expand(arg, env) for arg in argv]


def bwrap_args(
    bwrap: str, pod: Obj, container: Obj, image: ImageSpec, mounts: list[Mount]
) -> list[str]:
    """bwrap's options for `container` of `pod` (the command to follow a `--`)."""
    args = [
        bwrap,
        "--die-with-parent",
        "--new-session",
        "--unshare-pid",
        # The command is the pid namespace's init, as a container's entrypoint is: it gets
        # SIGTERM only if it handles it, and when it exits everything else in the pod goes.
        "--as-pid-1",
        "--unshare-ipc",
        "--unshare-uts",
        "--hostname",
        pod["metadata"]["name"][:63],
    ]
    for top in _SYSTEM:
        path = Path(top)
        if path.is_symlink():
            args += ["--symlink", os.readlink(path), top]
        elif path.is_dir():
            args += ["--ro-bind", top, top]
    args += ["--ro-bind", "/etc", "/etc", "--proc", "/proc", "--dev", "/dev", "--tmpfs", "/tmp"]
    args += ["--dir", "/root"]
    for path in sorted(image.binds, key=lambda p: len(p.parts)):  # parents first
        args += ["--ro-bind", str(path), str(path)]
    for mount in mounts:
        args += ["--ro-bind" if mount.read_only else "--bind", str(mount.source), mount.target]
    working_dir = container.get("workingDir") or "/"
    return [*args, "--dir", working_dir, "--chdir", working_dir]


@dataclass
class Run:
    """One run of a container: its process (bwrap, whose child is the container's init)."""

    process: asyncio.subprocess.Process
    child_pid: int | None
    log: Path
    started_at: str
    container_id: str
    killed_as: str | None = None  # OOMKilled, when killed as the kernel's OOM killer would

    def signal(self, number: int) -> None:
        """Signal the container's init, as the runtime does: being its pid namespace's init it
        gets SIGTERM only if it handles it, and when it dies so does the rest of the pod."""
        if self.process.returncode is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            if self.child_pid is not None:
                os.kill(self.child_pid, number)  # bwrap reaps it and exits with its status
            elif number == signal.SIGKILL:  # bwrap never said: it did not get that far
                os.killpg(self.process.pid, signal.SIGKILL)


async def start(args: list[str], argv: list[str], env: dict[str, str], log_path: Path) -> Run:
    """Start bwrap with `args` running `argv`; it tells the pid of `argv`'s process (the
    container's init, which signals go to) on --info-fd."""
    read_end, write_end = os.pipe()
    args = [*args, "--info-fd", str(write_end), "--"]
    try:
        with log_path.open("ab") as output:
            process = await asyncio.create_subprocess_exec(
                *args,
                *argv,
                env=env,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=output,
                stderr=asyncio.subprocess.STDOUT,
                start_new_session=True,
                pass_fds=(write_end,),
            )
    finally:
        os.close(write_end)
    try:
        info = await asyncio.to_thread(_read_info, read_end)
    finally:
        os.close(read_end)
    container_id = "containerd://" + uuid.uuid4().hex + uuid.uuid4().hex
    return Run(process, info.get("child-pid"), log_path, now(), container_id)


def _read_info(fd: int) -> dict[str, Any]:
    """bwrap's --info-fd JSON (the child's pid); empty when bwrap failed before writing it."""
    data = b""
    while not data.rstrip().endswith(b"}"):
        chunk = os.read(fd, 4096)
        if not chunk:
            break
        data += chunk
    return json.loads(data) if data.strip() else {}
