"""Choose and render a domain response: channel variants, slot conditions, ``{slot}`` values."""

from __future__ import annotations

import random
import re
from typing import Any

from bot.data.domain import Button, Domain, ResponseVariation

_PLACEHOLDER = re.compile(r"\{(\w+)\}")

# French texts for the responses that built-in actions need when the domain leaves them out.
DEFAULT_TEXTS = {
    "utter_default": "Désolé, je n'ai pas compris. Pouvez-vous reformuler votre question ?",
    "utter_ask_rephrase": "Je ne suis pas sûr d'avoir compris. Vouliez-vous parler de l'un de ces sujets ?",
    "utter_title_other": "Autre chose",
    "utter_offer_expert": "Je n'arrive pas à vous aider. Voulez-vous que je transmette votre demande à une personne de l'assistance ?",
    "utter_form_invalid": "Je n'ai pas pu utiliser cette réponse.",
    "utter_restart": "C'est noté, on recommence depuis le début.",
    "utter_handoff_started": (
        "Je transmets votre demande à l'équipe « {desk_label} ». Votre numéro de demande est {reference}. "
        "Une personne va lire notre échange et vous répondre ici. "
        "Pour revenir à l'assistant automatique, écrivez « retour au robot »."
    ),
    "utter_handoff_relayed": "Message transmis.",
    "utter_handoff_failed": (
        "Je n'ai pas pu enregistrer votre demande pour le moment. Votre message est bien conservé. "
        "Réessayez dans quelques minutes en demandant à parler à une personne."
    ),
    "utter_password_masked": (
        "J'ai masqué ce qui ressemble à un mot de passe dans votre message. Ne l'écrivez jamais ici : "
        "personne de l'assistance ne vous le demandera."
    ),
    "utter_privacy": (
        "Bon à savoir : cette conversation est enregistrée pour suivre votre demande. Si je la transmets, "
        "une personne de l'assistance pourra la lire. N'écrivez jamais votre mot de passe ici."
    ),
    "utter_handoff_recorded": (
        "Votre demande est enregistrée sous le numéro {reference}. L'équipe d'assistance de l'ENT la "
        "consultera. En attendant, je reste à votre disposition pour d'autres questions."
    ),
    "utter_back_to_bot": "D'accord, je reprends la conversation. Posez-moi votre question.",
    "utter_ask_satisfaction": "Votre demande est résolue. Sur une échelle de 1 à 5, quelle note donnez-vous à l'aide reçue ?",
    "utter_satisfaction_thanks": "Merci pour votre réponse ! Je reste à votre disposition.",
    "utter_handoff_claimed": "Votre demande {reference} est prise en charge par {desk_label}.",
    "utter_handoff_transferred": "Votre demande {reference} est confiée à {desk_label}, qui vous répondra ici.",
    "utter_handoff_escalated": (
        "Votre demande {reference} est transmise à {desk_label} pour un examen plus approfondi. "
        "La réponse arrivera ici."
    ),
    "utter_handoff_unreachable": (
        "Le service d'assistance ne peut pas être joint pour le moment. Votre demande {reference} est bien "
        "enregistrée : elle lui sera transmise dès que possible."
    ),
    "utter_handoff_posted": "Votre demande {reference} est maintenant transmise à {desk_label}.",
    "utter_too_long": "Votre message est trop long. Pouvez-vous le raccourcir ?",
    "utter_empty": "Votre message est vide. Écrivez votre question et je vous réponds.",
    "utter_unreadable": "Je n'ai pas pu lire ce message. Pouvez-vous l'écrire à nouveau ?",
    "utter_invalid_profile": "Je n'ai pas reconnu ce profil. Choisissez parmi : directeur, enseignant, parent, élève ou autre.",
    "utter_invalid_school": "Ce code ne ressemble pas à un code UAI : il a 7 chiffres suivis d'une lettre, par exemple 0751234A.",
}

_YES_NO = (Button("Oui", "/affirm"), Button("Non", "/deny"))
DEFAULT_BUTTONS = {"utter_offer_expert": _YES_NO}


class ResponseRenderer:
    def __init__(self, domain: Domain, seed: int | None = None) -> None:
        self.domain = domain
        self._random = random.Random(seed)

    def has(self, name: str) -> bool:
        return name in self.domain.responses or name in DEFAULT_TEXTS

    def render(self, name: str, slots: dict[str, Any], channel: str | None = None) -> tuple[str, tuple[Button, ...]] | None:
        """Pick a variation for ``channel`` and ``slots``; return (text, buttons), or None when undefined."""
        variations = self.domain.responses.get(name)
        if not variations:
            if name in DEFAULT_TEXTS:
                return fill(DEFAULT_TEXTS[name], slots), DEFAULT_BUTTONS.get(name, ())
            return None
        variation = self._choose(variations, slots, channel)
        if variation is None:
            return None
        return fill(variation.text, slots), variation.buttons

    def _choose(self, variations: list[ResponseVariation], slots: dict[str, Any], channel: str | None) -> ResponseVariation | None:
        def conditions_hold(variation: ResponseVariation) -> bool:
            return all(_same(slots.get(slot), value) for slot, value in variation.conditions)

        eligible = [v for v in variations if (v.channel is None or v.channel == channel) and conditions_hold(v)]
        if not eligible:
            return None
        # The most specific variations win: channel match and conditions before plain ones.
        best = max(_specificity(v) for v in eligible)
        return self._random.choice([v for v in eligible if _specificity(v) == best])

    def title(self, intent: str) -> str:
        """Return a button title for an intent: ``utter_title_<intent>`` when defined, else the name."""
        rendered = self.render(f"utter_title_{intent}", {})
        return rendered[0] if rendered else intent.replace("_", " ")


def _specificity(variation: ResponseVariation) -> int:
    """Rank a variation: a channel match counts 2, each slot condition 1."""
    score = len(variation.conditions)
    if variation.channel:
        score += 2
    return score


def _same(actual: Any, expected: Any) -> bool:
    if isinstance(expected, bool) or isinstance(actual, bool):
        return actual == expected
    if expected is None:
        return actual is None
    return actual is not None and str(actual).lower() == str(expected).lower()


def fill(template: str, slots: dict[str, Any]) -> str:
    """Replace ``{slot}`` with the slot's value; unknown or empty slots keep their placeholder."""

    def replace(match: re.Match[str]) -> str:
        value = slots.get(match.group(1))
        return str(value) if value not in (None, "") else match.group(0)

    return _PLACEHOLDER.sub(replace, template)
