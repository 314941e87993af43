"""Tests for bot.nlu.model: the parse result, thresholds, button payloads, features and model files."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from bot.config import NluSettings
from bot.data.findings import Location
from bot.data.training import Example, TrainingData, parse_annotated
from bot.errors import ModelError
from bot.nlu import FALLBACK_INTENT, NluModel, train

SOURCE = Location(Path("nlu.yml"), 1)

INTENTS = {
    "greet": ["bonjour", "salut", "coucou", "bonsoir", "bonjour à tous", "salut l'assistant"],
    "goodbye": ["au revoir", "bonne journée", "à bientôt", "bonne soirée", "salut, à plus", "au revoir et merci"],
    "password_forgotten": [
        "j'ai oublié mon mot de passe",
        "mot de passe perdu",
        "je ne me souviens plus de mon mdp",
        "réinitialiser mon mot de passe",
        "mon mot de passe ne marche plus",
        "comment changer de mot de passe oublié",
    ],
    "inform_profile": [
        "je suis [parent](profile)",
        "je suis [enseignant](profile)",
        "[maman](profile:parent)",
        "je suis la [mère]{\"entity\": \"profile\", \"value\": \"parent\"} d'un élève",
        "[élève](profile)",
        "je suis [prof](profile:enseignant)",
    ],
    "faq/ask_vacation": ["quand sont les vacances", "date des vacances", "les vacances commencent quand"],
    "faq/ask_canteen": ["horaires de la cantine", "menu de la cantine", "la cantine ouvre quand"],
}

TEXTS = [
    "bonjour",
    "j'ai oublié mon mdp",
    "au revoir",
    "je suis parent",
    "c'est quand les vacances",
    "xyz",
]


def make_training(intents: dict[str, list[str]]) -> TrainingData:
    """Build training data in memory, as the loader would from ``intent: name`` blocks."""
    data = TrainingData(spellings={"mdp": "mot de passe"})
    for name, texts in intents.items():
        intent, _, response_key = name.partition("/")
        for text in texts:
            plain_text, spans = parse_annotated(text)
            data.examples.append(Example(plain_text, intent, SOURCE, spans, response_key or None))
    data.regexes["school"] = [r"\b\d{7}[A-Za-z]\b"]
    data.synonyms.update({"maman": "parent", "mère": "parent", "prof": "enseignant"})
    return data


@pytest.fixture(scope="module")
def settings() -> NluSettings:
    return NluSettings(fallback_threshold=0.3, ambiguity_threshold=0.05)


@pytest.fixture(scope="module")
def model(settings: NluSettings) -> NluModel:
    responses = {"faq/ask_vacation": [{"text": "Les vacances commencent le 20 décembre."}]}
    return train(make_training(INTENTS), settings, retrieval_responses=responses)


@pytest.fixture(scope="module")
def saved(model: NluModel, tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("models") / "nlu-test.npz"
    model.save(path)
    return path


def with_settings(model: NluModel, **changes: float) -> NluModel:
    return dataclasses.replace(model, settings=model.settings.model_copy(update=changes))


# ----- parse result -----


def test_parse_keys(model: NluModel) -> None:
    result = model.parse("bonjour")

    assert set(result) == {"text", "intent", "entities", "intent_ranking", "response_selector"}


def test_parse_text_kept(model: NluModel) -> None:
    assert model.parse("  Bonjour !  ")["text"] == "  Bonjour !  "


def test_parse_intent_shape(model: NluModel) -> None:
    intent = model.parse("bonjour")["intent"]

    assert set(intent) == {"name", "confidence"}
    assert intent["name"] == "greet"
    assert isinstance(intent["confidence"], float)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        pytest.param("salut", "greet", id="greet"),
        pytest.param("jai oublie mon mdp", "password_forgotten", id="sms-password"),
        pytest.param("au revoir", "goodbye", id="goodbye"),
        pytest.param("les vacances c'est quand", "faq", id="retrieval"),
    ],
)
def test_parse_intent_name(model: NluModel, text: str, expected: str) -> None:
    assert model.parse(text)["intent"]["name"] == expected


def test_ranking_sorted(model: NluModel) -> None:
    confidences = [item["confidence"] for item in model.parse("bonjour")["intent_ranking"]]

    assert confidences == sorted(confidences, reverse=True)


def test_ranking_sums_to_one(model: NluModel) -> None:
    ranking = model.parse("bonjour")["intent_ranking"]

    assert sum(item["confidence"] for item in ranking) == pytest.approx(1.0)


def test_ranking_lists_every_intent(model: NluModel) -> None:
    names = {item["name"] for item in model.parse("bonjour")["intent_ranking"]}

    assert names == {"faq", "goodbye", "greet", "inform_profile", "password_forgotten"}


def test_intent_is_ranking_head(model: NluModel) -> None:
    result = model.parse("bonjour")

    assert result["intent"] == result["intent_ranking"][0]


def test_parse_entities(model: NluModel) -> None:
    entities = model.parse("je suis maman, école 0751234A")["entities"]

    assert [(item["entity"], item["value"]) for item in entities] == [("profile", "parent"), ("school", "0751234A")]


def test_parse_entity_keys(model: NluModel) -> None:
    entity = model.parse("0751234A")["entities"][0]

    assert set(entity) >= {"entity", "value", "start", "end", "confidence_entity", "extractor"}


def test_parse_self_role(model: NluModel) -> None:
    entity = model.parse("je suis enseignant")["entities"][0]

    assert entity["role"] == "self"


def test_response_selector(model: NluModel) -> None:
    selector = model.parse("c'est quand les vacances")["response_selector"]

    assert selector["all_retrieval_intents"] == ["faq"]
    assert selector["faq"]["response"]["intent_response_key"] == "faq/ask_vacation"
    assert selector["faq"]["response"]["responses"] == [{"text": "Les vacances commencent le 20 décembre."}]
    assert selector["faq"]["response"]["utter_action"] == "utter_faq"
    assert [item["intent_response_key"] for item in selector["faq"]["ranking"]] == ["faq/ask_vacation", "faq/ask_canteen"]


def test_parse_result_is_json(model: NluModel) -> None:
    result = model.parse("je suis parent")

    assert json.loads(json.dumps(result)) == result


# ----- thresholds -----


@pytest.mark.parametrize("text", TEXTS)
def test_high_threshold_falls_back(model: NluModel, text: str) -> None:
    strict = with_settings(model, fallback_threshold=1.0)

    assert strict.parse(text)["intent"] == {"name": FALLBACK_INTENT, "confidence": 1.0}


@pytest.mark.parametrize("text", TEXTS)
def test_fallback_keeps_ranking(model: NluModel, text: str) -> None:
    lenient = with_settings(model, fallback_threshold=0.0, ambiguity_threshold=0.0)
    strict = with_settings(model, fallback_threshold=1.0)

    ranking = strict.parse(text)["intent_ranking"]

    assert ranking[0] == {"name": FALLBACK_INTENT, "confidence": 1.0}
    assert ranking[1:] == lenient.parse(text)["intent_ranking"]


def test_fallback_confidence_is_threshold(model: NluModel) -> None:
    strict = with_settings(model, fallback_threshold=0.999999999)

    assert strict.parse("xyz")["intent"]["confidence"] == 0.999999999


def test_low_threshold_keeps_intent(model: NluModel) -> None:
    lenient = with_settings(model, fallback_threshold=0.0, ambiguity_threshold=0.0)

    assert lenient.parse("xyz")["intent"]["name"] != FALLBACK_INTENT


def test_ambiguity_threshold(model: NluModel) -> None:
    lenient = with_settings(model, fallback_threshold=0.0, ambiguity_threshold=0.0)
    ranking = lenient.parse("salut")["intent_ranking"]
    margin = ranking[0]["confidence"] - ranking[1]["confidence"]

    above = with_settings(model, fallback_threshold=0.0, ambiguity_threshold=min(1.0, margin + 1e-6))
    below = with_settings(model, fallback_threshold=0.0, ambiguity_threshold=max(0.0, margin - 1e-6))

    assert above.parse("salut")["intent"]["name"] == FALLBACK_INTENT
    assert below.parse("salut")["intent"]["name"] == ranking[0]["name"]


def test_ambiguity_fallback_confidence(model: NluModel) -> None:
    ambiguous = with_settings(model, fallback_threshold=0.2, ambiguity_threshold=1.0)

    assert ambiguous.parse("bonjour")["intent"] == {"name": FALLBACK_INTENT, "confidence": 0.2}


@pytest.mark.parametrize("text", ["", "   ", "\x00\x01", "\n\t"])
def test_empty_text_falls_back(model: NluModel, text: str) -> None:
    lenient = with_settings(model, fallback_threshold=0.0, ambiguity_threshold=0.0)

    assert lenient.parse(text)["intent"]["name"] == FALLBACK_INTENT


# ----- button payloads -----


def test_payload_intent(model: NluModel) -> None:
    result = model.parse('/inform_profile{"profile": "parent"}')

    assert result["intent"] == {"name": "inform_profile", "confidence": 1.0}


def test_payload_entity(model: NluModel) -> None:
    entities = model.parse('/inform_profile{"profile": "parent"}')["entities"]

    assert [(item["entity"], item["value"]) for item in entities] == [("profile", "parent")]


def test_payload_ranking(model: NluModel) -> None:
    result = model.parse('/inform_profile{"profile": "parent"}')

    assert result["intent_ranking"] == [{"name": "inform_profile", "confidence": 1.0}]


def test_payload_ignores_threshold(model: NluModel) -> None:
    strict = with_settings(model, fallback_threshold=1.0)

    assert strict.parse("/greet")["intent"] == {"name": "greet", "confidence": 1.0}


def test_payload_list_value(model: NluModel) -> None:
    entities = model.parse('/inform{"device": ["tablette", "ordinateur"]}')["entities"]

    assert [item["value"] for item in entities] == ["tablette", "ordinateur"]


def test_payload_retrieval_intent(model: NluModel) -> None:
    result = model.parse("/faq/ask_vacation")

    assert result["intent"]["name"] == "faq"
    assert result["response_selector"]["faq"]["response"]["intent_response_key"] == "faq/ask_vacation"
    assert result["response_selector"]["faq"]["response"]["responses"] == [{"text": "Les vacances commencent le 20 décembre."}]


def test_payload_invalid_json_parsed_as_text(model: NluModel) -> None:
    result = model.parse("/inform_profile{profile: parent}")

    assert result["intent"]["confidence"] < 1.0


def test_slash_sentence_parsed_as_text(model: NluModel) -> None:
    result = model.parse("/bonjour à tous")

    assert result["intent"]["name"] == "greet"
    assert result["intent"]["confidence"] < 1.0


# ----- features -----


@pytest.mark.parametrize("text", TEXTS + ["J’AI OUBLIÉ MON MOT DE PASSE", "bonjour bonjour bonjour"])
def test_featurize_one_equals_row(model: NluModel, text: str) -> None:
    indices, values = model.featurize_one(text)
    single = np.zeros(model.featurize([text]).shape[1])
    single[indices] = values

    row = model.featurize(["salut", text]).toarray()[1]

    np.testing.assert_allclose(single, row, rtol=1e-12, atol=1e-12)


def test_featurize_one_unknown_words(model: NluModel) -> None:
    indices, values = model.featurize_one("ψψψ ωω")

    assert len(indices) == 0
    assert len(values) == 0


def test_featurize_one_normalized(model: NluModel) -> None:
    _, values = model.featurize_one("bonjour tout le monde")

    # One L2-normalised block for word n-grams and one for character n-grams.
    assert float(values @ values) == pytest.approx(2.0)


# ----- training edge cases -----


def test_train_without_examples(settings: NluSettings) -> None:
    with pytest.raises(ModelError, match="no training examples"):
        train(TrainingData(), settings)


def test_train_one_intent(settings: NluSettings) -> None:
    model = train(make_training({"greet": ["bonjour", "salut"]}), settings)

    assert model.parse("salut")["intent"] == {"name": "greet", "confidence": 1.0}


def test_small_intent_uses_logistic_regression(settings: NluSettings) -> None:
    model = train(make_training({"greet": ["bonjour", "salut"], "goodbye": ["au revoir", "à bientôt", "bonne soirée"]}), settings)

    assert model.intents.beta is None
    assert model.parse("au revoir")["intent"]["name"] == "goodbye"


def test_calibrated_svm_used(model: NluModel) -> None:
    assert model.intents.beta is not None


def test_training_subset(settings: NluSettings) -> None:
    training = make_training(INTENTS)
    subset = [example for example in training.examples if example.intent in {"greet", "goodbye"}]

    model = train(training, settings, subset)

    assert model.intents.classes == ["goodbye", "greet"]


# ----- model files -----


def test_save_writes_npz(saved: Path) -> None:
    with np.load(saved, allow_pickle=False) as archive:
        assert "meta" in archive.files


def test_save_leaves_no_partial_file(saved: Path) -> None:
    assert [path.name for path in saved.parent.iterdir()] == [saved.name]


@pytest.mark.parametrize("text", TEXTS + ['/inform_profile{"profile": "parent"}', "je suis maman, école 0751234A"])
def test_round_trip_identical(saved: Path, text: str) -> None:
    first = NluModel.load(saved)
    path = saved.parent.parent / f"{saved.stem}-again.npz"
    first.save(path)
    second = NluModel.load(path)

    assert second.parse(text) == first.parse(text)


@pytest.mark.parametrize("text", TEXTS)
def test_loaded_matches_trained(model: NluModel, saved: Path, text: str) -> None:
    trained = model.parse(text)
    loaded = NluModel.load(saved).parse(text)

    # Weights are stored as float32, so confidences may differ in the last digits.
    assert [item["name"] for item in loaded["intent_ranking"]] == [item["name"] for item in trained["intent_ranking"]]
    assert [item["confidence"] for item in loaded["intent_ranking"]] == pytest.approx(
        [item["confidence"] for item in trained["intent_ranking"]], abs=1e-6
    )
    assert loaded["entities"] == trained["entities"]


def test_loaded_model_parses_without_scikit_learn(saved: Path) -> None:
    # Serving loads a model and parses; scikit-learn and SciPy stay out, which shortens start-up.
    script = (
        "import sys; from pathlib import Path; from bot.nlu.model import NluModel; "
        f"result = NluModel.load(Path({str(saved)!r})).parse('les vacances commencent quand'); "
        "print(result['intent']['name']); "
        "print(sorted({name.split('.')[0] for name in sys.modules} & {'sklearn', 'scipy'}))"
    )
    output = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True, timeout=120).stdout

    intent, loaded = output.splitlines()
    assert intent == NluModel.load(saved).parse("les vacances commencent quand")["intent"]["name"]
    assert loaded == "[]"


def test_loaded_keeps_settings(saved: Path, settings: NluSettings) -> None:
    assert NluModel.load(saved).settings == settings


def test_loaded_keeps_spellings(saved: Path) -> None:
    assert NluModel.load(saved).normalizer.tokens("mdp") == ["mot", "de", "passe"]


def test_load_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ModelError, match="model file not found"):
        NluModel.load(tmp_path / "absent.npz")


def test_load_garbage(tmp_path: Path) -> None:
    path = tmp_path / "nlu-damaged.npz"
    path.write_bytes(b"this is not a model file")

    with pytest.raises(ModelError, match="cannot read model file"):
        NluModel.load(path)


def test_load_truncated(saved: Path, tmp_path: Path) -> None:
    path = tmp_path / "nlu-truncated.npz"
    path.write_bytes(saved.read_bytes()[: saved.stat().st_size // 2])

    with pytest.raises(ModelError):
        NluModel.load(path)


def test_load_corrupted_member(saved: Path, tmp_path: Path) -> None:
    data = bytearray(saved.read_bytes())
    middle = len(data) // 2
    data[middle : middle + 64] = bytes(64)
    path = tmp_path / "nlu-corrupted.npz"
    path.write_bytes(bytes(data))

    with pytest.raises(ModelError):
        NluModel.load(path)


def test_load_without_meta(tmp_path: Path) -> None:
    path = tmp_path / "nlu-empty.npz"
    np.savez(path, word_idf=np.ones(3))

    with pytest.raises(ModelError, match="metadata is missing or damaged"):
        NluModel.load(path)


def test_load_other_format(saved: Path, tmp_path: Path) -> None:
    with np.load(saved, allow_pickle=False) as archive:
        arrays = {name: archive[name] for name in archive.files}
    meta = json.loads(arrays["meta"].tobytes())
    meta["format_version"] = 1
    arrays["meta"] = np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8)
    path = tmp_path / "nlu-old.npz"
    np.savez(path, **arrays)

    with pytest.raises(ModelError, match="model format 1 is not"):
        NluModel.load(path)


def test_load_rejects_pickled_arrays(saved: Path, tmp_path: Path) -> None:
    with np.load(saved, allow_pickle=False) as archive:
        arrays = {name: archive[name] for name in archive.files}
    arrays["word_idf"] = np.array([{"idf": 1.0}], dtype=object)
    path = tmp_path / "nlu-pickled.npz"
    np.savez(path, **arrays)

    with pytest.raises(ModelError, match="allow_pickle=False"):
        NluModel.load(path)


def test_word_table_starts_over_when_full(model: NluModel, monkeypatch: pytest.MonkeyPatch) -> None:
    import bot.nlu.model as module

    expected = [model.featurize_one(text) for text in TEXTS]
    monkeypatch.setattr(module, "WORD_CACHE_SIZE", 3)
    model._word_columns.clear()

    again = [model.featurize_one(text) for text in TEXTS]

    assert len(model._word_columns) <= 3
    for (indices, values), (indices_again, values_again) in zip(expected, again):
        np.testing.assert_array_equal(indices, indices_again)
        np.testing.assert_allclose(values, values_again, rtol=1e-12)
