"""Sessions, CSRF and login rate limiting for the web UI."""

from __future__ import annotations

import secrets
import time
from collections import deque
from collections.abc import Awaitable, Callable

from aiohttp import web

from vpsmon.collector import accounts

SESSION_COOKIE = "vpsmon_session"
LOGIN_CSRF_COOKIE = "vpsmon_login_csrf"
SESSION_KEY: web.RequestKey[accounts.Session | None] = web.RequestKey("session")
SAFE_METHODS = {"GET", "HEAD", "OPTIONS"}

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class LoginLimiter:
    """At most `attempts` failed logins per client address and per username in `window`."""

    def __init__(self, attempts: int = 10, window: float = 900.0, max_keys: int = 100_000) -> None:
        self.attempts = attempts
        self.window = window
        self._max_keys = max_keys
        self._failures: dict[str, deque[float]] = {}

    def _recent(self, key: str, now: float) -> deque[float]:
        q = self._failures.get(key)
        if q is None:
            return deque()
        while q and q[0] <= now - self.window:
            q.popleft()
        if not q:
            del self._failures[key]
        return q

    def blocked(self, address: str, username: str, now: float) -> bool:
        return any(
            len(self._recent(k, now)) >= self.attempts for k in (f"a:{address}", f"u:{username}")
        )

    def failed(self, address: str, username: str, now: float) -> None:
        if len(self._failures) >= self._max_keys:  # bounded: forget the oldest keys
            for key in list(self._failures)[: self._max_keys // 10]:
                del self._failures[key]
        for key in (f"a:{address}", f"u:{username}"):
            self._failures.setdefault(key, deque()).append(now)

    def succeeded(self, username: str) -> None:
        self._failures.pop(f"u:{username}", None)


def current_session(request: web.Request) -> accounts.Session | None:
    session: accounts.Session | None = request.get(SESSION_KEY)
    return session


def require_session(request: web.Request) -> accounts.Session:
    session = current_session(request)
    if session is None:
        if request.path.startswith("/api/"):
            raise web.HTTPUnauthorized(
                text='{"error": "login required"}', content_type="application/json"
            )
        raise web.HTTPFound("/login")
    return session


def check_csrf(request: web.Request, session: accounts.Session, form_token: str | None) -> None:
    """State changes need the session's CSRF token in X-CSRF-Token or the form field."""
    token = request.headers.get("X-CSRF-Token") or form_token or ""
    if not secrets.compare_digest(token, session.csrf_token):
        raise web.HTTPForbidden(text="missing or wrong CSRF token")


def now() -> float:
    return time.time()
