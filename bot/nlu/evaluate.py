"""Measure the NLU model: on a test file or by k-fold cross-validation."""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
from sklearn.metrics import accuracy_score, confusion_matrix, f1_score, precision_recall_fscore_support
from sklearn.model_selection import StratifiedKFold

from bot.config import NluSettings
from bot.data.training import Example, TrainingData
from bot.nlu.model import NluModel, train
from bot.nlu.normalize import fold

MAX_CONFUSIONS = 20


def evaluate_examples(model: NluModel, examples: list[Example]) -> dict[str, Any]:
    """Parse every example and compare intents and entities with the annotations."""
    predicted = []
    confidences = []
    gold_entities = []
    found_entities = []
    for example in examples:
        result = model.parse(example.text)
        predicted.append(result["intent"]["name"])
        confidences.append(result["intent"]["confidence"])
        gold_entities.append({(span.entity, fold(str(span.value))) for span in example.entities})
        found_entities.append({(item["entity"], fold(str(item["value"]))) for item in result["entities"]})
    return report([example.intent for example in examples], predicted, confidences, examples, gold_entities, found_entities)


def cross_validate(training: TrainingData, settings: NluSettings, folds: int = 5) -> dict[str, Any]:
    """Train on k-1 folds and test on the remaining fold, k times, then report on all predictions."""
    examples = training.examples
    labels = [example.intent for example in examples]
    smallest = min(Counter(labels).values())
    if smallest < folds:
        raise ValueError(f"an intent has only {smallest} examples; cross-validation with {folds} folds needs at least {folds}")
    splitter = StratifiedKFold(n_splits=folds, shuffle=True, random_state=settings.random_seed)
    predicted: list[str | None] = [None] * len(examples)
    confidences = [0.0] * len(examples)
    found: list[set] = [set()] * len(examples)
    for train_rows, test_rows in splitter.split(np.zeros(len(labels)), labels):
        model = train(training, settings, [examples[i] for i in train_rows])
        for row in test_rows:
            result = model.parse(examples[row].text)
            predicted[row] = result["intent"]["name"]
            confidences[row] = result["intent"]["confidence"]
            found[row] = {(item["entity"], fold(str(item["value"]))) for item in result["entities"]}
    gold = [{(span.entity, fold(str(span.value))) for span in example.entities} for example in examples]
    result = report(labels, predicted, confidences, examples, gold, found)
    result["folds"] = folds
    return result


def report(
    gold: list[str],
    predicted: list[str | None],
    confidences: list[float],
    examples: list[Example],
    gold_entities: list[set],
    found_entities: list[set],
) -> dict[str, Any]:
    labels = sorted(set(gold) | {label for label in predicted if label})
    predicted_labels = [label or "" for label in predicted]
    precision, recall, f1, support = precision_recall_fscore_support(
        gold, predicted_labels, labels=labels, zero_division=0
    )
    per_intent = {
        label: {
            "precision": round(float(precision[i]), 4),
            "recall": round(float(recall[i]), 4),
            "f1": round(float(f1[i]), 4),
            "support": int(support[i]),
        }
        for i, label in enumerate(labels)
        if support[i] > 0 or label in set(predicted_labels)
    }
    pairs = Counter((g, p) for g, p in zip(gold, predicted_labels) if g != p)
    confusions = [{"intent": g, "predicted": p, "count": n} for (g, p), n in pairs.most_common(MAX_CONFUSIONS)]
    errors = [
        {
            "text": example.text,
            "intent": g,
            "predicted": p,
            "confidence": round(float(c), 4),
            "location": str(example.location),
        }
        for example, g, p, c in zip(examples, gold, predicted_labels, confidences)
        if g != p
    ]
    gold_labels = sorted(set(gold))
    return {
        "examples": len(gold),
        "accuracy": round(float(accuracy_score(gold, predicted_labels)), 4),
        "macro_f1": round(float(f1_score(gold, predicted_labels, labels=gold_labels, average="macro", zero_division=0)), 4),
        "weighted_f1": round(float(f1_score(gold, predicted_labels, labels=gold_labels, average="weighted", zero_division=0)), 4),
        "per_intent": per_intent,
        "confusions": confusions,
        "errors": errors,
        "entities": entity_report(gold_entities, found_entities),
        "labels": labels,
        "matrix": confusion_matrix(gold, predicted_labels, labels=labels).tolist(),
    }


def entity_report(gold: list[set], found: list[set]) -> dict[str, dict[str, float]]:
    """Return precision, recall and F1 per entity type, matching (entity, value) pairs per example."""
    counts: dict[str, Counter] = {}
    for expected, actual in zip(gold, found):
        for entity, _ in expected | actual:
            counts.setdefault(entity, Counter())
        for item in expected & actual:
            counts[item[0]]["tp"] += 1
        for item in actual - expected:
            counts[item[0]]["fp"] += 1
        for item in expected - actual:
            counts[item[0]]["fn"] += 1
    result = {}
    for entity, count in sorted(counts.items()):
        tp, fp, fn = count["tp"], count["fp"], count["fn"]
        precision = tp / (tp + fp) if tp + fp else 0.0
        recall = tp / (tp + fn) if tp + fn else 0.0
        f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
        result[entity] = {
            "precision": round(precision, 4),
            "recall": round(recall, 4),
            "f1": round(f1, 4),
            "support": tp + fn,
        }
    return result


def write_confusion_png(result: dict[str, Any], folder: Path) -> Path:
    """Draw the confusion matrix with matplotlib (the ``report`` extra) into ``folder``."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise RuntimeError("matplotlib is not installed; install it with: pip install -e '.[report]'") from None

    labels = result["labels"]
    matrix = np.array(result["matrix"])
    size = max(6.0, 0.4 * len(labels))
    figure, axes = plt.subplots(figsize=(size, size))
    axes.imshow(matrix, cmap="Blues")
    axes.set_xticks(range(len(labels)), labels, rotation=90, fontsize=8)
    axes.set_yticks(range(len(labels)), labels, fontsize=8)
    axes.set_xlabel("predicted intent")
    axes.set_ylabel("true intent")
    for row in range(len(labels)):
        for column in range(len(labels)):
            if matrix[row, column]:
                axes.text(column, row, str(matrix[row, column]), ha="center", va="center", fontsize=6)
    figure.tight_layout()
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "intent_confusion.png"
    figure.savefig(path, dpi=120)
    plt.close(figure)
    return path
