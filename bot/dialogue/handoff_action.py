"""``action_handoff``: turn the conversation into a request for a human desk."""

from __future__ import annotations

import logging

from bot.dialogue.actions import ActionContext, ActionResult
from bot.dialogue.events import BotUttered, Event, HandoffStarted, UserUttered
from bot.errors import HandoffError, StorageError
from bot.handoff.desk import HandoffContext

logger = logging.getLogger(__name__)

DEFAULT_EXPERTISE = "triage"
SUMMARY_LENGTH = 500


def expertise_of(context: ActionContext) -> str:
    """Return the expertise of the latest topic the user raised (``handoff.expertise`` in config.yml)."""
    mapping = context.settings.handoff.expertise
    for intent in reversed(context.tracker.intents()):
        if intent in mapping:
            return mapping[intent]
    return DEFAULT_EXPERTISE


def summary_of(context: ActionContext) -> str:
    """Return the user's own description, or else their latest question that the NLU understood."""
    description = context.tracker.slots.get("description")
    if description:
        return str(description)[:SUMMARY_LENGTH]
    mapping = context.settings.handoff.expertise
    for event in reversed(context.tracker.session_events()):
        if isinstance(event, UserUttered) and event.intent in mapping and not event.text.startswith("/"):
            return event.text[:SUMMARY_LENGTH]
    return ""


class HandoffAction:
    name = "action_handoff"

    async def run(self, context: ActionContext) -> ActionResult:
        desk = context.services.get("desk")
        if desk is None:
            raise HandoffError("action_handoff needs a desk; the assistant was started without one")
        tracker = context.tracker
        handoff = HandoffContext(
            conversation_id=tracker.conversation_id,
            channel=context.channel,
            profile=tracker.slots.get("profile"),
            school=tracker.slots.get("school"),
            expertise=expertise_of(context),
            summary=summary_of(context),
            slots={name: value for name, value in tracker.slots.items() if value is not None},
        )
        try:
            ticket = await desk.open_request(handoff, tracker)
        except (HandoffError, StorageError) as exc:
            # The turn is still stored with the user's message, and the user can ask again.
            logger.error("request for conversation %s could not be created: %s", tracker.conversation_id, exc)
            failed = context.utter("utter_handoff_failed")
            return ActionResult([failed] if failed else [])
        events: list[Event] = [HandoffStarted(ticket.reference, ticket.desk)]
        uttered = context.utter(
            "utter_handoff_started" if ticket.relays else "utter_handoff_recorded",
            reference=ticket.reference,
            desk_label=ticket.desk_label or "Assistance",
        )
        if uttered:
            events.append(uttered)
        if ticket.notice:
            events.append(BotUttered(text=ticket.notice, response="desk_closed_message"))
        return ActionResult(events)
