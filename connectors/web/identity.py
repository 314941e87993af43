"""Verify the identity an ENT page passes to the widget: an HS256 JWT signed with a shared secret."""

from __future__ import annotations

import logging
from dataclasses import dataclass

import jwt

from bot.config import is_uai
from bot.messages import Identity

logger = logging.getLogger(__name__)

PROFILES = {"directeur", "enseignant", "parent", "eleve", "autre"}


@dataclass(frozen=True)
class TokenRejected(Exception):
    """A token that cannot be trusted; ``code`` is ``token_invalid`` or ``token_expired``."""

    code: str
    reason: str


def verify_token(token: str, secret: str | None, leeway_seconds: int = 30) -> Identity:
    """Return the verified identity; raise TokenRejected when the token is not signed by the ENT.

    Without a configured secret no token can be verified, so every token is rejected: claims are
    never taken from unsigned input.
    """
    if not secret:
        raise TokenRejected("token_invalid", "no jwt_secret is configured, so signed identities are not accepted")
    try:
        claims = jwt.decode(
            token,
            secret,
            algorithms=["HS256"],
            options={"require": ["sub", "exp"]},
            leeway=leeway_seconds,
        )
    except jwt.ExpiredSignatureError:
        raise TokenRejected("token_expired", "the token has expired") from None
    except jwt.InvalidTokenError as exc:
        raise TokenRejected("token_invalid", f"{type(exc).__name__}: {exc}") from None

    subject = str(claims["sub"])
    profile = claims.get("profile")
    if profile is not None and profile not in PROFILES:
        logger.warning("token for a subject has unknown profile claim; ignored")
        profile = None
    school = claims.get("school")
    if school is not None and not (isinstance(school, str) and is_uai(school)):
        logger.warning("token has a school claim that is not a UAI code; ignored")
        school = None
    name = claims.get("name")
    return Identity(
        profile=profile,
        school=school.upper() if school else None,
        name=str(name)[:255] if name else None,
        subject=subject,
    )
