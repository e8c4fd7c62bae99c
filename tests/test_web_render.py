"""Rendering untrusted transcript text, diffs, and the transcript model's live operations."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from core.links import LinkRefused, LinkSigner
from core.models import Event, SessionInfo
from web_minimal.render import markdown, parse_diff, part
from web_minimal.transcript import Transcript

AT = datetime(2026, 11, 28, 12, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("source", "absent", "present"),
    [
        ("<script>alert(1)</script>", "<script", "&lt;script&gt;"),
        ('<img src=x onerror="alert(1)">', "<img", "&lt;img"),
        ("[x](javascript:alert(1))", 'href="javascript', "[x](javascript:alert(1))"),
        ("[x](JaVaScRiPt:alert(1))", "href=", "[x]"),
        ("[x](java\tscript:alert(1))", "href=", "[x]"),
        ("[x](data:text/html,<script>alert(1)</script>)", "href=", "[x]"),
        ("[x](vbscript:msgbox)", "href=", "[x]"),
        ("![pixel](https://tracker.example/p.png)", "<img", 'href="https://tracker.example/p.png"'),
        ('<a href="https://example.com">raw</a>', "<a href", "&lt;a href="),
        ("<iframe src=//evil></iframe>", "<iframe", "&lt;iframe"),
        ("[ok](https://example.com/a?b=1&c=2)", "javascript", 'rel="nofollow noopener noreferrer"'),
    ],
)
def test_markdown_keeps_untrusted_text_inert(source: str, absent: str, present: str) -> None:
    rendered = str(markdown(source))
    assert absent not in rendered, rendered
    assert present in rendered, rendered


def test_markdown_renders_what_people_write() -> None:
    rendered = str(
        markdown("# Title\n\n- **bold** and `code`\n\n```py\nx < 1\n```\n\n|a|b|\n|-|-|\n|1|2|")
    )
    assert "<h1>Title</h1>" in rendered and "<strong>bold</strong>" in rendered
    assert "<code>code</code>" in rendered and "x &lt; 1" in rendered and "<table>" in rendered


def test_parse_diff_splits_files_and_classifies_lines() -> None:
    diff = (
        "diff --git a/old.py b/new.py\nsimilarity index 90%\nrename from old.py\nrename to new.py\n"
        "--- a/old.py\n+++ b/new.py\n@@ -1 +1 @@\n-a\n+b\n"
        "diff --git a/logo.png b/logo.png\nBinary files a/logo.png and b/logo.png differ\n"
        "diff --git a/gone.txt b/gone.txt\ndeleted file mode 100644\n"
        "--- a/gone.txt\n+++ /dev/null\n@@ -1 +0,0 @@\n-bye\n[diff truncated after 120 bytes]\n"
    )
    parsed = parse_diff(diff)
    assert [f.path for f in parsed.files] == ["new.py", "logo.png", "gone.txt"]
    assert [(line.kind, line.text) for line in parsed.files[0].lines[-3:]] == [
        ("hunk", "@@ -1 +1 @@"),
        ("del", "-a"),
        ("add", "+b"),
    ]
    assert parsed.files[1].binary
    assert parsed.files[2].lines[-1].kind == "del"
    assert parsed.truncated == "diff truncated after 120 bytes"


def test_diff_code_is_highlighted_line_by_line_and_stays_escaped() -> None:
    diff = (
        "diff --git a/m.py b/m.py\n--- a/m.py\n+++ b/m.py\n@@ -1,3 +1,4 @@\n"
        ' def f(x):\n+    """Two\n+    lines."""\n-    return x < 1  # <b>\n+    return x > 1\n'
        "diff --git a/notes.unknownext b/notes.unknownext\n--- a/n\n+++ b/notes.unknownext\n"
        "@@ -0,0 +1 @@\n+<script>\n"
    )
    py, plain = parse_diff(diff).files
    code = [str(line.code) for line in py.lines if line.kind != "hunk" and line.code]
    assert code[0] == ' <span class="hl-k">def</span> <span class="hl-nf">f</span>(x):'
    # A docstring spanning two lines is closed and reopened, so every line is balanced.
    assert code[1] == '+    <span class="hl-s">&#34;&#34;&#34;Two</span>'
    assert code[2] == '+<span class="hl-s">    lines.&#34;&#34;&#34;</span>'
    assert "&lt;" in code[3] and "<b>" not in code[3] and '<span class="hl-c">' in code[3]
    assert all(c.count("<span") == c.count("</span>") for c in code)
    assert plain.lines[-1].code is None  # no lexer: shown as text, escaped by the template
    assert "&lt;script&gt;" in part("files", f=_files(plain))


def _files(diff_file: object) -> object:
    from web_minimal.render import ParsedDiff
    from web_minimal.transcript import Files

    return Files(ParsedDiff([diff_file], None), [], "", True)  # type: ignore[list-item]


def _info(**changes: object) -> SessionInfo:
    values = dict(
        id="s1", repository="acme/calc", state="running", owner_replica=None, owner_epoch=1,
        last_seq=0, created_at=AT, participant_names=["Alice"],
    )  # fmt: skip
    values.update(changes)
    return SessionInfo(**values)  # type: ignore[arg-type]


def _event(seq: int, type: str, data: dict, prompt_id: int | None = 1) -> Event:
    return Event("s1", seq, type, data, prompt_id, AT)


def test_live_operations_follow_the_agent() -> None:
    transcript = Transcript(_info())
    author = {"id": "u", "name": "Bob"}
    ops = transcript.feed(_event(1, "prompt_queued", {"author": author, "text": "go"}))
    assert [(o.action, o.target) for o in ops] == [("append", "transcript"), ("replace", "header")]
    assert transcript.header.participants == ["Alice", "Bob"]
    transcript.feed(_event(2, "prompt_started", {}))
    ops = transcript.feed(_event(3, "text_delta", {"text": "Hello "}))
    assert [(o.action, o.target) for o in ops] == [("append", "p1-items")]
    ops = transcript.feed(_event(4, "text_delta", {"text": "**world**"}))
    assert [(o.action, o.target, o.text) for o in ops] == [("text", "t3", "**world**")]
    # The next tool call closes the block: it is replaced by its markdown.
    ops = transcript.feed(_event(5, "tool_call", {"id": "a/b", "name": "bash", "input": {}}))
    assert [(o.action, o.target) for o in ops] == [("replace", "t3"), ("append", "p1-items")]
    assert "<strong>world</strong>" in part(ops[0].part, **ops[0].context)
    ops = transcript.feed(_event(6, "tool_result", {"id": "a/b", "output": "ok"}))
    assert [o.target for o in ops] == ["c1-a_b-result", "c1-a_b-status"]
    ops = transcript.feed(_event(7, "sandbox_stopped", {"reason": "idle"}, prompt_id=None))
    assert [(o.action, o.target) for o in ops] == [("append", "p1-items")]  # told in the prompt
    transcript.feed(_event(8, "prompt_finished", {"state": "failed", "reason": "boom"}))
    ops = transcript.feed(_event(9, "sandbox_started", {}, prompt_id=None))
    assert [(o.action, o.target) for o in ops] == [("append", "transcript")]
    assert transcript.entries[0].items[-1].message == "boom"


def test_a_stream_resumed_inside_a_text_block_continues_it() -> None:
    transcript = Transcript(_info(last_seq=4))
    transcript.resume_text(
        [_event(3, "text_delta", {"text": "Hel"}), _event(4, "text_delta", {"text": "lo"})]
    )
    assert transcript.feed(_event(5, "text_delta", {"text": "!"}))[0].target == "t3"
    closed = transcript.feed(_event(6, "prompt_finished", {"state": "done"}))[0]
    assert closed.target == "t3" and "Hello!" in part(closed.part, **closed.context)


def test_usage_and_state_already_counted_in_the_header_are_not_added_again() -> None:
    transcript = Transcript(_info(last_seq=5, input_tokens=100, cost_usd=1.0))
    assert transcript.feed(_event(5, "usage", {"input_tokens": 100, "cost_usd": 1.0})) == []
    transcript.feed(_event(6, "usage", {"input_tokens": 20, "cost_usd": 0.5}))
    assert (transcript.header.input_tokens, transcript.header.cost_usd) == (120, 1.5)


def test_links_are_signed_and_expire() -> None:
    signer = LinkSigner("secret")
    token = signer.sign("abcdefgh2345", 3, 2_000_000_000)
    claim = signer.verify(token, now=1_900_000_000)
    assert (claim.session_id, claim.generation, claim.expires_at) == (
        "abcdefgh2345",
        3,
        2_000_000_000,
    )
    with pytest.raises(LinkRefused) as expired:
        signer.verify(token, now=2_000_000_000)
    assert expired.value.reason == "expired"
    for bad in (
        LinkSigner("other").sign("abcdefgh2345", 3, 2_000_000_000),
        token.replace(".3.", ".4."),
        token + "x",
        "",
        "../../etc/passwd",
    ):
        with pytest.raises(LinkRefused) as forged:
            signer.verify(bad, now=1_900_000_000)
        assert forged.value.reason == "forged"
