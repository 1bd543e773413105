"""Builds the configured CMMS backend, importing only its module."""

from __future__ import annotations

import importlib

import httpx

from gateway.cmms.schema import CmmsConfig
from gateway.core.clock import Clock
from gateway.core.ports import Backend

_BACKENDS = {
    "mobility_work": ("gateway.cmms.mobility_work", "MobilityWorkBackend"),
    "amage": ("gateway.cmms.amage", "AmageBackend"),
    "servitly": ("gateway.cmms.servitly", "ServitlyBackend"),
    "dry_run": ("gateway.cmms.dry_run", "DryRunBackend"),
}


def build_backend(
    config: CmmsConfig,
    *,
    gateway_id: str,
    timezone: str | None = None,
    clock: Clock | None = None,
    transport: httpx.AsyncBaseTransport | None = None,
) -> Backend:
    module_name, class_name = _BACKENDS[config.kind]
    cls = getattr(importlib.import_module(module_name), class_name)
    backend: Backend = cls(config, gateway_id=gateway_id, timezone=timezone, clock=clock, transport=transport)
    return backend


def quota_of(config: CmmsConfig) -> int | None:
    return config.quota
