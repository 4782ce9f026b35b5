"""Errors the PromQL engine raises, split the way Prometheus' HTTP API reports them."""

from __future__ import annotations

from typing import Literal

ErrorKind = Literal["parse", "execution", "timeout"]


class PromQLError(Exception):
    """A query that cannot be answered.

    ``kind`` is ``"parse"`` for a malformed or unsupported expression (HTTP API errorType
    ``bad_data``), ``"execution"`` for one that failed while evaluating (``execution``), and
    ``"timeout"``. ``position`` is the 0-based character offset of the offending token when it
    is known.
    """

    def __init__(self, message: str, kind: ErrorKind = "execution", position: int | None = None):
        super().__init__(message)
        self.message = message
        self.kind = kind
        self.position = position

    def __str__(self) -> str:
        if self.kind == "parse":
            where = "" if self.position is None else f"1:{self.position + 1}: "
            return f"{where}parse error: {self.message}"
        return self.message


def parse_error(message: str, position: int | None = None) -> PromQLError:
    return PromQLError(message, "parse", position)
