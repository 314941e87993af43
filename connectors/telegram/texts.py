"""French texts that the Telegram channel sends itself: command replies, notices about files and buttons.

The assistant's replies come from domain.yml. These texts cover what only this channel does.
"""

from __future__ import annotations

# The command menu that setMyCommands registers: (command, description).
COMMANDS = (
    ("start", "Présentation de l'assistant"),
    ("aide", "Ce que l'assistant sait faire"),
    ("restart", "Recommencer la conversation depuis le début"),
    ("annuler", "Annuler la démarche en cours ou quitter l'échange avec l'assistance"),
)

WELCOME = (
    "Bonjour ! Je suis l'assistant de l'ENT, l'espace numérique de travail de votre établissement.\n\n"
    "Je réponds aux questions fréquentes : première connexion, mot de passe ou identifiant oublié, "
    "compte bloqué, EduConnect, applications mobiles, messagerie, cahier de textes, notes et absences, "
    "documents, notifications, groupes et blog de classe. Si je ne trouve pas la réponse, je peux "
    "transmettre votre demande à une personne de l'assistance, qui vous répondra ici.\n\n"
    "Posez votre question en quelques mots, par exemple « mot de passe oublié ». "
    "Je ne lis que les messages écrits. La commande /aide rappelle ce que je sais faire."
)

# Used when domain.yml has no utter_privacy response.
PRIVACY = (
    "Bon à savoir : cette conversation est enregistrée pour suivre votre demande et améliorer "
    "l'assistance. Si je transmets votre demande, une personne de l'assistance pourra la lire. "
    "N'écrivez jamais votre mot de passe ici."
)

HELP = (
    "Je réponds par écrit aux questions sur l'ENT : connexion et mots de passe, EduConnect, "
    "applications mobiles, messagerie, devoirs, notes et absences, documents, notifications, "
    "groupes et blog de classe.\n\n"
    "Pour parler à une personne de l'assistance, écrivez « parler à une personne ».\n\n"
    "Commandes :\n"
    "/start : présentation de l'assistant\n"
    "/aide : ce message\n"
    "/restart : recommencer la conversation depuis le début\n"
    "/annuler : abandonner la démarche en cours, ou quitter l'échange avec l'assistance\n\n"
    "Je ne lis ni les photos, ni les messages vocaux, ni les documents : décrivez votre problème par écrit. "
    "Pendant un échange avec l'assistance, je lui transmets vos fichiers quand elle les accepte."
)

UNKNOWN_COMMAND = (
    "Je ne connais pas cette commande. Les commandes disponibles sont /start, /aide, /restart et /annuler. "
    "Pour une question, écrivez-la simplement en quelques mots."
)

EXPIRED_BUTTON = "Ce bouton n'est plus valable. Écrivez votre question en quelques mots."

# Telegram refuses a message without text, so buttons sent alone get this line.
BUTTONS_ONLY = "Choisissez une réponse :"

# Shown above an expert's message when the desk gave no label.
EXPERT_LABEL = "Assistance"

# Names of the kinds of content, as they fill "Je ne peux pas lire {kind}" below.
ATTACHMENT_KINDS = {
    "photo": "les photos",
    "sticker": "les autocollants",
    "voice": "les messages vocaux",
    "document": "les documents",
    "video": "les vidéos",
    "video_note": "les messages vidéo",
    "audio": "les fichiers audio",
    "animation": "les images animées",
}
OTHER_CONTENT = "ce type de message"

TEXT_ONLY = (
    "Je ne peux pas lire {kind} : je ne comprends que les messages écrits. "
    "Décrivez votre question en quelques mots et je vous réponds."
)
ATTACHMENT_FORWARDED = "J'ai transmis votre fichier à la personne de l'assistance qui suit votre demande."
ATTACHMENT_REJECTED = (
    "Je ne peux pas transmettre de fichier à l'assistance. Décrivez par écrit ce qu'il montre, s'il vous plaît."
)
ATTACHMENT_TOO_LARGE = (
    "Ce fichier est trop volumineux pour être transmis : {limit} Mo au plus. "
    "Décrivez par écrit ce qu'il montre, s'il vous plaît."
)
ATTACHMENT_FAILED = (
    "Je n'ai pas pu transmettre ce fichier à l'assistance. Réessayez dans un instant, "
    "ou décrivez par écrit ce qu'il montre."
)
