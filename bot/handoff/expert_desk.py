"""A desk staffed by human experts in chat rooms (Matrix): cards, two-way relay, commands.

The desk does not import the chat library: it calls a :class:`DeskTransport`. It reaches the
user through the assistant's ``deliver``, which stores each event before pushing it.

The desk takes no lock of its own. The assistant calls ``relay_from_user`` and ``maybe_reopen``
while it holds the conversation's lock, and ``deliver`` takes that lock, so a desk lock held
around ``deliver`` could deadlock.
"""

from __future__ import annotations

import logging
from datetime import timedelta
from typing import TYPE_CHECKING, Any, Protocol, Sequence

from bot.config import DeskSettings, Settings
from bot.data.domain import Domain
from bot.dialogue.events import BotUttered, Event, ExpertUttered, UserUttered
from bot.dialogue.responses import ResponseRenderer
from bot.errors import ConnectorError, HandoffError
from bot.handoff import cards
from bot.handoff.commands import CommandRunner, parse_command
from bot.handoff.desk import HandoffContext, HandoffDesk, HandoffTicket
from bot.handoff.hours import closed_notice, is_open
from bot.handoff.requests import NewRequest, RequestBook, Status
from bot.handoff.routing import RouteQuery, Router
from bot.handoff.transport import Anchor, DeskTransport, ExpertMessage, RoomText
from bot.storage.store import Store, aware, utcnow

if TYPE_CHECKING:
    from bot.dialogue.tracker import Tracker
    from bot.messages import OutgoingMessage
    from bot.storage.tables import Request

logger = logging.getLogger(__name__)

# The intent that the assistant records for messages it passes to the desk (bot.assistant.RELAY_INTENT).
RELAY_INTENT = "relayed_to_desk"
TRANSCRIPT_TYPES = ("user", "bot", "expert")
RELAYED_MARK = "✅"


class UserSide(Protocol):
    """The assistant, seen from the desk: stores an event in a conversation and pushes it to the user."""

    async def deliver(self, conversation_id: str, event: Event) -> OutgoingMessage | None: ...


def routing_slots(slots: dict) -> dict:
    """Keep the short scalar slot values that routing rules match on; free text stays in the transcript."""
    kept = {}
    for name, value in slots.items():
        if name in {"description", "requested_slot", "error_message"} or value is None:
            continue
        if isinstance(value, (bool, int, float)) or (isinstance(value, str) and len(value) <= 64):
            kept[name] = value
    return kept


class ExpertDesk(HandoffDesk):
    """Open requests as cards in desk rooms and relay messages between users and experts."""

    def __init__(self, book: RequestBook, settings: Settings, transport: DeskTransport, store: Store, command_power_level: int = 50) -> None:
        if not settings.handoff.desks:
            raise HandoffError("an expert desk needs at least one desk in handoff.desks of config.yml")
        if not isinstance(transport, DeskTransport):
            raise TypeError(f"expected a DeskTransport, got {type(transport).__name__}")
        self.book = book
        self.settings = settings
        self.transport = transport
        self.store = store
        self.command_power_level = command_power_level
        self.router = Router(settings.handoff)
        self.renderer = ResponseRenderer(Domain())
        self.user_side: UserSide | None = None
        self.commands = CommandRunner(self)
        self._desk_of_room: dict[str, DeskSettings] = {}
        self._room_of_desk: dict[str, str] = {}
        # Set when a post failed. The transport's owner calls flush_pending after its next successful sync.
        self._pending = True
        # User messages (request id, seq) that a relay attempt left out of the thread.
        self._waiting: set[tuple[int, int]] = set()
        # Requests whose card is being posted right now, which flush_pending must not post again.
        self._posting: set[int] = set()
        self._started_at = utcnow()

    def attach(self, user_side: UserSide, renderer: ResponseRenderer | None = None) -> None:
        """Give the desk the assistant that delivers expert messages, and its response renderer."""
        self.user_side = user_side
        if renderer is not None:
            self.renderer = renderer

    async def start(self) -> None:
        """Join every desk room; raise HandoffError naming the desk and room that cannot be used."""
        desk_of_room: dict[str, DeskSettings] = {}
        for desk in self.settings.handoff.desks:
            try:
                room_id = await self.transport.join_room(desk.room)
            except ConnectorError as exc:
                raise HandoffError(
                    f"desk {desk.name!r}: cannot join room {desk.room}: {exc}; invite the assistant's account "
                    "to the room, or correct handoff.desks[].room in config.yml"
                ) from None
            if room_id in desk_of_room:
                other = desk_of_room[room_id].name
                raise HandoffError(f"desks {other!r} and {desk.name!r} both use room {desk.room}; give each desk its own room")
            desk_of_room[room_id] = desk
            logger.debug("desk %s uses room %s", desk.name, room_id)
        self._desk_of_room = desk_of_room
        self._room_of_desk = {desk.name: room_id for room_id, desk in desk_of_room.items()}
        self._pending = True
        self._started_at = utcnow()
        logger.info("expert desk ready with %d desk rooms", len(desk_of_room))

    def desk_of_room(self, room_id: str) -> DeskSettings | None:
        return self._desk_of_room.get(room_id)

    def room_of_desk(self, name: str) -> str | None:
        return self._room_of_desk.get(name)

    @property
    def has_pending(self) -> bool:
        """Tell whether a card or a user message may still wait to be posted."""
        return self._pending

    # ----- the user's side (called by the assistant) -----

    async def open_request(self, context: HandoffContext, tracker: Tracker) -> HandoffTicket:
        desk = self.router.route(RouteQuery(context.expertise, context.profile, context.school, context.channel, 1, context.slots))
        if desk is None:
            raise HandoffError("no desk can take the request; check handoff.desks and handoff.routing in config.yml")
        request = await self.book.create(
            NewRequest(
                conversation_id=context.conversation_id,
                channel=context.channel,
                level=desk.level,
                desk=desk.name,
                expertise=context.expertise,
                summary=context.summary,
                profile=context.profile,
                school=context.school,
                slots=routing_slots(context.slots),
            )
        )
        available = self.available(desk)
        posted = await self.post_card(request, desk, tracker.session_events())
        notices = [] if available else [closed_notice(desk)]
        if not posted:
            notices.append(self.render("utter_handoff_unreachable", reference=request.reference).text)
        return HandoffTicket(request.reference, desk.name, desk.label, available, "\n\n".join(notices) or None)

    async def relay_from_user(self, conversation_id: str, text: str, seq: int) -> None:
        request = await self.book.open_for_conversation(conversation_id)
        if request is None:
            logger.warning("conversation %s: message %s arrived during a handoff without an open request", conversation_id, seq)
            return
        if not request.posted:
            self._pending = True
            self._waiting.add((request.id, seq))
            logger.info("request %s: card not posted yet, message %s waits in the store", request.reference, seq)
            return
        try:
            await self.post_in_request(request, cards.user_message(text), "user", seq)
        except ConnectorError as exc:
            self._pending = True
            self._waiting.add((request.id, seq))
            logger.warning("request %s: message %s not relayed yet (%s); it will be retried", request.reference, seq, exc)

    async def user_left(self, conversation_id: str, reason: str) -> None:
        request = await self.book.open_for_conversation(conversation_id)
        if request is None:
            return
        request = await self.book.transition(request, Status.CLOSED, actor="user", note=reason, outcome="user_left")
        await self.tell_room(request, "L'usager est revenu à l'assistant : la demande est close.")

    async def satisfaction(self, conversation_id: str, score: int) -> None:
        request = await self.book.latest_for_conversation(conversation_id)
        if request is None:
            logger.warning("conversation %s: satisfaction score without any request", conversation_id)
            return
        if request.status == Status.RESOLVED.value:
            request = await self.book.transition(
                request, Status.CLOSED, actor="user", note=f"satisfaction {score}/5", satisfaction=score
            )
        elif request.status == Status.CLOSED.value and request.outcome == "resolved" and request.satisfaction is None:
            await self.book.update(request, satisfaction=score)
        else:
            logger.info("request %s is %s: satisfaction score not recorded", request.reference, request.status)
            return
        await self.tell_room(request, f"Satisfaction de l'usager : {score}/5. La demande {request.reference} est close.")

    async def maybe_reopen(self, conversation_id: str, intent: str | None) -> bool:
        request = await self.book.latest_for_conversation(conversation_id)
        if request is None or request.status != Status.RESOLVED.value or request.resolved_at is None:
            return False
        if utcnow() - aware(request.resolved_at) > timedelta(hours=self.settings.handoff.reopen_delay_hours):
            return False
        request = await self.book.transition(
            request, Status.NEW, actor="user", note="rouverte par un nouveau message de l'usager", assignee=None
        )
        await self.tell_room(request, f"Demande {request.reference} rouverte : l'usager a écrit de nouveau.")
        return True

    async def relay_attachment(self, conversation_id: str, filename: str, content_type: str, data: bytes, seq: int) -> bool:
        """Post a file of the user into the request's thread; False when the desk takes no files.

        Raises ConnectorError when the desk takes files but posting failed.
        """
        request = await self.book.open_for_conversation(conversation_id)
        desk = self.router.desks.get(request.desk or "") if request is not None else None
        if request is None or desk is None or not desk.allow_attachments or not request.posted:
            return False
        event_id = await self.transport.post_file(request.room_id, cards.inert(filename), content_type, data, await self.anchor(request))
        await self.book.remember_event(event_id, request, request.room_id, "file", seq)
        logger.info("request %s: file of %d bytes posted as %s", request.reference, len(data), event_id)
        return True

    # ----- the experts' side (called by the transport's owner) -----

    async def handle_expert_message(self, message: ExpertMessage) -> None:
        """Act on a message written in a room: relay it, run a command, or ignore it."""
        desk = self._desk_of_room.get(message.room_id)
        if desk is None:
            logger.info("event %s in room %s, not a desk room: ignored", message.event_id, message.room_id)
            return
        try:
            if message.replaces is not None:
                await self._relay_correction(desk, message)
                return
            request = await self._request_of(message)
            command = parse_command(message.body)
            if command is not None:
                await self.commands.run(desk, message, command, request)
            elif request is None:
                logger.debug("message %s in desk room %s belongs to no request: not relayed", message.event_id, message.room_id)
            else:
                await self._relay_to_user(desk, message, request)
        except ConnectorError as exc:
            logger.warning("event %s in room %s: posting the reply failed: %s", message.event_id, message.room_id, exc)

    async def flush_pending(self) -> int:
        """Post the cards and user messages that could not be posted; return how many cards went out."""
        if not self._desk_of_room:
            return 0
        self._pending = False
        posted = 0
        for waiting in await self.book.unposted():
            # Read again: a turn may have posted the card meanwhile, or be posting it now.
            request = await self.book.by_id(waiting.id)
            if request is None or request.posted or request.id in self._posting:
                continue
            desk = self.router.desks.get(request.desk or "")
            if desk is None:
                logger.error("request %s names desk %r, which config.yml no longer has; it stays unposted", request.reference, request.desk)
                continue
            events = await self.transcript_events(request.conversation_id)
            details = request.details or {}
            if not await self.post_card(request, desk, events, details.get("origin"), details.get("reason")):
                return posted
            posted += 1
            logger.info("request %s: card posted after a delay", request.reference)
            await self.deliver(
                request.conversation_id, self.render("utter_handoff_posted", reference=request.reference, desk_label=desk.label)
            )
        for status in (Status.NEW, Status.CLAIMED):
            for request in await self.book.search(status=status.value):
                if request.posted and not await self._relay_missed(request):
                    return posted
        return posted

    # ----- helpers shared with the commands -----

    def available(self, desk: DeskSettings) -> bool:
        return is_open(desk.hours) if desk.hours else True

    def render(self, response: str, **values: Any) -> BotUttered:
        rendered = self.renderer.render(response, values)
        if rendered is None:
            raise HandoffError(f"response {response} is not defined; add it to domain.yml")
        text, buttons = rendered
        return BotUttered(text=text, buttons=list(buttons), response=response)

    async def deliver(self, conversation_id: str, event: Event) -> OutgoingMessage | None:
        if self.user_side is None:
            raise RuntimeError("ExpertDesk has no assistant to deliver through; call attach() first")
        try:
            return await self.user_side.deliver(conversation_id, event)
        except LookupError:
            logger.error("conversation %s not found: event %s not delivered", conversation_id, event.kind)
            return None

    async def transcript_events(self, conversation_id: str) -> list[Event]:
        stored = await self.store.latest_events(conversation_id, TRANSCRIPT_TYPES, cards.TRANSCRIPT_MESSAGES)
        return [item.event for item in stored]

    async def post_card(
        self, request: Request, desk: DeskSettings, events: Sequence[Event], origin: str | None = None, reason: str | None = None
    ) -> bool:
        """Post the request's card in the desk's room; on failure, keep it for flush_pending and return False."""
        room_id = self._room_of_desk.get(desk.name)
        facts = cards.CardFacts(
            reference=request.reference,
            desk=desk,
            profile=request.profile,
            school=request.school,
            channel=request.channel,
            expertise=request.expertise,
            summary=request.summary,
            available_now=self.available(desk),
            transcript=cards.transcript_lines(events),
            origin=origin,
            reason=reason,
        )
        if request.id in self._posting:
            return False
        self._posting.add(request.id)
        try:
            return await self._post_card(request, desk, room_id, facts)
        finally:
            self._posting.discard(request.id)

    async def _post_card(self, request: Request, desk: DeskSettings, room_id: str | None, facts: cards.CardFacts) -> bool:
        # Read before posting: a user message stored meanwhile comes after the card and is relayed later.
        conversation = await self.store.conversation_by_id(request.conversation_id)
        try:
            if room_id is None:
                raise ConnectorError("the desk rooms are not joined yet")
            event_id = await self.transport.post(room_id, cards.card(facts))
        except ConnectorError as exc:
            self._pending = True
            await self.book.update(request, room_id=room_id, thread_root=None, posted=False)
            logger.warning("request %s: card not posted to desk %s (%s); it will be retried", request.reference, desk.name, exc)
            return False
        await self.book.update(request, room_id=room_id, thread_root=event_id, posted=True)
        await self.book.remember_event(event_id, request, room_id, "card", conversation.last_seq if conversation else None)
        logger.info("request %s: card %s posted to desk %s", request.reference, event_id, desk.name)
        return True

    async def anchor(self, request: Request) -> Anchor:
        """Return where the next message of a request goes: its thread, or a reply to its latest event."""
        latest = request.thread_root
        for relayed in await self.book.relayed_events(request):
            if relayed.room_id == request.room_id:
                latest = relayed.event_id
        desk = self.router.desks.get(request.desk or "")
        if desk is not None and desk.relay_mode == "reply":
            return Anchor(reply_to=latest)
        return Anchor(thread_root=request.thread_root, reply_to=latest)

    async def post_in_request(self, request: Request, text: RoomText, kind: str, seq: int | None = None) -> str:
        """Post into the request's thread (or reply chain) and remember the event; raise ConnectorError."""
        event_id = await self.transport.post(request.room_id, text, await self.anchor(request))
        await self.book.remember_event(event_id, request, request.room_id, kind, seq)
        return event_id

    async def tell_room(self, request: Request, text: str) -> None:
        """Post a notice into the request's thread when its card is posted; log a failure."""
        if not request.posted or request.room_id is None:
            return
        try:
            await self.post_in_request(request, cards.notice(text), "notice")
        except ConnectorError as exc:
            logger.warning("request %s: notice not posted (%s)", request.reference, exc)

    async def reply(self, message: ExpertMessage, text: RoomText, request: Request | None = None) -> None:
        """Reply to an expert's message where it was written, and link the reply to the request."""
        anchor = Anchor(thread_root=message.thread_root, reply_to=message.event_id)
        event_id = await self.transport.post(message.room_id, text, anchor)
        if request is not None:
            await self.book.remember_event(event_id, request, message.room_id, "notice")

    async def expert_label(self, desk: DeskSettings, sender: str) -> str:
        if not desk.show_expert_names:
            return desk.label
        name = await self.transport.display_name(self._room_of_desk.get(desk.name, ""), sender)
        return f"{name} ({desk.label})"

    # ----- internals -----

    async def _request_of(self, message: ExpertMessage) -> Request | None:
        for event_id in (message.thread_root, message.reply_to):
            if event_id is None:
                continue
            found = await self.book.by_event(event_id)
            if found is not None:
                return found[0]
        return None

    async def _relay_to_user(self, desk: DeskSettings, message: ExpertMessage, request: Request) -> None:
        if request.room_id != message.room_id:
            current = self.router.desks.get(request.desk or "")
            label = current.label if current else request.desk
            await self.reply(message, cards.notice(f"La demande {request.reference} a été confiée à {label} : ce message n'a pas été transmis."), request)
            return
        if request.status == Status.CLOSED.value:
            await self.reply(message, cards.notice(f"La demande {request.reference} est close : ce message n'a pas été transmis à l'usager."), request)
            return
        if not message.body.strip():
            return
        if request.status == Status.NEW.value:
            # An expert's first reply claims the request.
            request = await self.book.transition(
                request, Status.CLAIMED, actor=message.sender, note="prise en charge par une première réponse", assignee=message.sender
            )
        label = await self.expert_label(desk, message.sender)
        outgoing = await self.deliver(
            request.conversation_id, ExpertUttered(message.body, label=label, request_ref=request.reference, source_id=message.event_id)
        )
        await self.book.remember_event(message.event_id, request, message.room_id, "expert", outgoing.seq if outgoing else None)
        await self.transport.react(message.room_id, message.event_id, RELAYED_MARK)
        logger.info("request %s: expert message %s relayed to conversation %s", request.reference, message.event_id, request.conversation_id)

    async def _relay_correction(self, desk: DeskSettings, message: ExpertMessage) -> None:
        found = await self.book.by_event(message.replaces or "")
        if found is None or found[1].kind != "expert":
            logger.debug("edit %s changes no relayed message: ignored", message.event_id)
            return
        request, _original = found
        if request.status == Status.CLOSED.value:
            await self.reply(message, cards.notice(f"La demande {request.reference} est close : la correction n'a pas été transmise."), request)
            return
        label = await self.expert_label(desk, message.sender)
        await self.deliver(
            request.conversation_id,
            ExpertUttered(
                f"Correction : {message.body}",
                label=label,
                request_ref=request.reference,
                source_id=message.event_id,
                correction_of=message.replaces,
            ),
        )
        await self.book.remember_event(message.event_id, request, message.room_id, "expert")
        logger.info("request %s: correction %s relayed to conversation %s", request.reference, message.event_id, request.conversation_id)

    async def _relay_missed(self, request: Request) -> bool:
        """Post the user's messages that a failure kept out of the thread; False if posting still fails.

        Only messages that a relay attempt left waiting, or that were stored before the desk started
        (a stop between storing and relaying), are posted: a message stored a moment ago may still be
        on its way through ``relay_from_user``.
        """
        relayed = await self.book.relayed_events(request)
        posted_seqs = {item.conversation_seq for item in relayed if item.kind == "user"}
        card_seqs = [item.conversation_seq or 0 for item in relayed if item.kind == "card" and item.room_id == request.room_id]
        since = card_seqs[-1] if card_seqs else 0
        # Messages up to the card's sequence number are in the card's transcript.
        self._waiting = {item for item in self._waiting if item[0] != request.id or item[1] > since}
        for stored in await self.store.events(request.conversation_id, since=since, types=["user"]):
            event = stored.event
            if not isinstance(event, UserUttered) or event.intent != RELAY_INTENT or stored.seq in posted_seqs:
                continue
            if (request.id, stored.seq) not in self._waiting and aware(event.timestamp) >= self._started_at:
                continue
            try:
                await self.post_in_request(request, cards.user_message(event.text), "user", stored.seq)
            except ConnectorError as exc:
                self._pending = True
                logger.warning("request %s: message %s still not relayed (%s)", request.reference, stored.seq, exc)
                return False
            self._waiting.discard((request.id, stored.seq))
            logger.info("request %s: message %s relayed after a delay", request.reference, stored.seq)
        return True
