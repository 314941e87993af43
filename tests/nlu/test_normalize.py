"""Tests for bot.nlu.normalize on the way users write: SMS spellings, no accents, stray characters."""

from __future__ import annotations

import pytest

from bot.nlu.normalize import Normalizer, clean, fold

# A spelling table of the kind maintainers write under ``spelling:``.
SPELLINGS = {
    "jai": "j'ai",
    "mdp": "mot de passe",
    "pb": "problème",
    "jarrive": "j'arrive",
    "pa": "pas",
    "co": "connecter",
    "mot 2 passe": "mot de passe",
}


@pytest.fixture(scope="module")
def normalizer() -> Normalizer:
    return Normalizer(SPELLINGS)


@pytest.mark.parametrize(
    "text",
    [
        pytest.param("j'ai", id="apostrophe"),
        pytest.param("jai", id="merged"),
        pytest.param("j ai", id="space"),
        pytest.param("J’ai", id="typographic-apostrophe"),
        pytest.param("J`ai", id="backquote"),
        pytest.param("  J'AI  ", id="upper-case-padded"),
    ],
)
def test_elision_forms_agree(normalizer: Normalizer, text: str) -> None:
    assert normalizer.tokens(text) == ["je", "ai"]


def test_elision_without_table() -> None:
    assert Normalizer().tokens("j'ai l'ENT qu'il c’est") == ["je", "ai", "le", "ent", "que", "il", "ce", "est"]


def test_merged_elision_needs_table() -> None:
    assert Normalizer().tokens("jai") == ["jai"]


def test_accents_folded(normalizer: Normalizer) -> None:
    assert normalizer.tokens("Élève ÇA où très") == ["eleve", "ca", "ou", "tres"]


def test_fold_keeps_length() -> None:
    assert len(fold("Élève à l'école")) == len("Élève à l'école")


def test_fold_lower_cases() -> None:
    assert fold("ÉCOLE Primaire") == "ecole primaire"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        pytest.param("nooon", ["non"], id="three"),
        pytest.param("NOOOOOON", ["non"], id="many-upper-case"),
        pytest.param("merciiii", ["merci"], id="trailing"),
        pytest.param("noon", ["noon"], id="two-kept"),
        pytest.param("2000", ["2000"], id="digits-kept"),
    ],
)
def test_repeated_letters(normalizer: Normalizer, text: str, expected: list[str]) -> None:
    assert normalizer.tokens(text) == expected


def test_spelling_single_word(normalizer: Normalizer) -> None:
    assert normalizer.tokens("mdp") == ["mot", "de", "passe"]


def test_spelling_any_case(normalizer: Normalizer) -> None:
    assert normalizer.tokens("MDP") == ["mot", "de", "passe"]


def test_spelling_in_sentence(normalizer: Normalizer) -> None:
    assert normalizer.tokens("pb de mdp") == ["probleme", "de", "mot", "de", "passe"]


def test_spelling_sms_sentence(normalizer: Normalizer) -> None:
    assert normalizer.normalize("jarrive pa a me co") == "je arrive pas a me connecter"


def test_spelling_sms_matches_standard(normalizer: Normalizer) -> None:
    assert normalizer.tokens("jarrive pa a me co") == normalizer.tokens("J'arrive pas à me connecter")


def test_spelling_several_words(normalizer: Normalizer) -> None:
    assert normalizer.tokens("mon mot 2 passe") == ["mon", "mot", "de", "passe"]


def test_spelling_whole_words_only(normalizer: Normalizer) -> None:
    assert normalizer.tokens("code pays") == ["code", "pays"]


def test_control_characters_dropped(normalizer: Normalizer) -> None:
    assert normalizer.tokens("mot\x00de\x1bpasse\x7f") == ["mot", "de", "passe"]


def test_clean_drops_control_characters() -> None:
    assert clean("a\x00b\x9fc") == "a b c"


def test_clean_keeps_newlines() -> None:
    assert clean("ligne 1\nligne 2\tfin") == "ligne 1\nligne 2\tfin"


def test_clean_unifies_apostrophes() -> None:
    assert clean("l’ENT l‘ENT") == "l'ENT l'ENT"


def test_compatibility_characters(normalizer: Normalizer) -> None:
    assert normalizer.tokens("ﬁchier ２") == ["fichier", "2"]


def test_punctuation_and_emoji_dropped(normalizer: Normalizer) -> None:
    assert normalizer.tokens("ça marche pas !!! 😡 ???") == ["ca", "marche", "pas"]


def test_empty_text(normalizer: Normalizer) -> None:
    assert normalizer.tokens("  \x00 ") == []
