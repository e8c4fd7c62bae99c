"""Redaction of secret values and credential shapes: whole texts, JSON-like event data, and
text that arrives in pieces."""

from __future__ import annotations

import base64
import json
import random
import subprocess
import sys
from urllib.parse import quote

import pytest

from core.redaction import REDACTED, Redactor

NPM = "npm_Zx81Qq0aTr55LmNo"
SECRETS = {"NPM_TOKEN": NPM, "DB_PASSWORD": "p@ss w/rd+%&é", "TINY": "abc"}

TOKENS = {
    "github classic": "ghp_" + "A1b2C3d4E5f6G7h8I9j0K1l2M3n4O5p6Q7r8",
    "github oauth": "gho_" + "z" * 36,
    "github user": "ghu_" + "9" * 36,
    "github installation": "ghs_" + "Abc123" * 6,
    "github refresh": "ghr_" + "x1" * 38,
    "github fine-grained": "github_pat_11ABCDEFG0" + "a_b1" * 14,
    "slack bot": "xoxb-1234567890-1234567890123-AbCdEfGhIjKlMnOpQrStUvWx",
    "slack user": "xoxp-1234567890-1234567890-1234567890123-0123456789abcdef",
    "slack app": "xapp-1-A0123456789-1234567890123-abcdef0123456789",
    "anthropic": "sk-ant-api03-" + "Qw3_rT-y" * 10,
    "openai legacy": "sk-" + "T3BlbkFJ" * 6,
    "openai project": "sk-proj-" + "aB3dE-fG_h" * 6,
    "aws": "AKIAIOSFODNN7EXAMPLE",
    "aws session": "ASIAY34FZKBOKMUTVV7A",
    "bridge": "oisbx_" + "q2W-e4R_t6Y" * 4,
}

PEM = """-----BEGIN RSA PRIVATE KEY-----
MIIEowIBAAKCAQEAu1SU1LfVLPHCozMxH2Mo4lgOEePzNm0tRgeLezV6ffAt0gun
VTLw7onLRnrq0/IzW7yWR7QkrmBL7jTKEn5u+qKhbwKfBstIs+bMY2Zkp18gnTxK
-----END RSA PRIVATE KEY-----"""

ORDINARY = """\
Traceback (most recent call last):
  File "/usr/lib/python3/site-packages/requests/sessions.py", line 589, in request
task-management-system-integration-tests-are-good; xoxo-hugs-and-kisses
ask-ant-something-long-enough-to-look-like-a-key sk-learn-is-not-a-key-at-all
The AKIA prefix alone, ghp_short, github_pat_x, oisbx_ and sk-ant- mean nothing here.
BEGIN PRIVATE KEY is just words; -----BEGIN CERTIFICATE----- is public.
SGVsbG8gd29ybGQ= 0123456789abcdef0123456789abcdef 2026-11-01T10:00:00Z
"""


@pytest.fixture
def redactor() -> Redactor:
    return Redactor(SECRETS)


def test_a_value_becomes_its_name(redactor: Redactor) -> None:
    assert redactor.redact(f"npm set //registry/:_authToken={NPM}\n") == (
        "npm set //registry/:_authToken=[REDACTED:NPM_TOKEN]\n"
    )


def test_values_shorter_than_eight_characters_are_left_alone(redactor: Redactor) -> None:
    assert redactor.redact("abc abcdef") == "abc abcdef"
    assert "TINY" not in redactor.names


@pytest.mark.parametrize("shape", sorted(TOKENS))
def test_each_credential_shape_is_redacted_without_a_name(redactor: Redactor, shape: str) -> None:
    token = TOKENS[shape]
    assert redactor.redact(f"key: {token}\n") == f"key: {REDACTED}\n"
    assert Redactor({}).redact(f"'{token}'") == f"'{REDACTED}'"


def test_a_pem_private_key_block_is_redacted_whole(redactor: Redactor) -> None:
    assert redactor.redact(f"before\n{PEM}\nafter") == f"before\n{REDACTED}\nafter"


def test_ordinary_text_is_left_alone(redactor: Redactor) -> None:
    assert redactor.redact(ORDINARY) == ORDINARY
    assert redactor.redact_value({"text": ORDINARY}) == {"text": ORDINARY}


@pytest.mark.parametrize("offset", [0, 1, 2])
@pytest.mark.parametrize("urlsafe", [False, True])
def test_base64_of_a_value_is_caught_at_every_alignment(
    redactor: Redactor, offset: int, urlsafe: bool
) -> None:
    value = SECRETS["DB_PASSWORD"].encode()
    blob = b"x" * offset + b"user:" + value + b"\n"
    encode = base64.urlsafe_b64encode if urlsafe else base64.b64encode
    text = encode(blob).decode()
    redacted = redactor.redact(f"Authorization: Basic {text}")
    assert "[REDACTED:DB_PASSWORD]" in redacted and text not in redacted


def test_url_encoded_and_json_escaped_values_are_caught(redactor: Redactor) -> None:
    password = SECRETS["DB_PASSWORD"]
    for form in (quote(password, safe=""), quote(password, safe="").lower(), json.dumps(password)):
        assert "[REDACTED:DB_PASSWORD]" in redactor.redact(f"value={form}"), form
    encoded = f"postgres://app:{quote(password, safe='')}@db/app"
    assert redactor.redact(encoded) == "postgres://app:[REDACTED:DB_PASSWORD]@db/app"


def test_overlapping_secrets_are_both_hidden() -> None:
    redactor = Redactor({"FIRST": "abcdefgh1234", "SECOND": "1234wxyz5678", "INNER": "cdefgh12"})
    assert redactor.redact("<abcdefgh1234wxyz5678>") == "<[REDACTED:FIRST]>"
    assert redactor.redact("<zcdefgh12z>") == "<z[REDACTED:INNER]z>"


def test_the_longer_of_two_secrets_wins_where_one_starts_the_other() -> None:
    redactor = Redactor({"SHORT": "prefix-value", "LONG": "prefix-value-and-more"})
    assert redactor.redact("x prefix-value-and-more y") == "x [REDACTED:LONG] y"
    assert redactor.redact("x prefix-value y") == "x [REDACTED:SHORT] y"


def test_a_value_that_is_also_a_token_is_named(redactor: Redactor) -> None:
    token = TOKENS["github classic"]
    assert Redactor({"GH_TOKEN": token}).redact(token) == "[REDACTED:GH_TOKEN]"


def test_event_data_is_redacted_deeply_and_untouched_data_is_the_same_object(
    redactor: Redactor,
) -> None:
    data = {
        "id": "t1",
        "input": {"command": f"echo {NPM}", "args": [NPM, 3, None, True]},
        NPM: "as a key",
        "count": 2,
    }
    assert redactor.redact_value(data) == {
        "id": "t1",
        "input": {"command": "echo [REDACTED:NPM_TOKEN]", "args": ["[REDACTED:NPM_TOKEN]", 3,
                                                                    None, True]},
        "[REDACTED:NPM_TOKEN]": "as a key",
        "count": 2,
    }  # fmt: skip
    clean = {"id": "t1", "output": ["fine", {"n": 1}]}
    assert redactor.redact_value(clean) is clean


def test_the_redactor_shows_names_never_values(redactor: Redactor) -> None:
    assert NPM not in repr(redactor) and "NPM_TOKEN" in repr(redactor)


SPLIT_TEXT = (
    f"Your token is {NPM}, the password {SECRETS['DB_PASSWORD']}, a key {TOKENS['anthropic']} "
    f"and {TOKENS['aws']}.\n{PEM}\nThat is all."
)


def test_a_value_split_across_two_stream_chunks_is_caught_at_every_split_point(
    redactor: Redactor,
) -> None:
    expected = redactor.redact(SPLIT_TEXT)
    assert NPM not in expected and "[REDACTED:NPM_TOKEN]" in expected
    for cut in range(len(SPLIT_TEXT) + 1):
        stream = redactor.stream()
        first = stream.feed(SPLIT_TEXT[:cut])
        second = stream.feed(SPLIT_TEXT[cut:])
        assert first + second + stream.flush() == expected, f"split at {cut}"


def test_a_stream_fed_one_character_at_a_time_gives_the_whole_texts_redaction(
    redactor: Redactor,
) -> None:
    stream = redactor.stream()
    pieces = [stream.feed(char) for char in SPLIT_TEXT]
    assert "".join(pieces) + stream.flush() == redactor.redact(SPLIT_TEXT)
    # Nothing that is emitted ever holds a piece of a value it could not yet judge.
    for piece in pieces:
        assert NPM[:4] not in piece or piece.startswith("[REDACTED")


def test_a_stream_holds_back_only_what_could_still_become_a_secret() -> None:
    stream = Redactor({}).stream()
    assert stream.feed("Here is the fix for the bug.\n") == "Here is the fix for the bug.\n"
    # "gh" may be the start of a GitHub token: held until the next piece says it is not.
    assert stream.feed("I checked it with gh") == "I checked it with "
    assert stream.feed(" and it passed") == "gh and it passed"
    stream = Redactor({"NPM_TOKEN": NPM}).stream()
    held = stream.feed(f"the token {NPM[:10]}")
    assert held == "the token "
    assert stream.feed(NPM[10:] + " end") == "[REDACTED:NPM_TOKEN] end"
    assert stream.flush() == ""


def test_ordinary_text_streams_with_at_most_a_few_characters_held(redactor: Redactor) -> None:
    stream = redactor.stream()
    # (A line with "-----BEGIN " is held until it is clearly no private key.)
    prose = "\n".join(line for line in ORDINARY.splitlines() if "-----" not in line)
    words = [word + " " for word in prose.split(" ")]
    shown = ""
    for count, word in enumerate(words, start=1):
        shown += stream.feed(word)
        assert len("".join(words[:count])) - len(shown) <= 8, shown[-40:]
    assert shown + stream.flush() == "".join(words)


def test_the_module_imports_only_the_standard_library() -> None:
    code = (
        "import sys; import core.redaction; "
        "bad = [m for m in sys.modules if m.split('.')[0] in "
        "('pydantic', 'asyncpg', 'aiohttp', 'cryptography', 'orjson')]; print(bad)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_streams_cut_anywhere_agree_with_the_whole_text_and_hide_every_value() -> None:
    values = {"A": "abcdefgh1234", "B": "1234wxyz5678", "C": "cdefgh12", "D": "p@ss w/rd+%&é",
              "E": "prefix-value", "F": "prefix-value-and-more"}  # fmt: skip
    redactor = Redactor(values)
    pieces = [*values.values(), TOKENS["github classic"], TOKENS["aws"], TOKENS["anthropic"],
              PEM, "-----BEGIN ", "gh", "s", "-", "x", " ", "hello ", "\n", "xoxb-", "%40", "é",
              base64.b64encode(b"u:abcdefgh1234").decode()]  # fmt: skip
    rng = random.Random(11)
    for _ in range(2000):
        text = "".join(rng.choice(pieces) for _ in range(rng.randint(1, 12)))
        cuts = sorted(rng.sample(range(len(text) + 1), min(len(text) + 1, rng.randint(0, 6))))
        stream, shown, previous = redactor.stream(), "", 0
        for cut in [*cuts, len(text)]:
            shown += stream.feed(text[previous:cut])
            previous = cut
        shown += stream.flush()
        whole = redactor.redact(text)
        assert shown == whole, (text, cuts)
        assert not any(value in whole for value in values.values()), text
