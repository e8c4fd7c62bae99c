"""The controller-manager's part: the garbage collector (dependents named by ownerReferences go
with their owners, in the background; `orphan` and `foregroundDeletion` finalizers honoured)
and the pvc-protection controller (a claim being deleted stays while a pod uses it). Like the
real ones they follow the store's events and act through the API, a moment after the write."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

from tests.emulators.kubernetes.api import FOREGROUND, ORPHAN, Api
from tests.emulators.kubernetes.errors import ApiError
from tests.emulators.kubernetes.resources import KINDS, PVC_PROTECTION, RESOURCE_OF_KIND
from tests.emulators.kubernetes.store import Event

log = logging.getLogger(__name__)
Obj = dict[str, Any]


class Controllers:
    def __init__(self, api: Api) -> None:
        self.api = api
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(self.api.store.subscribe()))

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _run(self, events: asyncio.Queue[Event | None]) -> None:
        while (event := await events.get()) is not None:
            try:
                self._garbage_collect(event)
                self._protect_claims(event)
            except Exception:  # one bad object must not stop every later collection
                log.exception("controllers: handling %s %s failed", event.type, _key(event.object))

    # ----- garbage collector ---------------------------------------------------------------

    def _garbage_collect(self, event: Event) -> None:
        obj, meta = event.object, event.object["metadata"]
        namespace = meta["namespace"]
        if event.type == "DELETED":
            for resource, dependent in self._dependents(namespace, meta["uid"]):
                self._resolve(resource, dependent)
            for ref in meta.get("ownerReferences") or []:  # an owner may wait for it
                owner = self._owner(namespace, ref)
                if owner is not None:
                    self._finish_foreground(RESOURCE_OF_KIND[ref["kind"]], owner)
            return
        before = (event.previous or {}).get("metadata", {}).get("ownerReferences")
        if meta.get("ownerReferences") and meta["ownerReferences"] != before:
            self._resolve(event.resource, obj)
        if meta.get("deletionTimestamp"):
            finalizers = meta.get("finalizers") or []
            if ORPHAN in finalizers:
                for resource, dependent in self._dependents(namespace, meta["uid"]):
                    self._drop_owner(resource, dependent, {meta["uid"]})
                self._remove_finalizer(event.resource, obj, ORPHAN)
            elif FOREGROUND in finalizers:
                for resource, dependent in self._dependents(namespace, meta["uid"]):
                    with contextlib.suppress(ApiError):
                        self.api.delete(resource, namespace, dependent["metadata"]["name"], {})
                self._finish_foreground(event.resource, obj)

    def _dependents(self, namespace: str, uid: str) -> list[tuple[str, Obj]]:
        return [
            (resource, obj)
            for resource in KINDS
            for obj in self.api.store.list(resource, namespace)
            if any(ref.get("uid") == uid for ref in obj["metadata"].get("ownerReferences") or [])
        ]

    def _owner(self, namespace: str, ref: Obj) -> Obj | None:
        """The object a reference names, if it exists with that uid."""
        resource = RESOURCE_OF_KIND.get(ref.get("kind", ""))
        if resource is None or ref.get("apiVersion") != "v1":
            return None
        found = self.api.store.get(resource, namespace, ref.get("name", ""))
        return found if found is not None and found["metadata"]["uid"] == ref["uid"] else None

    def _resolve(self, resource: str, obj: Obj) -> None:
        """Delete an object all of whose owners are gone; forget the owners that are gone.
        Owners of kinds not served here cannot be looked up, so they count as present."""
        meta = obj["metadata"]
        refs = meta.get("ownerReferences") or []
        served = [
            r for r in refs if r.get("apiVersion") == "v1" and r.get("kind") in RESOURCE_OF_KIND
        ]
        gone = {r["uid"] for r in served if self._owner(meta["namespace"], r) is None}
        if not gone:
            return
        if len(gone) == len({r["uid"] for r in refs}):
            log.info("garbage collector: deleting %s, its owners are gone", _key(obj))
            with contextlib.suppress(ApiError):
                self.api.delete(resource, meta["namespace"], meta["name"], {})
        else:
            self._drop_owner(resource, obj, gone)

    def _drop_owner(self, resource: str, obj: Obj, uids: set[str]) -> None:
        current = self.api.store.get(
            resource, obj["metadata"]["namespace"], obj["metadata"]["name"]
        )
        if current is None:
            return
        refs = current["metadata"].get("ownerReferences") or []
        kept = [ref for ref in refs if ref.get("uid") not in uids]
        if kept != refs:
            if kept:
                current["metadata"]["ownerReferences"] = kept
            else:
                current["metadata"].pop("ownerReferences")
            self.api.write(resource, current)

    def _finish_foreground(self, resource: str, owner: Obj) -> None:
        meta = owner["metadata"]
        if FOREGROUND not in (meta.get("finalizers") or []) or not meta.get("deletionTimestamp"):
            return
        if not self._dependents(meta["namespace"], meta["uid"]):
            self._remove_finalizer(resource, owner, FOREGROUND)

    def _remove_finalizer(self, resource: str, obj: Obj, finalizer: str) -> None:
        meta = obj["metadata"]
        current = self.api.store.get(resource, meta["namespace"], meta["name"])
        if current is None or current["metadata"]["uid"] != meta["uid"]:
            return
        finalizers = current["metadata"].get("finalizers") or []
        if finalizer in finalizers:
            finalizers.remove(finalizer)
            self.api.write(resource, current)

    # ----- pvc-protection ------------------------------------------------------------------

    def _protect_claims(self, event: Event) -> None:
        if event.resource not in ("pods", "persistentvolumeclaims"):
            return
        namespace = event.object["metadata"]["namespace"]
        for claim in self.api.store.list("persistentvolumeclaims", namespace):
            meta = claim["metadata"]
            if not meta.get("deletionTimestamp") or PVC_PROTECTION not in meta.get(
                "finalizers", []
            ):
                continue
            if not self._claim_in_use(namespace, meta["name"]):
                self._remove_finalizer("persistentvolumeclaims", claim, PVC_PROTECTION)

    def _claim_in_use(self, namespace: str, claim: str) -> bool:
        for pod in self.api.store.list("pods", namespace):
            if pod.get("status", {}).get("phase") in ("Succeeded", "Failed"):
                continue
            for volume in pod["spec"].get("volumes") or []:
                if (volume.get("persistentVolumeClaim") or {}).get("claimName") == claim:
                    return True
        return False


def _key(obj: Obj) -> str:
    meta = obj.get("metadata", {})
    return f"{obj.get('kind')} {meta.get('namespace')}/{meta.get('name')}"
