"""French texts posted into desk rooms: request cards, relayed messages, command replies.

Every text is built twice, as a plain body and as HTML, from the same parts. Values from users and
experts go through :func:`inert` and ``html.escape``, so no user text can mention the whole room,
ping an account or inject markup.
"""

from __future__ import annotations

import html
import re
from dataclasses import dataclass
from datetime import datetime
from typing import Iterable, Sequence
from zoneinfo import ZoneInfo

from bot.config import DeskSettings
from bot.dialogue.events import BotUttered, Event, ExpertUttered, UserUttered
from bot.handoff.transport import RoomText
from bot.storage.store import aware

# A zero-width joiner after an "@" that starts a word keeps "@room" and "@user:server" from
# matching the mention push rules, while e-mail addresses (an "@" inside a word) stay as written.
ZERO_WIDTH_JOINER = "\u200d"
_MENTION = re.compile(r"(?<![\w.+-])@(?=\w)")
TRANSCRIPT_MESSAGES = 20
TRANSCRIPT_LINE_LENGTH = 300
DISPLAY_TIMEZONE = "Europe/Paris"

PROFILES = {"directeur": "directeur", "enseignant": "enseignant", "parent": "parent", "eleve": "élève", "autre": "autre"}
EXPERTISES = {"fonctionnel": "fonctionnelle", "pedagogique": "pédagogique", "technique": "technique", "triage": "à trier"}
STATUSES = {"new": "nouvelle", "claimed": "prise en charge", "resolved": "résolue", "closed": "close"}

COMMANDS_LINE = "!prendre · !clore [message] · !transferer <guichet> · !escalader [raison] · !note <texte> · !info · !aide"
HELP_LINES = (
    "Commandes du guichet (dans le fil d'une demande, en réponse à un de ses messages, ou suivies de sa référence) :",
    "!prendre (!claim) : prendre la demande en charge",
    "!clore [message] (!close) : résoudre la demande, avec un dernier message facultatif pour l'usager, "
    "qui reçoit ensuite la question de satisfaction",
    "!transferer <guichet> (!transfer) : confier la demande à un autre guichet du même niveau",
    "!escalader [guichet] [raison] (!escalate) : passer la demande au niveau supérieur",
    "!note <texte> : ajouter une note interne, jamais transmise à l'usager",
    "!info : afficher l'état de la demande",
    "!aide (!help) : afficher cette aide",
    "Tout autre message écrit dans le fil d'une demande, ou en réponse à un de ses messages, est transmis à l'usager.",
)


@dataclass(frozen=True)
class TranscriptLine:
    at: datetime
    speaker: str
    text: str


def inert(text: str) -> str:
    """Break every word-initial "@" so that the posted text triggers no mention."""
    return _MENTION.sub("@" + ZERO_WIDTH_JOINER, text)


def escape(text: str) -> str:
    """Return ``text`` made inert and escaped for an HTML body, with line breaks kept."""
    return html.escape(inert(text)).replace("\n", "<br>")


class _Builder:
    """Collect a message line by line as plain text and as HTML."""

    def __init__(self) -> None:
        self.plain: list[str] = []
        self.markup: list[str] = []

    def title(self, text: str) -> None:
        self.plain.append(inert(text))
        self.markup.append(f"<b>{escape(text)}</b>")

    def field(self, label: str, value: str) -> None:
        self.plain.append(f"{label} : {inert(value)}")
        self.markup.append(f"<b>{escape(label)}</b> : {escape(value)}")

    def text(self, value: str) -> None:
        self.plain.append(inert(value))
        self.markup.append(escape(value))

    def quoted(self, lines: Sequence[str]) -> None:
        self.plain.extend(f"> {inert(line)}" for line in lines)
        self.markup.append("<blockquote>" + "<br>".join(escape(line) for line in lines) + "</blockquote>")

    def build(self, notice: bool = False) -> RoomText:
        return RoomText(body="\n".join(self.plain), html="<br>\n".join(self.markup), notice=notice)


def notice(text: str) -> RoomText:
    """Build a command reply or status line from French text (already free of user data or not)."""
    builder = _Builder()
    for line in text.split("\n"):
        builder.text(line)
    return builder.build(notice=True)


def help_text(intro: str | None = None) -> RoomText:
    builder = _Builder()
    if intro:
        builder.text(intro)
    builder.title(HELP_LINES[0])
    for line in HELP_LINES[1:]:
        builder.text(line)
    return builder.build(notice=True)


def user_message(text: str) -> RoomText:
    """Build the room message for what the user wrote during the handoff."""
    builder = _Builder()
    lines = text.split("\n")
    builder.plain.append(f"Usager : {inert(lines[0])}")
    builder.markup.append(f"<b>Usager</b> : {escape(lines[0])}")
    for line in lines[1:]:
        builder.text(line)
    return builder.build()


def transcript_lines(events: Iterable[Event], limit: int = TRANSCRIPT_MESSAGES) -> list[TranscriptLine]:
    """Return the last ``limit`` messages of a conversation as dated lines, each cut to a readable length."""
    found = []
    for event in events:
        if isinstance(event, UserUttered):
            if not event.text:
                continue
            speaker = "Usager"
        elif isinstance(event, BotUttered):
            speaker = "Assistant"
        elif isinstance(event, ExpertUttered):
            speaker = event.label or "Expert"
        else:
            continue
        text = " ".join(event.text.split())
        if len(text) > TRANSCRIPT_LINE_LENGTH:
            text = text[: TRANSCRIPT_LINE_LENGTH - 1] + "…"
        found.append(TranscriptLine(aware(event.timestamp), speaker, text))
    return found[-limit:]


def local_time(value: datetime | None, with_date: bool = False) -> str:
    if value is None:
        return "—"
    local = aware(value).astimezone(ZoneInfo(DISPLAY_TIMEZONE))
    return local.strftime("%d/%m/%Y %H:%M" if with_date else "%H:%M")


@dataclass(frozen=True)
class CardFacts:
    """The facts that a request card shows, gathered by the desk."""

    reference: str
    desk: DeskSettings
    profile: str | None
    school: str | None
    channel: str | None
    expertise: str | None
    summary: str | None
    available_now: bool
    transcript: Sequence[TranscriptLine]
    origin: str | None = None
    reason: str | None = None


def card(facts: CardFacts) -> RoomText:
    """Build the card that opens a request in a desk room."""
    desk = facts.desk
    builder = _Builder()
    if facts.origin:
        builder.title(f"Demande {facts.reference} — {facts.origin}")
    else:
        builder.title(f"Nouvelle demande {facts.reference}")
    builder.field("Guichet", f"{desk.label} (niveau {desk.level})")
    builder.field("Profil", PROFILES.get(facts.profile or "", facts.profile or "non indiqué"))
    builder.field("Établissement", facts.school or "non indiqué")
    builder.field("Canal", facts.channel or "inconnu")
    builder.field("Expertise", EXPERTISES.get(facts.expertise or "", facts.expertise or "non indiquée"))
    if facts.available_now:
        builder.field("Disponibilité", "dans les horaires d'ouverture du guichet")
    else:
        builder.field("Disponibilité", "hors des horaires d'ouverture (l'usager a reçu le message de fermeture)")
    if facts.reason:
        builder.field("Motif", facts.reason)
    builder.field("Demande", facts.summary or "non précisée")
    if facts.transcript:
        builder.title(f"Échange avec l'assistant ({len(facts.transcript)} derniers messages) :")
        builder.quoted([f"{local_time(line.at)} {line.speaker} : {line.text}" for line in facts.transcript])
    where = "dans le fil de ce message" if desk.relay_mode == "thread" else "en répondant à ce message"
    builder.text(f"Pour répondre à l'usager, écrivez {where} : il lit vos réponses sous le nom « {desk.label} ».")
    builder.field("Commandes", COMMANDS_LINE)
    return builder.build()


def info(fields: Sequence[tuple[str, str]]) -> RoomText:
    """Build the reply to ``!info`` from (label, value) pairs."""
    builder = _Builder()
    for label, value in fields:
        builder.field(label, value)
    return builder.build(notice=True)
