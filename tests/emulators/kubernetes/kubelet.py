"""The one node's kubelet: follows the store's pod events like the real one follows its watch,
gives each pod bound to the node a worker (worker.py) that runs it, and offers tests what the
node itself would do to a pod: the kernel's OOM killer and the eviction manager."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import shutil
from pathlib import Path
from typing import Any

from tests.emulators.kubernetes.api import Api
from tests.emulators.kubernetes.container import ImageSpec
from tests.emulators.kubernetes.resources import NODE
from tests.emulators.kubernetes.store import Event
from tests.emulators.kubernetes.volumes import NotReady, claim_directory
from tests.emulators.kubernetes.worker import PodWorker

log = logging.getLogger(__name__)
Obj = dict[str, Any]


class Kubelet:
    def __init__(
        self,
        api: Api,
        root: Path,
        images: dict[str, ImageSpec],
        *,
        backoff: float = 10.0,
        bwrap: str = "bwrap",
    ) -> None:
        self.api, self.store = api, api.store
        self.root, self.images = root, images
        self.backoff, self.bwrap = backoff, bwrap
        self.workers: dict[str, PodWorker] = {}  # by pod uid, while the pod runs
        self._latest: dict[tuple[str, str], PodWorker] = {}  # by (namespace, name), kept
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        events = self.store.subscribe()
        for pod in self.store.list("pods"):
            self._admit(pod)
        self._task = asyncio.create_task(self._follow(events))

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        workers = list(self.workers.values())
        for worker in workers:
            worker.forget()
        await asyncio.gather(*(w.task for w in workers), return_exceptions=True)

    # ----- what tests do to a pod ----------------------------------------------------------

    def oom_kill(self, namespace: str, name: str, container: str | None = None) -> None:
        """SIGKILL a container (by default the one running, the first if several), reported as
        OOMKilled."""
        worker = self._running(namespace, name)
        running = [c.name for c in worker.containers if c.run is not None]
        worker.kill(container or (running or [worker.containers[-1].name])[0], "OOMKilled")

    def evict(self, namespace: str, name: str, message: str) -> None:
        """The eviction manager's hard eviction: kill now, phase Failed, reason Evicted."""
        self._running(namespace, name).evict(message)

    def logs(self, namespace: str, name: str, uid: str | None = None) -> dict[str, list[Path]]:
        """Each container's run logs, oldest first, of the latest pod so named (even deleted;
        of that `uid` only, if given)."""
        worker = self._latest.get((namespace, name))
        if worker is None or uid not in (None, worker.uid):
            return {}
        return {c.name: list(c.runs) for c in worker.containers}

    def writing(self, log: Path) -> bool:
        """Whether a running container still writes to `log`."""
        return any(
            c.run is not None and c.run.log == log
            for worker in self.workers.values()
            for c in worker.containers
        )

    def image(self, name: str) -> ImageSpec:
        if name not in self.images:
            known = ", ".join(sorted(self.images)) or "none"
            raise NotReady(
                "ErrImagePull",
                f'Failed to pull image "{name}": not found (the images the emulator has: {known})',
            )
        return self.images[name]

    def _running(self, namespace: str, name: str) -> PodWorker:
        pod = self.store.get("pods", namespace, name)
        worker = self.workers.get(pod["metadata"]["uid"]) if pod else None
        if worker is None:
            raise KeyError(f"pod {namespace}/{name} is not running on the node")
        return worker

    # ----- following the pods --------------------------------------------------------------

    async def _follow(self, events: asyncio.Queue[Event | None]) -> None:
        while (event := await events.get()) is not None:
            try:
                self._handle(event)
            except Exception:
                log.exception("kubelet: handling %s of %s failed", event.type, event.resource)

    def _handle(self, event: Event) -> None:
        meta = event.object["metadata"]
        if event.resource == "persistentvolumeclaims" and event.type == "DELETED":
            # The volume's reclaim policy is Delete: its data goes with the claim.
            shutil.rmtree(claim_directory(self.root, event.object), ignore_errors=True)
        if event.resource != "pods":
            return
        worker = self.workers.get(meta["uid"])
        if event.type == "DELETED":
            if worker is not None:
                worker.forget()  # removed without waiting for the kubelet: forced
            shutil.rmtree(self.root / "pods" / meta["uid"] / "volumes", ignore_errors=True)
        elif worker is not None:
            worker.observe(event.object)
        elif event.type == "ADDED":
            self._admit(event.object)

    def _admit(self, pod: Obj) -> None:
        if pod["spec"].get("nodeName") != NODE:
            return
        if pod.get("status", {}).get("phase") in ("Succeeded", "Failed"):
            return
        worker = PodWorker(self, pod)
        self.workers[worker.uid] = worker
        self._latest[(worker.namespace, worker.name)] = worker

    def finished(self, worker: PodWorker) -> None:
        self.workers.pop(worker.uid, None)
