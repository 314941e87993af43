"""The interface between an expert desk and a chat network (Matrix), free of any chat library.

The Matrix connector implements :class:`DeskTransport`; tests use an in-memory fake. Every method
raises :class:`bot.errors.ConnectorError` when the network cannot do what was asked, so the desk
can keep the request and retry later.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, runtime_checkable


@dataclass(frozen=True)
class RoomText:
    """A message for a desk room: a plain body and the same text as escaped HTML.

    ``notice`` marks an automated message (a command reply), which clients show more quietly.
    Both bodies must already be inert: no mention may notify anyone.
    """

    body: str
    html: str
    notice: bool = False


@dataclass(frozen=True)
class Anchor:
    """The place of a message in a room: a thread, a reply to an event, or both.

    In a thread, ``reply_to`` is the latest event of the thread, which clients without
    thread support show as the replied-to message.
    """

    thread_root: str | None = None
    reply_to: str | None = None


@dataclass(frozen=True)
class ExpertMessage:
    """A text message that someone wrote in a desk room, with its relations to earlier events.

    ``thread_root`` comes from an ``m.thread`` relation, ``reply_to`` from ``m.in_reply_to`` and
    ``replaces`` from an ``m.replace`` relation (an edit, whose ``body`` is the new text).
    """

    room_id: str
    event_id: str
    sender: str
    body: str
    thread_root: str | None = None
    reply_to: str | None = None
    replaces: str | None = None


@runtime_checkable
class DeskTransport(Protocol):
    """Post into desk rooms and read who may use commands there."""

    async def join_room(self, room: str) -> str:
        """Join a room given by id or alias and return its room id."""
        ...

    async def post(self, room_id: str, message: RoomText, anchor: Anchor | None = None) -> str:
        """Post ``message`` (a card, a relayed text or a notice) and return its event id."""
        ...

    async def post_file(self, room_id: str, filename: str, content_type: str, data: bytes, anchor: Anchor | None = None) -> str:
        """Upload ``data`` as a file named ``filename``, post it and return the event id."""
        ...

    async def react(self, room_id: str, event_id: str, key: str) -> str:
        """Annotate an event with ``key`` (such as ✅) and return the reaction's event id."""
        ...

    async def may_command(self, room_id: str, user_id: str) -> bool:
        """Tell whether ``user_id`` has the power level required for desk commands in the room."""
        ...

    async def display_name(self, room_id: str, user_id: str) -> str:
        """Return the name that ``user_id`` shows in the room, or a readable fallback."""
        ...
