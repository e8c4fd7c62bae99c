"""Domain errors. Each carries a message a person can act on; the edges (Slack, web, CLI)
show that message as it is."""


class OpenInspectError(Exception):
    """Base of every error meant to be shown to a user."""


class ConfigError(OpenInspectError):
    """The configuration is missing or wrong."""


class BadInput(OpenInspectError):
    """A request was malformed: nothing was written."""


class BadFields(BadInput):
    """Fields of a form were wrong (`problems`: field → what is wrong with it), so that an edge
    can show each message next to its field. Nothing was written."""

    def __init__(self, problems: dict[str, str]) -> None:
        super().__init__(" ".join(problems.values()))
        self.problems = problems


class NotFound(OpenInspectError):
    """The thing asked for does not exist."""


class CryptoError(OpenInspectError):
    """Decryption or signature verification failed (wrong key, tampering, expiry)."""


class EngineBusy(OpenInspectError):
    """Another engine already runs on this data dir."""


class Fenced(OpenInspectError):
    """This replica no longer owns the session: a newer owner's epoch is in the database."""


class SandboxFailed(OpenInspectError):
    """The sandbox could not finish a prompt (it died, timed out or refused)."""


class SandboxRefused(SandboxFailed):
    """The session asks for what no sandbox can give (a repository that is not configured, a
    branch the repository does not have): it says nothing of the sandboxes' health."""


class AgentFailed(SandboxFailed):
    """The agent could not finish the prompt (the model failed, a limit was hit); the sandbox
    itself is fine and keeps the conversation."""


class GitHubFailed(OpenInspectError):
    """GitHub refused or failed a request (a token, a pull request): the message says what
    to change, or to try again when GitHub itself was failing."""
