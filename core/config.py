"""The one settings object, read from the environment (and an optional `.env`).

Conventional variables keep their usual names; ours share the `OPEN_INSPECT_` prefix.
Lists are comma-separated strings, never JSON.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Literal

from pydantic import AliasChoices, Field, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

CommaList = Annotated[list[str], NoDecode]


def _ours(name: str) -> AliasChoices:
    return AliasChoices(f"OPEN_INSPECT_{name}")


# The provider picks the SDK and the proxy route; the name after it goes to the provider as is.
AGENTS = ("builtin", "opencode")
# A repository's name, owner/name.
OWNER_NAME = re.compile(r"[A-Za-z0-9_.\-]+/[A-Za-z0-9_.\-]+")
_MODEL = re.compile(r"(anthropic|openai):\S{1,200}")


def check_model(value: str) -> str:
    """`value` when it is `anthropic:<model>` or `openai:<model>`; ValueError otherwise (the
    setting and a session's own choice are held to the same rule)."""
    if not isinstance(value, str) or not _MODEL.fullmatch(value):
        raise ValueError(f"{value!r} must be anthropic:<model> or openai:<model>")
    return value


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_file=".env", extra="ignore", populate_by_name=True, validate_default=True
    )

    # --- conventional names ---
    database_url: str | None = Field(None, validation_alias="DATABASE_URL")
    redis_url: str | None = Field(None, validation_alias="REDIS_URL")
    slack_bot_token: str | None = Field(None, validation_alias="SLACK_BOT_TOKEN")
    slack_app_token: str | None = Field(None, validation_alias="SLACK_APP_TOKEN")
    slack_api_url: str = Field("https://slack.com/api/", validation_alias="SLACK_API_URL")
    github_api_url: str = Field("https://api.github.com", validation_alias="GITHUB_API_URL")
    github_web_url: str = Field("https://github.com", validation_alias="GITHUB_WEB_URL")
    github_app_id: str | None = Field(None, validation_alias="GITHUB_APP_ID")
    github_app_private_key: str | None = Field(None, validation_alias="GITHUB_APP_PRIVATE_KEY")
    github_app_private_key_path: Path | None = Field(
        None, validation_alias="GITHUB_APP_PRIVATE_KEY_PATH"
    )
    github_app_installation_id: str | None = Field(
        None, validation_alias="GITHUB_APP_INSTALLATION_ID"
    )
    github_client_id: str | None = Field(None, validation_alias="GITHUB_CLIENT_ID")
    github_client_secret: str | None = Field(None, validation_alias="GITHUB_CLIENT_SECRET")
    github_link_ttl_seconds: float = Field(
        600.0, gt=0, validation_alias=_ours("GITHUB_LINK_TTL_SECONDS")
    )
    github_token_margin_seconds: float = Field(
        300.0, ge=0, validation_alias=_ours("GITHUB_TOKEN_MARGIN_SECONDS")
    )
    github_repositories_ttl_seconds: float = Field(
        300.0, gt=0, validation_alias=_ours("GITHUB_REPOSITORIES_TTL_SECONDS")
    )
    github_timeout_seconds: float = Field(
        30.0, gt=0, validation_alias=_ours("GITHUB_TIMEOUT_SECONDS")
    )
    github_retry_seconds: float = Field(1.0, ge=0, validation_alias=_ours("GITHUB_RETRY_SECONDS"))
    anthropic_api_key: str | None = Field(None, validation_alias="ANTHROPIC_API_KEY")
    anthropic_base_url: str | None = Field(None, validation_alias="ANTHROPIC_BASE_URL")
    openai_api_key: str | None = Field(None, validation_alias="OPENAI_API_KEY")
    openai_base_url: str | None = Field(None, validation_alias="OPENAI_BASE_URL")
    setup_timeout_seconds: float = Field(300, gt=0, validation_alias="SETUP_TIMEOUT_SECONDS")

    # --- ours ---
    data_dir: Path = Field(Path(".open-inspect"), validation_alias=_ours("DATA_DIR"))
    http_host: str = Field("127.0.0.1", validation_alias=_ours("HTTP_HOST"))
    http_port: int = Field(8080, ge=0, le=65535, validation_alias=_ours("HTTP_PORT"))
    public_url: str | None = Field(None, validation_alias=_ours("PUBLIC_URL"))
    model: str | None = Field(None, validation_alias=_ours("MODEL"))
    agent: Literal["builtin", "opencode"] = Field("builtin", validation_alias=_ours("AGENT"))
    agent_repositories: CommaList = Field(
        default_factory=list, validation_alias=_ours("AGENT_REPOSITORIES")
    )
    opencode_bin: Path | None = Field(None, validation_alias=_ours("OPENCODE_BIN"))
    opencode_dir: Path | None = Field(None, validation_alias=_ours("OPENCODE_DIR"))
    opencode_stall_seconds: float = Field(
        600.0, gt=0, validation_alias=_ours("OPENCODE_STALL_SECONDS")
    )
    opencode_webfetch: bool = Field(False, validation_alias=_ours("OPENCODE_WEBFETCH"))
    sandbox_provider: Literal["local", "kubernetes"] = Field(
        "local", validation_alias=_ours("SANDBOX_PROVIDER")
    )
    repositories: CommaList = Field(default_factory=list, validation_alias=_ours("REPOSITORIES"))
    # --- the kubernetes provider (manifests/ deploys these values) ---
    kubeconfig: Path | None = Field(None, validation_alias=_ours("KUBECONFIG"))  # else in-cluster
    kubernetes_namespace: str = Field(
        "open-inspect-sandboxes", validation_alias=_ours("KUBERNETES_NAMESPACE")
    )
    kubernetes_pod_template: Path = Field(
        Path("/etc/open-inspect/sandbox/sandbox-pod.yaml"),
        validation_alias=_ours("KUBERNETES_POD_TEMPLATE"),
    )
    # Labels every object this deployment makes: garbage collection touches only its own.
    kubernetes_release: str = Field(
        "open-inspect", pattern=r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$",
        validation_alias=_ours("KUBERNETES_RELEASE"),
    )  # fmt: skip
    # Where sandbox pods reach the control plane; None keeps the template's addresses.
    kubernetes_core_url: str | None = Field(None, validation_alias=_ours("KUBERNETES_CORE_URL"))
    kubernetes_storage_class: str | None = Field(
        None, validation_alias=_ours("KUBERNETES_STORAGE_CLASS")
    )
    kubernetes_workspace_size: str = Field(
        "10Gi", validation_alias=_ours("KUBERNETES_WORKSPACE_SIZE")
    )
    kubernetes_gc_seconds: float = Field(
        300.0, gt=0, validation_alias=_ours("KUBERNETES_GC_SECONDS")
    )
    # A hibernated session's workspace is kept this long after its last activity.
    workspace_retention_days: float = Field(
        14.0, gt=0, validation_alias=_ours("WORKSPACE_RETENTION_DAYS")
    )
    secrets_key: str | None = Field(None, validation_alias=_ours("SECRETS_KEY"))
    secrets_old_keys: CommaList = Field(
        default_factory=list, validation_alias=_ours("SECRETS_OLD_KEYS")
    )
    link_secret: str | None = Field(None, validation_alias=_ours("LINK_SECRET"))
    page_refresh_seconds: float = Field(5.0, gt=0, validation_alias=_ours("PAGE_REFRESH_SECONDS"))
    slack_updates_per_minute: float = Field(
        50.0, gt=0, validation_alias=_ours("SLACK_UPDATES_PER_MINUTE")
    )
    slack_reactions_per_minute: float = Field(
        50.0, gt=0, validation_alias=_ours("SLACK_REACTIONS_PER_MINUTE")
    )
    slack_removals_per_minute: float = Field(
        20.0, gt=0, validation_alias=_ours("SLACK_REMOVALS_PER_MINUTE")
    )
    slack_scan_seconds: float = Field(5.0, gt=0, validation_alias=_ours("SLACK_SCAN_SECONDS"))
    slack_outbox_claim_seconds: float = Field(
        30.0, gt=0, validation_alias=_ours("SLACK_OUTBOX_CLAIM_SECONDS")
    )
    slack_posts_per_minute: float = Field(
        60.0, gt=0, validation_alias=_ours("SLACK_POSTS_PER_MINUTE")
    )
    slack_status_interval_seconds: float = Field(
        1.0, gt=0, validation_alias=_ours("SLACK_STATUS_INTERVAL_SECONDS")
    )
    link_ttl_seconds: float = Field(
        30 * 24 * 3600, gt=0, validation_alias=_ours("LINK_TTL_SECONDS")
    )
    noreply_domain: str = Field(
        "users.noreply.open-inspect.local", validation_alias=_ours("NOREPLY_DOMAIN")
    )
    admins: CommaList = Field(default_factory=list, validation_alias=_ours("ADMINS"))
    allowed_users: CommaList = Field(default_factory=list, validation_alias=_ours("ALLOWED_USERS"))
    allowed_channels: CommaList = Field(
        default_factory=list, validation_alias=_ours("ALLOWED_CHANNELS")
    )

    sandbox_isolation: Literal["auto", "host-network", "none"] = Field(
        "auto", validation_alias=_ours("SANDBOX_ISOLATION")
    )
    git_push_credentials: CommaList = Field(
        default_factory=list, validation_alias=_ours("GIT_PUSH_CREDENTIALS")
    )
    session_spend_limit_usd: float | None = Field(
        None, gt=0, validation_alias=_ours("SESSION_SPEND_LIMIT_USD")
    )
    model_prices: str = Field("", validation_alias=_ours("MODEL_PRICES"))
    # Off by default: it sends request text to the model before anyone picked a repository.
    repository_classifier: bool = Field(False, validation_alias=_ours("REPOSITORY_CLASSIFIER"))
    classifier_model: str | None = Field(None, validation_alias=_ours("CLASSIFIER_MODEL"))
    classifier_timeout_seconds: float = Field(
        5.0, gt=0, validation_alias=_ours("CLASSIFIER_TIMEOUT_SECONDS")
    )

    # --- engine tuning (every timer configurable so tests run in seconds) ---
    max_prompt_bytes: int = Field(64 * 1024, gt=0, validation_alias=_ours("MAX_PROMPT_BYTES"))
    lease_ttl_seconds: float = Field(15.0, gt=0, validation_alias=_ours("LEASE_TTL_SECONDS"))
    idle_seconds: float = Field(600.0, gt=0, validation_alias=_ours("IDLE_SECONDS"))
    warm_pool: int = Field(2, ge=0, le=64, validation_alias=_ours("WARM_POOL"))
    sandbox_max_lifetime_seconds: float = Field(
        7200.0, gt=0, validation_alias=_ours("SANDBOX_MAX_LIFETIME_SECONDS")
    )
    spawn_breaker_failures: int = Field(3, ge=1, validation_alias=_ours("SPAWN_BREAKER_FAILURES"))
    spawn_breaker_window_seconds: float = Field(
        300.0, gt=0, validation_alias=_ours("SPAWN_BREAKER_WINDOW_SECONDS")
    )
    orphan_scan_seconds: float = Field(5.0, gt=0, validation_alias=_ours("ORPHAN_SCAN_SECONDS"))
    database_pool_size: int = Field(10, ge=2, validation_alias=_ours("DATABASE_POOL_SIZE"))
    idle_transaction_timeout_seconds: float = Field(
        10.0, gt=0, validation_alias=_ours("IDLE_TRANSACTION_TIMEOUT_SECONDS")
    )
    heartbeat_seconds: float = Field(10.0, gt=0, validation_alias=_ours("HEARTBEAT_SECONDS"))
    heartbeat_stale_seconds: float = Field(
        90.0, gt=0, validation_alias=_ours("HEARTBEAT_STALE_SECONDS")
    )
    connect_timeout_seconds: float = Field(
        120.0, gt=0, validation_alias=_ours("CONNECT_TIMEOUT_SECONDS")
    )
    redis_prefix: str = Field("open-inspect:", validation_alias=_ours("REDIS_PREFIX"))

    @field_validator(
        "repositories",
        "secrets_old_keys",
        "admins",
        "allowed_users",
        "allowed_channels",
        "agent_repositories",
        mode="before",
    )
    @classmethod
    def _split_commas(cls, value: object) -> object:
        if isinstance(value, str):
            return [item.strip() for item in value.split(",") if item.strip()]
        return value

    @field_validator("repositories")
    @classmethod
    def _check_repositories(cls, value: list[str]) -> list[str]:
        for item in value:
            name, sep, url = item.partition("=")
            if not sep or name.count("/") != 1 or not url:
                raise ValueError(
                    f"{item!r} is not of the form owner/name=clone-url "
                    "(e.g. acme/web=https://github.com/acme/web.git)"
                )
        return value

    @field_validator("agent_repositories")
    @classmethod
    def _check_agent_repositories(cls, value: list[str]) -> list[str]:
        for item in value:
            name, _, agent = item.partition("=")
            if not OWNER_NAME.fullmatch(name) or agent not in AGENTS:
                raise ValueError(
                    f"{item!r} is not of the form owner/name=agent, the agent one of "
                    f"{', '.join(AGENTS)} (e.g. acme/web=opencode)"
                )
        return value

    @field_validator("git_push_credentials")
    @classmethod
    def _check_push_credentials(cls, value: list[str]) -> list[str]:
        for item in value:
            name, sep, secret = item.partition("=")
            if not sep or name.count("/") != 1 or ":" not in secret:
                raise ValueError("entries are owner/name=username:token")
        return value

    @field_validator("model", "classifier_model")
    @classmethod
    def _check_model(cls, value: str | None) -> str | None:
        return None if value is None else check_model(value)

    @model_validator(mode="after")
    def _default_model(self) -> Settings:
        if self.model is None:
            if self.anthropic_api_key or self.anthropic_base_url:
                self.model = "anthropic:claude-sonnet-4-6"
            else:
                self.model = "openai:gpt-4.1"
        return self

    @property
    def embedded(self) -> bool:
        """Embedded mode: no external database, so one engine per data dir."""
        return self.database_url is None

    @property
    def repository_urls(self) -> dict[str, str]:
        return dict(item.split("=", 1) for item in self.repositories)

    def repository_url(self, name: str) -> str | None:
        """Where `name` (owner/name) is cloned from: as OPEN_INSPECT_REPOSITORIES says, or, with
        a GitHub App, from GITHUB_WEB_URL (whose installation then decides whether it may)."""
        if (url := self.repository_urls.get(name)) is not None:
            return url
        if self.integrations()["github_app"] and OWNER_NAME.fullmatch(name):
            return f"{self.github_web_url.rstrip('/')}/{name}.git"
        return None

    def agent_for(self, repository: str | None) -> str:
        """The agent runtime of `repository`'s sessions: its own choice, else the deployment's."""
        chosen = dict(item.split("=", 1) for item in self.agent_repositories)
        return chosen.get(repository or "", self.agent)

    @property
    def push_credentials(self) -> dict[str, tuple[str, str]]:
        found = {}
        for item in self.git_push_credentials:
            name, _, secret = item.partition("=")
            user, _, token = secret.partition(":")
            found[name] = (user, token)
        return found

    def integrations(self) -> dict[str, bool]:
        """Which external services are configured (shown by /healthz)."""
        return {
            "slack": bool(self.slack_bot_token and self.slack_app_token),
            "github_app": bool(
                self.github_app_id
                and (self.github_app_private_key or self.github_app_private_key_path)
            ),
            "github_oauth": bool(self.github_client_id and self.github_client_secret),
            "anthropic": bool(self.anthropic_api_key or self.anthropic_base_url),
            "openai": bool(self.openai_api_key or self.openai_base_url),
        }
