"""``entraide requests list``, ``show`` and ``export`` on a database with three requests."""

from __future__ import annotations

import asyncio
import csv
import io
import json
from pathlib import Path

import pytest

from bot.cli import main
from bot.config import DATABASE_URL_VARIABLE
from bot.dialogue.events import BotUttered, ExpertUttered, UserUttered
from bot.handoff.requests import NewRequest, RequestBook, Status
from bot.storage.store import Store


async def fill(url: str) -> list[str]:
    """Create three requests: one new (technique), one claimed (triage), one closed with a score."""
    store = Store(url)
    await store.start()
    try:
        book = RequestBook(store)
        references = []
        for index, (desk, level) in enumerate([("technique", 2), ("triage", 1), ("technique", 2)]):
            conversation = await store.conversation("web", f"visitor-{index}")
            await store.append_events(
                conversation.id,
                [UserUttered(text=f"question {index}", intent="password_forgotten"), BotUttered(text="Je transmets.")],
            )
            new = NewRequest(conversation.id, "web", level, desk, "technique", f"question {index}", "parent", "0451234N")
            request = await book.create(new)
            references.append(request.reference)
            if index == 1:
                await book.transition(request, Status.CLAIMED, actor="@marie:test", assignee="@marie:test")
            if index == 2:
                await store.append_events(conversation.id, [ExpertUttered(text="C'est réglé.", label="Assistance technique")])
                request = await book.transition(request, Status.RESOLVED, actor="@marie:test", outcome="resolved")
                await book.transition(request, Status.CLOSED, actor="user", note="satisfaction 4/5", satisfaction=4)
        return references
    finally:
        await store.stop()


@pytest.fixture
def database(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Path, list[str]]:
    monkeypatch.delenv(DATABASE_URL_VARIABLE, raising=False)
    url = f"sqlite+aiosqlite:///{tmp_path / 'requests.db'}"
    config = tmp_path / "config.yml"
    config.write_text(f"storage:\n  url: {url}\n", encoding="utf-8")
    return config, asyncio.run(fill(url))


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_list_shows_every_request(database, capsys):
    config, references = database

    code, out, _ = run(capsys, "requests", "list", "--config", str(config))

    assert code == 0
    assert all(reference in out for reference in references)
    assert out.strip().endswith("3 request(s)")


def test_list_filters_by_status(database, capsys):
    config, references = database

    _, out, _ = run(capsys, "requests", "list", "--config", str(config), "--status", "claimed")

    assert references[1] in out
    assert references[0] not in out


def test_list_filters_by_desk_and_level(database, capsys):
    config, references = database

    _, out, _ = run(capsys, "requests", "list", "--config", str(config), "--desk", "technique", "--level", "2")

    assert references[1] not in out
    assert out.strip().endswith("2 request(s)")


def test_list_since_future_day_is_empty(database, capsys):
    config, _ = database

    _, out, _ = run(capsys, "requests", "list", "--config", str(config), "--since", "2999-01-01")

    assert out.strip().endswith("0 request(s)")


def test_list_rejects_malformed_date(database, capsys):
    config, _ = database

    with pytest.raises(SystemExit):
        main(["requests", "list", "--config", str(config), "--since", "12/03/2026"])

    assert "expected YYYY-MM-DD" in capsys.readouterr().err


def test_show_prints_transcript_and_transitions(database, capsys):
    config, references = database

    code, out, _ = run(capsys, "requests", "show", references[2], "--config", str(config))

    assert code == 0
    assert "satisfaction:    4" in out
    assert "user                     question 2" in out
    assert "expert (Assistance technique) C'est réglé." in out
    assert "resolved -> closed   by user" in out
    assert "(satisfaction 4/5)" in out


def test_show_unknown_reference_fails(database, capsys):
    config, _ = database

    code, _, err = run(capsys, "requests", "show", "ENT-1999-00001", "--config", str(config))

    assert code == 1
    assert "request ENT-1999-00001 not found" in err


def test_export_csv_to_file(database, capsys, tmp_path):
    config, references = database
    target = tmp_path / "requests.csv"

    code, _, err = run(capsys, "requests", "export", "--format", "csv", "--out", str(target), "--config", str(config))
    rows = list(csv.DictReader(io.StringIO(target.read_text(encoding="utf-8"))))

    assert code == 0
    assert "wrote 3 request(s)" in err
    assert [row["reference"] for row in rows] == references
    assert rows[2]["satisfaction"] == "4"
    assert rows[2]["closed_at"].endswith("+00:00")


def test_export_jsonl_includes_transitions(database, capsys):
    config, references = database

    _, out, _ = run(capsys, "requests", "export", "--format", "jsonl", "--status", "closed", "--config", str(config))
    rows = [json.loads(line) for line in out.splitlines()]

    assert [row["reference"] for row in rows] == [references[2]]
    assert [item["to"] for item in rows[0]["transitions"]] == ["new", "resolved", "closed"]
