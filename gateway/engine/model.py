"""The rule schema: what a rule file may say, validated by pydantic, frozen.

A rule file is a YAML list of `Rule`. `when:` holds exactly one trigger, told apart by its key; the kinds and
the schema of each (`WhenModel` subclasses) are in gateway/engine/triggers/, listed by its registry
(`gateway/engine/triggers/__init__.py`). The exact semantics of each trigger are in docs/rules.md.
"""

from __future__ import annotations

import hashlib
import re
from typing import Annotated, Any, Literal

from pydantic import Field, field_validator

from gateway.engine.schema import Duration, Number, RefId, Strict
from gateway.engine.triggers import When

_RULE_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")

RESERVED_METADATA = ("gateway", "rule", "firing")


# ---------------------------------------------------------------- task


class SparePartModel(Strict):
    article: Annotated[str, Field(strict=True, min_length=1)]
    quantity: Annotated[Number, Field(gt=0)] = 1.0


class TaskModel(Strict):
    """The task to create. `description`, `title` and string metadata are Jinja2 templates."""

    equipment: RefId | None = None  # string: item code (external reference); integer: native id
    description: Annotated[str, Field(strict=True, min_length=1)]
    title: str | None = None
    assignees: list[RefId] = Field(default_factory=list)  # string: e-mail; integer: native user id
    tags: list[RefId] = Field(default_factory=list)
    duration: Duration = 3600.0
    spare_parts: list[SparePartModel] = Field(default_factory=list)
    checklist: str | None = None
    all_day: Annotated[bool, Field(strict=True)] = False
    send_email_to_assignees: Annotated[bool, Field(strict=True)] = False
    inherit_equipment_tags: Annotated[bool, Field(strict=True)] = False
    thing_id: RefId | None = None  # Servitly
    location_id: RefId | None = None  # AMAGE / Servitly
    extra: dict[str, Any] = Field(default_factory=dict)  # anything else a backend understands, passed as is


# ---------------------------------------------------------------- rule


class Rule(Strict):
    id: Annotated[str, Field(strict=True, min_length=1, max_length=100)]
    name: str = ""
    when: When
    task: TaskModel
    cooldown: Duration = 0.0
    enabled: Annotated[bool, Field(strict=True)] = True
    priority: Literal["normal", "high"] = "normal"
    metadata: dict[str, Any] = Field(default_factory=dict)
    while_open: Literal["suppress", "create"] = "suppress"
    mode: Literal["live", "shadow", "approve"] = "live"  # docs/rollout.md

    @field_validator("id")
    @classmethod
    def _id(cls, value: str) -> str:
        if not _RULE_ID.match(value):
            raise ValueError(f"rule id {value!r}: use letters, digits, '-', '_' and '.'")
        return value

    @field_validator("metadata")
    @classmethod
    def _metadata(cls, value: dict[str, Any]) -> dict[str, Any]:
        taken = [k for k in RESERVED_METADATA if k in value]
        if taken:
            raise ValueError(f"metadata key {taken[0]!r} is set by the gateway; choose another name")
        return value

    @property
    def kind(self) -> str:
        return str(self.when.kind)

    @property
    def title(self) -> str:
        return self.name or self.id

    def fingerprint(self) -> str:
        """Changes whenever anything in the rule changes (used by reload)."""
        return hashlib.sha256(self.model_dump_json(by_alias=True).encode()).hexdigest()[:16]

    def trigger_fingerprint(self) -> str:
        """Changes when the trigger changes (persisted state of another trigger does not apply)."""
        return hashlib.sha256(self.when.model_dump_json(by_alias=True).encode()).hexdigest()[:16]
