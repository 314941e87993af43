"""Tests for bot.nlu.entities: regexes, lookup tables with typo tolerance, synonyms, overlaps, roles."""

from __future__ import annotations

import pytest

from bot.nlu.entities import Entity, EntityExtractor

UAI_PATTERN = r"\b\d{7}[A-Za-z]\b"


@pytest.fixture(scope="module")
def extractor() -> EntityExtractor:
    return EntityExtractor(
        regexes={"school": [UAI_PATTERN]},
        lookups={
            "profile": ["parent", "maman", "enseignant", "CPE"],
            "city": ["Marseille", "Lyon", "Saint-Étienne", "Étienne"],
        },
        synonyms={"maman": "parent", "Saint-Étienne": "Saint-Etienne"},
    )


def found(extractor: EntityExtractor, text: str) -> list[tuple[str, str, int, int]]:
    return [(item.entity, item.value, item.start, item.end) for item in extractor.extract(text)]


def test_uai_extracted(extractor: EntityExtractor) -> None:
    text = "mon école est 0751234A merci"

    assert found(extractor, text) == [("school", "0751234A", 14, 22)]


def test_uai_offsets_match_text(extractor: EntityExtractor) -> None:
    text = "codes 0751234A et 0931234b"
    entities = extractor.extract(text)

    assert [text[item.start : item.end] for item in entities] == ["0751234A", "0931234b"]


def test_uai_confidence_and_extractor(extractor: EntityExtractor) -> None:
    entity = extractor.extract("0751234A")[0]

    assert entity.confidence == 1.0
    assert entity.extractor == "RegexEntityExtractor"


def test_uai_inside_number_ignored(extractor: EntityExtractor) -> None:
    assert found(extractor, "numéro 120751234A5") == []


def test_lookup_exact(extractor: EntityExtractor) -> None:
    assert found(extractor, "je vis à Lyon") == [("city", "Lyon", 9, 13)]


def test_lookup_any_case_and_accents(extractor: EntityExtractor) -> None:
    assert found(extractor, "près de saint etienne") == [("city", "Saint-Etienne", 8, 21)]


def test_lookup_typo_matched(extractor: EntityExtractor) -> None:
    entities = extractor.extract("j'habite à Marseile")

    assert [(item.entity, item.value, item.start, item.end) for item in entities] == [("city", "Marseille", 11, 19)]
    assert entities[0].confidence < 1.0


def test_lookup_typo_confidence_is_ratio(extractor: EntityExtractor) -> None:
    entity = extractor.extract("je suis enseignnant")[0]

    assert entity.value == "enseignant"
    assert entity.confidence == pytest.approx(0.9524, abs=1e-4)


def test_lookup_far_typo_ignored(extractor: EntityExtractor) -> None:
    assert found(extractor, "Marsupilami") == []


def test_short_value_exact(extractor: EntityExtractor) -> None:
    assert found(extractor, "le cpe") == [("profile", "CPE", 3, 6)]


@pytest.mark.parametrize("text", ["le cpr", "lyom", "Lion"])
def test_short_value_no_typo(extractor: EntityExtractor, text: str) -> None:
    assert found(extractor, text) == []


def test_lookup_whole_words_only(extractor: EntityExtractor) -> None:
    assert found(extractor, "les Lyonnais") == []


def test_synonym_maps_lookup(extractor: EntityExtractor) -> None:
    assert found(extractor, "je suis la maman de Léa") == [("profile", "parent", 11, 16)]


def test_synonym_any_case(extractor: EntityExtractor) -> None:
    assert found(extractor, "MAMAN") == [("profile", "parent", 0, 5)]


def test_map_synonym() -> None:
    extractor = EntityExtractor({}, {}, {"Maman": "parent", "prof": "enseignant"})

    assert extractor.map_synonym("maman") == "parent"
    assert extractor.map_synonym("PROF") == "enseignant"
    assert extractor.map_synonym("tuteur") == "tuteur"


def test_synonym_maps_regex() -> None:
    extractor = EntityExtractor({"place": [r"\bcdi\b"]}, {}, {"cdi": "etablissement"})

    assert found(extractor, "au CDI") == [("place", "etablissement", 3, 6)]


def test_overlap_keeps_longest(extractor: EntityExtractor) -> None:
    assert found(extractor, "à Saint-Étienne") == [("city", "Saint-Etienne", 2, 15)]


def test_overlap_between_regex_and_lookup() -> None:
    extractor = EntityExtractor(
        regexes={"code": [r"\b\d{3}\b"]},
        lookups={"room": ["salle 101"]},
        synonyms={},
    )

    assert found(extractor, "en salle 101") == [("room", "salle 101", 3, 12)]


def test_overlap_equal_length_keeps_confident() -> None:
    extractor = EntityExtractor(
        regexes={},
        lookups={"device": ["tablette"], "place": ["tabletes"]},
        synonyms={},
        fuzzy_threshold=80,
    )

    entities = extractor.extract("sur la tablette")

    assert [(item.entity, item.confidence) for item in entities] == [("device", 1.0)]


def test_results_in_text_order(extractor: EntityExtractor) -> None:
    entities = extractor.extract("maman à Lyon, établissement 0751234A")

    assert [item.entity for item in entities] == ["profile", "city", "school"]


def test_control_characters_ignored(extractor: EntityExtractor) -> None:
    assert found(extractor, "Lyon\x00") == [("city", "Lyon", 0, 4)]


def test_as_dict_shape(extractor: EntityExtractor) -> None:
    entity = extractor.extract("Lyon")[0]

    assert entity.as_dict() == {
        "entity": "city",
        "value": "Lyon",
        "start": 0,
        "end": 4,
        "confidence_entity": 1.0,
        "extractor": "LookupEntityExtractor",
    }


def test_no_role_by_default(extractor: EntityExtractor) -> None:
    assert extractor.extract("je suis maman")[0].role is None


def test_self_role_after_cue() -> None:
    extractor = EntityExtractor({}, {"profile": ["enseignant", "prof"]}, {"prof": "enseignant"}, self_entities=("profile",))

    assert extractor.extract("je suis prof de maths")[0].role == "self"


def test_no_self_role_without_cue() -> None:
    extractor = EntityExtractor({}, {"profile": ["enseignant", "prof"]}, {"prof": "enseignant"}, self_entities=("profile",))

    assert extractor.extract("mon prof ne répond pas")[0].role is None


def test_self_role_in_dict() -> None:
    extractor = EntityExtractor({}, {"profile": ["parent"]}, {}, self_entities=("profile",))

    assert extractor.extract("en tant que parent")[0].as_dict()["role"] == "self"


def test_entity_is_frozen() -> None:
    entity = Entity("city", "Lyon", 0, 4, 1.0, "LookupEntityExtractor")

    with pytest.raises(AttributeError):
        entity.value = "Paris"  # type: ignore[misc]


def _closest_by_brute_force(window: str, entries: list[tuple[str, str]], threshold: int) -> dict[str, tuple[float, str]]:
    """Score the window against every entry, one entity at a time, the first listed winning ties."""
    from rapidfuzz import fuzz

    best: dict[str, tuple[float, str]] = {}
    for name, value in entries:
        score = fuzz.ratio(window, value)
        if score >= threshold and (name not in best or score > best[name][0]):
            best[name] = (score, value)
    return {name: (score / 100, value) for name, (score, value) in best.items()}


def test_grouped_lookup_equals_brute_force() -> None:
    import random

    from bot.nlu.entities import _Candidates

    rng = random.Random(7)
    entries = [("profile", "enseignant"), ("profile", "eleve"), ("city", "marseille"), ("city", "lyonnais"), ("device", "tablette")]
    entries += [("device", "".join(rng.choice("abcde") for _ in range(rng.randint(5, 12)))) for _ in range(30)]
    candidates = _Candidates()
    for name, value in entries:
        candidates.add(value, name, value)
    windows = [value for _, value in entries]
    for _ in range(2000):
        # Edited entries and strings of every length, so that the length filter meets its bounds.
        chars = list(rng.choice(windows))
        for _ in range(rng.randint(0, 4)):
            position = rng.randrange(len(chars) + 1)
            if rng.random() < 0.5 and position < len(chars):
                del chars[position]
            else:
                chars.insert(position, rng.choice("abcdeilnrst"))
        window = "".join(chars)
        for threshold in (60, 86, 95):
            assert candidates.best(window, threshold) == _closest_by_brute_force(window, entries, threshold), window
