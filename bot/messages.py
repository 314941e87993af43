"""Typed messages exchanged between connectors and the assistant."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

from bot.data.domain import Button


class Role(enum.Enum):
    """The author of a transcript message."""

    USER = "user"
    BOT = "bot"
    EXPERT = "expert"
    SYSTEM = "system"


@dataclass(frozen=True)
class Identity:
    """The user's details that a channel has verified (a signed ENT token, a Matrix account)."""

    profile: str | None = None
    school: str | None = None
    name: str | None = None
    subject: str | None = None


@dataclass(frozen=True)
class IncomingMessage:
    """One message from a user, as a connector received it.

    ``message_id`` is the channel's own id, used to handle each message once; ``payload`` is set
    when the user pressed a button (``/intent{"entity": "value"}``).
    """

    channel: str
    sender_id: str
    text: str
    message_id: str | None = None
    payload: str | None = None
    identity: Identity | None = None
    metadata: dict[str, Any] = field(default_factory=dict)
    received_at: datetime = field(default_factory=lambda: datetime.now(timezone.utc))

    @property
    def content(self) -> str:
        """Return what the NLU should read: the button payload when there is one."""
        return self.payload if self.payload is not None else self.text


@dataclass(frozen=True)
class OutgoingMessage:
    """One message to a user: text, optional buttons, who wrote it and its place in the transcript."""

    text: str
    buttons: tuple[Button, ...] = ()
    role: Role = Role.BOT
    label: str | None = None
    response: str | None = None
    seq: int | None = None
    time: datetime | None = None
    metadata: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class ConversationKey:
    """The channel and the channel's id for the user: together they name one conversation."""

    channel: str
    sender_id: str

    def __post_init__(self) -> None:
        if not self.channel or not self.sender_id:
            raise ValueError("a conversation needs both a channel and a sender id")
