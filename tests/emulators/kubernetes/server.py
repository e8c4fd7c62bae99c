"""A Kubernetes API server with one node, in one process, for the real `kubernetes_asyncio`
client: point it at the kubeconfig `write_kubeconfig` writes.

- core/v1 pods, secrets and persistentvolumeclaims in any namespace, over plain HTTP with a
  bearer token, in the real wire format: Status errors, resourceVersions with optimistic
  concurrency, label and field selectors, watches resuming from a resourceVersion (`routes.py`,
  `api.py`, `watch.py`); every write validated against the 1.33 schemas (`validation.py`).
- Deletion as the registry and controllers do it: graceful for pods, finalizers, garbage
  collection of dependents, pvc-protection (`api.py`, `controllers.py`).
- A kubelet that runs each pod's containers as local processes isolated with bubblewrap, from
  the images it is given (`ImageSpec`), and reports their status (`kubelet.py`, `worker.py`).

What tests read: `received` (every write request: method, path, query, content type, body,
status), `calls` (every API request: method, path, query), `patches_of`, `objects`, `get`,
`claim_path`, `log_path` / `log`. What they do: `oom_kill`, `evict`, `compact`.

Where it differs from a cluster: unknown fields and wrong types are 422 Invalid (a real server
drops unknown fields with a warning, or answers 400 under fieldValidation=Strict); strategic
merge patches merge only the lists named in `patch.MERGE_KEYS`, others (finalizers too) are
replaced; no RBAC, admission webhooks, namespaces as objects, Services or DNS; containers share
the host's network (every pod's IP is 127.0.0.1), run as the emulator's user, and have no
resource limits or probes; securityContext is validated, not enforced; a Secret's files are
those it had when the pod started.
"""

from __future__ import annotations

import json
import shutil
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from aiohttp import web

from tests.emulators.kubernetes.api import Api
from tests.emulators.kubernetes.container import ImageSpec
from tests.emulators.kubernetes.control import control_routes
from tests.emulators.kubernetes.controllers import Controllers
from tests.emulators.kubernetes.errors import (
    ApiError,
    method_not_allowed,
    no_such_path,
    unauthorized,
)
from tests.emulators.kubernetes.kubelet import Kubelet
from tests.emulators.kubernetes.routes import api_routes
from tests.emulators.kubernetes.store import Store
from tests.emulators.kubernetes.volumes import claim_directory

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
_REPOSITORY = Path(__file__).resolve().parents[3]
_PUBLIC = ("/version", "/version/", "/healthz", "/livez", "/readyz")  # readable without credentials
_WRITES = ("POST", "PUT", "PATCH", "DELETE")


def python_image() -> ImageSpec:
    """An image holding the running Python (its installation and environment) and this
    repository, so `python -m sandbox` runs in it."""
    binds = list(dict.fromkeys([Path(sys.base_prefix), Path(sys.prefix), _REPOSITORY]))
    env = {
        "PATH": f"{sys.prefix}/bin:/usr/local/bin:/usr/bin:/bin",
        "PYTHONPATH": str(_REPOSITORY),
        "LANG": "C.UTF-8",
    }
    return ImageSpec(binds=binds, env=env)


class KubernetesEmulator:
    def __init__(
        self,
        root: Path | None = None,
        images: dict[str, ImageSpec] | None = None,
        *,
        token: str = "emulator-token",
        namespace: str = "default",
        history: int = 1000,
        restart_backoff: float = 10.0,
        watch_timeout: float = 1800.0,
        bwrap: str = "bwrap",
    ) -> None:
        """`root`: where pods' volumes, claims' data and logs live (a temporary directory,
        removed at `stop`, by default). `images`: what each image name the pods may use
        holds. `namespace`: the kubeconfig's default. `history`: how many writes a watch may
        resume across. `restart_backoff`: the first delay before restarting a container.
        `watch_timeout`: how long a watch lasts that names no timeoutSeconds."""
        self._own_root = root is None
        self.root = root or Path(tempfile.mkdtemp(prefix="kubernetes-emulator-"))
        self.token, self.namespace = token, namespace
        self.watch_timeout = watch_timeout
        self.store = Store(history)
        self.api = Api(self.store)
        self.controllers = Controllers(self.api)
        self.kubelet = Kubelet(
            self.api, self.root, dict(images or {}), backoff=restart_backoff, bwrap=bwrap
        )
        self.received: list[dict[str, Any]] = []
        self.calls: list[tuple[str, str, dict[str, str]]] = []
        self._runner: web.AppRunner | None = None
        self.url = ""

    # ----- serving -------------------------------------------------------------------------

    def app(self) -> web.Application:
        app = web.Application(middlewares=[self._serve])
        app.add_routes(control_routes(self))
        app.add_routes(api_routes(self))
        return app

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> None:
        self.controllers.start()
        self.kubelet.start()
        self._runner = web.AppRunner(self.app(), access_log=None, shutdown_timeout=1)
        await self._runner.setup()
        await web.TCPSite(self._runner, host, port).start()
        bound_host, bound_port = self._runner.addresses[0][:2]
        self.url = f"http://{bound_host}:{bound_port}"

    async def stop(self) -> None:
        """Kill every pod's processes, end the watches, stop serving."""
        await self.kubelet.stop()
        await self.controllers.stop()
        self.store.close()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
        if self._own_root:
            shutil.rmtree(self.root, ignore_errors=True)

    async def __aenter__(self) -> KubernetesEmulator:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    @web.middleware
    async def _serve(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        """Check the credential, answer errors with Status objects, journal every write."""
        entry: dict[str, Any] | None = None
        control = request.path.startswith("/_emulator/")
        if not control and request.path not in _PUBLIC:
            self.calls.append((request.method, request.path, dict(request.query)))
        if request.method in _WRITES and not control:
            raw = await request.read()
            try:
                body = json.loads(raw) if raw.strip() else None
            except ValueError:
                body = raw.decode(errors="replace")
            entry = {
                "time": time.time(),
                "method": request.method,
                "path": request.path,
                "query": dict(request.query),
                "content_type": request.headers.get("Content-Type", ""),
                "body": body,
            }
            self.received.append(entry)
        try:
            if not control and request.path not in _PUBLIC:
                if request.headers.get("Authorization") != f"Bearer {self.token}":
                    raise unauthorized()
            response = await handler(request)
        except ApiError as exc:
            response = exc.response()
        except web.HTTPMethodNotAllowed:
            response = method_not_allowed().response()
        except web.HTTPNotFound:
            response = no_such_path().response()
        if entry is not None:
            entry["status"] = response.status
        return response

    # ----- what tests use ------------------------------------------------------------------

    def write_kubeconfig(self, path: Path, namespace: str | None = None) -> Path:
        """A kubeconfig whose current context reaches this server with the bearer token, in
        `namespace` (the emulator's default namespace unless given)."""
        config = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{"name": "emulator", "cluster": {"server": self.url}}],
            "users": [{"name": "emulator", "user": {"token": self.token}}],
            "contexts": [
                {
                    "name": "emulator",
                    "context": {
                        "cluster": "emulator",
                        "user": "emulator",
                        "namespace": namespace or self.namespace,
                    },
                }
            ],
            "current-context": "emulator",
            "preferences": {},
        }
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(config, indent=2) + "\n")
        return path

    def objects(self, resource: str, namespace: str | None = None) -> list[dict[str, Any]]:
        """The current objects of `resource` ("pods", "secrets", "persistentvolumeclaims")."""
        return self.store.list(resource, namespace)

    def get(self, resource: str, namespace: str, name: str) -> dict[str, Any] | None:
        return self.store.get(resource, namespace, name)

    def patches_of(self, namespace: str, name: str, resource: str = "pods") -> list[dict[str, Any]]:
        """The PATCH requests received for one object, in order (each with its `status`)."""
        path = f"/api/v1/namespaces/{namespace}/{resource}/{name}"
        return [r for r in self.received if r["method"] == "PATCH" and r["path"] == path]

    def claim_path(self, namespace: str, name: str) -> Path:
        """The directory holding a PersistentVolumeClaim's data, as its pods see it."""
        claim = self.store.get("persistentvolumeclaims", namespace, name)
        if claim is None:
            raise KeyError(f"no persistentvolumeclaim {namespace}/{name}")
        return claim_directory(self.root, claim)

    def log_path(self, namespace: str, name: str, container: str | None = None) -> Path | None:
        """The log of the latest run of the pod's container (its first by default), kept
        after the pod is deleted; None if it never started."""
        runs = self.kubelet.logs(namespace, name)
        chosen = runs.get(container) if container else next(iter(runs.values()), None)
        return chosen[-1] if chosen else None

    def log(self, namespace: str, name: str, container: str | None = None) -> str:
        path = self.log_path(namespace, name, container)
        return path.read_text(errors="replace") if path is not None else ""

    def oom_kill(self, namespace: str, name: str, container: str | None = None) -> None:
        self.kubelet.oom_kill(namespace, name, container)

    def evict(
        self,
        namespace: str,
        name: str,
        message: str = "The node was low on resource: memory. Threshold quantity: 100Mi, "
        "available: 12Mi.",
    ) -> None:
        self.kubelet.evict(namespace, name, message)

    def compact(self) -> None:
        """Forget the watch history: resuming from any earlier resourceVersion is 410."""
        self.store.compact()

    def dump(self) -> str:
        """What a failing test should print: the objects and the write requests received."""
        lines = [
            f"Kubernetes emulator at {self.url} (resourceVersion {self.store.resource_version})"
        ]
        for resource in ("pods", "secrets", "persistentvolumeclaims"):
            for obj in self.objects(resource):
                meta, status = obj["metadata"], obj.get("status", {})
                lines.append(
                    f"  {resource} {meta['namespace']}/{meta['name']} rv={meta['resourceVersion']}"
                    f" phase={status.get('phase')} reason={status.get('reason')}"
                    f" deleting={bool(meta.get('deletionTimestamp'))}"
                )
        lines.append("writes received:")
        lines += [f"  {r['method']} {r['path']} -> {r.get('status')}" for r in self.received]
        return "\n".join(lines)
