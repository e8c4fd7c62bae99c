"""Who may use the bot, and who administers it, from the deployment's settings.

Admins (`OPEN_INSPECT_ADMINS`) change the settings in the App Home and are always served. Other
people are served when they belong to this workspace, are not guests, and are on the allowlists
(`OPEN_INSPECT_ALLOWED_USERS`, `OPEN_INSPECT_ALLOWED_CHANNELS`; empty lists allow everyone).
The settings are read on every call, so every check sees the current lists.
"""

from __future__ import annotations

from bot.people import Person
from core.config import Settings


class Access:
    def __init__(self, settings: Settings) -> None:
        self._settings = settings

    def is_admin(self, person: Person, team: str) -> bool:
        """An admin of this deployment. Another organisation's account is never one: Slack
        Connect brings people of other workspaces into shared channels."""
        return person.id in self._settings.admins and person.team_id in ("", team)

    def refusal(self, person: Person, team: str, channel: str) -> str | None:
        """Why this person may not use the bot in `channel`, or None when they may. Direct
        messages (and the App Home) are never limited by the channel allowlist."""
        if person.team_id and person.team_id != team:
            return (
                "I only work for members of this workspace, so I cannot take requests from "
                "other organisations' accounts."
            )
        if self.is_admin(person, team):
            return None
        if person.guest:
            return (
                "Guest accounts cannot start or steer sessions here. Ask a member of the workspace."
            )
        allowed_users = self._settings.allowed_users
        allowed_channels = self._settings.allowed_channels
        if allowed_users and person.id not in allowed_users:
            return f"You are not on the list of people who may use me. {self._ask('to add you')}."
        if allowed_channels and channel not in allowed_channels and not channel.startswith("D"):
            return (
                f"I am not enabled in this channel. {self._ask('to enable it')}, or try an "
                "enabled channel."
            )
        return None

    def _ask(self, what: str) -> str:
        admins = self._settings.admins
        if not admins:
            return f"Ask whoever runs Open-Inspect here {what}"
        named = ", ".join(f"<@{admin}>" for admin in admins[:5])
        more = " or another admin" if len(admins) > 5 else ""
        return f"Ask an admin ({named}{more}) {what}"
