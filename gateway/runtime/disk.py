"""The state directory on disk: its size, the free space left, and whether the gateway can still write.

`check_disk(state_dir)` is cheap (one statvfs, one directory walk of a handful of files, no write) and is
called by the gateway every `DISK_CHECK_INTERVAL_S` and by /healthz. The disk counts as *nearly full* when
less than `min_free_bytes` (default 64 MiB) or `min_free_ratio` (default 2%) of it is free, whichever is
larger: /healthz reports it before SQLite starts failing with "database or disk is full", and the report
clears by itself when space returns (the store keeps its queued work; nothing needs a restart).
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from gateway.core.units import human_bytes

DEFAULT_MIN_FREE_BYTES = 64 * 1024 * 1024
DEFAULT_MIN_FREE_RATIO = 0.02
DISK_CHECK_INTERVAL_S = 30.0


@dataclass(frozen=True)
class DiskStatus:
    path: str
    state_bytes: int  # everything under the state directory (database, WAL, source caches)
    free_bytes: int  # available to this (unprivileged) user
    total_bytes: int
    min_free_bytes: int  # below this the disk counts as nearly full
    writable: bool  # the directory (and the database file, when it exists) can be written by us
    problem: str = ""  # empty when healthy; else one line a person can act on

    @property
    def nearly_full(self) -> bool:
        return self.free_bytes < self.min_free_bytes

    @property
    def ok(self) -> bool:
        return not self.problem

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "nearly_full": self.nearly_full}


def directory_size(path: Path) -> int:
    """Bytes used by the regular files under `path` (0 when it does not exist)."""
    total = 0
    for root, _dirs, files in os.walk(path):
        for name in files:
            try:
                total += os.lstat(os.path.join(root, name)).st_size
            except OSError:
                continue  # removed while we walked
    return total


def _writable(state_dir: Path) -> bool:
    if not os.access(state_dir, os.W_OK | os.X_OK):
        return False
    return all(not f.exists() or os.access(f, os.W_OK) for f in state_dir.glob("*.sqlite3*"))


def check_disk(
    state_dir: Path,
    *,
    min_free_bytes: int = DEFAULT_MIN_FREE_BYTES,
    min_free_ratio: float = DEFAULT_MIN_FREE_RATIO,
) -> DiskStatus:
    """Measure the state directory and its filesystem. Never raises for a disk problem: reports it."""
    state_dir = Path(state_dir)
    probe = state_dir
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    try:
        st = os.statvfs(probe)
    except OSError as exc:
        return DiskStatus(
            str(state_dir), 0, 0, 0, min_free_bytes, False, f"cannot stat {probe}: {exc.strerror}"
        )
    free = st.f_bavail * st.f_frsize
    total = st.f_blocks * st.f_frsize
    threshold = max(min_free_bytes, int(total * min_free_ratio))
    writable = _writable(state_dir) if state_dir.exists() else _writable(probe)
    problem = ""
    if not writable:
        problem = f"state directory {state_dir} is not writable by this user: check its owner and mode"
    elif free < threshold:
        problem = (
            f"disk nearly full: {human_bytes(free)} free of {human_bytes(total)} on the state directory's "
            f"filesystem (needs {human_bytes(threshold)}); free some space, queued work is kept"
        )
    return DiskStatus(str(state_dir), directory_size(state_dir), free, total, threshold, writable, problem)
