"""The person's side of linking a GitHub account: the question in their own conversation with
the bot (sent through the outbox by the page that received GitHub's callback) and its answer."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from bot.render import cards

if TYPE_CHECKING:
    from slack_bolt.async_app import AsyncApp

    from bot.app import SlackBot

log = logging.getLogger(__name__)


def render(body: dict[str, Any]) -> tuple[str, list[dict[str, Any]]]:
    """The text and blocks of an outbox message the engine wrote without knowing Slack."""
    if body.get("kind") == "confirm_github":
        return cards.confirm_github(str(body["login"]))
    return str(body.get("text") or ""), list(body.get("blocks") or [])


def register(app: AsyncApp, bot: SlackBot) -> None:
    async def answer(ack: Any, body: dict[str, Any]) -> None:
        await ack()
        action = body["actions"][0]
        login, confirmed = str(action.get("value") or ""), action["action_id"]
        # The person who clicks is the one whose account it is: Slack says who clicked.
        person = f"slack:{body['team']['id']}:{body['user']['id']}"
        accounts = bot.engine.accounts
        if accounts is None:
            return
        if confirmed == cards.CONFIRM_GITHUB_ACTION:
            done = await accounts.confirm(person, login)
            said = (
                f"Linked: GitHub account @{login} is yours here now."
                if done
                else "There is no pending link to confirm any more (it was answered already)."
            )
        else:
            await accounts.reject(person, login)
            said = f"Not linked: GitHub account @{login} was forgotten."
        where = body.get("container") or {}
        if where.get("channel_id") and where.get("message_ts"):
            await bot.client.chat_update(
                channel=where["channel_id"], ts=where["message_ts"], text=said, blocks=[]
            )

    app.action(cards.CONFIRM_GITHUB_ACTION)(answer)
    app.action(cards.REJECT_GITHUB_ACTION)(answer)
