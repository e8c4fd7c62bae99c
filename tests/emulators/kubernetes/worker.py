"""One pod on the node, as the kubelet's pod worker runs it: wait until its volumes, image and
environment can be had, run its init containers one after the other and then its containers,
restart them as `restartPolicy` says, stop them when the pod is deleted (SIGTERM, SIGKILL after
the grace period), evicted or past its `activeDeadlineSeconds`, and report every change in the
pod's status as the kubelet does."""

from __future__ import annotations

import asyncio
import hashlib
import logging
import signal
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tests.emulators.kubernetes import volumes
from tests.emulators.kubernetes.container import (
    ImageSpec,
    Run,
    bwrap_args,
    command,
    environment,
    start,
)
from tests.emulators.kubernetes.resources import now
from tests.emulators.kubernetes.volumes import NotReady

if TYPE_CHECKING:
    from tests.emulators.kubernetes.kubelet import Kubelet

log = logging.getLogger(__name__)
Obj = dict[str, Any]
DEADLINE_MESSAGE = "Pod was active on the node longer than the specified deadline"
MAX_BACKOFF = 300.0


@dataclass
class ContainerState:
    spec: Obj
    init: bool
    state: Obj = field(default_factory=lambda: {"waiting": {"reason": "ContainerCreating"}})
    last_state: Obj = field(default_factory=dict)
    restart_count: int = 0
    run: Run | None = None
    runs: list[Path] = field(default_factory=list)  # each run's log, oldest first

    @property
    def name(self) -> str:
        return self.spec["name"]

    @property
    def running(self) -> bool:
        return "running" in self.state

    def exit_code(self) -> int | None:
        return self.state.get("terminated", {}).get("exitCode")


class PodWorker:
    def __init__(self, kubelet: Kubelet, pod: Obj) -> None:
        meta = pod["metadata"]
        self.kubelet, self.pod = kubelet, pod
        self.namespace, self.name, self.uid = meta["namespace"], meta["name"], meta["uid"]
        self.dir = kubelet.root / "pods" / self.uid
        spec = pod["spec"]
        self.containers = [ContainerState(c, True) for c in spec.get("initContainers") or []]
        self.containers += [ContainerState(c, False) for c in spec["containers"]]
        for container in self.containers:
            if not container.init and spec.get("initContainers"):
                container.state = {"waiting": {"reason": "PodInitializing"}}
        self.start_time = now()
        self._started_at = time.monotonic()
        self.sandbox_ready = False  # volumes set up: the pod has its IP
        self.volumes: dict[str, Path] = {}
        self.reason: tuple[str, str] | None = None  # pod-level: Evicted, DeadlineExceeded
        self.stopping = False  # no more starts or restarts
        self.deleting = False
        self.gone = False  # force-deleted: nothing left to report to
        self._grace: float | None = None  # the deletion's grace period, once deleted
        self._wake = asyncio.Event()
        self._kill_at: float | None = None
        self._kill_timer: asyncio.TimerHandle | None = None
        self._deadline: asyncio.TimerHandle | None = None
        self._transitions: dict[str, tuple[str, str]] = {}
        self.task = asyncio.create_task(self._run())
        self._schedule_deadline()

    # ----- what the kubelet asks -----------------------------------------------------------

    def observe(self, pod: Obj) -> None:
        """A newer version of the pod: deletion asked, deadline changed."""
        old_deadline = self.pod["spec"].get("activeDeadlineSeconds")
        self.pod = pod
        if pod["spec"].get("activeDeadlineSeconds") != old_deadline:
            self._schedule_deadline()
        meta = pod["metadata"]
        grace = meta.get("deletionGracePeriodSeconds") or 0
        if meta.get("deletionTimestamp") and (self._grace is None or grace < self._grace):
            self.deleting, self._grace = True, grace
            self.terminate(grace)

    def terminate(self, grace: float) -> None:
        """SIGTERM every running container, SIGKILL those left after `grace` seconds."""
        self._stop_starting()
        for container in self.containers:
            if container.run is not None:
                container.run.signal(signal.SIGTERM)
        kill_at = time.monotonic() + grace
        if self._kill_at is None or kill_at < self._kill_at:
            self._kill_at = kill_at
            if self._kill_timer is not None:
                self._kill_timer.cancel()
            self._kill_timer = asyncio.get_running_loop().call_at(
                asyncio.get_running_loop().time() + grace, self.kill
            )

    def kill(self, container: str | None = None, as_reason: str | None = None) -> None:
        """SIGKILL `container` (every one by default): the whole pod stops starting or
        restarting containers unless one alone is named."""
        if container is None:
            self._stop_starting()
        for state in self.containers:
            if state.run is not None and container in (None, state.name):
                state.run.killed_as = as_reason or state.run.killed_as
                state.run.signal(signal.SIGKILL)

    def evict(self, message: str) -> None:
        self.reason = ("Evicted", message)
        self.kill()
        self._publish()

    def forget(self) -> None:
        """The pod was removed while it ran (a forced deletion): kill, report nothing."""
        self.gone = True
        self.kill()

    # ----- running -------------------------------------------------------------------------

    async def _run(self) -> None:
        try:
            if await self._wait_until_startable():
                self.sandbox_ready = True
                await self._run_containers()
            self._publish()
        except Exception:
            log.exception("kubelet: pod %s/%s failed in the emulator", self.namespace, self.name)
            raise
        finally:
            for timer in (self._kill_timer, self._deadline):
                if timer is not None:
                    timer.cancel()
            if self.deleting and not self.gone:
                self.kubelet.api.confirm_pod_stopped(self.namespace, self.name, self.uid)
            self.kubelet.finished(self)

    async def _wait_until_startable(self) -> bool:
        """Until volumes and images can be had (True), or the pod is stopped first (False)."""
        pulls = 0
        while not self.stopping:
            try:
                # Set up once: a restarted container finds its pod's volumes as they were.
                self.volumes = volumes.prepare(
                    self.kubelet.store, self.kubelet.root, self.pod, self.dir
                )
                for container in self.containers:
                    self.kubelet.image(container.spec["image"])
                return True
            except NotReady as exc:
                if exc.reason == "ErrImagePull":
                    pulls += 1
                    if pulls > 1:
                        exc = NotReady("ImagePullBackOff", exc.message)
                for container in self.containers:
                    container.state = {"waiting": {"reason": exc.reason, "message": exc.message}}
                self._publish()
                # Retried on any write (the Secret or claim may appear), as pulls back off.
                await self._until_changed(self.kubelet.backoff if pulls else None)
        return False

    async def _run_containers(self) -> None:
        for container in self.containers:
            if container.init and (await self._run_container(container)) != 0:
                return  # the pod failed before its containers could start
        regular = [c for c in self.containers if not c.init]
        await asyncio.gather(*(self._run_container(c) for c in regular))

    async def _run_container(self, container: ContainerState) -> int | None:
        """Run `container` until it ends for good; its last exit code (None: never ran)."""
        while not self.stopping:
            try:
                image = self.kubelet.image(container.spec["image"])
                own = environment(self.kubelet.store, self.pod, container.spec)
                argv = command(container.spec, image, own)
                env = {"HOME": "/root", **image.env, "HOSTNAME": self.name, **own}
            except NotReady as exc:
                container.state = {"waiting": {"reason": exc.reason, "message": exc.message}}
                self._publish()
                await self._until_changed()
                continue
            code = await self._run_once(container, image, env, argv)
            if not self._restarts(container, code) or self.stopping:
                return code
            container.last_state = container.state
            backoff = min(self.kubelet.backoff * 2**container.restart_count, MAX_BACKOFF)
            message = (
                f"back-off {backoff:g}s restarting failed container={container.name} "
                f"pod={self.name}_{self.namespace}({self.uid})"
            )
            container.state = {"waiting": {"reason": "CrashLoopBackOff", "message": message}}
            self._publish()
            await self._until_changed(backoff, any_write=False)
            if not self.stopping:
                container.restart_count += 1
        if container.last_state and "terminated" not in container.state:
            container.state = container.last_state  # stopped while backing off
        return container.exit_code()

    async def _run_once(
        self, container: ContainerState, image: ImageSpec, env: dict[str, str], argv: list[str]
    ) -> int:
        mounts = volumes.mounts(container.spec, self.volumes, self.pod)
        log_path = self.dir / "logs" / container.name / f"{container.restart_count}.log"
        log_path.parent.mkdir(parents=True, exist_ok=True)
        container.runs.append(log_path)
        args = bwrap_args(self.kubelet.bwrap, self.pod, container.spec, image, mounts)
        try:
            run = await start(args, argv, env, log_path)
        except OSError as exc:  # bwrap itself could not be run
            message = f"failed to start the container: {exc}"
            at = now()
            container.state = {
                "terminated": {
                    "exitCode": 128, "reason": "StartError", "message": message,
                    "startedAt": at, "finishedAt": at,
                }
            }  # fmt: skip
            self._publish()
            return 128
        container.run = run
        container.state = {"running": {"startedAt": run.started_at}}
        if self.stopping:  # asked to stop while it was starting
            late = self._kill_at is not None and self._kill_at <= time.monotonic()
            run.signal(signal.SIGKILL if late else signal.SIGTERM)
        self._publish()
        returncode = await run.process.wait()
        container.run = None
        code = returncode if returncode >= 0 else 128 - returncode
        terminated: Obj = {
            "exitCode": code,
            "reason": run.killed_as or ("Completed" if code == 0 else "Error"),
            "startedAt": run.started_at,
            "finishedAt": now(),
            "containerID": run.container_id,
        }
        first = log_path.read_text(errors="replace").split("\n", 1)[0]
        if code == 1 and first.startswith("bwrap: "):  # it never ran: exec or setup failed
            terminated |= {"exitCode": 128, "reason": "StartError", "message": first}
        container.state = {"terminated": terminated}
        self._publish()
        return terminated["exitCode"]

    def _restarts(self, container: ContainerState, code: int) -> bool:
        policy = self.pod["spec"].get("restartPolicy", "Always")
        if container.init:
            return policy != "Never" and code != 0
        return policy == "Always" or (policy == "OnFailure" and code != 0)

    async def _until_changed(self, timeout: float | None = None, any_write: bool = True) -> None:
        """Until the store changes (if `any_write`), `timeout` passes or the pod is stopped."""
        waits = [asyncio.ensure_future(self._wake.wait())]
        if any_write:
            waits.append(asyncio.ensure_future(self.kubelet.store.changed()))
        try:
            await asyncio.wait(waits, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for wait in waits:
                wait.cancel()

    def _stop_starting(self) -> None:
        self.stopping = True
        self._wake.set()

    def _schedule_deadline(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None
        seconds = self.pod["spec"].get("activeDeadlineSeconds")
        if seconds is not None:
            loop = asyncio.get_running_loop()
            left = self._started_at + seconds - time.monotonic()
            self._deadline = loop.call_later(max(left, 0), self._deadline_exceeded)

    def _deadline_exceeded(self) -> None:
        if self.reason is None and not self._finished():
            self.reason = ("DeadlineExceeded", DEADLINE_MESSAGE)
            self.terminate(self.pod["spec"].get("terminationGracePeriodSeconds", 30))
            self._publish()

    def _finished(self) -> bool:
        return self.task.done() or self._phase() in ("Succeeded", "Failed")

    # ----- status --------------------------------------------------------------------------

    def _publish(self) -> None:
        if not self.gone:
            self.kubelet.api.write_status(self.namespace, self.name, self.uid, self.status())

    def _gave_up(self, container: ContainerState) -> bool:
        """Whether `container` has ended and will not be started again."""
        code = container.exit_code()
        return code is not None and (self.stopping or not self._restarts(container, code))

    def _phase(self) -> str:
        if self.reason is not None:
            return "Failed"
        inits = [c for c in self.containers if c.init]
        regular = [c for c in self.containers if not c.init]
        if any(self._gave_up(c) and c.exit_code() != 0 for c in inits):
            return "Failed"
        if all(self._gave_up(c) for c in regular):
            return "Succeeded" if all(c.exit_code() == 0 for c in regular) else "Failed"
        if any(c.run is not None or c.exit_code() is not None or c.restart_count for c in regular):
            return "Running"
        return "Pending"

    def status(self) -> Obj:
        phase = self._phase()
        regular = [c for c in self.containers if not c.init]
        inits = [c for c in self.containers if c.init]
        status: Obj = {"phase": phase, "conditions": self._conditions(phase)}
        status |= {"hostIP": "127.0.0.1", "hostIPs": [{"ip": "127.0.0.1"}]}
        if self.sandbox_ready:
            status |= {"podIP": "127.0.0.1", "podIPs": [{"ip": "127.0.0.1"}]}
        status["startTime"] = self.start_time
        if inits:
            status["initContainerStatuses"] = [self._container_status(c) for c in inits]
        status["containerStatuses"] = [self._container_status(c) for c in regular]
        status["qosClass"] = self.pod.get("status", {}).get("qosClass", "BestEffort")
        if self.reason is not None:
            status["reason"], status["message"] = self.reason
        return status

    def _conditions(self, phase: str) -> list[Obj]:
        terminal = phase in ("Succeeded", "Failed")
        incomplete = [c.name for c in self.containers if c.init and c.exit_code() != 0]
        unready = [c.name for c in self.containers if not c.init and not c.running]
        ready = not unready and not terminal
        if terminal:
            why = ("PodCompleted", "")
        else:
            why = ("ContainersNotReady", f"containers with unready status: [{' '.join(unready)}]")
        conditions = [
            self._condition("PodReadyToStartContainers", self.sandbox_ready and not terminal),
            self._condition(
                "Initialized",
                not incomplete,
                "ContainersNotInitialized",
                f"containers with incomplete status: [{' '.join(incomplete)}]",
            ),
            self._condition("Ready", ready, *why),
            self._condition("ContainersReady", ready, *why),
            self._condition("PodScheduled", True),
        ]
        if self.reason is not None and self.reason[0] == "Evicted":
            conditions.append(
                self._condition("DisruptionTarget", True, "TerminationByKubelet", self.reason[1])
            )
        return conditions

    def _condition(self, kind: str, true: bool, reason: str = "", message: str = "") -> Obj:
        """A condition; `reason` and `message` say why one is False (or a DisruptionTarget)."""
        value = "True" if true else "False"
        if self._transitions.get(kind, ("",))[0] != value:
            self._transitions[kind] = (value, now())
        condition: Obj = {"type": kind, "status": value, "lastProbeTime": None}
        condition["lastTransitionTime"] = self._transitions[kind][1]
        if reason and (not true or kind == "DisruptionTarget"):
            condition["reason"] = reason
            if message:
                condition["message"] = message
        return condition

    def _container_status(self, container: ContainerState) -> Obj:
        image = container.spec["image"]
        digest = hashlib.sha256(image.encode()).hexdigest()
        status: Obj = {
            "name": container.name,
            "image": image,
            "imageID": f"{image.split(':')[0]}@sha256:{digest}",
            "ready": container.running and not container.init,
            "restartCount": container.restart_count,
            "started": container.running,
            "state": container.state,
            "lastState": container.last_state,
        }
        run_id = (container.state.get("terminated") or {}).get("containerID")
        if container.run is not None:
            run_id = container.run.container_id
        if run_id:
            status["containerID"] = run_id
        return status
