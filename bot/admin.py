"""Admins change the deployment's settings from their App Home: secrets (by name; a value is
typed once into a modal and never shown, logged or sent back), channel defaults and keyword
rules. Every click and every submission checks again that its person is an admin now: a Home
published before they lost admin, or a crafted payload, changes nothing."""

from __future__ import annotations

import logging
import re
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from slack_bolt.async_app import AsyncApp
from slack_sdk.errors import SlackApiError

from bot import repositories
from bot.errors import slack_error
from bot.people import Person
from bot.render import admin as render
from bot.render.blocks import Blocks, entered
from core import secrets
from core.engine import Engine
from core.errors import BadInput, OpenInspectError

if TYPE_CHECKING:
    from bot.app import SlackBot

log = logging.getLogger(__name__)

Publish = Callable[[str, str], Awaitable[None]]

_KEYWORD = re.compile(r"[\w\-.]{1,50}")  # a word as keyword rules match words
_CHANNEL = re.compile(r"[CG][A-Z0-9]{2,}")  # a public or private channel's id


async def settings_blocks(engine: Engine) -> Blocks:
    """The settings section of an admin's Home, as things stand."""
    stored = await engine.settings_all()
    return render.settings(
        await engine.secrets.list(),
        repositories.channel_defaults(stored),
        repositories.keyword_rules(stored),
    )


def register(app: AsyncApp, bot: SlackBot, publish: Publish) -> None:
    admin = Admin(bot, publish)
    app.action(render.ADD_SECRET_ACTION)(admin.on_open)
    app.action(render.ADD_CHANNEL_ACTION)(admin.on_open)
    app.action(render.ADD_KEYWORD_ACTION)(admin.on_open)
    app.action(render.DELETE_SECRET_ACTION)(admin.on_remove)
    app.action(render.REMOVE_CHANNEL_ACTION)(admin.on_remove)
    app.action(render.REMOVE_KEYWORD_ACTION)(admin.on_remove)
    app.view(render.SECRET_CALLBACK)(admin.on_secret)
    app.view(render.CHANNEL_CALLBACK)(admin.on_channel_default)
    app.view(render.KEYWORD_CALLBACK)(admin.on_keyword_rule)


class Admin:
    def __init__(self, bot: SlackBot, publish: Publish) -> None:
        self.bot = bot
        self.engine = bot.engine
        self.publish = publish

    async def _acting(self, body: dict[str, Any]) -> tuple[str, Person, bool]:
        """The team, the person acting, and whether they are an admin now."""
        team, person = body["team"]["id"], await self.bot.people.get(body["user"]["id"])
        if self.bot.access.is_admin(person, team):
            return team, person, True
        log.warning("%s, who is not an admin, tried to change settings: refused", person.id)
        # Whatever they clicked came from a Home made when they were one: make a new one.
        self.bot.spawn(self.publish(team, person.id), f"Home of {person.id}")
        return team, person, False

    # ----- the Home's buttons ----------------------------------------------------------------

    async def on_open(self, ack: Any, body: dict[str, Any]) -> None:
        """An Add button: its modal, with the deployment's repositories to choose from."""
        await ack()
        _, person, admin = await self._acting(body)
        if not admin:
            return
        modals = {
            render.ADD_SECRET_ACTION: render.secret_modal,
            render.ADD_CHANNEL_ACTION: render.channel_modal,
            render.ADD_KEYWORD_ACTION: render.keyword_modal,
        }
        modal = modals[body["actions"][0]["action_id"]](await self.engine.repositories())
        try:
            # The trigger_id is good for 3 seconds from the click, so this cannot wait.
            await self.bot.client.views_open(trigger_id=body["trigger_id"], view=modal)
        except SlackApiError as exc:
            log.warning("views.open for %s failed: %s", person.id, slack_error(exc))

    async def on_remove(self, ack: Any, body: dict[str, Any]) -> None:
        """A Delete or Remove button (Slack asked the admin to confirm before it sent this)."""
        await ack()
        team, person, admin = await self._acting(body)
        if not admin:
            return
        action = body["actions"][0]
        value, by = str(action.get("value") or ""), person.author(team).id
        try:
            if action["action_id"] == render.DELETE_SECRET_ACTION:
                name, repository = render.secret_of(value)
                await self.engine.secrets.delete(name, repository, by)
            elif action["action_id"] == render.REMOVE_CHANNEL_ACTION:
                await self.engine.set_setting(repositories.channel_default_key(value), None, by)
            else:
                await repositories.set_keyword_rule(self.engine, value, None, by)
        except (OpenInspectError, ValueError, KeyError, TypeError) as exc:
            # Only a button this bot did not make gets here: nothing was removed.
            log.warning("%s: %s with %r refused: %s", person.id, action["action_id"], value, exc)
        await self.publish(team, person.id)

    # ----- the modals ------------------------------------------------------------------------

    async def _submitter(self, ack: Any, body: dict[str, Any]) -> tuple[str, Person] | None:
        """The team and admin submitting, or None once the modal was told they are none."""
        team, person, admin = await self._acting(body)
        if admin:
            return team, person
        field = render.FIRST_INPUT[body["view"]["callback_id"]]
        await ack(response_action="errors", errors={field: render.REFUSED})
        return None

    async def _done(self, ack: Any, team: str, person: Person) -> None:
        await ack()  # closes the modal
        self.bot.spawn(self.publish(team, person.id), f"Home of {person.id}")

    async def on_secret(self, ack: Any, body: dict[str, Any]) -> None:
        """Store the secret, or say on each field what is wrong (nothing is stored then). The
        value goes from the submission to the store and nowhere else."""
        if (admin := await self._submitter(ack, body)) is None:
            return
        team, person = admin
        view, errors = body["view"], {}
        name = (entered(view, render.SECRET_NAME) or "").strip()
        value = entered(view, render.SECRET_VALUE) or ""
        repository = render.picked_repository(entered(view, render.SECRET_REPOSITORY))
        if repository is not None:
            repository = await self._known(repository, render.SECRET_REPOSITORY, errors)
        _check(secrets.check_name, errors, render.SECRET_NAME, name)
        if len(value) > render.VALUE_INPUT_LIMIT:  # more than Slack's input holds: crafted
            errors[render.SECRET_VALUE] = (
                f"The value is longer than {render.VALUE_INPUT_LIMIT} characters."
            )
        else:
            _check(secrets.check_value, errors, render.SECRET_VALUE, name or "the secret", value)
        if not errors:
            try:
                await self.engine.secrets.set(name, value, repository, person.author(team).id)
            except OpenInspectError as exc:
                errors[render.SECRET_NAME] = str(exc)
        if errors:
            await ack(response_action="errors", errors=errors)
            return
        await self._done(ack, team, person)

    async def on_channel_default(self, ack: Any, body: dict[str, Any]) -> None:
        if (admin := await self._submitter(ack, body)) is None:
            return
        team, person = admin
        view, errors = body["view"], {}
        channel = entered(view, render.CHANNEL) or ""
        if not _CHANNEL.fullmatch(channel):
            errors[render.CHANNEL] = "Choose a public or private channel."
        repository = render.picked_repository(entered(view, render.CHANNEL_REPOSITORY))
        repository = await self._known(repository, render.CHANNEL_REPOSITORY, errors)
        if errors:
            await ack(response_action="errors", errors=errors)
            return
        key = repositories.channel_default_key(channel)
        await self.engine.set_setting(key, repository, person.author(team).id)
        await self._done(ack, team, person)

    async def on_keyword_rule(self, ack: Any, body: dict[str, Any]) -> None:
        if (admin := await self._submitter(ack, body)) is None:
            return
        team, person = admin
        view, errors = body["view"], {}
        keyword = (entered(view, render.KEYWORD) or "").strip()
        if not _KEYWORD.fullmatch(keyword):
            errors[render.KEYWORD] = (
                "A keyword is one word of at most 50 letters, digits, -, . or _."
            )
        repository = render.picked_repository(entered(view, render.KEYWORD_REPOSITORY))
        repository = await self._known(repository, render.KEYWORD_REPOSITORY, errors)
        if errors:
            await ack(response_action="errors", errors=errors)
            return
        await repositories.set_keyword_rule(
            self.engine, keyword, repository, person.author(team).id
        )
        await self._done(ack, team, person)

    async def _known(self, name: str | None, field: str, errors: dict[str, str]) -> str | None:
        """The deployment's repository `name` stands for (in any case), or None with what is
        wrong put on `field`."""
        known = await self.engine.repositories()
        found = next((r for r in known if r.lower() == (name or "").lower()), None)
        if not name:
            errors[field] = "Choose a repository."
        elif found is None:
            errors[field] = f"{name[:100]} is not one of this deployment's repositories."
        return found


def _check(check: Callable[..., None], errors: dict[str, str], field: str, *args: str) -> None:
    """Run one of the store's checks, putting what it says is wrong on `field`."""
    try:
        check(*args)
    except BadInput as exc:
        errors[field] = str(exc)
