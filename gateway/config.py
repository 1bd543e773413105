"""gateway.yaml: schema, ${ENV} interpolation, and every error reported at once as FILE:LINE:COL: message.

`load_config(path)` returns a validated, frozen `Config` or raises `ConfigError` carrying every problem.
Secrets are pydantic `SecretStr`: they print as '**********' and never reach a log line.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)

from gateway.cmms.schema import CmmsConfig
from gateway.core.durations import parse_duration
from gateway.core.errors import ConfigError, Problem
from gateway.core.extras import need_jwt_library
from gateway.core.listen import check_exposure, check_listen, is_loopback, listen_host, listen_port
from gateway.core.yamlfile import YamlDoc, load_yaml
from gateway.fleet.config import FleetSection
from gateway.sources.schema import SourceConfig

DEFAULT_CONFIG_NAME = "gateway.yaml"
CONFIG_ENV_VAR = "MW_GATEWAY_CONFIG"

_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_-]*$")


class _Strict(BaseModel):
    # defer_build: pydantic builds a model's own validator when first used, not at import; most models are
    # only ever validated inside Config / Rule, whose validators hold them (docs/performance.md, Memory).
    model_config = ConfigDict(extra="forbid", frozen=True, defer_build=True)


class GatewaySection(_Strict):
    id: str = Field(min_length=1, max_length=64)
    state_dir: Path = Path("./state")
    rules: Path = Path("rules/")
    timezone: str | None = None

    @field_validator("timezone")
    @classmethod
    def _tz(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                ZoneInfo(value)
            except (ZoneInfoNotFoundError, ValueError):
                raise ValueError(
                    f"unknown timezone {value!r}: write an IANA name such as Europe/Paris"
                ) from None
        return value


class HttpSection(_Strict):
    listen: str = "127.0.0.1:8470"
    webhook_secret: SecretStr | None = None
    webhook_secret_previous: SecretStr | None = None  # accepted too, during a secret rotation
    signature_template: str = "{t}.{nonce}.{body}"  # what X-MW-Signature's HMAC-SHA256 signs
    signature_tolerance: float = 300.0
    max_body_bytes: int = Field(default=1_048_576, ge=1024)
    # Edge limits (issue 18.10; docs/operations.md "HTTP limits"), read per connection: a reload applies them.
    max_connections: int = Field(default=256, ge=4)  # open connections; idle ones are closed first beyond it
    header_timeout: float = 10.0  # a request's headers (and the wait for the next one) must come within this
    body_timeout: float = 30.0  # a request's whole body must come within this after its headers
    max_buffered_bytes: int = Field(default=16 * 1_048_576, ge=1024)  # request bodies held at once, in all
    servicemobility_jwt_key: SecretStr | None = None  # HS256 secret or PEM public key for x-access-token
    servicemobility_jwt_algorithms: tuple[str, ...] = ("HS256",)
    servicemobility_jwt_audience: str | None = None  # when set, the token's `aud` must name it
    servicemobility_jwt_issuer: str | None = None  # when set, the token's `iss` must be it
    # A token must carry `exp`, at most this far ahead (and, when it has `iat`, issued at most this long ago).
    servicemobility_jwt_max_age: float = 86400.0
    # ServiceMobility's work-order numbers ARE the task ids of the CMMS we deliver to: count its consumptions
    # in their reconciliation. Off: they are stored and shown, never joined to another source's task.
    servicemobility_work_orders_are_tasks: bool = False
    tls_certificate: str | None = None
    tls_key: str | None = None
    allow_plain_http: bool = False  # required to listen beyond loopback without TLS
    allow_unauthenticated: bool = False  # required to listen beyond loopback without webhook_secret and auth
    auth_token: SecretStr | None = None  # bearer token for the status page and /api/*
    auth_user: str | None = None  # basic auth for the status page and /api/*
    auth_password: SecretStr | None = None

    _tol = field_validator(
        "signature_tolerance", "servicemobility_jwt_max_age", "header_timeout", "body_timeout", mode="before"
    )(parse_duration)

    @field_validator("listen")
    @classmethod
    def _listen(cls, value: str) -> str:
        return check_listen(value, example="127.0.0.1:8470")

    @model_validator(mode="after")
    def _exposure(self) -> HttpSection:
        check_exposure(
            listen=self.listen,
            tls_certificate=self.tls_certificate,
            tls_key=self.tls_key,
            allow_plain_http=self.allow_plain_http,
            plain_hint="to accept plain HTTP on the network",
        )
        if (self.auth_user is None) != (self.auth_password is None):
            raise ValueError("auth_user and auth_password go together: set both or neither")
        if self.servicemobility_jwt_key is not None:
            need_jwt_library(self.servicemobility_jwt_algorithms)
        if self.max_buffered_bytes < self.max_body_bytes:
            raise ValueError(
                f"max_buffered_bytes ({self.max_buffered_bytes}) must be at least max_body_bytes "
                f"({self.max_body_bytes}): one largest body must fit"
            )
        if not (self.header_timeout > 0 and self.body_timeout > 0):
            raise ValueError("header_timeout and body_timeout must be positive durations")
        return self

    @property
    def authenticated(self) -> bool:
        """True when the status page and /api/* ask for credentials (a token, or a user and a password)."""
        return _set(self.auth_token) or (bool(self.auth_user) and _set(self.auth_password))

    @property
    def loopback(self) -> bool:
        """True when only this machine can connect (127.0.0.0/8, ::1, localhost)."""
        return is_loopback(self.host)

    @property
    def host(self) -> str:
        return listen_host(self.listen)

    @property
    def port(self) -> int:
        return listen_port(self.listen)


def _set(secret: SecretStr | None) -> bool:
    return secret is not None and bool(secret.get_secret_value().strip())


class DispatcherSection(_Strict):
    """How the outbox is drained toward the CMMS."""

    concurrency: int = Field(default=4, ge=1, le=64)
    rate_limit: float = Field(default=5.0, gt=0)  # requests per second toward the CMMS, at most
    retry_initial: float = 5.0
    retry_max: float = 900.0  # backoff cap
    pause_probe_interval: float = 300.0  # while paused on 401/403, probe this often
    quota_warn_ratio: float = Field(default=0.8, gt=0, le=1)
    high_priority_reserve_ratio: float = Field(default=0.1, ge=0, lt=1)
    delivered_retention: float = 30 * 86400.0  # delivered rows and webhook events older than this are pruned
    # Spare-part consumptions and reported activities (with their webhook events) older than this are pruned.
    history_retention: float = 400 * 86400.0
    idle_poll: float = 1.0

    _d = field_validator(
        "retry_initial",
        "retry_max",
        "pause_probe_interval",
        "delivered_retention",
        "history_retention",
        "idle_poll",
        mode="before",
    )(parse_duration)


class LoggingSection(_Strict):
    format: Literal["text", "logfmt", "json"] = "text"
    level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"


class Config(_Strict):
    gateway: GatewaySection
    cmms: CmmsConfig
    http: HttpSection = HttpSection()
    sources: dict[str, SourceConfig] = Field(default_factory=dict)
    dispatcher: DispatcherSection = DispatcherSection()
    logging: LoggingSection = LoggingSection()
    fleet: FleetSection | None = None  # one of many gateways on one CMMS network (docs/fleet.md)

    # Set by load_config, not by the file.
    path: Path = Path(DEFAULT_CONFIG_NAME)

    @property
    def base_dir(self) -> Path:
        return self.path.parent

    @property
    def state_dir(self) -> Path:
        return (self.base_dir / self.gateway.state_dir).resolve()

    @property
    def rules_dir(self) -> Path:
        return (self.base_dir / self.gateway.rules).resolve()

    def signal_names(self) -> set[str]:
        """Every "source.signal" name configured. An MQTT key naming wildcard levels ("{1}_temp") is given as
        an fnmatch glob ("oven.*_temp")."""
        glob = re.compile(r"[{][0-9]+[}]")
        names = {f"{src}.{glob.sub('*', sig)}" for src, cfg in self.sources.items() for sig in cfg.signals}
        # OPC UA alarms: <source>.alarm.<name>.active|severity|message|acked|source, named at run time
        return names | {f"{src}.alarm.*" for src, cfg in self.sources.items() if getattr(cfg, "alarms", None)}

    def secrets(self) -> list[str]:
        """Every secret value in the config, for the log redaction filter."""
        found: list[str] = []

        def walk(obj: Any) -> None:
            if isinstance(obj, SecretStr):
                value = obj.get_secret_value()
                if value:
                    found.append(value)
            elif isinstance(obj, BaseModel):
                for name in type(obj).model_fields:
                    walk(getattr(obj, name))
            elif isinstance(obj, Mapping):
                for item in obj.values():
                    walk(item)
            elif isinstance(obj, list | tuple):
                for item in obj:
                    walk(item)

        walk(self)
        return found


def resolve_config_path(explicit: str | os.PathLike[str] | None) -> Path:
    """-c FILE, else ./gateway.yaml, else $MW_GATEWAY_CONFIG."""
    if explicit:
        return Path(explicit)
    local = Path(DEFAULT_CONFIG_NAME)
    if local.exists():
        return local
    env = os.environ.get(CONFIG_ENV_VAR)
    if env:
        return Path(env)
    return local


def _did_you_mean(word: str, choices: list[str]) -> str:
    import difflib  # only when a key is wrong

    close = difflib.get_close_matches(word, choices, n=1, cutoff=0.6)
    return f"; did you mean {close[0]!r}?" if close else ""


def _allowed_keys(model: type[BaseModel] | None) -> list[str]:
    if model is None:
        return []
    return [f.alias or name for name, f in model.model_fields.items() if name != "path"]


_CMMS_KINDS = ("mobility_work", "amage", "servitly", "dry_run")
_PROTOCOLS = ("modbus", "opcua", "mqtt", "sparkplug")


def _model_at(parent: tuple[Any, ...]) -> type[BaseModel] | None:
    """The pydantic model whose keys apply at the raw pydantic location `parent` (for "did you mean")."""
    from gateway.cmms import schema as cmms_schema
    from gateway.sources import schema as src_schema

    sections: dict[str, type[BaseModel]] = {
        "gateway": GatewaySection,
        "http": HttpSection,
        "dispatcher": DispatcherSection,
        "logging": LoggingSection,
        "fleet": FleetSection,
    }
    if not parent:
        return Config
    head = parent[0]
    if head in sections and len(parent) == 1:
        return sections[head]
    if head == "cmms" and len(parent) == 2:
        kinds: dict[str, type[BaseModel]] = {
            "mobility_work": cmms_schema.MobilityWorkConfig,
            "amage": cmms_schema.AmageConfig,
            "servitly": cmms_schema.ServitlyConfig,
            "dry_run": cmms_schema.DryRunConfig,
        }
        return kinds.get(str(parent[1]))
    if head == "cmms" and len(parent) == 3 and parent[2] == "http":
        return cmms_schema.HttpClientOptions
    if head == "sources" and len(parent) >= 3:
        protos: dict[str, tuple[type[BaseModel], type[BaseModel]]] = {
            "modbus": (src_schema.ModbusSource, src_schema.ModbusSignal),
            "opcua": (src_schema.OpcuaSource, src_schema.OpcuaSignal),
            "mqtt": (src_schema.MqttSource, src_schema.MqttSignal),
            "sparkplug": (src_schema.SparkplugSource, src_schema.SparkplugSignal),
        }
        pair = protos.get(str(parent[2]))
        if pair is None:
            return None
        if len(parent) == 3:
            return pair[0]
        return pair[1] if len(parent) >= 5 and parent[3] == "signals" else None
    return None


def _clean_loc(loc: tuple[Any, ...]) -> tuple[Any, ...]:
    """The location as the user wrote it: drop pydantic's union tags (the discriminator values
    `mobility_work`, `modbus`, and member names like 'str' or 'function-after[...]')."""
    parts = list(loc)
    if len(parts) > 1 and parts[0] == "cmms" and parts[1] in _CMMS_KINDS:
        del parts[1]
    if len(parts) > 2 and parts[0] == "sources" and parts[2] in _PROTOCOLS:
        del parts[2]
    return tuple(
        p
        for p in parts
        if not (isinstance(p, str) and ("[" in p or p in {"str", "int", "float", "bool"} or p[:1].isupper()))
    )


def problems_from_validation(
    doc: YamlDoc, exc: ValidationError, *, prefix: tuple[Any, ...] = ()
) -> list[Problem]:
    """Turn pydantic errors into located problems, with a "did you mean" for unknown keys."""
    out: list[Problem] = []
    seen: set[tuple[Any, ...]] = set()
    for err in exc.errors(include_url=False):
        loc = (*prefix, *err["loc"])
        kind = err["type"]
        if kind == "extra_forbidden":
            key = str(loc[-1])
            allowed = _allowed_keys(_model_at(tuple(err["loc"][:-1])))
            hint = _did_you_mean(key, allowed)
            if not hint and allowed:
                hint = f"; allowed here: {', '.join(sorted(allowed))}"
            out.append(doc.problem(_clean_loc(loc), f"unknown key {key!r}{hint}", key=True))
            continue
        clean = _clean_loc(loc)
        if kind in {"union_tag_invalid", "union_tag_not_found"}:
            ctx = err.get("ctx", {})
            field = str(ctx.get("discriminator", "kind")).strip("'")
            expected = [t.strip(" '") for t in str(ctx.get("expected_tags", "")).split(",") if t.strip()]
            if kind == "union_tag_invalid":
                msg = f"{field}: {ctx.get('tag')!r} is not one of {', '.join(expected)}"
                msg += _did_you_mean(str(ctx.get("tag")), expected)
                out.append(doc.problem((*clean, field), msg))
            else:
                out.append(doc.problem(clean, f"missing {field}: (one of {', '.join(expected)})"))
            continue
        # A signal may be a string or a mapping: report only the mapping branch's errors, once.
        if (clean, err["msg"]) in seen:
            continue
        seen.add((clean, err["msg"]))
        message = err["msg"].removeprefix("Value error, ")
        if kind == "missing":
            message = f"missing required key {str(loc[-1])!r}"
            out.append(doc.problem(clean[:-1], message))
            continue
        where = ".".join(str(p) for p in clean)
        out.append(doc.problem(clean, f"{where}: {message}" if where else message))
    return out


def _check_names(doc: YamlDoc, data: Mapping[str, Any]) -> list[Problem]:
    out = []
    sources = data.get("sources") or {}
    if isinstance(sources, Mapping):
        for name, src in sources.items():
            if not _NAME.match(str(name)):
                out.append(
                    doc.problem(
                        ("sources", name), f"source name {name!r}: use letters, digits, _ and -", key=True
                    )
                )
            signals = src.get("signals") if isinstance(src, Mapping) else None
            if isinstance(signals, Mapping):
                for sig in signals:
                    if not re.match(r"^[A-Za-z_+#{][A-Za-z0-9_+#.{}-]*$", str(sig)):
                        out.append(
                            doc.problem(
                                ("sources", name, "signals", sig),
                                f"signal name {sig!r}: use letters, digits, _, - and .",
                                key=True,
                            )
                        )
    return out


def _empty_secrets(doc: YamlDoc, config: Config) -> list[Problem]:
    """Every secret that is set but empty: an empty ${VARIABLE} must not quietly turn a check off."""
    out: list[Problem] = []

    def walk(obj: Any, path: tuple[str | int, ...], optional: bool) -> None:
        if isinstance(obj, SecretStr):
            if obj.get_secret_value().strip():
                return
            where = ".".join(str(p) for p in path)
            variables = doc.env_refs.get(path)
            if variables:
                names = " and ".join(variables)
                why = (
                    f"{where} is empty because {names} is empty in the environment (under systemd: "
                    "/etc/mw-gateway/env): give it a value (`openssl rand -hex 32` makes a good secret)"
                )
            else:
                why = f"{where} is empty: write the secret (or ${{VARIABLE}} to read it from the environment)"
            if optional:
                why += f", or delete the `{path[-1]}:` line to go without it"
            out.append(doc.problem(path, why))
        elif isinstance(obj, BaseModel):
            for name, info in type(obj).model_fields.items():
                walk(getattr(obj, name), (*path, info.alias or name), not info.is_required())
        elif isinstance(obj, Mapping):
            for key, item in obj.items():
                walk(item, (*path, key), optional)
        elif isinstance(obj, list | tuple):
            for i, item in enumerate(obj):
                walk(item, (*path, i), optional)

    walk(config, (), False)
    return out


def _exposure(doc: YamlDoc, config: Config) -> list[Problem]:
    """Beyond loopback, webhooks must be signed and the status page/API must ask for credentials."""
    http = config.http
    if http.loopback or http.allow_unauthenticated:
        return []
    missing = []
    if not _set(http.webhook_secret):
        missing.append("webhook_secret (anyone on the network could post webhooks: stock, closed tasks)")
    if not http.authenticated:
        missing.append("auth_token or auth_user + auth_password (the status page and /api/* would be open)")
    if not missing:
        return []
    return [
        doc.problem(
            ("http", "listen"),
            f"http.listen {http.listen} reaches beyond this machine without {' and without '.join(missing)}: "
            "set them, or write allow_unauthenticated: true if something else (a firewall, a reverse proxy "
            "with its own authentication) guards the port",
        )
    ]


def load_config(
    path: str | os.PathLike[str], *, env: Mapping[str, str] | None = None, text: str | None = None
) -> Config:
    """Load and validate gateway.yaml. Raises ConfigError with every problem at once."""
    path = Path(path)
    if text is None and not path.exists():
        raise ConfigError(
            [
                Problem(
                    str(path),
                    0,
                    0,
                    f"no configuration file here ({path.resolve()}): write one "
                    "(see the README's configuration reference), pass -c FILE, or set "
                    f"{CONFIG_ENV_VAR}",
                )
            ]
        )
    doc = load_yaml(path, env=dict(os.environ) if env is None else env, text=text)
    problems = list(doc.problems)
    if doc.data is None and not problems:
        problems.append(Problem(doc.file, 1, 1, "the file is empty: start from the example in the README"))
    if problems and doc.data is None:
        raise ConfigError(problems)
    if not isinstance(doc.data, Mapping):
        raise ConfigError(
            [*problems, Problem(doc.file, 1, 1, "the top level must be a mapping (gateway:, cmms:, ...)")]
        )
    problems.extend(_check_names(doc, doc.data))
    try:
        config = Config.model_validate({**doc.data, "path": path})
    except ValidationError as exc:
        problems.extend(problems_from_validation(doc, exc))
        raise ConfigError(problems) from None
    problems.extend(_empty_secrets(doc, config))
    problems.extend(_exposure(doc, config))
    if problems:
        raise ConfigError(problems)
    return config
