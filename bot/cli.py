"""The ``entraide`` command line."""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import sys
import time
from pathlib import Path

from bot.config import Settings, load_settings
from bot.errors import EntraideError

logger = logging.getLogger("bot.cli")


def _settings(args: argparse.Namespace) -> Settings:
    return load_settings(Path(args.config) if args.config else None)


def cmd_check(args: argparse.Namespace) -> int:
    from bot.data import load_project
    from bot.data.check import check_project
    from bot.dialogue.actions import custom_action_responses, load_custom_actions

    settings = _settings(args)
    project = load_project(settings)
    actions = load_custom_actions(settings)
    findings = check_project(
        project, settings.nlu.min_examples, set(actions), settings.policies.max_history, custom_action_responses(actions)
    )
    for finding in findings.sorted():
        print(finding)
    errors, warnings = len(findings.errors), len(findings.warnings)
    print(
        f"{len(project.training.examples)} examples, {len(project.training.intents)} intents, "
        f"{len(project.stories)} stories and rules: {errors} error(s), {warnings} warning(s)"
    )
    return 1 if errors else 0


def cmd_train(args: argparse.Namespace) -> int:
    from bot.data import load_project
    from bot.nlu.files import train_project

    settings = _settings(args)
    started = time.perf_counter()
    project = load_project(settings)
    result = train_project(project, settings, force=args.force, progress=lambda text: print(text, flush=True))
    if not result.trained:
        print(f"model {result.path} is up to date (use --force to retrain)")
        return 0
    elapsed = time.perf_counter() - started
    size = result.path.stat().st_size
    print(f"trained {result.path} in {elapsed:.2f} s ({size / 1024:.0f} KiB)")
    return 0


def cmd_test(args: argparse.Namespace) -> int:
    if args.target == "stories":
        from bot.dialogue.testing import run_story_tests

        settings = _settings(args)
        return asyncio.run(run_story_tests(settings, Path(args.stories) if args.stories else None))
    return _test_nlu(args)


def _test_nlu(args: argparse.Namespace) -> int:
    from bot.data import load_project
    from bot.data.project import yaml_files
    from bot.data.findings import Findings
    from bot.data.training import TrainingData, load_nlu_file
    from bot._yaml import load_yaml
    from bot.nlu.evaluate import cross_validate, evaluate_examples, write_confusion_png
    from bot.nlu.files import load_model

    settings = _settings(args)
    if args.cross_validation:
        project = load_project(settings)
        result = cross_validate(project.training, settings.nlu, args.folds)
    else:
        if not args.nlu:
            print("error: give --nlu FILE or --cross-validation", file=sys.stderr)
            return 2
        test_data = TrainingData()
        for path in yaml_files(Path(args.nlu)):
            load_nlu_file(path, load_yaml(path) or {}, test_data, Findings())
        if not test_data.examples:
            print(f"error: {args.nlu}: no examples found", file=sys.stderr)
            return 2
        result = evaluate_examples(load_model(settings), test_data.examples)

    if args.out:
        png = write_confusion_png(result, Path(args.out))
        Path(args.out, "intent_report.json").write_text(json.dumps(_public(result), ensure_ascii=False, indent=2), encoding="utf-8")
        print(f"wrote {png}", file=sys.stderr)
    if args.json:
        print(json.dumps(_public(result), ensure_ascii=False, indent=2))
    else:
        _print_report(result)
    return 0


def _public(result: dict) -> dict:
    return {key: value for key, value in result.items() if key not in {"labels", "matrix"}}


def _print_report(result: dict) -> None:
    print(f"examples      {result['examples']}")
    print(f"accuracy      {result['accuracy']:.4f}")
    print(f"macro F1      {result['macro_f1']:.4f}")
    print(f"weighted F1   {result['weighted_f1']:.4f}\n")
    print(f"{'intent':<28}{'precision':>10}{'recall':>10}{'F1':>10}{'support':>9}")
    for intent, row in result["per_intent"].items():
        if row["support"] == 0:
            # nlu_fallback has no examples: only the messages sent to it matter, counted below.
            continue
        print(f"{intent:<28}{row['precision']:>10.3f}{row['recall']:>10.3f}{row['f1']:>10.3f}{row['support']:>9}")
    fallback = sum(1 for item in result["errors"] if item["predicted"] == "nlu_fallback")
    print(f"\nsent to nlu_fallback (the assistant asks to rephrase): {fallback}")
    if result["confusions"]:
        print("\nmost confused (true -> predicted):")
        for item in result["confusions"][:10]:
            print(f"  {item['count']:>3}  {item['intent']} -> {item['predicted']}")
    if result["errors"]:
        print("\nmisclassified examples:")
        for item in result["errors"]:
            print(f"  {item['location']}: {item['intent']} -> {item['predicted']} ({item['confidence']:.2f}): {item['text']}")
    if result["entities"]:
        print(f"\n{'entity':<20}{'precision':>10}{'recall':>10}{'F1':>10}{'support':>9}")
        for entity, row in result["entities"].items():
            print(f"{entity:<20}{row['precision']:>10.3f}{row['recall']:>10.3f}{row['f1']:>10.3f}{row['support']:>9}")


def cmd_parse(args: argparse.Namespace) -> int:
    from bot.nlu.files import load_model

    settings = _settings(args)
    model = load_model(settings, Path(args.model) if args.model else None)
    print(json.dumps(model.parse(args.text), ensure_ascii=False, indent=2))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="entraide", description="Level-0 chat assistant for ENT support structures.")
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more log output (-v INFO, -vv DEBUG)")
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--config", metavar="PATH", help="configuration file (default: ./config.yml)")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    check = commands.add_parser("check", parents=[common], help="validate the training data, stories and domain")
    check.set_defaults(handler=cmd_check)

    train = commands.add_parser("train", parents=[common], help="train the NLU model into models/")
    train.add_argument("--force", action="store_true", help="retrain even when data and settings did not change")
    train.set_defaults(handler=cmd_train)

    test = commands.add_parser("test", parents=[common], help="measure the NLU model or run conversation tests")
    test.add_argument("target", choices=["nlu", "stories"], help="what to test")
    test.add_argument("--nlu", metavar="FILE", help="NLU test data in Rasa YAML (file or folder)")
    test.add_argument("--cross-validation", action="store_true", help="k-fold cross-validation on the training data")
    test.add_argument("--folds", type=int, default=5, help="number of folds for --cross-validation (default: 5)")
    test.add_argument("--json", action="store_true", help="print the report as one JSON object")
    test.add_argument("--out", metavar="DIR", help="also write the report and a confusion-matrix PNG into DIR")
    test.add_argument("--stories", metavar="PATH", help="test stories file or folder (default: data.tests)")
    test.set_defaults(handler=cmd_test)

    parse = commands.add_parser("parse", parents=[common], help="print the parse result of TEXT as JSON")
    parse.add_argument("text", help="the message to parse")
    parse.add_argument("--model", metavar="FILE", help="model file (default: the newest under models/)")
    parse.set_defaults(handler=cmd_parse)

    from bot.cli_more import add_commands

    add_commands(commands, common)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    level = {0: logging.WARNING, 1: logging.INFO}.get(args.verbose, logging.DEBUG)
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        code = args.handler(args)
        # Flush here, so that a reader that left early raises inside this try, not at exit.
        sys.stdout.flush()
        return code
    except EntraideError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        # The reader of stdout left early (``entraide requests show REF | head``). Send the rest of
        # the output nowhere, so that Python's final flush raises no second error.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141


if __name__ == "__main__":
    sys.exit(main())
