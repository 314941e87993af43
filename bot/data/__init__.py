"""Rasa-format training data: loading, validation and checks."""

from bot.data.domain import Button, Domain, Form, ResponseVariation, Slot, SlotMapping
from bot.data.findings import Finding, Findings, Location, Severity
from bot.data.project import Project, load_project, load_test_stories
from bot.data.stories import Story, expand
from bot.data.training import EntitySpan, Example, TrainingData

__all__ = [
    "Button",
    "Domain",
    "EntitySpan",
    "Example",
    "Finding",
    "Findings",
    "Form",
    "Location",
    "Project",
    "ResponseVariation",
    "Severity",
    "Slot",
    "SlotMapping",
    "Story",
    "TrainingData",
    "expand",
    "load_project",
    "load_test_stories",
]
