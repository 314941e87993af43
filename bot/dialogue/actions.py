"""Actions: responses, built-in actions, forms and the custom actions named in config.yml."""

from __future__ import annotations

import importlib
import inspect
import logging
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Awaitable, Callable, Protocol

from bot.config import Settings
from bot.data.domain import Button, Form
from bot.dialogue.events import ActiveLoop, BotUttered, Event, Restarted, SessionStarted, SlotSet
from bot.dialogue.responses import ResponseRenderer
from bot.dialogue.tracker import Tracker
from bot.errors import ConfigError, DialogueError
from bot.nlu.model import FALLBACK_INTENT

if TYPE_CHECKING:
    from bot.messages import Identity

logger = logging.getLogger(__name__)

TWO_STAGE = "action_two_stage_fallback"
# Intents never offered as "did you mean" suggestions: they are not topics.
NOT_SUGGESTED = {
    FALLBACK_INTENT,
    "affirm",
    "deny",
    "greet",
    "goodbye",
    "thank",
    "stop",
    "inform",
    "inform_profile",
    "inform_school",
    "out_of_scope",
    "bot_challenge",
    "back_to_bot",
}


@dataclass
class ActionContext:
    """The tracker, responses, settings and services available to an action while it runs."""

    tracker: Tracker
    renderer: ResponseRenderer
    settings: Settings
    channel: str
    invalid_slots: set[str] = field(default_factory=set)
    identity: Identity | None = None
    services: dict[str, Any] = field(default_factory=dict)

    def utter(self, response: str, **extra_slots: Any) -> BotUttered | None:
        """Render a response into a BotUttered event; None when the domain does not define it."""
        rendered = self.renderer.render(response, {**self.tracker.slots, **extra_slots}, self.channel)
        if rendered is None:
            logger.warning("response %s is not defined for channel %s", response, self.channel)
            return None
        text, buttons = rendered
        return BotUttered(text=text, buttons=list(buttons), response=response)


@dataclass
class ActionResult:
    events: list[Event] = field(default_factory=list)
    followup: str | None = None


class Action(Protocol):
    name: str

    async def run(self, context: ActionContext) -> ActionResult: ...


class ResponseAction:
    def __init__(self, name: str) -> None:
        self.name = name

    async def run(self, context: ActionContext) -> ActionResult:
        if self.name in {f"utter_{intent}" for intent in _retrieval_intents(context)}:
            return ActionResult(_retrieval_answer(self.name, context))
        uttered = context.utter(self.name)
        return ActionResult([uttered] if uttered else [])


def _retrieval_intents(context: ActionContext) -> list[str]:
    message = context.tracker.latest_message
    if message is None:
        return []
    return list(message.parse_data.get("response_selector", {}).get("all_retrieval_intents", []))


def _retrieval_answer(name: str, context: ActionContext) -> list[Event]:
    intent = name.removeprefix("utter_")
    selector = context.tracker.latest_message.parse_data["response_selector"].get(intent, {})
    key = selector.get("response", {}).get("intent_response_key")
    uttered = context.utter(f"utter_{key}") if key else None
    return [uttered] if uttered else []


class ListenAction:
    name = "action_listen"

    async def run(self, context: ActionContext) -> ActionResult:
        return ActionResult()


class RestartAction:
    name = "action_restart"

    async def run(self, context: ActionContext) -> ActionResult:
        events: list[Event] = []
        if context.renderer.has("utter_restart"):
            uttered = context.utter("utter_restart")
            if uttered:
                events.append(uttered)
        events.append(Restarted())
        return ActionResult(events)


class SessionStartAction:
    name = "action_session_start"

    async def run(self, context: ActionContext) -> ActionResult:
        events: list[Event] = [SessionStarted()]
        if context.tracker.domain.carry_over_slots:
            events += [
                SlotSet(name, value)
                for name, value in context.tracker.slots.items()
                if value is not None and name != "requested_slot"
            ]
        return ActionResult(events)


class DefaultFallbackAction:
    name = "action_default_fallback"

    async def run(self, context: ActionContext) -> ActionResult:
        uttered = context.utter("utter_default")
        return ActionResult([uttered] if uttered else [])


class DeactivateLoopAction:
    name = "action_deactivate_loop"

    async def run(self, context: ActionContext) -> ActionResult:
        return ActionResult([ActiveLoop(None), SlotSet("requested_slot", None)])


class TwoStageFallbackAction:
    """First failure: suggest the likeliest topics as buttons. Second failure: offer an expert."""

    name = TWO_STAGE

    async def run(self, context: ActionContext) -> ActionResult:
        tracker = context.tracker
        if tracker.active_loop != TWO_STAGE:
            message = tracker.latest_message
            ranking = message.parse_data.get("intent_ranking", []) if message else []
            suggestions = [item["name"] for item in ranking if item["name"] not in NOT_SUGGESTED]
            limit = context.settings.policies.fallback_suggestions
            buttons = [Button(context.renderer.title(intent), f"/{intent}") for intent in suggestions[:limit]]
            buttons.append(Button(context.renderer.title("other"), f"/{FALLBACK_INTENT}"))
            prompt = context.utter("utter_ask_rephrase")
            events: list[Event] = [ActiveLoop(TWO_STAGE)]
            if prompt:
                prompt.buttons = buttons
                events.append(prompt)
            return ActionResult(events)
        # Still not understood: stop guessing and offer a person.
        return ActionResult([ActiveLoop(None)], followup="utter_offer_expert")


class FormAction:
    """Ask each required slot in turn with ``utter_ask_<slot>`` until all are filled."""

    def __init__(self, form: Form) -> None:
        self.form = form
        self.name = form.name

    async def run(self, context: ActionContext) -> ActionResult:
        tracker = context.tracker
        events: list[Event] = []
        if tracker.active_loop != self.name:
            events.append(ActiveLoop(self.name))
        requested = tracker.requested_slot
        answered_now = tracker.actions_this_turn() == [self.name]
        if tracker.active_loop == self.name and requested and answered_now and tracker.slots.get(requested) is None:
            # The user's message did not fill the slot, so report that before asking again.
            notice = f"utter_invalid_{requested}" if context.renderer.has(f"utter_invalid_{requested}") else "utter_form_invalid"
            uttered = context.utter(notice)
            if uttered:
                events.append(uttered)

        missing = [slot for slot in self.form.required_slots if tracker.slots.get(slot) is None]
        if not missing:
            events += [SlotSet("requested_slot", None), ActiveLoop(None)]
            return ActionResult(events)
        slot = missing[0]
        events.append(SlotSet("requested_slot", slot))
        for response in (f"utter_ask_{self.name}_{slot}", f"utter_ask_{slot}"):
            if context.renderer.has(response):
                uttered = context.utter(response)
                if uttered:
                    events.append(uttered)
                break
        else:
            raise DialogueError(f"form {self.name!r} needs a response utter_ask_{slot} to ask for slot {slot!r}")
        return ActionResult(events)


CustomCallable = Callable[[ActionContext], Awaitable[list[Event] | ActionResult | None] | list[Event] | ActionResult | None]


class CustomAction:
    """Wrap a Python callable named in ``config.yml`` (``module:function``)."""

    def __init__(self, name: str, function: CustomCallable) -> None:
        self.name = name
        self.function = function

    async def run(self, context: ActionContext) -> ActionResult:
        result = self.function(context)
        if inspect.isawaitable(result):
            result = await result
        if result is None:
            return ActionResult()
        if isinstance(result, ActionResult):
            return result
        return ActionResult(list(result))


def load_custom_actions(settings: Settings) -> dict[str, CustomAction]:
    """Import every ``module:function`` listed under ``actions`` in config.yml."""
    loaded = {}
    for name, target in settings.actions.items():
        module_name, _, attribute = target.partition(":")
        try:
            module = importlib.import_module(module_name)
            function = getattr(module, attribute)
        except (ImportError, AttributeError) as exc:
            raise ConfigError(f"actions.{name}: cannot import {target!r} ({exc}); check the module path") from None
        if not callable(function):
            raise ConfigError(f"actions.{name}: {target!r} is not callable")
        loaded[name] = CustomAction(name, function)
    return loaded


def custom_action_names(settings: Settings) -> set[str]:
    return set(settings.actions)


def custom_action_responses(actions: dict[str, CustomAction]) -> set[str]:
    """Return the responses custom actions declare in their ``uses_responses`` attribute."""
    return {name for action in actions.values() for name in getattr(action.function, "uses_responses", ())}
