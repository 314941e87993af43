"""In-memory stand-ins for the chat network and the assistant, to test the expert desk alone."""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field

from bot.config import Settings
from bot.dialogue.events import BotUttered, Event, ExpertUttered
from bot.errors import ConnectorError
from bot.handoff.transport import Anchor, RoomText
from bot.messages import OutgoingMessage, Role
from bot.storage.store import Store

TRIAGE_ROOM = "!triage:test"
TECH_ROOM = "!technique:test"
FUNC_ROOM = "!fonctionnel:test"
VENDOR_ROOM = "!editeur:test"
EXPERT = "@marie:test"
VISITOR = "@visiteur:test"


@dataclass
class Post:
    room_id: str
    text: RoomText
    anchor: Anchor | None
    event_id: str


@dataclass
class FakeTransport:
    """Record posts and reactions; ``down`` makes every call fail as an unreachable homeserver would."""

    powers: dict[str, int] = field(default_factory=lambda: {EXPERT: 50})
    names: dict[str, str] = field(default_factory=lambda: {EXPERT: "Marie Curie"})
    unjoinable: set[str] = field(default_factory=set)
    down: bool = False
    posts: list[Post] = field(default_factory=list)
    reactions: list[tuple[str, str, str]] = field(default_factory=list)
    files: list[tuple] = field(default_factory=list)
    _ids: itertools.count = field(default_factory=lambda: itertools.count(1))

    def _check(self) -> None:
        if self.down:
            raise ConnectorError("homeserver unreachable (test)")

    async def join_room(self, room: str) -> str:
        self._check()
        if room in self.unjoinable:
            raise ConnectorError("M_FORBIDDEN: you are not invited to this room")
        return room

    async def post(self, room_id: str, message: RoomText, anchor: Anchor | None = None) -> str:
        self._check()
        event_id = f"$bot{next(self._ids)}"
        self.posts.append(Post(room_id, message, anchor, event_id))
        return event_id

    async def post_file(self, room_id: str, filename: str, content_type: str, data: bytes, anchor: Anchor | None = None) -> str:
        self._check()
        event_id = f"$file{next(self._ids)}"
        self.files.append((room_id, filename, content_type, data, anchor, event_id))
        return event_id

    async def react(self, room_id: str, event_id: str, key: str) -> str:
        self._check()
        self.reactions.append((room_id, event_id, key))
        return f"$reaction{next(self._ids)}"

    async def may_command(self, room_id: str, user_id: str) -> bool:
        return self.powers.get(user_id, 0) >= 50

    async def display_name(self, room_id: str, user_id: str) -> str:
        return self.names.get(user_id, user_id)

    def in_room(self, room_id: str) -> list[Post]:
        return [post for post in self.posts if post.room_id == room_id]


class FakeUser:
    """Store delivered events like the assistant does and keep what the user would have received."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self.events: list[tuple[str, Event]] = []
        self.received: list[OutgoingMessage] = []

    async def deliver(self, conversation_id: str, event: Event) -> OutgoingMessage | None:
        (seq,) = await self.store.append_events(conversation_id, [event])
        self.events.append((conversation_id, event))
        if isinstance(event, ExpertUttered):
            message = OutgoingMessage(text=event.text, role=Role.EXPERT, label=event.label, seq=seq)
        elif isinstance(event, BotUttered):
            message = OutgoingMessage(text=event.text, role=Role.BOT, response=event.response, seq=seq)
        else:
            return None
        self.received.append(message)
        return message

    def of_type(self, kind: type[Event]) -> list[Event]:
        return [event for _, event in self.events if isinstance(event, kind)]


def desk_settings(reference_prefix: str = "ENT", reopen_hours: float = 72) -> Settings:
    """Four desks over three levels; functional requests go to a desk in reply mode."""
    return Settings.model_validate(
        {
            "handoff": {
                "reference_prefix": reference_prefix,
                "reopen_delay_hours": reopen_hours,
                "desks": [
                    {"name": "triage", "level": 1, "room": TRIAGE_ROOM, "label": "Référent numérique"},
                    {"name": "technique", "level": 2, "room": TECH_ROOM, "label": "Assistance technique"},
                    {"name": "fonctionnel", "level": 2, "room": FUNC_ROOM, "label": "Assistance fonctionnelle", "relay_mode": "reply"},
                    {"name": "editeur", "level": 3, "room": VENDOR_ROOM, "label": "Éditeur de l'ENT"},
                ],
                "routing": [
                    {"match": {"expertise": ["technique"], "level": [2]}, "desk": "technique"},
                    {"match": {"expertise": ["fonctionnel"]}, "desk": "fonctionnel"},
                    {"match": {"level": [1]}, "desk": "triage"},
                ],
                "default_desk": "triage",
            }
        }
    )
