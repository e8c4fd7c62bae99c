"""Who wrote to the bot: their name and e-mail for attribution, their kind of account."""

from __future__ import annotations

import json
import logging
from dataclasses import asdict, dataclass

from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient

from bot.errors import slack_error
from core.broker import Broker
from core.models import Author

log = logging.getLogger(__name__)

_CACHE_SECONDS = 3600.0


@dataclass(frozen=True)
class Person:
    id: str
    team_id: str
    name: str
    email: str | None = None
    guest: bool = False
    bot: bool = False

    def author(self, team: str) -> Author:
        return Author(f"slack:{team}:{self.id}", self.name, self.email)


class People:
    """`users.info`, cached in the broker so replicas share it and a busy thread costs one
    call an hour per person."""

    def __init__(self, client: AsyncWebClient, broker: Broker) -> None:
        self._client = client
        self._broker = broker

    async def get(self, user_id: str) -> Person:
        cached = await self._broker.cache_get(f"slack-user:{user_id}")
        if cached is not None:
            return Person(**json.loads(cached))
        try:
            user = (await self._client.users_info(user=user_id))["user"]
        except SlackApiError as exc:
            log.warning("users.info %s failed: %s", user_id, slack_error(exc))
            return Person(user_id, "", user_id)
        profile = user.get("profile") or {}
        person = Person(
            id=user_id,
            team_id=user.get("team_id") or profile.get("team") or "",
            name=profile.get("real_name") or profile.get("display_name") or user.get("name")
            or user_id,
            email=profile.get("email"),
            guest=bool(user.get("is_restricted") or user.get("is_ultra_restricted")),
            bot=bool(user.get("is_bot")),
        )  # fmt: skip
        await self._broker.cache_set(
            f"slack-user:{user_id}", json.dumps(asdict(person)).encode(), _CACHE_SECONDS
        )
        return person

    async def names(self, user_ids: list[str]) -> dict[str, str]:
        return {user_id: (await self.get(user_id)).name for user_id in set(user_ids)}
