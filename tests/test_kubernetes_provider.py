"""Sessions on the `kubernetes` provider: the engine drives pods through the real
kubernetes_asyncio client against the Kubernetes API emulator, which runs each pod's command
as a local sandbox process, so the same supervisor, agent and git as everywhere do the work."""

from __future__ import annotations

import asyncio
import contextlib
import json
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes_asyncio import client

from core import runtime
from core.datadir import DataDir
from core.errors import ConfigError
from core.sandboxes import SessionOptions
from core.sandboxes.kubernetes import KubernetesProvider, connect
from tests.conftest import free_port
from tests.emulators.kubernetes import KubernetesEmulator, python_image
from tests.engine_helpers import fast_settings, until
from tests.gitserver import GitServer, git
from tests.sandbox_fixtures import (
    CAROL,
    PROVIDER_KEY,
    System,
    bash_script,
    calc_repo,
    fixing_script,
    start_system,
)

ROOT = Path(__file__).resolve().parents[1]
TEMPLATE = ROOT / "manifests/base/sandboxes/sandbox-pod.yaml"
ROLE = ROOT / "manifests/base/sandboxes/role.yaml"
NS = "open-inspect-sandboxes"
NPM_TOKEN = "npm_k8s_Zq8uYv3Lr0Kx7Wd2Hs5T"
SANDBOX_IMAGE = yaml.safe_load(TEMPLATE.read_text())["spec"]["containers"][0]["image"]


@contextlib.asynccontextmanager
async def cluster(root: Path) -> AsyncIterator[KubernetesEmulator]:
    """The emulator, with the sandbox image made of this machine's Python and this source."""
    async with KubernetesEmulator(root, images={SANDBOX_IMAGE: python_image()}) as emulator:
        yield emulator


@contextlib.asynccontextmanager
async def deployment(
    database_url: str, tmp_path: Path, **overrides: Any
) -> AsyncIterator[tuple[KubernetesEmulator, System, GitServer]]:
    """The engine on the kubernetes provider, its repository served over authenticated HTTP
    (pods have no mirror to borrow from), the engine reachable on a port chosen up front."""
    port = free_port()
    async with (
        cluster(tmp_path / "cluster") as emulator,
        GitServer(tmp_path / "served", read_tokens={"rtok"}, write_tokens={"wtok"}) as git_,
    ):
        calc_repo(tmp_path / "served")
        url = git_.url("calc").replace("://", "://reader:rtok@", 1)
        values: dict[str, Any] = dict(
            http_port=port,
            sandbox_provider="kubernetes",
            kubeconfig=emulator.write_kubeconfig(tmp_path / "kubeconfig"),
            kubernetes_core_url=f"http://127.0.0.1:{port}",
            kubernetes_pod_template=TEMPLATE,
            repositories=[f"acme/calc={url}"],
            git_push_credentials=["acme/calc=writer:wtok"],
            warm_pool=0,
        )
        values.update(overrides)
        async with start_system(database_url, tmp_path, **values) as system:
            yield emulator, system, git_


def thread() -> str:
    return f"slack:T1:C1:{uuid.uuid4().hex[:10]}"


def provider_of(system: System) -> KubernetesProvider:
    provider = system.engine._ctx.provider
    assert isinstance(provider, KubernetesProvider)
    return provider


def pods(emulator: KubernetesEmulator, **labels: str) -> list[dict[str, Any]]:
    found = emulator.objects("pods", NS)
    return [p for p in found if labels.items() <= (p["metadata"].get("labels") or {}).items()]


def session_pods(emulator: KubernetesEmulator, session_id: str) -> list[dict[str, Any]]:
    return pods(emulator, **{"open-inspect.dev/session": session_id})


def strings(value: Any) -> list[str]:
    """Every string anywhere in a JSON-like value (keys included)."""
    if isinstance(value, dict):
        return [s for k, v in value.items() for s in (k, *strings(v))]
    if isinstance(value, list):
        return [s for v in value for s in strings(v)]
    return [value] if isinstance(value, str) else []


async def test_a_session_runs_end_to_end_in_a_pod(own_database_url: str, tmp_path: Path) -> None:
    async with deployment(own_database_url, tmp_path) as (emulator, system, served):
        await system.engine.secrets.set("NPM_TOKEN", NPM_TOKEN, "acme/calc", by="cli:ops")
        system.llm.script = [
            *fixing_script()[:-1],
            {"tool_calls": [{"name": "bash", "input": {"command": "echo npm=$NPM_TOKEN"}}]},
            fixing_script()[-1],
        ]
        receipt = await system.prompt("Fix add() in calc.py and run the tests.", thread())
        state = await system.finish(receipt.prompt_id, "done", "failed", timeout=90)
        events = await system.events(receipt.session_id)
        assert state == "done", [(e["type"], e["data"][:300]) for e in events]

        calls = [json.loads(e["data"])["name"] for e in events if e["type"] == "tool_call"]
        assert calls == ["read_file", "edit_file", "bash", "bash"]
        # The repository's secret reached the agent's command, which showed only its name.
        output = [json.loads(e["data"])["output"] for e in events if e["type"] == "tool_result"]
        assert "npm=[REDACTED:NPM_TOKEN]" in output[-1]
        complete = json.loads(next(e["data"] for e in events if e["type"] == "prompt_complete"))
        assert [f["path"] for f in complete["files"]] == ["calc.py"]
        assert "+    return a + b" in complete["diff"]
        assert {r["api_key"] for r in system.llm.requests} == {PROVIDER_KEY}

        (pod,) = session_pods(emulator, receipt.session_id)
        labels = pod["metadata"]["labels"]
        assert labels["app.kubernetes.io/instance"] == "open-inspect"
        assert labels["open-inspect.dev/owner"] == "slack.T1.UCAROL"
        assert pod["status"]["phase"] == "Running"
        workspace = emulator.claim_path(NS, pod_claim(pod)) / "repo"
        assert (
            git("log", "-1", "--format=%an <%ae>", cwd=workspace).strip()
            == f"{CAROL.name} <{CAROL.email}>"
        )
        pushed = await system.engine.push(receipt.session_id, by="Carol")
        assert pushed.type == "pushed", pushed.data
        branch = f"open-inspect/{receipt.session_id}"
        bare = tmp_path / "served" / "calc.git"
        assert "return a + b" in git("show", f"{branch}:calc.py", cwd=bare)
        assert served.tokens_used("git-receive-pack") <= {"wtok", None}

        # Nothing sent to the API carries a credential but the session's own token.
        token = system.engine._actors[receipt.session_id]._sandbox.token
        assert_only_own_tokens(emulator, system, {token})
        # The secret went only into the sandbox's own Secret: no pod spec or annotation has it.
        holding = [e["path"] for e in emulator.received if NPM_TOKEN in json.dumps(e["body"])]
        assert holding == [f"/api/v1/namespaces/{NS}/secrets"], holding
        (secret,) = [
            s
            for s in emulator.objects("secrets", NS)
            if s["metadata"]["name"].startswith(pod["metadata"]["name"])
        ]
        assert secret["metadata"]["ownerReferences"][0]["uid"] == pod["metadata"]["uid"]
        assert_role_grants_what_was_used(emulator)


def pod_claim(pod: dict[str, Any]) -> str:
    (claim,) = [
        v["persistentVolumeClaim"]["claimName"]
        for v in pod["spec"]["volumes"]
        if "persistentVolumeClaim" in v
    ]
    return claim


def assert_only_own_tokens(emulator: KubernetesEmulator, system: System, own: set[str]) -> None:
    settings = system.runtime.settings
    forbidden = {
        PROVIDER_KEY,
        settings.secrets_key,
        settings.link_secret,
        "rtok",
        "wtok",
        system.runtime.database_url,
    }
    sent = [s for entry in emulator.received for s in strings(entry["body"])]
    assert sent, "nothing was sent to the API"
    for text in sent:
        for secret in forbidden:
            assert secret not in text, f"a credential was sent to the Kubernetes API: {text[:80]}"
    tokens = {word.strip() for text in sent for word in text.split() if "oisbx_" in word}
    assert tokens <= own, tokens - own


def assert_role_grants_what_was_used(emulator: KubernetesEmulator) -> None:
    """Every call the provider made is allowed by the Role the manifests give it."""
    granted = {
        (resource, verb)
        for rule in yaml.safe_load(ROLE.read_text())["rules"]
        for resource in rule["resources"]
        for verb in rule["verbs"]
    }
    for method, path, query in emulator.calls:
        parts = path.strip("/").split("/")  # api/v1/namespaces/<ns>/<resource>[/<name>[/sub]]
        assert parts[:3] == ["api", "v1", "namespaces"] and parts[3] == NS, path
        resource = "/".join([parts[4], *parts[6:7]])
        named = len(parts) > 5
        verb = {
            "POST": "create",
            "PATCH": "patch",
            "DELETE": "delete",
            "PUT": "update",
        }.get(method) or ("get" if named else ("watch" if "watch" in query else "list"))
        assert (resource, verb) in granted, f"the Role does not allow {verb} on {resource}"


async def test_a_hibernated_session_resumes_in_a_new_pod_with_its_workspace(
    database_url: str, tmp_path: Path
) -> None:
    async with deployment(database_url, tmp_path, idle_seconds=1.5) as (emulator, system, _):
        key = thread()
        system.llm.script = bash_script("echo kept-between-pods > notes.txt")
        first = await system.prompt("write a note", key)
        assert await system.finish(first.prompt_id, "done", "failed", timeout=90) == "done"
        (pod,) = session_pods(emulator, first.session_id)
        claim = pod_claim(pod)

        await until(
            lambda: system.runtime.pool.fetchval(
                "SELECT state = 'hibernated' FROM sessions WHERE id = $1", first.session_id
            ),
            timeout=30,
            what="the session to hibernate",
        )
        await until(lambda: not session_pods(emulator, first.session_id), what="the pod to go")
        claims = [c["metadata"]["name"] for c in emulator.objects("persistentvolumeclaims", NS)]
        assert claim in claims  # the workspace outlives its pod

        system.llm.script = bash_script("cat notes.txt")
        second = await system.prompt("read the note", key, n=2)
        assert second.session_id == first.session_id
        assert await system.finish(second.prompt_id, "done", "failed", timeout=90) == "done"
        events = await system.events(second.session_id)
        outputs = [
            json.loads(e["data"])["output"]
            for e in events
            if e["type"] == "tool_result" and e["prompt_id"] == second.prompt_id
        ]
        assert any("kept-between-pods" in o for o in outputs), outputs
        (again,) = session_pods(emulator, first.session_id)
        assert again["metadata"]["name"] != pod["metadata"]["name"]
        assert pod_claim(again) == claim


async def pod_running_a_command(
    system: System, emulator: KubernetesEmulator, session_id: str
) -> dict[str, Any]:
    """The session's pod, once its agent has started a command."""

    async def command_started() -> bool:
        return any(e["type"] == "tool_call" for e in await system.events(session_id))

    await until(command_started, timeout=60, what="the agent to start its command")
    (pod,) = session_pods(emulator, session_id)
    return pod


async def new_sessions(system: System, count: int) -> list[str]:
    """Sessions as the engine records them, for providers driven directly."""
    sessions = [uuid.uuid4().hex[:12] for _ in range(count)]
    for session_id in sessions:
        await system.runtime.pool.execute(
            "INSERT INTO sessions (id, repository) VALUES ($1, 'acme/calc')", session_id
        )
    return sessions


async def test_an_oom_killed_pod_fails_its_prompt_with_that_reason(
    database_url: str, tmp_path: Path
) -> None:
    async with deployment(database_url, tmp_path) as (emulator, system, _):
        key = thread()
        system.llm.script = bash_script("sleep 60")
        receipt = await system.prompt("use a lot of memory", key)
        pod = await pod_running_a_command(system, emulator, receipt.session_id)
        emulator.oom_kill(NS, pod["metadata"]["name"])
        assert await system.finish(receipt.prompt_id, "failed", timeout=30) == "failed"
        reason = await system.reason(receipt.prompt_id)
        assert "ran out of memory" in reason and "OOMKilled" in reason, reason

        # The next prompt gets a new pod on the same workspace.
        system.llm.script = bash_script("echo alive")
        second = await system.prompt("again", key, n=2)
        assert await system.finish(second.prompt_id, "done", "failed", timeout=90) == "done"
        names = {p["metadata"]["name"] for p in session_pods(emulator, receipt.session_id)}
        assert pod["metadata"]["name"] not in names and len(names) == 1


async def test_a_pod_deleted_from_outside_fails_its_prompt_at_once_and_keeps_the_work(
    database_url: str, tmp_path: Path
) -> None:
    async with deployment(database_url, tmp_path) as (emulator, system, _):
        key = thread()
        system.llm.script = bash_script("echo before > kept.txt && sleep 60")
        receipt = await system.prompt("work slowly", key)
        pod = await pod_running_a_command(system, emulator, receipt.session_id)
        api = await connect(system.runtime.settings)
        try:  # as `kubectl delete pod` does: SIGTERM, 30 s of grace
            await client.CoreV1Api(api).delete_namespaced_pod(pod["metadata"]["name"], NS)
        finally:
            await api.close()
        assert await system.finish(receipt.prompt_id, "failed", timeout=10) == "failed"
        assert "deleted from outside Open-Inspect" in await system.reason(receipt.prompt_id)
        # The supervisor, PID 1 of its container, acted on the SIGTERM instead of ignoring it.
        await until(lambda: not emulator.get("pods", NS, pod["metadata"]["name"]), timeout=10)
        assert "SIGTERM: stopping" in emulator.log(NS, pod["metadata"]["name"])

        system.llm.script = bash_script("cat kept.txt")
        second = await system.prompt("go on", key, n=2)
        assert await system.finish(second.prompt_id, "done", "failed", timeout=90) == "done"
        events = await system.events(second.session_id)
        outputs = [json.loads(e["data"])["output"] for e in events if e["type"] == "tool_result"]
        assert "before" in outputs[-1]


@contextlib.asynccontextmanager
async def two_replicas(database_url: str, tmp_path: Path) -> AsyncIterator[tuple[Any, ...]]:
    """Two replicas' providers over one cluster whose warm pool holds one ready pod, and two
    sessions: (emulator, first, second, the warm pod, the sessions)."""
    async with deployment(database_url, tmp_path, warm_pool=1) as (emulator, system, _):
        first = provider_of(system)
        (warm,) = await until(lambda: first.pool_pods("ready"), timeout=60, what="a warm pod")
        runtime_ = system.runtime
        second = KubernetesProvider(runtime_.settings, runtime_.pool, runtime_.broker, "replica-b")
        await second.start()
        try:
            yield emulator, first, second, warm, await new_sessions(system, 2)
        finally:
            await second.close()


async def test_two_replicas_racing_for_one_warm_pod_never_share_it(
    database_url: str, tmp_path: Path
) -> None:
    async with two_replicas(database_url, tmp_path) as (emulator, first, second, warm, sessions):
        # The same pod, as both replicas listed it: exactly one patch goes through.
        won = await asyncio.gather(
            first._win(warm, sessions[0], None), second._win(warm, sessions[1], None)
        )
        assert sum(result is not None for result in won) == 1
        # The filler's own patch made it ready; then the two claims: one won, one refused.
        statuses = [e["status"] for e in emulator.patches_of(NS, warm.metadata.name)]
        assert sorted(statuses[1:]) == [200, 409], statuses


async def test_two_replicas_creating_at_once_take_the_warm_pod_and_a_new_one(
    database_url: str, tmp_path: Path
) -> None:
    async with two_replicas(database_url, tmp_path) as (emulator, first, second, warm, sessions):
        sandboxes = await asyncio.gather(
            first.create(sessions[0], "acme/calc", SessionOptions()),
            second.create(sessions[1], "acme/calc", SessionOptions()),
        )
        try:
            names = [s.pod_name for s in sandboxes]
            assert len(set(names)) == 2 and warm.metadata.name in names
            assert sum(s.warm for s in sandboxes) == 1
            await asyncio.gather(*(s.wait_ready() for s in sandboxes))
            for sandbox, session_id in zip(sandboxes, sessions, strict=True):
                (pod,) = session_pods(emulator, session_id)
                assert pod["metadata"]["name"] == sandbox.pod_name
        finally:
            await asyncio.gather(*(s.close() for s in sandboxes), return_exceptions=True)


async def test_garbage_collection_removes_only_this_releases_orphans(
    database_url: str, tmp_path: Path
) -> None:
    async with deployment(database_url, tmp_path) as (emulator, system, _):
        key = thread()
        system.llm.script = bash_script("true")
        live = await system.prompt("stay", key)
        assert await system.finish(live.prompt_id, "done", "failed", timeout=90) == "done"
        provider = provider_of(system)

        api = await connect(system.runtime.settings)
        core = client.CoreV1Api(api)
        try:
            for release in ("open-inspect", "another-release"):
                labels = {
                    "app.kubernetes.io/instance": release,
                    "open-inspect.dev/sandbox": "sbx-gone00000000",
                }
                suffix = "" if release == "open-inspect" else "-other"
                # A pod whose sandbox ended, its Secret, a claim of a session that is gone.
                await core.create_namespaced_pod(NS, orphan_pod(f"sbx-gone{suffix}", labels))
                await core.create_namespaced_secret(
                    NS,
                    {
                        "metadata": {"name": f"sbx-gone{suffix}-token", "labels": labels},
                        "stringData": {"token": "x"},
                    },
                )
                await core.create_namespaced_persistent_volume_claim(
                    NS,
                    {
                        "metadata": {
                            "name": f"ws-gone{suffix}",
                            "labels": {**labels, "open-inspect.dev/session": "nosuchsession"},
                        },
                        "spec": {
                            "accessModes": ["ReadWriteOnce"],
                            "resources": {"requests": {"storage": "1Gi"}},
                        },
                    },
                )
            deleted = await provider.collect_garbage(grace=0)
        finally:
            await api.close()
        assert deleted == {
            "pods": ["sbx-gone"],
            "secrets": ["sbx-gone-token"],
            "claims": ["ws-gone"],
        }
        deleting = {
            p["metadata"]["name"]
            for p in emulator.objects("pods", NS)
            if p["metadata"].get("deletionTimestamp")
        }
        assert deleting == {"sbx-gone"}
        left = {p["metadata"]["name"] for p in emulator.objects("pods", NS)}
        assert "sbx-gone-other" in left  # another release's: not ours to touch
        assert session_pods(emulator, live.session_id)  # the live session's pod stays
        claims = {c["metadata"]["name"] for c in emulator.objects("persistentvolumeclaims", NS)}
        assert (
            "ws-gone-other" in claims
            and pod_claim(session_pods(emulator, live.session_id)[0]) in claims
        )
        secrets = {s["metadata"]["name"] for s in emulator.objects("secrets", NS)}
        assert "sbx-gone-other-token" in secrets


def orphan_pod(name: str, labels: dict[str, str]) -> dict[str, Any]:
    return {
        "metadata": {"name": name, "labels": labels},
        "spec": {
            "restartPolicy": "Never",
            "containers": [{"name": "c", "image": SANDBOX_IMAGE, "command": ["sleep", "600"]}],
        },
    }


async def test_an_unreachable_cluster_or_missing_template_stops_the_start_with_a_clear_message(
    database_url: str, tmp_path: Path
) -> None:
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [
                    {"name": "c", "cluster": {"server": f"http://127.0.0.1:{free_port()}"}}
                ],
                "users": [{"name": "u", "user": {"token": "t"}}],
                "contexts": [{"name": "x", "context": {"cluster": "c", "user": "u"}}],
                "current-context": "x",
            }
        )
    )
    base = dict(
        database_url=database_url,
        data_dir=tmp_path / "data",
        http_port=0,
        sandbox_provider="kubernetes",
        kubernetes_pod_template=TEMPLATE,
    )
    with pytest.raises(
        ConfigError, match="Cannot list pods in the namespace open-inspect-sandboxes"
    ):
        await runtime.start(
            fast_settings(**base, kubeconfig=kubeconfig), DataDir(tmp_path / "data")
        )
    with pytest.raises(ConfigError, match="Cannot read the sandbox pod template"):
        await runtime.start(
            fast_settings(
                **{**base, "kubernetes_pod_template": tmp_path / "none.yaml"}, kubeconfig=kubeconfig
            ),
            DataDir(tmp_path / "data"),
        )
