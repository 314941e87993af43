"""Load Rasa 3.x NLU training data: intents, entities, synonyms, regexes, lookups, spellings."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bot._yaml import line_of, plain
from bot.data.findings import Findings, Location
from bot.errors import TrainingDataError

# [text](entity), [text](entity:value) or [text]{"entity": ..., "value": ...}
_ANNOTATION = re.compile(r"\[(?P<text>[^\]]+)\](?:\((?P<short>[^)]+)\)|(?P<json>\{[^}]*\}))")
_NLU_KEYS = {"intent", "synonym", "regex", "lookup"}
_UNSUPPORTED_NLU_KEYS = {"metadata"}


@dataclass(frozen=True)
class EntitySpan:
    """An entity annotated in an example, with offsets into the plain text."""

    entity: str
    value: str
    start: int
    end: int
    text: str
    role: str | None = None
    group: str | None = None


@dataclass(frozen=True)
class Example:
    """One training sentence.

    ``intent`` is the top-level intent (``faq`` for ``faq/ask_vacation``); ``response_key`` is the
    retrieval sub-intent (``ask_vacation``) or None.
    """

    text: str
    intent: str
    location: Location
    entities: tuple[EntitySpan, ...] = ()
    response_key: str | None = None
    metadata: dict[str, Any] | None = None

    @property
    def full_intent(self) -> str:
        return f"{self.intent}/{self.response_key}" if self.response_key else self.intent


@dataclass
class TrainingData:
    """Everything the NLU engine learns from."""

    examples: list[Example] = field(default_factory=list)
    synonyms: dict[str, str] = field(default_factory=dict)
    regexes: dict[str, list[str]] = field(default_factory=dict)
    lookups: dict[str, list[str]] = field(default_factory=dict)
    spellings: dict[str, str] = field(default_factory=dict)
    locations: dict[str, Location] = field(default_factory=dict)

    @property
    def intents(self) -> list[str]:
        return sorted({example.intent for example in self.examples})

    @property
    def entity_names(self) -> set[str]:
        names = {span.entity for example in self.examples for span in example.entities}
        return names | set(self.regexes) | set(self.lookups)

    def retrieval_intents(self) -> dict[str, list[str]]:
        found: dict[str, set[str]] = {}
        for example in self.examples:
            if example.response_key:
                found.setdefault(example.intent, set()).add(example.response_key)
        return {intent: sorted(keys) for intent, keys in found.items()}


def parse_annotated(text: str) -> tuple[str, tuple[EntitySpan, ...]]:
    """Strip entity annotations from an example and return the plain text and its spans.

    Raises ValueError with a reason when an annotation is malformed.
    """
    parts: list[str] = []
    spans: list[EntitySpan] = []
    cursor = 0
    offset = 0
    for match in _ANNOTATION.finditer(text):
        parts.append(text[cursor : match.start()])
        offset += match.start() - cursor
        surface = match.group("text")
        if match.group("short") is not None:
            entity, _, value = match.group("short").partition(":")
            role = group = None
        else:
            try:
                spec = json.loads(match.group("json"))
            except json.JSONDecodeError as exc:
                raise ValueError(f"entity annotation {match.group(0)!r} is not valid JSON: {exc.msg}") from None
            if not isinstance(spec, dict) or not isinstance(spec.get("entity"), str):
                raise ValueError(f'entity annotation {match.group(0)!r} needs an "entity" name')
            entity, value = spec["entity"], spec.get("value", "")
            role, group = spec.get("role"), spec.get("group")
        entity = entity.strip()
        if not entity:
            raise ValueError(f"entity annotation {match.group(0)!r} has no entity name")
        spans.append(
            EntitySpan(
                entity=entity,
                value=str(value) if value else surface,
                start=offset,
                end=offset + len(surface),
                text=surface,
                role=role,
                group=group,
            )
        )
        parts.append(surface)
        offset += len(surface)
        cursor = match.end()
    parts.append(text[cursor:])
    return "".join(parts), tuple(spans)


def load_nlu_file(path: Path, document: Any, data: TrainingData, findings: Findings) -> None:
    """Add the ``nlu:`` and ``spelling:`` blocks of one parsed file to ``data``."""
    blocks = document.get("nlu", [])
    if blocks is None:
        blocks = []
    if not isinstance(blocks, list):
        raise TrainingDataError(f"{path}:{line_of(document, 'nlu')}: 'nlu' must be a list of blocks")
    for index, block in enumerate(blocks):
        location = Location(path, line_of(blocks, index))
        if not isinstance(block, dict):
            raise TrainingDataError(f"{location}: each nlu block must be a mapping, found {type(block).__name__}")
        kinds = _NLU_KEYS & set(block)
        if len(kinds) != 1:
            raise TrainingDataError(
                f"{location}: an nlu block needs exactly one of {sorted(_NLU_KEYS)}, found {sorted(block)}"
            )
        kind = kinds.pop()
        name = block[kind]
        if not isinstance(name, str) or not name.strip():
            raise TrainingDataError(f"{location}: {kind} name must be a non-empty string")
        known = {kind, "examples", "metadata"}
        for key in block:
            if key not in known:
                raise TrainingDataError(f"{Location(path, line_of(block, key))}: unknown key {key!r} in {kind} block")
            if key in _UNSUPPORTED_NLU_KEYS:
                findings.warn(
                    Location(path, line_of(block, key)),
                    f"block-level {key!r} is not used by entraide and is ignored",
                )
        if "examples" not in block:
            raise TrainingDataError(f"{location}: {kind} {name!r} has no examples")
        items = _examples(path, block, f"{kind} {name!r}")
        if kind == "intent":
            _add_intent(path, name, items, data)
        elif kind == "synonym":
            for text, line, _ in items:
                data.synonyms[text.lower()] = name
                data.locations.setdefault(f"synonym:{name}", Location(path, line))
        elif kind == "regex":
            for text, line, _ in items:
                try:
                    re.compile(text)
                except re.error as exc:
                    raise TrainingDataError(f"{Location(path, line)}: regex {name!r}: invalid pattern: {exc}") from None
                data.regexes.setdefault(name, []).append(text)
            data.locations.setdefault(f"regex:{name}", location)
        else:
            data.lookups.setdefault(name, []).extend(text for text, _, _ in items)
            data.locations.setdefault(f"lookup:{name}", location)


def load_spelling(path: Path, document: Any, data: TrainingData) -> None:
    """Add the entraide ``spelling:`` block (written form -> standard form) of one file."""
    block = document.get("spelling")
    if block is None:
        return
    if not isinstance(block, dict):
        raise TrainingDataError(f"{path}:{line_of(document, 'spelling')}: 'spelling' must map written forms to words")
    for written, standard in block.items():
        if not isinstance(written, str) or not isinstance(standard, str):
            raise TrainingDataError(f"{path}:{line_of(block, written)}: spelling entries must be strings")
        data.spellings[written.strip().lower()] = standard.strip().lower()


def _examples(path: Path, block: Any, what: str) -> list[tuple[str, int, dict | None]]:
    """Return (text, line, metadata) triples from a block's ``examples``, in the short or the long form."""
    examples = block["examples"]
    start = line_of(block, "examples")
    found: list[tuple[str, int, dict | None]] = []
    if isinstance(examples, str):
        # A literal block starts on the line after "examples: |".
        for offset, raw in enumerate(examples.splitlines()):
            line = start + 1 + offset
            stripped = raw.strip()
            if not stripped:
                continue
            if not stripped.startswith("- "):
                raise TrainingDataError(
                    f"{Location(path, line)}: {what}: each example must start with '- ', found {stripped[:40]!r}"
                )
            text = stripped[2:].strip()
            if not text:
                raise TrainingDataError(f"{Location(path, line)}: {what}: empty example")
            found.append((text, line, None))
    elif isinstance(examples, list):
        for index, item in enumerate(examples):
            line = line_of(examples, index)
            if isinstance(item, dict) and isinstance(item.get("text"), str):
                extra = set(item) - {"text", "metadata"}
                if extra:
                    raise TrainingDataError(f"{Location(path, line)}: {what}: unknown key(s) {sorted(extra)} in example")
                metadata = plain(item.get("metadata"))
                found.append((item["text"].strip(), line, metadata if isinstance(metadata, dict) else None))
            else:
                raise TrainingDataError(f"{Location(path, line)}: {what}: expected '- text: ...' items")
    else:
        raise TrainingDataError(f"{Location(path, start)}: {what}: examples must be a '|' block or a list")
    return found


def _add_intent(path: Path, name: str, items: list[tuple[str, int, dict | None]], data: TrainingData) -> None:
    intent, _, response_key = name.partition("/")
    for text, line, metadata in items:
        try:
            plain_text, spans = parse_annotated(text)
        except ValueError as exc:
            raise TrainingDataError(f"{Location(path, line)}: intent {name!r}: {exc}") from None
        if not plain_text.strip():
            raise TrainingDataError(f"{Location(path, line)}: intent {name!r}: example has no text")
        for span in spans:
            if span.value != span.text:
                data.synonyms.setdefault(span.text.lower(), span.value)
        data.examples.append(
            Example(
                text=plain_text,
                intent=intent,
                location=Location(path, line),
                entities=spans,
                response_key=response_key or None,
                metadata=metadata,
            )
        )
    data.locations.setdefault(f"intent:{name}", Location(path, line_of_first(items)))


def line_of_first(items: list[tuple[str, int, dict | None]]) -> int:
    return items[0][1] if items else 0


__all__ = ["EntitySpan", "Example", "TrainingData", "parse_annotated", "load_nlu_file", "load_spelling", "plain"]
