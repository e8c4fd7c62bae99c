"""The engine API that the bot, the CLI and the web page use.

Work is stored first (so a crash loses nothing), then routed to the session's actor: on this
replica when it holds the session's lease, forwarded to the replica that does otherwise, or
started here when nobody does. A periodic scan adopts sessions whose owner died.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import re
import time
import uuid
from collections.abc import AsyncIterator, Callable
from datetime import datetime
from typing import Any

import asyncpg

from core import audit, classifier
from core.accounts import GitHubAccounts
from core.actors.session import ActorContext, SessionActor, lease_name
from core.broker import Broker, Subscription, SubscriptionLost
from core.config import OWNER_NAME, Settings, check_model
from core.crypto import Keyring
from core.errors import BadFields, BadInput, ConfigError, GitHubFailed, NotFound
from core.eventlog import follow
from core.github import on_host, pulls
from core.github.app import GitHubApp
from core.github.pulls import Proposal, PullRequest
from core.github.repositories import InstallationRepositories
from core.links import LinkRefused, LinkSigner
from core.models import (
    Author,
    Defaults,
    Event,
    PersonSessions,
    Prompt,
    SessionInfo,
    Submitted,
)
from core.proxy import ModelProxy
from core.sandboxes import SandboxProvider
from core.sandboxes.breaker import SpawnBreaker
from core.secrets import SecretStore
from core.store import defaults as defaults_store
from core.store import events as event_store
from core.store import outbox as outbox_store
from core.store import pending as pending_store
from core.store import prompts as prompt_store
from core.store import sandboxes as sandbox_store
from core.store import sessions as session_store
from core.store import settings as settings_store
from core.store.audit import Entry
from core.store.outbox import Letter
from core.viewers import Viewer, keep_present, watchers

log = logging.getLogger(__name__)

_KEY = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.:@/\-]{0,255}")
# Stricter than `git check-ref-format --branch`: path parts of letters, digits and _.+- that
# start with a letter, digit or _, so a name can never pass for an option or a revision range.
_BRANCH_PART = r"[A-Za-z0-9_][A-Za-z0-9_.+\-]*"
_BRANCH = re.compile(rf"{_BRANCH_PART}(?:/{_BRANCH_PART})*")
_MAX_HOPS = 3


def _check_branch(branch: str) -> None:
    valid = (
        isinstance(branch, str)
        and len(branch) <= 255
        and _BRANCH.fullmatch(branch) is not None
        and ".." not in branch
        and not branch.endswith(".")
        and not any(part.endswith(".lock") for part in branch.split("/"))
        and branch != "HEAD"
    )
    if not valid:
        raise BadInput(
            f"{branch!r} is not a branch name this accepts: use up to 255 letters, digits and "
            "_.+-/ in parts that start with a letter, digit or _, without '..' (e.g. "
            "release/2.0)."
        )


def _check_model(model: str) -> None:
    try:
        check_model(model)
    except ValueError as exc:
        raise BadInput(f"The model {exc}, e.g. anthropic:claude-sonnet-4-6.") from None


def _check_key(what: str, value: str) -> None:
    if not isinstance(value, str) or not _KEY.fullmatch(value):
        raise BadInput(
            f"The {what} {value!r} is malformed: use 1-256 letters, digits and _.:@/- "
            "starting with a letter or digit."
        )


class Engine:
    def __init__(
        self,
        pool: asyncpg.Pool,
        broker: Broker,
        settings: Settings,
        provider: SandboxProvider | None,
        replica: str | None = None,
    ) -> None:
        self.replica = replica or uuid.uuid4().hex[:12]
        self.settings = settings
        self._pool = pool
        self._broker = broker
        breaker = SpawnBreaker(
            settings.spawn_breaker_failures, settings.spawn_breaker_window_seconds
        )
        self._ctx = ActorContext(pool, broker, settings, provider, self.replica, breaker)
        self._actors: dict[str, SessionActor] = {}
        self._tasks: list[asyncio.Task[None]] = []
        self._inbox: Subscription | None = None
        self._closed = False
        self._links = LinkSigner(settings.link_secret) if settings.link_secret else None
        keyring = (
            Keyring.from_base64(settings.secrets_key, settings.secrets_old_keys)
            if settings.secrets_key
            else None
        )
        # People's GitHub accounts: their tokens are sealed, so there is none without the key.
        self.accounts = GitHubAccounts(pool, broker, settings, keyring) if keyring else None
        # Secrets for the agent's commands, sealed with the same key.
        self.secrets = SecretStore(pool, keyring)
        self._ctx.secrets = self.secrets
        # The GitHub App (None when not configured): scoped tokens for git, its repositories.
        self.github = GitHubApp.from_settings(settings, broker, keyring)
        self._ctx.github = self.github
        # Where people reach this deployment's pages; the runtime sets it once it listens.
        self.public_url = (settings.public_url or "").rstrip("/")

    # ----- lifecycle -------------------------------------------------------------------------

    async def start(self) -> None:
        # Refuses to start (ConfigError) when the secrets key cannot open what is stored.
        await self.secrets.check_key()
        self._inbox = await self._broker.inbox(self.replica)
        self._tasks = [
            asyncio.create_task(self._read_inbox(), name="engine:inbox"),
            asyncio.create_task(self._adopt_orphans_forever(), name="engine:orphans"),
        ]
        log.info("engine replica %s started", self.replica)

    async def close(self) -> None:
        """Stop every actor (a running prompt becomes interrupted) and release its lease.
        Closing again does nothing."""
        if self._closed:
            return
        self._closed = True
        for task in self._tasks:
            task.cancel()
        actors = list(self._actors.values())
        for actor in actors:
            actor.task.cancel()
        await asyncio.gather(*self._tasks, *(a.task for a in actors), return_exceptions=True)
        if self._ctx.provider is not None:
            await self._ctx.provider.close()
        if self._inbox is not None:
            await self._inbox.close()
        log.info("engine replica %s stopped", self.replica)

    # ----- the API ---------------------------------------------------------------------------

    async def submit_prompt(
        self,
        source_key: str,
        thread_key: str,
        author: Author,
        text: str,
        context: dict[str, Any] | None = None,
        repository: str | None = None,
        model: str | None = None,
        branch: str | None = None,
    ) -> Submitted:
        """Queue a prompt durably and have the session's owner run it. Idempotent on
        `source_key`: the same key again returns the first prompt and queues nothing.

        `repository`, `model` (`anthropic:<model>` or `openai:<model>`) and `branch` (cloned
        instead of the repository's default) only apply when this prompt starts the thread's
        session: a session keeps what it was created with. None means the deployment's
        default."""
        _check_key("source key", source_key)
        _check_key("thread key", thread_key)
        _check_key("author id", author.id)
        if not author.name or not author.name.strip():
            raise BadInput("The prompt has no author name.")
        if repository is not None and not OWNER_NAME.fullmatch(repository):
            raise BadInput(f"{repository!r} is not a repository name of the form owner/name.")
        if model is not None:
            _check_model(model)
        if branch is not None:
            _check_branch(branch)
        text = (text or "").strip()
        if not text:
            raise BadInput("The prompt is empty: say what you would like done.")
        size, limit = len(text.encode()), self.settings.max_prompt_bytes
        if size > limit:
            raise BadInput(
                f"The prompt is {size / 1024:.1f} KiB; the limit is {limit / 1024:.0f} KiB. "
                "Put long material in a file in the repository and refer to it."
            )
        try:
            json.dumps(context or {})
        except (TypeError, ValueError) as exc:
            raise BadInput(f"The prompt's context is not JSON: {exc}") from None

        existing = await prompt_store.by_source_key(self._pool, source_key)
        if existing is not None:
            return await self._receipt(existing, created=False)
        # A secret pasted into a prompt is stored, shown and given to the model as its name.
        # (Read before the transaction: inside it, a second connection could starve the pool.)
        redactor = await self.secrets.redactor(await self._repository_of(thread_key, repository))
        text = redactor.redact(text)
        async with self._pool.acquire() as conn, conn.transaction():
            session_id, started = await session_store.find_or_create(
                conn, thread_key, repository, author, model, branch
            )
            await session_store.remember_user(conn, author)
            await session_store.add_participant(conn, session_id, author.id)
            prompt, created = await prompt_store.insert(
                conn, session_id, source_key, author, text, context or {}
            )
            if started:
                details = {"repository": repository, "thread": thread_key}
                await audit.record(conn, author.id, "session.start", session_id, details)
            if created:
                details = {"session": session_id, "source": source_key}
                await audit.record(conn, author.id, "prompt.submit", str(prompt.id), details)
        if created:
            await self._deliver(session_id, {"kind": "wake"})
        return await self._receipt(prompt, created)

    async def _repository_of(self, thread_key: str, asked: str | None) -> str | None:
        """The repository of the thread's session, or the one asked for a new session."""
        session_id = await session_store.by_thread(self._pool, thread_key)
        if session_id is None:
            return asked
        return await self._pool.fetchval(
            "SELECT repository FROM sessions WHERE id = $1", session_id
        )

    async def stop(self, session_id: str, by: str) -> None:
        """Stop the running prompt and cancel the queue; the session stays open."""
        await self.session(session_id)
        await self._deliver(session_id, {"kind": "stop", "by": by})

    async def cancel_prompt(self, prompt_id: int, by: str) -> None:
        """Cancel one queued prompt (a running one is stopped with `stop`)."""
        prompt = await prompt_store.get(self._pool, prompt_id)
        if prompt is None:
            raise NotFound(f"There is no prompt {prompt_id}.")
        if prompt.state != "queued":
            raise BadInput(f"Prompt {prompt_id} is {prompt.state}, not queued: nothing to cancel.")
        await self._deliver(prompt.session_id, {"kind": "cancel", "prompt_id": prompt_id, "by": by})

    async def push(self, session_id: str, by: str, timeout: float = 300.0) -> Event:
        """Have the session's sandbox push its work to `open-inspect/<session>`; returns the
        `pushed` or `push_failed` event."""
        info = await self.session(session_id)
        request_id = uuid.uuid4().hex[:12]
        await self._deliver(session_id, {"kind": "push", "request_id": request_id, "by": by})
        async with asyncio.timeout(timeout):
            async for event in follow(self._pool, self._broker, session_id, info.last_seq):
                if (
                    event.type in ("pushed", "push_failed")
                    and event.data.get("request_id") == request_id
                ):
                    return event
        raise AssertionError("unreachable: follow() never ends")

    def use_provider(self, provider: SandboxProvider) -> None:
        """Set the sandbox provider (it may need the engine's HTTP address, known later)."""
        self._ctx.provider = provider

    # ----- the model proxy's authority -------------------------------------------------------

    async def authorize(self, token: str) -> str | None:
        found = await sandbox_store.authenticate(self._pool, token)
        return found[1] if found else None

    async def spend_left(self, session_id: str) -> float | None:
        limit = self.settings.session_spend_limit_usd
        if limit is None:
            return None
        return limit - await session_store.spent(self._pool, session_id)

    async def record_usage(self, session_id: str, usage: Any) -> None:
        await self._deliver(session_id, {"kind": "usage", "usage": dataclasses.asdict(usage)})

    async def session(self, session_id: str) -> SessionInfo:
        _check_key("session id", session_id)
        return await session_store.get(self._pool, session_id)

    async def session_for_thread(self, thread_key: str) -> str | None:
        _check_key("thread key", thread_key)
        return await session_store.by_thread(self._pool, thread_key)

    async def prompt(self, prompt_id: int) -> Prompt:
        prompt = await prompt_store.get(self._pool, prompt_id)
        if prompt is None:
            raise NotFound(f"There is no prompt {prompt_id}.")
        return prompt

    async def subscribe(
        self, session_id: str, after_seq: int = 0, viewer: Viewer | None = None
    ) -> AsyncIterator[Event]:
        """The session's events after `after_seq`, then live ones: no gap, no duplicate. While
        a `viewer` (a person) follows, they are among the session's watchers and it does not
        hibernate; a follower that is not a person (the Slack renderer) passes None."""
        await self.session(session_id)
        presence = None
        if viewer is not None:
            presence = asyncio.create_task(
                keep_present(self._broker, session_id, viewer, self.settings.idle_seconds)
            )
        try:
            async for event in follow(self._pool, self._broker, session_id, after_seq):
                yield event
        finally:
            if presence is not None:
                presence.cancel()

    async def history(
        self, session_id: str, before_seq: int | None = None, limit: int = 1000
    ) -> list[Event]:
        """The last `limit` events before `before_seq` (the newest ones when None), in order."""
        return await event_store.read_before(self._pool, session_id, before_seq, limit)

    async def trailing_run(
        self, session_id: str, at_seq: int, run_type: str, breakers: tuple[str, ...]
    ) -> list[Event]:
        """See `core.store.events.trailing_run`: e.g. the text still being written at a seq."""
        return await event_store.trailing_run(self._pool, session_id, at_seq, run_type, breakers)

    async def latest_of_types(
        self, session_id: str, types: tuple[str, ...], before_seq: int | None = None
    ) -> list[Event]:
        """The newest event of each of `types` (before `before_seq`), in seq order."""
        return await event_store.latest_of_types(self._pool, session_id, types, before_seq)

    async def watchers(self, session_id: str) -> list[Viewer]:
        """Who follows the session now (its page, a terminal)."""
        return await watchers(self._broker, session_id)

    async def active_prompts(self, session_id: str) -> list[Prompt]:
        """The running and queued prompts, oldest first."""
        return await prompt_store.active(self._pool, session_id)

    async def join(self, session_id: str, person: Author, role: str = "watcher") -> None:
        """Add a person to the session's participants (a watcher: they follow it, e.g. by
        reacting to its thread); an author stays an author."""
        async with self._pool.acquire() as conn, conn.transaction():
            await session_store.remember_user(conn, person)
            await session_store.add_participant(conn, session_id, person.id, role)

    async def leave(self, session_id: str, person_id: str) -> None:
        """A watcher stops watching; authors stay participants."""
        await session_store.remove_watcher(self._pool, session_id, person_id)

    async def thread_of(self, session_id: str) -> str | None:
        """The thread key a session was started from."""
        return await session_store.thread_of(self._pool, session_id)

    async def threads_with_work(self, prefix: str) -> list[tuple[str, str]]:
        """(session id, thread key) of sessions with queued or running prompts whose thread
        key starts with `prefix`: what a restarted front door must follow again."""
        return await session_store.threads_with_work(self._pool, prefix)

    async def hold_request(self, key: str, data: dict[str, Any]) -> None:
        """Keep a request that cannot start yet (it needs a repository) under `key`."""
        _check_key("request key", key)
        await pending_store.hold(self._pool, key, data)

    async def take_request(self, key: str) -> dict[str, Any] | None:
        """The held request, once: a second taker (a double click, another replica) gets
        None."""
        return await pending_store.take(self._pool, key)

    # ----- messages that must reach people exactly once --------------------------------------

    async def outbox_put(
        self, key: str, destination: str, session_id: str | None, body: dict[str, Any]
    ) -> bool:
        """Keep a message for `destination` (e.g. a thread key) until it is sent; False when
        `key` is there already (whoever wrote it first decided its content)."""
        _check_key("outbox key", key)
        return await outbox_store.put(self._pool, key, destination, session_id, body)

    async def outbox_claim(self, prefix: str, seconds: float, limit: int = 20) -> list[Letter]:
        """Unsent messages for destinations starting with `prefix`, held by this replica for
        `seconds`; a holder that dies lets them go when that time is up."""
        return await outbox_store.claim(self._pool, prefix, self.replica, seconds, limit)

    async def ask_to_confirm_github(
        self, team: str, person_id: str, login: str, attempt: str
    ) -> None:
        """Ask the person, in their own conversation with the bot, whether the GitHub account
        `login` that was just authorized is theirs (a front door renders the question)."""
        body = {"kind": "confirm_github", "person": person_id, "login": login, "team": team}
        key = f"confirm-github:{person_id}:{attempt}"
        await self.outbox_put(key, f"{person_id}:", None, body)

    async def outbox_sent(self, key: str, ref: str | None) -> None:
        await outbox_store.sent(self._pool, key, ref)

    async def outbox_retry_later(self, key: str, seconds: float) -> None:
        await outbox_store.retry_later(self._pool, key, seconds)

    async def unreported_prompts(
        self,
        source_prefix: str,
        key_prefix: str,
        states: tuple[str, ...],
        settled: float,
        within: float,
    ) -> list[Prompt]:
        """Prompts from `source_prefix` that ended in `states` (`settled`..`within` seconds
        ago) with no outbox message `<key_prefix><id>`: their report was never written."""
        return await outbox_store.unreported(
            self._pool, source_prefix, key_prefix, states, settled, within
        )

    async def prompt_events(
        self, session_id: str, prompt_id: int, types: tuple[str, ...]
    ) -> list[Event]:
        return await event_store.of_prompt(self._pool, session_id, prompt_id, types)

    # ----- settings changed at run time ------------------------------------------------------

    async def setting(self, name: str) -> Any:
        return await settings_store.get(self._pool, name)

    async def settings_all(self) -> dict[str, Any]:
        return await settings_store.all_settings(self._pool)

    async def set_setting(self, name: str, value: Any, by: str) -> None:
        """Set (or with None, remove) a run-time setting."""
        await self.update_setting(name, lambda _: value, by)

    async def update_setting(self, name: str, change: Callable[[Any], Any], by: str) -> Any:
        """Set a run-time setting to `change(its current value)` (None removes it), one change
        to a setting at a time: two admins adding a rule at once both keep theirs."""
        async with self._pool.acquire() as conn, conn.transaction():
            # A lock on the name, since there may be no row yet to lock.
            await conn.execute("SELECT pg_advisory_xact_lock(hashtext($1))", f"setting:{name}")
            value = change(await settings_store.get(conn, name))
            if value is None:
                await settings_store.delete(conn, name)
                await audit.record(conn, by, "setting.delete", name)
            else:
                await settings_store.put(conn, name, value, by)
                await audit.record(conn, by, "setting.set", name)
        log.info("setting %s changed by %s", name, by)
        return value

    # ----- the audit log ---------------------------------------------------------------------

    async def audit_log(self, since: datetime | None = None, limit: int = 100) -> list[Entry]:
        """The newest `limit` audit entries (at or after `since`), oldest first."""
        return await audit.entries(self._pool, since, limit)

    # ----- links to the session page ---------------------------------------------------------

    def _signer(self) -> LinkSigner:
        if self._links is None:
            raise ConfigError("OPEN_INSPECT_LINK_SECRET is not set: session links cannot be made.")
        return self._links

    async def page_link(self, session_id: str, ttl: float | None = None) -> str:
        """A signed link to the session's read-only page, valid for `ttl` seconds (the
        configured default when None) or until the session's links are revoked."""
        info = await self.session(session_id)
        seconds = self.settings.link_ttl_seconds if ttl is None else ttl
        token = self._signer().sign(session_id, info.link_generation, int(time.time() + seconds))
        return f"{self.public_url}/s/{token}"

    async def revoke_links(self, session_id: str, by: str) -> None:
        """Void every link to the session issued so far; new ones can still be made."""
        await self.session(session_id)
        generation = await session_store.revoke_links(self._pool, session_id)
        log.info("session %s: links revoked by %s (generation %d)", session_id, by, generation)

    async def open_link(self, token: str) -> SessionInfo:
        """The session a page link grants, or LinkRefused (forged, expired, revoked)."""
        claim = self._signer().verify(token)
        try:
            info = await self.session(claim.session_id)
        except NotFound:
            raise LinkRefused("forged", "This link is not valid.") from None
        if info.link_generation != claim.generation:
            raise LinkRefused(
                "revoked",
                "This link was revoked. Ask in the session's thread for a new one.",
            )
        return info

    # ----- routing ---------------------------------------------------------------------------

    async def _receipt(self, prompt: Prompt, created: bool) -> Submitted:
        position = await prompt_store.position(self._pool, prompt)
        return Submitted(prompt.session_id, prompt.id, created, position)

    async def _deliver(self, session_id: str, message: dict[str, Any], hops: int = 0) -> None:
        """Hand `message` to the session's actor, wherever it lives; start one if none does."""
        for _ in range(5):
            actor = self._actors.get(session_id)
            if actor is not None:
                if actor.accepting:
                    actor.tell(message)
                    return
                await asyncio.gather(actor.task, return_exceptions=True)
                continue
            ttl = self.settings.lease_ttl_seconds
            lease = await self._broker.acquire_lease(lease_name(session_id), self.replica, ttl)
            if lease is not None:
                self._start_actor(session_id, lease).tell(message)
                return
            holder = await self._broker.lease_holder(lease_name(session_id))
            if holder is not None and holder.holder != self.replica:
                if hops >= _MAX_HOPS:
                    log.warning(
                        "session %s: message %r dropped after %d hops; the orphan scan "
                        "will pick the session up",
                        session_id,
                        message,
                        hops,
                    )
                    return
                payload = {"session_id": session_id, "message": message, "hops": hops + 1}
                await self._broker.forward(holder.holder, json.dumps(payload).encode())
                return
        log.warning(
            "session %s: could not route %r; the orphan scan will retry", session_id, message
        )

    def _start_actor(self, session_id: str, lease: Any) -> SessionActor:
        actor = SessionActor(self._ctx, session_id, lease, self._forget)
        self._actors[session_id] = actor
        return actor

    def _forget(self, actor: SessionActor) -> None:
        if self._actors.get(actor.session_id) is actor:
            del self._actors[actor.session_id]

    async def _read_inbox(self) -> None:
        """Forwarded work for this replica. A lost feed is resubscribed; whatever it dropped is
        found by the periodic scan, which also wakes this replica's own actors."""
        while True:
            try:
                if self._inbox is None:
                    self._inbox = await self._broker.inbox(self.replica)
                async for raw in self._inbox:
                    await self._handle_forwarded(raw)
                return
            except SubscriptionLost:
                log.warning("engine %s: inbox lost; resubscribing", self.replica)
            except Exception:  # noqa: BLE001 - the broker is down: retry until it is back
                log.exception("engine %s: inbox failed; retrying", self.replica)
                await asyncio.sleep(1)
            inbox, self._inbox = self._inbox, None
            if inbox is not None:
                await inbox.close()

    async def _handle_forwarded(self, raw: bytes) -> None:
        try:
            payload = json.loads(raw)
            await self._deliver(payload["session_id"], payload["message"], payload["hops"])
        except Exception:  # noqa: BLE001 - one bad message must not stop the inbox
            log.exception("engine %s: bad forwarded message %r", self.replica, raw[:200])

    async def _adopt_orphans_forever(self) -> None:
        while True:
            try:
                await self.adopt_orphans()
            except Exception:  # noqa: BLE001 - retried on the next scan
                log.exception("engine %s: orphan scan failed", self.replica)
            await asyncio.sleep(self.settings.orphan_scan_seconds)

    async def adopt_orphans(self) -> list[str]:
        """Take over sessions with queued or running prompts whose owner is gone, and nudge
        this replica's own actors that have work."""
        adopted = []
        for session_id in await prompt_store.sessions_with_work(self._pool):
            if (actor := self._actors.get(session_id)) is not None:
                if actor.accepting:
                    actor.tell({"kind": "wake"})  # in case a forwarded wake was lost
                continue
            if await self._broker.lease_holder(lease_name(session_id)) is not None:
                continue
            lease = await self._broker.acquire_lease(
                lease_name(session_id), self.replica, self.settings.lease_ttl_seconds
            )
            if lease is not None:
                log.info("session %s: adopted by replica %s", session_id, self.replica)
                self._start_actor(session_id, lease).tell({"kind": "wake"})
                adopted.append(session_id)
        return adopted

    # ----- proposing a repository ------------------------------------------------------------

    # The runtime hands the proxy over once the HTTP app exists; an engine without one (no HTTP
    # server) proposes nothing.
    _model_proxy: ModelProxy | None = None

    def use_model_proxy(self, proxy: ModelProxy) -> None:
        """Make the engine's own model calls through the model proxy's upstreams."""
        self._model_proxy = proxy

    async def propose_repository(self, text: str) -> str | None:
        """Which configured repository a request that names none is probably about, asked of
        the model when OPEN_INSPECT_REPOSITORY_CLASSIFIER is on. None when it is off, unsure
        or failing: never an exception, since the person is asked to pick either way."""
        settings = self.settings
        if not settings.repository_classifier or not (known := await self.repositories()):
            return None
        model = settings.classifier_model or settings.model
        assert model is not None, "Settings gives the deployment a model"
        return await classifier.propose(
            self._model_proxy, model, settings.classifier_timeout_seconds, known, text
        )

    # ----- a person's sessions and defaults ---------------------------------------------------

    async def sessions_of(self, person_id: str, limit: int) -> PersonSessions:
        """The sessions a person (`slack:<team>:<user>`) takes part in: at most `limit` with a
        running or queued prompt, then at most `limit` others, each the most recently active
        first; with the person's totals."""
        _check_key("person id", person_id)
        if limit < 1:
            raise BadInput(f"Ask for at least one session, not {limit}.")
        return await session_store.of_person(self._pool, person_id, limit)

    async def defaults_of(self, person_id: str) -> Defaults:
        """What the person's next sessions start with when their request says nothing else."""
        _check_key("person id", person_id)
        return await defaults_store.get(self._pool, person_id)

    async def set_defaults(
        self,
        person_id: str,
        repository: str | None,
        model: str | None,
        branch: str | None,
    ) -> Defaults:
        """Set what the person's next sessions start with; None or blank is the deployment's
        default. Every value is checked first, by the rules a prompt's own choice meets: on
        BadFields (naming each wrong field) nothing is stored."""
        _check_key("person id", person_id)
        repository, model, branch = (_blank_is_none(v) for v in (repository, model, branch))
        problems: dict[str, str] = {}
        if repository is not None:
            known = {name.lower(): name for name in await self.repositories()}
            if repository.lower() in known:
                repository = known[repository.lower()]  # as configured, whatever the case
            else:
                problems["repository"] = (
                    f"{repository!r} is not one of this deployment's repositories "
                    "(OPEN_INSPECT_REPOSITORIES, or the GitHub App's)."
                )
        for field, value, check in (
            ("model", model, _check_model),
            ("branch", branch, _check_branch),
        ):
            if value is not None:
                try:
                    check(value)
                except BadInput as exc:
                    problems[field] = str(exc)
        if problems:
            raise BadFields(problems)
        defaults = Defaults(repository, model, branch)
        await defaults_store.put(self._pool, person_id, defaults)
        log.info("defaults of %s set: %s", person_id, defaults)
        return defaults

    async def github_login_of(self, person_id: str) -> str | None:
        """The GitHub account the person linked, if any."""
        _check_key("person id", person_id)
        account = await self.accounts.linked(person_id) if self.accounts else None
        return account.login if account else None

    # ----- GitHub ----------------------------------------------------------------------------

    _repositories: InstallationRepositories | None = None

    def _github_app(self) -> GitHubApp:
        if self.github is None:
            raise ConfigError(
                "The GitHub App is not configured: set GITHUB_APP_ID, GITHUB_APP_PRIVATE_KEY "
                "(or _PATH) and GITHUB_APP_INSTALLATION_ID."
            )
        return self.github

    async def repositories(self) -> list[str]:
        """Every repository sessions may work in, sorted: OPEN_INSPECT_REPOSITORIES and, with
        a GitHub App, every repository its installation reaches (`github_repositories`). When
        GitHub cannot be asked, the configured ones, and a warning in the log."""
        configured = set(self.settings.repository_urls)
        if self.github is None:
            return sorted(configured)
        try:
            listed = await self.github_repositories()
        except GitHubFailed as exc:
            log.warning("the GitHub App's repositories could not be listed: %s", exc)
            listed = []
        return sorted(configured.union(listed))

    async def github_repositories(self) -> list[str]:
        """`owner/name` of every repository the App's installation reaches, from the broker's
        cache (OPEN_INSPECT_GITHUB_REPOSITORIES_TTL_SECONDS), listed by one replica when it
        is empty."""
        if self._repositories is None:
            self._repositories = InstallationRepositories(
                self._github_app(), self._broker, self.replica
            )
        return await self._repositories.names()

    async def open_pull_request(
        self, session_id: str, by: Author, user_token: str, thread_link: str | None
    ) -> PullRequest:
        """Push the session's work (after the running prompt), then open its pull request with
        `by`'s own GitHub token, or find the open one and say it was updated (`created`
        False). The page and the thread learn of it through a `pr_opened` event."""
        info = await self.session(session_id)
        repository = info.repository or ""
        url = self.settings.repository_url(repository)
        if url is None or not on_host(url, self.settings.github_web_url):
            raise BadInput(
                f"This session's repository ({info.repository or 'none'}) is not on "
                f"{self.settings.github_web_url}, so there is no pull request to open."
            )
        if not user_token:
            raise BadInput("Link your GitHub account first: pull requests are opened as you.")
        pushed = await self.push(session_id, by.name)
        if pushed.type != "pushed":
            raise GitHubFailed(
                "The work could not be pushed, so no pull request was opened: "
                f"{pushed.data.get('reason') or 'unknown reason'}"
            )
        branch, commit = str(pushed.data["branch"]), str(pushed.data.get("commit") or "")
        pull = await pulls.open_or_update(
            self.settings,
            user_token,
            Proposal(
                repository=repository,
                head=branch,
                base=info.branch,
                title=await self._pull_title(session_id),
                body=await self._pull_body(info, by, thread_link),
                update_note=f"Updated by Open-Inspect for {by.name}: {branch} is now at "
                f"{commit[:12]}.",
            ),
        )
        log.info(
            "session %s: pull request %s %s by %s",
            session_id,
            pull.url,
            "opened" if pull.created else "updated",
            by.id,
        )
        details = {"session": session_id, "number": pull.number, "url": pull.url,
                   "branch": branch, "created": pull.created}  # fmt: skip
        await audit.record(self._pool, by.id, "pull_request.open", repository, details)
        await self._log_pull_request(session_id, pull, by)
        return pull

    async def _pull_title(self, session_id: str) -> str:
        first = await prompt_store.first(self._pool, session_id)
        return pulls.title_from(first.text if first else "")

    async def _pull_body(self, info: SessionInfo, by: Author, thread_link: str | None) -> str:
        lines = [f"Opened with Open-Inspect by {by.name}.", ""]
        try:
            lines.append(f"- Session: {await self.page_link(info.id)}")
        except ConfigError:
            pass  # no link secret: no page to point at
        if thread_link:
            lines.append(f"- Slack thread: {thread_link}")
        authors = ", ".join(info.participant_names) or by.name
        lines.append(f"- Prompts by: {authors}")
        return "\n".join(lines) + "\n"

    async def _log_pull_request(self, session_id: str, pull: PullRequest, by: Author) -> None:
        """A `pr_opened` event, unless the log has this pull request already; written by the
        session's actor (the log's only writer), waited for so that a card rendered next
        shows it."""
        logged = await self.latest_of_types(session_id, ("pr_opened",))
        if logged and logged[0].data.get("url") == pull.url:
            return
        after = (await self.session(session_id)).last_seq
        message = {"kind": "pr_opened", "url": pull.url, "number": pull.number, "by": by.name}
        await self._deliver(session_id, message)
        try:
            async with asyncio.timeout(self.settings.github_timeout_seconds):
                async for event in follow(self._pool, self._broker, session_id, after):
                    if event.type == "pr_opened" and event.data.get("url") == pull.url:
                        return
        except TimeoutError:
            log.warning("session %s: pr_opened for %s not logged yet", session_id, pull.url)


def _blank_is_none(value: str | None) -> str | None:
    return (value or "").strip() or None
