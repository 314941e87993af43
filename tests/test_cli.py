"""Tests for the ``entraide`` command line: check, train, test nlu and parse."""

from __future__ import annotations

import contextlib
import io
import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from bot.cli import main

ROOT = Path(__file__).resolve().parent.parent
RASA_PROJECT = ROOT / "tests" / "data" / "rasa_project"
REPORT_KEYS = {"accuracy", "macro_f1", "weighted_f1", "per_intent", "confusions", "errors", "entities"}


@pytest.fixture
def rasa_copy(tmp_path: Path) -> Path:
    """Return the config of a private copy of the plain Rasa project, so models land in tmp_path."""
    target = tmp_path / "rasa_project"
    shutil.copytree(RASA_PROJECT, target, ignore=shutil.ignore_patterns("models"))
    return target / "config.yml"


@pytest.fixture(scope="module")
def cross_validation_report() -> dict:
    """Run ``test nlu --cross-validation --json`` once on the Rasa project and parse its output."""
    output = io.StringIO()
    with contextlib.redirect_stdout(output):
        code = main(["test", "nlu", "--cross-validation", "--folds", "3", "--json", "--config", str(RASA_PROJECT / "config.yml")])
    assert code == 0
    return json.loads(output.getvalue())


def shipped_model(folder: Path) -> Path:
    return next(folder.glob("nlu-*.npz"))


# ----- check -----


def test_check_shipped_data(capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["check", "--config", str(ROOT / "config.yml")])

    assert code == 0
    assert ": 0 error(s)," in capsys.readouterr().out


def test_check_rasa_project(capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["check", "--config", str(RASA_PROJECT / "config.yml")])

    assert code == 0
    assert capsys.readouterr().out == "36 examples, 6 intents, 4 stories and rules: 0 error(s), 0 warning(s)\n"


def test_check_reports_error(rasa_copy: Path, capsys: pytest.CaptureFixture[str]) -> None:
    stories = rasa_copy.parent / "data" / "stories.yml"
    stories.write_text(stories.read_text(encoding="utf-8").replace("intent: mood_great", "intent: mood_unknown"), encoding="utf-8")

    code = main(["check", "--config", str(rasa_copy)])

    assert code == 1
    assert f"{stories}:7: error: story 'happy path' names unknown intent 'mood_unknown'" in capsys.readouterr().out


def test_check_malformed_data(rasa_copy: Path, capsys: pytest.CaptureFixture[str]) -> None:
    nlu = rasa_copy.parent / "data" / "nlu.yml"
    nlu.write_text(nlu.read_text(encoding="utf-8").replace("- intent: deny", "- intent: [deny"), encoding="utf-8")

    code = main(["check", "--config", str(rasa_copy)])

    assert code == 1
    assert capsys.readouterr().err.startswith(f"error: {nlu}:")


# ----- train -----


def test_train_writes_model(rasa_copy: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["train", "--config", str(rasa_copy)])

    output = capsys.readouterr().out
    assert code == 0
    assert "training on 36 examples, 6 intents" in output
    assert len(list((rasa_copy.parent / "models").glob("nlu-*.npz"))) == 1


def test_train_twice_skips(rasa_copy: Path, capsys: pytest.CaptureFixture[str]) -> None:
    main(["train", "--config", str(rasa_copy)])
    capsys.readouterr()

    code = main(["train", "--config", str(rasa_copy)])

    assert code == 0
    assert "is up to date (use --force to retrain)" in capsys.readouterr().out


def test_train_force(rasa_copy: Path, capsys: pytest.CaptureFixture[str]) -> None:
    main(["train", "--config", str(rasa_copy)])
    capsys.readouterr()

    code = main(["train", "--force", "--config", str(rasa_copy)])

    assert code == 0
    assert "trained " in capsys.readouterr().out


# ----- test nlu -----


def test_cross_validation_json_keys(cross_validation_report: dict) -> None:
    assert REPORT_KEYS <= set(cross_validation_report)


def test_cross_validation_json_folds(cross_validation_report: dict) -> None:
    assert cross_validation_report["folds"] == 3


def test_cross_validation_json_examples(cross_validation_report: dict) -> None:
    assert cross_validation_report["examples"] == 36


def test_cross_validation_json_hides_matrix(cross_validation_report: dict) -> None:
    assert "matrix" not in cross_validation_report


def test_cross_validation_text_report(capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["test", "nlu", "--cross-validation", "--folds", "3", "--config", str(RASA_PROJECT / "config.yml")])

    output = capsys.readouterr().out
    assert code == 0
    assert output.startswith("examples      36\naccuracy      ")


def test_nlu_test_file(rasa_copy: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    main(["train", "--config", str(rasa_copy)])
    test_file = tmp_path / "test_nlu.yml"
    test_file.write_text(
        textwrap.dedent(
            """\
            version: "3.1"
            nlu:
            - intent: greet
              examples: |
                - hello
                - hi there
            - intent: goodbye
              examples: |
                - bye bye
            """
        ),
        encoding="utf-8",
    )
    capsys.readouterr()

    code = main(["test", "nlu", "--nlu", str(test_file), "--json", "--config", str(rasa_copy)])

    report = json.loads(capsys.readouterr().out)
    assert code == 0
    assert report["examples"] == 3
    assert report["accuracy"] == 1.0


def test_nlu_test_out_folder(rasa_copy: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "reports"

    code = main(["test", "nlu", "--cross-validation", "--folds", "3", "--out", str(out), "--config", str(rasa_copy)])

    assert code == 0
    assert (out / "intent_confusion.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert REPORT_KEYS <= set(json.loads((out / "intent_report.json").read_text(encoding="utf-8")))


def test_nlu_test_needs_data(capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["test", "nlu", "--config", str(RASA_PROJECT / "config.yml")])

    assert code == 2
    assert "give --nlu FILE or --cross-validation" in capsys.readouterr().err


# ----- parse -----


def test_parse_shipped_password(shipped_models: Path, capsys: pytest.CaptureFixture[str]) -> None:
    model = shipped_model(shipped_models)

    code = main(["parse", "--config", str(ROOT / "config.yml"), "--model", str(model), "j'ai oublié mon mot de passe"])

    result = json.loads(capsys.readouterr().out)
    assert code == 0
    assert result["intent"]["name"] == "password_forgotten"
    assert result["text"] == "j'ai oublié mon mot de passe"


def test_parse_shipped_payload(shipped_models: Path, capsys: pytest.CaptureFixture[str]) -> None:
    model = shipped_model(shipped_models)

    main(["parse", "--config", str(ROOT / "config.yml"), "--model", str(model), '/inform_profile{"profile": "parent"}'])

    result = json.loads(capsys.readouterr().out)
    assert result["intent"] == {"name": "inform_profile", "confidence": 1.0}
    assert result["entities"][0]["value"] == "parent"


def test_parse_newest_model(rasa_copy: Path, capsys: pytest.CaptureFixture[str]) -> None:
    main(["train", "--config", str(rasa_copy)])
    capsys.readouterr()

    code = main(["parse", "--config", str(rasa_copy), "hello there"])

    assert code == 0
    assert json.loads(capsys.readouterr().out)["intent"]["name"] == "greet"


def test_parse_without_model(rasa_copy: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["parse", "--config", str(rasa_copy), "hello"])

    assert code == 1
    assert "no trained model; run 'entraide train'" in capsys.readouterr().err


# ----- configuration errors -----


def test_missing_config(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    missing = tmp_path / "absent.yml"

    code = main(["check", "--config", str(missing)])

    assert code == 1
    assert capsys.readouterr().err == f"error: {missing}: configuration file not found; pass an existing file to --config\n"


def test_invalid_config(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = tmp_path / "config.yml"
    config.write_text("nlu:\n  fallback_threshold: haut\n", encoding="utf-8")

    code = main(["train", "--config", str(config)])

    assert code == 1
    assert f"{config}:2: nlu.fallback_threshold" in capsys.readouterr().err


def test_missing_config_executable(tmp_path: Path) -> None:
    executable = Path(sys.executable).parent / "entraide"
    missing = tmp_path / "absent.yml"

    completed = subprocess.run(
        [str(executable), "check", "--config", str(missing)], capture_output=True, text=True, timeout=60, check=False
    )

    assert completed.returncode == 1
    assert "configuration file not found" in completed.stderr
    assert completed.stdout == ""


def test_closed_stdout_exits_quietly() -> None:
    # As in `entraide check | head -1`: the reader is gone before the command writes.
    read_end, write_end = os.pipe()
    os.close(read_end)
    try:
        result = subprocess.run(
            [sys.executable, "-m", "bot.cli", "check", "--config", str(ROOT / "config.yml")],
            stdout=write_end,
            stderr=subprocess.PIPE,
            cwd=ROOT,
            timeout=120,
        )
    finally:
        os.close(write_end)

    assert result.returncode == 141
    assert b"Traceback" not in result.stderr
    assert b"BrokenPipeError" not in result.stderr
