"""The agent's tools: bash with its timeouts and process-group kills, the file tools, and the
workspace boundary they keep."""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path

import pytest

from sandbox.tools import Tools, cap_text


@pytest.fixture
def workspace(tmp_path: Path) -> Path:
    path = tmp_path / "workspace"
    path.mkdir()
    return path


@pytest.fixture
def tools(workspace: Path) -> Tools:
    return Tools(workspace, {"PATH": os.environ["PATH"], "GIVEN": "yes"}, bash_timeout=10)


def process_is_gone(pid: int, zombie_counts: bool = True) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    if not zombie_counts:
        return False
    # A killed process whose parent died stays a zombie until init reaps it: it is dead.
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except (OSError, IndexError):  # it went away while being looked at
        return True


async def wait_until_gone(pid: int, timeout: float = 2.0, zombie_counts: bool = True) -> None:
    deadline = time.monotonic() + timeout
    while not process_is_gone(pid, zombie_counts):
        assert time.monotonic() < deadline, f"process {pid} is still alive"
        await asyncio.sleep(0.02)


def pid_in(path: Path) -> int | None:
    text = path.read_text() if path.exists() else ""
    return int(text) if text.strip() else None


async def read_pid(path: Path, timeout: float = 5.0) -> int:
    deadline = time.monotonic() + timeout
    while (pid := pid_in(path)) is None:
        assert time.monotonic() < deadline, f"{path} was never written"
        await asyncio.sleep(0.02)
    return pid


# ----- bash ------------------------------------------------------------------------------------


async def test_bash_returns_merged_output_and_exit_code(tools: Tools) -> None:
    result = await tools.bash("echo to-stdout; echo to-stderr >&2; exit 3")
    assert "to-stdout" in result.output and "to-stderr" in result.output
    assert result.output.endswith("[exit code 3]")
    assert result.is_error


async def test_bash_success_is_not_an_error(tools: Tools) -> None:
    result = await tools.bash("true")
    assert result.output == "(no output)\n[exit code 0]"
    unterminated = await tools.bash("printf partial")
    assert unterminated.output == "partial\n[exit code 0]"
    assert not result.is_error


async def test_bash_runs_in_the_workspace_root(tools: Tools, workspace: Path) -> None:
    result = await tools.bash("pwd")
    assert result.output.splitlines()[0] == str(tools.root)


async def test_bash_sees_only_the_environment_it_was_given(
    tools: Tools, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OPEN_INSPECT_TEST_SECRET", "leaked")
    result = await tools.bash('echo "given=$GIVEN secret=${OPEN_INSPECT_TEST_SECRET-absent}"')
    assert result.output.splitlines()[0] == "given=yes secret=absent"


async def test_bash_stdin_is_empty(tools: Tools) -> None:
    result = await tools.bash("cat; echo read-done")
    assert result.output.splitlines()[0] == "read-done"


async def test_bash_timeout_kills_the_whole_process_group(tools: Tools, workspace: Path) -> None:
    started = time.monotonic()
    result = await tools.bash("sleep 600 & echo $! > child.pid; wait", timeout=0.5)
    assert time.monotonic() - started < 5, result
    assert result.is_error
    assert "timed out after 0.5 s" in result.output
    await wait_until_gone(int((workspace / "child.pid").read_text()))


async def test_background_children_die_when_the_command_ends(tools: Tools, workspace: Path) -> None:
    started = time.monotonic()
    result = await tools.bash("sleep 600 & echo $! > child.pid; echo started")
    assert time.monotonic() - started < 5, result
    assert result.output == "started\n[exit code 0]"
    await wait_until_gone(int((workspace / "child.pid").read_text()))


async def test_abort_kills_a_running_command_within_two_seconds(
    tools: Tools, workspace: Path
) -> None:
    running = asyncio.create_task(tools.bash("sleep 600 & echo $! > child.pid; wait"))
    child = await read_pid(workspace / "child.pid")
    started = time.monotonic()
    await tools.abort()
    result = await asyncio.wait_for(running, 2)
    assert time.monotonic() - started < 2
    assert result.is_error and "[stopped: the prompt was aborted]" in result.output
    await wait_until_gone(child)


async def test_cancelling_a_command_kills_its_process_group(tools: Tools, workspace: Path) -> None:
    command = "echo $$ > bash.pid; sleep 600 & echo $! > child.pid; wait"
    running = asyncio.create_task(tools.bash(command))
    child = await read_pid(workspace / "child.pid")
    running.cancel()
    with pytest.raises(asyncio.CancelledError):
        await running
    await wait_until_gone(child)
    # bash itself is reaped by asyncio, which must see it go before this test's loop closes.
    await wait_until_gone(await read_pid(workspace / "bash.pid"), zombie_counts=False)


async def test_long_output_keeps_head_and_tail(workspace: Path) -> None:
    tools = Tools(workspace, {"PATH": os.environ["PATH"]}, max_output=1000)
    result = await tools.bash("seq 1 200000")
    lines = result.output.splitlines()
    assert lines[:3] == ["1", "2", "3"]
    assert lines[-2:] == ["200000", "[exit code 0]"]
    assert any(line.startswith("[… ") and "characters omitted …]" in line for line in lines)
    assert len(result.output) < 1100


def test_cap_text_counts_what_it_omits() -> None:
    capped = cap_text("a" * 50 + "b" * 50, 20)
    assert capped == "a" * 10 + "\n[… 80 characters omitted …]\n" + "b" * 10
    assert cap_text("short", 20) == "short"


# ----- read / write / edit ---------------------------------------------------------------------


async def test_read_file_numbers_lines_and_pages(tools: Tools, workspace: Path) -> None:
    (workspace / "notes.txt").write_text("".join(f"line {n}\n" for n in range(1, 11)))
    whole = await tools.read_file("notes.txt")
    assert not whole.is_error
    assert whole.output.splitlines()[0] == "     1\tline 1"
    assert whole.output.splitlines()[-1] == "    10\tline 10"
    page = await tools.read_file("notes.txt", offset=4, limit=2)
    assert page.output.splitlines() == [
        "     4\tline 4",
        "     5\tline 5",
        "[… lines 6-10 not shown; read on with offset=6 …]",
    ]


async def test_read_file_reports_missing_directory_and_binary_files(
    tools: Tools, workspace: Path
) -> None:
    (workspace / "blob.bin").write_bytes(b"\x00\x01\x02")
    (workspace / "dir").mkdir()
    missing = await tools.read_file("nope.txt")
    assert missing.is_error and missing.output == "nope.txt does not exist."
    directory = await tools.read_file("dir")
    assert directory.is_error and "is a directory" in directory.output
    binary = await tools.read_file("blob.bin")
    assert binary.is_error and "binary file" in binary.output


async def test_read_file_past_the_end_says_how_long_the_file_is(
    tools: Tools, workspace: Path
) -> None:
    (workspace / "short.txt").write_text("one\ntwo\n")
    result = await tools.read_file("short.txt", offset=5)
    assert result.is_error and result.output == "short.txt has 2 lines; offset 5 is past its end."


async def test_write_file_creates_parents_and_reports_the_change(
    tools: Tools, workspace: Path
) -> None:
    result = await tools.write_file("src/pkg/new.py", "x = 1\n")
    assert not result.is_error
    assert result.changed == "src/pkg/new.py"
    assert (workspace / "src/pkg/new.py").read_text() == "x = 1\n"
    again = await tools.write_file("src/pkg/new.py", "x = 2\n")
    assert again.output.startswith("Overwrote src/pkg/new.py")


async def test_edit_file_replaces_exactly_one_match(tools: Tools, workspace: Path) -> None:
    (workspace / "app.py").write_bytes(b"def f():\r\n    return 1\r\n")
    result = await tools.edit_file("app.py", "return 1", "return 2")
    assert not result.is_error, result.output
    assert result.changed == "app.py"
    assert result.output == "Edited app.py at line 2."
    # The file's own line endings survive.
    assert (workspace / "app.py").read_bytes() == b"def f():\r\n    return 2\r\n"


async def test_edit_file_says_when_old_text_is_not_found(tools: Tools, workspace: Path) -> None:
    (workspace / "app.py").write_text("a = 1\n")
    result = await tools.edit_file("app.py", "b = 1", "b = 2")
    assert result.is_error
    assert result.output.startswith("old text not found in app.py")
    assert result.changed is None
    assert (workspace / "app.py").read_text() == "a = 1\n"


async def test_edit_file_refuses_an_ambiguous_match(tools: Tools, workspace: Path) -> None:
    (workspace / "app.py").write_text("x = 0\nx = 0\nx = 0\n")
    result = await tools.edit_file("app.py", "x = 0", "x = 1")
    assert result.is_error
    assert "appears 3 times in app.py; include more context" in result.output
    assert (workspace / "app.py").read_text() == "x = 0\nx = 0\nx = 0\n"


# ----- list / search ---------------------------------------------------------------------------


async def test_list_files_skips_git_and_marks_directories(tools: Tools, workspace: Path) -> None:
    (workspace / ".git").mkdir()
    (workspace / ".git" / "HEAD").write_text("ref: refs/heads/main\n")
    (workspace / "src").mkdir()
    (workspace / "src" / "main.py").write_text("")
    (workspace / "README.md").write_text("")
    result = await tools.list_files()
    assert result.output.splitlines() == ["README.md", "src/", "src/main.py"]


async def test_list_files_is_capped(workspace: Path) -> None:
    for n in range(30):
        (workspace / f"file{n:02}.txt").write_text("")
    tools = Tools(workspace, {}, max_entries=10)
    lines = (await tools.list_files(".")).output.splitlines()
    assert lines[:10] == [f"file{n:02}.txt" for n in range(10)]
    assert lines[10].startswith("[… listing stopped at 10 entries")
    assert len(lines) == 11


async def test_search_finds_matches_in_text_files_only(tools: Tools, workspace: Path) -> None:
    (workspace / ".git").mkdir()
    (workspace / ".git" / "config").write_text("needle in git\n")
    (workspace / "data.bin").write_bytes(b"needle\x00binary")
    (workspace / "src").mkdir()
    (workspace / "src" / "a.py").write_text("first\nneedle = 42\n")
    (workspace / "b.txt").write_text("no match\nNeedle\nneedles\n")
    result = await tools.search(r"needle\b")
    assert result.output.splitlines() == ["src/a.py:2: needle = 42"]
    scoped = await tools.search("needle", path="b.txt")
    assert scoped.output.splitlines() == ["b.txt:3: needles"]
    by_glob = await tools.search("needle", glob="*.py")
    assert by_glob.output.splitlines() == ["src/a.py:2: needle = 42"]


async def test_search_reports_bad_patterns_and_no_matches(tools: Tools, workspace: Path) -> None:
    (workspace / "a.txt").write_text("hello\n")
    bad = await tools.search("(unclosed")
    assert bad.is_error and "not a valid regular expression" in bad.output
    none = await tools.search("absent")
    assert not none.is_error and none.output == "No matches for 'absent' in .."


async def test_search_is_capped(workspace: Path) -> None:
    (workspace / "many.txt").write_text("hit\n" * 50)
    tools = Tools(workspace, {}, max_matches=5)
    lines = (await tools.search("hit")).output.splitlines()
    assert lines[:5] == [f"many.txt:{n}: hit" for n in range(1, 6)]
    assert lines[5].startswith("[… stopped after 5 matches")


# ----- the workspace boundary ------------------------------------------------------------------


@pytest.fixture
def outside(tmp_path: Path) -> Path:
    path = tmp_path / "outside"
    path.mkdir()
    (path / "secret.txt").write_text("top secret\n")
    return path


async def test_dotdot_paths_are_refused(tools: Tools, outside: Path) -> None:
    read = await tools.read_file("../outside/secret.txt")
    assert read.is_error and "is outside the workspace" in read.output
    write = await tools.write_file("../outside/planted.txt", "x")
    assert write.is_error and "is outside the workspace" in write.output
    assert not (outside / "planted.txt").exists()
    listing = await tools.list_files("..")
    assert listing.is_error and "is outside the workspace" in listing.output


async def test_absolute_paths_outside_are_refused_and_inside_allowed(
    tools: Tools, workspace: Path, outside: Path
) -> None:
    read = await tools.read_file(str(outside / "secret.txt"))
    assert read.is_error and "is outside the workspace" in read.output
    edit = await tools.edit_file(str(outside / "secret.txt"), "top", "no")
    assert edit.is_error
    assert (outside / "secret.txt").read_text() == "top secret\n"
    search = await tools.search("secret", path="/")
    assert search.is_error and "is outside the workspace" in search.output
    (workspace / "inside.txt").write_text("fine\n")
    inside = await tools.read_file(str(workspace / "inside.txt"))
    assert inside.output == "     1\tfine"


async def test_symbolic_links_out_of_the_workspace_are_refused(
    tools: Tools, workspace: Path, outside: Path
) -> None:
    (workspace / "dir-link").symlink_to(outside)
    (workspace / "file-link").symlink_to(outside / "secret.txt")
    through_dir = await tools.read_file("dir-link/secret.txt")
    assert through_dir.is_error and "through a symbolic link" in through_dir.output
    through_file = await tools.write_file("file-link", "overwritten")
    assert through_file.is_error and "through a symbolic link" in through_file.output
    assert (outside / "secret.txt").read_text() == "top secret\n"
    search = await tools.search("secret")
    assert search.output == "No matches for 'secret' in .."


# ----- dispatch and schemas --------------------------------------------------------------------


async def test_call_checks_tool_names_and_arguments(tools: Tools, workspace: Path) -> None:
    unknown = await tools.call("rm_rf", {})
    assert unknown.is_error and "There is no tool 'rm_rf'" in unknown.output
    missing = await tools.call("write_file", {"path": "a.txt"})
    assert (
        missing.is_error
        and missing.output == "Invalid arguments for write_file: content is required."
    )
    wrong = await tools.call("read_file", {"path": "a.txt", "offset": "ten"})
    assert wrong.is_error and "offset must be an integer" in wrong.output
    written = await tools.call("write_file", {"path": "a.txt", "content": "hi\n", "extra": 1})
    assert written.changed == "a.txt" and (workspace / "a.txt").read_text() == "hi\n"
    ran = await tools.call("bash", {"command": "cat a.txt", "timeout": 5})
    assert ran.output == "hi\n[exit code 0]"


def test_schemas_describe_the_same_tools_for_both_apis(tools: Tools) -> None:
    anthropic = tools.anthropic_schema()
    openai = tools.openai_schema()
    names = ["bash", "read_file", "write_file", "edit_file", "list_files", "search"]
    assert [tool["name"] for tool in anthropic] == names
    assert [tool["function"]["name"] for tool in openai] == names
    assert all(tool["type"] == "function" for tool in openai)
    for a, o in zip(anthropic, openai, strict=True):
        assert a["input_schema"] == o["function"]["parameters"]
        assert a["input_schema"]["type"] == "object"
        assert set(a["input_schema"]["required"]) <= set(a["input_schema"]["properties"])
        assert a["description"] == o["function"]["description"]
