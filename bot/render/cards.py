"""The messages the bot posts in a session's thread, as Block Kit within Slack's limits
(50 blocks a message, 3,000 characters a section, 10 fields of 2,000)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from bot.render.mrkdwn import SECTION_LIMIT, cut, escape

STOP_ACTION = "stop_session"
PR_ACTION = "create_pr"
PICK_ACTION = "pick_repository"
PROPOSE_ACTION = "start_proposed_repository"
FILES_SHOWN = 15

Blocks = list[dict[str, Any]]


@dataclass
class Progress:
    """A prompt as its status message tells it."""

    prompt_id: int
    author: str
    state: str = "queued"
    position: int = 0
    steps: int = 0
    last_step: str = ""
    reason: str | None = None
    answer: str = ""
    stat: str = ""
    files: list[dict[str, Any]] = field(default_factory=list)
    total_files: int = 0
    commit: str | None = None


def _section(text: str) -> dict[str, Any]:
    return {"type": "section", "text": {"type": "mrkdwn", "text": text[:SECTION_LIMIT]}}


def _context(text: str) -> dict[str, Any]:
    return {"type": "context", "elements": [{"type": "mrkdwn", "text": text[:SECTION_LIMIT]}]}


def _link_button(link: str) -> dict[str, Any]:
    return {
        "type": "button",
        "text": {"type": "plain_text", "text": "View session"},
        "url": link,
        "action_id": "view_session",
    }


_HEADLINES = {
    "queued": "Queued",
    "running": "Working on it",
    "done": "Done",
    "failed": "Failed",
    "stopped": "Stopped",
    "cancelled": "Cancelled",
    "interrupted": "Interrupted",
}


def status(progress: Progress, session_id: str, link: str) -> tuple[str, Blocks]:
    """The prompt's one status message, edited as the agent works."""
    headline = _HEADLINES.get(progress.state, progress.state)
    if progress.state == "queued" and progress.position:
        ahead = "prompt" if progress.position == 1 else "prompts"
        headline += f": {progress.position} {ahead} ahead"
    text = f"*{headline}* · {escape(progress.author)}'s request"
    if progress.steps:
        text += f" · {progress.steps} step{'s' if progress.steps != 1 else ''}"
    if progress.state == "running" and progress.last_step:
        text += f"\n{escape(cut(progress.last_step, 300, '…'))}"
    if progress.reason and progress.state != "running":
        text += f"\n{escape(cut(progress.reason, 1000, '…'))}"
    buttons: list[dict[str, Any]] = [_link_button(link)]
    if progress.state in ("queued", "running"):
        buttons.append(
            {
                "type": "button",
                "text": {"type": "plain_text", "text": "Stop"},
                "style": "danger",
                "action_id": STOP_ACTION,
                "value": session_id,
            }
        )
    return f"{headline}: {escape(progress.author)}'s request", [
        _section(text),
        {"type": "actions", "elements": buttons},
    ]


def completion(
    progress: Progress, session_id: str, link: str, usage: str, pr_url: str | None
) -> tuple[str, Blocks]:
    """The card a finished prompt leaves: the agent's answer (cut, with the page for the rest),
    the files it changed, the diff stat, usage, and what to do next."""
    answer = escape(progress.answer.strip()) or "_The agent finished without a message._"
    answer = cut(
        answer,
        SECTION_LIMIT - 200,
        f"_…cut here: the whole answer is on <{link}|the session page>._",
    )
    blocks: Blocks = [_section(f"*Done* · {escape(progress.author)}'s request\n{answer}")]
    if progress.files:
        lines = [
            f"`{escape(f.get('path', '?'))}` +{f.get('additions', 0)} −{f.get('deletions', 0)}"
            for f in progress.files[:FILES_SHOWN]
        ]
        more = progress.total_files - len(lines)
        if more > 0:
            lines.append(f"…and {more} more on <{link}|the session page>")
        blocks.append(_section("*Files changed*\n" + cut("\n".join(lines), SECTION_LIMIT, "…")))
    facts = [escape(progress.stat) if progress.stat else "No files changed", usage]
    if progress.commit:
        facts.append(f"commit `{progress.commit[:12]}`")
    blocks.append(_context(" · ".join(facts)))
    buttons: list[dict[str, Any]] = [_link_button(link)]
    if pr_url:
        buttons.append(
            {"type": "button", "text": {"type": "plain_text", "text": "View PR"}, "url": pr_url,
             "action_id": "view_pr"}
        )  # fmt: skip
    elif progress.files:
        buttons.append(
            {"type": "button", "text": {"type": "plain_text", "text": "Create PR"},
             "style": "primary", "action_id": PR_ACTION, "value": session_id}
        )  # fmt: skip
    blocks.append({"type": "actions", "elements": buttons})
    return cut(f"Done: {escape(progress.answer.strip())}", 3000, "…"), blocks


def failure(progress: Progress, link: str) -> tuple[str, Blocks]:
    """A prompt that did not finish: why, and where to look."""
    verb = {"stopped": "Stopped", "interrupted": "Interrupted"}.get(progress.state, "Failed")
    reason = escape(cut(progress.reason or "no reason was given", 2500, "…"))
    text = f"*{verb}* · {escape(progress.author)}'s request\n{reason}"
    return escape(f"{verb}: {progress.reason or ''}")[:3000], [
        _section(text),
        {"type": "actions", "elements": [_link_button(link)]},
    ]


def repository_picker(
    repositories: list[str], request_ts: str, proposed: str | None = None
) -> tuple[str, Blocks]:
    """Ask which repository a request is about: a menu of them all when they fit (a static
    menu holds 100), else one that searches as you type (`block_suggestion`). A `proposed`
    one (the classifier's guess) gets a button that starts there and is preselected in the
    menu; a person still confirms. The button sits in the menu's block, so a click carries
    the same `pick:<request ts>` block id as a pick."""
    menu: dict[str, Any] = {
        "action_id": PICK_ACTION,
        "placeholder": {"type": "plain_text", "text": "Repository"},
    }
    if len(repositories) <= 100:
        menu["type"] = "static_select"
        menu["options"] = repository_options(repositories)
    else:
        menu["type"] = "external_select"
        menu["min_query_length"] = 1
    text = "Which repository is this about? Pick one and I will start."
    elements: list[dict[str, Any]] = [menu]
    if proposed is not None:
        # A static menu's initial option must be one of its options, exactly.
        menu["initial_option"] = repository_options([proposed])[0]
        text = f"This looks like `{escape(proposed)}` to me. Start there, or pick another."
        start = {
            "type": "button",
            "text": {"type": "plain_text", "text": f"Start in {proposed}"[:75]},
            "style": "primary",
            "action_id": PROPOSE_ACTION,
            "value": proposed,
        }
        elements.insert(0, start)
    if len(repositories) > 100:
        text += f" Type part of its name to search the {len(repositories):,}."
    return "Which repository is this about?", [
        _section(text),
        {"type": "actions", "block_id": f"pick:{request_ts}", "elements": elements},
    ]


def repository_options(repositories: list[str]) -> list[dict[str, Any]]:
    return [
        {"text": {"type": "plain_text", "text": name[:75]}, "value": name}
        for name in repositories[:100]
    ]


def unfurl(info: Any, last_step: str) -> Blocks:
    """What a pasted session link shows: state, repository, last step, participants."""
    people = ", ".join(info.participant_names) or "nobody yet"
    lines = [
        f"*{escape(info.repository or 'No repository')}* · {escape(info.state)}",
        f"Last step: {escape(last_step)}" if last_step else "Nothing has happened yet",
        f"Participants: {escape(people)}",
    ]
    return [_section("\n".join(lines))]


def note(text: str) -> tuple[str, Blocks]:
    """A plain reply (already mrkdwn-safe)."""
    return text[:3000], [_section(text)]


CONFIRM_GITHUB_ACTION = "confirm_github"
REJECT_GITHUB_ACTION = "reject_github"


def confirm_github(login: str) -> tuple[str, Blocks]:
    """Asked in a person's own conversation with the bot after GitHub authorized an account
    for them: only they can answer, so nobody links their account under someone else's name."""
    who = escape(login)
    text = (
        f"GitHub account *@{who}* was just authorized to be linked to you. If that was you, "
        "link it: your pull requests will be opened as that account and your commits will "
        "carry its name and email."
    )
    buttons = [
        {"type": "button", "text": {"type": "plain_text", "text": f"Link @{login}"[:75]},
         "style": "primary", "action_id": CONFIRM_GITHUB_ACTION, "value": login},
        {"type": "button", "text": {"type": "plain_text", "text": "That was not me"},
         "action_id": REJECT_GITHUB_ACTION, "value": login},
    ]  # fmt: skip
    return f"Link GitHub account @{who}?", [
        _section(text),
        {"type": "actions", "elements": buttons},
    ]


def link_github(url: str) -> tuple[str, Blocks]:
    """Shown only to a person without a linked GitHub account who asked for a PR."""
    text = (
        "Link your GitHub account and ask again: the pull request is then opened as you, and "
        "your commits carry your GitHub name and email. The branch is pushed meanwhile."
    )
    button = {"type": "button", "text": {"type": "plain_text", "text": "Link GitHub"},
              "url": url, "action_id": "link_github"}  # fmt: skip
    return "Link your GitHub account", [_section(text), {"type": "actions", "elements": [button]}]
