"""`mw-gateway browse opc.tcp://HOST:PORT[/PATH]`: what an OPC UA server offers, as a tree or as a ready
`sources:` block for gateway.yaml.

    mw-gateway browse opc.tcp://10.0.0.10:4840                      the tree below Objects
    mw-gateway browse opc.tcp://10.0.0.10:4840 --root "nsu=urn:acme:press;s=Press1" --depth 2
    mw-gateway browse opc.tcp://10.0.0.10:4840 --yaml press1 > press1.yaml

The tree shows, per node: browse name, node id, and for variables the data type, the access level and the
current value. `--yaml NAME` prints a `sources:` block instead: one signal per variable, named after its
browse name in snake_case (made unique with the parent's name, then a number), its node id in the `nsu=`
form (it survives a server that renumbers its namespaces), and its `type:`. A progress line goes to stderr;
Ctrl-C prints what was found so far (exit 130).
"""

from __future__ import annotations

import asyncio
import os
import re
import sys
import time
from collections.abc import Sequence
from typing import Any, TextIO

from gateway.sources.opcua_browse import Found, Options, browse_server

PASSWORD_ENV = "MW_OPCUA_PASSWORD"
VALUE_MAX = 40


def snake(name: str) -> str:
    """FeedRate -> feed_rate, 'Motor 1.Speed' -> motor_1_speed, PLCState -> plc_state."""
    text = re.sub(r"([a-z0-9])([A-Z])", r"\1_\2", name)
    text = re.sub(r"([A-Z]+)([A-Z][a-z])", r"\1_\2", text)
    text = re.sub(r"[^A-Za-z0-9]+", "_", text).strip("_").lower()
    if not text:
        return "signal"
    return f"n_{text}" if text[0].isdigit() else text


def signal_names(variables: Sequence[Found]) -> list[str]:
    """One unique snake_case name per variable, in order: the browse name; variables sharing one get their
    parents' names put in front, all of them alike, one level at a time until they differ; what still
    clashes gets _2, _3..."""
    names = [snake(v.path[-1]) for v in variables]
    groups: dict[str, list[int]] = {}
    for i, name in enumerate(names):
        groups.setdefault(name, []).append(i)
    for members in groups.values():
        if len(members) < 2:
            continue
        longest = max(len(variables[i].path) for i in members)
        candidates = [names[i] for i in members]
        for up in range(2, longest + 1):
            candidates = [snake("_".join(variables[i].path[-up:])) for i in members]
            if len(set(candidates)) == len(candidates):
                break
        for i, candidate in zip(members, candidates, strict=True):
            names[i] = candidate
    taken: set[str] = set()
    unique: list[str] = []
    for name in names:
        final, k = name, 2
        while final in taken:
            final, k = f"{name}_{k}", k + 1
        taken.add(final)
        unique.append(final)
    return unique


def _value(item: Found) -> str:
    if item.status:
        return item.status
    text = repr(item.value)
    return text if len(text) <= VALUE_MAX else text[: VALUE_MAX - 3] + "..."


def format_tree(nodes: Sequence[Found]) -> str:
    """Depth first in the server's order, two spaces per level."""
    children: dict[str, list[Found]] = {}
    ids = {n.node_id for n in nodes}
    tops: list[Found] = []
    for n in nodes:
        if n.parent in ids:
            children.setdefault(n.parent, []).append(n)
        else:
            tops.append(n)
    lines: list[str] = []

    def show(item: Found, indent: int) -> None:
        pad = "  " * indent
        if item.is_variable:
            lines.append(
                f"{pad}{item.browse_name}  {item.node_id}  {item.data_type or '?'}  {item.access or '?'}"
                f"  = {_value(item)}"
            )
        else:
            lines.append(f"{pad}{item.browse_name}/  {item.node_id}")
        for child in children.get(item.node_id, []):
            show(child, indent + 1)

    for top in tops:
        show(top, 0)
    return "\n".join(lines)


def _quote(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def format_yaml(source: str, url: str, nodes: Sequence[Found], options: Options) -> str:
    """A `sources:` block with one signal per variable (every variable found, readable or not)."""
    variables = [n for n in nodes if n.is_variable]
    lines = [
        f"# mw-gateway browse {url}: {len(variables)} variables",
        "sources:",
        f"  {source}:",
        "    protocol: opcua",
        f"    url: {url}",
    ]
    if options.security:
        lines.append(f"    security: {_quote(options.security)}")
    if options.username:
        lines.append(f"    username: {_quote(options.username)}")
        lines.append(f"    password: ${{{PASSWORD_ENV}}}")
    lines.append("    signals:")
    if not variables:
        lines[-1] += " {}  # no variables found"
    for name, item in zip(signal_names(variables), variables, strict=True):
        comment = f"{item.data_type or '?'}, {item.access or '?'}: {'/'.join(item.path)}"
        lines.append(f"      {name}: {{node: {_quote(item.nsu_id)}, type: {item.signal_type}}}  # {comment}")
    return "\n".join(lines)


class _Progress:
    """The progress line on stderr: rewritten in place 5 times a second on a terminal; elsewhere (a log, a
    pipe) a line every 2 seconds."""

    def __init__(self, err: TextIO) -> None:
        self.err = err
        self.tty = err.isatty()
        self.nodes = 0
        self.variables = 0
        self.started = self._shown = time.monotonic()

    def __call__(self, item: Found) -> None:
        self.nodes += 1
        self.variables += item.is_variable
        now = time.monotonic()
        if now - self._shown >= (0.2 if self.tty else 2.0):
            self._shown = now
            self.show()

    def show(self) -> None:
        text = f"browsing: {self.nodes} nodes, {self.variables} variables"
        print(f"\r{text}" if self.tty else text, end="" if self.tty else "\n", file=self.err, flush=True)

    def done(self, text: str) -> None:
        print(f"\r\033[K{text}" if self.tty else text, file=self.err, flush=True)


def cmd_browse_opcua(
    url: str,
    *,
    root: str | None = None,
    depth: int | None = None,
    yaml_source: str | None = None,
    options: dict[str, Any] | None = None,
    max_references: int = 0,
    include_standard: bool = False,
    out: TextIO | None = None,
    err: TextIO | None = None,
) -> int:
    out = out or sys.stdout
    err = err or sys.stderr
    opts = Options(url=url, **(options or {}))
    if opts.username and opts.password is None:
        opts.password = os.environ.get(PASSWORD_ENV, "")
    nodes: list[Found] = []
    progress = _Progress(err)

    def found(item: Found) -> None:
        nodes.append(item)
        progress(item)

    code = 0
    try:
        asyncio.run(
            browse_server(
                opts,
                root=root,
                depth=depth,
                max_references=max_references,
                include_standard=include_standard,
                found=found,
            )
        )
    except KeyboardInterrupt:
        code = 130
    except Exception as exc:  # refused, timeout, asyncua's errors (BadUserAccessDenied, BadNodeIdUnknown...)
        why = f"{type(exc).__name__}: {exc}"
        if isinstance(exc, ConnectionRefusedError):
            why = "connection refused (nothing listens there: wrong port, or the server is down)"
        elif isinstance(exc, TimeoutError):
            why = f"timeout: no answer within {opts.timeout:g}s"
        progress.done(f"browse: {url}: {why}")
        return 1
    elapsed = time.monotonic() - progress.started
    variables = sum(n.is_variable for n in nodes)
    summary = f"{len(nodes)} nodes ({variables} variables) in {elapsed:.1f}s"
    if code:
        progress.done(f"browse: interrupted after {summary}; what was found so far:")
    else:
        progress.done(f"browse: {summary}")
    if yaml_source is not None:
        print(format_yaml(yaml_source, url, nodes, opts), file=out)
    else:
        print(format_tree(nodes), file=out)
    return code
