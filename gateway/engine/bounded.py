"""What a template or an expression may ask Python to build, bounded: a rule cannot make the engine build a
gigabyte.

`"x" * 10**10`, `value|center(10**10)`, `'%999999999s' % value`, `'{:>999999999}'.format(value)` or
`('x' * 99999).replace('x', 'x' * 99999)` in a task template, or `press1.mode * 1000000000` in an expression
over a text signal, would have Python allocate the whole result in one C call (no timeout can stop it): on a
Pi, the OOM killer; on a bigger box, a stall at load (templates are rendered once with sample values) and at
every firing. Each of those ways is checked before the call: a result beyond MAX_ITEMS characters or items,
or an integer power beyond MAX_DIGITS digits, is a ValueError, which makes a template "cannot render" at load
and an expression "unknown" at run time. templates.py routes Jinja's sandbox through these checks (operators,
filters, `str` methods, `str.format`); pyexpr.py routes `*` and `%` through them.
"""

from __future__ import annotations

import math
import re
import string
from collections.abc import Callable, Iterable, Mapping
from typing import Any

MAX_ITEMS = 100_000  # characters of a built text, items of a built list
MAX_DIGITS = 10_000  # digits of an integer power (2 ** 100000000 is refused; 2 ** 64 is fine)

_SEQUENCES = (str, bytes, list, tuple)
_PERCENT_SPEC = re.compile(r"%(?:\([^)]*\))?[#0\- +]*(\*|\d+)?(?:\.(\*|\d+))?")
_NUMBER = re.compile(r"\d+")
_PADDING_METHODS = frozenset({"center", "ljust", "rjust", "zfill", "expandtabs"})


def _too_large(what: str) -> ValueError:
    return ValueError(f"{what} of more than {MAX_ITEMS:,} characters or items")


def _big_int(values: Iterable[Any]) -> bool:
    return any(type(v) is int and v > MAX_ITEMS for v in values)


def mul(left: Any, right: Any) -> Any:
    if type(right) is int and isinstance(left, _SEQUENCES) and len(left) * right > MAX_ITEMS:
        raise _too_large("a repetition")
    if type(left) is int and isinstance(right, _SEQUENCES) and len(right) * left > MAX_ITEMS:
        raise _too_large("a repetition")
    return left * right


def power(left: Any, right: Any) -> Any:
    integers = type(left) is int and type(right) is int and right > 0 and abs(left) > 1
    if integers and right * math.log10(abs(left)) > MAX_DIGITS:
        raise ValueError(f"a power of more than {MAX_DIGITS:,} digits")
    return left**right


def check_percent(fmt: str, args: Any) -> None:
    """`fmt % args`: no width or precision beyond MAX_ITEMS, written or given by `*`."""
    star = False
    for match in _PERCENT_SPEC.finditer(fmt):
        for number in match.groups():
            if number == "*":
                star = True
            elif number is not None and int(number) > MAX_ITEMS:
                raise _too_large("a formatted value")
    if star and _big_int(args if isinstance(args, tuple) else (args,)):
        raise _too_large("a formatted value")


def mod(left: Any, right: Any) -> Any:
    if isinstance(left, str):
        check_percent(left, right)
    return left % right


def check_format(fmt: str, args: Iterable[Any], kwargs: Mapping[str, Any]) -> None:
    """`fmt.format(...)`: no width or precision beyond MAX_ITEMS in a field's spec, written or nested."""
    for _, _, spec, _ in string.Formatter().parse(fmt):
        if not spec:
            continue
        if any(int(n) > MAX_ITEMS for n in _NUMBER.findall(spec)):
            raise _too_large("a formatted value")
        if "{" in spec and _big_int([*args, *kwargs.values()]):
            raise _too_large("a formatted value")


def check_replace(text: Any, old: Any, new: Any, count: Any = -1) -> None:
    if isinstance(text, str) and isinstance(old, str) and isinstance(new, str) and len(new) > len(old):
        times = text.count(old) if old else len(text) + 1
        if type(count) is int and count >= 0:
            times = min(times, count)
        if len(text) + times * (len(new) - len(old)) > MAX_ITEMS:
            raise _too_large("a replacement")


def check_call(obj: Any, args: tuple[Any, ...], kwargs: Mapping[str, Any]) -> None:
    """A `str` method called from a template: the padding ones and `replace`."""
    if not isinstance(getattr(obj, "__self__", None), str):
        return
    name = getattr(obj, "__name__", "")
    if name in _PADDING_METHODS and _big_int([*args, *kwargs.values()]):
        raise _too_large("a padded text")
    if name == "replace":
        check_replace(obj.__self__, *args, **kwargs)


def filter_checks() -> dict[str, Callable[..., None]]:
    """Per Jinja filter that can build a large result from small arguments: the check of its arguments."""

    def width(value: Any, width: Any = 80, *args: Any, **kwargs: Any) -> None:
        if _big_int([width]):
            raise _too_large("a padded text")

    def count(value: Any, number: Any, fill_with: Any = None) -> None:
        if _big_int([number]):
            raise _too_large("a list")

    def percent(value: Any, *args: Any, **kwargs: Any) -> None:
        if isinstance(value, str):
            check_percent(value, args or kwargs)

    return {
        "center": width,
        "indent": width,
        "format": percent,
        "replace": check_replace,
        "batch": count,
        "slice": count,
    }
