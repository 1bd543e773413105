"""gateway.yaml schemas of the `cmms:` section, one model per backend kind, chosen by `kind`."""

from __future__ import annotations

import re
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator, model_validator

from gateway.core.durations import parse_duration

PLAN_QUOTAS = {"starter": 100, "premium": 500, "ultimate": 50_000}


class _Strict(BaseModel):
    # defer_build: pydantic builds a model's own validator when first used, not at import; most models are
    # only ever validated inside Config / Rule, whose validators hold them (docs/performance.md, Memory).
    model_config = ConfigDict(extra="forbid", frozen=True, defer_build=True)


class HttpClientOptions(_Strict):
    """How the gateway talks to a CMMS over HTTP. Short connect timeout, long read timeout: a POST that
    reached the server should get its answer, which keeps the "committed but the response was lost" window
    small. TLS: `ca` (a PEM file) is the only CA trusted when given; otherwise, with `verify_tls` (default
    true), the operating system's trust store (Debian's ca-certificates, where a plant proxy's CA is added
    with update-ca-certificates; SSL_CERT_FILE / SSL_CERT_DIR steer it), certifi's bundle only when the
    system has none; `verify_tls: false` verifies nothing."""

    connect_timeout: float = 5.0
    read_timeout: float = 60.0
    verify_tls: bool = True
    ca: str | None = None

    @field_validator("connect_timeout", "read_timeout", mode="before")
    @classmethod
    def _d(cls, value: object) -> float:
        return parse_duration(value)


class MobilityWorkConfig(_Strict):
    kind: Literal["mobility_work"]
    url: str = "https://api.mobility-work.com"
    api_key: SecretStr
    plan: Literal["starter", "premium", "ultimate"] = "starter"
    monthly_quota: int | None = Field(default=None, ge=0)  # overrides the plan's quota
    network_name: str | None = None
    send_email_to_assignees: bool = False
    # How an item code (a rule's string equipment) is written: the task endpoint's own words are
    # {"type": "external"} (seed 001, "equipment_identifier"); "externalReference" is the spare parts' name
    # for it, "plain" sends the bare item code and lets the API infer the type. Change it only for a network
    # that proves the default wrong (docs/mobility-work.md).
    equipment_identifier: Literal["external", "externalReference", "plain"] = "external"
    http: HttpClientOptions = HttpClientOptions()

    @property
    def quota(self) -> int:
        return self.monthly_quota if self.monthly_quota is not None else PLAN_QUOTAS[self.plan]


class AmageConfig(_Strict):
    """AMAGE work orders (docs/backends.md). The document does not say what `api-sign` hashes: by default the
    SHA-256 hex digest of the request path followed by the key secret; `sign_template` changes the string."""

    kind: Literal["amage"]
    url: str  # the server root, e.g. https://acme.amage.example
    base_path: str = "/rest/amage/v1/work-orders"
    device_uuid: str
    api_key: SecretStr
    key_secret: SecretStr
    header_prefix: str = "amage-"  # the seed writes the headers without prefix: set "" for that form
    # what api-sign hashes; fields {method} {path} {body} {api_key} {device_uuid} {key_secret}
    sign_template: str = "{path}{key_secret}"
    work_order_type_uuid: str | None = None  # typeUuid of every work order, unless the rule sets type_uuid
    work_order_state: Literal["NEW", "SCHEDULED", "IN_PROGRESS", "ON_HOLD", "FINISHED", "VOID"] = "NEW"
    department_uuid: str | None = None  # assignedDepartmentUuid when the rule names no user or department
    users: dict[str, str] = Field(default_factory=dict)  # rule assignee (e-mail or id) -> AMAGE user uuid
    element_types: dict[str, str] = Field(default_factory=dict)  # spare-part article -> element type uuid
    # rule equipment (item code or id) -> AMAGE resource uuid, joined to the work order's resource plan
    assets: dict[str, str] = Field(default_factory=dict)
    # how AMAGE says "this uuid is taken" / "this resource is already on the plan"
    duplicate_pattern: str = r"(?i)already exists|already in|duplicate"
    monthly_quota: int | None = Field(default=None, ge=0)
    http: HttpClientOptions = HttpClientOptions()

    @field_validator("sign_template")
    @classmethod
    def _template(cls, value: str) -> str:
        fields = {"method": "", "path": "", "body": "", "api_key": "", "device_uuid": "", "key_secret": ""}
        try:
            value.format(**fields)
        except (KeyError, IndexError, ValueError) as exc:
            raise ValueError(
                f"bad sign_template {value!r} ({exc}): use the fields {{method}} {{path}} {{body}} "
                "{api_key} {device_uuid} {key_secret}"
            ) from None
        return value

    @field_validator("duplicate_pattern")
    @classmethod
    def _pattern(cls, value: str) -> str:
        try:
            re.compile(value)
        except re.error as exc:
            raise ValueError(f"bad regular expression {value!r}: {exc}") from None
        return value

    @property
    def quota(self) -> int | None:
        return self.monthly_quota


class ServitlyConfig(_Strict):
    """Servitly (docs/backends.md). Log in with a personal access token (`pat`, recommended) or with
    `email` + `password`; both need the client's `api_key`. The JWT is renewed by logging in again."""

    kind: Literal["servitly"]
    url: str  # the API base URI, e.g. https://api.servitly.example
    tenant: str = Field(min_length=1)  # X-Servitly-Tenant
    api_key: SecretStr
    pat: SecretStr | None = None  # personal access token -> POST /identity/users/patLogin
    email: str | None = None  # user credentials -> POST /identity/users/login
    password: SecretStr | None = None
    # seed 003: maintenanceWorks is "Deprecated ... Use the EVENTS endpoints instead"
    endpoint: Literal["maintenanceWorks", "historicalEvents"] = "historicalEvents"
    event_type: str = "MAINTENANCE"  # maintenanceWorks `type`, unless the rule sets type
    alert_definition_id: str | None = None  # historicalEvents `alertDefinitionId`, unless the rule sets it
    things: dict[str, str] = Field(default_factory=dict)  # equipment -> thingId, when the rule gives none
    token_refresh_margin: float = 60.0  # log in again this long before the token expires
    monthly_quota: int | None = Field(default=None, ge=0)
    http: HttpClientOptions = HttpClientOptions()

    _margin = field_validator("token_refresh_margin", mode="before")(parse_duration)

    @model_validator(mode="after")
    def _one_login(self) -> ServitlyConfig:
        with_user = self.email is not None or self.password is not None
        if self.pat is not None and with_user:
            raise ValueError("give either pat, or email and password, not both")
        if self.pat is None and (self.email is None or self.password is None):
            raise ValueError("give pat (a personal access token), or both email and password")
        return self

    @property
    def quota(self) -> int | None:
        return self.monthly_quota


class DryRunConfig(_Strict):
    """Send nothing; record what would have been sent. `compare_with` renders each task as that backend's
    request (its own `cmms:` settings), else as a neutral JSON rendering of the task."""

    kind: Literal["dry_run"]
    compare_with: MobilityWorkConfig | AmageConfig | ServitlyConfig | None = Field(
        default=None, discriminator="kind"
    )
    monthly_quota: int | None = Field(default=None, ge=0)

    @property
    def quota(self) -> int | None:
        return self.monthly_quota


CmmsConfig = Annotated[
    MobilityWorkConfig | AmageConfig | ServitlyConfig | DryRunConfig, Field(discriminator="kind")
]
