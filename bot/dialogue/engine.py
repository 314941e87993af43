"""Run one user turn: extract slots, then predict and run actions until the assistant listens."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

from bot.config import Settings
from bot.data.domain import Domain
from bot.data.names import DEFAULT_ACTIONS
from bot.data.stories import Story
from bot.dialogue.actions import (
    TWO_STAGE,
    Action,
    ActionContext,
    CustomAction,
    DeactivateLoopAction,
    DefaultFallbackAction,
    FormAction,
    ListenAction,
    ResponseAction,
    RestartAction,
    SessionStartAction,
    TwoStageFallbackAction,
    load_custom_actions,
)
from bot.dialogue.events import ActionExecuted, ActiveLoop, Event, UserUttered
from bot.dialogue.handoff_action import HandoffAction
from bot.dialogue.policies import PolicyEnsemble, Prediction
from bot.dialogue.responses import ResponseRenderer
from bot.dialogue.slots import extract_slots
from bot.dialogue.states import LISTEN
from bot.dialogue.tracker import Tracker
from bot.errors import DialogueError
from bot.nlu.model import FALLBACK_INTENT

logger = logging.getLogger(__name__)


@dataclass
class TurnResult:
    events: list[Event]
    predictions: list[Prediction] = field(default_factory=list)


class DialogueEngine:
    """Holds the domain, the policies and the actions; stateless between turns."""

    def __init__(
        self,
        domain: Domain,
        stories: list[Story],
        settings: Settings,
        custom_actions: dict[str, CustomAction] | None = None,
        seed: int | None = None,
    ) -> None:
        self.domain = domain
        self.settings = settings
        self.policies = PolicyEnsemble(domain, stories, settings.policies.max_history)
        self.renderer = ResponseRenderer(domain, seed)
        self.custom_actions = custom_actions if custom_actions is not None else load_custom_actions(settings)
        builtins: list[Action] = [
            ListenAction(),
            RestartAction(),
            SessionStartAction(),
            DefaultFallbackAction(),
            DeactivateLoopAction(),
            TwoStageFallbackAction(),
            HandoffAction(),
        ]
        self.actions: dict[str, Action] = {action.name: action for action in builtins}
        self.actions.update({name: FormAction(form) for name, form in domain.forms.items()})
        self.actions.update(self.custom_actions)

    def action(self, name: str) -> Action:
        if name in self.actions:
            return self.actions[name]
        if name.startswith("utter_") or name in self.domain.responses:
            return ResponseAction(name)
        if name in DEFAULT_ACTIONS:
            raise DialogueError(f"built-in action {name!r} is not available in entraide")
        raise DialogueError(f"action {name!r} is not defined; add it to config.yml 'actions' or the domain's responses")

    def context(self, tracker: Tracker, channel: str, **extra: Any) -> ActionContext:
        return ActionContext(tracker=tracker, renderer=self.renderer, settings=self.settings, channel=channel, **extra)

    async def run_action(self, name: str, tracker: Tracker, context: ActionContext, policy: str = "engine") -> list[Event]:
        """Run one action outside prediction (session start, for example) and apply its events."""
        result = await self.action(name).run(context)
        events: list[Event] = [ActionExecuted(name, policy=policy), *result.events]
        tracker.update(events)
        return events

    async def handle_message(self, tracker: Tracker, message: UserUttered, context: ActionContext) -> TurnResult:
        """Apply ``message`` to ``tracker`` and run actions until the assistant listens again."""
        new_events: list[Event] = [message]
        tracker.update([message])

        if tracker.active_loop == TWO_STAGE and message.intent not in {FALLBACK_INTENT, None}:
            # The user picked a suggestion or wrote something clear: leave the fallback loop.
            loop_end = ActiveLoop(None)
            tracker.update([loop_end])
            new_events.append(loop_end)

        extraction = extract_slots(tracker, message, max_text_length=self.settings.channels.web.max_message_length)
        tracker.update(extraction.events)
        new_events += extraction.events
        context.invalid_slots = extraction.invalid
        tracker.invalid_slots = extraction.invalid

        predictions: list[Prediction] = []
        followup: str | None = None
        for _ in range(self.settings.policies.max_actions_per_turn):
            if followup is not None:
                prediction, followup = Prediction(followup, "followup"), None
            else:
                prediction = self.policies.predict(tracker)
            predictions.append(prediction)
            executed = ActionExecuted(prediction.action, prediction.policy, prediction.confidence)
            tracker.update([executed])
            new_events.append(executed)
            if prediction.action == LISTEN:
                break
            result = await self.action(prediction.action).run(context)
            tracker.update(result.events)
            new_events += result.events
            followup = result.followup
        else:
            logger.warning(
                "conversation %s: stopped after %d actions without listening",
                tracker.conversation_id,
                self.settings.policies.max_actions_per_turn,
            )
            executed = ActionExecuted(LISTEN, "engine")
            tracker.update([executed])
            new_events.append(executed)
        return TurnResult(new_events, predictions)
