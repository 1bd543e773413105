"""The rule schema: what a rule file may say, validated by pydantic, frozen.

A rule file is a YAML list of `Rule`. `when:` holds exactly one trigger, told apart by its key:
`counter`, `hours`, `signal`, `expr` or `stale`. The exact semantics of each trigger are in docs/rules.md and
in gateway/engine/triggers.py.
"""

from __future__ import annotations

import hashlib
import re
from typing import Annotated, Any, ClassVar, Literal

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Discriminator,
    Field,
    Tag,
    field_validator,
    model_validator,
)

from gateway.core.durations import parse_duration

TRIGGER_KINDS = ("counter", "hours", "signal", "expr", "stale")

# A signal is named "source.signal"; the part after the first dot is free (MQTT topics, article codes).
_SIGNAL_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_-]*\.\S+$")
_RULE_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")

# Data types whose wrap-around modulus `wrap:` may name instead of a number.
WRAP_TYPES = {"uint16": 1 << 16, "int16": 1 << 16, "uint32": 1 << 32, "int32": 1 << 32, "uint64": 1 << 64}

RESERVED_METADATA = ("gateway", "rule", "firing")


def _duration(value: object) -> float:
    return parse_duration(value)


def _signal_name(value: object) -> object:
    if isinstance(value, str) and not _SIGNAL_NAME.match(value):
        raise ValueError(f"signal names are written source.signal (e.g. press1.strokes), got {value!r}")
    return value


Duration = Annotated[float, BeforeValidator(_duration)]
SignalName = Annotated[str, BeforeValidator(_signal_name), Field(strict=True)]
Number = Annotated[float, Field(strict=True)]  # accepts 85 and 85.5, rejects "85" and true
Scalar = Annotated[bool, Field(strict=True)] | Annotated[int, Field(strict=True)] | Number | str
RefId = Annotated[str, Field(strict=True, min_length=1)] | Annotated[int, Field(strict=True)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=False)


# ---------------------------------------------------------------- triggers


class CounterWhen(_Strict):
    """Meter-based maintenance: fires once per `every` units of increase of a counter signal."""

    kind: ClassVar[str] = "counter"
    counter: SignalName
    every: Annotated[Number, Field(gt=0)]
    wrap: (
        Annotated[int, Field(strict=True, ge=2)]
        | Literal["uint16", "int16", "uint32", "int32", "uint64"]
        | None
    ) = None
    rearm: Literal["fixed", "on_completion"] = "fixed"
    unit: str = "counts"

    @property
    def wrap_modulus(self) -> int | None:
        return WRAP_TYPES[self.wrap] if isinstance(self.wrap, str) else self.wrap

    @property
    def signals(self) -> tuple[str, ...]:
        return (self.counter,)


class HoursExpr(_Strict):
    expr: Annotated[str, Field(strict=True, min_length=1)]


def _hours(value: object) -> object:
    """`every:` of an hours rule: a number of hours, or a duration such as 500h or 30d."""
    if isinstance(value, str):
        return parse_duration(value) / 3600.0
    return value


class HoursWhen(_Strict):
    """Running-hours maintenance: time accumulated while a boolean signal (or an expression) is true."""

    kind: ClassVar[str] = "hours"
    hours: SignalName | HoursExpr
    every: Annotated[Number, BeforeValidator(_hours), Field(gt=0)]  # hours
    rearm: Literal["fixed", "on_completion"] = "fixed"

    @property
    def signals(self) -> tuple[str, ...]:
        return (self.hours,) if isinstance(self.hours, str) else ()

    @property
    def expr(self) -> str | None:
        return self.hours.expr if isinstance(self.hours, HoursExpr) else None


class SignalWhen(_Strict):
    """A condition on one signal: exactly one of above / below / equals / in / bit."""

    kind: ClassVar[str] = "signal"
    signal: SignalName
    above: Number | None = None
    below: Number | None = None
    equals: Scalar | None = None
    in_: list[Scalar] | None = Field(default=None, alias="in", min_length=1)
    bit: Annotated[int, Field(strict=True, ge=0, le=63)] | None = None
    for_: Duration = Field(default=0.0, alias="for")
    reset_above: Number | None = None
    reset_below: Number | None = None

    @model_validator(mode="after")
    def _one_condition(self) -> SignalWhen:
        given = [
            name
            for name, v in (
                ("above", self.above),
                ("below", self.below),
                ("equals", self.equals),
                ("in", self.in_),
                ("bit", self.bit),
            )
            if v is not None
        ]
        if len(given) != 1:
            raise ValueError(
                "a signal trigger takes exactly one of above, below, equals, in or bit"
                + (f" (got {', '.join(given)}; use expr: to combine conditions)" if given else "")
            )
        if self.reset_below is not None:
            if self.above is None:
                raise ValueError("reset_below goes with above (re-arm once the value is back under it)")
            if self.reset_below > self.above:
                raise ValueError(
                    f"reset_below ({self.reset_below:g}) must not be over above ({self.above:g})"
                )
        if self.reset_above is not None:
            if self.below is None:
                raise ValueError("reset_above goes with below (re-arm once the value is back over it)")
            if self.reset_above < self.below:
                raise ValueError(
                    f"reset_above ({self.reset_above:g}) must not be under below ({self.below:g})"
                )
        return self

    @property
    def signals(self) -> tuple[str, ...]:
        return (self.signal,)


class ExprWhen(_Strict):
    """A safe expression over signals, e.g. `press1.pressure > 200 and press1.mode == 'AUTO'`."""

    kind: ClassVar[str] = "expr"
    expr: Annotated[str, Field(strict=True, min_length=1)]
    for_: Duration = Field(default=0.0, alias="for")

    @property
    def signals(self) -> tuple[str, ...]:
        return ()  # found by the loader in the expression


class StaleWhen(_Strict):
    """No good sample of a signal for `for`: a machine or a link is down."""

    kind: ClassVar[str] = "stale"
    stale: SignalName
    for_: Annotated[float, BeforeValidator(_duration), Field(gt=0)] = Field(alias="for")

    @property
    def signals(self) -> tuple[str, ...]:
        return (self.stale,)


def when_kind(value: Any) -> str | None:
    """The discriminator of `when:`: the one trigger key present."""
    if isinstance(value, BaseModel):
        return str(getattr(value, "kind", None))
    if isinstance(value, dict):
        keys = [k for k in TRIGGER_KINDS if k in value]
        return keys[0] if len(keys) == 1 else None
    return None


When = Annotated[
    Annotated[CounterWhen, Tag("counter")]
    | Annotated[HoursWhen, Tag("hours")]
    | Annotated[SignalWhen, Tag("signal")]
    | Annotated[ExprWhen, Tag("expr")]
    | Annotated[StaleWhen, Tag("stale")],
    Discriminator(
        when_kind,
        custom_error_type="when_kind",
        custom_error_message="when: needs exactly one trigger: counter, hours, signal, expr or stale",
    ),
]

WHEN_MODELS: dict[str, type[BaseModel]] = {
    "counter": CounterWhen,
    "hours": HoursWhen,
    "signal": SignalWhen,
    "expr": ExprWhen,
    "stale": StaleWhen,
}


# ---------------------------------------------------------------- task


class SparePartModel(_Strict):
    article: Annotated[str, Field(strict=True, min_length=1)]
    quantity: Annotated[Number, Field(gt=0)] = 1.0


class TaskModel(_Strict):
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


class Rule(_Strict):
    id: Annotated[str, Field(strict=True, min_length=1, max_length=100)]
    name: str = ""
    when: When
    task: TaskModel
    cooldown: Duration = 0.0
    enabled: Annotated[bool, Field(strict=True)] = True
    priority: Literal["normal", "high"] = "normal"
    metadata: dict[str, Any] = Field(default_factory=dict)
    while_open: Literal["suppress", "create"] = "suppress"

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
