"""gateway.yaml schemas of the `cmms:` section, one model per backend kind, chosen by `kind`."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator

from gateway.durations import parse_duration

PLAN_QUOTAS = {"starter": 100, "premium": 500, "ultimate": 50_000}


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class HttpClientOptions(_Strict):
    """How the gateway talks to a CMMS over HTTP. Short connect timeout, long read timeout: a POST that reached
    the server should get its answer, which keeps the "committed but the response was lost" window small."""

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
    http: HttpClientOptions = HttpClientOptions()

    @property
    def quota(self) -> int:
        return self.monthly_quota if self.monthly_quota is not None else PLAN_QUOTAS[self.plan]


class AmageConfig(_Strict):
    kind: Literal["amage"]
    url: str
    device_uuid: str
    api_key: SecretStr
    key_secret: SecretStr
    header_prefix: str = "amage-"  # the seed writes the headers without prefix: set "" for that form
    sign_template: str = "{path}{key_secret}"  # what is SHA-256 hashed into api-sign
    work_order_type: str = "CORRECTIVE"
    work_order_state: str = "OPEN"
    monthly_quota: int | None = Field(default=None, ge=0)
    http: HttpClientOptions = HttpClientOptions()

    @property
    def quota(self) -> int | None:
        return self.monthly_quota


class ServitlyConfig(_Strict):
    kind: Literal["servitly"]
    url: str
    tenant: str
    username: str | None = None
    password: SecretStr | None = None
    token: SecretStr | None = None  # a personal access token for patLogin
    endpoint: Literal["maintenanceWorks", "historicalEvents"] = "maintenanceWorks"
    event_type: str = "MAINTENANCE"
    monthly_quota: int | None = Field(default=None, ge=0)
    http: HttpClientOptions = HttpClientOptions()

    @property
    def quota(self) -> int | None:
        return self.monthly_quota


class DryRunConfig(_Strict):
    kind: Literal["dry_run"]
    monthly_quota: int | None = Field(default=None, ge=0)

    @property
    def quota(self) -> int | None:
        return self.monthly_quota


CmmsConfig = Annotated[
    MobilityWorkConfig | AmageConfig | ServitlyConfig | DryRunConfig, Field(discriminator="kind")
]
