"""A desk that records requests in the store without notifying anyone (no desk rooms configured)."""

from __future__ import annotations

import logging

from bot.config import Settings
from bot.handoff.desk import HandoffContext, HandoffDesk, HandoffTicket
from bot.handoff.hours import closed_notice, is_open
from bot.handoff.requests import NewRequest, RequestBook
from bot.handoff.routing import RouteQuery, Router

logger = logging.getLogger(__name__)


class RecordingDesk(HandoffDesk):
    """Create and route requests; experts read them with ``entraide requests``."""

    def __init__(self, book: RequestBook, settings: Settings) -> None:
        self.book = book
        self.router = Router(settings.handoff)

    async def open_request(self, context: HandoffContext, tracker) -> HandoffTicket:
        desk = self.router.route(
            RouteQuery(context.expertise, context.profile, context.school, context.channel, 1, context.slots)
        )
        request = await self.book.create(
            NewRequest(
                conversation_id=context.conversation_id,
                channel=context.channel,
                level=desk.level if desk else 1,
                desk=desk.name if desk else None,
                expertise=context.expertise,
                summary=context.summary,
                profile=context.profile,
                school=context.school,
            )
        )
        # This desk has no expert room, so the conversation stays with the assistant.
        await self.book.store.update_conversation(context.conversation_id, status="active")
        available = is_open(desk.hours) if desk and desk.hours else True
        notice = None if available or desk is None else closed_notice(desk)
        return HandoffTicket(request.reference, request.desk, desk.label if desk else None, available, notice, relays=False)

    async def relay_from_user(self, conversation_id: str, text: str, seq: int) -> None:
        logger.debug("conversation %s: message %s kept for the request", conversation_id, seq)

    async def user_left(self, conversation_id: str, reason: str) -> None:
        request = await self.book.open_for_conversation(conversation_id)
        if request is not None:
            from bot.handoff.requests import Status

            await self.book.transition(request, Status.CLOSED, actor="user", note=reason, outcome="user_left")
