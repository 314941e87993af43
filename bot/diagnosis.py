"""``action_diagnose_fault``: tell a fault of the ENT from a fault of the network or equipment.

eduscol's key question for technical trouble is whether the ENT or the IT infrastructure is at fault,
because the two go to different desks: the ENT team, or the local authority's IT.
"""

from __future__ import annotations

from bot.dialogue.actions import ActionContext, ActionResult
from bot.dialogue.events import Event, SlotSet


def diagnose_fault(context: ActionContext) -> ActionResult:
    """Set ``fault_origin`` to ``infrastructure`` or ``ent`` from the diagnosis slots, and utter its explanation."""
    slots = context.tracker.slots
    other_sites_ok = slots.get("other_sites_ok")
    place = slots.get("place")
    # Other websites failing too, or trouble at school only, point to the network or the equipment.
    infrastructure = other_sites_ok is False or place == "etablissement"
    origin = "infrastructure" if infrastructure else "ent"
    events: list[Event] = [SlotSet("fault_origin", origin)]
    uttered = context.utter(f"utter_diagnosis_{origin}")
    if uttered:
        events.append(uttered)
    return ActionResult(events)


# Responses this action utters, so that `entraide check` counts them as used.
diagnose_fault.uses_responses = ("utter_diagnosis_ent", "utter_diagnosis_infrastructure")
