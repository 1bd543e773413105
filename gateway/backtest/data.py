"""Historical data for `mw-gateway backtest`: CSV (long or wide) and Parquet, streamed in chunks.

Over 500 lines on purpose: the two readers (pyarrow's streaming one and the csv module's fallback) must agree
row for row, line numbers included, so they are kept side by side in one module.

Formats (the header decides):
- long: `time,signal,value[,quality]`, one sample per row;
- wide: `time,<signal>,<signal>,...`, one row per time, an empty cell is no sample.
`time` is ISO 8601 (with an offset or `Z`; without one it is UTC) or Unix epoch seconds. A value is a
number (`42` stays an int, `42.5` a float), `true`/`false`, or else a string. A bad-quality sample is a
`quality` of `bad` in the long form (any of good/bad/ok/1/0, any case), or the cell `bad` (or `stale`) in
the wide form. Rows must be in time order within a file; several files are merged by time.

Only the samples of the signals that drive a rule (the engine's trigger signals, the "relevant" ones) become
`Sample` objects: that is where the time goes. The other signals' values are looked up on demand
(`Chunk.lookup`), when a task template asks for them, so a wide file of 100 signals read for 5 rules costs
little more than the 5 columns. pyarrow (the `backtest` extra) reads CSV and Parquet in C, in blocks; the
standard `csv` module is the fallback for CSV. Memory stays flat in the file's size: one block at a time.
"""

from __future__ import annotations

import csv
import heapq
import math
import os
import re
import sys
from collections.abc import Callable, Collection, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TextIO

from gateway.core.samples import Quality, Sample, Value

BLOCK_BYTES = 4 << 20  # pyarrow parses this much CSV per block
SEGMENT_BYTES = 8 << 20  # and is given this much at a time (see _csv_batches)
FALLBACK_ROWS = 20_000  # rows per chunk with the csv module
_GOOD = {"good": True, "ok": True, "1": True, "true": True, "bad": False, "0": False, "false": False}
_BAD_CELLS = ("bad", "stale")
_INT = re.compile(r"[-+]?\d+")


class DataError(Exception):
    """A problem in a data file, with FILE:LINE."""


def parse_value(text: str) -> Value:
    """'42' -> 42, '4.5' -> 4.5, 'true' -> True, anything else: the string itself (NaN/inf too)."""
    try:
        out = float(text)
    except ValueError:
        low = text.lower()
        return True if low == "true" else False if low == "false" else text
    if out.is_integer() and _INT.fullmatch(text):
        return int(text)
    return out if math.isfinite(out) else text


def parse_time(text: str) -> float:
    """ISO 8601 (an offset or Z; none means UTC; a date alone is its midnight) or epoch seconds -> Unix
    seconds; ValueError if neither. The data's times and --from / --to."""
    text = text.strip()
    try:
        out = float(text)
    except ValueError:
        pass
    else:
        if math.isfinite(out):
            return out
        raise ValueError(f"bad time {text!r}")
    try:
        dt = datetime.fromisoformat(text)
    except ValueError:
        raise ValueError(f"bad time {text!r}: ISO 8601 (2026-01-31T08:00:00Z) or epoch seconds") from None
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    return dt.timestamp()


def make_sample(signal: str, value: Any, ts: float, good: bool) -> Sample | None:
    """None: no sample (an empty wide cell). A Parquet column's typed values are taken as they are."""
    if not good:
        return Sample(signal, None, ts, Quality.BAD, "bad quality in the data file")
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        if isinstance(value, float) and not math.isfinite(value):
            return Sample(signal, None, ts, Quality.BAD, "not a number in the data file")
        return Sample(signal, value, ts)
    if value.lower() in _BAD_CELLS:
        return Sample(signal, None, ts, Quality.BAD, "bad quality in the data file")
    return Sample(signal, parse_value(value), ts)


def long_sample(signal: str, value: Any, ts: float, good: bool) -> Sample:
    """A row of the long form: make_sample's, except that an empty value is a bad sample (not "no sample")."""
    if good and (value is None or value == ""):
        return Sample(signal, None, ts, Quality.BAD, "empty value")
    sample = make_sample(signal, value, ts, good)
    assert sample is not None
    return sample


@dataclass
class Chunk:
    """A block of rows of one file, in time order."""

    groups: list[tuple[float, list[Sample]]]  # every time of the chunk with its relevant samples, in order
    first: float  # time range of every row of the chunk (inf/-inf when the chunk is empty)
    last: float
    rows: int
    samples: int  # samples in the chunk (a wide row holds one per non-empty cell)
    signals: set[str]
    lookup: Callable[[str, float], Sample | None]  # latest sample of a non-relevant signal at time <= t
    lasts: Callable[[], dict[str, Sample]]  # the last sample of every non-relevant signal in the chunk


# ---------------------------------------------------------------- the csv-module reader (always there)


def _header(path: Path) -> list[str]:
    with _open_text(path) as f:
        row = next(csv.reader(f), None)
    if not row:
        raise DataError(f"{path}:1: empty file: expected a header `time,signal,value` or `time,<signal>,...`")
    return [c.strip() for c in row]


def _open_text(path: Path) -> TextIO:
    return open(path, newline="", encoding="utf-8-sig")


def layout(header: list[str], path: Path) -> str:
    """'long' or 'wide'; DataError for a header that is neither."""
    if not header or header[0].lower() != "time":
        raise DataError(f"{path}:1: the first column must be `time` (got {header[0] if header else ''!r})")
    low = [h.lower() for h in header]
    if low[:3] == ["time", "signal", "value"] and (len(low) == 3 or (len(low) == 4 and low[3] == "quality")):
        return "long"
    if len(header) < 2:
        raise DataError(f"{path}:1: no signal columns after `time`")
    dupes = sorted({h for h in header if header.count(h) > 1})
    if dupes:
        raise DataError(f"{path}:1: duplicate column(s): {', '.join(dupes)}")
    return "wide"


class _Window:
    """The time bounds --from/--to."""

    def __init__(self, start: float | None, end: float | None) -> None:
        self.start = -math.inf if start is None else start
        self.end = math.inf if end is None else end


def _py_chunks(
    path: Path, relevant: Collection[str], window: _Window, at: Callable[[int], None]
) -> Iterator[Chunk]:
    with _open_text(path) as f:
        reader = csv.reader(f)
        header = [c.strip() for c in next(reader)]
        kind = layout(header, path)
        prev = -math.inf
        done = False
        while not done:
            groups: list[tuple[float, list[Sample]]] = []
            other: list[Sample] = []
            signals: set[str] = set()
            first, last, rows, samples = math.inf, -math.inf, 0, 0
            for row in reader:
                line = reader.line_num
                if not row or (len(row) == 1 and not row[0].strip()):
                    continue
                if len(row) != len(header):
                    raise DataError(f"{path}:{line}: {len(row)} columns, the header has {len(header)}")
                try:
                    t = parse_time(row[0])
                except ValueError as exc:
                    raise DataError(f"{path}:{line}: {exc}") from None
                if t < prev:
                    raise DataError(f"{path}:{line}: time goes backwards ({row[0]}): sort the file by time")
                prev = t
                if t < window.start:
                    continue
                if t > window.end:
                    done = True
                    break
                rows += 1
                first = min(first, t)
                last = t
                if kind == "long":
                    good = True
                    if len(row) == 4:
                        q = _GOOD.get(row[3].strip().lower())
                        if q is None:
                            raise DataError(f"{path}:{line}: quality {row[3]!r}: good or bad")
                        good = q
                    name = row[1].strip()
                    if not name:
                        raise DataError(f"{path}:{line}: empty signal name")
                    cells: list[Sample | None] = [long_sample(name, row[2].strip(), t, good)]
                else:
                    cells = [
                        make_sample(h, c.strip(), t, True)
                        for h, c in zip(header[1:], row[1:], strict=True)
                        if c.strip()
                    ]
                if not groups or groups[-1][0] != t:
                    groups.append((t, []))
                for sample in cells:
                    assert sample is not None
                    name = sample.signal
                    signals.add(name)
                    samples += 1
                    if name in relevant:
                        groups[-1][1].append(sample)
                    else:
                        other.append(sample)
                if rows >= FALLBACK_ROWS:
                    break
            else:
                done = True
            at(f.buffer.tell())  # f.tell() is disabled while the csv module iterates
            if rows:
                yield Chunk(
                    groups, first, last, rows, samples, signals, _list_lookup(other), _list_lasts(other)
                )


def _list_lookup(other: list[Sample]) -> Callable[[str, float], Sample | None]:
    def lookup(signal: str, t: float) -> Sample | None:
        for s in reversed(other):
            if s.signal == signal and s.ts <= t:
                return s
        return None

    return lookup


def _list_lasts(other: list[Sample]) -> Callable[[], dict[str, Sample]]:
    return lambda: {s.signal: s for s in other}


# ---------------------------------------------------------------- the pyarrow readers (the `backtest` extra)


def have_pyarrow() -> bool:
    try:
        import pyarrow  # noqa: F401
    except ImportError:
        return False
    return True


def _arrow_times(col: Any, path: Path, base_line: int) -> Any:
    """A string column of times -> float64 Unix seconds; DataError naming the first bad row."""
    import pyarrow as pa
    import pyarrow.compute as pc

    for attempt in ("epoch", "zoned", "naive"):
        try:
            if attempt == "epoch":
                out = pc.cast(col, pa.float64())
                if pc.any(pc.is_nan(out)).as_py() or pc.any(pc.is_inf(out)).as_py():
                    continue
                return out
            if attempt == "zoned":
                ts = pc.cast(col, pa.timestamp("us", tz="UTC"))
            else:
                ts = pc.cast(col, pa.timestamp("us"))
            return pc.divide(pc.cast(pc.cast(ts, pa.timestamp("us")), pa.int64()), 1e6)
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
            continue
    values = col.to_pylist()  # mixed forms, or a bad row: the slow path finds out which
    out_list: list[float] = []
    for i, text in enumerate(values):
        try:
            out_list.append(parse_time(text or ""))
        except ValueError as exc:
            raise DataError(f"{path}:{base_line + i}: {exc}") from None
    return pa.array(out_list, pa.float64())


def _arrow_chunks(
    path: Path, relevant: Collection[str], window: _Window, at: Callable[[int], None]
) -> Iterator[Chunk]:
    import pyarrow as pa
    import pyarrow.compute as pc

    parquet = path.suffix.lower() in (".parquet", ".pq")
    if parquet:
        import pyarrow.parquet as pq

        pf = pq.ParquetFile(path)
        header = list(pf.schema_arrow.names)
        batches: Iterator[Any] = pf.iter_batches(batch_size=1 << 20)
        size, total_rows = os.path.getsize(path), max(pf.metadata.num_rows, 1)
    else:
        header = _header(path)
        invalid: list[str] = []
        batches = _csv_batches(path, header, invalid, at)
    kind = layout([str(h) for h in header], path)
    lows = [str(h).lower() for h in header]
    rel = pa.array(sorted(relevant), pa.string())
    line = 2  # the line of the batch's first row (header = line 1)
    prev = -math.inf
    try:
        for batch in batches:
            if not parquet and invalid:
                raise DataError(invalid[0])
            n = batch.num_rows
            if parquet:
                at(size * (line - 2 + n) // total_rows)  # the share of the rows read
            if n == 0:
                continue
            tcol = batch.column(0)
            if not pa.types.is_floating(tcol.type) and not pa.types.is_integer(tcol.type):
                if pa.types.is_timestamp(tcol.type):
                    tcol = pc.divide(pc.cast(pc.cast(tcol, pa.timestamp("us")), pa.int64()), 1e6)
                else:
                    tcol = _arrow_times(pc.cast(tcol, pa.string()), path, line)
            tcol = pc.cast(tcol, pa.float64())
            first_t = tcol[0].as_py()
            if first_t < prev or (n > 1 and pc.any(pc.less(tcol[1:], tcol[:-1])).as_py()):
                ts = tcol.to_pylist()
                for i, t in enumerate(ts):
                    if t < (prev if i == 0 else ts[i - 1]):
                        raise DataError(f"{path}:{line + i}: time goes backwards: sort the file by time")
            prev = tcol[n - 1].as_py()
            base = line
            line += n
            if prev < window.start:
                continue
            if first_t > window.end:
                break
            keep = None
            if first_t < window.start or prev > window.end:
                keep = pc.and_(pc.greater_equal(tcol, window.start), pc.less_equal(tcol, window.end))
            if kind == "long":
                yield _long_chunk(batch, tcol, keep, lows, rel, path, base)
            else:
                yield _wide_chunk(batch, tcol, keep, header, relevant, path)
            if prev > window.end:
                break
        if not parquet and invalid:
            raise DataError(invalid[0])
    finally:
        close = getattr(batches, "close", None)
        if close is not None:
            close()


def _csv_batches(
    path: Path, header: list[str], invalid: list[str], at: Callable[[int], None]
) -> Iterator[Any]:
    """The CSV's record batches, parsed by pyarrow in segments of SEGMENT_BYTES cut at line ends.

    One streaming reader over the whole file would read ahead as fast as the disk goes while the engine is
    slower, and hold the read-ahead in memory (measured: the pool grows with the file). A segment at a time
    keeps memory flat. Rows must not hold newlines inside quotes (historian exports do not)."""
    import pyarrow as pa
    import pyarrow.csv as pcsv

    first_line = [2]  # the file line of the current segment's first row

    def on_invalid(row: Any) -> str:
        if not invalid:
            known = row.number is not None and row.number >= 0  # needs use_threads=False
            where = first_line[0] + row.number - 1 if known else "?"
            invalid.append(
                f"{path}:{where}: {row.actual_columns} columns, the header has {row.expected_columns}"
            )
        return "skip"

    options = {
        "read_options": pcsv.ReadOptions(
            block_size=BLOCK_BYTES, encoding="utf-8", use_threads=False, column_names=header
        ),
        "parse_options": pcsv.ParseOptions(invalid_row_handler=on_invalid),
        "convert_options": pcsv.ConvertOptions(
            column_types={h: pa.string() for h in header}, strings_can_be_null=False
        ),
    }
    with open(path, "rb") as f:
        f.readline()  # the header
        while True:
            buf = f.read(SEGMENT_BYTES)
            if not buf:
                return
            if not buf.endswith(b"\n"):
                buf += f.readline()
            at(f.tell())
            yield from pcsv.open_csv(pa.BufferReader(buf), **options)
            first_line[0] += buf.count(b"\n")


def _strs(col: Any) -> Any:
    import pyarrow as pa
    import pyarrow.compute as pc

    return (
        col
        if pa.types.is_string(col.type) or pa.types.is_large_string(col.type)
        else pc.cast(col, pa.string())
    )


def _trimmed(col: Any) -> Any:
    """A text column without the spaces around its values (as the csv-module reader strips them); another
    type as it is."""
    import pyarrow as pa
    import pyarrow.compute as pc

    if pa.types.is_string(col.type) or pa.types.is_large_string(col.type):
        return pc.utf8_trim_whitespace(col)
    return col


def _numbers(col: Any) -> list[Any] | None:
    """A string column that is all finite numbers -> its values as parse_value gives them ('42' -> 42,
    '4.5' -> 4.5), converted in C; None when anything else is in it (the caller parses value by value)."""
    import pyarrow as pa
    import pyarrow.compute as pc

    if not pa.types.is_string(col.type):
        return None
    try:
        floats = pc.cast(col, pa.float64())
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        return None
    if col.null_count or not pc.all(pc.is_finite(floats)).as_py():
        return None
    is_int = pc.match_substring_regex(col, r"^[-+]?[0-9]+$")
    if not pc.any(is_int).as_py():
        return list(floats.to_pylist())
    try:
        ints = pc.cast(pc.if_else(is_int, col, pa.scalar("0")), pa.int64()).to_pylist()
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        return None  # beyond int64: parse_value keeps Python's big ints
    return [i if k else f for i, f, k in zip(ints, floats.to_pylist(), is_int.to_pylist(), strict=True)]


def _long_chunk(batch: Any, tcol: Any, keep: Any, lows: list[str], rel: Any, path: Path, base: int) -> Chunk:
    import pyarrow as pa
    import pyarrow.compute as pc

    sig = pc.utf8_trim_whitespace(_strs(batch.column(1)))
    val = _trimmed(batch.column(2))
    if len(lows) == 4:
        qtext = pc.utf8_lower(pc.utf8_trim_whitespace(_strs(batch.column(3))))
        known = pc.is_in(qtext, value_set=pa.array(list(_GOOD)))
        if not pc.all(known).as_py():
            bad = pc.index(known, False).as_py()
            raise DataError(f"{path}:{base + bad}: quality {qtext[bad].as_py()!r}: good or bad")
        good = pc.is_in(qtext, value_set=pa.array([k for k, v in _GOOD.items() if v]))
    else:
        good = pa.array([True] * len(tcol), pa.bool_())
    table = pa.table({"t": tcol, "s": sig, "v": val, "g": good})
    if keep is not None:
        table = table.filter(keep)
    if table.num_rows == 0:
        return _empty_chunk()
    empty = pc.equal(pc.utf8_length(table["s"]), 0)
    if pc.any(empty).as_py():
        raise DataError(f"{path}: empty signal name in the rows from line {base}")
    mask = pc.is_in(table["s"], value_set=rel)
    mine = table.filter(mask)
    other = table.filter(pc.invert(mask))
    groups: list[tuple[float, list[Sample]]] = []
    by_time: dict[float, list[Sample]] = {}
    if mine.num_rows:
        cur_t = math.nan
        cur: list[Sample] = []
        values = _numbers(mine["v"])
        for t, s, v, g in zip(
            mine["t"].to_pylist(),
            mine["s"].to_pylist(),
            values if values is not None else mine["v"].to_pylist(),
            mine["g"].to_pylist(),
            strict=True,
        ):
            if t != cur_t:
                cur = by_time[t] = []
                cur_t = t
            if g and values is not None:
                cur.append(Sample(s, v, t))
            else:
                cur.append(long_sample(s, v, t, g))
    get = by_time.get
    groups = [
        (t, get(t) or []) for t in pc.unique(table["t"]).to_pylist()
    ]  # a tick at every time of the data
    signals = set(pc.unique(table["s"]).to_pylist())

    def lookup(signal: str, t: float) -> Sample | None:
        hit = other.filter(pc.and_(pc.equal(other["s"], signal), pc.less_equal(other["t"], t)))
        if hit.num_rows == 0:
            return None
        row = hit.slice(hit.num_rows - 1).to_pylist()[0]
        return long_sample(signal, row["v"], row["t"], row["g"])

    def lasts() -> dict[str, Sample]:
        if other.num_rows == 0:
            return {}
        agg = other.group_by("s", use_threads=False).aggregate([("t", "last"), ("v", "last"), ("g", "last")])
        out: dict[str, Sample] = {}
        for row in agg.to_pylist():
            out[row["s"]] = long_sample(row["s"], row["v_last"], row["t_last"], row["g_last"])
        return out

    times = table["t"]
    return Chunk(
        groups,
        times[0].as_py(),
        times[len(times) - 1].as_py(),
        table.num_rows,
        table.num_rows,
        signals,
        lookup,
        lasts,
    )


def _wide_chunk(
    batch: Any, tcol: Any, keep: Any, header: list[str], relevant: Collection[str], path: Path
) -> Chunk:
    import pyarrow as pa
    import pyarrow.compute as pc

    cols = {name: _trimmed(batch.column(i)) for i, name in enumerate(header) if i > 0}
    if keep is not None:
        tcol = tcol.filter(keep)
        cols = {name: col.filter(keep) for name, col in cols.items()}
    n = len(tcol)
    if n == 0:
        return _empty_chunk()
    times = tcol.to_pylist()
    mine = [name for name in header[1:] if name in relevant]
    per_row: list[list[Sample]] = [[] for _ in range(n)]
    samples = 0
    for name in mine:
        col = cols[name]
        for i, cell in enumerate(col.to_pylist()):
            if cell is None or cell == "":
                continue
            sample = make_sample(name, cell, times[i], True)
            if sample is not None:
                per_row[i].append(sample)
    groups: list[tuple[float, list[Sample]]] = []
    for t, row in zip(times, per_row, strict=True):
        if groups and groups[-1][0] == t:
            groups[-1][1].extend(row)
        else:
            groups.append((t, row))

    def present(col: Any) -> Any:
        if pa.types.is_string(col.type) or pa.types.is_large_string(col.type):
            return pc.and_(pc.is_valid(col), pc.not_equal(col, ""))
        return pc.is_valid(col)

    for col in cols.values():
        samples += pc.sum(pc.cast(present(col), pa.int64())).as_py() or 0

    def latest(name: str, upto: Any) -> Sample | None:
        col = cols[name]
        ok = present(col)
        if upto is not None:
            ok = pc.and_(ok, upto)
        idx = pc.indices_nonzero(ok)
        if len(idx) == 0:
            return None
        i = idx[len(idx) - 1].as_py()
        return make_sample(name, col[i].as_py(), times[i], True)

    def lookup(signal: str, t: float) -> Sample | None:
        if signal not in cols or signal in relevant:
            return None
        return latest(signal, pc.less_equal(tcol, t))

    def lasts() -> dict[str, Sample]:
        out: dict[str, Sample] = {}
        for name in cols:
            if name not in relevant:
                sample = latest(name, None)
                if sample is not None:
                    out[name] = sample
        return out

    return Chunk(groups, times[0], times[-1], n, int(samples), set(cols), lookup, lasts)


def _empty_chunk() -> Chunk:
    return Chunk([], math.inf, -math.inf, 0, 0, set(), lambda s, t: None, dict)


# ---------------------------------------------------------------- progress


class Progress:
    """A progress bar on stderr for long files (a terminal only; at most a few redraws a second). The files
    are read side by side (merged by time): the bytes done are the sum of every file's position."""

    def __init__(self, total_bytes: int, *, out: TextIO | None = None, clock: Callable[[], float]) -> None:
        self.out = out
        self.total = max(total_bytes, 1)
        self.clock = clock
        self.done = 0
        self.positions: dict[int, int] = {}  # file index -> bytes read
        self._next = 0.0
        self.shown = False

    def at(self, index: int) -> Callable[[int], None]:
        """The callback of the index-th file: called with its position in bytes."""
        return lambda pos: self.update(index, pos)

    def update(self, index: int, pos: int) -> None:
        if self.out is None:
            return
        self.positions[index] = pos
        self.done = sum(self.positions.values())
        now = self.clock()
        if now < self._next:
            return
        self._next = now + 0.25
        frac = min(1.0, self.done / self.total)
        bar = "#" * int(frac * 30)
        self.out.write(f"\rbacktest [{bar:<30}] {frac * 100:5.1f}%  {self.done / 1e6:,.0f} MB")
        self.out.flush()
        self.shown = True

    def close(self) -> None:
        if self.out is not None and self.shown:
            self.out.write("\r" + " " * 70 + "\r")
            self.out.flush()


# ---------------------------------------------------------------- several files, one timeline


@dataclass
class FileStream:
    """The chunks of one file, the current ones kept for look-ups of non-relevant signals."""

    path: Path
    chunks: Iterator[Chunk]
    recent: list[Chunk] = field(default_factory=list)  # the chunks a look-up may still need, oldest first
    carry: dict[str, Sample] = field(default_factory=dict)  # last samples from chunks before `recent`
    rows: int = 0
    samples: int = 0
    signals: set[str] = field(default_factory=set)
    first: float = math.inf
    last: float = -math.inf

    def groups(self) -> Iterator[tuple[float, list[Sample]]]:
        """The relevant samples grouped by time: one group for every time of the file (empty when no rule's
        signal has a sample then): the engine ticks at each."""
        for chunk in self.chunks:
            self.rows += chunk.rows
            self.samples += chunk.samples
            self.signals |= chunk.signals
            self.recent.append(chunk)
            while len(self.recent) > 2:
                self.carry.update(self.recent.pop(0).lasts())
            if not chunk.rows:
                continue
            if self.first == math.inf:
                self.first = chunk.first
            self.last = max(self.last, chunk.last)
            yield from chunk.groups

    def lookup(self, signal: str, t: float) -> Sample | None:
        for chunk in reversed(self.recent):
            if chunk.first <= t:
                found = chunk.lookup(signal, t)
                if found is not None:
                    return found
        hit = self.carry.get(signal)
        return hit if hit is not None and hit.ts <= t else None


def open_streams(
    paths: list[Path],
    relevant: Collection[str],
    *,
    start: float | None,
    end: float | None,
    reader: str,
    progress_out: TextIO | None,
    clock: Callable[[], float],
) -> tuple[list[FileStream], Progress]:
    """One FileStream per file. reader: 'auto' (pyarrow when installed), 'arrow' or 'csv'."""
    window = _Window(start, end)
    sizes = []
    for path in paths:
        if not path.is_file():
            raise DataError(f"{path}: no such file")
        sizes.append(os.path.getsize(path))
    progress = Progress(sum(sizes), out=progress_out, clock=clock)
    use_arrow = reader == "arrow" or (reader == "auto" and have_pyarrow())
    if reader == "arrow" and not have_pyarrow():
        raise DataError("--reader arrow needs pyarrow: pip install 'mw-gateway[backtest]'")
    streams = []
    for i, path in enumerate(paths):
        if path.suffix.lower() in (".parquet", ".pq"):
            if not have_pyarrow():
                raise DataError(f"{path}: reading Parquet needs pyarrow: pip install 'mw-gateway[backtest]'")
            chunks = _arrow_chunks(path, relevant, window, progress.at(i))
        elif use_arrow:
            chunks = _arrow_chunks(path, relevant, window, progress.at(i))
        else:
            layout(_header(path), path)
            chunks = _py_chunks(path, relevant, window, progress.at(i))
        streams.append(FileStream(path, chunks))
    return streams, progress


def merged(streams: list[FileStream]) -> Iterator[tuple[float, list[Sample]]]:
    """The relevant samples of every file, grouped by time, in time order (ties: file order)."""
    if len(streams) == 1:
        yield from streams[0].groups()
        return
    tagged = [((t, i, samples) for t, samples in s.groups()) for i, s in enumerate(streams)]
    cur_t = math.nan
    cur: list[Sample] = []
    for t, _, samples in heapq.merge(*tagged, key=lambda x: (x[0], x[1])):
        if t != cur_t:
            if cur_t == cur_t:
                yield cur_t, cur
            cur_t, cur = t, []
        cur.extend(samples)
    if cur_t == cur_t:
        yield cur_t, cur


def stderr_if_tty() -> TextIO | None:
    return sys.stderr if sys.stderr.isatty() else None
