"""The NLU engine: French normalisation, features, intent classifier, entities, persistence."""

from bot.nlu.entities import Entity, EntityExtractor
from bot.nlu.model import FALLBACK_INTENT, NluModel, train
from bot.nlu.normalize import Normalizer, fold
from bot.nlu.files import latest_model, train_project

__all__ = [
    "FALLBACK_INTENT",
    "Entity",
    "EntityExtractor",
    "NluModel",
    "Normalizer",
    "fold",
    "latest_model",
    "train",
    "train_project",
]
