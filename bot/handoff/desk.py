"""The interface between the assistant and the human desks, and a desk that only records requests."""

from __future__ import annotations

import abc
import logging
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from bot.dialogue.tracker import Tracker

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class HandoffContext:
    """The conversation details a desk needs to open a request."""

    conversation_id: str
    channel: str
    profile: str | None
    school: str | None
    expertise: str
    summary: str
    slots: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class HandoffTicket:
    """The request's reference, desk and availability, as shown to the user."""

    reference: str
    desk: str | None
    desk_label: str | None
    available_now: bool
    notice: str | None = None
    # False when no person replies in the conversation: the request is only recorded, and the
    # assistant goes on handling the user's messages.
    relays: bool = True


class HandoffDesk(abc.ABC):
    """The destination of escalated conversations: opens requests and relays the user's messages."""

    @abc.abstractmethod
    async def open_request(self, context: HandoffContext, tracker: Tracker) -> HandoffTicket:
        """Create a request for the conversation and notify the experts."""

    @abc.abstractmethod
    async def relay_from_user(self, conversation_id: str, text: str, seq: int) -> None:
        """Pass a message the user wrote during the handoff to the experts."""

    @abc.abstractmethod
    async def user_left(self, conversation_id: str, reason: str) -> None:
        """Tell the experts that the user went back to the assistant."""

    async def satisfaction(self, conversation_id: str, score: int) -> None:
        """Record the user's 1-5 satisfaction score for the latest resolved request."""

    async def maybe_reopen(self, conversation_id: str, intent: str | None) -> bool:
        """Reopen the latest resolved request if the user writes again soon enough; True if reopened.

        The assistant then relays the message to the desk instead of handling it.
        """
        return False

    async def relay_attachment(
        self, conversation_id: str, filename: str, content_type: str, data: bytes, seq: int
    ) -> bool:
        """Pass a file the user sent during a handoff to the experts; False when the desk refuses files."""
        return False
