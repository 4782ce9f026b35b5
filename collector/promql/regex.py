"""Translate Prometheus (Go RE2) regular expressions into Python's `re` syntax.

Prometheus accepts inline flags anywhere, e.g. ``foo((?i)bar)``, where they apply to the rest of
the enclosing group; Python only accepts global flags at the very start, and since the storage
anchors patterns as ``(?:PATTERN)\\Z`` even a leading ``(?i)`` would fail. We rewrite every
flag group as a scoped group (``(?i:...)``) that closes where RE2's flag scope ends (the end of
the enclosing group, re-opened after each ``|``), and ``\\z`` / ``\\Q...\\E`` into their Python
forms. Constructs Python cannot express (the ``U`` flag, ``\\pN`` classes) are refused.
"""

from __future__ import annotations

import re

_FLAG_GROUP = re.compile(r"\(\?([imsU]*)(?:-([imsU]*))?\)")


class RegexError(ValueError):
    pass


def go_to_python(pattern: str) -> str:
    out: list[str] = []
    # One entry per open group: the scoped flag groups opened inside it, as their prefixes.
    stack: list[list[str]] = [[]]
    i = 0
    n = len(pattern)
    while i < n:
        c = pattern[i]
        if c == "\\":
            if i + 1 >= n:
                raise RegexError("trailing backslash at end of expression")
            nxt = pattern[i + 1]
            if nxt == "Q":
                end = pattern.find("\\E", i + 2)
                literal = pattern[i + 2 :] if end < 0 else pattern[i + 2 : end]
                out.append(re.escape(literal))
                i = n if end < 0 else end + 2
                continue
            if nxt == "z":
                out.append("\\Z")
            elif nxt in "pP":
                raise RegexError("unicode classes (\\p, \\P) are not supported")
            else:
                out.append(pattern[i : i + 2])
            i += 2
            continue
        if c == "[":
            j = i + 1
            if j < n and pattern[j] == "^":
                j += 1
            if j < n and pattern[j] == "]":
                j += 1
            while j < n and pattern[j] != "]":
                if pattern[j] == "\\":
                    if j + 1 < n and pattern[j + 1] in "pP":
                        raise RegexError("unicode classes (\\p, \\P) are not supported")
                    j += 1
                elif pattern.startswith("[:", j):
                    close = pattern.find(":]", j + 2)
                    if close > 0:
                        j = close + 1
                j += 1
            out.append(_posix_classes(pattern[i : j + 1]))
            i = j + 1
            continue
        if c == "(":
            flags = _FLAG_GROUP.match(pattern, i)
            if flags:
                on, off = flags.group(1), flags.group(2) or ""
                if "U" in on or "U" in off:
                    raise RegexError("the U (ungreedy) flag is not supported")
                prefix = f"(?{on}-{off}:" if off else f"(?{on}:"
                if on or off:
                    out.append(prefix)
                    stack[-1].append(prefix)
                i = flags.end()
                continue
            out.append("(")
            stack.append([])
            i += 1
            continue
        if c == "|":
            opened = stack[-1]
            out.append(")" * len(opened) + "|" + "".join(opened))
            i += 1
            continue
        if c == ")":
            if len(stack) == 1:
                raise RegexError("unexpected )")
            out.append(")" * len(stack.pop()) + ")")
            i += 1
            continue
        out.append(c)
        i += 1
    out.append(")" * len(stack[0]))
    return "".join(out)


_POSIX = {
    "alnum": "0-9A-Za-z",
    "alpha": "A-Za-z",
    "ascii": "\\x00-\\x7F",
    "blank": "\\t ",
    "cntrl": "\\x00-\\x1F\\x7F",
    "digit": "0-9",
    "graph": "!-~",
    "lower": "a-z",
    "print": " -~",
    "punct": "!-/:-@\\[-`{-~",
    "space": "\\t\\n\\v\\f\\r ",
    "upper": "A-Z",
    "word": "0-9A-Za-z_",
    "xdigit": "0-9A-Fa-f",
}


def _posix_classes(char_class: str) -> str:
    def repl(m: re.Match[str]) -> str:
        name = m.group(1)
        if name not in _POSIX:
            raise RegexError(f"invalid character class [:{name}:]")
        return _POSIX[name]

    return re.sub(r"\[:(\^?[a-z]+):\]", repl, char_class)
