"""The Slack emulator: Web API + Socket Mode for the real slack_sdk and slack_bolt clients."""

from tests.emulators.slack.server import SlackEmulator
from tests.emulators.slack.socket_mode import Envelope
from tests.emulators.slack.workspace import SlackError

__all__ = ["Envelope", "SlackEmulator", "SlackError"]
