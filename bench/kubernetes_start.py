"""Kubernetes sandbox start-up: from submitting a prompt in a new thread to its first model
request, when the session makes a new pod (cold) and when it claims a ready warm pod (warm),
and what a claim itself costs (list, preconditioned patch, token swap, binding).

The cluster is the Kubernetes API emulator of the tests: it answers over HTTP like an API
server and runs each pod's command as a local bubblewrap sandbox at once, with no scheduling
or image pull. So the figures are the provider's own cost (API calls, watch, bridge) plus the
sandbox's start; on a real cluster, add its scheduling and volume attach to the cold figure
(warm pods have paid them already).

    python -m bench.kubernetes_start [--runs 10]

Environment: OPEN_INSPECT_BENCH_DATABASE_URL (see bench/common.py). Prints one JSON object.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import tempfile
import time
from pathlib import Path

from bench.common import header, scratch_database
from bench.sandbox_start import ANSWER, KEY, first_request, summary
from core import runtime
from core.config import Settings
from core.crypto import generate_key
from core.datadir import DataDir
from core.sandboxes.kubernetes import KubernetesProvider
from tests.conftest import free_port
from tests.emulators.kubernetes import KubernetesEmulator, python_image
from tests.emulators.llm.server import LLMEmulator
from tests.gitserver import GitServer, make_repo

ROOT = Path(__file__).resolve().parents[1]
TEMPLATE = ROOT / "manifests/base/sandboxes/sandbox-pod.yaml"
IMAGE = "open-inspect/sandbox:0.1.0"


async def pool_ready(provider: KubernetesProvider, size: int) -> None:
    # Polls the API server, as a person watching the pool would.
    while len(await provider.pool_pods("ready")) < size:  # noqa: ASYNC110
        await asyncio.sleep(0.05)


async def scenario(running: runtime.Runtime, llm: LLMEmulator, runs: int, warm: int) -> dict:
    engine = running.engine
    provider = engine._ctx.provider
    claims: list[float] = []
    create = provider.create

    async def timed_create(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202 - a pass-through
        started = time.perf_counter()
        sandbox = await create(*args, **kwargs)
        if sandbox.warm:
            claims.append(time.perf_counter() - started)
        return sandbox

    provider.create = timed_create
    await first_request(engine, llm, "bench/small")  # the first pod; not counted
    samples = []
    for _ in range(runs):
        if warm:
            await pool_ready(provider, warm)
        samples.append(await first_request(engine, llm, "bench/small"))
    result = summary(samples)
    if claims:
        result["claim"] = summary(claims)
    return result


async def main(runs: int) -> dict:
    with tempfile.TemporaryDirectory(prefix="oi-bench-k8s-") as tmp:
        root = Path(tmp)
        llm = LLMEmulator(script=ANSWER, api_key=KEY)
        await llm.start()
        result = {**header("kubernetes_start"), "cluster": "tests.emulators.kubernetes"}
        async with (
            KubernetesEmulator(root / "cluster", images={IMAGE: python_image()}) as cluster,
            GitServer(root / "served", read_tokens={"rtok"}) as served,
        ):
            make_repo(root / "served", "small", {"README.md": "# bench\n"})
            url = served.url("small").replace("://", "://reader:rtok@", 1)
            for warm in (0, 2):
                port = free_port()
                async with scratch_database() as database_url:
                    settings = Settings(
                        database_url=database_url,
                        data_dir=root / f"data-{warm}",
                        http_port=port,
                        secrets_key=generate_key(),
                        link_secret=generate_key(),
                        repositories=[f"bench/small={url}"],
                        anthropic_base_url=llm.url,
                        anthropic_api_key=KEY,
                        model="anthropic:claude-sonnet-4-6",
                        idle_seconds=1.0,
                        warm_pool=warm,
                        sandbox_provider="kubernetes",
                        kubeconfig=cluster.write_kubeconfig(root / f"kubeconfig-{warm}"),
                        kubernetes_pod_template=TEMPLATE,
                        kubernetes_core_url=f"http://127.0.0.1:{port}",
                    )
                    running = await runtime.start(settings, DataDir(settings.data_dir))
                    try:
                        name = "warm" if warm else "cold"
                        result[name] = await scenario(running, llm, runs, warm)
                    finally:
                        await running.close()
        await llm.stop()
        return result


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=10)
    print(json.dumps(asyncio.run(main(parser.parse_args().runs)), indent=2))
