"""The container images (images/): each Dockerfile only runs its install script, and the
scripts run here, on a Debian 12 machine like the images' base, into a temporary prefix,
ending with their own self-check. So the recipes are exercised even where no image can be
built."""

from __future__ import annotations

import re
import subprocess
import tempfile
from pathlib import Path

import pytest
import yaml

from core.sandboxes.opencode import pinned_version

ROOT = Path(__file__).parent.parent
IMAGES = ["control-plane", "sandbox"]
PREFIX = "/opt/open-inspect"
PASSED = {"control-plane": "the control plane is in", "sandbox": "the sandbox runtime is in"}
# The pod each image runs in, and where its user id is set.
PODS = {
    "control-plane": ("manifests/base/control-plane/deployment.yaml", "spec.template.spec"),
    "sandbox": ("manifests/base/sandboxes/sandbox-pod.yaml", "spec"),
}


def _pod_spec(image: str) -> dict:
    path, where = PODS[image]
    spec = yaml.safe_load((ROOT / path).read_text())
    for key in where.split("."):
        spec = spec[key]
    return spec


def _run(*command: str | Path, timeout: float = 60) -> str:
    done = subprocess.run(
        [str(part) for part in command], capture_output=True, text=True, timeout=timeout
    )
    if done.returncode != 0:
        pytest.fail(f"{command} exited {done.returncode}:\n{done.stderr[-3000:]}", pytrace=False)
    return done.stdout


@pytest.mark.parametrize("image", IMAGES)
def test_the_dockerfile_runs_the_install_script_the_tests_run(image: str) -> None:
    dockerfile = (ROOT / "images" / image / "Dockerfile").read_text()
    assert re.search(r"^FROM debian:bookworm", dockerfile, re.M)
    assert re.search(r"^COPY \. /src$", dockerfile, re.M)
    assert re.search(rf"^RUN bash /src/images/{image}/install\.sh {PREFIX} ", dockerfile, re.M)
    # The image's user is the one its pod runs as.
    user = re.search(r"^USER (\d+):(\d+)$", dockerfile, re.M)
    context = _pod_spec(image)["securityContext"]
    assert user and (int(user[1]), int(user[2])) == (context["runAsUser"], context["runAsGroup"])


def test_the_sandbox_image_has_opencode_where_the_manifests_say() -> None:
    dockerfile = (ROOT / "images/sandbox/Dockerfile").read_text()
    (container,) = _pod_spec("sandbox")["containers"]
    env = {item["name"]: item["value"] for item in container["env"]}
    config = yaml.safe_load((ROOT / "manifests/base/control-plane/configmap.yaml").read_text())
    expected = f"{PREFIX}/bin/opencode"
    assert f"OPEN_INSPECT_OPENCODE_BIN={expected}" in dockerfile
    assert env["OPEN_INSPECT_OPENCODE_BIN"] == expected
    assert config["data"]["OPEN_INSPECT_OPENCODE_BIN"] == expected


@pytest.mark.timeout(1200)
@pytest.mark.parametrize("image", IMAGES)
def test_the_install_script_installs_and_passes_its_self_check(image: str) -> None:
    script = ROOT / "images" / image / "install.sh"
    with tempfile.TemporaryDirectory(prefix=f"open-inspect-{image}-") as tmp:
        prefix = Path(tmp) / "opt"
        out = _run("bash", script, prefix, timeout=540)
        assert f"self-check passed: {PASSED[image]} {prefix}" in out
        python = prefix / "venv/bin/python"
        if image == "control-plane":
            _run(python, "-c", "import bot, core, web_minimal")
            assert len(_run(prefix / "bin/open-inspect", "keygen").strip()) == 44
        else:
            _run(python, "-c", "import sandbox.supervisor")
            assert _run(prefix / "bin/opencode", "--version").strip() == pinned_version()
            assert not list((prefix / "opencode").glob(".staging-*"))
