"""Alert templates: the part of Go's text/template that Prometheus rule files use.

Labels and annotations of alerting rules are Go templates expanded with Prometheus' data and
functions (https://prometheus.io/docs/prometheus/latest/configuration/template_reference/).
This module parses that language into a small tree and evaluates it, without ever running
Python code from a rule file: only the functions in `FUNCTIONS` can be called, and fields
are looked up in the maps and records the template is given.

Supported: text and actions ``{{ }}`` with trim markers ``{{-`` ``-}}``; comments; pipelines
``{{ $value | humanize }}``; variables (``$labels``, ``$value``, ``$externalLabels``,
``$externalURL``, ``$``, ``$x := ...``, ``$x = ...``); fields (``.Labels.instance``,
``$labels.job``); ``if``/``else if``/``else``, ``with``, ``range`` (with ``$k, $v :=``) and
``end``; string, raw string, number, bool and nil literals; Go's built-in functions (and, or,
not, len, index, print, printf, println, eq, ne, lt, le, gt, ge, html, js, urlquery) and
Prometheus' (query, first, label, value, strvalue, args, reReplaceAll, safeHtml, match,
title, toUpper, toLower, graphLink, tableLink, sortByLabel, stripPort, stripDomain,
humanize, humanize1024, humanizeDuration, humanizePercentage, humanizeTimestamp, toTime,
toDuration, now, pathPrefix, externalURL, parseDuration).
Not supported (a clear parse error): ``define``, ``template``, ``block``, ``break``,
``continue`` and ``call``.

As in Prometheus, a missing map key is the empty string (``missingkey=zero``), and an error
while expanding makes the text ``<error expanding template: ...>``.
"""

from __future__ import annotations

import datetime as dt
import html
import ipaddress
import math
import re
import urllib.parse
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from vpsmon.collector.rules.gofmt import GoValue, format_g, format_value, go_sprintf, go_type

# The variables Prometheus defines before every alert template (rules/alerting.go).
ALERT_VARIABLES = ("$labels", "$externalLabels", "$externalURL", "$value")


class TemplateError(ValueError):
    """A template that cannot be parsed or expanded; the message reads like Go's."""


# ---------------------------------------------------------------------------- values


@dataclass
class QuerySample(GoValue):
    """One element of a `query` result, as Prometheus gives it to templates."""

    Labels: dict[str, str]
    Value: float
    go_type = "*template.sample"

    def go_string(self) -> str:
        return f"{{{format_value(self.Labels)} {format_value(self.Value)}}}"


@dataclass
class AlertData(GoValue):
    """The dot of an alert template (template.AlertTemplateData)."""

    Labels: dict[str, str]
    ExternalLabels: dict[str, str]
    ExternalURL: str
    Value: float
    go_type = "struct"

    def go_string(self) -> str:
        parts = (self.Labels, self.ExternalLabels, self.ExternalURL, self.Value)
        return "{" + " ".join(format_value(p) for p in parts) + "}"


@dataclass(frozen=True)
class GoTime(GoValue):
    """A time.Time (from toTime): prints like Go, ``2006-01-02 15:04:05 +0000 UTC``."""

    at: dt.datetime
    go_type = "*time.Time"

    def go_string(self) -> str:
        text = self.at.strftime("%Y-%m-%d %H:%M:%S")
        if self.at.microsecond:
            text += f".{self.at.microsecond:06d}".rstrip("0")
        return text + " +0000 UTC"


@dataclass(frozen=True)
class GoDuration(GoValue):
    """A time.Duration (from toDuration): prints like Go, ``1h2m3s``."""

    seconds: float
    go_type = "time.Duration"

    def go_string(self) -> str:
        return go_duration_string(self.seconds)


def go_duration_string(seconds: float) -> str:
    if seconds == 0:
        return "0s"
    sign = "-" if seconds < 0 else ""
    total = abs(seconds)
    if total < 1:
        for unit, scale in (("ms", 1e3), ("µs", 1e6), ("ns", 1e9)):
            if total * scale >= 1:
                return sign + format_value(round(total * scale, 9)) + unit
        return sign + "0s"
    hours, rest = divmod(total, 3600)
    minutes, secs = divmod(rest, 60)
    out = ""
    if hours:
        out += f"{int(hours)}h"
    if hours or minutes:
        out += f"{int(minutes)}m"
    return sign + out + format_value(round(secs, 9)) + "s"


# Query function for `query`: expression and time (Unix seconds) -> samples.
TemplateQuery = Callable[[str, float], Awaitable[list[QuerySample]]]


# ---------------------------------------------------------------------------- lexer

_TOKEN = re.compile(
    r"""
    (?P<space>\s+)
  | (?P<declare>:=)
  | (?P<assign>=)
  | (?P<pipe>\|)
  | (?P<lparen>\()
  | (?P<rparen>\))
  | (?P<comma>,)
  | (?P<string>"(?:[^"\\\n]|\\.)*")
  | (?P<raw>`[^`]*`)
  | (?P<char>'(?:[^'\\\n]|\\.)+')
  | (?P<number>[+-]?(?:0[xX][0-9a-fA-F_]+|(?:\d[\d_]*)?\.?\d[\d_]*(?:[eE][+-]?\d+)?))
  | (?P<variable>\$[A-Za-z0-9_]*)
  | (?P<field>\.[A-Za-z_][A-Za-z0-9_]*)
  | (?P<dot>\.)
  | (?P<ident>[A-Za-z_][A-Za-z0-9_]*)
    """,
    re.VERBOSE,
)


@dataclass(frozen=True)
class Token:
    kind: str
    text: str
    line: int
    spaced: bool  # preceded by white space (".a .b" are two arguments, ".a.b" one chain)


@dataclass
class _Action:
    tokens: list[Token]
    line: int


# ---------------------------------------------------------------------------- tree


@dataclass
class Node:
    line: int


@dataclass
class Text(Node):
    text: str


@dataclass
class Literal(Node):
    value: Any


@dataclass
class Dot(Node):
    pass


@dataclass
class Field(Node):
    names: list[str]


@dataclass
class Variable(Node):
    name: str
    names: list[str] = field(default_factory=list)


@dataclass
class Function(Node):
    name: str


@dataclass
class Chain(Node):
    node: Node
    names: list[str]


@dataclass
class Command(Node):
    args: list[Node]


@dataclass
class Pipeline(Node):
    decl: list[str]
    assign: bool  # `=` rather than `:=`
    commands: list[Command]


@dataclass
class Action(Node):
    pipe: Pipeline


@dataclass
class Branch(Node):
    kind: str  # if, with, range
    pipe: Pipeline
    body: list[Node]
    otherwise: list[Node]


KEYWORDS = {"if", "else", "end", "range", "with", "define", "template", "block", "break"}
KEYWORDS |= {"continue", "nil", "true", "false"}


class _Parser:
    def __init__(self, name: str, source: str, functions: Mapping[str, Any]) -> None:
        self.name = name
        self.source = source
        self.functions = functions
        self.items: list[Text | _Action] = []
        self.pos = 0
        self.scopes: list[set[str]] = [{"$"}]
        self.called: set[str] = set()

    def error(self, line: int, message: str) -> TemplateError:
        return TemplateError(f"template: {self.name}:{line}: {message}")

    # -- lexing: split into text and actions, honouring trim markers and comments
    def lex(self) -> None:
        src = self.source
        i = 0
        line = 1
        trim_next = False
        while i <= len(src):
            start = src.find("{{", i)
            text = src[i:] if start < 0 else src[i:start]
            if trim_next:
                text = text.lstrip(" \t\r\n")
            if start < 0:
                if text:
                    self.items.append(Text(line, text))
                return
            trim_left = src.startswith("{{- ", start) or src.startswith("{{-\t", start)
            trim_left = trim_left or src.startswith("{{-\n", start)
            if trim_left:
                text = text.rstrip(" \t\r\n")
            if text:
                self.items.append(Text(line, text))
            line += src.count("\n", i, start)
            inner_start = start + (3 if trim_left else 2)
            stripped = src[inner_start:].lstrip(" \t\r\n")
            if stripped.startswith("/*"):
                comment_at = len(src) - len(stripped)
                close = src.find("*/", comment_at + 2)
                if close < 0:
                    raise self.error(line, "unclosed comment")
                after = close + 2
                rest = src[after:]
                rest_stripped = rest.lstrip(" \t\r\n")
                if rest_stripped.startswith("-}}") and rest != rest_stripped:
                    trim_next = True
                    end = len(src) - len(rest_stripped) + 3
                elif rest.startswith("}}"):
                    trim_next = False
                    end = after + 2
                else:
                    raise self.error(line, "comment ends before closing delimiter")
                line += src.count("\n", start, end)
                i = end
                continue
            tokens, end, trim_next = self._lex_action(inner_start, line)
            self.items.append(_Action(tokens, line))
            line += src.count("\n", start, end)
            i = end

    def _lex_action(self, pos: int, line: int) -> tuple[list[Token], int, bool]:
        src = self.source
        tokens: list[Token] = []
        spaced = True
        depth = 0
        while True:
            if pos >= len(src):
                raise self.error(line, "unclosed action")
            if src.startswith("}}", pos) and depth == 0:
                return tokens, pos + 2, False
            if src.startswith(" -}}", pos) or src.startswith("\t-}}", pos):
                return tokens, pos + 4, True
            if src.startswith("\n-}}", pos):
                return tokens, pos + 4, True
            match = _TOKEN.match(src, pos)
            if match is None or match.end() == pos:
                ch = src[pos]
                if ch == "}":
                    raise self.error(line, f'unexpected "{ch}" in operand')
                raise self.error(line, f"unrecognized character in action: {ch!r}")
            kind = match.lastgroup or ""
            text = match.group()
            if kind == "space":
                if "\n" in text:
                    raise self.error(line, "unclosed action")
                spaced = True
                pos = match.end()
                continue
            if kind == "number" and text[0] in "+-" and tokens and not spaced:
                raise self.error(line, f"bad number syntax: {text!r}")
            if kind == "lparen":
                depth += 1
            elif kind == "rparen":
                depth -= 1
                if depth < 0:
                    raise self.error(line, "unexpected right paren")
            tokens.append(Token(kind, text, line, spaced))
            spaced = False
            pos = match.end()

    # -- parsing
    def parse(self) -> list[Node]:
        self.lex()
        body, stop = self._list(top=True)
        if stop is not None:
            raise self.error(stop.line, f"unexpected {{{{{stop.tokens[0].text}}}}}")
        return body

    def _list(self, top: bool = False) -> tuple[list[Node], _Action | None]:
        out: list[Node] = []
        while self.pos < len(self.items):
            item = self.items[self.pos]
            self.pos += 1
            if isinstance(item, Text):
                out.append(item)
                continue
            if not item.tokens:
                raise self.error(item.line, "missing value for command")
            head = item.tokens[0]
            if head.kind == "ident" and head.text in {"end", "else"}:
                if top:
                    raise self.error(item.line, f"unexpected {{{{{head.text}}}}}")
                return out, item
            if head.kind == "ident" and head.text in {"if", "with", "range"}:
                out.append(self._branch(item))
                continue
            if head.kind == "ident" and head.text in {
                "define",
                "template",
                "block",
                "break",
                "continue",
            }:
                raise self.error(
                    item.line, f"{{{{{head.text}}}}} is not supported in vpsmon's templates"
                )
            out.append(Action(item.line, self._pipeline(item.tokens, item.line, decl_ok=True)))
        if not top:
            raise self.error(self.items[-1].line if self.items else 1, "unexpected EOF")
        return out, None

    def _branch(self, item: _Action, kind: str | None = None) -> Branch:
        kind = kind or item.tokens[0].text
        tokens = item.tokens[1:] if kind == item.tokens[0].text else item.tokens
        self.scopes.append(set())
        pipe = self._pipeline(tokens, item.line, decl_ok=True, in_range=kind == "range")
        body, stop = self._list()
        otherwise: list[Node] = []
        assert stop is not None
        if stop.tokens[0].text == "else":
            self.scopes[-1] = set()  # variables of the body are not visible in else
            rest = stop.tokens[1:]
            if rest and rest[0].kind == "ident" and rest[0].text in {"if", "with"}:
                # {{else if ...}} is {{else}}{{if ...}}...{{end}}{{end}} with one end.
                nested = self._branch(_Action(rest[1:], stop.line), rest[0].text)
                otherwise = [nested]
            else:
                if rest:
                    raise self.error(stop.line, f"unexpected {rest[0].text!r} in else")
                otherwise, stop = self._list()
                assert stop is not None
                if stop.tokens[0].text != "end":
                    raise self.error(stop.line, "expected end; found {{else}}")
                if len(stop.tokens) > 1:
                    raise self.error(stop.line, "unexpected tokens in end")
        elif len(stop.tokens) > 1:
            raise self.error(stop.line, "unexpected tokens in end")
        self.scopes.pop()
        return Branch(item.line, kind, pipe, body, otherwise)

    def _declare(self, name: str) -> None:
        self.scopes[-1].add(name)

    def _known(self, name: str) -> bool:
        return any(name in scope for scope in self.scopes)

    def _pipeline(
        self, tokens: list[Token], line: int, decl_ok: bool = False, in_range: bool = False
    ) -> Pipeline:
        decl: list[str] = []
        assign = False
        # Declarations: $x := / $x = / (range) $k, $v :=
        if decl_ok and tokens and tokens[0].kind == "variable":
            if len(tokens) > 1 and tokens[1].kind in {"declare", "assign"}:
                decl = [tokens[0].text]
                assign = tokens[1].kind == "assign"
                tokens = tokens[2:]
            elif (
                in_range
                and len(tokens) > 3
                and tokens[1].kind == "comma"
                and tokens[2].kind == "variable"
                and tokens[3].kind in {"declare", "assign"}
            ):
                decl = [tokens[0].text, tokens[2].text]
                assign = tokens[3].kind == "assign"
                tokens = tokens[4:]
        if assign:
            for name in decl:
                if not self._known(name):
                    raise self.error(line, f"undefined variable {name!r}".replace("'", '"'))
        if not tokens:
            raise self.error(line, "missing value for command")
        commands: list[Command] = []
        current: list[Token] = []
        depth = 0
        for tok in tokens:
            if tok.kind == "lparen":
                depth += 1
            elif tok.kind == "rparen":
                depth -= 1
            if tok.kind == "pipe" and depth == 0:
                commands.append(self._command(current, line))
                current = []
            else:
                current.append(tok)
        commands.append(self._command(current, line))
        for name in decl:
            if not assign:
                self._declare(name)
        return Pipeline(line, decl, assign, commands)

    def _command(self, tokens: list[Token], line: int) -> Command:
        if not tokens:
            raise self.error(line, "missing value for command")
        args: list[Node] = []
        i = 0
        while i < len(tokens):
            node, i = self._operand(tokens, i, line)
            args.append(node)
        return Command(line, args)

    def _operand(self, tokens: list[Token], i: int, line: int) -> tuple[Node, int]:
        tok = tokens[i]
        node: Node
        if tok.kind == "lparen":
            depth = 1
            j = i + 1
            while j < len(tokens) and depth:
                if tokens[j].kind == "lparen":
                    depth += 1
                elif tokens[j].kind == "rparen":
                    depth -= 1
                j += 1
            if depth:
                raise self.error(line, "unclosed left paren")
            node = self._pipeline(tokens[i + 1 : j - 1], line)
            i = j
        elif tok.kind == "rparen":
            raise self.error(line, "unexpected right paren")
        elif tok.kind in {"string", "raw", "char", "number"}:
            node = Literal(line, self._literal(tok, line))
            i += 1
        elif tok.kind == "variable":
            if not self._known(tok.text):
                raise self.error(line, f'undefined variable "{tok.text}"')
            node = Variable(line, tok.text)
            i += 1
        elif tok.kind == "field":
            node = Field(line, [tok.text[1:]])
            i += 1
        elif tok.kind == "dot":
            node = Dot(line)
            i += 1
        elif tok.kind == "ident":
            if tok.text in {"true", "false"}:
                node = Literal(line, tok.text == "true")
            elif tok.text == "nil":
                node = Literal(line, None)
            elif tok.text in KEYWORDS:
                raise self.error(line, f"unexpected <{tok.text}> in command")
            elif tok.text not in self.functions:
                raise self.error(line, f'function "{tok.text}" not defined')
            else:
                node = Function(line, tok.text)
                self.called.add(tok.text)
            i += 1
        else:
            raise self.error(line, f"unexpected {tok.text!r} in operand")
        # Field chains glued to the operand: $x.a.b, (pipeline).a, .a.b
        names: list[str] = []
        while i < len(tokens) and tokens[i].kind == "field" and not tokens[i].spaced:
            names.append(tokens[i].text[1:])
            i += 1
        if names:
            if isinstance(node, Field):
                node.names += names
            elif isinstance(node, Variable):
                node.names += names
            elif isinstance(node, Literal | Function):
                raise self.error(line, f"unexpected . after term {tokens[i - 1].text!r}")
            else:
                node = Chain(line, node, names)
        return node, i

    def _literal(self, tok: Token, line: int) -> Any:
        text = tok.text
        if tok.kind == "raw":
            return text[1:-1]
        if tok.kind == "string":
            return _unquote(text[1:-1])
        if tok.kind == "char":
            value = _unquote(text[1:-1])
            if len(value) != 1:
                raise self.error(line, f"malformed character constant: {text}")
            return ord(value)
        clean = text.replace("_", "")
        try:
            if re.fullmatch(r"[+-]?(0[xX][0-9a-fA-F]+|\d+)", clean):
                return int(clean, 0) if not re.fullmatch(r"[+-]?0\d+", clean) else int(clean, 8)
            return float(clean)
        except ValueError:
            raise self.error(line, f"bad number syntax: {text!r}") from None


def _unquote(body: str) -> str:
    try:
        return body.encode("latin-1", "backslashreplace").decode("unicode_escape")
    except UnicodeDecodeError as err:
        raise TemplateError(f"bad string literal: {err}") from None


# ---------------------------------------------------------------------------- evaluation


@dataclass
class Context:
    """What a template's functions may use while expanding."""

    time: float
    query: TemplateQuery | None
    external_url: str


class _Exec:
    def __init__(self, template: Template, ctx: Context) -> None:
        self.template = template
        self.ctx = ctx
        self.out: list[str] = []
        self.vars: list[tuple[str, Any]] = []

    def error(self, line: int, message: str) -> TemplateError:
        return TemplateError(f"template: {self.template.name}:{line}: {message}")

    def lookup(self, name: str) -> Any:
        for var, value in reversed(self.vars):
            if var == name:
                return value
        raise TemplateError(f"undefined variable: {name}")

    def set_var(self, name: str, value: Any) -> None:
        for i in range(len(self.vars) - 1, -1, -1):
            if self.vars[i][0] == name:
                self.vars[i] = (name, value)
                return
        raise TemplateError(f"undefined variable: {name}")

    async def walk(self, nodes: Sequence[Node], dot: Any) -> None:
        for node in nodes:
            if isinstance(node, Text):
                self.out.append(node.text)
            elif isinstance(node, Action):
                value = await self.pipeline(node.pipe, dot)
                if not node.pipe.decl:
                    self.out.append(_print(value))
            elif isinstance(node, Branch):
                await self.branch(node, dot)

    async def branch(self, node: Branch, dot: Any) -> None:
        mark = len(self.vars)
        if node.kind == "range":
            await self.range(node, dot, mark)
            return
        value = await self.pipeline(node.pipe, dot)
        if truth(value):
            await self.walk(node.body, value if node.kind == "with" else dot)
        else:
            await self.walk(node.otherwise, dot)
        del self.vars[mark:]

    async def range(self, node: Branch, dot: Any, mark: int) -> None:
        pipe = node.pipe
        value = await self.pipeline(Pipeline(pipe.line, [], False, pipe.commands), dot)
        items: list[tuple[Any, Any]]
        if value is None:
            items = []
        elif isinstance(value, Mapping):
            items = [(k, value[k]) for k in sorted(value)]
        elif isinstance(value, list | tuple):
            items = list(enumerate(value))
        elif isinstance(value, int) and not isinstance(value, bool):
            items = [(i, i) for i in range(value)]
        else:
            raise self.error(node.line, f"range can't iterate over {format_value(value)}")
        if not items:
            await self.walk(node.otherwise, dot)
            return
        for key, elem in items:
            del self.vars[mark:]
            if len(pipe.decl) == 1:
                self._bind(pipe, pipe.decl[0], elem)
            elif len(pipe.decl) == 2:
                self._bind(pipe, pipe.decl[0], key)
                self._bind(pipe, pipe.decl[1], elem)
            await self.walk(node.body, elem)
        del self.vars[mark:]

    def _bind(self, pipe: Pipeline, name: str, value: Any) -> None:
        if pipe.assign:
            self.set_var(name, value)
        else:
            self.vars.append((name, value))

    async def pipeline(self, pipe: Pipeline, dot: Any) -> Any:
        value: Any = _NO_VALUE
        for command in pipe.commands:
            value = await self.command(command, dot, value)
        for name in pipe.decl:
            self._bind(pipe, name, value)
        return value

    async def command(self, command: Command, dot: Any, piped: Any) -> Any:
        first = command.args[0]
        if isinstance(first, Function):
            return await self.call(first, command.args[1:], dot, piped)
        if piped is not _NO_VALUE or len(command.args) > 1:
            bad = command.args[1] if len(command.args) > 1 else first
            raise self.error(command.line, f"can't give argument to non-function {_show(bad)}")
        return await self.eval(first, dot)

    async def eval(self, node: Node, dot: Any) -> Any:
        if isinstance(node, Literal):
            return node.value
        if isinstance(node, Dot):
            return dot
        if isinstance(node, Field):
            return self.fields(dot, node.names, node.line)
        if isinstance(node, Variable):
            return self.fields(self.lookup(node.name), node.names, node.line)
        if isinstance(node, Chain):
            return self.fields(await self.eval(node.node, dot), node.names, node.line)
        if isinstance(node, Pipeline):
            return await self.pipeline(node, dot)
        if isinstance(node, Function):
            return await self.call(node, [], dot, _NO_VALUE)
        raise self.error(node.line, "unexpected node")  # pragma: no cover

    def fields(self, value: Any, names: list[str], line: int) -> Any:
        for name in names:
            if isinstance(value, Mapping):
                value = value.get(name, "")  # missingkey=zero on map[string]string
            elif isinstance(value, GoValue) and name in getattr(value, "__dataclass_fields__", {}):
                value = getattr(value, name)
            elif value is None:
                raise self.error(line, f"nil pointer evaluating {name}")
            else:
                raise self.error(line, f"can't evaluate field {name} in type {go_type(value)}")
        return value

    async def call(self, fn: Function, arg_nodes: list[Node], dot: Any, piped: Any) -> Any:
        name = fn.name
        if name in {"and", "or"}:
            # Short-circuit like Go 1.18+: stop at the first falsy (and) or truthy (or).
            nodes = list(arg_nodes)
            values: list[Any] = []
            for node in nodes:
                values.append(await self.eval(node, dot))
                if truth(values[-1]) != (name == "and"):
                    return values[-1]
            if piped is not _NO_VALUE:
                values.append(piped)
            if not values:
                raise self.error(fn.line, f"wrong number of args for {name}: want at least 1 got 0")
            return values[-1]
        args = [await self.eval(node, dot) for node in arg_nodes]
        if piped is not _NO_VALUE:
            args.append(piped)
        impl = self.template.functions[name]
        try:
            result = impl(self.ctx, *args)
            if hasattr(result, "__await__"):
                result = await result
            return result
        except TemplateError as err:
            raise self.error(fn.line, f"error calling {name}: {err}") from None
        except (TypeError, ValueError, re.error, OverflowError, ZeroDivisionError) as err:
            raise self.error(fn.line, f"error calling {name}: {err}") from None


class _NoValue:
    pass


_NO_VALUE: Any = _NoValue()


def _show(node: Node) -> str:
    if isinstance(node, Literal):
        return format_value(node.value)
    if isinstance(node, Variable):
        return node.name + "".join("." + n for n in node.names)
    if isinstance(node, Field):
        return "".join("." + n for n in node.names)
    return "."


def _print(value: Any) -> str:
    if value is _NO_VALUE:
        return ""
    return format_value(value)


def truth(value: Any) -> bool:
    """Go's truth: false, 0, nil and empty strings, maps and lists are false."""
    if value is None or value is _NO_VALUE:
        return False
    if isinstance(value, bool | int | float):
        return bool(value)
    if isinstance(value, str | Mapping | list | tuple):
        return len(value) > 0
    return True


# ---------------------------------------------------------------------------- functions


def _float(value: Any) -> float:
    """Prometheus' convertToFloat: float, int or a numeric string."""
    if isinstance(value, bool):
        raise TemplateError("can't convert bool to float")
    if isinstance(value, int | float):
        return float(value)
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            raise TemplateError(f'strconv.ParseFloat: parsing "{value}": invalid syntax') from None
    raise TemplateError(f"can't convert {go_type(value)} to float")


def _str(value: Any, fn: str) -> str:
    if not isinstance(value, str):
        raise TemplateError(f"wrong type for value; expected string; got {go_type(value)}")
    return value


def humanize(v: float) -> str:
    if v == 0 or math.isnan(v) or math.isinf(v):
        return format_g(v, 4)
    if abs(v) >= 1:
        prefix = ""
        for p in ("k", "M", "G", "T", "P", "E", "Z", "Y"):
            if abs(v) < 1000:
                break
            prefix = p
            v /= 1000
        return format_g(v, 4) + prefix
    prefix = ""
    for p in ("m", "u", "n", "p", "f", "a", "z", "y"):
        if abs(v) >= 1:
            break
        prefix = p
        v *= 1000
    return format_g(v, 4) + prefix


def humanize1024(v: float) -> str:
    if abs(v) <= 1 or math.isnan(v) or math.isinf(v):
        return format_g(v, 4)
    prefix = ""
    for p in ("ki", "Mi", "Gi", "Ti", "Pi", "Ei", "Zi", "Yi"):
        if abs(v) < 1024:
            break
        prefix = p
        v /= 1024
    return format_g(v, 4) + prefix


def humanize_duration(v: float) -> str:
    if math.isnan(v) or math.isinf(v):
        return format_g(v, 4)
    if v == 0:
        return format_g(v, 4) + "s"
    if abs(v) >= 1:
        sign = ""
        if v < 0:
            sign, v = "-", -v
        whole = int(v)
        seconds = whole % 60
        minutes = (whole // 60) % 60
        hours = (whole // 3600) % 24
        days = whole // 86400
        if days:
            return f"{sign}{days}d {hours}h {minutes}m {seconds}s"
        if hours:
            return f"{sign}{hours}h {minutes}m {seconds}s"
        if minutes:
            return f"{sign}{minutes}m {seconds}s"
        return f"{sign}{format_g(v, 4)}s"
    prefix = ""
    for p in ("m", "u", "n", "p", "f", "a", "z", "y"):
        if abs(v) >= 1:
            break
        prefix = p
        v *= 1000
    return f"{format_g(v, 4)}{prefix}s"


def _to_time(v: float) -> GoTime:
    if math.isnan(v) or math.isinf(v):
        raise TemplateError("value is NaN or Inf")
    return GoTime(dt.datetime.fromtimestamp(v, dt.UTC).replace(tzinfo=None))


def _humanize_timestamp(v: float) -> str:
    if math.isnan(v) or math.isinf(v):
        return format_g(v, 4)
    return _to_time(v).go_string()


def _go_replacement(repl: str) -> Callable[[re.Match[str]], str]:
    """Go's Regexp.Expand syntax: $1, ${1}, $name, ${name}, $$."""
    token = re.compile(r"\$(\$|\{([A-Za-z0-9_]+)\}|([A-Za-z0-9_]+))")

    def expand(match: re.Match[str]) -> str:
        def one(m: re.Match[str]) -> str:
            if m.group(1) == "$":
                return "$"
            name = m.group(2) or m.group(3)
            try:
                value = match.group(int(name)) if name.isdigit() else match.group(name)
            except (IndexError, error_type):
                value = ""
            return value or ""

        return token.sub(one, repl)

    return expand


error_type = re.error


def _re(pattern: str) -> re.Pattern[str]:
    # Go's RE2 named groups are (?P<name>...), which Python shares; (?<name>...) too.
    return re.compile(pattern.replace("(?<", "(?P<") if "(?<" in pattern else pattern)


def _query_link(expr: str, tab: int) -> str:
    return f"/graph?g0.expr={urllib.parse.quote_plus(expr)}&g0.tab={tab}"


def _strip_port(host_port: str) -> str:
    host, _, port = _split_host_port(host_port)
    return host if port is not None else host_port


def _split_host_port(text: str) -> tuple[str, str, str | None]:
    if text.startswith("["):
        end = text.find("]")
        if end > 0 and text[end + 1 : end + 2] == ":":
            return text[1:end], ":", text[end + 2 :]
        return text, "", None
    if text.count(":") == 1:
        host, _, port = text.partition(":")
        return host, ":", port
    return text, "", None


def _strip_domain(host_port: str) -> str:
    host, _, port = _split_host_port(host_port)
    try:
        ipaddress.ip_address(host)
        return host_port
    except ValueError:
        pass
    host = host.split(".")[0]
    if port is not None:
        return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    return host


def _index(ctx: Context, item: Any, *keys: Any) -> Any:
    for key in keys:
        if isinstance(item, Mapping):
            item = item.get(key, "")
        elif isinstance(item, list | tuple | str):
            if not isinstance(key, int) or not 0 <= key < len(item):
                raise TemplateError(f"index out of range: {key}")
            item = item[key]
        else:
            raise TemplateError(f"can't index item of type {go_type(item)}")
    return item


def _compare(a: Any, b: Any, op: str) -> bool:
    kinds = (_kind(a), _kind(b))
    if kinds[0] != kinds[1]:
        if op in {"eq", "ne"} and None in kinds:
            return (a is None and b is None) == (op == "eq")
        raise TemplateError("incompatible types for comparison")
    if kinds[0] in {"bool", None} and op not in {"eq", "ne"}:
        raise TemplateError("invalid type for comparison")
    if op == "eq":
        return bool(a == b)
    if op == "ne":
        return bool(a != b)
    if op == "lt":
        return bool(a < b)
    if op == "le":
        return bool(a <= b)
    if op == "gt":
        return bool(a > b)
    return bool(a >= b)


def _kind(value: Any) -> str | None:
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int):
        return "int"
    if isinstance(value, float):
        return "float"
    if isinstance(value, str):
        return "string"
    if value is None:
        return None
    raise TemplateError(f"invalid type for comparison: {go_type(value)}")


def _eq(ctx: Context, a: Any, *others: Any) -> bool:
    if not others:
        raise TemplateError("missing argument for comparison")
    return any(_compare(a, b, "eq") for b in others)


async def _query(ctx: Context, expr: Any) -> list[QuerySample]:
    if ctx.query is None:
        raise TemplateError("query is not available here")
    return await ctx.query(_str(expr, "query"), ctx.time)


def _first(ctx: Context, samples: Any) -> QuerySample:
    if not isinstance(samples, list):
        raise TemplateError(f"wrong type for value; expected queryResult; got {go_type(samples)}")
    if not samples:
        raise TemplateError("first() called on vector with no elements")
    result: QuerySample = samples[0]
    return result


def _sample(value: Any) -> QuerySample:
    if not isinstance(value, QuerySample):
        raise TemplateError(
            f"wrong type for value; expected *template.sample; got {go_type(value)}"
        )
    return value


def _sort_by_label(ctx: Context, label: Any, samples: Any) -> list[QuerySample]:
    if not isinstance(samples, list):
        raise TemplateError(f"wrong type for value; expected queryResult; got {go_type(samples)}")
    return sorted(samples, key=lambda s: s.Labels.get(label, ""))


def _parse_duration(ctx: Context, text: Any) -> float:
    from vpsmon.collector.rules.durations import parse_duration

    return parse_duration(_str(text, "parseDuration"))


def _title(ctx: Context, text: Any) -> str:
    # strings.Title: upper-case the first letter of each word (letters after a non-letter).
    return re.sub(r"(?<![\w'])(\w)", lambda m: m.group(1).upper(), _str(text, "title"))


def _len(ctx: Context, value: Any) -> int:
    if isinstance(value, str | Mapping | list | tuple):
        return len(value)
    raise TemplateError(f"len of type {go_type(value)}")


def _print_fn(ctx: Context, *args: Any) -> str:
    # fmt.Sprint: spaces between operands when neither is a string.
    out = ""
    for i, arg in enumerate(args):
        if i and not isinstance(arg, str) and not isinstance(args[i - 1], str):
            out += " "
        out += _print_arg(arg)
    return out


def _print_arg(arg: Any) -> str:
    return "<nil>" if arg is None else format_value(arg)


FUNCTIONS: dict[str, Callable[..., Any]] = {
    # Go's built-ins (text/template/funcs.go); and/or are evaluated lazily in _Exec.call.
    "and": lambda ctx, *a: a[-1],
    "or": lambda ctx, *a: a[-1],
    "not": lambda ctx, a: not truth(a),
    "len": _len,
    "index": _index,
    "print": _print_fn,
    "printf": lambda ctx, fmt, *a: go_sprintf(_str(fmt, "printf"), a),
    "println": lambda ctx, *a: " ".join(_print_arg(x) for x in a) + "\n",
    "eq": _eq,
    "ne": lambda ctx, a, b: _compare(a, b, "ne"),
    "lt": lambda ctx, a, b: _compare(a, b, "lt"),
    "le": lambda ctx, a, b: _compare(a, b, "le"),
    "gt": lambda ctx, a, b: _compare(a, b, "gt"),
    "ge": lambda ctx, a, b: _compare(a, b, "ge"),
    "html": lambda ctx, *a: html.escape(_print_fn(ctx, *a)),
    "js": lambda ctx, *a: _print_fn(ctx, *a).encode("unicode_escape").decode().replace("'", "\\'"),
    "urlquery": lambda ctx, *a: urllib.parse.quote_plus(_print_fn(ctx, *a)),
    # Prometheus' (template/template.go).
    "query": _query,
    "first": _first,
    "label": lambda ctx, name, s: _sample(s).Labels.get(name, ""),
    "value": lambda ctx, s: _sample(s).Value,
    "strvalue": lambda ctx, s: _sample(s).Labels.get("__value__", ""),
    "args": lambda ctx, *a: {f"arg{i}": v for i, v in enumerate(a)},
    "reReplaceAll": lambda ctx, pattern, repl, text: _re(_str(pattern, "reReplaceAll")).sub(
        _go_replacement(_str(repl, "reReplaceAll")), _str(text, "reReplaceAll")
    ),
    "safeHtml": lambda ctx, text: _str(text, "safeHtml"),
    "match": lambda ctx, pattern, text: (
        _re(_str(pattern, "match")).search(_str(text, "match")) is not None
    ),
    "title": _title,
    "toUpper": lambda ctx, text: _str(text, "toUpper").upper(),
    "toLower": lambda ctx, text: _str(text, "toLower").lower(),
    "graphLink": lambda ctx, expr: _query_link(_str(expr, "graphLink"), 0),
    "tableLink": lambda ctx, expr: _query_link(_str(expr, "tableLink"), 1),
    "sortByLabel": _sort_by_label,
    "stripPort": lambda ctx, text: _strip_port(_str(text, "stripPort")),
    "stripDomain": lambda ctx, text: _strip_domain(_str(text, "stripDomain")),
    "humanize": lambda ctx, v: humanize(_float(v)),
    "humanize1024": lambda ctx, v: humanize1024(_float(v)),
    "humanizeDuration": lambda ctx, v: humanize_duration(_float(v)),
    "humanizePercentage": lambda ctx, v: format_g(_float(v) * 100, 4) + "%",
    "humanizeTimestamp": lambda ctx, v: _humanize_timestamp(_float(v)),
    "toTime": lambda ctx, v: _to_time(_float(v)),
    "toDuration": lambda ctx, v: GoDuration(_float(v)),
    "now": lambda ctx: float(ctx.time),
    "pathPrefix": lambda ctx: urllib.parse.urlsplit(ctx.external_url).path,
    "externalURL": lambda ctx: ctx.external_url,
    "parseDuration": _parse_duration,
}


# Functions whose result depends on more than the template's data.
IMPURE_FUNCTIONS = frozenset({"query", "now"})

# ---------------------------------------------------------------------------- straight runs

# Most alert templates are text and actions like ``{{ $labels.instance }}``,
# ``{{ $value | humanize }}`` or ``{{ printf "%.2f" $value }}``: operands (literals, the dot,
# fields, variables) piped through functions. Such a template is also kept as a flat plan run
# without the walker's coroutines (issue #8: an alert storm expands ~100,000 per cycle when
# the values move). The plan only covers success: on any exception, or a function that would
# need awaiting, the template is expanded by the walker, which gives the exact error text.
_Operand = tuple[int, Any, tuple[str, ...]]  # (kind, literal value or variable name, fields)
_Step = tuple[str | None, tuple[_Operand, ...]]  # (function or None for a bare operand, args)
_OPERAND_LITERAL, _OPERAND_DOT, _OPERAND_VARIABLE = 0, 1, 2


class _NotStraight(Exception):
    pass


def _plan_operand(node: Node, variables: Sequence[str]) -> _Operand:
    if isinstance(node, Literal):
        return (_OPERAND_LITERAL, node.value, ())
    if isinstance(node, Dot):
        return (_OPERAND_DOT, None, ())
    if isinstance(node, Field):
        return (_OPERAND_DOT, None, tuple(node.names))
    if isinstance(node, Variable) and (node.name == "$" or node.name in variables):
        return (_OPERAND_VARIABLE, node.name, tuple(node.names))
    raise _NotStraight


def _plan(tree: list[Node], variables: Sequence[str]) -> list[str | tuple[_Step, ...]] | None:
    """The flat plan of a template of text and simple actions, or None."""
    plan: list[str | tuple[_Step, ...]] = []
    try:
        for node in tree:
            if isinstance(node, Text):
                plan.append(node.text)
                continue
            if not isinstance(node, Action) or node.pipe.decl or not node.pipe.commands:
                return None
            steps: list[_Step] = []
            for i, command in enumerate(node.pipe.commands):
                first = command.args[0]
                if isinstance(first, Function):
                    if first.name in IMPURE_FUNCTIONS or first.name in {"and", "or"}:
                        return None
                    args = tuple(_plan_operand(a, variables) for a in command.args[1:])
                    steps.append((first.name, args))
                elif i == 0 and len(command.args) == 1:
                    steps.append((None, (_plan_operand(first, variables),)))
                else:
                    return None
            plan.append(tuple(steps))
    except _NotStraight:
        return None
    return plan


def _operand(operand: _Operand, dot: Any, variables: Mapping[str, Any]) -> Any:
    kind, what, names = operand
    if kind == _OPERAND_LITERAL:
        return what
    value = dot if kind == _OPERAND_DOT or what == "$" else variables.get(what)
    for name in names:  # as _Exec.fields; its errors come from the walker
        if isinstance(value, Mapping):
            value = value.get(name, "")
        elif isinstance(value, GoValue) and name in getattr(value, "__dataclass_fields__", {}):
            value = getattr(value, name)
        else:
            raise _NotStraight
    return value


# ---------------------------------------------------------------------------- API


class Template:
    """A parsed template; `expand` is safe to call many times."""

    def __init__(
        self,
        text: str,
        name: str,
        variables: Sequence[str] = ALERT_VARIABLES,
        functions: Mapping[str, Callable[..., Any]] = FUNCTIONS,
    ) -> None:
        self.name = name
        self.text = text
        self.functions = functions
        self.variables = tuple(variables)
        parser = _Parser(name, text, functions)
        parser.scopes[0].update(self.variables)
        self.tree = parser.parse()
        # Same labels and value give the same text unless the template asks the outside world.
        self.deterministic = not parser.called & IMPURE_FUNCTIONS
        # Plain text (most label values) needs no evaluation at all.
        self.constant = (
            self.tree[0].text
            if len(self.tree) == 1 and isinstance(self.tree[0], Text)
            else ("" if not self.tree else None)
        )
        self.plan = _plan(self.tree, self.variables)

    def _run_plan(
        self,
        plan: list[str | tuple[_Step, ...]],
        dot: Any,
        variables: Mapping[str, Any],
        ctx: Context,
    ) -> str:
        """What the walker gives, when no step fails (see _plan); raises otherwise."""
        out: list[str] = []
        functions = self.functions
        for item in plan:
            if isinstance(item, str):
                out.append(item)
                continue
            value: Any = _NO_VALUE
            for name, operands in item:
                if name is None:
                    value = _operand(operands[0], dot, variables)
                    continue
                args = [_operand(a, dot, variables) for a in operands]
                if value is not _NO_VALUE:
                    args.append(value)
                value = functions[name](ctx, *args)
                if hasattr(value, "__await__"):
                    if hasattr(value, "close"):
                        value.close()
                    raise _NotStraight
            out.append(_print(value))
        return "".join(out)

    async def expand(self, dot: Any, variables: Mapping[str, Any], ctx: Context) -> str:
        if self.constant is not None:
            return self.constant
        if self.plan is not None:
            try:
                return self._run_plan(self.plan, dot, variables, ctx)
            except Exception:  # noqa: S110 - the walker gives the error text, as Go would
                pass
        run = _Exec(self, ctx)
        run.vars.append(("$", dot))
        run.vars.extend((name, variables.get(name)) for name in self.variables)
        await run.walk(self.tree, dot)
        return "".join(run.out)


def parse_alert_template(text: str, alert_name: str) -> Template:
    """Parse a label or annotation of alerting rule ``alert_name``; raises TemplateError."""
    return Template(text, "__alert_" + alert_name)


async def expand_alert_template(
    template: Template,
    labels: Mapping[str, str],
    external_labels: Mapping[str, str],
    external_url: str,
    value: float,
    ctx: Context,
) -> str:
    """Expand as Prometheus does for alerts; an error becomes the text of the result."""
    data, variables = alert_data(labels, external_labels, external_url, value)
    return await expand_alert_data(template, data, variables, ctx)


def alert_data(
    labels: Mapping[str, str],
    external_labels: Mapping[str, str],
    external_url: str,
    value: float,
) -> tuple[AlertData, dict[str, Any]]:
    """The dot and variables of an alert's templates: made once for all of them."""
    data = AlertData(dict(labels), dict(external_labels), external_url, value)
    variables = {
        "$labels": data.Labels,
        "$externalLabels": data.ExternalLabels,
        "$externalURL": external_url,
        "$value": value,
    }
    return data, variables


async def expand_alert_data(
    template: Template, data: AlertData, variables: Mapping[str, Any], ctx: Context
) -> str:
    """`expand_alert_template` with the dot and variables from `alert_data`."""
    try:
        return await template.expand(data, variables, ctx)
    except TemplateError as err:
        return f"<error expanding template: error executing template {template.name}: {err}>"
    except RecursionError:
        return f"<error expanding template: {template.name}: nested too deeply>"
