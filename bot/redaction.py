"""Mask what looks like a password before a message is parsed or stored.

Pupils and parents sometimes write their password to show what fails. The conversation is kept and
may be read by the support team, so the secret must not reach the store. This is a heuristic: a
word of four characters or more, holding a digit or a symbol, that follows « mot de passe », « mdp »
or « password » (optionally with « est », « c'est », « : » or « = »).
"""

from __future__ import annotations

import re

MASK = "••••"
_SECRET = re.compile(
    r"(?P<lead>\b(?:mots? de passe|mdp|mot2pass|password|pwd)\b"
    r"(?:\s+(?:actuel|provisoire|temporaire))?"
    r"\s*(?:(?:est|c'est|c est|cest|=|:)\s*)?)"
    r"(?P<secret>\S{4,})",
    re.IGNORECASE,
)


def _looks_secret(word: str) -> bool:
    core = word.rstrip(".,;!?»)")
    has_digit = any(char.isdigit() for char in core)
    has_symbol = any(not char.isalnum() and char not in "'’-" for char in core)
    return len(core) >= 4 and (has_digit or has_symbol)


def mask_passwords(text: str) -> tuple[str, bool]:
    """Return ``text`` with password-like words replaced by a mask, and whether anything was masked."""
    masked = False

    def replace(match: re.Match[str]) -> str:
        nonlocal masked
        if not _looks_secret(match.group("secret")):
            return match.group(0)
        masked = True
        return match.group("lead") + MASK

    return _SECRET.sub(replace, text), masked
