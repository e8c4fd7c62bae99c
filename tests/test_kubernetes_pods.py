"""The sandbox's Kubernetes objects as the provider makes them from the deployment's template,
and the words a dead pod's status turns into."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from kubernetes_asyncio.client import (
    V1ContainerState,
    V1ContainerStateTerminated,
    V1ContainerStateWaiting,
    V1ContainerStatus,
    V1Pod,
    V1PodStatus,
)

from core.errors import ConfigError
from core.sandboxes.pods import (
    PodSpec,
    failure,
    label_value,
    load_template,
    sandbox_pod,
    token_secret,
    workspace_claim,
)

TEMPLATE = Path(__file__).resolve().parents[1] / "manifests/base/sandboxes/sandbox-pod.yaml"


def spec(deadline: int | None = 7500) -> PodSpec:
    return PodSpec(
        "sbx-0123456789ab",
        {"open-inspect.dev/session": "abcdefghijkl"},
        {"OPEN_INSPECT_SESSION_ID": "abcdefghijkl", "OPEN_INSPECT_CORE_URL": "http://core:1"},
        "sbx-0123456789ab-workspace",
        deadline,
    )


def test_the_pod_is_the_template_with_the_sandboxs_name_token_workspace_and_environment() -> None:
    template = load_template(TEMPLATE)
    pod = sandbox_pod(template, spec())
    assert pod["metadata"]["name"] == "sbx-0123456789ab" and "generateName" not in pod["metadata"]
    assert pod["metadata"]["labels"]["app.kubernetes.io/component"] == "sandbox"  # template's
    assert pod["metadata"]["labels"]["open-inspect.dev/session"] == "abcdefghijkl"
    volumes = {v["name"]: v for v in pod["spec"]["volumes"]}
    assert volumes["token"]["secret"]["secretName"] == "sbx-0123456789ab-token"
    assert volumes["workspace"] == {
        "name": "workspace",
        "persistentVolumeClaim": {"claimName": "sbx-0123456789ab-workspace"},
    }
    (container,) = pod["spec"]["containers"]
    env = {e["name"]: e["value"] for e in container["env"]}
    assert env["OPEN_INSPECT_CORE_URL"] == "http://core:1"  # given, in place of the template's
    assert [e["name"] for e in container["env"]].count("OPEN_INSPECT_CORE_URL") == 1
    assert env["OPEN_INSPECT_WORKSPACE"] == "/workspace/repo"  # the template's own stays
    # Everything else is the template's: security context, resources, image.
    original = template["spec"]["containers"][0]
    for key in ("securityContext", "resources", "image", "command"):
        assert container[key] == original[key]
    assert template["spec"]["volumes"][0].get("emptyDir")  # the template itself is untouched


def test_a_warm_pod_has_no_deadline_until_it_is_claimed() -> None:
    template = load_template(TEMPLATE)
    assert "activeDeadlineSeconds" not in sandbox_pod(template, spec(None))["spec"]
    assert sandbox_pod(template, spec(7800))["spec"]["activeDeadlineSeconds"] == 7800


def test_the_token_secret_is_owned_by_its_pod_and_holds_only_the_token() -> None:
    secret = token_secret("sbx-0123456789ab", "uid-1", "oisbx_abc\n", {"a": "b"})
    assert secret["metadata"]["ownerReferences"] == [
        {"apiVersion": "v1", "kind": "Pod", "name": "sbx-0123456789ab", "uid": "uid-1"}
    ]
    assert secret["stringData"] == {"token": "oisbx_abc\n"}
    claim = workspace_claim("w", {"a": "b"}, "5Gi", "fast")
    assert claim["spec"]["storageClassName"] == "fast"
    assert "storageClassName" not in workspace_claim("w", {}, "5Gi", None)["spec"]


def test_label_values_are_made_valid() -> None:
    assert label_value("slack:T1:UCAROL") == "slack.T1.UCAROL"
    assert len(label_value("x" * 100)) == 63
    assert label_value(":odd:") == "odd"


@pytest.mark.parametrize(
    "text, message",
    [
        ("not: [valid", "not valid YAML"),
        ("kind: Service\n", "must be a single Pod"),
        ("kind: Pod\nspec:\n  containers: [{name: other}]\n", "container named 'sandbox'"),
    ],
)
def test_a_bad_template_is_refused_with_what_is_wrong(
    tmp_path: Path, text: str, message: str
) -> None:
    path = tmp_path / "pod.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=message):
        load_template(path)
    with pytest.raises(ConfigError, match="Cannot read the sandbox pod template"):
        load_template(tmp_path / "missing.yaml")


def pod_with(
    phase: str = "Running",
    reason: str | None = None,
    message: str | None = None,
    terminated: V1ContainerStateTerminated | None = None,
    waiting: V1ContainerStateWaiting | None = None,
) -> V1Pod:
    state = V1ContainerState(terminated=terminated, waiting=waiting)
    container = V1ContainerStatus(
        name="sandbox", image="i", image_id="", ready=False, restart_count=0, state=state
    )
    return V1Pod(
        status=V1PodStatus(
            phase=phase, reason=reason, message=message, container_statuses=[container]
        )
    )


def test_what_a_dead_pod_says_to_the_thread() -> None:
    assert failure(pod_with()) is None
    oom = V1ContainerStateTerminated(exit_code=137, reason="OOMKilled")
    assert "ran out of memory" in failure(pod_with("Failed", terminated=oom))
    evicted = failure(pod_with("Failed", "Evicted", "The node was low on resource: memory."))
    assert evicted == (
        "The sandbox's pod was evicted by Kubernetes: The node was low on resource: memory."
    )
    assert "deadline" in failure(pod_with("Failed", "DeadlineExceeded"))
    error = V1ContainerStateTerminated(exit_code=2, reason="Error")
    assert failure(pod_with("Failed", terminated=error)) == (
        "The sandbox's pod stopped (Error, exit code 2)."
    )
    pull = V1ContainerStateWaiting(reason="ImagePullBackOff", message="no such image")
    assert "cannot start (ImagePullBackOff): no such image" in failure(
        pod_with("Pending", waiting=pull)
    )
    creating = V1ContainerStateWaiting(reason="ContainerCreating")
    assert failure(pod_with("Pending", waiting=creating)) is None


def test_the_shipped_template_parses_as_yaml_the_provider_reads() -> None:
    assert load_template(TEMPLATE) == yaml.safe_load(TEMPLATE.read_text())
