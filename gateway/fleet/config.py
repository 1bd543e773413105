"""The `fleet:` section of gateway.yaml and the relay's relay.yaml (DESIGN.md section 8, docs/fleet.md)."""

from __future__ import annotations

import re
from typing import Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    field_validator,
    model_validator,
)

from gateway.core.durations import parse_duration
from gateway.core.extras import need_jwt_library
from gateway.core.listen import check_exposure, check_listen, is_loopback, listen_host, listen_port

NAME_RE = re.compile(r"^[A-Za-z0-9_-]{1,32}$")


class _Strict(BaseModel):
    # defer_build: pydantic builds a model's own validator when first used, not at import; most models are
    # only ever validated inside Config / Rule, whose validators hold them (docs/performance.md, Memory).
    model_config = ConfigDict(extra="forbid", frozen=True, defer_build=True)


class TlsSection(_Strict):
    ca: str | None = None  # the CA that signed the NATS servers' certificates
    cert: str | None = None  # client certificate (mutual TLS), with key
    key: str | None = None

    @model_validator(mode="after")
    def _pair(self) -> TlsSection:
        if bool(self.cert) != bool(self.key):
            raise ValueError("cert and key go together: set both or neither")
        return self


class BusSection(_Strict):
    """How to reach NATS and how the fleet's streams and buckets are named and kept."""

    nats: tuple[str, ...] = Field(min_length=1)
    name: str = "mw"  # the fleet: prefix of its subjects, streams and buckets
    credentials: str | None = None  # a NATS .creds file (JWT + nkey seed)
    user: str | None = None  # or user/password
    password: SecretStr | None = None
    tls: TlsSection | None = None
    replicas: int = Field(default=3, ge=1, le=5)  # of the webhook stream and the buckets, when we create them
    retention: float = 7 * 86400.0  # how long webhooks wait in the stream for an offline gateway
    dedupe_window: float = 600.0  # Nats-Msg-Id de-duplication window of the stream
    connect_timeout: float = 2.0
    request_timeout: float = 2.0  # one JetStream API call / publish acknowledgement

    _d = field_validator("retention", "dedupe_window", "connect_timeout", "request_timeout", mode="before")(
        parse_duration
    )

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        if not NAME_RE.match(value):
            raise ValueError("name: letters, digits, _ and - only (at most 32), e.g. acme")
        return value

    @field_validator("nats")
    @classmethod
    def _urls(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for url in value:
            if not re.match(r"^(nats|tls|ws|wss)://[^\s/]+(:\d+)?/?$", url):
                raise ValueError(f"{url!r}: write nats://HOST:PORT (or tls://HOST:PORT)")
        return value

    @model_validator(mode="after")
    def _auth(self) -> BusSection:
        if (self.user is None) != (self.password is None):
            raise ValueError("user and password go together: set both or neither")
        if self.credentials and self.user:
            raise ValueError("credentials and user/password exclude each other: choose one")
        return self


class FleetSection(BusSection):
    """gateway.yaml `fleet:`: this gateway is one of many on one CMMS network."""

    quota: Literal["shared", "local"] = "shared"
    quota_share: float = Field(default=0.2, ge=0, le=1)  # of the monthly quota while NATS is unreachable
    webhooks: Literal["relay", "direct"] = "relay"
    heartbeat: float = 15.0  # seconds between status summaries in the status bucket

    _h = field_validator("heartbeat", mode="before")(parse_duration)


class RelayConfig(_Strict):
    """relay.yaml: `mw-gateway relay`, the fleet's internet-facing webhook intake."""

    listen: str = "127.0.0.1:8443"
    tls_certificate: str | None = None
    tls_key: str | None = None
    allow_plain_http: bool = False  # required to listen beyond loopback without TLS
    webhook_secret: SecretStr | None = None
    webhook_secret_previous: SecretStr | None = None
    signature_template: str = "{t}.{nonce}.{body}"
    signature_tolerance: float = 300.0
    servicemobility_jwt_key: SecretStr | None = None
    servicemobility_jwt_algorithms: tuple[str, ...] = ("HS256",)
    servicemobility_jwt_audience: str | None = None
    servicemobility_jwt_issuer: str | None = None
    servicemobility_jwt_max_age: float = 86400.0
    max_body_bytes: int = Field(default=1_048_576, ge=1024)
    rate_limit: float = Field(default=50.0, gt=0)  # webhooks per second accepted, all senders together
    rate_burst: int = Field(default=100, ge=1)
    gateways: tuple[str, ...] = ()  # receive events without metadata.gateway, besides those seen in status
    auth_token: SecretStr | None = None  # bearer token for the status page and /metrics
    fleet: BusSection

    _tol = field_validator("signature_tolerance", "servicemobility_jwt_max_age", mode="before")(
        parse_duration
    )

    @field_validator("listen")
    @classmethod
    def _listen(cls, value: str) -> str:
        return check_listen(value, example="0.0.0.0:8443")

    @model_validator(mode="after")
    def _exposure(self) -> RelayConfig:
        check_exposure(
            listen=self.listen,
            tls_certificate=self.tls_certificate,
            tls_key=self.tls_key,
            allow_plain_http=self.allow_plain_http,
            plain_hint="(behind a TLS-terminating proxy)",
        )
        if self.servicemobility_jwt_key is not None:
            need_jwt_library(self.servicemobility_jwt_algorithms)
        if not self.secrets():
            raise ValueError(
                "webhook_secret is required: the relay verifies every Mobility Work signature before "
                "anything enters the bus"
            )
        return self

    @property
    def host(self) -> str:
        return listen_host(self.listen)

    @property
    def port(self) -> int:
        return listen_port(self.listen)

    @property
    def loopback(self) -> bool:
        return is_loopback(self.host)

    def secrets(self) -> tuple[str, ...]:
        return tuple(
            s.get_secret_value()
            for s in (self.webhook_secret, self.webhook_secret_previous)
            if s is not None and s.get_secret_value()
        )


DEFAULT_RELAY_CONFIG = "relay.yaml"
RELAY_CONFIG_ENV = "MW_RELAY_CONFIG"
