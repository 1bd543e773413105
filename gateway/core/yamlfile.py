"""YAML with positions: load a file into plain Python data and remember where every node came from.

Pydantic reports an error at a location like ("sources", "pump7", "signals", "temp", "type"); `YamlDoc.locate`
maps that back to the line and column of the node in the file, so that every config or rule error can be
printed as FILE:LINE:COL. Duplicate keys, which PyYAML silently accepts, are reported as problems too.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from gateway.core.errors import Problem

Loc = tuple[str | int, ...]

_ENV_REF = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


@dataclass
class YamlDoc:
    """Data loaded from one YAML file, with the position of every node and the problems met on the way."""

    file: str
    data: Any
    marks: dict[Loc, tuple[int, int]] = field(default_factory=dict)
    key_marks: dict[Loc, tuple[int, int]] = field(default_factory=dict)
    problems: list[Problem] = field(default_factory=list)
    env_refs: dict[Loc, list[str]] = field(default_factory=dict)  # the ${VARIABLES} a value was made from

    def locate(self, loc: Iterable[str | int], *, key: bool = False) -> tuple[int, int]:
        """Line and column (1-based) of the deepest node on `loc` that exists in the file.

        Location parts that are not in the file (pydantic's union tags like 'function-after[...]') are
        skipped. With key=True, the position of the mapping key rather than of its value.
        """
        path: list[str | int] = []
        best = self.marks.get((), (1, 1))
        for part in loc:
            candidate = (*path, part)
            if candidate in self.marks:
                path.append(part)
                best = (self.key_marks.get(candidate) if key else None) or self.marks[candidate]
            elif isinstance(part, str) and part.isdigit() and (*path, int(part)) in self.marks:
                path.append(int(part))
                best = self.marks[tuple(path)]
        return best

    def problem(self, loc: Iterable[str | int], message: str, *, key: bool = False) -> Problem:
        line, col = self.locate(loc, key=key)
        return Problem(self.file, line, col, message)


# Values a file may hold once its aliases and merges are expanded: a rule file of 1,000 rules holds about
# 20,000, a gateway.yaml of 10,000 signals about 50,000; nine aliases of nine aliases ("billion laughs") hold
# 10^9, which would take hours and all the memory. 200,000 values take about half a second and 50 MB.
MAX_VALUES = 200_000


class _TooMany(Exception):
    def __init__(self, node: Node) -> None:
        self.node = node


_MERGE = "tag:yaml.org,2002:merge"


def _expanded(root: Node) -> None:
    """Raise _TooMany at the first collection whose aliases and merges (`<<: *x`) expand past MAX_VALUES,
    before anything is built or flattened: PyYAML's merge copies key-value pairs, aliases share nodes, so a
    small file can stand for 10^9 values. Sizes are memoized per node: linear in the file's size."""
    sizes: dict[int, int] = {}

    def size(node: Node) -> int:
        known = sizes.get(id(node))
        if known is not None:
            return known
        total = 1
        if isinstance(node, MappingNode | SequenceNode):
            items = node.value if isinstance(node, SequenceNode) else [n for pair in node.value for n in pair]
            for item in items:
                if not (isinstance(item, ScalarNode) and item.tag == _MERGE):
                    total += size(item)
            if total > MAX_VALUES:
                raise _TooMany(node)
        sizes[id(node)] = total
        return total

    size(root)


class _Builder:
    def __init__(self, doc: YamlDoc, interpolate: Callable[[str, Node], str] | None) -> None:
        self.doc = doc
        self.interpolate = interpolate
        self.loader = yaml.SafeLoader("")
        # Per mapping node: its keys as written, before flatten_mapping mixes in the merged ones (`<<: *x`),
        # which a written key may override: only two written keys are a duplicate.
        self.written: dict[int, set[int]] = {}

    def build(self, node: Node, path: Loc) -> Any:
        self.doc.marks[path] = (node.start_mark.line + 1, node.start_mark.column + 1)
        if isinstance(node, MappingNode):
            written = self.written.setdefault(id(node), {id(k) for k, _ in node.value if k.tag != _MERGE})
            self.loader.flatten_mapping(node)
            out: dict[Any, Any] = {}
            seen: set[Any] = set()  # written keys met so far
            for key_node, value_node in node.value:
                # a key must be a scalar: a collection there is refused unbuilt
                key = self.loader.construct_object(key_node) if isinstance(key_node, ScalarNode) else None
                if not isinstance(key, str | int | float | bool):
                    self.doc.problems.append(
                        Problem(
                            self.doc.file,
                            key_node.start_mark.line + 1,
                            key_node.start_mark.column + 1,
                            "a mapping key must be a plain name",
                        )
                    )
                    continue
                if isinstance(key, bool | float):
                    key = str(key).lower() if isinstance(key, bool) else str(key)
                if id(key_node) in written:
                    if key in seen:
                        self.doc.problems.append(
                            Problem(
                                self.doc.file,
                                key_node.start_mark.line + 1,
                                key_node.start_mark.column + 1,
                                f"duplicate key {key!r}: the later value would silently win; keep one",
                            )
                        )
                    seen.add(key)
                child = (*path, key)
                self.doc.key_marks[child] = (key_node.start_mark.line + 1, key_node.start_mark.column + 1)
                out[key] = self.build(value_node, child)
            return out
        if isinstance(node, SequenceNode):
            return [self.build(item, (*path, i)) for i, item in enumerate(node.value)]
        assert isinstance(node, ScalarNode)
        if self.interpolate is not None and node.tag == "tag:yaml.org,2002:str" and "${" in node.value:
            # A substituted value stays text, quoted or not: it is never re-read as YAML, so an empty variable
            # is "" (not null), and a secret such as 123456789, yes or 2024-01-01 stays that string. A key
            # that wants a number or a boolean (`port: ${PORT}`) gets it from the schema's conversion.
            self.doc.env_refs[path] = [m.group(1) for m in _ENV_REF.finditer(node.value)]
            return self.interpolate(node.value, node)
        return self.loader.construct_object(node, deep=True)


def load_yaml(
    path: str | os.PathLike[str],
    *,
    display_name: str | None = None,
    env: Mapping[str, str] | None = None,
    text: str | None = None,
) -> YamlDoc:
    """Load one YAML file. With `env`, `${VAR}` and `${VAR:-default}` in strings are replaced from it (the
    result is always a string, never re-read as a number, boolean, date or null) and an unset variable without
    a default is a problem at its line. Syntax errors become problems, not exceptions.
    """
    name = display_name or str(path)
    doc = YamlDoc(file=name, data=None)
    if text is None:
        try:
            text = Path(path).read_text(encoding="utf-8")
        except FileNotFoundError:
            doc.problems.append(Problem(name, 0, 0, "file not found"))
            return doc
        except (OSError, UnicodeDecodeError) as exc:
            doc.problems.append(Problem(name, 0, 0, f"cannot read file: {exc}"))
            return doc

    def interpolate(value: str, node: Node) -> str:
        assert env is not None

        def sub(match: re.Match[str]) -> str:
            var, default = match.group(1), match.group(2)
            if var in env:
                return env[var]
            if default is not None:
                return default
            doc.problems.append(
                Problem(
                    name,
                    node.start_mark.line + 1,
                    node.start_mark.column + 1 + match.start(),
                    f"environment variable {var} is not set: export it (under systemd, put it in "
                    f"/etc/mw-gateway/env) or write ${{{var}:-default}}",
                )
            )
            return match.group(0)  # left as written, so that no second error is reported for the same value

        return _ENV_REF.sub(sub, value)

    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
    except RecursionError:  # PyYAML composes nested collections recursively
        doc.problems.append(_too_deep(name, text))
        return doc
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line, col = (mark.line + 1, mark.column + 1) if mark else (0, 0)
        doc.problems.append(Problem(name, line, col, f"YAML syntax error: {exc.problem or exc}"))
        return doc
    except yaml.reader.ReaderError as exc:
        # Only a character position is given: turn it into a line and a column.
        before = text[: exc.position]
        line, col = before.count("\n") + 1, exc.position - (before.rfind("\n") + 1) + 1
        char = exc.character if isinstance(exc.character, str) else chr(exc.character)
        doc.problems.append(
            Problem(
                name,
                line,
                col,
                f"unreadable character {char!r} ({exc.reason}): remove it"
                " or retype the line; YAML files must be plain UTF-8 text",
            )
        )
        return doc
    except yaml.YAMLError as exc:
        doc.problems.append(Problem(name, 0, 0, f"YAML error: {exc}"))
        return doc
    if node is None:
        doc.data = None
        return doc
    try:
        _expanded(node)
        doc.data = _Builder(doc, interpolate if env is not None else None).build(node, ())
    except RecursionError:
        doc.problems.append(_too_deep(name, text))
        doc.data = None
    except _TooMany as exc:
        mark = exc.node.start_mark
        doc.problems.append(
            Problem(
                name,
                mark.line + 1,
                mark.column + 1,
                f"more than {MAX_VALUES:,} values once its aliases (*name) are expanded: write the values"
                " out, or use fewer aliases of aliases",
            )
        )
        doc.data = None
    except (
        yaml.MarkedYAMLError
    ) as exc:  # a tag we do not construct (`!!python/object`, `=`): refused, located
        mark = exc.problem_mark or exc.context_mark
        line, col = (mark.line + 1, mark.column + 1) if mark else (1, 1)
        doc.problems.append(
            Problem(
                name,
                line,
                col,
                f"unsupported YAML value: {exc.problem or exc}; write a "
                "plain string, number, list or mapping",
            )
        )
        doc.data = None
    return doc


def _too_deep(name: str, text: str) -> Problem:
    """PyYAML recursed too deep on nested collections: where the nesting is deepest (found by the scanner,
    which does not recurse)."""
    depth = deepest = 0
    line, col = 1, 1
    starts = (
        yaml.FlowSequenceStartToken,
        yaml.FlowMappingStartToken,
        yaml.BlockSequenceStartToken,
        yaml.BlockMappingStartToken,
    )
    ends = (yaml.FlowSequenceEndToken, yaml.FlowMappingEndToken, yaml.BlockEndToken)
    try:
        for token in yaml.scan(text, Loader=yaml.SafeLoader):
            if isinstance(token, starts):
                depth += 1
                if depth > deepest:
                    deepest = depth
                    line, col = token.start_mark.line + 1, token.start_mark.column + 1
            elif isinstance(token, ends):
                depth -= 1
    except yaml.YAMLError:
        pass
    return Problem(
        name,
        line,
        col,
        f"nested {deepest} levels deep, too deep to read: no configuration or rule needs that; flatten it",
    )
