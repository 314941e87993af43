"""``entraide check``: find what is referenced but not defined, unused, too thin or contradictory."""

from __future__ import annotations

from collections import defaultdict

from bot.data.findings import Findings, Location
from bot.data.names import BUILTIN_SLOTS, DEFAULT_ACTIONS, DEFAULT_INTENTS, DEFAULT_RESPONSES
from bot.data.project import Project
from bot.data.stories import ActionStep, LoopStep, OrStep, SlotStep, Story, UserStep, expand
from bot.dialogue.states import StateBuilder, items_from_steps
from bot.nlu.normalize import Normalizer


def check_project(
    project: Project, min_examples: int, custom_actions: set[str], max_history: int, custom_responses: set[str] = frozenset()
) -> Findings:
    """Return every finding about ``project``, the loader's warnings first."""
    findings = Findings(list(project.findings.items))
    domain = project.domain
    training = project.training
    domain_file = next(iter(domain.locations.values()), Location(project.files[0] if project.files else "domain.yml"))

    known_intents = set(domain.intents) | DEFAULT_INTENTS
    known_actions = (
        set(domain.responses) | set(domain.actions) | set(domain.forms) | DEFAULT_ACTIONS | custom_actions
    )
    known_slots = set(domain.slots) | BUILTIN_SLOTS
    used_responses: set[str] = set(custom_responses)

    # NLU data against the domain.
    for intent in training.intents:
        if intent not in domain.intents:
            findings.error(training.locations.get(f"intent:{intent}", domain_file), f"intent {intent!r} has examples but is not in the domain's intents")
    counts = defaultdict(int)
    for example in training.examples:
        counts[example.intent] += 1
    for intent in domain.intents:
        location = domain.locations.get(f"intent:{intent}", domain_file)
        if counts[intent] == 0:
            findings.warn(location, f"intent {intent!r} is in the domain but has no examples")
        elif counts[intent] < min_examples:
            findings.warn(location, f"intent {intent!r} has {counts[intent]} examples; at least {min_examples} are advised")
    for entity in training.entity_names:
        if entity not in domain.entities:
            findings.error(training.locations.get(f"regex:{entity}", training.locations.get(f"lookup:{entity}", domain_file)), f"entity {entity!r} is used in the NLU data but not declared in the domain")

    # The same sentence under two intents confuses the classifier.
    normalizer = Normalizer(training.spellings)
    seen: dict[str, object] = {}
    for example in training.examples:
        key = normalizer.normalize(example.text)
        previous = seen.get(key)
        if previous is None:
            seen[key] = example
        elif previous.full_intent != example.full_intent:
            findings.error(
                example.location,
                f"example {example.text!r} is under intent {example.full_intent!r} and under {previous.full_intent!r} at {previous.location}",
            )

    # Slots, forms and responses.
    for slot in domain.slots.values():
        for mapping in slot.mappings:
            if mapping.entity and mapping.entity not in domain.entities:
                findings.error(slot.location, f"slot {slot.name!r} maps from unknown entity {mapping.entity!r}")
            for intent in mapping.intent + mapping.not_intent:
                if intent not in known_intents:
                    findings.error(slot.location, f"slot {slot.name!r} maps from unknown intent {intent!r}")
            for condition in mapping.conditions:
                if condition.active_loop and condition.active_loop not in domain.forms:
                    findings.error(slot.location, f"slot {slot.name!r}: condition names unknown form {condition.active_loop!r}")
    for form in domain.forms.values():
        for slot_name in form.required_slots:
            if slot_name not in domain.slots:
                findings.error(form.location, f"form {form.name!r} requires undefined slot {slot_name!r}")
            elif f"utter_ask_{slot_name}" not in domain.responses and f"utter_ask_{form.name}_{slot_name}" not in domain.responses:
                findings.error(form.location, f"form {form.name!r}: no response utter_ask_{slot_name} to ask for slot {slot_name!r}")
            used_responses.add(f"utter_ask_{slot_name}")
            used_responses.add(f"utter_ask_{form.name}_{slot_name}")
            used_responses.add(f"utter_invalid_{slot_name}")
    for name, variations in domain.responses.items():
        for variation in variations:
            for slot_name, _ in variation.conditions:
                if slot_name not in known_slots:
                    findings.error(variation.location or domain_file, f"response {name!r}: condition on undefined slot {slot_name!r}")
            for button in variation.buttons:
                intent = button.payload[1:].split("{", 1)[0].split("/", 1)[0] if button.payload.startswith("/") else None
                if intent is not None and intent not in known_intents:
                    findings.error(variation.location or domain_file, f"response {name!r}: button payload names unknown intent {intent!r}")

    # Stories and rules.
    for story in project.stories:
        for step in _all_steps(story):
            location = step.location or story.location
            if isinstance(step, UserStep) and step.intent not in known_intents and step.intent.split("/")[0] not in known_intents:
                findings.error(location, f"{story.kind} {story.name!r} names unknown intent {step.intent!r}")
            elif isinstance(step, ActionStep):
                used_responses.add(step.name)
                if step.name not in known_actions and not _retrieval_action(step.name, domain.responses):
                    findings.error(location, f"{story.kind} {story.name!r} names undefined action {step.name!r}")
            elif isinstance(step, LoopStep) and step.name and step.name not in domain.forms and step.name not in DEFAULT_ACTIONS:
                findings.error(location, f"{story.kind} {story.name!r}: active_loop names unknown form {step.name!r}")
            elif isinstance(step, SlotStep):
                for slot_name, _ in step.slots:
                    if slot_name not in known_slots:
                        findings.error(location, f"{story.kind} {story.name!r} sets undefined slot {slot_name!r}")

    for name in domain.responses:
        if name in used_responses or name in DEFAULT_RESPONSES or "/" in name:
            continue
        if name.startswith("utter_title_") or name.startswith("utter_invalid_"):
            continue
        findings.warn(domain.locations.get(f"response:{name}", domain_file), f"response {name!r} is never used in stories or rules")

    _check_contradictions(project, findings, max_history)
    return findings


def _retrieval_action(name: str, responses: dict) -> bool:
    return any(key.startswith(name + "/") for key in responses)


def _all_steps(story: Story):
    for step in story.condition + story.steps:
        if isinstance(step, OrStep):
            yield from step.alternatives
        else:
            yield step


def _check_contradictions(project: Project, findings: Findings, max_history: int) -> None:
    """Report stories (or rules) whose same history leads to different next actions."""
    for kind in ("story", "rule"):
        chosen: dict[tuple, tuple[str, Story]] = {}
        for story, steps in expand([story for story in project.stories if story.kind == kind]):
            if kind == "rule":
                builder = StateBuilder(project.domain, partial=True, initial=items_from_steps(story.condition))
                items = items_from_steps(steps)
                builder.feed(items, first_action_is_context=bool(items) and isinstance(steps[0], ActionStep))
                pairs = builder.finish(listen=story.wait_for_user_input)
            else:
                builder = StateBuilder(project.domain, partial=False)
                builder.feed(items_from_steps(steps))
                pairs = builder.finish()
            for history, action in pairs:
                key = history[-max_history:] if kind == "story" else history
                if kind == "rule":
                    key = (story.conversation_start, key)
                previous = chosen.get(key)
                if previous is None:
                    chosen[key] = (action, story)
                elif previous[0] != action:
                    findings.error(
                        story.location,
                        f"{kind} {story.name!r} predicts {action!r} where {previous[1].kind} {previous[1].name!r} "
                        f"({previous[1].location}) predicts {previous[0]!r} after the same conversation",
                    )
