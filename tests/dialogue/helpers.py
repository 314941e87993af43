"""Build small domains, stories and trackers from YAML text for dialogue tests."""

from __future__ import annotations

from pathlib import Path

from ruamel.yaml import YAML

from bot.config import Settings
from bot.data.domain import Domain, load_domain_file
from bot.data.findings import Findings
from bot.data.stories import Story, load_story_file
from bot.dialogue.engine import DialogueEngine
from bot.dialogue.events import UserUttered
from bot.dialogue.tracker import Tracker


def parse_yaml(text: str):
    return YAML(typ="rt").load(text)


def domain_from(text: str) -> Domain:
    return load_domain_file(Path("domain.yml"), parse_yaml(text), Findings())


def stories_from(text: str) -> list[Story]:
    return load_story_file(Path("stories.yml"), parse_yaml(text), Findings())


def user(intent: str, text: str | None = None, entities: list[dict] | None = None, ranking: list | None = None) -> UserUttered:
    parse = {"intent": {"name": intent, "confidence": 1.0}, "intent_ranking": ranking or [{"name": intent, "confidence": 1.0}]}
    return UserUttered(text=text or f"/{intent}", intent=intent, confidence=1.0, entities=entities or [], parse_data=parse)


class Conversation:
    """Drive a DialogueEngine turn by turn without NLU or store."""

    def __init__(self, domain: Domain, stories: list[Story], settings: Settings | None = None) -> None:
        self.settings = settings or Settings()
        self.engine = DialogueEngine(domain, stories, self.settings, custom_actions={}, seed=0)
        self.tracker = Tracker("test", domain)

    async def say(self, intent: str, text: str | None = None, entities: list[dict] | None = None, ranking: list | None = None):
        """Send one user message; return the actions run (without listening) and the result."""
        context = self.engine.context(self.tracker, "test")
        result = await self.engine.handle_message(self.tracker, user(intent, text, entities, ranking), context)
        actions = [p.action for p in result.predictions if p.action != "action_listen"]
        return actions, result
