"""`open-inspect run`: one session from the terminal, exit codes 0/1/2, as a person runs it."""

from __future__ import annotations

import asyncio
import json
import os
import sys
from pathlib import Path

import pytest

from core.crypto import generate_key
from tests.emulators.llm.server import LLMEmulator
from tests.gitserver import add_branch, git
from tests.sandbox_fixtures import PROVIDER_KEY, bash_script, calc_repo, fixing_script

CLI = [sys.executable, "-c", "from core.cli import main; raise SystemExit(main())"]


@pytest.fixture
async def llm():
    emulator = LLMEmulator(api_key=PROVIDER_KEY)
    await emulator.start()
    yield emulator
    await emulator.stop()


@pytest.fixture
def origin(tmp_path: Path) -> Path:
    return calc_repo(tmp_path / "origin")


def cli_env(tmp_path: Path, database_url: str, llm: LLMEmulator) -> dict[str, str]:
    home = tmp_path / "home"
    home.mkdir(exist_ok=True)
    (home / ".gitconfig").write_text("[user]\n\tname = Dana Dev\n\temail = dana@example.com\n")
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("OPEN_INSPECT_", "ANTHROPIC_", "OPENAI_"))
    }
    env.update(
        HOME=str(home),
        DATABASE_URL=database_url,
        ANTHROPIC_BASE_URL=llm.url,
        ANTHROPIC_API_KEY=PROVIDER_KEY,
        OPEN_INSPECT_DATA_DIR=str(tmp_path / "data"),
        OPEN_INSPECT_SECRETS_KEY=generate_key(),
        OPEN_INSPECT_LINK_SECRET=generate_key(),
        OPEN_INSPECT_MODEL="anthropic:claude-sonnet-4-6",
    )
    return env


async def run_cli(env: dict[str, str], *args: str) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        *CLI,
        *args,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        stdin=asyncio.subprocess.DEVNULL,
        cwd=Path(__file__).parent.parent,
    )
    out, err = await asyncio.wait_for(proc.communicate(), 120)
    return proc.returncode, out.decode(), err.decode()


async def test_run_streams_the_work_and_pushes_the_branch(
    tmp_path: Path, database_url: str, llm: LLMEmulator, origin: Path
) -> None:
    llm.script = fixing_script()
    code, out, err = await run_cli(
        cli_env(tmp_path, database_url, llm),
        "run",
        "--repo",
        str(origin),
        "Fix add() and run the tests",
    )
    assert code == 0, (out, err)
    assert "Let me look at the code." in out
    assert "→ read_file: calc.py" in err and "→ bash: python3 test_calc.py" in err
    assert "1 file changed, 1 insertion(+), 1 deletion(-)" in out
    assert "usage:" in out and "input" in out
    pushed = [line for line in out.splitlines() if line.startswith("pushed open-inspect/")]
    assert pushed, out
    branch = pushed[0].split(" ", 1)[1]
    assert "return a + b" in git("show", f"{branch}:calc.py", cwd=origin)
    assert (
        git("log", "-1", "--format=%an <%ae>", branch, cwd=origin).strip()
        == "Dana Dev <dana@example.com>"
    )


async def test_run_with_nothing_to_change_pushes_nothing(
    tmp_path: Path, database_url: str, llm: LLMEmulator, origin: Path
) -> None:
    llm.script = [{"text": "The code looks fine to me."}]
    code, out, err = await run_cli(
        cli_env(tmp_path, database_url, llm), "run", "--repo", str(origin), "Review calc.py"
    )
    assert code == 0, (out, err)
    assert "The code looks fine to me." in out
    assert "no changes, nothing pushed" in out
    assert "open-inspect/" not in git("branch", "--list", cwd=origin)


async def test_run_starts_from_the_given_branch_with_the_given_model(
    tmp_path: Path, database_url: str, llm: LLMEmulator, origin: Path
) -> None:
    add_branch(origin, "release", {"RELEASE.md": "release notes\n"})
    llm.script = bash_script("git rev-parse --abbrev-ref HEAD; cat RELEASE.md")
    code, out, err = await run_cli(
        cli_env(tmp_path, database_url, llm),
        "run",
        "--repo",
        str(origin),
        "--branch",
        "release",
        "--model",
        "anthropic:claude-test-x",
        "Where am I?",
    )
    assert code == 0, (out, err)
    asked = [r for r in llm.requests if r["path"] == "/v1/messages"]
    assert asked and {r["body"]["model"] for r in asked} == {"claude-test-x"}
    fed_back = json.dumps(asked[-1]["body"]["messages"])
    assert "release\\nrelease notes" in fed_back, fed_back


async def test_run_exits_1_when_the_prompt_fails(
    tmp_path: Path, database_url: str, llm: LLMEmulator, origin: Path
) -> None:
    llm.fail_next(500, times=100, message="the model is down")
    code, out, err = await run_cli(
        cli_env(tmp_path, database_url, llm), "run", "--repo", str(origin), "Fix it"
    )
    assert code == 1, (out, err)
    assert "the prompt failed" in err and "the model is down" in err


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["run", "just a prompt"], "--repo"),
        (["run", "--repo", "acme/unknown", "Fix it"], "Unknown repository acme/unknown"),
        (["run", "--repo", "/nonexistent/path/x", "Fix it"], "neither"),
        (["run", "--repo", "ORIGIN", "   "], "empty"),
        (["run", "--repo", "ORIGIN", "--model", "gpt-4", "Fix it"], "anthropic:<model>"),
        (["run", "--repo", "ORIGIN", "--branch", "a..b", "Fix it"], "not a branch name"),
    ],
)
async def test_run_exits_2_on_bad_usage_with_a_one_line_reason(
    tmp_path: Path,
    database_url: str,
    llm: LLMEmulator,
    origin: Path,
    args: list[str],
    message: str,
) -> None:
    args = [str(origin) if a == "ORIGIN" else a for a in args]
    code, out, err = await run_cli(cli_env(tmp_path, database_url, llm), *args)
    assert code == 2, (out, err)
    assert message in err
