"""Rules, memoized stories, forms and fallback, on small hand-written domains."""

from __future__ import annotations

from bot.config import Settings
from bot.dialogue.events import ActiveLoop, BotUttered, SlotSet
from tests.dialogue.helpers import Conversation, domain_from, stories_from

DOMAIN = """
version: "3.1"
intents: [greet, affirm, deny, ask_homework, human_request, stop, inform_profile, goodbye]
entities: [profile]
slots:
  profile:
    type: categorical
    values: [directeur, enseignant, parent, eleve, autre]
    influence_conversation: false
    mappings:
    - type: from_entity
      entity: profile
  description:
    type: text
    influence_conversation: false
    mappings:
    - type: from_text
      conditions:
      - active_loop: help_form
        requested_slot: description
forms:
  help_form:
    required_slots: [profile, description]
responses:
  utter_greet: [{text: "Bonjour !"}]
  utter_homework: [{text: "Le cahier de textes est dans le menu."}]
  utter_ask_helped:
  - text: "Cela vous a aidé ?"
    buttons: [{title: Oui, payload: /affirm}, {title: Non, payload: /deny}]
  utter_glad: [{text: "Tant mieux."}]
  utter_offer_expert: [{text: "Voulez-vous un conseiller ?"}]
  utter_ask_profile: [{text: "Vous êtes ?"}]
  utter_ask_description: [{text: "Décrivez le problème."}]
  utter_stopped: [{text: "D'accord, j'arrête."}]
  utter_done: [{text: "Demande prête."}]
  utter_goodbye: [{text: "Au revoir {profile}."}]
  utter_profile_answer:
  - text: "Réponse pour les parents."
    condition: [{type: slot, name: profile, value: parent}]
  - text: "Réponse générale."
"""

STORIES = """
version: "3.1"
stories:
- story: homework
  steps:
  - intent: ask_homework
  - action: utter_homework
  - action: utter_ask_helped
- story: greet then goodbye
  steps:
  - intent: greet
  - action: utter_greet
  - or:
    - intent: goodbye
    - intent: deny
  - action: utter_goodbye
rules:
- rule: helped
  steps:
  - action: utter_ask_helped
  - intent: affirm
  - action: utter_glad
- rule: not helped
  steps:
  - action: utter_ask_helped
  - intent: deny
  - action: utter_offer_expert
- rule: accept expert
  steps:
  - action: utter_offer_expert
  - intent: affirm
  - action: help_form
  - active_loop: help_form
- rule: human request
  steps:
  - intent: human_request
  - action: help_form
  - active_loop: help_form
- rule: submit
  condition:
  - active_loop: help_form
  steps:
  - action: help_form
  - active_loop: null
  - slot_was_set:
    - requested_slot: null
  - action: utter_done
- rule: stop form
  condition:
  - active_loop: help_form
  steps:
  - intent: stop
  - action: utter_stopped
  - action: action_deactivate_loop
  - active_loop: null
"""


def conversation(settings: Settings | None = None) -> Conversation:
    return Conversation(domain_from(DOMAIN), stories_from(STORIES), settings)


async def test_story_answers_question():
    chat = conversation()
    actions, _ = await chat.say("ask_homework")
    assert actions == ["utter_homework", "utter_ask_helped"]


async def test_rule_after_action_context():
    chat = conversation()
    await chat.say("ask_homework")
    actions, _ = await chat.say("deny")
    assert actions == ["utter_offer_expert"]


async def test_or_step_expands():
    chat = conversation()
    await chat.say("greet")
    actions, _ = await chat.say("deny")
    assert actions == ["utter_goodbye"]


async def test_predictions_name_policy():
    chat = conversation()
    _, result = await chat.say("ask_homework")
    policies = [prediction.policy for prediction in result.predictions]
    assert policies[0] == "MemoizationPolicy"


async def test_form_asks_each_slot():
    chat = conversation()
    first, _ = await chat.say("human_request")
    second, _ = await chat.say("inform_profile", "je suis parent", [{"entity": "profile", "value": "parent"}])
    third, _ = await chat.say("ask_homework", "je ne vois pas les devoirs")
    assert first == ["help_form"]
    assert second == ["help_form"]
    assert third == ["help_form", "utter_done"]
    assert chat.tracker.slots["description"] == "je ne vois pas les devoirs"
    assert chat.tracker.active_loop is None


async def test_form_skips_filled_slot():
    chat = conversation()
    chat.tracker.update([SlotSet("profile", "enseignant")])
    _, result = await chat.say("human_request")
    asked = [event.text for event in result.events if isinstance(event, BotUttered)]
    assert asked == ["Décrivez le problème."]


async def test_form_validates_categorical_value():
    chat = conversation()
    await chat.say("human_request")
    _, result = await chat.say("inform_profile", "je suis astronaute", [{"entity": "profile", "value": "astronaute"}])
    texts = [event.text for event in result.events if isinstance(event, BotUttered)]
    assert chat.tracker.slots["profile"] is None
    assert texts[-1] == "Vous êtes ?"
    assert any("profil" in text for text in texts[:-1])


async def test_form_unrelated_question_then_resume():
    chat = conversation()
    await chat.say("human_request")
    actions, _ = await chat.say("greet")
    assert actions[0] == "utter_greet"
    assert actions[-1] == "help_form"
    assert chat.tracker.active_loop == "help_form"


async def test_form_stopped_by_user():
    chat = conversation()
    await chat.say("human_request")
    actions, _ = await chat.say("stop")
    assert actions == ["utter_stopped", "action_deactivate_loop"]
    assert chat.tracker.active_loop is None


async def test_two_stage_fallback_suggests_then_offers_expert():
    chat = conversation()
    ranking = [
        {"name": "nlu_fallback", "confidence": 0.3},
        {"name": "ask_homework", "confidence": 0.25},
        {"name": "human_request", "confidence": 0.2},
        {"name": "greet", "confidence": 0.1},
    ]
    first, result = await chat.say("nlu_fallback", "blabla", ranking=ranking)
    suggestion = [event for event in result.events if isinstance(event, BotUttered)][-1]
    payloads = [button.payload for button in suggestion.buttons]
    second, _ = await chat.say("nlu_fallback", "toujours pas")
    assert first == ["action_two_stage_fallback"]
    assert payloads == ["/ask_homework", "/human_request", "/nlu_fallback"]
    assert second == ["action_two_stage_fallback", "utter_offer_expert"]
    assert chat.tracker.active_loop is None


async def test_two_stage_fallback_accepts_suggestion():
    chat = conversation()
    await chat.say("nlu_fallback", "blabla", ranking=[{"name": "nlu_fallback", "confidence": 0.3}, {"name": "ask_homework", "confidence": 0.2}])
    actions, result = await chat.say("ask_homework")
    assert actions == ["utter_homework", "utter_ask_helped"]
    assert any(isinstance(event, ActiveLoop) and event.name is None for event in result.events)


async def test_response_condition_on_slot():
    chat = conversation()
    context = chat.engine.context(chat.tracker, "test")
    general = context.utter("utter_profile_answer").text
    chat.tracker.update([SlotSet("profile", "parent")])
    specific = context.utter("utter_profile_answer").text
    assert general == "Réponse générale."
    assert specific == "Réponse pour les parents."


async def test_response_interpolates_slot():
    chat = conversation()
    chat.tracker.update([SlotSet("profile", "parent")])
    context = chat.engine.context(chat.tracker, "test")
    assert context.utter("utter_goodbye").text == "Au revoir parent."


async def test_unknown_message_default_fallback():
    chat = conversation()
    actions, _ = await chat.say("inform_profile")
    assert actions == ["action_default_fallback"]


async def test_restart_intent_clears_slots():
    chat = conversation()
    chat.tracker.update([SlotSet("profile", "parent")])
    actions, _ = await chat.say("restart")
    assert actions == ["action_restart"]
    assert chat.tracker.slots["profile"] is None


async def test_story_suffix_matches_later_turn():
    chat = conversation()
    actions, _ = await chat.say("goodbye")
    assert actions == ["utter_goodbye"]


async def test_max_history_limits_memory():
    settings = Settings()
    settings.policies.max_history = 1
    chat = conversation(settings)
    windows = {len(window) for window, _ in chat.engine.policies.memo.memory}
    assert windows == {1}


async def test_checkpoints_join_stories():
    stories = stories_from(
        """
version: "3.1"
stories:
- story: start
  steps:
  - intent: greet
  - action: utter_greet
  - checkpoint: greeted
- story: continue
  steps:
  - checkpoint: greeted
  - intent: ask_homework
  - action: utter_homework
"""
    )
    chat = Conversation(domain_from(DOMAIN), stories)
    await chat.say("greet")
    actions, _ = await chat.say("ask_homework")
    assert actions == ["utter_homework"]
