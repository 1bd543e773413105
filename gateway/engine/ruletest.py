"""`mw-gateway test PATH...`: rule unit tests in simulated time, modeled on `promtool test rules`.

    rule_files: [../press1.yaml]       # relative to the test file
    interval: 1m                       # one value of every series per interval (default 1m)
    tests:
      - name: lubrication every 50k strokes
        input:
          press1.strokes: 0+1000x120   # series notation, see parse_series
        expect:
          - {at: 50m, rule: press1-lubrication, description: "Lubricate press 1 at 50000 strokes"}

At each step t = start + i * interval: the events due (`task_closed`) are applied, then the step's sample of
every series (in the order written), then one `tick(t)`. Expected and actual firings are compared as lists;
a mismatch prints a readable diff and the exit code is 1.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal, TextIO

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError

from gateway.core.durations import format_duration, parse_duration
from gateway.core.errors import Problem, RuleError
from gateway.core.firings import Firing
from gateway.core.samples import Quality, Sample
from gateway.core.yamlfile import YamlDoc, load_yaml
from gateway.engine.engine import Engine
from gateway.engine.loader import load_rules

T0 = 1_767_225_600.0  # 2026-01-01T00:00:00Z: simulated time starts here unless `start:` says otherwise


class Missing:
    """`_` in a series: no sample at this step."""

    def __repr__(self) -> str:
        return "_"


class Stale:
    """`stale` in a series: a bad-quality sample (the link is down)."""

    def __repr__(self) -> str:
        return "stale"


MISSING = Missing()
STALE = Stale()

_NUM = r"[-+]?\d+(?:\.\d+)?(?:[eE][-+]?\d+)?"
_EXPAND = re.compile(rf"^(?P<a>{_NUM})(?:(?P<op>[-+])(?P<b>\d+(?:\.\d+)?(?:[eE][-+]?\d+)?))?x(?P<n>\d+)$")
_REPEAT = re.compile(r"^(?P<v>_|stale|true|false|'[^']*'|\"[^\"]*\")x(?P<n>\d+)$")


def _scalar(token: str) -> Any:
    if token == "_":
        return MISSING
    if token == "stale":
        return STALE
    if token in ("true", "false"):
        return token == "true"
    if len(token) >= 2 and token[0] == token[-1] and token[0] in "'\"":
        return token[1:-1]
    if re.fullmatch(_NUM, token):
        return int(token) if re.fullmatch(r"[-+]?\d+", token) else float(token)
    return token  # a bare word is a string: AUTO, MANUAL


def parse_series(spec: Any) -> list[Any]:
    """Expand a series into one entry per step.

    `a+bxn` / `a-bxn`: n+1 values a, a+b, ..., a+n*b (as promtool); `axn`: a repeated n+1 times;
    `_` no sample; `stale` a bad sample; `_xn`, `stalexn`, `truexn`, `'AUTO'xn` repeat n times; numbers,
    true/false, quoted or bare words are single values; tokens are separated by spaces.
    A YAML list gives the values one by one (null = no sample); a single number or boolean is one value.
    """
    if isinstance(spec, list):
        return [MISSING if v is None else v for v in spec]
    if isinstance(spec, bool | int | float):
        return [spec]
    if not isinstance(spec, str):
        raise ValueError(f"a series is a string like '0+10x5' or a list of values, got {spec!r}")
    out: list[Any] = []
    for token in spec.split():
        m = _EXPAND.match(token)
        if m:
            a = _scalar(m["a"])
            b = _scalar(m["b"]) if m["b"] else 0
            if m["op"] == "-":
                b = -b
            out.extend(a + b * i for i in range(int(m["n"]) + 1))
            continue
        m = _REPEAT.match(token)
        if m:
            out.extend([_scalar(m["v"])] * int(m["n"]))
            continue
        out.append(_scalar(token))
    return out


# ---------------------------------------------------------------- test file schema


def _dur(value: object) -> float:
    return parse_duration(value)


Dur = Annotated[float, BeforeValidator(_dur)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Expect(_Strict):
    at: Dur
    rule: str
    description: str | None = None
    title: str | None = None
    metadata: dict[str, Any] | None = None  # the keys given must match; others are not compared
    key: str | None = None
    equipment: str | int | None = None


class Event(_Strict):
    at: Dur
    task_closed: str  # rule id
    outcome: Literal["completed", "canceled"] = "completed"


class Case(_Strict):
    name: str
    interval: Dur | None = None
    input: dict[str, Any] = Field(default_factory=dict)
    events: list[Event] = Field(default_factory=list)
    duration: Dur | None = None  # simulate at least this long (ticks continue after the series end)
    rules: list[str] | None = None  # compare only the firings of these rules (default: every rule)
    expect: list[Expect]


class RuleTestFile(_Strict):
    rule_files: list[str] = Field(min_length=1)
    interval: Dur = 60.0
    start: float | None = None  # Unix seconds; default 2026-01-01T00:00:00Z
    tests: list[Case]


# ---------------------------------------------------------------- running


@dataclass
class CaseResult:
    name: str
    file: str
    passed: bool
    lines: list[str]


def find_test_files(paths: Sequence[str | Path]) -> list[Path]:
    """A folder gives its tests/*.yaml (or its own *.yaml when it has no tests/); a file gives itself."""
    out: list[Path] = []
    for raw in paths:
        path = Path(raw)
        if path.is_dir():
            folder = path / "tests" if (path / "tests").is_dir() else path
            out.extend(sorted(p for p in folder.iterdir() if p.suffix in (".yaml", ".yml") and p.is_file()))
        else:
            out.append(path)
    return out


def _load_test_file(path: Path) -> tuple[YamlDoc, RuleTestFile | None, list[Problem]]:
    doc = load_yaml(path, display_name=str(path))
    problems = list(doc.problems)
    if doc.data is None and not problems:
        problems.append(Problem(str(path), 1, 1, "empty test file"))
    if problems:
        return doc, None, problems
    try:
        spec = RuleTestFile.model_validate(doc.data)
    except ValidationError as exc:
        for err in exc.errors(include_url=False):
            loc = tuple(p for p in err["loc"] if not (isinstance(p, str) and ("[" in p or p[:1].isupper())))
            where = ".".join(str(p) for p in loc)
            if err["type"] == "extra_forbidden":
                problems.append(doc.problem(loc, f"unknown key {str(loc[-1])!r}", key=True))
            elif err["type"] == "missing":
                problems.append(doc.problem(loc[:-1], f"missing required key {str(loc[-1])!r}"))
            else:
                problems.append(doc.problem(loc, f"{where}: {err['msg'].removeprefix('Value error, ')}"))
        return doc, None, problems
    for i, case in enumerate(spec.tests):
        for signal, series in case.input.items():
            try:
                parse_series(series)
            except (ValueError, TypeError) as exc:
                problems.append(doc.problem(("tests", i, "input", signal), str(exc)))
    return doc, spec, problems


def _fmt_at(seconds: float) -> str:
    return format_duration(seconds) if seconds >= 1 else ("0s" if seconds == 0 else f"{seconds}s")


def _describe(at_s: float, rule: str, firing: Firing | None = None) -> str:
    text = f"at {_fmt_at(at_s):>8}  {rule}"
    if firing is not None:
        text += f"  {firing.task.description!r}"
    return text


def _compare(exp: Expect, firing: Firing) -> list[str]:
    diffs: list[str] = []
    for name, want, got in (
        ("description", exp.description, firing.task.description),
        ("title", exp.title, firing.task.title),
        ("key", exp.key, firing.key),
        ("equipment", exp.equipment, firing.task.equipment),
    ):
        if want is not None and want != got:
            diffs.append(f"      {name}:\n        expected: {want!r}\n        got:      {got!r}")
    if exp.metadata is not None:
        for k, want in exp.metadata.items():
            got = firing.metadata.get(k, "<absent>")
            if want != got:
                diffs.append(f"      metadata.{k}:\n        expected: {want!r}\n        got:      {got!r}")
    return diffs


def run_case(spec: RuleTestFile, case: Case, base: Path, file: str) -> CaseResult:
    ruleset = load_rules(
        [(base / f).resolve() if not Path(f).is_absolute() else Path(f) for f in spec.rule_files]
    )
    engine = Engine(ruleset, gateway_id="test")
    start = T0 if spec.start is None else spec.start
    interval = case.interval or spec.interval
    series = {signal: parse_series(values) for signal, values in case.input.items()}
    unknown = [e.task_closed for e in case.events if e.task_closed not in engine.rule_ids]
    unknown += [e.rule for e in case.expect if e.rule not in engine.rule_ids]
    unknown += [r for r in case.rules or () if r not in engine.rule_ids]
    if unknown:
        return CaseResult(
            case.name, file, False, [f"  unknown rule id(s): {', '.join(sorted(set(unknown)))}"]
        )
    horizon = max(
        [len(v) - 1 for v in series.values()]
        + [(case.duration or 0.0) / interval]
        + [e.at / interval for e in case.expect]
        + [e.at / interval for e in case.events]
        + [0]
    )
    steps = int(horizon + 1e-9) + 1
    events = sorted(case.events, key=lambda e: e.at)
    actual: list[tuple[float, Firing]] = []
    for i in range(steps):
        t = start + i * interval
        while events and start + events[0].at <= t + 1e-9:
            event = events.pop(0)
            engine.task_closed(event.task_closed, event.outcome, start + event.at)
        fired: list[Firing] = []
        for signal, values in series.items():
            if i >= len(values) or values[i] is MISSING:
                continue
            value = values[i]
            sample = (
                Sample(signal, None, t, Quality.BAD, "stale") if value is STALE else Sample(signal, value, t)
            )
            fired += engine.process(sample, t)
        fired += engine.tick(t)
        actual.extend((f.fired_at - start, f) for f in fired if case.rules is None or f.rule_id in case.rules)

    lines: list[str] = []
    unmatched = list(actual)
    for exp in case.expect:
        match = next((p for p in unmatched if p[1].rule_id == exp.rule and abs(p[0] - exp.at) < 1e-6), None)
        if match is None:
            lines.append(f"  - {_describe(exp.at, exp.rule)}   (expected, did not fire)")
            continue
        unmatched.remove(match)
        diffs = _compare(exp, match[1])
        if diffs:
            lines.append(f"  ~ {_describe(exp.at, exp.rule)}   (fired, but differs)")
            lines.extend(diffs)
    for at_s, firing in unmatched:
        lines.append(f"  + {_describe(at_s, firing.rule_id, firing)}   (fired, not expected)")
    if lines:
        lines.append("    expected:" + ("" if case.expect else " nothing"))
        lines.extend(f"      {_describe(e.at, e.rule)}" for e in case.expect)
        lines.append("    got:" + ("" if actual else " nothing"))
        lines.extend(f"      {_describe(a, f.rule_id, f)}" for a, f in actual)
    return CaseResult(case.name, file, not lines, lines)


def run_rule_tests(paths: Sequence[str], *, run: str | None = None, out: TextIO = sys.stdout) -> int:
    """Run every test of every test file; print results and a diff per failure. Returns the exit code."""
    pattern = re.compile(run) if run else None
    files = find_test_files(paths)
    if not files:
        print(f"no rule test files found in {', '.join(map(str, paths))}", file=out)
        return 1
    passed = failed = 0
    for path in files:
        if not path.is_file():
            print(f"{path}:0:0: no such test file", file=out)
            failed += 1
            continue
        _, spec, problems = _load_test_file(path)
        if spec is None or problems:
            for p in problems:
                print(p, file=out)
            failed += 1
            continue
        for case in spec.tests:
            if pattern is not None and not pattern.search(case.name):
                continue
            try:
                result = run_case(spec, case, path.parent, str(path))
            except RuleError as exc:
                print(f"FAIL {path}: {case.name}: the rule files do not load:", file=out)
                for p in exc.problems:
                    print(f"  {p}", file=out)
                failed += 1
                continue
            if result.passed:
                passed += 1
                print(f"ok   {path}: {case.name}", file=out)
            else:
                failed += 1
                print(f"FAIL {path}: {case.name}", file=out)
                for line in result.lines:
                    print(line, file=out)
    print(f"{passed} passed, {failed} failed", file=out)
    return 0 if failed == 0 and passed > 0 else 1
