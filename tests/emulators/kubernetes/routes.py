"""The HTTP face of the API: discovery (`/version`, `/api`, `/api/v1`), the namespaced
collections and objects of pods, secrets and persistentvolumeclaims (list, watch, create, get,
replace, patch, delete), the all-namespaces lists, and `pods/{name}/log`."""

from __future__ import annotations

import base64
import json
from typing import TYPE_CHECKING, Any

from aiohttp import web

from tests.emulators.kubernetes import logs, watch
from tests.emulators.kubernetes.errors import ApiError, bad_request, no_such_path
from tests.emulators.kubernetes.params import flag, integer
from tests.emulators.kubernetes.resources import KINDS
from tests.emulators.kubernetes.selectors import Selector
from tests.emulators.kubernetes.validation import KUBERNETES_VERSION

if TYPE_CHECKING:
    from tests.emulators.kubernetes.server import KubernetesEmulator

Obj = dict[str, Any]
VERBS = ["create", "delete", "get", "list", "patch", "update", "watch"]


def version() -> Obj:
    major, minor, _ = KUBERNETES_VERSION.split(".")
    return {
        "major": major,
        "minor": minor,
        "gitVersion": f"v{KUBERNETES_VERSION}",
        "gitCommit": "0" * 40,
        "gitTreeState": "clean",
        "buildDate": "2025-04-23T00:00:00Z",
        "goVersion": "go1.24.2",
        "compiler": "gc",
        "platform": "linux/amd64",
    }


def resource_list() -> Obj:
    resources = []
    for kind in KINDS.values():
        resources.append(
            {
                "name": kind.resource,
                "singularName": kind.kind.lower(),
                "namespaced": True,
                "kind": kind.kind,
                "verbs": VERBS,
                "shortNames": list(kind.short_names),
            }
        )
    resources.append(
        {
            "name": "pods/log",
            "singularName": "",
            "namespaced": True,
            "kind": "Pod",
            "verbs": ["get"],
        }
    )
    return {"kind": "APIResourceList", "groupVersion": "v1", "resources": resources}


def api_routes(emulator: KubernetesEmulator) -> list[web.RouteDef]:
    api = emulator.api

    def resource_of(request: web.Request) -> str:
        resource = request.match_info["resource"]
        if resource not in KINDS:
            raise no_such_path()
        return resource

    async def body_of(request: web.Request) -> Any:
        raw = await request.read()
        try:
            return json.loads(raw) if raw.strip() else None
        except ValueError as exc:
            raise bad_request(f"couldn't get version/kind; json parse error: {exc}") from None

    async def collection(request: web.Request) -> web.StreamResponse:
        resource = resource_of(request)
        namespace = request.match_info.get("namespace")
        query = request.query
        selector = Selector.parse(resource, query.get("labelSelector"), query.get("fieldSelector"))
        if flag(query, "watch"):
            return await watch.stream(
                request, api, resource, namespace, selector, emulator.watch_timeout
            )
        items = api.list(resource, namespace, selector)
        meta: Obj = {"resourceVersion": str(api.store.resource_version)}
        items, meta = _page(items, query, meta)
        for item in items:  # a typed list's items carry no kind of their own
            item.pop("kind", None)
            item.pop("apiVersion", None)
        kind = KINDS[resource].list_kind
        return web.json_response(
            {"kind": kind, "apiVersion": "v1", "metadata": meta, "items": items}
        )

    async def create(request: web.Request) -> web.Response:
        resource = resource_of(request)
        namespace, body = request.match_info["namespace"], await body_of(request)
        obj = api.create(resource, namespace, body, dry_run(request))
        return web.json_response(obj, status=201)

    async def read(request: web.Request) -> web.Response:
        resource, info = resource_of(request), request.match_info
        return web.json_response(api.get(resource, info["namespace"], info["name"]))

    async def replace(request: web.Request) -> web.Response:
        resource, info = resource_of(request), request.match_info
        body = await body_of(request)
        obj = api.replace(resource, info["namespace"], info["name"], body, dry_run(request))
        return web.json_response(obj)

    async def patch(request: web.Request) -> web.Response:
        resource, info = resource_of(request), request.match_info
        body = await body_of(request)
        content_type = request.headers.get("Content-Type", "")
        obj = api.patch(
            resource, info["namespace"], info["name"], content_type, body, dry_run(request)
        )
        return web.json_response(obj)

    async def delete(request: web.Request) -> web.Response:
        resource, info = resource_of(request), request.match_info
        options = await body_of(request) or {}
        if not isinstance(options, dict):
            raise bad_request("the body of a deletion must be DeleteOptions")
        if "gracePeriodSeconds" in request.query:
            options["gracePeriodSeconds"] = integer(request.query, "gracePeriodSeconds")
        if "propagationPolicy" in request.query:
            options["propagationPolicy"] = request.query["propagationPolicy"]
        obj = api.delete(resource, info["namespace"], info["name"], options, dry_run(request))
        if resource != "pods" and not obj["metadata"].get("deletionTimestamp"):
            # Gone at once: the registry answers with a Status (pods answer with the pod).
            details = {"name": info["name"], "kind": resource, "uid": obj["metadata"]["uid"]}
            return web.json_response(
                {
                    "kind": "Status",
                    "apiVersion": "v1",
                    "metadata": {},
                    "status": "Success",
                    "details": details,
                }
            )
        return web.json_response(obj)

    async def namespace(request: web.Request) -> web.Response:
        name = request.match_info["namespace"]  # every namespace exists
        return web.json_response(
            {
                "kind": "Namespace",
                "apiVersion": "v1",
                "metadata": {"name": name, "labels": {"kubernetes.io/metadata.name": name}},
                "spec": {"finalizers": ["kubernetes"]},
                "status": {"phase": "Active"},
            }
        )

    async def pod_log(request: web.Request) -> web.StreamResponse:
        info = request.match_info
        return await logs.serve(request, emulator, info["namespace"], info["name"])

    async def discovery(request: web.Request) -> web.Response:
        if request.path in ("/version", "/version/"):
            return web.json_response(version())
        if request.path == "/api":
            return web.json_response(
                {
                    "kind": "APIVersions",
                    "versions": ["v1"],
                    "serverAddressByClientCIDRs": [
                        {"clientCIDR": "0.0.0.0/0", "serverAddress": request.host},
                    ],
                }
            )
        if request.path == "/apis":
            return web.json_response({"kind": "APIGroupList", "apiVersion": "v1", "groups": []})
        if request.path == "/api/v1":
            return web.json_response(resource_list())
        return web.Response(text="ok")

    objects = "/api/v1/namespaces/{namespace}/{resource}"
    return [
        *(web.get(path, discovery) for path in ("/version", "/version/", "/api", "/apis")),
        web.get("/api/v1", discovery),
        *(web.get(path, discovery) for path in ("/healthz", "/livez", "/readyz")),
        web.get("/api/v1/namespaces/{namespace}", namespace),
        web.get("/api/v1/namespaces/{namespace}/pods/{name}/log", pod_log),
        web.get(objects, collection),
        web.post(objects, create),
        web.get(objects + "/{name}", read),
        web.put(objects + "/{name}", replace),
        web.patch(objects + "/{name}", patch),
        web.delete(objects + "/{name}", delete),
        web.get("/api/v1/{resource}", collection),
    ]


def dry_run(request: web.Request) -> bool:
    """`dryRun=All`: checked and answered as if done, but not stored."""
    return "All" in request.query.getall("dryRun", [])


def _page(items: list[Obj], query: Any, meta: Obj) -> tuple[list[Obj], Obj]:
    """`limit` and `continue`: a page of the list, and a token for the rest (a position in
    key order; the real token also pins the list's resourceVersion, this one does not)."""
    token = query.get("continue")
    if token:
        try:
            after = json.loads(base64.urlsafe_b64decode(token))["after"]
        except (ValueError, KeyError, TypeError):
            raise ApiError(410, "Expired", "the provided continue parameter is too old") from None
        items = [i for i in items if _key(i) > tuple(after)]
    limit = integer(query, "limit") or 0
    if limit and len(items) > limit:
        rest = len(items) - limit
        items = items[:limit]
        after = list(_key(items[-1]))
        meta["continue"] = base64.urlsafe_b64encode(json.dumps({"after": after}).encode()).decode()
        meta["remainingItemCount"] = rest
    return items, meta


def _key(obj: Obj) -> tuple[str, str]:
    return (obj["metadata"]["namespace"], obj["metadata"]["name"])
