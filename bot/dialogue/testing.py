"""``entraide test stories``: replay conversation tests written in Rasa's test-story format."""

from __future__ import annotations

import json
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from bot.config import Settings
from bot.data.project import load_test_stories
from bot.data.stories import ActionStep, BotTextStep, LoopStep, SlotStep, Step, Story, UserStep
from bot.dialogue.events import ActionExecuted, ActiveLoop, BotUttered, SlotSet, UserUttered
from bot.messages import IncomingMessage
from bot.outbox import CollectingOutput

IGNORED_ACTIONS = {"action_listen", "action_session_start"}


@dataclass
class StoryFailure:
    story: Story
    step: Step
    expected: str
    actual: str

    def __str__(self) -> str:
        location = self.step.location or self.story.location
        return f"{location}: test story {self.story.name!r}: expected {self.expected}, got {self.actual}"


@dataclass
class StoryReport:
    passed: list[Story] = field(default_factory=list)
    failed: list[StoryFailure] = field(default_factory=list)


def _user_text(step: UserStep) -> str:
    if step.text is not None:
        return step.text.strip()
    entities = {name: value for name, value in step.entities if value is not ...}
    return f"/{step.intent}" + (json.dumps(entities, ensure_ascii=False) if entities else "")


async def replay(settings: Settings, stories: list[Story]) -> StoryReport:
    """Play each test story in a fresh conversation of a throw-away database."""
    from bot.runtime import Runtime

    report = StoryReport()
    with tempfile.TemporaryDirectory(prefix="entraide-stories-") as folder:
        settings = settings.model_copy(deep=True)
        settings.storage.url = f"sqlite+aiosqlite:///{Path(folder) / 'stories.db'}"
        async with Runtime(settings, seed=0) as runtime:
            runtime.outbox.register(CollectingOutput("test"))
            for number, story in enumerate(stories):
                failure = await _play(runtime, story, f"test-{number}")
                if failure is None:
                    report.passed.append(story)
                else:
                    report.failed.append(failure)
    return report


async def _play(runtime, story: Story, sender: str) -> StoryFailure | None:
    steps = list(story.steps)
    index = 0
    # Steps before the first user message describe the conversation start: nothing to send.
    while index < len(steps) and not isinstance(steps[index], UserStep):
        index += 1
    while index < len(steps):
        user_step = steps[index]
        assert isinstance(user_step, UserStep)
        index += 1
        expected: list[Step] = []
        while index < len(steps) and not isinstance(steps[index], UserStep):
            expected.append(steps[index])
            index += 1

        conversation = await runtime.store.conversation("test", sender)
        before = conversation.last_seq
        await runtime.assistant.handle(IncomingMessage(channel="test", sender_id=sender, text=_user_text(user_step)))
        events = [stored.event for stored in await runtime.store.events(conversation.id, since=before)]

        user = next((event for event in events if isinstance(event, UserUttered)), None)
        actual_intent = user.intent if user else None
        if actual_intent != user_step.intent:
            return StoryFailure(story, user_step, f"intent {user_step.intent!r}", f"{actual_intent!r}")

        actions = [event.name for event in events if isinstance(event, ActionExecuted) and event.name not in IGNORED_ACTIONS]
        texts = [event.text for event in events if isinstance(event, BotUttered)]
        slots = {event.name: event.value for event in events if isinstance(event, SlotSet)}
        loops = [event.name for event in events if isinstance(event, ActiveLoop)]
        position = 0
        for step in expected:
            if isinstance(step, ActionStep):
                if step.name in IGNORED_ACTIONS:
                    continue
                actual = actions[position] if position < len(actions) else "no further action"
                if actual != step.name:
                    return StoryFailure(story, step, f"action {step.name!r}", repr(actual) if position < len(actions) else actual)
                position += 1
            elif isinstance(step, SlotStep):
                for name, value in step.slots:
                    if name not in slots or (value is not ... and slots[name] != value):
                        got = repr(slots[name]) if name in slots else "not set in this turn"
                        return StoryFailure(story, step, f"slot {name!r} = {value!r}", got)
            elif isinstance(step, LoopStep):
                if step.name not in loops:
                    return StoryFailure(story, step, f"active_loop {step.name!r}", f"{loops or 'no change'}")
            elif isinstance(step, BotTextStep):
                if step.text.strip() not in [text.strip() for text in texts]:
                    return StoryFailure(story, step, f"bot text {step.text!r}", f"{texts}")
        if position < len(actions):
            return StoryFailure(story, expected[-1] if expected else user_step, "no further action", repr(actions[position]))
    return None


async def run_story_tests(settings: Settings, path: Path | None = None) -> int:
    """Run the test stories and print each failure with the step that differs; return the exit code."""
    stories = load_test_stories(settings, path)
    report = await replay(settings, stories)
    for failure in report.failed:
        print(failure)
    print(f"{len(report.passed)} passed, {len(report.failed)} failed")
    sys.stdout.flush()
    return 1 if report.failed else 0
