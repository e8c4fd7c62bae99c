"""Control endpoints, so a person running the emulator from the command line can do to pods
what the node would, and see what happened (no credential needed):

    POST /_emulator/pods/{namespace}/{name}/oom_kill  {"container": "c"}   the OOM killer
    POST /_emulator/pods/{namespace}/{name}/evict     {"message": "..."}   the eviction manager
    POST /_emulator/compact                           older watch positions expire (410)
    GET  /_emulator/state                             every object
    GET  /_emulator/received                          every write request
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from aiohttp import web

from tests.emulators.kubernetes.resources import KINDS

if TYPE_CHECKING:
    from tests.emulators.kubernetes.server import KubernetesEmulator


def control_routes(emulator: KubernetesEmulator) -> list[web.RouteDef]:
    async def options(request: web.Request) -> dict[str, str]:
        body = await request.json() if request.can_read_body else {}
        return body if isinstance(body, dict) else {}

    async def oom_kill(request: web.Request) -> web.Response:
        info = request.match_info
        container = (await options(request)).get("container")
        try:
            emulator.oom_kill(info["namespace"], info["name"], container)
        except KeyError as exc:
            return web.json_response({"error": str(exc)}, status=404)
        return web.json_response({"killed": info["name"]})

    async def evict(request: web.Request) -> web.Response:
        info = request.match_info
        message = (await options(request)).get("message")
        try:
            if message:
                emulator.evict(info["namespace"], info["name"], message)
            else:
                emulator.evict(info["namespace"], info["name"])
        except KeyError as exc:
            return web.json_response({"error": str(exc)}, status=404)
        return web.json_response({"evicted": info["name"]})

    async def compact(request: web.Request) -> web.Response:
        emulator.compact()
        return web.json_response({"resourceVersion": str(emulator.store.resource_version)})

    async def state(request: web.Request) -> web.Response:
        return web.json_response({resource: emulator.objects(resource) for resource in KINDS})

    async def received(request: web.Request) -> web.Response:
        return web.json_response(emulator.received)

    return [
        web.post("/_emulator/pods/{namespace}/{name}/oom_kill", oom_kill),
        web.post("/_emulator/pods/{namespace}/{name}/evict", evict),
        web.post("/_emulator/compact", compact),
        web.get("/_emulator/state", state),
        web.get("/_emulator/received", received),
    ]
