"""Write a Rasa 3.6 project from entraide's own data, for the benchmarks that compare the two.

    python -m bench.rasa_project --out /tmp/rasa-entraide

The project gets Rasa's usual pipeline and policies (``config.yml`` below), the repository's
``domain.yml`` and its ``nlu/`` and ``stories/`` files under ``data/``, and a ``credentials.yml``
that enables Rasa's REST channel. Two things differ from the repository:

- entraide's ``spelling:`` block (written forms such as "mdp" mapped to standard words) is not Rasa
  YAML, so it is left out. A file that contains nothing else is not written at all.
- ``action_diagnose_fault`` and ``action_handoff`` are custom actions that entraide runs in process.
  They stay declared in the domain and named in the rules and stories, but the project has no
  action server. When Rasa predicts one of them, it logs "Encountered an exception while running
  action" and goes on predicting with the events of that action lost.

Nothing of this project is committed; the output folder must be outside the repository or empty.
"""

from __future__ import annotations

import argparse
import io
import shutil
import sys
from pathlib import Path

from ruamel.yaml import YAML

REPO = Path(__file__).resolve().parent.parent

# Keys of entraide data files that Rasa 3.6 does not accept.
ENTRAIDE_ONLY_KEYS = ("spelling",)

CONFIG_TEMPLATE = """\
# Written by bench/rasa_project.py from entraide's data, for the Rasa 3.6 comparison.
recipe: default.v1
language: fr
assistant_id: entraide-benchmark

pipeline:
  - name: WhitespaceTokenizer
  - name: RegexFeaturizer
  - name: LexicalSyntacticFeaturizer
  - name: CountVectorsFeaturizer
  - name: CountVectorsFeaturizer
    analyzer: char_wb
    min_ngram: 1
    max_ngram: 4
  - name: DIETClassifier
    epochs: {epochs}
    constrain_similarities: true
    random_seed: {seed}
  - name: EntitySynonymMapper
  - name: ResponseSelector
    epochs: {epochs}
    constrain_similarities: true
    random_seed: {seed}
  - name: FallbackClassifier
    threshold: {fallback_threshold}
    ambiguity_threshold: {ambiguity_threshold}

policies:
  - name: MemoizationPolicy
    max_history: {max_history}
  - name: RulePolicy
  - name: TEDPolicy
    max_history: {max_history}
    epochs: {epochs}
    constrain_similarities: true
    random_seed: {seed}
"""

CREDENTIALS = """\
# Rasa's REST channel: POST /webhooks/rest/webhook.
rest:
"""


def entraide_thresholds() -> dict[str, float | int]:
    """Read the fallback thresholds and dialogue history length from the repository's config.yml."""
    from bot.config import load_settings

    settings = load_settings(REPO / "config.yml")
    return {
        "fallback_threshold": settings.nlu.fallback_threshold,
        "ambiguity_threshold": settings.nlu.ambiguity_threshold,
        "max_history": settings.policies.max_history,
    }


def convert_data_file(source: Path, target: Path) -> list[str]:
    """Copy one YAML data file without the keys Rasa rejects and return the keys left out.

    A file that keeps nothing but ``version`` is not written.
    """
    yaml = YAML(typ="rt")
    yaml.preserve_quotes = True
    yaml.width = 4096
    document = yaml.load(source.read_text(encoding="utf-8"))
    dropped = [key for key in ENTRAIDE_ONLY_KEYS if isinstance(document, dict) and key in document]
    if not dropped:
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source, target)
        return []
    for key in dropped:
        del document[key]
    if set(document) <= {"version"}:
        return dropped
    buffer = io.StringIO()
    yaml.dump(document, buffer)
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(buffer.getvalue(), encoding="utf-8")
    return dropped


def write_project(out: Path, epochs: int = 100, seed: int = 42) -> list[str]:
    """Write the project into ``out`` and return one line per conversion made."""
    if out.resolve().is_relative_to(REPO):
        raise SystemExit(f"error: {out} is inside the repository; write the Rasa project elsewhere")
    if out.exists() and any(out.iterdir()):
        raise SystemExit(f"error: {out} is not empty; pass a new or empty folder")
    out.mkdir(parents=True, exist_ok=True)
    notes = []

    values = entraide_thresholds()
    (out / "config.yml").write_text(CONFIG_TEMPLATE.format(epochs=epochs, seed=seed, **values), encoding="utf-8")
    (out / "credentials.yml").write_text(CREDENTIALS, encoding="utf-8")
    shutil.copyfile(REPO / "domain.yml", out / "domain.yml")

    for folder in ("nlu", "stories"):
        for source in sorted((REPO / folder).glob("*.yml")):
            target = out / "data" / folder / source.name
            dropped = convert_data_file(source, target)
            if dropped and not target.exists():
                notes.append(f"{folder}/{source.name}: left out, it holds only {', '.join(dropped)}")
            elif dropped:
                notes.append(f"{folder}/{source.name}: copied without {', '.join(dropped)}")
    notes.append("action_diagnose_fault, action_handoff: declared, no action server (Rasa logs an error when it predicts them)")
    return notes


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.rasa_project", description="Write a Rasa 3.6 project from entraide's data.")
    parser.add_argument("--out", type=Path, required=True, help="new or empty folder outside the repository")
    parser.add_argument("--epochs", type=int, default=100, help="epochs of DIETClassifier, ResponseSelector and TEDPolicy (default: 100)")
    parser.add_argument("--seed", type=int, default=42, help="random seed of the trained components (default: 42)")
    options = parser.parse_args(argv)
    for line in write_project(options.out, options.epochs, options.seed):
        print(line)
    print(f"wrote the Rasa project to {options.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
