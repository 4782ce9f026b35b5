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
# Marks a browser that logged in as a user before (see LoginLimiter); sent to /login only.
DEVICE_COOKIE = "vpsmon_device"
# A login waiting for its TOTP code; sent to /login only.
MFA_COOKIE = "vpsmon_mfa"
SESSION_KEY: web.RequestKey[accounts.Session | None] = web.RequestKey("session")
# Who is making the request: from the session cookie, or from an API token (then TOKEN_KEY is
# the token's id and SESSION_KEY is None). Set by the session middleware on every request.
USER_KEY: web.RequestKey[accounts.User | None] = web.RequestKey("user")
TOKEN_KEY: web.RequestKey[int | None] = web.RequestKey("api_token")
SAFE_METHODS = {"GET", "HEAD", "OPTIONS"}

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class LoginLimiter:
    """Failed-login limits that stop guessing without letting anyone lock a user out.

    A limit per username alone is a denial of service: anyone who fails 10 times as `admin`
    locks the real admin out. So the limits are:

    - per (username, address): `attempts` failures (10) in `window`: the guessing budget of
      one client against one account;
    - per address, any username: `address_attempts` (50): one client spraying many accounts;
    - per username, all addresses together: `user_attempts` (200), a ceiling against guessing
      from many addresses. Reaching it takes `user_attempts / attempts` distinct addresses,
      and it does not apply to a browser that logged in as that user before (a trusted device
      cookie), so the owner still gets in while an attack runs.

    A success clears the (username, address) counter. Counters are in memory, bounded.
    """

    def __init__(
        self,
        attempts: int = 10,
        window: float = 900.0,
        max_keys: int = 100_000,
        address_attempts: int = 50,
        user_attempts: int = 200,
    ) -> None:
        self.attempts = attempts
        self.address_attempts = address_attempts
        self.user_attempts = user_attempts
        self.window = window
        self._max_keys = max_keys
        self._cap = max(attempts, address_attempts, user_attempts)
        self._failures: dict[str, deque[float]] = {}

    def _recent(self, key: str, now: float) -> int:
        q = self._failures.get(key)
        if q is None:
            return 0
        while q and q[0] <= now - self.window:
            q.popleft()
        if not q:
            del self._failures[key]
        return len(q)

    @staticmethod
    def _keys(address: str, username: str) -> tuple[str, str, str]:
        return f"p:{username}\x00{address}", f"a:{address}", f"u:{username}"

    def blocked(
        self, address: str, username: str, now: float, trusted_device: bool = False
    ) -> bool:
        pair, addr, user = self._keys(address, username)
        if self._recent(pair, now) >= self.attempts:
            return True
        if self._recent(addr, now) >= self.address_attempts:
            return True
        return not trusted_device and self._recent(user, now) >= self.user_attempts

    def failed(self, address: str, username: str, now: float) -> None:
        if len(self._failures) >= self._max_keys:  # bounded: forget the oldest keys
            for key in list(self._failures)[: self._max_keys // 10]:
                del self._failures[key]
        for key in self._keys(address, username):
            q = self._failures.setdefault(key, deque())
            q.append(now)
            if len(q) > self._cap:  # a deque never outgrows the largest limit
                q.popleft()

    def succeeded(self, address: str, username: str) -> None:
        self._failures.pop(self._keys(address, username)[0], None)


def current_session(request: web.Request) -> accounts.Session | None:
    session: accounts.Session | None = request.get(SESSION_KEY)
    return session


def require_session(request: web.Request) -> accounts.Session:
    """A browser session (cookie). Handlers that scripts may call with an API token use
    `vpsmon.web.access.require_user` instead."""
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
