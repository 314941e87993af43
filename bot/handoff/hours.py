"""Business hours of a desk, in its time zone (Europe/Paris by default)."""

from __future__ import annotations

from datetime import datetime
from zoneinfo import ZoneInfo

from bot.config import BusinessHours


def is_open(hours: BusinessHours, now: datetime | None = None) -> bool:
    """Tell whether ``now`` (default: the current time) falls within the desk's hours."""
    local = (now or datetime.now(ZoneInfo("UTC"))).astimezone(ZoneInfo(hours.timezone))
    return local.isoweekday() in hours.days and hours.start <= local.time().replace(tzinfo=None) < hours.end


_DAYS = {1: "lundi", 2: "mardi", 3: "mercredi", 4: "jeudi", 5: "vendredi", 6: "samedi", 7: "dimanche"}


def _french_time(value) -> str:
    return f"{value.hour} h" if value.minute == 0 else f"{value.hour} h {value.minute:02d}"


def _french_days(days: list[int]) -> str:
    ordered = sorted(set(days))
    if len(ordered) > 2 and ordered == list(range(ordered[0], ordered[-1] + 1)):
        return f"du {_DAYS[ordered[0]]} au {_DAYS[ordered[-1]]}"
    names = [_DAYS[day] for day in ordered]
    return "le " + (", le ".join(names[:-1]) + " et le " + names[-1] if len(names) > 1 else names[0])


def closed_notice(desk) -> str:
    """Return the message users get outside the desk's hours: its own, or one built from its hours."""
    if desk.closed_message:
        return desk.closed_message
    hours = desk.hours
    if not hours.days:
        return (
            f"L'équipe « {desk.label} » n'a pas de permanence en ce moment. "
            "Votre demande est enregistrée : elle sera traitée dès que possible."
        )
    return (
        f"L'équipe « {desk.label} » répond {_french_days(hours.days)}, de {_french_time(hours.start)} à "
        f"{_french_time(hours.end)}. Votre demande est enregistrée : elle sera traitée dès son retour."
    )
