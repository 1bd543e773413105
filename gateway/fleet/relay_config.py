"""Loading relay.yaml: the relay's own file, validated with the same located errors as gateway.yaml.

Kept apart from gateway/fleet/config.py (the schemas), which gateway.config imports for the `fleet:` section:
this module needs gateway.config's error mapping, and the schemas must not (no import cycle).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

from pydantic import ValidationError

from gateway.config import problems_from_validation
from gateway.core.errors import ConfigError, Problem
from gateway.core.yamlfile import load_yaml
from gateway.fleet.config import RelayConfig


def load_relay_config(
    path: str | os.PathLike[str], *, env: Mapping[str, str] | None = None, text: str | None = None
) -> RelayConfig:
    """Load and validate relay.yaml. Raises ConfigError (FILE:LINE:COL) with every problem at once."""
    path = Path(path)
    if text is None and not path.exists():
        raise ConfigError([Problem(str(path), 0, 0, f"no relay configuration here ({path.resolve()})")])
    doc = load_yaml(path, env=dict(os.environ) if env is None else env, text=text)
    problems = list(doc.problems)
    if not isinstance(doc.data, Mapping):
        raise ConfigError(
            [*problems, Problem(doc.file, 1, 1, "the top level must be a mapping (listen:, ...)")]
        )
    try:
        config = RelayConfig.model_validate(doc.data)
    except ValidationError as exc:
        problems.extend(problems_from_validation(doc, exc))
        raise ConfigError(problems) from None
    if problems:
        raise ConfigError(problems)
    return config
