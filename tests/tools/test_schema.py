"""`mw-gateway schema config|rules|tests`: valid JSON Schema, kept in schemas/, and the shipped examples
validate against it (the editor sees no error where the gateway sees none)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import jsonschema
import pytest
import yaml

from gateway.tools.schema import KINDS, json_schema

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = {
    "config": [ROOT / "gateway/demo_data/gateway.yaml"],
    "rules": sorted((ROOT / "rules").glob("*.yaml"))
    + sorted((ROOT / "gateway/demo_data/rules").glob("*.yaml")),
    "tests": sorted((ROOT / "rules/tests").glob("*.yaml")),
}


@pytest.mark.parametrize("kind", KINDS)
def test_the_schema_is_valid_json_schema_and_the_committed_copy_is_current(kind: str) -> None:
    schema = json_schema(kind)
    jsonschema.Draft202012Validator.check_schema(schema)
    committed = json.loads((ROOT / "schemas" / f"{kind}.schema.json").read_text())
    assert committed == schema, f"schemas/{kind}.schema.json is stale: run make schemas"


@pytest.mark.parametrize("kind", KINDS)
def test_every_shipped_example_validates_and_names_its_schema(kind: str) -> None:
    validator = jsonschema.Draft202012Validator(json_schema(kind))
    assert EXAMPLES[kind]
    for path in EXAMPLES[kind]:
        text = path.read_text()
        first = text.splitlines()[0]
        assert first.startswith("# yaml-language-server: $schema="), path
        assert (path.parent / first.split("=", 1)[1]).resolve() == ROOT / "schemas" / f"{kind}.schema.json"
        errors = [e.message for e in validator.iter_errors(yaml.safe_load(text))]
        assert errors == [], f"{path}: {errors}"


def test_the_schema_rejects_what_the_gateway_rejects() -> None:
    rules = jsonschema.Draft202012Validator(json_schema("rules"))
    good = {"id": "r1", "when": {"signal": "p.t", "above": 80, "for": "5m"}, "task": {"description": "hot"}}
    assert not list(rules.iter_errors([good]))
    assert list(rules.iter_errors([{**good, "cooldwon": "1h"}]))  # unknown key
    assert list(rules.iter_errors([{**good, "priority": "urgent"}]))
    assert list(rules.iter_errors([{k: v for k, v in good.items() if k != "task"}]))
    # `when:` is told apart by its trigger key, as the model's discriminator does
    windowed = {**good, "when": {"signal": "p.t", "avg": "10m", "above": 4.5, "coverage": 0.8}}
    assert not list(rules.iter_errors([windowed]))
    assert not list(rules.iter_errors([{**good, "when": {"count": "p.jam", "within": "1h", "at_least": 3}}]))
    assert list(rules.iter_errors([{**good, "when": {"counter": "p.n", "every": 5, "signal": "p.t"}}]))
    assert list(rules.iter_errors([{**good, "when": {"signal": "p.t", "coverage": 0.8, "above": 1}}]))
    config = jsonschema.Draft202012Validator(json_schema("config"))
    base = {"gateway": {"id": "g"}, "cmms": {"kind": "dry_run"}}
    modbus = {"protocol": "modbus", "host": "h", "port": "${PLC_PORT}", "signals": {"t": {"holding": 1}}}
    assert not list(config.iter_errors({**base, "sources": {"p": modbus}}))
    assert list(config.iter_errors({**base, "sources": {"p": {**modbus, "port": "five"}}}))
    assert list(config.iter_errors({**base, "sources": {"p": {**modbus, "protocol": "profibus"}}}))


def test_the_command_prints_it() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "gateway.cli", "schema", "tests"], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == json_schema("tests")
