"""`GET .../pods/{name}/log`: a container's output (stdout and stderr together), with
`container`, `previous`, `tailLines`, `limitBytes` and `follow` as the kubelet serves them."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

from aiohttp import web

from tests.emulators.kubernetes.errors import bad_request
from tests.emulators.kubernetes.params import flag, integer

if TYPE_CHECKING:
    from tests.emulators.kubernetes.server import KubernetesEmulator

_FOLLOW_POLL = 0.05  # seconds between looks at a followed log for more output


async def serve(
    request: web.Request, emulator: KubernetesEmulator, namespace: str, name: str
) -> web.StreamResponse:
    pod = emulator.api.get("pods", namespace, name)
    spec = pod["spec"]
    inits = [c["name"] for c in spec.get("initContainers") or []]
    names = [c["name"] for c in spec["containers"]]
    query = request.query
    container = query.get("container")
    if container is None:
        if len(names) != 1:
            also = f" or one of the init containers: [{' '.join(inits)}]" if inits else ""
            raise bad_request(
                f"a container name must be specified for pod {name}, choose one of: "
                f"[{' '.join(names)}]{also}"
            )
        container = spec["containers"][0]["name"]
    if container not in names + inits:
        raise bad_request(f"container {container} is not valid for pod {name}")
    runs = emulator.kubelet.logs(namespace, name, pod["metadata"]["uid"]).get(container) or []
    previous = flag(query, "previous")
    if not runs:
        statuses = [
            *pod["status"].get("initContainerStatuses", []),
            *pod["status"].get("containerStatuses", []),
        ]
        state = next((s["state"] for s in statuses if s["name"] == container), {})
        reason = state.get("waiting", {}).get("reason", "ContainerCreating")
        raise bad_request(f'container "{container}" in pod "{name}" is waiting to start: {reason}')
    if previous and len(runs) < 2:
        raise bad_request(f'previous terminated container "{container}" in pod "{name}" not found')
    path = runs[-2] if previous else runs[-1]
    data = path.read_bytes()
    tail = integer(query, "tailLines")
    if tail is not None:
        data = b"".join(data.splitlines(keepends=True)[-tail:] if tail > 0 else [])
    limit = integer(query, "limitBytes")
    if limit:
        data = data[:limit]
    if not flag(query, "follow") or previous:
        return web.Response(body=data, content_type="text/plain")
    response = web.StreamResponse(headers={"Content-Type": "text/plain"})
    await response.prepare(request)
    await response.write(data)
    offset = path.stat().st_size
    while True:
        writing = emulator.kubelet.writing(path)
        with path.open("rb") as log:
            log.seek(offset)
            more = log.read()
        if more:
            await response.write(more)
            offset += len(more)
        elif not writing:
            break
        else:
            await asyncio.sleep(_FOLLOW_POLL)
    await response.write_eof()
    return response
