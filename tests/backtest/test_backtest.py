"""`mw-gateway backtest`: readers, errors with FILE:LINE, while_open suppression, the quota per month."""

from __future__ import annotations

import io
import itertools
import json
import re
from pathlib import Path

import pytest

from gateway.backtest.data import merged, open_streams
from gateway.backtest.run import run_backtest
from gateway.cli import main
from gateway.core.samples import Quality
from gateway.engine.loader import load_rules

READERS = ["arrow", "csv"]

RULES = """
- id: hot
  when: {signal: m.temp, above: 50}
  task: {equipment: 1, description: "hot {{ value }} (level {{ plant.level }})", assignees: [1], duration: 2h}
- id: jam
  when: {signal: m.jam, equals: true}
  while_open: create
  priority: high
  task: {equipment: 1, description: "jam", assignees: [1]}
"""


@pytest.fixture
def rules(tmp_path: Path) -> Path:
    path = tmp_path / "rules.yaml"
    path.write_text(RULES)
    return path


def _run(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(["backtest", *argv])
    out, err = capsys.readouterr()
    return code, out, err


def _long(tmp_path: Path, rows: list[str], name: str = "data.csv") -> Path:
    path = tmp_path / name
    path.write_text("time,signal,value,quality\n" + "\n".join(rows) + "\n")
    return path


def _hot_episodes(n: int, *, start_day: int = 1, hours_apart: float = 1.0) -> list[str]:
    """n episodes of m.temp going over 50 and back, `hours_apart` hours apart, in January 2026."""
    rows = []
    for i in range(n):
        t = 1_767_225_600 + (start_day - 1) * 86400 + i * hours_apart * 3600
        rows += [f"{t},m.temp,60,good", f"{t + 60},m.temp,20,good"]
    return rows


@pytest.mark.parametrize("reader", READERS)
def test_json_shape_suppression_and_template_values(rules, tmp_path, capsys, reader):
    # level is used by no trigger; the template sees its value as of the firing's time
    data = _long(tmp_path, ["2026-01-01T00:00:00Z,plant.level,7,good", *_hot_episodes(4)])
    code, out, err = _run(capsys, str(rules), "--data", str(data), "--format", "json", "--reader", reader)
    assert code == 0, err
    doc = json.loads(out)
    hot = next(r for r in doc["rules"] if r["id"] == "hot")
    # duration 2h, episodes 1h apart: every other one finds the previous task open
    assert (hot["firings"], hot["suppressed"], hot["months"]) == (4, 2, {"2026-01": 4})
    assert hot["first"] == "2026-01-01T00:00:00Z" and hot["last"] == "2026-01-01T03:00:00Z"
    assert doc["months"] == [
        {"month": "2026-01", "tasks": 2, "quota": None, "held": 0, "held_normal": 0, "high_priority": 0}
    ]
    assert "no data for m.jam (used by jam)" in err
    result = run_backtest(load_rules(rules), [data], reader=reader, keep_firings=True)
    assert [f.task.description for f, _ in result.firings] == ["hot 60 (level 7)"] * 4
    assert [fate for _, fate in result.firings] == ["task", "suppressed", "task", "suppressed"]


@pytest.mark.parametrize("reader", READERS)
def test_assume_open_overrides_the_duration(rules, tmp_path, capsys, reader):
    data = _long(tmp_path, _hot_episodes(4))
    code, out, _ = _run(
        capsys,
        str(rules),
        "--data",
        str(data),
        "--format",
        "json",
        "--assume-open",
        "30m",
        "--reader",
        reader,
    )
    assert code == 0
    assert json.loads(out)["rules"][0]["suppressed"] == 0


@pytest.mark.parametrize("reader", READERS)
def test_quota_holds_normal_tasks_past_the_reserve(rules, tmp_path, capsys, reader):
    # 12 hot tasks in January (3 h apart: never suppressed), quota 10: normal ones stop at 9 (reserve 10%)
    rows = _hot_episodes(12, hours_apart=3)
    rows += ["2026-02-01T00:00:00Z,m.jam,true,good", "2026-02-01T00:01:00Z,m.jam,false,good"]
    data = _long(tmp_path, rows)
    code, out, _ = _run(capsys, str(rules), "--data", str(data), "--quota", "10", "--reader", reader)
    assert code == 0
    assert "2026-01     12     0     10     3  <- 3 normal-priority task(s) held" in out
    assert "2026-02      1     1     10     0" in out
    code, out, _ = _run(capsys, str(rules), "--data", str(data), "--plan", "starter", "--format", "csv")
    assert out.splitlines() == [
        "rule,month,firings,suppressed,tasks,quota,held",
        "hot,2026-01,12,0,12,,",
        "jam,2026-02,1,0,1,,",
        "*,2026-01,,,12,100,0",
        "*,2026-02,,,1,100,0",
    ]


@pytest.mark.parametrize("reader", READERS)
def test_wide_csv_iso_offsets_and_window(rules, tmp_path, capsys, reader):
    data = tmp_path / "wide.csv"
    data.write_text(
        "time,m.temp,plant.level\n"
        "2026-01-31T23:00:00+00:00,20,1\n"
        "2026-02-01T01:00:00+01:00,60,\n"  # = 00:00Z; an empty cell is no sample
        "2026-02-01T00:30:00Z,bad,2\n"
        "2026-02-01T01:00:00Z,70,3\n"
    )
    code, out, err = _run(capsys, str(rules), "--data", str(data), "--format", "json", "--reader", reader)
    assert code == 0, err
    hot = json.loads(out)["rules"][0]
    # 60 fires; the bad sample in between does not re-arm a plain threshold... it does not fire again
    assert hot["firings"] == 1
    assert hot["months"] == {"2026-02": 1} and hot["first"] == "2026-02-01T00:00:00Z"
    code, out, _ = _run(
        capsys, str(rules), "--data", str(data), "--format", "json", "--to", "2026-01-31", "--reader", reader
    )
    assert json.loads(out)["rules"][0]["firings"] == 0
    code, out, _ = _run(
        capsys,
        str(rules),
        "--data",
        str(data),
        "--format",
        "json",
        "--from",
        "2026-02-01T00:45:00Z",
        "--reader",
        reader,
    )
    assert json.loads(out)["rules"][0]["first"] == "2026-02-01T01:00:00Z"


@pytest.mark.parametrize("reader", READERS)
@pytest.mark.parametrize(
    ("body", "message"),
    [
        ("time,signal,value\n2026-01-01T00:00:00Z,m.temp,1\nyesterday,m.temp,2\n", "data.csv:3: bad time"),
        ("time,signal,value\n100,m.temp,1\n99,m.temp,2\n", "data.csv:3: time goes backwards"),
        ("time,signal,value,quality\n100,m.temp,1,good\n101,m.temp,2,maybe\n", "data.csv:3: quality 'maybe'"),
        ("time,signal,value\n100,m.temp,1\n101,m.temp,2,3\n", "data.csv:3: 4 columns, the header has 3"),
        ("when,signal,value\n100,m.temp,1\n", "data.csv:1: the first column must be `time`"),
    ],
)
def test_bad_rows_are_named_by_file_and_line(rules, tmp_path, capsys, reader, body, message):
    (tmp_path / "data.csv").write_text(body)
    code, _, err = _run(capsys, str(rules), "--data", str(tmp_path / "data.csv"), "--reader", reader)
    assert code == 2
    assert message in err


_BAD_FILE = (None, Quality.BAD, "bad quality in the data file")
_CELLS = [  # a cell's text -> its sample (value, quality, reason), or None for no sample
    ("bad", _BAD_FILE),
    ("stale", _BAD_FILE),
    ("Stale", _BAD_FILE),
    (" bad ", _BAD_FILE),
    ("running", ("running", Quality.GOOD, "")),
    (" 60 ", (60, Quality.GOOD, "")),
    ("4.5", (4.5, Quality.GOOD, "")),
    ("", (None, Quality.BAD, "empty value")),  # long form; in the wide form: no sample
    ("  ", (None, Quality.BAD, "empty value")),
]


@pytest.mark.parametrize("reader", READERS)
@pytest.mark.parametrize("form", ["long", "wide"])
def test_readers_agree_on_bad_stale_empty_and_text_values(tmp_path, reader, form):
    # m.x drives a rule (its samples are built as the rows go); m.y does not (looked up when a template asks)
    path = tmp_path / "data.csv"
    if form == "long":
        rows = [f"{i},{name},{text}" for i, (text, _) in enumerate(_CELLS) for name in ("m.x", "m.y")]
        path.write_text("time,signal,value\n" + "\n".join(rows) + "\n")
    else:
        path.write_text(
            "time,m.x,m.y\n" + "".join(f"{i},{text},{text}\n" for i, (text, _) in enumerate(_CELLS))
        )
    streams, _ = open_streams(
        [path], {"m.x"}, start=None, end=None, reader=reader, progress_out=None, clock=lambda: 0.0
    )
    got = {t: [(s.value, s.quality, s.reason) for s in samples] for t, samples in merged(streams)}
    looked_up = []
    for i in range(len(_CELLS)):
        found = streams[0].lookup("m.y", i)
        looked_up.append(
            None if found is None or found.ts != i else (found.value, found.quality, found.reason)
        )
    expected = [None if form == "wide" and not text.strip() else sample for text, sample in _CELLS]
    assert [(got[i] or [None])[0] for i in range(len(_CELLS))] == expected
    assert looked_up == expected


def test_unknown_signals_are_listed_once(rules, tmp_path, capsys):
    rows = [f"{100 + i},x.{i % 3},1,good" for i in range(30)]
    code, _, err = _run(capsys, str(rules), "--data", str(_long(tmp_path, rows)))
    assert code == 0
    assert err.count("used by no rule") == 1 and "x.0, x.1, x.2" in err


def test_parquet(rules, tmp_path, capsys):
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = tmp_path / "data.parquet"
    pq.write_table(
        pa.table({"time": [100.0, 160.0, 220.0], "m.temp": [20.5, 60.5, None], "plant.level": [1, None, 2]}),
        path,
    )
    code, out, err = _run(capsys, str(rules), "--data", str(path), "--format", "json")
    assert code == 0, err
    assert json.loads(out)["rules"][0]["firings"] == 1
    result = run_backtest(load_rules(rules), [path], keep_firings=True)
    assert result.firings[0][0].task.description == "hot 60.5 (level 1)"


def test_several_files_are_merged_by_time(rules, tmp_path, capsys):
    a = _long(tmp_path, ["100,m.temp,20,good", "300,m.temp,60,good"], "a.csv")
    b = _long(tmp_path, ["200,plant.level,5,good", "400,plant.level,6,good"], "b.csv")
    result = run_backtest(load_rules(rules), [a, b], keep_firings=True)
    assert [f.task.description for f, _ in result.firings] == ["hot 60 (level 5)"]
    assert result.rows == 4


@pytest.mark.parametrize("reader", [*READERS, "parquet"])
def test_progress_counts_every_file(rules, tmp_path, reader):
    # the files are read side by side (merged by time): the bar sums their positions, it ends at 100%
    if reader == "parquet":
        import pyarrow as pa
        import pyarrow.parquet as pq

        paths = [tmp_path / "a.parquet", tmp_path / "b.parquet"]
        for k, path in enumerate(paths):
            pq.write_table(
                pa.table({"time": [100.0 + k + 2 * i for i in range(500)], "m.temp": [20.0] * 500}), path
            )
    else:
        paths = [
            _long(tmp_path, [f"{100 + k + 2 * i},m.temp,20,good" for i in range(500)], f"{k}.csv")
            for k in range(2)
        ]
    out = io.StringIO()
    ticks = itertools.count()
    run_backtest(
        load_rules(rules),
        paths,
        reader="arrow" if reader == "parquet" else reader,
        progress_out=out,
        clock=lambda: float(next(ticks)),
    )
    shown = [float(x) for x in re.findall(r"([0-9.]+)%", out.getvalue())]
    assert shown and shown == sorted(shown) and shown[-1] == 100.0
