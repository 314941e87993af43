"""Warnings and errors about data files, each tied to a file and a line."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from pathlib import Path


class Severity(enum.Enum):
    ERROR = "error"
    WARNING = "warning"


@dataclass(frozen=True, order=True)
class Location:
    path: Path
    line: int = 0

    def __str__(self) -> str:
        return f"{self.path}:{self.line}" if self.line else str(self.path)


@dataclass(frozen=True)
class Finding:
    """One problem found in the data: where it is and what to do about it."""

    severity: Severity
    location: Location
    message: str

    def __str__(self) -> str:
        return f"{self.location}: {self.severity.value}: {self.message}"


@dataclass
class Findings:
    """Findings collected while loading or checking, in the order they were found."""

    items: list[Finding] = field(default_factory=list)

    def warn(self, location: Location, message: str) -> None:
        self.items.append(Finding(Severity.WARNING, location, message))

    def error(self, location: Location, message: str) -> None:
        self.items.append(Finding(Severity.ERROR, location, message))

    @property
    def errors(self) -> list[Finding]:
        return [item for item in self.items if item.severity is Severity.ERROR]

    @property
    def warnings(self) -> list[Finding]:
        return [item for item in self.items if item.severity is Severity.WARNING]

    def sorted(self) -> list[Finding]:
        return sorted(self.items, key=lambda item: (item.location, item.message))
