"""Entity extraction: regexes, lookup tables with typo tolerance, and synonyms."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from rapidfuzz import fuzz, process

from bot.nlu.normalize import fold, same_length_clean

_WORD = re.compile(r"\w+")
# Short values are matched exactly: a typo-tolerant "cpe" would match far too many words.
MIN_FUZZY_LENGTH = 5
# Words that, just before a mention, show that the writer speaks of themselves ("je suis prof",
# "en tant que parent", "moi, élève de 3e"), unlike "mon prof" or "les parents".
SELF_CUES = frozenset({"je", "j", "suis", "jsuis", "jsui", "chui", "chuis", "moi", "tant", "sommes", "nous"})
SELF_WINDOW = 3
SELF_ROLE = "self"


@dataclass(frozen=True)
class Entity:
    entity: str
    value: Any
    start: int
    end: int
    confidence: float
    extractor: str
    role: str | None = None

    def as_dict(self) -> dict[str, Any]:
        found = {
            "entity": self.entity,
            "value": self.value,
            "start": self.start,
            "end": self.end,
            "confidence_entity": round(self.confidence, 4),
            "extractor": self.extractor,
        }
        if self.role:
            found["role"] = self.role
        return found


class EntityExtractor:
    """Find entities in a message.

    ``regexes`` and ``lookups`` map an entity name to patterns or known values. ``synonyms`` maps a
    surface form (any case, with or without accents) to the value to report. Mentions of the
    ``self_entities`` that follow a first-person cue get the role ``self``, so slot mappings can
    tell "je suis prof" from "mon prof".
    """

    def __init__(
        self,
        regexes: dict[str, list[str]],
        lookups: dict[str, list[str]],
        synonyms: dict[str, str],
        fuzzy_threshold: int = 86,
        self_entities: tuple[str, ...] = (),
    ) -> None:
        self._self_entities = set(self_entities)
        self._regexes = {name: [re.compile(pattern, re.IGNORECASE) for pattern in patterns] for name, patterns in regexes.items()}
        self._synonyms = {fold(key): value for key, value in synonyms.items()}
        self._threshold = fuzzy_threshold
        # entity -> list of (folded tokens, original value)
        self._lookups: dict[str, list[tuple[tuple[str, ...], str]]] = {}
        for name, values in lookups.items():
            seen = set()
            for value in values:
                tokens = tuple(_WORD.findall(fold(value)))
                if tokens and tokens not in seen:
                    seen.add(tokens)
                    self._lookups.setdefault(name, []).append((tokens, value))
        self._max_words = max((len(tokens) for entries in self._lookups.values() for tokens, _ in entries), default=1)
        # By window size: the exact entries by tokens (entity -> value), and the fuzzy candidates.
        # The candidates of all entities share one list, so one call scores a window against them all.
        self._exact: dict[int, dict[tuple[str, ...], dict[str, str]]] = {}
        self._fuzzy: dict[int, _Candidates] = {}
        for name, entries in self._lookups.items():
            for tokens, value in entries:
                self._exact.setdefault(len(tokens), {}).setdefault(tokens, {}).setdefault(name, value)
                candidate = " ".join(tokens)
                if len(candidate) >= MIN_FUZZY_LENGTH:
                    self._fuzzy.setdefault(len(tokens), _Candidates()).add(candidate, name, value)

    def extract(self, text: str) -> list[Entity]:
        # Offsets must point into the caller's text, so only length-preserving cleaning applies here.
        text = same_length_clean(text)
        found = _without_overlaps(self._from_regexes(text) + self._from_lookups(text))
        if self._self_entities:
            found = [self._with_role(text, entity) for entity in found]
        return found

    def _with_role(self, text: str, entity: Entity) -> Entity:
        if entity.entity not in self._self_entities:
            return entity
        before = [fold(word) for word in _WORD.findall(text[: entity.start])][-SELF_WINDOW:]
        if SELF_CUES.intersection(before):
            return Entity(entity.entity, entity.value, entity.start, entity.end, entity.confidence, entity.extractor, SELF_ROLE)
        return entity

    def map_synonym(self, value: str) -> str:
        return self._synonyms.get(fold(value), value)

    def _from_regexes(self, text: str) -> list[Entity]:
        found = []
        for name, patterns in self._regexes.items():
            for pattern in patterns:
                for match in pattern.finditer(text):
                    if match.end() > match.start():
                        surface = match.group(0)
                        found.append(Entity(name, self.map_synonym(surface), match.start(), match.end(), 1.0, "RegexEntityExtractor"))
        return found

    def _from_lookups(self, text: str) -> list[Entity]:
        words = [(match.start(), match.end(), fold(match.group(0))) for match in _WORD.finditer(text)]
        found = []
        for size in range(min(self._max_words, len(words)), 0, -1):
            exact = self._exact.get(size, {})
            fuzzy = self._fuzzy.get(size)
            for index in range(len(words) - size + 1):
                window = words[index : index + size]
                window_tokens = tuple(word for _, _, word in window)
                exact_values = exact.get(window_tokens, {})
                close = fuzzy.best(" ".join(window_tokens), self._threshold) if fuzzy is not None else {}
                if not exact_values and not close:
                    continue
                start, end = window[0][0], window[-1][1]
                surface = text[start:end]
                for name in self._lookups:
                    if name in exact_values:
                        score, value = 1.0, exact_values[name]
                    elif name in close:
                        score, value = close[name]
                    else:
                        continue
                    mapped = self._synonyms.get(fold(surface), self._synonyms.get(fold(value), value))
                    found.append(Entity(name, mapped, start, end, score, "LookupEntityExtractor"))
        return found


class _Candidates:
    """The lookup entries of one window size that are long enough for typo-tolerant matching."""

    def __init__(self) -> None:
        self.strings: list[str] = []
        self.names: list[str] = []
        self.values: list[str] = []
        self.shortest = 0
        self.longest = 0

    def add(self, string: str, name: str, value: str) -> None:
        self.strings.append(string)
        self.names.append(name)
        self.values.append(value)
        self.shortest = min(self.shortest or len(string), len(string))
        self.longest = max(self.longest, len(string))

    def best(self, window: str, threshold: float) -> dict[str, tuple[float, str]]:
        """Return, by entity, (score, value) of the entry closest to ``window`` at or above ``threshold``.

        The highest ratio wins; among equal ratios, the entry listed first.
        """
        # fuzz.ratio is at most 200 * min(a, b) / (a + b) for lengths a and b, so a window whose
        # length no entry can reach is skipped. The margin keeps rounding from skipping a borderline match.
        length = len(window)
        if self.longest < length * threshold / (200 - threshold) * 0.99 or self.shortest > length * (200 - threshold) / threshold * 1.01:
            return {}
        best: dict[str, tuple[float, int]] = {}
        for _, score, index in process.extract(window, self.strings, scorer=fuzz.ratio, processor=None, score_cutoff=threshold, limit=None):
            name = self.names[index]
            current = best.get(name)
            if current is None or score > current[0] or (score == current[0] and index < current[1]):
                best[name] = (score, index)
        return {name: (score / 100, self.values[index]) for name, (score, index) in best.items()}


def _without_overlaps(entities: list[Entity]) -> list[Entity]:
    """Keep the longest, then most confident, entity wherever two overlap."""
    ranked = sorted(entities, key=lambda item: (-(item.end - item.start), -item.confidence, item.start))
    kept: list[Entity] = []
    for entity in ranked:
        if all(entity.end <= other.start or entity.start >= other.end for other in kept):
            kept.append(entity)
    return sorted(kept, key=lambda item: item.start)
