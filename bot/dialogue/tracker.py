"""The tracker: one conversation's events and the state derived from them."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Iterable

from bot.data.domain import Domain
from bot.dialogue.events import (
    ActionExecuted,
    ActiveLoop,
    Event,
    Restarted,
    SessionStarted,
    SlotSet,
    UserUttered,
)
from bot.dialogue.states import LISTEN, ActionItem, LoopItem, SlotItem, State, StateBuilder, UserItem


@dataclass
class Tracker:
    """Events of the current session (earlier sessions stay in the store) and the derived state."""

    conversation_id: str
    domain: Domain
    events: list[Event] = field(default_factory=list)
    slots: dict[str, Any] = field(default_factory=dict)
    active_loop: str | None = None
    latest_message: UserUttered | None = None
    latest_action: str | None = None
    # Slots whose value the latest user message gave but validation rejected (set by the engine).
    invalid_slots: set[str] = field(default_factory=set)
    # Index in ``events`` of the current session's first event, after the last restart or session start.
    _session_start: int = field(default=0, init=False, repr=False)
    # The states of the events up to ``_fed``, built once and extended as events come (see ``states``).
    _builder: StateBuilder | None = field(default=None, init=False, repr=False)
    _fed: int = field(default=0, init=False, repr=False)

    def __post_init__(self) -> None:
        existing, self.events = self.events, []
        self.reset_slots()
        self.update(existing)

    def reset_slots(self) -> None:
        self.slots = {name: slot.initial_value for name, slot in self.domain.slots.items()}
        self.slots["requested_slot"] = None

    def update(self, events: Iterable[Event]) -> None:
        for event in events:
            self.events.append(event)
            self._apply(event)

    def _apply(self, event: Event) -> None:
        if isinstance(event, UserUttered):
            self.latest_message = event
        elif isinstance(event, ActionExecuted):
            self.latest_action = event.name
        elif isinstance(event, SlotSet):
            self.slots[event.name] = event.value
        elif isinstance(event, ActiveLoop):
            self.active_loop = event.name
        elif isinstance(event, (Restarted, SessionStarted)):
            # A new session starts empty; action_session_start sets the carried-over slots again.
            self._session_start = len(self.events)
            self.reset_slots()
            self.active_loop = None
            self.latest_message = None
            self.latest_action = None

    def session_events(self) -> list[Event]:
        """Return the events since the last restart or session start."""
        return self.events[self._session_start :]

    def states(self) -> list[State]:
        """Return the conversation's states since the session began, the last one still open.

        Events are only ever appended, so the builder of the previous call is fed the new events
        only. A restart or a new session starts a new builder.
        """
        if self._builder is None or self._fed < self._session_start:
            self._builder = StateBuilder(self.domain, partial=False, keep_pairs=False)
            self._fed = self._session_start
        builder = self._builder
        items = []
        for event in self.events[self._fed :]:
            if isinstance(event, UserUttered):
                entities = tuple(sorted({entity["entity"] for entity in event.entities}))
                items.append(UserItem(event.intent or "", entities))
            elif isinstance(event, ActionExecuted) and event.name not in {LISTEN, "action_session_start"}:
                items.append(ActionItem(event.name))
            elif isinstance(event, SlotSet):
                items.append(SlotItem(event.name, event.value))
            elif isinstance(event, ActiveLoop):
                items.append(LoopItem(event.name))
        builder.feed(items)
        self._fed = len(self.events)
        return list(builder.history) + [builder.current()]

    @property
    def requested_slot(self) -> str | None:
        return self.slots.get("requested_slot")

    def user_spoke_last(self) -> bool:
        """Tell whether no action ran since the latest user message (other than listening)."""
        for event in reversed(self.session_events()):
            if isinstance(event, UserUttered):
                return True
            if isinstance(event, ActionExecuted) and event.name != LISTEN:
                return False
        return False

    def actions_this_turn(self) -> list[str]:
        names = []
        for event in reversed(self.session_events()):
            if isinstance(event, UserUttered):
                break
            if isinstance(event, ActionExecuted):
                names.append(event.name)
        return list(reversed(names))

    def intents(self) -> list[str]:
        """Return the intents the user expressed in this session, oldest first."""
        return [event.intent for event in self.session_events() if isinstance(event, UserUttered) and event.intent]
