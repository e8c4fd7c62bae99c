"""The Slack emulator: Web API + Socket Mode for the real slack_sdk and slack_bolt clients."""
