"""Tests for ``entraide check`` (bot.data.check) and story expansion (bot.data.stories.expand)."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from bot.config import load_settings
from bot.data import Findings, Project, Severity, expand, load_project
from bot.data.check import check_project
from bot.data.stories import ActionStep, SlotStep, UserStep
from bot.dialogue.actions import custom_action_responses, load_custom_actions
from bot.errors import TrainingDataError

REPOSITORY = Path(__file__).resolve().parents[2]
RASA_PROJECT = Path(__file__).parent / "rasa_project"

CONFIG = """\
data:
  nlu: data
  stories: data
  domain: domain.yml
"""

DOMAIN = """\
version: "3.1"
intents:
  - greet
  - goodbye
  - affirm
entities:
  - school
slots:
  school:
    type: text
    mappings:
    - type: from_entity
      entity: school
responses:
  utter_greet:
  - text: "Bonjour !"
  utter_goodbye:
  - text: "Au revoir !"
  utter_ok:
  - text: "Très bien."
"""

NLU = """\
version: "3.1"
nlu:
- intent: greet
  examples: |
    - bonjour
    - salut
    - coucou
- intent: goodbye
  examples: |
    - au revoir
    - bonne journée
    - a plus
- intent: affirm
  examples: |
    - oui
    - d'accord
    - ok
"""

STORIES = """\
version: "3.1"
stories:
- story: greet
  steps:
  - intent: greet
  - action: utter_greet
- story: goodbye
  steps:
  - intent: goodbye
  - action: utter_goodbye
- story: agree
  steps:
  - intent: affirm
  - action: utter_ok
"""


def load(folder: Path, **files: str) -> Project:
    """Write a small project into ``folder`` and load it.

    Keyword arguments replace or add files: ``domain`` writes ``domain.yml``, any other name
    writes ``data/<name>.yml``.
    """
    contents = {"domain": DOMAIN, "nlu": NLU, "stories": STORIES, **files}
    (folder / "data").mkdir(parents=True, exist_ok=True)
    (folder / "config.yml").write_text(CONFIG, encoding="utf-8")
    for name, text in contents.items():
        path = folder / "domain.yml" if name == "domain" else folder / "data" / f"{name}.yml"
        path.write_text(textwrap.dedent(text), encoding="utf-8")
    return load_project(load_settings(folder / "config.yml"))


def check(project: Project, min_examples: int = 3) -> Findings:
    return check_project(project, min_examples, set(), max_history=5)


def lines(findings: Findings, severity: Severity) -> list[str]:
    return [str(item) for item in findings.sorted() if item.severity is severity]


def test_clean_project(tmp_path: Path) -> None:
    findings = check(load(tmp_path))

    assert findings.items == []


def test_rasa_project_clean() -> None:
    settings = load_settings(RASA_PROJECT / "config.yml")
    findings = check_project(load_project(settings), settings.nlu.min_examples, set(), settings.policies.max_history)

    assert findings.items == []


def test_shipped_data_has_no_errors() -> None:
    settings = load_settings(REPOSITORY / "config.yml")
    actions = load_custom_actions(settings)
    project = load_project(settings)

    findings = check_project(
        project, settings.nlu.min_examples, set(actions), settings.policies.max_history, custom_action_responses(actions)
    )

    assert [str(item) for item in findings.errors] == []


# ----- references -----


def test_story_unknown_intent(tmp_path: Path) -> None:
    project = load(
        tmp_path,
        stories=STORIES
        + """\
- story: thanks
  steps:
  - intent: thank
  - action: utter_ok
""",
    )

    errors = lines(check(project), Severity.ERROR)

    assert errors == [f"{tmp_path / 'data' / 'stories.yml'}:17: error: story 'thanks' names unknown intent 'thank'"]


def test_story_undefined_action(tmp_path: Path) -> None:
    project = load(
        tmp_path,
        stories="""\
        version: "3.1"
        stories:
        - story: greet
          steps:
          - intent: greet
          - action: utter_welcome
        """,
    )

    errors = lines(check(project), Severity.ERROR)

    assert errors == [f"{tmp_path / 'data' / 'stories.yml'}:6: error: story 'greet' names undefined action 'utter_welcome'"]


def test_custom_action_known(tmp_path: Path) -> None:
    project = load(
        tmp_path,
        stories="""\
        version: "3.1"
        stories:
        - story: diagnose
          steps:
          - intent: affirm
          - action: utter_ok
          - action: action_diagnose
        """,
    )

    findings = check_project(project, 3, {"action_diagnose"}, max_history=5)

    assert findings.errors == []


def test_story_undefined_slot(tmp_path: Path) -> None:
    project = load(
        tmp_path,
        stories=STORIES
        + """\
- story: profile
  steps:
  - intent: affirm
  - slot_was_set:
    - profile: parent
  - action: utter_ok
""",
    )

    errors = lines(check(project), Severity.ERROR)

    assert errors == [f"{tmp_path / 'data' / 'stories.yml'}:18: error: story 'profile' sets undefined slot 'profile'"]


def test_intent_missing_from_domain(tmp_path: Path) -> None:
    project = load(
        tmp_path,
        nlu=NLU
        + """\
- intent: thank
  examples: |
    - merci
""",
    )

    errors = lines(check(project), Severity.ERROR)

    assert errors == [
        f"{tmp_path / 'data' / 'nlu.yml'}:20: error: intent 'thank' has examples but is not in the domain's intents"
    ]


def test_entity_missing_from_domain(tmp_path: Path) -> None:
    project = load(
        tmp_path,
        nlu=NLU
        + """\
- lookup: city
  examples: |
    - Lyon
""",
    )

    errors = lines(check(project), Severity.ERROR)

    assert errors == [
        f"{tmp_path / 'data' / 'nlu.yml'}:18: error: entity 'city' is used in the NLU data but not declared in the domain"
    ]


def test_button_unknown_intent(tmp_path: Path) -> None:
    project = load(
        tmp_path,
        domain=DOMAIN
        + """\
  utter_ask_profile:
  - text: "Vous êtes ?"
    buttons:
    - title: Parent
      payload: '/inform_profile{"profile": "parent"}'
""",
        stories="""\
        version: "3.1"
        stories:
        - story: ask
          steps:
          - intent: greet
          - action: utter_greet
          - action: utter_ask_profile
        """,
    )

    errors = lines(check(project), Severity.ERROR)

    assert errors == [
        f"{tmp_path / 'domain.yml'}:22: error: response 'utter_ask_profile': button payload names unknown intent 'inform_profile'"
    ]


def test_form_undefined_slot(tmp_path: Path) -> None:
    project = load(
        tmp_path,
        domain=DOMAIN
        + """\
forms:
  school_form:
    required_slots:
    - uai
""",
    )

    errors = lines(check(project), Severity.ERROR)

    assert errors == [f"{tmp_path / 'domain.yml'}:22: error: form 'school_form' requires undefined slot 'uai'"]


# ----- duplicates and contradictions -----


def test_example_under_two_intents(tmp_path: Path) -> None:
    project = load(
        tmp_path,
        nlu=NLU
        + """\
- intent: greet
  examples: |
    - OK
""",
    )
    nlu = tmp_path / "data" / "nlu.yml"

    errors = lines(check(project), Severity.ERROR)

    assert errors == [f"{nlu}:20: error: example 'OK' is under intent 'greet' and under 'affirm' at {nlu}:17"]


def test_same_example_same_intent_allowed(tmp_path: Path) -> None:
    project = load(
        tmp_path,
        nlu=NLU
        + """\
- intent: greet
  examples: |
    - Bonjour
""",
    )

    assert check(project).errors == []


def test_contradicting_stories(tmp_path: Path) -> None:
    project = load(
        tmp_path,
        stories=STORIES
        + """\
- story: greet differently
  steps:
  - intent: greet
  - action: utter_ok
""",
    )
    stories = tmp_path / "data" / "stories.yml"

    errors = lines(check(project), Severity.ERROR)

    assert errors == [
        f"{stories}:15: error: story 'greet differently' predicts 'utter_ok' where story 'greet' "
        f"({stories}:3) predicts 'utter_greet' after the same conversation"
    ]


def test_contradicting_rules(tmp_path: Path) -> None:
    project = load(
        tmp_path,
        rules="""\
        version: "3.1"
        rules:
        - rule: goodbye
          steps:
          - intent: goodbye
          - action: utter_goodbye
        - rule: goodbye politely
          steps:
          - intent: goodbye
          - action: utter_ok
        """,
    )

    errors = lines(check(project), Severity.ERROR)

    assert len(errors) == 1
    assert errors[0].startswith(f"{tmp_path / 'data' / 'rules.yml'}:7: error: rule 'goodbye politely' predicts 'utter_ok'")


def test_diverging_after_different_history(tmp_path: Path) -> None:
    project = load(
        tmp_path,
        stories=STORIES
        + """\
- story: greet then agree
  steps:
  - intent: greet
  - action: utter_greet
  - intent: affirm
  - action: utter_goodbye
""",
    )

    assert check(project).errors == []


# ----- warnings -----


def test_too_few_examples(tmp_path: Path) -> None:
    project = load(tmp_path)

    warnings = lines(check(project, min_examples=4), Severity.WARNING)

    assert f"{tmp_path / 'domain.yml'}:3: warning: intent 'greet' has 3 examples; at least 4 are advised" in warnings
    assert len(warnings) == 3


def test_intent_without_examples(tmp_path: Path) -> None:
    project = load(tmp_path, domain=DOMAIN.replace("  - affirm\n", "  - affirm\n  - thank\n"))

    warnings = lines(check(project), Severity.WARNING)

    assert warnings == [f"{tmp_path / 'domain.yml'}:6: warning: intent 'thank' is in the domain but has no examples"]


def test_unused_response(tmp_path: Path) -> None:
    project = load(tmp_path, domain=DOMAIN + '  utter_unused:\n  - text: "Jamais dit."\n')

    warnings = lines(check(project), Severity.WARNING)

    assert warnings == [f"{tmp_path / 'domain.yml'}:21: warning: response 'utter_unused' is never used in stories or rules"]


def test_response_image_unsupported(tmp_path: Path) -> None:
    project = load(
        tmp_path,
        domain=DOMAIN.replace(
            '  - text: "Très bien."\n',
            '  - text: "Très bien."\n    image: "https://ent.example.fr/ok.png"\n',
        ),
    )

    warnings = lines(check(project), Severity.WARNING)

    assert warnings == [f"{tmp_path / 'domain.yml'}:21: warning: response 'utter_ok': 'image' is not supported and is ignored"]


def test_nlu_block_metadata_unsupported(tmp_path: Path) -> None:
    project = load(
        tmp_path,
        nlu=NLU
        + """\
- intent: greet
  metadata:
    sentiment: neutral
  examples: |
    - hello
""",
    )

    warnings = lines(check(project), Severity.WARNING)

    assert warnings == [f"{tmp_path / 'data' / 'nlu.yml'}:19: warning: block-level 'metadata' is not used by entraide and is ignored"]


def test_story_metadata_unsupported(tmp_path: Path) -> None:
    project = load(
        tmp_path,
        stories=STORIES
        + """\
- story: annotated
  metadata:
    author: equipe
  steps:
  - intent: greet
  - action: utter_greet
""",
    )

    warnings = lines(check(project), Severity.WARNING)

    assert warnings == [f"{tmp_path / 'data' / 'stories.yml'}:16: warning: story 'annotated': metadata is ignored"]


def test_domain_config_unsupported(tmp_path: Path) -> None:
    project = load(tmp_path, domain=DOMAIN + "config:\n  store_entities_as_slots: true\n")

    warnings = lines(check(project), Severity.WARNING)

    assert warnings == [f"{tmp_path / 'domain.yml'}:21: warning: domain key 'config' is not supported and is ignored"]


def test_loader_warnings_come_first(tmp_path: Path) -> None:
    project = load(tmp_path, domain=DOMAIN + "config:\n  store_entities_as_slots: true\n")

    findings = check(project, min_examples=4)

    assert findings.items[0].message == "domain key 'config' is not supported and is ignored"


# ----- checkpoints and OR-steps -----


def test_checkpoints_join_stories(tmp_path: Path) -> None:
    project = load(
        tmp_path,
        stories="""\
        version: "3.1"
        stories:
        - story: opening
          steps:
          - intent: greet
          - action: utter_greet
          - checkpoint: greeted
        - story: then agree
          steps:
          - checkpoint: greeted
          - intent: affirm
          - action: utter_ok
        - story: then leave
          steps:
          - checkpoint: greeted
          - intent: goodbye
          - action: utter_goodbye
        """,
    )

    flat = expand(project.stories)
    names = [[getattr(step, "intent", None) or step.name for step in steps] for _, steps in flat]

    assert names == [
        ["greet", "utter_greet", "affirm", "utter_ok"],
        ["greet", "utter_greet", "goodbye", "utter_goodbye"],
    ]
    assert {story.name for story, _ in flat} == {"opening"}


def test_or_steps_unfold(tmp_path: Path) -> None:
    project = load(
        tmp_path,
        stories="""\
        version: "3.1"
        stories:
        - story: agree or leave
          steps:
          - intent: greet
          - action: utter_greet
          - or:
            - intent: affirm
            - intent: goodbye
          - action: utter_ok
        """,
    )

    flat = expand(project.stories)
    third_steps = [steps[2] for _, steps in flat]

    assert len(flat) == 2
    assert [step.intent for step in third_steps] == ["affirm", "goodbye"]
    assert all(isinstance(steps[3], ActionStep) for _, steps in flat)


def test_or_with_slots(tmp_path: Path) -> None:
    project = load(
        tmp_path,
        stories="""\
        version: "3.1"
        stories:
        - story: school known
          steps:
          - intent: greet
          - or:
            - slot_was_set:
              - school: 0751234A
            - intent: affirm
          - action: utter_ok
        """,
    )

    flat = expand(project.stories)

    assert isinstance(flat[0][1][1], SlotStep)
    assert isinstance(flat[1][1][1], UserStep)


def test_checkpoints_and_or_multiply(tmp_path: Path) -> None:
    project = load(
        tmp_path,
        stories="""\
        version: "3.1"
        stories:
        - story: opening
          steps:
          - or:
            - intent: greet
            - intent: affirm
          - action: utter_greet
          - checkpoint: opened
        - story: leave
          steps:
          - checkpoint: opened
          - or:
            - intent: goodbye
            - intent: affirm
          - action: utter_goodbye
        """,
    )

    assert len(expand(project.stories)) == 4


def test_checkpoint_loop_raises(tmp_path: Path) -> None:
    project = load(
        tmp_path,
        stories="""\
        version: "3.1"
        stories:
        - story: start
          steps:
          - intent: greet
          - action: utter_greet
          - checkpoint: again
        - story: loop
          steps:
          - checkpoint: again
          - intent: affirm
          - action: utter_ok
          - checkpoint: again
        """,
    )

    with pytest.raises(TrainingDataError, match="checkpoints expand without end"):
        expand(project.stories)


def test_contradiction_after_checkpoint(tmp_path: Path) -> None:
    project = load(
        tmp_path,
        stories=STORIES
        + """\
- story: opening
  steps:
  - intent: affirm
  - action: utter_ok
  - checkpoint: agreed
- story: follow-up
  steps:
  - checkpoint: agreed
  - or:
    - intent: greet
    - intent: goodbye
  - action: utter_greet
- story: direct
  steps:
  - intent: affirm
  - action: utter_ok
  - intent: goodbye
  - action: utter_goodbye
""",
    )
    stories = tmp_path / "data" / "stories.yml"

    errors = lines(check(project), Severity.ERROR)

    assert errors == [
        f"{stories}:27: error: story 'direct' predicts 'utter_goodbye' where story 'opening' "
        f"({stories}:15) predicts 'utter_greet' after the same conversation"
    ]
