"""The API server's handling of each write, apart from HTTP: decoding, defaulting, validation,
optimistic concurrency on resourceVersion, and deletion as the registry does it (graceful for
pods, held by finalizers, the propagation policy recorded as the `orphan` or
`foregroundDeletion` finalizer for the garbage collector)."""

from __future__ import annotations

import copy
import random
import uuid
from typing import Any

from tests.emulators.kubernetes import patch as patches
from tests.emulators.kubernetes.errors import (
    ApiError,
    already_exists,
    bad_request,
    conflict,
    not_found,
    uid_conflict,
)
from tests.emulators.kubernetes.resources import (
    KINDS,
    defaults,
    now,
    prepare_create,
    prepare_update,
)
from tests.emulators.kubernetes.selectors import Selector
from tests.emulators.kubernetes.store import Store
from tests.emulators.kubernetes.validation import check, check_update

Obj = dict[str, Any]
# The characters of generated names: no vowels, no 0/1/3, so no words (apimachinery's choice).
_ALPHANUMS = "bcdfghjklmnpqrstvwxz2456789"
ORPHAN, FOREGROUND = "orphan", "foregroundDeletion"


class Api:
    def __init__(self, store: Store) -> None:
        self.store = store

    # ----- reading -------------------------------------------------------------------------

    def get(self, resource: str, namespace: str, name: str) -> Obj:
        found = self.store.get(resource, namespace, name)
        if found is None:
            raise not_found(resource, name)
        return found

    def list(self, resource: str, namespace: str | None, selector: Selector) -> list[Obj]:
        return [obj for obj in self.store.list(resource, namespace) if selector.matches(obj)]

    # ----- writing -------------------------------------------------------------------------

    def create(self, resource: str, namespace: str, body: Any, dry_run: bool = False) -> Obj:
        obj = self._decode(resource, namespace, body)
        meta = obj["metadata"]
        if meta.get("resourceVersion"):
            raise ApiError(
                500,
                "InternalError",
                "Internal error occurred: resourceVersion should not be set on objects to be "
                "created",
            )
        if not meta.get("name") and meta.get("generateName"):
            meta["name"] = self._generated_name(resource, namespace, meta["generateName"])
        for key in ("uid", "creationTimestamp", "deletionTimestamp", "deletionGracePeriodSeconds"):
            meta.pop(key, None)
        if resource != "secrets":
            obj.pop("status", None)  # the server's to set
        defaults(resource, obj)
        check(resource, obj)
        if self.store.get(resource, namespace, meta["name"]) is not None:
            raise already_exists(resource, meta["name"])
        meta["uid"] = str(uuid.uuid4())
        meta["creationTimestamp"] = now()
        prepare_create(resource, obj)
        return obj if dry_run else self.store.create(resource, obj)

    def replace(
        self, resource: str, namespace: str, name: str, body: Any, dry_run: bool = False
    ) -> Obj:
        old = self.get(resource, namespace, name)
        new = self._decode(resource, namespace, body)
        if new["metadata"].get("name", name) != name:
            raise bad_request(
                f"the name of the object ({new['metadata']['name']}) does not match the name on "
                f"the URL ({name})"
            )
        wanted = new["metadata"].get("resourceVersion")
        if wanted and wanted != old["metadata"]["resourceVersion"]:
            raise conflict(resource, name)
        return self._update(resource, old, new, dry_run)

    def patch(
        self,
        resource: str,
        namespace: str,
        name: str,
        content_type: str,
        body: Any,
        dry_run: bool = False,
    ) -> Obj:
        # Nothing awaits between reading the object and storing the result: of two patches
        # naming the same resourceVersion, the first stored makes the second stale.
        old = self.get(resource, namespace, name)
        new = self._decode(resource, namespace, patches.apply(content_type, old, body))
        wanted = new["metadata"].get("resourceVersion")
        if wanted and wanted != old["metadata"]["resourceVersion"]:
            raise conflict(resource, name)
        return self._update(resource, old, new, dry_run)

    def _update(self, resource: str, old: Obj, new: Obj, dry_run: bool) -> Obj:
        prepare_update(resource, old, new)
        defaults(resource, new)
        check(resource, new)
        check_update(resource, old, new)
        return new if dry_run else self.write(resource, new)

    def write(self, resource: str, obj: Obj) -> Obj:
        """Store an update; an object being deleted goes once its last finalizer does (and, for
        a pod, once the kubelet has confirmed its containers stopped)."""
        meta = obj["metadata"]
        if meta.get("deletionTimestamp") and not meta.get("finalizers"):
            if resource != "pods" or meta.get("deletionGracePeriodSeconds") == 0:
                return self.store.remove(resource, meta["namespace"], meta["name"])
        return self.store.update(resource, obj)

    def delete(
        self, resource: str, namespace: str, name: str, options: Obj, dry_run: bool = False
    ) -> Obj:
        obj = self.get(resource, namespace, name)
        meta = obj["metadata"]
        preconditions = options.get("preconditions") or {}
        if preconditions.get("uid") and preconditions["uid"] != meta["uid"]:
            raise uid_conflict(resource, name, preconditions["uid"], meta["uid"])
        rv = preconditions.get("resourceVersion")
        if rv and rv != meta["resourceVersion"]:
            raise conflict(resource, name)
        policy = options.get("propagationPolicy")
        if policy is None and options.get("orphanDependents") is True:
            policy = "Orphan"
        finalizers = meta.setdefault("finalizers", [])
        wanted = {"Orphan": ORPHAN, "Foreground": FOREGROUND}.get(policy or "")
        added = wanted is not None and wanted not in finalizers
        if added:
            finalizers.append(wanted)
        if not finalizers:
            meta.pop("finalizers")
        grace = self._grace_period(resource, obj, options.get("gracePeriodSeconds"))
        if grace == 0 and not finalizers:
            return obj if dry_run else self.store.remove(resource, namespace, name)
        if not meta.get("deletionTimestamp") or grace < meta.get("deletionGracePeriodSeconds", 0):
            meta["deletionTimestamp"] = now(grace)
            meta["deletionGracePeriodSeconds"] = grace
        elif not added:
            return obj  # already being deleted, no sooner than now asked
        return obj if dry_run else self.write(resource, obj)

    def _grace_period(self, resource: str, obj: Obj, asked: Any) -> int:
        """Pods end gracefully, unless never scheduled or already finished; others at once."""
        if resource != "pods":
            return 0
        if obj.get("status", {}).get("phase") in ("Succeeded", "Failed"):
            return 0
        if not obj["spec"].get("nodeName"):
            return 0
        grace = obj["spec"].get("terminationGracePeriodSeconds", 30) if asked is None else asked
        return max(int(grace), 0)

    def confirm_pod_stopped(self, namespace: str, name: str, uid: str) -> None:
        """What the kubelet sends once a deleted pod's containers have stopped: a deletion with
        no grace left, which removes it unless finalizers hold it."""
        pod = self.store.get("pods", namespace, name)
        if pod is None or pod["metadata"]["uid"] != uid:
            return
        pod["metadata"]["deletionGracePeriodSeconds"] = 0
        pod["metadata"].setdefault("deletionTimestamp", now())
        self.write("pods", pod)

    def write_status(self, namespace: str, name: str, uid: str, status: Obj) -> None:
        """The kubelet's status update: stored (as a MODIFIED event) when it changed."""
        pod = self.store.get("pods", namespace, name)
        if pod is None or pod["metadata"]["uid"] != uid or pod.get("status") == status:
            return
        pod["status"] = status
        check("pods", pod)  # the emulator's own report must be one the real API would take
        self.write("pods", pod)

    # ----- helpers -------------------------------------------------------------------------

    def _decode(self, resource: str, namespace: str, body: Any) -> Obj:
        """The body as the object the URL names: apiVersion and kind default to the URL's
        (the API server decodes with them as defaults), others are refused."""
        if not isinstance(body, dict):
            raise bad_request("the body of the request must be a JSON object")
        kind = KINDS[resource].kind
        obj = copy.deepcopy(body)
        obj.setdefault("apiVersion", "v1")
        obj.setdefault("kind", kind)
        if obj["apiVersion"] != "v1":
            raise bad_request(
                f"the API version in the data ({obj['apiVersion']}) does not match the expected "
                f"API version (v1)"
            )
        if obj["kind"] != kind:
            raise bad_request(
                f'{obj["kind"]} in version "v1" cannot be handled as a {kind}: the kind in the '
                f"data does not match {kind}"
            )
        meta = obj.get("metadata")
        if meta is None:
            meta = obj["metadata"] = {}
        if not isinstance(meta, dict):
            raise bad_request(f"{kind}.metadata: expected an object")
        if meta.get("namespace", namespace) != namespace:
            raise bad_request(
                "the namespace of the provided object does not match the namespace sent on the "
                "request"
            )
        meta["namespace"] = namespace
        return obj

    def _generated_name(self, resource: str, namespace: str, prefix: str) -> str:
        prefix = prefix[: 253 - 5]
        while True:
            name = prefix + "".join(random.choices(_ALPHANUMS, k=5))
            if self.store.get(resource, namespace, name) is None:
                return name
