"""The exception tree of entraide.

::

    EntraideError
    ├── ConfigError            config.yml is missing, malformed or invalid
    ├── TrainingDataError      nlu/, stories/ or domain.yml is malformed
    ├── ModelError             no trained model, or a model file that cannot be read
    ├── DialogueError          an action or a policy cannot run
    ├── StorageError           the database cannot be reached or holds unexpected data
    ├── ConnectorError         a channel cannot start or send
    │   └── RecipientBlocked   the channel reports that the user blocked the assistant
    └── HandoffError           a request, desk or routing rule is wrong
"""

from __future__ import annotations


class EntraideError(Exception):
    """Base class of every error that entraide raises on purpose."""


class ConfigError(EntraideError):
    """Raised when the configuration file is missing, malformed or invalid."""


class TrainingDataError(EntraideError):
    """Raised when training data or the domain is malformed; names the file and line."""


class ModelError(EntraideError):
    """Raised when no model is trained or a model file cannot be read."""


class DialogueError(EntraideError):
    """Raised when the dialogue engine cannot run an action."""


class StorageError(EntraideError):
    """Raised when the store cannot be reached or contains unexpected data."""


class ConnectorError(EntraideError):
    """Raised when a channel connector cannot start or send."""


class RecipientBlocked(ConnectorError):
    """Raised when a channel reports that the user blocked the assistant."""


class HandoffError(EntraideError):
    """Raised when a request, a desk or a routing rule is wrong."""
