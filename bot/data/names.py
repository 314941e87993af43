"""Names that entraide defines itself: built-in actions, intents and slots."""

DEFAULT_ACTIONS = frozenset(
    {
        "action_listen",
        "action_restart",
        "action_session_start",
        "action_default_fallback",
        "action_two_stage_fallback",
        "action_deactivate_loop",
        "action_back",
        "action_handoff",
        "action_unlikely_intent",
        "action_extract_slots",
    }
)

# Intents that buttons and commands may send without being declared in the domain.
DEFAULT_INTENTS = frozenset({"restart", "session_start", "nlu_fallback", "back"})

# Responses that built-in actions utter when the domain defines them.
DEFAULT_RESPONSES = frozenset(
    {
        "utter_default",
        "utter_ask_rephrase",
        "utter_offer_expert",
        "utter_handoff_started",
        "utter_handoff_closed_hours",
        "utter_restart",
        "utter_form_invalid",
        "utter_too_long",
        "utter_privacy",
    }
)

BUILTIN_SLOTS = frozenset({"requested_slot"})
