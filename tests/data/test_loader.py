"""Tests for the Rasa-format loader: bot.data.project, training, domain and stories."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from bot.config import Settings, load_settings
from bot.data import load_project, load_test_stories
from bot.data.stories import ActionStep, UserStep
from bot.data.training import parse_annotated
from bot.errors import TrainingDataError
from bot.nlu import train
from bot.nlu.files import retrieval_responses

RASA_PROJECT = Path(__file__).parent / "rasa_project"

CONFIG = """\
data:
  nlu: data
  stories: data
  domain: domain.yml
  tests: tests
nlu:
  min_examples: 3
"""

DOMAIN = """\
version: "3.1"
intents:
  - greet
  - faq
responses:
  utter_greet:
  - text: "Bonjour !"
  utter_faq/ask_vacation:
  - text: "Les vacances commencent le 20 décembre."
  utter_faq/ask_canteen:
  - text: "La cantine ouvre à midi."
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
- intent: faq/ask_vacation
  examples: |
    - quand sont les vacances
    - date des vacances scolaires
    - les vacances de noel commencent quand
    - c'est quand les vacances
- intent: faq/ask_canteen
  examples: |
    - la cantine ouvre a quelle heure
    - horaires de la cantine
    - menu de la cantine
    - a quelle heure on mange a la cantine
"""

RULES = """\
version: "3.1"
rules:
- rule: answer a question
  steps:
  - intent: faq
  - action: utter_faq
- rule: greet
  steps:
  - intent: greet
  - action: utter_greet
"""


def write_project(folder: Path, **files: str) -> Settings:
    """Write a small project (config, domain, NLU data and rules) and return its settings.

    Keyword arguments replace or add files: ``nlu="..."`` writes ``data/nlu.yml``,
    ``domain="..."`` writes ``domain.yml``, any other name writes ``data/<name>.yml``.
    """
    contents = {"domain": DOMAIN, "nlu": NLU, "rules": RULES, **files}
    (folder / "data").mkdir(parents=True, exist_ok=True)
    (folder / "config.yml").write_text(CONFIG, encoding="utf-8")
    for name, text in contents.items():
        path = folder / "domain.yml" if name == "domain" else folder / "data" / f"{name}.yml"
        path.write_text(textwrap.dedent(text), encoding="utf-8")
    return load_settings(folder / "config.yml")


@pytest.fixture(scope="module")
def rasa_settings() -> Settings:
    return load_settings(RASA_PROJECT / "config.yml")


# ----- the plain Rasa project -----


def test_rasa_project_examples_count(rasa_settings: Settings) -> None:
    project = load_project(rasa_settings)

    assert len(project.training.examples) == 36


def test_rasa_project_intents(rasa_settings: Settings) -> None:
    project = load_project(rasa_settings)

    assert project.training.intents == ["affirm", "deny", "goodbye", "greet", "inform", "mood_great"]


def test_rasa_project_no_findings(rasa_settings: Settings) -> None:
    project = load_project(rasa_settings)

    assert project.findings.items == []


def test_rasa_project_synonym(rasa_settings: Settings) -> None:
    project = load_project(rasa_settings)

    assert project.training.synonyms["paname"] == "Paris"


def test_rasa_project_lookup(rasa_settings: Settings) -> None:
    project = load_project(rasa_settings)

    assert project.training.lookups["city"] == ["Paris", "Lyon", "Marseille", "Lille", "Toulouse"]


def test_rasa_project_long_form(rasa_settings: Settings) -> None:
    project = load_project(rasa_settings)
    mood = [example.text for example in project.training.examples if example.intent == "mood_great"]

    assert mood == ["perfect", "great", "amazing", "feeling like a king", "wonderful", "I am feeling very good"]


def test_rasa_project_example_lines(rasa_settings: Settings) -> None:
    project = load_project(rasa_settings)
    by_text = {example.text: example for example in project.training.examples}

    assert by_text["hey"].location.line == 5
    assert by_text["great"].location.line == 39
    assert by_text["hey"].location.path == RASA_PROJECT / "data" / "nlu.yml"


def test_rasa_project_json_annotation(rasa_settings: Settings) -> None:
    project = load_project(rasa_settings)
    example = next(item for item in project.training.examples if item.text == "my city is Lyon")
    span = example.entities[0]

    assert (span.entity, span.value, span.start, span.end) == ("city", "Lyon", 11, 15)


def test_rasa_project_json_annotation_value(rasa_settings: Settings) -> None:
    project = load_project(rasa_settings)
    example = next(item for item in project.training.examples if item.text == "from paname")
    span = example.entities[0]

    assert (span.entity, span.value, span.text, span.start, span.end) == ("city", "Paris", "paname", 5, 11)


def test_rasa_project_short_annotation(rasa_settings: Settings) -> None:
    project = load_project(rasa_settings)
    example = next(item for item in project.training.examples if item.text == "Lille")
    span = example.entities[0]

    assert (span.entity, span.value, span.start, span.end) == ("city", "Lille", 0, 5)


def test_rasa_project_domain(rasa_settings: Settings) -> None:
    domain = load_project(rasa_settings).domain

    assert sorted(domain.responses) == ["utter_city", "utter_goodbye", "utter_greet", "utter_happy"]
    assert domain.slots["city"].mappings[0].entity == "city"
    assert [button.payload for button in domain.responses["utter_greet"][0].buttons] == ["/mood_great", "/deny"]


def test_rasa_project_stories_and_rules(rasa_settings: Settings) -> None:
    project = load_project(rasa_settings)

    assert len(project.stories) == 4
    assert len(project.rules) == 2


def test_rasa_project_story_entities(rasa_settings: Settings) -> None:
    project = load_project(rasa_settings)
    story = next(item for item in project.stories if item.name == "say where")

    assert story.steps[0] == UserStep("inform", (("city", "Paris"),), None, story.steps[0].location)


def test_rasa_project_test_stories(rasa_settings: Settings) -> None:
    stories = load_test_stories(rasa_settings)

    assert [step.text.strip() for step in stories[0].steps if isinstance(step, UserStep)] == ["hello there", "amazing"]


def test_rasa_project_trains(rasa_settings: Settings) -> None:
    project = load_project(rasa_settings)
    model = train(project.training, rasa_settings.nlu)

    assert model.intents.classes == project.training.intents
    assert model.parse("hello there")["intent"]["name"] == "greet"


def test_rasa_project_parses_entity(rasa_settings: Settings) -> None:
    project = load_project(rasa_settings)
    model = train(project.training, rasa_settings.nlu)

    entities = model.parse("I live in Toulouse")["entities"]

    assert [(item["entity"], item["value"]) for item in entities] == [("city", "Toulouse")]


# ----- annotations -----


def test_annotation_offsets_several() -> None:
    text, spans = parse_annotated('de [Lyon](city) à [paname]{"entity": "city", "value": "Paris"} demain')

    assert text == "de Lyon à paname demain"
    assert [(span.start, span.end) for span in spans] == [(3, 7), (10, 16)]
    assert [text[span.start : span.end] for span in spans] == ["Lyon", "paname"]
    assert [span.value for span in spans] == ["Lyon", "Paris"]


def test_annotation_short_value() -> None:
    _, spans = parse_annotated("je suis [maman](profile:parent)")

    assert spans[0].value == "parent"
    assert spans[0].text == "maman"


def test_annotation_role_and_group() -> None:
    _, spans = parse_annotated('de [Lyon]{"entity": "city", "role": "departure", "group": "1"}')

    assert spans[0].role == "departure"
    assert spans[0].group == "1"


def test_annotation_invalid_json() -> None:
    with pytest.raises(ValueError, match="not valid JSON"):
        parse_annotated('[Lyon]{"entity": city}')


def test_annotation_value_becomes_synonym(tmp_path: Path) -> None:
    settings = write_project(
        tmp_path,
        nlu=NLU
        + """\
- intent: greet
  examples: |
    - bonjour de la part d'une [maman]{"entity": "profile", "value": "parent"}
""",
    )

    assert load_project(settings).training.synonyms["maman"] == "parent"


# ----- retrieval intents -----


def test_retrieval_intent_split(tmp_path: Path) -> None:
    project = load_project(write_project(tmp_path))
    example = next(item for item in project.training.examples if item.text == "horaires de la cantine")

    assert example.intent == "faq"
    assert example.response_key == "ask_canteen"
    assert example.full_intent == "faq/ask_canteen"


def test_retrieval_intents_listed(tmp_path: Path) -> None:
    project = load_project(write_project(tmp_path))

    assert project.training.retrieval_intents() == {"faq": ["ask_canteen", "ask_vacation"]}


def test_retrieval_responses_collected(tmp_path: Path) -> None:
    project = load_project(write_project(tmp_path))

    assert retrieval_responses(project)["faq/ask_canteen"] == [{"text": "La cantine ouvre à midi."}]


def test_retrieval_parse_response_selector(tmp_path: Path) -> None:
    settings = write_project(tmp_path)
    project = load_project(settings)
    model = train(project.training, settings.nlu, retrieval_responses=retrieval_responses(project))

    result = model.parse("les vacances commencent quand ?")
    selected = result["response_selector"]["faq"]["response"]

    assert result["intent"]["name"] == "faq"
    assert result["response_selector"]["all_retrieval_intents"] == ["faq"]
    assert selected["intent_response_key"] == "faq/ask_vacation"
    assert selected["responses"] == [{"text": "Les vacances commencent le 20 décembre."}]
    assert selected["utter_action"] == "utter_faq"


def test_responses_in_data_file(tmp_path: Path) -> None:
    settings = write_project(
        tmp_path,
        responses="""\
        version: "3.1"
        responses:
          utter_faq/ask_bus:
          - text: "Le bus passe à 7 h 30."
        """,
    )

    assert "utter_faq/ask_bus" in load_project(settings).domain.responses


# ----- spelling and file layout -----


def test_spelling_block(tmp_path: Path) -> None:
    settings = write_project(
        tmp_path,
        spelling="""\
        version: "3.1"
        spelling:
          MDP: Mot de passe
        """,
    )

    assert load_project(settings).training.spellings == {"mdp": "mot de passe"}


def test_files_loaded_in_sorted_order(tmp_path: Path) -> None:
    settings = write_project(
        tmp_path,
        nlu="""\
        version: "3.1"
        nlu:
        - intent: faq/ask_vacation
          examples: |
            - quand sont les vacances
        """,
        a_greet="""\
        version: "3.1"
        nlu:
        - intent: greet
          examples: |
            - bonjour
        """,
    )

    assert [example.text for example in load_project(settings).training.examples] == ["bonjour", "quand sont les vacances"]


# ----- malformed data -----


def test_malformed_yaml_names_file_and_line(tmp_path: Path) -> None:
    settings = write_project(
        tmp_path,
        nlu="""\
        version: "3.1"
        nlu:
        - intent: greet
          examples: |
            - bonjour
        - intent: [faq
          examples: |
            - quand sont les vacances
        """,
    )

    with pytest.raises(TrainingDataError) as caught:
        load_project(settings)

    message = str(caught.value)
    assert message.startswith(f"{tmp_path / 'data' / 'nlu.yml'}:")
    assert "invalid YAML" in message
    assert message.count("\n") == 0


def test_malformed_yaml_line_number(tmp_path: Path) -> None:
    settings = write_project(
        tmp_path,
        nlu="""\
        version: "3.1"
        nlu:
        - intent: greet
          examples: |
            - bonjour
          examples: |
            - salut
        """,
    )

    with pytest.raises(TrainingDataError) as caught:
        load_project(settings)

    assert str(caught.value).startswith(f"{tmp_path / 'data' / 'nlu.yml'}:6:")


def test_unknown_key_in_nlu_block(tmp_path: Path) -> None:
    settings = write_project(
        tmp_path,
        nlu=NLU
        + """\
- intent: greet
  exemples: |
    - bonjour
""",
    )

    with pytest.raises(TrainingDataError) as caught:
        load_project(settings)

    assert str(caught.value).startswith(f"{tmp_path / 'data' / 'nlu.yml'}:22:")
    assert "unknown key 'exemples'" in str(caught.value)


def test_example_without_dash(tmp_path: Path) -> None:
    settings = write_project(
        tmp_path,
        nlu="""\
        version: "3.1"
        nlu:
        - intent: greet
          examples: |
            - bonjour
            salut
        """,
    )

    with pytest.raises(TrainingDataError) as caught:
        load_project(settings)

    assert str(caught.value).startswith(f"{tmp_path / 'data' / 'nlu.yml'}:6:")


def test_block_with_two_kinds(tmp_path: Path) -> None:
    settings = write_project(
        tmp_path,
        nlu="""\
        version: "3.1"
        nlu:
        - intent: greet
          synonym: bonjour
          examples: |
            - bonjour
        """,
    )

    with pytest.raises(TrainingDataError, match=r"nlu\.yml:3: an nlu block needs exactly one of"):
        load_project(settings)


def test_invalid_regex(tmp_path: Path) -> None:
    settings = write_project(
        tmp_path,
        nlu=NLU
        + """\
- regex: school
  examples: |
    - \\d{7}[A-Z
""",
    )

    with pytest.raises(TrainingDataError) as caught:
        load_project(settings)

    assert str(caught.value).startswith(f"{tmp_path / 'data' / 'nlu.yml'}:23:")
    assert "invalid pattern" in str(caught.value)


def test_unknown_top_level_key(tmp_path: Path) -> None:
    settings = write_project(tmp_path, extra='version: "3.1"\nintents:\n  - greet\n')

    with pytest.raises(TrainingDataError, match=r"extra\.yml:2: unknown top-level key 'intents'"):
        load_project(settings)


def test_unsupported_version(tmp_path: Path) -> None:
    settings = write_project(tmp_path, extra='version: "2.0"\n')

    with pytest.raises(TrainingDataError, match=r"extra\.yml:1: version '2\.0' is not supported"):
        load_project(settings)


def test_missing_domain(tmp_path: Path) -> None:
    settings = write_project(tmp_path)
    (tmp_path / "domain.yml").unlink()

    with pytest.raises(TrainingDataError, match="domain not found"):
        load_project(settings)


def test_no_examples(tmp_path: Path) -> None:
    settings = write_project(tmp_path, nlu='version: "3.1"\nnlu: []\n')

    with pytest.raises(TrainingDataError, match="no training examples"):
        load_project(settings)


def test_unknown_domain_key(tmp_path: Path) -> None:
    settings = write_project(tmp_path, domain=DOMAIN + "templates:\n  utter_x: []\n")

    with pytest.raises(TrainingDataError, match=r"domain\.yml:12: unknown domain key 'templates'"):
        load_project(settings)


def test_unknown_story_step(tmp_path: Path) -> None:
    settings = write_project(
        tmp_path,
        rules="""\
        version: "3.1"
        rules:
        - rule: greet
          steps:
          - intent: greet
          - utter: utter_greet
        """,
    )

    with pytest.raises(TrainingDataError, match=r"rules\.yml:6: rule 'greet': unknown step"):
        load_project(settings)


def test_end_to_end_story_rejected(tmp_path: Path) -> None:
    settings = write_project(
        tmp_path,
        stories="""\
        version: "3.1"
        stories:
        - story: typed text
          steps:
          - user: bonjour
          - action: utter_greet
        """,
    )

    with pytest.raises(TrainingDataError, match=r"stories\.yml:5: .*end-to-end stories"):
        load_project(settings)


# ----- stories -----


def test_rule_condition_and_flags(tmp_path: Path) -> None:
    settings = write_project(
        tmp_path,
        rules="""\
        version: "3.1"
        rules:
        - rule: greet first
          conversation_start: true
          wait_for_user_input: false
          steps:
          - intent: greet
          - action: utter_greet
        """,
    )
    rule = load_project(settings).rules[0]

    assert rule.conversation_start is True
    assert rule.wait_for_user_input is False
    assert rule.steps[1] == ActionStep("utter_greet", rule.steps[1].location)
