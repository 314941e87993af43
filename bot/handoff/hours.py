"""Business hours of a desk, in its time zone (Europe/Paris by default)."""

from __future__ import annotations

from datetime import datetime
from zoneinfo import ZoneInfo

from bot.config import BusinessHours


def is_open(hours: BusinessHours, now: datetime | None = None) -> bool:
    """Tell whether ``now`` (default: the current time) falls within the desk's hours."""
    local = (now or datetime.now(ZoneInfo("UTC"))).astimezone(ZoneInfo(hours.timezone))
    return local.isoweekday() in hours.days and hours.start <= local.time().replace(tzinfo=None) < hours.end
