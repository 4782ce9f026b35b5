"""Regular expressions as Prometheus has them: RE2 syntax (Go's regexp), fully anchored.

google-re2 gives the same syntax as Go (inline flags anywhere, ``\\Q...\\E``, POSIX classes)
and matches in linear time, so a hostile pattern in a query cannot make the collector
backtrack exponentially (ReDoS).
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any

import re2

_OPTIONS = re2.Options()
_OPTIONS.log_errors = False


class RegexError(ValueError):
    pass


@lru_cache(maxsize=1024)
def compile_anchored(pattern: str) -> Any:
    """``^(?:pattern)$`` as Prometheus 2.42 compiles label_replace's regex."""
    try:
        return re2.compile(f"^(?:{pattern})$", _OPTIONS)
    except re2.error as exc:
        detail = exc.args[0].decode() if exc.args and isinstance(exc.args[0], bytes) else exc
        raise RegexError(f"{detail}") from None
