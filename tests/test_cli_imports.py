"""`mw-gateway run` imports only what running needs: building the parser (every command's options and help)
and the runtime import nothing of the other commands (backtest, bulk, the tools, the simulators, the fleet's
bus and relay), whose code would sit in every gateway's memory for nothing (docs/performance.md, Memory)."""

from __future__ import annotations

import json
import subprocess
import sys

# What `mw-gateway run` must not import: these modules and what is below them. Of the fleet, only
# gateway.fleet.config (the `fleet:` section is part of gateway.yaml's schema) and the package itself.
NOT_FOR_RUN = (
    "gateway.backtest",
    "gateway.bulk",
    "gateway.cmms.mw_bulk",
    "gateway.tools",
    "gateway.sim",
    "gateway.demo",
    "gateway.engine.ruletest",
    "gateway.engine.lint",
    "gateway.sources.probe",
    "gateway.sources.sparkplug_browse",
    "gateway.fleet",
)
ALLOWED = ("gateway.fleet", "gateway.fleet.config")


def not_for_run(module: str) -> bool:
    return module not in ALLOWED and any(module == p or module.startswith(p + ".") for p in NOT_FOR_RUN)


RUN_IMPORTS = """
import json, sys
from gateway.cli import build_parser
args = build_parser().parse_args(["run", "-c", "gateway.yaml"])
assert args.command == "run"
import gateway.runtime.lifecycle  # what main() imports for `run`
print(json.dumps(sorted(m for m in sys.modules if m.startswith("gateway"))))
"""


def test_run_imports_nothing_of_the_other_commands() -> None:
    out = subprocess.run([sys.executable, "-c", RUN_IMPORTS], capture_output=True, text=True, check=True)
    modules = json.loads(out.stdout)
    assert "gateway.runtime.lifecycle" in modules
    assert [m for m in modules if not_for_run(m)] == []


def test_bulk_help_names_the_columns_gateway_bulk_reads() -> None:
    from gateway.bulk import describe_operations  # here: bench_memory imports not_for_run from this module
    from gateway.cli import BULK_COLUMNS

    assert {name: list(columns) for name, columns in describe_operations().items()} == BULK_COLUMNS
