"""Block Kit and mrkdwn for what the bot posts. Everything from a transcript is untrusted."""
