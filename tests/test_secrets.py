"""Secrets at rest: sealed per row and bound to their scope and name, validated, refused without
a key, checked against the key when an engine starts, re-sealed by rotate-key; and the
`open-inspect secrets` and `audit` commands that manage and show them."""

from __future__ import annotations

import asyncio
import io
import os
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import pytest

from core.broker.memory import MemoryBroker
from core.cli import main
from core.crypto import Keyring, generate_key
from core.engine import Engine
from core.errors import BadInput, ConfigError, CryptoError
from core.models import Author
from core.secrets import SecretStore, sandbox_stdin_line
from core.store import accounts as account_store
from core.store.accounts import Account
from tests.engine_helpers import fast_settings

VALUE = "npm_Zx81Qq0aTr55LmNo"
PERSON = "slack:T1:UOCTO"
USER_TOKEN = "ghu_" + "R4nd0m" * 6


@pytest.fixture
async def pool(own_database_url: str) -> AsyncIterator[asyncpg.Pool]:
    pool = await asyncpg.create_pool(own_database_url, min_size=1, max_size=4)
    yield pool
    await pool.close()


@pytest.fixture
def key() -> str:
    return generate_key()


@pytest.fixture
def store(pool: asyncpg.Pool, key: str) -> SecretStore:
    return SecretStore(pool, Keyring.from_base64(key))


# ----- the store -------------------------------------------------------------------------------


async def test_a_secret_round_trips_and_a_repositorys_own_value_wins(store: SecretStore) -> None:
    await store.set("NPM_TOKEN", VALUE, None, by="cli:tester")
    await store.set("NPM_TOKEN", "npm_only-for-acme-web", "acme/web", by="slack:T1:UADMIN")
    await store.set("SENTRY_DSN", "https://k@sentry.example/1", None, by="cli:tester")

    assert await store.values_for("acme/web") == {
        "NPM_TOKEN": "npm_only-for-acme-web",
        "SENTRY_DSN": "https://k@sentry.example/1",
    }
    assert (await store.values_for("Acme/Web"))["NPM_TOKEN"] == "npm_only-for-acme-web"
    assert await store.values_for("acme/api") == await store.values_for(None)
    assert (await store.values_for(None))["NPM_TOKEN"] == VALUE
    assert (await store.values_for("/tmp/a/local/path"))["NPM_TOKEN"] == VALUE

    await store.set("NPM_TOKEN", "npm_replaced-value", None, by="cli:other")
    assert (await store.values_for(None))["NPM_TOKEN"] == "npm_replaced-value"


async def test_listing_shows_names_scopes_and_who_but_no_value(store: SecretStore) -> None:
    await store.set("NPM_TOKEN", VALUE, None, by="cli:tester")
    await store.set("NPM_TOKEN", "npm_only-for-acme-web", "acme/web", by="slack:T1:UADMIN")
    await store.set("API_KEY", "api-key-of-acme-api", "acme/api", by="cli:tester")

    everything = await store.list()
    assert [(s.name, s.repository, s.updated_by) for s in everything] == [
        ("NPM_TOKEN", None, "cli:tester"),
        ("API_KEY", "acme/api", "cli:tester"),
        ("NPM_TOKEN", "acme/web", "slack:T1:UADMIN"),
    ]
    assert not any(hasattr(s, "value") for s in everything)
    assert VALUE not in repr(everything)
    applying = await store.list("acme/web")
    assert [(s.name, s.repository) for s in applying] == [
        ("NPM_TOKEN", None),
        ("NPM_TOKEN", "acme/web"),
    ]
    assert [s.repository for s in await store.list(all_scopes=False)] == [None]
    assert [s.name for s in await store.list("acme/api", all_scopes=False)] == ["API_KEY"]


async def test_the_database_holds_ciphertext_and_the_key_id_only(
    store: SecretStore, pool: asyncpg.Pool, key: str
) -> None:
    await store.set("NPM_TOKEN", VALUE, "acme/web", by="cli:tester")
    row = await pool.fetchrow("SELECT * FROM secrets WHERE name = 'NPM_TOKEN'")
    assert VALUE.encode() not in row["ciphertext"]
    assert row["key_id"] == Keyring.from_base64(key).current_key_id
    dump = " ".join(str(v) for v in row.values())
    assert VALUE not in dump


@pytest.mark.parametrize(
    "move",
    [
        "UPDATE secrets SET ciphertext = (SELECT ciphertext FROM secrets WHERE name = 'NPM_TOKEN')"
        " WHERE name = 'OTHER_TOKEN'",
        "UPDATE secrets SET repository = 'acme/api' WHERE name = 'OTHER_TOKEN'",
    ],
    ids=["to another name", "to another repository"],
)
async def test_a_ciphertext_moved_to_another_row_does_not_decrypt(
    store: SecretStore, pool: asyncpg.Pool, move: str
) -> None:
    await store.set("NPM_TOKEN", VALUE, "acme/web", by="cli:tester")
    await store.set("OTHER_TOKEN", "other-token-value", "acme/web", by="cli:tester")
    await pool.execute(move)
    repository = "acme/api" if "repository" in move else "acme/web"
    with pytest.raises(CryptoError, match="The secret OTHER_TOKEN of acme/"):
        await store.values_for(repository)


@pytest.mark.parametrize(
    ("name", "value", "repository", "says"),
    [
        ("npm_token", VALUE, None, "capital letters"),
        ("1TOKEN", VALUE, None, "not starting with a digit"),
        ("MY-TOKEN", VALUE, None, "capital letters"),
        ("PATH", VALUE, None, "used by the sandbox"),
        ("HOME", VALUE, None, "used by the sandbox"),
        ("OPEN_INSPECT_TOKEN", VALUE, None, "used by the sandbox"),
        ("GIT_ASKPASS", VALUE, None, "used by the sandbox"),
        ("NPM_TOKEN", "", None, "is empty"),
        ("NPM_TOKEN", " \n", None, "is empty"),
        ("NPM_TOKEN", "a\0b", None, "NUL"),
        ("NPM_TOKEN", "x" * (32 * 1024 + 1), None, "the limit is 32 KiB"),
        ("NPM_TOKEN", VALUE, "acme", "owner/name"),
        ("NPM_TOKEN", VALUE, "acme/web/extra", "owner/name"),
    ],
)
async def test_bad_input_is_refused_saying_what_is_wrong_and_nothing_is_stored(
    store: SecretStore, name: str, value: str, repository: str | None, says: str
) -> None:
    with pytest.raises(BadInput, match=says) as refused:
        await store.set(name, value, repository, by="cli:tester")
    assert (value not in str(refused.value)) or not value.strip()
    assert await store.list() == []


async def test_without_a_key_secrets_cannot_be_set_or_read_and_the_error_says_how(
    pool: asyncpg.Pool,
) -> None:
    keyless = SecretStore(pool, None)
    for attempt in (keyless.set("NPM_TOKEN", VALUE, None, "cli:t"), keyless.values_for(None)):
        with pytest.raises(ConfigError, match="OPEN_INSPECT_SECRETS_KEY.*open-inspect keygen"):
            await attempt


def test_the_sandbox_gets_its_secrets_as_one_json_line() -> None:
    line = sandbox_stdin_line({"NPM_TOKEN": VALUE, "PEM": "-----BEGIN\nline\n-----END é"})
    assert line.endswith(b"\n") and line.count(b"\n") == 1
    assert (
        line
        == b'{"NPM_TOKEN":"' + VALUE.encode() + b'","PEM":"-----BEGIN\\nline\\n-----END \\u00e9"}\n'
    )


# ----- keys --------------------------------------------------------------------------------------


def engine_on(pool: asyncpg.Pool, key: str | None, old: list[str] | None = None) -> Engine:
    settings = fast_settings(secrets_key=key, secrets_old_keys=old or [])
    return Engine(pool, MemoryBroker(), settings, provider=None)


async def test_an_engine_with_the_wrong_key_or_none_refuses_to_start_saying_why(
    store: SecretStore, pool: asyncpg.Pool, key: str
) -> None:
    await store.set("NPM_TOKEN", VALUE, None, by="cli:tester")
    wrong = generate_key()

    with pytest.raises(ConfigError) as refused:
        await engine_on(pool, wrong).start()
    message = str(refused.value)
    assert "OPEN_INSPECT_SECRETS_KEY cannot decrypt what is stored: 1 secret is sealed" in message
    assert Keyring.from_base64(key).current_key_id in message
    assert "open-inspect secrets rotate-key" in message and "\n" not in message

    with pytest.raises(ConfigError, match="1 secret is stored encrypted, but .* is not set"):
        await engine_on(pool, None).start()

    right = engine_on(pool, key)
    await right.start()
    await right.close()


async def test_a_secret_pasted_into_a_prompt_is_stored_as_its_name(
    store: SecretStore, pool: asyncpg.Pool, key: str
) -> None:
    await store.set("NPM_TOKEN", VALUE, "acme/web", by="cli:tester")
    engine = engine_on(pool, key)
    await engine.start()
    try:
        author = Author("slack:T1:UCAROL", "Carol")
        pasted = f"use {VALUE} and ghp_{'a1B2' * 9} to publish"
        first = await engine.submit_prompt(
            "t:1", "t", author, pasted, repository="acme/web", context={}
        )
        follow_up = await engine.submit_prompt("t:2", "t", author, f"again with {VALUE}")
        texts = [
            await pool.fetchval("SELECT text FROM prompts WHERE id = $1", receipt.prompt_id)
            for receipt in (first, follow_up)
        ]
    finally:
        await engine.close()
    assert texts == [
        "use [REDACTED:NPM_TOKEN] and [REDACTED] to publish",
        "again with [REDACTED:NPM_TOKEN]",
    ]


async def test_open_inspect_up_with_the_wrong_key_prints_one_line_and_exits_2(
    store: SecretStore, own_database_url: str, tmp_path: Path
) -> None:
    await store.set("NPM_TOKEN", VALUE, None, by="cli:tester")
    env = {k: v for k, v in os.environ.items() if not k.startswith("OPEN_INSPECT_")}
    env.update(
        DATABASE_URL=own_database_url,
        OPEN_INSPECT_DATA_DIR=str(tmp_path / "data"),
        OPEN_INSPECT_SECRETS_KEY=generate_key(),
        OPEN_INSPECT_LINK_SECRET=generate_key(),
        OPEN_INSPECT_LOG_LEVEL="ERROR",
        OPEN_INSPECT_HTTP_PORT="0",
    )
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-c", "from core.cli import main; raise SystemExit(main(['up']))",
        env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        stdin=asyncio.subprocess.DEVNULL,
    )  # fmt: skip
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode == 2, (out, err)
    lines = err.decode().strip().splitlines()
    assert lines == [lines[0]] and lines[0].startswith(
        "open-inspect: OPEN_INSPECT_SECRETS_KEY cannot decrypt what is stored"
    ), err.decode()


async def test_after_rotate_key_secrets_and_account_tokens_open_with_the_new_key_alone(
    pool: asyncpg.Pool, key: str
) -> None:
    old = Keyring.from_base64(key)
    before = engine_on(pool, key)
    await before.secrets.set("NPM_TOKEN", VALUE, None, by="cli:tester")
    await before.secrets.set("NPM_TOKEN", "npm_for-acme-web", "acme/web", by="cli:tester")
    sealed = old.encrypt(USER_TOKEN.encode(), PERSON.encode())
    refresh = old.encrypt(b"ghr_refresh-token-of-octo", PERSON.encode())
    account = Account(PERSON, 7, "octo", "Octo", "o@example.com", sealed, refresh, None, None, True)
    await account_store.put(pool, account)

    new = generate_key()
    with pytest.raises(ConfigError):
        await engine_on(pool, new).secrets.check_key()
    rotating = engine_on(pool, new, old=[key])
    await rotating.secrets.check_key()
    assert await rotating.secrets.rotate_key(by="cli:tester") == 3  # two secrets, one account
    assert await rotating.secrets.rotate_key(by="cli:tester") == 0  # nothing left to re-seal

    after = engine_on(pool, new)
    await after.secrets.check_key()
    assert await after.secrets.values_for("acme/web") == {"NPM_TOKEN": "npm_for-acme-web"}
    assert await after.secrets.values_for(None) == {"NPM_TOKEN": VALUE}
    assert after.accounts is not None
    assert await after.accounts.user_token(PERSON) == USER_TOKEN
    stored = await account_store.get(pool, PERSON)
    assert stored is not None and stored.refresh_token is not None
    assert (
        stored.access_token.key_id
        == stored.refresh_token.key_id
        == Keyring.from_base64(new).current_key_id
    )
    with pytest.raises(ConfigError):
        await engine_on(pool, key).secrets.check_key()  # the old key alone no longer does
    [rotated, *_] = [e for e in await after.audit_log() if e.action == "secrets.rotate_key"]
    assert rotated.details == {
        "key_id": Keyring.from_base64(new).current_key_id,
        "secrets": 2,
        "accounts": 1,
    }


async def test_a_cached_redactor_is_rebuilt_when_a_secret_changes(store: SecretStore) -> None:
    await store.set("NPM_TOKEN", VALUE, None, by="cli:tester")
    first = await store.redactor("acme/web")
    assert await store.redactor("acme/web") is first
    assert first.redact(f"x {VALUE}") == "x [REDACTED:NPM_TOKEN]"
    await store.set("DB_PASSWORD", "correct horse battery", "acme/web", by="cli:tester")
    second = await store.redactor("acme/web")
    assert second is not first
    assert second.redact("correct horse battery") == "[REDACTED:DB_PASSWORD]"
    await store.delete("DB_PASSWORD", "acme/web", by="cli:tester")
    assert (await store.redactor("acme/web")).redact("correct horse battery") == (
        "correct horse battery"
    )


# ----- the commands ------------------------------------------------------------------------------


@pytest.fixture
def cli_env(
    monkeypatch: pytest.MonkeyPatch, own_database_url: str, tmp_path: Path, key: str
) -> dict[str, str]:
    for name in list(os.environ):
        if name.startswith(("OPEN_INSPECT_", "SLACK_", "GITHUB_", "REDIS_URL", "DATABASE_URL")):
            monkeypatch.delenv(name)
    env = {
        "DATABASE_URL": own_database_url,
        "OPEN_INSPECT_DATA_DIR": str(tmp_path / "data"),
        "OPEN_INSPECT_SECRETS_KEY": key,
        "OPEN_INSPECT_LINK_SECRET": generate_key(),
        "USER": "tester",
        "LOGNAME": "tester",
    }
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    return env


async def cli(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture, *args: str, stdin: str = ""
) -> tuple[int, str, str]:
    """`open-inspect ARGS` in this process (in a thread: it runs its own event loop), with
    `stdin` as its standard input."""
    monkeypatch.setattr(sys, "stdin", io.StringIO(stdin))
    capsys.readouterr()
    code = await asyncio.to_thread(main, list(args))
    out, err = capsys.readouterr()
    return code, out, err


async def test_secrets_set_reads_the_value_from_stdin_and_never_shows_it(
    cli_env: dict[str, str],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture,
    pool: asyncpg.Pool,
    key: str,
) -> None:
    code, out, err = await cli(
        monkeypatch, capsys, "secrets", "set", "--repo", "acme/web", "NPM_TOKEN", stdin=VALUE + "\n"
    )
    assert code == 0, err
    assert "Secret NPM_TOKEN set for acme/web" in out
    store = SecretStore(pool, Keyring.from_base64(key))
    assert await store.values_for("acme/web") == {"NPM_TOKEN": VALUE}  # the newline stripped

    code, out, err = await cli(
        monkeypatch, capsys, "secrets", "set", "GLOBAL_ONE", stdin="g-value-12345"
    )
    assert code == 0, err
    code, out, err = await cli(monkeypatch, capsys, "secrets", "list")
    assert code == 0, err
    lines = out.splitlines()
    assert lines[0].split() == ["NAME", "SCOPE", "UPDATED", "BY"]
    assert any(line.startswith("GLOBAL_ONE") and "global" in line for line in lines)
    assert any(line.startswith("NPM_TOKEN") and "acme/web" in line for line in lines)
    assert all(line.rstrip().endswith("cli:tester") for line in lines[1:])
    code, out, _ = await cli(monkeypatch, capsys, "secrets", "list", "--repo", "acme/api")
    assert "GLOBAL_ONE" in out and "NPM_TOKEN" not in out

    code, out, err = await cli(
        monkeypatch, capsys, "secrets", "delete", "--repo", "acme/web", "NPM_TOKEN"
    )
    assert code == 0 and "deleted" in out, err
    code, out, err = await cli(
        monkeypatch, capsys, "secrets", "delete", "--repo", "acme/web", "NPM_TOKEN"
    )
    assert code == 2 and err.strip() == "open-inspect: There is no secret NPM_TOKEN for acme/web."

    code, out, err = await cli(monkeypatch, capsys, "audit")
    assert code == 0, err
    actions = [line.split("  ")[1:4] for line in out.splitlines()]
    assert actions == [
        ["cli:tester", "secret.set", "NPM_TOKEN"],
        ["cli:tester", "secret.set", "GLOBAL_ONE"],
        ["cli:tester", "secret.delete", "NPM_TOKEN"],
    ]
    code, out, _ = await cli(monkeypatch, capsys, "audit", "--since", "1h", "--limit", "1")
    assert len(out.splitlines()) == 1 and "secret.delete" in out
    code, out, _ = await cli(monkeypatch, capsys, "audit", "--since", "2099-01-01")
    assert out.strip() == "The audit log has no entries since 2099-01-01."
    everything = "".join(capsys.readouterr()) + out
    assert VALUE not in everything and "g-value-12345" not in everything


@pytest.mark.parametrize(
    ("args", "stdin", "says"),
    [
        (("secrets", "set", "NPM_TOKEN"), "", "The value of NPM_TOKEN is empty"),
        (("secrets", "set", "NPM_TOKEN"), "\n", "The value of NPM_TOKEN is empty"),
        (("secrets", "set", "npm-token"), VALUE, "is not a secret name"),
        (("secrets", "set", "--repo", "nope", "NPM_TOKEN"), VALUE, "owner/name"),
        (("audit", "--since", "yesterday-ish"), "", "is not a time this understands"),
    ],
)
async def test_bad_commands_exit_2_with_a_one_line_reason(
    cli_env: dict[str, str],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture,
    args: tuple[str, ...],
    stdin: str,
    says: str,
) -> None:
    code, out, err = await cli(monkeypatch, capsys, *args, stdin=stdin)
    assert code == 2 and out == ""
    assert err.startswith("open-inspect: ") and says in err and err.count("\n") == 1, err
    assert VALUE not in err


async def test_rotate_key_from_the_command_line(
    cli_env: dict[str, str],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture,
    pool: asyncpg.Pool,
    key: str,
) -> None:
    code, _, err = await cli(monkeypatch, capsys, "secrets", "set", "NPM_TOKEN", stdin=VALUE)
    assert code == 0, err
    new = generate_key()
    monkeypatch.setenv("OPEN_INSPECT_SECRETS_KEY", new)
    code, _, err = await cli(monkeypatch, capsys, "secrets", "rotate-key")
    assert code == 2 and "cannot decrypt what is stored" in err  # the old key is needed too
    monkeypatch.setenv("OPEN_INSPECT_SECRETS_OLD_KEYS", key)
    code, out, err = await cli(monkeypatch, capsys, "secrets", "rotate-key")
    assert code == 0 and "Re-encrypted 1" in out, err
    only_new = SecretStore(pool, Keyring.from_base64(new))
    await only_new.check_key()
    assert await only_new.values_for(None) == {"NPM_TOKEN": VALUE}


async def test_a_real_process_reads_a_piped_value(
    cli_env: dict[str, str], pool: asyncpg.Pool, key: str
) -> None:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-c", "from core.cli import main; raise SystemExit(main())",
        "secrets", "set", "PIPED_TOKEN",
        env={**os.environ, **cli_env}, stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, err = await asyncio.wait_for(proc.communicate(b"piped-value-0123\n"), 60)
    assert proc.returncode == 0, err
    assert b"piped-value" not in out + err
    store = SecretStore(pool, Keyring.from_base64(key))
    assert await store.values_for(None) == {"PIPED_TOKEN": "piped-value-0123"}
