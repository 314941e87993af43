"""Load a Rasa 3.x domain: intents, entities, slots, forms, responses, actions, session settings."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bot._yaml import line_of, plain
from bot.data.findings import Findings, Location
from bot.errors import TrainingDataError

SLOT_TYPES = {"text", "bool", "categorical", "float", "list", "any"}
MAPPING_TYPES = {"from_entity", "from_intent", "from_text", "from_trigger_intent", "custom"}
_DOMAIN_KEYS = {"version", "intents", "entities", "slots", "forms", "responses", "actions", "session_config"}
_UNSUPPORTED_DOMAIN_KEYS = {"config", "e2e_actions"}


@dataclass(frozen=True)
class Button:
    title: str
    payload: str


@dataclass(frozen=True)
class ResponseVariation:
    """One way to say a response; ``conditions`` are (slot, value) pairs that must all hold."""

    text: str
    buttons: tuple[Button, ...] = ()
    channel: str | None = None
    conditions: tuple[tuple[str, Any], ...] = ()
    location: Location | None = None


@dataclass(frozen=True)
class MappingCondition:
    active_loop: str | None
    requested_slot: str | None = None


@dataclass(frozen=True)
class SlotMapping:
    type: str
    entity: str | None = None
    intent: tuple[str, ...] = ()
    not_intent: tuple[str, ...] = ()
    value: Any = None
    role: str | None = None
    group: str | None = None
    conditions: tuple[MappingCondition, ...] = ()


@dataclass(frozen=True)
class Slot:
    name: str
    type: str
    mappings: tuple[SlotMapping, ...] = ()
    values: tuple[str, ...] = ()
    influence_conversation: bool = True
    initial_value: Any = None
    location: Location | None = None

    def feature(self, value: Any) -> str | None:
        """Return the state feature this slot contributes for ``value``, or None."""
        if not self.influence_conversation or value is None:
            return None
        if self.type in {"bool", "categorical"}:
            return f"slot:{self.name}:{str(value).lower()}"
        return f"slot:{self.name}:set"


@dataclass(frozen=True)
class Form:
    name: str
    required_slots: tuple[str, ...]
    ignored_intents: tuple[str, ...] = ()
    location: Location | None = None


@dataclass
class Domain:
    intents: list[str] = field(default_factory=list)
    entities: list[str] = field(default_factory=list)
    slots: dict[str, Slot] = field(default_factory=dict)
    forms: dict[str, Form] = field(default_factory=dict)
    responses: dict[str, list[ResponseVariation]] = field(default_factory=dict)
    actions: list[str] = field(default_factory=list)
    session_expiration_time: float = 60.0
    carry_over_slots: bool = True
    locations: dict[str, Location] = field(default_factory=dict)

    def merge(self, other: Domain) -> None:
        """Add another domain file's content (a domain may be split over several files)."""
        self.intents += [name for name in other.intents if name not in self.intents]
        self.entities += [name for name in other.entities if name not in self.entities]
        self.slots.update(other.slots)
        self.forms.update(other.forms)
        for name, variations in other.responses.items():
            self.responses.setdefault(name, []).extend(variations)
        self.actions += [name for name in other.actions if name not in self.actions]
        for key, location in other.locations.items():
            self.locations.setdefault(key, location)


def load_domain_file(path: Path, document: Any, findings: Findings) -> Domain:
    """Parse one domain file; raise TrainingDataError naming the line of the first malformed entry."""
    if not isinstance(document, dict):
        raise TrainingDataError(f"{path}:1: a domain file must be a mapping")
    domain = Domain()
    for key in document:
        if key in _UNSUPPORTED_DOMAIN_KEYS:
            findings.warn(Location(path, line_of(document, key)), f"domain key {key!r} is not supported and is ignored")
        elif key not in _DOMAIN_KEYS:
            raise TrainingDataError(f"{path}:{line_of(document, key)}: unknown domain key {key!r}")

    for index, item in enumerate(document.get("intents") or []):
        location = Location(path, line_of(document["intents"], index))
        name = _name_of(item, location, "intent")
        if isinstance(item, dict):
            settings = item[name] or {}
            if any(key in settings for key in ("use_entities", "ignore_entities")):
                findings.warn(location, f"intent {name!r}: use_entities/ignore_entities are not supported; all entities are used")
        domain.intents.append(name)
        domain.locations[f"intent:{name}"] = location

    for index, item in enumerate(document.get("entities") or []):
        location = Location(path, line_of(document["entities"], index))
        name = _name_of(item, location, "entity")
        if isinstance(item, dict) and item[name]:
            findings.warn(location, f"entity {name!r}: roles and groups are not supported and are ignored")
        domain.entities.append(name)
        domain.locations[f"entity:{name}"] = location

    slots = document.get("slots") or {}
    _expect_mapping(slots, path, document, "slots")
    for name, spec in slots.items():
        domain.slots[name] = _slot(path, name, spec, Location(path, line_of(slots, name)), findings)
        domain.locations[f"slot:{name}"] = Location(path, line_of(slots, name))

    forms = document.get("forms") or {}
    _expect_mapping(forms, path, document, "forms")
    for name, spec in forms.items():
        location = Location(path, line_of(forms, name))
        spec = spec or {}
        required = spec.get("required_slots")
        if not isinstance(required, list) or not all(isinstance(slot, str) for slot in required):
            raise TrainingDataError(f"{location}: form {name!r}: required_slots must be a list of slot names")
        ignored = spec.get("ignored_intents") or []
        if isinstance(ignored, str):
            ignored = [ignored]
        domain.forms[name] = Form(name, tuple(required), tuple(ignored), location)
        domain.locations[f"form:{name}"] = location

    responses = document.get("responses") or {}
    _expect_mapping(responses, path, document, "responses")
    for name, variations in responses.items():
        location = Location(path, line_of(responses, name))
        if not isinstance(variations, list) or not variations:
            raise TrainingDataError(f"{location}: response {name!r} must be a non-empty list of variations")
        domain.responses[name] = [
            _variation(path, name, variation, Location(path, line_of(variations, index)), findings)
            for index, variation in enumerate(variations)
        ]
        domain.locations[f"response:{name}"] = location

    for index, item in enumerate(document.get("actions") or []):
        location = Location(path, line_of(document["actions"], index))
        name = _name_of(item, location, "action")
        domain.actions.append(name)
        domain.locations[f"action:{name}"] = location

    session = document.get("session_config") or {}
    _expect_mapping(session, path, document, "session_config")
    if "session_expiration_time" in session:
        value = session["session_expiration_time"]
        if not isinstance(value, (int, float)) or value < 0:
            raise TrainingDataError(
                f"{path}:{line_of(session, 'session_expiration_time')}: session_expiration_time must be minutes >= 0"
            )
        domain.session_expiration_time = float(value)
    if "carry_over_slots_to_new_session" in session:
        domain.carry_over_slots = bool(session["carry_over_slots_to_new_session"])
    return domain


def _expect_mapping(value: Any, path: Path, document: Any, key: str) -> None:
    if not isinstance(value, dict):
        raise TrainingDataError(f"{path}:{line_of(document, key)}: '{key}' must be a mapping")


def _name_of(item: Any, location: Location, what: str) -> str:
    if isinstance(item, str) and item.strip():
        return item.strip()
    if isinstance(item, dict) and len(item) == 1:
        return str(next(iter(item)))
    raise TrainingDataError(f"{location}: expected an {what} name, found {plain(item)!r}")


def _slot(path: Path, name: str, spec: Any, location: Location, findings: Findings) -> Slot:
    if not isinstance(spec, dict):
        raise TrainingDataError(f"{location}: slot {name!r} must be a mapping with a type")
    slot_type = spec.get("type")
    if slot_type not in SLOT_TYPES:
        raise TrainingDataError(f"{location}: slot {name!r}: type must be one of {sorted(SLOT_TYPES)}, found {slot_type!r}")
    for key in spec:
        if key not in {"type", "mappings", "values", "influence_conversation", "initial_value", "min_value", "max_value"}:
            raise TrainingDataError(f"{Location(path, line_of(spec, key))}: slot {name!r}: unknown key {key!r}")
    values = tuple(str(value) for value in spec.get("values") or ())
    if slot_type == "categorical" and not values:
        raise TrainingDataError(f"{location}: categorical slot {name!r} needs 'values'")
    mappings_spec = spec.get("mappings")
    if mappings_spec is None:
        findings.warn(location, f"slot {name!r} has no mappings; it is only set by actions")
        mappings_spec = []
    if not isinstance(mappings_spec, list):
        raise TrainingDataError(f"{location}: slot {name!r}: mappings must be a list")
    mappings = []
    for index, mapping in enumerate(mappings_spec):
        mapping_location = Location(path, line_of(mappings_spec, index))
        if not isinstance(mapping, dict) or mapping.get("type") not in MAPPING_TYPES:
            raise TrainingDataError(
                f"{mapping_location}: slot {name!r}: mapping type must be one of {sorted(MAPPING_TYPES)}"
            )
        if mapping["type"] == "from_entity" and not mapping.get("entity"):
            raise TrainingDataError(f"{mapping_location}: slot {name!r}: from_entity mapping needs 'entity'")
        if mapping["type"] in {"from_intent", "from_trigger_intent"} and "value" not in mapping:
            raise TrainingDataError(f"{mapping_location}: slot {name!r}: {mapping['type']} mapping needs 'value'")
        conditions = tuple(
            MappingCondition(condition.get("active_loop"), condition.get("requested_slot"))
            for condition in mapping.get("conditions") or ()
        )
        mappings.append(
            SlotMapping(
                type=mapping["type"],
                entity=mapping.get("entity"),
                intent=_as_tuple(mapping.get("intent")),
                not_intent=_as_tuple(mapping.get("not_intent")),
                value=plain(mapping.get("value")),
                role=mapping.get("role"),
                group=mapping.get("group"),
                conditions=conditions,
            )
        )
    return Slot(
        name=name,
        type=slot_type,
        mappings=tuple(mappings),
        values=values,
        influence_conversation=bool(spec.get("influence_conversation", slot_type != "any")),
        initial_value=plain(spec.get("initial_value")),
        location=location,
    )


def _as_tuple(value: Any) -> tuple[str, ...]:
    if value is None:
        return ()
    if isinstance(value, str):
        return (value,)
    return tuple(str(item) for item in value)


def _variation(path: Path, name: str, spec: Any, location: Location, findings: Findings) -> ResponseVariation:
    if not isinstance(spec, dict):
        raise TrainingDataError(f"{location}: response {name!r}: each variation must be a mapping with 'text'")
    for key in spec:
        if key in {"image", "custom", "attachment", "quick_replies", "elements", "id", "metadata"}:
            findings.warn(Location(path, line_of(spec, key)), f"response {name!r}: {key!r} is not supported and is ignored")
        elif key not in {"text", "buttons", "channel", "condition"}:
            raise TrainingDataError(f"{Location(path, line_of(spec, key))}: response {name!r}: unknown key {key!r}")
    text = spec.get("text")
    if not isinstance(text, str) or not text.strip():
        raise TrainingDataError(f"{location}: response {name!r}: 'text' must be a non-empty string")
    buttons = []
    for index, button in enumerate(spec.get("buttons") or []):
        if not isinstance(button, dict) or not isinstance(button.get("title"), str) or "payload" not in button:
            raise TrainingDataError(
                f"{Location(path, line_of(spec['buttons'], index))}: response {name!r}: a button needs 'title' and 'payload'"
            )
        buttons.append(Button(str(button["title"]), str(button["payload"])))
    conditions = []
    for index, condition in enumerate(spec.get("condition") or []):
        if not isinstance(condition, dict) or condition.get("type") != "slot" or "name" not in condition:
            raise TrainingDataError(
                f"{Location(path, line_of(spec['condition'], index))}: response {name!r}: "
                "a condition must be {type: slot, name: SLOT, value: VALUE}"
            )
        conditions.append((str(condition["name"]), plain(condition.get("value"))))
    return ResponseVariation(
        text=str(text),
        buttons=tuple(buttons),
        channel=spec.get("channel"),
        conditions=tuple(conditions),
        location=location,
    )
