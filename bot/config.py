"""Load and validate ``config.yml``.

String values may name environment variables as ``${VAR}`` or ``${VAR:-default}``, so secrets
(tokens, passwords, signing keys) stay out of the file. ``ENTRAIDE_DATABASE_URL`` overrides
``storage.url`` for every command.
"""

from __future__ import annotations

import os
import re
from datetime import time
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from bot._yaml import line_of, load_yaml
from bot.errors import ConfigError

DEFAULT_CONFIG = Path("config.yml")
DATABASE_URL_VARIABLE = "ENTRAIDE_DATABASE_URL"

_VARIABLE = re.compile(r"\$\{(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?::-(?P<default>[^}]*))?\}")
_UAI = re.compile(r"^\d{7}[A-Za-z]$")
# Telegram accepts only these characters in a webhook secret token.
_WEBHOOK_SECRET = re.compile(r"[A-Za-z0-9_-]{1,256}")

Expertise = Literal["fonctionnel", "pedagogique", "technique", "triage"]
Profile = Literal["directeur", "enseignant", "parent", "eleve", "autre"]


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


class DataSettings(_Section):
    nlu: Path = Path("nlu")
    stories: Path = Path("stories")
    domain: Path = Path("domain.yml")
    tests: Path = Path("tests/conversations")
    models: Path = Path("models")


class NluSettings(_Section):
    fallback_threshold: float = Field(0.3, ge=0.0, le=1.0)
    ambiguity_threshold: float = Field(0.05, ge=0.0, le=1.0)
    min_examples: int = Field(10, ge=1)
    word_ngrams: tuple[int, int] = (1, 2)
    char_ngrams: tuple[int, int] = (2, 5)
    regularization: float = Field(10.0, gt=0.0, description="inverse regularization strength C (the SVM uses C/10)")
    fuzzy_threshold: int = Field(86, ge=50, le=100, description="rapidfuzz ratio, 0-100")
    random_seed: int = 42
    self_entities: list[str] = Field(
        default_factory=lambda: ["profile"], description="entities that get role 'self' after 'je suis', 'en tant que'..."
    )


class PolicySettings(_Section):
    max_history: int = Field(5, ge=1)
    max_actions_per_turn: int = Field(10, ge=2)
    fallback_suggestions: int = Field(3, ge=1, le=5)


class StorageSettings(_Section):
    url: str = "sqlite+aiosqlite:///entraide.db"
    redis_url: str | None = None


class WebSettings(_Section):
    enabled: bool = True
    allowed_origins: list[str] = Field(default_factory=list)
    jwt_secret: str | None = None
    max_message_length: int = Field(2000, ge=1, le=100_000)
    messages_per_minute: int = Field(30, ge=1, description="per connection")
    connections_per_minute: int = Field(60, ge=1, description="per client address")
    history_limit: int = Field(200, ge=1)


class RestSettings(_Section):
    enabled: bool = True


class TelegramSettings(_Section):
    enabled: bool = False
    token: str | None = None
    mode: Literal["polling", "webhook"] = "polling"
    webhook_url: str | None = Field(None, description="public URL that reaches POST /webhooks/telegram")
    webhook_secret: str | None = Field(None, description="X-Telegram-Bot-Api-Secret-Token, 1-256 of A-Z a-z 0-9 _ -")
    base_url: str | None = None
    base_file_url: str | None = None
    groups: Literal["ignore", "mention"] = "mention"
    poll_timeout: int = Field(30, ge=0, le=300, description="seconds a getUpdates long poll waits")
    max_retries: int = Field(3, ge=0, le=10, description="retries of one request after a 429 or a network error")
    max_retry_after: float = Field(60.0, ge=0.0, description="longest 429 wait, in seconds, before a send gives up")
    # The Bot API lets bots download files of at most 20 MB through getFile.
    max_attachment_bytes: int = Field(20 * 1024 * 1024, ge=1, description="largest file relayed to a desk, in bytes")

    @model_validator(mode="after")
    def _check_token(self) -> TelegramSettings:
        if self.enabled and self.mode == "webhook" and not self.webhook_url:
            raise ValueError("webhook_url is required in webhook mode")
        if self.webhook_secret and not _WEBHOOK_SECRET.fullmatch(self.webhook_secret):
            raise ValueError("webhook_secret must be 1-256 characters of A-Z, a-z, 0-9, _ and -")
        return self


class MatrixSettings(_Section):
    enabled: bool = False
    homeserver: str | None = None
    user_id: str | None = None
    access_token: str | None = None
    device_id: str | None = None
    direct_chats: bool = True
    command_power_level: int = 50

    @model_validator(mode="after")
    def _check_login(self) -> MatrixSettings:
        if self.enabled and not (self.homeserver and self.user_id):
            raise ValueError("homeserver and user_id are required when Matrix is enabled")
        return self


class ChannelSettings(_Section):
    web: WebSettings = Field(default_factory=WebSettings)
    rest: RestSettings = Field(default_factory=RestSettings)
    telegram: TelegramSettings = Field(default_factory=TelegramSettings)
    matrix: MatrixSettings = Field(default_factory=MatrixSettings)


class BusinessHours(_Section):
    days: list[int] = Field(default_factory=lambda: [1, 2, 3, 4, 5], description="ISO weekdays, 1 = Monday")
    start: time = time(8, 0)
    end: time = time(18, 0)
    timezone: str = "Europe/Paris"


class DeskSettings(_Section):
    name: str
    level: int = Field(ge=1, le=3)
    room: str
    label: str
    relay_mode: Literal["thread", "reply"] = "thread"
    hours: BusinessHours | None = None
    # Told to users outside the hours; by default built from the hours themselves.
    closed_message: str | None = None
    show_expert_names: bool = False
    allow_attachments: bool = False


class RouteMatch(_Section):
    expertise: list[Expertise] | None = None
    profile: list[Profile] | None = None
    school: list[str] | None = Field(None, description="UAI codes or prefixes")
    channel: list[str] | None = None
    level: list[int] | None = None
    slots: dict[str, str] | None = None


class RouteRule(_Section):
    match: RouteMatch = Field(default_factory=RouteMatch)
    desk: str


class HandoffSettings(_Section):
    reference_prefix: str = Field("ENT", pattern=r"^[A-Z][A-Z0-9]{0,9}$")
    reopen_delay_hours: float = Field(72.0, ge=0.0)
    default_desk: str | None = None
    expertise: dict[str, Expertise] = Field(default_factory=dict, description="intent -> expertise")
    desks: list[DeskSettings] = Field(default_factory=list)
    routing: list[RouteRule] = Field(default_factory=list)

    @model_validator(mode="after")
    def _check_desks(self) -> HandoffSettings:
        names = [desk.name for desk in self.desks]
        duplicates = sorted({name for name in names if names.count(name) > 1})
        if duplicates:
            raise ValueError(f"desk names must be unique, found {', '.join(duplicates)} twice")
        known = set(names)
        if self.default_desk is not None and self.default_desk not in known:
            raise ValueError(f"default_desk {self.default_desk!r} is not a desk; known: {sorted(known)}")
        for rule in self.routing:
            if rule.desk not in known:
                raise ValueError(f"routing names unknown desk {rule.desk!r}; known: {sorted(known)}")
        if self.desks:
            levels = {desk.level for desk in self.desks}
            missing = [level for level in range(1, max(levels) + 1) if level not in levels]
            if missing:
                raise ValueError(f"no desk serves level {missing[0]}; add one or renumber the levels")
        return self


class ServerSettings(_Section):
    host: str = "127.0.0.1"
    port: int = Field(5005, ge=0, le=65535)
    max_body_bytes: int = Field(64 * 1024, ge=1024)
    requests_per_minute: int = Field(120, ge=1, description="per client address, HTTP API")


class Settings(_Section):
    language: Literal["fr"] = "fr"
    data: DataSettings = Field(default_factory=DataSettings)
    nlu: NluSettings = Field(default_factory=NluSettings)
    policies: PolicySettings = Field(default_factory=PolicySettings)
    storage: StorageSettings = Field(default_factory=StorageSettings)
    server: ServerSettings = Field(default_factory=ServerSettings)
    channels: ChannelSettings = Field(default_factory=ChannelSettings)
    handoff: HandoffSettings = Field(default_factory=HandoffSettings)
    actions: dict[str, str] = Field(default_factory=dict, description="action name -> module:function")
    privacy_retention_days: int = Field(365, ge=1)

    # Where the file was read from: data paths are relative to it.
    base_dir: Path = Field(default=Path("."), exclude=True)

    @field_validator("actions")
    @classmethod
    def _check_actions(cls, value: dict[str, str]) -> dict[str, str]:
        for name, target in value.items():
            if ":" not in target:
                raise ValueError(f"action {name!r}: expected 'module:function', found {target!r}")
        return value

    def check_secrets(self) -> None:
        """Raise ConfigError when an enabled channel lacks its secret.

        Only commands that start channels call this, so that reading the request log or training
        does not need the bots' tokens.
        """
        telegram = self.channels.telegram
        if telegram.enabled and not telegram.token:
            raise ConfigError("channels.telegram.token: the Telegram channel is enabled but no token is set (set TELEGRAM_TOKEN)")
        if telegram.enabled and telegram.mode == "webhook" and not telegram.webhook_secret:
            raise ConfigError(
                "channels.telegram.webhook_secret: required in webhook mode, so that only Telegram can post updates"
            )
        matrix = self.channels.matrix
        if matrix.enabled and not matrix.access_token:
            raise ConfigError("channels.matrix.access_token: Matrix is enabled but no access token is set (set MATRIX_ACCESS_TOKEN)")

    def path(self, relative: Path) -> Path:
        """Resolve a data path against the directory of the configuration file."""
        return relative if relative.is_absolute() else self.base_dir / relative


def is_uai(value: str) -> bool:
    """Tell whether ``value`` looks like a UAI school code: 7 digits and a letter."""
    return bool(_UAI.match(value))


def load_settings(path: Path | None = None) -> Settings:
    """Read, substitute and validate a configuration file.

    Without a file at the default path, the defaults apply. Raises ConfigError naming the file,
    the line, the key path, what was found and what is expected.
    """
    explicit = path is not None
    path = path or DEFAULT_CONFIG
    if not path.exists():
        if explicit:
            raise ConfigError(f"{path}: configuration file not found; pass an existing file to --config")
        original: Any = {}
    else:
        original = load_yaml(path, ConfigError)
        if original is None:
            original = {}
        if not isinstance(original, dict):
            raise ConfigError(f"{path}:1: expected a mapping of settings, found {type(original).__name__}")
    raw = _substitute(original, path, ())

    try:
        settings = Settings.model_validate(raw)
    except ValidationError as exc:
        # The substituted copy lost line numbers; the original tree still has them.
        raise ConfigError(_describe(exc, original, path)) from None

    settings.base_dir = path.parent if path.parent != Path("") else Path(".")
    override = os.environ.get(DATABASE_URL_VARIABLE)
    if override:
        settings.storage.url = override
    return settings


def _substitute(node: Any, path: Path, keys: tuple) -> Any:
    if isinstance(node, dict):
        return {key: _substitute(value, path, (*keys, key)) for key, value in node.items()}
    if isinstance(node, list):
        return [_substitute(item, path, (*keys, index)) for index, item in enumerate(node)]
    if not isinstance(node, str) or "${" not in node:
        return node

    def replace(match: re.Match[str]) -> str:
        name, default = match.group("name"), match.group("default")
        value = os.environ.get(name)
        if value:
            return value
        if default is not None:
            return default
        key_path = ".".join(str(key) for key in keys)
        raise ConfigError(
            f"{path}: {key_path}: environment variable {name} is not set; "
            f"set it or write ${{{name}:-default}}"
        )

    return _VARIABLE.sub(replace, node)


def _describe(exc: ValidationError, raw: Any, path: Path) -> str:
    lines = []
    for error in exc.errors():
        location = [part for part in error["loc"] if not isinstance(part, str) or not part.startswith("function-")]
        key_path = ".".join(str(part) for part in location) or "(top level)"
        line = _line_for(raw, location)
        found = error.get("input")
        found_text = "nothing" if error["type"] == "missing" else repr(found)
        if error["type"] == "extra_forbidden":
            message = "unknown key; check its spelling against the documented settings"
        else:
            message = f"found {found_text}, expected: {error['msg']}"
        where = f"{path}:{line}" if line else str(path)
        lines.append(f"{where}: {key_path}: {message}")
    return "invalid configuration\n  " + "\n  ".join(lines)


def _line_for(raw: Any, location: list) -> int:
    node, line = raw, 0
    for part in location:
        try:
            found = line_of(node, part)
            node = node[part]
        except (KeyError, IndexError, TypeError):
            break
        line = found or line
    return line
