"""The value types shared by every part of the rule schema (triggers, task, rule): strict numbers, durations,
signal names. Pydantic only; imports nothing of the engine."""

from __future__ import annotations

import re
from typing import Annotated

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field

from gateway.core.durations import parse_duration

# A signal is named "source.signal"; the part after the first dot is free (MQTT topics, article codes).
_SIGNAL_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_-]*\.\S+$")


def _signal_name(value: object) -> object:
    if isinstance(value, str) and not _SIGNAL_NAME.match(value):
        raise ValueError(f"signal names are written source.signal (e.g. press1.strokes), got {value!r}")
    return value


Duration = Annotated[float, BeforeValidator(parse_duration)]
PositiveDuration = Annotated[float, BeforeValidator(parse_duration), Field(gt=0)]
SignalName = Annotated[str, BeforeValidator(_signal_name), Field(strict=True)]
Number = Annotated[float, Field(strict=True)]  # accepts 85 and 85.5, rejects "85" and true
Scalar = Annotated[bool, Field(strict=True)] | Annotated[int, Field(strict=True)] | Number | str
RefId = Annotated[str, Field(strict=True, min_length=1)] | Annotated[int, Field(strict=True)]


class Strict(BaseModel):
    """Every model of a rule file: unknown keys are errors, instances are frozen."""

    # defer_build: pydantic builds a model's own validator when first used, not at import; most models are
    # only ever validated inside Config / Rule, whose validators hold them (docs/performance.md, Memory).
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=False, defer_build=True)
