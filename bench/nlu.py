"""Benchmark the NLU engine: training time, model file size and in-process parse latency.

Run from the repository root::

    python bench/nlu.py --config config.yml --repeat 5 --synthetic

The project named by ``--config`` is measured first. With ``--synthetic``, a generated data set of
25 intents with 30 French-looking examples each is measured too, so that figures can be compared
across machines whatever the shipped data holds. Models are written to a temporary folder, never
to ``models/``. This is a measurement script, not a test: it asserts nothing.
"""

from __future__ import annotations

import argparse
import os
import platform
import random
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from bot.config import NluSettings, load_settings
from bot.data import load_project
from bot.data.findings import Location
from bot.data.training import Example, TrainingData
from bot.nlu.files import retrieval_responses
from bot.nlu.model import NluModel, train

SYNTHETIC_INTENTS = 25
SYNTHETIC_EXAMPLES = 30
SYNTHETIC_SEED = 20240901

# Targets for the default settings on 2 cores: training under 5 s and parse p99 under 3 ms.
TARGET_TRAINING_SECONDS = 5.0
TARGET_PARSE_P99_MS = 3.0

# Word lists for the synthetic data. Each intent owns one topic noun and one topic verb, and
# every sentence wraps them in openers, subjects, fillers and closers shared by all intents,
# so the classifier has to find the topic words among common ones.
TOPIC_NOUNS = [
    "cahier de textes", "messagerie", "emploi du temps", "bulletin", "carnet de liaison",
    "casier numérique", "agenda", "espace documentaire", "forum de classe", "blog",
    "annuaire", "sondage", "cantine", "inscription au car", "manuel numérique",
    "classe virtuelle", "exercice en ligne", "notes du trimestre", "absences", "visioconférence",
    "imprimante", "tablette", "wifi du collège", "application mobile", "fiche de renseignements",
]
TOPIC_VERBS = [
    "consulter", "envoyer", "modifier", "télécharger", "imprimer",
    "partager", "supprimer", "retrouver", "valider", "ouvrir",
    "remplir", "signer", "activer", "corriger", "déposer",
    "rejoindre", "rendre", "vérifier", "justifier", "lancer",
    "brancher", "configurer", "connecter", "installer", "mettre à jour",
]
OPENERS = ["", "", "bonjour", "bonjour,", "salut", "svp", "excusez-moi", "bonsoir", "hello", "re bonjour"]
SUBJECTS = [
    "je n'arrive pas à", "comment", "je voudrais", "je ne sais pas", "pourquoi je ne peux pas",
    "mon fils ne peut pas", "ma fille voudrait", "on doit", "c'est possible de", "jarrive pa a",
    "impossible de", "où est-ce qu'on peut",
]
DETERMINERS = ["le", "la", "mon", "ma", "notre", "son", "ce", "l'"]
FILLERS = ["", "", "", "sur l'ENT", "depuis hier", "ce matin", "sur mon téléphone", "pour la classe", "encore une fois"]
CLOSERS = ["", "", "?", "merci", "merci d'avance", "svp", "!!", "c'est urgent", "aidez-moi"]


@dataclass(frozen=True)
class Measure:
    """The figures of one data set, in wall-clock time and in CPU time of the measuring thread.

    On a busy machine the wall-clock figures include time spent waiting for a core, while the CPU
    figures do not, so comparing them shows how much of a slow percentile is contention.
    """

    label: str
    examples: int
    intents: int
    training_seconds: list[float]
    training_cpu_seconds: list[float]
    model_bytes: int
    latencies_ms: np.ndarray
    cpu_latencies_ms: np.ndarray


def determiner_for(determiner: str, noun: str) -> str:
    """Return the determiner with its trailing space, elided before a vowel as French writes it."""
    vowel = noun[0] in "aeéiouy"
    if determiner in {"le", "la", "ce"} and vowel:
        return "l'" if determiner != "ce" else "cet "
    if determiner == "l'" and not vowel:
        return "le "
    return determiner if determiner.endswith("'") else determiner + " "


def synthetic_training(seed: int = SYNTHETIC_SEED) -> TrainingData:
    """Generate ``SYNTHETIC_INTENTS`` intents of ``SYNTHETIC_EXAMPLES`` distinct sentences each."""
    generator = random.Random(seed)
    source = Location(Path("synthetic.yml"))
    data = TrainingData()
    for index in range(SYNTHETIC_INTENTS):
        intent = f"topic_{index:02d}"
        noun, verb = TOPIC_NOUNS[index], TOPIC_VERBS[index]
        sentences: set[str] = set()
        while len(sentences) < SYNTHETIC_EXAMPLES:
            words = [
                generator.choice(OPENERS),
                generator.choice(SUBJECTS),
                verb if generator.random() < 0.8 else "",
                determiner_for(generator.choice(DETERMINERS), noun) + noun,
                generator.choice(FILLERS),
                generator.choice(CLOSERS),
            ]
            sentence = " ".join(word for word in words if word)
            sentences.add(sentence)
        data.examples.extend(Example(text, intent, source) for text in sorted(sentences))
    return data


def measure(
    label: str,
    training: TrainingData,
    settings: NluSettings,
    repeat: int,
    folder: Path,
    responses: dict | None = None,
) -> Measure:
    """Train ``repeat`` times, save the last model, then time one parse of every training text."""
    durations = []
    cpu_durations = []
    model = None
    for _ in range(repeat):
        started, cpu_started = time.perf_counter(), time.process_time()
        model = train(training, settings, retrieval_responses=responses)
        durations.append(time.perf_counter() - started)
        cpu_durations.append(time.process_time() - cpu_started)

    path = folder / f"{label}.npz"
    model.save(path)
    loaded = NluModel.load(path)

    texts = [example.text for example in training.examples]
    for text in texts:  # warm-up: caches, lazy imports, first allocations
        loaded.parse(text)
    latencies = np.empty(len(texts))
    cpu_latencies = np.empty(len(texts))
    for index, text in enumerate(texts):
        started, cpu_started = time.perf_counter_ns(), time.thread_time_ns()
        loaded.parse(text)
        latencies[index] = (time.perf_counter_ns() - started) / 1e6
        cpu_latencies[index] = (time.thread_time_ns() - cpu_started) / 1e6

    return Measure(
        label, len(texts), len(training.intents), durations, cpu_durations, path.stat().st_size, latencies, cpu_latencies
    )


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text(encoding="utf-8").splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def percentiles(latencies: np.ndarray) -> str:
    p50, p95, p99 = np.percentile(latencies, [50, 95, 99])
    return f"p50 {p50:.3f} ms, p95 {p95:.3f} ms, p99 {p99:.3f} ms, max {latencies.max():.3f} ms"


def print_measure(result: Measure) -> None:
    median = statistics.median(result.training_seconds)
    cpu_median = statistics.median(result.training_cpu_seconds)
    p99 = float(np.percentile(result.latencies_ms, 99))
    print(f"[{result.label}] {result.examples} examples, {result.intents} intents")
    print(
        f"  training    median {median:.2f} s wall, {cpu_median:.2f} s CPU over {len(result.training_seconds)} run(s)"
        f" (wall min {min(result.training_seconds):.2f} s, max {max(result.training_seconds):.2f} s)"
    )
    print(f"  model file  {result.model_bytes / 1024:.0f} KiB")
    print(f"  parse wall  {percentiles(result.latencies_ms)}")
    print(f"  parse CPU   {percentiles(result.cpu_latencies_ms)}")
    print(f"              ({len(result.latencies_ms)} texts, one timed parse each after a warm-up pass)")
    training_ok = "met" if median < TARGET_TRAINING_SECONDS else "MISSED"
    parse_ok = "met" if p99 < TARGET_PARSE_P99_MS else "MISSED"
    print(
        f"  targets     training < {TARGET_TRAINING_SECONDS:g} s: {training_ok}; "
        f"parse p99 < {TARGET_PARSE_P99_MS:g} ms: {parse_ok} (wall clock)"
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description="Measure NLU training time, model size and parse latency.")
    parser.add_argument("--config", metavar="PATH", default="config.yml", help="configuration file (default: config.yml)")
    parser.add_argument("--repeat", type=int, default=3, metavar="N", help="training runs per data set; the median is shown (default: 3)")
    parser.add_argument(
        "--synthetic",
        action="store_true",
        help=f"also measure a generated data set of {SYNTHETIC_INTENTS} intents x {SYNTHETIC_EXAMPLES} examples",
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.repeat < 1:
        print("error: --repeat must be at least 1", file=sys.stderr)
        return 2

    settings = load_settings(Path(args.config))
    print(f"python {platform.python_version()}, {os.cpu_count()} CPU(s), {cpu_model()}")
    print("load average at start: {:.2f} {:.2f} {:.2f}".format(*os.getloadavg()))
    started = time.perf_counter()
    project = load_project(settings)
    print(f"project loaded from {args.config} in {time.perf_counter() - started:.2f} s")

    with tempfile.TemporaryDirectory(prefix="entraide-bench-") as folder:
        results = [measure("project", project.training, settings.nlu, args.repeat, Path(folder), retrieval_responses(project))]
        if args.synthetic:
            results.append(measure("synthetic", synthetic_training(), settings.nlu, args.repeat, Path(folder)))
    for result in results:
        print_measure(result)
    print("load average at end: {:.2f} {:.2f} {:.2f}".format(*os.getloadavg()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
