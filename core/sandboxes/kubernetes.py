"""The `kubernetes` provider: a sandbox is a pod, one per session, made from the deployment's
pod template (`core.sandboxes.pods`).

- A pod gets only its bridge token, in a Secret of its own that its pod owns, and the address
  of the control plane; never Slack, GitHub App or model credentials (those stay in core,
  which the sandbox reaches through the bridge, the model proxy and the git credential route).
- Its workspace is a PersistentVolumeClaim labelled with the session: an idle session's pod
  is deleted (hibernation) and a later pod mounts the same claim and resumes.
- A warm pool of pods, shared by every replica, waits holding only a pool token. A replica
  claims one by patching its labels with a resourceVersion precondition, so two replicas can
  never both win the same pod; the session's token then arrives over the bridge.
- One watch on this release's pods turns a failed, evicted or OOM-killed pod into its
  prompt's failure, with the reason; garbage collection removes what ended sessions left,
  touching only objects labelled with this release.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from datetime import UTC, datetime, timedelta
from typing import Any

import aiohttp
import asyncpg
from kubernetes_asyncio import client, config, watch
from kubernetes_asyncio.client.exceptions import ApiException

from core.broker import Broker
from core.config import Settings
from core.errors import ConfigError, SandboxFailed
from core.protocol import Shutdown
from core.sandboxes import SessionOptions, clone_url, secrets_for
from core.sandboxes.bridged import BridgedSandbox
from core.sandboxes.local import strip_userinfo
from core.sandboxes.pods import (
    COMPONENT,
    FRAMES_SEEN,
    OWNER,
    POOL,
    RELEASE,
    SANDBOX,
    SESSION,
    PodSpec,
    failure,
    label_value,
    load_template,
    names,
    sandbox_pod,
    token_secret,
    workspace_claim,
)
from core.secrets import SecretStore, sandbox_stdin_line
from core.store import sandboxes as sandbox_store

log = logging.getLogger(__name__)

# A pod's deadline outlasts the sandbox's lifetime by this much: the control plane stops a
# sandbox first; the deadline ends one the control plane lost track of.
_DEADLINE_MARGIN = 300
# Objects younger than this are never collected: another replica may be making them.
_GC_GRACE = 120.0
_GONE = ("Failed", "Succeeded")


async def connect(settings: Settings) -> client.ApiClient:
    """An API client from OPEN_INSPECT_KUBECONFIG, else the pod's service account."""
    configuration = client.Configuration()
    try:
        if settings.kubeconfig is not None:
            await config.load_kube_config(
                config_file=str(settings.kubeconfig), client_configuration=configuration
            )
        else:
            config.load_incluster_config(client_configuration=configuration)
    except (config.ConfigException, OSError) as exc:
        raise ConfigError(
            "Cannot reach Kubernetes for sandboxes: set OPEN_INSPECT_KUBECONFIG, or run the "
            f"control plane in the cluster with its service account ({exc})."
        ) from None
    return client.ApiClient(configuration=configuration)


class KubernetesProvider:
    name = "kubernetes"

    def __init__(
        self,
        settings: Settings,
        pool: asyncpg.Pool,
        broker: Broker,
        replica: str,
        secrets: SecretStore | None = None,
    ) -> None:
        self.settings = settings
        self.namespace = settings.kubernetes_namespace
        self._pool = pool
        self._broker = broker
        self._replica = replica
        self._secrets = secrets
        self._template = load_template(settings.kubernetes_pod_template)
        self._api: client.ApiClient | None = None
        self._core: client.CoreV1Api | None = None
        self._sandboxes: dict[str, KubernetesSandbox] = {}  # by pod name: those this replica holds
        self._tasks: list[asyncio.Task[None]] = []
        self._filling: asyncio.Task[None] | None = None
        self._pool_failures = 0
        self._closed = False

    @property
    def core(self) -> client.CoreV1Api:
        assert self._core is not None, "start() the provider first"
        return self._core

    @property
    def release_selector(self) -> str:
        return f"{RELEASE}={self.settings.kubernetes_release}"

    async def start(self) -> None:
        self._api = await connect(self.settings)
        self._core = client.CoreV1Api(self._api)
        try:
            await self.core.list_namespaced_pod(self.namespace, limit=1)
        except (ApiException, aiohttp.ClientError, OSError) as exc:
            await self._api.close()
            raise ConfigError(
                f"Cannot list pods in the namespace {self.namespace}: {_said(exc)}"
            ) from None
        self._tasks = [
            asyncio.create_task(self._watch(), name="kubernetes-watch"),
            asyncio.create_task(self._collect_periodically(), name="kubernetes-gc"),
        ]

    async def close(self) -> None:
        self._closed = True
        tasks = [*self._tasks, *([self._filling] if self._filling else [])]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        # Sessions close their own sandboxes; what is left was being made for the pool.
        leftovers = [s for s in self._sandboxes.values() if s.session_id is None]
        await asyncio.gather(*(s.close() for s in leftovers), return_exceptions=True)
        if self._api is not None:
            await self._api.close()

    # ----- labels and environment -------------------------------------------------------------

    def labels(self, sandbox_id: str, **more: str | None) -> dict[str, str]:
        labels = {
            RELEASE: self.settings.kubernetes_release,
            "app.kubernetes.io/name": "open-inspect",
            SANDBOX: sandbox_id,
        }
        labels.update({k: v for k, v in more.items() if v})
        return labels

    def environment(
        self, session_id: str | None, url: str | None, options: SessionOptions, model: str
    ) -> dict[str, str]:
        """What a sandbox pod is told besides its token (which is in its Secret): no secret."""
        settings = self.settings
        env = {
            "OPEN_INSPECT_SESSION_ID": session_id or "",
            "OPEN_INSPECT_REPOSITORY_URL": strip_userinfo(url) if url else "",
            "OPEN_INSPECT_BRANCH": options.branch or "",
            "OPEN_INSPECT_MODEL": model,
            "OPEN_INSPECT_HEARTBEAT_SECONDS": str(settings.heartbeat_seconds),
            "SETUP_TIMEOUT_SECONDS": str(settings.setup_timeout_seconds),
            "OPEN_INSPECT_OPENCODE_STALL_SECONDS": str(settings.opencode_stall_seconds),
            "OPEN_INSPECT_OPENCODE_WEBFETCH": "1" if settings.opencode_webfetch else "0",
        }
        if settings.kubernetes_core_url:
            core = settings.kubernetes_core_url.rstrip("/")
            env["OPEN_INSPECT_CORE_URL"] = core
            env["OPEN_INSPECT_BRIDGE_URL"] = core.replace("http", "ws", 1) + "/bridge"
        return env

    def deadline(self, running_for: float = 0.0) -> int:
        return int(running_for + self.settings.sandbox_max_lifetime_seconds + _DEADLINE_MARGIN)

    # ----- sessions --------------------------------------------------------------------------

    async def create(
        self, session_id: str, repository: str | None, options: SessionOptions
    ) -> KubernetesSandbox:
        url = clone_url(self.settings, repository)
        owner = await self._pool.fetchval(
            "SELECT created_by FROM sessions WHERE id = $1", session_id
        )
        agent = self.settings.agent_for(repository)
        try:
            claim = await self._session_claim(session_id)
            secrets = await secrets_for(self._secrets, repository)
            if claim is None and agent == self.settings.agent:
                sandbox = await self._claim_warm(session_id, owner, url, options, secrets)
                if sandbox is not None:
                    return sandbox
            return await self._create_cold(session_id, owner, url, options, agent, claim, secrets)
        except (ApiException, aiohttp.ClientError, OSError) as exc:
            raise SandboxFailed(f"Kubernetes refused the sandbox: {_said(exc)}") from None

    async def _session_claim(self, session_id: str) -> str | None:
        """The session's workspace claim, if it has one (it hibernated); pods an earlier owner
        left running on it are stopped first."""
        selector = f"{self.release_selector},{SESSION}={session_id}"
        pods = await self.core.list_namespaced_pod(self.namespace, label_selector=selector)
        for pod in pods.items:
            if pod.metadata.name not in self._sandboxes:
                await self._delete_pod(pod.metadata.name, grace=5)
                await sandbox_store.revoke(self._pool, pod.metadata.labels.get(SANDBOX, ""))
        claims = await self.core.list_namespaced_persistent_volume_claim(
            self.namespace, label_selector=selector
        )
        live = [c for c in claims.items if c.metadata.deletion_timestamp is None]
        return live[0].metadata.name if live else None

    async def _create_cold(
        self,
        session_id: str | None,
        owner: str | None,
        url: str | None,
        options: SessionOptions,
        agent: str,
        claim: str | None = None,
        secrets: dict[str, str] | None = None,
    ) -> KubernetesSandbox:
        sandbox_id, token = await sandbox_store.register(self._pool, session_id, self.name)
        sandbox = KubernetesSandbox(self, session_id, sandbox_id, token, options)
        self._sandboxes[sandbox.pod_name] = sandbox
        try:
            await sandbox.open()
            warm = session_id is None
            labels = self.labels(
                sandbox_id,
                **{SESSION: session_id, OWNER: label_value(owner) if owner else None},
            )
            if claim is None:
                claim = names(sandbox_id)[2]
                await self.core.create_namespaced_persistent_volume_claim(
                    self.namespace,
                    workspace_claim(
                        claim,
                        {**labels, COMPONENT: "sandbox-workspace"},
                        self.settings.kubernetes_workspace_size,
                        self.settings.kubernetes_storage_class,
                    ),
                )
            env = self.environment(session_id, url, options, sandbox.model)
            env["OPEN_INSPECT_AGENT"] = agent
            spec = PodSpec(
                sandbox_id,
                {**labels, **({POOL: "starting"} if warm else {})},
                env,
                claim,
                None if warm else self.deadline(),
            )
            pod = await self.core.create_namespaced_pod(
                self.namespace, sandbox_pod(self._template, spec)
            )
            # Created after its pod, which owns it: deleting the pod deletes its token.
            await self.core.create_namespaced_secret(
                self.namespace,
                token_secret(
                    sandbox_id,
                    pod.metadata.uid,
                    # Read as the supervisor's stdin: the token, then the session's secrets.
                    token + "\n" + sandbox_stdin_line(secrets or {}).decode(),
                    {**self.labels(sandbox_id), COMPONENT: "sandbox-token"},
                ),
            )
        except BaseException:
            await sandbox.close()
            raise
        log.info(
            "session %s: sandbox pod %s/%s created",
            session_id or "(warm pool)",
            self.namespace,
            sandbox.pod_name,
        )
        return sandbox

    # ----- the warm pool ---------------------------------------------------------------------

    def start_pool(self) -> None:
        """Keep OPEN_INSPECT_WARM_POOL pods waiting for a session, across all replicas."""
        if self.settings.warm_pool > 0 and not self._closed:
            if self._filling is None or self._filling.done():
                self._filling = asyncio.create_task(self._fill(), name="kubernetes-warm-pool")

    async def pool_pods(self, state: str | None = None) -> list[Any]:
        """This release's warm pods that can still be claimed (or become so), oldest first."""
        selector = f"{self.release_selector},{POOL}" + (f"={state}" if state else "")
        pods = await self.core.list_namespaced_pod(self.namespace, label_selector=selector)
        alive = [
            p
            for p in pods.items
            if p.metadata.deletion_timestamp is None and (p.status.phase or "") not in _GONE
        ]
        return sorted(alive, key=lambda p: p.metadata.creation_timestamp)

    async def _fill(self) -> None:
        lease = await self._broker.acquire_lease(
            f"kubernetes-pool:{self.settings.kubernetes_release}", self._replica, 60.0
        )
        if lease is None:
            return  # another replica is filling it
        try:
            while not self._closed:
                missing = self.settings.warm_pool - len(await self.pool_pods())
                if missing <= 0:
                    return
                started = await asyncio.gather(
                    *(self._start_warm() for _ in range(missing)), return_exceptions=True
                )
                failed = [r for r in started if isinstance(r, BaseException)]
                if failed:
                    self._pool_failures += 1
                    delay = min(60.0, 0.5 * 2.0**self._pool_failures)
                    log.warning(
                        "warm pool: %d pod(s) failed to start (%s); retrying in %g s",
                        len(failed),
                        failed[0],
                        delay,
                    )
                    await self._broker.renew_lease(lease, 60.0 + delay)
                    await asyncio.sleep(delay)
                else:
                    self._pool_failures = 0
                await self._broker.renew_lease(lease, 60.0)
        except (ApiException, aiohttp.ClientError, OSError) as exc:
            log.warning("warm pool: Kubernetes refused it: %s", _said(exc))
        finally:
            with contextlib.suppress(Exception):
                await self._broker.release_lease(lease)

    async def _start_warm(self) -> None:
        """One pool pod, up to its bridge's Waiting; then any replica may claim it."""
        sandbox = await self._create_cold(
            None, None, None, SessionOptions(), self.settings.agent, None
        )
        try:
            if not await sandbox.wait_waiting(self.settings.connect_timeout_seconds):
                raise SandboxFailed(sandbox.fatal or "the warm sandbox did not connect in time")
            await self.core.patch_namespaced_pod(
                sandbox.pod_name,
                self.namespace,
                {
                    "metadata": {
                        "labels": {POOL: "ready"},
                        "annotations": {FRAMES_SEEN: str(sandbox.channel.frames_seen)},
                    }
                },
            )
        except BaseException:
            await sandbox.close()
            raise
        await sandbox.release()  # it waits in the cluster now, not in this replica

    async def _claim_warm(
        self,
        session_id: str,
        owner: str | None,
        url: str | None,
        options: SessionOptions,
        secrets: dict[str, str],
    ) -> KubernetesSandbox | None:
        """A ready warm pod bound to the session, or None when the pool has none to give."""
        for pod in await self.pool_pods("ready"):
            claimed = await self._win(pod, session_id, owner)
            if claimed is None:
                continue  # another replica took it first: try the next
            sandbox_id = pod.metadata.labels[SANDBOX]
            token = await sandbox_store.claim(self._pool, sandbox_id, session_id)
            if token is None:  # revoked meanwhile: it is garbage
                await self._delete_pod(pod.metadata.name)
                continue
            self.start_pool()
            sandbox = KubernetesSandbox(self, None, sandbox_id, "", options)
            sandbox.warm = True
            self._sandboxes[sandbox.pod_name] = sandbox
            try:
                await self._adopt_claim(claimed, session_id)
                sandbox.channel.resume_after(int(claimed.metadata.annotations[FRAMES_SEEN]))
                await sandbox.open()
                self.observe(claimed)
                await sandbox.send_bind(
                    session_id, token, strip_userinfo(url) if url else None, options, None, secrets
                )
            except BaseException:
                await sandbox.close()
                raise
            log.info("session %s: claimed warm sandbox pod %s", session_id, sandbox.pod_name)
            return sandbox
        self.start_pool()
        return None

    async def _win(self, pod: Any, session_id: str, owner: str | None) -> Any | None:
        """Take `pod` for the session: the patch carries the resourceVersion this replica saw,
        so when two replicas race for it the API server lets exactly one through."""
        started = pod.status.start_time or datetime.now(UTC)
        running_for = (datetime.now(UTC) - started).total_seconds()
        patch = {
            "metadata": {
                "resourceVersion": pod.metadata.resource_version,
                "labels": {
                    POOL: None,
                    SESSION: session_id,
                    OWNER: label_value(owner) if owner else None,
                },
            },
            # Counted from the pod's start: it waited in the pool before this.
            "spec": {"activeDeadlineSeconds": self.deadline(running_for)},
        }
        try:
            return await self.core.patch_namespaced_pod(pod.metadata.name, self.namespace, patch)
        except ApiException as exc:
            if exc.status in (404, 409):
                return None
            raise

    async def _adopt_claim(self, pod: Any, session_id: str) -> None:
        """The pool pod's workspace claim becomes the session's."""
        for volume in pod.spec.volumes or []:
            if volume.persistent_volume_claim is not None:
                await self.core.patch_namespaced_persistent_volume_claim(
                    volume.persistent_volume_claim.claim_name,
                    self.namespace,
                    {"metadata": {"labels": {SESSION: session_id}}},
                )

    # ----- watching pods ---------------------------------------------------------------------

    def observe(self, pod: Any, deleted: bool = False) -> None:
        """A pod's latest state: a held sandbox whose pod can no longer run fails."""
        sandbox = self._sandboxes.get(pod.metadata.name)
        if sandbox is None:
            return
        reason = failure(pod)
        if reason is None and not sandbox.closing and (deleted or pod.metadata.deletion_timestamp):
            reason = (
                "The sandbox's pod was deleted from outside Open-Inspect (kubectl delete, or its "
                "node drained); the work so far is kept for the next prompt."
            )
        if reason is not None:
            sandbox.pod_gone(reason)

    async def _watch(self) -> None:
        version: str | None = None
        backoff = 0.5
        while not self._closed:
            try:
                if version is None:
                    pods = await self.core.list_namespaced_pod(
                        self.namespace, label_selector=self.release_selector
                    )
                    version = pods.metadata.resource_version
                    for pod in pods.items:
                        self.observe(pod)
                stream = watch.Watch().stream(
                    self.core.list_namespaced_pod,
                    self.namespace,
                    label_selector=self.release_selector,
                    resource_version=version,
                    timeout_seconds=60,
                )
                async with contextlib.aclosing(stream) as events:
                    async for event in events:
                        pod = event["object"]
                        version = pod.metadata.resource_version
                        self.observe(pod, deleted=event["type"] == "DELETED")
                backoff = 0.5
            except ApiException as exc:
                if exc.status == 410:  # our resourceVersion is too old: list again
                    version = None
                    continue
                log.warning("watching sandbox pods: %s; again in %g s", _said(exc), backoff)
            except (aiohttp.ClientError, OSError, TimeoutError) as exc:
                log.warning("watching sandbox pods: %s; again in %g s", exc, backoff)
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, 10.0)

    # ----- deleting and collecting -------------------------------------------------------------

    async def _delete_pod(self, name: str, grace: int | None = None) -> None:
        with contextlib.suppress(ApiException):  # gone already
            await self.core.delete_namespaced_pod(name, self.namespace, grace_period_seconds=grace)

    async def _delete(self, kind: str, name: str) -> None:
        delete = getattr(self.core, f"delete_namespaced_{kind}")
        with contextlib.suppress(ApiException):
            await delete(name, self.namespace)

    async def _collect_periodically(self) -> None:
        while not self._closed:
            try:
                await self.collect_garbage()
            except (ApiException, aiohttp.ClientError, OSError) as exc:
                log.warning("sandbox garbage collection: %s", _said(exc))
            self.start_pool()
            await asyncio.sleep(self.settings.kubernetes_gc_seconds)

    async def collect_garbage(self, grace: float = _GC_GRACE) -> dict[str, list[str]]:
        """Delete this release's pods whose sandbox ended, Secrets whose pod is gone, and
        workspace claims of sessions that are gone or idle past the retention. Returns the
        names deleted, by kind."""
        selector = self.release_selector
        now = datetime.now(UTC)

        def old(item: Any) -> bool:
            return (now - item.metadata.creation_timestamp).total_seconds() >= grace

        pods = (await self.core.list_namespaced_pod(self.namespace, label_selector=selector)).items
        ids = [p.metadata.labels.get(SANDBOX, "") for p in pods]
        live = {
            row["id"]
            for row in await self._pool.fetch(
                "SELECT id FROM sandboxes WHERE id = ANY($1) AND revoked_at IS NULL", ids
            )
        }
        deleted: dict[str, list[str]] = {"pods": [], "secrets": [], "claims": []}
        kept: set[str] = set()
        for pod in pods:
            sandbox_id = pod.metadata.labels.get(SANDBOX, "")
            held = pod.metadata.name in self._sandboxes
            ended = (pod.status.phase or "") in _GONE or pod.metadata.labels.get(POOL) == "starting"
            if held or not old(pod) or (sandbox_id in live and not ended):
                kept.add(sandbox_id)
                continue
            await self._delete_pod(pod.metadata.name)
            await sandbox_store.revoke(self._pool, sandbox_id)
            deleted["pods"].append(pod.metadata.name)

        # Sessions with a pod that stays: their claims are in use (from the one pod listing).
        kept_sessions = {
            p.metadata.labels.get(SESSION) for p in pods if p.metadata.labels.get(SANDBOX) in kept
        }
        secrets = await self.core.list_namespaced_secret(self.namespace, label_selector=selector)
        for secret in secrets.items:
            if old(secret) and secret.metadata.labels.get(SANDBOX) not in kept:
                await self._delete("secret", secret.metadata.name)
                deleted["secrets"].append(secret.metadata.name)

        claims = await self.core.list_namespaced_persistent_volume_claim(
            self.namespace, label_selector=selector
        )
        sessions = [c.metadata.labels.get(SESSION) for c in claims.items]
        retained = now - timedelta(days=self.settings.workspace_retention_days)
        current = {
            row["id"]
            for row in await self._pool.fetch(
                "SELECT id FROM sessions WHERE id = ANY($1) AND updated_at > $2",
                [s for s in sessions if s],
                retained,
            )
        }
        for claim in claims.items:
            session = claim.metadata.labels.get(SESSION)
            in_use = claim.metadata.labels.get(SANDBOX) in kept
            if not old(claim) or in_use or (session in current):
                continue
            if session is not None and session in kept_sessions:
                continue
            await self._delete("persistent_volume_claim", claim.metadata.name)
            deleted["claims"].append(claim.metadata.name)
        if any(deleted.values()):
            log.info("sandbox garbage collection deleted %s", json.dumps(deleted))
        return deleted


class KubernetesSandbox(BridgedSandbox):
    def __init__(
        self,
        provider: KubernetesProvider,
        session_id: str | None,
        sandbox_id: str,
        token: str,
        options: SessionOptions,
    ) -> None:
        super().__init__(
            provider.settings, provider._broker, session_id, sandbox_id, token, options
        )
        self.provider = provider
        self.pod_name = names(sandbox_id)[0]
        self._waiting = asyncio.Event()
        self._dispatcher: asyncio.Task[None] | None = None
        self.closing = False  # this replica is stopping it: its deletion is no failure

    async def open(self) -> None:
        """Listen to the sandbox's bridge (before its pod starts, so nothing is missed)."""
        await self.channel.open()
        self._dispatcher = asyncio.create_task(self.dispatch(), name=f"dispatch:{self.pod_name}")

    def on_waiting(self) -> None:
        self._waiting.set()

    async def wait_waiting(self, timeout: float) -> bool:
        """A warm sandbox: True once it connected and waits to be bound."""
        gone = asyncio.create_task(self.exited.wait())
        waiting = asyncio.create_task(self._waiting.wait())
        try:
            await asyncio.wait({gone, waiting}, timeout=timeout, return_when="FIRST_COMPLETED")
        finally:
            gone.cancel()
            waiting.cancel()
        return self._waiting.is_set() and not self.exited.is_set()

    def pod_gone(self, reason: str) -> None:
        self.fail(reason)
        self.exited.set()

    async def _stop_listening(self) -> None:
        self.provider._sandboxes.pop(self.pod_name, None)
        if self._dispatcher is not None:
            self._dispatcher.cancel()
            await asyncio.gather(self._dispatcher, return_exceptions=True)
        await self.channel.close()

    async def release(self) -> None:
        """A warm pod this replica made is handed to the cluster's pool: stop following it."""
        await self._stop_listening()

    async def close(self, hibernate: bool = False) -> None:
        """Stop the pod; its workspace claim stays for a later pod of the session (deleted
        with it when the pod never had a session)."""
        if not self.exited.is_set() and (self.waiting or self._ready.is_set()):
            with contextlib.suppress(Exception):
                await self.channel.send(Shutdown(hibernate=hibernate))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.exited.wait(), 10 if hibernate else 2)
        provider = self.provider
        self.closing = True
        await provider._delete_pod(self.pod_name, grace=0 if self.exited.is_set() else 5)
        await provider._delete("secret", names(self.sandbox_id)[1])
        if self.session_id is None:
            await provider._delete("persistent_volume_claim", names(self.sandbox_id)[2])
        await self._stop_listening()
        await sandbox_store.revoke(provider._pool, self.sandbox_id)
        log.info(
            "session %s: sandbox pod %s deleted%s",
            self.session_id or "(warm pool)",
            self.pod_name,
            " (workspace kept)" if hibernate else "",
        )


def _said(exc: BaseException) -> str:
    """What the API server said, in one line (its Status message when there is one)."""
    if isinstance(exc, ApiException):
        try:
            return f"{json.loads(exc.body)['message']} (HTTP {exc.status})"
        except (TypeError, ValueError, KeyError):
            return f"HTTP {exc.status} {exc.reason}"
    return str(exc) or type(exc).__name__
