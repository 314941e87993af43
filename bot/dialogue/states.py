"""Conversation states: the features that policies compare between stories and live conversations.

A state is a frozen set of strings taken at the moment an action is chosen:

- ``prev:<action>``: the previous action (``action_listen`` right after the user spoke);
- ``intent:<name>`` and ``entity:<name>``: only right after the user spoke;
- ``slot:<name>:<value>`` and ``slot:<name>:set`` for slots that influence the conversation;
- ``loop:<name>`` while a form or loop is active.

Rules describe partial states and may require absence with ``!loop`` or ``!slot:<name>``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterable, Union

from bot.data.domain import Domain
from bot.data.stories import ActionStep, LoopStep, SlotStep, Step, UserStep

LISTEN = "action_listen"
State = frozenset


@dataclass(frozen=True)
class UserItem:
    intent: str
    entities: tuple[str, ...] = ()


@dataclass(frozen=True)
class ActionItem:
    name: str


@dataclass(frozen=True)
class SlotItem:
    name: str
    value: Any


@dataclass(frozen=True)
class LoopItem:
    name: str | None


Item = Union[UserItem, ActionItem, SlotItem, LoopItem]
Pair = tuple[tuple[State, ...], str]


def items_from_steps(steps: Iterable[Step]) -> list[Item]:
    """Turn story or rule steps into items; the story's explicit listen actions are dropped."""
    items: list[Item] = []
    for step in steps:
        if isinstance(step, UserStep):
            items.append(UserItem(step.intent, tuple(sorted({name for name, _ in step.entities}))))
        elif isinstance(step, ActionStep):
            if step.name != LISTEN:
                items.append(ActionItem(step.name))
        elif isinstance(step, SlotStep):
            items.extend(SlotItem(name, value) for name, value in step.slots)
        elif isinstance(step, LoopStep):
            items.append(LoopItem(step.name))
    return items


def slot_features(domain: Domain, name: str, value: Any, partial: bool) -> set[str]:
    """Return the features of one slot value; in partial (rule) states a null value means "must be unset"."""
    if value is None:
        return {f"!slot:{name}"} if partial else set()
    if name == "requested_slot":
        return {f"slot:{name}:set"} if value is ... else {f"slot:{name}:{value}", f"slot:{name}:set"}
    slot = domain.slots.get(name)
    if slot is None or not slot.influence_conversation:
        return set()
    if value is ...:
        return {f"slot:{name}:set"}
    features = {f"slot:{name}:set"}
    if slot.type in {"bool", "categorical"}:
        features.add(f"slot:{name}:{str(value).lower()}")
    return features


class StateBuilder:
    """Walk items and emit (state history, next action) pairs.

    ``partial`` builds rule states, which hold only what the rule mentions.
    """

    def __init__(self, domain: Domain, partial: bool, initial: Iterable[Item] = (), keep_pairs: bool = True) -> None:
        self.domain = domain
        self.partial = partial
        # A tracker needs only the states. Copying the history into a pair at every action would
        # cost time quadratic in the session's length.
        self.keep_pairs = keep_pairs
        self.history: list[State] = []
        self.pairs: list[Pair] = []
        self.slots: dict[str, Any] = {}
        self.loop: str | None | type(...) = ... if partial else None
        self.prev: str | None = None
        self._user: UserItem | None = None
        for item in initial:
            self._apply_context(item)

    def current(self) -> State:
        features: set[str] = set()
        if self.prev is not None:
            features.add(f"prev:{self.prev}")
        if self._user is not None and self.prev == LISTEN:
            features.add(f"intent:{self._user.intent}")
            features.update(f"entity:{name}" for name in self._user.entities)
        for name, value in self.slots.items():
            features |= slot_features(self.domain, name, value, self.partial)
        if self.loop is None:
            if self.partial:
                features.add("!loop")
        elif self.loop is not ...:
            features.add(f"loop:{self.loop}")
        return frozenset(features)

    def feed(self, items: Iterable[Item], first_action_is_context: bool = False) -> None:
        for index, item in enumerate(items):
            if isinstance(item, UserItem):
                if self.prev is not None and self.prev != LISTEN:
                    self._emit(LISTEN)
                self.prev = LISTEN
                self._user = item
            elif isinstance(item, ActionItem):
                if index == 0 and first_action_is_context:
                    self.prev = item.name
                    continue
                self._emit(item.name)
                self.prev = item.name
            else:
                self._apply_context(item)

    def finish(self, listen: bool = True) -> list[Pair]:
        if listen and self.prev is not None and self.prev != LISTEN:
            self._emit(LISTEN)
        return self.pairs

    def _apply_context(self, item: Item) -> None:
        if isinstance(item, SlotItem):
            self.slots[item.name] = item.value
        elif isinstance(item, LoopItem):
            self.loop = item.name

    def _emit(self, action: str) -> None:
        state = self.current()
        self.history.append(state)
        if self.keep_pairs:
            self.pairs.append((tuple(self.history), action))


def matches(partial: State, full: State) -> bool:
    """Tell whether a conversation state ``full`` satisfies a story or rule state ``partial``."""
    for feature in partial:
        if feature == "!loop":
            if any(item.startswith("loop:") for item in full):
                return False
        elif feature.startswith("!slot:"):
            prefix = "slot:" + feature[len("!slot:") :] + ":"
            if any(item.startswith(prefix) for item in full):
                return False
        elif feature not in full:
            return False
    return True


def window_matches(window: tuple[State, ...], conversation: list[State]) -> bool:
    if len(window) > len(conversation):
        return False
    offset = len(conversation) - len(window)
    # From the newest state back, because the newest states differ most between windows.
    return all(matches(window[index], conversation[offset + index]) for index in range(len(window) - 1, -1, -1))
