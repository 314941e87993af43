"""Fill slots from a user message through the domain's slot mappings, and validate the values."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

from bot.config import is_uai
from bot.data.domain import Domain, Slot, SlotMapping
from bot.dialogue.events import SlotSet, UserUttered
from bot.dialogue.tracker import Tracker
from bot.nlu.normalize import fold

Validator = Callable[[Any], Any]


# The value a "Je ne connais pas le code" button sends: the request goes on without a school.
UNKNOWN_SCHOOL = "inconnu"
MIN_DESCRIPTION_LENGTH = 10


def validate_school(value: Any) -> Any:
    """Accept a UAI code (7 digits and a letter), returned upper-case, or ``inconnu``; None otherwise."""
    text = str(value).strip()
    if text.lower() == UNKNOWN_SCHOOL:
        return UNKNOWN_SCHOOL
    return text.upper() if is_uai(text) else None


def validate_description(value: Any) -> Any:
    """Accept a description of at least two words and MIN_DESCRIPTION_LENGTH characters, so "ok" is rejected."""
    text = str(value).strip()
    return text if len(text) >= MIN_DESCRIPTION_LENGTH and len(text.split()) >= 2 else None


# Slot name -> validator returning the cleaned value or None when invalid.
BUILTIN_VALIDATORS: dict[str, Validator] = {"school": validate_school, "description": validate_description}


@dataclass
class Extraction:
    events: list[SlotSet] = field(default_factory=list)
    invalid: set[str] = field(default_factory=set)


def coerce(slot: Slot, value: Any) -> tuple[bool, Any]:
    """Convert ``value`` to the slot's type; return (valid, value)."""
    if value is None:
        return True, None
    if slot.type == "categorical":
        wanted = fold(str(value)).strip()
        for allowed in slot.values:
            if fold(allowed) == wanted:
                return True, allowed
        return False, None
    if slot.type == "bool":
        if isinstance(value, bool):
            return True, value
        text = fold(str(value)).strip()
        if text in {"true", "oui", "yes", "1"}:
            return True, True
        if text in {"false", "non", "no", "0"}:
            return True, False
        return False, None
    if slot.type == "float":
        try:
            return True, float(value)
        except (TypeError, ValueError):
            return False, None
    if slot.type == "list":
        return True, value if isinstance(value, list) else [value]
    if slot.type == "text":
        return True, str(value)
    return True, value


def extract_slots(
    tracker: Tracker,
    message: UserUttered,
    validators: dict[str, Validator] | None = None,
    max_text_length: int = 2000,
) -> Extraction:
    """Return the SlotSet events that ``message`` causes, and the slots whose value was invalid."""
    domain: Domain = tracker.domain
    validators = {**BUILTIN_VALIDATORS, **(validators or {})}
    result = Extraction()
    for slot in domain.slots.values():
        candidates = [value for mapping in slot.mappings if (value := _apply(mapping, slot, tracker, message, max_text_length)) is not _NO_VALUE]
        if not candidates:
            continue
        if slot.type == "list":
            value = []
            for candidate in candidates:
                value.extend(candidate if isinstance(candidate, list) else [candidate])
        else:
            value = candidates[0]
        valid, value = coerce(slot, value)
        if valid and value is not None and slot.name in validators:
            value = validators[slot.name](value)
            valid = value is not None
        if not valid:
            result.invalid.add(slot.name)
            continue
        if tracker.slots.get(slot.name) != value:
            result.events.append(SlotSet(slot.name, value))
    return result


_NO_VALUE = object()


def _apply(mapping: SlotMapping, slot: Slot, tracker: Tracker, message: UserUttered, max_text_length: int) -> Any:
    if mapping.conditions and not any(
        condition.active_loop == tracker.active_loop
        and (condition.requested_slot is None or condition.requested_slot == tracker.requested_slot)
        for condition in mapping.conditions
    ):
        return _NO_VALUE
    intent = message.intent
    if mapping.intent and intent not in mapping.intent:
        return _NO_VALUE
    if mapping.not_intent and intent in mapping.not_intent:
        return _NO_VALUE

    if mapping.type == "from_entity":
        values = [
            entity["value"]
            for entity in message.entities
            if entity.get("entity") == mapping.entity
            and (mapping.role is None or entity.get("role") == mapping.role)
            and (mapping.group is None or entity.get("group") == mapping.group)
        ]
        if not values:
            return _NO_VALUE
        return values if slot.type == "list" else values[0]
    if mapping.type == "from_intent":
        return mapping.value if mapping.intent or mapping.not_intent else _NO_VALUE
    if mapping.type == "from_trigger_intent":
        # Applies to the message that activates a form, before the form is active.
        return mapping.value if tracker.active_loop is None and mapping.intent else _NO_VALUE
    if mapping.type == "from_text":
        text = message.text.strip()
        # A button payload is no free text.
        if not text or text.startswith("/") or str(message.parse_data.get("text", "")).startswith("/"):
            return _NO_VALUE
        return text[:max_text_length]
    return _NO_VALUE
