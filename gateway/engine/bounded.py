"""`*` and `**` in templates and expressions, bounded: a rule cannot make the engine build a gigabyte.

`"x" * 10**10` in a task template, or `press1.mode * 1000000000` in an expression over a text signal, would
have Python allocate the whole result in one C call (no timeout can stop it): on a Pi, the OOM killer; on a
bigger box, a stall at load (templates are rendered once with sample values) and at every firing. Repeating
a text or a list is refused beyond MAX_ITEMS items, and an integer power beyond MAX_DIGITS digits; the error
is a ValueError, which makes a template "cannot render" at load and an expression "unknown" at run time.
"""

from __future__ import annotations

import math
import operator
from typing import Any

MAX_ITEMS = 100_000  # characters of a repeated text, items of a repeated list
MAX_DIGITS = 10_000  # digits of an integer power (2 ** 100000000 is refused; 2 ** 64 is fine)

_SEQUENCES = (str, bytes, list, tuple)


def mul(left: Any, right: Any) -> Any:
    if type(right) is int and isinstance(left, _SEQUENCES) and len(left) * right > MAX_ITEMS:
        raise ValueError(f"a repetition of more than {MAX_ITEMS:,} items")
    if type(left) is int and isinstance(right, _SEQUENCES) and len(right) * left > MAX_ITEMS:
        raise ValueError(f"a repetition of more than {MAX_ITEMS:,} items")
    return left * right


def power(left: Any, right: Any) -> Any:
    integers = type(left) is int and type(right) is int and right > 0 and abs(left) > 1
    if integers and right * math.log10(abs(left)) > MAX_DIGITS:
        raise ValueError(f"a power of more than {MAX_DIGITS:,} digits")
    return operator.pow(left, right)
