"""Load Rasa 3.x stories and rules, and expand checkpoints and OR-steps into flat step lists."""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Union

from bot._yaml import line_of, plain
from bot.data.findings import Findings, Location
from bot.errors import TrainingDataError

MAX_EXPANDED_STORIES = 5000


@dataclass(frozen=True)
class UserStep:
    intent: str
    entities: tuple[tuple[str, Any], ...] = ()
    text: str | None = None
    location: Location | None = None


@dataclass(frozen=True)
class ActionStep:
    name: str
    location: Location | None = None


@dataclass(frozen=True)
class BotTextStep:
    """A ``bot:`` step of a test story: the exact text the assistant must send."""

    text: str
    location: Location | None = None


@dataclass(frozen=True)
class LoopStep:
    name: str | None
    location: Location | None = None


@dataclass(frozen=True)
class SlotStep:
    """Slots set at this point; a value of ``...`` (Ellipsis) means "set to anything"."""

    slots: tuple[tuple[str, Any], ...]
    location: Location | None = None


@dataclass(frozen=True)
class CheckpointStep:
    name: str
    location: Location | None = None


@dataclass(frozen=True)
class OrStep:
    alternatives: tuple[Union[UserStep, SlotStep], ...]
    location: Location | None = None


Step = Union[UserStep, ActionStep, BotTextStep, LoopStep, SlotStep, CheckpointStep, OrStep]


@dataclass
class Story:
    """A story, a rule or a test story, as written."""

    name: str
    kind: str  # "story", "rule" or "test"
    steps: list[Step]
    location: Location
    condition: list[Step] = field(default_factory=list)
    conversation_start: bool = False
    wait_for_user_input: bool = True


def load_story_file(path: Path, document: Any, findings: Findings, kind_override: str | None = None) -> list[Story]:
    """Parse the ``stories:`` and ``rules:`` blocks of one file."""
    loaded: list[Story] = []
    for key, kind in (("stories", "story"), ("rules", "rule")):
        blocks = document.get(key)
        if blocks is None:
            continue
        if not isinstance(blocks, list):
            raise TrainingDataError(f"{path}:{line_of(document, key)}: '{key}' must be a list")
        for index, block in enumerate(blocks):
            location = Location(path, line_of(blocks, index))
            loaded.append(_story(path, block, kind_override or kind, location, findings))
    return loaded


def _story(path: Path, block: Any, kind: str, location: Location, findings: Findings) -> Story:
    title_key = "rule" if kind == "rule" else "story"
    if not isinstance(block, dict) or not isinstance(block.get(title_key), str):
        raise TrainingDataError(f"{location}: each {kind} needs a '{title_key}' name")
    name = block[title_key]
    allowed = {title_key, "steps", "metadata"}
    if kind == "rule":
        allowed |= {"condition", "conversation_start", "wait_for_user_input"}
    for key in block:
        if key not in allowed:
            raise TrainingDataError(f"{Location(path, line_of(block, key))}: {kind} {name!r}: unknown key {key!r}")
    if "metadata" in block:
        findings.warn(Location(path, line_of(block, "metadata")), f"{kind} {name!r}: metadata is ignored")
    steps_node = block.get("steps")
    if not isinstance(steps_node, list) or not steps_node:
        raise TrainingDataError(f"{location}: {kind} {name!r} needs a non-empty list of steps")
    steps = [_step(path, item, Location(path, line_of(steps_node, i)), name, kind, findings) for i, item in enumerate(steps_node)]
    condition_node = block.get("condition") or []
    condition = [
        _step(path, item, Location(path, line_of(condition_node, i)), name, kind, findings)
        for i, item in enumerate(condition_node)
    ]
    for step in condition:
        if not isinstance(step, (LoopStep, SlotStep)):
            raise TrainingDataError(f"{step.location}: rule {name!r}: a condition may only hold active_loop and slot_was_set")
    return Story(
        name=name,
        kind=kind,
        steps=steps,
        location=location,
        condition=condition,
        conversation_start=bool(block.get("conversation_start", False)),
        wait_for_user_input=bool(block.get("wait_for_user_input", True)),
    )


def _step(path: Path, item: Any, location: Location, name: str, kind: str, findings: Findings) -> Step:
    where = f"{location}: {kind} {name!r}"
    if not isinstance(item, dict):
        raise TrainingDataError(f"{where}: a step must be a mapping such as '- intent: greet', found {plain(item)!r}")
    if "intent" in item or "user" in item:
        for key in item:
            if key not in {"intent", "user", "entities"}:
                raise TrainingDataError(f"{where}: unknown key {key!r} in a user step")
        intent = item.get("intent")
        if not isinstance(intent, str) or not intent:
            if kind == "test":
                raise TrainingDataError(f"{where}: a test step needs 'intent' beside 'user'")
            raise TrainingDataError(f"{where}: user steps without an intent (end-to-end stories) are not supported")
        if "user" in item and kind != "test":
            findings.warn(location, f"{kind} {name!r}: 'user' text is only used in test stories and is ignored")
        return UserStep(intent, _entities(item.get("entities"), where), item.get("user"), location)
    if "action" in item:
        if not isinstance(item["action"], str) or not item["action"]:
            raise TrainingDataError(f"{where}: 'action' must name an action")
        return ActionStep(item["action"], location)
    if "bot" in item:
        if kind != "test":
            raise TrainingDataError(f"{where}: 'bot' text steps are only supported in test stories")
        return BotTextStep(str(item["bot"]), location)
    if "active_loop" in item:
        value = item["active_loop"]
        return LoopStep(None if value in (None, "null") else str(value), location)
    if "slot_was_set" in item:
        return SlotStep(_slots(item["slot_was_set"], where), location)
    if "checkpoint" in item:
        return CheckpointStep(str(item["checkpoint"]), location)
    if "or" in item:
        alternatives = item["or"]
        if not isinstance(alternatives, list) or len(alternatives) < 2:
            raise TrainingDataError(f"{where}: 'or' needs a list of at least two steps")
        parsed = tuple(_step(path, alt, location, name, kind, findings) for alt in alternatives)
        if not all(isinstance(step, (UserStep, SlotStep)) for step in parsed):
            raise TrainingDataError(f"{where}: 'or' may only hold intents or slot_was_set steps")
        return OrStep(parsed, location)
    raise TrainingDataError(f"{where}: unknown step {sorted(item)}; expected intent, action, active_loop, slot_was_set, checkpoint or or")


def _entities(node: Any, where: str) -> tuple[tuple[str, Any], ...]:
    if node is None:
        return ()
    if not isinstance(node, list):
        raise TrainingDataError(f"{where}: 'entities' must be a list")
    found = []
    for item in node:
        if isinstance(item, str):
            found.append((item, ...))
        elif isinstance(item, dict) and len(item) == 1:
            key = next(iter(item))
            found.append((str(key), plain(item[key])))
        elif isinstance(item, dict) and "entity" in item:
            found.append((str(item["entity"]), plain(item.get("value", ...))))
        else:
            raise TrainingDataError(f"{where}: each entity must be a name or a 'name: value' pair")
    return tuple(found)


def _slots(node: Any, where: str) -> tuple[tuple[str, Any], ...]:
    if not isinstance(node, list):
        raise TrainingDataError(f"{where}: 'slot_was_set' must be a list")
    found = []
    for item in node:
        if isinstance(item, str):
            found.append((item, ...))
        elif isinstance(item, dict) and len(item) == 1:
            key = next(iter(item))
            found.append((str(key), plain(item[key])))
        else:
            raise TrainingDataError(f"{where}: each slot must be a name or a 'name: value' pair")
    return tuple(found)


def expand(stories: list[Story]) -> list[tuple[Story, list[Step]]]:
    """Join stories through their checkpoints and unfold OR-steps.

    Returns (source story, flat steps) pairs. Raises TrainingDataError when the expansion would
    produce more than MAX_EXPANDED_STORIES variants, which means a checkpoint loop.
    """
    starts: dict[str, list[Story]] = {}
    for story in stories:
        if story.steps and isinstance(story.steps[0], CheckpointStep):
            starts.setdefault(story.steps[0].name, []).append(story)

    flat: list[tuple[Story, list[Step]]] = []

    def walk(origin: Story, prefix: list[Step], story: Story, depth: int) -> None:
        if depth > 20 or len(flat) > MAX_EXPANDED_STORIES:
            raise TrainingDataError(f"{origin.location}: story {origin.name!r}: checkpoints expand without end")
        body = [step for step in story.steps if not isinstance(step, CheckpointStep)]
        tail = story.steps[-1]
        steps = prefix + body
        if isinstance(tail, CheckpointStep) and len(story.steps) > 1 and tail.name in starts:
            for follower in starts[tail.name]:
                walk(origin, steps, follower, depth + 1)
        else:
            for variant in _unfold(steps):
                flat.append((origin, variant))

    for story in stories:
        if story.steps and isinstance(story.steps[0], CheckpointStep):
            continue
        walk(story, [], story, 0)
    return flat


def _unfold(steps: list[Step]) -> list[list[Step]]:
    choices = [step.alternatives if isinstance(step, OrStep) else (step,) for step in steps]
    return [list(combination) for combination in itertools.product(*choices)]
