"""Policies that choose the next action, in priority order, each decision naming its policy.

1. ``RulePolicy``: the rules in ``stories/``, matched on the end of the conversation; the longest
   matching rule wins.
2. ``FormPolicy``: keeps an active form or loop running until it is filled, stopped or interrupted.
3. ``MemoizationPolicy``: the stories, matched on the last ``max_history`` states.
4. ``FallbackPolicy``: the two-stage fallback after ``nlu_fallback``, else ``action_default_fallback``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from bot.data.domain import Domain
from bot.data.stories import ActionStep, Story, expand
from bot.dialogue.events import SlotSet, UserUttered
from bot.dialogue.states import LISTEN, Pair, State, StateBuilder, items_from_steps, matches, window_matches
from bot.dialogue.tracker import Tracker
from bot.nlu.model import FALLBACK_INTENT

TWO_STAGE = "action_two_stage_fallback"
# Intents that answer a form's question rather than ask something new: the form handles them, even
# when a story elsewhere would react to them ("non" is no request for an expert inside a form).
FORM_REPLY_INTENTS = {"affirm", "deny", "inform", "inform_profile", "inform_school", FALLBACK_INTENT}


@dataclass(frozen=True)
class Prediction:
    action: str
    policy: str
    confidence: float = 1.0


@dataclass(frozen=True)
class _Rule:
    window: tuple[State, ...]
    action: str
    conversation_start: bool
    name: str
    weight: tuple[int, int] = field(init=False)
    # What the conversation's last state must contain: a subset test rules most candidates out at once.
    last_required: frozenset = field(init=False)
    mentions_loop: bool = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "weight", (len(self.window), sum(len(state) for state in self.window)))
        last = self.window[-1] if self.window else frozenset()
        object.__setattr__(self, "last_required", frozenset(feature for feature in last if not feature.startswith("!")))
        object.__setattr__(self, "mentions_loop", any(feature.startswith("loop:") for state in self.window for feature in state))


# Rules every project has; a project's own longer rules take precedence.
_DEFAULT_RULES = [
    (({"prev:action_listen", "intent:restart"},), "action_restart"),
    (({"prev:action_restart"},), LISTEN),
    (({"prev:action_listen", "intent:session_start"},), "action_session_start"),
    (({"prev:action_session_start"},), LISTEN),
]


class RulePolicy:
    name = "RulePolicy"

    def __init__(self, domain: Domain, stories: list[Story]) -> None:
        self.rules: list[_Rule] = [
            _Rule(tuple(frozenset(state) for state in window), action, False, "default")
            for window, action in _DEFAULT_RULES
        ]
        for story, steps in expand([story for story in stories if story.kind == "rule"]):
            builder = StateBuilder(domain, partial=True, initial=items_from_steps(story.condition))
            items = items_from_steps(steps)
            starts_with_action = bool(steps) and isinstance(steps[0], ActionStep)
            builder.feed(items, first_action_is_context=starts_with_action)
            for window, action in builder.finish(listen=story.wait_for_user_input):
                self.rules.append(_Rule(window, action, story.conversation_start, story.name))

    def predict(self, conversation: list[State], loop_only: bool = False) -> Prediction | None:
        best: _Rule | None = None
        last = conversation[-1] if conversation else frozenset()
        for rule in self.rules:
            if loop_only and not rule.mentions_loop:
                continue
            if rule.conversation_start and len(rule.window) != len(conversation):
                continue
            if not rule.last_required <= last or not window_matches(rule.window, conversation):
                continue
            if best is None or rule.weight > best.weight:
                best = rule
        return Prediction(best.action, self.name) if best else None


class MemoizationPolicy:
    name = "MemoizationPolicy"

    def __init__(self, domain: Domain, stories: list[Story], max_history: int) -> None:
        self.max_history = max_history
        self.memory: list[Pair] = []
        seen = set()
        for _, steps in expand([story for story in stories if story.kind == "story"]):
            builder = StateBuilder(domain, partial=False)
            builder.feed(items_from_steps(steps))
            for history, action in builder.finish():
                window = history[-max_history:]
                if (window, action) not in seen:
                    seen.add((window, action))
                    self.memory.append((window, action))

    def predict(self, conversation: list[State]) -> Prediction | None:
        best: tuple[tuple[int, int], str] | None = None
        last = conversation[-1] if conversation else None
        for window, action in self.memory:
            # Every suffix ends with the window's last state, so a window whose last state does not
            # match has no matching suffix.
            if last is None or not matches(window[-1], last):
                continue
            # Try the longest suffix of the remembered window first, down to the last state alone.
            for size in range(len(window), 0, -1):
                suffix = window[-size:]
                if window_matches(suffix, conversation):
                    score = (size, sum(len(state) for state in suffix))
                    if best is None or score > best[0]:
                        best = (score, action)
                    break
        if best is None:
            return None
        size = best[0][0]
        return Prediction(best[1], self.name, round(size / self.max_history, 3))


class PolicyEnsemble:
    """Ask each policy in priority order and return the first prediction."""

    def __init__(self, domain: Domain, stories: list[Story], max_history: int) -> None:
        self.domain = domain
        self.rules = RulePolicy(domain, stories)
        self.memo = MemoizationPolicy(domain, stories, max_history)

    def predict(self, tracker: Tracker) -> Prediction:
        conversation = tracker.states()
        user_just_spoke = tracker.user_spoke_last()
        loop = tracker.active_loop
        intent = tracker.latest_message.intent if tracker.latest_message else None

        if loop is not None:
            prediction = self._predict_in_loop(tracker, conversation, loop, user_just_spoke)
            if prediction is not None:
                return prediction

        prediction = self.rules.predict(conversation)
        if prediction is not None:
            return prediction
        prediction = self.memo.predict(conversation)
        if prediction is not None:
            return prediction

        if user_just_spoke and intent == FALLBACK_INTENT:
            return Prediction(TWO_STAGE, "FallbackPolicy")
        if user_just_spoke:
            return Prediction("action_default_fallback", "FallbackPolicy")
        return Prediction(LISTEN, "FallbackPolicy")

    def _predict_in_loop(self, tracker: Tracker, conversation: list[State], loop: str, user_just_spoke: bool) -> Prediction | None:
        if loop == TWO_STAGE:
            return Prediction(TWO_STAGE, "FormPolicy") if user_just_spoke else Prediction(LISTEN, "FormPolicy")

        # Rules written for this loop (stopping a form, for example) come first.
        prediction = self.rules.predict(conversation, loop_only=True)
        if prediction is not None:
            return prediction
        if tracker.latest_action == loop:
            return Prediction(LISTEN, "FormPolicy")
        if user_just_spoke:
            requested = tracker.requested_slot
            if requested is not None and (_filled_this_turn(tracker, requested) or requested in tracker.invalid_slots):
                return Prediction(loop, "FormPolicy")
            intent = tracker.latest_message.intent if tracker.latest_message else None
            if intent not in FORM_REPLY_INTENTS and self._answers_elsewhere(conversation):
                # Let the other policies answer the unrelated question; the form resumes after.
                return None
            return Prediction(loop, "FormPolicy")
        # An unrelated question was answered: resume the form now. The rest of that answer's rule or
        # story (its "did it help?" question, typically) would ask something that the user's next
        # message, read as the form's answer, could not reply to.
        return Prediction(loop, "FormPolicy")

    def _answers_elsewhere(self, conversation: list[State]) -> bool:
        """Tell whether a rule or story predicts an action for the message while the form is paused."""
        without_loop = [frozenset(f for f in state if not f.startswith("loop:")) for state in conversation]
        prediction = self.rules.predict(without_loop) or self.memo.predict(without_loop)
        return prediction is not None and prediction.action != LISTEN


def _filled_this_turn(tracker: Tracker, slot: str) -> bool:
    for event in reversed(tracker.session_events()):
        if isinstance(event, UserUttered):
            return False
        if isinstance(event, SlotSet) and event.name == slot and event.value is not None:
            return True
    return False
