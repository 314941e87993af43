"""The assistant: handle each incoming message, persist every event, then send the replies."""

from __future__ import annotations

import logging
import re
import time
from datetime import timedelta
from typing import TYPE_CHECKING

from bot.config import Settings
from bot.data.project import Project
from bot.dialogue.engine import DialogueEngine
from bot.dialogue.events import BotUttered, Event, ExpertUttered, HandoffEnded, HandoffStarted, SlotSet, UserUttered
from bot.dialogue.tracker import Tracker
from bot.coordination import LocalCoordinator
from bot.messages import ConversationKey, IncomingMessage, OutgoingMessage, Role
from bot.nlu.model import NluModel
from bot.nlu.normalize import clean
from bot.outbox import OutputChannel, Outbox
from bot.redaction import mask_passwords
from bot.storage.store import Store, utcnow

if TYPE_CHECKING:
    from bot.handoff.desk import HandoffDesk
    from bot.storage.tables import Conversation

logger = logging.getLogger(__name__)

# The store keeps at most this many characters of one message; longer input is cut.
STORED_TEXT_LIMIT = 100_000
_LEAVE_HANDOFF = re.compile(r"^\s*(/annuler|/cancel|/restart|retour (au|a) (robot|l'?assistant))\s*[.!]*\s*$", re.IGNORECASE)
# The intent recorded for messages that go to the experts instead of the NLU.
RELAY_INTENT = "relayed_to_desk"
# Messages with these intents never reopen a resolved request.
SMALL_TALK = {"greet", "thank", "goodbye", "affirm", "deny", "bot_challenge"}
_SCORE = re.compile(r"^\s*([1-5])\s*(/\s*5)?\s*[.!]*\s*$")


def sanitize(text: str) -> str:
    """Make text safe to store: no lone surrogates from undecodable bytes, no NUL or control characters."""
    text = text.encode("utf-8", "replace").decode("utf-8")
    return clean(text).replace("\ufffd", "?")


class Assistant:
    """The level-0 assistant of one deployment."""

    def __init__(
        self,
        settings: Settings,
        project: Project,
        model: NluModel,
        store: Store,
        outbox: Outbox | None = None,
        desk: HandoffDesk | None = None,
        seed: int | None = None,
        coordinator=None,
    ) -> None:
        self.settings = settings
        self.project = project
        self.model = model
        self.store = store
        self.outbox = outbox or Outbox()
        self.desk = desk
        self.engine = DialogueEngine(project.domain, project.stories, settings, seed=seed)
        self.coordinator = coordinator or (self.outbox.coordinator if self.outbox.coordinator is not None else LocalCoordinator())
        self.max_length = settings.channels.web.max_message_length

    # ----- entry points -----

    async def handle(
        self, message: IncomingMessage, output: OutputChannel | None = None, echo_user: bool = False
    ) -> list[OutgoingMessage]:
        """Handle one user message; return the assistant's replies, also sent through ``output`` or the Outbox.

        With ``echo_user``, the user's own message comes first, with its sequence number and its
        ``message_id`` in the metadata, for channels that show the transcript (the web widget).
        A message whose channel id was already handled is ignored and returns an empty list.
        """
        key = ConversationKey(message.channel, message.sender_id)
        lock_key = f"{key.channel}\x00{key.sender_id}"
        async with self.coordinator.hold(lock_key):
            if message.message_id is not None and not await self.store.mark_processed(message.channel, message.message_id):
                logger.info("duplicate message channel=%s message=%s ignored", message.channel, message.message_id)
                return []
            conversation = await self.store.conversation(key.channel, key.sender_id)
            logger.info(
                "inbound message channel=%s conversation=%s message=%s", message.channel, conversation.id, message.message_id
            )
            started = time.perf_counter()
            try:
                events = await self._turn(conversation, message)
                seqs = await self.store.append_events(conversation.id, events)
            except BaseException:
                # Nothing of the turn was stored: let the channel deliver the message again.
                if message.message_id is not None:
                    await self.store.forget_processed(message.channel, message.message_id)
                raise
            await self._after_turn(conversation, events)
            relayed = [
                (event, seq) for event, seq in zip(events, seqs) if isinstance(event, UserUttered) and event.intent == RELAY_INTENT
            ]
            for event, seq in relayed:
                # Relay only after the message is stored, so nothing the user wrote can be lost.
                await self.desk.relay_from_user(conversation.id, event.text, seq)
            outgoing = [
                self._outgoing(event, seq)
                for event, seq in zip(events, seqs)
                if isinstance(event, (BotUttered, ExpertUttered)) or (echo_user and isinstance(event, UserUttered))
            ]
            logger.debug("conversation %s: turn took %.1f ms", conversation.id, (time.perf_counter() - started) * 1000)
        for item in outgoing:
            if output is not None:
                await output.send(message.sender_id, item)
            else:
                await self.outbox.send(key, item, conversation.id)
        return outgoing

    async def deliver(self, conversation_id: str, event: Event) -> OutgoingMessage | None:
        """Persist a message from outside the turn (an expert's reply) and push it to the user."""
        conversation = await self.store.conversation_by_id(conversation_id)
        if conversation is None:
            raise LookupError(f"conversation {conversation_id} not found")
        key = ConversationKey(conversation.channel, conversation.sender_id)
        async with self.coordinator.hold(f"{key.channel}\x00{key.sender_id}"):
            (seq,) = await self.store.append_events(conversation_id, [event])
            await self._after_turn(conversation, [event])
        if not isinstance(event, (BotUttered, ExpertUttered)):
            return None
        outgoing = self._outgoing(event, seq)
        await self.outbox.send(key, outgoing, conversation_id)
        return outgoing

    async def history(self, conversation_id: str, since: int = 0, limit: int = 200) -> list[OutgoingMessage]:
        """Return the transcript after sequence number ``since``: the newest ``limit`` messages, oldest first."""
        types = ["user", "bot", "expert"]
        if since == 0:
            stored = await self.store.latest_events(conversation_id, types, limit)
        else:
            stored = await self.store.events(conversation_id, since=since, types=types, limit=limit)
        return [self._outgoing(item.event, item.seq) for item in stored if not (isinstance(item.event, UserUttered) and not item.event.text)]

    async def tracker(self, conversation_id: str) -> Tracker:
        stored = await self.store.session_events(conversation_id)
        return Tracker(conversation_id, self.project.domain, [item.event for item in stored])

    # ----- one turn -----

    async def _turn(self, conversation: Conversation, message: IncomingMessage) -> list[Event]:
        tracker = await self.tracker(conversation.id)
        context = self.engine.context(tracker, message.channel, identity=message.identity, services={"desk": self.desk, "assistant": self})
        events: list[Event] = []
        # The conversation's very first message: a restart or a new session shows no notice again.
        first_contact = conversation.last_seq == 0

        if self._session_expired(tracker):
            events += await self.engine.run_action("action_session_start", tracker, context)
        events += self._identity_slots(tracker, message)

        content = sanitize(message.content if isinstance(message.content, str) else "")[:STORED_TEXT_LIMIT]
        masked = False
        if message.payload is None:
            content, masked = mask_passwords(content)
        # For a button, the transcript keeps its title while the NLU reads its payload.
        text = sanitize(message.text)[:STORED_TEXT_LIMIT] if message.payload is not None and message.text.strip() else content
        turn = await self._respond(conversation, tracker, context, message, content, text)
        return events + self._with_notices(turn, context, masked, first_contact)

    def _with_notices(self, turn: list[Event], context, masked: bool, first_contact: bool) -> list[Event]:
        """Insert the privacy notice at a first contact, and the password warning, after the user's message."""
        notices = []
        uttered = {event.response for event in turn if isinstance(event, BotUttered)}
        if first_contact and "utter_privacy" not in uttered:
            notices.append(context.utter("utter_privacy"))
        if masked:
            notices.append(context.utter("utter_password_masked"))
        notices = [notice for notice in notices if notice is not None]
        if not notices:
            return turn
        position = next((index + 1 for index, event in enumerate(turn) if isinstance(event, UserUttered)), 0)
        return turn[:position] + notices + turn[position:]

    async def _respond(
        self, conversation: Conversation, tracker: Tracker, context, message: IncomingMessage, content: str, text: str
    ) -> list[Event]:
        events: list[Event] = []
        if not content.strip():
            return events + self._notice(tracker, context, UserUttered(text="", channel=message.channel, message_id=message.message_id), "utter_empty")
        if len(text) > self.max_length and message.payload is None:
            # Keep the whole text for the record, but do not guess at its meaning.
            user = UserUttered(text=text, channel=message.channel, message_id=message.message_id)
            return events + self._notice(tracker, context, user, "utter_too_long")

        if conversation.status == "handoff" and self.desk is not None:
            return events + await self._during_handoff(conversation, tracker, context, message, text)

        score = _SCORE.match(text)
        if score and tracker.slots.get("awaiting_satisfaction") and self.desk is not None:
            user = UserUttered(text=text, intent="satisfaction", confidence=1.0, channel=message.channel, message_id=message.message_id)
            await self.desk.satisfaction(conversation.id, int(score.group(1)))
            thanks = context.utter("utter_satisfaction_thanks")
            return events + [user, SlotSet("awaiting_satisfaction", None)] + ([thanks] if thanks else [])

        parse = self.model.parse(content)
        user = UserUttered(
            text=text,
            intent=parse["intent"]["name"],
            confidence=parse["intent"]["confidence"],
            entities=parse["entities"],
            parse_data=parse,
            message_id=message.message_id,
            channel=message.channel,
        )
        if self.desk is not None and user.intent not in SMALL_TALK and await self.desk.maybe_reopen(conversation.id, user.intent):
            # The request was resolved a short while ago: this message goes back to the experts.
            user.intent = RELAY_INTENT
            return events + [user]
        result = await self.engine.handle_message(tracker, user, context)
        return events + result.events

    def _notice(self, tracker: Tracker, context, user: UserUttered, response: str) -> list[Event]:
        tracker.update([user])
        uttered = context.utter(response)
        return [user] + ([uttered] if uttered else [])

    async def _during_handoff(self, conversation: Conversation, tracker: Tracker, context, message: IncomingMessage, text: str) -> list[Event]:
        if _LEAVE_HANDOFF.match(text):
            user = UserUttered(text=text, intent="back_to_bot", confidence=1.0, message_id=message.message_id, channel=message.channel)
            await self.desk.user_left(conversation.id, "user asked to go back to the assistant")
            reference = await self._open_reference(conversation.id)
            back = context.utter("utter_back_to_bot")
            return [user, HandoffEnded(reference or "", reason="user_left")] + ([back] if back else [])
        return [UserUttered(text=text, intent=RELAY_INTENT, confidence=1.0, message_id=message.message_id, channel=message.channel)]

    async def _open_reference(self, conversation_id: str) -> str | None:
        from bot.handoff.requests import RequestBook

        request = await RequestBook(self.store).latest_for_conversation(conversation_id)
        return request.reference if request else None

    async def _after_turn(self, conversation: Conversation, events: list[Event]) -> None:
        for event in events:
            if isinstance(event, HandoffStarted):
                refreshed = await self.store.conversation_by_id(conversation.id)
                conversation.status = refreshed.status if refreshed else "handoff"
            elif isinstance(event, HandoffEnded):
                conversation.status = "active"
                await self.store.update_conversation(conversation.id, status="active")
            elif isinstance(event, SlotSet) and event.name in {"profile", "school"}:
                await self.store.update_conversation(conversation.id, **{event.name: event.value})

    def _session_expired(self, tracker: Tracker) -> bool:
        if not tracker.events:
            return True
        minutes = self.project.domain.session_expiration_time
        if minutes <= 0:
            return False
        return utcnow() - tracker.events[-1].timestamp > timedelta(minutes=minutes)

    def _identity_slots(self, tracker: Tracker, message: IncomingMessage) -> list[Event]:
        """Set profile and school from a verified identity, so the assistant does not ask again."""
        if message.identity is None:
            return []
        events: list[Event] = []
        for name in ("profile", "school"):
            value = getattr(message.identity, name)
            if value and name in tracker.domain.slots and tracker.slots.get(name) != value:
                events.append(SlotSet(name, value))
        tracker.update(events)
        return events

    def _outgoing(self, event: BotUttered | ExpertUttered | UserUttered, seq: int) -> OutgoingMessage:
        if isinstance(event, UserUttered):
            return OutgoingMessage(
                text=event.text, role=Role.USER, seq=seq, time=event.timestamp, metadata={"message_id": event.message_id}
            )
        if isinstance(event, ExpertUttered):
            return OutgoingMessage(text=event.text, role=Role.EXPERT, label=event.label, seq=seq, time=event.timestamp)
        return OutgoingMessage(text=event.text, buttons=tuple(event.buttons), role=Role.BOT, response=event.response, seq=seq, time=event.timestamp)
