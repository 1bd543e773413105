"""`mw-gateway schema config|rules|tests`: the JSON Schema of gateway.yaml, of a rule file and of a rule test
file, generated from the same pydantic models the gateway validates with.

Editors read it through a first line such as

    # yaml-language-server: $schema=../schemas/rules.schema.json

(VS Code with the YAML extension: completion, hover and inline errors). The schema describes the files as
written, before the gateway's own conversions: a duration may be a number of seconds or a string such as
`5m`, and in gateway.yaml any number or boolean may be a `${VARIABLE}` reference. It cannot express the
checks that need the whole configuration (unknown signals, duplicate rule ids...): `mw-gateway check` does.
"""

from __future__ import annotations

import json
from typing import Any

from pydantic import TypeAdapter
from pydantic.json_schema import GenerateJsonSchema, JsonSchemaValue
from pydantic_core import core_schema

DIALECT = "https://json-schema.org/draft/2020-12/schema"
KINDS = ("config", "rules", "tests")
_ENV_REF = {"type": "string", "pattern": r"\$\{[A-Za-z_][A-Za-z0-9_]*(:-[^}]*)?\}"}


class _AsWritten(GenerateJsonSchema):
    """Values a before-validator converts (durations, signal names) are also accepted as strings."""

    def function_before_schema(self, schema: core_schema.BeforeValidatorFunctionSchema) -> JsonSchemaValue:
        inner = super().function_before_schema(schema)
        if inner.get("type") == "string":
            return inner
        return {"anyOf": [inner, {"type": "string"}]}


class _ConfigAsWritten(_AsWritten):
    """gateway.yaml: `${VAR}` is replaced before validation, so a number or boolean may be written as one."""

    def int_schema(self, schema: core_schema.IntSchema) -> JsonSchemaValue:
        return {"anyOf": [super().int_schema(schema), _ENV_REF]}

    def float_schema(self, schema: core_schema.FloatSchema) -> JsonSchemaValue:
        return {"anyOf": [super().float_schema(schema), _ENV_REF]}

    def bool_schema(self, schema: core_schema.BoolSchema) -> JsonSchemaValue:
        return {"anyOf": [super().bool_schema(schema), _ENV_REF]}


def json_schema(kind: str) -> dict[str, Any]:
    """The JSON Schema (draft 2020-12) of one kind of file."""
    generator: type[GenerateJsonSchema] = _AsWritten
    if kind == "config":
        from gateway.config import Config

        adapter: TypeAdapter[Any] = TypeAdapter(Config)
        generator = _ConfigAsWritten
        title, description = "mw-gateway gateway.yaml", "The gateway's configuration (docs/configuration.md)."
    elif kind == "rules":
        from gateway.engine.model import Rule

        adapter = TypeAdapter(list[Rule])
        title, description = "mw-gateway rule file", "A list of rules (docs/rules.md)."
    elif kind == "tests":
        from gateway.engine.ruletest import RuleTestFile

        adapter = TypeAdapter(RuleTestFile)
        title, description = "mw-gateway rule test file", "Rule unit tests, run by `mw-gateway test`."
    else:
        raise ValueError(f"unknown schema {kind!r}: choose one of {', '.join(KINDS)}")
    body = adapter.json_schema(mode="validation", schema_generator=generator)
    if kind == "rules":
        _tell_triggers_apart(body)
    return {"$schema": DIALECT, "title": title, "description": description, **body}


def _tell_triggers_apart(schema: dict[str, Any]) -> None:
    """`when:` is told apart by its trigger key (a function in the model, which JSON Schema cannot call):
    each member of the union requires its own key and none of the keys that would make it another kind
    (`{signal: x, avg: 10m}` is an avg trigger, not a signal one)."""
    from gateway.engine.triggers import TRIGGER_KINDS, WHEN_MODELS

    rule = schema.get("$defs", {}).get("Rule", {})
    when = rule.get("properties", {}).get("when", {})
    members = when.get("oneOf")
    if not isinstance(members, list):
        return
    kind_of = {model.__name__: kind for kind, model in WHEN_MODELS.items()}
    for i, member in enumerate(members):
        ref = member.get("$ref", "") if isinstance(member, dict) else ""
        kind = kind_of.get(ref.rsplit("/", 1)[-1])
        if kind is None:
            continue
        winners = [k for k in TRIGGER_KINDS if k != kind and kind in WHEN_MODELS[k].carries]
        condition: dict[str, Any] = {"required": [kind]}
        if winners:
            condition["not"] = {"anyOf": [{"required": [k]} for k in winners]}
        members[i] = {"allOf": [member, condition]}


def cmd_schema(kind: str) -> int:
    print(json.dumps(json_schema(kind), indent=2, sort_keys=False))
    return 0
