"""The Kubernetes emulator: an API server for pods, secrets and persistentvolumeclaims with the
real wire format and semantics, whose one node runs each pod's containers as local processes,
for the real kubernetes_asyncio client."""

from tests.emulators.kubernetes.container import ImageSpec
from tests.emulators.kubernetes.server import KubernetesEmulator, python_image

__all__ = ["ImageSpec", "KubernetesEmulator", "python_image"]
