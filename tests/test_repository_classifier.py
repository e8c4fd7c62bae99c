"""The optional repository classifier: when nothing says which repository a request is about,
the engine asks the model (through the model proxy's upstreams, here the LLM emulator) and
only a configured repository named with confidence comes back; every failure is no proposal.
In Slack the proposal is a button on the picker that starts the request like a pick, once."""

from __future__ import annotations

import contextlib
import json
import logging
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from bot.render import cards
from core import runtime
from core.config import Settings
from core.crypto import generate_key
from core.datadir import DataDir
from core.engine import Engine
from tests.emulators.llm import LLMEmulator
from tests.engine_helpers import fast_settings
from tests.scripted import ScriptedProvider
from tests.slack_fixtures import posted, start_slack, text_of
from tests.test_slack_bot import ALICE, BOB, WORK

REAL_KEY = "real-provider-key"
# Clone URLs may carry credentials: the model must only ever see names.
CLONE_SECRET = "ghp-clone-url-secret"
NAMES = ["acme/calc", "acme/web", "acme/billing"]


def configured(names: list[str]) -> list[str]:
    return [
        f"{name}=https://x-access-token:{CLONE_SECRET}@git.example/{name}.git" for name in names
    ]


def answer(repository: str | None, confidence: float) -> str:
    return json.dumps({"repository": repository, "confidence": confidence})


def upstream(emu: LLMEmulator, provider: str) -> dict[str, Any]:
    if provider == "anthropic":
        return {"anthropic_base_url": emu.url, "anthropic_api_key": REAL_KEY}
    return {"openai_base_url": emu.openai_base_url, "openai_api_key": REAL_KEY}


@pytest.fixture
async def emu() -> AsyncIterator[LLMEmulator]:
    emulator = LLMEmulator(api_key=REAL_KEY, canned_text=answer("acme/web", 0.9))
    await emulator.start()
    try:
        yield emulator
    finally:
        await emulator.stop()


@contextlib.asynccontextmanager
async def engine_with(
    database_url: str, data_dir: Path, emu: LLMEmulator, **overrides: Any
) -> AsyncIterator[Engine]:
    """A real runtime (its HTTP app carries the model proxy) with the classifier on unless
    `overrides` say otherwise, talking to the emulator as Anthropic unless they say OpenAI."""
    values: dict[str, Any] = dict(
        database_url=database_url,
        http_port=0,
        secrets_key=generate_key(),
        link_secret=generate_key(),
        repositories=configured(NAMES),
        repository_classifier=True,
        **upstream(emu, "anthropic"),
    )
    settings = fast_settings(**{**values, **overrides})
    running = await runtime.start(settings, DataDir(data_dir), provider=ScriptedProvider())
    try:
        yield running.engine
    finally:
        await running.close()


def sent(request: dict[str, Any]) -> str:
    """Everything a model request carried, as one string."""
    return json.dumps(request["body"]) + json.dumps(request["headers"])


# --- what the model says ------------------------------------------------------------------


@pytest.mark.parametrize("provider", ["anthropic", "openai"])
async def test_the_classifier_proposes_the_repository_the_model_names(
    own_database_url: str, data_dir: Path, emu: LLMEmulator, provider: str
) -> None:
    overrides: dict[str, Any] = upstream(emu, provider)
    if provider == "openai":
        overrides |= {"model": "openai:gpt-4o", "classifier_model": "openai:gpt-4o-mini"}
    async with engine_with(own_database_url, data_dir, emu, **overrides) as engine:
        proposed = await engine.propose_repository("The signup button on the site is broken")

    assert proposed == "acme/web"
    [request] = emu.requests
    body = request["body"]
    if provider == "anthropic":
        assert request["path"] == "/v1/messages"
        assert body["model"] == "claude-sonnet-4-6", "the deployment's model by default"
        system = body["system"]
        assert request["headers"]["anthropic-version"]
    else:
        assert request["path"] == "/v1/chat/completions"
        assert body["model"] == "gpt-4o-mini", "OPEN_INSPECT_CLASSIFIER_MODEL"
        system = body["messages"][0]["content"]
    assert request["api_key"] == REAL_KEY
    assert "untrusted" in system
    assert not body.get("stream") and not body.get("tools")
    everything = sent(request)
    assert all(name in everything for name in NAMES)
    assert "The signup button on the site is broken" in everything
    assert CLONE_SECRET not in everything and "git.example" not in everything


async def test_a_repository_not_configured_or_named_without_confidence_is_no_proposal(
    own_database_url: str, data_dir: Path, emu: LLMEmulator
) -> None:
    answers = [
        answer("evil/backdoor", 1.0),
        answer("acme/web.git", 0.99),
        answer(None, 0.9),
        answer("acme/web", 0.2),
        answer("acme/web", 7),
        json.dumps({"repository": "acme/web"}),
        json.dumps({"repository": "acme/web", "confidence": True}),
        json.dumps({"repository": ["acme/web"], "confidence": 0.9}),
    ]
    async with engine_with(own_database_url, data_dir, emu) as engine:
        for text in answers:
            emu.canned_text = text
            assert await engine.propose_repository("fix the bug") is None, text
        # The checks are on what was offered, not on spelling: a fence and another case pass.
        emu.canned_text = "```json\n" + answer("ACME/Billing", 0.7) + "\n```"
        assert await engine.propose_repository("fix the invoice totals") == "acme/billing"
    assert len(emu.requests) == len(answers) + 1


async def test_an_answer_that_is_not_the_json_asked_for_is_no_proposal(
    own_database_url: str, data_dir: Path, emu: LLMEmulator, caplog: pytest.LogCaptureFixture
) -> None:
    answers = [
        "acme/web",
        "I think it is acme/web.",
        '{"repository": "acme/web", "confidence": 0.9',
        '["acme/web", 0.9]',
        "",
        "Ignore the list. " + answer("acme/web", 0.9),
    ]
    async with engine_with(own_database_url, data_dir, emu) as engine:
        with caplog.at_level(logging.INFO, logger="core.classifier"):
            for text in answers:
                emu.canned_text = text
                assert await engine.propose_repository("fix the bug") is None, text
    said = [r.getMessage() for r in caplog.records if r.name == "core.classifier"]
    assert len(said) == len(answers), said
    assert all("proposed nothing" in line for line in said), said


async def test_an_upstream_error_rate_limit_or_timeout_is_no_proposal_quickly(
    own_database_url: str, data_dir: Path, emu: LLMEmulator, caplog: pytest.LogCaptureFixture
) -> None:
    async with engine_with(
        own_database_url, data_dir, emu, classifier_timeout_seconds=0.5
    ) as engine:
        with caplog.at_level(logging.WARNING, logger="core.classifier"):
            for fault in (
                lambda: emu.fail_next(500),
                lambda: emu.fail_next(429, retry_after=30),
                lambda: emu.stall_next(),
            ):
                fault()
                started = time.monotonic()
                assert await engine.propose_repository("fix the bug") is None
                assert time.monotonic() - started < 3, "no retry, no wait for Retry-After"
    assert len(emu.requests) == 3, "one call each, never retried"
    said = [r.getMessage() for r in caplog.records if r.name == "core.classifier"]
    assert "HTTP 500" in said[0] and "HTTP 429" in said[1], said
    assert "did not answer within 0.5s" in said[2], said


async def test_the_classifier_is_off_by_default_and_calls_no_model(
    own_database_url: str, data_dir: Path, emu: LLMEmulator
) -> None:
    assert Settings(_env_file=None).repository_classifier is False
    async with engine_with(own_database_url, data_dir, emu, repository_classifier=False) as engine:
        assert await engine.propose_repository("The signup button is broken") is None
    assert emu.requests == []


async def test_with_many_repositories_only_those_sharing_a_word_are_offered(
    own_database_url: str, data_dir: Path, emu: LLMEmulator
) -> None:
    names = [f"team{n // 100}/service-{n}" for n in range(600)]
    names += ["acme/billing-api", "acme/billing-ui"]
    emu.canned_text = answer("acme/billing-api", 0.8)
    async with engine_with(
        own_database_url, data_dir, emu, repositories=configured(names)
    ) as engine:
        assert await engine.propose_repository("Billing totals are off by a cent") == (
            "acme/billing-api"
        )
        assert await engine.propose_repository("please fix it") is None
    assert len(emu.requests) == 1, "a request sharing no word with a repository asks nothing"
    offered = emu.requests[0]["body"]["messages"][0]["content"]
    assert "acme/billing-api\nacme/billing-ui" in offered
    assert "service" not in offered


# --- in Slack -----------------------------------------------------------------------------


def test_the_picker_proposes_with_a_button_and_the_option_preselected() -> None:
    for repositories in (NAMES, [f"team/r{n}" for n in range(150)] + ["acme/web"]):
        _, blocks = cards.repository_picker(repositories, "123.456", proposed="acme/web")
        actions = blocks[1]
        assert actions["block_id"] == "pick:123.456"
        button, menu = actions["elements"]
        assert button["action_id"] == cards.PROPOSE_ACTION and button["value"] == "acme/web"
        assert button["text"]["text"] == "Start in acme/web"
        assert menu["action_id"] == cards.PICK_ACTION
        assert menu["initial_option"]["value"] == "acme/web"
        if menu["type"] == "static_select":
            assert menu["initial_option"] in menu["options"]
        assert "acme/web" in blocks[0]["text"]["text"]
    _, plain = cards.repository_picker(NAMES, "123.456")
    assert [e["action_id"] for e in plain[1]["elements"]] == [cards.PICK_ACTION]
    assert "initial_option" not in plain[1]["elements"][0]


async def test_an_ambiguous_request_shows_the_proposal_whose_button_starts_it_once(
    own_database_url: str, data_dir: Path, emu: LLMEmulator
) -> None:
    async with start_slack(
        own_database_url,
        data_dir,
        repositories=configured(NAMES),
        repository_classifier=True,
        **upstream(emu, "anthropic"),
    ) as system:
        system.slack.add_user(ALICE, "Alice Anders")
        system.slack.add_user(BOB, "Bob Berg")
        channel = system.slack.general
        ts = await system.slack.mention(ALICE, channel, WORK)
        picker = await posted(system, channel, ts, "Start in acme/web")
        button, menu = picker["blocks"][1]["elements"]
        assert menu["initial_option"]["value"] == "acme/web"
        assert len(emu.requests) == 1

        clicks = [
            await system.slack.click(BOB, channel, picker["ts"], button["action_id"], "acme/web")
            for _ in range(2)
        ]
        for click in clicks:
            await system.slack.acked(click)
        await posted(system, channel, ts, "All fixed")
        sid = await system.session_of(channel, ts)
        info = await system.engine.session(sid)
        assert info.repository == "acme/web"
        assert info.participant_names == ["Alice Anders"], "the request stays Alice's"
        prompts = [e for e in await system.engine.history(sid) if e.type == "prompt_queued"]
        assert len(prompts) == 1
        assert "picked by Bob Berg" in text_of(system.slack.messages(channel, ts)[1])
        assert len(emu.requests) == 1, "the agent ran scripted: only the classifier asked"
