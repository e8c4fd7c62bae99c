"""The settings in admins' App Home, driven as people use them through the Slack emulator and
the real bot: secrets added in a modal whose value goes nowhere but the store, channel
defaults and keyword rules that later requests follow, and nobody else changing anything."""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from bot.render import admin as render
from bot.render.home import home as home_view
from core.models import Defaults, PersonSessions, SessionSummary
from core.secrets import SecretInfo
from tests.engine_helpers import until
from tests.slack_fixtures import SlackSystem, home_shows, start_slack
from tests.test_slack_home import repositories

ALICE, BOB, CAROL = "UALICE", "UBOB", "UCAROL"  # Alice is the admin
TEAM = "T0EMULATOR"
ALICE_ID = f"slack:{TEAM}:{ALICE}"
VALUE = "npm_Zq7-very-secret-value-4711"


@pytest.fixture
async def system(own_database_url: str, data_dir: Path):
    repos = repositories(data_dir, "acme/calc", "acme/web", "acme/api")
    async with start_slack(own_database_url, data_dir, repositories=repos, admins=[ALICE]) as s:
        yield s


def text_of(blocks: list[dict[str, Any]]) -> str:
    return json.dumps(blocks, ensure_ascii=False)


def home_of(system: SlackSystem, user: str) -> str:
    return text_of(system.slack.home_views[user]["blocks"])


async def open_home(system: SlackSystem, user: str, needle: str) -> list[dict[str, Any]]:
    await system.slack.open_home(user)
    return await home_shows(system, user, needle)


async def open_modal(system: SlackSystem, user: str, action_id: str) -> str:
    """The person clicks a button of their Home that opens a modal: its view id."""
    before = set(system.slack.modals)
    await system.slack.click_view(user, system.slack.home_views[user]["id"], action_id)
    (view_id,) = await until(lambda: set(system.slack.modals) - before, what="the modal")
    return view_id


async def submit(system: SlackSystem, user: str, view_id: str, **values: Any) -> dict | None:
    """Submit a modal with {block_id: what is entered}: the app's answer (None: it closed)."""
    entered = {block: {block: value} for block, value in values.items()}
    return await system.slack.acked(await system.slack.submit_view(user, view_id, entered))


def removal(blocks: list[dict[str, Any]], action_id: str, line: str) -> str:
    """The value of the Delete or Remove button on the Home's line that says `line`."""
    for block in blocks:
        accessory = block.get("accessory") or {}
        if accessory.get("action_id") == action_id and line in block["text"]["text"]:
            return accessory["value"]
    raise AssertionError(f"no {action_id} button on a line with {line!r}: {text_of(blocks)}")


async def test_only_an_admins_home_has_the_settings_with_secret_names_and_no_values(
    system: SlackSystem,
) -> None:
    await system.engine.secrets.set("API_TOKEN", VALUE, None, "cli:ops")
    await system.engine.secrets.set("DEPLOY_KEY", VALUE + "2", "acme/web", ALICE_ID)
    blocks = await open_home(system, ALICE, "Settings")
    text = text_of(blocks)
    assert "`API_TOKEN` · _all repositories_" in text and "by `cli:ops`" in text
    assert "`DEPLOY_KEY` · `acme/web`" in text and f"by <@{ALICE}>" in text
    assert VALUE not in text
    assert "Add secret" in text and "Add channel default" in text and "Add keyword rule" in text

    bobs = text_of(await open_home(system, BOB, "Your sessions"))
    assert "API_TOKEN" not in bobs and "admin" not in bobs.lower()
    assert not any(action in bobs for action in render.ACTIONS)
    assert "secret" not in bobs.lower() and "Settings" not in bobs


async def test_an_admin_adds_a_secret_whose_value_goes_only_to_the_store_then_deletes_it(
    system: SlackSystem, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)  # every line, of every library
    await open_home(system, ALICE, "Add secret")
    view_id = await open_modal(system, ALICE, render.ADD_SECRET_ACTION)
    modal = system.slack.modals[view_id]
    options = modal["blocks"][1]["element"]["options"]
    assert [o["value"] for o in options] == ["-", "acme/api", "acme/calc", "acme/web"]
    answer = await submit(
        system,
        ALICE,
        view_id,
        secret_name="NPM_TOKEN",
        secret_repository="acme/web",
        secret_value=VALUE,
    )
    assert answer is None  # a bare ack closes the modal
    assert (await system.engine.secrets.values_for("acme/web")) == {"NPM_TOKEN": VALUE}
    assert await system.engine.secrets.values_for("acme/api") == {}
    blocks = await home_shows(system, ALICE, "NPM_TOKEN")
    assert "`NPM_TOKEN` · `acme/web` · changed <!date^" in text_of(blocks)

    # The value went from the submission to the store: no Slack call, no other delivery, no
    # answer, no row in clear, no log line has it.
    submissions = [e for e in system.slack.envelopes if e.payload.get("type") == "view_submission"]
    (submission,) = submissions
    assert VALUE in json.dumps(submission.payload)
    assert [c["method"] for c in system.slack.journal if VALUE in json.dumps(c)] == []
    others = [e for e in system.slack.envelopes if e is not submission]
    assert not [e.payload.get("type") for e in others if VALUE in json.dumps(e.payload)]
    assert not [e for e in system.slack.envelopes if VALUE in json.dumps(e.response or {})]
    pool = system.runtime.pool
    for table in await pool.fetch("SELECT tablename FROM pg_tables WHERE schemaname = 'public'"):
        rows = await pool.fetchval(
            f'SELECT count(*) FROM "{table[0]}" AS r WHERE r::text LIKE $1', f"%{VALUE}%"
        )
        assert rows == 0, f"the value is in clear in {table[0]}"
    assert VALUE not in caplog.text

    key = removal(blocks, render.DELETE_SECRET_ACTION, "NPM_TOKEN")
    assert json.loads(key) == {"name": "NPM_TOKEN", "repository": "acme/web"}
    home_id = system.slack.home_views[ALICE]["id"]
    await system.slack.click_view(ALICE, home_id, render.DELETE_SECRET_ACTION, key)
    await until(
        lambda: "NPM_TOKEN" not in home_of(system, ALICE), what="the Home without the secret"
    )
    assert await system.engine.secrets.list() == []
    assert "Secrets* (0)" in home_of(system, ALICE)


async def test_what_is_wrong_comes_back_on_its_field_and_nothing_is_stored(
    system: SlackSystem,
) -> None:
    await open_home(system, ALICE, "Add secret")
    view_id = await open_modal(system, ALICE, render.ADD_SECRET_ACTION)
    crafted = {"type": "static_select", "selected_option": {"value": "acme/nope"}}
    answer = await submit(
        system,
        ALICE,
        view_id,
        secret_name="npm token",
        secret_repository=crafted,
        secret_value="   ",
    )
    assert answer is not None and answer["response_action"] == "errors"
    errors = answer["errors"]
    assert set(errors) == {"secret_name", "secret_repository", "secret_value"}, errors
    assert "NPM_TOKEN" in errors["secret_name"] and "acme/nope" in errors["secret_repository"]
    assert "empty" in errors["secret_value"]
    await until(lambda: system.slack.modals[view_id].get("errors"), what="errors on the modal")

    too_long = "x" * (render.VALUE_INPUT_LIMIT + 1)
    answer = await submit(system, ALICE, view_id, secret_name="PATH", secret_value=too_long)
    assert set(answer["errors"]) == {"secret_name", "secret_value"}, answer
    assert "used by the sandbox" in answer["errors"]["secret_name"]
    assert "longer than 3000" in answer["errors"]["secret_value"]
    assert too_long not in json.dumps(answer)
    assert await system.engine.secrets.list() == []

    await open_home(system, ALICE, "Add keyword rule")
    rule = await open_modal(system, ALICE, render.ADD_KEYWORD_ACTION)
    answer = await submit(system, ALICE, rule, keyword="two words")
    assert set(answer["errors"]) == {"keyword", "keyword_repository"}, answer
    channel = await open_modal(system, ALICE, render.ADD_CHANNEL_ACTION)
    answer = await submit(system, ALICE, channel, channel_repository="acme/web")
    assert set(answer["errors"]) == {"channel"}, answer
    assert await system.engine.settings_all() == {}


async def test_a_non_admin_changes_nothing_whatever_they_submit_or_click(
    system: SlackSystem,
) -> None:
    await system.engine.secrets.set("API_TOKEN", VALUE, None, ALICE_ID)
    before = await system.engine.secrets.list()
    # A modal an admin opened, submitted by someone else (as a crafted payload would be).
    await open_home(system, ALICE, "Add secret")
    alices = await open_modal(system, ALICE, render.ADD_SECRET_ACTION)
    answer = await submit(system, BOB, alices, secret_name="API_TOKEN", secret_value="stolen")
    assert answer == {"response_action": "errors", "errors": {"secret_name": render.REFUSED}}
    rule = await open_modal(system, ALICE, render.ADD_KEYWORD_ACTION)
    answer = await submit(system, BOB, rule, keyword="billing", keyword_repository="acme/api")
    assert answer == {"response_action": "errors", "errors": {"keyword": render.REFUSED}}

    # Carol was an admin when her Home and modal were made, and is none by the time she acts.
    system.engine.settings.admins = [ALICE, CAROL]
    carols = await open_home(system, CAROL, "Add secret")
    modal = await open_modal(system, CAROL, render.ADD_SECRET_ACTION)
    system.engine.settings.admins = [ALICE]
    key = removal(carols, render.DELETE_SECRET_ACTION, "API_TOKEN")
    home_id = system.slack.home_views[CAROL]["id"]
    await system.slack.click_view(CAROL, home_id, render.DELETE_SECRET_ACTION, key)
    await until(
        lambda: "API_TOKEN" not in home_of(system, CAROL), what="Carol's Home without the settings"
    )
    assert "Settings" not in home_of(system, CAROL)
    answer = await submit(system, CAROL, modal, secret_name="OTHER", secret_value="v")
    assert answer == {"response_action": "errors", "errors": {"secret_name": render.REFUSED}}

    assert await system.engine.secrets.list() == before
    assert await system.engine.secrets.values_for(None) == {"API_TOKEN": VALUE}
    assert await system.engine.settings_all() == {}


async def test_channel_defaults_and_keyword_rules_set_in_the_home_route_later_requests(
    system: SlackSystem,
) -> None:
    general = system.slack.general
    await open_home(system, ALICE, "Add keyword rule")
    rule = await open_modal(system, ALICE, render.ADD_KEYWORD_ACTION)
    assert (
        await submit(system, ALICE, rule, keyword="Billing", keyword_repository="acme/api") is None
    )
    blocks = await home_shows(system, ALICE, "`billing` → `acme/api`")
    asked = await system.slack.mention(CAROL, general, "the billing page is slow")
    info = await system.engine.session(await system.session_of(general, asked))
    assert info.repository == "acme/api"

    channel = await open_modal(system, ALICE, render.ADD_CHANNEL_ACTION)
    answer = await submit(system, ALICE, channel, channel=general, channel_repository="acme/web")
    assert answer is None
    blocks = await home_shows(system, ALICE, f"<#{general}> → `acme/web`")
    asked = await system.slack.mention(CAROL, general, "make it faster")
    info = await system.engine.session(await system.session_of(general, asked))
    assert info.repository == "acme/web"
    by = await system.runtime.pool.fetch("SELECT name, updated_by FROM settings ORDER BY name")
    assert [tuple(r) for r in by] == [
        (f"slack.channel_default:{general}", ALICE_ID),
        ("slack.keyword_rules", ALICE_ID),
    ]

    home_id = system.slack.home_views[ALICE]["id"]
    value = removal(blocks, render.REMOVE_CHANNEL_ACTION, general)
    await system.slack.click_view(ALICE, home_id, render.REMOVE_CHANNEL_ACTION, value)
    value = removal(blocks, render.REMOVE_KEYWORD_ACTION, "billing")
    await system.slack.click_view(ALICE, home_id, render.REMOVE_KEYWORD_ACTION, value)
    await until(
        lambda: "No keyword rules yet" in home_of(system, ALICE), what="the Home without the rule"
    )
    assert "No channel defaults yet" in home_of(system, ALICE)
    assert await system.engine.settings_all() == {}


def test_an_admins_home_keeps_within_100_blocks_however_much_there_is() -> None:
    at = datetime(2026, 1, 2, 3, 4, tzinfo=UTC)
    found = PersonSessions(
        [
            SessionSummary(f"s{n}", "acme/web", "idle", f"slack:T:D1:{n}.1", at, at, work)
            for n in range(40)
            for work in ("running", None)
        ],
        total=1000,
        working=500,
    )
    view = home_view(found, {}, Defaults(), None, None, "UBOT", "https://gh.example/link")
    secrets = [SecretInfo(f"S_{n}", None, at, ALICE_ID) for n in range(500)]
    channels = {f"C{n:05d}": "acme/web" for n in range(500)}
    rules = [[f"word{n}", "acme/web"] for n in range(500)]
    blocks = view["blocks"] + render.settings(secrets, channels, rules)
    print(f"an admin's Home at its fullest: {len(blocks)} blocks")
    assert len(blocks) <= 100
    text = text_of(blocks)
    assert "and 480 more" in text and text.count("and 490 more") == 2
