"""French text normalisation for the NLU features.

The folded view that the classifier reads is lower-case, accent-free, with apostrophes and elisions
expanded (``j'ai`` and ``j ai`` become ``je ai``), letters repeated three times or more collapsed
(``nooon`` -> ``non``), and SMS spellings replaced through the maintainers' ``spelling:`` table
(``mdp`` -> ``mot de passe``). Merged forms such as ``jai`` become ``je ai`` only through that table.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Mapping

_APOSTROPHES = str.maketrans({"\u2019": "'", "\u2018": "'", "`": "'", "\u00b4": "'", "\u02bc": "'"})
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")
_REPEATS = re.compile(r"([^\W\d_])\1{2,}")  # letters only: "2000" stays a number
_TOKEN = re.compile(r"\w+")
_ELISIONS = {"j": "je", "l": "le", "m": "me", "t": "te", "n": "ne", "s": "se", "c": "ce", "d": "de", "qu": "que"}
MAX_SPELLING_WORDS = 3


def fold(text: str) -> str:
    """Lower-case ``text`` and strip its accents (``Élève`` -> ``eleve``), keeping its length per character."""
    if text.isascii():
        # Nothing to decompose: most words of most messages take this path.
        return text.lower()
    decomposed = unicodedata.normalize("NFD", text.lower())
    stripped = "".join(char for char in decomposed if not unicodedata.combining(char))
    return unicodedata.normalize("NFC", stripped)


def clean(text: str) -> str:
    """Apply NFKC, unify apostrophes and drop control characters; the result is shown to no one."""
    text = unicodedata.normalize("NFKC", text).translate(_APOSTROPHES)
    return _CONTROL.sub(" ", text)


def same_length_clean(text: str) -> str:
    """Unify apostrophes and blank out control characters, one character for one."""
    return _CONTROL.sub(" ", text.translate(_APOSTROPHES))


class Normalizer:
    """Turn a message into the folded view used by the classifier."""

    def __init__(self, spellings: Mapping[str, str] | None = None) -> None:
        self._spellings: dict[tuple[str, ...], list[str]] = {}
        for written, standard in (spellings or {}).items():
            key = tuple(_TOKEN.findall(fold(written)))
            if key:
                # Elisions are expanded here too, so "j'ai" as a value gives the same tokens as in a message.
                self._spellings[key] = [_ELISIONS.get(word, word) for word in _TOKEN.findall(fold(clean(standard)))]

    def tokens(self, text: str) -> list[str]:
        folded = fold(clean(text)).replace("'", " ")
        folded = _REPEATS.sub(r"\1", folded)
        words = _TOKEN.findall(folded)
        return self._expand(words)

    def normalize(self, text: str) -> str:
        return " ".join(self.tokens(text))

    def _expand(self, words: list[str]) -> list[str]:
        result: list[str] = []
        index = 0
        while index < len(words):
            for size in range(min(MAX_SPELLING_WORDS, len(words) - index), 0, -1):
                replacement = self._spellings.get(tuple(words[index : index + size]))
                if replacement is not None:
                    result.extend(replacement)
                    index += size
                    break
            else:
                word = words[index]
                result.append(_ELISIONS.get(word, word))
                index += 1
        return result
