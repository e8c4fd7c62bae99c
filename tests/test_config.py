"""The settings object: names, defaults, comma-separated lists, clear errors."""

from __future__ import annotations

import os

import pytest
from pydantic import ValidationError

from core.config import Settings


def settings(monkeypatch: pytest.MonkeyPatch, **env: str) -> Settings:
    for name in list(os.environ):
        if name.startswith("OPEN_INSPECT_") or name in (
            "ANTHROPIC_API_KEY",
            "ANTHROPIC_BASE_URL",
            "DATABASE_URL",
            "REDIS_URL",
        ):
            monkeypatch.delenv(name)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    return Settings(_env_file=None)


def test_defaults_are_embedded_and_local(monkeypatch: pytest.MonkeyPatch) -> None:
    s = settings(monkeypatch)
    assert s.embedded and s.redis_url is None
    assert str(s.data_dir) == ".open-inspect"
    assert (s.http_host, s.http_port) == ("127.0.0.1", 8080)
    assert s.slack_api_url == "https://slack.com/api/"
    assert (s.agent, s.sandbox_provider) == ("builtin", "local")
    assert s.setup_timeout_seconds == 300
    assert s.max_prompt_bytes == 64 * 1024
    assert s.model.startswith("openai:")


def test_lists_are_comma_separated_not_json(monkeypatch: pytest.MonkeyPatch) -> None:
    s = settings(
        monkeypatch,
        OPEN_INSPECT_ADMINS="U1, U2,,U3 ",
        OPEN_INSPECT_ALLOWED_CHANNELS="C1",
        OPEN_INSPECT_REPOSITORIES="acme/web=https://example.test/acme/web.git,acme/api=/srv/api",
    )
    assert s.admins == ["U1", "U2", "U3"]
    assert s.allowed_channels == ["C1"]
    assert s.allowed_users == []
    assert s.repository_urls == {
        "acme/web": "https://example.test/acme/web.git",
        "acme/api": "/srv/api",
    }


def test_anthropic_is_the_default_model_when_configured(monkeypatch: pytest.MonkeyPatch) -> None:
    assert settings(monkeypatch, ANTHROPIC_BASE_URL="http://127.0.0.1:9").model.startswith(
        "anthropic:"
    )
    assert (
        settings(monkeypatch, OPEN_INSPECT_MODEL="openai:local-llama").model == "openai:local-llama"
    )


@pytest.mark.parametrize(
    ("name", "value", "message"),
    [
        ("OPEN_INSPECT_REPOSITORIES", "acme/web", "owner/name=clone-url"),
        ("OPEN_INSPECT_MODEL", "gpt-4", "anthropic:<model> or openai:<model>"),
        ("OPEN_INSPECT_AGENT", "claude", "builtin"),
        ("OPEN_INSPECT_HTTP_PORT", "http", "integer"),
        ("SETUP_TIMEOUT_SECONDS", "-1", "greater than 0"),
    ],
)
def test_bad_values_name_the_problem(
    monkeypatch: pytest.MonkeyPatch, name: str, value: str, message: str
) -> None:
    with pytest.raises(ValidationError, match=message.replace("<", ".").replace(">", ".")):
        settings(monkeypatch, **{name: value})


def test_integrations_report_what_is_configured(monkeypatch: pytest.MonkeyPatch) -> None:
    s = settings(
        monkeypatch,
        SLACK_BOT_TOKEN="xoxb-1",
        SLACK_APP_TOKEN="xapp-1",
        GITHUB_APP_ID="1",
        GITHUB_APP_PRIVATE_KEY_PATH="/k.pem",
    )
    assert s.integrations() == {
        "slack": True,
        "github_app": True,
        "github_oauth": False,
        "anthropic": False,
        "openai": False,
    }
