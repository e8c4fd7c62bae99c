"""The Kubernetes manifests (manifests/): every kustomization renders with `kubectl kustomize`
and every object validates strictly against the Kubernetes 1.33 schemas; the rendered objects
keep the deployment's invariants: replicated control plane with health probes and a disruption
budget, RBAC confined to the sandboxes' namespace, sandboxes that nothing reaches and that
reach only DNS, the control plane and the internet, data stores only the control plane
reaches, and locked-down pods."""

from __future__ import annotations

from collections import Counter
from urllib.parse import urlsplit

import pytest
import yaml

from core.config import Settings
from tests.kube_helpers import (
    MANIFESTS,
    Obj,
    covered,
    kustomizations,
    of_kind,
    one,
    pods,
    render,
    restricted_violations,
    selects,
    validate,
)

CONTROL_NS = "open-inspect"
SANDBOX_NS = "open-inspect-sandboxes"
CONTROL = {"app.kubernetes.io/name": "open-inspect", "app.kubernetes.io/component": "control-plane"}
DATA_STORES = ("postgresql", "redis")
NS_NAME = "kubernetes.io/metadata.name"
# What deploys a whole control plane with its sandboxes.
DEPLOYABLE = ["base", "overlays/dev", "overlays/production"]

# The control plane's Role in the sandboxes' namespace, and nothing more.
SANDBOX_RULES = {
    "pods": {"get", "list", "watch", "create", "patch", "delete"},
    "pods/log": {"get"},
    "secrets": {"get", "list", "create", "delete"},
    "persistentvolumeclaims": {"get", "list", "create", "patch", "delete"},
}
# Addresses sandboxes must not reach in every rendering, and those of each overlay's cluster.
BLOCKED = {
    "10.96.0.1": "the API server's Service (kubeadm's default range)",
    "10.244.1.7": "a pod (kubeadm's and kind's pod range)",
    "172.18.0.2": "a kind node",
    "192.168.49.2": "a minikube node",
    "100.64.3.4": "a pod in a carrier-grade NAT range",
    "169.254.169.254": "the cloud's metadata service",
}
BLOCKED_IN = {
    "overlays/production": {
        "203.0.113.10": "its API server's public endpoint",
        "10.8.0.12": "one of its pods",
        "10.12.0.1": "its API server's Service",
        "10.0.0.5": "one of its nodes",
    },
}
PUBLIC = ["1.1.1.1", "140.82.112.3", "151.101.0.223", "104.16.0.35"]
# Settings that are secrets: in the Secret, never in the ConfigMap.
SECRET_SETTINGS = {
    "DATABASE_URL",
    "SLACK_BOT_TOKEN",
    "SLACK_APP_TOKEN",
    "ANTHROPIC_API_KEY",
    "OPENAI_API_KEY",
    "GITHUB_APP_PRIVATE_KEY",
    "GITHUB_CLIENT_SECRET",
    "OPEN_INSPECT_SECRETS_KEY",
    "OPEN_INSPECT_SECRETS_OLD_KEYS",
    "OPEN_INSPECT_LINK_SECRET",
    "OPEN_INSPECT_GIT_PUSH_CREDENTIALS",
}


def control_plane(objects: tuple[Obj, ...]) -> Obj:
    found = [d for d in of_kind(objects, "Deployment") if selects(d["spec"]["selector"], CONTROL)]
    assert len(found) == 1, "expected one control-plane Deployment"
    assert found[0]["metadata"]["namespace"] == CONTROL_NS
    return found[0]


def container_port(deployment: Obj) -> int:
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    (port,) = container["ports"]
    return port["containerPort"]


def config(objects: tuple[Obj, ...]) -> dict[str, str]:
    return one(objects, "ConfigMap", "open-inspect-config")["data"]


def sandbox_template(objects: tuple[Obj, ...]) -> tuple[Obj, Obj]:
    """The ConfigMap that carries the sandbox pod template, and the Pod in it."""
    maps = [
        m
        for m in of_kind(objects, "ConfigMap")
        if m["metadata"]["name"].startswith("open-inspect-sandbox-template")
    ]
    assert len(maps) == 1, "expected one sandbox template ConfigMap"
    assert maps[0]["metadata"]["namespace"] == CONTROL_NS
    assert list(maps[0]["data"]) == ["sandbox-pod.yaml"]
    return maps[0], yaml.safe_load(maps[0]["data"]["sandbox-pod.yaml"])


def policy_types(policy: Obj) -> list[str]:
    spec = policy["spec"]
    return spec.get("policyTypes") or ["Ingress", *(["Egress"] if spec.get("egress") else [])]


def policies_for(objects: tuple[Obj, ...], namespace: str, labels: dict[str, str]) -> list[Obj]:
    return [
        p
        for p in of_kind(objects, "NetworkPolicy")
        if p["metadata"]["namespace"] == namespace and selects(p["spec"]["podSelector"], labels)
    ]


def ports_of(rule: Obj) -> set[tuple[str, object]]:
    return {(p.get("protocol", "TCP"), p.get("port")) for p in rule.get("ports") or []}


def setting_names() -> set[str]:
    names = {"OPEN_INSPECT_LOG_LEVEL"}  # read by core/cli.py before the settings
    for field in Settings.model_fields.values():
        alias = field.validation_alias
        choices = [alias] if isinstance(alias, str) else getattr(alias, "choices", [])
        names.update(choice for choice in choices if isinstance(choice, str))
    return names


# --- rendering and validation ------------------------------------------------------------------


def test_the_manifests_have_a_base_and_two_overlays() -> None:
    assert {"base", "overlays/dev", "overlays/production"} <= set(kustomizations())


@pytest.mark.parametrize("kustomization", kustomizations())
def test_every_kustomization_renders_valid_objects(kustomization: str) -> None:
    objects = render(kustomization)
    assert objects, f"{kustomization} renders nothing"
    for obj in objects:
        validate(obj)
        if obj["kind"] != "Namespace":
            # Left without one, an object would land in whatever namespace kubectl uses.
            assert obj["metadata"].get("namespace") in (CONTROL_NS, SANDBOX_NS), obj["metadata"]
    names = Counter(
        (o["kind"], o["metadata"].get("namespace"), o["metadata"]["name"]) for o in objects
    )
    assert [name for name, count in names.items() if count > 1] == []


def test_the_sandbox_pod_template_and_the_example_secrets_are_valid() -> None:
    template = yaml.safe_load((MANIFESTS / "base/sandboxes/sandbox-pod.yaml").read_text())
    validate(template)
    examples = list(yaml.safe_load_all((MANIFESTS / "examples/secrets.yaml").read_text()))
    for secret in examples:
        validate(secret)
    assert {s["metadata"]["name"] for s in examples} == {
        "open-inspect-secrets",
        "open-inspect-postgresql",
    }


def test_the_configuration_names_only_settings_and_keeps_secrets_out_of_the_config_map() -> None:
    known = setting_names()
    objects = render("overlays/production")
    in_config = set(config(objects))
    secrets = yaml.safe_load_all((MANIFESTS / "examples/secrets.yaml").read_text())
    in_secret = set(
        next(s for s in secrets if s["metadata"]["name"] == "open-inspect-secrets")["stringData"]
    )
    assert in_config - known == set(), "not settings (core/config.py)"
    assert in_secret - known == set(), "not settings (core/config.py)"
    assert in_config & SECRET_SETTINGS == set(), "secrets in the ConfigMap"
    assert {"DATABASE_URL", "OPEN_INSPECT_SECRETS_KEY", "OPEN_INSPECT_LINK_SECRET"} <= in_secret


# --- the control plane -------------------------------------------------------------------------


@pytest.mark.parametrize("kustomization", DEPLOYABLE)
def test_the_control_plane_runs_replicas_with_health_probes(kustomization: str) -> None:
    objects = render(kustomization)
    deployment = control_plane(objects)
    assert deployment["spec"].get("replicas", 1) >= 2
    assert selects(
        deployment["spec"]["selector"], deployment["spec"]["template"]["metadata"]["labels"]
    )
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    port = container_port(deployment)
    named = {p["name"]: p["containerPort"] for p in container["ports"]}
    for probe in ("readinessProbe", "livenessProbe"):
        get = container[probe]["httpGet"]
        assert get["path"] == "/healthz", probe
        assert named.get(get["port"], get["port"]) == port, probe
    # The engine listens where the probes and the Service look.
    settings = config(objects)
    assert settings["OPEN_INSPECT_HTTP_HOST"] == "0.0.0.0"
    assert int(settings["OPEN_INSPECT_HTTP_PORT"]) == port
    assert settings["OPEN_INSPECT_SANDBOX_PROVIDER"] == "kubernetes"
    sources = {
        (kind, ref["name"])
        for source in container["envFrom"]
        for kind, ref in source.items()
        if kind in ("configMapRef", "secretRef")
    }
    assert sources == {
        ("configMapRef", "open-inspect-config"),
        ("secretRef", "open-inspect-secrets"),
    }
    services = [s for s in of_kind(objects, "Service") if s["spec"].get("selector") == CONTROL]
    assert len(services) == 1
    (service_port,) = services[0]["spec"]["ports"]
    assert named.get(service_port["targetPort"], service_port["targetPort"]) == port


@pytest.mark.parametrize("kustomization", DEPLOYABLE)
def test_a_disruption_budget_keeps_the_control_plane_serving(kustomization: str) -> None:
    objects = render(kustomization)
    deployment = control_plane(objects)
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    replicas = deployment["spec"].get("replicas", 1)
    budgets = [
        b
        for b in of_kind(objects, "PodDisruptionBudget")
        if b["metadata"]["namespace"] == CONTROL_NS and selects(b["spec"]["selector"], labels)
    ]
    assert len(budgets) == 1, "expected one PodDisruptionBudget over the control plane"
    spec = budgets[0]["spec"]
    # It lets a drain proceed one pod at a time, and never down to none.
    if "maxUnavailable" in spec:
        assert 1 <= spec["maxUnavailable"] < replicas
    else:
        assert 1 <= spec["minAvailable"] < replicas
    for _, other, _ in pods(objects):
        if other != labels:
            assert not selects(spec["selector"], other), f"the budget also selects {other}"


@pytest.mark.parametrize("kustomization", DEPLOYABLE)
def test_rbac_is_namespaced_to_the_sandboxes(kustomization: str) -> None:
    objects = render(kustomization)
    assert of_kind(objects, "ClusterRole") == [] and of_kind(objects, "ClusterRoleBinding") == []
    (role,) = of_kind(objects, "Role")
    assert role["metadata"]["namespace"] == SANDBOX_NS
    granted: dict[str, set[str]] = {}
    for rule in role["rules"]:
        assert rule["apiGroups"] == [""], rule
        assert "resourceNames" not in rule and "nonResourceURLs" not in rule, rule
        for resource in rule["resources"]:
            granted.setdefault(resource, set()).update(rule["verbs"])
    assert granted == SANDBOX_RULES
    (binding,) = of_kind(objects, "RoleBinding")
    assert binding["metadata"]["namespace"] == SANDBOX_NS
    assert binding["roleRef"] == {
        "apiGroup": "rbac.authorization.k8s.io",
        "kind": "Role",
        "name": role["metadata"]["name"],
    }
    account = control_plane(objects)["spec"]["template"]["spec"]["serviceAccountName"]
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": account, "namespace": CONTROL_NS}
    ]
    one(objects, "ServiceAccount", account)


# --- the sandboxes -----------------------------------------------------------------------------


@pytest.mark.parametrize("kustomization", DEPLOYABLE)
def test_the_sandbox_pod_is_locked_down(kustomization: str) -> None:
    objects = render(kustomization)
    carrier, pod = sandbox_template(objects)
    validate(pod)
    deployment = control_plane(objects)
    volumes = deployment["spec"]["template"]["spec"]["volumes"]
    assert carrier["metadata"]["name"] in [v.get("configMap", {}).get("name") for v in volumes]
    assert pod["metadata"]["namespace"] == SANDBOX_NS
    spec = pod["spec"]
    assert spec["automountServiceAccountToken"] is False
    account = one(objects, "ServiceAccount", spec["serviceAccountName"])
    assert account["metadata"]["namespace"] == SANDBOX_NS
    assert account["automountServiceAccountToken"] is False
    assert spec["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    assert spec["securityContext"]["runAsNonRoot"] is True
    assert restricted_violations(spec) == []
    (container,) = spec["containers"]
    assert {"cpu", "memory"} <= set(container["resources"]["limits"])
    assert spec["restartPolicy"] == "Never"
    assert spec["activeDeadlineSeconds"] > Settings().sandbox_max_lifetime_seconds
    assert "python -m sandbox" in " ".join(container["command"])
    # It finds the control plane at its Service, on the port the egress policy opens.
    env = {e["name"]: e.get("value") for e in container["env"]}
    (service,) = [s for s in of_kind(objects, "Service") if s["spec"].get("selector") == CONTROL]
    for name in ("OPEN_INSPECT_CORE_URL", "OPEN_INSPECT_BRIDGE_URL"):
        url = urlsplit(env[name])
        assert url.hostname == f"{service['metadata']['name']}.{CONTROL_NS}.svc", name
        assert url.port == service["spec"]["ports"][0]["port"], name
    assert env["OPEN_INSPECT_OPENCODE_BIN"] == config(objects)["OPEN_INSPECT_OPENCODE_BIN"]


@pytest.mark.parametrize("kustomization", DEPLOYABLE)
def test_nothing_connects_to_a_sandbox(kustomization: str) -> None:
    objects = render(kustomization)
    labels = sandbox_template(objects)[1]["metadata"]["labels"]
    policies = policies_for(objects, SANDBOX_NS, labels)
    assert any("Ingress" in policy_types(p) for p in policies), "ingress is not restricted"
    assert [p["spec"]["ingress"] for p in policies if p["spec"].get("ingress")] == []


@pytest.mark.parametrize("kustomization", DEPLOYABLE)
def test_sandboxes_reach_dns_the_control_plane_and_the_internet_only(kustomization: str) -> None:
    objects = render(kustomization)
    labels = sandbox_template(objects)[1]["metadata"]["labels"]
    policies = [p for p in policies_for(objects, SANDBOX_NS, labels) if "Egress" in policy_types(p)]
    assert policies, "egress is not restricted"
    in_control_ns = [pod_labels for ns, pod_labels, _ in pods(objects) if ns == CONTROL_NS]
    data_stores = [{**CONTROL, "app.kubernetes.io/component": c} for c in DATA_STORES]
    blocked = {**BLOCKED, **BLOCKED_IN.get(kustomization, {})}
    reached = set()
    for rule in (rule for p in policies for rule in p["spec"].get("egress") or []):
        assert rule.get("to"), "a rule without `to` lets sandboxes reach everything"
        ports = ports_of(rule)
        for peer in rule["to"]:
            if "ipBlock" in peer:
                block = peer["ipBlock"]
                assert set(peer) == {"ipBlock"} and block["cidr"] == "0.0.0.0/0", peer
                for address, what in blocked.items():
                    assert covered(address, block.get("except", [])), f"{what} ({address})"
                for address in PUBLIC:
                    assert not covered(address, block.get("except", [])), address
                reached.add("internet")
                continue
            # Both selectors in one peer: either alone opens a namespace, or sandboxes' own.
            assert set(peer) == {"namespaceSelector", "podSelector"}, peer
            selector = peer["namespaceSelector"]
            assert set(selector) == {"matchLabels"} and list(selector["matchLabels"]) == [NS_NAME]
            namespace = selector["matchLabels"][NS_NAME]
            if namespace == "kube-system":
                assert peer["podSelector"] == {"matchLabels": {"k8s-app": "kube-dns"}}
                assert ports == {("UDP", 53), ("TCP", 53)}
                reached.add("dns")
            elif namespace == CONTROL_NS:
                matched = [
                    p for p in [*in_control_ns, *data_stores] if selects(peer["podSelector"], p)
                ]
                assert matched and all(p == CONTROL for p in matched), matched
                assert ports == {("TCP", container_port(control_plane(objects)))}
                reached.add("control plane")
            else:
                pytest.fail(f"sandboxes may reach namespace {namespace}")
    assert reached == {"dns", "control plane", "internet"}


@pytest.mark.parametrize("kustomization", ["overlays/dev", "overlays/production"])
def test_only_the_control_plane_reaches_the_data_stores(kustomization: str) -> None:
    objects = render(kustomization)
    sandbox_labels = sandbox_template(objects)[1]["metadata"]["labels"]
    stores = [
        (labels, spec)
        for ns, labels, spec in pods(objects)
        if ns == CONTROL_NS and labels.get("app.kubernetes.io/component") in DATA_STORES
    ]
    assert stores, f"{kustomization} has no data store in the cluster"
    for labels, spec in stores:
        (port,) = spec["containers"][0]["ports"]
        policies = [
            p for p in policies_for(objects, CONTROL_NS, labels) if "Ingress" in policy_types(p)
        ]
        assert policies, f"nothing restricts who reaches {labels}"
        for rule in (rule for p in policies for rule in p["spec"].get("ingress") or []):
            assert rule.get("from"), "a rule without `from` admits everyone"
            assert ports_of(rule) == {("TCP", port["containerPort"])}
            for peer in rule["from"]:
                assert set(peer) == {"podSelector"}, "only pods of this namespace"
                assert selects(peer["podSelector"], CONTROL)
                assert not selects(peer["podSelector"], sandbox_labels)
                assert not selects(peer["podSelector"], labels)


# --- every pod, and the way in -----------------------------------------------------------------


@pytest.mark.parametrize("kustomization", DEPLOYABLE)
def test_every_pod_meets_the_restricted_profile(kustomization: str) -> None:
    objects = render(kustomization)
    namespaces = {n["metadata"]["name"]: n for n in of_kind(objects, "Namespace")}
    assert set(namespaces) == {CONTROL_NS, SANDBOX_NS}
    for namespace in namespaces.values():
        labels = namespace["metadata"]["labels"]
        assert labels["pod-security.kubernetes.io/enforce"] == "restricted"
    for ns, labels, spec in pods(objects):
        assert restricted_violations(spec) == [], (ns, labels)


@pytest.mark.parametrize("kustomization", DEPLOYABLE)
def test_the_ingress_exposes_only_the_page_and_github_linking(kustomization: str) -> None:
    objects = render(kustomization)
    ingresses = of_kind(objects, "Ingress")
    if kustomization == "overlays/production":
        assert ingresses
    public = urlsplit(config(objects)["OPEN_INSPECT_PUBLIC_URL"])
    for ingress in ingresses:
        assert ingress["spec"]["tls"], "people's links and OAuth codes travel over TLS"
        for rule in ingress["spec"]["rules"]:
            # Links and GitHub's callback are made from OPEN_INSPECT_PUBLIC_URL.
            assert (public.scheme, public.hostname) == ("https", rule["host"])
            for path in rule["http"]["paths"]:
                # /bridge, /proxy/ and /git/credentials are for sandboxes, in the cluster.
                assert path["path"] in ("/s", "/static", "/github"), path["path"]
                assert path["backend"]["service"]["name"] == "open-inspect"
