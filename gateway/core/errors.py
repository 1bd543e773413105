"""The one error tree of mw-gateway.

    GatewayError                 base of everything we raise on purpose
    ├── ProblemsError            one or more user-input problems, each with FILE:LINE:COL
    │   ├── ConfigError          gateway.yaml is wrong
    │   └── RuleError            a rule file (or rule test file) is wrong
    ├── StoreError               the SQLite state directory cannot be used (disk full, not writable)
    └── BackendError             a CMMS backend cannot be set up (bad credentials at start-up, bad URL)

Protocol libraries' exceptions are caught at the edges (sources/, cmms/) and turned into sample quality or
delivery outcomes; they never cross into the engine or the store.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Problem:
    """One user-facing problem, located in a file. line and col are 1-based; 0 means unknown."""

    file: str
    line: int
    col: int
    message: str

    def __str__(self) -> str:
        return f"{self.file}:{self.line}:{self.col}: {self.message}"


class GatewayError(Exception):
    """Base of every error mw-gateway raises on purpose."""


class ProblemsError(GatewayError):
    """Carries every problem found, so that all of them are reported at once."""

    def __init__(self, problems: list[Problem]) -> None:
        self.problems = sorted(problems, key=lambda p: (p.file, p.line, p.col, p.message))
        super().__init__("\n".join(str(p) for p in self.problems))


class ConfigError(ProblemsError):
    """gateway.yaml could not be loaded."""


class RuleError(ProblemsError):
    """A rule file or a rule test file could not be loaded."""


class StoreError(GatewayError):
    """The state database cannot be opened or written."""


class BackendError(GatewayError):
    """A CMMS backend cannot be used (reported at start-up)."""
