"""Fixtures shared by the whole suite: the shipped project, a trained model, databases."""

from __future__ import annotations

import asyncio
import os
import uuid
from pathlib import Path

import pytest

from bot.config import Settings, load_settings

ROOT = Path(__file__).resolve().parent.parent
POSTGRES_VARIABLE = "ENTRAIDE_TEST_DATABASE_URL"


@pytest.fixture(scope="session")
def shipped_models(tmp_path_factory) -> Path:
    """Train the shipped data once per session into a private folder and return the folder."""
    from bot.data.project import load_project
    from bot.nlu.files import train_project

    folder = tmp_path_factory.mktemp("models")
    settings = load_settings(ROOT / "config.yml")
    settings.data.models = folder
    train_project(load_project(settings), settings)
    return folder


@pytest.fixture
def shipped_settings(shipped_models, tmp_path) -> Settings:
    """Settings of the shipped config.yml, with the session's model and a fresh SQLite database."""
    settings = load_settings(ROOT / "config.yml")
    settings.data.models = shipped_models
    settings.storage.url = f"sqlite+aiosqlite:///{tmp_path / 'entraide.db'}"
    return settings


@pytest.fixture(scope="session")
def postgres_url():
    """Create a throw-away PostgreSQL database for the session, or skip when none is configured."""
    base = os.environ.get(POSTGRES_VARIABLE)
    if not base:
        pytest.skip(f"{POSTGRES_VARIABLE} is not set; PostgreSQL tests need a server (see README)")
    import asyncpg

    plain = base.replace("postgresql+asyncpg://", "postgresql://")
    name = f"entraide_test_{uuid.uuid4().hex[:10]}"

    async def admin(statement: str) -> None:
        connection = await asyncpg.connect(plain)
        try:
            await connection.execute(statement)
        finally:
            await connection.close()

    try:
        asyncio.run(admin(f'CREATE DATABASE "{name}"'))
    except (OSError, asyncpg.PostgresError) as exc:
        pytest.skip(f"cannot create a test database on {POSTGRES_VARIABLE}: {exc}")
    head, _, _ = base.rpartition("/")
    yield f"{head}/{name}"
    asyncio.run(admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def database_url(request, tmp_path):
    """A database URL for store tests: SQLite always, PostgreSQL when configured."""
    if request.param == "sqlite":
        return f"sqlite+aiosqlite:///{tmp_path / 'store.db'}"
    return request.getfixturevalue("postgres_url")
