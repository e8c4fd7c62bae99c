"""Run the Kubernetes emulator alone, to drive the system's kubernetes sandbox provider locally:

    python -m tests.emulators.kubernetes --port 8092

It writes a kubeconfig and prints, as JSON, the variables to start the system with
(OPEN_INSPECT_SANDBOX_PROVIDER, OPEN_INSPECT_KUBECONFIG, OPEN_INSPECT_KUBERNETES_NAMESPACE,
OPEN_INSPECT_KUBERNETES_POD_TEMPLATE) and the images its node has: the sandbox image of the
pod template (and any other `--image`), each holding this Python and this repository, so
`python -m sandbox` runs in its pods. Pods' volumes, claims and logs live under --root (a
temporary directory, removed on Ctrl-C, by default).

    kubectl --kubeconfig <kubeconfig> get pods -A
    curl -s -X POST localhost:8092/_emulator/pods/<namespace>/<name>/oom_kill
    curl -s -X POST localhost:8092/_emulator/pods/<namespace>/<name>/evict -d '{"message": ""}'
    curl -s localhost:8092/_emulator/state                               every object
    curl -s localhost:8092/_emulator/received                            every write
"""

from __future__ import annotations

import argparse
import json
import signal
import tempfile
from pathlib import Path

import yaml

from tests.emulators import run_command_line, serve_until_stopped
from tests.emulators.kubernetes.server import KubernetesEmulator, python_image

_TEMPLATE = Path(__file__).resolve().parents[3] / "manifests/base/sandboxes/sandbox-pod.yaml"


def _template_images() -> list[str]:
    pod = yaml.safe_load(_TEMPLATE.read_text())
    spec = pod["spec"]
    return [c["image"] for c in [*spec.get("initContainers", []), *spec["containers"]]]


def _parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m tests.emulators.kubernetes",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8092)
    parser.add_argument("--token", default="emulator-token", help="the bearer token it accepts")
    parser.add_argument("--namespace", default="open-inspect-sandboxes")
    parser.add_argument("--root", type=Path, help="keep volumes and logs here (default: temp)")
    parser.add_argument("--kubeconfig", type=Path, help="write the kubeconfig here")
    parser.add_argument(
        "--image", action="append", default=[], help="another image name to serve Python as"
    )
    parser.add_argument("--restart-backoff", type=float, default=10.0)
    return parser.parse_args()


async def _serve(args: argparse.Namespace) -> None:
    image = python_image()
    names = list(dict.fromkeys([*_template_images(), *args.image]))
    emulator = KubernetesEmulator(
        args.root,
        {name: image for name in names},
        token=args.token,
        namespace=args.namespace,
        restart_backoff=args.restart_backoff,
    )
    await emulator.start(args.host, args.port)
    with tempfile.TemporaryDirectory(prefix="kubernetes-emulator-config-") as config_dir:
        kubeconfig = emulator.write_kubeconfig(args.kubeconfig or Path(config_dir) / "kubeconfig")
        print(
            json.dumps(
                {
                    "OPEN_INSPECT_SANDBOX_PROVIDER": "kubernetes",
                    "OPEN_INSPECT_KUBECONFIG": str(kubeconfig),
                    "OPEN_INSPECT_KUBERNETES_NAMESPACE": args.namespace,
                    "OPEN_INSPECT_KUBERNETES_POD_TEMPLATE": str(_TEMPLATE),
                    "url": emulator.url,
                    "token": emulator.token,
                    "images": {
                        name: {"binds": [str(p) for p in image.binds], "env": image.env}
                        for name in names
                    },
                    "root": str(emulator.root),
                },
                indent=2,
            ),
            flush=True,
        )
        await serve_until_stopped(emulator)


def main() -> None:
    args = _parse_args()
    # Terminated like interrupted: kill the pods' processes and remove what was written.
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    run_command_line(lambda: _serve(args))


if __name__ == "__main__":
    main()
