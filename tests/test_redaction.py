"""Masking password-like words before messages are parsed or stored."""

from __future__ import annotations

import pytest

from bot.redaction import MASK, mask_passwords


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        pytest.param("mon mot de passe c'est Soleil2012 et ça marche pas", f"mon mot de passe c'est {MASK} et ça marche pas", id="c-est"),
        pytest.param("mdp: azerty!x", f"mdp: {MASK}", id="colon"),
        pytest.param("MDP=Chat#42", f"MDP={MASK}", id="equals"),
        pytest.param("le mot de passe provisoire est Ab12cd34", f"le mot de passe provisoire est {MASK}", id="provisoire"),
        pytest.param("password hello123", f"password {MASK}", id="english"),
    ],
)
def test_password_masked(text, expected):
    masked, changed = mask_passwords(text)
    assert masked == expected
    assert changed is True


@pytest.mark.parametrize(
    "text",
    [
        pytest.param("j'ai oublié mon mot de passe", id="forgotten"),
        pytest.param("mot de passe oublié, code UAI 0751234A", id="no-connector-word"),
        pytest.param("mdp refusé depuis hier", id="refused"),
        pytest.param("mon mot de passe est trop long", id="plain-words"),
        pytest.param("ma fille passe 3eme l'an prochain", id="verb-passer"),
    ],
)
def test_ordinary_text_kept(text):
    masked, changed = mask_passwords(text)
    assert masked == text
    assert changed is False
