"""The App Home tab, driven as people use it through the Slack emulator and the real bot: a
person's sessions however many there are, their defaults edited in a modal and used by their
next session, their GitHub link."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from bot.render import home as render
from bot.render.home import ACTIVE_SHOWN, RECENT_SHOWN
from core.crypto import Keyring
from core.errors import BadFields
from core.models import Author, Defaults, PersonSessions, SessionSummary
from core.store import accounts as account_store
from core.store import sessions as session_store
from core.store.accounts import Account
from tests.engine_helpers import until
from tests.slack_fixtures import SlackSystem, home_shows, start_slack

ALICE, BOB = "UALICE", "UBOB"
TEAM = "T0EMULATOR"  # the emulator's workspace
ALICE_ID, BOB_ID = f"slack:{TEAM}:{ALICE}", f"slack:{TEAM}:{BOB}"
MAX_VIEW_BLOCKS = 100
WORKING = json.dumps([{"sleep": 60}])  # a scripted prompt that keeps its session working


def repositories(data_dir: Path, *names: str) -> list[str]:
    return [f"{name}={data_dir}/nowhere-{n}" for n, name in enumerate(names)]


@pytest.fixture
async def system(own_database_url: str, data_dir: Path):
    repos = repositories(data_dir, "acme/calc", "acme/web", "acme/api")
    async with start_slack(own_database_url, data_dir, repositories=repos) as running:
        running.slack.add_user(ALICE, "Alice Anders", email="alice@example.com")
        running.slack.add_user(BOB, "Bob Berg", email="bob@example.com")
        yield running


def blocks_of(system: SlackSystem, user: str) -> list[dict[str, Any]]:
    return system.slack.home_views[user]["blocks"]


def text_of(blocks: list[dict[str, Any]]) -> str:
    return json.dumps(blocks)


def session_lines(blocks: list[dict[str, Any]]) -> list[str]:
    return [
        b["text"]["text"]
        for b in blocks
        if (b.get("accessory") or {}).get("action_id") == "view_session"
    ]


async def open_defaults(system: SlackSystem, user: str) -> str:
    """The person opens their Home and clicks Edit defaults: the modal's view id."""
    await system.slack.open_home(user)
    await home_shows(system, user, "Edit defaults")
    before = set(system.slack.modals)
    await system.slack.click_view(user, system.slack.home_views[user]["id"], "edit_defaults")
    opened = await until(lambda: set(system.slack.modals) - before, what="the defaults modal")
    (view_id,) = opened
    return view_id


def entered(repository: str = "-", model: str = "", branch: str = "") -> dict[str, Any]:
    """The modal's fields as a person fills them ("-" picks "Deployment default")."""
    return {
        "repository": {"repository": repository},
        "model": {"model": model},
        "branch": {"branch": branch},
    }


async def make_history(system: SlackSystem, author: Author, idle: int, working: int) -> None:
    """`idle` finished sessions written straight to the store (fast), then `working` ones
    started through the engine with prompts that keep running."""
    pool = system.runtime.pool
    for n in range(idle):
        async with pool.acquire() as conn, conn.transaction():
            session_id, _ = await session_store.find_or_create(
                conn, f"slack:{TEAM}:C0GENERAL:{n + 1}.000100", "acme/calc", author
            )
            await session_store.remember_user(conn, author)
            await session_store.add_participant(conn, session_id, author.id)
    for n in range(working):
        await system.engine.submit_prompt(
            f"slack:{TEAM}:C0GENERAL:{9000 + n}.000100",
            f"slack:{TEAM}:C0GENERAL:{9000 + n}.000100",
            author,
            WORKING,
            repository="acme/web",
        )


async def test_with_200_sessions_home_stays_within_100_blocks_and_says_how_many_more(
    system: SlackSystem,
) -> None:
    alice = Author(ALICE_ID, "Alice Anders")
    await make_history(system, alice, idle=180, working=20)
    await make_history(system, Author(BOB_ID, "Bob Berg"), idle=3, working=0)
    sealed = Keyring.from_base64(system.engine.settings.secrets_key).encrypt(b"gho_x", b"")
    linked = Account(
        ALICE_ID, 7, "alice-gh", "Alice", "a@example.com", sealed, None, None, None, True
    )
    await account_store.put(system.runtime.pool, linked)
    await system.slack.open_home(ALICE)
    blocks = await home_shows(system, ALICE, "Recent")
    lines = session_lines(blocks)
    print(f"Home with 200 sessions: {len(blocks)} blocks, {len(lines)} session lines")
    assert len(blocks) <= MAX_VIEW_BLOCKS
    working = [line for line in lines if ":hourglass_flowing_sand:" in line or "inbox_tray" in line]
    assert len(working) == ACTIVE_SHOWN and all("`acme/web`" in line for line in working)
    assert len(lines) == ACTIVE_SHOWN + RECENT_SHOWN
    text = text_of(blocks)
    assert "*Active* (20)" in text and "and 5 more active" in text
    assert "*Recent* (180)" in text and "and 160 more" in text  # none of Bob's
    assert all(b["accessory"]["url"].startswith("http") for b in blocks if "accessory" in b
               and b["accessory"]["action_id"] == "view_session")  # fmt: skip
    assert "in <#C0GENERAL>" in lines[0] and "<!date^" in lines[0]
    assert "Linked as `alice-gh`" in text and "deployment default" in text

    await system.slack.open_home(BOB)
    bob = await home_shows(system, BOB, "Recent")
    assert "*Recent* (3)" in text_of(bob) and "Not linked" in text_of(bob)


async def test_defaults_set_in_the_modal_start_the_persons_next_session(
    system: SlackSystem,
) -> None:
    view_id = await open_defaults(system, ALICE)
    modal = system.slack.modals[view_id]
    options = modal["blocks"][0]["element"]["options"]
    assert [o["value"] for o in options] == ["-", "acme/api", "acme/calc", "acme/web"]
    submitted = await system.slack.submit_view(
        ALICE, view_id, entered("acme/web", " anthropic:claude-opus-4-1 ", "release/2.0")
    )
    assert await system.slack.acked(submitted) is None  # a bare ack closes the modal
    await until(lambda: view_id not in system.slack.modals, what="the modal to close")
    mine = Defaults("acme/web", "anthropic:claude-opus-4-1", "release/2.0")
    assert await system.engine.defaults_of(ALICE_ID) == mine
    assert await system.engine.defaults_of(BOB_ID) == Defaults()  # untouched
    home = text_of(await home_shows(system, ALICE, "release/2.0"))
    assert "`acme/web`" in home and "`anthropic:claude-opus-4-1`" in home

    # The modal opens with what is stored.
    again = system.slack.modals[await open_defaults(system, ALICE)]["blocks"]
    assert again[0]["element"]["initial_option"]["value"] == "acme/web"
    assert again[2]["element"]["initial_value"] == "release/2.0"

    channel = system.slack.general
    bobs = await system.slack.mention(BOB, channel, "make it faster")  # nothing resolves it
    await until(
        lambda: any("Which repository" in text_of(m.get("blocks") or []) + m.get("text", "")
                    for m in system.slack.messages(channel, bobs) if m.get("bot_id")),
        what="the repository picker for Bob",
    )  # fmt: skip
    await system.engine.set_setting(f"slack.channel_default:{channel}", "acme/calc", by="test")
    alices = await system.slack.mention(ALICE, channel, "make it faster")
    info = await system.engine.session(await system.session_of(channel, alices))
    assert (info.repository, info.model, info.branch) == (
        "acme/web", "anthropic:claude-opus-4-1", "release/2.0"
    )  # fmt: skip
    bobs_next = await system.slack.mention(BOB, channel, "make it faster")  # the channel's
    info = await system.engine.session(await system.session_of(channel, bobs_next))
    assert (info.repository, info.model, info.branch) == ("acme/calc", None, None)


async def test_a_bad_branch_or_model_is_shown_on_its_field_and_nothing_is_stored(
    system: SlackSystem,
) -> None:
    await system.engine.set_defaults(ALICE_ID, "acme/calc", None, "main")
    view_id = await open_defaults(system, ALICE)
    refused = await system.slack.submit_view(
        ALICE, view_id, entered("acme/web", "gpt-5", "../../etc;rm -rf")
    )
    answer = await system.slack.acked(refused)
    assert answer is not None and answer["response_action"] == "errors"
    assert set(answer["errors"]) == {"model", "branch"}, answer
    assert "branch name" in answer["errors"]["branch"]
    assert "anthropic:<model>" in answer["errors"]["model"]
    await until(lambda: system.slack.modals[view_id].get("errors"), what="errors on the modal")
    assert await system.engine.defaults_of(ALICE_ID) == Defaults("acme/calc", None, "main")

    # Fixed, the same modal is accepted; emptied fields mean the deployment's defaults.
    fixed = await system.slack.submit_view(ALICE, view_id, entered("-", "", "feature_x_y"))
    assert await system.slack.acked(fixed) is None
    assert await system.engine.defaults_of(ALICE_ID) == Defaults(None, None, "feature_x_y")


async def test_the_engine_names_every_wrong_field_and_takes_repositories_in_any_case(
    system: SlackSystem,
) -> None:
    with pytest.raises(BadFields) as caught:
        await system.engine.set_defaults(ALICE_ID, "acme/nope", "openai:", "HEAD")
    assert set(caught.value.problems) == {"repository", "model", "branch"}
    assert await system.engine.defaults_of(ALICE_ID) == Defaults()
    stored = await system.engine.set_defaults(ALICE_ID, "ACME/Web", "openai:gpt-4.1", None)
    assert stored == Defaults("acme/web", "openai:gpt-4.1", None)


async def test_what_the_home_shows_is_escaped(own_database_url: str, data_dir: Path) -> None:
    odd = "acme/<!channel>*bold*&<b>x"
    repos = repositories(data_dir, "acme/calc", odd)
    async with start_slack(own_database_url, data_dir, repositories=repos) as system:
        system.slack.add_user(ALICE, "Alice Anders")
        view_id = await open_defaults(system, ALICE)
        submitted = await system.slack.submit_view(ALICE, view_id, entered(odd, "", "fix_this_now"))
        assert await system.slack.acked(submitted) is None
        text = text_of(await home_shows(system, ALICE, "fix_this_now"))
        assert "<!channel>" not in text and "<b>" not in text
        assert "`acme/&lt;!channel&gt;*bold*&amp;&lt;b&gt;x`" in text  # literal, in code
        assert "`fix_this_now`" in text  # underscores stay underscores, not italics


async def test_with_more_repositories_than_a_menu_holds_the_default_is_typed(
    own_database_url: str, data_dir: Path
) -> None:
    names = [f"team{n % 7}/service-{n}" for n in range(120)]
    async with start_slack(
        own_database_url, data_dir, repositories=repositories(data_dir, *names)
    ) as system:
        system.slack.add_user(ALICE, "Alice Anders")
        view_id = await open_defaults(system, ALICE)
        element = system.slack.modals[view_id]["blocks"][0]["element"]
        assert element["type"] == "plain_text_input"
        unknown = await system.slack.submit_view(ALICE, view_id, entered("team1/nope"))
        assert set((await system.slack.acked(unknown))["errors"]) == {"repository"}
        typed = await system.slack.submit_view(ALICE, view_id, entered("TEAM3/Service-101"))
        assert await system.slack.acked(typed) is None
        assert (await system.engine.defaults_of(ALICE_ID)).repository == "team3/service-101"


def test_the_home_keeps_to_its_caps_however_long_the_history() -> None:
    """What the engine gives the Home is bounded; so is what the Home makes of the totals."""
    at = datetime(2026, 1, 2, 3, 4, tzinfo=UTC)
    found = PersonSessions(
        [
            SessionSummary(f"s{n}", "acme/web", "idle", f"slack:T:D1:{n}.1", at, at, work)
            for n in range(render.SESSIONS_ASKED)
            for work in ("running", None)
        ],
        total=100_000,
        working=5_000,
    )
    view = render.home(found, {}, Defaults(), None, None, "UBOT")
    text = text_of(view["blocks"])
    assert len(view["blocks"]) <= MAX_VIEW_BLOCKS
    lines = [b for b in view["blocks"] if "`acme/web`" in text_of([b])]
    assert len(lines) == ACTIVE_SHOWN + RECENT_SHOWN
    assert not any("accessory" in b for b in lines)  # no links could be made: no buttons
    assert "and 4985 more active" in text and "and 94980 more" in text
    assert "in a DM" in text and "2026-01-02 03:04 UTC" in text
