"""Matrix event content: what entraide sends, how it reads what experts and users write, power levels."""

from __future__ import annotations

import math
from typing import Any

from bot.handoff import cards
from bot.handoff.transport import Anchor, ExpertMessage, RoomText
from bot.messages import OutgoingMessage, Role

HTML_FORMAT = "org.matrix.custom.html"
CHOICE_HINT = "Répondez par le numéro de votre choix."
# Room versions from 12 on give the creators a power above every power level (MSC4289).
FIRST_PRIVILEGED_CREATORS_VERSION = 12
PRE_V12_CREATOR_LEVEL = 100


def message_content(message: RoomText, anchor: Anchor | None = None) -> dict[str, Any]:
    """Build an ``m.room.message`` content without mentions.

    An empty ``m.mentions`` declares that the event mentions no user and not the room, so the
    legacy push rules that search the body for "@room" or a display name do not apply.
    """
    content: dict[str, Any] = {
        "msgtype": "m.notice" if message.notice else "m.text",
        "body": message.body,
        "format": HTML_FORMAT,
        "formatted_body": message.html,
        "m.mentions": {},
    }
    if anchor is not None and anchor.thread_root is not None:
        content["m.relates_to"] = {
            "rel_type": "m.thread",
            "event_id": anchor.thread_root,
            "is_falling_back": True,
            "m.in_reply_to": {"event_id": anchor.reply_to or anchor.thread_root},
        }
    elif anchor is not None and anchor.reply_to is not None:
        content["m.relates_to"] = {"m.in_reply_to": {"event_id": anchor.reply_to}}
    return content


def file_content(uri: str, filename: str, content_type: str, size: int, anchor: Anchor | None = None) -> dict[str, Any]:
    """Build the ``m.image`` or ``m.file`` content of an uploaded file; the name must already be inert."""
    content = message_content(RoomText(body=filename, html=""), anchor)
    del content["format"], content["formatted_body"]
    content["msgtype"] = "m.image" if content_type.startswith("image/") else "m.file"
    content["filename"] = filename
    content["url"] = uri
    content["info"] = {"mimetype": content_type, "size": size}
    return content


def reaction_content(event_id: str, key: str) -> dict[str, Any]:
    return {"m.relates_to": {"rel_type": "m.annotation", "event_id": event_id, "key": key}}


def strip_reply_fallback(body: str) -> str:
    """Remove the quoted "> <@user> ..." lines that older clients put before a reply's text."""
    lines = body.split("\n")
    if not lines or not lines[0].startswith("> "):
        return body
    index = 0
    while index < len(lines) and lines[index].startswith(">"):
        index += 1
    if index < len(lines) and lines[index] == "":
        index += 1
    return "\n".join(lines[index:])


def text_message(room_id: str, source: dict[str, Any]) -> ExpertMessage | None:
    """Read an ``m.text`` event with its relations; None for other message types or malformed content."""
    content = source.get("content")
    if not isinstance(content, dict) or content.get("msgtype") != "m.text":
        return None
    relates = content.get("m.relates_to")
    relates = relates if isinstance(relates, dict) else {}
    rel_type = relates.get("rel_type")
    related = relates.get("event_id") if isinstance(relates.get("event_id"), str) else None
    in_reply = relates.get("m.in_reply_to")
    reply_to = in_reply.get("event_id") if isinstance(in_reply, dict) and isinstance(in_reply.get("event_id"), str) else None
    thread_root = related if rel_type == "m.thread" else None
    replaces = related if rel_type == "m.replace" else None

    body = content.get("body")
    if replaces is not None:
        new_content = content.get("m.new_content")
        body = new_content.get("body") if isinstance(new_content, dict) else None
    if not isinstance(body, str):
        return None
    if reply_to is not None and thread_root is None and replaces is None:
        body = strip_reply_fallback(body)
    return ExpertMessage(
        room_id=room_id,
        event_id=str(source.get("event_id", "")),
        sender=str(source.get("sender", "")),
        body=body,
        thread_root=thread_root,
        reply_to=reply_to,
        replaces=replaces,
    )


def direct_text(message: OutgoingMessage) -> RoomText:
    """Render an assistant message for a direct chat: the expert's label first, buttons as a numbered list."""
    plain: list[str] = []
    markup: list[str] = []
    if message.role is Role.EXPERT and message.label:
        plain.append(f"{cards.inert(message.label)} : {cards.inert(message.text)}")
        markup.append(f"<b>{cards.escape(message.label)}</b> : {cards.escape(message.text)}")
    else:
        plain.append(cards.inert(message.text))
        markup.append(cards.escape(message.text))
    if message.buttons:
        choices = [f"{index}. {button.title}" for index, button in enumerate(message.buttons, start=1)]
        plain.extend(["", *(cards.inert(choice) for choice in choices), CHOICE_HINT])
        items = "".join(f"<li>{cards.escape(button.title)}</li>" for button in message.buttons)
        markup.append(f"<ol>{items}</ol>{CHOICE_HINT}")
    return RoomText(body="\n".join(plain), html="<br>".join(markup))


def power_level(state: list[dict[str, Any]], user_id: str) -> float:
    """Return a user's power level from a room's state events, counting privileged creators as infinite."""
    create = next((event for event in state if event.get("type") == "m.room.create"), None)
    levels = next((event.get("content") or {} for event in state if event.get("type") == "m.room.power_levels"), None)
    creators: set[str] = set()
    version = ""
    if create is not None:
        create_content = create.get("content") or {}
        version = str(create_content.get("room_version", "1"))
        creators = {create.get("sender", ""), *(create_content.get("additional_creators") or [])}
    if _privileged_creators(version) and user_id in creators:
        return math.inf
    if levels is None:
        return PRE_V12_CREATOR_LEVEL if user_id in creators else 0
    users = levels.get("users") or {}
    level = users.get(user_id, levels.get("users_default", 0))
    try:
        return float(level)
    except (TypeError, ValueError):
        return 0


def _privileged_creators(version: str) -> bool:
    if version.isdigit():
        return int(version) >= FIRST_PRIVILEGED_CREATORS_VERSION
    return "hydra" in version
