"""Go's fmt formatting for the values alert templates handle (strings, ints, floats, bools, maps).

Prometheus expands templates with Go's text/template, which prints values with fmt's %v and
offers printf; users copy templates from the Prometheus world and expect the same text, so
we follow Go's rules (https://pkg.go.dev/fmt) rather than Python's: floats print in their
shortest form with an exponent from 1e+06 on ("1.234567e+06"), NaN and infinities print as
NaN, +Inf and -Inf, a verb of the wrong type prints as ``%!d(float64=1.5)``.
"""

from __future__ import annotations

import functools
import json
import math
import re
from collections.abc import Mapping, Sequence
from decimal import Decimal
from typing import Any


class GoValue:
    """Something a template can print that is not a plain Python value (e.g. a query sample)."""

    go_type = "struct"

    def go_string(self) -> str:
        raise NotImplementedError


def go_type(value: Any) -> str:
    if value is None:
        return "<nil>"
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int):
        return "int"
    if isinstance(value, float):
        return "float64"
    if isinstance(value, str):
        return "string"
    if isinstance(value, GoValue):
        return value.go_type
    if isinstance(value, Mapping):
        return "map[string]string"
    if isinstance(value, Sequence):
        return "[]interface {}"
    return type(value).__name__


def _digits(x: float) -> tuple[str, int]:
    """Shortest round-trip decimal digits of abs(x) and the position of the decimal point."""
    sign, digit_tuple, exponent = Decimal(repr(abs(x))).as_tuple()
    digits = "".join(map(str, digit_tuple))
    assert isinstance(exponent, int)
    stripped = digits.rstrip("0")
    exponent += len(digits) - len(stripped)
    digits = stripped.lstrip("0") or "0"
    return digits, len(digits) + exponent


def _special(x: float) -> str | None:
    if math.isnan(x):
        return "NaN"
    if math.isinf(x):
        return "+Inf" if x > 0 else "-Inf"
    return None


def format_float_v(x: float) -> str:
    """Go's %v for a float64: strconv's shortest 'g' form, which switches to an exponent when
    it is below -4 or at least 6 (so 123456, 1e+06, 0.0001, 1e-05)."""
    special = _special(x)
    if special is not None:
        return special
    if x == 0:
        return "-0" if math.copysign(1.0, x) < 0 else "0"
    digits, point = _digits(x)
    return ("-" if x < 0 else "") + _shortest_g(digits, point)


def _shortest_g(digits: str, point: int) -> str:
    exp = point - 1
    if exp < -4 or exp >= 6:
        mantissa = digits[0] + ("." + digits[1:] if len(digits) > 1 else "")
        return f"{mantissa}e{'-' if exp < 0 else '+'}{abs(exp):02d}"
    if point <= 0:
        return "0." + "0" * (-point) + digits
    if point >= len(digits):
        return digits + "0" * (point - len(digits))
    return digits[:point] + "." + digits[point:]


def format_value(value: Any) -> str:
    """fmt's %v (what {{ . }} prints)."""
    if value is None:
        return "<no value>"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return format_float_v(value)
    if isinstance(value, str):
        return value
    if isinstance(value, GoValue):
        return value.go_string()
    if isinstance(value, Mapping):
        inner = " ".join(f"{k}:{_inner(v)}" for k, v in sorted(value.items()))
        return f"map[{inner}]"
    if isinstance(value, Sequence):
        return "[" + " ".join(_inner(v) for v in value) + "]"
    return str(value)


def _inner(value: Any) -> str:
    return "<nil>" if value is None else format_value(value)


def format_g(x: float, precision: int) -> str:
    """Go's %.Ng: C's %g, except NaN and infinities."""
    special = _special(x)
    if special is not None:
        return special
    return f"%.{precision}g" % x


_VERB = re.compile(r"%([-+# 0]*)(\d+)?(?:\.(\d*))?([a-zA-Z%])")


@functools.lru_cache(maxsize=512)
def _parse_format(fmt: str) -> tuple[tuple[tuple[str, str, str | None, str | None, str], ...], str]:
    """A format as (text before, flags, width, precision, verb) per verb, and the tail.

    Kept per format: a template's printf formats the same text for every alert (issue #8).
    """
    verbs = []
    pos = 0
    for match in _VERB.finditer(fmt):
        flags, width, precision, verb = match.groups()
        verbs.append((fmt[pos : match.start()], flags, width, precision, verb))
        pos = match.end()
    return tuple(verbs), fmt[pos:]


def go_sprintf(fmt: str, args: Sequence[Any]) -> str:
    """Go's fmt.Sprintf for the verbs templates use: v s d f F e E g G q x X t c o b %."""
    out: list[str] = []
    argi = 0
    verbs, tail = _parse_format(fmt)
    for before, flags, width, precision, verb in verbs:
        out.append(before)
        if verb == "%":
            out.append("%")
            continue
        if argi >= len(args):
            out.append(f"%!{verb}(MISSING)")
            continue
        arg = args[argi]
        argi += 1
        out.append(_format_one(flags, width, precision, verb, arg))
    out.append(tail)
    if argi < len(args):
        extra = ", ".join(f"{go_type(a)}={_inner(a)}" for a in args[argi:])
        out.append(f"%!(EXTRA {extra})")
    return "".join(out)


def _pad(text: str, flags: str, width: str | None) -> str:
    if not width:
        return text
    n = int(width)
    if "-" in flags:
        return text.ljust(n)
    if "0" in flags and text[:1] in "+-" and text[1:2].isdigit():
        return text[0] + text[1:].rjust(n - 1, "0")
    if "0" in flags and text[:1].isdigit():
        return text.rjust(n, "0")
    return text.rjust(n)


def _bad(verb: str, arg: Any) -> str:
    return f"%!{verb}({go_type(arg)}={_inner(arg)})"


def _format_one(flags: str, width: str | None, precision: str | None, verb: str, arg: Any) -> str:
    spec = flags + (width or "") + ("." + precision if precision is not None else "")
    if verb == "v":
        if isinstance(arg, float) and precision is not None:
            return _pad(format_g(arg, int(precision or 0)), flags, width)
        text = format_value(arg) if arg is not None else "<nil>"
        if "+" in flags and isinstance(arg, int | float) and not isinstance(arg, bool):
            text = text if text.startswith(("-", "+")) else "+" + text
        return _pad(text, flags, width)
    if verb == "s":
        if isinstance(arg, str | GoValue) or arg is None or isinstance(arg, Mapping):
            text = format_value(arg) if arg is not None else "%!s(<nil>)"
            if precision:
                text = text[: int(precision)]
            return _pad(text, flags, width)
        return _bad(verb, arg)
    if verb == "q":
        if isinstance(arg, str):
            return _pad(json.dumps(arg, ensure_ascii=False), flags, width)
        return _bad(verb, arg)
    if verb == "t":
        if isinstance(arg, bool):
            return _pad("true" if arg else "false", flags, width)
        return _bad(verb, arg)
    if verb in "dcobxX":
        if isinstance(arg, int) and not isinstance(arg, bool):
            if verb == "c":
                return _pad(chr(arg), flags, width)
            return ("%" + spec + verb) % arg
        if verb in "xX" and isinstance(arg, str):
            text = arg.encode().hex()
            return _pad(text.upper() if verb == "X" else text, flags, width)
        if verb in "xX" and isinstance(arg, float):
            return _bad(verb, arg)  # Go prints hexadecimal floats; nobody wants those here
        return _bad(verb, arg)
    if verb in "fFeEgG":
        if isinstance(arg, float):
            special = _special(arg)
            if special is not None:
                if "+" not in flags and special == "+Inf":
                    special = "+Inf"
                return _pad(special, flags, width)
            if verb in "gG" and precision is None:
                text = format_float_v(arg)
                text = text.upper() if verb == "G" else text
                if "+" in flags and not text.startswith("-"):
                    text = "+" + text
                return _pad(text, flags, width)
            return ("%" + spec + verb.lower() if verb == "F" else "%" + spec + verb) % arg
        return _bad(verb, arg)
    return f"%!{verb}({go_type(arg)}={_inner(arg)})"
