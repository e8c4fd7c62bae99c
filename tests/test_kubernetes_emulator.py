"""The Kubernetes emulator, driven by the real kubernetes_asyncio client: if it accepts the
emulator's answers, refusals and watch streams, and the pods really run, the product's
kubernetes provider can be tested against it as against a cluster."""

from __future__ import annotations

import asyncio
import base64
import os
import re
import sys
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes_asyncio import client, config, watch
from kubernetes_asyncio.client.exceptions import ApiException

from tests.emulators import from_command_line
from tests.emulators.kubernetes import ImageSpec, KubernetesEmulator, python_image
from tests.engine_helpers import until

NS = "sandboxes"
SHELL = "example.com/shell:1"  # an image holding nothing beyond the host's /usr: sh and coreutils
WAIT = 15  # seconds a watch may wait for what a test expects
TEMPLATE = Path(__file__).parents[1] / "manifests/base/sandboxes/sandbox-pod.yaml"


@dataclass
class Cluster:
    emulator: KubernetesEmulator
    core: client.CoreV1Api


@pytest.fixture
async def cluster(tmp_path: Path) -> AsyncIterator[Cluster]:
    images = {SHELL: ImageSpec(binds=[], env={"PATH": "/usr/bin:/bin", "IMAGE_VAR": "image"})}
    emulator = KubernetesEmulator(tmp_path / "node", images, restart_backoff=0.2)
    await emulator.start()
    try:
        kubeconfig = emulator.write_kubeconfig(tmp_path / "kubeconfig", namespace=NS)
        api_client = await config.new_client_from_config(config_file=str(kubeconfig))
        async with api_client:
            yield Cluster(emulator, client.CoreV1Api(api_client))
    finally:
        print(emulator.dump())  # shown by pytest when the test failed
        await emulator.stop()


def pod_manifest(script: str, **spec: Any) -> dict[str, Any]:
    """A pod running `sh -c script` once."""
    container = {"name": "main", "image": SHELL, "command": ["sh", "-c", script]}
    container |= spec.pop("container", {})
    return {
        "metadata": spec.pop("metadata", {"generateName": "job-"}),
        "spec": {"restartPolicy": "Never", "containers": [container], **spec},
    }


def secret_manifest(name: str, **data: str) -> dict[str, Any]:
    return {"metadata": {"name": name}, "stringData": data}


def claim_manifest(name: str) -> dict[str, Any]:
    return {
        "metadata": {"name": name},
        "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}},
    }


async def events_of(
    cluster: Cluster,
    name: str,
    since: str,
    until: Callable[[dict[str, Any]], bool],
    resource: str = "pod",
    namespace: str = NS,
) -> list[dict[str, Any]]:
    """Watch one object from `since` until an event satisfies `until`: the events seen."""
    seen = []
    lister = getattr(cluster.core, f"list_namespaced_{resource}")
    async with watch.Watch() as stream:
        async for event in stream.stream(
            lister,
            namespace,
            field_selector=f"metadata.name={name}",
            resource_version=since,
            timeout_seconds=WAIT,
        ):
            seen.append(event)
            if until(event):
                return seen
    summary = [(e["type"], (e["raw_object"].get("status") or {}).get("phase")) for e in seen]
    raise AssertionError(f"{resource} {name}: the awaited event never came; saw {summary}")


def phase_is(*phases: str) -> Callable[[dict[str, Any]], bool]:
    return lambda event: event["raw_object"].get("status", {}).get("phase") in phases


async def run_to_end(cluster: Cluster, manifest: dict[str, Any]) -> client.V1Pod:
    """Create a pod and return it as it is once it has succeeded or failed."""
    pod = await cluster.core.create_namespaced_pod(NS, manifest)
    name = pod.metadata.name
    events = await events_of(
        cluster, name, pod.metadata.resource_version, phase_is("Succeeded", "Failed")
    )
    return events[-1]["object"]


async def pod_log(cluster: Cluster, name: str) -> str:
    return await cluster.core.read_namespaced_pod_log(name, NS)


async def refused(call: Any) -> ApiException:
    with pytest.raises(ApiException) as caught:
        await call
    return caught.value


# ----- the API ---------------------------------------------------------------------------


async def test_objects_are_created_named_and_listed_through_selectors(cluster: Cluster) -> None:
    core = cluster.core
    for name, labels in [("a", {"tier": "web", "env": "prod"}), ("b", {"tier": "db"}), ("c", {})]:
        await core.create_namespaced_secret(
            NS, {"metadata": {"name": name, "labels": labels}, "data": {"k": "dg=="}}
        )
    made = await core.create_namespaced_secret(NS, {"metadata": {"generateName": "token-"}})
    assert re.fullmatch(r"token-[a-z0-9]{5}", made.metadata.name)
    assert made.metadata.uid and made.metadata.creation_timestamp and made.metadata.namespace == NS
    assert made.type == "Opaque"
    fetched = await core.read_namespaced_secret("a", NS)
    assert fetched.data == {"k": "dg=="}
    assert fetched.metadata.labels == {"tier": "web", "env": "prod"}

    async def names(**selectors: str) -> list[str]:
        listed = await core.list_namespaced_secret(NS, **selectors)
        assert listed.kind == "SecretList"
        assert int(listed.metadata.resource_version) == cluster.emulator.store.resource_version
        return sorted(item.metadata.name for item in listed.items)

    assert await names(label_selector="tier=web") == ["a"]
    assert await names(label_selector="tier==db") == ["b"]
    assert await names(label_selector="tier!=web") == ["b", "c", made.metadata.name]
    assert await names(label_selector="tier") == ["a", "b"]
    assert await names(label_selector="!tier") == ["c", made.metadata.name]
    assert await names(label_selector="tier in (web, db)") == ["a", "b"]
    assert await names(label_selector="tier notin (web)") == ["b", "c", made.metadata.name]
    assert await names(label_selector="tier in (web,db),env=prod") == ["a"]
    assert await names(field_selector="metadata.name=b") == ["b"]
    assert await names(field_selector="metadata.name!=b,type=Opaque") == [
        "a",
        "c",
        made.metadata.name,
    ]
    assert (await core.list_namespaced_secret("elsewhere")).items == []

    pod = await core.create_namespaced_pod(NS, pod_manifest("sleep 30"))
    await events_of(cluster, pod.metadata.name, pod.metadata.resource_version, phase_is("Running"))
    running = await core.list_namespaced_pod(NS, field_selector="status.phase=Running")
    assert running.kind == "PodList"
    assert [p.metadata.name for p in running.items] == [pod.metadata.name]
    assert (await core.list_namespaced_pod(NS, field_selector="status.phase=Pending")).items == []
    posted = [r["body"] for r in cluster.emulator.received if r["method"] == "POST"]
    assert posted[-1]["spec"]["containers"][0]["command"] == ["sh", "-c", "sleep 30"]


async def test_refusals_are_status_objects_with_the_real_codes(cluster: Cluster) -> None:
    core = cluster.core
    missing = await refused(core.read_namespaced_pod("nowhere", NS))
    assert missing.status == 404
    assert '"reason": "NotFound"' in missing.body and 'pods \\"nowhere\\" not found' in missing.body

    await core.create_namespaced_secret(NS, secret_manifest("taken", k="v"))
    taken = await refused(core.create_namespaced_secret(NS, secret_manifest("taken", k="v")))
    assert taken.status == 409 and '"reason": "AlreadyExists"' in taken.body

    unknown = pod_manifest("true", container={"imagePullSecret": "x"})
    problem = await refused(core.create_namespaced_pod(NS, unknown))
    assert problem.status == 422 and '"reason": "Invalid"' in problem.body
    assert "spec.containers[0].imagePullSecret" in problem.body

    mistyped = pod_manifest("true", activeDeadlineSeconds="soon")
    problem = await refused(core.create_namespaced_pod(NS, mistyped))
    assert problem.status == 422 and "spec.activeDeadlineSeconds" in problem.body
    assert "must be of type integer" in problem.body

    no_image = pod_manifest("true", container={"image": ""})
    problem = await refused(core.create_namespaced_pod(NS, no_image))
    assert problem.status == 422 and "spec.containers[0].image: Required value" in problem.body
    assert not cluster.emulator.objects("pods"), "a refused pod must not be stored"

    config_without_token = client.Configuration(host=cluster.emulator.url)
    async with client.ApiClient(config_without_token) as anonymous:
        problem = await refused(client.CoreV1Api(anonymous).list_namespaced_pod(NS))
    assert problem.status == 401 and '"reason": "Unauthorized"' in problem.body


async def test_a_patch_naming_a_stale_resource_version_conflicts(cluster: Cluster) -> None:
    core = cluster.core
    secret = await core.create_namespaced_secret(NS, secret_manifest("s", k="v"))
    first = secret.metadata.resource_version
    patched = await core.patch_namespaced_secret(
        "s", NS, {"metadata": {"resourceVersion": first, "labels": {"owner": "one"}}}
    )
    assert patched.metadata.labels == {"owner": "one"}
    assert int(patched.metadata.resource_version) > int(first)

    stale = await refused(
        core.patch_namespaced_secret("s", NS, {"metadata": {"resourceVersion": first}})
    )
    assert stale.status == 409
    assert (
        'Operation cannot be fulfilled on secrets \\"s\\": the object has been modified; '
        "please apply your changes to the latest version and try again"
    ) in stale.body

    current = patched.metadata.resource_version
    racing = await asyncio.gather(
        *(
            core.patch_namespaced_secret(
                "s", NS, {"metadata": {"resourceVersion": current, "labels": {"owner": who}}}
            )
            for who in ("two", "three")
        ),
        return_exceptions=True,
    )
    won = [r for r in racing if isinstance(r, client.V1Secret)]
    lost = [r for r in racing if isinstance(r, ApiException)]
    assert len(won) == 1 and len(lost) == 1 and lost[0].status == 409
    assert (await core.read_namespaced_secret("s", NS)).metadata.labels == won[0].metadata.labels

    # A JSON patch's `test` guards a change the same way; null in a merge patch removes.
    guarded = [
        {"op": "test", "path": "/metadata/labels/owner", "value": "nobody"},
        {"op": "add", "path": "/metadata/labels/x", "value": "y"},
    ]
    assert (await refused(core.patch_namespaced_secret("s", NS, guarded))).status == 422
    guarded[0]["value"] = won[0].metadata.labels["owner"]
    assert (await core.patch_namespaced_secret("s", NS, guarded)).metadata.labels["x"] == "y"
    cleared = await core.patch_namespaced_secret("s", NS, {"metadata": {"labels": None}})
    assert cleared.metadata.labels is None


async def test_a_pod_spec_is_immutable_but_its_deadline_may_be_lowered(cluster: Cluster) -> None:
    core = cluster.core
    pod = await core.create_namespaced_pod(NS, pod_manifest("sleep 30", activeDeadlineSeconds=600))
    name = pod.metadata.name
    changed = {"spec": {"containers": [{"name": "main", "command": ["sh", "-c", "true"]}]}}
    problem = await refused(core.patch_namespaced_pod(name, NS, changed))
    assert problem.status == 422 and "pod updates may not change fields" in problem.body
    raised = await refused(
        core.patch_namespaced_pod(name, NS, {"spec": {"activeDeadlineSeconds": 900}})
    )
    assert raised.status == 422 and "must be less than or equal to previous value" in raised.body
    lowered = await core.patch_namespaced_pod(name, NS, {"spec": {"activeDeadlineSeconds": 300}})
    assert lowered.spec.active_deadline_seconds == 300
    labelled = await core.patch_namespaced_pod(name, NS, {"metadata": {"labels": {"a": "b"}}})
    assert labelled.metadata.labels == {"a": "b"}


async def secret_events(cluster: Cluster, count: int, **options: Any) -> list[tuple[Any, ...]]:
    """The first `count` events of a watch of the namespace's Secrets (fewer if it ends)."""
    seen: list[tuple[Any, ...]] = []
    options.setdefault("timeout_seconds", WAIT)
    async with watch.Watch() as stream:
        async for e in stream.stream(cluster.core.list_namespaced_secret, NS, **options):
            seen.append((e["type"], e["object"].metadata.name, e["object"].metadata.labels))
            if len(seen) == count:
                break
    return seen


async def test_a_watch_streams_writes_in_order_from_a_resource_version(cluster: Cluster) -> None:
    core = cluster.core
    before = await core.create_namespaced_secret(NS, secret_manifest("before", k="v"))
    start = before.metadata.resource_version
    await core.create_namespaced_secret(NS, secret_manifest("w", k="1"))
    await core.patch_namespaced_secret("w", NS, {"metadata": {"labels": {"seen": "yes"}}})
    await core.delete_namespaced_secret("w", NS)
    assert await secret_events(cluster, 3, resource_version=start) == [
        ("ADDED", "w", None),
        ("MODIFIED", "w", {"seen": "yes"}),
        ("DELETED", "w", {"seen": "yes"}),
    ]
    # Through a selector, an object is ADDED when it comes to match.
    assert await secret_events(cluster, 2, resource_version=start, label_selector="seen") == [
        ("ADDED", "w", {"seen": "yes"}),
        ("DELETED", "w", {"seen": "yes"}),
    ]
    # Without a resourceVersion a watch starts with what exists, and ends at its timeout.
    assert await secret_events(cluster, 9, timeout_seconds=1) == [("ADDED", "before", None)]

    cluster.emulator.compact()
    async with watch.Watch() as stream:
        events = stream.stream(
            core.list_namespaced_secret, NS, resource_version=start, timeout_seconds=1
        )
        expired = await refused(anext(events))
    assert expired.status == 410 and "Expired" in str(expired.reason)


# ----- the kubelet -----------------------------------------------------------------------


async def test_a_pod_runs_with_its_secret_and_claim_and_succeeds(cluster: Cluster) -> None:
    core = cluster.core
    await core.create_namespaced_secret(NS, secret_manifest("token", token="s3cret", other="x"))
    await core.create_namespaced_persistent_volume_claim(NS, claim_manifest("workspace"))
    script = (
        'echo "token from env: $TOKEN, image: $IMAGE_VAR, me: $POD_NAME, role: $ROLE"; '
        "echo from-the-first-pod > /workspace/kept; "
        "stat -c %a /var/run/token/token; cat /var/run/token/token; echo; pwd; "
        "(echo nope > /var/run/token/write) 2>/dev/null || echo secret volume is read-only"
    )
    manifest = pod_manifest(
        script,
        metadata={"generateName": "writer-", "labels": {"role": "writer"}},
        volumes=[
            {"name": "token", "secret": {"secretName": "token", "defaultMode": 0o440}},
            {"name": "workspace", "persistentVolumeClaim": {"claimName": "workspace"}},
        ],
        container={
            "workingDir": "/workspace/repo",
            "env": [
                {"name": "TOKEN", "valueFrom": {"secretKeyRef": {"name": "token", "key": "token"}}},
                {"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
                {
                    "name": "ROLE",
                    "valueFrom": {"fieldRef": {"fieldPath": "metadata.labels['role']"}},
                },
            ],
            "volumeMounts": [
                {"name": "token", "mountPath": "/var/run/token", "readOnly": True},
                {"name": "workspace", "mountPath": "/workspace"},
            ],
        },
    )
    pod = await run_to_end(cluster, manifest)
    name = pod.metadata.name
    assert pod.status.phase == "Succeeded", pod.status
    assert pod.status.pod_ip == "127.0.0.1" and pod.status.start_time is not None
    terminated = pod.status.container_statuses[0].state.terminated
    assert terminated.reason == "Completed" and terminated.exit_code == 0
    assert terminated.finished_at is not None
    log = await pod_log(cluster, name)
    assert f"token from env: s3cret, image: image, me: {name}, role: writer" in log
    assert "440\ns3cret\n/workspace/repo\nsecret volume is read-only" in log

    reader = pod_manifest("cat /workspace/kept", volumes=manifest["spec"]["volumes"][1:])
    reader["spec"]["containers"][0]["volumeMounts"] = [
        {"name": "workspace", "mountPath": "/workspace"}
    ]
    second = await run_to_end(cluster, reader)
    assert second.status.phase == "Succeeded"
    assert await pod_log(cluster, second.metadata.name) == "from-the-first-pod\n"


async def test_a_pod_waits_for_its_secret_and_starts_once_it_exists(cluster: Cluster) -> None:
    core = cluster.core
    manifest = pod_manifest(
        "echo started with $TOKEN",
        container={
            "env": [{"name": "TOKEN", "valueFrom": {"secretKeyRef": {"name": "late", "key": "t"}}}]
        },
    )
    pod = await core.create_namespaced_pod(NS, manifest)
    name = pod.metadata.name

    def waiting(event: dict[str, Any]) -> bool:
        statuses = event["raw_object"]["status"].get("containerStatuses") or []
        return bool(statuses) and "waiting" in statuses[0]["state"]

    events = await events_of(cluster, name, pod.metadata.resource_version, waiting)
    state = events[-1]["raw_object"]["status"]["containerStatuses"][0]["state"]["waiting"]
    assert state["reason"] == "CreateContainerConfigError"
    assert 'secret "late" not found' in state["message"]
    assert events[-1]["raw_object"]["status"]["phase"] == "Pending"

    since = events[-1]["object"].metadata.resource_version
    await core.create_namespaced_secret(NS, secret_manifest("late", t="at-last"))
    await events_of(cluster, name, since, phase_is("Succeeded"))
    assert await pod_log(cluster, name) == "started with at-last\n"


async def test_an_unknown_image_is_never_run(cluster: Cluster) -> None:
    pod = await cluster.core.create_namespaced_pod(
        NS, pod_manifest("touch /tmp/ran", container={"image": "example.com/missing:2"})
    )

    def pull_failed(event: dict[str, Any]) -> bool:
        statuses = event["raw_object"]["status"].get("containerStatuses") or []
        return bool(statuses) and statuses[0]["state"].get("waiting", {}).get("reason") in (
            "ErrImagePull",
            "ImagePullBackOff",
        )

    events = await events_of(cluster, pod.metadata.name, pod.metadata.resource_version, pull_failed)
    waiting = events[-1]["raw_object"]["status"]["containerStatuses"][0]["state"]["waiting"]
    assert "example.com/missing:2" in waiting["message"]
    assert cluster.emulator.log_path(NS, pod.metadata.name) is None


async def test_an_oom_kill_is_seen_through_a_watch(cluster: Cluster) -> None:
    pod = await cluster.core.create_namespaced_pod(NS, pod_manifest("echo up; sleep 30"))
    name, since = pod.metadata.name, pod.metadata.resource_version
    events = await events_of(cluster, name, since, phase_is("Running"))
    cluster.emulator.oom_kill(NS, name)
    events = await events_of(
        cluster, name, events[-1]["object"].metadata.resource_version, phase_is("Failed")
    )
    terminated = events[-1]["object"].status.container_statuses[0].state.terminated
    assert (terminated.reason, terminated.exit_code) == ("OOMKilled", 137)


async def test_an_evicted_pod_fails_and_stays(cluster: Cluster) -> None:
    pod = await cluster.core.create_namespaced_pod(NS, pod_manifest("sleep 30"))
    name = pod.metadata.name
    events = await events_of(cluster, name, pod.metadata.resource_version, phase_is("Running"))
    cluster.emulator.evict(NS, name, message="The node was low on resource: ephemeral-storage.")
    since = events[-1]["object"].metadata.resource_version
    evicted = (await events_of(cluster, name, since, phase_is("Failed")))[-1]["object"]
    assert evicted.status.reason == "Evicted"
    assert evicted.status.message == "The node was low on resource: ephemeral-storage."
    assert any(c.type == "DisruptionTarget" for c in evicted.status.conditions)
    kept = await cluster.core.read_namespaced_pod(name, NS)
    assert kept.status.phase == "Failed" and kept.metadata.deletion_timestamp is None


async def test_a_pod_past_its_active_deadline_is_killed(cluster: Cluster) -> None:
    manifest = pod_manifest("sleep 30", activeDeadlineSeconds=1, terminationGracePeriodSeconds=0)
    pod = await run_to_end(cluster, manifest)
    assert pod.status.phase == "Failed"
    assert pod.status.reason == "DeadlineExceeded"
    assert pod.status.message == "Pod was active on the node longer than the specified deadline"


async def test_deleting_a_pod_terms_its_process_then_removes_it(cluster: Cluster) -> None:
    core = cluster.core
    script = "trap 'echo got SIGTERM; exit 0' TERM; echo up; sleep 30 & wait"
    pod = await core.create_namespaced_pod(NS, pod_manifest(script))
    name = pod.metadata.name
    events = await events_of(cluster, name, pod.metadata.resource_version, phase_is("Running"))
    owned = await core.create_namespaced_secret(
        NS,
        {
            "metadata": {
                "name": "owned",
                "ownerReferences": [
                    {"apiVersion": "v1", "kind": "Pod", "name": name, "uid": pod.metadata.uid}
                ],
            }
        },
    )
    since = events[-1]["object"].metadata.resource_version
    # Running means started, not that the shell has set its trap yet ("up" comes after it).
    await until(lambda: "up" in cluster.emulator.log(NS, name), what="the trap to be set")
    deleting = await core.delete_namespaced_pod(name, NS, grace_period_seconds=20)
    assert deleting.metadata.deletion_timestamp is not None
    assert deleting.metadata.deletion_grace_period_seconds == 20
    events = await events_of(cluster, name, since, lambda e: e["type"] == "DELETED")
    assert events[0]["type"] == "MODIFIED" and events[0]["object"].metadata.deletion_timestamp
    assert "got SIGTERM" in cluster.emulator.log(NS, name)
    # Garbage collection: the Secret the pod owned goes with it.
    await events_of(
        cluster,
        "owned",
        owned.metadata.resource_version,
        lambda e: e["type"] == "DELETED",
        resource="secret",
    )
    assert await refused(core.read_namespaced_secret("owned", NS))


async def test_deletion_can_orphan_dependents_or_wait_for_them(cluster: Cluster) -> None:
    core = cluster.core

    async def owner_and_dependent(owner: str, dependent: str) -> str:
        made = await core.create_namespaced_secret(NS, {"metadata": {"name": owner}})
        reference = {"apiVersion": "v1", "kind": "Secret", "name": owner, "uid": made.metadata.uid}
        await core.create_namespaced_secret(
            NS, {"metadata": {"name": dependent, "ownerReferences": [reference]}}
        )
        return made.metadata.resource_version

    since = await owner_and_dependent("parent", "orphan")
    await core.delete_namespaced_secret("parent", NS, propagation_policy="Orphan")
    events = await secret_events(cluster, 4, resource_version=since)
    assert [(kind, name) for kind, name, _ in events] == [
        ("ADDED", "orphan"),
        ("MODIFIED", "parent"),  # deletionTimestamp, held by the `orphan` finalizer
        ("MODIFIED", "orphan"),  # its ownerReference dropped
        ("DELETED", "parent"),
    ]
    assert (await core.read_namespaced_secret("orphan", NS)).metadata.owner_references is None

    since = await owner_and_dependent("waiting", "child")
    await core.delete_namespaced_secret("waiting", NS, propagation_policy="Foreground")
    events = await secret_events(cluster, 4, resource_version=since)
    assert [(kind, name) for kind, name, _ in events] == [
        ("ADDED", "child"),
        ("MODIFIED", "waiting"),  # held by `foregroundDeletion` until its dependents are gone
        ("DELETED", "child"),
        ("DELETED", "waiting"),
    ]


async def test_a_failing_container_is_restarted_after_a_back_off(cluster: Cluster) -> None:
    pod = await cluster.core.create_namespaced_pod(
        NS, pod_manifest("echo run; exit 3", restartPolicy="Always")
    )
    name = pod.metadata.name

    def restarts(count: int) -> Callable[[dict[str, Any]], bool]:
        def seen(event: dict[str, Any]) -> bool:
            statuses = event["raw_object"]["status"].get("containerStatuses") or []
            return bool(statuses) and statuses[0]["restartCount"] >= count

        return seen

    events = await events_of(cluster, name, pod.metadata.resource_version, restarts(1))
    status = events[-1]["object"].status
    assert status.phase == "Running"
    assert status.container_statuses[0].last_state.terminated.exit_code == 3
    waits = [e["object"].status.container_statuses[0].state.waiting for e in events]
    assert "CrashLoopBackOff" in [waiting.reason for waiting in waits if waiting]
    assert await cluster.core.read_namespaced_pod_log(name, NS, previous=True) == "run\n"
    await events_of(cluster, name, events[-1]["object"].metadata.resource_version, restarts(2))


async def test_a_claim_in_use_is_kept_until_its_pod_is_done(cluster: Cluster) -> None:
    core = cluster.core
    await core.create_namespaced_persistent_volume_claim(NS, claim_manifest("data"))
    manifest = pod_manifest(
        "sleep 30",
        terminationGracePeriodSeconds=0,
        volumes=[{"name": "data", "persistentVolumeClaim": {"claimName": "data"}}],
        container={"volumeMounts": [{"name": "data", "mountPath": "/data"}]},
    )
    pod = await core.create_namespaced_pod(NS, manifest)
    await events_of(cluster, pod.metadata.name, pod.metadata.resource_version, phase_is("Running"))
    held = await core.delete_namespaced_persistent_volume_claim("data", NS)
    assert held.metadata.deletion_timestamp is not None
    assert held.metadata.finalizers == ["kubernetes.io/pvc-protection"]
    assert (
        await core.read_namespaced_persistent_volume_claim("data", NS)
    ).metadata.deletion_timestamp
    await core.delete_namespaced_pod(pod.metadata.name, NS)
    await events_of(
        cluster,
        "data",
        held.metadata.resource_version,
        lambda e: e["type"] == "DELETED",
        resource="persistent_volume_claim",
    )


async def test_the_emulators_environment_does_not_reach_pods(
    cluster: Cluster, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("EMULATOR_HOST_ONLY", "leaked")
    pod = await run_to_end(cluster, pod_manifest("env"))
    seen = dict(
        line.split("=", 1) for line in (await pod_log(cluster, pod.metadata.name)).splitlines()
    )
    assert "EMULATOR_HOST_ONLY" not in seen
    assert set(seen) <= {"PATH", "IMAGE_VAR", "HOSTNAME", "HOME", "PWD", "SHLVL", "_"}, seen
    assert os.environ["EMULATOR_HOST_ONLY"] == "leaked"


async def test_the_sandbox_pod_template_runs_in_the_python_image(tmp_path: Path) -> None:
    """The manifests' sandbox pod passes the API's checks, and in `python_image` it finds
    this Python, this source and its token where the template puts them."""
    template = yaml.safe_load(TEMPLATE.read_text())
    container = template["spec"]["containers"][0]
    check = "import core, sandbox, sys; print(sys.prefix, open(sys.argv[1]).read())"
    container["command"] = ["python", "-c", check, "/var/run/open-inspect/token"]
    namespace = template["metadata"]["namespace"]
    async with KubernetesEmulator(
        tmp_path / "node", {container["image"]: python_image()}
    ) as emulator:
        kubeconfig = emulator.write_kubeconfig(tmp_path / "kubeconfig")
        async with await config.new_client_from_config(config_file=str(kubeconfig)) as api_client:
            core = client.CoreV1Api(api_client)
            await core.create_namespaced_secret(
                namespace, {"metadata": {"name": "sandbox-token"}, "stringData": {"token": "t0k"}}
            )
            pod = await core.create_namespaced_pod(namespace, template)
            name = pod.metadata.name
            events = await events_of(
                Cluster(emulator, core),
                name,
                pod.metadata.resource_version,
                phase_is("Succeeded", "Failed"),
                namespace=namespace,
            )
            log = await core.read_namespaced_pod_log(name, namespace)
            assert events[-1]["object"].status.phase == "Succeeded", log
            assert log == f"{sys.prefix} t0k\n"


# ----- the command line ------------------------------------------------------------------


async def test_the_command_line_prints_settings_a_client_can_use() -> None:
    async with from_command_line("tests.emulators.kubernetes") as settings:
        kubeconfig = settings["OPEN_INSPECT_KUBECONFIG"]
        assert settings["OPEN_INSPECT_SANDBOX_PROVIDER"] == "kubernetes"
        template = Path(settings["OPEN_INSPECT_KUBERNETES_POD_TEMPLATE"])
        assert await asyncio.to_thread(template.is_file)
        api_client = await config.new_client_from_config(config_file=kubeconfig)
        async with api_client:
            core = client.CoreV1Api(api_client)
            namespace = settings["OPEN_INSPECT_KUBERNETES_NAMESPACE"]
            secret = await core.create_namespaced_secret(
                namespace,
                {"metadata": {"name": "cli"}, "data": {"k": base64.b64encode(b"v").decode()}},
            )
            assert secret.metadata.namespace == namespace
            version = await client.VersionApi(api_client).get_code()
            assert version.git_version.startswith("v1.33.")
        assert settings["images"], "it serves at least the pod template's image"
