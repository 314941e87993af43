"""Choose the desk of a request from ordered routing rules; the first match wins."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from bot.config import DeskSettings, HandoffSettings
from bot.errors import HandoffError


@dataclass(frozen=True)
class RouteQuery:
    expertise: str
    profile: str | None
    school: str | None
    channel: str
    level: int
    slots: dict[str, Any]


class Router:
    def __init__(self, settings: HandoffSettings) -> None:
        self.settings = settings
        self.desks = {desk.name: desk for desk in settings.desks}

    def desk(self, name: str) -> DeskSettings:
        try:
            return self.desks[name]
        except KeyError:
            raise HandoffError(f"unknown desk {name!r}; known desks: {', '.join(sorted(self.desks)) or 'none'}") from None

    def route(self, query: RouteQuery) -> DeskSettings | None:
        """Return the first desk whose rule matches, else the default desk, else the lowest level's first desk."""
        for rule in self.settings.routing:
            match = rule.match
            desk = self.desks[rule.desk]
            if match.level is None and desk.level < query.level:
                continue
            if match.expertise is not None and query.expertise not in match.expertise:
                continue
            if match.profile is not None and query.profile not in match.profile:
                continue
            if match.channel is not None and query.channel not in match.channel:
                continue
            if match.level is not None and query.level not in match.level:
                continue
            if match.school is not None and not (query.school and any(query.school.upper().startswith(p.upper()) for p in match.school)):
                continue
            if match.slots is not None and any(str(query.slots.get(k)) != v for k, v in match.slots.items()):
                continue
            return desk
        if self.settings.default_desk and self.desks[self.settings.default_desk].level >= query.level:
            return self.desks[self.settings.default_desk]
        candidates = sorted((d for d in self.settings.desks if d.level >= query.level), key=lambda d: d.level)
        return candidates[0] if candidates else None

    def next_level(self, query: RouteQuery) -> DeskSettings | None:
        """Return the desk for the level above ``query.level``, or None at the top."""
        higher = RouteQuery(query.expertise, query.profile, query.school, query.channel, query.level + 1, query.slots)
        if not any(desk.level >= higher.level for desk in self.settings.desks):
            return None
        return self.route(higher)
