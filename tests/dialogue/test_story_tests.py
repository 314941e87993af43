"""``entraide test stories`` on the shipped tests and on a broken one."""

from __future__ import annotations

from bot.dialogue.testing import run_story_tests

BROKEN = """
version: "3.1"
stories:
- story: greeting answered with the wrong action
  steps:
  - user: |
      bonjour
    intent: greet
  - action: utter_goodbye
"""


async def test_shipped_story_tests_pass(shipped_settings, capsys):
    code = await run_story_tests(shipped_settings)
    output = capsys.readouterr().out
    assert code == 0, output
    assert " 0 failed" in output


async def test_broken_story_points_at_step(shipped_settings, tmp_path, capsys):
    path = tmp_path / "broken.yml"
    path.write_text(BROKEN, encoding="utf-8")
    code = await run_story_tests(shipped_settings, path)
    output = capsys.readouterr().out
    assert code == 1
    assert f"{path}:9:" in output
    assert "expected action 'utter_goodbye'" in output
    assert "1 failed" in output
