"""Read YAML while keeping the line of every mapping key and list item."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ruamel.yaml import YAML
from ruamel.yaml.comments import CommentedMap, CommentedSeq
from ruamel.yaml.error import MarkedYAMLError, YAMLError

from bot.errors import TrainingDataError


def load_yaml(path: Path, error: type[Exception] = TrainingDataError) -> Any:
    """Parse one YAML file in round-trip mode, so nodes remember their lines.

    Raises ``error`` naming the file and line when the text is not valid YAML.
    """
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise error(f"{path}: file not found") from None
    except UnicodeDecodeError as exc:
        raise error(f"{path}: not valid UTF-8 ({exc.reason} at byte {exc.start})") from None

    yaml = YAML(typ="rt")
    yaml.allow_duplicate_keys = False
    try:
        return yaml.load(text)
    except MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark is not None else "?"
        problem = exc.problem or exc.context or "invalid YAML"
        raise error(f"{path}:{line}: invalid YAML: {problem}") from None
    except YAMLError as exc:
        raise error(f"{path}: invalid YAML: {exc}") from None


def line_of(node: Any, key: Any = None) -> int:
    """Return the 1-based line of ``node``, or of ``node[key]`` when a key or index is given.

    Returns 0 when the node carries no position (plain Python values).
    """
    try:
        if key is None:
            return node.lc.line + 1
        if isinstance(node, CommentedMap):
            return node.lc.key(key)[0] + 1
        if isinstance(node, CommentedSeq):
            return node.lc.item(key)[0] + 1
    except (AttributeError, KeyError, IndexError, TypeError):
        return 0
    return 0


def plain(node: Any) -> Any:
    """Convert round-trip YAML nodes into plain dicts, lists and scalars."""
    if isinstance(node, dict):
        return {str(key): plain(value) for key, value in node.items()}
    if isinstance(node, list):
        return [plain(item) for item in node]
    if isinstance(node, str):
        return str(node)
    return node
