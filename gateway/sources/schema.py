"""gateway.yaml schemas of the `sources:` section.

Pure pydantic: importing this never imports a protocol library.
"""

from __future__ import annotations

import re
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator, model_validator

from gateway.core.durations import parse_duration

Seconds = Annotated[float, Field(ge=0)]


class _Strict(BaseModel):
    # defer_build: pydantic builds a model's own validator when first used, not at import; most models are
    # only ever validated inside Config / Rule, whose validators hold them (docs/performance.md, Memory).
    model_config = ConfigDict(extra="forbid", frozen=True, defer_build=True)


# ---------------------------------------------------------------- Modbus

ModbusType = Literal[
    "int16", "uint16", "int32", "uint32", "int64", "uint64", "float32", "float64", "bool", "string"
]


class ModbusSignal(_Strict):
    """One Modbus value. Exactly one of holding / input / coil / discrete gives the table and address."""

    holding: int | None = Field(default=None, ge=0, le=65535)
    input: int | None = Field(default=None, ge=0, le=65535)
    coil: int | None = Field(default=None, ge=0, le=65535)
    discrete: int | None = Field(default=None, ge=0, le=65535)
    type: ModbusType | None = None  # default: bool for coil/discrete and with bit:, else uint16
    word_order: Literal["big", "little"] | None = None  # default: the source's word_order
    byte_order: Literal["big", "little"] | None = None  # default: the source's byte_order
    bit: int | None = Field(default=None, ge=0, le=15)  # a bit inside a register (fault words)
    length: int | None = Field(default=None, ge=1, le=125)  # registers, for type: string
    scale: float = 1.0
    offset: float = 0.0
    unit: int | None = Field(default=None, ge=0, le=255)  # overrides the source's unit id

    @model_validator(mode="after")
    def _one_table(self) -> ModbusSignal:
        tables = [t for t in ("holding", "input", "coil", "discrete") if getattr(self, t) is not None]
        if len(tables) != 1:
            raise ValueError(
                "give exactly one of holding, input, coil or discrete with the address, "
                "e.g. {holding: 100, type: uint32}"
            )
        if tables[0] in ("coil", "discrete"):
            if self.type not in (None, "bool") or self.bit is not None:
                raise ValueError(f"a {tables[0]} is one bit: leave out type: and bit:")
        elif self.bit is not None and self.type not in (None, "bool", "uint16", "int16"):
            raise ValueError("bit: reads one bit of a 16-bit register: leave out type: or write type: bool")
        if self.value_type == "string" and self.length is None:
            raise ValueError("type: string needs length: (the number of registers)")
        if self.value_type == "string" and (self.scale != 1.0 or self.offset != 0.0):
            raise ValueError("scale: and offset: apply to numbers, not to type: string")
        if self.length is not None and self.value_type != "string":
            raise ValueError("length: is only for type: string")
        address = getattr(self, tables[0])
        if address + self.register_count > 65536:
            raise ValueError(f"the value runs past the last address 65535 ({self.register_count} registers)")
        return self

    @property
    def table(self) -> str:
        for t in ("holding", "input", "coil", "discrete"):
            if getattr(self, t) is not None:
                return t
        raise AssertionError("validated")

    @property
    def address(self) -> int:
        value = getattr(self, self.table)
        assert isinstance(value, int)
        return value

    @property
    def value_type(self) -> str:
        """The type actually decoded: bool for coils, discrete inputs and bits in a register."""
        if self.coil is not None or self.discrete is not None or self.bit is not None:
            return "bool"
        return self.type or "uint16"

    @property
    def register_count(self) -> int:
        """Registers (or bits, for coil/discrete) this value occupies."""
        sizes = {
            "int16": 1,
            "uint16": 1,
            "int32": 2,
            "uint32": 2,
            "int64": 4,
            "uint64": 4,
            "float32": 2,
            "float64": 4,
            "bool": 1,
        }
        if self.value_type == "string":
            return self.length or 1
        return sizes[self.value_type]


class ModbusSource(_Strict):
    protocol: Literal["modbus"]
    host: str | None = None  # Modbus TCP
    port: int = Field(default=502, ge=1, le=65535)
    serial: str | None = None  # Modbus RTU: /dev/ttyUSB0
    baudrate: int = 9600
    parity: Literal["N", "E", "O"] = "N"
    stopbits: Literal[1, 2] = 1
    bytesize: Literal[7, 8] = 8
    unit: int = Field(default=1, ge=0, le=255)
    poll: Annotated[float, Field(gt=0)] = 1.0
    timeout: Annotated[float, Field(gt=0)] = 3.0
    max_gap: int = Field(default=16, ge=0, le=124)  # registers (or bits) read through to join two reads
    max_registers: int = Field(default=125, ge=1, le=125)  # registers per read request (the device's limit)
    max_bits: int = Field(default=2000, ge=1, le=2000)  # coils / discrete inputs per read request
    word_order: Literal["big", "little"] = "big"  # default for every signal of this source
    byte_order: Literal["big", "little"] = "big"
    reconnect_delay: Annotated[float, Field(gt=0)] = 1.0  # first backoff delay (link and per unit)
    reconnect_max_delay: Annotated[float, Field(gt=0)] = 30.0  # backoff cap
    signals: dict[str, ModbusSignal]

    _poll = field_validator("poll", "timeout", "reconnect_delay", "reconnect_max_delay", mode="before")(
        parse_duration
    )

    @model_validator(mode="after")
    def _transport(self) -> ModbusSource:
        if (self.host is None) == (self.serial is None):
            raise ValueError("give either host: (Modbus TCP) or serial: (Modbus RTU, e.g. /dev/ttyUSB0)")
        for key, sig in self.signals.items():
            if sig.table in ("holding", "input") and sig.register_count > self.max_registers:
                raise ValueError(
                    f"signal {key}: {sig.register_count} registers do not fit in one read of at most "
                    f"max_registers: {self.max_registers}"
                )
        return self


# ---------------------------------------------------------------- OPC UA


class OpcuaSignal(_Strict):
    node: str | None = None  # ns=2;s=Press1.StrokeCounter, i=2258, ns=3;g=..., nsu=urn:...;s=...
    browse_path: str | None = None  # 0:Objects/2:Press1/2:StrokeCounter
    sampling_interval: float | None = None
    type: Literal["any", "number", "bool", "string"] = "any"  # anything else is a BAD sample

    _si = field_validator("sampling_interval", mode="before")(parse_duration)

    @model_validator(mode="after")
    def _one(self) -> OpcuaSignal:
        if (self.node is None) == (self.browse_path is None):
            raise ValueError("give either node: (a NodeId such as ns=2;s=Press1.Counter) or browse_path:")
        return self


class OpcuaAlarms(_Strict):
    """`alarms:` of an OPC UA source: the conditions (Alarms & Conditions, Part 9) of one object's events, as
    signals `<source>.alarm.<name>.active|severity|message|acked|source` (gateway/sources/opcua_alarms.py)."""

    source: str = "i=2253"  # the object whose events are subscribed: the Server object, or a NodeId / nsu=
    severity_min: int = Field(
        default=0, ge=0, le=1000
    )  # a condition is active for rules at this severity or more
    name: Literal["condition", "source_condition"] = (
        "condition"  # <ConditionName> or <SourceName>.<ConditionName>
    )
    queue_size: int = Field(default=1000, ge=1, le=100000)  # events the server keeps between two publishes

    @field_validator("source")
    @classmethod
    def _node(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("alarms.source: give the NodeId of the object, e.g. i=2253 (the Server object)")
        return value.strip()


class OpcuaSource(_Strict):
    protocol: Literal["opcua"]
    url: str
    publishing_interval: float = 0.5
    sampling_interval: float | None = None
    security: str | None = None  # "Basic256Sha256,SignAndEncrypt"
    certificate: str | None = None  # client certificate (DER or PEM); generated on first run when absent
    private_key: str | None = None
    server_certificate: str | None = None  # trusted server certificate
    application_uri: str | None = None
    username: str | None = None
    password: SecretStr | None = None
    timeout: float = 4.0
    reconnect_delay: float = 1.0  # first backoff delay before the first connection succeeded
    reconnect_max_delay: float = 30.0
    queue_size: int = Field(default=1, ge=1, le=10000)  # values the server keeps per item between publishes
    keepalive: Annotated[float, Field(gt=0)] = (
        5.0  # the subscription's keep-alive; unchanged values confirmed
    )
    namespaces: dict[str, str] = Field(default_factory=dict)  # browse-path alias -> namespace URI
    signals: dict[str, str | OpcuaSignal] = Field(default_factory=dict)
    alarms: OpcuaAlarms | None = None  # alarms and conditions: signals <source>.alarm.<name>.*

    _pi = field_validator(
        "publishing_interval",
        "sampling_interval",
        "timeout",
        "reconnect_delay",
        "reconnect_max_delay",
        "keepalive",
        mode="before",
    )(parse_duration)

    @model_validator(mode="after")
    def _browse_paths(self) -> OpcuaSource:
        for alias in self.namespaces:
            if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_.-]*", alias):
                raise ValueError(f"namespaces: {alias!r} is not a usable alias (a name such as press)")
        for key, spec in self.signals.items():
            if isinstance(spec, str) or spec.browse_path is None:
                continue
            for part in spec.browse_path.strip("/").split("/"):
                prefix, colon, _ = part.partition(":")
                if colon and not prefix.isdigit() and prefix not in self.namespaces:
                    known = ", ".join(sorted(self.namespaces)) or "none"
                    raise ValueError(
                        f"signal {key}: {prefix!r} in {spec.browse_path!r} is neither a namespace index nor "
                        f"an alias of namespaces: (known: {known})"
                    )
        return self

    @field_validator("url")
    @classmethod
    def _url(cls, value: str) -> str:
        if not value.startswith("opc.tcp://"):
            raise ValueError("an OPC UA url starts with opc.tcp://, e.g. opc.tcp://10.0.0.10:4840")
        return value

    @model_validator(mode="after")
    def _alarm_names(self) -> OpcuaSource:
        if self.alarms is not None:
            taken = [key for key in self.signals if key == "alarm" or key.startswith("alarm.")]
            if taken:
                raise ValueError(f"signal {taken[0]!r}: the names alarm.* are the alarms' signals; rename it")
        return self


# ---------------------------------------------------------------- MQTT


class MqttSignal(_Strict):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    topic: str
    json_path: str | None = Field(default=None, alias="json")  # a dotted path into a JSON payload: data.temp
    timestamp: str | None = None  # a dotted path to the sample's timestamp (ISO 8601 or Unix seconds/ms)
    type: Literal["number", "string", "bool"] = "number"
    qos: Literal[0, 1] | None = None
    max_age: float | None = None  # a retained message whose timestamp is this recent counts as an observation

    _max_age = field_validator("max_age", mode="before")(parse_duration)


class MqttSource(_Strict):
    protocol: Literal["mqtt"]
    url: str  # mqtt://host:1883 or mqtts://host:8883
    client_id: str | None = None
    username: str | None = None
    password: SecretStr | None = None
    ca: str | None = None
    certificate: str | None = None
    private_key: str | None = None
    qos: Literal[0, 1] = 1
    clean_session: bool = False
    keepalive: float = 30.0
    timeout: float = 10.0
    reconnect_delay: float = 1.0
    reconnect_max_delay: float = 30.0
    max_age: float | None = None  # default of the signals' max_age (retained messages)
    signals: dict[str, str | MqttSignal]

    _ka = field_validator(
        "keepalive", "timeout", "reconnect_delay", "reconnect_max_delay", "max_age", mode="before"
    )(parse_duration)

    @model_validator(mode="after")
    def _topics(self) -> MqttSource:
        for key, spec in self.signals.items():
            topic = spec if isinstance(spec, str) else spec.topic
            levels = topic.split("/")
            if not topic or any(
                ("#" in lv and (lv != "#" or i != len(levels) - 1)) or ("+" in lv and lv != "+")
                for i, lv in enumerate(levels)
            ):
                raise ValueError(
                    f"signal {key}: {topic!r} is not a valid topic filter "
                    "(+ is a whole level, # the last level)"
                )
            wildcards = sum(lv in ("+", "#") for lv in levels)
            for n in re.findall(r"\{(\d+)\}", key):
                if not 1 <= int(n) <= wildcards:
                    raise ValueError(
                        f"signal {key}: {{{n}}} names wildcard number {n}, but {topic!r} has {wildcards}"
                    )
        return self

    @field_validator("url")
    @classmethod
    def _url(cls, value: str) -> str:
        if not (value.startswith("mqtt://") or value.startswith("mqtts://")):
            raise ValueError("an MQTT url starts with mqtt:// or mqtts://, e.g. mqtt://localhost:1883")
        return value


# ---------------------------------------------------------------- Sparkplug B

_TOPIC_LEVEL = re.compile(r"^[^/+#]+$")


def _level(what: str, value: str) -> str:
    if not _TOPIC_LEVEL.match(value):
        raise ValueError(f"{what} {value!r} must be one MQTT topic level: not empty, no '/', '+' or '#'")
    return value


class SparkplugSignal(_Strict):
    """One metric of an edge node (device: absent) or of one of its devices, by the name in its birth."""

    node: str  # the edge node id
    device: str | None = None  # the device id; absent for a node-level metric
    metric: str  # the metric name as in the NBIRTH/DBIRTH, e.g. Counters/Strokes

    @field_validator("node", "device")
    @classmethod
    def _ids(cls, value: str | None) -> str | None:
        return None if value is None else _level("an edge node or device id", value)

    @field_validator("metric")
    @classmethod
    def _metric(cls, value: str) -> str:
        if not value:
            raise ValueError("metric: give the metric name as in the birth, e.g. Counters/Strokes")
        return value


class SparkplugSource(_Strict):
    """A Sparkplug B host application (Sparkplug 3.0) on one MQTT broker; connection options as for mqtt."""

    protocol: Literal["sparkplug"]
    url: str  # mqtt://host:1883 or mqtts://host:8883
    group: str  # the Sparkplug group id
    host_id: str  # our STATE host id (spBv1.0/STATE/<host_id>); never a SCADA host's
    rebirth: bool = False  # request a rebirth (NCMD Node Control/Rebirth) on a seq gap or an unknown alias
    rebirth_interval: Annotated[float, Field(gt=0)] = 30.0  # at most one rebirth request per node per this
    client_id: str | None = None
    username: str | None = None
    password: SecretStr | None = None
    ca: str | None = None
    certificate: str | None = None
    private_key: str | None = None
    keepalive: float = 30.0
    timeout: float = 10.0
    reconnect_delay: float = 1.0
    reconnect_max_delay: float = 30.0
    signals: dict[str, SparkplugSignal]

    _ka = field_validator(
        "keepalive", "timeout", "reconnect_delay", "reconnect_max_delay", "rebirth_interval", mode="before"
    )(parse_duration)

    @field_validator("group")
    @classmethod
    def _group(cls, value: str) -> str:
        return _level("group", value)

    @field_validator("host_id")
    @classmethod
    def _host_id(cls, value: str) -> str:
        if not value.strip():
            raise ValueError(
                "host_id must name this gateway's own Sparkplug host application, different from every SCADA "
                "host's: edge nodes that follow a primary host go offline when that host's STATE says offline"
            )
        return _level("host_id", value)

    @field_validator("url")
    @classmethod
    def _url(cls, value: str) -> str:
        if not (value.startswith("mqtt://") or value.startswith("mqtts://")):
            raise ValueError("a Sparkplug url starts with mqtt:// or mqtts://, e.g. mqtt://localhost:1883")
        return value


SourceConfig = Annotated[
    ModbusSource | OpcuaSource | MqttSource | SparkplugSource, Field(discriminator="protocol")
]
