"""One live session: a task with a mailbox that owns the session's lease, runs its prompts one
at a time, and is the only writer of its event log while it holds the lease."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import asyncpg

from core.broker import Broker, Lease
from core.config import Settings
from core.errors import AgentFailed, Fenced, OpenInspectError, SandboxFailed, SandboxRefused
from core.eventlog import EventLog
from core.github.app import GitHubApp
from core.models import Prompt, session_branch
from core.redaction import Redactor
from core.sandboxes import AgentEvent, PromptRequest, Sandbox, SandboxProvider, SessionOptions
from core.sandboxes.breaker import SpawnBreaker
from core.secrets import SecretStore
from core.store import prompts as prompt_store
from core.store import sessions as session_store
from core.viewers import watched

log = logging.getLogger(__name__)

_SHAPES_ONLY = Redactor({})


@dataclass
class ActorContext:
    """What every actor of one engine shares."""

    pool: asyncpg.Pool
    broker: Broker
    settings: Settings
    provider: SandboxProvider | None
    replica: str
    breaker: SpawnBreaker
    github: GitHubApp | None = None  # the GitHub App, when configured: pushes' write tokens
    secrets: SecretStore | None = None  # whose values are redacted from the log


def lease_name(session_id: str) -> str:
    return f"session:{session_id}"


async def _cancelled(task: asyncio.Task[Any] | None) -> None:
    """Cancel a helper task (if still running) and wait for it to end."""
    if task is not None and not task.done():
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


def _when_committed(callback: Callable[[], None]) -> Callable[[asyncio.Future[Any]], None]:
    def done(future: asyncio.Future[Any]) -> None:
        if not future.cancelled() and future.exception() is None:
            callback()

    return done


class _SteppedDown(Exception):
    """The lease was lost: stop at once and write nothing more."""


class _Deltas:
    """A prompt's text deltas through a stream redactor, since a value split across two deltas
    is whole in neither. What it holds back goes into the log with the next event (or at the
    end); the sandbox is told the held deltas are committed only once that event is."""

    def __init__(self, redactor: Redactor, prompt_id: int) -> None:
        self._stream = redactor.stream()
        self._prompt_id = prompt_id
        self._held: list[Callable[[], None]] = []

    def append(self, emit: Callable[..., asyncio.Future[Any]], event: AgentEvent) -> None:
        if event.type == "text_delta" and isinstance(event.data.get("text"), str):
            self._hold(event)
            shown = self._stream.feed(event.data["text"])
            if shown:
                self._commit(emit("text_delta", {**event.data, "text": shown}, **self._of()))
            return
        self.flush(emit)
        self._hold(event)  # after the flush: its own ack waits for its own commit
        self._commit(emit(event.type, event.data, **self._of()))

    def _hold(self, event: AgentEvent) -> None:
        if event.committed is not None:
            self._held.append(event.committed)

    def flush(self, emit: Callable[..., asyncio.Future[Any]]) -> None:
        rest = self._stream.flush()
        if rest:
            self._commit(emit("text_delta", {"text": rest}, **self._of()))

    def _of(self) -> dict[str, Any]:
        return {"prompt_id": self._prompt_id}

    def _commit(self, appended: asyncio.Future[Any]) -> None:
        for callback in self._held:
            appended.add_done_callback(_when_committed(callback))
        self._held = []


class SessionActor:
    def __init__(
        self,
        ctx: ActorContext,
        session_id: str,
        lease: Lease,
        on_exit: Callable[[SessionActor], None],
    ) -> None:
        self.session_id = session_id
        self._ctx = ctx
        self._lease = lease
        self._on_exit = on_exit
        self._mailbox: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self._log: EventLog | None = None
        self._sandbox: Sandbox | None = None
        self._sandbox_started = 0.0
        self._state: str | None = None
        self._running: Prompt | None = None
        self._stop_reason: str | None = None
        self._exiting = False
        self._lease_lost = False
        self._deferred: list[dict[str, Any]] = []
        self._log_context = f"session {session_id}"
        # Redacts the session's secret values (and credential shapes) from every event before
        # it is stored: the page, Slack and the CLI all read the log.
        self._repository: str | None = None
        self._redactor = _SHAPES_ONLY
        self.task = asyncio.create_task(self._main(), name=f"actor:{session_id}")

    def tell(self, message: dict[str, Any]) -> None:
        self._mailbox.put_nowait(message)

    @property
    def accepting(self) -> bool:
        """False once the actor has decided to exit: new work must wait for a new actor."""
        return not self.task.done() and not self._exiting

    # ----- lifecycle -----------------------------------------------------------------------

    async def _main(self) -> None:
        keeper = asyncio.create_task(self._keep_lease())
        try:
            epoch = await session_store.take_ownership(
                self._ctx.pool, self.session_id, self._ctx.replica
            )
            self._log = EventLog(self._ctx.pool, self._ctx.broker, self.session_id, epoch)
            self._log_context = f"session {self.session_id} epoch {epoch}"
            log.info("%s: owned by replica %s", self._log_context, self._ctx.replica)
            await self._recover()
            await self._serve()
        except (Fenced, _SteppedDown) as exc:
            log.warning("session %s: stepped down: %s", self.session_id, exc)
        except asyncio.CancelledError:
            if self._lease_lost:
                log.warning("session %s: stepped down: lease lost", self.session_id)
            else:
                await self._shutdown_running("the engine shut down")
                raise
        except Exception:
            log.exception("session %s: actor crashed", self.session_id)
        finally:
            self._exiting = True
            keeper.cancel()
            await asyncio.gather(keeper, return_exceptions=True)
            if self._sandbox is not None:
                with contextlib.suppress(Exception):
                    await self._sandbox.close()
            if self._log is not None:
                await self._log.close()
            with contextlib.suppress(Exception):
                await self._ctx.broker.release_lease(self._lease)
            self._on_exit(self)

    async def _keep_lease(self) -> None:
        ttl = self._ctx.settings.lease_ttl_seconds
        while True:
            await asyncio.sleep(ttl / 3)
            try:
                held = await self._ctx.broker.renew_lease(self._lease, ttl)
            except Exception:  # noqa: BLE001 - a broker hiccup is retried until the lease lapses
                log.exception("session %s: lease renewal failed", self.session_id)
                continue
            if not held:
                self._lease_lost = True
                self.task.cancel(msg="lease lost")
                return

    async def _recover(self) -> None:
        """Prompts a previous owner left running cannot be resumed: say so, never drop them."""
        info = await session_store.get(self._ctx.pool, self.session_id)
        self._repository = info.repository
        try:
            await self._refresh_redactor()
        except OpenInspectError as exc:  # its prompts fail, saying so
            log.error("%s: the secrets cannot be read: %s", self._log_context, exc)
        if info.last_seq == 0:
            self._emit("session_created", {"repository": info.repository})
        self._state = info.state
        for prompt in await prompt_store.active(self._ctx.pool, self.session_id):
            if prompt.state == "running":
                reason = (
                    "The engine running this prompt stopped before it finished; it was not "
                    "retried. Send it again to retry."
                )
                await self._finish(prompt, "interrupted", reason)

    async def _serve(self) -> None:
        idle_timeout = self._ctx.settings.idle_seconds
        while True:
            await self._announce_new_prompts()
            prompt = await self._next_prompt()
            if prompt is not None:
                await self._run(prompt)
                continue
            await self._set_state("idle")
            message = await self._next_message_while_idle(idle_timeout)
            if message is None:
                self._exiting = True  # new work now goes to a new actor (the scan finds strays)
                await self._hibernate(idle_timeout)
                return
            await self._handle(message)

    async def _next_message_while_idle(self, idle: float) -> dict[str, Any] | None:
        """The next message, or None once nobody has prompted or watched for `idle` seconds."""
        wait = idle
        while True:
            try:
                return await asyncio.wait_for(self._mailbox.get(), wait)
            except TimeoutError:
                if not await watched(self._ctx.broker, self.session_id):
                    return None
                wait = idle / 4  # a viewer's presence outlives it by `idle`

    # ----- messages --------------------------------------------------------------------------

    async def _handle(self, message: dict[str, Any]) -> None:
        kind = message.get("kind")
        if kind == "stop":
            await self._stop(message.get("by") or "someone")
        elif kind == "cancel":
            await self._cancel(int(message["prompt_id"]), message.get("by") or "someone")
        elif kind == "wake":
            await self._announce_new_prompts()
        elif kind == "usage":
            self._record_usage(message["usage"])
        elif kind == "push":
            if self._running is not None:
                self._deferred.append(message)  # after the running prompt's commit
            else:
                await self._push(message)
        elif kind == "pr_opened":
            pull = {"url": message["url"], "number": message["number"], "by": message.get("by")}
            self._emit("pr_opened", pull)
            await self._flush()
        else:
            log.warning("session %s: unknown message %r ignored", self.session_id, message)

    async def _stop(self, by: str) -> None:
        # Every prompt is seen queued before it is seen cancelled, even one stored an instant
        # before the stop: followers (the Slack thread) learn of a prompt from its queueing.
        await self._announce_new_prompts()
        for prompt in await prompt_store.active(self._ctx.pool, self.session_id):
            if prompt.state == "queued":
                await self._finish(prompt, "cancelled", f"cancelled: {by} stopped the session")
        if self._running is not None and self._stop_reason is None:
            self._stop_reason = f"stopped by {by}"
            if self._sandbox is not None:
                await self._sandbox.abort()

    async def _cancel(self, prompt_id: int, by: str) -> None:
        await self._announce_new_prompts()
        prompt = await prompt_store.get(self._ctx.pool, prompt_id)
        if prompt is not None and prompt.session_id == self.session_id and prompt.state == "queued":
            await self._finish(prompt, "cancelled", f"cancelled by {by}")

    def _record_usage(self, usage: dict[str, Any]) -> None:
        """Model usage counted by the proxy: an event, and the session's running totals."""

        async def add(conn: asyncpg.Connection) -> None:
            await session_store.add_usage(
                conn,
                self.session_id,
                usage["input_tokens"],
                usage["output_tokens"],
                usage["cost_usd"],
            )

        prompt_id = self._running.id if self._running is not None else None
        self._emit("usage", usage, prompt_id=prompt_id, mutate=add)

    async def _push(self, message: dict[str, Any]) -> None:
        branch = session_branch(self.session_id)
        request = {"request_id": message["request_id"], "by": message.get("by"), "branch": branch}
        try:
            sandbox = await self._ensure_sandbox()
            commit = await sandbox.push(branch)
        except SandboxFailed as exc:
            outcome = ("push_failed", {**request, "reason": str(exc)})
        else:
            outcome = ("pushed", {**request, "commit": commit})
        finally:
            # The push's write token (if it got one) must not outlive it, whatever happened;
            # revoked before the outcome is logged, so whoever sees the outcome sees it void.
            if self._ctx.github is not None:
                await self._ctx.github.end_push(self.session_id)
        self._emit(*outcome)
        await self._flush()

    # ----- prompts ---------------------------------------------------------------------------

    async def _announce_new_prompts(self) -> None:
        """Log each newly queued prompt once, with its place in the queue."""
        rows = await self._ctx.pool.fetch(
            """SELECT * FROM prompts WHERE session_id = $1 AND state = 'queued'
               AND NOT announced ORDER BY id""",
            self.session_id,
        )
        if rows:
            # A prompt's text may hold a secret set just now. A failure fails the prompt
            # when it runs, saying why.
            with contextlib.suppress(OpenInspectError):
                await self._refresh_redactor()
        for row in rows:
            prompt = Prompt.from_row(row)
            position = await prompt_store.position(self._ctx.pool, prompt)

            async def mark(conn: asyncpg.Connection, prompt_id: int = prompt.id) -> None:
                await prompt_store.mark_announced(conn, prompt_id)

            self._emit(
                "prompt_queued",
                {
                    "author": {"id": prompt.author.id, "name": prompt.author.name},
                    "text": prompt.text,
                    "position": position,
                    "source_key": prompt.source_key,
                },
                prompt_id=prompt.id,
                mutate=mark,
            )
        if rows:
            await self._flush()

    async def _next_prompt(self) -> Prompt | None:
        for prompt in await prompt_store.active(self._ctx.pool, self.session_id):
            if prompt.state == "queued":
                return prompt
        return None

    async def _run(self, prompt: Prompt) -> None:
        self._running = prompt
        self._stop_reason = None
        await self._set_state("running")

        async def start(conn: asyncpg.Connection) -> None:
            await prompt_store.set_state(conn, prompt.id, "running")

        self._emit(
            "prompt_started", {"author": prompt.author.name}, prompt_id=prompt.id, mutate=start
        )
        drive = asyncio.create_task(self._drive(prompt))
        getter: asyncio.Task[dict[str, Any]] | None = None
        try:
            while not drive.done():
                getter = asyncio.create_task(self._mailbox.get())
                await asyncio.wait({drive, getter}, return_when=asyncio.FIRST_COMPLETED)
                if getter.done():
                    await self._handle(getter.result())
                getter = await _cancelled(getter)
            state, reason = drive.result()
        finally:
            await _cancelled(drive)
            await _cancelled(getter)
        await self._finish(prompt, state, reason)
        self._running = None
        while self._deferred:
            await self._handle(self._deferred.pop(0))

    async def _drive(self, prompt: Prompt) -> tuple[str, str | None]:
        """Run the prompt in the sandbox; the outcome as (state, reason)."""
        request = PromptRequest(prompt.id, prompt.text, prompt.author, prompt.context)
        try:
            await self._refresh_redactor()
        except OpenInspectError as exc:
            return "failed", f"The secrets could not be read, so the prompt did not run: {exc}"
        try:
            sandbox = await self._ensure_sandbox()
            if self._stop_reason:  # stopped while the sandbox was starting: nothing to abort
                return "stopped", self._stop_reason
            stop_sent = False
            deltas = _Deltas(self._redactor, prompt.id)
            try:
                async with asyncio.timeout(self._lifetime_left()):
                    async for event in sandbox.run(request):
                        deltas.append(self._emit, event)
                        if self._stop_reason and not stop_sent:
                            # A stop sent before the sandbox had the prompt found nothing to
                            # abort.
                            stop_sent = True
                            await sandbox.abort()
            finally:
                if self._log is not None and not self._log.fenced:
                    deltas.flush(self._emit)  # however the prompt ended: the text is kept
        except SandboxFailed as exc:
            if self._stop_reason:
                return "stopped", self._stop_reason
            if not isinstance(exc, AgentFailed):
                await self._drop_sandbox(str(exc))
            return "failed", str(exc)
        except TimeoutError:
            limit = self._ctx.settings.sandbox_max_lifetime_seconds
            reason = (
                f"The sandbox reached its maximum lifetime of {limit:g} s and was "
                "stopped; send the prompt again to go on in a new sandbox."
            )
            await self._drop_sandbox(reason)
            return "failed", reason
        except (Fenced, _SteppedDown):
            raise
        except Exception as exc:  # noqa: BLE001 - a bug must fail the prompt, visibly
            log.exception("%s prompt %s: unexpected error", self._log_context, prompt.id)
            await self._drop_sandbox(f"internal error: {exc!r}")
            return "failed", f"Internal error while running the prompt: {exc!r}"
        if self._stop_reason:
            return "stopped", self._stop_reason
        return "done", None

    def _lifetime_left(self) -> float:
        limit = self._ctx.settings.sandbox_max_lifetime_seconds
        return max(0.0, self._sandbox_started + limit - time.monotonic())

    async def _ensure_sandbox(self) -> Sandbox:
        if self._sandbox is not None and self._lifetime_left() <= 0:
            await self._drop_sandbox("it reached its maximum lifetime")
        if self._sandbox is None:
            if self._ctx.provider is None:
                raise SandboxFailed("No sandbox provider is configured on this engine.")
            self._ctx.breaker.check()
            await self._set_state("provisioning")
            info = await session_store.get(self._ctx.pool, self.session_id)
            sandbox = None
            try:
                options = SessionOptions(model=info.model, branch=info.branch)
                sandbox = await self._ctx.provider.create(self.session_id, info.repository, options)
                await sandbox.wait_ready()
            except SandboxFailed as exc:
                if not isinstance(exc, SandboxRefused):  # one session's mistake: not an outage
                    self._ctx.breaker.failed(str(exc))
                if sandbox is not None:
                    with contextlib.suppress(Exception):
                        await sandbox.close()
                raise
            self._ctx.breaker.succeeded()
            self._sandbox, self._sandbox_started = sandbox, time.monotonic()
            self._emit("sandbox_started", {"warm": sandbox.warm})
            await self._set_state("running")
        return self._sandbox

    async def _drop_sandbox(self, why: str) -> None:
        """A sandbox that failed is not trusted with the next prompt: it gets a new one."""
        sandbox, self._sandbox = self._sandbox, None
        if sandbox is not None:
            self._emit("sandbox_stopped", {"reason": why})
            with contextlib.suppress(Exception):
                await sandbox.close()

    async def _hibernate(self, idle: float) -> None:
        """Idle long enough: stop the sandbox, keep the workspace for the next prompt."""
        sandbox, self._sandbox = self._sandbox, None
        if sandbox is not None:
            with contextlib.suppress(Exception):
                await sandbox.close(hibernate=True)
            self._emit("sandbox_stopped", {"reason": f"idle for {idle:g} s", "hibernated": True})
        await self._set_state("hibernated")

    async def _shutdown_running(self, why: str) -> None:
        """On shutdown the running prompt is marked interrupted while we still own it."""
        prompt = self._running
        if prompt is None or self._log is None or self._log.fenced:
            return
        with contextlib.suppress(Exception):
            if self._sandbox is not None:
                await self._sandbox.abort()
            await self._finish(
                prompt, "interrupted", f"Interrupted: {why}. Send it again to retry."
            )

    async def _finish(self, prompt: Prompt, state: str, reason: str | None) -> None:
        reason = self._redactor.redact(reason) if reason else reason

        async def record(conn: asyncpg.Connection) -> None:
            await prompt_store.set_state(conn, prompt.id, state, reason)

        log.info(
            "%s prompt %s: %s%s",
            self._log_context,
            prompt.id,
            state,
            f" ({reason})" if reason else "",
        )
        self._emit(
            "prompt_finished",
            {"state": state, "reason": reason},
            prompt_id=prompt.id,
            mutate=record,
        )
        await self._flush()

    async def _set_state(self, state: str) -> None:
        if state == self._state:
            return
        self._state = state

        async def record(conn: asyncpg.Connection) -> None:
            await session_store.set_state(conn, self.session_id, state)

        self._emit("session_state", {"state": state}, mutate=record)
        await self._flush()

    # ----- the log ---------------------------------------------------------------------------

    def _emit(self, type: str, data: dict[str, Any], **kwargs: Any) -> asyncio.Future[Any]:
        assert self._log is not None
        if self._log.fenced:
            raise _SteppedDown("a newer owner holds this session")
        return self._log.append(type, self._redactor.redact_value(data), **kwargs)

    async def _refresh_redactor(self) -> None:
        """The redactor of the session's secrets as they are now (a cheap check when none
        changed)."""
        if self._ctx.secrets is not None:
            self._redactor = await self._ctx.secrets.redactor(self._repository)

    async def _flush(self) -> None:
        assert self._log is not None
        await self._log.flush()
        if self._log.fenced:
            raise _SteppedDown("a newer owner holds this session")
