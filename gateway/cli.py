"""`mw-gateway` command line: argument parsing only; every command calls into its module.

Over 500 lines because it declares 17 commands and their options in one place (what `--help` shows); no
command does its work here.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from gateway import __version__
from gateway.cmms.schema import PLAN_QUOTAS
from gateway.config import CONFIG_ENV_VAR, Config, load_config, resolve_config_path
from gateway.core.errors import ConfigError, Problem, ProblemsError

EPILOG = f"-c defaults to ./gateway.yaml, then ${CONFIG_ENV_VAR}."


def _add_config(p: argparse.ArgumentParser) -> None:
    p.add_argument("-c", "--config", help="gateway.yaml (default: ./gateway.yaml, then $MW_GATEWAY_CONFIG)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mw-gateway",
        description="Shop-floor edge gateway: machine signals -> maintenance rules -> CMMS tasks.",
        epilog=EPILOG,
    )
    parser.add_argument("--version", action="version", version=f"mw-gateway {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("run", help="run the gateway (what systemd starts)")
    _add_config(p)
    p = sub.add_parser("check", help="validate gateway.yaml and every rule file; print FILE:LINE:COL errors")
    _add_config(p)
    p = sub.add_parser("test", help="run rule unit tests (rules/tests/*.yaml) in simulated time")
    p.add_argument("paths", nargs="+", metavar="PATH", help="test files, or rule folders holding tests/")
    p.add_argument("--run", metavar="REGEX", help="only tests whose name matches")
    p = sub.add_parser(
        "backtest", help="run rule files over historical data: how often would they have fired?"
    )
    _backtest_arguments(p)
    p = sub.add_parser("demo", help="simulated machines + a local Mobility Work simulator + the gateway")
    p.add_argument("--seconds", type=float, default=None, help="stop after N seconds (default: until Ctrl-C)")
    p.add_argument("--port", type=int, default=None, help="HTTP port of the gateway (default: a free one)")
    p.add_argument("--speed", type=float, default=None, help="machine time acceleration")
    p = sub.add_parser("outbox", help="inspect and act on queued and dead CMMS calls")
    _add_config(p)
    p.add_argument(
        "action", nargs="?", default="list", choices=["list", "show", "retry", "drop", "approve", "reject"]
    )
    p.add_argument("id", nargs="?", type=int, help="outbox row id (show, retry, drop, approve, reject)")
    p.add_argument("--status", action="append", help="list only rows in this status (repeatable)")
    p.add_argument(
        "--dry-run", action="store_true", help="list the shadow tasks recorded by the dry_run backend"
    )
    p.add_argument(
        "--shadow",
        action="store_true",
        help="list the firings of `mode: shadow` rules with the request the backend would have sent",
    )
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.add_argument("--limit", type=int, default=200)
    p = sub.add_parser("reconcile", help="firings -> tasks -> spare-part consumption, with discrepancies")
    _add_config(p)
    p.add_argument("--format", choices=["table", "json", "csv"], default="table")
    p.add_argument("--since", help="only firings from this date (YYYY-MM-DD or ISO 8601)")
    p.add_argument("--rule", help="only this rule id")
    p = sub.add_parser(
        "bulk",
        help="Mobility Work bulk updates (spare parts, stock, equipment, locations) from a CSV or JSON file",
        epilog=_bulk_epilog(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _add_config(p)
    p.add_argument(
        "operation",
        choices=sorted(_bulk_operations()),
        metavar="OPERATION",
        help=", ".join(sorted(_bulk_operations())),
    )
    p.add_argument(
        "file", type=Path, metavar="FILE", help="CSV (header = column names) or JSON list of objects"
    )
    p.add_argument(
        "--currency", help="currency of unit_price when the file has no currency column (e.g. EUR)"
    )
    p.add_argument(
        "--dry-run", action="store_true", help="print the requests that would be sent; send nothing"
    )
    p.add_argument(
        "--start-at",
        type=int,
        default=1,
        metavar="ROW",
        help="send from this row on (1 = the first data row): resumes a run the report says stopped",
    )
    p = sub.add_parser(
        "probe", help="read every configured signal once and print raw value, value, quality and error"
    )
    _add_config(p)
    p.add_argument("--source", metavar="NAME", help="only this source")
    p.add_argument(
        "--seconds", type=float, default=10.0, help="how long to wait for values (default 10; MQTT messages)"
    )
    p = sub.add_parser(
        "browse",
        help="list what an OPC UA server (or a Sparkplug B group) offers, or print a ready sources: block",
        description="Walk an OPC UA server's address space (the password of --username is read from "
        "$MW_OPCUA_PASSWORD), or list the Sparkplug B edge nodes of a group from their births (the "
        "password of --username from $MW_MQTT_PASSWORD).",
    )
    p.add_argument("url", help="opc.tcp://HOST:PORT[/PATH], or mqtt://HOST:PORT with --sparkplug GROUP")
    p.add_argument("--root", metavar="NODE", help="start here (a node id; default: the Objects folder)")
    p.add_argument("--depth", type=int, metavar="N", help="levels below the root (default: all)")
    p.add_argument("--yaml", metavar="SOURCE", help="print a gateway.yaml sources: block for source SOURCE")
    p.add_argument("--security", help="e.g. Basic256Sha256,SignAndEncrypt (as in gateway.yaml)")
    p.add_argument("--certificate", help="client certificate (OPC UA default: generated under ./state/opcua)")
    p.add_argument("--private-key", help="the client certificate's private key")
    p.add_argument("--ca", help="mqtts: the CA certificate of the broker (default: the system's)")
    p.add_argument("--server-certificate", help="the server's certificate, to trust")
    p.add_argument(
        "--username", help="user name (password from $MW_OPCUA_PASSWORD, Sparkplug: $MW_MQTT_PASSWORD)"
    )
    p.add_argument("--timeout", type=float, default=10.0, help="seconds per request (default 10)")
    p.add_argument(
        "--max-references",
        type=int,
        default=0,
        metavar="N",
        help="ask for at most N references per node and request (default: the server's choice)",
    )
    p.add_argument(
        "--include-standard",
        action="store_true",
        help="also list namespace 0 below Objects (the Server object's diagnostics)",
    )
    p.add_argument(
        "--sparkplug", metavar="GROUP", help="list the Sparkplug B edge nodes of GROUP from their births"
    )
    p.add_argument("--seconds", type=float, default=10.0, help="Sparkplug: how long to listen (default 10)")
    p.add_argument(
        "--rebirth", action="store_true", help="ask nodes heard without a birth for one (Sparkplug)"
    )
    p = sub.add_parser("schema", help="print the JSON Schema of gateway.yaml, rule files or rule tests")
    p.add_argument("kind", choices=["config", "rules", "tests"])
    p = sub.add_parser("relay", help="the fleet's webhook relay: verify, then publish to NATS JetStream")
    p.add_argument("-c", "--config", help="relay.yaml (default: ./relay.yaml, then $MW_RELAY_CONFIG)")
    p = sub.add_parser("fleet", help="every gateway of the fleet, with the age of its last heartbeat")
    _add_config(p)
    p.add_argument("--format", choices=["table", "json"], default="table")
    p = sub.add_parser("mw-sim", help="the Mobility Work API simulator on its own")
    p.add_argument("rest", nargs=argparse.REMAINDER, help="simulator options (see mw-gateway mw-sim --help)")
    return parser


def cmd_browse(args: argparse.Namespace) -> int:
    if args.sparkplug is not None and args.url.startswith(("mqtt://", "mqtts://")):
        from gateway.sources.sparkplug_browse import cmd_browse as browse_sparkplug

        login = {
            "username": args.username,
            "ca": args.ca,
            "certificate": args.certificate,
            "private_key": args.private_key,
        }
        return browse_sparkplug(
            args.url,
            args.sparkplug,
            seconds=args.seconds,
            yaml_source=args.yaml,
            rebirth=args.rebirth,
            **login,
        )
    if args.url.startswith("opc.tcp://"):
        from gateway.tools.browse import cmd_browse_opcua

        options = {
            "security": args.security,
            "certificate": args.certificate,
            "private_key": args.private_key,
            "server_certificate": args.server_certificate,
            "username": args.username,
            "timeout": args.timeout,
        }
        return cmd_browse_opcua(
            args.url,
            root=args.root,
            depth=args.depth,
            yaml_source=args.yaml,
            options=options,
            max_references=args.max_references,
            include_standard=args.include_standard,
        )
    print("browse: give opc.tcp://HOST:PORT, or mqtt://HOST:PORT --sparkplug GROUP", file=sys.stderr)
    return 2


def main(argv: Sequence[str] | None = None) -> int:
    args_list = list(sys.argv[1:] if argv is None else argv)
    if args_list[:1] == ["mw-sim"]:
        from gateway.sim.mobility_work import main as sim_main

        return sim_main(args_list[1:])
    args = build_parser().parse_args(args_list)
    try:
        if args.command == "run":
            from gateway.runtime.lifecycle import run_gateway

            return run_gateway(resolve_config_path(args.config))
        if args.command == "check":
            return cmd_check(resolve_config_path(args.config))
        if args.command == "test":
            from gateway.engine.ruletest import run_rule_tests

            return run_rule_tests(args.paths, run=args.run)
        if args.command == "backtest":
            from gateway.backtest import main as backtest_main

            return backtest_main(args)
        if args.command == "demo":
            from gateway.demo import run_demo

            return run_demo(seconds=args.seconds, port=args.port, speed=args.speed)
        if args.command == "outbox":
            return asyncio.run(cmd_outbox(args))
        if args.command == "bulk":
            from gateway.bulk import cmd_bulk

            config = _config_or_exit(resolve_config_path(args.config))
            return asyncio.run(
                cmd_bulk(
                    config,
                    args.operation,
                    args.file,
                    currency=args.currency,
                    dry_run=args.dry_run,
                    start_at=args.start_at,
                )
            )
        if args.command == "probe":
            from gateway.tools.probe import cmd_probe

            return cmd_probe(resolve_config_path(args.config), source=args.source, seconds=args.seconds)
        if args.command == "schema":
            from gateway.tools.schema import cmd_schema

            return cmd_schema(args.kind)
        if args.command == "reconcile":
            from gateway.reconcile import cmd_reconcile

            config = _config_or_exit(resolve_config_path(args.config))
            return asyncio.run(cmd_reconcile(config, fmt=args.format, since=args.since, rule=args.rule))
        if args.command == "browse":
            return cmd_browse(args)
        if args.command == "relay":
            from gateway.fleet.cli import cmd_relay, resolve_relay_path

            return cmd_relay(resolve_relay_path(args.config))
        if args.command == "fleet":
            from gateway.fleet.cli import cmd_fleet

            config = _config_or_exit(resolve_config_path(args.config))
            return cmd_fleet(config.fleet, config.gateway.id, args.format)
    except KeyboardInterrupt:
        return 130
    except ProblemsError as exc:
        print(exc, file=sys.stderr)
        return 1
    return 2


def _backtest_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("paths", nargs="+", metavar="PATH", help="rule files or folders of rule files")
    p.add_argument(
        "--data", nargs="+", required=True, metavar="FILE", help="CSV (long or wide) or Parquet files"
    )
    p.add_argument("--from", dest="start", metavar="DATE", help="ignore rows before (YYYY-MM-DD or ISO 8601)")
    p.add_argument("--to", dest="end", metavar="DATE", help="ignore rows after (YYYY-MM-DD or ISO 8601)")
    quota = p.add_mutually_exclusive_group()
    quota.add_argument("--plan", choices=sorted(PLAN_QUOTAS), help="monthly task quota of this plan")
    quota.add_argument("--quota", type=int, metavar="N", help="monthly task quota")
    p.add_argument(
        "--assume-open",
        metavar="DURATION",
        help="how long a task stays open (while_open: suppress); default: the task's duration",
    )
    p.add_argument("--format", choices=["table", "json", "csv"], default="table")
    p.add_argument(
        "--tick",
        metavar="DURATION",
        help="also tick every DURATION between the data's times (--tick 1s: as `run`); default: a tick at "
        "every time of the data, as `mw-gateway test` at every step",
    )
    p.add_argument("--timezone", default="UTC", help="months are counted in this timezone (default UTC)")
    p.add_argument(
        "--reader",
        choices=["auto", "arrow", "csv"],
        default="auto",
        help="auto: pyarrow when installed, else the csv module",
    )


# The columns of each `bulk` operation, for its --help: written out so that building the parser (every
# command, `run` included) does not import gateway.bulk and the Mobility Work bulk client.
# tests/test_cli_imports.py checks them against gateway.bulk.describe_operations().
BULK_COLUMNS: dict[str, list[str]] = {
    name: columns.split()
    for name, columns in {
        "create-spare-parts": "external_reference name unit_price location quantity description minimum_stock"
        " maximum_stock gtin cost_center",
        "update-stock": "article quantity",
        "update-spare-parts": "id name description external_reference unit_price minimum_stock maximum_stock"
        " replenishment_lot gtin cost_center custom_fields tags",
        "create-equipment": "name description gtin cost_center item_code private tags custom_fields",
        "update-equipment": "id name description gtin cost_center item_code tags custom_fields",
        "create-locations": "name",
        "relocate-spare-parts": "article to from",
    }.items()
}


def _bulk_epilog() -> str:
    lines = ["columns of each operation (CSV header or JSON keys):"]
    lines += [f"  {name}: {', '.join(cols)}" for name, cols in BULK_COLUMNS.items()]
    return "\n".join(lines)


def _bulk_operations() -> list[str]:
    return list(BULK_COLUMNS)


def _config_or_exit(path: Path) -> Config:
    try:
        return load_config(path)
    except ConfigError as exc:
        print(exc, file=sys.stderr)
        raise SystemExit(1) from None


def cmd_check(path: Path) -> int:
    """Report every problem of gateway.yaml and every rule file at once."""
    from gateway.engine.loader import load_rules
    from gateway.runtime.reload import known_signals, poll_intervals

    problems: list[Problem] = []
    config: Config | None = None
    try:
        config = load_config(path)
    except ConfigError as exc:
        problems.extend(exc.problems)
    rules_dir = config.rules_dir if config else _raw_rules_dir(path)
    rule_count = 0
    if rules_dir is not None:
        signals = known_signals(config) if config else _raw_signal_names(path)
        try:
            polls = poll_intervals(config) if config else None
            ruleset = load_rules(rules_dir, known_signals=signals, poll_intervals=polls)
            rule_count = len(ruleset.rules)
        except ProblemsError as exc:
            problems.extend(exc.problems)
        problems.extend(_lint(rules_dir, signals, config))
    problems = list(dict.fromkeys(problems))  # the same problem found by the loader and the lint pass
    for problem in sorted(problems, key=lambda p: (p.file, p.line, p.col)):
        print(problem)
    if problems:
        print(f"{len(problems)} problem{'s' if len(problems) != 1 else ''} found", file=sys.stderr)
        return 1
    assert config is not None
    if rule_count:
        from gateway.engine.advice import while_open_advice

        for warning in while_open_advice(ruleset, webhooks=_accepts_webhooks(config)):
            print(warning, file=sys.stderr)
    print(f"{path}: OK ({len(config.sources)} sources, {rule_count} rules, CMMS {config.cmms.kind})")
    return 0


def _accepts_webhooks(config: Config) -> bool:
    return config.http.webhook_secret is not None or config.http.servicemobility_jwt_key is not None


def _lint(rules_dir: Path, signals: Any, config: Config | None) -> list[Problem]:
    """What the loader leaves for a second round (a rule's other problems behind its schema errors) and
    what it does not check (empty assignees, comparisons the declared types make impossible)."""
    from gateway.engine.lint import lint_rules
    from gateway.tools.check import signal_types

    return lint_rules(rules_dir, known_signals=signals, signal_types=signal_types(config) if config else None)


def _raw_rules_dir(path: Path) -> Path | None:
    """Where the rules are when gateway.yaml itself did not validate: still check them."""
    from gateway.core.yamlfile import load_yaml

    doc = load_yaml(path)
    rules = "rules/"
    if isinstance(doc.data, dict) and isinstance(doc.data.get("gateway"), dict):
        rules = str(doc.data["gateway"].get("rules", rules))
    candidate = (path.parent / rules).resolve()
    return candidate if candidate.exists() else None


def _raw_signal_names(path: Path) -> set[str] | None:
    """Signal names as written in a gateway.yaml that did not validate, so that rules are still checked
    against them. None (no check) when even the `sources:` section cannot be read."""
    from gateway.core.yamlfile import load_yaml

    doc = load_yaml(path)
    sources = doc.data.get("sources") if isinstance(doc.data, dict) else None
    if not isinstance(sources, dict):
        return None
    names = {"cmms.stock.*"}
    for source, cfg in sources.items():
        signals = cfg.get("signals") if isinstance(cfg, dict) else None
        if isinstance(signals, dict):
            names.update(f"{source}.{name}" for name in signals)
        if isinstance(cfg, dict) and cfg.get("alarms"):
            names.add(f"{source}.alarm.*")
    return names


def _fmt_ts(ts: float | None) -> str:
    return "-" if ts is None else time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(ts))


async def cmd_outbox(args: argparse.Namespace) -> int:
    from gateway.store import Store

    config = _config_or_exit(resolve_config_path(args.config))
    store = await Store.open(config.state_dir, gateway_id=config.gateway.id)
    try:
        if args.action == "list":
            statuses = ["shadow"] if args.shadow else args.status
            rows = await store.outbox.list(
                statuses=statuses, limit=args.limit, delivered_by="dry_run" if args.dry_run else None
            )
            if args.json:
                print(json.dumps([_row_json(r) for r in rows], indent=2, default=str))
                return 0
            if args.shadow:
                _print_shadow_rows(rows)
                return 0
            _print_outbox_table(rows)
            counts = await store.outbox.counts()
            print("\n" + "  ".join(f"{k}: {v}" for k, v in counts.items()))
            return 0
        if args.id is None:
            print(
                f"mw-gateway outbox {args.action} needs an ID (see `mw-gateway outbox list`)", file=sys.stderr
            )
            return 2
        if args.action == "show":
            row = await store.outbox.get(args.id)
            if row is None:
                print(f"no outbox row {args.id}", file=sys.stderr)
                return 1
            if args.json:
                print(json.dumps(_row_json(row), indent=2, default=str))
            else:
                print(explain_row(row))
            return 0
        if args.action == "retry":
            ok = await store.outbox.retry(args.id)
            print(
                f"outbox row {args.id} queued for an immediate attempt"
                if ok
                else f"outbox row {args.id} cannot be retried (unknown or already delivered)"
            )
            return 0 if ok else 1
        if args.action == "drop":
            ok = await store.outbox.drop(args.id)
            print(
                f"outbox row {args.id} dropped (kept for the record, never sent)"
                if ok
                else f"outbox row {args.id} cannot be dropped (unknown, delivered, dropped or in flight)"
            )
            return 0 if ok else 1
        if args.action in ("approve", "reject"):
            decide = store.outbox.approve if args.action == "approve" else store.outbox.reject
            ok = await decide(args.id, by="cli")
            if ok:
                print(
                    f"outbox row {args.id} approved: queued for delivery (the running gateway sends it)"
                    if args.action == "approve"
                    else f"outbox row {args.id} rejected (kept for the record, never sent)"
                )
                return 0
            row = await store.outbox.get(args.id)
            why = "unknown" if row is None else f"it is {row.status.value}, not awaiting_approval"
            print(f"outbox row {args.id} cannot be {args.action}d: {why}", file=sys.stderr)
            return 1
    finally:
        await store.close()
    return 2


def _print_shadow_rows(rows: Sequence[Any]) -> None:
    """Each shadow firing with the request the backend would have sent (rendered by the running gateway)."""
    if not rows:
        print("(no shadow firings)")
    for r in rows:
        print(f"{r.id}  {_fmt_ts(r.created_at)}  rule {r.rule_id}  firing {r.firing_uuid}")
        print(f"    {r.firing.task.description[:100]}")
        if r.last_error:
            print(f"    not renderable: {r.last_error}")
        elif r.last_request is None:
            print("    (not rendered yet: the running gateway renders it on its next dispatcher pass)")
        else:
            print("    would send:")
            for line in json.dumps(r.last_request, indent=2, default=str).splitlines():
                print("      " + line)


def _row_json(row: Any) -> dict[str, Any]:
    return {
        "id": row.id,
        "status": row.status.value,
        "rule": row.rule_id,
        "firing": row.firing_uuid,
        "key": row.firing_key,
        "priority": row.priority,
        "attempts": row.attempts,
        "next_attempt_at": row.next_attempt_at,
        "created_at": row.created_at,
        "delivered_at": row.delivered_at,
        "delivered_by": row.delivered_by,
        "last_status_code": row.last_status_code,
        "last_error": row.last_error,
        "last_details": row.last_details,
        "maybe_committed": getattr(row, "maybe_committed", 0),
        "mode": row.firing.mode,
        "decided_at": getattr(row, "decided_at", None),
        "decided_by": getattr(row, "decided_by", None),
        "request": row.last_request,
        "task": row.firing.to_json()["task"],
    }


def _print_outbox_table(rows: Sequence[Any]) -> None:
    header = ("ID", "STATUS", "RULE", "PRIO", "ATTEMPTS", "NEXT ATTEMPT", "LAST ERROR")
    table = [header]
    for r in rows:
        status = "retrying" if r.status.value == "queued" and r.attempts else r.status.value
        status += " (dup?)" if getattr(r, "maybe_committed", 0) else ""
        nxt = _fmt_ts(r.next_attempt_at) if r.status.value == "queued" else "-"
        table.append(
            (str(r.id), status, r.rule_id, r.priority, str(r.attempts), nxt, (r.last_error or "")[:60])
        )
    widths = [max(len(row[i]) for row in table) for i in range(len(header))]
    for row in table:
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip())
    if len(table) == 1:
        print("(no rows)")


def explain_row(row: Any) -> str:
    """A dead letter explained field by field, with the server's own words."""
    lines = [
        f"outbox row {row.id}: {row.status.value}"
        + (f" after {row.attempts} attempt(s)" if row.attempts else ""),
        f"  rule:      {row.rule_id}   priority: {row.priority}",
        f"  firing:    {row.firing_uuid}   key: {row.firing_key}",
        f"  created:   {_fmt_ts(row.created_at)}   updated: {_fmt_ts(row.updated_at)}",
    ]
    if row.status.value == "queued":
        lines.append(f"  next attempt: {_fmt_ts(row.next_attempt_at)}")
    if row.delivered_at:
        lines.append(f"  delivered: {_fmt_ts(row.delivered_at)} by {row.delivered_by}")
    if getattr(row, "maybe_committed", 0):
        lines.append(
            f"  possible duplicate: {row.maybe_committed} attempt(s) may have created the task without the"
            f" answer reaching us (last at {_fmt_ts(row.maybe_committed_at)}); the CMMS may hold two tasks"
            f" for firing {row.firing_uuid}: `mw-gateway reconcile` shows whether it does"
        )
    if row.last_error:
        lines.append(f"  last error: {row.last_error}")
    details = row.last_details
    if isinstance(details, dict):
        ext = (
            details.get("extended_message") if isinstance(details.get("extended_message"), dict) else details
        )
        prop = ext.get("property_errors") if isinstance(ext, dict) else None
        glob = ext.get("global_errors") if isinstance(ext, dict) else None
        if prop:
            lines.append("  the CMMS rejected these fields:")
            request = (row.last_request or {}).get("json", {}) if isinstance(row.last_request, dict) else {}
            for pointer, errors in prop.items():
                sent = _json_pointer(request, pointer)
                for err in errors if isinstance(errors, list) else [errors]:
                    if isinstance(err, dict):
                        params = ", ".join(f"{k}={v}" for k, v in (err.get("parameters") or {}).items())
                        key, was = err.get("messageKey"), json.dumps(sent, default=str)
                        lines.append(f"    {pointer}: {key} ({params}); we sent {was}")
                    else:
                        lines.append(f"    {pointer}: {err}; we sent {json.dumps(sent, default=str)}")
        if glob:
            for err in glob:
                lines.append(f"  global error: {err.get('messageKey') if isinstance(err, dict) else err}")
        if not prop and not glob:
            lines.append(f"  server said: {json.dumps(details)}")
    elif details is not None:
        lines.append(f"  server said: {details}")
    if row.last_request:
        lines.append("  request sent:")
        lines.extend(
            "    " + line for line in json.dumps(row.last_request, indent=2, default=str).splitlines()
        )
    if getattr(row, "decided_at", None) is not None:
        verb = "rejected" if row.status.value == "rejected" else "approved"
        lines.append(f"  {verb}:  {_fmt_ts(row.decided_at)} by {row.decided_by}")
    if row.status.value == "awaiting_approval":
        lines.append(
            f"  waits for a person: mw-gateway outbox approve {row.id}  (or: outbox reject {row.id})"
        )
    if row.status.value == "dead":
        lines.append(
            f"  fix the rule or the CMMS data, then: mw-gateway outbox retry {row.id}"
            f"  (or drop it: mw-gateway outbox drop {row.id})"
        )
    return "\n".join(lines)


def _json_pointer(doc: Any, pointer: str) -> Any:
    current = doc
    for part in [p for p in pointer.strip("/").split("/") if p]:
        if isinstance(current, list) and part.isdigit() and int(part) < len(current):
            current = current[int(part)]
        elif isinstance(current, dict) and part in current:
            current = current[part]
        else:
            return None
    return current


if __name__ == "__main__":
    raise SystemExit(main())
