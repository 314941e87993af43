"""Build and tear down everything a running assistant needs, in one place and in reverse order."""

from __future__ import annotations

import logging
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Callable

from bot.assistant import Assistant
from bot.config import Settings
from bot.coordination import make_coordinator
from bot.data.project import Project, load_project
from bot.handoff.recording import RecordingDesk
from bot.handoff.requests import RequestBook
from bot.nlu.files import latest_model, load_model, train_project
from bot.nlu.model import NluModel
from bot.outbox import Outbox
from bot.storage.store import Store

logger = logging.getLogger(__name__)


def load_or_train(settings: Settings, project: Project, progress: Callable[[str], None] | None = None) -> NluModel:
    """Load the model that matches the data; train it first when it does not exist."""
    return load_model(settings, trained_model_path(settings, project, progress))


def trained_model_path(settings: Settings, project: Project, progress: Callable[[str], None] | None = None) -> Path:
    """Return the file of the model that matches the data, training it first when it does not exist."""
    result = train_project(project, settings, progress=progress)
    if result.trained:
        logger.info("trained a new model: %s", result.path)
    return result.path


class Runtime:
    """Async context manager holding the store, the model, the outbox, the desk and the assistant."""

    def __init__(self, settings: Settings, seed: int | None = None, train: bool = True, progress: Callable[[str], None] | None = None) -> None:
        self.settings = settings
        self.seed = seed
        self.train = train
        self.progress = progress
        self._stack = AsyncExitStack()
        self.project: Project | None = None
        self.model: NluModel | None = None
        self.model_path: Path | None = None
        self.store: Store | None = None
        self.coordinator = make_coordinator(settings.storage.redis_url)
        self.outbox = Outbox(self.coordinator)
        self.book: RequestBook | None = None
        self.assistant: Assistant | None = None
        # The Matrix connector when channels.matrix is enabled; the server starts and stops it.
        self.matrix = None

    async def __aenter__(self) -> Runtime:
        self.project = load_project(self.settings)
        if self.train:
            self.model_path = trained_model_path(self.settings, self.project, self.progress)
        else:
            self.model_path = latest_model(self.settings)
        self.model = load_model(self.settings, self.model_path)
        self.store = Store(self.settings.storage.url)
        await self.store.start()
        self._stack.push_async_callback(self.store.stop)
        await self.coordinator.start(self.outbox.deliver_local)
        self._stack.push_async_callback(self.coordinator.stop)
        self.book = RequestBook(self.store, self.settings.handoff.reference_prefix)
        desk = self._build_desk()
        self.assistant = Assistant(
            self.settings, self.project, self.model, self.store, self.outbox, desk, seed=self.seed, coordinator=self.coordinator
        )
        # Registered after the store, so it runs before the store closes.
        self._stack.push_async_callback(self.assistant.drain)
        if self.matrix is not None:
            self.matrix.attach(self.assistant)
        if hasattr(desk, "attach"):
            desk.attach(self.assistant, self.assistant.engine.renderer)
        return self

    def _build_desk(self):
        """Return an ExpertDesk over Matrix when Matrix and desks are configured, else a RecordingDesk."""
        matrix = self.settings.channels.matrix
        if not matrix.enabled:
            return RecordingDesk(self.book, self.settings)
        # Imported here, so that matrix-nio loads only in deployments that use Matrix.
        from bot.handoff.expert_desk import ExpertDesk
        from connectors.matrix import MatrixConnector

        self.matrix = MatrixConnector(matrix, self.store)
        if not self.settings.handoff.desks:
            return RecordingDesk(self.book, self.settings)
        desk = ExpertDesk(self.book, self.settings, self.matrix, self.store, matrix.command_power_level)
        self.matrix.desk = desk
        return desk

    async def __aexit__(self, *exc_info) -> None:
        await self._stack.aclose()
