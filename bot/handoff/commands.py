"""Expert commands in desk rooms: ``!prendre``, ``!clore``, ``!transferer``, ``!escalader``, ``!note``, ``!info``, ``!aide``.

French names come first; English aliases (``!claim``, ``!close``, ``!transfer``, ``!escalate``,
``!help``) do the same. A command applies to the request of the thread (or reply chain) it is
written in, or to the reference given as its first word.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING

from bot.config import DeskSettings
from bot.dialogue.events import ExpertUttered, HandoffEnded, SlotSet
from bot.handoff import cards
from bot.handoff.requests import Status
from bot.handoff.routing import RouteQuery
from bot.handoff.transport import ExpertMessage

if TYPE_CHECKING:
    from bot.handoff.expert_desk import ExpertDesk
    from bot.storage.tables import Request

logger = logging.getLogger(__name__)

ALIASES = {
    "prendre": "claim",
    "claim": "claim",
    "clore": "close",
    "close": "close",
    "transferer": "transfer",
    "transférer": "transfer",
    "transfer": "transfer",
    "escalader": "escalate",
    "escalate": "escalate",
    "note": "note",
    "info": "info",
    "aide": "help",
    "help": "help",
}
_COMMAND = re.compile(r"^\s*!(?P<name>\w+)(?:\s+(?P<argument>.*))?$", re.DOTALL)
_REFERENCE = re.compile(r"^[A-Za-z][A-Za-z0-9]{0,9}-\d{4}-\d{5,}$")
OPEN = (Status.NEW.value, Status.CLAIMED.value)


@dataclass(frozen=True)
class Command:
    """A parsed command: its canonical name (None when unknown), the word typed, a reference, the rest."""

    name: str | None
    typed: str
    reference: str | None
    argument: str


def parse_command(body: str) -> Command | None:
    """Parse ``!name [REFERENCE] [argument]``; return None when the message is no command."""
    match = _COMMAND.match(body)
    if match is None:
        return None
    typed = match.group("name")
    argument = (match.group("argument") or "").strip()
    reference = None
    first, _, rest = argument.partition(" ")
    if _REFERENCE.match(first):
        reference, argument = first.upper(), rest.strip()
    return Command(ALIASES.get(typed.lower()), typed, reference, argument)


class CommandRunner:
    """Check the sender's rights, find the request and run one command."""

    def __init__(self, desk: ExpertDesk) -> None:
        self.desk = desk

    async def run(self, room_desk: DeskSettings, message: ExpertMessage, command: Command, request: Request | None) -> None:
        desk = self.desk
        if not await desk.transport.may_command(message.room_id, message.sender):
            logger.info("command from %s in room %s rejected: power level below %d", message.sender, message.room_id, desk.command_power_level)
            await desk.reply(
                message,
                cards.notice(
                    f"Vous n'avez pas les droits nécessaires pour utiliser les commandes du guichet dans ce salon "
                    f"(niveau de pouvoir {desk.command_power_level} requis). Rien n'a été modifié."
                ),
            )
            return
        if command.name is None:
            await desk.reply(message, cards.help_text(f"Commande inconnue : !{command.typed}."))
            return
        if command.name == "help":
            await desk.reply(message, cards.help_text())
            return

        if command.reference is not None:
            request = await desk.book.get(command.reference)
            if request is None:
                await desk.reply(message, cards.notice(f"Aucune demande ne porte la référence {command.reference}. Rien n'a été modifié."))
                return
        if request is None:
            await desk.reply(
                message,
                cards.notice(
                    f"Écrivez !{command.typed} dans le fil d'une demande, ou indiquez sa référence, "
                    f"par exemple : !{command.typed} {desk.settings.handoff.reference_prefix}-2026-00042"
                ),
            )
            return
        if command.name == "info":
            await self.info(message, request)
            return
        if request.room_id != message.room_id:
            current = desk.router.desks.get(request.desk or "")
            await desk.reply(
                message,
                cards.notice(
                    f"La demande {request.reference} est suivie par {current.label if current else request.desk} : "
                    "agissez depuis son fil. Rien n'a été modifié."
                ),
                request,
            )
            return
        # In reply mode, an expert may reply to the command message itself.
        await desk.book.remember_event(message.event_id, request, message.room_id, "command")
        handler = {"claim": self.claim, "close": self.close, "transfer": self.transfer, "escalate": self.escalate, "note": self.note}
        await handler[command.name](room_desk, message, command, request)

    # ----- commands -----

    async def claim(self, room_desk: DeskSettings, message: ExpertMessage, command: Command, request: Request) -> None:
        desk = self.desk
        if request.status not in OPEN:
            await self._not_open(message, request)
            return
        if request.status == Status.CLAIMED.value and request.assignee == message.sender:
            await desk.reply(message, cards.notice(f"Vous suivez déjà la demande {request.reference}."), request)
            return
        first_claim = request.status == Status.NEW.value
        note = None if first_claim else f"reprise (suivie auparavant par {request.assignee})"
        # The first claim time stays: a later claim is recorded as a transition only.
        preserved = {"claimed_at": request.claimed_at} if request.claimed_at else {}
        request = await desk.book.transition(
            request, Status.CLAIMED, actor=message.sender, note=note, assignee=message.sender, **preserved
        )
        name = await desk.transport.display_name(message.room_id, message.sender)
        await desk.reply(message, cards.notice(f"Demande {request.reference} prise en charge par {name}."), request)
        if first_claim:
            label = await desk.expert_label(room_desk, message.sender)
            await desk.deliver(request.conversation_id, desk.render("utter_handoff_claimed", reference=request.reference, desk_label=label))

    async def close(self, room_desk: DeskSettings, message: ExpertMessage, command: Command, request: Request) -> None:
        desk = self.desk
        if request.status not in OPEN:
            await self._not_open(message, request)
            return
        if command.argument:
            label = await desk.expert_label(room_desk, message.sender)
            await desk.deliver(
                request.conversation_id,
                ExpertUttered(command.argument, label=label, request_ref=request.reference, source_id=message.event_id),
            )
        request = await desk.book.transition(
            request, Status.RESOLVED, actor=message.sender, outcome="resolved", assignee=request.assignee or message.sender
        )
        await desk.deliver(request.conversation_id, HandoffEnded(request.reference, reason="resolved"))
        await desk.deliver(request.conversation_id, SlotSet("awaiting_satisfaction", True))
        await desk.deliver(request.conversation_id, desk.render("utter_ask_satisfaction", reference=request.reference))
        await desk.transport.react(message.room_id, message.event_id, "✅")
        await desk.reply(
            message,
            cards.notice(f"Demande {request.reference} résolue. L'usager a reçu la question de satisfaction (note de 1 à 5)."),
            request,
        )

    async def transfer(self, room_desk: DeskSettings, message: ExpertMessage, command: Command, request: Request) -> None:
        desk = self.desk
        name, _, reason = command.argument.partition(" ")
        if not name:
            await desk.reply(message, cards.notice(f"Indiquez le guichet : !{command.typed} <guichet>.\n{self._desk_list()}"), request)
            return
        target = self._find_desk(name)
        if target is None:
            await desk.reply(message, cards.notice(f"Guichet inconnu : « {name} ». Rien n'a été modifié.\n{self._desk_list()}"), request)
            return
        if request.status not in OPEN:
            await self._not_open(message, request)
            return
        if target.name == request.desk:
            await desk.reply(message, cards.notice(f"La demande {request.reference} est déjà au guichet {target.label}."), request)
            return
        if target.level != request.level:
            await desk.reply(
                message,
                cards.notice(
                    f"{target.label} est un guichet de niveau {target.level}, et la demande est au niveau {request.level} : "
                    "!transferer reste au même niveau. Pour passer au niveau supérieur, utilisez !escalader. Rien n'a été modifié."
                ),
                request,
            )
            return
        await self._move(
            message, request, target, note=f"transfert vers {target.name}" + (f" : {reason.strip()}" if reason.strip() else ""),
            origin=f"transférée par {room_desk.label}", reason=reason.strip() or None, response="utter_handoff_transferred",
        )

    async def escalate(self, room_desk: DeskSettings, message: ExpertMessage, command: Command, request: Request) -> None:
        desk = self.desk
        if request.status not in OPEN:
            await self._not_open(message, request)
            return
        first, _, rest = command.argument.partition(" ")
        target = self._find_desk(first) if first else None
        reason = command.argument
        if target is not None:
            if target.level <= request.level:
                await desk.reply(
                    message,
                    cards.notice(
                        f"{target.label} est de niveau {target.level} : l'escalade va vers un niveau supérieur à {request.level}. "
                        "Pour un guichet du même niveau, utilisez !transferer. Rien n'a été modifié."
                    ),
                    request,
                )
                return
            reason = rest.strip()
        else:
            slots = (request.details or {}).get("slots", {})
            query = RouteQuery(request.expertise or "triage", request.profile, request.school, request.channel or "", request.level, slots)
            target = desk.router.next_level(query)
        if target is None:
            await desk.reply(
                message, cards.notice(f"Aucun guichet au-dessus du niveau {request.level} : la demande reste ici."), request
            )
            return
        await self._move(
            message, request, target, note=f"escalade vers {target.name}" + (f" : {reason}" if reason else ""),
            origin=f"escaladée depuis le niveau {request.level} ({room_desk.label})", reason=reason or None,
            response="utter_handoff_escalated",
        )

    async def note(self, room_desk: DeskSettings, message: ExpertMessage, command: Command, request: Request) -> None:
        desk = self.desk
        if not command.argument:
            await desk.reply(message, cards.notice(f"Écrivez le texte de la note : !{command.typed} <texte>."), request)
            return
        if request.status not in OPEN:
            await desk.reply(
                message, cards.notice(f"La demande {request.reference} est {cards.STATUSES[request.status]} : la note n'est pas enregistrée."), request
            )
            return
        preserved = {"claimed_at": request.claimed_at} if request.claimed_at else {}
        await desk.book.transition(request, Status(request.status), actor=message.sender, note=command.argument, **preserved)
        await desk.transport.react(message.room_id, message.event_id, "📝")
        logger.info("request %s: internal note added by %s", request.reference, message.sender)

    async def info(self, message: ExpertMessage, request: Request) -> None:
        desk = self.desk
        current = desk.router.desks.get(request.desk or "")
        assignee = await desk.transport.display_name(message.room_id, request.assignee) if request.assignee else "personne"
        fields = [
            ("Demande", request.reference),
            ("État", cards.STATUSES.get(request.status, request.status)),
            ("Guichet", f"{current.label if current else request.desk} (niveau {request.level})"),
            ("Suivie par", assignee),
            ("Créée le", cards.local_time(request.created_at, with_date=True)),
            ("Prise en charge le", cards.local_time(request.claimed_at, with_date=True)),
            ("Résolue le", cards.local_time(request.resolved_at, with_date=True)),
            ("Canal", request.channel or "inconnu"),
            ("Profil", cards.PROFILES.get(request.profile or "", request.profile or "non indiqué")),
            ("Établissement", request.school or "non indiqué"),
            ("Expertise", cards.EXPERTISES.get(request.expertise or "", request.expertise or "non indiquée")),
            ("Satisfaction", f"{request.satisfaction}/5" if request.satisfaction else "non donnée"),
        ]
        for transition in list(await desk.book.transitions(request))[-5:]:
            before = cards.STATUSES.get(transition.from_status or "", "—")
            after = cards.STATUSES.get(transition.to_status, transition.to_status)
            note = f" — {transition.note}" if transition.note else ""
            fields.append((cards.local_time(transition.at, with_date=True), f"{before} → {after} ({transition.actor}){note}"))
        await desk.reply(message, cards.info(fields), request)

    # ----- helpers -----

    async def _move(
        self, message: ExpertMessage, request: Request, target: DeskSettings, note: str, origin: str, reason: str | None, response: str
    ) -> None:
        """Hand the request to another desk: a new card there, a notice in the old thread and a message to the user."""
        desk = self.desk
        old_anchor = await desk.anchor(request)
        old_room = request.room_id
        request = await desk.book.transition(
            request, Status.NEW, actor=message.sender, note=note, desk=target.name, level=target.level, assignee=None,
            details={**(request.details or {}), "origin": origin, "reason": reason},
        )
        posted = await desk.post_card(request, target, await desk.transcript_events(request.conversation_id), origin, reason)
        text = f"Demande {request.reference} confiée à {target.label} (niveau {target.level})."
        if not posted:
            text += " Sa fiche n'a pas pu être postée dans leur salon : elle le sera dès que possible."
        event_id = await desk.transport.post(old_room, cards.notice(text), old_anchor)
        await desk.book.remember_event(event_id, request, old_room, "notice")
        await desk.transport.react(message.room_id, message.event_id, "✅")
        await desk.deliver(request.conversation_id, desk.render(response, reference=request.reference, desk_label=target.label))

    async def _not_open(self, message: ExpertMessage, request: Request) -> None:
        state = cards.STATUSES.get(request.status, request.status)
        await self.desk.reply(message, cards.notice(f"La demande {request.reference} est {state} : rien n'a été modifié."), request)

    def _find_desk(self, name: str) -> DeskSettings | None:
        for desk in self.desk.settings.handoff.desks:
            if desk.name.lower() == name.lower():
                return desk
        return None

    def _desk_list(self) -> str:
        lines = [f"- {desk.name} : {desk.label} (niveau {desk.level})" for desk in self.desk.settings.handoff.desks]
        return "Guichets :\n" + "\n".join(lines)
