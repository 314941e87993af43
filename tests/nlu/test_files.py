"""Tests for bot.nlu.files: training only when data or settings changed, finding and loading models."""

from __future__ import annotations

import os
import textwrap
from pathlib import Path

import pytest

from bot.config import Settings, load_settings
from bot.data import load_project
from bot.errors import ModelError
from bot.nlu.files import fingerprint, latest_model, load_model, model_path, train_project

CONFIG = """\
data:
  nlu: data
  stories: data
  domain: domain.yml
  models: models
nlu:
  min_examples: 3
"""

DOMAIN = """\
version: "3.1"
intents:
  - greet
  - goodbye
responses:
  utter_greet:
  - text: "Bonjour !"
  utter_goodbye:
  - text: "Au revoir !"
"""

NLU = """\
version: "3.1"
nlu:
- intent: greet
  examples: |
    - bonjour
    - salut
    - coucou
    - bonsoir
    - bonjour à tous
    - salut l'assistant
- intent: goodbye
  examples: |
    - au revoir
    - bonne journée
    - à bientôt
    - bonne soirée
    - au revoir et merci
    - à plus tard
"""


def write_project(folder: Path, nlu: str = NLU, config: str = CONFIG) -> Settings:
    (folder / "data").mkdir(parents=True, exist_ok=True)
    (folder / "config.yml").write_text(config, encoding="utf-8")
    (folder / "domain.yml").write_text(DOMAIN, encoding="utf-8")
    (folder / "data" / "nlu.yml").write_text(textwrap.dedent(nlu), encoding="utf-8")
    return load_settings(folder / "config.yml")


def current_fingerprint(settings: Settings) -> str:
    return fingerprint(load_project(settings), settings)


def test_first_training_trains(tmp_path: Path) -> None:
    settings = write_project(tmp_path)

    result = train_project(load_project(settings), settings)

    assert result.trained is True
    assert result.path.exists()


def test_model_named_after_fingerprint(tmp_path: Path) -> None:
    settings = write_project(tmp_path)

    result = train_project(load_project(settings), settings)

    assert result.path == tmp_path / "models" / f"nlu-{result.fingerprint[:16]}.npz"
    assert result.path == model_path(settings, result.fingerprint)


def test_unchanged_data_skips(tmp_path: Path) -> None:
    settings = write_project(tmp_path)
    first = train_project(load_project(settings), settings)

    second = train_project(load_project(settings), settings)

    assert second.trained is False
    assert second.path == first.path


def test_skip_leaves_file_untouched(tmp_path: Path) -> None:
    settings = write_project(tmp_path)
    first = train_project(load_project(settings), settings)
    written = first.path.stat().st_mtime_ns

    train_project(load_project(settings), settings)

    assert first.path.stat().st_mtime_ns == written


def test_force_retrains(tmp_path: Path) -> None:
    settings = write_project(tmp_path)
    first = train_project(load_project(settings), settings)

    forced = train_project(load_project(settings), settings, force=True)

    assert forced.trained is True
    assert forced.path == first.path


def test_progress_reported(tmp_path: Path) -> None:
    settings = write_project(tmp_path)
    lines: list[str] = []

    train_project(load_project(settings), settings, progress=lines.append)

    assert lines == ["training on 12 examples, 2 intents"]


def test_fingerprint_stable(tmp_path: Path) -> None:
    settings = write_project(tmp_path)

    assert current_fingerprint(settings) == current_fingerprint(settings)


def test_changed_example_changes_fingerprint(tmp_path: Path) -> None:
    settings = write_project(tmp_path)
    before = current_fingerprint(settings)

    write_project(tmp_path, NLU.replace("- coucou", "- coucou toi"))

    assert current_fingerprint(settings) != before


def test_changed_example_retrains(tmp_path: Path) -> None:
    settings = write_project(tmp_path)
    first = train_project(load_project(settings), settings)
    write_project(tmp_path, NLU.replace("- coucou", "- coucou toi"))

    second = train_project(load_project(settings), settings)

    assert second.trained is True
    assert second.path != first.path


def test_changed_setting_changes_fingerprint(tmp_path: Path) -> None:
    settings = write_project(tmp_path)
    before = current_fingerprint(settings)

    changed = write_project(tmp_path, config=CONFIG + "  fuzzy_threshold: 90\n")

    assert current_fingerprint(changed) != before


def test_threshold_changes_fingerprint(tmp_path: Path) -> None:
    settings = write_project(tmp_path)
    before = current_fingerprint(settings)

    changed = write_project(tmp_path, config=CONFIG + "  fallback_threshold: 0.5\n")

    assert current_fingerprint(changed) != before


def test_model_keeps_fingerprint(tmp_path: Path) -> None:
    settings = write_project(tmp_path)
    result = train_project(load_project(settings), settings)

    assert load_model(settings).metadata["fingerprint"] == result.fingerprint


def test_latest_model_newest(tmp_path: Path) -> None:
    settings = write_project(tmp_path)
    first = train_project(load_project(settings), settings)
    write_project(tmp_path, NLU.replace("- coucou", "- coucou toi"))
    second = train_project(load_project(settings), settings)
    os.utime(first.path, (1_000_000, 1_000_000))

    assert latest_model(settings) == second.path


def test_latest_model_skips_partial(tmp_path: Path) -> None:
    settings = write_project(tmp_path)
    result = train_project(load_project(settings), settings)
    partial = tmp_path / "models" / "nlu-0123456789abcdef.partial.npz"
    partial.write_bytes(b"")

    assert latest_model(settings) == result.path


def test_latest_model_none(tmp_path: Path) -> None:
    settings = write_project(tmp_path)

    with pytest.raises(ModelError, match="no trained model; run 'entraide train'"):
        latest_model(settings)


def test_load_model_missing_path(tmp_path: Path) -> None:
    settings = write_project(tmp_path)

    with pytest.raises(ModelError, match="model file not found"):
        load_model(settings, tmp_path / "models" / "nlu-absent.npz")


def test_load_model_parses(tmp_path: Path) -> None:
    settings = write_project(tmp_path)
    train_project(load_project(settings), settings)

    assert load_model(settings).parse("salut")["intent"]["name"] == "greet"
