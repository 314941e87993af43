"""Conversation events: what the tracker records and the store persists, in order."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from datetime import datetime, timezone
from typing import Any, ClassVar

from bot.data.domain import Button


def _now() -> datetime:
    return datetime.now(timezone.utc)


@dataclass
class Event:
    """Base of all events; ``kind`` is the stored type name."""

    kind: ClassVar[str] = ""
    timestamp: datetime = field(default_factory=_now, kw_only=True)

    def payload(self) -> dict[str, Any]:
        data = {}
        for item in fields(self):
            if item.name == "timestamp":
                continue
            value = getattr(self, item.name)
            if item.name == "buttons":
                value = [asdict(button) for button in value]
            data[item.name] = value
        return data


@dataclass
class UserUttered(Event):
    kind: ClassVar[str] = "user"
    text: str
    intent: str | None = None
    confidence: float = 0.0
    entities: list[dict[str, Any]] = field(default_factory=list)
    parse_data: dict[str, Any] = field(default_factory=dict)
    message_id: str | None = None
    channel: str | None = None


@dataclass
class BotUttered(Event):
    kind: ClassVar[str] = "bot"
    text: str
    buttons: list[Button] = field(default_factory=list)
    response: str | None = None


@dataclass
class ExpertUttered(Event):
    """A message an expert wrote in a desk room, relayed to the user."""

    kind: ClassVar[str] = "expert"
    text: str
    label: str | None = None
    request_ref: str | None = None
    source_id: str | None = None
    correction_of: str | None = None


@dataclass
class ActionExecuted(Event):
    kind: ClassVar[str] = "action"
    name: str
    policy: str | None = None
    confidence: float | None = None


@dataclass
class SlotSet(Event):
    kind: ClassVar[str] = "slot"
    name: str
    value: Any = None


@dataclass
class ActiveLoop(Event):
    kind: ClassVar[str] = "active_loop"
    name: str | None = None


@dataclass
class HandoffStarted(Event):
    kind: ClassVar[str] = "handoff_started"
    request_ref: str
    desk: str | None = None


@dataclass
class HandoffEnded(Event):
    kind: ClassVar[str] = "handoff_ended"
    request_ref: str
    reason: str = "resolved"


@dataclass
class Restarted(Event):
    kind: ClassVar[str] = "restart"


@dataclass
class SessionStarted(Event):
    kind: ClassVar[str] = "session_started"


EVENT_TYPES: dict[str, type[Event]] = {
    cls.kind: cls
    for cls in (
        UserUttered,
        BotUttered,
        ExpertUttered,
        ActionExecuted,
        SlotSet,
        ActiveLoop,
        HandoffStarted,
        HandoffEnded,
        Restarted,
        SessionStarted,
    )
}


def event_from_record(kind: str, payload: dict[str, Any], timestamp: datetime) -> Event:
    """Rebuild an event from its stored type name and payload; raise KeyError for an unknown type."""
    cls = EVENT_TYPES[kind]
    data = dict(payload)
    if cls is BotUttered:
        data["buttons"] = [Button(**button) for button in data.get("buttons", [])]
    return cls(**data, timestamp=timestamp)
