"""The App Home tab: a person's sessions, their defaults and their GitHub link (and for admins,
the deployment's settings), published when they open the tab and again after they change
something through its modals."""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING, Any

from slack_bolt.async_app import AsyncApp
from slack_sdk.errors import SlackApiError

from bot import admin
from bot.errors import slack_error
from bot.people import Person
from bot.render import home as render
from core.errors import BadFields, ConfigError, OpenInspectError

if TYPE_CHECKING:
    from bot.app import SlackBot

log = logging.getLogger(__name__)

# The Home tab belongs to the person's DM with the app, which channel allow-lists never limit.
_DM = "D"


def register(app: AsyncApp, bot: SlackBot) -> None:
    home = Home(bot)
    app.event("app_home_opened")(home.on_opened)
    app.action(render.EDIT_DEFAULTS_ACTION)(home.on_edit)
    app.view(render.DEFAULTS_CALLBACK)(home.on_submit)
    app.action(render.UNLINK_ACTION)(home.on_unlink)
    app.action(render.LINK_ACTION)(_acknowledge)
    admin.register(app, bot, home.publish)


class Home:
    def __init__(self, bot: SlackBot) -> None:
        self.bot = bot
        self.engine = bot.engine

    async def on_opened(self, body: dict[str, Any], event: dict[str, Any]) -> None:
        if event.get("tab") == "home":  # not the Messages tab
            await self.publish(body["team_id"], event["user"])

    async def on_edit(self, ack: Any, body: dict[str, Any]) -> None:
        """Open the defaults modal, filled with the person's current ones."""
        await ack()
        team, person = body["team"]["id"], await self.bot.people.get(body["user"]["id"])
        if self.bot.access.refusal(person, team, _DM) is not None:
            return  # their Home says why and has no button; this is a stale one
        settings = self.engine.settings
        modal = render.defaults_modal(
            await self.engine.defaults_of(person.author(team).id),
            await self.engine.repositories(),
            settings.model,
        )
        try:
            # The trigger_id is good for 3 seconds from the click, so this cannot wait.
            await self.bot.client.views_open(trigger_id=body["trigger_id"], view=modal)
        except SlackApiError as exc:
            log.warning("views.open for %s failed: %s", person.id, slack_error(exc))

    async def on_submit(self, ack: Any, body: dict[str, Any]) -> None:
        """Store the defaults the modal was submitted with, or show what is wrong next to the
        field (nothing is stored then); the Home is published again after the ack."""
        team, person = body["team"]["id"], await self.bot.people.get(body["user"]["id"])
        if (refusal := self.bot.access.refusal(person, team, _DM)) is not None:
            await ack(response_action="errors", errors={render.REPOSITORY: refusal})
            return
        entered = render.submitted_defaults(body["view"])
        try:
            await self.engine.set_defaults(
                person.author(team).id, entered.repository, entered.model, entered.branch
            )
        except BadFields as exc:
            await ack(response_action="errors", errors=exc.problems)
            return
        except OpenInspectError as exc:
            await ack(response_action="errors", errors={render.REPOSITORY: str(exc)})
            return
        await ack()
        self.bot.spawn(self.publish(team, person.id), f"Home of {person.id}")

    async def on_unlink(self, ack: Any, body: dict[str, Any]) -> None:
        await ack()
        team, user = body["team"]["id"], body["user"]["id"]
        if self.engine.accounts is not None:
            await self.engine.accounts.unlink(f"slack:{team}:{user}")
        await self.publish(team, user)

    async def publish(self, team: str, user: str) -> None:
        """Publish the person's Home as it is now."""
        person = await self.bot.people.get(user)
        if (refusal := self.bot.access.refusal(person, team, _DM)) is not None:
            view = render.refused(refusal)
        else:
            view = await self._home(team, person)
            if self.bot.access.is_admin(person, team):
                view["blocks"] += await admin.settings_blocks(self.engine)
        try:
            await self.bot.client.views_publish(user_id=user, view=view)
        except SlackApiError as exc:
            log.warning("views.publish for %s failed: %s", user, slack_error(exc))

    async def _home(self, team: str, person: Person) -> dict[str, Any]:
        person_id = person.author(team).id
        found = await self.engine.sessions_of(person_id, render.SESSIONS_ASKED)
        active, recent = render.shown(found)
        return render.home(
            found,
            await self._links([s.id for s in active + recent]),
            await self.engine.defaults_of(person_id),
            self.engine.settings.model,
            await self.engine.github_login_of(person_id),
            self.bot.bot_user_id,
            self._link_github(team, person),
        )

    def _link_github(self, team: str, person: Person) -> str | None:
        """Where the person links their GitHub account, when this deployment can."""
        accounts = self.engine.accounts
        if accounts is None or not accounts.configured or not self.engine.public_url:
            return None
        return accounts.login_url(self.engine.public_url, team, person.author(team).id, person.name)

    async def _links(self, session_ids: list[str]) -> dict[str, str]:
        """Page links for the sessions shown (a bounded few): none when links cannot be made."""
        try:
            made = await asyncio.gather(*(self.engine.page_link(sid) for sid in session_ids))
        except ConfigError as exc:
            log.info("Home without session links: %s", exc)
            return {}
        return dict(zip(session_ids, made, strict=True))


async def _acknowledge(ack: Any) -> None:
    await ack()
