"""Optional extras: is one installed, and what to tell the user when it is not (at `check`, not at first
use)."""

from __future__ import annotations


def installed(name: str) -> bool:
    """Importable, without importing it (a None in sys.modules is Python's mark for "blocked")."""
    import importlib.util
    import sys

    if name in sys.modules:
        return sys.modules[name] is not None
    return importlib.util.find_spec(name) is not None


def need_jwt_library(algorithms: tuple[str, ...]) -> None:
    """ServiceMobility JWT verification is an optional extra: say how to install it (at `check`, not at the
    first webhook)."""
    extra = "pip install 'mw-gateway[servicemobility]'"
    if not installed("jwt"):
        raise ValueError(f"servicemobility_jwt_key needs PyJWT, which is not installed here: {extra}")
    asymmetric = any(not a.upper().startswith("HS") for a in algorithms)
    if asymmetric and not installed("cryptography"):
        raise ValueError(
            f"servicemobility_jwt_algorithms {', '.join(algorithms)} need the cryptography package: {extra}"
        )
