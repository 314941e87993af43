"""Sliding-window rate limits, kept in memory per key (a connection or a client address)."""

from __future__ import annotations

import time
from collections import deque


class RateLimiter:
    """Allow at most ``limit`` events per ``window`` seconds for each key."""

    def __init__(self, limit: int, window: float = 60.0, max_keys: int = 100_000) -> None:
        self.limit = limit
        self.window = window
        self.max_keys = max_keys
        self._events: dict[str, deque[float]] = {}

    def allow(self, key: str, now: float | None = None) -> bool:
        now = time.monotonic() if now is None else now
        events = self._events.get(key)
        if events is None:
            if len(self._events) >= self.max_keys:
                self._prune(now)
            events = self._events[key] = deque()
        while events and now - events[0] >= self.window:
            events.popleft()
        if len(events) >= self.limit:
            return False
        events.append(now)
        return True

    def _prune(self, now: float) -> None:
        for key in [key for key, events in self._events.items() if not events or now - events[-1] >= self.window]:
            del self._events[key]


class RepeatCounter:
    """Let one report per key through every ``window`` seconds, and count the repeats in between.

    ``hit`` returns None while a key's repeats are being counted, and otherwise the number of
    repeats held back since the key's last report (0 for a first report). A log line per rejected
    request would let a flood of requests flood the log too.
    """

    def __init__(self, window: float = 60.0, max_keys: int = 10_000) -> None:
        self.window = window
        self.max_keys = max_keys
        self._reported: dict[str, tuple[float, int]] = {}

    def hit(self, key: str, now: float | None = None) -> int | None:
        now = time.monotonic() if now is None else now
        reported = self._reported.get(key)
        if reported is not None and now - reported[0] < self.window:
            self._reported[key] = (reported[0], reported[1] + 1)
            return None
        if reported is None and len(self._reported) >= self.max_keys:
            self._reported = {key: value for key, value in self._reported.items() if now - value[0] < self.window}
        self._reported[key] = (now, 0)
        return reported[1] if reported is not None else 0
