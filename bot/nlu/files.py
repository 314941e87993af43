"""Model files under ``models/``: train when the data changed, find and load the newest one."""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from bot.config import Settings
from bot.data.project import Project
from bot.errors import ModelError
from bot.nlu.model import FORMAT_VERSION, NluModel, train

logger = logging.getLogger(__name__)
MODEL_PREFIX = "nlu-"


@dataclass(frozen=True)
class TrainResult:
    path: Path
    trained: bool
    fingerprint: str


def fingerprint(project: Project, settings: Settings) -> str:
    extra = json.dumps({"format": FORMAT_VERSION, "nlu": settings.nlu.model_dump(mode="json")}, sort_keys=True)
    return project.fingerprint(extra)


def model_path(settings: Settings, digest: str) -> Path:
    return settings.path(settings.data.models) / f"{MODEL_PREFIX}{digest[:16]}.npz"


def latest_model(settings: Settings) -> Path:
    """Return the newest model file; raise ModelError when there is none."""
    folder = settings.path(settings.data.models)
    candidates = sorted(folder.glob(f"{MODEL_PREFIX}*.npz"), key=lambda path: path.stat().st_mtime) if folder.exists() else []
    candidates = [path for path in candidates if not path.name.endswith(".partial.npz")]
    if not candidates:
        raise ModelError(f"{folder}: no trained model; run 'entraide train'")
    return candidates[-1]


def retrieval_responses(project: Project) -> dict[str, list[dict[str, str]]]:
    """Collect ``utter_faq/ask_x`` responses, which the parse result carries for retrieval intents."""
    found = {}
    for name, variations in project.domain.responses.items():
        if name.startswith("utter_") and "/" in name:
            found[name.removeprefix("utter_")] = [{"text": variation.text} for variation in variations]
    return found


def train_project(
    project: Project,
    settings: Settings,
    force: bool = False,
    progress: Callable[[str], None] | None = None,
) -> TrainResult:
    """Train and save a model unless one with the same fingerprint exists (``force`` retrains)."""
    digest = fingerprint(project, settings)
    path = model_path(settings, digest)
    if path.exists() and not force:
        logger.debug("model %s is up to date", path)
        return TrainResult(path, False, digest)

    if progress:
        progress(f"training on {len(project.training.examples)} examples, {len(project.training.intents)} intents")
    model = train(project.training, settings.nlu, retrieval_responses=retrieval_responses(project))
    model.metadata["fingerprint"] = digest
    model.save(path)
    logger.info("model saved to %s", path)
    return TrainResult(path, True, digest)


def load_model(settings: Settings, path: Path | None = None) -> NluModel:
    """Load ``path`` or the newest model; never trains."""
    chosen = path or latest_model(settings)
    if not chosen.exists():
        raise ModelError(f"{chosen}: model file not found")
    return NluModel.load(chosen)
