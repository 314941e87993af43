"""The assistant: handle each incoming message, persist every event, then send the replies."""

from __future__ import annotations

import asyncio
import logging
import re
import time
from collections import OrderedDict
from dataclasses import dataclass
from datetime import timedelta
from typing import TYPE_CHECKING

from bot.config import Settings
from bot.data.project import Project
from bot.dialogue.engine import DialogueEngine
from bot.dialogue.events import BotUttered, Event, ExpertUttered, HandoffEnded, Restarted, SessionStarted, SlotSet, UserUttered
from bot.dialogue.tracker import Tracker
from bot.coordination import LocalCoordinator
from bot.messages import ConversationKey, IncomingMessage, OutgoingMessage, Role
from bot.nlu.model import NluModel
from bot.nlu.normalize import clean
from bot.outbox import OutputChannel, Outbox
from bot.redaction import mask_passwords
from bot.storage.store import ConversationInfo, DuplicateMessage, Store, utcnow

if TYPE_CHECKING:
    from bot.handoff.desk import HandoffDesk

logger = logging.getLogger(__name__)

# The store keeps at most this many characters of one message; longer input is cut.
STORED_TEXT_LIMIT = 100_000
_LEAVE_HANDOFF = re.compile(r"^\s*(/annuler|/cancel|/restart|retour (au|a) (robot|l'?assistant))\s*[.!]*\s*$", re.IGNORECASE)
# The intent recorded for messages that go to the experts instead of the NLU.
RELAY_INTENT = "relayed_to_desk"
# Messages with these intents never reopen a resolved request.
SMALL_TALK = {"greet", "thank", "goodbye", "affirm", "deny", "bot_challenge"}
_SCORE = re.compile(r"^\s*([1-5])\s*(/\s*5)?\s*[.!]*\s*$")
# How many conversations keep their session's events in memory between turns. A turn checks the
# conversation's last sequence number first, so another worker's writes are read, never missed.
RECENT_CONVERSATIONS = 1024


@dataclass
class _Recent:
    """The events of a conversation's current session, up to sequence number ``seq``."""

    conversation_id: str
    seq: int
    events: list[Event]


def _current_session(events: list[Event]) -> list[Event]:
    """Return ``events`` from the last session start or restart on, that event included."""
    for index in range(len(events) - 1, -1, -1):
        if isinstance(events[index], (SessionStarted, Restarted)):
            return events[index:]
    return events


def _conversation_changes(events: list[Event]) -> dict[str, object]:
    """Return the conversation columns that these events change."""
    changes: dict[str, object] = {}
    for event in events:
        if isinstance(event, HandoffEnded):
            changes["status"] = "active"
        elif isinstance(event, SlotSet) and event.name in {"profile", "school"}:
            changes[event.name] = event.value
    return changes


def _log_orphan_failure(task: asyncio.Task) -> None:
    if not task.cancelled() and task.exception() is not None:
        logger.error("a turn whose caller went away failed", exc_info=task.exception())


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
        self._recent: OrderedDict[str, _Recent] = OrderedDict()
        self._running: set[asyncio.Task] = set()

    # ----- entry points -----

    async def handle(
        self, message: IncomingMessage, output: OutputChannel | None = None, echo_user: bool = False, catch_up: bool = False
    ) -> list[OutgoingMessage]:
        """Handle one user message; return the assistant's replies, also sent through ``output`` or the Outbox.

        With ``echo_user``, the user's own message comes first, with its sequence number and its
        ``message_id`` in the metadata, for channels that show the transcript (the web widget).
        With ``catch_up``, for channels without push, bot and expert messages the user has not
        received yet come first, and everything returned counts as received.
        A message whose channel id was already handled is ignored and returns an empty list.

        The turn runs in its own task: if the caller is cancelled (a client that disconnects), the
        turn still finishes and is stored, and its replies wait in the transcript.
        """
        task = asyncio.ensure_future(self._handle(message, output, echo_user, catch_up))
        self._running.add(task)
        task.add_done_callback(self._running.discard)
        try:
            return await asyncio.shield(task)
        except asyncio.CancelledError:
            if not task.done():
                logger.info("caller of a turn on channel %s went away, and the turn goes on", message.channel)
                task.add_done_callback(_log_orphan_failure)
            raise

    async def drain(self, timeout: float = 10.0) -> None:
        """Wait at most ``timeout`` seconds for the turns in progress. The runtime calls it when the server stops."""
        if self._running:
            logger.info("waiting for %d turns in progress", len(self._running))
            await asyncio.wait(set(self._running), timeout=timeout)

    async def _handle(
        self, message: IncomingMessage, output: OutputChannel | None, echo_user: bool, catch_up: bool
    ) -> list[OutgoingMessage]:
        key = ConversationKey(message.channel, message.sender_id)
        lock_key = f"{key.channel}\x00{key.sender_id}"
        async with self.coordinator.hold(lock_key):
            recent = self._recent.pop(lock_key, None)
            known = (recent.conversation_id, recent.seq) if recent is not None else None
            start = await self.store.open_turn(key.channel, key.sender_id, message.message_id, known, catch_up)
            if start.duplicate:
                logger.info("duplicate message channel=%s message=%s ignored", message.channel, message.message_id)
                return []
            conversation = start.conversation
            logger.info(
                "inbound message channel=%s conversation=%s message_id=%s", message.channel, conversation.id, message.message_id
            )
            started = time.perf_counter()
            earlier = [item.event for item in start.events]
            if recent is not None and not start.from_session_start:
                earlier = recent.events + earlier
            earlier = _current_session(earlier)
            tracker = Tracker(conversation.id, self.project.domain, earlier)
            events = await self._turn(conversation, tracker, message)
            processed = (message.channel, message.message_id) if message.message_id is not None else None
            try:
                seqs = await self.store.record_turn(conversation.id, events, processed, _conversation_changes(events), delivered=catch_up)
            except DuplicateMessage:
                logger.info("message channel=%s message=%s was handled elsewhere meanwhile", message.channel, message.message_id)
                return []
            if not seqs or seqs[0] == conversation.last_seq + 1:
                # No other writer came in between, so the session in memory is complete.
                self._remember(lock_key, _Recent(conversation.id, seqs[-1] if seqs else conversation.last_seq, _current_session(earlier + events)))
            relayed = [
                (event, seq) for event, seq in zip(events, seqs) if isinstance(event, UserUttered) and event.intent == RELAY_INTENT
            ]
            for event, seq in relayed:
                # Relay only after the message is stored, so nothing the user wrote can be lost.
                await self.desk.relay_from_user(conversation.id, event.text, seq)
            owed = [self._outgoing(item.event, item.seq) for item in start.owed]
            outgoing = owed + [
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

    def _remember(self, key: str, recent: _Recent) -> None:
        self._recent[key] = recent
        if len(self._recent) > RECENT_CONVERSATIONS:
            self._recent.popitem(last=False)

    async def deliver(self, conversation_id: str, event: Event) -> OutgoingMessage | None:
        """Persist a message from outside the turn (an expert's reply) and push it to the user."""
        conversation = await self.store.conversation_by_id(conversation_id)
        if conversation is None:
            raise LookupError(f"conversation {conversation_id} not found")
        key = ConversationKey(conversation.channel, conversation.sender_id)
        async with self.coordinator.hold(f"{key.channel}\x00{key.sender_id}"):
            (seq,) = await self.store.record_turn(conversation_id, [event], values=_conversation_changes([event]))
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

    async def _turn(self, conversation: ConversationInfo, tracker: Tracker, message: IncomingMessage) -> list[Event]:
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
        self, conversation: ConversationInfo, tracker: Tracker, context, message: IncomingMessage, content: str, text: str
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
        if (
            self.desk is not None
            and conversation.request_id is not None
            and user.intent not in SMALL_TALK
            and await self.desk.maybe_reopen(conversation.id, user.intent)
        ):
            # The request was resolved a short while ago: this message goes back to the experts.
            user.intent = RELAY_INTENT
            return events + [user]
        result = await self.engine.handle_message(tracker, user, context)
        return events + result.events

    def _notice(self, tracker: Tracker, context, user: UserUttered, response: str) -> list[Event]:
        tracker.update([user])
        uttered = context.utter(response)
        return [user] + ([uttered] if uttered else [])

    async def _during_handoff(self, conversation: ConversationInfo, tracker: Tracker, context, message: IncomingMessage, text: str) -> list[Event]:
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
