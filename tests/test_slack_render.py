"""What the bot writes to Slack and how it reads what people wrote, without a network."""

from __future__ import annotations

import pytest

from bot.render import cards
from bot.render.mrkdwn import cut, escape, mentioned_users, plain
from bot.repositories import by_keyword, named_in

KNOWN = ["acme/calc", "acme/Web-App", "other/tool"]


def test_untrusted_text_cannot_notify_or_link() -> None:
    hostile = "<!channel> <!here> <@U123> <https://evil.example|click> & done"
    shown = escape(hostile)
    assert "<" not in shown and ">" not in shown
    assert shown.startswith("&lt;!channel&gt; &lt;!here&gt; &lt;@U123&gt;")
    assert "&amp; done" in shown


def test_what_people_wrote_reaches_the_agent_readably() -> None:
    text = "<@UBOB> look at <#C1|general> and <https://x.example/a|the docs> &lt;b&gt; &amp; <https://y.example>"
    assert plain(text, {"UBOB": "Bob"}) == (
        "@Bob look at #general and the docs (https://x.example/a) <b> & https://y.example"
    )
    assert mentioned_users("<@UBOT> hi <@UBOB|bob>") == ["UBOT", "UBOB"]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("please fix acme/calc now", "acme/calc"),
        ("fix ACME/CALC.", "acme/calc"),
        ("see https://github.com/acme/web-app/pull/3", "acme/Web-App"),
        ("clone https://github.com/acme/calc.git please", "acme/calc"),
        ("fix acme/unknown", None),
        ("fix the calculator", None),
    ],
)
def test_a_request_names_a_repository_only_with_a_known_name(
    text: str, expected: str | None
) -> None:
    assert named_in(text, KNOWN) == expected


def test_keyword_rules_pick_a_known_repository() -> None:
    rules = [["calculator", "acme/calc"], ["ghost", "acme/ghost"], ["tool", "other/tool"]]
    assert by_keyword("the Calculator is broken", rules, KNOWN) == "acme/calc"
    assert by_keyword("the ghost is broken", rules, KNOWN) is None  # not a known repository
    assert by_keyword("nothing here", rules, KNOWN) is None


def _within_slack_limits(blocks: list[dict]) -> None:
    assert len(blocks) <= 50
    for block in blocks:
        if block["type"] == "section":
            assert len(block["text"]["text"]) <= 3000
        if block["type"] == "context":
            assert all(len(e["text"]) <= 3000 for e in block["elements"])


def test_a_huge_answer_and_300_files_fit_in_one_card() -> None:
    files = [{"path": f"src/f{n}.py", "additions": n, "deletions": 1} for n in range(300)]
    progress = cards.Progress(
        1, "Alice", state="done", answer="word " * 20_000 + "<!channel>", stat="300 files changed",
        files=files, total_files=300, commit="abcdef1234567890",
    )  # fmt: skip
    text, blocks = cards.completion(progress, "s1", "http://page/s/x", "1 in · 2 out", None)
    _within_slack_limits(blocks)
    assert len(text) <= 3000 and "<!channel>" not in text
    rendered = str(blocks)
    assert "the whole answer is on <http://page/s/x|the session page>" in rendered
    assert "and 285 more" in rendered and "<!channel>" not in rendered
    assert any(e.get("action_id") == cards.PR_ACTION for e in blocks[-1]["elements"])


def test_status_and_failure_messages_fit_and_offer_stop_only_while_it_can_stop() -> None:
    running = cards.Progress(1, "Bob", state="running", steps=3, last_step="bash: `x`" * 500)
    _, blocks = cards.status(running, "s1", "http://page")
    _within_slack_limits(blocks)
    assert [e["action_id"] for e in blocks[-1]["elements"]] == ["view_session", cards.STOP_ACTION]
    done = cards.Progress(1, "Bob", state="failed", reason="x" * 10_000)
    _, blocks = cards.failure(done, "http://page")
    _within_slack_limits(blocks)
    _, blocks = cards.status(done, "s1", "http://page")
    assert [e["action_id"] for e in blocks[-1]["elements"]] == ["view_session"]


def test_the_repository_menu_lists_up_to_100_and_searches_beyond() -> None:
    _, blocks = cards.repository_picker([f"o/r{n}" for n in range(100)], "123.456")
    menu = blocks[1]["elements"][0]
    assert menu["type"] == "static_select" and len(menu["options"]) == 100
    assert blocks[1]["block_id"] == "pick:123.456"
    _, blocks = cards.repository_picker([f"o/r{n}" for n in range(101)], "123.456")
    menu = blocks[1]["elements"][0]
    assert menu["type"] == "external_select" and "options" not in menu


def test_cut_keeps_within_the_limit_and_says_so() -> None:
    assert cut("short", 10, "…") == "short"
    cut_text = cut("line one\nline two\nline three", 20, "[cut]")
    assert len(cut_text) <= 20 and cut_text.endswith("[cut]")
