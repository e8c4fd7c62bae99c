"""Secrets for the agent's commands: named values, global or for one repository, sealed at
rest with AES-256-GCM under the deployment's secrets key.

A sandbox gets the values that apply to its session's repository (the global ones, overridden
by the repository's own) as environment variables of setup.sh and the agent's commands; both
the sandbox and core redact them from everything the agent reports (`core.redaction`). Every
change is in the audit log (`core.audit`), by name: a value never leaves this module except
through `values_for`, and is never logged.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime

import asyncpg

from core import audit
from core.config import OWNER_NAME
from core.crypto import CURRENT_KEY_VARIABLE, OLD_KEYS_VARIABLE, Keyring, Sealed
from core.errors import BadInput, ConfigError, CryptoError
from core.redaction import Redactor
from core.store import accounts as account_store
from core.store import secrets as store

log = logging.getLogger(__name__)

NAME = re.compile(r"[A-Z_][A-Z0-9_]*")
MAX_NAME_CHARS = 128
MAX_VALUE_BYTES = 32 * 1024
# What the sandbox and the programs it runs rely on: a secret must not replace them.
RESERVED_NAMES = frozenset(
    {"PATH", "HOME", "USER", "LOGNAME", "SHELL", "PWD", "OLDPWD", "LANG", "LANGUAGE", "TZ",
     "TERM", "TMPDIR", "IFS", "ENV", "BASH_ENV", "SHLVL", "HOSTNAME", "PS4", "PROMPT_COMMAND"}
)  # fmt: skip
RESERVED_PREFIXES = ("OPEN_INSPECT_", "GIT_", "LC_", "LD_", "XDG_", "OPENCODE_", "BASH_FUNC_")

_NO_KEY = (
    f"No secrets key is configured: set {CURRENT_KEY_VARIABLE} to a key made with "
    "`open-inspect keygen` (the same on every replica)."
)


@dataclass(frozen=True)
class SecretInfo:
    """What is known of a secret without its value."""

    name: str
    repository: str | None  # None: every repository
    updated_at: datetime
    updated_by: str


def check_name(name: str) -> None:
    if not isinstance(name, str) or not NAME.fullmatch(name) or len(name) > MAX_NAME_CHARS:
        raise BadInput(
            f"{name!r} is not a secret name: use an environment variable name of capital "
            f"letters, digits and _ (not starting with a digit, at most {MAX_NAME_CHARS} "
            "characters), e.g. NPM_TOKEN."
        )
    if name in RESERVED_NAMES or name.startswith(RESERVED_PREFIXES):
        raise BadInput(
            f"{name} is used by the sandbox itself (as are {', '.join(sorted(RESERVED_NAMES))} "
            f"and names starting with {', '.join(RESERVED_PREFIXES)}): choose another name."
        )


def check_repository(repository: str | None) -> None:
    if repository is not None and (
        not isinstance(repository, str)
        or not OWNER_NAME.fullmatch(repository)
        or len(repository) > 200
    ):
        raise BadInput(f"{repository!r} is not a repository name of the form owner/name.")


def check_value(name: str, value: str) -> None:
    # Messages say what is wrong with a value, never what it is.
    if not isinstance(value, str) or not value.strip():
        raise BadInput(f"The value of {name} is empty: nothing was stored.")
    if "\0" in value:
        raise BadInput(f"The value of {name} contains a NUL byte, which no variable can hold.")
    size = len(value.encode("utf-8", "surrogatepass"))
    if size > MAX_VALUE_BYTES:
        raise BadInput(
            f"The value of {name} is {size / 1024:.1f} KiB; the limit is "
            f"{MAX_VALUE_BYTES // 1024} KiB."
        )


def sandbox_stdin_line(values: Mapping[str, str]) -> bytes:
    """How a sandbox receives its secrets: the second line of its stdin, after the bridge
    token, one JSON object {NAME: value} (JSON escapes newlines, so it is one line)."""
    return json.dumps(dict(values), ensure_ascii=True, separators=(",", ":")).encode() + b"\n"


def _context(name: str, repository: str | None) -> bytes:
    # Binds a ciphertext to its scope and name: copied to another row, it does not decrypt.
    return f"secret\0{(repository or '').lower()}\0{name}".encode()


def _scope(repository: str | None) -> str:
    return repository or "every repository"


class SecretStore:
    def __init__(self, pool: asyncpg.Pool, keyring: Keyring | None) -> None:
        self._pool = pool
        self._keyring = keyring
        # Per repository (lower case): (generation, redactor), so that each prompt of every
        # session checks for changes with one small read.
        self._redactors: dict[str, tuple[int, Redactor]] = {}
        self._shapes_only = Redactor({})

    def __repr__(self) -> str:
        return f"SecretStore(keyring={self._keyring!r})"

    @property
    def usable(self) -> bool:
        """A secrets key is configured: secrets can be set and read."""
        return self._keyring is not None

    def _need_keyring(self) -> Keyring:
        if self._keyring is None:
            raise ConfigError(_NO_KEY)
        return self._keyring

    # ----- changes -------------------------------------------------------------------------

    async def set(self, name: str, value: str, repository: str | None, by: str) -> None:
        """Store (or replace) the secret `name` for `repository` (None: every repository)."""
        check_name(name)
        check_repository(repository)
        check_value(name, value)
        sealed = self._need_keyring().encrypt(value.encode(), _context(name, repository))
        async with self._pool.acquire() as conn, conn.transaction():
            await store.put(conn, name, repository, sealed, by)
            await store.bump_generation(conn)
            await audit.record(conn, by, "secret.set", name, {"repository": repository})
        log.info("secret %s set for %s by %s", name, _scope(repository), by)

    async def delete(self, name: str, repository: str | None, by: str) -> bool:
        """Remove the secret; False when there was none of that name in that scope."""
        check_name(name)
        check_repository(repository)
        async with self._pool.acquire() as conn, conn.transaction():
            removed = await store.delete(conn, name, repository)
            if removed:
                await store.bump_generation(conn)
                await audit.record(conn, by, "secret.delete", name, {"repository": repository})
        if removed:
            log.info("secret %s of %s deleted by %s", name, _scope(repository), by)
        return removed

    # ----- reading -------------------------------------------------------------------------

    async def list(
        self, repository: str | None = None, *, all_scopes: bool = True
    ) -> list[SecretInfo]:
        """Secrets without their values. With `all_scopes`: every secret when `repository` is
        None, else those a session in `repository` gets (the global ones and its own). Without:
        exactly the scope asked for (None: the global ones)."""
        check_repository(repository)
        if all_scopes and repository is None:
            rows = await store.every(self._pool)
        elif all_scopes:
            rows = await store.applying_to(self._pool, repository)
        else:
            rows = await store.of_scope(self._pool, repository)
        return [SecretInfo(r.name, r.repository, r.updated_at, r.updated_by) for r in rows]

    async def values_for(self, repository: str | None) -> dict[str, str]:
        """name → value of what a session in `repository` gets: the global secrets, each
        replaced by the repository's own of the same name. A session whose repository is no
        owner/name (a local path) gets the global ones."""
        keyring = self._need_keyring()
        if repository is not None and not OWNER_NAME.fullmatch(repository):
            repository = None
        values: dict[str, str] = {}
        for row in await store.applying_to(self._pool, repository):  # globals first
            values[row.name] = self._open(keyring, row.name, row.repository, row.sealed)
        return values

    async def redactor(self, repository: str | None) -> Redactor:
        """A redactor of the values `values_for(repository)` gives, rebuilt only when a secret
        changed since it was made. Without a key, one of the credential shapes alone (the
        engine does not start without a key when secrets are stored)."""
        if self._keyring is None:
            return self._shapes_only
        generation = await store.generation(self._pool)
        key = (repository or "").lower()
        cached = self._redactors.get(key)
        if cached is not None and cached[0] == generation:
            return cached[1]
        redactor = Redactor(await self.values_for(repository))
        self._redactors[key] = (generation, redactor)
        return redactor

    @staticmethod
    def _open(keyring: Keyring, name: str, repository: str | None, sealed: Sealed) -> str:
        try:
            return keyring.decrypt(sealed, _context(name, repository)).decode()
        except CryptoError as exc:
            raise CryptoError(f"The secret {name} of {_scope(repository)}: {exc}") from None

    # ----- keys ----------------------------------------------------------------------------

    async def rotate_key(self, by: str) -> int:
        """Re-seal under the current key every secret and every linked GitHub account's tokens
        that an old key sealed, in one transaction; returns how many were re-sealed. Once it
        has run, the old keys can be dropped from OPEN_INSPECT_SECRETS_OLD_KEYS."""
        keyring = self._need_keyring()
        async with self._pool.acquire() as conn, conn.transaction():
            secrets = 0
            for row in await store.every(conn, for_update=True):
                if keyring.needs_rotation(row.sealed):
                    what = f"The secret {row.name} of {_scope(row.repository)}"
                    context = _context(row.name, row.repository)
                    sealed = _resealed(keyring, row.sealed, context, what)
                    await store.reseal(conn, row.name, row.repository, sealed)
                    secrets += 1
            accounts = 0
            for account in await account_store.sealed_tokens(conn, for_update=True):
                if keyring.needs_rotation(account.access_token):
                    what = f"The GitHub account of {account.person_id}"
                    context = account.person_id.encode()
                    access = _resealed(keyring, account.access_token, context, what)
                    refresh = account.refresh_token
                    if refresh is not None:
                        refresh = _resealed(keyring, refresh, context, what)
                    await account_store.reseal(conn, account.person_id, access, refresh)
                    accounts += 1
            details = {"key_id": keyring.current_key_id, "secrets": secrets, "accounts": accounts}
            await audit.record(conn, by, "secrets.rotate_key", "", details)
        log.info(
            "%d secrets and %d GitHub accounts re-sealed under key %s by %s",
            secrets,
            accounts,
            keyring.current_key_id,
            by,
        )
        return secrets + accounts

    async def check_key(self) -> None:
        """ConfigError unless every stored ciphertext (secrets, GitHub account tokens) was
        sealed with a configured key: an engine with the wrong key must not start."""
        secrets = await store.key_ids(self._pool)
        accounts = await account_store.key_ids(self._pool)
        if not secrets and not accounts:
            return
        keyring = self._keyring
        if keyring is None:
            raise ConfigError(
                f"{_stored(sum(secrets.values()), sum(accounts.values()))} stored encrypted, "
                f"but {CURRENT_KEY_VARIABLE} is not set: set it to the key they were sealed "
                "with."
            )
        unknown = sorted(k for k in {*secrets, *accounts} if not keyring.has_key(k))
        if not unknown:
            return
        stored = _stored(
            sum(secrets.get(k, 0) for k in unknown), sum(accounts.get(k, 0) for k in unknown)
        )
        raise ConfigError(
            f"{CURRENT_KEY_VARIABLE} cannot decrypt what is stored: {stored} sealed with "
            f"key {', '.join(unknown)}, which is neither {CURRENT_KEY_VARIABLE} (key "
            f"{keyring.current_key_id}) nor in {OLD_KEYS_VARIABLE}. Set "
            f"{CURRENT_KEY_VARIABLE} to the key they were sealed with; to change keys, put "
            f"the old one in {OLD_KEYS_VARIABLE} and run `open-inspect secrets rotate-key`."
        )


def _resealed(keyring: Keyring, sealed: Sealed, context: bytes, what: str) -> Sealed:
    try:
        return keyring.reencrypt(sealed, context)
    except CryptoError as exc:
        raise CryptoError(f"{what}: {exc}") from None


def _stored(secrets: int, accounts: int) -> str:
    parts = []
    if secrets:
        parts.append(f"{secrets} secret{'s' if secrets != 1 else ''}")
    if accounts:
        parts.append(f"{accounts} linked GitHub account{'s' if accounts != 1 else ''}")
    verb = "is" if secrets + accounts == 1 else "are"
    return f"{' and '.join(parts)} {verb}"
