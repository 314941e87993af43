"""Tests for bot.nlu.evaluate: the intent and entity report, cross-validation and the confusion PNG.

The expected figures are worked out by hand from four test examples with one known error.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest

from bot.config import NluSettings
from bot.data.findings import Location
from bot.data.training import Example, TrainingData, parse_annotated
from bot.nlu import FALLBACK_INTENT, NluModel, train
from bot.nlu.evaluate import cross_validate, entity_report, evaluate_examples, report, write_confusion_png

TRAINING = {
    "greet": ["bonjour", "salut", "coucou", "bonsoir", "bonjour à tous", "salut de [Paris](city)"],
    "goodbye": ["au revoir", "bonne journée", "à bientôt", "bonne soirée", "au revoir et merci", "à plus de [Lyon](city)"],
}

# The only intent error: "au revoir" labelled greet. The only entity error: "Brest", which the
# model has never seen.
TESTS = [
    ("bonjour de [Lyon](city)", "greet"),
    ("salut", "greet"),
    ("au revoir", "greet"),
    ("au revoir de [Brest](city)", "goodbye"),
]


def examples_of(pairs: list[tuple[str, str]], path: Path) -> list[Example]:
    found = []
    for line, (text, intent) in enumerate(pairs, start=1):
        plain_text, spans = parse_annotated(text)
        found.append(Example(plain_text, intent, Location(path, line), spans))
    return found


def training_data() -> TrainingData:
    pairs = [(text, intent) for intent, texts in TRAINING.items() for text in texts]
    return TrainingData(examples=examples_of(pairs, Path("nlu.yml")))


@pytest.fixture(scope="module")
def settings() -> NluSettings:
    return NluSettings(fallback_threshold=0.0, ambiguity_threshold=0.0)


@pytest.fixture(scope="module")
def model(settings: NluSettings) -> NluModel:
    return train(training_data(), settings)


@pytest.fixture(scope="module")
def result(model: NluModel) -> dict:
    return evaluate_examples(model, examples_of(TESTS, Path("test.yml")))


def test_report_keys(result: dict) -> None:
    expected = {"accuracy", "macro_f1", "weighted_f1", "per_intent", "confusions", "errors", "entities"}

    assert expected <= set(result)


def test_report_is_json(result: dict) -> None:
    assert json.loads(json.dumps(result)) == result


def test_examples_count(result: dict) -> None:
    assert result["examples"] == 4


def test_accuracy(result: dict) -> None:
    assert result["accuracy"] == 0.75


def test_macro_f1(result: dict) -> None:
    # greet: P 2/2, R 2/3, F1 0.8. goodbye: P 1/2, R 1/1, F1 2/3. Mean: 0.7333.
    assert result["macro_f1"] == 0.7333


def test_weighted_f1(result: dict) -> None:
    # (3 * 0.8 + 1 * 2/3) / 4
    assert result["weighted_f1"] == 0.7667


def test_per_intent_greet(result: dict) -> None:
    assert result["per_intent"]["greet"] == {"precision": 1.0, "recall": 0.6667, "f1": 0.8, "support": 3}


def test_per_intent_goodbye(result: dict) -> None:
    assert result["per_intent"]["goodbye"] == {"precision": 0.5, "recall": 1.0, "f1": 0.6667, "support": 1}


def test_confusions(result: dict) -> None:
    assert result["confusions"] == [{"intent": "greet", "predicted": "goodbye", "count": 1}]


def test_errors(result: dict) -> None:
    error = result["errors"][0]

    assert len(result["errors"]) == 1
    assert {key: error[key] for key in ("text", "intent", "predicted", "location")} == {
        "text": "au revoir",
        "intent": "greet",
        "predicted": "goodbye",
        "location": "test.yml:3",
    }
    assert 0.5 < error["confidence"] <= 1.0


def test_entities(result: dict) -> None:
    # Lyon found (true positive), Brest missed (false negative).
    assert result["entities"] == {"city": {"precision": 1.0, "recall": 0.5, "f1": 0.6667, "support": 2}}


def test_matrix(result: dict) -> None:
    assert result["labels"] == ["goodbye", "greet"]
    assert result["matrix"] == [[1, 0], [1, 2]]


def test_fallback_counted_as_error(model: NluModel) -> None:
    strict = dataclasses.replace(model, settings=model.settings.model_copy(update={"fallback_threshold": 1.0}))

    result = evaluate_examples(strict, examples_of(TESTS, Path("test.yml")))

    assert result["accuracy"] == 0.0
    assert result["per_intent"][FALLBACK_INTENT]["support"] == 0
    assert result["macro_f1"] == 0.0


def test_report_by_hand() -> None:
    examples = examples_of([("a", "x"), ("b", "x"), ("c", "y"), ("d", "z")], Path("t.yml"))

    result = report(["x", "x", "y", "z"], ["x", "y", "y", None], [0.9, 0.8, 0.7, 0.0], examples, [set()] * 4, [set()] * 4)

    assert result["accuracy"] == 0.5
    assert result["per_intent"]["y"] == {"precision": 0.5, "recall": 1.0, "f1": 0.6667, "support": 1}
    assert result["per_intent"]["z"] == {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 1}
    assert [error["predicted"] for error in result["errors"]] == ["y", ""]


def test_entity_report_false_positive() -> None:
    result = entity_report([{("city", "lyon")}], [{("city", "lyon"), ("city", "brest")}])

    assert result == {"city": {"precision": 0.5, "recall": 1.0, "f1": 0.6667, "support": 1}}


def test_entity_report_wrong_value() -> None:
    result = entity_report([{("profile", "parent")}], [{("profile", "enseignant")}])

    assert result["profile"] == {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 1}


def test_cross_validation_folds(settings: NluSettings) -> None:
    result = cross_validate(training_data(), settings, folds=3)

    assert result["folds"] == 3


def test_cross_validation_every_example(settings: NluSettings) -> None:
    result = cross_validate(training_data(), settings, folds=3)

    assert result["examples"] == 12
    assert sum(row["support"] for row in result["per_intent"].values()) == 12


def test_cross_validation_report_keys(settings: NluSettings) -> None:
    result = cross_validate(training_data(), settings, folds=2)

    assert {"accuracy", "macro_f1", "weighted_f1", "per_intent", "confusions", "errors", "entities"} <= set(result)


def test_cross_validation_too_few_examples(settings: NluSettings) -> None:
    with pytest.raises(ValueError, match="only 6 examples; cross-validation with 7 folds"):
        cross_validate(training_data(), settings, folds=7)


def test_confusion_png_signature(result: dict, tmp_path: Path) -> None:
    path = write_confusion_png(result, tmp_path / "reports")

    assert path == tmp_path / "reports" / "intent_confusion.png"
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
