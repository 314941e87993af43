"""Tests for bot.config: defaults, variable substitution, validation messages, desks and routing."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from bot.config import DATABASE_URL_VARIABLE, Settings, is_uai, load_settings
from bot.errors import ConfigError

# Two desks on levels 1 and 2, reused by the routing tests.
DESKS = """\
handoff:
  desks:
    - name: referent
      level: 1
      room: "!triage:example.org"
      label: Référent
    - name: technique
      level: 2
      room: "!tech:example.org"
      label: Équipe technique
"""


def write_config(folder: Path, text: str) -> Path:
    path = folder / "config.yml"
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return path


@pytest.fixture(autouse=True)
def no_database_override(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(DATABASE_URL_VARIABLE, raising=False)


def test_defaults_without_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)

    settings = load_settings()

    assert settings == Settings()
    assert settings.nlu.fallback_threshold == 0.3
    assert settings.storage.url == "sqlite+aiosqlite:///entraide.db"
    assert settings.data.nlu == Path("nlu")


def test_empty_file_gives_defaults(tmp_path: Path) -> None:
    settings = load_settings(write_config(tmp_path, ""))

    assert settings.nlu == Settings().nlu


def test_explicit_missing_file(tmp_path: Path) -> None:
    missing = tmp_path / "absent.yml"

    with pytest.raises(ConfigError) as caught:
        load_settings(missing)

    assert str(missing) in str(caught.value)
    assert "not found" in str(caught.value)


def test_top_level_list_rejected(tmp_path: Path) -> None:
    path = write_config(tmp_path, "- nlu\n- data\n")

    with pytest.raises(ConfigError, match="expected a mapping"):
        load_settings(path)


def test_malformed_yaml_names_line(tmp_path: Path) -> None:
    path = write_config(tmp_path, "nlu:\n  fallback_threshold: [0.3\nserver: {}\n")

    with pytest.raises(ConfigError) as caught:
        load_settings(path)

    assert f"{path}:" in str(caught.value)
    assert "invalid YAML" in str(caught.value)


def test_variable_substituted(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ENTRAIDE_TEST_TOKEN", "123:abc")
    path = write_config(
        tmp_path,
        """\
        channels:
          telegram:
            token: ${ENTRAIDE_TEST_TOKEN}
        """,
    )

    assert load_settings(path).channels.telegram.token == "123:abc"


def test_variable_inside_string(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ENTRAIDE_TEST_HOST", "db.example.org")
    monkeypatch.delenv("ENTRAIDE_TEST_PORT", raising=False)
    path = write_config(
        tmp_path,
        """\
        storage:
          url: postgresql+asyncpg://${ENTRAIDE_TEST_HOST}:${ENTRAIDE_TEST_PORT:-5432}/entraide
        """,
    )

    assert load_settings(path).storage.url == "postgresql+asyncpg://db.example.org:5432/entraide"


def test_default_used_when_unset(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("ENTRAIDE_TEST_REDIS", raising=False)
    path = write_config(
        tmp_path,
        """\
        storage:
          redis_url: ${ENTRAIDE_TEST_REDIS:-redis://127.0.0.1:6379/0}
        """,
    )

    assert load_settings(path).storage.redis_url == "redis://127.0.0.1:6379/0"


def test_default_used_when_empty(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ENTRAIDE_TEST_SECRET", "")
    path = write_config(
        tmp_path,
        """\
        channels:
          web:
            jwt_secret: ${ENTRAIDE_TEST_SECRET:-fallback}
        """,
    )

    assert load_settings(path).channels.web.jwt_secret == "fallback"


def test_set_variable_beats_default(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ENTRAIDE_TEST_SECRET", "from-env")
    path = write_config(
        tmp_path,
        """\
        channels:
          web:
            jwt_secret: ${ENTRAIDE_TEST_SECRET:-fallback}
        """,
    )

    assert load_settings(path).channels.web.jwt_secret == "from-env"


def test_unset_variable_names_key_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("ENTRAIDE_TEST_MISSING", raising=False)
    path = write_config(
        tmp_path,
        """\
        channels:
          telegram:
            token: ${ENTRAIDE_TEST_MISSING}
        """,
    )

    with pytest.raises(ConfigError) as caught:
        load_settings(path)

    message = str(caught.value)
    assert str(path) in message
    assert "channels.telegram.token" in message
    assert "ENTRAIDE_TEST_MISSING" in message


def test_unset_variable_list_index(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("ENTRAIDE_TEST_ORIGIN", raising=False)
    path = write_config(
        tmp_path,
        """\
        channels:
          web:
            allowed_origins:
              - https://ent.example.fr
              - ${ENTRAIDE_TEST_ORIGIN}
        """,
    )

    with pytest.raises(ConfigError, match=r"channels\.web\.allowed_origins\.1"):
        load_settings(path)


def test_unknown_key_location(tmp_path: Path) -> None:
    path = write_config(
        tmp_path,
        """\
        nlu:
          fallback_threshold: 0.4
          fallback_treshold: 0.5
        """,
    )

    with pytest.raises(ConfigError) as caught:
        load_settings(path)

    message = str(caught.value)
    assert f"{path}:3:" in message
    assert "nlu.fallback_treshold" in message
    assert "unknown key" in message


def test_wrong_type_location(tmp_path: Path) -> None:
    path = write_config(
        tmp_path,
        """\
        server:
          host: 127.0.0.1
          port: cinq
        """,
    )

    with pytest.raises(ConfigError) as caught:
        load_settings(path)

    message = str(caught.value)
    assert f"{path}:3:" in message
    assert "server.port" in message
    assert "'cinq'" in message


def test_wrong_type_in_list_names_line(tmp_path: Path) -> None:
    path = write_config(
        tmp_path,
        DESKS
        + """\
  routing:
    - desk: technique
      match:
        level: [deux]
""",
    )

    with pytest.raises(ConfigError) as caught:
        load_settings(path)

    message = str(caught.value)
    assert f"{path}:14:" in message
    assert "handoff.routing.0.match.level.0" in message


def test_every_error_reported(tmp_path: Path) -> None:
    path = write_config(
        tmp_path,
        """\
        nlu:
          min_examples: 0
        policies:
          max_history: beaucoup
        """,
    )

    with pytest.raises(ConfigError) as caught:
        load_settings(path)

    message = str(caught.value)
    assert "nlu.min_examples" in message
    assert "policies.max_history" in message


def test_database_url_override(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(DATABASE_URL_VARIABLE, "sqlite+aiosqlite:///override.db")
    path = write_config(
        tmp_path,
        """\
        storage:
          url: sqlite+aiosqlite:///from-file.db
        """,
    )

    assert load_settings(path).storage.url == "sqlite+aiosqlite:///override.db"


def test_database_override_without_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv(DATABASE_URL_VARIABLE, "sqlite+aiosqlite:///override.db")

    assert load_settings().storage.url == "sqlite+aiosqlite:///override.db"


def test_data_paths_relative_to_file(tmp_path: Path) -> None:
    folder = tmp_path / "deployment"
    folder.mkdir()
    settings = load_settings(write_config(folder, "data:\n  nlu: training\n"))

    assert settings.path(settings.data.nlu) == folder / "training"


def test_absolute_data_path_kept(tmp_path: Path) -> None:
    settings = load_settings(write_config(tmp_path, f"data:\n  models: {tmp_path / 'elsewhere'}\n"))

    assert settings.path(settings.data.models) == tmp_path / "elsewhere"


def test_telegram_enabled_needs_token(tmp_path: Path) -> None:
    path = write_config(tmp_path, "channels:\n  telegram:\n    enabled: true\n")
    settings = load_settings(path)

    with pytest.raises(ConfigError, match="channels.telegram.token"):
        settings.check_secrets()


def test_matrix_token_only_needed_to_run(tmp_path: Path) -> None:
    path = write_config(
        tmp_path, "channels:\n  matrix:\n    enabled: true\n    homeserver: http://127.0.0.1:8008\n    user_id: '@bot:localhost'\n"
    )
    settings = load_settings(path)

    assert settings.channels.matrix.access_token is None
    with pytest.raises(ConfigError, match="channels.matrix.access_token"):
        settings.check_secrets()


def test_valid_desks_and_routing(tmp_path: Path) -> None:
    path = write_config(
        tmp_path,
        DESKS
        + """\
  default_desk: referent
  routing:
    - desk: technique
      match:
        expertise: [technique]
""",
    )

    handoff = load_settings(path).handoff

    assert [desk.name for desk in handoff.desks] == ["referent", "technique"]
    assert handoff.routing[0].match.expertise == ["technique"]


def test_routing_unknown_desk(tmp_path: Path) -> None:
    path = write_config(
        tmp_path,
        DESKS
        + """\
  routing:
    - desk: editeur
""",
    )

    with pytest.raises(ConfigError) as caught:
        load_settings(path)

    message = str(caught.value)
    assert "unknown desk 'editeur'" in message
    assert str(path) in message


def test_default_desk_unknown(tmp_path: Path) -> None:
    path = write_config(tmp_path, DESKS + "  default_desk: parents\n")

    with pytest.raises(ConfigError, match="default_desk 'parents' is not a desk"):
        load_settings(path)


def test_duplicate_desk(tmp_path: Path) -> None:
    path = write_config(
        tmp_path,
        DESKS
        + """\
    - name: technique
      level: 2
      room: "!tech2:example.org"
      label: Équipe technique bis
""",
    )

    with pytest.raises(ConfigError, match="desk names must be unique, found technique twice"):
        load_settings(path)


def test_level_without_desk(tmp_path: Path) -> None:
    path = write_config(
        tmp_path,
        """\
        handoff:
          desks:
            - name: referent
              level: 1
              room: "!triage:example.org"
              label: Référent
            - name: editeur
              level: 3
              room: "!vendor:example.org"
              label: Éditeur
        """,
    )

    with pytest.raises(ConfigError, match="no desk serves level 2"):
        load_settings(path)


def test_desk_level_out_of_range(tmp_path: Path) -> None:
    path = write_config(
        tmp_path,
        """\
        handoff:
          desks:
            - name: referent
              level: 4
              room: "!triage:example.org"
              label: Référent
        """,
    )

    with pytest.raises(ConfigError) as caught:
        load_settings(path)

    assert f"{path}:4:" in str(caught.value)
    assert "handoff.desks.0.level" in str(caught.value)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        pytest.param("0751234A", True, id="valid"),
        pytest.param("0751234a", True, id="lower-case-letter"),
        pytest.param("075123A", False, id="six-digits"),
        pytest.param("07512345", False, id="no-letter"),
        pytest.param("0751234AB", False, id="two-letters"),
    ],
)
def test_is_uai(value: str, expected: bool) -> None:
    assert is_uai(value) is expected
