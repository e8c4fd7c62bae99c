"""The Slack front door: Bolt listeners on Socket Mode that turn threads into sessions, and
renderers that stream each session's progress back into its thread."""
