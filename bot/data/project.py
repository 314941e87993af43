"""Load a whole project: the training data, the stories and rules, and the domain."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path

from bot.config import Settings
from bot._yaml import line_of, load_yaml
from bot.data.domain import Domain, load_domain_file
from bot.data.findings import Findings, Location
from bot.data.stories import Story, load_story_file
from bot.data.training import TrainingData, load_nlu_file, load_spelling
from bot.errors import TrainingDataError

_DATA_KEYS = {"version", "nlu", "spelling", "stories", "rules", "responses"}
SUPPORTED_VERSIONS = {"3.0", "3.1"}


@dataclass
class Project:
    training: TrainingData
    domain: Domain
    stories: list[Story]
    findings: Findings
    files: list[Path] = field(default_factory=list)

    @property
    def rules(self) -> list[Story]:
        return [story for story in self.stories if story.kind == "rule"]

    def fingerprint(self, extra: str = "") -> str:
        """Return a SHA-256 over every data file's bytes and ``extra`` (the settings that shape training)."""
        digest = hashlib.sha256(extra.encode())
        for path in sorted(self.files):
            digest.update(str(path).encode())
            digest.update(path.read_bytes())
        return digest.hexdigest()


def yaml_files(root: Path) -> list[Path]:
    """List the YAML files of a file or folder, sorted, so loading order never depends on the disk."""
    if root.is_file():
        return [root]
    if not root.exists():
        return []
    return sorted(path for path in root.rglob("*") if path.suffix in {".yml", ".yaml"} and path.is_file())


def load_project(settings: Settings) -> Project:
    """Load every data file the settings point to.

    Raises TrainingDataError at the first malformed block; unsupported Rasa features become warnings.
    """
    findings = Findings()
    training = TrainingData()
    domain = Domain()
    stories: list[Story] = []
    files: list[Path] = []

    domain_root = settings.path(settings.data.domain)
    domain_files = yaml_files(domain_root)
    if not domain_files:
        raise TrainingDataError(f"{domain_root}: domain not found; set data.domain in config.yml")
    for path in domain_files:
        document = _document(path)
        domain.merge(load_domain_file(path, document, findings))
        files.append(path)

    data_files: list[Path] = []
    for root in (settings.path(settings.data.nlu), settings.path(settings.data.stories)):
        data_files += [path for path in yaml_files(root) if path not in data_files and path not in domain_files]
    for path in data_files:
        document = _document(path)
        for key in document:
            if key not in _DATA_KEYS:
                raise TrainingDataError(
                    f"{path}:{line_of(document, key)}: unknown top-level key {key!r}; expected one of {sorted(_DATA_KEYS)}"
                )
        load_nlu_file(path, document, training, findings)
        load_spelling(path, document, training)
        stories.extend(load_story_file(path, document, findings))
        if "responses" in document:
            domain.merge(load_domain_file(path, {"responses": document["responses"]}, findings))
        files.append(path)

    if not training.examples:
        raise TrainingDataError(f"{settings.path(settings.data.nlu)}: no training examples found")
    return Project(training, domain, stories, findings, files)


def load_test_stories(settings: Settings, path: Path | None = None) -> list[Story]:
    """Load the conversation tests (Rasa test-story format) from a file or folder."""
    root = path or settings.path(settings.data.tests)
    findings = Findings()
    found: list[Story] = []
    for file in yaml_files(root):
        found.extend(load_story_file(file, _document(file), findings, kind_override="test"))
    if not found:
        raise TrainingDataError(f"{root}: no test stories found")
    return found


def _document(path: Path) -> dict:
    document = load_yaml(path)
    if document is None:
        return {}
    if not isinstance(document, dict):
        raise TrainingDataError(f"{path}:1: expected a mapping with keys such as 'version' and 'nlu'")
    version = document.get("version")
    if version is not None and str(version) not in SUPPORTED_VERSIONS:
        raise TrainingDataError(
            f"{Location(path, line_of(document, 'version'))}: version {version!r} is not supported; use \"3.1\""
        )
    return document
